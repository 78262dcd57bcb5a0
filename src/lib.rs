//! # ndshm: n-dimensional arrays in named shared memory, for multi-process compute
//!
//! ndshm is the Rust counterpart of Python's `multiprocessing.shared_memory` + NumPy: a
//! [`SharedNdArray`] lives in a named POSIX shared-memory segment (`/dev/shm/NAME`), other
//! processes and other binaries attach to it by name and get typed [`ndarray`] views, and
//! the segment is a valid `.npy` file, so numpy opens it too.
//!
//! ```
//! use ndarray::Ix2;
//! use ndshm::SharedNdArray;
//! # let name = format!("doc-crate-{}", std::process::id());
//! // Create: the segment /dev/shm/<name> holds a 1000 x 3 array of f64, zeroed.
//! let mut a = SharedNdArray::<f64, Ix2>::zeros(&name, (1000, 3))?;
//! a.view_mut().column_mut(0).fill(1.0);
//! // numpy: np.load("/dev/shm/<name>", mmap_mode="r+") sees the same array.
//! // Another process: unsafe { SharedNdArray::<f64, Ix2>::open(&name) } attaches by name.
//! assert_eq!(a.view().sum(), 1000.0);
//! // Dropping the creator's handle unmaps and unlinks the segment.
//! # Ok::<(), ndshm::Error>(())
//! ```
//!
//! ## Segments
//! Every segment ndshm makes ends with a fixed 128-byte trailer (magic, kind, format
//! version, a unique id, owner pid and start time, persistent flag, room for a lock), where
//! numpy does not look. An array segment starts with a standard `.npy` header, padded so
//! that the data begins 64-byte aligned. Segments are built under a temporary name and
//! published with `renameat2(RENAME_NOREPLACE)`, so an opener never sees a half-written
//! one, and their space is reserved with `posix_fallocate`, so a full `/dev/shm` is an
//! [`ErrorKind::NoSpace`] error at creation, never a SIGBUS later. New segments have mode
//! `0o600` unless [`CreateOptions::mode`] says otherwise.
//!
//! The creator owns the name: its `Drop` unlinks. Attached handles never unlink (Python's
//! resource tracker unlinking segments that other processes still use, CPython gh-82300,
//! is the bug not to repeat). [`SharedNdArray::persist`] hands the name over so that the
//! segment outlives its creator; [`unlink`] removes a name explicitly.
//!
//! ## Soundness
//! A shared-memory segment is memory that other processes may write at any time, which
//! Rust's aliasing rules (a `&[T]` is immutable while it lives, a `&mut [T]` is exclusive)
//! cannot see. ndshm follows memmap2's rule:
//! - **Creating is safe.** A fresh segment is known only to its creator until the creator
//!   shares its name; whoever then attaches takes on the promise below.
//! - **Attaching is `unsafe`** ([`SharedNdArray::open`], [`open_dyn`],
//!   [`SharedNdArray::open_raw`]): the caller promises that, while it holds a view, no other
//!   process writes the elements it reads and no other process touches the elements it
//!   writes — disjoint chunks, or the array's lock — and that nobody truncates the segment.
//!   Everything else is checked: each header field is validated and copied before use, so
//!   a corrupt or hostile segment is an error, never an out-of-bounds access.
//! - **Within one process**, a segment has at most one handle (a process-wide registry of
//!   mapped segments, keyed by device and inode; a second open is
//!   [`ErrorKind::AlreadyOpen`]). Views borrow the handle, so the borrow checker rules out
//!   two live `&mut` views.
//! - **Chunked workers are safe**: the fork and pool APIs split the array into disjoint
//!   chunks themselves and borrow it mutably for the whole job.
//!
//! ## Chunked workers
//! A [`ChunkPlan`] splits an axis into index ranges. [`fork_chunks`] (and
//! [`fork_chunks_with`], [`fork_chunks_into`] for `out = f(in)`) forks one child per chunk
//! and runs any closure on its chunk's view. A [`WorkerPool`] forks its workers once and
//! feeds them jobs through shared memory (in place, `out = f(in)`, map-reduce): on big
//! arrays it matches rayon, and a tiny job's round trip takes about a microsecond. Failures
//! (panics, errors, signals) come back as [`ErrorKind::WorkerFailed`] naming the chunk.
//!
//! ```
//! use ndshm::{ChunkPlan, SharedNdArray, WorkerPool};
//! # let name = format!("doc-crate-pool-{}", std::process::id());
//! let mut pool = WorkerPool::new(2)?; // one worker process + the caller
//! let mut a = SharedNdArray::<f64, ndarray::Ix1>::from_elem(&name, 1000, 3.0)?;
//! let plan = ChunkPlan::balanced(a.len(), 4)?;
//! pool.map(&mut a, &plan, (), |_chunk, mut x, _: &()| x.mapv_inplace(|v| v * v))?;
//! ndshm::fork_chunks(&mut a, 2, |_chunk, mut x| x += 1.0)?; // any closure, one child per chunk
//! assert!(a.as_slice().unwrap().iter().all(|&v| v == 10.0));
//! # Ok::<(), ndshm::Error>(())
//! ```
//! ## Sharing state between processes
//! The counterparts of Python's `multiprocessing` primitives, each in a named segment
//! (attach by name from any process) or in anonymous shared memory (inherited by forked
//! children), none needing a server process:
//! [`SharedValue`] (`Value`, atomic, with its own lock), [`Lock`] (robust: a holder that
//! dies is detected and the next locker told), [`SharedNdArray::lock`] (`Array` with its
//! lock), [`Queue`] / [`ByteQueue`] (bounded MPMC, `close` instead of sentinels),
//! [`ArrayQueue`] (pass arrays by name, ownership moves), [`Pipe`] (duplex
//! [`Connection`]s), and the Manager's containers [`SharedList`], [`SharedMap`],
//! [`SharedStruct`]. Opening these by name is safe: all their shared state is accessed
//! atomically or under their lock.
//!
//! ## Element types
//! See [`DType`]: `i8 u8 i16 u16 i32 u32 i64 u64 f32 f64` and complex, each with its NumPy
//! type string and Python type code.
//!
//! ## Crashes and signals
//! A segment whose owner died without unlinking it (`SIGKILL`, abort, `_exit`) is *stale*:
//! [`gc`] removes the stale segments (owner identified by pid **and** start time, so a
//! reused pid is not the owner), [`stale`] lists them, and neither ever touches a live
//! owner's segment, a persistent one, or a file that is not an ndshm segment. Signal
//! handling is opt-in: with a [`SignalCleanup`] guard alive, Ctrl-C, `SIGTERM` or `SIGHUP`
//! stops and reaps the workers, unlinks the process's own segments and re-raises the
//! signal. [`die_with_parent`] makes a worker die with its parent, and a [`CrashCleanup`]
//! watchdog removes a process's segments even when it is killed with `SIGKILL`.
//!
//! ## Errors
//! One error type, [`Error`], with a [`#[non_exhaustive]`](ErrorKind) kind, a message that
//! says what was wrong and how to fix it, and the OS error as its source.
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod array;
mod array_queue;
mod chunk;
mod cleanup;
mod dtype;
mod error;
mod fork;
mod gc;
mod info;
mod list;
mod map;
#[cfg(feature = "mpi")]
pub mod mpi;
mod namespace;
mod npy;
mod pipe;
mod pool;
mod process;
mod queue;
mod region;
mod segment;
mod signals;
mod sync;
mod sys;
mod trailer;
mod watchdog;

pub use array::{
    open_dyn, AccessMode, DynSharedArray, ReadOnly, ReadOnlyNdArray, ReadWrite, SharedNdArray,
};
pub use array_queue::ArrayQueue;
pub use chunk::{Chunk, ChunkPlan, CACHE_LINE, MAX_CHUNKS};
pub use dtype::{DType, Element};
pub use error::{Error, ErrorKind, Result};
pub use fork::{fork_chunks, fork_chunks_into, fork_chunks_with, MAX_FORKED_CHUNKS};
pub use gc::{gc, gc_matching, stale};
pub use info::{info, list, SegmentInfo};
pub use list::SharedList;
pub use map::{KeyBytes, MapKey, SharedMap, MAX_KEY_LEN};
pub use namespace::{SharedStruct, StructGuard};
pub use pipe::{Connection, Pipe};
pub use pool::{WorkerPool, CACHE_ENTRIES, MAX_DIMS, MAX_PARAMS, MAX_RESULTS, MAX_WORKERS};
pub use process::{scope, write_stdout, ChildResult, Process, Scope};
pub use queue::{
    ByteQueue, GetError, GetTimeoutError, PutError, PutTimeoutError, Queue, TryGetError,
    TryPutError,
};
pub use segment::{unlink, validate_name, CreateOptions, MAX_NAME_LEN};
pub use signals::{die_with_parent, SignalCleanup};
pub use sync::array_lock::ArrayLockGuard;
pub use sync::lock::{Lock, LockGuard};
pub use sync::value::{AtomicElement, SharedValue};
pub use trailer::SegmentKind;
pub use watchdog::CrashCleanup;

/// Re-export of the `ndarray` version ndshm's views come from.
pub use ndarray;
