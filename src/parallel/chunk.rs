//! `ChunkPlan`: how an index range along one axis of an array is split into chunks that
//! workers process independently.
//!
//! A plan is plain data (a list of index ranges over one axis), so it can be built, tested
//! and inspected on its own. The fork and pool APIs take a plan and give each chunk to one
//! executor; chunks never overlap, so the executors write disjoint parts of the array.

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

/// One chunk of a [`ChunkPlan`]: its position in the plan and its index range along the
/// plan's axis.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Chunk {
    /// Position of the chunk in its plan (0-based); results come back in this order.
    pub index: usize,
    /// The axis the plan splits.
    pub axis: usize,
    /// First index along `axis` (inclusive).
    pub start: usize,
    /// Last index along `axis` (exclusive).
    pub end: usize,
}

impl Chunk {
    /// Number of indices along the axis.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether the chunk covers no index.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The index range `start..end`.
    pub fn range(&self) -> Range<usize> {
        self.start..self.end
    }

    /// This chunk's part of `view` (a view of a whole array, such as the read-only input of
    /// `out = f(in)`): `view.slice_axis(Axis(axis), start..end)`.
    ///
    /// # Panics
    /// When the chunk lies outside `view` along its axis (the jobs check shapes before any
    /// chunk runs, so a chunk handed out by ndshm always fits the arrays of its job).
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
        view.clone()
            .slice_axis_move(Axis(self.axis), Slice::from(self.range()))
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
        view.slice_axis_move(Axis(self.axis), Slice::from(self.range()))
    }

    /// Every axis this chunk splits, with its index range along it: `(axis, start..end)`.
    /// A plan along one axis splits one; code that handles any plan (halos, tiles) should
    /// go through this rather than `axis`/`start`/`end`.
    ///
    /// # Examples
    /// ```
    /// use ndshm::ChunkPlan;
    /// let plan = ChunkPlan::balanced_along(&[6, 4], 1, 2)?;
    /// let c = plan.get(1).unwrap();
    /// assert_eq!(c.ranges().collect::<Vec<_>>(), vec![(1, 2..4)]);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn ranges(&self) -> impl Iterator<Item = (usize, Range<usize>)> {
        std::iter::once((self.axis, self.range()))
    }
}

/// A split of the index range `0..len` along one axis into consecutive, non-overlapping,
/// non-empty chunks that cover it exactly.
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
    /// `bounds[i]..bounds[i + 1]` is chunk `i`; `bounds` starts at 0 and ends at `len`
    /// (a single `0` when the plan is empty).
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

    /// The same plan over axis `axis` (checked against the array when a job runs).
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
    /// [`ErrorKind::InvalidArgument`] when `bytes_per_index == 0`, or when no index of the
    /// array starts a cache line (the data is not aligned to the element stride).
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
    /// their boundaries cannot keep them off each other's cache lines.
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

    /// The axis the plan splits.
    pub fn axis(&self) -> usize {
        self.axis
    }

    /// Length of the split range (the array's extent along the axis).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the plan covers no index.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of chunks.
    pub fn num_chunks(&self) -> usize {
        self.bounds.len() - 1
    }

    /// Chunk `index`, if the plan has that many.
    pub fn get(&self, index: usize) -> Option<Chunk> {
        (index < self.num_chunks()).then(|| Chunk {
            index,
            axis: self.axis,
            start: self.bounds[index],
            end: self.bounds[index + 1],
        })
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

    /// The chunk boundaries: `0`, the inner boundaries, then `len` (`[0]` when empty).
    pub fn bounds(&self) -> &[usize] {
        &self.bounds
    }

    /// Checks that the plan fits an array of `shape` (its axis exists and has the plan's
    /// length); `role` ("input") and `name` name the array in the error.
    pub(crate) fn check_shape(&self, shape: &[usize], role: &str, name: &str) -> Result<()> {
        let len = axis_len(shape, self.axis)?;
        if len != self.len {
            return Err(invalid(format!(
                "the chunk plan splits {} indices along axis {}, but {role} '{name}' has {len} there \
                 (shape {shape:?}): build the plan from this array's shape",
                self.len, self.axis
            )));
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
    }
}
