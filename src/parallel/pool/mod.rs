//! `WorkerPool`: worker processes forked once, fed chunked jobs through shared memory.
//!
//! # How the pieces fit
//! [`WorkerPool`] (this file) is the caller's side: it maps the [`control`] block, forks
//! the fork [`server`] once, and for each job writes the descriptor (the function pair made
//! by [`job`], the `Pod` parameters, the arrays by name, the chunk bounds), bumps the claim
//! and sequence words, runs chunks itself and joins. The [`server`] forks, reaps and
//! reports the workers; each worker runs the [`worker`] loop (wait on the sequence word,
//! claim chunks by CAS, run them); [`job`] turns a descriptor back into a typed call with
//! views of the arrays (the pool's only `unsafe` code); [`progress`] draws the optional
//! bar; [`options`] holds the deadlines and cancel tokens of jobs, [`scope`] the
//! submit-and-wait scope. All OS calls go through `sys/`, all shared-memory accesses through
//! the control block's accessor.
//!
//! # Stopping a job
//! A job with a deadline or a cancel token runs no chunk in the caller. When it is stopped,
//! the caller closes the claim word (next chunk = chunk count, so nobody starts a chunk of
//! it any more), kills every worker whose slot names a chunk of the job (through its pidfd),
//! and waits until the fork server reported those dead and every other worker left the job:
//! the join invariant below holds for stopped jobs too.
//!
//! # Design
//! The pool maps one control block of shared anonymous memory, then forks its *fork
//! server* ([`server`]), which forks the workers; both inherit the block. A job is published by writing its descriptor into the block (the
//! address of a monomorphised trampoline, the address of the user's `fn`, the `Pod`
//! parameters, the arrays by name + segment id + layout, the chunk boundaries), then
//! storing the *claim word* and bumping the *sequence word*. Nothing is serialised and no
//! pipe is involved: a worker that is spinning sees the new sequence number within
//! nanoseconds; one that is asleep on the futex of the sequence word is woken (the caller
//! only calls `FUTEX_WAKE` when the sleeper counter says someone sleeps).
//!
//! Chunks are claimed dynamically by a compare-and-swap on the claim word, which packs the
//! job's sequence number, the next chunk and the number of chunks: a worker that wakes late
//! can never take a chunk of the next job, and the chunk it wins is always a chunk of the
//! job whose descriptor is in the block. The caller is an executor too: after dispatching it
//! claims chunks like a worker, then waits for the *done* counter to reach the number of
//! chunks (spinning briefly, then sleeping on its futex with a timeout, and reading the
//! exits the fork server reported in the workers' slots).
//!
//! # Processes
//! - **Bound to its creator.** The pool records [`process_token`](proc::process_token)
//!   when it is made. In any other process (a forked child holding an inherited copy) every
//!   job and [`WorkerPool::check_workers`] return [`ErrorKind::WrongProcess`] before
//!   touching the control block, and `Drop` leaves the workers alone.
//! - **Workers come from a single-threaded place.** The fork server is forked once, when
//!   the pool is made, and runs only ndshm code from then on: it forks the initial workers
//!   and every replacement (on the caller's request), so no worker is ever forked from a
//!   process where another thread might hold a lock.
//! - **Death is what the kernel says.** The server is the workers' parent: it learns each
//!   exit from a pidfd, reads the status with `waitid(WNOWAIT)`, stores it in the worker's
//!   slot and only then reaps it. The caller never `waitpid`s a worker, so no `ECHILD`
//!   (another reaper, `SIGCHLD` ignored, a forked child) is ever taken for a death; if the
//!   server itself is gone, a worker counts as dead only when its pidfd says so.
//! - **Join invariant.** A job method never returns while an executor may be inside one of
//!   its chunks: each worker's slot names the chunk it is inside (cleared before the chunk
//!   is counted done) and whether it is in the job at all; `join` returns when every chunk
//!   is done, or, when workers died, when no executor that is not provably dead is in the
//!   job (checked explicitly; the first case is a `debug_assert`).
//! - **Orphans.** Only the caller holds the write end of the server's request pipe (a
//!   private descriptor: ndshm's fork paths close it in children). When the caller dies,
//!   however it dies, the server sees end of file, kills its workers (`SIGKILL`) and exits;
//!   workers also die with the server (`PR_SET_PDEATHSIG`, from its only thread). Measured
//!   on a 2-core machine: workers gone about 0.5 ms after the caller's `SIGKILL` mid-job
//!   (`cargo test --test pool_soundness workers_die_promptly -- --nocapture`).
//!
//! Functions, not closures: the workers were forked before the job existed, so they cannot
//! run a closure that captures the parent's state (its captures would live in the parent's
//! heap, which the workers do not see). A job is a `fn` pointer (a fn item, or a closure that
//! captures nothing), whose address is the same in every process forked from the parent,
//! plus parameters that are plain bytes ([`bytemuck::Pod`]) copied into the control block.
//!
//! # Memory ordering
//! Dispatch and join are happens-before edges: everything the caller wrote before calling
//! [`WorkerPool::map`] (or another job method) — into the arrays or elsewhere in shared
//! memory — is visible to every executor running a chunk of that job (the claim word is
//! stored with `Release` after the descriptor and the caller's writes, and claimed with
//! `Acquire`); everything an executor wrote while running a chunk is visible to the caller
//! when the call returns (each executor bumps the done counter with a `Release` RMW after its
//! chunk, and the caller reads it with `Acquire`).
//!
//! # Arrays
//! Workers attach the job's arrays by name (without the process-wide registry, whose mutex
//! they inherited from the parent) and cache the mapping keyed by the segment's unique id
//! from its trailer, so page tables stay warm across jobs and a reused name never hits a
//! stale mapping. A cached mapping whose name no longer names its segment (the array was
//! dropped) is released when a job brings an array the worker does not hold (before it is
//! mapped), at a job's first chunk when the last check is 50 ms old, and when an idle
//! worker naps; the cache holds at most [`CACHE_ENTRIES`] mappings, and the fork server
//! drops the `/dev/shm` mappings it inherited from the caller. Because workers attach by
//! name, a job on an array whose name is gone (after `unlink`) is refused before dispatch
//! with [`ErrorKind::NotFound`] (unless the previous job, less than 250 ms before, used
//! that very segment: its workers still hold it).

use std::fmt;
use std::mem::size_of;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytemuck::{Pod, Zeroable};
use ndarray::{ArrayView, ArrayViewMut, Dimension};

use crate::array::{AccessMode, SharedNdArray};
use crate::element::Element;
use crate::error::{Error, ErrorKind, Result};
use crate::parallel::chunk::{Chunk, ChunkPlan};
use crate::parallel::fork_chunks::worker_failed;
use crate::parallel::process::{fork_tracked, ChildResult};
use crate::segment::owned;
use crate::sys::fork::{self as sys_fork, Exit};
use crate::sys::pidfd::Pidfd;
use crate::sys::pipe::{self, PrivateFd};
use crate::sys::{futex, proc, shm};

mod control;
mod job;
mod options;
mod progress;
mod scope;
mod server;
mod worker;
mod zip;

pub use options::{CancelToken, JobOptions, SignalCancel};
pub use scope::{JobHandle, PoolScope, ScopedJobBuilder};

use control::{pack, unpack, ArrayDesc, Block, EXITED, MAX_ARRAYS, NO_FAILURE, RUNNING, SEQ_MASK};
use job::{run_chunk, JobFns};
use options::Limits;
use progress::Progress;
use server::ServerState;

pub use job::{Append, JobArray, JobArrays, ReadChunk, ReadHalo, ReadWhole, WriteChunk};
pub use zip::{Halo, JobBuilder, MAX_JOB_ARRAYS};

/// Most workers one pool may have.
pub const MAX_WORKERS: usize = 256;
/// Most dimensions of an array handed to a pool job.
pub const MAX_DIMS: usize = 16;
/// Most bytes of a job's parameters.
pub const MAX_PARAMS: usize = 1024;
/// Most bytes of a map-reduce job's results (chunks × `size_of::<R>()`).
pub const MAX_RESULTS: usize = 1 << 22;
/// Most array mappings a worker keeps cached.
pub const CACHE_ENTRIES: usize = 16;

/// How long an executor spins before it sleeps on a futex.
const SPIN: Duration = Duration::from_micros(20);
/// How long after a job its arrays are taken as still held by the workers (half a nap).
const VERIFIED_FOR: Duration = Duration::from_millis(250);
/// How often the waiting caller checks that its workers live.
const PARENT_NAP: Duration = Duration::from_millis(10);
/// How often a caller stopping a job looks again at workers that are leaving it.
const STOP_NAP: Duration = Duration::from_millis(1);

/// Why a job was stopped before its chunks were done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Timeout,
    Cancelled,
}

/// A dispatched job, until [`WorkerPool::finish`] joins it.
#[derive(Debug)]
struct Pending {
    seq: u32,
    n: usize,
    /// Every chunk runs in the caller (no worker was woken).
    inline: bool,
    /// The caller claims chunks before it joins.
    caller_runs: bool,
    limits: Limits,
    /// Segment ids of the job's arrays (the names the workers now hold).
    ids: [u64; MAX_ARRAYS],
    /// The arrays' data in the caller, for the chunks it runs.
    local: [*mut u8; MAX_ARRAYS],
}

/// `Timeout` or `Cancelled`, naming the chunks of `n` that did not finish and `how`.
fn stopped_error(why: Stop, unfinished: &[usize], n: usize, how: &str) -> Error {
    let (kind, what) = match why {
        Stop::Timeout => (ErrorKind::Timeout, "the job's deadline passed"),
        Stop::Cancelled => (ErrorKind::Cancelled, "the job was cancelled"),
    };
    Error::new(
        kind,
        format!(
            "{what}: {} of {n} chunks did not finish ({}); {how}",
            unfinished.len(),
            name_chunks(unfinished)
        ),
    )
}

/// "chunk 3", "chunks 0..=7, 9" (sorted indices as ranges; at most 16 ranges, then "…").
fn name_chunks(chunks: &[usize]) -> String {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for &k in chunks {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == k => *end = k,
            _ => ranges.push((k, k)),
        }
    }
    let mut parts: Vec<String> = ranges
        .iter()
        .take(16)
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}..={b}")
            }
        })
        .collect();
    if ranges.len() > 16 {
        parts.push("…".into());
    }
    let noun = if chunks.len() == 1 { "chunk" } else { "chunks" };
    format!("{noun} {}", parts.join(", "))
}

/// A worker as the caller knows it.
#[derive(Debug)]
struct Worker {
    pid: i32,
    /// The slot's spawn generation this worker was reported with.
    gen: u32,
    /// Says "ended" even when the fork server, which reports exits, is gone.
    pidfd: Option<Pidfd>,
}

/// The fork server as the caller knows it.
#[derive(Debug)]
struct Server {
    pid: i32,
    pidfd: Option<Pidfd>,
    /// Write end of the request pipe (only the caller holds it: its end of file tells the
    /// server that the caller is gone).
    requests: PrivateFd,
}

/// How long the caller waits for the fork server to report a spawn.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `Drop` waits for the fork server to stop its workers and exit.
const STOP_TIMEOUT_MS: i32 = 5000;

/// How a dead worker ended, for the error.
fn describe_exit(exit: Exit) -> String {
    match exit {
        Exit::Code(c) => format!("exited with code {c}"),
        Exit::Signal(s) => format!("was killed by {}", sys_fork::signal_name(s)),
    }
}

/// A pool of worker processes, forked once, that run chunked jobs over [`SharedNdArray`]s.
///
/// `WorkerPool::new(executors)` forks `executors − 1` workers; the calling thread is the
/// last executor (it runs chunks too while it waits). Jobs:
/// - [`map`](Self::map): in place, `f(chunk, view_of_chunk, &params)`;
/// - [`map_into`](Self::map_into): `out = f(in)`, both arrays split alike;
/// - [`map_reduce`](Self::map_reduce): each chunk returns a `Pod` value; the caller gets
///   them in chunk order.
///
/// Chunks are claimed dynamically, so plans with more chunks than executors balance an
/// uneven workload. Arrays may be created after the pool: workers attach them by name and
/// cache the mapping by the segment's unique id (a reused name never hits a stale
/// mapping; a worker going to sleep drops the mappings of arrays that were dropped).
///
/// # Dispatch
/// The job (function address, parameters, arrays, chunk bounds) is written into a control
/// block of shared anonymous memory that the workers inherited; no pipe, no serialisation.
/// Executors claim chunks with a CAS on one word that packs the job number, the next chunk
/// and the chunk count, so a late worker never takes a chunk of the next job. Idle workers
/// spin for 20 µs, then sleep on a futex; the caller wakes them only when a sleeper
/// counter says someone sleeps. An idle pool uses no CPU after the spin window (workers
/// wake twice a second to release the mappings of dropped arrays). Workers and their
/// replacements are forked by a single-threaded fork server that the pool starts once; it
/// reaps them and reports their exits, and it kills them at once when the caller dies.
///
/// # Memory ordering
/// Dispatch and join are happens-before edges: everything the caller wrote before a job
/// method (into the arrays or elsewhere in shared memory) is visible to every executor
/// running a chunk of that job, and everything an executor wrote while running a chunk is
/// visible to the caller when the method returns, as with `std::thread::scope`.
///
/// A job is a function, not a closure with captures: the workers were forked before the
/// job existed and cannot see the caller's heap. Pass data through the `Pod` parameters or
/// through shared arrays. Capturing closures are rejected at compile time:
/// ```compile_fail
/// use ndshm::{ChunkPlan, SharedNdArray, WorkerPool};
/// let mut pool = WorkerPool::new(2).unwrap();
/// let mut a = SharedNdArray::<f64, ndarray::Ix1>::zeros("doc-pool-cf", 8).unwrap();
/// let plan = ChunkPlan::balanced(8, 2).unwrap();
/// let factor = vec![2.0]; // lives in the caller's heap
/// pool.map(&mut a, &plan, (), |_, mut v, _: &()| v *= factor[0]).unwrap();
/// ```
/// Failures: a chunk that panics or returns an error, and a worker that dies (a signal, an
/// exit), make the job return [`ErrorKind::WorkerFailed`] naming the chunk and the cause,
/// after every other executor has left the job; a dead worker is reaped (by the fork
/// server) and replaced, so the next job runs. `Drop` stops and reaps every worker.
///
/// # Processes
/// A pool works only in the process that created it: in a forked child that inherited a
/// copy, every job and [`check_workers`](Self::check_workers) return
/// [`ErrorKind::WrongProcess`], and dropping the copy leaves the creator's workers alone.
/// When the creating process dies, its workers are killed within milliseconds.
///
/// Limits: a job's function must be part of the program when the pool forked (not from a
/// library loaded later with `dlopen`); a worker stuck in an endless loop blocks a job
/// without options, as a stuck thread blocks rayon — give jobs a deadline or a cancel token
/// ([`set_job_options`](Self::set_job_options)) and the stuck worker is killed and
/// replaced; arrays must keep their name while jobs use them (workers attach by name).
///
/// Submit and wait: [`scope`](Self::scope) starts jobs that the workers run while the
/// caller goes on.
///
/// # Examples
/// ```
/// use ndshm::{ChunkPlan, SharedNdArray, WorkerPool};
/// # let name = format!("doc-pool-{}", std::process::id());
/// let mut pool = WorkerPool::new(2)?;
/// let mut a = SharedNdArray::<f64, ndarray::Ix1>::from_array(&name, &ndarray::Array1::range(0.0, 1000.0, 1.0))?;
/// let plan = ChunkPlan::balanced(a.len(), 8)?;
/// // In place: square, then add an offset given as a parameter.
/// pool.map(&mut a, &plan, 1.0f64, |_chunk, mut x, &offset| x.mapv_inplace(|v| v * v + offset))?;
/// // Map-reduce: one partial sum per chunk, in chunk order.
/// let sums = pool.map_reduce(&a, &plan, (), |_chunk, x, _: &()| x.sum())?;
/// let expected: f64 = (0..1000).map(|i| (i * i) as f64 + 1.0).sum();
/// assert_eq!(sums.iter().sum::<f64>(), expected);
/// # Ok::<(), ndshm::Error>(())
/// ```
pub struct WorkerPool {
    block: Box<Block>,
    workers: Vec<Option<Worker>>,
    server: Option<Server>,
    /// The creating process (see [`process_token`](proc::process_token)): jobs and `Drop`
    /// act only there.
    token: u64,
    creator_pid: i32,
    seq: u32,
    inline_below: usize,
    progress: bool,
    /// Segment ids of the arrays of the last dispatched job that succeeded, and when it
    /// ended: every worker that needed them holds their mapping (an idle worker drops
    /// mappings whose name is gone only after [`WORKER_NAP`](worker::WORKER_NAP)), so a job on them within
    /// [`VERIFIED_FOR`] needs no name check.
    verified: [u64; MAX_ARRAYS],
    verified_at: Instant,
    /// Deadline, timeout and cancel token of every later job.
    options: JobOptions,
}

impl fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerPool")
            .field("executors", &self.executors())
            .field("worker_pids", &self.worker_pids())
            .finish()
    }
}

impl WorkerPool {
    /// Starts `executors − 1` worker processes (the caller is the last executor; `1` makes
    /// a pool that runs every chunk in the caller, with no process at all): forks the
    /// pool's fork server, which forks the workers, and waits until they are up.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when `executors` is 0 or above [`MAX_WORKERS`] + 1;
    /// an OS error when mapping the control block, making the request pipe or forking
    /// fails (what was started is stopped and reaped); [`ErrorKind::Timeout`] when the
    /// fork server did not report a worker within 30 s.
    ///
    /// # Examples
    /// ```
    /// use ndshm::{ErrorKind, WorkerPool};
    /// let pool = WorkerPool::new(3)?; // two worker processes + the caller
    /// assert_eq!(pool.executors(), 3);
    /// assert_eq!(pool.worker_pids().len(), 2);
    /// assert_eq!(WorkerPool::new(0).unwrap_err().kind(), ErrorKind::InvalidArgument);
    /// // Dropping the pool stops and reaps its workers.
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn new(executors: usize) -> Result<WorkerPool> {
        if executors == 0 || executors > MAX_WORKERS + 1 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "a pool needs between 1 and {} executors (the caller counts as one), \
                     not {executors}",
                    MAX_WORKERS + 1
                ),
            ));
        }
        let mut pool = WorkerPool {
            block: Box::new(Block::new()?),
            workers: (0..executors - 1).map(|_| None).collect(),
            server: None,
            token: proc::process_token(),
            creator_pid: proc::pid(),
            seq: 0,
            inline_below: 0,
            progress: false,
            verified: [0; MAX_ARRAYS],
            verified_at: Instant::now(),
            options: JobOptions::NONE,
        };
        if executors > 1 {
            // On failure, `Drop` stops whatever was started.
            pool.start_server(executors - 1)?;
        }
        Ok(pool)
    }

    /// A pool with one executor per CPU the process may use (so `cores − 1` workers).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    ///
    /// # Examples
    /// ```
    /// let pool = ndshm::WorkerPool::with_available_parallelism()?;
    /// let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    /// assert_eq!(pool.executors(), cores.min(ndshm::MAX_WORKERS + 1));
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn with_available_parallelism() -> Result<WorkerPool> {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        WorkerPool::new(n.min(MAX_WORKERS + 1))
    }

    /// Forks the fork server, which forks the `n` workers, and waits until it has.
    fn start_server(&mut self, n: usize) -> Result<()> {
        let (read, write) =
            pipe::pipe().map_err(|e| Error::os("cannot make the pool's request pipe", e))?;
        let write = PrivateFd::new(write);
        let mut st = ServerState::new(n, read);
        let block: &Block = &self.block;
        let me = proc::pid();
        let pid = fork_tracked(|| server::server_main(block, &write, me, &mut st))?;
        // The caller keeps no read end.
        drop(st);
        // Our own unreaped child: the pidfd names it (see `Drop`).
        let pidfd = Pidfd::open(pid).ok();
        self.server = Some(Server {
            pid,
            pidfd,
            requests: write,
        });
        for slot in 0..n {
            self.await_spawn(slot, 0)?;
        }
        Ok(())
    }

    /// Waits until the server reports a spawn into `slot` (its generation moves past
    /// `old_gen`) and records the worker.
    fn await_spawn(&mut self, slot: usize, old_gen: u32) -> Result<()> {
        let block: &Block = &self.block;
        let s = block.ctl().slot(slot);
        let deadline = Instant::now() + SPAWN_TIMEOUT;
        loop {
            let events = block.ctl().events().load(Ordering::SeqCst);
            let gen = s.gen().load(Ordering::Acquire);
            if gen != old_gen {
                let pid = s.pid().load(Ordering::Relaxed);
                match s.state().load(Ordering::Acquire) {
                    RUNNING | EXITED => {
                        // The server marks a worker EXITED before it reaps it: if the slot
                        // still says RUNNING for this generation after the pidfd is open,
                        // the pidfd names this worker (or its zombie), not a reused pid.
                        let pidfd = Pidfd::open(pid).ok().filter(|_| {
                            s.state().load(Ordering::SeqCst) == RUNNING
                                && s.gen().load(Ordering::SeqCst) == gen
                        });
                        self.workers[slot] = Some(Worker { pid, gen, pidfd });
                        return Ok(());
                    }
                    _ => {
                        self.workers[slot] = None;
                        let errno = s.exit_value().load(Ordering::Relaxed);
                        return Err(Error::os(
                            "the pool's fork server could not fork a worker",
                            std::io::Error::from_raw_os_error(errno),
                        ));
                    }
                }
            }
            if self.server_gone() {
                return Err(self.server_gone_error());
            }
            if Instant::now() > deadline {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "the pool's fork server did not start a worker within {} s",
                        SPAWN_TIMEOUT.as_secs()
                    ),
                ));
            }
            futex::wait(block.ctl().events(), events, Some(PARENT_NAP));
        }
    }

    /// Asks the server for a new worker in `slot` (whose worker is gone) and waits for it.
    fn respawn(&mut self, slot: usize) -> Result<()> {
        self.workers[slot] = None;
        // A new worker holds no mapping.
        self.verified = [0; MAX_ARRAYS];
        let gen = self.block.ctl().slot(slot).gen().load(Ordering::Acquire);
        let Some(server) = &self.server else {
            return Err(self.server_gone_error());
        };
        if self.server_gone() {
            return Err(self.server_gone_error());
        }
        pipe::write_all(server.requests.as_raw_fd(), &(slot as u16).to_ne_bytes())
            .map_err(|e| Error::os("cannot ask the pool's fork server for a worker", e))?;
        self.await_spawn(slot, gen)
    }

    /// Whether the fork server has ended (then no worker will be replaced, and exits are
    /// no longer reported).
    fn server_gone(&self) -> bool {
        self.server
            .as_ref()
            .is_some_and(|s| s.pidfd.as_ref().is_some_and(Pidfd::has_exited))
    }

    fn server_gone_error(&self) -> Error {
        Error::new(
            ErrorKind::WorkerFailed,
            format!(
                "the pool's fork server (process {}) has ended, so no worker can be                  replaced: drop this pool and make a new one",
                self.server.as_ref().map_or(0, |s| s.pid)
            ),
        )
    }

    /// How the worker of `slot` ended, if it provably has: the server reported it, or
    /// (once the server is gone) its pidfd says so. `None` while it may be running.
    fn worker_exit(&self, slot: usize, server_gone: bool) -> Option<String> {
        let w = self.workers[slot].as_ref()?;
        let s = self.block.ctl().slot(slot);
        if s.gen().load(Ordering::Acquire) == w.gen && s.state().load(Ordering::Acquire) == EXITED {
            let value = s.exit_value().load(Ordering::Relaxed);
            let exit = match s.exit_kind().load(Ordering::Relaxed) {
                2 => Exit::Signal(value),
                _ => Exit::Code(value),
            };
            return Some(describe_exit(exit));
        }
        if server_gone && w.pidfd.as_ref().is_some_and(Pidfd::has_exited) {
            return Some("ended; its exit status was lost with the pool's fork server".into());
        }
        None
    }

    /// `Err(WrongProcess)` unless the caller is the process that made the pool.
    fn check_process(&self) -> Result<()> {
        if proc::process_token() == self.token {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::WrongProcess,
            format!(
                "this WorkerPool belongs to process {} that created it; a copy inherited                  through fork cannot run jobs (its workers serve their creator): make a new                  pool in this process",
                self.creator_pid
            ),
        ))
    }

    /// Number of executors: the workers plus the caller.
    ///
    /// # Examples
    /// ```
    /// let pool = ndshm::WorkerPool::new(3)?;
    /// assert_eq!(pool.executors(), 3);
    /// assert_eq!(pool.worker_pids().len(), 2); // the caller is the third executor
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn executors(&self) -> usize {
        self.workers.len() + 1
    }

    /// The pids of the worker processes (for monitoring; killing one makes the job that it
    /// runs fail, and the pool replaces it).
    pub fn worker_pids(&self) -> Vec<i32> {
        self.workers.iter().flatten().map(|w| w.pid).collect()
    }

    /// Jobs over arrays of at most `elements` elements run all their chunks in the caller,
    /// without waking a worker (the dispatch round trip costs more than such a job). Off
    /// (0) by default.
    ///
    /// # Examples
    /// ```
    /// use ndshm::{ChunkPlan, CreateOptions, SharedNdArray, WorkerPool};
    /// let mut pool = WorkerPool::new(2)?;
    /// pool.set_inline_below(1000); // small jobs: no round trip to the workers
    /// let mut a = SharedNdArray::<u32, ndarray::Ix1>::zeros(CreateOptions::unique(), 100)?;
    /// let plan = ChunkPlan::balanced(100, 4)?;
    /// pool.map(&mut a, &plan, (), |_, mut x, _: &()| x.fill(1))?;
    /// assert_eq!(a.view().sum(), 100);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn set_inline_below(&mut self, elements: usize) {
        self.inline_below = elements;
    }

    /// Shows a progress bar (chunks done / total) on stderr while a job runs, when stderr
    /// is a terminal. Off by default; needs the `progress` feature (on by default), without
    /// which it does nothing.
    ///
    /// # Examples
    /// ```
    /// use ndshm::{ChunkPlan, CreateOptions, SharedNdArray, WorkerPool};
    /// let mut pool = WorkerPool::new(2)?;
    /// pool.set_progress(true); // drawn only when stderr is a terminal
    /// let mut a = SharedNdArray::<f64, ndarray::Ix1>::zeros(CreateOptions::unique(), 1000)?;
    /// pool.map(&mut a, &ChunkPlan::balanced(1000, 10)?, (), |_, mut x, _: &()| x.fill(0.5))?;
    /// assert_eq!(a.view().sum(), 500.0);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn set_progress(&mut self, on: bool) {
        self.progress = on;
    }

    /// Gives every later job of this pool a deadline, a per-job timeout and/or a cancel
    /// token ([`JobOptions`]), until changed ([`JobOptions::NONE`] removes them). A job
    /// with options runs no chunk in the caller; when its deadline passes or its token is
    /// cancelled, the workers inside its chunks are killed, reaped and replaced, and the
    /// job returns [`ErrorKind::Timeout`] / [`ErrorKind::Cancelled`] naming the chunks that
    /// did not finish (see [`JobOptions`]). A job without options costs what it did.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for a timeout of zero (the options are then left as
    /// they were).
    ///
    /// # Examples
    /// ```
    /// use std::time::{Duration, Instant};
    /// use ndshm::{ChunkPlan, CreateOptions, ErrorKind, JobOptions, SharedNdArray, WorkerPool};
    /// let mut pool = WorkerPool::new(2)?;
    /// let mut a = SharedNdArray::<u8, ndarray::Ix1>::zeros(CreateOptions::unique(), 8)?;
    /// let plan = ChunkPlan::balanced(8, 2)?;
    /// // A deadline already past: the job returns Timeout without running a chunk.
    /// pool.set_job_options(JobOptions::new().deadline(Instant::now()))?;
    /// let err = pool.map(&mut a, &plan, (), |_, mut x, _: &()| x.fill(1)).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Timeout);
    /// assert_eq!(a.view().sum(), 0);
    /// pool.set_job_options(JobOptions::new().timeout(Duration::from_secs(30)))?;
    /// pool.map(&mut a, &plan, (), |_, mut x, _: &()| x.fill(1))?;
    /// assert_eq!(a.view().sum(), 8);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn set_job_options(&mut self, options: JobOptions) -> Result<()> {
        options.check()?;
        self.options = options;
        Ok(())
    }

    /// The options every later job gets (see [`set_job_options`](Self::set_job_options)).
    pub fn job_options(&self) -> &JobOptions {
        &self.options
    }

    /// Reaps workers that died between jobs and forks replacements; returns how many were
    /// replaced. Jobs do this themselves when a worker dies during them.
    ///
    /// # Errors
    /// [`ErrorKind::WrongProcess`] in a process other than the pool's creator; an OS error
    /// when forking a replacement fails; [`ErrorKind::WorkerFailed`] when the pool's fork
    /// server has ended (make a new pool).
    ///
    /// # Examples
    /// ```
    /// let mut pool = ndshm::WorkerPool::new(2)?;
    /// assert_eq!(pool.check_workers()?, 0); // all alive
    /// // A worker killed between jobs is replaced (SIGKILL of our own worker):
    /// let pid = pool.worker_pids()[0];
    /// std::process::Command::new("kill").args(["-9", &pid.to_string()]).status()?;
    /// let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    /// let mut replaced = 0;
    /// while replaced == 0 && std::time::Instant::now() < deadline {
    ///     replaced = pool.check_workers()?; // 0 until the pool's fork server has reaped it
    /// }
    /// assert_eq!(replaced, 1);
    /// assert_ne!(pool.worker_pids()[0], pid);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn check_workers(&mut self) -> Result<usize> {
        self.check_process()?;
        let server_gone = self.server_gone();
        let mut replaced = 0;
        for slot in 0..self.workers.len() {
            let ended =
                self.workers[slot].is_none() || self.worker_exit(slot, server_gone).is_some();
            if ended {
                self.respawn(slot)?;
                replaced += 1;
            }
        }
        Ok(replaced)
    }

    /// Applies `f` in place to each chunk of `array` along `plan`: `f(chunk, view, &params)`
    /// returns `()` or `Result<(), E>` with a displayable `E`.
    ///
    /// # Errors
    /// [`ErrorKind::WrongProcess`] in a process other than the pool's creator (a forked
    /// child holding an inherited copy); [`ErrorKind::InvalidArgument`] when `plan` does
    /// not fit the array or `P` is larger than [`MAX_PARAMS`]; [`ErrorKind::Unsupported`]
    /// for an array without an ndshm trailer (made by another tool) or with more than
    /// [`MAX_DIMS`] dimensions; [`ErrorKind::NotFound`] for an array whose name is gone
    /// (unlinked), which workers could not attach; [`ErrorKind::WorkerFailed`] naming the
    /// chunk and the cause when a chunk panicked or returned an error, or its worker died.
    ///
    /// # Examples
    /// ```
    /// use ndshm::{ChunkPlan, CreateOptions, ErrorKind, SharedNdArray, WorkerPool};
    /// let mut pool = WorkerPool::new(2)?;
    /// let mut a = SharedNdArray::<f32, ndarray::Ix2>::zeros(CreateOptions::unique(), (4, 6))?;
    /// // Rows in 2 chunks; the parameters are plain bytes copied to the workers.
    /// let plan = ChunkPlan::balanced_along(a.shape(), 0, 2)?;
    /// pool.map(&mut a, &plan, 2.5f32, |chunk, mut rows, &v| rows.fill(v + chunk.index as f32))?;
    /// assert_eq!(a.view()[[3, 5]], 3.5);
    /// // A chunk's error comes back naming the chunk.
    /// let err = pool
    ///     .map(&mut a, &plan, (), |c, _, _: &()| if c.index == 1 { Err("bad row") } else { Ok(()) })
    ///     .unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::WorkerFailed);
    /// assert!(err.to_string().contains("chunk 1"), "{err}");
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn map<T, D, P, R>(
        &mut self,
        array: &mut SharedNdArray<T, D>,
        plan: &ChunkPlan,
        params: P,
        f: fn(Chunk, ArrayViewMut<'_, T, D>, &P) -> R,
    ) -> Result<()>
    where
        T: Element,
        D: Dimension,
        P: Pod,
        R: ChildResult,
    {
        self.check_process()?;
        let arg = map_arg(array, plan)?;
        self.run(
            plan,
            JobFns::map(f),
            bytemuck::bytes_of(&params),
            &[arg],
            0,
            array.len(),
            &JobOptions::NONE,
        )
    }

    /// `output = f(input)` chunk by chunk: `f(chunk, whole_input, output_chunk, &params)`
    /// gets a read-only view of the whole input (use [`Chunk::of`] for its chunk, or read
    /// neighbours) and a mutable view of its chunk of the output. `plan` must fit both.
    ///
    /// # Errors
    /// As [`map`](Self::map), plus [`ErrorKind::InvalidArgument`] when input and output
    /// are the same segment.
    ///
    /// # Examples
    /// ```
    /// use ndshm::{ChunkPlan, SharedNdArray, WorkerPool};
    /// # let (a, b) = (format!("doc-pool-in-{}", std::process::id()), format!("doc-pool-out-{}", std::process::id()));
    /// let mut pool = WorkerPool::new(2)?;
    /// let x = SharedNdArray::<f32, ndarray::Ix1>::from_elem(&a, 100, 4.0)?;
    /// let mut y = SharedNdArray::<f64, ndarray::Ix1>::zeros(&b, 100)?;
    /// let plan = ChunkPlan::balanced(100, 4)?;
    /// pool.map_into(&x, &mut y, &plan, (), |c, x, mut y, _: &()| {
    ///     y.zip_mut_with(&c.of(&x), |o, &i| *o = f64::from(i).sqrt());
    /// })?;
    /// assert!(y.as_slice().unwrap().iter().all(|&v| v == 2.0));
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    pub fn map_into<T, D, A, U, E, P, R>(
        &mut self,
        input: &SharedNdArray<T, D, A>,
        output: &mut SharedNdArray<U, E>,
        plan: &ChunkPlan,
        params: P,
        f: fn(Chunk, ArrayView<'_, T, D>, ArrayViewMut<'_, U, E>, &P) -> R,
    ) -> Result<()>
    where
        T: Element,
        D: Dimension,
        A: AccessMode,
        U: Element,
        E: Dimension,
        P: Pod,
        R: ChildResult,
    {
        self.check_process()?;
        let args = map_into_args(input, output, plan)?;
        self.run(
            plan,
            JobFns::map_into(f),
            bytemuck::bytes_of(&params),
            &args,
            0,
            output.len().max(input.len()),
            &JobOptions::NONE,
        )
    }

    /// Runs `f(chunk, view_of_chunk, &params)` on each chunk and returns the values in chunk
    /// order (the seed's "collect results" pattern): partial sums, minima, histogram rows.
    ///
    /// # Errors
    /// As [`map`](Self::map), plus [`ErrorKind::InvalidArgument`] when the results
    /// (chunks × `size_of::<R>()`) exceed [`MAX_RESULTS`] bytes.
    ///
    /// # Examples
    /// ```
    /// use ndshm::{ChunkPlan, CreateOptions, SharedNdArray, WorkerPool};
    /// let mut pool = WorkerPool::new(2)?;
    /// let a = SharedNdArray::<u64, ndarray::Ix1>::from_array(
    ///     CreateOptions::unique(),
    ///     &ndarray::Array1::from_iter(1..=100u64),
    /// )?;
    /// let plan = ChunkPlan::balanced(100, 4)?;
    /// // One (sum, max) per chunk, in chunk order.
    /// let parts = pool.map_reduce(&a, &plan, (), |_, x, _: &()| {
    ///     [x.sum(), x.iter().copied().max().unwrap_or(0)]
    /// })?;
    /// assert_eq!(parts.len(), 4);
    /// assert_eq!(parts.iter().map(|p| p[0]).sum::<u64>(), 5050);
    /// assert_eq!(parts[3][1], 100);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn map_reduce<T, D, A, P, R>(
        &mut self,
        array: &SharedNdArray<T, D, A>,
        plan: &ChunkPlan,
        params: P,
        f: fn(Chunk, ArrayView<'_, T, D>, &P) -> R,
    ) -> Result<Vec<R>>
    where
        T: Element,
        D: Dimension,
        A: AccessMode,
        P: Pod,
        R: Pod,
    {
        self.check_process()?;
        let arg = reduce_arg::<T, D, A, R>(array, plan)?;
        self.run(
            plan,
            JobFns::reduce(f),
            bytemuck::bytes_of(&params),
            &[arg],
            size_of::<R>(),
            array.len(),
            &JobOptions::NONE,
        )?;
        Ok(self.results(plan.num_chunks()))
    }

    /// The values of the map-reduce job just joined, in chunk order: chunk k's executor
    /// wrote one `R` at `k * size_of::<R>()` before the join (a happens-before edge), and
    /// the area holds `n` of them ([`check_results`] before dispatch).
    pub(super) fn results<R: Pod>(&self, n: usize) -> Vec<R> {
        let results = self.block.ctl().results();
        (0..n)
            .map(|k| results.read_pod::<R>(k * size_of::<R>()))
            .collect()
    }

    /// Dispatches a job, runs chunks in the caller (unless `opts` or the pool's options
    /// give it a deadline or a cancel token), joins, and reports the first failure, or the
    /// deadline / cancellation that stopped it.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        plan: &ChunkPlan,
        fns: JobFns,
        params: &[u8],
        arrays: &[(ArrayDesc, *mut u8)],
        result_size: usize,
        elements: usize,
        opts: &JobOptions,
    ) -> Result<()> {
        let job = self.dispatch(plan, fns, params, arrays, result_size, elements, opts, true)?;
        self.finish(job)
    }

    /// Publishes a job (after the checks) and returns it for [`finish`](Self::finish).
    /// `caller_may_run`: whether the caller will run chunks (false for submitted jobs;
    /// ignored for jobs that may end early, which never run chunks in the caller).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn dispatch(
        &mut self,
        plan: &ChunkPlan,
        fns: JobFns,
        params: &[u8],
        arrays: &[(ArrayDesc, *mut u8)],
        result_size: usize,
        elements: usize,
        opts: &JobOptions,
        caller_may_run: bool,
    ) -> Result<Pending> {
        if params.len() > MAX_PARAMS {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "job parameters of {} bytes exceed {MAX_PARAMS}: pass large data in a \
                     shared array",
                    params.len()
                ),
            ));
        }
        let n = plan.num_chunks();
        // A job without options reads no clock here.
        let limits = if self.options.is_empty() && opts.is_empty() {
            Limits::NONE
        } else {
            opts.check()?;
            Limits::of(&self.options, opts, Instant::now())
        };
        let limited = limits.any();
        if (limited || !caller_may_run) && self.workers.is_empty() && n > 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "a job with a deadline, a timeout or a cancel token, and a submitted job, run \
                 no chunk in the caller, and this pool has no worker process: make the pool \
                 with at least 2 executors",
            ));
        }
        if limited {
            let all: Vec<usize> = (0..n).collect();
            if limits.cancelled() {
                return Err(stopped_error(
                    Stop::Cancelled,
                    &all,
                    n,
                    "it was not started",
                ));
            }
            if limits.deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(stopped_error(
                    Stop::Timeout,
                    &all,
                    n,
                    "the deadline had passed before it started",
                ));
            }
        }
        let mut job = Pending {
            seq: 0,
            n,
            inline: false,
            caller_runs: caller_may_run && !limited,
            limits,
            ids: [0; MAX_ARRAYS],
            local: [std::ptr::null_mut(); MAX_ARRAYS],
        };
        if n == 0 {
            return Ok(job);
        }
        let inline =
            job.caller_runs && (elements <= self.inline_below || self.workers.is_empty() || n == 1);
        job.inline = inline;
        if !inline {
            let fresh = arrays
                .iter()
                .all(|(d, _)| self.verified.contains(&d.segment_id))
                && self.verified_at.elapsed() < VERIFIED_FOR;
            if !fresh {
                for (d, _) in arrays {
                    check_named(d)?;
                }
            }
        }
        // A worker killed between jobs is noticed by a job that has to wait for it (the
        // fork server reaps it at once); replace such workers every 256 jobs too (a few µs
        // per 256 jobs), so that a stream of quick jobs does not run short of executors.
        if self.seq % 256 == 255 {
            self.check_workers()?;
        }
        let block: &Block = &self.block;
        let ctl = block.ctl();
        // No chunk is claimable or running (the previous job was joined), so no executor
        // reads the descriptor while it is written.
        ctl.write_job(
            fns.trampoline,
            fns.user_fn,
            plan,
            arrays.iter().map(|(d, _)| d),
            params,
            result_size,
        );
        ctl.done().store(0, Ordering::Relaxed);
        if ctl.failed_chunk().load(Ordering::Relaxed) != NO_FAILURE {
            ctl.failed_chunk().store(NO_FAILURE, Ordering::Relaxed);
        }
        self.seq = self.seq.wrapping_add(1).max(1);
        let seq = self.seq;
        job.seq = seq;
        ctl.claim_word()
            .store(pack(seq, 0, n as u64), Ordering::Release);
        if !inline {
            if job.limits.any() {
                job.limits.register(ctl.done());
            }
            ctl.seq().store(seq, Ordering::SeqCst);
            if ctl.sleepers().load(Ordering::SeqCst) != 0 {
                // With the caller not running chunks, every chunk needs a worker.
                let wanted = if job.caller_runs { n - 1 } else { n };
                futex::wake(ctl.seq(), wanted.min(self.workers.len()) as i32);
            }
        }
        for ((l, id), (d, p)) in job.local.iter_mut().zip(&mut job.ids).zip(arrays) {
            *l = *p;
            *id = d.segment_id;
        }
        Ok(job)
    }

    /// Runs the caller's share of a dispatched job (if it runs chunks), joins it, and
    /// reports its outcome; replaces the workers that died or were stopped.
    #[inline]
    fn finish(&mut self, job: Pending) -> Result<()> {
        let n = job.n;
        if n == 0 {
            return Ok(());
        }
        let seq = job.seq;
        let progress = Progress::new(self.progress, n);
        if job.caller_runs {
            let ctl = self.block.ctl();
            let local = job.local;
            while let Some(k) = ctl.claim(seq) {
                run_chunk(ctl, seq, k, None, &mut |_, i| Ok(local[i]));
                progress.set(ctl.done().load(Ordering::Relaxed));
            }
        }
        let (dead, stopped) = if job.inline {
            (Vec::new(), None)
        } else {
            self.join(seq, n as u32, &progress, &job.limits, job.caller_runs)
        };
        if job.limits.any() {
            job.limits.unregister(self.block.ctl().done());
        }
        progress.finish();
        let result = match stopped {
            Some((why, unfinished)) => Err(self.stop_outcome(why, &unfinished, n)),
            None => self.outcome(seq, &dead),
        };
        if !job.inline {
            // Inline jobs leave the workers' mappings as they were.
            self.verified = [0; MAX_ARRAYS];
            if result.is_ok() {
                self.verified = job.ids;
                self.verified_at = Instant::now();
            }
        }
        for (slot, _) in &dead {
            self.respawn(*slot)?;
        }
        result
    }

    /// Waits until every chunk of job `seq` is done, or, when workers died, until every
    /// live executor has left the job, or, when its deadline passed or it was cancelled,
    /// until the workers inside its chunks were killed and reaped. Returns the dead
    /// workers with how they ended (the server reaped them), and, for a stopped job, why
    /// and the chunks that did not finish.
    ///
    /// Invariant: it never returns while an executor may be inside a chunk of job `seq`
    /// (see [`may_be_in_job`](Self::may_be_in_job)). A worker counts as gone only when it
    /// provably ended: its fork server (its parent) reported the exit, or its pidfd says
    /// so. Nothing else (an `ECHILD`, a missing `/proc` entry) is taken for death.
    #[allow(clippy::type_complexity)]
    fn join(
        &mut self,
        seq: u32,
        n: u32,
        progress: &Progress,
        limits: &Limits,
        caller_ran: bool,
    ) -> (Vec<(usize, String)>, Option<(Stop, Vec<usize>)>) {
        let block: &Block = &self.block;
        let ctl = block.ctl();
        let done_word = ctl.done();
        let start = Instant::now();
        let mut spins = 0u32;
        while done_word.load(Ordering::Acquire) != n {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins % 64 == 0 && start.elapsed() > SPIN {
                break;
            }
        }
        let mut dead: Vec<(usize, String)> = Vec::new();
        loop {
            let done = done_word.load(Ordering::Acquire);
            if done == n {
                // Each executor clears its `chunk` word before it counts its chunk done,
                // and the count is a chain of release RMWs: seeing `n` done, no one is left
                // inside a chunk of this job.
                debug_assert!(
                    !(0..self.workers.len()).any(|slot| self.in_chunk(slot, seq, &dead)),
                    "pool join: an executor is inside a chunk of a finished job"
                );
                return (dead, None);
            }
            progress.set(done);
            let mut nap = PARENT_NAP;
            if limits.any() {
                let now = Instant::now();
                let why = if limits.cancelled() {
                    Some(Stop::Cancelled)
                } else {
                    limits.deadline.filter(|&d| now >= d).map(|_| Stop::Timeout)
                };
                if let Some(why) = why {
                    let unfinished = self.stop_job(seq, &mut dead);
                    if done_word.load(Ordering::Acquire) == n {
                        // Every chunk finished as the job was being stopped: it succeeded.
                        return (dead, None);
                    }
                    return (dead, Some((why, unfinished)));
                }
                if let Some(d) = limits.deadline {
                    nap = nap.min(d - now);
                }
            }
            ctl.caller_sleeping().store(1, Ordering::SeqCst);
            let done = done_word.load(Ordering::SeqCst);
            if done != n && !limits.cancelled() {
                futex::wait(done_word, done, Some(nap));
            }
            ctl.caller_sleeping().store(0, Ordering::SeqCst);
            self.collect_dead(seq, &mut dead, true);
            if !dead.is_empty() {
                if !caller_ran {
                    // The caller did not claim every chunk: close the claims, so that no
                    // live worker enters the job from now on.
                    self.close_claims(seq);
                }
                // With a dead worker some chunks never finish: stop waiting once no live
                // executor is in the job any more. (Every chunk is claimed now: a live
                // worker that is not active in the job holds none and can win none.)
                // This condition *is* the invariant, checked explicitly.
                if !(0..self.workers.len()).any(|slot| self.may_be_in_job(slot, seq, &dead)) {
                    return (dead, None);
                }
            }
        }
    }

    /// Adds the workers that provably ended to `dead`; with `record`, a chunk a dead worker
    /// was inside is recorded as the job's failure.
    fn collect_dead(&self, seq: u32, dead: &mut Vec<(usize, String)>, record: bool) {
        let ctl = self.block.ctl();
        let server_gone = self.server_gone();
        for slot in 0..self.workers.len() {
            if dead.iter().any(|(d, _)| *d == slot) {
                continue;
            }
            if let Some(why) = self.worker_exit(slot, server_gone) {
                let pid = self.workers[slot].as_ref().map_or(0, |w| w.pid);
                // Its slot keeps what it last wrote: the chunk it was inside, if any.
                let held = ctl.slot(slot).chunk().load(Ordering::Acquire);
                if record && held >> 32 == u64::from(seq) && held as u32 != 0 {
                    ctl.fail(held as u32 as usize - 1, pid, &why);
                }
                dead.push((slot, format!("{pid} {why}")));
            }
        }
    }

    /// Ends the claiming of job `seq`'s chunks; returns the first chunk that nobody
    /// claimed (the job's chunk count when every chunk was claimed).
    fn close_claims(&self, seq: u32) -> usize {
        let claim = self.block.ctl().claim_word();
        let mut word = claim.load(Ordering::Acquire);
        loop {
            let (s, next, n) = unpack(word);
            if s != u64::from(seq) & SEQ_MASK || next >= n {
                return next.min(n) as usize;
            }
            match claim.compare_exchange_weak(
                word,
                pack(seq, n, n),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return next as usize,
                Err(w) => word = w,
            }
        }
    }

    /// Stops job `seq` whose deadline passed or which was cancelled: closes the claims,
    /// kills (`SIGKILL`) every worker inside one of its chunks, and waits until those are
    /// reported dead and every other worker has left the job (the join invariant). Returns
    /// the chunks that did not finish: the unclaimed ones and those a dead worker was
    /// inside.
    fn stop_job(&self, seq: u32, dead: &mut Vec<(usize, String)>) -> Vec<usize> {
        let block: &Block = &self.block;
        let ctl = block.ctl();
        let first_unclaimed = self.close_claims(seq);
        let n = ctl.job().n_chunks;
        let mut killed = vec![false; self.workers.len()];
        loop {
            // Read before looking at the slots: a report after this wakes the wait below.
            let events = ctl.events().load(Ordering::SeqCst);
            self.collect_dead(seq, dead, false);
            for (slot, killed) in killed.iter_mut().enumerate() {
                if !*killed && self.in_chunk(slot, seq, dead) {
                    *killed = true;
                    self.kill_worker(slot);
                }
            }
            if !(0..self.workers.len()).any(|slot| self.may_be_in_job(slot, seq, dead)) {
                break;
            }
            // The fork server bumps and wakes the event word when it reports an exit; a
            // worker leaving the job without a chunk is seen at the next look.
            futex::wait(ctl.events(), events, Some(STOP_NAP));
        }
        // Every executor is out of the job: a dead worker's slot still names the chunk it
        // was inside (cleared only before a chunk is counted done).
        let mut unfinished: Vec<usize> = dead
            .iter()
            .filter_map(|(slot, _)| {
                let held = ctl.slot(*slot).chunk().load(Ordering::Acquire);
                (held >> 32 == u64::from(seq) && held as u32 != 0).then(|| held as u32 as usize - 1)
            })
            .collect();
        unfinished.extend(first_unclaimed..n);
        unfinished.sort_unstable();
        unfinished.dedup();
        unfinished
    }

    /// Sends `SIGKILL` to the worker of `slot`: through its pidfd (never another process
    /// that reused the pid), or, without one, by pid while the fork server still reports
    /// it running (the server reports an exit before it reaps, so the pid is still the
    /// worker's or its zombie's).
    fn kill_worker(&self, slot: usize) {
        let Some(w) = &self.workers[slot] else {
            return;
        };
        match &w.pidfd {
            Some(fd) => {
                let _ = fd.send_signal(sys_fork::SIGKILL);
            }
            None => {
                let s = self.block.ctl().slot(slot);
                if s.gen().load(Ordering::Acquire) == w.gen
                    && s.state().load(Ordering::Acquire) == RUNNING
                {
                    let _ = sys_fork::send_signal(w.pid, sys_fork::SIGKILL);
                }
            }
        }
    }

    /// The error of a job stopped by its deadline or its token. A chunk failure recorded
    /// before the stop is mentioned.
    fn stop_outcome(&self, why: Stop, unfinished: &[usize], n: usize) -> Error {
        let ctl = self.block.ctl();
        let done = ctl.done().load(Ordering::Acquire) as usize;
        let mut how = String::from("the workers inside them were killed and replaced");
        if n.saturating_sub(done) > unfinished.len() {
            how.push_str(&format!(
                "; {} chunk(s) ended as their worker was killed, not counted",
                n - done - unfinished.len()
            ));
        }
        if ctl.failed_chunk().load(Ordering::Acquire) != NO_FAILURE {
            if let Err(e) = self.outcome(0, &[]) {
                how.push_str(&format!("; before that, {}", e.message()));
            }
        }
        stopped_error(why, unfinished, n, &how)
    }

    /// Whether the worker of `slot` may be inside (or about to enter) a chunk of job
    /// `seq`: it is not provably dead, and it entered the job without leaving it, or its
    /// `chunk` word names a chunk of the job.
    fn may_be_in_job(&self, slot: usize, seq: u32, dead: &[(usize, String)]) -> bool {
        self.workers[slot].is_some()
            && !dead.iter().any(|(d, _)| *d == slot)
            && (self.block.ctl().slot(slot).active().load(Ordering::SeqCst) == seq
                || self.in_chunk(slot, seq, dead))
    }

    /// Whether the worker of `slot`, not provably dead, is inside a chunk of job `seq`.
    fn in_chunk(&self, slot: usize, seq: u32, dead: &[(usize, String)]) -> bool {
        let c = self.block.ctl().slot(slot).chunk().load(Ordering::SeqCst);
        self.workers[slot].is_some()
            && !dead.iter().any(|(d, _)| *d == slot)
            && c >> 32 == u64::from(seq)
            && c as u32 != 0
    }

    /// The job's result: the first recorded failure, or a lost chunk of a dead worker.
    fn outcome(&self, seq: u32, dead: &[(usize, String)]) -> Result<()> {
        let _ = seq;
        let block: &Block = &self.block;
        let k = block.ctl().failed_chunk().load(Ordering::Acquire);
        // The descriptor is not written during this call's remaining steps.
        let job = block.ctl().job();
        if k != NO_FAILURE {
            // The failure was written before the done counter / the reaping that the
            // join observed; nobody writes it now.
            let msg = block.ctl().failed_msg();
            let chunk = block.ctl().chunk(&job, k as usize);
            let pid = block.ctl().failed_pid().load(Ordering::Relaxed);
            let who = if pid == proc::pid() {
                "the calling process".to_string()
            } else {
                format!("worker process {pid}")
            };
            return Err(worker_failed(&chunk, &who, &msg));
        }
        let done = block.ctl().done().load(Ordering::Acquire) as usize;
        if done < job.n_chunks {
            let why = dead
                .iter()
                .map(|(_, w)| w.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(Error::new(
                ErrorKind::WorkerFailed,
                format!(
                    "{} of {} chunks did not finish: a worker process {why}; it was replaced",
                    job.n_chunks - done,
                    job.n_chunks
                ),
            ));
        }
        Ok(())
    }
}

/// `Err(NotFound)` unless the array's name still names its segment: workers attach by
/// name.
fn check_named(d: &ArrayDesc) -> Result<()> {
    let name = String::from_utf8_lossy(&d.name[..d.name_len as usize]).into_owned();
    if shm::file_id_of_name(&name) == Some((d.dev, d.ino)) {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::NotFound,
        format!(
            "array '{name}' has no name in /dev/shm any more (it was unlinked, or the name \
             now belongs to another segment), and pool workers attach arrays by name: run \
             pool jobs before unlinking it, or use fork_chunks, whose children inherit the \
             mapping"
        ),
    ))
}

/// An array of a job: its description for the workers, and its data in this process.
type JobArg = (ArrayDesc, *mut u8);

/// The array of a `map` job (written chunk by chunk), checked against `plan`.
fn map_arg<T: Element, D: Dimension>(
    array: &SharedNdArray<T, D>,
    plan: &ChunkPlan,
) -> Result<JobArg> {
    plan.check_shape(array.shape(), "array", array.name())?;
    Ok((describe(array, true)?, array.data_ptr().cast::<u8>()))
}

/// The input (read whole) and output (written chunk by chunk) of a `map_into` job, checked
/// against `plan` and each other.
fn map_into_args<T, D, A, U, E>(
    input: &SharedNdArray<T, D, A>,
    output: &SharedNdArray<U, E>,
    plan: &ChunkPlan,
) -> Result<[JobArg; 2]>
where
    T: Element,
    D: Dimension,
    A: AccessMode,
    U: Element,
    E: Dimension,
{
    plan.check_shape(input.shape(), "input", input.name())?;
    plan.check_shape(output.shape(), "output", output.name())?;
    if input.segment_id() == output.segment_id() {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "input and output are the same segment '{}': use map for in-place work",
                output.name()
            ),
        ));
    }
    Ok([
        (describe(input, false)?, input.data_ptr().cast::<u8>()),
        (describe(output, true)?, output.data_ptr().cast::<u8>()),
    ])
}

/// The array of a `map_reduce` job with results of `R` (read chunk by chunk), checked
/// against `plan`.
fn reduce_arg<T: Element, D: Dimension, A: AccessMode, R>(
    array: &SharedNdArray<T, D, A>,
    plan: &ChunkPlan,
) -> Result<JobArg> {
    plan.check_shape(array.shape(), "array", array.name())?;
    check_results::<R>(plan)?;
    Ok((describe(array, false)?, array.data_ptr().cast::<u8>()))
}

/// `InvalidArgument` when one `R` per chunk of `plan` does not fit the results area.
pub(super) fn check_results<R>(plan: &ChunkPlan) -> Result<()> {
    let n = plan.num_chunks();
    if n.saturating_mul(size_of::<R>()) > MAX_RESULTS {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "{n} results of {} bytes exceed the pool's {MAX_RESULTS}-byte results \
                 area: use fewer chunks, or write the results into a shared array",
                size_of::<R>()
            ),
        ));
    }
    Ok(())
}

/// Describes `array` for the workers.
fn describe<T: Element, D: Dimension, A: AccessMode>(
    array: &SharedNdArray<T, D, A>,
    writable: bool,
) -> Result<ArrayDesc> {
    // A handle inherited through fork (another process's) is refused before dispatch.
    array.check_bound_here()?;
    let seg = array.segment();
    if seg.segment_id() == 0 {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "array '{}' has no ndshm trailer (it was made by another tool), so pool \
                 workers cannot recognise its mapping: copy it into an ndshm array, or use \
                 fork_chunks",
                array.name()
            ),
        ));
    }
    let shape = array.shape();
    if shape.len() > MAX_DIMS {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "array '{}' has {} dimensions; pool jobs take at most {MAX_DIMS}",
                array.name(),
                shape.len()
            ),
        ));
    }
    let name = array.name().as_bytes();
    let mut d = ArrayDesc::zeroed();
    d.segment_id = seg.segment_id();
    (d.dev, d.ino) = seg.file_id();
    d.offset = (array.data_ptr() as usize - seg.as_ptr() as usize) as u64;
    d.nbytes = array.nbytes() as u64;
    d.writable = u32::from(writable);
    d.fortran = u32::from(array.is_fortran_order() && shape.len() > 1);
    d.ndim = shape.len() as u32;
    for (s, &v) in d.shape.iter_mut().zip(shape) {
        *s = v as u64;
    }
    d.name[..name.len()].copy_from_slice(name);
    d.name_len = name.len() as u32;
    Ok(d)
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        if proc::process_token() != self.token {
            // A copy inherited through fork: the workers serve the creator. Only this
            // process's own copies (of the control block mapping, of the descriptors) go.
            return;
        }
        let Some(server) = self.server.take() else {
            return;
        };
        let block: &Block = &self.block;
        // Idle workers leave on their own; the server kills whatever is left anyway.
        block.ctl().shutdown().store(1, Ordering::SeqCst);
        self.seq = self.seq.wrapping_add(1).max(1);
        block.ctl().seq().store(self.seq, Ordering::SeqCst);
        futex::wake(block.ctl().seq(), i32::MAX);
        // (A server that is gone makes this an EPIPE error, which changes nothing.)
        let _ = pipe::write_all(server.requests.as_raw_fd(), &server::SHUTDOWN.to_ne_bytes());
        drop(server.requests);
        // The server kills and reaps every worker, then exits.
        let stopped = server
            .pidfd
            .as_ref()
            .is_some_and(|fd| fd.wait_exited(STOP_TIMEOUT_MS));
        if !stopped {
            // Its workers die with it (their death signal).
            let _ = sys_fork::send_signal(server.pid, sys_fork::SIGKILL);
        }
        // Our child: reap it (ECHILD if SIGCHLD is ignored: it reaped itself).
        let _ = sys_fork::wait_child(server.pid, false);
        owned::untrack_child(server.pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfinished_chunks_are_named_as_ranges() {
        assert_eq!(name_chunks(&[2]), "chunk 2");
        assert_eq!(
            name_chunks(&[0, 1, 2, 3, 7, 9, 10]),
            "chunks 0..=3, 7, 9..=10"
        );
        let many: Vec<usize> = (0..40).map(|k| 2 * k).collect();
        assert!(
            name_chunks(&many).ends_with("30, …"),
            "{}",
            name_chunks(&many)
        );
        let e = stopped_error(Stop::Cancelled, &[1], 2, "how");
        assert_eq!(e.kind(), ErrorKind::Cancelled);
        assert_eq!(
            e.message(),
            "the job was cancelled: 1 of 2 chunks did not finish (chunk 1); how"
        );
    }
}
