//! The warm worker pool over real forked processes and real /dev/shm segments.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{within_deadline, Name};
use ndarray::{Ix1, Ix2};
use ndshm::{Chunk, ChunkPlan, ErrorKind, SharedNdArray, SharedValue, WorkerPool};

fn name(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "t-pool-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn range(name: &str, n: usize) -> SharedNdArray<f64, Ix1> {
    SharedNdArray::from_array(name, &ndarray::Array1::range(0.0, n as f64, 1.0)).unwrap()
}

fn square(_: Chunk, mut x: ndarray::ArrayViewMut1<'_, f64>, _: &()) {
    x.mapv_inplace(|v| v * v);
}

fn is_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            let state = stat[stat.rfind(')').unwrap() + 2..].chars().next().unwrap();
            // A zombie would still be listed with state Z: that is a failure here.
            assert_ne!(state, 'Z', "process {pid} is a zombie");
            false
        }
    }
}

#[test]
fn squares_in_place_with_any_plan() {
    let mut pool = WorkerPool::new(3).unwrap();
    assert_eq!(pool.executors(), 3);
    assert_eq!(pool.worker_pids().len(), 2);
    let n = 10_007;
    let mut a = range(&name("sq"), n);
    let plans = [
        ChunkPlan::balanced(n, 3).unwrap(),
        ChunkPlan::balanced(n, 1).unwrap(),
        ChunkPlan::balanced(n, 97).unwrap(),
        ChunkPlan::fixed(n, 1000).unwrap(),
        ChunkPlan::fixed(n, 1).unwrap(),
    ];
    for plan in &plans {
        a.view_mut()
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = i as f64);
        pool.map(&mut a, plan, (), square).unwrap();
        for (i, &v) in a.as_slice().unwrap().iter().enumerate() {
            assert_eq!(v, (i * i) as f64, "plan {:?} index {i}", plan.num_chunks());
        }
    }
}

#[test]
fn two_dimensional_along_either_axis() {
    let mut pool = WorkerPool::new(2).unwrap();
    let mut a = SharedNdArray::<i64, Ix2>::zeros(&name("2d"), (7, 9)).unwrap();
    for axis in 0..2 {
        let plan = ChunkPlan::balanced_along(a.shape(), axis, 4).unwrap();
        pool.map(&mut a, &plan, axis as i64, |c, mut v, &axis| {
            v.fill(c.index as i64 * 10 + axis)
        })
        .unwrap();
        for (idx, &v) in a.view().indexed_iter() {
            let along = if axis == 0 { idx.0 } else { idx.1 };
            let chunk = plan
                .iter()
                .position(|c| c.range().contains(&along))
                .unwrap();
            assert_eq!(v, chunk as i64 * 10 + axis as i64);
        }
    }
    let bad = ChunkPlan::balanced(8, 2).unwrap();
    let err = pool.map(&mut a, &bad, 0i64, |_, _, _| {}).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn map_into_and_map_reduce() {
    let mut pool = WorkerPool::new(2).unwrap();
    let n = 5000;
    let x = range(&name("in"), n);
    let mut y = SharedNdArray::<f32, Ix1>::zeros(&name("out"), n).unwrap();
    let plan = ChunkPlan::fixed(n, 333).unwrap();
    pool.map_into(&x, &mut y, &plan, 2.0f64, |c, x, mut y, &k| {
        y.zip_mut_with(&c.of(&x), |o, &i| *o = (i * k) as f32)
    })
    .unwrap();
    assert!(y
        .as_slice()
        .unwrap()
        .iter()
        .enumerate()
        .all(|(i, &v)| v == (2 * i) as f32));
    // Per-chunk (sum, max), in chunk order.
    let parts = pool
        .map_reduce(&x, &plan, (), |c, x, _: &()| {
            [x.sum(), x.fold(f64::MIN, |m, &v| m.max(v)), c.index as f64]
        })
        .unwrap();
    assert_eq!(parts.len(), plan.num_chunks());
    for (k, (p, c)) in parts.iter().zip(plan.iter()).enumerate() {
        let sum: f64 = c.range().map(|i| i as f64).sum();
        assert_eq!(p, &[sum, (c.end - 1) as f64, k as f64]);
    }
    let err = pool
        .map_into(
            &x,
            &mut y,
            &ChunkPlan::balanced(n + 1, 2).unwrap(),
            (),
            |_, _, _, _| {},
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn arrays_made_after_the_pool_and_reused_names() {
    let mut pool = WorkerPool::new(2).unwrap();
    let nm = name("reuse");
    let plan = ChunkPlan::balanced(4000, 16).unwrap();
    for round in 0..3 {
        // Same name, a new segment each round (new id): workers must not use the mapping
        // they cached for the previous one.
        let mut a = SharedNdArray::<f64, Ix1>::from_elem(&nm, 4000, round as f64).unwrap();
        pool.map(&mut a, &plan, round as f64, |_, mut x, &r| {
            x.mapv_inplace(|v| v + r + 1.0)
        })
        .unwrap();
        assert!(a
            .as_slice()
            .unwrap()
            .iter()
            .all(|&v| v == 2.0 * round as f64 + 1.0));
    }
    // Another length under the same name.
    let mut a = SharedNdArray::<f64, Ix1>::zeros(&nm, 100).unwrap();
    pool.map(
        &mut a,
        &ChunkPlan::balanced(100, 7).unwrap(),
        (),
        |c, mut x, _: &()| x.fill(c.index as f64),
    )
    .unwrap();
    assert_eq!(a.as_slice().unwrap()[99], 6.0);
}

#[test]
fn empty_arrays_and_single_executor() {
    let mut pool = WorkerPool::new(2).unwrap();
    let mut a = SharedNdArray::<f64, Ix1>::zeros(&name("empty"), 0).unwrap();
    let plan = ChunkPlan::balanced(0, 4).unwrap();
    pool.map(&mut a, &plan, (), square).unwrap();
    let r = pool
        .map_reduce(&a, &plan, (), |_, x, _: &()| x.sum())
        .unwrap();
    assert!(r.is_empty());

    let mut solo = WorkerPool::new(1).unwrap();
    assert!(solo.worker_pids().is_empty());
    let mut b = range(&name("solo"), 100);
    solo.map(&mut b, &ChunkPlan::balanced(100, 5).unwrap(), (), square)
        .unwrap();
    assert_eq!(b.as_slice().unwrap()[9], 81.0);
    assert_eq!(
        WorkerPool::new(0).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn inline_shortcut_gives_the_same_result() {
    let mut pool = WorkerPool::new(2).unwrap();
    pool.set_inline_below(1 << 20);
    let mut a = range(&name("inline"), 1000);
    pool.map(&mut a, &ChunkPlan::balanced(1000, 2).unwrap(), (), square)
        .unwrap();
    for (i, &v) in a.as_slice().unwrap().iter().enumerate() {
        assert_eq!(v, (i * i) as f64, "index {i}");
    }
}

/// The flag a worker raises when it starts a chunk of job `token` of test process `parent`.
fn started_flag(parent: i32, token: i32) -> String {
    format!("t-pool-{parent}-started-{token}")
}

/// A fresh token per job (the caller waits on its first chunk of each job), and the job's
/// "a worker started" flag, unlinked when the guard drops.
fn token() -> (i32, Name) {
    static T: AtomicU32 = AtomicU32::new(1);
    let token = T.fetch_add(1, Ordering::Relaxed) as i32;
    let flag = Name(started_flag(std::process::id() as i32, token));
    SharedValue::<u32>::create(ndshm::CreateOptions::named(&flag).persistent(true), 0).unwrap();
    (token, flag)
}

/// Runs in the caller: its first chunk of a job waits until a worker has started a chunk
/// of the job too, so that the failure under test surely happens in a worker, however
/// loaded the machine. Runs in a worker: raises that flag, then does what `how` says.
fn misbehave(c: Chunk, _x: ndarray::ArrayViewMut1<'_, f64>, p: &[i32; 3]) -> Result<(), String> {
    static LAST: AtomicU32 = AtomicU32::new(0);
    let [parent, how, token] = *p;
    let flag = SharedValue::<u32>::open(&started_flag(parent, token)).map_err(|e| e.to_string())?;
    if std::process::id() as i32 == parent {
        if LAST.swap(token as u32, Ordering::Relaxed) != token as u32
            && !within_deadline(|| flag.load() == 1)
        {
            return Err("no worker started a chunk of this job".into());
        }
        return Ok(());
    }
    flag.store(1);
    drop(flag);
    match how {
        0 => panic!("boom in chunk {}", c.index),
        1 => Err(format!("bad data in chunk {}", c.index)),
        // SAFETY: ends this worker process at once (the failure under test).
        2 => unsafe { libc::_exit(3) },
        // SAFETY: kills this worker process with SIGSEGV (the failure under test); std's
        // handler would ignore a raised SIGSEGV once, so restore the default action first.
        3 => unsafe {
            libc::signal(libc::SIGSEGV, libc::SIG_DFL);
            libc::raise(libc::SIGSEGV);
            Ok(())
        },
        _ => {
            std::thread::sleep(Duration::from_secs(20));
            Ok(())
        }
    }
}

#[test]
fn failures_name_chunk_and_cause_and_the_pool_recovers() {
    let mut pool = WorkerPool::new(2).unwrap();
    let mut a = range(&name("fail"), 800);
    let plan = ChunkPlan::balanced(800, 8).unwrap();
    let me = std::process::id() as i32;
    let cases = [
        (3, "was killed by SIGSEGV"),
        (0, "panicked: boom in chunk"),
        (1, "returned an error: bad data in chunk"),
        (2, "exited with code 3"),
        (3, "was killed by SIGSEGV"),
        (3, "was killed by SIGSEGV"),
    ];
    for (how, want) in cases {
        let token = token();
        let before = pool.worker_pids();
        let err = pool
            .map(&mut a, &plan, [me, how, token.0], misbehave)
            .expect_err(&format!("case {how}"));
        assert_eq!(err.kind(), ErrorKind::WorkerFailed, "{err}");
        let msg = err.to_string();
        assert!(msg.contains(want), "case {how}: {msg}");
        assert!(msg.contains("chunk "), "case {how}: {msg}");
        if how >= 2 {
            // The dead worker was reaped and replaced.
            assert!(is_gone(before[0]));
            assert_ne!(pool.worker_pids(), before);
        } else {
            assert_eq!(pool.worker_pids(), before);
        }
        assert_eq!(pool.worker_pids().len(), 1);
        // The next job runs on the pool.
        let mut b = range(&name("after"), 1000);
        pool.map(&mut b, &ChunkPlan::balanced(1000, 4).unwrap(), (), square)
            .unwrap();
        assert_eq!(b.as_slice().unwrap()[30], 900.0);
    }
}

#[test]
fn sigkill_mid_job_is_reported_without_hang_zombie_or_leak() {
    let mut pool = WorkerPool::new(2).unwrap();
    let nm = name("kill");
    let mut a = range(&nm, 800);
    let victim = pool.worker_pids()[0];
    let token = token();
    let killer = std::thread::spawn(move || {
        // Kill the worker once it is inside a chunk (blocked in clock_nanosleep, which
        // glibc's nanosleep uses), not while it is idle on its futex.
        let in_sleep = format!("{} ", libc::SYS_clock_nanosleep);
        let asleep_in_chunk = || {
            std::fs::read_to_string(format!("/proc/{victim}/syscall"))
                .is_ok_and(|s| s.starts_with(&in_sleep))
        };
        let t = std::time::Instant::now();
        while !asleep_in_chunk() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        // SAFETY: sends SIGKILL to our own worker process.
        unsafe { libc::kill(victim, libc::SIGKILL) };
    });
    let me = std::process::id() as i32;
    let started = std::time::Instant::now();
    let err = pool
        .map(
            &mut a,
            &ChunkPlan::balanced(800, 8).unwrap(),
            [me, 9, token.0],
            misbehave,
        )
        .unwrap_err();
    killer.join().unwrap();
    // The worker would have slept 20 s: the caller noticed the death instead.
    assert!(started.elapsed() < Duration::from_secs(15));
    let msg = err.to_string();
    assert_eq!(err.kind(), ErrorKind::WorkerFailed);
    assert!(msg.contains("SIGKILL"), "{msg}");
    assert!(msg.contains(&format!("worker process {victim}")), "{msg}");
    assert!(msg.contains("chunk "), "{msg}");
    assert!(is_gone(victim));
    let pids = pool.worker_pids();
    assert_eq!(pids.len(), 1);
    assert!(!pids.contains(&victim));
    // The replacement works.
    let mut b = range(&name("kill-after"), 64);
    pool.map(&mut b, &ChunkPlan::balanced(64, 8).unwrap(), (), square)
        .unwrap();
    assert_eq!(b.as_slice().unwrap()[8], 64.0);
    drop(a);
    drop(b);
    assert!(!std::path::Path::new(&format!("/dev/shm/{nm}")).exists());
    drop(pool);
    for pid in pids {
        assert!(is_gone(pid));
    }
}

#[test]
fn drop_stops_and_reaps_every_worker() {
    let pool = WorkerPool::new(4).unwrap();
    let pids = pool.worker_pids();
    assert_eq!(pids.len(), 3);
    drop(pool);
    for pid in pids {
        assert!(is_gone(pid));
    }
}

/// utime + stime of `pid` in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime); `rest` starts at field 3.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn idle_workers_sleep() {
    let mut pool = WorkerPool::new(3).unwrap();
    let mut a = range(&name("idle"), 1000);
    pool.map(&mut a, &ChunkPlan::balanced(1000, 3).unwrap(), (), square)
        .unwrap();
    // Past the spin window, workers sleep on the futex: measure from then on. A spinning
    // worker would gain ~100 ticks per second; allow a wide margin for a loaded machine.
    let on_futex = format!("{} ", libc::SYS_futex);
    let asleep = |pid: &i32| {
        std::fs::read_to_string(format!("/proc/{pid}/syscall"))
            .is_ok_and(|s| s.starts_with(&on_futex))
    };
    assert!(
        within_deadline(|| pool.worker_pids().iter().all(asleep)),
        "the idle workers never went to sleep on the futex"
    );
    let before: Vec<u64> = pool.worker_pids().iter().map(|&p| cpu_ticks(p)).collect();
    std::thread::sleep(Duration::from_secs(1));
    let after: Vec<u64> = pool.worker_pids().iter().map(|&p| cpu_ticks(p)).collect();
    for (b, a) in before.iter().zip(&after) {
        assert!(a - b < 20, "an idle worker used {} ticks in 1 s", a - b);
    }
}

#[test]
fn a_worker_killed_between_jobs_is_reaped_and_replaced() {
    let mut pool = WorkerPool::new(3).unwrap();
    let victim = pool.worker_pids()[1];
    // SAFETY: sends SIGKILL to our own (idle) worker process.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    let dead = || {
        std::fs::read_to_string(format!("/proc/{victim}/stat")).map_or(true, |stat| {
            stat[stat.rfind(')').unwrap() + 2..].starts_with('Z')
        })
    };
    assert!(
        within_deadline(dead),
        "the killed worker {victim} did not die"
    );
    let mut a = range(&name("idle-kill"), 1000);
    let plan = ChunkPlan::balanced(1000, 4).unwrap();
    // Quick jobs still succeed (the others run the dead worker's share), and within 256
    // jobs the pool reaps and replaces it.
    for _ in 0..256 {
        pool.map(&mut a, &plan, (), |_, mut x, _: &()| x += 1.0)
            .unwrap();
    }
    assert_eq!(a.as_slice().unwrap()[999], 999.0 + 256.0);
    // The fork server learns of the death from the worker's pidfd and reports it in the
    // control block; the pool replaces a reported worker at its next check (every 256th
    // job, check_workers, or a job that has to wait). Under load the report may come after
    // the 256th job: check until it has.
    assert!(
        within_deadline(|| {
            pool.check_workers().unwrap();
            !pool.worker_pids().contains(&victim)
        }),
        "the killed worker {victim} was never replaced"
    );
    // The server reports while the worker is still a zombie (so its pid cannot be reused
    // meanwhile), then reaps it: reaped shortly after, never left.
    assert!(
        within_deadline(|| std::fs::metadata(format!("/proc/{victim}")).is_err()),
        "the killed worker {victim} was never reaped"
    );
    let pids = pool.worker_pids();
    assert_eq!(pids.len(), 2);
    assert!(!pids.contains(&victim));
    // An explicit check finds nothing more to do.
    assert_eq!(pool.check_workers().unwrap(), 0);
}

#[test]
fn a_failure_in_the_callers_chunk_names_the_caller() {
    let mut pool = WorkerPool::new(1).unwrap();
    let mut a = range(&name("caller-fail"), 10);
    let err = pool
        .map(
            &mut a,
            &ChunkPlan::balanced(10, 2).unwrap(),
            (),
            |c, _, _: &()| {
                if c.index == 1 {
                    Err("odd chunk")
                } else {
                    Ok(())
                }
            },
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WorkerFailed);
    let msg = err.to_string();
    assert!(
        msg.contains(
            "chunk 1 (indices 5..10 of axis 0) in the calling process returned an error: odd chunk"
        ),
        "{msg}"
    );
}

#[test]
fn limits_are_typed_errors_and_progress_is_harmless() {
    let mut pool = WorkerPool::new(2).unwrap();
    // Results area: 2^20 chunks of 8 bytes do not fit in 4 MiB.
    let a = SharedNdArray::<u8, Ix1>::zeros(&name("many"), 1 << 20).unwrap();
    let plan = ChunkPlan::fixed(1 << 20, 1).unwrap();
    let err = pool
        .map_reduce(&a, &plan, (), |_, x, _: &()| x.len() as u64)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    // Parameters over 1 KiB.
    let mut b = range(&name("params"), 10);
    let err = pool
        .map(
            &mut b,
            &ChunkPlan::balanced(10, 2).unwrap(),
            [0u8; 2048],
            |_, _, _| {},
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    // A progress bar (drawn only on a terminal) does not change the job.
    pool.set_progress(true);
    pool.map(&mut b, &ChunkPlan::balanced(10, 5).unwrap(), (), square)
        .unwrap();
    assert_eq!(b.as_slice().unwrap()[3], 9.0);
}

#[test]
fn fortran_order_arrays() {
    let mut pool = WorkerPool::new(2).unwrap();
    let mut a = SharedNdArray::<f32, Ix2>::zeros(
        ndshm::CreateOptions::named(name("fortran")).fortran_order(true),
        (5, 6),
    )
    .unwrap();
    assert!(a.is_fortran_order());
    let plan = ChunkPlan::balanced_along(a.shape(), 1, 3).unwrap();
    pool.map(&mut a, &plan, (), |c, mut v, _: &()| {
        for ((i, j), x) in v.indexed_iter_mut() {
            *x = (i * 100 + c.start + j) as f32;
        }
    })
    .unwrap();
    for ((i, j), &x) in a.view().indexed_iter() {
        assert_eq!(x, (i * 100 + j) as f32);
    }
}

mod random_plans {
    use super::*;
    use proptest::prelude::*;

    fn add_index(c: Chunk, mut x: ndarray::ArrayViewMut1<'_, i64>, k: &i64) {
        for (j, v) in x.iter_mut().enumerate() {
            *v += (c.start + j) as i64 * *k;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Any plan over any length gives every element exactly one visit, and the
        /// map-reduce parts sum to the whole.
        #[test]
        fn every_element_once(len in 0usize..3000, n in 1usize..40, fixed in any::<bool>(), k in 1i64..5) {
            let mut pool = WorkerPool::new(3).unwrap();
            let mut a = SharedNdArray::<i64, Ix1>::zeros(&name("prop"), len).unwrap();
            let plan = if fixed {
                ChunkPlan::fixed(len, n).unwrap()
            } else {
                ChunkPlan::balanced(len, n).unwrap()
            };
            pool.map(&mut a, &plan, k, add_index).unwrap();
            for (i, &v) in a.as_slice().unwrap().iter().enumerate() {
                prop_assert_eq!(v, i as i64 * k);
            }
            let parts = pool.map_reduce(&a, &plan, (), |_, x, _: &()| x.sum()).unwrap();
            prop_assert_eq!(parts.len(), plan.num_chunks());
            prop_assert_eq!(parts.iter().sum::<i64>(), a.view().sum());
        }
    }
}
