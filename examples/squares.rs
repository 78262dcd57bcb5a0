//! The seed's squared-slice program at scale: an array `0..n` of f64 in shared memory,
//! squared in place by serial code, rayon, forked children (one fork per call) and the warm
//! `WorkerPool`, all in one run, with a compute-bound kernel, the tiny-job latency, an uneven
//! workload and the idle cost of the pool's workers.
//!
//! ```text
//! cargo run --release --example squares -- --size 100000000 --workers 2
//! ```
//! `--workers` counts executors, the caller included: the pool forks `workers - 1`
//! processes, fork-per-call forks `workers` children, rayon gets `workers` threads.

use std::time::{Duration, Instant};

use approx::assert_relative_eq;
use clap::Parser;
use ndarray::{ArrayViewMut1, Ix1};
use ndshm::{fork_chunks, Chunk, ChunkPlan, SharedNdArray, WorkerPool};
use rayon::prelude::*;

#[path = "shared/squares_kernels.rs"]
mod squares_kernels;
use squares_kernels::{split, square, uneven, uneven_value};

#[derive(Parser, Debug)]
#[command(about = "Square a shared-memory array: serial, rayon, fork per call, warm pool")]
struct Args {
    /// Number of f64 elements.
    #[arg(long, default_value_t = 10_000_000)]
    size: usize,
    /// Executors, the caller included (default: the CPUs this process may use).
    #[arg(long)]
    workers: Option<usize>,
    /// Timed repetitions per row (the median is shown).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Iterations of the tiny-job latency loop.
    #[arg(long, default_value_t = 20_000)]
    tiny_iters: usize,
    /// Elements of the uneven workload (default: min(size, 1_000_000)).
    #[arg(long)]
    uneven_size: Option<usize>,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// The compute-bound kernel (the others are in `shared/squares_kernels.rs`).
fn heavy(_: Chunk, mut x: ArrayViewMut1<'_, f64>, _: &()) {
    x.mapv_inplace(|v| v.sin().exp().sqrt());
}

type Kernel = fn(Chunk, ArrayViewMut1<'_, f64>, &());
/// A kernel's name, its pool/fork form, and its per-element form (serial and rayon).
type NamedKernel = (&'static str, Kernel, fn(f64) -> f64);

fn reset(a: &mut SharedNdArray<f64, Ix1>) {
    a.as_slice_mut()
        .expect("contiguous")
        .par_iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = i as f64);
}

fn check(a: &SharedNdArray<f64, Ix1>, f: fn(f64) -> f64, what: &str) {
    let s = a.as_slice().expect("contiguous");
    s.par_iter().enumerate().for_each(|(i, &v)| {
        let want = f(i as f64);
        assert_relative_eq!(v, want, max_relative = 1e-12);
    });
    let _ = what;
}

struct Row {
    kernel: &'static str,
    variant: String,
    time: Duration,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    // Opt-in signal cleanup, before the first segment or worker exists: Ctrl-C (or
    // SIGTERM/SIGHUP) stops and reaps the workers, unlinks our segments, and re-raises.
    let _cleanup = ndshm::SignalCleanup::install()?;
    run(args)
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let reps = args.reps.max(1);
    let n = args.size;
    let name = format!("squares-{}", std::process::id());
    println!(
        "ndshm squares: {n} f64 ({:.1} MB) in /dev/shm/{name}, {workers} executors, median of \
         {reps} runs",
        (n * 8) as f64 / 1e6
    );

    let mut a = SharedNdArray::<f64, Ix1>::zeros(&name, n)?;
    let plan = ChunkPlan::balanced(n, workers)?;
    // The rayon pool below starts threads before the fork-per-call rows fork.
    // SAFETY: the forked kernels (examples/shared/squares_kernels.rs) only compute on their
    // chunk: no printing, no rayon, no lock another thread may hold.
    unsafe { ndshm::allow_fork_with_threads() };
    let tp = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .build()?;
    let mut pool = WorkerPool::new(workers)?;
    let mut rows: Vec<Row> = Vec::new();

    // Progress bar demo (untimed): a pool job in 64 chunks shows chunks done / total.
    pool.set_progress(true);
    reset(&mut a);
    pool.map(&mut a, &ChunkPlan::balanced(n, 64)?, (), heavy)?;
    pool.set_progress(false);

    let kernels: [NamedKernel; 2] = [
        ("x*x", square, |x| x * x),
        ("sin.exp.sqrt", heavy, |x| x.sin().exp().sqrt()),
    ];
    // Variants interleave within each repetition, so that all four see the same machine
    // load (other processes on a shared machine shift the figures less this way).
    let variants = [
        "serial".to_string(),
        format!("rayon ({workers} threads)"),
        format!("fork per call ({workers} children)"),
        format!("pool ({} workers + caller)", workers - 1),
    ];
    for (kname, kernel, scalar) in kernels {
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); variants.len()];
        // Repetition 0 warms up (and its results are checked); 1..=reps are timed.
        for rep in 0..=reps {
            for (v, times) in times.iter_mut().enumerate() {
                reset(&mut a);
                let t = match v {
                    0 => {
                        let whole = Chunk {
                            index: 0,
                            axis: 0,
                            start: 0,
                            end: n,
                        };
                        let t = Instant::now();
                        kernel(whole, a.view_mut(), &());
                        t.elapsed()
                    }
                    1 => {
                        let chunks = split(a.as_slice_mut().expect("contiguous"), &plan);
                        let t = Instant::now();
                        tp.install(|| {
                            chunks
                                .into_par_iter()
                                .for_each(|(c, data)| kernel(c, ArrayViewMut1::from(data), &()))
                        });
                        t.elapsed()
                    }
                    2 => {
                        let t = Instant::now();
                        fork_chunks(&mut a, &plan, |c, v| kernel(c, v, &()))?;
                        t.elapsed()
                    }
                    _ => {
                        let t = Instant::now();
                        pool.map(&mut a, &plan, (), kernel)?;
                        t.elapsed()
                    }
                };
                if rep == 0 {
                    check(&a, scalar, &variants[v]);
                } else {
                    times.push(t);
                }
            }
        }
        for (v, t) in times.into_iter().enumerate() {
            rows.push(Row {
                kernel: kname,
                variant: variants[v].clone(),
                time: median(t),
            });
        }
    }

    println!();
    println!(
        "| kernel       | variant                        | median ms |  GB/s | vs rayon | vs serial |"
    );
    println!(
        "|--------------|--------------------------------|----------:|------:|---------:|----------:|"
    );
    for r in &rows {
        let rayon = rows
            .iter()
            .find(|x| x.kernel == r.kernel && x.variant.starts_with("rayon"))
            .map_or(r.time, |x| x.time);
        let serial = rows
            .iter()
            .find(|x| x.kernel == r.kernel && x.variant == "serial")
            .map_or(r.time, |x| x.time);
        // Bytes moved: each element read and written once.
        let gbs = (16 * n) as f64 / r.time.as_secs_f64() / 1e9;
        println!(
            "| {:<12} | {:<30} | {:>9.3} | {:>5.2} | {:>7.3}x | {:>8.3}x |",
            r.kernel,
            r.variant,
            r.time.as_secs_f64() * 1e3,
            gbs,
            rayon.as_secs_f64() / r.time.as_secs_f64(),
            serial.as_secs_f64() / r.time.as_secs_f64(),
        );
    }
    drop(a);

    tiny_latency(&mut pool, &tp, args.tiny_iters)?;
    uneven_workload(
        &mut pool,
        &tp,
        args.uneven_size.unwrap_or(n.min(1_000_000)),
        reps,
    )?;
    idle_cpu(&pool);
    Ok(())
}

/// Dispatch + join round trip of a 1000-element job in 2 chunks.
fn tiny_latency(
    pool: &mut WorkerPool,
    tp: &rayon::ThreadPool,
    iters: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let name = format!("squares-tiny-{}", std::process::id());
    let mut a = SharedNdArray::<f64, Ix1>::zeros(&name, 1000)?;
    let plan = ChunkPlan::balanced(1000, 2)?;
    let iters = iters.max(10);
    let stats = |mut v: Vec<Duration>| {
        v.sort();
        (percentile(&v, 0.5), percentile(&v, 0.99))
    };
    let mut rows: Vec<(&str, (Duration, Duration))> = Vec::new();

    pool.set_inline_below(0);
    let mut v = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        pool.map(&mut a, &plan, (), square)?;
        v.push(t.elapsed());
    }
    rows.push(("pool, dispatch forced", stats(v)));

    pool.set_inline_below(4096);
    let mut v = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        pool.map(&mut a, &plan, (), square)?;
        v.push(t.elapsed());
    }
    rows.push(("pool, inline shortcut (< 4096 elements)", stats(v)));
    pool.set_inline_below(0);

    let whole = plan.get(0).expect("two chunks");
    let slice = a.as_slice_mut().expect("contiguous");
    let mut v = Vec::with_capacity(iters);
    for _ in 0..iters {
        let chunks = split(slice, &plan);
        let t = Instant::now();
        tp.install(|| {
            chunks
                .into_par_iter()
                .for_each(|(_, c)| square(whole, ArrayViewMut1::from(c), &()))
        });
        v.push(t.elapsed());
    }
    rows.push(("rayon, called from main (install)", stats(v)));

    let v = tp.install(|| {
        let mut v = Vec::with_capacity(iters);
        for _ in 0..iters {
            let chunks = split(slice, &plan);
            let t = Instant::now();
            chunks
                .into_par_iter()
                .for_each(|(_, c)| square(whole, ArrayViewMut1::from(c), &()));
            v.push(t.elapsed());
        }
        v
    });
    rows.push(("rayon, caller inside its pool", stats(v)));

    println!();
    println!("Tiny job: 1000 f64 squared in 2 chunks, {iters} round trips");
    println!("| variant                                  | median µs | p99 µs |");
    println!("|------------------------------------------|----------:|-------:|");
    for (what, (med, p99)) in rows {
        println!(
            "| {what:<40} | {:>9.3} | {:>6.3} |",
            med.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6
        );
    }
    Ok(())
}

/// Chunk cost growing linearly with the index: dynamic claiming vs rayon's stealing.
fn uneven_workload(
    pool: &mut WorkerPool,
    tp: &rayon::ThreadPool,
    n: usize,
    reps: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let name = format!("squares-uneven-{}", std::process::id());
    let mut a = SharedNdArray::<f64, Ix1>::zeros(&name, n)?;
    let plan = ChunkPlan::balanced(n, 64)?;
    let check = |a: &SharedNdArray<f64, Ix1>| {
        let s = a.as_slice().expect("contiguous");
        for i in (0..n).step_by((n / 1000).max(1)) {
            assert_relative_eq!(s[i], uneven_value(i, n), max_relative = 1e-12);
        }
    };
    let mut serial = Vec::new();
    let mut rayon_t = Vec::new();
    let mut pool_t = Vec::new();
    for rep in 0..=reps {
        a.view_mut().fill(0.0);
        let t = Instant::now();
        for (i, v) in a.as_slice_mut().expect("contiguous").iter_mut().enumerate() {
            *v = uneven_value(i, n);
        }
        let e = t.elapsed();
        if rep > 0 {
            serial.push(e);
        }
        check(&a);

        a.view_mut().fill(0.0);
        let chunks = split(a.as_slice_mut().expect("contiguous"), &plan);
        let t = Instant::now();
        tp.install(|| {
            chunks
                .into_par_iter()
                .for_each(|(c, data)| uneven(c, ArrayViewMut1::from(data), &(n as u64)))
        });
        let e = t.elapsed();
        if rep > 0 {
            rayon_t.push(e);
        }
        check(&a);

        a.view_mut().fill(0.0);
        let t = Instant::now();
        pool.map(&mut a, &plan, n as u64, uneven)?;
        let e = t.elapsed();
        if rep > 0 {
            pool_t.push(e);
        }
        check(&a);
    }
    let (s, r, p) = (median(serial), median(rayon_t), median(pool_t));
    println!();
    println!("Uneven workload: {n} elements in 64 chunks, element i costs 1 + 64 i / n rounds");
    println!("| variant | median ms | vs rayon | vs serial |");
    println!("|---------|----------:|---------:|----------:|");
    for (what, t) in [("serial", s), ("rayon", r), ("pool", p)] {
        println!(
            "| {what:<7} | {:>9.3} | {:>7.3}x | {:>8.3}x |",
            t.as_secs_f64() * 1e3,
            r.as_secs_f64() / t.as_secs_f64(),
            s.as_secs_f64() / t.as_secs_f64()
        );
    }
    Ok(())
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let Some(close) = stat.rfind(')') else {
        return 0;
    };
    let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

/// CPU time the pool's workers use over one idle second (after their spin window).
fn idle_cpu(pool: &WorkerPool) {
    std::thread::sleep(Duration::from_millis(100));
    let pids = pool.worker_pids();
    let before: u64 = pids.iter().map(|&p| cpu_ticks(p)).sum();
    std::thread::sleep(Duration::from_secs(1));
    let after: u64 = pids.iter().map(|&p| cpu_ticks(p)).sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    println!();
    println!(
        "Idle: {} workers used {} clock ticks ({} ms) of CPU in 1 s",
        pids.len(),
        after - before,
        (after - before) * 1000 / hz
    );
}
