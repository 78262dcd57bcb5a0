//! # ndshm: n-dimensional arrays in named shared memory, for compute across processes
//!
//! A [`SharedNdArray`] lives in a named POSIX shared-memory segment (`/dev/shm/NAME`). Any
//! process or binary attaches to it by name and gets typed [`ndarray`] views (ndarray 0.17,
//! re-exported as `ndshm::ndarray`), and the segment is a valid `.npy` file, so numpy opens
//! it too. Forked workers ([`fork_chunks`]) or a warm process pool ([`WorkerPool`]) work on
//! chunks of it in place, and Python's `multiprocessing` primitives have counterparts that
//! need no server process. Linux only.
//!
//! ```
//! use ndshm::ndarray::Ix2;
//! use ndshm::{CreateOptions, Process, SharedNdArray};
//!
//! // Create: a 1000 x 3 array of f64 in /dev/shm/<generated name>, zeroed, mode 0600.
//! let mut a = SharedNdArray::<f64, Ix2>::zeros(CreateOptions::unique(), (1000, 3))?;
//! a.view_mut().column_mut(0).fill(1.0);
//! let name = a.name().to_string();
//!
//! // Fork: another process attaches by name (numpy could too:
//! // np.load("/dev/shm/<name>", mmap_mode="r+")).
//! let child = Process::spawn(move || -> ndshm::Result<()> {
//!     // SAFETY (the `open` contract): nobody else writes column 2 while this child does.
//!     let mut b = unsafe { SharedNdArray::<f64, Ix2>::open(&name)? };
//!     b.view_mut().column_mut(2).fill(2.0);
//!     Ok(())
//! })?;
//! child.join()?;
//!
//! // Read back: the child's writes are in place.
//! assert_eq!(a.view().sum(), 3000.0);
//! // Dropping the creator's handle unmaps and unlinks the segment.
//! # Ok::<(), ndshm::Error>(())
//! ```
//!
//! ## Arrays
//! [`SharedNdArray::zeros`], [`from_elem`](SharedNdArray::from_elem),
//! [`from_array`](SharedNdArray::from_array) and [`load`](SharedNdArray::load) create a
//! named segment; each takes `segment: impl Into<`[`CreateOptions`]`>`: a name, or
//! [`CreateOptions::named`] / [`CreateOptions::unique`] with a mode, persistence,
//! prefaulting or Fortran order. Attaching is `unsafe` ([`SharedNdArray::open`],
//! [`SharedNdArray::open_read_only`], [`open_dyn`] for an unknown element type,
//! [`SharedNdArray::open_raw`] for a segment Python's `SharedMemory` made): the caller
//! promises that processes do not write the same elements at once. The creator's `Drop`
//! unlinks; [`SharedNdArray::persist`] hands the name over, [`unlink`] removes one.
//! [`info`] and [`list`] describe segments without attaching. Element types: [`DType`],
//! [`Element`]. Chapter: [`guide::arrays`].
//!
//! ## Chunked work
//! A [`ChunkPlan`] splits an axis into index ranges. [`fork_chunks`] forks one child per
//! chunk and runs any closure on its chunk's view (`fork_chunks(&mut a, 4, f)` or with a
//! plan); [`fork_chunks_into`] computes `out = f(in)`. A [`WorkerPool`] forks its workers
//! once and feeds them jobs through shared memory ([`map`](WorkerPool::map),
//! [`map_into`](WorkerPool::map_into), [`map_reduce`](WorkerPool::map_reduce)): on big
//! arrays it matches rayon, and a tiny job's round trip takes about a microsecond.
//! [`Process::spawn`] and [`scope`] fork children the way `std::thread::spawn` and
//! `std::thread::scope` start threads. A chunk's panic, error or fatal signal comes back as
//! [`ErrorKind::WorkerFailed`] naming the chunk. Chapter: [`guide::parallel`].
//!
//! ## Sharing state between processes
//! Each of these lives in a named segment (`T::create(segment, ..)`, then `T::open(name)`
//! from any process, any number of times) or in anonymous shared memory (`T::new(..)`,
//! inherited by children forked after it):
//! [`SharedValue`] (`Value`, atomic), [`Lock`] (robust: a holder that dies is detected and
//! the next locker told), [`SharedNdArray::lock`] (`Array` with its lock), [`Queue`] and
//! [`ByteQueue`] (bounded MPMC, `close` instead of sentinels), [`NdArrayQueue`] (pass arrays
//! by name, ownership moves), [`pipe`] (a pair of duplex [`Connection`]s), and the
//! Manager's containers [`SharedList`], [`SharedMap`], [`SharedStruct`]. Queues and pipes
//! share one grammar: `put`/`try_put`/`put_timeout` and `get`/`try_get`/`get_timeout`
//! (`send`/`recv` for pipes), with typed errors that hand the item back. Chapter:
//! [`guide::python`].
//!
//! ## Crashes, signals and cleanup
//! A segment whose owner died without unlinking it is *stale*: [`gc`] removes stale
//! segments, [`stale`] lists them, and neither touches a live owner's segment, a
//! persistent one, or a file that is not ndshm's. Liveness comes from a kernel-held lease
//! per process ([`OwnerStatus`]), never from `/proc`, so it holds across pid namespaces and
//! containers sharing `/dev/shm`. Opt-in: [`SignalCleanup`] (Ctrl-C reaps workers and
//! unlinks), [`CrashCleanup`] (a watchdog that cleans up even after `SIGKILL`),
//! [`die_with_parent`]. Chapter: [`guide::robustness`].
//!
//! ## Soundness, in one paragraph
//! Creating is safe; attaching an array is `unsafe` (another process may write the memory);
//! within one process an array has one handle ([`ErrorKind::AlreadyOpen`]), and views
//! borrow it. Handles, views and guards are bound to the process that made them: `fork`
//! copies them, so in a child an infallible accessor panics naming the rule and a fallible
//! call returns [`ErrorKind::WrongProcess`]; array mappings are not inherited at all. The
//! forking APIs hand children exactly the views they need. Forking a process that runs
//! other threads is refused ([`ErrorKind::ForkWithThreads`]) unless it opted in with
//! [`allow_fork_with_threads`]. The full argument: [`guide::trust_model`].
//!
//! ## Errors
//! One error type, [`Error`], with a [`#[non_exhaustive]`](ErrorKind) kind, a message that
//! says what was wrong and how to fix it, and the OS error as its source. The channel
//! types' typed errors convert into it with `?`.
//!
//! ## Beyond one machine
//! With the `mpi` feature, the `mpi` module runs the same [`ChunkPlan`] jobs on MPI ranks
//! across nodes, with one node-shared segment per node. Chapter: [`guide::mpi`].
//!
//! ## The rest of the book
//! [`guide`]: limits, segment layout, every measured figure with its command, the command
//! line, where things are in `src/`.
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod array;
mod element;
mod error;
pub mod guide;
mod ipc;
mod lifecycle;
mod manager;
#[cfg(feature = "mpi")]
pub mod mpi;
mod parallel;
mod segment;
mod sync;
mod sys;

pub use array::lock::ArrayLockGuard;
pub use array::{
    open_dyn, AccessMode, DynSharedArray, ReadOnly, ReadOnlyNdArray, ReadWrite, SharedNdArray,
};
pub use element::{DType, Element};
pub use error::{Error, ErrorKind, Result};
pub use ipc::array_queue::NdArrayQueue;
pub use ipc::byte_queue::ByteQueue;
pub use ipc::error::{
    GetError, GetTimeoutError, PutError, PutTimeoutError, RecvError, RecvTimeoutError, SendError,
    SendTimeoutError, TryGetError, TryPutError, TryRecvError, TrySendError,
};
pub use ipc::joinable_queue::JoinableQueue;
pub use ipc::pipe::{pipe, pipe_one_way, Connection, PipeReader, PipeWriter};
pub use ipc::queue::Queue;
pub use ipc::spsc::{SpscConsumer, SpscProducer, SpscQueue};
pub use lifecycle::gc::{gc, gc_matching, stale};
pub use lifecycle::info::{info, list, OwnerStatus, SegmentInfo};
pub use lifecycle::signals::{die_with_parent, SignalCleanup};
pub use lifecycle::watchdog::CrashCleanup;
pub use manager::list::SharedList;
pub use manager::map::{KeyBytes, MapIter, MapKey, SharedMap, MAX_KEY_LEN};
pub use manager::shared_struct::{SharedStruct, StructGuard};
pub use parallel::chunk::{
    Chunk, ChunkPlan, IntoChunkPlan, CACHE_LINE, MAX_CHUNKS, MAX_SPLIT_AXES,
};
pub use parallel::fork_chunks::{fork_chunks, fork_chunks_into, MAX_FORKED_CHUNKS};
pub use parallel::pool::{
    Append, CancelToken, Halo, JobArray, JobArrays, JobBuilder, JobHandle, JobOptions, PoolScope,
    ReadChunk, ReadHalo, ReadWhole, ScopedJobBuilder, SignalCancel, WorkerPool, WriteChunk,
    CACHE_ENTRIES, MAX_DIMS, MAX_JOB_ARRAYS, MAX_PARAMS, MAX_RESULTS, MAX_WORKERS,
};
pub use parallel::process::{
    allow_fork_with_threads, scope, write_stdout, ChildResult, Process, ProcessWith, Scope,
    ScopedChild, SpawnWithError,
};
pub use segment::trailer::SegmentKind;
pub use segment::{unlink, validate_name, CreateOptions, MAX_NAME_LEN};
pub use sync::barrier::Barrier;
pub use sync::condition::{Condition, ConditionGuard, ConditionLock};
pub use sync::event::Event;
pub use sync::lock::Lock;
pub use sync::raw_lock::LockGuard;
pub use sync::rlock::{RLock, RLockGuard};
pub use sync::semaphore::{BoundedSemaphore, Semaphore};
pub use sync::value::{AtomicElement, SharedValue};

/// Re-export of `bytemuck`, whose [`Pod`] bound the element, value and queue types use;
/// `#[derive(ndshm::Pod, ndshm::Zeroable)]` works through it (the `derive` feature is on).
pub use bytemuck;
pub use bytemuck::{Pod, Zeroable};
/// Re-export of the `ndarray` version ndshm's views come from (0.17).
pub use ndarray;
/// Re-export of `num_complex`, whose `Complex32`/`Complex64` are array elements (`c8`, `c16`).
pub use num_complex;

/// The README's examples, compiled and run by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
