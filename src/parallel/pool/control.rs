//! The control block: the one piece of shared anonymous memory through which the caller,
//! the fork server and the workers talk, and the protocol words in it.
//!
//! Layout (`#[repr(C)]`, declared once by [`Control`] and reached only through
//! [`SharedMem`] at `offset_of!` offsets, so nothing here is a raw pointer):
//! - the protocol words, each on its own cache line: the *sequence word* (futex of idle
//!   workers: the latest job's number), the sleeper count, the *claim word* (job number,
//!   next chunk, chunk count: see [`pack`]), the *done* counter (futex of the waiting
//!   caller), the caller's sleeping flag, and the *event* word the fork server bumps;
//! - the first failure of the current job (chunk, pid, message);
//! - one [`Slot`] per worker (pid, the job and chunk it is in, how it ended);
//! - the job descriptor ([`JobDesc`]: trampoline and function words, parameters, arrays,
//!   the plan's grid and chunk bounds), written by the caller between jobs only;
//! - after the block, page-aligned, the results area of map-reduce jobs.

use std::mem::{offset_of, size_of};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

use bytemuck::{Pod, Zeroable};

use crate::error::Result;
use crate::parallel::chunk::{Chunk, ChunkPlan, MAX_CHUNKS, MAX_SPLIT_AXES};
use crate::segment::region::Region;
use crate::segment::shared_mem::SharedMem;

use super::{CACHE_ENTRIES, MAX_DIMS, MAX_PARAMS, MAX_RESULTS, MAX_WORKERS};

pub(super) const MAX_NAME: usize = 256;
/// Most arrays of one job (the multi-array jobs of [`JobBuilder`](super::JobBuilder)).
/// At most [`CACHE_ENTRIES`]: a worker resolves every array of a chunk before it runs it,
/// and its cache must hold them all at once (evicting one of them would unmap an array
/// whose pointer the chunk is about to use).
pub(super) const MAX_ARRAYS: usize = 12;
const _: () = assert!(MAX_ARRAYS <= CACHE_ENTRIES);
pub(super) const MAX_MSG: usize = 2048;
pub(super) const NO_FAILURE: u32 = u32::MAX;

// Claim word: | seq (22 bits) | next chunk (21 bits) | chunk count (21 bits) |
pub(super) const COUNT_BITS: u32 = 21;
pub(super) const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
pub(super) const SEQ_MASK: u64 = (1 << 22) - 1;

/// The claim word of job `seq` whose next chunk is `next`, of `n`.
pub(super) fn pack(seq: u32, next: u64, n: u64) -> u64 {
    ((seq as u64 & SEQ_MASK) << (2 * COUNT_BITS)) | (next << COUNT_BITS) | n
}

/// `(seq, next, n)` of a claim word.
pub(super) fn unpack(word: u64) -> (u64, u64, u64) {
    (
        word >> (2 * COUNT_BITS),
        (word >> COUNT_BITS) & COUNT_MASK,
        word & COUNT_MASK,
    )
}

/// A slot's `chunk` word while its worker runs chunk `k` of job `seq`.
pub(super) fn chunk_tag(seq: u32, k: usize) -> u64 {
    (u64::from(seq) << 32) | (k as u64 + 1)
}

/// Slot states (written by the fork server).
pub(super) const RUNNING: u32 = 1;
pub(super) const EXITED: u32 = 2;
pub(super) const FORK_FAILED: u32 = 3;

/// A value on its own cache line, so that the words executors hammer do not share one.
#[repr(C, align(64))]
struct Line<T>(T);

/// What the control block says about one worker (layout only: see [`SlotRef`]).
///
/// The worker writes `active`, `chunk` and `sleeping`; the fork server writes the rest
/// (`pid`, `state`, the exit status, `gen`), and the caller only reads.
#[repr(C, align(64))]
#[allow(dead_code)] // a layout, reached through SharedMem at its offsets
struct Slot {
    pid: AtomicI32,
    /// Sequence number of the job the worker takes part in; 0 between jobs. Set before
    /// the worker claims a chunk of the job, cleared after it stopped claiming.
    active: AtomicU32,
    /// While the worker runs a chunk: [`chunk_tag`]; 0 otherwise. Cleared before the chunk
    /// is counted done.
    chunk: AtomicU64,
    /// 1 while the worker is counted in `sleepers`.
    sleeping: AtomicU32,
    /// 0 (never spawned), `RUNNING` (pid is a live or unreaped worker), `EXITED` (the server
    /// saw it end: `exit_kind`/`exit_value`), `FORK_FAILED` (`exit_value` is the errno).
    state: AtomicU32,
    /// 1: exited with code `exit_value`; 2: killed by signal `exit_value`.
    exit_kind: AtomicU32,
    exit_value: AtomicI32,
    /// Bumped by the server after each spawn (success or failure) into this slot.
    gen: AtomicU32,
}

/// Where an array of a job lives, as the caller describes it to the workers.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub(super) struct ArrayDesc {
    pub(super) segment_id: u64,
    /// Device and inode of the segment's file (the name check before dispatch).
    pub(super) dev: u64,
    pub(super) ino: u64,
    /// Byte offset of the first element in the segment.
    pub(super) offset: u64,
    /// Bytes of data from `offset`.
    pub(super) nbytes: u64,
    pub(super) writable: u32,
    pub(super) fortran: u32,
    pub(super) ndim: u32,
    pub(super) name_len: u32,
    /// How a multi-array job's function sees the array (`job::MODE_*`; 0 for the
    /// single-array jobs, whose trampolines know their arrays' roles).
    pub(super) mode: u32,
    pub(super) reserved: u32,
    /// Indices of halo on each side of the chunk, along each split axis (`read_halo`).
    pub(super) halo: u64,
    pub(super) shape: [u64; MAX_DIMS],
    pub(super) name: [u8; MAX_NAME],
}

impl ArrayDesc {
    /// The array's name as the caller wrote it.
    pub(super) fn name(&self) -> std::result::Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.name[..(self.name_len as usize).min(MAX_NAME)])
    }
}

/// The job in the control block (layout only): written by the caller between jobs only,
/// read by executors after they won a chunk of the job.
#[repr(C)]
#[allow(dead_code)] // a layout, reached through SharedMem at its offsets
struct JobDesc {
    head: JobHead,
    arrays: [ArrayDesc; MAX_ARRAYS],
    params: [u64; MAX_PARAMS / 8],
    grid: Grid,
    /// The boundaries of each split axis of the plan, one axis after the other (axis `i`'s
    /// `count[i] + 1` boundaries follow those of the axes before it). A plan holds at most
    /// `MAX_CHUNKS` chunks, so the counts' sum is at most `MAX_CHUNKS + MAX_SPLIT_AXES - 1`
    /// (for counts >= 1, `a + b <= a * b + 1`).
    bounds: [u64; MAX_CHUNKS + 2 * MAX_SPLIT_AXES],
}

/// The plan's grid: its split axes in grid order (the last varies fastest between
/// consecutive chunks) and the number of ranges along each. A plan along one axis has
/// `n_axes == 1`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
struct Grid {
    n_axes: u64,
    axis: [u64; MAX_SPLIT_AXES],
    count: [u64; MAX_SPLIT_AXES],
}

/// The shared control block (layout only; followed in the mapping by the results area).
#[repr(C)]
#[allow(dead_code)] // a layout, reached through SharedMem at its offsets
struct Control {
    seq: Line<AtomicU32>,
    sleepers: Line<AtomicU32>,
    claim: Line<AtomicU64>,
    done: Line<AtomicU32>,
    caller_sleeping: Line<AtomicU32>,
    events: Line<AtomicU32>,
    shutdown: AtomicU32,
    failed_chunk: AtomicU32,
    failed_pid: AtomicI32,
    failed_len: AtomicU32,
    failed_msg: [u8; MAX_MSG],
    slots: [Slot; MAX_WORKERS],
    desc: JobDesc,
}

const CONTROL_LEN: usize = size_of::<Control>();
// A descriptor is 456 bytes: twelve of them (5.4 KiB) beside the 8 MiB of chunk bounds.
const _: () = assert!(size_of::<ArrayDesc>() == 456);
const _: () = assert!(size_of::<JobDesc>() < (MAX_CHUNKS + 1) * 8 + 8192);
const RESULTS_OFF: usize = CONTROL_LEN.next_multiple_of(4096);
const MAP_LEN: usize = RESULTS_OFF + MAX_RESULTS;
const DESC: usize = offset_of!(Control, desc);

/// The job's fixed fields, read and written as one copy.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
struct JobHead {
    trampoline: u64,
    user_fn: u64,
    n_chunks: u64,
    n_arrays: u64,
    params_len: u64,
    result_size: u64,
}

/// The job's fixed fields, as an executor reads them.
#[derive(Clone, Copy, Debug)]
pub(super) struct JobHeader {
    pub(super) trampoline: u64,
    pub(super) user_fn: u64,
    pub(super) n_chunks: usize,
    pub(super) n_arrays: usize,
    pub(super) params_len: usize,
    pub(super) result_size: usize,
}

/// One worker's slot in the control block.
#[derive(Clone, Copy)]
pub(super) struct SlotRef<'a> {
    mem: SharedMem<'a>,
}

impl<'a> SlotRef<'a> {
    pub(super) fn pid(&self) -> &'a AtomicI32 {
        self.mem.atomic(offset_of!(Slot, pid))
    }
    pub(super) fn active(&self) -> &'a AtomicU32 {
        self.mem.u32(offset_of!(Slot, active))
    }
    pub(super) fn chunk(&self) -> &'a AtomicU64 {
        self.mem.u64(offset_of!(Slot, chunk))
    }
    pub(super) fn sleeping(&self) -> &'a AtomicU32 {
        self.mem.u32(offset_of!(Slot, sleeping))
    }
    pub(super) fn state(&self) -> &'a AtomicU32 {
        self.mem.u32(offset_of!(Slot, state))
    }
    pub(super) fn exit_kind(&self) -> &'a AtomicU32 {
        self.mem.u32(offset_of!(Slot, exit_kind))
    }
    pub(super) fn exit_value(&self) -> &'a AtomicI32 {
        self.mem.atomic(offset_of!(Slot, exit_value))
    }
    pub(super) fn gen(&self) -> &'a AtomicU32 {
        self.mem.u32(offset_of!(Slot, gen))
    }
}

/// The shared control block: anonymous shared memory that the fork server and the workers
/// inherit, reached only through this accessor (bounds-checked [`SharedMem`] underneath).
pub(super) struct Block {
    region: Region,
}

impl Block {
    /// Maps a zeroed control block (and the results area), with no failure recorded.
    pub(super) fn new() -> Result<Block> {
        let block = Block {
            region: Region::anonymous(MAP_LEN, |_| Ok(()))?,
        };
        block
            .ctl()
            .failed_chunk()
            .store(NO_FAILURE, Ordering::Relaxed);
        Ok(block)
    }

    /// The block's words and descriptor, through one window: take it once per operation.
    pub(super) fn ctl(&self) -> Ctl<'_> {
        Ctl {
            mem: self.region.payload(),
        }
    }
}

/// A window on the control block, with an accessor per word (cheap to copy).
#[derive(Clone, Copy)]
pub(super) struct Ctl<'a> {
    mem: SharedMem<'a>,
}

impl<'a> Ctl<'a> {
    fn mem(&self) -> SharedMem<'a> {
        self.mem
    }

    /// Futex word of the workers: the sequence number of the latest job (or shutdown).
    pub(super) fn seq(&self) -> &'a AtomicU32 {
        self.mem().u32(offset_of!(Control, seq))
    }
    /// Workers asleep (or about to sleep) on `seq`.
    pub(super) fn sleepers(&self) -> &'a AtomicU32 {
        self.mem().u32(offset_of!(Control, sleepers))
    }
    /// The claim word (see [`pack`]).
    pub(super) fn claim_word(&self) -> &'a AtomicU64 {
        self.mem().u64(offset_of!(Control, claim))
    }
    /// Futex word of the caller: chunks of the current job that have finished.
    pub(super) fn done(&self) -> &'a AtomicU32 {
        self.mem().u32(offset_of!(Control, done))
    }
    /// 1 while the caller is asleep (or about to sleep) on `done`.
    pub(super) fn caller_sleeping(&self) -> &'a AtomicU32 {
        self.mem().u32(offset_of!(Control, caller_sleeping))
    }
    /// Futex word the fork server bumps after each change of a slot's `state`.
    pub(super) fn events(&self) -> &'a AtomicU32 {
        self.mem().u32(offset_of!(Control, events))
    }
    pub(super) fn shutdown(&self) -> &'a AtomicU32 {
        self.mem().u32(offset_of!(Control, shutdown))
    }
    /// Chunk of the first failure of the current job, or `NO_FAILURE`.
    pub(super) fn failed_chunk(&self) -> &'a AtomicU32 {
        self.mem().u32(offset_of!(Control, failed_chunk))
    }
    pub(super) fn failed_pid(&self) -> &'a AtomicI32 {
        self.mem().atomic(offset_of!(Control, failed_pid))
    }

    /// Worker `i`'s slot.
    pub(super) fn slot(&self, i: usize) -> SlotRef<'a> {
        assert!(i < MAX_WORKERS, "ndshm bug: worker slot {i} out of range");
        SlotRef {
            mem: self.mem().sub(
                offset_of!(Control, slots) + i * size_of::<Slot>(),
                size_of::<Slot>(),
            ),
        }
    }

    /// Claims the next chunk of job `seq`, if any is left.
    pub(super) fn claim(&self, seq: u32) -> Option<usize> {
        let claim = self.claim_word();
        let mut word = claim.load(Ordering::Acquire);
        loop {
            let (s, next, n) = unpack(word);
            if s != seq as u64 & SEQ_MASK || next >= n {
                return None;
            }
            match claim.compare_exchange_weak(
                word,
                word + (1 << COUNT_BITS),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(next as usize),
                Err(w) => word = w,
            }
        }
    }

    /// Records the failure of chunk `k` in process `pid`, if it is the job's first (later
    /// ones are dropped): the CAS winner alone writes the message, before the `done` RMW
    /// (or the reaping) that the caller's join observes.
    pub(super) fn fail(&self, k: usize, pid: i32, msg: &str) {
        if self
            .failed_chunk()
            .compare_exchange(NO_FAILURE, k as u32, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            let mut n = msg.len().min(MAX_MSG);
            while !msg.is_char_boundary(n) {
                n -= 1;
            }
            self.mem()
                .write(offset_of!(Control, failed_msg), &msg.as_bytes()[..n]);
            self.mem()
                .u32(offset_of!(Control, failed_len))
                .store(n as u32, Ordering::Relaxed);
            self.failed_pid().store(pid, Ordering::Relaxed);
        }
    }

    /// The message of the recorded failure.
    pub(super) fn failed_msg(&self) -> String {
        let len = self
            .mem()
            .u32(offset_of!(Control, failed_len))
            .load(Ordering::Relaxed) as usize;
        let mut buf = vec![0u8; len.min(MAX_MSG)];
        self.mem().read(offset_of!(Control, failed_msg), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }

    fn desc_u64(&self, off: usize) -> u64 {
        self.mem().read_pod(DESC + off)
    }

    /// Writes `v` at `off` of the descriptor unless it already holds it: a job like the
    /// previous one then leaves the descriptor's cache lines shared in the workers' caches.
    fn set_desc<T: Pod + PartialEq>(&self, off: usize, v: &T) {
        if self.mem().read_pod::<T>(DESC + off) != *v {
            self.mem().write_pod(DESC + off, v);
        }
    }

    /// The current job's fixed fields (read by an executor that won a chunk of it, or by
    /// the caller).
    pub(super) fn job(&self) -> JobHeader {
        let h: JobHead = self.mem().read_pod(DESC + offset_of!(JobDesc, head));
        JobHeader {
            trampoline: h.trampoline,
            user_fn: h.user_fn,
            n_chunks: h.n_chunks as usize,
            n_arrays: (h.n_arrays as usize).min(MAX_ARRAYS),
            params_len: (h.params_len as usize).min(MAX_PARAMS),
            result_size: h.result_size as usize,
        }
    }

    /// Chunk `k` of the current job: its position in the grid (the last split axis
    /// fastest), then each axis' range from that axis' boundaries.
    pub(super) fn chunk(&self, job: &JobHeader, k: usize) -> Chunk {
        debug_assert!(k < job.n_chunks, "ndshm bug: chunk {k} of {}", job.n_chunks);
        let bound = |i: usize| self.desc_u64(offset_of!(JobDesc, bounds) + 8 * i) as usize;
        let grid = offset_of!(JobDesc, grid);
        if self.desc_u64(grid + offset_of!(Grid, n_axes)) <= 1 {
            // A plan along one axis (the common case): two words and the axis.
            let axis = self.desc_u64(grid + offset_of!(Grid, axis)) as usize;
            return Chunk::from_ranges(k, std::iter::once((axis, bound(k), bound(k + 1))));
        }
        let g: Grid = self.mem().read_pod(DESC + grid);
        let n = (g.n_axes as usize).clamp(1, MAX_SPLIT_AXES);
        let mut pos = [0usize; MAX_SPLIT_AXES];
        let mut rest = k;
        for i in (1..n).rev() {
            let c = (g.count[i] as usize).max(1);
            pos[i] = rest % c;
            rest /= c;
        }
        pos[0] = rest;
        let mut first = [0usize; MAX_SPLIT_AXES];
        for i in 1..n {
            first[i] = first[i - 1] + g.count[i - 1] as usize + 1;
        }
        Chunk::from_ranges(
            k,
            (0..n).map(|i| {
                let b = first[i] + pos[i];
                (g.axis[i] as usize, bound(b), bound(b + 1))
            }),
        )
    }

    /// Copies array `i` of the current job into `out`.
    pub(super) fn array_into(&self, i: usize, out: &mut ArrayDesc) {
        self.mem().read(
            DESC + offset_of!(JobDesc, arrays) + i * size_of::<ArrayDesc>(),
            bytemuck::bytes_of_mut(out),
        );
    }

    /// Array `i` of the current job.
    #[cfg(test)]
    pub(super) fn array(&self, i: usize) -> ArrayDesc {
        self.mem()
            .read_pod(DESC + offset_of!(JobDesc, arrays) + i * size_of::<ArrayDesc>())
    }

    /// Copies the current job's parameters into `buf` (`params_len` bytes).
    pub(super) fn params(&self, buf: &mut [u8]) {
        self.mem().read(DESC + offset_of!(JobDesc, params), buf);
    }

    /// Writes the descriptor of a job: only between jobs (no chunk claimable or running).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn write_job<'d>(
        &self,
        trampoline: u64,
        user_fn: u64,
        plan: &ChunkPlan,
        arrays: impl IntoIterator<Item = &'d ArrayDesc, IntoIter: ExactSizeIterator>,
        params: &[u8],
        result_size: usize,
    ) {
        let arrays = arrays.into_iter();
        // The job methods take at most MAX_ARRAYS arrays (the builder refuses more).
        assert!(
            arrays.len() <= MAX_ARRAYS,
            "ndshm bug: a job of {} arrays",
            arrays.len()
        );
        let head = JobHead {
            trampoline,
            user_fn,
            n_chunks: plan.num_chunks() as u64,
            n_arrays: arrays.len() as u64,
            params_len: params.len() as u64,
            result_size: result_size as u64,
        };
        self.set_desc(offset_of!(JobDesc, head), &head);
        // Compared 64 bytes at a time, written only where they differ.
        let p = DESC + offset_of!(JobDesc, params);
        for (i, piece) in params.chunks(64).enumerate() {
            let mut stored = [0u8; 64];
            self.mem().read(p + 64 * i, &mut stored[..piece.len()]);
            if stored[..piece.len()] != *piece {
                self.mem().write(p + 64 * i, piece);
            }
        }
        for (i, d) in arrays.enumerate() {
            self.set_desc(offset_of!(JobDesc, arrays) + i * size_of::<ArrayDesc>(), d);
        }
        let mut grid = Grid::zeroed();
        let mut at = 0;
        for (i, (axis, bounds)) in plan.splits().enumerate().take(MAX_SPLIT_AXES) {
            grid.n_axes = i as u64 + 1;
            grid.axis[i] = axis as u64;
            grid.count[i] = bounds.len().saturating_sub(1) as u64;
            for &b in bounds {
                self.set_desc(offset_of!(JobDesc, bounds) + 8 * at, &(b as u64));
                at += 1;
            }
        }
        self.set_desc(offset_of!(JobDesc, grid), &grid);
    }

    /// The results area of map-reduce jobs ([`MAX_RESULTS`] bytes).
    pub(super) fn results(&self) -> SharedMem<'a> {
        self.mem().sub(RESULTS_OFF, MAX_RESULTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_word_packs_and_claims_in_order() {
        let w = pack(5, 3, 9);
        assert_eq!(unpack(w), (5, 3, 9));
        assert_eq!(
            unpack(pack(u32::MAX, 0, COUNT_MASK)),
            (SEQ_MASK, 0, COUNT_MASK)
        );
        assert!(MAX_CHUNKS as u64 <= COUNT_MASK);

        let block = Block::new().unwrap();
        block
            .ctl()
            .claim_word()
            .store(pack(7, 0, 3), Ordering::Release);
        // Another job's number never claims.
        assert_eq!(block.ctl().claim(8), None);
        assert_eq!(block.ctl().claim(7), Some(0));
        assert_eq!(block.ctl().claim(7), Some(1));
        assert_eq!(block.ctl().claim(7), Some(2));
        assert_eq!(block.ctl().claim(7), None);
        assert_eq!(
            unpack(block.ctl().claim_word().load(Ordering::Relaxed)),
            (7, 3, 3)
        );
    }

    #[test]
    fn first_failure_wins() {
        let block = Block::new().unwrap();
        block.ctl().fail(4, 11, "panicked: first");
        block.ctl().fail(2, 12, "panicked: second");
        assert_eq!(block.ctl().failed_chunk().load(Ordering::Relaxed), 4);
        assert_eq!(block.ctl().failed_pid().load(Ordering::Relaxed), 11);
        assert_eq!(block.ctl().failed_msg(), "panicked: first");
    }

    #[test]
    fn a_job_descriptor_reads_back_as_written() {
        let block = Block::new().unwrap();
        let mut d = ArrayDesc::zeroed();
        d.segment_id = 9;
        d.name[..3].copy_from_slice(b"abc");
        d.name_len = 3;
        let plan = ChunkPlan::fixed_along(&[3, 10], 1, 4).unwrap();
        block.ctl().write_job(1, 2, &plan, &[d], &[7, 8, 9], 8);
        let job = block.ctl().job();
        assert_eq!((job.trampoline, job.user_fn), (1, 2));
        assert_eq!((job.n_chunks, job.n_arrays, job.params_len), (3, 1, 3));
        assert_eq!(job.result_size, 8);
        let c = block.ctl().chunk(&job, 1);
        assert_eq!((c.index, c.start, c.end, c.axis), (1, 4, 8, 1));
        assert_eq!(Some(c), plan.get(1));
        assert_eq!(block.ctl().array(0).name(), Ok("abc"));
        let mut p = [0u8; 3];
        block.ctl().params(&mut p);
        assert_eq!(p, [7, 8, 9]);
    }

    #[test]
    fn a_tile_plan_decodes_to_the_plans_own_chunks() {
        let block = Block::new().unwrap();
        let d = ArrayDesc::zeroed();
        for plan in [
            ChunkPlan::tiles(&[7, 5, 3], &[2, 2, 2]).unwrap(),
            ChunkPlan::tiles_along(&[9, 4], &[(1, 3), (0, 2)]).unwrap(),
            ChunkPlan::balanced_tiles(&[5, 6, 7, 8], &[2, 3, 1, 4]).unwrap(),
            // After a tile plan, a plan along one axis decodes as before.
            ChunkPlan::fixed(9, 2).unwrap(),
        ] {
            block.ctl().write_job(1, 2, &plan, &[d], &[], 0);
            let job = block.ctl().job();
            assert_eq!(job.n_chunks, plan.num_chunks());
            for k in 0..plan.num_chunks() {
                assert_eq!(
                    Some(block.ctl().chunk(&job, k)),
                    plan.get(k),
                    "{plan:?} chunk {k}"
                );
            }
        }
    }

    #[test]
    fn the_bounds_area_holds_the_largest_tile_plans() {
        // The most boundaries a plan of MAX_CHUNKS chunks can need: all but one axis with
        // one range.
        let block = Block::new().unwrap();
        let d = ArrayDesc::zeroed();
        let plan = ChunkPlan::tiles(&[MAX_CHUNKS, 1, 1, 1], &[1, 1, 1, 1]).unwrap();
        assert_eq!(plan.num_chunks(), MAX_CHUNKS);
        block.ctl().write_job(1, 2, &plan, &[d], &[], 0);
        let job = block.ctl().job();
        let last = MAX_CHUNKS - 1;
        assert_eq!(Some(block.ctl().chunk(&job, last)), plan.get(last));
    }
}
