//! The robust lock is taken over only from a holder the kernel says is dead: contenders in
//! another pid namespace, or without a readable `/proc`, wait for a live holder; the
//! holder's death (SIGKILL) hands the lock on with `owner_died`. Also: ownership is per
//! thread (relock is an error, not a hang; a thread that exits holding the lock counts as a
//! dead holder), and segments of the old format are refused.
//!
//! The contender runs in its own namespace by re-executing this test binary under
//! `unshare`, with [`CONTENDER`] in its environment selecting the contender role of the
//! same test.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Name;
use ndshm::{ErrorKind, Lock, Process, SharedStruct, SharedValue};

/// Environment variable that turns a re-executed test into the contender:
/// `lock-name,struct-name,phase-name,holder-pid`.
const CONTENDER: &str = "NDSHM_TEST_LOCK_CONTENDER";
/// How long the contender tries (and must fail) to take the live holder's locks.
const CONTEND_FOR: Duration = Duration::from_millis(1500);
/// How long anything in these tests may take before it counts as a hang.
const DEADLINE: Duration = Duration::from_secs(60);

/// Phases, as the named `phase` value says them.
const HOLDING: u32 = 1;
const CONTENDED: u32 = 2;

/// A forked holder, killed when the test ends, whatever happens.
struct Holder(Option<Process>);

impl Drop for Holder {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = p.kill();
            let _ = p.join();
        }
    }
}

/// Waits until `cond` holds; panics naming `what` after [`DEADLINE`].
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

/// The contender's side, run in the re-executed binary: never gets the live holder's
/// locks, then (once the test killed the holder) gets both with `owner_died`.
fn contend(spec: &str, without_proc: bool) {
    let parts: Vec<&str> = spec.split(',').collect();
    let [lock_name, struct_name, phase_name, holder_pid] = parts[..] else {
        panic!("bad {CONTENDER}: {spec}");
    };
    let holder_pid: i32 = holder_pid.parse().unwrap();
    // The premise: this process cannot see the holder through /proc.
    let holder_proc = format!("/proc/{holder_pid}");
    if without_proc {
        assert!(
            std::fs::metadata("/proc/self/stat").is_err(),
            "/proc is readable: the contender was meant to run without it"
        );
    } else {
        assert_eq!(std::process::id(), 1, "not in a new pid namespace");
        assert!(
            std::fs::metadata(&holder_proc).is_err() || holder_pid == 1,
            "the holder is visible in this pid namespace"
        );
    }
    let lock = Lock::open(lock_name).unwrap();
    let shared = SharedStruct::<u64>::open(struct_name).unwrap();
    let phase = SharedValue::<u32>::open(phase_name).unwrap();
    assert_eq!(phase.load(), HOLDING);
    assert!(lock.is_locked());

    let start = Instant::now();
    let mut tries = 0u64;
    while start.elapsed() < CONTEND_FOR {
        assert!(lock.try_lock().is_none(), "took a live holder's lock");
        tries += 1;
        std::thread::yield_now();
    }
    assert!(tries > 100, "only {tries} tries");
    let err = lock.lock_timeout(Duration::from_millis(200)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    let err = shared.lock_timeout(Duration::from_millis(200)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(lock.is_locked());
    phase.store(CONTENDED);

    // The test now kills the holder: the kernel hands both locks on.
    let g = lock.lock_timeout(DEADLINE).unwrap();
    assert!(
        g.owner_died(),
        "the lock was not recovered from a dead holder"
    );
    drop(g);
    let mut s = shared.lock_timeout(DEADLINE).unwrap();
    assert!(s.owner_died());
    assert_eq!(*s, 7, "the holder's last write is visible");
    *s = 8;
    drop(s);
    assert_eq!(lock.recoveries(), 1);
}

/// The test's side: make the segments, fork a holder, run the contender under `wrapper`,
/// kill the holder when the contender has failed to take its locks for
/// [`CONTEND_FOR`], and check that the contender then got them.
fn scenario(test: &str, wrapper: &[&str]) {
    let lock_name = Name::new("live-lock");
    let struct_name = Name::new("live-struct");
    let phase_name = Name::new("live-phase");
    let lock = Lock::create(&lock_name).unwrap();
    let shared = SharedStruct::<u64>::create(&struct_name, 0).unwrap();
    let phase = SharedValue::<u32>::create(&phase_name, 0).unwrap();

    let (l, s, p) = (
        lock_name.0.clone(),
        struct_name.0.clone(),
        phase_name.0.clone(),
    );
    let holder = Holder(Some(
        Process::spawn(move || -> ndshm::Result<()> {
            let lock = Lock::open(&l)?;
            let shared = SharedStruct::<u64>::open(&s)?;
            let phase = SharedValue::<u32>::open(&p)?;
            let _g = lock.lock();
            let mut st = shared.lock();
            *st = 7;
            phase.store(HOLDING);
            // Hold both until killed (the test's Holder kills it in every case).
            std::thread::sleep(DEADLINE * 2);
            Ok(())
        })
        .unwrap(),
    ));
    let holder_pid = holder.0.as_ref().unwrap().pid();
    wait_until("the holder to take the locks", || phase.load() == HOLDING);

    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(wrapper[0]);
    cmd.args(&wrapper[1..])
        .arg(&exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(
            CONTENDER,
            format!(
                "{lock_name},{struct_name},{phase_name},{holder_pid}",
                lock_name = &*lock_name,
                struct_name = &*struct_name,
                phase_name = &*phase_name
            ),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {wrapper:?}: {e}"));
    let start = Instant::now();
    let mut killed = false;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the contender hung");
        }
        if !killed && phase.load() == CONTENDED {
            // The contender tried for CONTEND_FOR and got nothing: the lock is still the
            // live holder's.
            assert!(lock.is_locked());
            assert_eq!(lock.recoveries(), 0);
            holder.0.as_ref().unwrap().kill().unwrap();
            killed = true;
        }
        std::thread::yield_now();
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(
        status.success() && out.contains("1 passed"),
        "contender under {wrapper:?} failed ({status}):\n{out}"
    );
    assert!(killed, "the contender ended before contending:\n{out}");
    drop(holder);
    assert_eq!(lock.recoveries(), 1);
    assert!(!lock.is_locked());
    assert_eq!(*shared.lock(), 8);
}

#[test]
fn a_live_holder_in_another_pid_namespace_is_never_overtaken() {
    if let Ok(spec) = std::env::var(CONTENDER) {
        return contend(&spec, false);
    }
    scenario(
        "a_live_holder_in_another_pid_namespace_is_never_overtaken",
        &["unshare", "--pid", "--fork", "--mount-proc"],
    );
}

#[test]
fn a_contender_without_proc_never_takes_a_live_lock() {
    if let Ok(spec) = std::env::var(CONTENDER) {
        return contend(&spec, true);
    }
    scenario(
        "a_contender_without_proc_never_takes_a_live_lock",
        &[
            "unshare",
            "--mount",
            "sh",
            "-c",
            "mount -t tmpfs none /proc && exec \"$0\" \"$@\"",
        ],
    );
}

#[test]
fn relocking_from_the_holding_thread_is_an_error_not_a_hang() {
    let lock = Lock::new().unwrap();
    let value = SharedValue::<u32>::new(0).unwrap();
    let g = lock.lock();
    let v = value.lock();
    let start = Instant::now();
    let err = lock.lock_timeout(DEADLINE).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldDeadlock, "{err}");
    assert!(err.to_string().contains("not reentrant"), "{err}");
    assert_eq!(
        value.lock_timeout(DEADLINE).unwrap_err().kind(),
        ErrorKind::WouldDeadlock
    );
    assert!(lock.try_lock().is_none());
    assert!(start.elapsed() < DEADLINE / 2, "the relock waited");
    // The lock still belongs to this thread's guard and works as before.
    assert!(lock.is_locked());
    drop((g, v));
    assert!(!lock.is_locked());
    assert!(!lock.lock_timeout(DEADLINE).unwrap().owner_died());
}

#[test]
fn another_thread_of_the_holding_process_neither_takes_nor_releases_the_lock() {
    let lock = Lock::new().unwrap();
    let g = lock.lock();
    std::thread::scope(|s| {
        s.spawn(|| {
            // Same process, another thread: waits like another process, and has no way
            // to release the holder's lock (the guard is !Send; see the compile_fail
            // doctest on LockGuard).
            assert!(lock.try_lock().is_none());
            let err = lock.lock_timeout(Duration::from_millis(50)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Timeout);
        });
    });
    assert!(lock.is_locked());
    drop(g);
    assert!(!lock.is_locked());
}

#[test]
fn a_thread_that_exits_holding_the_lock_hands_owner_died_to_the_next_locker() {
    let name = Name::new("thread-exit");
    let lock = Lock::create(&name).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| std::mem::forget(lock.lock()));
    });
    // The scope saw the closure end; the thread itself may still be on its way out. When
    // it is gone, the kernel marks its lock FUTEX_OWNER_DIED and wakes this waiter.
    let g = lock.lock_timeout(DEADLINE).unwrap();
    assert!(g.owner_died());
    drop(g);
    assert_eq!(lock.recoveries(), 1);
    assert!(!lock.lock_timeout(DEADLINE).unwrap().owner_died());
}

#[test]
fn a_waiter_is_woken_when_the_holding_thread_exits() {
    let lock = Lock::new().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        s.spawn(|| {
            let g = lock.lock();
            tx.send(()).unwrap();
            std::mem::forget(g);
            // Stay alive a little while the main thread sleeps in the kernel.
            std::thread::sleep(Duration::from_millis(50));
        });
        rx.recv().unwrap();
        let g = lock.lock_timeout(DEADLINE).unwrap();
        assert!(g.owner_died());
    });
}

/// A segment whose trailer is ndshm 0.1's format 1 (128 bytes, a 32-byte lock word set):
/// its lock is never used by this version.
#[test]
fn a_format_1_segment_is_refused_not_locked() {
    let name = Name::new("format1");
    let mut bytes = vec![0u8; 64 + 128];
    let old = &mut bytes[64..];
    old[0..8].copy_from_slice(b"NDSHM\0TR");
    old[8..12].copy_from_slice(&1u32.to_le_bytes());
    old[12..16].copy_from_slice(&3u32.to_le_bytes()); // kind: lock
    std::fs::write(name.path(), &bytes).unwrap();
    let err = Lock::open(&name).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("version 1"), "{err}");
    assert_eq!(
        SharedValue::<u64>::open(&name).unwrap_err().kind(),
        ErrorKind::Unsupported
    );
    // (`ndshm info` says the same: cli/tests/cli.rs, a_format_1_segment_is_described_not_locked.)
    assert_eq!(std::fs::read(name.path()).unwrap(), bytes);
}

/// glibc links the locks a thread holds into that thread's robust list *through the locks'
/// own memory*: dropping the handle of a lock whose guard was leaked must not unmap it, or
/// the thread's next lock (or the kernel, at its exit) writes into whatever is mapped there
/// next. Runs in a child, so that a crash is reported, not fatal to the test binary.
#[test]
fn dropping_a_lock_whose_guard_was_leaked_keeps_its_memory_mapped() {
    let name = Name::new("leaked-guard");
    let array_name = Name::new("leaked-guard-array");
    let (n, an) = (name.0.clone(), array_name.0.clone());
    let child = Process::spawn(move || -> ndshm::Result<()> {
        let other = Lock::new()?;
        let anon = Lock::new()?;
        std::mem::forget(anon.lock());
        drop(anon);
        let named = Lock::create(&n)?;
        std::mem::forget(named.lock());
        drop(named);
        let value = SharedValue::<u64>::new(1)?;
        std::mem::forget(value.lock());
        drop(value);
        let mut array = ndshm::SharedNdArray::<u64, ndarray::Ix1>::zeros(&an, 4)?;
        std::mem::forget(array.lock()?);
        drop(array);
        // New mappings of other sizes, then this thread locks again: glibc links the new
        // lock in front of the leaked ones and writes into their memory.
        let filler = SharedStruct::<[u64; 4096]>::new([7u64; 4096])?;
        drop(other.lock());
        drop(other.lock());
        assert!(filler.load().iter().all(|&x| x == 7), "memory overwritten");
        Ok(())
    })
    .unwrap();
    child.join().unwrap();
    // The names were unlinked all the same: only the mappings were kept.
    assert!(!name.path().exists());
    assert!(!array_name.path().exists());
}
