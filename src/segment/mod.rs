//! A named POSIX shared-memory segment: creation with atomic publication, attachment,
//! ownership (who unlinks), and the one mapping every higher type is built on.

pub(crate) mod options;
pub(crate) mod owned;
pub(crate) mod region;
pub(crate) mod shared_mem;
pub(crate) mod trailer;

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::mem::ManuallyDrop;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use memmap2::MmapRaw;

use crate::error::{Error, ErrorKind, Result};
use crate::segment::trailer::{SegmentKind, Trailer, TrailerInfo, TRAILER_LEN};
use crate::sys::{proc, shm};
pub use options::CreateOptions;

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
    /// The sync, ipc and manager types: read-write, any number of handles per process.
    pub(crate) const SHARED_OBJECT: MapAccess = MapAccess {
        writable: true,
        populate: false,
        register: false,
    };
    pub(crate) const READ_ONLY: MapAccess = MapAccess {
        writable: false,
        populate: false,
        register: true,
    };
}

type FileId = (u64, u64);

/// The segments mapped by handles bound to a process: (process token, device, inode).
///
/// Within one process, one segment has at most one handle, so two live `&mut` views of it
/// cannot exist. Keyed by the process token rather than emptied in a forked child: the
/// child inherits the parent's entries, which can never match its own token, and its
/// copies of the parent's handles stay registered under the parent's token (they are
/// unusable in the child and their `Drop` does nothing there). A `ForkSafeMutex`, so that
/// a fork by any thread, at any moment, leaves the child a usable registry.
static REGISTRY: proc::ForkSafeMutex<BTreeSet<(u64, u64, u64)>> =
    proc::ForkSafeMutex::new(BTreeSet::new());

fn register(token: u64, id: FileId, name: &str) -> Result<()> {
    if REGISTRY.with(|open| open.insert((token, id.0, id.1))) {
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

fn deregister(token: u64, id: FileId) {
    REGISTRY.with(|open| open.remove(&(token, id.0, id.1)));
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
        "{TEMP_PREFIX}{}-L{:x}-{}-{:x}",
        proc::pid(),
        crate::sys::lease::mine(),
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
///
/// A handle is bound to the process that made it (its process token): a copy inherited
/// through `fork` is foreign in the child, and its `Drop` there does nothing at all (no
/// unlink, no registry change, no unmap). The forking code may bind a copy to the child
/// explicitly with [`adopt_in_child`](Segment::adopt_in_child).
///
/// Array mappings are also kept out of forked children (`MADV_DONTFORK` plus an
/// inaccessible placeholder, see `shm::exclude_from_fork`); the mappings of the other
/// kinds (values, locks, queues, containers) are inherited, so those objects keep working
/// in children.
pub(crate) struct Segment {
    name: String,
    /// Never unmapped by a foreign copy (see `Drop`), hence `ManuallyDrop`.
    map: ManuallyDrop<MmapRaw>,
    /// The segment's file (O_CLOEXEC): headers and `save` read it with `pread` instead of
    /// forming slices over memory other processes may write, and an adopting child maps it
    /// again. Never closed by a foreign copy, hence `ManuallyDrop`.
    file: ManuallyDrop<File>,
    file_id: FileId,
    writable: bool,
    registered: bool,
    owner: bool,
    info: Option<TrailerInfo>,
    /// Token of the process that made this handle.
    made_by: u64,
    /// Token of the process the handle works in: `made_by`, or that of a child that
    /// adopted it. An atomic so that a shared borrow can be adopted (the input array of
    /// `fork_chunks_into`).
    bound_to: AtomicU64,
    /// Whether the mapping is excluded from fork (`MADV_DONTFORK` + placeholder).
    kept_from_children: AtomicBool,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("name", &self.name)
            .field("len", &self.map.len())
            .field("writable", &self.writable)
            .field("owner", &self.owner)
            .field("bound_here", &self.is_bound_here())
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
        opts: &CreateOptions,
        kind: SegmentKind,
        payload_len: usize,
        init: impl FnOnce(&mut [u8]) -> Result<()>,
    ) -> Result<Segment> {
        // A generated name is drawn again while it is taken (64 random bits: a second draw
        // is already astronomically unlikely; 16 bound the loop).
        const DRAWS: usize = 16;
        let mut owned_name = opts.next_name()?;
        for _ in 1..DRAWS {
            if !(opts.retries_taken_names() && shm::file_id_of_name(&owned_name).is_some()) {
                break;
            }
            owned_name = opts.next_name()?;
        }
        let name = owned_name.as_str();
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
        // Held while we build it: gc removes a temporary segment only when it is unlocked.
        crate::sys::lease::lock_file(&file)
            .map_err(|e| Error::os(format!("cannot lock segment '{name}'"), e))?;
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
        let token = proc::process_token();
        // Arrays have one handle per process (aliasing `&mut` views); the sync, ipc and
        // manager types may be opened as often as a program likes. Register before
        // publishing: nobody can hold this inode yet.
        let registered = kind == SegmentKind::Array;
        if registered {
            register(token, file_id, name)?;
        }
        let mut draws = 1;
        let name = loop {
            match shm::publish(&tmp.name, &owned_name) {
                Ok(()) => break owned_name.as_str(),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if !opts.retries_taken_names() || draws == DRAWS {
                        if registered {
                            deregister(token, file_id);
                        }
                        return Err(exists(&owned_name));
                    }
                    draws += 1;
                    owned_name = opts.next_name()?;
                }
                Err(e) => {
                    deregister(token, file_id);
                    return Err(Error::os(
                        format!("cannot publish segment '{owned_name}'"),
                        e,
                    ));
                }
            }
        };
        let mut tmp = tmp;
        tmp.armed = false;
        let info = Trailer::parse(&trailer_bytes, total)?;
        if !opts.persistent {
            owned::track_segment(name);
        }
        Ok(Segment::new(
            name,
            map,
            file,
            file_id,
            true,
            registered,
            !opts.persistent,
            info,
            token,
            kind == SegmentKind::Array,
        ))
    }

    /// Assembles a handle bound to the process with token `token`; array mappings (`keep`)
    /// are excluded from fork.
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: &str,
        map: MmapRaw,
        file: File,
        file_id: FileId,
        writable: bool,
        registered: bool,
        owner: bool,
        info: Option<TrailerInfo>,
        token: u64,
        keep: bool,
    ) -> Segment {
        let kept = keep && shm::exclude_from_fork(map.as_mut_ptr(), map.len());
        Segment {
            name: name.to_string(),
            map: ManuallyDrop::new(map),
            file: ManuallyDrop::new(file),
            file_id,
            writable,
            registered,
            owner,
            info,
            made_by: token,
            bound_to: AtomicU64::new(token),
            kept_from_children: AtomicBool::new(kept),
        }
    }

    /// Attaches to an existing segment. The caller is not the owner.
    pub(crate) fn open(name: &str, access: MapAccess) -> Result<Segment> {
        let name = validate_name(name)?;
        let file = shm::open_existing(name, access.writable).map_err(|e| open_error(name, e))?;
        Self::from_file(name, file, access)
    }

    fn from_file(name: &str, file: File, access: MapAccess) -> Result<Segment> {
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
            let got = shm::read_at(&file, &mut tail, (len - TRAILER_LEN) as u64)
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
        let token = proc::process_token();
        if access.register {
            register(token, file_id, name)?;
        }
        let map = match shm::map(&file, len, access.writable, access.populate) {
            Ok(map) => map,
            Err(e) => {
                if access.register {
                    deregister(token, file_id);
                }
                return Err(Error::os(format!("cannot map segment '{name}'"), e));
            }
        };
        // Arrays, and plain `.npy` files (no trailer), which only arrays open.
        let array = info.is_none_or(|i| i.kind == SegmentKind::Array);
        Ok(Segment::new(
            name,
            map,
            file,
            file_id,
            access.writable,
            access.register,
            false,
            info,
            token,
            array,
        ))
    }

    /// Whether this handle is bound to the calling process: made here, or adopted here.
    /// One relaxed load of the handle's token and one of the process's.
    #[inline]
    pub(crate) fn is_bound_here(&self) -> bool {
        self.bound_to.load(Ordering::Relaxed) == proc::process_token()
    }

    /// In a child forked by ndshm's forking code: binds this inherited handle to the
    /// calling process, so that it works here. Maps the segment again at the same address
    /// (over the placeholder the fork left, when the mapping was excluded from fork),
    /// excludes it from the child's own forks, and registers it in this process. The
    /// adopted handle never unlinks the name (it does not own it here).
    ///
    /// Idempotent and cheap once done (one compare). Takes `&self` so that a shared borrow
    /// can be adopted too (`fork_chunks_into`'s read-only input): only the token changes,
    /// and the mapping keeps its address.
    ///
    /// The caller (the forking code) guarantees what makes this sound: in the parent, the
    /// handle was borrowed by the forking call for the whole call, so no view of it other
    /// than those the call hands the child existed when the child was forked.
    ///
    /// # Errors
    /// [`ErrorKind::AlreadyOpen`] when the child already holds a handle of this segment
    /// (it opened it by name), or an OS error from `mmap`.
    pub(crate) fn adopt_in_child(&self) -> Result<()> {
        let me = proc::process_token();
        if self.bound_to.load(Ordering::Relaxed) == me {
            return Ok(());
        }
        if self.registered {
            register(me, self.file_id, &self.name)?;
        }
        if self.kept_from_children.load(Ordering::Relaxed) {
            // SAFETY: the range is this handle's own mapping, which the fork replaced by a
            // placeholder in this child; no view of it is in use here (see above), and
            // the new mapping has the same file, length and access.
            let mapped = unsafe {
                shm::map_again_at(
                    &self.file,
                    self.map.as_mut_ptr(),
                    self.map.len(),
                    self.writable,
                )
            };
            if let Err(e) = mapped {
                if self.registered {
                    deregister(me, self.file_id);
                }
                return Err(Error::os(
                    format!("cannot map segment '{}' in the child", self.name),
                    e,
                ));
            }
            let kept = shm::exclude_from_fork(self.map.as_mut_ptr(), self.map.len());
            self.kept_from_children.store(kept, Ordering::Relaxed);
        }
        self.bound_to.store(me, Ordering::Relaxed);
        Ok(())
    }

    /// The segment's open file, for reads with `pread` (no slice over shared memory).
    pub(crate) fn file(&self) -> &File {
        &self.file
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

    /// Whether dropping this handle unlinks the name: it owns the name and was made by
    /// the calling process (a copy adopted by a child never unlinks).
    pub(crate) fn is_owner(&self) -> bool {
        self.owner && self.made_by == proc::process_token()
    }

    /// Makes this handle the owner (it will unlink on drop) and records this process as
    /// the owner in the trailer.
    pub(crate) fn take_ownership(&mut self) {
        if !self.owner {
            owned::track_segment(&self.name);
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

    /// Hands the segment over to the process whose owner fields are `to` (pid, start
    /// time, lease, pid namespace, as a trailer records them): this handle stops owning
    /// the name, the trailer names `to` as the owner, and the segment is not persistent,
    /// so `gc` reclaims it once that process has ended, unless someone claims it first
    /// ([`take_ownership`](Self::take_ownership)). Returns the owner fields and the
    /// persistent flag it replaced, for [`restore_owner`](Self::restore_owner).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for a read-only handle or a segment without an ndshm
    /// trailer (a plain `.npy` file): its owner cannot be recorded.
    pub(crate) fn hand_over(&mut self, to: OwnerFields) -> Result<(OwnerFields, bool)> {
        let t = match self.trailer() {
            Some(t) if self.writable => t,
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!(
                        "segment '{}' is read-only or has no ndshm trailer, so its owner \
                         cannot be handed over: only writable ndshm arrays can be moved",
                        self.name
                    ),
                ))
            }
        };
        let before = (
            OwnerFields::of(t),
            t.persistent.load(Ordering::Acquire) != 0,
        );
        to.store(t);
        t.set_persistent(false);
        self.disown();
        Ok(before)
    }

    /// Undoes [`hand_over`](Self::hand_over) on a handle that did not own the name.
    pub(crate) fn restore_owner(&self, (owner, persistent): (OwnerFields, bool)) {
        if let Some(t) = self.trailer().filter(|_| self.writable) {
            owner.store(t);
            t.set_persistent(persistent);
        }
    }

    /// Reserves the blocks of the whole segment (`posix_fallocate`): a segment another
    /// tool made sparse (`ftruncate` only, as Python's `SharedMemory` does) then cannot
    /// fail on a later first write for lack of space in `/dev/shm`.
    ///
    /// # Errors
    /// [`ErrorKind::NoSpace`] when `/dev/shm` has no room for the missing blocks; an OS
    /// error otherwise (a read-only handle: `EBADF`).
    pub(crate) fn reserve(&self) -> Result<()> {
        let len = self.map.len() as u64;
        shm::reserve(&self.file, len).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOSPC) {
                no_space(&self.name, len, shm::free_space().unwrap_or(0))
            } else {
                Error::os(
                    format!("cannot reserve the {len} bytes of segment '{}'", self.name),
                    e,
                )
            }
        })
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
            owned::untrack_segment(&self.name);
        }
        self.owner = false;
    }

    /// Faults in every page of the mapping now.
    pub(crate) fn prefault(&self) -> Result<()> {
        shm::prefault(&self.map, self.writable)
            .map_err(|e| Error::os(format!("cannot prefault segment '{}'", self.name), e))
    }
}

/// The owner fields of a trailer: who unlinks the segment, and whose death makes it
/// garbage for `gc` (the lease decides; the rest is for display).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OwnerFields {
    pub(crate) pid: i32,
    pub(crate) start: u64,
    pub(crate) lease: u64,
    pub(crate) pidns: u64,
}

impl OwnerFields {
    /// The calling process.
    pub(crate) fn this_process() -> OwnerFields {
        OwnerFields {
            pid: proc::pid(),
            start: proc::self_start_time(),
            lease: crate::sys::lease::mine(),
            pidns: proc::pid_namespace(),
        }
    }

    /// The owner recorded in a validated trailer copy.
    pub(crate) fn of_info(info: &TrailerInfo) -> OwnerFields {
        OwnerFields {
            pid: info.owner_pid,
            start: info.owner_start,
            lease: info.owner_lease,
            pidns: info.owner_pidns,
        }
    }

    fn of(t: &Trailer) -> OwnerFields {
        OwnerFields {
            pid: t.owner_pid.load(Ordering::Acquire),
            start: t.owner_start.load(Ordering::Relaxed),
            lease: t.owner_lease.load(Ordering::Relaxed),
            pidns: t.owner_pidns.load(Ordering::Relaxed),
        }
    }

    fn store(self, t: &Trailer) {
        t.owner_start.store(self.start, Ordering::Relaxed);
        t.owner_pidns.store(self.pidns, Ordering::Relaxed);
        t.owner_lease.store(self.lease, Ordering::Relaxed);
        t.owner_pid.store(self.pid, Ordering::Release);
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
        let me = proc::process_token();
        let bound = self.bound_to.load(Ordering::Relaxed);
        if bound != me {
            // A copy inherited through fork and not adopted here: it belongs to another
            // process. Do nothing at all — the name, the registry entry and the mapping
            // (or the placeholder over it) are the parent's business; the memory goes
            // when this process exits.
            return;
        }
        if self.owner && self.made_by == me {
            owned::untrack_segment(&self.name);
            if shm::file_id_of_name(&self.name) == Some(self.file_id) {
                let _ = shm::unlink(&self.name);
            }
        }
        if self.registered {
            deregister(me, self.file_id);
        }
        if self.kept_from_children.load(Ordering::Relaxed) {
            // Before unmapping: a fork after this point must not cover the freed range.
            shm::forget_fork_exclusion(self.map.as_mut_ptr());
        }
        // Read the trailer only if the file still covers the mapping: a segment truncated
        // behind our back (breaking `open`'s contract) must not turn this drop into a
        // SIGBUS.
        let intact = self
            .file
            .metadata()
            .is_ok_and(|m| m.len() >= self.len() as u64);
        // SAFETY: the handle is bound to this process and being dropped: `file` is dropped
        // exactly once, here, and nothing uses it afterwards.
        unsafe { ManuallyDrop::drop(&mut self.file) };
        let held = intact
            && self.info.is_some()
            // SAFETY: a validated trailer ends the mapping, which is still mapped, and the
            // file behind it is long enough (checked above) for the read not to fault.
            && unsafe { trailer::lock_held_here(self.as_ptr(), self.len()) };
        if held {
            // A leaked guard: a thread's robust list runs through this memory. Keep it.
            return;
        }
        // SAFETY: dropped exactly once, here, and nothing uses it afterwards (views borrow
        // the handle).
        unsafe { ManuallyDrop::drop(&mut self.map) }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::array::SharedNdArray;

    fn name(tag: &str) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        format!(
            "ndshm-unit-seg-{}-{}-{tag}",
            proc::pid(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    #[test]
    fn registry_entries_of_another_process_never_collide() {
        let id = (u64::MAX, u64::MAX - 7);
        register(1, id, "x").unwrap();
        // Another token (a forked child's) may register the same file.
        register(3, id, "x").unwrap();
        assert_eq!(
            register(1, id, "x").unwrap_err().kind(),
            ErrorKind::AlreadyOpen
        );
        deregister(1, id);
        deregister(3, id);
        register(1, id, "x").unwrap();
        deregister(1, id);
    }

    #[test]
    fn array_mappings_are_kept_from_children_and_others_are_not() {
        let n = name("kept");
        let a = SharedNdArray::<u8, ndarray::Ix1>::zeros(&n, 8).unwrap();
        assert!(a.segment().kept_from_children.load(Ordering::Relaxed));
        let q = Segment::create(
            &CreateOptions::named(name("plain")),
            SegmentKind::Queue,
            8,
            |_| Ok(()),
        )
        .unwrap();
        assert!(!q.kept_from_children.load(Ordering::Relaxed));
    }

    #[test]
    fn adopt_in_child_maps_the_array_again_and_is_idempotent() {
        let n = name("adopt");
        let mut a = SharedNdArray::<u64, ndarray::Ix1>::zeros(&n, 16).unwrap();
        a.view_mut().fill(5);
        let a = &a;
        crate::scope(|s| -> Result<_> {
            s.spawn(|| -> Result<()> {
                assert!(!a.segment().is_bound_here());
                a.adopt_in_child()?;
                a.adopt_in_child()?;
                assert!(a.segment().is_bound_here());
                assert!(!a.is_owner(), "an adopted copy never owns the name");
                assert_eq!(a.view().sum(), 80);
                Ok(())
            })?;
            Ok(())
        })
        .unwrap();
        assert!(shm::file_id_of_name(&n).is_some());
    }

    #[test]
    fn excluding_a_range_twice_takes_one_slot_and_drop_frees_it() {
        let n = name("slots");
        let a = SharedNdArray::<u8, ndarray::Ix1>::zeros(&n, 8).unwrap();
        let (ptr, len) = (a.segment().as_ptr(), a.segment().len());
        assert_eq!(shm::fork_exclusion_slots_of(ptr), 1);
        assert!(shm::exclude_from_fork(ptr, len));
        assert_eq!(shm::fork_exclusion_slots_of(ptr), 1);
        drop(a);
        assert_eq!(shm::fork_exclusion_slots_of(ptr), 0);
    }
}
