//! `Pipe`: a duplex connection pair in shared memory, Python's `multiprocessing.Pipe()`.
//!
//! Two rings of slots (one per direction, the same ring as [`Queue`](crate::Queue)'s), in
//! one named segment or in anonymous shared memory that forked children inherit. A message
//! of any length is sent as one or more slot-sized chunks, each slot starting with a byte
//! that says whether it is a message's first chunk and whether more follow, so `recv`
//! returns exactly what one `send` sent.
//!
//! Senders of long messages on one end take turns: such a sender holds the direction's
//! *sender word* (its lease, see the crate docs) from its message's first chunk to its
//! last, so two processes (or threads) sending on the same end never interleave their
//! chunks; a sender that died holding it is passed over. A one-chunk message needs no turn
//! (it cannot be torn): it may arrive between the chunks of another sender's long message,
//! and is received first. A receiver in the middle of a message checks, at least every
//! [`Lock::LIVENESS_PERIOD`](crate::Lock::LIVENESS_PERIOD), whether that sender died; then
//! it drops the partial message, counts it in [`Connection::lost`], and goes on waiting for
//! the next message (within its timeout). A timed or `try_` receive that runs out of time
//! in the middle of a message keeps what it has received for the next receive on that end.
//! Receive on one thread at a time per end ([`ErrorKind::WouldDeadlock`] otherwise).

use std::cell::UnsafeCell;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytemuck::Pod;

use crate::error::{Error, ErrorKind, Result};
use crate::ipc::queue::{ring_layout, Fail, Ring, Wait};
use crate::segment::region::Region;
use crate::segment::trailer::SegmentKind;
use crate::segment::CreateOptions;
use crate::sync::lock::LIVENESS_PERIOD;
use crate::sys::lease::{self, Liveness};

/// Chunk flags (the first byte of each slot): more chunks of this message follow.
const MORE: u8 = 1;
/// The first chunk of a message.
const FIRST: u8 = 2;
/// Tag of pipe rings.
const PIPE_TAG: u64 = u64::from_le_bytes(*b"ndshmPIP");

struct Shared {
    rings: [Ring; 2],
    region: Region,
}

/// Opens a duplex pipe: Python's `Pipe()`.
///
/// [`Pipe::new`] gives both ends at once, in anonymous shared memory, to fork children
/// with; [`Pipe::create`] and [`Pipe::open`] give the two ends of a named pipe to two
/// unrelated processes.
///
/// # Examples
/// ```
/// use ndshm::Pipe;
/// let (parent, child) = Pipe::new()?;
/// ndshm::scope(|s| -> ndshm::Result<()> {
///     s.spawn(|| -> ndshm::Result<()> {
///         for i in 0..3 {
///             let msg = child.recv_string()?;
///             child.send_str(&format!("Worker reply {i} to {msg}"))?;
///         }
///         Ok(())
///     })?;
///     for i in 0..3 {
///         parent.send_str(&format!("Main message {i}"))?;
///         assert_eq!(parent.recv_string()?, format!("Worker reply {i} to Main message {i}"));
///     }
///     Ok(())
/// })?;
/// # Ok::<(), ndshm::Error>(())
/// ```
#[derive(Debug)]
pub struct Pipe {
    _private: (),
}

impl Pipe {
    /// Default number of chunks in flight per direction.
    pub const DEFAULT_SLOTS: usize = 32;
    /// Default chunk size, in bytes (a slot is the chunk, a flag byte and a 32-byte header,
    /// 8 KiB in all).
    pub const DEFAULT_CHUNK: usize = 8192 - 64;

    /// Both ends of an anonymous pipe with default sizes ([`Pipe::DEFAULT_SLOTS`] chunks of
    /// [`Pipe::DEFAULT_CHUNK`] bytes in flight per direction).
    ///
    /// # Errors
    /// An OS error when the shared mapping fails.
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> Result<(Connection, Connection)> {
        Self::with_capacity(Self::DEFAULT_SLOTS, Self::DEFAULT_CHUNK)
    }

    /// Both ends of an anonymous pipe with `slots` chunks of `chunk` bytes per direction.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for zero slots or a zero chunk size.
    pub fn with_capacity(slots: usize, chunk: usize) -> Result<(Connection, Connection)> {
        let (len, init) = layout(slots, chunk)?;
        let shared = Arc::new(attach(Region::anonymous(2 * len, init)?, len)?);
        Ok((
            Connection::new(Arc::clone(&shared), 0),
            Connection::new(shared, 1),
        ))
    }

    /// Creates pipe segment `name` and returns its first end; another process takes the
    /// second with [`open`](Pipe::open).
    ///
    /// # Errors
    /// As [`with_capacity`](Pipe::with_capacity), plus the errors of segment creation.
    pub fn create(
        segment: impl Into<CreateOptions>,
        slots: usize,
        chunk: usize,
    ) -> Result<Connection> {
        let (len, init) = layout(slots, chunk)?;
        let region = Region::create(&segment.into(), SegmentKind::Pipe, 2 * len, init)?;
        Ok(Connection::new(Arc::new(attach(region, len)?), 0))
    }

    /// Attaches pipe segment `name` and returns its second end. Safe, as for queues.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`], [`ErrorKind::KindMismatch`], [`ErrorKind::InvalidHeader`],
    /// [`ErrorKind::AlreadyOpen`].
    pub fn open(name: &str) -> Result<Connection> {
        let region = Region::open(name, SegmentKind::Pipe, 0)?;
        let len = region.payload_len() / 2;
        Ok(Connection::new(Arc::new(attach(region, len)?), 1))
    }
}

type Init = Box<dyn FnOnce(&mut [u8]) -> Result<()>>;

fn layout(slots: usize, chunk: usize) -> Result<(usize, Init)> {
    if chunk == 0 {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            "a pipe needs a chunk size of at least 1 byte",
        ));
    }
    let slot = chunk
        .checked_add(1)
        .ok_or_else(|| Error::new(ErrorKind::InvalidArgument, "chunk size overflows"))?;
    let (_, _, len) = ring_layout(slots, slot)?;
    let init: Init = Box::new(move |mem: &mut [u8]| {
        let (a, b) = mem.split_at_mut(len);
        Ring::init(a, slots, slot, PIPE_TAG)?;
        Ring::init(b, slots, slot, PIPE_TAG)
    });
    Ok((len, init))
}

fn attach(region: Region, len: usize) -> Result<Shared> {
    let what = region
        .name()
        .map_or("anonymous pipe".into(), |n| format!("pipe '{n}'"));
    if len % 64 != 0 || 2 * len > region.payload_len() {
        return Err(Error::new(
            ErrorKind::InvalidHeader,
            format!("{what}: its size does not hold two rings; the segment is corrupted"),
        ));
    }
    // SAFETY: both halves lie inside the region's payload (checked above), are 64-byte
    // aligned (the payload is page-aligned and `len` a multiple of 64), stay mapped as long
    // as `region`, which `Shared` keeps with the rings, and are only accessed via Ring.
    let (a, b) = unsafe {
        (
            Ring::attach(region.payload_ptr(), len, &what)?,
            Ring::attach(region.payload_ptr().add(len), len, &what)?,
        )
    };
    if a.tag() != PIPE_TAG || b.tag() != PIPE_TAG || a.slot_size() != b.slot_size() {
        return Err(Error::new(
            ErrorKind::InvalidHeader,
            format!("{what}: its rings are not pipe rings; the segment is corrupted"),
        ));
    }
    Ok(Shared {
        rings: [a, b],
        region,
    })
}

/// One end of a [`Pipe`]: Python's `Connection`.
///
/// Sends and receives byte messages, strings, `Pod` values and slices of them; each
/// `recv` returns what one `send` sent. [`close`](Connection::close) tells the other end:
/// its `recv` returns what was already sent, then [`ErrorKind::Closed`] (Python's
/// `EOFError`), and its `send` fails with [`ErrorKind::Closed`]. Dropping an end does *not*
/// close it: the parent's copy of an end given to a forked child is dropped in the parent
/// while the child still uses it.
pub struct Connection {
    shared: Arc<Shared>,
    end: usize,
    /// A message a timed receive returned before its last chunk came; only touched by the
    /// thread that set `receiving`.
    partial: UnsafeCell<Partial>,
    /// Whether a thread of this process is receiving on this end (one at a time).
    receiving: AtomicBool,
}

// SAFETY: `partial` is only accessed by the thread that swapped `receiving` from false to
// true (Acquire), until it stores false (Release): one thread at a time; the rest is
// `Sync` (atomics in shared memory, an `Arc`).
unsafe impl Sync for Connection {}

fn fail(e: Fail, sending: bool) -> Error {
    match (e, sending) {
        (Fail::Closed, true) => Error::new(
            ErrorKind::Closed,
            "the pipe was closed: the other end no longer receives",
        ),
        (Fail::Closed, false) => Error::new(
            ErrorKind::Closed,
            "the pipe was closed by the other end and everything sent was received",
        ),
        (Fail::Timeout, _) | (Fail::WouldBlock, false) => {
            Error::new(ErrorKind::Timeout, "no message arrived in time")
        }
        (Fail::WouldBlock, true) => Error::new(ErrorKind::Full, "the pipe is full"),
        (Fail::Corrupt, _) => Error::new(
            ErrorKind::Corrupt,
            "the pipe's shared memory holds positions no pipe has (it was overwritten); \
             it cannot be used any more: make a new one",
        ),
    }
}

/// Where a receive puts the chunks of a message.
trait Sink {
    fn clear(&mut self);
    fn extend(&mut self, data: &[u8]);
    fn len(&self) -> usize;
    /// The bytes received so far, to resume from in the next call.
    fn save(&mut self) -> Vec<u8>;
}

impl Sink for Vec<u8> {
    fn clear(&mut self) {
        Vec::clear(self)
    }
    fn extend(&mut self, data: &[u8]) {
        self.extend_from_slice(data)
    }
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn save(&mut self) -> Vec<u8> {
        std::mem::take(self)
    }
}

/// Receives a `Pod` value in place; counts the bytes of longer messages without keeping
/// them.
struct PodSink<'a> {
    bytes: &'a mut [u8],
    n: usize,
}

impl Sink for PodSink<'_> {
    fn clear(&mut self) {
        self.n = 0;
    }
    fn extend(&mut self, data: &[u8]) {
        if let Some(dst) = self.bytes.get_mut(self.n..self.n + data.len()) {
            dst.copy_from_slice(data);
        }
        self.n += data.len();
    }
    fn len(&self) -> usize {
        self.n
    }
    fn save(&mut self) -> Vec<u8> {
        let mut v = self.bytes[..self.n.min(self.bytes.len())].to_vec();
        v.resize(self.n, 0);
        v
    }
}

/// A message cut short by a previous call's timeout, resumed by the next receive.
#[derive(Default)]
struct Partial {
    bytes: Vec<u8>,
    active: bool,
}

/// Clears a connection's `receiving` flag (also on unwind).
struct Receiving<'a>(&'a AtomicBool);

impl Drop for Receiving<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// This process's turn to send on one direction: the ring's sender word holds its lease
/// until the message's last chunk is in (released on drop).
struct Turn<'a>(&'a AtomicU64);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Release);
    }
}

/// How long a sender waiting for its turn sleeps between tries.
const TURN_NAP: Duration = Duration::from_micros(50);

impl Connection {
    fn new(shared: Arc<Shared>, end: usize) -> Connection {
        Connection {
            shared,
            end,
            partial: UnsafeCell::new(Partial::default()),
            receiving: AtomicBool::new(false),
        }
    }

    fn tx(&self) -> &Ring {
        &self.shared.rings[self.end]
    }

    fn rx(&self) -> &Ring {
        &self.shared.rings[1 - self.end]
    }

    /// Waits for this process's turn to send (see [`Turn`]): another process (or thread)
    /// sending a message on this end finishes first; a sender that died mid-message is
    /// passed over.
    fn take_turn(&self, wait: Wait) -> Result<Turn<'_>> {
        let word = self.tx().sender();
        let me = lease::holder();
        let mut checked = Instant::now();
        loop {
            let other = match word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Ok(Turn(word)),
                Err(other) => other,
            };
            if self.tx().is_closed() {
                return Err(fail(Fail::Closed, true));
            }
            let deadline = match wait {
                Wait::No => Some(Instant::now()),
                Wait::Until(d) => d,
            };
            if checked.elapsed() >= LIVENESS_PERIOD || matches!(wait, Wait::No) {
                checked = Instant::now();
                if other != me && lease::check(other) == Liveness::Dead {
                    // Its partial message is dropped by the receiver.
                    let _ = word.compare_exchange(other, 0, Ordering::Relaxed, Ordering::Relaxed);
                    continue;
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Error::new(
                    if matches!(wait, Wait::No) {
                        ErrorKind::Full
                    } else {
                        ErrorKind::Timeout
                    },
                    "another process or thread is sending a message on this end of the pipe",
                ));
            }
            std::thread::sleep(TURN_NAP);
        }
    }

    fn send_wait(&self, msg: &[u8], wait: Wait) -> Result<()> {
        let tx = self.tx();
        let chunk = tx.slot_size() - 1;
        if msg.len() <= chunk {
            // One chunk: it cannot interleave with another, no turn needed.
            return tx
                .put_parts(&[&[FIRST], msg], wait)
                .map_err(|e| fail(e, true));
        }
        let _turn = self.take_turn(wait)?;
        let mut chunks = msg.chunks(chunk).peekable();
        let mut first = true;
        while let Some(c) = chunks.next() {
            let mut flag = if chunks.peek().is_some() { MORE } else { 0 };
            if first {
                flag |= FIRST;
            }
            // Once the first chunk is in, the rest must follow: wait for room.
            let w = if first { wait } else { Wait::Until(None) };
            tx.put_parts(&[&[flag], c], w).map_err(|e| fail(e, true))?;
            first = false;
        }
        Ok(())
    }

    /// Whether the message being received will never be completed: its sender died (or
    /// finished, and nothing is left in the ring).
    fn sender_gone(&self) -> bool {
        let rx = self.rx();
        let word = rx.sender();
        let s = word.load(Ordering::Acquire);
        if s == 0 {
            // The last chunk goes in before the word is cleared.
            return rx.is_empty_now();
        }
        if lease::check(s) == Liveness::Dead {
            let _ = word.compare_exchange(s, 0, Ordering::Relaxed, Ordering::Relaxed);
            return true;
        }
        false
    }

    fn recv_wait(&self, sink: &mut impl Sink, wait: Wait) -> Result<usize> {
        if self.receiving.swap(true, Ordering::Acquire) {
            return Err(Error::new(
                ErrorKind::WouldDeadlock,
                "another thread of this process is receiving on this end of the pipe: \
                 receive on one thread at a time",
            ));
        }
        let _receiving = Receiving(&self.receiving);
        // SAFETY: this thread set `receiving` (above) and clears it when `_receiving`
        // drops, after the last use of `partial`: no other thread touches it meanwhile.
        let partial = unsafe { &mut *self.partial.get() };
        sink.clear();
        let mut active = std::mem::take(&mut partial.active);
        if active {
            sink.extend(&partial.bytes);
            partial.bytes = Vec::new();
        }
        let rx = self.rx();
        loop {
            // In the middle of a message, wait in slices to notice a sender that died.
            let w = match wait {
                Wait::Until(d) if active => {
                    let slice = Instant::now() + LIVENESS_PERIOD;
                    Wait::Until(Some(d.map_or(slice, |d| d.min(slice))))
                }
                w => w,
            };
            let mut done = false;
            let mut dropped = false;
            let r = rx.get(w, |m| {
                let (flag, data) = m.split_first().map_or((FIRST, &[][..]), |(f, d)| (*f, d));
                if flag & FIRST != 0 && active {
                    if flag & MORE == 0 {
                        // A one-chunk message (sent without a turn) between two chunks of
                        // a long one: deliver it, keep the long one for the next receive.
                        partial.bytes = sink.save();
                        partial.active = true;
                        sink.clear();
                        sink.extend(data);
                        done = true;
                        return;
                    }
                    // Long messages take turns: the one before was cut short by its
                    // sender's death.
                    sink.clear();
                    dropped = true;
                }
                if flag & FIRST != 0 {
                    active = true;
                }
                if active {
                    sink.extend(data);
                    done = flag & MORE == 0;
                }
            });
            if dropped {
                rx.count_lost();
            }
            match r {
                Ok(()) if done => return Ok(sink.len()),
                Ok(()) => {}
                Err(Fail::WouldBlock | Fail::Timeout) if active => {
                    if self.sender_gone() {
                        sink.clear();
                        active = false;
                        rx.count_lost();
                        continue;
                    }
                    let over = match wait {
                        Wait::No => true,
                        Wait::Until(d) => d.is_some_and(|d| Instant::now() >= d),
                    };
                    if over {
                        partial.bytes = sink.save();
                        partial.active = true;
                        return Err(fail(Fail::Timeout, false));
                    }
                }
                Err(e) => {
                    if active {
                        rx.count_lost();
                    }
                    return Err(fail(e, false));
                }
            }
        }
    }

    /// Sends a byte message (any length), waiting for room and for its turn (see the
    /// module docs).
    ///
    /// # Errors
    /// [`ErrorKind::Closed`], [`ErrorKind::Corrupt`].
    pub fn send_bytes(&self, msg: &[u8]) -> Result<()> {
        self.send_wait(msg, Wait::Until(None))
    }

    /// Sends a byte message if there is room for its first chunk now (the rest waits for
    /// room).
    ///
    /// # Errors
    /// [`ErrorKind::Full`] (also while another process or thread is sending a message on
    /// this end), [`ErrorKind::Closed`], [`ErrorKind::Corrupt`].
    pub fn try_send_bytes(&self, msg: &[u8]) -> Result<()> {
        self.send_wait(msg, Wait::No)
    }

    /// Receives a byte message, waiting for one. A message whose sender died part-way is
    /// dropped and counted in [`lost`](Self::lost) (see the module docs).
    ///
    /// # Errors
    /// [`ErrorKind::Closed`] when the other end closed and everything was received;
    /// [`ErrorKind::WouldDeadlock`] when another thread of this process is receiving on
    /// this end; [`ErrorKind::Corrupt`] when the pipe's shared memory was overwritten.
    pub fn recv_bytes(&self) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.recv_wait(&mut buf, Wait::Until(None))?;
        Ok(buf)
    }

    /// Receives a byte message into `buf` (cleared first, allocation reused); returns its
    /// length.
    ///
    /// # Errors
    /// As [`recv_bytes`](Self::recv_bytes).
    pub fn recv_bytes_into(&self, buf: &mut Vec<u8>) -> Result<usize> {
        self.recv_wait(buf, Wait::Until(None))
    }

    /// Receives a byte message if one is there now, whole or completing the part an
    /// earlier timed receive got.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`] when none is (what arrived of a long message is kept for the
    /// next receive), and as [`recv_bytes`](Self::recv_bytes).
    pub fn try_recv_bytes(&self) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.recv_wait(&mut buf, Wait::No)?;
        Ok(buf)
    }

    /// Receives a byte message, waiting at most `timeout` (plus a few milliseconds).
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`] (what arrived of a long message is kept for the next
    /// receive), and as [`recv_bytes`](Self::recv_bytes).
    pub fn recv_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        let wait = Wait::Until(Instant::now().checked_add(timeout));
        self.recv_wait(&mut buf, wait)?;
        Ok(buf)
    }

    /// Sends a string.
    ///
    /// # Errors
    /// As [`send_bytes`](Self::send_bytes).
    pub fn send_str(&self, s: &str) -> Result<()> {
        self.send_bytes(s.as_bytes())
    }

    /// Receives a string.
    ///
    /// # Errors
    /// As [`recv_bytes`](Self::recv_bytes), and [`ErrorKind::InvalidArgument`] when the
    /// message is not UTF-8.
    pub fn recv_string(&self) -> Result<String> {
        String::from_utf8(self.recv_bytes()?).map_err(|e| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("received a message that is not UTF-8 ({e}); use recv_bytes"),
            )
        })
    }

    /// Sends a `Pod` value.
    ///
    /// # Errors
    /// As [`send_bytes`](Self::send_bytes).
    pub fn send<T: Pod>(&self, value: &T) -> Result<()> {
        self.send_bytes(bytemuck::bytes_of(value))
    }

    /// Receives a `Pod` value.
    ///
    /// # Errors
    /// As [`recv_bytes`](Self::recv_bytes), and [`ErrorKind::TypeMismatch`] when the
    /// message is not the size of a `T` (it is consumed).
    pub fn recv<T: Pod>(&self) -> Result<T> {
        let mut v = T::zeroed();
        let size = std::mem::size_of::<T>();
        let mut sink = PodSink {
            bytes: bytemuck::bytes_of_mut(&mut v),
            n: 0,
        };
        let n = self.recv_wait(&mut sink, Wait::Until(None))?;
        if n != size {
            return Err(Error::new(
                ErrorKind::TypeMismatch,
                format!(
                    "received a message of {n} bytes, expected a {} of {size} bytes",
                    std::any::type_name::<T>()
                ),
            ));
        }
        Ok(v)
    }

    /// Sends a slice of `Pod` values as one message.
    ///
    /// # Errors
    /// As [`send_bytes`](Self::send_bytes).
    pub fn send_slice<T: Pod>(&self, values: &[T]) -> Result<()> {
        self.send_bytes(bytemuck::cast_slice(values))
    }

    /// Receives a message sent by [`send_slice`](Self::send_slice).
    ///
    /// # Errors
    /// As [`recv_bytes`](Self::recv_bytes), and [`ErrorKind::TypeMismatch`] when the
    /// message length is not a multiple of `T`'s size.
    pub fn recv_vec<T: Pod>(&self) -> Result<Vec<T>> {
        let bytes = self.recv_bytes()?;
        let size = std::mem::size_of::<T>();
        if size == 0 || bytes.len() % size != 0 {
            return Err(Error::new(
                ErrorKind::TypeMismatch,
                format!(
                    "received {} bytes, not a whole number of {} ({size} bytes)",
                    bytes.len(),
                    std::any::type_name::<T>()
                ),
            ));
        }
        let mut out = vec![T::zeroed(); bytes.len() / size];
        bytemuck::cast_slice_mut::<T, u8>(&mut out).copy_from_slice(&bytes);
        Ok(out)
    }

    /// Whether a message is waiting (Python's `poll()` without a timeout).
    pub fn poll(&self) -> bool {
        !self.rx().is_empty_now()
    }

    /// Messages this end will never receive whole: a message whose sender died after
    /// sending part of it is dropped by the receiver (a receive that was collecting it goes
    /// on waiting for the next message, within its timeout) and counted here, as is a
    /// chunk whose sender died while writing it. Never reset.
    pub fn lost(&self) -> u64 {
        self.rx().lost()
    }

    /// Closes the connection in both directions (see the type's docs).
    pub fn close(&self) {
        self.tx().close();
        self.rx().close();
    }

    /// The segment name, or `None` for an anonymous pipe.
    pub fn name(&self) -> Option<&str> {
        self.shared.region.name()
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("name", &self.name())
            .field("end", &self.end)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_of_every_size_keep_their_bounds() {
        let (a, b) = Pipe::with_capacity(4, 16).unwrap();
        for len in [0usize, 1, 15, 16, 17, 63, 64, 65, 200] {
            let msg: Vec<u8> = (0..len).map(|i| i as u8).collect();
            // Long messages need the reader running: use a thread.
            std::thread::scope(|s| {
                s.spawn(|| a.send_bytes(&msg).unwrap());
                assert_eq!(b.recv_bytes().unwrap(), msg);
            });
        }
        a.send(&7u64).unwrap();
        assert_eq!(b.recv::<u64>().unwrap(), 7);
        a.send_slice(&[1i32, 2, 3]).unwrap();
        assert_eq!(b.recv_vec::<i32>().unwrap(), vec![1, 2, 3]);
        a.send(&1u8).unwrap();
        assert_eq!(b.recv::<u64>().unwrap_err().kind(), ErrorKind::TypeMismatch);
        assert_eq!(
            b.recv_bytes_timeout(Duration::from_millis(5))
                .unwrap_err()
                .kind(),
            ErrorKind::Timeout
        );
        b.send_str("hi").unwrap();
        a.close();
        assert_eq!(a.send_str("x").unwrap_err().kind(), ErrorKind::Closed);
        assert_eq!(b.recv_bytes().unwrap_err().kind(), ErrorKind::Closed);
        assert_eq!(a.recv_string().unwrap(), "hi");
    }
}
