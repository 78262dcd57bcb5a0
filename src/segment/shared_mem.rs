//! [`SharedMem`]: the one bounds-checked window through which the sync, ipc and manager
//! types touch shared memory — atomics, byte copies, `Pod` values and the robust lock —
//! so that none of them writes raw pointer code (the `unsafe` lives here, in `sys/`, the
//! array views and the pool's job trampolines).
//!
//! Shared memory is memory that other processes may change at any moment, so nothing here
//! hands out a plain `&T` or `&[u8]` of it: words are read and written through atomics,
//! and everything else is *copied* in or out (`read`, `write`, `read_pod`, `write_pod`).
//! Every offset is checked against the window; a check that fails is a bug in ndshm's own
//! layout arithmetic (offsets read from shared memory are validated by their users before
//! they get here, with `get`), so it panics, naming the access.
//!
//! The zero-copy paths of the byte queue hand a callback a slice of a slot that the ring
//! protocol gives to one process at a time: those two calls (`slice`, `slice_mut`) stay
//! `unsafe`, and their callers argue the exclusivity.

// Transitional: the helpers of the floor-plan change move the sync, ipc and manager types
// onto this window; until then some accessors have no caller.
#![allow(dead_code)]

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI16, AtomicI32, AtomicI64, AtomicI8};
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8};

use bytemuck::Pod;

use crate::segment::trailer::{SegmentKind, TRAILER_LEN};
use crate::segment::Segment;
use crate::sys::fork::AnonShared;
use crate::sys::mutex::{Held, RobustMutex, AREA_LEN};

/// A window `[ptr, ptr + len)` on a shared mapping that lives at least as long as `'a`.
#[derive(Clone, Copy)]
pub(crate) struct SharedMem<'a> {
    ptr: NonNull<u8>,
    len: usize,
    /// Borrowed shared memory whose bytes may change under us: like `&'a [UnsafeCell<u8>]`.
    _memory: PhantomData<&'a [UnsafeCell<u8>]>,
}

impl std::fmt::Debug for SharedMem<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMem")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .finish()
    }
}

// SAFETY: a SharedMem is a borrowed window on memory that several processes (and so several
// threads) use at once by design; every access through it is atomic or a copy, and the
// two `unsafe` slice accessors leave exclusivity to their callers. Nothing in it is tied to
// the thread that made it.
unsafe impl Send for SharedMem<'_> {}
// SAFETY: as for Send: `&SharedMem` allows only the same atomic or copying accesses.
unsafe impl Sync for SharedMem<'_> {}

/// The standard atomic integer types, which may be placed over shared memory.
pub(crate) trait AtomicWord: Sync + private::Sealed {}

mod private {
    pub(crate) trait Sealed {}
}

macro_rules! atomic_words {
    ($($a:ty),*) => {$(
        impl private::Sealed for $a {}
        impl AtomicWord for $a {}
    )*};
}
atomic_words!(AtomicU8, AtomicI8, AtomicU16, AtomicI16, AtomicU32, AtomicI32, AtomicU64, AtomicI64);

impl<'a> SharedMem<'a> {
    /// A window on `len` bytes at `ptr`.
    ///
    /// # Safety
    /// `[ptr, ptr + len)` is one mapping, readable and writable, that stays mapped for `'a`;
    /// within this process its bytes are accessed only through `SharedMem`s (atomically, by
    /// copies, or by the exclusive slices that the `unsafe` accessors' callers argue for)
    /// while `'a` lasts.
    pub(crate) unsafe fn new(ptr: *mut u8, len: usize) -> SharedMem<'a> {
        SharedMem {
            ptr: NonNull::new(ptr).expect("SharedMem over a null pointer"),
            len,
            _memory: PhantomData,
        }
    }

    /// Length of the window in bytes.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Start of the window, for diagnostics and address arithmetic (never dereferenced
    /// outside this module and `sys/`).
    #[inline]
    pub(crate) fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// Whether `[off, off + len)` lies inside the window.
    #[inline]
    fn fits(&self, off: usize, len: usize) -> bool {
        off.checked_add(len).is_some_and(|end| end <= self.len)
    }

    /// The pointer to `[off, off + len)`, checked to lie inside the window and to be
    /// `align`-aligned (a panic naming the bug otherwise). Inlined, with the panics out of
    /// line, so that checks of constant offsets fold and the rest cost a compare each.
    #[inline]
    #[track_caller]
    fn check(&self, off: usize, len: usize, align: usize, what: &str) -> *mut u8 {
        if !self.fits(off, len) {
            out_of_bounds(what, off, len, self.len);
        }
        // SAFETY: off + len <= self.len, so the pointer stays inside the window (or one
        // past its end when len == 0).
        let p = unsafe { self.ptr.as_ptr().add(off) };
        if (p as usize) % align != 0 {
            misaligned(what, off, align);
        }
        p
    }

    /// The sub-window `[off, off + len)`, or `None` when it does not fit (for offsets and
    /// lengths that come from shared memory and may be hostile).
    #[inline]
    pub(crate) fn get(&self, off: usize, len: usize) -> Option<SharedMem<'a>> {
        self.fits(off, len).then(|| SharedMem {
            // SAFETY: in bounds (checked just above), so non-null and inside the mapping.
            ptr: unsafe { NonNull::new_unchecked(self.ptr.as_ptr().add(off)) },
            len,
            _memory: PhantomData,
        })
    }

    /// The sub-window `[off, off + len)`; panics (a bug in ndshm's layout) when it does not
    /// fit.
    #[inline]
    #[track_caller]
    pub(crate) fn sub(&self, off: usize, len: usize) -> SharedMem<'a> {
        match self.get(off, len) {
            Some(w) => w,
            None => out_of_bounds("window", off, len, self.len),
        }
    }

    /// The atomic `A` at byte `off` (in bounds and aligned, or a panic naming the bug).
    #[inline]
    #[track_caller]
    pub(crate) fn atomic<A: AtomicWord>(&self, off: usize) -> &'a A {
        let p = self.check(off, size_of::<A>(), align_of::<A>(), "atomic");
        // SAFETY: in bounds and aligned for A (checked); every bit pattern is a valid
        // integer atomic; the mapping lives for 'a (the constructor's contract) and all
        // accesses to these bytes are atomic or copies (same contract). Atomics in memory
        // shared between processes are exactly what std's atomics are documented to allow
        // for lock-free sizes, which these all are on the supported targets.
        unsafe { &*p.cast::<A>() }
    }

    /// The `AtomicU64` at byte `off`.
    #[inline]
    #[track_caller]
    pub(crate) fn u64(&self, off: usize) -> &'a AtomicU64 {
        self.atomic(off)
    }

    /// The atomic `A` at byte `off`, without the check: for a structure that validated its
    /// layout against the window once and derives every offset from it (the queue ring,
    /// whose accessors run several times per item).
    ///
    /// # Safety
    /// `off + size_of::<A>() <= self.len()`, and `self.addr() + off` is aligned for `A`.
    #[inline]
    pub(crate) unsafe fn atomic_unchecked<A: AtomicWord>(&self, off: usize) -> &'a A {
        debug_assert!(
            self.fits(off, size_of::<A>()),
            "atomic at {off} past {}",
            self.len
        );
        debug_assert!(
            (self.addr() + off) % align_of::<A>() == 0,
            "misaligned atomic"
        );
        // SAFETY: in bounds and aligned for A (the caller's contract); the rest as in
        // `atomic`.
        unsafe { &*self.ptr.as_ptr().add(off).cast::<A>() }
    }

    /// The `AtomicU32` at byte `off`.
    #[inline]
    #[track_caller]
    pub(crate) fn u32(&self, off: usize) -> &'a AtomicU32 {
        self.atomic(off)
    }

    /// The robust process-shared mutex whose 64-byte area starts at byte `off`.
    #[inline]
    #[track_caller]
    pub(crate) fn robust_mutex(&self, off: usize) -> &'a RobustMutex {
        let p = self.check(off, AREA_LEN, align_of::<RobustMutex>(), "lock area");
        // SAFETY: the area is in bounds and aligned (checked) and stays mapped for 'a; by
        // the layout of every ndshm segment, these bytes are only ever used as a
        // RobustMutex, by every process (an area never initialised is refused by the
        // mutex itself, through its state word).
        unsafe { RobustMutex::from_ptr(p) }
    }

    /// Copies `dst.len()` bytes at `off` out of shared memory.
    #[inline]
    #[track_caller]
    pub(crate) fn read(&self, off: usize, dst: &mut [u8]) {
        let p = self.check(off, dst.len(), 1, "read");
        // SAFETY: the source is in bounds (checked) and mapped for 'a; `dst` is ordinary
        // memory of this thread, so the ranges cannot overlap. The bytes copied are
        // treated as untrusted data by every caller (validated after the copy), so a peer
        // that writes them concurrently, against the protocol, yields garbage, not
        // unsoundness in the caller's logic.
        unsafe { std::ptr::copy_nonoverlapping(p, dst.as_mut_ptr(), dst.len()) }
    }

    /// Copies `src` into shared memory at `off`.
    #[inline]
    #[track_caller]
    pub(crate) fn write(&self, off: usize, src: &[u8]) {
        let p = self.check(off, src.len(), 1, "write");
        // SAFETY: the destination is in bounds (checked), mapped writable for 'a, and not
        // referenced as a Rust slice anywhere in this process (the constructor's contract);
        // `src` is ordinary memory, so the ranges cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), p, src.len()) }
    }

    /// Sets `len` bytes at `off` to zero.
    #[inline]
    #[track_caller]
    pub(crate) fn zero(&self, off: usize, len: usize) {
        let p = self.check(off, len, 1, "zero");
        // SAFETY: as for `write`.
        unsafe { std::ptr::write_bytes(p, 0, len) }
    }

    /// Copies the `T` at `off` out of shared memory (any alignment).
    #[inline]
    #[track_caller]
    pub(crate) fn read_pod<T: Pod>(&self, off: usize) -> T {
        let mut v = T::zeroed();
        self.read(off, bytemuck::bytes_of_mut(&mut v));
        v
    }

    /// Copies `v` into shared memory at `off` (any alignment).
    #[inline]
    #[track_caller]
    pub(crate) fn write_pod<T: Pod>(&self, off: usize, v: &T) {
        self.write(off, bytemuck::bytes_of(v));
    }

    /// The bytes `[off, off + len)` as a slice, for zero-copy reads.
    ///
    /// # Safety
    /// While the slice lives, no process writes those bytes (the caller holds them under
    /// the protocol that owns them, e.g. a claimed ring slot).
    #[inline]
    #[track_caller]
    pub(crate) unsafe fn slice(&self, off: usize, len: usize) -> &'a [u8] {
        let p = self.check(off, len, 1, "slice");
        // SAFETY: in bounds (checked) and mapped for 'a; no writer while it lives (the
        // caller's contract).
        unsafe { std::slice::from_raw_parts(p, len) }
    }

    /// The bytes `[off, off + len)` as a mutable slice, for zero-copy writes.
    ///
    /// # Safety
    /// While the slice lives, no other process or thread reads or writes those bytes (the
    /// caller holds them exclusively under the protocol that owns them).
    #[inline]
    #[track_caller]
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice_mut(&self, off: usize, len: usize) -> &'a mut [u8] {
        let p = self.check(off, len, 1, "slice_mut");
        // SAFETY: in bounds (checked), mapped writable for 'a; exclusive while it lives
        // (the caller's contract).
        unsafe { std::slice::from_raw_parts_mut(p, len) }
    }

    /// The `T` at byte `off` as a zero-copy `&mut T` for as long as `held` is held: the
    /// in-place access of `SharedStruct`'s guard. `held` is moved in, so each hold yields
    /// one such borrow; `off` must be aligned for `T` (checked, as for atomics).
    ///
    /// Crate-internal contract (what makes the `&mut T` exclusive): `held` is the lock that
    /// guards these bytes, and every process reads and writes them only while holding that
    /// lock — the layout of a struct segment, whose value is reached only under the
    /// region's lock. Callers pass the region's own lock, never another.
    #[track_caller]
    pub(crate) fn lock_pod<T: Pod>(&self, off: usize, held: Held<'a>) -> LockedPod<'a, T> {
        let p = self.check(off, size_of::<T>(), align_of::<T>(), "locked value");
        LockedPod {
            // In bounds, so non-null (the window is).
            ptr: NonNull::new(p.cast::<T>()).expect("in-bounds pointer is non-null"),
            _held: held,
            _memory: PhantomData,
        }
    }

    /// The trailer of `seg` ([`TRAILER_LEN`] bytes), when the handle is writable and the
    /// segment has an ndshm trailer; `None` otherwise (a read-only mapping must not be
    /// written through atomics, and a plain `.npy` file has no trailer).
    pub(crate) fn segment_trailer(seg: &'a Segment) -> Option<SharedMem<'a>> {
        if !seg.is_writable() || seg.info().is_none() {
            return None;
        }
        // SAFETY: a validated trailer ends the mapping (`info` is `Some`), so the mapping
        // is at least TRAILER_LEN bytes and this is its last TRAILER_LEN bytes: readable,
        // writable (checked), mapped while `seg` is borrowed for 'a. Within this process,
        // trailer bytes are only reached through SharedMem: the one module that forms
        // references to segment memory, `array/view.rs`, covers an array's data range,
        // which lies inside the payload, before the trailer.
        Some(unsafe { SharedMem::new(seg.as_ptr().add(seg.len() - TRAILER_LEN), TRAILER_LEN) })
    }

    /// The whole mapping of `seg` (payload, padding, trailer), for the sync, ipc and
    /// manager types; `None` for a read-only handle, a segment without an ndshm trailer, or
    /// an array (whose data the array views reach as slices).
    #[inline]
    pub(crate) fn segment_whole(seg: &'a Segment) -> Option<SharedMem<'a>> {
        match seg.info() {
            Some(info) if seg.is_writable() && info.kind != SegmentKind::Array => {
                // SAFETY: the whole mapping, readable and writable (checked), mapped while
                // `seg` is borrowed for 'a. It is not an array segment (checked), so no
                // array view covers it: within this process its bytes are reached only
                // through SharedMem.
                Some(unsafe { SharedMem::new(seg.as_ptr(), seg.len()) })
            }
            _ => None,
        }
    }

    /// The whole of an anonymous shared mapping.
    #[inline]
    pub(crate) fn anon(mem: &'a AnonShared) -> SharedMem<'a> {
        // SAFETY: `mem` is one mapping of `len()` bytes, readable and writable, mapped
        // while it is borrowed for 'a; ndshm uses anonymous shared memory only for the
        // sync, ipc and manager types (`Region`), which reach it only through SharedMem.
        unsafe { SharedMem::new(mem.as_ptr(), mem.len()) }
    }
}

/// Owners of shared memory that stays mapped at one address for as long as they live,
/// whether or not the owner value moves (an `mmap`, not a `Vec`), and that never remap it
/// through `&self`.
///
/// # Safety
/// `payload_window` returns the same window (address and length) on every call for the
/// owner's whole life, and that memory stays mapped until the owner is dropped.
pub(crate) unsafe trait FixedMapping {
    /// The window [`Anchored`] keeps.
    fn payload_window(&self) -> SharedMem<'_>;
}

// SAFETY: a Region's payload is the start of one mapping (a named segment's or an
// anonymous one) made when the Region was made and unmapped only when it is dropped (its
// backing is taken only in `drop`); no `&self` method remaps it, and moving the Region
// moves the handle, not the mapping.
unsafe impl FixedMapping for crate::segment::region::Region {
    #[inline]
    fn payload_window(&self) -> SharedMem<'_> {
        self.payload()
    }
}

/// An owner of shared memory together with its payload window, taken once: the hot paths
/// of the queues reach their memory without asking the owner again for every operation.
pub(crate) struct Anchored<O> {
    owner: O,
    ptr: NonNull<u8>,
    len: usize,
}

impl<O: FixedMapping> Anchored<O> {
    /// Takes `owner`'s window once.
    pub(crate) fn new(owner: O) -> Anchored<O> {
        let w = owner.payload_window();
        let (ptr, len) = (w.ptr, w.len);
        Anchored { owner, ptr, len }
    }

    /// The owner.
    #[inline]
    pub(crate) fn owner(&self) -> &O {
        &self.owner
    }

    /// The owner's window, borrowed for as long as `self` is: the same one its
    /// `payload_window` gives (the trait's contract), without asking it.
    #[inline]
    pub(crate) fn mem(&self) -> SharedMem<'_> {
        SharedMem {
            ptr: self.ptr,
            len: self.len,
            _memory: PhantomData,
        }
    }
}

impl<O: std::fmt::Debug> std::fmt::Debug for Anchored<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.owner.fmt(f)
    }
}

// SAFETY: the pointer is only a cache of the owner's window: sending or sharing an
// Anchored is sending or sharing its owner, and the window it hands out is the owner's
// own (SharedMem is Send and Sync).
unsafe impl<O: Send> Send for Anchored<O> {}
// SAFETY: as for Send.
unsafe impl<O: Sync> Sync for Anchored<O> {}

/// The panic of an access outside its window (a bug in ndshm's layout arithmetic), out of
/// line so that the inlined checks stay a compare and a branch.
#[cold]
#[inline(never)]
#[track_caller]
fn out_of_bounds(what: &str, off: usize, len: usize, window: usize) -> ! {
    panic!("ndshm bug: {what} at offset {off} (+{len} bytes) outside a {window}-byte window")
}

/// The panic of a misaligned atomic (a bug in ndshm's layout arithmetic), out of line.
#[cold]
#[inline(never)]
#[track_caller]
fn misaligned(what: &str, off: usize, align: usize) -> ! {
    panic!("ndshm bug: {what} at offset {off} is not {align}-byte aligned")
}

/// A `T` in shared memory, borrowed exclusively while a robust lock is held (see
/// [`SharedMem::lock_pod`]); dropping it unlocks.
pub(crate) struct LockedPod<'a, T> {
    ptr: NonNull<T>,
    /// Unlocks when dropped, after the last use of `ptr` (`!Send`: the locking thread).
    _held: Held<'a>,
    _memory: PhantomData<&'a mut T>,
}

impl<T: Pod> std::ops::Deref for LockedPod<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: `ptr` is in bounds, aligned for T and mapped for 'a (checked in
        // `lock_pod`); every bit pattern is a valid T (Pod); no process writes these bytes
        // while the lock is held by this thread (lock_pod's contract), and in this process
        // the only path to them is this LockedPod, which owns the hold.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: Pod> std::ops::DerefMut for LockedPod<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only borrow of the value, and
        // no other process reads or writes it while the lock is held (lock_pod's contract).
        unsafe { self.ptr.as_mut() }
    }
}

impl<T> std::fmt::Debug for LockedPod<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LockedPod")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    fn with_window<R>(len: usize, f: impl FnOnce(SharedMem<'_>) -> R) -> R {
        let mut buf = vec![0u64; len.div_ceil(8)];
        // SAFETY: a private, 8-byte aligned buffer of at least `len` bytes, used only
        // through the window for the duration of the call.
        let mem = unsafe { SharedMem::new(buf.as_mut_ptr().cast(), len) };
        f(mem)
    }

    #[test]
    fn atomics_copies_and_pods_round_trip() {
        with_window(64, |m| {
            m.u64(8).store(7, Ordering::Relaxed);
            assert_eq!(m.u64(8).load(Ordering::Relaxed), 7);
            m.write(16, b"hello");
            let mut out = [0u8; 5];
            m.read(16, &mut out);
            assert_eq!(&out, b"hello");
            m.write_pod(21, &0x0102_0304u32); // unaligned on purpose
            assert_eq!(m.read_pod::<u32>(21), 0x0102_0304);
            m.zero(16, 5);
            m.read(16, &mut out);
            assert_eq!(out, [0; 5]);
            assert_eq!(m.sub(8, 8).u64(0).load(Ordering::Relaxed), 7);
        });
    }

    #[test]
    fn get_refuses_windows_that_do_not_fit() {
        with_window(32, |m| {
            assert!(m.get(0, 32).is_some());
            assert!(m.get(1, 32).is_none());
            assert!(m.get(usize::MAX, 2).is_none());
        });
    }

    #[test]
    #[should_panic(expected = "outside a 16-byte window")]
    fn out_of_bounds_atomics_panic_naming_the_bug() {
        with_window(16, |m| {
            m.u64(16);
        });
    }

    #[test]
    #[should_panic(expected = "not 8-byte aligned")]
    fn misaligned_atomics_panic_naming_the_bug() {
        with_window(16, |m| {
            m.u64(4);
        });
    }
}
