//! The server-less Manager counterparts: SharedList, SharedMap, SharedStruct.

mod common;

use common::Name;

use ndshm::{ErrorKind, Process, SharedList, SharedMap, SharedStruct};

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
