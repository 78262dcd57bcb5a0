//! Jobs over several arrays on the warm pool (`pool.job(&plan).read(..).write(..)`):
//! results equal to serial code, halos, and every bad input as a typed error.

mod common;

use common::Name;
use ndarray::{Array1, Array2, ArrayView1, ArrayViewMut1, Ix1, Ix2, Zip};
use ndshm::{Chunk, ChunkPlan, ErrorKind, Halo, SharedNdArray, WorkerPool};

fn f64s(name: &Name, n: usize, f: impl Fn(usize) -> f64) -> SharedNdArray<f64, Ix1> {
    SharedNdArray::from_array(name.as_str(), &Array1::from_shape_fn(n, f)).unwrap()
}

fn plans(n: usize) -> Vec<ChunkPlan> {
    vec![
        ChunkPlan::balanced(n, 3).unwrap(),
        ChunkPlan::balanced(n, 1).unwrap(),
        ChunkPlan::balanced(n, 61).unwrap(),
        ChunkPlan::fixed(n, 1000).unwrap(),
        ChunkPlan::fixed(n, 1).unwrap(),
    ]
}

fn axpb(
    _: Chunk,
    (a, b, d, mut c): (
        ArrayView1<'_, f64>,
        ArrayView1<'_, f64>,
        ArrayView1<'_, f64>,
        ArrayViewMut1<'_, f64>,
    ),
    _: &(),
) {
    Zip::from(&mut c)
        .and(&a)
        .and(&b)
        .and(&d)
        .for_each(|c, &a, &b, &d| *c = a * b + d);
}

#[test]
fn c_is_a_times_b_plus_d_element_by_element() {
    let mut pool = WorkerPool::new(3).unwrap();
    let n = 10_007;
    let (na, nb, nd, nc) = (
        Name::new("a"),
        Name::new("b"),
        Name::new("d"),
        Name::new("c"),
    );
    let a = f64s(&na, n, |i| i as f64);
    let b = f64s(&nb, n, |i| 0.5 + (i % 7) as f64);
    let d = f64s(&nd, n, |i| -(i as f64) / 3.0);
    let mut c = f64s(&nc, n, |_| f64::NAN);
    for plan in plans(n) {
        c.view_mut().fill(f64::NAN);
        pool.job(&plan)
            .read(&a)
            .read(&b)
            .read(&d)
            .write(&mut c)
            .for_each((), axpb)
            .unwrap();
        for i in 0..n {
            let want = a.view()[i] * b.view()[i] + d.view()[i];
            assert_eq!(
                c.view()[i],
                want,
                "element {i}, plan {:?}",
                plan.bounds().len()
            );
        }
    }
    // A closure works as well as a fn item, with parameters.
    let plan = ChunkPlan::balanced(n, 4).unwrap();
    pool.job(&plan)
        .read(&a)
        .read(&b)
        .write(&mut c)
        .for_each(2.0f64, |_, (a, b, mut c), &k| {
            Zip::from(&mut c)
                .and(&a)
                .and(&b)
                .for_each(|c, &a, &b| *c = k * a + b);
        })
        .unwrap();
    for i in 0..n {
        assert_eq!(c.view()[i], 2.0 * a.view()[i] + b.view()[i]);
    }
}

/// Twelve arrays (the most a job takes) of five element types and two dimensions, read in
/// chunks, whole and with a halo, and written, in one job.
#[test]
fn twelve_arrays_of_mixed_types_and_roles() {
    let mut pool = WorkerPool::new(3).unwrap();
    let (rows, cols) = (37, 5);
    let names: Vec<Name> = (0..12).map(|i| Name::new(&format!("mix{i}"))).collect();
    let a0 = SharedNdArray::<f64, Ix2>::from_array(
        names[0].as_str(),
        &Array2::from_shape_fn((rows, cols), |(i, j)| (i * cols + j) as f64),
    )
    .unwrap();
    let a1 = SharedNdArray::<f32, Ix2>::from_elem(names[1].as_str(), (rows, cols), 2.0).unwrap();
    let a2 = SharedNdArray::<i64, Ix1>::from_array(
        names[2].as_str(),
        &Array1::from_iter(0..rows as i64),
    )
    .unwrap();
    let a3 = SharedNdArray::<u8, Ix1>::from_elem(names[3].as_str(), rows, 3).unwrap();
    let a4 = SharedNdArray::<u16, Ix2>::from_elem(names[4].as_str(), (rows, 2), 4).unwrap();
    let a5 = SharedNdArray::<f64, Ix1>::from_array(
        names[5].as_str(),
        &Array1::from_iter((0..rows).map(|i| i as f64)),
    )
    .unwrap();
    let a6 = SharedNdArray::<i32, Ix1>::from_elem(names[6].as_str(), rows, -1).unwrap();
    let a7 = SharedNdArray::<u32, Ix1>::from_elem(names[7].as_str(), rows, 7).unwrap();
    let a8 = SharedNdArray::<f32, Ix1>::from_elem(names[8].as_str(), rows, 0.5).unwrap();
    let mut w9 = SharedNdArray::<f64, Ix2>::zeros(names[9].as_str(), (rows, cols)).unwrap();
    let mut w10 = SharedNdArray::<i64, Ix1>::zeros(names[10].as_str(), rows).unwrap();
    let mut w11 = SharedNdArray::<f64, Ix1>::zeros(names[11].as_str(), rows).unwrap();
    let plan = ChunkPlan::balanced(rows, 7).unwrap();
    pool.job(&plan)
        .read(&a0)
        .read(&a1)
        .read_whole(&a2)
        .read(&a3)
        .read(&a4)
        .read_halo(&a5, 1)
        .read(&a6)
        .read(&a7)
        .read(&a8)
        .write(&mut w9)
        .write(&mut w10)
        .write(&mut w11)
        .for_each(
            10i64,
            |c, (a0, a1, a2, a3, a4, a5, a6, a7, a8, mut w9, mut w10, mut w11), &k| {
                Zip::from(&mut w9)
                    .and(&a0)
                    .and(&a1)
                    .for_each(|w, &x, &y| *w = x * f64::from(y));
                let total: i64 = a2.sum(); // the whole array
                for (i, g) in c.range().enumerate() {
                    w10[i] = total
                        + k
                        + i64::from(a3[i])
                        + i64::from(a4[[i, 1]])
                        + i64::from(a6[i])
                        + i64::from(a7[i])
                        + g as i64;
                    // Neighbours from the halo: a5[g - 1] + a5[g + 1], 0 past the edges.
                    let at = a5.offset(0) + i;
                    let left = if at > 0 { a5[at - 1] } else { 0.0 };
                    let right = if at + 1 < a5.len() { a5[at + 1] } else { 0.0 };
                    w11[i] = left + right + f64::from(a8[i]);
                }
            },
        )
        .unwrap();
    let total: i64 = (0..rows as i64).sum();
    for g in 0..rows {
        for j in 0..cols {
            assert_eq!(w9.view()[[g, j]], (g * cols + j) as f64 * 2.0);
        }
        assert_eq!(
            w10.view()[g],
            total + 10 + 3 + 4 - 1 + 7 + g as i64,
            "row {g}"
        );
        let left = if g > 0 { g as f64 - 1.0 } else { 0.0 };
        let right = if g + 1 < rows { g as f64 + 1.0 } else { 0.0 };
        assert_eq!(w11.view()[g], left + right + 0.5, "row {g}");
    }
}

#[test]
fn map_reduce_over_several_inputs_in_chunk_order() {
    let mut pool = WorkerPool::new(3).unwrap();
    let n = 4099;
    let (na, nb, nm) = (Name::new("ra"), Name::new("rb"), Name::new("rm"));
    let a = f64s(&na, n, |i| i as f64);
    let b = f64s(&nb, n, |i| (i % 3) as f64);
    let mask = SharedNdArray::<u8, Ix1>::from_array(
        nm.as_str(),
        &Array1::from_shape_fn(n, |i| u8::from(i % 5 == 0)),
    )
    .unwrap();
    for plan in plans(n) {
        let parts = pool
            .job(&plan)
            .read(&a)
            .read(&b)
            .read(&mask)
            .map_reduce((), |c, (a, b, m), _: &()| {
                let dot: f64 = Zip::from(&a).and(&b).and(&m).fold(0.0, |acc, &x, &y, &m| {
                    acc + if m == 1 { x * y } else { 0.0 }
                });
                [dot, c.start as f64]
            })
            .unwrap();
        assert_eq!(parts.len(), plan.num_chunks());
        for (k, [_, start]) in parts.iter().enumerate() {
            assert_eq!(*start, plan.get(k).unwrap().start as f64, "chunk order");
        }
        let want: f64 = (0..n)
            .filter(|i| i % 5 == 0)
            .map(|i| i as f64 * (i % 3) as f64)
            .sum();
        assert_eq!(parts.iter().map(|p| p[0]).sum::<f64>(), want);
    }
}

/// The 1-D stencil `y[i] = x[i-2] + 2 x[i-1] - x[i] + 3 x[i+1] + x[i+2]`, with missing
/// neighbours taken as 0, computed serially once.
fn stencil_1d_serial(x: &[f64]) -> Vec<f64> {
    let w = [1.0, 2.0, -1.0, 3.0, 1.0];
    let at = |i: isize| {
        if i < 0 || i as usize >= x.len() {
            0.0
        } else {
            x[i as usize]
        }
    };
    (0..x.len() as isize)
        .map(|i| (0..5).map(|t| w[t] * at(i + t as isize - 2)).sum())
        .collect()
}

fn stencil_1d(c: Chunk, (x, mut y): (Halo<'_, f64, Ix1>, ArrayViewMut1<'_, f64>), _: &()) {
    let w = [1.0, 2.0, -1.0, 3.0, 1.0];
    let off = x.offset(0) as isize;
    let at = |i: isize| {
        if i < 0 || i as usize >= x.len() {
            0.0
        } else {
            x[i as usize]
        }
    };
    for i in 0..c.len() as isize {
        let l = off + i;
        y[i as usize] = (0..5).map(|t| w[t] * at(l + t as isize - 2)).sum();
    }
}

#[test]
fn halo_stencil_1d_equals_the_serial_one_including_edges() {
    let mut pool = WorkerPool::new(3).unwrap();
    let n = 1013;
    let (nx, ny) = (Name::new("hx"), Name::new("hy"));
    let x = f64s(&nx, n, |i| ((i * 7919) % 101) as f64 - 50.0);
    let mut y = f64s(&ny, n, |_| f64::NAN);
    let want = stencil_1d_serial(x.as_slice().unwrap());
    // Chunks of 1 index are narrower than the halo: the halo still reaches 2 each side.
    for plan in plans(n) {
        y.view_mut().fill(f64::NAN);
        pool.job(&plan)
            .read_halo(&x, 2)
            .write(&mut y)
            .for_each((), stencil_1d)
            .unwrap();
        assert_eq!(y.as_slice().unwrap(), &want[..]);
    }
}

/// One explicit heat step on an interior point; edges keep their value.
fn heat_serial(u: &Array2<f64>, alpha: f64) -> Array2<f64> {
    let (r, c) = u.dim();
    let mut out = u.clone();
    for i in 1..r - 1 {
        for j in 1..c - 1 {
            out[[i, j]] = u[[i, j]]
                + alpha
                    * (u[[i - 1, j]] + u[[i + 1, j]] + u[[i, j - 1]] + u[[i, j + 1]]
                        - 4.0 * u[[i, j]]);
        }
    }
    out
}

fn heat_rows(
    c: Chunk,
    (u, mut out): (Halo<'_, f64, Ix2>, ndarray::ArrayViewMut2<'_, f64>),
    &alpha: &f64,
) {
    let (rows, cols) = u.dim();
    let off = u.offset(0);
    // The halo stops at the interior's end only at the array's last row.
    let at_end = off + c.len() == rows;
    for i in 0..c.len() {
        let l = off + i;
        // Global first and last rows are edges; so are the first and last columns.
        if c.start + i == 0 || (at_end && i + 1 == c.len()) {
            out.row_mut(i).assign(&u.row(l));
            continue;
        }
        out[[i, 0]] = u[[l, 0]];
        out[[i, cols - 1]] = u[[l, cols - 1]];
        for j in 1..cols - 1 {
            out[[i, j]] = u[[l, j]]
                + alpha
                    * (u[[l - 1, j]] + u[[l + 1, j]] + u[[l, j - 1]] + u[[l, j + 1]]
                        - 4.0 * u[[l, j]]);
        }
    }
}

#[test]
fn halo_five_point_2d_along_rows_equals_the_serial_steps() {
    let mut pool = WorkerPool::new(3).unwrap();
    let (r, c) = (67, 41);
    let init = Array2::from_shape_fn((r, c), |(i, j)| ((i * 31 + j * 17) % 23) as f64);
    let (n0, n1) = (Name::new("heat0"), Name::new("heat1"));
    let mut u = SharedNdArray::<f64, Ix2>::from_array(n0.as_str(), &init).unwrap();
    let mut v = SharedNdArray::<f64, Ix2>::zeros(n1.as_str(), (r, c)).unwrap();
    let alpha = 0.2;
    for plan in [
        ChunkPlan::balanced_along(&[r, c], 0, 5).unwrap(),
        ChunkPlan::fixed_along(&[r, c], 0, 1).unwrap(),
    ] {
        u.view_mut().assign(&init);
        let mut want = init.clone();
        // Five steps, the two arrays swapped each step.
        for step in 0..5 {
            let (src, dst) = if step % 2 == 0 {
                (&u, &mut v)
            } else {
                (&v, &mut u)
            };
            pool.job(&plan)
                .read_halo(src, 1)
                .write(dst)
                .for_each(alpha, heat_rows)
                .unwrap();
            want = heat_serial(&want, alpha);
        }
        // After an odd number of steps the result is in v.
        assert_eq!(v.view(), want.view());
    }
}

#[test]
fn halo_along_columns_of_a_row_major_array() {
    let mut pool = WorkerPool::new(2).unwrap();
    let (nx, ny) = (Name::new("colx"), Name::new("coly"));
    let x = SharedNdArray::<i64, Ix2>::from_array(
        nx.as_str(),
        &Array2::from_shape_fn((3, 20), |(i, j)| (i * 100 + j) as i64),
    )
    .unwrap();
    let mut y = SharedNdArray::<i64, Ix2>::zeros(ny.as_str(), (3, 20)).unwrap();
    let plan = ChunkPlan::balanced_along(x.shape(), 1, 6).unwrap();
    // y[i, j] = x[i, j - 1] + x[i, j + 1] (0 past the edges).
    pool.job(&plan)
        .read_halo(&x, 1)
        .write(&mut y)
        .for_each((), |c, (x, mut y), _: &()| {
            let off = x.offset(1);
            assert_eq!(x.offset(0), 0);
            assert_eq!(x.interior().dim(), y.dim());
            for i in 0..3 {
                for j in 0..c.len() {
                    let l = off + j;
                    let left = if l > 0 { x[[i, l - 1]] } else { 0 };
                    let right = if l + 1 < x.ncols() { x[[i, l + 1]] } else { 0 };
                    y[[i, j]] = left + right;
                }
            }
        })
        .unwrap();
    let xv = x.view();
    for i in 0..3 {
        for j in 0..20 {
            let left = if j > 0 { xv[[i, j - 1]] } else { 0 };
            let right = if j + 1 < 20 { xv[[i, j + 1]] } else { 0 };
            assert_eq!(y.view()[[i, j]], left + right, "({i}, {j})");
        }
    }
}

/// A 3 × 3 box sum (clipped at the edges) of a tile with a halo of 1 along both split axes.
fn box_sum_tile(
    c: Chunk,
    (x, mut y): (Halo<'_, i64, Ix2>, ndarray::ArrayViewMut2<'_, i64>),
    _: &(),
) {
    let (o0, o1) = (x.offset(0), x.offset(1));
    assert_eq!(x.interior().dim(), y.dim(), "{c}");
    let (rows, cols) = x.dim();
    for ((i, j), out) in y.indexed_iter_mut() {
        let (l0, l1) = (o0 + i, o1 + j);
        let mut sum = 0;
        for a in l0.saturating_sub(1)..(l0 + 2).min(rows) {
            for b in l1.saturating_sub(1)..(l1 + 2).min(cols) {
                sum += x[[a, b]];
            }
        }
        *out = sum;
    }
}

#[test]
fn halo_on_a_tile_plan_widens_every_split_axis() {
    let mut pool = WorkerPool::new(2).unwrap();
    let (r, c) = (23, 31);
    let init = Array2::from_shape_fn((r, c), |(i, j)| ((i * 7 + j * 13) % 19) as i64 - 9);
    let (nx, ny) = (Name::new("tilehalox"), Name::new("tilehaloy"));
    let x = SharedNdArray::<i64, Ix2>::from_array(nx.as_str(), &init).unwrap();
    let mut y = SharedNdArray::<i64, Ix2>::zeros(ny.as_str(), (r, c)).unwrap();
    let mut want = Array2::<i64>::zeros((r, c));
    for ((i, j), w) in want.indexed_iter_mut() {
        for a in i.saturating_sub(1)..(i + 2).min(r) {
            for b in j.saturating_sub(1)..(j + 2).min(c) {
                *w += init[[a, b]];
            }
        }
    }
    for plan in [
        ChunkPlan::balanced_tiles(&[r, c], &[3, 4]).unwrap(),
        ChunkPlan::tiles(&[r, c], &[1, 5]).unwrap(),
    ] {
        y.view_mut().fill(i64::MIN);
        pool.job(&plan)
            .read_halo(&x, 1)
            .write(&mut y)
            .for_each((), box_sum_tile)
            .unwrap();
        assert_eq!(y.view(), want.view(), "{plan:?}");
    }
}

#[test]
fn a_length_that_does_not_fit_the_plan_names_the_array() {
    let mut pool = WorkerPool::new(2).unwrap();
    let (na, nb, nc) = (Name::new("len-a"), Name::new("len-b"), Name::new("len-c"));
    let a = f64s(&na, 100, |_| 1.0);
    let b = f64s(&nb, 99, |_| 1.0);
    let mut c = f64s(&nc, 100, |_| 0.0);
    let plan = ChunkPlan::balanced(100, 4).unwrap();
    let err = pool
        .job(&plan)
        .read(&a)
        .read(&b)
        .write(&mut c)
        .for_each((), |_, (_, _, mut c), _: &()| c.fill(9.0))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let msg = err.to_string();
    assert!(
        msg.contains(nb.as_str()) && msg.contains("array 1"),
        "{msg}"
    );
    assert!(msg.contains("99"), "{msg}");
    // Nothing ran.
    assert_eq!(c.view().sum(), 0.0);
    // A missing split axis, too (a plan along axis 1 over a 1-D array).
    let cols = ChunkPlan::balanced(100, 2).unwrap().along(1);
    let err = pool
        .job(&cols)
        .write(&mut c)
        .for_each((), |_, _, _: &()| {})
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(err.to_string().contains("axis 1"), "{err}");
}

#[test]
fn a_halo_wider_than_the_array_is_refused() {
    let mut pool = WorkerPool::new(2).unwrap();
    let (na, nb) = (Name::new("wide-a"), Name::new("wide-b"));
    let a = f64s(&na, 10, |_| 1.0);
    let mut b = f64s(&nb, 10, |_| 0.0);
    let plan = ChunkPlan::balanced(10, 2).unwrap();
    let err = pool
        .job(&plan)
        .read_halo(&a, 11)
        .write(&mut b)
        .for_each((), |_, (_, mut b), _: &()| b.fill(1.0))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let msg = err.to_string();
    assert!(
        msg.contains("halo of 11") && msg.contains(na.as_str()),
        "{msg}"
    );
    assert_eq!(b.view().sum(), 0.0);
    // As wide as the array is fine: every chunk sees all of it.
    let sums = pool
        .job(&plan)
        .read_halo(&a, 10)
        .map_reduce((), |_, (h,), _: &()| h.sum())
        .unwrap();
    assert_eq!(sums, vec![10.0, 10.0]);
}

#[test]
fn the_same_segment_read_twice_is_fine() {
    let mut pool = WorkerPool::new(2).unwrap();
    let (na, nb) = (Name::new("twice-a"), Name::new("twice-b"));
    let a = f64s(&na, 50, |i| i as f64);
    let mut b = f64s(&nb, 50, |_| 0.0);
    let plan = ChunkPlan::balanced(50, 3).unwrap();
    pool.job(&plan)
        .read(&a)
        .read_halo(&a, 1)
        .write(&mut b)
        .for_each((), |_, (a, h, mut b), _: &()| {
            b.assign(&(&a + &h.interior()));
        })
        .unwrap();
    assert_eq!(b.view()[49], 98.0);
}

#[test]
fn an_unlinked_array_is_refused_before_dispatch() {
    let mut pool = WorkerPool::new(2).unwrap();
    let (na, nb) = (Name::new("gone-a"), Name::new("gone-b"));
    let a = f64s(&na, 1000, |_| 1.0);
    let mut b = f64s(&nb, 1000, |_| 0.0);
    ndshm::unlink(na.as_str()).unwrap();
    let plan = ChunkPlan::balanced(1000, 4).unwrap();
    let err = pool
        .job(&plan)
        .read(&a)
        .write(&mut b)
        .for_each((), |_, (a, mut b), _: &()| b.assign(&a))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains(na.as_str()), "{err}");
    assert_eq!(b.view().sum(), 0.0);
    // The pool runs the next job.
    pool.job(&plan)
        .write(&mut b)
        .for_each((), |_, (mut b,), _: &()| b.fill(2.0))
        .unwrap();
    assert_eq!(b.view().sum(), 2000.0);
}

#[test]
fn a_failing_chunk_names_the_chunk_and_the_pool_goes_on() {
    let mut pool = WorkerPool::new(3).unwrap();
    let (na, nb) = (Name::new("fail-a"), Name::new("fail-b"));
    let a = f64s(&na, 100, |_| 1.0);
    let mut b = f64s(&nb, 100, |_| 0.0);
    let plan = ChunkPlan::balanced(100, 5).unwrap();
    let err = pool
        .job(&plan)
        .read(&a)
        .write(&mut b)
        .for_each((), |c, _, _: &()| {
            if c.index == 3 {
                panic!("chunk three");
            }
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WorkerFailed);
    assert!(
        err.to_string().contains("chunk 3") && err.to_string().contains("chunk three"),
        "{err}"
    );
    let n = pool
        .job(&plan)
        .read(&a)
        .write(&mut b)
        .map_reduce((), |_, (a, mut b), _: &()| {
            b.assign(&a);
            b.len() as u64
        })
        .unwrap();
    assert_eq!(n.iter().sum::<u64>(), 100);
}

#[test]
fn no_segment_of_a_job_is_left() {
    let names: Vec<Name> = (0..4).map(|i| Name::new(&format!("left{i}"))).collect();
    {
        let mut pool = WorkerPool::new(3).unwrap();
        let a = f64s(&names[0], 500, |i| i as f64);
        let b = f64s(&names[1], 500, |_| 2.0);
        let mut c = f64s(&names[2], 500, |_| 0.0);
        let short = f64s(&names[3], 499, |_| 0.0);
        let plan = ChunkPlan::balanced(500, 4).unwrap();
        pool.job(&plan)
            .read(&a)
            .read_halo(&b, 3)
            .write(&mut c)
            .for_each((), |_, (a, b, mut c), _: &()| {
                c.assign(&(&a * &b.interior()))
            })
            .unwrap();
        assert!(pool
            .job(&plan)
            .read(&short)
            .write(&mut c)
            .for_each((), |_, _, _: &()| {})
            .is_err());
        let _ = pool.job(&plan).write(&mut c).for_each((), |c, _, _: &()| {
            if c.index == 0 {
                Err("no")
            } else {
                Ok(())
            }
        });
        for n in &names {
            assert!(n.path().exists());
        }
    }
    for n in &names {
        assert!(!n.path().exists(), "{} was left in /dev/shm", n.as_str());
    }
}

#[test]
fn fortran_order_arrays_split_along_their_last_axis() {
    let mut pool = WorkerPool::new(3).unwrap();
    let (nx, ny) = (Name::new("fx"), Name::new("fy"));
    let init = Array2::from_shape_fn((6, 50), |(i, j)| (i * 1000 + j) as i64);
    let x = SharedNdArray::<i64, Ix2>::from_array(
        ndshm::CreateOptions::named(nx.as_str()).fortran_order(true),
        &init,
    )
    .unwrap();
    let mut y = SharedNdArray::<i64, Ix2>::zeros(
        ndshm::CreateOptions::named(ny.as_str()).fortran_order(true),
        (6, 50),
    )
    .unwrap();
    assert!(x.is_fortran_order() && y.is_fortran_order());
    // Columns (the contiguous axis of a Fortran-order array), with a halo of 2 columns.
    let plan = ChunkPlan::balanced_along(x.shape(), 1, 7).unwrap();
    pool.job(&plan)
        .read(&x)
        .read_halo(&x, 2)
        .write(&mut y)
        .for_each((), |c, (x, h, mut y), _: &()| {
            assert_eq!(h.interior(), x);
            let off = h.offset(1);
            for j in 0..c.len() {
                let l = off + j;
                let left = if l >= 2 { h[[0, l - 2]] } else { -1 };
                y.column_mut(j).fill(x[[5, j]] + left);
            }
        })
        .unwrap();
    for j in 0..50 {
        let left = if j >= 2 { init[[0, j - 2]] } else { -1 };
        assert!(
            y.view().column(j).iter().all(|&v| v == init[[5, j]] + left),
            "column {j}"
        );
    }
}
