//! Process-level tests of pipes (`ndshm::pipe`, `Connection`): the seed's ping-pong across fork, a named pipe between
//! two processes, large messages, close.

mod common;

use common::Name;

use std::time::{Duration, Instant};

use ndshm::{Connection, ErrorKind, Process, Queue, RecvError, RecvTimeoutError, TryRecvError};

/// Longest wait of a step that must not hang: a hang fails the test instead.
const DEADLINE: Duration = Duration::from_secs(30);

#[test]
fn ping_pong_across_fork() {
    let (conn1, conn2) = ndshm::pipe().unwrap();
    ndshm::scope(|s| -> ndshm::Result<_> {
        s.spawn(|| -> ndshm::Result<()> {
            for i in 0..3 {
                let msg = conn2.recv_string()?;
                assert_eq!(msg, format!("Main message {i}"));
                conn2.send_str(&format!("Worker reply {i}"))?;
            }
            conn2.close();
            Ok(())
        })?;
        for i in 0..3 {
            conn1.send_str(&format!("Main message {i}"))?;
            assert_eq!(conn1.recv_string()?, format!("Worker reply {i}"));
        }
        Ok(())
    })
    .unwrap();
    // The worker closed its copy, and this process drops its own: the end is gone (EOF).
    drop(conn2);
    assert_eq!(
        conn1.recv_bytes_timeout(DEADLINE).unwrap_err().kind(),
        ErrorKind::Disconnected
    );
}

#[test]
fn named_pipe_large_messages_and_values() {
    let name = Name::new("named");
    let a = Connection::create(&name.0, 4, 1000).unwrap();
    let n = name.0.clone();
    let child = Process::spawn(move || -> ndshm::Result<()> {
        let b = Connection::open(&n)?;
        // Echo: a 1 MiB message (1049 chunks through 4 slots), a value, a slice.
        let big = b.recv_bytes()?;
        b.send_bytes(&big)?;
        let v: f64 = b.recv()?;
        b.send(v * 2.0)?;
        let xs: Vec<u32> = b.recv_vec()?;
        b.send_slice(&xs.iter().map(|x| x + 1).collect::<Vec<_>>())?;
        Ok(())
    })
    .unwrap();
    let big: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect();
    a.send_bytes(&big).unwrap();
    assert_eq!(a.recv_bytes().unwrap(), big);
    a.send(1.25f64).unwrap();
    assert_eq!(a.recv::<f64>().unwrap(), 2.5);
    a.send_slice(&[1u32, 2, 3]).unwrap();
    assert_eq!(a.recv_vec::<u32>().unwrap(), vec![2, 3, 4]);
    child.join().unwrap();
    // The segment is a pipe, not something else (checked from another process: this one
    // holds it already).
    let n = name.0.clone();
    Process::spawn(move || {
        let e = ndshm::Queue::<u8>::open(&n).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::KindMismatch, "{e}");
    })
    .unwrap()
    .join()
    .unwrap();
}

#[test]
fn pipe_try_recv_on_an_empty_pipe_is_empty() {
    let (a, b) = ndshm::pipe().unwrap();
    assert_eq!(b.try_recv::<u64>(), Err(ndshm::TryRecvError::Empty));
    let e = b.try_recv_bytes().unwrap_err();
    assert!(e.is_empty());
    assert_eq!(ndshm::Error::from(e).kind(), ErrorKind::Empty);
    a.send(5u64).unwrap();
    assert_eq!(b.try_recv::<u64>(), Ok(5));
    a.close();
    assert_eq!(b.try_recv_bytes(), Err(ndshm::TryRecvError::Disconnected));
}

#[test]
fn failed_send_hands_the_item_back() {
    let (a, _b) = Connection::pair(2, 8).unwrap();
    a.send(1u32).unwrap();
    a.send(2u32).unwrap();
    let e = a.try_send(3u32).unwrap_err();
    assert!(e.is_full());
    assert_eq!(e.into_inner(), 3);
    let e = a
        .send_timeout([4u8; 2], std::time::Duration::from_millis(1))
        .unwrap_err();
    assert!(e.is_timeout());
    assert_eq!(e.into_inner(), [4, 4]);
    let msg = vec![5u8; 3];
    let e = a
        .send_bytes_timeout(&msg, std::time::Duration::from_millis(1))
        .unwrap_err();
    assert!(std::ptr::eq(e.into_inner(), &msg[..]));
    assert!(a.try_send_bytes(&msg).unwrap_err().is_full());
    a.close();
    let e = a.send(6u64).unwrap_err();
    assert!(e.is_closed());
    assert_eq!(e.into_inner(), 6);
    assert_eq!(a.send_str("x").unwrap_err().into_inner(), "x");
}

#[test]
fn a_child_closing_its_copy_does_not_cut_the_parent_off() {
    let (a, b) = ndshm::pipe().unwrap();
    ndshm::scope(|s| -> ndshm::Result<()> {
        // One child closes its inherited copy without using it, another uses it, then
        // closes it (Python: conn.close() in the child).
        s.spawn(|| a.close())?.join()?;
        s.spawn(|| -> ndshm::Result<()> {
            a.send(7u32)?;
            a.close();
            Ok(())
        })?
        .join()?;
        Ok(())
    })
    .unwrap();
    assert!(!a.is_closed(), "the parent's handle is still open");
    assert_eq!(b.recv_timeout::<u32>(DEADLINE).unwrap(), 7);
    a.send(8u32).unwrap();
    assert_eq!(b.recv_timeout::<u32>(DEADLINE).unwrap(), 8);
    b.send_str("back").unwrap();
    assert_eq!(a.recv_string().unwrap(), "back");
    assert_eq!(b.try_recv::<u32>(), Err(TryRecvError::Empty));
}

#[test]
fn using_a_closed_connection_is_an_error() {
    let (a, b) = ndshm::pipe().unwrap();
    b.send(1u8).unwrap();
    a.close();
    a.close(); // twice: harmless
    assert!(a.is_closed());
    assert!(!b.is_closed());
    let e = a.send(2u8).unwrap_err();
    assert!(e.is_closed());
    assert_eq!(e.into_inner(), 2);
    assert_eq!(a.recv::<u8>(), Err(RecvError::Closed));
    assert_eq!(a.try_recv_bytes(), Err(TryRecvError::Closed));
    assert_eq!(
        a.recv_bytes_timeout(Duration::from_millis(1)),
        Err(RecvTimeoutError::Closed)
    );
    assert_eq!(a.poll().unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(
        a.poll_timeout(Duration::from_millis(1)).unwrap_err().kind(),
        ErrorKind::Closed
    );
    let e: ndshm::Error = a.send_str("x").unwrap_err().into();
    assert_eq!(e.kind(), ErrorKind::Closed);
    // The other end sees the hang-up, not a closed handle of its own.
    assert_eq!(b.recv::<u8>(), Err(RecvError::Disconnected));
}

#[test]
fn recv_after_the_peer_dropped_drains_then_reports_disconnected() {
    let (a, b) = Connection::pair(4, 16).unwrap();
    a.send(1u64).unwrap();
    a.send_str("two").unwrap();
    drop(a);
    assert_eq!(b.recv::<u64>().unwrap(), 1);
    assert!(b.poll().unwrap());
    assert_eq!(b.recv_string().unwrap(), "two");
    assert!(
        b.poll().unwrap(),
        "a receive returns at once: it reports the hang-up"
    );
    assert_eq!(b.recv::<u64>(), Err(RecvError::Disconnected));
    assert_eq!(b.try_recv::<u64>(), Err(TryRecvError::Disconnected));
    assert_eq!(
        b.recv_bytes_timeout(DEADLINE),
        Err(RecvTimeoutError::Disconnected)
    );
    let e = b.send(3u8).unwrap_err();
    assert!(e.is_disconnected());
    assert_eq!(e.into_inner(), 3);
    let e: ndshm::Error = b.recv_bytes().unwrap_err().into();
    assert_eq!(e.kind(), ErrorKind::Disconnected);

    // A receive already waiting is woken by the drop (a thread here).
    let (a, b) = ndshm::pipe().unwrap();
    std::thread::scope(|s| {
        let t = s.spawn(|| b.recv_timeout::<u8>(DEADLINE));
        a.send(9u8).unwrap();
        drop(a);
        let first = t.join().unwrap();
        assert_eq!(first, Ok(9));
    });
    let start = Instant::now();
    assert_eq!(
        b.recv_timeout::<u8>(DEADLINE),
        Err(RecvTimeoutError::Disconnected)
    );
    assert!(start.elapsed() < Duration::from_secs(5));

    // Across processes: a child given the end sends, then exits.
    let (a, b) = ndshm::pipe().unwrap();
    let child = Process::spawn(move || -> ndshm::Result<()> {
        for i in 0..3u32 {
            a.send(i)?;
        }
        Ok(())
    })
    .unwrap();
    for i in 0..3u32 {
        assert_eq!(b.recv_timeout::<u32>(DEADLINE).unwrap(), i);
    }
    assert_eq!(
        b.recv_timeout::<u32>(DEADLINE),
        Err(RecvTimeoutError::Disconnected)
    );
    common::join_within(child, DEADLINE).unwrap();
}

#[test]
fn recv_after_the_peer_process_died_reports_disconnected() {
    let (a, b) = ndshm::pipe().unwrap();
    let child = Process::spawn(move || -> ndshm::Result<()> {
        a.send_str("alive")?;
        // Waits for a message that never comes, until killed.
        let _ = a.recv_bytes();
        Ok(())
    })
    .unwrap();
    assert_eq!(b.recv_bytes_timeout(DEADLINE).unwrap(), b"alive");
    let start = Instant::now();
    std::thread::scope(|s| {
        let t = s.spawn(|| b.recv_bytes_timeout(DEADLINE));
        child.kill().unwrap();
        assert_eq!(t.join().unwrap(), Err(RecvTimeoutError::Disconnected));
    });
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "the death was noticed late: {:?}",
        start.elapsed()
    );
    assert_eq!(b.try_recv_bytes(), Err(TryRecvError::Disconnected));
    assert!(b.send(1u8).unwrap_err().is_disconnected());
    assert!(child.join().is_err(), "the child was killed");
}

#[test]
fn send_to_a_vanished_receiver_returns_instead_of_waiting() {
    // The receiver is a child that stops reading, then is killed while a long send waits
    // for room.
    let (a, b) = Connection::pair(2, 64).unwrap();
    let child = Process::spawn(move || -> ndshm::Result<()> {
        let go: u8 = b.recv()?;
        b.send(go)?;
        let _ = b.recv_bytes_timeout(Duration::from_secs(600)); // never reads it whole
        Ok(())
    })
    .unwrap();
    a.send(1u8).unwrap();
    assert_eq!(a.recv_timeout::<u8>(DEADLINE).unwrap(), 1);
    let big = vec![7u8; 100_000];
    let start = Instant::now();
    std::thread::scope(|s| {
        let t = s.spawn(|| a.send_bytes(&big).map_err(|e| e.kind()));
        child.kill().unwrap();
        assert_eq!(t.join().unwrap(), Err(ErrorKind::Disconnected));
    });
    assert!(start.elapsed() < Duration::from_secs(5));
    let e = a.try_send_bytes(&big).unwrap_err();
    assert!(e.is_disconnected());
    assert!(child.join().is_err());

    // In one process: the receiving end dropped while a send waits for room.
    let (a, b) = Connection::pair(2, 8).unwrap();
    a.send(1u8).unwrap();
    a.send(2u8).unwrap();
    std::thread::scope(|s| {
        let t = s.spawn(|| {
            a.send_timeout(3u8, DEADLINE)
                .map_err(|e| e.is_disconnected())
        });
        drop(b);
        assert_eq!(t.join().unwrap(), Err(true));
    });
}

#[test]
fn a_parent_handing_an_end_to_a_child_is_not_a_hang_up() {
    // Process::spawn(move || ..): the parent's copy is dropped right after the fork, long
    // before the child first uses the end.
    let (a, b) = ndshm::pipe().unwrap();
    let (go_r, go_w) = ndshm::pipe_one_way().unwrap();
    let child = Process::spawn(move || -> ndshm::Result<()> {
        go_r.recv::<u8>()?;
        a.send_str("late")?;
        Ok(())
    })
    .unwrap();
    assert_eq!(
        b.recv_bytes_timeout(Duration::from_millis(300)),
        Err(RecvTimeoutError::Timeout),
        "the hand-over is not a hang-up"
    );
    assert!(!b.poll().unwrap());
    go_w.send(1u8).unwrap(); // now the child first uses `a`
    assert_eq!(b.recv_string().unwrap(), "late");
    assert_eq!(
        b.recv_bytes_timeout(DEADLINE),
        Err(RecvTimeoutError::Disconnected),
        "the child exited: now the end is gone"
    );
    common::join_within(child, DEADLINE).unwrap();

    // Python's pattern: p.start(); child_conn.close() in the parent.
    let (a, b) = ndshm::pipe().unwrap();
    let go = Queue::<u8>::new(2).unwrap();
    ndshm::scope(|s| -> ndshm::Result<()> {
        s.spawn(|| -> ndshm::Result<()> {
            go.get()?;
            a.send_str("from the child")?;
            Ok(())
        })?;
        a.close();
        assert_eq!(
            b.recv_bytes_timeout(Duration::from_millis(300)),
            Err(RecvTimeoutError::Timeout)
        );
        go.put(1)?;
        assert_eq!(b.recv_string()?, "from the child");
        Ok(())
    })
    .unwrap();
    assert_eq!(
        b.recv_bytes_timeout(DEADLINE),
        Err(RecvTimeoutError::Disconnected)
    );
}

#[test]
fn poll_waits_at_most_its_timeout() {
    let (a, b) = ndshm::pipe().unwrap();
    let start = Instant::now();
    assert!(!b.poll_timeout(Duration::from_millis(200)).unwrap());
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_millis(1200), "{took:?}");
    // A message sent while it waits wakes it.
    ndshm::scope(|s| -> ndshm::Result<()> {
        s.spawn(|| -> ndshm::Result<()> {
            a.send(5u8)?;
            Ok(())
        })?;
        let start = Instant::now();
        assert!(b.poll_timeout(DEADLINE)?);
        assert!(start.elapsed() < Duration::from_secs(5));
        Ok(())
    })
    .unwrap();
    assert!(b.poll_timeout(Duration::MAX).unwrap());
    assert_eq!(b.recv::<u8>().unwrap(), 5);
    assert!(!b.poll().unwrap());
}

#[test]
fn one_way_pipe_read_end_cannot_send() {
    // That the reader has no send methods (and the writer no receive methods) is checked
    // at compile time: see the `compile_fail` example of `ndshm::pipe_one_way`. Here:
    // the ends work one way, across a fork, and report the hang-up.
    let (r, w) = ndshm::pipe_one_way().unwrap();
    let child = Process::spawn(move || -> ndshm::Result<()> {
        for i in 0..3u16 {
            w.send(i)?;
        }
        w.send_str("done")?;
        Ok(())
    })
    .unwrap();
    for i in 0..3u16 {
        assert_eq!(r.recv_timeout::<u16>(DEADLINE).unwrap(), i);
    }
    assert_eq!(r.recv_string().unwrap(), "done");
    assert!(r
        .recv_bytes_timeout(DEADLINE)
        .unwrap_err()
        .is_disconnected());
    common::join_within(child, DEADLINE).unwrap();
    let (r, w) = ndshm::Connection::pair_one_way(2, 8).unwrap();
    drop(r);
    assert!(w.send(1u8).unwrap_err().is_disconnected());
}

#[test]
fn shutdown_ends_the_pipe_for_every_handle() {
    // The parent forks a consumer given `b` and keeps `a`: dropping `a` afterwards is a
    // pending hand-over (the child holds an inherited copy it never uses); `shutdown`
    // tells the consumer at once.
    let (a, b) = ndshm::pipe().unwrap();
    let consumer = Process::spawn(move || -> Result<(), String> {
        let mut n = 0u32;
        loop {
            match b.recv_timeout::<u32>(DEADLINE) {
                Ok(_) => n += 1,
                Err(RecvTimeoutError::Disconnected) if n == 3 => return Ok(()),
                Err(e) => return Err(format!("after {n} messages: {e:?}")),
            }
        }
    })
    .unwrap();
    for i in 0..3u32 {
        a.send(i).unwrap();
    }
    a.shutdown();
    assert!(a.send(4u32).unwrap_err().is_disconnected());
    common::join_within(consumer, DEADLINE).unwrap();
}

#[test]
fn a_drop_after_forking_an_unrelated_child_is_pending_until_the_process_exits() {
    // The documented limit of the hand-over rule: a process that forked a child (which
    // never touches the end) and then drops the end still holds it, as a pending
    // hand-over, until it exits.
    let name = Name::new("pending");
    let to_test = Name::new("pending-q1");
    let to_holder = Name::new("pending-q2");
    let a = Connection::create(&name.0, 4, 64).unwrap();
    let q1 = Queue::<u8>::create(&to_test.0, 2).unwrap();
    let q2 = Queue::<u8>::create(&to_holder.0, 2).unwrap();
    let (n, n1, n2) = (name.0.clone(), to_test.0.clone(), to_holder.0.clone());
    let holder = Process::spawn(move || -> ndshm::Result<()> {
        let b = Connection::open(&n)?;
        let (q1, q2) = (Queue::<u8>::open(&n1)?, Queue::<u8>::open(&n2)?);
        b.send_str("opened")?;
        Process::spawn(|| {})?.join()?; // an unrelated child
        drop(b);
        q1.put(1)?;
        q2.get()?;
        Ok(())
    })
    .unwrap();
    assert_eq!(a.recv_string().unwrap(), "opened");
    assert_eq!(q1.get_timeout(DEADLINE).unwrap(), 1);
    assert_eq!(
        a.recv_bytes_timeout(Duration::from_millis(300)),
        Err(RecvTimeoutError::Timeout),
        "pending while the process lives"
    );
    q2.put(1).unwrap();
    assert_eq!(
        a.recv_bytes_timeout(DEADLINE),
        Err(RecvTimeoutError::Disconnected),
        "gone once it exited"
    );
    common::join_within(holder, DEADLINE).unwrap();
}
