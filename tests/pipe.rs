//! Process-level tests of pipes (`ndshm::pipe`, `Connection`): the seed's ping-pong across fork, a named pipe between
//! two processes, large messages, close.

mod common;

use common::Name;

use ndshm::{Connection, ErrorKind, Process};

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
    // The worker closed its end: EOF.
    assert_eq!(conn1.recv_bytes().unwrap_err().kind(), ErrorKind::Closed);
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
    assert_eq!(b.try_recv_bytes(), Err(ndshm::TryRecvError::Closed));
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
