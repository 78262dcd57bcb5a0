//! A named POSIX shared-memory segment: creation with atomic publication, attachment,
//! ownership (who unlinks), and the one mapping every higher type is built on.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use memmap2::MmapRaw;

use crate::cleanup;
use crate::error::{Error, ErrorKind, Result};
use crate::sys::{proc, shm};
use crate::trailer::{self, SegmentKind, Trailer, TrailerInfo, TRAILER_LEN};

/// Longest segment name accepted, in bytes (Linux `NAME_MAX`).
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

/// How a segment is created.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub(crate) mode: u32,
    pub(crate) persistent: bool,
    pub(crate) prefault: bool,
    pub(crate) fortran_order: bool,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions::new()
    }
}

impl CreateOptions {
    /// Defaults: mode `0o600`, owned (unlinked on drop), no prefault, C order.
    pub fn new() -> CreateOptions {
        CreateOptions {
            mode: 0o600,
            persistent: false,
            prefault: false,
            fortran_order: false,
        }
    }

    /// Permission bits of the new segment (default `0o600`: only its user may open it).
    /// They are set exactly, whatever the umask.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// A persistent segment outlives its creator: `Drop` does not unlink it and `gc` leaves
    /// it; remove it with `unlink` or `ndshm rm`.
    pub fn persistent(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }

    /// Fault in the page tables at creation (`MAP_POPULATE`), so first touches cost nothing.
    pub fn prefault(mut self, prefault: bool) -> Self {
        self.prefault = prefault;
        self
    }

    /// Lay arrays out in Fortran (column-major) order instead of C order.
    pub fn fortran_order(mut self, fortran: bool) -> Self {
        self.fortran_order = fortran;
        self
    }
}

/// How an existing segment is attached.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MapAccess {
    pub(crate) writable: bool,
    pub(crate) populate: bool,
    /// Enter the mapping in the process-wide registry (refuse a second handle).
    pub(crate) register: bool,
}

impl MapAccess {
    pub(crate) const READ_WRITE: MapAccess = MapAccess {
        writable: true,
        populate: false,
        register: true,
    };
    pub(crate) const READ_ONLY: MapAccess = MapAccess {
        writable: false,
        populate: false,
        register: true,
    };
}

type FileId = (u64, u64);

/// The segments this process has mapped, by device and inode: within one process, one
/// segment has at most one handle, so two live `&mut` views of it cannot exist.
fn registry() -> &'static Mutex<HashSet<FileId>> {
    static OPEN: OnceLock<Mutex<HashSet<FileId>>> = OnceLock::new();
    OPEN.get_or_init(|| Mutex::new(HashSet::new()))
}

fn register(id: FileId, name: &str) -> Result<()> {
    let mut open = registry().lock().unwrap_or_else(|p| p.into_inner());
    if open.insert(id) {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::AlreadyOpen,
            format!(
                "this process already holds a handle to segment '{name}'; share that handle \
                 (by reference or Arc) instead of opening the segment twice"
            ),
        ))
    }
}

/// Runs `f` with the registry locked: `fork` goes through here, so a child never inherits
/// the registry's mutex held by another thread.
pub(crate) fn while_registry_locked<R>(f: impl FnOnce() -> R) -> R {
    let _guard = registry().lock().unwrap_or_else(|p| p.into_inner());
    f()
}

/// Empties the registry: a forked child is a new process whose handles are the ones it
/// opens itself (see the `# Safety` of `SharedNdArray::open` for handles inherited through
/// `fork`).
pub(crate) fn reset_registry_in_child() {
    registry().lock().unwrap_or_else(|p| p.into_inner()).clear();
}

fn deregister(id: FileId) {
    let mut open = registry().lock().unwrap_or_else(|p| p.into_inner());
    open.remove(&id);
}

/// Unlinks a temporary segment unless disarmed.
struct TempName {
    name: String,
    armed: bool,
}

impl Drop for TempName {
    fn drop(&mut self) {
        if self.armed {
            let _ = shm::unlink(&self.name);
        }
    }
}

fn temp_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{TEMP_PREFIX}{}-{}-{:x}",
        proc::pid(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        proc::random_u64()
    )
}

fn no_space(name: &str, need: u64, free: u64) -> Error {
    Error::new(
        ErrorKind::NoSpace,
        format!(
            "segment '{name}' needs {need} bytes but /dev/shm has only {free} bytes free; free \
             some (`ndshm ls`, `ndshm gc`) or enlarge /dev/shm: containers often mount a \
             64 MiB /dev/shm (Docker: --shm-size=2g; Kubernetes: an emptyDir volume with \
             medium: Memory)"
        ),
    )
}

fn open_error(name: &str, err: io::Error) -> Error {
    if err.raw_os_error() == Some(libc::ELOOP) {
        return Error::new(
            ErrorKind::InvalidHeader,
            format!(
                "'{name}' in /dev/shm is a symbolic link, not a segment: ndshm never follows \
                 links there"
            ),
        );
    }
    match err.kind() {
        io::ErrorKind::NotFound => Error::os(
            format!(
                "no segment named '{name}' in /dev/shm: create it first, or check the name \
                 with `ndshm ls`"
            ),
            err,
        ),
        io::ErrorKind::PermissionDenied => {
            let detail = std::fs::metadata(shm::path(name))
                .map(|m| {
                    format!(
                        " (it belongs to uid {} with mode {:o}; this process runs as uid {})",
                        m.uid(),
                        m.mode() & 0o7777,
                        nix::unistd::geteuid()
                    )
                })
                .unwrap_or_default();
            Error::os(
                format!(
                    "may not open segment '{name}'{detail}: run as its owner, or have the \
                     creator pass a wider mode (CreateOptions::mode)"
                ),
                err,
            )
        }
        _ => Error::os(format!("cannot open segment '{name}'"), err),
    }
}

/// A mapped shared-memory segment.
///
/// Holds the one raw mapping; everything above it (arrays, values, queues) works on the
/// pointer this type hands out, within `len()` bytes.
pub(crate) struct Segment {
    name: String,
    /// Unmapped in `Drop`, unless a thread of this process still holds the segment's lock.
    map: std::mem::ManuallyDrop<MmapRaw>,
    file_id: FileId,
    writable: bool,
    registered: bool,
    owner: bool,
    info: Option<TrailerInfo>,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("name", &self.name)
            .field("len", &self.map.len())
            .field("writable", &self.writable)
            .field("owner", &self.owner)
            .field("info", &self.info)
            .finish()
    }
}

impl Segment {
    /// Creates segment `name` of kind `kind` holding `payload_len` bytes, lets `init` fill
    /// the payload (zeroed on entry), then publishes it under its name atomically: an opener
    /// sees either no segment or a complete one.
    ///
    /// The caller is the owner: dropping the returned segment unlinks it (unless
    /// `opts.persistent`).
    pub(crate) fn create(
        name: &str,
        kind: SegmentKind,
        payload_len: usize,
        opts: &CreateOptions,
        init: impl FnOnce(&mut [u8]) -> Result<()>,
    ) -> Result<Segment> {
        let name = validate_name(name)?;
        let total = trailer::segment_len(payload_len).ok_or_else(|| {
            Error::new(
                ErrorKind::SizeOverflow,
                format!("segment '{name}' of {payload_len} bytes overflows the address space"),
            )
        })?;
        if shm::file_id_of_name(name).is_some() {
            return Err(exists(name));
        }
        let free = shm::free_space().map_err(|e| Error::os("statvfs /dev/shm", e))?;
        if total as u64 > free {
            return Err(no_space(name, total as u64, free));
        }
        let tmp = TempName {
            name: temp_name(),
            armed: true,
        };
        let file = shm::create_excl(&tmp.name, opts.mode)
            .map_err(|e| Error::os(format!("cannot create segment '{name}'"), e))?;
        shm::reserve(&file, total as u64).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOSPC) {
                no_space(name, total as u64, shm::free_space().unwrap_or(0))
            } else {
                Error::os(
                    format!("cannot reserve {total} bytes for segment '{name}'"),
                    e,
                )
            }
        })?;
        let map = shm::map(&file, total, true, opts.prefault)
            .map_err(|e| Error::os(format!("cannot map segment '{name}'"), e))?;
        let trailer_bytes = Trailer::encode(kind, payload_len, opts.persistent);
        {
            // SAFETY: the mapping is `total` bytes, readable and writable, and nobody else
            // can reach it yet: it is only known under a fresh temporary name that we
            // created with O_EXCL.
            let bytes = unsafe { std::slice::from_raw_parts_mut(map.as_mut_ptr(), total) };
            bytes[total - TRAILER_LEN..].copy_from_slice(&trailer_bytes);
            trailer::init_lock_area(bytes)?;
            init(&mut bytes[..payload_len])?;
        }
        let file_id = shm::file_id(&file).map_err(|e| Error::os("fstat", e))?;
        // Register before publishing: nobody can hold this inode yet.
        register(file_id, name)?;
        match shm::publish(&tmp.name, name) {
            Ok(()) => {}
            Err(e) => {
                deregister(file_id);
                if e.kind() == io::ErrorKind::AlreadyExists {
                    return Err(exists(name));
                }
                return Err(Error::os(format!("cannot publish segment '{name}'"), e));
            }
        }
        let mut tmp = tmp;
        tmp.armed = false;
        let info = Trailer::parse(&trailer_bytes, total)?;
        if !opts.persistent {
            cleanup::track_segment(name);
        }
        Ok(Segment {
            name: name.to_string(),
            map: std::mem::ManuallyDrop::new(map),
            file_id,
            writable: true,
            registered: true,
            owner: !opts.persistent,
            info,
        })
    }

    /// Attaches to an existing segment. The caller is not the owner.
    pub(crate) fn open(name: &str, access: MapAccess) -> Result<Segment> {
        let name = validate_name(name)?;
        let file = shm::open_existing(name, access.writable).map_err(|e| open_error(name, e))?;
        Self::from_file(name, &file, access)
    }

    fn from_file(name: &str, file: &File, access: MapAccess) -> Result<Segment> {
        let meta = file
            .metadata()
            .map_err(|e| Error::os(format!("cannot stat segment '{name}'"), e))?;
        if !meta.is_file() {
            return Err(Error::new(
                ErrorKind::InvalidHeader,
                format!("'{name}' in /dev/shm is not a regular file"),
            ));
        }
        let len = usize::try_from(meta.len()).unwrap_or(usize::MAX);
        if len == 0 {
            return Err(Error::new(
                ErrorKind::Truncated,
                format!(
                    "segment '{name}' is empty (zero bytes): it was never filled, or its \
                     creator died before sizing it; remove it with `ndshm rm {name}`"
                ),
            ));
        }
        // Parse the trailer from a copy read with pread: no mapping is touched yet.
        let info = if len >= TRAILER_LEN {
            let mut tail = [0u8; TRAILER_LEN];
            let got = shm::read_at(file, &mut tail, (len - TRAILER_LEN) as u64)
                .map_err(|e| Error::os(format!("cannot read segment '{name}'"), e))?;
            if got != TRAILER_LEN {
                return Err(Error::new(
                    ErrorKind::Truncated,
                    format!("segment '{name}' shrank while it was being opened"),
                ));
            }
            Trailer::parse(&tail, len).map_err(|e| prefix_name(e, name))?
        } else {
            None
        };
        let file_id = (meta.dev(), meta.ino());
        if access.register {
            register(file_id, name)?;
        }
        let map = match shm::map(file, len, access.writable, access.populate) {
            Ok(map) => map,
            Err(e) => {
                if access.register {
                    deregister(file_id);
                }
                return Err(Error::os(format!("cannot map segment '{name}'"), e));
            }
        };
        Ok(Segment {
            name: name.to_string(),
            map: std::mem::ManuallyDrop::new(map),
            file_id,
            writable: access.writable,
            registered: access.register,
            owner: false,
            info,
        })
    }

    /// Device and inode of the segment's file (to tell whether its name still names it).
    pub(crate) fn file_id(&self) -> (u64, u64) {
        self.file_id
    }

    /// The segment's name, without a leading `/`.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Start of the mapping (page-aligned).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Length of the mapping, trailer included.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Bytes of content: the trailer's payload length, or the whole file when there is no
    /// trailer.
    pub(crate) fn payload_len(&self) -> usize {
        self.info.map_or(self.map.len(), |i| i.payload_len)
    }

    /// Whether the mapping is writable.
    pub(crate) fn is_writable(&self) -> bool {
        self.writable
    }

    /// What the trailer said when the segment was opened, if it has one.
    pub(crate) fn info(&self) -> Option<TrailerInfo> {
        self.info
    }

    /// The live trailer in shared memory.
    pub(crate) fn trailer(&self) -> Option<&Trailer> {
        self.info?;
        // SAFETY: a trailer was validated at open, so the mapping is at least TRAILER_LEN
        // bytes long and its length is a multiple of 64; the mapping is page-aligned, so
        // `len - TRAILER_LEN` is 64-byte aligned as `Trailer` needs. All fields other
        // processes may change are atomics; the rest never changes after publication.
        // The reference lives no longer than `&self`, which keeps the mapping alive.
        Some(unsafe { &*(self.as_ptr().add(self.len() - TRAILER_LEN) as *const Trailer) })
    }

    /// The unique id of this segment's creation (0 for segments without a trailer).
    pub(crate) fn segment_id(&self) -> u64 {
        self.info.map_or(0, |i| i.segment_id)
    }

    /// Checks that the segment is of `kind`; for arrays, a segment without a trailer (a
    /// plain `.npy` file) also passes.
    pub(crate) fn expect_kind(&self, kind: SegmentKind) -> Result<()> {
        match self.info {
            Some(info) if info.kind != kind => Err(Error::new(
                ErrorKind::KindMismatch,
                format!(
                    "segment '{}' is an ndshm {}, not a {kind}; open it with the {} type",
                    self.name, info.kind, info.kind
                ),
            )),
            None if kind != SegmentKind::Array => Err(Error::new(
                ErrorKind::InvalidHeader,
                format!(
                    "segment '{}' has no ndshm trailer, so it is not an ndshm {kind}",
                    self.name
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Whether dropping this handle unlinks the name.
    pub(crate) fn is_owner(&self) -> bool {
        self.owner
    }

    /// Makes this handle the owner (it will unlink on drop) and records this process as
    /// the owner in the trailer.
    pub(crate) fn take_ownership(&mut self) {
        if !self.owner {
            cleanup::track_segment(&self.name);
        }
        self.owner = true;
        if self.writable {
            if let Some(t) = self.trailer() {
                t.claim_ownership();
                t.set_persistent(false);
            }
        }
    }

    /// Hands the name over: the segment outlives this handle, and `gc` leaves it.
    pub(crate) fn persist(&mut self) {
        self.disown();
        if self.writable {
            if let Some(t) = self.trailer() {
                t.set_persistent(true);
            }
        }
    }

    /// Removes the name now, if it still names this segment; the mapping stays usable.
    pub(crate) fn unlink(&mut self) -> Result<()> {
        self.disown();
        if shm::file_id_of_name(&self.name) != Some(self.file_id) {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "segment '{}' was already removed (or the name now belongs to another \
                     segment, which is left alone)",
                    self.name
                ),
            ));
        }
        shm::unlink(&self.name)
            .map_err(|e| Error::os(format!("cannot unlink segment '{}'", self.name), e))
    }

    /// Stops owning the name (it will not be unlinked by this handle).
    fn disown(&mut self) {
        if self.owner {
            cleanup::untrack_segment(&self.name);
        }
        self.owner = false;
    }

    /// Faults in every page of the mapping now.
    pub(crate) fn prefault(&self) -> Result<()> {
        shm::prefault(&self.map, self.writable)
            .map_err(|e| Error::os(format!("cannot prefault segment '{}'", self.name), e))
    }
}

fn prefix_name(err: Error, name: &str) -> Error {
    let kind = err.kind();
    Error::new(kind, format!("segment '{name}': {}", err.message()))
}

fn exists(name: &str) -> Error {
    Error::new(
        ErrorKind::AlreadyExists,
        format!(
            "segment '{name}' already exists: open it instead, pick another name, or remove it \
             with `ndshm rm {name}`"
        ),
    )
}

impl Drop for Segment {
    fn drop(&mut self) {
        if self.owner {
            cleanup::untrack_segment(&self.name);
            if shm::file_id_of_name(&self.name) == Some(self.file_id) {
                let _ = shm::unlink(&self.name);
            }
        }
        if self.registered {
            deregister(self.file_id);
        }
        // SAFETY: a validated trailer ends the mapping, which is still mapped.
        if self.info.is_some() && unsafe { trailer::lock_held_here(self.as_ptr(), self.len()) } {
            // A leaked guard: a thread's robust list runs through this memory. Keep it.
            return;
        }
        // SAFETY: dropped once, here, and never used again.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.map) }
    }
}

/// Removes segment `name` from `/dev/shm`. Handles that have it mapped keep working; new
/// opens fail with [`ErrorKind::NotFound`].
///
/// # Errors
/// [`ErrorKind::InvalidName`], [`ErrorKind::NotFound`], [`ErrorKind::PermissionDenied`].
///
/// # Examples
/// ```
/// # let name = format!("doc-unlink-{}", std::process::id());
/// let mut a = ndshm::SharedNdArray::<u8, ndarray::Ix1>::zeros(&name, 4)?;
/// a.persist();
/// drop(a);
/// ndshm::unlink(&name)?;
/// # Ok::<(), ndshm::Error>(())
/// ```
pub fn unlink(name: &str) -> Result<()> {
    let name = validate_name(name)?;
    shm::unlink(name).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::os(format!("no segment named '{name}' to remove"), e),
        _ => Error::os(format!("cannot remove segment '{name}'"), e),
    })
}
