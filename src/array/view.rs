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
    pub fn view_mut(&mut self) -> ArrayViewMut<'_, T, D> {
        self.assert_bound_here();
        // SAFETY: the data range [offset, offset + len * size_of::<T>()) was checked to lie
        // inside the mapping, which is writable (ReadWrite) and aligned for T; the shape and
        // order are those the header declared; `&mut self` is the only access to this
        // handle, and the registry guarantees no other handle of this segment exists in this
        // process. Other processes are bound by the `open` contract (or never saw the
        // segment, when we created it).
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
    pub fn as_slice_mut(&mut self) -> Option<&mut [T]> {
        if self.fortran && self.ndim() > 1 && !self.is_standard_layout() {
            None
        } else {
            Some(self.as_slice_memory_order_mut())
        }
    }
}

impl<T: Element, D: Dimension, A: AccessMode> SharedNdArray<T, D, A> {
    pub(crate) fn data_ptr(&self) -> *mut T {
        // SAFETY: `offset` was checked to lie within the mapping (it is the header length,
        // at most the payload length).
        unsafe { self.seg.as_ptr().add(self.offset).cast::<T>() }
    }
    /// A read-only view of the whole array.
    ///
    /// # Panics
    /// When the handle was made by another process and inherited through `fork`: a handle
    /// works only in the process that made it (see the [crate docs](crate#soundness)).
    pub fn view(&self) -> ArrayView<'_, T, D> {
        self.assert_bound_here();
        // SAFETY: the data range was checked to lie inside the mapping and is aligned for
        // T; the shape and order are those the header declared. Writers in this process need
        // `&mut self` (and there is only one handle per segment in a process); writers in
        // other processes are bound by the `open` contract.
        unsafe {
            ArrayView::from_shape_ptr(with_order(self.dim.clone(), self.fortran), self.data_ptr())
        }
    }

    /// The elements in memory order (any layout: the segment is always contiguous).
    ///
    /// # Panics
    /// As [`view`](Self::view).
    pub fn as_slice_memory_order(&self) -> &[T] {
        self.assert_bound_here();
        // SAFETY: as in `view`: `len()` elements of T, aligned, inside the mapping.
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
        // SAFETY: as in `SharedNdArray::view`: the header was validated at open, the data
        // lies inside the mapping and is aligned for T (checked in `read_header`).
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
