//! [`DynSharedArray`] and [`open_dyn`]: an array segment attached without knowing its
//! element type or dimensionality.

use std::fmt;
use std::marker::PhantomData;

use ndarray::Dimension;

use crate::array::npy::NpyHeader;
use crate::array::typed::SharedNdArray;
use crate::array::typed::{dim_from_shape, read_header, type_mismatch};
use crate::array::{AccessMode, ReadOnly, ReadWrite};
use crate::element::{DType, Element};
use crate::error::{foreign_handle_panic, Error, Result};
use crate::segment::{MapAccess, Segment};

/// An array segment attached without knowing its element type: it reports dtype and shape,
/// and [`into_typed`](DynSharedArray::into_typed) turns it into a [`SharedNdArray`].
///
/// # Examples
/// ```
/// use ndshm::{DType, SharedNdArray};
/// # let name = format!("doc-dyn-{}", std::process::id());
/// let mut a = SharedNdArray::<u8, ndarray::Ix2>::zeros(&name, (2, 5))?;
/// a.persist();
/// drop(a);
/// // SAFETY: no other process writes this segment in this example.
/// let d = unsafe { ndshm::open_dyn(&name)? };
/// assert_eq!((d.dtype(), d.shape()), (DType::U8, &[2, 5][..]));
/// let mut typed = d.into_typed::<u8, ndarray::IxDyn>()?;
/// typed.unlink()?;
/// # Ok::<(), ndshm::Error>(())
/// ```
pub struct DynSharedArray<A: AccessMode = ReadWrite> {
    pub(super) seg: Segment,
    pub(super) header: NpyHeader,
    pub(super) offset: usize,
    pub(super) _access: PhantomData<A>,
}

/// Attaches to array segment `name` whatever its element type and dimensionality.
///
/// # Safety
/// As [`SharedNdArray::open`].
///
/// # Errors
/// As [`SharedNdArray::open`], less the type and dimension checks.
///
/// # Examples
/// ```
/// # let name = format!("doc-open-dyn-{}", std::process::id());
/// let mut a = ndshm::SharedNdArray::<i16, ndarray::Ix3>::zeros(&name, (2, 3, 4))?;
/// a.persist();
/// drop(a);
/// // SAFETY: no other process writes this segment in this example.
/// let mut d = unsafe { ndshm::open_dyn(&name)? };
/// assert_eq!((d.dtype(), d.shape(), d.len()), (ndshm::DType::I16, &[2, 3, 4][..], 24));
/// d.into_typed::<i16, ndarray::IxDyn>()?.unlink()?;
/// # Ok::<(), ndshm::Error>(())
/// ```
pub unsafe fn open_dyn(name: &str) -> Result<DynSharedArray> {
    DynSharedArray::attach(Segment::open(name, MapAccess::READ_WRITE)?)
}

impl DynSharedArray {
    /// Attaches to array segment `name` read-only (`PROT_READ`), whatever its element type
    /// and dimensionality: enough to print or save it, and it needs only read permission.
    ///
    /// # Safety
    /// As [`SharedNdArray::open_read_only`].
    ///
    /// # Errors
    /// As [`open_dyn`].
    ///
    /// # Examples
    /// ```
    /// # let name = format!("doc-dyn-ro-{}", std::process::id());
    /// let mut a = ndshm::SharedNdArray::<f32, ndarray::Ix1>::from_elem(&name, 3, 0.5)?;
    /// a.persist();
    /// drop(a);
    /// // SAFETY: no process writes this segment in this example.
    /// let d = unsafe { ndshm::DynSharedArray::open_read_only(&name)? };
    /// assert_eq!(d.to_string(), "[0.5, 0.5, 0.5]");
    /// ndshm::unlink(&name)?;
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub unsafe fn open_read_only(name: &str) -> Result<DynSharedArray<ReadOnly>> {
        DynSharedArray::attach(Segment::open(name, MapAccess::READ_ONLY)?)
    }
}

impl<A: AccessMode> DynSharedArray<A> {
    fn attach(seg: Segment) -> Result<Self> {
        let (header, offset) = read_header(&seg)?;
        Ok(DynSharedArray {
            seg,
            header,
            offset,
            _access: PhantomData,
        })
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.header.dtype
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.header.shape
    }

    /// Whether the header declares Fortran order.
    pub fn is_fortran_order(&self) -> bool {
        self.header.fortran_order
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.header.shape.iter().product()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of element data.
    pub fn nbytes(&self) -> usize {
        self.len() * self.header.dtype.size()
    }

    /// The segment's name.
    pub fn name(&self) -> &str {
        self.seg.name()
    }

    /// Whether dropping this handle unlinks the segment.
    pub fn is_owner(&self) -> bool {
        self.seg.is_owner()
    }

    /// See [`SharedNdArray::persist`].
    ///
    /// # Panics
    /// As [`SharedNdArray::persist`].
    ///
    /// # Examples
    /// ```
    /// # let name = format!("doc-dyn-persist-{}", std::process::id());
    /// let mut a = ndshm::SharedNdArray::<u8, ndarray::Ix1>::zeros(&name, 1)?;
    /// a.persist();
    /// drop(a);
    /// // SAFETY: no other process writes this segment in this example.
    /// let mut d = unsafe { ndshm::open_dyn(&name)? };
    /// assert!(!d.is_owner());
    /// d.persist(); // a no-op for an attached handle: it never owned the name
    /// drop(d);
    /// ndshm::unlink(&name)?;
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn persist(&mut self) {
        if !self.seg.is_bound_here() {
            foreign_handle_panic("DynSharedArray");
        }
        self.seg.persist();
    }

    pub(super) fn check_bound_here(&self) -> Result<()> {
        if self.seg.is_bound_here() {
            Ok(())
        } else {
            Err(Error::wrong_process("DynSharedArray", self.seg.name()))
        }
    }

    /// The typed handle, if the segment holds `T` in `D` dimensions.
    ///
    /// # Errors
    /// [`ErrorKind::TypeMismatch`](crate::ErrorKind::TypeMismatch),
    /// [`ErrorKind::DimensionMismatch`](crate::ErrorKind::DimensionMismatch);
    /// [`ErrorKind::WrongProcess`](crate::ErrorKind::WrongProcess) for a handle of another
    /// process.
    ///
    /// # Examples
    /// ```
    /// # let name = format!("doc-into-typed-{}", std::process::id());
    /// let mut a = ndshm::SharedNdArray::<u64, ndarray::Ix1>::from_elem(&name, 2, 7)?;
    /// a.persist();
    /// drop(a);
    /// // SAFETY: no other process writes this segment in this example.
    /// let d = unsafe { ndshm::open_dyn(&name)? };
    /// let mut typed = d.into_typed::<u64, ndarray::Ix1>()?;
    /// assert_eq!(typed.as_slice(), Some(&[7, 7][..]));
    /// typed.unlink()?;
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn into_typed<T: Element, D: Dimension>(self) -> Result<SharedNdArray<T, D, A>> {
        self.check_bound_here()?;
        if self.header.dtype != T::DTYPE {
            return Err(type_mismatch(self.seg.name(), self.header.dtype, T::DTYPE));
        }
        let dim = dim_from_shape(self.seg.name(), &self.header.shape)?;
        Ok(SharedNdArray {
            seg: self.seg,
            dim,
            fortran: self.header.fortran_order,
            offset: self.offset,
            _marker: PhantomData,
        })
    }
}

impl<A: AccessMode> fmt::Display for DynSharedArray<A> {
    /// ndarray's `Display` of the array (abbreviated with `...` for big arrays).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use num_complex::{Complex32, Complex64};
        match self.header.dtype {
            DType::I8 => self.fmt_as::<i8>(f),
            DType::U8 => self.fmt_as::<u8>(f),
            DType::I16 => self.fmt_as::<i16>(f),
            DType::U16 => self.fmt_as::<u16>(f),
            DType::I32 => self.fmt_as::<i32>(f),
            DType::U32 => self.fmt_as::<u32>(f),
            DType::I64 => self.fmt_as::<i64>(f),
            DType::U64 => self.fmt_as::<u64>(f),
            DType::F32 => self.fmt_as::<f32>(f),
            DType::F64 => self.fmt_as::<f64>(f),
            DType::C64 => self.fmt_as::<Complex32>(f),
            DType::C128 => self.fmt_as::<Complex64>(f),
        }
    }
}

impl<A: AccessMode> fmt::Debug for DynSharedArray<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynSharedArray")
            .field("name", &self.name())
            .field("dtype", &self.dtype())
            .field("shape", &self.shape())
            .field("fortran_order", &self.is_fortran_order())
            .finish()
    }
}
