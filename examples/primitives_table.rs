//! Measures ndshm's process-shared primitives against their anchors in one run and prints
//! a Markdown table: ping-pong round trips, item and byte throughput between a parent and
//! forked children, and single-process costs of the value, the lock and the map.
//!
//! `cargo run --release --example primitives_table` (add `-- --quick` for a short run).

use std::hint::black_box;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ndshm::{ByteQueue, Connection, Lock, Process, Queue, SharedMap, SharedValue};

const STOP: u64 = u64::MAX;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Times `rounds` round trips (after `rounds / 10` warm-up ones), one by one; median in µs.
fn time_rounds(rounds: usize, mut round_trip: impl FnMut(u64)) -> f64 {
    for i in 0..rounds / 10 {
        round_trip(i as u64);
    }
    let mut t = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let s = Instant::now();
        round_trip(i as u64);
        t.push(s.elapsed().as_secs_f64() * 1e6);
    }
    median(t)
}

fn os_pipe() -> (std::fs::File, std::fs::File) {
    let (r, w) = nix::unistd::pipe().expect("pipe");
    (std::fs::File::from(r), std::fs::File::from(w))
}

/// Median round trip of an 8-byte message over a byte stream: the parent writes to
/// `to_child` and reads `from_child`; a forked child reads `child_in` and echoes each
/// message to `child_out` until it reads `STOP`.
fn stream_rtt(
    rounds: usize,
    mut to_child: impl Write,
    mut from_child: impl Read,
    mut child_in: impl Read + 'static,
    mut child_out: impl Write + 'static,
) -> ndshm::Result<f64> {
    let child = Process::spawn(move || {
        let mut buf = [0u8; 8];
        while child_in.read_exact(&mut buf).is_ok() && u64::from_le_bytes(buf) != STOP {
            child_out.write_all(&buf).unwrap();
        }
    })?;
    let m = time_rounds(rounds, |i| {
        to_child.write_all(&i.to_le_bytes()).unwrap();
        let mut buf = [0u8; 8];
        from_child.read_exact(&mut buf).unwrap();
    });
    to_child.write_all(&STOP.to_le_bytes()).unwrap();
    child.join()?;
    Ok(m)
}

struct Row {
    what: String,
    ours: String,
    anchors: String,
    target: String,
    met: Option<bool>,
}

fn main() -> ndshm::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick { 10 } else { 1 };
    let mut rows = Vec::new();

    // ---- ping-pong, 8 bytes, parent <-> forked child ----
    let rounds = 20_000 / scale;
    let q_req = Queue::<u64>::new(4)?;
    let q_resp = Queue::<u64>::new(4)?;
    let queue_rtt = ndshm::scope(|s| -> ndshm::Result<_> {
        s.spawn(|| {
            while let Ok(v) = q_req.get() {
                if v == STOP {
                    break;
                }
                q_resp.put(v).unwrap();
            }
        })?;
        let m = time_rounds(rounds, |i| {
            q_req.put(i).unwrap();
            assert_eq!(q_resp.get().unwrap(), i);
        });
        q_req.put(STOP).unwrap();
        Ok(m)
    })?;
    let (a, b) = ndshm::pipe()?;
    let pipe_rtt = ndshm::scope(|s| -> ndshm::Result<_> {
        s.spawn(|| -> ndshm::Result<()> {
            loop {
                let v: u64 = b.recv()?;
                if v == STOP {
                    return Ok(());
                }
                b.send(v)?;
            }
        })?;
        let m = time_rounds(rounds, |i| {
            a.send(i).unwrap();
            assert_eq!(a.recv::<u64>().unwrap(), i);
        });
        a.send(STOP)?;
        Ok(m)
    })?;
    let anchor_rounds = 5_000 / scale;
    let unix_rtt = {
        let (p, c) = UnixStream::pair().unwrap();
        let (p_in, c_in) = (p.try_clone().unwrap(), c.try_clone().unwrap());
        stream_rtt(anchor_rounds, p, p_in, c_in, c)?
    };
    let pipe_os_rtt = {
        let (r1, w1) = os_pipe();
        let (r2, w2) = os_pipe();
        stream_rtt(anchor_rounds, w1, r2, r1, w2)?
    };
    let ipc_rtt = {
        let (tx1, rx1) = ipc_channel::ipc::bytes_channel().unwrap();
        let (tx2, rx2) = ipc_channel::ipc::bytes_channel().unwrap();
        let child = Process::spawn(move || {
            while let Ok(m) = rx1.recv() {
                if m.len() != 8 || m == STOP.to_le_bytes() {
                    break;
                }
                tx2.send(&m).unwrap();
            }
        })?;
        let m = time_rounds(anchor_rounds, |i| {
            tx1.send(&i.to_le_bytes()).unwrap();
            rx2.recv().unwrap();
        });
        tx1.send(&STOP.to_le_bytes()).unwrap();
        child.join()?;
        m
    };
    let anchors = format!(
        "UnixStream {unix_rtt:.1} µs, OS pipe {pipe_os_rtt:.1} µs, ipc-channel {ipc_rtt:.1} µs"
    );
    rows.push(Row {
        what: "ping-pong 8 B round trip, median: Queue".into(),
        ours: format!("{queue_rtt:.2} µs"),
        anchors: anchors.clone(),
        target: "≤ 1 µs".into(),
        met: Some(queue_rtt <= 1.0),
    });
    rows.push(Row {
        what: "ping-pong 8 B round trip, median: Pipe".into(),
        ours: format!("{pipe_rtt:.2} µs"),
        anchors,
        target: "≤ 1 µs".into(),
        met: Some(pipe_rtt <= 1.0),
    });

    // ---- 8-byte items/s ----
    let n = 4_000_000u64 / scale as u64;
    let q = Queue::<u64>::new(1024)?;
    let go = SharedValue::<u32>::new(0)?;
    let (spsc_rate, sum) = ndshm::scope(|s| -> ndshm::Result<_> {
        s.spawn(|| {
            while go.load() == 0 {
                std::hint::spin_loop();
            }
            for i in 0..n {
                q.put(i).unwrap();
            }
        })?;
        let start = Instant::now();
        go.store(1);
        let mut sum = 0u64;
        for _ in 0..n {
            sum = sum.wrapping_add(q.get().unwrap());
        }
        Ok((n as f64 / start.elapsed().as_secs_f64(), sum))
    })?;
    assert_eq!(sum, n * (n - 1) / 2);
    let total = SharedValue::<u64>::new(0)?;
    let q4 = Queue::<u64>::new(1024)?;
    let go4 = SharedValue::<u32>::new(0)?;
    let mpmc_rate = {
        let start = std::cell::Cell::new(Instant::now());
        ndshm::scope(|s| -> ndshm::Result<_> {
            for _ in 0..4 {
                s.spawn(|| {
                    while go4.load() == 0 {
                        std::hint::spin_loop();
                    }
                    let mut c = 0;
                    while q4.get().is_ok() {
                        c += 1;
                    }
                    total.fetch_add(c);
                })?;
            }
            ndshm::scope(|p| -> ndshm::Result<_> {
                for _ in 0..4 {
                    p.spawn(|| {
                        while go4.load() == 0 {
                            std::hint::spin_loop();
                        }
                        for i in 0..n / 4 {
                            q4.put(i).unwrap();
                        }
                    })?;
                }
                start.set(Instant::now());
                go4.store(1);
                Ok(())
            })?;
            q4.shutdown(false);
            Ok(())
        })?;
        n as f64 / start.get().elapsed().as_secs_f64()
    };
    assert_eq!(total.load(), n);
    let pipe_items = {
        let (mut r, mut w) = os_pipe();
        let m = n / 4;
        let child = Process::spawn(move || {
            for i in 0..m {
                w.write_all(&i.to_le_bytes()).unwrap();
            }
        })?;
        let start = Instant::now();
        let mut buf = [0u8; 8];
        for _ in 0..m {
            r.read_exact(&mut buf).unwrap();
        }
        let rate = m as f64 / start.elapsed().as_secs_f64();
        child.join()?;
        rate
    };
    rows.push(Row {
        what: "8 B items/s, 1 producer → 1 consumer (Queue)".into(),
        ours: format!("{:.1} M/s", spsc_rate / 1e6),
        anchors: format!("OS pipe, one write per item: {:.1} M/s", pipe_items / 1e6),
        target: "≥ 20 M/s".into(),
        met: Some(spsc_rate >= 20e6),
    });
    rows.push(Row {
        what: "8 B items/s, 4 producers × 4 consumers, total (Queue)".into(),
        ours: format!("{:.1} M/s", mpmc_rate / 1e6),
        anchors: "8 processes on this machine's cores".into(),
        target: "report".into(),
        met: None,
    });

    // ---- 64 KiB messages ----
    const MSG: usize = 64 * 1024;
    let msgs = 20_000usize / scale;
    let gbs = |t: Duration| (msgs * MSG) as f64 / t.as_secs_f64() / 1e9;
    let bq = ByteQueue::new(16, MSG)?;
    let bq_copy = ndshm::scope(|s| -> ndshm::Result<_> {
        s.spawn(|| {
            let buf = vec![7u8; MSG];
            for _ in 0..msgs {
                bq.put(&buf).unwrap();
            }
        })?;
        let start = Instant::now();
        let mut out = Vec::with_capacity(MSG);
        for _ in 0..msgs {
            bq.get_into(&mut out).unwrap();
            black_box(&out);
        }
        Ok(gbs(start.elapsed()))
    })?;
    let bq_zero = ndshm::scope(|s| -> ndshm::Result<_> {
        s.spawn(|| {
            let buf = vec![7u8; MSG];
            for _ in 0..msgs {
                bq.put(&buf).unwrap();
            }
        })?;
        let start = Instant::now();
        let mut acc = 0u64;
        for _ in 0..msgs {
            // Zero copy: read one byte per cache line in place.
            acc += bq
                .get_with(|m| m.iter().step_by(64).map(|&b| b as u64).sum::<u64>())
                .unwrap();
        }
        black_box(acc);
        Ok(gbs(start.elapsed()))
    })?;
    let (pa, pb) = Connection::pair(16, MSG)?;
    let pipe_copy = ndshm::scope(|s| -> ndshm::Result<_> {
        s.spawn(|| {
            let buf = vec![7u8; MSG];
            for _ in 0..msgs {
                pb.send_bytes(&buf).unwrap();
            }
        })?;
        let start = Instant::now();
        let mut out = Vec::with_capacity(MSG);
        for _ in 0..msgs {
            pa.recv_bytes_into(&mut out).unwrap();
            black_box(&out);
        }
        Ok(gbs(start.elapsed()))
    })?;
    let unix_big = {
        let (mut p, mut c) = UnixStream::pair().unwrap();
        let child = Process::spawn(move || {
            let buf = vec![7u8; MSG];
            for _ in 0..msgs {
                c.write_all(&buf).unwrap();
            }
        })?;
        let start = Instant::now();
        let mut out = vec![0u8; MSG];
        for _ in 0..msgs {
            p.read_exact(&mut out).unwrap();
        }
        let r = gbs(start.elapsed());
        child.join()?;
        r
    };
    let pipe_big = {
        let (mut r, mut w) = os_pipe();
        let child = Process::spawn(move || {
            let buf = vec![7u8; MSG];
            for _ in 0..msgs {
                w.write_all(&buf).unwrap();
            }
        })?;
        let start = Instant::now();
        let mut out = vec![0u8; MSG];
        for _ in 0..msgs {
            r.read_exact(&mut out).unwrap();
        }
        let rr = gbs(start.elapsed());
        child.join()?;
        rr
    };
    let ipc_big = {
        let (tx, rx) = ipc_channel::ipc::bytes_channel().unwrap();
        let child = Process::spawn(move || {
            let buf = vec![7u8; MSG];
            for _ in 0..msgs {
                tx.send(&buf).unwrap();
            }
        })?;
        let start = Instant::now();
        for _ in 0..msgs {
            black_box(rx.recv().unwrap());
        }
        let r = gbs(start.elapsed());
        child.join()?;
        r
    };
    let anchors =
        format!("UnixStream {unix_big:.1}, OS pipe {pipe_big:.1}, ipc-channel {ipc_big:.1} GB/s");
    rows.push(Row {
        what: "64 KiB messages, copied in and out: ByteQueue".into(),
        ours: format!("{bq_copy:.1} GB/s"),
        anchors: anchors.clone(),
        target: "≥ 10 GB/s".into(),
        met: Some(bq_copy >= 10.0),
    });
    rows.push(Row {
        what: "64 KiB messages, copied in and out: Pipe".into(),
        ours: format!("{pipe_copy:.1} GB/s"),
        anchors,
        target: "≥ 10 GB/s".into(),
        met: Some(pipe_copy >= 10.0),
    });
    rows.push(Row {
        what: "64 KiB messages, zero-copy receive (ByteQueue::get_with)".into(),
        ours: format!("{bq_zero:.1} GB/s"),
        anchors: "(reader touches one byte per cache line)".into(),
        target: "report".into(),
        met: None,
    });

    // ---- single-process costs ----
    let ops = 20_000_000u64 / scale as u64;
    let per_op = |t: Duration, n: u64| t.as_secs_f64() * 1e9 / n as f64;
    let v = SharedValue::<u64>::new(0)?;
    let s = Instant::now();
    for _ in 0..ops {
        black_box(v.fetch_add(1));
    }
    let shared_add = per_op(s.elapsed(), ops);
    let a = AtomicU64::new(0);
    let s = Instant::now();
    for _ in 0..ops {
        black_box(black_box(&a).fetch_add(1, Ordering::AcqRel));
    }
    let std_add = per_op(s.elapsed(), ops);
    rows.push(Row {
        what: "fetch_add, uncontended: SharedValue<u64>".into(),
        ours: format!("{shared_add:.2} ns"),
        anchors: format!("AtomicU64 {std_add:.2} ns (×{:.2})", shared_add / std_add),
        target: "≤ 1.2×".into(),
        met: Some(shared_add <= 1.2 * std_add),
    });
    let lock = Lock::new()?;
    let s = Instant::now();
    for _ in 0..ops {
        drop(black_box(lock.lock()));
    }
    let ours_lock = per_op(s.elapsed(), ops);
    let m = std::sync::Mutex::new(());
    let s = Instant::now();
    for _ in 0..ops {
        drop(black_box(black_box(&m).lock().unwrap()));
    }
    let std_lock = per_op(s.elapsed(), ops);
    rows.push(Row {
        what: "lock + unlock, uncontended: Lock".into(),
        ours: format!("{ours_lock:.2} ns"),
        anchors: format!("std Mutex {std_lock:.2} ns (×{:.2})", ours_lock / std_lock),
        target: "≤ 2×".into(),
        met: Some(ours_lock <= 2.0 * std_lock),
    });
    let keys = 100_000u64 / scale as u64;
    let map = SharedMap::<u64, u64>::new(keys as usize * 2)?;
    let s = Instant::now();
    for k in 0..keys {
        map.insert(&k, k).unwrap();
    }
    let ins = per_op(s.elapsed(), keys);
    let s = Instant::now();
    for k in 0..keys {
        black_box(map.get(&k).unwrap());
    }
    let look = per_op(s.elapsed(), keys);
    let std_map = std::sync::Mutex::new(std::collections::HashMap::new());
    let s = Instant::now();
    for k in 0..keys {
        std_map.lock().unwrap().insert(k, k);
    }
    let std_ins = per_op(s.elapsed(), keys);
    rows.push(Row {
        what: "SharedMap<u64, u64> insert / lookup, uncontended".into(),
        ours: format!("{ins:.0} ns / {look:.0} ns"),
        anchors: format!("Mutex<HashMap> insert {std_ins:.0} ns; Python Manager dict 36–54 µs"),
        target: "≤ 1 µs".into(),
        met: Some(ins <= 1000.0 && look <= 1000.0),
    });

    println!("| measurement | ndshm | anchors (same run) | target | met |");
    println!("|---|---|---|---|---|");
    for r in rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        };
        println!(
            "| {} | {} | {} | {} | {} |",
            r.what, r.ours, r.anchors, r.target, met
        );
    }
    Ok(())
}
