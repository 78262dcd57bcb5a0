//! Process liveness that the kernel vouches for: a *lease* per process, held as an
//! open-file-description lock (`F_OFD_SETLK`) on one byte of a per-user lease file in
//! `/dev/shm`.
//!
//! # Why not `/proc/<pid>`
//! "No `/proc/<pid>` visible to me" does not mean dead: processes in other pid namespaces
//! (containers sharing `/dev/shm`), `hidepid=2`, or a missing `/proc` all hide live
//! processes, and a pid can be reused. An OFD lock is held by an open file description,
//! which the kernel releases when the last process holding it exits — however it ends
//! (`SIGKILL` included) and whatever its pid namespace — and any process that can open the
//! file can test for it with `F_OFD_GETLK`. Nothing here reads `/proc`.
//!
//! # The lease file
//! `/dev/shm/.ndshm-lease-v2-<uid>`: [`SLOTS`] little-endian `u32` words, owned by `<uid>` with
//! mode `0o644` (only that user writes it; everyone may read it and test its locks). Word 0
//! is the file's *tag*, a random non-zero byte drawn when the file was made; words 1.. are
//! the generation counters of the lease slots. A process claims a lease by taking a write
//! lock on byte `s` of the file (any free slot `s >= 1`) and then incrementing `gen[s]`; it
//! holds the lock until it exits. Its lease is the word
//! `uid << 32 | tag << 24 | s << 12 | gen`, never 0.
//!
//! The tag makes a lease file that was removed and made again (say by `rm /dev/shm/*`)
//! harmless: its generations start over and its locks are new, so a lease of the old file
//! checked against the new one could read dead while its holder runs; the tag tells the
//! two files apart and such a lease reads [`Liveness::Unknown`] instead (wait, never take
//! over), except in the 1 in 255 case of equal tags.
//!
//! # Deciding
//! For a recorded lease `(uid, s, g)`:
//! - the recorded process is **alive** while byte `s` is locked and `gen[s] == g`;
//! - it is **dead** when byte `s` is unlocked (the kernel dropped its lock: it exited) or
//!   `gen[s] != g` (the slot was claimed again, which needs the lock free);
//! - it is **unknown** when the lease file cannot be read or tested, or no lease was
//!   recorded (0): callers then wait rather than take anything over.
//!
//! A new claimer that has locked slot `s` but not yet bumped `gen[s]` makes the old lease
//! look alive for a moment: the error is always towards "alive", never towards "dead".
//!
//! # Forks
//! A forked child shares its parent's open file description, and with it the lock: left
//! open, the child's copy would keep the parent's lease alive after the parent died. The
//! `pthread_atfork` child handler (registered in `proc`) calls [`forget_in_child`], which
//! closes the child's copy (`close` is async-signal-safe) and resets the state, so the
//! child claims a lease of its own when it first needs one.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use super::shm::SHM_DIR;

/// Lease slots per user: how many processes of one user can hold a lease at once.
pub(crate) const SLOTS: u32 = 4096;
const SLOT_BITS: u32 = 12;
const GEN_BITS: u32 = 12;
const TAG_SHIFT: u32 = SLOT_BITS + GEN_BITS;
const GEN_MASK: u32 = (1 << GEN_BITS) - 1;
const FILE_LEN: u64 = SLOTS as u64 * 4;
/// Prefix of the lease files' names (`.ndshm-lease-<uid>`), reserved by `validate_name`.
pub(crate) const LEASE_PREFIX: &str = ".ndshm-lease-";

const _: () = assert!(1 << SLOT_BITS == SLOTS);

/// What the kernel says of a recorded process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// It holds its lease: it is running (in whatever pid namespace).
    Alive,
    /// Its lease was released: it has exited.
    Dead,
    /// Cannot be decided (no lease recorded, lease file unreadable): wait, never take over.
    Unknown,
}

/// This process's lease: 0 none yet, [`CLAIMING`] while a thread claims it, else the lease.
static MINE: AtomicU64 = AtomicU64::new(0);
/// The open lease file holding this process's lock, or -1.
static FD: AtomicI32 = AtomicI32::new(-1);
const CLAIMING: u64 = u64::MAX;

/// The lease file of user `uid`.
pub(crate) fn lease_path(uid: u32) -> std::path::PathBuf {
    std::path::Path::new(SHM_DIR).join(format!("{LEASE_PREFIX}v2-{uid}"))
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

fn encode(uid: u32, tag: u8, slot: u32, gen: u32) -> u64 {
    (uid as u64) << 32 | (tag as u64) << TAG_SHIFT | (slot as u64) << GEN_BITS | gen as u64
}

/// (uid, file tag, slot, generation) of a lease.
fn decode(lease: u64) -> (u32, u8, u32, u32) {
    (
        (lease >> 32) as u32,
        (lease >> TAG_SHIFT) as u8,
        ((lease as u32) >> GEN_BITS) & (SLOTS - 1),
        lease as u32 & GEN_MASK,
    )
}

/// The tag of an open lease file (word 0), 0 when it has none.
fn read_tag(file: &File) -> io::Result<u8> {
    let w = read_gen(file, 0)?;
    Ok(if w > 0 && w <= 0xff { w as u8 } else { 0 })
}

/// `F_OFD_*` lock request on byte `slot`.
fn flock(kind: i32, slot: u32) -> libc::flock {
    // SAFETY: `flock` is a plain C struct for which all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = slot as libc::off_t;
    fl.l_len = 1;
    fl.l_pid = 0; // required by F_OFD_* commands
    fl
}

fn fcntl_lock(file: &File, cmd: i32, fl: &mut libc::flock) -> io::Result<()> {
    loop {
        // SAFETY: `fd` is open for the duration of the call and `fl` is a valid flock.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), cmd, fl as *mut libc::flock) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Opens (creating if needed) this user's lease file read-write.
fn open_own() -> io::Result<File> {
    let uid = euid();
    let path = lease_path(uid);
    let open = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(&path)
    };
    let file = match open() {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Build it under a temporary name, then publish it with link(2), which fails
            // if another process published first: nobody sees a half-made file.
            let tmp = std::path::Path::new(SHM_DIR).join(format!(
                ".ndshm-tmp-lease-{}-{:x}",
                std::process::id(),
                super::proc::random_u64()
            ));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o644)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&tmp)?;
            let tag = (super::proc::random_u64() % 255 + 1) as u32;
            let made = f
                .set_permissions(std::fs::Permissions::from_mode(0o644))
                .and_then(|()| super::shm::reserve(&f, FILE_LEN))
                .and_then(|()| f.write_all_at(&tag.to_le_bytes(), 0))
                .and_then(|()| std::fs::hard_link(&tmp, &path));
            let _ = std::fs::remove_file(&tmp);
            match made {
                Ok(()) => f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => open()?,
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    check_file(&file, uid)?;
    Ok(file)
}

/// A lease file must be a regular file of `uid`, [`FILE_LEN`] bytes long: anything else
/// (planted by another user, truncated) is not trusted.
fn check_file(file: &File, uid: u32) -> io::Result<()> {
    let meta = file.metadata()?;
    if !meta.is_file() || meta.uid() != uid || meta.len() != FILE_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is not an ndshm lease file of uid {uid} ({} bytes, uid {})",
                lease_path(uid).display(),
                meta.len(),
                meta.uid()
            ),
        ));
    }
    Ok(())
}

fn read_gen(file: &File, slot: u32) -> io::Result<u32> {
    let mut b = [0u8; 4];
    file.read_exact_at(&mut b, slot as u64 * 4)?;
    Ok(u32::from_le_bytes(b))
}

/// Claims a lease: locks a free byte of the lease file and bumps its generation.
fn claim() -> io::Result<(File, u64)> {
    let file = open_own()?;
    let tag = read_tag(&file)?;
    if tag == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the lease file has no tag: not made by this ndshm version",
        ));
    }
    let start = (super::proc::random_u64() % SLOTS as u64) as u32;
    for i in 0..SLOTS {
        let slot = (start + i) % SLOTS;
        if slot == 0 {
            continue; // word 0 is the tag
        }
        let mut fl = flock(libc::F_WRLCK, slot);
        match fcntl_lock(&file, libc::F_OFD_SETLK, &mut fl) {
            Ok(()) => {}
            Err(e)
                if e.raw_os_error() == Some(libc::EAGAIN)
                    || e.raw_os_error() == Some(libc::EACCES) =>
            {
                continue
            }
            Err(e) => return Err(e),
        }
        // We hold the slot: nobody else writes its generation now.
        let mut gen = read_gen(&file, slot)?.wrapping_add(1) & GEN_MASK;
        if gen == 0 {
            gen = 1;
        }
        file.write_all_at(&gen.to_le_bytes(), slot as u64 * 4)?;
        return Ok((file, encode(euid(), tag, slot, gen)));
    }
    Err(io::Error::other(format!(
        "all {SLOTS} lease slots of uid {} are held by running processes",
        euid()
    )))
}

/// This process's lease, claimed on first use; 0 when none could be claimed (then others
/// treat this process's records as [`Liveness::Unknown`] and wait instead of taking over).
pub(crate) fn mine() -> u64 {
    loop {
        match MINE.load(Ordering::Acquire) {
            0 => {
                if MINE
                    .compare_exchange(0, CLAIMING, Ordering::Acquire, Ordering::Acquire)
                    .is_err()
                {
                    continue;
                }
                let lease = match claim() {
                    Ok((file, lease)) => {
                        // The lock lives as long as this fd: keep it open until exit.
                        FD.store(std::os::fd::IntoRawFd::into_raw_fd(file), Ordering::Release);
                        lease
                    }
                    Err(_) => NONE_CLAIMED,
                };
                MINE.store(lease, Ordering::Release);
            }
            CLAIMING => std::thread::yield_now(),
            NONE_CLAIMED => return 0,
            lease => return lease,
        }
    }
}

/// Marker: a claim was tried and failed (no retry storm on every call).
const NONE_CLAIMED: u64 = u64::MAX - 1;

/// What the kernel says of the process that recorded `lease`.
pub(crate) fn check(lease: u64) -> Liveness {
    if lease == 0 || lease == CLAIMING || lease == NONE_CLAIMED {
        return Liveness::Unknown;
    }
    if lease == MINE.load(Ordering::Acquire) {
        return Liveness::Alive;
    }
    let (uid, tag, slot, gen) = decode(lease);
    if slot == 0 || gen == 0 || tag == 0 {
        return Liveness::Unknown;
    }
    let path = lease_path(uid);
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
    else {
        return Liveness::Unknown;
    };
    if check_file(&file, uid).is_err() || read_tag(&file).ok() != Some(tag) {
        // Not the lease file the holder claimed in (removed and made again): unknown.
        return Liveness::Unknown;
    }
    let Ok(now) = read_gen(&file, slot) else {
        return Liveness::Unknown;
    };
    if now != gen {
        return Liveness::Dead;
    }
    let mut fl = flock(libc::F_WRLCK, slot);
    match fcntl_lock(&file, libc::F_OFD_GETLK, &mut fl) {
        Ok(()) if fl.l_type == libc::F_UNLCK as libc::c_short => {
            // Unlocked now; re-read the generation: a claimer between our two reads made
            // the old lease dead anyway, so either way the recorded process is gone.
            Liveness::Dead
        }
        Ok(()) => Liveness::Alive,
        Err(_) => Liveness::Unknown,
    }
}

/// A non-zero word that names no lease: what a holder records when it could not claim a
/// lease (then [`check`] says [`Liveness::Unknown`] and nobody takes its slot over).
pub(crate) const NO_LEASE: u64 = NONE_CLAIMED;

/// This process's lease as a holder word: [`mine`], or [`NO_LEASE`] when none could be
/// claimed. Never 0, so it can mark a slot as taken.
/// Inlined: the queues call it on every put and get (one load once the lease is claimed).
#[inline]
pub(crate) fn holder() -> u64 {
    match MINE.load(Ordering::Acquire) {
        0 | CLAIMING => holder_slow(),
        // NONE_CLAIMED is NO_LEASE: either way the word to record.
        lease => lease,
    }
}

#[cold]
#[inline(never)]
fn holder_slow() -> u64 {
    match mine() {
        0 => NO_LEASE,
        lease => lease,
    }
}

/// This process's lease if it has already claimed one, without claiming; never allocates
/// or makes a system call (usable in a signal handler).
pub(crate) fn mine_if_claimed() -> Option<u64> {
    match MINE.load(Ordering::Acquire) {
        0 | CLAIMING | NONE_CLAIMED => None,
        lease => Some(lease),
    }
}

/// Takes a shared OFD lock on the whole of `file` (open for reading), held until the open
/// file description is closed: the kernel releases it when its holder exits, however it
/// ends. A file's creator holds one while it builds the file, so that others can tell an
/// abandoned file from one in progress with [`file_is_locked`], whatever the creator's pid
/// namespace.
pub(crate) fn lock_file(file: &File) -> io::Result<()> {
    let mut fl = flock(libc::F_RDLCK, 0);
    fl.l_len = 0; // to the end of the file, whatever its length
    fcntl_lock(file, libc::F_OFD_SETLK, &mut fl)
}

/// Whether some open file description holds an OFD or POSIX lock on `file` (see
/// [`lock_file`]); locks held through `file` itself do not count.
pub(crate) fn file_is_locked(file: &File) -> io::Result<bool> {
    let mut fl = flock(libc::F_WRLCK, 0);
    fl.l_len = 0;
    fcntl_lock(file, libc::F_OFD_GETLK, &mut fl)?;
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

/// Child side of `fork`: drops the inherited copy of the parent's lease (closing the fd
/// does not release the parent's lock, which lives while the parent's copy is open).
///
/// Async-signal-safe: atomics and `close` only.
pub(crate) fn forget_in_child() {
    let fd = FD.swap(-1, Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: `fd` is the lease fd this process inherited; nothing else uses it (its
        // only user is this module, which just forgot it).
        unsafe { libc::close(fd) };
    }
    MINE.store(0, Ordering::Relaxed);
}

/// A lease that is certainly dead: this process's slot with an older generation.
#[cfg(test)]
pub(crate) fn dead_lease_for_tests() -> u64 {
    let (uid, tag, slot, gen) = decode(mine());
    encode(uid, tag, slot, if gen == 1 { GEN_MASK } else { gen - 1 })
}

/// The open lease file, for tests that need to see the lock from another fd.
#[cfg(test)]
fn held_fd() -> Option<File> {
    let fd = FD.load(Ordering::Acquire);
    // SAFETY: dup gives a new fd for the same description, owned by the returned File.
    (fd >= 0).then(|| unsafe { std::os::fd::FromRawFd::from_raw_fd(libc::dup(fd)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_lease_is_alive_and_stable() {
        let me = mine();
        assert_ne!(me, 0, "a lease must be claimable in /dev/shm");
        assert_eq!(mine(), me);
        assert_eq!(check(me), Liveness::Alive);
        assert!(held_fd().is_some());
        let (uid, tag, slot, gen) = decode(me);
        assert_eq!(uid, euid());
        assert!(slot > 0 && slot < SLOTS && gen > 0 && tag > 0);
    }

    #[test]
    fn no_lease_is_unknown_and_a_stale_generation_is_dead() {
        assert_eq!(check(0), Liveness::Unknown);
        let me = mine();
        let (uid, tag, slot, gen) = decode(me);
        let older = encode(uid, tag, slot, if gen == 1 { GEN_MASK } else { gen - 1 });
        assert_eq!(check(older), Liveness::Dead);
        // A slot nobody holds, with its current generation: dead (unlocked).
        let free = slot % (SLOTS - 1) + 1;
        let file = open_own().unwrap();
        let mut fl = flock(libc::F_WRLCK, free);
        fcntl_lock(&file, libc::F_OFD_GETLK, &mut fl).unwrap();
        if fl.l_type == libc::F_UNLCK as libc::c_short {
            let g = read_gen(&file, free).unwrap().max(1);
            if read_gen(&file, free).unwrap() == g {
                assert_eq!(check(encode(uid, tag, free, g)), Liveness::Dead);
            }
        }
    }

    #[test]
    fn a_lease_of_a_replaced_lease_file_is_unknown_not_dead() {
        let me = mine();
        let (uid, tag, slot, gen) = decode(me);
        // Same slot and generation, another file's tag: that holder claimed in a lease
        // file that has since been removed and made again.
        let other = if tag == 255 { 1 } else { tag + 1 };
        assert_eq!(check(encode(uid, other, slot, gen)), Liveness::Unknown);
    }

    #[test]
    fn a_child_gets_its_own_lease_and_its_death_is_seen() {
        let parent = mine();
        let shared = crate::sys::fork::AnonShared::new(8).unwrap();
        // SAFETY: 8 zeroed, page-aligned bytes shared with the child, accessed atomically.
        let word = unsafe { &*(shared.as_ptr() as *const AtomicU64) };
        let report = crate::parallel::process::Report::new().unwrap();
        let pid = crate::parallel::process::fork_with(|| {
            crate::parallel::process::run_child(&report, || {
                let child = mine();
                assert_ne!(child, 0);
                assert_ne!(child, parent, "a forked child must claim its own lease");
                assert_eq!(check(parent), Liveness::Alive);
                assert_eq!(check(child), Liveness::Alive);
                word.store(child, Ordering::Release);
            })
        })
        .unwrap();
        let exit = crate::sys::fork::wait_child(pid, false).unwrap();
        let (_, msg) = report.read();
        assert_eq!(exit, Some(crate::sys::fork::Exit::Code(0)), "child: {msg}");
        let child = word.load(Ordering::Acquire);
        assert_ne!(child, 0);
        assert_eq!(
            check(child),
            Liveness::Dead,
            "the kernel dropped the child's lock"
        );
        assert_eq!(
            check(parent),
            Liveness::Alive,
            "the parent's lease outlives the child"
        );
    }
}
