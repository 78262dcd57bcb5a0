use ndshm::{Chunk, ChunkPlan, SharedNdArray, WorkerPool};
fn now() -> f64 { let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 }; unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) }; ts.tv_sec as f64 * 1e6 + ts.tv_nsec as f64 / 1e3 }
fn heavy(_: Chunk, mut x: ndarray::ArrayViewMut1<'_, f64>, _: &()) { x.mapv_inplace(|v| v.sin().exp().sqrt()); }
fn timed(c: Chunk, x: ndarray::ArrayView1<'_, f64>, _: &()) -> [f64; 4] {
    let t0 = now();
    let s: f64 = x.iter().map(|v| v.sin().exp().sqrt()).sum();
    let _ = c;
    [std::process::id() as f64, t0, now(), s]
}
fn main() {
    let mut pool = WorkerPool::new(2).unwrap();
    let n: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(20000000);
    let mut a = SharedNdArray::<f64, ndarray::Ix1>::from_array(&format!("dbg-{}", std::process::id()), &ndarray::Array1::range(0.0, n as f64, 1.0)).unwrap();
    let plan = ChunkPlan::balanced(n, 2).unwrap();
    println!("worker {:?} me {}", pool.worker_pids(), std::process::id());
    for _ in 0..4 {
        let t = now();
        let r = pool.map_reduce(&a, &plan, (), timed).unwrap();
        let e = now();
        for c in &r { print!("[pid {} start +{:.0} end +{:.0}] ", c[0], c[1]-t, c[2]-t); }
        println!("total {:.0}", e - t);
        let t = now();
        pool.map(&mut a, &plan, (), heavy).unwrap();
        println!("map heavy {:.0}", now() - t);
        a.as_slice_mut().unwrap().iter_mut().enumerate().for_each(|(i, v)| *v = i as f64);
    }
}
