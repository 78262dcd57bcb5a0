//! Tile plans (blocks over two or more axes) through every executor: the warm pool,
//! fork-per-call, and the checks that refuse a plan that does not fit.

mod common; // the forking tests' opt-in (the harness runs tests on threads)

use ndarray::{ArrayViewMut, Ix2, Ix3, IxDyn};
use ndshm::{
    fork_chunks, fork_chunks_into, Chunk, ChunkPlan, CreateOptions, ErrorKind, SharedNdArray,
    WorkerPool,
};

fn opts(fortran: bool) -> CreateOptions {
    CreateOptions::unique_with_prefix("t-tiles-").fortran_order(fortran)
}

/// Adds 1 to every element of the chunk, and its index + 1 times 1000 (so a double visit
/// or a wrong tile shows).
fn mark(c: Chunk, mut v: ArrayViewMut<'_, u32, IxDyn>, _: &()) {
    v.mapv_inplace(|x| x + 1 + 1000 * (c.index as u32 + 1));
}

/// What `mark` over `plan` must leave: each element once, with its tile's index.
fn expected(plan: &ChunkPlan, shape: &[usize]) -> ndarray::ArrayD<u32> {
    let mut e = ndarray::ArrayD::<u32>::zeros(IxDyn(shape));
    for c in plan.iter() {
        c.of_mut(e.view_mut())
            .mapv_inplace(|x| x + 1 + 1000 * (c.index as u32 + 1));
    }
    e
}

fn plans_for(a: &SharedNdArray<u32, IxDyn>) -> Vec<ChunkPlan> {
    let shape = a.shape().to_vec();
    let mut plans = vec![
        ChunkPlan::tiles(&shape, &[3, 4]).unwrap(),
        ChunkPlan::tiles_for(a, &[4, 3]).unwrap(),
        ChunkPlan::balanced_tiles(&shape, &[2, 3]).unwrap(),
    ];
    if shape.len() == 3 {
        plans.push(ChunkPlan::tiles(&shape, &[2, 3, 4]).unwrap());
        plans.push(ChunkPlan::tiles_for(a, &[5, 2, 3]).unwrap());
    }
    plans
}

#[test]
fn pool_map_with_tiles_covers_every_element_once_in_c_and_fortran_arrays() {
    let mut pool = WorkerPool::new(3).unwrap();
    pool.set_inline_below(0);
    for shape in [vec![11, 13], vec![7, 9, 10]] {
        for fortran in [false, true] {
            let mut a = SharedNdArray::<u32, IxDyn>::zeros(opts(fortran), IxDyn(&shape)).unwrap();
            assert_eq!(a.is_fortran_order(), fortran);
            for plan in plans_for(&a) {
                a.view_mut().fill(0);
                pool.map(&mut a, &plan, (), mark).unwrap();
                assert_eq!(
                    a.view(),
                    expected(&plan, &shape),
                    "{shape:?} fortran={fortran} {plan:?}"
                );
            }
        }
    }
}

#[test]
fn fork_chunks_with_tiles_covers_every_element_once_in_c_and_fortran_arrays() {
    for shape in [vec![9, 8], vec![5, 6, 7]] {
        for fortran in [false, true] {
            let mut a = SharedNdArray::<u32, IxDyn>::zeros(opts(fortran), IxDyn(&shape)).unwrap();
            let plan = ChunkPlan::tiles_for(&a, &[4, 3]).unwrap();
            fork_chunks(&mut a, &plan, |c, v| mark(c, v, &())).unwrap();
            assert_eq!(a.view(), expected(&plan, &shape), "{shape:?} {fortran}");
        }
    }
}

#[test]
fn tiles_for_a_fortran_array_run_along_its_contiguous_axis_first() {
    let f = SharedNdArray::<f64, Ix2>::zeros(opts(true), (8, 6)).unwrap();
    let plan = ChunkPlan::tiles_for(&f, &[4, 3]).unwrap();
    // The first split axis is the outermost in memory (axis 1); consecutive chunks walk
    // down axis 0, the contiguous one, so each next tile starts right after the last.
    assert_eq!(plan.axis(), 1);
    let starts: Vec<(usize, usize)> = plan
        .iter()
        .map(|c| (c.range_along(0).unwrap().start, c.start))
        .collect();
    assert_eq!(starts, vec![(0, 0), (4, 0), (0, 3), (4, 3)]);
    let c = SharedNdArray::<f64, Ix2>::zeros(opts(false), (8, 6)).unwrap();
    assert_eq!(
        ChunkPlan::tiles_for(&c, &[4, 3]).unwrap(),
        ChunkPlan::tiles(&[8, 6], &[4, 3]).unwrap()
    );
}

fn tile_sum(_: Chunk, v: ndarray::ArrayView2<'_, f64>, _: &()) -> [f64; 2] {
    [v.sum(), v.len() as f64]
}

#[test]
fn pool_map_reduce_with_tiles_equals_serial() {
    let mut pool = WorkerPool::new(3).unwrap();
    pool.set_inline_below(0);
    for fortran in [false, true] {
        let src = ndarray::Array2::from_shape_fn((37, 29), |(i, j)| (i * 29 + j) as f64);
        let a = SharedNdArray::from_array(opts(fortran), &src).unwrap();
        let plan = ChunkPlan::tiles_for(&a, &[8, 8]).unwrap();
        let got = pool.map_reduce(&a, &plan, (), tile_sum).unwrap();
        let serial: Vec<[f64; 2]> = plan
            .iter()
            .map(|c| tile_sum(c, c.of(&src.view()), &()))
            .collect();
        assert_eq!(got, serial);
        assert_eq!(got.iter().map(|r| r[1]).sum::<f64>(), (37 * 29) as f64);
    }
}

/// `b = a + aᵀ` tile by tile: reads the whole input, writes its own tile.
fn add_transpose(
    c: Chunk,
    a: ndarray::ArrayView2<'_, f64>,
    mut b: ndarray::ArrayViewMut2<'_, f64>,
    _: &(),
) {
    let (rows, cols) = (c.range(), c.range_along(1).unwrap());
    for (bi, i) in rows.enumerate() {
        for (bj, j) in cols.clone().enumerate() {
            b[[bi, bj]] = a[[i, j]] + a[[j, i]];
        }
    }
}

#[test]
fn pool_map_into_and_fork_chunks_into_with_tiles_equal_serial() {
    let n = 45;
    let src = ndarray::Array2::from_shape_fn((n, n), |(i, j)| (i * 1000 + j) as f64);
    let serial = &src + &src.t();
    let a = SharedNdArray::from_array(opts(false), &src).unwrap();
    let mut b = SharedNdArray::<f64, Ix2>::zeros(opts(false), (n, n)).unwrap();
    let plan = ChunkPlan::tiles(&[n, n], &[16, 16]).unwrap();
    let mut pool = WorkerPool::new(2).unwrap();
    pool.set_inline_below(0);
    pool.map_into(&a, &mut b, &plan, (), add_transpose).unwrap();
    assert_eq!(b.view(), serial);
    b.view_mut().fill(0.0);
    fork_chunks_into(&a, &mut b, &plan, |c, a, b| add_transpose(c, a, b, &())).unwrap();
    assert_eq!(b.view(), serial);
}

fn fail_tile_5(c: Chunk, _: ArrayViewMut<'_, f64, Ix3>, _: &()) -> Result<(), String> {
    if c.index == 5 {
        Err("bad tile".into())
    } else {
        Ok(())
    }
}

#[test]
fn a_failing_tile_is_named_by_its_range_along_every_axis() {
    let mut a = SharedNdArray::<f64, Ix3>::zeros(opts(false), (4, 6, 2)).unwrap();
    let plan = ChunkPlan::tiles(a.shape(), &[2, 2]).unwrap();
    let mut pool = WorkerPool::new(2).unwrap();
    let e = pool.map(&mut a, &plan, (), fail_tile_5).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WorkerFailed);
    assert!(
        e.to_string()
            .contains("chunk 5 (indices 2..4 of axis 0, 4..6 of axis 1)"),
        "{e}"
    );
    let e = fork_chunks(&mut a, &plan, |c, v| fail_tile_5(c, v, &())).unwrap_err();
    assert!(
        e.to_string()
            .contains("chunk 5 (indices 2..4 of axis 0, 4..6 of axis 1)"),
        "{e}"
    );
}

fn nothing(_: Chunk, _: ArrayViewMut<'_, f64, IxDyn>, _: &()) {}

#[test]
fn jobs_refuse_a_tile_plan_that_does_not_fit_naming_array_and_axis() {
    let mut pool = WorkerPool::new(2).unwrap();
    let mut a = SharedNdArray::<f64, IxDyn>::zeros(opts(false), IxDyn(&[8, 6])).unwrap();
    let name = a.name().to_string();
    let cases = [
        // Built for a 3-D array: the 2-D array has no axis 2.
        (
            ChunkPlan::tiles(&[8, 6, 4], &[4, 3, 2]).unwrap(),
            "splits axis 2",
        ),
        // Built for another length along axis 1.
        (ChunkPlan::tiles(&[8, 7], &[4, 3]).unwrap(), "along axis 1"),
        // `along` moved the first split axis onto the second.
        (
            ChunkPlan::tiles(&[6, 6], &[3, 3]).unwrap().along(1),
            "axis 1 twice",
        ),
    ];
    for (plan, words) in &cases {
        for e in [
            pool.map(&mut a, plan, (), nothing).unwrap_err(),
            fork_chunks(&mut a, plan, |_, _| {}).unwrap_err(),
        ] {
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
            assert!(e.to_string().contains(words), "{words:?}: {e}");
            assert!(e.to_string().contains(&name), "names the array: {e}");
        }
    }
    // The pool is healthy after the refusals.
    let plan = ChunkPlan::tiles(&[8, 6], &[4, 3]).unwrap();
    pool.map(&mut a, &plan, (), nothing).unwrap();
}

#[test]
fn bad_tile_plans_are_typed_errors() {
    for (r, words) in [
        (ChunkPlan::tiles(&[8, 8], &[0, 2]), "tile length 0"),
        (ChunkPlan::tiles(&[8, 8], &[2, 2, 2]), "3 tile lengths"),
        (
            ChunkPlan::tiles_along(&[8, 8], &[(1, 2), (1, 4)]),
            "split twice",
        ),
        (ChunkPlan::tiles_along(&[8, 8], &[(0, 2), (5, 4)]), "axis 5"),
        (ChunkPlan::tiles(&[4096, 4096], &[2, 2]), "more than"),
        (ChunkPlan::balanced_tiles(&[8, 8], &[2, 0]), "0 tiles"),
    ] {
        let e = r.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        assert!(e.to_string().contains(words), "{words:?}: {e}");
    }
}
