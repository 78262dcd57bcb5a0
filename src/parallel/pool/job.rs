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

use std::mem::size_of;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;

use bytemuck::Pod;
use ndarray::{ArrayView, ArrayViewMut, Dimension, ShapeBuilder};

use super::control::{chunk_tag, ArrayDesc, Ctl, SlotRef, MAX_ARRAYS};
use crate::element::Element;
use crate::parallel::chunk::Chunk;
use crate::parallel::process::ChildResult;
use crate::segment::shared_mem::SharedMem;
use crate::sys::{futex, proc};

/// A resolved array of a job: where its data is in the executing process.
#[derive(Clone, Copy)]
struct ArrayRef<'a> {
    /// The first element: inside a live mapping of the array's segment, with
    /// `desc.nbytes` bytes after it (checked by whoever resolved it).
    ptr: *mut u8,
    desc: &'a ArrayDesc,
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
    // job's output: `map_into` refuses the same segment on both sides).
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
    let outcome = (|| {
        let mut descs = [ArrayDesc::zeroed_desc(); MAX_ARRAYS];
        for (i, d) in descs.iter_mut().enumerate().take(job.n_arrays) {
            ctl.array_into(i, d);
        }
        let all = &descs[..job.n_arrays];
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
