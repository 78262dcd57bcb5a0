//! [`Queue<T>`]: a bounded multi-producer multi-consumer queue of `Pod` items in shared
//! memory, Python's `multiprocessing.Queue` for plain data; and [`RingSegment`], the
//! segment holding one ring that it shares with [`ByteQueue`](crate::ByteQueue).
//!
//! The protocol (slots, sequence numbers, recovery from dead peers, waiting) is in
//! [`super::ring`]; the typed errors in [`super::error`].

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytemuck::Pod;

use crate::error::{Error, ErrorKind, Result};
use crate::ipc::error::{
    GetError, GetTimeoutError, Outcome, PutError, PutTimeoutError, TryGetError, TryPutError,
};
use crate::ipc::holders::{self, Holders, Ready, Registration};
use crate::ipc::ring::{self, deadline, ring_layout, Fail, Ring, RingLayout, Wait};
use crate::segment::region::{type_tag, Region};
use crate::segment::shared_mem::Anchored;
use crate::segment::trailer::SegmentKind;
use crate::segment::CreateOptions;
use crate::sync::lock::LIVENESS_PERIOD;

/// Bytes after the ring: the magic word of the producer table, then its block (see
/// [`super::holders`]).
const TABLE: usize = 64 + holders::BLOCK;

/// How often a waiting get checks whether every producer died (a drop or close of the last
/// producer wakes it at once).
const HANGUP_PERIOD: Duration = Duration::from_millis(100);

/// A segment (named or anonymous) that holds one ring and its producer table: the shared
/// part of [`Queue`] and [`ByteQueue`](crate::ByteQueue).
pub(crate) struct RingSegment {
    layout: RingLayout,
    /// This handle was closed ([`Queue::close`]): its puts and gets fail; other handles,
    /// in this process or others, are not affected.
    closed: AtomicBool,
    /// This handle's registration as a producer (see [`Queue`], "Producers").
    producer: Registration,
    /// When a `try_` get last checked the producers (ms since `born`, 0: never), to keep
    /// empty `try_get` loops cheap.
    checked_ms: AtomicU64,
    born: Instant,
    /// The region with its payload window taken once (no per-operation look-up).
    region: Anchored<Region>,
}

impl RingSegment {
    pub(crate) fn make(
        named: Option<CreateOptions>,
        capacity: usize,
        slot_size: usize,
        tag: u64,
    ) -> Result<RingSegment> {
        let (_, _, len) = ring_layout(capacity, slot_size)?;
        let total = len.checked_add(TABLE).ok_or_else(|| {
            Error::new(
                ErrorKind::SizeOverflow,
                "queue capacity times slot size overflows the address space",
            )
        })?;
        let init = |mem: &mut [u8]| {
            Ring::init(&mut mem[..len], capacity, slot_size, tag)?;
            mem[len..len + 8].copy_from_slice(&holders::TABLE_MAGIC.to_le_bytes());
            Ok(())
        };
        let region = match named {
            Some(opts) => Region::create(&opts, SegmentKind::Queue, total, init)?,
            None => Region::anonymous(total, init)?,
        };
        Self::attach(region, tag)
    }

    pub(crate) fn open(name: &str, tag: u64) -> Result<RingSegment> {
        Self::attach(Region::open(name, SegmentKind::Queue, ring::HEADER)?, tag)
    }

    fn attach(region: Region, tag: u64) -> Result<RingSegment> {
        let what = region
            .name()
            .map_or("anonymous queue".into(), |n| format!("queue '{n}'"));
        let layout = Ring::attach(region.payload(), &what)?;
        let ring = Ring::over(region.payload(), layout);
        let table_ok = region
            .payload()
            .get(layout.len(), TABLE)
            .is_some_and(|t| t.u64(0).load(Ordering::Acquire) == holders::TABLE_MAGIC);
        if !table_ok {
            return Err(Error::new(
                ErrorKind::InvalidHeader,
                format!(
                    "{what}: no producer table after its ring (made by an older ndshm, or \
                     corrupted); make the queue again with this version"
                ),
            ));
        }
        if ring.tag() != tag {
            return Err(Error::new(
                ErrorKind::TypeMismatch,
                format!(
                    "{what} holds other items than the ones asked for (slot size {} bytes): \
                     open it with the item type it was created with, or as a ByteQueue",
                    ring.slot_size()
                ),
            ));
        }
        Ok(RingSegment {
            layout,
            closed: AtomicBool::new(false),
            producer: Registration::none(),
            checked_ms: AtomicU64::new(0),
            born: Instant::now(),
            region: Anchored::new(region),
        })
    }

    /// The ring, seen through the region's payload window.
    #[inline]
    pub(crate) fn ring(&self) -> Ring<'_> {
        Ring::over(self.region.mem(), self.layout)
    }

    /// The producer table.
    fn holders(&self) -> Holders<'_> {
        Holders::new(
            self.region
                .mem()
                .sub(self.layout.len() + 64, holders::BLOCK),
        )
    }

    /// This segment, unless this handle was closed (then `Closed`, as after a shutdown).
    /// A reference, not a [`Ring`]: the `Result` stays a pointer wide.
    #[inline]
    pub(crate) fn live(&self) -> std::result::Result<&RingSegment, Fail> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(Fail::Closed);
        }
        Ok(self)
    }

    /// As [`live`](Self::live), for a put: registers this handle as a producer in this
    /// process on its first put here (one load and a compare afterwards).
    #[inline]
    pub(crate) fn producer(&self) -> std::result::Result<&RingSegment, Fail> {
        let live = self.live()?;
        if !self.producer.is_here() {
            self.become_producer();
        }
        Ok(live)
    }

    /// Registers this handle as a producer in this process without putting (see
    /// [`Queue::register_producer`]).
    pub(crate) fn register_producer(&self) -> std::result::Result<(), Fail> {
        self.producer().map(drop)
    }

    #[cold]
    #[inline(never)]
    fn become_producer(&self) {
        if let Ready::Registered { .. } = self.producer.ready(self.holders()) {
            // Registered (before this): a hint that every producer was gone is stale.
            self.ring().clear_hangup();
        }
    }

    /// Gives up this handle's registration as a producer (drop, close); tells waiting
    /// consumers if it was the last one.
    fn release_producer(&self) {
        let h = self.holders();
        if self.producer.release(h) && h.gone() {
            self.ring().raise_hangup();
        }
    }

    /// A forked child's copy used for a get: settles the producer registration it
    /// inherited (see [`Queue`], "Producers").
    #[cold]
    #[inline(never)]
    fn settle_producer(&self) {
        let h = self.holders();
        if self.producer.settle_inherited(h) && h.gone() {
            self.ring().raise_hangup();
        }
    }

    /// Whether every producer is gone (see [`Queue`], "Producers"). `rate`: at most once
    /// per [`LIVENESS_PERIOD`] for this handle (for `try_` calls).
    fn producers_gone(&self, rate: bool) -> bool {
        let h = self.holders();
        if !h.ever() {
            return false;
        }
        if rate {
            let now = self.born.elapsed().as_millis() as u64;
            let last = self.checked_ms.load(Ordering::Relaxed);
            if last != 0 && now.saturating_sub(last) < LIVENESS_PERIOD.as_millis() as u64 {
                return false;
            }
            self.checked_ms.store(now.max(1), Ordering::Relaxed);
        }
        h.gone()
    }

    /// Takes an item, waiting as `wait` allows; an empty queue whose producers are all
    /// gone gives `Fail::Disconnected` (after everything they put was taken).
    #[inline]
    pub(crate) fn get<R>(
        &self,
        wait: Wait,
        f: impl FnOnce(&[u8]) -> R,
    ) -> std::result::Result<R, Fail> {
        let ring = self.live()?.ring();
        if self.producer.is_inherited() {
            self.settle_producer();
        }
        let mut f = Some(f);
        // One attempt first: no clock read, no table look-up on the fast path.
        match ring.try_get_live(&mut f) {
            Err(Fail::WouldBlock | Fail::Disconnected) => self.get_slow(wait, &mut f),
            r => r,
        }
    }

    fn get_slow<R, F: FnOnce(&[u8]) -> R>(
        &self,
        wait: Wait,
        f: &mut Option<F>,
    ) -> std::result::Result<R, Fail> {
        let ring = self.ring();
        let Wait::Until(deadline) = wait else {
            return match ring.get_opt(Wait::No, f) {
                Err(Fail::WouldBlock) if self.producers_gone(true) => self.last_get(f),
                Err(Fail::Disconnected) => self.hinted(f).unwrap_or(Err(Fail::WouldBlock)),
                r => r,
            };
        };
        loop {
            let slice = Instant::now() + HANGUP_PERIOD;
            let until = deadline.map_or(slice, |d| d.min(slice));
            match ring.get_opt(Wait::Until(Some(until)), f) {
                Err(Fail::Disconnected) => {
                    if let Some(r) = self.hinted(f) {
                        return r;
                    }
                }
                Err(Fail::Timeout | Fail::WouldBlock) => {
                    if self.producers_gone(false) {
                        return self.last_get(f);
                    }
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(Fail::Timeout);
                    }
                }
                r => return r,
            }
        }
    }

    /// The ring said empty with the hang-up hint raised: checks the producers. `None`
    /// (and the hint taken down) when one is alive.
    fn hinted<R, F: FnOnce(&[u8]) -> R>(
        &self,
        f: &mut Option<F>,
    ) -> Option<std::result::Result<R, Fail>> {
        if self.holders().gone() {
            return Some(self.last_get(f));
        }
        self.ring().clear_hangup();
        None
    }

    /// Every producer is gone: what they put before leaving is visible now (each
    /// published its items before it released its entry, or died, and `recover` frees a
    /// slot a dead one held); one more attempt takes it, else the queue is disconnected.
    fn last_get<R, F: FnOnce(&[u8]) -> R>(
        &self,
        f: &mut Option<F>,
    ) -> std::result::Result<R, Fail> {
        match self.ring().get_opt(Wait::No, f) {
            Err(Fail::WouldBlock) => Err(Fail::Disconnected),
            r => r,
        }
    }

    /// Closes this handle only (see [`Queue::close`]): it is no producer any more.
    pub(crate) fn close_handle(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.release_producer();
        }
    }

    /// Whether this handle was closed.
    pub(crate) fn is_handle_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Bytes per slot (from the layout validated at attach: no window is made).
    #[inline]
    pub(crate) fn slot_size(&self) -> usize {
        self.layout.slot_size()
    }

    pub(crate) fn region(&self) -> &Region {
        self.region.owner()
    }
}

impl Drop for RingSegment {
    fn drop(&mut self) {
        self.close_handle();
    }
}

/// What a failed put or get on a queue ring says.
pub(crate) fn outcome(e: Fail, putting: bool) -> Outcome {
    e.outcome(putting, ring::corrupt)
}

/// A bounded multi-producer multi-consumer queue of `Pod` items in shared memory:
/// Python's `multiprocessing.Queue`, for plain data.
///
/// Named (any process [`open`](Queue::open)s it by name) or anonymous (shared with children
/// forked after it was made). Blocking [`put`](Queue::put)/[`get`](Queue::get), non-blocking
/// `try_` and timed `_timeout` variants (crossbeam-style errors that hand the item back,
/// see [`TryPutError`]), and [`shutdown`](Queue::shutdown): consumers drain what is left and then
/// get an error, so no sentinel is needed. Any number of handles may be opened by name in
/// one process.
///
/// A process that dies in the middle of a `put` (after claiming a slot, before publishing
/// it) costs exactly that item: a consumer waiting on the slot checks the producer's lease
/// (recorded in the slot before the claim; the kernel releases it when the producer dies,
/// whatever its pid namespace) every 20 ms, and once the producer is provably dead marks
/// the slot lost and moves on; [`lost`](Queue::lost) counts such items. A live producer,
/// or one whose liveness cannot be told, keeps its slot however long it takes. A consumer
/// that dies in the middle of a `get` loses the item it took, and producers reclaim its
/// slot the same way. Every other item is delivered exactly once.
///
/// # Producers
/// A consumer learns that no more items will come when every *producer* is gone, as with
/// `std::sync::mpsc`/crossbeam when every `Sender` is dropped: a get on an empty queue
/// then returns [`GetError::Disconnected`] (likewise [`TryGetError::Disconnected`],
/// [`GetTimeoutError::Disconnected`]), after everything the producers put was taken.
/// [`shutdown`](Queue::shutdown) remains the way to end the queue for everyone at once.
///
/// A handle becomes a producer **in a process on its first put there** (any of `put`,
/// `try_put`, `put_timeout`; for [`ByteQueue`](crate::ByteQueue) also the `put_with`
/// family), not when it is made: Python's queues have no sender handles, and a queue is
/// usually made, or opened by name, by a process that only consumes (or forks the
/// consumers first); counting every handle would make such a consumer its own producer
/// and it would never see the end. An explicit `sender()` handle (crossbeam) would split
/// every queue into two types; the first put says the same with no new type. A producer
/// stops being one when its handle is dropped or [`close`](Queue::close)d (Python's
/// `close()`: "no more data will be put on this queue by the current process"), or when
/// its process dies. The queue is disconnected when it had a producer and now every one is
/// gone; a queue nobody ever put to waits for its first producer, and a new producer (a
/// process that opens the queue by name and puts) revives it.
///
/// Producers are recorded per process in a table in the queue's memory, with their lease
/// (the kernel-vouched liveness token of the crate docs, "Crashes and signals"): a drop or
/// close of the last producer wakes waiting consumers at once; a producer's death is
/// noticed by a waiting get within about 100 ms and by a `try_get` on its next call
/// (checked at most every [`Lock::LIVENESS_PERIOD`](crate::Lock::LIVENESS_PERIOD) per
/// handle). The rules for processes that fork are the pipe's (see
/// [`Connection`](crate::Connection), "Hang-up and hand-over"):
/// - A copy inherited through `fork` is not a producer until it puts in the child.
/// - A producer's handle dropped or closed, after its process forked, by the process that
///   registered it is a *pending hand-over*, still a producer while that process lives,
///   until a child settles it by using its copy (a put, which registers the child, a get,
///   or a drop or close). So `Process::spawn(move || q.put(..))` does not disconnect the
///   consumers between the parent's drop and the child's first put. A hand-over no child
///   settles (children that exit without touching their copy) ends when the parent exits;
///   use [`shutdown`](Queue::shutdown) where consumers must not wait for that.
/// - A process that could not claim a lease, or a queue with more than 60 live producer
///   processes at once, is never reported disconnected (the safe side: gets wait as
///   before).
/// - Producers that start at different times: between the last producer's exit and a later
///   one's first put, the queue *is* disconnected, and a consumer that finds it empty then
///   stops. Hold a producer registration across that gap: call
///   [`register_producer`](Queue::register_producer) in the parent before forking the
///   producers and [`close`](Queue::close) after joining them (each child's first put
///   settles the parent's copy, so the close releases at once), or end the queue with
///   [`shutdown`](Queue::shutdown) instead.
///
/// Opening by name is safe: a slot's bytes are only touched by the one process that the
/// sequence protocol gives it to, and everything else is atomic. A queue whose shared
/// memory was overwritten with values no queue has gives `Failed` errors of
/// [`ErrorKind::Corrupt`] (the item handed back), in bounded time.
///
/// # Examples
/// ```
/// use ndshm::Queue;
/// let q = Queue::<[u64; 2]>::new(16)?;
/// ndshm::scope(|s| -> ndshm::Result<()> {
///     for i in 0..5u64 {
///         let q = &q;
///         s.spawn(move || q.put([i, i.pow(2)]))?;
///     }
///     Ok::<(), ndshm::Error>(())
/// })?;
/// let mut results = std::collections::BTreeMap::new();
/// while let Ok([task, result]) = q.try_get() {
///     results.insert(task, result);
/// }
/// assert_eq!(format!("{results:?}"), "{0: 0, 1: 1, 2: 4, 3: 9, 4: 16}");
/// # Ok::<(), ndshm::Error>(())
/// ```
pub struct Queue<T: Pod> {
    shared: RingSegment,
    _marker: PhantomData<fn(T) -> T>,
}

impl<T: Pod> Queue<T> {
    /// An anonymous queue of `capacity` items (exactly: the `capacity + 1`-th put finds
    /// it full), shared with children forked after it.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for a zero capacity, an OS error when mapping fails.
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::Queue::<u64>::new(3)?;
    /// assert_eq!(q.capacity(), 3);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn new(capacity: usize) -> Result<Self> {
        Self::make(None, capacity)
    }

    /// Creates a named queue segment of `capacity` items; other processes
    /// [`open`](Self::open) it by name. The segment is unlinked when this handle drops
    /// (unless made persistent through [`CreateOptions`]).
    ///
    /// # Errors
    /// As [`new`](Self::new), plus the errors of segment creation
    /// ([`ErrorKind::AlreadyExists`], [`ErrorKind::InvalidName`], …).
    ///
    /// # Examples
    /// ```
    /// use ndshm::{CreateOptions, Queue};
    /// let q = Queue::<u32>::create(CreateOptions::unique(), 8)?;
    /// let name = q.name().unwrap().to_string();
    /// let other = Queue::<u32>::open(&name)?; // as another process would
    /// q.put(5)?;
    /// assert_eq!(other.get()?, 5);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn create(segment: impl Into<CreateOptions>, capacity: usize) -> Result<Self> {
        Self::make(Some(segment.into()), capacity)
    }

    fn make(named: Option<CreateOptions>, capacity: usize) -> Result<Self> {
        Ok(Queue {
            shared: RingSegment::make(named, capacity, std::mem::size_of::<T>(), type_tag::<T>())?,
            _marker: PhantomData,
        })
    }

    /// Attaches queue segment `name` (safe: see the type's docs).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`], [`ErrorKind::KindMismatch`] (not a queue),
    /// [`ErrorKind::TypeMismatch`] (another item type), [`ErrorKind::InvalidHeader`].
    ///
    /// # Examples
    /// ```
    /// use ndshm::{CreateOptions, ErrorKind, Queue};
    /// let q = Queue::<u64>::create(CreateOptions::unique(), 4)?;
    /// let err = Queue::<u8>::open(q.name().unwrap()).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::TypeMismatch);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn open(name: &str) -> Result<Self> {
        Ok(Queue {
            shared: RingSegment::open(name, type_tag::<T>())?,
            _marker: PhantomData,
        })
    }

    #[inline]
    fn ring(&self) -> Ring<'_> {
        self.shared.ring()
    }

    fn read(bytes: &[u8]) -> T {
        // Every item of a sane queue has the size of `T`: a copy of a size known when
        // compiled. A shorter one (memory overwritten) is padded with zeros.
        if let Ok(v) = bytemuck::try_pod_read_unaligned(bytes) {
            return v;
        }
        let mut v = T::zeroed();
        let n = bytes.len().min(std::mem::size_of::<T>());
        bytemuck::bytes_of_mut(&mut v)[..n].copy_from_slice(&bytes[..n]);
        v
    }

    /// Puts `item`, waiting while the queue is full.
    ///
    /// # Errors
    /// [`PutError::Closed`] when this handle was closed or the queue shut down,
    /// [`PutError::Failed`] when its shared
    /// memory was overwritten; both hand the item back.
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::Queue::<u8>::new(2)?;
    /// q.put(1)?;
    /// q.close();
    /// assert_eq!(q.put(2).unwrap_err().into_inner(), 2);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn put(&self, item: T) -> std::result::Result<(), PutError<T>> {
        self.shared
            .producer()
            .and_then(|r| r.ring().put_pod(&item, Wait::Until(None)))
            .map_err(|e| outcome(e, true).put(item))
    }

    /// Puts `item` if there is room now (bounded time, even against a stalled or dead
    /// peer).
    ///
    /// # Errors
    /// [`TryPutError::Full`], [`TryPutError::Closed`] or [`TryPutError::Failed`], with the
    /// item.
    ///
    /// # Examples
    /// ```
    /// use ndshm::{Queue, TryPutError};
    /// let q = Queue::<u8>::new(2)?;
    /// q.try_put(1)?;
    /// q.try_put(2)?;
    /// assert_eq!(q.try_put(3), Err(TryPutError::Full(3)));
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn try_put(&self, item: T) -> std::result::Result<(), TryPutError<T>> {
        self.shared
            .producer()
            .and_then(|r| r.ring().put_pod(&item, Wait::No))
            .map_err(|e| outcome(e, true).try_put(item))
    }

    /// Puts `item`, waiting at most `timeout` for room.
    ///
    /// # Errors
    /// [`PutTimeoutError::Timeout`], [`PutTimeoutError::Closed`] or
    /// [`PutTimeoutError::Failed`], with the item.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use ndshm::{PutTimeoutError, Queue};
    /// let q = Queue::<u8>::new(2)?;
    /// q.put(1)?;
    /// q.put(2)?;
    /// let e = q.put_timeout(3, Duration::from_millis(1)).unwrap_err();
    /// assert_eq!(e, PutTimeoutError::Timeout(3));
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn put_timeout(
        &self,
        item: T,
        timeout: Duration,
    ) -> std::result::Result<(), PutTimeoutError<T>> {
        self.shared
            .producer()
            .and_then(|r| r.ring().put_pod(&item, deadline(timeout)))
            .map_err(|e| outcome(e, true).put_timeout(item))
    }

    /// Takes an item, waiting while the queue is empty.
    ///
    /// # Errors
    /// [`GetError::Closed`] when this handle was closed, or the queue shut down (and
    /// drained, unless immediately), [`GetError::Disconnected`] when every producer is gone
    /// and the queue is drained (see "Producers" in the type docs), [`GetError::Failed`]
    /// when its shared memory was overwritten.
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::Queue::<u8>::new(2)?;
    /// q.put(7)?;
    /// q.shutdown(false);
    /// assert_eq!(q.get()?, 7); // what was put before the shutdown is still delivered
    /// assert!(q.get().unwrap_err().is_closed());
    ///
    /// // Every producer gone: drained, then Disconnected (mpsc's rule).
    /// let q = ndshm::Queue::<u8>::new(2)?;
    /// ndshm::scope(|s| s.spawn(|| q.put(1).unwrap()).map(drop))?; // the producer exits
    /// assert_eq!(q.get()?, 1);
    /// assert!(q.get().unwrap_err().is_disconnected());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn get(&self) -> std::result::Result<T, GetError> {
        self.shared
            .get(Wait::Until(None), Self::read)
            .map_err(|e| outcome(e, false).get())
    }

    /// Takes an item if there is one now (bounded time, even against a stalled or dead
    /// peer).
    ///
    /// # Errors
    /// [`TryGetError::Empty`] (never a timeout), [`TryGetError::Closed`] when closed (see
    /// [`get`](Self::get)) and empty, [`TryGetError::Disconnected`] when every producer is
    /// gone and the queue is empty, [`TryGetError::Failed`].
    ///
    /// # Examples
    /// ```
    /// use ndshm::{Queue, TryGetError};
    /// let q = Queue::<u8>::new(2)?;
    /// assert_eq!(q.try_get(), Err(TryGetError::Empty));
    /// q.put(1)?;
    /// assert_eq!(q.try_get(), Ok(1));
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn try_get(&self) -> std::result::Result<T, TryGetError> {
        self.shared
            .get(Wait::No, Self::read)
            .map_err(|e| outcome(e, false).try_get())
    }

    /// Takes an item, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`GetTimeoutError::Timeout`], [`GetTimeoutError::Closed`],
    /// [`GetTimeoutError::Disconnected`] (as [`get`](Self::get)), [`GetTimeoutError::Failed`].
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use ndshm::{GetTimeoutError, Queue};
    /// let q = Queue::<u8>::new(2)?;
    /// assert_eq!(q.get_timeout(Duration::from_millis(1)), Err(GetTimeoutError::Timeout));
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> std::result::Result<T, GetTimeoutError> {
        self.shared
            .get(deadline(timeout), Self::read)
            .map_err(|e| outcome(e, false).get_timeout())
    }

    /// Closes this handle: this process puts and gets no more through it, as Python's
    /// `Queue.close()` ("no more data will be put on this queue by the current
    /// process"). Its puts and gets fail with `Closed` from now on (the item handed
    /// back), and it is no producer any more (see "Producers"); other handles — the parent's after a child closes its inherited copy, handles
    /// opened by name — go on working. To end the queue for everyone, use
    /// [`shutdown`](Self::shutdown).
    ///
    /// The snapshots [`len`](Self::len), [`is_empty`](Self::is_empty),
    /// [`capacity`](Self::capacity) and [`lost`](Self::lost) still answer on a closed
    /// handle (they observe the shared queue and change nothing; Python raises there).
    ///
    /// # Examples
    /// ```
    /// use ndshm::{Queue, TryPutError};
    /// let q = Queue::<u32>::new(4)?;
    /// q.put(1)?;
    /// ndshm::scope(|s| -> ndshm::Result<()> {
    ///     s.spawn(|| q.close())?; // the child closes its copy ...
    ///     Ok(())
    /// })?;
    /// q.put(2)?; // ... the parent's handle still works
    /// q.close();
    /// assert_eq!(q.try_put(3), Err(TryPutError::Closed(3)));
    /// assert_eq!(q.len(), 2); // an observation, still answered
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn close(&self) {
        self.shared.close_handle()
    }

    /// Makes this handle a producer in this process now, as its first put would (see
    /// "Producers" in the type docs): consumers are not told the queue is disconnected
    /// while it stays registered, e.g. while a parent forks producer processes that have not
    /// put yet. Released by [`close`](Self::close) or a drop, as after a put.
    ///
    /// # Errors
    /// [`ErrorKind::Closed`] when this handle was closed.
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::Queue::<u64>::new(8)?;
    /// q.register_producer()?; // the queue has a producer from here on
    /// ndshm::scope(|s| -> ndshm::Result<()> {
    ///     for i in 0..3 {
    ///         let q = &q;
    ///         s.spawn(move || q.put(i).unwrap())?;
    ///     }
    ///     Ok(())
    /// })?;
    /// q.close(); // the last producer left: consumers drain, then Disconnected
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn register_producer(&self) -> Result<()> {
        self.shared
            .register_producer()
            .map_err(|e| Error::from(outcome(e, true).put(())))
    }

    /// Whether this handle was closed with [`close`](Self::close) (whether the queue was
    /// ended for everyone is [`is_shutdown`](Self::is_shutdown)).
    pub fn is_closed(&self) -> bool {
        self.shared.is_handle_closed()
    }

    /// Ends the queue for every process, as Python 3.13's `Queue.shutdown(immediate)`:
    /// puts fail with `Closed` from now on; with `immediate = false`, gets take what is
    /// left and then report `Closed` (consumers drain, no sentinel needed); with
    /// `immediate = true`, what is left is discarded and gets report `Closed` at once.
    /// Sleepers on either side wake. Discarded items are not counted by
    /// [`lost`](Self::lost). Works on a closed handle too.
    ///
    /// # Examples
    /// ```
    /// use ndshm::{Queue, TryGetError};
    /// let q = Queue::<u32>::new(4)?;
    /// q.put(1)?;
    /// q.shutdown(false);
    /// assert!(q.put(2).is_err());
    /// assert_eq!(q.get()?, 1); // drained,
    /// assert_eq!(q.try_get(), Err(TryGetError::Closed)); // then closed
    ///
    /// let q = Queue::<u32>::new(4)?;
    /// q.put(1)?;
    /// q.shutdown(true);
    /// assert_eq!(q.try_get(), Err(TryGetError::Closed)); // discarded
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn shutdown(&self, immediate: bool) {
        self.ring().shutdown(immediate)
    }

    /// Whether the queue was shut down (by any process).
    pub fn is_shutdown(&self) -> bool {
        self.ring().is_closed()
    }

    /// Items in the queue now (a snapshot).
    pub fn len(&self) -> usize {
        self.ring().len()
    }

    /// Whether the queue is empty now (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The capacity asked for: at most this many items are in the queue at once (the
    /// ring inside may have more slots; they are not used for more items).
    pub fn capacity(&self) -> usize {
        self.ring().capacity()
    }

    /// Items lost because a producer or consumer died in the middle of moving them.
    pub fn lost(&self) -> u64 {
        self.ring().lost()
    }

    /// The segment name, or `None` for an anonymous queue.
    pub fn name(&self) -> Option<&str> {
        self.shared.region().name()
    }
}

impl<T: Pod> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.name())
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .field("closed", &self.is_closed())
            .field("shutdown", &self.is_shutdown())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_full_empty_close() {
        assert_eq!(Queue::<u64>::new(1).unwrap().capacity(), 1);
        let q = Queue::<u64>::new(4).unwrap();
        assert_eq!(q.capacity(), 4);
        for i in 0..4 {
            q.try_put(i).unwrap();
        }
        assert_eq!(q.try_put(9), Err(TryPutError::Full(9)));
        assert_eq!(
            q.put_timeout(9, Duration::from_millis(5)),
            Err(PutTimeoutError::Timeout(9))
        );
        for i in 0..4 {
            assert_eq!(q.get().unwrap(), i);
        }
        assert_eq!(q.try_get(), Err(TryGetError::Empty));
        assert_eq!(
            q.get_timeout(Duration::from_millis(5)),
            Err(GetTimeoutError::Timeout)
        );
        q.put(7).unwrap();
        q.shutdown(false);
        assert_eq!(q.try_put(8), Err(TryPutError::Closed(8)));
        assert_eq!(q.get(), Ok(7));
        assert_eq!(q.get(), Err(GetError::Closed));
        // Many laps.
        let q = Queue::<u32>::new(2).unwrap();
        for i in 0..1000 {
            q.put(i).unwrap();
            assert_eq!(q.get().unwrap(), i);
        }
    }
}
