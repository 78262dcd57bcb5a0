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
    /// [`ErrorKind::SizeOverflow`], or an OS error when mapping fails.
    pub fn new(capacity: usize) -> Result<Self> {
        let region = Region::anonymous(Self::layout(capacity)?, Self::init(capacity))?;
        Ok(Self::wrap(region, capacity))
    }

    /// Creates list segment `name` of up to `capacity` items.
    ///
    /// # Errors
    /// As [`new`](Self::new), plus the errors of segment creation.
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
    /// [`ErrorKind::InvalidHeader`], [`ErrorKind::AlreadyOpen`].
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
        // SAFETY: the header lies inside the payload (validated), 8-byte aligned; the
        // length is only accessed atomically.
        unsafe { &*(self.region.payload_ptr().add(H_LEN) as *const AtomicU64) }
    }

    fn item_ptr(&self, i: usize) -> *mut T {
        debug_assert!(i < self.cap);
        // SAFETY: `i < cap`, and the payload holds `HEADER + cap * size` bytes.
        unsafe {
            self.region
                .payload_ptr()
                .add(HEADER + i * std::mem::size_of::<T>())
                .cast()
        }
    }

    /// Appends `item` and returns its index.
    ///
    /// # Errors
    /// [`ErrorKind::Full`] when the list holds `capacity` items already.
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
        // SAFETY: index `len` is not yet published, and we hold the lock, so no other
        // process reads or writes it; unaligned write: the items follow a 64-byte header.
        unsafe { self.item_ptr(len).write_unaligned(item) };
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
    pub fn get(&self, i: usize) -> Option<T> {
        // SAFETY: `i < len`: the item was published (Acquire in `len`) and never changes.
        (i < self.len()).then(|| unsafe { self.item_ptr(i).read_unaligned() })
    }

    /// A copy of all items, in the order they were pushed.
    pub fn to_vec(&self) -> Vec<T> {
        self.iter().collect()
    }

    /// The items present now, in order.
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        let n = self.len();
        // SAFETY: as in `get`.
        (0..n).map(move |i| unsafe { self.item_ptr(i).read_unaligned() })
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
