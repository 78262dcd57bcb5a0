//! `SharedValue<T>`: one scalar in shared memory with atomic operations and its own lock:
//! Python's `multiprocessing.Value`.

use std::fmt;
use std::sync::atomic::{AtomicI16, AtomicI32, AtomicI64, AtomicI8};
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::element::{DType, Element};
use crate::error::{Error, ErrorKind, Result};
use crate::segment::region::Region;
use crate::segment::shared_mem::SharedMem;
use crate::segment::trailer::SegmentKind;
use crate::segment::{CreateOptions, MAX_NAME_LEN};
use crate::sync::lock::{Lock, LockGuard};

mod private {
    use crate::segment::shared_mem::SharedMem;
    use std::sync::atomic::Ordering;

    /// The atomic operations of an [`AtomicElement`](super::AtomicElement), on the value
    /// word at the start of a `SharedMem` window (sealed: only ndshm implements it).
    #[allow(private_interfaces)]
    pub trait Sealed: Sized {
        fn load_in(mem: SharedMem<'_>, order: Ordering) -> Self;
        fn store_in(mem: SharedMem<'_>, v: Self, order: Ordering);
        fn swap_in(mem: SharedMem<'_>, v: Self, order: Ordering) -> Self;
        fn fetch_add_in(mem: SharedMem<'_>, v: Self, order: Ordering) -> Self;
        fn fetch_sub_in(mem: SharedMem<'_>, v: Self, order: Ordering) -> Self;
        fn compare_exchange_in(mem: SharedMem<'_>, cur: Self, new: Self) -> Result<Self, Self>;
    }
}

/// An element type with atomic operations: `i8 u8 i16 u16 i32 u32 i64 u64 f32 f64`.
///
/// Integers use the hardware atomic of their width (`fetch_add` wraps around, as
/// `AtomicI32::fetch_add` does); floats are stored as their bits in an atomic of their
/// width, and `fetch_add` is a compare-and-swap loop on those bits.
///
/// # Examples
/// ```
/// use ndshm::{AtomicElement, SharedValue};
/// fn bump<T: AtomicElement>(v: &SharedValue<T>, by: T) -> T {
///     v.fetch_add(by)
/// }
/// let ints = SharedValue::new(1u32)?;
/// let floats = SharedValue::new(0.5f64)?;
/// assert_eq!(bump(&ints, 2), 1);
/// assert_eq!(bump(&floats, 0.25), 0.5);
/// assert_eq!((ints.load(), floats.load()), (3, 0.75));
/// # Ok::<(), ndshm::Error>(())
/// ```
pub trait AtomicElement: Element + private::Sealed {}

macro_rules! atomic_int {
    ($($t:ty => $a:ty),* $(,)?) => {$(
        #[allow(private_interfaces)] // sealed: the methods are unreachable outside ndshm
        impl private::Sealed for $t {
            fn load_in(mem: SharedMem<'_>, order: Ordering) -> Self {
                mem.atomic::<$a>(0).load(order)
            }
            fn store_in(mem: SharedMem<'_>, v: Self, order: Ordering) {
                mem.atomic::<$a>(0).store(v, order)
            }
            fn swap_in(mem: SharedMem<'_>, v: Self, order: Ordering) -> Self {
                mem.atomic::<$a>(0).swap(v, order)
            }
            fn fetch_add_in(mem: SharedMem<'_>, v: Self, order: Ordering) -> Self {
                mem.atomic::<$a>(0).fetch_add(v, order)
            }
            fn fetch_sub_in(mem: SharedMem<'_>, v: Self, order: Ordering) -> Self {
                mem.atomic::<$a>(0).fetch_sub(v, order)
            }
            fn compare_exchange_in(mem: SharedMem<'_>, cur: Self, new: Self) -> Result<Self, Self> {
                mem.atomic::<$a>(0)
                    .compare_exchange(cur, new, Ordering::AcqRel, Ordering::Acquire)
            }
        }
        impl AtomicElement for $t {}
    )*};
}

atomic_int! {
    i8 => AtomicI8, u8 => AtomicU8, i16 => AtomicI16, u16 => AtomicU16,
    i32 => AtomicI32, u32 => AtomicU32, i64 => AtomicI64, u64 => AtomicU64,
}

/// The failure ordering that goes with a compare-and-swap's success ordering `order`.
fn failure_order(order: Ordering) -> Ordering {
    match order {
        Ordering::Release => Ordering::Relaxed,
        Ordering::AcqRel => Ordering::Acquire,
        o => o,
    }
}

macro_rules! atomic_float {
    ($($t:ty => $a:ty),* $(,)?) => {$(
        #[allow(private_interfaces)] // sealed: the methods are unreachable outside ndshm
        impl private::Sealed for $t {
            fn load_in(mem: SharedMem<'_>, order: Ordering) -> Self {
                <$t>::from_bits(mem.atomic::<$a>(0).load(order))
            }
            fn store_in(mem: SharedMem<'_>, v: Self, order: Ordering) {
                mem.atomic::<$a>(0).store(v.to_bits(), order)
            }
            fn swap_in(mem: SharedMem<'_>, v: Self, order: Ordering) -> Self {
                <$t>::from_bits(mem.atomic::<$a>(0).swap(v.to_bits(), order))
            }
            fn fetch_add_in(mem: SharedMem<'_>, v: Self, order: Ordering) -> Self {
                let a = mem.atomic::<$a>(0);
                let fail = failure_order(order);
                let mut cur = a.load(Ordering::Relaxed);
                loop {
                    let new = (<$t>::from_bits(cur) + v).to_bits();
                    match a.compare_exchange_weak(cur, new, order, fail) {
                        Ok(old) => return <$t>::from_bits(old),
                        Err(now) => cur = now,
                    }
                }
            }
            fn fetch_sub_in(mem: SharedMem<'_>, v: Self, order: Ordering) -> Self {
                Self::fetch_add_in(mem, -v, order)
            }
            fn compare_exchange_in(mem: SharedMem<'_>, cur: Self, new: Self) -> Result<Self, Self> {
                mem.atomic::<$a>(0)
                    .compare_exchange(cur.to_bits(), new.to_bits(), Ordering::AcqRel, Ordering::Acquire)
                    .map(<$t>::from_bits)
                    .map_err(<$t>::from_bits)
            }
        }
        impl AtomicElement for $t {}
    )*};
}

atomic_float! { f32 => AtomicU32, f64 => AtomicU64 }

/// Payload: the value (up to 8 bytes, zero-padded), then its element type code.
const PAYLOAD: usize = 16;
/// Payload of a value guarded by a named [`Lock`]: as [`PAYLOAD`], then the lock record
/// (`LOCK_NAMED`), the lock name's length and its bytes.
const P_LOCK: usize = 16;
const P_LOCK_LEN: usize = 24;
const P_LOCK_NAME: usize = 32;
const PAYLOAD_SHARED: usize = P_LOCK_NAME + MAX_NAME_LEN;
/// The lock record of a value guarded by the named lock whose name follows.
const LOCK_NAMED: u64 = u64::from_le_bytes(*b"LOCKNAME");

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
/// # Several values under one lock
/// Python's `Value('i', 0, lock=lock)` is [`with_lock`](SharedValue::with_lock) (anonymous)
/// or [`create_with_lock`](SharedValue::create_with_lock) (named): the value's
/// [`lock`](SharedValue::lock) then takes that [`Lock`], so a compound update spanning
/// several values is one step for every process. A named value records its lock's name,
/// and [`open`](SharedValue::open) opens that lock too. (Python's `lock=False`, no lock at
/// all, has no counterpart: an unused lock costs nothing.)
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
    /// The lock that guards the value when it is not the region's own.
    shared_lock: Option<Arc<Lock>>,
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
            shared_lock: None,
            _marker: std::marker::PhantomData,
        }
    }

    /// An anonymous value, shared with the children forked after it was made.
    ///
    /// # Errors
    /// An OS error when the shared mapping fails.
    ///
    /// # Examples
    /// ```
    /// let hits = ndshm::SharedValue::new(0u64)?; // Value('Q', 0)
    /// hits.fetch_add(1); // and so may every child forked from now on
    /// assert_eq!(hits.load(), 1);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn new(value: T) -> Result<Self> {
        Ok(Self::wrap(Region::anonymous(PAYLOAD, Self::init(value))?))
    }

    /// Creates value segment `name` holding `value`.
    ///
    /// # Errors
    /// The errors of segment creation ([`ErrorKind::AlreadyExists`], …).
    ///
    /// # Examples
    /// ```
    /// use ndshm::{CreateOptions, SharedValue};
    /// let v = SharedValue::create(CreateOptions::unique(), 2.5f64)?;
    /// let same = SharedValue::<f64>::open(v.name().unwrap())?; // as another process would
    /// same.store(4.0);
    /// assert_eq!(v.load(), 4.0);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
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
    /// [`ErrorKind::TypeMismatch`] when it holds another element type. (A value may be
    /// opened any number of times, in this process too.)
    ///
    /// # Examples
    /// ```
    /// use ndshm::{ErrorKind, SharedValue};
    /// # let name = format!("doc-value-open-{}", std::process::id());
    /// let v = SharedValue::create(&name, 7i32)?;
    /// assert_eq!(SharedValue::<i32>::open(&name)?.load(), 7);
    /// let wrong = SharedValue::<f32>::open(&name).unwrap_err();
    /// assert_eq!(wrong.kind(), ErrorKind::TypeMismatch);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn open(name: &str) -> Result<Self> {
        let region = Region::open(name, SegmentKind::Value, PAYLOAD)?;
        // Written before the segment was published, only read since.
        let code = region.payload().u64(8).load(Ordering::Acquire);
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
        let shared_lock = Self::recorded_lock(&region, name)?;
        Ok(SharedValue {
            region,
            shared_lock,
            _marker: std::marker::PhantomData,
        })
    }

    /// The named lock a value segment records, opened (`None`: the value uses its own).
    fn recorded_lock(region: &Region, name: &str) -> Result<Option<Arc<Lock>>> {
        if region.payload_len() < PAYLOAD_SHARED {
            return Ok(None);
        }
        // Written before the segment was published, only read since.
        let mem = region.payload();
        if mem.u64(P_LOCK).load(Ordering::Acquire) != LOCK_NAMED {
            return Ok(None);
        }
        let len = mem.u64(P_LOCK_LEN).load(Ordering::Acquire) as usize;
        let mut bytes = vec![0u8; len.min(MAX_NAME_LEN)];
        mem.read(P_LOCK_NAME, &mut bytes);
        let lock_name = match std::str::from_utf8(&bytes) {
            Ok(n) if len <= MAX_NAME_LEN => n,
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidHeader,
                    format!("value segment '{name}' records an invalid lock name; corrupted"),
                ))
            }
        };
        match Lock::open(lock_name) {
            Ok(lock) => Ok(Some(Arc::new(lock))),
            Err(e) => Err(Error::new(
                e.kind(),
                format!(
                    "value segment '{name}' is guarded by lock '{lock_name}', which cannot be \
                     opened: {e}"
                ),
            )),
        }
    }

    /// An anonymous value guarded by `lock` instead of a lock of its own: Python's
    /// `Value('i', 0, lock=lock)`. Give several values the same lock, and a compound
    /// update of all of them is one step for every process.
    ///
    /// # Errors
    /// An OS error when the shared mapping fails.
    ///
    /// # Examples
    /// ```
    /// use std::sync::Arc;
    /// use ndshm::{Lock, SharedValue};
    /// let lock = Arc::new(Lock::new()?); // lock = Lock()
    /// let from = SharedValue::with_lock(100i64, &lock)?; // Value('q', 100, lock=lock)
    /// let to = SharedValue::with_lock(0i64, &lock)?; // Value('q', 0, lock=lock)
    /// {
    ///     let _g = from.lock(); // takes `lock`: `to` is guarded too
    ///     from.store(from.load() - 30);
    ///     to.store(to.load() + 30);
    ///     assert!(to.try_lock().is_none());
    /// }
    /// assert_eq!((from.load(), to.load()), (70, 30));
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn with_lock(value: T, lock: &Arc<Lock>) -> Result<Self> {
        let mut v = Self::new(value)?;
        v.shared_lock = Some(Arc::clone(lock));
        Ok(v)
    }

    /// Creates value segment `name` holding `value`, guarded by the named `lock`; the
    /// segment records the lock's name, so that [`open`](Self::open) in any process gets
    /// the same lock.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when `lock` is anonymous (another process could not
    /// find it by name: make it with [`Lock::create`]), and the errors of segment
    /// creation.
    ///
    /// # Examples
    /// ```
    /// use std::sync::Arc;
    /// use ndshm::{CreateOptions, Lock, SharedValue};
    /// let lock = Arc::new(Lock::create(CreateOptions::unique())?);
    /// let a = SharedValue::create_with_lock(CreateOptions::unique(), 1u32, &lock)?;
    /// let b = SharedValue::create_with_lock(CreateOptions::unique(), 2u32, &lock)?;
    /// // As another process would: both values come back guarded by the same lock.
    /// let a2 = SharedValue::<u32>::open(a.name().unwrap())?;
    /// let b2 = SharedValue::<u32>::open(b.name().unwrap())?;
    /// let _g = a2.lock();
    /// assert!(b2.try_lock().is_none() && lock.is_locked());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn create_with_lock(
        segment: impl Into<CreateOptions>,
        value: T,
        lock: &Arc<Lock>,
    ) -> Result<Self> {
        let Some(lock_name) = lock.name() else {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "a named value needs a named lock (another process opening the value could \
                 not find an anonymous one): make the lock with Lock::create",
            ));
        };
        let lock_name = lock_name.as_bytes().to_vec();
        let opts = &segment.into();
        let init = Self::init(value);
        let region = Region::create(opts, SegmentKind::Value, PAYLOAD_SHARED, |p| {
            init(p)?;
            p[P_LOCK..P_LOCK + 8].copy_from_slice(&LOCK_NAMED.to_le_bytes());
            p[P_LOCK_LEN..P_LOCK_LEN + 8].copy_from_slice(&(lock_name.len() as u64).to_le_bytes());
            p[P_LOCK_NAME..P_LOCK_NAME + lock_name.len()].copy_from_slice(&lock_name);
            Ok(())
        })?;
        let mut v = Self::wrap(region);
        v.shared_lock = Some(Arc::clone(lock));
        Ok(v)
    }

    /// The [`Lock`] this value shares with others (made with
    /// [`with_lock`](Self::with_lock) or [`create_with_lock`](Self::create_with_lock), or
    /// opened from what such a segment records), or `None` when it uses its own.
    ///
    /// # Examples
    /// ```
    /// use std::sync::Arc;
    /// let lock = Arc::new(ndshm::Lock::new()?);
    /// let v = ndshm::SharedValue::with_lock(0u8, &lock)?;
    /// assert!(Arc::ptr_eq(v.shared_lock().unwrap(), &lock));
    /// assert!(ndshm::SharedValue::new(0u8)?.shared_lock().is_none());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn shared_lock(&self) -> Option<&Arc<Lock>> {
        self.shared_lock.as_ref()
    }

    /// The value word (at the start of the page-aligned payload, so aligned for any
    /// width).
    fn mem(&self) -> SharedMem<'_> {
        self.region.payload()
    }

    /// The current value (Python's `v.value`).
    ///
    /// # Examples
    /// ```
    /// let v = ndshm::SharedValue::new(-3i8)?;
    /// assert_eq!(v.load(), -3);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn load(&self) -> T {
        T::load_in(self.mem(), Ordering::Acquire)
    }

    /// Sets the value.
    ///
    /// # Examples
    /// ```
    /// let v = ndshm::SharedValue::new(0u16)?;
    /// v.store(9);
    /// assert_eq!(v.load(), 9);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn store(&self, value: T) {
        T::store_in(self.mem(), value, Ordering::Release)
    }

    /// Sets the value and returns the previous one.
    ///
    /// # Examples
    /// ```
    /// let v = ndshm::SharedValue::new(1.5f32)?;
    /// assert_eq!(v.swap(2.0), 1.5);
    /// assert_eq!(v.load(), 2.0);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn swap(&self, value: T) -> T {
        T::swap_in(self.mem(), value, Ordering::AcqRel)
    }

    /// Adds `delta` atomically (wrapping for integers) and returns the previous value.
    ///
    /// # Examples
    /// ```
    /// let v = ndshm::SharedValue::new(250u8)?;
    /// assert_eq!(v.fetch_add(10), 250);
    /// assert_eq!(v.load(), 4); // wraps, as AtomicU8::fetch_add does
    /// let f = ndshm::SharedValue::new(0.5f64)?;
    /// assert_eq!(f.fetch_add(0.25), 0.5);
    /// assert_eq!(f.load(), 0.75);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn fetch_add(&self, delta: T) -> T {
        T::fetch_add_in(self.mem(), delta, Ordering::AcqRel)
    }

    /// Subtracts `delta` atomically and returns the previous value.
    ///
    /// # Examples
    /// ```
    /// let v = ndshm::SharedValue::new(10i64)?;
    /// assert_eq!(v.fetch_sub(3), 10);
    /// assert_eq!(v.load(), 7);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn fetch_sub(&self, delta: T) -> T {
        T::fetch_sub_in(self.mem(), delta, Ordering::AcqRel)
    }

    /// Stores `new` if the value is `current` (bitwise for floats); returns the previous
    /// value, as `Ok` when it was replaced and `Err` when not.
    ///
    /// # Errors
    /// `Err(actual)` when the value was not `current`.
    ///
    /// # Examples
    /// ```
    /// let v = ndshm::SharedValue::new(5u32)?;
    /// assert_eq!(v.compare_exchange(5, 6), Ok(5));
    /// assert_eq!(v.compare_exchange(5, 7), Err(6));
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn compare_exchange(&self, current: T, new: T) -> std::result::Result<T, T> {
        T::compare_exchange_in(self.mem(), current, new)
    }

    /// Applies `f` atomically (a compare-and-swap loop) and returns the previous value.
    ///
    /// # Examples
    /// ```
    /// let v = ndshm::SharedValue::new(3.0f64)?;
    /// assert_eq!(v.update(|x| x * x), 3.0);
    /// assert_eq!(v.load(), 9.0);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn update(&self, mut f: impl FnMut(T) -> T) -> T {
        let mut cur = self.load();
        loop {
            match self.compare_exchange(cur, f(cur)) {
                Ok(old) => return old,
                Err(now) => cur = now,
            }
        }
    }

    /// Takes the value's lock (Python's `with v.get_lock():`), for compound updates: every
    /// process (and thread) that updates the value this way excludes the others. That is
    /// the value's own robust lock, or the [`Lock`] it shares with other values
    /// ([`with_lock`](Self::with_lock)). The lock behaves as [`Lock`]'s does: robust, owned
    /// by the locking thread, not reentrant.
    ///
    /// # Panics
    /// When this thread holds the value's lock already, through this value or another
    /// that shares the lock (use
    /// [`lock_timeout`](Self::lock_timeout) to get [`ErrorKind::WouldDeadlock`] instead).
    ///
    /// # Examples
    /// ```
    /// let balance = ndshm::SharedValue::new(100i64)?;
    /// {
    ///     let _g = balance.lock(); // read, decide, write: one step for every locker
    ///     if balance.load() >= 30 {
    ///         balance.store(balance.load() - 30);
    ///     }
    /// }
    /// assert_eq!(balance.load(), 70);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn lock(&self) -> LockGuard<'_> {
        match &self.shared_lock {
            Some(lock) => lock.lock(),
            None => self.region.lock().lock_guard(),
        }
    }

    /// [`lock`](Self::lock) without waiting: `None` when a live thread holds it, this one
    /// included.
    ///
    /// # Examples
    /// ```
    /// let v = ndshm::SharedValue::new(0i32)?;
    /// let g = v.try_lock().expect("free");
    /// assert!(v.try_lock().is_none());
    /// drop(g);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn try_lock(&self) -> Option<LockGuard<'_>> {
        match &self.shared_lock {
            Some(lock) => lock.try_lock(),
            None => self.region.lock().try_lock_guard(),
        }
    }

    /// [`lock`](Self::lock), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`], or [`ErrorKind::WouldDeadlock`] at once when this thread
    /// holds the lock already.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let v = ndshm::SharedValue::new(0i32)?;
    /// let g = v.lock_timeout(Duration::from_secs(1))?;
    /// assert!(!g.owner_died());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Result<LockGuard<'_>> {
        match &self.shared_lock {
            Some(lock) => lock.lock_timeout(timeout),
            None => self
                .region
                .lock()
                .lock_timeout_guard(timeout, "the value's lock"),
        }
    }

    /// The segment name, or `None` for an anonymous value.
    ///
    /// # Examples
    /// ```
    /// assert_eq!(ndshm::SharedValue::new(0u8)?.name(), None);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn name(&self) -> Option<&str> {
        self.region.name()
    }
}

impl<T: AtomicElement> fmt::Debug for SharedValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedValue")
            .field("name", &self.name())
            .field("value", &self.load())
            .field("shared_lock", &self.shared_lock.as_ref().map(|l| l.name()))
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
