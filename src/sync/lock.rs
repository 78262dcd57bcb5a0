//! [`Lock`], a standalone robust lock segment (Python's `multiprocessing.Lock`). The guard
//! and the lock protocol it rests on are in `sync::raw_lock`.

use std::fmt;
use std::time::Duration;

use crate::error::Result;
use crate::segment::region::Region;
use crate::segment::trailer::SegmentKind;
use crate::segment::CreateOptions;
pub(crate) use crate::sync::raw_lock::LockGuard;
pub(crate) use crate::sync::raw_lock::{LIVENESS_PERIOD, SPIN};

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
/// [`lock_timeout`](Lock::lock_timeout) returns [`ErrorKind::WouldDeadlock`](crate::ErrorKind::WouldDeadlock),
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
    ///
    /// # Examples
    /// ```
    /// let lock = ndshm::Lock::new()?;
    /// assert_eq!(lock.name(), None); // anonymous: forked children share it
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn new() -> Result<Lock> {
        Ok(Lock {
            region: Region::anonymous(0, |_| Ok(()))?,
        })
    }

    /// Creates lock segment `name`; other processes [`open`](Lock::open) it by name.
    ///
    /// # Errors
    /// The errors of segment creation ([`ErrorKind::AlreadyExists`](crate::ErrorKind::AlreadyExists),
    /// [`ErrorKind::InvalidName`](crate::ErrorKind::InvalidName), …).
    ///
    /// # Examples
    /// ```
    /// use ndshm::{CreateOptions, Lock};
    /// let lock = Lock::create(CreateOptions::unique())?; // removed when `lock` is dropped
    /// let name = lock.name().expect("a named lock");
    /// let same = Lock::open(name)?; // as another process would
    /// let _guard = same.lock();
    /// assert!(lock.is_locked());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
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
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound),
    /// [`ErrorKind::KindMismatch`](crate::ErrorKind::KindMismatch) when `name` is not a lock.
    /// (A lock may be opened any number of times, in this process too.)
    ///
    /// # Examples
    /// ```
    /// # let name = format!("doc-lock-open-{}", std::process::id());
    /// let lock = ndshm::Lock::create(&name)?;
    /// let same = ndshm::Lock::open(&name)?; // any number of times, here or elsewhere
    /// drop(same.lock());
    /// assert!(ndshm::Lock::open("no-such-lock-anywhere").is_err());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn open(name: &str) -> Result<Lock> {
        Ok(Lock {
            region: Region::open(name, SegmentKind::Lock, 0)?,
        })
    }

    /// Locks, waiting as long as a live thread (of any process) holds the lock.
    ///
    /// # Panics
    /// When this thread holds the lock already (locks are not reentrant: use
    /// [`lock_timeout`](Lock::lock_timeout) to get [`ErrorKind::WouldDeadlock`](crate::ErrorKind::WouldDeadlock) instead), or
    /// when the lock is broken beyond repair by a foreign program (see the type's docs).
    ///
    /// # Examples
    /// ```
    /// let lock = ndshm::Lock::new()?;
    /// let guard = lock.lock();
    /// assert!(!guard.owner_died());
    /// drop(guard); // unlocks
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn lock(&self) -> LockGuard<'_> {
        self.region.lock().lock_guard()
    }

    /// Locks if the lock is free (or its owner died), without waiting: `None` when a live
    /// thread holds it, this one included.
    ///
    /// # Panics
    /// When the lock is broken beyond repair by a foreign program.
    ///
    /// # Examples
    /// ```
    /// let lock = ndshm::Lock::new()?;
    /// let guard = lock.try_lock().expect("free");
    /// assert!(lock.try_lock().is_none()); // held (by this very thread)
    /// drop(guard);
    /// assert!(lock.try_lock().is_some());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn try_lock(&self) -> Option<LockGuard<'_>> {
        self.region.lock().try_lock_guard()
    }

    /// Locks, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) when a live thread held the lock all that time,
    /// [`ErrorKind::WouldDeadlock`](crate::ErrorKind::WouldDeadlock) at once when it is this thread.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let lock = ndshm::Lock::new()?;
    /// let guard = lock.lock_timeout(Duration::from_secs(1))?;
    /// // Locking again on the same thread would wait for itself: an error, at once.
    /// let again = lock.lock_timeout(Duration::from_secs(10)).unwrap_err();
    /// assert_eq!(again.kind(), ndshm::ErrorKind::WouldDeadlock);
    /// drop(guard);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Result<LockGuard<'_>> {
        self.region.lock().lock_timeout_guard(timeout, "the lock")
    }

    /// Whether some live thread holds the lock now (a snapshot, for diagnostics). The lock of
    /// a holder that died reads as free: the next locker takes it at once.
    ///
    /// # Examples
    /// ```
    /// let lock = ndshm::Lock::new()?;
    /// assert!(!lock.is_locked());
    /// let _g = lock.lock();
    /// assert!(lock.is_locked());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn is_locked(&self) -> bool {
        self.region.lock().is_locked()
    }

    /// How many times the lock was taken over from a dead owner since it was created.
    ///
    /// # Examples
    /// ```
    /// use ndshm::{Lock, Process};
    /// # let name = format!("doc-lock-recoveries-{}", std::process::id());
    /// let lock = Lock::create(&name)?;
    /// // A child that ends holding the lock: the kernel hands it on.
    /// Process::spawn(move || -> ndshm::Result<()> {
    ///     std::mem::forget(Lock::open(&name)?.lock());
    ///     Ok(())
    /// })?
    /// .join()?;
    /// assert!(lock.lock().owner_died());
    /// assert_eq!(lock.recoveries(), 1);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn recoveries(&self) -> u64 {
        self.region.lock().recoveries()
    }

    /// The segment name, or `None` for an anonymous lock.
    ///
    /// # Examples
    /// ```
    /// let lock = ndshm::Lock::create(ndshm::CreateOptions::unique_with_prefix("doc-lock"))?;
    /// assert!(lock.name().unwrap().starts_with("doc-lock"));
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn name(&self) -> Option<&str> {
        self.region.name()
    }

    /// The robust mutex itself, for types that wait on a given `Lock` (`Condition`).
    pub(crate) fn raw_mutex(&self) -> &crate::sys::mutex::RobustMutex {
        self.region.lock()
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
    use crate::error::ErrorKind;
    use std::time::Instant;

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
