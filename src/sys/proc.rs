//! Process identity: pid, start time (recorded for display), pid namespace, and the
//! per-process token. Whether a process is alive is never decided here (from `/proc`, which
//! pid namespaces, `hidepid` or a missing mount hide): see `lease`.

use std::sync::atomic::{AtomicU64, Ordering};

/// The calling process's pid.
pub(crate) fn pid() -> i32 {
    std::process::id() as i32
}

/// The calling process's parent pid (1 or a subreaper once the parent has died).
pub(crate) fn parent_pid() -> i32 {
    nix::unistd::getppid().as_raw()
}

/// Start time of process `pid` (field 22 of `/proc/<pid>/stat`, clock ticks since boot),
/// or `None` when no such process exists or it is a zombie (it has exited).
pub(crate) fn start_time(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or ')': split after
    // the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `rest` starts at field 3 (state); field 22 is 19 further on.
    fields.nth(18)?.parse().ok()
}

/// The calling process's pid, cached: one relaxed load instead of a `getpid` system call.
///
/// The cache is reset in the child of every `fork` by a `pthread_atfork` child handler,
/// registered when the program is loaded (from `.init_array`, before `main` and before any
/// thread exists, so no `fork` can ever catch the registration half-done).
pub(crate) fn cached_pid() -> i32 {
    let p = CACHED_PID.load(Ordering::Relaxed);
    if p != 0 {
        return p;
    }
    let p = pid();
    CACHED_START.store(start_time(p).unwrap_or(0), Ordering::Relaxed);
    CACHED_PID.store(p, Ordering::Release);
    p
}

/// The calling process's pid and start time, both cached as in [`cached_pid`].
#[allow(dead_code)] // its user, the old lock word, is gone
pub(crate) fn cached_identity() -> (i32, u64) {
    let p = CACHED_PID.load(Ordering::Acquire);
    if p != 0 {
        return (p, CACHED_START.load(Ordering::Relaxed));
    }
    let p = cached_pid();
    (p, CACHED_START.load(Ordering::Relaxed))
}

extern "C" fn register_atfork() {
    // SAFETY: the three handlers are `extern "C"` functions that only use atomics and
    // async-signal-safe system calls (`sched_yield`, `close`, `mmap`), as fork handlers
    // must; the prepare handler takes the fork-safe lock, and the parent and child
    // handlers release it.
    unsafe {
        libc::pthread_atfork(
            Some(before_fork),
            Some(after_fork_in_parent),
            Some(reset_cached_pid),
        )
    };
}

/// Runs `register_atfork` when the program (or a library loading ndshm) is loaded.
#[used]
#[link_section = ".init_array"]
static REGISTER_ATFORK: extern "C" fn() = register_atfork;

static CACHED_START: AtomicU64 = AtomicU64::new(0);

static CACHED_PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// The fork child handler: runs in the child of every `fork` (ndshm's or anyone's), before
/// `fork` returns there, while the child has a single thread. Async-signal-safe: atomics
/// and raw system calls only.
extern "C" fn reset_cached_pid() {
    CACHED_PID.store(0, Ordering::Relaxed);
    TOKEN.store(0, Ordering::Relaxed);
    // Array mappings are MADV_DONTFORK: absent from the child. Put an inaccessible
    // placeholder where each was, so that no later mapping of the child lands there and
    // becomes reachable through a stale view inherited from the parent.
    super::shm::place_fork_placeholders();
    super::lease::forget_in_child();
    // Descriptors only their creator may hold (a pool's request socket: its fork server
    // must see it close when the caller dies, not when the last forked child does).
    super::pipe::close_private_in_child();
    FORK_SAFE_LOCK.store(false, Ordering::Release);
}

/// The fork prepare handler: takes the fork-safe lock, so that no other thread holds it
/// while the address space is copied (the child would inherit it held forever).
extern "C" fn before_fork() {
    acquire_fork_safe_lock();
}

/// The fork parent handler: releases what `before_fork` took.
extern "C" fn after_fork_in_parent() {
    FORKS.fetch_add(1, Ordering::Release);
    let _ = THREAD_FORKS.try_with(|c| c.set(c.get() + 1));
    FORK_SAFE_LOCK.store(false, Ordering::Release);
}

/// Forks this process made (from any thread, by ndshm or anyone), counted by the fork
/// parent handler: a pipe end compares it to tell whether a child may hold a copy.
static FORKS: AtomicU64 = AtomicU64::new(0);
static NEXT_THREAD_SERIAL: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// Forks made by this thread (const-initialised, no destructor: the fork handler may
    /// touch it).
    static THREAD_FORKS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    static THREAD_SERIAL: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Where the calling thread stands in forking: `(thread serial, forks made by this
/// thread, forks made by the process)`. Compared with a later mark, it tells whether a
/// child may have been forked in between: by this thread when both marks come from the
/// same thread (so forks of unrelated threads do not count), by any thread otherwise.
pub(crate) fn fork_mark() -> (u64, u64, u64) {
    let serial = THREAD_SERIAL
        .try_with(|c| {
            if c.get() == 0 {
                c.set(NEXT_THREAD_SERIAL.fetch_add(1, Ordering::Relaxed));
            }
            c.get()
        })
        .unwrap_or(0);
    let mine = THREAD_FORKS.try_with(|c| c.get()).unwrap_or(0);
    (serial, mine, FORKS.load(Ordering::Acquire))
}

/// Whether a fork may have happened between mark `then` and now (see [`fork_mark`]).
pub(crate) fn forked_since(then: (u64, u64, u64)) -> bool {
    let now = fork_mark();
    if now.0 == then.0 && now.0 != 0 {
        now.1 != then.1
    } else {
        now.2 != then.2
    }
}

/// The one spin lock behind every [`ForkSafeMutex`]; see there.
static FORK_SAFE_LOCK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn acquire_fork_safe_lock() {
    let mut spins = 0u32;
    while FORK_SAFE_LOCK
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        spins += 1;
        if spins < 64 {
            std::hint::spin_loop();
        } else {
            // SAFETY: sched_yield has no preconditions and is async-signal-safe.
            unsafe { libc::sched_yield() };
        }
    }
}

/// A mutex that a `fork` can never leave locked in the child, whoever forks and from which
/// thread: a `pthread_atfork` prepare handler takes its lock before every fork and the
/// parent and child handlers release it, so the address space is always copied with the
/// lock free.
///
/// All instances share one spin lock (there is one: the segment registry); critical
/// sections must be short, must not fork and must not take the lock again.
pub(crate) struct ForkSafeMutex<T> {
    value: std::cell::UnsafeCell<T>,
}

// SAFETY: the value is only reached through `with`, which holds the process-wide spin
// lock for the whole access, so at most one thread touches it at a time; `T: Send` because
// the value is used from whichever thread calls `with`.
unsafe impl<T: Send> Sync for ForkSafeMutex<T> {}

impl<T> ForkSafeMutex<T> {
    pub(crate) const fn new(value: T) -> Self {
        ForkSafeMutex {
            value: std::cell::UnsafeCell::new(value),
        }
    }

    /// Runs `f` on the value with the lock held. `f` must not fork or call `with` again.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        struct Release;
        impl Drop for Release {
            fn drop(&mut self) {
                FORK_SAFE_LOCK.store(false, Ordering::Release);
            }
        }
        acquire_fork_safe_lock();
        let _release = Release;
        // SAFETY: we hold the spin lock until `_release` drops, after `f` returns, so this
        // is the only reference to the value meanwhile (see the `Sync` impl).
        f(unsafe { &mut *self.value.get() })
    }
}

impl<T> std::fmt::Debug for ForkSafeMutex<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ForkSafeMutex")
    }
}

/// This process's token: 0 until first asked for, then a random non-zero value; reset to 0
/// in the child of every `fork` (by the same `pthread_atfork` child handler as the pid
/// cache), so a child draws a new one.
static TOKEN: AtomicU64 = AtomicU64::new(0);

/// A token that names the calling process: handles record it when they are made and
/// compare it before use, so a copy inherited through `fork` is recognised as foreign.
///
/// Unlike a pid, it never comes back: a token is 64 random bits drawn after each fork (a
/// dead creator's pid can return as a grandchild's after two forks; its token cannot).
/// One relaxed load on the fast path.
#[inline]
pub(crate) fn process_token() -> u64 {
    let t = TOKEN.load(Ordering::Relaxed);
    if t != 0 {
        return t;
    }
    new_token()
}

#[cold]
fn new_token() -> u64 {
    let fresh = random_u64() | 1;
    match TOKEN.compare_exchange(0, fresh, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => fresh,
        Err(other) => other,
    }
}

/// The inode of the calling process's pid namespace (`/proc/self/ns/pid`), or 0 when
/// `/proc` is not readable. Two processes with different values see different pids.
pub(crate) fn pid_namespace() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino())
}

/// The calling process's own start time (cached: it never changes).
pub(crate) fn self_start_time() -> u64 {
    let me = pid() as u64;
    // A forked child inherits the cache: key it by pid.
    if SELF_START.pid.load(Ordering::Acquire) == me {
        let cached = SELF_START.start.load(Ordering::Relaxed);
        if cached != u64::MAX {
            return cached;
        }
    }
    let start = start_time(pid()).unwrap_or(0);
    SELF_START.start.store(start, Ordering::Relaxed);
    SELF_START.pid.store(me, Ordering::Release);
    start
}

/// Cache of this process's start time, keyed by the pid it was computed for.
struct StartCache {
    pid: AtomicU64,
    start: AtomicU64,
}

static SELF_START: StartCache = StartCache {
    pid: AtomicU64::new(0),
    start: AtomicU64::new(u64::MAX),
};

/// Blocks until the calling process's parent `parent` (its pid, as seen before the fork)
/// has ended: waits on a pidfd (`pidfd_open`, Linux 5.3+), or polls `getppid` every 200 ms
/// where pidfds are unavailable. Reads no `/proc`: while `getppid()` is `parent`, the
/// parent has not exited (a child is re-parented when its parent exits).
pub(crate) fn wait_for_parent_exit(parent: i32) {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, parent, 0) } as i32;
    // Checked after opening: the pidfd then refers to our parent, or it is gone already.
    if fd >= 0 && parent_pid() == parent {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // SAFETY: `pfd` is one valid pollfd; -1 waits without a timeout.
            let r = unsafe { libc::poll(&mut pfd, 1, -1) };
            if r > 0
                || (r < 0
                    && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted)
            {
                break;
            }
        }
    } else {
        while parent_pid() == parent {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    if fd >= 0 {
        // SAFETY: `fd` was opened above and is closed once.
        unsafe { libc::close(fd) };
    }
}

/// Unmaps every mapping of a `/dev/shm` file in the calling process (as listed in
/// `/proc/self/maps`), so that a long-lived forked helper does not keep the memory of
/// segments that its parent removes.
///
/// # Safety
/// Nothing in the calling process may use those mappings afterwards (a forked helper that
/// never touches the handles it inherited).
pub(crate) unsafe fn unmap_shm_mappings() {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let range = fields.next().unwrap_or("");
        let path = fields.nth(4).unwrap_or("");
        if !path.starts_with("/dev/shm/") {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
            // SAFETY: [a, b) is a mapping of this process (from /proc/self/maps) that the
            // caller promises nothing uses any more.
            unsafe { libc::munmap(a as *mut libc::c_void, b - a) };
        }
    }
}

/// [`unmap_shm_mappings`] for the pool's fork server, first thing after its fork: the
/// server runs only its own loop (forking, reaping and reporting workers) and never touches
/// a segment handle, view or guard it inherited from the caller, so nothing in it uses
/// those mappings any more; the workers it forks map what they need themselves.
pub(crate) fn unmap_shm_mappings_in_fork_server() {
    // SAFETY: see above: the only caller is the fork server, which uses none of the
    // mappings it inherited (the caller's handles are never reached from its code).
    unsafe { unmap_shm_mappings() }
}

/// Asks the kernel to send `SIGKILL` to the calling process when its parent dies
/// (`PR_SET_PDEATHSIG`), then checks that the parent is still `parent`: if it already died
/// (the child was re-parented before the call), the calling process exits at once.
///
/// The kernel fires the signal when the *thread* that forked the caller exits, not only
/// when the whole parent process does: call it only in children forked by a thread that
/// outlives them (the main thread, a pool's owner).
pub(crate) fn die_with_parent(parent: i32) -> std::io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and ignores the other arguments.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if nix::unistd::getppid().as_raw() != parent {
        // The parent is gone already: die as the death signal would have made us.
        let _ = crate::sys::fork::send_signal(pid(), libc::SIGKILL);
        crate::sys::fork::exit_now(128 + libc::SIGKILL);
    }
    Ok(())
}

/// The calling process's start time if [`self_start_time`] has already computed it in this
/// process; never reads `/proc` or allocates (usable in a signal handler).
pub(crate) fn self_start_time_cached() -> Option<u64> {
    // SAFETY: getpid is async-signal-safe and has no preconditions.
    let me = unsafe { libc::getpid() } as u64;
    if SELF_START.pid.load(Ordering::Acquire) == me {
        let cached = SELF_START.start.load(Ordering::Relaxed);
        (cached != u64::MAX && cached != 0).then_some(cached)
    } else {
        None
    }
}

/// 64 random bits from the kernel, mixed with time and pid if `getrandom` is unavailable.
pub(crate) fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: `buf` is a valid, writable 8-byte buffer for the duration of the call.
    let got = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), libc::GRND_NONBLOCK) };
    if got == 8 {
        return u64::from_ne_bytes(buf);
    }
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    splitmix64(nanos ^ ((pid() as u64) << 32) ^ COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Nanoseconds since the Unix epoch.
pub(crate) fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Puts the calling process in a new session (`setsid`), so that Ctrl-C in the terminal
/// and a kill of its former process group no longer reach it.
///
/// # Errors
/// `EPERM` when the caller leads a process group already.
pub(crate) fn new_session() -> std::io::Result<()> {
    nix::unistd::setsid()
        .map(drop)
        .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
}

/// [`unmap_shm_mappings`] for a forked helper that lives on plain data only, as a safe call.
///
/// # Contract (crate-internal)
/// Call it only first thing in a process forked by ndshm whose code from then on uses
/// nothing it inherited but plain values (pids, tokens) and files it opens itself: the
/// crash watchdog, which only waits and then runs `gc` by name.
pub(crate) fn unmap_inherited_shm_mappings() {
    // SAFETY: by this function's crate-internal contract, nothing in the calling process
    // uses a /dev/shm mapping after this (the watchdog holds no handle and reads /dev/shm
    // through files it opens itself).
    unsafe { unmap_shm_mappings() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_pid_is_reset_in_forked_children() {
        assert_eq!(cached_pid(), pid());
        let child = crate::Process::spawn(|| {
            assert_eq!(cached_pid(), pid());
            assert_eq!(cached_identity(), (pid(), start_time(pid()).unwrap()));
        })
        .unwrap();
        child.join().unwrap();
    }
}
