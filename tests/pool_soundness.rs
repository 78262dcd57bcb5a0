//! The pool is bound to its process, learns of worker deaths only from the kernel (through
//! its fork server), dies with its caller, and does not pin the memory of dropped arrays.

// Opts this test binary in to forking on the harness's threads (see tests/common).
mod common;

use std::cell::RefCell;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ndarray::{ArrayViewMut1, Ix1};
use ndshm::{Chunk, ChunkPlan, ErrorKind, Process, SharedNdArray, SharedValue, WorkerPool};

fn name(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "t-poolsnd-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Job parameters naming a shared counter: `[name length, name bytes…]` (name under 55 bytes), then the target in the last 8.
type Params = [u8; 64];

fn params(counter: &str, target: u64) -> Params {
    let mut p = [0u8; 64];
    p[0] = counter.len() as u8;
    p[1..1 + counter.len()].copy_from_slice(counter.as_bytes());
    p[56..64].copy_from_slice(&target.to_ne_bytes());
    p
}

/// A shared counter that only job chunks open (by name), so that the caller's own chunks
/// can open it too; removed when dropped.
struct Counter(String);

impl Counter {
    fn new(tag: &str) -> Counter {
        let nm = name(tag);
        drop(
            SharedValue::<u64>::create(ndshm::CreateOptions::named(&nm).persistent(true), 0)
                .unwrap(),
        );
        Counter(nm)
    }

    fn load(&self) -> u64 {
        SharedValue::<u64>::open(&self.0).unwrap().load()
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        let _ = ndshm::unlink(&self.0);
    }
}

fn counter_of(p: &Params) -> Result<(SharedValue<u64>, u64), String> {
    let name = std::str::from_utf8(&p[1..1 + p[0] as usize]).map_err(|e| e.to_string())?;
    let target = u64::from_ne_bytes(p[56..64].try_into().unwrap());
    let v = SharedValue::<u64>::open(name).map_err(|e| e.to_string())?;
    Ok((v, target))
}

/// Each chunk waits (10 s at most) until the counter reaches the target, so that with as
/// many chunks as executors every executor runs exactly one; then it writes its pid.
fn barrier_then_pid(_: Chunk, mut x: ArrayViewMut1<'_, i64>, p: &Params) -> Result<(), String> {
    let (v, target) = counter_of(p)?;
    v.fetch_add(1);
    let t = Instant::now();
    while v.load() < target {
        if t.elapsed() > Duration::from_secs(10) {
            return Err("barrier: not every executor took a chunk within 10 s".into());
        }
        std::thread::yield_now();
    }
    x.fill(std::process::id() as i64);
    Ok(())
}

/// Maps `barrier_then_pid` over `a` in one chunk per executor: round `round` of
/// `counter`'s barrier, so every executor takes exactly one chunk.
fn barrier_job(
    pool: &mut WorkerPool,
    a: &mut SharedNdArray<i64, Ix1>,
    counter: &Counter,
    round: u64,
) {
    let n = pool.executors();
    let plan = ChunkPlan::balanced(a.len(), n).unwrap();
    pool.map(
        a,
        &plan,
        params(&counter.0, round * n as u64),
        barrier_then_pid,
    )
    .unwrap();
}

/// Runs a job in which each of the pool's executors takes one chunk, and returns the pids
/// that ran them (sorted).
fn executors_taking_part(pool: &mut WorkerPool) -> Vec<i64> {
    let n = pool.executors();
    let counter = Counter::new("barrier");
    let mut a = SharedNdArray::<i64, Ix1>::zeros(&name("pids"), n).unwrap();
    barrier_job(pool, &mut a, &counter, 1);
    let mut pids = a.as_slice().unwrap().to_vec();
    pids.sort_unstable();
    pids
}

fn expected_executors(pool: &WorkerPool) -> Vec<i64> {
    let mut want: Vec<i64> = pool.worker_pids().iter().map(|&p| i64::from(p)).collect();
    want.push(i64::from(std::process::id() as i32));
    want.sort_unstable();
    want
}

fn square(_: Chunk, mut x: ArrayViewMut1<'_, f64>, _: &()) {
    x.mapv_inplace(|v| v * v);
}

#[test]
fn a_pool_used_from_a_forked_child_is_refused() {
    let mut pool = WorkerPool::new(3).unwrap();
    let child_array = name("child");
    ndshm::scope(|s| -> ndshm::Result<_> {
        s.spawn(|| -> Result<(), String> {
            let mut b =
                SharedNdArray::<f64, Ix1>::zeros(&child_array, 100).map_err(|e| e.to_string())?;
            let plan = ChunkPlan::balanced(100, 4).unwrap();
            let err = pool
                .map(&mut b, &plan, (), square)
                .err()
                .ok_or("map in a forked child succeeded")?;
            if err.kind() != ErrorKind::WrongProcess {
                return Err(format!("map: {err}"));
            }
            let err = pool
                .map_reduce(&b, &plan, (), |_, x, _: &()| x.sum())
                .err()
                .ok_or("map_reduce in a forked child succeeded")?;
            if err.kind() != ErrorKind::WrongProcess {
                return Err(format!("map_reduce: {err}"));
            }
            let err = pool
                .check_workers()
                .err()
                .ok_or("check_workers in a forked child succeeded")?;
            if err.kind() != ErrorKind::WrongProcess {
                return Err(format!("check_workers: {err}"));
            }
            Ok(())
        })?;
        Ok(())
    })
    .unwrap();
    // The parent's pool still runs every executor, and lost no worker.
    assert_eq!(pool.check_workers().unwrap(), 0);
    let want = expected_executors(&pool);
    assert_eq!(executors_taking_part(&mut pool), want);
}

#[test]
fn a_child_dropping_an_inherited_pool_leaves_the_parents_workers_alone() {
    let pool = RefCell::new(Some(WorkerPool::new(3).unwrap()));
    let before = pool.borrow().as_ref().unwrap().worker_pids();
    ndshm::scope(|s| -> ndshm::Result<_> {
        s.spawn(|| drop(pool.borrow_mut().take()))?;
        Ok(())
    })
    .unwrap();
    let mut pool = pool.into_inner().unwrap();
    assert_eq!(pool.worker_pids(), before);
    assert_eq!(pool.check_workers().unwrap(), 0);
    let want = expected_executors(&pool);
    for _ in 0..3 {
        assert_eq!(executors_taking_part(&mut pool), want);
    }
}

/// In a worker: counts itself and exits with code 3. In the caller: waits (10 s at most)
/// until a worker has done so, so that the job cannot finish without the worker.
fn exit_in_worker(_: Chunk, _: ArrayViewMut1<'_, f64>, p: &Params) -> Result<(), String> {
    let (v, caller) = counter_of(p)?;
    if u64::from(std::process::id()) != caller {
        v.fetch_add(1);
        // SAFETY: ends this worker process at once, as a crash would.
        unsafe { libc::_exit(3) };
    }
    let t = Instant::now();
    while v.load() == 0 {
        if t.elapsed() > Duration::from_secs(10) {
            return Err("no worker took a chunk within 10 s".into());
        }
        std::thread::yield_now();
    }
    Ok(())
}

#[test]
fn a_worker_exit_is_reported_exactly_with_sigchld_ignored() {
    // In a child process of our own (SIGCHLD is process-wide): an ignored SIGCHLD makes
    // waitpid fail with ECHILD, which must never be read as "dead, code -1".
    let nm = name("sigign");
    let child = Process::spawn(move || -> Result<(), String> {
        // SAFETY: this forked child is single-threaded; SIG_IGN installs no handler.
        unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
        let mut pool = WorkerPool::new(2).map_err(|e| e.to_string())?;
        let mut a = SharedNdArray::<f64, Ix1>::zeros(&nm, 64).map_err(|e| e.to_string())?;
        let counter = Counter::new("sigign-count");
        let plan = ChunkPlan::balanced(64, 2).unwrap();
        let victim = pool.worker_pids()[0];
        let err = pool
            .map(
                &mut a,
                &plan,
                params(&counter.0, u64::from(std::process::id())),
                exit_in_worker,
            )
            .err()
            .ok_or("the job succeeded although its worker exited")?;
        let msg = err.to_string();
        if err.kind() != ErrorKind::WorkerFailed || !msg.contains("exited with code 3") {
            return Err(format!("unexpected error: {msg}"));
        }
        if pool.worker_pids().contains(&victim) || pool.worker_pids().len() != 1 {
            return Err(format!("not replaced: {:?}", pool.worker_pids()));
        }
        pool.map(&mut a, &plan, (), |_, mut x, _: &()| x += 1.0)
            .map_err(|e| e.to_string())?;
        if a.as_slice().unwrap().iter().any(|&v| v != 1.0) {
            return Err("the next job did not run every chunk".into());
        }
        Ok(())
    })
    .unwrap();
    child.join().unwrap();
}

#[test]
fn workers_are_children_of_the_fork_server_not_of_the_caller() {
    let pool = WorkerPool::new(3).unwrap();
    let me = std::process::id() as i32;
    for pid in pool.worker_pids() {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            eprintln!("skipped: /proc/{pid}/stat is not readable");
            return;
        };
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let ppid: i32 = rest.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert_ne!(ppid, me, "worker {pid} was forked by the caller");
        let server = std::fs::read_to_string(format!("/proc/{ppid}/stat")).unwrap();
        let rest = &server[server.rfind(')').unwrap() + 2..];
        let grand: i32 = rest.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert_eq!(
            grand, me,
            "the fork server of worker {pid} is not our child"
        );
    }
}

/// A slow chunk: counts itself started, then works for 200 ms.
fn slow_chunk(_: Chunk, mut x: ArrayViewMut1<'_, f64>, p: &Params) -> Result<(), String> {
    let (v, _) = counter_of(p)?;
    v.fetch_add(1);
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(200) {
        x.mapv_inplace(|v| v + 1.0);
    }
    Ok(())
}

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a new descriptor that nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn has_exited(fd: &OwnedFd, timeout_ms: i32) -> bool {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, timeout_ms) == 1 }
}

/// Runs a caller process with a 3-executor pool in a long job, SIGKILLs it once its
/// workers are inside their chunks, and returns how long the workers outlived it. With
/// `holder`, the caller first forks a child that keeps every descriptor it inherited (the
/// request pipe's write end included) for up to 10 s.
fn orphan_lifetime(holder: bool) -> Duration {
    let started = Counter::new("started");
    let w0 = SharedValue::<i64>::create(name("w0"), 0).unwrap();
    let w1 = SharedValue::<i64>::create(name("w1"), 0).unwrap();
    let held = SharedValue::<i64>::create(name("holder"), 0).unwrap();
    let release = Counter::new("release");
    let (ns, n0, n1, nh, nr) = (
        started.0.clone(),
        w0.name().unwrap().to_string(),
        w1.name().unwrap().to_string(),
        held.name().unwrap().to_string(),
        release.0.clone(),
    );
    let array = name("orphan");
    let arr = array.clone();
    // The caller made the array and is killed: remove it whatever happens below.
    struct Unlink(String);
    impl Drop for Unlink {
        fn drop(&mut self) {
            let _ = ndshm::unlink(&self.0);
        }
    }
    let _unlink = Unlink(array.clone());
    let caller = Process::spawn(move || -> Result<(), String> {
        let e = |e: ndshm::Error| e.to_string();
        let mut pool = WorkerPool::new(3).map_err(e)?;
        if holder {
            let p = Process::spawn(move || -> Result<(), String> {
                let release = SharedValue::<u64>::open(&nr).map_err(|e| e.to_string())?;
                let t = Instant::now();
                while release.load() == 0 && t.elapsed() < Duration::from_secs(10) {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Ok(())
            })
            .map_err(e)?;
            SharedValue::<i64>::open(&nh)
                .map_err(e)?
                .store(i64::from(p.pid()));
            // Not joined: it outlives us.
            std::mem::forget(p);
        }
        let pids = pool.worker_pids();
        SharedValue::<i64>::open(&n0)
            .map_err(e)?
            .store(i64::from(pids[0]));
        SharedValue::<i64>::open(&n1)
            .map_err(e)?
            .store(i64::from(pids[1]));
        let mut a = SharedNdArray::<f64, Ix1>::zeros(&arr, 6400).map_err(e)?;
        // 64 chunks of 200 ms: about 4 s of work for 3 executors.
        let plan = ChunkPlan::balanced(6400, 64).unwrap();
        pool.map(&mut a, &plan, params(&ns, 0), slow_chunk)
            .map_err(e)?;
        Ok(())
    })
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while (started.load() < 3 || w0.load() == 0 || w1.load() == 0) && Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert!(
        started.load() >= 3,
        "the workers never started their chunks"
    );
    let holder_fd = holder.then(|| pidfd_open(held.load() as i32).expect("holder pidfd"));
    let fds: Vec<OwnedFd> = [w0.load(), w1.load()]
        .iter()
        .filter_map(|&p| pidfd_open(p as i32))
        .collect();
    assert_eq!(fds.len(), 2, "pidfd_open failed");
    caller.kill().unwrap();
    let t = Instant::now();
    let all = fds.iter().all(|fd| has_exited(fd, 5000));
    let lifetime = t.elapsed();
    let _ = caller.join();
    if let Some(fd) = holder_fd {
        SharedValue::<u64>::open(&release.0).unwrap().store(1);
        assert!(has_exited(&fd, 12_000), "the holder did not end");
        assert!(
            held.load() > 0,
            "the holder never started, so the scenario did not happen"
        );
    }
    assert!(all, "a worker outlived its caller by 5 s");
    lifetime
}

#[test]
fn workers_die_promptly_with_their_caller() {
    let lifetime = orphan_lifetime(false);
    eprintln!("orphan workers were gone {lifetime:?} after their caller's SIGKILL");
    // Goal 50 ms; the assertion keeps more than 1 s of slack.
    assert!(lifetime < Duration::from_millis(1500), "{lifetime:?}");
}

#[test]
fn workers_die_with_their_caller_while_its_child_holds_the_inherited_descriptors() {
    let lifetime = orphan_lifetime(true);
    eprintln!("orphan workers (caller's child alive) were gone {lifetime:?} after the SIGKILL");
    assert!(lifetime < Duration::from_millis(1500), "{lifetime:?}");
}

fn maps_of(pid: i32) -> Option<Vec<String>> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    Some(
        maps.lines()
            .filter_map(|l| l.split_whitespace().nth(5).map(str::to_string))
            .collect(),
    )
}

#[test]
fn dropped_arrays_are_not_pinned_by_workers() {
    let mut pool = WorkerPool::new(3).unwrap();
    if pool.worker_pids().iter().any(|&p| maps_of(p).is_none()) {
        eprintln!("skipped: /proc/<worker>/maps is not readable");
        return;
    }
    let counter = Counter::new("pin-barrier");
    let len = (12 << 20) / 8;
    let mut dropped: Vec<String> = Vec::new();
    for round in 1..=8u64 {
        let nm = name("pin");
        let mut a = SharedNdArray::<i64, Ix1>::zeros(&nm, len).unwrap();
        // Every executor runs one chunk, so every worker resolves this job's array.
        barrier_job(&mut pool, &mut a, &counter, round);
        for pid in pool.worker_pids() {
            let maps = maps_of(pid).unwrap();
            for d in &dropped {
                let path = format!("/dev/shm/{d}");
                assert!(
                    !maps.contains(&path),
                    "worker {pid} still maps dropped array {d} in round {round}"
                );
            }
        }
        drop(a);
        dropped.push(nm);
    }
}

#[test]
fn a_job_on_an_unlinked_array_is_refused_before_dispatch() {
    let mut pool = WorkerPool::new(2).unwrap();
    let mut a =
        SharedNdArray::from_array(&name("unlinked"), &ndarray::Array1::range(0.0, 100.0, 1.0))
            .unwrap();
    a.unlink().unwrap();
    let plan = ChunkPlan::balanced(100, 4).unwrap();
    let err = pool.map(&mut a, &plan, (), square).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("unlinked"), "{err}");
    // Refused before dispatch: no chunk ran.
    assert_eq!(a.as_slice().unwrap()[7], 7.0);
    // The pool still serves named arrays.
    let mut b = SharedNdArray::from_array(&name("named"), &ndarray::Array1::range(0.0, 100.0, 1.0))
        .unwrap();
    pool.map(&mut b, &plan, (), square).unwrap();
    assert_eq!(b.as_slice().unwrap()[7], 49.0);
}

/// Selects the inner role of `a_loop_of_12_mib_arrays_fits_a_64_mib_dev_shm`.
const SMALL_SHM_ROLE: &str = "NDSHM_TEST_POOL_SMALL_DEV_SHM";

/// Bytes in use on the file system of `/dev/shm`.
fn dev_shm_used() -> u64 {
    // SAFETY: an all-zero statvfs is a valid value; statvfs fills it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a live, writable statvfs.
    let r = unsafe { libc::statvfs(c"/dev/shm".as_ptr(), &mut st) };
    assert_eq!(r, 0, "statvfs(/dev/shm) failed");
    (st.f_blocks - st.f_bfree) * st.f_frsize
}

/// The inner role: a 64 MiB `/dev/shm` of its own (private mount namespace).
fn small_dev_shm_loop() {
    let mut pool = WorkerPool::new(3).unwrap();
    let counter = Counter::new("small-barrier");
    let n = pool.executors();
    let len = (12 << 20) / 8;
    let mut round = 0u64;
    for _ in 0..16 {
        round += 1;
        let mut a = SharedNdArray::<i64, Ix1>::zeros(&name("small"), len)
            .unwrap_or_else(|e| panic!("array {round} of 12 MiB: {e}"));
        barrier_job(&mut pool, &mut a, &counter, round);
    }
    // The next job (on a small array) releases the last dropped one in every worker.
    round += 1;
    let mut b = SharedNdArray::<i64, Ix1>::zeros(&name("small-last"), n).unwrap();
    barrier_job(&mut pool, &mut b, &counter, round);
    let used = dev_shm_used();
    ndshm::write_stdout(&format!(
        "/dev/shm bytes in use after 16 dropped 12 MiB arrays, pool alive: {used}\n"
    ))
    .unwrap();
    assert!(used < 1 << 20, "{used} bytes still in use");
    ndshm::write_stdout("small-dev-shm: ok\n").unwrap();
}

#[test]
fn a_loop_of_12_mib_arrays_fits_a_64_mib_dev_shm() {
    if std::env::var_os(SMALL_SHM_ROLE).is_some() {
        small_dev_shm_loop();
        return;
    }
    // Re-run this test in a private mount namespace with a 64 MiB tmpfs on /dev/shm.
    let exe = std::env::current_exe().unwrap();
    let script = "mount -t tmpfs -o size=64m ndshm-test /dev/shm && exec \"$0\" --exact \
                  a_loop_of_12_mib_arrays_fits_a_64_mib_dev_shm --nocapture --test-threads=1";
    let out = std::process::Command::new("unshare")
        .args(["-m", "sh", "-c", script])
        .arg(&exe)
        .env(SMALL_SHM_ROLE, "1")
        .output();
    let out = match out {
        Ok(out) => out,
        Err(e) => {
            eprintln!("skipped: cannot run unshare: {e}");
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stdout.contains("running 1 test") {
        eprintln!("skipped: no private 64 MiB /dev/shm (unshare -m, mount): {stderr}");
        return;
    }
    eprintln!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("small-dev-shm: ok"),
        "{stdout}\n{stderr}"
    );
}

#[test]
fn a_killed_fork_server_takes_its_workers_and_the_pool_says_so() {
    let mut pool = WorkerPool::new(3).unwrap();
    let workers = pool.worker_pids();
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", workers[0])) else {
        eprintln!("skipped: /proc is not readable");
        return;
    };
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let server: i32 = rest.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_ne!(server, std::process::id() as i32);
    let fds: Vec<OwnedFd> = workers.iter().filter_map(|&p| pidfd_open(p)).collect();
    assert_eq!(fds.len(), 2);
    // SAFETY: sends SIGKILL to our pool's fork server.
    unsafe { libc::kill(server, libc::SIGKILL) };
    for fd in &fds {
        assert!(
            has_exited(fd, 5000),
            "a worker outlived its fork server by 5 s"
        );
    }
    // Jobs still complete (the caller runs every chunk) ...
    let mut a =
        SharedNdArray::from_array(&name("no-server"), &ndarray::Array1::range(0.0, 64.0, 1.0))
            .unwrap();
    let plan = ChunkPlan::balanced(64, 8).unwrap();
    pool.map(&mut a, &plan, (), square).unwrap();
    assert_eq!(a.as_slice().unwrap()[7], 49.0);
    // ... and the pool says why it cannot replace its workers.
    let err = pool.check_workers().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WorkerFailed, "{err}");
    assert!(err.to_string().contains("fork server"), "{err}");
    drop(pool);
}
