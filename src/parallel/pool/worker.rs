//! The worker loop: wait for a job (spin, then sleep on the sequence word's futex),
//! claim and run chunks, repeat — and the worker's cache of array mappings.
//!
//! Workers attach the job's arrays by name (without the process-wide registry, whose mutex
//! they inherited from the parent) and cache the mapping keyed by the segment's unique id
//! from its trailer, so page tables stay warm across jobs and a reused name never hits a
//! stale mapping.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::control::{ArrayDesc, Block, SlotRef};
use super::job::run_chunk;
use super::{CACHE_ENTRIES, SPIN};
use crate::segment::{MapAccess, Segment};
use crate::sys::fork as sys_fork;
use crate::sys::{futex, proc, shm};

/// How often a sleeping worker checks that its fork server lives and its cache is fresh.
pub(super) const WORKER_NAP: Duration = Duration::from_millis(500);

/// A worker process's life: wait for a job, claim and run chunks, repeat. Never returns.
///
/// Panics in chunks are caught (and reported) silently: `fork_tracked` installed, in the
/// caller, a panic hook that stays quiet in forked children (the fork server is one, and
/// the workers inherit that state from it). `parent` is the fork server's pid.
pub(super) fn worker_main(block: &Block, slot: usize, parent: i32, mut seen: u32) -> ! {
    let ctl = block.ctl();
    let me = ctl.slot(slot);
    let mut cache = Cache::new();
    loop {
        let seq = wait_for_job(block, me, seen, parent, &mut cache);
        if ctl.shutdown().load(Ordering::Acquire) != 0 {
            sys_fork::exit_now(0);
        }
        seen = seq;
        me.active().store(seq, Ordering::SeqCst);
        while let Some(k) = ctl.claim(seq) {
            run_chunk(ctl, seq, k, Some(me), &mut |all, i| {
                cache.resolve(seq, all, i)
            });
        }
        me.active().store(0, Ordering::SeqCst);
    }
}

/// Waits until the sequence word differs from `seen`: spins for `SPIN`, then sleeps on
/// the futex (waking every `WORKER_NAP` to check that the fork server lives and to drop
/// stale mappings).
fn wait_for_job(block: &Block, me: SlotRef<'_>, seen: u32, parent: i32, cache: &mut Cache) -> u32 {
    let (seq_word, sleepers) = (block.ctl().seq(), block.ctl().sleepers());
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        let s = seq_word.load(Ordering::Acquire);
        if s != seen {
            return s;
        }
        std::hint::spin_loop();
        spins = spins.wrapping_add(1);
        if spins % 64 == 0 && start.elapsed() > SPIN {
            break;
        }
    }
    loop {
        sleepers.fetch_add(1, Ordering::SeqCst);
        me.sleeping().store(1, Ordering::SeqCst);
        if seq_word.load(Ordering::SeqCst) == seen {
            futex::wait(seq_word, seen, Some(WORKER_NAP));
        }
        me.sleeping().store(0, Ordering::SeqCst);
        sleepers.fetch_sub(1, Ordering::SeqCst);
        let s = seq_word.load(Ordering::Acquire);
        if s != seen {
            return s;
        }
        if proc::parent_pid() != parent {
            // The fork server died without stopping us (its death signal should have
            // killed us already): leave.
            sys_fork::exit_now(0);
        }
        cache.evict_stale(&[]);
    }
}

/// A worker's mapping of an array segment.
struct Cached {
    seg: Segment,
    last_used: u64,
}

/// Mappings a worker keeps, by segment id.
///
/// A mapping of a segment whose name is gone (the caller dropped or unlinked the array)
/// would pin the segment's memory: stale mappings are dropped when a job brings an array
/// the cache does not hold (before mapping it), at a job's first chunk when the last check
/// is [`RECHECK`] old, and when the worker naps. The job's own arrays are never dropped.
pub(super) struct Cache {
    map: HashMap<u64, Cached>,
    clock: u64,
    /// The job whose arrays were last resolved.
    job: u32,
    checked: Instant,
}

/// How old the last stale-mapping check of a busy worker may be.
const RECHECK: Duration = Duration::from_millis(50);

impl Cache {
    pub(super) fn new() -> Cache {
        Cache {
            map: HashMap::new(),
            clock: 0,
            job: 0,
            checked: Instant::now(),
        }
    }

    /// Resolves array `i` of job `seq`, whose arrays are `all`.
    pub(super) fn resolve(
        &mut self,
        seq: u32,
        all: &[ArrayDesc],
        i: usize,
    ) -> std::result::Result<*mut u8, String> {
        if self.job != seq {
            self.job = seq;
            let miss = all.iter().any(|d| !self.map.contains_key(&d.segment_id));
            if miss || self.checked.elapsed() >= RECHECK {
                self.evict_stale(all);
            }
        }
        let d = &all[i];
        self.clock += 1;
        let writable = d.writable != 0;
        let usable = self
            .map
            .get(&d.segment_id)
            .is_some_and(|c| !writable || c.seg.is_writable());
        if !usable {
            let name = d
                .name()
                .map_err(|_| "array name is not UTF-8".to_string())?;
            let access = MapAccess {
                writable,
                populate: false,
                register: false,
            };
            let seg = Segment::open(name, access)
                .map_err(|e| format!("could not attach array '{name}': {e}"))?;
            if seg.segment_id() != d.segment_id {
                return Err(format!(
                    "segment '{name}' is no longer the caller's array (id {:#x}, found {:#x}): \
                     its name was unlinked and reused while the caller held it",
                    d.segment_id,
                    seg.segment_id()
                ));
            }
            if self.map.len() >= CACHE_ENTRIES {
                if let Some(&old) = self
                    .map
                    .iter()
                    .min_by_key(|(_, c)| c.last_used)
                    .map(|(id, _)| id)
                {
                    self.map.remove(&old);
                }
            }
            self.map.insert(d.segment_id, Cached { seg, last_used: 0 });
        }
        let c = self
            .map
            .get_mut(&d.segment_id)
            .ok_or_else(|| "array cache lost an entry".to_string())?;
        c.last_used = self.clock;
        let need = d.offset.saturating_add(d.nbytes);
        if need > c.seg.len() as u64 {
            return Err(format!(
                "segment '{}' is shorter ({} bytes) than the caller's array ({need})",
                c.seg.name(),
                c.seg.len()
            ));
        }
        // `offset + nbytes <= len`: the pointer and the array's bytes after it lie inside
        // the mapping, which the cache keeps while the job runs.
        Ok(c.seg.as_ptr().wrapping_add(d.offset as usize))
    }

    /// Drops mappings whose name no longer names their segment (the array was dropped or
    /// unlinked), except those of the arrays in `keep`.
    pub(super) fn evict_stale(&mut self, keep: &[ArrayDesc]) {
        self.checked = Instant::now();
        self.map.retain(|id, c| {
            keep.iter().any(|d| d.segment_id == *id)
                || shm::file_id_of_name(c.seg.name()) == Some(c.seg.file_id())
        });
    }
}
