//! `Process`: run a closure in a forked child, the counterpart of Python's
//! `multiprocessing.Process(target=...)`.

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use ndarray::Dimension;

use crate::array::{AccessMode, SharedNdArray};
use crate::element::Element;
use crate::error::{Error, ErrorKind, Result};
use crate::segment::owned;
use crate::segment::region::Region;
use crate::sys::fork::{self, Exit};

const REPORT_LEN: usize = 4096;
const MSG_OFFSET: usize = 8;
const STATE_OK: u32 = 1;
const STATE_ERR: u32 = 2;
const STATE_PANIC: u32 = 3;

/// What a child's closure may return: `()` or `Result<(), E>` with a displayable error.
///
/// # Examples
/// ```
/// use ndshm::Process;
/// // `()`: the child succeeded when the closure returned.
/// Process::spawn(|| {})?.join()?;
/// // `Result<(), E>`: an error is the child's failure, with its message.
/// let err = Process::spawn(|| "x".parse::<u8>().map(drop))?.join().unwrap_err();
/// assert!(err.to_string().contains("invalid digit"), "{err}");
/// # Ok::<(), ndshm::Error>(())
/// ```
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
/// child before it exits and read by the parent after `waitpid`. Layout: the state word
/// (0 while nothing is reported), the message length, the message.
pub(crate) struct Report {
    region: Region,
}

impl Report {
    pub(crate) fn new() -> Result<Report> {
        Ok(Report {
            region: Region::anonymous(REPORT_LEN, |_| Ok(()))?,
        })
    }

    /// Child side: records the outcome (the message, then its length, then the state with
    /// `Release`, so a parent that sees the state sees the message).
    pub(crate) fn write(&self, state: u32, msg: &str) {
        let mem = self.region.payload();
        let mut n = msg.len().min(REPORT_LEN - MSG_OFFSET);
        while !msg.is_char_boundary(n) {
            n -= 1;
        }
        mem.write(MSG_OFFSET, &msg.as_bytes()[..n]);
        mem.u32(4).store(n as u32, Ordering::Relaxed);
        mem.u32(0).store(state, Ordering::Release);
    }

    /// Parent side: the recorded (state, message).
    pub(crate) fn read(&self) -> (u32, String) {
        let mem = self.region.payload();
        let state = mem.u32(0).load(Ordering::Acquire);
        if state == 0 {
            return (0, String::new());
        }
        let n = (mem.u32(4).load(Ordering::Relaxed) as usize).min(REPORT_LEN - MSG_OFFSET);
        let mut bytes = vec![0u8; n];
        mem.read(MSG_OFFSET, &mut bytes);
        (state, String::from_utf8_lossy(&bytes).into_owned())
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
/// The process-wide segment registry is locked across the fork so that the child never
/// inherits it locked. The child is not recorded for signal cleanup: see [`fork_tracked`].
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
    // The child only runs `child`, which runs the job and ends with `_exit` (see
    // `run_child`). The segment registry needs no care here: its lock is taken and
    // released by ndshm's `pthread_atfork` handlers around every fork.
    let forked = fork::fork_into(|| {
        fork::restore_signal_mask(blocked);
        IN_CHILD.store(true, Ordering::Relaxed);
        child();
    });
    if let (true, Ok(pid)) = (track, &forked) {
        // Recorded before the termination signals are unblocked again.
        owned::track_child(*pid);
    }
    fork::restore_signal_mask(blocked);
    forked.map_err(|e| Error::os("fork failed", e))
}

/// How a forked child ended, as far as its parent can know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// Its exit status.
    Exit(Exit),
    /// Its exit status is gone: something else reaped it (`SIGCHLD` ignored, typically).
    /// Only the child's [`Report`] says how it went.
    Reaped,
}

/// What a child that ended without reporting (its closure never returned) was running:
/// that decides whether exit code 0 is a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Job {
    /// A [`Process`]: like Python's, a child that calls `exit(0)` succeeded.
    Process,
    /// Chunk `n` of a fork-per-call job: a child that exits, even with 0, before its closure
    /// returned did not finish its chunk, which is a failure (Python's `Pool` would count
    /// it as a lost worker).
    Chunk(usize),
}

/// Describes how a child ended, for errors: "panicked: msg", "killed by SIGKILL"…; `None`
/// for a success.
///
/// The report decides first: a child that reported an error or a panic keeps its message
/// whatever its exit status. A child that left no report (its closure called `exit`)
/// succeeded with exit code 0 when it ran a [`Job::Process`] (Python's rule) and failed
/// when it ran a [`Job::Chunk`] (the chunk was not finished). When the status is gone
/// ([`End::Reaped`]), a child that reported success succeeded, and one that left no report
/// "ended without reporting".
pub(crate) fn describe_failure(report: &Report, end: End, job: Job) -> Option<String> {
    let (state, msg) = report.read();
    match (state, end) {
        (STATE_PANIC, _) => Some(format!("panicked: {msg}")),
        (STATE_ERR, _) => Some(format!("returned an error: {msg}")),
        (STATE_OK, End::Exit(Exit::Code(0)) | End::Reaped) => None,
        (0, End::Exit(Exit::Code(0))) => match job {
            Job::Process => None,
            Job::Chunk(n) => Some(format!(
                "exited with code 0 before finishing chunk {n} (its closure called exit \
                 instead of returning)"
            )),
        },
        (_, End::Exit(Exit::Code(code))) => Some(format!("exited with code {code}")),
        (_, End::Exit(Exit::Signal(sig))) => {
            Some(format!("was killed by {}", fork::signal_name(sig)))
        }
        (_, End::Reaped) => Some(
            "ended without reporting (its exit status was reaped by someone else, e.g. \
             SIGCHLD is ignored)"
                .to_string(),
        ),
    }
}

/// Set by [`allow_fork_with_threads`]. Set from the start in the crate's own unit-test
/// binary, whose tests run on the harness's threads and fork only ndshm's test closures.
static FORK_WITH_THREADS: AtomicBool = AtomicBool::new(cfg!(test));

/// Lets the forking APIs fork user closures while this process has other threads — from
/// now on, for the whole process (and the children it forks).
///
/// `fork` copies the calling thread only. A lock another thread held at that moment stays
/// held in the child forever, by a thread that does not exist there: a child that takes
/// it hangs (a logger thread holding stdout while the closure calls `println!` is enough),
/// and POSIX leaves everything in such a child but async-signal-safe calls undefined.
/// Without this opt-in, [`fork_chunks`](crate::fork_chunks) and its siblings,
/// [`Process::spawn`], [`Process::spawn_with`], [`Scope::spawn`] and [`Scope::spawn_with`]
/// refuse with [`ErrorKind::ForkWithThreads`] when the process has more than one thread
/// (or when `/proc` cannot tell). ndshm's own code in a child takes no lock; the question
/// is only what your closure does. ndshm's internal forks that run only ndshm code (the
/// [`WorkerPool`](crate::WorkerPool)'s workers, the [`CrashCleanup`](crate::CrashCleanup)
/// watchdog) need no opt-in.
///
/// The other fix is to fork before starting threads: a process whose only thread is the
/// caller needs no opt-in.
///
/// # Safety
/// The caller promises that every closure forked afterwards, while other threads exist,
/// takes in the child no lock that another thread of the parent may hold at the fork:
/// - no `println!`, `eprintln!`, `std::io::stdout()`/`stderr()` (std's stdio locks): write
///   with [`write_stdout`] instead;
/// - no logger (`log`/`tracing` back ends lock their sinks);
/// - no rayon or other thread pool of the parent (its threads are not in the child), and no
///   channel or queue those threads use;
/// - no `Mutex`, `RwLock`, `Once`/`OnceLock`/`LazyLock` initialisation or `std::env`
///   access that other threads may be inside, yours or a library's.
///
/// Memory allocation is fine with glibc (its allocator resets its locks in the child).
/// A panic in the child is caught and reported by ndshm without taking stderr's lock.
///
/// # Examples
/// ```
/// // A program that starts a logger thread first, and whose forked closures only compute
/// // and write shared memory:
/// // SAFETY: the closures forked by this program take no lock (no printing, no logging,
/// // no rayon, no mutexes); they write only their chunk of the array.
/// unsafe { ndshm::allow_fork_with_threads() };
/// ```
pub unsafe fn allow_fork_with_threads() {
    FORK_WITH_THREADS.store(true, Ordering::Relaxed);
}

/// How long [`check_fork_allowed`] waits for exiting threads to be gone before it refuses.
const SETTLE_THREADS: std::time::Duration = std::time::Duration::from_millis(20);

/// Refuses to fork a user closure from a process with other threads unless the process
/// opted in (see [`allow_fork_with_threads`]); `api` names the caller in the message.
///
/// Sound without a race: a count of 1 means the caller is the only thread, so no thread
/// can start between the count and the fork.
pub(crate) fn check_fork_allowed(api: &str) -> Result<()> {
    if FORK_WITH_THREADS.load(Ordering::Relaxed) {
        return Ok(());
    }
    let fixes = "fork before starting threads (create the arrays and fork first, then start \
                 loggers, rayon or other threads), or, if the forked closures take no lock \
                 another thread may hold, opt in once with `unsafe { \
                 ndshm::allow_fork_with_threads() }` (see its Safety section)";
    // Threads that finished but have not exited yet (right after a `std::thread::scope`)
    // are waited for, briefly: they take no lock any more.
    match fork::thread_count_settled(SETTLE_THREADS) {
        Ok(n) if n <= 1 => Ok(()),
        Ok(n) => Err(Error::new(
            ErrorKind::ForkWithThreads,
            format!(
                "{api}: this process has {n} threads, and a forked child gets a copy of the \
                 calling one only: a lock another thread holds at the fork (stdout/stderr, \
                 a logger, rayon, a mutex) would stay locked in the child forever and hang \
                 it. Fix: {fixes}"
            ),
        )),
        Err(e) => Err(Error::new(
            ErrorKind::ForkWithThreads,
            format!(
                "{api}: cannot count this process's threads (/proc/self/stat: {e}), so \
                 cannot rule out that another thread holds a lock (stdout/stderr, a logger, \
                 rayon, a mutex) that would hang the forked child. Fix: mount /proc, or \
                 {fixes}"
            ),
        )),
    }
}

/// A child forked by the user-facing APIs: its pid, a pidfd taken right after the fork,
/// and its report. Waiting goes through the pidfd (poll, then `waitid(P_PIDFD)`), so it
/// works when `SIGCHLD` is ignored and never reaches another process that reused the pid.
/// Dropping a child that was not waited for kills and reaps it.
pub(crate) struct Child {
    pid: i32,
    /// `None` when the child was already gone at `pidfd_open`, or no pidfd could be had
    /// (kernel < 5.3, no file descriptor left): then waiting falls back to `waitpid`.
    pidfd: Option<fork::Pidfd>,
    report: Report,
    end: Option<End>,
}

impl Child {
    /// Forks a child that runs `f` (see [`run_child`]), recorded for signal cleanup.
    pub(crate) fn spawn<R: ChildResult>(f: impl FnOnce() -> R) -> Result<Child> {
        let report = Report::new()?;
        let pid = fork_tracked(|| run_child(&report, f))?;
        let mut child = Child {
            pid,
            pidfd: None,
            report,
            end: None,
        };
        match fork::pidfd_open(pid) {
            Ok(Some(fd)) => child.pidfd = Some(fd),
            // No such process: it has ended and something else reaped it already (a child
            // that ended but was not reaped is a zombie, which keeps its pid).
            Ok(None) => child.ended(End::Reaped),
            Err(_) => {}
        }
        Ok(child)
    }

    fn ended(&mut self, end: End) {
        owned::untrack_child(self.pid);
        self.end = Some(end);
        self.pidfd = None;
    }

    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// How the child ended, once known.
    pub(crate) fn end(&self) -> Option<End> {
        self.end
    }

    /// Waits for the child to end (unless `nohang`); `Ok(None)` while it runs.
    pub(crate) fn wait(&mut self, nohang: bool) -> Result<Option<End>> {
        if self.end.is_some() {
            return Ok(self.end);
        }
        let waited = match &self.pidfd {
            Some(fd) => fd.wait(nohang),
            None => fork::wait_pid(self.pid, nohang),
        }
        .map_err(|e| Error::os(format!("waiting for child process {}", self.pid), e))?;
        match waited {
            fork::Waited::Running => return Ok(None),
            fork::Waited::Exited(exit) => self.ended(End::Exit(exit)),
            fork::Waited::Reaped => self.ended(End::Reaped),
        }
        Ok(self.end)
    }

    /// Why the child failed, once it has ended; `None` for a success (or while it runs).
    /// `job` says what it ran (see [`describe_failure`]).
    pub(crate) fn failure(&self, job: Job) -> Option<String> {
        describe_failure(&self.report, self.end?, job)
    }

    /// Python's `exitcode`: the exit code, `-N` for signal `N`, `None` while it runs or
    /// when its status was reaped by someone else.
    pub(crate) fn exitcode(&self) -> Option<i32> {
        match self.end? {
            End::Exit(Exit::Code(code)) => Some(code),
            End::Exit(Exit::Signal(sig)) => Some(-sig),
            End::Reaped => None,
        }
    }

    /// Sends `sig` to the child; nothing once it has ended.
    pub(crate) fn signal(&self, sig: i32) -> Result<()> {
        let sent = match &self.pidfd {
            _ if self.end.is_some() => Ok(()),
            Some(fd) => fd.send_signal(sig),
            // No pidfd: signal by pid only while the child is provably ours and running (a
            // reaped child's pid may belong to a stranger by now).
            None if fork::is_running_child(self.pid) => fork::send_signal(self.pid, sig),
            None => Ok(()),
        };
        sent.map_err(|e| Error::os(format!("kill({})", self.pid), e))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.end.is_none() {
            let _ = self.signal(fork::SIGKILL);
            let _ = self.wait(false);
        }
    }
}

/// Runs `f` on `array` in a forked child, after re-binding the child's copy of the handle
/// to the child (the parent's mapping is not inherited: the child maps the segment again).
fn with_adopted<T, D, M, R>(
    array: &mut SharedNdArray<T, D, M>,
    f: impl FnOnce(&mut SharedNdArray<T, D, M>) -> R,
) -> std::result::Result<(), String>
where
    T: Element,
    D: Dimension,
    M: AccessMode,
    R: ChildResult,
{
    array
        .adopt_in_child()
        .map_err(|e| format!("could not take over the array in the child: {e}"))?;
    f(array).into_message()
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
/// parent's data as it was at the fork, and shares only what lives in shared memory.
/// What it may use there:
/// - sync and ipc objects ([`SharedValue`](crate::SharedValue), [`Lock`](crate::Lock),
///   [`Queue`](crate::Queue), [`Connection`](crate::Connection) ends, the Manager's containers) it
///   captures: their shared state is atomic or lock-protected;
/// - an array handed over with [`Process::spawn_with`], which moves the handle into the
///   child's care until [`join`](ProcessWith::join) gives it back;
/// - an array it re-opens by name (`unsafe`, see [`SharedNdArray::open`]).
///
/// Array handles, views and guards it merely captures belong to the parent: in the child
/// they refuse ([`ErrorKind::WrongProcess`]) or panic, never giving two writers.
///
/// Waiting goes through a pidfd taken right after the fork, so it works when `SIGCHLD` is
/// ignored (the kernel then reaps the child itself): the outcome comes from the child's
/// report, and a child that left none "ended without reporting".
///
/// In a process with other threads, spawning needs the opt-in
/// [`allow_fork_with_threads`]: see there for the hazard.
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
    child: Child,
}

impl Process {
    /// Forks a child that runs `f`.
    ///
    /// `f` owns what it captures (`'static`): the child works on its copy, and the parent
    /// drops its own copy right after the fork. To hand the child an array, use
    /// [`Process::spawn_with`]; to let children borrow the parent's values, use [`scope`].
    ///
    /// # Errors
    /// - [`ErrorKind::ForkWithThreads`] when this process has other threads and has not
    ///   called [`allow_fork_with_threads`];
    /// - an OS error when `fork` or the report page fails.
    pub fn spawn<F, R>(f: F) -> Result<Process>
    where
        F: FnOnce() -> R + 'static,
        R: ChildResult,
    {
        check_fork_allowed("Process::spawn")?;
        Self::spawn_unchecked(f)
    }

    /// Forks a child that runs `f` on `array`, which it takes over: the child re-binds its
    /// copy of the handle (maps the segment itself), and the parent keeps the handle in
    /// the returned [`ProcessWith`], out of reach, until [`join`](ProcessWith::join) hands
    /// it back after the child has ended. So parent and child never use the array at once.
    ///
    /// `f` gets `&mut` to the child's handle (the child never drops it: the creator's
    /// handle stays with the parent, which unlinks on drop as usual).
    ///
    /// # Errors
    /// As [`Process::spawn`], as a [`SpawnWithError`] that gives the array back (it
    /// converts into [`Error`] for `?`). A failure to re-bind the array in the child comes
    /// back from `join` as [`ErrorKind::WorkerFailed`].
    ///
    /// # Examples
    /// ```
    /// use ndshm::{Process, SharedNdArray};
    /// # let name = format!("doc-spawn-with-{}", std::process::id());
    /// let a = SharedNdArray::<u32, ndarray::Ix1>::zeros(&name, 4)?;
    /// let child = Process::spawn_with(a, |a| a.view_mut().fill(7))?;
    /// let a = child.join()?; // the array comes back once the child has ended
    /// assert_eq!(a.as_slice().unwrap(), &[7, 7, 7, 7]);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    // The error carries the array back by value, as the success does: it is as large as
    // the `Ok` side, and spelled out so the signature says what comes back.
    #[allow(clippy::result_large_err, clippy::type_complexity)]
    pub fn spawn_with<T, D, M, F, R>(
        mut array: SharedNdArray<T, D, M>,
        f: F,
    ) -> std::result::Result<
        ProcessWith<SharedNdArray<T, D, M>>,
        SpawnWithError<SharedNdArray<T, D, M>>,
    >
    where
        T: Element,
        D: Dimension,
        M: AccessMode,
        F: FnOnce(&mut SharedNdArray<T, D, M>) -> R + 'static,
        R: ChildResult,
    {
        let spawned = check_fork_allowed("Process::spawn_with")
            .and_then(|()| Child::spawn(|| with_adopted(&mut array, f)));
        match spawned {
            Ok(child) => Ok(ProcessWith {
                process: Process { child },
                value: array,
            }),
            Err(error) => Err(SpawnWithError {
                error,
                value: array,
            }),
        }
    }

    fn spawn_unchecked<F, R>(f: F) -> Result<Process>
    where
        F: FnOnce() -> R,
        R: ChildResult,
    {
        Ok(Process {
            child: Child::spawn(f)?,
        })
    }

    /// The child's pid.
    pub fn pid(&self) -> i32 {
        self.child.pid()
    }

    /// Waits for the child to end.
    ///
    /// # Errors
    /// [`ErrorKind::WorkerFailed`] naming the cause when the child panicked, returned an
    /// error, exited with a non-zero code, died of a signal, or ended without reporting
    /// while its exit status was reaped by someone else (`SIGCHLD` ignored); an OS error
    /// when waiting fails.
    ///
    /// # Examples
    /// ```
    /// use ndshm::{ErrorKind, Process};
    /// let mut child = Process::spawn(|| -> Result<(), String> { Err("no input".into()) })?;
    /// let pid = child.pid();
    /// while !child.is_finished()? {
    ///     std::thread::yield_now();
    /// }
    /// assert_eq!(child.exitcode(), Some(1)); // a child that returned an error exits with 1
    /// let err = child.join().unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::WorkerFailed);
    /// assert!(err.to_string().contains(&format!("process {pid} returned an error: no input")));
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn join(mut self) -> Result<()> {
        self.child.wait(false)?;
        self.outcome()
    }

    /// The outcome of a child that has ended.
    fn outcome(&self) -> Result<()> {
        match self.child.failure(Job::Process) {
            None => Ok(()),
            Some(why) => Err(Error::new(
                ErrorKind::WorkerFailed,
                format!("process {} {why}", self.child.pid()),
            )),
        }
    }

    /// Waits for the child to end and returns its [`exitcode`](Process::exitcode), without
    /// judging it (as `std::process::Child::wait`, or Python's `p.join(); p.exitcode`):
    /// `join` afterwards still returns the outcome. A child that returned an error exits
    /// with 1, one that panicked with 101, one that called `exit(n)` with `n`.
    ///
    /// # Errors
    /// An OS error when waiting fails.
    ///
    /// # Examples
    /// ```
    /// // Python: p = Process(target=sys.exit, args=(3,)); p.start(); p.join(); p.exitcode == 3
    /// let mut p = ndshm::Process::spawn::<_, ()>(|| std::process::exit(3))?;
    /// assert_eq!(p.wait()?, Some(3));
    /// assert_eq!(p.exitcode(), Some(3));
    /// assert!(p.join().unwrap_err().to_string().contains("exited with code 3"));
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn wait(&mut self) -> Result<Option<i32>> {
        self.child.wait(false)?;
        Ok(self.child.exitcode())
    }

    /// Whether the child has ended (reaping it if so), without blocking.
    ///
    /// # Errors
    /// An OS error when waiting fails.
    pub fn is_finished(&mut self) -> Result<bool> {
        Ok(self.child.wait(true)?.is_some())
    }

    /// The child's exit code once it has ended, as Python's `Process.exitcode`: the code
    /// it exited with (0 also when the closure called `exit(0)`: a success, as in Python),
    /// or `-N` when signal `N` killed it; `None` while it runs (see
    /// [`is_finished`](Process::is_finished) and [`wait`](Process::wait)) and when its exit
    /// status was reaped by someone else (`SIGCHLD` ignored).
    ///
    /// # Examples
    /// ```
    /// let mut p = ndshm::Process::spawn(|| std::thread::park())?;
    /// assert_eq!(p.exitcode(), None); // still running
    /// p.kill()?;
    /// p.wait()?;
    /// assert_eq!(p.exitcode(), Some(-9)); // killed by SIGKILL, as Python's -signal.SIGKILL
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn exitcode(&self) -> Option<i32> {
        self.child.exitcode()
    }

    /// Sends `SIGKILL` to the child (it is reaped by `join` or drop).
    ///
    /// # Errors
    /// An OS error from the signal call.
    ///
    /// # Examples
    /// ```
    /// use ndshm::Process;
    /// let child = Process::spawn::<_, ()>(|| loop { std::thread::park() })?;
    /// child.kill()?;
    /// let err = child.join().unwrap_err();
    /// assert!(err.to_string().contains("SIGKILL"), "{err}");
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn kill(&self) -> Result<()> {
        self.signal(fork::SIGKILL)
    }

    /// Sends signal `sig` to the child; nothing once it has ended.
    ///
    /// # Errors
    /// An OS error from the signal call (an invalid signal number).
    pub fn signal(&self, sig: i32) -> Result<()> {
        self.child.signal(sig)
    }
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("pid", &self.child.pid())
            .field("end", &self.child.end())
            .finish()
    }
}

/// A [`Process`] that holds what it was handed ([`Process::spawn_with`]) until the child
/// has ended: [`join`](ProcessWith::join) returns it. Dropping it kills and reaps the child
/// first, then drops the value; forgetting it (`mem::forget`) leaks the value, which the
/// parent then never touches again — either way parent and child never use it at once.
///
/// # Examples
/// ```
/// use ndshm::{CreateOptions, Process, SharedNdArray};
/// let a = SharedNdArray::<u8, ndarray::Ix1>::zeros(CreateOptions::unique(), 2)?;
/// // The array moves into the ProcessWith: the parent cannot touch it while the child runs.
/// let child = Process::spawn_with(a, |a| -> Result<(), String> {
///     a.view_mut().fill(1);
///     Err("half done".into())
/// })?;
/// // join_keeping gives the array back with the outcome, even a failure.
/// let (a, outcome) = child.join_keeping();
/// assert!(outcome.is_err());
/// assert_eq!(a.as_slice().unwrap(), &[1, 1]);
/// # Ok::<(), ndshm::Error>(())
/// ```
#[derive(Debug)]
pub struct ProcessWith<A> {
    // Field order matters: the child is killed and reaped before the value drops.
    process: Process,
    value: A,
}

impl<A> ProcessWith<A> {
    /// The child's pid.
    pub fn pid(&self) -> i32 {
        self.process.pid()
    }

    /// Waits for the child to end and returns the value it was handed.
    ///
    /// # Errors
    /// As [`Process::join`]; the value is dropped with the error (use
    /// [`join_keeping`](ProcessWith::join_keeping) to keep it).
    pub fn join(self) -> Result<A> {
        let (value, r) = self.join_keeping();
        r.map(|()| value)
    }

    /// Waits for the child to end and returns the value it was handed together with the
    /// outcome ([`Process::join`]'s result), so a failure does not drop it.
    pub fn join_keeping(self) -> (A, Result<()>) {
        let ProcessWith { process, value } = self;
        let r = process.join();
        (value, r)
    }

    /// As [`Process::is_finished`].
    ///
    /// # Errors
    /// An OS error when waiting fails.
    pub fn is_finished(&mut self) -> Result<bool> {
        self.process.is_finished()
    }

    /// As [`Process::exitcode`].
    ///
    /// # Examples
    /// ```
    /// use ndshm::{CreateOptions, Process, SharedNdArray};
    /// let a = SharedNdArray::<u8, ndarray::Ix1>::zeros(CreateOptions::unique(), 2)?;
    /// let mut child = Process::spawn_with::<_, _, _, _, ()>(a, |a| {
    ///     a.view_mut().fill(1);
    ///     std::process::exit(0) // a success, as in Python
    /// })?;
    /// assert_eq!(child.wait()?, Some(0));
    /// assert_eq!(child.exitcode(), Some(0));
    /// let a = child.join()?;
    /// assert_eq!(a.as_slice().unwrap(), &[1, 1]);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn exitcode(&self) -> Option<i32> {
        self.process.exitcode()
    }

    /// As [`Process::wait`]: waits for the child and returns its exit code; the value
    /// stays held until [`join`](ProcessWith::join).
    ///
    /// # Errors
    /// An OS error when waiting fails.
    pub fn wait(&mut self) -> Result<Option<i32>> {
        self.process.wait()
    }

    /// As [`Process::kill`].
    ///
    /// # Errors
    /// An OS error from the signal call.
    pub fn kill(&self) -> Result<()> {
        self.process.kill()
    }

    /// As [`Process::signal`].
    ///
    /// # Errors
    /// An OS error from the signal call.
    pub fn signal(&self, sig: i32) -> Result<()> {
        self.process.signal(sig)
    }
}

/// The error of [`Process::spawn_with`]: why no child was forked, with the value that was
/// to be handed over, so that a failure does not drop it (dropping a creator's array
/// unlinks its segment). Converts into [`Error`], so `?` works in functions returning
/// [`Result`].
///
/// # Examples
/// ```
/// use ndshm::{CreateOptions, ErrorKind, Process, SharedNdArray};
/// let a = SharedNdArray::<u8, ndarray::Ix1>::zeros(CreateOptions::unique(), 2)?;
/// // A second thread makes the fork refuse (without the opt-in), and the array comes back.
/// let t = std::thread::spawn(|| std::thread::park_timeout(std::time::Duration::from_secs(5)));
/// match Process::spawn_with(a, |a| a.view_mut().fill(1)) {
///     Err(e) => {
///         assert_eq!(e.error().kind(), ErrorKind::ForkWithThreads);
///         let a = e.into_inner(); // still the creator's handle: dropping it unlinks
///         assert_eq!(a.as_slice().unwrap(), &[0, 0]);
///     }
///     Ok(child) => drop(child.join()?), // (a test harness opted in already)
/// }
/// t.thread().unpark();
/// t.join().unwrap();
/// # Ok::<(), ndshm::Error>(())
/// ```
pub struct SpawnWithError<A> {
    error: Error,
    value: A,
}

impl<A> SpawnWithError<A> {
    /// Why no child was forked.
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The value that was to be handed over.
    pub fn into_inner(self) -> A {
        self.value
    }

    /// The error and the value.
    pub fn into_parts(self) -> (Error, A) {
        (self.error, self.value)
    }
}

impl<A> From<SpawnWithError<A>> for Error {
    fn from(e: SpawnWithError<A>) -> Error {
        e.error
    }
}

impl<A> fmt::Debug for SpawnWithError<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpawnWithError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<A> fmt::Display for SpawnWithError<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl<A> std::error::Error for SpawnWithError<A> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Forks processes that may borrow from the caller's stack, like `std::thread::scope`:
/// every child spawned on the [`Scope`] is joined before `scope` returns, so a child may
/// capture `&SharedValue` or `&Queue`, or be handed `&mut SharedNdArray` with
/// [`Scope::spawn_with`], and the borrow checker keeps the parent off them until then.
/// Returns what `f` returns.
///
/// A child works on a copy of the parent's address space: writes through sync and ipc
/// objects and to arrays it was handed are seen by everyone; writes to ordinary memory
/// stay in the child. Array handles it merely captures belong to the parent and refuse
/// or panic in the child (see [`Process`]).
///
/// # Panics
/// As `std::thread::scope`: when a child that was not joined explicitly (with
/// [`ScopedChild::join`], which returns its outcome) failed — panicked, returned an
/// error, exited with a non-zero code or died of a signal — `scope` panics after every
/// child has been joined, naming the child and its failure. Join the children whose
/// failure you want to handle. A panic of `f` itself is resumed after every child has been
/// joined.
///
/// # Examples
/// ```
/// use ndshm::{CreateOptions, SharedNdArray, SharedValue};
/// let mut a = SharedNdArray::<i64, ndarray::Ix1>::zeros(CreateOptions::unique(), 4)?;
/// let counter = SharedValue::<u64>::new(0)?;
/// let n = ndshm::scope(|s| -> ndshm::Result<u64> {
///     s.spawn_with(&mut a, |a| a.view_mut().fill(7))?; // joined when the scope ends
///     let child = s.spawn(|| { counter.fetch_add(1); })?;
///     child.join()?; // joined explicitly: its outcome comes back here
///     Ok(counter.load())
/// })?;
/// assert_eq!(n, 1);
/// assert_eq!(a.view().sum(), 28);
/// # Ok::<(), ndshm::Error>(())
/// ```
pub fn scope<'env, T>(f: impl FnOnce(&Scope<'env>) -> T) -> T {
    let scope = Scope {
        children: RefCell::new(Vec::new()),
        _env: PhantomData,
    };
    let out = catch_unwind(AssertUnwindSafe(|| f(&scope)));
    let failures = scope.join_all();
    match out {
        Err(payload) => std::panic::resume_unwind(payload),
        Ok(value) => {
            if !failures.is_empty() {
                panic!(
                    "ndshm::scope: {} child process(es) that were not joined failed: {} \
                     (join a child with ScopedChild::join to handle its failure)",
                    failures.len(),
                    failures.join("; ")
                );
            }
            value
        }
    }
}

/// Spawns borrowing children; see [`scope`].
///
/// # Examples
/// ```
/// let total = ndshm::SharedValue::<u32>::new(0)?;
/// ndshm::scope(|s| -> ndshm::Result<()> {
///     for _ in 0..2 {
///         s.spawn(|| { total.fetch_add(1); })?;
///     }
///     Ok(())
/// })?;
/// assert_eq!(total.load(), 2);
/// # Ok::<(), ndshm::Error>(())
/// ```
pub struct Scope<'env> {
    /// Every child spawned, by spawn order; `None` once joined explicitly.
    children: RefCell<Vec<Option<Process>>>,
    _env: PhantomData<&'env mut &'env ()>,
}

impl<'env> Scope<'env> {
    /// Forks a child that runs `f`, which may borrow anything that outlives the scope.
    /// Array handles `f` captures stay the parent's (they refuse or panic in the child):
    /// hand an array over with [`Scope::spawn_with`].
    ///
    /// # Errors
    /// [`ErrorKind::ForkWithThreads`] as for [`Process::spawn`]; an OS error when `fork`
    /// fails.
    ///
    /// # Examples
    /// ```
    /// let total = ndshm::SharedValue::<u64>::new(0)?;
    /// let t = &total;
    /// ndshm::scope(|s| -> ndshm::Result<()> {
    ///     let children = (1..=3)
    ///         .map(|i| s.spawn(move || { t.fetch_add(i); }))
    ///         .collect::<ndshm::Result<Vec<_>>>()?;
    ///     children.into_iter().try_for_each(|c| c.join())
    /// })?;
    /// assert_eq!(total.load(), 6);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn spawn<F, R>(&self, f: F) -> Result<ScopedChild<'_, 'env>>
    where
        F: FnOnce() -> R + 'env,
        R: ChildResult,
    {
        check_fork_allowed("Scope::spawn")?;
        Ok(self.push(Process::spawn_unchecked(f)?))
    }

    /// Forks a child that runs `f` on `array`, re-bound to the child (it maps the segment
    /// itself); the scope joins the child before the borrow of `array` ends, so the parent
    /// cannot use the array meanwhile.
    ///
    /// # Errors
    /// As [`Scope::spawn`]. A failure to re-bind the array in the child is the child's
    /// failure ([`ErrorKind::WorkerFailed`] from [`ScopedChild::join`]).
    ///
    /// # Examples
    /// ```
    /// use ndshm::{CreateOptions, SharedNdArray};
    /// let mut a = SharedNdArray::<u8, ndarray::Ix1>::zeros(CreateOptions::unique(), 3)?;
    /// ndshm::scope(|s| s.spawn_with(&mut a, |a| a.view_mut().fill(1))?.join())?;
    /// assert_eq!(a.as_slice().unwrap(), &[1, 1, 1]);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn spawn_with<T, D, M, F, R>(
        &self,
        array: &'env mut SharedNdArray<T, D, M>,
        f: F,
    ) -> Result<ScopedChild<'_, 'env>>
    where
        T: Element,
        D: Dimension,
        M: AccessMode,
        F: FnOnce(&mut SharedNdArray<T, D, M>) -> R + 'env,
        R: ChildResult,
    {
        check_fork_allowed("Scope::spawn_with")?;
        Ok(self.push(Process::spawn_unchecked(|| with_adopted(array, f))?))
    }

    fn push(&self, child: Process) -> ScopedChild<'_, 'env> {
        let pid = child.pid();
        let mut children = self.children.borrow_mut();
        children.push(Some(child));
        ScopedChild {
            scope: self,
            index: children.len() - 1,
            pid,
        }
    }

    /// Joins every child not joined yet; returns the failures ("process 12 panicked: ...").
    fn join_all(&self) -> Vec<String> {
        let mut failures = Vec::new();
        let children: Vec<Process> = self.children.borrow_mut().drain(..).flatten().collect();
        for child in children {
            if let Err(e) = child.join() {
                failures.push(e.message().to_string());
            }
        }
        failures
    }
}

impl Drop for Scope<'_> {
    fn drop(&mut self) {
        // Reached with children only when joining panicked: reap them all before the
        // borrows they hold end.
        let _ = self.join_all();
    }
}

impl fmt::Debug for Scope<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let running = self.children.borrow().iter().flatten().count();
        f.debug_struct("Scope")
            .field("unjoined_children", &running)
            .finish()
    }
}

/// A child forked by [`Scope::spawn`] or [`Scope::spawn_with`]: [`join`](Self::join) waits
/// for it and returns its outcome, as `std::thread::ScopedJoinHandle::join` does. A child
/// not joined explicitly is joined when the scope ends (and its failure makes [`scope`]
/// panic).
///
/// # Examples
/// ```
/// ndshm::scope(|s| -> ndshm::Result<()> {
///     let child = s.spawn(|| {})?;
///     assert!(child.pid() > 0);
///     while !child.is_finished()? {
///         std::thread::yield_now();
///     }
///     child.join()
/// })?;
/// # Ok::<(), ndshm::Error>(())
/// ```
pub struct ScopedChild<'scope, 'env> {
    scope: &'scope Scope<'env>,
    index: usize,
    pid: i32,
}

impl ScopedChild<'_, '_> {
    /// The child's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Waits for the child to end and returns its outcome.
    ///
    /// # Errors
    /// As [`Process::join`]: [`ErrorKind::WorkerFailed`] naming the cause when the child
    /// panicked, returned an error, exited with a non-zero code or died of a signal.
    ///
    /// # Examples
    /// ```
    /// ndshm::scope(|s| {
    ///     let child = s.spawn(|| -> Result<(), String> { Err("bad input".into()) }).unwrap();
    ///     let err = child.join().unwrap_err();
    ///     assert_eq!(err.kind(), ndshm::ErrorKind::WorkerFailed);
    ///     assert!(err.to_string().contains("bad input"));
    /// });
    /// ```
    pub fn join(self) -> Result<()> {
        let child = self.scope.children.borrow_mut()[self.index].take();
        match child {
            Some(child) => child.join(),
            // Unreachable: only this handle takes its child.
            None => Ok(()),
        }
    }

    /// Whether the child has ended (reaping it if so), without blocking.
    ///
    /// # Errors
    /// An OS error when waiting fails.
    pub fn is_finished(&self) -> Result<bool> {
        match self.scope.children.borrow_mut()[self.index].as_mut() {
            Some(child) => child.is_finished(),
            None => Ok(true),
        }
    }

    /// As [`Process::wait`]: waits for the child to end and returns its exit code; `join`
    /// afterwards still returns its outcome.
    ///
    /// # Errors
    /// An OS error when waiting fails.
    ///
    /// # Examples
    /// ```
    /// ndshm::scope(|s| -> ndshm::Result<()> {
    ///     let child = s.spawn::<_, ()>(|| std::process::exit(0))?;
    ///     assert_eq!(child.wait()?, Some(0));
    ///     assert_eq!(child.exitcode(), Some(0));
    ///     child.join() // exit(0) is a success, as in Python
    /// })?;
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn wait(&self) -> Result<Option<i32>> {
        match self.scope.children.borrow_mut()[self.index].as_mut() {
            Some(child) => child.wait(),
            None => Ok(None),
        }
    }

    /// As [`Process::exitcode`]: the exit code (`-N` for signal `N`) once the child has
    /// ended, `None` while it runs.
    pub fn exitcode(&self) -> Option<i32> {
        self.scope.children.borrow()[self.index]
            .as_ref()
            .and_then(Process::exitcode)
    }
}

impl fmt::Debug for ScopedChild<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopedChild")
            .field("pid", &self.pid)
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
///
/// # Examples
/// ```
/// let child = ndshm::Process::spawn(|| ndshm::write_stdout("hello from the child\n"))?;
/// child.join()?;
/// # Ok::<(), ndshm::Error>(())
/// ```
pub fn write_stdout(text: &str) -> Result<()> {
    crate::sys::io::write_stdout(text.as_bytes()).map_err(|e| Error::errno("write to stdout", e))
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
