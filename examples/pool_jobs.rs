//! Jobs over several arrays on the warm `WorkerPool` (`pool.job(&plan).read(..).write(..)`)
//! against rayon on the same shared arrays, in one run, printed as one table:
//! - `c = a * b + d` on four arrays of f64: the pool job (3 reads + 1 write) vs rayon's
//!   `par_azip!`;
//! - a 2-D five-point heat step on a square grid of f64, the two arrays swapped each step,
//!   read with a halo of one row: the pool vs rayon vs serial, each result identical to
//!   the serial run (asserted, bit for bit: the three share one row kernel);
//! - the per-job overhead: a tiny job's median round trip with dispatch forced.
//!
//! ```text
//! cargo run --release --example pool_jobs              # 1e8 f64 x 4 (3.2 GB of /dev/shm), 8192^2 heat, 50 steps
//! cargo run --release --example pool_jobs -- --quick   # 1e6 f64, 512^2 heat, 10 steps: under 20 s
//! ```
//! `--workers` counts executors, the caller included (the pool forks `workers - 1`
//! processes; rayon gets `workers` threads).

use std::time::{Duration, Instant};

/// Untimed repetitions of `c = a * b + d` before the timed ones (see `axpb_rows`).
const WARM_UP: usize = 3;

use clap::Parser;
use ndarray::{par_azip, ArrayView1, ArrayViewMut1, ArrayViewMut2, Axis, Ix1, Ix2, Zip};
use ndshm::{Chunk, ChunkPlan, Halo, SharedNdArray, WorkerPool};

#[path = "shared/bench.rs"]
mod bench;
use bench::{check_shm_space, median, percentile};
use rayon::prelude::*;

#[derive(Parser, Debug)]
#[command(about = "Jobs over several arrays: pool vs rayon (c = a*b + d, heat equation, tiny job)")]
struct Args {
    /// Elements of each array of `c = a * b + d` [default: 100000000, 1000000 with --quick].
    #[arg(long)]
    size: Option<usize>,
    /// Rows (and columns) of the heat grid [default: 8192, 512 with --quick].
    #[arg(long)]
    grid: Option<usize>,
    /// Heat steps [default: 50, 10 with --quick].
    #[arg(long)]
    steps: Option<usize>,
    /// Timed repetitions of `c = a * b + d` (median shown) [default: 5, 3 with --quick].
    #[arg(long)]
    reps: Option<usize>,
    /// Round trips of the tiny job [default: 20000, 2000 with --quick].
    #[arg(long)]
    tiny_iters: Option<usize>,
    /// Executors, the caller included (default: the CPUs this process may use).
    #[arg(long)]
    workers: Option<usize>,
    /// Small sizes, under 20 s (what `cargo test --test examples` runs).
    #[arg(long)]
    quick: bool,
}

/// One row of the table.
struct Row {
    case: String,
    variant: String,
    time: Duration,
    /// `(what the ratio is, its value, the goal it is held to, if any)`.
    ratio: Option<(String, f64, Option<f64>)>,
}

type In<'a> = ArrayView1<'a, f64>;

/// `c = a * b + d` on one chunk (the pool job's function).
fn axpb(_: Chunk, (a, b, d, mut c): (In<'_>, In<'_>, In<'_>, ArrayViewMut1<'_, f64>), _: &()) {
    Zip::from(&mut c)
        .and(&a)
        .and(&b)
        .and(&d)
        .for_each(|c, &a, &b, &d| *c = a * b + d);
}

/// One row of the explicit heat step: `out[j] = mid[j] + alpha * (up[j] + down[j] +
/// mid[j-1] + mid[j+1] - 4 mid[j])` inside, the row's ends kept. Serial, rayon and pool
/// all call this, so their results are identical bit for bit.
#[inline]
fn heat_row(up: &[f64], mid: &[f64], down: &[f64], out: &mut [f64], alpha: f64) {
    let n = mid.len();
    out[0] = mid[0];
    out[n - 1] = mid[n - 1];
    for j in 1..n - 1 {
        out[j] = mid[j] + alpha * (up[j] + down[j] + mid[j - 1] + mid[j + 1] - 4.0 * mid[j]);
    }
}

/// Row `i` of a step from `u` (rows of `g` values) into `out`: edge rows are copied.
#[inline]
fn heat_global_row(u: &[f64], g: usize, i: usize, out: &mut [f64], alpha: f64) {
    let row = |r: usize| &u[r * g..(r + 1) * g];
    if i == 0 || i + 1 == u.len() / g {
        out.copy_from_slice(row(i));
    } else {
        heat_row(row(i - 1), row(i), row(i + 1), out, alpha);
    }
}

/// The pool's heat step on one chunk of rows: the input comes with one row of halo on
/// each side (clipped at the grid's edges), Dask's `map_overlap(depth=1)`.
fn heat_chunk(c: Chunk, (u, mut out): (Halo<'_, f64, Ix2>, ArrayViewMut2<'_, f64>), &alpha: &f64) {
    let (rows, g) = u.dim();
    let off = u.offset(0);
    let halo = u.view();
    let halo = halo
        .as_slice()
        .expect("rows of a C-order grid are contiguous");
    // At the grid's last row the halo ends with the chunk.
    let at_end = off + c.len() == rows;
    for (i, mut o) in out.axis_iter_mut(Axis(0)).enumerate() {
        let o = o.as_slice_mut().expect("contiguous row");
        let l = off + i;
        let row = |r: usize| &halo[r * g..(r + 1) * g];
        if c.start + i == 0 || (at_end && i + 1 == c.len()) {
            o.copy_from_slice(row(l));
        } else {
            heat_row(row(l - 1), row(l), row(l + 1), o, alpha);
        }
    }
}

/// The tiny job: square 1000 f64 in place.
fn square(_: Chunk, (mut x,): (ArrayViewMut1<'_, f64>,), _: &()) {
    x.mapv_inplace(|v| v * v);
}

fn square_map(_: Chunk, mut x: ArrayViewMut1<'_, f64>, _: &()) {
    x.mapv_inplace(|v| v * v);
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let result = ndshm::SignalCleanup::install()
        .map_err(Into::into)
        .and_then(|_cleanup| run(&args));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pool_jobs: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let q = args.quick;
    let n = args.size.unwrap_or(if q { 1_000_000 } else { 100_000_000 });
    let g = args.grid.unwrap_or(if q { 512 } else { 8192 }).max(3);
    let steps = args.steps.unwrap_or(if q { 10 } else { 50 });
    let reps = args.reps.unwrap_or(if q { 3 } else { 5 }).max(1);
    let tiny_iters = args
        .tiny_iters
        .unwrap_or(if q { 2_000 } else { 20_000 })
        .max(10);
    let cores = bench::cores();
    let workers = args.workers.unwrap_or(cores).max(1);
    // The arrays of c = a*b + d, then (after they are gone) the four heat grids.
    let need = (32 * n as u64).max(32 * (g * g) as u64) + 8 * 4096;
    println!(
        "pool_jobs: {n} f64 x 4 for c = a*b + d, a {g} x {g} heat grid x {steps} steps, \
         {workers} executors on {cores} CPUs; needs {:.0} MB of /dev/shm",
        need as f64 / 1e6
    );
    check_shm_space(need, "--quick or a smaller --size/--grid")?;
    let tp = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .build()?;
    let mut pool = WorkerPool::new(workers)?;
    let mut rows = Vec::new();
    axpb_rows(&mut pool, &tp, n, reps, workers, &mut rows)?;
    heat_rows(&mut pool, &tp, g, steps, workers, &mut rows)?;
    tiny_rows(&mut pool, tiny_iters, &mut rows)?;

    println!();
    println!("| case | variant | median | ratio | goal |");
    println!("|---|---|---:|---|---|");
    let mut missed = Vec::new();
    for r in &rows {
        let t = r.time.as_secs_f64();
        let time = if t < 1e-3 {
            format!("{:.3} µs", t * 1e6)
        } else {
            format!("{:.1} ms", t * 1e3)
        };
        let (ratio, goal) = match &r.ratio {
            None => (String::new(), String::new()),
            Some((what, v, goal)) => {
                let goal = match goal {
                    None => String::new(),
                    Some(x) if what.starts_with("µs") => {
                        if *v > *x {
                            missed.push(format!("{} {}", r.case, r.variant));
                        }
                        format!("≤ {x} µs: {}", if *v <= *x { "met" } else { "missed" })
                    }
                    Some(x) => {
                        if *v < *x {
                            missed.push(format!("{} {}", r.case, r.variant));
                        }
                        format!("≥ {x}×: {}", if *v >= *x { "met" } else { "missed" })
                    }
                };
                let ratio = if what.starts_with("µs") {
                    format!("{what} {v:.3}")
                } else {
                    format!("{v:.3}× {what}")
                };
                (ratio, goal)
            }
        };
        println!("| {} | {} | {time} | {ratio} | {goal} |", r.case, r.variant);
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!();
    println!(
        "heat: pool and rayon results identical to the serial run; load average {}; {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        if missed.is_empty() {
            "every goal met".to_string()
        } else {
            format!(
                "missed: {} (stated for the full size on a quiet machine)",
                missed.join(", ")
            )
        }
    );
    Ok(())
}

/// `c = a * b + d`: the pool job vs `par_azip!`, interleaved per repetition.
fn axpb_rows(
    pool: &mut WorkerPool,
    tp: &rayon::ThreadPool,
    n: usize,
    reps: usize,
    workers: usize,
    rows: &mut Vec<Row>,
) -> Result<(), Box<dyn std::error::Error>> {
    let pid = std::process::id();
    let make = |tag: &str, f: fn(usize) -> f64| {
        let mut x = SharedNdArray::<f64, Ix1>::zeros(format!("pool-jobs-{tag}-{pid}").as_str(), n)?;
        x.as_slice_mut()
            .expect("contiguous")
            .par_iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = f(i));
        Ok::<_, ndshm::Error>(x)
    };
    let a = make("a", |i| i as f64)?;
    let b = make("b", |i| 1.0 + (i % 5) as f64)?;
    let d = make("d", |i| -0.5 * i as f64)?;
    let mut c = make("c", |_| 0.0)?;
    // A few chunks per executor: claimed dynamically, they even out a busy core.
    let plan = ChunkPlan::balanced(n, 4 * workers)?.aligned_for(&c)?;
    let want = |i: usize| i as f64 * (1.0 + (i % 5) as f64) - 0.5 * i as f64;
    let check = |c: &SharedNdArray<f64, Ix1>| {
        c.as_slice()
            .expect("contiguous")
            .par_iter()
            .enumerate()
            .all(|(i, &v)| v == want(i))
    };
    let (mut t_pool, mut t_rayon) = (Vec::new(), Vec::new());
    // The first WARM_UP repetitions are not timed (repetition 0 is checked). A worker maps
    // each array once, but its page tables fill only as it touches pages, and chunks are
    // claimed dynamically, so a worker meets pages it has not touched for a few jobs (a
    // minor fault per 4 KiB page written, ~0.25 µs each) — a cost rayon's threads, which
    // share one address space, do not pay. Timed from then on: the steady state of a
    // program that runs many jobs on the same arrays. The first job is reported apart.
    let mut first = Duration::ZERO;
    for rep in 0..reps + WARM_UP {
        c.view_mut().fill(0.0);
        let t = Instant::now();
        pool.job(&plan)
            .read(&a)
            .read(&b)
            .read(&d)
            .write(&mut c)
            .for_each((), axpb)?;
        let tp_ = t.elapsed();
        if rep == 0 {
            assert!(check(&c), "pool: c != a * b + d");
            first = tp_;
        } else if rep >= WARM_UP {
            t_pool.push(tp_);
        }
        c.view_mut().fill(0.0);
        let (av, bv, dv) = (a.view(), b.view(), d.view());
        let mut cv = c.view_mut();
        let t = Instant::now();
        tp.install(|| par_azip!((c in &mut cv, &a in &av, &b in &bv, &d in &dv) *c = a * b + d));
        let tr = t.elapsed();
        if rep == 0 {
            assert!(check(&c), "rayon: c != a * b + d");
        } else if rep >= WARM_UP {
            t_rayon.push(tr);
        }
    }
    let (p, r) = (median(t_pool), median(t_rayon));
    let case = format!("c = a*b + d, {n:.0e} f64");
    rows.push(Row {
        case: case.clone(),
        variant: format!("rayon `par_azip!` ({workers} threads)"),
        time: r,
        ratio: Some(("rayon's throughput".into(), 1.0, None)),
    });
    rows.push(Row {
        case,
        variant: format!(
            "pool job: 3 reads + 1 write ({} workers + caller)",
            workers - 1
        ),
        time: p,
        ratio: Some((
            format!(
                "rayon's throughput ({:.1} GB/s)",
                (32 * n) as f64 / p.as_secs_f64() / 1e9
            ),
            r.as_secs_f64() / p.as_secs_f64(),
            Some(0.97),
        )),
    });
    rows.push(Row {
        case: format!("c = a*b + d, {n:.0e} f64"),
        variant: "pool job, the first on these arrays (workers fill their page tables)".into(),
        time: first,
        ratio: None,
    });
    Ok(())
}

/// The heat equation: serial, rayon and the pool, each from the same start, the pool's
/// and rayon's final grids compared with the serial one.
fn heat_rows(
    pool: &mut WorkerPool,
    tp: &rayon::ThreadPool,
    g: usize,
    steps: usize,
    workers: usize,
    rows: &mut Vec<Row>,
) -> Result<(), Box<dyn std::error::Error>> {
    let alpha = 0.2;
    let init = |i: usize| {
        let (r, c) = (i / g, i % g);
        // A hot square in a cold plate, with a little structure everywhere.
        if (g / 4..g / 2).contains(&r) && (g / 3..2 * g / 3).contains(&c) {
            100.0
        } else {
            ((r * 7 + c * 13) % 10) as f64
        }
    };
    // Serial: two heap grids, filled, so that no run pays the first touch of its pages
    // inside the timing.
    let mut su: Vec<f64> = (0..g * g).map(init).collect();
    let mut sv = vec![1.0; g * g];
    let pid = std::process::id();
    let grid = |tag: &str| {
        let mut x =
            SharedNdArray::<f64, Ix2>::zeros(format!("pool-jobs-{tag}-{pid}").as_str(), (g, g))?;
        x.as_slice_mut()
            .expect("contiguous")
            .par_iter_mut()
            .enumerate()
            .for_each(|(i, x)| *x = init(i));
        Ok::<_, ndshm::Error>(x)
    };
    // Rayon's two grids and the pool's two grids (shared arrays both).
    let (mut ru, mut rv) = (grid("ru")?, grid("rv")?);
    let (mut pu, mut pv) = (grid("pu")?, grid("pv")?);
    let plan = ChunkPlan::balanced_along(pu.shape(), 0, 4 * workers)?;
    // Warm-up: the workers map the pool's grids (two steps from v back into u), then u is
    // reset to the start.
    pool.job(&plan)
        .read_halo(&pv, 1)
        .write(&mut pu)
        .for_each(alpha, heat_chunk)?;
    pool.job(&plan)
        .read_halo(&pu, 1)
        .write(&mut pv)
        .for_each(alpha, heat_chunk)?;
    pu.as_slice_mut()
        .expect("contiguous")
        .par_iter_mut()
        .enumerate()
        .for_each(|(i, x)| *x = init(i));
    // The three runs step by step, interleaved, so that all three see the same machine
    // load; each step is timed on its own.
    let (mut serial, mut rayon_t, mut pool_t) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for step in 0..steps {
        let t = Instant::now();
        for (i, out) in sv.chunks_mut(g).enumerate() {
            heat_global_row(&su, g, i, out, alpha);
        }
        serial += t.elapsed();
        std::mem::swap(&mut su, &mut sv);

        let (src, dst) = if step % 2 == 0 {
            (&ru, &mut rv)
        } else {
            (&rv, &mut ru)
        };
        let src = src.as_slice().expect("contiguous");
        let t = Instant::now();
        tp.install(|| {
            dst.as_slice_mut()
                .expect("contiguous")
                .par_chunks_mut(g)
                .enumerate()
                .for_each(|(i, out)| heat_global_row(src, g, i, out, alpha))
        });
        rayon_t += t.elapsed();

        let (src, dst) = if step % 2 == 0 {
            (&pu, &mut pv)
        } else {
            (&pv, &mut pu)
        };
        let t = Instant::now();
        pool.job(&plan)
            .read_halo(src, 1)
            .write(dst)
            .for_each(alpha, heat_chunk)?;
        pool_t += t.elapsed();
    }
    let last = |u: &SharedNdArray<f64, Ix2>, v: &SharedNdArray<f64, Ix2>| {
        let last = if steps % 2 == 0 { u } else { v };
        last.as_slice().expect("contiguous") == &su[..]
    };
    assert!(
        last(&ru, &rv),
        "rayon's heat run differs from the serial one"
    );
    assert!(
        last(&pu, &pv),
        "the pool's heat run differs from the serial one"
    );

    let case = format!("heat {g}², {steps} steps");
    rows.push(Row {
        case: case.clone(),
        variant: "serial".into(),
        time: serial,
        ratio: None,
    });
    rows.push(Row {
        case: case.clone(),
        variant: format!("rayon ({workers} threads)"),
        time: rayon_t,
        ratio: Some((
            "serial's speed".into(),
            serial.as_secs_f64() / rayon_t.as_secs_f64(),
            None,
        )),
    });
    rows.push(Row {
        case: case.clone(),
        variant: format!("pool, halo 1 ({} chunks of rows)", plan.num_chunks()),
        time: pool_t,
        ratio: Some((
            format!(
                "rayon's speed ({:.2}× serial)",
                serial.as_secs_f64() / pool_t.as_secs_f64()
            ),
            rayon_t.as_secs_f64() / pool_t.as_secs_f64(),
            None,
        )),
    });
    Ok(())
}

/// The per-job overhead: a 1000-element job in 2 chunks, dispatch forced.
fn tiny_rows(
    pool: &mut WorkerPool,
    iters: usize,
    rows: &mut Vec<Row>,
) -> Result<(), Box<dyn std::error::Error>> {
    let pid = std::process::id();
    let mut a = SharedNdArray::<f64, Ix1>::zeros(format!("pool-jobs-tiny-{pid}").as_str(), 1000)?;
    let b = SharedNdArray::<f64, Ix1>::zeros(format!("pool-jobs-tiny-b-{pid}").as_str(), 1000)?;
    let d = SharedNdArray::<f64, Ix1>::zeros(format!("pool-jobs-tiny-d-{pid}").as_str(), 1000)?;
    let mut c = SharedNdArray::<f64, Ix1>::zeros(format!("pool-jobs-tiny-c-{pid}").as_str(), 1000)?;
    let plan = ChunkPlan::balanced(1000, 2)?;
    pool.set_inline_below(0);
    let time = |f: &mut dyn FnMut() -> ndshm::Result<()>| {
        let mut v = Vec::with_capacity(iters);
        for _ in 0..iters {
            let t = Instant::now();
            f()?;
            v.push(t.elapsed());
        }
        v.sort();
        Ok::<_, ndshm::Error>((percentile(&v, 0.5), percentile(&v, 0.99)))
    };
    let (job_med, job_p99) = time(&mut || pool.job(&plan).write(&mut a).for_each((), square))?;
    let (map_med, _) = time(&mut || pool.map(&mut a, &plan, (), square_map))?;
    let (four_med, _) = time(&mut || {
        pool.job(&plan)
            .read(&a)
            .read(&b)
            .read(&d)
            .write(&mut c)
            .for_each((), axpb)
    })?;
    let case = "tiny job, 1000 f64 in 2 chunks".to_string();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    rows.push(Row {
        case: case.clone(),
        variant: "`pool.map` (one array, for reference)".into(),
        time: map_med,
        ratio: None,
    });
    rows.push(Row {
        case: case.clone(),
        variant: format!(
            "pool job, 1 write, dispatch forced (p99 {:.3} µs)",
            us(job_p99)
        ),
        time: job_med,
        ratio: Some(("µs median".into(), us(job_med), Some(1.0))),
    });
    rows.push(Row {
        case,
        variant: "pool job, 3 reads + 1 write (c = a*b + d)".into(),
        time: four_med,
        ratio: None,
    });
    Ok(())
}
