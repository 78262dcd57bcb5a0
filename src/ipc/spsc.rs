//! [`SpscQueue<T>`]: a bounded single-producer single-consumer queue of `Pod` items in
//! shared memory, with one [`SpscProducer`] and one [`SpscConsumer`] at a time, in any
//! processes: the fast path between two processes (the `rtrb` design, across a fork or a
//! name).
//!
//! # Design
//! A ring of `capacity` items (the ring rounded up to a power of two) and two indices in
//! separate cache lines: `tail`, written by the producer only, and `head`, written by the
//! consumer only. Each side keeps its own index and a cached copy of the other's in its
//! handle, so an item costs a copy in, a copy out and one release store per side; the
//! other side's line is read only when the cached copy says full (producer) or empty
//! (consumer). No compare-and-swap, no per-slot word.
//!
//! The batch calls ([`SpscProducer::put_slice`], [`SpscConsumer::get_into`] and their
//! `try_`/`_timeout` forms) copy a run of items and publish the index once for the run:
//! the fast way to stream (rtrb's chunk API).
//!
//! # Crashes and roles
//! The producer and consumer *roles* are claimed per process with the process's lease (the
//! kernel-vouched liveness token of the crate docs, "Crashes and signals"): a second claim
//! while a live process holds the role is refused; the role of a dead process is taken over.
//! An item is published by the producer's store of `tail` after it was written, and freed by
//! the consumer's store of `head` after it was read, so a process that dies at any point
//! loses nothing and leaves nothing half-written: an item whose `put` returned is
//! delivered exactly once, unless the queue is dropped. Every index read from shared memory
//! is validated (`Corrupt` otherwise); slot offsets come from the handle's own index, so no
//! access is ever out of bounds.
//!
//! # Waiting
//! Blocking calls spin about 20 µs, then sleep on a futex that the other side bumps only
//! when someone sleeps (a flag it reads with each item). To keep the per-item path free of
//! a full fence, a sleeper's first nap is short ([`FIRST_NAP`]): an item put at the very
//! moment its consumer falls asleep is seen within that nap instead of at once; nothing is
//! ever missed for longer.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytemuck::Pod;

use crate::error::{Error, ErrorKind, Result};
use crate::ipc::error::{
    GetError, GetTimeoutError, Outcome, PutError, PutTimeoutError, TryGetError, TryPutError,
};
use crate::segment::region::{type_tag, Region};
use crate::segment::shared_mem::{Anchored, SharedMem};
use crate::segment::trailer::SegmentKind;
use crate::segment::CreateOptions;
use crate::sync::lock::{LIVENESS_PERIOD, SPIN};
use crate::sys::futex;
use crate::sys::lease::{self, Liveness};
use crate::sys::proc::process_token;

const MAGIC: u64 = u64::from_le_bytes(*b"NDSHMS01");
const HEADER: usize = 256;
const H_MAGIC: usize = 0;
const H_CAP: usize = 8;
const H_ITEM: usize = 16;
const H_TAG: usize = 24;
const H_BOUND: usize = 32;
/// The lease of the process holding the producer role (0: never held, [`RELEASED`]).
const H_PRODUCER: usize = 40;
const H_CONSUMER: usize = 48;
/// Written by the producer only (its own cache line).
const H_TAIL: usize = 64;
/// Written by the consumer only (its own cache line).
const H_HEAD: usize = 128;
/// Sleepers' flags and events: written only when someone sleeps.
const H_GET_WAITERS: usize = 192;
const H_PUT_EVENT: usize = 196;
const H_PUT_WAITERS: usize = 200;
const H_GET_EVENT: usize = 204;
/// A role word after its holder let go (a lease is never 1: its tag byte is not 0).
const RELEASED: u64 = 1;
/// A sleeper's first nap: bounds how late an item put while its consumer fell asleep is
/// seen (see the module docs).
const FIRST_NAP: Duration = Duration::from_micros(100);

/// Why a call did not complete (made into the typed errors out of line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    WouldBlock,
    Timeout,
    Disconnected,
    Corrupt,
    WrongProcess,
}

impl Stop {
    #[cold]
    fn outcome(self, putting: bool) -> Outcome {
        match self {
            Stop::WouldBlock if putting => Outcome::Full,
            Stop::WouldBlock => Outcome::Empty,
            Stop::Timeout => Outcome::Timeout,
            Stop::Disconnected => Outcome::Disconnected,
            Stop::Corrupt => Outcome::Failed(Error::new(
                ErrorKind::Corrupt,
                "the SPSC queue's shared memory holds indices no queue has (it was \
                 overwritten); it cannot be used any more: make a new one",
            )),
            Stop::WrongProcess => Outcome::Failed(Error::new(
                ErrorKind::WrongProcess,
                "an SpscProducer/SpscConsumer is bound to the process that claimed it (this \
                 is a copy inherited through fork): claim the role in this process with \
                 producer()/consumer() after the other process dropped it",
            )),
        }
    }
}

/// A bounded single-producer single-consumer queue of `Pod` items in shared memory: one
/// [`SpscProducer`] and one [`SpscConsumer`] at a time, each in any process. The fastest
/// way to stream items from one process to another (about as fast as the in-process
/// `rtrb` ring; see `examples/primitives_table.rs`).
///
/// Named ([`create`](Self::create) / [`open`](Self::open)) or anonymous ([`new`](Self::new),
/// shared with children forked after it). The queue itself only makes the two role
/// handles: [`producer`](Self::producer) and [`consumer`](Self::consumer) claim a role for
/// the calling process (refused while another live process, or another handle of this
/// one, holds it; the role of a dead process is taken over). A role handle is bound to its
/// process: a copy inherited through `fork` fails with [`ErrorKind::WrongProcess`].
///
/// Semantics: nothing is lost or duplicated, whoever dies when (see the module docs); a
/// consumer's get on an empty queue whose producer let go of its role (dropped it) or died
/// reports `Disconnected`, after taking everything it put; a new producer revives the queue.
/// `try_` calls are bounded; blocking calls sleep after about 20 µs.
///
/// # Examples
/// ```
/// use ndshm::SpscQueue;
/// let q = SpscQueue::<u64>::new(1024)?;
/// ndshm::scope(|s| -> ndshm::Result<()> {
///     s.spawn(|| -> ndshm::Result<()> {
///         let tx = q.producer()?;
///         for i in 0..10_000u64 {
///             tx.put(i)?;
///         }
///         Ok(())
///     })?;
///     let rx = q.consumer()?;
///     let mut sum = 0;
///     while let Ok(v) = rx.get() {
///         sum += v;
///     }
///     assert_eq!(sum, 10_000 * 9_999 / 2); // then Disconnected: the producer exited
///     Ok(())
/// })?;
/// # Ok::<(), ndshm::Error>(())
/// ```
pub struct SpscQueue<T: Pod> {
    region: Anchored<Region>,
    bound: u64,
    mask: u64,
    _marker: PhantomData<fn(T) -> T>,
}

impl<T: Pod> SpscQueue<T> {
    /// An anonymous queue of `capacity` items (exactly), shared with children forked after
    /// it.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for a zero capacity, [`ErrorKind::SizeOverflow`], an
    /// OS error when mapping fails.
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::SpscQueue::<u32>::new(3)?;
    /// assert_eq!(q.capacity(), 3);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn new(capacity: usize) -> Result<Self> {
        Self::make(None, capacity)
    }

    /// Creates a named SPSC queue segment of `capacity` items; another process
    /// [`open`](Self::open)s it by name.
    ///
    /// # Errors
    /// As [`new`](Self::new), plus the errors of segment creation.
    ///
    /// # Examples
    /// ```
    /// use ndshm::{CreateOptions, SpscQueue};
    /// let q = SpscQueue::<u64>::create(CreateOptions::unique(), 8)?;
    /// let other = SpscQueue::<u64>::open(q.name().unwrap())?; // as another process would
    /// q.producer()?.put(5)?;
    /// assert_eq!(other.consumer()?.get()?, 5);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn create(segment: impl Into<CreateOptions>, capacity: usize) -> Result<Self> {
        Self::make(Some(segment.into()), capacity)
    }

    /// Attaches the SPSC queue segment `name`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`], [`ErrorKind::KindMismatch`], [`ErrorKind::TypeMismatch`]
    /// (another item type), [`ErrorKind::InvalidHeader`] (not an SPSC queue).
    ///
    /// # Examples
    /// ```
    /// use ndshm::{ErrorKind, SpscQueue};
    /// let err = SpscQueue::<u8>::open("no-such-spsc-here").unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::NotFound);
    /// ```
    pub fn open(name: &str) -> Result<Self> {
        Self::attach(Region::open(name, SegmentKind::Queue, HEADER)?)
    }

    fn make(named: Option<CreateOptions>, capacity: usize) -> Result<Self> {
        if capacity == 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "an SPSC queue needs a capacity of at least 1",
            ));
        }
        let overflow = || {
            Error::new(
                ErrorKind::SizeOverflow,
                "SPSC queue capacity times item size overflows the address space",
            )
        };
        let cap = capacity.checked_next_power_of_two().ok_or_else(overflow)?;
        let len = cap
            .checked_mul(std::mem::size_of::<T>())
            .and_then(|n| n.checked_add(HEADER))
            .ok_or_else(overflow)?;
        let init = |mem: &mut [u8]| {
            let mut put = |off: usize, v: u64| mem[off..off + 8].copy_from_slice(&v.to_le_bytes());
            put(H_MAGIC, MAGIC);
            put(H_CAP, cap as u64);
            put(H_ITEM, std::mem::size_of::<T>() as u64);
            put(H_TAG, type_tag::<T>());
            put(H_BOUND, capacity as u64);
            Ok(())
        };
        let region = match named {
            Some(opts) => Region::create(&opts, SegmentKind::Queue, len, init)?,
            None => Region::anonymous(len, init)?,
        };
        Self::attach(region)
    }

    fn attach(region: Region) -> Result<Self> {
        let what = region.name().map_or("anonymous SPSC queue".into(), |n| {
            format!("SPSC queue '{n}'")
        });
        let mem = region.payload();
        let avail = mem.len();
        let bad = |why: String| {
            Err(Error::new(
                ErrorKind::InvalidHeader,
                format!("{what}: {why}; the segment is corrupted or not an SPSC queue"),
            ))
        };
        if avail < HEADER || mem.addr() % 64 != 0 {
            return bad(format!("{avail} bytes is too short for its header"));
        }
        let word = |off: usize| mem.u64(off).load(Ordering::Acquire);
        if word(H_MAGIC) != MAGIC {
            return bad("bad magic".into());
        }
        if word(H_ITEM) != std::mem::size_of::<T>() as u64 || word(H_TAG) != type_tag::<T>() {
            return Err(Error::new(
                ErrorKind::TypeMismatch,
                format!(
                    "{what} holds other items than the ones asked for ({} bytes each): open \
                     it with the item type it was created with",
                    word(H_ITEM)
                ),
            ));
        }
        let (cap, bound) = (word(H_CAP), word(H_BOUND));
        let fits = (cap as usize)
            .checked_mul(std::mem::size_of::<T>())
            .and_then(|n| n.checked_add(HEADER))
            .is_some_and(|n| n <= avail);
        if !cap.is_power_of_two() || bound == 0 || bound > cap || !fits {
            return bad(format!(
                "capacity {bound} in a ring of {cap} does not fit {avail} bytes"
            ));
        }
        Ok(SpscQueue {
            region: Anchored::new(region),
            bound,
            mask: cap - 1,
            _marker: PhantomData,
        })
    }

    #[inline]
    fn mem(&self) -> SharedMem<'_> {
        self.region.mem()
    }

    #[inline]
    fn slot_off(&self, pos: u64) -> usize {
        HEADER + (pos & self.mask) as usize * std::mem::size_of::<T>()
    }

    /// Claims the role whose word is at `off` for this process.
    fn claim(&self, off: usize, role: &str) -> Result<(u64, u64)> {
        let word = self.mem().u64(off);
        let me = lease::holder();
        loop {
            let cur = word.load(Ordering::Acquire);
            if cur == me {
                return Err(Error::new(
                    ErrorKind::AlreadyOpen,
                    format!(
                        "this process already holds the {role} of this SPSC queue: an SPSC \
                         queue has one {role} at a time; use that handle, or drop it first"
                    ),
                ));
            }
            let free = cur == 0 || cur == RELEASED || lease::check(cur) == Liveness::Dead;
            if !free {
                return Err(Error::new(
                    ErrorKind::AlreadyOpen,
                    format!(
                        "another live process holds the {role} of this SPSC queue: an SPSC \
                         queue has one {role} at a time; use a Queue for several, or drop \
                         the other {role} first"
                    ),
                ));
            }
            if word
                .compare_exchange(cur, me, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return Ok((me, process_token()));
            }
        }
    }

    /// Lets go of the role at `off` claimed with `lease`, and wakes every sleeper (the
    /// other side learns it at once).
    fn release(&self, off: usize, lease: u64) {
        let mem = self.mem();
        let _ = mem
            .u64(off)
            .compare_exchange(lease, RELEASED, Ordering::AcqRel, Ordering::Relaxed);
        for ev in [H_PUT_EVENT, H_GET_EVENT] {
            mem.u32(ev).fetch_add(1, Ordering::SeqCst);
            futex::wake(mem.u32(ev), i32::MAX);
        }
    }

    /// Claims the producer role for this process: the one handle that puts.
    ///
    /// # Errors
    /// [`ErrorKind::AlreadyOpen`] while this process or another live one holds it;
    /// [`ErrorKind::Corrupt`] when the queue's indices were overwritten.
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::SpscQueue::<u8>::new(4)?;
    /// let tx = q.producer()?;
    /// assert!(q.producer().is_err()); // one at a time
    /// drop(tx);
    /// q.producer()?.put(1)?;
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn producer(&self) -> Result<SpscProducer<'_, T>> {
        let (lease, token) = self.claim(H_PRODUCER, "producer")?;
        let p = SpscProducer {
            q: self,
            lease,
            token,
            tail: Cell::new(0),
            head: Cell::new(0),
        };
        let mem = self.mem();
        let tail = mem.u64(H_TAIL).load(Ordering::Acquire);
        let head = mem.u64(H_HEAD).load(Ordering::Acquire);
        if tail.wrapping_sub(head) > self.bound {
            return Err(Error::from(Stop::Corrupt.outcome(true).get()));
        }
        p.tail.set(tail);
        p.head.set(head);
        Ok(p)
    }

    /// Claims the consumer role for this process: the one handle that gets.
    ///
    /// # Errors
    /// As [`producer`](Self::producer).
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::SpscQueue::<u8>::new(4)?;
    /// q.producer()?.put(3)?;
    /// let rx = q.consumer()?;
    /// assert_eq!(rx.get()?, 3);
    /// assert!(rx.get().unwrap_err().is_disconnected()); // the producer was dropped
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn consumer(&self) -> Result<SpscConsumer<'_, T>> {
        let (lease, token) = self.claim(H_CONSUMER, "consumer")?;
        let c = SpscConsumer {
            q: self,
            lease,
            token,
            head: Cell::new(0),
            tail: Cell::new(0),
            checked: Cell::new(None),
        };
        let mem = self.mem();
        let head = mem.u64(H_HEAD).load(Ordering::Acquire);
        let tail = mem.u64(H_TAIL).load(Ordering::Acquire);
        if tail.wrapping_sub(head) > self.bound {
            return Err(Error::from(Stop::Corrupt.outcome(false).get()));
        }
        c.head.set(head);
        c.tail.set(head);
        Ok(c)
    }

    /// The capacity asked for: at most this many items are in the queue at once.
    pub fn capacity(&self) -> usize {
        self.bound as usize
    }

    /// Items in the queue now (a snapshot).
    pub fn len(&self) -> usize {
        let mem = self.mem();
        let head = mem.u64(H_HEAD).load(Ordering::Acquire);
        let tail = mem.u64(H_TAIL).load(Ordering::Acquire);
        tail.wrapping_sub(head).min(self.bound) as usize
    }

    /// Whether the queue is empty now (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The segment name, or `None` for an anonymous queue.
    pub fn name(&self) -> Option<&str> {
        self.region.owner().name()
    }

    /// Wakes the sleepers flagged at `waiters` (bumping `event`), if any: one load when
    /// nobody sleeps.
    #[inline]
    fn notify(mem: SharedMem<'_>, waiters: usize, event: usize) {
        if mem.u32(waiters).load(Ordering::SeqCst) != 0 {
            wake(mem.u32(waiters), mem.u32(event));
        }
    }

    /// Spins about 20 µs retrying `attempt`, then sleeps on `event` (flagged at `waiters`)
    /// between attempts, until it succeeds, fails, or `deadline` passes. `attempt` is told
    /// whether the wait reached its sleeping phase (where costlier checks belong).
    fn wait<R>(
        &self,
        deadline: Option<Instant>,
        waiters: usize,
        event: usize,
        mut attempt: impl FnMut(bool) -> std::result::Result<R, Stop>,
    ) -> std::result::Result<R, Stop> {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            match attempt(false) {
                Err(Stop::WouldBlock) => {}
                other => return other,
            }
            std::hint::spin_loop();
            spins += 1;
            if spins % 64 == 0 && start.elapsed() >= SPIN {
                break;
            }
        }
        let mem = self.mem();
        let (waiters, event) = (mem.u32(waiters), mem.u32(event));
        let mut nap = FIRST_NAP;
        loop {
            let ev = event.load(Ordering::SeqCst);
            waiters.store(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            match attempt(true) {
                Err(Stop::WouldBlock) => {}
                other => return other,
            }
            let mut slice = nap;
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Stop::Timeout);
                }
                slice = slice.min(left);
            }
            futex::wait(event, ev, Some(slice));
            nap = if event.load(Ordering::SeqCst) != ev {
                FIRST_NAP
            } else {
                (nap * 8).min(LIVENESS_PERIOD)
            };
        }
    }
}

/// Takes the `waiters` flag down and, if this call did, bumps `event` and wakes every
/// sleeper on it (out of line: someone sleeps).
#[cold]
#[inline(never)]
fn wake(waiters: &AtomicU32, event: &AtomicU32) {
    if waiters.swap(0, Ordering::SeqCst) != 0 {
        event.fetch_add(1, Ordering::SeqCst);
        futex::wake(event, i32::MAX);
    }
}

impl<T: Pod> fmt::Debug for SpscQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpscQueue")
            .field("name", &self.name())
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

/// The producer of an [`SpscQueue`]: the one handle that puts, bound to the process that
/// claimed it ([`SpscQueue::producer`]). Dropping it lets go of the role: the consumer,
/// once it took everything, gets `Disconnected` until a new producer comes.
///
/// # Examples
/// ```
/// use ndshm::{SpscQueue, TryPutError};
/// let q = SpscQueue::<u32>::new(2)?;
/// let tx = q.producer()?;
/// tx.try_put(1)?;
/// tx.try_put(2)?;
/// assert_eq!(tx.try_put(3), Err(TryPutError::Full(3)));
/// # Ok::<(), ndshm::Error>(())
/// ```
pub struct SpscProducer<'q, T: Pod> {
    q: &'q SpscQueue<T>,
    lease: u64,
    token: u64,
    /// The next position to fill (the shared `tail` is this handle's to write).
    tail: Cell<u64>,
    /// The consumer's `head` as last read.
    head: Cell<u64>,
}

impl<T: Pod> SpscProducer<'_, T> {
    /// One attempt to put `item`.
    #[inline]
    fn attempt(&self, item: &T) -> std::result::Result<(), Stop> {
        if process_token() != self.token {
            return Err(Stop::WrongProcess);
        }
        let q = self.q;
        let mem = q.mem();
        let tail = self.tail.get();
        if tail.wrapping_sub(self.head.get()) >= q.bound {
            let head = mem.u64(H_HEAD).load(Ordering::Acquire);
            let used = tail.wrapping_sub(head);
            if used > q.bound {
                // No consumer moves `head` past `tail` or more than a lap behind.
                return Err(Stop::Corrupt);
            }
            self.head.set(head);
            if used == q.bound {
                return Err(Stop::WouldBlock);
            }
        }
        mem.write_pod(q.slot_off(tail), item);
        let next = tail.wrapping_add(1);
        self.tail.set(next);
        mem.u64(H_TAIL).store(next, Ordering::Release);
        SpscQueue::<T>::notify(mem, H_GET_WAITERS, H_PUT_EVENT);
        Ok(())
    }

    fn put_wait(&self, item: &T, deadline: Option<Instant>) -> std::result::Result<(), Stop> {
        match self.attempt(item) {
            Err(Stop::WouldBlock) => {}
            other => return other,
        }
        self.q
            .wait(deadline, H_PUT_WAITERS, H_GET_EVENT, |_| self.attempt(item))
    }

    /// Puts `item`, waiting while the queue is full (as long as it takes, whether or not a
    /// consumer holds its role: a new consumer may come; bound the wait with
    /// [`put_timeout`](Self::put_timeout)).
    ///
    /// # Errors
    /// [`PutError::Failed`] of [`ErrorKind::WrongProcess`] (a copy inherited through fork)
    /// or [`ErrorKind::Corrupt`]; the item comes back.
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::SpscQueue::<u64>::new(4)?;
    /// q.producer()?.put(9)?;
    /// assert_eq!(q.len(), 1);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    #[inline]
    pub fn put(&self, item: T) -> std::result::Result<(), PutError<T>> {
        self.put_wait(&item, None)
            .map_err(|e| e.outcome(true).put(item))
    }

    /// Puts `item` if there is room now (bounded time).
    ///
    /// # Errors
    /// [`TryPutError::Full`], [`TryPutError::Failed`] (as [`put`](Self::put)), with the
    /// item.
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::SpscQueue::<u8>::new(1)?;
    /// let tx = q.producer()?;
    /// tx.try_put(1)?;
    /// assert!(tx.try_put(2).unwrap_err().is_full());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    #[inline]
    pub fn try_put(&self, item: T) -> std::result::Result<(), TryPutError<T>> {
        self.attempt(&item)
            .map_err(|e| e.outcome(true).try_put(item))
    }

    /// Puts `item`, waiting at most `timeout` for room.
    ///
    /// # Errors
    /// [`PutTimeoutError::Timeout`], [`PutTimeoutError::Failed`], with the item.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let q = ndshm::SpscQueue::<u8>::new(1)?;
    /// let tx = q.producer()?;
    /// tx.put(1)?;
    /// assert!(tx.put_timeout(2, Duration::from_millis(1)).unwrap_err().is_timeout());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn put_timeout(
        &self,
        item: T,
        timeout: Duration,
    ) -> std::result::Result<(), PutTimeoutError<T>> {
        self.put_wait(&item, Instant::now().checked_add(timeout))
            .map_err(|e| e.outcome(true).put_timeout(item))
    }

    /// One attempt to put a prefix of `items`: as many as there is room for, with one
    /// store of `tail` (and one look at the sleepers' flag). `WouldBlock` when none fits;
    /// `Ok(0)` only for an empty slice.
    #[inline]
    fn attempt_slice(&self, items: &[T]) -> std::result::Result<usize, Stop> {
        if process_token() != self.token {
            return Err(Stop::WrongProcess);
        }
        if items.is_empty() {
            return Ok(0);
        }
        let q = self.q;
        let mem = q.mem();
        let tail = self.tail.get();
        // The cached `head` was validated when read: `tail - head <= bound`.
        let mut free = q.bound - tail.wrapping_sub(self.head.get());
        if free < items.len() as u64 {
            let head = mem.u64(H_HEAD).load(Ordering::Acquire);
            let used = tail.wrapping_sub(head);
            if used > q.bound {
                return Err(Stop::Corrupt);
            }
            self.head.set(head);
            free = q.bound - used;
            if free == 0 {
                return Err(Stop::WouldBlock);
            }
        }
        let n = (free as usize).min(items.len());
        let slot = (tail & q.mask) as usize;
        let first = n.min(q.mask as usize + 1 - slot);
        mem.write(q.slot_off(tail), bytemuck::cast_slice(&items[..first]));
        if first < n {
            mem.write(HEADER, bytemuck::cast_slice(&items[first..n]));
        }
        let next = tail.wrapping_add(n as u64);
        self.tail.set(next);
        mem.u64(H_TAIL).store(next, Ordering::Release);
        SpscQueue::<T>::notify(mem, H_GET_WAITERS, H_PUT_EVENT);
        Ok(n)
    }

    /// Puts all of `items`, waiting for room until `deadline`; on a stop, how many were
    /// put.
    fn put_slice_wait(
        &self,
        items: &[T],
        deadline: Option<Instant>,
    ) -> std::result::Result<(), (Stop, usize)> {
        let mut done = 0;
        while done < items.len() {
            let rest = &items[done..];
            let put = match self.attempt_slice(rest) {
                Err(Stop::WouldBlock) => self.q.wait(deadline, H_PUT_WAITERS, H_GET_EVENT, |_| {
                    self.attempt_slice(rest)
                }),
                other => other,
            };
            match put {
                Ok(n) => done += n,
                Err(stop) => return Err((stop, done)),
            }
        }
        Ok(())
    }

    /// Puts as many of `items` as there is room for now, in order, and returns how many
    /// (bounded time). The batch costs one publish of the queue's index and one look at
    /// the sleepers' flag, however many items it holds: the fast way to stream (a
    /// sleeping consumer is woken exactly as by [`try_put`](Self::try_put)). `Ok(0)` only
    /// for an empty slice.
    ///
    /// # Errors
    /// [`TryPutError::Full`] when not one item fits; [`TryPutError::Failed`] (as
    /// [`put`](Self::put)). Nothing was put in either case, and the slice comes back.
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::SpscQueue::<u32>::new(4)?;
    /// let tx = q.producer()?;
    /// assert_eq!(tx.try_put_slice(&[1, 2, 3])?, 3);
    /// assert_eq!(tx.try_put_slice(&[4, 5, 6])?, 1); // room for one more
    /// assert!(tx.try_put_slice(&[5, 6]).unwrap_err().is_full());
    /// let mut buf = [0; 8];
    /// assert_eq!(q.consumer()?.try_get_into(&mut buf)?, 4);
    /// assert_eq!(buf[..4], [1, 2, 3, 4]);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    #[inline]
    pub fn try_put_slice<'a>(
        &self,
        items: &'a [T],
    ) -> std::result::Result<usize, TryPutError<&'a [T]>> {
        self.attempt_slice(items)
            .map_err(|e| e.outcome(true).try_put(items))
    }

    /// Puts all of `items` in order, waiting for room as [`put`](Self::put) does; each
    /// part that fits is published at once, with one store of the index. A slice longer
    /// than the capacity goes in parts as the consumer makes room.
    ///
    /// # Errors
    /// [`PutError::Failed`] (as [`put`](Self::put)), with the items that were not put
    /// (a suffix of `items`; the ones before it were put and will be delivered).
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::SpscQueue::<u64>::new(1024)?;
    /// let items: Vec<u64> = (0..10_000).collect();
    /// ndshm::scope(|s| -> ndshm::Result<()> {
    ///     s.spawn(|| -> ndshm::Result<()> {
    ///         q.producer()?.put_slice(&items)?; // ten times the capacity
    ///         Ok(())
    ///     })?;
    ///     let rx = q.consumer()?;
    ///     let (mut buf, mut got) = ([0u64; 64], Vec::new());
    ///     while let Ok(n) = rx.get_into(&mut buf) {
    ///         got.extend_from_slice(&buf[..n]);
    ///     }
    ///     assert_eq!(got, items); // then Disconnected: the producer exited
    ///     Ok(())
    /// })?;
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn put_slice<'a>(&self, items: &'a [T]) -> std::result::Result<(), PutError<&'a [T]>> {
        self.put_slice_wait(items, None)
            .map_err(|(e, done)| e.outcome(true).put(&items[done..]))
    }

    /// Puts all of `items` in order, waiting at most `timeout` in all for room.
    ///
    /// # Errors
    /// [`PutTimeoutError::Timeout`], [`PutTimeoutError::Failed`], with the items that
    /// were not put (a suffix of `items`; the ones before it were put).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let q = ndshm::SpscQueue::<u8>::new(2)?;
    /// let tx = q.producer()?;
    /// let e = tx.put_slice_timeout(&[1, 2, 3], Duration::from_millis(1)).unwrap_err();
    /// assert!(e.is_timeout());
    /// assert_eq!(e.into_inner(), [3]); // 1 and 2 were put
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn put_slice_timeout<'a>(
        &self,
        items: &'a [T],
        timeout: Duration,
    ) -> std::result::Result<(), PutTimeoutError<&'a [T]>> {
        self.put_slice_wait(items, Instant::now().checked_add(timeout))
            .map_err(|(e, done)| e.outcome(true).put_timeout(&items[done..]))
    }
}

impl<T: Pod> Drop for SpscProducer<'_, T> {
    fn drop(&mut self) {
        // A copy inherited through fork holds nothing: only the claiming process lets go.
        if process_token() == self.token {
            self.q.release(H_PRODUCER, self.lease);
        }
    }
}

impl<T: Pod> fmt::Debug for SpscProducer<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpscProducer")
            .field("queue", self.q)
            .finish()
    }
}

/// The consumer of an [`SpscQueue`]: the one handle that gets, bound to the process that
/// claimed it ([`SpscQueue::consumer`]).
///
/// # Examples
/// ```
/// use ndshm::{SpscQueue, TryGetError};
/// let q = SpscQueue::<u32>::new(2)?;
/// let tx = q.producer()?;
/// let rx = q.consumer()?;
/// assert_eq!(rx.try_get(), Err(TryGetError::Empty));
/// tx.put(7)?;
/// assert_eq!(rx.try_get(), Ok(7));
/// # Ok::<(), ndshm::Error>(())
/// ```
pub struct SpscConsumer<'q, T: Pod> {
    q: &'q SpscQueue<T>,
    lease: u64,
    token: u64,
    /// The next position to take (the shared `head` is this handle's to write).
    head: Cell<u64>,
    /// The producer's `tail` as last read.
    tail: Cell<u64>,
    /// When the producer's liveness was last checked (for `try_get` loops).
    checked: Cell<Option<Instant>>,
}

impl<T: Pod> SpscConsumer<'_, T> {
    /// One attempt to take an item. `check`: on an empty queue, whether to check the
    /// producer's liveness now (else only a released role counts as gone).
    #[inline]
    fn attempt(&self, check: bool) -> std::result::Result<T, Stop> {
        if process_token() != self.token {
            return Err(Stop::WrongProcess);
        }
        let q = self.q;
        let mem = q.mem();
        let head = self.head.get();
        if head == self.tail.get() {
            self.refresh(head, check)?;
        }
        let item = mem.read_pod::<T>(q.slot_off(head));
        let next = head.wrapping_add(1);
        self.head.set(next);
        mem.u64(H_HEAD).store(next, Ordering::Release);
        SpscQueue::<T>::notify(mem, H_PUT_WAITERS, H_GET_EVENT);
        Ok(item)
    }

    /// The cached `tail` says empty: reads the producer's. Empty still: `Disconnected` if
    /// the producer is gone (and nothing came meanwhile), else `WouldBlock`.
    #[inline(never)]
    fn refresh(&self, head: u64, check: bool) -> std::result::Result<(), Stop> {
        if self.reload(head)? != 0 {
            return Ok(());
        }
        let q = self.q;
        let mem = q.mem();
        if self.producer_gone(check) {
            // Everything it put is visible now (its puts came before its release or death).
            let tail = mem.u64(H_TAIL).load(Ordering::Acquire);
            if tail == head {
                return Err(Stop::Disconnected);
            }
            let avail = tail.wrapping_sub(head);
            if avail > q.bound {
                return Err(Stop::Corrupt);
            }
            self.tail.set(tail);
            return Ok(());
        }
        Err(Stop::WouldBlock)
    }

    /// Reads the producer's `tail` into the cache; the items available from `head`.
    #[inline]
    fn reload(&self, head: u64) -> std::result::Result<u64, Stop> {
        let tail = self.q.mem().u64(H_TAIL).load(Ordering::Acquire);
        let avail = tail.wrapping_sub(head);
        if avail > self.q.bound {
            return Err(Stop::Corrupt);
        }
        self.tail.set(tail);
        Ok(avail)
    }

    /// Whether the producer let go of its role or (with `check`, at most every
    /// [`LIVENESS_PERIOD`]) died.
    fn producer_gone(&self, check: bool) -> bool {
        let p = self.q.mem().u64(H_PRODUCER).load(Ordering::SeqCst);
        if p == RELEASED {
            return true;
        }
        if p == 0 || !check {
            return false;
        }
        let now = Instant::now();
        if self
            .checked
            .get()
            .is_some_and(|t| now.duration_since(t) < LIVENESS_PERIOD)
        {
            return false;
        }
        self.checked.set(Some(now));
        lease::check(p) == Liveness::Dead
    }

    fn get_wait(&self, deadline: Option<Instant>) -> std::result::Result<T, Stop> {
        match self.attempt(false) {
            Err(Stop::WouldBlock) => {}
            other => return other,
        }
        self.q.wait(deadline, H_GET_WAITERS, H_PUT_EVENT, |asleep| {
            // The producer's liveness (a clock read, maybe system calls) only once the
            // wait sleeps; a released role is seen at once either way.
            self.attempt(asleep)
        })
    }

    /// Takes an item, waiting while the queue is empty.
    ///
    /// # Errors
    /// [`GetError::Disconnected`] when the producer dropped its role or died and
    /// everything it put was taken; [`GetError::Failed`] of [`ErrorKind::WrongProcess`] or
    /// [`ErrorKind::Corrupt`].
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::SpscQueue::<u64>::new(4)?;
    /// q.producer()?.put(4)?;
    /// assert_eq!(q.consumer()?.get()?, 4);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    #[inline]
    pub fn get(&self) -> std::result::Result<T, GetError> {
        self.get_wait(None).map_err(|e| e.outcome(false).get())
    }

    /// Takes an item if there is one now (bounded time).
    ///
    /// # Errors
    /// [`TryGetError::Empty`], [`TryGetError::Disconnected`], [`TryGetError::Failed`] (as
    /// [`get`](Self::get)).
    ///
    /// # Examples
    /// ```
    /// use ndshm::{SpscQueue, TryGetError};
    /// let q = SpscQueue::<u8>::new(1)?;
    /// let _tx = q.producer()?;
    /// assert_eq!(q.consumer()?.try_get(), Err(TryGetError::Empty));
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    #[inline]
    pub fn try_get(&self) -> std::result::Result<T, TryGetError> {
        self.attempt(true).map_err(|e| e.outcome(false).try_get())
    }

    /// Takes an item, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`GetTimeoutError::Timeout`], [`GetTimeoutError::Disconnected`],
    /// [`GetTimeoutError::Failed`].
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let q = ndshm::SpscQueue::<u8>::new(1)?;
    /// let _tx = q.producer()?;
    /// let e = q.consumer()?.get_timeout(Duration::from_millis(1)).unwrap_err();
    /// assert!(e.is_timeout());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> std::result::Result<T, GetTimeoutError> {
        self.get_wait(Instant::now().checked_add(timeout))
            .map_err(|e| e.outcome(false).get_timeout())
    }

    /// One attempt to fill a prefix of `buf`: as many items as are there, with one store
    /// of `head`. `check` as for [`attempt`](Self::attempt); `Ok(0)` only for an empty
    /// `buf`.
    #[inline]
    fn attempt_into(&self, buf: &mut [T], check: bool) -> std::result::Result<usize, Stop> {
        if process_token() != self.token {
            return Err(Stop::WrongProcess);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let q = self.q;
        let mem = q.mem();
        let head = self.head.get();
        let mut avail = self.tail.get().wrapping_sub(head);
        if avail < buf.len() as u64 {
            if avail == 0 {
                self.refresh(head, check)?;
                avail = self.tail.get().wrapping_sub(head);
            } else {
                avail = self.reload(head)?;
            }
        }
        let n = (avail as usize).min(buf.len());
        let slot = (head & q.mask) as usize;
        let first = n.min(q.mask as usize + 1 - slot);
        mem.read(
            q.slot_off(head),
            bytemuck::cast_slice_mut(&mut buf[..first]),
        );
        if first < n {
            mem.read(HEADER, bytemuck::cast_slice_mut(&mut buf[first..n]));
        }
        let next = head.wrapping_add(n as u64);
        self.head.set(next);
        mem.u64(H_HEAD).store(next, Ordering::Release);
        SpscQueue::<T>::notify(mem, H_PUT_WAITERS, H_GET_EVENT);
        Ok(n)
    }

    fn get_into_wait(
        &self,
        buf: &mut [T],
        deadline: Option<Instant>,
    ) -> std::result::Result<usize, Stop> {
        match self.attempt_into(buf, false) {
            Err(Stop::WouldBlock) => {}
            other => return other,
        }
        self.q.wait(deadline, H_GET_WAITERS, H_PUT_EVENT, |asleep| {
            self.attempt_into(buf, asleep)
        })
    }

    /// Takes as many items as there are now, up to `buf.len()`, into the front of `buf`
    /// in order, and returns how many (bounded time). One publish of the queue's index for
    /// the whole batch (a producer waiting for room is woken as by
    /// [`try_get`](Self::try_get)). `Ok(0)` only for an empty `buf`.
    ///
    /// # Errors
    /// [`TryGetError::Empty`], [`TryGetError::Disconnected`], [`TryGetError::Failed`] (as
    /// [`try_get`](Self::try_get)); nothing was taken.
    ///
    /// # Examples
    /// ```
    /// use ndshm::{SpscQueue, TryGetError};
    /// let q = SpscQueue::<u16>::new(8)?;
    /// let tx = q.producer()?;
    /// let rx = q.consumer()?;
    /// let mut buf = [0; 2];
    /// assert_eq!(rx.try_get_into(&mut buf), Err(TryGetError::Empty));
    /// tx.try_put_slice(&[1, 2, 3])?;
    /// assert_eq!(rx.try_get_into(&mut buf)?, 2);
    /// assert_eq!(buf, [1, 2]);
    /// assert_eq!(rx.try_get_into(&mut buf)?, 1);
    /// assert_eq!(buf[0], 3);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    #[inline]
    pub fn try_get_into(&self, buf: &mut [T]) -> std::result::Result<usize, TryGetError> {
        self.attempt_into(buf, true)
            .map_err(|e| e.outcome(false).try_get())
    }

    /// Takes at least one item (waiting while the queue is empty, as [`get`](Self::get)
    /// does) and as many more as are there, up to `buf.len()`, into the front of `buf`;
    /// returns how many. `Ok(0)` only for an empty `buf`.
    ///
    /// # Errors
    /// As [`get`](Self::get): [`GetError::Disconnected`] once the producer is gone and
    /// everything it put was taken.
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::SpscQueue::<i32>::new(8)?;
    /// q.producer()?.put_slice(&[-1, -2, -3])?;
    /// let rx = q.consumer()?;
    /// let mut buf = [0; 64];
    /// assert_eq!(rx.get_into(&mut buf)?, 3);
    /// assert_eq!(buf[..3], [-1, -2, -3]);
    /// assert!(rx.get_into(&mut buf).unwrap_err().is_disconnected()); // producer dropped
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn get_into(&self, buf: &mut [T]) -> std::result::Result<usize, GetError> {
        self.get_into_wait(buf, None)
            .map_err(|e| e.outcome(false).get())
    }

    /// As [`get_into`](Self::get_into), waiting at most `timeout` for the first item.
    ///
    /// # Errors
    /// [`GetTimeoutError::Timeout`], [`GetTimeoutError::Disconnected`],
    /// [`GetTimeoutError::Failed`].
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let q = ndshm::SpscQueue::<u8>::new(4)?;
    /// let _tx = q.producer()?;
    /// let mut buf = [0; 4];
    /// let e = q.consumer()?.get_into_timeout(&mut buf, Duration::from_millis(1));
    /// assert!(e.unwrap_err().is_timeout());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn get_into_timeout(
        &self,
        buf: &mut [T],
        timeout: Duration,
    ) -> std::result::Result<usize, GetTimeoutError> {
        self.get_into_wait(buf, Instant::now().checked_add(timeout))
            .map_err(|e| e.outcome(false).get_timeout())
    }
}

impl<T: Pod> Drop for SpscConsumer<'_, T> {
    fn drop(&mut self) {
        if process_token() == self.token {
            self.q.release(H_CONSUMER, self.lease);
        }
    }
}

impl<T: Pod> fmt::Debug for SpscConsumer<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpscConsumer")
            .field("queue", self.q)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_laps_full_empty_roles() {
        let q = SpscQueue::<u64>::new(3).unwrap();
        let tx = q.producer().unwrap();
        let rx = q.consumer().unwrap();
        assert!(q.producer().is_err());
        assert!(q.consumer().is_err());
        for lap in 0..1000u64 {
            for i in 0..3 {
                tx.try_put(lap * 3 + i).unwrap();
            }
            assert_eq!(tx.try_put(9), Err(TryPutError::Full(9)));
            for i in 0..3 {
                assert_eq!(rx.try_get(), Ok(lap * 3 + i));
            }
            assert_eq!(rx.try_get(), Err(TryGetError::Empty));
        }
        tx.put(5).unwrap();
        drop(tx);
        assert_eq!(rx.get(), Ok(5));
        assert_eq!(rx.get(), Err(GetError::Disconnected));
        // A new producer revives it.
        let tx = q.producer().unwrap();
        tx.put(6).unwrap();
        assert_eq!(rx.get(), Ok(6));
        assert_eq!(
            rx.get_timeout(Duration::from_millis(5)),
            Err(GetTimeoutError::Timeout)
        );
    }

    #[test]
    fn overwritten_indices_are_corrupt_not_a_hang() {
        let q = SpscQueue::<u32>::new(4).unwrap();
        let tx = q.producer().unwrap();
        let rx = q.consumer().unwrap();
        q.mem().u64(H_TAIL).store(1 << 40, Ordering::SeqCst);
        assert_eq!(rx.try_get().unwrap_err().kind(), ErrorKind::Corrupt);
        q.mem().u64(H_HEAD).store(1 << 40, Ordering::SeqCst);
        for _ in 0..4 {
            let _ = tx.try_put(1);
        }
        assert_eq!(tx.try_put(1).unwrap_err().kind(), ErrorKind::Corrupt);
    }

    #[test]
    fn overwritten_indices_make_batches_corrupt_not_a_hang() {
        let q = SpscQueue::<u32>::new(4).unwrap();
        let tx = q.producer().unwrap();
        let rx = q.consumer().unwrap();
        let mut buf = [0u32; 8];
        q.mem().u64(H_TAIL).store(1 << 40, Ordering::SeqCst);
        let e = rx.try_get_into(&mut buf).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        let e = rx.get_into(&mut buf).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        q.mem().u64(H_HEAD).store(1 << 40, Ordering::SeqCst);
        let e = tx.try_put_slice(&[1; 8]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        let e = tx.put_slice(&[1; 8]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert_eq!(e.into_inner(), [1; 8]);
    }

    /// The wake-up protocol: a consumer asleep in `get_into` (its flag up) is woken by the
    /// batch's one publish, which bumps the event it sleeps on, as a single put does.
    #[test]
    fn a_consumer_sleeping_in_get_into_is_woken_by_a_batch_put() {
        let q = SpscQueue::<u64>::new(8).unwrap();
        let tx = q.producer().unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|s| {
            // Owned here: a failing assertion below drops it, so the consumer returns.
            let done_tx = done_tx;
            let q = &q;
            let consumer = s.spawn(move || {
                let rx = q.consumer().unwrap();
                let mut buf = [0u64; 8];
                let took = rx.get_into(&mut buf).unwrap();
                // Keep the role (whose release also bumps the event) until told.
                let _ = done_rx.recv();
                buf[..took].to_vec()
            });
            let deadline = Instant::now() + Duration::from_secs(30);
            while q.mem().u32(H_GET_WAITERS).load(Ordering::SeqCst) == 0 {
                assert!(
                    Instant::now() < deadline,
                    "the consumer never went to sleep"
                );
                std::thread::yield_now();
            }
            let ev = q.mem().u32(H_PUT_EVENT).load(Ordering::SeqCst);
            tx.put_slice(&[1, 2, 3]).unwrap();
            assert_ne!(
                q.mem().u32(H_PUT_EVENT).load(Ordering::SeqCst),
                ev,
                "the batch publish saw the sleeper's flag and bumped its event"
            );
            done_tx.send(()).unwrap();
            assert_eq!(consumer.join().unwrap(), [1, 2, 3]);
        });
    }
}
