//! Process identity: pid plus start time, so that a reused pid is never taken for the owner.

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
    // SAFETY: `reset_cached_pid` is an `extern "C"` function that only stores to atomics and
    // closes one fd, which is async-signal-safe as a fork child handler must be.
    unsafe { libc::pthread_atfork(None, None, Some(reset_cached_pid)) };
}

/// Runs `register_atfork` when the program (or a library loading ndshm) is loaded.
#[used]
#[link_section = ".init_array"]
static REGISTER_ATFORK: extern "C" fn() = register_atfork;

static CACHED_START: AtomicU64 = AtomicU64::new(0);

static CACHED_PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn reset_cached_pid() {
    CACHED_PID.store(0, Ordering::Relaxed);
    TOKEN.store(0, Ordering::Relaxed);
    super::lease::forget_in_child();
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
#[allow(dead_code)] // wired into handles by the process-binding commits that follow
pub(crate) fn process_token() -> u64 {
    let t = TOKEN.load(Ordering::Relaxed);
    if t != 0 {
        return t;
    }
    new_token()
}

#[cold]
#[allow(dead_code)]
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

/// Wall-clock time (seconds since the epoch) at which process `pid` started, or `None` when
/// it does not exist. Accurate to about a second (boot time has one-second resolution).
pub(crate) fn start_unix_secs(pid: i32) -> Option<u64> {
    let ticks = start_time(pid)?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&hz| hz > 0)? as u64;
    Some(boot_time_secs()? + ticks / hz)
}

/// System boot time, seconds since the epoch (`btime` in `/proc/stat`).
fn boot_time_secs() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// Blocks until process `pid` (started at `start`) has ended: waits on a pidfd
/// (`pidfd_open`, Linux 5.3+), or polls `/proc` every 200 ms where pidfds are unavailable.
pub(crate) fn wait_for_exit(pid: i32, start: u64) {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    // Checked after opening: the pidfd then refers to the process we mean, or it is gone.
    if fd >= 0 && is_alive(pid, start) {
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
        while is_alive(pid, start) {
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

/// Whether the process `pid` that started at `start` is still running.
///
/// A `start` of 0 means "unknown": then only the pid is checked.
pub(crate) fn is_alive(pid: i32, start: u64) -> bool {
    match start_time(pid) {
        None => false,
        Some(_) if start == 0 => true,
        Some(now) => now == start,
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

    #[test]
    fn self_is_alive_and_reused_pid_is_not() {
        let start = self_start_time();
        assert!(start > 0);
        assert!(is_alive(pid(), start));
        assert!(!is_alive(pid(), start + 1));
        assert!(!is_alive(i32::MAX, 0));
        assert!(!is_alive(-1, 0));
    }
}
