//! Process-level tests of the synchronisation counterparts of Python's multiprocessing:
//! `RLock`, `Semaphore` / `BoundedSemaphore`, `Event`, `Condition`, `Barrier` — real fork,
//! real /dev/shm, SIGKILL of a holder or a party.

mod common;

use common::{join_within, within_deadline, Name};
use std::time::{Duration, Instant};

use ndshm::{
    Barrier, BoundedSemaphore, Condition, ErrorKind, Event, Lock, Process, RLock, SegmentKind,
    Semaphore, SharedValue,
};

const LIMIT: Duration = Duration::from_secs(60);

/// An anonymous object for the `'static` closures of `Process::spawn` (anonymous memory
/// only: nothing is left in /dev/shm).
fn leak<T>(t: T) -> &'static T {
    Box::leak(Box::new(t))
}
const LONG: Duration = Duration::from_secs(30);

#[test]
fn rlock_reenters_on_one_thread_and_excludes_other_processes() {
    let name = Name::new("rlock");
    let lock = RLock::create(&name.0).unwrap();
    let (checked, released) = (leak(Event::new().unwrap()), leak(Event::new().unwrap()));
    let outer = lock.lock();
    let inner = lock.lock(); // re-enters
    assert!(lock.try_lock().is_some()); // and again, without waiting
    drop(inner); // still held once
    assert!(lock.is_locked());
    let n = name.0.clone();
    let child = Process::spawn(move || -> ndshm::Result<()> {
        let l = RLock::open(&n)?;
        assert!(l.try_lock().is_none(), "another process holds it");
        let e = l.lock_timeout(Duration::from_millis(20)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout);
        checked.set();
        assert!(released.wait_timeout(LONG));
        let g = l.lock_timeout(LONG)?;
        assert!(!g.owner_died());
        Ok(())
    })
    .unwrap();
    assert!(checked.wait_timeout(LONG), "the child never checked");
    drop(outer); // the last hold: released
    assert!(!lock.is_locked());
    released.set();
    join_within(child, LIMIT).unwrap();
    assert_eq!(lock.recoveries(), 0);
}

#[test]
fn rlock_holder_killed_is_reported_to_the_next_locker() {
    let lock = leak(RLock::new().unwrap());
    let held = leak(Event::new().unwrap());
    let never = leak(Event::new().unwrap());
    let child = Process::spawn(|| {
        let _a = lock.lock();
        let _b = lock.lock(); // held twice when killed
        held.set();
        never.wait();
    })
    .unwrap();
    assert!(held.wait_timeout(LONG));
    child.kill().unwrap();
    assert!(child.join().is_err(), "killed");
    let t = Instant::now();
    let g = lock.lock_timeout(LONG).unwrap();
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(g.owner_died());
    assert_eq!(lock.recoveries(), 1);
    // The dead holder's count does not linger: one drop releases.
    drop(g);
    assert!(!lock.is_locked());
    let g = lock.lock();
    assert!(!g.owner_died());
}

#[test]
fn semaphore_is_released_by_another_process() {
    let name = Name::new("sem");
    let s = leak(Semaphore::create(&name.0, 1).unwrap());
    s.acquire(); // taken here...
    assert!(!s.try_acquire());
    let n = name.0.clone();
    let child = Process::spawn(move || Semaphore::open(&n)?.release()).unwrap();
    join_within(child, LIMIT).unwrap(); // ...given back by the child
    s.acquire_timeout(LONG).unwrap();
    // A waiter that sleeps is woken by another process's release.
    let waiter = Process::spawn(|| s.acquire_timeout(LONG)).unwrap();
    s.release().unwrap();
    join_within(waiter, LIMIT).unwrap();
    assert_eq!(s.value(), 0);
    let e = s.acquire_timeout(Duration::from_millis(10)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
}

#[test]
fn bounded_semaphore_refuses_a_release_above_its_value() {
    let name = Name::new("bsem");
    let s = BoundedSemaphore::create(&name.0, 2).unwrap();
    let e = s.release().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert_eq!(s.value(), 2);
    s.acquire();
    let n = name.0.clone();
    let child = Process::spawn(move || -> ndshm::Result<()> {
        let s = BoundedSemaphore::open(&n)?;
        s.release()?; // back to 2
        assert_eq!(s.release().unwrap_err().kind(), ErrorKind::InvalidArgument);
        Ok(())
    })
    .unwrap();
    join_within(child, LIMIT).unwrap();
    assert_eq!(s.value(), 2);
    // A bounded semaphore is not a plain one.
    assert_eq!(
        Semaphore::open(&name.0).unwrap_err().kind(),
        ErrorKind::KindMismatch
    );
    // The plain semaphore has no bound but its type's.
    let p = Semaphore::new(0).unwrap();
    p.release().unwrap();
    p.release().unwrap();
    assert_eq!(p.value(), 2);
}

#[test]
fn event_set_wakes_every_waiting_process() {
    let name = Name::new("event");
    let e = Event::create(&name.0).unwrap();
    let started = leak(SharedValue::<u32>::new(0).unwrap());
    let woken = leak(SharedValue::<u32>::new(0).unwrap());
    let children: Vec<_> = (0..3)
        .map(|_| {
            let n = name.0.clone();
            Process::spawn(move || -> ndshm::Result<()> {
                let e = Event::open(&n)?;
                started.fetch_add(1);
                if e.wait_timeout(LONG) {
                    woken.fetch_add(1);
                }
                Ok(())
            })
            .unwrap()
        })
        .collect();
    assert!(within_deadline(|| started.load() == 3));
    assert_eq!(woken.load(), 0, "nobody is woken before set");
    e.set();
    for c in children {
        join_within(c, LIMIT).unwrap();
    }
    assert_eq!(woken.load(), 3);
    assert!(e.is_set());
    e.wait(); // set: returns at once
    e.clear();
    assert!(!e.wait_timeout(Duration::from_millis(10)));
}

fn notify_one_then_all(cond: &'static Condition) {
    let arrived = leak(SharedValue::<u32>::new(0).unwrap());
    let woken = leak(SharedValue::<u32>::new(0).unwrap());
    let notified = leak(SharedValue::<u32>::new(0).unwrap());
    let go = leak(SharedValue::<u32>::new(0).unwrap());
    let children: Vec<_> = (0..3)
        .map(|_| {
            Process::spawn(|| -> ndshm::Result<()> {
                let mut g = cond.lock();
                arrived.fetch_add(1);
                // Wait for the parent's go (a notification may be spurious in principle).
                let mut was_notified = false;
                while go.load() == 0 {
                    let (g2, n) = cond.wait_timeout(g, LONG)?;
                    g = g2;
                    was_notified |= n;
                    if n {
                        break;
                    }
                }
                woken.fetch_add(1);
                if was_notified {
                    notified.fetch_add(1);
                }
                drop(g);
                Ok(())
            })
            .unwrap()
        })
        .collect();
    // Once all three have arrived and the lock is free again, all three wait.
    assert!(within_deadline(|| arrived.load() == 3));
    {
        let _g = cond.lock();
        go.store(1);
        cond.notify();
    }
    assert!(within_deadline(|| woken.load() >= 1));
    // Give a wrongly woken second waiter time to show up: notify wakes exactly one.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(woken.load(), 1, "notify() woke more than one waiter");
    {
        let _g = cond.lock();
        cond.notify_all();
    }
    for c in children {
        join_within(c, LIMIT).unwrap();
    }
    assert_eq!(woken.load(), 3);
    assert_eq!(
        notified.load(),
        3,
        "every waiter was woken by a notification"
    );
}

#[test]
fn condition_notify_wakes_one_waiter_notify_all_wakes_all() {
    // Its own (re-entrant) lock, a given Lock, a given RLock.
    notify_one_then_all(leak(Condition::new().unwrap()));
    notify_one_then_all(leak(Condition::with_lock(Lock::new().unwrap()).unwrap()));
    notify_one_then_all(leak(Condition::with_lock(RLock::new().unwrap()).unwrap()));
}

#[test]
fn condition_with_a_named_lock_is_opened_with_its_lock_by_name() {
    let (lname, cname) = (Name::new("cond-lock"), Name::new("cond"));
    let lock = RLock::create(&lname.0).unwrap();
    let cond = Condition::create_with_lock(&cname.0, lock).unwrap();
    let flag = leak(SharedValue::<u32>::new(0).unwrap());
    let n = cname.0.clone();
    let child = Process::spawn(move || -> ndshm::Result<()> {
        let cond = Condition::open(&n)?;
        let _g = cond.lock();
        flag.store(1);
        cond.notify_all();
        Ok(())
    })
    .unwrap();
    let g = cond.lock();
    let again = RLock::open(&lname.0).unwrap();
    let outer = again.lock(); // re-enters: held twice here
    let (g, ok) = cond.wait_for_timeout(g, LONG, || flag.load() == 1).unwrap();
    assert!(ok);
    drop((g, outer));
    join_within(child, LIMIT).unwrap();
    // The lock was released fully while waiting and restored after: now free.
    assert!(!RLock::open(&lname.0).unwrap().is_locked());
    // An anonymous lock cannot back a named condition.
    let e = Condition::create_with_lock(&Name::new("cond2").0, Lock::new().unwrap()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn barrier_releases_all_parties_together_and_numbers_them() {
    const PARTIES: u32 = 4;
    const ROUNDS: usize = 5;
    let name = Name::new("barrier");
    let b = Barrier::create(&name.0, PARTIES).unwrap();
    let arrived = leak(SharedValue::<u32>::new(0).unwrap());
    let indices: &'static [SharedValue<u32>] = Box::leak(
        (0..ROUNDS)
            .map(|_| SharedValue::<u32>::new(0).unwrap())
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    let party = move |b: &Barrier| -> ndshm::Result<()> {
        for (r, idx) in indices.iter().enumerate() {
            arrived.fetch_add(1);
            let i = b.wait_timeout(LONG)?;
            assert!(i < PARTIES);
            // Released together: every party of this round had arrived.
            assert!(arrived.load() >= (r as u32 + 1) * PARTIES);
            idx.fetch_add(1 << i);
        }
        Ok(())
    };
    let children: Vec<_> = (0..PARTIES - 1)
        .map(|_| {
            let n = name.0.clone();
            Process::spawn(move || party(&Barrier::open(&n)?)).unwrap()
        })
        .collect();
    party(&b).unwrap();
    for c in children {
        join_within(c, LIMIT).unwrap();
    }
    for idx in indices {
        assert_eq!(idx.load(), (1 << PARTIES) - 1, "each index once per round");
    }
    assert_eq!(b.n_waiting(), 0);
    assert!(!b.broken());
    assert_eq!(
        ndshm::info(&name.0).unwrap().kind,
        Some(SegmentKind::Barrier)
    );
    assert_eq!(SegmentKind::Barrier.as_str(), "barrier");
}

#[test]
fn barrier_with_a_killed_party_is_broken_for_the_others() {
    let b = leak(Barrier::new(3).unwrap());
    let doomed = Process::spawn(|| {
        let _ = b.wait();
    })
    .unwrap();
    assert!(within_deadline(|| b.n_waiting() == 1));
    let survivor = Process::spawn(|| -> Result<(), String> {
        match b.wait_timeout(LONG) {
            Err(e) if e.kind() == ErrorKind::BrokenBarrier => Ok(()),
            other => Err(format!("expected a broken barrier, got {other:?}")),
        }
    })
    .unwrap();
    assert!(within_deadline(|| b.n_waiting() == 2));
    doomed.kill().unwrap();
    assert!(doomed.join().is_err());
    // The survivor finds the dead party and breaks the barrier: nobody hangs.
    assert!(
        within_deadline(|| b.broken()),
        "the dead party went unnoticed"
    );
    join_within(survivor, LIMIT).unwrap();
    let t = Instant::now();
    assert_eq!(
        b.wait_timeout(LONG).unwrap_err().kind(),
        ErrorKind::BrokenBarrier
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    // Reset: usable again.
    b.reset().unwrap();
    assert!(!b.broken());
    assert_eq!(b.n_waiting(), 0);
}

#[test]
fn barrier_timeout_breaks_it_for_the_other_parties() {
    let b = leak(Barrier::new(3).unwrap());
    let other = Process::spawn(|| -> Result<(), String> {
        match b.wait_timeout(LONG) {
            Err(e) if e.kind() == ErrorKind::BrokenBarrier => Ok(()),
            other => Err(format!("expected a broken barrier, got {other:?}")),
        }
    })
    .unwrap();
    assert!(within_deadline(|| b.n_waiting() == 1));
    let e = b.wait_timeout(Duration::from_millis(50)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(b.broken());
    join_within(other, LIMIT).unwrap();
    // abort and reset, as in Python
    b.reset().unwrap();
    b.abort().unwrap();
    assert_eq!(b.wait().unwrap_err().kind(), ErrorKind::BrokenBarrier);
    b.reset().unwrap();
    assert_eq!(
        Barrier::new(0).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn new_kinds_are_opened_only_as_themselves() {
    let name = Name::new("kinds");
    let _e = Event::create(&name.0).unwrap();
    assert_eq!(ndshm::info(&name.0).unwrap().kind, Some(SegmentKind::Event));
    assert_eq!(
        Barrier::open(&name.0).unwrap_err().kind(),
        ErrorKind::KindMismatch
    );
    assert_eq!(
        RLock::open(&name.0).unwrap_err().kind(),
        ErrorKind::KindMismatch
    );
    assert_eq!(
        Condition::open(&name.0).unwrap_err().kind(),
        ErrorKind::KindMismatch
    );
    assert_eq!(
        Semaphore::open(&name.0).unwrap_err().kind(),
        ErrorKind::KindMismatch
    );
}
