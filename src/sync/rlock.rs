//! [`RLock`], a re-entrant robust lock (Python's `multiprocessing.RLock`): the robust
//! mutex of [`Lock`](crate::Lock), plus a hold count in shared memory.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::segment::region::Region;
use crate::segment::trailer::SegmentKind;
use crate::segment::CreateOptions;
use crate::sync::raw_lock::lock_error;
use crate::sync::waiting::deadline_after;
use crate::sys::mutex::{LockError, RobustMutex};
use crate::sys::proc;

/// Payload: the hold count (`u64`), written only by the holding thread.
const PAYLOAD: usize = 8;

/// A re-entrant, robust, process-shared lock: Python's `multiprocessing.RLock`, in a named
/// segment (attach by name from any process) or in anonymous shared memory (inherited by
/// forked children).
///
/// The thread that holds it may lock it again (each [`lock`](RLock::lock) gives a guard,
/// and the lock is released when the last of them is dropped); other threads and
/// processes wait. It rests on the same robust pthread mutex as [`Lock`](crate::Lock): when
/// the holding thread dies (`SIGKILL` included), whatever its hold count, the kernel hands
/// the lock to the next locker, whose guard reports
/// [`owner_died`](RLockGuard::owner_died).
///
/// Python's `release()` by a thread that does not hold the lock raises `RuntimeError`;
/// here only guards release, and a guard is `!Send`, so that mistake does not compile.
///
/// # Examples
/// ```
/// // Python: lock = multiprocessing.RLock(); with lock: with lock: ...
/// let lock = ndshm::RLock::new()?;
/// let outer = lock.lock();
/// let inner = lock.lock(); // the same thread: re-enters
/// drop(inner);
/// drop(outer); // released here
/// ndshm::Process::spawn(move || assert!(!lock.lock().owner_died()))?.join()?;
/// # Ok::<(), ndshm::Error>(())
/// ```
pub struct RLock {
    region: Region,
}

/// The raw re-entrant lock: a robust mutex and its hold count (an `RLock`'s, or the own
/// lock of a `Condition`).
#[derive(Clone, Copy)]
pub(crate) struct RawRLock<'a> {
    pub(crate) mutex: &'a RobustMutex,
    pub(crate) count: &'a AtomicU64,
}

impl<'a> RawRLock<'a> {
    /// Locks (or re-enters), waiting until `deadline`; `Ok(None)` when it passed.
    pub(crate) fn acquire(
        self,
        deadline: Option<Instant>,
        what: &str,
    ) -> Result<Option<RLockGuard<'a>>> {
        match self.mutex.lock(deadline) {
            Ok(Some(died)) => {
                self.count.store(1, Ordering::Relaxed);
                Ok(Some(self.guard(died)))
            }
            Ok(None) => Ok(None),
            Err(LockError::WouldDeadlock) => self.reenter().map(Some),
            Err(e) => Err(lock_error(e, what)),
        }
    }

    /// Locks (or re-enters) without waiting; `Ok(None)` when another live thread holds it.
    pub(crate) fn try_acquire(self, what: &str) -> Result<Option<RLockGuard<'a>>> {
        match self.mutex.try_lock() {
            Ok(Some(died)) => {
                self.count.store(1, Ordering::Relaxed);
                Ok(Some(self.guard(died)))
            }
            Ok(None) => Ok(None),
            Err(LockError::WouldDeadlock) => self.reenter().map(Some),
            Err(e) => Err(lock_error(e, what)),
        }
    }

    /// One more hold by the thread that holds the lock.
    fn reenter(self) -> Result<RLockGuard<'a>> {
        let c = self.count.load(Ordering::Relaxed);
        if c == u64::MAX {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "the RLock is held 2^64 - 1 times by this thread; release some holds first",
            ));
        }
        self.count.store(c + 1, Ordering::Relaxed);
        Ok(self.guard(false))
    }

    fn guard(self, owner_died: bool) -> RLockGuard<'a> {
        RLockGuard {
            raw: self,
            owner_died,
            token: proc::process_token(),
            _not_send: PhantomData,
        }
    }

    /// Releases every hold of the calling thread at once, for a condition wait; returns
    /// the hold count to restore (the guard `g` is consumed without releasing again).
    pub(crate) fn release_save(g: RLockGuard<'a>) -> u64 {
        let raw = g.raw;
        std::mem::forget(g); // its release is this one, of every hold
        let saved = raw.count.swap(0, Ordering::Relaxed);
        raw.mutex.unlock_if_held_by_this_thread();
        saved
    }

    /// Takes the lock again after [`release_save`](Self::release_save), restoring the hold
    /// count; the guard stands for the hold the consumed guard stood for.
    pub(crate) fn acquire_restore(self, saved: u64, what: &str) -> Result<RLockGuard<'a>> {
        match self.mutex.lock(None) {
            Ok(Some(died)) => {
                self.count
                    .store(if died { 1 } else { saved.max(1) }, Ordering::Relaxed);
                Ok(self.guard(died))
            }
            Ok(None) => unreachable!("no deadline, so lock() cannot time out"),
            Err(e) => Err(lock_error(e, what)),
        }
    }
}

impl RLock {
    /// An anonymous re-entrant lock, shared with the children forked after it was made.
    ///
    /// # Errors
    /// An OS error when the shared mapping fails.
    ///
    /// # Examples
    /// ```
    /// let lock = ndshm::RLock::new()?;
    /// assert_eq!(lock.name(), None);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn new() -> Result<RLock> {
        Ok(RLock {
            region: Region::anonymous(PAYLOAD, |_| Ok(()))?,
        })
    }

    /// Creates re-entrant lock segment `segment`; other processes [`open`](RLock::open) it.
    ///
    /// # Errors
    /// The errors of segment creation ([`ErrorKind::AlreadyExists`],
    /// [`ErrorKind::InvalidName`], …).
    ///
    /// # Examples
    /// ```
    /// use ndshm::{CreateOptions, RLock};
    /// let lock = RLock::create(CreateOptions::unique())?; // removed when dropped
    /// let same = RLock::open(lock.name().unwrap())?;
    /// let _g = same.lock();
    /// assert!(lock.is_locked());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn create(segment: impl Into<CreateOptions>) -> Result<RLock> {
        Ok(RLock {
            region: Region::create(&segment.into(), SegmentKind::RLock, PAYLOAD, |_| Ok(()))?,
        })
    }

    /// Attaches re-entrant lock segment `name` (any number of times, in any process).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`], [`ErrorKind::KindMismatch`] when `name` is not an `RLock`.
    ///
    /// # Examples
    /// ```
    /// # let name = format!("doc-rlock-open-{}", std::process::id());
    /// let lock = ndshm::RLock::create(&name)?;
    /// let same = ndshm::RLock::open(&name)?;
    /// drop(same.lock());
    /// assert!(ndshm::RLock::open("no-such-rlock-anywhere").is_err());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn open(name: &str) -> Result<RLock> {
        Ok(RLock {
            region: Region::open(name, SegmentKind::RLock, PAYLOAD)?,
        })
    }

    pub(crate) fn raw(&self) -> RawRLock<'_> {
        RawRLock {
            mutex: self.region.lock(),
            count: self.region.payload().u64(0),
        }
    }

    /// Locks, or re-enters when this thread holds the lock already; waits as long as
    /// another live thread (of any process) holds it.
    ///
    /// # Panics
    /// When the lock is broken beyond repair by a foreign program (see
    /// [`Lock`](crate::Lock)), or held `u64::MAX` times.
    ///
    /// # Examples
    /// ```
    /// let lock = ndshm::RLock::new()?;
    /// let a = lock.lock();
    /// let b = lock.lock();
    /// assert!(!a.owner_died() && !b.owner_died());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn lock(&self) -> RLockGuard<'_> {
        match self.raw().acquire(None, "the RLock") {
            Ok(Some(g)) => g,
            Ok(None) => unreachable!("no deadline, so lock() cannot time out"),
            Err(e) => panic!("{e}"),
        }
    }

    /// Locks or re-enters without waiting: `None` when another live thread holds it.
    ///
    /// # Panics
    /// As [`lock`](RLock::lock).
    ///
    /// # Examples
    /// ```
    /// let lock = ndshm::RLock::new()?;
    /// let g = lock.try_lock().expect("free");
    /// assert!(lock.try_lock().is_some()); // this thread holds it: re-enters
    /// drop(g);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn try_lock(&self) -> Option<RLockGuard<'_>> {
        self.raw()
            .try_acquire("the RLock")
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Locks or re-enters, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`] when another live thread held it all that time; the errors
    /// of a broken lock.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let lock = ndshm::RLock::new()?;
    /// let _g = lock.lock_timeout(Duration::from_secs(1))?;
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Result<RLockGuard<'_>> {
        self.raw()
            .acquire(deadline_after(timeout), "the RLock")?
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "the RLock stayed locked by another live thread for {timeout:?}; wait \
                         longer or find out why it holds the lock so long"
                    ),
                )
            })
    }

    /// Whether some live thread holds the lock now (a snapshot, for diagnostics).
    ///
    /// # Examples
    /// ```
    /// let lock = ndshm::RLock::new()?;
    /// assert!(!lock.is_locked());
    /// let _g = lock.lock();
    /// assert!(lock.is_locked());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn is_locked(&self) -> bool {
        self.region.lock().is_locked()
    }

    /// How many times the lock was taken over from a dead holder since it was created.
    ///
    /// # Examples
    /// ```
    /// let lock = ndshm::RLock::new()?;
    /// assert_eq!(lock.recoveries(), 0);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn recoveries(&self) -> u64 {
        self.region.lock().recoveries()
    }

    /// The segment name, or `None` for an anonymous lock.
    ///
    /// # Examples
    /// ```
    /// let lock = ndshm::RLock::create(ndshm::CreateOptions::unique_with_prefix("doc-rlock"))?;
    /// assert!(lock.name().unwrap().starts_with("doc-rlock"));
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn name(&self) -> Option<&str> {
        self.region.name()
    }
}

impl fmt::Debug for RLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLock")
            .field("name", &self.name())
            .field("locked", &self.is_locked())
            .finish()
    }
}

/// One hold of an [`RLock`] (or of a [`Condition`](crate::Condition)'s own lock); the lock
/// is released when the last hold of its thread is dropped.
///
/// `!Send`: the holding thread owns the robust mutex, and only it may release. A copy
/// inherited through `fork` releases nothing.
///
/// ```compile_fail
/// let lock = ndshm::RLock::new()?;
/// let guard = lock.lock();
/// std::thread::scope(|s| {
///     s.spawn(move || drop(guard)); // error: `RLockGuard` cannot be sent between threads
/// });
/// # Ok::<(), ndshm::Error>(())
/// ```
///
/// # Examples
/// ```
/// let lock = ndshm::RLock::new()?;
/// let g = lock.lock();
/// assert!(!g.owner_died());
/// # Ok::<(), ndshm::Error>(())
/// ```
#[must_use = "the hold is released as soon as the guard is dropped"]
pub struct RLockGuard<'a> {
    raw: RawRLock<'a>,
    owner_died: bool,
    token: u64,
    _not_send: PhantomData<std::sync::MutexGuard<'static, ()>>,
}

impl<'a> RLockGuard<'a> {
    /// Whether the previous holder died holding the lock (what it protects may be
    /// half-updated).
    ///
    /// # Examples
    /// ```
    /// use ndshm::{Process, RLock};
    /// # let name = format!("doc-rlockguard-{}", std::process::id());
    /// let lock = RLock::create(&name)?;
    /// Process::spawn(move || -> ndshm::Result<()> {
    ///     let l = RLock::open(&name)?;
    ///     std::mem::forget(l.lock());
    ///     std::mem::forget(l.lock()); // dies holding it twice
    ///     Ok(())
    /// })?
    /// .join()?;
    /// assert!(lock.lock().owner_died());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn owner_died(&self) -> bool {
        self.owner_died
    }

    pub(crate) fn raw(&self) -> RawRLock<'a> {
        self.raw
    }
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        if proc::process_token() != self.token {
            return; // a copy inherited through fork: the parent's thread holds the lock
        }
        let c = self.raw.count.load(Ordering::Relaxed);
        if c > 1 {
            self.raw.count.store(c - 1, Ordering::Relaxed);
        } else {
            self.raw.count.store(0, Ordering::Relaxed);
            self.raw.mutex.unlock_if_held_by_this_thread();
        }
    }
}

impl fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLockGuard")
            .field("owner_died", &self.owner_died)
            .field("holds", &self.raw.count.load(Ordering::Relaxed))
            .finish()
    }
}
