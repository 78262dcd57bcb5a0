//! Fork-per-call chunked workers over real forked processes and real /dev/shm segments.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ndarray::{Ix1, Ix2};
use ndshm::{fork_chunks, fork_chunks_into, ChunkPlan, ErrorKind, Process, SharedNdArray};

fn name(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "t-fork-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn range(name: &str, n: usize) -> SharedNdArray<f64, Ix1> {
    SharedNdArray::from_array(name, &ndarray::Array1::range(0.0, n as f64, 1.0)).unwrap()
}

#[test]
fn squares_in_place() {
    for (n, workers) in [(10_001, 2), (7, 3), (3, 5), (0, 2)] {
        let mut a = range(&name("sq"), n);
        fork_chunks(&mut a, workers, |_, mut v| v.mapv_inplace(|x| x * x)).unwrap();
        assert!(a
            .as_slice()
            .unwrap()
            .iter()
            .enumerate()
            .all(|(i, &v)| v == (i * i) as f64));
    }
    let mut a = range(&name("zero"), 4);
    let err = fork_chunks(&mut a, 0, |_, _| {}).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    // One process per chunk: a plan of thousands of chunks is refused, not a fork bomb.
    let mut b = range(&name("many"), 5000);
    let plan = ChunkPlan::fixed(5000, 1).unwrap();
    let err = fork_chunks(&mut b, &plan, |_, _| {}).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("WorkerPool"), "{err}");
}

#[test]
fn closures_may_borrow_the_callers_data() {
    let table: Vec<f64> = (0..10).map(|i| i as f64 * 0.5).collect();
    let mut a = SharedNdArray::<f64, Ix2>::zeros(&name("borrow"), (10, 4)).unwrap();
    let plan = ChunkPlan::fixed_along(a.shape(), 0, 3).unwrap();
    fork_chunks(&mut a, &plan, |c, mut v| {
        for (k, mut row) in v.rows_mut().into_iter().enumerate() {
            row.fill(table[c.start + k]);
        }
    })
    .unwrap();
    assert_eq!(a.view()[[9, 3]], 4.5);
    let bad = ChunkPlan::balanced(4, 2).unwrap().along(2);
    assert_eq!(
        fork_chunks(&mut a, &bad, |_, _| {}).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn out_of_in_reads_neighbours() {
    let x = range(&name("in"), 1000);
    let mut y = SharedNdArray::<f64, Ix1>::zeros(&name("out"), 1000).unwrap();
    let plan = ChunkPlan::balanced(1000, 3).unwrap();
    fork_chunks_into(&x, &mut y, &plan, |c, x, mut y| {
        for (k, i) in c.range().enumerate() {
            let left = if i > 0 { x[i - 1] } else { 0.0 };
            let right = if i + 1 < x.len() { x[i + 1] } else { 0.0 };
            y[k] = left + right;
        }
    })
    .unwrap();
    let y = y.as_slice().unwrap();
    assert_eq!(y[0], 1.0);
    assert_eq!(y[333], 332.0 + 334.0);
    assert_eq!(y[334], 333.0 + 335.0);
    assert_eq!(y[999], 998.0);
}

#[test]
fn failures_name_the_chunk_and_cause() {
    let mut a = range(&name("fail"), 100);
    let plan = ChunkPlan::balanced(100, 4).unwrap();
    let err = fork_chunks(&mut a, &plan, |c, _| {
        if c.index == 2 {
            panic!("bad chunk {}", c.index);
        }
    })
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WorkerFailed);
    let msg = err.to_string();
    assert!(msg.contains("chunk 2 (indices 50..75 of axis 0)"), "{msg}");
    assert!(msg.contains("panicked: bad chunk 2"), "{msg}");

    let err = fork_chunks(&mut a, &plan, |c, _| -> Result<(), String> {
        if c.index == 1 {
            Err("no good".into())
        } else {
            Ok(())
        }
    })
    .unwrap_err();
    assert!(err.to_string().contains("chunk 1 (indices 25..50"), "{err}");
    assert!(
        err.to_string().contains("returned an error: no good"),
        "{err}"
    );

    let err = fork_chunks(&mut a, &plan, |c, _| {
        if c.index == 3 {
            // SAFETY: ends this child at once (the failure under test).
            unsafe { libc::_exit(7) };
        }
    })
    .unwrap_err();
    assert!(err.to_string().contains("chunk 3"), "{err}");
    assert!(err.to_string().contains("exited with code 7"), "{err}");

    let err = fork_chunks(&mut a, &plan, |c, _| {
        if c.index == 0 {
            // std's SIGSEGV handler (stack-overflow detection) ignores a raised signal
            // once; with the default action, SIGSEGV kills the child (the failure under
            // test), like a real invalid access.
            // SAFETY: resets a signal disposition and raises a signal in this child.
            unsafe {
                libc::signal(libc::SIGSEGV, libc::SIG_DFL);
                libc::raise(libc::SIGSEGV);
            }
        }
    })
    .unwrap_err();
    assert!(err.to_string().contains("chunk 0"), "{err}");
    assert!(err.to_string().contains("SIGSEGV"), "{err}");

    let err = fork_chunks(&mut a, &plan, |c, _| {
        if c.index == 1 {
            // SAFETY: kills this child (the failure under test).
            unsafe { libc::raise(libc::SIGKILL) };
        }
    })
    .unwrap_err();
    assert!(err.to_string().contains("SIGKILL"), "{err}");
    // Other chunks still ran.
    let mut b = range(&name("ok"), 100);
    fork_chunks(&mut b, 4, |_, mut v| v += 1.0).unwrap();
    assert_eq!(b.as_slice().unwrap()[99], 100.0);
}

#[test]
fn aligned_plans_keep_results() {
    let mut a = range(&name("align"), 1003);
    let base = a.as_slice().unwrap().as_ptr() as usize;
    let plan = ChunkPlan::balanced(1003, 3)
        .unwrap()
        .align_to_cache_lines(base, 8)
        .unwrap();
    for &b in &plan.bounds()[1..plan.bounds().len() - 1] {
        assert_eq!((base + 8 * b) % 64, 0);
    }
    fork_chunks(&mut a, &plan, |_, mut v| v.mapv_inplace(|x| -x)).unwrap();
    assert_eq!(a.as_slice().unwrap()[1002], -1002.0);
}

#[test]
fn aligned_for_arrays_checks_the_axis() {
    let mut a = SharedNdArray::<f64, Ix2>::zeros(&name("align2"), (64, 3)).unwrap();
    let plan = ChunkPlan::balanced(64, 3).unwrap().aligned_for(&a).unwrap();
    let base = a.as_slice().unwrap().as_ptr() as usize;
    for &b in &plan.bounds()[1..plan.bounds().len() - 1] {
        assert_eq!((base + b * 3 * 8) % 64, 0, "{:?}", plan.bounds());
    }
    fork_chunks(&mut a, &plan, |c, mut v| v.fill(c.index as f64 + 1.0)).unwrap();
    assert!(a.as_slice().unwrap().iter().all(|&v| v >= 1.0));
    let err = ChunkPlan::balanced_along(a.shape(), 1, 2)
        .unwrap()
        .aligned_for(&a)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("interleave"), "{err}");
}

/// In the calling (child) process only: `SIGCHLD` set to `SIG_IGN`, so the kernel reaps
/// this process's children itself and `waitpid` finds no status (`ECHILD`).
fn ignore_sigchld() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: SIG_IGN runs no code; this process is a child made for this test.
    unsafe { signal(Signal::SIGCHLD, SigHandler::SigIgn) }.expect("ignore SIGCHLD");
}

/// Runs `body` in a forked child with `SIGCHLD` ignored there (the test binary's own
/// disposition stays as it is) and fails the test with the child's error, or when it
/// runs longer than a minute.
fn with_sigchld_ignored(body: impl FnOnce() -> Result<(), String> + 'static) {
    let p = Process::spawn(move || {
        ignore_sigchld();
        body()
    })
    .unwrap();
    common::join_within(p, Duration::from_secs(60)).unwrap();
}

fn check(cond: bool, what: impl std::fmt::Display) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what.to_string())
    }
}

#[test]
fn fork_chunks_sigchld_ignored_succeeds() {
    let n = common::Name::new("sigchld-chunks");
    let name = n.0.clone();
    with_sigchld_ignored(move || {
        let mut a = SharedNdArray::<u64, Ix1>::zeros(&name, 1000).map_err(|e| e.to_string())?;
        fork_chunks(&mut a, 4, |c, mut v| v.fill(c.index as u64 + 1))
            .map_err(|e| format!("every chunk succeeded, yet: {e}"))?;
        let got = a.as_slice().unwrap();
        check(
            got[0] == 1 && got[999] == 4,
            format!("{} {}", got[0], got[999]),
        )?;
        // A failing chunk keeps its message although its exit status is gone.
        let err = fork_chunks(&mut a, 4, |c, _| -> Result<(), String> {
            if c.index == 2 {
                Err("chunk two refused".into())
            } else {
                Ok(())
            }
        })
        .err()
        .ok_or("a failing chunk was reported as a success")?;
        check(err.kind() == ErrorKind::WorkerFailed, &err)?;
        check(err.to_string().contains("chunk 2"), &err)?;
        check(err.to_string().contains("chunk two refused"), &err)
    });
}

#[test]
fn process_join_with_sigchld_ignored_reports_the_childs_error() {
    with_sigchld_ignored(|| {
        Process::spawn(|| {})
            .and_then(Process::join)
            .map_err(|e| format!("a successful child: {e}"))?;
        let err = Process::spawn(|| -> Result<(), String> { Err("bad input".into()) })
            .and_then(Process::join)
            .err()
            .ok_or("a failing child joined as a success")?;
        check(err.kind() == ErrorKind::WorkerFailed, &err)?;
        check(
            err.to_string().contains("returned an error: bad input"),
            &err,
        )?;
        // Polling sees the end too, and the outcome stays right.
        let mut p = Process::spawn(|| {}).map_err(|e| e.to_string())?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !p.is_finished().map_err(|e| e.to_string())? {
            check(
                std::time::Instant::now() < deadline,
                "is_finished never became true",
            )?;
            std::thread::sleep(Duration::from_millis(1));
        }
        check(p.exitcode().is_none(), "the exit status is gone")?;
        p.join()
            .map_err(|e| format!("a polled successful child: {e}"))?;
        let err = Process::spawn::<_, ()>(|| panic!("boom"))
            .and_then(Process::join)
            .err()
            .ok_or("a panicking child joined as a success")?;
        check(err.to_string().contains("panicked: boom"), &err)?;
        // Killed before reporting: its status is gone, and the error says so.
        let p = Process::spawn(|| std::thread::sleep(Duration::from_secs(600)))
            .map_err(|e| e.to_string())?;
        p.kill().map_err(|e| e.to_string())?;
        let err = p.join().err().ok_or("a killed child joined as a success")?;
        check(err.to_string().contains("ended without reporting"), &err)?;
        check(err.to_string().contains("SIGCHLD is ignored"), &err)
    });
}

#[test]
fn scope_with_sigchld_ignored() {
    let (n1, n2) = (
        common::Name::new("sigchld-s1"),
        common::Name::new("sigchld-s2"),
    );
    let (name1, name2) = (n1.0.clone(), n2.0.clone());
    with_sigchld_ignored(move || {
        let mut a = SharedNdArray::<u32, Ix1>::zeros(&name1, 16).map_err(|e| e.to_string())?;
        let mut b = SharedNdArray::<u32, Ix1>::zeros(&name2, 16).map_err(|e| e.to_string())?;
        ndshm::scope(|s| -> ndshm::Result<_> {
            s.spawn_with(&mut a, |a| a.view_mut().fill(3))?;
            s.spawn_with(&mut b, |b| b.view_mut().fill(4))?;
            s.spawn(|| {})?;
            Ok(())
        })
        .map_err(|e| format!("every child succeeded, yet: {e}"))?;
        check(a.view().sum() == 48 && b.view().sum() == 64, "values")?;
        let err = ndshm::scope(|s| -> ndshm::Result<_> {
            s.spawn(|| -> Result<(), String> { Err("scoped failure".into()) })?
                .join()
        })
        .err()
        .ok_or("a failing scoped child was reported as a success")?;
        check(
            err.to_string()
                .contains("returned an error: scoped failure"),
            &err,
        )
    });
}

#[test]
fn spawn_with_hands_the_array_over_and_back() {
    let n = common::Name::new("spawn-with");
    let a = SharedNdArray::<u64, Ix1>::zeros(&n, 100).unwrap();
    let child = Process::spawn_with(a, |a| {
        for (i, x) in a.view_mut().iter_mut().enumerate() {
            *x = i as u64 * 2;
        }
    })
    .unwrap();
    let a = child.join().unwrap();
    assert_eq!(a.as_slice().unwrap()[99], 198);
    assert!(a.is_owner(), "the parent's handle still owns the name");
    // A failing child: `join_keeping` gives the array back with the error.
    let child = Process::spawn_with(a, |_| -> Result<(), String> { Err("nope".into()) }).unwrap();
    let (a, r) = child.join_keeping();
    let err = r.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WorkerFailed);
    assert!(err.to_string().contains("nope"), "{err}");
    assert_eq!(a.as_slice().unwrap()[1], 2);
    // Dropped unjoined: the child is killed and reaped before the array drops.
    let mut child =
        Process::spawn_with(a, |_| std::thread::sleep(Duration::from_secs(600))).unwrap();
    assert!(!child.is_finished().unwrap());
    drop(child);
    assert!(
        !n.path().exists(),
        "the creator's handle dropped with the ProcessWith"
    );
}

/// Waits (with a deadline) until `finished` says the child has ended.
fn wait_finished(mut finished: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "the child never ended"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn exit_zero_in_a_child_is_success() {
    // Process: Python's `sys.exit(0)` in the target is a success.
    let p = Process::spawn::<_, ()>(|| std::process::exit(0)).unwrap();
    p.join().unwrap();
    // ProcessWith: the array comes back.
    let n = common::Name::new("exit0-with");
    let a = SharedNdArray::<u8, Ix1>::zeros(&n, 3).unwrap();
    let child = Process::spawn_with::<_, _, _, _, ()>(a, |a| {
        a.view_mut().fill(5);
        std::process::exit(0)
    })
    .unwrap();
    let a = child.join().unwrap();
    assert_eq!(a.as_slice().unwrap(), &[5, 5, 5]);
    // ScopedChild, joined explicitly and implicitly (an implicit failure would panic).
    ndshm::scope(|s| -> ndshm::Result<()> {
        s.spawn::<_, ()>(|| std::process::exit(0))?;
        s.spawn::<_, ()>(|| std::process::exit(0))?.join()
    })
    .unwrap();
    // A non-zero exit is still a failure, and its error names the code.
    let err = Process::spawn::<_, ()>(|| std::process::exit(3))
        .unwrap()
        .join()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WorkerFailed);
    assert!(err.to_string().contains("exited with code 3"), "{err}");
    // fork_chunks: a chunk closure that exits before returning did not finish its chunk.
    let mut b = range(&name("exit0-chunks"), 8);
    let err = fork_chunks(&mut b, 4, |chunk, mut v| {
        if chunk.index == 2 {
            std::process::exit(0);
        }
        v.fill(1.0);
    })
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WorkerFailed);
    assert!(
        err.to_string()
            .contains("exited with code 0 before finishing chunk 2"),
        "{err}"
    );
}

#[test]
fn exitcode_is_data_not_only_a_message() {
    // Process: None while running, the code once ended, -N for signal N.
    let mut p = Process::spawn(|| std::thread::sleep(Duration::from_secs(600))).unwrap();
    assert_eq!(p.exitcode(), None, "still running");
    p.kill().unwrap();
    assert_eq!(p.wait().unwrap(), Some(-libc::SIGKILL));
    assert_eq!(p.exitcode(), Some(-libc::SIGKILL));
    assert!(p.join().unwrap_err().to_string().contains("SIGKILL"));
    let mut p = Process::spawn::<_, ()>(|| std::process::exit(0)).unwrap();
    wait_finished(|| p.is_finished().unwrap());
    assert_eq!(p.exitcode(), Some(0));
    p.join().unwrap();
    let mut p = Process::spawn::<_, ()>(|| std::process::exit(3)).unwrap();
    assert_eq!(p.wait().unwrap(), Some(3));
    let err = p.join().unwrap_err();
    assert!(err.to_string().contains("exited with code 3"), "{err}");
    // How the closure ended maps onto codes: an error 1, a panic 101.
    let mut p = Process::spawn(|| -> Result<(), String> { Err("no".into()) }).unwrap();
    assert_eq!(p.wait().unwrap(), Some(1));
    let mut p = Process::spawn::<_, ()>(|| panic!("boom")).unwrap();
    assert_eq!(p.wait().unwrap(), Some(101));
    // ProcessWith.
    let n = common::Name::new("exitcode-with");
    let a = SharedNdArray::<u8, Ix1>::zeros(&n, 1).unwrap();
    let mut child = Process::spawn_with::<_, _, _, _, ()>(a, |_| std::process::exit(7)).unwrap();
    assert_eq!(child.wait().unwrap(), Some(7));
    assert_eq!(child.exitcode(), Some(7));
    let (a, r) = child.join_keeping();
    assert!(r.unwrap_err().to_string().contains("exited with code 7"));
    drop(a);
    // ScopedChild.
    ndshm::scope(|s| -> ndshm::Result<()> {
        let c = s.spawn(|| std::thread::sleep(Duration::from_secs(600)))?;
        assert_eq!(c.exitcode(), None);
        let c2 = s.spawn::<_, ()>(|| std::process::exit(4))?;
        assert_eq!(c2.wait()?, Some(4));
        assert_eq!(c2.exitcode(), Some(4));
        assert!(c2.join().unwrap_err().to_string().contains("code 4"));
        // Killed through its pid (ScopedChild has no kill): -SIGTERM.
        // SAFETY: kill(2) on our own child's pid, which is not reaped yet.
        assert_eq!(unsafe { libc::kill(c.pid(), libc::SIGTERM) }, 0);
        assert_eq!(c.wait()?, Some(-libc::SIGTERM));
        assert_eq!(c.exitcode(), Some(-libc::SIGTERM));
        assert!(c.join().unwrap_err().to_string().contains("SIGTERM"));
        Ok(())
    })
    .unwrap();
}

#[test]
fn fork_chunks_takes_a_count_or_a_plan() {
    // A count: that many balanced chunks along axis 0.
    let mut a = SharedNdArray::<u32, Ix2>::zeros(&name("count"), (6, 2)).unwrap();
    fork_chunks(&mut a, 3, |c, mut v| v.fill(c.index as u32 + 1)).unwrap();
    assert_eq!(a.view().column(1).to_vec(), vec![1, 1, 2, 2, 3, 3]);
    // A borrowed plan (any axis), reusable after the call.
    let plan = ChunkPlan::balanced_along(a.shape(), 1, 2).unwrap();
    fork_chunks(&mut a, &plan, |c, mut v| v.fill(10 + c.index as u32)).unwrap();
    assert_eq!(a.view().row(0).to_vec(), vec![10, 11]);
    // An owned plan.
    fork_chunks(&mut a, plan.clone(), |c, mut v| v.fill(20 + c.index as u32)).unwrap();
    assert_eq!(a.view().row(5).to_vec(), vec![20, 21]);
    // A plan that does not fit is refused before any fork, naming the array.
    let bad = ChunkPlan::balanced(7, 2).unwrap();
    let err = fork_chunks(&mut a, &bad, |_, _| {}).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains(a.name()), "{err}");
    // fork_chunks_into takes a count too (axis 0 of the output).
    let x = range(&name("count-in"), 9);
    let mut y = SharedNdArray::<f64, Ix1>::zeros(&name("count-out"), 9).unwrap();
    fork_chunks_into(&x, &mut y, 3, |c, x, mut y| {
        y.assign(&c.of(&x).mapv(|v| 2.0 * v))
    })
    .unwrap();
    assert_eq!(y.as_slice().unwrap()[8], 16.0);
}

#[test]
fn scope_returns_the_closures_value() {
    let mut a = SharedNdArray::<u64, Ix1>::zeros(&name("scope-value"), 4).unwrap();
    let (answer, pid) = ndshm::scope(|s| {
        let child = s.spawn_with(&mut a, |a| a.view_mut().fill(3)).unwrap();
        (42, child.pid())
    });
    assert_eq!(answer, 42);
    assert!(pid > 0);
    // The scope joined the child before returning.
    assert_eq!(a.view().sum(), 12);
    // A closure returning a Result is `?`-able as before.
    let r: ndshm::Result<u8> = ndshm::scope(|s| {
        s.spawn(|| {})?.join()?;
        Ok(7)
    });
    assert_eq!(r.unwrap(), 7);
}

#[test]
fn scope_panics_when_an_unjoined_child_failed() {
    let mut a = SharedNdArray::<u64, Ix1>::zeros(&name("scope-panic"), 4).unwrap();
    let mut failed_pid = 0;
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        ndshm::scope(|s| {
            failed_pid = s
                .spawn(|| -> Result<(), String> { Err("unjoined failure".into()) })
                .unwrap()
                .pid();
            // Spawned after the failing one: joined all the same before the panic.
            s.spawn_with(&mut a, |a| a.view_mut().fill(1)).unwrap();
        })
    }));
    let payload = caught.expect_err("a failed unjoined child must make scope panic");
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(msg.contains("unjoined failure"), "{msg}");
    assert!(msg.contains(&format!("process {failed_pid}")), "{msg}");
    assert_eq!(a.view().sum(), 4, "every child was joined before the panic");
}

#[test]
fn scope_leaves_a_joined_childs_failure_to_the_caller() {
    let err = ndshm::scope(|s| {
        let child = s.spawn(|| -> Result<(), String> { Err("joined failure".into()) });
        child.unwrap().join()
    })
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WorkerFailed);
    assert!(err.to_string().contains("joined failure"), "{err}");
}

#[test]
fn scope_joins_every_child_before_resuming_a_panic_of_its_closure() {
    let mut a = SharedNdArray::<u64, Ix1>::zeros(&name("scope-unwind"), 4).unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        ndshm::scope(|s| {
            s.spawn_with(&mut a, |a| a.view_mut().fill(2)).unwrap();
            panic!("the scope's own closure panicked");
        })
    }));
    let payload = caught.expect_err("the closure's panic must come through");
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"the scope's own closure panicked")
    );
    assert_eq!(
        a.view().sum(),
        8,
        "the child was joined before the panic resumed"
    );
}
