//! `SharedValue<T>`: one scalar in shared memory with atomic operations and its own lock:
//! Python's `multiprocessing.Value`.

use std::fmt;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

use crate::element::{DType, Element};
use crate::error::{Error, ErrorKind, Result};
use crate::segment::region::Region;
use crate::segment::trailer::SegmentKind;
use crate::segment::CreateOptions;
use crate::sync::lock::LockGuard;

mod private {
    pub trait Sealed {}
}

/// An element type with atomic operations: `i8 u8 i16 u16 i32 u32 i64 u64 f32 f64`.
///
/// Integers use the hardware atomic of their width (`fetch_add` wraps around, as
/// `AtomicI32::fetch_add` does); floats are stored as their bits in an atomic of their
/// width, and `fetch_add` is a compare-and-swap loop on those bits.
pub trait AtomicElement: Element + private::Sealed {
    #[doc(hidden)]
    /// # Safety
    /// `p` is aligned for `Self`, valid for `'static`, and only ever accessed atomically.
    unsafe fn load_at(p: *mut u8, order: Ordering) -> Self;
    #[doc(hidden)]
    /// # Safety
    /// As `load_at`.
    unsafe fn store_at(p: *mut u8, v: Self, order: Ordering);
    #[doc(hidden)]
    /// # Safety
    /// As `load_at`.
    unsafe fn swap_at(p: *mut u8, v: Self, order: Ordering) -> Self;
    #[doc(hidden)]
    /// # Safety
    /// As `load_at`.
    unsafe fn fetch_add_at(p: *mut u8, v: Self, order: Ordering) -> Self;
    #[doc(hidden)]
    /// # Safety
    /// As `load_at`.
    unsafe fn fetch_sub_at(p: *mut u8, v: Self, order: Ordering) -> Self;
    #[doc(hidden)]
    /// # Safety
    /// As `load_at`.
    unsafe fn compare_exchange_at(p: *mut u8, cur: Self, new: Self) -> Result<Self, Self>;
}

macro_rules! atomic_int {
    ($($t:ty => $a:ty),* $(,)?) => {$(
        impl private::Sealed for $t {}
        impl AtomicElement for $t {
            unsafe fn load_at(p: *mut u8, order: Ordering) -> Self {
                // SAFETY: forwarded: `p` is aligned, live and only accessed atomically.
                unsafe { <$a>::from_ptr(p.cast()) }.load(order) as $t
            }
            unsafe fn store_at(p: *mut u8, v: Self, order: Ordering) {
                // SAFETY: as in `load_at`.
                unsafe { <$a>::from_ptr(p.cast()) }.store(v as _, order)
            }
            unsafe fn swap_at(p: *mut u8, v: Self, order: Ordering) -> Self {
                // SAFETY: as in `load_at`.
                unsafe { <$a>::from_ptr(p.cast()) }.swap(v as _, order) as $t
            }
            unsafe fn fetch_add_at(p: *mut u8, v: Self, order: Ordering) -> Self {
                // SAFETY: as in `load_at`. Two's complement: unsigned wrapping addition of
                // the bits is signed wrapping addition.
                unsafe { <$a>::from_ptr(p.cast()) }.fetch_add(v as _, order) as $t
            }
            unsafe fn fetch_sub_at(p: *mut u8, v: Self, order: Ordering) -> Self {
                // SAFETY: as in `fetch_add_at`.
                unsafe { <$a>::from_ptr(p.cast()) }.fetch_sub(v as _, order) as $t
            }
            unsafe fn compare_exchange_at(p: *mut u8, cur: Self, new: Self) -> Result<Self, Self> {
                // SAFETY: as in `load_at`.
                unsafe { <$a>::from_ptr(p.cast()) }
                    .compare_exchange(cur as _, new as _, Ordering::AcqRel, Ordering::Acquire)
                    .map(|v| v as $t)
                    .map_err(|v| v as $t)
            }
        }
    )*};
}

atomic_int! {
    i8 => AtomicU8, u8 => AtomicU8, i16 => AtomicU16, u16 => AtomicU16,
    i32 => AtomicU32, u32 => AtomicU32, i64 => AtomicU64, u64 => AtomicU64,
}

macro_rules! atomic_float {
    ($($t:ty => $a:ty),* $(,)?) => {$(
        impl private::Sealed for $t {}
        impl AtomicElement for $t {
            unsafe fn load_at(p: *mut u8, order: Ordering) -> Self {
                // SAFETY: forwarded: `p` is aligned, live and only accessed atomically.
                <$t>::from_bits(unsafe { <$a>::from_ptr(p.cast()) }.load(order))
            }
            unsafe fn store_at(p: *mut u8, v: Self, order: Ordering) {
                // SAFETY: as in `load_at`.
                unsafe { <$a>::from_ptr(p.cast()) }.store(v.to_bits(), order)
            }
            unsafe fn swap_at(p: *mut u8, v: Self, order: Ordering) -> Self {
                // SAFETY: as in `load_at`.
                <$t>::from_bits(unsafe { <$a>::from_ptr(p.cast()) }.swap(v.to_bits(), order))
            }
            unsafe fn fetch_add_at(p: *mut u8, v: Self, order: Ordering) -> Self {
                // SAFETY: as in `load_at`.
                let a = unsafe { <$a>::from_ptr(p.cast()) };
                let fail = if order == Ordering::Release { Ordering::Relaxed } else {
                    match order { Ordering::AcqRel => Ordering::Acquire, o => o }
                };
                let mut cur = a.load(Ordering::Relaxed);
                loop {
                    let new = (<$t>::from_bits(cur) + v).to_bits();
                    match a.compare_exchange_weak(cur, new, order, fail) {
                        Ok(old) => return <$t>::from_bits(old),
                        Err(now) => cur = now,
                    }
                }
            }
            unsafe fn fetch_sub_at(p: *mut u8, v: Self, order: Ordering) -> Self {
                // SAFETY: forwarded.
                unsafe { Self::fetch_add_at(p, -v, order) }
            }
            unsafe fn compare_exchange_at(p: *mut u8, cur: Self, new: Self) -> Result<Self, Self> {
                // SAFETY: as in `load_at`.
                unsafe { <$a>::from_ptr(p.cast()) }
                    .compare_exchange(cur.to_bits(), new.to_bits(), Ordering::AcqRel, Ordering::Acquire)
                    .map(<$t>::from_bits)
                    .map_err(<$t>::from_bits)
            }
        }
    )*};
}

atomic_float! { f32 => AtomicU32, f64 => AtomicU64 }

/// Payload: the value (up to 8 bytes, zero-padded), then its element type code.
const PAYLOAD: usize = 16;

/// The code a value segment records for its element type (index in `DType::ALL` + 1).
fn dtype_code(d: DType) -> u64 {
    DType::ALL
        .iter()
        .position(|&x| x == d)
        .map_or(0, |i| i as u64 + 1)
}

/// One scalar in shared memory: Python's `multiprocessing.Value`, with atomic operations
/// and its own robust lock.
///
/// Python's type codes map to Rust types as [`DType::from_typecode`] says: `'b'` → `i8`,
/// `'B'` → `u8`, `'h'`/`'H'` → `i16`/`u16`, `'i'`/`'I'` → `i32`/`u32`, `'l'`/`'L'`/`'q'`/`'Q'`
/// → `i64`/`u64`, `'f'` → `f32`, `'d'` → `f64`. So `Value('i', 0)` is
/// `SharedValue::<i32>::new(0)`.
///
/// Every operation is atomic, so the seed's "race condition" counter is exact here with
/// [`fetch_add`](SharedValue::fetch_add); for compound updates (read, compute, write, or
/// updates spanning several values) take [`lock`](SharedValue::lock), Python's
/// `get_lock()`. (`compare_exchange` on floats compares bits: `-0.0 != 0.0`, and a NaN
/// equals the same NaN.)
///
/// Opening a value by name is safe: all access is atomic or under the lock, so no other
/// process can break what this one reads.
///
/// # Examples
/// ```
/// use ndshm::SharedValue;
/// let counter = SharedValue::<i32>::new(0)?; // Value('i', 0)
/// ndshm::scope(|s| -> ndshm::Result<()> {
///     for _ in 0..2 {
///         s.spawn(|| for _ in 0..1000 { counter.fetch_add(1); })?;
///     }
///     Ok(())
/// })?;
/// assert_eq!(counter.load(), 2000);
/// # Ok::<(), ndshm::Error>(())
/// ```
pub struct SharedValue<T: AtomicElement> {
    region: Region,
    _marker: std::marker::PhantomData<T>,
}

impl<T: AtomicElement> SharedValue<T> {
    fn init(value: T) -> impl FnOnce(&mut [u8]) -> Result<()> {
        move |payload: &mut [u8]| {
            payload[..std::mem::size_of::<T>()].copy_from_slice(bytemuck::bytes_of(&value));
            payload[8..16].copy_from_slice(&dtype_code(T::DTYPE).to_le_bytes());
            Ok(())
        }
    }

    fn wrap(region: Region) -> Self {
        SharedValue {
            region,
            _marker: std::marker::PhantomData,
        }
    }

    /// An anonymous value, shared with the children forked after it was made.
    ///
    /// # Errors
    /// An OS error when the shared mapping fails.
    pub fn new(value: T) -> Result<Self> {
        Ok(Self::wrap(Region::anonymous(PAYLOAD, Self::init(value))?))
    }

    /// Creates value segment `name` holding `value`.
    ///
    /// # Errors
    /// The errors of segment creation ([`ErrorKind::AlreadyExists`], …).
    pub fn create(segment: impl Into<CreateOptions>, value: T) -> Result<Self> {
        let opts = &segment.into();
        let init = Self::init(value);
        let region = Region::create(opts, SegmentKind::Value, PAYLOAD, |p| init(p))?;
        Ok(Self::wrap(region))
    }

    /// Attaches value segment `name` (safe: see the type's docs).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`], [`ErrorKind::KindMismatch`] when `name` is not a value,
    /// [`ErrorKind::TypeMismatch`] when it holds another element type,
    /// [`ErrorKind::AlreadyOpen`].
    pub fn open(name: &str) -> Result<Self> {
        let region = Region::open(name, SegmentKind::Value, PAYLOAD)?;
        // SAFETY: the payload is at least PAYLOAD bytes (checked by `Region::open`) and
        // page-aligned, so bytes 8..16 are an aligned u64; it was written before the
        // segment was published and is only read since.
        let code = unsafe { AtomicU64::from_ptr(region.payload_ptr().add(8).cast()) }
            .load(Ordering::Acquire);
        if code != dtype_code(T::DTYPE) {
            let found = (code as usize)
                .checked_sub(1)
                .and_then(|i| DType::ALL.get(i))
                .map_or_else(|| format!("unknown type code {code}"), |d| d.to_string());
            return Err(Error::new(
                ErrorKind::TypeMismatch,
                format!(
                    "value segment '{name}' holds a {found}, not a {}; open it with that type",
                    T::DTYPE
                ),
            ));
        }
        Ok(SharedValue {
            region,
            _marker: std::marker::PhantomData,
        })
    }

    fn ptr(&self) -> *mut u8 {
        self.region.payload_ptr()
    }

    /// The current value (Python's `v.value`).
    pub fn load(&self) -> T {
        // SAFETY: the payload is page-aligned, 8 bytes long, lives as long as `&self`, and
        // every process accesses it only through these atomic operations.
        unsafe { T::load_at(self.ptr(), Ordering::Acquire) }
    }

    /// Sets the value.
    pub fn store(&self, value: T) {
        // SAFETY: as in `load`.
        unsafe { T::store_at(self.ptr(), value, Ordering::Release) }
    }

    /// Sets the value and returns the previous one.
    pub fn swap(&self, value: T) -> T {
        // SAFETY: as in `load`.
        unsafe { T::swap_at(self.ptr(), value, Ordering::AcqRel) }
    }

    /// Adds `delta` atomically (wrapping for integers) and returns the previous value.
    pub fn fetch_add(&self, delta: T) -> T {
        // SAFETY: as in `load`.
        unsafe { T::fetch_add_at(self.ptr(), delta, Ordering::AcqRel) }
    }

    /// Subtracts `delta` atomically and returns the previous value.
    pub fn fetch_sub(&self, delta: T) -> T {
        // SAFETY: as in `load`.
        unsafe { T::fetch_sub_at(self.ptr(), delta, Ordering::AcqRel) }
    }

    /// Stores `new` if the value is `current` (bitwise for floats); returns the previous
    /// value, as `Ok` when it was replaced and `Err` when not.
    ///
    /// # Errors
    /// `Err(actual)` when the value was not `current`.
    pub fn compare_exchange(&self, current: T, new: T) -> std::result::Result<T, T> {
        // SAFETY: as in `load`.
        unsafe { T::compare_exchange_at(self.ptr(), current, new) }
    }

    /// Applies `f` atomically (a compare-and-swap loop) and returns the previous value.
    pub fn update(&self, mut f: impl FnMut(T) -> T) -> T {
        let mut cur = self.load();
        loop {
            match self.compare_exchange(cur, f(cur)) {
                Ok(old) => return old,
                Err(now) => cur = now,
            }
        }
    }

    /// Takes the value's own robust lock (Python's `get_lock()`), for compound updates:
    /// every process (and thread) that updates the value this way excludes the others. The
    /// lock behaves as [`Lock`](crate::Lock)'s does: robust, owned by the locking thread,
    /// not reentrant.
    ///
    /// # Panics
    /// When this thread holds the value's lock already (use
    /// [`lock_timeout`](Self::lock_timeout) to get [`ErrorKind::WouldDeadlock`] instead).
    pub fn lock(&self) -> LockGuard<'_> {
        self.region.lock().lock_guard()
    }

    /// [`lock`](Self::lock) without waiting: `None` when a live thread holds it, this one
    /// included.
    pub fn try_lock(&self) -> Option<LockGuard<'_>> {
        self.region.lock().try_lock_guard()
    }

    /// [`lock`](Self::lock), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`], or [`ErrorKind::WouldDeadlock`] at once when this thread
    /// holds the lock already.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<LockGuard<'_>> {
        self.region
            .lock()
            .lock_timeout_guard(timeout, "the value's lock")
    }

    /// The segment name, or `None` for an anonymous value.
    pub fn name(&self) -> Option<&str> {
        self.region.name()
    }
}

impl<T: AtomicElement> fmt::Debug for SharedValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedValue")
            .field("name", &self.name())
            .field("value", &self.load())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomics_for_every_type() {
        let v = SharedValue::<i8>::new(-3).unwrap();
        assert_eq!(v.fetch_add(5), -3);
        assert_eq!(v.load(), 2);
        assert_eq!(v.fetch_add(127), 2);
        assert_eq!(v.load(), -127); // wraps
        let f = SharedValue::<f64>::new(1.5).unwrap();
        assert_eq!(f.fetch_add(2.25), 1.5);
        assert_eq!(f.fetch_sub(0.75), 3.75);
        assert_eq!(f.compare_exchange(3.0, 9.0), Ok(3.0));
        assert_eq!(f.compare_exchange(3.0, 1.0), Err(9.0));
        assert_eq!(f.swap(-0.5), 9.0);
        assert_eq!(f.update(|x| x * 4.0), -0.5);
        assert_eq!(f.load(), -2.0);
        let u = SharedValue::<u16>::new(0).unwrap();
        assert_eq!(u.fetch_sub(1), 0);
        assert_eq!(u.load(), u16::MAX);
        let g = SharedValue::<f32>::new(0.0).unwrap();
        g.store(2.5);
        assert_eq!(g.load(), 2.5);
    }
}
