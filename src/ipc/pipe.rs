//! [`pipe()`] and its two [`Connection`] ends: a duplex connection in shared memory,
//! Python's `multiprocessing.Pipe()`.
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
//! Receive on one thread at a time per end (a `Failed` error of [`ErrorKind::WouldDeadlock`]
//! otherwise).
//!
//! # Hang-up and hand-over
//! See [`Connection`]'s docs: the rules are part of its public contract.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use bytemuck::Pod;

use crate::error::{Error, ErrorKind, Result};
use crate::ipc::error::{
    Outcome, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
use crate::ipc::holders::{self, Holders, Ready, Registration};
use crate::ipc::ring::{deadline, ring_layout, Fail, Ring, RingLayout, Wait};
use crate::segment::region::Region;
use crate::segment::shared_mem::SharedMem;
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

/// The segment of a pipe: two rings of `half` bytes each, one per direction, then the
/// holder table ([`TABLE`] bytes).
struct Shared {
    layouts: [RingLayout; 2],
    half: usize,
    region: Region,
}

/// Holder table: a magic word, then one holder block per end (see [`super::holders`]).
const TABLE: usize = 64 + 2 * holders::BLOCK;

/// How often a waiting call checks whether the other end's holders died (a drop or close
/// of the last handle wakes it at once).
const HANGUP_PERIOD: Duration = Duration::from_millis(100);

impl Shared {
    fn table(&self) -> SharedMem<'_> {
        self.region.payload().sub(2 * self.half, TABLE)
    }

    /// The holder block of `end`.
    fn holders(&self, end: usize) -> Holders<'_> {
        Holders::new(self.table().sub(64 + end * holders::BLOCK, holders::BLOCK))
    }

    /// The other end of `end` is gone: closes both rings, which every waiter on either
    /// side sees at once (a receive drains, then reports `Disconnected`).
    fn hang_up(&self) {
        for i in 0..2 {
            let r = self.ring(i);
            if !r.is_closed() {
                r.close();
            }
        }
    }

    /// The ring of direction `i` (0: from the first end to the second).
    fn ring(&self, i: usize) -> Ring<'_> {
        Ring::over(
            self.region.payload().sub(i * self.half, self.half),
            self.layouts[i],
        )
    }
}

/// Both ends of an anonymous duplex pipe with default sizes, like `std::sync::mpsc::channel()`
/// (and Python's `multiprocessing.Pipe()`): the ends are shared with children forked after
/// it. Each end sends and receives; [`Connection::pair`] chooses the sizes,
/// [`Connection::create`] and [`Connection::open`] give the two ends of a named pipe to two
/// unrelated processes.
///
/// # Errors
/// An OS error when the shared mapping fails.
///
/// # Examples
/// ```
/// let (parent, child) = ndshm::pipe()?;
/// ndshm::scope(|s| -> ndshm::Result<_> {
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
///     Ok::<(), ndshm::Error>(())
/// })?;
/// # Ok::<(), ndshm::Error>(())
/// ```
pub fn pipe() -> Result<(Connection, Connection)> {
    Connection::pair(Connection::DEFAULT_SLOTS, Connection::DEFAULT_CHUNK)
}

type Init = Box<dyn FnOnce(&mut [u8]) -> Result<()>>;

fn layout(slots: usize, chunk: usize) -> Result<(usize, Init)> {
    if slots == 0 {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            "a pipe needs at least 1 slot (slots = 0): pass slots >= 1",
        ));
    }
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
        let (a, rest) = mem.split_at_mut(len);
        let (b, table) = rest.split_at_mut(len);
        Ring::init(a, slots, slot, PIPE_TAG)?;
        Ring::init(b, slots, slot, PIPE_TAG)?;
        table[..8].copy_from_slice(&holders::TABLE_MAGIC.to_le_bytes());
        Ok(())
    });
    Ok((len, init))
}

fn attach(region: Region, half: usize) -> Result<Shared> {
    let what = region
        .name()
        .map_or("anonymous pipe".into(), |n| format!("pipe '{n}'"));
    let payload = region.payload();
    let table_ok = payload
        .get(2 * half, TABLE)
        .is_some_and(|t| t.u64(0).load(Ordering::Acquire) == holders::TABLE_MAGIC);
    let (Some(a), Some(b), true) = (payload.get(0, half), payload.get(half, half), table_ok) else {
        return Err(Error::new(
            ErrorKind::InvalidHeader,
            format!("{what}: its size does not hold two rings; the segment is corrupted"),
        ));
    };
    if half % 64 != 0 {
        return Err(Error::new(
            ErrorKind::InvalidHeader,
            format!("{what}: its size does not hold two rings; the segment is corrupted"),
        ));
    }
    let layouts = [Ring::attach(a, &what)?, Ring::attach(b, &what)?];
    let (ra, rb) = (Ring::over(a, layouts[0]), Ring::over(b, layouts[1]));
    if ra.tag() != PIPE_TAG || rb.tag() != PIPE_TAG || ra.slot_size() != rb.slot_size() {
        return Err(Error::new(
            ErrorKind::InvalidHeader,
            format!("{what}: its rings are not pipe rings; the segment is corrupted"),
        ));
    }
    Ok(Shared {
        layouts,
        half,
        region,
    })
}

/// One end of a pipe: Python's `Connection`.
///
/// Sends and receives `Pod` values ([`send`](Connection::send) /
/// [`recv`](Connection::recv)), byte messages of any length
/// ([`send_bytes`](Connection::send_bytes) / [`recv_bytes`](Connection::recv_bytes)),
/// strings and slices; each receive returns what one send sent. Every send and receive
/// comes as a triple: blocking, `try_`, and `_timeout`, with the typed errors of
/// [`TrySendError`] / [`TryRecvError`] and their siblings (a failed send hands the value
/// back). [`close`](Connection::close) releases this handle only (Python's
/// `Connection.close()`); when the last handle of an end is closed or dropped, or the
/// processes holding it die, the other end's receive returns what was already sent, then
/// [`RecvError::Disconnected`] (Python's `EOFError`), and its send fails with
/// [`SendError::Disconnected`]. Giving an end to a forked child and dropping the parent's
/// copy is not a hang-up (see "Hang-up and hand-over" below).
///
/// # Hang-up and hand-over
/// Each end knows who holds it: the segment keeps, per end, a table of *holders*, one
/// entry per registered handle naming its process by its lease (the kernel-vouched
/// liveness token of the crate docs, "Crashes and signals"). An end is **gone** when it
/// had a holder and now every entry is released or names a dead process. Then the pipe
/// is hung up: a receive on the other end returns every message already sent, then
/// [`RecvError::Disconnected`] (Python's `EOFError`, `mpsc`'s `Disconnected`); a send
/// there fails with [`SendError::Disconnected`], handing the message back, including a
/// long send waiting for room. A drop or [`close`](Connection::close) of the last handle
/// wakes the other end at once; a death is noticed by a waiting call within about 100 ms
/// and by a `try_` call on its next call (checked at most every
/// [`Lock::LIVENESS_PERIOD`](crate::Lock::LIVENESS_PERIOD) per handle).
///
/// The rules, for processes that fork:
/// - A handle is registered by the process that made it ([`pipe()`],
///   [`Connection::pair`], [`create`](Connection::create), [`open`](Connection::open)).
/// - A copy inherited through `fork` does **not** count until it is used: its first send,
///   receive or poll in the child registers the child as a holder of that end. A child that
///   never touches its copy (a pool worker forked while the parent held the end) never
///   keeps the end alive.
/// - **Explicit hand-over.** A handle dropped (or closed) in the process that registered
///   it, when a child may have been forked since (by the thread that drops it, if that
///   thread also made the handle; by any thread of the process otherwise, so forks of
///   unrelated threads do not count for a handle used on one thread), does not release
///   the end at once: its entry
///   becomes a *pending hand-over*, still held while the process lives, until a child
///   settles it by using its copy (it registers itself first) or by dropping or closing
///   it. So `Process::spawn(move || .. end ..)` keeps working even when the child first
///   uses the end long after the parent dropped its copy, and Python's pattern
///   `p.start(); child_conn.close()` is not a hang-up. If a child settles first (it used
///   or closed its copy while the parent still held the end), the parent's later drop
///   releases at once. A pending hand-over that no child settles (the child was killed
///   before its first use, or the parent forked only unrelated children and then dropped
///   the end) ends when the parent exits.
/// - [`shutdown`](Connection::shutdown) ends the pipe for every handle at once, whoever
///   holds copies: the way out of a pending hand-over the other end must not wait for.
/// - A child closing or dropping its copy never cuts the parent off: it releases only the
///   child's own registration (or settles the inherited one, as above).
/// - A process that could not claim a lease, or an end with more than 60 live handles,
///   is never reported gone (the safe side: a receive then waits as before).
///
/// # Examples
/// ```
/// let (a, b) = ndshm::Connection::pair(4, 64)?;
/// a.send(42u64)?;
/// assert_eq!(b.recv::<u64>()?, 42);
/// b.send_bytes(b"pong")?;
/// assert!(a.poll()?);
/// assert_eq!(a.recv_bytes()?, b"pong");
/// # Ok::<(), ndshm::Error>(())
/// ```
pub struct Connection {
    shared: Arc<Shared>,
    end: usize,
    /// A message a timed receive returned before its last chunk came; held by the thread
    /// receiving on this end (one at a time: `try_lock`, never waiting for another).
    partial: Mutex<Partial>,
    /// This handle's registration as a holder of its end (see [`Connection`], "Hang-up and hand-over").
    reg: Registration,
    /// `close()` was called on this handle.
    closed: AtomicBool,
    /// When a `try_` call last checked the other end's holders (ms since `born`), to keep
    /// empty `try_recv` loops cheap.
    checked_ms: AtomicU64,
    born: Instant,
}

/// What a failed send or receive on a pipe ring says.
fn outcome(e: Fail, sending: bool) -> Outcome {
    if e == Fail::Closed {
        // Rings are closed only when an end is gone (see `Shared::hang_up`).
        return Outcome::Disconnected;
    }
    e.outcome(sending, || {
        Error::new(
            ErrorKind::Corrupt,
            "the pipe's shared memory holds positions no pipe has (it was overwritten); \
             it cannot be used any more: make a new one",
        )
    })
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

/// This process's turn to send on one direction: the ring's sender word holds its lease
/// until the message's last chunk is in (released on drop).
struct Turn<'a>(&'a std::sync::atomic::AtomicU64);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Release);
    }
}

/// How long a sender waiting for its turn sleeps between tries.
const TURN_NAP: Duration = Duration::from_micros(50);

impl Connection {
    /// Default number of chunks in flight per direction.
    pub const DEFAULT_SLOTS: usize = 32;
    /// Default chunk size, in bytes (a slot is the chunk, a flag byte and a 32-byte header,
    /// 8 KiB in all).
    pub const DEFAULT_CHUNK: usize = 8192 - 64;

    /// Both ends of an anonymous pipe with `slots` chunks of `chunk` bytes in flight per
    /// direction (a message longer than a chunk is sent in several).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for zero slots or a zero chunk size, an OS error
    /// when the shared mapping fails.
    ///
    /// # Examples
    /// ```
    /// let (a, b) = ndshm::Connection::pair(2, 8)?;
    /// std::thread::scope(|s| {
    ///     s.spawn(|| a.send_bytes(&[5u8; 100]).map_err(ndshm::Error::from));
    ///     assert_eq!(b.recv_bytes().unwrap(), [5u8; 100]); // 13 chunks, one message
    /// });
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn pair(slots: usize, chunk: usize) -> Result<(Connection, Connection)> {
        let (len, init) = layout(slots, chunk)?;
        let shared = Arc::new(attach(Region::anonymous(2 * len + TABLE, init)?, len)?);
        Ok((
            Connection::new(Arc::clone(&shared), 0),
            Connection::new(shared, 1),
        ))
    }

    /// Creates a named pipe segment and returns its first end; another process takes the
    /// second with [`open`](Connection::open). The segment is unlinked when this end drops
    /// (unless made persistent through [`CreateOptions`]).
    ///
    /// # Errors
    /// As [`pair`](Connection::pair), plus the errors of segment creation.
    ///
    /// # Examples
    /// ```
    /// use ndshm::{Connection, CreateOptions};
    /// let server = Connection::create(CreateOptions::unique(), 4, 256)?;
    /// let client = Connection::open(server.name().unwrap())?; // as another process would
    /// client.send_str("hello")?;
    /// assert_eq!(server.recv_string()?, "hello");
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn create(
        segment: impl Into<CreateOptions>,
        slots: usize,
        chunk: usize,
    ) -> Result<Connection> {
        let (len, init) = layout(slots, chunk)?;
        let region = Region::create(&segment.into(), SegmentKind::Pipe, 2 * len + TABLE, init)?;
        Ok(Connection::new(Arc::new(attach(region, len)?), 0))
    }

    /// Attaches a named pipe segment and returns its second end. Safe, as for queues.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`], [`ErrorKind::KindMismatch`], [`ErrorKind::InvalidHeader`].
    ///
    /// # Examples
    /// ```
    /// use ndshm::{Connection, ErrorKind};
    /// let err = Connection::open("no-such-pipe-here").unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::NotFound);
    /// ```
    pub fn open(name: &str) -> Result<Connection> {
        let region = Region::open(name, SegmentKind::Pipe, 0)?;
        let half = region.payload_len().saturating_sub(TABLE) / 2;
        Ok(Connection::new(Arc::new(attach(region, half)?), 1))
    }

    fn new(shared: Arc<Shared>, end: usize) -> Connection {
        let c = Connection {
            shared,
            end,
            partial: Mutex::new(Partial::default()),
            reg: Registration::none(),
            closed: AtomicBool::new(false),
            checked_ms: AtomicU64::new(0),
            born: Instant::now(),
        };
        c.register_here();
        c
    }

    /// Registers this process as a holder of this handle's end (a handle is registered
    /// by the process that made it; a forked child's copy on its first use).
    fn register_here(&self) {
        self.reg.register_here(self.shared.holders(self.end));
    }

    /// Before every use: in a process other than the one that registered this handle (a
    /// forked child's copy), registers this process and settles the registration it
    /// inherited (see [`Connection`], "Hang-up and hand-over"). One relaxed load when there is nothing to do.
    /// `Closed` when this handle was closed.
    fn ready(&self) -> std::result::Result<(), Outcome> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Outcome::Closed);
        }
        if self.reg.ready(self.shared.holders(self.end)) == (Ready::Registered { freed: true }) {
            self.hang_up_if_gone(self.end);
        }
        Ok(())
    }

    /// Gives up this handle's hold on its end: by its registering process, releases the
    /// registration (a pending hand-over if the process forked since, see the module
    /// docs); by a child that never used its copy, settles the inherited one. Then
    /// reports a hang-up to the other end if this end has no holder left.
    fn release(&self) {
        if self.reg.release(self.shared.holders(self.end)) {
            self.hang_up_if_gone(self.end);
        }
    }

    /// If every holder of `end` is gone, closes the pipe for the other end.
    fn hang_up_if_gone(&self, end: usize) -> bool {
        if self.shared.holders(end).gone() {
            self.shared.hang_up();
            return true;
        }
        false
    }

    /// Whether the other end is gone (checking its holders); hangs up if so. `rate`: at
    /// most once per [`LIVENESS_PERIOD`] for this handle (for `try_` calls).
    fn peer_gone(&self, rate: bool) -> bool {
        if self.rx().is_closed() {
            return true;
        }
        if rate {
            let now = self.born.elapsed().as_millis() as u64;
            let last = self.checked_ms.load(Ordering::Relaxed);
            if last != 0 && now.saturating_sub(last) < LIVENESS_PERIOD.as_millis() as u64 {
                return false;
            }
            self.checked_ms.store(now.max(1), Ordering::Relaxed);
        }
        self.hang_up_if_gone(1 - self.end)
    }

    /// Runs a ring operation that may wait, in slices of [`HANGUP_PERIOD`], checking
    /// between slices whether the other end is gone (then the operation ends with the
    /// ring closed). A `Wait::No` operation checks once (rate-limited) when it would block.
    fn sliced<R>(
        &self,
        wait: Wait,
        mut op: impl FnMut(Wait) -> std::result::Result<R, Fail>,
    ) -> std::result::Result<R, Fail> {
        let Wait::Until(d) = wait else {
            return match op(Wait::No) {
                Err(Fail::WouldBlock) if self.peer_gone(true) => op(Wait::No),
                r => r,
            };
        };
        // A first try without waiting: no clock read on the fast path.
        match op(Wait::No) {
            Err(Fail::WouldBlock) => {}
            r => return r,
        }
        loop {
            let slice = Instant::now() + HANGUP_PERIOD;
            match op(Wait::Until(Some(d.map_or(slice, |d| d.min(slice))))) {
                Err(Fail::Timeout | Fail::WouldBlock) => {
                    if d.is_some_and(|d| Instant::now() >= d) {
                        return Err(Fail::Timeout);
                    }
                    self.peer_gone(false);
                }
                r => return r,
            }
        }
    }

    fn tx(&self) -> Ring<'_> {
        self.shared.ring(self.end)
    }

    fn rx(&self) -> Ring<'_> {
        self.shared.ring(1 - self.end)
    }

    /// Waits for this process's turn to send (see [`Turn`]): another process (or thread)
    /// sending a message on this end finishes first; a sender that died mid-message is
    /// passed over.
    fn take_turn(&self, wait: Wait) -> std::result::Result<Turn<'_>, Outcome> {
        let tx = self.tx();
        let word = tx.sender();
        let me = lease::holder();
        let mut checked = Instant::now();
        loop {
            let other = match word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Ok(Turn(word)),
                Err(other) => other,
            };
            if tx.is_closed() {
                return Err(Outcome::Disconnected);
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
                // Another process or thread is sending a message on this end of the pipe.
                return Err(if matches!(wait, Wait::No) {
                    Outcome::Full
                } else {
                    Outcome::Timeout
                });
            }
            std::thread::sleep(TURN_NAP);
        }
    }

    fn send_wait(&self, msg: &[u8], wait: Wait) -> std::result::Result<(), Outcome> {
        self.ready()?;
        let tx = self.tx();
        let chunk = tx.slot_size() - 1;
        if msg.len() <= chunk {
            // One chunk: it cannot interleave with another, no turn needed.
            return self
                .sliced(wait, |w| tx.put_parts(&[&[FIRST], msg], w))
                .map_err(|e| outcome(e, true));
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
            self.sliced(w, |w| tx.put_parts(&[&[flag], c], w))
                .map_err(|e| outcome(e, true))?;
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

    /// The receiving thread's hold on this end's partial message: one thread at a time.
    fn receiving(&self) -> std::result::Result<MutexGuard<'_, Partial>, Outcome> {
        match self.partial.try_lock() {
            Ok(g) => Ok(g),
            // A receive that panicked (in a caller's code? none runs under the lock) left
            // a partial message that is still whole bytes: keep it.
            Err(TryLockError::Poisoned(p)) => Ok(p.into_inner()),
            Err(TryLockError::WouldBlock) => Err(Outcome::Failed(Error::new(
                ErrorKind::WouldDeadlock,
                "another thread of this process is receiving on this end of the pipe: \
                 receive on one thread at a time",
            ))),
        }
    }

    fn recv_wait(&self, sink: &mut impl Sink, wait: Wait) -> std::result::Result<usize, Outcome> {
        self.ready()?;
        let mut partial = self.receiving()?;
        let partial = &mut *partial;
        sink.clear();
        let mut active = std::mem::take(&mut partial.active);
        if active {
            sink.extend(&partial.bytes);
            partial.bytes = Vec::new();
        }
        let rx = self.rx();
        let mut hung = false;
        loop {
            // Wait in slices: in the middle of a message, to notice a sender that died;
            // otherwise, to notice that the other end's processes died. (No `Wait::No`
            // try first: a miss would run the ring's recovery on every receive that
            // waits, which costs more than this clock read.)
            let w = match wait {
                Wait::Until(d) => {
                    let period = if active {
                        LIVENESS_PERIOD
                    } else {
                        HANGUP_PERIOD
                    };
                    let slice = Instant::now() + period;
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
                        return Err(Outcome::Timeout);
                    }
                }
                Err(Fail::WouldBlock | Fail::Timeout) => {
                    let over = match wait {
                        Wait::No => true,
                        Wait::Until(d) => d.is_some_and(|d| Instant::now() >= d),
                    };
                    // A gone peer closes the ring: the next try drains, then says so.
                    if !hung && self.peer_gone(over) {
                        hung = true;
                        continue;
                    }
                    if over {
                        return Err(if matches!(wait, Wait::No) {
                            Outcome::Empty
                        } else {
                            Outcome::Timeout
                        });
                    }
                }
                Err(e) => {
                    if active {
                        rx.count_lost();
                    }
                    return Err(outcome(e, false));
                }
            }
        }
    }

    /// Receives a `Pod` value, waiting as `wait` allows.
    fn recv_pod<T: Pod>(&self, wait: Wait) -> std::result::Result<T, Outcome> {
        let mut v = T::zeroed();
        let size = std::mem::size_of::<T>();
        let mut sink = PodSink {
            bytes: bytemuck::bytes_of_mut(&mut v),
            n: 0,
        };
        let n = self.recv_wait(&mut sink, wait)?;
        if n != size {
            return Err(Outcome::Failed(Error::new(
                ErrorKind::TypeMismatch,
                format!(
                    "received a message of {n} bytes, expected a {} of {size} bytes (the \
                     message was consumed): receive with the type the other end sent, or \
                     with recv_bytes",
                    std::any::type_name::<T>()
                ),
            )));
        }
        Ok(v)
    }

    /// Sends a `Pod` value as one message, waiting for room.
    ///
    /// # Errors
    /// [`SendError::Closed`] (this handle closed), [`SendError::Disconnected`] (the
    /// other end is gone), or [`SendError::Failed`] ([`ErrorKind::Corrupt`] when the
    /// pipe's memory was overwritten); both hand `value` back.
    ///
    /// # Examples
    /// ```
    /// let (a, b) = ndshm::pipe()?;
    /// a.send([1.5f64, 2.5])?;
    /// assert_eq!(b.recv::<[f64; 2]>()?, [1.5, 2.5]);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn send<T: Pod>(&self, value: T) -> std::result::Result<(), SendError<T>> {
        self.send_wait(bytemuck::bytes_of(&value), Wait::Until(None))
            .map_err(|o| o.send(value))
    }

    /// Sends a `Pod` value if there is room now.
    ///
    /// # Errors
    /// [`TrySendError::Full`] (also while another process or thread sends a long message
    /// on this end), [`TrySendError::Closed`] (this handle closed), [`TrySendError::Disconnected`] (the
    /// other end is gone), [`TrySendError::Failed`]; each hands `value`
    /// back.
    ///
    /// # Examples
    /// ```
    /// let (a, _b) = ndshm::Connection::pair(2, 8)?;
    /// a.try_send(1u32)?;
    /// a.try_send(2u32)?;
    /// assert_eq!(a.try_send(3u32).unwrap_err().into_inner(), 3);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn try_send<T: Pod>(&self, value: T) -> std::result::Result<(), TrySendError<T>> {
        self.send_wait(bytemuck::bytes_of(&value), Wait::No)
            .map_err(|o| o.try_send(value))
    }

    /// Sends a `Pod` value, waiting at most `timeout` for room.
    ///
    /// # Errors
    /// [`SendTimeoutError::Timeout`], [`SendTimeoutError::Closed`] (this handle closed), [`SendTimeoutError::Disconnected`] (the
    /// other end is gone),
    /// [`SendTimeoutError::Failed`]; each hands `value` back.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let (a, _b) = ndshm::Connection::pair(2, 8)?;
    /// a.send(1u8)?;
    /// a.send(2u8)?;
    /// assert!(a.send_timeout(3u8, Duration::from_millis(1)).unwrap_err().is_timeout());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn send_timeout<T: Pod>(
        &self,
        value: T,
        timeout: Duration,
    ) -> std::result::Result<(), SendTimeoutError<T>> {
        self.send_wait(bytemuck::bytes_of(&value), deadline(timeout))
            .map_err(|o| o.send_timeout(value))
    }

    /// Receives a `Pod` value, waiting for one. A message whose sender died part-way is
    /// dropped and counted in [`lost`](Self::lost) (see [`Connection`], "Hang-up and hand-over").
    ///
    /// # Errors
    /// [`RecvError::Disconnected`] when the other end is gone and everything it sent was
    /// received; [`RecvError::Closed`] when this handle was closed;
    /// [`RecvError::Failed`] of [`ErrorKind::TypeMismatch`] when the message is not the
    /// size of a `T` (it is consumed), of [`ErrorKind::WouldDeadlock`] when another thread
    /// of this process is receiving on this end, of [`ErrorKind::Corrupt`] when the pipe's
    /// memory was overwritten.
    ///
    /// # Examples
    /// ```
    /// let (a, b) = ndshm::pipe()?;
    /// a.send(7u64)?;
    /// assert_eq!(b.recv::<u64>()?, 7);
    /// drop(a); // Python: a.close()
    /// assert!(b.recv::<u64>().unwrap_err().is_disconnected()); // Python: EOFError
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn recv<T: Pod>(&self) -> std::result::Result<T, RecvError> {
        self.recv_pod(Wait::Until(None)).map_err(Outcome::recv)
    }

    /// Receives a `Pod` value if a whole message is there now.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] (never a timeout), [`TryRecvError::Closed`], [`TryRecvError::Disconnected`],
    /// [`TryRecvError::Failed`] (as [`recv`](Self::recv)).
    ///
    /// # Examples
    /// ```
    /// use ndshm::TryRecvError;
    /// let (_a, b) = ndshm::pipe()?;
    /// assert_eq!(b.try_recv::<u32>(), Err(TryRecvError::Empty));
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn try_recv<T: Pod>(&self) -> std::result::Result<T, TryRecvError> {
        self.recv_pod(Wait::No).map_err(Outcome::try_recv)
    }

    /// Receives a `Pod` value, waiting at most `timeout` (plus a few milliseconds).
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`], [`RecvTimeoutError::Closed`], [`RecvTimeoutError::Disconnected`],
    /// [`RecvTimeoutError::Failed`] (as [`recv`](Self::recv)).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let (a, b) = ndshm::pipe()?;
    /// a.send(3i16)?;
    /// assert_eq!(b.recv_timeout::<i16>(Duration::from_secs(1))?, 3);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn recv_timeout<T: Pod>(
        &self,
        timeout: Duration,
    ) -> std::result::Result<T, RecvTimeoutError> {
        self.recv_pod(deadline(timeout))
            .map_err(Outcome::recv_timeout)
    }

    /// Sends a byte message (any length), waiting for room and for its turn (see the
    /// module docs).
    ///
    /// # Errors
    /// [`SendError::Closed`] (this handle closed), [`SendError::Disconnected`] (the
    /// other end is gone), [`SendError::Failed`] ([`ErrorKind::Corrupt`]); each hands
    /// `msg` back.
    ///
    /// # Examples
    /// ```
    /// let (a, b) = ndshm::pipe()?;
    /// a.send_bytes(b"hello")?;
    /// assert_eq!(b.recv_bytes()?, b"hello");
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn send_bytes<'a>(&self, msg: &'a [u8]) -> std::result::Result<(), SendError<&'a [u8]>> {
        self.send_wait(msg, Wait::Until(None))
            .map_err(|o| o.send(msg))
    }

    /// Sends a byte message if there is room for its first chunk now (the rest waits for
    /// room).
    ///
    /// # Errors
    /// [`TrySendError::Full`] (also while another process or thread is sending a message
    /// on this end), [`TrySendError::Closed`] (this handle closed), [`TrySendError::Disconnected`] (the
    /// other end is gone), [`TrySendError::Failed`]; each hands `msg`
    /// back.
    ///
    /// # Examples
    /// ```
    /// let (a, b) = ndshm::pipe()?;
    /// a.try_send_bytes(b"now")?;
    /// assert_eq!(b.recv_bytes()?, b"now");
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn try_send_bytes<'a>(
        &self,
        msg: &'a [u8],
    ) -> std::result::Result<(), TrySendError<&'a [u8]>> {
        self.send_wait(msg, Wait::No).map_err(|o| o.try_send(msg))
    }

    /// Sends a byte message, waiting at most `timeout` for room for its first chunk (and
    /// for its turn); once the first chunk is in, the rest waits for room.
    ///
    /// # Errors
    /// [`SendTimeoutError::Timeout`], [`SendTimeoutError::Closed`] (this handle closed), [`SendTimeoutError::Disconnected`] (the
    /// other end is gone),
    /// [`SendTimeoutError::Failed`]; each hands `msg` back.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let (a, _b) = ndshm::Connection::pair(2, 8)?;
    /// a.send_bytes(b"1")?;
    /// a.send_bytes(b"2")?;
    /// let e = a.send_bytes_timeout(b"3", Duration::from_millis(1)).unwrap_err();
    /// assert_eq!(e.into_inner(), b"3");
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn send_bytes_timeout<'a>(
        &self,
        msg: &'a [u8],
        timeout: Duration,
    ) -> std::result::Result<(), SendTimeoutError<&'a [u8]>> {
        self.send_wait(msg, deadline(timeout))
            .map_err(|o| o.send_timeout(msg))
    }

    /// Receives a byte message, waiting for one. A message whose sender died part-way is
    /// dropped and counted in [`lost`](Self::lost) (see [`Connection`], "Hang-up and hand-over").
    ///
    /// # Errors
    /// [`RecvError::Disconnected`] when the other end is gone and everything it sent was
    /// received; [`RecvError::Closed`] when this handle was closed;
    /// [`RecvError::Failed`] of [`ErrorKind::WouldDeadlock`] when another thread of this
    /// process is receiving on this end, of [`ErrorKind::Corrupt`] when the pipe's shared
    /// memory was overwritten.
    ///
    /// # Examples
    /// ```
    /// let (a, b) = ndshm::pipe()?;
    /// a.send_bytes(&[])?; // empty messages are messages too
    /// assert_eq!(b.recv_bytes()?, b"");
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn recv_bytes(&self) -> std::result::Result<Vec<u8>, RecvError> {
        let mut buf = Vec::new();
        self.recv_wait(&mut buf, Wait::Until(None))
            .map_err(Outcome::recv)?;
        Ok(buf)
    }

    /// Receives a byte message into `buf` (cleared first, allocation reused); returns its
    /// length.
    ///
    /// # Errors
    /// As [`recv_bytes`](Self::recv_bytes).
    ///
    /// # Examples
    /// ```
    /// let (a, b) = ndshm::pipe()?;
    /// let mut buf = Vec::new();
    /// a.send_bytes(b"abc")?;
    /// assert_eq!(b.recv_bytes_into(&mut buf)?, 3);
    /// assert_eq!(buf, b"abc");
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn recv_bytes_into(&self, buf: &mut Vec<u8>) -> std::result::Result<usize, RecvError> {
        self.recv_wait(buf, Wait::Until(None))
            .map_err(Outcome::recv)
    }

    /// Receives a byte message if one is there now, whole or completing the part an
    /// earlier timed receive got.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] when none is (what arrived of a long message is kept for
    /// the next receive), and as [`recv_bytes`](Self::recv_bytes).
    ///
    /// # Examples
    /// ```
    /// let (a, b) = ndshm::pipe()?;
    /// assert!(b.try_recv_bytes().unwrap_err().is_empty());
    /// a.send_bytes(b"x")?;
    /// assert_eq!(b.try_recv_bytes()?, b"x");
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn try_recv_bytes(&self) -> std::result::Result<Vec<u8>, TryRecvError> {
        let mut buf = Vec::new();
        self.recv_wait(&mut buf, Wait::No)
            .map_err(Outcome::try_recv)?;
        Ok(buf)
    }

    /// Receives a byte message, waiting at most `timeout` (plus a few milliseconds).
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] (what arrived of a long message is kept for the next
    /// receive), and as [`recv_bytes`](Self::recv_bytes).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let (_a, b) = ndshm::pipe()?;
    /// let e = b.recv_bytes_timeout(Duration::from_millis(1)).unwrap_err();
    /// assert!(e.is_timeout());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn recv_bytes_timeout(
        &self,
        timeout: Duration,
    ) -> std::result::Result<Vec<u8>, RecvTimeoutError> {
        let mut buf = Vec::new();
        self.recv_wait(&mut buf, deadline(timeout))
            .map_err(Outcome::recv_timeout)?;
        Ok(buf)
    }

    /// Sends a string.
    ///
    /// # Errors
    /// As [`send_bytes`](Self::send_bytes), handing `s` back.
    ///
    /// # Examples
    /// ```
    /// let (a, b) = ndshm::pipe()?;
    /// a.send_str("hi")?;
    /// assert_eq!(b.recv_string()?, "hi");
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn send_str<'a>(&self, s: &'a str) -> std::result::Result<(), SendError<&'a str>> {
        self.send_wait(s.as_bytes(), Wait::Until(None))
            .map_err(|o| o.send(s))
    }

    /// Receives a string.
    ///
    /// # Errors
    /// As [`recv_bytes`](Self::recv_bytes), and [`RecvError::Failed`] of
    /// [`ErrorKind::InvalidArgument`] when the message is not UTF-8 (it is consumed).
    ///
    /// # Examples
    /// ```
    /// let (a, b) = ndshm::pipe()?;
    /// a.send_bytes(&[0xff])?;
    /// assert_eq!(b.recv_string().unwrap_err().kind(), ndshm::ErrorKind::InvalidArgument);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn recv_string(&self) -> std::result::Result<String, RecvError> {
        String::from_utf8(self.recv_bytes()?).map_err(|e| {
            RecvError::Failed(Error::new(
                ErrorKind::InvalidArgument,
                format!("received a message that is not UTF-8 ({e}); use recv_bytes"),
            ))
        })
    }

    /// Sends a slice of `Pod` values as one message.
    ///
    /// # Errors
    /// As [`send_bytes`](Self::send_bytes), handing `values` back.
    ///
    /// # Examples
    /// ```
    /// let (a, b) = ndshm::pipe()?;
    /// a.send_slice(&[1i32, 2, 3])?;
    /// assert_eq!(b.recv_vec::<i32>()?, [1, 2, 3]);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn send_slice<'a, T: Pod>(
        &self,
        values: &'a [T],
    ) -> std::result::Result<(), SendError<&'a [T]>> {
        self.send_wait(bytemuck::cast_slice(values), Wait::Until(None))
            .map_err(|o| o.send(values))
    }

    /// Receives a message sent by [`send_slice`](Self::send_slice).
    ///
    /// # Errors
    /// As [`recv_bytes`](Self::recv_bytes), and [`RecvError::Failed`] of
    /// [`ErrorKind::TypeMismatch`] when the message length is not a multiple of `T`'s size.
    ///
    /// # Examples
    /// ```
    /// let (a, b) = ndshm::pipe()?;
    /// a.send_bytes(&[1, 2, 3])?;
    /// assert_eq!(b.recv_vec::<u16>().unwrap_err().kind(), ndshm::ErrorKind::TypeMismatch);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn recv_vec<T: Pod>(&self) -> std::result::Result<Vec<T>, RecvError> {
        let bytes = self.recv_bytes()?;
        let size = std::mem::size_of::<T>();
        if size == 0 || bytes.len() % size != 0 {
            return Err(RecvError::Failed(Error::new(
                ErrorKind::TypeMismatch,
                format!(
                    "received {} bytes, not a whole number of {} ({size} bytes): receive \
                     with the element type the other end sent",
                    bytes.len(),
                    std::any::type_name::<T>()
                ),
            )));
        }
        let mut out = vec![T::zeroed(); bytes.len() / size];
        bytemuck::cast_slice_mut::<T, u8>(&mut out).copy_from_slice(&bytes);
        Ok(out)
    }

    /// Whether a receive would return now without waiting: a message is waiting, or the
    /// other end is gone (the receive then reports [`RecvError::Disconnected`]): Python's
    /// `poll()` without a timeout.
    ///
    /// # Errors
    /// [`ErrorKind::Closed`] when this handle was closed.
    ///
    /// # Examples
    /// ```
    /// let (a, b) = ndshm::pipe()?;
    /// assert!(!b.poll()?);
    /// a.send(1u8)?;
    /// assert!(b.poll()?);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn poll(&self) -> Result<bool> {
        self.ready().map_err(|o| Error::from(o.recv()))?;
        let rx = self.rx();
        Ok(!rx.is_empty_now() || rx.is_closed() || self.peer_gone(true))
    }

    /// Waits at most `timeout` for a message (or the other end's hang-up) and says whether
    /// a receive would now return without waiting: Python's `poll(timeout)`. Named like
    /// every other bounded wait in ndshm (`recv_timeout`, `get_timeout`, `lock_timeout`),
    /// with a plain `Duration`; Python's `poll(None)` (wait for ever) is
    /// `poll_timeout(Duration::MAX)`. Consumes nothing; sleeps, never spins.
    ///
    /// # Errors
    /// [`ErrorKind::Closed`] when this handle was closed.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> ndshm::Result<()> {
    /// use std::time::Duration;
    /// // Python: if not conn.poll(0.01): ...
    /// let (a, b) = ndshm::pipe()?;
    /// assert!(!b.poll_timeout(Duration::from_millis(10))?);
    /// a.send_str("ready")?;
    /// assert!(b.poll_timeout(Duration::from_secs(5))?);
    /// assert_eq!(b.recv_string()?, "ready");
    /// # Ok(())
    /// # }
    /// ```
    pub fn poll_timeout(&self, timeout: Duration) -> Result<bool> {
        self.ready().map_err(|o| Error::from(o.recv()))?;
        let end = Instant::now().checked_add(timeout);
        let rx = self.rx();
        loop {
            let slice = Instant::now() + HANGUP_PERIOD;
            let until = end.map_or(slice, |e| e.min(slice));
            if rx.wait_readable(until) || self.peer_gone(false) {
                return Ok(true);
            }
            if end.is_some_and(|e| Instant::now() >= e) {
                return Ok(false);
            }
        }
    }

    /// Messages this end will never receive whole: a message whose sender died after
    /// sending part of it is dropped by the receiver (a receive that was collecting it goes
    /// on waiting for the next message, within its timeout) and counted here, as is a
    /// chunk whose sender died while writing it. Never reset.
    pub fn lost(&self) -> u64 {
        self.rx().lost()
    }

    /// Closes this handle (Python's `Connection.close()`): using it afterwards is an error
    /// of [`ErrorKind::Closed`]; other handles of the same end, in this process or in
    /// others (a forked child's copy), keep working. When it was the last handle of its
    /// end, the other end sees the hang-up: its receive returns what was already sent,
    /// then [`RecvError::Disconnected`], and its send fails with
    /// [`SendError::Disconnected`]. Dropping a handle does the same; closing twice is
    /// harmless.
    ///
    /// # Examples
    /// ```
    /// let (a, b) = ndshm::pipe()?;
    /// a.send(1u8)?;
    /// a.close();
    /// assert!(a.is_closed());
    /// assert!(a.send(2u8).unwrap_err().is_closed()); // this handle: Closed
    /// assert_eq!(b.recv::<u8>()?, 1); // sent before the close: still delivered
    /// assert!(b.recv::<u8>().unwrap_err().is_disconnected()); // Python: EOFError
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.release();
        }
    }

    /// Ends the pipe for every handle of both ends, in every process, at once (the
    /// counterpart of Python 3.13's `Queue.shutdown()`; Python's pipes have none): each
    /// receive returns what was already sent, then [`RecvError::Disconnected`]; each send
    /// fails with [`SendError::Disconnected`]. Use it where a drop would be a pending
    /// hand-over (the process forked children that do not use the end, see the module
    /// docs) and the other end must learn now that nothing more will come.
    ///
    /// # Examples
    /// ```
    /// let (a, b) = ndshm::pipe()?;
    /// a.send(1u8)?;
    /// a.shutdown();
    /// assert_eq!(b.recv::<u8>()?, 1);
    /// assert!(b.recv::<u8>().unwrap_err().is_disconnected());
    /// assert!(a.send(2u8).unwrap_err().is_disconnected());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn shutdown(&self) {
        self.shared.hang_up();
    }

    /// Whether [`close`](Self::close) was called on this handle (Python's
    /// `Connection.closed`). The other end's hang-up does not close this handle: a
    /// receive reports it as [`RecvError::Disconnected`].
    ///
    /// # Examples
    /// ```
    /// let (a, _b) = ndshm::pipe()?;
    /// assert!(!a.is_closed());
    /// a.close();
    /// assert!(a.is_closed());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The segment name, or `None` for an anonymous pipe.
    pub fn name(&self) -> Option<&str> {
        self.shared.region.name()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.release();
        }
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

/// Both ends of an anonymous one-way pipe with default sizes: Python's
/// `multiprocessing.Pipe(duplex=False)`, returned in the same order, `(reader, writer)`
/// (as `std::io::pipe()`). The reader has no send methods and the writer no receive
/// methods: using an end the wrong way does not compile. Hang-up, hand-over to forked
/// children and `close` work as for [`Connection`] (see [`Connection`], "Hang-up and hand-over").
/// [`Connection::pair_one_way`] chooses the sizes.
///
/// # Errors
/// An OS error when the shared mapping fails.
///
/// # Examples
/// ```
/// // Python: r, w = Pipe(duplex=False); w.send_bytes(b"job"); r.recv_bytes()
/// let (r, w) = ndshm::pipe_one_way()?;
/// w.send_bytes(b"job")?;
/// assert_eq!(r.recv_bytes()?, b"job");
/// drop(w); // Python: w.close()
/// assert!(r.recv_bytes().unwrap_err().is_disconnected()); // Python: EOFError
/// # Ok::<(), ndshm::Error>(())
/// ```
///
/// The reader cannot send:
/// ```compile_fail
/// let (r, _w) = ndshm::pipe_one_way()?;
/// r.send(1u8)?;
/// # Ok::<(), ndshm::Error>(())
/// ```
pub fn pipe_one_way() -> Result<(PipeReader, PipeWriter)> {
    Connection::pair_one_way(Connection::DEFAULT_SLOTS, Connection::DEFAULT_CHUNK)
}

impl Connection {
    /// Both ends of an anonymous one-way pipe, `(reader, writer)`, with `slots` chunks of
    /// `chunk` bytes in flight (see [`pipe_one_way`]).
    ///
    /// # Errors
    /// As [`pair`](Connection::pair).
    ///
    /// # Examples
    /// ```
    /// let (r, w) = ndshm::Connection::pair_one_way(4, 64)?;
    /// w.send(5u32)?;
    /// assert_eq!(r.recv::<u32>()?, 5);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn pair_one_way(slots: usize, chunk: usize) -> Result<(PipeReader, PipeWriter)> {
        let (r, w) = Connection::pair(slots, chunk)?;
        Ok((PipeReader(r), PipeWriter(w)))
    }
}

/// The read end of a one-way pipe ([`pipe_one_way`]): Python's first `Connection` of
/// `Pipe(duplex=False)`, with only the receiving half of [`Connection`]'s methods (each
/// documented there).
///
/// # Examples
/// ```
/// let (r, w) = ndshm::pipe_one_way()?;
/// w.send_str("hi")?;
/// assert!(r.poll()?);
/// assert_eq!(r.recv_string()?, "hi");
/// # Ok::<(), ndshm::Error>(())
/// ```
pub struct PipeReader(Connection);

/// The write end of a one-way pipe ([`pipe_one_way`]): Python's second `Connection` of
/// `Pipe(duplex=False)`, with only the sending half of [`Connection`]'s methods (each
/// documented there).
///
/// # Examples
/// ```
/// let (r, w) = ndshm::pipe_one_way()?;
/// w.send_slice(&[1u16, 2])?;
/// assert_eq!(r.recv_vec::<u16>()?, [1, 2]);
/// # Ok::<(), ndshm::Error>(())
/// ```
pub struct PipeWriter(Connection);

macro_rules! delegate {
    ($($(#[$m:meta])* fn $name:ident $(<$g:ident: $b:ident>)? (&self $(, $a:ident: $t:ty)*) -> $r:ty;)*) => {
        $(
            $(#[$m])*
            #[doc = concat!("As [`Connection::", stringify!($name), "`].")]
            pub fn $name $(<$g: $b>)? (&self $(, $a: $t)*) -> $r {
                self.0.$name($($a),*)
            }
        )*
    };
}

impl PipeReader {
    delegate! {
        fn recv<T: Pod>(&self) -> std::result::Result<T, RecvError>;
        fn try_recv<T: Pod>(&self) -> std::result::Result<T, TryRecvError>;
        fn recv_timeout<T: Pod>(&self, timeout: Duration) -> std::result::Result<T, RecvTimeoutError>;
        fn recv_bytes(&self) -> std::result::Result<Vec<u8>, RecvError>;
        fn recv_bytes_into(&self, buf: &mut Vec<u8>) -> std::result::Result<usize, RecvError>;
        fn try_recv_bytes(&self) -> std::result::Result<Vec<u8>, TryRecvError>;
        fn recv_bytes_timeout(&self, timeout: Duration) -> std::result::Result<Vec<u8>, RecvTimeoutError>;
        fn recv_string(&self) -> std::result::Result<String, RecvError>;
        fn recv_vec<T: Pod>(&self) -> std::result::Result<Vec<T>, RecvError>;
        fn poll(&self) -> Result<bool>;
        fn poll_timeout(&self, timeout: Duration) -> Result<bool>;
        fn lost(&self) -> u64;
        fn close(&self) -> ();
        fn shutdown(&self) -> ();
        fn is_closed(&self) -> bool;
    }
}

impl PipeWriter {
    delegate! {
        fn send<T: Pod>(&self, value: T) -> std::result::Result<(), SendError<T>>;
        fn try_send<T: Pod>(&self, value: T) -> std::result::Result<(), TrySendError<T>>;
        fn send_timeout<T: Pod>(&self, value: T, timeout: Duration) -> std::result::Result<(), SendTimeoutError<T>>;
        fn close(&self) -> ();
        fn shutdown(&self) -> ();
        fn is_closed(&self) -> bool;
    }

    /// As [`Connection::send_bytes`].
    pub fn send_bytes<'a>(&self, msg: &'a [u8]) -> std::result::Result<(), SendError<&'a [u8]>> {
        self.0.send_bytes(msg)
    }
    /// As [`Connection::try_send_bytes`].
    pub fn try_send_bytes<'a>(
        &self,
        msg: &'a [u8],
    ) -> std::result::Result<(), TrySendError<&'a [u8]>> {
        self.0.try_send_bytes(msg)
    }
    /// As [`Connection::send_bytes_timeout`].
    pub fn send_bytes_timeout<'a>(
        &self,
        msg: &'a [u8],
        timeout: Duration,
    ) -> std::result::Result<(), SendTimeoutError<&'a [u8]>> {
        self.0.send_bytes_timeout(msg, timeout)
    }
    /// As [`Connection::send_str`].
    pub fn send_str<'a>(&self, s: &'a str) -> std::result::Result<(), SendError<&'a str>> {
        self.0.send_str(s)
    }
    /// As [`Connection::send_slice`].
    pub fn send_slice<'a, T: Pod>(
        &self,
        values: &'a [T],
    ) -> std::result::Result<(), SendError<&'a [T]>> {
        self.0.send_slice(values)
    }
}

impl fmt::Debug for PipeReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PipeReader").field(&self.0).finish()
    }
}

impl fmt::Debug for PipeWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PipeWriter").field(&self.0).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_of_every_size_keep_their_bounds() {
        let (a, b) = Connection::pair(4, 16).unwrap();
        for len in [0usize, 1, 15, 16, 17, 63, 64, 65, 200] {
            let msg: Vec<u8> = (0..len).map(|i| i as u8).collect();
            // Long messages need the reader running: use a thread.
            std::thread::scope(|s| {
                s.spawn(|| a.send_bytes(&msg).unwrap());
                assert_eq!(b.recv_bytes().unwrap(), msg);
            });
        }
        a.send(7u64).unwrap();
        assert_eq!(b.recv::<u64>().unwrap(), 7);
        a.send_slice(&[1i32, 2, 3]).unwrap();
        assert_eq!(b.recv_vec::<i32>().unwrap(), vec![1, 2, 3]);
        a.send(1u8).unwrap();
        assert_eq!(b.recv::<u64>().unwrap_err().kind(), ErrorKind::TypeMismatch);
        assert_eq!(
            b.recv_bytes_timeout(Duration::from_millis(5)).unwrap_err(),
            RecvTimeoutError::Timeout
        );
        b.send_str("hi").unwrap();
        assert_eq!(a.recv_string().unwrap(), "hi");
        a.close();
        assert_eq!(a.send_str("x").unwrap_err().kind(), ErrorKind::Closed);
        assert_eq!(b.recv_bytes().unwrap_err(), RecvError::Disconnected);
        assert_eq!(b.send_str("y").unwrap_err().kind(), ErrorKind::Disconnected);
    }
}
