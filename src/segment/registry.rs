//! The one-handle registry: within one process, an array segment has one read-write handle
//! or any number of read-only handles, never both, so a `&mut` view of its data never
//! aliases another view. Kept alone so that it can be reviewed alone.
//!
//! Only array segments are registered (their views are plain `&`/`&mut` slices); the sync,
//! ipc and manager types touch shared memory through atomics and copies only, so any number
//! of their handles may coexist.

use std::collections::BTreeMap;

use crate::error::{Error, ErrorKind, Result};
use crate::sys::proc;

/// Device and inode of a segment's file: what identifies a segment whatever its name.
pub(crate) type FileId = (u64, u64);

/// The handles one process holds to one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// One read-write handle: it may hand out `&mut` views, so it must be alone.
    Writer,
    /// This many read-only handles (at least one): `&` views may alias each other.
    Readers(usize),
}

/// The segments mapped by handles bound to a process: (process token, device, inode).
///
/// Keyed by the process token rather than emptied in a forked child: the child inherits the
/// parent's entries, which can never match its own token, and its copies of the parent's
/// handles stay registered under the parent's token (they are unusable in the child and
/// their `Drop` does nothing there). A `ForkSafeMutex`, so that a fork by any thread, at any
/// moment, leaves the child a usable registry.
static REGISTRY: proc::ForkSafeMutex<BTreeMap<(u64, u64, u64), Held>> =
    proc::ForkSafeMutex::new(BTreeMap::new());

/// Enters a handle of segment `id` (called `name`, for the message) made by the process
/// with token `token`: a read-write handle (`writable`) must be the only one; read-only
/// handles may be many, but not beside a read-write one.
///
/// # Errors
/// [`ErrorKind::AlreadyOpen`] when the handle would alias another one of this process.
pub(crate) fn register(token: u64, id: FileId, name: &str, writable: bool) -> Result<()> {
    let refused = REGISTRY.with(|open| {
        let key = (token, id.0, id.1);
        match (open.get(&key).copied(), writable) {
            (None, true) => {
                open.insert(key, Held::Writer);
                None
            }
            (None, false) => {
                open.insert(key, Held::Readers(1));
                None
            }
            (Some(Held::Readers(n)), false) => {
                open.insert(key, Held::Readers(n + 1));
                None
            }
            (Some(held), _) => Some(held),
        }
    });
    let Some(held) = refused else { return Ok(()) };
    let (have, want) = match held {
        Held::Writer => (
            "a read-write handle",
            if writable {
                "a second one"
            } else {
                "a read-only one beside it"
            },
        ),
        Held::Readers(_) => ("read-only handles", "a read-write one beside them"),
    };
    Err(Error::new(
        ErrorKind::AlreadyOpen,
        format!(
            "this process already holds {have} to segment '{name}' and may not open {want}: \
             its views would alias a mutable view; share the handle you have (by reference \
             or Arc), or drop it first"
        ),
    ))
}

/// Removes a handle entered by [`register`] with the same arguments.
pub(crate) fn deregister(token: u64, id: FileId, writable: bool) {
    REGISTRY.with(|open| {
        let key = (token, id.0, id.1);
        match open.get(&key).copied() {
            Some(Held::Readers(n)) if !writable && n > 1 => {
                open.insert(key, Held::Readers(n - 1));
            }
            Some(Held::Readers(_)) if !writable => {
                open.remove(&key);
            }
            Some(Held::Writer) if writable => {
                open.remove(&key);
            }
            _ => {}
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_entries_of_another_process_never_collide() {
        let id = (u64::MAX, u64::MAX - 7);
        register(1, id, "x", true).unwrap();
        // Another token (a forked child's) may register the same file.
        register(3, id, "x", true).unwrap();
        assert_eq!(
            register(1, id, "x", true).unwrap_err().kind(),
            ErrorKind::AlreadyOpen
        );
        deregister(1, id, true);
        deregister(3, id, true);
        register(1, id, "x", true).unwrap();
        deregister(1, id, true);
    }

    #[test]
    fn read_only_entries_count_and_refuse_a_writer_until_the_last_goes() {
        let id = (u64::MAX, u64::MAX - 8);
        register(5, id, "y", false).unwrap();
        register(5, id, "y", false).unwrap();
        assert_eq!(
            register(5, id, "y", true).unwrap_err().kind(),
            ErrorKind::AlreadyOpen
        );
        deregister(5, id, false);
        assert!(register(5, id, "y", true).is_err(), "one reader is left");
        deregister(5, id, false);
        register(5, id, "y", true).unwrap();
        assert_eq!(
            register(5, id, "y", false).unwrap_err().kind(),
            ErrorKind::AlreadyOpen
        );
        deregister(5, id, true);
    }
}
