//! The robust process-shared lock every region carries ([`RobustMutex`] in the trailer's
//! lock area), the guard that holds it ([`LockGuard`]), and [`Lock`], a standalone lock
//! segment (Python's `multiprocessing.Lock`).
//!
//! The lock itself is a glibc `pthread_mutex_t` (see [`crate::sys::mutex`]); this module
//! turns its outcomes into guards and typed errors.

use std::fmt;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::segment::region::Region;
use crate::segment::trailer::SegmentKind;
use crate::segment::CreateOptions;
use crate::sys::mutex::{LockError, OwnerDied, RobustMutex};
use crate::sys::proc;

/// How often a queue waiter checks whether a slot's holder still lives. (A [`Lock`] needs
/// no such period: the kernel hands a dead holder's lock to the next waiter at once.)
pub(crate) const LIVENESS_PERIOD: Duration = Duration::from_millis(20);
/// How long a contended `lock` spins before it sleeps (waking a sleeping process costs
/// ~20 µs).
pub(crate) const SPIN: Duration = crate::sys::mutex::SPIN;

/// The error for a lock that could not be taken; `what` names it ("the lock", "the
/// value's lock"…).
fn lock_error(e: LockError, what: &str) -> Error {
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
    fn guard(&self, owner_died: OwnerDied) -> LockGuard<'_> {
        LockGuard {
            mutex: self,
            token: proc::process_token(),
            owner_died,
            _not_send: PhantomData,
        }
    }

    /// Locks, waiting as long as a live thread holds the lock.
    ///
    /// # Panics
    /// When this thread holds the lock already (not reentrant), or the lock is broken
    /// (see [`lock_error`]): a call without a `Result` cannot report either otherwise.
    pub(crate) fn lock_guard(&self) -> LockGuard<'_> {
        match self.lock(None) {
            Ok(Some(died)) => self.guard(died),
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
        match self.try_lock() {
            Ok(got) => got.map(|died| self.guard(died)),
            Err(LockError::WouldDeadlock) => None,
            Err(e) => panic!("{}", lock_error(e, "the lock")),
        }
    }

    /// [`lock_guard`](Self::lock_guard) for callers that return a `Result`: every failure
    /// is an error naming `what`.
    pub(crate) fn lock_guard_or_error(&self, what: &str) -> Result<LockGuard<'_>> {
        match self.lock(None) {
            Ok(Some(died)) => Ok(self.guard(died)),
            Ok(None) => unreachable!("no deadline, so lock() cannot time out"),
            Err(e) => Err(lock_error(e, what)),
        }
    }

    /// [`try_lock_guard`](Self::try_lock_guard) for callers that return a `Result`.
    pub(crate) fn try_lock_guard_or_error(&self, what: &str) -> Result<Option<LockGuard<'_>>> {
        match self.try_lock() {
            Ok(got) => Ok(got.map(|died| self.guard(died))),
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
        match self.lock(deadline) {
            Ok(Some(died)) => Ok(self.guard(died)),
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

/// Held while a [`Lock`] (or a value's, array's or container's own lock) is locked;
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
///     s.spawn(move || drop(guard)); // error: `*const ()` cannot be sent between threads
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
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a> {
    mutex: &'a RobustMutex,
    /// The process that took the lock.
    token: u64,
    owner_died: bool,
    /// `!Send`: the locking thread must unlock.
    _not_send: PhantomData<*const ()>,
}

// SAFETY: a shared `&LockGuard` only reads `owner_died`; nothing reachable through it
// unlocks or touches the mutex from another thread (`Drop` needs the guard by value, which
// `!Send` keeps on the locking thread).
unsafe impl Sync for LockGuard<'_> {}

impl LockGuard<'_> {
    /// Whether the previous owner died while holding the lock, so that what it protects
    /// may be half-updated.
    pub fn owner_died(&self) -> bool {
        self.owner_died
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        if proc::process_token() != self.token {
            // A copy inherited through fork: the lock belongs to the parent's thread.
            return;
        }
        // SAFETY: this guard was made by a successful lock in this process, and being
        // `!Send` it is dropped on the thread that took the lock, exactly once.
        unsafe { self.mutex.unlock() }
    }
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("owner_died", &self.owner_died)
            .finish()
    }
}

/// A robust process-shared mutex: Python's `multiprocessing.Lock`, in a named segment
/// (attach by name from any process) or in anonymous shared memory (inherited by forked
/// children).
///
/// # Robust, with liveness from the kernel
/// The lock is a glibc `pthread_mutex_t` made `PTHREAD_MUTEX_ROBUST` and
/// `PTHREAD_PROCESS_SHARED` (no priority inheritance). glibc puts every robust mutex a
/// thread holds on that thread's *robust list*, which the kernel walks when the thread ends
/// — however it ends, `SIGKILL` included: it marks each mutex the thread still held
/// `FUTEX_OWNER_DIED` and wakes a waiter. The next [`lock`](Lock::lock) therefore succeeds
/// at once, and its guard reports [`owner_died`](LockGuard::owner_died), so the protected
/// data can be checked; [`recoveries`](Lock::recoveries) counts such take-overs.
///
/// Nothing else ever frees a held lock: no `/proc` lookup, no pid comparison. A holder in
/// another pid namespace (a container sharing `/dev/shm`), behind `hidepid`, or with
/// `/proc` unreadable is waited for as long as it lives.
///
/// One corner remains across pid namespaces, because the kernel names a holder by its
/// thread id *in the holder's own namespace* and two namespaces can both have, say, a
/// thread 1: if a waiter is killed at the very instant it tries the lock while a thread of
/// another namespace that carries the same number holds it, the kernel takes the dying
/// waiter for the holder and frees the lock. ndshm narrows that window to a few
/// milliseconds after such a holder takes the lock (a waiter that finds its own number in
/// the lock waits it out by polling, outside glibc); processes in one pid namespace, or in
/// namespaces whose thread ids do not overlap, are not exposed to it.
///
/// # Owned by a thread
/// The lock is owned by the *thread* that took it: other threads of the same process wait
/// for it like other processes do, only the holding thread unlocks it (by dropping the
/// guard, which is `!Send` for that reason), and a thread that ends without unlocking —
/// its guard leaked with `mem::forget`, or the thread killed with its process — counts as a
/// dead holder: the next locker gets `owner_died() == true`.
///
/// A thread that locks it again while it holds it gets an error instead of waiting for
/// itself forever (the mutex is of type `PTHREAD_MUTEX_ERRORCHECK`):
/// [`lock_timeout`](Lock::lock_timeout) returns [`ErrorKind::WouldDeadlock`],
/// [`try_lock`](Lock::try_lock) returns `None` and [`lock`](Lock::lock) panics, naming the
/// rule.
///
/// Uncontended, `lock` + unlock are glibc's `pthread_mutex_trylock` + `unlock`; a
/// contended `lock` spins about 20 µs, then sleeps on the mutex's futex and is woken by the
/// unlock (or by the kernel, when the holder dies).
///
/// # Examples
/// ```
/// let lock = ndshm::Lock::new()?;
/// ndshm::scope(|s| -> ndshm::Result<()> {
///     for _ in 0..2 {
///         s.spawn(|| {
///             let _guard = lock.lock();
///             // ... critical section across processes ...
///         })?;
///     }
///     Ok(())
/// })?;
/// assert!(!lock.lock().owner_died());
/// # Ok::<(), ndshm::Error>(())
/// ```
pub struct Lock {
    region: Region,
}

impl Lock {
    /// How often a waiter for a queue slot checks whether the slot's holder still lives.
    ///
    /// A `Lock` itself no longer waits this long for a dead holder: the kernel hands the
    /// lock of a thread that died to the next waiter at once. Kept for compatibility.
    pub const LIVENESS_PERIOD: Duration = LIVENESS_PERIOD;

    /// An anonymous lock, shared with the children forked after it was made.
    ///
    /// # Errors
    /// An OS error when the shared mapping fails.
    pub fn new() -> Result<Lock> {
        Ok(Lock {
            region: Region::anonymous(0, |_| Ok(()))?,
        })
    }

    /// Creates lock segment `name`; other processes [`open`](Lock::open) it by name.
    ///
    /// # Errors
    /// The errors of segment creation ([`ErrorKind::AlreadyExists`],
    /// [`ErrorKind::InvalidName`], …).
    pub fn create(segment: impl Into<CreateOptions>) -> Result<Lock> {
        Ok(Lock {
            region: Region::create(&segment.into(), SegmentKind::Lock, 0, |_| Ok(()))?,
        })
    }

    /// Attaches lock segment `name`.
    ///
    /// Safe: the segment holds nothing but the mutex, which every process uses only through
    /// glibc's `pthread_mutex_*` calls.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`], [`ErrorKind::KindMismatch`] when `name` is not a lock,
    /// [`ErrorKind::AlreadyOpen`] when this process holds it already.
    pub fn open(name: &str) -> Result<Lock> {
        Ok(Lock {
            region: Region::open(name, SegmentKind::Lock, 0)?,
        })
    }

    /// Locks, waiting as long as a live thread (of any process) holds the lock.
    ///
    /// # Panics
    /// When this thread holds the lock already (locks are not reentrant: use
    /// [`lock_timeout`](Lock::lock_timeout) to get [`ErrorKind::WouldDeadlock`] instead), or
    /// when the lock is broken beyond repair by a foreign program (see the type's docs).
    pub fn lock(&self) -> LockGuard<'_> {
        self.region.lock().lock_guard()
    }

    /// Locks if the lock is free (or its owner died), without waiting: `None` when a live
    /// thread holds it, this one included.
    ///
    /// # Panics
    /// When the lock is broken beyond repair by a foreign program.
    pub fn try_lock(&self) -> Option<LockGuard<'_>> {
        self.region.lock().try_lock_guard()
    }

    /// Locks, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`] when a live thread held the lock all that time,
    /// [`ErrorKind::WouldDeadlock`] at once when it is this thread.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<LockGuard<'_>> {
        self.region.lock().lock_timeout_guard(timeout, "the lock")
    }

    /// Whether some live thread holds the lock now (a snapshot, for diagnostics). The lock of
    /// a holder that died reads as free: the next locker takes it at once.
    pub fn is_locked(&self) -> bool {
        self.region.lock().is_locked()
    }

    /// How many times the lock was taken over from a dead owner since it was created.
    pub fn recoveries(&self) -> u64 {
        self.region.lock().recoveries()
    }

    /// The segment name, or `None` for an anonymous lock.
    pub fn name(&self) -> Option<&str> {
        self.region.name()
    }
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("name", &self.name())
            .field("locked", &self.is_locked())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_unlock_try() {
        let l = Lock::new().unwrap();
        let g = l.lock();
        assert!(!g.owner_died());
        assert!(l.is_locked());
        // This thread holds it: try_lock says no, lock_timeout says why, at once.
        assert!(l.try_lock().is_none());
        let t = Instant::now();
        let err = l.lock_timeout(Duration::from_secs(30)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WouldDeadlock, "{err}");
        assert!(t.elapsed() < Duration::from_secs(5));
        // Another thread of this process waits like another process would.
        std::thread::scope(|s| {
            s.spawn(|| {
                let err = l.lock_timeout(Duration::from_millis(30)).unwrap_err();
                assert_eq!(err.kind(), ErrorKind::Timeout);
            });
        });
        drop(g);
        assert!(!l.is_locked());
        assert!(l.try_lock().is_some());
    }

    #[test]
    #[should_panic(expected = "not reentrant")]
    fn lock_twice_on_one_thread_panics_naming_the_rule() {
        let l = Lock::new().unwrap();
        let _g = l.lock();
        let _again = l.lock();
    }
}
