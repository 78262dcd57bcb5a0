//! Jobs over several arrays: [`JobBuilder`] (ndarray's `Zip` across processes) and the
//! [`Halo`] view of an array read with neighbours (Dask's `map_overlap`).
//!
//! The builder adds arrays one by one, checks each as it comes (the plan fits it, its
//! segment is not already in the job where one of the uses writes, a halo is not wider
//! than the array), describes it for the workers, and grows the job's type-level list of
//! arrays ([`JobArrays`]); `for_each`/`map_reduce` then run the job through the pool's
//! `run`, as the single-array jobs do. The typed views are rebuilt in each executor by the
//! trampolines of `job.rs`, which rest on what the builder checked here.

use std::marker::PhantomData;
use std::mem::size_of;
use std::ops::Deref;
use std::time::{Duration, Instant};

use bytemuck::Pod;
use ndarray::{ArrayView, Axis, Dimension, Slice};

use super::control::{ArrayDesc, MAX_ARRAYS};
use super::job::{
    Append, JobArray, JobArrays, JobFns, ReadChunk, ReadHalo, ReadWhole, WriteChunk, ZipFn,
    MODE_HALO, MODE_READ, MODE_WHOLE, MODE_WRITE,
};
use super::options::{CancelToken, JobOptions};
use super::{check_results, describe, WorkerPool};
use crate::array::{AccessMode, SharedNdArray};
use crate::element::Element;
use crate::error::{Error, ErrorKind, Result};
use crate::parallel::chunk::{Chunk, ChunkPlan};
use crate::parallel::process::ChildResult;

/// Most arrays one multi-array job may take (reads and writes together); a job with one
/// more does not compile.
///
/// # Examples
/// ```
/// assert_eq!(ndshm::MAX_JOB_ARRAYS, 12);
/// assert!(ndshm::MAX_JOB_ARRAYS <= ndshm::CACHE_ENTRIES); // a worker maps them all at once
/// ```
pub const MAX_JOB_ARRAYS: usize = MAX_ARRAYS;

impl WorkerPool {
    /// Starts a job over several arrays, all split by `plan`: add them one by one with
    /// [`read`](JobBuilder::read), [`read_whole`](JobBuilder::read_whole),
    /// [`read_halo`](JobBuilder::read_halo) and [`write`](JobBuilder::write) (up to
    /// [`MAX_JOB_ARRAYS`], any mix), then run it with [`for_each`](JobBuilder::for_each)
    /// or [`map_reduce`](JobBuilder::map_reduce). The function gets the chunk, a tuple of
    /// typed views in the order the arrays were added, and the parameters — the shape of
    /// ndarray's `Zip`/`par_azip!`, across processes.
    ///
    /// # Examples
    /// `c = a * b + d` over three inputs and one output:
    /// ```
    /// use ndshm::{ChunkPlan, CreateOptions, SharedNdArray, WorkerPool};
    /// let mut pool = WorkerPool::new(2)?;
    /// let new = |v: f64| SharedNdArray::<f64, ndarray::Ix1>::from_elem(CreateOptions::unique(), 1000, v);
    /// let (a, b, d, mut c) = (new(2.0)?, new(3.0)?, new(1.0)?, new(0.0)?);
    /// let plan = ChunkPlan::balanced(1000, 4)?;
    /// pool.job(&plan).read(&a).read(&b).read(&d).write(&mut c).for_each(
    ///     (),
    ///     |_chunk, (a, b, d, mut c), _: &()| {
    ///         ndarray::Zip::from(&mut c).and(&a).and(&b).and(&d).for_each(|c, &a, &b, &d| *c = a * b + d);
    ///     },
    /// )?;
    /// assert!(c.view().iter().all(|&v| v == 7.0));
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn job<'a>(&'a mut self, plan: &'a ChunkPlan) -> JobBuilder<'a, ()> {
        let error = self.check_process().err();
        JobBuilder::start(Some(self), plan, error)
    }
}

/// A job over several arrays being put together: made by [`WorkerPool::job`], grown by
/// [`read`](Self::read), [`read_whole`](Self::read_whole), [`read_halo`](Self::read_halo)
/// and [`write`](Self::write), run by [`for_each`](Self::for_each) or
/// [`map_reduce`](Self::map_reduce). `L` is the list of arrays so far ([`JobArrays`]): a
/// tuple of markers whose views the function gets, in order.
///
/// Each added array is checked as it comes; the first problem is kept and returned by
/// `for_each`/`map_reduce` (nothing runs):
/// - the plan must fit it (its length along every split axis of the plan),
///   [`ErrorKind::InvalidArgument`] naming the array otherwise;
/// - a segment may be added any number of times to read, but not twice where one use
///   writes ([`ErrorKind::InvalidArgument`]; within one process the borrow checker and the
///   one-handle rule already stop most such jobs at compile time or at `open`);
/// - a halo may not be wider than the array along a split axis
///   ([`ErrorKind::InvalidArgument`]);
/// - as for [`WorkerPool::map`]: the array must carry an ndshm trailer
///   ([`ErrorKind::Unsupported`]), have at most [`MAX_DIMS`](crate::MAX_DIMS) dimensions,
///   belong to this process ([`ErrorKind::WrongProcess`]), and keep its name
///   ([`ErrorKind::NotFound`] when the workers could not attach it).
///
/// More than [`MAX_JOB_ARRAYS`] arrays do not compile (the list of 12 has no
/// [`Append`]: "the method `read` exists ... but its trait bounds were not
/// satisfied ... `(...): Append<_>`"):
/// ```compile_fail
/// use ndshm::{ChunkPlan, CreateOptions, SharedNdArray, WorkerPool};
/// let mut pool = WorkerPool::new(1).unwrap();
/// let a = SharedNdArray::<u8, ndarray::Ix1>::zeros(CreateOptions::unique(), 4).unwrap();
/// let plan = ChunkPlan::balanced(4, 2).unwrap();
/// pool.job(&plan)
///     .read(&a).read(&a).read(&a).read(&a).read(&a).read(&a)
///     .read(&a).read(&a).read(&a).read(&a).read(&a).read(&a)
///     .read(&a); // the 13th: "a pool job takes at most 12 arrays"
/// ```
/// and an array cannot be written and used again in one job:
/// ```compile_fail
/// use ndshm::{ChunkPlan, CreateOptions, SharedNdArray, WorkerPool};
/// let mut pool = WorkerPool::new(1).unwrap();
/// let mut a = SharedNdArray::<u8, ndarray::Ix1>::zeros(CreateOptions::unique(), 4).unwrap();
/// let plan = ChunkPlan::balanced(4, 2).unwrap();
/// pool.job(&plan).write(&mut a).read(&a).for_each((), |_, _, _: &()| {}).unwrap();
/// ```
///
/// Writable chunks never overlap: the plan's chunks are disjoint and each is run by one
/// executor. The function is a `fn` (or a closure that captures nothing), as for
/// [`WorkerPool::map`].
///
/// # Examples
/// ```
/// use ndshm::{ChunkPlan, CreateOptions, SharedNdArray, WorkerPool};
/// let mut pool = WorkerPool::new(2)?;
/// let x = SharedNdArray::<f32, ndarray::Ix2>::from_elem(CreateOptions::unique(), (6, 4), 1.5)?;
/// let mut y = SharedNdArray::<f64, ndarray::Ix2>::zeros(CreateOptions::unique(), (6, 4))?;
/// let plan = ChunkPlan::balanced_along(x.shape(), 0, 3)?; // rows, 3 chunks
/// pool.job(&plan).read(&x).write(&mut y).for_each(2.0f64, |_, (x, mut y), &k| {
///     y.zip_mut_with(&x, |o, &i| *o = k * f64::from(i));
/// })?;
/// assert_eq!(y.view().sum(), 24.0 * 3.0);
/// # Ok::<(), ndshm::Error>(())
/// ```
#[must_use = "a job runs only when for_each or map_reduce is called"]
pub struct JobBuilder<'a, L> {
    /// The pool that runs the job; `None` inside a [`ScopedJobBuilder`](super::ScopedJobBuilder),
    /// which submits the job to its scope instead.
    pool: Option<&'a mut WorkerPool>,
    plan: &'a ChunkPlan,
    /// The arrays so far, described for the workers, with their data in this process.
    arrays: Vec<(ArrayDesc, *mut u8)>,
    /// The largest array's element count (the inline shortcut's measure).
    elements: usize,
    /// The first problem found while adding arrays.
    error: Option<Error>,
    /// This job's deadline, timeout and token (set by the builder); `None`: the pool's.
    options: Option<JobOptions>,
    _arrays: PhantomData<fn() -> L>,
}

impl<L> std::fmt::Debug for JobBuilder<'_, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobBuilder")
            .field("chunks", &self.plan.num_chunks())
            .field(
                "arrays",
                &self
                    .arrays
                    .iter()
                    .map(|(d, _)| d.name().unwrap_or("?").to_string())
                    .collect::<Vec<_>>(),
            )
            .field("error", &self.error)
            .finish()
    }
}

/// The role of an array in messages.
/// A builder without a pool: only a [`ScopedJobBuilder`](super::ScopedJobBuilder) holds
/// one, and it submits instead of running (an ndshm bug if reached).
fn not_bound() -> Error {
    Error::new(
        ErrorKind::InvalidArgument,
        "ndshm bug: a scoped job was run as a blocking one",
    )
}

fn role(mode: u32) -> &'static str {
    match mode {
        MODE_READ => "read",
        MODE_WHOLE => "read whole",
        MODE_HALO => "read with a halo",
        _ => "written",
    }
}

impl<'a> JobBuilder<'a, ()> {
    /// A job without arrays yet, run on `pool` (or, with `None`, submitted to a scope by
    /// its [`ScopedJobBuilder`](super::ScopedJobBuilder)); `error` is returned when it runs.
    pub(super) fn start(
        pool: Option<&'a mut WorkerPool>,
        plan: &'a ChunkPlan,
        error: Option<Error>,
    ) -> Self {
        JobBuilder {
            pool,
            plan,
            arrays: Vec::new(),
            elements: 0,
            error,
            options: None,
            _arrays: PhantomData,
        }
    }
}

/// What a job needs to be dispatched: its plan, arrays, element count and own options.
pub(super) type JobParts<'a> = (
    &'a ChunkPlan,
    Vec<(ArrayDesc, *mut u8)>,
    usize,
    Option<JobOptions>,
);

impl<'a, L: JobArrays> JobBuilder<'a, L> {
    /// The job as the pool dispatches it, or the first problem found while adding arrays.
    pub(super) fn into_parts(self) -> Result<JobParts<'a>> {
        match self.error {
            Some(e) => Err(e),
            None => Ok((self.plan, self.arrays, self.elements, self.options)),
        }
    }

    /// Adds `array` with access `mode`, checked; the list grows by `X` either way (a
    /// failed check is returned when the job runs).
    fn add<X, T, D, A>(
        mut self,
        array: &SharedNdArray<T, D, A>,
        mode: u32,
        halo: usize,
    ) -> JobBuilder<'a, <L as Append<X>>::Output>
    where
        L: Append<X>,
        X: JobArray,
        T: Element,
        D: Dimension,
        A: AccessMode,
    {
        if self.error.is_none() {
            if let Err(e) = self.check_and_push(array, mode, halo) {
                self.error = Some(e);
            }
        }
        JobBuilder {
            pool: self.pool,
            plan: self.plan,
            arrays: self.arrays,
            elements: self.elements,
            error: self.error,
            options: self.options,
            _arrays: PhantomData,
        }
    }

    fn check_and_push<T, D, A>(
        &mut self,
        array: &SharedNdArray<T, D, A>,
        mode: u32,
        halo: usize,
    ) -> Result<()>
    where
        T: Element,
        D: Dimension,
        A: AccessMode,
    {
        let index = self.arrays.len();
        let what = role(mode);
        if index >= MAX_ARRAYS {
            return Err(too_many(index + 1));
        }
        let shape = array.shape();
        if self.plan.check_shape(shape, "", "").is_err() {
            // Again, naming the array (the message is built only when it is needed).
            let role = format!("array {index} ({what})");
            self.plan.check_shape(shape, &role, array.name())?;
        }
        let mut d = describe(array, mode == MODE_WRITE)?;
        refuse_aliasing(&self.arrays, &d, mode, array.name())?;
        if mode == MODE_HALO {
            // Every split axis of the plan (one today; several for tile plans).
            if let Some(first) = self.plan.get(0) {
                for (axis, _) in first.ranges() {
                    let len = shape.get(axis).copied().unwrap_or(0);
                    if halo > len {
                        return Err(Error::new(
                            ErrorKind::InvalidArgument,
                            format!(
                                "a halo of {halo} indices is wider than array {index} '{}' \
                                 along split axis {axis} ({len} indices, shape {shape:?}): ask \
                                 for at most {len}, or read the array whole with read_whole",
                                array.name()
                            ),
                        ));
                    }
                }
            }
        }
        d.mode = mode;
        d.halo = halo as u64;
        self.arrays.push((d, array.data_ptr().cast::<u8>()));
        self.elements = self.elements.max(array.len());
        Ok(())
    }

    /// Adds `array`, read chunk by chunk: the function gets an `ArrayView<T, D>` of the
    /// chunk.
    ///
    /// # Examples
    /// ```
    /// use ndshm::{ChunkPlan, CreateOptions, SharedNdArray, WorkerPool};
    /// let mut pool = WorkerPool::new(2)?;
    /// let a = SharedNdArray::<i64, ndarray::Ix1>::from_array(
    ///     CreateOptions::unique(),
    ///     &ndarray::Array1::from_iter(0..10i64),
    /// )?;
    /// let plan = ChunkPlan::balanced(10, 2)?;
    /// let firsts = pool.job(&plan).read(&a).map_reduce((), |_, (x,), _: &()| x[0])?;
    /// assert_eq!(firsts, vec![0, 5]);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn read<T, D, A>(
        self,
        array: &'a SharedNdArray<T, D, A>,
    ) -> JobBuilder<'a, <L as Append<ReadChunk<T, D>>>::Output>
    where
        L: Append<ReadChunk<T, D>>,
        T: Element,
        D: Dimension,
        A: AccessMode,
    {
        self.add::<ReadChunk<T, D>, T, D, A>(array, MODE_READ, 0)
    }

    /// Adds `array`, read whole: the function gets an `ArrayView<T, D>` of all of it (to
    /// look anything up; its length along the split axes must still match the plan).
    ///
    /// # Examples
    /// ```
    /// use ndshm::{ChunkPlan, CreateOptions, SharedNdArray, WorkerPool};
    /// let mut pool = WorkerPool::new(2)?;
    /// let a = SharedNdArray::<i64, ndarray::Ix1>::from_array(
    ///     CreateOptions::unique(),
    ///     &ndarray::Array1::from_iter(0..10i64),
    /// )?;
    /// let mut rev = SharedNdArray::<i64, ndarray::Ix1>::zeros(CreateOptions::unique(), 10)?;
    /// let plan = ChunkPlan::balanced(10, 2)?;
    /// // Reverse: each chunk of the output reads the mirrored part of the whole input.
    /// pool.job(&plan).read_whole(&a).write(&mut rev).for_each((), |c, (a, mut out), _: &()| {
    ///     for (i, o) in c.range().zip(out.iter_mut()) {
    ///         *o = a[a.len() - 1 - i];
    ///     }
    /// })?;
    /// assert_eq!(rev.view()[0], 9);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn read_whole<T, D, A>(
        self,
        array: &'a SharedNdArray<T, D, A>,
    ) -> JobBuilder<'a, <L as Append<ReadWhole<T, D>>>::Output>
    where
        L: Append<ReadWhole<T, D>>,
        T: Element,
        D: Dimension,
        A: AccessMode,
    {
        self.add::<ReadWhole<T, D>, T, D, A>(array, MODE_WHOLE, 0)
    }

    /// Adds `array`, read with a halo of `k` indices: the function gets a [`Halo<T, D>`],
    /// the chunk widened by `k` on each side along each split axis of the plan (clipped at
    /// the array's edges), with where the chunk starts inside it. Dask's `map_overlap`
    /// with `depth = k` and no boundary padding.
    ///
    /// # Examples
    /// A three-point moving sum, equal to the serial one including the edges:
    /// ```
    /// use ndshm::{ChunkPlan, CreateOptions, SharedNdArray, WorkerPool};
    /// let mut pool = WorkerPool::new(2)?;
    /// let x = SharedNdArray::<f64, ndarray::Ix1>::from_array(
    ///     CreateOptions::unique(),
    ///     &ndarray::Array1::range(0.0, 100.0, 1.0),
    /// )?;
    /// let mut y = SharedNdArray::<f64, ndarray::Ix1>::zeros(CreateOptions::unique(), 100)?;
    /// let plan = ChunkPlan::balanced(100, 4)?;
    /// pool.job(&plan).read_halo(&x, 1).write(&mut y).for_each((), |c, (x, mut y), _: &()| {
    ///     let off = x.offset(0); // where the chunk starts inside the halo view
    ///     for i in 0..c.len() {
    ///         let at = off + i;
    ///         let lo = at.saturating_sub(1);
    ///         let hi = (at + 2).min(x.len());
    ///         y[i] = x.view().slice(ndarray::s![lo..hi]).sum();
    ///     }
    /// })?;
    /// assert_eq!(y.view()[0], 0.0 + 1.0);
    /// assert_eq!(y.view()[25], 24.0 + 25.0 + 26.0); // across a chunk boundary
    /// assert_eq!(y.view()[99], 98.0 + 99.0);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn read_halo<T, D, A>(
        self,
        array: &'a SharedNdArray<T, D, A>,
        k: usize,
    ) -> JobBuilder<'a, <L as Append<ReadHalo<T, D>>>::Output>
    where
        L: Append<ReadHalo<T, D>>,
        T: Element,
        D: Dimension,
        A: AccessMode,
    {
        self.add::<ReadHalo<T, D>, T, D, A>(array, MODE_HALO, k)
    }

    /// Adds `array`, written chunk by chunk: the function gets an `ArrayViewMut<T, D>` of
    /// the chunk, which no other executor sees.
    ///
    /// # Examples
    /// ```
    /// use ndshm::{ChunkPlan, CreateOptions, SharedNdArray, WorkerPool};
    /// let mut pool = WorkerPool::new(2)?;
    /// let mut a = SharedNdArray::<u8, ndarray::Ix1>::zeros(CreateOptions::unique(), 8)?;
    /// let mut b = SharedNdArray::<u16, ndarray::Ix1>::zeros(CreateOptions::unique(), 8)?;
    /// let plan = ChunkPlan::balanced(8, 2)?;
    /// // Two outputs at once.
    /// pool.job(&plan).write(&mut a).write(&mut b).for_each((), |c, (mut a, mut b), _: &()| {
    ///     a.fill(c.index as u8);
    ///     b.fill(100);
    /// })?;
    /// assert_eq!((a.view().sum(), b.view().sum()), (4, 800));
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn write<T, D>(
        self,
        array: &'a mut SharedNdArray<T, D>,
    ) -> JobBuilder<'a, <L as Append<WriteChunk<T, D>>>::Output>
    where
        L: Append<WriteChunk<T, D>>,
        T: Element,
        D: Dimension,
    {
        self.add::<WriteChunk<T, D>, T, D, crate::array::ReadWrite>(array, MODE_WRITE, 0)
    }

    /// This job must be finished at `at`, on top of the pool's
    /// [`set_job_options`](WorkerPool::set_job_options) (the earliest deadline applies). As
    /// for those options, the job then runs no chunk in the caller, and when the deadline
    /// passes the workers still inside a chunk are killed and replaced, and the job returns
    /// [`ErrorKind::Timeout`] naming the chunks that did not finish.
    ///
    /// # Examples
    /// ```
    /// use std::time::{Duration, Instant};
    /// use ndshm::{ChunkPlan, CreateOptions, ErrorKind, SharedNdArray, WorkerPool};
    /// let mut pool = WorkerPool::new(2)?;
    /// let mut a = SharedNdArray::<u8, ndarray::Ix1>::zeros(CreateOptions::unique(), 4)?;
    /// let plan = ChunkPlan::balanced(4, 2)?;
    /// let err = pool
    ///     .job(&plan)
    ///     .write(&mut a)
    ///     .deadline(Instant::now() + Duration::from_millis(200))
    ///     .for_each((), |c, _, _: &()| {
    ///         while c.index == 1 {
    ///             std::thread::sleep(Duration::from_secs(1)); // never ends
    ///         }
    ///     })
    ///     .unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Timeout);
    /// assert!(err.message().contains("chunk 1"), "{err}");
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn deadline(mut self, at: Instant) -> Self {
        self.options = Some(self.options.take().unwrap_or_default().deadline(at));
        self
    }

    /// This job must be finished `after` it starts (see [`deadline`](Self::deadline)). A
    /// timeout of zero makes the job fail with [`ErrorKind::InvalidArgument`].
    pub fn timeout(mut self, after: Duration) -> Self {
        let options = self.options.take().unwrap_or_default().timeout(after);
        if let Err(e) = options.check() {
            self.error.get_or_insert(e);
        }
        self.options = Some(options);
        self
    }

    /// Cancelling `token` (from another thread or a signal handler) stops this job, which
    /// then returns [`ErrorKind::Cancelled`]; see [`CancelToken`].
    ///
    /// # Examples
    /// ```
    /// use ndshm::{CancelToken, ChunkPlan, CreateOptions, ErrorKind, SharedNdArray, WorkerPool};
    /// let mut pool = WorkerPool::new(2)?;
    /// let mut a = SharedNdArray::<u8, ndarray::Ix1>::zeros(CreateOptions::unique(), 4)?;
    /// let plan = ChunkPlan::balanced(4, 2)?;
    /// let token = CancelToken::new();
    /// token.cancel(); // cancelled before it starts: nothing runs
    /// let err = pool.job(&plan).write(&mut a).cancel_token(&token).for_each((), |_, (mut a,), _: &()| {
    ///     a.fill(1);
    /// });
    /// assert_eq!(err.unwrap_err().kind(), ErrorKind::Cancelled);
    /// assert_eq!(a.view().sum(), 0);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn cancel_token(mut self, token: &CancelToken) -> Self {
        self.options = Some(self.options.take().unwrap_or_default().cancel_token(token));
        self
    }

    /// Runs `f(chunk, views, &params)` on every chunk of the plan; `f` returns `()` or
    /// `Result<(), E>` with a displayable `E`.
    ///
    /// # Errors
    /// The first problem found while adding arrays (see [`JobBuilder`]), then as
    /// [`WorkerPool::map`]: [`ErrorKind::WorkerFailed`] naming the chunk when a chunk
    /// panicked or returned an error, or its worker died; [`ErrorKind::NotFound`] for an
    /// array whose name is gone; [`ErrorKind::InvalidArgument`] when `P` is larger than
    /// [`MAX_PARAMS`](crate::MAX_PARAMS).
    ///
    /// # Examples
    /// ```
    /// use ndshm::{ChunkPlan, CreateOptions, ErrorKind, SharedNdArray, WorkerPool};
    /// let mut pool = WorkerPool::new(2)?;
    /// let a = SharedNdArray::<f64, ndarray::Ix1>::from_elem(CreateOptions::unique(), 10, 1.0)?;
    /// let mut b = SharedNdArray::<f64, ndarray::Ix1>::zeros(CreateOptions::unique(), 10)?;
    /// let plan = ChunkPlan::balanced(10, 2)?;
    /// pool.job(&plan).read(&a).write(&mut b).for_each(0.5f64, |_, (a, mut b), &h| {
    ///     b.assign(&(&a * h));
    /// })?;
    /// assert_eq!(b.view().sum(), 5.0);
    /// // A chunk's error names the chunk.
    /// let err = pool
    ///     .job(&plan)
    ///     .write(&mut b)
    ///     .for_each((), |c, _, _: &()| if c.index == 1 { Err("bad") } else { Ok(()) })
    ///     .unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::WorkerFailed);
    /// assert!(err.to_string().contains("chunk 1"), "{err}");
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn for_each<P, R>(self, params: P, f: ZipFn<L, P, R>) -> Result<()>
    where
        P: Pod,
        R: ChildResult,
    {
        if let Some(e) = self.error {
            return Err(e);
        }
        let pool = self.pool.ok_or_else(not_bound)?;
        pool.run(
            self.plan,
            JobFns::zip::<L, P, R>(f),
            bytemuck::bytes_of(&params),
            &self.arrays,
            0,
            self.elements,
            self.options.as_ref().unwrap_or(&JobOptions::NONE),
        )
    }

    /// Runs `f(chunk, views, &params)` on every chunk and returns its values in chunk
    /// order: partial sums, norms, residuals over several arrays at once.
    ///
    /// # Errors
    /// As [`for_each`](Self::for_each), plus [`ErrorKind::InvalidArgument`] when the
    /// results (chunks × `size_of::<R>()`) exceed [`MAX_RESULTS`](crate::MAX_RESULTS)
    /// bytes.
    ///
    /// # Examples
    /// A dot product and a squared distance in one pass:
    /// ```
    /// use ndshm::{ChunkPlan, CreateOptions, SharedNdArray, WorkerPool};
    /// let mut pool = WorkerPool::new(2)?;
    /// let a = SharedNdArray::<f64, ndarray::Ix1>::from_elem(CreateOptions::unique(), 100, 2.0)?;
    /// let b = SharedNdArray::<f64, ndarray::Ix1>::from_elem(CreateOptions::unique(), 100, 3.0)?;
    /// let plan = ChunkPlan::balanced(100, 4)?;
    /// let parts = pool.job(&plan).read(&a).read(&b).map_reduce((), |_, (a, b), _: &()| {
    ///     [a.dot(&b), (&a - &b).mapv(|d| d * d).sum()]
    /// })?;
    /// assert_eq!(parts.iter().map(|p| p[0]).sum::<f64>(), 600.0);
    /// assert_eq!(parts.iter().map(|p| p[1]).sum::<f64>(), 100.0);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn map_reduce<P, R>(self, params: P, f: ZipFn<L, P, R>) -> Result<Vec<R>>
    where
        P: Pod,
        R: Pod,
    {
        if let Some(e) = self.error {
            return Err(e);
        }
        check_results::<R>(self.plan)?;
        let pool = self.pool.ok_or_else(not_bound)?;
        pool.run(
            self.plan,
            JobFns::zip_reduce::<L, P, R>(f),
            bytemuck::bytes_of(&params),
            &self.arrays,
            size_of::<R>(),
            self.elements,
            self.options.as_ref().unwrap_or(&JobOptions::NONE),
        )?;
        Ok(pool.results(self.plan.num_chunks()))
    }
}

/// `Err(InvalidArgument)` when the segment of `d` (named `name`), added with `mode`, is
/// already among `arrays` and one of the two uses writes: its writable chunks would race
/// with the other view. Two reads of one segment are fine.
fn refuse_aliasing(
    arrays: &[(ArrayDesc, *mut u8)],
    d: &ArrayDesc,
    mode: u32,
    name: &str,
) -> Result<()> {
    let index = arrays.len();
    for (j, (other, _)) in arrays.iter().enumerate() {
        if other.segment_id == d.segment_id && (mode == MODE_WRITE || other.mode == MODE_WRITE) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "segment '{name}' is array {j} ({}) and array {index} ({}) of the job: an \
                     array that a job writes cannot be added again (its chunks would race with \
                     the other view); read it before or after the job, or write into a \
                     separate array",
                    role(other.mode),
                    role(mode)
                ),
            ));
        }
    }
    Ok(())
}

/// The error of a job with `n` arrays, more than [`MAX_JOB_ARRAYS`] (the types stop such a
/// job at compile time; this guards the descriptor all the same).
fn too_many(n: usize) -> Error {
    Error::new(
        ErrorKind::InvalidArgument,
        format!(
            "a pool job takes at most {MAX_JOB_ARRAYS} arrays, and this one has {n}: stack \
             arrays of one shape and type into one with an extra axis, or split the work"
        ),
    )
}

/// An array read with a halo ([`JobBuilder::read_halo`]): the chunk widened by `k`
/// indices on each side along each split axis of the plan, clipped at the array's edges,
/// and where the chunk lies inside it.
///
/// For a chunk `start..end` of an axis of length `n`, the halo view covers
/// `start.saturating_sub(k)..(end + k).min(n)` of that axis (and all of every axis the plan
/// does not split); [`offset(axis)`](Self::offset) is where `start` lies in it (`k`, or
/// less at the array's start), and [`interior`](Self::interior) is the chunk's own part,
/// of the chunk's shape. It derefs to the halo view.
///
/// # Examples
/// A 1-D chunk `4..8` of 10 indices with a halo of 2:
/// ```
/// use ndshm::{ChunkPlan, CreateOptions, SharedNdArray, WorkerPool};
/// let mut pool = WorkerPool::new(1)?;
/// let a = SharedNdArray::<u32, ndarray::Ix1>::from_array(
///     CreateOptions::unique(),
///     &ndarray::Array1::from_iter(0..10u32),
/// )?;
/// let plan = ChunkPlan::fixed(10, 4)?; // 0..4, 4..8, 8..10
/// let seen = pool.job(&plan).read_halo(&a, 2).map_reduce((), |_, (h,), _: &()| {
///     // first index seen, where the chunk starts in the view, halo length, interior sum
///     [h[0], h.offset(0) as u32, h.len() as u32, h.interior().sum()]
/// })?;
/// assert_eq!(seen[0], [0, 0, 6, 0 + 1 + 2 + 3]); // 0..6: clipped before
/// assert_eq!(seen[1], [2, 2, 8, 4 + 5 + 6 + 7]); // 2..10
/// assert_eq!(seen[2], [6, 2, 4, 8 + 9]); // 6..10: clipped after
/// # Ok::<(), ndshm::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Halo<'a, T, D: Dimension> {
    view: ArrayView<'a, T, D>,
    /// Where the chunk starts inside `view`, per axis (0 on unsplit axes).
    offset: D,
    /// The chunk's extent inside `view`, per axis.
    interior: D,
    width: usize,
}

impl<'a, T, D: Dimension> Halo<'a, T, D> {
    /// The halo of `chunk` in `whole` (the whole array), `k` wide.
    ///
    /// # Panics
    /// When a split axis of `chunk` lies outside `whole` (the builder checked that the plan
    /// fits the array, so chunks handed out by a job never do).
    pub(super) fn new(whole: ArrayView<'a, T, D>, chunk: &Chunk, k: usize) -> Halo<'a, T, D> {
        let mut view = whole;
        let mut offset = D::zeros(view.ndim());
        let mut interior = view.raw_dim();
        for (axis, range) in chunk.ranges() {
            let n = view.len_of(Axis(axis));
            let lo = range.start.saturating_sub(k);
            let hi = range.end.saturating_add(k).min(n);
            view.slice_axis_inplace(Axis(axis), Slice::from(lo..hi));
            offset[axis] = range.start - lo;
            interior[axis] = range.end - range.start;
        }
        Halo {
            view,
            offset,
            interior,
            width: k,
        }
    }

    /// The halo view: the chunk and up to `k` neighbours on each side along each split
    /// axis.
    ///
    /// # Examples
    /// See [`Halo`]; `h.view()` is `*h` as an owned view.
    /// ```
    /// # use ndshm::{ChunkPlan, CreateOptions, SharedNdArray, WorkerPool};
    /// # let mut pool = WorkerPool::new(1)?;
    /// let a = SharedNdArray::<u32, ndarray::Ix1>::from_elem(CreateOptions::unique(), 6, 1)?;
    /// let plan = ChunkPlan::balanced(6, 3)?;
    /// let lens = pool.job(&plan).read_halo(&a, 1).map_reduce((), |_, (h,), _: &()| h.view().len())?;
    /// assert_eq!(lens, vec![3, 4, 3]);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn view(&self) -> ArrayView<'a, T, D> {
        self.view.clone()
    }

    /// Where the chunk starts inside the halo view along `axis`: the halo indices before
    /// it (`k`, fewer at the array's start; 0 along an axis the plan does not split).
    ///
    /// # Panics
    /// When `axis` is not an axis of the array.
    ///
    /// # Examples
    /// ```
    /// # use ndshm::{ChunkPlan, CreateOptions, SharedNdArray, WorkerPool};
    /// # let mut pool = WorkerPool::new(1)?;
    /// let a = SharedNdArray::<u32, ndarray::Ix2>::zeros(CreateOptions::unique(), (6, 3))?;
    /// let plan = ChunkPlan::balanced_along(a.shape(), 0, 3)?; // rows 0..2, 2..4, 4..6
    /// let offs = pool.job(&plan).read_halo(&a, 1).map_reduce((), |_, (h,), _: &()| {
    ///     [h.offset(0), h.offset(1)]
    /// })?;
    /// assert_eq!(offs, vec![[0, 0], [1, 0], [1, 0]]);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn offset(&self, axis: usize) -> usize {
        self.offset[axis]
    }

    /// The chunk's own part of the halo view (the shape of the chunk: what a
    /// [`read`](JobBuilder::read) of the array would give).
    ///
    /// # Examples
    /// ```
    /// # use ndshm::{ChunkPlan, CreateOptions, SharedNdArray, WorkerPool};
    /// # let mut pool = WorkerPool::new(1)?;
    /// let a = SharedNdArray::<u32, ndarray::Ix1>::from_elem(CreateOptions::unique(), 6, 1)?;
    /// let plan = ChunkPlan::balanced(6, 3)?;
    /// let same = pool.job(&plan).read_halo(&a, 2).read(&a).map_reduce((), |_, (h, x), _: &()| {
    ///     u8::from(h.interior() == x)
    /// })?;
    /// assert_eq!(same, vec![1, 1, 1]);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn interior(&self) -> ArrayView<'a, T, D> {
        let mut v = self.view.clone();
        for axis in 0..v.ndim() {
            let (o, n) = (self.offset[axis], self.interior[axis]);
            v.slice_axis_inplace(Axis(axis), Slice::from(o..o + n));
        }
        v
    }

    /// The halo width `k` asked for (the view holds fewer neighbours at the array's
    /// edges).
    ///
    /// # Examples
    /// ```
    /// # use ndshm::{ChunkPlan, CreateOptions, SharedNdArray, WorkerPool};
    /// # let mut pool = WorkerPool::new(1)?;
    /// let a = SharedNdArray::<u32, ndarray::Ix1>::zeros(CreateOptions::unique(), 6)?;
    /// let plan = ChunkPlan::balanced(6, 2)?;
    /// let w = pool.job(&plan).read_halo(&a, 3).map_reduce((), |_, (h,), _: &()| h.width())?;
    /// assert_eq!(w, vec![3, 3]);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn width(&self) -> usize {
        self.width
    }
}

impl<'a, T, D: Dimension> Deref for Halo<'a, T, D> {
    type Target = ArrayView<'a, T, D>;
    fn deref(&self) -> &ArrayView<'a, T, D> {
        &self.view
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halos_clip_at_the_edges_and_know_the_interior() {
        let a = ndarray::Array2::from_shape_fn((10, 3), |(i, j)| (i * 3 + j) as u32);
        let plan = ChunkPlan::fixed(10, 4).unwrap();
        let h = Halo::new(a.view(), &plan.get(1).unwrap(), 2);
        assert_eq!(h.view().dim(), (8, 3));
        assert_eq!((h.offset(0), h.offset(1), h.width()), (2, 0, 2));
        assert_eq!(h.interior(), a.slice(ndarray::s![4..8, ..]));
        let h = Halo::new(a.view(), &plan.get(2).unwrap(), 5);
        assert_eq!(h.view(), a.slice(ndarray::s![3..10, ..]));
        assert_eq!(h.interior(), a.slice(ndarray::s![8..10, ..]));
        // Along columns.
        let cols = ChunkPlan::balanced(3, 3).unwrap().along(1);
        let h = Halo::new(a.view(), &cols.get(0).unwrap(), 1);
        assert_eq!(h.view(), a.slice(ndarray::s![.., 0..2]));
        assert_eq!((h.offset(0), h.offset(1)), (0, 0));
        let h = Halo::new(a.view(), &cols.get(1).unwrap(), usize::MAX);
        assert_eq!(h.view(), a.view());
        assert_eq!(h.interior(), a.slice(ndarray::s![.., 1..2]));
    }

    #[test]
    fn a_segment_written_and_used_again_is_refused_and_read_twice_is_not() {
        let desc = |id: u64, mode: u32| {
            let mut d: ArrayDesc = bytemuck::Zeroable::zeroed();
            d.segment_id = id;
            d.mode = mode;
            d
        };
        let p = std::ptr::null_mut();
        let read = [(desc(7, MODE_READ), p), (desc(8, MODE_WRITE), p)];
        // Read twice: fine; another segment written: fine.
        assert!(refuse_aliasing(&read, &desc(7, MODE_HALO), MODE_HALO, "x").is_ok());
        assert!(refuse_aliasing(&read, &desc(9, MODE_WRITE), MODE_WRITE, "z").is_ok());
        // Written after a read, read after a write, written twice: refused, named.
        for (id, mode) in [
            (7, MODE_WRITE),
            (8, MODE_READ),
            (8, MODE_WHOLE),
            (8, MODE_WRITE),
        ] {
            let e = refuse_aliasing(&read, &desc(id, mode), mode, "seg-x").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            let msg = e.to_string();
            assert!(msg.contains("'seg-x'") && msg.contains("array 2"), "{msg}");
        }
    }

    #[test]
    fn more_arrays_than_the_descriptor_holds_is_a_typed_error() {
        let e = too_many(13);
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.to_string().contains("at most 12 arrays"), "{e}");
    }
}
