//! [`Segment`]: one mapped named segment — creation with atomic publication, attachment,
//! ownership (who unlinks), adoption by a forked child — and [`unlink`] by name.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::error::{Error, ErrorKind, Result};
use crate::segment::name::{temp_name, validate_name, TempName};
use crate::segment::registry::{deregister, register, FileId};
use crate::segment::shared_mem::SharedMem;
use crate::segment::trailer::{
    self, LiveTrailer, OwnerFields, SegmentKind, Trailer, TrailerInfo, TRAILER_LEN,
};
use crate::segment::{exit_cleanup, owned, CreateOptions};
use crate::sys::proc;
use crate::sys::shm::{self, FileMapping};

/// How an existing segment is attached.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MapAccess {
    pub(crate) writable: bool,
    pub(crate) populate: bool,
    /// Enter the mapping in the one-handle registry (arrays: see `registry.rs`).
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
/// Holds the one raw mapping (a `sys::shm::FileMapping`). Nothing here forms references
/// to it: the sync, ipc and manager types reach it through `SharedMem` (`Region`), the
/// trailer through [`trailer`](Segment::trailer), and the array views (`array/view.rs`)
/// through the pointer [`as_ptr`](Segment::as_ptr) hands out, within the payload.
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
    /// The mapping and its file (O_CLOEXEC). The file serves reads with `pread` (headers and
    /// `save` never form slices over memory other processes may write), and an adopting
    /// child maps it again. `None` only inside `drop`, which takes it: a foreign copy
    /// forgets it (never unmaps, never closes).
    mapping: Option<FileMapping>,
    file_id: FileId,
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
            .field("len", &self.len())
            .field("writable", &self.is_writable())
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
        let new_file = shm::create_new(&tmp.name, opts.mode)
            .map_err(|e| Error::os(format!("cannot create segment '{name}'"), e))?;
        // Held while we build it: gc removes a temporary segment only when it is unlocked.
        crate::sys::lease::lock_file(new_file.file())
            .map_err(|e| Error::os(format!("cannot lock segment '{name}'"), e))?;
        shm::reserve(new_file.file(), total as u64).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOSPC) {
                no_space(name, total as u64, shm::free_space().unwrap_or(0))
            } else {
                Error::os(
                    format!("cannot reserve {total} bytes for segment '{name}'"),
                    e,
                )
            }
        })?;
        let trailer_bytes = Trailer::encode(kind, payload_len, opts.persistent);
        let (mapping, filled) = new_file
            .map_and_init(total, opts.prefault, |bytes| {
                bytes[total - TRAILER_LEN..].copy_from_slice(&trailer_bytes);
                trailer::init_lock_area(bytes)?;
                init(&mut bytes[..payload_len])
            })
            .map_err(|e| Error::os(format!("cannot map segment '{name}'"), e))?;
        filled?;
        let file_id = shm::file_id(mapping.file()).map_err(|e| Error::os("fstat", e))?;
        let token = proc::process_token();
        // Arrays have one handle per process (aliasing `&mut` views); the sync, ipc and
        // manager types may be opened as often as a program likes. Register before
        // publishing: nobody can hold this inode yet.
        let registered = kind == SegmentKind::Array;
        if registered {
            register(token, file_id, name, true)?;
        }
        let mut draws = 1;
        let name = loop {
            match shm::publish(&tmp.name, &owned_name) {
                Ok(()) => break owned_name.as_str(),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if !opts.retries_taken_names() || draws == DRAWS {
                        if registered {
                            deregister(token, file_id, true);
                        }
                        return Err(exists(&owned_name));
                    }
                    draws += 1;
                    owned_name = opts.next_name()?;
                }
                Err(e) => {
                    if registered {
                        deregister(token, file_id, true);
                    }
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
        let segment = Segment::new(
            name,
            mapping,
            file_id,
            registered,
            !opts.persistent,
            info,
            token,
            kind == SegmentKind::Array,
        );
        if opts.cleanup_on_exit && !opts.persistent {
            // On failure the segment drops here, unlinked: nothing is left untracked.
            exit_cleanup::track(segment.name(), segment.segment_id())?;
        }
        Ok(segment)
    }

    /// Assembles a handle bound to the process with token `token`; array mappings (`keep`)
    /// are excluded from fork.
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: &str,
        mapping: FileMapping,
        file_id: FileId,
        registered: bool,
        owner: bool,
        info: Option<TrailerInfo>,
        token: u64,
        keep: bool,
    ) -> Segment {
        let kept = keep && shm::exclude_from_fork(mapping.as_ptr(), mapping.len());
        Segment {
            name: name.to_string(),
            mapping: Some(mapping),
            file_id,
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
            register(token, file_id, name, access.writable)?;
        }
        let mapping = match FileMapping::new(file, len, access.writable, access.populate) {
            Ok(mapping) => mapping,
            Err(e) => {
                if access.register {
                    deregister(token, file_id, access.writable);
                }
                return Err(Error::os(format!("cannot map segment '{name}'"), e));
            }
        };
        // Arrays, and plain `.npy` files (no trailer), which only arrays open.
        let array = info.is_none_or(|i| i.kind == SegmentKind::Array);
        Ok(Segment::new(
            name,
            mapping,
            file_id,
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
            register(me, self.file_id, &self.name, self.is_writable())?;
        }
        if self.kept_from_children.load(Ordering::Relaxed) {
            let mapped = self.mapping().map_again_in_place();
            if let Err(e) = mapped {
                if self.registered {
                    deregister(me, self.file_id, self.is_writable());
                }
                return Err(Error::os(
                    format!("cannot map segment '{}' in the child", self.name),
                    e,
                ));
            }
            let kept = shm::exclude_from_fork(self.as_ptr(), self.len());
            self.kept_from_children.store(kept, Ordering::Relaxed);
        }
        self.bound_to.store(me, Ordering::Relaxed);
        Ok(())
    }

    /// Whether the mapping is excluded from fork (for tests).
    #[cfg(test)]
    pub(crate) fn is_kept_from_children(&self) -> bool {
        self.kept_from_children.load(Ordering::Relaxed)
    }

    /// The segment's open file, for reads with `pread` (no slice over shared memory).
    pub(crate) fn file(&self) -> &File {
        self.mapping().file()
    }

    fn mapping(&self) -> &FileMapping {
        self.mapping
            .as_ref()
            .expect("ndshm bug: a segment's mapping is taken only in its drop")
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
        self.mapping().as_ptr()
    }

    /// Length of the mapping, trailer included.
    pub(crate) fn len(&self) -> usize {
        self.mapping().len()
    }

    /// Bytes of content: the trailer's payload length, or the whole file when there is no
    /// trailer.
    pub(crate) fn payload_len(&self) -> usize {
        self.info.map_or(self.len(), |i| i.payload_len)
    }

    /// Whether the mapping is writable.
    pub(crate) fn is_writable(&self) -> bool {
        self.mapping().is_writable()
    }

    /// What the trailer said when the segment was opened, if it has one.
    pub(crate) fn info(&self) -> Option<TrailerInfo> {
        self.info
    }

    /// The live trailer in shared memory, for a writable handle of a segment that has one
    /// (a read-only mapping must not be written, and this process never locks through it).
    pub(crate) fn trailer(&self) -> Option<LiveTrailer<'_>> {
        SharedMem::segment_trailer(self).map(LiveTrailer::new)
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
        if let Some(t) = self.trailer() {
            t.claim_ownership();
            t.set_persistent(false);
        }
    }

    /// Hands the name over: the segment outlives this handle, and `gc` leaves it.
    pub(crate) fn persist(&mut self) {
        self.disown();
        if let Some(t) = self.trailer() {
            t.set_persistent(true);
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
            Some(t) => t,
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
        let before = (t.owner(), t.is_persistent());
        t.set_owner(to);
        t.set_persistent(false);
        self.disown();
        Ok(before)
    }

    /// Undoes [`hand_over`](Self::hand_over) on a handle that did not own the name.
    pub(crate) fn restore_owner(&self, (owner, persistent): (OwnerFields, bool)) {
        if let Some(t) = self.trailer() {
            t.set_owner(owner);
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
        let len = self.len() as u64;
        shm::reserve(self.file(), len).map_err(|e| {
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
        self.mapping()
            .prefault()
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
        let me = proc::process_token();
        let bound = self.bound_to.load(Ordering::Relaxed);
        if bound != me {
            // A copy inherited through fork and not adopted here: it belongs to another
            // process. Do nothing at all — the name, the registry entry and the mapping
            // (or the placeholder over it) are the parent's business; the memory goes
            // when this process exits.
            std::mem::forget(self.mapping.take());
            return;
        }
        if self.owner && self.made_by == me {
            owned::untrack_segment(&self.name);
            if shm::file_id_of_name(&self.name) == Some(self.file_id) {
                let _ = shm::unlink(&self.name);
            }
        }
        if self.registered {
            deregister(me, self.file_id, self.is_writable());
        }
        if self.kept_from_children.load(Ordering::Relaxed) {
            // Before unmapping: a fork after this point must not cover the freed range.
            shm::forget_fork_exclusion(self.as_ptr());
        }
        // Read the trailer only if the file still covers the mapping: a segment truncated
        // behind our back (breaking `open`'s contract) must not turn this drop into a
        // SIGBUS.
        let intact = self
            .file()
            .metadata()
            .is_ok_and(|m| m.len() >= self.len() as u64);
        let held = intact
            && self
                .trailer()
                .is_some_and(|t| t.lock().held_in_this_process());
        let Some(mapping) = self.mapping.take() else {
            return;
        };
        if held {
            // A leaked guard: a thread's robust list runs through this memory. Keep it.
            mapping.keep_mapped();
        }
        // Otherwise `mapping` drops here: unmapped and closed (views borrow the handle, so
        // none is left).
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
