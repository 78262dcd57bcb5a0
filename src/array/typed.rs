//! [`SharedNdArray`]: the typed array handle — create, attach, ownership and metadata.
//! Its views are in `view.rs`, its file I/O in `file.rs`, its lock in `lock.rs`.

use std::fmt;
use std::marker::PhantomData;

use ndarray::{ArrayBase, ArrayViewMut, Data, Dimension, IntoDimension};

use crate::array::npy::{self, NpyHeader};
use crate::array::view::with_order;
use crate::array::{AccessMode, ReadOnly, ReadWrite};
use crate::element::{DType, Element};
use crate::error::{foreign_handle_panic, Error, ErrorKind, Result};
use crate::segment::trailer::SegmentKind;
use crate::segment::{CreateOptions, MapAccess, Segment};
use crate::sys::shm;

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
    pub(super) seg: Segment,
    pub(super) dim: D,
    pub(super) fortran: bool,
    pub(super) offset: usize,
    pub(super) _marker: PhantomData<(T, A)>,
}

/// Header, data offset and checks of an array segment, read with `pread` from its file
/// (never through the mapping, which other processes may be writing).
pub(super) fn read_header(seg: &Segment) -> Result<(NpyHeader, usize)> {
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

pub(super) fn type_mismatch(name: &str, found: DType, want: DType) -> Error {
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

pub(super) fn dim_from_shape<D: Dimension>(name: &str, shape: &[usize]) -> Result<D> {
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
    /// before use, and within this process a segment has one read-write handle or any
    /// number of read-only ones ([`open_read_only`](Self::open_read_only)), never both
    /// ([`ErrorKind::AlreadyOpen`]), so a mutable view never aliases another view.
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
    /// Any number of read-only handles of one segment may live in one process (their views
    /// are all shared), but none beside a read-write handle of it.
    ///
    /// # Safety
    /// As [`open`](Self::open): no process writes what you view while you view it, and
    /// nobody truncates the segment.
    ///
    /// # Errors
    /// As [`open`](Self::open); [`ErrorKind::AlreadyOpen`] while this process holds a
    /// read-write handle of the segment.
    ///
    /// # Examples
    /// ```
    /// use ndshm::SharedNdArray;
    /// # let name = format!("doc-open-ro-{}", std::process::id());
    /// let mut a = SharedNdArray::<u8, ndarray::Ix1>::from_elem(&name, 3, 7)?;
    /// a.persist();
    /// drop(a);
    /// // SAFETY: no process writes this segment in this example.
    /// let r1 = unsafe { SharedNdArray::<u8, ndarray::Ix1>::open_read_only(&name)? };
    /// // SAFETY: as above.
    /// let r2 = unsafe { SharedNdArray::<u8, ndarray::Ix1>::open_read_only(&name)? };
    /// assert_eq!(r1.view(), r2.view());
    /// ndshm::unlink(&name)?;
    /// # Ok::<(), ndshm::Error>(())
    /// ```
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
    ///
    /// # Examples
    /// ```
    /// # let name = format!("doc-open-raw-{}", std::process::id());
    /// # let path = std::path::Path::new("/dev/shm").join(&name);
    /// // A headerless segment, as Python's SharedMemory(create=True, size=32) makes one
    /// // (use open_raw_reserved for such sparse files: see "Sparse segments").
    /// std::fs::write(&path, [0u8; 32])?;
    /// // SAFETY: no other process uses this segment in this example.
    /// let mut a = unsafe { ndshm::SharedNdArray::<u64, ndarray::Ix2>::open_raw(&name, (2, 2))? };
    /// a.view_mut()[[1, 1]] = 42;
    /// assert_eq!(std::fs::read(&path)?[24], 42);
    /// ndshm::unlink(&name)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub unsafe fn open_raw(name: &str, shape: impl IntoDimension<Dim = D>) -> Result<Self> {
        Self::attach_raw(name, shape)
    }

    /// The work of [`open_raw`](Self::open_raw), whose `# Safety` contract its callers
    /// (the two `unsafe` constructors) pass on.
    fn attach_raw(name: &str, shape: impl IntoDimension<Dim = D>) -> Result<Self> {
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
        let a = Self::attach_raw(name, shape)?;
        a.seg.reserve()?;
        Ok(a)
    }
}

impl<T: Element, D: Dimension, A: AccessMode> SharedNdArray<T, D, A> {
    pub(super) fn attach(seg: Segment) -> Result<Self> {
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

    pub(crate) fn segment(&self) -> &Segment {
        &self.seg
    }

    pub(crate) fn segment_mut(&mut self) -> &mut Segment {
        &mut self.seg
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
    ///
    /// # Examples
    /// ```
    /// # let name = format!("doc-shape-{}", std::process::id());
    /// let a = ndshm::SharedNdArray::<u16, ndarray::Ix2>::zeros(&name, (3, 4))?;
    /// assert_eq!((a.shape(), a.ndim(), a.len(), a.nbytes()), (&[3, 4][..], 2, 12, 24));
    /// assert_eq!((a.dtype(), a.is_empty(), a.is_fortran_order()), (ndshm::DType::U16, false, false));
    /// assert_eq!(a.name(), name);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
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
    ///
    /// # Examples
    /// ```
    /// # let name = format!("doc-persist-{}", std::process::id());
    /// let mut a = ndshm::SharedNdArray::<u8, ndarray::Ix1>::zeros(&name, 8)?;
    /// assert!(a.is_owner());
    /// a.persist();
    /// assert!(!a.is_owner());
    /// drop(a); // the segment stays for other processes
    /// assert!(std::path::Path::new("/dev/shm").join(&name).exists());
    /// ndshm::unlink(&name)?;
    /// # Ok::<(), ndshm::Error>(())
    /// ```
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
    ///
    /// # Examples
    /// ```
    /// # let name = format!("doc-array-unlink-{}", std::process::id());
    /// let mut a = ndshm::SharedNdArray::<u8, ndarray::Ix1>::zeros(&name, 8)?;
    /// a.unlink()?; // the name is gone now; this handle keeps its mapping
    /// a.view_mut().fill(1);
    /// // SAFETY: (the open fails: there is nothing to attach)
    /// let e = unsafe { ndshm::SharedNdArray::<u8, ndarray::Ix1>::open(&name) }.unwrap_err();
    /// assert_eq!(e.kind(), ndshm::ErrorKind::NotFound);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
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
    ///
    /// # Examples
    /// ```
    /// # let name = format!("doc-prefault-{}", std::process::id());
    /// let a = ndshm::SharedNdArray::<f32, ndarray::Ix1>::zeros(&name, 1 << 16)?;
    /// a.prefault()?; // the first pass over the data pays no page faults
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn prefault(&self) -> Result<()> {
        self.check_bound_here()?;
        self.seg.prefault()
    }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use crate::array::SharedNdArray;
    use crate::segment::trailer::SegmentKind;
    use crate::segment::{CreateOptions, Segment};
    use crate::sys::{proc, shm};

    fn name(tag: &str) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        format!(
            "ndshm-unit-arr-{}-{}-{tag}",
            proc::pid(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    #[test]
    fn array_mappings_are_kept_from_children_and_others_are_not() {
        let n = name("kept");
        let a = SharedNdArray::<u8, ndarray::Ix1>::zeros(&n, 8).unwrap();
        assert!(a.segment().is_kept_from_children());
        let q = Segment::create(
            &CreateOptions::named(name("plain")),
            SegmentKind::Queue,
            8,
            |_| Ok(()),
        )
        .unwrap();
        assert!(!q.is_kept_from_children());
    }

    #[test]
    fn excluding_a_range_twice_takes_one_slot_and_drop_frees_it() {
        let n = name("slots");
        let a = SharedNdArray::<u8, ndarray::Ix1>::zeros(&n, 8).unwrap();
        let (ptr, len) = (a.segment().as_ptr(), a.segment().len());
        assert_eq!(shm::fork_exclusion_slots_of(ptr), 1);
        assert!(shm::exclude_from_fork(ptr, len));
        assert_eq!(shm::fork_exclusion_slots_of(ptr), 1);
        drop(a);
        assert_eq!(shm::fork_exclusion_slots_of(ptr), 0);
    }
}
