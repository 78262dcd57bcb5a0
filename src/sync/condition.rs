//! [`Condition`], a process-shared condition variable with its lock (Python's
//! `multiprocessing.Condition`).

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::segment::region::{header_word, Region};
use crate::segment::trailer::SegmentKind;
use crate::segment::{CreateOptions, MAX_NAME_LEN};
use crate::sync::lock::{Lock, LockGuard};
use crate::sync::rlock::{RLock, RLockGuard, RawRLock};
use crate::sync::waiting::{self, deadline_after};

// Payload layout.
/// Hold count of the condition's own re-entrant lock (the trailer's mutex).
const COUNT: usize = 0;
/// Waiters not yet notified (high 32 bits) and notifications not yet taken (low 32 bits).
const TICKETS: usize = 8;
/// Futex word bumped by every notification.
const SEQ: usize = 16;
const SLEEPERS: usize = 20;
/// Header: which lock (low byte: 0 own, 1 a `Lock`, 2 an `RLock`), the lock's name length
/// (bits 8..16); the name follows at [`NAME`].
const HEADER: usize = 24;
const NAME: usize = 32;
const PAYLOAD: usize = NAME + MAX_NAME_LEN;

const OWN: u64 = 0;
const LOCK: u64 = 1;
const RLOCK: u64 = 2;
const WAITER: u64 = 1 << 32;
const SIGNALS: u64 = WAITER - 1;

/// The lock a [`Condition`] is made with (Python's `Condition(lock)`): a [`Lock`] or an
/// [`RLock`], moved into the condition. A named condition needs a named lock, which
/// [`Condition::open`] opens by the name the condition records.
#[derive(Debug)]
pub enum ConditionLock {
    /// A non-re-entrant robust lock.
    Lock(Lock),
    /// A re-entrant robust lock.
    RLock(RLock),
}

impl From<Lock> for ConditionLock {
    fn from(l: Lock) -> Self {
        ConditionLock::Lock(l)
    }
}

impl From<RLock> for ConditionLock {
    fn from(l: RLock) -> Self {
        ConditionLock::RLock(l)
    }
}

/// A condition variable shared between processes, with its lock: Python's
/// `multiprocessing.Condition`, in a named segment or in anonymous shared memory
/// (inherited by forked children).
///
/// Made with [`new`](Condition::new) / [`create`](Condition::create), it has its own
/// re-entrant robust lock (Python's default, an `RLock`); [`with_lock`](Condition::with_lock)
/// / [`create_with_lock`](Condition::create_with_lock) take a given [`Lock`] or [`RLock`]
/// instead. The Rust shape is `std::sync::Condvar`'s: [`lock`](Condition::lock) returns a
/// [`ConditionGuard`], and [`wait`](Condition::wait) consumes it, releases the lock
/// (every hold of an `RLock`), sleeps until notified, takes the lock again and hands the
/// guard back. [`notify`](Condition::notify) wakes one waiter, [`notify_all`](Condition::notify_all)
/// every one.
///
/// Differences from Python: `notify` does not require the lock (as `Condvar`), but call it
/// while holding the lock, as in Python, so that a waiter about to wait is not missed. A
/// waiter that dies while waiting is never waited for; if it was counted when a
/// `notify_all` (or a `notify` that it would have received) happened, a later waiter may
/// wake once without a notification, so wait in a loop or with
/// [`wait_for`](Condition::wait_for), as with any condition variable. A holder of the lock
/// that dies hands it on as [`Lock`] does: the guard of the next holder (from `lock` or
/// from a `wait`) reports [`owner_died`](ConditionGuard::owner_died).
///
/// # Examples
/// ```
/// // Python: with cond: cond.wait_for(lambda: ready.value == 1)
/// use ndshm::{Condition, SharedValue};
/// let cond = Condition::new()?;
/// let ready = SharedValue::<u32>::new(0)?;
/// ndshm::scope(|s| -> ndshm::Result<_> {
///     s.spawn(|| {
///         let _g = cond.lock();
///         ready.store(1);
///         cond.notify_all();
///     })?;
///     let g = cond.lock();
///     let _g = cond.wait_for(g, || ready.load() == 1)?;
///     Ok(())
/// })?;
/// # Ok::<(), ndshm::Error>(())
/// ```
pub struct Condition {
    region: Region,
    lock: Option<ConditionLock>,
}

fn init(kind: u64, name: &str) -> impl FnOnce(&mut [u8]) -> Result<()> + '_ {
    move |p: &mut [u8]| {
        let h = kind | (name.len() as u64) << 8;
        p[HEADER..HEADER + 8].copy_from_slice(&h.to_ne_bytes());
        p[NAME..NAME + name.len()].copy_from_slice(name.as_bytes());
        Ok(())
    }
}

fn kind_of(lock: &ConditionLock) -> (u64, Option<&str>) {
    match lock {
        ConditionLock::Lock(l) => (LOCK, l.name()),
        ConditionLock::RLock(l) => (RLOCK, l.name()),
    }
}

impl Condition {
    /// An anonymous condition with its own re-entrant lock, shared with the children
    /// forked after it was made.
    ///
    /// # Errors
    /// An OS error when the shared mapping fails.
    ///
    /// # Examples
    /// ```
    /// let cond = ndshm::Condition::new()?;
    /// let _g = cond.lock();
    /// let _again = cond.lock(); // its own lock is re-entrant, as Python's default
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn new() -> Result<Condition> {
        Ok(Condition {
            region: Region::anonymous(PAYLOAD, init(OWN, ""))?,
            lock: None,
        })
    }

    /// An anonymous condition over `lock` (Python's `Condition(lock)`).
    ///
    /// # Errors
    /// An OS error when the shared mapping fails.
    ///
    /// # Examples
    /// ```
    /// let cond = ndshm::Condition::with_lock(ndshm::Lock::new()?)?;
    /// let g = cond.lock();
    /// let (_g, notified) = cond.wait_timeout(g, std::time::Duration::from_millis(1))?;
    /// assert!(!notified);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn with_lock(lock: impl Into<ConditionLock>) -> Result<Condition> {
        let lock = lock.into();
        let (kind, _) = kind_of(&lock);
        Ok(Condition {
            region: Region::anonymous(PAYLOAD, init(kind, ""))?,
            lock: Some(lock),
        })
    }

    /// Creates condition segment `segment` with its own re-entrant lock; other processes
    /// [`open`](Condition::open) it by name.
    ///
    /// # Errors
    /// The errors of segment creation.
    ///
    /// # Examples
    /// ```
    /// use ndshm::{Condition, CreateOptions};
    /// let cond = Condition::create(CreateOptions::unique())?;
    /// let same = Condition::open(cond.name().unwrap())?;
    /// let _g = same.lock();
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn create(segment: impl Into<CreateOptions>) -> Result<Condition> {
        Ok(Condition {
            region: Region::create(
                &segment.into(),
                SegmentKind::Condition,
                PAYLOAD,
                init(OWN, ""),
            )?,
            lock: None,
        })
    }

    /// Creates condition segment `segment` over the named `lock`; the segment records the
    /// lock's name, so that [`open`](Condition::open) opens both.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when `lock` is anonymous (other processes could not
    /// find it), and the errors of segment creation.
    ///
    /// # Examples
    /// ```
    /// use ndshm::{Condition, CreateOptions, Lock};
    /// let lock = Lock::create(CreateOptions::unique())?;
    /// let cond = Condition::create_with_lock(CreateOptions::unique(), lock)?;
    /// let same = Condition::open(cond.name().unwrap())?; // opens the lock too
    /// let _g = same.lock();
    /// assert!(cond.try_lock().is_none());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn create_with_lock(
        segment: impl Into<CreateOptions>,
        lock: impl Into<ConditionLock>,
    ) -> Result<Condition> {
        let lock = lock.into();
        let (kind, name) = kind_of(&lock);
        let Some(name) = name else {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "a named Condition needs a named lock (other processes open the lock by the \
                 name the condition records): make the lock with Lock::create / \
                 RLock::create, or use Condition::with_lock for an anonymous condition",
            ));
        };
        let region = Region::create(
            &segment.into(),
            SegmentKind::Condition,
            PAYLOAD,
            init(kind, name),
        )?;
        Ok(Condition {
            region,
            lock: Some(lock),
        })
    }

    /// Attaches condition segment `name`, and the lock it was made with (by the name it
    /// records).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] (for the condition or its lock),
    /// [`ErrorKind::KindMismatch`], [`ErrorKind::Corrupt`] for an impossible header.
    ///
    /// # Examples
    /// ```
    /// # let name = format!("doc-cond-open-{}", std::process::id());
    /// let cond = ndshm::Condition::create(&name)?;
    /// let same = ndshm::Condition::open(&name)?;
    /// same.notify_all();
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn open(name: &str) -> Result<Condition> {
        let region = Region::open(name, SegmentKind::Condition, PAYLOAD)?;
        let h = header_word(&region, HEADER);
        let (kind, len) = (h & 0xff, (h >> 8 & 0xff) as usize);
        let corrupt = |what: &str| {
            Error::new(
                ErrorKind::Corrupt,
                format!("condition segment '{name}' {what}; recreate it"),
            )
        };
        let lock = match kind {
            OWN => None,
            LOCK | RLOCK => {
                if len == 0 || len > MAX_NAME_LEN {
                    return Err(corrupt("records a lock name of impossible length"));
                }
                let mut buf = vec![0u8; len];
                region.payload().read(NAME, &mut buf);
                let lock_name = String::from_utf8(buf)
                    .map_err(|_| corrupt("records a lock name that is not UTF-8"))?;
                Some(if kind == LOCK {
                    ConditionLock::Lock(Lock::open(&lock_name)?)
                } else {
                    ConditionLock::RLock(RLock::open(&lock_name)?)
                })
            }
            _ => return Err(corrupt("records an unknown lock kind")),
        };
        Ok(Condition { region, lock })
    }

    fn own(&self) -> RawRLock<'_> {
        RawRLock {
            mutex: self.region.lock(),
            count: self.region.payload().u64(COUNT),
        }
    }

    fn tickets(&self) -> &AtomicU64 {
        self.region.payload().u64(TICKETS)
    }

    fn seq(&self) -> &AtomicU32 {
        self.region.payload().u32(SEQ)
    }

    fn sleepers(&self) -> &AtomicU32 {
        self.region.payload().u32(SLEEPERS)
    }

    fn acquire(&self, deadline: Option<Instant>) -> Result<Option<ConditionGuard<'_>>> {
        const WHAT: &str = "the condition's lock";
        Ok(match &self.lock {
            None => self.own().acquire(deadline, WHAT)?.map(Inner::RLock),
            Some(ConditionLock::RLock(l)) => l.raw().acquire(deadline, WHAT)?.map(Inner::RLock),
            Some(ConditionLock::Lock(l)) => {
                let m = l.raw_mutex();
                match deadline {
                    None => Some(m.lock_guard_or_error(WHAT)?),
                    Some(d) => {
                        let t = d.saturating_duration_since(Instant::now());
                        match m.lock_timeout_guard(t, WHAT) {
                            Ok(g) => Some(g),
                            Err(e) if e.kind() == ErrorKind::Timeout => None,
                            Err(e) => return Err(e),
                        }
                    }
                }
                .map(Inner::Lock)
            }
        }
        .map(|inner| ConditionGuard { inner }))
    }

    /// Takes the condition's lock (re-entering when it is an `RLock` this thread holds).
    ///
    /// # Panics
    /// When the lock is a [`Lock`] this thread holds already, or is broken beyond repair
    /// (see [`Lock::lock`]).
    ///
    /// # Examples
    /// ```
    /// let cond = ndshm::Condition::new()?;
    /// let g = cond.lock();
    /// assert!(!g.owner_died());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn lock(&self) -> ConditionGuard<'_> {
        match self.acquire(None) {
            Ok(Some(g)) => g,
            Ok(None) => unreachable!("no deadline, so lock() cannot time out"),
            Err(e) => panic!("{e}"),
        }
    }

    /// Takes the lock if no other live thread holds it, without waiting.
    ///
    /// # Panics
    /// When the lock is broken beyond repair.
    ///
    /// # Examples
    /// ```
    /// let cond = ndshm::Condition::with_lock(ndshm::Lock::new()?)?;
    /// let g = cond.try_lock().expect("free");
    /// assert!(cond.try_lock().is_none()); // a Lock is not re-entrant
    /// drop(g);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn try_lock(&self) -> Option<ConditionGuard<'_>> {
        const WHAT: &str = "the condition's lock";
        let inner = match &self.lock {
            None => self.own().try_acquire(WHAT).map(|g| g.map(Inner::RLock)),
            Some(ConditionLock::RLock(l)) => l.raw().try_acquire(WHAT).map(|g| g.map(Inner::RLock)),
            Some(ConditionLock::Lock(l)) => l
                .raw_mutex()
                .try_lock_guard_or_error(WHAT)
                .map(|g| g.map(Inner::Lock)),
        };
        inner
            .unwrap_or_else(|e| panic!("{e}"))
            .map(|inner| ConditionGuard { inner })
    }

    /// Takes the lock, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`]; [`ErrorKind::WouldDeadlock`] when the lock is a [`Lock`]
    /// this thread holds.
    ///
    /// # Examples
    /// ```
    /// let cond = ndshm::Condition::new()?;
    /// let _g = cond.lock_timeout(std::time::Duration::from_secs(1))?;
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Result<ConditionGuard<'_>> {
        self.acquire(deadline_after(timeout))?.ok_or_else(|| {
            Error::new(
                ErrorKind::Timeout,
                format!("the condition's lock stayed held by another live thread for {timeout:?}"),
            )
        })
    }

    /// Releases the lock, sleeps until notified, takes the lock again.
    ///
    /// # Errors
    /// The errors of taking a broken lock again.
    ///
    /// # Examples
    /// ```
    /// use ndshm::{Condition, SharedValue};
    /// let (cond, n) = (Condition::new()?, SharedValue::<u32>::new(0)?);
    /// ndshm::scope(|s| -> ndshm::Result<_> {
    ///     s.spawn(|| {
    ///         let _g = cond.lock();
    ///         n.store(1);
    ///         cond.notify();
    ///     })?;
    ///     let mut g = cond.lock();
    ///     while n.load() == 0 {
    ///         g = cond.wait(g)?;
    ///     }
    ///     Ok(())
    /// })?;
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn wait<'a>(&'a self, guard: ConditionGuard<'a>) -> Result<ConditionGuard<'a>> {
        Ok(self.wait_until(guard, None)?.0)
    }

    /// [`wait`](Condition::wait), at most `timeout`; the flag says whether it was notified
    /// (`false`: timed out — Python's return value).
    ///
    /// # Errors
    /// As [`wait`](Condition::wait).
    ///
    /// # Examples
    /// ```
    /// let cond = ndshm::Condition::new()?;
    /// let (g, notified) = cond.wait_timeout(cond.lock(), std::time::Duration::from_millis(5))?;
    /// assert!(!notified);
    /// drop(g);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn wait_timeout<'a>(
        &'a self,
        guard: ConditionGuard<'a>,
        timeout: Duration,
    ) -> Result<(ConditionGuard<'a>, bool)> {
        self.wait_until(guard, deadline_after(timeout))
    }

    /// Waits until `ready()` holds (checked with the lock held, first before any wait).
    ///
    /// # Errors
    /// As [`wait`](Condition::wait).
    ///
    /// # Examples
    /// ```
    /// let cond = ndshm::Condition::new()?;
    /// let g = cond.wait_for(cond.lock(), || true)?; // already true: no wait
    /// # drop(g);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn wait_for<'a>(
        &'a self,
        guard: ConditionGuard<'a>,
        ready: impl FnMut() -> bool,
    ) -> Result<ConditionGuard<'a>> {
        Ok(self.wait_for_until(guard, None, ready)?.0)
    }

    /// [`wait_for`](Condition::wait_for), at most `timeout`; the flag is the last value of
    /// `ready()` (Python's return value).
    ///
    /// # Errors
    /// As [`wait`](Condition::wait).
    ///
    /// # Examples
    /// ```
    /// let cond = ndshm::Condition::new()?;
    /// let (_g, ok) = cond.wait_for_timeout(cond.lock(), std::time::Duration::from_millis(5), || false)?;
    /// assert!(!ok);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn wait_for_timeout<'a>(
        &'a self,
        guard: ConditionGuard<'a>,
        timeout: Duration,
        ready: impl FnMut() -> bool,
    ) -> Result<(ConditionGuard<'a>, bool)> {
        self.wait_for_until(guard, deadline_after(timeout), ready)
    }

    fn wait_for_until<'a>(
        &'a self,
        mut guard: ConditionGuard<'a>,
        deadline: Option<Instant>,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(ConditionGuard<'a>, bool)> {
        loop {
            if ready() {
                return Ok((guard, true));
            }
            if waiting::left(deadline).is_none() {
                return Ok((guard, false));
            }
            guard = self.wait_until(guard, deadline)?.0;
        }
    }

    fn wait_until<'a>(
        &'a self,
        guard: ConditionGuard<'a>,
        deadline: Option<Instant>,
    ) -> Result<(ConditionGuard<'a>, bool)> {
        let (tickets, seq) = (self.tickets(), self.seq());
        // Counted as a waiter while the lock is still held: a notifier holding the lock
        // sees this waiter.
        tickets.fetch_add(WAITER, Ordering::SeqCst);
        let mut s = seq.load(Ordering::SeqCst);
        let saved = guard.release();
        let notified = loop {
            if take_signal(tickets) {
                break true;
            }
            let now = seq.load(Ordering::SeqCst);
            if now != s {
                s = now;
                continue;
            }
            if waiting::spin_until(|| seq.load(Ordering::Relaxed) != s) {
                continue;
            }
            let Some(slice) = waiting::left(deadline) else {
                break leave(tickets);
            };
            waiting::sleep(seq, s, self.sleepers(), slice);
        };
        Ok((saved.reacquire()?, notified))
    }

    /// Wakes one waiter (Python's `notify()`); call it holding the lock.
    ///
    /// # Examples
    /// ```
    /// let cond = ndshm::Condition::new()?;
    /// let _g = cond.lock();
    /// cond.notify(); // nobody waits: nothing happens
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn notify(&self) {
        self.notify_n(1);
    }

    /// Wakes up to `n` waiters (Python's `notify(n)`).
    ///
    /// # Examples
    /// ```
    /// let cond = ndshm::Condition::new()?;
    /// cond.notify_n(3);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn notify_n(&self, n: u32) {
        let tickets = self.tickets();
        let mut cur = tickets.load(Ordering::SeqCst);
        let k = loop {
            let waiters = (cur >> 32) as u32;
            let k = waiters.min(n);
            if k == 0 {
                return;
            }
            let signals = (cur & SIGNALS) as u32;
            let next = ((waiters - k) as u64) << 32 | signals.saturating_add(k) as u64;
            match tickets.compare_exchange_weak(cur, next, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => break k,
                Err(now) => cur = now,
            }
        };
        self.seq().fetch_add(1, Ordering::SeqCst);
        waiting::wake(self.seq(), self.sleepers(), k.min(i32::MAX as u32) as i32);
    }

    /// Wakes every waiter (Python's `notify_all()`).
    ///
    /// # Examples
    /// ```
    /// let cond = ndshm::Condition::new()?;
    /// cond.notify_all();
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn notify_all(&self) {
        self.notify_n(u32::MAX);
    }

    /// The segment name, or `None` for an anonymous condition.
    ///
    /// # Examples
    /// ```
    /// assert_eq!(ndshm::Condition::new()?.name(), None);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn name(&self) -> Option<&str> {
        self.region.name()
    }
}

/// Takes one notification, if there is one.
fn take_signal(tickets: &AtomicU64) -> bool {
    let mut cur = tickets.load(Ordering::SeqCst);
    while cur & SIGNALS != 0 {
        match tickets.compare_exchange_weak(cur, cur - 1, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return true,
            Err(now) => cur = now,
        }
    }
    false
}

/// A waiter leaves at its deadline: it takes a notification if one is there (it was
/// notified as it timed out), else it stops counting as a waiter. Returns whether it was
/// notified.
fn leave(tickets: &AtomicU64) -> bool {
    let mut cur = tickets.load(Ordering::SeqCst);
    loop {
        let next = if cur & SIGNALS != 0 {
            cur - 1
        } else if cur >= WAITER {
            cur - WAITER
        } else {
            // Neither: someone else's bookkeeping went wrong (impossible); leave as is.
            return false;
        };
        match tickets.compare_exchange_weak(cur, next, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return cur & SIGNALS != 0,
            Err(now) => cur = now,
        }
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition")
            .field("name", &self.name())
            .field("lock", &self.lock)
            .finish()
    }
}

enum Inner<'a> {
    Lock(LockGuard<'a>),
    RLock(RLockGuard<'a>),
}

/// The lock of a [`Condition`], held; [`Condition::wait`] consumes and returns it. `!Send`,
/// like the lock guards it wraps.
///
/// # Examples
/// ```
/// let cond = ndshm::Condition::new()?;
/// let g = cond.lock();
/// assert!(!g.owner_died());
/// # Ok::<(), ndshm::Error>(())
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ConditionGuard<'a> {
    inner: Inner<'a>,
}

/// A condition's lock, released for a wait: what it takes to take it again.
enum Released<'a> {
    Lock(&'a crate::sys::mutex::RobustMutex),
    RLock(RawRLock<'a>, u64),
}

impl<'a> ConditionGuard<'a> {
    /// Whether the previous holder of the lock died holding it.
    ///
    /// # Examples
    /// ```
    /// let cond = ndshm::Condition::new()?;
    /// assert!(!cond.lock().owner_died());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn owner_died(&self) -> bool {
        match &self.inner {
            Inner::Lock(g) => g.owner_died(),
            Inner::RLock(g) => g.owner_died(),
        }
    }

    fn release(self) -> Released<'a> {
        match self.inner {
            Inner::Lock(g) => {
                let (held, _) = g.into_parts();
                let m = held.mutex();
                drop(held);
                Released::Lock(m)
            }
            Inner::RLock(g) => {
                let raw = g.raw();
                let saved = RawRLock::release_save(g);
                Released::RLock(raw, saved)
            }
        }
    }
}

impl<'a> Released<'a> {
    fn reacquire(self) -> Result<ConditionGuard<'a>> {
        const WHAT: &str = "the condition's lock";
        let inner = match self {
            Released::Lock(m) => Inner::Lock(m.lock_guard_or_error(WHAT)?),
            Released::RLock(raw, saved) => Inner::RLock(raw.acquire_restore(saved, WHAT)?),
        };
        Ok(ConditionGuard { inner })
    }
}

impl fmt::Debug for ConditionGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConditionGuard")
            .field("owner_died", &self.owner_died())
            .finish()
    }
}
