//! `SharedStruct<T>`: any `#[repr(C)]` `Pod` struct in shared memory under its robust
//! lock: Python's `Manager().Namespace()` without the server.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use bytemuck::Pod;

use crate::error::{foreign_handle_panic, Error, ErrorKind, Result};
use crate::segment::region::{header_word, type_tag, Region};
use crate::segment::shared_mem::LockedPod;
use crate::segment::trailer::SegmentKind;
use crate::segment::CreateOptions;
use crate::sync::lock::LockGuard;
use crate::sys::proc;

const MAGIC: u64 = u64::from_le_bytes(*b"NDSHMST1");
const HEADER: usize = 64;
const H_SIZE: usize = 8;
const H_TAG: usize = 16;
/// The largest alignment a value can get: the payload is page-aligned (pages are at least
/// 4096 bytes).
const MAX_ALIGN: usize = 4096;

/// A `Pod` struct in shared memory, reached only under its robust lock: namespace-like
/// state (`ns.x += 1`) shared by processes.
///
/// [`lock`](SharedStruct::lock) gives a guard that dereferences to `&mut T`; the guard is
/// the only way to the data, and the lock excludes every other process and thread, so the
/// access is exclusive. If the previous holder died mid-update,
/// [`StructGuard::owner_died`] says so.
///
/// Opening by name is safe: all access is under the lock.
///
/// # Examples
/// ```
/// #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
/// #[repr(C)]
/// struct Ns { x: i64, calls: u64 }
/// let ns = ndshm::SharedStruct::new(Ns { x: 0, calls: 0 })?;
/// ndshm::scope(|s| -> ndshm::Result<()> {
///     for _ in 0..5 {
///         s.spawn(|| { let mut g = ns.lock(); g.x += 1; g.calls += 1; })?;
///     }
///     Ok(())
/// })?;
/// assert_eq!(ns.load().x, 5);
/// # Ok::<(), ndshm::Error>(())
/// ```
pub struct SharedStruct<T: Pod> {
    region: Region,
    _marker: PhantomData<fn(T) -> T>,
}

impl<T: Pod> SharedStruct<T> {
    /// Where the value starts in the (page-aligned) payload: after the header, at a
    /// multiple of `align_of::<T>()` (the layout every process agrees on).
    fn data_offset() -> usize {
        HEADER.max(std::mem::align_of::<T>())
    }

    /// Refuses types the page-aligned payload cannot align.
    fn check_align() -> Result<()> {
        let align = std::mem::align_of::<T>();
        if align > MAX_ALIGN {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "{} needs {align}-byte alignment; a SharedStruct aligns its value to at \
                     most {MAX_ALIGN} bytes (a page): lower the type's #[repr(align)]",
                    std::any::type_name::<T>()
                ),
            ));
        }
        Ok(())
    }

    fn init(value: T) -> impl FnOnce(&mut [u8]) -> Result<()> {
        move |p: &mut [u8]| {
            p[0..8].copy_from_slice(&MAGIC.to_le_bytes());
            p[H_SIZE..H_SIZE + 8].copy_from_slice(&(std::mem::size_of::<T>() as u64).to_le_bytes());
            p[H_TAG..H_TAG + 8].copy_from_slice(&type_tag::<T>().to_le_bytes());
            let at = Self::data_offset();
            p[at..at + std::mem::size_of::<T>()].copy_from_slice(bytemuck::bytes_of(&value));
            Ok(())
        }
    }

    fn len() -> usize {
        Self::data_offset() + std::mem::size_of::<T>()
    }

    /// An anonymous struct, shared with children forked later.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when `T` needs more than 4096-byte alignment; an OS
    /// error when mapping fails.
    ///
    /// # Examples
    /// ```
    /// let n = ndshm::SharedStruct::new([0u64; 8])?;
    /// assert_eq!(n.load(), [0; 8]);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn new(value: T) -> Result<Self> {
        Self::check_align()?;
        Ok(Self::wrap(Region::anonymous(
            Self::len(),
            Self::init(value),
        )?))
    }

    /// Creates struct segment `name` holding `value`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when `T` needs more than 4096-byte alignment, and the
    /// errors of segment creation.
    ///
    /// # Examples
    /// ```
    /// use ndshm::{CreateOptions, SharedStruct};
    /// let s = SharedStruct::create(CreateOptions::unique(), 1u32)?;
    /// let same = SharedStruct::<u32>::open(s.name().unwrap())?; // as another process would
    /// same.store(5);
    /// assert_eq!(s.load(), 5);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn create(segment: impl Into<CreateOptions>, value: T) -> Result<Self> {
        let opts = &segment.into();
        Self::check_align()?;
        let region = Region::create(opts, SegmentKind::Struct, Self::len(), Self::init(value))?;
        Ok(Self::wrap(region))
    }

    /// Attaches struct segment `name` (safe: see the type's docs).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`], [`ErrorKind::KindMismatch`], [`ErrorKind::TypeMismatch`],
    /// [`ErrorKind::InvalidArgument`] (as for [`create`](Self::create)). (A struct may be
    /// opened any number of times, in this process too.)
    ///
    /// # Examples
    /// ```
    /// use ndshm::{ErrorKind, SharedStruct};
    /// # let name = format!("doc-struct-open-{}", std::process::id());
    /// let s = SharedStruct::create(&name, 1.5f64)?;
    /// assert_eq!(SharedStruct::<f64>::open(&name)?.load(), 1.5);
    /// let wrong = SharedStruct::<u32>::open(&name).unwrap_err();
    /// assert_eq!(wrong.kind(), ErrorKind::TypeMismatch);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn open(name: &str) -> Result<Self> {
        Self::check_align()?;
        let region = Region::open(name, SegmentKind::Struct, Self::len())?;
        if header_word(&region, 0) != MAGIC
            || header_word(&region, H_TAG) != type_tag::<T>()
            || header_word(&region, H_SIZE) != std::mem::size_of::<T>() as u64
        {
            return Err(Error::new(
                ErrorKind::TypeMismatch,
                format!(
                    "struct segment '{name}' does not hold a {}",
                    std::any::type_name::<T>()
                ),
            ));
        }
        Ok(Self::wrap(region))
    }

    fn wrap(region: Region) -> Self {
        SharedStruct {
            region,
            _marker: PhantomData,
        }
    }

    /// The guard for the struct's lock just taken: the value, in place.
    fn guard<'a>(&'a self, lock: LockGuard<'a>) -> StructGuard<'a, T> {
        let (held, owner_died) = lock.into_parts();
        // The payload holds data_offset() + size_of::<T>() bytes (checked at open/create),
        // data_offset() is a multiple of align_of::<T>() and the payload is page-aligned
        // (align_of::<T>() <= a page: checked at construction). `held` is the region's own
        // lock, which guards the value in every process (lock_pod's contract).
        let value = self.region.payload().lock_pod(Self::data_offset(), held);
        StructGuard {
            value,
            owner_died,
            token: proc::process_token(),
        }
    }

    /// Locks (waiting as long as a live thread of any process holds the lock) and gives
    /// `&mut T` access through the guard.
    ///
    /// # Panics
    /// When this thread holds the lock already (not reentrant: use
    /// [`lock_timeout`](Self::lock_timeout) to get [`ErrorKind::WouldDeadlock`] instead),
    /// or the lock is broken beyond repair by a foreign program.
    ///
    /// # Examples
    /// ```
    /// let n = ndshm::SharedStruct::new(0u64)?;
    /// {
    ///     let mut g = n.lock();
    ///     *g += 41;
    ///     *g += 1;
    /// } // unlocked here
    /// assert_eq!(n.load(), 42);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn lock(&self) -> StructGuard<'_, T> {
        self.guard(self.region.lock().lock_guard())
    }

    /// [`lock`](Self::lock) without waiting: `None` when a live thread holds the lock,
    /// this one included.
    ///
    /// # Panics
    /// When the lock is broken beyond repair by a foreign program.
    ///
    /// # Examples
    /// ```
    /// let n = ndshm::SharedStruct::new(0u64)?;
    /// let held = n.lock();
    /// assert!(n.try_lock().is_none()); // held, by this very thread
    /// drop(held);
    /// *n.try_lock().expect("free now") = 7;
    /// assert_eq!(n.load(), 7);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn try_lock(&self) -> Option<StructGuard<'_, T>> {
        self.region.lock().try_lock_guard().map(|g| self.guard(g))
    }

    /// [`lock`](Self::lock), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`] when a live thread held the lock all that time,
    /// [`ErrorKind::WouldDeadlock`] at once when it is this thread.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let n = ndshm::SharedStruct::new([0u32; 4])?;
    /// n.lock_timeout(Duration::from_secs(1))?[2] = 5;
    /// assert_eq!(n.load(), [0, 0, 5, 0]);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Result<StructGuard<'_, T>> {
        let g = self
            .region
            .lock()
            .lock_timeout_guard(timeout, "the struct's lock")?;
        Ok(self.guard(g))
    }

    /// A copy of the value (under the lock).
    ///
    /// # Examples
    /// ```
    /// let s = ndshm::SharedStruct::new(3i16)?;
    /// assert_eq!(s.load(), 3);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn load(&self) -> T {
        *self.lock()
    }

    /// Replaces the value (under the lock).
    ///
    /// # Examples
    /// ```
    /// let s = ndshm::SharedStruct::new([0u8; 3])?;
    /// s.store([1, 2, 3]);
    /// assert_eq!(s.load(), [1, 2, 3]);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn store(&self, value: T) {
        *self.lock() = value;
    }

    /// The segment name, or `None` for an anonymous struct.
    pub fn name(&self) -> Option<&str> {
        self.region.name()
    }
}

/// Exclusive access to a [`SharedStruct`]'s value, in place in shared memory; dropping it
/// unlocks.
///
/// Writes through the guard go straight to shared memory: if the holder dies in the middle
/// of an update, the next locker sees what it wrote so far, and
/// [`owner_died`](StructGuard::owner_died) tells it so.
///
/// The guard works only in the process that locked: a copy inherited through `fork`
/// panics on dereference (naming the rule) and releases nothing when dropped. (The
/// `SharedStruct` itself stays usable in forked children: lock it there.)
///
/// # Examples
/// ```
/// #[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
/// #[repr(C)]
/// struct Stats { n: u64, sum: f64 }
/// let stats = ndshm::SharedStruct::new(Stats { n: 0, sum: 0.0 })?;
/// let mut g = stats.lock();
/// g.n += 1;
/// g.sum += 2.5;
/// assert!(!g.owner_died());
/// drop(g);
/// assert_eq!(stats.load().sum, 2.5);
/// # Ok::<(), ndshm::Error>(())
/// ```
pub struct StructGuard<'a, T: Pod> {
    /// The value, borrowed under the lock (unlocks when dropped).
    value: LockedPod<'a, T>,
    owner_died: bool,
    /// Token of the process that took the lock.
    token: u64,
}

impl<T: Pod> StructGuard<'_, T> {
    #[inline]
    #[track_caller]
    fn assert_bound_here(&self) {
        if self.token != proc::process_token() {
            foreign_handle_panic("StructGuard");
        }
    }

    /// Whether the previous holder died while holding the lock.
    pub fn owner_died(&self) -> bool {
        self.owner_died
    }
}

impl<T: Pod> Deref for StructGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.assert_bound_here();
        &self.value
    }
}

impl<T: Pod> DerefMut for StructGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.assert_bound_here();
        &mut self.value
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for StructGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for SharedStruct<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedStruct")
            .field("name", &self.name())
            .field("value", &self.load())
            .finish()
    }
}
