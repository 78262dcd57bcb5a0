//! Stress: several worker processes each run many create / attach (in a forked child) /
//! compute / drop cycles on the same name, with faults injected on purpose — children
//! SIGKILLed while attached, children that create a segment and are SIGKILLed or `_exit`
//! without unlinking it (`gc` must find exactly those) — then checks that `/dev/shm` holds
//! no segment of this test and that every process was reaped.
//!
//! `cargo test --test stress` runs the bounded version (CI); the soak version runs for
//! `NDSHM_SOAK_SECS` (default 60) with `NDSHM_SOAK_WORKERS` (default 8) workers:
//! `cargo test --release --test stress -- --ignored --nocapture`.

// Opts this test binary in to forking on the harness's threads (see tests/common).
mod common;

use std::time::{Duration, Instant};

use ndarray::{Axis, Ix1, Ix2};
use ndshm::{Process, SharedNdArray};

/// Per-worker counters, one row each in a shared array.
const CYCLES: usize = 0;
const FORKS: usize = 1;
const FAULTS: usize = 2;
const GC_REMOVED: usize = 3;
const STATS: usize = 4;

fn exists(name: &str) -> bool {
    std::fs::symlink_metadata(format!("/dev/shm/{name}")).is_ok()
}

fn wait_for(name: &str) -> Result<(), String> {
    let start = Instant::now();
    while !exists(name) {
        if start.elapsed() > Duration::from_secs(30) {
            return Err(format!("{name} never appeared"));
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    Ok(())
}

/// One worker: cycles until `stop` says so, recording its counters in `stats`.
fn worker(
    prefix: &str,
    id: usize,
    stop: impl Fn(u64) -> bool,
    stats: &mut ndarray::ArrayViewMut1<u64>,
) -> Result<(), String> {
    let name = format!("{prefix}-w{id}");
    let orphan = format!("{prefix}-w{id}-orphan");
    let mut cycle = 0u64;
    while !stop(cycle) {
        let len = 1 + (cycle as usize * 7919 + id * 104_729) % 20_000;
        let mut a = SharedNdArray::<f64, Ix1>::from_elem(&name, len, cycle as f64)
            .map_err(|e| format!("cycle {cycle}: create: {e}"))?;
        let n2 = name.clone();
        match cycle % 10 {
            7 => {
                // Fault: a child attached (or attaching) is killed mid-compute.
                let child = Process::spawn(move || -> ndshm::Result<()> {
                    // SAFETY: the parent does not read the data while this child lives.
                    let mut b = unsafe { SharedNdArray::<f64, Ix1>::open(&n2)? };
                    loop {
                        b.view_mut().mapv_inplace(|x| x + 1.0);
                    }
                })
                .map_err(|e| e.to_string())?;
                std::thread::sleep(Duration::from_micros(cycle % 500));
                child.kill().map_err(|e| e.to_string())?;
                if child.join().is_ok() {
                    return Err("a killed child reported success".into());
                }
                stats[FAULTS] += 1;
            }
            8 | 9 => {
                // Fault: a child creates its own segment and dies without unlinking it
                // (SIGKILL, or _exit without Drop); gc must find exactly that one.
                let o2 = orphan.clone();
                let hang = cycle % 10 == 8;
                let child = Process::spawn(move || {
                    let s = SharedNdArray::<u8, Ix1>::zeros(&o2, 4096).unwrap();
                    std::mem::forget(s);
                    if hang {
                        std::thread::sleep(Duration::from_secs(600)); // until killed
                    }
                })
                .map_err(|e| e.to_string())?;
                if hang {
                    wait_for(&orphan)?;
                    child.kill().map_err(|e| e.to_string())?;
                    let _ = child.join();
                } else {
                    child.join().map_err(|e| e.to_string())?;
                }
                stats[FAULTS] += 1;
                let removed =
                    ndshm::gc_matching(|s| s.name == orphan).map_err(|e| e.to_string())?;
                if removed.len() != 1 || exists(&orphan) {
                    return Err(format!("cycle {cycle}: gc removed {removed:?}"));
                }
                stats[GC_REMOVED] += 1;
            }
            _ => {
                // Attach in a child, compute, check.
                Process::spawn(move || -> ndshm::Result<()> {
                    // SAFETY: the parent waits for this child before it reads the data.
                    let mut b = unsafe { SharedNdArray::<f64, Ix1>::open(&n2)? };
                    b.view_mut().mapv_inplace(|x| 2.0 * x + 1.0);
                    Ok(())
                })
                .and_then(Process::join)
                .map_err(|e| format!("cycle {cycle}: child: {e}"))?;
                let want = 2.0 * cycle as f64 + 1.0;
                if a.as_slice().unwrap().iter().any(|&x| x != want) {
                    return Err(format!("cycle {cycle}: wrong result"));
                }
            }
        }
        stats[FORKS] += 1;
        a.view_mut()[0] = -1.0;
        drop(a);
        if exists(&name) {
            return Err(format!("cycle {cycle}: {name} survived its owner's drop"));
        }
        cycle += 1;
        stats[CYCLES] += 1;
    }
    // Every child of this worker was reaped.
    match nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
        Err(nix::errno::Errno::ECHILD) => Ok(()),
        other => Err(format!("worker {id} has an unreaped child: {other:?}")),
    }
}

struct Totals {
    cycles: u64,
    forks: u64,
    faults: u64,
    gc_removed: u64,
    secs: f64,
}

fn run(tag: &str, workers: usize, stop: impl Fn(u64) -> bool + Copy) -> Totals {
    let me = std::process::id();
    let prefix = format!("stress-{me}-{tag}");
    let start = Instant::now();
    let stats_name = format!("{prefix}-stats");
    let stats = SharedNdArray::<u64, Ix2>::zeros(&stats_name, (workers, STATS)).unwrap();
    {
        let (prefix, stats_name) = (&prefix, &stats_name);
        ndshm::scope(|s| -> ndshm::Result<_> {
            for id in 0..workers {
                s.spawn(move || -> Result<(), String> {
                    // A handle works only in the process that made it: the child opens
                    // its own. SAFETY: each child writes only its own row, and the parent
                    // reads the array only after the scope has joined every child.
                    let mut stats = unsafe { SharedNdArray::<u64, Ix2>::open(stats_name) }
                        .map_err(|e| e.to_string())?;
                    let mut view = stats.view_mut();
                    let mut row = view.index_axis_mut(Axis(0), id);
                    worker(prefix, id, stop, &mut row)
                })?;
            }
            Ok(())
        })
        .unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let sum = |col: usize| stats.view().column(col).sum();
    let totals = Totals {
        cycles: sum(CYCLES),
        forks: sum(FORKS) + workers as u64,
        faults: sum(FAULTS),
        gc_removed: sum(GC_REMOVED),
        secs,
    };
    drop(stats);
    // Nothing of this test is left in /dev/shm, and gc finds nothing more.
    let left: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(&prefix))
        .collect();
    assert!(left.is_empty(), "left in /dev/shm: {left:?}");
    let stale = ndshm::gc_matching(|s| s.name.contains(&prefix)).unwrap();
    assert!(stale.is_empty(), "unexpected leaks: {stale:?}");
    // No zombie child of this process.
    let zombies: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let rest = &stat[stat.rfind(')').unwrap_or(0) + 1..];
            let mut f = rest.split_whitespace();
            let (state, ppid) = (f.next(), f.next());
            state == Some("Z") && ppid == Some(&me.to_string())
        })
        .collect();
    assert!(zombies.is_empty(), "zombies: {zombies:?}");
    eprintln!(
        "{tag}: {workers} workers, {} create/attach/compute/drop cycles, {} processes \
         forked, {} faults injected ({} leaked segments found and removed by gc), \
         0 unexpected leaks, 0 zombies, {:.1} s ({:.0} cycles/s)",
        totals.cycles,
        totals.forks,
        totals.faults,
        totals.gc_removed,
        totals.secs,
        totals.cycles as f64 / totals.secs
    );
    totals
}

#[test]
fn thousands_of_cycles_leave_nothing_behind() {
    const WORKERS: usize = 4;
    const CYCLES_EACH: u64 = 1000;
    let t = run("ci", WORKERS, |c| c >= CYCLES_EACH);
    assert_eq!(t.cycles, WORKERS as u64 * CYCLES_EACH);
    assert_eq!(t.faults, WORKERS as u64 * CYCLES_EACH * 3 / 10);
    assert_eq!(t.gc_removed, WORKERS as u64 * CYCLES_EACH * 2 / 10);
}

#[test]
#[ignore = "soak run: NDSHM_SOAK_SECS (default 60) seconds"]
fn soak() {
    let secs: u64 = std::env::var("NDSHM_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let workers: usize = std::env::var("NDSHM_SOAK_WORKERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let until = Instant::now() + Duration::from_secs(secs);
    // Each worker checks the clock (the deadline is copied into every fork).
    let t = run("soak", workers, move |_| Instant::now() >= until);
    assert!(t.cycles > 0);
}
