//! Process identity: pid plus start time, so that a reused pid is never taken for the owner.

use std::sync::atomic::{AtomicU64, Ordering};

/// The calling process's pid.
pub(crate) fn pid() -> i32 {
    std::process::id() as i32
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
pub(crate) fn cached_identity() -> (i32, u64) {
    let p = CACHED_PID.load(Ordering::Acquire);
    if p != 0 {
        return (p, CACHED_START.load(Ordering::Relaxed));
    }
    let p = cached_pid();
    (p, CACHED_START.load(Ordering::Relaxed))
}

extern "C" fn register_atfork() {
    // SAFETY: `reset_cached_pid` is an `extern "C"` function that only stores to an
    // atomic, which is async-signal-safe as a fork child handler must be.
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
}

/// The calling process's own start time (cached: it never changes).
pub(crate) fn self_start_time() -> u64 {
    static CACHE: AtomicU64 = AtomicU64::new(u64::MAX);
    static PID: AtomicU64 = AtomicU64::new(0);
    let me = pid() as u64;
    // A forked child inherits the cache: key it by pid.
    if PID.load(Ordering::Relaxed) == me {
        let cached = CACHE.load(Ordering::Relaxed);
        if cached != u64::MAX {
            return cached;
        }
    }
    let start = start_time(pid()).unwrap_or(0);
    CACHE.store(start, Ordering::Relaxed);
    PID.store(me, Ordering::Relaxed);
    start
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
