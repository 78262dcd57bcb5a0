//! A bounded multi-producer multi-consumer queue in shared memory: Python's
//! `multiprocessing.Queue`, for `Pod` items ([`Queue`]) and byte messages up to a slot size
//! chosen at creation ([`ByteQueue`]).
//!
//! # Design
//! A ring of `capacity` slots (rounded up to a power of two, at least 2), each with a sequence number,
//! as in Dmitry Vyukov's bounded MPMC queue: a producer may fill the slot of position
//! `pos` when its sequence is `pos`, and publishes it by storing `pos + 1`; a consumer may
//! empty it when its sequence is `pos + 1` and frees it by storing `pos + capacity`. `head`
//! and `tail` count the positions claimed by producers and consumers. Each item is copied
//! once into its slot and once out (or read in place: [`ByteQueue::get_with`]).
//!
//! Blocking calls spin about 20 µs, then sleep on a futex that the other side bumps only
//! when someone sleeps: an idle endpoint burns no CPU after its spin window.
//!
//! # Semantics
//! - An item whose `put` returned `Ok` is delivered at most once, and is lost only if the
//!   consumer that took it dies inside `get` (then [`lost`](Queue::lost) counts it): never
//!   duplicated. An item whose producer died before `put` returned may be lost (counted
//!   too); a `put` whose callback panicked publishes its slot as lost.
//! - Blocking calls spin about 20 µs, then sleep; they never burn a core while they wait,
//!   whoever they wait for.
//! - `try_` calls return in bounded time (about a millisecond at worst, microseconds
//!   normally) and `_timeout` calls within their timeout plus a few milliseconds, even
//!   when a peer died, is stalled, or the shared memory was overwritten.
//! - When a live but stalled peer holds the slot an operation needs (a consumer inside a
//!   slow [`get_with`](ByteQueue::get_with) callback, a process stopped mid-`put`), `try_get`
//!   reports empty and `try_put` full; blocking calls sleep until it moves on.
//! - No access is ever out of bounds: indices and lengths read from shared memory are
//!   validated, every loop is bounded. Run-time state no queue can have (random bytes over
//!   the segment) gives [`ErrorKind::Corrupt`] ([`ByteQueue`], pipes) or reads as closed
//!   ([`Queue`]'s typed errors), never a hang or a panic.
//!
//! # A peer that dies mid-operation
//! Before it claims a position, a producer writes its *lease* into the slot (`writer`), and
//! a consumer likewise (`reader`): a word naming the process that the kernel vouches for
//! (see the crate docs, "Crashes and signals"), not a pid, which another pid namespace
//! would not see and which can be reused. Any call that finds a slot in its way held (a
//! `try_` call at once, a waiting call at least every
//! [`Lock::LIVENESS_PERIOD`](crate::Lock::LIVENESS_PERIOD)) checks the lease recorded there.
//! Only a holder that is provably dead loses its slot: if a producer died after claiming a
//! slot but before publishing it, that one slot is marked *lost* and skipped by consumers:
//! the item that producer was putting is not delivered (it was never completely put), every
//! other item is, and [`lost`](Queue::lost) counts such slots. A consumer that died while
//! taking an item likewise loses that item (it had taken it), and producers reclaim the
//! slot. A holder that is alive (in whatever pid namespace) or whose liveness cannot be told
//! keeps its slot: the others wait (blocking calls sleep, `try_` calls report empty or
//! full). Nothing else is lost, duplicated or blocked.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytemuck::Pod;

use crate::error::{Error, ErrorKind, Result};
use crate::segment::region::{type_tag, Region};
use crate::segment::trailer::SegmentKind;
use crate::segment::CreateOptions;
use crate::sync::lock::{LIVENESS_PERIOD, SPIN};
use crate::sys::futex;
use crate::sys::lease::{self, Liveness};

/// Ring format 2: 64-bit slot holders (leases; format 1 recorded 32-bit pids).
const MAGIC: u64 = u64::from_le_bytes(*b"NDSHMQ02");
const HEADER: usize = 256;
const SLOT_HEADER: usize = 32;
const LOST: u32 = u32::MAX;
const _: () = assert!(std::mem::size_of::<Slot>() == SLOT_HEADER);

// Header words (byte offsets).
const H_MAGIC: usize = 0;
const H_CAP: usize = 8;
const H_SLOT_SIZE: usize = 16;
const H_STRIDE: usize = 24;
const H_TAG: usize = 32;
/// Pipes only: the lease of the process sending a message on this ring, 0 when none. In
/// the header's first cache line, which holds constants otherwise: only senders write it.
const H_SENDER: usize = 40;
const H_HEAD: usize = 64;
const H_TAIL: usize = 128;
const H_CLOSED: usize = 192;
const H_PUT_EVENT: usize = 196;
const H_GET_EVENT: usize = 200;
const H_GET_WAITERS: usize = 204;
const H_PUT_WAITERS: usize = 208;
const H_LOST: usize = 216;

/// A slot's header. `writer` and `reader` hold the lease of the process moving an item
/// through the slot (0: none), see the module docs.
#[repr(C)]
struct Slot {
    seq: AtomicU64,
    writer: AtomicU64,
    reader: AtomicU64,
    len: AtomicU32,
    _pad: u32,
}

/// Why a non-blocking or timed operation did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fail {
    /// Full (put) or empty (get).
    WouldBlock,
    Timeout,
    Closed,
    /// The shared state holds values no sane ring has (overwritten memory).
    Corrupt,
}

/// How long an operation may wait.
#[derive(Clone, Copy)]
pub(crate) enum Wait {
    No,
    Until(Option<Instant>),
}

/// The untyped queue both [`Queue`] and [`ByteQueue`] (and pipes) are built on: a ring
/// inside some shared memory.
pub(crate) struct Ring {
    base: *mut u8,
    cap: u64,
    mask: u64,
    slot_size: usize,
    stride: usize,
}

// SAFETY: `base` points into shared memory that the owner of the Ring keeps mapped; all
// shared state is accessed through atomics, and slot data only by the process that holds
// the slot under the sequence protocol.
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

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
    let stride = (SLOT_HEADER + slot_size)
        .checked_next_multiple_of(64)
        .ok_or_else(too_big)?;
    let len = stride
        .checked_mul(cap)
        .and_then(|n| n.checked_add(HEADER))
        .ok_or_else(too_big)?;
    Ok((cap as u64, stride, len))
}

fn too_big() -> Error {
    Error::new(
        ErrorKind::SizeOverflow,
        "queue capacity times slot size overflows the address space",
    )
}

impl Ring {
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
        debug_assert!(mem.len() >= len);
        for i in 0..cap as usize {
            let off = HEADER + i * stride;
            put(mem, off, i as u64);
        }
        Ok(())
    }

    /// The ring at `base`, validating its header against the `avail` bytes there.
    ///
    /// # Safety
    /// `base` is 64-byte aligned, `avail` bytes of shared memory are mapped there for as
    /// long as the ring is used, and every process accesses them only through `Ring`.
    pub(crate) unsafe fn attach(base: *mut u8, avail: usize, what: &str) -> Result<Ring> {
        let bad = |why: String| {
            Err(Error::new(
                ErrorKind::InvalidHeader,
                format!("{what}: {why}; the segment is corrupted or not a queue"),
            ))
        };
        if avail < HEADER {
            return bad(format!("{avail} bytes is too short for a queue header"));
        }
        // SAFETY: `avail >= HEADER`, so these words lie in the mapping; they are written
        // once before publication and never change.
        let word =
            |off: usize| unsafe { (*(base.add(off) as *const AtomicU64)).load(Ordering::Acquire) };
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
        Ok(Ring {
            base,
            cap,
            mask: cap - 1,
            slot_size: slot_size as usize,
            stride: stride as usize,
        })
    }

    pub(crate) fn tag(&self) -> u64 {
        self.word(H_TAG).load(Ordering::Relaxed)
    }

    fn word(&self, off: usize) -> &AtomicU64 {
        // SAFETY: header words lie inside the validated header, 8-byte aligned, atomics only.
        unsafe { &*(self.base.add(off) as *const AtomicU64) }
    }

    fn word32(&self, off: usize) -> &AtomicU32 {
        // SAFETY: as in `word`, 4-byte aligned.
        unsafe { &*(self.base.add(off) as *const AtomicU32) }
    }

    fn slot(&self, pos: u64) -> &Slot {
        let i = (pos & self.mask) as usize;
        // SAFETY: `i < cap`, so the slot lies inside the validated ring; its header is
        // atomics only, 64-byte aligned.
        unsafe { &*(self.base.add(HEADER + i * self.stride) as *const Slot) }
    }

    fn data(&self, pos: u64) -> *mut u8 {
        let i = (pos & self.mask) as usize;
        // SAFETY: inside the slot, as in `slot`.
        unsafe { self.base.add(HEADER + i * self.stride + SLOT_HEADER) }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.cap as usize
    }

    pub(crate) fn slot_size(&self) -> usize {
        self.slot_size
    }

    /// Items in the queue now (a snapshot).
    pub(crate) fn len(&self) -> usize {
        let tail = self.word(H_TAIL).load(Ordering::Acquire);
        let head = self.word(H_HEAD).load(Ordering::Acquire);
        head.saturating_sub(tail).min(self.cap) as usize
    }

    pub(crate) fn is_empty_now(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn lost(&self) -> u64 {
        self.word(H_LOST).load(Ordering::Relaxed)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.word32(H_CLOSED).load(Ordering::Acquire) != 0
    }

    pub(crate) fn close(&self) {
        self.word32(H_CLOSED).store(1, Ordering::SeqCst);
        for ev in [H_PUT_EVENT, H_GET_EVENT] {
            self.word32(ev).fetch_add(1, Ordering::SeqCst);
            futex::wake(self.word32(ev), i32::MAX);
        }
    }

    /// Wakes a sleeper of the other side, if any. Called right after a sequence number
    /// was published with a `SeqCst` swap: a sleeper registers (`SeqCst` increment, then a
    /// `SeqCst` fence) before its last attempt, so either it sees the new sequence number
    /// or this load sees it registered.
    fn notify(&self, waiters: usize, event: usize) {
        if self.word32(waiters).load(Ordering::SeqCst) != 0 {
            self.word32(event).fetch_add(1, Ordering::SeqCst);
            futex::wake(self.word32(event), 1);
        }
    }

    /// The word a pipe's sender holds while it sends a message (its lease; 0: none).
    pub(crate) fn sender(&self) -> &AtomicU64 {
        self.word(H_SENDER)
    }

    /// Counts an item lost (a message dropped by a pipe's receiver, for instance).
    pub(crate) fn count_lost(&self) {
        self.word(H_LOST).fetch_add(1, Ordering::Relaxed);
    }

    /// One attempt to put an item of `len <= slot_size` bytes, written in place by `fill`.
    ///
    /// Bounded: it returns after at most [`STUCK`] retries that see no progress (the same
    /// position), whatever the shared memory holds.
    fn try_put_once(
        &self,
        len: usize,
        fill: &mut Option<impl FnOnce(&mut [u8])>,
    ) -> std::result::Result<(), Fail> {
        let me = lease::holder();
        let head = self.word(H_HEAD);
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
            let seq = slot.seq.load(Ordering::Acquire);
            let d = seq.wrapping_sub(pos) as i64;
            if d == 0 {
                match slot
                    .writer
                    .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                {
                    Ok(_) => {}
                    Err(w) => {
                        tries += 1;
                        if tries % 4096 == 0 {
                            if lease::check(w) != Liveness::Dead {
                                // Alive (maybe descheduled) or unknown: never taken over;
                                // the caller waits as it may (`try_put`: full now).
                                return Err(Fail::WouldBlock);
                            }
                            // A producer died between announcing and claiming: free it.
                            let _ = slot.writer.compare_exchange(
                                w,
                                0,
                                Ordering::Relaxed,
                                Ordering::Relaxed,
                            );
                        }
                        std::hint::spin_loop();
                        continue;
                    }
                }
                if head
                    .compare_exchange(
                        pos,
                        pos.wrapping_add(1),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    )
                    .is_ok()
                {
                    let mut publish = Publish {
                        ring: self,
                        pos,
                        len,
                        filled: false,
                    };
                    // SAFETY: we claimed position `pos`: no other process reads or writes
                    // this slot's data until we publish `pos + 1` (`publish` does, even if
                    // `fill` panics); `len <= slot_size` (checked by `put_with`).
                    let buf = unsafe { std::slice::from_raw_parts_mut(self.data(pos), len) };
                    let fill = fill.take().expect("the callback is only taken once");
                    fill(buf);
                    publish.filled = true;
                    drop(publish);
                    return Ok(());
                }
                slot.writer.store(0, Ordering::Relaxed);
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
        let tail = self.word(H_TAIL);
        let cap = self.cap as i64;
        let mut tries = 0u32;
        let mut stuck = Stuck::new();
        loop {
            let pos = tail.load(Ordering::Relaxed);
            stuck.at(pos)?;
            let slot = self.slot(pos);
            let seq = slot.seq.load(Ordering::Acquire);
            let d = seq.wrapping_sub(pos.wrapping_add(1)) as i64;
            if d == 0 {
                match slot
                    .reader
                    .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                {
                    Ok(_) => {}
                    Err(r) => {
                        tries += 1;
                        if tries % 4096 == 0 {
                            if lease::check(r) != Liveness::Dead {
                                // As for producers: `try_get` reports empty now.
                                return Err(Fail::WouldBlock);
                            }
                            let _ = slot.reader.compare_exchange(
                                r,
                                0,
                                Ordering::Relaxed,
                                Ordering::Relaxed,
                            );
                        }
                        std::hint::spin_loop();
                        continue;
                    }
                }
                if tail
                    .compare_exchange(
                        pos,
                        pos.wrapping_add(1),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    )
                    .is_ok()
                {
                    let release = Release { ring: self, pos };
                    let len = slot.len.load(Ordering::Relaxed);
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
                    // SAFETY: we claimed position `pos`, published (Acquire above): no
                    // other process touches this slot's data until we free it (`release`
                    // frees it even if `f` panics); `len <= slot_size` (checked above).
                    let bytes = unsafe { std::slice::from_raw_parts(self.data(pos), len as usize) };
                    let f = f.take().expect("the callback is only taken once");
                    let out = f(bytes);
                    drop(release);
                    return Ok(out);
                }
                slot.reader.store(0, Ordering::Relaxed);
            } else if d == -1 || d == -cap {
                // Empty (d == -1: nothing put at `pos` yet, or a producer is still writing
                // it), or the previous lap's item is still being taken by a consumer
                // (d == -cap): nothing to take now, whoever holds the slot.
                // `closed` first: reading `head` would pull the producers' cache line.
                if self.is_closed() && self.word(H_HEAD).load(Ordering::Acquire) == pos {
                    // Check again: a put may have landed just before close.
                    if slot.seq.load(Ordering::Acquire) == seq {
                        return Err(Fail::Closed);
                    }
                    continue;
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

    /// Frees slots whose producer or consumer died mid-operation (see the module docs): only
    /// when the holder's lease says it is dead, never when it is alive or unknown. Returns
    /// whether it freed one. Cheap unless a slot is held: a few loads, and a liveness check
    /// (a few system calls) only of a holder that blocks the queue.
    fn recover(&self) -> bool {
        let me = lease::holder();
        let mut freed = false;
        // A producer that claimed the slot at `tail` and died before publishing it.
        let pos = self.word(H_TAIL).load(Ordering::Acquire);
        let slot = self.slot(pos);
        if slot.seq.load(Ordering::Acquire) == pos
            && self.word(H_HEAD).load(Ordering::Acquire).wrapping_sub(pos) as i64 > 0
        {
            let w = slot.writer.load(Ordering::Relaxed);
            if w != 0
                && lease::check(w) == Liveness::Dead
                && slot
                    .writer
                    .compare_exchange(w, me, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                slot.len.store(LOST, Ordering::Relaxed);
                self.count_lost();
                slot.seq.swap(pos.wrapping_add(1), Ordering::SeqCst);
                self.notify(H_GET_WAITERS, H_PUT_EVENT);
                freed = true;
            }
        }
        // A consumer that claimed the slot before `head`'s and died before freeing it.
        let head = self.word(H_HEAD).load(Ordering::Acquire);
        if let Some(old) = head.checked_sub(self.cap) {
            let slot = self.slot(head);
            if slot.seq.load(Ordering::Acquire) == old.wrapping_add(1)
                && self.word(H_TAIL).load(Ordering::Acquire).wrapping_sub(old) as i64 > 0
            {
                let r = slot.reader.load(Ordering::Relaxed);
                if r != 0
                    && lease::check(r) == Liveness::Dead
                    && slot
                        .reader
                        .compare_exchange(r, me, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    self.count_lost();
                    Release {
                        ring: self,
                        pos: old,
                    }
                    .free();
                    freed = true;
                }
            }
        }
        freed
    }

    /// Puts `bytes`, waiting as `wait` allows.
    pub(crate) fn put(&self, bytes: &[u8], wait: Wait) -> std::result::Result<(), Fail> {
        self.put_parts(&[bytes], wait)
    }

    /// Puts the concatenation of `parts` as one item.
    pub(crate) fn put_parts(&self, parts: &[&[u8]], wait: Wait) -> std::result::Result<(), Fail> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        self.put_with(total, wait, |buf| {
            let mut at = 0;
            for part in parts {
                buf[at..at + part.len()].copy_from_slice(part);
                at += part.len();
            }
        })
    }

    /// Puts an item of `len` bytes that `fill` writes in place.
    pub(crate) fn put_with(
        &self,
        len: usize,
        wait: Wait,
        fill: impl FnOnce(&mut [u8]),
    ) -> std::result::Result<(), Fail> {
        assert!(len <= self.slot_size, "callers check the message size");
        let mut fill = Some(fill);
        match self.try_put_once(len, &mut fill) {
            Err(Fail::WouldBlock) => {}
            other => return other,
        }
        let Wait::Until(deadline) = wait else {
            // Full now; unless a dead consumer held the slot: then once more.
            if self.recover() {
                return self.try_put_once(len, &mut fill);
            }
            return Err(Fail::WouldBlock);
        };
        self.block(deadline, H_PUT_WAITERS, H_GET_EVENT, || {
            self.try_put_once(len, &mut fill)
        })
    }

    /// Takes an item and hands its bytes to `f`, waiting as `wait` allows.
    pub(crate) fn get<R>(
        &self,
        wait: Wait,
        f: impl FnOnce(&[u8]) -> R,
    ) -> std::result::Result<R, Fail> {
        let mut f = Some(f);
        match self.try_get_once(&mut f) {
            Err(Fail::WouldBlock) => {}
            other => return other,
        }
        let Wait::Until(deadline) = wait else {
            // Empty now; unless a dead peer held the slot: then once more.
            if self.recover() {
                return self.try_get_once(&mut f);
            }
            return Err(Fail::WouldBlock);
        };
        self.block(deadline, H_GET_WAITERS, H_PUT_EVENT, || {
            self.try_get_once(&mut f)
        })
    }

    /// Spins ~20 µs retrying `attempt`, then sleeps on `event` between attempts, and
    /// recovers slots of dead peers at least every [`LIVENESS_PERIOD`] while it waits.
    fn block<R>(
        &self,
        deadline: Option<Instant>,
        waiters: usize,
        event: usize,
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
        let waiters = self.word32(waiters);
        let event = self.word32(event);
        let mut recovered = start;
        loop {
            waiters.fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let ev = event.load(Ordering::SeqCst);
            let r = attempt();
            if !matches!(r, Err(Fail::WouldBlock)) {
                waiters.fetch_sub(1, Ordering::SeqCst);
                return r;
            }
            let slice = match deadline {
                None => LIVENESS_PERIOD,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        waiters.fetch_sub(1, Ordering::SeqCst);
                        return Err(Fail::Timeout);
                    }
                    left.min(LIVENESS_PERIOD)
                }
            };
            futex::wait(event, ev, Some(slice));
            waiters.fetch_sub(1, Ordering::SeqCst);
            // Wake-ups for other slots must not postpone recovery forever.
            if recovered.elapsed() >= LIVENESS_PERIOD {
                self.recover();
                recovered = Instant::now();
            }
        }
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
    fn new() -> Stuck {
        Stuck { last: 0, same: 0 }
    }

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
struct Publish<'a> {
    ring: &'a Ring,
    pos: u64,
    len: usize,
    /// Set once the callback returned: recorded, not guessed from `thread::panicking`
    /// (a `put` from a `Drop` that runs during unwinding completes normally).
    filled: bool,
}

impl Drop for Publish<'_> {
    fn drop(&mut self) {
        let slot = self.ring.slot(self.pos);
        let len = if self.filled {
            self.len as u32
        } else {
            self.ring.count_lost();
            LOST
        };
        slot.len.store(len, Ordering::Relaxed);
        slot.seq.swap(self.pos.wrapping_add(1), Ordering::SeqCst);
        self.ring.notify(H_GET_WAITERS, H_PUT_EVENT);
    }
}

/// Frees a claimed slot for the next lap (also on unwind).
struct Release<'a> {
    ring: &'a Ring,
    pos: u64,
}

impl Release<'_> {
    fn free(self) {
        // Drop does the work.
    }
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        let slot = self.ring.slot(self.pos);
        slot.writer.store(0, Ordering::Relaxed);
        slot.reader.store(0, Ordering::Relaxed);
        slot.seq
            .swap(self.pos.wrapping_add(self.ring.cap), Ordering::SeqCst);
        self.ring.notify(H_PUT_WAITERS, H_GET_EVENT);
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

fn deadline(timeout: Duration) -> Wait {
    Wait::Until(Instant::now().checked_add(timeout))
}

/// The error of [`Queue::try_put`]: the item comes back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TryPutError<T> {
    /// The queue is full.
    Full(T),
    /// The queue was closed.
    Closed(T),
}

/// The error of [`Queue::put_timeout`]: the item comes back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum PutTimeoutError<T> {
    /// The queue stayed full until the timeout.
    Timeout(T),
    /// The queue was closed.
    Closed(T),
}

/// The error of [`Queue::put`]: the queue was closed; the item comes back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PutError<T>(pub T);

/// The error of [`Queue::try_get`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryGetError {
    /// Nothing to take now.
    Empty,
    /// The queue was closed and is empty.
    Closed,
}

/// The error of [`Queue::get_timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetTimeoutError {
    /// Nothing came before the timeout.
    Timeout,
    /// The queue was closed and is empty.
    Closed,
}

/// The error of [`Queue::get`]: the queue was closed and is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetError;

macro_rules! item_error {
    ($t:ident, $($v:ident => $msg:expr, $kind:ident);*) => {
        impl<T> $t<T> {
            /// The item that was not put.
            pub fn into_inner(self) -> T {
                match self { $($t::$v(x) => x),* }
            }
        }
        impl<T> fmt::Debug for $t<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self { $($t::$v(_) => f.write_str(concat!(stringify!($v), "(..)"))),* }
            }
        }
        impl<T> fmt::Display for $t<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self { $($t::$v(_) => f.write_str($msg)),* }
            }
        }
        impl<T> std::error::Error for $t<T> {}
        impl<T> From<$t<T>> for Error {
            fn from(e: $t<T>) -> Error {
                match e { $($t::$v(_) => Error::new(ErrorKind::$kind, $msg)),* }
            }
        }
    };
}

item_error!(TryPutError, Full => "the queue is full", Full; Closed => "the queue is closed", Closed);
item_error!(PutTimeoutError,
    Timeout => "the queue stayed full until the timeout", Timeout;
    Closed => "the queue is closed", Closed);

impl<T> PutError<T> {
    /// The item that was not put.
    pub fn into_inner(self) -> T {
        self.0
    }
}
impl<T> fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PutError(..)")
    }
}
impl<T> fmt::Display for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the queue is closed")
    }
}
impl<T> std::error::Error for PutError<T> {}
impl<T> From<PutError<T>> for Error {
    fn from(_: PutError<T>) -> Error {
        Error::new(ErrorKind::Closed, "the queue is closed")
    }
}

macro_rules! plain_error {
    ($t:ident { $($v:ident => $msg:expr, $kind:ident);* }) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self { $($t::$v => f.write_str($msg)),* }
            }
        }
        impl std::error::Error for $t {}
        impl From<$t> for Error {
            fn from(e: $t) -> Error {
                match e { $($t::$v => Error::new(ErrorKind::$kind, $msg)),* }
            }
        }
    };
}

plain_error!(TryGetError {
    Empty => "the queue is empty", Timeout;
    Closed => "the queue is closed and empty", Closed });
plain_error!(GetTimeoutError {
    Timeout => "nothing arrived before the timeout", Timeout;
    Closed => "the queue is closed and empty", Closed });

impl fmt::Display for GetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the queue is closed and empty")
    }
}
impl std::error::Error for GetError {}
impl From<GetError> for Error {
    fn from(_: GetError) -> Error {
        Error::new(ErrorKind::Closed, "the queue is closed and empty")
    }
}

/// Tag of byte queues.
const BYTES_TAG: u64 = 0;

/// The shared machinery of [`Queue`] and [`ByteQueue`].
struct Shared {
    ring: Ring,
    region: Region,
}

impl Shared {
    fn make(
        named: Option<CreateOptions>,
        capacity: usize,
        slot_size: usize,
        tag: u64,
    ) -> Result<Shared> {
        let (_, _, len) = ring_layout(capacity, slot_size)?;
        let init = |mem: &mut [u8]| Ring::init(mem, capacity, slot_size, tag);
        let region = match named {
            Some(opts) => Region::create(&opts, SegmentKind::Queue, len, init)?,
            None => Region::anonymous(len, init)?,
        };
        Self::attach(region, tag)
    }

    fn open(name: &str, tag: u64) -> Result<Shared> {
        Self::attach(Region::open(name, SegmentKind::Queue, HEADER)?, tag)
    }

    fn attach(region: Region, tag: u64) -> Result<Shared> {
        let what = region
            .name()
            .map_or("anonymous queue".into(), |n| format!("queue '{n}'"));
        // SAFETY: the region's payload is page-aligned and mapped for as long as `region`
        // lives, which `Shared` ties to the ring; queue memory is only accessed via Ring.
        let ring = unsafe { Ring::attach(region.payload_ptr(), region.payload_len(), &what)? };
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
        Ok(Shared { ring, region })
    }
}

/// A bounded multi-producer multi-consumer queue of `Pod` items in shared memory:
/// Python's `multiprocessing.Queue`, for plain data.
///
/// Named (any process [`open`](Queue::open)s it by name) or anonymous (shared with children
/// forked after it was made). Blocking [`put`](Queue::put)/[`get`](Queue::get), non-blocking
/// `try_` and timed `_timeout` variants (crossbeam-style errors that hand the item back),
/// and [`close`](Queue::close): consumers drain what is left and then get an error, so no
/// sentinel is needed.
///
/// A process that dies in the middle of a `put` (after claiming a slot, before publishing
/// it) costs exactly that item: a consumer waiting on the slot checks the producer's lease
/// (recorded in the slot before the claim; the kernel releases it when the producer dies,
/// whatever its pid namespace) every 20 ms, and once the producer is provably dead marks
/// the slot lost and moves on; [`lost`](Queue::lost) counts such items. A live producer,
/// or one whose liveness cannot be told, keeps its slot however long it takes. A consumer that dies in the middle of a `get`
/// loses the item it took, and producers reclaim its slot the same way. Every other item
/// is delivered exactly once.
///
/// Opening by name is safe: a slot's bytes are only touched by the one process that the
/// sequence protocol gives it to, and everything else is atomic. A queue whose shared
/// memory was overwritten with values no queue has reads as closed (`Closed` errors, the
/// item handed back), in bounded time; see the module docs, "Semantics".
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
///     Ok(())
/// })?;
/// let mut results = std::collections::BTreeMap::new();
/// while let Ok([task, result]) = q.try_get() {
///     results.insert(task, result);
/// }
/// assert_eq!(format!("{results:?}"), "{0: 0, 1: 1, 2: 4, 3: 9, 4: 16}");
/// # Ok::<(), ndshm::Error>(())
/// ```
pub struct Queue<T: Pod> {
    shared: Shared,
    _marker: PhantomData<fn(T) -> T>,
}

impl<T: Pod> Queue<T> {
    /// An anonymous queue of at least `capacity` items (rounded up to a power of two, and
    /// to at least 2).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for a zero capacity, an OS error when mapping fails.
    pub fn new(capacity: usize) -> Result<Self> {
        Self::make(None, capacity)
    }

    /// Creates queue segment `name` of at least `capacity` items.
    ///
    /// # Errors
    /// As [`new`](Self::new), plus the errors of segment creation.
    pub fn create(segment: impl Into<CreateOptions>, capacity: usize) -> Result<Self> {
        Self::make(Some(segment.into()), capacity)
    }

    fn make(named: Option<CreateOptions>, capacity: usize) -> Result<Self> {
        Ok(Queue {
            shared: Shared::make(named, capacity, std::mem::size_of::<T>(), type_tag::<T>())?,
            _marker: PhantomData,
        })
    }

    /// Attaches queue segment `name` (safe: see the type's docs).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`], [`ErrorKind::KindMismatch`] (not a queue),
    /// [`ErrorKind::TypeMismatch`] (another item type), [`ErrorKind::InvalidHeader`],
    /// [`ErrorKind::AlreadyOpen`].
    pub fn open(name: &str) -> Result<Self> {
        Ok(Queue {
            shared: Shared::open(name, type_tag::<T>())?,
            _marker: PhantomData,
        })
    }

    fn ring(&self) -> &Ring {
        &self.shared.ring
    }

    fn read(bytes: &[u8]) -> T {
        let mut v = T::zeroed();
        let n = bytes.len().min(std::mem::size_of::<T>());
        bytemuck::bytes_of_mut(&mut v)[..n].copy_from_slice(&bytes[..n]);
        v
    }

    /// Puts `item`, waiting while the queue is full.
    ///
    /// # Errors
    /// [`PutError`] (with the item) when the queue is closed.
    pub fn put(&self, item: T) -> std::result::Result<(), PutError<T>> {
        match self
            .ring()
            .put(bytemuck::bytes_of(&item), Wait::Until(None))
        {
            Ok(()) => Ok(()),
            Err(_) => Err(PutError(item)),
        }
    }

    /// Puts `item` if there is room now.
    ///
    /// # Errors
    /// [`TryPutError::Full`] or [`TryPutError::Closed`], with the item.
    pub fn try_put(&self, item: T) -> std::result::Result<(), TryPutError<T>> {
        match self.ring().put(bytemuck::bytes_of(&item), Wait::No) {
            Ok(()) => Ok(()),
            Err(Fail::Closed | Fail::Corrupt) => Err(TryPutError::Closed(item)),
            Err(_) => Err(TryPutError::Full(item)),
        }
    }

    /// Puts `item`, waiting at most `timeout` for room.
    ///
    /// # Errors
    /// [`PutTimeoutError::Timeout`] or [`PutTimeoutError::Closed`], with the item.
    pub fn put_timeout(
        &self,
        item: T,
        timeout: Duration,
    ) -> std::result::Result<(), PutTimeoutError<T>> {
        match self
            .ring()
            .put(bytemuck::bytes_of(&item), deadline(timeout))
        {
            Ok(()) => Ok(()),
            Err(Fail::Closed | Fail::Corrupt) => Err(PutTimeoutError::Closed(item)),
            Err(_) => Err(PutTimeoutError::Timeout(item)),
        }
    }

    /// Takes an item, waiting while the queue is empty.
    ///
    /// # Errors
    /// [`GetError`] when the queue is closed and empty.
    pub fn get(&self) -> std::result::Result<T, GetError> {
        self.ring()
            .get(Wait::Until(None), Self::read)
            .map_err(|_| GetError)
    }

    /// Takes an item if there is one now.
    ///
    /// # Errors
    /// [`TryGetError::Empty`], or [`TryGetError::Closed`] when closed and empty.
    pub fn try_get(&self) -> std::result::Result<T, TryGetError> {
        self.ring().get(Wait::No, Self::read).map_err(|e| match e {
            Fail::Closed | Fail::Corrupt => TryGetError::Closed,
            _ => TryGetError::Empty,
        })
    }

    /// Takes an item, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`GetTimeoutError::Timeout`], or [`GetTimeoutError::Closed`] when closed and empty.
    pub fn get_timeout(&self, timeout: Duration) -> std::result::Result<T, GetTimeoutError> {
        self.ring()
            .get(deadline(timeout), Self::read)
            .map_err(|e| match e {
                Fail::Closed | Fail::Corrupt => GetTimeoutError::Closed,
                _ => GetTimeoutError::Timeout,
            })
    }

    /// Closes the queue: puts fail from now on; gets take what is left, then fail.
    pub fn close(&self) {
        self.ring().close()
    }

    /// Whether the queue was closed.
    pub fn is_closed(&self) -> bool {
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

    /// The number of slots (the capacity asked for, rounded up to a power of two, at
    /// least 2).
    pub fn capacity(&self) -> usize {
        self.ring().capacity()
    }

    /// Items lost because a producer or consumer died in the middle of moving them.
    pub fn lost(&self) -> u64 {
        self.ring().lost()
    }

    /// The segment name, or `None` for an anonymous queue.
    pub fn name(&self) -> Option<&str> {
        self.shared.region.name()
    }
}

impl<T: Pod> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.name())
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// A bounded multi-producer multi-consumer queue of byte messages up to a slot size chosen
/// at creation; the byte-message sibling of [`Queue`], with the same semantics.
///
/// Receive copies ([`get`](ByteQueue::get), [`get_into`](ByteQueue::get_into)) or reads
/// the message in place ([`get_with`](ByteQueue::get_with): zero copy; the slot is held
/// until the callback returns).
///
/// # Examples
/// ```
/// let q = ndshm::ByteQueue::new(4, 64)?;
/// q.put(b"hello")?;
/// assert_eq!(q.get_with(|m| m.len())?, 5);
/// assert_eq!(q.put(&[0u8; 65]).unwrap_err().kind(), ndshm::ErrorKind::InvalidArgument);
/// # Ok::<(), ndshm::Error>(())
/// ```
pub struct ByteQueue {
    shared: Shared,
}

fn map_fail(e: Fail, what: &str) -> Error {
    match e {
        Fail::WouldBlock => Error::new(ErrorKind::Full, format!("the queue is {what} now")),
        Fail::Timeout => Error::new(
            ErrorKind::Timeout,
            format!("the queue stayed {what} until the timeout"),
        ),
        Fail::Closed => Error::new(ErrorKind::Closed, "the queue is closed"),
        Fail::Corrupt => corrupt(),
    }
}

impl ByteQueue {
    /// An anonymous queue of at least `capacity` messages of up to `slot_size` bytes.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for a zero capacity or a slot size over 4 GiB.
    pub fn new(capacity: usize, slot_size: usize) -> Result<Self> {
        Ok(ByteQueue {
            shared: Shared::make(None, capacity, slot_size, BYTES_TAG)?,
        })
    }

    /// Creates byte-queue segment `name`.
    ///
    /// # Errors
    /// As [`new`](Self::new), plus the errors of segment creation.
    pub fn create(
        segment: impl Into<CreateOptions>,
        capacity: usize,
        slot_size: usize,
    ) -> Result<Self> {
        Ok(ByteQueue {
            shared: Shared::make(Some(segment.into()), capacity, slot_size, BYTES_TAG)?,
        })
    }

    /// Attaches byte-queue segment `name`.
    ///
    /// # Errors
    /// As [`Queue::open`].
    pub fn open(name: &str) -> Result<Self> {
        Ok(ByteQueue {
            shared: Shared::open(name, BYTES_TAG)?,
        })
    }

    fn ring(&self) -> &Ring {
        &self.shared.ring
    }

    fn check(&self, msg: &[u8]) -> Result<()> {
        self.check_len(msg.len())
    }

    fn check_len(&self, len: usize) -> Result<()> {
        if len > self.ring().slot_size() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "a message of {} bytes does not fit the queue's slots of {} bytes: create \
                     the queue with a larger slot size, or split the message",
                    len,
                    self.ring().slot_size()
                ),
            ));
        }
        Ok(())
    }

    /// Puts a copy of `msg`, waiting while the queue is full.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when `msg` exceeds the slot size,
    /// [`ErrorKind::Closed`].
    pub fn put(&self, msg: &[u8]) -> Result<()> {
        self.check(msg)?;
        self.ring()
            .put(msg, Wait::Until(None))
            .map_err(|e| map_fail(e, "full"))
    }

    /// Puts a message of `len` bytes that `fill` writes in place (zero copy), waiting
    /// while the queue is full. If `fill` panics, the slot is published as lost (consumers
    /// skip it, [`lost`](Self::lost) counts it) and the panic goes on.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when `len` exceeds the slot size,
    /// [`ErrorKind::Closed`].
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::ByteQueue::new(2, 16)?;
    /// q.put_with(4, |buf| buf.copy_from_slice(&7u32.to_le_bytes()))?;
    /// assert_eq!(q.get()?, 7u32.to_le_bytes());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn put_with(&self, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<()> {
        self.check_len(len)?;
        self.ring()
            .put_with(len, Wait::Until(None), fill)
            .map_err(|e| map_fail(e, "full"))
    }

    /// Puts `msg` if there is room now.
    ///
    /// # Errors
    /// [`ErrorKind::Full`], [`ErrorKind::Closed`], [`ErrorKind::InvalidArgument`].
    pub fn try_put(&self, msg: &[u8]) -> Result<()> {
        self.check(msg)?;
        self.ring()
            .put(msg, Wait::No)
            .map_err(|e| map_fail(e, "full"))
    }

    /// Puts `msg`, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`], [`ErrorKind::Closed`], [`ErrorKind::InvalidArgument`].
    pub fn put_timeout(&self, msg: &[u8], timeout: Duration) -> Result<()> {
        self.check(msg)?;
        self.ring()
            .put(msg, deadline(timeout))
            .map_err(|e| map_fail(e, "full"))
    }

    fn get_fail(e: Fail) -> Error {
        match e {
            Fail::WouldBlock => Error::new(ErrorKind::Timeout, "the queue is empty now"),
            Fail::Timeout => Error::new(ErrorKind::Timeout, "nothing arrived before the timeout"),
            Fail::Closed => Error::new(ErrorKind::Closed, "the queue is closed and empty"),
            Fail::Corrupt => corrupt(),
        }
    }

    /// Takes a message and hands it to `f` in place (zero copy), waiting while the queue
    /// is empty. The slot is freed when `f` returns (or panics).
    ///
    /// # Errors
    /// [`ErrorKind::Closed`] when the queue is closed and empty.
    pub fn get_with<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        self.ring()
            .get(Wait::Until(None), f)
            .map_err(Self::get_fail)
    }

    /// [`get_with`](Self::get_with) without waiting.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`] when empty now, [`ErrorKind::Closed`] when closed and empty.
    pub fn try_get_with<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        self.ring().get(Wait::No, f).map_err(Self::get_fail)
    }

    /// [`get_with`](Self::get_with), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`], [`ErrorKind::Closed`].
    pub fn get_with_timeout<R>(&self, timeout: Duration, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        self.ring()
            .get(deadline(timeout), f)
            .map_err(Self::get_fail)
    }

    /// Takes a message as a new `Vec`.
    ///
    /// # Errors
    /// As [`get_with`](Self::get_with).
    pub fn get(&self) -> Result<Vec<u8>> {
        self.get_with(|m| m.to_vec())
    }

    /// Takes a message into `buf` (cleared first), reusing its allocation; returns its
    /// length.
    ///
    /// # Errors
    /// As [`get_with`](Self::get_with).
    pub fn get_into(&self, buf: &mut Vec<u8>) -> Result<usize> {
        self.get_with(|m| {
            buf.clear();
            buf.extend_from_slice(m);
            m.len()
        })
    }

    /// Takes a message as a new `Vec` if there is one now.
    ///
    /// # Errors
    /// As [`try_get_with`](Self::try_get_with).
    pub fn try_get(&self) -> Result<Vec<u8>> {
        self.try_get_with(|m| m.to_vec())
    }

    /// Takes a message, waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`get_with_timeout`](Self::get_with_timeout).
    pub fn get_timeout(&self, timeout: Duration) -> Result<Vec<u8>> {
        self.get_with_timeout(timeout, |m| m.to_vec())
    }

    /// Closes the queue (see [`Queue::close`]).
    pub fn close(&self) {
        self.ring().close()
    }

    /// Whether the queue was closed.
    pub fn is_closed(&self) -> bool {
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

    /// The number of slots.
    pub fn capacity(&self) -> usize {
        self.ring().capacity()
    }

    /// The largest message, in bytes.
    pub fn slot_size(&self) -> usize {
        self.ring().slot_size()
    }

    /// Messages lost because a producer or consumer died in the middle of moving them.
    pub fn lost(&self) -> u64 {
        self.ring().lost()
    }

    /// The segment name, or `None` for an anonymous queue.
    pub fn name(&self) -> Option<&str> {
        self.shared.region.name()
    }

    pub(crate) fn region_is_owner_here(&self) -> bool {
        self.shared.region.is_owner_here()
    }
}

impl fmt::Debug for ByteQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteQueue")
            .field("name", &self.name())
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .field("slot_size", &self.slot_size())
            .finish()
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("capacity", &self.cap)
            .field("slot_size", &self.slot_size)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_full_empty_close() {
        assert_eq!(Queue::<u64>::new(1).unwrap().capacity(), 2);
        let q = Queue::<u64>::new(3).unwrap();
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
        q.close();
        assert_eq!(q.try_put(8), Err(TryPutError::Closed(8)));
        assert_eq!(q.get(), Ok(7));
        assert_eq!(q.get(), Err(GetError));
        // Many laps.
        let q = Queue::<u32>::new(2).unwrap();
        for i in 0..1000 {
            q.put(i).unwrap();
            assert_eq!(q.get().unwrap(), i);
        }
    }

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
