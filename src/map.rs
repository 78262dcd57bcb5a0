//! `SharedMap<K, V>`: a hash map with a fixed capacity in shared memory, keyed by integers
//! or short strings, holding `Pod` values: Python's `Manager().dict()` without the server.

use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};

use bytemuck::Pod;

use crate::error::{Error, ErrorKind, Result};
use crate::region::{header_word, type_tag, Region};
use crate::segment::CreateOptions;
use crate::trailer::SegmentKind;

/// The longest key, in bytes (a string key's UTF-8 length).
pub const MAX_KEY_LEN: usize = 32;

const MAGIC: u64 = u64::from_le_bytes(*b"NDSHMMP1");
const HEADER: usize = 64;
const H_CAP: usize = 8;
const H_SLOTS: usize = 16;
const H_STRIDE: usize = 24;
const H_KTAG: usize = 32;
const H_VTAG: usize = 40;
const H_LEN: usize = 48;
const H_DEAD: usize = 56;
/// Entry: state (u32), key length (u32), key bytes, then the value.
const E_KEY: usize = 8;
const E_VALUE: usize = E_KEY + MAX_KEY_LEN;

const EMPTY: u32 = 0;
const FULL: u32 = 1;
const TOMBSTONE: u32 = 2;

mod private {
    pub trait Sealed {}
}

/// What a key is made of: integer keys are their 8 little-endian bytes, string keys their
/// UTF-8 bytes (at most [`MAX_KEY_LEN`]). Implemented for `u64 i64 u32 i32 usize`, `str`
/// and `String`.
pub trait KeyBytes: private::Sealed {
    #[doc(hidden)]
    fn key_bytes(&self, out: &mut [u8; MAX_KEY_LEN]) -> Result<usize>;
}

/// A key type a [`SharedMap`] stores (owned: integers and `String`).
pub trait MapKey: KeyBytes + Sized {
    #[doc(hidden)]
    fn from_key_bytes(bytes: &[u8]) -> Self;
}

macro_rules! int_key {
    ($($t:ty),*) => {$(
        impl private::Sealed for $t {}
        impl KeyBytes for $t {
            fn key_bytes(&self, out: &mut [u8; MAX_KEY_LEN]) -> Result<usize> {
                out[..8].copy_from_slice(&(*self as i64 as u64).to_le_bytes());
                Ok(8)
            }
        }
        impl MapKey for $t {
            fn from_key_bytes(bytes: &[u8]) -> Self {
                let mut b = [0u8; 8];
                let n = bytes.len().min(8);
                b[..n].copy_from_slice(&bytes[..n]);
                u64::from_le_bytes(b) as $t
            }
        }
    )*};
}

int_key!(u64, i64, u32, i32, usize);

impl private::Sealed for str {}
impl KeyBytes for str {
    fn key_bytes(&self, out: &mut [u8; MAX_KEY_LEN]) -> Result<usize> {
        if self.len() > MAX_KEY_LEN {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "key {self:?} is {} bytes long; shared-map keys hold at most {MAX_KEY_LEN} \
                     bytes",
                    self.len()
                ),
            ));
        }
        out[..self.len()].copy_from_slice(self.as_bytes());
        Ok(self.len())
    }
}
impl private::Sealed for String {}
impl KeyBytes for String {
    fn key_bytes(&self, out: &mut [u8; MAX_KEY_LEN]) -> Result<usize> {
        self.as_str().key_bytes(out)
    }
}
impl MapKey for String {
    fn from_key_bytes(bytes: &[u8]) -> Self {
        String::from_utf8_lossy(bytes).into_owned()
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A hash map in shared memory: keys are integers or strings of up to [`MAX_KEY_LEN`]
/// bytes, values are `Pod`, and the number of entries is bounded by a capacity fixed at
/// creation. Python's `Manager().dict()`, without a server process: an operation is a
/// lock, a hash and a probe (well under a microsecond), not a round trip.
///
/// Every operation holds the map's robust lock, so all processes see one consistent map.
/// Inserting a new key into a map holding `capacity` entries is an [`ErrorKind::Full`]
/// error; nothing is overwritten. If a process dies holding the lock, the next operation
/// proceeds (an insert is published by its final state word, so an entry is either there
/// or not).
///
/// Opening by name is safe: all access is under the lock.
///
/// # Examples
/// ```
/// use ndshm::SharedMap;
/// let map = SharedMap::<String, i64>::new(16)?;
/// ndshm::scope(|s| {
///     for i in 0..5i64 {
///         let map = &map;
///         s.spawn(move || map.insert(&format!("key_{i}"), i * i).map(drop))?;
///     }
///     Ok(())
/// })?;
/// assert_eq!(map.get("key_3")?, Some(9));
/// assert_eq!(map.len(), 5);
/// # Ok::<(), ndshm::Error>(())
/// ```
pub struct SharedMap<K: MapKey, V: Pod> {
    region: Region,
    cap: usize,
    slots: usize,
    stride: usize,
    _marker: PhantomData<fn(K) -> V>,
}

impl<K: MapKey, V: Pod> SharedMap<K, V> {
    fn layout(capacity: usize) -> Result<(usize, usize, usize)> {
        let overflow = || {
            Error::new(
                ErrorKind::SizeOverflow,
                format!("a map of {capacity} entries overflows the address space"),
            )
        };
        if capacity == 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "a map needs a capacity of at least 1",
            ));
        }
        let slots = capacity
            .checked_mul(2)
            .and_then(usize::checked_next_power_of_two)
            .ok_or_else(overflow)?;
        let stride = (E_VALUE + std::mem::size_of::<V>()).next_multiple_of(8);
        let len = slots
            .checked_mul(stride)
            .and_then(|n| n.checked_add(HEADER))
            .ok_or_else(overflow)?;
        Ok((slots, stride, len))
    }

    fn init(capacity: usize, slots: usize, stride: usize) -> impl FnOnce(&mut [u8]) -> Result<()> {
        move |p: &mut [u8]| {
            let mut put = |off: usize, v: u64| p[off..off + 8].copy_from_slice(&v.to_le_bytes());
            put(0, MAGIC);
            put(H_CAP, capacity as u64);
            put(H_SLOTS, slots as u64);
            put(H_STRIDE, stride as u64);
            put(H_KTAG, type_tag::<K>());
            put(H_VTAG, type_tag::<V>());
            Ok(())
        }
    }

    /// An anonymous map of up to `capacity` entries, shared with children forked later.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for a zero capacity, [`ErrorKind::SizeOverflow`].
    pub fn new(capacity: usize) -> Result<Self> {
        let (slots, stride, len) = Self::layout(capacity)?;
        let region = Region::anonymous(len, Self::init(capacity, slots, stride))?;
        Ok(Self::wrap(region, capacity, slots, stride))
    }

    /// Creates map segment `name` of up to `capacity` entries.
    ///
    /// # Errors
    /// As [`new`](Self::new), plus the errors of segment creation.
    pub fn create(name: &str, capacity: usize) -> Result<Self> {
        Self::create_with(name, capacity, &CreateOptions::new())
    }

    /// [`create`](Self::create) with options.
    ///
    /// # Errors
    /// As [`create`](Self::create).
    pub fn create_with(name: &str, capacity: usize, opts: &CreateOptions) -> Result<Self> {
        let (slots, stride, len) = Self::layout(capacity)?;
        let init = Self::init(capacity, slots, stride);
        let region = Region::create(name, SegmentKind::Map, len, opts, init)?;
        Ok(Self::wrap(region, capacity, slots, stride))
    }

    /// Attaches map segment `name` (safe: see the type's docs).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`], [`ErrorKind::KindMismatch`], [`ErrorKind::TypeMismatch`]
    /// (other key or value type), [`ErrorKind::InvalidHeader`], [`ErrorKind::AlreadyOpen`].
    pub fn open(name: &str) -> Result<Self> {
        let region = Region::open(name, SegmentKind::Map, HEADER)?;
        if header_word(&region, 0) != MAGIC {
            return Err(Error::new(
                ErrorKind::InvalidHeader,
                format!("map segment '{name}' has a bad magic; it is corrupted"),
            ));
        }
        if header_word(&region, H_KTAG) != type_tag::<K>()
            || header_word(&region, H_VTAG) != type_tag::<V>()
        {
            return Err(Error::new(
                ErrorKind::TypeMismatch,
                format!(
                    "map segment '{name}' holds other key or value types than {} -> {}",
                    std::any::type_name::<K>(),
                    std::any::type_name::<V>()
                ),
            ));
        }
        let cap = header_word(&region, H_CAP) as usize;
        match Self::layout(cap) {
            Ok((slots, stride, len))
                if len <= region.payload_len()
                    && slots as u64 == header_word(&region, H_SLOTS)
                    && stride as u64 == header_word(&region, H_STRIDE) =>
            {
                Ok(Self::wrap(region, cap, slots, stride))
            }
            _ => Err(Error::new(
                ErrorKind::InvalidHeader,
                format!("map segment '{name}': its capacity does not fit its size; corrupted"),
            )),
        }
    }

    fn wrap(region: Region, cap: usize, slots: usize, stride: usize) -> Self {
        SharedMap {
            region,
            cap,
            slots,
            stride,
            _marker: PhantomData,
        }
    }

    fn counter(&self, off: usize) -> &AtomicU64 {
        // SAFETY: header words lie in the validated payload, 8-byte aligned; only accessed
        // atomically.
        unsafe { &*(self.region.payload().add(off) as *const AtomicU64) }
    }

    /// The bytes of entry `i`.
    ///
    /// Only called with the lock held, which makes this process the only one touching
    /// entries; `&mut self`-free access is sound because the returned slice never outlives
    /// the lock guard of the calling method.
    #[allow(clippy::mut_from_ref)]
    fn entry(&self, i: usize) -> &mut [u8] {
        debug_assert!(i < self.slots);
        // SAFETY: `i < slots`, so the entry lies inside the payload (`HEADER + slots *
        // stride` bytes, validated). Entries are accessed only under the map's lock, held
        // by the caller for as long as it uses the slice, and each caller uses one entry
        // slice at a time.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.region.payload().add(HEADER + i * self.stride),
                self.stride,
            )
        }
    }

    fn state(e: &[u8]) -> u32 {
        u32::from_le_bytes([e[0], e[1], e[2], e[3]])
    }

    fn set_state(e: &mut [u8], s: u32) {
        e[0..4].copy_from_slice(&s.to_le_bytes());
    }

    fn key_of(e: &[u8]) -> &[u8] {
        let n = (u32::from_le_bytes([e[4], e[5], e[6], e[7]]) as usize).min(MAX_KEY_LEN);
        &e[E_KEY..E_KEY + n]
    }

    fn value_of(e: &[u8]) -> V {
        bytemuck::pod_read_unaligned(&e[E_VALUE..E_VALUE + std::mem::size_of::<V>()])
    }

    /// (index of the key's entry if present, first free index on its probe path).
    fn find(&self, key: &[u8]) -> (Option<usize>, Option<usize>) {
        let mask = self.slots - 1;
        let mut i = fnv1a(key) as usize & mask;
        let mut free = None;
        for _ in 0..self.slots {
            let e = self.entry(i);
            match Self::state(e) {
                FULL if Self::key_of(e) == key => return (Some(i), free),
                FULL => {}
                TOMBSTONE => {
                    free.get_or_insert(i);
                }
                _ => {
                    free.get_or_insert(i);
                    return (None, free);
                }
            }
            i = (i + 1) & mask;
        }
        (None, free)
    }

    fn encode<Q: KeyBytes + ?Sized>(key: &Q) -> Result<([u8; MAX_KEY_LEN], usize)> {
        let mut buf = [0u8; MAX_KEY_LEN];
        let n = key.key_bytes(&mut buf)?;
        Ok((buf, n))
    }

    /// Inserts or replaces; returns the previous value.
    ///
    /// # Errors
    /// [`ErrorKind::Full`] when `key` is new and the map holds `capacity` entries,
    /// [`ErrorKind::InvalidArgument`] for a string key over [`MAX_KEY_LEN`] bytes.
    pub fn insert<Q>(&self, key: &Q, value: V) -> Result<Option<V>>
    where
        K: Borrow<Q>,
        Q: KeyBytes + ?Sized,
    {
        let (kb, n) = Self::encode(key)?;
        let _g = self.region.lock().lock_guard();
        self.insert_locked(&kb, n, value)
    }

    /// `insert` with the lock held by the caller.
    fn insert_locked(&self, kb: &[u8; MAX_KEY_LEN], n: usize, value: V) -> Result<Option<V>> {
        let key = &kb[..n];
        let vsize = std::mem::size_of::<V>();
        let (mut found, mut free) = self.find(key);
        if let Some(i) = found {
            let e = self.entry(i);
            let old = Self::value_of(e);
            e[E_VALUE..E_VALUE + vsize].copy_from_slice(bytemuck::bytes_of(&value));
            return Ok(Some(old));
        }
        let len = self.counter(H_LEN).load(Ordering::Relaxed) as usize;
        if len >= self.cap {
            return Err(Error::new(
                ErrorKind::Full,
                format!(
                    "the map holds its capacity of {} entries; remove some or create it with \
                     a larger capacity",
                    self.cap
                ),
            ));
        }
        let dead = self.counter(H_DEAD).load(Ordering::Relaxed) as usize;
        if free.is_none() || len + dead >= self.slots / 4 * 3 {
            // Tombstones lengthen probes: drop them (len <= slots / 2, so room remains).
            self.rebuild_locked();
            (found, free) = self.find(key);
        }
        debug_assert!(found.is_none());
        let i = free.expect("at most half the entries are used after a rebuild");
        let e = self.entry(i);
        if Self::state(e) == TOMBSTONE {
            self.counter(H_DEAD).fetch_sub(1, Ordering::Relaxed);
        }
        e[4..8].copy_from_slice(&(n as u32).to_le_bytes());
        e[E_KEY..E_KEY + MAX_KEY_LEN].copy_from_slice(kb);
        e[E_VALUE..E_VALUE + vsize].copy_from_slice(bytemuck::bytes_of(&value));
        // Published last: a holder that dies before this line leaves no half entry.
        Self::set_state(e, FULL);
        self.counter(H_LEN).store(len as u64 + 1, Ordering::Relaxed);
        Ok(None)
    }

    /// Re-inserts every entry, dropping tombstones (lock held by the caller).
    fn rebuild_locked(&self) {
        let mut live = Vec::new();
        for i in 0..self.slots {
            let e = self.entry(i);
            if Self::state(e) == FULL {
                live.push(e.to_vec());
            }
            Self::set_state(e, EMPTY);
        }
        let mask = self.slots - 1;
        for bytes in &live {
            let mut i = fnv1a(Self::key_of(bytes)) as usize & mask;
            while Self::state(self.entry(i)) != EMPTY {
                i = (i + 1) & mask;
            }
            self.entry(i).copy_from_slice(bytes);
        }
        self.counter(H_DEAD).store(0, Ordering::Relaxed);
        self.counter(H_LEN)
            .store(live.len() as u64, Ordering::Relaxed);
    }

    /// The value for `key`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for a string key over [`MAX_KEY_LEN`] bytes.
    pub fn get<Q>(&self, key: &Q) -> Result<Option<V>>
    where
        K: Borrow<Q>,
        Q: KeyBytes + ?Sized,
    {
        let (kb, n) = Self::encode(key)?;
        let _g = self.region.lock().lock_guard();
        Ok(self.find(&kb[..n]).0.map(|i| Self::value_of(self.entry(i))))
    }

    /// Whether `key` is present.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn contains_key<Q>(&self, key: &Q) -> Result<bool>
    where
        K: Borrow<Q>,
        Q: KeyBytes + ?Sized,
    {
        Ok(self.get(key)?.is_some())
    }

    /// Removes `key`; returns its value.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn remove<Q>(&self, key: &Q) -> Result<Option<V>>
    where
        K: Borrow<Q>,
        Q: KeyBytes + ?Sized,
    {
        let (kb, n) = Self::encode(key)?;
        let _g = self.region.lock().lock_guard();
        let Some(i) = self.find(&kb[..n]).0 else {
            return Ok(None);
        };
        let e = self.entry(i);
        let v = Self::value_of(e);
        Self::set_state(e, TOMBSTONE);
        self.counter(H_DEAD).fetch_add(1, Ordering::Relaxed);
        self.counter(H_LEN).fetch_sub(1, Ordering::Relaxed);
        Ok(Some(v))
    }

    /// Applies `f` to the value of `key` (or to `default` when absent) and stores the
    /// result, as one step under the lock; returns the new value.
    ///
    /// # Errors
    /// As [`insert`](Self::insert).
    pub fn update<Q>(&self, key: &Q, default: V, f: impl FnOnce(V) -> V) -> Result<V>
    where
        K: Borrow<Q>,
        Q: KeyBytes + ?Sized,
    {
        let (kb, n) = Self::encode(key)?;
        let _g = self.region.lock().lock_guard();
        let old = self
            .find(&kb[..n])
            .0
            .map_or(default, |i| Self::value_of(self.entry(i)));
        let v = f(old);
        self.insert_locked(&kb, n, v)?;
        Ok(v)
    }

    /// Entries in the map.
    pub fn len(&self) -> usize {
        let _g = self.region.lock().lock_guard();
        self.counter(H_LEN).load(Ordering::Relaxed) as usize
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most entries the map can hold.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// A snapshot of all entries (in table order; sort it for a stable order).
    pub fn to_vec(&self) -> Vec<(K, V)> {
        let _g = self.region.lock().lock_guard();
        (0..self.slots)
            .map(|i| self.entry(i))
            .filter(|e| Self::state(e) == FULL)
            .map(|e| (K::from_key_bytes(Self::key_of(e)), Self::value_of(e)))
            .collect()
    }

    /// The segment name, or `None` for an anonymous map.
    pub fn name(&self) -> Option<&str> {
        self.region.name()
    }
}

impl<K: MapKey + fmt::Debug, V: Pod + fmt::Debug> fmt::Debug for SharedMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.to_vec()).finish()
    }
}
