//! The seed's squared-slice job on MPI ranks, one shared segment per node.
//!
//! ```text
//! cargo build --release --features mpi --example squares_mpi
//! mpiexec -n 4 target/release/examples/squares_mpi --size 10000000
//! # two logical nodes of two ranks on one machine:
//! mpiexec -n 4 -genv NDSHM_MPI_RANKS_PER_NODE 2 target/release/examples/squares_mpi
//! ```
//! Rank 0 fills `0..n`, replicates it to every node (one copy per node, in `/dev/shm`), every
//! rank squares its chunks in place, the nodes' blocks are gathered on rank 0 and checked
//! against a serial run, and a map-reduce sums the squares. Each node leader counts the
//! ndshm segments of this job in its `/dev/shm` (trailers, not files: MPICH and UCX make
//! files there too) and checks it holds exactly one per node sharing that `/dev/shm`.

use std::time::Instant;

use ndarray::{Array1, Ix1};
use ndshm::mpi::{rsmpi, NodeArray, NodeComm, RANKS_PER_NODE_ENV};
use ndshm::ChunkPlan;
use rsmpi::traits::*;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number, not {v:?}"))
        })
        .unwrap_or(default)
}

fn main() -> ndshm::Result<()> {
    let size = arg("--size", 1_000_000);
    let chunks = arg("--chunks", 64);
    let universe = rsmpi::initialize().expect("MPI initialises once");
    let world = universe.world();
    let comm = NodeComm::split(&world)?;
    let rank = comm.world_rank();

    let mut a = NodeArray::<f64, Ix1>::zeros(&comm, size)?;
    let plan = ChunkPlan::balanced(size, chunks)?;
    let input = (rank == 0).then(|| Array1::range(0.0, size as f64, 1.0));

    let t = Instant::now();
    a.replicate(input.as_ref().map(|x| x.view()))?;
    let replicate = t.elapsed();
    let t = Instant::now();
    a.for_each_chunk(&plan, |_, mut x| x.mapv_inplace(|v| v * v))?;
    let square = t.elapsed();
    let sums = a.map_reduce(&plan, |_, x| x.sum())?;
    let gathered = a.gather(&plan)?;

    // Segments of this job in this node's /dev/shm (ndshm trailers only).
    let prefix = a.name().rsplit_once("-node").map(|(p, _)| p.to_string());
    let prefix = prefix.expect("node array names end in -node<N>");
    let here = ndshm::list()?
        .into_iter()
        .filter(|s| s.name.starts_with(&prefix))
        .count();
    let sharing = if std::env::var(RANKS_PER_NODE_ENV).is_ok() {
        comm.nodes() // logical nodes on one machine share one /dev/shm
    } else {
        1
    };
    let seg_ok = !comm.is_leader() || here == sharing;
    let mut all_ok = [u32::from(seg_ok)];
    let mut ok = [0u32];
    world.all_reduce_into(
        &all_ok[..],
        &mut ok[..],
        rsmpi::collective::SystemOperation::min(),
    );
    all_ok[0] = ok[0];

    if comm.is_leader() {
        println!(
            "node {} ({}): {} rank(s), segment {} — {here} ndshm segment(s) of this job in /dev/shm (expected {sharing})",
            comm.node_index(),
            comm.host(),
            comm.node_size(),
            a.name()
        );
    }
    if let Some(g) = gathered {
        let serial = Array1::range(0.0, size as f64, 1.0).mapv(|v| v * v);
        assert_eq!(g, serial, "the gathered result differs from the serial run");
        let total: f64 = sums.iter().sum();
        let expect: f64 = serial.sum();
        assert!(
            (total - expect).abs() <= expect * 1e-12,
            "{total} vs {expect}"
        );
        println!(
            "{} ranks on {} node(s), {size} f64: replicate {:.1} ms, square {:.1} ms; result = serial run: yes; one segment per node: {}",
            comm.world_size(),
            comm.nodes(),
            replicate.as_secs_f64() * 1e3,
            square.as_secs_f64() * 1e3,
            if all_ok[0] == 1 { "yes" } else { "NO" }
        );
    }
    a.free();
    if all_ok[0] != 1 {
        std::process::exit(1);
    }
    Ok(())
}
