//! Criterion benchmarks of the process-shared primitives and their in-process anchors.
//! The cross-process table (ping-pong, throughput vs UnixStream, pipes, ipc-channel) is
//! `cargo run --release --example primitives_table`.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ndshm::{Lock, Queue, SharedMap, SharedValue, SpscQueue};

fn value_and_lock(c: &mut Criterion) {
    let mut g = c.benchmark_group("uncontended");
    let v = SharedValue::<u64>::new(0).unwrap();
    g.bench_function("SharedValue::fetch_add", |b| b.iter(|| v.fetch_add(1)));
    let a = AtomicU64::new(0);
    g.bench_function("AtomicU64::fetch_add", |b| {
        b.iter(|| black_box(&a).fetch_add(1, Ordering::AcqRel))
    });
    let l = Lock::new().unwrap();
    g.bench_function("Lock lock+unlock", |b| b.iter(|| drop(black_box(l.lock()))));
    let m = std::sync::Mutex::new(());
    g.bench_function("std Mutex lock+unlock", |b| {
        b.iter(|| drop(black_box(&m).lock().unwrap()))
    });
    let map = SharedMap::<u64, u64>::new(1 << 16).unwrap();
    for k in 0..50_000u64 {
        map.insert(&k, k).unwrap();
    }
    let mut k = 0u64;
    g.bench_function("SharedMap get", |b| {
        b.iter(|| {
            k = (k + 7919) % 50_000;
            map.get(&k).unwrap()
        })
    });
    g.bench_function("SharedMap insert (replace)", |b| {
        b.iter(|| {
            k = (k + 7919) % 50_000;
            map.insert(&k, k).unwrap()
        })
    });
    let q = Queue::<u64>::new(1024).unwrap();
    g.bench_function("Queue try_put+try_get, one process", |b| {
        b.iter(|| {
            q.try_put(1).unwrap();
            q.try_get().unwrap()
        })
    });
    // The SPSC queue beside its anchors: rtrb (SPSC) and crossbeam's ArrayQueue (MPMC),
    // one item in and out per iteration, one thread.
    let sq = SpscQueue::<u64>::new(1024).unwrap();
    let (tx, rx) = (sq.producer().unwrap(), sq.consumer().unwrap());
    g.bench_function("SpscQueue try_put+try_get, one process", |b| {
        b.iter(|| {
            tx.try_put(black_box(1)).unwrap();
            rx.try_get().unwrap()
        })
    });
    let (mut rp, mut rc) = rtrb::RingBuffer::<u64>::new(1024);
    g.bench_function("rtrb push+pop", |b| {
        b.iter(|| {
            rp.push(black_box(1)).unwrap();
            rc.pop().unwrap()
        })
    });
    let aq = crossbeam_queue::ArrayQueue::<u64>::new(1024);
    g.bench_function("crossbeam ArrayQueue push+pop", |b| {
        b.iter(|| {
            aq.push(black_box(1)).unwrap();
            aq.pop().unwrap()
        })
    });
    g.finish();
}

fn ping_pong(c: &mut Criterion) {
    let req = Queue::<u64>::new(4).unwrap();
    let resp = Queue::<u64>::new(4).unwrap();
    ndshm::scope(|s| -> ndshm::Result<_> {
        s.spawn(|| {
            while let Ok(v) = req.get() {
                if resp.put(v).is_err() {
                    break;
                }
            }
        })?;
        c.bench_function("Queue ping-pong 8 B round trip (forked child)", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for i in 0..iters {
                    req.put(i).unwrap();
                    black_box(resp.get().unwrap());
                }
                start.elapsed()
            })
        });
        req.shutdown(false);
        resp.shutdown(false);
        Ok(())
    })
    .unwrap();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = value_and_lock, ping_pong
}
criterion_main!(benches);
