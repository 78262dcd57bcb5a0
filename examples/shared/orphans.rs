//! How long a pool's workers outlive their caller after its SIGKILL mid-job: one trial,
//! shared by `examples/pool_orphans.rs` and `examples/fault_figures.rs`.
//!
//! A trial forks a caller that starts a 3-executor pool and a job of long chunks; once the
//! workers are inside their chunks, the caller is killed, and the time until every worker
//! has ended (its pidfd turns readable) is measured.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use ndarray::{ArrayViewMut1, Ix1};
use ndshm::{Chunk, ChunkPlan, CreateOptions, Process, SharedNdArray, SharedValue, WorkerPool};

type Params = [u8; 64];

fn params(counter: &str) -> Params {
    let mut p = [0u8; 64];
    p[0] = counter.len() as u8;
    p[1..1 + counter.len()].copy_from_slice(counter.as_bytes());
    p
}

/// Counts itself started, then computes for 200 ms.
fn slow_chunk(_: Chunk, mut x: ArrayViewMut1<'_, f64>, p: &Params) -> Result<(), String> {
    let name = std::str::from_utf8(&p[1..1 + p[0] as usize]).map_err(|e| e.to_string())?;
    SharedValue::<u64>::open(name)
        .map_err(|e| e.to_string())?
        .fetch_add(1);
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

fn wait_exited(fd: &OwnedFd, timeout_ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, timeout_ms) == 1 }
}

/// One trial (`i` names its segments): how long the 2 workers outlived their caller.
pub fn trial(i: usize) -> ndshm::Result<Duration> {
    let tag = format!("pool-orphans-{}-{i}", std::process::id());
    let started = format!("{tag}-started");
    drop(SharedValue::<u64>::create(
        CreateOptions::named(&started).persistent(true),
        0,
    )?);
    let pids = SharedValue::<u64>::create(format!("{tag}-pids"), 0)?;
    let (pids_name, started_name, array) = (
        pids.name().unwrap_or_default().to_string(),
        started.clone(),
        format!("{tag}-array"),
    );
    let arr = array.clone();
    let caller = Process::spawn(move || -> Result<(), String> {
        let e = |e: ndshm::Error| e.to_string();
        let mut pool = WorkerPool::new(3).map_err(e)?;
        let w = pool.worker_pids();
        SharedValue::<u64>::open(&pids_name)
            .map_err(e)?
            .store(((w[0] as u64) << 32) | w[1] as u64);
        let mut a = SharedNdArray::<f64, Ix1>::zeros(&arr, 6400).map_err(e)?;
        let plan = ChunkPlan::balanced(6400, 64).map_err(e)?;
        pool.map(&mut a, &plan, params(&started_name), slow_chunk)
            .map_err(e)?;
        Ok(())
    })?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let count = SharedValue::<u64>::open(&started)?;
    while (count.load() < 3 || pids.load() == 0) && Instant::now() < deadline {
        std::thread::yield_now();
    }
    drop(count);
    let w = pids.load();
    let fds: Vec<OwnedFd> = [(w >> 32) as i32, w as u32 as i32]
        .iter()
        .filter_map(|&p| pidfd_open(p))
        .collect();
    caller.kill()?;
    let t = Instant::now();
    let all = fds.iter().all(|fd| wait_exited(fd, 10_000));
    let lifetime = t.elapsed();
    let _ = caller.join();
    let _ = ndshm::unlink(&array);
    let _ = ndshm::unlink(&started);
    assert!(all, "a worker outlived its caller by 10 s");
    Ok(lifetime)
}
