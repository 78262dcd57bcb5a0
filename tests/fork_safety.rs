//! Forking from a process with other threads: refused with a clear error unless the process
//! opted in, never a hang. Each scenario runs in a fresh re-run of this test binary that has
//! not opted in (see `common::rerun_in_fresh_process`).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ndarray::Ix1;
use ndshm::{fork_chunks, ErrorKind, Process, SharedNdArray};

/// Fails the calling test, with the re-run's output, unless the fresh re-run passed.
fn assert_fresh_run_passed(out: std::process::Output) {
    assert!(
        out.status.success(),
        "fresh run failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn assert_clear_refusal(err: &ndshm::Error, api: &str) {
    assert_eq!(err.kind(), ErrorKind::ForkWithThreads, "{err}");
    let msg = err.to_string();
    for part in [
        api,
        "threads",
        "stdout",
        "fork before starting threads",
        "allow_fork_with_threads",
    ] {
        assert!(msg.contains(part), "{part:?} missing from: {msg}");
    }
}

/// Forks a child that has one thread (the harness runs each test on a thread of its own,
/// so the test's process has several), runs `body` there and leaves with `_exit`; fails
/// the calling test with `failure` when `body` returned an error, which the child prints
/// as `"{label}: {error}"`.
fn in_single_threaded_child(label: &str, failure: &str, body: impl FnOnce() -> Result<(), String>) {
    // SAFETY: the child runs only `body`, whose ndshm calls take no lock another thread
    // of this process may hold, and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = match body() {
            Ok(()) => 0,
            Err(e) => {
                let _ = ndshm::write_stdout(&format!("{label}: {e}\n"));
                1
            }
        };
        // SAFETY: leaves the forked child at once, running no destructor of the parent's.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked; `status` is a valid out-pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{failure} (status {status})"
    );
}

#[test]
fn logger_thread_plus_println_in_a_child_is_a_clear_error_not_a_hang() {
    if !common::in_fresh_process() {
        let out = common::rerun_in_fresh_process(
            "logger_thread_plus_println_in_a_child_is_a_clear_error_not_a_hang",
            Duration::from_secs(30),
        );
        assert_fresh_run_passed(out);
        return;
    }
    // A "logger" thread that holds the stdout lock until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let logger = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let lock = std::io::stdout().lock();
            held_tx.send(()).unwrap();
            while !stop.load(Ordering::Acquire) {
                std::thread::park();
            }
            drop(lock);
        })
    };
    held_rx.recv().unwrap();
    let name = common::Name::new("logger");
    let mut a = SharedNdArray::<u64, Ix1>::zeros(&name, 8).unwrap();
    let err = fork_chunks(&mut a, 2, |c, mut v| {
        println!("chunk {}", c.index); // would wait forever for the logger's lock
        v.fill(1);
    })
    .unwrap_err();
    assert_clear_refusal(&err, "fork_chunks");
    assert!(err.to_string().contains("has 3 threads"), "{err}");
    let err = Process::spawn(|| println!("child")).unwrap_err();
    assert_clear_refusal(&err, "Process::spawn");
    let err = ndshm::scope(|s| s.spawn_with(&mut a, |_| println!("child")).map(drop)).unwrap_err();
    assert_clear_refusal(&err, "Scope::spawn_with");
    // Refused, and the array handed to `spawn_with` comes back with the error.
    let (err, a) = Process::spawn_with(a, |_| println!("child"))
        .unwrap_err()
        .into_parts();
    assert_clear_refusal(&err, "Process::spawn_with");
    assert!(a.is_owner());
    assert_eq!(a.view().sum(), 0, "no child ran");
    stop.store(true, Ordering::Release);
    logger.thread().unpark();
    logger.join().unwrap();
}

#[test]
fn single_threaded_process_needs_no_opt_in() {
    if !common::in_fresh_process() {
        let out = common::rerun_in_fresh_process(
            "single_threaded_process_needs_no_opt_in",
            Duration::from_secs(60),
        );
        assert_fresh_run_passed(out);
        return;
    }
    // This process runs the test on a harness thread, so it has other threads and has not
    // opted in: refused.
    let name = common::Name::new("single");
    let mut a = SharedNdArray::<u64, Ix1>::zeros(&name, 64).unwrap();
    let err = fork_chunks(&mut a, 2, |_, _| {}).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ForkWithThreads, "{err}");
    // A child forked here has one thread, and the same (absent) opt-in: it may fork.
    in_single_threaded_child(
        "single-threaded child",
        "the single-threaded child could not fork",
        || {
            let e = |e: ndshm::Error| e.to_string();
            fork_chunks(&mut a, 4, |c, mut v| v.fill(c.index as u64 + 1)).map_err(e)?;
            let child =
                Process::spawn_with(a, |a| a.view_mut()[0] = 100).map_err(|e| e.to_string())?;
            let mut b = child.join().map_err(e)?;
            ndshm::scope(|s| s.spawn_with(&mut b, |b| b.view_mut()[63] += 10).map(drop))
                .map_err(e)?;
            let v = b.as_slice().unwrap();
            if v[0] != 100 || v[1] != 1 || v[63] != 14 {
                return Err(format!("wrong values {v:?}"));
            }
            Ok(())
        },
    );
}

/// `std::thread::scope` returns once its threads ran their closures, before they exited:
/// a fork right after it saw two threads about half of the time and was refused. The
/// check waits (briefly) for such threads to be gone; a thread that keeps running is
/// still refused (`logger_thread_plus_println_in_a_child_is_a_clear_error_not_a_hang`).
#[test]
fn a_fork_right_after_a_thread_scope_is_not_refused() {
    if !common::in_fresh_process() {
        let out = common::rerun_in_fresh_process(
            "a_fork_right_after_a_thread_scope_is_not_refused",
            Duration::from_secs(60),
        );
        assert_fresh_run_passed(out);
        return;
    }
    // The harness runs this test on a thread of its own: repeat the scope-then-fork
    // sequence in a single-threaded child.
    in_single_threaded_child(
        "scope-then-fork child",
        "a fork right after a thread scope was refused",
        || {
            for round in 0..1000 {
                std::thread::scope(|s| {
                    s.spawn(|| std::hint::black_box(round));
                });
                Process::spawn(|| ())
                    .and_then(|c| c.join())
                    .map_err(|e| format!("round {round}: {e}"))?;
            }
            Ok(())
        },
    );
}

#[test]
fn unreadable_proc_requires_the_opt_in() {
    if !common::in_fresh_process() {
        let out = common::rerun_in_fresh_process_without_proc(
            "unreadable_proc_requires_the_opt_in",
            Duration::from_secs(60),
        );
        assert_fresh_run_passed(out);
        return;
    }
    assert!(
        std::fs::read_to_string("/proc/self/stat").is_err(),
        "/proc should be unreadable here"
    );
    let name = common::Name::new("noproc");
    let mut a = SharedNdArray::<u64, Ix1>::zeros(&name, 64).unwrap();
    let err = fork_chunks(&mut a, 2, |_, _| {}).unwrap_err();
    assert_clear_refusal(&err, "fork_chunks");
    assert!(err.to_string().contains("cannot count"), "{err}");
    // The thread count is unknown even where it is 1: a single-threaded child is refused
    // too.
    // SAFETY: the child runs only the lock-free code below and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let refused = matches!(
            fork_chunks(&mut a, 2, |_, _| {}),
            Err(e) if e.kind() == ErrorKind::ForkWithThreads
        );
        // SAFETY: leaves the forked child at once, running no destructor of the parent's.
        unsafe { libc::_exit(if refused { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked; `status` is a valid out-pointer.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "status {status}"
    );
    // The opt-in is the fix.
    // SAFETY: the closure below takes no lock (it only writes its chunk).
    unsafe { ndshm::allow_fork_with_threads() };
    fork_chunks(&mut a, 2, |c, mut v| v.fill(c.index as u64 + 1)).unwrap();
    assert_eq!(a.view().sum(), 32 + 64);
}
