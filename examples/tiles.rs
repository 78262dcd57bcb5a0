//! Tile plans: a blocked transpose-and-add, `b = a + aᵀ`, of an n × n f64 matrix in shared
//! memory, written tile by tile by the warm `WorkerPool` (each chunk reads the whole input
//! and writes its own block of `b`), against the same kernel over a plan of row blocks, and
//! serial loops — one table, ratios measured in the same run, every result checked.
//!
//! ```text
//! cargo run --release --example tiles              # 8192 x 8192: ~1.1 GB of /dev/shm
//! cargo run --release --example tiles -- --quick   # 1024 x 1024: 17 MB, a few seconds
//! ```
//!
//! Why tiles win: element `(i, j)` of `b` reads `a[i][j]` (along a row) and `a[j][i]`
//! (down a column, one cache line and, at n = 8192, one 4 KiB page per element). A chunk of
//! whole rows walks n rows of `a` for every row of `b`; a 128 × 128 tile (`--tile`) reads a
//! 128 × 128 block of `a` for its transposed part, which stays in cache. The kernel is the same in
//! both plans: the plan alone makes the loop cache-friendly. ("row plan, blocked kernel"
//! shows the same blocking written by hand inside each row chunk.)

use std::ops::Range;
use std::time::{Duration, Instant};

use clap::Parser;
use ndarray::{ArrayView2, ArrayViewMut2, Ix2};
use ndshm::{Chunk, ChunkPlan, CreateOptions, SharedNdArray, WorkerPool};

#[path = "shared/bench.rs"]
mod bench;
use bench::{check_shm_space, cores, median};

#[derive(Parser, Debug)]
#[command(about = "b = a + transpose(a), tile by tile vs row by row, on the warm pool")]
struct Args {
    /// Rows (and columns) of the matrix [default: 8192, or 1024 with --quick].
    #[arg(long)]
    size: Option<usize>,
    /// Tile length along each axis (also the block of the blocked kernels).
    #[arg(long, default_value_t = 128)]
    tile: usize,
    /// Executors, the caller included (default: the CPUs this process may use).
    #[arg(long)]
    workers: Option<usize>,
    /// Timed repetitions per row (the median is shown) [default: 5, or 3 with --quick].
    #[arg(long)]
    reps: Option<usize>,
    /// A quick run: 1024 x 1024, 3 repetitions (a few seconds, 17 MB of /dev/shm).
    #[arg(long)]
    quick: bool,
}

/// `b[r][c] = a[r][c] + a[c][r]` for the rows `rows` and columns `cols` of the matrix,
/// element by element in row order; `b` holds exactly that block.
fn add_transpose_block(
    a: &ArrayView2<'_, f64>,
    b: &mut ArrayViewMut2<'_, f64>,
    rows: Range<usize>,
    cols: Range<usize>,
) {
    let n = a.ncols();
    let a = a.as_slice().expect("the input is one C-order block");
    for (bi, i) in rows.enumerate() {
        let mut brow = b.row_mut(bi);
        let brow = brow.as_slice_mut().expect("rows of a C-order array");
        let arow = &a[i * n..(i + 1) * n];
        for (out, j) in brow.iter_mut().zip(cols.clone()) {
            *out = arow[j] + a[j * n + i];
        }
    }
}

/// The pool kernel, for any plan: the chunk's rows and columns (whole when not split).
fn kernel(c: Chunk, a: ArrayView2<'_, f64>, mut b: ArrayViewMut2<'_, f64>, _: &()) {
    let n = a.nrows();
    let rows = c.range_along(0).unwrap_or(0..n);
    let cols = c.range_along(1).unwrap_or(0..n);
    add_transpose_block(&a, &mut b, rows, cols);
}

/// The same, blocked by hand inside the chunk: `tile × tile` blocks of its rows.
fn blocked_kernel(c: Chunk, a: ArrayView2<'_, f64>, mut b: ArrayViewMut2<'_, f64>, t: &usize) {
    let n = a.nrows();
    let rows = c.range_along(0).unwrap_or(0..n);
    let t = *t;
    for r0 in (rows.start..rows.end).step_by(t) {
        let r1 = (r0 + t).min(rows.end);
        for c0 in (0..n).step_by(t) {
            let c1 = (c0 + t).min(n);
            let mut block = b.slice_mut(ndarray::s![r0 - rows.start..r1 - rows.start, c0..c1]);
            add_transpose_block(&a, &mut block, r0..r1, c0..c1);
        }
    }
}

/// Checks `b == a + aᵀ` exactly (the sum of the same two values in either order).
fn check(
    a: &SharedNdArray<f64, Ix2>,
    b: &SharedNdArray<f64, Ix2>,
    what: &str,
) -> Result<(), String> {
    let (a, b) = (a.view(), b.view());
    for ((i, j), &v) in b.indexed_iter() {
        let want = a[[i, j]] + a[[j, i]];
        if v != want {
            return Err(format!("{what}: b[{i}][{j}] = {v}, expected {want}"));
        }
    }
    Ok(())
}

struct Row {
    variant: &'static str,
    plan: String,
    time: Duration,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // Ctrl-C stops and reaps the workers and unlinks the two segments.
    let result = ndshm::SignalCleanup::install()
        .map_err(Into::into)
        .and_then(|_cleanup| run(args));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tiles: error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let n = args.size.unwrap_or(if args.quick { 1024 } else { 8192 });
    let reps = args.reps.unwrap_or(if args.quick { 3 } else { 5 }).max(1);
    let workers = args.workers.unwrap_or_else(cores).max(1);
    let t = args.tile.max(1);
    let need = 2 * 8 * (n * n) as u64 + 2 * 8192;
    println!(
        "ndshm tiles: b = a + aT on {n} x {n} f64 ({:.0} MB per matrix, {:.0} MB of /dev/shm), \
         {workers} executors, {t} x {t} tiles, median of {reps} runs",
        (8 * n * n) as f64 / 1e6,
        need as f64 / 1e6
    );
    check_shm_space(need, "--quick (17 MB) or a smaller --size")?;

    // The pool first: its workers are forked before anything else runs.
    let mut pool = WorkerPool::new(workers)?;
    let opts = || CreateOptions::unique_with_prefix("tiles-example-");
    let mut a = SharedNdArray::<f64, Ix2>::zeros(opts(), (n, n))?;
    let mut b = SharedNdArray::<f64, Ix2>::zeros(opts(), (n, n))?;
    for ((i, j), v) in a.view_mut().indexed_iter_mut() {
        *v = (i * n + j) as f64 * 0.25 + (j % 7) as f64;
    }

    let rows_plan = ChunkPlan::balanced_along(a.shape(), 0, 4 * workers)?;
    let tile_plan = ChunkPlan::tiles_for(&a, &[t, t])?;
    let mut table: Vec<Row> = Vec::new();
    let mut time = |variant: &'static str,
                    plan: String,
                    b: &mut SharedNdArray<f64, Ix2>,
                    f: &mut dyn FnMut(&mut SharedNdArray<f64, Ix2>) -> ndshm::Result<()>|
     -> Result<(), Box<dyn std::error::Error>> {
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps {
            b.view_mut().fill(0.0);
            let start = Instant::now();
            f(b)?;
            times.push(start.elapsed());
        }
        check(&a, b, variant)?;
        table.push(Row {
            variant,
            plan,
            time: median(times),
        });
        Ok(())
    };

    time("serial, row by row", "-".into(), &mut b, &mut |b| {
        let av = a.view();
        add_transpose_block(&av, &mut b.view_mut(), 0..n, 0..n);
        Ok(())
    })?;
    time(
        "serial, blocked",
        format!("{t} x {t} blocks"),
        &mut b,
        &mut |b| {
            let whole = ChunkPlan::balanced(n, 1)?.get(0).expect("one chunk");
            blocked_kernel(whole, a.view(), b.view_mut(), &t);
            Ok(())
        },
    )?;
    let rows_desc = format!("{} row blocks", rows_plan.num_chunks());
    time("pool, row plan", rows_desc.clone(), &mut b, &mut |b| {
        pool.map_into(&a, b, &rows_plan, (), kernel)
    })?;
    time(
        "pool, row plan, blocked kernel",
        rows_desc,
        &mut b,
        &mut |b| pool.map_into(&a, b, &rows_plan, t, blocked_kernel),
    )?;
    time(
        "pool, tile plan",
        format!("{} tiles of {t} x {t}", tile_plan.num_chunks()),
        &mut b,
        &mut |b| pool.map_into(&a, b, &tile_plan, (), kernel),
    )?;

    let by = |name: &str| {
        table
            .iter()
            .find(|r| r.variant == name)
            .map(|r| r.time)
            .expect("measured")
    };
    let (rows_t, serial_t) = (by("pool, row plan"), by("serial, row by row"));
    println!(
        "{:<32} {:<24} {:>10} {:>13} {:>10}",
        "variant", "plan", "time (ms)", "vs row plan", "vs serial"
    );
    for r in &table {
        println!(
            "{:<32} {:<24} {:>10.1} {:>12.2}x {:>9.2}x",
            r.variant,
            r.plan,
            r.time.as_secs_f64() * 1e3,
            rows_t.as_secs_f64() / r.time.as_secs_f64(),
            serial_t.as_secs_f64() / r.time.as_secs_f64(),
        );
    }
    let tiles_t = by("pool, tile plan");
    println!(
        "tile plan vs row plan (same kernel, same pool): {:.2}x faster; every result checked \
         (b == a + aT)",
        rows_t.as_secs_f64() / tiles_t.as_secs_f64()
    );
    Ok(())
}
