//! The server-less Manager counterparts: SharedList, SharedMap, SharedStruct, and values
//! sharing one lock (`Value('i', 0, lock=lock)`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{join_within, within_deadline, Name, Rng};

use ndshm::{
    CreateOptions, ErrorKind, Lock, Process, SharedList, SharedMap, SharedStruct, SharedValue,
};

/// How long any child of these tests may run before it counts as hung.
const DEADLINE: Duration = Duration::from_secs(30);

/// One call on a list.
#[derive(Clone, Copy, Debug)]
enum ListOp {
    Push(u32),
    Extend(u32, u32),
    Insert(usize, u32),
    Set(usize, u32),
    Pop,
    PopAt(usize),
    Remove(u32),
    Clear,
    Reverse,
    Sort,
}

/// A deterministic stream of every list call, each applied to the model `Vec` as it is
/// drawn; items are 50 values at most, so `remove` and `sort` meet equal items.
#[derive(Clone)]
struct ListWork {
    rng: Rng,
    cap: usize,
    model: Vec<u32>,
}

impl ListWork {
    fn new(seed: u64, cap: usize) -> ListWork {
        ListWork {
            rng: Rng(seed),
            cap,
            model: Vec::with_capacity(cap),
        }
    }

    fn next_op(&mut self) -> ListOp {
        let len = self.model.len();
        // Both halves of an item carry the number: a copy cut in the middle shows.
        let x = (self.rng.next() % 50) as u32 * 0x0001_0001;
        let r = self.rng.index(100);
        let m = &mut self.model;
        match r {
            0..=19 if len < self.cap => {
                m.push(x);
                ListOp::Push(x)
            }
            20..=27 if len + 2 <= self.cap => {
                m.extend([x, x + 1]);
                ListOp::Extend(x, x + 1)
            }
            28..=44 if len < self.cap => {
                let i = self.rng.index(len + 1);
                m.insert(i, x);
                ListOp::Insert(i, x)
            }
            45..=59 if len > 0 => {
                let i = self.rng.index(len);
                m[i] = x;
                ListOp::Set(i, x)
            }
            60..=69 if len > 0 => {
                let i = self.rng.index(len);
                m.remove(i);
                ListOp::PopAt(i)
            }
            70..=74 if len > 0 => {
                m.pop();
                ListOp::Pop
            }
            75..=81 if len > 0 => {
                let v = m[self.rng.index(len)];
                let at = m.iter().position(|&y| y == v).unwrap();
                m.remove(at);
                ListOp::Remove(v)
            }
            82..=88 => {
                m.reverse();
                ListOp::Reverse
            }
            89..=96 => {
                m.sort();
                ListOp::Sort
            }
            97..=99 if len > self.cap / 2 => {
                m.clear();
                ListOp::Clear
            }
            _ if len < self.cap => {
                m.push(x);
                ListOp::Push(x)
            }
            _ => {
                m.pop();
                ListOp::Pop
            }
        }
    }
}

fn apply_list(list: &SharedList<u32>, op: ListOp) -> ndshm::Result<()> {
    match op {
        ListOp::Push(x) => list.push(x).map(drop),
        ListOp::Extend(a, b) => list.extend([a, b]),
        ListOp::Insert(i, x) => list.insert(i, x),
        ListOp::Set(i, x) => list.set(i, x).map(drop),
        ListOp::Pop => {
            // The model is not empty here; a list that lost items shows in the comparison.
            list.pop();
            Ok(())
        }
        ListOp::PopAt(i) => list.pop_at(i).map(drop),
        ListOp::Remove(x) => list.remove(&x),
        ListOp::Clear => {
            list.clear();
            Ok(())
        }
        ListOp::Reverse => {
            list.reverse();
            Ok(())
        }
        ListOp::Sort => {
            list.sort();
            Ok(())
        }
    }
}

#[test]
fn list_insert_pop_remove_reverse_sort_match_a_vec() {
    let list = SharedList::<u32>::new(24).unwrap();
    let mut w = ListWork::new(13, 24);
    for i in 0..3000 {
        let op = w.next_op();
        apply_list(&list, op).unwrap_or_else(|e| panic!("op {i} {op:?}: {e}"));
        assert_eq!(list.to_vec(), w.model, "after op {i} {op:?}");
        assert_eq!(list.len(), w.model.len());
    }
    // The queries agree with the Vec's.
    for x in (0..50).map(|x| x * 0x0001_0001) {
        assert_eq!(list.contains(&x), w.model.contains(&x));
        assert_eq!(list.index(&x), w.model.iter().position(|&y| y == x));
    }
    assert_eq!(list.last(), w.model.last().copied());
    list.sort_by_key(|&x| std::cmp::Reverse(x));
    w.model.sort_by_key(|&x| std::cmp::Reverse(x));
    assert_eq!(list.iter().collect::<Vec<_>>(), w.model);
    // And so does another process, by name.
    let name = Name::new("list-vec");
    let named = SharedList::<u32>::create(&name.0, 8).unwrap();
    named.extend([5, 3, 9]).unwrap();
    let n = name.0.clone();
    let child = Process::spawn(move || -> ndshm::Result<()> {
        let l = SharedList::<u32>::open(&n)?;
        l.set(0, 4)?;
        l.insert(1, 7)?;
        l.sort();
        l.remove(&9)?;
        Ok(())
    })
    .unwrap();
    join_within(child, DEADLINE).unwrap();
    assert_eq!(named.to_vec(), [3, 4, 7]);
}

#[test]
fn list_set_out_of_range_is_a_typed_error() {
    let list = SharedList::<i64>::new(3).unwrap();
    list.extend([1, 2]).unwrap();
    for (what, e) in [
        ("set", list.set(2, 0).unwrap_err()),
        ("insert", list.insert(3, 0).unwrap_err()),
        ("pop_at", list.pop_at(2).unwrap_err()),
    ] {
        assert_eq!(e.kind(), ErrorKind::IndexOutOfRange, "{what}: {e}");
        assert!(e.to_string().contains("2 items"), "{what}: {e}");
    }
    let e = list.remove(&7).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    // Full: nothing of a too-long extend is added; an insert into a full list fails.
    assert_eq!(list.extend([3, 4]).unwrap_err().kind(), ErrorKind::Full);
    list.insert(0, 0).unwrap();
    assert_eq!(list.insert(0, 9).unwrap_err().kind(), ErrorKind::Full);
    assert_eq!(list.push(9).unwrap_err().kind(), ErrorKind::Full);
    assert_eq!(list.to_vec(), [0, 1, 2]);
    // Out-of-range on an empty list too; pop says None.
    list.clear();
    assert_eq!(
        list.set(0, 1).unwrap_err().kind(),
        ErrorKind::IndexOutOfRange
    );
    assert_eq!(list.pop(), None);
    assert_eq!(list.get(0), None);
}

#[test]
fn list_iter_is_a_snapshot_taken_in_one_step() {
    let list = SharedList::<u16>::new(8).unwrap();
    list.extend([1, 2, 3]).unwrap();
    let mut seen = Vec::new();
    for x in list.iter() {
        list.clear(); // the iteration goes on over what was there
        seen.push(x);
    }
    assert_eq!(seen, [1, 2, 3]);
    assert!(list.is_empty());
}

#[test]
fn list_calls_from_several_processes_lose_and_duplicate_nothing() {
    let list = Arc::new(SharedList::<u32>::new(200).unwrap());
    let children: Vec<Process> = (0..4u32)
        .map(|c| {
            let l = Arc::clone(&list);
            Process::spawn(move || -> ndshm::Result<()> {
                for j in 0..40 {
                    match j % 4 {
                        0 => l.insert(0, c * 100 + j)?,
                        1 => l.push(c * 100 + j).map(drop)?,
                        2 => l.sort(),
                        _ => l.reverse(),
                    }
                }
                Ok(())
            })
            .unwrap()
        })
        .collect();
    for c in children {
        join_within(c, DEADLINE).unwrap();
    }
    let mut got = list.to_vec();
    got.sort();
    let mut want: Vec<u32> = (0..4u32)
        .flat_map(|c| (0..40).filter(|j| j % 4 < 2).map(move |j| c * 100 + j))
        .collect();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn list_appends_from_processes_and_refuses_past_capacity() {
    let name = Name::new("list");
    let list = SharedList::<u32>::create(&name.0, 8).unwrap();
    let children: Vec<Process> = (0..5u32)
        .map(|i| {
            let n = name.0.clone();
            Process::spawn(move || -> ndshm::Result<()> {
                SharedList::<u32>::open(&n)?.push(i)?;
                Ok(())
            })
            .unwrap()
        })
        .collect();
    for c in children {
        c.join().unwrap();
    }
    let mut items = list.to_vec();
    items.sort();
    assert_eq!(items, [0, 1, 2, 3, 4]);
    for i in 5..8 {
        list.push(i).unwrap();
    }
    assert_eq!(list.push(99).unwrap_err().kind(), ErrorKind::Full);
    assert_eq!(list.len(), 8);
    assert_eq!(list.get(7), Some(7));
    assert_eq!(list.get(8), None);
    let n = name.0.clone();
    Process::spawn(move || {
        let e = SharedList::<u64>::open(&n).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TypeMismatch, "{e}");
        let e = SharedMap::<u64, u32>::open(&n).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::KindMismatch, "{e}");
    })
    .unwrap()
    .join()
    .unwrap();
}

#[test]
fn map_insert_get_remove_capacity_and_keys() {
    let map = SharedMap::<String, i64>::new(4).unwrap();
    assert_eq!(map.insert("a", 1).unwrap(), None);
    assert_eq!(map.insert("a", 2).unwrap(), Some(1));
    for k in ["b", "c", "d"] {
        map.insert(k, 0).unwrap();
    }
    assert_eq!(map.insert("e", 5).unwrap_err().kind(), ErrorKind::Full);
    // Replacing an existing key at capacity is fine.
    assert_eq!(map.insert("d", 4).unwrap(), Some(0));
    let long = "x".repeat(33);
    assert_eq!(
        map.insert(long.as_str(), 1).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(map.remove("b").unwrap(), Some(0));
    assert_eq!(map.remove("b").unwrap(), None);
    assert_eq!(map.get("b").unwrap(), None);
    // Churn: many insert/remove cycles, each removal shifting its probe run back.
    for i in 0..1000 {
        let k = format!("k{i}");
        map.insert(k.as_str(), i).unwrap();
        assert_eq!(map.get(k.as_str()).unwrap(), Some(i));
        assert_eq!(map.remove(k.as_str()).unwrap(), Some(i));
    }
    assert_eq!(map.len(), 3);
    let mut all = map.to_vec();
    all.sort();
    assert_eq!(
        all,
        vec![
            ("a".to_string(), 2),
            ("c".to_string(), 0),
            ("d".to_string(), 4)
        ]
    );
    let ints = SharedMap::<i32, f64>::new(3).unwrap();
    ints.insert(&-7, 1.5).unwrap();
    assert_eq!(ints.update(&-7, 0.0, |v| v * 2.0).unwrap(), 3.0);
    assert_eq!(ints.update(&9, 1.0, |v| v + 1.0).unwrap(), 2.0);
    assert_eq!(ints.to_vec().len(), 2);
}

#[test]
fn map_shared_by_name_with_concurrent_updates() {
    let name = Name::new("map");
    let map = SharedMap::<u64, u64>::create(&name.0, 64).unwrap();
    let children: Vec<Process> = (0..4)
        .map(|_| {
            let n = name.0.clone();
            Process::spawn(move || -> ndshm::Result<()> {
                let m = SharedMap::<u64, u64>::open(&n)?;
                for i in 0..2000u64 {
                    m.update(&(i % 10), 0, |v| v + 1)?;
                }
                Ok(())
            })
            .unwrap()
        })
        .collect();
    for c in children {
        c.join().unwrap();
    }
    for k in 0..10u64 {
        assert_eq!(map.get(&k).unwrap(), Some(800));
    }
}

#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Ns {
    x: i64,
    sum: f64,
}

#[test]
fn struct_under_lock_and_dead_holder() {
    let ns = SharedStruct::new(Ns { x: 0, sum: 0.0 }).unwrap();
    ndshm::scope(|s| -> ndshm::Result<_> {
        for _ in 0..5 {
            s.spawn(|| {
                let mut g = ns.lock();
                g.x += 1;
                g.sum += 0.5;
            })?;
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(ns.load(), Ns { x: 5, sum: 2.5 });
    // A holder that dies mid-update: the next locker is told.
    let _ = ndshm::scope(|s| -> ndshm::Result<_> {
        s.spawn::<_, ()>(|| {
            let mut g = ns.lock();
            g.x = -1;
            // SAFETY: ends this child at once, holding the lock.
            unsafe { libc::_exit(0) }
        })?
        .join()
    });
    let g = ns.lock();
    assert!(g.owner_died());
    assert_eq!(g.x, -1);
}

/// Whether a child ended at the injected crash point (not otherwise).
fn injected(r: &ndshm::Result<()>) -> bool {
    match r {
        Ok(()) => false,
        Err(e)
            if e.to_string()
                .contains(&format!("code {}", SharedList::<u32>::__FAULT_EXIT)) =>
        {
            true
        }
        Err(e) => panic!("child failed otherwise: {e}"),
    }
}

#[test]
fn list_killed_mid_insert_loses_and_duplicates_nothing() {
    // A child runs every kind of list call and dies at its `step`-th store, for every step
    // of the run: the list then holds what the calls that returned left, with the call in
    // flight entirely or not at all, and works on.
    const CAP: usize = 12;
    const OPS: usize = 60;
    const SEED: u64 = 13;
    let mut step = 1u64;
    let mut mid_op = 0;
    loop {
        let list = Arc::new(SharedList::<u32>::new(CAP).unwrap());
        let done = Arc::new(SharedValue::new(0u64).unwrap());
        let (l, d, mut w) = (list.clone(), done.clone(), ListWork::new(SEED, CAP));
        let child = Process::spawn(move || -> ndshm::Result<()> {
            SharedList::<u32>::__exit_at_step(step);
            for i in 0..OPS {
                apply_list(&l, w.next_op())?;
                d.store(i as u64 + 1);
            }
            Ok(())
        })
        .unwrap();
        if !injected(&join_within(child, DEADLINE)) {
            assert_eq!(done.load(), OPS as u64);
            break;
        }
        let mut before = ListWork::new(SEED, CAP);
        for _ in 0..done.load() {
            before.next_op();
        }
        let mut after = before.clone();
        let op = after.next_op();
        let held = list.to_vec();
        let mut w = if held == before.model {
            before
        } else if held == after.model {
            mid_op += 1;
            after
        } else {
            panic!(
                "killed at step {step} in {op:?}: the list holds {held:?}, neither {:?} nor {:?}",
                before.model, after.model
            );
        };
        for _ in 0..10 {
            apply_list(&list, w.next_op()).unwrap();
        }
        assert_eq!(
            list.to_vec(),
            w.model,
            "killed at step {step}, then 10 calls"
        );
        step += 1;
    }
    assert!(step > OPS as u64, "only {step} steps for {OPS} calls");
    assert!(mid_op > 0, "no crash landed after a call's commit");
}

#[test]
fn list_holder_sigkilled_mid_churn_loses_and_duplicates_nothing() {
    // SIGKILL at random moments, between any two instructions (a copy into the other
    // buffer half done, a replacement half written).
    const CAP: usize = 64;
    let list = Arc::new(SharedList::<u32>::new(CAP).unwrap());
    let done = Arc::new(SharedValue::new(0u64).unwrap());
    let mut w = ListWork::new(77, CAP);
    let mut rng = Rng(5);
    for kill in 0..150 {
        let start = done.load();
        let (l, d, mut cw) = (list.clone(), done.clone(), w.clone());
        let child = Process::spawn(move || -> ndshm::Result<()> {
            let mut i = start;
            loop {
                apply_list(&l, cw.next_op())?;
                i += 1;
                d.store(i);
            }
        })
        .unwrap();
        let target = start + 1 + rng.index(64) as u64;
        assert!(
            within_deadline(|| done.load() >= target),
            "kill {kill}: the child made no progress"
        );
        child.kill().unwrap();
        let e = child.join().unwrap_err();
        assert!(e.to_string().contains("SIGKILL"), "kill {kill}: {e}");
        for _ in start..done.load() {
            w.next_op();
        }
        let mut after = w.clone();
        after.next_op();
        let held = list.to_vec();
        if held == after.model {
            w = after;
            done.store(done.load() + 1);
        } else {
            assert_eq!(
                held, w.model,
                "kill {kill}: neither before nor after the call"
            );
        }
    }
}

#[test]
fn dict_iterates_in_insertion_order() {
    let name = Name::new("dict-order");
    let d = SharedMap::<String, i32>::create(&name.0, 16).unwrap();
    for (k, v) in [("c", 1), ("a", 2), ("b", 3)] {
        d.insert(k, v).unwrap();
    }
    d.insert("a", 20).unwrap(); // a replacement keeps its place
    d.remove("c").unwrap();
    d.insert("c", 10).unwrap(); // removed and inserted again: last
    let want = [("a", 20), ("b", 3), ("c", 10)].map(|(k, v)| (k.to_string(), v));
    assert_eq!(d.to_vec(), want);
    assert_eq!(d.iter().collect::<ndshm::Result<Vec<_>>>().unwrap(), want);
    let keys: Vec<String> = d.keys().collect::<ndshm::Result<_>>().unwrap();
    assert_eq!(keys, ["a", "b", "c"]);
    assert_eq!(
        d.values().collect::<ndshm::Result<Vec<_>>>().unwrap(),
        [20, 3, 10]
    );
    let back: Vec<_> = d.reversed().collect::<ndshm::Result<_>>().unwrap();
    assert_eq!(back, [want[2].clone(), want[1].clone(), want[0].clone()]);
    // The order is the map's, not the process's: another process sees it and adds to it.
    let n = name.0.clone();
    let child = Process::spawn(move || -> Result<(), String> {
        let d = SharedMap::<String, i32>::open(&n).map_err(|e| e.to_string())?;
        let keys: Vec<String> = d
            .keys()
            .collect::<ndshm::Result<_>>()
            .map_err(|e| e.to_string())?;
        if keys != ["a", "b", "c"] {
            return Err(format!("the child sees {keys:?}"));
        }
        d.insert("d", 4).map_err(|e| e.to_string())?;
        Ok(())
    })
    .unwrap();
    join_within(child, DEADLINE).unwrap();
    assert_eq!(d.to_vec().last(), Some(&("d".to_string(), 4)));
    // Many keys, churned: the order is kept through removals that shift probe runs.
    let m = SharedMap::<u64, u64>::new(64).unwrap();
    let mut order: Vec<u64> = Vec::new();
    let mut rng = Rng(3);
    for _ in 0..2000 {
        if order.len() < 60 && rng.index(2) == 0 {
            let k = rng.next();
            m.insert(&k, k ^ 1).unwrap();
            order.push(k);
        } else if !order.is_empty() {
            let k = order.remove(rng.index(order.len()));
            assert_eq!(m.remove(&k).unwrap(), Some(k ^ 1));
        }
    }
    assert_eq!(m.keys().collect::<ndshm::Result<Vec<_>>>().unwrap(), order);
}

#[test]
fn dict_popitem_returns_the_last_inserted() {
    let d = SharedMap::<u32, u32>::new(8).unwrap();
    for k in [5, 1, 7] {
        d.insert(&k, k * 10).unwrap();
    }
    d.insert(&5, 55).unwrap(); // replaced, not moved
    assert_eq!(d.popitem().unwrap(), Some((7, 70)));
    d.insert(&9, 90).unwrap();
    assert_eq!(d.popitem().unwrap(), Some((9, 90)));
    assert_eq!(d.popitem().unwrap(), Some((1, 10)));
    assert_eq!(d.popitem().unwrap(), Some((5, 55)));
    assert_eq!(d.popitem().unwrap(), None);
    assert!(d.is_empty());
}

#[test]
fn dict_changed_size_during_iteration_is_an_error() {
    let d = Arc::new(SharedMap::<u64, u64>::new(8).unwrap());
    for k in 0..4 {
        d.insert(&k, k).unwrap();
    }
    let changed = |e: ndshm::Error| {
        assert_eq!(e.kind(), ErrorKind::ChangedDuringIteration, "{e}");
        assert!(
            e.to_string().contains("changed size during iteration"),
            "{e}"
        );
    };
    // A new key, here.
    let mut it = d.iter();
    assert_eq!(it.next().unwrap().unwrap(), (0, 0));
    d.insert(&9, 9).unwrap();
    changed(it.next().unwrap().unwrap_err());
    assert!(it.next().is_none(), "the iteration ends after the error");
    // A removal, walking backwards.
    let mut it = d.reversed();
    assert_eq!(it.next().unwrap().unwrap(), (9, 9));
    d.popitem().unwrap();
    changed(it.next().unwrap().unwrap_err());
    // A removal and an insertion that keep the size (Python 3.8's "keys changed").
    let mut it = d.keys();
    it.next().unwrap().unwrap();
    d.remove(&3).unwrap();
    d.insert(&3, 3).unwrap();
    changed(it.next().unwrap().unwrap_err());
    // A change by another process.
    let mut it = d.iter();
    it.next().unwrap().unwrap();
    let m = d.clone();
    let child = Process::spawn(move || -> ndshm::Result<()> {
        m.insert(&100, 1)?;
        Ok(())
    })
    .unwrap();
    join_within(child, DEADLINE).unwrap();
    changed(it.next().unwrap().unwrap_err());
    // Replacing values is no change of size: the iteration sees the new values.
    let mut it = d.values();
    assert_eq!(it.next().unwrap().unwrap(), 0);
    d.insert(&1, 11).unwrap();
    assert_eq!(it.next().unwrap().unwrap(), 11);
    assert_eq!(it.count(), 3);
}

#[test]
fn two_values_share_one_lock_across_processes() {
    // Value('i', 0, lock=lock) twice, by name: a child that opens both values holds the
    // shared lock through one, and the parent finds the other locked.
    let lock = Arc::new(Lock::create(CreateOptions::unique_with_prefix("test-vlock")).unwrap());
    let a = SharedValue::create_with_lock(CreateOptions::unique(), 0i32, &lock).unwrap();
    let b = SharedValue::create_with_lock(CreateOptions::unique(), 0i32, &lock).unwrap();
    assert!(Arc::ptr_eq(a.shared_lock().unwrap(), &lock));
    let (an, bn) = (a.name().unwrap().to_string(), b.name().unwrap().to_string());
    let child = Process::spawn(move || -> Result<(), String> {
        let open = |n: &str| SharedValue::<i32>::open(n).map_err(|e| e.to_string());
        let (a, b) = (open(&an)?, open(&bn)?);
        let _g = a.lock();
        a.store(1); // "I hold the lock"
        if !within_deadline(|| b.load() == 1) {
            return Err("the parent never answered".into());
        }
        Ok(())
    })
    .unwrap();
    assert!(
        within_deadline(|| a.load() == 1),
        "the child never took the lock"
    );
    assert!(
        b.try_lock().is_none(),
        "b's lock is not the one a's holder holds"
    );
    assert!(lock.is_locked());
    b.store(1);
    join_within(child, DEADLINE).unwrap();
    let g = b.lock();
    assert!(!g.owner_died());
    assert!(
        a.try_lock().is_none(),
        "one lock: held through b, a is locked"
    );
    drop(g);
    // Anonymous values with an anonymous lock: a compound update over both, from children.
    let lock = Arc::new(Lock::new().unwrap());
    let from = Arc::new(SharedValue::with_lock(1000i64, &lock).unwrap());
    let to = Arc::new(SharedValue::with_lock(0i64, &lock).unwrap());
    let children: Vec<Process> = (0..4)
        .map(|_| {
            let (f, t) = (from.clone(), to.clone());
            Process::spawn(move || {
                for _ in 0..250 {
                    let _g = f.lock();
                    // Read both, write both: only the one lock makes this exact.
                    let (x, y) = (f.load(), t.load());
                    f.store(x - 1);
                    t.store(y + 1);
                }
            })
            .unwrap()
        })
        .collect();
    for c in children {
        join_within(c, DEADLINE).unwrap();
    }
    assert_eq!((from.load(), to.load()), (0, 1000));
}

#[test]
fn named_value_needs_a_named_lock_and_reports_a_lost_one() {
    let anon = Arc::new(Lock::new().unwrap());
    let e = SharedValue::create_with_lock(CreateOptions::unique(), 0u8, &anon).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("Lock::create"), "{e}");
    let lock = Arc::new(Lock::create(CreateOptions::unique_with_prefix("test-vlock")).unwrap());
    let v = SharedValue::create_with_lock(CreateOptions::unique(), 0u8, &lock).unwrap();
    let lock_name = lock.name().unwrap().to_string();
    ndshm::unlink(&lock_name).unwrap();
    let e = SharedValue::<u8>::open(v.name().unwrap()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains(&lock_name), "{e}");
}
