//! `SharedNdArray<T, D>`: a typed n-dimensional array in a named shared-memory segment.

pub(crate) mod lock;
pub(crate) mod npy;

use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::marker::PhantomData;
use std::path::Path;

use ndarray::{
    ArrayBase, ArrayView, ArrayViewMut, Data, Dimension, IntoDimension, IxDyn, ShapeBuilder,
};

use crate::array::npy::NpyHeader;
use crate::element::{DType, Element};
use crate::error::{foreign_handle_panic, Error, ErrorKind, Result};
use crate::segment::trailer::SegmentKind;
use crate::segment::{CreateOptions, MapAccess, Segment};
use crate::sys::shm;

mod private {
    pub trait Sealed {}
}

/// Whether a handle may write: [`ReadWrite`] or [`ReadOnly`].
pub trait AccessMode: private::Sealed + Send + Sync + 'static {
    /// Whether the mapping is writable.
    const WRITABLE: bool;
}

/// Marker: the handle maps the segment read-write and offers `view_mut`.
#[derive(Debug, Clone, Copy)]
pub struct ReadWrite;
/// Marker: the handle maps the segment `PROT_READ`; it has no mutable views.
#[derive(Debug, Clone, Copy)]
pub struct ReadOnly;

impl private::Sealed for ReadWrite {}
impl private::Sealed for ReadOnly {}
impl AccessMode for ReadWrite {
    const WRITABLE: bool = true;
}
impl AccessMode for ReadOnly {
    const WRITABLE: bool = false;
}

/// A read-only handle, from [`SharedNdArray::open_read_only`].
///
/// It has no mutable views: this does not compile.
/// ```compile_fail
/// # fn f(name: &str) -> ndshm::Result<()> {
/// let mut r = unsafe { ndshm::SharedNdArray::<f64, ndarray::Ix1>::open_read_only(name)? };
/// r.view_mut()[0] = 1.0;
/// # Ok(()) }
/// ```
pub type ReadOnlyNdArray<T, D> = SharedNdArray<T, D, ReadOnly>;

/// An n-dimensional array of `T` in a named POSIX shared-memory segment.
///
/// The segment is a valid `.npy` file (`np.load("/dev/shm/NAME", mmap_mode="r+")` sees the
/// same array) followed by the ndshm trailer. The handle that created the segment owns its
/// name and unlinks it on drop; attached handles only unmap. See the
/// [crate docs](crate#soundness) for when attaching is sound.
///
/// A handle, and every view of it, works only in the process that made it: a copy
/// inherited through `fork` panics on `view`/`view_mut`/`as_slice*` and returns
/// [`ErrorKind::WrongProcess`] from fallible calls, its mapping is absent from the child
/// (a view smuggled there faults), and dropping it there does nothing. Children get their
/// data from [`fork_chunks`](crate::fork_chunks) and friends, or attach by name.
///
/// # Examples
/// ```
/// use ndarray::Ix2;
/// use ndshm::SharedNdArray;
/// # let name = format!("doc-array-{}", std::process::id());
/// let mut a = SharedNdArray::<f64, Ix2>::zeros(&name, (1000, 3))?;
/// a.view_mut().row_mut(0).fill(1.5);
/// assert_eq!(a.shape(), &[1000, 3]);
/// assert_eq!(a.view().sum(), 4.5);
/// # Ok::<(), ndshm::Error>(())
/// ```
pub struct SharedNdArray<T: Element, D: Dimension, A: AccessMode = ReadWrite> {
    seg: Segment,
    dim: D,
    fortran: bool,
    offset: usize,
    _marker: PhantomData<(T, A)>,
}

fn with_order<D: Dimension>(dim: D, fortran: bool) -> ndarray::Shape<D> {
    if fortran {
        dim.f()
    } else {
        dim.into_shape_with_order()
    }
}

/// Header, data offset and checks of an array segment, read with `pread` from its file
/// (never through the mapping, which other processes may be writing).
fn read_header(seg: &Segment) -> Result<(NpyHeader, usize)> {
    seg.expect_kind(SegmentKind::Array)?;
    let avail = seg.payload_len();
    let (header, offset) = npy::read_npy_header(seg.file(), avail as u64)
        .map_err(|e| Error::os(format!("cannot read segment '{}'", seg.name()), e))?
        .map_err(|e| {
            Error::new(
                e.kind(),
                format!("segment '{}': {}", seg.name(), e.message()),
            )
        })?;
    header.check_fits(seg.name(), offset, avail, seg.info().is_some())?;
    if (seg.as_ptr() as usize + offset) % header.dtype.align() != 0 {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "segment '{}': its data starts at byte {offset}, not aligned for {}; re-save it \
                 with a current numpy (headers padded to 64 bytes)",
                seg.name(),
                header.dtype
            ),
        ));
    }
    Ok((header, offset))
}

fn type_mismatch(name: &str, found: DType, want: DType) -> Error {
    Error::new(
        ErrorKind::TypeMismatch,
        format!(
            "segment '{name}' holds {found} ({}) elements, not {want} ({}); open it with that \
             element type, or with open_dyn to find out",
            found.rust_name(),
            want.rust_name()
        ),
    )
}

fn dim_from_shape<D: Dimension>(name: &str, shape: &[usize]) -> Result<D> {
    if let Some(n) = D::NDIM {
        if n != shape.len() {
            return Err(Error::new(
                ErrorKind::DimensionMismatch,
                format!(
                    "segment '{name}' holds a {}-dimensional array of shape {shape:?}, not a \
                     {n}-dimensional one; use Ix{} or IxDyn",
                    shape.len(),
                    shape.len()
                ),
            ));
        }
    }
    let mut dim = D::zeros(shape.len());
    dim.slice_mut().copy_from_slice(shape);
    Ok(dim)
}

impl<T: Element, D: Dimension> SharedNdArray<T, D, ReadWrite> {
    /// Creates segment `name` holding an array of `shape` filled with zeros.
    ///
    /// `segment` is the new segment's name (`&str` or `String`), or [`CreateOptions`] for
    /// other options: permission bits, persistence, prefault, Fortran order, or a generated
    /// unique name ([`CreateOptions::unique`]).
    ///
    /// The caller owns the segment: dropping the handle unlinks it (see
    /// [`persist`](Self::persist)). The segment gets mode `0o600` unless the options say
    /// otherwise.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidName`], [`ErrorKind::AlreadyExists`], [`ErrorKind::SizeOverflow`],
    /// [`ErrorKind::NoSpace`] (space is reserved now, so a full `/dev/shm` never becomes a
    /// SIGBUS later), or an OS error.
    ///
    /// # Examples
    /// ```
    /// # let name = format!("doc-zeros-{}", std::process::id());
    /// let a = ndshm::SharedNdArray::<i32, ndarray::Ix1>::zeros(&name, 5)?;
    /// assert_eq!(a.as_slice(), Some(&[0, 0, 0, 0, 0][..]));
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn zeros(
        segment: impl Into<CreateOptions>,
        shape: impl IntoDimension<Dim = D>,
    ) -> Result<Self> {
        Self::create(&segment.into(), shape.into_dimension(), |_| {})
    }

    /// Creates segment `name` holding an array of `shape` with every element `elem`.
    ///
    /// # Errors
    /// As [`zeros`](Self::zeros).
    ///
    /// # Examples
    /// ```
    /// # let name = format!("doc-from-elem-{}", std::process::id());
    /// let a = ndshm::SharedNdArray::<f64, ndarray::Ix2>::from_elem(&name, (2, 2), 7.0)?;
    /// assert_eq!(a.view().sum(), 28.0);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn from_elem(
        segment: impl Into<CreateOptions>,
        shape: impl IntoDimension<Dim = D>,
        elem: T,
    ) -> Result<Self> {
        Self::create(&segment.into(), shape.into_dimension(), |data| {
            data.fill(elem)
        })
    }

    /// Creates segment `name` holding a copy of `array` (any ndarray: owned, view, slice
    /// with strides), copied once, in C order unless the options ask for Fortran order.
    ///
    /// # Errors
    /// As [`zeros`](Self::zeros).
    ///
    /// # Examples
    /// ```
    /// use ndarray::array;
    /// # let name = format!("doc-from-array-{}", std::process::id());
    /// let src = array![[1.0, 2.0], [3.0, 4.0]];
    /// let a = ndshm::SharedNdArray::from_array(&name, &src.t())?;
    /// assert_eq!(a.view(), src.t());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn from_array<S>(segment: impl Into<CreateOptions>, array: &ArrayBase<S, D>) -> Result<Self>
    where
        S: Data<Elem = T>,
    {
        let opts = segment.into();
        let dim = array.raw_dim();
        let fortran = opts.fortran_order;
        Self::create(&opts, dim.clone(), |data| {
            if let Ok(mut dst) = ArrayViewMut::from_shape(with_order(dim, fortran), data) {
                dst.assign(array);
            }
        })
    }

    fn create(opts: &CreateOptions, dim: D, fill: impl FnOnce(&mut [T])) -> Result<Self> {
        let header = NpyHeader {
            dtype: T::DTYPE,
            fortran_order: opts.fortran_order,
            shape: dim.slice().to_vec(),
        };
        let data_bytes = header.data_bytes()?;
        let encoded = header.encode();
        let offset = encoded.len();
        let payload = offset.checked_add(data_bytes).ok_or_else(|| {
            Error::new(
                ErrorKind::SizeOverflow,
                format!("array of shape {:?} is too large", header.shape),
            )
        })?;
        let seg = Segment::create(opts, SegmentKind::Array, payload, |bytes| {
            let (head, data) = bytes.split_at_mut(offset);
            head.copy_from_slice(&encoded);
            let data: &mut [T] = bytemuck::try_cast_slice_mut(data).map_err(|e| {
                Error::new(ErrorKind::Io, format!("array data is misaligned: {e:?}"))
            })?;
            fill(data);
            Ok(())
        })?;
        Ok(SharedNdArray {
            seg,
            dim,
            fortran: opts.fortran_order,
            offset,
            _marker: PhantomData,
        })
    }

    /// Attaches to the array segment `name`, read-write, checking that it holds `T` elements
    /// in `D` dimensions. The handle does not own the segment: dropping it only unmaps.
    ///
    /// # Safety
    /// The segment is memory that other processes can write. While this handle lives:
    /// - no other process writes the elements you read through [`view`](Self::view) while
    ///   that view lives, and none reads or writes the elements you write through
    ///   [`view_mut`](Self::view_mut) while that view lives — split the array into disjoint
    ///   chunks (as [`fork_chunks`](crate::fork_chunks) and [`WorkerPool`](crate::WorkerPool)
    ///   do), or hold the array's lock;
    /// - no process truncates or resizes the segment file (it would turn accesses into
    ///   SIGBUS).
    ///
    /// ndshm checks everything else: the header is validated field by field and copied
    /// before use, and within this process a segment has at most one handle
    /// ([`ErrorKind::AlreadyOpen`]).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`], [`ErrorKind::PermissionDenied`], [`ErrorKind::TypeMismatch`],
    /// [`ErrorKind::DimensionMismatch`], [`ErrorKind::KindMismatch`],
    /// [`ErrorKind::InvalidHeader`], [`ErrorKind::Truncated`], [`ErrorKind::Unsupported`],
    /// [`ErrorKind::AlreadyOpen`].
    ///
    /// # Examples
    /// ```
    /// use ndarray::Ix2;
    /// use ndshm::SharedNdArray;
    /// # let name = format!("doc-open-{}", std::process::id());
    /// let mut a = SharedNdArray::<f64, Ix2>::zeros(&name, (3, 4))?;
    /// a.view_mut()[[1, 2]] = 5.0;
    /// a.persist();
    /// drop(a); // the segment stays: it was persisted
    /// // SAFETY: no other process writes this segment in this example.
    /// let mut b = unsafe { SharedNdArray::<f64, Ix2>::open(&name)? };
    /// assert_eq!(b.view()[[1, 2]], 5.0);
    /// b.unlink()?;
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub unsafe fn open(name: &str) -> Result<Self> {
        Self::attach(Segment::open(name, MapAccess::READ_WRITE)?)
    }

    /// Attaches read-only (`PROT_READ`): the handle has no mutable views, and the process
    /// could not write through the mapping if it tried.
    ///
    /// # Safety
    /// As [`open`](Self::open): no process writes what you view while you view it, and
    /// nobody truncates the segment.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub unsafe fn open_read_only(name: &str) -> Result<SharedNdArray<T, D, ReadOnly>> {
        SharedNdArray::attach(Segment::open(name, MapAccess::READ_ONLY)?)
    }

    /// Attaches to a segment that carries no header, such as one made by Python's
    /// `SharedMemory(create=True, size=...)`: the caller gives the shape, and the element
    /// type is `T` (the seed's pattern of passing name, shape and dtype out of band).
    /// The data starts at byte 0, in C order.
    ///
    /// # Sparse segments
    /// Such tools size the segment with `ftruncate` and reserve nothing: its pages get
    /// their memory on first write. When `/dev/shm` is full by then, that write kills the
    /// process with `SIGBUS` — no error can be returned from a store to memory. Attach
    /// with [`open_raw_reserved`](Self::open_raw_reserved) to reserve the blocks up front
    /// and get [`ErrorKind::NoSpace`] instead.
    ///
    /// # Safety
    /// As [`open`](Self::open).
    ///
    /// # Errors
    /// [`ErrorKind::Truncated`] when the segment is shorter than the shape needs,
    /// [`ErrorKind::InvalidHeader`] when it does carry an npy header (use
    /// [`open`](Self::open)), and the errors of [`open`](Self::open).
    pub unsafe fn open_raw(name: &str, shape: impl IntoDimension<Dim = D>) -> Result<Self> {
        let seg = Segment::open(name, MapAccess::READ_WRITE)?;
        let dim = shape.into_dimension();
        let need = npy::data_bytes(dim.slice(), T::DTYPE)?;
        let have = seg.payload_len();
        // Probe with pread, not through the mapping that other processes may be writing.
        let mut magic = [0u8; 6];
        let got = shm::read_at(seg.file(), &mut magic, 0)
            .map_err(|e| Error::os(format!("cannot read segment '{name}'"), e))?;
        let has_magic = have >= 6 && got == 6 && magic == *npy::MAGIC;
        if seg.info().is_some() || has_magic {
            return Err(Error::new(
                ErrorKind::InvalidHeader,
                format!("segment '{name}' carries an ndshm/npy header: attach it with open()"),
            ));
        }
        if need > have {
            return Err(Error::new(
                ErrorKind::Truncated,
                format!(
                    "segment '{name}' holds {have} bytes; shape {:?} of {} needs {need}",
                    dim.slice(),
                    T::DTYPE
                ),
            ));
        }
        Ok(SharedNdArray {
            seg,
            dim,
            fortran: false,
            offset: 0,
            _marker: PhantomData,
        })
    }

    /// [`open_raw`](Self::open_raw), then reserves the blocks of the whole segment
    /// (`posix_fallocate`), so that writing it can never fail for lack of space in
    /// `/dev/shm`: a sparse segment (see "Sparse segments" under [`open_raw`](Self::open_raw))
    /// on a full `/dev/shm` is a [`ErrorKind::NoSpace`] error here, not a `SIGBUS` later.
    /// The contents are unchanged; blocks already there cost nothing.
    ///
    /// # Safety
    /// As [`open`](Self::open).
    ///
    /// # Errors
    /// [`ErrorKind::NoSpace`] when `/dev/shm` has no room for the missing blocks (the
    /// segment is left as it was), and the errors of [`open_raw`](Self::open_raw).
    ///
    /// # Examples
    /// ```
    /// # let name = format!("doc-open-raw-reserved-{}", std::process::id());
    /// # let path = std::path::Path::new("/dev/shm").join(&name);
    /// // What Python's SharedMemory(create=True, size=4096) does: a sparse file.
    /// std::fs::File::create(&path)?.set_len(4096)?;
    /// // SAFETY: no other process uses this segment in this example.
    /// let mut a = unsafe {
    ///     ndshm::SharedNdArray::<u8, ndarray::Ix1>::open_raw_reserved(&name, 4096)?
    /// };
    /// a.view_mut().fill(1); // cannot SIGBUS: the pages are reserved
    /// ndshm::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub unsafe fn open_raw_reserved(
        name: &str,
        shape: impl IntoDimension<Dim = D>,
    ) -> Result<Self> {
        // SAFETY: forwarded to our caller.
        let a = unsafe { Self::open_raw(name, shape)? };
        a.seg.reserve()?;
        Ok(a)
    }

    /// Copies a `.npy` file (as numpy's `np.save` writes it) into a new segment `name`.
    ///
    /// # Errors
    /// The errors of reading the file and of [`zeros`](Self::zeros), plus
    /// [`ErrorKind::TypeMismatch`]/[`ErrorKind::DimensionMismatch`] when the file holds
    /// another type (checked before anything is created).
    ///
    /// # Examples
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("ndshm-doc-load-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// # let (a, b) = (format!("doc-load-a-{}", std::process::id()), format!("doc-load-b-{}", std::process::id()));
    /// use ndshm::SharedNdArray;
    /// let src = SharedNdArray::<u16, ndarray::Ix1>::from_elem(&a, 3, 9)?;
    /// src.save(dir.join("x.npy"))?;
    /// let back = SharedNdArray::<u16, ndarray::Ix1>::load(&b, dir.join("x.npy"))?;
    /// assert_eq!(back.as_slice(), Some(&[9, 9, 9][..]));
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn load(segment: impl Into<CreateOptions>, path: impl AsRef<Path>) -> Result<Self> {
        let opts = segment.into();
        let name = opts.describe_name();
        let name = name.as_str();
        let (seg, header, offset) = load_segment(path.as_ref(), &opts, |h| {
            if h.dtype != T::DTYPE {
                return Err(type_mismatch(name, h.dtype, T::DTYPE));
            }
            dim_from_shape::<D>(name, &h.shape).map(drop)
        })?;
        let name = seg.name().to_owned();
        let dim = dim_from_shape(&name, &header.shape)?;
        Ok(SharedNdArray {
            seg,
            dim,
            fortran: header.fortran_order,
            offset,
            _marker: PhantomData,
        })
    }

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

/// Creates segment `name` from a `.npy` file: reads and checks the header, lets `check`
/// refuse it before anything is created, then reads the data straight into the segment.
fn load_segment(
    path: &Path,
    opts: &CreateOptions,
    check: impl FnOnce(&NpyHeader) -> Result<()>,
) -> Result<(Segment, NpyHeader, usize)> {
    let ctx = |what: &str| format!("{what} {}", path.display());
    let mut file = File::open(path).map_err(|e| Error::os(ctx("cannot open"), e))?;
    let file_len = file
        .metadata()
        .map_err(|e| Error::os(ctx("cannot stat"), e))?
        .len();
    let mut head = Vec::new();
    (&mut file)
        .take(1 << 21)
        .read_to_end(&mut head)
        .map_err(|e| Error::os(ctx("cannot read"), e))?;
    let (header, file_offset) = NpyHeader::parse(&head)
        .map_err(|e| Error::new(e.kind(), format!("{}: {}", path.display(), e.message())))?;
    check(&header)?;
    let data_bytes = header.data_bytes()?;
    if (file_len as u128) < file_offset as u128 + data_bytes as u128 {
        return Err(Error::new(
            ErrorKind::Truncated,
            format!(
                "{} is truncated: shape {:?} of {} needs {data_bytes} bytes of data after the \
                 header, the file has {}",
                path.display(),
                header.shape,
                header.dtype,
                file_len.saturating_sub(file_offset as u64)
            ),
        ));
    }
    let ours = NpyHeader {
        fortran_order: header.fortran_order,
        ..header.clone()
    };
    let encoded = ours.encode();
    let offset = encoded.len();
    let seg = Segment::create(opts, SegmentKind::Array, offset + data_bytes, |bytes| {
        let (h, data) = bytes.split_at_mut(offset);
        h.copy_from_slice(&encoded);
        let from_head = head.len().saturating_sub(file_offset).min(data_bytes);
        data[..from_head].copy_from_slice(&head[file_offset..file_offset + from_head]);
        file.read_exact(&mut data[from_head..])
            .map_err(|e| Error::os(ctx("cannot read the data of"), e))
    })?;
    Ok((seg, header, offset))
}

impl<T: Element, D: Dimension, A: AccessMode> SharedNdArray<T, D, A> {
    fn attach(seg: Segment) -> Result<Self> {
        let (header, offset) = read_header(&seg)?;
        if header.dtype != T::DTYPE {
            return Err(type_mismatch(seg.name(), header.dtype, T::DTYPE));
        }
        let dim = dim_from_shape(seg.name(), &header.shape)?;
        Ok(SharedNdArray {
            seg,
            dim,
            fortran: header.fortran_order,
            offset,
            _marker: PhantomData,
        })
    }

    /// Panics, naming the rule, unless the handle is bound to the calling process. One
    /// relaxed load and a compare; the panic path is out of line.
    #[inline]
    #[track_caller]
    pub(crate) fn assert_bound_here(&self) {
        if !self.seg.is_bound_here() {
            foreign_handle_panic("SharedNdArray");
        }
    }

    /// [`ErrorKind::WrongProcess`] unless the handle is bound to the calling process (for
    /// fallible calls, including the pool's jobs).
    #[inline]
    pub(crate) fn check_bound_here(&self) -> Result<()> {
        if self.seg.is_bound_here() {
            Ok(())
        } else {
            Err(Error::wrong_process("SharedNdArray", self.seg.name()))
        }
    }

    /// In a child forked by ndshm's forking code: binds this inherited handle to the
    /// calling process (see `Segment::adopt_in_child`): its mapping comes back at the same
    /// address and its views work here. Idempotent; one compare once done.
    ///
    /// The caller guarantees that the forking call borrowed the array for the whole call
    /// (mutably for an array the child writes), so no view other than those the call
    /// hands the child existed at the fork.
    ///
    /// # Errors
    /// [`ErrorKind::AlreadyOpen`] when the child already opened the segment by name, or an
    /// OS error from `mmap`.
    pub(crate) fn adopt_in_child(&self) -> Result<()> {
        self.seg.adopt_in_child()
    }

    pub(crate) fn data_ptr(&self) -> *mut T {
        // SAFETY: `offset` was checked to lie within the mapping (it is the header length,
        // at most the payload length).
        unsafe { self.seg.as_ptr().add(self.offset).cast::<T>() }
    }

    pub(crate) fn segment(&self) -> &Segment {
        &self.seg
    }

    pub(crate) fn segment_mut(&mut self) -> &mut Segment {
        &mut self.seg
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

    /// Whether the elements lie in C order (true for 1-d arrays and for arrays with at most
    /// one axis longer than 1, whatever the header says).
    pub fn is_standard_layout(&self) -> bool {
        !self.fortran || self.dim.slice().iter().filter(|&&n| n > 1).count() <= 1
    }

    /// Whether the header declares Fortran (column-major) order.
    pub fn is_fortran_order(&self) -> bool {
        self.fortran
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        self.dim.slice()
    }

    /// The shape as a dimension value.
    pub fn raw_dim(&self) -> D {
        self.dim.clone()
    }

    /// Number of axes.
    pub fn ndim(&self) -> usize {
        self.dim.ndim()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.dim.size()
    }

    /// Whether the array has no elements (a 0 in the shape).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of element data.
    pub fn nbytes(&self) -> usize {
        self.len() * std::mem::size_of::<T>()
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        T::DTYPE
    }

    /// The segment's name (without a leading `/`).
    pub fn name(&self) -> &str {
        self.seg.name()
    }

    /// The unique id of the segment's creation (0 for a plain `.npy` without trailer).
    pub fn segment_id(&self) -> u64 {
        self.seg.segment_id()
    }

    /// Whether dropping this handle unlinks the segment.
    pub fn is_owner(&self) -> bool {
        self.seg.is_owner()
    }

    /// Hands the name over: the segment outlives this handle (dropping it only unmaps), is
    /// marked persistent for `ndshm gc`, and stays until [`unlink`](Self::unlink) or
    /// `ndshm rm`.
    ///
    /// # Panics
    /// As [`view`](Self::view): a copy inherited through `fork` must not change the fate
    /// of its parent's segment.
    pub fn persist(&mut self) {
        self.assert_bound_here();
        self.seg.persist();
    }

    /// Removes the segment's name now; this handle (and every attached one) keeps its
    /// mapping, and new opens fail with [`ErrorKind::NotFound`].
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when the name is already gone or names another segment now;
    /// [`ErrorKind::WrongProcess`] when the handle was made by another process and
    /// inherited through `fork`.
    pub fn unlink(&mut self) -> Result<()> {
        self.check_bound_here()?;
        self.seg.unlink()
    }

    /// Faults in the page tables of the whole segment now (`MADV_POPULATE_WRITE`/`_READ`),
    /// so that the first pass over the data pays no page faults.
    ///
    /// # Errors
    /// An OS error from `madvise`; [`ErrorKind::WrongProcess`] for a handle of another
    /// process.
    pub fn prefault(&self) -> Result<()> {
        self.check_bound_here()?;
        self.seg.prefault()
    }

    /// Writes the array as a `.npy` file numpy loads (standard header, no trailer). The data
    /// is copied from the segment's file with `pread`, not through the mapping.
    ///
    /// # Errors
    /// An OS error creating or writing `path`; [`ErrorKind::Truncated`] when the segment
    /// file shrank behind the handle's back (the partial file is removed);
    /// [`ErrorKind::WrongProcess`] for a handle of another process.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        self.check_bound_here()?;
        let header = NpyHeader {
            dtype: T::DTYPE,
            fortran_order: self.fortran,
            shape: self.shape().to_vec(),
        };
        save_segment(
            path.as_ref(),
            &header,
            &self.seg,
            self.offset,
            self.nbytes(),
        )
    }
}

/// Writes `header` and then `len` bytes of `seg` from byte `offset` to a new `.npy` file at
/// `path`. The data is copied with `pread` from the segment's file, never through a slice
/// over the mapping, which other processes may be writing (a data race) or may have
/// truncated (a SIGBUS); a segment that shrank is an error and the partial file is removed.
fn save_segment(
    path: &Path,
    header: &NpyHeader,
    seg: &Segment,
    offset: usize,
    len: usize,
) -> Result<()> {
    let ctx = |what: &str| format!("{what} {}", path.display());
    let mut out = File::create(path).map_err(|e| Error::os(ctx("cannot create"), e))?;
    let copied = (|| -> Result<()> {
        out.write_all(&header.encode())
            .map_err(|e| Error::os(ctx("cannot write"), e))?;
        let mut buf = vec![0u8; len.min(1 << 20)];
        let mut done = 0;
        while done < len {
            let want = (len - done).min(buf.len());
            let got = shm::read_at(seg.file(), &mut buf[..want], (offset + done) as u64)
                .map_err(|e| Error::os(format!("cannot read segment '{}'", seg.name()), e))?;
            if got < want {
                return Err(Error::new(
                    ErrorKind::Truncated,
                    format!(
                        "segment '{}' shrank while it was being saved: it ends {} bytes into \
                         its {len} bytes of data; nothing was saved",
                        seg.name(),
                        done + got
                    ),
                ));
            }
            out.write_all(&buf[..want])
                .map_err(|e| Error::os(ctx("cannot write"), e))?;
            done += want;
        }
        out.flush().map_err(|e| Error::os(ctx("cannot write"), e))
    })();
    if copied.is_err() {
        let _ = std::fs::remove_file(path);
    }
    copied
}

impl<T: Element, D: Dimension, A: AccessMode> fmt::Debug for SharedNdArray<T, D, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedNdArray")
            .field("name", &self.name())
            .field("dtype", &T::DTYPE)
            .field("shape", &self.shape())
            .field("fortran_order", &self.fortran)
            .field("writable", &A::WRITABLE)
            .field("owner", &self.is_owner())
            .finish()
    }
}

impl<T: Element, D: Dimension, A: AccessMode> fmt::Display for SharedNdArray<T, D, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.view(), f)
    }
}

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
    seg: Segment,
    header: NpyHeader,
    offset: usize,
    _access: PhantomData<A>,
}

/// Attaches to array segment `name` whatever its element type and dimensionality.
///
/// # Safety
/// As [`SharedNdArray::open`].
///
/// # Errors
/// As [`SharedNdArray::open`], less the type and dimension checks.
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
    pub unsafe fn open_read_only(name: &str) -> Result<DynSharedArray<ReadOnly>> {
        DynSharedArray::attach(Segment::open(name, MapAccess::READ_ONLY)?)
    }

    /// Copies a `.npy` file of any supported type into a new segment `name`.
    ///
    /// # Errors
    /// As [`SharedNdArray::load`].
    pub fn load(segment: impl Into<CreateOptions>, path: impl AsRef<Path>) -> Result<Self> {
        let (seg, header, offset) = load_segment(path.as_ref(), &segment.into(), |_| Ok(()))?;
        Ok(DynSharedArray {
            seg,
            header,
            offset,
            _access: PhantomData,
        })
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
    pub fn persist(&mut self) {
        if !self.seg.is_bound_here() {
            foreign_handle_panic("DynSharedArray");
        }
        self.seg.persist();
    }

    fn check_bound_here(&self) -> Result<()> {
        if self.seg.is_bound_here() {
            Ok(())
        } else {
            Err(Error::wrong_process("DynSharedArray", self.seg.name()))
        }
    }

    /// The typed handle, if the segment holds `T` in `D` dimensions.
    ///
    /// # Errors
    /// [`ErrorKind::TypeMismatch`], [`ErrorKind::DimensionMismatch`];
    /// [`ErrorKind::WrongProcess`] for a handle of another process.
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

    /// Writes the array as a `.npy` file, as [`SharedNdArray::save`] does.
    ///
    /// # Errors
    /// As [`SharedNdArray::save`].
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        self.check_bound_here()?;
        save_segment(
            path.as_ref(),
            &self.header,
            &self.seg,
            self.offset,
            self.nbytes(),
        )
    }

    fn fmt_as<T: Element>(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
