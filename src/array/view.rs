//! The array views: the only place in `array/` that forms Rust references to shared
//! memory — `ArrayView`/`ArrayViewMut` and slices over the data of a mapped array segment.
//!
//! Every view rests on three facts, established when the handle was made and never changed
//! afterwards: the data range `[offset, offset + nbytes)` lies inside the payload of the
//! mapping (so never over the trailer, which is reached only through `SharedMem`), it is
//! aligned for the element type (`read_header` checks it; a created segment's header is a
//! multiple of 64 bytes long and the mapping is page-aligned), and the shape and order are
//! those the header declared. Aliasing within this process is ruled out by Rust borrows of
//! the handle plus the registry (one read-write handle, or read-only handles only, per
//! segment); across processes it is the promise the caller of the `unsafe` `open*` made
//! (or there are no other processes yet, for a segment we created).

use std::fmt;

use ndarray::{ArrayView, ArrayViewMut, Dimension, IxDyn, ShapeBuilder};

use crate::array::dynamic::DynSharedArray;
use crate::array::lock::ArrayLockGuard;
use crate::array::typed::SharedNdArray;
use crate::array::{AccessMode, ReadWrite};
use crate::element::Element;
use crate::error::foreign_handle_panic;

pub(super) fn with_order<D: Dimension>(dim: D, fortran: bool) -> ndarray::Shape<D> {
    if fortran {
        dim.f()
    } else {
        dim.into_shape_with_order()
    }
}

impl<T: Element, D: Dimension> SharedNdArray<T, D, ReadWrite> {
    /// A mutable view of the whole array.
    ///
    /// # Panics
    /// When the handle was made by another process and inherited through `fork` (see the
    /// [crate docs](crate#soundness)).
    ///
    /// # Examples
    /// ```
    /// # let name = format!("doc-view-mut-{}", std::process::id());
    /// let mut a = ndshm::SharedNdArray::<f64, ndarray::Ix2>::zeros(&name, (2, 3))?;
    /// a.view_mut().column_mut(1).fill(1.0);
    /// assert_eq!(a.view().sum(), 2.0);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn view_mut(&mut self) -> ArrayViewMut<'_, T, D> {
        self.assert_bound_here();
        // SAFETY: the data range [offset, offset + nbytes) lies inside the payload of the
        // mapping, which is writable (a ReadWrite handle maps PROT_READ|PROT_WRITE), and is
        // aligned for T; the shape and order are those the header declared (see the module
        // docs). `&mut self` excludes every other view of this handle, and the registry
        // lets no other handle of this segment, read-only or read-write, exist in this
        // process beside a read-write one. Other processes are bound by the `open`
        // contract (or never saw the segment, when we created it).
        unsafe {
            ArrayViewMut::from_shape_ptr(
                with_order(self.dim.clone(), self.fortran),
                self.data_ptr(),
            )
        }
    }

    /// The elements in memory order as a mutable slice (any layout: the segment is always
    /// contiguous).
    ///
    /// # Panics
    /// As [`view_mut`](Self::view_mut).
    ///
    /// # Examples
    /// ```
    /// # let name = format!("doc-slice-mo-mut-{}", std::process::id());
    /// let opts = ndshm::CreateOptions::named(&name).fortran_order(true);
    /// let mut a = ndshm::SharedNdArray::<u8, ndarray::Ix2>::zeros(opts, (2, 2))?;
    /// a.as_slice_memory_order_mut().copy_from_slice(&[1, 2, 3, 4]); // column by column
    /// assert_eq!(a.view()[[1, 0]], 2);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn as_slice_memory_order_mut(&mut self) -> &mut [T] {
        self.assert_bound_here();
        // SAFETY: as in `view_mut`: `len()` elements of T, aligned, in the writable mapping,
        // exclusively borrowed through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.data_ptr(), self.len()) }
    }

    /// The elements as a mutable slice, if the array is in standard (C) order.
    ///
    /// # Panics
    /// As [`view_mut`](Self::view_mut).
    ///
    /// # Examples
    /// ```
    /// # let name = format!("doc-slice-mut-{}", std::process::id());
    /// let mut a = ndshm::SharedNdArray::<i64, ndarray::Ix1>::zeros(&name, 3)?;
    /// a.as_slice_mut().unwrap().copy_from_slice(&[1, 2, 3]);
    /// assert_eq!(a.as_slice(), Some(&[1, 2, 3][..]));
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn as_slice_mut(&mut self) -> Option<&mut [T]> {
        if self.fortran && self.ndim() > 1 && !self.is_standard_layout() {
            None
        } else {
            Some(self.as_slice_memory_order_mut())
        }
    }
}

impl<T: Element, D: Dimension, A: AccessMode> SharedNdArray<T, D, A> {
    /// Start of the element data in the mapping (for the pool's job descriptors).
    pub(crate) fn data_ptr(&self) -> *mut T {
        // SAFETY: `offset` lies within the mapping: it is the header length (or 0 for
        // `open_raw`), at most the payload length, checked at open or by construction.
        unsafe { self.seg.as_ptr().add(self.offset).cast::<T>() }
    }

    /// A read-only view of the whole array.
    ///
    /// # Panics
    /// When the handle was made by another process and inherited through `fork`: a handle
    /// works only in the process that made it (see the [crate docs](crate#soundness)).
    ///
    /// # Examples
    /// ```
    /// # let name = format!("doc-view-{}", std::process::id());
    /// let a = ndshm::SharedNdArray::<f32, ndarray::Ix1>::from_elem(&name, 4, 2.5)?;
    /// let v = a.view();
    /// assert_eq!(v.len(), 4);
    /// assert_eq!(v.sum(), 10.0);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn view(&self) -> ArrayView<'_, T, D> {
        self.assert_bound_here();
        // SAFETY: the data range lies inside the payload of the mapping and is aligned for
        // T; the shape and order are those the header declared (see the module docs).
        // Writers in this process: through this handle they need `&mut self` (or the lock
        // guard, which holds the handle's exclusive borrow); no other handle of the
        // segment can write here (beside a read-write handle the registry admits no other
        // handle, and read-only handles never write). Writers in other processes are bound
        // by the `open` contract.
        unsafe {
            ArrayView::from_shape_ptr(with_order(self.dim.clone(), self.fortran), self.data_ptr())
        }
    }

    /// The elements in memory order (any layout: the segment is always contiguous).
    ///
    /// # Panics
    /// As [`view`](Self::view).
    ///
    /// # Examples
    /// ```
    /// # let name = format!("doc-slice-mo-{}", std::process::id());
    /// let opts = ndshm::CreateOptions::named(&name).fortran_order(true);
    /// let a = ndshm::SharedNdArray::from_array(opts, &ndarray::array![[1u8, 2], [3, 4]])?;
    /// assert_eq!(a.as_slice(), None); // not C order
    /// assert_eq!(a.as_slice_memory_order(), &[1, 3, 2, 4]);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn as_slice_memory_order(&self) -> &[T] {
        self.assert_bound_here();
        // SAFETY: as in `view`: the same `len()` elements of T, aligned, inside the payload,
        // with the same exclusion of writers.
        unsafe { std::slice::from_raw_parts(self.data_ptr(), self.len()) }
    }

    /// The elements as a slice, if the array is in standard (C) order.
    ///
    /// # Panics
    /// As [`view`](Self::view).
    pub fn as_slice(&self) -> Option<&[T]> {
        if self.is_standard_layout() {
            Some(self.as_slice_memory_order())
        } else {
            None
        }
    }
}

impl<A: AccessMode> DynSharedArray<A> {
    pub(super) fn fmt_as<T: Element>(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.seg.is_bound_here() {
            foreign_handle_panic("DynSharedArray");
        }
        let dim = IxDyn(&self.header.shape);
        // SAFETY: `Display` calls this with the T that the header's dtype names; the data
        // range lies inside the payload and is aligned for T (checked in `read_header`, or
        // by construction for a loaded array). A DynSharedArray never writes, and writers
        // through other handles are excluded as in `SharedNdArray::view` (the registry,
        // the `open` contract).
        let view = unsafe {
            ArrayView::<T, IxDyn>::from_shape_ptr(
                with_order(dim, self.header.fortran_order),
                self.seg.as_ptr().add(self.offset).cast::<T>(),
            )
        };
        fmt::Display::fmt(&view, f)
    }
}

impl<T: Element, D: Dimension> SharedNdArray<T, D, ReadWrite> {
    /// A mutable view through a shared borrow of the handle.
    ///
    /// # Safety
    /// For `'b`, the caller is the handle's only user: it holds a shared borrow made from
    /// an exclusive one, and hands out this view or other views of it only through
    /// exclusive borrows of itself.
    unsafe fn view_mut_through<'b>(&'b self) -> ArrayViewMut<'b, T, D> {
        self.assert_bound_here();
        // SAFETY: as in `view_mut` (data range in the writable mapping, aligned, the
        // declared shape); exclusivity within this process is the caller's contract.
        unsafe {
            ArrayViewMut::from_shape_ptr(
                with_order(self.dim.clone(), self.fortran),
                self.data_ptr(),
            )
        }
    }
}

impl<T: Element, D: Dimension> ArrayLockGuard<'_, T, D> {
    /// A mutable view of the array.
    ///
    /// # Examples
    /// ```
    /// # let name = format!("doc-guard-view-mut-{}", std::process::id());
    /// let mut a = ndshm::SharedNdArray::<u8, ndarray::Ix1>::zeros(&name, 3)?;
    /// let mut g = a.lock()?;
    /// g.view_mut()[1] = 4;
    /// assert_eq!(g.view()[1], 4);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn view_mut(&mut self) -> ArrayViewMut<'_, T, D> {
        // SAFETY: the guard holds the array through a shared borrow made from the
        // exclusive borrow `SharedNdArray::lock` took, and hands out views only through
        // `&self` (shared views) or `&mut self` (this one): while this view lives, nothing
        // else in this process uses the handle.
        unsafe { self.array.view_mut_through() }
    }

    /// The elements in memory order, mutably.
    pub fn as_slice_memory_order_mut(&mut self) -> &mut [T] {
        self.array.assert_bound_here();
        // SAFETY: `len()` elements of T, aligned, in the writable mapping (as in
        // `view_mut`); exclusive for the borrow of `self`, as `view_mut` argues.
        unsafe { std::slice::from_raw_parts_mut(self.array.data_ptr(), self.array.len()) }
    }
}
