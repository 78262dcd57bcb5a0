//! Signals sent to a running forked job (examples/signal_demo.rs): with `SignalCleanup`
//! installed, the workers are stopped and reaped, the owned segment is unlinked, and the
//! process dies of the signal it got. Without it, the segment stays and `gc` removes it.

use std::io::{BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ndshm::SignalCleanup;

/// Builds (a no-op when `cargo test` already did) and locates the example binary, in the
/// profile this test was built with (`target/debug` for `cargo test`, `target/release` for
/// `cargo test --release`).
fn demo_binary() -> PathBuf {
    // target/<profile dir>/deps/signals-<hash> -> target/<profile dir>/examples/signal_demo
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let profile: &[&str] = if dir.file_name().is_some_and(|d| d == "release") {
        &["--release"]
    } else {
        &["--profile", "test"]
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--example", "signal_demo"])
        .args(profile)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build --example signal_demo");
    assert!(status.success(), "building examples/signal_demo failed");
    let bin = dir.join("examples").join("signal_demo");
    assert!(bin.exists(), "{} not found", bin.display());
    bin
}

/// A running demo: the child, its segment name and worker pids.
struct Demo {
    child: Child,
    segment: String,
    workers: Vec<i32>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        // Whatever the test's outcome: nothing keeps running, nothing stays in /dev/shm.
        let _ = self.child.kill();
        let _ = self.child.wait();
        for &w in &self.workers {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(w, libc::SIGKILL) };
        }
        let _ = ndshm::unlink(&self.segment);
    }
}

fn start(args: &[&str]) -> Demo {
    let mut cmd = Command::new(demo_binary());
    cmd.args(["--workers", "3", "--len", "300000"])
        .args(args)
        .stdout(Stdio::piped());
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // calls (signal, sigemptyset, sigprocmask) on stack data.
    unsafe {
        cmd.pre_exec(|| {
            // A test run from a non-interactive shell may have SIGINT ignored, which the
            // demo (rightly) leaves ignored: give it default dispositions.
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::signal(sig, libc::SIG_DFL);
            }
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("start signal_demo");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("signal_demo did not print 'ready'");
    let mut words = line.split_whitespace();
    assert_eq!(words.next(), Some("ready"), "unexpected output {line:?}");
    let segment = words.next().expect("segment name").to_string();
    let workers: Vec<i32> = words.map(|w| w.parse().unwrap()).collect();
    assert_eq!(workers.len(), 3, "{line:?}");
    Demo {
        child,
        segment,
        workers,
    }
}

/// `None` when no process `pid` exists, else its state letter (`R`, `S`, `Z`…).
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

fn segment_exists(name: &str) -> bool {
    std::fs::symlink_metadata(format!("/dev/shm/{name}")).is_ok()
}

fn signal_cleans_up(sig: i32) {
    signal_cleans_up_with(sig, &[]);
}

fn signal_cleans_up_with(sig: i32, args: &[&str]) {
    let mut demo = start(args);
    assert!(segment_exists(&demo.segment));
    for &w in &demo.workers {
        assert!(proc_state(w).is_some(), "worker {w} is not running");
    }
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(demo.child.id() as i32, sig) }, 0);
    let status = demo.child.wait().unwrap();
    assert_eq!(status.signal(), Some(sig), "demo ended with {status:?}");
    // The parent reaped its workers before it died: they are gone, not even zombies.
    for &w in &demo.workers {
        assert_eq!(proc_state(w), None, "worker {w} survived its parent");
    }
    assert!(
        !segment_exists(&demo.segment),
        "segment {} left behind",
        demo.segment
    );
}

#[test]
fn sigint_stops_workers_unlinks_and_reraises() {
    signal_cleans_up(libc::SIGINT);
}

#[test]
fn sigterm_stops_workers_unlinks_and_reraises() {
    signal_cleans_up(libc::SIGTERM);
}

#[test]
fn sighup_stops_workers_unlinks_and_reraises() {
    signal_cleans_up(libc::SIGHUP);
}

#[test]
fn workers_that_ignore_sigterm_are_killed_after_the_grace_period() {
    signal_cleans_up_with(libc::SIGTERM, &["--stubborn"]);
}

#[test]
fn without_cleanup_the_segment_stays_and_gc_removes_it() {
    let mut demo = start(&["--no-cleanup"]);
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(demo.child.id() as i32, libc::SIGTERM) };
    let status = demo.child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGTERM));
    // Nothing was installed: the workers are orphans still computing, the segment stays.
    for &w in &demo.workers {
        assert!(matches!(proc_state(w), Some(s) if s != 'Z'), "worker {w}");
        // SAFETY: as above.
        unsafe { libc::kill(w, libc::SIGKILL) };
    }
    // A worker that had not run yet since its fork still shares its parent's lease (the
    // kernel-held lock that says the owner lives) until it ends: wait until they are gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    for &w in &demo.workers {
        while matches!(proc_state(w), Some(s) if s != 'Z') {
            assert!(Instant::now() < deadline, "worker {w} survived SIGKILL");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let info = ndshm::info(&demo.segment).unwrap();
    assert!(info.is_stale(), "{info:?}");
    let name = demo.segment.clone();
    let removed = ndshm::gc_matching(|s| s.name == name).unwrap();
    assert_eq!(removed.len(), 1);
    assert!(!segment_exists(&demo.segment));
}

#[test]
fn sigkill_with_die_with_parent_takes_the_workers_down() {
    let mut demo = start(&["--no-cleanup", "--die-with-parent"]);
    demo.child.kill().unwrap();
    let status = demo.child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    let deadline = Instant::now() + Duration::from_secs(10);
    for &w in &demo.workers {
        // Killed by the kernel; re-parented, so reaped by whoever adopted them.
        while !matches!(proc_state(w), None | Some('Z')) {
            assert!(Instant::now() < deadline, "worker {w} outlived its parent");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let name = demo.segment.clone();
    let removed = ndshm::gc_matching(|s| s.name == name).unwrap();
    assert_eq!(
        removed.len(),
        1,
        "a SIGKILLed owner's segment is left for gc"
    );
    assert!(!segment_exists(&demo.segment));
}

#[test]
fn sigkill_with_watchdog_and_die_with_parent_leaves_nothing_without_gc() {
    let mut demo = start(&["--no-cleanup", "--die-with-parent", "--watchdog"]);
    demo.child.kill().unwrap();
    let status = demo.child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    let deadline = Instant::now() + Duration::from_secs(20);
    while segment_exists(&demo.segment)
        || demo
            .workers
            .iter()
            .any(|&w| !matches!(proc_state(w), None | Some('Z')))
    {
        assert!(
            Instant::now() < deadline,
            "segment or workers outlived a SIGKILLed parent with a watchdog"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads the current handler of `sig` without changing it.
fn handler_of(sig: i32) -> libc::sighandler_t {
    // SAFETY: a null new action only reads the disposition into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old);
        old.sa_sigaction
    }
}

#[test]
fn guards_install_nest_restore_and_respect_ignored_signals() {
    // Only this test in this binary changes dispositions in-process.
    // SAFETY: setting SIG_IGN/SIG_DFL runs no code.
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
    let before_int = handler_of(libc::SIGINT);
    let a = SignalCleanup::install().unwrap();
    let ours = handler_of(libc::SIGINT);
    assert_ne!(ours, before_int);
    assert_eq!(handler_of(libc::SIGTERM), ours);
    assert_eq!(
        handler_of(libc::SIGHUP),
        libc::SIG_IGN,
        "nohup'ed SIGHUP stays ignored"
    );
    let b = SignalCleanup::install().unwrap();
    drop(a);
    assert_eq!(
        handler_of(libc::SIGINT),
        ours,
        "a second guard keeps it installed"
    );
    drop(b);
    assert_eq!(handler_of(libc::SIGINT), before_int);
    assert_eq!(handler_of(libc::SIGHUP), libc::SIG_IGN);
    // SAFETY: as above.
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_DFL) };

    let before_quit = handler_of(libc::SIGQUIT);
    let q = SignalCleanup::install_for(&[libc::SIGQUIT]).unwrap();
    assert_eq!(handler_of(libc::SIGQUIT), ours);
    drop(q);
    assert_eq!(handler_of(libc::SIGQUIT), before_quit);

    let bad_signals = [
        libc::SIGKILL,
        libc::SIGSTOP,
        libc::SIGSEGV,
        libc::SIGABRT,
        libc::SIGCHLD,
        libc::SIGWINCH,
        libc::SIGCONT,
        libc::SIGTSTP,
        libc::SIGRTMIN(),
        0,
        99,
    ];
    for bad in bad_signals {
        let err = SignalCleanup::install_for(&[bad]).unwrap_err();
        assert_eq!(err.kind(), ndshm::ErrorKind::InvalidArgument);
    }
}
