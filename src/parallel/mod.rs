//! Running code over arrays in several processes: chunk plans ([`ChunkPlan`](chunk::ChunkPlan)),
//! one forked child per chunk ([`fork_chunks`](fork_chunks::fork_chunks)), processes and
//! scopes ([`Process`](process::Process), [`scope`](process::scope)), and the warm
//! [`WorkerPool`](pool::WorkerPool).

pub(crate) mod chunk;
pub(crate) mod fork_chunks;
pub(crate) mod pool;
pub(crate) mod process;
