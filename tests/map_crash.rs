//! `SharedMap` under crashes and hostile memory: a holder killed between any two of its
//! stores (inserting, replacing, removing, `popitem`) loses no committed entry, keeps the
//! insertion order and leaves `len()` exact; bytes written over the map by something else
//! give a typed error in bounded time, never a panic or a hang.

mod common;

use std::collections::HashMap;
use std::io::{Seek, SeekFrom, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Name, Rng};
use ndshm::{ErrorKind, Process, SharedMap, SharedValue};

type Map = SharedMap<u64, u64>;

/// How long any child of these tests may run before it counts as hung.
const DEADLINE: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug)]
enum Op {
    Insert(u64, u64),
    Remove(u64),
    /// Removes the entry inserted last.
    PopItem,
}

/// An endless, deterministic stream of inserts (new keys and replacements), removals and
/// `popitem`s that keeps the map near its capacity (load ½: long probe runs, so removals
/// shift entries back), with the model of what the map must hold after each operation:
/// the values, and the keys in insertion order.
///
/// A forked child draws from its copy without allocating (the parent's other threads may
/// hold the allocator's lock at the fork): the model's room for `cap` keys is reserved
/// when the workload is made or cloned.
struct Workload {
    rng: Rng,
    cap: usize,
    model: HashMap<u64, u64>,
    /// The keys in insertion order (a replacement keeps its key's place).
    keys: Vec<u64>,
}

impl Clone for Workload {
    fn clone(&self) -> Workload {
        let mut w = Workload {
            rng: self.rng.clone(),
            cap: self.cap,
            model: self.model.clone(),
            keys: self.keys.clone(),
        };
        w.model.reserve(self.cap);
        w.keys.reserve(self.cap);
        w
    }
}

impl Workload {
    fn new(seed: u64, cap: usize) -> Workload {
        Workload {
            rng: Rng(seed),
            cap,
            model: HashMap::with_capacity(cap),
            keys: Vec::with_capacity(cap),
        }
    }

    /// The next operation, applied to the model.
    fn next_op(&mut self) -> Op {
        let r = self.rng.below(100);
        if self.keys.is_empty() || (r < 45 && self.keys.len() < self.cap) {
            let k = loop {
                // Keys over all 64 bits: the hash of small integers keeps their low bits,
                // which would give no collisions and no probe runs to shift.
                let k = self.rng.next();
                if !self.model.contains_key(&k) {
                    break k;
                }
            };
            let v = self.rng.next();
            self.keys.push(k);
            self.model.insert(k, v);
            Op::Insert(k, v)
        } else if r < 65 {
            let k = self.keys[self.rng.below(self.keys.len() as u64) as usize];
            let v = self.rng.next();
            self.model.insert(k, v);
            Op::Insert(k, v)
        } else if r < 88 {
            let at = self.rng.below(self.keys.len() as u64) as usize;
            let k = self.keys.remove(at);
            self.model.remove(&k);
            Op::Remove(k)
        } else {
            let k = self.keys.pop().expect("not empty");
            self.model.remove(&k);
            Op::PopItem
        }
    }

    /// What the map must hold, in insertion order.
    fn entries(&self) -> Vec<(u64, u64)> {
        self.keys.iter().map(|k| (*k, self.model[k])).collect()
    }
}

fn apply(map: &Map, op: Op) -> ndshm::Result<()> {
    match op {
        Op::Insert(k, v) => map.insert(&k, v).map(drop),
        Op::Remove(k) => map.remove(&k).map(drop),
        Op::PopItem => map.popitem().map(drop),
    }
}

/// Which of `candidates` (the model before and after the operation in flight) the map
/// holds, in insertion order; checks that `len()` is exact, that every entry is found by
/// its key, and that iterating both ways gives the same order.
fn matching(map: &Map, candidates: &[&Workload], what: &str) -> usize {
    let held = map.to_vec();
    let Some(at) = candidates.iter().position(|w| held == w.entries()) else {
        let want = candidates.first().map_or(0, |w| w.model.len());
        panic!(
            "{what}: the map holds {} entries matching neither the committed state \
             ({want} entries) nor the one with the operation in flight",
            held.len()
        );
    };
    let model = &candidates[at].model;
    assert_eq!(map.len(), model.len(), "{what}: len() is not exact");
    let walked: Vec<_> = map.iter().collect::<ndshm::Result<_>>().unwrap();
    assert_eq!(walked, held, "{what}: iter() and to_vec() disagree");
    let mut back: Vec<_> = map.reversed().collect::<ndshm::Result<_>>().unwrap();
    back.reverse();
    assert_eq!(back, held, "{what}: reversed() is not iter() backwards");
    for (k, v) in model {
        assert_eq!(map.get(k).unwrap(), Some(*v), "{what}: key {k} not found");
    }
    at
}

/// Waits for `child` with the tests' deadline; a child still running then is killed and
/// the test fails as hung.
fn join_within(mut child: Process, what: &str) -> ndshm::Result<()> {
    let end = Instant::now() + DEADLINE;
    while !child.is_finished()? {
        if Instant::now() > end {
            let _ = child.kill();
            panic!(
                "{what}: child {} still running after {DEADLINE:?}",
                child.pid()
            );
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    child.join()
}

fn injected(r: &ndshm::Result<()>) -> bool {
    match r {
        Ok(()) => false,
        Err(e)
            if e.to_string()
                .contains(&format!("code {}", Map::__FAULT_EXIT)) =>
        {
            true
        }
        Err(e) => panic!("child failed otherwise: {e}"),
    }
}

#[test]
fn map_holder_killed_between_any_two_stores_loses_no_committed_entry() {
    const CAP: usize = 16;
    const OPS: usize = 80;
    const SEED: u64 = 14;
    let mut step = 1u64;
    let mut mid_op = 0;
    loop {
        let map = Arc::new(Map::new(CAP).unwrap());
        let done = Arc::new(SharedValue::new(0u64).unwrap());
        let (m, d, mut w) = (map.clone(), done.clone(), Workload::new(SEED, CAP));
        let child = Process::spawn(move || -> ndshm::Result<()> {
            Map::__exit_at_step(step);
            for i in 0..OPS {
                apply(&m, w.next_op())?;
                d.store(i as u64 + 1);
            }
            Ok(())
        })
        .unwrap();
        if !injected(&join_within(child, "writer")) {
            assert_eq!(done.load(), OPS as u64);
            break;
        }
        if step % 4 == 0 {
            // A recoverer that dies inside its recovery, at one of its first steps.
            let m = map.clone();
            let recoverer = Process::spawn(move || {
                Map::__exit_at_step(1 + step / 4 % 4);
                let _ = m.len();
            })
            .unwrap();
            let _ = injected(&join_within(recoverer, "recoverer"));
        }

        let what = format!("killed at step {step}");
        let done = done.load() as usize;
        let mut before = Workload::new(SEED, CAP);
        for _ in 0..done {
            before.next_op();
        }
        let mut after = before.clone();
        after.next_op();
        let mut w = if matching(&map, &[&before, &after], &what) == 0 {
            before
        } else {
            mid_op += 1;
            after
        };
        // The map works on after the recovery.
        for _ in 0..20 {
            apply(&map, w.next_op()).unwrap();
        }
        matching(&map, &[&w], &format!("{what}, then 20 more operations"));
        step += 1;
    }
    // Every operation was cut at each of its steps: the loop ran through them all.
    assert!(step > OPS as u64, "only {step} steps for {OPS} operations");
    assert!(mid_op > 0, "no crash landed after an operation's commit");
}

/// Lets a child churn through `w` on `map` and SIGKILLs it at a random moment, `kills`
/// times; after each kill the map must hold what the operations that returned left.
/// Returns how many kills landed after the commit of the operation in flight.
fn churn_and_kill(mut w: Workload, kills: usize, seed: u64) -> usize {
    let map = Arc::new(Map::new(w.cap).unwrap());
    let done = Arc::new(SharedValue::new(0u64).unwrap());
    let mut rng = Rng(seed);
    let mut after_commit = 0;
    for kill in 0..kills {
        let start = done.load();
        let (m, d, mut cw) = (map.clone(), done.clone(), w.clone());
        let child = Process::spawn(move || -> ndshm::Result<()> {
            let mut i = start;
            loop {
                apply(&m, cw.next_op())?;
                i += 1;
                d.store(i);
            }
        })
        .unwrap();
        let target = start + 1 + rng.below(64);
        let end = Instant::now() + DEADLINE;
        while done.load() < target {
            assert!(
                Instant::now() < end,
                "kill {kill}: the writer made no progress"
            );
            std::thread::yield_now();
        }
        child.kill().unwrap();
        let e = child.join().unwrap_err();
        assert!(e.to_string().contains("SIGKILL"), "kill {kill}: {e}");

        let now = done.load();
        for _ in start..now {
            w.next_op();
        }
        let mut after = w.clone();
        after.next_op();
        if matching(&map, &[&w, &after], &format!("seed {seed}, kill {kill}")) == 1 {
            after_commit += 1;
            w = after;
            done.store(now + 1);
        }
    }
    after_commit
}

#[test]
fn map_holder_sigkilled_1000_times_mid_churn_loses_no_committed_entry() {
    const CAP: usize = 256;
    // Four maps side by side: the kills are 4 × 250, and the waits for a dead holder's
    // lock overlap.
    const MAPS: u64 = 4;
    const KILLS: usize = 250;
    let after_commit: usize = std::thread::scope(|s| {
        let runs: Vec<_> = (0..MAPS)
            .map(|i| s.spawn(move || churn_and_kill(Workload::new(0x5eed + i, CAP), KILLS, i)))
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).sum()
    });
    // Some kills land between an operation's commit and the progress store; most do not.
    assert!(
        after_commit < MAPS as usize * KILLS,
        "every kill landed after a commit"
    );
}

/// Writes `bytes` at `offset` of segment `name`, as a process that is not ndshm would.
fn scribble(name: &Name, offset: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(name.path())
        .unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

/// The map's header: the table starts here.
const HEADER: u64 = 128;

/// The bytes from the end of the map's header to the start of its trailer (192).
fn table_len(name: &Name) -> u64 {
    std::fs::metadata(name.path()).unwrap().len() - 192 - HEADER
}

/// Runs every map operation on segment `name` in a child with a deadline: each must
/// return (an error of an allowed kind, or a value), never panic or hang.
fn every_operation_returns(name: &Name, what: &str) {
    let n = name.0.clone();
    let child = Process::spawn(move || -> Result<(), String> {
        let map = match Map::open(&n) {
            Ok(map) => map,
            Err(e) if matches!(e.kind(), ErrorKind::InvalidHeader | ErrorKind::TypeMismatch) => {
                return Ok(())
            }
            Err(e) => return Err(format!("open: {e}")),
        };
        let allowed = |r: ndshm::Result<()>, op: &str| match r {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::Full) => Ok(()),
            Err(e) => Err(format!("{op}: {e}")),
        };
        for k in [0u64, 1, 7, 1 << 40, u64::MAX] {
            allowed(map.insert(&k, k).map(drop), "insert")?;
            allowed(map.get(&k).map(drop), "get")?;
            allowed(map.update(&k, 0, |v| v ^ 1).map(drop), "update")?;
            allowed(map.remove(&k).map(drop), "remove")?;
            allowed(map.popitem().map(drop), "popitem")?;
        }
        for e in map.iter().chain(map.reversed()) {
            match e {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Corrupt => {}
                Err(e) => return Err(format!("iter: {e}")),
            }
        }
        let _ = (map.len(), map.to_vec());
        Ok(())
    })
    .unwrap();
    join_within(child, what).unwrap_or_else(|e| panic!("{what}: {e}"));
}

#[test]
fn map_with_every_slot_marked_full_gives_corrupt_error_not_panic() {
    let name = Name::new("map-all-full");
    let map = Map::create(&name, 8).unwrap();
    map.insert(&3, 3).unwrap();
    // State word 1 (full) everywhere: every slot looks taken, no probe ever meets an
    // empty slot.
    let ones: Vec<u8> = std::iter::repeat_n([1u8, 0, 0, 0], table_len(&name) as usize / 4)
        .flatten()
        .collect();
    scribble(&name, HEADER, &ones);
    let n = name.0.clone();
    let child = Process::spawn(move || -> Result<(), String> {
        let map = Map::open(&n).map_err(|e| e.to_string())?;
        let kind = |r: ndshm::Result<()>| r.err().map(|e| (e.kind(), e.to_string()));
        for (op, got) in [
            ("insert", kind(map.insert(&99, 1).map(drop))),
            ("get", kind(map.get(&99).map(drop))),
            ("remove", kind(map.remove(&99).map(drop))),
        ] {
            match got {
                Some((ErrorKind::Corrupt, msg)) if msg.contains("full") => {}
                other => return Err(format!("{op} on a table of full slots gave {other:?}")),
            }
        }
        Ok(())
    })
    .unwrap();
    join_within(child, "all slots full").unwrap();
    every_operation_returns(&name, "all slots full");
}

#[test]
fn map_over_hostile_bytes_returns_without_panic_or_hang() {
    let mut rng = Rng(0xbad);
    for trial in 0..40 {
        let name = Name::new("map-hostile");
        let map = Map::create(&name, 16).unwrap();
        for k in 0..12u64 {
            map.insert(&k, k).unwrap();
        }
        let len = table_len(&name);
        match trial % 4 {
            // Random bytes over the whole table.
            0 => {
                let junk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                scribble(&name, HEADER, &junk);
            }
            // Random state words (0, 1 or anything) in random slots.
            1 => {
                for _ in 0..8 {
                    let state = [0u32, 1, 2, rng.next() as u32][rng.below(4) as usize];
                    let at = HEADER + rng.below(len / 8) * 8;
                    scribble(&name, at, &state.to_le_bytes());
                }
            }
            // A random length word and pending-operation word.
            2 => {
                scribble(&name, 48, &rng.next().to_le_bytes());
                let op = (rng.below(4) << 62) | rng.below(64);
                scribble(&name, 56, &op.to_le_bytes());
            }
            // Random bytes over the run-time header words and the start of the table.
            _ => {
                let junk: Vec<u8> = (0..16 + len.min(256)).map(|_| rng.next() as u8).collect();
                scribble(&name, 48, &junk);
            }
        }
        every_operation_returns(&name, &format!("hostile trial {trial}"));
    }
}
