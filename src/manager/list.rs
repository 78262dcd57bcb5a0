//! `SharedList<T>`: a list of `Pod` items with a fixed capacity, in shared memory: Python's
//! `Manager().list()` without the server process.

use std::cmp::Ordering as CmpOrdering;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};

use bytemuck::Pod;

use crate::error::{Error, ErrorKind, Result};
use crate::manager::fault::{crash_point, publish, FAULT_EXIT};
use crate::segment::region::{header_word, type_tag, Region};
use crate::segment::trailer::SegmentKind;
use crate::segment::CreateOptions;
use crate::sync::lock::LockGuard;

const MAGIC: u64 = u64::from_le_bytes(*b"NDSHMLS2");
const HEADER: usize = 64;
const H_CAP: usize = 8;
const H_SIZE: usize = 16;
const H_TAG: usize = 24;
/// The commit word: which of the two item buffers is current (top bit) and the length.
const H_STATE: usize = 32;
/// The pending replacement: 0, or `i + 1` when the log item must be copied to item `i`.
const H_LOG: usize = 40;
const BUF_BIT: u64 = 1 << 63;

/// The list's committed state, as one word says it.
#[derive(Clone, Copy)]
struct State {
    buf: usize,
    len: usize,
}

/// A list of `Pod` items in shared memory, with a capacity fixed at creation: Python's
/// `Manager().list()` without a server process (an operation is a lock and a copy, not a
/// round trip).
///
/// Every operation holds the list's robust lock, so all processes see one list and each
/// call is one step for all of them. Growing past the capacity is an [`ErrorKind::Full`]
/// error (nothing is overwritten); an index past the end is an
/// [`ErrorKind::IndexOutOfRange`] error (Python's `IndexError`). Indexes are `usize`:
/// there are no negative indexes; `l[-1]` is `l.get(l.len() - 1)` or `l.last()`.
///
/// Readers get copies: [`get`](Self::get), [`to_vec`](Self::to_vec) and
/// [`iter`](Self::iter) (a snapshot taken under the lock in one step, so an iteration
/// never sees half of another process's `sort`).
///
/// # Crash consistency
/// A process may die (`SIGKILL`) between any two of its stores while it holds the lock;
/// the next operation, in any process, sees every call that returned, and the one in
/// flight either entirely or not at all: no item lost or duplicated. How:
/// - The list has two item buffers and one commit word that says which is current and
///   how long the list is. `push` and `extend` write past the end of the current buffer
///   and publish the new length; `pop` and `clear` only publish a length.
/// - Calls that move items (`insert`, `pop_at`, `remove`, `reverse`, `sort`) build the
///   new list in the other buffer and switch to it with one store of the commit word.
/// - `set` writes the new item into a log slot, records "item *i*" in the log word, then
///   writes the item and clears the word; whoever takes the lock next and finds the word
///   set redoes the copy.
///
/// The price is memory: a list of capacity *n* holds `2n + 1` items.
///
/// Opening by name is safe: all access is under the lock, and the commit word is clamped
/// to the capacity, so bytes written over the list by something else give wrong items,
/// never a panic or an access out of bounds.
///
/// # Examples
/// ```
/// // l = manager.list(); children append; l.sort()
/// let list = ndshm::SharedList::<i32>::new(10)?;
/// ndshm::scope(|s| -> ndshm::Result<()> {
///     for i in 0..5 {
///         let list = &list;
///         s.spawn(move || list.push(i).map(drop))?;
///     }
///     Ok(())
/// })?;
/// list.sort();
/// assert_eq!(list.to_vec(), [0, 1, 2, 3, 4]);
/// # Ok::<(), ndshm::Error>(())
/// ```
pub struct SharedList<T: Pod> {
    region: Region,
    cap: usize,
    _marker: PhantomData<fn(T) -> T>,
}

impl<T: Pod> SharedList<T> {
    fn layout(capacity: usize) -> Result<usize> {
        if capacity == 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "a list needs a capacity of at least 1 (capacity = 0): pass the most items \
                 it will hold",
            ));
        }
        capacity
            .checked_mul(2)
            .and_then(|n| n.checked_add(1))
            .and_then(|n| n.checked_mul(std::mem::size_of::<T>()))
            .and_then(|n| n.checked_add(HEADER))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::SizeOverflow,
                    format!("a list of {capacity} items overflows the address space"),
                )
            })
    }

    fn init(capacity: usize) -> impl FnOnce(&mut [u8]) -> Result<()> {
        move |p: &mut [u8]| {
            p[0..8].copy_from_slice(&MAGIC.to_le_bytes());
            p[H_CAP..H_CAP + 8].copy_from_slice(&(capacity as u64).to_le_bytes());
            p[H_SIZE..H_SIZE + 8].copy_from_slice(&(std::mem::size_of::<T>() as u64).to_le_bytes());
            p[H_TAG..H_TAG + 8].copy_from_slice(&type_tag::<T>().to_le_bytes());
            Ok(())
        }
    }
    /// An anonymous list of up to `capacity` items, shared with children forked later.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for a zero capacity, [`ErrorKind::SizeOverflow`], or
    /// an OS error when mapping fails.
    ///
    /// # Examples
    /// ```
    /// let list = ndshm::SharedList::<f64>::new(3)?;
    /// assert_eq!((list.len(), list.capacity()), (0, 3));
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn new(capacity: usize) -> Result<Self> {
        let region = Region::anonymous(Self::layout(capacity)?, Self::init(capacity))?;
        Ok(Self::wrap(region, capacity))
    }

    /// Creates list segment `name` of up to `capacity` items.
    ///
    /// # Errors
    /// As [`new`](Self::new), plus the errors of segment creation.
    ///
    /// # Examples
    /// ```
    /// use ndshm::{CreateOptions, SharedList};
    /// let list = SharedList::<u32>::create(CreateOptions::unique(), 8)?;
    /// list.push(7)?;
    /// let same = SharedList::<u32>::open(list.name().unwrap())?; // as another process would
    /// assert_eq!(same.to_vec(), [7]);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn create(segment: impl Into<CreateOptions>, capacity: usize) -> Result<Self> {
        let opts = &segment.into();
        let len = Self::layout(capacity)?;
        let region = Region::create(opts, SegmentKind::List, len, Self::init(capacity))?;
        Ok(Self::wrap(region, capacity))
    }

    /// Attaches list segment `name` (safe: see the type's docs).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`], [`ErrorKind::KindMismatch`], [`ErrorKind::TypeMismatch`],
    /// [`ErrorKind::InvalidHeader`]. (A list may be opened any number of times, in this
    /// process too.)
    ///
    /// # Examples
    /// ```
    /// use ndshm::{ErrorKind, SharedList};
    /// # let name = format!("doc-list-open-{}", std::process::id());
    /// let list = SharedList::<i64>::create(&name, 4)?;
    /// assert_eq!(SharedList::<i64>::open(&name)?.capacity(), 4);
    /// let wrong = SharedList::<f64>::open(&name).unwrap_err();
    /// assert_eq!(wrong.kind(), ErrorKind::TypeMismatch);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn open(name: &str) -> Result<Self> {
        let region = Region::open(name, SegmentKind::List, HEADER)?;
        let bad = |why: &str| {
            Err(Error::new(
                ErrorKind::InvalidHeader,
                format!("list segment '{name}': {why}; it is corrupted"),
            ))
        };
        if header_word(&region, 0) != MAGIC {
            return bad("bad magic (or a list made by an ndshm version with another layout)");
        }
        if header_word(&region, H_TAG) != type_tag::<T>()
            || header_word(&region, H_SIZE) != std::mem::size_of::<T>() as u64
        {
            return Err(Error::new(
                ErrorKind::TypeMismatch,
                format!(
                    "list segment '{name}' holds items of another type than {}",
                    std::any::type_name::<T>()
                ),
            ));
        }
        let cap = header_word(&region, H_CAP) as usize;
        match Self::layout(cap) {
            Ok(len) if len <= region.payload_len() => Ok(Self::wrap(region, cap)),
            _ => bad("its capacity does not fit its size"),
        }
    }

    fn wrap(region: Region, cap: usize) -> Self {
        SharedList {
            region,
            cap,
            _marker: PhantomData,
        }
    }

    /// Test hook: from now on this process leaves with `_exit(86)` at the `step`-th store
    /// of a list or map update (counted from this call, over every list and map of the
    /// process; 0 turns the hook off). Only for crash tests; not part of the API.
    #[doc(hidden)]
    pub fn __exit_at_step(step: u64) {
        crate::manager::fault::exit_at_step(step);
    }

    /// The exit code of [`__exit_at_step`](Self::__exit_at_step).
    #[doc(hidden)]
    pub const __FAULT_EXIT: i32 = FAULT_EXIT;

    fn word(&self, off: usize) -> &AtomicU64 {
        self.region.payload().u64(off)
    }

    /// The committed state (the length clamped to the capacity, whatever the word holds).
    fn state(&self) -> State {
        let s = self.word(H_STATE).load(Ordering::Acquire);
        State {
            buf: usize::from(s & BUF_BIT != 0),
            len: ((s & !BUF_BIT) as usize).min(self.cap),
        }
    }

    /// Publishes `st` with one store: the commit of every call that changes the list.
    fn commit(&self, st: State) {
        publish(
            self.word(H_STATE),
            if st.buf == 1 { BUF_BIT } else { 0 } | st.len as u64,
        );
    }

    /// Where item `i` of buffer `buf` starts (buffer 2 is the log slot, `i == 0`); the
    /// payload holds `HEADER + (2 cap + 1) size` bytes (checked at creation and open).
    fn offset(&self, buf: usize, i: usize) -> usize {
        debug_assert!(buf < 2 && i < self.cap || buf == 2 && i == 0);
        HEADER + (buf * self.cap + i) * std::mem::size_of::<T>()
    }

    fn read(&self, buf: usize, i: usize) -> T {
        self.region.payload().read_pod(self.offset(buf, i))
    }

    fn write(&self, buf: usize, i: usize, item: &T) {
        self.region.payload().write_pod(self.offset(buf, i), item);
    }

    /// Items `[from, from + out.len())` of buffer `buf`.
    fn read_run(&self, buf: usize, from: usize, out: &mut [T]) {
        if !out.is_empty() {
            let off = self.offset(buf, from);
            self.region
                .payload()
                .read(off, bytemuck::cast_slice_mut(out));
        }
    }

    /// Writes `items` from index `from` of buffer `buf`.
    fn write_run(&self, buf: usize, from: usize, items: &[T]) {
        if !items.is_empty() {
            let off = self.offset(buf, from);
            self.region
                .payload()
                .write(off, bytemuck::cast_slice(items));
        }
    }

    /// The items of the committed list (lock held).
    fn snapshot(&self, st: State) -> Vec<T> {
        let mut v = vec![T::zeroed(); st.len];
        self.read_run(st.buf, 0, &mut v);
        v
    }

    /// Makes `items` the list: written into the buffer that is not current, then switched
    /// to with one store (lock held; `items.len() <= cap`).
    fn replace_all(&self, st: State, items: &[T]) {
        let other = 1 - st.buf;
        self.write_run(other, 0, items);
        crash_point();
        self.commit(State {
            buf: other,
            len: items.len(),
        });
    }

    /// Runs `f` with the lock held and the committed state, after redoing a replacement
    /// that a holder which died left half done.
    fn locked<R>(&self, f: impl FnOnce(State) -> R) -> R {
        let guard: LockGuard<'_> = self.region.lock().lock_guard();
        let log = self.word(H_LOG).load(Ordering::Acquire);
        let st = self.state();
        if log != 0 {
            // Every holder clears the word before it unlocks: a set word means a holder
            // died between recording a replacement and finishing it.
            let i = (log - 1) as usize;
            if i < st.len {
                let item = self.read(2, 0);
                self.write(st.buf, i, &item);
            }
            publish(self.word(H_LOG), 0);
        }
        let r = f(st);
        drop(guard);
        r
    }

    fn full(&self, want: usize) -> Error {
        Error::new(
            ErrorKind::Full,
            format!(
                "the list holds {want} items too many for its capacity of {}; remove some or \
                 create it with a larger capacity",
                self.cap
            ),
        )
    }

    fn out_of_range(&self, i: usize, len: usize, what: &str) -> Error {
        Error::new(
            ErrorKind::IndexOutOfRange,
            format!("{what} index {i} is out of range for a list of {len} items"),
        )
    }

    /// Appends `item` and returns its index (Python's `l.append(x)`).
    ///
    /// # Errors
    /// [`ErrorKind::Full`] when the list holds `capacity` items already.
    ///
    /// # Examples
    /// ```
    /// let list = ndshm::SharedList::<u8>::new(2)?;
    /// assert_eq!(list.push(10)?, 0);
    /// assert_eq!(list.push(20)?, 1);
    /// assert_eq!(list.push(30).unwrap_err().kind(), ndshm::ErrorKind::Full);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn push(&self, item: T) -> Result<usize> {
        self.locked(|st| {
            if st.len == self.cap {
                return Err(self.full(1));
            }
            // Past the committed length: no reader looks there until the commit.
            self.write(st.buf, st.len, &item);
            crash_point();
            self.commit(State {
                len: st.len + 1,
                ..st
            });
            Ok(st.len)
        })
    }

    /// Appends every item of `items`, all or none (Python's `l.extend(items)`).
    ///
    /// # Errors
    /// [`ErrorKind::Full`] when they do not all fit; the list is then unchanged.
    ///
    /// # Examples
    /// ```
    /// let list = ndshm::SharedList::<u32>::new(4)?;
    /// list.extend([1, 2, 3])?; // l.extend([1, 2, 3])
    /// assert_eq!(list.extend([4, 5]).unwrap_err().kind(), ndshm::ErrorKind::Full);
    /// assert_eq!(list.to_vec(), [1, 2, 3]);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn extend(&self, items: impl IntoIterator<Item = T>) -> Result<()> {
        let items: Vec<T> = items.into_iter().collect();
        self.locked(|st| {
            if items.len() > self.cap - st.len {
                return Err(self.full(items.len() - (self.cap - st.len)));
            }
            self.write_run(st.buf, st.len, &items);
            crash_point();
            self.commit(State {
                len: st.len + items.len(),
                ..st
            });
            Ok(())
        })
    }

    /// Inserts `item` before index `index`, shifting the items after it (Python's
    /// `l.insert(i, x)`; `index == len()` appends).
    ///
    /// # Errors
    /// [`ErrorKind::IndexOutOfRange`] when `index > len()` (Python clamps such an index to
    /// the end; ndshm says so instead), [`ErrorKind::Full`] when the list is full.
    ///
    /// # Examples
    /// ```
    /// let list = ndshm::SharedList::<u8>::new(4)?;
    /// list.extend([b'a', b'c'])?;
    /// list.insert(1, b'b')?; // l.insert(1, 'b')
    /// assert_eq!(list.to_vec(), b"abc");
    /// assert_eq!(list.insert(9, b'z').unwrap_err().kind(), ndshm::ErrorKind::IndexOutOfRange);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn insert(&self, index: usize, item: T) -> Result<()> {
        self.locked(|st| {
            if index > st.len {
                return Err(self.out_of_range(index, st.len, "insertion"));
            }
            if st.len == self.cap {
                return Err(self.full(1));
            }
            let mut items = self.snapshot(st);
            items.insert(index, item);
            self.replace_all(st, &items);
            Ok(())
        })
    }

    /// Replaces item `index` with `item` and returns the item it held (Python's
    /// `l[i] = x`).
    ///
    /// # Errors
    /// [`ErrorKind::IndexOutOfRange`] when `index >= len()`.
    ///
    /// # Examples
    /// ```
    /// let list = ndshm::SharedList::<f64>::new(4)?;
    /// list.extend([1.0, 2.0])?;
    /// assert_eq!(list.set(0, 0.5)?, 1.0); // l[0] = 0.5
    /// assert_eq!(list.to_vec(), [0.5, 2.0]);
    /// assert_eq!(list.set(2, 3.0).unwrap_err().kind(), ndshm::ErrorKind::IndexOutOfRange);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn set(&self, index: usize, item: T) -> Result<T> {
        self.locked(|st| {
            if index >= st.len {
                return Err(self.out_of_range(index, st.len, "assignment"));
            }
            let old = self.read(st.buf, index);
            // Redo record first: the replacement is never torn.
            self.write(2, 0, &item);
            publish(self.word(H_LOG), index as u64 + 1);
            // In two halves, with a crash point between: the crash tests cut the copy in
            // the middle, as a SIGKILL may cut that of an item wider than a word.
            let (bytes, off) = (bytemuck::bytes_of(&item), self.offset(st.buf, index));
            let half = bytes.len() / 2;
            self.region.payload().write(off, &bytes[..half]);
            crash_point();
            self.region.payload().write(off + half, &bytes[half..]);
            crash_point();
            publish(self.word(H_LOG), 0);
            Ok(old)
        })
    }

    /// Item `index`, if there is one (Python's `l[i]`, with `None` for an `IndexError`).
    ///
    /// # Examples
    /// ```
    /// let list = ndshm::SharedList::<i32>::new(4)?;
    /// list.push(-1)?;
    /// assert_eq!(list.get(0), Some(-1));
    /// assert_eq!(list.get(1), None);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn get(&self, index: usize) -> Option<T> {
        self.locked(|st| (index < st.len).then(|| self.read(st.buf, index)))
    }

    /// The last item, if any (Python's `l[-1]`).
    ///
    /// # Examples
    /// ```
    /// let list = ndshm::SharedList::<u8>::new(4)?;
    /// assert_eq!(list.last(), None);
    /// list.extend([1, 2])?;
    /// assert_eq!(list.last(), Some(2));
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn last(&self) -> Option<T> {
        self.locked(|st| st.len.checked_sub(1).map(|i| self.read(st.buf, i)))
    }

    /// Removes and returns the last item (Python's `l.pop()`, with `None` for the
    /// `IndexError` of an empty list, as `Vec::pop`).
    ///
    /// # Examples
    /// ```
    /// let list = ndshm::SharedList::<i64>::new(4)?;
    /// list.extend([1, 2])?;
    /// assert_eq!(list.pop(), Some(2)); // l.pop()
    /// assert_eq!(list.pop(), Some(1));
    /// assert_eq!(list.pop(), None);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn pop(&self) -> Option<T> {
        self.locked(|st| {
            let last = st.len.checked_sub(1)?;
            let item = self.read(st.buf, last);
            self.commit(State { len: last, ..st });
            Some(item)
        })
    }

    /// Removes and returns item `index`, shifting the items after it (Python's
    /// `l.pop(i)`).
    ///
    /// # Errors
    /// [`ErrorKind::IndexOutOfRange`] when `index >= len()`.
    ///
    /// # Examples
    /// ```
    /// let list = ndshm::SharedList::<u16>::new(4)?;
    /// list.extend([7, 8, 9])?;
    /// assert_eq!(list.pop_at(0)?, 7); // l.pop(0)
    /// assert_eq!(list.to_vec(), [8, 9]);
    /// assert_eq!(list.pop_at(2).unwrap_err().kind(), ndshm::ErrorKind::IndexOutOfRange);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn pop_at(&self, index: usize) -> Result<T> {
        self.locked(|st| {
            if index >= st.len {
                return Err(self.out_of_range(index, st.len, "pop"));
            }
            let mut items = self.snapshot(st);
            let item = items.remove(index);
            self.replace_all(st, &items);
            Ok(item)
        })
    }

    /// Removes the first item equal to `item` (Python's `l.remove(x)`).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when no item is equal to it (Python's `ValueError`).
    ///
    /// # Examples
    /// ```
    /// let list = ndshm::SharedList::<i32>::new(4)?;
    /// list.extend([1, 2, 1])?;
    /// list.remove(&1)?; // l.remove(1)
    /// assert_eq!(list.to_vec(), [2, 1]);
    /// assert_eq!(list.remove(&5).unwrap_err().kind(), ndshm::ErrorKind::InvalidArgument);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn remove(&self, item: &T) -> Result<()>
    where
        T: PartialEq,
    {
        self.locked(|st| {
            let mut items = self.snapshot(st);
            let Some(at) = items.iter().position(|x| x == item) else {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    "list.remove(x): no item of the list is equal to x",
                ));
            };
            items.remove(at);
            self.replace_all(st, &items);
            Ok(())
        })
    }

    /// Removes every item (Python's `l.clear()`).
    ///
    /// # Examples
    /// ```
    /// let list = ndshm::SharedList::<u8>::new(4)?;
    /// list.extend([1, 2])?;
    /// list.clear();
    /// assert!(list.is_empty());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn clear(&self) {
        self.locked(|st| self.commit(State { len: 0, ..st }))
    }

    /// Reverses the order of the items (Python's `l.reverse()`).
    ///
    /// # Examples
    /// ```
    /// let list = ndshm::SharedList::<u8>::new(4)?;
    /// list.extend([1, 2, 3])?;
    /// list.reverse();
    /// assert_eq!(list.to_vec(), [3, 2, 1]);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn reverse(&self) {
        self.locked(|st| {
            let mut items = self.snapshot(st);
            items.reverse();
            self.replace_all(st, &items);
        })
    }

    /// Sorts the items (Python's `l.sort()`; stable). For floats, which are not `Ord`, use
    /// [`sort_by`](Self::sort_by) with `f64::total_cmp`.
    ///
    /// # Examples
    /// ```
    /// let list = ndshm::SharedList::<i32>::new(4)?;
    /// list.extend([3, -1, 2])?;
    /// list.sort(); // l.sort()
    /// assert_eq!(list.to_vec(), [-1, 2, 3]);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn sort(&self)
    where
        T: Ord,
    {
        self.sort_by(T::cmp)
    }

    /// Sorts the items with a comparator (stable). `compare` runs with the list's lock
    /// held: calling this list from it panics (the lock is not reentrant), and a panic in
    /// it leaves the list unchanged.
    ///
    /// # Examples
    /// ```
    /// let list = ndshm::SharedList::<f64>::new(4)?;
    /// list.extend([0.5, -2.0, 1.5])?;
    /// list.sort_by(|a, b| b.total_cmp(a)); // l.sort(reverse=True)
    /// assert_eq!(list.to_vec(), [1.5, 0.5, -2.0]);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn sort_by(&self, compare: impl FnMut(&T, &T) -> CmpOrdering) {
        self.locked(|st| {
            let mut items = self.snapshot(st);
            items.sort_by(compare);
            self.replace_all(st, &items);
        })
    }

    /// Sorts the items by a key (Python's `l.sort(key=f)`; stable). `key` runs with the
    /// lock held, as [`sort_by`](Self::sort_by)'s comparator does.
    ///
    /// # Examples
    /// ```
    /// let list = ndshm::SharedList::<i32>::new(4)?;
    /// list.extend([-3, 1, -2])?;
    /// list.sort_by_key(|x| x.abs()); // l.sort(key=abs)
    /// assert_eq!(list.to_vec(), [1, -2, -3]);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn sort_by_key<K: Ord>(&self, mut key: impl FnMut(&T) -> K) {
        self.sort_by(|a, b| key(a).cmp(&key(b)))
    }

    /// Whether an item equal to `item` is in the list (Python's `x in l`).
    ///
    /// # Examples
    /// ```
    /// let list = ndshm::SharedList::<u32>::new(4)?;
    /// list.push(3)?;
    /// assert!(list.contains(&3) && !list.contains(&4));
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn contains(&self, item: &T) -> bool
    where
        T: PartialEq,
    {
        self.index(item).is_some()
    }

    /// The index of the first item equal to `item` (Python's `l.index(x)`, with `None` for
    /// its `ValueError`).
    ///
    /// # Examples
    /// ```
    /// let list = ndshm::SharedList::<u32>::new(4)?;
    /// list.extend([5, 6, 5])?;
    /// assert_eq!(list.index(&5), Some(0));
    /// assert_eq!(list.index(&7), None);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn index(&self, item: &T) -> Option<usize>
    where
        T: PartialEq,
    {
        self.locked(|st| (0..st.len).find(|&i| self.read(st.buf, i) == *item))
    }

    /// Items in the list (Python's `len(l)`).
    pub fn len(&self) -> usize {
        self.state().len
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most items the list can hold.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// A copy of all items, in order (Python's `list(l)`), taken in one step under the
    /// lock.
    pub fn to_vec(&self) -> Vec<T> {
        self.locked(|st| self.snapshot(st))
    }

    /// Iterates over a snapshot of the items (Python's `for x in l`): the items as they
    /// were at the call, taken in one step under the lock. Changes made while iterating,
    /// here or in other processes, do not show; nothing is locked while iterating.
    ///
    /// # Examples
    /// ```
    /// let list = ndshm::SharedList::<u16>::new(8)?;
    /// list.extend([3, 1, 2])?;
    /// for x in list.iter() {
    ///     list.push(x)?; // the iteration goes on over the snapshot: it ends
    /// }
    /// assert_eq!(list.to_vec(), [3, 1, 2, 3, 1, 2]);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn iter(&self) -> std::vec::IntoIter<T> {
        self.to_vec().into_iter()
    }

    /// The segment name, or `None` for an anonymous list.
    pub fn name(&self) -> Option<&str> {
        self.region.name()
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for SharedList<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}
