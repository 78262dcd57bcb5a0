//! POSIX shared memory: `shm_open`, space reservation, atomic publication, mapping.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;

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
