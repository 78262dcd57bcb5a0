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
//! Every segment ndshm makes ends with a fixed 192-byte trailer (magic, kind, format
//! version 2, a unique id, the owner's pid, lease and pid namespace, persistent flag, the
//! segment's robust pthread mutex), where
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
//!   mapped segments, keyed by process token, device and inode; a second open is
//!   [`ErrorKind::AlreadyOpen`]). Views borrow the handle, so the borrow checker rules out
//!   two live `&mut` views.
//! - **A handle works only in the process that made it.** `fork` copies every handle, and
//!   safe code can reach a copy in the child (behind a `Mutex`, `RefCell`, `Arc` or
//!   `static`, or captured by a closure): parent and child would then write the same
//!   elements through "exclusive" references. So array handles ([`SharedNdArray`],
//!   [`ReadOnlyNdArray`], [`DynSharedArray`]), their views, and the lock guards
//!   ([`ArrayLockGuard`], [`StructGuard`], [`LockGuard`]) are bound to their process:
//!   - each records its *process token* when made: 64 random bits that a `pthread_atfork`
//!     child handler draws again in every forked child (a token, not a pid: after two
//!     forks a dead creator's pid can come back as a grandchild's, its token cannot).
//!     Infallible accessors (`view`, `view_mut`, `as_slice*`, `persist`, a guard's
//!     dereference) compare it — one relaxed load — and panic naming this rule in another
//!     process; fallible calls (`lock`, `save`, `unlink`, `prefault`, `into_typed`) return
//!     [`ErrorKind::WrongProcess`]. Dropping a copy in another process does nothing at
//!     all: no unlink, no unlock, no unmap;
//!   - a view is a plain `ndarray` view and cannot check anything, so array mappings are
//!     kept out of forked children altogether: `madvise(MADV_DONTFORK)`, and the same
//!     atfork child handler maps an inaccessible `PROT_NONE` placeholder over each of them
//!     in the child (so no later mapping of the child lands there). A view smuggled into a
//!     child faults (`SIGSEGV`, reported by the forking APIs as a failed chunk) instead of
//!     writing. The placeholders are recorded in a fixed table of
//!     1024 mappings per process; beyond it, new mappings are inherited as before and
//!     only the handle's token guards them (views of them are then unchecked in a child,
//!     as they were before: keep fewer arrays mapped at once if that matters);
//!   - the forking APIs hand children exactly what they need: [`fork_chunks`] and
//!     [`fork_chunks_into`] re-bind the arrays they borrow in each child (the mapping comes
//!     back at the same address) and give the closure views of them; pool workers map the
//!     job's arrays by name. Any other child attaches by name (`open`, under the promise
//!     above).
//!
//!   Sync and ipc objects whose shared state is atomic or lock-protected ([`SharedValue`],
//!   [`Lock`], [`Queue`], [`Pipe`] ends, [`SharedList`], [`SharedMap`], [`SharedStruct`])
//!   stay usable in forked children, as `Process(target=f, args=(q,))` expects; their copy's
//!   `Drop` in a child does nothing (it never unlinks the parent's name).
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
//! The forking APIs hand each child exactly what it needs: a `fork_chunks` child gets the
//! view of its chunk (and `fork_chunks_into`'s the input's view), re-bound to the child;
//! [`Process::spawn_with`] and [`Scope::spawn_with`] hand a child an array, which the
//! parent cannot use until the child has ended. Other array handles a closure captures
//! stay the parent's (see [Soundness](#soundness)). The parent waits through a pidfd taken
//! right after each fork and reads each child's outcome from shared memory, so results are
//! right even when `SIGCHLD` is ignored (the kernel then reaps the children itself).
//!
//! **Forking with other threads alive.** `fork` copies only the calling thread; a lock
//! another thread holds at that moment (stdout, a logger's, rayon's, a mutex) stays locked
//! in the child forever, and a closure that takes it hangs. So the forking APIs fork user
//! closures only from a process whose only thread is the caller, or after the one-time,
//! process-wide opt-in [`allow_fork_with_threads`], an `unsafe` promise that the forked
//! closures take no such lock (the same bargain as std's `CommandExt::pre_exec`).
//! Otherwise they return [`ErrorKind::ForkWithThreads`], naming the thread count and the
//! two fixes: fork before starting threads, or opt in. Refusing every multi-threaded fork
//! would rule out test harnesses, rayon-then-fork programs and MPI; forking silently would
//! turn a stray `println!` into a hang. ndshm's own forks that run only ndshm code (the
//! pool's workers, the [`CrashCleanup`] watchdog) need no opt-in.
//!
//! ```
//! use ndshm::{ChunkPlan, SharedNdArray, WorkerPool};
//! # let name = format!("doc-crate-pool-{}", std::process::id());
//! let mut pool = WorkerPool::new(2)?; // one worker process + the caller
//! let mut a = SharedNdArray::<f64, ndarray::Ix1>::from_elem(&name, 1000, 3.0)?;
//! let plan = ChunkPlan::balanced(a.len(), 4)?;
//! pool.map(&mut a, &plan, (), |_chunk, mut x, _: &()| x.mapv_inplace(|v| v * v))?;
//! ndshm::fork_chunks(&mut a, 2, |_chunk, mut x| x += 1.0)?; // any closure, one child per chunk
//! let child = ndshm::Process::spawn_with(a, |a| a.view_mut().fill(10.0))?; // hand it over
//! let a = child.join()?; // and get it back once the child has ended
//! assert!(a.as_slice().unwrap().iter().all(|&v| v == 10.0));
//! # Ok::<(), ndshm::Error>(())
//! ```
//! ## Beyond one machine
//! With the `mpi` feature, the `mpi` module runs the same [`ChunkPlan`] jobs on MPI ranks
//! across nodes, with one node-shared segment per node (node rank 0 creates it, the others
//! attach by name): `NodeComm::split`, `NodeArray::{for_each_chunk, map_reduce, replicate,
//! scatter, gather}`. Failures on any rank are agreed on collectively and reported on
//! every rank.
//!
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
//! [`gc`] removes the stale segments, [`stale`] lists them, and neither ever touches a live
//! owner's segment, a persistent one, or a file that is not an ndshm segment. Signal
//! handling is opt-in: with a [`SignalCleanup`] guard alive, Ctrl-C, `SIGTERM` or `SIGHUP`
//! stops and reaps the workers, unlinks the process's own segments and re-raises the
//! signal. [`die_with_parent`] makes a worker die with its parent, and a [`CrashCleanup`]
//! watchdog removes a process's segments even when it is killed with `SIGKILL`.
//!
//! **A resource is taken over only from a provably dead owner.** Whether a process runs is
//! never read from `/proc` (pid namespaces, `hidepid` or a missing `/proc` hide live
//! processes, and pids are reused): each process holds a *lease*, an open-file-description
//! lock on one byte of `/dev/shm/.ndshm-lease-v2-<uid>` that the kernel drops when the process
//! exits, however it ends. Segment trailers, queue slots and temporary segments record the
//! lease of whoever holds them, and every decision reads it as [`OwnerStatus`]: **Alive**
//! (lease held), **Dead** (released: only then is anything removed or recovered) or
//! **Unknown** (no lease recorded, lease file unreadable: callers wait and `gc` leaves it).
//! The robust locks rest on the kernel's robust futexes in the same way.
//!
//! This holds across containers that share `/dev/shm` — Docker `--ipc=shareable` /
//! `--ipc=container:<id>`, `--ipc=host`, Kubernetes pods sharing a memory-backed
//! (`medium: Memory`) volume mounted at `/dev/shm` — whatever their pid namespaces: a live
//! owner in another container is alive, and `ndshm ls` says "alive, in another pid
//! namespace (pid N there)" (its pid means nothing here). Containers whose user
//! namespaces map uids differently see each other's owners as Unknown: nothing is taken
//! over, `gc` keeps their segments. Do not remove `/dev/shm/.ndshm-lease-v2-<uid>` (mind
//! `rm /dev/shm/*`) while ndshm processes of that uid run: their leases live in it. A file
//! removed and made again carries a new random tag, so the old leases then read Unknown
//! (nothing is recovered from those processes until they exit), never Dead.
//!
//! ## Errors
//! One error type, [`Error`], with a [`#[non_exhaustive]`](ErrorKind) kind, a message that
//! says what was wrong and how to fix it, and the OS error as its source.
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod array;
mod element;
mod error;
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
pub use ipc::array_queue::ArrayQueue;
pub use ipc::pipe::{Connection, Pipe};
pub use ipc::queue::{
    ByteQueue, GetError, GetTimeoutError, PutError, PutTimeoutError, Queue, TryGetError,
    TryPutError,
};
pub use lifecycle::gc::{gc, gc_matching, stale};
pub use lifecycle::info::{info, list, OwnerStatus, SegmentInfo};
pub use lifecycle::signals::{die_with_parent, SignalCleanup};
pub use lifecycle::watchdog::CrashCleanup;
pub use manager::list::SharedList;
pub use manager::map::{KeyBytes, MapKey, SharedMap, MAX_KEY_LEN};
pub use manager::shared_struct::{SharedStruct, StructGuard};
pub use parallel::chunk::{Chunk, ChunkPlan, CACHE_LINE, MAX_CHUNKS};
pub use parallel::fork_chunks::{
    fork_chunks, fork_chunks_into, fork_chunks_with, MAX_FORKED_CHUNKS,
};
pub use parallel::pool::{
    WorkerPool, CACHE_ENTRIES, MAX_DIMS, MAX_PARAMS, MAX_RESULTS, MAX_WORKERS,
};
pub use parallel::process::{
    allow_fork_with_threads, scope, write_stdout, ChildResult, Process, ProcessWith, Scope,
    SpawnWithError,
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

/// Re-export of the `ndarray` version ndshm's views come from.
pub use ndarray;
