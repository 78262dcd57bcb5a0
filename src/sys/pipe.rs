//! Pipes (socket pairs), `poll`, and file descriptors that only the process that made them holds.
//!
//! A *private* descriptor is recorded in a small table of atomics; [`close_private_in_child`]
//! closes every recorded one and is meant to run in each forked child (ndshm's fork paths
//! call it; it is async-signal-safe, so a `pthread_atfork` child handler may call it too).
//! The pool uses this for the write end of the pipe its fork server watches: when the only
//! process holding it dies, the server sees `POLLHUP` at once.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// Makes a connected pair of Unix stream sockets (both close-on-exec), used as a pipe:
/// `(read end, write end)`. A socket rather than a pipe so that [`write_all`] can refuse
/// to raise `SIGPIPE` when the reader is gone (`MSG_NOSIGNAL`); the reader sees end of
/// file (`POLLHUP`) once every copy of the write end is closed, as with a pipe.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1i32; 2];
    // SAFETY: `fds` is a writable array of two ints, as socketpair requires.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair succeeded, so both are new descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Writes all of `bytes` to the socket `fd` (retrying on `EINTR`); a gone reader is an
/// `EPIPE` error, never a `SIGPIPE`.
pub(crate) fn write_all(fd: RawFd, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a live buffer of `bytes.len()` readable bytes.
        let n = unsafe { libc::send(fd, bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

/// Reads what is there (at most `buf.len()` bytes; 0 at end of file), retrying on `EINTR`.
pub(crate) fn read_some(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is a live buffer of `buf.len()` writable bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `poll(2)` over `fds` for at most `timeout_ms` (-1: no limit); returns how many have
/// events (0 on timeout or `EINTR`).
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: `fds` is a live, writable array of `fds.len()` pollfd structures.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(r as usize)
}

/// A descriptor watched by [`poll`], with what happened to it.
pub(crate) type PollFd = libc::pollfd;

/// Watches `fd` for input (and, as `poll` always reports them, hang-up and errors).
pub(crate) fn watch_input(fd: RawFd) -> PollFd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Whether `poll` reported input on `p`.
pub(crate) fn has_input(p: &PollFd) -> bool {
    p.revents & libc::POLLIN != 0
}

/// Whether `poll` reported a hang-up or an error on `p`.
pub(crate) fn hung_up(p: &PollFd) -> bool {
    p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}

/// Closes `fd` (errors ignored).
///
/// # Safety
/// `fd` is an open descriptor that nothing will use afterwards.
pub(crate) unsafe fn close_raw(fd: RawFd) {
    // SAFETY: forwarded to the caller.
    unsafe { libc::close(fd) };
}

const MAX_PRIVATE: usize = 64;

#[allow(clippy::declare_interior_mutable_const)]
const FREE: AtomicI32 = AtomicI32::new(0);

/// Private descriptors of this process, as `fd + 1` (0: free slot).
static PRIVATE: [AtomicI32; MAX_PRIVATE] = [FREE; MAX_PRIVATE];

/// A descriptor that forked children do not keep: ndshm's fork paths close it in the child
/// (see [`close_private_in_child`]), so that only the process that made it holds it.
///
/// If the table is full the descriptor still works but children keep it (the pool then
/// learns of its caller's death when the last of them ends).
#[derive(Debug)]
pub(crate) struct PrivateFd {
    fd: RawFd,
    slot: Option<usize>,
    /// Set by [`close_in_child`](Self::close_in_child): this copy no longer owns `fd`.
    closed: AtomicBool,
}

impl PrivateFd {
    /// Records `fd` as private to the calling process.
    pub(crate) fn new(fd: OwnedFd) -> PrivateFd {
        use std::os::fd::IntoRawFd;
        let fd = fd.into_raw_fd();
        let slot = PRIVATE.iter().position(|s| {
            s.compare_exchange(0, fd + 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        });
        PrivateFd {
            fd,
            slot,
            closed: AtomicBool::new(false),
        }
    }

    /// In a forked child, closes the child's copy of the descriptor when forked children
    /// do not close it on their own (it was not recorded: the table was full); a recorded
    /// one was closed by [`close_private_in_child`] already. Afterwards this copy owns
    /// nothing: its `Drop` closes nothing.
    pub(crate) fn close_in_child(&self) {
        if self.slot.is_none() && !self.closed.swap(true, Ordering::AcqRel) {
            // SAFETY: the descriptor is this handle's (never recorded, not closed before:
            // the flag was clear), and the flag just set keeps this handle from closing or
            // handing it out again; the child inherited it and has no other owner of it.
            unsafe { close_raw(self.fd) };
        }
    }

    /// Whether forked children close it (false when the table was full).
    #[cfg(test)]
    pub(crate) fn is_recorded(&self) -> bool {
        self.slot.is_some()
    }
}

impl AsRawFd for PrivateFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl Drop for PrivateFd {
    fn drop(&mut self) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let owned = match self.slot {
            // In a forked child the slot was emptied (and the descriptor closed) by
            // `close_private_in_child`: the number may name another file now.
            Some(s) => PRIVATE[s]
                .compare_exchange(self.fd + 1, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok(),
            None => true,
        };
        if owned {
            // SAFETY: the descriptor is ours (still recorded, or never recorded) and this
            // handle, its only user, is going away.
            unsafe { close_raw(self.fd) };
        }
    }
}

/// Closes every private descriptor inherited from the parent. Async-signal-safe (atomics
/// and `close` only): call it first thing in a forked child.
pub(crate) fn close_private_in_child() {
    for s in &PRIVATE {
        let v = s.swap(0, Ordering::AcqRel);
        if v > 0 {
            // SAFETY: the parent recorded `v - 1` as open and private; the child inherited
            // it and nothing in the child uses it.
            unsafe { libc::close(v - 1) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipe_reports_hang_up_when_its_writer_closes() {
        let (r, w) = pipe().unwrap();
        let w = PrivateFd::new(w);
        assert!(w.is_recorded());
        write_all(w.as_raw_fd(), b"ab").unwrap();
        let mut fds = [libc::pollfd {
            fd: r.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        assert_eq!(poll(&mut fds, 1000).unwrap(), 1);
        let mut buf = [0u8; 4];
        assert_eq!(read_some(r.as_raw_fd(), &mut buf).unwrap(), 2);
        drop(w);
        fds[0].revents = 0;
        assert_eq!(poll(&mut fds, 1000).unwrap(), 1);
        assert_ne!(fds[0].revents & libc::POLLHUP, 0);
    }
}
