//! Process-level tests of `SpscQueue`'s batch calls (`put_slice`, `try_put_slice`,
//! `put_slice_timeout`, `get_into`, `try_get_into`, `get_into_timeout`): order, no loss and
//! no duplicate across a fork, batches larger than the queue, empty slices, inherited
//! handles, and a producer killed in the middle of a batch.

mod common;

use common::{within_deadline, Name};
use std::time::Duration;

use ndshm::{ErrorKind, GetError, SpscQueue, TryGetError, TryPutError};

/// Runs `f` on a thread, failing the test if it has not returned after 60 s (a hang).
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
fn batches_across_a_fork_arrive_in_order_once_each_through_wraparound_and_partial_batches() {
    with_deadline("spsc batches across a fork", || {
        // 1000 items in a ring of 1024: batches wrap at every offset and rarely fit whole.
        let q = SpscQueue::<u64>::new(1000).unwrap();
        let n = 3_000_000u64;
        let items: Vec<u64> = (0..n).collect();
        let got = ndshm::scope(|s| -> ndshm::Result<u64> {
            s.spawn(|| -> ndshm::Result<()> {
                let tx = q.producer()?;
                // Batch sizes from 1 to 2.5 × the capacity; every other batch by try_.
                let sizes = [1usize, 7, 64, 999, 1000, 1001, 2500, 33];
                let (mut at, mut k) = (0usize, 0usize);
                while at < items.len() {
                    let end = (at + sizes[k % sizes.len()]).min(items.len());
                    let mut rest = &items[at..end];
                    if k % 2 == 0 {
                        tx.put_slice(rest)?;
                    } else {
                        while !rest.is_empty() {
                            match tx.try_put_slice(rest) {
                                Ok(put) => rest = &rest[put..],
                                Err(TryPutError::Full(_)) => std::hint::spin_loop(),
                                Err(e) => return Err(e.into()),
                            }
                        }
                    }
                    at = end;
                    k += 1;
                }
                Ok(())
            })?;
            let rx = q.consumer()?;
            let lens = [1usize, 5, 64, 1000, 1500, 17];
            let mut buf = vec![0u64; 1500];
            let (mut next, mut k) = (0u64, 0usize);
            loop {
                let want = &mut buf[..lens[k % lens.len()]];
                let took = if k % 2 == 0 {
                    match rx.get_into(want) {
                        Ok(t) => t,
                        Err(GetError::Disconnected) => break,
                        Err(e) => return Err(e.into()),
                    }
                } else {
                    match rx.try_get_into(want) {
                        Ok(t) => t,
                        Err(TryGetError::Empty) => {
                            std::hint::spin_loop();
                            continue;
                        }
                        Err(TryGetError::Disconnected) => break,
                        Err(e) => return Err(e.into()),
                    }
                };
                assert!(
                    took >= 1,
                    "a take on a non-empty buffer returns at least one"
                );
                for &v in &want[..took] {
                    assert_eq!(v, next, "in order, once each");
                    next += 1;
                }
                k += 1;
            }
            Ok(next)
        })
        .unwrap();
        assert_eq!(got, n, "every item arrived");
    });
}

#[test]
fn a_batch_bigger_than_the_capacity_is_put_in_parts() {
    with_deadline("spsc batch bigger than capacity", || {
        let q = SpscQueue::<u32>::new(7).unwrap();
        let items: Vec<u32> = (0..5000).collect();
        {
            let tx = q.producer().unwrap();
            // try_: as many as fit, the rest is the caller's.
            assert_eq!(tx.try_put_slice(&items), Ok(7));
            assert_eq!(
                tx.try_put_slice(&items[7..]),
                Err(TryPutError::Full(&items[7..]))
            );
            // _timeout with nobody taking: the part that fitted is put, the rest comes back.
            let rx = q.consumer().unwrap();
            let mut buf = [0u32; 3];
            assert_eq!(rx.try_get_into(&mut buf), Ok(3));
            assert_eq!(buf, [0, 1, 2]);
            let e = tx
                .put_slice_timeout(&items[7..], Duration::from_millis(5))
                .unwrap_err();
            assert!(e.is_timeout(), "{e:?}");
            assert_eq!(e.into_inner(), &items[10..]);
            let mut all = [0u32; 16];
            assert_eq!(rx.try_get_into(&mut all), Ok(7));
            assert_eq!(all[..7], [3, 4, 5, 6, 7, 8, 9]);
        }
        // Blocking: a slice of 700 × the capacity goes through as a consumer takes (a fresh
        // queue: on the one above, the released producer role would read as a hang-up).
        let q = SpscQueue::<u32>::new(7).unwrap();
        let sum = ndshm::scope(|s| -> ndshm::Result<u64> {
            s.spawn(|| -> ndshm::Result<()> {
                q.producer()?.put_slice(&items)?;
                Ok(())
            })?;
            let rx = q.consumer()?;
            let (mut buf, mut next, mut sum) = ([0u32; 64], 0u32, 0u64);
            while let Ok(took) = rx.get_into(&mut buf) {
                assert!(took <= 7, "never more than the capacity at once");
                for &v in &buf[..took] {
                    assert_eq!(v, next);
                    next += 1;
                    sum += u64::from(v);
                }
            }
            assert_eq!(next, 5000);
            Ok(sum)
        })
        .unwrap();
        assert_eq!(sum, 4999 * 5000 / 2);
    });
}

#[test]
fn empty_slices_put_and_take_nothing_and_never_block() {
    with_deadline("spsc empty slices", || {
        let q = SpscQueue::<u64>::new(2).unwrap();
        let tx = q.producer().unwrap();
        let rx = q.consumer().unwrap();
        // On an empty queue with a live producer: nothing to wait for.
        assert_eq!(rx.try_get_into(&mut []), Ok(0));
        assert_eq!(rx.get_into(&mut []), Ok(0));
        assert_eq!(
            rx.get_into_timeout(&mut [], Duration::from_secs(3600)),
            Ok(0)
        );
        // On a full queue: an empty slice is put at once.
        tx.put_slice(&[1, 2]).unwrap();
        assert_eq!(tx.try_put_slice(&[]), Ok(0));
        tx.put_slice(&[]).unwrap();
        tx.put_slice_timeout(&[], Duration::from_secs(3600))
            .unwrap();
        assert_eq!(q.len(), 2);
        let mut buf = [0u64; 4];
        assert_eq!(rx.get_into(&mut buf), Ok(2));
        assert_eq!(buf[..2], [1, 2]);
        // A non-empty buffer on an empty queue: Empty, then Disconnected once the
        // producer let go.
        assert_eq!(rx.try_get_into(&mut buf), Err(TryGetError::Empty));
        drop(tx);
        assert_eq!(rx.try_get_into(&mut buf), Err(TryGetError::Disconnected));
        assert_eq!(rx.get_into(&mut buf), Err(GetError::Disconnected));
    });
}

#[test]
fn inherited_copies_of_the_roles_cannot_put_or_take_batches() {
    with_deadline("spsc batches from an inherited copy", || {
        let q = SpscQueue::<u16>::new(4).unwrap();
        let tx = q.producer().unwrap();
        let rx = q.consumer().unwrap();
        tx.put_slice(&[1, 2]).unwrap();
        ndshm::scope(|s| {
            s.spawn(|| {
                let e = tx.try_put_slice(&[3, 4]).unwrap_err();
                assert_eq!(e.kind(), ErrorKind::WrongProcess);
                assert_eq!(e.into_inner(), [3, 4], "nothing put: the slice comes back");
                let e = tx.put_slice(&[3, 4]).unwrap_err();
                assert_eq!(e.kind(), ErrorKind::WrongProcess);
                let mut buf = [0u16; 4];
                let e = rx.get_into(&mut buf).unwrap_err();
                assert_eq!(e.kind(), ErrorKind::WrongProcess);
                let e = rx.try_get_into(&mut buf).unwrap_err();
                assert_eq!(e.kind(), ErrorKind::WrongProcess);
            })?
            .join()
        })
        .unwrap();
        let mut buf = [0u16; 4];
        assert_eq!(rx.try_get_into(&mut buf), Ok(2));
        assert_eq!(buf[..2], [1, 2]);
    });
}

#[test]
fn a_producer_killed_inside_a_batch_put_leaves_what_it_published_then_disconnected() {
    with_deadline("spsc producer killed mid-batch", || {
        let name = Name::new("spsc-killed-mid-batch");
        let q = SpscQueue::<u64>::create(name.as_str(), 100).unwrap();
        let items: Vec<u64> = (0..10_000).collect();
        let r = ndshm::scope(|s| -> ndshm::Result<()> {
            let child = s.spawn(|| -> ndshm::Result<()> {
                // Blocks with the first 100 published: nobody takes until it is killed.
                q.producer()?.put_slice(&items)?;
                Ok(())
            })?;
            assert!(
                within_deadline(|| q.len() == 100),
                "the producer filled the queue"
            );
            // SAFETY: kill(2) of our own child.
            unsafe { libc::kill(child.pid(), libc::SIGKILL) };
            let rx = q.consumer()?;
            let (mut buf, mut next) = ([0u64; 32], 0u64);
            let end = loop {
                match rx.get_into(&mut buf) {
                    Ok(took) => {
                        for &v in &buf[..took] {
                            assert_eq!(v, next, "in order, once each");
                            next += 1;
                        }
                    }
                    Err(e) => break e,
                }
            };
            assert!(end.is_disconnected(), "{end:?}");
            assert_eq!(next, 100, "exactly what was published before the kill");
            assert_eq!(rx.get_into(&mut buf), Err(GetError::Disconnected));
            child.join()
        });
        assert!(r.unwrap_err().to_string().contains("SIGKILL"));
    });
}
