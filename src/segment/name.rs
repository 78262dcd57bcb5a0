//! Segment names: the rules a name must follow ([`validate_name`]), the names ndshm keeps
//! for itself, and the temporary names a segment is built under before it is published.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, ErrorKind, Result};
use crate::sys::{proc, shm};

/// Longest segment name accepted, in bytes (Linux `NAME_MAX`).
///
/// # Examples
/// ```
/// assert!(ndshm::validate_name(&"a".repeat(ndshm::MAX_NAME_LEN)).is_ok());
/// let e = ndshm::validate_name(&"a".repeat(ndshm::MAX_NAME_LEN + 1)).unwrap_err();
/// assert_eq!(e.kind(), ndshm::ErrorKind::InvalidName);
/// ```
pub const MAX_NAME_LEN: usize = 255;
/// Prefix of the temporary names segments are built under before they are published.
pub(crate) const TEMP_PREFIX: &str = ".ndshm-tmp-";
/// Names ndshm keeps for its own files: temporary names and the lease files.
const RESERVED_PREFIX: &str = ".ndshm-";

/// Checks a segment name and returns it without its optional leading `/`.
///
/// The rules: one leading `/` (as POSIX names are often written) is accepted and dropped;
/// what remains must be 1 to [`MAX_NAME_LEN`] bytes, hold no `/` and no NUL, not be `.` or
/// `..`, and not start with the reserved prefix `.ndshm-`.
///
/// # Errors
/// [`ErrorKind::InvalidName`], with a message naming the rule that was broken.
///
/// # Examples
/// ```
/// assert_eq!(ndshm::validate_name("/weather").unwrap(), "weather");
/// assert!(ndshm::validate_name("../etc/passwd").is_err());
/// ```
pub fn validate_name(name: &str) -> Result<&str> {
    let bad = |rule: String| Err(Error::new(ErrorKind::InvalidName, rule));
    let stripped = name.strip_prefix('/').unwrap_or(name);
    if stripped.is_empty() {
        return bad("segment name is empty: give a name such as \"weather\"".into());
    }
    if stripped.len() > MAX_NAME_LEN {
        return bad(format!(
            "segment name is {} bytes long; the limit is {MAX_NAME_LEN} bytes (NAME_MAX)",
            stripped.len()
        ));
    }
    if stripped.contains('\0') {
        return bad(format!(
            "segment name {name:?} holds a NUL byte, which is not allowed"
        ));
    }
    if stripped.contains('/') {
        return bad(format!(
            "segment name {name:?} holds a '/': only one leading '/' is allowed, \
             segments live directly in /dev/shm"
        ));
    }
    if stripped == "." || stripped == ".." {
        return bad(format!(
            "segment name {name:?} is a directory entry, not a name"
        ));
    }
    if stripped.starts_with(RESERVED_PREFIX) {
        return bad(format!(
            "segment name {name:?} starts with {RESERVED_PREFIX:?}, which ndshm reserves for \
             its own files (segments being created, process leases)"
        ));
    }
    Ok(stripped)
}

/// Unlinks a temporary segment unless disarmed.
pub(crate) struct TempName {
    pub(crate) name: String,
    pub(crate) armed: bool,
}

impl Drop for TempName {
    fn drop(&mut self) {
        if self.armed {
            let _ = shm::unlink(&self.name);
        }
    }
}

pub(crate) fn temp_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{TEMP_PREFIX}{}-L{:x}-{}-{:x}",
        proc::pid(),
        crate::sys::lease::mine(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        proc::random_u64()
    )
}
