//! `ChunkPlan`: how an array is split into chunks that workers process independently —
//! index ranges along one axis, or tiles (rectangles of index ranges) over several axes.
//!
//! A plan is plain data (per split axis, a list of index ranges), so it can be built,
//! tested and inspected on its own. The fork and pool APIs take a plan and give each chunk
//! to one executor; chunks never overlap, so the executors write disjoint parts of the
//! array.

use std::borrow::Cow;
use std::ops::Range;

use ndarray::{ArrayView, ArrayViewMut, Axis, Dimension, Slice};

use crate::array::{AccessMode, SharedNdArray};
use crate::element::Element;
use crate::error::{Error, ErrorKind, Result};

/// The size of a cache line on the machines ndshm targets (x86-64, aarch64), in bytes.
pub const CACHE_LINE: usize = 64;

/// Most chunks one plan may hold (the pool's control block has room for this many).
pub const MAX_CHUNKS: usize = 1 << 20;

/// Most axes one plan may split (a tile plan over 2, 3 or 4 axes).
pub const MAX_SPLIT_AXES: usize = 4;

/// A chunk's ranges beyond its first split axis (tile plans); `n == 0` for a plan along
/// one axis.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
struct MoreAxes {
    n: u32,
    axis: [u32; MAX_SPLIT_AXES - 1],
    start: [usize; MAX_SPLIT_AXES - 1],
    end: [usize; MAX_SPLIT_AXES - 1],
}

/// One chunk of a [`ChunkPlan`]: its position in the plan and its index range along the
/// plan's (first) split axis, plus, for a tile plan, its ranges along the further split
/// axes (see [`ranges`](Self::ranges)).
///
/// `axis`, `start`, `end`, [`len`](Self::len) and [`range`](Self::range) always describe
/// the *first* split axis, so code written for plans along one axis keeps its meaning;
/// code that should work for any plan goes through [`ranges`](Self::ranges),
/// [`of`](Self::of)/[`of_mut`](Self::of_mut), [`shape_in`](Self::shape_in) and
/// [`num_elements_in`](Self::num_elements_in). A chunk is built only by its plan (it has a
/// private field).
///
/// # Examples
/// ```
/// use ndshm::ChunkPlan;
/// let plan = ChunkPlan::balanced(10, 3)?;
/// let c = plan.get(1).unwrap();
/// assert_eq!((c.index, c.axis, c.start, c.end), (1, 0, 4, 7));
/// assert_eq!((c.len(), c.is_empty(), c.range()), (3, false, 4..7));
/// let mut a = ndarray::Array1::<u8>::zeros(10);
/// c.of_mut(a.view_mut()).fill(1); // the chunk's part of a mutable view
/// assert_eq!(a.sum(), 3);
/// # Ok::<(), ndshm::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Chunk {
    /// Position of the chunk in its plan (0-based); results come back in this order.
    pub index: usize,
    /// The axis the plan splits (the first split axis of a tile plan).
    pub axis: usize,
    /// First index along `axis` (inclusive).
    pub start: usize,
    /// Last index along `axis` (exclusive).
    pub end: usize,
    more: MoreAxes,
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Chunk");
        d.field("index", &self.index)
            .field("axis", &self.axis)
            .field("start", &self.start)
            .field("end", &self.end);
        if self.more.n > 0 {
            d.field("more", &self.ranges().skip(1).collect::<Vec<_>>());
        }
        d.finish()
    }
}

impl std::fmt::Display for Chunk {
    /// `chunk 3 (indices 300..400 of axis 0)`, or for a tile
    /// `chunk 5 (indices 0..64 of axis 0, 64..128 of axis 1)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "chunk {} (indices ", self.index)?;
        for (i, (axis, r)) in self.ranges().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{}..{} of axis {axis}", r.start, r.end)?;
        }
        write!(f, ")")
    }
}

impl Chunk {
    /// A chunk of one plan: `index`, then `(axis, start, end)` for each split axis (the
    /// first becomes `axis`/`start`/`end`). At most [`MAX_SPLIT_AXES`] axes are kept.
    pub(crate) fn from_ranges(
        index: usize,
        mut ranges: impl Iterator<Item = (usize, usize, usize)>,
    ) -> Chunk {
        let (axis, start, end) = ranges.next().unwrap_or((0, 0, 0));
        let mut more = MoreAxes::default();
        for (i, (a, s, e)) in ranges.take(MAX_SPLIT_AXES - 1).enumerate() {
            more.axis[i] = a as u32;
            more.start[i] = s;
            more.end[i] = e;
            more.n = i as u32 + 1;
        }
        Chunk {
            index,
            axis,
            start,
            end,
            more,
        }
    }

    /// Number of indices along the first split axis (`end - start`): the chunk's length
    /// for a plan along one axis. For the number of elements of a tile, use
    /// [`num_elements_in`](Self::num_elements_in); for its extent along each axis,
    /// [`shape_in`](Self::shape_in).
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether the chunk covers no element (an empty range along some split axis; a plan
    /// never hands out such a chunk).
    pub fn is_empty(&self) -> bool {
        self.ranges().any(|(_, r)| r.is_empty())
    }

    /// The index range `start..end` along the first split axis.
    pub fn range(&self) -> Range<usize> {
        self.start..self.end
    }

    /// The chunk's index range along `axis`, if the plan splits that axis (`None` for an
    /// axis the chunk covers whole).
    ///
    /// # Examples
    /// ```
    /// use ndshm::ChunkPlan;
    /// let plan = ChunkPlan::tiles(&[6, 10], &[4, 4])?;
    /// let c = plan.get(4).unwrap(); // second row of tiles, second column
    /// assert_eq!((c.range_along(0), c.range_along(1)), (Some(4..6), Some(4..8)));
    /// assert_eq!(c.range_along(2), None);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn range_along(&self, axis: usize) -> Option<Range<usize>> {
        self.ranges().find(|(a, _)| *a == axis).map(|(_, r)| r)
    }

    /// The chunk's extent along each axis of an array of `shape`: its range's length along
    /// a split axis, the whole extent along the others.
    ///
    /// # Examples
    /// ```
    /// use ndshm::ChunkPlan;
    /// let plan = ChunkPlan::tiles(&[6, 10, 3], &[4, 4])?;
    /// let last = plan.get(plan.num_chunks() - 1).unwrap();
    /// assert_eq!(last.shape_in(&[6, 10, 3]), vec![2, 2, 3]);
    /// assert_eq!(last.num_elements_in(&[6, 10, 3]), 12);
    /// assert_eq!(last.len(), 2); // along the first split axis only
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn shape_in(&self, shape: &[usize]) -> Vec<usize> {
        let mut out = shape.to_vec();
        for (axis, r) in self.ranges() {
            if let Some(n) = out.get_mut(axis) {
                *n = r.len();
            }
        }
        out
    }

    /// Number of elements of the chunk in an array of `shape` (the product of
    /// [`shape_in`](Self::shape_in)).
    pub fn num_elements_in(&self, shape: &[usize]) -> usize {
        self.shape_in(shape).iter().product()
    }

    /// This chunk's part of `view` (a view of a whole array, such as the read-only input of
    /// `out = f(in)`): `view` sliced to the chunk's range along every split axis.
    ///
    /// # Panics
    /// When the chunk lies outside `view` along one of its axes (the jobs check shapes
    /// before any chunk runs, so a chunk handed out by ndshm always fits the arrays of its
    /// job).
    ///
    /// # Examples
    /// ```
    /// use ndshm::ChunkPlan;
    /// let a = ndarray::Array1::from_iter(0..10);
    /// let plan = ChunkPlan::balanced(10, 3)?;
    /// let parts: Vec<Vec<i32>> = plan.iter().map(|c| c.of(&a.view()).to_vec()).collect();
    /// assert_eq!(parts, vec![vec![0, 1, 2, 3], vec![4, 5, 6], vec![7, 8, 9]]);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn of<'a, T, D: Dimension>(&self, view: &ArrayView<'a, T, D>) -> ArrayView<'a, T, D> {
        let mut v = view.clone();
        for (axis, r) in self.ranges() {
            v = v.slice_axis_move(Axis(axis), Slice::from(r));
        }
        v
    }

    /// This chunk's part of a mutable view.
    ///
    /// # Panics
    /// As [`of`](Self::of).
    ///
    /// # Examples
    /// ```
    /// use ndshm::ChunkPlan;
    /// let mut a = ndarray::Array2::<u8>::zeros((4, 3));
    /// let plan = ChunkPlan::balanced_along(a.shape(), 1, 3)?; // columns
    /// let second = plan.get(1).unwrap();
    /// assert_eq!((plan.axis(), second.range()), (1, 1..2));
    /// second.of_mut(a.view_mut()).fill(7);
    /// assert_eq!(a.column(1).sum(), 28);
    /// assert_eq!(plan.bounds(), &[0, 1, 2, 3]);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn of_mut<'a, T, D: Dimension>(
        &self,
        view: ArrayViewMut<'a, T, D>,
    ) -> ArrayViewMut<'a, T, D> {
        let mut v = view;
        for (axis, r) in self.ranges() {
            v = v.slice_axis_move(Axis(axis), Slice::from(r));
        }
        v
    }

    /// Every axis this chunk splits, with its index range along it: `(axis, start..end)`,
    /// first split axis first. A plan along one axis splits one, a tile plan two or more;
    /// code that handles any plan (halos, tiles) should go through this rather than
    /// `axis`/`start`/`end`.
    ///
    /// # Examples
    /// ```
    /// use ndshm::ChunkPlan;
    /// let plan = ChunkPlan::balanced_along(&[6, 4], 1, 2)?;
    /// let c = plan.get(1).unwrap();
    /// assert_eq!(c.ranges().collect::<Vec<_>>(), vec![(1, 2..4)]);
    /// // A tile: rows 4..6 and columns 0..3 of a 6 x 6 matrix in 3 x 3 tiles.
    /// let tiles = ChunkPlan::tiles(&[6, 6], &[3, 3])?;
    /// let t = tiles.get(2).unwrap();
    /// assert_eq!(t.ranges().collect::<Vec<_>>(), vec![(0, 3..6), (1, 0..3)]);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn ranges(&self) -> impl Iterator<Item = (usize, Range<usize>)> {
        let more = self.more;
        std::iter::once((self.axis, self.range())).chain(
            (0..more.n as usize).map(move |i| (more.axis[i] as usize, more.start[i]..more.end[i])),
        )
    }
}

/// A split of an array into non-overlapping, non-empty chunks that cover it exactly: index
/// ranges along one axis, or tiles over several.
///
/// **Along one axis**, the index range `0..len` is cut into consecutive chunks:
///
/// - [`balanced`](Self::balanced): `n` chunks whose sizes differ by at most one (the first
///   `len % n` get one more index);
/// - [`fixed`](Self::fixed): chunks of `chunk_len` indices, the last one shorter;
/// - [`along`](Self::along) picks the axis (default 0);
/// - [`align_to_cache_lines`](Self::align_to_cache_lines) (or
///   [`aligned_for`](Self::aligned_for) an array; off by default) moves the boundaries so that each starts on a 64-byte cache line of the array's memory, so that
///   no two workers write to one cache line (no false sharing at chunk edges).
///
/// A plan never holds an empty chunk: a plan for `len == 0` has no chunks, and `balanced`
/// with more chunks than indices makes one chunk per index.
///
/// **Tiles** (blocks of a matrix) split two or more axes at once; a tile is the rectangle
/// of one range per split axis, and the chunks are the grid of all combinations:
/// - [`tiles`](Self::tiles): tiles of given lengths over the leading axes of a shape;
/// - [`balanced_tiles`](Self::balanced_tiles): a given number of balanced ranges per axis;
/// - [`tiles_for`](Self::tiles_for) an array: as `tiles`, with the grid ordered by the
///   array's memory order (C or Fortran);
/// - [`tiles_along`](Self::tiles_along) and [`grid`](Self::grid): any axes in any order,
///   any one-axis plan per axis (fixed, balanced, cache-aligned).
///
/// A tile plan lists its split axes in *grid order*: chunk indices run through the last
/// split axis fastest and the first slowest, like the elements of a C-order array, so
/// consecutive chunks are neighbours along the last split axis. Choose that axis to be
/// the array's innermost in memory (axis `ndim - 1` of a C-order array, axis 0 of a
/// Fortran-order one; `tiles_for` does) and consecutive chunks are close in memory. The
/// first split axis is the plan's [`axis`](Self::axis) and each chunk's `axis`/`start`/`end`;
/// [`splits`](Self::splits) lists them all.
///
/// # Examples
/// ```
/// use ndshm::ChunkPlan;
/// let plan = ChunkPlan::balanced(10, 3)?;
/// let ranges: Vec<_> = plan.iter().map(|c| c.range()).collect();
/// assert_eq!(ranges, vec![0..4, 4..7, 7..10]);
/// let plan = ChunkPlan::fixed(10, 4)?;
/// assert_eq!(plan.iter().map(|c| c.len()).collect::<Vec<_>>(), vec![4, 4, 2]);
/// # Ok::<(), ndshm::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkPlan {
    axis: usize,
    len: usize,
    /// `bounds[i]..bounds[i + 1]` is chunk `i` (of a tile plan: row `i` of the grid along
    /// the first split axis); `bounds` starts at 0 and ends at `len` (a single `0` when
    /// the plan is empty).
    bounds: Vec<usize>,
    /// The further split axes of a tile plan, in grid order; empty along one axis.
    more: Vec<Split>,
}

/// One further split axis of a tile plan: the axis, its extent and its boundaries.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Split {
    axis: usize,
    len: usize,
    bounds: Vec<usize>,
}

fn invalid(msg: String) -> Error {
    Error::new(ErrorKind::InvalidArgument, msg)
}

impl ChunkPlan {
    /// Splits `0..len` into `n` chunks of balanced sizes: the first `len % n` chunks get
    /// `len / n + 1` indices, the others `len / n` (fewer chunks when `len < n`: one per
    /// index, and none when `len == 0`).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when `n == 0` or `n > MAX_CHUNKS`.
    ///
    /// # Examples
    /// ```
    /// use ndshm::ChunkPlan;
    /// let plan = ChunkPlan::balanced(10, 4)?;
    /// assert_eq!(plan.bounds(), &[0, 3, 6, 8, 10]);
    /// assert_eq!(ChunkPlan::balanced(2, 5)?.num_chunks(), 2); // one chunk per index at most
    /// assert!(ChunkPlan::balanced(10, 0).is_err());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn balanced(len: usize, n: usize) -> Result<ChunkPlan> {
        if n == 0 {
            return Err(invalid(
                "cannot split into 0 chunks: ask for at least one chunk".to_string(),
            ));
        }
        if n > MAX_CHUNKS {
            return Err(invalid(format!(
                "cannot split into {n} chunks: at most {MAX_CHUNKS} chunks per plan"
            )));
        }
        let n = n.min(len);
        let mut bounds = Vec::with_capacity(n + 1);
        bounds.push(0);
        if let (Some(base), Some(extra)) = (len.checked_div(n), len.checked_rem(n)) {
            let mut at = 0;
            for i in 0..n {
                at += base + usize::from(i < extra);
                bounds.push(at);
            }
        }
        Ok(ChunkPlan {
            axis: 0,
            len,
            bounds,
            more: Vec::new(),
        })
    }

    /// Splits `0..len` into chunks of `chunk_len` indices (the last one holds the rest).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when `chunk_len == 0` or the plan would hold more than
    /// [`MAX_CHUNKS`] chunks.
    ///
    /// # Examples
    /// ```
    /// use ndshm::ChunkPlan;
    /// let plan = ChunkPlan::fixed(10, 4)?;
    /// assert_eq!(plan.bounds(), &[0, 4, 8, 10]);
    /// assert!(ChunkPlan::fixed(10, 0).is_err());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn fixed(len: usize, chunk_len: usize) -> Result<ChunkPlan> {
        if chunk_len == 0 {
            return Err(invalid(
                "chunk length 0: chunks must hold at least one index".to_string(),
            ));
        }
        let n = len.div_ceil(chunk_len);
        if n > MAX_CHUNKS {
            return Err(invalid(format!(
                "{len} indices in chunks of {chunk_len} make {n} chunks, more than the \
                 {MAX_CHUNKS} a plan may hold: use longer chunks"
            )));
        }
        let mut bounds: Vec<usize> = (0..n).map(|i| i * chunk_len).collect();
        bounds.push(len);
        Ok(ChunkPlan {
            axis: 0,
            len,
            bounds,
            more: Vec::new(),
        })
    }

    /// A balanced plan of `n` chunks over axis `axis` of an array of `shape`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when `axis` is not an axis of `shape`, or as
    /// [`balanced`](Self::balanced).
    ///
    /// # Examples
    /// ```
    /// use ndshm::ChunkPlan;
    /// let plan = ChunkPlan::balanced_along(&[4, 9], 1, 2)?;
    /// assert_eq!(plan.axis(), 1);
    /// assert_eq!(plan.len(), 9);
    /// assert!(ChunkPlan::balanced_along(&[4, 9], 2, 2).is_err());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn balanced_along(shape: &[usize], axis: usize, n: usize) -> Result<ChunkPlan> {
        let len = axis_len(shape, axis)?;
        Ok(ChunkPlan::balanced(len, n)?.along(axis))
    }

    /// A plan of chunks of `chunk_len` over axis `axis` of an array of `shape`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when `axis` is not an axis of `shape`, or as
    /// [`fixed`](Self::fixed).
    ///
    /// # Examples
    /// ```
    /// use ndshm::ChunkPlan;
    /// // Columns of a 3 x 10 array, 4 at a time; the same as `fixed(10, 4)?.along(1)`.
    /// let plan = ChunkPlan::fixed_along(&[3, 10], 1, 4)?;
    /// assert_eq!(plan, ChunkPlan::fixed(10, 4)?.along(1));
    /// assert_eq!(plan.num_chunks(), 3);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn fixed_along(shape: &[usize], axis: usize, chunk_len: usize) -> Result<ChunkPlan> {
        let len = axis_len(shape, axis)?;
        Ok(ChunkPlan::fixed(len, chunk_len)?.along(axis))
    }

    /// Tiles of `tile[i]` indices along axis `i` of an array of `shape`, for each of the
    /// leading `tile.len()` axes (further axes stay whole); the last tile along an axis
    /// holds the rest. The grid runs in C order (the last tiled axis fastest), which keeps
    /// consecutive chunks close in memory for a C-order array; for a Fortran-order array use
    /// [`tiles_for`](Self::tiles_for). One tile length gives the plan
    /// [`fixed_along`](Self::fixed_along)`(shape, 0, tile[0])`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when `tile` is empty, has more entries than `shape`
    /// has axes (or than [`MAX_SPLIT_AXES`]), holds a 0, or the plan would hold more than
    /// [`MAX_CHUNKS`] chunks.
    ///
    /// # Examples
    /// ```
    /// use ndshm::ChunkPlan;
    /// // A 5 x 7 matrix in 2 x 4 tiles: 3 rows of tiles, 2 columns, row by row.
    /// let plan = ChunkPlan::tiles(&[5, 7], &[2, 4])?;
    /// assert_eq!(plan.num_chunks(), 6);
    /// let tiles: Vec<_> = plan.iter().map(|c| (c.range(), c.range_along(1).unwrap())).collect();
    /// assert_eq!(tiles[..3], [(0..2, 0..4), (0..2, 4..7), (2..4, 0..4)]);
    /// let mut m = ndarray::Array2::<usize>::zeros((5, 7));
    /// for c in plan.iter() {
    ///     c.of_mut(m.view_mut()).fill(c.index); // each tile's own block
    /// }
    /// assert_eq!(m.row(4).to_vec(), vec![4, 4, 4, 4, 5, 5, 5]);
    /// assert!(ChunkPlan::tiles(&[5, 7], &[2, 0]).is_err());
    /// assert!(ChunkPlan::tiles(&[5, 7], &[2, 2, 2]).is_err());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn tiles(shape: &[usize], tile: &[usize]) -> Result<ChunkPlan> {
        check_axis_count(shape, tile.len(), "tile lengths")?;
        let along: Vec<(usize, usize)> = tile.iter().copied().enumerate().collect();
        ChunkPlan::tiles_along(shape, &along)
    }

    /// Tiles along the given axes of an array of `shape`: `(axis, tile_len)` pairs in grid
    /// order (the last pair's axis varies fastest between consecutive chunks).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when an axis is not an axis of `shape` or is given
    /// twice, a tile length is 0, more than [`MAX_SPLIT_AXES`] axes are given, or the plan
    /// would hold more than [`MAX_CHUNKS`] chunks.
    ///
    /// # Examples
    /// ```
    /// use ndshm::ChunkPlan;
    /// // Columns slowest, rows fastest (the order for a Fortran-order matrix).
    /// let plan = ChunkPlan::tiles_along(&[4, 6], &[(1, 3), (0, 2)])?;
    /// assert_eq!(plan.axis(), 1);
    /// let order: Vec<_> = plan.iter().map(|c| (c.range_along(0).unwrap(), c.range())).collect();
    /// assert_eq!(order[..3], [(0..2, 0..3), (2..4, 0..3), (0..2, 3..6)]);
    /// assert!(ChunkPlan::tiles_along(&[4, 6], &[(1, 3), (1, 2)]).is_err()); // axis twice
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn tiles_along(shape: &[usize], tiles: &[(usize, usize)]) -> Result<ChunkPlan> {
        let plans = tiles
            .iter()
            .map(|&(axis, t)| {
                if t == 0 {
                    return Err(invalid(format!(
                        "tile length 0 along axis {axis}: tiles must hold at least one index \
                         along each axis"
                    )));
                }
                ChunkPlan::fixed_along(shape, axis, t)
            })
            .collect::<Result<Vec<_>>>()?;
        ChunkPlan::grid(plans)
    }

    /// Balanced tiles: `counts[i]` balanced ranges along axis `i` of an array of `shape`
    /// (as [`balanced`](Self::balanced)), for each of the leading `counts.len()` axes, in
    /// C grid order.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when `counts` is empty, has more entries than `shape`
    /// has axes (or than [`MAX_SPLIT_AXES`]), holds a 0, or the plan would hold more than
    /// [`MAX_CHUNKS`] chunks.
    ///
    /// # Examples
    /// ```
    /// use ndshm::ChunkPlan;
    /// // A 2 x 3 grid of tiles over a 10 x 9 x 4 array (axis 2 whole).
    /// let plan = ChunkPlan::balanced_tiles(&[10, 9, 4], &[2, 3])?;
    /// assert_eq!(plan.num_chunks(), 6);
    /// assert_eq!(plan.get(5).unwrap().shape_in(&[10, 9, 4]), vec![5, 3, 4]);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn balanced_tiles(shape: &[usize], counts: &[usize]) -> Result<ChunkPlan> {
        check_axis_count(shape, counts.len(), "tile counts")?;
        let plans = counts
            .iter()
            .enumerate()
            .map(|(axis, &n)| {
                if n == 0 {
                    return Err(invalid(format!(
                        "0 tiles along axis {axis}: ask for at least one range per axis"
                    )));
                }
                ChunkPlan::balanced_along(shape, axis, n)
            })
            .collect::<Result<Vec<_>>>()?;
        ChunkPlan::grid(plans)
    }

    /// Tiles of `tile[i]` indices along axis `i` of `array` (as [`tiles`](Self::tiles)),
    /// with the grid in the array's memory order: for a C-order array the last tiled axis
    /// varies fastest (the same plan as `tiles`); for a Fortran-order array axis 0 (its
    /// contiguous axis) varies fastest and the last tiled axis is the first split axis. Either
    /// way consecutive chunks are neighbours in memory. For a Fortran-order array, make
    /// tiles long along axis 0: each column of a tile is one contiguous run.
    ///
    /// # Errors
    /// As [`tiles`](Self::tiles).
    ///
    /// # Examples
    /// ```
    /// use ndshm::{ChunkPlan, CreateOptions, SharedNdArray};
    /// let fortran = CreateOptions::unique().fortran_order(true);
    /// let f = SharedNdArray::<f64, ndarray::Ix2>::zeros(fortran, (6, 4))?;
    /// let plan = ChunkPlan::tiles_for(&f, &[3, 2])?;
    /// assert_eq!(plan, ChunkPlan::tiles_along(f.shape(), &[(1, 2), (0, 3)])?);
    /// // Chunks 0 and 1 are the two tiles of columns 0..2: adjacent in Fortran memory.
    /// assert_eq!(plan.get(1).unwrap().range_along(0), Some(3..6));
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn tiles_for<T: Element, D: Dimension, A: AccessMode>(
        array: &SharedNdArray<T, D, A>,
        tile: &[usize],
    ) -> Result<ChunkPlan> {
        let shape = array.shape();
        check_axis_count(shape, tile.len(), "tile lengths")?;
        let mut along: Vec<(usize, usize)> = tile.iter().copied().enumerate().collect();
        if array.is_fortran_order() && shape.len() > 1 {
            along.reverse();
        }
        ChunkPlan::tiles_along(shape, &along)
    }

    /// The tile plan whose grid is the product of `plans` (each along its own axis, in grid
    /// order: the last plan's axis varies fastest): tile `(i, j, ..)` is chunk `i` of the
    /// first plan crossed with chunk `j` of the second, and so on. Use it to mix splits, e.g.
    /// cache-aligned rows ([`aligned_for`](Self::aligned_for)) crossed with fixed columns.
    /// A tile plan among `plans` contributes all its axes.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when `plans` is empty, two plans split the same axis,
    /// they split more than [`MAX_SPLIT_AXES`] axes, or the grid would hold more than
    /// [`MAX_CHUNKS`] chunks.
    ///
    /// # Examples
    /// ```
    /// use ndshm::ChunkPlan;
    /// let rows = ChunkPlan::balanced_along(&[100, 64], 0, 3)?;
    /// let cols = ChunkPlan::fixed_along(&[100, 64], 1, 16)?;
    /// let plan = ChunkPlan::grid([rows, cols])?;
    /// assert_eq!(plan.num_chunks(), 12);
    /// assert_eq!(plan.splits().collect::<Vec<_>>(), vec![
    ///     (0, &[0, 34, 67, 100][..]),
    ///     (1, &[0, 16, 32, 48, 64][..]),
    /// ]);
    /// assert!(ChunkPlan::grid([ChunkPlan::balanced(4, 2)?, ChunkPlan::balanced(4, 2)?]).is_err());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn grid(plans: impl IntoIterator<Item = ChunkPlan>) -> Result<ChunkPlan> {
        let mut splits: Vec<Split> = Vec::new();
        for p in plans {
            splits.push(Split {
                axis: p.axis,
                len: p.len,
                bounds: p.bounds,
            });
            splits.extend(p.more);
        }
        if splits.is_empty() {
            return Err(invalid(
                "a tile plan needs at least one axis to split: give one plan per axis".to_string(),
            ));
        }
        if splits.len() > MAX_SPLIT_AXES {
            return Err(invalid(format!(
                "a tile plan over {} axes: at most {MAX_SPLIT_AXES} axes can be split",
                splits.len()
            )));
        }
        for (i, s) in splits.iter().enumerate() {
            if splits[..i].iter().any(|t| t.axis == s.axis) {
                return Err(invalid(format!(
                    "axis {} is split twice: give each axis once in a tile plan",
                    s.axis
                )));
            }
        }
        let count = splits.iter().try_fold(1usize, |acc, s| {
            acc.checked_mul((s.bounds.len() - 1).max(1))
                .filter(|&n| n <= MAX_CHUNKS)
        });
        if count.is_none() {
            let per_axis: Vec<String> = splits
                .iter()
                .map(|s| format!("{} along axis {}", s.bounds.len() - 1, s.axis))
                .collect();
            return Err(invalid(format!(
                "a tile plan of {} tiles makes more than the {MAX_CHUNKS} chunks a plan may \
                 hold: use larger tiles",
                per_axis.join(" x ")
            )));
        }
        let first = splits.remove(0);
        Ok(ChunkPlan {
            axis: first.axis,
            len: first.len,
            bounds: first.bounds,
            more: splits,
        })
    }

    /// The same plan over axis `axis` (checked against the array when a job runs). On a
    /// tile plan, this moves the first split axis only (a job refuses a plan that then
    /// splits one axis twice).
    ///
    /// # Examples
    /// ```
    /// use ndshm::ChunkPlan;
    /// let plan = ChunkPlan::balanced(8, 2)?.along(1);
    /// assert_eq!((plan.axis(), plan.len()), (1, 8));
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn along(mut self, axis: usize) -> ChunkPlan {
        self.axis = axis;
        self
    }

    /// Moves every inner boundary to an index whose element starts a 64-byte cache line,
    /// for an array whose index 0 along the axis lies at address `base` and whose
    /// consecutive indices lie `bytes_per_index` bytes apart (for axis 0 of a C-order array
    /// of `f64` with rows of `k` elements: `8 * k`). Each boundary goes to the nearest such
    /// index; chunks that become empty are dropped (so the plan may get fewer chunks).
    ///
    /// Only meaningful when the axis is the outermost in memory (axis 0 of a C-order
    /// array): then each chunk is one contiguous byte range, and with aligned boundaries no
    /// two chunks share a cache line.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when `bytes_per_index == 0`, when no index of the
    /// array starts a cache line (the data is not aligned to the element stride), or for a
    /// tile plan (align the one-axis plan of the outermost axis, then combine it with
    /// [`grid`](Self::grid)).
    ///
    /// # Examples
    /// ```
    /// use ndshm::ChunkPlan;
    /// // 100 f64 starting on a cache line: boundaries move to multiples of 8 elements.
    /// let plan = ChunkPlan::balanced(100, 3)?.align_to_cache_lines(4096, 8)?;
    /// let ranges: Vec<_> = plan.iter().map(|c| c.range()).collect();
    /// assert_eq!(ranges, vec![0..32, 32..64, 64..100]);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn align_to_cache_lines(self, base: usize, bytes_per_index: usize) -> Result<ChunkPlan> {
        self.align_to(base, bytes_per_index, CACHE_LINE)
    }

    /// [`align_to_cache_lines`](Self::align_to_cache_lines) for `array`: reads the
    /// address of its data and the bytes between consecutive indices of the plan's axis.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when the plan does not fit the array, or when its axis
    /// is not the outermost in memory (axis 0 of a C-order array, the last axis of a
    /// Fortran-order one): chunks along another axis interleave in memory, so aligning
    /// their boundaries cannot keep them off each other's cache lines; also for a tile plan
    /// (as [`align_to_cache_lines`](Self::align_to_cache_lines)).
    ///
    /// # Examples
    /// ```
    /// use ndshm::{ChunkPlan, SharedNdArray};
    /// # let name = format!("doc-align-{}", std::process::id());
    /// let a = SharedNdArray::<f32, ndarray::Ix2>::zeros(&name, (100, 3))?;
    /// // Rows of 12 bytes: boundaries move to rows that start a 64-byte line (every 16th).
    /// let plan = ChunkPlan::balanced(100, 3)?.aligned_for(&a)?;
    /// assert_eq!(plan.bounds(), &[0, 32, 64, 100]);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn aligned_for<T: Element, D: Dimension, A: AccessMode>(
        self,
        array: &SharedNdArray<T, D, A>,
    ) -> Result<ChunkPlan> {
        let shape = array.shape();
        self.check_shape(shape, "array", array.name())?;
        if !self.more.is_empty() {
            return Err(tiles_not_aligned());
        }
        let outer = if array.is_fortran_order() && shape.len() > 1 {
            shape.len() - 1
        } else {
            0
        };
        if self.axis != outer {
            return Err(invalid(format!(
                "chunks along axis {} of array '{}' interleave in memory; only chunks along \
                 axis {outer} (the outermost in memory) can be aligned to cache lines",
                self.axis,
                array.name()
            )));
        }
        let inner: usize = shape
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != outer)
            .map(|(_, &n)| n)
            .product();
        let stride = inner.saturating_mul(std::mem::size_of::<T>()).max(1);
        self.align_to_cache_lines(array.data_ptr() as usize, stride)
    }

    fn align_to(mut self, base: usize, stride: usize, line: usize) -> Result<ChunkPlan> {
        if !self.more.is_empty() {
            return Err(tiles_not_aligned());
        }
        if stride == 0 {
            return Err(invalid(
                "bytes per index is 0: give the distance in bytes between consecutive indices"
                    .to_string(),
            ));
        }
        // Index i starts a line iff (base + i * stride) % line == 0. Solutions, if any,
        // repeat every `period` indices, starting at `first`.
        let g = gcd(stride % line, line);
        let g = if g == 0 { line } else { g };
        let period = line / g;
        let first = (0..period).find(|&i| (base % line + (i * (stride % line)) % line) % line == 0);
        let Some(first) = first else {
            return Err(invalid(format!(
                "no index starts a {line}-byte cache line (data at {base:#x}, {stride} bytes \
                 per index): such a plan cannot be aligned"
            )));
        };
        if self.bounds.len() <= 2 {
            return Ok(self);
        }
        let last = self.len;
        let mut out = vec![0usize];
        for &b in &self.bounds[1..self.bounds.len() - 1] {
            let nearest = if b < first {
                first
            } else {
                let k = (b - first) / period;
                let lo = first + k * period;
                let hi = lo + period;
                if b - lo <= hi - b {
                    lo
                } else {
                    hi
                }
            };
            let nearest = nearest.min(last);
            if nearest > *out.last().unwrap_or(&0) && nearest < last {
                out.push(nearest);
            }
        }
        out.push(last);
        self.bounds = out;
        Ok(self)
    }

    /// The axis the plan splits (the first split axis of a tile plan).
    pub fn axis(&self) -> usize {
        self.axis
    }

    /// Length of the split range: the array's extent along [`axis`](Self::axis).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the plan has no chunk (an extent 0 along a split axis).
    pub fn is_empty(&self) -> bool {
        self.num_chunks() == 0
    }

    /// Number of chunks (of a tile plan: the product of the ranges per split axis).
    pub fn num_chunks(&self) -> usize {
        self.more
            .iter()
            .fold(self.bounds.len() - 1, |n, s| n * (s.bounds.len() - 1))
    }

    /// Chunk `index`, if the plan has that many.
    pub fn get(&self, index: usize) -> Option<Chunk> {
        if index >= self.num_chunks() {
            return None;
        }
        if self.more.is_empty() {
            let (start, end) = (self.bounds[index], self.bounds[index + 1]);
            return Some(Chunk::from_ranges(
                index,
                std::iter::once((self.axis, start, end)),
            ));
        }
        // The grid runs through the last split axis fastest.
        let mut pos = [0usize; MAX_SPLIT_AXES];
        let mut rest = index;
        for (i, s) in self.more.iter().enumerate().rev() {
            let n = s.bounds.len() - 1;
            pos[i + 1] = rest % n;
            rest /= n;
        }
        pos[0] = rest;
        Some(Chunk::from_ranges(
            index,
            self.splits()
                .zip(pos)
                .map(|((axis, b), p)| (axis, b[p], b[p + 1])),
        ))
    }

    /// The chunks, in order.
    ///
    /// # Examples
    /// ```
    /// use ndshm::ChunkPlan;
    /// let plan = ChunkPlan::balanced(5, 2)?;
    /// assert_eq!((plan.len(), plan.num_chunks(), plan.is_empty()), (5, 2, false));
    /// let starts: Vec<usize> = plan.iter().map(|c| c.start).collect();
    /// assert_eq!(starts, vec![0, 3]);
    /// assert_eq!(plan.get(1).map(|c| c.range()), Some(3..5));
    /// assert_eq!(plan.get(2), None);
    /// assert!(ChunkPlan::balanced(0, 2)?.is_empty());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Chunk> + '_ {
        (0..self.num_chunks()).map(|i| self.get(i).expect("index below num_chunks"))
    }

    /// The chunk boundaries along [`axis`](Self::axis): `0`, the inner boundaries, then
    /// `len` (`[0]` when empty). For every split axis of a tile plan, see
    /// [`splits`](Self::splits).
    pub fn bounds(&self) -> &[usize] {
        &self.bounds
    }

    /// Every split axis with its boundaries, in grid order: one `(axis, bounds)` for a plan
    /// along one axis, one per axis for a tile plan.
    ///
    /// # Examples
    /// ```
    /// use ndshm::ChunkPlan;
    /// let plan = ChunkPlan::tiles(&[4, 5], &[2, 3])?;
    /// assert_eq!(plan.splits().collect::<Vec<_>>(), vec![(0, &[0, 2, 4][..]), (1, &[0, 3, 5][..])]);
    /// assert_eq!(ChunkPlan::fixed(4, 2)?.splits().count(), 1);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn splits(&self) -> impl Iterator<Item = (usize, &[usize])> + '_ {
        std::iter::once((self.axis, &self.bounds[..]))
            .chain(self.more.iter().map(|s| (s.axis, &s.bounds[..])))
    }

    /// Every split axis with its extent and boundaries, in grid order.
    fn split_lens(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        std::iter::once((self.axis, self.len)).chain(self.more.iter().map(|s| (s.axis, s.len)))
    }

    /// Checks that the plan fits an array of `shape`: every split axis exists, is split once
    /// and has the plan's length there; `role` ("input") and `name` name the array in the
    /// error.
    pub(crate) fn check_shape(&self, shape: &[usize], role: &str, name: &str) -> Result<()> {
        for (i, (axis, _)) in self.split_lens().enumerate() {
            if self.split_lens().take(i).any(|(a, _)| a == axis) {
                return Err(invalid(format!(
                    "the chunk plan splits axis {axis} twice (moved there by `along`?), \
                     which cannot fit {role} '{name}': split each axis once"
                )));
            }
        }
        for (axis, want) in self.split_lens() {
            let Some(&len) = shape.get(axis) else {
                return Err(invalid(format!(
                    "the chunk plan splits axis {axis}, but {role} '{name}' has {} axes \
                     (shape {shape:?}): build the plan from this array's shape",
                    shape.len()
                )));
            };
            if len != want {
                return Err(invalid(format!(
                    "the chunk plan splits {want} indices along axis {axis}, but {role} '{name}' \
                     has {len} there (shape {shape:?}): build the plan from this array's shape"
                )));
            }
        }
        Ok(())
    }
}

/// What the forking APIs accept as a chunk plan: a `usize` (that many balanced chunks along
/// axis 0 of the array), a [`ChunkPlan`] or a `&ChunkPlan` (any axis, fixed or aligned
/// chunks).
///
/// # Examples
/// ```
/// use ndshm::{ChunkPlan, IntoChunkPlan};
/// // 3 balanced chunks along axis 0 of a (10, 4) array:
/// let plan = 3.into_chunk_plan(&[10, 4])?;
/// assert_eq!(*plan, ChunkPlan::balanced(10, 3)?);
/// // A plan is taken as it is (the call that uses it checks that it fits the array):
/// let cols = ChunkPlan::balanced_along(&[10, 4], 1, 2)?;
/// assert_eq!((&cols).into_chunk_plan(&[10, 4])?.axis(), 1);
/// # Ok::<(), ndshm::Error>(())
/// ```
pub trait IntoChunkPlan<'a> {
    /// The plan for an array of `shape`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when a count is 0 or the array has no axis 0.
    fn into_chunk_plan(self, shape: &[usize]) -> Result<Cow<'a, ChunkPlan>>;
}

impl<'a> IntoChunkPlan<'a> for usize {
    fn into_chunk_plan(self, shape: &[usize]) -> Result<Cow<'a, ChunkPlan>> {
        ChunkPlan::balanced_along(shape, 0, self).map(Cow::Owned)
    }
}

impl<'a> IntoChunkPlan<'a> for ChunkPlan {
    fn into_chunk_plan(self, _shape: &[usize]) -> Result<Cow<'a, ChunkPlan>> {
        Ok(Cow::Owned(self))
    }
}

impl<'a> IntoChunkPlan<'a> for &'a ChunkPlan {
    fn into_chunk_plan(self, _shape: &[usize]) -> Result<Cow<'a, ChunkPlan>> {
        Ok(Cow::Borrowed(self))
    }
}

fn axis_len(shape: &[usize], axis: usize) -> Result<usize> {
    shape.get(axis).copied().ok_or_else(|| {
        invalid(format!(
            "axis {axis} is out of range for an array of shape {shape:?} ({} axes)",
            shape.len()
        ))
    })
}

fn tiles_not_aligned() -> Error {
    invalid(
        "a tile plan cannot be aligned to cache lines as a whole: align the plan of the \
         outermost axis, then combine it with the others by ChunkPlan::grid"
            .to_string(),
    )
}

/// Refuses `n` per-axis values (tile lengths, counts) for an array of `shape` with fewer
/// axes, or none at all.
fn check_axis_count(shape: &[usize], n: usize, what: &str) -> Result<()> {
    if n == 0 {
        return Err(invalid(format!(
            "no {what}: give one per axis to split (at least one)"
        )));
    }
    if n > shape.len() {
        return Err(invalid(format!(
            "{n} {what} for an array of {} axes (shape {shape:?}): give at most one per axis",
            shape.len()
        )));
    }
    Ok(())
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check_cover(plan: &ChunkPlan) {
        let mut at = 0;
        for (i, c) in plan.iter().enumerate() {
            assert_eq!(c.index, i);
            assert_eq!(c.start, at, "chunks are consecutive");
            assert!(c.end > c.start, "no empty chunk");
            at = c.end;
        }
        assert_eq!(at, plan.len(), "chunks cover the range");
    }

    #[test]
    fn balanced_gives_extra_to_the_first() {
        let plan = ChunkPlan::balanced(11, 4).unwrap();
        let lens: Vec<_> = plan.iter().map(|c| c.len()).collect();
        assert_eq!(lens, vec![3, 3, 3, 2]);
        check_cover(&plan);
        assert_eq!(ChunkPlan::balanced(3, 5).unwrap().num_chunks(), 3);
        let empty = ChunkPlan::balanced(0, 4).unwrap();
        assert_eq!(empty.num_chunks(), 0);
        assert!(empty.is_empty());
        assert_eq!(empty.iter().count(), 0);
    }

    #[test]
    fn fixed_leaves_the_rest_last() {
        let plan = ChunkPlan::fixed(10, 3).unwrap();
        assert_eq!(plan.bounds(), &[0, 3, 6, 9, 10]);
        assert_eq!(ChunkPlan::fixed(9, 3).unwrap().bounds(), &[0, 3, 6, 9]);
        assert_eq!(ChunkPlan::fixed(0, 3).unwrap().num_chunks(), 0);
    }

    #[test]
    fn bad_arguments_are_typed_errors() {
        let e = ChunkPlan::balanced(10, 0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert_eq!(
            ChunkPlan::fixed(10, 0).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            ChunkPlan::balanced(10, MAX_CHUNKS + 1).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            ChunkPlan::fixed(usize::MAX, 1).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        let e = ChunkPlan::balanced_along(&[3, 4], 2, 2).unwrap_err();
        assert!(e.to_string().contains("axis 2"), "{e}");
        let plan = ChunkPlan::balanced(4, 2).unwrap().along(1);
        assert!(plan.check_shape(&[4, 4], "array", "a").is_ok());
        assert!(plan.check_shape(&[4, 5], "array", "a").is_err());
        assert!(plan.check_shape(&[4], "array", "a").is_err());
        assert!(ChunkPlan::balanced(8, 2)
            .unwrap()
            .align_to_cache_lines(0, 0)
            .is_err());
        // 32-byte rows starting 8 bytes into a line: no row starts a line.
        assert!(ChunkPlan::balanced(8, 2)
            .unwrap()
            .align_to_cache_lines(8, 32)
            .is_err());
    }

    #[test]
    fn alignment_puts_boundaries_on_lines() {
        // f64 from an address 16 bytes into a line: index 6 is the first on a line.
        let plan = ChunkPlan::balanced(100, 4)
            .unwrap()
            .align_to_cache_lines(0x1010, 8)
            .unwrap();
        check_cover(&plan);
        for &b in &plan.bounds()[1..plan.bounds().len() - 1] {
            assert_eq!((0x1010 + b * 8) % 64, 0, "{:?}", plan.bounds());
        }
        // Tiny plans collapse instead of sharing a line.
        let plan = ChunkPlan::balanced(10, 4)
            .unwrap()
            .align_to_cache_lines(0, 8)
            .unwrap();
        check_cover(&plan);
        assert_eq!(plan.bounds(), &[0, 8, 10]);
        // Rows of whole lines: boundaries do not move.
        let plan = ChunkPlan::balanced(10, 3).unwrap();
        assert_eq!(
            plan.clone().align_to_cache_lines(0, 128).unwrap().bounds(),
            plan.bounds()
        );
    }

    /// Counts, per element of an array of `shape` in the given layout, how many chunks of
    /// `plan` cover it (through `of_mut` on a view of that layout).
    fn coverage(plan: &ChunkPlan, shape: &[usize], fortran: bool) -> ndarray::ArrayD<u32> {
        use ndarray::ShapeBuilder;
        let mut a = ndarray::ArrayD::<u32>::zeros(ndarray::IxDyn(shape).set_f(fortran));
        for c in plan.iter() {
            let mut v = c.of_mut(a.view_mut());
            assert_eq!(v.shape(), &c.shape_in(shape)[..], "{c:?}");
            assert_eq!(v.len(), c.num_elements_in(shape));
            assert!(!c.is_empty(), "no empty chunk: {c:?}");
            v.mapv_inplace(|x| x + 1);
        }
        a
    }

    #[test]
    fn tiles_cover_every_element_once_in_c_and_fortran_arrays() {
        for (shape, tile) in [
            (vec![7, 5], vec![2, 3]),
            (vec![8, 8], vec![4, 4]),
            (vec![5, 6, 7], vec![2, 4, 3]),
            (vec![5, 6, 7], vec![3, 2]), // the last axis whole
            (vec![1, 9], vec![5, 5]),
        ] {
            let plan = ChunkPlan::tiles(&shape, &tile).unwrap();
            let expect: usize = shape
                .iter()
                .zip(tile.iter().chain(std::iter::repeat(&usize::MAX)))
                .map(|(&n, &t)| n.div_ceil(t.min(n)))
                .product();
            assert_eq!(plan.num_chunks(), expect, "{shape:?} {tile:?}");
            for fortran in [false, true] {
                let cov = coverage(&plan, &shape, fortran);
                assert!(cov.iter().all(|&n| n == 1), "{shape:?} {tile:?}: {cov:?}");
            }
            let reversed: Vec<(usize, usize)> = tile.iter().copied().enumerate().rev().collect();
            let plan = ChunkPlan::tiles_along(&shape, &reversed).unwrap();
            assert!(coverage(&plan, &shape, true).iter().all(|&n| n == 1));
        }
    }

    #[test]
    fn tile_chunks_run_through_the_last_split_axis_fastest() {
        let plan = ChunkPlan::tiles(&[4, 6, 2], &[2, 3, 1]).unwrap();
        let pos: Vec<(usize, usize, usize)> = plan
            .iter()
            .map(|c| {
                let r: Vec<_> = c.ranges().map(|(_, r)| r.start).collect();
                (r[0], r[1], r[2])
            })
            .collect();
        assert_eq!(
            pos,
            vec![
                (0, 0, 0),
                (0, 0, 1),
                (0, 3, 0),
                (0, 3, 1),
                (2, 0, 0),
                (2, 0, 1),
                (2, 3, 0),
                (2, 3, 1)
            ]
        );
        // In a C-order array, consecutive tiles of a row of tiles are adjacent in memory.
        let axes: Vec<usize> = plan.get(3).unwrap().ranges().map(|(a, _)| a).collect();
        assert_eq!(axes, vec![0, 1, 2]);
        assert_eq!(plan.axis(), 0);
        assert_eq!(plan.bounds(), &[0, 2, 4]);
    }

    #[test]
    fn chunk_len_and_range_stay_the_first_split_axis() {
        let plan = ChunkPlan::tiles(&[10, 4], &[6, 1]).unwrap();
        let c = plan.get(5).unwrap();
        assert_eq!((c.axis, c.start, c.end), (0, 6, 10));
        assert_eq!((c.len(), c.range()), (4, 6..10));
        assert_eq!(c.range_along(1), Some(1..2));
        assert_eq!(c.num_elements_in(&[10, 4]), 4);
        assert_eq!(c.shape_in(&[10, 4]), vec![4, 1]);
        assert_eq!(
            c.to_string(),
            "chunk 5 (indices 6..10 of axis 0, 1..2 of axis 1)"
        );
        let one = ChunkPlan::fixed(10, 4).unwrap().get(1).unwrap();
        assert_eq!(one.to_string(), "chunk 1 (indices 4..8 of axis 0)");
        assert_eq!(
            format!("{one:?}"),
            "Chunk { index: 1, axis: 0, start: 4, end: 8 }"
        );
    }

    #[test]
    fn a_tile_plan_over_one_axis_is_the_fixed_plan() {
        assert_eq!(
            ChunkPlan::tiles(&[10, 3], &[4]).unwrap(),
            ChunkPlan::fixed_along(&[10, 3], 0, 4).unwrap()
        );
        assert_eq!(
            ChunkPlan::balanced_tiles(&[10, 3], &[3]).unwrap(),
            ChunkPlan::balanced(10, 3).unwrap()
        );
    }

    #[test]
    fn an_empty_axis_gives_a_tile_plan_without_chunks() {
        let plan = ChunkPlan::tiles(&[0, 5], &[2, 2]).unwrap();
        assert!(plan.is_empty());
        assert_eq!((plan.num_chunks(), plan.iter().count()), (0, 0));
        assert_eq!(plan.get(0), None);
        let plan = ChunkPlan::tiles(&[5, 0], &[2, 2]).unwrap();
        assert_eq!(plan.num_chunks(), 0);
    }

    fn invalid_with(r: Result<ChunkPlan>, words: &[&str]) {
        let e = r.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        for w in words {
            assert!(e.to_string().contains(w), "{w:?} not in: {e}");
        }
    }

    #[test]
    fn tile_constructors_refuse_bad_input_with_typed_errors() {
        invalid_with(
            ChunkPlan::tiles(&[4, 4], &[2, 0]),
            &["tile length 0", "axis 1"],
        );
        invalid_with(
            ChunkPlan::balanced_tiles(&[4, 4], &[0, 2]),
            &["0 tiles", "axis 0"],
        );
        invalid_with(
            ChunkPlan::tiles_along(&[4, 4], &[(0, 2), (0, 1)]),
            &["axis 0 is split twice"],
        );
        invalid_with(
            ChunkPlan::tiles(&[4, 4], &[2, 2, 2]),
            &["3 tile lengths", "2 axes"],
        );
        invalid_with(ChunkPlan::balanced_tiles(&[4], &[1, 1]), &["2 tile counts"]);
        invalid_with(
            ChunkPlan::tiles_along(&[4, 4], &[(0, 2), (2, 1)]),
            &["axis 2"],
        );
        invalid_with(ChunkPlan::tiles(&[4, 4], &[]), &["no tile lengths"]);
        invalid_with(ChunkPlan::grid(Vec::new()), &["at least one axis"]);
        invalid_with(
            ChunkPlan::tiles(&[2; 5], &[1; 5]),
            &[&format!("at most {MAX_SPLIT_AXES} axes")],
        );
        // 2048 x 1024 tiles: twice MAX_CHUNKS.
        invalid_with(
            ChunkPlan::tiles(&[2048, 1024], &[1, 1]),
            &["2048 along axis 0 x 1024 along axis 1", "larger tiles"],
        );
        // An empty axis does not hide the other axes' count from the limit.
        invalid_with(
            ChunkPlan::tiles(&[0, MAX_CHUNKS + 1], &[1, 1]),
            &["more than"],
        );
        assert_eq!(
            ChunkPlan::tiles(&[1024, 1024], &[1, 1])
                .unwrap()
                .num_chunks(),
            MAX_CHUNKS
        );
        // A tile plan is aligned per axis, then combined.
        invalid_with(
            ChunkPlan::tiles(&[64, 64], &[8, 8])
                .unwrap()
                .align_to_cache_lines(0, 8),
            &["ChunkPlan::grid"],
        );
    }

    #[test]
    fn check_shape_refuses_a_tile_plan_that_does_not_fit() {
        let plan = ChunkPlan::tiles(&[6, 8, 3], &[2, 4, 3]).unwrap();
        assert!(plan.check_shape(&[6, 8, 3], "array", "a").is_ok());
        assert!(plan.check_shape(&[6, 8, 3, 9], "array", "a").is_ok());
        let e = plan.check_shape(&[6, 8], "input", "x").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(
            e.to_string()
                .contains("splits axis 2, but input 'x' has 2 axes"),
            "{e}"
        );
        let e = plan.check_shape(&[6, 9, 3], "output", "y").unwrap_err();
        assert!(
            e.to_string()
                .contains("splits 8 indices along axis 1, but output 'y' has 9 there"),
            "{e}"
        );
        let moved = plan.along(1);
        let e = moved.check_shape(&[8, 8, 3], "array", "a").unwrap_err();
        assert!(e.to_string().contains("splits axis 1 twice"), "{e}");
    }

    proptest! {
        #[test]
        fn plans_cover_without_overlap(len in 0usize..5000, n in 1usize..70, base in 0usize..64, elem in 0usize..4) {
            let plan = ChunkPlan::balanced(len, n).unwrap();
            check_cover(&plan);
            prop_assert_eq!(plan.num_chunks(), n.min(len));
            let lens: Vec<_> = plan.iter().map(|c| c.len()).collect();
            if let (Some(max), Some(min)) = (lens.iter().max(), lens.iter().min()) {
                prop_assert!(max - min <= 1);
            }
            let fixed = ChunkPlan::fixed(len, n).unwrap();
            check_cover(&fixed);
            let size = 1usize << elem;
            let base = base / size * size;
            let aligned = plan.align_to_cache_lines(base, size).unwrap();
            check_cover(&aligned);
            for &b in &aligned.bounds()[1..aligned.bounds().len().max(2) - 1] {
                prop_assert_eq!((base + b * size) % 64, 0);
            }
        }

        #[test]
        fn random_tile_plans_cover_without_overlap(
            shape in proptest::collection::vec(0usize..9, 2..5),
            tile in proptest::collection::vec(1usize..5, 1..5),
            fortran in any::<bool>(),
        ) {
            let tile = &tile[..tile.len().min(shape.len())];
            let plan = ChunkPlan::tiles(&shape, tile).unwrap();
            let cov = coverage(&plan, &shape, fortran);
            prop_assert!(cov.iter().all(|&n| n == 1));
            for (k, c) in plan.iter().enumerate() {
                prop_assert_eq!(c.index, k);
            }
        }
    }
}
