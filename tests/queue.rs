//! Process-level tests of the shared-memory queues: contention with checksums, close,
//! capacity and size errors, and peers killed in the middle of a put or a get.

mod common;

use common::{within_deadline, Name};
use std::time::Duration;

use ndshm::{
    ByteQueue, ErrorKind, GetError, GetTimeoutError, Process, Queue, SharedValue, TryGetError,
    TryPutError,
};

/// `producers` processes put `per` distinct items each; `consumers` processes take until
/// the queue is closed; every item must arrive exactly once (count, sum, sum of squares).
fn mpmc(producers: u64, consumers: u64, per: u64, capacity: usize) {
    let q = Queue::<u64>::new(capacity).unwrap();
    let count = SharedValue::<u64>::new(0).unwrap();
    let sum = SharedValue::<u64>::new(0).unwrap();
    let squares = SharedValue::<u64>::new(0).unwrap();
    ndshm::scope(|s| -> ndshm::Result<_> {
        for _ in 0..consumers {
            s.spawn(|| {
                let (mut c, mut s1, mut s2) = (0u64, 0u64, 0u64);
                while let Ok(v) = q.get() {
                    c += 1;
                    s1 = s1.wrapping_add(v);
                    s2 = s2.wrapping_add(v.wrapping_mul(v));
                }
                count.fetch_add(c);
                sum.fetch_add(s1);
                squares.fetch_add(s2);
            })?;
        }
        ndshm::scope(|inner| -> ndshm::Result<_> {
            for p in 0..producers {
                let q = &q;
                inner.spawn(move || {
                    for i in 0..per {
                        q.put(p * per + i + 1).unwrap();
                    }
                })?;
            }
            Ok(())
        })?;
        q.shutdown(false);
        Ok(())
    })
    .unwrap();
    let n = producers * per;
    let (mut s1, mut s2) = (0u64, 0u64);
    for v in 1..=n {
        s1 = s1.wrapping_add(v);
        s2 = s2.wrapping_add(v.wrapping_mul(v));
    }
    assert_eq!(count.load(), n);
    assert_eq!(sum.load(), s1);
    assert_eq!(squares.load(), s2);
    assert_eq!(q.lost(), 0);
}

#[test]
fn four_producers_four_consumers_1e5_each_no_loss_no_duplicate() {
    mpmc(4, 4, 100_000, 1024);
}

#[test]
fn tiny_capacity_under_contention() {
    mpmc(3, 3, 20_000, 1);
}

#[test]
#[ignore = "1e6 items per producer: run with --ignored"]
fn four_producers_four_consumers_1e6_each() {
    mpmc(4, 4, 1_000_000, 1024);
}

#[test]
fn named_queue_across_processes_and_errors() {
    let name = Name::new("bytes");
    let q = ByteQueue::create(&name.0, 4, 32).unwrap();
    assert_eq!(
        q.put(&[0; 33]).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    let n = name.0.clone();
    Process::spawn(move || -> ndshm::Result<()> {
        let q = ByteQueue::open(&n)?;
        for i in 0..4u8 {
            q.put(&[i; 32])?;
        }
        // Full: try_put fails, a timed put times out.
        assert_eq!(q.try_put(b"x").unwrap_err().kind(), ErrorKind::Full);
        assert_eq!(
            q.put_timeout(b"x", Duration::from_millis(10))
                .unwrap_err()
                .kind(),
            ErrorKind::Timeout
        );
        Ok(())
    })
    .unwrap()
    .join()
    .unwrap();
    for i in 0..4u8 {
        assert_eq!(q.get_with(|m| m.to_vec()).unwrap(), vec![i; 32]);
    }
    q.shutdown(false);
    assert_eq!(q.get().unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(q.put(b"late").unwrap_err().kind(), ErrorKind::Closed);

    let typed = Queue::<[u32; 3]>::new(2).unwrap();
    typed.put([1, 2, 3]).unwrap();
    typed.put([4, 5, 6]).unwrap();
    assert_eq!(typed.try_put([7, 8, 9]), Err(TryPutError::Full([7, 8, 9])));
    assert_eq!(typed.get(), Ok([1, 2, 3]));
    typed.shutdown(false);
    assert_eq!(typed.try_get(), Ok([4, 5, 6]));
    assert_eq!(typed.try_get(), Err(TryGetError::Closed));
    assert_eq!(
        typed.get_timeout(Duration::from_millis(1)),
        Err(GetTimeoutError::Closed)
    );
    assert_eq!(
        Queue::<u8>::new(0).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

/// Whether `pid` is blocked in the `futex` system call (asleep on a queue, for a consumer).
fn asleep_on_futex(pid: i32) -> bool {
    let want = format!("{} ", libc::SYS_futex);
    std::fs::read_to_string(format!("/proc/{pid}/syscall")).is_ok_and(|s| s.starts_with(&want))
}

/// Whether `pid` has exited (a zombie waiting for its parent, or gone).
fn has_exited(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat[stat.rfind(')').unwrap() + 2..].starts_with('Z')
    })
}

#[test]
fn shutdown_wakes_sleeping_consumers() {
    let q = Queue::<u32>::new(4).unwrap();
    let stage = std::cell::Cell::new("were never seen asleep on the empty queue");
    let r = ndshm::scope(|s| -> ndshm::Result<_> {
        let mut pids = Vec::new();
        for _ in 0..3 {
            pids.push(s.spawn(|| assert_eq!(q.get(), Err(GetError::Closed)))?);
        }
        if within_deadline(|| pids.iter().all(|p| asleep_on_futex(p.pid()))) {
            stage.set("stayed asleep after shutdown");
            q.shutdown(false);
            if within_deadline(|| pids.iter().all(|p| has_exited(p.pid()))) {
                stage.set("woke up");
                return pids.into_iter().try_for_each(|p| p.join());
            }
        }
        for p in &pids {
            // SAFETY: kill(2) of our own child, so that the scope can end.
            unsafe { libc::kill(p.pid(), libc::SIGKILL) };
        }
        pids.into_iter().try_for_each(|p| p.join())
    });
    assert_eq!(stage.get(), "woke up", "the consumers {}", stage.get());
    r.unwrap();
}

/// A blocking put that finds the queue full waits for several free slots before it
/// refills (producer and consumer then work on different cache lines), but never for more
/// than the consumers free: one item taken lets a sleeping producer through.
#[test]
fn a_put_on_a_full_queue_returns_after_one_item_is_taken() {
    let q = Queue::<u64>::new(1024).unwrap();
    for i in 0..1024 {
        q.try_put(i).unwrap();
    }
    let stage = std::cell::Cell::new("was never seen asleep on the full queue");
    let r = ndshm::scope(|s| -> ndshm::Result<_> {
        let p = s.spawn(|| q.put(1024).unwrap())?;
        if within_deadline(|| asleep_on_futex(p.pid())) {
            stage.set("stayed blocked after one item was taken");
            assert_eq!(q.get(), Ok(0));
            if within_deadline(|| has_exited(p.pid())) {
                stage.set("returned");
                return p.join();
            }
        }
        // SAFETY: kill(2) of our own child, so that the scope can end.
        unsafe { libc::kill(p.pid(), libc::SIGKILL) };
        p.join()
    });
    assert_eq!(stage.get(), "returned", "the producer {}", stage.get());
    r.unwrap();
    assert_eq!(q.len(), 1024);
    let items: Vec<u64> = (0..1024).map(|_| q.try_get().unwrap()).collect();
    assert_eq!(items, (1..=1024).collect::<Vec<_>>());
}

#[test]
fn producer_killed_mid_put_loses_only_its_item() {
    let q = ByteQueue::new(4, 16).unwrap();
    let ready = SharedValue::<u32>::new(0).unwrap();
    q.put(b"before").unwrap();
    let r = ndshm::scope(|s| -> ndshm::Result<_> {
        let child = s.spawn(|| {
            // Claims a slot, then stops in the middle of writing it.
            q.put_with(5, |buf| {
                buf[0] = b'h';
                ready.store(1);
                std::thread::sleep(Duration::from_secs(60));
            })
        })?;
        let pid = child.pid();
        while ready.load() == 0 {
            std::thread::yield_now();
        }
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        child.join()
    });
    assert!(r.unwrap_err().to_string().contains("SIGKILL"));
    q.put(b"after").unwrap();
    assert_eq!(q.get().unwrap(), b"before");
    // The dead producer's slot is skipped once a consumer notices (within ~20 ms).
    assert_eq!(q.get_timeout(Duration::from_secs(10)).unwrap(), b"after");
    assert_eq!(q.lost(), 1);
    // Fully usable: many more laps.
    for i in 0..20u8 {
        q.put(&[i]).unwrap();
        assert_eq!(q.get().unwrap(), [i]);
    }
}

#[test]
fn consumer_killed_mid_get_frees_the_slot_for_producers() {
    let q = ByteQueue::new(2, 8).unwrap();
    let ready = SharedValue::<u32>::new(0).unwrap();
    q.put(b"a").unwrap();
    q.put(b"b").unwrap();
    let r = ndshm::scope(|s| -> ndshm::Result<_> {
        let child = s.spawn(|| {
            q.get_with(|_| {
                ready.store(1);
                std::thread::sleep(Duration::from_secs(60));
            })
        })?;
        let pid = child.pid();
        while ready.load() == 0 {
            std::thread::yield_now();
        }
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        child.join()
    });
    assert!(r.unwrap_err().to_string().contains("SIGKILL"));
    // "a" was taken by the dead consumer; its slot is reclaimed for the next put.
    assert_eq!(q.get().unwrap(), b"b");
    q.put(b"c").unwrap();
    q.put_timeout(b"d", Duration::from_secs(10)).unwrap();
    assert_eq!(q.lost(), 1);
    assert_eq!(q.get().unwrap(), b"c");
    assert_eq!(q.get().unwrap(), b"d");
}

#[test]
fn random_sigkill_of_producers_never_corrupts_messages() {
    // Producers copy 256 KiB messages, so most kills land mid-copy.
    const SIZE: usize = 256 * 1024;
    let q = ByteQueue::new(8, SIZE).unwrap();
    for round in 0..5u8 {
        let q = &q;
        let killed = ndshm::scope(|s| -> ndshm::Result<_> {
            let child = s.spawn::<_, ()>(move || loop {
                let _ = q.put_timeout(&vec![round; SIZE], Duration::from_millis(5));
            })?;
            let pid = child.pid();
            std::thread::sleep(Duration::from_millis(3));
            // SAFETY: kill(2) of our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            child.join()
        });
        assert!(killed.is_err());
        // Drain: every message delivered is whole.
        while let Ok(ok) = q.get_with_timeout(Duration::from_millis(100), |m| {
            m.len() == SIZE && m.iter().all(|&b| b == round)
        }) {
            assert!(ok, "a torn message was delivered");
        }
    }
    assert!(q.lost() <= 5, "at most one lost slot per kill");
    q.put(b"still works").unwrap();
    assert_eq!(q.get().unwrap(), b"still works");
}

/// CPU time (user + system, clock ticks) of process `pid`.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat, counted from the state field (3).
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn an_idle_consumer_sleeps_instead_of_spinning() {
    let q = Queue::<u64>::new(4).unwrap();
    ndshm::scope(|s| -> ndshm::Result<_> {
        let child = s.spawn(|| assert_eq!(q.get(), Ok(1)))?;
        let pid = child.pid();
        // Past its spin window the consumer sleeps on the futex; measure from then on.
        let asleep = within_deadline(|| asleep_on_futex(pid));
        if !asleep {
            q.put(1).unwrap();
        }
        assert!(
            asleep,
            "the consumer never went to sleep on the empty queue"
        );
        let before = cpu_ticks(pid);
        std::thread::sleep(Duration::from_millis(600));
        let used = cpu_ticks(pid) - before;
        q.put(1).unwrap();
        // A spinning consumer would burn ~60 ticks (at 100 Hz) here; a sleeping one
        // wakes every 20 ms for a liveness check and spins ~20 µs: well under 1 tick.
        assert!(
            used <= 10,
            "idle consumer used {used} ticks of CPU in 600 ms"
        );
        Ok(())
    })
    .unwrap();
}

#[test]
fn try_get_on_an_empty_queue_is_empty_not_timeout() {
    let q = Queue::<u64>::new(2).unwrap();
    let e = q.try_get().unwrap_err();
    assert_eq!(e, TryGetError::Empty);
    assert!(e.is_empty());
    assert_eq!(ndshm::Error::from(e).kind(), ErrorKind::Empty);
    let b = ByteQueue::new(2, 8).unwrap();
    assert_eq!(b.try_get(), Err(TryGetError::Empty));
    assert_eq!(
        b.try_get_with(|m| m.len()).unwrap_err().kind(),
        ErrorKind::Empty
    );
    // A timed get that runs out is a timeout; closed and empty is closed.
    assert_eq!(
        q.get_timeout(Duration::from_millis(1)),
        Err(GetTimeoutError::Timeout)
    );
    q.shutdown(false);
    b.shutdown(false);
    assert_eq!(q.try_get(), Err(TryGetError::Closed));
    assert_eq!(b.try_get(), Err(TryGetError::Closed));
}

#[test]
fn failed_put_hands_the_item_back() {
    // Queue<T>: full, timed out, closed.
    let q = Queue::<[u32; 2]>::new(2).unwrap();
    q.put([1, 1]).unwrap();
    q.put([2, 2]).unwrap();
    assert_eq!(q.try_put([3, 3]).unwrap_err().into_inner(), [3, 3]);
    let e = q.put_timeout([4, 4], Duration::from_millis(1)).unwrap_err();
    assert!(e.is_timeout());
    assert_eq!(e.into_inner(), [4, 4]);
    q.close();
    let e = q.put([5, 5]).unwrap_err();
    assert!(e.is_closed());
    assert_eq!(e.into_inner(), [5, 5]);

    // ByteQueue: too large (Failed, with the message), full, and put_with's callback.
    let b = ByteQueue::new(2, 4).unwrap();
    let big = [9u8; 5];
    let e = b.put(&big).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("larger slot size"), "{e}");
    assert!(std::ptr::eq(e.into_inner(), &big[..]));
    b.put(b"a").unwrap();
    b.put(b"b").unwrap();
    assert_eq!(b.try_put(b"c"), Err(TryPutError::Full(&b"c"[..])));
    let fill = b
        .try_put_with(1, |buf: &mut [u8]| buf[0] = b'z')
        .unwrap_err()
        .into_inner();
    assert_eq!(b.get().unwrap(), b"a");
    // The callback came back unused: it fills the slot that is free now.
    b.put_with(1, fill).unwrap();
    assert_eq!(b.get().unwrap(), b"b");
    assert_eq!(b.get().unwrap(), b"z");
}

#[test]
fn every_channel_error_converts_into_ndshm_error_with_its_kind() {
    use ndshm::{
        PutError, PutTimeoutError, RecvError, RecvTimeoutError, SendError, SendTimeoutError,
        TryRecvError, TrySendError,
    };
    fn failed() -> ndshm::Error {
        // A real Failed error, made by the library: an oversize message.
        let q = ByteQueue::new(1, 1).unwrap();
        q.put(b"too long").unwrap_err().into()
    }
    let cases: Vec<(ndshm::Error, ErrorKind)> = vec![
        (PutError::Closed(1).into(), ErrorKind::Closed),
        (
            PutError::Failed(1, failed()).into(),
            ErrorKind::InvalidArgument,
        ),
        (TryPutError::Full(1).into(), ErrorKind::Full),
        (TryPutError::Closed(1).into(), ErrorKind::Closed),
        (
            TryPutError::Failed(1, failed()).into(),
            ErrorKind::InvalidArgument,
        ),
        (PutTimeoutError::Timeout(1).into(), ErrorKind::Timeout),
        (PutTimeoutError::Closed(1).into(), ErrorKind::Closed),
        (
            PutTimeoutError::Failed(1, failed()).into(),
            ErrorKind::InvalidArgument,
        ),
        (GetError::Closed.into(), ErrorKind::Closed),
        (
            GetError::Failed(failed()).into(),
            ErrorKind::InvalidArgument,
        ),
        (TryGetError::Empty.into(), ErrorKind::Empty),
        (TryGetError::Closed.into(), ErrorKind::Closed),
        (
            TryGetError::Failed(failed()).into(),
            ErrorKind::InvalidArgument,
        ),
        (GetTimeoutError::Timeout.into(), ErrorKind::Timeout),
        (GetTimeoutError::Closed.into(), ErrorKind::Closed),
        (
            GetTimeoutError::Failed(failed()).into(),
            ErrorKind::InvalidArgument,
        ),
        (SendError::Closed(1).into(), ErrorKind::Closed),
        (
            SendError::Failed(1, failed()).into(),
            ErrorKind::InvalidArgument,
        ),
        (TrySendError::Full(1).into(), ErrorKind::Full),
        (TrySendError::Closed(1).into(), ErrorKind::Closed),
        (
            TrySendError::Failed(1, failed()).into(),
            ErrorKind::InvalidArgument,
        ),
        (SendTimeoutError::Timeout(1).into(), ErrorKind::Timeout),
        (SendTimeoutError::Closed(1).into(), ErrorKind::Closed),
        (
            SendTimeoutError::Failed(1, failed()).into(),
            ErrorKind::InvalidArgument,
        ),
        (RecvError::Closed.into(), ErrorKind::Closed),
        (
            RecvError::Failed(failed()).into(),
            ErrorKind::InvalidArgument,
        ),
        (TryRecvError::Empty.into(), ErrorKind::Empty),
        (TryRecvError::Closed.into(), ErrorKind::Closed),
        (
            TryRecvError::Failed(failed()).into(),
            ErrorKind::InvalidArgument,
        ),
        (RecvTimeoutError::Timeout.into(), ErrorKind::Timeout),
        (RecvTimeoutError::Closed.into(), ErrorKind::Closed),
        (
            RecvTimeoutError::Failed(failed()).into(),
            ErrorKind::InvalidArgument,
        ),
    ];
    for (err, kind) in cases {
        assert_eq!(err.kind(), kind, "{err}");
        // The message says what happened and what to do (after the colon).
        let msg = err.message();
        assert!(msg.contains(':') && msg.len() > 40, "{kind:?}: {msg}");
    }
    // They are std errors, with `?` into Box<dyn Error> too.
    let boxed: Box<dyn std::error::Error> = Box::new(TryGetError::Empty);
    assert!(boxed.to_string().contains("empty"), "{boxed}");
    let boxed: Box<dyn std::error::Error> = Box::new(TrySendError::Failed(1u8, failed()));
    assert!(
        boxed.source().is_some(),
        "Failed keeps the ndshm::Error as its source"
    );
}

#[test]
fn close_releases_only_this_handle() {
    let name = Name::new("close-handle");
    let q = Queue::<u32>::create(name.as_str(), 4).unwrap();
    let other = Queue::<u32>::open(name.as_str()).unwrap();
    q.put(1).unwrap();
    // A child closes its inherited copy: only its own handle stops working.
    ndshm::scope(|s| -> ndshm::Result<()> {
        s.spawn(|| {
            q.close();
            assert!(q.is_closed());
            assert_eq!(q.try_put(9), Err(TryPutError::Closed(9)));
            assert_eq!(q.try_get(), Err(TryGetError::Closed));
            assert_eq!(q.get(), Err(GetError::Closed));
            // Observations still answer; the queue itself is not shut down.
            assert_eq!(q.len(), 1);
            assert!(!q.is_shutdown());
        })?
        .join()
    })
    .unwrap();
    assert!(!q.is_closed());
    q.put(2).unwrap();
    assert_eq!(q.get(), Ok(1));
    // Closing one of two handles in one process leaves the other working.
    other.close();
    assert_eq!(other.put(3).unwrap_err().into_inner(), 3);
    assert_eq!(
        other.get_timeout(Duration::from_millis(1)),
        Err(GetTimeoutError::Closed)
    );
    assert_eq!(q.get(), Ok(2));
    q.put(4).unwrap();
    assert_eq!(q.try_get(), Ok(4));
    // The same for ByteQueue.
    let b = ByteQueue::new(2, 8).unwrap();
    b.put(b"a").unwrap();
    ndshm::scope(|s| -> ndshm::Result<()> {
        s.spawn(|| {
            b.close();
            assert!(b.try_put(b"x").unwrap_err().is_closed());
            assert!(b.try_get().unwrap_err().is_closed());
        })?
        .join()
    })
    .unwrap();
    assert_eq!(b.get().unwrap(), b"a");
}

#[test]
fn shutdown_lets_consumers_drain_then_reports_closed() {
    let name = Name::new("shutdown-drain");
    let q = Queue::<u32>::create(name.as_str(), 4).unwrap();
    for i in 1..=3 {
        q.put(i).unwrap();
    }
    q.shutdown(false);
    assert!(q.is_shutdown());
    assert!(!q.is_closed());
    assert_eq!(q.try_put(4), Err(TryPutError::Closed(4)));
    assert_eq!(q.put(5).unwrap_err().into_inner(), 5);
    // Another process (through its own handle) drains what is left, then gets Closed.
    ndshm::scope(|s| -> ndshm::Result<()> {
        s.spawn(|| {
            let q = Queue::<u32>::open(name.as_str()).unwrap();
            assert!(q.is_shutdown());
            let mut got = Vec::new();
            let end = loop {
                match q.get() {
                    Ok(v) => got.push(v),
                    Err(e) => break e,
                }
            };
            assert_eq!(got, [1, 2, 3]);
            assert_eq!(end, GetError::Closed);
            assert_eq!(q.try_get(), Err(TryGetError::Closed));
            assert_eq!(
                q.get_timeout(Duration::from_millis(1)),
                Err(GetTimeoutError::Closed)
            );
        })?
        .join()
    })
    .unwrap();
    assert_eq!(q.len(), 0);
    assert_eq!(q.lost(), 0);
}

#[test]
fn shutdown_immediate_discards_queued_items() {
    let q = Queue::<u32>::new(4).unwrap();
    for i in 1..=3 {
        q.put(i).unwrap();
    }
    q.shutdown(true);
    assert!(q.is_shutdown());
    assert_eq!(q.len(), 0);
    assert_eq!(q.try_get(), Err(TryGetError::Closed));
    assert_eq!(q.get(), Err(GetError::Closed));
    assert_eq!(
        q.get_timeout(Duration::from_millis(1)),
        Err(GetTimeoutError::Closed)
    );
    assert_eq!(q.try_put(4), Err(TryPutError::Closed(4)));
    assert_eq!(q.lost(), 0, "discarded items are not lost ones");
    // A child's inherited handle sees the same.
    ndshm::scope(|s| -> ndshm::Result<()> {
        s.spawn(|| assert_eq!(q.try_get(), Err(TryGetError::Closed)))?
            .join()
    })
    .unwrap();
    // ByteQueue, with a later shutdown(false) that cannot bring the items back.
    let b = ByteQueue::new(2, 8).unwrap();
    b.put(b"a").unwrap();
    b.put(b"b").unwrap();
    b.shutdown(true);
    b.shutdown(false);
    assert!(b.try_get_with(|m| m.to_vec()).unwrap_err().is_closed());
    assert!(b.is_empty());
}

#[test]
fn capacity_is_exactly_what_was_asked() {
    // 6 is not a power of two: the ring inside has 8 slots, the queue holds 6 items.
    let q = Queue::<u64>::new(6).unwrap();
    assert_eq!(q.capacity(), 6);
    for lap in 0..50u64 {
        for i in 0..6 {
            q.try_put(lap * 10 + i).unwrap();
        }
        assert_eq!(q.len(), 6);
        assert_eq!(q.try_put(6), Err(TryPutError::Full(6)));
        assert_eq!(q.try_put(7), Err(TryPutError::Full(7)));
        if lap == 0 {
            let e = q.put_timeout(8, Duration::from_millis(1)).unwrap_err();
            assert_eq!(e, ndshm::PutTimeoutError::Timeout(8));
        }
        for i in 0..6 {
            assert_eq!(q.try_get(), Ok(lap * 10 + i));
        }
    }
    // A handle opened by name enforces the same bound.
    let name = Name::new("exact-capacity");
    let q = Queue::<u32>::create(name.as_str(), 3).unwrap();
    let other = Queue::<u32>::open(name.as_str()).unwrap();
    assert_eq!(other.capacity(), 3);
    for i in 0..3 {
        other.put(i).unwrap();
    }
    assert_eq!(q.try_put(3), Err(TryPutError::Full(3)));
    // The smallest queue holds one item; ByteQueue too.
    let one = Queue::<u8>::new(1).unwrap();
    one.try_put(1).unwrap();
    assert_eq!(one.try_put(2), Err(TryPutError::Full(2)));
    let b = ByteQueue::new(3, 8).unwrap();
    assert_eq!(b.capacity(), 3);
    for m in [b"a", b"b", b"c"] {
        b.try_put(m).unwrap();
    }
    assert!(b.try_put(b"d").unwrap_err().is_full());
    assert!(b.try_put(b"e").unwrap_err().is_full());
    // A blocked producer is let in as soon as an item leaves.
    ndshm::scope(|s| -> ndshm::Result<()> {
        s.spawn(|| b.put(b"f").unwrap())?;
        assert_eq!(b.get().unwrap(), b"a");
        Ok(())
    })
    .unwrap();
    assert_eq!(b.len(), 3);
}

/// Runs `f` on a thread and fails the test if it has not returned within 60 s (a get that
/// never learns its producers are gone hangs instead of failing).
fn with_deadline<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let limit = Duration::from_secs(60);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(r);
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(v)) => v,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("{what}: still blocked after {limit:?}"),
    }
}

#[test]
fn get_after_every_producer_dropped_drains_then_reports_disconnected() {
    with_deadline("producers dropped", || {
        let name = Name::new("producers-dropped");
        let q = Queue::<u64>::create(name.as_str(), 8).unwrap();
        // A queue nobody put to yet is not disconnected: it waits for a first producer.
        assert_eq!(q.try_get(), Err(TryGetError::Empty));
        let p1 = Queue::<u64>::open(name.as_str()).unwrap();
        let p2 = Queue::<u64>::open(name.as_str()).unwrap();
        p1.put(1).unwrap();
        p2.put(2).unwrap();
        drop(p1);
        // One producer left: items come, then empty (not disconnected).
        assert_eq!(q.get(), Ok(1));
        assert_eq!(q.get(), Ok(2));
        assert_eq!(q.try_get(), Err(TryGetError::Empty));
        assert_eq!(
            q.get_timeout(Duration::from_millis(1)),
            Err(GetTimeoutError::Timeout)
        );
        p2.put(3).unwrap();
        p2.put(4).unwrap();
        drop(p2);
        // The last producer is gone: what it put is drained first, then Disconnected
        // from every flavour of get, and it converts into ErrorKind::Disconnected.
        assert_eq!(q.get(), Ok(3));
        assert_eq!(q.try_get(), Ok(4));
        assert_eq!(q.get(), Err(GetError::Disconnected));
        assert_eq!(q.try_get(), Err(TryGetError::Disconnected));
        assert_eq!(
            q.get_timeout(Duration::from_secs(5)),
            Err(GetTimeoutError::Disconnected)
        );
        let e: ndshm::Error = q.get().unwrap_err().into();
        assert_eq!(e.kind(), ErrorKind::Disconnected);
        // A new producer revives the queue (a process may open it by name and put).
        let p3 = Queue::<u64>::open(name.as_str()).unwrap();
        p3.put(5).unwrap();
        assert_eq!(q.get(), Ok(5));
        assert_eq!(q.try_get(), Err(TryGetError::Empty));
        p3.close(); // close() gives up producing as a drop does (Python's close()).
        assert_eq!(q.get(), Err(GetError::Disconnected));

        // A consumer asleep in another process is woken by the last producer's close.
        let b = ByteQueue::new(4, 8).unwrap();
        let got = SharedValue::<u64>::new(0).unwrap();
        ndshm::scope(|s| -> ndshm::Result<()> {
            let child = s.spawn(|| {
                let mut n = 0u64;
                loop {
                    match b.get() {
                        Ok(m) => n += u64::from(m[0]),
                        Err(e) => {
                            assert!(e.is_disconnected(), "{e:?}");
                            break;
                        }
                    }
                }
                got.store(n);
            })?;
            // Registered after the fork: the child's copy never stood for this producer.
            for i in 1..=10u8 {
                b.put(&[i]).unwrap();
            }
            b.close();
            child.join()
        })
        .unwrap();
        assert_eq!(got.load(), 55);
    });
}

#[test]
fn get_after_the_producer_process_died_reports_disconnected() {
    with_deadline("producer process died", || {
        let q = Queue::<u64>::new(8).unwrap();
        let ready = SharedValue::<u32>::new(0).unwrap();
        let r = ndshm::scope(|s| -> ndshm::Result<()> {
            let child = s.spawn(|| {
                for i in 1..=3 {
                    q.put(i).unwrap();
                }
                ready.store(1);
                // Alive until killed: it holds its producer handle, never drops it.
                std::thread::sleep(Duration::from_secs(3600));
            })?;
            assert!(within_deadline(|| ready.load() == 1));
            for i in 1..=3 {
                assert_eq!(q.get(), Ok(i));
            }
            // The producer is alive: empty, not disconnected.
            assert_eq!(
                q.get_timeout(Duration::from_millis(50)),
                Err(GetTimeoutError::Timeout)
            );
            let pid = child.pid();
            // The consumer blocks in `get`; the producer is killed while it waits (or
            // before: either way the get must end with Disconnected, not hang).
            let killer = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                // SAFETY: kill(2) of our own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            });
            assert_eq!(q.get(), Err(GetError::Disconnected));
            killer.join().unwrap();
            child.join()
        });
        assert!(r.unwrap_err().to_string().contains("SIGKILL"));
        assert_eq!(q.try_get(), Err(TryGetError::Disconnected));
        assert_eq!(q.lost(), 0);
    });
}

#[test]
fn a_forked_copy_that_never_puts_is_not_a_producer() {
    with_deadline("forked copy never puts", || {
        let name = Name::new("copy-never-puts");
        let q = Queue::<u64>::create(name.as_str(), 8).unwrap();
        let consumer = Queue::<u64>::open(name.as_str()).unwrap();
        let done = SharedValue::<u32>::new(0).unwrap();
        let started = SharedValue::<u32>::new(0).unwrap();
        ndshm::scope(|s| -> ndshm::Result<()> {
            // A child that holds copies of both handles and never uses them.
            let child = s.spawn(|| {
                let _copies = (&q, &consumer);
                started.store(1);
                while done.load() == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            })?;
            assert!(within_deadline(|| started.load() == 1));
            q.put(7).unwrap();
            q.close();
            // The only process that put closed its handle; the child lives on with its
            // copy, which does not count as a producer.
            assert_eq!(consumer.get(), Ok(7));
            assert_eq!(consumer.get(), Err(GetError::Disconnected));
            done.store(1);
            child.join()
        })
        .unwrap();

        // A producer that forks: its child's copy is not a producer either. The parent's
        // close after the fork is a hand-over until a child settles it; a child that
        // used its copy (here, a get) settled it, so the close ends the producers.
        let name = Name::new("copy-settles");
        let b = ByteQueue::create(name.as_str(), 4, 8).unwrap();
        let c = ByteQueue::open(name.as_str()).unwrap();
        b.put(b"a").unwrap();
        b.put(b"b").unwrap();
        ndshm::scope(|s| -> ndshm::Result<()> {
            s.spawn(|| {
                assert_eq!(b.get().unwrap(), b"a");
            })?
            .join()
        })
        .unwrap();
        b.close();
        assert_eq!(c.get().unwrap(), b"b");
        assert!(c.get().unwrap_err().is_disconnected());
    });
}

#[test]
fn spsc_queue_across_processes_delivers_everything_once_then_disconnected() {
    with_deadline("spsc across processes", || {
        let q = ndshm::SpscQueue::<u64>::new(64).unwrap();
        let n = 200_000u64;
        let sum = ndshm::scope(|s| -> ndshm::Result<u64> {
            s.spawn(|| -> ndshm::Result<()> {
                let tx = q.producer()?;
                for i in 0..n {
                    tx.put(i)?;
                }
                Ok(())
            })?;
            let rx = q.consumer()?;
            let mut sum = 0u64;
            let mut count = 0u64;
            loop {
                match rx.get() {
                    Ok(v) => {
                        assert_eq!(v, count, "in order, once each");
                        sum += v;
                        count += 1;
                    }
                    Err(e) => {
                        assert!(e.is_disconnected(), "{e:?}");
                        break;
                    }
                }
            }
            assert_eq!(count, n);
            Ok(sum)
        })
        .unwrap();
        assert_eq!(sum, n * (n - 1) / 2);
    });
}

#[test]
fn spsc_roles_one_live_holder_each_and_a_dead_holders_role_is_taken_over() {
    with_deadline("spsc roles", || {
        let name = Name::new("spsc-roles");
        let q = ndshm::SpscQueue::<u32>::create(name.as_str(), 4).unwrap();
        let held = SharedValue::<u32>::new(0).unwrap();
        let r = ndshm::scope(|s| -> ndshm::Result<()> {
            let child = s.spawn(|| -> ndshm::Result<()> {
                let tx = q.producer()?;
                tx.put(1)?;
                held.store(1);
                std::thread::sleep(Duration::from_secs(3600));
                Ok(())
            })?;
            assert!(within_deadline(|| held.load() == 1));
            // A live process holds the producer: refused here.
            let e = q.producer().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::AlreadyOpen, "{e}");
            let rx = q.consumer()?;
            assert_eq!(rx.get(), Ok(1));
            // SAFETY: kill(2) of our own child.
            unsafe { libc::kill(child.pid(), libc::SIGKILL) };
            // The producer died: drained, then Disconnected; its role is free again.
            assert!(rx.get().unwrap_err().is_disconnected());
            let tx = q.producer()?;
            tx.put(2)?;
            assert_eq!(rx.get(), Ok(2));
            // A copy inherited through fork is bound to its claiming process.
            ndshm::scope(|inner| {
                inner
                    .spawn(|| {
                        let e = tx.try_put(3).unwrap_err();
                        assert_eq!(e.kind(), ErrorKind::WrongProcess);
                        assert_eq!(rx.try_get().unwrap_err().kind(), ErrorKind::WrongProcess);
                    })?
                    .join()
            })?;
            // The parent still holds both roles.
            tx.put(4)?;
            assert_eq!(rx.get(), Ok(4));
            child.join()
        });
        assert!(r.unwrap_err().to_string().contains("SIGKILL"));
    });
}

#[test]
fn producers_started_one_after_another_under_a_registered_parent_are_all_consumed() {
    with_deadline("late producers", || {
        let q = Queue::<u64>::new(4).unwrap();
        let got = SharedValue::<u64>::new(0).unwrap();
        q.register_producer().unwrap();
        ndshm::scope(|s| -> ndshm::Result<()> {
            let consumer = s.spawn(|| {
                let mut n = 0;
                while let Ok(v) = q.get() {
                    n += v;
                }
                got.store(n);
            })?;
            // One producer at a time: each has exited before the next one's first put.
            for p in 0..3u64 {
                ndshm::scope(|inner| -> ndshm::Result<()> {
                    let q = &q;
                    inner.spawn(move || {
                        for i in 0..10 {
                            q.put(p * 10 + i + 1).unwrap();
                        }
                    })?;
                    Ok(())
                })?;
            }
            q.close(); // the parent's registration: the last producer is gone now
            consumer.join()
        })
        .unwrap();
        assert_eq!(got.load(), (1..=30).sum::<u64>());
    });
}
