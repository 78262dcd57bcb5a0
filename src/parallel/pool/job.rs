//! Type-erased jobs: how a monomorphised job crosses the control block as two words and
//! comes back as typed views in another process — the pool's only `unsafe` code.
//!
//! A job method ([`WorkerPool::map`](super::WorkerPool::map) and its siblings) makes a
//! [`JobFns`] with one of the typed constructors below: the address of a trampoline
//! instantiated with the job's types, and the address of the user's `fn` of exactly the
//! type that trampoline casts it back to. Both addresses are the same in every process
//! forked from the caller (the workers were forked from it, through the fork server,
//! without `exec`). The caller writes the pair into the job descriptor together with the
//! job's arrays, and [`run_chunk`] — run by an executor that won a chunk of that job —
//! reads the pair back and calls the trampoline, which rebuilds the typed views. The pair
//! is only ever written by [`Ctl::write_job`] from a `JobFns`, and the descriptor does not
//! change while a chunk of its job can be claimed: that is the invariant the `unsafe` below
//! rests on.

use std::fmt;
use std::marker::PhantomData;
use std::mem::size_of;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;

use bytemuck::Pod;
use ndarray::{ArrayView, ArrayViewMut, Dimension, ShapeBuilder};

use super::control::{chunk_tag, ArrayDesc, Ctl, SlotRef, MAX_ARRAYS};
use super::zip::Halo;
use crate::element::Element;
use crate::parallel::chunk::Chunk;
use crate::parallel::process::ChildResult;
use crate::segment::shared_mem::SharedMem;
use crate::sys::{futex, proc};

/// A resolved array of a job: where its data is in the executing process.
///
/// Named by the hidden methods of the sealed [`JobArray`]/[`JobArrays`] traits, so it is
/// `pub` in this private module; its fields are private and nothing outside the pool makes
/// one.
#[allow(unreachable_pub)]
#[derive(Clone, Copy)]
pub struct ArrayRef<'a> {
    /// The first element: inside a live mapping of the array's segment, with
    /// `desc.nbytes` bytes after it (checked by whoever resolved it).
    ptr: *mut u8,
    desc: &'a ArrayDesc,
}

impl fmt::Debug for ArrayRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArrayRef")
            .field("ptr", &self.ptr)
            .field("name", &self.desc.name())
            .finish()
    }
}

/// Finds where array `i` of a job (whose arrays are given) lives in the executing process.
/// The pointer must satisfy [`ArrayRef::ptr`]'s contract.
pub(super) type Resolve<'r> =
    dyn FnMut(&[ArrayDesc], usize) -> std::result::Result<*mut u8, String> + 'r;

/// What a trampoline gets to run one chunk.
struct ChunkArgs<'a> {
    chunk: Chunk,
    arrays: [Option<ArrayRef<'a>>; MAX_ARRAYS],
    params: &'a [u8],
    user_fn: usize,
    /// The chunk's slot in the results area (`result_size` bytes).
    result: SharedMem<'a>,
}

/// Runs the user's function on one chunk (monomorphised per job type).
type Trampoline = unsafe fn(&ChunkArgs<'_>) -> std::result::Result<(), String>;

/// The user function of a `map_into` job.
type MapIntoFn<T, D, U, E, P, R> = fn(Chunk, ArrayView<'_, T, D>, ArrayViewMut<'_, U, E>, &P) -> R;

/// The user function of a multi-array job over the arrays `L`.
pub(super) type ZipFn<L, P, R> = for<'v> fn(Chunk, <L as JobArrays>::Views<'v>, &P) -> R;

/// A job's trampoline and user function, as the two words the descriptor holds. Made only
/// by the typed constructors, which pair each function with the trampoline of its type.
#[derive(Clone, Copy, Debug)]
pub(super) struct JobFns {
    pub(super) trampoline: u64,
    pub(super) user_fn: u64,
}

impl JobFns {
    /// An in-place job: array 0 is written, chunk by chunk.
    pub(super) fn map<T: Element, D: Dimension, P: Pod, R: ChildResult>(
        f: fn(Chunk, ArrayViewMut<'_, T, D>, &P) -> R,
    ) -> JobFns {
        JobFns {
            trampoline: run_map::<T, D, P, R> as Trampoline as usize as u64,
            user_fn: f as usize as u64,
        }
    }

    /// `out = f(in)`: array 0 is read whole, array 1 written chunk by chunk.
    pub(super) fn map_into<
        T: Element,
        D: Dimension,
        U: Element,
        E: Dimension,
        P: Pod,
        R: ChildResult,
    >(
        f: MapIntoFn<T, D, U, E, P, R>,
    ) -> JobFns {
        JobFns {
            trampoline: run_map_into::<T, D, U, E, P, R> as Trampoline as usize as u64,
            user_fn: f as usize as u64,
        }
    }

    /// A multi-array job: the arrays of `L`, in order, handed to `f` as a tuple of views.
    pub(super) fn zip<L: JobArrays, P: Pod, R: ChildResult>(f: ZipFn<L, P, R>) -> JobFns {
        JobFns {
            trampoline: run_zip::<L, P, R> as Trampoline as usize as u64,
            user_fn: f as usize as u64,
        }
    }

    /// A multi-array map-reduce job: as [`zip`](Self::zip), each chunk leaves one `R` in
    /// its results slot.
    pub(super) fn zip_reduce<L: JobArrays, P: Pod, R: Pod>(f: ZipFn<L, P, R>) -> JobFns {
        JobFns {
            trampoline: run_zip_reduce::<L, P, R> as Trampoline as usize as u64,
            user_fn: f as usize as u64,
        }
    }

    /// Map-reduce: array 0 is read, each chunk leaves one `R` in its results slot.
    pub(super) fn reduce<T: Element, D: Dimension, P: Pod, R: Pod>(
        f: fn(Chunk, ArrayView<'_, T, D>, &P) -> R,
    ) -> JobFns {
        JobFns {
            trampoline: run_reduce::<T, D, P, R> as Trampoline as usize as u64,
            user_fn: f as usize as u64,
        }
    }
}

/// Builds the dimension of `desc` as `D`.
fn dim_of<D: Dimension>(desc: &ArrayDesc) -> D {
    let mut dim = D::zeros(desc.ndim as usize);
    for (d, &s) in dim.slice_mut().iter_mut().zip(&desc.shape) {
        *d = s as usize;
    }
    dim
}

/// # Safety
/// `r.ptr` points to `r.desc.nbytes` live, aligned bytes holding the array `r.desc`
/// describes, as `T`, and nothing else accesses the chunk's elements for `'a`.
unsafe fn chunk_view_mut<'a, T, D: Dimension>(
    r: &ArrayRef<'_>,
    chunk: &Chunk,
) -> ArrayViewMut<'a, T, D> {
    let dim: D = dim_of(r.desc);
    let shape = if r.desc.fortran != 0 {
        dim.f()
    } else {
        dim.into_shape_with_order()
    };
    // SAFETY: the caller's contract: `ptr` holds the described array of `T` (the job
    // method described it from a live `SharedNdArray<T, D>`, and the resolver checked that
    // the mapping covers `nbytes`), and the elements of `chunk` are this executor's alone
    // while the view lives (the chunk was won by CAS; `chunk.of_mut` narrows the view to
    // them before anything is accessed).
    let view = unsafe { ArrayViewMut::from_shape_ptr(shape, r.ptr.cast::<T>()) };
    chunk.of_mut(view)
}

/// # Safety
/// As [`chunk_view_mut`], except that others may read the array too (no one writes it).
unsafe fn whole_view<'a, T, D: Dimension>(r: &ArrayRef<'_>) -> ArrayView<'a, T, D> {
    let dim: D = dim_of(r.desc);
    let shape = if r.desc.fortran != 0 {
        dim.f()
    } else {
        dim.into_shape_with_order()
    };
    // SAFETY: the caller's contract: `ptr` holds the described array of `T`, and nobody
    // writes it while the job runs (the job method borrows it shared, and it is not the
    // job's output: `map_into` refuses the same segment on both sides, and a multi-array
    // job refuses a segment added twice when one use is writable).
    unsafe { ArrayView::from_shape_ptr(shape, r.ptr.cast::<T>()) }
}

/// The resolved array `i`, or the error of a descriptor that lacks it.
fn array<'a>(args: &ChunkArgs<'a>, i: usize) -> std::result::Result<ArrayRef<'a>, String> {
    args.arrays[i].ok_or_else(|| format!("the job has no array {i}"))
}

/// # Safety
/// `args` describes a job made by [`JobFns::map`] with these type parameters.
unsafe fn run_map<T: Element, D: Dimension, P: Pod, R: ChildResult>(
    args: &ChunkArgs<'_>,
) -> std::result::Result<(), String> {
    // SAFETY: `JobFns::map::<T, D, P, R>` stored a function of exactly this type as
    // `user_fn` together with this trampoline (the caller's contract); fn pointers and
    // usize have the same size.
    let f: fn(Chunk, ArrayViewMut<'_, T, D>, &P) -> R =
        unsafe { std::mem::transmute::<usize, _>(args.user_fn) };
    let p: P = bytemuck::pod_read_unaligned(&args.params[..size_of::<P>()]);
    let out = array(args, 0)?;
    // SAFETY: array 0 is the job's output, resolved by the executor (see `ArrayRef::ptr`);
    // the chunk is this executor's alone (it won it by CAS).
    let view = unsafe { chunk_view_mut::<T, D>(&out, &args.chunk) };
    f(args.chunk, view, &p).into_message()
}

/// # Safety
/// `args` describes a job made by [`JobFns::map_into`] with these type parameters.
unsafe fn run_map_into<
    T: Element,
    D: Dimension,
    U: Element,
    E: Dimension,
    P: Pod,
    R: ChildResult,
>(
    args: &ChunkArgs<'_>,
) -> std::result::Result<(), String> {
    // SAFETY: `JobFns::map_into` stored a function of exactly this type as `user_fn`
    // together with this trampoline (the caller's contract).
    let f: MapIntoFn<T, D, U, E, P, R> = unsafe { std::mem::transmute::<usize, _>(args.user_fn) };
    let p: P = bytemuck::pod_read_unaligned(&args.params[..size_of::<P>()]);
    let (i, o) = (array(args, 0)?, array(args, 1)?);
    // SAFETY: array 0 is the input (nobody writes it during the job), array 1 the output,
    // of which this executor alone holds the chunk; both resolved by the executor.
    let (input, output) = unsafe {
        (
            whole_view::<T, D>(&i),
            chunk_view_mut::<U, E>(&o, &args.chunk),
        )
    };
    f(args.chunk, input, output, &p).into_message()
}

/// # Safety
/// `args` describes a job made by [`JobFns::reduce`] with these type parameters, and
/// `args.result` has room for one `R`.
unsafe fn run_reduce<T: Element, D: Dimension, P: Pod, R: Pod>(
    args: &ChunkArgs<'_>,
) -> std::result::Result<(), String> {
    // SAFETY: `JobFns::reduce` stored a function of exactly this type as `user_fn`
    // together with this trampoline (the caller's contract).
    let f: fn(Chunk, ArrayView<'_, T, D>, &P) -> R =
        unsafe { std::mem::transmute::<usize, _>(args.user_fn) };
    let p: P = bytemuck::pod_read_unaligned(&args.params[..size_of::<P>()]);
    let a = array(args, 0)?;
    // SAFETY: the array is read-only during the job; resolved by the executor.
    let whole = unsafe { whole_view::<T, D>(&a) };
    let r = f(args.chunk, args.chunk.of(&whole), &p);
    // A bounds-checked copy into this chunk's own results slot.
    args.result.write_pod(0, &r);
    Ok(())
}

// --- Multi-array jobs -------------------------------------------------------------------
//
// A job's arrays are a type-level list: a tuple of markers (`ReadChunk<T, D>`, ...), one per
// array, in the order the builder added them. Each marker knows the view its array becomes
// ([`JobArray::View`]) and builds it from a resolved array; the tuple builds the tuple of
// views ([`JobArrays::Views`]). The builder checks, before dispatch, what makes building
// them sound (see `JobArray::view`'s contract); the trampolines below only build and call.

/// `ArrayDesc::mode` of an array read chunk by chunk.
pub(super) const MODE_READ: u32 = 1;
/// `ArrayDesc::mode` of an array read whole.
pub(super) const MODE_WHOLE: u32 = 2;
/// `ArrayDesc::mode` of an array read with a halo.
pub(super) const MODE_HALO: u32 = 3;
/// `ArrayDesc::mode` of an array written chunk by chunk.
pub(super) const MODE_WRITE: u32 = 4;

mod sealed {
    /// Only ndshm's markers and their tuples are job arrays.
    #[allow(unreachable_pub)]
    pub trait Sealed {}
}

/// One array of a multi-array job, as the job's function sees it: implemented by
/// [`ReadChunk`], [`ReadWhole`], [`ReadHalo`] and [`WriteChunk`] (sealed), which
/// [`JobBuilder`](super::JobBuilder)'s `read`, `read_whole`, `read_halo` and `write` add.
///
/// # Examples
/// ```
/// use ndarray::{ArrayView1, Ix1};
/// use ndshm::{JobArray, ReadChunk};
/// // The view a function gets for an array added with `read`:
/// fn first(v: <ReadChunk<f64, Ix1> as JobArray>::View<'_>) -> f64 {
///     v[0]
/// }
/// assert_eq!(first(ArrayView1::from(&[2.0, 3.0])), 2.0);
/// ```
pub trait JobArray: sealed::Sealed {
    /// The view the job's function gets for this array.
    type View<'v>;
    #[doc(hidden)]
    const MODE: u32;
    /// Builds the view of chunk `chunk` of the resolved array `r`.
    ///
    /// # Safety
    /// - `r` was resolved for a job whose descriptor the pool wrote from a builder that
    ///   added this marker at this place: `r.ptr` points to `r.desc.nbytes` live bytes
    ///   holding the array `r.desc` describes, of this marker's element type and dimension;
    /// - for a read marker, nobody writes the array while the job runs;
    /// - for [`WriteChunk`], nobody but the caller of this function accesses the chunk's
    ///   elements while the view lives (the executor won the chunk);
    /// - the view is not used after the chunk (`'v` ends before the chunk is done).
    #[doc(hidden)]
    unsafe fn view<'v>(
        r: ArrayRef<'_>,
        chunk: &Chunk,
    ) -> std::result::Result<Self::View<'v>, String>;
}

/// The arrays of a multi-array job: a tuple of up to [`MAX_JOB_ARRAYS`](super::MAX_JOB_ARRAYS)
/// [`JobArray`] markers in the order they were added; the job's function gets the tuple of
/// their views (sealed).
///
/// # Examples
/// ```
/// use ndarray::{ArrayView1, ArrayViewMut1, Ix1};
/// use ndshm::{JobArrays, ReadChunk, WriteChunk};
/// type Arrays = (ReadChunk<f32, Ix1>, WriteChunk<f64, Ix1>);
/// // What a function over these arrays gets:
/// fn widen((x, mut y): <Arrays as JobArrays>::Views<'_>) {
///     y.zip_mut_with(&x, |o, &i| *o = f64::from(i));
/// }
/// let mut out = [0.0; 2];
/// widen((ArrayView1::from(&[1.5f32, 2.5]), ArrayViewMut1::from(&mut out)));
/// assert_eq!(out, [1.5, 2.5]);
/// assert_eq!(<Arrays as JobArrays>::LEN, 2);
/// ```
pub trait JobArrays: sealed::Sealed {
    /// The tuple of views the job's function gets, in the order the arrays were added.
    type Views<'v>;
    /// How many arrays.
    const LEN: usize;
    /// Builds the views of chunk `chunk` of the job's resolved arrays.
    ///
    /// # Safety
    /// [`JobArray::view`]'s contract for each array, `arrays` holding the job's arrays in
    /// the order the builder added them.
    #[doc(hidden)]
    unsafe fn views<'v>(
        arrays: &[Option<ArrayRef<'_>>],
        chunk: &Chunk,
    ) -> std::result::Result<Self::Views<'v>, String>;
}

/// Appends the marker `X` to a list of job arrays (sealed; the builder's `read`, `write`,
/// ... use it). Not implemented for a list of [`MAX_JOB_ARRAYS`](super::MAX_JOB_ARRAYS)
/// arrays: a job with one more does not compile.
///
/// # Examples
/// ```
/// use ndarray::Ix1;
/// use ndshm::{Append, ReadChunk, WriteChunk};
/// // A written array added after one read array: the list of both, in order.
/// type Two = <(ReadChunk<f64, Ix1>,) as Append<WriteChunk<f64, Ix1>>>::Output;
/// let _same: Option<Two> = None::<(ReadChunk<f64, Ix1>, WriteChunk<f64, Ix1>)>;
/// ```
#[diagnostic::on_unimplemented(
    message = "a pool job takes at most 12 arrays (ndshm::MAX_JOB_ARRAYS)",
    label = "this array would be the 13th of the job",
    note = "stack arrays of the same shape and type into one with an extra axis, or split the work into two jobs"
)]
pub trait Append<X>: sealed::Sealed {
    /// The list with `X` at its end.
    type Output: JobArrays;
}

/// An array of a multi-array job read chunk by chunk: the function gets an
/// `ArrayView<T, D>` of the chunk (added by [`JobBuilder::read`](super::JobBuilder::read)).
///
/// # Examples
/// ```
/// use ndshm::{ChunkPlan, CreateOptions, SharedNdArray, WorkerPool};
/// let mut pool = WorkerPool::new(2)?;
/// let a = SharedNdArray::<u32, ndarray::Ix1>::from_elem(CreateOptions::unique(), 10, 3)?;
/// let plan = ChunkPlan::balanced(10, 2)?;
/// // `(x,)` is the ArrayView of a ReadChunk<u32, Ix1>: the chunk's 5 elements.
/// let sums = pool.job(&plan).read(&a).map_reduce((), |_, (x,), _: &()| x.sum())?;
/// assert_eq!(sums, vec![15, 15]);
/// # Ok::<(), ndshm::Error>(())
/// ```
#[derive(Debug)]
pub struct ReadChunk<T, D>(PhantomData<fn() -> (T, D)>);

/// An array of a multi-array job read whole: the function gets an `ArrayView<T, D>` of
/// the whole array (added by [`JobBuilder::read_whole`](super::JobBuilder::read_whole)).
///
/// # Examples
/// ```
/// use ndshm::{ChunkPlan, CreateOptions, SharedNdArray, WorkerPool};
/// let mut pool = WorkerPool::new(2)?;
/// let a = SharedNdArray::<u32, ndarray::Ix1>::from_elem(CreateOptions::unique(), 10, 3)?;
/// let plan = ChunkPlan::balanced(10, 2)?;
/// // Each chunk sees all 10 elements.
/// let sums = pool.job(&plan).read_whole(&a).map_reduce((), |_, (x,), _: &()| x.sum())?;
/// assert_eq!(sums, vec![30, 30]);
/// # Ok::<(), ndshm::Error>(())
/// ```
#[derive(Debug)]
pub struct ReadWhole<T, D>(PhantomData<fn() -> (T, D)>);

/// An array of a multi-array job read with a halo: the function gets a
/// [`Halo<T, D>`](super::Halo) (added by [`JobBuilder::read_halo`](super::JobBuilder::read_halo)).
///
/// # Examples
/// ```
/// use ndshm::{ChunkPlan, CreateOptions, SharedNdArray, WorkerPool};
/// let mut pool = WorkerPool::new(2)?;
/// let a = SharedNdArray::<u32, ndarray::Ix1>::from_elem(CreateOptions::unique(), 10, 1)?;
/// let plan = ChunkPlan::balanced(10, 2)?;
/// // Chunk 0 (0..5) sees 0..7, chunk 1 (5..10) sees 3..10: two neighbours, clipped.
/// let seen = pool.job(&plan).read_halo(&a, 2).map_reduce((), |_, (h,), _: &()| h.view().sum())?;
/// assert_eq!(seen, vec![7, 7]);
/// # Ok::<(), ndshm::Error>(())
/// ```
#[derive(Debug)]
pub struct ReadHalo<T, D>(PhantomData<fn() -> (T, D)>);

/// An array of a multi-array job written chunk by chunk: the function gets an
/// `ArrayViewMut<T, D>` of the chunk (added by [`JobBuilder::write`](super::JobBuilder::write)).
///
/// # Examples
/// ```
/// use ndshm::{ChunkPlan, CreateOptions, SharedNdArray, WorkerPool};
/// let mut pool = WorkerPool::new(2)?;
/// let mut a = SharedNdArray::<u32, ndarray::Ix1>::zeros(CreateOptions::unique(), 10)?;
/// let plan = ChunkPlan::balanced(10, 2)?;
/// pool.job(&plan).write(&mut a).for_each((), |c, (mut x,), _: &()| x.fill(c.index as u32 + 1))?;
/// assert_eq!(a.view().sum(), 5 * 1 + 5 * 2);
/// # Ok::<(), ndshm::Error>(())
/// ```
#[derive(Debug)]
pub struct WriteChunk<T, D>(PhantomData<fn() -> (T, D)>);

/// `Err` unless the resolved array was described with `mode` (a descriptor written by a
/// builder that added this very marker at this place).
fn check_mode(r: &ArrayRef<'_>, mode: u32) -> std::result::Result<(), String> {
    if r.desc.mode == mode {
        Ok(())
    } else {
        Err(format!(
            "array '{}' was described with access mode {}, not {mode}",
            r.desc.name().unwrap_or("?"),
            r.desc.mode
        ))
    }
}

impl<T, D> sealed::Sealed for ReadChunk<T, D> {}
impl<T: Element, D: Dimension> JobArray for ReadChunk<T, D> {
    type View<'v> = ArrayView<'v, T, D>;
    const MODE: u32 = MODE_READ;
    unsafe fn view<'v>(
        r: ArrayRef<'_>,
        chunk: &Chunk,
    ) -> std::result::Result<Self::View<'v>, String> {
        check_mode(&r, Self::MODE)?;
        // SAFETY: the caller's contract: `r` holds an array of `T` and dimension `D`
        // that nobody writes during the job.
        let whole = unsafe { whole_view::<T, D>(&r) };
        Ok(chunk.of(&whole))
    }
}

impl<T, D> sealed::Sealed for ReadWhole<T, D> {}
impl<T: Element, D: Dimension> JobArray for ReadWhole<T, D> {
    type View<'v> = ArrayView<'v, T, D>;
    const MODE: u32 = MODE_WHOLE;
    unsafe fn view<'v>(r: ArrayRef<'_>, _: &Chunk) -> std::result::Result<Self::View<'v>, String> {
        check_mode(&r, Self::MODE)?;
        // SAFETY: as for `ReadChunk`.
        Ok(unsafe { whole_view::<T, D>(&r) })
    }
}

impl<T, D> sealed::Sealed for ReadHalo<T, D> {}
impl<T: Element, D: Dimension> JobArray for ReadHalo<T, D> {
    type View<'v> = Halo<'v, T, D>;
    const MODE: u32 = MODE_HALO;
    unsafe fn view<'v>(
        r: ArrayRef<'_>,
        chunk: &Chunk,
    ) -> std::result::Result<Self::View<'v>, String> {
        check_mode(&r, Self::MODE)?;
        // SAFETY: as for `ReadChunk`; the halo is a slice of this shared view.
        let whole = unsafe { whole_view::<T, D>(&r) };
        Ok(Halo::new(whole, chunk, r.desc.halo as usize))
    }
}

impl<T, D> sealed::Sealed for WriteChunk<T, D> {}
impl<T: Element, D: Dimension> JobArray for WriteChunk<T, D> {
    type View<'v> = ArrayViewMut<'v, T, D>;
    const MODE: u32 = MODE_WRITE;
    unsafe fn view<'v>(
        r: ArrayRef<'_>,
        chunk: &Chunk,
    ) -> std::result::Result<Self::View<'v>, String> {
        check_mode(&r, Self::MODE)?;
        // SAFETY: the caller's contract: `r` holds an array of `T` and dimension `D`, and
        // the chunk's elements are the caller's alone while the view lives (the plan's
        // chunks are disjoint, the executor won this one by CAS, and the builder refused
        // any other use of this segment in the job).
        Ok(unsafe { chunk_view_mut::<T, D>(&r, chunk) })
    }
}

/// The resolved array `i` of a list.
fn array_at<'a>(
    arrays: &[Option<ArrayRef<'a>>],
    i: usize,
) -> std::result::Result<ArrayRef<'a>, String> {
    arrays
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| format!("the job has no array {i}"))
}

macro_rules! job_arrays {
    ($len:expr; $($A:ident $i:tt),*) => {
        impl<$($A: JobArray),*> sealed::Sealed for ($($A,)*) {}
        impl<$($A: JobArray),*> JobArrays for ($($A,)*) {
            type Views<'v> = ($($A::View<'v>,)*);
            const LEN: usize = $len;
            #[allow(unused_variables)]
            unsafe fn views<'v>(
                arrays: &[Option<ArrayRef<'_>>],
                chunk: &Chunk,
            ) -> std::result::Result<Self::Views<'v>, String> {
                Ok(($(
                    // SAFETY: the caller's contract for array `$i`, which the builder
                    // added as `$A` (`arrays` is in the builder's order).
                    unsafe { $A::view(array_at(arrays, $i)?, chunk)? },
                )*))
            }
        }
    };
}

macro_rules! append {
    ($($A:ident),*) => {
        impl<X: JobArray, $($A: JobArray),*> Append<X> for ($($A,)*) {
            type Output = ($($A,)* X,);
        }
    };
}

job_arrays!(0;);
job_arrays!(1; A0 0);
job_arrays!(2; A0 0, A1 1);
job_arrays!(3; A0 0, A1 1, A2 2);
job_arrays!(4; A0 0, A1 1, A2 2, A3 3);
job_arrays!(5; A0 0, A1 1, A2 2, A3 3, A4 4);
job_arrays!(6; A0 0, A1 1, A2 2, A3 3, A4 4, A5 5);
job_arrays!(7; A0 0, A1 1, A2 2, A3 3, A4 4, A5 5, A6 6);
job_arrays!(8; A0 0, A1 1, A2 2, A3 3, A4 4, A5 5, A6 6, A7 7);
job_arrays!(9; A0 0, A1 1, A2 2, A3 3, A4 4, A5 5, A6 6, A7 7, A8 8);
job_arrays!(10; A0 0, A1 1, A2 2, A3 3, A4 4, A5 5, A6 6, A7 7, A8 8, A9 9);
job_arrays!(11; A0 0, A1 1, A2 2, A3 3, A4 4, A5 5, A6 6, A7 7, A8 8, A9 9, A10 10);
job_arrays!(12; A0 0, A1 1, A2 2, A3 3, A4 4, A5 5, A6 6, A7 7, A8 8, A9 9, A10 10, A11 11);
const _: () = assert!(
    MAX_ARRAYS == 12,
    "one `job_arrays!` line per length up to MAX_ARRAYS"
);

append!();
append!(A0);
append!(A0, A1);
append!(A0, A1, A2);
append!(A0, A1, A2, A3);
append!(A0, A1, A2, A3, A4);
append!(A0, A1, A2, A3, A4, A5);
append!(A0, A1, A2, A3, A4, A5, A6);
append!(A0, A1, A2, A3, A4, A5, A6, A7);
append!(A0, A1, A2, A3, A4, A5, A6, A7, A8);
append!(A0, A1, A2, A3, A4, A5, A6, A7, A8, A9);
append!(A0, A1, A2, A3, A4, A5, A6, A7, A8, A9, A10);

/// # Safety
/// `args` describes a job made by [`JobFns::zip`] with these type parameters, from a
/// builder that checked [`JobArray::view`]'s contract for each array (see `zip.rs`).
unsafe fn run_zip<L: JobArrays, P: Pod, R: ChildResult>(
    args: &ChunkArgs<'_>,
) -> std::result::Result<(), String> {
    // SAFETY: `JobFns::zip::<L, P, R>` stored a function of exactly this type as `user_fn`
    // together with this trampoline (the caller's contract).
    let f: ZipFn<L, P, R> = unsafe { std::mem::transmute::<usize, _>(args.user_fn) };
    let p: P = bytemuck::pod_read_unaligned(&args.params[..size_of::<P>()]);
    // SAFETY: the job's arrays, resolved in this process, in the builder's order; the
    // builder refused a segment used twice where one use writes, every read array is
    // borrowed shared by the builder, every written chunk is this executor's alone (won
    // by CAS), and the views are dropped with `f`'s frame before the chunk is done.
    let views = unsafe { L::views(&args.arrays, &args.chunk)? };
    f(args.chunk, views, &p).into_message()
}

/// # Safety
/// As [`run_zip`] for [`JobFns::zip_reduce`], and `args.result` has room for one `R`.
unsafe fn run_zip_reduce<L: JobArrays, P: Pod, R: Pod>(
    args: &ChunkArgs<'_>,
) -> std::result::Result<(), String> {
    // SAFETY: as in `run_zip`.
    let f: ZipFn<L, P, R> = unsafe { std::mem::transmute::<usize, _>(args.user_fn) };
    let p: P = bytemuck::pod_read_unaligned(&args.params[..size_of::<P>()]);
    // SAFETY: as in `run_zip`.
    let views = unsafe { L::views(&args.arrays, &args.chunk)? };
    let r = f(args.chunk, views, &p);
    // A bounds-checked copy into this chunk's own results slot.
    args.result.write_pod(0, &r);
    Ok(())
}

thread_local! {
    /// The descriptors of the chunk being run (see [`run_chunk`]).
    static DESCS: std::cell::Cell<Vec<ArrayDesc>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Runs chunk `k` of job `seq` with the arrays resolved by `resolve`, records a failure,
/// and counts the chunk done. `slot` is the worker's slot (`None` for the caller): its
/// `chunk` word says "inside chunk `k` of job `seq`" from before the user's function runs
/// until before the chunk is counted done.
///
/// Call only after winning chunk `k` of job `seq` with [`Ctl::claim`]: the descriptor is
/// then the one the caller wrote for that job, and stays so until the job is joined.
pub(super) fn run_chunk(
    ctl: Ctl<'_>,
    seq: u32,
    k: usize,
    slot: Option<SlotRef<'_>>,
    resolve: &mut Resolve<'_>,
) {
    if let Some(s) = slot {
        s.chunk().store(chunk_tag(seq, k), Ordering::SeqCst);
    }
    let job = ctl.job();
    let chunk = ctl.chunk(&job, k);
    // The descriptors are read into a buffer kept per thread, sized to the job: a stack
    // array with room for MAX_ARRAYS descriptors would be 5 KiB to zero on every chunk of
    // every job, one array or twelve. (A chunk that starts a job of another pool in this
    // thread takes an empty buffer meanwhile.)
    let mut descs = DESCS.take();
    let outcome = (|| {
        descs.clear();
        descs.resize(job.n_arrays, ArrayDesc::zeroed_desc());
        for (i, d) in descs.iter_mut().enumerate() {
            ctl.array_into(i, d);
        }
        let all = &descs[..];
        let mut arrays = [None; MAX_ARRAYS];
        for (i, (r, d)) in arrays.iter_mut().zip(all).enumerate() {
            *r = Some(ArrayRef {
                ptr: resolve(all, i)?,
                desc: d,
            });
        }
        // Small parameters (the common case) are copied to the stack, others to the heap.
        let mut small = [0u8; 64];
        let mut large = Vec::new();
        let params: &mut [u8] = if job.params_len <= small.len() {
            &mut small[..job.params_len]
        } else {
            large.resize(job.params_len, 0);
            &mut large
        };
        ctl.params(params);
        let result = ctl
            .results()
            .get(k.saturating_mul(job.result_size), job.result_size)
            .ok_or_else(|| format!("chunk {k} has no room in the results area"))?;
        let args = ChunkArgs {
            chunk,
            arrays,
            params,
            user_fn: job.user_fn as usize,
            result,
        };
        // SAFETY: the descriptor holds a pair written by `Ctl::write_job` from a
        // `JobFns` (module docs): the trampoline of exactly the user function's type.
        let tramp: Trampoline = unsafe { std::mem::transmute::<usize, _>(job.trampoline as usize) };
        match catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: `args` holds that job's function, parameters and arrays, resolved in
            // this process; the results slot has `result_size` bytes (`size_of::<R>()` for
            // a reduce job, checked above).
            unsafe { tramp(&args) }
        })) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(msg)) => Err(format!("returned an error: {msg}")),
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-string payload".to_string());
                Err(format!("panicked: {msg}"))
            }
        }
    })();
    DESCS.set(descs);
    if let Err(msg) = outcome {
        ctl.fail(k, proc::pid(), &msg);
    }
    if let Some(s) = slot {
        // Before the done count: a caller that sees the chunk done sees it left.
        s.chunk().store(0, Ordering::SeqCst);
    }
    ctl.done().fetch_add(1, Ordering::SeqCst);
    if ctl.caller_sleeping().load(Ordering::SeqCst) != 0 {
        futex::wake(ctl.done(), 1);
    }
}

impl ArrayDesc {
    fn zeroed_desc() -> ArrayDesc {
        bytemuck::Zeroable::zeroed()
    }
}
