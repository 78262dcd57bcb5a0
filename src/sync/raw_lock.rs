//! The raw lock protocol every lock-like type shares: taking a [`RobustMutex`] (a region's
//! lock area) as a [`LockGuard`], blocking, without waiting or until a deadline, and turning
//! the mutex's outcomes into typed errors. [`Lock`](crate::Lock), [`SharedValue`]'s lock,
//! the array lock, the queues and the manager types all lock through here.
//!
//! The mutex itself is a glibc `pthread_mutex_t` (see [`crate::sys::mutex`]).
//!
//! [`SharedValue`]: crate::SharedValue

use std::fmt;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::sys::mutex::{Held, LockError, OwnerDied, RobustMutex};

/// How often a queue waiter checks whether a slot's holder still lives. (A lock needs
/// no such period: the kernel hands a dead holder's lock to the next waiter at once.)
pub(crate) const LIVENESS_PERIOD: Duration = Duration::from_millis(20);
/// How long a contended `lock` spins before it sleeps (waking a sleeping process costs
/// ~20 µs).
pub(crate) const SPIN: Duration = crate::sys::mutex::SPIN;

/// The error for a lock that could not be taken; `what` names it ("the lock", "the
/// value's lock"…).
pub(crate) fn lock_error(e: LockError, what: &str) -> Error {
    match e {
        LockError::WouldDeadlock => Error::new(
            ErrorKind::WouldDeadlock,
            format!(
                "{what} is already held by this thread, and ndshm locks are not reentrant \
                 (locking it again would wait for itself forever); drop the first guard first"
            ),
        ),
        LockError::NotRecoverable => Error::os(
            format!(
                "{what} can never be locked again: a holder released it after its previous \
                 owner died without marking it consistent (a program other than ndshm did \
                 that); recreate the segment"
            ),
            e.to_io(),
        ),
        LockError::NotInitialised => Error::new(
            ErrorKind::InvalidHeader,
            format!(
                "{what} was never initialised (the segment was not made by this version of \
                 ndshm, or its trailer was overwritten); recreate the segment"
            ),
        ),
        LockError::Os(_) => Error::os(format!("cannot lock {what}"), e.to_io()),
    }
}

/// Ways to take a region's lock as a [`LockGuard`] (the lock plumbing every container
/// shares).
impl RobustMutex {
    fn guard((held, owner_died): (Held<'_>, OwnerDied)) -> LockGuard<'_> {
        LockGuard { held, owner_died }
    }

    /// Locks, waiting as long as a live thread holds the lock.
    ///
    /// # Panics
    /// When this thread holds the lock already (not reentrant), or the lock is broken
    /// (see [`lock_error`]): a call without a `Result` cannot report either otherwise.
    pub(crate) fn lock_guard(&self) -> LockGuard<'_> {
        match self.hold(None) {
            Ok(Some(held)) => Self::guard(held),
            Ok(None) => unreachable!("no deadline, so lock() cannot time out"),
            Err(e) => panic!("{}", lock_error(e, "the lock")),
        }
    }

    /// Locks if no live thread holds the lock, without waiting. `None` also when this
    /// very thread holds it, as `std::sync::Mutex::try_lock` says `WouldBlock` then.
    ///
    /// # Panics
    /// When the lock is broken (see [`lock_error`]).
    pub(crate) fn try_lock_guard(&self) -> Option<LockGuard<'_>> {
        match self.try_hold() {
            Ok(got) => got.map(Self::guard),
            Err(LockError::WouldDeadlock) => None,
            Err(e) => panic!("{}", lock_error(e, "the lock")),
        }
    }

    /// [`lock_guard`](Self::lock_guard) for callers that return a `Result`: every failure
    /// is an error naming `what`.
    pub(crate) fn lock_guard_or_error(&self, what: &str) -> Result<LockGuard<'_>> {
        match self.hold(None) {
            Ok(Some(held)) => Ok(Self::guard(held)),
            Ok(None) => unreachable!("no deadline, so lock() cannot time out"),
            Err(e) => Err(lock_error(e, what)),
        }
    }

    /// [`try_lock_guard`](Self::try_lock_guard) for callers that return a `Result`.
    pub(crate) fn try_lock_guard_or_error(&self, what: &str) -> Result<Option<LockGuard<'_>>> {
        match self.try_hold() {
            Ok(got) => Ok(got.map(Self::guard)),
            Err(LockError::WouldDeadlock) => Ok(None),
            Err(e) => Err(lock_error(e, what)),
        }
    }

    /// Locks, waiting at most `timeout`; `what` names the lock in errors.
    pub(crate) fn lock_timeout_guard(
        &self,
        timeout: Duration,
        what: &str,
    ) -> Result<LockGuard<'_>> {
        let deadline = Instant::now().checked_add(timeout);
        match self.hold(deadline) {
            Ok(Some(held)) => Ok(Self::guard(held)),
            Ok(None) => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "{what} stayed locked by another live thread for {timeout:?}; wait longer \
                     or find out why it holds the lock so long"
                ),
            )),
            Err(e) => Err(lock_error(e, what)),
        }
    }
}

/// Held while a [`Lock`](crate::Lock) (or a value's, array's or container's own lock) is locked;
/// dropping it unlocks.
///
/// [`owner_died`](LockGuard::owner_died) says whether the previous owner died while
/// holding the lock (killed, crashed, `_exit` in the middle of an update, or a thread that
/// ended without unlocking): the data it protects may then be half-updated, and the new
/// owner should check or repair it. The lock itself is consistent and stays usable.
///
/// # Bound to its thread and its process
/// A robust mutex is owned by a *thread*: the kernel knows its holder through that
/// thread's robust list, and only that thread may unlock it. So a guard is `!Send`: it
/// cannot be moved to (or dropped on) another thread.
///
/// ```compile_fail
/// let lock = ndshm::Lock::new()?;
/// let guard = lock.lock();
/// std::thread::scope(|s| {
///     s.spawn(move || drop(guard)); // error: `LockGuard` cannot be sent between threads
/// });
/// # Ok::<(), ndshm::Error>(())
/// ```
///
/// A guard is also bound to the process that took the lock: it records the process's
/// token, and a copy inherited through `fork` (the child's copy of a guard its parent held
/// at the fork) releases nothing when dropped — the child's thread does not own the lock,
/// and the parent's thread still does, until the parent's guard goes.
///
/// Leaking a guard (`mem::forget`) leaves the lock held until the thread ends (then the
/// next locker sees [`owner_died`](LockGuard::owner_died)). It also keeps the lock's memory
/// mapped after its handle is dropped, for as long as the process lives: glibc links the
/// locks a thread holds into the thread's robust list *through the locks' own memory*, so
/// that memory must outlive the thread's hold.
///
/// # Examples
/// ```
/// use ndshm::{Lock, Process};
/// # let name = format!("doc-lockguard-{}", std::process::id());
/// let lock = Lock::create(&name)?;
/// // This child ends holding the lock (as if killed in its critical section).
/// Process::spawn(move || -> ndshm::Result<()> {
///     std::mem::forget(Lock::open(&name)?.lock());
///     Ok(())
/// })?
/// .join()?;
/// let guard = lock.lock(); // taken at once: the kernel saw the holder die
/// assert!(guard.owner_died()); // check or repair what the lock protects
/// # Ok::<(), ndshm::Error>(())
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a> {
    /// The hold on the mutex (`!Send`, unlocks on drop in the process that locked).
    held: Held<'a>,
    owner_died: bool,
}

impl<'a> LockGuard<'a> {
    /// The hold on the mutex and whether the previous owner died, for guards that bind
    /// the hold to the data it protects (`SharedStruct`'s).
    pub(crate) fn into_parts(self) -> (Held<'a>, bool) {
        (self.held, self.owner_died)
    }

    /// Whether the previous owner died while holding the lock, so that what it protects
    /// may be half-updated.
    ///
    /// # Examples
    /// ```
    /// let lock = ndshm::Lock::new()?;
    /// assert!(!lock.lock().owner_died());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn owner_died(&self) -> bool {
        self.owner_died
    }
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("owner_died", &self.owner_died)
            .finish()
    }
}
