//! `SharedMap<K, V>`: a hash map with a fixed capacity in shared memory, keyed by integers
//! or short strings, holding `Pod` values, in insertion order: Python's `Manager().dict()`
//! without the server.

use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use bytemuck::Pod;

use crate::error::{Error, ErrorKind, Result};
use crate::manager::fault::{crash_point, publish, FAULT_EXIT};
use crate::segment::region::{header_word, type_tag, Region};
use crate::segment::shared_mem::SharedMem;
use crate::segment::trailer::SegmentKind;
use crate::segment::CreateOptions;

/// The longest key, in bytes (a string key's UTF-8 length).
pub const MAX_KEY_LEN: usize = 32;

const MAGIC: u64 = u64::from_le_bytes(*b"NDSHMMP3");
const HEADER: usize = 128;
const H_CAP: usize = 8;
const H_SLOTS: usize = 16;
const H_STRIDE: usize = 24;
const H_KTAG: usize = 32;
const H_VTAG: usize = 40;
const H_LEN: usize = 48;
/// The pending-operation word: what a holder that died must have finished (see the type's
/// docs). Its top two bits say what, the rest a slot index.
const H_LOG: usize = 56;
/// The next insertion stamp: every new key gets the next one, so entries sorted by stamp
/// are in insertion order.
const H_SEQ: usize = 64;
/// The key-set version: bumped (before the commit) by every insertion of a new key and
/// every removal, so that an iteration notices the keys changed under it.
const H_MODS: usize = 72;
/// An entry (a slot of the table): state (u32, the entry's commit word), then its body:
/// key length (u32), key bytes, insertion stamp (u64), then the value. One more entry after
/// the table holds the value of a pending replacement.
const E_BODY: usize = 4;
/// Offsets inside an entry's body.
const B_KEY: usize = 4;
const B_SEQ: usize = B_KEY + MAX_KEY_LEN;
const B_VALUE: usize = B_SEQ + 8;

const EMPTY: u32 = 0;
const FULL: u32 = 1;

const LOG_OP: u64 = 3 << 62;
const LOG_INDEX: u64 = !LOG_OP;
/// Copy the value held in the log entry into slot `index` (a replacement).
const LOG_SET: u64 = 1 << 62;
/// Slot `index` is a hole: finish the backward-shift deletion from there.
const LOG_HOLE: u64 = 2 << 62;
/// Recount `len` from the table (a recovery in progress).
const LOG_RECOUNT: u64 = 3 << 62;

mod private {
    pub trait Sealed {}
}

/// What a key is made of: integer keys are their 8 little-endian bytes, string keys their
/// UTF-8 bytes (at most [`MAX_KEY_LEN`]). Implemented for `u64 i64 u32 i32 usize`, `str`
/// and `String`.
///
/// # Examples
/// ```
/// let by_name = ndshm::SharedMap::<String, u32>::new(4)?;
/// by_name.insert("alice", 1)?; // &str borrows a String key
/// let by_id = ndshm::SharedMap::<u64, f64>::new(4)?;
/// by_id.insert(&42, 0.5)?;
/// let too_long = "k".repeat(ndshm::MAX_KEY_LEN + 1);
/// assert_eq!(by_name.insert(&too_long, 2).unwrap_err().kind(), ndshm::ErrorKind::InvalidArgument);
/// # Ok::<(), ndshm::Error>(())
/// ```
pub trait KeyBytes: private::Sealed {
    #[doc(hidden)]
    fn key_bytes(&self, out: &mut [u8; MAX_KEY_LEN]) -> Result<usize>;
}

/// A key type a [`SharedMap`] stores (owned: integers and `String`).
///
/// # Examples
/// ```
/// let map = ndshm::SharedMap::<i32, u8>::new(4)?;
/// map.insert(&-7, 1)?;
/// assert_eq!(map.to_vec(), [(-7, 1)]); // keys come back as their owned type
/// # Ok::<(), ndshm::Error>(())
/// ```
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

/// Where a key's probe ended.
enum Probe {
    /// The key's slot.
    Found(usize),
    /// The first empty slot on the key's path: where it would go.
    Vacant(usize),
}

/// A hash map in shared memory: keys are integers or strings of up to [`MAX_KEY_LEN`]
/// bytes, values are `Pod`, and the number of entries is bounded by a capacity fixed at
/// creation. Python's `Manager().dict()`, without a server process: an operation is a
/// lock, a hash and a probe (well under a microsecond), not a round trip.
///
/// Every operation holds the map's robust lock, so all processes see one consistent map.
/// Inserting a new key into a map holding `capacity` entries is an [`ErrorKind::Full`]
/// error; nothing is overwritten.
///
/// # Insertion order
/// As a Python 3.7+ `dict`, the map remembers the order in which keys were first
/// inserted (replacing a value keeps the key's place; a key removed and inserted again
/// goes last): [`to_vec`](Self::to_vec), [`iter`](Self::iter), [`keys`](Self::keys),
/// [`values`](Self::values) and [`reversed`](Self::reversed) follow it, and
/// [`popitem`](Self::popitem) removes the last inserted. Each entry carries an insertion
/// stamp from a counter in the header; an iteration sorts the stamps once (O(n log n))
/// and then reads one entry per step. Keys inserted or removed during an iteration make
/// it fail with [`ErrorKind::ChangedDuringIteration`], as Python's `RuntimeError:
/// dictionary changed size during iteration`.
///
/// Opening by name is safe: all access is under the lock, and state read from the segment
/// is checked, so a segment overwritten by something else gives [`ErrorKind::Corrupt`]
/// (in time bounded by the table's size), never a panic, a hang or an access out of
/// bounds.
///
/// # Crash consistency
/// A process may die (`SIGKILL`) between any two of its stores while it holds the lock;
/// the next operation, in any process, sees a map in which every insert or removal that
/// returned has taken effect, the one in flight has either taken effect entirely or not
/// at all, every entry is found by its key, and [`len`](Self::len) is exact. How:
/// - The table uses linear probing with backward-shift deletion, so there are no
///   tombstones and no rebuilds: no update ever moves more than the entries of one
///   probe run.
/// - A new key is written into an empty slot whose state word still says empty, then
///   published by one store of that word. A holder that dies earlier leaves an empty slot.
///   Its insertion stamp is taken (the header's counter advanced) before that, so a
///   holder that dies in between only skips a stamp; the key-set version that iterations
///   check is advanced before every insertion and removal commits, so an iteration
///   elsewhere may stop spuriously but never walks a table that changed under it.
/// - Replacing a value copies the new value into a log entry after the table, then
///   publishes "set slot *i*" in the header's pending-operation word, copies the value
///   and clears the word. A replacement is never torn: the log entry redoes it.
/// - A removal publishes "slot *i* is a hole" in the pending-operation word (from then on
///   the entry is gone), then closes the hole: each entry further along the run that may
///   move back is copied into the hole, and the word is set to its old slot, the new
///   hole, by one store; the last hole is marked empty and the word cleared. Which entry
///   moves next depends only on the table and the recorded hole, so redoing the closing
///   from the recorded hole, any number of times, gives the same table.
/// - `len` is a cache of the number of full slots, stored after the commit.
/// - Each publishing store is fenced against compiler reordering, so a holder killed
///   between two instructions leaves exactly the stores that precede the kill.
///
/// Whenever the lock reports that its previous owner died ([`LockGuard::owner_died`]), or
/// the pending-operation word is set, the locker first finishes the recorded operation
/// and recounts `len` from the state words (one pass over the table), recording the
/// recovery in the same word so that a recoverer that dies in turn is itself recovered.
///
/// [`LockGuard::owner_died`]: crate::LockGuard::owner_died
///
/// # Examples
/// ```
/// use ndshm::SharedMap;
/// let map = SharedMap::<String, i64>::new(16)?;
/// ndshm::scope(|s| -> ndshm::Result<()> {
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
    /// (slots, entry stride, payload length) of a map of `capacity` entries.
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
            .filter(|&s| s as u64 <= LOG_INDEX)
            .ok_or_else(overflow)?;
        let stride = (E_BODY + B_VALUE + std::mem::size_of::<V>()).next_multiple_of(8);
        // The table, then one log entry.
        let len = (slots + 1)
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
    ///
    /// # Examples
    /// ```
    /// let map = ndshm::SharedMap::<u64, u64>::new(100)?;
    /// assert_eq!((map.len(), map.capacity()), (0, 100));
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn new(capacity: usize) -> Result<Self> {
        let (slots, stride, len) = Self::layout(capacity)?;
        let region = Region::anonymous(len, Self::init(capacity, slots, stride))?;
        Ok(Self::wrap(region, capacity, slots, stride))
    }

    /// Creates map segment `name` of up to `capacity` entries.
    ///
    /// # Errors
    /// As [`new`](Self::new), plus the errors of segment creation.
    ///
    /// # Examples
    /// ```
    /// use ndshm::{CreateOptions, SharedMap};
    /// let map = SharedMap::<String, i64>::create(CreateOptions::unique(), 16)?;
    /// map.insert("x", 1)?;
    /// let same = SharedMap::<String, i64>::open(map.name().unwrap())?; // as another process would
    /// assert_eq!(same.get("x")?, Some(1));
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn create(segment: impl Into<CreateOptions>, capacity: usize) -> Result<Self> {
        let opts = &segment.into();
        let (slots, stride, len) = Self::layout(capacity)?;
        let init = Self::init(capacity, slots, stride);
        let region = Region::create(opts, SegmentKind::Map, len, init)?;
        Ok(Self::wrap(region, capacity, slots, stride))
    }

    /// Attaches map segment `name` (safe: see the type's docs).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`], [`ErrorKind::KindMismatch`], [`ErrorKind::TypeMismatch`]
    /// (other key or value type), [`ErrorKind::InvalidHeader`]. (A map may be opened any
    /// number of times, in this process too.)
    ///
    /// # Examples
    /// ```
    /// use ndshm::{ErrorKind, SharedMap};
    /// # let name = format!("doc-map-open-{}", std::process::id());
    /// let map = SharedMap::<u32, f32>::create(&name, 8)?;
    /// assert_eq!(SharedMap::<u32, f32>::open(&name)?.capacity(), 8);
    /// let wrong = SharedMap::<String, f32>::open(&name).unwrap_err();
    /// assert_eq!(wrong.kind(), ErrorKind::TypeMismatch);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn open(name: &str) -> Result<Self> {
        let region = Region::open(name, SegmentKind::Map, HEADER)?;
        if header_word(&region, 0) != MAGIC {
            return Err(Error::new(
                ErrorKind::InvalidHeader,
                format!(
                    "map segment '{name}' has a bad magic: it is corrupted, or was made by \
                     an ndshm version with another map layout; recreate it"
                ),
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

    /// Test hook: from now on this process leaves with `_exit(86)` at the `step`-th store
    /// of a map update (counted from this call, over every map of the process; 0 turns the
    /// hook off). Only for crash tests; not part of the API.
    #[doc(hidden)]
    pub fn __exit_at_step(step: u64) {
        crate::manager::fault::exit_at_step(step);
    }

    /// The exit code of [`__exit_at_step`](Self::__exit_at_step).
    #[doc(hidden)]
    pub const __FAULT_EXIT: i32 = FAULT_EXIT;

    fn mem(&self) -> SharedMem<'_> {
        self.region.payload()
    }

    /// Header word at `off` (`off + 8 <= HEADER`), only ever accessed atomically.
    fn word(&self, off: usize) -> &AtomicU64 {
        self.region.payload().u64(off)
    }

    fn log(&self) -> &AtomicU64 {
        self.word(H_LOG)
    }

    /// Where entry `i` of the table starts; `i == slots` is the log entry. The payload
    /// holds `HEADER + (slots + 1) * stride` bytes (checked at creation and at open), and
    /// HEADER and the stride are multiples of 8, so the state word is aligned.
    fn entry(&self, i: usize) -> usize {
        assert!(i <= self.slots, "map entry {i} out of range");
        HEADER + i * self.stride
    }

    fn state(&self, i: usize) -> &AtomicU32 {
        self.region.payload().u32(self.entry(i))
    }

    /// Offset of the body of entry `i` (key length, key, value); entry bodies are read and
    /// written only with the map's lock held, which makes this process the only one
    /// touching them.
    fn body(&self, i: usize) -> usize {
        self.entry(i) + E_BODY
    }

    /// The key of entry `i` (its bytes, and how many of them are used).
    fn key_of(&self, i: usize) -> ([u8; MAX_KEY_LEN], usize) {
        let mem = self.mem();
        let n = mem.read_pod::<u32>(self.body(i)) as usize;
        let mut key = [0u8; MAX_KEY_LEN];
        mem.read(self.body(i) + B_KEY, &mut key);
        (key, n.min(MAX_KEY_LEN))
    }

    /// Whether entry `i` holds `key`.
    fn has_key(&self, i: usize, key: &[u8]) -> bool {
        let (k, n) = self.key_of(i);
        &k[..n] == key
    }

    fn value_of(&self, i: usize) -> V {
        self.mem().read_pod(self.body(i) + B_VALUE)
    }

    fn set_value(&self, i: usize, value: &V) {
        self.mem().write_pod(self.body(i) + B_VALUE, value);
    }

    fn corrupt(&self, what: impl fmt::Display) -> Error {
        let name = self.region.name().unwrap_or("(anonymous)");
        Error::new(
            ErrorKind::Corrupt,
            format!(
                "map segment '{name}': {what}; something other than ndshm wrote over it, so \
                 recreate it"
            ),
        )
    }

    /// Runs `f` under the map's lock, after recovering from a holder that died; `f` gets
    /// the recovery's outcome.
    fn with_lock<R>(&self, f: impl FnOnce(Result<()>) -> R) -> R {
        let guard = self.region.lock().lock_guard();
        let state = if guard.owner_died() || self.log().load(Ordering::Acquire) != 0 {
            self.recover()
        } else {
            Ok(())
        };
        let r = f(state);
        drop(guard);
        r
    }

    /// Finishes the operation a dead holder recorded, then recounts `len` (lock held).
    fn recover(&self) -> Result<()> {
        let mut log = self.log().load(Ordering::Acquire);
        if log == 0 {
            log = LOG_RECOUNT;
            publish(self.log(), log);
        }
        let i = (log & LOG_INDEX) as usize;
        match log & LOG_OP {
            LOG_SET if i < self.slots && self.state(i).load(Ordering::Relaxed) == FULL => {
                let v = self.value_of(self.slots);
                self.set_value(i, &v);
                publish(self.log(), LOG_RECOUNT);
            }
            LOG_HOLE if i < self.slots => self.close_hole(i, LOG_RECOUNT)?,
            LOG_RECOUNT => {}
            _ => {
                return Err(self.corrupt(format_args!(
                    "its pending-operation word is {log:#x}, which names no operation"
                )))
            }
        }
        let mut n = 0usize;
        for i in 0..self.slots {
            match self.state(i).load(Ordering::Relaxed) {
                FULL => n += 1,
                EMPTY => {}
                s => return Err(self.corrupt(format_args!("slot {i} has state word {s}"))),
            }
        }
        if n > self.cap {
            return Err(self.corrupt(format_args!(
                "{n} slots are full, more than its capacity of {}",
                self.cap
            )));
        }
        publish(self.word(H_LEN), n as u64);
        publish(self.log(), 0);
        Ok(())
    }

    /// Probes for `key` (lock held).
    fn find(&self, key: &[u8]) -> Result<Probe> {
        let mask = self.slots - 1;
        let mut i = fnv1a(key) as usize & mask;
        for _ in 0..self.slots {
            match self.state(i).load(Ordering::Relaxed) {
                FULL if self.has_key(i, key) => return Ok(Probe::Found(i)),
                FULL => {}
                EMPTY => return Ok(Probe::Vacant(i)),
                s => return Err(self.corrupt(format_args!("slot {i} has state word {s}"))),
            }
            i = (i + 1) & mask;
        }
        Err(self.corrupt(format_args!(
            "all {} slots are marked full, but a map holds at most {} entries",
            self.slots, self.cap
        )))
    }

    /// Closes the hole at `hole` by backward shift, then publishes `done` in the
    /// pending-operation word (lock held; see "Crash consistency" in the type's docs).
    fn close_hole(&self, mut hole: usize, done: u64) -> Result<()> {
        let mask = self.slots - 1;
        let mut j = hole;
        for _ in 0..self.slots {
            j = (j + 1) & mask;
            match self.state(j).load(Ordering::Relaxed) {
                EMPTY => {
                    publish(self.state(hole), EMPTY);
                    publish(self.log(), done);
                    return Ok(());
                }
                FULL if j == hole => break,
                FULL => {
                    let (key, n) = self.key_of(j);
                    let home = fnv1a(&key[..n]) as usize & mask;
                    // The entry may move back iff the hole lies on its probe path
                    // [home, j): no lookup of it would then stop at the hole.
                    if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                        // Both bodies are distinct (`j != hole`, both < slots); the lock
                        // gives this process exclusive access to them.
                        let mut body = vec![0u8; self.stride - E_BODY];
                        self.mem().read(self.body(j), &mut body);
                        self.mem().write(self.body(hole), &body);
                        publish(self.state(hole), FULL);
                        publish(self.log(), LOG_HOLE | j as u64);
                        hole = j;
                    }
                }
                s => return Err(self.corrupt(format_args!("slot {j} has state word {s}"))),
            }
        }
        Err(self.corrupt(format_args!(
            "all {} slots are marked full, but a map holds at most {} entries",
            self.slots, self.cap
        )))
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
    /// [`ErrorKind::InvalidArgument`] for a string key over [`MAX_KEY_LEN`] bytes,
    /// [`ErrorKind::Corrupt`] when the map's shared state was overwritten.
    ///
    /// # Examples
    /// ```
    /// let map = ndshm::SharedMap::<String, u8>::new(1)?;
    /// assert_eq!(map.insert("a", 1)?, None);
    /// assert_eq!(map.insert("a", 2)?, Some(1)); // replaced
    /// assert_eq!(map.insert("b", 3).unwrap_err().kind(), ndshm::ErrorKind::Full);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn insert<Q>(&self, key: &Q, value: V) -> Result<Option<V>>
    where
        K: Borrow<Q>,
        Q: KeyBytes + ?Sized,
    {
        let (kb, n) = Self::encode(key)?;
        self.with_lock(|ok| {
            ok?;
            self.insert_locked(&kb, n, value)
        })
    }

    /// `insert` with the lock held by the caller.
    fn insert_locked(&self, kb: &[u8; MAX_KEY_LEN], n: usize, value: V) -> Result<Option<V>> {
        let i = match self.find(&kb[..n])? {
            Probe::Found(i) => {
                let old = self.value_of(i);
                // Redo record first: the replacement is never torn.
                self.set_value(self.slots, &value);
                publish(self.log(), LOG_SET | i as u64);
                self.set_value(i, &value);
                publish(self.log(), 0);
                return Ok(Some(old));
            }
            Probe::Vacant(i) => i,
        };
        let len = self.word(H_LEN).load(Ordering::Relaxed);
        if len >= self.cap as u64 {
            if len > self.cap as u64 {
                return Err(self.corrupt(format_args!(
                    "its length word says {len}, more than its capacity of {}",
                    self.cap
                )));
            }
            return Err(Error::new(
                ErrorKind::Full,
                format!(
                    "the map holds its capacity of {} entries; remove some or create it with \
                     a larger capacity",
                    self.cap
                ),
            ));
        }
        // A stamp and a key-set version of their own before the commit: a holder that
        // dies in between skips a stamp, and an iteration elsewhere stops (spuriously,
        // but never walks a table that changed under it).
        let seq = self.word(H_SEQ).load(Ordering::Relaxed);
        publish(self.word(H_SEQ), seq.wrapping_add(1));
        self.bump_mods();
        let body = self.body(i);
        self.mem().write_pod(body, &(n as u32));
        self.mem().write(body + B_KEY, kb);
        self.mem().write_pod(body + B_SEQ, &seq);
        self.set_value(i, &value);
        crash_point();
        // The commit: a holder that dies before it leaves the slot empty.
        publish(self.state(i), FULL);
        publish(self.word(H_LEN), len + 1);
        Ok(None)
    }

    /// The value for `key`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for a string key over [`MAX_KEY_LEN`] bytes,
    /// [`ErrorKind::Corrupt`] when the map's shared state was overwritten.
    ///
    /// # Examples
    /// ```
    /// let map = ndshm::SharedMap::<u64, [f32; 2]>::new(8)?;
    /// map.insert(&1, [0.5, 1.5])?;
    /// assert_eq!(map.get(&1)?, Some([0.5, 1.5]));
    /// assert_eq!(map.get(&2)?, None);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn get<Q>(&self, key: &Q) -> Result<Option<V>>
    where
        K: Borrow<Q>,
        Q: KeyBytes + ?Sized,
    {
        let (kb, n) = Self::encode(key)?;
        self.with_lock(|ok| {
            ok?;
            Ok(match self.find(&kb[..n])? {
                Probe::Found(i) => Some(self.value_of(i)),
                Probe::Vacant(_) => None,
            })
        })
    }

    /// Whether `key` is present.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    ///
    /// # Examples
    /// ```
    /// let map = ndshm::SharedMap::<String, u8>::new(8)?;
    /// map.insert("here", 0)?;
    /// assert!(map.contains_key("here")? && !map.contains_key("there")?);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
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
    ///
    /// # Examples
    /// ```
    /// let map = ndshm::SharedMap::<i64, i64>::new(8)?;
    /// map.insert(&5, 25)?;
    /// assert_eq!(map.remove(&5)?, Some(25));
    /// assert_eq!(map.remove(&5)?, None);
    /// assert!(map.is_empty());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn remove<Q>(&self, key: &Q) -> Result<Option<V>>
    where
        K: Borrow<Q>,
        Q: KeyBytes + ?Sized,
    {
        let (kb, n) = Self::encode(key)?;
        self.with_lock(|ok| {
            ok?;
            let Probe::Found(i) = self.find(&kb[..n])? else {
                return Ok(None);
            };
            let len = self.word(H_LEN).load(Ordering::Relaxed);
            if len == 0 || len > self.cap as u64 {
                return Err(self.corrupt(format_args!(
                    "its length word says {len} while it holds the key"
                )));
            }
            Ok(Some(self.remove_locked(i, len)?))
        })
    }

    /// Removes the entry at slot `i`, found full, of a map of `len` entries (lock held);
    /// returns its value.
    fn remove_locked(&self, i: usize, len: u64) -> Result<V> {
        let v = self.value_of(i);
        self.bump_mods();
        // The commit: from here the entry is gone, and the hole gets closed.
        publish(self.log(), LOG_HOLE | i as u64);
        self.close_hole(i, 0)?;
        publish(self.word(H_LEN), len - 1);
        Ok(v)
    }

    fn bump_mods(&self) {
        let mods = self.word(H_MODS).load(Ordering::Relaxed);
        publish(self.word(H_MODS), mods.wrapping_add(1));
    }

    /// The insertion stamp of entry `i`.
    fn seq_of(&self, i: usize) -> u64 {
        self.mem().read_pod(self.body(i) + B_SEQ)
    }

    /// The full slots with their stamps, in insertion order (lock held).
    fn order(&self) -> Vec<(usize, u64)> {
        let mut order: Vec<(usize, u64)> = (0..self.slots)
            .filter(|&i| self.state(i).load(Ordering::Relaxed) == FULL)
            .map(|i| (i, self.seq_of(i)))
            .collect();
        order.sort_by_key(|&(_, seq)| seq);
        order
    }

    fn entry_at(&self, i: usize) -> (K, V) {
        let (key, n) = self.key_of(i);
        (K::from_key_bytes(&key[..n]), self.value_of(i))
    }

    /// Removes and returns the entry inserted last (Python 3.7+'s `d.popitem()`, with
    /// `None` for the `KeyError` of an empty dict).
    ///
    /// # Errors
    /// [`ErrorKind::Corrupt`] when the map's shared state was overwritten.
    ///
    /// # Examples
    /// ```
    /// let d = ndshm::SharedMap::<String, i32>::new(8)?;
    /// d.insert("a", 1)?;
    /// d.insert("b", 2)?;
    /// d.insert("a", 3)?; // a replacement keeps the key's place
    /// assert_eq!(d.popitem()?, Some(("b".to_string(), 2))); // d.popitem()
    /// assert_eq!(d.popitem()?, Some(("a".to_string(), 3)));
    /// assert_eq!(d.popitem()?, None);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn popitem(&self) -> Result<Option<(K, V)>> {
        self.with_lock(|ok| {
            ok?;
            let last = (0..self.slots)
                .filter(|&i| self.state(i).load(Ordering::Relaxed) == FULL)
                .max_by_key(|&i| self.seq_of(i));
            let Some(i) = last else {
                return Ok(None);
            };
            let len = self.word(H_LEN).load(Ordering::Relaxed);
            if len == 0 || len > self.cap as u64 {
                return Err(self.corrupt(format_args!(
                    "its length word says {len} while slot {i} is full"
                )));
            }
            let (key, _) = self.entry_at(i);
            let v = self.remove_locked(i, len)?;
            Ok(Some((key, v)))
        })
    }

    /// Applies `f` to the value of `key` (or to `default` when absent) and stores the
    /// result, as one step under the lock; returns the new value.
    ///
    /// # Errors
    /// As [`insert`](Self::insert).
    ///
    /// # Examples
    /// ```
    /// let words = ndshm::SharedMap::<String, u32>::new(16)?;
    /// for w in ["a", "b", "a"] {
    ///     words.update(w, 0, |n| n + 1)?; // one step under the lock: no lost update
    /// }
    /// assert_eq!(words.get("a")?, Some(2));
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn update<Q>(&self, key: &Q, default: V, f: impl FnOnce(V) -> V) -> Result<V>
    where
        K: Borrow<Q>,
        Q: KeyBytes + ?Sized,
    {
        let (kb, n) = Self::encode(key)?;
        self.with_lock(|ok| {
            ok?;
            let old = match self.find(&kb[..n])? {
                Probe::Found(i) => self.value_of(i),
                Probe::Vacant(_) => default,
            };
            let v = f(old);
            self.insert_locked(&kb, n, v)?;
            Ok(v)
        })
    }

    /// Entries in the map. (Of a map whose shared state was overwritten, what its length
    /// word says; its fallible operations say [`ErrorKind::Corrupt`].)
    pub fn len(&self) -> usize {
        self.with_lock(|_| self.word(H_LEN).load(Ordering::Relaxed) as usize)
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most entries the map can hold.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// A snapshot of all entries, in insertion order (Python's `list(d.items())`), taken
    /// in one step under the lock. (Of a map whose shared state was overwritten, what its
    /// table holds.)
    ///
    /// # Examples
    /// ```
    /// let map = ndshm::SharedMap::<u32, u32>::new(8)?;
    /// for k in [3, 1, 2] {
    ///     map.insert(&k, k * 10)?;
    /// }
    /// assert_eq!(map.to_vec(), [(3, 30), (1, 10), (2, 20)]);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn to_vec(&self) -> Vec<(K, V)> {
        self.with_lock(|_| {
            self.order()
                .into_iter()
                .map(|(i, _)| self.entry_at(i))
                .collect()
        })
    }

    /// Iterates over the entries in insertion order (Python's `for k, v in d.items()`),
    /// reading each entry's current value when it comes to it; `.rev()` (or
    /// [`reversed`](Self::reversed)) walks from the last inserted.
    ///
    /// Each step takes the lock. A key inserted or removed while iterating, by this
    /// process or another, makes the next step an [`ErrorKind::ChangedDuringIteration`]
    /// error, after which the iterator ends (Python's `RuntimeError: dictionary changed
    /// size during iteration`); replacing values is fine. To change the keys while
    /// walking them, walk a [`to_vec`](Self::to_vec) snapshot instead.
    ///
    /// # Examples
    /// ```
    /// let d = ndshm::SharedMap::<String, u8>::new(8)?;
    /// d.insert("x", 1)?;
    /// d.insert("y", 2)?;
    /// for entry in d.iter() {
    ///     let (k, v) = entry?;
    ///     d.insert(&k, v * 10)?; // replacing values while iterating is fine
    /// }
    /// assert_eq!(d.to_vec(), [("x".to_string(), 10), ("y".to_string(), 20)]);
    ///
    /// let mut it = d.iter();
    /// it.next().transpose()?;
    /// d.insert("z", 3)?; // d["z"] = 3 while iterating
    /// let err = it.next().unwrap().unwrap_err();
    /// assert_eq!(err.kind(), ndshm::ErrorKind::ChangedDuringIteration);
    /// assert!(it.next().is_none());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn iter(&self) -> MapIter<'_, K, V> {
        let start = self.with_lock(|ok| {
            ok?;
            Ok((self.word(H_MODS).load(Ordering::Relaxed), self.order()))
        });
        let (mods, order, pending) = match start {
            Ok((mods, order)) => (mods, order, None),
            Err(e) => (0, Vec::new(), Some(e)),
        };
        MapIter {
            map: self,
            front: 0,
            back: order.len(),
            order,
            mods,
            pending,
        }
    }

    /// The keys, in insertion order (Python's `for k in d`): [`iter`](Self::iter)'s keys.
    ///
    /// # Examples
    /// ```
    /// let d = ndshm::SharedMap::<u64, f64>::new(8)?;
    /// d.insert(&9, 0.5)?;
    /// d.insert(&4, 1.5)?;
    /// assert_eq!(d.keys().collect::<ndshm::Result<Vec<_>>>()?, [9, 4]);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = Result<K>> + '_ {
        self.iter().map(|e| e.map(|(k, _)| k))
    }

    /// The values, in insertion order (Python's `d.values()`): [`iter`](Self::iter)'s
    /// values.
    ///
    /// # Examples
    /// ```
    /// let d = ndshm::SharedMap::<u64, f64>::new(8)?;
    /// d.insert(&9, 0.5)?;
    /// d.insert(&4, 1.5)?;
    /// assert_eq!(d.values().collect::<ndshm::Result<Vec<_>>>()?, [0.5, 1.5]);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn values(&self) -> impl DoubleEndedIterator<Item = Result<V>> + '_ {
        self.iter().map(|e| e.map(|(_, v)| v))
    }

    /// The entries from the last inserted to the first (Python's `reversed(d.items())`;
    /// `d.keys().rev()` for `reversed(d)`).
    ///
    /// # Examples
    /// ```
    /// let d = ndshm::SharedMap::<i32, i32>::new(8)?;
    /// for k in [1, 2, 3] {
    ///     d.insert(&k, -k)?;
    /// }
    /// let back: Vec<_> = d.reversed().collect::<ndshm::Result<_>>()?;
    /// assert_eq!(back, [(3, -3), (2, -2), (1, -1)]);
    /// assert_eq!(d.keys().rev().collect::<ndshm::Result<Vec<_>>>()?, [3, 2, 1]); // reversed(d)
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn reversed(&self) -> std::iter::Rev<MapIter<'_, K, V>> {
        self.iter().rev()
    }

    /// One step of an iteration: the entry at slot `i` stamped `seq`, if the keys did not
    /// change since the iteration started at key-set version `mods`.
    fn step(&self, i: usize, seq: u64, mods: u64) -> Result<(K, V)> {
        self.with_lock(|ok| {
            ok?;
            if self.word(H_MODS).load(Ordering::Relaxed) != mods
                || self.state(i).load(Ordering::Relaxed) != FULL
                || self.seq_of(i) != seq
            {
                let name = self.region.name().unwrap_or("(anonymous)");
                return Err(Error::new(
                    ErrorKind::ChangedDuringIteration,
                    format!(
                        "map '{name}' changed size during iteration (a key was inserted or \
                         removed, by this process or another); to change the keys while \
                         walking them, walk a to_vec() snapshot"
                    ),
                ));
            }
            Ok(self.entry_at(i))
        })
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

/// An iteration over a [`SharedMap`] in insertion order: see [`SharedMap::iter`]. Yields
/// `Result<(K, V)>`; after an error it ends.
///
/// # Examples
/// ```
/// let d = ndshm::SharedMap::<u32, u32>::new(4)?;
/// d.insert(&1, 10)?;
/// let mut it: ndshm::MapIter<'_, u32, u32> = d.iter();
/// assert_eq!(it.next().transpose()?, Some((1, 10)));
/// assert!(it.next().is_none());
/// # Ok::<(), ndshm::Error>(())
/// ```
pub struct MapIter<'a, K: MapKey, V: Pod> {
    map: &'a SharedMap<K, V>,
    /// (slot, stamp) of the entries when the iteration started, in insertion order.
    order: Vec<(usize, u64)>,
    front: usize,
    back: usize,
    /// The key-set version when the iteration started.
    mods: u64,
    /// An error to yield before ending (from the start, or from a step).
    pending: Option<Error>,
}

impl<K: MapKey, V: Pod> MapIter<'_, K, V> {
    fn at(&mut self, k: usize) -> Option<Result<(K, V)>> {
        let (i, seq) = self.order[k];
        let r = self.map.step(i, seq, self.mods);
        if r.is_err() {
            self.front = self.back;
        }
        Some(r)
    }
}

impl<K: MapKey, V: Pod> Iterator for MapIter<'_, K, V> {
    type Item = Result<(K, V)>;

    fn next(&mut self) -> Option<Result<(K, V)>> {
        if let Some(e) = self.pending.take() {
            return Some(Err(e));
        }
        if self.front == self.back {
            return None;
        }
        self.front += 1;
        self.at(self.front - 1)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.back - self.front + usize::from(self.pending.is_some());
        (0, Some(n))
    }
}

impl<K: MapKey, V: Pod> DoubleEndedIterator for MapIter<'_, K, V> {
    fn next_back(&mut self) -> Option<Result<(K, V)>> {
        if let Some(e) = self.pending.take() {
            return Some(Err(e));
        }
        if self.front == self.back {
            return None;
        }
        self.back -= 1;
        self.at(self.back)
    }
}

impl<K: MapKey + fmt::Debug, V: Pod> fmt::Debug for MapIter<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapIter")
            .field("map", &self.map.name())
            .field("left", &(self.back - self.front))
            .finish()
    }
}
