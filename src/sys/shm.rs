//! POSIX shared memory: `shm_open`, space reservation, atomic publication, mapping.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use memmap2::{MmapOptions, MmapRaw};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// Where Linux keeps POSIX shared-memory objects.
pub(crate) const SHM_DIR: &str = "/dev/shm";

/// The path of segment `name` (already validated: no `/`, no NUL).
pub(crate) fn path(name: &str) -> PathBuf {
    PathBuf::from(SHM_DIR).join(name)
}

fn nix_err(e: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Creates segment `name` exclusively with permission bits `mode` (umask not applied).
pub(crate) fn create_excl(name: &str, mode: u32) -> io::Result<File> {
    let fd = nix::sys::mman::shm_open(
        format!("/{name}").as_str(),
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode),
    )
    .map_err(nix_err)?;
    let file = File::from(fd);
    // shm_open applied the umask; set exactly what the caller asked for.
    file.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))?;
    Ok(file)
}

/// Opens existing segment `name`, read-write or read-only.
pub(crate) fn open_existing(name: &str, writable: bool) -> io::Result<File> {
    // O_NONBLOCK: a FIFO planted under the name must not block the opener (it is then
    // rejected as not a regular file); it changes nothing for a regular file. shm_open adds
    // O_NOFOLLOW itself.
    let flags = if writable {
        OFlag::O_RDWR
    } else {
        OFlag::O_RDONLY
    } | OFlag::O_CLOEXEC
        | OFlag::O_NONBLOCK;
    let fd = nix::sys::mman::shm_open(format!("/{name}").as_str(), flags, Mode::empty())
        .map_err(nix_err)?;
    Ok(File::from(fd))
}

/// Opens `/dev/shm/<name>` read-only to inspect it (`info`, `ls`, `gc`): never follows a
/// symbolic link and never blocks on a FIFO. The caller checks that it is a regular file.
pub(crate) fn open_for_inspection(name: &str) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path(name))
}

/// Bytes available to an unprivileged writer in `/dev/shm`.
pub(crate) fn free_space() -> io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(SHM_DIR).map_err(nix_err)?;
    Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// Sets the size of `file` to `len` and reserves its pages, so that a full `/dev/shm`
/// is an `ENOSPC` error here instead of a SIGBUS on first touch.
pub(crate) fn reserve(file: &File, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    nix::fcntl::posix_fallocate(std::os::fd::AsRawFd::as_raw_fd(file), 0, len as libc::off_t)
        .map_err(nix_err)
}

/// Gives the temporary segment `tmp` its final name `name`, atomically, failing with
/// `AlreadyExists` if `name` is taken. The temporary name is gone afterwards either way
/// only on success; on failure the caller still owns `tmp`.
pub(crate) fn publish(tmp: &str, name: &str) -> io::Result<()> {
    let (from, to) = (path(tmp), path(name));
    match nix::fcntl::renameat2(
        None,
        from.as_path(),
        None,
        to.as_path(),
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    ) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => {
            // Filesystems without RENAME_NOREPLACE: link(2) never replaces either.
            std::fs::hard_link(&from, &to)?;
            let _ = std::fs::remove_file(&from);
            Ok(())
        }
        Err(e) => Err(nix_err(e)),
    }
}

/// Removes segment `name`.
pub(crate) fn unlink(name: &str) -> io::Result<()> {
    nix::sys::mman::shm_unlink(format!("/{name}").as_str()).map_err(nix_err)
}

/// Device and inode of segment `name`, if it exists.
pub(crate) fn file_id_of_name(name: &str) -> Option<(u64, u64)> {
    let meta = std::fs::metadata(path(name)).ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Device and inode of an open file.
pub(crate) fn file_id(file: &File) -> io::Result<(u64, u64)> {
    let meta = file.metadata()?;
    Ok((meta.dev(), meta.ino()))
}

/// Maps all `len` bytes of `file`, shared, read-write or read-only; `populate` pre-faults
/// the page tables (`MAP_POPULATE`).
pub(crate) fn map(file: &File, len: usize, writable: bool, populate: bool) -> io::Result<MmapRaw> {
    let mut opts = MmapOptions::new();
    opts.len(len);
    if populate {
        opts.populate();
    }
    if writable {
        opts.map_raw(file)
    } else {
        opts.map_raw_read_only(file)
    }
}

/// Faults in the page tables of a mapping now (`MADV_POPULATE_WRITE` or `_READ`), falling
/// back to touching one byte per page on kernels older than 5.14.
pub(crate) fn prefault(map: &MmapRaw, writable: bool) -> io::Result<()> {
    if map.len() == 0 {
        return Ok(());
    }
    let advice = if writable {
        memmap2::Advice::PopulateWrite
    } else {
        memmap2::Advice::PopulateRead
    };
    match map.advise(advice) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let page = page_size();
            let base = map.as_ptr();
            let mut off = 0;
            while off < map.len() {
                // SAFETY: `off < map.len()`, so the byte lies inside the live mapping; a
                // volatile read of a byte has no alignment or validity requirement.
                unsafe { std::ptr::read_volatile(base.add(off)) };
                off += page;
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The system page size.
pub(crate) fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |p| p as usize)
}

/// Reads up to `buf.len()` bytes at `offset` (no mapping: safe on a truncated file).
pub(crate) fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Most array mappings one process can keep from its forked children at once; beyond it,
/// handles fall back to the process token alone (see [`exclude_from_fork`]).
pub(crate) const FORK_EXCLUSION_SLOTS: usize = 1024;

/// One mapping excluded from fork: its start and length (0: the slot is free or being
/// filled). Written before `madvise(MADV_DONTFORK)`, cleared before `munmap`, read by the
/// fork child handler.
struct ExcludedRange {
    addr: AtomicUsize,
    len: AtomicUsize,
}

static EXCLUDED: [ExcludedRange; FORK_EXCLUSION_SLOTS] = [const {
    ExcludedRange {
        addr: AtomicUsize::new(0),
        len: AtomicUsize::new(0),
    }
}; FORK_EXCLUSION_SLOTS];

fn page_round_up(len: usize) -> usize {
    let page = page_size();
    len.div_ceil(page) * page
}

/// Keeps the mapping `[addr, addr + len)` (page-aligned start) out of every process forked
/// from now on: `madvise(MADV_DONTFORK)`, and the range is recorded so that the fork child
/// handler maps an inaccessible placeholder over it in the child
/// ([`place_fork_placeholders`]). Idempotent for a range already recorded.
///
/// Returns `false` when the range could not be excluded (the table of
/// [`FORK_EXCLUSION_SLOTS`] ranges is full, or `madvise` failed): the mapping is then
/// inherited by children as any other, and only the handle's process token guards it.
pub(crate) fn exclude_from_fork(addr: *mut u8, len: usize) -> bool {
    let addr = addr as usize;
    if len == 0 || addr == 0 {
        return false;
    }
    let len = page_round_up(len);
    let slot = match EXCLUDED
        .iter()
        .find(|s| s.addr.load(Ordering::Relaxed) == addr)
    {
        Some(s) => s,
        None => match EXCLUDED.iter().find(|s| {
            s.addr
                .compare_exchange(0, addr, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        }) {
            Some(s) => s,
            None => return false,
        },
    };
    // Recorded before the madvise: a fork in between gives the child a placeholder over a
    // mapping it inherited, which is what it would have had anyway.
    slot.len.store(len, Ordering::Release);
    // SAFETY: [addr, addr + len) is a mapping of this process (the caller's, page-aligned
    // start, length rounded up to whole pages as the kernel maps it); MADV_DONTFORK only
    // changes what a later fork copies.
    let r = unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTFORK) };
    if r != 0 {
        forget_fork_exclusion(addr as *mut u8);
        return false;
    }
    true
}

/// Forgets the exclusion of the mapping starting at `addr`: call it before unmapping, so
/// that no later fork maps a placeholder over memory this process may reuse.
pub(crate) fn forget_fork_exclusion(addr: *mut u8) {
    let addr = addr as usize;
    if let Some(s) = EXCLUDED
        .iter()
        .find(|s| s.addr.load(Ordering::Relaxed) == addr)
    {
        s.len.store(0, Ordering::Release);
        s.addr.store(0, Ordering::Release);
    }
}

/// In the child of a fork (from the atfork child handler, single-threaded): maps an
/// inaccessible, unbacked placeholder over every range excluded from fork, where the
/// kernel left a hole. A stale view inherited from the parent then faults (SIGSEGV)
/// instead of reaching whatever the child would map there later.
///
/// Async-signal-safe: atomics and `mmap` only.
pub(crate) fn place_fork_placeholders() {
    for s in EXCLUDED.iter() {
        let len = s.len.load(Ordering::Acquire);
        let addr = s.addr.load(Ordering::Relaxed);
        if len == 0 || addr == 0 {
            continue;
        }
        // SAFETY: MAP_FIXED over [addr, addr + len), which the parent mapped and excluded
        // from fork: in the child it holds nothing (or, if the fork came between recording
        // and madvise, the parent's mapping, which the child must not use either). Nothing
        // in the child may use this range: the handles that own it are bound to the parent.
        unsafe {
            libc::mmap(
                addr as *mut libc::c_void,
                len,
                libc::PROT_NONE,
                libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
    }
}

/// Maps `file` again at exactly `addr` (shared, `len` bytes), replacing whatever this
/// process has there: in a forked child, the placeholder over a mapping its parent
/// excluded from fork.
///
/// # Safety
/// `[addr, addr + len)` must be a range this process reserved for this segment (the
/// inherited placeholder or mapping of the same handle); nothing may hold references into
/// it that assume other contents.
pub(crate) unsafe fn map_again_at(
    file: &File,
    addr: *mut u8,
    len: usize,
    writable: bool,
) -> io::Result<()> {
    let prot = if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    // SAFETY: the caller promises the range is ours to replace; the file is open with the
    // access `prot` asks for, and `len` is its mapped length.
    let got = unsafe {
        libc::mmap(
            addr.cast(),
            len,
            prot,
            libc::MAP_SHARED | libc::MAP_FIXED,
            std::os::fd::AsRawFd::as_raw_fd(file),
            0,
        )
    };
    if got == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How many slots record a range starting at `addr` (for tests).
#[cfg(test)]
pub(crate) fn fork_exclusion_slots_of(addr: *mut u8) -> usize {
    EXCLUDED
        .iter()
        .filter(|s| s.addr.load(Ordering::Relaxed) == addr as usize)
        .count()
}

/// A segment file just created by [`create_new`] (`O_EXCL`) and not mapped yet.
#[derive(Debug)]
pub(crate) struct NewFile(File);

/// Creates segment `name` exclusively, as [`create_excl`] does, for [`NewFile::map_and_init`].
pub(crate) fn create_new(name: &str, mode: u32) -> io::Result<NewFile> {
    create_excl(name, mode).map(NewFile)
}

impl NewFile {
    /// The file, for locking and reserving it before it is mapped.
    pub(crate) fn file(&self) -> &File {
        &self.0
    }

    /// Maps the first `len` bytes read-write and lets `init` fill them through an ordinary
    /// `&mut [u8]`, then hands the mapping over as a [`FileMapping`], which only gives out
    /// raw pointers from then on.
    pub(crate) fn map_and_init<R>(
        self,
        len: usize,
        populate: bool,
        init: impl FnOnce(&mut [u8]) -> R,
    ) -> io::Result<(FileMapping, R)> {
        let mut opts = MmapOptions::new();
        opts.len(len);
        if populate {
            opts.populate();
        }
        // SAFETY: memmap2 asks that nobody else modify the file while the `MmapMut` lives.
        // The file was created by `create_new` with O_EXCL, so no other handle of it exists
        // in this process, and `self` is consumed, so this is its only mapping here; the
        // `MmapMut` lives only for `init`, before the caller publishes the file under a
        // name, and another process could reach it only by opening a temporary name that
        // it was never told (outside the trust model: such a process could write any
        // segment).
        let mut map = unsafe { opts.map_mut(&self.0) }?;
        let r = init(&mut map[..]);
        Ok((
            FileMapping {
                map: MmapRaw::from(map),
                file: self.0,
                writable: true,
            },
            r,
        ))
    }
}

/// A shared mapping of a segment file, with the file it maps: the one raw mapping every
/// named object is built on. It hands out raw pointers only.
#[derive(Debug)]
pub(crate) struct FileMapping {
    map: MmapRaw,
    file: File,
    writable: bool,
}

impl FileMapping {
    /// Maps the first `len` bytes of `file`, read-write or read-only (the file must be open
    /// with that access).
    pub(crate) fn new(file: File, len: usize, writable: bool, populate: bool) -> io::Result<Self> {
        let map = map(&file, len, writable, populate)?;
        Ok(FileMapping {
            map,
            file,
            writable,
        })
    }

    /// The mapped file.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Start of the mapping (page-aligned).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Length of the mapping.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the mapping is writable.
    pub(crate) fn is_writable(&self) -> bool {
        self.writable
    }

    /// Faults in the page tables now (see [`prefault`]).
    pub(crate) fn prefault(&self) -> io::Result<()> {
        prefault(&self.map, self.writable)
    }

    /// Maps the file again over the mapping's own range, with the same length and access:
    /// in a child forked after the range was excluded from fork, this brings the mapping
    /// back over the placeholder the fork left.
    pub(crate) fn map_again_in_place(&self) -> io::Result<()> {
        // SAFETY: the range is this mapping's own, owned by `self` (nothing else in this
        // process may unmap or reuse it while `self` lives), and it gets the same file from
        // offset 0, with the same length and protection: where the old mapping was still
        // there, the new one shows the very same shared pages; where a fork left an
        // inaccessible placeholder, it brings back what references into the range expect.
        unsafe { map_again_at(&self.file, self.as_ptr(), self.len(), self.writable) }
    }

    /// Closes the file and leaves the mapping in place for the rest of the process (a
    /// thread's robust list still runs through a lock in it).
    pub(crate) fn keep_mapped(self) {
        drop(self.file);
        std::mem::forget(self.map);
    }
}
