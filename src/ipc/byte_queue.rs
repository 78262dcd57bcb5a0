//! [`ByteQueue`]: the byte-message sibling of [`Queue`](crate::Queue), on the same ring and
//! with the same semantics and typed errors; messages of up to a slot size chosen at
//! creation, copied ([`put`](ByteQueue::put), [`get`](ByteQueue::get)) or written and read
//! in place ([`put_with`](ByteQueue::put_with), [`get_with`](ByteQueue::get_with)).

use std::fmt;
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::ipc::error::{
    GetError, GetTimeoutError, Outcome, PutError, PutTimeoutError, TryGetError, TryPutError,
};
use crate::ipc::queue::{outcome, RingSegment};
use crate::ipc::ring::{deadline, Fail, Ring, Wait};
use crate::segment::CreateOptions;

/// Tag of byte queues.
const BYTES_TAG: u64 = 0;

/// A bounded multi-producer multi-consumer queue of byte messages up to a slot size chosen
/// at creation; the byte-message sibling of [`Queue`](crate::Queue), with the same
/// semantics and the same typed errors ([`TryPutError`] hands the message back).
///
/// Receive copies ([`get`](ByteQueue::get), [`get_into`](ByteQueue::get_into)) or reads
/// the message in place ([`get_with`](ByteQueue::get_with): zero copy; the slot is held
/// until the callback returns). [`put_with`](ByteQueue::put_with) writes in place.
///
/// Gets report `Disconnected` once every producer is gone and the queue is drained, under
/// the rules of [`Queue`](crate::Queue)'s "Producers" section (a handle is a producer from
/// its first put in a process).
///
/// # Examples
/// ```
/// use ndshm::{ByteQueue, ErrorKind};
/// let q = ByteQueue::new(4, 64)?;
/// q.put(b"hello")?;
/// assert_eq!(q.get_with(|m| m.len())?, 5);
/// let too_big = [0u8; 65];
/// let err = q.put(&too_big).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::InvalidArgument);
/// assert_eq!(err.into_inner().len(), 65); // the message comes back
/// # Ok::<(), ndshm::Error>(())
/// ```
pub struct ByteQueue {
    shared: RingSegment,
}

/// A byte queue's slots hold one message each: a slot of 0 bytes could hold none.
fn check_slot_size(slot_size: usize) -> Result<()> {
    if slot_size == 0 {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            "a byte queue needs a slot_size of at least 1 byte (slot_size = 0): pass the size \
             of the largest message you will put",
        ));
    }
    Ok(())
}

impl ByteQueue {
    /// The queue's segment, for the ring's unit tests.
    #[cfg(test)]
    pub(crate) fn ring_segment(&self) -> &RingSegment {
        &self.shared
    }

    /// An anonymous queue of `capacity` messages (exactly) of up to `slot_size` bytes,
    /// shared with children forked after it.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for a zero capacity, a zero slot size (as Python's
    /// `SharedMemory(size=0)`) or a slot size over 4 GiB.
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::ByteQueue::new(3, 100)?;
    /// assert_eq!((q.capacity(), q.slot_size()), (3, 100));
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn new(capacity: usize, slot_size: usize) -> Result<Self> {
        check_slot_size(slot_size)?;
        Ok(ByteQueue {
            shared: RingSegment::make(None, capacity, slot_size, BYTES_TAG)?,
        })
    }

    /// Creates a named byte-queue segment; other processes [`open`](Self::open) it.
    ///
    /// # Errors
    /// As [`new`](Self::new), plus the errors of segment creation.
    ///
    /// # Examples
    /// ```
    /// use ndshm::{ByteQueue, CreateOptions};
    /// let q = ByteQueue::create(CreateOptions::unique(), 4, 32)?;
    /// let other = ByteQueue::open(q.name().unwrap())?;
    /// q.put(b"ping")?;
    /// assert_eq!(other.get()?, b"ping");
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn create(
        segment: impl Into<CreateOptions>,
        capacity: usize,
        slot_size: usize,
    ) -> Result<Self> {
        check_slot_size(slot_size)?;
        Ok(ByteQueue {
            shared: RingSegment::make(Some(segment.into()), capacity, slot_size, BYTES_TAG)?,
        })
    }

    /// Attaches byte-queue segment `name`.
    ///
    /// # Errors
    /// As [`Queue::open`](crate::Queue::open).
    ///
    /// # Examples
    /// ```
    /// use ndshm::{ByteQueue, ErrorKind};
    /// let err = ByteQueue::open("no-such-queue-here").unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::NotFound);
    /// ```
    pub fn open(name: &str) -> Result<Self> {
        Ok(ByteQueue {
            shared: RingSegment::open(name, BYTES_TAG)?,
        })
    }

    #[inline]
    fn ring(&self) -> Ring<'_> {
        self.shared.ring()
    }

    /// Refuses a message of `len` bytes that does not fit a slot.
    #[inline]
    fn check_len(&self, len: usize) -> std::result::Result<(), Outcome> {
        let slot_size = self.shared.slot_size();
        if len > slot_size {
            return Err(too_long(len, slot_size));
        }
        Ok(())
    }

    #[inline]
    pub(crate) fn put_wait(&self, msg: &[u8], wait: Wait) -> std::result::Result<(), Outcome> {
        self.put_fast(msg, wait).map_err(PutFail::outcome)
    }

    /// The put paths' core: a small error (a byte or two), so that the `Ok` path moves
    /// no `Outcome` around; the `Error` is made only on failure.
    #[inline]
    fn put_fast(&self, msg: &[u8], wait: Wait) -> std::result::Result<(), PutFail> {
        let slot_size = self.shared.slot_size();
        if msg.len() > slot_size {
            return Err(PutFail::TooLong(msg.len(), slot_size));
        }
        self.shared
            .producer()
            .and_then(|r| r.ring().put(msg, wait))
            .map_err(PutFail::Ring)
    }

    fn put_with_wait<F: FnOnce(&mut [u8])>(
        &self,
        len: usize,
        wait: Wait,
        fill: F,
    ) -> std::result::Result<(), (F, Outcome)> {
        let mut fill = Some(fill);
        let r = self.check_len(len).and_then(|()| {
            self.shared
                .producer()
                .and_then(|r| r.ring().put_with(len, wait, &mut fill))
                .map_err(|e| outcome(e, true))
        });
        r.map_err(|o| (fill.take().expect("fill is kept when the put failed"), o))
    }

    #[inline]
    pub(crate) fn get_wait<R>(
        &self,
        wait: Wait,
        f: impl FnOnce(&[u8]) -> R,
    ) -> std::result::Result<R, Outcome> {
        self.shared.get(wait, f).map_err(get_outcome)
    }

    /// Puts a copy of `msg`, waiting while the queue is full.
    ///
    /// # Errors
    /// [`PutError::Closed`]; [`PutError::Failed`] of [`ErrorKind::InvalidArgument`] when
    /// `msg` exceeds the slot size, of [`ErrorKind::Corrupt`] when the queue's memory was
    /// overwritten. Each hands `msg` back.
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::ByteQueue::new(2, 8)?;
    /// q.put(b"abc")?;
    /// assert_eq!(q.get()?, b"abc");
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn put<'a>(&self, msg: &'a [u8]) -> std::result::Result<(), PutError<&'a [u8]>> {
        self.put_wait(msg, Wait::Until(None))
            .map_err(|o| o.put(msg))
    }

    /// Puts `msg` if there is room now.
    ///
    /// # Errors
    /// [`TryPutError::Full`], [`TryPutError::Closed`], [`TryPutError::Failed`] (as
    /// [`put`](Self::put)), each with `msg`.
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::ByteQueue::new(2, 8)?;
    /// q.try_put(b"a")?;
    /// q.try_put(b"b")?;
    /// assert!(q.try_put(b"c").unwrap_err().is_full());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn try_put<'a>(&self, msg: &'a [u8]) -> std::result::Result<(), TryPutError<&'a [u8]>> {
        self.put_fast(msg, Wait::No)
            .map_err(|e| e.outcome().try_put(msg))
    }

    /// Puts `msg`, waiting at most `timeout` for room.
    ///
    /// # Errors
    /// [`PutTimeoutError::Timeout`], [`PutTimeoutError::Closed`],
    /// [`PutTimeoutError::Failed`] (as [`put`](Self::put)), each with `msg`.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let q = ndshm::ByteQueue::new(2, 8)?;
    /// q.put(b"a")?;
    /// q.put(b"b")?;
    /// let e = q.put_timeout(b"c", Duration::from_millis(1)).unwrap_err();
    /// assert!(e.is_timeout());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn put_timeout<'a>(
        &self,
        msg: &'a [u8],
        timeout: Duration,
    ) -> std::result::Result<(), PutTimeoutError<&'a [u8]>> {
        self.put_wait(msg, deadline(timeout))
            .map_err(|o| o.put_timeout(msg))
    }

    /// Puts a message of `len` bytes that `fill` writes in place (zero copy), waiting
    /// while the queue is full. If `fill` panics, the slot is published as lost (consumers
    /// skip it, [`lost`](Self::lost) counts it) and the panic goes on.
    ///
    /// # Errors
    /// As [`put`](Self::put), handing `fill` back (it was not called).
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::ByteQueue::new(2, 16)?;
    /// q.put_with(4, |buf| buf.copy_from_slice(&7u32.to_le_bytes()))?;
    /// assert_eq!(q.get()?, 7u32.to_le_bytes());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn put_with<F: FnOnce(&mut [u8])>(
        &self,
        len: usize,
        fill: F,
    ) -> std::result::Result<(), PutError<F>> {
        self.put_with_wait(len, Wait::Until(None), fill)
            .map_err(|(f, o)| o.put(f))
    }

    /// [`put_with`](Self::put_with) if there is room now.
    ///
    /// # Errors
    /// As [`try_put`](Self::try_put), handing `fill` back.
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::ByteQueue::new(2, 16)?;
    /// q.try_put_with(1, |b| b[0] = 1)?;
    /// q.try_put_with(1, |b| b[0] = 2)?;
    /// assert!(q.try_put_with(1, |b| b[0] = 3).unwrap_err().is_full());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn try_put_with<F: FnOnce(&mut [u8])>(
        &self,
        len: usize,
        fill: F,
    ) -> std::result::Result<(), TryPutError<F>> {
        self.put_with_wait(len, Wait::No, fill)
            .map_err(|(f, o)| o.try_put(f))
    }

    /// [`put_with`](Self::put_with), waiting at most `timeout` for room.
    ///
    /// # Errors
    /// As [`put_timeout`](Self::put_timeout), handing `fill` back.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let q = ndshm::ByteQueue::new(2, 16)?;
    /// q.put_with_timeout(1, Duration::from_millis(10), |b| b[0] = 9)?;
    /// assert_eq!(q.get()?, [9]);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn put_with_timeout<F: FnOnce(&mut [u8])>(
        &self,
        len: usize,
        timeout: Duration,
        fill: F,
    ) -> std::result::Result<(), PutTimeoutError<F>> {
        self.put_with_wait(len, deadline(timeout), fill)
            .map_err(|(f, o)| o.put_timeout(f))
    }

    /// Takes a message and hands it to `f` in place (zero copy), waiting while the queue
    /// is empty. The slot is freed when `f` returns (or panics).
    ///
    /// # Errors
    /// [`GetError::Closed`] when this handle was closed or the queue shut down (and
    /// drained, unless immediately), [`GetError::Disconnected`] when every producer is gone
    /// and the queue is drained, [`GetError::Failed`] of
    /// [`ErrorKind::Corrupt`] when its memory was overwritten.
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::ByteQueue::new(2, 16)?;
    /// q.put(&[1, 2, 3])?;
    /// let sum: u32 = q.get_with(|m| m.iter().map(|&b| u32::from(b)).sum())?;
    /// assert_eq!(sum, 6);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn get_with<R>(&self, f: impl FnOnce(&[u8]) -> R) -> std::result::Result<R, GetError> {
        self.shared
            .get(Wait::Until(None), f)
            .map_err(|e| get_outcome(e).get())
    }

    /// [`get_with`](Self::get_with) without waiting.
    ///
    /// # Errors
    /// [`TryGetError::Empty`] when empty now, [`TryGetError::Closed`] when closed and
    /// empty, [`TryGetError::Disconnected`] when every producer is gone and it is empty,
    /// [`TryGetError::Failed`].
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::ByteQueue::new(2, 16)?;
    /// assert!(q.try_get_with(|m| m.len()).unwrap_err().is_empty());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn try_get_with<R>(
        &self,
        f: impl FnOnce(&[u8]) -> R,
    ) -> std::result::Result<R, TryGetError> {
        self.shared
            .get(Wait::No, f)
            .map_err(|e| get_outcome(e).try_get())
    }

    /// [`get_with`](Self::get_with), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`GetTimeoutError::Timeout`], [`GetTimeoutError::Closed`],
    /// [`GetTimeoutError::Failed`].
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let q = ndshm::ByteQueue::new(2, 16)?;
    /// let e = q.get_with_timeout(Duration::from_millis(1), |m| m.len()).unwrap_err();
    /// assert!(e.is_timeout());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn get_with_timeout<R>(
        &self,
        timeout: Duration,
        f: impl FnOnce(&[u8]) -> R,
    ) -> std::result::Result<R, GetTimeoutError> {
        self.get_wait(deadline(timeout), f)
            .map_err(Outcome::get_timeout)
    }

    /// Takes a message as a new `Vec`, waiting while the queue is empty.
    ///
    /// # Errors
    /// As [`get_with`](Self::get_with).
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::ByteQueue::new(2, 16)?;
    /// q.put(b"x")?;
    /// assert_eq!(q.get()?, b"x");
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn get(&self) -> std::result::Result<Vec<u8>, GetError> {
        self.get_with(|m| m.to_vec())
    }

    /// Takes a message into `buf` (cleared first), reusing its allocation; returns its
    /// length.
    ///
    /// # Errors
    /// As [`get_with`](Self::get_with).
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::ByteQueue::new(2, 16)?;
    /// let mut buf = Vec::with_capacity(16);
    /// q.put(b"abc")?;
    /// assert_eq!(q.get_into(&mut buf)?, 3);
    /// assert_eq!(buf, b"abc");
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn get_into(&self, buf: &mut Vec<u8>) -> std::result::Result<usize, GetError> {
        self.get_with(|m| {
            buf.clear();
            buf.extend_from_slice(m);
            m.len()
        })
    }

    /// Takes a message as a new `Vec` if there is one now.
    ///
    /// # Errors
    /// As [`try_get_with`](Self::try_get_with): an empty queue is
    /// [`TryGetError::Empty`], never a timeout.
    ///
    /// # Examples
    /// ```
    /// use ndshm::{ByteQueue, TryGetError};
    /// let q = ByteQueue::new(2, 16)?;
    /// assert_eq!(q.try_get(), Err(TryGetError::Empty));
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn try_get(&self) -> std::result::Result<Vec<u8>, TryGetError> {
        self.try_get_with(|m| m.to_vec())
    }

    /// Takes a message, waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`get_with_timeout`](Self::get_with_timeout).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let q = ndshm::ByteQueue::new(2, 16)?;
    /// q.put(b"late")?;
    /// assert_eq!(q.get_timeout(Duration::from_secs(1))?, b"late");
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> std::result::Result<Vec<u8>, GetTimeoutError> {
        self.get_with_timeout(timeout, |m| m.to_vec())
    }

    /// Closes this handle: this process puts and gets no more through it (Python's
    /// `Queue.close()`). Other handles — copies in forked children, handles opened by
    /// name — go on working; see [`Queue::close`](crate::Queue::close).
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::ByteQueue::new(2, 8)?;
    /// q.close();
    /// assert!(q.put(b"x").unwrap_err().is_closed());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn close(&self) {
        self.shared.close_handle()
    }

    /// Makes this handle a producer in this process now, as its first put would; see
    /// [`Queue::register_producer`](crate::Queue::register_producer).
    ///
    /// # Errors
    /// [`ErrorKind::Closed`] when this handle was closed.
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::ByteQueue::new(2, 8)?;
    /// q.register_producer()?;
    /// q.close();
    /// assert!(q.get().unwrap_err().is_closed()); // this handle is closed
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn register_producer(&self) -> Result<()> {
        self.shared
            .register_producer()
            .map_err(|e| Error::from(outcome(e, true).put(())))
    }

    /// Whether this handle was closed with [`close`](Self::close) (a shutdown of the
    /// queue is [`is_shutdown`](Self::is_shutdown)).
    pub fn is_closed(&self) -> bool {
        self.shared.is_handle_closed()
    }

    /// Ends the queue for every process (Python 3.13's `Queue.shutdown`); see
    /// [`Queue::shutdown`](crate::Queue::shutdown).
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::ByteQueue::new(2, 8)?;
    /// q.put(b"last")?;
    /// q.shutdown(false);
    /// assert!(q.put(b"x").unwrap_err().is_closed());
    /// assert_eq!(q.get()?, b"last"); // drained,
    /// assert!(q.get().unwrap_err().is_closed()); // then closed
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn shutdown(&self, immediate: bool) {
        self.shared.ring().shutdown(immediate)
    }

    /// Whether the queue was shut down (by any process).
    pub fn is_shutdown(&self) -> bool {
        self.ring().is_closed()
    }

    /// Messages in the queue now (a snapshot).
    pub fn len(&self) -> usize {
        self.ring().len()
    }

    /// Whether the queue is empty now (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The capacity asked for: at most this many messages are in the queue at once.
    pub fn capacity(&self) -> usize {
        self.ring().capacity()
    }

    /// The largest message, in bytes.
    pub fn slot_size(&self) -> usize {
        self.shared.slot_size()
    }

    /// Messages lost because a producer or consumer died in the middle of moving them.
    pub fn lost(&self) -> u64 {
        self.ring().lost()
    }

    /// The segment name, or `None` for an anonymous queue.
    pub fn name(&self) -> Option<&str> {
        self.shared.region().name()
    }

    pub(crate) fn region_is_owner_here(&self) -> bool {
        self.shared.region().is_owner_here()
    }
}

impl fmt::Debug for ByteQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteQueue")
            .field("name", &self.name())
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .field("shutdown", &self.is_shutdown())
            .field("slot_size", &self.slot_size())
            .finish()
    }
}

/// Why a put failed, before it becomes an [`Outcome`] (which carries an `Error`).
#[derive(Clone, Copy)]
enum PutFail {
    Ring(Fail),
    TooLong(usize, usize),
}

impl PutFail {
    #[cold]
    fn outcome(self) -> Outcome {
        match self {
            PutFail::Ring(e) => outcome(e, true),
            PutFail::TooLong(len, slot_size) => too_long(len, slot_size),
        }
    }
}

/// The outcome of a failed get (out of line).
#[cold]
fn get_outcome(e: Fail) -> Outcome {
    outcome(e, false)
}

/// The error of a message of `len` bytes for slots of `slot_size` bytes (out of line: the
/// put paths stay small).
#[cold]
#[inline(never)]
fn too_long(len: usize, slot_size: usize) -> Outcome {
    Outcome::Failed(Error::new(
        ErrorKind::InvalidArgument,
        format!(
            "a message of {len} bytes does not fit the queue's slots of {slot_size} bytes: \
             create the queue with a larger slot size, or split the message"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panicking_reader_frees_the_slot() {
        let q = ByteQueue::new(1, 8).unwrap();
        q.put(b"x").unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            q.get_with(|_| panic!("reader fails")).unwrap()
        }));
        assert!(r.is_err());
        q.try_put(b"y").unwrap();
        assert_eq!(q.get().unwrap(), b"y");
    }
}
