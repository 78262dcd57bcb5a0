//! Deadlines and cancellation on the warm `WorkerPool`: a job with one chunk that never
//! ends, stopped by its deadline and by a cancel token, and what is left afterwards.
//!
//! ```text
//! cargo run --release --example pool_deadline              # 20 stops of each kind
//! cargo run --release --example pool_deadline -- --quick   # 5 stops of each kind, < 5 s
//! ```
//!
//! Rows (one table, all measured in this run):
//! - how long after the deadline the `Timeout` error came back (the issue's goal: within
//!   10 ms), which includes killing the stuck worker, waiting until the pool's fork server
//!   reaped it, and forking its replacement;
//! - how long after `cancel()` (from another thread) the `Cancelled` error came back;
//! - the tiny-job round trip (1000 f64, 2 chunks, dispatch forced) without options and
//!   with a timeout (then the caller runs no chunk), and their ratio;
//! - after every stop: the next job ran on all workers, no killed worker is left (not even
//!   a zombie), and after the pool and the array are dropped, no process and no segment.

use std::time::{Duration, Instant};

use clap::Parser;
use ndarray::{ArrayViewMut1, Ix1};
use ndshm::{
    CancelToken, Chunk, ChunkPlan, CreateOptions, ErrorKind, JobOptions, SharedNdArray, WorkerPool,
};

#[derive(Parser, Debug)]
#[command(about = "Deadline and cancel latency of WorkerPool jobs with a chunk that never ends")]
struct Args {
    /// A quick run: 5 stops of each kind, 2,000 tiny jobs.
    #[arg(long)]
    quick: bool,
    /// Stops of each kind [default: 20, or 5 with --quick].
    #[arg(long)]
    reps: Option<usize>,
    /// The job timeout in milliseconds.
    #[arg(long, default_value_t = 100)]
    timeout_ms: u64,
}

/// Never ends (a busy loop without system calls, the worst case for stopping a worker).
fn endless(_: Chunk, _: ArrayViewMut1<'_, f64>, _: &()) {
    loop {
        std::hint::spin_loop();
    }
}

fn square(_: Chunk, mut x: ArrayViewMut1<'_, f64>, _: &()) {
    x.mapv_inplace(|v| v * v);
}

fn record_pid(_: Chunk, mut x: ArrayViewMut1<'_, f64>, _: &()) {
    x.fill(f64::from(std::process::id()));
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn gone(pid: i32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits (at most 5 s) until `pid` is gone.
fn reaped(pid: i32) -> bool {
    let t = Instant::now();
    while !gone(pid) {
        if t.elapsed() > Duration::from_secs(5) {
            return false;
        }
        std::thread::yield_now();
    }
    true
}

/// After a stop: the next job runs on every worker (one 50 ms chunk each; with a backstop
/// timeout, so the caller runs none), and the killed workers are gone.
fn healthy(
    pool: &mut WorkerPool,
    probe: &mut SharedNdArray<f64, Ix1>,
    before: &[i32],
) -> Result<bool, ndshm::Error> {
    let after = pool.worker_pids();
    let killed_gone = before
        .iter()
        .filter(|p| !after.contains(p))
        .all(|&p| reaped(p));
    let plan = ChunkPlan::balanced(probe.len(), after.len())?;
    let opts = pool.job_options().clone();
    pool.set_job_options(JobOptions::new().timeout(Duration::from_secs(30)))?;
    pool.map(probe, &plan, (), |c, x, _: &()| {
        std::thread::sleep(Duration::from_millis(50));
        record_pid(c, x, &());
    })?;
    pool.set_job_options(opts)?;
    let mut ran: Vec<i32> = probe.view().iter().map(|&p| p as i32).collect();
    ran.sort_unstable();
    ran.dedup();
    let mut workers = after.clone();
    workers.sort_unstable();
    Ok(killed_gone && ran == workers)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let reps = args.reps.unwrap_or(if args.quick { 5 } else { 20 }).max(1);
    let tiny_iters = if args.quick { 2_000 } else { 20_000 };
    let timeout = Duration::from_millis(args.timeout_ms.max(1));

    let mut pool = WorkerPool::new(3)?;
    let first_workers = pool.worker_pids();
    let mut all_workers = first_workers.clone();
    let mut a = SharedNdArray::<f64, Ix1>::zeros(CreateOptions::unique(), 1000)?;
    let mut probe = SharedNdArray::<f64, Ix1>::zeros(CreateOptions::unique(), 2)?;
    let names = [a.name().to_string(), probe.name().to_string()];
    let one = ChunkPlan::balanced(1000, 1)?;
    let mut all_healthy = true;

    // Deadline: how late the Timeout error comes back.
    let mut late = Vec::new();
    pool.set_job_options(JobOptions::new().timeout(timeout))?;
    for _ in 0..reps {
        let before = pool.worker_pids();
        let t = Instant::now();
        let err = pool.map(&mut a, &one, (), endless).unwrap_err();
        let took = t.elapsed();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        late.push(took.saturating_sub(timeout));
        all_healthy &= healthy(&mut pool, &mut probe, &before)?;
        all_workers.extend(pool.worker_pids());
    }

    // Cancel from another thread: how long after cancel() the Cancelled error comes back.
    let mut cancel_lat = Vec::new();
    let token = CancelToken::new();
    pool.set_job_options(JobOptions::new().cancel_token(&token))?;
    for _ in 0..reps {
        token.reset();
        let before = pool.worker_pids();
        let canceller = {
            let token = token.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                let at = Instant::now();
                token.cancel();
                at
            })
        };
        let err = pool.map(&mut a, &one, (), endless).unwrap_err();
        let returned = Instant::now();
        let at = canceller.join().expect("the canceller thread panicked");
        assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
        cancel_lat.push(returned.saturating_duration_since(at));
        all_healthy &= healthy(&mut pool, &mut probe, &before)?;
        all_workers.extend(pool.worker_pids());
    }

    // Tiny-job round trip, without options and with a timeout (dispatch forced), on a
    // pool of one worker + the caller (the two chunks: one each, or both on the worker).
    let mut small = WorkerPool::new(2)?;
    all_workers.extend(small.worker_pids());
    let two = ChunkPlan::balanced(1000, 2)?;
    let mut tiny = |opts: JobOptions| -> Result<Duration, ndshm::Error> {
        small.set_job_options(opts)?;
        let mut v = Vec::with_capacity(tiny_iters);
        for _ in 0..tiny_iters {
            let t = Instant::now();
            small.map(&mut a, &two, (), square)?;
            v.push(t.elapsed());
        }
        Ok(percentile(v, 0.5))
    };
    let plain = tiny(JobOptions::NONE)?;
    let timed = tiny(JobOptions::new().timeout(Duration::from_secs(60)))?;

    drop(small);
    drop(pool);
    drop((a, probe));
    all_workers.sort_unstable();
    all_workers.dedup();
    let processes_left = all_workers.iter().filter(|&&p| !reaped(p)).count();
    let segments_left = names
        .iter()
        .filter(|n| std::path::Path::new("/dev/shm").join(n).exists())
        .count();

    println!(
        "pool_deadline: 3 executors, a 1-chunk job that never ends, timeout {} ms, {reps} stops \
         each; tiny jobs on 2 executors",
        args.timeout_ms
    );
    println!(
        "{:<58} {:>12} {:>12} {:>8}",
        "measure", "median", "max", "goal"
    );
    println!(
        "{:<58} {:>9.2} ms {:>9.2} ms {:>8}",
        "deadline -> Timeout returned (kill, reap, respawn)",
        ms(percentile(late.clone(), 0.5)),
        ms(percentile(late.clone(), 1.0)),
        "10 ms"
    );
    println!(
        "{:<58} {:>9.2} ms {:>9.2} ms {:>8}",
        "cancel() from a thread -> Cancelled returned",
        ms(percentile(cancel_lat.clone(), 0.5)),
        ms(percentile(cancel_lat.clone(), 1.0)),
        "10 ms"
    );
    println!(
        "{:<58} {:>9.2} us {:>12} {:>8}",
        "tiny job, dispatch forced, no options",
        us(plain),
        "",
        "1 us"
    );
    println!(
        "{:<58} {:>9.2} us {:>12} {:>8}",
        format!(
            "tiny job, with a timeout (caller runs no chunk): x{:.2}",
            timed.as_secs_f64() / plain.as_secs_f64()
        ),
        us(timed),
        "",
        ""
    );
    println!(
        "{:<58} {:>12}",
        "pool healthy after every stop (next job on all workers)",
        if all_healthy { "yes" } else { "NO" }
    );
    println!(
        "{:<58} {:>12}",
        format!("processes left of {} workers seen", all_workers.len()),
        processes_left
    );
    println!("{:<58} {:>12}", "segments left", segments_left);
    let late_max = percentile(late, 1.0);
    let cancel_max = percentile(cancel_lat, 1.0);
    println!(
        "verdict: {}",
        if late_max <= Duration::from_millis(10) && cancel_max <= Duration::from_millis(10) {
            "every stop within 10 ms"
        } else {
            "some stop took longer than 10 ms (a loaded machine?)"
        }
    );
    if !all_healthy || processes_left != 0 || segments_left != 0 {
        return Err("the pool was not healthy after a stop, or something was left".into());
    }
    Ok(())
}
