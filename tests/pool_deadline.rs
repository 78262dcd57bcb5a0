//! Deadlines, cancellation, Ctrl-C and submit-and-wait on the worker pool, over real
//! forked workers. Every test runs under a deadline of its own ([`within`]), and the jobs
//! that should end carry a 30 s timeout or run in a scope joined under that deadline.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ndarray::{ArrayView1, ArrayViewMut1, Ix1};
use ndshm::{CancelToken, Chunk, ChunkPlan, ErrorKind, JobOptions, SharedNdArray, WorkerPool};

/// The limit of every test: past it the test fails instead of hanging.
const TEST_LIMIT: Duration = Duration::from_secs(60);
/// The backstop timeout of jobs that should end on their own.
const BACKSTOP: Duration = Duration::from_secs(30);

fn name(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "t-dl-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `f` on a thread and fails the test if it has not returned within [`TEST_LIMIT`].
fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(TEST_LIMIT) {
        Ok(v) => {
            t.join().unwrap();
            v
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The test body panicked: report its panic.
            std::panic::resume_unwind(t.join().unwrap_err())
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("the test ran past {TEST_LIMIT:?}"),
    }
}

/// Whether process `pid` has ended and been reaped (polled until the deadline).
fn gone(pid: i32) -> bool {
    common::within_deadline(|| !std::path::Path::new(&format!("/proc/{pid}")).exists())
}

fn segment_gone(name: &str) -> bool {
    !std::path::Path::new("/dev/shm").join(name).exists()
}

/// Chunk 2 never ends (a busy loop, no system call); the others fill their part with 1.
fn chunk_2_never_ends(c: Chunk, mut x: ArrayViewMut1<'_, u32>, _: &()) {
    if c.index == 2 {
        loop {
            std::hint::spin_loop();
        }
    }
    x.fill(1);
}

/// Never ends (sleeping).
fn never_ends(_: Chunk, _: ArrayViewMut1<'_, u32>, _: &()) {
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Records the executing process in the chunk.
fn record_pid(_: Chunk, mut x: ArrayViewMut1<'_, i32>, _: &()) {
    x.fill(std::process::id() as i32);
}

/// Sleeps `ms`, then records the executing process.
fn record_pid_slowly(_: Chunk, mut x: ArrayViewMut1<'_, i32>, ms: &u64) {
    std::thread::sleep(Duration::from_millis(*ms));
    x.fill(std::process::id() as i32);
}

fn fill_one(_: Chunk, mut x: ArrayViewMut1<'_, u32>, _: &()) {
    x.fill(1);
}

#[test]
fn an_endless_chunk_returns_timeout_naming_it_and_the_pool_stays_healthy() {
    within(|| {
        let n = name("endless");
        let mut pool = WorkerPool::new(3).unwrap();
        let before = pool.worker_pids();
        let mut a = SharedNdArray::<u32, Ix1>::zeros(&n, 40).unwrap();
        let plan = ChunkPlan::balanced(40, 4).unwrap();
        let timeout = Duration::from_millis(500);
        pool.set_job_options(JobOptions::new().timeout(timeout))
            .unwrap();
        let t = Instant::now();
        let err = pool.map(&mut a, &plan, (), chunk_2_never_ends).unwrap_err();
        let took = t.elapsed();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        assert!(
            err.message()
                .contains("1 of 4 chunks did not finish (chunk 2)"),
            "{err}"
        );
        assert!(
            took >= timeout,
            "returned after {took:?}, before the deadline"
        );
        assert!(
            took < timeout + Duration::from_millis(1500),
            "returned {took:?} after the start"
        );
        // The other chunks finished (the free worker took them).
        let v = a.view();
        assert!(v.iter().take(20).chain(v.iter().skip(30)).all(|&x| x == 1));
        // The stuck worker was killed, reaped and replaced.
        let after = pool.worker_pids();
        assert_eq!(after.len(), 2);
        let killed: Vec<i32> = before
            .iter()
            .copied()
            .filter(|p| !after.contains(p))
            .collect();
        assert_eq!(killed.len(), 1, "before {before:?}, after {after:?}");
        assert!(
            gone(killed[0]),
            "the killed worker {} is still there",
            killed[0]
        );
        // The next job runs on every worker: two chunks of 1 s, one per worker.
        pool.set_job_options(JobOptions::new().timeout(BACKSTOP))
            .unwrap();
        let mut p = SharedNdArray::<i32, Ix1>::zeros(&name("pids"), 2).unwrap();
        let two = ChunkPlan::balanced(2, 2).unwrap();
        pool.map(&mut p, &two, 1000u64, record_pid_slowly).unwrap();
        let mut ran: Vec<i32> = p.view().to_vec();
        ran.sort_unstable();
        let mut workers = pool.worker_pids();
        workers.sort_unstable();
        assert_eq!(ran, workers, "not every worker ran a chunk");
        let pname = p.name().to_string();
        drop((a, p));
        drop(pool);
        for pid in before.iter().chain(&after) {
            assert!(gone(*pid), "worker {pid} outlived its pool");
        }
        assert!(segment_gone(&n) && segment_gone(&pname));
    });
}

#[test]
fn a_deadline_already_past_runs_nothing() {
    within(|| {
        let mut pool = WorkerPool::new(2).unwrap();
        let mut a = SharedNdArray::<u32, Ix1>::zeros(&name("past"), 8).unwrap();
        let plan = ChunkPlan::balanced(8, 4).unwrap();
        pool.set_job_options(JobOptions::new().deadline(Instant::now()))
            .unwrap();
        let err = pool.map(&mut a, &plan, (), fill_one).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout);
        assert!(err.message().contains("chunks 0..=3"), "{err}");
        let err = pool
            .map_reduce(&a, &plan, (), |_, x: ArrayView1<'_, u32>, _: &()| x.sum())
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout);
        // A token cancelled before the job: Cancelled, nothing ran.
        let token = CancelToken::new();
        token.cancel();
        pool.set_job_options(JobOptions::new().cancel_token(&token))
            .unwrap();
        let err = pool.map(&mut a, &plan, (), fill_one).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Cancelled);
        assert_eq!(a.view().sum(), 0, "a chunk ran");
        // Reset: the job runs (on the workers).
        token.reset();
        pool.map(&mut a, &plan, (), fill_one).unwrap();
        assert_eq!(a.view().sum(), 8);
    });
}

#[test]
fn bad_options_are_refused_with_a_typed_error() {
    within(|| {
        let mut pool = WorkerPool::new(2).unwrap();
        let err = pool
            .set_job_options(JobOptions::new().timeout(Duration::ZERO))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.message().contains("timeout of zero"), "{err}");
        assert!(pool.job_options().is_empty(), "refused options were kept");
        // A job that may be stopped runs no chunk in the caller: a pool without workers
        // cannot run it.
        let mut solo = WorkerPool::new(1).unwrap();
        solo.set_job_options(JobOptions::new().timeout(BACKSTOP))
            .unwrap();
        let mut a = SharedNdArray::<u32, Ix1>::zeros(&name("solo"), 4).unwrap();
        let plan = ChunkPlan::balanced(4, 2).unwrap();
        let err = solo.map(&mut a, &plan, (), fill_one).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.message().contains("at least 2 executors"), "{err}");
        // Nor a submitted job.
        solo.set_job_options(JobOptions::NONE).unwrap();
        let err = solo
            .scope(|s| s.map(&mut a, &plan, (), fill_one)?.join())
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert_eq!(a.view().sum(), 0, "a chunk ran");
    });
}

#[test]
fn cancel_from_another_thread_stops_an_endless_job() {
    within(|| {
        let mut pool = WorkerPool::new(3).unwrap();
        let before = pool.worker_pids();
        let token = CancelToken::new();
        pool.set_job_options(JobOptions::new().cancel_token(&token).timeout(BACKSTOP))
            .unwrap();
        let mut a = SharedNdArray::<u32, Ix1>::zeros(&name("cancel"), 4).unwrap();
        let plan = ChunkPlan::balanced(4, 2).unwrap();
        let canceller = {
            let token = token.clone();
            // Not a synchronisation: cancelled before or during the job, the job returns
            // Cancelled.
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                token.cancel();
            })
        };
        let t = Instant::now();
        let err = pool.map(&mut a, &plan, (), never_ends).unwrap_err();
        canceller.join().unwrap();
        assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
        assert!(t.elapsed() < BACKSTOP / 2, "took {:?}", t.elapsed());
        assert!(err.message().contains("chunks 0..=1"), "{err}");
        for pid in before {
            assert!(gone(pid), "stuck worker {pid} still there");
        }
        // Still cancelled: the next job does not start.
        let err = pool.map(&mut a, &plan, (), fill_one).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Cancelled);
        token.reset();
        pool.map(&mut a, &plan, (), fill_one).unwrap();
        assert_eq!(a.view().sum(), 4);
    });
}

#[test]
fn cancel_from_a_signal_handler_stops_an_endless_job() {
    within(|| {
        let mut pool = WorkerPool::new(2).unwrap();
        let token = CancelToken::new();
        let guard = token.cancel_on_signal(libc::SIGUSR1).unwrap();
        pool.set_job_options(JobOptions::new().cancel_token(&token).timeout(BACKSTOP))
            .unwrap();
        let mut a = SharedNdArray::<u32, Ix1>::zeros(&name("sig"), 2).unwrap();
        let plan = ChunkPlan::balanced(2, 1).unwrap();
        let raiser = std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(200));
            // SAFETY: raise has no memory preconditions; SIGUSR1's handler (the token's)
            // is installed while `guard` lives, which is until after this thread is joined.
            unsafe { libc::raise(libc::SIGUSR1) };
        });
        let t = Instant::now();
        let err = pool.map(&mut a, &plan, (), never_ends).unwrap_err();
        raiser.join().unwrap();
        drop(guard);
        assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
        assert!(t.elapsed() < BACKSTOP / 2, "took {:?}", t.elapsed());
        assert!(token.is_cancelled());
    });
}

/// What a child started by [`run_child_test`] does: `None` in the parent.
fn child_mode() -> Option<String> {
    std::env::var("NDSHM_DEADLINE_CHILD").ok()
}

/// Starts this test binary again running only `test`, in child mode `mode`; waits for its
/// line "running", sends it SIGINT, and returns its exit status, its output and how long
/// it took to end after the signal.
fn run_child_test(test: &str, mode: &str) -> (std::process::ExitStatus, String, Duration) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("NDSHM_DEADLINE_CHILD", mode)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut out = String::new();
    let limit = Instant::now() + BACKSTOP;
    loop {
        match rx.recv_timeout(limit.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                out.push_str(&line);
                out.push('\n');
                if line == "running" {
                    break;
                }
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the child did not start its job ({e}): {out}");
            }
        }
    }
    // SAFETY: kill has no memory preconditions; the pid is our unreaped child's.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > BACKSTOP {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child still ran {BACKSTOP:?} after SIGINT: {out}");
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let took = t.elapsed();
    reader.join().unwrap();
    while let Ok(line) = rx.try_recv() {
        out.push_str(&line);
        out.push('\n');
    }
    (status, out, took)
}

/// Child mode: a pool whose job never ends (its chunk prints "running"); prints the pool's
/// worker pids and its array's name first, and the job's error kind if it returns.
fn child_runs_an_endless_job(options: JobOptions) {
    let mut pool = WorkerPool::new(2).unwrap();
    pool.set_job_options(options).unwrap();
    let mut a = SharedNdArray::<u32, Ix1>::zeros(&name("child"), 2).unwrap();
    let pids = pool.worker_pids();
    ndshm::write_stdout(&format!("pids {}\nsegment {}\n", pids[0], a.name())).unwrap();
    let plan = ChunkPlan::balanced(2, 1).unwrap();
    let err = pool
        .map(&mut a, &plan, (), |_, _, _: &()| -> () {
            let _ = ndshm::write_stdout("running\n");
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        })
        .unwrap_err();
    ndshm::write_stdout(&format!("result {:?}\n", err.kind())).unwrap();
}

fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        // The harness's "test NAME ... " may precede the child's first line.
        .find_map(|l| l.split_once(key).map(|(_, v)| v))
        .unwrap_or_else(|| panic!("no '{key}' in the child's output: {out}"))
}

#[test]
fn ctrl_c_under_signal_cleanup_ends_a_running_job_promptly() {
    if child_mode().as_deref() == Some("cleanup") {
        let _cleanup = ndshm::SignalCleanup::install().unwrap();
        child_runs_an_endless_job(JobOptions::NONE);
        return;
    }
    within(|| {
        let (status, out, took) = run_child_test(
            "ctrl_c_under_signal_cleanup_ends_a_running_job_promptly",
            "cleanup",
        );
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}: {out}");
        assert!(took < Duration::from_secs(2), "ended {took:?} after SIGINT");
        let pid: i32 = field(&out, "pids ").parse().unwrap();
        assert!(gone(pid), "worker {pid} outlived the interrupted program");
        assert!(segment_gone(field(&out, "segment ")), "{out}");
        assert!(!out.contains("result"), "the job returned: {out}");
    });
}

#[test]
fn ctrl_c_with_a_cancel_token_returns_cancelled() {
    if child_mode().as_deref() == Some("token") {
        // SignalCleanup first: the token's handler, installed later, wins while it lives.
        let _cleanup = ndshm::SignalCleanup::install().unwrap();
        let token = CancelToken::new();
        let _ctrl_c = token.cancel_on_signal(libc::SIGINT).unwrap();
        child_runs_an_endless_job(JobOptions::new().cancel_token(&token).timeout(BACKSTOP));
        return;
    }
    within(|| {
        let (status, out, took) =
            run_child_test("ctrl_c_with_a_cancel_token_returns_cancelled", "token");
        assert!(status.success(), "{status:?}: {out}");
        assert!(out.contains("result Cancelled"), "{out}");
        assert!(took < Duration::from_secs(2), "ended {took:?} after SIGINT");
        let pid: i32 = field(&out, "pids ").parse().unwrap();
        assert!(gone(pid), "worker {pid} outlived the program");
        assert!(segment_gone(field(&out, "segment ")), "{out}");
    });
}

#[test]
fn a_submitted_job_runs_no_chunk_in_the_caller() {
    within(|| {
        let mut pool = WorkerPool::new(3).unwrap();
        // Even below the inline threshold a submitted job goes to the workers.
        pool.set_inline_below(1 << 20);
        let mut a = SharedNdArray::<i32, Ix1>::zeros(&name("submit"), 64).unwrap();
        let b = SharedNdArray::<u64, Ix1>::from_array(
            &name("sum"),
            &ndarray::Array1::from_iter(1..=64u64),
        )
        .unwrap();
        let plan = ChunkPlan::balanced(64, 8).unwrap();
        let (sums, pids) = pool
            .scope(|s| {
                let h = s.map(&mut a, &plan, (), record_pid)?;
                h.join()?;
                let sums = s
                    .map_reduce(&b, &plan, (), |_, x: ArrayView1<'_, u64>, _: &()| x.sum())?
                    .join()?;
                let pids = s
                    .map_reduce(&b, &plan, (), |_, _: ArrayView1<'_, u64>, _: &()| {
                        std::process::id()
                    })?
                    .join()?;
                Ok((sums, pids))
            })
            .unwrap();
        let me = std::process::id();
        let workers = pool.worker_pids();
        assert!(
            a.view()
                .iter()
                .all(|&p| p != me as i32 && workers.contains(&p)),
            "{:?}",
            a.view()
        );
        assert!(pids
            .iter()
            .all(|&p| p != me && workers.contains(&(p as i32))));
        assert_eq!(sums.len(), 8);
        assert_eq!(sums.iter().sum::<u64>(), 64 * 65 / 2);
        // A job with a deadline does not run chunks in the caller either.
        pool.set_job_options(JobOptions::new().timeout(BACKSTOP))
            .unwrap();
        a.view_mut().fill(0);
        pool.map(&mut a, &plan, (), record_pid).unwrap();
        assert!(a
            .view()
            .iter()
            .all(|&p| p != me as i32 && workers.contains(&p)));
    });
}

#[test]
fn forgetting_a_handle_inside_a_scope_still_joins() {
    within(|| {
        let mut pool = WorkerPool::new(3).unwrap();
        let mut a = SharedNdArray::<i32, Ix1>::zeros(&name("forget"), 8).unwrap();
        let plan = ChunkPlan::balanced(8, 4).unwrap();
        pool.scope(|s| {
            let h = s.map(&mut a, &plan, 100u64, record_pid_slowly)?;
            // The handle has no Drop today; the test pins that the scope, not the
            // handle, joins (a Drop added later must not become what soundness rests on).
            #[allow(clippy::forget_non_drop)]
            std::mem::forget(h);
            Ok(())
        })
        .unwrap();
        // The scope waited for every chunk (each sleeps 100 ms first).
        assert!(a.view().iter().all(|&p| p != 0), "{:?}", a.view());
        // An unjoined job's failure is the scope's error.
        let err = pool
            .scope(|s| {
                let _ = s.map(&mut a, &plan, (), |c, _, _: &()| {
                    if c.index == 3 {
                        Err("bad chunk")
                    } else {
                        Ok(())
                    }
                })?;
                Ok(())
            })
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WorkerFailed);
        assert!(err.message().contains("chunk 3"), "{err}");
    });
}

#[test]
fn a_second_submit_waits_for_the_first_and_keeps_its_results() {
    within(|| {
        let mut pool = WorkerPool::new(3).unwrap();
        let a = SharedNdArray::<u64, Ix1>::from_elem(&name("first"), 100, 1).unwrap();
        let b = SharedNdArray::<u64, Ix1>::from_elem(&name("second"), 100, 2).unwrap();
        let plan = ChunkPlan::balanced(100, 4).unwrap();
        fn slow_sum(_: Chunk, x: ArrayView1<'_, u64>, ms: &u64) -> u64 {
            std::thread::sleep(Duration::from_millis(*ms));
            x.sum()
        }
        let (first, second) = pool
            .scope(|s| {
                let h1 = s.map_reduce(&a, &plan, 50u64, slow_sum)?;
                // Waits for the first job, whose results are kept for h1.
                let h2 = s.map_reduce(&b, &plan, 0u64, slow_sum)?;
                let second = h2.join()?;
                let first = h1.join()?;
                Ok((first, second))
            })
            .unwrap();
        assert_eq!(first, vec![25; 4]);
        assert_eq!(second, vec![50; 4]);
    });
}

#[test]
fn a_timeout_inside_a_scope_is_the_handles_error() {
    within(|| {
        let mut pool = WorkerPool::new(2).unwrap();
        pool.set_job_options(JobOptions::new().timeout(Duration::from_millis(200)))
            .unwrap();
        let mut a = SharedNdArray::<u32, Ix1>::zeros(&name("scope-timeout"), 2).unwrap();
        let plan = ChunkPlan::balanced(2, 1).unwrap();
        let err = pool
            .scope(|s| s.map(&mut a, &plan, (), never_ends)?.join())
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        // Healthy after.
        pool.map(&mut a, &plan, (), fill_one).unwrap();
        assert_eq!(a.view().sum(), 2);
    });
}

/// Chunk 0 kills its own process; the others take 200 ms, then fill their part.
fn chunk_0_dies(c: Chunk, mut x: ArrayViewMut1<'_, u32>, _: &()) {
    if c.index == 0 {
        // SAFETY: raise has no memory preconditions; it ends this (worker) process.
        unsafe { libc::raise(libc::SIGKILL) };
    }
    std::thread::sleep(Duration::from_millis(200));
    x.fill(1);
}

#[test]
fn a_worker_dying_in_a_submitted_job_fails_it_without_a_hang() {
    within(|| {
        // The caller claims no chunk of a submitted job: when a worker dies, the claims are
        // closed so that the join does not wait for chunks nobody will run.
        let mut pool = WorkerPool::new(3).unwrap();
        let mut a = SharedNdArray::<u32, Ix1>::zeros(&name("dies"), 64).unwrap();
        let plan = ChunkPlan::balanced(64, 16).unwrap();
        let t = Instant::now();
        let err = pool
            .scope(|s| s.map(&mut a, &plan, (), chunk_0_dies)?.join())
            .unwrap_err();
        // The 15 other chunks would take 3 s on the one live worker: the claims were
        // closed when the death was seen.
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "took {:?}",
            t.elapsed()
        );
        assert_eq!(err.kind(), ErrorKind::WorkerFailed, "{err}");
        assert!(err.message().contains("chunk 0"), "{err}");
        // Replaced: the next submitted job runs.
        pool.scope(|s| s.map(&mut a, &plan, (), fill_one)?.join())
            .unwrap();
        assert_eq!(a.view().sum(), 64);
        assert_eq!(pool.worker_pids().len(), 2);
    });
}

#[test]
fn a_multi_array_job_submitted_in_a_scope_runs_only_on_workers() {
    within(|| {
        let mut pool = WorkerPool::new(3).unwrap();
        pool.set_inline_below(1 << 20);
        let n = 4000;
        let a = SharedNdArray::<f64, Ix1>::from_array(
            &name("zipa"),
            &ndarray::Array1::from_shape_fn(n, |i| i as f64),
        )
        .unwrap();
        let b = SharedNdArray::<f64, Ix1>::from_elem(&name("zipb"), n, 2.0).unwrap();
        let mut c = SharedNdArray::<f64, Ix1>::zeros(&name("zipc"), n).unwrap();
        let mut who = SharedNdArray::<u32, Ix1>::zeros(&name("zipwho"), n).unwrap();
        let plan = ChunkPlan::balanced(n, 8).unwrap();
        let sums = pool
            .scope(|s| {
                let h = s
                    .job(&plan)
                    .read(&a)
                    .read(&b)
                    .write(&mut c)
                    .write(&mut who)
                    .for_each((), |_, (a, b, mut c, mut who), _: &()| {
                        c.assign(&(&a * &b));
                        who.fill(std::process::id());
                    })?;
                // The caller is free while the job runs; a second job (submitted after the
                // first is joined) reads the inputs again: `c` stays borrowed by the first
                // job until the scope ends.
                h.join()?;
                s.job(&plan)
                    .read(&a)
                    .read(&b)
                    .map_reduce((), |_, (a, b), _: &()| a.dot(&b))?
                    .join()
            })
            .unwrap();
        let me = std::process::id();
        let workers = pool.worker_pids();
        assert!(who
            .view()
            .iter()
            .all(|&p| p != me && workers.contains(&(p as i32))));
        assert_eq!(sums.len(), 8);
        assert_eq!(sums.iter().sum::<f64>(), (n * (n - 1)) as f64);
        assert_eq!(c.view().sum(), (n * (n - 1)) as f64);
    });
}

#[test]
fn a_scoped_multi_array_job_is_checked_at_submit_and_honours_its_timeout() {
    within(|| {
        let mut pool = WorkerPool::new(2).unwrap();
        let a = SharedNdArray::<u8, Ix1>::zeros(&name("zipbad"), 10).unwrap();
        let mut b = SharedNdArray::<u8, Ix1>::zeros(&name("zipout"), 4).unwrap();
        let plan = ChunkPlan::balanced(4, 2).unwrap();
        // A length that does not fit the plan: refused when submitted, nothing runs.
        let err = pool
            .scope(|s| {
                s.job(&plan)
                    .read(&a)
                    .write(&mut b)
                    .for_each((), |_, _, _: &()| {})
                    .map(|_| ())
            })
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        // A chunk that never ends, stopped by the job's own timeout; the pool goes on.
        let started = Instant::now();
        let err = pool
            .scope(|s| {
                s.job(&plan)
                    .write(&mut b)
                    .timeout(Duration::from_millis(200))
                    .for_each((), |c, _, _: &()| {
                        if c.index == 1 {
                            loop {
                                std::thread::sleep(Duration::from_secs(1)); // never ends
                            }
                        }
                    })?
                    .join()
            })
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        assert!(err.message().contains("chunk 1"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(20));
        pool.job(&plan)
            .write(&mut b)
            .for_each((), |_, (mut x,), _: &()| x.fill(3))
            .unwrap();
        assert_eq!(b.view().sum(), 12);
    });
}
