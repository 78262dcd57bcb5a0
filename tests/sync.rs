//! Process-level tests of the robust lock, shared values and the array lock: real fork,
//! real /dev/shm, SIGKILL of a lock holder.

mod common;

use common::Name;
use std::time::Duration;

use ndarray::Ix1;
use ndshm::{ErrorKind, Lock, Process, Queue, SharedNdArray, SharedValue};

#[test]
fn counter_without_lock_is_exact_with_fetch_add() {
    let counter = SharedValue::<i32>::new(0).unwrap();
    ndshm::scope(|s| -> ndshm::Result<_> {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..100_000 {
                    counter.fetch_add(1);
                }
            })?;
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(counter.load(), 200_000);
}

#[test]
fn compound_updates_under_value_lock_and_standalone_lock() {
    let counter = SharedValue::<f64>::new(0.0).unwrap();
    let lock = Lock::new().unwrap();
    ndshm::scope(|s| -> ndshm::Result<_> {
        for _ in 0..3 {
            s.spawn(|| {
                for i in 0..20_000 {
                    if i % 2 == 0 {
                        let _g = counter.lock();
                        counter.store(counter.load() + 1.0);
                    } else {
                        let _g = lock.lock();
                        // Both locks are held by someone else at times: nest them.
                        let _g2 = counter.lock();
                        counter.store(counter.load() + 1.0);
                    }
                }
            })?;
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(counter.load(), 60_000.0);
}

#[test]
fn named_value_across_processes_and_kind_mismatch() {
    let name = Name::new("value");
    let v = SharedValue::<u64>::create(&name.0, 5).unwrap();
    let n = name.0.clone();
    Process::spawn(move || -> ndshm::Result<()> {
        let v = SharedValue::<u64>::open(&n)?;
        v.fetch_add(10);
        Ok(())
    })
    .unwrap()
    .join()
    .unwrap();
    assert_eq!(v.load(), 15);
    // Wrong element type, wrong kind: typed errors.
    let n = name.0.clone();
    let err = Process::spawn(move || -> ndshm::Result<()> {
        let e = SharedValue::<i32>::open(&n).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TypeMismatch, "{e}");
        let e = Lock::open(&n).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::KindMismatch, "{e}");
        let e = Queue::<u64>::open(&n).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::KindMismatch, "{e}");
        Ok(())
    })
    .unwrap()
    .join();
    err.unwrap();
    let q = Name::new("queue");
    let _queue = Queue::<u64>::create(&q.0, 4).unwrap();
    let n = q.0.clone();
    Process::spawn(move || {
        let e = SharedValue::<u64>::open(&n).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::KindMismatch, "{e}");
        let e = Queue::<u32>::open(&n).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TypeMismatch, "{e}");
    })
    .unwrap()
    .join()
    .unwrap();
}

#[test]
fn sync_and_ipc_objects_open_by_name_as_often_as_the_program_likes() {
    // Two independent parts of one process may both open "jobs" (only arrays keep one
    // handle per process: their `&mut` views must not alias).
    let v = Name::new("twice-value");
    let creator = SharedValue::<u64>::create(&v, 1).unwrap();
    let a = SharedValue::<u64>::open(&v).unwrap();
    let b = SharedValue::<u64>::open(&v).unwrap();
    a.fetch_add(1);
    b.fetch_add(1);
    assert_eq!(creator.load(), 3);
    drop((a, b));
    assert_eq!(
        creator.load(),
        3,
        "an attached handle's drop changes nothing"
    );
    let q = Name::new("twice-queue");
    let producer = Queue::<u64>::create(&q, 4).unwrap();
    let consumer = Queue::<u64>::open(&q).unwrap();
    let other = Queue::<u64>::open(&q).unwrap();
    producer.put(5).unwrap();
    producer.put(6).unwrap();
    assert_eq!(consumer.get().unwrap(), 5);
    assert_eq!(other.get().unwrap(), 6);
    let l = Name::new("twice-lock");
    let lock = Lock::create(&l).unwrap();
    let again = Lock::open(&l).unwrap();
    let g = lock.lock();
    assert!(again.is_locked());
    drop(g);
    drop(again);
    assert!(
        std::path::Path::new("/dev/shm").join(&l.0).exists(),
        "only the creator unlinks"
    );
}

#[test]
fn shared_value_float_fetch_add_is_atomic_across_processes() {
    let name = Name::new("float-sum");
    let sum = SharedValue::<f64>::create(&name.0, 0.0).unwrap();
    let down = SharedValue::<f32>::new(0.0).unwrap();
    let children: Vec<Process> = (0..3)
        .map(|_| {
            let n = name.0.clone();
            Process::spawn(move || -> ndshm::Result<()> {
                let sum = SharedValue::<f64>::open(&n)?;
                for _ in 0..20_000 {
                    sum.fetch_add(1.0);
                }
                Ok(())
            })
            .unwrap()
        })
        .collect();
    // Meanwhile this process subtracts from an anonymous f32 with two threads.
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..10_000 {
                    down.fetch_sub(0.5);
                }
            });
        }
    });
    for c in children {
        c.join().unwrap();
    }
    // Whole numbers and halves below 2^24 are exact: any lost update would show.
    assert_eq!(sum.load(), 60_000.0);
    assert_eq!(down.load(), -10_000.0);
}

#[test]
fn every_lock_like_type_answers_a_relock_on_its_own_thread_the_same_way() {
    let lock = Lock::new().unwrap();
    let value = SharedValue::<u64>::new(0).unwrap();
    let shared = ndshm::SharedStruct::new(0u64).unwrap();
    let t = Duration::from_secs(30);
    let start = std::time::Instant::now();
    {
        let _g = lock.lock();
        assert!(lock.try_lock().is_none());
        assert_eq!(
            lock.lock_timeout(t).unwrap_err().kind(),
            ErrorKind::WouldDeadlock
        );
    }
    {
        let _g = value.lock();
        assert!(value.try_lock().is_none());
        assert_eq!(
            value.lock_timeout(t).unwrap_err().kind(),
            ErrorKind::WouldDeadlock
        );
    }
    {
        let _g = shared.lock();
        assert!(shared.try_lock().is_none());
        assert_eq!(
            shared.lock_timeout(t).unwrap_err().kind(),
            ErrorKind::WouldDeadlock
        );
    }
    assert!(start.elapsed() < Duration::from_secs(20), "a relock waited");
    // And all three are free again.
    assert!(lock.try_lock().is_some() && value.try_lock().is_some());
    assert!(shared.try_lock().is_some());
}

#[test]
fn sigkilled_holder_next_lock_reports_owner_died() {
    let name = Name::new("lock");
    let lock = Lock::create(&name.0).unwrap();
    let ready = SharedValue::<u32>::new(0).unwrap();
    let n = name.0.clone();
    let r = ndshm::scope(|s| -> ndshm::Result<_> {
        // The child attaches by name, takes the lock, says so, and waits to be killed.
        let child = s.spawn(|| -> ndshm::Result<()> {
            let l = Lock::open(&n)?;
            let g = l.lock();
            ready.store(1);
            std::thread::sleep(Duration::from_secs(60));
            drop(g);
            Ok(())
        })?;
        let pid = child.pid();
        while ready.load() == 0 {
            std::thread::yield_now();
        }
        assert!(lock.is_locked());
        assert!(lock.try_lock().is_none(), "a live owner holds it");
        // Sleep in lock() while the owner is killed: the sleeper must notice.
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            // SAFETY: plain kill(2) of our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        });
        let g = lock.lock_timeout(Duration::from_secs(10)).unwrap();
        assert!(g.owner_died());
        drop(g);
        killer.join().unwrap();
        child.join()
    });
    assert!(r.unwrap_err().to_string().contains("SIGKILL"));
    assert_eq!(lock.recoveries(), 1);
    // The lock is usable again, and a normal unlock is not "died".
    assert!(!lock.lock().owner_died());
    assert!(!lock.is_locked());
}

#[test]
fn holder_dead_before_anyone_waits() {
    let lock = Lock::new().unwrap();
    let l = &lock;
    ndshm::scope(|s| -> ndshm::Result<_> {
        s.spawn(|| -> () {
            std::mem::forget(l.lock());
            // Dies holding the lock (exit without unlocking).
            // SAFETY: _exit ends this child at once.
            unsafe { libc::_exit(0) }
        })?
        .join()
    })
    .unwrap(); // `_exit(0)` is a success, as in Python
    assert!(lock.try_lock().unwrap().owner_died());
    assert!(!lock.try_lock().unwrap().owner_died());
}

#[test]
fn guard_inherited_through_fork_releases_nothing_in_the_child() {
    let lock = Lock::new().unwrap();
    let g = lock.lock();
    let l = &lock;
    let g_ref = &g;
    ndshm::scope(|s| -> ndshm::Result<_> {
        s.spawn(move || {
            // The child's copy of the guard is dropped here (by value): nothing happens.
            let copy: ndshm::LockGuard<'_> = unsafe { std::ptr::read(g_ref) };
            drop(copy);
            assert!(l.is_locked());
        })?;
        Ok(())
    })
    .unwrap();
    assert!(lock.is_locked());
    drop(g);
    assert!(!lock.is_locked());
}

#[test]
fn array_lock_ten_processes() {
    let name = Name::new("array");
    let mut arr =
        SharedNdArray::<i32, Ix1>::from_array(&name.0, &ndarray::arr1(&[0, 0, 0, 0, 0])).unwrap();
    let children: Vec<Process> = (0..10)
        .map(|_| {
            let n = name.0.clone();
            Process::spawn(move || -> ndshm::Result<()> {
                // SAFETY: every process writes this array only under its lock.
                let mut a = unsafe { SharedNdArray::<i32, Ix1>::open(&n)? };
                let mut g = a.lock()?;
                g.view_mut().map_inplace(|x| *x += 1);
                Ok(())
            })
            .unwrap()
        })
        .collect();
    for c in children {
        c.join().unwrap();
    }
    let g = arr.lock().unwrap();
    assert!(!g.owner_died());
    assert_eq!(g.view().to_vec(), vec![10, 10, 10, 10, 10]);
}
