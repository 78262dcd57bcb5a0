//! Signal dispositions (`sigaction`) and the async-signal-safe calls a fatal-signal handler
//! may make: `kill`, `waitpid`, `nanosleep`, `open`/`pread`/`fstat`/`close`, `unlink`,
//! `raise`, `pthread_sigmask`. Nothing here allocates or takes a lock.

use std::io;

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal};

/// A saved disposition, to be put back later.
pub(crate) struct SavedAction(SigAction);

impl std::fmt::Debug for SavedAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SavedAction")
    }
}

fn signal(sig: i32) -> io::Result<Signal> {
    Signal::try_from(sig).map_err(|e| io::Error::from_raw_os_error(e as i32))
}

/// Whether the current disposition of `sig` is "ignore" (`SIG_IGN`); reads it without
/// changing it.
pub(crate) fn is_ignored(sig: i32) -> io::Result<bool> {
    signal(sig)?;
    // SAFETY: an all-zero sigaction is a valid out-value; with a null new action,
    // sigaction only reads the current disposition into `old`.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `old` is a valid, writable sigaction.
    if unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(old.sa_sigaction == libc::SIG_IGN)
}

/// Installs `handler` for `sig`, with every signal of `block` blocked while it runs;
/// returns the previous disposition.
///
/// # Safety
/// `handler` must be async-signal-safe: it may run at any point of any thread.
pub(crate) unsafe fn install(
    sig: i32,
    handler: extern "C" fn(libc::c_int),
    block: &[i32],
) -> io::Result<SavedAction> {
    let mut mask = SigSet::empty();
    for &b in block {
        mask.add(signal(b)?);
    }
    let action = SigAction::new(SigHandler::Handler(handler), SaFlags::SA_RESTART, mask);
    // SAFETY: forwarded to the caller: `handler` is async-signal-safe.
    let old = unsafe { nix::sys::signal::sigaction(signal(sig)?, &action) }
        .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
    Ok(SavedAction(old))
}

/// Puts back a disposition saved by [`install`].
pub(crate) fn restore(sig: i32, saved: &SavedAction) -> io::Result<()> {
    // SAFETY: `saved` is a disposition this process had installed before; putting it back
    // is what its installer expects.
    unsafe { nix::sys::signal::sigaction(signal(sig)?, &saved.0) }
        .map(drop)
        .map_err(|e| io::Error::from_raw_os_error(e as i32))
}

// ---- async-signal-safe helpers (no allocation, no locks) ----

/// The calling thread's `errno` (reading it allocates nothing).
fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// `kill(pid, sig)`, ignoring errors.
pub(crate) fn kill(pid: i32, sig: i32) {
    if pid > 0 {
        // SAFETY: kill is async-signal-safe; a stale pid is at worst ESRCH.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Reaps child `pid` if it has ended (`block`: wait until it has). Returns `true` when it
/// is gone (reaped now, or not our child any more).
pub(crate) fn reap(pid: i32, block: bool) -> bool {
    let flags = if block { 0 } else { libc::WNOHANG };
    loop {
        let mut status = 0;
        // SAFETY: waitpid is async-signal-safe; `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, flags) };
        if r == pid {
            return true;
        }
        if r == 0 {
            return false;
        }
        if errno() != libc::EINTR {
            // ECHILD: reaped by someone else (another thread's join) or not ours.
            return true;
        }
    }
}

/// Sleeps `ms` milliseconds (`nanosleep`).
pub(crate) fn sleep_ms(ms: u64) {
    let ts = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    // SAFETY: nanosleep is async-signal-safe; `ts` is valid, the remainder may be null.
    unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
}

/// Longest `/dev/shm/<name>` path, with its NUL.
const PATH_CAP: usize = 9 + 256 + 1;

/// Builds the NUL-terminated path `/dev/shm/<name>` on the stack; `None` if `name` is too
/// long or holds a NUL or `/`.
fn shm_path(name: &[u8]) -> Option<[u8; PATH_CAP]> {
    const DIR: &[u8] = b"/dev/shm/";
    if name.is_empty() || DIR.len() + name.len() + 1 > PATH_CAP {
        return None;
    }
    if name.iter().any(|&b| b == 0 || b == b'/') {
        return None;
    }
    let mut buf = [0u8; PATH_CAP];
    buf[..DIR.len()].copy_from_slice(DIR);
    buf[DIR.len()..DIR.len() + name.len()].copy_from_slice(name);
    Some(buf)
}

/// Reads the last `out.len()` bytes of segment `name` (no link following, no blocking).
/// Returns `false` when the segment cannot be read or is shorter.
pub(crate) fn read_tail(name: &[u8], out: &mut [u8]) -> bool {
    let Some(path) = shm_path(name) else {
        return false;
    };
    // SAFETY: `path` is NUL-terminated; open is async-signal-safe.
    let fd = unsafe {
        libc::open(
            path.as_ptr().cast(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return false;
    }
    // SAFETY: an all-zero `stat` is a valid value to be overwritten by fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open; `st` is a valid out-pointer; fstat is async-signal-safe.
    let ok = unsafe { libc::fstat(fd, &mut st) } == 0
        && (st.st_mode & libc::S_IFMT) == libc::S_IFREG
        && st.st_size as u64 >= out.len() as u64;
    let mut done = ok;
    if ok {
        let off = st.st_size - out.len() as libc::off_t;
        let mut got = 0usize;
        while got < out.len() {
            // SAFETY: `out[got..]` is valid writable memory of the given length; pread is
            // async-signal-safe.
            let r = unsafe {
                libc::pread(
                    fd,
                    out[got..].as_mut_ptr().cast(),
                    out.len() - got,
                    off + got as libc::off_t,
                )
            };
            if r > 0 {
                got += r as usize;
            } else if r < 0 && errno() == libc::EINTR {
                continue;
            } else {
                done = false;
                break;
            }
        }
    }
    // SAFETY: `fd` was opened above and is closed once.
    unsafe { libc::close(fd) };
    done
}

/// Removes segment `name` (`unlink("/dev/shm/<name>")`, async-signal-safe, unlike
/// `shm_unlink` which POSIX does not list).
pub(crate) fn unlink_segment(name: &[u8]) {
    if let Some(path) = shm_path(name) {
        // SAFETY: `path` is NUL-terminated; unlink is async-signal-safe.
        unsafe { libc::unlink(path.as_ptr().cast()) };
    }
}

/// Makes `sig` fatal again and delivers it to the calling thread: restores `SIG_DFL`,
/// raises it, and unblocks it (a handler runs with its own signal blocked), so the process
/// dies of `sig` as if no handler had been installed.
pub(crate) fn die_of(sig: i32) {
    // SAFETY: an all-zero sigaction with sa_sigaction = SIG_DFL is the default disposition;
    // sigaction, raise, sigemptyset, sigaddset and pthread_sigmask are async-signal-safe
    // (pthread_sigmask: as sigprocmask) and get valid pointers.
    unsafe {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut dfl.sa_mask);
        libc::sigaction(sig, &dfl, std::ptr::null_mut());
        libc::raise(sig);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

/// [`install`] for the crate's own fatal-signal handler, as a safe call.
///
/// # Contract (crate-internal)
/// `handler` is a handler of this crate written to be async-signal-safe, and reviewed as
/// such where it is defined: it allocates nothing, takes no lock, and calls only the
/// async-signal-safe helpers of this module, atomics, and lock-free tables. (The callers
/// pass `lifecycle::signals::on_fatal_signal` and `parallel::pool::options::on_cancel_signal`.)
pub(crate) fn install_handler(
    sig: i32,
    handler: extern "C" fn(libc::c_int),
    block: &[i32],
) -> io::Result<SavedAction> {
    // SAFETY: `handler` is async-signal-safe by this function's crate-internal contract,
    // which its callers (the cleanup handler of `lifecycle::signals`, the cancel handler of
    // `parallel::pool::options`) meet: see the list of calls in each handler's doc.
    unsafe { install(sig, handler, block) }
}
