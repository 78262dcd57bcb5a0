//! Running code over arrays in several processes.
//!
//! - `chunk.rs`: [`ChunkPlan`](chunk::ChunkPlan) and [`Chunk`](chunk::Chunk), how an axis
//!   is split into disjoint index ranges, and [`IntoChunkPlan`](chunk::IntoChunkPlan) (a
//!   count or a plan);
//! - `process.rs`: the one place that forks user closures: [`Process`](process::Process),
//!   [`scope`](process::scope), the child's report and the fork-with-threads rule;
//! - `fork_chunks.rs`: fork per call, one child per chunk
//!   ([`fork_chunks`](fork_chunks::fork_chunks), `fork_chunks_into`);
//! - `pool/`: the warm [`WorkerPool`](pool::WorkerPool) (control block, job trampolines,
//!   worker loop, fork server, progress bar).
//!
//! OS calls go through `sys/`; the only `unsafe` code here is the pool's job trampolines.

pub(crate) mod chunk;
pub(crate) mod fork_chunks;
pub(crate) mod pool;
pub(crate) mod process;
