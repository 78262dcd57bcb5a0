//! The lock every [`SharedNdArray`] carries in its segment's trailer: Python's
//! `Array(...).get_lock()`.

use std::fmt;
use std::time::Duration;

use ndarray::{ArrayView, Dimension};

use crate::array::{ReadWrite, SharedNdArray};
use crate::element::Element;
use crate::error::{Error, ErrorKind, Result};
use crate::sync::lock::LockGuard;
use crate::sys::mutex::RobustMutex;

fn raw_lock<T: Element, D: Dimension>(a: &SharedNdArray<T, D>) -> Result<&RobustMutex> {
    let seg = a.segment();
    match seg.trailer() {
        Some(t) => Ok(t.lock()),
        None => Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "segment '{}' has no ndshm trailer (a plain .npy file or a foreign segment), so \
                 it carries no lock; use a separate ndshm::Lock",
                seg.name()
            ),
        )),
    }
}

impl<T: Element, D: Dimension> SharedNdArray<T, D, ReadWrite> {
    /// Takes the array's own robust lock and returns a guard with mutable access: the
    /// counterpart of `with arr.get_lock(): ...` in Python.
    ///
    /// The lock lives in the segment's trailer, so every process that attached the array
    /// shares it. It protects the data only if *every* process that writes the array while
    /// others use it does so under this lock — the promise callers of
    /// [`open`](SharedNdArray::open) make. Within this process the guard borrows the handle
    /// mutably, so no unlocked view can coexist with it.
    ///
    /// If the previous holder died while holding it, the guard's
    /// [`owner_died`](ArrayLockGuard::owner_died) is `true`: the data may be half-updated.
    ///
    /// The lock behaves as [`Lock`](crate::Lock)'s does: robust (the kernel reports a
    /// holder that died), owned by the locking thread (the guard is `!Send`).
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`] for a segment without an ndshm trailer (a plain `.npy`
    /// file attached with `open`); [`ErrorKind::WrongProcess`] when the handle was made by
    /// another process and inherited through `fork`; an I/O or [`ErrorKind::InvalidHeader`]
    /// error for a lock that a foreign program broke or never initialised.
    ///
    /// # Examples
    /// ```
    /// use ndshm::SharedNdArray;
    /// # let name = format!("doc-array-lock-{}", std::process::id());
    /// let mut a = SharedNdArray::<i32, ndarray::Ix1>::zeros(&name, 5)?;
    /// let mut g = a.lock()?;
    /// g.view_mut().map_inplace(|x| *x += 1);
    /// drop(g);
    /// assert_eq!(a.as_slice().unwrap(), &[1, 1, 1, 1, 1]);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn lock(&mut self) -> Result<ArrayLockGuard<'_, T, D>> {
        self.check_bound_here()?;
        // The exclusive borrow becomes a shared one held by the guard alone, which gives
        // mutable views only through `&mut` of itself.
        let array: &SharedNdArray<T, D> = self;
        let guard = raw_lock(array)?.lock_guard_or_error("the array's lock")?;
        Ok(ArrayLockGuard { guard, array })
    }

    /// [`lock`](Self::lock), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`], and the errors of [`lock`](Self::lock).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// # let name = format!("doc-lock-timeout-{}", std::process::id());
    /// let mut a = ndshm::SharedNdArray::<u32, ndarray::Ix1>::zeros(&name, 2)?;
    /// let mut g = a.lock_timeout(Duration::from_secs(5))?;
    /// g.view_mut()[0] = 1;
    /// assert!(!g.owner_died());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn lock_timeout(&mut self, timeout: Duration) -> Result<ArrayLockGuard<'_, T, D>> {
        self.check_bound_here()?;
        let array: &SharedNdArray<T, D> = self;
        let guard = raw_lock(array)?.lock_timeout_guard(timeout, "the array's lock")?;
        Ok(ArrayLockGuard { guard, array })
    }

    /// [`lock`](Self::lock) without waiting: `Ok(None)` when another process holds it.
    ///
    /// # Errors
    /// As [`lock`](Self::lock).
    ///
    /// # Examples
    /// ```
    /// # let name = format!("doc-try-lock-{}", std::process::id());
    /// let mut a = ndshm::SharedNdArray::<u32, ndarray::Ix1>::zeros(&name, 2)?;
    /// if let Some(mut g) = a.try_lock()? {
    ///     g.as_slice_memory_order_mut()[1] = 9;
    /// }
    /// assert_eq!(a.view()[1], 9);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn try_lock(&mut self) -> Result<Option<ArrayLockGuard<'_, T, D>>> {
        self.check_bound_here()?;
        let array: &SharedNdArray<T, D> = self;
        Ok(raw_lock(array)?
            .try_lock_guard_or_error("the array's lock")?
            .map(|guard| ArrayLockGuard { guard, array }))
    }
}

/// Mutable access to a [`SharedNdArray`] while its lock is held; see
/// [`SharedNdArray::lock`]. Dropping it unlocks.
///
/// Like the array, the guard works only in the process that made it: a copy inherited
/// through `fork` panics on every access (naming the rule), and dropping it there releases
/// nothing.
///
/// # Examples
/// ```
/// # let name = format!("doc-guard-{}", std::process::id());
/// let mut a = ndshm::SharedNdArray::<f64, ndarray::Ix1>::zeros(&name, 3)?;
/// {
///     let mut g: ndshm::ArrayLockGuard<'_, f64, ndarray::Ix1> = a.lock()?;
///     g.view_mut().fill(2.0);
///     assert_eq!(g.view().sum(), 6.0);
/// } // unlocked here
/// # Ok::<(), ndshm::Error>(())
/// ```
pub struct ArrayLockGuard<'a, T: Element, D: Dimension> {
    // Declared first: unlocks before the borrow of the array ends.
    guard: LockGuard<'a>,
    /// Made from the exclusive borrow `lock` took: this guard is the handle's only user
    /// while it lives (its mutable views are in `view.rs`).
    pub(super) array: &'a SharedNdArray<T, D>,
}

impl<T: Element, D: Dimension> ArrayLockGuard<'_, T, D> {
    /// Whether the previous holder died while holding the lock.
    pub fn owner_died(&self) -> bool {
        self.guard.owner_died()
    }

    /// A view of the array.
    pub fn view(&self) -> ArrayView<'_, T, D> {
        self.array.view()
    }
}

impl<T: Element, D: Dimension> fmt::Debug for ArrayLockGuard<'_, T, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArrayLockGuard")
            .field("array", &self.array.name())
            .field("owner_died", &self.owner_died())
            .finish()
    }
}
