//! Hot-path timings of the queues, for before/after comparisons of the ring (issue 14's
//! "speed must not regress"): in one process, `Queue<u64>` `try_put`+`try_get` and
//! `ByteQueue` `try_put`+`get_with` pairs (best of 30 batches, ns per pair); across
//! processes, 8-byte items/s from 1 producer to 1 consumer (`Queue<u64>` of 1024 slots,
//! best of 5 runs).
//!
//! `cargo run --release --example queue_hotpath` (add `-- --quick` for a short run,
//! `--one-process` to skip the cross-process run, e.g. under `perf stat`).
//! Written against the public API only, so the same file builds on older commits.

use std::hint::black_box;
use std::time::Instant;

use ndshm::{ByteQueue, Queue, SharedValue};

fn best_ns(batches: usize, per: u64, mut f: impl FnMut()) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..batches {
        let start = Instant::now();
        for _ in 0..per {
            f();
        }
        best = best.min(start.elapsed().as_nanos() as f64 / per as f64);
    }
    best
}

fn main() -> ndshm::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let per = if quick { 50_000 } else { 200_000 };

    let q = Queue::<u64>::new(1024)?;
    let pair = best_ns(30, per, || {
        assert!(q.try_put(black_box(1)).is_ok());
        match q.try_get() {
            Ok(v) => {
                black_box(v);
            }
            Err(_) => panic!("empty"),
        }
    });
    println!("Queue<u64> try_put+try_get, one process: {pair:.1} ns");

    let bq = ByteQueue::new(1024, 64)?;
    let msg = [7u8; 8];
    let bpair = best_ns(30, per, || {
        assert!(bq.try_put(black_box(&msg)).is_ok());
        match bq.get_with(|m| m.len()) {
            Ok(n) => {
                black_box(n);
            }
            Err(_) => panic!("empty"),
        }
    });
    println!("ByteQueue try_put+get_with (8 B), one process: {bpair:.1} ns");

    if std::env::args().any(|a| a == "--one-process") {
        return Ok(());
    }
    let n = if quick { 400_000u64 } else { 4_000_000 };
    let mut best = 0f64;
    for _ in 0..5 {
        let q = Queue::<u64>::new(1024)?;
        let go = SharedValue::<u32>::new(0)?;
        let rate = ndshm::scope(|s| -> ndshm::Result<f64> {
            s.spawn(|| {
                while go.load() == 0 {
                    std::hint::spin_loop();
                }
                for i in 0..n {
                    assert!(q.put(i).is_ok());
                }
            })?;
            let start = Instant::now();
            go.store(1);
            let mut sum = 0u64;
            for _ in 0..n {
                match q.get() {
                    Ok(v) => sum = sum.wrapping_add(v),
                    Err(_) => panic!("closed"),
                }
            }
            let rate = n as f64 / start.elapsed().as_secs_f64();
            assert_eq!(sum, n * (n - 1) / 2);
            Ok(rate)
        })?;
        best = best.max(rate);
    }
    println!(
        "Queue<u64> 1 producer -> 1 consumer across processes: {:.1} M/s (best of 5)",
        best / 1e6
    );
    Ok(())
}
