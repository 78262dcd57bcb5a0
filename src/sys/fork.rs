//! `fork`, `_exit`, `waitpid`, pidfds, the thread count, signals, and shared anonymous memory for forked children.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// The signal that kills a process outright.
pub(crate) const SIGKILL: i32 = libc::SIGKILL;

/// Result of `fork` as seen by the caller.
pub(crate) enum Forked {
    Parent(i32),
    Child,
}

/// Forks the calling process.
///
/// # Safety
/// In the child, only async-signal-safe work is guaranteed to be sound when the parent had
/// other threads: the child must not take locks another thread may have held at the fork
/// (stdout/stderr, rayon's pool, user mutexes), must not return into the caller's frames
/// (it ends with [`exit_now`]), and must not run the parent's destructors.
pub(crate) unsafe fn fork() -> io::Result<Forked> {
    // SAFETY: forwarded to the caller (see `# Safety`).
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { child }) => Ok(Forked::Parent(child.as_raw())),
        Ok(nix::unistd::ForkResult::Child) => Ok(Forked::Child),
        Err(e) => Err(io::Error::from_raw_os_error(e as i32)),
    }
}

/// Forks the calling process; the child runs `child` and then leaves with `_exit(70)`
/// (should `child` return at all: the callers' children end with [`exit_now`] themselves).
/// Returns the child's pid in the parent.
///
/// The child never returns into the caller's frames, never unwinds through them (a
/// `child` that panics aborts the child) and never runs the parent's destructors: its
/// copy of memory is private, so nothing the parent owns is dropped or freed twice.
/// Whether the child may take a lock that another thread of the parent held at the fork is
/// the callers' business: the user-facing forking APIs fork user closures only from a
/// process with one thread or after `allow_fork_with_threads` (an `unsafe` opt-in), and
/// ndshm's internal forks (the fork server, its workers) run only ndshm code, which takes
/// no such lock.
pub(crate) fn fork_into(child: impl FnOnce()) -> io::Result<i32> {
    // SAFETY: the child runs `child` and leaves with `_exit` without returning (see the
    // doc above for why that and the lock rule of the callers make the fork sound).
    match unsafe { fork() }? {
        Forked::Parent(pid) => Ok(pid),
        Forked::Child => {
            // An unwinding panic would leave this frame for the caller's: abort instead.
            struct Abort;
            impl Drop for Abort {
                fn drop(&mut self) {
                    exit_now(70);
                }
            }
            let _guard = Abort;
            child();
            exit_now(70)
        }
    }
}

/// Ends the calling process at once with `code`: no destructors, no atexit handlers, no
/// stdio flush (what a forked child must do).
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

/// Blocks, in the calling thread, the termination signals `SignalCleanup` may handle
/// (SIGINT, SIGTERM, SIGHUP, SIGQUIT); returns the previous mask for
/// [`restore_signal_mask`].
pub(crate) fn block_termination_signals() -> Option<nix::sys::signal::SigSet> {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};
    let mut set = SigSet::empty();
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        set.add(sig);
    }
    let mut old = SigSet::empty();
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old))
        .ok()
        .map(|()| old)
}

/// Restores a mask saved by [`block_termination_signals`]; pending signals are delivered.
pub(crate) fn restore_signal_mask(old: Option<nix::sys::signal::SigSet>) {
    if let Some(old) = old {
        let _ = nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&old),
            None,
        );
    }
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    Code(i32),
    Signal(i32),
}

/// Waits for child `pid` (blocking unless `nohang`); `Ok(None)` when it is still running.
pub(crate) fn wait_child(pid: i32, nohang: bool) -> io::Result<Option<Exit>> {
    let flags = if nohang {
        Some(WaitPidFlag::WNOHANG)
    } else {
        None
    };
    loop {
        match waitpid(Pid::from_raw(pid), flags) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(Some(Exit::Code(code))),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(Some(Exit::Signal(sig as i32))),
            Ok(WaitStatus::StillAlive) => return Ok(None),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io::Error::from_raw_os_error(e as i32)),
        }
    }
}

/// What waiting for a child found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waited {
    /// It is still running.
    Running,
    /// It ended; its exit status.
    Exited(Exit),
    /// It ended, but its exit status is gone: something else reaped it (`SIGCHLD` set to
    /// `SIG_IGN` or `SA_NOCLDWAIT`, so the kernel reaps children at exit, or a
    /// `waitpid(-1)` elsewhere in the process). `ECHILD` means this, never "dead" alone.
    Reaped,
}

/// [`wait_child`] for when no pidfd could be taken: `ECHILD` (the child is not, or no
/// longer, ours to wait for) becomes [`Waited::Reaped`].
pub(crate) fn wait_pid(pid: i32, nohang: bool) -> io::Result<Waited> {
    match wait_child(pid, nohang) {
        Ok(Some(exit)) => Ok(Waited::Exited(exit)),
        Ok(None) => Ok(Waited::Running),
        Err(e) if e.raw_os_error() == Some(libc::ECHILD) => Ok(Waited::Reaped),
        Err(e) => Err(e),
    }
}

/// Whether `pid` is a child of the caller that is still running, without reaping it
/// (`waitid(P_PID, .., WEXITED | WNOHANG | WNOWAIT)`): false for a child that ended
/// (zombie or reaped) and for a process that is not the caller's child.
pub(crate) fn is_running_child(pid: i32) -> bool {
    let Ok(id) = libc::id_t::try_from(pid) else {
        return false;
    };
    loop {
        // SAFETY: all-zero bytes are a valid `siginfo_t` (plain integers and unions).
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable `siginfo_t`; WNOWAIT leaves the child as is.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                id,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if r == 0 {
            // SAFETY: `waitid` succeeded; with WNOHANG `si_pid` is 0 when no child of
            // the set has ended, else the ended child's pid.
            return unsafe { info.si_pid() } == 0;
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return false;
        }
    }
}

/// A pidfd: a file descriptor naming one process (Linux >= 5.3). Unlike a pid it keeps
/// naming that process after it ended, even once something else has reaped it and the
/// kernel has handed its pid to another process: waiting and signalling through it never
/// reach a stranger.
#[derive(Debug)]
pub(crate) struct Pidfd(OwnedFd);

/// `pidfd_open(pid)`: `Ok(None)` when no process `pid` exists. For a child of the caller
/// that means it has already ended *and* been reaped (a child that ended but was not
/// reaped is a zombie, which still has its pid): taken right after the fork, before the
/// parent could reap it, `None` says "reaped by someone else".
pub(crate) fn pidfd_open(pid: i32) -> io::Result<Option<Pidfd>> {
    // SAFETY: `pidfd_open` takes a pid and flags and returns a new fd or -1; no memory
    // is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ESRCH) => Ok(None),
            _ => Err(e),
        };
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    Ok(Some(Pidfd(unsafe { OwnedFd::from_raw_fd(fd) })))
}

impl Pidfd {
    /// Waits (unless `nohang`) for the process to end, then collects its exit status with
    /// `waitid(P_PIDFD, .., WEXITED)`; [`Waited::Reaped`] when the status is gone.
    pub(crate) fn wait(&self, nohang: bool) -> io::Result<Waited> {
        let mut pfd = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // SAFETY: `pfd` is one valid `pollfd` that lives across the call.
            let n = unsafe { libc::poll(&mut pfd, 1, if nohang { 0 } else { -1 }) };
            if n > 0 {
                break;
            }
            if n == 0 {
                return Ok(Waited::Running);
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
        loop {
            // SAFETY: all-zero bytes are a valid `siginfo_t` (plain integers and unions).
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: `info` is a valid, writable `siginfo_t`; the fd is ours and open.
            let r = unsafe {
                libc::waitid(
                    libc::P_PIDFD,
                    self.0.as_raw_fd() as libc::id_t,
                    &mut info,
                    libc::WEXITED,
                )
            };
            if r == 0 {
                // SAFETY: `waitid` succeeded with WEXITED, so `info` describes a child
                // that ended and its `si_status` field is the one the kernel set.
                let status = unsafe { info.si_status() };
                return Ok(Waited::Exited(if info.si_code == libc::CLD_EXITED {
                    Exit::Code(status)
                } else {
                    Exit::Signal(status)
                }));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ECHILD) => return Ok(Waited::Reaped),
                _ => return Err(e),
            }
        }
    }

    /// Sends `sig` to the process; one that has already ended is not an error.
    pub(crate) fn send_signal(&self, sig: i32) -> io::Result<()> {
        // SAFETY: `pidfd_send_signal(fd, sig, NULL, 0)` reads no memory (null info).
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ESRCH) => Ok(()),
            _ => Err(e),
        }
    }
}

/// The number of threads of the calling process, from `/proc/self/stat` (field 20,
/// `num_threads`). An error when `/proc` is not mounted or not readable.
pub(crate) fn thread_count() -> io::Result<usize> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Field 2 (the command name) is in parentheses and may hold spaces or ')': the
    // fields after the *last* ')' start with field 3.
    let rest = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidData))?;
    rest.split_whitespace()
        .nth(20 - 3)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidData))
}

/// [`thread_count`], waiting up to `within` for threads that are on their way out: a
/// `std::thread::scope` returns once its threads ran their closures, before they exited
/// (measured: half the time the count right after a scope still holds its thread), and a
/// joined thread is counted until the kernel released it. A thread that keeps running
/// keeps the count up; the wait ends at the first count of 1.
pub(crate) fn thread_count_settled(within: std::time::Duration) -> io::Result<usize> {
    let start = std::time::Instant::now();
    loop {
        let n = thread_count()?;
        if n <= 1 || start.elapsed() >= within {
            return Ok(n);
        }
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
}

/// Sends `sig` to process `pid`; a process that is already gone is not an error.
pub(crate) fn send_signal(pid: i32, sig: i32) -> io::Result<()> {
    let sig = Signal::try_from(sig).map_err(|e| io::Error::from_raw_os_error(e as i32))?;
    match nix::sys::signal::kill(Pid::from_raw(pid), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(io::Error::from_raw_os_error(e as i32)),
    }
}

/// The name of signal `sig` ("SIGKILL"), or its number.
pub(crate) fn signal_name(sig: i32) -> String {
    Signal::try_from(sig).map_or_else(|_| format!("signal {sig}"), |s| s.as_str().to_string())
}

/// Shared anonymous memory (`MAP_SHARED | MAP_ANONYMOUS`): zeroed, and shared with every
/// child forked after it was made.
pub(crate) struct AnonShared {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this handle; what is stored in it is
// accessed through atomics or under the protocols of the types built on it.
unsafe impl Send for AnonShared {}
// SAFETY: as above: `&AnonShared` only hands out a raw pointer.
unsafe impl Sync for AnonShared {}

impl AnonShared {
    /// Maps `len` (> 0) zeroed bytes.
    pub(crate) fn new(len: usize) -> io::Result<AnonShared> {
        let size = std::num::NonZeroUsize::new(len)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: an anonymous mapping at an address the kernel picks aliases nothing.
        let ptr = unsafe {
            nix::sys::mman::mmap_anonymous(
                None,
                size,
                nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
                nix::sys::mman::MapFlags::MAP_SHARED,
            )
        }
        .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
        Ok(AnonShared {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Maps `len` (> 0) zeroed bytes and lets `init` fill them through an ordinary
    /// `&mut [u8]` before anyone else can reach them.
    pub(crate) fn new_with<R>(
        len: usize,
        init: impl FnOnce(&mut [u8]) -> R,
    ) -> io::Result<(AnonShared, R)> {
        let mem = AnonShared::new(len)?;
        // SAFETY: `mem` was just mapped, `len` bytes, readable and writable; no one else
        // holds it yet (it is returned only after `init`), and a child forked meanwhile
        // by another thread would inherit the memory but no handle or reference into it.
        let bytes = unsafe { std::slice::from_raw_parts_mut(mem.as_ptr(), len) };
        let r = init(bytes);
        Ok((mem, r))
    }

    /// Start of the mapping (page-aligned).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for AnonShared {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `new`, unmapped only here.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr.cast(), self.len) };
    }
}

impl std::fmt::Debug for AnonShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnonShared")
            .field("len", &self.len)
            .finish()
    }
}
