//! `SharedList<T>`: an append-only list of `Pod` items with a fixed capacity, in shared
//! memory: Python's `Manager().list()` without the server process.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};

use bytemuck::Pod;

use crate::error::{Error, ErrorKind, Result};
use crate::segment::region::{header_word, type_tag, Region};
use crate::segment::trailer::SegmentKind;
use crate::segment::CreateOptions;

const MAGIC: u64 = u64::from_le_bytes(*b"NDSHMLS1");
const HEADER: usize = 64;
const H_CAP: usize = 8;
const H_SIZE: usize = 16;
const H_TAG: usize = 24;
const H_LEN: usize = 32;

/// An append-only list of `Pod` items in shared memory, with a capacity fixed at creation.
///
/// [`push`](SharedList::push) appends under the list's robust lock; an item, once pushed,
/// never changes, so readers ([`get`](SharedList::get), [`to_vec`](SharedList::to_vec),
/// [`iter`](SharedList::iter)) take no lock. Past the capacity, `push` is an
/// [`ErrorKind::Full`] error: nothing is ever overwritten. If a process dies in the middle
/// of a push, that item is simply not in the list (the length is published last).
///
/// Opening by name is safe: items are written only below the unpublished length, under
/// the lock, and read only below the published length.
///
/// # Examples
/// ```
/// let list = ndshm::SharedList::<i32>::new(10)?;
/// ndshm::scope(|s| -> ndshm::Result<()> {
///     for i in 0..5 {
///         let list = &list;
///         s.spawn(move || list.push(i).map(drop))?;
///     }
///     Ok(())
/// })?;
/// let mut items = list.to_vec();
/// items.sort();
/// assert_eq!(items, [0, 1, 2, 3, 4]);
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
            .checked_mul(std::mem::size_of::<T>())
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
            return bad("bad magic");
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

    fn len_word(&self) -> &AtomicU64 {
        self.region.payload().u64(H_LEN)
    }

    /// Where item `i` starts in the payload (unaligned: the items follow a 64-byte
    /// header); `i < cap`, and the payload holds `HEADER + cap * size` bytes (validated).
    fn item_offset(&self, i: usize) -> usize {
        debug_assert!(i < self.cap);
        HEADER + i * std::mem::size_of::<T>()
    }

    /// Item `i`, which was published (below the length read with Acquire) and so never
    /// changes again.
    fn read_item(&self, i: usize) -> T {
        self.region.payload().read_pod(self.item_offset(i))
    }

    /// Appends `item` and returns its index.
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
        let _g = self.region.lock().lock_guard();
        let len = (self.len_word().load(Ordering::Acquire) as usize).min(self.cap);
        if len == self.cap {
            return Err(Error::new(
                ErrorKind::Full,
                format!(
                    "the list holds its capacity of {} items; create it with a larger capacity",
                    self.cap
                ),
            ));
        }
        // Index `len` is not yet published and we hold the lock: no other process reads
        // or writes it.
        self.region
            .payload()
            .write_pod(self.item_offset(len), &item);
        self.len_word().store(len as u64 + 1, Ordering::Release);
        Ok(len)
    }

    /// Items in the list.
    pub fn len(&self) -> usize {
        (self.len_word().load(Ordering::Acquire) as usize).min(self.cap)
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most items the list can hold.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Item `i`, if there is one.
    ///
    /// # Examples
    /// ```
    /// let list = ndshm::SharedList::<i32>::new(4)?;
    /// list.push(-1)?;
    /// assert_eq!(list.get(0), Some(-1));
    /// assert_eq!(list.get(1), None);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn get(&self, i: usize) -> Option<T> {
        (i < self.len()).then(|| self.read_item(i))
    }

    /// A copy of all items, in the order they were pushed.
    pub fn to_vec(&self) -> Vec<T> {
        self.iter().collect()
    }

    /// The items present now, in order.
    ///
    /// # Examples
    /// ```
    /// let list = ndshm::SharedList::<u16>::new(4)?;
    /// for x in [3, 1, 2] {
    ///     list.push(x)?;
    /// }
    /// assert_eq!(list.iter().sum::<u16>(), 6);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        let n = self.len();
        (0..n).map(move |i| self.read_item(i))
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
