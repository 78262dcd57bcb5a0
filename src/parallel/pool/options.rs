//! Deadlines and cancellation of pool jobs: [`JobOptions`] (plain data) and
//! [`CancelToken`] (a flag that a thread or a signal handler raises, waking the caller that
//! waits for the job), and what one job makes of them ([`Limits`]).

use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::sys::{futex, signal};

/// How a pool job may end early: a deadline, a timeout (a deadline that many seconds
/// after each job starts), a cancel token. Plain data with builder-style setters; give it
/// to [`WorkerPool::set_job_options`](super::WorkerPool::set_job_options), which applies it
/// to every later job of the pool (`map`, `map_into`, `map_reduce`, jobs submitted in a
/// [`scope`](super::WorkerPool::scope)).
///
/// A job with a deadline, a timeout or a token **runs no chunk in the caller** (the caller
/// cannot be killed for it): it needs a pool with at least one worker. When the deadline
/// passes or the token is cancelled, the claiming of chunks stops, every worker still
/// inside a chunk of the job is killed (`SIGKILL`), the call waits until the pool's fork
/// server has reaped those workers (no executor can still be inside a chunk), replaces
/// them, and returns [`ErrorKind::Timeout`] or [`ErrorKind::Cancelled`] naming the chunks
/// that did not finish. Chunks that finished did write their part of the arrays; the
/// others may have written some of theirs.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use ndshm::{ChunkPlan, CreateOptions, ErrorKind, JobOptions, SharedNdArray, WorkerPool};
/// let mut pool = WorkerPool::new(2)?;
/// pool.set_job_options(JobOptions::new().timeout(Duration::from_millis(200)))?;
/// let mut a = SharedNdArray::<u8, ndarray::Ix1>::zeros(CreateOptions::unique(), 4)?;
/// let plan = ChunkPlan::balanced(4, 2)?;
/// let err = pool
///     .map(&mut a, &plan, (), |c, _, _: &()| {
///         while c.index == 1 {
///             std::thread::sleep(Duration::from_secs(1)); // never ends
///         }
///     })
///     .unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Timeout);
/// assert!(err.message().contains("chunk 1"), "{err}");
/// // The stuck worker was killed and replaced: the pool runs the next job.
/// pool.map(&mut a, &plan, (), |_, mut x, _: &()| x.fill(7))?;
/// assert_eq!(a.view().sum(), 28);
/// // A timeout of zero is refused.
/// let zero = JobOptions::new().timeout(Duration::ZERO);
/// assert_eq!(pool.set_job_options(zero).unwrap_err().kind(), ErrorKind::InvalidArgument);
/// # Ok::<(), ndshm::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct JobOptions {
    /// The job must be finished at this instant (one instant for every later job: once it
    /// has passed, every job returns [`ErrorKind::Timeout`] without running).
    pub deadline: Option<Instant>,
    /// Each job must be finished this long after it starts (with `deadline` too: whichever
    /// comes first). Zero is refused.
    pub timeout: Option<Duration>,
    /// Cancelling this token stops the running job and makes the next ones return
    /// [`ErrorKind::Cancelled`] until it is [`reset`](CancelToken::reset).
    pub cancel: Option<CancelToken>,
}

impl JobOptions {
    /// No deadline, no timeout, no token: jobs as without options.
    pub const NONE: JobOptions = JobOptions {
        deadline: None,
        timeout: None,
        cancel: None,
    };

    /// Options with nothing set.
    pub fn new() -> JobOptions {
        JobOptions::NONE
    }

    /// Sets the deadline.
    #[must_use]
    pub fn deadline(mut self, at: Instant) -> JobOptions {
        self.deadline = Some(at);
        self
    }

    /// Sets the per-job timeout.
    #[must_use]
    pub fn timeout(mut self, after: Duration) -> JobOptions {
        self.timeout = Some(after);
        self
    }

    /// Sets the cancel token (a clone of `token`: both cancel the same jobs).
    #[must_use]
    pub fn cancel_token(mut self, token: &CancelToken) -> JobOptions {
        self.cancel = Some(token.clone());
        self
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.deadline.is_none() && self.timeout.is_none() && self.cancel.is_none()
    }

    /// `Err(InvalidArgument)` for a timeout of zero.
    pub(super) fn check(&self) -> Result<()> {
        if self.timeout == Some(Duration::ZERO) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "a job timeout of zero would stop every job before it starts: give a \
                 positive timeout, or no timeout (JobOptions::NONE)",
            ));
        }
        Ok(())
    }
}

/// The shared state of a token.
#[derive(Debug)]
struct TokenState {
    /// 1 once cancelled (until reset).
    cancelled: AtomicU32,
    /// The futex word the caller waiting for a job with this token sleeps on (null when
    /// none waits): `cancel` wakes it.
    waker: AtomicPtr<AtomicU32>,
}

impl TokenState {
    /// Async-signal-safe: an atomic store, an atomic load and one `FUTEX_WAKE`.
    fn cancel(&self) {
        self.cancelled.store(1, Ordering::SeqCst);
        let word = self.waker.load(Ordering::SeqCst);
        if !word.is_null() {
            futex::wake_addr(word, i32::MAX);
        }
    }
}

/// A flag that cancels pool jobs: [`cancel`](Self::cancel) from another thread, from a
/// signal handler, or on Ctrl-C ([`cancel_on_signal`](Self::cancel_on_signal)).
///
/// Give it to the jobs with [`JobOptions::cancel_token`]. `cancel` stops the running job
/// as a passed deadline does (its stuck workers are killed, reaped and replaced), and the
/// job returns [`ErrorKind::Cancelled`] naming the chunks that did not finish.
///
/// **A token stays cancelled until [`reset`](Self::reset)**: a job started while it is
/// cancelled returns `Cancelled` at once, running nothing (so a Ctrl-C between two jobs
/// is not lost). Clones share the flag. `cancel` is async-signal-safe: an atomic store and
/// a futex wake of the waiting caller, no allocation, no lock. A token is a value of this
/// process: a forked child's clone is its own copy, whose `cancel` this process does not
/// see.
///
/// The waiting caller is woken at once (a futex wake on the word it sleeps on); when two
/// pools wait on one token at the same time, the second notices within 10 ms, and so does
/// a caller that was just going to sleep when the token was cancelled.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use ndshm::{CancelToken, ChunkPlan, CreateOptions, ErrorKind, JobOptions, SharedNdArray, WorkerPool};
/// let mut pool = WorkerPool::new(2)?;
/// let token = CancelToken::new();
/// pool.set_job_options(JobOptions::new().cancel_token(&token))?;
/// let mut a = SharedNdArray::<u8, ndarray::Ix1>::zeros(CreateOptions::unique(), 2)?;
/// let plan = ChunkPlan::balanced(2, 1)?;
/// let canceller = {
///     let token = token.clone();
///     std::thread::spawn(move || {
///         std::thread::sleep(Duration::from_millis(50));
///         token.cancel();
///     })
/// };
/// let err = pool
///     .map(&mut a, &plan, (), |_, _, _: &()| -> () {
///         loop {
///             std::thread::sleep(Duration::from_secs(1));
///         }
///     })
///     .unwrap_err();
/// canceller.join().unwrap();
/// assert_eq!(err.kind(), ErrorKind::Cancelled);
/// token.reset(); // jobs run again
/// pool.map(&mut a, &plan, (), |_, mut x, _: &()| x.fill(1))?;
/// # Ok::<(), ndshm::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct CancelToken {
    state: Arc<TokenState>,
}

impl Default for CancelToken {
    fn default() -> CancelToken {
        CancelToken::new()
    }
}

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> CancelToken {
        CancelToken {
            state: Arc::new(TokenState {
                cancelled: AtomicU32::new(0),
                waker: AtomicPtr::new(ptr::null_mut()),
            }),
        }
    }

    /// Cancels: the running job with this token stops, and later ones do not start, until
    /// [`reset`](Self::reset). Async-signal-safe (an atomic store and a futex wake).
    pub fn cancel(&self) {
        self.state.cancel();
    }

    /// Whether the token is cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.state.cancelled.load(Ordering::SeqCst) != 0
    }

    /// Makes the token usable again: jobs with it run.
    pub fn reset(&self) {
        self.state.cancelled.store(0, Ordering::SeqCst);
    }

    /// Cancels this token when signal `sig` arrives (`libc::SIGINT`: Ctrl-C), instead of
    /// the signal's previous action, while the returned guard lives. A job running with the
    /// token then returns [`ErrorKind::Cancelled`] and the program goes on (it may look at
    /// [`is_cancelled`](Self::is_cancelled) between jobs to stop). Dropping the guard
    /// restores the previous disposition — [`SignalCleanup`](crate::SignalCleanup)'s
    /// stop-reap-re-raise, if it was installed before. The last installation for a signal
    /// wins; drop guards in the reverse order of their installation (a `SignalCleanup`
    /// dropped first would see its handler restored by this guard's drop).
    ///
    /// The handler only loads a pointer and calls [`cancel`](Self::cancel); the token's
    /// state it points to is kept for the rest of the process (a few bytes per call), since
    /// a handler may still be running on another thread when the guard is dropped.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for a signal other than `SIGINT`, `SIGTERM`,
    /// `SIGHUP`, `SIGQUIT`, `SIGUSR1`, `SIGUSR2`, `SIGALRM`; an OS error from `sigaction`.
    ///
    /// # Examples
    /// ```
    /// let token = ndshm::CancelToken::new();
    /// let guard = token.cancel_on_signal(libc::SIGUSR1)?;
    /// // Send the signal to this process.
    /// std::process::Command::new("kill")
    ///     .args(["-USR1", &std::process::id().to_string()])
    ///     .status()?;
    /// let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    /// while !token.is_cancelled() && std::time::Instant::now() < deadline {
    ///     std::thread::yield_now();
    /// }
    /// assert!(token.is_cancelled());
    /// drop(guard); // SIGUSR1's previous disposition is back
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cancel_on_signal(&self, sig: i32) -> Result<SignalCancel> {
        const ALLOWED: [i32; 7] = [
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGALRM,
        ];
        if !ALLOWED.contains(&sig) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "cannot cancel on signal {sig}: use SIGINT (Ctrl-C), SIGTERM, SIGHUP, \
                     SIGQUIT, SIGUSR1, SIGUSR2 or SIGALRM"
                ),
            ));
        }
        let _held = INSTALLING.lock().unwrap_or_else(|p| p.into_inner());
        // Kept for the rest of the process: a handler may hold the pointer at any time.
        let state = Arc::into_raw(Arc::clone(&self.state)).cast_mut();
        let previous = SIGNAL_TOKENS[sig as usize].swap(state, Ordering::SeqCst);
        // `on_cancel_signal` is async-signal-safe (see its doc), as `install_handler`
        // requires.
        match signal::install_handler(sig, on_cancel_signal, &[sig]) {
            Ok(old) => Ok(SignalCancel {
                sig,
                old: Some(old),
                previous: previous as usize,
            }),
            Err(e) => {
                SIGNAL_TOKENS[sig as usize].store(previous, Ordering::SeqCst);
                Err(Error::os(
                    format!("cannot install a cancel handler for signal {sig}"),
                    e,
                ))
            }
        }
    }

    /// Registers `word` (the futex word the caller sleeps on) to be woken by `cancel`;
    /// `false` when another caller is registered.
    pub(super) fn register(&self, word: &AtomicU32) -> bool {
        let p = ptr::from_ref(word).cast_mut();
        self.state
            .waker
            .compare_exchange(ptr::null_mut(), p, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Undoes [`register`](Self::register).
    pub(super) fn unregister(&self, word: &AtomicU32) {
        let p = ptr::from_ref(word).cast_mut();
        let _ = self.state.waker.compare_exchange(
            p,
            ptr::null_mut(),
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }
}

/// Serialises `cancel_on_signal` and the guards' drops.
static INSTALLING: Mutex<()> = Mutex::new(());

/// The token each signal cancels (null: none). Entries point to a `TokenState` leaked by
/// `cancel_on_signal`, never freed.
static SIGNAL_TOKENS: [AtomicPtr<TokenState>; 65] = [const { AtomicPtr::new(ptr::null_mut()) }; 65];

/// The cancel handler: async-signal-safe only (an atomic load, then [`TokenState::cancel`]:
/// an atomic store, an atomic load, `FUTEX_WAKE`); no allocation, no lock.
pub(crate) extern "C" fn on_cancel_signal(sig: libc::c_int) {
    let Some(slot) = usize::try_from(sig).ok().and_then(|s| SIGNAL_TOKENS.get(s)) else {
        return;
    };
    let state = slot.load(Ordering::SeqCst);
    if !state.is_null() {
        // SAFETY: non-null entries come from `Arc::into_raw` in `cancel_on_signal` and are
        // never released, so the state lives for the rest of the process.
        unsafe { &*state }.cancel();
    }
}

/// Cancels a [`CancelToken`] on a signal while it lives (see
/// [`CancelToken::cancel_on_signal`]); dropping it restores the previous disposition.
#[derive(Debug)]
#[must_use = "the signal cancels the token only while the guard lives"]
pub struct SignalCancel {
    sig: i32,
    old: Option<signal::SavedAction>,
    /// The entry before this installation (a `*mut TokenState` as an address).
    previous: usize,
}

impl Drop for SignalCancel {
    fn drop(&mut self) {
        let _held = INSTALLING.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = self.old.take() {
            let _ = signal::restore(self.sig, &old);
        }
        SIGNAL_TOKENS[self.sig as usize].store(self.previous as *mut TokenState, Ordering::SeqCst);
    }
}

/// What stops one job early, resolved when it is dispatched.
#[derive(Debug, Default)]
pub(super) struct Limits {
    pub(super) deadline: Option<Instant>,
    /// The pool's token and the job's own (either cancels).
    pub(super) tokens: [Option<CancelToken>; 2],
}

impl Limits {
    /// Nothing stops the job early.
    pub(super) const NONE: Limits = Limits {
        deadline: None,
        tokens: [None, None],
    };

    /// The limits of a job started `now` under the pool's options and the job's own.
    pub(super) fn of(pool: &JobOptions, job: &JobOptions, now: Instant) -> Limits {
        let deadline = [pool, job]
            .iter()
            .flat_map(|o| [o.deadline, o.timeout.map(|t| now + t)])
            .flatten()
            .min();
        Limits {
            deadline,
            tokens: [pool.cancel.clone(), job.cancel.clone()],
        }
    }

    /// Whether the job may end early (then the caller runs none of its chunks).
    pub(super) fn any(&self) -> bool {
        self.deadline.is_some() || self.tokens.iter().any(Option::is_some)
    }

    /// Whether a token is cancelled.
    pub(super) fn cancelled(&self) -> bool {
        self.tokens.iter().flatten().any(CancelToken::is_cancelled)
    }

    pub(super) fn register(&self, word: &AtomicU32) {
        for t in self.tokens.iter().flatten() {
            t.register(word);
        }
    }

    pub(super) fn unregister(&self, word: &AtomicU32) {
        for t in self.tokens.iter().flatten() {
            t.unregister(word);
        }
    }
}
