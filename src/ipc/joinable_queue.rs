//! [`JoinableQueue<T>`]: a [`Queue<T>`] that also counts unfinished tasks, Python's
//! `multiprocessing.JoinableQueue` (`task_done()` / `join()`).
//!
//! Beside the queue, a small block of anonymous shared memory holds the count of
//! *unfinished* items (put and not yet marked done), a futex word that
//! [`join`](JoinableQueue::join) sleeps on, and a table of consumers: per process, how
//! many items it took with `get` and has not marked done, recorded with its lease (the
//! kernel-vouched liveness token of the crate docs, "Crashes and signals").
//!
//! # A consumer that dies
//! See [`JoinableQueue`]'s docs.

use std::fmt;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytemuck::Pod;

use crate::error::{Error, ErrorKind, Result};
use crate::ipc::error::{
    GetError, GetTimeoutError, PutError, PutTimeoutError, TryGetError, TryPutError,
};
use crate::ipc::queue::Queue;
use crate::segment::options::CreateOptions;
use crate::segment::region::Region;
use crate::segment::shared_mem::SharedMem;
use crate::segment::trailer::SegmentKind;
use crate::sync::lock::LIVENESS_PERIOD;
use crate::sys::futex;
use crate::sys::lease::{self, Liveness};

// Counter block (byte offsets).
const UNFINISHED: usize = 0;
const EVENT: usize = 8;
const WAITERS: usize = 12;
/// Queue-level losses already released from `UNFINISHED`.
const ABSORBED: usize = 16;
/// Items released because their consumer died.
const RELEASED: usize = 24;
const TABLE: usize = 64;
const ENTRIES: usize = 60;
const BLOCK: usize = TABLE + ENTRIES * 16;
/// Suffix of the companion segment that holds a named joinable queue's counters.
const COUNTERS_SUFFIX: &str = ".joinable";

/// A [`Queue<T>`] with Python's `task_done()` and `join()`: every item put counts as an
/// unfinished task until a consumer calls [`task_done`](Self::task_done) for it, and
/// [`join`](Self::join) waits until no task is unfinished. Anonymous ([`new`](Self::new),
/// shared with children forked after it, like [`Queue::new`]) or named
/// ([`create`](Self::create) / [`open`](Self::open)). A consumer that dies before `task_done` does not
/// make `join` hang (its items are released and counted in [`lost`](Self::lost), see
/// below).
///
/// # A consumer that dies
/// A consumer killed after `get` and before `task_done` would leave `join` waiting for ever
/// in Python. Here a waiting `join` checks the consumer table at least every
/// [`Lock::LIVENESS_PERIOD`](crate::Lock::LIVENESS_PERIOD): the unfinished items of a
/// process the kernel reports dead are released (they count as done) and added to
/// [`lost`](JoinableQueue::lost), as are the items the queue itself lost (a consumer that
/// died inside `get`, see [`Queue::lost`]). `join` then returns `Ok`; a program that must
/// know whether every task really ran compares `lost()` before and after.
///
/// Windows that are not covered (a few instructions wide): a producer killed after its
/// `put` counted the item and before the item entered the queue leaves one unfinished
/// item behind (use [`join_timeout`](JoinableQueue::join_timeout) where producers may be
/// killed); a consumer killed between its `get` returning and recording the item in the
/// table, likewise.
///
/// # Examples
/// ```
/// // Python:
/// //   q = JoinableQueue()
/// //   def worker():
/// //       while (item := q.get()) is not None:
/// //           ...; q.task_done()
/// //   for i in range(10): q.put(i)
/// //   q.join()
/// let q = ndshm::JoinableQueue::<u32>::new(16)?;
/// let done = ndshm::SharedValue::<u32>::new(0)?;
/// ndshm::scope(|s| -> ndshm::Result<()> {
///     s.spawn(|| -> ndshm::Result<()> {
///         for _ in 0..10 {
///             let item = q.get()?;
///             done.fetch_add(item);
///             q.task_done()?;
///         }
///         Ok(())
///     })?;
///     for i in 0..10 {
///         q.put(i)?;
///     }
///     q.join()?; // every item was taken and marked done
///     assert_eq!(done.load(), 45);
///     Ok(())
/// })?;
/// # Ok::<(), ndshm::Error>(())
/// ```
pub struct JoinableQueue<T: Pod> {
    queue: Queue<T>,
    counters: Region,
}

impl<T: Pod> JoinableQueue<T> {
    /// An anonymous joinable queue of at least `capacity` items, shared with children
    /// forked after it.
    ///
    /// # Errors
    /// As [`Queue::new`].
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::JoinableQueue::<u64>::new(4)?;
    /// q.put(1)?;
    /// assert_eq!(q.unfinished(), 1);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn new(capacity: usize) -> Result<Self> {
        let queue = Queue::new(capacity)?;
        let counters = Region::anonymous(BLOCK, |_| Ok(()))?;
        Ok(JoinableQueue { queue, counters })
    }

    /// Creates a named joinable queue of `capacity` items: the queue segment under the
    /// name `segment` gives, and its task counters in a companion segment named
    /// `<name>.joinable` (created with the same options; both owned by the caller and
    /// unlinked when its handle drops). Other processes attach with [`open`](Self::open).
    ///
    /// # Errors
    /// As [`Queue::create`], for either segment (a name too long for the `.joinable`
    /// suffix is [`ErrorKind::InvalidName`]).
    ///
    /// # Examples
    /// ```
    /// use ndshm::{CreateOptions, JoinableQueue};
    /// let q = JoinableQueue::<u64>::create(CreateOptions::unique(), 8)?;
    /// let name = q.name().unwrap().to_owned();
    /// let child = ndshm::Process::spawn(move || -> ndshm::Result<()> {
    ///     let q = JoinableQueue::<u64>::open(&name)?; // another process, by name
    ///     let item = q.get()?;
    ///     q.task_done()?;
    ///     assert_eq!(item, 42);
    ///     Ok(())
    /// })?;
    /// q.put(42)?;
    /// q.join()?; // returns once the other process marked the item done
    /// child.join()?;
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn create(segment: impl Into<CreateOptions>, capacity: usize) -> Result<Self> {
        let opts = segment.into();
        let queue = Queue::create(&opts, capacity)?;
        let name = queue.name().unwrap_or_default().to_owned();
        let counters = Region::create(
            &opts.renamed(format!("{name}{COUNTERS_SUFFIX}")),
            SegmentKind::JoinableQueue,
            BLOCK,
            |_| Ok(()),
        )?;
        Ok(JoinableQueue { queue, counters })
    }

    /// Attaches the named joinable queue `name` (its queue and its `<name>.joinable`
    /// counters). Safe, as for [`Queue::open`].
    ///
    /// # Errors
    /// As [`Queue::open`]; [`ErrorKind::NotFound`] when the counters segment is missing
    /// (`name` is a plain queue, not a joinable one).
    ///
    /// # Examples
    /// See [`create`](Self::create).
    pub fn open(name: &str) -> Result<Self> {
        let queue = Queue::open(name)?;
        let counters_name = format!("{name}{COUNTERS_SUFFIX}");
        let counters =
            Region::open(&counters_name, SegmentKind::JoinableQueue, BLOCK).map_err(|e| {
                if e.kind() == ErrorKind::NotFound {
                    Error::new(
                        ErrorKind::NotFound,
                        format!(
                            "'{name}' has no task counters ('{counters_name}' is missing): it \
                             is a plain queue (open it with Queue::open), or its joinable \
                             queue is gone"
                        ),
                    )
                } else {
                    e
                }
            })?;
        Ok(JoinableQueue { queue, counters })
    }

    /// The queue segment's name, or `None` for an anonymous joinable queue.
    pub fn name(&self) -> Option<&str> {
        self.queue.name()
    }

    fn mem(&self) -> SharedMem<'_> {
        self.counters.payload().sub(0, BLOCK)
    }

    fn unfinished_word(&self) -> &AtomicU64 {
        self.mem().u64(UNFINISHED)
    }

    fn entry(&self, i: usize) -> (&AtomicU64, &AtomicU64) {
        let e = self.mem().sub(TABLE + i * 16, 16);
        (e.u64(0), e.u64(8))
    }

    /// Counts an item as unfinished before it is put.
    fn count_put(&self) {
        self.unfinished_word().fetch_add(1, Ordering::SeqCst);
    }

    /// Undoes [`count_put`](Self::count_put) for an item that was not put.
    fn uncount_put(&self) {
        if self.sub_unfinished(1) {
            self.wake_joiners();
        }
    }

    /// Subtracts up to `n` from the unfinished count (never below 0); returns whether it
    /// reached 0.
    fn sub_unfinished(&self, n: u64) -> bool {
        let w = self.unfinished_word();
        let mut cur = w.load(Ordering::SeqCst);
        loop {
            let new = cur.saturating_sub(n);
            match w.compare_exchange(cur, new, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return new == 0,
                Err(c) => cur = c,
            }
        }
    }

    fn wake_joiners(&self) {
        let m = self.mem();
        m.u32(EVENT).fetch_add(1, Ordering::SeqCst);
        if m.u32(WAITERS).load(Ordering::SeqCst) != 0 {
            futex::wake(m.u32(EVENT), i32::MAX);
        }
    }

    /// Records in the consumer table that this process took an item.
    fn note_taken(&self) {
        let me = lease::holder();
        for i in 0..ENTRIES {
            let (l, c) = self.entry(i);
            if l.load(Ordering::Acquire) == me {
                c.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
        for i in 0..ENTRIES {
            let (l, c) = self.entry(i);
            if l.compare_exchange(0, me, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                c.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
        // Table full (60 consumer processes at once): this item is not tracked; a death of
        // this consumer before task_done would leave it unfinished (join_timeout).
    }

    /// Records in the consumer table that this process finished an item (if it took one).
    fn note_done(&self) {
        let me = lease::holder();
        for i in 0..ENTRIES {
            let (l, c) = self.entry(i);
            if l.load(Ordering::Acquire) != me {
                continue;
            }
            let mut cur = c.load(Ordering::SeqCst);
            while cur > 0 {
                match c.compare_exchange(cur, cur - 1, Ordering::SeqCst, Ordering::SeqCst) {
                    Ok(_) => return,
                    Err(x) => cur = x,
                }
            }
        }
    }

    /// Releases the unfinished items of consumers that died, and the items the queue
    /// lost; returns whether the unfinished count reached 0.
    fn reap(&self) -> bool {
        let m = self.mem();
        let mut zero = false;
        let ql = self.queue.lost();
        let absorbed = m.u64(ABSORBED);
        let a = absorbed.load(Ordering::SeqCst);
        if ql > a
            && absorbed
                .compare_exchange(a, ql, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            zero |= self.sub_unfinished(ql - a);
        }
        for i in 0..ENTRIES {
            let (l, c) = self.entry(i);
            let who = l.load(Ordering::Acquire);
            if who == 0 || lease::check(who) != Liveness::Dead {
                continue;
            }
            // Only this dead process wrote `c`: take its count, then free the entry.
            let n = c.swap(0, Ordering::SeqCst);
            let _ = l.compare_exchange(who, 0, Ordering::AcqRel, Ordering::Relaxed);
            if n > 0 {
                m.u64(RELEASED).fetch_add(n, Ordering::SeqCst);
                zero |= self.sub_unfinished(n);
            }
        }
        if zero {
            self.wake_joiners();
        }
        zero
    }

    /// Puts an item (counted as an unfinished task), waiting for room.
    ///
    /// # Errors
    /// As [`Queue::put`].
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::JoinableQueue::<i32>::new(2)?;
    /// q.put(-1)?;
    /// assert_eq!(q.get()?, -1);
    /// q.task_done()?;
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn put(&self, item: T) -> std::result::Result<(), PutError<T>> {
        self.count_put();
        self.queue.put(item).inspect_err(|_| self.uncount_put())
    }

    /// Puts an item if there is room now.
    ///
    /// # Errors
    /// As [`Queue::try_put`].
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::JoinableQueue::<u8>::new(2)?;
    /// q.try_put(1)?;
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn try_put(&self, item: T) -> std::result::Result<(), TryPutError<T>> {
        self.count_put();
        self.queue.try_put(item).inspect_err(|_| self.uncount_put())
    }

    /// Puts an item, waiting at most `timeout` for room.
    ///
    /// # Errors
    /// As [`Queue::put_timeout`].
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::JoinableQueue::<u8>::new(2)?;
    /// q.put_timeout(1, std::time::Duration::from_secs(1))?;
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn put_timeout(
        &self,
        item: T,
        timeout: Duration,
    ) -> std::result::Result<(), PutTimeoutError<T>> {
        self.count_put();
        self.queue
            .put_timeout(item, timeout)
            .inspect_err(|_| self.uncount_put())
    }

    /// Takes an item, waiting for one; call [`task_done`](Self::task_done) when its work
    /// is finished.
    ///
    /// # Errors
    /// As [`Queue::get`].
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::JoinableQueue::<u8>::new(2)?;
    /// q.put(3)?;
    /// assert_eq!(q.get()?, 3);
    /// q.task_done()?;
    /// q.join()?;
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn get(&self) -> std::result::Result<T, GetError> {
        let item = self.queue.get()?;
        self.note_taken();
        Ok(item)
    }

    /// Takes an item if there is one now.
    ///
    /// # Errors
    /// As [`Queue::try_get`].
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::JoinableQueue::<u8>::new(2)?;
    /// assert!(q.try_get().unwrap_err().is_empty());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn try_get(&self) -> std::result::Result<T, TryGetError> {
        let item = self.queue.try_get()?;
        self.note_taken();
        Ok(item)
    }

    /// Takes an item, waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`Queue::get_timeout`].
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::JoinableQueue::<u8>::new(2)?;
    /// let e = q.get_timeout(std::time::Duration::from_millis(1)).unwrap_err();
    /// assert!(e.is_timeout());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> std::result::Result<T, GetTimeoutError> {
        let item = self.queue.get_timeout(timeout)?;
        self.note_taken();
        Ok(item)
    }

    /// Marks one task done (Python's `task_done()`): call it once per item taken, when
    /// its work is finished. When no unfinished task remains, every `join` returns.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when called more times than items were put (Python's
    /// `ValueError`); the count is left at 0.
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::JoinableQueue::<u8>::new(2)?;
    /// q.put(1)?;
    /// q.get()?;
    /// q.task_done()?;
    /// let e = q.task_done().unwrap_err(); // Python: ValueError
    /// assert_eq!(e.kind(), ndshm::ErrorKind::InvalidArgument);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn task_done(&self) -> Result<()> {
        let w = self.unfinished_word();
        let mut cur = w.load(Ordering::SeqCst);
        loop {
            if cur == 0 {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    "task_done() called more times than items were put in the joinable \
                     queue: call it once per item taken with get",
                ));
            }
            match w.compare_exchange(cur, cur - 1, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => break,
                Err(c) => cur = c,
            }
        }
        self.note_done();
        if cur == 1 {
            self.wake_joiners();
        }
        Ok(())
    }

    /// Waits until every item put has been marked done (Python's `join()`); sleeps, never
    /// spins. Items whose consumer died before `task_done` are released while it waits
    /// (see "A consumer that dies" on the type and [`lost`](Self::lost)).
    ///
    /// # Errors
    /// None today; a `Result` for the errors of shared state to come.
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::JoinableQueue::<u8>::new(2)?;
    /// q.join()?; // nothing put: returns at once
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn join(&self) -> Result<()> {
        self.join_until(None)
    }

    /// As [`join`](Self::join), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`] when tasks were still unfinished at the timeout.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let q = ndshm::JoinableQueue::<u8>::new(2)?;
    /// q.put(1)?;
    /// let e = q.join_timeout(Duration::from_millis(10)).unwrap_err();
    /// assert_eq!(e.kind(), ndshm::ErrorKind::Timeout);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        self.join_until(Instant::now().checked_add(timeout))
    }

    fn join_until(&self, deadline: Option<Instant>) -> Result<()> {
        let m = self.mem();
        let (event, waiters) = (m.u32(EVENT), m.u32(WAITERS));
        let unfinished = self.unfinished_word();
        let mut reaped = Instant::now();
        if unfinished.load(Ordering::SeqCst) != 0 {
            self.reap();
        }
        loop {
            waiters.fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let ev = event.load(Ordering::SeqCst);
            if unfinished.load(Ordering::SeqCst) == 0 {
                waiters.fetch_sub(1, Ordering::SeqCst);
                return Ok(());
            }
            let slice = match deadline {
                None => LIVENESS_PERIOD,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        waiters.fetch_sub(1, Ordering::SeqCst);
                        return Err(Error::new(
                            ErrorKind::Timeout,
                            format!(
                                "{} task(s) of the joinable queue were still unfinished at \
                                 the timeout: wait longer, or check that the consumers run",
                                unfinished.load(Ordering::SeqCst)
                            ),
                        ));
                    }
                    left.min(LIVENESS_PERIOD)
                }
            };
            futex::wait(event, ev, Some(slice));
            waiters.fetch_sub(1, Ordering::SeqCst);
            if reaped.elapsed() >= LIVENESS_PERIOD {
                self.reap();
                reaped = Instant::now();
            }
        }
    }

    /// Items put and not yet marked done (a snapshot).
    pub fn unfinished(&self) -> u64 {
        self.unfinished_word().load(Ordering::SeqCst)
    }

    /// Tasks that will never be marked done: items whose consumer died after taking them
    /// (released by `join`, see "A consumer that dies" on the type), plus the queue's own losses
    /// ([`Queue::lost`]). Never reset.
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::JoinableQueue::<u8>::new(2)?;
    /// assert_eq!(q.lost(), 0);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn lost(&self) -> u64 {
        self.mem().u64(RELEASED).load(Ordering::SeqCst) + self.queue.lost()
    }

    /// Closes the queue, as [`Queue::close`].
    pub fn close(&self) {
        self.queue.close()
    }

    /// As [`Queue::is_closed`].
    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }

    /// Items in the queue now, as [`Queue::len`].
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// As [`Queue::is_empty`].
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// As [`Queue::capacity`].
    pub fn capacity(&self) -> usize {
        self.queue.capacity()
    }
}

impl<T: Pod> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinableQueue")
            .field("capacity", &self.capacity())
            .field("unfinished", &self.unfinished())
            .finish()
    }
}
