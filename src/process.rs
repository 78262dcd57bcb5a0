//! `Process`: run a closure in a forked child, the counterpart of Python's
//! `multiprocessing.Process(target=...)`.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Once;

use crate::cleanup;
use crate::error::{Error, ErrorKind, Result};
use crate::sys::fork::{self, AnonShared, Exit, Forked};

const REPORT_LEN: usize = 4096;
const MSG_OFFSET: usize = 8;
const STATE_OK: u32 = 1;
const STATE_ERR: u32 = 2;
const STATE_PANIC: u32 = 3;

/// What a child's closure may return: `()` or `Result<(), E>` with a displayable error.
pub trait ChildResult {
    /// `Ok(())`, or the error's message.
    fn into_message(self) -> std::result::Result<(), String>;
}

impl ChildResult for () {
    fn into_message(self) -> std::result::Result<(), String> {
        Ok(())
    }
}

impl<E: fmt::Display> ChildResult for std::result::Result<(), E> {
    fn into_message(self) -> std::result::Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

/// Where a child leaves its outcome: a page of shared anonymous memory, written by the
/// child before it exits and read by the parent after `waitpid`.
pub(crate) struct Report {
    mem: AnonShared,
}

impl Report {
    pub(crate) fn new() -> Result<Report> {
        let mem = AnonShared::new(REPORT_LEN)
            .map_err(|e| Error::os("cannot map a report page for a child process", e))?;
        Ok(Report { mem })
    }

    fn state(&self) -> &AtomicU32 {
        // SAFETY: the page is at least 8 bytes, page-aligned, zero-initialised and lives as
        // long as `self`; the word is only accessed atomically.
        unsafe { &*(self.mem.as_ptr() as *const AtomicU32) }
    }

    /// Child side: records the outcome.
    pub(crate) fn write(&self, state: u32, msg: &str) {
        let max = self.mem.len() - MSG_OFFSET;
        let mut n = msg.len().min(max);
        while !msg.is_char_boundary(n) {
            n -= 1;
        }
        // SAFETY: `n <= len - MSG_OFFSET`, so the copy stays inside the page; only this
        // child writes the page, and the parent reads it after the child has exited.
        unsafe {
            std::ptr::copy_nonoverlapping(msg.as_ptr(), self.mem.as_ptr().add(MSG_OFFSET), n);
            (self.mem.as_ptr().add(4) as *mut u32).write(n as u32);
        }
        self.state().store(state, Ordering::Release);
    }

    /// Parent side: the recorded (state, message).
    pub(crate) fn read(&self) -> (u32, String) {
        let state = self.state().load(Ordering::Acquire);
        if state == 0 {
            return (0, String::new());
        }
        // SAFETY: the length word lies inside the page; the Acquire load above orders
        // this read after the child's writes.
        let n = unsafe { (self.mem.as_ptr().add(4) as *const u32).read() } as usize;
        let n = n.min(self.mem.len() - MSG_OFFSET);
        // SAFETY: `n` bytes from MSG_OFFSET lie inside the page.
        let bytes = unsafe { std::slice::from_raw_parts(self.mem.as_ptr().add(MSG_OFFSET), n) };
        (state, String::from_utf8_lossy(bytes).into_owned())
    }
}

/// Set in a forked child right after the fork: the panic hook then stays silent.
static IN_CHILD: AtomicBool = AtomicBool::new(false);

/// Installs, once and in the parent (where taking the hook lock is safe), a panic hook that
/// is silent in forked children and calls the previous hook everywhere else. A child must
/// not call `set_hook` itself: another thread of the parent may have held the hook lock at
/// the fork, and the child would wait for it forever. The default hook would also lock
/// stderr, which another thread may have held.
fn install_child_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_CHILD.load(Ordering::Relaxed) {
                previous(info);
            }
        }));
    });
}

/// Runs `f` in the calling (child) process, records its outcome in `report` and ends the
/// process with `_exit`: it never returns, never unwinds into the parent's frames, and never
/// runs the parent's destructors. Panics are caught and reported, silently (see
/// `install_child_panic_hook`).
pub(crate) fn run_child<R: ChildResult>(report: &Report, f: impl FnOnce() -> R) -> ! {
    let code = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => match r.into_message() {
            Ok(()) => {
                report.write(STATE_OK, "");
                0
            }
            Err(msg) => {
                report.write(STATE_ERR, &msg);
                1
            }
        },
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic with a non-string payload".to_string());
            report.write(STATE_PANIC, &msg);
            101
        }
    };
    fork::exit_now(code)
}

/// Forks; the child runs `child` (which must end the process), the parent gets the pid.
///
/// The child is not recorded for signal cleanup: see [`fork_tracked`].
pub(crate) fn fork_with(child: impl FnOnce()) -> Result<i32> {
    fork_impl(child, false)
}

/// [`fork_with`], and records the child in the cleanup tables (killed and reaped by
/// `SignalCleanup` on a fatal signal). The signals `SignalCleanup` handles are blocked from
/// just before the fork until the child is recorded, so a Ctrl-C arriving in between is
/// delivered after the child is in the table instead of missing it.
pub(crate) fn fork_tracked(child: impl FnOnce()) -> Result<i32> {
    fork_impl(child, true)
}

fn fork_impl(child: impl FnOnce(), track: bool) -> Result<i32> {
    install_child_panic_hook();
    let blocked = fork::block_termination_signals();
    // SAFETY: the child only runs `child`, which runs the job and ends with `_exit` (see
    // `run_child`). The segment registry needs no care here: its lock is taken and
    // released by ndshm's `pthread_atfork` handlers around every fork.
    let forked = unsafe { fork::fork() };
    match forked {
        Ok(Forked::Parent(pid)) => {
            if track {
                cleanup::track_child(pid);
            }
            fork::restore_signal_mask(blocked);
            Ok(pid)
        }
        Ok(Forked::Child) => {
            fork::restore_signal_mask(blocked);
            IN_CHILD.store(true, Ordering::Relaxed);
            child();
            // `child` ends the process; should it ever return, leave without unwinding.
            fork::exit_now(70)
        }
        Err(e) => {
            fork::restore_signal_mask(blocked);
            Err(Error::os("fork failed", e))
        }
    }
}

/// Describes how a child ended, for errors: "panicked: msg", "killed by SIGKILL"…
pub(crate) fn describe_failure(report: &Report, exit: Exit) -> Option<String> {
    let (state, msg) = report.read();
    match (state, exit) {
        (STATE_OK, Exit::Code(0)) => None,
        (STATE_PANIC, _) => Some(format!("panicked: {msg}")),
        (STATE_ERR, _) => Some(format!("returned an error: {msg}")),
        (_, Exit::Code(code)) => Some(format!("exited with code {code}")),
        (_, Exit::Signal(sig)) => Some(format!("was killed by {}", fork::signal_name(sig))),
    }
}

/// A forked child process running a closure: Python's `Process(target=f).start()`.
///
/// The child runs only the closure: it catches panics, reports them (and returned errors)
/// to the parent through shared memory, and leaves with `_exit`, never running the
/// parent's destructors. [`join`](Process::join) waits and turns a panic, an error, a
/// non-zero exit or a signal into an [`ErrorKind::WorkerFailed`] error. Dropping a
/// `Process` that was not joined kills and reaps the child, so no zombie remains.
///
/// The closure runs in a copy of the parent's address space made by `fork`: it sees the
/// parent's data as it was at the fork, and shares only what lives in shared memory
/// (ndshm segments). If the parent has other threads, the child must not take locks they
/// may hold: do not print through `std::io::stdout()` in the child (use
/// [`write_stdout`](crate::write_stdout)), and do not use the parent's rayon pool.
///
/// # Examples
/// ```
/// use ndshm::{Process, SharedNdArray};
/// # let name = format!("doc-process-{}", std::process::id());
/// let mut a = SharedNdArray::<f64, ndarray::Ix1>::zeros(&name, 5)?;
/// let name2 = name.clone();
/// let child = Process::spawn(move || -> ndshm::Result<()> {
///     // SAFETY: the parent does not touch the array until it has joined this child.
///     let mut a = unsafe { SharedNdArray::<f64, ndarray::Ix1>::open(&name2)? };
///     for (i, x) in a.view_mut().iter_mut().enumerate() {
///         *x = 10.0 + i as f64;
///     }
///     Ok(())
/// })?;
/// child.join()?;
/// assert_eq!(a.as_slice().unwrap(), &[10.0, 11.0, 12.0, 13.0, 14.0]);
/// # Ok::<(), ndshm::Error>(())
/// ```
pub struct Process {
    pid: i32,
    report: Report,
    exit: Option<Exit>,
}

impl Process {
    /// Forks a child that runs `f`.
    ///
    /// `f` owns what it captures (`'static`): the child works on its copy, and the parent
    /// drops its own copy right after the fork. To let children borrow the parent's
    /// shared values and arrays, use [`scope`].
    ///
    /// # Errors
    /// An OS error when `fork` or the report page fails.
    pub fn spawn<F, R>(f: F) -> Result<Process>
    where
        F: FnOnce() -> R + 'static,
        R: ChildResult,
    {
        Self::spawn_unchecked(f)
    }

    fn spawn_unchecked<F, R>(f: F) -> Result<Process>
    where
        F: FnOnce() -> R,
        R: ChildResult,
    {
        let report = Report::new()?;
        let pid = fork_tracked(|| run_child(&report, f))?;
        Ok(Process {
            pid,
            report,
            exit: None,
        })
    }

    /// The child's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Waits for the child to end.
    ///
    /// # Errors
    /// [`ErrorKind::WorkerFailed`] naming the cause when the child panicked, returned an
    /// error, exited with a non-zero code, or died of a signal.
    pub fn join(mut self) -> Result<()> {
        self.wait()
    }

    fn wait(&mut self) -> Result<()> {
        let exit = match self.exit {
            Some(exit) => exit,
            None => {
                let exit = fork::wait_child(self.pid, false)
                    .map_err(|e| Error::os(format!("waitpid({})", self.pid), e))?
                    .unwrap_or(Exit::Code(0));
                cleanup::untrack_child(self.pid);
                self.exit = Some(exit);
                exit
            }
        };
        match describe_failure(&self.report, exit) {
            None => Ok(()),
            Some(why) => Err(Error::new(
                ErrorKind::WorkerFailed,
                format!("process {} {why}", self.pid),
            )),
        }
    }

    /// Whether the child has ended (reaping it if so), without blocking.
    ///
    /// # Errors
    /// An OS error from `waitpid`.
    pub fn is_finished(&mut self) -> Result<bool> {
        if self.exit.is_none() {
            self.exit = fork::wait_child(self.pid, true)
                .map_err(|e| Error::os(format!("waitpid({})", self.pid), e))?;
            if self.exit.is_some() {
                cleanup::untrack_child(self.pid);
            }
        }
        Ok(self.exit.is_some())
    }

    /// Sends `SIGKILL` to the child (it is reaped by `join` or drop).
    ///
    /// # Errors
    /// An OS error from `kill`.
    pub fn kill(&self) -> Result<()> {
        self.signal(libc::SIGKILL)
    }

    /// Sends signal `sig` to the child.
    ///
    /// # Errors
    /// An OS error from `kill` (an invalid signal number).
    pub fn signal(&self, sig: i32) -> Result<()> {
        if self.exit.is_some() {
            return Ok(());
        }
        fork::send_signal(self.pid, sig).map_err(|e| Error::os(format!("kill({})", self.pid), e))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = fork::send_signal(self.pid, libc::SIGKILL);
            let _ = fork::wait_child(self.pid, false);
            cleanup::untrack_child(self.pid);
        }
    }
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("pid", &self.pid)
            .field("exit", &self.exit)
            .finish()
    }
}

/// Forks processes that may borrow from the caller's stack, like `std::thread::scope`:
/// every child spawned on the [`Scope`] is joined before `scope` returns, so a child may
/// capture `&SharedValue` or `&mut SharedNdArray` and the borrow checker keeps the parent
/// off them until then.
///
/// A child works on a copy of the parent's address space: writes through references to
/// shared memory (ndshm segments) are seen by everyone; writes to ordinary memory stay in
/// the child.
///
/// # Errors
/// The first failure among the children ([`ErrorKind::WorkerFailed`], naming the pid and
/// cause), or of `fork`; every child is reaped in any case.
///
/// # Examples
/// ```
/// use ndshm::SharedNdArray;
/// # let name = format!("doc-scope-{}", std::process::id());
/// let a = SharedNdArray::<i64, ndarray::Ix1>::zeros(&name, 4)?;
/// ndshm::scope(|s| {
///     s.spawn(|| -> ndshm::Result<()> {
///         // A handle works only in the process that made it: the child attaches by name.
///         // SAFETY: the parent does not touch the array until the scope has joined.
///         let mut mine = unsafe { SharedNdArray::<i64, ndarray::Ix1>::open(&name)? };
///         mine.view_mut().fill(7);
///         Ok(())
///     })?;
///     Ok(())
/// })?;
/// assert_eq!(a.view().sum(), 28);
/// # Ok::<(), ndshm::Error>(())
/// ```
pub fn scope<'env, T>(f: impl FnOnce(&Scope<'env>) -> Result<T>) -> Result<T> {
    let scope = Scope {
        children: std::cell::RefCell::new(Vec::new()),
        _env: std::marker::PhantomData,
    };
    let out = f(&scope);
    let joined = scope.join_all();
    let value = out?;
    joined.map(|()| value)
}

/// Spawns borrowing children; see [`scope`].
pub struct Scope<'env> {
    children: std::cell::RefCell<Vec<Process>>,
    _env: std::marker::PhantomData<&'env mut &'env ()>,
}

impl<'env> Scope<'env> {
    /// Forks a child that runs `f`, which may borrow anything that outlives the scope.
    /// Returns the child's pid.
    ///
    /// # Errors
    /// An OS error when `fork` fails.
    pub fn spawn<F, R>(&self, f: F) -> Result<i32>
    where
        F: FnOnce() -> R + 'env,
        R: ChildResult,
    {
        let child = Process::spawn_unchecked(f)?;
        let pid = child.pid();
        self.children.borrow_mut().push(child);
        Ok(pid)
    }

    fn join_all(&self) -> Result<()> {
        let mut first = Ok(());
        for child in self.children.borrow_mut().drain(..) {
            let r = child.join();
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

impl Drop for Scope<'_> {
    fn drop(&mut self) {
        // Reached with children only when the scope's closure panicked: reap them all
        // before the borrows they hold end.
        let _ = self.join_all();
    }
}

impl fmt::Debug for Scope<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("children", &self.children.borrow().len())
            .finish()
    }
}

/// Writes `text` to file descriptor 1 with one `write(2)` loop, taking no lock: what a
/// forked child should use instead of `println!` (std's stdout lock may have been held by
/// another thread of the parent at the fork). Output of concurrent writers interleaves
/// only between calls for texts up to `PIPE_BUF` (4096) bytes.
///
/// # Errors
/// An OS error from `write`.
pub fn write_stdout(text: &str) -> Result<()> {
    let mut bytes = text.as_bytes();
    while !bytes.is_empty() {
        // SAFETY: fd 1 is borrowed only for this call; nix's `write` takes a borrowed fd.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(1) };
        match nix::unistd::write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::errno("write to stdout", e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_reported() {
        Process::spawn(|| {}).unwrap().join().unwrap();
        let err = Process::spawn(|| -> std::result::Result<(), String> { Err("bad input".into()) })
            .unwrap()
            .join()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WorkerFailed);
        assert!(err.to_string().contains("bad input"), "{err}");
        let err = Process::spawn::<_, ()>(|| panic!("boom {}", 7))
            .unwrap()
            .join()
            .unwrap_err();
        assert!(err.to_string().contains("panicked: boom 7"), "{err}");
        let err = Process::spawn::<_, ()>(|| fork::exit_now(3))
            .unwrap()
            .join()
            .unwrap_err();
        assert!(err.to_string().contains("exited with code 3"), "{err}");
        let p = Process::spawn(|| std::thread::sleep(std::time::Duration::from_secs(60))).unwrap();
        p.kill().unwrap();
        let err = p.join().unwrap_err();
        assert!(err.to_string().contains("SIGKILL"), "{err}");
    }

    #[test]
    fn drop_reaps_an_unjoined_child() {
        let p = Process::spawn(|| std::thread::sleep(std::time::Duration::from_secs(60))).unwrap();
        let pid = p.pid();
        drop(p);
        assert!(crate::sys::proc::start_time(pid).is_none());
    }
}
