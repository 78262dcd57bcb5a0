//! Node-shared arrays and chunked jobs across MPI ranks (feature `mpi`).
//!
//! When one machine is not enough, the same [`ChunkPlan`] and the same per-chunk function
//! run on MPI ranks across nodes, and within a node the ranks share **one** ndshm segment
//! instead of holding copies — the design `pshmem` (TOAST) converged on, and the mpi4py
//! pattern `Split_type(COMM_TYPE_SHARED)` + `Win.Allocate_shared` + `Shared_query(0)`.
//! ndshm's node segments are named, so non-MPI processes and numpy can attach to a node's
//! array too.
//!
//! - [`NodeComm::split`] splits the world into nodes (`MPI_Comm_split_type(SHARED)`; for
//!   tests on one machine, `NDSHM_MPI_RANKS_PER_NODE=k` makes logical nodes of `k`
//!   consecutive ranks instead).
//! - [`NodeArray`]: node rank 0 creates the segment (a name unique per job, array and
//!   node), broadcasts the name, the node's other ranks attach; the leader's handle owns the
//!   name, so it is unlinked when the leader drops it, and a rank killed mid-job leaves a
//!   segment whose owner is dead, which `ndshm gc` reclaims.
//! - Jobs: [`NodeArray::for_each_chunk`] (in place) and [`NodeArray::map_reduce`] (per-chunk
//!   `Pod` results, all-gathered so every rank gets them in chunk order). The plan is split
//!   across nodes (contiguous blocks of chunks), then round-robin across a node's ranks.
//!   A chunk's failure (panic or error) on any rank is agreed on with a collective and
//!   reported on every rank, naming the rank, host and chunk: no rank hangs in a collective
//!   because another failed.
//! - Data movement: [`NodeArray::replicate`] (rank 0's array to every node, pshmem's
//!   `set`), [`NodeArray::scatter`] / [`NodeArray::gather`] (each node's block of a plan
//!   from and to rank 0).
//!
//! # Examples
//! A whole job: every rank runs this program (`mpiexec -n 4 ./job`); each node holds one
//! copy of the array, every rank squares its chunks in place, and every rank gets the
//! per-chunk sums in chunk order.
//! ```no_run
//! use ndshm::mpi::{rsmpi, NodeArray, NodeComm};
//! use ndshm::{ndarray::Ix1, ChunkPlan};
//!
//! fn main() -> ndshm::Result<()> {
//!     let universe = rsmpi::initialize().expect("MPI is initialised once");
//!     let comm = NodeComm::split(&universe.world())?;
//!     let mut a = NodeArray::<f64, Ix1>::zeros(&comm, 1_000_000)?;
//!     let plan = ChunkPlan::balanced(1_000_000, 64)?;
//!     // Rank 0's data to every node, then the same job on every rank's chunks.
//!     let data = ndshm::ndarray::Array1::range(0.0, 1e6, 1.0);
//!     a.replicate((comm.world_rank() == 0).then(|| data.view()))?;
//!     a.for_each_chunk(&plan, |_chunk, mut x| x.mapv_inplace(|v| v * v))?;
//!     let sums: Vec<f64> = a.map_reduce(&plan, |_chunk, x| x.sum())?;
//!     if comm.world_rank() == 0 {
//!         println!("{} nodes, sum of squares {}", comm.nodes(), sums.iter().sum::<f64>());
//!     }
//!     a.free(); // collective: the node leaders unlink their segments
//!     Ok(())
//! }
//! ```
//!
//! # Who may write when
//! Writes to a node array happen only inside its `&mut self` collectives, each of which
//! starts with a node barrier (every rank of the node has dropped its views of the array
//! and called in) and ends with a world-wide agreement (every rank has finished writing).
//! Between collectives nobody writes, so [`NodeArray::view`] is sound on every rank.
//!
//! # Running
//! MPICH: `mpiexec -n 4 target/release/examples/squares_mpi`. Open MPI refuses to run as
//! root without `OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1`, and in
//! containers needs `OMPI_MCA_btl_vader_single_copy_mechanism=none`. A [`WorkerPool`]
//! inside a rank must be created before `mpi::initialize` (MPI starts threads).
//! Batch systems and containers often cap `/dev/shm` (Docker's default is 64 MiB:
//! `--shm-size`); one copy of the array per node must fit there.
//!
//! [`WorkerPool`]: crate::WorkerPool

use std::panic::{catch_unwind, AssertUnwindSafe};

use ::mpi::collective::SystemOperation;
use ::mpi::datatype::PartitionMut;
use ::mpi::topology::{Color, SimpleCommunicator};
use ::mpi::traits::*;
use ::mpi::Count;
use bytemuck::Pod;
use ndarray::{ArrayView, ArrayViewMut, Dimension, IntoDimension};

use crate::array::SharedNdArray;
use crate::element::Element;
use crate::error::{Error, ErrorKind, Result};
use crate::parallel::chunk::{Chunk, ChunkPlan};
use crate::parallel::process::ChildResult;

/// Re-export of the rsmpi version this module is built on.
pub use ::mpi as rsmpi;

/// Environment variable: when set to `k`, nodes are groups of `k` consecutive world ranks
/// instead of the ranks that share memory (for tests of several nodes on one machine).
pub const RANKS_PER_NODE_ENV: &str = "NDSHM_MPI_RANKS_PER_NODE";

/// Largest piece one MPI call moves (counts are `int`).
const PIECE: usize = 1 << 30;

/// The world split into nodes: this rank's node communicator, the leaders' communicator
/// (node rank 0 of every node), and where this rank stands.
pub struct NodeComm {
    world: SimpleCommunicator,
    node: SimpleCommunicator,
    leaders: Option<SimpleCommunicator>,
    node_index: usize,
    nodes: usize,
    job: u64,
    arrays: std::cell::Cell<u64>,
    host: String,
}

impl std::fmt::Debug for NodeComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeComm")
            .field("world_rank", &self.world_rank())
            .field("world_size", &self.world_size())
            .field("node", &self.node_index)
            .field("nodes", &self.nodes)
            .field("node_rank", &self.node_rank())
            .field("node_size", &self.node_size())
            .field("host", &self.host)
            .finish()
    }
}

fn mpi_err(what: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidArgument, what)
}

impl NodeComm {
    /// Splits `world` into nodes (collective over `world`).
    ///
    /// Nodes are the groups of ranks that share memory (`MPI_Comm_split_type` with
    /// `MPI_COMM_TYPE_SHARED`), or, when [`RANKS_PER_NODE_ENV`] is set to `k`, groups of `k`
    /// consecutive ranks. Ranks keep their world order inside a node, so world rank 0 is
    /// the leader of node 0.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when [`RANKS_PER_NODE_ENV`] is set but not a positive
    /// integer (every rank reads the same environment under `mpiexec`).
    pub fn split(world: &SimpleCommunicator) -> Result<NodeComm> {
        let rank = world.rank();
        let node = match std::env::var(RANKS_PER_NODE_ENV) {
            Ok(v) => {
                let k: i32 = v.trim().parse().ok().filter(|&k| k > 0).ok_or_else(|| {
                    mpi_err(format!(
                        "{RANKS_PER_NODE_ENV}={v:?} is not a positive number of ranks per node"
                    ))
                })?;
                world
                    .split_by_color_with_key(Color::with_value(rank / k), rank)
                    .ok_or_else(|| mpi_err("MPI_Comm_split returned no communicator"))?
            }
            Err(_) => world.split_shared(rank),
        };
        let leader = node.rank() == 0;
        let color = if leader {
            Color::with_value(0)
        } else {
            Color::undefined()
        };
        let leaders = world.split_by_color_with_key(color, rank);
        let mut info = [0u64; 2];
        if let Some(l) = &leaders {
            info = [l.rank() as u64, l.size() as u64];
        }
        node.process_at_rank(0).broadcast_into(&mut info[..]);
        let mut job = [0u64];
        if rank == 0 {
            job[0] = crate::sys::proc::random_u64();
        }
        world.process_at_rank(0).broadcast_into(&mut job[..]);
        Ok(NodeComm {
            world: world.duplicate(),
            node,
            leaders,
            node_index: info[0] as usize,
            nodes: info[1] as usize,
            job: job[0],
            arrays: std::cell::Cell::new(0),
            host: ::mpi::environment::processor_name().unwrap_or_else(|_| "?".into()),
        })
    }

    /// This rank in the world.
    pub fn world_rank(&self) -> usize {
        self.world.rank() as usize
    }

    /// Number of ranks in the world.
    pub fn world_size(&self) -> usize {
        self.world.size() as usize
    }

    /// This rank's node (0-based).
    pub fn node_index(&self) -> usize {
        self.node_index
    }

    /// Number of nodes.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// This rank within its node.
    pub fn node_rank(&self) -> usize {
        self.node.rank() as usize
    }

    /// Number of ranks on this rank's node.
    pub fn node_size(&self) -> usize {
        self.node.size() as usize
    }

    /// Whether this rank is its node's leader (node rank 0), which owns the node's segments.
    pub fn is_leader(&self) -> bool {
        self.leaders.is_some()
    }

    /// The node's host name, as MPI reports it.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The world communicator (a duplicate of the one passed to [`split`](Self::split)).
    pub fn world(&self) -> &SimpleCommunicator {
        &self.world
    }

    /// The node communicator.
    pub fn node(&self) -> &SimpleCommunicator {
        &self.node
    }

    /// The chunks of `plan` this rank runs: the plan is split into contiguous blocks of
    /// chunks, one per node, and a node's block is dealt round-robin to its ranks.
    pub fn my_chunks<'p>(&self, plan: &'p ChunkPlan) -> impl Iterator<Item = Chunk> + 'p {
        let (start, end) = node_block(plan.num_chunks(), self.nodes, self.node_index);
        let (r, n) = (self.node_rank(), self.node_size());
        (start..end)
            .filter(move |i| (i - start) % n == r)
            .filter_map(move |i| plan.get(i))
    }

    /// Agrees on a local outcome across the world: every rank learns whether any failed,
    /// and the failures' messages. Collective.
    fn agree(&self, local: Vec<String>) -> Result<()> {
        let mine = local.join("\n");
        let failed = [u32::from(!mine.is_empty())];
        let mut any = [0u32];
        self.world
            .all_reduce_into(&failed[..], &mut any[..], SystemOperation::max());
        if any[0] == 0 {
            return Ok(());
        }
        let all = all_gather_bytes(&self.world, mine.as_bytes());
        let msgs: Vec<String> = all
            .into_iter()
            .filter(|m| !m.is_empty())
            .map(|m| String::from_utf8_lossy(&m).into_owned())
            .collect();
        Err(Error::new(ErrorKind::WorkerFailed, msgs.join("\n")))
    }

    /// Agrees on one step that some ranks take (`Some(outcome)`) and others skip (`None`):
    /// collective; every rank gets the error when any rank's step failed, naming it.
    fn agree_on<A>(&self, what: &str, outcome: Option<Result<A>>) -> Result<Option<A>> {
        let mut failure = Vec::new();
        let value = match outcome {
            None => None,
            Some(Ok(a)) => Some(a),
            Some(Err(e)) => {
                failure.push(format!(
                    "rank {} on {} {what}: {e}",
                    self.world_rank(),
                    self.host
                ));
                None
            }
        };
        self.agree(failure)?;
        Ok(value)
    }

    fn next_name(&self) -> String {
        let n = self.arrays.get();
        self.arrays.set(n + 1);
        format!("ndshm-mpi-{:016x}-{n}-node{}", self.job, self.node_index)
    }
}

/// Chunks `[start, end)` of node `node` when `chunks` chunks are split over `nodes` nodes.
fn node_block(chunks: usize, nodes: usize, node: usize) -> (usize, usize) {
    (chunks * node / nodes, chunks * (node + 1) / nodes)
}

/// Every rank's bytes, in rank order (collective).
fn all_gather_bytes(comm: &SimpleCommunicator, mine: &[u8]) -> Vec<Vec<u8>> {
    let size = comm.size() as usize;
    let len = [mine.len() as Count];
    let mut lens = vec![0 as Count; size];
    comm.all_gather_into(&len[..], &mut lens[..]);
    let displs: Vec<Count> = lens
        .iter()
        .scan(0, |acc, &l| {
            let d = *acc;
            *acc += l;
            Some(d)
        })
        .collect();
    let total: usize = lens.iter().map(|&l| l as usize).sum();
    let mut buf = vec![0u8; total];
    {
        let mut part = PartitionMut::new(&mut buf[..], lens.clone(), &displs[..]);
        comm.all_gather_varcount_into(mine, &mut part);
    }
    lens.iter()
        .zip(&displs)
        .map(|(&l, &d)| buf[d as usize..(d + l) as usize].to_vec())
        .collect()
}

/// One array per node, in a named ndshm segment shared by the node's ranks.
pub struct NodeArray<'c, T: Element, D: Dimension> {
    comm: &'c NodeComm,
    array: SharedNdArray<T, D>,
}

impl<T: Element, D: Dimension> std::fmt::Debug for NodeArray<'_, T, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeArray")
            .field("name", &self.array.name())
            .field("shape", &self.array.shape())
            .field("node", &self.comm.node_index)
            .finish()
    }
}

impl<'c, T: Element, D: Dimension> NodeArray<'c, T, D> {
    /// A zeroed array of `shape` on every node (collective over the world).
    ///
    /// # Errors
    /// The leader's creation error (e.g. [`ErrorKind::NoSpace`] when `/dev/shm` cannot
    /// hold the array), or an attach error, reported on every rank.
    pub fn zeros(comm: &'c NodeComm, shape: impl IntoDimension<Dim = D>) -> Result<Self> {
        let shape = shape.into_dimension();
        let name = comm.next_name();
        let created = comm.agree_on(
            &format!("could not create node array '{name}'"),
            comm.is_leader()
                .then(|| SharedNdArray::<T, D>::zeros(&name, shape.clone())),
        )?;
        // Attach only once the leader has published (or failed): the agreement above comes
        // first, so nobody waits for a segment that will never exist.
        let attached = comm.agree_on(
            &format!("could not attach node array '{name}'"),
            created.is_none().then(|| {
                // SAFETY: every rank of the node writes the array only inside the `&mut self`
                // collectives of `NodeArray`, which split the work into disjoint chunks and
                // fence with barriers (module docs, "Who may write when").
                unsafe { SharedNdArray::<T, D>::open(&name) }
            }),
        )?;
        let array = created
            .or(attached)
            .expect("created or attached, or agree_on returned the error");
        Ok(NodeArray { comm, array })
    }

    /// The segment name of this node's copy (numpy and other processes can attach to it).
    pub fn name(&self) -> &str {
        self.array.name()
    }

    /// The array's shape.
    pub fn shape(&self) -> &[usize] {
        self.array.shape()
    }

    /// A read-only view of this node's copy. Sound between collectives: nobody writes then.
    pub fn view(&self) -> ArrayView<'_, T, D> {
        self.array.view()
    }

    /// Runs `f` on this rank's chunks of `plan` in place (collective over the world).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when the plan does not fit the shape (on every rank);
    /// [`ErrorKind::WorkerFailed`] on every rank when a chunk panicked or returned an error
    /// on any rank, naming rank, host and chunk.
    pub fn for_each_chunk<F, R>(&mut self, plan: &ChunkPlan, f: F) -> Result<()>
    where
        F: Fn(Chunk, ArrayViewMut<'_, T, D>) -> R,
        R: ChildResult,
    {
        plan.check_shape(self.array.shape(), "node array", self.array.name())?;
        self.comm.node.barrier();
        let comm = self.comm;
        let mut failures = Vec::new();
        for chunk in comm.my_chunks(plan) {
            let view = chunk.of_mut(self.array.view_mut());
            let outcome = catch_unwind(AssertUnwindSafe(|| f(chunk, view).into_message()));
            if let Some(why) = describe(outcome) {
                failures.push(chunk_failure(comm, &chunk, &why));
            }
        }
        comm.agree(failures)
    }

    /// Runs `f` on this rank's chunks of `plan` and gathers the results on every rank, in
    /// chunk order (collective over the world). Reads only: the array is unchanged.
    ///
    /// # Errors
    /// As [`for_each_chunk`](Self::for_each_chunk).
    pub fn map_reduce<F, R>(&self, plan: &ChunkPlan, f: F) -> Result<Vec<R>>
    where
        F: Fn(Chunk, ArrayView<'_, T, D>) -> R,
        R: Pod,
    {
        plan.check_shape(self.array.shape(), "node array", self.array.name())?;
        let comm = self.comm;
        let mut failures = Vec::new();
        let mut mine: Vec<u8> = Vec::new();
        let whole = self.array.view();
        for chunk in comm.my_chunks(plan) {
            let view = chunk.of(&whole);
            match catch_unwind(AssertUnwindSafe(|| f(chunk, view))) {
                Ok(r) => {
                    mine.extend_from_slice(&(chunk.index as u64).to_le_bytes());
                    mine.extend_from_slice(bytemuck::bytes_of(&r));
                }
                Err(p) => failures.push(chunk_failure(comm, &chunk, &panic_text(&p))),
            }
        }
        comm.agree(failures)?;
        let mut out: Vec<Option<R>> = vec![None; plan.num_chunks()];
        let rec = 8 + std::mem::size_of::<R>();
        for part in all_gather_bytes(&comm.world, &mine) {
            for item in part.chunks_exact(rec) {
                let i = u64::from_le_bytes(item[..8].try_into().expect("8 bytes")) as usize;
                out[i] = Some(bytemuck::pod_read_unaligned(&item[8..]));
            }
        }
        out.into_iter()
            .enumerate()
            .map(|(i, r)| {
                r.ok_or_else(|| {
                    Error::new(
                        ErrorKind::WorkerFailed,
                        format!("no rank returned a result for chunk {i}"),
                    )
                })
            })
            .collect()
    }

    /// Copies `data` from world rank 0 into every node's copy (pshmem's `set`; collective).
    /// `data` is read on rank 0 only (others pass `None`).
    ///
    /// # Errors
    /// [`ErrorKind::ShapeMismatch`] when rank 0's `data` is missing or has another shape
    /// (reported on every rank).
    pub fn replicate(&mut self, data: Option<ArrayView<'_, T, D>>) -> Result<()> {
        let comm = self.comm;
        self.comm.node.barrier();
        let mut failure = Vec::new();
        if comm.world_rank() == 0 {
            match &data {
                Some(d) if d.shape() == self.array.shape() => {
                    for (dst, src) in self.array.view_mut().iter_mut().zip(d.iter()) {
                        *dst = *src;
                    }
                }
                _ => failure.push(format!(
                    "rank 0 must pass data of shape {:?} to replicate",
                    self.array.shape()
                )),
            }
        }
        comm.agree(failure)
            .map_err(|e| Error::new(ErrorKind::ShapeMismatch, e.message()))?;
        if let Some(leaders) = &comm.leaders {
            let bytes: &mut [u8] = bytemuck::cast_slice_mut(self.array.as_slice_memory_order_mut());
            for piece in bytes.chunks_mut(PIECE) {
                leaders.process_at_rank(0).broadcast_into(piece);
            }
        }
        comm.agree(Vec::new())
    }

    /// Copies each node's block of `plan` (its run of consecutive chunks, as for the jobs;
    /// any plan, tiles included) from world rank 0 into that node's copy (collective).
    /// `data` is read on rank 0 only.
    ///
    /// # Errors
    /// As [`replicate`](Self::replicate), plus a plan that does not fit the shape.
    pub fn scatter(&mut self, plan: &ChunkPlan, data: Option<ArrayView<'_, T, D>>) -> Result<()> {
        plan.check_shape(self.array.shape(), "node array", self.array.name())?;
        let comm = self.comm;
        comm.node.barrier();
        let mut failure = Vec::new();
        if comm.world_rank() == 0 && data.as_ref().map(|d| d.shape()) != Some(self.array.shape()) {
            failure.push(format!(
                "rank 0 must pass data of shape {:?} to scatter",
                self.array.shape()
            ));
        }
        comm.agree(failure)
            .map_err(|e| Error::new(ErrorKind::ShapeMismatch, e.message()))?;
        if let Some(leaders) = &comm.leaders {
            let shape = self.array.shape().to_vec();
            for node in 0..comm.nodes {
                let block = node_chunks(plan, comm.nodes, node);
                if comm.node_index == 0 && node == 0 {
                    let src = data.as_ref().expect("checked");
                    for c in block {
                        c.of_mut(self.array.view_mut())
                            .zip_mut_with(&c.of(src), |d, s| *d = *s);
                    }
                } else if comm.node_index == 0 {
                    let src = data.as_ref().expect("checked");
                    let mut items: Vec<T> = Vec::new();
                    for c in block {
                        items.extend(c.of(src).iter().copied());
                    }
                    send_pieces(leaders, node as i32, bytemuck::cast_slice(&items));
                } else if comm.node_index == node {
                    let n = block.clone().map(|c| c.num_elements_in(&shape)).sum();
                    let mut items = vec![T::zeroed(); n];
                    recv_pieces(leaders, 0, bytemuck::cast_slice_mut(&mut items));
                    let mut from = items.into_iter();
                    for c in block {
                        for (d, s) in c.of_mut(self.array.view_mut()).iter_mut().zip(&mut from) {
                            *d = s;
                        }
                    }
                }
            }
        }
        comm.agree(Vec::new())
    }

    /// Collects each node's block of `plan` from its node's copy into a new array on world
    /// rank 0 (`Some` there, `None` elsewhere; collective).
    ///
    /// # Errors
    /// A plan that does not fit the shape.
    pub fn gather(&self, plan: &ChunkPlan) -> Result<Option<ndarray::Array<T, D>>> {
        plan.check_shape(self.array.shape(), "node array", self.array.name())?;
        let comm = self.comm;
        let mut out = None;
        if let Some(leaders) = &comm.leaders {
            let shape = self.array.shape();
            if comm.node_index == 0 {
                let mut all = self.array.view().to_owned();
                for node in 1..comm.nodes {
                    let block = node_chunks(plan, comm.nodes, node);
                    let n = block.clone().map(|c| c.num_elements_in(shape)).sum();
                    let mut items = vec![T::zeroed(); n];
                    recv_pieces(leaders, node as i32, bytemuck::cast_slice_mut(&mut items));
                    let mut from = items.into_iter();
                    for c in block {
                        for (d, s) in c.of_mut(all.view_mut()).iter_mut().zip(&mut from) {
                            *d = s;
                        }
                    }
                }
                out = Some(all);
            } else {
                let whole = self.array.view();
                let mut items: Vec<T> = Vec::new();
                for c in node_chunks(plan, comm.nodes, comm.node_index) {
                    items.extend(c.of(&whole).iter().copied());
                }
                send_pieces(leaders, 0, bytemuck::cast_slice(&items));
            }
        }
        comm.agree(Vec::new())?;
        Ok(out.filter(|_| comm.world_rank() == 0))
    }

    /// Ends the array collectively (over the world): every rank has stopped using it
    /// before the leader unlinks the segment. (Dropping without `free` is fine too: the
    /// leader's drop unlinks the name, other ranks keep their mappings until they drop
    /// theirs.)
    ///
    /// The barriers (node, then world) also let every rank finish its communication before
    /// any rank enters `MPI_Finalize`. Note: MPICH 4.0 over UCX's TCP transport was seen to
    /// hang in `MPI_Finalize` across simulated nodes (network namespaces) in about half the
    /// runs, after the job had finished correctly; `tests/mpi.rs` checks the job by what the
    /// ranks report before finalizing.
    pub fn free(self) {
        self.comm.node.barrier();
        self.comm.world.barrier();
    }
}

/// The chunks of node `node`'s block of `plan` (a run of consecutive chunks; a tile plan's
/// run need not be a rectangle, so data moves chunk by chunk, in chunk order).
fn node_chunks(
    plan: &ChunkPlan,
    nodes: usize,
    node: usize,
) -> impl Iterator<Item = Chunk> + Clone + '_ {
    let (s, e) = node_block(plan.num_chunks(), nodes, node);
    (s..e).filter_map(move |i| plan.get(i))
}

fn send_pieces(comm: &SimpleCommunicator, to: i32, bytes: &[u8]) {
    for piece in bytes.chunks(PIECE) {
        comm.process_at_rank(to).send(piece);
    }
}

fn recv_pieces(comm: &SimpleCommunicator, from: i32, bytes: &mut [u8]) {
    for piece in bytes.chunks_mut(PIECE) {
        comm.process_at_rank(from).receive_into(piece);
    }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| format!("panicked: {s}"))
        .or_else(|| p.downcast_ref::<String>().map(|s| format!("panicked: {s}")))
        .unwrap_or_else(|| "panicked".into())
}

fn describe(outcome: std::thread::Result<std::result::Result<(), String>>) -> Option<String> {
    match outcome {
        Ok(Ok(())) => None,
        Ok(Err(msg)) => Some(format!("returned an error: {msg}")),
        Err(p) => Some(panic_text(&p)),
    }
}

fn chunk_failure(comm: &NodeComm, chunk: &Chunk, why: &str) -> String {
    format!(
        "{chunk} on rank {} (node {}, host {}) {why}",
        comm.world_rank(),
        comm.node_index,
        comm.host
    )
}

#[cfg(test)]
mod tests {
    use super::node_block;

    #[test]
    fn node_blocks_cover_the_plan_in_order() {
        for chunks in 0..40 {
            for nodes in 1..6 {
                let mut at = 0;
                for n in 0..nodes {
                    let (s, e) = node_block(chunks, nodes, n);
                    assert_eq!(s, at);
                    assert!(e >= s);
                    at = e;
                }
                assert_eq!(at, chunks);
            }
        }
    }
}
