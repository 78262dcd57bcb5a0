//! `WorkerPool`: worker processes forked once, fed chunked jobs through shared memory.
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

use std::cell::UnsafeCell;
use std::collections::HashMap;
use std::fmt;
use std::mem::size_of;
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytemuck::Pod;
use ndarray::{ArrayView, ArrayViewMut, Dimension, ShapeBuilder};

use crate::array::{AccessMode, SharedNdArray};
use crate::element::Element;
use crate::error::{Error, ErrorKind, Result};
use crate::parallel::chunk::{Chunk, ChunkPlan, MAX_CHUNKS};
use crate::parallel::fork_chunks::worker_failed;
use crate::parallel::process::{fork_tracked, ChildResult};
use crate::segment::owned;
use crate::segment::{MapAccess, Segment};
use crate::sys::fork::{self as sys_fork, AnonShared, Exit};
use crate::sys::pidfd::Pidfd;
use crate::sys::pipe::{self, PrivateFd};
use crate::sys::{futex, proc, shm};

mod server;
use server::ServerState;

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

const MAX_NAME: usize = 256;
const MAX_ARRAYS: usize = 2;
const MAX_MSG: usize = 2048;
const NO_FAILURE: u32 = u32::MAX;
/// How long an executor spins before it sleeps on a futex.
const SPIN: Duration = Duration::from_micros(20);
/// How often a sleeping worker checks that its fork server lives and its cache is fresh.
const WORKER_NAP: Duration = Duration::from_millis(500);
/// How long after a job its arrays are taken as still held by the workers (half a nap).
const VERIFIED_FOR: Duration = Duration::from_millis(250);
/// How often the waiting caller checks that its workers live.
const PARENT_NAP: Duration = Duration::from_millis(10);

// Claim word: | seq (22 bits) | next chunk (21 bits) | chunk count (21 bits) |
const COUNT_BITS: u32 = 21;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
const SEQ_MASK: u64 = (1 << 22) - 1;

fn pack(seq: u32, next: u64, n: u64) -> u64 {
    ((seq as u64 & SEQ_MASK) << (2 * COUNT_BITS)) | (next << COUNT_BITS) | n
}

fn unpack(word: u64) -> (u64, u64, u64) {
    (
        word >> (2 * COUNT_BITS),
        (word >> COUNT_BITS) & COUNT_MASK,
        word & COUNT_MASK,
    )
}

/// A value on its own cache line, so that the words executors hammer do not share one.
#[repr(C, align(64))]
struct Line<T>(T);

/// What the control block says about one worker.
///
/// The worker writes `active`, `chunk` and `sleeping`; the fork server writes the rest
/// (`pid`, `state`, the exit status, `gen`), and the caller only reads.
#[repr(C, align(64))]
struct Slot {
    pid: AtomicI32,
    /// Sequence number of the job the worker takes part in; 0 between jobs. Set before
    /// the worker claims a chunk of the job, cleared after it stopped claiming.
    active: AtomicU32,
    /// While the worker runs a chunk: `(job sequence number << 32) | (chunk index + 1)`;
    /// 0 otherwise. Cleared before the chunk is counted done.
    chunk: AtomicU64,
    /// 1 while the worker is counted in `sleepers`.
    sleeping: AtomicU32,
    /// 0 (never spawned), `RUNNING` (pid is a live or unreaped worker), `EXITED` (the server
    /// saw it end: `exit_kind`/`exit_value`), `FORK_FAILED` (`exit_value` is the errno).
    state: AtomicU32,
    /// 1: exited with code `exit_value`; 2: killed by signal `exit_value`.
    exit_kind: AtomicU32,
    exit_value: AtomicI32,
    /// Bumped by the server after each spawn (success or failure) into this slot.
    gen: AtomicU32,
}

const RUNNING: u32 = 1;
const EXITED: u32 = 2;
const FORK_FAILED: u32 = 3;

fn chunk_tag(seq: u32, k: usize) -> u64 {
    (u64::from(seq) << 32) | (k as u64 + 1)
}

/// Where an array of a job lives, as the parent describes it to the workers.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
struct ArrayDesc {
    segment_id: u64,
    /// Device and inode of the segment's file (the name check before dispatch).
    dev: u64,
    ino: u64,
    /// Byte offset of the first element in the segment.
    offset: u64,
    /// Bytes of data from `offset`.
    nbytes: u64,
    writable: u32,
    fortran: u32,
    ndim: u32,
    name_len: u32,
    shape: [u64; MAX_DIMS],
    name: [u8; MAX_NAME],
}

const EMPTY_ARRAY: ArrayDesc = ArrayDesc {
    segment_id: 0,
    dev: 0,
    ino: 0,
    offset: 0,
    nbytes: 0,
    writable: 0,
    fortran: 0,
    ndim: 0,
    name_len: 0,
    shape: [0; MAX_DIMS],
    name: [0; MAX_NAME],
};

/// The job in the control block: written by the caller between jobs only, read by
/// executors after they won a chunk of the job.
#[repr(C)]
struct JobDesc {
    trampoline: usize,
    user_fn: usize,
    axis: u64,
    n_chunks: u64,
    n_arrays: u64,
    params_len: u64,
    result_size: u64,
    arrays: [ArrayDesc; MAX_ARRAYS],
    params: [u64; MAX_PARAMS / 8],
    bounds: [u64; MAX_CHUNKS + 1],
}

/// The shared control block (followed in the mapping by the results area).
#[repr(C)]
struct Control {
    /// Futex word of the workers: the sequence number of the latest job (or shutdown).
    seq: Line<AtomicU32>,
    /// Workers asleep (or about to sleep) on `seq`.
    sleepers: Line<AtomicU32>,
    /// See `pack`.
    claim: Line<AtomicU64>,
    /// Futex word of the caller: chunks of the current job that have finished.
    done: Line<AtomicU32>,
    /// 1 while the caller is asleep (or about to sleep) on `done`.
    caller_sleeping: Line<AtomicU32>,
    /// Futex word the fork server bumps after each change of a slot's `state`.
    events: Line<AtomicU32>,
    shutdown: AtomicU32,
    /// Chunk of the first failure of the current job, or `NO_FAILURE`.
    failed_chunk: AtomicU32,
    failed_pid: AtomicI32,
    failed_len: AtomicU32,
    failed_msg: UnsafeCell<[u8; MAX_MSG]>,
    slots: [Slot; MAX_WORKERS],
    desc: UnsafeCell<JobDesc>,
}

const CONTROL_LEN: usize = size_of::<Control>();
const MAP_LEN: usize = CONTROL_LEN.next_multiple_of(4096) + MAX_RESULTS;

/// A resolved array of a job: where its data is in the executing process.
#[derive(Clone, Copy)]
struct ArrayRef<'a> {
    ptr: *mut u8,
    desc: &'a ArrayDesc,
}

/// What a trampoline gets to run one chunk.
struct ChunkArgs<'a> {
    chunk: Chunk,
    arrays: [ArrayRef<'a>; MAX_ARRAYS],
    params: &'a [u8],
    user_fn: usize,
    result: *mut u8,
}

/// The user function of a `map_into` job.
type MapIntoFn<T, D, U, E, P, R> = fn(Chunk, ArrayView<'_, T, D>, ArrayViewMut<'_, U, E>, &P) -> R;

/// Finds where array `i` of a job (whose arrays are given) lives in the executing process.
type Resolve<'r> = dyn FnMut(&[ArrayDesc], usize) -> std::result::Result<*mut u8, String> + 'r;

/// Runs the user's function on one chunk (monomorphised per job type).
type Trampoline = unsafe fn(&ChunkArgs<'_>) -> std::result::Result<(), String>;

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
    r: &ArrayRef,
    chunk: &Chunk,
) -> ArrayViewMut<'a, T, D> {
    let dim: D = dim_of(r.desc);
    let shape = if r.desc.fortran != 0 {
        dim.f()
    } else {
        dim.into_shape_with_order()
    };
    // SAFETY: forwarded to the caller.
    let view = unsafe { ArrayViewMut::from_shape_ptr(shape, r.ptr.cast::<T>()) };
    chunk.of_mut(view)
}

/// # Safety
/// As [`chunk_view_mut`], except that others may read the array too (no one writes it).
unsafe fn whole_view<'a, T, D: Dimension>(r: &ArrayRef) -> ArrayView<'a, T, D> {
    let dim: D = dim_of(r.desc);
    let shape = if r.desc.fortran != 0 {
        dim.f()
    } else {
        dim.into_shape_with_order()
    };
    // SAFETY: forwarded to the caller.
    unsafe { ArrayView::from_shape_ptr(shape, r.ptr.cast::<T>()) }
}

/// # Safety
/// `args` describes a job made by [`WorkerPool::map`] with these type parameters.
unsafe fn run_map<T: Element, D: Dimension, P: Pod, R: ChildResult>(
    args: &ChunkArgs<'_>,
) -> std::result::Result<(), String> {
    // SAFETY: `map` stored a function of exactly this type as `user_fn`.
    let f: fn(Chunk, ArrayViewMut<'_, T, D>, &P) -> R =
        unsafe { std::mem::transmute(args.user_fn) };
    let p: P = bytemuck::pod_read_unaligned(&args.params[..size_of::<P>()]);
    // SAFETY: array 0 is the job's output, resolved by the executor; the chunk is this
    // executor's alone (it won it by CAS).
    let view = unsafe { chunk_view_mut::<T, D>(&args.arrays[0], &args.chunk) };
    f(args.chunk, view, &p).into_message()
}

/// # Safety
/// `args` describes a job made by [`WorkerPool::map_into`] with these type parameters.
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
    // SAFETY: `map_into` stored a function of exactly this type as `user_fn`.
    let f: MapIntoFn<T, D, U, E, P, R> = unsafe { std::mem::transmute(args.user_fn) };
    let p: P = bytemuck::pod_read_unaligned(&args.params[..size_of::<P>()]);
    // SAFETY: array 0 is the input (nobody writes it during the job), array 1 the output,
    // of which this executor alone holds the chunk.
    let (input, output) = unsafe {
        (
            whole_view::<T, D>(&args.arrays[0]),
            chunk_view_mut::<U, E>(&args.arrays[1], &args.chunk),
        )
    };
    f(args.chunk, input, output, &p).into_message()
}

/// # Safety
/// `args` describes a job made by [`WorkerPool::map_reduce`] with these type parameters,
/// and `args.result` has room for one `R`.
unsafe fn run_reduce<T: Element, D: Dimension, P: Pod, R: Pod>(
    args: &ChunkArgs<'_>,
) -> std::result::Result<(), String> {
    // SAFETY: `map_reduce` stored a function of exactly this type as `user_fn`.
    let f: fn(Chunk, ArrayView<'_, T, D>, &P) -> R = unsafe { std::mem::transmute(args.user_fn) };
    let p: P = bytemuck::pod_read_unaligned(&args.params[..size_of::<P>()]);
    // SAFETY: the array is read-only during the job.
    let whole = unsafe { whole_view::<T, D>(&args.arrays[0]) };
    let r = f(args.chunk, args.chunk.of(&whole), &p);
    // SAFETY: the caller guarantees room for one R at `result` (unaligned write); only this
    // executor writes the slot of this chunk.
    unsafe { args.result.cast::<R>().write_unaligned(r) };
    Ok(())
}

/// A worker's mapping of an array segment.
struct Cached {
    seg: Segment,
    last_used: u64,
}

/// Mappings a worker keeps, by segment id.
///
/// A mapping of a segment whose name is gone (the caller dropped or unlinked the array)
/// would pin the segment's memory: stale mappings are dropped when a job brings an array
/// the cache does not hold (before mapping it), at a job's first chunk when the last check
/// is [`RECHECK`] old, and when the worker naps. The job's own arrays are never dropped.
struct Cache {
    map: HashMap<u64, Cached>,
    clock: u64,
    /// The job whose arrays were last resolved.
    job: u32,
    checked: Instant,
}

/// How old the last stale-mapping check of a busy worker may be.
const RECHECK: Duration = Duration::from_millis(50);

impl Cache {
    fn new() -> Cache {
        Cache {
            map: HashMap::new(),
            clock: 0,
            job: 0,
            checked: Instant::now(),
        }
    }

    /// Resolves array `i` of job `seq`, whose arrays are `all`.
    fn resolve(
        &mut self,
        seq: u32,
        all: &[ArrayDesc],
        i: usize,
    ) -> std::result::Result<*mut u8, String> {
        if self.job != seq {
            self.job = seq;
            let miss = all.iter().any(|d| !self.map.contains_key(&d.segment_id));
            if miss || self.checked.elapsed() >= RECHECK {
                self.evict_stale(all);
            }
        }
        let d = &all[i];
        self.clock += 1;
        let writable = d.writable != 0;
        let usable = self
            .map
            .get(&d.segment_id)
            .is_some_and(|c| !writable || c.seg.is_writable());
        if !usable {
            let name = std::str::from_utf8(&d.name[..d.name_len as usize])
                .map_err(|_| "array name is not UTF-8".to_string())?;
            let access = MapAccess {
                writable,
                populate: false,
                register: false,
            };
            let seg = Segment::open(name, access)
                .map_err(|e| format!("could not attach array '{name}': {e}"))?;
            if seg.segment_id() != d.segment_id {
                return Err(format!(
                    "segment '{name}' is no longer the caller's array (id {:#x}, found {:#x}): \
                     its name was unlinked and reused while the caller held it",
                    d.segment_id,
                    seg.segment_id()
                ));
            }
            if self.map.len() >= CACHE_ENTRIES {
                if let Some(&old) = self
                    .map
                    .iter()
                    .min_by_key(|(_, c)| c.last_used)
                    .map(|(id, _)| id)
                {
                    self.map.remove(&old);
                }
            }
            self.map.insert(d.segment_id, Cached { seg, last_used: 0 });
        }
        let c = self
            .map
            .get_mut(&d.segment_id)
            .ok_or_else(|| "array cache lost an entry".to_string())?;
        c.last_used = self.clock;
        let need = d.offset.saturating_add(d.nbytes);
        if need > c.seg.len() as u64 {
            return Err(format!(
                "segment '{}' is shorter ({} bytes) than the caller's array ({need})",
                c.seg.name(),
                c.seg.len()
            ));
        }
        // SAFETY: `offset + nbytes <= len`, so the pointer stays inside the mapping.
        Ok(unsafe { c.seg.as_ptr().add(d.offset as usize) })
    }

    /// Drops mappings whose name no longer names their segment (the array was dropped or
    /// unlinked), except those of the arrays in `keep`.
    fn evict_stale(&mut self, keep: &[ArrayDesc]) {
        self.checked = Instant::now();
        self.map.retain(|id, c| {
            keep.iter().any(|d| d.segment_id == *id)
                || shm::file_id_of_name(c.seg.name()) == Some(c.seg.file_id())
        });
    }
}

/// The shared control block.
struct Block {
    mem: AnonShared,
}

impl Block {
    fn ctl(&self) -> &Control {
        // SAFETY: the mapping is at least CONTROL_LEN bytes, page-aligned (so aligned for
        // Control), zero-initialised (a valid Control: atomics and byte arrays) and lives as
        // long as `self`; shared fields are atomics, the rest is accessed under the job
        // protocol (see `desc`).
        unsafe { &*(self.mem.as_ptr() as *const Control) }
    }

    fn results(&self) -> *mut u8 {
        // SAFETY: the results area lies inside the mapping (MAP_LEN).
        unsafe { self.mem.as_ptr().add(CONTROL_LEN.next_multiple_of(4096)) }
    }

    /// The job descriptor.
    ///
    /// # Safety
    /// Only while no chunk of a job is claimable or running (the caller between jobs), or
    /// read-only by an executor that won a chunk of the current job.
    unsafe fn desc(&self) -> *mut JobDesc {
        self.ctl().desc.get()
    }

    /// Claims the next chunk of job `seq`, if any is left.
    fn claim(&self, seq: u32) -> Option<usize> {
        let claim = &self.ctl().claim.0;
        let mut word = claim.load(Ordering::Acquire);
        loop {
            let (s, next, n) = unpack(word);
            if s != seq as u64 & SEQ_MASK || next >= n {
                return None;
            }
            match claim.compare_exchange_weak(
                word,
                word + (1 << COUNT_BITS),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(next as usize),
                Err(w) => word = w,
            }
        }
    }

    /// Records the first failure of the job (later ones are dropped).
    fn fail(&self, chunk: usize, msg: &str) {
        let ctl = self.ctl();
        if ctl
            .failed_chunk
            .compare_exchange(
                NO_FAILURE,
                chunk as u32,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            let mut n = msg.len().min(MAX_MSG);
            while !msg.is_char_boundary(n) {
                n -= 1;
            }
            // SAFETY: only the winner of the CAS above writes the message; the caller reads
            // it after the join, which synchronises with the `done` RMW that follows this
            // write in `run_chunk`.
            unsafe {
                (&mut *ctl.failed_msg.get())[..n].copy_from_slice(&msg.as_bytes()[..n]);
            }
            ctl.failed_len.store(n as u32, Ordering::Relaxed);
            ctl.failed_pid.store(proc::pid(), Ordering::Relaxed);
        }
    }

    /// Runs chunk `k` of job `seq` with the arrays resolved by `resolve` (given the job's
    /// arrays and the index of the one to resolve). `slot` is the worker's slot (`None` for
    /// the caller): its `chunk` word says "inside chunk `k` of job `seq`" from before the
    /// user's function runs until before the chunk is counted done.
    fn run_chunk(&self, seq: u32, k: usize, slot: Option<&Slot>, resolve: &mut Resolve<'_>) {
        if let Some(s) = slot {
            s.chunk.store(chunk_tag(seq, k), Ordering::SeqCst);
        }
        // SAFETY: this executor won chunk `k` of the current job, so the descriptor is
        // the current job's and the caller does not write it until the job is joined.
        let desc = unsafe { &*self.desc() };
        let chunk = Chunk {
            index: k,
            axis: desc.axis as usize,
            start: desc.bounds[k] as usize,
            end: desc.bounds[k + 1] as usize,
        };
        let outcome = (|| {
            let mut arrays = [ArrayRef {
                ptr: std::ptr::null_mut(),
                desc: &EMPTY_ARRAY,
            }; MAX_ARRAYS];
            let all = &desc.arrays[..desc.n_arrays as usize];
            for (i, (r, d)) in arrays.iter_mut().zip(all).enumerate() {
                *r = ArrayRef {
                    ptr: resolve(all, i)?,
                    desc: d,
                };
            }
            let params = bytemuck::cast_slice::<u64, u8>(&desc.params);
            let args = ChunkArgs {
                chunk,
                arrays,
                params: &params[..desc.params_len as usize],
                user_fn: desc.user_fn,
                // SAFETY: `k * result_size` is below MAX_RESULTS (checked at dispatch).
                result: unsafe { self.results().add(k * desc.result_size as usize) },
            };
            // SAFETY: the trampoline was stored by the job method together with a user
            // function and arrays of the types it was instantiated with.
            let tramp: Trampoline = unsafe { std::mem::transmute(desc.trampoline) };
            match catch_unwind(AssertUnwindSafe(|| {
                // SAFETY: see above.
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
            self.fail(k, &msg);
        }
        if let Some(s) = slot {
            // Before the done count: a caller that sees the chunk done sees it left.
            s.chunk.store(0, Ordering::SeqCst);
        }
        let ctl = self.ctl();
        ctl.done.0.fetch_add(1, Ordering::SeqCst);
        if ctl.caller_sleeping.0.load(Ordering::SeqCst) != 0 {
            futex::wake(&ctl.done.0, 1);
        }
    }
}

/// A worker process's life: wait for a job, claim and run chunks, repeat. Never returns.
///
/// Panics in chunks are caught (and reported) silently: `fork_tracked` installed, in the
/// caller, a panic hook that stays quiet in forked children (the fork server is one, and
/// the workers inherit that state from it). `parent` is the fork server's pid.
fn worker_main(block: &Block, slot: usize, parent: i32, mut seen: u32) -> ! {
    let ctl = block.ctl();
    let me = &ctl.slots[slot];
    let mut cache = Cache::new();
    loop {
        let seq = wait_for_job(block, me, seen, parent, &mut cache);
        if ctl.shutdown.load(Ordering::Acquire) != 0 {
            sys_fork::exit_now(0);
        }
        seen = seq;
        me.active.store(seq, Ordering::SeqCst);
        while let Some(k) = block.claim(seq) {
            block.run_chunk(seq, k, Some(me), &mut |all, i| cache.resolve(seq, all, i));
        }
        me.active.store(0, Ordering::SeqCst);
    }
}

/// Waits until the sequence word differs from `seen`: spins for `SPIN`, then sleeps on
/// the futex (waking every `WORKER_NAP` to check that the fork server lives and to drop
/// stale mappings).
fn wait_for_job(block: &Block, me: &Slot, seen: u32, parent: i32, cache: &mut Cache) -> u32 {
    let ctl = block.ctl();
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        let s = ctl.seq.0.load(Ordering::Acquire);
        if s != seen {
            return s;
        }
        std::hint::spin_loop();
        spins = spins.wrapping_add(1);
        if spins % 64 == 0 && start.elapsed() > SPIN {
            break;
        }
    }
    loop {
        ctl.sleepers.0.fetch_add(1, Ordering::SeqCst);
        me.sleeping.store(1, Ordering::SeqCst);
        if ctl.seq.0.load(Ordering::SeqCst) == seen {
            futex::wait(&ctl.seq.0, seen, Some(WORKER_NAP));
        }
        me.sleeping.store(0, Ordering::SeqCst);
        ctl.sleepers.0.fetch_sub(1, Ordering::SeqCst);
        let s = ctl.seq.0.load(Ordering::Acquire);
        if s != seen {
            return s;
        }
        if proc::parent_pid() != parent {
            // The fork server died without stopping us (its death signal should have
            // killed us already): leave.
            sys_fork::exit_now(0);
        }
        cache.evict_stale(&[]);
    }
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
/// library loaded later with `dlopen`); a worker stuck in an endless loop blocks the job,
/// as a stuck thread blocks rayon; arrays must keep their name while jobs use them
/// (workers attach by name).
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
    /// mappings whose name is gone only after [`WORKER_NAP`]), so a job on them within
    /// [`VERIFIED_FOR`] needs no name check.
    verified: [u64; MAX_ARRAYS],
    verified_at: Instant,
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
        let mem = AnonShared::new(MAP_LEN)
            .map_err(|e| Error::os("cannot map the pool's control block", e))?;
        let mut pool = WorkerPool {
            block: Box::new(Block { mem }),
            workers: (0..executors - 1).map(|_| None).collect(),
            server: None,
            token: proc::process_token(),
            creator_pid: proc::pid(),
            seq: 0,
            inline_below: 0,
            progress: false,
            verified: [0; MAX_ARRAYS],
            verified_at: Instant::now(),
        };
        pool.block
            .ctl()
            .failed_chunk
            .store(NO_FAILURE, Ordering::Relaxed);
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
    pub fn with_available_parallelism() -> Result<WorkerPool> {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        WorkerPool::new(n.min(MAX_WORKERS + 1))
    }

    /// Forks the fork server, which forks the `n` workers, and waits until it has.
    fn start_server(&mut self, n: usize) -> Result<()> {
        let (read, write) =
            pipe::pipe().map_err(|e| Error::os("cannot make the pool's request pipe", e))?;
        let write = PrivateFd::new(write);
        let caller_end = (!write.is_recorded()).then(|| write.as_raw_fd());
        let requests = read.as_raw_fd();
        let mut st = ServerState::new(n);
        let block: &Block = &self.block;
        let me = proc::pid();
        let pid = fork_tracked(|| server::server_main(block, requests, caller_end, me, &mut st))?;
        drop(read);
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
        let ctl = self.block.ctl();
        let s = &ctl.slots[slot];
        let deadline = Instant::now() + SPAWN_TIMEOUT;
        loop {
            let events = ctl.events.0.load(Ordering::SeqCst);
            let gen = s.gen.load(Ordering::Acquire);
            if gen != old_gen {
                let pid = s.pid.load(Ordering::Relaxed);
                match s.state.load(Ordering::Acquire) {
                    RUNNING | EXITED => {
                        // The server marks a worker EXITED before it reaps it: if the slot
                        // still says RUNNING for this generation after the pidfd is open,
                        // the pidfd names this worker (or its zombie), not a reused pid.
                        let pidfd = Pidfd::open(pid).ok().filter(|_| {
                            s.state.load(Ordering::SeqCst) == RUNNING
                                && s.gen.load(Ordering::SeqCst) == gen
                        });
                        self.workers[slot] = Some(Worker { pid, gen, pidfd });
                        return Ok(());
                    }
                    _ => {
                        self.workers[slot] = None;
                        let errno = s.exit_value.load(Ordering::Relaxed);
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
            futex::wait(&ctl.events.0, events, Some(PARENT_NAP));
        }
    }

    /// Asks the server for a new worker in `slot` (whose worker is gone) and waits for it.
    fn respawn(&mut self, slot: usize) -> Result<()> {
        self.workers[slot] = None;
        // A new worker holds no mapping.
        self.verified = [0; MAX_ARRAYS];
        let gen = self.block.ctl().slots[slot].gen.load(Ordering::Acquire);
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
        let s = &self.block.ctl().slots[slot];
        if s.gen.load(Ordering::Acquire) == w.gen && s.state.load(Ordering::Acquire) == EXITED {
            let value = s.exit_value.load(Ordering::Relaxed);
            let exit = match s.exit_kind.load(Ordering::Relaxed) {
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
    pub fn set_inline_below(&mut self, elements: usize) {
        self.inline_below = elements;
    }

    /// Shows a progress bar (chunks done / total) on stderr while a job runs, when stderr
    /// is a terminal. Off by default; needs the `progress` feature (on by default), without
    /// which it does nothing.
    pub fn set_progress(&mut self, on: bool) {
        self.progress = on;
    }

    /// Reaps workers that died between jobs and forks replacements; returns how many were
    /// replaced. Jobs do this themselves when a worker dies during them.
    ///
    /// # Errors
    /// [`ErrorKind::WrongProcess`] in a process other than the pool's creator; an OS error
    /// when forking a replacement fails; [`ErrorKind::WorkerFailed`] when the pool's fork
    /// server has ended (make a new pool).
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
        plan.check_shape(array.shape(), "array", array.name())?;
        let out = describe(array, true)?;
        let ptr = array.data_ptr().cast::<u8>();
        self.run(
            plan,
            run_map::<T, D, P, R> as Trampoline,
            f as usize,
            bytemuck::bytes_of(&params),
            &[(out, ptr)],
            0,
            array.len(),
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
        let i = describe(input, false)?;
        let o = describe(output, true)?;
        let (ip, op) = (
            input.data_ptr().cast::<u8>(),
            output.data_ptr().cast::<u8>(),
        );
        self.run(
            plan,
            run_map_into::<T, D, U, E, P, R> as Trampoline,
            f as usize,
            bytemuck::bytes_of(&params),
            &[(i, ip), (o, op)],
            0,
            output.len().max(input.len()),
        )
    }

    /// Runs `f(chunk, view_of_chunk, &params)` on each chunk and returns the values in chunk
    /// order (the seed's "collect results" pattern): partial sums, minima, histogram rows.
    ///
    /// # Errors
    /// As [`map`](Self::map), plus [`ErrorKind::InvalidArgument`] when the results
    /// (chunks × `size_of::<R>()`) exceed [`MAX_RESULTS`] bytes.
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
        plan.check_shape(array.shape(), "array", array.name())?;
        let n = plan.num_chunks();
        if n.saturating_mul(size_of::<R>()) > MAX_RESULTS {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "{n} results of {} bytes exceed the pool's {MAX_RESULTS}-byte results \
                     area: use fewer chunks, or write results into a shared array with map_into",
                    size_of::<R>()
                ),
            ));
        }
        let d = describe(array, false)?;
        let ptr = array.data_ptr().cast::<u8>();
        self.run(
            plan,
            run_reduce::<T, D, P, R> as Trampoline,
            f as usize,
            bytemuck::bytes_of(&params),
            &[(d, ptr)],
            size_of::<R>(),
            array.len(),
        )?;
        let base = self.block.results();
        Ok((0..n)
            .map(|k| {
                // SAFETY: chunk k's executor wrote one R at this offset before the join
                // (which is a happens-before edge); the area holds n * size_of::<R>() bytes.
                unsafe { base.add(k * size_of::<R>()).cast::<R>().read_unaligned() }
            })
            .collect())
    }

    /// Dispatches a job, runs chunks in the caller, joins, and reports the first failure.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        plan: &ChunkPlan,
        trampoline: Trampoline,
        user_fn: usize,
        params: &[u8],
        arrays: &[(ArrayDesc, *mut u8)],
        result_size: usize,
        elements: usize,
    ) -> Result<()> {
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
        if n == 0 {
            return Ok(());
        }
        let inline = elements <= self.inline_below || self.workers.is_empty() || n == 1;
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
        {
            // SAFETY: no chunk is claimable or running (the previous job was joined), so no
            // executor reads the descriptor while we write it.
            let desc = unsafe { &mut *block.desc() };
            // Only what changed is written: a job like the previous one then leaves the
            // descriptor's cache lines shared in the workers' caches (cheaper dispatch).
            set(&mut desc.trampoline, trampoline as usize);
            set(&mut desc.user_fn, user_fn);
            set(&mut desc.axis, plan.axis() as u64);
            set(&mut desc.n_chunks, n as u64);
            set(&mut desc.n_arrays, arrays.len() as u64);
            set(&mut desc.result_size, result_size as u64);
            set(&mut desc.params_len, params.len() as u64);
            let stored = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut desc.params)[..params.len()];
            if stored != params {
                stored.copy_from_slice(params);
            }
            for (slot, (d, _)) in desc.arrays.iter_mut().zip(arrays) {
                set(slot, *d);
            }
            for (b, &v) in desc.bounds.iter_mut().zip(plan.bounds()) {
                set(b, v as u64);
            }
        }
        ctl.done.0.store(0, Ordering::Relaxed);
        if ctl.failed_chunk.load(Ordering::Relaxed) != NO_FAILURE {
            ctl.failed_chunk.store(NO_FAILURE, Ordering::Relaxed);
        }
        self.seq = self.seq.wrapping_add(1).max(1);
        let seq = self.seq;
        ctl.claim.0.store(pack(seq, 0, n as u64), Ordering::Release);

        if !inline {
            ctl.seq.0.store(seq, Ordering::SeqCst);
            if ctl.sleepers.0.load(Ordering::SeqCst) != 0 {
                futex::wake(&ctl.seq.0, (n - 1).min(self.workers.len()) as i32);
            }
        }
        let mut local = [std::ptr::null_mut::<u8>(); MAX_ARRAYS];
        for (l, (_, p)) in local.iter_mut().zip(arrays) {
            *l = *p;
        }
        let progress = Progress::new(self.progress, n);
        while let Some(k) = block.claim(seq) {
            block.run_chunk(seq, k, None, &mut |_, i| Ok(local[i]));
            progress.set(ctl.done.0.load(Ordering::Relaxed));
        }
        let dead = if inline {
            Vec::new()
        } else {
            self.join(seq, n as u32, &progress)
        };
        progress.finish();
        let result = self.outcome(seq, &dead);
        if !inline {
            // Inline jobs leave the workers' mappings as they were.
            self.verified = [0; MAX_ARRAYS];
            if result.is_ok() {
                for (v, (d, _)) in self.verified.iter_mut().zip(arrays) {
                    *v = d.segment_id;
                }
                self.verified_at = Instant::now();
            }
        }
        for (slot, _) in &dead {
            self.respawn(*slot)?;
        }
        result
    }

    /// Waits until every chunk of job `seq` is done, or, when workers died, until every
    /// live executor has left the job. Returns the dead workers with how they ended (the
    /// server reaped them).
    ///
    /// Invariant: it never returns while an executor may be inside a chunk of job `seq`
    /// (see [`may_be_in_job`](Self::may_be_in_job)). A worker counts as gone only when it
    /// provably ended: its fork server (its parent) reported the exit, or its pidfd says
    /// so. Nothing else (an `ECHILD`, a missing `/proc` entry) is taken for death.
    fn join(&mut self, seq: u32, n: u32, progress: &Progress) -> Vec<(usize, String)> {
        let block: &Block = &self.block;
        let ctl = block.ctl();
        let start = Instant::now();
        let mut spins = 0u32;
        while ctl.done.0.load(Ordering::Acquire) != n {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins % 64 == 0 && start.elapsed() > SPIN {
                break;
            }
        }
        let mut dead: Vec<(usize, String)> = Vec::new();
        loop {
            let done = ctl.done.0.load(Ordering::Acquire);
            if done == n {
                // Each executor clears its `chunk` word before it counts its chunk done,
                // and the count is a chain of release RMWs: seeing `n` done, no one is left
                // inside a chunk of this job.
                debug_assert!(
                    !(0..self.workers.len()).any(|slot| self.in_chunk(slot, seq, &dead)),
                    "pool join: an executor is inside a chunk of a finished job"
                );
                return dead;
            }
            progress.set(done);
            ctl.caller_sleeping.0.store(1, Ordering::SeqCst);
            let done = ctl.done.0.load(Ordering::SeqCst);
            if done != n {
                futex::wait(&ctl.done.0, done, Some(PARENT_NAP));
            }
            ctl.caller_sleeping.0.store(0, Ordering::SeqCst);
            let server_gone = self.server_gone();
            for slot in 0..self.workers.len() {
                if dead.iter().any(|(d, _)| *d == slot) {
                    continue;
                }
                if let Some(why) = self.worker_exit(slot, server_gone) {
                    let pid = self.workers[slot].as_ref().map_or(0, |w| w.pid);
                    // Its slot keeps what it last wrote: the chunk it was inside, if any.
                    let held = ctl.slots[slot].chunk.load(Ordering::Acquire);
                    if held >> 32 == u64::from(seq) && held as u32 != 0 {
                        block.fail_for_dead(held as u32 as usize - 1, pid, &why);
                    }
                    dead.push((slot, format!("{pid} {why}")));
                }
            }
            // With a dead worker some chunks never finish: stop waiting once no live
            // executor is in the job any more. (The caller claimed chunks until none was
            // left before joining, so every chunk is claimed: a live worker that is not
            // active in the job holds none and can win none.) This condition *is* the
            // invariant, checked explicitly.
            if !dead.is_empty()
                && !(0..self.workers.len()).any(|slot| self.may_be_in_job(slot, seq, &dead))
            {
                return dead;
            }
        }
    }

    /// Whether the worker of `slot` may be inside (or about to enter) a chunk of job
    /// `seq`: it is not provably dead, and it entered the job without leaving it, or its
    /// `chunk` word names a chunk of the job.
    fn may_be_in_job(&self, slot: usize, seq: u32, dead: &[(usize, String)]) -> bool {
        self.workers[slot].is_some()
            && !dead.iter().any(|(d, _)| *d == slot)
            && (self.block.ctl().slots[slot].active.load(Ordering::SeqCst) == seq
                || self.in_chunk(slot, seq, dead))
    }

    /// Whether the worker of `slot`, not provably dead, is inside a chunk of job `seq`.
    fn in_chunk(&self, slot: usize, seq: u32, dead: &[(usize, String)]) -> bool {
        let c = self.block.ctl().slots[slot].chunk.load(Ordering::SeqCst);
        self.workers[slot].is_some()
            && !dead.iter().any(|(d, _)| *d == slot)
            && c >> 32 == u64::from(seq)
            && c as u32 != 0
    }

    /// The job's result: the first recorded failure, or a lost chunk of a dead worker.
    fn outcome(&self, seq: u32, dead: &[(usize, String)]) -> Result<()> {
        let _ = seq;
        let ctl = self.block.ctl();
        let k = ctl.failed_chunk.load(Ordering::Acquire);
        // SAFETY: the descriptor is not written during this call's remaining steps.
        let desc = unsafe { &*self.block.desc() };
        if k != NO_FAILURE {
            let len = ctl.failed_len.load(Ordering::Relaxed) as usize;
            // SAFETY: the failure was written before the done counter / the reaping that
            // the join observed; nobody writes it now.
            let msg = unsafe { &(&*ctl.failed_msg.get())[..len.min(MAX_MSG)] };
            let msg = String::from_utf8_lossy(msg);
            let chunk = Chunk {
                index: k as usize,
                axis: desc.axis as usize,
                start: desc.bounds[k as usize] as usize,
                end: desc.bounds[k as usize + 1] as usize,
            };
            let pid = ctl.failed_pid.load(Ordering::Relaxed);
            let who = if pid == proc::pid() {
                "the calling process".to_string()
            } else {
                format!("worker process {pid}")
            };
            return Err(worker_failed(&chunk, &who, &msg));
        }
        let done = ctl.done.0.load(Ordering::Acquire) as u64;
        if done < desc.n_chunks {
            let why = dead
                .iter()
                .map(|(_, w)| w.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(Error::new(
                ErrorKind::WorkerFailed,
                format!(
                    "{} of {} chunks did not finish: a worker process {why}; it was replaced",
                    desc.n_chunks - done,
                    desc.n_chunks
                ),
            ));
        }
        Ok(())
    }
}

impl Block {
    /// Records the failure of chunk `k`, held by a worker that died (pid in the message).
    fn fail_for_dead(&self, k: usize, pid: i32, why: &str) {
        let ctl = self.ctl();
        if ctl
            .failed_chunk
            .compare_exchange(NO_FAILURE, k as u32, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            let n = why.len().min(MAX_MSG);
            // SAFETY: the CAS winner alone writes the message; executors that fail later
            // lose the CAS.
            unsafe { (&mut *ctl.failed_msg.get())[..n].copy_from_slice(&why.as_bytes()[..n]) };
            ctl.failed_len.store(n as u32, Ordering::Relaxed);
            ctl.failed_pid.store(pid, Ordering::Relaxed);
        }
    }
}

/// Writes `v` into `slot` unless it already holds it.
fn set<T: PartialEq>(slot: &mut T, v: T) {
    if *slot != v {
        *slot = v;
    }
}

/// `Err(NotFound)` unless the array's name still names its segment: workers attach by
/// name.
fn check_named(d: &ArrayDesc) -> Result<()> {
    let name = String::from_utf8_lossy(&d.name[..d.name_len as usize]);
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
    let mut d = EMPTY_ARRAY;
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
        let ctl = self.block.ctl();
        // Idle workers leave on their own; the server kills whatever is left anyway.
        ctl.shutdown.store(1, Ordering::SeqCst);
        self.seq = self.seq.wrapping_add(1).max(1);
        ctl.seq.0.store(self.seq, Ordering::SeqCst);
        futex::wake(&ctl.seq.0, i32::MAX);
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
            let _ = sys_fork::send_signal(server.pid, libc::SIGKILL);
        }
        // Our child: reap it (ECHILD if SIGCHLD is ignored: it reaped itself).
        let _ = sys_fork::wait_child(server.pid, false);
        owned::untrack_child(server.pid);
    }
}

/// The optional progress bar of a job.
struct Progress {
    #[cfg(feature = "progress")]
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new(on: bool, n: usize) -> Progress {
        #[cfg(feature = "progress")]
        {
            let bar = (on && n > 1).then(|| {
                let bar = indicatif::ProgressBar::new(n as u64);
                if let Ok(style) = indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} chunks {elapsed_precise} eta {eta}",
                ) {
                    bar.set_style(style);
                }
                bar
            });
            Progress { bar }
        }
        #[cfg(not(feature = "progress"))]
        {
            let _ = (on, n);
            Progress {}
        }
    }

    fn set(&self, _done: u32) {
        #[cfg(feature = "progress")]
        if let Some(bar) = &self.bar {
            bar.set_position(u64::from(_done));
        }
    }

    fn finish(&self) {
        #[cfg(feature = "progress")]
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_word_packs_and_claims_in_order() {
        let w = pack(5, 3, 9);
        assert_eq!(unpack(w), (5, 3, 9));
        assert_eq!(
            unpack(pack(u32::MAX, 0, COUNT_MASK)),
            (SEQ_MASK, 0, COUNT_MASK)
        );
        assert!(MAX_CHUNKS as u64 <= COUNT_MASK);

        let block = Block {
            mem: AnonShared::new(MAP_LEN).unwrap(),
        };
        block.ctl().claim.0.store(pack(7, 0, 3), Ordering::Release);
        // Another job's number never claims.
        assert_eq!(block.claim(8), None);
        assert_eq!(block.claim(7), Some(0));
        assert_eq!(block.claim(7), Some(1));
        assert_eq!(block.claim(7), Some(2));
        assert_eq!(block.claim(7), None);
        assert_eq!(
            unpack(block.ctl().claim.0.load(Ordering::Relaxed)),
            (7, 3, 3)
        );
    }

    #[test]
    fn first_failure_wins() {
        let block = Block {
            mem: AnonShared::new(MAP_LEN).unwrap(),
        };
        let ctl = block.ctl();
        ctl.failed_chunk.store(NO_FAILURE, Ordering::Relaxed);
        block.fail(4, "panicked: first");
        block.fail(2, "panicked: second");
        assert_eq!(ctl.failed_chunk.load(Ordering::Relaxed), 4);
        let len = ctl.failed_len.load(Ordering::Relaxed) as usize;
        // SAFETY: single-threaded test; the message was written above.
        let msg = unsafe { &(&*ctl.failed_msg.get())[..len] };
        assert_eq!(msg, b"panicked: first");
    }
}
