//! Process file descriptors (`pidfd_open`, Linux 5.3+) and `waitid` without reaping.
//!
//! A pidfd names one process for as long as it is open, even after the process was reaped
//! and its pid reused; it polls readable once the process has ended. That makes "dead" a
//! fact the kernel states, independent of who may `waitpid` the process (only its parent)
//! and of `SIGCHLD` dispositions.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::fork::Exit;

/// An open pidfd.
#[derive(Debug)]
pub(crate) struct Pidfd {
    fd: OwnedFd,
}

impl Pidfd {
    /// Opens a pidfd for `pid`. The caller must know that `pid` still names the process it
    /// means (its own unreaped child, or a process whose reaping it can rule out).
    pub(crate) fn open(pid: i32) -> io::Result<Pidfd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        Ok(Pidfd { fd })
    }

    /// Whether the process has ended (it may still be a zombie).
    pub(crate) fn has_exited(&self) -> bool {
        self.wait_exited(0)
    }

    /// Sends `sig` to the process the pidfd names (`pidfd_send_signal`): never to another
    /// process that reused its pid. `ESRCH` once it has ended.
    pub(crate) fn send_signal(&self, sig: i32) -> io::Result<()> {
        // SAFETY: pidfd_send_signal takes a descriptor, a signal number, a null siginfo and
        // zero flags; it touches no memory of ours.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits at most `timeout_ms` for the process to end; whether it has.
    pub(crate) fn wait_exited(&self, timeout_ms: i32) -> bool {
        let mut pfd = [libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        super::pipe::poll(&mut pfd, timeout_ms).is_ok_and(|n| n > 0)
    }
}

impl AsRawFd for Pidfd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// How child `pid` ended, if it has, *without* reaping it (`waitid` with `WNOWAIT`): it
/// stays a zombie, so its pid cannot be reused until the caller reaps it.
pub(crate) fn peek_exit(pid: i32) -> io::Result<Option<Exit>> {
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value (plain integers and unions of them).
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a live, writable siginfo_t; the other arguments are plain values.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if r != 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // SAFETY: waitid filled `info` for a SIGCHLD-kind event, or left it zeroed.
        let (who, status) = unsafe { (info.si_pid(), info.si_status()) };
        if who == 0 {
            return Ok(None);
        }
        return Ok(Some(match info.si_code {
            libc::CLD_EXITED => Exit::Code(status),
            _ => Exit::Signal(status),
        }));
    }
}

/// Restores the default `SIGCHLD` disposition in the calling process, so that its
/// children's exit statuses are kept for `waitid` (an inherited `SIG_IGN` makes the kernel
/// reap them at once). Only for a single-threaded process that owns its signal handling
/// (the pool's fork server).
pub(crate) fn keep_child_statuses() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: SIG_DFL installs no handler code; the caller is single-threaded.
    let _ = unsafe { signal(Signal::SIGCHLD, SigHandler::SigDfl) };
}
