//! Issue 14's figures under faults, in one table: what SIGKILLs and stalls cost the queue,
//! the pipe, the map and the pool. Each row says how it was measured.
//!
//! ```text
//! cargo run --release --example fault_figures            # the figures of docs/figures.md
//! cargo run --release --example fault_figures -- --quick # a short run (< 30 s)
//! ```
//!
//! - **MPMC under SIGKILLs**: 8 producer and 8 consumer processes on one `ByteQueue` of
//!   64 slots; while items flow, producers and consumers are SIGKILLed at random (each
//!   replaced at once). Every item carries a unique id; a consumer counts each id in a
//!   shared table from inside `get_with`'s callback, a producer records how many of its
//!   puts returned `Ok`. Lost = an acknowledged id never counted; duplicated = counted
//!   twice. A consumer killed inside `get_with` loses its item and `lost()` counts it
//!   (`lost()` also counts the slot of a producer killed between its claim and its
//!   publish, and an item whose consumer was killed after its callback counted it).
//! - **`try_` worst latency**: the worst of 1,000 `try_put`/`try_get` calls on a
//!   `ByteQueue` whose consumer holds a slot inside `get_with` and is SIGKILLed (dead) or
//!   left there (stalled), and of 1,000 `try_recv_bytes` on a pipe whose sender is cut
//!   mid-message (4 slots × 1 KiB, a 100 kB message) by SIGKILL or SIGSTOP.
//! - **Map under SIGKILLs**: a child inserts and removes keys of a `SharedMap` (removals
//!   shift probe runs back) and is SIGKILLed at a random operation, again and again; after
//!   each kill every committed entry must be found and `len()` must be exact (the
//!   operation in flight counts either way).
//! - **Orphan workers**: a caller running a pool job of long chunks is SIGKILLed; the time
//!   until both its workers have exited (`examples/pool_orphans.rs`, same trial).
//! - **Dropped arrays and a live pool**: 12 MiB arrays made, mapped on a 3-executor pool and
//!   dropped in a loop; after the next job, the bytes of unlinked `/dev/shm` segments the
//!   workers still map (from `/proc/<worker>/maps`).
//!
//! The run fails (exit status 1) when a guarantee is broken (a duplicate, a loss beyond
//! `lost()`, a lost map entry, bytes held); a missed latency goal is only reported.

use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ndarray::{ArrayViewMut1, Ix1};
use ndshm::{ByteQueue, Chunk, ChunkPlan, Connection, Process, SharedMap, SharedNdArray};
use ndshm::{SharedValue, WorkerPool};

#[path = "shared/orphans.rs"]
mod orphans;

/// How long any wait of this example may take before it gives up (a hang is a failure).
const DEADLINE: Duration = Duration::from_secs(120);

struct Row {
    figure: String,
    value: String,
    goal: &'static str,
    met: bool,
    /// A latency goal: reported, never a failure (a loaded machine may miss it).
    timing: bool,
}

/// Words in anonymous shared memory (`MAP_SHARED`): forked children count into it.
struct SharedWords {
    ptr: *mut AtomicU32,
    len: usize,
}

impl SharedWords {
    fn new(len: usize) -> SharedWords {
        // SAFETY: a fresh anonymous mapping; no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len * 4,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(p != libc::MAP_FAILED, "mmap of {len} words failed");
        SharedWords { ptr: p.cast(), len }
    }

    fn at(&self, i: usize) -> &AtomicU32 {
        assert!(i < self.len, "word {i} of {}", self.len);
        // SAFETY: `i` is inside the mapping (checked), which is zero-filled, 4-byte aligned
        // (page aligned) and lives as long as `self`; only atomics touch it.
        unsafe { &*self.ptr.add(i) }
    }
}

impl Drop for SharedWords {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once; no reference outlives `self`.
        unsafe { libc::munmap(self.ptr.cast(), self.len * 4) };
    }
}

/// splitmix64: the example's only source of randomness (seeded: runs repeat).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !ready() {
        assert!(Instant::now() < end, "{what}: nothing after {DEADLINE:?}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

// ---- 16-process MPMC under SIGKILLs ----

fn spawn_producer(
    q: &Arc<ByteQueue>,
    acked: &Rc<SharedWords>,
    slot: usize,
    per: usize,
) -> ndshm::Result<Process> {
    let (q, acked) = (q.clone(), acked.clone());
    Process::spawn(move || -> ndshm::Result<()> {
        for i in 0..per {
            let id = (slot * per + i) as u64;
            q.put(&id.to_le_bytes()).map_err(ndshm::Error::from)?;
            acked.at(slot).store(i as u32 + 1, Ordering::Release);
        }
        Ok(())
    })
}

fn spawn_consumer(q: &Arc<ByteQueue>, counts: &Rc<SharedWords>) -> ndshm::Result<Process> {
    let (q, counts) = (q.clone(), counts.clone());
    Process::spawn(move || {
        while q
            .get_with(|m| {
                let id = u64::from_le_bytes(m.try_into().expect("8-byte items"));
                counts.at(id as usize).fetch_add(1, Ordering::AcqRel);
            })
            .is_ok()
        {}
    })
}

fn mpmc_under_kills(quick: bool) -> ndshm::Result<Row> {
    const SIDE: usize = 8;
    let (per, kills) = if quick { (2_000, 8) } else { (100_000, 64) };
    let slots = SIDE + kills;
    let q = Arc::new(ByteQueue::new(64, 8)?);
    // This process stays a producer until every producer has finished: replacements start
    // one after another, and consumers must not see the queue disconnected in between.
    q.register_producer()?;
    let acked = Rc::new(SharedWords::new(slots));
    let counts = Rc::new(SharedWords::new(slots * per));
    let mut producers: Vec<(usize, Process)> = Vec::new();
    let mut consumers = Vec::new();
    for slot in 0..SIDE {
        producers.push((slot, spawn_producer(&q, &acked, slot, per)?));
        consumers.push(spawn_consumer(&q, &counts)?);
    }
    let mut next_slot = SIDE;
    let mut rng = Rng(0x14);
    let acked_total = |acked: &SharedWords| -> u64 {
        (0..slots)
            .map(|s| acked.at(s).load(Ordering::Acquire) as u64)
            .sum()
    };
    let (mut producer_kills, mut consumer_kills) = (0, 0);
    for k in 0..kills {
        // Spread the kills over the run: the k-th once the producers acknowledged their
        // share of the first 8 × per items.
        let target = ((k + 1) * SIDE * per / (kills + 1)) as u64;
        wait_for("MPMC progress", || acked_total(&acked) >= target);
        std::thread::sleep(Duration::from_micros(rng.below(500)));
        if k % 2 == 0 {
            let at = rng.below(producers.len() as u64) as usize;
            let (_, p) = producers.swap_remove(at);
            p.kill()?;
            let _ = p.join();
            producer_kills += 1;
            producers.push((next_slot, spawn_producer(&q, &acked, next_slot, per)?));
            next_slot += 1;
        } else {
            let at = rng.below(consumers.len() as u64) as usize;
            let c = consumers.swap_remove(at);
            c.kill()?;
            let _ = c.join();
            consumer_kills += 1;
            consumers.push(spawn_consumer(&q, &counts)?);
        }
    }
    for (_, p) in producers {
        p.join()?;
    }
    // Every producer finished: consumers drain what is left, then see the queue closed.
    q.shutdown(false);
    for c in consumers {
        c.join()?;
    }
    let (mut ok, mut lost, mut dup, mut unacked_delivered) = (0u64, 0u64, 0u64, 0u64);
    for slot in 0..slots {
        let a = acked.at(slot).load(Ordering::Acquire) as usize;
        ok += a as u64;
        for i in 0..per {
            let c = counts.at(slot * per + i).load(Ordering::Acquire);
            if c > 1 {
                dup += 1;
            }
            if i < a && c == 0 {
                lost += 1;
            }
            if i >= a && c == 1 {
                unacked_delivered += 1;
            }
        }
    }
    let counted = q.lost();
    Ok(Row {
        figure: format!(
            "Items lost / duplicated, 16-process MPMC ({SIDE} producers + {SIDE} consumers, \
             {producer_kills} producer and {consumer_kills} consumer SIGKILLs mid-run)"
        ),
        value: format!(
            "lost {lost} of {ok} acknowledged (`lost()` = {counted}), duplicated {dup}; \
             {unacked_delivered} delivered whose producer died before its ack"
        ),
        goal: "0 duplicated; lost only inside a killed get, ≤ `lost()`",
        met: dup == 0 && lost <= counted,
        timing: false,
    })
}

// ---- try_ latency with a dead and a stalled peer ----

/// Worst duration of `calls` calls of `f`.
fn worst(calls: usize, mut f: impl FnMut()) -> Duration {
    (0..calls)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .max()
        .unwrap_or_default()
}

/// Whether `pid` sleeps in the `futex` system call.
fn asleep_on_futex(pid: i32) -> bool {
    let want = format!("{} ", libc::SYS_futex);
    std::fs::read_to_string(format!("/proc/{pid}/syscall")).is_ok_and(|s| s.starts_with(&want))
}

/// A queue whose consumer took an item inside `get_with` and was then SIGKILLed (`dead`)
/// or left there: the worst `try_put` and `try_get` of 1,000 rounds each.
fn queue_try_latency(dead: bool) -> ndshm::Result<(Duration, Duration)> {
    let q = Arc::new(ByteQueue::new(2, 64)?);
    let ready = Arc::new(SharedValue::<u32>::new(0)?);
    q.put(b"a")?;
    let child = Process::spawn({
        let (q, ready) = (q.clone(), ready.clone());
        move || {
            let _ = q.get_with(|_| {
                ready.store(1);
                std::thread::sleep(Duration::from_secs(3600));
            });
        }
    })?;
    wait_for("the consumer inside get_with", || ready.load() == 1);
    let mut child = Some(child);
    if dead {
        let c = child.take().expect("spawned");
        c.kill()?;
        let _ = c.join();
    }
    let (mut put, mut get) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..1000 {
        put = put.max(worst(1, || {
            let _ = q.try_put(b"b");
        }));
        get = get.max(worst(1, || {
            let _ = q.try_get();
        }));
    }
    if let Some(c) = child {
        c.kill()?;
        let _ = c.join();
    }
    Ok((put, get))
}

/// A pipe whose sender is cut mid-message by SIGKILL (`dead`) or SIGSTOP: the worst
/// `try_recv_bytes` of 1,000.
fn pipe_try_latency(dead: bool) -> ndshm::Result<Duration> {
    let (a, b) = Connection::pair(4, 1024)?;
    let b = Arc::new(b);
    let child = Process::spawn({
        let b = b.clone();
        move || {
            let _ = b.send_bytes(&vec![7u8; 100_000]);
        }
    })?;
    let pid = child.pid();
    wait_for("the sender filling the pipe", || asleep_on_futex(pid));
    child.signal(if dead { libc::SIGKILL } else { libc::SIGSTOP })?;
    let mut child = Some(child);
    if dead {
        let _ = child.take().expect("spawned").join();
    }
    let w = worst(1000, || {
        let _ = a.try_recv_bytes();
    });
    if let Some(c) = child {
        c.kill()?;
        let _ = c.join();
    }
    Ok(w)
}

fn try_latency_rows() -> ndshm::Result<Vec<Row>> {
    let us = |d: Duration| format!("{:.1} µs", d.as_secs_f64() * 1e6);
    let goal = "≤ 1 ms";
    let ms = Duration::from_millis(1);
    let (dput, dget) = queue_try_latency(true)?;
    let (sput, sget) = queue_try_latency(false)?;
    let pdead = pipe_try_latency(true)?;
    let pstall = pipe_try_latency(false)?;
    Ok(vec![
        Row {
            figure: "`try_put` / `try_get` worst of 1,000, ByteQueue, consumer killed inside \
                     `get_with`"
                .into(),
            value: format!("{} / {}", us(dput), us(dget)),
            goal,
            met: dput <= ms && dget <= ms,
            timing: true,
        },
        Row {
            figure: "`try_put` / `try_get` worst of 1,000, ByteQueue, consumer stalled inside \
                     `get_with`"
                .into(),
            value: format!("{} / {}", us(sput), us(sget)),
            goal,
            met: sput <= ms && sget <= ms,
            timing: true,
        },
        Row {
            figure: "`try_recv_bytes` worst of 1,000, pipe, sender SIGKILLed / SIGSTOPped \
                     mid-message"
                .into(),
            value: format!("{} / {}", us(pdead), us(pstall)),
            goal,
            met: pdead <= ms && pstall <= ms,
            timing: true,
        },
    ])
}

// ---- SharedMap under SIGKILLs ----

/// The key of op pair `j`: spread over 64 bits, so that probe runs form.
fn map_key(j: u64) -> u64 {
    Rng(j).next()
}

/// Op `i` of the churn: inserts keys `2j` and `2j + 1`, then removes key `2j` (`j = i / 3`).
fn map_op(map: &SharedMap<u64, u64>, i: u64) -> ndshm::Result<()> {
    let j = i / 3;
    match i % 3 {
        0 => map.insert(&map_key(2 * j), i).map(drop),
        1 => map.insert(&map_key(2 * j + 1), i).map(drop),
        _ => map.remove(&map_key(2 * j)).map(drop),
    }
}

/// Whether key `2j + half` is in the map after the first `n` ops, and its value.
fn map_expected(j: u64, half: u64, n: u64) -> Option<u64> {
    let insert_at = 3 * j + half;
    if insert_at >= n || (half == 0 && 3 * j + 2 < n) {
        return None;
    }
    Some(insert_at)
}

fn map_len_after(n: u64) -> u64 {
    let full = n / 3;
    full + (n % 3).min(2)
}

fn map_under_kills(quick: bool) -> ndshm::Result<Row> {
    let kills = if quick { 100 } else { 1000 };
    let map = Arc::new(SharedMap::<u64, u64>::new(1 << 16)?);
    let done = Arc::new(SharedValue::new(0u64)?);
    let mut rng = Rng(0x3a9);
    let (mut lost, mut wrong, mut bad_len) = (0u64, 0u64, 0u64);
    for _ in 0..kills {
        let start = done.load();
        let target = start + 1 + rng.below(64);
        let mut child = Process::spawn({
            let (m, d) = (map.clone(), done.clone());
            move || -> ndshm::Result<()> {
                // At most 64 ops past the target (a slow kill must not fill the map),
                // then wait for the kill.
                for i in start..target + 64 {
                    map_op(&m, i)?;
                    d.store(i + 1);
                }
                std::thread::sleep(DEADLINE);
                Ok(())
            }
        })?;
        let end = Instant::now() + DEADLINE;
        let mut spins = 0u32;
        while done.load() < target {
            spins += 1;
            if spins % 4096 == 0 {
                assert!(Instant::now() < end, "the map writer made no progress");
                if child.is_finished()? {
                    let why = match child.join() {
                        Ok(()) => "it returned".to_string(),
                        Err(e) => e.to_string(),
                    };
                    panic!("the map writer stopped at op {}: {why}", done.load());
                }
            }
            std::hint::spin_loop();
        }
        child.kill()?;
        let _ = child.join();
        // Ops before `n` returned; op `n` was in flight: either outcome is right.
        let n = done.load();
        for j in 0..=n / 3 {
            for half in 0..2 {
                let key = map_key(2 * j + half);
                let before = map_expected(j, half, n);
                let after = map_expected(j, half, n + 1);
                let got = map.get(&key)?;
                if got != before && got != after {
                    if before.is_some() && got.is_none() {
                        lost += 1;
                    } else {
                        wrong += 1;
                    }
                }
            }
        }
        let len = map.len() as u64;
        if len != map_len_after(n) && len != map_len_after(n + 1) {
            bad_len += 1;
        }
    }
    Ok(Row {
        figure: format!(
            "Map entries lost, {kills} SIGKILLs of a `SharedMap` writer mid-insert/remove \
             ({} entries at the end)",
            map.len()
        ),
        value: format!("{lost} lost, {wrong} wrong, `len()` off after {bad_len} kills"),
        goal: "0",
        met: lost == 0 && wrong == 0 && bad_len == 0,
        timing: false,
    })
}

// ---- the pool ----

fn orphans_row(quick: bool) -> ndshm::Result<Row> {
    let trials = if quick { 3 } else { 20 };
    let mut times = (0..trials)
        .map(orphans::trial)
        .collect::<ndshm::Result<Vec<_>>>()?;
    times.sort();
    let (median, max) = (times[times.len() / 2], times[times.len() - 1]);
    Ok(Row {
        figure: format!(
            "Orphan worker lifetime after the caller's SIGKILL mid-job ({trials} trials, 2 \
             workers)"
        ),
        value: format!(
            "median {:.1} ms, max {:.1} ms",
            median.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        ),
        goal: "≤ 50 ms",
        met: max <= Duration::from_millis(50),
        timing: true,
    })
}

fn add_one(_: Chunk, mut x: ArrayViewMut1<'_, f64>, _: &()) {
    x.mapv_inplace(|v| v + 1.0);
}

/// As `add_one`, and takes 20 ms: every executor of the pool gets a chunk of the job.
fn add_one_slowly(c: Chunk, x: ArrayViewMut1<'_, f64>, p: &()) {
    std::thread::sleep(Duration::from_millis(20));
    add_one(c, x, p);
}

/// Bytes of unlinked `/dev/shm` segments that process `pid` maps.
fn unlinked_shm_bytes(pid: i32) -> u64 {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    maps.lines()
        .filter(|l| l.contains("/dev/shm/") && l.ends_with("(deleted)"))
        .filter_map(|l| {
            let (range, _) = l.split_once(' ')?;
            let (a, b) = range.split_once('-')?;
            Some(u64::from_str_radix(b, 16).ok()? - u64::from_str_radix(a, 16).ok()?)
        })
        .sum()
}

fn dropped_arrays_row(quick: bool) -> ndshm::Result<Row> {
    let arrays = if quick { 4 } else { 16 };
    let len = (12 << 20) / 8;
    let mut pool = WorkerPool::new(3)?;
    let plan = ChunkPlan::balanced(len, 8)?;
    let tag = format!("fault-figures-{}", std::process::id());
    for i in 0..arrays {
        let mut a = SharedNdArray::<f64, Ix1>::zeros(&format!("{tag}-{i}"), len)?;
        pool.map(&mut a, &plan, (), add_one)?;
    }
    // The next job releases what the workers kept of the last dropped array: chunks of
    // 20 ms, so that every worker is dispatched one.
    let mut b = SharedNdArray::<f64, Ix1>::zeros(&format!("{tag}-last"), 64)?;
    pool.map(&mut b, &ChunkPlan::balanced(64, 8)?, (), add_one_slowly)?;
    let held: u64 = pool.worker_pids().into_iter().map(unlinked_shm_bytes).sum();
    Ok(Row {
        figure: format!(
            "`/dev/shm` bytes the pool's workers still map after {arrays} dropped 12 MiB \
             arrays (pool alive, after the next job)"
        ),
        value: format!("{held} B"),
        goal: "0",
        met: held == 0,
        timing: false,
    })
}

fn main() -> ndshm::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let start = Instant::now();
    let mut rows = vec![mpmc_under_kills(quick)?];
    rows.extend(try_latency_rows()?);
    rows.push(map_under_kills(quick)?);
    rows.push(orphans_row(quick)?);
    rows.push(dropped_arrays_row(quick)?);
    println!("| Figure | Measured | Goal | Met |");
    println!("|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} |",
            r.figure,
            r.value,
            r.goal,
            if r.met { "yes" } else { "**no**" }
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\n{} cores, load average {}; {:.1} s{}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        start.elapsed().as_secs_f64(),
        if quick { " (--quick)" } else { "" }
    );
    // A broken guarantee fails the run; a missed latency goal is only reported.
    if rows.iter().any(|r| !r.met && !r.timing) {
        eprintln!("a guarantee was broken: see the rows marked **no**");
        std::process::exit(1);
    }
    Ok(())
}
