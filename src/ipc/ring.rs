//! The slot ring shared by [`Queue`](crate::Queue), [`ByteQueue`](crate::ByteQueue)
//! and the pipe ([`Connection`](super::pipe::Connection)): its layout in shared memory, the
//! claim/publish protocol, recovery from dead peers and waiting. The typed queues wrap it in
//! [`error`](super::error)'s types; this module speaks only [`Fail`].
//!
//! All access goes through a [`SharedMem`] window; the only `unsafe` in the ipc folder is
//! here: the ring's words, whose offsets [`Ring::over`] validates once per operation
//! against the window instead of once per word (see `Ring::word`), and the two zero-copy
//! slot slices handed to put/get callbacks, whose exclusivity the ring protocol guarantees
//! (see their `SAFETY` comments).
//!
//! # Design
//! A ring of `capacity` slots (rounded up to a power of two, at least 2), each with a sequence number,
//! as in Dmitry Vyukov's bounded MPMC queue: a producer may fill the slot of position
//! `pos` when its sequence is `pos`, and publishes it by storing `pos + 1`; a consumer may
//! empty it when its sequence is `pos + 1` and frees it by storing `pos + capacity`. `head`
//! and `tail` count the positions claimed by producers and consumers. Each item is copied
//! once into its slot and once out (or read in place: [`ByteQueue::get_with`](crate::ByteQueue::get_with)).
//!
//! One contended read-modify-write per side claims a slot: a producer that read `head ==
//! pos` and found the slot free for lap `pos` claims the slot's `writer` word by CAS
//! (recording its lease, see below), checks that `head` is still `pos`, and commits with a
//! plain store of `head = pos + 1` (only the holder of lap `pos` moves `head` from `pos`,
//! so no second CAS is needed); consumers do the same with `reader` and `tail`. The slot is
//! then published or freed with a `Release` store of its header word (the sequence number
//! and the item's length together), and the claim word is let go: one RMW per side, as in
//! crossbeam's `ArrayQueue`. The sleepers' flag is read without a full fence after that
//! store, so a sleeper's first nap is short (100 µs): an item published at the very moment
//! its consumer falls asleep is seen within that nap instead of at once (see `notify`).
//!
//! # Layout and cache lines (format 5)
//! `[header: 256 bytes][writer words: cap × 8][reader words: cap × 8][slots: cap × stride]`,
//! each part whole cache lines. A slot is an 8-byte header word (`len << 32 | seq`, the
//! low 32 bits of the sequence: a ring has at most 2³⁰ slots, and every claim is checked
//! against the 64-bit `head`/`tail` before it commits) followed by the item; strides are
//! 16, 32 or 64 bytes for small items, so that four 8-byte items share a cache line and
//! one transfer between the producer's and the consumer's caches carries four of them.
//! The claim words live in arrays of their own, each touched by one side only: a claim
//! does not pull the line the other side is reading, and the slot's line is touched once
//! before the claim and once to publish or free. A blocking put that finds the ring full
//! waits until several lines of slots are free (see `Ring::wait_for_room`), so that
//! producer and consumer work on different lines instead of trading one line per item.
//! Together: 1 producer → 1 consumer of 8-byte items across processes went from 27 to
//! 51–56 M items/s on the 2-core machine (49–54 on 16 cores), above crossbeam's `ArrayQueue` between two
//! threads (`examples/primitives_table.rs`; docs/figures.md).
//!
//! Blocking calls spin about 20 µs, then sleep on a futex that the other side bumps only
//! when someone sleeps: an idle endpoint burns no CPU after its spin window (it naps
//! 100 µs, 0.8 ms, 6.4 ms, then every 20 ms while nothing happens).
//!
//! # Semantics
//! - An item whose `put` returned `Ok` is delivered at most once, and is lost only if the
//!   consumer that took it dies inside `get` (then [`lost`](crate::Queue::lost) counts it): never
//!   duplicated. An item whose producer died before `put` returned may be lost (counted
//!   too); a `put` whose callback panicked publishes its slot as lost.
//! - Blocking calls spin about 20 µs (a put that finds the ring full up to 20 µs more,
//!   waiting for room: see `Ring::wait_for_room`), then sleep; they never burn a core while they wait,
//!   whoever they wait for.
//! - `try_` calls return in bounded time (about a millisecond at worst, microseconds
//!   normally) and `_timeout` calls within their timeout plus a few milliseconds, even
//!   when a peer died, is stalled, or the shared memory was overwritten.
//! - When a live but stalled peer holds the slot an operation needs (a consumer inside a
//!   slow [`get_with`](crate::ByteQueue::get_with) callback, a process stopped mid-`put`), `try_get`
//!   reports empty and `try_put` full; blocking calls sleep until it moves on.
//! - No access is ever out of bounds: indices and lengths read from shared memory are
//!   validated, every loop is bounded. Run-time state no queue can have (random bytes over
//!   the segment) gives a `Failed` error of [`ErrorKind::Corrupt`] (see [`error`](super::error)), never a
//!   hang or a panic.
//!
//! # A peer that dies mid-operation
//! A producer claims a slot by writing its *lease* into the slot's claim word (`writer`)
//! before it commits `head`, and lets go of it after it published; a consumer likewise
//! (`reader`, then `tail`, then the slot freed): a word naming the process that the kernel vouches for
//! (see the crate docs, "Crashes and signals"), not a pid, which another pid namespace
//! would not see and which can be reused. Any call that finds a slot in its way held (a
//! `try_` call at once, a waiting call at least every
//! [`Lock::LIVENESS_PERIOD`](crate::Lock::LIVENESS_PERIOD)) checks the lease recorded there.
//! Only a holder that is provably dead loses its slot: if a producer died after claiming a
//! slot but before publishing it, that one slot is marked *lost* and skipped by consumers:
//! the item that producer was putting is not delivered (it was never completely put), every
//! other item is, and [`lost`](crate::Queue::lost) counts such slots. A holder that died
//! after its claim but before its commit had not taken the position, and one that died
//! after it published (freed) but before it let go of the word had finished: the next
//! producer (consumer) takes the word over and nothing is lost; which of the three a dead
//! holder's word stands for, the slot's sequence and `head` (`tail`) tell. A consumer that died while
//! taking an item likewise loses that item (it had taken it), and producers reclaim the
//! slot. A holder that is alive (in whatever pid namespace) or whose liveness cannot be told
//! keeps its slot: the others wait (blocking calls sleep, `try_` calls report empty or
//! full). Nothing else is lost, duplicated or blocked.

use std::fmt;
use std::mem::size_of;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::ipc::error::Outcome;
use crate::segment::shared_mem::{AtomicWord, SharedMem};
use crate::sync::lock::{LIVENESS_PERIOD, SPIN};
use crate::sys::futex;
use crate::sys::lease::{self, Liveness};

/// Ring format 5: the claim words moved out of the slots into two arrays, and a slot's
/// header is one word (length and 32-bit sequence), so small slots share cache lines (see
/// "Layout and cache lines"). Format 4: publishers no longer fence before they read the
/// sleepers' flag, and sleepers nap 100 µs first to make up for it (see [`Ring::notify`]).
/// Format 3 made the sleepers' words flags taken down by one waker (format 2 counted
/// sleepers; format 1 recorded 32-bit pids as slot holders, not leases). A segment of
/// another format is refused by `attach` ("bad magic").
const MAGIC: u64 = u64::from_le_bytes(*b"NDSHMQ05");
pub(crate) const HEADER: usize = 256;
const SLOT_HEADER: usize = 8;
const LOST: u32 = u32::MAX;
/// Values of the `closed` word: open, shut down (gets drain what is left), shut down
/// immediately (gets report closed at once; what was left is discarded).
const OPEN: u32 = 0;
const SHUT: u32 = 1;
const SHUT_NOW: u32 = 2;

// Header words (byte offsets).
const H_MAGIC: usize = 0;
const H_CAP: usize = 8;
const H_SLOT_SIZE: usize = 16;
const H_STRIDE: usize = 24;
const H_TAG: usize = 32;
/// Pipes only: the lease of the process sending a message on this ring, 0 when none. In
/// the header's first cache line, which holds constants otherwise: only senders write it.
const H_SENDER: usize = 40;
/// The capacity asked for (`1..=cap`): at most that many items are in the queue at once,
/// although the ring has `cap` slots (a power of two).
const H_BOUND: usize = 48;
const H_HEAD: usize = 64;
const H_TAIL: usize = 128;
const H_CLOSED: usize = 192;
const H_PUT_EVENT: usize = 196;
const H_GET_EVENT: usize = 200;
const H_GET_WAITERS: usize = 204;
const H_PUT_WAITERS: usize = 208;
const H_LOST: usize = 216;
/// Queues only: a hint that every producer may be gone (see
/// [`RingSegment`](super::queue::RingSegment)), raised by the producer whose release
/// found the producer table empty, taken down when a producer registers. In the cache
/// line of `closed`, so the empty path of a get reads it for free. A hint, not the truth:
/// a get that sees it checks the table before it reports the queue disconnected.
const H_HANGUP: usize = 224;

/// A slot's header: one word, the length of its item in the high half and the low 32
/// bits of its sequence number in the low half, stored together so that a consumer's one
/// `Acquire` load sees both. 32 bits of sequence suffice: a ring has at most
/// [`MAX_SLOTS`] slots, so a sane slot's sequence is within a lap of `head` or `tail`,
/// and every claim is checked against the 64-bit `head`/`tail` before it commits.
#[derive(Clone, Copy)]
struct Slot<'a> {
    word: &'a AtomicU64,
}

/// The most slots a ring has (sequence distances fit an `i32` with room to spare).
const MAX_SLOTS: usize = 1 << 30;

impl<'a> Slot<'a> {
    /// The sequence number (its low 32 bits).
    #[inline]
    fn seq(&self) -> u32 {
        self.word.load(Ordering::Acquire) as u32
    }

    /// The sequence number and the item's length.
    #[inline]
    fn seq_len(&self) -> (u32, u32) {
        let w = self.word.load(Ordering::Acquire);
        (w as u32, (w >> 32) as u32)
    }

    /// Publishes the item of position `pos` (its `len` bytes, or [`LOST`]).
    #[inline]
    fn publish(&self, pos: u64, len: u32) {
        let seq = pos.wrapping_add(1) as u32;
        self.word
            .store(u64::from(len) << 32 | u64::from(seq), Ordering::Release);
    }

    /// Frees the slot for position `next` (a lap after the item taken).
    #[inline]
    fn free(&self, next: u64) {
        self.word.store(u64::from(next as u32), Ordering::Release);
    }
}

/// How far the sequence number `seq` is from the one expected for position `want` (in
/// laps of the 32-bit sequence space: at most [`MAX_SLOTS`] either way in a sane ring).
#[inline]
fn dist(seq: u32, want: u64) -> i64 {
    i64::from(seq.wrapping_sub(want as u32) as i32)
}

/// Why a non-blocking or timed operation did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fail {
    /// Full (put) or empty (get).
    WouldBlock,
    Timeout,
    Closed,
    /// Queues only: the ring is empty and the hang-up hint is raised (see [`H_HANGUP`]);
    /// the queue checks its producers before it says so.
    Disconnected,
    /// The shared state holds values no sane ring has (overwritten memory).
    Corrupt,
}

/// How long an operation may wait.
#[derive(Clone, Copy)]
pub(crate) enum Wait {
    No,
    Until(Option<Instant>),
}

/// The shape of a ring, validated against the memory it lives in by [`Ring::attach`]:
/// kept beside the [`Region`](crate::segment::region::Region) that holds the ring, and
/// combined with its payload into a [`Ring`] for each operation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RingLayout {
    cap: u64,
    bound: u64,
    mask: u64,
    slot_size: usize,
    stride: usize,
    /// Byte offset of slot 0 (after the header and the two claim arrays).
    slots: usize,
}

impl RingLayout {
    /// Bytes per slot.
    #[inline]
    pub(crate) fn slot_size(&self) -> usize {
        self.slot_size
    }

    /// Bytes the ring takes (its header, claim arrays and slots).
    pub(crate) fn len(&self) -> usize {
        self.slots + self.cap as usize * self.stride
    }
}

/// The untyped queue that [`Queue`](crate::Queue), [`ByteQueue`](crate::ByteQueue)
/// and pipes are built on: a ring inside some shared memory, seen through a bounds-checked
/// [`SharedMem`] window.
///
/// Small on purpose (the window and the layout, eight words): the queues make one per
/// operation. Header words are reached through inlined accessors at constant offsets
/// (each a compare against the window's length and an alignment test, both predicted);
/// a slot's words are taken in one go through a 16-byte window.
#[derive(Clone, Copy)]
pub(crate) struct Ring<'m> {
    mem: SharedMem<'m>,
    cap: u64,
    bound: u64,
    mask: u64,
    slot_size: usize,
    stride: usize,
    slots: usize,
}

/// Bytes a ring of `capacity` slots of `slot_size` bytes needs, and its stride.
pub(crate) fn ring_layout(capacity: usize, slot_size: usize) -> Result<(u64, usize, usize)> {
    if capacity == 0 {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            "a queue needs a capacity of at least 1",
        ));
    }
    // At least 2 slots: with one, "full at position p" and "empty at position p + 1" would
    // be the same sequence number.
    let cap = capacity
        .max(2)
        .checked_next_power_of_two()
        .ok_or_else(too_big)?;
    if slot_size > u32::MAX as usize - 1 {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("slot size {slot_size} exceeds the limit of 4 GiB"),
        ));
    }
    if cap > MAX_SLOTS {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("a queue holds at most {MAX_SLOTS} items; {capacity} were asked for"),
        ));
    }
    // Slots of 16, 32 or 64 bytes share cache lines (four items of 8 bytes to a line: one
    // transfer between the producer's and the consumer's caches carries four items, as in
    // crossbeam's `ArrayQueue`); larger ones take whole lines.
    let need = SLOT_HEADER + slot_size;
    let stride = if need <= 64 {
        need.next_power_of_two().max(16)
    } else {
        need.checked_next_multiple_of(64).ok_or_else(too_big)?
    };
    let len = stride
        .checked_mul(cap)
        .and_then(|n| n.checked_add(slots_at(cap)?))
        .ok_or_else(too_big)?;
    Ok((cap as u64, stride, len))
}

/// Byte offset of slot 0 in a ring of `cap` slots (a power of two): the header, then the
/// producers' and the consumers' claim arrays. `None` when it overflows.
fn slots_at(cap: usize) -> Option<usize> {
    let claims = cap.checked_mul(8)?.checked_next_multiple_of(64)?;
    claims.checked_mul(2)?.checked_add(HEADER)
}

fn too_big() -> Error {
    Error::new(
        ErrorKind::SizeOverflow,
        "queue capacity times slot size overflows the address space",
    )
}

impl<'m> Ring<'m> {
    /// Writes a fresh ring header into `mem` (zeroed, `ring_layout(..).2` bytes).
    pub(crate) fn init(mem: &mut [u8], capacity: usize, slot_size: usize, tag: u64) -> Result<()> {
        let (cap, stride, len) = ring_layout(capacity, slot_size)?;
        let put = |mem: &mut [u8], off: usize, v: u64| {
            mem[off..off + 8].copy_from_slice(&v.to_le_bytes())
        };
        put(mem, H_MAGIC, MAGIC);
        put(mem, H_CAP, cap);
        put(mem, H_SLOT_SIZE, slot_size as u64);
        put(mem, H_STRIDE, stride as u64);
        put(mem, H_TAG, tag);
        put(mem, H_BOUND, capacity as u64);
        debug_assert!(mem.len() >= len);
        let slots = slots_at(cap as usize).expect("ring_layout checked it");
        for i in 0..cap as usize {
            let off = slots + i * stride;
            put(mem, off, i as u64);
        }
        Ok(())
    }

    /// Validates the ring header at the start of `mem` (a ring's whole memory) and returns
    /// its layout; `what` names the structure in errors.
    pub(crate) fn attach(mem: SharedMem<'_>, what: &str) -> Result<RingLayout> {
        let avail = mem.len();
        let bad = |why: String| {
            Err(Error::new(
                ErrorKind::InvalidHeader,
                format!("{what}: {why}; the segment is corrupted or not a queue"),
            ))
        };
        if avail < HEADER || mem.addr() % 64 != 0 {
            return bad(format!("{avail} bytes is too short for a queue header"));
        }
        let word = |off: usize| mem.u64(off).load(Ordering::Acquire);
        if word(H_MAGIC) != MAGIC {
            return bad("bad magic".into());
        }
        let (cap, slot_size, stride) = (word(H_CAP), word(H_SLOT_SIZE), word(H_STRIDE));
        let Ok((c, s, len)) = ring_layout(cap as usize, slot_size as usize) else {
            return bad(format!(
                "capacity {cap} / slot size {slot_size} are invalid"
            ));
        };
        if c != cap || s as u64 != stride || len > avail {
            return bad(format!(
                "capacity {cap}, slot size {slot_size}, stride {stride} do not fit {avail} bytes"
            ));
        }
        let bound = word(H_BOUND);
        if bound == 0
            || bound > cap
            || !matches!(ring_layout(bound as usize, 0), Ok((c, ..)) if c == cap)
        {
            return bad(format!(
                "capacity {bound} does not match its ring of {cap} slots"
            ));
        }
        Ok(RingLayout {
            cap,
            bound,
            mask: cap - 1,
            slot_size: slot_size as usize,
            stride: stride as usize,
            slots: slots_at(c as usize).expect("ring_layout checked it"),
        })
    }

    /// The ring of `layout` (from [`attach`](Self::attach) on the same memory) over `mem`.
    ///
    /// Checks once that the layout fits the window and that the window is 64-byte
    /// aligned (`attach` did, on the same memory; a mismatch is a bug in ndshm and
    /// panics): every word the ring's accessors reach is then in bounds and aligned by
    /// construction (see [`word`](Self::word)), so they do not check again. A put and a
    /// get touch a dozen words; checking each had doubled the instructions of a put.
    #[inline]
    pub(crate) fn over(mem: SharedMem<'m>, layout: RingLayout) -> Ring<'m> {
        if mem.len() < layout.len() || mem.addr() % 64 != 0 {
            layout_mismatch(mem.len(), layout.len());
        }
        Ring {
            mem,
            cap: layout.cap,
            bound: layout.bound,
            mask: layout.mask,
            slot_size: layout.slot_size,
            stride: layout.stride,
            slots: layout.slots,
        }
    }

    /// The word `A` at byte `off` of the ring, for the accessors below, which pass only
    /// offsets derived from the validated layout: a constant inside the header, or
    /// `base + (pos & mask) * size` inside the claim arrays or the slots.
    #[inline]
    fn word<A: AtomicWord>(&self, off: usize) -> &'m A {
        debug_assert!(off + size_of::<A>() <= self.slots + self.cap as usize * self.stride);
        // SAFETY: in bounds: `over` checked that the window holds the whole layout
        // (header, both claim arrays of `cap` words, `cap` slots of `stride` bytes), and
        // every caller's offset lies in one of those parts: header constants are below
        // `HEADER - size_of::<A>()`; claim words are `(pos & mask) * 8 < cap * 8` into
        // their array; slot words are `(pos & mask) * stride` into the slots, and a slot
        // header (8 bytes) is shorter than its stride. Aligned: the window is 64-byte
        // aligned (checked by `over`), `HEADER` and the claim arrays' lengths are
        // multiples of 64, strides multiples of 16, and every constant offset is a
        // multiple of its word's size.
        unsafe { self.mem.atomic_unchecked(off) }
    }

    /// Header words: constant offsets inside the header.
    #[inline]
    fn head(&self) -> &'m AtomicU64 {
        self.word(H_HEAD)
    }
    #[inline]
    fn tail(&self) -> &'m AtomicU64 {
        self.word(H_TAIL)
    }
    #[inline]
    fn lost_word(&self) -> &'m AtomicU64 {
        self.word(H_LOST)
    }
    #[inline]
    fn closed(&self) -> &'m AtomicU32 {
        self.word(H_CLOSED)
    }
    #[inline]
    fn put_event(&self) -> &'m AtomicU32 {
        self.word(H_PUT_EVENT)
    }
    #[inline]
    fn get_event(&self) -> &'m AtomicU32 {
        self.word(H_GET_EVENT)
    }
    #[inline]
    fn get_waiters(&self) -> &'m AtomicU32 {
        self.word(H_GET_WAITERS)
    }
    #[inline]
    fn put_waiters(&self) -> &'m AtomicU32 {
        self.word(H_PUT_WAITERS)
    }
    #[inline]
    fn hangup(&self) -> &'m AtomicU32 {
        self.word(H_HANGUP)
    }

    /// Queues: raises the hang-up hint (every producer may be gone) and wakes every
    /// sleeper, so that waiting gets check the producers at once.
    pub(crate) fn raise_hangup(&self) {
        self.hangup().store(1, Ordering::SeqCst);
        self.wake_everyone();
    }

    /// Queues: takes the hang-up hint down (a producer registered, or the check found one
    /// alive).
    pub(crate) fn clear_hangup(&self) {
        if self.hangup().load(Ordering::Relaxed) != 0 {
            self.hangup().store(0, Ordering::SeqCst);
        }
    }

    pub(crate) fn tag(&self) -> u64 {
        self.mem.sub(0, HEADER).u64(H_TAG).load(Ordering::Relaxed)
    }

    /// Byte offset of the slot of position `pos`.
    #[inline]
    fn slot_off(&self, pos: u64) -> usize {
        self.slots + (pos & self.mask) as usize * self.stride
    }

    /// The claim word of the producer putting the item of position `pos` (its lease, 0:
    /// none): in the producers' array, which only producers touch, so that a claim does
    /// not pull the slot's cache line from the consumer reading it (see the module docs).
    #[inline]
    fn writer(&self, pos: u64) -> &'m AtomicU64 {
        self.word(HEADER + (pos & self.mask) as usize * 8)
    }

    /// The claim word of the consumer taking the item of position `pos`: in the
    /// consumers' array, after the producers'.
    #[inline]
    fn reader(&self, pos: u64) -> &'m AtomicU64 {
        let claims = (self.slots - HEADER) / 2;
        self.word(HEADER + claims + (pos & self.mask) as usize * 8)
    }

    #[inline]
    fn slot(&self, pos: u64) -> Slot<'m> {
        Slot {
            word: self.word(self.slot_off(pos)),
        }
    }

    /// Byte offset of the data of the slot of position `pos`.
    #[inline]
    fn data_off(&self, pos: u64) -> usize {
        self.slot_off(pos) + SLOT_HEADER
    }

    #[inline]
    /// The capacity asked for: at most this many items are in the queue at once.
    pub(crate) fn capacity(&self) -> usize {
        self.bound as usize
    }

    #[inline]
    pub(crate) fn slot_size(&self) -> usize {
        self.slot_size
    }

    /// Items in the queue now (a snapshot).
    #[inline]
    pub(crate) fn len(&self) -> usize {
        let tail = self.tail().load(Ordering::Acquire);
        let head = self.head().load(Ordering::Acquire);
        head.saturating_sub(tail).min(self.bound) as usize
    }

    pub(crate) fn is_empty_now(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn lost(&self) -> u64 {
        self.lost_word().load(Ordering::Relaxed)
    }

    /// Whether the ring was shut down (closed for everyone).
    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed().load(Ordering::Acquire) != OPEN
    }

    /// Ends the ring for every process: puts fail from now on, gets take what is left and
    /// then report closed (Python's `Queue.shutdown(immediate=False)`); every sleeper wakes.
    pub(crate) fn close(&self) {
        let _ = self
            .closed()
            .compare_exchange(OPEN, SHUT, Ordering::SeqCst, Ordering::SeqCst);
        self.wake_everyone();
    }

    /// [`close`](Self::close), and with `immediate` what is left is discarded too: gets
    /// report closed at once (Python 3.13's `Queue.shutdown(immediate=True)`). Discarded
    /// items are not counted as lost (nobody lost them by dying).
    pub(crate) fn shutdown(&self, immediate: bool) {
        if !immediate {
            return self.close();
        }
        self.closed().store(SHUT_NOW, Ordering::SeqCst);
        self.wake_everyone();
        // Free the slots of what was left, so that `len()` says 0; bounded (at most
        // `cap` items, each attempt bounded), and items behind a slot a stalled peer
        // holds stay unreachable: every get reports closed from now on anyway.
        for _ in 0..self.cap {
            if self.len() == 0 {
                break;
            }
            let _ = self.try_get_once(&mut Some(|_: &[u8]| ()));
        }
    }

    fn wake_everyone(&self) {
        for ev in [self.put_event(), self.get_event()] {
            ev.fetch_add(1, Ordering::SeqCst);
            futex::wake(ev, i32::MAX);
        }
    }

    /// One attempt of a get (after an immediate shutdown, it reports closed: see
    /// `try_get_once`).
    #[inline]
    pub(crate) fn try_get_live<R>(
        &self,
        f: &mut Option<impl FnOnce(&[u8]) -> R>,
    ) -> std::result::Result<R, Fail> {
        self.try_get_once(f)
    }

    /// Wakes the sleepers of the other side, if any. Called right after a sequence number
    /// was published with a `Release` store. A sleeper reads the event, then raises the
    /// `waiters` flag (`SeqCst` store, then a `SeqCst` fence) before its last attempt.
    /// Without a full fence here (one more RMW per item, which the hot path does not pay:
    /// the `SpscQueue` design), this load may miss a flag raised at the very moment the
    /// sequence number was stored while that attempt misses the number: such a sleeper is
    /// late, not lost, because its first nap after raising the flag is [`FIRST_NAP`] (see
    /// `block`). A flag raised earlier is seen. Whoever takes the flag down (one swap)
    /// bumps the event and wakes every sleeper: a flag taken down by an earlier waker was
    /// raised after the sleeper read the event, so that waker's bump (after its swap)
    /// makes the sleeper's `futex::wait` return (and its next nap short again). One system
    /// call per round of sleeps, not one per item while a woken sleeper is still on its
    /// way back to the CPU (what made a producer pay a `futex` call per item).
    #[inline]
    fn notify(&self, waiters: &AtomicU32, event: &AtomicU32) {
        if waiters.load(Ordering::SeqCst) != 0 {
            wake_sleepers(waiters, event);
        }
    }

    /// The word a pipe's sender holds while it sends a message (its lease; 0: none).
    pub(crate) fn sender(&self) -> &'m AtomicU64 {
        self.mem.sub(0, HEADER).u64(H_SENDER)
    }

    /// Counts an item lost (a message dropped by a pipe's receiver, for instance).
    #[inline]
    pub(crate) fn count_lost(&self) {
        self.lost_word().fetch_add(1, Ordering::Relaxed);
    }

    /// One attempt to put an item of `len <= slot_size` bytes, written in place by `fill`.
    ///
    /// Bounded: it returns after at most [`STUCK`] retries that see no progress (the same
    /// position), whatever the shared memory holds.
    fn try_put_once<F: FnOnce(&mut [u8])>(
        &self,
        len: usize,
        fill: &mut Option<F>,
    ) -> std::result::Result<(), Fail> {
        let me = lease::holder();
        let head = self.head();
        let cap = self.cap as i64;
        let mut tries = 0u32;
        let mut stuck = Stuck::new();
        loop {
            if self.is_closed() {
                return Err(Fail::Closed);
            }
            let pos = head.load(Ordering::Relaxed);
            stuck.at(pos)?;
            let slot = self.slot(pos);
            let d = dist(slot.seq(), pos);
            if d == 0 {
                if self.bound < self.cap {
                    // The ring has more slots than the capacity asked for: count the
                    // items in the queue (claimed by producers, not yet by consumers).
                    let used = pos.wrapping_sub(self.tail().load(Ordering::Acquire)) as i64;
                    if used < 0 || used >= self.bound as i64 {
                        if head.load(Ordering::Relaxed) != pos {
                            // `head` moved on since we read it: again.
                            std::hint::spin_loop();
                            continue;
                        }
                        if used < 0 || used > cap {
                            // No sane ring has `tail` past `head`, or more than a lap
                            // behind it.
                            return Err(Fail::Corrupt);
                        }
                        return Err(Fail::WouldBlock);
                    }
                }
                // Claim the slot's writer word (the one contended RMW of a put), or take
                // it over from a holder the kernel reports dead.
                let writer = self.writer(pos);
                let took_over = match claim(writer, me, &mut tries) {
                    Claim::Free => false,
                    Claim::TakenOver => true,
                    Claim::Retry => continue,
                    // Alive (maybe descheduled) or unknown: never taken over; the caller
                    // waits as it may (`try_put`: full now).
                    Claim::Held => return Err(Fail::WouldBlock),
                };
                // The writer word is ours, and no one else can claim the slot while we
                // hold it. Lap `pos` is ours if `head` is still `pos`: only the holder of
                // the word commits lap `pos` (moves `head` from `pos`), so nobody did
                // since we read `head`, and the slot still waits for lap `pos` as we saw
                // before the claim (only that lap's committer publishes it). Not
                // reading the slot again here matters: its cache line is the one the
                // consumers read, and a second look after the claim costs a transfer
                // per item (measured: 1 → 1 at less than half the speed).
                let h = head.load(Ordering::Relaxed);
                if took_over {
                    // The dead holder's word tells nothing of its lap: it may have
                    // published lap `pos` (then `seq` moved on: let go), or committed it
                    // and died before publishing (`head` past `pos`, `seq` still `pos`:
                    // its item is lost, counted, and the slot published as such), or
                    // not committed at all (`head` still `pos`: ours).
                    let ahead = h.wrapping_sub(pos);
                    if slot.seq() != pos as u32 {
                        writer.store(0, Ordering::Release);
                        continue;
                    }
                    if h != pos {
                        if ahead as i64 > 0 && ahead <= self.cap {
                            self.publish_lost(pos);
                        } else {
                            writer.store(0, Ordering::Release);
                        }
                        continue;
                    }
                } else if h != pos {
                    // We read a stale `head`: somebody committed lap `pos` and let go of
                    // the word after publishing. Again; `Stuck` bounds the retries.
                    writer.store(0, Ordering::Release);
                    std::hint::spin_loop();
                    continue;
                }
                let mut publish = Publish {
                    ring: self,
                    pos,
                    len,
                    filled: false,
                };
                head.store(pos.wrapping_add(1), Ordering::Relaxed);
                // SAFETY: the sequence protocol gives these bytes to this call alone: this
                // process holds the slot's writer word (claimed by CAS from 0, or taken
                // over from a holder the kernel reports dead), which no other producer can
                // claim until a consumer frees the slot, and the slot's sequence was `pos`
                // (free for lap `pos / cap`) after the claim; consumers touch the data only
                // after the sequence becomes `pos + 1`, which `publish` stores after
                // `fill` returned (or unwound, when the slot is published as lost and
                // never read), and the slice does not outlive `fill`. The one other path
                // that publishes a slot, `recover`, takes it over only from a writer whose
                // lease the kernel reports dead, and this process is alive while the slice
                // lives. `len <= slot_size` (asserted by `put_with`), so it stays inside
                // the slot; `slice_mut` checks the window's bounds too. A process that
                // writes the segment's bytes directly, not through ndshm, is outside what
                // any API over shared memory can rule out (the crate docs' trust model).
                let buf = unsafe { self.mem.slice_mut(self.data_off(pos), len) };
                let fill = fill.take().expect("the callback is only taken once");
                fill(buf);
                publish.filled = true;
                drop(publish);
                return Ok(());
            } else if d == -cap || d == 1 - cap {
                // The slot still holds the item of position pos - cap (being written, in
                // the queue, or being taken): full.
                return Err(Fail::WouldBlock);
            } else if d < 0 {
                // No sane ring has a slot more than a lap behind `head`.
                return Err(Fail::Corrupt);
            }
            // d > 0: `head` moved on since we read it.
            std::hint::spin_loop();
        }
    }

    /// One attempt to take an item, handing its bytes to `f` in place. Bounded as
    /// [`try_put_once`](Self::try_put_once).
    fn try_get_once<R>(
        &self,
        f: &mut Option<impl FnOnce(&[u8]) -> R>,
    ) -> std::result::Result<R, Fail> {
        let me = lease::holder();
        let tail = self.tail();
        let cap = self.cap as i64;
        let mut tries = 0u32;
        let mut stuck = Stuck::new();
        loop {
            let pos = tail.load(Ordering::Relaxed);
            stuck.at(pos)?;
            let slot = self.slot(pos);
            let (seq, mut len) = slot.seq_len();
            let d = dist(seq, pos.wrapping_add(1));
            if d == 0 {
                // Claim the slot's reader word (the one contended RMW of a get), or take
                // it over from a holder the kernel reports dead.
                let reader = self.reader(pos);
                let took_over = match claim(reader, me, &mut tries) {
                    Claim::Free => false,
                    Claim::TakenOver => true,
                    Claim::Retry => continue,
                    // As for producers: `try_get` reports empty now.
                    Claim::Held => return Err(Fail::WouldBlock),
                };
                // As for puts: the item of lap `pos` is ours if `tail` is still `pos`
                // (only the holder of the word moves `tail` from `pos`), and then the
                // slot still holds what we read before the claim: its sequence number
                // and the item's length (only that lap's consumer frees the slot).
                let t = tail.load(Ordering::Relaxed);
                if took_over {
                    // The dead holder may have freed the slot (`seq` moved on: let go),
                    // or taken the item and died inside its get (`tail` past `pos`,
                    // `seq` still `pos + 1`: the item is lost, counted, the slot freed),
                    // or not committed at all (`tail` still `pos`: ours).
                    let ahead = t.wrapping_sub(pos);
                    let (seq, l) = slot.seq_len();
                    if seq != pos.wrapping_add(1) as u32 {
                        reader.store(0, Ordering::Release);
                        continue;
                    }
                    if t != pos {
                        if ahead as i64 > 0 && ahead <= self.cap {
                            self.count_lost();
                            Release { ring: self, pos }.free();
                        } else {
                            reader.store(0, Ordering::Release);
                        }
                        continue;
                    }
                    len = l;
                } else if t != pos {
                    // A stale `tail`: the item's consumer took it and let go of the word
                    // after freeing the slot. Again.
                    reader.store(0, Ordering::Release);
                    std::hint::spin_loop();
                    continue;
                }
                tail.store(pos.wrapping_add(1), Ordering::Relaxed);
                let release = Release { ring: self, pos };
                if self.closed().load(Ordering::Relaxed) == SHUT_NOW {
                    // Shut down immediately: what is left is discarded (the slot is
                    // freed, the item not delivered). Checked here, after the claim,
                    // where the load costs nothing on the way of an ordinary get.
                    drop(release);
                    return Err(Fail::Closed);
                }
                if len == LOST {
                    drop(release);
                    continue;
                }
                if len as usize > self.slot_size {
                    // No producer writes such a length: the slot was overwritten.
                    // Its item cannot be delivered; the slot goes on to the next lap.
                    self.count_lost();
                    drop(release);
                    return Err(Fail::Corrupt);
                }
                // SAFETY: no process writes these bytes while the slice lives: the
                // sequence was `pos + 1` after this process claimed the slot's reader word
                // (the producer published it, Acquire, after its last write), and no other
                // consumer can claim the slot while this process holds that word, so it
                // alone took the item; producers write the slot again
                // only after the sequence becomes `pos + cap`, which `release` stores
                // when dropped after `f` returned or unwound, and the slice does not
                // outlive `f`. The one other path that frees a slot, `recover`, takes
                // it over only from a reader whose lease the kernel reports dead, and
                // this process is alive while the slice lives. `len <= slot_size`
                // (checked above), so it stays inside the slot; `slice` checks the
                // window's bounds too. Direct writes to the segment by a process not
                // using ndshm are outside any API's reach (the crate docs' trust model).
                let bytes = unsafe { self.mem.slice(self.data_off(pos), len as usize) };
                let f = f.take().expect("the callback is only taken once");
                let out = f(bytes);
                drop(release);
                return Ok(out);
            } else if d == -1 || d == -cap {
                // Empty (d == -1: nothing put at `pos` yet, or a producer is still writing
                // it), or the previous lap's item is still being taken by a consumer
                // (d == -cap): nothing to take now, whoever holds the slot.
                // `closed` first: reading `head` would pull the producers' cache line.
                if self.is_closed() && self.head().load(Ordering::Acquire) == pos {
                    // Check again: a put may have landed just before close.
                    if slot.seq() == seq {
                        return Err(Fail::Closed);
                    }
                    continue;
                }
                // The hang-up hint shares `closed`'s cache line: free on this path.
                if self.hangup().load(Ordering::Acquire) != 0
                    && self.head().load(Ordering::Acquire) == pos
                {
                    return Err(Fail::Disconnected);
                }
                return Err(Fail::WouldBlock);
            } else if d < 0 {
                // No sane ring has a slot more than a lap behind `tail`.
                return Err(Fail::Corrupt);
            }
            // d > 0: `tail` moved on since we read it.
            std::hint::spin_loop();
        }
    }

    /// Publishes the slot of `pos`, whose writer word this process holds, as lost: its
    /// producer died after it committed `head` and before it published (counted).
    #[cold]
    #[inline(never)]
    fn publish_lost(&self, pos: u64) {
        drop(Publish {
            ring: self,
            pos,
            len: 0,
            filled: false,
        });
    }

    /// Frees slots whose producer or consumer died mid-operation (see the module docs): only
    /// when the holder's lease says it is dead, never when it is alive or unknown. Returns
    /// whether it freed one. Cheap unless a slot is held: a few loads, and a liveness check
    /// (a few system calls) only of a holder that blocks the queue.
    fn recover(&self) -> bool {
        let a = self.recover_for_gets();
        let b = self.recover_for_puts();
        a || b
    }

    /// What blocks consumers: a producer that committed the slot at `tail` and died before
    /// publishing it (the slot is published as lost). The slot's own words first: a
    /// `try_get` on an empty queue reads no word of the producers' unless a slot waits.
    fn recover_for_gets(&self) -> bool {
        let pos = self.tail().load(Ordering::Acquire);
        if self.slot(pos).seq() != pos as u32 {
            return false;
        }
        let w = self.writer(pos).load(Ordering::Relaxed);
        if w == 0 || self.head().load(Ordering::Acquire).wrapping_sub(pos) as i64 <= 0 {
            return false;
        }
        // Only the committer of lap `pos` moves `head` past it, holding the word until it
        // published: a dead holder here died between its commit and its publish.
        if take_over(self.writer(pos), w, lease::holder()) == Claim::TakenOver {
            self.publish_lost(pos);
            return true;
        }
        false
    }

    /// What blocks producers: a consumer that committed the slot before `head`'s (a lap
    /// back) and died before freeing it (its item is counted lost, the slot freed).
    fn recover_for_puts(&self) -> bool {
        let head = self.head().load(Ordering::Acquire);
        let Some(old) = head.checked_sub(self.cap) else {
            return false;
        };
        if self.slot(head).seq() != old.wrapping_add(1) as u32 {
            return false;
        }
        let r = self.reader(old).load(Ordering::Relaxed);
        if r == 0 || self.tail().load(Ordering::Acquire).wrapping_sub(old) as i64 <= 0 {
            return false;
        }
        if take_over(self.reader(old), r, lease::holder()) == Claim::TakenOver {
            self.count_lost();
            Release {
                ring: self,
                pos: old,
            }
            .free();
            return true;
        }
        false
    }

    /// Puts `bytes`, waiting as `wait` allows.
    #[inline]
    pub(crate) fn put(&self, bytes: &[u8], wait: Wait) -> std::result::Result<(), Fail> {
        // One copy of one slice (the common case: no loop over parts).
        let mut fill = Some(|buf: &mut [u8]| buf.copy_from_slice(bytes));
        self.put_with(bytes.len(), wait, &mut fill)
    }

    /// Puts the bytes of `item`: as [`put`](Self::put), with a copy of a size known when
    /// compiled (a few moves for small items, not a call to `memcpy`).
    #[inline]
    pub(crate) fn put_pod<T: bytemuck::Pod>(
        &self,
        item: &T,
        wait: Wait,
    ) -> std::result::Result<(), Fail> {
        let mut fill = Some(|buf: &mut [u8]| buf.copy_from_slice(bytemuck::bytes_of(item)));
        self.put_with(std::mem::size_of::<T>(), wait, &mut fill)
    }

    /// Puts the concatenation of `parts` as one item.
    pub(crate) fn put_parts(&self, parts: &[&[u8]], wait: Wait) -> std::result::Result<(), Fail> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut fill = Some(|buf: &mut [u8]| {
            let mut at = 0;
            for part in parts {
                buf[at..at + part.len()].copy_from_slice(part);
                at += part.len();
            }
        });
        self.put_with(total, wait, &mut fill)
    }

    /// Puts an item of `len` bytes that `fill` writes in place. `fill` is taken out of its
    /// `Option` only when the item is put: on an error the caller gets it back.
    pub(crate) fn put_with<F: FnOnce(&mut [u8])>(
        &self,
        len: usize,
        wait: Wait,
        fill: &mut Option<F>,
    ) -> std::result::Result<(), Fail> {
        assert!(len <= self.slot_size, "callers check the message size");
        match self.try_put_once(len, fill) {
            Err(Fail::WouldBlock) => {}
            other => return other,
        }
        let Wait::Until(deadline) = wait else {
            // Full now; unless a dead consumer held the slot: then once more.
            if self.recover_for_puts() {
                return self.try_put_once(len, fill);
            }
            return Err(Fail::WouldBlock);
        };
        self.wait_for_room(deadline);
        self.block(deadline, self.put_waiters(), self.get_event(), || {
            self.try_put_once(len, fill)
        })
    }

    /// A blocking put found the ring full: waits (spinning, at most [`ROOM_SPIN`], never
    /// past `deadline`) until [`room_batch`](Self::room_batch) slots are free rather than
    /// one, watching the last of them, which consumers reach only after the others.
    ///
    /// Without it a producer of small items that keeps up with its consumers refills
    /// each slot the moment it is freed, in the cache line the consumers are reading: the
    /// line then moves between their caches once or twice per item instead of once per
    /// line of items (measured: 1 → 1 items of 8 bytes at 14 M/s instead of 40). A full
    /// queue holds more than enough work for its consumers meanwhile, so they never wait
    /// for it; a put waits at most [`ROOM_SPIN`] longer than it would have, and only when
    /// the queue is full.
    fn wait_for_room(&self, deadline: Option<Instant>) {
        let k = self.room_batch();
        if k <= 1 {
            return;
        }
        // Free for lap `last` when its sequence is `last`; before, it holds the item of
        // the previous lap (negative distance). Anything else (a producer already filled
        // it, memory overwritten) ends the wait: the attempts that follow judge it.
        let last = self.head().load(Ordering::Relaxed).wrapping_add(k - 1);
        let slot = self.slot(last);
        let start = Instant::now();
        let mut polls = 0u32;
        while dist(slot.seq(), last) < 0 {
            for _ in 0..ROOM_PAUSES {
                std::hint::spin_loop();
            }
            polls += 1;
            if polls % 64 == 0 {
                let now = Instant::now();
                if now.duration_since(start) >= ROOM_SPIN
                    || deadline.is_some_and(|d| now >= d)
                    || self.is_closed()
                {
                    return;
                }
            }
        }
    }

    /// How many free slots [`wait_for_room`](Self::wait_for_room) waits for: a few pages
    /// of slots ([`ROOM_BYTES`]), at most half the capacity; 1 (no waiting) for slots of a
    /// page or more, whose items are big enough to amortise a line's move.
    #[inline]
    fn room_batch(&self) -> u64 {
        (ROOM_BYTES / self.stride as u64).min(self.bound / 2).max(1)
    }

    /// Takes an item and hands its bytes to `f`, waiting as `wait` allows.
    #[inline]
    pub(crate) fn get<R>(
        &self,
        wait: Wait,
        f: impl FnOnce(&[u8]) -> R,
    ) -> std::result::Result<R, Fail> {
        self.get_opt(wait, &mut Some(f))
    }

    /// [`get`](Self::get) with the callback in an `Option`, taken only when an item is
    /// handed to it: on an error the caller keeps it (to try again).
    pub(crate) fn get_opt<R, F: FnOnce(&[u8]) -> R>(
        &self,
        wait: Wait,
        f: &mut Option<F>,
    ) -> std::result::Result<R, Fail> {
        match self.try_get_live(f) {
            Err(Fail::WouldBlock) => {}
            other => return other,
        }
        let Wait::Until(deadline) = wait else {
            // Empty now; unless a dead producer held the slot: then once more.
            if self.recover_for_gets() {
                return self.try_get_live(f);
            }
            return Err(Fail::WouldBlock);
        };
        self.block(deadline, self.get_waiters(), self.put_event(), || {
            self.try_get_live(f)
        })
    }

    /// Spins ~20 µs retrying `attempt`, then sleeps on `event` between attempts, and
    /// recovers slots of dead peers at least every [`LIVENESS_PERIOD`] while it waits.
    fn block<R>(
        &self,
        deadline: Option<Instant>,
        waiters: &AtomicU32,
        event: &AtomicU32,
        mut attempt: impl FnMut() -> std::result::Result<R, Fail>,
    ) -> std::result::Result<R, Fail> {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            std::hint::spin_loop();
            match attempt() {
                Err(Fail::WouldBlock) => {}
                other => return other,
            }
            spins += 1;
            if spins % 16 == 0 && start.elapsed() >= SPIN {
                break;
            }
        }
        let mut recovered = start;
        let mut nap = FIRST_NAP;
        loop {
            // The event first, then the flag (see `notify`): a flag left raised when the
            // attempt succeeds costs one spurious wake-up later, never a lost one.
            let ev = event.load(Ordering::SeqCst);
            waiters.store(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let r = attempt();
            if !matches!(r, Err(Fail::WouldBlock)) {
                return r;
            }
            let slice = match deadline {
                None => nap,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Fail::Timeout);
                    }
                    left.min(nap)
                }
            };
            futex::wait(event, ev, Some(slice));
            nap = next_nap(nap, event, ev);
            // Wake-ups for other slots must not postpone recovery forever.
            if recovered.elapsed() >= LIVENESS_PERIOD {
                self.recover();
                recovered = Instant::now();
            }
        }
    }

    /// Pipes: sleeps (registered as a getter, so puts wake it) until the ring holds an
    /// item or is closed, or until `deadline`; returns whether it holds one or is closed.
    /// Consumes nothing (for `poll` with a timeout).
    pub(crate) fn wait_readable(&self, deadline: Instant) -> bool {
        let (waiters, event) = (self.get_waiters(), self.put_event());
        let mut nap = FIRST_NAP;
        loop {
            // The event first, then the flag, as in `block`: a put after the check below
            // either sees the flag and wakes us, or bumped the event we compare against.
            let ev = event.load(Ordering::SeqCst);
            waiters.store(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if !self.is_empty_now() || self.is_closed() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            futex::wait(event, ev, Some(left.min(nap)));
            nap = next_nap(nap, event, ev);
        }
    }
}

/// Bytes of slots that a producer finding the ring full waits to see free (see
/// [`Ring::wait_for_room`]): 512 slots of 16 bytes.
const ROOM_BYTES: u64 = 8192;
/// How long at most [`Ring::wait_for_room`] spins, on top of a blocking call's spin.
const ROOM_SPIN: Duration = Duration::from_micros(20);
/// Pauses between two looks at the watched slot: a look every ~100 ns on current x86.
const ROOM_PAUSES: u32 = 8;

/// A sleeper's first nap after it raised its flag: bounds how late it sees an item
/// published at the very moment it fell asleep (see [`Ring::notify`]).
const FIRST_NAP: Duration = Duration::from_micros(100);

/// The nap after one on `event` that expected `ev`: short again after a wake-up (the flag
/// is raised anew), else 8 times longer, up to [`LIVENESS_PERIOD`].
#[inline]
fn next_nap(nap: Duration, event: &AtomicU32, ev: u32) -> Duration {
    if event.load(Ordering::SeqCst) != ev {
        FIRST_NAP
    } else {
        (nap * 8).min(LIVENESS_PERIOD)
    }
}

/// How a claim of a slot's claim word went (see [`claim`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// Claimed from 0: the word was free.
    Free,
    /// Taken over from a holder the kernel reports dead.
    TakenOver,
    /// Another process holds it, or won the race to it: look again.
    Retry,
    /// A holder that is alive, or whose liveness cannot be told, holds it.
    Held,
}

/// Claims `word` for `me` (a CAS from 0, the one contended RMW of a put or a get), or,
/// every 4096th try that found it held (`tries` counts them), takes it over from a
/// holder the kernel reports dead; a live holder is never taken over.
#[inline]
fn claim(word: &AtomicU64, me: u64, tries: &mut u32) -> Claim {
    let Err(holder) = word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) else {
        return Claim::Free;
    };
    *tries += 1;
    if *tries % 4096 != 0 {
        std::hint::spin_loop();
        return Claim::Retry;
    }
    take_over(word, holder, me)
}

/// Takes `word` over from `holder` for `me` if the kernel reports `holder` dead:
/// [`Claim::TakenOver`], [`Claim::Held`] (alive or unknown), or [`Claim::Retry`] when
/// another process took it first.
#[cold]
fn take_over(word: &AtomicU64, holder: u64, me: u64) -> Claim {
    if lease::check(holder) != Liveness::Dead {
        return Claim::Held;
    }
    match word.compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed) {
        Ok(_) => Claim::TakenOver,
        Err(_) => Claim::Retry,
    }
}

/// Counts retries of one attempt that see the same position: a sane ring moves on (or
/// the attempt returns) well within [`STUCK`] of them; a ring that does not is corrupted.
struct Stuck {
    last: u64,
    same: u32,
}

/// See [`Stuck`]: about a millisecond of spinning.
const STUCK: u32 = 1 << 14;

impl Stuck {
    #[inline]
    fn new() -> Stuck {
        Stuck { last: 0, same: 0 }
    }

    #[inline]
    fn at(&mut self, pos: u64) -> std::result::Result<(), Fail> {
        if pos != self.last {
            self.last = pos;
            self.same = 0;
            return Ok(());
        }
        self.same += 1;
        if self.same > STUCK {
            return Err(Fail::Corrupt);
        }
        Ok(())
    }
}

/// Publishes a claimed slot; if the producer's callback did not return (it panicked),
/// publishes it as lost.
struct Publish<'a, 'm> {
    ring: &'a Ring<'m>,
    pos: u64,
    len: usize,
    /// Set once the callback returned: recorded, not guessed from `thread::panicking`
    /// (a `put` from a `Drop` that runs during unwinding completes normally).
    filled: bool,
}

impl Drop for Publish<'_, '_> {
    #[inline]
    fn drop(&mut self) {
        let slot = self.ring.slot(self.pos);
        let len = if self.filled {
            self.len as u32
        } else {
            self.ring.count_lost();
            LOST
        };
        slot.publish(self.pos, len);
        // Let go of the claim after the publication: a producer of the next lap that
        // claims the word sees the sequence moved on.
        self.ring.writer(self.pos).store(0, Ordering::Release);
        self.ring
            .notify(self.ring.get_waiters(), self.ring.put_event());
    }
}

/// Frees a claimed slot for the next lap (also on unwind).
struct Release<'a, 'm> {
    ring: &'a Ring<'m>,
    pos: u64,
}

impl Release<'_, '_> {
    fn free(self) {
        // Drop does the work.
    }
}

impl Drop for Release<'_, '_> {
    #[inline]
    fn drop(&mut self) {
        let slot = self.ring.slot(self.pos);
        slot.free(self.pos.wrapping_add(self.ring.cap));
        // As for `Publish`: the claim goes after the slot was freed.
        self.ring.reader(self.pos).store(0, Ordering::Release);
        self.ring
            .notify(self.ring.put_waiters(), self.ring.get_event());
    }
}

/// A ring over a window that does not hold its layout (see [`Ring::over`]): a bug in ndshm.
#[cold]
#[inline(never)]
fn layout_mismatch(have: usize, need: usize) -> ! {
    panic!("ndshm bug: a queue ring of {need} bytes over a window of {have} bytes, or misaligned")
}

/// Takes the `waiters` flag down and, if this call did, bumps `event` and wakes every
/// sleeper on it: out of line, it is the slow path of [`Ring::notify`] (someone sleeps).
#[cold]
#[inline(never)]
fn wake_sleepers(waiters: &AtomicU32, event: &AtomicU32) {
    if waiters.swap(0, Ordering::SeqCst) != 0 {
        event.fetch_add(1, Ordering::SeqCst);
        futex::wake(event, i32::MAX);
    }
}

/// The error of a call that found the ring's shared state corrupted.
pub(crate) fn corrupt() -> Error {
    Error::new(
        ErrorKind::Corrupt,
        "the queue's shared memory holds positions no queue has (it was overwritten); \
         the queue cannot be used any more: make a new one",
    )
}

pub(crate) fn deadline(timeout: Duration) -> Wait {
    Wait::Until(Instant::now().checked_add(timeout))
}

impl fmt::Debug for Ring<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("capacity", &self.cap)
            .field("slot_size", &self.slot_size)
            .finish()
    }
}

impl Fail {
    /// The untyped outcome of a failed put (`putting`) or get on a ring; `corrupt` makes
    /// the error of a ring whose shared state was overwritten.
    pub(crate) fn outcome(self, putting: bool, corrupt: impl FnOnce() -> Error) -> Outcome {
        match (self, putting) {
            (Fail::WouldBlock, true) => Outcome::Full,
            (Fail::WouldBlock, false) => Outcome::Empty,
            (Fail::Timeout, _) => Outcome::Timeout,
            (Fail::Closed, _) => Outcome::Closed,
            (Fail::Disconnected, _) => Outcome::Disconnected,
            (Fail::Corrupt, _) => Outcome::Failed(corrupt()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ByteQueue;

    /// A 4-slot queue and the lease of a process that is certainly dead.
    fn queue() -> (ByteQueue, u64) {
        (ByteQueue::new(4, 8).unwrap(), lease::dead_lease_for_tests())
    }

    #[test]
    fn producer_dead_between_claim_and_commit_is_taken_over_without_loss() {
        let (q, dead) = queue();
        let ring = q.ring_segment().ring();
        // It claimed the slot of position 0 and died before moving `head`.
        ring.writer(0).store(dead, Ordering::SeqCst);
        q.try_put(b"x").unwrap();
        assert_eq!(ring.head().load(Ordering::SeqCst), 1);
        assert_eq!(q.try_get().unwrap(), b"x");
        assert_eq!(q.lost(), 0);
    }

    #[test]
    fn producer_dead_after_commit_before_publish_is_counted_lost() {
        let (q, dead) = queue();
        let ring = q.ring_segment().ring();
        // It claimed position 0, moved `head` past it, and died before publishing.
        ring.writer(0).store(dead, Ordering::SeqCst);
        ring.head().store(1, Ordering::SeqCst);
        q.try_put(b"y").unwrap();
        assert_eq!(q.try_get().unwrap(), b"y");
        assert_eq!(q.lost(), 1);
    }

    #[test]
    fn consumer_dead_between_claim_and_commit_is_taken_over_without_loss() {
        let (q, dead) = queue();
        let ring = q.ring_segment().ring();
        q.try_put(b"a").unwrap();
        // It claimed the item at position 0 and died before moving `tail`: it took
        // nothing, so nothing is lost.
        ring.reader(0).store(dead, Ordering::SeqCst);
        assert_eq!(q.try_get().unwrap(), b"a");
        assert_eq!(q.lost(), 0);
    }

    #[test]
    fn producer_dead_after_publishing_before_letting_go_is_taken_over_without_loss() {
        let (q, dead) = queue();
        let ring = q.ring_segment().ring();
        for m in [b"a", b"b", b"c", b"d"] {
            q.try_put(m).unwrap();
            assert_eq!(q.try_get().unwrap(), m);
        }
        // The producer of position 0 published its item, which was taken, and died
        // before it let go of its claim word: position 4 (slot 0) is free all the same.
        ring.writer(0).store(dead, Ordering::SeqCst);
        q.try_put(b"e").unwrap();
        assert_eq!(
            ring.writer(4).load(Ordering::SeqCst),
            0,
            "let go after the put"
        );
        assert_eq!(q.try_get().unwrap(), b"e");
        assert_eq!(q.lost(), 0);
    }

    #[test]
    fn consumer_dead_after_freeing_before_letting_go_is_taken_over_without_loss() {
        let (q, dead) = queue();
        let ring = q.ring_segment().ring();
        for m in [b"a", b"b", b"c", b"d"] {
            q.try_put(m).unwrap();
            assert_eq!(q.try_get().unwrap(), m);
        }
        // The consumer of position 0 freed the slot and died before it let go.
        ring.reader(0).store(dead, Ordering::SeqCst);
        q.try_put(b"e").unwrap();
        assert_eq!(q.try_get().unwrap(), b"e");
        assert_eq!(
            ring.reader(4).load(Ordering::SeqCst),
            0,
            "let go after the get"
        );
        assert_eq!(q.lost(), 0);
    }

    #[test]
    fn small_slots_share_cache_lines_and_large_ones_take_whole_lines() {
        let stride = |slot| ring_layout(1024, slot).unwrap().1;
        assert_eq!(stride(0), 16);
        assert_eq!(stride(8), 16);
        assert_eq!(stride(9), 32);
        assert_eq!(stride(24), 32);
        assert_eq!(stride(56), 64);
        assert_eq!(stride(57), 128);
        assert_eq!(stride(65536), 65600);
        // Header, two claim arrays of 1024 words, slots.
        assert_eq!(ring_layout(1024, 8).unwrap().2, 256 + 2 * 8192 + 1024 * 16);
        // Claim arrays are whole cache lines even for 2 slots.
        assert_eq!(ring_layout(2, 8).unwrap().2, 256 + 2 * 64 + 2 * 16);
        let e = ring_layout((1 << 30) + 1, 8).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    }

    #[test]
    fn a_ring_of_another_format_is_refused() {
        let (q, _) = queue();
        let ring = q.ring_segment().ring();
        assert!(Ring::attach(ring.mem, "q").is_ok());
        let magic = ring.mem.u64(H_MAGIC);
        magic.store(u64::from_le_bytes(*b"NDSHMQ04"), Ordering::SeqCst);
        let e = Ring::attach(ring.mem, "q").unwrap_err();
        magic.store(MAGIC, Ordering::SeqCst);
        assert_eq!(e.kind(), ErrorKind::InvalidHeader, "{e}");
        assert!(e.to_string().contains("bad magic"), "{e}");
    }

    #[test]
    fn consumer_dead_after_commit_is_counted_lost_and_its_slot_reclaimed() {
        let (q, dead) = queue();
        let ring = q.ring_segment().ring();
        q.try_put(b"a").unwrap();
        q.try_put(b"b").unwrap();
        // It took the item at position 0 (moved `tail`) and died inside its get.
        ring.reader(0).store(dead, Ordering::SeqCst);
        ring.tail().store(1, Ordering::SeqCst);
        assert_eq!(q.try_get().unwrap(), b"b");
        // Positions 2, 3, then 4: the dead consumer's slot, reclaimed by the put.
        for m in [b"c", b"d", b"e"] {
            q.try_put(m).unwrap();
        }
        assert_eq!(q.lost(), 1);
        for m in [b"c", b"d", b"e"] {
            assert_eq!(q.try_get().unwrap(), m);
        }
    }
}
