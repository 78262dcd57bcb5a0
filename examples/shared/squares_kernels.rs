//! The kernels and the rayon chunking shared by `examples/squares.rs` and
//! `benches/squares.rs`, so that the example's table and the criterion bench measure the
//! same work. Pool kernels are fn items: the workers, forked before the job, run them.

use ndarray::ArrayViewMut1;
use ndshm::{Chunk, ChunkPlan};

/// The seed's kernel: `x * x` in place.
pub fn square(_: Chunk, mut x: ArrayViewMut1<'_, f64>, _: &()) {
    x.mapv_inplace(|v| v * v);
}

/// Uneven work: element `i` of `n` costs `1 + 64 i / n` rounds.
pub fn uneven_value(i: usize, n: usize) -> f64 {
    let rounds = 1 + 64 * i / n.max(1);
    let mut x = i as f64;
    for _ in 0..rounds {
        x = (x.sin() + 1.5).sqrt();
    }
    x
}

/// Fills a chunk with [`uneven_value`] of its absolute indices (`n` = the array length).
pub fn uneven(c: Chunk, mut x: ArrayViewMut1<'_, f64>, n: &u64) {
    for (k, v) in x.iter_mut().enumerate() {
        *v = uneven_value(c.start + k, *n as usize);
    }
}

/// Splits `data` into the chunks of `plan`, each with its `Chunk` (what rayon gets, so that
/// it is chunked like the pool).
pub fn split<'a>(mut data: &'a mut [f64], plan: &ChunkPlan) -> Vec<(Chunk, &'a mut [f64])> {
    let mut out = Vec::with_capacity(plan.num_chunks());
    for c in plan.iter() {
        let (head, tail) = data.split_at_mut(c.len());
        out.push((c, head));
        data = tail;
    }
    out
}
