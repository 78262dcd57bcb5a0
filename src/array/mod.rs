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
