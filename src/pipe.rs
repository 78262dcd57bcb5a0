//! `Pipe`: a duplex connection pair in shared memory, Python's `multiprocessing.Pipe()`.
//!
//! Two rings of slots (one per direction, the same ring as [`Queue`](crate::Queue)'s), in
//! one named segment or in anonymous shared memory that forked children inherit. A message
//! of any length is sent as one or more slot-sized chunks, each slot starting with a byte
//! that says whether more chunks follow, so `recv` returns exactly what one `send` sent.
//! Like Python's, each end is meant for one process at a time: two processes sending on
//! the same end at once may interleave the chunks of long messages.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytemuck::Pod;

use crate::error::{Error, ErrorKind, Result};
use crate::queue::{ring_layout, Fail, Ring, Wait};
use crate::region::Region;
use crate::segment::CreateOptions;
use crate::trailer::SegmentKind;

const MORE: u8 = 1;
const LAST: u8 = 0;
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
/// ndshm::scope(|s| {
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
            Connection {
                shared: Arc::clone(&shared),
                end: 0,
            },
            Connection { shared, end: 1 },
        ))
    }

    /// Creates pipe segment `name` and returns its first end; another process takes the
    /// second with [`open`](Pipe::open).
    ///
    /// # Errors
    /// As [`with_capacity`](Pipe::with_capacity), plus the errors of segment creation.
    pub fn create(name: &str, slots: usize, chunk: usize) -> Result<Connection> {
        Self::create_with(name, slots, chunk, &CreateOptions::new())
    }

    /// [`create`](Pipe::create) with options.
    ///
    /// # Errors
    /// As [`create`](Pipe::create).
    pub fn create_with(
        name: &str,
        slots: usize,
        chunk: usize,
        opts: &CreateOptions,
    ) -> Result<Connection> {
        let (len, init) = layout(slots, chunk)?;
        let region = Region::create(name, SegmentKind::Pipe, 2 * len, opts, init)?;
        Ok(Connection {
            shared: Arc::new(attach(region, len)?),
            end: 0,
        })
    }

    /// Attaches pipe segment `name` and returns its second end. Safe, as for queues.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`], [`ErrorKind::KindMismatch`], [`ErrorKind::InvalidHeader`],
    /// [`ErrorKind::AlreadyOpen`].
    pub fn open(name: &str) -> Result<Connection> {
        let region = Region::open(name, SegmentKind::Pipe, 0)?;
        let len = region.payload_len() / 2;
        Ok(Connection {
            shared: Arc::new(attach(region, len)?),
            end: 1,
        })
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
            Ring::attach(region.payload(), len, &what)?,
            Ring::attach(region.payload().add(len), len, &what)?,
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
}

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
    }
}

impl Connection {
    fn tx(&self) -> &Ring {
        &self.shared.rings[self.end]
    }

    fn rx(&self) -> &Ring {
        &self.shared.rings[1 - self.end]
    }

    fn send_wait(&self, msg: &[u8], wait: Wait) -> Result<()> {
        let chunk = self.tx().slot_size() - 1;
        if msg.len() <= chunk {
            return self
                .tx()
                .put_parts(&[&[LAST], msg], wait)
                .map_err(|e| fail(e, true));
        }
        let mut chunks = msg.chunks(chunk).peekable();
        let mut first = true;
        while let Some(c) = chunks.next() {
            let flag = if chunks.peek().is_some() { MORE } else { LAST };
            // Once the first chunk is in, the rest must follow: wait for room.
            let w = if first { wait } else { Wait::Until(None) };
            self.tx()
                .put_parts(&[&[flag], c], w)
                .map_err(|e| fail(e, true))?;
            first = false;
        }
        Ok(())
    }

    fn recv_wait(&self, buf: &mut Vec<u8>, wait: Wait) -> Result<usize> {
        buf.clear();
        let mut w = wait;
        loop {
            let more = self
                .rx()
                .get(w, |m| {
                    let (flag, data) = m.split_first().map_or((LAST, &[][..]), |(f, d)| (*f, d));
                    buf.extend_from_slice(data);
                    flag == MORE
                })
                .map_err(|e| fail(e, false))?;
            if !more {
                return Ok(buf.len());
            }
            w = Wait::Until(None);
        }
    }

    /// Sends a byte message (any length), waiting for room.
    ///
    /// # Errors
    /// [`ErrorKind::Closed`].
    pub fn send_bytes(&self, msg: &[u8]) -> Result<()> {
        self.send_wait(msg, Wait::Until(None))
    }

    /// Sends a byte message if there is room for its first chunk now.
    ///
    /// # Errors
    /// [`ErrorKind::Full`], [`ErrorKind::Closed`].
    pub fn try_send_bytes(&self, msg: &[u8]) -> Result<()> {
        self.send_wait(msg, Wait::No)
    }

    /// Receives a byte message, waiting for one.
    ///
    /// # Errors
    /// [`ErrorKind::Closed`] when the other end closed and everything was received.
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

    /// Receives a byte message if one is there now.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`] when none is, [`ErrorKind::Closed`].
    pub fn try_recv_bytes(&self) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.recv_wait(&mut buf, Wait::No)?;
        Ok(buf)
    }

    /// Receives a byte message, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`], [`ErrorKind::Closed`].
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
        let mut n = 0usize;
        let mut too_long = false;
        let mut w = Wait::Until(None);
        let size = std::mem::size_of::<T>();
        loop {
            let more = self
                .rx()
                .get(w, |m| {
                    let (flag, data) = m.split_first().map_or((LAST, &[][..]), |(f, d)| (*f, d));
                    let bytes = bytemuck::bytes_of_mut(&mut v);
                    if n + data.len() <= size {
                        bytes[n..n + data.len()].copy_from_slice(data);
                    } else {
                        too_long = true;
                    }
                    n += data.len();
                    flag == MORE
                })
                .map_err(|e| fail(e, false))?;
            if !more {
                break;
            }
            w = Wait::Until(None);
        }
        if too_long || n != size {
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
