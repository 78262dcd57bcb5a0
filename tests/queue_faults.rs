//! Queues and pipes under faults: peers killed or stalled in the middle of an operation, a
//! `put` from a `Drop` during unwinding, and random bytes over the shared run-time state.
//! Every call here must return in bounded time; each scenario runs under a deadline so a
//! regression fails instead of hanging.

mod common;

use common::Name;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use ndshm::{ByteQueue, Connection, ErrorKind, SharedValue};

/// How long a scenario may take before the test fails instead of hanging.
const DEADLINE: Duration = Duration::from_secs(60);

/// Runs `f` on a thread and fails the test if it has not finished within `DEADLINE` (a
/// hung or spinning call; the thread is left behind, the test binary ends anyway).
fn within_deadline<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(r);
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(Ok(v)) => v,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("{what}: still running after {DEADLINE:?} (a hang or a spin)"),
    }
}

/// Asserts that `f` returns within `limit` (plus 1 s of slack) and returns its result.
fn timed<T>(what: &str, limit: Duration, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let r = f();
    let took = start.elapsed();
    assert!(
        took < limit + Duration::from_secs(1),
        "{what} took {took:?}, limit {limit:?}"
    );
    r
}

/// Whether `pid` is blocked in the `futex` system call (asleep on a full ring).
fn asleep_on_futex(pid: i32) -> bool {
    let want = format!("{} ", libc::SYS_futex);
    std::fs::read_to_string(format!("/proc/{pid}/syscall")).is_ok_and(|s| s.starts_with(&want))
}

/// CPU time (user + system) this thread has used.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which `ts` is.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The reproduction: a 2-slot queue; `a` is taken by a forked child inside
/// `get_with`, which is then SIGKILLed (or, with `kill == false`, left stalled: its pid is
/// returned, still alive); `b` is put and taken. The slot of `a` is still held.
fn consumer_stuck_inside_get_with(q: &ByteQueue, kill: bool) -> Option<i32> {
    let ready = SharedValue::<u32>::new(0).unwrap();
    q.put(b"a").unwrap();
    let mut stalled = None;
    let r = ndshm::scope(|s| -> ndshm::Result<_> {
        let child = s.spawn(|| {
            q.get_with(|_| {
                ready.store(1);
                std::thread::sleep(Duration::from_secs(3600));
            })
        })?;
        let pid = child.pid();
        let start = Instant::now();
        while ready.load() == 0 {
            assert!(
                start.elapsed() < DEADLINE,
                "the consumer never took the item"
            );
            std::thread::yield_now();
        }
        if kill {
            // SAFETY: kill(2) of our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return child.join();
        }
        q.put(b"b").unwrap();
        assert_eq!(q.get().unwrap(), b"b");
        stalled = Some(pid);
        // The scope would wait for the stalled child: the caller checks, then kills it.
        let more = timed("try_get with a stalled consumer", Duration::ZERO, || {
            q.try_get()
        });
        assert_eq!(more.unwrap_err().kind(), ErrorKind::Empty, "reports empty");
        let cpu = thread_cpu();
        let e = timed(
            "get_timeout(2 s) with a stalled consumer",
            Duration::from_secs(2),
            || q.get_timeout(Duration::from_secs(2)),
        );
        assert_eq!(e.unwrap_err().kind(), ErrorKind::Timeout);
        let used = thread_cpu() - cpu;
        assert!(
            used < Duration::from_secs(1),
            "get_timeout(2 s) burnt {used:?} of CPU waiting: it spins"
        );
        // try_put: the stalled slot is the next producer slot; full, in bounded time.
        let full = timed("try_put with a stalled consumer", Duration::ZERO, || {
            q.try_put(b"c")
        });
        assert_eq!(full.unwrap_err().kind(), ErrorKind::Full);
        // SAFETY: kill(2) of our own child, so that the scope can end.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        child.join()
    });
    assert!(r.unwrap_err().to_string().contains("SIGKILL"));
    if kill {
        q.put(b"b").unwrap();
        assert_eq!(q.get().unwrap(), b"b");
    }
    stalled
}

#[test]
fn consumer_killed_inside_get_with_no_call_spins() {
    within_deadline("consumer killed inside get_with", || {
        let q = ByteQueue::new(2, 64).unwrap();
        consumer_stuck_inside_get_with(&q, true);
        // Empty now: try_get says so at once (it used to spin forever).
        let e = timed("try_get", Duration::ZERO, || q.try_get()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Empty, "{e}");
        // The dead consumer's slot is recovered: the queue holds 2 items again.
        q.try_put(b"c").unwrap();
        q.try_put(b"d").unwrap();
        assert_eq!(q.lost(), 1);
        assert_eq!(q.get().unwrap(), b"c");
        assert_eq!(q.get().unwrap(), b"d");
        let e = timed("get_timeout(100 ms)", Duration::from_millis(100), || {
            q.get_timeout(Duration::from_millis(100))
        })
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout);
        q.shutdown(false);
        assert_eq!(q.get().unwrap_err().kind(), ErrorKind::Closed);
    });
}

#[test]
fn try_put_on_an_empty_queue_after_a_consumer_killed_inside_get_with() {
    within_deadline("try_put after a consumer died", || {
        let q = ByteQueue::new(2, 64).unwrap();
        consumer_stuck_inside_get_with(&q, true);
        // The first call after the death is a try_put: it recovers the slot itself.
        timed("try_put", Duration::ZERO, || q.try_put(b"c")).unwrap();
        assert_eq!(q.try_get().unwrap(), b"c");
    });
}

#[test]
fn get_after_close_with_a_consumer_killed_inside_get_with() {
    within_deadline("get after close", || {
        let q = ByteQueue::new(2, 64).unwrap();
        consumer_stuck_inside_get_with(&q, true);
        q.shutdown(false);
        let e = timed("get after close", Duration::ZERO, || q.get()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Closed);
        let e = timed("get_timeout after close", Duration::ZERO, || {
            q.get_timeout(Duration::from_secs(5))
        })
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Closed);
    });
}

#[test]
fn stalled_live_consumer_holding_the_head_slot_is_waited_for_without_spinning() {
    within_deadline("stalled consumer", || {
        let q = ByteQueue::new(2, 64).unwrap();
        let pid = consumer_stuck_inside_get_with(&q, false);
        assert!(pid.is_some());
        // Killed at the end of the scenario: now its slot comes back.
        q.put_timeout(b"c", Duration::from_secs(10)).unwrap();
        assert_eq!(q.get().unwrap(), b"c");
        assert_eq!(q.lost(), 1);
    });
}

struct PutOnDrop<'a>(&'a ByteQueue);

impl Drop for PutOnDrop<'_> {
    fn drop(&mut self) {
        self.0.put(b"from drop").unwrap();
    }
}

#[test]
fn put_from_drop_during_unwinding_is_delivered() {
    within_deadline("put from a Drop", || {
        let q = ByteQueue::new(4, 16).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _guard = PutOnDrop(&q);
            panic!("unwinding through a put");
        }));
        assert!(r.is_err());
        assert_eq!(q.try_get().unwrap(), b"from drop");
        assert_eq!(q.lost(), 0);
    });
}

#[test]
fn pipe_sender_killed_mid_message_does_not_hang_the_receiver() {
    within_deadline("pipe sender killed mid-message", || {
        let (a, b) = Connection::pair(4, 1024).unwrap();
        let r = ndshm::scope(|s| -> ndshm::Result<_> {
            let child = s.spawn(|| {
                b.send_bytes(&vec![7u8; 100_000])
                    .map_err(ndshm::Error::from)
            })?;
            let pid = child.pid();
            // The sender fills the 4 slots (4 of its 98 chunks) and sleeps for room.
            let start = Instant::now();
            while !asleep_on_futex(pid) {
                assert!(
                    start.elapsed() < DEADLINE,
                    "the sender never filled the pipe"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            // SAFETY: kill(2) of our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            child.join()
        });
        assert!(r.unwrap_err().to_string().contains("SIGKILL"));
        let e = timed(
            "recv_bytes_timeout(500 ms)",
            Duration::from_millis(500),
            || a.recv_bytes_timeout(Duration::from_millis(500)),
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
        assert_eq!(a.lost(), 1, "the partial message is counted");
        let e = timed("try_recv_bytes", Duration::ZERO, || a.try_recv_bytes()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Empty);
        // Another process sends on the dead sender's end: whole messages arrive.
        ndshm::scope(|s| -> ndshm::Result<_> {
            s.spawn(|| b.send_bytes(&vec![9u8; 5000]).map_err(ndshm::Error::from))?;
            assert_eq!(a.recv_bytes()?, vec![9u8; 5000]);
            Ok(())
        })
        .unwrap();
        assert_eq!(a.lost(), 1);
    });
}

#[test]
fn pipe_timed_receive_resumes_a_message_cut_by_its_timeout() {
    within_deadline("resumed message", || {
        let (a, b) = Connection::pair(2, 16).unwrap();
        let msg: Vec<u8> = (0..200u8).collect();
        ndshm::scope(|s| -> ndshm::Result<_> {
            s.spawn(|| b.send_bytes(&msg))?;
            // Whatever the timeouts cut, the message arrives whole, once.
            let mut got = None;
            while got.is_none() {
                match a.recv_bytes_timeout(Duration::from_micros(50)) {
                    Ok(m) => got = Some(m),
                    Err(e) => assert_eq!(e.kind(), ErrorKind::Timeout),
                }
            }
            assert_eq!(got.unwrap(), msg);
            Ok(())
        })
        .unwrap();
        assert_eq!(a.lost(), 0);
    });
}

#[test]
fn two_processes_sending_long_messages_on_one_end_do_not_interleave() {
    within_deadline("two senders", || {
        let (a, b) = Connection::pair(2, 64).unwrap();
        ndshm::scope(|s| -> ndshm::Result<_> {
            for v in [1u8, 2] {
                let b = &b;
                s.spawn(move || {
                    for _ in 0..20 {
                        b.send_bytes(&vec![v; 1000]).unwrap();
                    }
                })?;
            }
            // A third sends one-chunk messages meanwhile: they may come between the
            // chunks of a long message, and arrive whole, as does the long message.
            s.spawn(|| {
                for _ in 0..20 {
                    b.send_bytes(&[3u8; 10]).unwrap();
                }
            })?;
            let (mut long, mut short) = (0, 0);
            for _ in 0..60 {
                let m = a.recv_bytes()?;
                if m.len() == 10 {
                    assert_eq!(m, [3u8; 10]);
                    short += 1;
                } else {
                    assert_eq!(m.len(), 1000);
                    assert!(m.iter().all(|&x| x == m[0]), "chunks of two messages mixed");
                    long += 1;
                }
            }
            assert_eq!((long, short), (40, 20));
            Ok(())
        })
        .unwrap();
        assert_eq!(a.lost(), 0);
    });
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Random bytes half the time, small numbers (plausible positions) otherwise.
    fn word(&mut self) -> u64 {
        let r = self.next();
        if r & 1 == 0 {
            self.next()
        } else {
            r >> 1 & 15
        }
    }
}

/// Bytes of a ring of `slots` slots (a power of two) of stride `stride` (format 5): the
/// 256-byte header, the producers' and the consumers' claim arrays (a word per slot, whole
/// cache lines each), then the slots.
fn ring_len(slots: u64, stride: u64) -> u64 {
    256 + 2 * claims_len(slots) + slots * stride
}

fn claims_len(slots: u64) -> u64 {
    (slots * 8).next_multiple_of(64)
}

/// Byte offsets of one ring's run-time words (header words, claim words and slot headers)
/// for a ring of `slots` slots of stride `stride` at `base`.
fn run_time_words(base: u64, slots: u64, stride: u64) -> Vec<u64> {
    let mut at = vec![base + 40, base + 64, base + 128];
    at.extend((192..232).step_by(8).map(|o| base + o));
    let claims = claims_len(slots);
    for i in 0..slots {
        at.push(base + 256 + i * 8);
        at.push(base + 256 + claims + i * 8);
        at.push(base + 256 + 2 * claims + i * stride);
    }
    at
}

fn scribble(file: &std::fs::File, words: &[u64], rng: &mut Rng) {
    for &at in words {
        if rng.next() % 3 == 0 {
            file.write_at(&rng.word().to_le_bytes(), at).unwrap();
        }
    }
}

/// Accepts the outcomes a corrupted queue may give: none is a hang or a panic.
fn acceptable<E: Into<ndshm::Error>>(r: Result<(), E>) {
    if let Err(e) = r {
        let e: ndshm::Error = e.into();
        assert!(
            matches!(
                e.kind(),
                ErrorKind::Corrupt
                    | ErrorKind::Full
                    | ErrorKind::Empty
                    | ErrorKind::Timeout
                    | ErrorKind::Closed
                    | ErrorKind::Disconnected
            ),
            "{e}"
        );
    }
}

#[test]
fn random_bytes_over_a_queues_run_time_words_never_hang() {
    let name = Name::new("scribbled-q");
    let path = name.path();
    let q = ByteQueue::create(&name, 4, 32).unwrap();
    within_deadline("scribbled queue", move || {
        let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        // Slots of 8 + 32 bytes: stride 64.
        let words = run_time_words(0, 4, 64);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let ms = Duration::from_millis(10);
        for _ in 0..300 {
            scribble(&file, &words, &mut rng);
            timed("try_put", Duration::ZERO, || acceptable(q.try_put(b"x")));
            timed("try_get", Duration::ZERO, || {
                acceptable(q.try_get().map(drop))
            });
            timed("put_timeout", ms, || acceptable(q.put_timeout(b"y", ms)));
            timed("get_timeout", ms, || {
                acceptable(q.get_timeout(ms).map(drop))
            });
            let _ = (q.len(), q.lost(), q.is_closed(), q.is_shutdown());
        }
    });
}

#[test]
fn random_bytes_over_a_pipes_run_time_words_never_hang() {
    let name = Name::new("scribbled-p");
    let path = name.path();
    // Slots of 31 + 1 bytes (and an 8-byte header): stride 64; the second ring follows
    // the first.
    let a = Connection::create(&name, 4, 31).unwrap();
    within_deadline("scribbled pipe", move || {
        let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        let mut words = run_time_words(0, 4, 64);
        words.extend(run_time_words(ring_len(4, 64), 4, 64));
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let ms = Duration::from_millis(10);
        for _ in 0..300 {
            scribble(&file, &words, &mut rng);
            timed("try_send_bytes", Duration::ZERO, || {
                acceptable(a.try_send_bytes(b"short"))
            });
            timed("try_recv_bytes", Duration::ZERO, || {
                acceptable(a.try_recv_bytes().map(drop))
            });
            timed("recv_bytes_timeout", ms, || {
                acceptable(a.recv_bytes_timeout(ms).map(drop))
            });
            let _ = a.poll();
        }
    });
}

#[test]
fn random_bytes_over_a_queues_producer_table_never_hang() {
    let name = Name::new("scribbled-prod");
    let path = name.path();
    // Slots of 32 bytes: stride 64; after the ring, the producer table: its magic word,
    // then (a line further) `ever`, `overflow` and (a line further) the entries.
    let q = ByteQueue::create(&name, 4, 32).unwrap();
    within_deadline("scribbled producer table", move || {
        let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        let table = ring_len(4, 64);
        let mut words = vec![table + 64, table + 72];
        words.extend((table + 128..table + 128 + 8 * 16).step_by(8));
        words.push(224); // the ring's hang-up hint
        let mut rng = Rng(0x0bad_5eed_0bad_5eed);
        let ms = Duration::from_millis(10);
        for i in 0..300 {
            scribble(&file, &words, &mut rng);
            timed("try_put", Duration::ZERO, || acceptable(q.try_put(b"x")));
            timed("try_get", Duration::ZERO, || {
                acceptable(q.try_get().map(drop))
            });
            timed("get_timeout", ms, || {
                acceptable(q.get_timeout(ms).map(drop))
            });
            if i % 50 == 0 {
                // A producer leaving (and a new one coming) over the scribbled table.
                let other = ByteQueue::open(q.name().unwrap()).unwrap();
                timed("put_timeout", ms, || {
                    acceptable(other.put_timeout(b"y", ms))
                });
                drop(other);
            }
        }
    });
}
