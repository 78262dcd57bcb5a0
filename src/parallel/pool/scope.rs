//! Submit and wait: [`WorkerPool::scope`] starts jobs without running their chunks in the
//! caller, and joins whatever is left before it returns.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::mem::size_of;

use bytemuck::Pod;
use ndarray::{ArrayView, ArrayViewMut, Dimension};

use std::time::{Duration, Instant};

use super::job::{Append, JobArrays, ReadChunk, ReadHalo, ReadWhole, WriteChunk, ZipFn};
use super::options::CancelToken;
use super::zip::JobBuilder;
use super::{
    check_results, map_arg, map_into_args, reduce_arg, JobArg, JobFns, JobOptions, Pending,
    WorkerPool,
};
use crate::array::{AccessMode, SharedNdArray};
use crate::element::Element;
use crate::error::{Error, ErrorKind, Result};
use crate::parallel::chunk::{Chunk, ChunkPlan};
use crate::parallel::process::ChildResult;

/// What a job's bytes in the results area become for its handle.
type Decode<T> = fn(Vec<u8>) -> T;

/// The job in flight and the results of jobs joined early.
#[derive(Debug, Default)]
struct State {
    last_id: u64,
    in_flight: Option<(u64, Pending, usize)>,
    /// Jobs completed before their handle was joined (a later submit had to wait for
    /// them): their outcome, with their results' bytes.
    completed: Vec<(u64, Result<Vec<u8>>)>,
}

/// The scope of [`WorkerPool::scope`]: submits jobs that run on the workers while the
/// caller goes on, each returning a [`JobHandle`].
///
/// A job submitted here borrows its arrays for the whole scope (`'scope`), as a thread of
/// [`std::thread::scope`] borrows its captures: the scope, not the handle, guarantees that
/// the job has ended before the borrows end.
///
/// One job runs at a time (the pool has one job descriptor): **submitting while a job is
/// in flight first waits for that job** (its outcome is kept for its handle), then starts
/// the new one. The caller never runs chunks of a submitted job, so the pool needs at
/// least one worker.
#[derive(Debug)]
pub struct PoolScope<'scope, 'env: 'scope> {
    pool: RefCell<&'env mut WorkerPool>,
    state: RefCell<State>,
    scope: PhantomData<&'scope mut &'scope ()>,
    env: PhantomData<&'env mut &'env ()>,
}

/// A submitted job: [`join`](Self::join) waits for it and gives its outcome (`()` for
/// `map`/`map_into`, the values in chunk order for `map_reduce`).
///
/// Dropping or forgetting a handle does not leave the job running past its scope: the
/// scope joins it (its failure then becomes the scope's error).
#[derive(Debug)]
#[must_use = "join the handle to see whether the job succeeded"]
pub struct JobHandle<'scope, 'env, T> {
    scope: &'scope PoolScope<'scope, 'env>,
    id: u64,
    decode: Decode<T>,
}

impl<T> JobHandle<'_, '_, T> {
    /// Waits for the job and returns its outcome.
    ///
    /// # Errors
    /// What the job method would have returned when run directly:
    /// [`ErrorKind::WorkerFailed`], [`ErrorKind::Timeout`], [`ErrorKind::Cancelled`]…
    pub fn join(self) -> Result<T> {
        self.scope.join_job(self.id).map(self.decode)
    }
}

impl WorkerPool {
    /// Runs `f` with a [`PoolScope`] that submits jobs without waiting for them: the
    /// caller prepares the next input while the workers run, then joins the handle. Before
    /// `scope` returns, every job submitted in it has ended; the caller runs no chunk of a
    /// submitted job. Returns `f`'s result, or the failure of a job whose handle was not
    /// joined.
    ///
    /// # Why a scope, and not a handle that borrows the arrays and joins on drop
    /// `std::mem::forget` is safe: a handle that held `&mut array` and joined in its
    /// `Drop` could be forgotten, ending the borrow while the workers still write the
    /// array — the caller could then read or drop the array during the job (the bug that
    /// removed `std::thread::scoped` in 2015). Here the jobs borrow their arrays for the
    /// scope's lifetime and the scope joins them itself, so forgetting a handle only loses
    /// its result. (The other sound shape, taking the arrays by value and giving them back
    /// from `join`, would force the caller to give up its arrays for each job.)
    ///
    /// The arrays stay borrowed until the scope ends, so the caller cannot touch an array
    /// while a job on it may run — not even after forgetting the handle:
    /// ```compile_fail
    /// use ndshm::{ChunkPlan, CreateOptions, SharedNdArray, WorkerPool};
    /// let mut pool = WorkerPool::new(2)?;
    /// let mut a = SharedNdArray::<f64, ndarray::Ix1>::zeros(CreateOptions::unique(), 8)?;
    /// let plan = ChunkPlan::balanced(8, 2)?;
    /// pool.scope(|s| {
    ///     let h = s.map(&mut a, &plan, (), |_, mut x, _: &()| x.fill(1.0))?;
    ///     std::mem::forget(h);
    ///     a.view_mut().fill(2.0); // error: `a` is borrowed by the job for the scope
    ///     Ok(())
    /// })?;
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    ///
    /// # Errors
    /// `f`'s error; else the first error of a job whose handle was not joined.
    ///
    /// # Examples
    /// ```
    /// use ndshm::{ChunkPlan, CreateOptions, SharedNdArray, WorkerPool};
    /// let mut pool = WorkerPool::new(3)?;
    /// let mut a = SharedNdArray::<f64, ndarray::Ix1>::zeros(CreateOptions::unique(), 1000)?;
    /// let mut next = SharedNdArray::<f64, ndarray::Ix1>::zeros(CreateOptions::unique(), 1000)?;
    /// let plan = ChunkPlan::balanced(1000, 4)?;
    /// let sums = pool.scope(|s| {
    ///     let h = s.map(&mut a, &plan, 2.0, |_, mut x, &v| x.fill(v))?;
    ///     next.view_mut().fill(1.0); // the caller prepares the next input meanwhile
    ///     h.join()?;
    ///     s.map_reduce(&next, &plan, (), |_, x, _: &()| x.sum())?.join()
    /// })?;
    /// assert_eq!(a.view().sum(), 2000.0);
    /// assert_eq!(sums.iter().sum::<f64>(), 1000.0);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn scope<'env, T>(
        &'env mut self,
        f: impl for<'scope> FnOnce(&'scope PoolScope<'scope, 'env>) -> Result<T>,
    ) -> Result<T> {
        let s = PoolScope {
            pool: RefCell::new(self),
            state: RefCell::new(State::default()),
            scope: PhantomData,
            env: PhantomData,
        };
        // Joins even when `f` panics.
        let guard = JoinOnExit(&s);
        let value = f(&s);
        let leftover = s.join_all();
        drop(guard);
        let value = value?;
        match leftover {
            Some(e) => Err(e),
            None => Ok(value),
        }
    }
}

/// Joins the scope's job in flight when dropped (also while unwinding).
struct JoinOnExit<'a, 'scope, 'env>(&'a PoolScope<'scope, 'env>);

impl Drop for JoinOnExit<'_, '_, '_> {
    fn drop(&mut self) {
        let _ = self.0.join_all();
    }
}

impl<'scope, 'env> PoolScope<'scope, 'env> {
    /// [`WorkerPool::map`] without waiting: returns once the job is dispatched.
    ///
    /// # Errors
    /// As [`WorkerPool::map`] for what is checked before dispatch (a deadline already
    /// passed returns [`ErrorKind::Timeout`] here, running nothing), plus
    /// [`ErrorKind::InvalidArgument`] for a pool without workers; the failures of the job
    /// itself come from [`JobHandle::join`]. A job in flight is waited for first.
    pub fn map<T, D, P, R>(
        &'scope self,
        array: &'scope mut SharedNdArray<T, D>,
        plan: &ChunkPlan,
        params: P,
        f: fn(Chunk, ArrayViewMut<'_, T, D>, &P) -> R,
    ) -> Result<JobHandle<'scope, 'env, ()>>
    where
        T: Element,
        D: Dimension,
        P: Pod,
        R: ChildResult,
    {
        self.pool.borrow().check_process()?;
        let arg = map_arg(array, plan)?;
        let id = self.submit(
            plan,
            JobFns::map(f),
            bytemuck::bytes_of(&params),
            &[arg],
            0,
            array.len(),
            &JobOptions::NONE,
        )?;
        Ok(self.handle(id, |_| ()))
    }

    /// [`WorkerPool::map_into`] without waiting.
    ///
    /// # Errors
    /// As [`map`](Self::map), plus [`ErrorKind::InvalidArgument`] when input and output
    /// are the same segment.
    #[allow(clippy::type_complexity)]
    pub fn map_into<T, D, A, U, E, P, R>(
        &'scope self,
        input: &'scope SharedNdArray<T, D, A>,
        output: &'scope mut SharedNdArray<U, E>,
        plan: &ChunkPlan,
        params: P,
        f: fn(Chunk, ArrayView<'_, T, D>, ArrayViewMut<'_, U, E>, &P) -> R,
    ) -> Result<JobHandle<'scope, 'env, ()>>
    where
        T: Element,
        D: Dimension,
        A: AccessMode,
        U: Element,
        E: Dimension,
        P: Pod,
        R: ChildResult,
    {
        self.pool.borrow().check_process()?;
        let args = map_into_args(input, output, plan)?;
        let id = self.submit(
            plan,
            JobFns::map_into(f),
            bytemuck::bytes_of(&params),
            &args,
            0,
            output.len().max(input.len()),
            &JobOptions::NONE,
        )?;
        Ok(self.handle(id, |_| ()))
    }

    /// [`WorkerPool::map_reduce`] without waiting: the handle's `join` returns the values
    /// in chunk order.
    ///
    /// # Errors
    /// As [`map`](Self::map), plus [`ErrorKind::InvalidArgument`] when the results exceed
    /// [`MAX_RESULTS`](crate::MAX_RESULTS) bytes.
    pub fn map_reduce<T, D, A, P, R>(
        &'scope self,
        array: &'scope SharedNdArray<T, D, A>,
        plan: &ChunkPlan,
        params: P,
        f: fn(Chunk, ArrayView<'_, T, D>, &P) -> R,
    ) -> Result<JobHandle<'scope, 'env, Vec<R>>>
    where
        T: Element,
        D: Dimension,
        A: AccessMode,
        P: Pod,
        R: Pod,
    {
        self.pool.borrow().check_process()?;
        let arg = reduce_arg::<T, D, A, R>(array, plan)?;
        let id = self.submit(
            plan,
            JobFns::reduce(f),
            bytemuck::bytes_of(&params),
            &[arg],
            size_of::<R>(),
            array.len(),
            &JobOptions::NONE,
        )?;
        Ok(self.handle(id, decode_results::<R>))
    }

    /// [`WorkerPool::job`] without waiting: add arrays as on a [`JobBuilder`], then
    /// [`for_each`](ScopedJobBuilder::for_each) or
    /// [`map_reduce`](ScopedJobBuilder::map_reduce) submit the job and return its handle.
    /// The arrays stay borrowed until the scope ends.
    ///
    /// # Examples
    /// ```
    /// use ndshm::{ChunkPlan, CreateOptions, SharedNdArray, WorkerPool};
    /// let mut pool = WorkerPool::new(3)?;
    /// let new = |v: f64| SharedNdArray::<f64, ndarray::Ix1>::from_elem(CreateOptions::unique(), 1000, v);
    /// let (a, b, mut c, mut next) = (new(2.0)?, new(3.0)?, new(0.0)?, new(0.0)?);
    /// let plan = ChunkPlan::balanced(1000, 4)?;
    /// let dot = pool.scope(|s| {
    ///     let h = s.job(&plan).read(&a).read(&b).write(&mut c).for_each((), |_, (a, b, mut c), _: &()| {
    ///         c.assign(&(&a * &b));
    ///     })?;
    ///     next.view_mut().fill(1.0); // the caller prepares the next input meanwhile
    ///     h.join()?;
    ///     s.job(&plan).read(&a).read(&next).map_reduce((), |_, (a, n), _: &()| a.dot(&n))?.join()
    /// })?;
    /// assert!(c.view().iter().all(|&v| v == 6.0));
    /// assert_eq!(dot.iter().sum::<f64>(), 2000.0);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn job(&'scope self, plan: &'scope ChunkPlan) -> ScopedJobBuilder<'scope, 'env, ()> {
        let error = self.pool.borrow().check_process().err();
        ScopedJobBuilder {
            scope: self,
            inner: JobBuilder::start(None, plan, error),
        }
    }

    fn handle<T>(&'scope self, id: u64, decode: Decode<T>) -> JobHandle<'scope, 'env, T> {
        JobHandle {
            scope: self,
            id,
            decode,
        }
    }

    /// Waits for the job in flight, if any, then dispatches this one (the caller runs
    /// none of its chunks).
    #[allow(clippy::too_many_arguments)]
    fn submit(
        &self,
        plan: &ChunkPlan,
        fns: JobFns,
        params: &[u8],
        arrays: &[JobArg],
        result_size: usize,
        elements: usize,
        opts: &JobOptions,
    ) -> Result<u64> {
        let mut pool = self.pool.borrow_mut();
        let mut st = self.state.borrow_mut();
        if let Some((id, job, size)) = st.in_flight.take() {
            let outcome = complete(&mut pool, job, size);
            st.completed.push((id, outcome));
        }
        let job = pool.dispatch(
            plan,
            fns,
            params,
            arrays,
            result_size,
            elements,
            opts,
            false,
        )?;
        st.last_id += 1;
        let id = st.last_id;
        st.in_flight = Some((id, job, result_size));
        Ok(id)
    }

    /// The outcome of job `id` (waiting for it if it is in flight).
    fn join_job(&self, id: u64) -> Result<Vec<u8>> {
        let mut st = self.state.borrow_mut();
        if st.in_flight.as_ref().is_some_and(|(i, _, _)| *i == id) {
            if let Some((_, job, size)) = st.in_flight.take() {
                return complete(&mut self.pool.borrow_mut(), job, size);
            }
        }
        match st.completed.iter().position(|(i, _)| *i == id) {
            Some(k) => st.completed.swap_remove(k).1,
            None => Err(Error::new(
                ErrorKind::InvalidArgument,
                "ndshm bug: a job handle of this scope names no job",
            )),
        }
    }

    /// Joins the job in flight; returns the first error of a job whose handle was not
    /// joined. Aborts the process if the scope's state is borrowed (a panic inside a
    /// submit or join): returning could end the borrows of a running job.
    fn join_all(&self) -> Option<Error> {
        let (Ok(mut st), Ok(mut pool)) = (self.state.try_borrow_mut(), self.pool.try_borrow_mut())
        else {
            // A panic inside submit or join (an ndshm bug): the job may still be running.
            std::process::abort();
        };
        if let Some((id, job, size)) = st.in_flight.take() {
            let outcome = complete(&mut pool, job, size);
            st.completed.push((id, outcome));
        }
        let first = st
            .completed
            .drain(..)
            .find_map(|(_, outcome)| outcome.err());
        first
    }
}

/// Joins `job` and copies its results out of the results area (the next job reuses it).
fn complete(pool: &mut WorkerPool, job: Pending, result_size: usize) -> Result<Vec<u8>> {
    let n = job.n;
    pool.finish(job)?;
    let mut bytes = vec![0u8; n * result_size];
    if result_size > 0 {
        pool.block.ctl().results().read(0, &mut bytes);
    }
    Ok(bytes)
}

/// A job over several arrays being put together inside a [`PoolScope`]: made by
/// [`PoolScope::job`], grown like a [`JobBuilder`] (same checks, same views), and
/// submitted by [`for_each`](Self::for_each) or [`map_reduce`](Self::map_reduce), which
/// return a [`JobHandle`] instead of waiting.
#[derive(Debug)]
#[must_use = "a job is submitted only by for_each or map_reduce"]
pub struct ScopedJobBuilder<'scope, 'env, L> {
    scope: &'scope PoolScope<'scope, 'env>,
    inner: JobBuilder<'scope, L>,
}

impl<'scope, 'env, L: JobArrays> ScopedJobBuilder<'scope, 'env, L> {
    /// Adds `array`, read chunk by chunk ([`JobBuilder::read`]).
    pub fn read<T, D, A>(
        self,
        array: &'scope SharedNdArray<T, D, A>,
    ) -> ScopedJobBuilder<'scope, 'env, <L as Append<ReadChunk<T, D>>>::Output>
    where
        L: Append<ReadChunk<T, D>>,
        T: Element,
        D: Dimension,
        A: AccessMode,
    {
        let scope = self.scope;
        ScopedJobBuilder {
            scope,
            inner: self.inner.read(array),
        }
    }

    /// Adds `array`, read whole ([`JobBuilder::read_whole`]).
    pub fn read_whole<T, D, A>(
        self,
        array: &'scope SharedNdArray<T, D, A>,
    ) -> ScopedJobBuilder<'scope, 'env, <L as Append<ReadWhole<T, D>>>::Output>
    where
        L: Append<ReadWhole<T, D>>,
        T: Element,
        D: Dimension,
        A: AccessMode,
    {
        let scope = self.scope;
        ScopedJobBuilder {
            scope,
            inner: self.inner.read_whole(array),
        }
    }

    /// Adds `array`, read with a halo of `k` indices ([`JobBuilder::read_halo`]).
    pub fn read_halo<T, D, A>(
        self,
        array: &'scope SharedNdArray<T, D, A>,
        k: usize,
    ) -> ScopedJobBuilder<'scope, 'env, <L as Append<ReadHalo<T, D>>>::Output>
    where
        L: Append<ReadHalo<T, D>>,
        T: Element,
        D: Dimension,
        A: AccessMode,
    {
        let scope = self.scope;
        ScopedJobBuilder {
            scope,
            inner: self.inner.read_halo(array, k),
        }
    }

    /// Adds `array`, written chunk by chunk ([`JobBuilder::write`]); it stays borrowed
    /// until the scope ends.
    pub fn write<T, D>(
        self,
        array: &'scope mut SharedNdArray<T, D>,
    ) -> ScopedJobBuilder<'scope, 'env, <L as Append<WriteChunk<T, D>>>::Output>
    where
        L: Append<WriteChunk<T, D>>,
        T: Element,
        D: Dimension,
    {
        let scope = self.scope;
        ScopedJobBuilder {
            scope,
            inner: self.inner.write(array),
        }
    }

    /// This job's deadline ([`JobBuilder::deadline`]).
    pub fn deadline(self, at: Instant) -> Self {
        ScopedJobBuilder {
            scope: self.scope,
            inner: self.inner.deadline(at),
        }
    }

    /// This job's timeout ([`JobBuilder::timeout`]).
    pub fn timeout(self, after: Duration) -> Self {
        ScopedJobBuilder {
            scope: self.scope,
            inner: self.inner.timeout(after),
        }
    }

    /// This job's cancel token ([`JobBuilder::cancel_token`]).
    pub fn cancel_token(self, token: &CancelToken) -> Self {
        ScopedJobBuilder {
            scope: self.scope,
            inner: self.inner.cancel_token(token),
        }
    }

    /// Submits `f(chunk, views, &params)` on every chunk ([`JobBuilder::for_each`]) and
    /// returns at once; the handle's `join` gives the outcome.
    ///
    /// # Errors
    /// As [`PoolScope::map`]: what is checked before dispatch (the arrays, the plan, a
    /// pool without workers); the job's own failures come from [`JobHandle::join`].
    pub fn for_each<P, R>(self, params: P, f: ZipFn<L, P, R>) -> Result<JobHandle<'scope, 'env, ()>>
    where
        P: Pod,
        R: ChildResult,
    {
        let scope = self.scope;
        let (plan, arrays, elements, options) = self.inner.into_parts()?;
        let id = scope.submit(
            plan,
            JobFns::zip::<L, P, R>(f),
            bytemuck::bytes_of(&params),
            &arrays,
            0,
            elements,
            options.as_ref().unwrap_or(&JobOptions::NONE),
        )?;
        Ok(scope.handle(id, |_| ()))
    }

    /// Submits `f(chunk, views, &params)` on every chunk ([`JobBuilder::map_reduce`]); the
    /// handle's `join` returns the values in chunk order.
    ///
    /// # Errors
    /// As [`for_each`](Self::for_each), plus [`ErrorKind::InvalidArgument`] when the
    /// results exceed [`MAX_RESULTS`](crate::MAX_RESULTS) bytes.
    pub fn map_reduce<P, R>(
        self,
        params: P,
        f: ZipFn<L, P, R>,
    ) -> Result<JobHandle<'scope, 'env, Vec<R>>>
    where
        P: Pod,
        R: Pod,
    {
        let scope = self.scope;
        let (plan, arrays, elements, options) = self.inner.into_parts()?;
        check_results::<R>(plan)?;
        let id = scope.submit(
            plan,
            JobFns::zip_reduce::<L, P, R>(f),
            bytemuck::bytes_of(&params),
            &arrays,
            size_of::<R>(),
            elements,
            options.as_ref().unwrap_or(&JobOptions::NONE),
        )?;
        Ok(scope.handle(id, decode_results::<R>))
    }
}

/// A map-reduce job's results area, as its values in chunk order.
fn decode_results<R: Pod>(bytes: Vec<u8>) -> Vec<R> {
    bytes
        .chunks_exact(size_of::<R>().max(1))
        .map(bytemuck::pod_read_unaligned::<R>)
        .collect()
}
