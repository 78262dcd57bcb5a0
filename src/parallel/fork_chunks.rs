//! Fork per call: run a closure on each chunk of an array in its own forked child, and wait
//! for all of them — the seed's "squared slice" example in one call.
//!
//! Each call forks one child per chunk of its [`ChunkPlan`]. A child gets exactly what it
//! needs: it re-binds its copy of the array handle (mapping the segment itself, a
//! `MAP_SHARED` mapping, so its writes land in the segment), hands the closure the view of
//! its own chunk, catches panics, reports through shared memory and leaves with `_exit`.
//! Other array handles the closure captures stay the parent's and refuse or panic in the
//! child. The call borrows the output array mutably until every child has ended, so the
//! parent cannot touch it meanwhile; chunks never overlap, so no two children write the
//! same element.
//!
//! The parent takes a pidfd right after each fork and waits through it, then reads the
//! child's report: the outcome is right even when `SIGCHLD` is ignored and the kernel reaps
//! the children itself. In a process with other threads, forking needs the opt-in
//! [`allow_fork_with_threads`](crate::allow_fork_with_threads).
//!
//! Reading neighbours: a child gets a view of its own chunk only. Reading the chunks of
//! other children in place would race with their writes, so a stencil reads a separate,
//! read-only input array with [`fork_chunks_into`] (`out = f(in)`), whose closure gets a
//! view of the *whole* input.

use ndarray::{ArrayView, ArrayViewMut, Dimension};

use crate::array::{AccessMode, SharedNdArray};
use crate::element::Element;
use crate::error::{Error, ErrorKind, Result};
use crate::parallel::chunk::{Chunk, ChunkPlan, IntoChunkPlan};
use crate::parallel::process::{check_fork_allowed, Child, ChildResult, Job};

/// Forks one child per chunk of `plan` over `array`, each running `f` on its chunk, all at
/// once, and waits for all of them.
///
/// `plan` is a `usize` (that many balanced chunks along axis 0), or a [`ChunkPlan`] /
/// `&ChunkPlan` (any axis, fixed or aligned chunks): see [`IntoChunkPlan`].
/// `f` gets the [`Chunk`] (its index and range) and a mutable view of the chunk; it returns
/// `()` or `Result<(), E>` with a displayable `E`. Any closure works, borrowing included:
/// the children are forked during the call and see the parent's memory as it is then.
/// Output must go to the chunk's view: a child's other writes stay in its copy, and other
/// array handles it captures belong to the parent (they refuse or panic in the child).
///
/// # Errors
/// - [`ErrorKind::InvalidArgument`] when a count is 0, or the plan does not fit the
///   array's shape or has more than [`MAX_FORKED_CHUNKS`] chunks;
/// - [`ErrorKind::ForkWithThreads`] when this process has other threads and has not
///   called [`allow_fork_with_threads`](crate::allow_fork_with_threads) (a child could
///   hang on a lock one of them held: fork before starting threads, or opt in);
/// - [`ErrorKind::WorkerFailed`] when a child panicked, returned an error, exited with a
///   non-zero code, died of a signal, or ended without reporting while its exit status
///   was reaped by someone else (`SIGCHLD` ignored): the message names the chunk (and its
///   range) and the cause; with several failures, the one of the lowest chunk. All
///   children are waited for first, so none remains (no zombie) and none still writes when
///   the call returns;
/// - an OS error when `fork` fails (the children already forked are killed and reaped).
///
/// # Examples
/// ```
/// use ndshm::{fork_chunks, ChunkPlan, CreateOptions, SharedNdArray};
/// let mut a = SharedNdArray::<f64, ndarray::Ix1>::from_array(
///     CreateOptions::unique(),
///     &ndarray::Array1::range(0.0, 10.0, 1.0),
/// )?;
/// // Two balanced chunks along axis 0, one child each:
/// fork_chunks(&mut a, 2, |_chunk, mut view| view.mapv_inplace(|x| x * x))?;
/// assert_eq!(a.as_slice().unwrap()[9], 81.0);
///
/// // An explicit plan: split the columns of a 3 x 8 array in 4; each child writes its
/// // chunk index.
/// let mut b = SharedNdArray::<u32, ndarray::Ix2>::zeros(CreateOptions::unique(), (3, 8))?;
/// let plan = ChunkPlan::balanced_along(b.shape(), 1, 4)?;
/// fork_chunks(&mut b, &plan, |chunk, mut view| view.fill(chunk.index as u32))?;
/// assert_eq!(b.view().row(2).to_vec(), vec![0, 0, 1, 1, 2, 2, 3, 3]);
/// # Ok::<(), ndshm::Error>(())
/// ```
pub fn fork_chunks<'p, T, D, F, R>(
    array: &mut SharedNdArray<T, D>,
    plan: impl IntoChunkPlan<'p>,
    f: F,
) -> Result<()>
where
    T: Element,
    D: Dimension,
    F: Fn(Chunk, ArrayViewMut<'_, T, D>) -> R,
    R: ChildResult,
{
    let plan = plan.into_chunk_plan(array.shape())?;
    plan.check_shape(array.shape(), "array", array.name())?;
    run_forked(&plan, |chunk| -> std::result::Result<(), String> {
        // In the child: re-bind the child's copy of the handle (the parent's mapping is
        // not inherited), then hand the closure its chunk's view and nothing else.
        array.adopt_in_child().map_err(adopt_failed)?;
        f(chunk, chunk.of_mut(array.view_mut())).into_message()
    })
}

fn adopt_failed(e: Error) -> String {
    format!("could not take over the array in the child: {e}")
}

/// `out = f(in)` with one forked child per chunk of `plan` (a count or a plan, as for
/// [`fork_chunks`]; a count splits axis 0 of `output`): `f` gets the chunk, a
/// read-only view of the *whole* input (neighbours included: the input is not written
/// during the call) and a mutable view of its chunk of `output`. Both arrays are split
/// alike: `plan` must fit both along its axis. Use [`Chunk::of`] for the chunk's part of
/// the input.
///
/// # Errors
/// As [`fork_chunks`]; [`ErrorKind::InvalidArgument`] when `plan` does not fit either
/// array, or when `input` and `output` are the same segment.
///
/// # Examples
/// ```
/// use ndarray::s;
/// use ndshm::{fork_chunks_into, ChunkPlan, SharedNdArray};
/// # let (a, b) = (format!("doc-fork-in-{}", std::process::id()), format!("doc-fork-out-{}", std::process::id()));
/// let input = SharedNdArray::<f64, ndarray::Ix1>::from_array(&a, &ndarray::Array1::range(0.0, 8.0, 1.0))?;
/// let mut output = SharedNdArray::<f64, ndarray::Ix1>::zeros(&b, 8)?;
/// let plan = ChunkPlan::balanced(8, 2)?;
/// // A 3-point moving sum: reads the neighbours across the chunk boundary.
/// fork_chunks_into(&input, &mut output, &plan, |chunk, x, mut y| {
///     for (k, i) in chunk.range().enumerate() {
///         let lo = i.saturating_sub(1);
///         let hi = (i + 2).min(x.len());
///         y[k] = x.slice(s![lo..hi]).sum();
///     }
/// })?;
/// assert_eq!(output.as_slice().unwrap(), &[1.0, 3.0, 6.0, 9.0, 12.0, 15.0, 18.0, 13.0]);
/// # Ok::<(), ndshm::Error>(())
/// ```
pub fn fork_chunks_into<'p, T, D, A, U, E, F, R>(
    input: &SharedNdArray<T, D, A>,
    output: &mut SharedNdArray<U, E>,
    plan: impl IntoChunkPlan<'p>,
    f: F,
) -> Result<()>
where
    T: Element,
    D: Dimension,
    A: AccessMode,
    U: Element,
    E: Dimension,
    F: Fn(Chunk, ArrayView<'_, T, D>, ArrayViewMut<'_, U, E>) -> R,
    R: ChildResult,
{
    let plan = plan.into_chunk_plan(output.shape())?;
    plan.check_shape(input.shape(), "input", input.name())?;
    plan.check_shape(output.shape(), "output", output.name())?;
    if input.segment_id() != 0 && input.segment_id() == output.segment_id() {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "input and output are the same segment '{}': use fork_chunks for in-place work",
                output.name()
            ),
        ));
    }
    run_forked(&plan, |chunk| -> std::result::Result<(), String> {
        // In the child: re-bind both handles to the child (see `fork_chunks`); the
        // input only for reading (`adopt_in_child` takes `&self`).
        input.adopt_in_child().map_err(adopt_failed)?;
        output.adopt_in_child().map_err(adopt_failed)?;
        f(chunk, input.view(), chunk.of_mut(output.view_mut())).into_message()
    })
}

/// Most chunks (so most children) one fork-per-call job may have.
pub const MAX_FORKED_CHUNKS: usize = 1024;

/// Forks one child per chunk of `plan`, each running `job(chunk)`, and waits for all.
fn run_forked<R: ChildResult>(plan: &ChunkPlan, mut job: impl FnMut(Chunk) -> R) -> Result<()> {
    if plan.num_chunks() > MAX_FORKED_CHUNKS {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "fork per call forks one process per chunk, and this plan has {} chunks (at \
                 most {MAX_FORKED_CHUNKS}): use fewer, larger chunks, or a WorkerPool, whose \
                 workers claim any number of chunks",
                plan.num_chunks()
            ),
        ));
    }
    check_fork_allowed("fork_chunks")?;
    // Children not yet waited for are killed and reaped when this drops (fork failing
    // part-way, or unwinding).
    let mut children: Vec<(Chunk, Child)> = Vec::with_capacity(plan.num_chunks());
    for chunk in plan.iter() {
        children.push((chunk, Child::spawn(|| job(chunk))?));
    }
    // Wait for every child before reporting, so that none still writes when this returns.
    let mut first: Option<Error> = None;
    let mut wait_err: Option<Error> = None;
    for (chunk, child) in &mut children {
        match child.wait(false) {
            Ok(_) => {
                if let Some(why) = child.failure(Job::Chunk(chunk.index)) {
                    first.get_or_insert_with(|| {
                        worker_failed(chunk, &format!("worker process {}", child.pid()), &why)
                    });
                }
            }
            Err(e) => {
                wait_err.get_or_insert(e);
            }
        }
    }
    match (first, wait_err) {
        (Some(e), _) | (None, Some(e)) => Err(e),
        (None, None) => Ok(()),
    }
}

/// The error of a failed chunk: "chunk 3 (indices 300..400 of axis 0) in worker process
/// 1234 panicked: ..." (a tile names its range along each split axis); `who` names the
/// executor.
pub(crate) fn worker_failed(chunk: &Chunk, who: &str, why: &str) -> Error {
    Error::new(ErrorKind::WorkerFailed, format!("{chunk} in {who} {why}"))
}
