//! The figures of the MPI module (issue 12), each measured by this one program, printed
//! as one table.
//!
//! ```text
//! cargo build --release --features mpi --example mpi_figures
//! target/release/examples/mpi_figures            # every figure: 800 MB, ~1e8 f64 per rank
//! target/release/examples/mpi_figures --quick    # small sizes, a few seconds (tests/mpi.rs)
//! ```
//! Without a subcommand it is the conductor: it runs the rank programs below under
//! `mpiexec` (and the forked pool without MPI), collects what they report and prints the
//! table. The subcommands are the rank programs, usable by hand:
//!
//! - `share` (under `mpiexec -n 4`): rank 0 holds an array of `--size` f64; every rank of
//!   the node gets it and reads every element once, three ways — an ndshm segment whose
//!   name rank 0 broadcasts (the others attach), a `NodeArray` that rank 0 fills from its
//!   private copy (`replicate`), and `MPI_Bcast` into every rank's private buffer. It
//!   times each (median of `--reps`, from a barrier to a barrier) and, while every rank
//!   still holds its array, sums every rank's PSS from `/proc/self/smaps_rollup` on rank 0
//!   (RSS beside it: RSS counts a shared page once per rank that maps it).
//! - `scale` (under `mpiexec -n K`, or `scripts/simnodes/run.sh NODES PPN`): the squares
//!   job with `--per-rank` f64 per rank (weak scaling), `NodeArray::for_each_chunk`,
//!   median of `--reps`.
//! - `pool --executors K`: the same per-executor work on a forked `WorkerPool` of K
//!   executors, no MPI: the baseline of the overhead figure.
//! - `waits` (under `mpiexec -n 4`): rank 0 computes while the others wait in a barrier
//!   (`--spin`: a blocking `MPI_Barrier`); what the waiters cost the rank that works.
//!
//! Waiting without burning a core: MPICH 4.0 over UCX (Debian 12) busy-polls in every
//! blocking call, and no setting of that build made a wait yield here
//! (`MPIR_CVAR_POLLS_BEFORE_YIELD` belongs to the old ch3 device, CH4 ignores it;
//! `MPIR_CVAR_ASYNC_PROGRESS=1` adds a progress thread that spins too). With 4 ranks on 2
//! cores a spinning rank takes a core from one that works, so the barriers that start and
//! end each timed region here are `MPI_Ibarrier`, tested between sleeps of 10 µs doubling
//! to 500 µs (`--spin`: blocking barriers). The library's own collectives inside a timed
//! region still spin: that cost is part of the scaling and overhead figures.
//!
//! Results, the machine they were measured on and the settings tried: `docs/mpi.md`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use ndarray::{ArrayViewMut1, Ix1};
use ndshm::mpi::{rsmpi, NodeArray, NodeComm};
use ndshm::{Chunk, ChunkPlan, CreateOptions, SharedNdArray, WorkerPool};
use rsmpi::topology::SimpleCommunicator;
use rsmpi::traits::*;

#[derive(Parser, Debug)]
#[command(about = "The MPI figures: memory per node, time to share, weak scaling, overhead")]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Small sizes (4 MB shared, 250,000 f64 per rank, 3 repetitions), for tests.
    #[arg(long)]
    quick: bool,
    /// Megabytes (1e6 bytes) of the shared array [default: 800, or 4 with --quick].
    #[arg(long)]
    size_mb: Option<usize>,
    /// f64 per rank in the weak-scaling job [default: 25000000, or 250000 with --quick].
    #[arg(long)]
    per_rank: Option<usize>,
    /// Timed repetitions (the median is shown) [default: 5, or 3 with --quick].
    #[arg(long)]
    reps: Option<usize>,
    /// Skip the two simulated nodes (they need root, `ip` and `unshare`).
    #[arg(long)]
    no_simnodes: bool,
    /// Use blocking MPI barriers around the timed regions (they busy-poll).
    #[arg(long)]
    spin: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Figures 1 and 2 on one node (run under `mpiexec -n 4`).
    Share {
        /// f64 elements of the shared array.
        #[arg(long)]
        size: usize,
        #[arg(long, default_value_t = 3)]
        reps: usize,
        #[arg(long)]
        spin: bool,
    },
    /// One weak-scaling row (run under `mpiexec -n K` or `scripts/simnodes/run.sh`).
    Scale {
        #[arg(long)]
        per_rank: usize,
        #[arg(long, default_value_t = 5)]
        reps: usize,
        #[arg(long, default_value_t = CHUNKS_PER_RANK)]
        chunks_per_rank: usize,
        #[arg(long)]
        spin: bool,
    },
    /// What a waiting rank costs the one that works (run under `mpiexec -n 4`): rank 0
    /// computes while the others wait in a barrier.
    Waits {
        /// Iterations of rank 0's work.
        #[arg(long, default_value_t = 100_000_000)]
        work: u64,
        #[arg(long)]
        spin: bool,
    },
    /// The forked-pool counterpart of `scale` (no MPI).
    Pool {
        #[arg(long)]
        executors: usize,
        #[arg(long)]
        per_rank: usize,
        #[arg(long, default_value_t = 5)]
        reps: usize,
        #[arg(long, default_value_t = CHUNKS_PER_RANK)]
        chunks_per_rank: usize,
    },
}

/// The longest sleep between two tests of a waiting barrier: what a timed region may
/// overrun by.
const MAX_NAP: Duration = Duration::from_micros(500);
/// Chunks per rank (or per executor) in the squares job.
const CHUNKS_PER_RANK: usize = 8;
/// Largest piece one `MPI_Bcast` moves, in elements (counts are `int`).
const PIECE: usize = 1 << 26;

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let result = match args.cmd {
        Some(Cmd::Share { size, reps, spin }) => share(size, reps, spin),
        Some(Cmd::Scale {
            per_rank,
            reps,
            chunks_per_rank,
            spin,
        }) => scale(per_rank, reps, chunks_per_rank, spin),
        Some(Cmd::Waits { work, spin }) => waits(work, spin),
        Some(Cmd::Pool {
            executors,
            per_rank,
            reps,
            chunks_per_rank,
        }) => pool(executors, per_rank, reps, chunks_per_rank),
        None => conduct(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mpi_figures: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

// ---------------------------------------------------------------------------------------
// Rank programs
// ---------------------------------------------------------------------------------------

/// A barrier that does not burn a core while it waits (`MPI_Ibarrier`, tested after
/// sleeps from 10 µs doubling to [`MAX_NAP`]), or a blocking one with `spin`.
fn barrier(comm: &SimpleCommunicator, spin: bool) {
    if spin {
        comm.barrier();
        return;
    }
    let mut req = comm.immediate_barrier();
    let mut nap = Duration::from_micros(10);
    loop {
        match req.test() {
            Ok(_) => return,
            Err(r) => req = r,
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(MAX_NAP);
    }
}

/// Summed (PSS, RSS) of every rank in kB, on every rank (collective).
fn summed_memory(comm: &SimpleCommunicator) -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    let field = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let mine = [field("Pss:"), field("Rss:")];
    let mut all = vec![0u64; 2 * comm.size() as usize];
    comm.all_gather_into(&mine[..], &mut all[..]);
    let pss = all.iter().step_by(2).sum();
    let rss = all.iter().skip(1).step_by(2).sum();
    (pss, rss)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Sum of `0..n` as f64 (exact below 2^53).
fn expected_sum(n: usize) -> f64 {
    (n as f64) * (n as f64 - 1.0) / 2.0
}

fn check_sum(got: f64, n: usize, what: &str) -> Res<()> {
    if got != expected_sum(n) {
        return Err(format!(
            "{what}: a rank read a sum of {got}, not {}",
            expected_sum(n)
        )
        .into());
    }
    Ok(())
}

fn share(n: usize, reps: usize, spin: bool) -> Res<()> {
    let universe = rsmpi::initialize().ok_or("MPI was initialised already")?;
    let world = universe.world();
    let comm = NodeComm::split(&world)?;
    // The NodeArray way needs the ranks on one node (MPIR_CVAR_NOLOCAL=1, which sends
    // MPICH's local traffic through UCX, also makes every rank a node of its own).
    let one_node = comm.nodes() == 1;
    let rank = comm.world_rank();
    let root = world.process_at_rank(0);
    let (base_pss, base_rss) = summed_memory(&world);
    // Rank 0's data, made before each clock starts (and dropped after), so that the memory
    // figures count only the copies each way makes.
    let make = || -> Vec<f64> { (0..n).map(|i| i as f64).collect() };
    let mut t_name = Vec::new();
    let mut t_prefault = Vec::new();
    let mut t_node = Vec::new();
    let mut t_bcast = Vec::new();
    let mut mem_name = (0, 0);
    let mut mem_bcast = (0, 0);
    for rep in 0..reps {
        // 1. An ndshm segment rank 0 made and filled, its name broadcast; the others attach
        //    (and, the second time, prefault their mapping before reading).
        for prefault in [false, true] {
            let mine = if rank == 0 {
                let opts = CreateOptions::unique_with_prefix("ndshm-figures-");
                let mut a = SharedNdArray::<f64, Ix1>::zeros(opts, n)?;
                let s = a.as_slice_mut().expect("contiguous");
                s.iter_mut().enumerate().for_each(|(i, v)| *v = i as f64);
                Some(a)
            } else {
                None
            };
            barrier(&world, spin);
            let t = Instant::now();
            let mut name = [0u8; 256];
            if let Some(a) = &mine {
                name[..a.name().len()].copy_from_slice(a.name().as_bytes());
            }
            root.broadcast_into(&mut name[..]);
            let theirs = if rank == 0 {
                None
            } else {
                let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                let name = std::str::from_utf8(&name[..len])?;
                // SAFETY: nobody writes the segment while the readers hold it: rank 0 filled it
                // before the barrier above and drops it only after the barrier below.
                let a = unsafe { SharedNdArray::<f64, Ix1>::open_read_only(name)? };
                if prefault {
                    a.prefault()?; // one madvise fills the page tables: no fault per page
                }
                Some(a)
            };
            let sum = match (&mine, &theirs) {
                (Some(a), _) => a.view().sum(),
                (_, Some(a)) => a.view().sum(),
                _ => unreachable!("rank 0 made it, the others attached"),
            };
            barrier(&world, spin);
            let (times, what) = if prefault {
                (&mut t_prefault, "segment + name broadcast + prefault")
            } else {
                (&mut t_name, "segment + name broadcast")
            };
            times.push(t.elapsed().as_secs_f64());
            check_sum(sum, n, what)?;
            if rep == 0 && !prefault {
                mem_name = summed_memory(&world);
            }
            drop(theirs);
            barrier(&world, spin);
            drop(mine);
        }

        // 2. A NodeArray, filled by rank 0 from its private copy (replicate).
        if one_node {
            let source = if rank == 0 { make() } else { Vec::new() };
            barrier(&world, spin);
            let t = Instant::now();
            let mut a = NodeArray::<f64, Ix1>::zeros(&comm, n)?;
            let data = (rank == 0).then(|| ndarray::ArrayView1::from(&source[..]));
            a.replicate(data)?;
            let sum = a.view().sum();
            barrier(&world, spin);
            t_node.push(t.elapsed().as_secs_f64());
            check_sum(sum, n, "NodeArray + replicate")?;
            a.free();
            drop(source);
        }

        // 3. MPI_Bcast from rank 0's private copy into every other rank's private buffer.
        let mut buf = if rank == 0 { make() } else { Vec::new() };
        barrier(&world, spin);
        let t = Instant::now();
        if rank != 0 {
            buf = vec![0f64; n];
        }
        for piece in buf.chunks_mut(PIECE) {
            root.broadcast_into(piece);
        }
        let sum: f64 = buf.iter().sum();
        barrier(&world, spin);
        t_bcast.push(t.elapsed().as_secs_f64());
        check_sum(sum, n, "MPI_Bcast")?;
        if rep == 0 {
            mem_bcast = summed_memory(&world);
        }
        drop(buf);
        barrier(&world, spin);
    }
    if rank == 0 {
        // smaps counts kB of 1024 bytes; MB here are 1e6 bytes, as the array's size.
        let mb = |kb: u64, base: u64| kb.saturating_sub(base) as f64 * 1024.0 / 1e6;
        let ms = |v: &Vec<f64>| {
            if v.is_empty() {
                f64::NAN
            } else {
                median(v.clone()) * 1e3
            }
        };
        println!(
            "share: {} ranks, {n} f64 ({:.0} MB), median of {reps}",
            comm.world_size(),
            n as f64 * 8.0 / 1e6
        );
        data("ranks", comm.world_size() as f64);
        data("size_mb", n as f64 * 8.0 / 1e6);
        data("pss_ndshm_mb", mb(mem_name.0, base_pss));
        data("rss_ndshm_mb", mb(mem_name.1, base_rss));
        data("pss_bcast_mb", mb(mem_bcast.0, base_pss));
        data("rss_bcast_mb", mb(mem_bcast.1, base_rss));
        data("t_name_ms", ms(&t_name));
        data("t_prefault_ms", ms(&t_prefault));
        data("t_node_ms", ms(&t_node));
        data("t_bcast_ms", ms(&t_bcast));
        println!("DONE");
    }
    Ok(())
}

/// Prints one figure for the conductor (and a reader).
fn data(key: &str, value: f64) {
    println!("DATA\t{key}\t{value}");
}

fn scale(per_rank: usize, reps: usize, chunks_per_rank: usize, spin: bool) -> Res<()> {
    let universe = rsmpi::initialize().ok_or("MPI was initialised already")?;
    let world = universe.world();
    let comm = NodeComm::split(&world)?;
    let ranks = comm.world_size();
    let n = per_rank * ranks;
    let plan = ChunkPlan::balanced(n, chunks_per_rank * ranks)?;
    let mut a = NodeArray::<f64, Ix1>::zeros(&comm, n)?;
    a.for_each_chunk(&plan, |_, mut x| x.fill(1.0))?;
    a.for_each_chunk(&plan, |_, mut x| x.mapv_inplace(|v| v * v))?; // warm-up
    let mut times = Vec::new();
    for _ in 0..reps {
        barrier(&world, spin);
        let t = Instant::now();
        a.for_each_chunk(&plan, |_, mut x| x.mapv_inplace(|v| v * v))?;
        barrier(&world, spin);
        times.push(t.elapsed().as_secs_f64());
    }
    let sums = a.map_reduce(&plan, |_, x| x.sum())?;
    let total: f64 = sums.iter().sum();
    if total != n as f64 {
        return Err(format!("the squares job summed to {total}, not {n}").into());
    }
    if comm.world_rank() == 0 {
        println!(
            "scale: {ranks} rank(s) on {} node(s), {per_rank} f64 per rank, median of {reps}",
            comm.nodes()
        );
        data("ranks", ranks as f64);
        data("nodes", comm.nodes() as f64);
        data("scale_ms", median(times) * 1e3);
        println!("DONE");
    }
    a.free();
    Ok(())
}

/// CPU seconds this process has used (user + system, from /proc/self/stat).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends with ')'): utime and stime are 12th, 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0 // USER_HZ is 100 on Linux
}

fn waits(work: u64, spin: bool) -> Res<()> {
    let universe = rsmpi::initialize().ok_or("MPI was initialised already")?;
    let world = universe.world();
    barrier(&world, false);
    let cpu = cpu_seconds();
    let t = Instant::now();
    if world.rank() == 0 {
        let mut x = 1.0f64;
        for i in 0..work {
            x = std::hint::black_box(x * 1.000_000_1 + (i & 1) as f64 * 1e-9);
        }
    }
    let work_s = t.elapsed().as_secs_f64();
    barrier(&world, spin);
    let mine = [cpu_seconds() - cpu];
    let mut all = vec![0f64; world.size() as usize];
    world.all_gather_into(&mine[..], &mut all[..]);
    if world.rank() == 0 {
        println!(
            "waits: rank 0 worked {:.0} ms; the waiters used {:.2} CPU s",
            work_s * 1e3,
            all[1..].iter().sum::<f64>()
        );
        data("work_ms", work_s * 1e3);
        data("waiters_cpu_s", all[1..].iter().sum());
        println!("DONE");
    }
    Ok(())
}

fn square(_: Chunk, mut x: ArrayViewMut1<'_, f64>, _: &()) {
    x.mapv_inplace(|v| v * v);
}

fn fill_one(_: Chunk, mut x: ArrayViewMut1<'_, f64>, _: &()) {
    x.fill(1.0);
}

fn pool(executors: usize, per_rank: usize, reps: usize, chunks_per_rank: usize) -> Res<()> {
    let mut pool = WorkerPool::new(executors)?;
    let n = per_rank * executors;
    let plan = ChunkPlan::balanced(n, chunks_per_rank * executors)?;
    let opts = CreateOptions::unique_with_prefix("ndshm-figures-");
    let mut a = SharedNdArray::<f64, Ix1>::zeros(opts, n)?;
    pool.map(&mut a, &plan, (), fill_one)?;
    pool.map(&mut a, &plan, (), square)?; // warm-up
    let mut times = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        pool.map(&mut a, &plan, (), square)?;
        times.push(t.elapsed().as_secs_f64());
    }
    if a.view().sum() != n as f64 {
        return Err("the pool's squares job gave a wrong sum".into());
    }
    println!("pool: {executors} executor(s), {per_rank} f64 per executor, median of {reps}");
    data("executors", executors as f64);
    data("pool_ms", median(times) * 1e3);
    println!("DONE");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The conductor
// ---------------------------------------------------------------------------------------

/// What one run reported: its `DATA` lines, and its whole output for errors.
struct Report {
    data: Vec<(String, f64)>,
    note: &'static str,
}

impl Report {
    fn get(&self, key: &str) -> f64 {
        self.data
            .iter()
            .find(|(k, _)| k == key)
            .map_or(f64::NAN, |(_, v)| *v)
    }
}

/// Runs `cmd`, reading its output as it comes. Once it printed `DONE` it gets `grace` to
/// exit and is then stopped (MPICH over UCX TCP can hang in `MPI_Finalize` across
/// simulated nodes after a correct job); it is stopped as failed after `deadline`.
fn run(cmd: &mut Command, deadline: Duration, grace: Duration) -> Res<Report> {
    let shown = format!("{cmd:?}");
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
            let _ = tx.send(line);
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(|l| l.ok()) {
            let _ = tx2.send(line);
        }
    });
    let start = Instant::now();
    let mut lines = Vec::new();
    let mut done_at: Option<Instant> = None;
    let mut note = "";
    let status = loop {
        while let Ok(line) = rx.try_recv() {
            if line == "DONE" && done_at.is_none() {
                done_at = Some(Instant::now());
            }
            lines.push(line);
        }
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        let hung = done_at.is_some_and(|t| t.elapsed() > grace);
        if hung || start.elapsed() > deadline {
            // SIGTERM, so that scripts/simnodes/run.sh ends what runs in its namespaces.
            // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
            if hung {
                note = " (MPI_Finalize hung after the job reported; the run was stopped)";
            }
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The rest of the output: the readers end when the pipes close (within 5 s, in case a
    // stray process of the run still holds them).
    let drained = Instant::now() + Duration::from_secs(5);
    while let Some(left) = drained.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => break, // both readers done, or the 5 s are over
        }
    }
    let reported = lines.iter().any(|l| l == "DONE");
    let ok = match status {
        Some(s) => s.success() && reported,
        None => reported,
    };
    if !ok {
        return Err(format!(
            "{shown} failed ({}):\n{}",
            match status {
                Some(s) => s.to_string(),
                None => format!("stopped after {:.0} s", deadline.as_secs_f64()),
            },
            lines.join("\n")
        )
        .into());
    }
    let data = lines
        .iter()
        .filter_map(|l| {
            let mut f = l.split('\t');
            (f.next() == Some("DATA")).then_some(())?;
            Some((f.next()?.to_string(), f.next()?.parse().ok()?))
        })
        .collect();
    Ok(Report { data, note })
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn conduct(args: &Args) -> Res<()> {
    let q = args.quick;
    let size = args.size_mb.unwrap_or(if q { 4 } else { 800 }) * 1_000_000 / 8;
    let per_rank = args
        .per_rank
        .unwrap_or(if q { 250_000 } else { 25_000_000 });
    let reps = args.reps.unwrap_or(if q { 3 } else { 5 });
    let me = std::env::current_exe()?;
    let spin: &[&str] = if args.spin { &["--spin"] } else { &[] };
    let deadline = Duration::from_secs(if q { 120 } else { 600 });
    let grace = Duration::from_secs(20);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load_before = load();
    let mpiexec = |n: usize| {
        let mut c = Command::new("mpiexec");
        c.args(["-n", &n.to_string()]).arg(&me);
        c
    };

    // A failed run is shown in its row and makes the program fail at the end.
    let mut failures = Vec::new();
    let mut keep = |what: &str, r: Res<Report>| match r {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{what}: {e}");
            failures.push(what.to_string());
            Report {
                data: Vec::new(),
                note: " (FAILED: see the error above)",
            }
        }
    };
    eprintln!("share: 4 ranks, {size} f64 ...");
    let share = keep(
        "share",
        run(
            mpiexec(4)
                .args(["share", "--size", &size.to_string()])
                .args(["--reps", &reps.min(3).to_string()])
                .args(spin),
            deadline,
            grace,
        ),
    );
    let mut waits = Vec::new();
    for spin_it in [true, false] {
        eprintln!("waits: 4 ranks, spin = {spin_it} ...");
        let mut c = mpiexec(4);
        c.args(["waits", "--work", if q { "20000000" } else { "200000000" }]);
        if spin_it {
            c.arg("--spin");
        }
        waits.push(keep(
            &format!("waits (spin = {spin_it})"),
            run(&mut c, deadline, grace),
        ));
    }
    let mut scale = Vec::new();
    for k in [1usize, 2, 4] {
        eprintln!("scale: {k} rank(s) and a pool of {k} ...");
        let mpi = keep(
            &format!("scale on {k} rank(s)"),
            run(
                mpiexec(k)
                    .args(["scale", "--per-rank", &per_rank.to_string()])
                    .args(["--reps", &reps.to_string()])
                    .args(spin),
                deadline,
                grace,
            ),
        );
        let pool = keep(
            &format!("pool of {k}"),
            run(
                Command::new(&me)
                    .args(["pool", "--executors", &k.to_string()])
                    .args(["--per-rank", &per_rank.to_string()])
                    .args(["--reps", &reps.to_string()]),
                deadline,
                grace,
            ),
        );
        scale.push((k, mpi, pool));
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/simnodes/run.sh");
    let is_root = std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:\t0\t")));
    let simnodes = if args.no_simnodes {
        None
    } else if !is_root {
        eprintln!("simulated nodes skipped: they need root");
        None
    } else {
        eprintln!("scale: 2 simulated nodes x 2 ranks ...");
        // Each node holds the whole array (4 ranks' worth): its /dev/shm must fit it.
        let shm_mb = per_rank * 4 * 8 / 1_000_000 + 64;
        Some(keep(
            "scale on 2 simulated nodes",
            run(
                Command::new(script)
                    .env("SIMNODES_SHM_SIZE", format!("{shm_mb}m"))
                    .args(["2", "2"])
                    .arg(&me)
                    .args(["scale", "--per-rank", &per_rank.to_string()])
                    .args(["--reps", &reps.to_string()])
                    .args(spin),
                deadline,
                grace,
            ),
        ))
    };

    // The table.
    let size_mb = share.get("size_mb");
    let mut rows: Vec<[String; 4]> = Vec::new();
    let (pn, pb) = (share.get("pss_ndshm_mb"), share.get("pss_bcast_mb"));
    rows.push([
        format!("memory per node, 4 ranks, {size_mb:.0} MB array: summed PSS"),
        format!(
            "ndshm {pn:.0} MB, MPI_Bcast {pb:.0} MB ({:.2}x); RSS {:.0} / {:.0} MB",
            pb / pn,
            share.get("rss_ndshm_mb"),
            share.get("rss_bcast_mb")
        ) + share.note,
        "one copy per node".into(),
        "share".into(),
    ]);
    let (tn, tp, tr, tb) = (
        share.get("t_name_ms"),
        share.get("t_prefault_ms"),
        share.get("t_node_ms"),
        share.get("t_bcast_ms"),
    );
    rows.push([
        format!("time to share {size_mb:.0} MB with 4 ranks, each reads all"),
        format!(
            "MPI_Bcast {tb:.0} ms; segment + name broadcast {tn:.0} ms ({:.1}x faster), \
             the same with the readers' mappings prefaulted {tp:.0} ms ({:.1}x); NodeArray \
             filled from rank 0's private copy (replicate) {tr:.0} ms ({:.1}x)",
            tb / tn,
            tb / tp,
            tb / tr
        ) + share.note,
        format!(
            "≥ 10x: {}",
            if (tb / tn).max(tb / tp) >= 10.0 {
                "met"
            } else {
                "missed"
            }
        ),
        "share".into(),
    ]);
    rows.push([
        format!(
            "a waiting rank's cost: rank 0 computes, 3 ranks wait in a barrier ({cores} cores)"
        ),
        format!(
            "blocking MPI_Barrier: the work took {:.0} ms, the waiters burned {:.2} CPU s; \
             MPI_Ibarrier + sleeps (10 to 500 µs): {:.0} ms, {:.2} CPU s{}{}",
            waits[0].get("work_ms"),
            waits[0].get("waiters_cpu_s"),
            waits[1].get("work_ms"),
            waits[1].get("waiters_cpu_s"),
            waits[0].note,
            waits[1].note
        ),
        "—".into(),
        "waits [--spin]".into(),
    ]);
    let t1 = scale[0].1.get("scale_ms");
    for (k, mpi, pool) in &scale {
        let (m, p) = (mpi.get("scale_ms"), pool.get("pool_ms"));
        let over = m / p - 1.0;
        rows.push([
            format!("squares, {per_rank} f64 per rank: {k} rank(s), 1 node"),
            format!(
                "{m:.1} ms (efficiency {:.0}% of 1 rank); forked pool of {k}: {p:.1} ms, \
                 MPI overhead {:+.1}%{}",
                t1 / m * 100.0,
                over * 100.0,
                mpi.note.to_string() + pool.note
            ),
            format!(
                "≤ 10% overhead: {}",
                if over <= 0.10 { "met" } else { "missed" }
            ),
            "scale / pool".into(),
        ]);
    }
    if let Some(sim) = &simnodes {
        let m = sim.get("scale_ms");
        rows.push([
            format!("squares, {per_rank} f64 per rank: 2 simulated nodes x 2 ranks"),
            format!(
                "{m:.1} ms (efficiency {:.0}% of 1 rank; UCX over TCP between nodes){}",
                t1 / m * 100.0,
                sim.note
            ),
            "—".into(),
            "simnodes scale".into(),
        ]);
    }
    println!("| figure | measured | goal | run |");
    println!("|---|---|---|---|");
    for r in &rows {
        println!("| {} | {} | {} | {} |", r[0], r[1], r[2], r[3]);
    }
    println!(
        "\n{cores} cores, load average {load_before} before, {} after (1-minute, \
         /proc/loadavg); reps: {reps} (share: {}); waits: {}.",
        load(),
        reps.min(3),
        if args.spin {
            "blocking MPI barriers (busy-poll)"
        } else {
            "MPI_Ibarrier tested between sleeps of 10 µs doubling to 500 µs, around each \
             timed region"
        }
    );
    if !failures.is_empty() {
        return Err(format!("failed: {}", failures.join(", ")).into());
    }
    Ok(())
}
