//! `fork`, `_exit`, `waitpid`, signals, and shared anonymous memory for forked children.

use std::io;
use std::ptr::NonNull;

use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

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
