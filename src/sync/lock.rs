//! A robust process-shared mutex in shared memory: [`RawLock`] (the 32-byte word set every
//! segment's trailer has room for) and [`Lock`], a standalone lock segment (Python's
//! `multiprocessing.Lock`).
//!
//! # Protocol
//! The lock is one 64-bit word: low half `owner pid | WAITERS`, high half the low 32 bits
//! of the owner's start time (clock ticks since boot, from `/proc`). Free is 0.
//! - `lock`: one compare-and-swap 0 → me. If it fails, spin ~20 µs re-trying; then set
//!   the `WAITERS` bit and sleep on the futex of the low half, in slices of
//!   [`LIVENESS_PERIOD`]. After each slice that ends without a wake-up, the sleeper checks
//!   that the owner still runs (pid *and* start time, so a reused pid is not taken for
//!   the owner); if it does not, the sleeper takes the lock over with a compare-and-swap
//!   from the dead owner's word, and its guard reports [`LockGuard::owner_died`].
//! - `unlock`: swap to 0; wake one sleeper only if the `WAITERS` bit was set. A woken
//!   sleeper re-takes the lock with the `WAITERS` bit set (others may still sleep), so the
//!   chain of wake-ups never stops early.
//!
//! Because owner and start time change in one atomic word, a sleeper can never mistake a
//! live owner for a dead one, and a dead owner's word can be taken over by exactly one
//! process.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::region::Region;
use crate::segment::CreateOptions;
use crate::sys::{futex, proc};
use crate::trailer::SegmentKind;

/// How long a sleeper waits before it checks whether the owner is still alive: the most a
/// dead owner's lock stays blocked.
pub(crate) const LIVENESS_PERIOD: Duration = Duration::from_millis(20);
/// How long `lock` spins before it sleeps (waking a sleeping process costs ~20 µs).
pub(crate) const SPIN: Duration = Duration::from_micros(20);

const WAITERS: u64 = 1 << 31;
const PID_MASK: u64 = (1 << 31) - 1;

/// The lock word set, as it lies in shared memory (32 bytes, 8-byte aligned).
#[repr(C)]
pub(crate) struct RawLock {
    state: AtomicU64,
    /// How many times the lock was taken over from a dead owner.
    recoveries: AtomicU64,
    _spare: [AtomicU64; 2],
}

const _: () = assert!(std::mem::size_of::<RawLock>() == 32);

fn my_word() -> (i32, u64) {
    let (pid, start) = proc::cached_identity();
    (pid, (pid as u64 & PID_MASK) | ((start & 0xffff_ffff) << 32))
}

fn owner_alive(word: u64) -> bool {
    let pid = (word & PID_MASK) as i32;
    match proc::start_time(pid) {
        None => false,
        Some(start) => start & 0xffff_ffff == word >> 32,
    }
}

/// Outcome of taking the lock: whether it was taken over from a dead owner.
pub(crate) type Acquired = bool;

impl RawLock {
    /// The lock word set at `ptr`.
    ///
    /// # Safety
    /// - `ptr` is 8-byte aligned and points to 32 bytes that stay mapped (shared) for `'a`;
    /// - those bytes are only ever accessed atomically (by this type, in any process).
    pub(crate) unsafe fn from_ptr<'a>(ptr: *mut u8) -> &'a RawLock {
        // SAFETY: forwarded to the caller; every bit pattern is a valid set of atomics.
        unsafe { &*(ptr as *const RawLock) }
    }

    /// The futex word: the low half of `state` (little-endian), which holds pid and
    /// `WAITERS`. Only its address is used (by the kernel); Rust code accesses `state`
    /// through the 64-bit atomic only.
    fn futex_word(&self) -> &AtomicU32 {
        // SAFETY: `state` is 8-byte aligned, so its first 4 bytes are a 4-byte aligned
        // u32 inside the same allocation; the reference is only passed to the futex
        // syscalls, which read the word in the kernel.
        unsafe { &*(self.state.as_ptr() as *const AtomicU32) }
    }

    /// Tries once, without waiting; takes over a lock whose owner died.
    pub(crate) fn try_lock(&self) -> Option<(i32, Acquired)> {
        let (pid, me) = my_word();
        match self
            .state
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => Some((pid, false)),
            Err(cur) if cur & PID_MASK == 0 => self
                .state
                .compare_exchange(cur, me | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                .ok()
                .map(|_| (pid, false)),
            Err(cur) => self.take_over(cur, me).then_some((pid, true)),
        }
    }

    /// Takes over `cur` when its owner died.
    fn take_over(&self, cur: u64, me: u64) -> bool {
        if owner_alive(cur) {
            return false;
        }
        let ok = self
            .state
            .compare_exchange(cur, me | WAITERS, Ordering::Acquire, Ordering::Relaxed)
            .is_ok();
        if ok {
            self.recoveries.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Takes the lock, waiting until `deadline` (forever when `None`). Returns the pid it
    /// was taken by and whether the previous owner died; `None` when the deadline passed.
    #[inline]
    pub(crate) fn lock(&self, deadline: Option<Instant>) -> Option<(i32, Acquired)> {
        let (pid, me) = my_word();
        if self
            .state
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return Some((pid, false));
        }
        self.lock_slow(pid, me, deadline)
    }

    #[cold]
    fn lock_slow(&self, pid: i32, me: u64, deadline: Option<Instant>) -> Option<(i32, Acquired)> {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let cur = self.state.load(Ordering::Relaxed);
            if cur == 0
                && self
                    .state
                    .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return Some((pid, false));
            }
            std::hint::spin_loop();
            spins += 1;
            if spins % 64 == 0 && start.elapsed() >= SPIN {
                break;
            }
        }
        loop {
            let cur = self.state.load(Ordering::Relaxed);
            if cur & PID_MASK == 0 {
                // Free: take it with WAITERS set, as others may sleep.
                if self
                    .state
                    .compare_exchange(cur, me | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Some((pid, false));
                }
                continue;
            }
            let waiting = cur | WAITERS;
            if cur & WAITERS == 0
                && self
                    .state
                    .compare_exchange(cur, waiting, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            let slice = match deadline {
                None => LIVENESS_PERIOD,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    left.min(LIVENESS_PERIOD)
                }
            };
            if !futex::wait(self.futex_word(), waiting as u32, Some(slice))
                && self.take_over(waiting, me)
            {
                return Some((pid, true));
            }
        }
    }

    /// Releases the lock taken by process `pid`. A guard inherited through `fork` (held by
    /// the parent at the fork) releases nothing in the child.
    #[inline]
    pub(crate) fn unlock(&self, pid: i32) {
        if proc::cached_pid() != pid {
            return;
        }
        let old = self.state.swap(0, Ordering::Release);
        if old & WAITERS != 0 {
            futex::wake(self.futex_word(), 1);
        }
    }

    /// Whether some process holds the lock now (a snapshot).
    pub(crate) fn is_locked(&self) -> bool {
        self.state.load(Ordering::Relaxed) & PID_MASK != 0
    }

    /// How many times the lock was taken over from a dead owner.
    pub(crate) fn recoveries(&self) -> u64 {
        self.recoveries.load(Ordering::Relaxed)
    }

    pub(crate) fn guard(&self, (pid, died): (i32, Acquired)) -> LockGuard<'_> {
        LockGuard {
            lock: self,
            pid,
            owner_died: died,
        }
    }

    pub(crate) fn lock_guard(&self) -> LockGuard<'_> {
        let got = self
            .lock(None)
            .expect("no deadline, so lock() cannot time out");
        self.guard(got)
    }

    pub(crate) fn try_lock_guard(&self) -> Option<LockGuard<'_>> {
        self.try_lock().map(|got| self.guard(got))
    }

    pub(crate) fn lock_timeout_guard(
        &self,
        timeout: Duration,
        what: &str,
    ) -> Result<LockGuard<'_>> {
        let deadline = Instant::now().checked_add(timeout);
        match self.lock(deadline) {
            Some(got) => Ok(self.guard(got)),
            None => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "{what} stayed locked by another live process for {timeout:?}; wait longer \
                     or find out why it holds the lock so long"
                ),
            )),
        }
    }
}

/// Held while a [`Lock`] (or a value's, array's or container's own lock) is locked;
/// dropping it unlocks.
///
/// [`owner_died`](LockGuard::owner_died) says whether the previous owner died while
/// holding the lock (killed, crashed, `_exit` in the middle of an update): the data it
/// protects may then be half-updated, and the new owner should check or repair it. The
/// lock itself is consistent and stays usable.
///
/// If the process forks while it holds a guard, the child's copy of the guard releases
/// nothing when dropped: the lock stays held by the parent until the parent's guard goes.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a> {
    lock: &'a RawLock,
    pid: i32,
    owner_died: bool,
}

impl LockGuard<'_> {
    /// Whether the previous owner died while holding the lock, so that what it protects
    /// may be half-updated.
    pub fn owner_died(&self) -> bool {
        self.owner_died
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        self.lock.unlock(self.pid);
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
/// Robust: if the holder dies — even by `SIGKILL` — the next [`lock`](Lock::lock) succeeds
/// (within [`Lock::LIVENESS_PERIOD`]) and its guard reports
/// [`owner_died`](LockGuard::owner_died), so the protected data can be checked; no process
/// hangs forever on a dead owner.
///
/// The lock is owned per *process*: threads of one process exclude each other too (each
/// takes it with a compare-and-swap), but a thread that locks it twice deadlocks, as with
/// `std::sync::Mutex` (use [`lock_timeout`](Lock::lock_timeout) to find out).
///
/// Uncontended, `lock` + unlock is one compare-and-swap and one swap; a contended `lock`
/// spins about 20 µs, then sleeps on a futex and is woken by the unlock.
///
/// # Examples
/// ```
/// let lock = ndshm::Lock::new()?;
/// ndshm::scope(|s| {
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
    /// How long a dead owner's lock stays blocked at most before a waiter takes it over.
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
    pub fn create(name: &str) -> Result<Lock> {
        Self::create_with(name, &CreateOptions::new())
    }

    /// [`create`](Lock::create) with options (mode, persistence).
    ///
    /// # Errors
    /// As [`create`](Lock::create).
    pub fn create_with(name: &str, opts: &CreateOptions) -> Result<Lock> {
        Ok(Lock {
            region: Region::create(name, SegmentKind::Lock, 0, opts, |_| Ok(()))?,
        })
    }

    /// Attaches lock segment `name`.
    ///
    /// Safe: the segment holds nothing but the lock word set, which every process accesses
    /// only atomically.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`], [`ErrorKind::KindMismatch`] when `name` is not a lock,
    /// [`ErrorKind::AlreadyOpen`] when this process holds it already.
    pub fn open(name: &str) -> Result<Lock> {
        Ok(Lock {
            region: Region::open(name, SegmentKind::Lock, 0)?,
        })
    }

    /// Locks, waiting as long as a live process holds the lock.
    pub fn lock(&self) -> LockGuard<'_> {
        self.region.lock().lock_guard()
    }

    /// Locks if the lock is free (or its owner died), without waiting.
    pub fn try_lock(&self) -> Option<LockGuard<'_>> {
        self.region.lock().try_lock_guard()
    }

    /// Locks, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`] when a live process held the lock all that time.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<LockGuard<'_>> {
        self.region.lock().lock_timeout_guard(timeout, "the lock")
    }

    /// Whether some process holds the lock now (a snapshot, for diagnostics).
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
        // Same process, same pid: try_lock sees a live owner.
        assert!(l.try_lock().is_none());
        assert_eq!(
            l.lock_timeout(Duration::from_millis(30))
                .unwrap_err()
                .kind(),
            ErrorKind::Timeout
        );
        drop(g);
        assert!(!l.is_locked());
        assert!(l.try_lock().is_some());
    }
}
