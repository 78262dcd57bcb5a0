//! Squares in place on a shared-memory array: serial, rayon, fork per call and the warm
//! pool, over sizes 1e3 … 1e8 f64; the tiny-job round trip; an uneven workload.
//!
//! `cargo bench --bench squares` (all), or e.g. `cargo bench --bench squares -- tiny`.
//! Executors: `NDSHM_BENCH_WORKERS` (default: the CPUs this process may use), the caller
//! included, as in `examples/squares.rs`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::{ArrayViewMut1, Ix1};
use ndshm::{fork_chunks, ChunkPlan, SharedNdArray, WorkerPool};
use rayon::prelude::*;

#[path = "../examples/shared/squares_kernels.rs"]
mod squares_kernels;
use squares_kernels::{split, square, uneven};

fn workers() -> usize {
    std::env::var("NDSHM_BENCH_WORKERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}

fn name(tag: &str) -> String {
    format!("bench-{}-{tag}", std::process::id())
}

fn squares(c: &mut Criterion) {
    // The rayon pools below start threads before the fork-per-call benchmarks fork.
    // SAFETY: the forked kernels only compute on their chunk: no printing, no rayon, no
    // lock another thread may hold.
    unsafe { ndshm::allow_fork_with_threads() };
    let w = workers();
    let tp = rayon::ThreadPoolBuilder::new()
        .num_threads(w)
        .build()
        .unwrap();
    let mut pool = WorkerPool::new(w).unwrap();
    let mut group = c.benchmark_group("square_in_place");
    for exp in 3..=8u32 {
        let n = 10usize.pow(exp);
        if exp >= 7 {
            group.sample_size(10);
            group.warm_up_time(Duration::from_secs(1));
            group.measurement_time(Duration::from_secs(3));
        }
        group.throughput(Throughput::Bytes(16 * n as u64));
        let mut a = SharedNdArray::<f64, Ix1>::from_array(
            &name("sq"),
            &ndarray::Array1::range(0.0, n as f64, 1.0),
        )
        .unwrap();
        let plan = ChunkPlan::balanced(n, w).unwrap();
        group.bench_function(BenchmarkId::new("serial", n), |b| {
            // The whole range as one chunk (a chunk is built by its plan).
            let whole = ChunkPlan::balanced(n, 1).unwrap().get(0).expect("n > 0");
            b.iter(|| square(whole, a.view_mut(), &()))
        });
        group.bench_function(BenchmarkId::new("rayon", n), |b| {
            b.iter(|| {
                let chunks = split(a.as_slice_mut().unwrap(), &plan);
                tp.install(|| {
                    chunks
                        .into_par_iter()
                        .for_each(|(c, d)| square(c, ArrayViewMut1::from(d), &()))
                })
            })
        });
        group.bench_function(BenchmarkId::new("fork_per_call", n), |b| {
            b.iter(|| fork_chunks(&mut a, &plan, |c, v| square(c, v, &())).unwrap())
        });
        group.bench_function(BenchmarkId::new("pool", n), |b| {
            b.iter(|| pool.map(&mut a, &plan, (), square).unwrap())
        });
    }
    group.finish();
}

fn tiny(c: &mut Criterion) {
    let w = workers();
    let tp = rayon::ThreadPoolBuilder::new()
        .num_threads(w)
        .build()
        .unwrap();
    let mut pool = WorkerPool::new(w).unwrap();
    let mut a = SharedNdArray::<f64, Ix1>::zeros(&name("tiny"), 1000).unwrap();
    let plan = ChunkPlan::balanced(1000, 2).unwrap();
    let mut group = c.benchmark_group("tiny_job_1000x2");
    group.bench_function("pool_dispatch_forced", |b| {
        pool.set_inline_below(0);
        b.iter(|| pool.map(&mut a, &plan, (), square).unwrap())
    });
    group.bench_function("pool_inline_shortcut", |b| {
        pool.set_inline_below(4096);
        b.iter(|| pool.map(&mut a, &plan, (), square).unwrap());
        pool.set_inline_below(0);
    });
    group.bench_function("rayon_from_main", |b| {
        b.iter(|| {
            let chunks = split(a.as_slice_mut().unwrap(), &plan);
            tp.install(|| {
                chunks
                    .into_par_iter()
                    .for_each(|(c, d)| square(c, ArrayViewMut1::from(d), &()))
            })
        })
    });
    group.bench_function("rayon_inside_pool", |b| {
        tp.install(|| {
            b.iter(|| {
                let chunks = split(a.as_slice_mut().unwrap(), &plan);
                chunks
                    .into_par_iter()
                    .for_each(|(c, d)| square(c, ArrayViewMut1::from(d), &()))
            })
        })
    });
    group.finish();
}

fn uneven_work(c: &mut Criterion) {
    let w = workers();
    let tp = rayon::ThreadPoolBuilder::new()
        .num_threads(w)
        .build()
        .unwrap();
    let mut pool = WorkerPool::new(w).unwrap();
    let n = 1_000_000;
    let mut a = SharedNdArray::<f64, Ix1>::zeros(&name("uneven"), n).unwrap();
    let plan = ChunkPlan::balanced(n, 64).unwrap();
    let mut group = c.benchmark_group("uneven_1e6_64_chunks");
    group.sample_size(10);
    group.bench_function("rayon", |b| {
        b.iter(|| {
            let chunks = split(a.as_slice_mut().unwrap(), &plan);
            tp.install(|| {
                chunks
                    .into_par_iter()
                    .for_each(|(c, d)| uneven(c, ArrayViewMut1::from(d), &(n as u64)))
            })
        })
    });
    group.bench_function("pool", |b| {
        b.iter(|| pool.map(&mut a, &plan, n as u64, uneven).unwrap())
    });
    group.finish();
}

criterion_group!(benches, tiny, uneven_work, squares);
criterion_main!(benches);
