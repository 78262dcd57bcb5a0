//! Measures ndshm's process-shared primitives against their anchors in one run and prints
//! a Markdown table: ping-pong round trips, item and byte throughput between a parent and
//! forked children, and single-process costs of the value, the lock and the map.
//!
//! `cargo run --release --example primitives_table` (add `-- --quick` for a short run).
//! The binary runs on its own too (`target/release/examples/primitives_table --quick`):
//! Python anchors are skipped where `python3` is missing.

use std::hint::black_box;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ndshm::{ByteQueue, Connection, Lock, Process, Queue, SharedMap, SharedValue, SpscQueue};

const STOP: u64 = u64::MAX;

/// Items/s of `0..n` moved from a producer thread (`push` until it takes each item) to
/// this thread (`pop` until it gives one), both spinning; the sum received is checked.
fn threads_rate(
    n: u64,
    mut push: impl FnMut(u64) -> bool + Send,
    mut pop: impl FnMut() -> Option<u64>,
) -> f64 {
    let start = Instant::now();
    let sum = std::thread::scope(|s| {
        s.spawn(move || {
            for i in 0..n {
                while !push(i) {
                    std::hint::spin_loop();
                }
            }
        });
        let (mut sum, mut got) = (0u64, 0u64);
        while got < n {
            match pop() {
                Some(v) => {
                    sum = sum.wrapping_add(v);
                    got += 1;
                }
                None => std::hint::spin_loop(),
            }
        }
        sum
    });
    assert_eq!(sum, n * (n - 1) / 2);
    n as f64 / start.elapsed().as_secs_f64()
}

/// Fills `buf` with the next items `i, i + 1, ...` below `n`; returns how many.
fn fill_batch(buf: &mut [u64], i: u64, n: u64) -> usize {
    let k = buf.len().min((n - i) as usize);
    for (j, v) in buf[..k].iter_mut().enumerate() {
        *v = i + j as u64;
    }
    k
}

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
    // The four 1 → 1 rates below are each the best of `BATCHES` runs of `n` (or `4 n`)
    // items, in one sitting: the anchors run in the same process right after ours.
    const BATCHES: usize = 3;
    let mut spsc_rate = 0f64;
    for _ in 0..BATCHES {
        let q = Queue::<u64>::new(1024)?;
        let go = SharedValue::<u32>::new(0)?;
        let (rate, sum) = ndshm::scope(|s| -> ndshm::Result<_> {
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
        spsc_rate = spsc_rate.max(rate);
    }
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
    // Anchors of the same run: crossbeam's MPMC ArrayQueue and the SPSC ring rtrb, 1
    // producer thread → 1 consumer thread of one process.
    let anchor_n = n;
    let crossbeam_rate = (0..BATCHES).fold(0f64, |best, _| {
        let aq = crossbeam_queue::ArrayQueue::<u64>::new(1024);
        best.max(threads_rate(anchor_n, |v| aq.push(v).is_ok(), || aq.pop()))
    });
    let rtrb_n = anchor_n * 4;
    let rtrb_rate = (0..BATCHES).fold(0f64, |best, _| {
        let (mut tx, mut rx) = rtrb::RingBuffer::<u64>::new(1024);
        best.max(threads_rate(
            rtrb_n,
            move |v| tx.push(v).is_ok(),
            || rx.pop().ok(),
        ))
    });
    // The SPSC queue across processes: a forked producer, this process consuming.
    let spsc_n = n * 4;
    let mut spsc_queue_rate = 0f64;
    for _ in 0..BATCHES {
        let sq = SpscQueue::<u64>::new(1024)?;
        let sgo = SharedValue::<u32>::new(0)?;
        let (rate, ssum) = ndshm::scope(|s| -> ndshm::Result<_> {
            s.spawn(|| -> ndshm::Result<()> {
                let tx = sq.producer()?;
                while sgo.load() == 0 {
                    std::hint::spin_loop();
                }
                for i in 0..spsc_n {
                    tx.put(i)?;
                }
                Ok(())
            })?;
            let rx = sq.consumer()?;
            let start = Instant::now();
            sgo.store(1);
            let mut sum = 0u64;
            for _ in 0..spsc_n {
                sum = sum.wrapping_add(rx.get().unwrap());
            }
            Ok((spsc_n as f64 / start.elapsed().as_secs_f64(), sum))
        })?;
        assert_eq!(ssum, spsc_n * (spsc_n - 1) / 2);
        spsc_queue_rate = spsc_queue_rate.max(rate);
    }
    // The same in batches of 64: SpscQueue's put_slice/get_into (one index publish per
    // batch, a forked producer) beside rtrb's chunk API (push_partial_slice /
    // pop_partial_slice, built on write_chunk_uninit / read_chunk), 2 threads.
    const BATCH: usize = 64;
    let batch_n = n * 8;
    let rtrb_batch_rate = (0..BATCHES).fold(0f64, |best, _| {
        best.max({
            let (mut tx, mut rx) = rtrb::RingBuffer::<u64>::new(1024);
            let start = Instant::now();
            let sum = std::thread::scope(|s| {
                s.spawn(move || {
                    let mut buf = [0u64; BATCH];
                    let mut i = 0u64;
                    while i < batch_n {
                        let k = fill_batch(&mut buf, i, batch_n);
                        let mut rest = &buf[..k];
                        while !rest.is_empty() {
                            let (_, left) = tx.push_partial_slice(rest);
                            if left.len() == rest.len() {
                                std::hint::spin_loop();
                            }
                            rest = left;
                        }
                        i += k as u64;
                    }
                });
                let mut buf = [0u64; BATCH];
                let (mut sum, mut got) = (0u64, 0u64);
                while got < batch_n {
                    let (taken, _) = rx.pop_partial_slice(&mut buf);
                    if taken.is_empty() {
                        std::hint::spin_loop();
                    }
                    for v in taken.iter() {
                        sum = sum.wrapping_add(*v);
                    }
                    got += taken.len() as u64;
                }
                sum
            });
            assert_eq!(sum, batch_n * (batch_n - 1) / 2);
            batch_n as f64 / start.elapsed().as_secs_f64()
        })
    });
    let mut spsc_batch_rate = 0f64;
    for _ in 0..BATCHES {
        let sq = SpscQueue::<u64>::new(1024)?;
        let sgo = SharedValue::<u32>::new(0)?;
        let (rate, ssum) = ndshm::scope(|s| -> ndshm::Result<_> {
            s.spawn(|| -> ndshm::Result<()> {
                let tx = sq.producer()?;
                while sgo.load() == 0 {
                    std::hint::spin_loop();
                }
                let mut buf = [0u64; BATCH];
                let mut i = 0u64;
                while i < batch_n {
                    let k = fill_batch(&mut buf, i, batch_n);
                    tx.put_slice(&buf[..k])?;
                    i += k as u64;
                }
                Ok(())
            })?;
            let rx = sq.consumer()?;
            let start = Instant::now();
            sgo.store(1);
            let mut buf = [0u64; BATCH];
            let (mut sum, mut got) = (0u64, 0u64);
            while got < batch_n {
                let k = rx.get_into(&mut buf).unwrap();
                for v in &buf[..k] {
                    sum = sum.wrapping_add(*v);
                }
                got += k as u64;
            }
            Ok((batch_n as f64 / start.elapsed().as_secs_f64(), sum))
        })?;
        assert_eq!(ssum, batch_n * (batch_n - 1) / 2);
        spsc_batch_rate = spsc_batch_rate.max(rate);
    }
    rows.push(Row {
        what: "8 B items/s, 1 producer → 1 consumer (Queue, MPMC, 2 processes, best of 3)".into(),
        ours: format!("{:.1} M/s", spsc_rate / 1e6),
        anchors: format!(
            "crossbeam ArrayQueue (MPMC, 2 threads): {:.1} M/s; OS pipe, one write per item: \
             {:.1} M/s",
            crossbeam_rate / 1e6,
            pipe_items / 1e6
        ),
        target: "≥ crossbeam ArrayQueue".into(),
        met: Some(spsc_rate >= crossbeam_rate),
    });
    rows.push(Row {
        what: "8 B items/s, 1 producer → 1 consumer (SpscQueue, producer forked, best of 3)".into(),
        ours: format!("{:.1} M/s", spsc_queue_rate / 1e6),
        anchors: format!("rtrb (SPSC, 2 threads): {:.1} M/s", rtrb_rate / 1e6),
        target: "≥ 100 M/s".into(),
        met: Some(spsc_queue_rate >= 100e6),
    });
    rows.push(Row {
        what: "8 B items/s, 1 → 1, SpscQueue batches of 64 (put_slice/get_into, producer \
               forked, best of 3)"
            .into(),
        ours: format!("{:.1} M/s", spsc_batch_rate / 1e6),
        anchors: format!(
            "rtrb chunk API, batches of 64 (push/pop_partial_slice, 2 threads): {:.1} M/s",
            rtrb_batch_rate / 1e6
        ),
        target: "≥ 100 M/s".into(),
        met: Some(spsc_batch_rate >= 100e6),
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

    rows.extend(sync_primitive_rows(scale)?);

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

// ---- the synchronisation counterparts of issue 13: Event, Barrier, Semaphore ----

/// Runs `script` with `python3 -c` and reads the one number it prints (µs or ns, as the
/// script says); `None` when Python or its multiprocessing is not available.
fn python_number(script: &str, arg: usize) -> Option<f64> {
    let out = std::process::Command::new("python3")
        .args(["-c", script, &arg.to_string()])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

const PY_EVENT: &str = r#"
import multiprocessing as mp, sys, time
def child(a, b, n):
    for _ in range(n):
        a.wait(); a.clear(); b.set()
n = int(sys.argv[1]); ctx = mp.get_context("fork")
a, b = ctx.Event(), ctx.Event()
p = ctx.Process(target=child, args=(a, b, n)); p.start()
t = time.perf_counter()
for _ in range(n):
    a.set(); b.wait(); b.clear()
dt = time.perf_counter() - t; p.join(); print(dt / n * 1e6)
"#;

const PY_JOINABLE: &str = r#"
import multiprocessing as mp, sys, time
def child(q):
    while True:
        v = q.get(); q.task_done()
        if v is None: return
n = int(sys.argv[1]); ctx = mp.get_context("fork")
q = ctx.JoinableQueue()
p = ctx.Process(target=child, args=(q,)); p.start()
t = time.perf_counter()
for i in range(n):
    q.put(i); q.join()
dt = time.perf_counter() - t; q.put(None); p.join(); print(dt / n * 1e6)
"#;

/// The `std::sync` anchor of `JoinableQueue`: a deque and an unfinished count under one
/// mutex, with one condvar for items and one for `join`.
#[derive(Default)]
struct StdJoinable {
    state: std::sync::Mutex<(std::collections::VecDeque<u64>, u64)>,
    items: std::sync::Condvar,
    done: std::sync::Condvar,
}

impl StdJoinable {
    fn put(&self, v: u64) {
        let mut g = self.state.lock().unwrap();
        g.0.push_back(v);
        g.1 += 1;
        self.items.notify_one();
    }
    fn get(&self) -> u64 {
        let mut g = self.state.lock().unwrap();
        loop {
            if let Some(v) = g.0.pop_front() {
                return v;
            }
            g = self.items.wait(g).unwrap();
        }
    }
    fn task_done(&self) {
        let mut g = self.state.lock().unwrap();
        g.1 -= 1;
        if g.1 == 0 {
            self.done.notify_all();
        }
    }
    fn join(&self) {
        let mut g = self.state.lock().unwrap();
        while g.1 != 0 {
            g = self.done.wait(g).unwrap();
        }
    }
}

const PY_BARRIER: &str = r#"
import multiprocessing as mp, sys, time
def child(b, n):
    for _ in range(n):
        b.wait()
n, k = int(sys.argv[1]) // 10, int(sys.argv[1]) % 10; ctx = mp.get_context("fork")
b = ctx.Barrier(k)
ps = [ctx.Process(target=child, args=(b, n)) for _ in range(k - 1)]
for p in ps: p.start()
b.wait()
t = time.perf_counter()
for _ in range(n - 1):
    b.wait()
dt = time.perf_counter() - t
for p in ps: p.join()
print(dt / (n - 1) * 1e6)
"#;

const PY_SEMAPHORE: &str = r#"
import multiprocessing as mp, sys, time
n = int(sys.argv[1]); s = mp.get_context("fork").Semaphore(1)
t = time.perf_counter()
for _ in range(n):
    s.acquire(); s.release()
print((time.perf_counter() - t) / n * 1e9)
"#;

/// A std event: `Mutex<bool>` + `Condvar`.
struct StdEvent {
    flag: std::sync::Mutex<bool>,
    cv: std::sync::Condvar,
}

impl StdEvent {
    fn new() -> StdEvent {
        StdEvent {
            flag: std::sync::Mutex::new(false),
            cv: std::sync::Condvar::new(),
        }
    }
    fn set(&self) {
        *self.flag.lock().unwrap() = true;
        self.cv.notify_all();
    }
    fn clear(&self) {
        *self.flag.lock().unwrap() = false;
    }
    fn wait(&self) {
        let mut f = self.flag.lock().unwrap();
        while !*f {
            f = self.cv.wait(f).unwrap();
        }
    }
}

/// A std semaphore: `Mutex<u32>` + `Condvar`.
struct StdSemaphore {
    value: std::sync::Mutex<u32>,
    cv: std::sync::Condvar,
}

impl StdSemaphore {
    fn acquire(&self) {
        let mut v = self.value.lock().unwrap();
        while *v == 0 {
            v = self.cv.wait(v).unwrap();
        }
        *v -= 1;
    }
    fn release(&self) {
        *self.value.lock().unwrap() += 1;
        self.cv.notify_one();
    }
}

/// The target cell and verdict of a row measured against std and Python: each goal with
/// its own answer, so that a miss says which one.
fn std_py_target(ours: f64, std_anchor: f64, py: Option<f64>) -> (String, Option<bool>) {
    let std_ok = ours <= 2.0 * std_anchor;
    let py_ok = py.map(|p| p >= 50.0 * ours);
    let yn = |b: bool| if b { "yes" } else { "no" };
    let target = format!(
        "≤ 2× std ({}), ≥ 50× faster than Python ({})",
        yn(std_ok),
        py_ok.map_or("n/a", yn)
    );
    (target, Some(std_ok && py_ok.unwrap_or(true)))
}

fn sync_primitive_rows(scale: usize) -> ndshm::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let fmt_py = |v: Option<f64>, unit: &str| {
        v.map_or("Python: n/a".to_string(), |p| {
            format!("Python {p:.1} {unit}")
        })
    };

    // Event: set → wait wake-up, ping-pong between two processes (two wake-ups a round).
    let rounds = 20_000 / scale;
    let (a, b) = (ndshm::Event::new()?, ndshm::Event::new()?);
    let ours = ndshm::scope(|s| -> ndshm::Result<_> {
        s.spawn(|| {
            for _ in 0..rounds + rounds / 10 {
                a.wait();
                a.clear();
                b.set();
            }
        })?;
        Ok(time_rounds(rounds, |_| {
            a.set();
            b.wait();
            b.clear();
        }))
    })?;
    let (sa, sb) = (StdEvent::new(), StdEvent::new());
    let std_rtt = std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..rounds + rounds / 10 {
                sa.wait();
                sa.clear();
                sb.set();
            }
        });
        time_rounds(rounds, |_| {
            sa.set();
            sb.wait();
            sb.clear();
        })
    });
    let py = python_number(PY_EVENT, 2_000 / scale);
    rows.push(Row {
        what: "Event set → wait ping-pong round trip (2 wake-ups), median: 2 processes".into(),
        ours: format!("{ours:.2} µs"),
        anchors: format!(
            "std Mutex+Condvar event, 2 threads {std_rtt:.2} µs (×{:.2}); {}",
            ours / std_rtt,
            fmt_py(py, "µs")
        ) + &py.map_or(String::new(), |p| format!(" (÷{:.0})", p / ours)),
        target: std_py_target(ours, std_rtt, py).0,
        met: std_py_target(ours, std_rtt, py).1,
    });

    // Barrier: time per round with k parties (k - 1 forked children + the caller).
    for k in [2u32, 4] {
        let n = 20_000 / scale;
        let bar = ndshm::Barrier::new(k)?;
        let ours = ndshm::scope(|s| -> ndshm::Result<_> {
            for _ in 1..k {
                s.spawn(|| -> ndshm::Result<()> {
                    for _ in 0..n + 1 {
                        bar.wait()?;
                    }
                    Ok(())
                })?;
            }
            bar.wait()?;
            let t = Instant::now();
            for _ in 0..n {
                bar.wait()?;
            }
            Ok(t.elapsed().as_secs_f64() * 1e6 / n as f64)
        })?;
        let sbar = std::sync::Barrier::new(k as usize);
        let std_round = std::thread::scope(|s| {
            for _ in 1..k {
                s.spawn(|| {
                    for _ in 0..n + 1 {
                        sbar.wait();
                    }
                });
            }
            sbar.wait();
            let t = Instant::now();
            for _ in 0..n {
                sbar.wait();
            }
            t.elapsed().as_secs_f64() * 1e6 / n as f64
        });
        let py = python_number(PY_BARRIER, (2_000 / scale) * 10 + k as usize);
        rows.push(Row {
            what: format!("Barrier round, {k} processes (mean per round)"),
            ours: format!("{ours:.2} µs"),
            anchors: format!(
                "std Barrier, {k} threads {std_round:.2} µs (×{:.2}); {}",
                ours / std_round,
                fmt_py(py, "µs")
            ) + &py.map_or(String::new(), |p| format!(" (÷{:.0})", p / ours)),
            target: std_py_target(ours, std_round, py).0,
            met: std_py_target(ours, std_round, py).1,
        });
    }

    // Semaphore: acquire + release, uncontended, one process.
    let ops = 20_000_000u64 / scale as u64;
    let sem = ndshm::Semaphore::new(1)?;
    let t = Instant::now();
    for _ in 0..ops {
        black_box(&sem).acquire();
        black_box(&sem).release()?;
    }
    let ours = t.elapsed().as_secs_f64() * 1e9 / ops as f64;
    let ssem = StdSemaphore {
        value: std::sync::Mutex::new(1),
        cv: std::sync::Condvar::new(),
    };
    let t = Instant::now();
    for _ in 0..ops {
        black_box(&ssem).acquire();
        black_box(&ssem).release();
    }
    let std_pair = t.elapsed().as_secs_f64() * 1e9 / ops as f64;
    let py = python_number(PY_SEMAPHORE, 200_000 / scale);
    rows.push(Row {
        what: "Semaphore acquire + release, uncontended".into(),
        ours: format!("{ours:.2} ns"),
        anchors: format!(
            "std Mutex+Condvar semaphore {std_pair:.2} ns (×{:.2}); {}",
            ours / std_pair,
            fmt_py(py, "ns")
        ) + &py.map_or(String::new(), |p| format!(" (÷{:.0})", p / ours)),
        target: std_py_target(ours, std_pair, py).0,
        met: std_py_target(ours, std_pair, py).1,
    });

    // JoinableQueue: put → get + task_done in another process → join returns.
    let rounds = 20_000 / scale;
    let q = ndshm::JoinableQueue::<u64>::new(4)?;
    let ours = ndshm::scope(|s| -> ndshm::Result<_> {
        s.spawn(|| -> ndshm::Result<()> {
            loop {
                let v = q.get()?;
                q.task_done()?;
                if v == u64::MAX {
                    return Ok(());
                }
            }
        })?;
        let rtt = time_rounds(rounds, |i| {
            q.put(i).unwrap();
            q.join().unwrap();
        });
        q.put(u64::MAX).map_err(ndshm::Error::from)?;
        Ok(rtt)
    })?;
    let sq = StdJoinable::default();
    let std_rtt = std::thread::scope(|s| {
        s.spawn(|| loop {
            let v = sq.get();
            sq.task_done();
            if v == u64::MAX {
                break;
            }
        });
        let rtt = time_rounds(rounds, |i| {
            sq.put(i);
            sq.join();
        });
        sq.put(u64::MAX);
        rtt
    });
    let py = python_number(PY_JOINABLE, 2_000 / scale);
    rows.push(Row {
        what: "JoinableQueue put → get + task_done → join round trip, median: 2 processes".into(),
        ours: format!("{ours:.2} µs"),
        anchors: format!(
            "std Mutex+Condvar joinable queue, 2 threads {std_rtt:.2} µs (×{:.2}); {}",
            ours / std_rtt,
            fmt_py(py, "µs")
        ) + &py.map_or(String::new(), |p| format!(" (÷{:.0})", p / ours)),
        target: std_py_target(ours, std_rtt, py).0,
        met: std_py_target(ours, std_rtt, py).1,
    });
    Ok(rows)
}
