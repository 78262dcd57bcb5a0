//! Arrays in shared memory.
//!
//! - `typed`: [`SharedNdArray`], the typed handle (create, attach, own, metadata);
//! - `dynamic`: [`DynSharedArray`] and [`open_dyn`], for a segment of unknown type;
//! - `view`: the array views — the only module here with `unsafe`;
//! - `file`: `.npy` file load and save;
//! - `npy`: the `.npy` header (parse, encode, check);
//! - `lock`: the robust lock every array carries in its trailer.

pub(crate) mod dynamic;
pub(crate) mod file;
pub(crate) mod lock;
pub(crate) mod npy;
pub(crate) mod typed;
pub(crate) mod view;

pub use dynamic::{open_dyn, DynSharedArray};
pub use typed::SharedNdArray;

mod private {
    pub trait Sealed {}
}

/// Whether a handle may write: [`ReadWrite`] or [`ReadOnly`].
///
/// # Examples
/// ```
/// use ndshm::{AccessMode, ReadOnly, ReadWrite};
/// assert!(ReadWrite::WRITABLE && !ReadOnly::WRITABLE);
/// fn describe<A: AccessMode>(a: &ndshm::SharedNdArray<u8, ndarray::Ix1, A>) -> &'static str {
///     if A::WRITABLE { "read-write" } else { "read-only" }
/// }
/// # let name = format!("doc-access-{}", std::process::id());
/// let a = ndshm::SharedNdArray::<u8, ndarray::Ix1>::zeros(&name, 1)?;
/// assert_eq!(describe(&a), "read-write");
/// # Ok::<(), ndshm::Error>(())
/// ```
pub trait AccessMode: private::Sealed + Send + Sync + 'static {
    /// Whether the mapping is writable.
    const WRITABLE: bool;
}

/// Marker: the handle maps the segment read-write and offers `view_mut`.
///
/// # Examples
/// ```
/// # let name = format!("doc-readwrite-{}", std::process::id());
/// let mut a: ndshm::SharedNdArray<i8, ndarray::Ix1, ndshm::ReadWrite> =
///     ndshm::SharedNdArray::zeros(&name, 2)?;
/// a.view_mut()[0] = -1;
/// # Ok::<(), ndshm::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ReadWrite;
/// Marker: the handle maps the segment `PROT_READ`; it has no mutable views.
///
/// # Examples
/// ```
/// # let name = format!("doc-readonly-{}", std::process::id());
/// let mut a = ndshm::SharedNdArray::<i8, ndarray::Ix1>::from_elem(&name, 2, 5)?;
/// a.persist();
/// drop(a);
/// // SAFETY: no process writes this segment in this example.
/// let r: ndshm::SharedNdArray<i8, ndarray::Ix1, ndshm::ReadOnly> =
///     unsafe { ndshm::SharedNdArray::open_read_only(&name)? };
/// assert_eq!(r.view()[1], 5);
/// ndshm::unlink(&name)?;
/// # Ok::<(), ndshm::Error>(())
/// ```
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
