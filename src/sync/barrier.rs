//! [`Barrier`], a process-shared barrier that a dead party breaks (Python's
//! `multiprocessing.Barrier` and its `BrokenBarrierError`).

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::segment::region::{header_word, Region};
use crate::segment::trailer::SegmentKind;
use crate::segment::CreateOptions;
use crate::sync::lock::LIVENESS_PERIOD;
use crate::sync::raw_lock::LockGuard;
use crate::sync::waiting::{self, deadline_after};
use crate::sys::lease::{self, Liveness};

// Payload layout. The words are changed under the region's robust lock (and read
// atomically by sleepers).
/// Generation (`u32` futex word): bumped when a round is released, broken or reset.
const GEN: usize = 0;
const SLEEPERS: usize = 4;
/// Parties arrived in the current generation.
const COUNT: usize = 8;
/// 1 while the barrier is broken (until `reset`).
const BROKEN: usize = 12;
/// Header: the number of parties.
const PARTIES: usize = 16;
/// Ring of the last [`RING`] generations' outcomes: `gen << 1 | broken`.
const OUTCOMES: usize = 24;
const RING: usize = 64;
/// One lease per arrival of the current generation, to find a party that died waiting.
const SLOTS: usize = OUTCOMES + RING * 8;

/// The most parties a barrier may have.
const MAX_PARTIES: u32 = 1 << 16;

fn payload_len(parties: u32) -> usize {
    SLOTS + parties as usize * 8
}

fn broken_error() -> Error {
    Error::new(
        ErrorKind::BrokenBarrier,
        "the barrier is broken: a party timed out or died while waiting, or the barrier was \
         aborted or reset while this party waited; call reset() before using it again",
    )
}

/// A barrier for `parties` processes (or threads): Python's `multiprocessing.Barrier`, in a
/// named segment or in anonymous shared memory (inherited by forked children).
///
/// [`wait`](Barrier::wait) returns when `parties` callers have arrived, each with its
/// arrival index (`0..parties`, Python's return value), and the barrier is ready for the
/// next round. Waiters spin a few microseconds, then sleep on a futex.
///
/// # Broken, never hung
/// As in Python, a party whose [`wait_timeout`](Barrier::wait_timeout) runs out breaks the
/// barrier, and so do [`abort`](Barrier::abort) and a [`reset`](Barrier::reset) while
/// parties wait: every waiting party, and every later `wait`, gets
/// [`ErrorKind::BrokenBarrier`] (Python's `BrokenBarrierError`) until `reset`. Beyond
/// Python, a party that *dies* while waiting (killed, crashed) breaks it too: each arrival
/// records its process's lease, sleepers check the arrived parties every
/// [`Lock::LIVENESS_PERIOD`](crate::Lock::LIVENESS_PERIOD), and a dead one breaks the round
/// for the others instead of leaving them waiting for a party that will never go on. A party
/// that dies inside `wait`'s short critical section is detected through the robust lock.
/// A party that dies *before* it arrives cannot be told from a slow one: use `wait_timeout`
/// when that matters. Python's `action` callable has no counterpart: run it on the party
/// whose index is 0.
///
/// # Examples
/// ```
/// // Python: b = multiprocessing.Barrier(3); ... i = b.wait()
/// let b = ndshm::Barrier::new(3)?;
/// ndshm::scope(|s| -> ndshm::Result<_> {
///     for _ in 0..2 {
///         s.spawn(|| b.wait().map(|_| ()))?;
///     }
///     let i = b.wait()?; // all three go on together
///     assert!(i < 3);
///     Ok(())
/// })?;
/// # Ok::<(), ndshm::Error>(())
/// ```
pub struct Barrier {
    region: Region,
}

impl Barrier {
    fn check_parties(parties: u32) -> Result<()> {
        if parties == 0 || parties > MAX_PARTIES {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("a barrier needs 1 to {MAX_PARTIES} parties, not {parties}"),
            ));
        }
        Ok(())
    }

    fn init(parties: u32) -> impl FnOnce(&mut [u8]) -> Result<()> {
        move |p: &mut [u8]| {
            p[PARTIES..PARTIES + 8].copy_from_slice(&(parties as u64).to_ne_bytes());
            Ok(())
        }
    }

    /// An anonymous barrier for `parties` parties, shared with the children forked after
    /// it was made.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for 0 parties (or more than 65536); an OS error when
    /// the shared mapping fails.
    ///
    /// # Examples
    /// ```
    /// let b = ndshm::Barrier::new(1)?;
    /// assert_eq!(b.wait()?, 0); // a single party never waits
    /// assert!(ndshm::Barrier::new(0).is_err());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn new(parties: u32) -> Result<Barrier> {
        Self::check_parties(parties)?;
        Ok(Barrier {
            region: Region::anonymous(payload_len(parties), Self::init(parties))?,
        })
    }

    /// Creates barrier segment `segment` for `parties` parties; other processes
    /// [`open`](Barrier::open) it by name.
    ///
    /// # Errors
    /// As [`new`](Barrier::new), and the errors of segment creation.
    ///
    /// # Examples
    /// ```
    /// use ndshm::{Barrier, CreateOptions};
    /// let b = Barrier::create(CreateOptions::unique(), 2)?;
    /// assert_eq!(Barrier::open(b.name().unwrap())?.parties(), 2);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn create(segment: impl Into<CreateOptions>, parties: u32) -> Result<Barrier> {
        Self::check_parties(parties)?;
        Ok(Barrier {
            region: Region::create(
                &segment.into(),
                SegmentKind::Barrier,
                payload_len(parties),
                Self::init(parties),
            )?,
        })
    }

    /// Attaches barrier segment `name` (any number of times, in any process).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`], [`ErrorKind::KindMismatch`], [`ErrorKind::Corrupt`] when
    /// its party count does not fit the segment.
    ///
    /// # Examples
    /// ```
    /// # let name = format!("doc-barrier-open-{}", std::process::id());
    /// let b = ndshm::Barrier::create(&name, 4)?;
    /// assert_eq!(ndshm::Barrier::open(&name)?.n_waiting(), 0);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn open(name: &str) -> Result<Barrier> {
        let region = Region::open(name, SegmentKind::Barrier, SLOTS)?;
        let parties = header_word(&region, PARTIES);
        if parties == 0
            || parties > MAX_PARTIES as u64
            || region.payload_len() < payload_len(parties as u32)
        {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "barrier segment '{name}' claims {parties} parties, which its {} bytes \
                     cannot hold; recreate it",
                    region.payload_len()
                ),
            ));
        }
        Ok(Barrier { region })
    }

    fn gen(&self) -> &AtomicU32 {
        self.region.payload().u32(GEN)
    }
    fn sleepers(&self) -> &AtomicU32 {
        self.region.payload().u32(SLEEPERS)
    }
    fn count(&self) -> &AtomicU32 {
        self.region.payload().u32(COUNT)
    }
    fn broken_word(&self) -> &AtomicU32 {
        self.region.payload().u32(BROKEN)
    }
    fn outcome(&self, gen: u32) -> &AtomicU64 {
        self.region
            .payload()
            .u64(OUTCOMES + (gen as usize % RING) * 8)
    }
    fn slot(&self, i: u32) -> &AtomicU64 {
        self.region.payload().u64(SLOTS + i as usize * 8)
    }

    /// The number of parties (Python's `parties`).
    ///
    /// # Examples
    /// ```
    /// assert_eq!(ndshm::Barrier::new(3)?.parties(), 3);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn parties(&self) -> u32 {
        header_word(&self.region, PARTIES) as u32
    }

    /// How many parties wait in the current round (Python's `n_waiting`; a snapshot).
    ///
    /// # Examples
    /// ```
    /// assert_eq!(ndshm::Barrier::new(3)?.n_waiting(), 0);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn n_waiting(&self) -> u32 {
        self.count().load(Ordering::Acquire)
    }

    /// Whether the barrier is broken (Python's `broken`).
    ///
    /// # Examples
    /// ```
    /// let b = ndshm::Barrier::new(2)?;
    /// b.abort()?;
    /// assert!(b.broken());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn broken(&self) -> bool {
        self.broken_word().load(Ordering::Acquire) != 0
    }

    fn locked(&self) -> Result<LockGuard<'_>> {
        let g = self
            .region
            .lock()
            .lock_guard_or_error("the barrier's lock")?;
        if g.owner_died() {
            // A party died in the middle of an update: the round cannot be trusted.
            self.break_locked();
        }
        Ok(g)
    }

    /// Ends the current generation as broken (the caller holds the lock).
    fn break_locked(&self) {
        self.broken_word().store(1, Ordering::Release);
        self.end_round(true);
    }

    /// Ends the current generation (the caller holds the lock) and wakes its sleepers.
    fn end_round(&self, broken: bool) {
        let g = self.gen().load(Ordering::Relaxed);
        self.outcome(g)
            .store((g as u64) << 1 | broken as u64, Ordering::Release);
        self.count().store(0, Ordering::Release);
        self.gen().store(g.wrapping_add(1), Ordering::SeqCst);
        waiting::wake(self.gen(), self.sleepers(), i32::MAX);
    }

    /// Waits until all parties have arrived; returns this party's arrival index.
    ///
    /// # Errors
    /// [`ErrorKind::BrokenBarrier`] when the barrier is or becomes broken (see the type's
    /// docs); the errors of a broken lock.
    ///
    /// # Examples
    /// ```
    /// let b = ndshm::Barrier::new(2)?;
    /// let indices = ndshm::SharedValue::<u32>::new(0)?;
    /// ndshm::scope(|s| -> ndshm::Result<_> {
    ///     s.spawn(|| b.wait().map(|i| drop(indices.fetch_add(i))))?;
    ///     indices.fetch_add(b.wait()?);
    ///     Ok(())
    /// })?;
    /// assert_eq!(indices.load(), 0 + 1); // one party got 0, the other 1
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn wait(&self) -> Result<u32> {
        self.wait_until(None, None)
    }

    /// [`wait`](Barrier::wait), at most `timeout`.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`] when the round did not fill in time: the barrier is then
    /// broken for the other parties (as in Python); and the errors of `wait`.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let b = ndshm::Barrier::new(2)?;
    /// let e = b.wait_timeout(Duration::from_millis(5)).unwrap_err();
    /// assert_eq!(e.kind(), ndshm::ErrorKind::Timeout);
    /// assert!(b.broken());
    /// b.reset()?;
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<u32> {
        self.wait_until(deadline_after(timeout), Some(timeout))
    }

    fn wait_until(&self, deadline: Option<Instant>, timeout: Option<Duration>) -> Result<u32> {
        let parties = self.parties();
        let (index, mine) = {
            let _g = self.locked()?;
            if self.broken() {
                return Err(broken_error());
            }
            let index = self.count().load(Ordering::Relaxed);
            if index + 1 >= parties {
                self.end_round(false);
                return Ok(index);
            }
            self.slot(index).store(lease::holder(), Ordering::Relaxed);
            self.count().store(index + 1, Ordering::Release);
            (index, self.gen().load(Ordering::Relaxed))
        };
        let gen = self.gen();
        if !waiting::spin_until(|| gen.load(Ordering::Acquire) != mine) {
            let mut last_check = Instant::now();
            while gen.load(Ordering::Acquire) == mine {
                let Some(left) = waiting::left(deadline) else {
                    let _g = self.locked()?;
                    if gen.load(Ordering::Acquire) == mine {
                        self.break_locked();
                        return Err(Error::new(
                            ErrorKind::Timeout,
                            format!(
                                "the barrier's round did not fill within {:?} ({} of {parties} \
                                 parties arrived); the barrier is now broken for the others",
                                timeout.unwrap_or_default(),
                                index + 1
                            ),
                        ));
                    }
                    break;
                };
                let slice = left.map_or(LIVENESS_PERIOD, |l| l.min(LIVENESS_PERIOD));
                waiting::sleep(gen, mine, self.sleepers(), Some(slice));
                if gen.load(Ordering::Acquire) == mine && last_check.elapsed() >= LIVENESS_PERIOD {
                    last_check = Instant::now();
                    if self.a_party_died(mine) {
                        let _g = self.locked()?;
                        if gen.load(Ordering::Acquire) == mine {
                            self.break_locked();
                        }
                    }
                }
            }
        }
        let o = self.outcome(mine).load(Ordering::Acquire);
        if o == (mine as u64) << 1 | 1 {
            Err(broken_error())
        } else {
            Ok(index)
        }
    }

    /// Whether a party that arrived in generation `mine` has died since.
    fn a_party_died(&self, mine: u32) -> bool {
        let me = lease::mine_if_claimed();
        let n = self.count().load(Ordering::Acquire).min(self.parties());
        (0..n).any(|i| {
            let l = self.slot(i).load(Ordering::Relaxed);
            Some(l) != me
                && self.gen().load(Ordering::Acquire) == mine
                && lease::check(l) == Liveness::Dead
        })
    }

    /// Breaks the barrier (Python's `abort()`): waiting parties and later waits get
    /// [`ErrorKind::BrokenBarrier`] until [`reset`](Barrier::reset).
    ///
    /// # Errors
    /// The errors of a broken lock.
    ///
    /// # Examples
    /// ```
    /// let b = ndshm::Barrier::new(2)?;
    /// b.abort()?;
    /// assert_eq!(b.wait().unwrap_err().kind(), ndshm::ErrorKind::BrokenBarrier);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn abort(&self) -> Result<()> {
        let _g = self.locked()?;
        self.break_locked();
        Ok(())
    }

    /// Returns the barrier to its fresh state (Python's `reset()`); parties waiting now get
    /// [`ErrorKind::BrokenBarrier`].
    ///
    /// # Errors
    /// The errors of a broken lock.
    ///
    /// # Examples
    /// ```
    /// let b = ndshm::Barrier::new(1)?;
    /// b.abort()?;
    /// b.reset()?;
    /// assert!(!b.broken());
    /// assert_eq!(b.wait()?, 0);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn reset(&self) -> Result<()> {
        let _g = self.locked()?;
        if self.count().load(Ordering::Relaxed) > 0 {
            self.end_round(true);
        }
        self.broken_word().store(0, Ordering::Release);
        Ok(())
    }

    /// The segment name, or `None` for an anonymous barrier.
    ///
    /// # Examples
    /// ```
    /// assert_eq!(ndshm::Barrier::new(2)?.name(), None);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn name(&self) -> Option<&str> {
        self.region.name()
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("name", &self.name())
            .field("parties", &self.parties())
            .field("n_waiting", &self.n_waiting())
            .field("broken", &self.broken())
            .finish()
    }
}
