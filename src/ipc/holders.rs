//! Who holds one side of a channel: the *holder table* in shared memory and each handle's
//! [`Registration`] in it, shared by the pipe (one table per end: a hang-up is the other
//! end's table going empty) and the queues (one table of producers: consumers learn that
//! every producer is gone).
//!
//! A side is **gone** when it had a holder and now every entry is released or names a
//! process whose lease (the kernel-vouched liveness token of the crate docs, "Crashes and
//! signals") is dead. Copies of a handle inherited through `fork` do not count until the
//! child registers itself; a handle dropped by its registering process after it forked
//! leaves a *pending hand-over* until a child settles it (see
//! [`Connection`](crate::Connection), "Hang-up and hand-over", for the public rules).
//!
//! Layout of one side's block ([`BLOCK`] bytes): `ever` (set when a first handle
//! registered), `overflow` (registrations that found no free entry: the side is then
//! never reported gone), then [`ENTRIES`] entries of `[lease u64][state u64]`. A state is
//! `tag << 32 | handed << 2 | flags` ([`HELD`], [`PENDING`]); 0 with a non-zero lease is
//! an entry being claimed (counts as held).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::segment::shared_mem::SharedMem;
use crate::sys::lease::{self, Liveness};
use crate::sys::proc::{fork_mark, forked_since, process_token, random_u64};

/// Bytes of one side's block.
pub(crate) const BLOCK: usize = 1024;
const ENTRIES: usize = (BLOCK - 64) / 16;
/// The magic word in front of a segment's holder blocks.
pub(crate) const TABLE_MAGIC: u64 = u64::from_le_bytes(*b"ndshmHLD");
const HELD: u64 = 1;
const PENDING: u64 = 2;
const HANDED_ONE: u64 = 4;
const HANDED_MASK: u64 = 0xffff_fffc;

/// One side's holder block, seen through a [`BLOCK`]-byte window.
#[derive(Clone, Copy)]
pub(crate) struct Holders<'a> {
    mem: SharedMem<'a>,
}

impl<'a> Holders<'a> {
    /// The block in `mem` (a window of [`BLOCK`] bytes).
    pub(crate) fn new(mem: SharedMem<'a>) -> Holders<'a> {
        Holders { mem }
    }

    fn entry(&self, i: usize) -> (&'a AtomicU64, &'a AtomicU64) {
        let e = self.mem.sub(64 + i * 16, 16);
        (e.u64(0), e.u64(8))
    }

    /// Registers this process as a holder: the entry index and its tag, or `None` when
    /// the table is full (then the side is marked never gone).
    fn register(&self) -> Option<(u32, u32)> {
        let me = lease::holder();
        let tag = (random_u64() as u32) | 1;
        self.mem.u64(0).store(1, Ordering::SeqCst);
        for pass in 0..2 {
            for i in 0..ENTRIES {
                let (l, st) = self.entry(i);
                let cur = l.load(Ordering::Acquire);
                let free = cur == 0
                    || (pass == 1
                        && st.load(Ordering::Acquire) != 0
                        && lease::check(cur) == Liveness::Dead);
                if free
                    && l.compare_exchange(cur, me, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                {
                    st.store((tag as u64) << 32 | HELD, Ordering::SeqCst);
                    return Some((i as u32, tag));
                }
            }
        }
        self.mem.u64(8).fetch_add(1, Ordering::SeqCst);
        None
    }

    /// Releases the registration `(idx, tag)` of `owner`. `handing` (the registering
    /// process forked since): a registration no child has settled yet becomes a pending
    /// hand-over instead. Returns whether it was freed.
    fn release(&self, idx: u32, tag: u32, owner: u64, handing: bool) -> bool {
        if idx as usize >= ENTRIES {
            return false;
        }
        let (l, st) = self.entry(idx as usize);
        loop {
            let cur = st.load(Ordering::Acquire);
            if l.load(Ordering::Acquire) != owner || (cur >> 32) as u32 != tag {
                return false; // not ours any more (taken over as dead)
            }
            let new = if handing && cur & HANDED_MASK == 0 {
                (cur & !HELD) | PENDING
            } else {
                0
            };
            if st
                .compare_exchange(cur, new, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                if new == 0 {
                    let _ = l.compare_exchange(owner, 0, Ordering::AcqRel, Ordering::Relaxed);
                    return true;
                }
                return false;
            }
        }
    }

    /// A child settles the registration its copy was inherited with: a pending hand-over
    /// is freed (returns true), a registration still held is marked handed.
    fn settle(&self, idx: u32, tag: u32, owner: u64) -> bool {
        if idx as usize >= ENTRIES {
            return false;
        }
        let (l, st) = self.entry(idx as usize);
        loop {
            let cur = st.load(Ordering::Acquire);
            if l.load(Ordering::Acquire) != owner || (cur >> 32) as u32 != tag {
                return false;
            }
            let (new, freed) = if cur & PENDING != 0 {
                (0, true)
            } else if cur & HANDED_MASK == HANDED_MASK {
                (cur, false)
            } else {
                (cur + HANDED_ONE, false)
            };
            if st
                .compare_exchange(cur, new, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                if freed {
                    let _ = l.compare_exchange(owner, 0, Ordering::AcqRel, Ordering::Relaxed);
                }
                return freed;
            }
        }
    }

    /// Whether a holder ever registered (one load).
    #[inline]
    pub(crate) fn ever(&self) -> bool {
        self.mem.u64(0).load(Ordering::SeqCst) != 0
    }

    /// Whether every holder is gone: the side had one, and each registered entry is free
    /// or names a process the kernel reports dead (a pending hand-over counts while its
    /// process lives). Clears the dead entries it finds. Bounded: [`ENTRIES`] entries, a
    /// liveness check (a few system calls) per entry of another process.
    pub(crate) fn gone(&self) -> bool {
        if self.mem.u64(0).load(Ordering::SeqCst) == 0
            || self.mem.u64(8).load(Ordering::SeqCst) != 0
        {
            return false;
        }
        for i in 0..ENTRIES {
            let (l, st) = self.entry(i);
            let who = l.load(Ordering::SeqCst);
            if who == 0 {
                continue;
            }
            let cur = st.load(Ordering::SeqCst);
            if cur == 0 || lease::check(who) != Liveness::Dead {
                return false;
            }
            if st
                .compare_exchange(cur, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                let _ = l.compare_exchange(who, 0, Ordering::AcqRel, Ordering::Relaxed);
            }
        }
        true
    }
}

/// Which process registered a handle, where, and what to release. Atomics only (no lock:
/// a forked child uses its copy without taking any).
#[derive(Debug)]
pub(crate) struct Registration {
    /// [`process_token`] of the registering process; 0 none; `token ^` [`CLAIMING`] while a
    /// thread of this process registers.
    owner: AtomicU64,
    idx: AtomicU32,
    tag: AtomicU32,
    /// The registering process's lease (the table entry's word).
    lease: AtomicU64,
    /// [`fork_mark`] when it registered: thread serial, its forks, the process's forks.
    forks: [AtomicU64; 3],
}

/// XORed with a process token: that process is registering the handle. A child forked
/// while its parent was registering sees the parent's marker, not its own, and goes on.
const CLAIMING: u64 = 0x5a5a_5a5a_5a5a_5a5a;
/// `idx` of a handle whose registration found the table full, or of none.
const NO_ENTRY: u32 = u32::MAX;

/// What [`Registration::ready`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ready {
    /// Registered in this process already: nothing done (the hot path).
    Already,
    /// Registered this process now. `freed`: settling the inherited registration freed a
    /// pending hand-over (the side may now be gone: check).
    Registered { freed: bool },
}

impl Registration {
    /// Not registered anywhere (a handle that registers on first use).
    pub(crate) fn none() -> Registration {
        Registration {
            owner: AtomicU64::new(0),
            idx: AtomicU32::new(NO_ENTRY),
            tag: AtomicU32::new(0),
            lease: AtomicU64::new(0),
            forks: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    /// Registers this process as a holder in `h` (called by the process that made the
    /// handle, or through [`ready`](Self::ready)).
    pub(crate) fn register_here(&self, h: Holders<'_>) {
        let (idx, tag) = h.register().unwrap_or((NO_ENTRY, 0));
        self.idx.store(idx, Ordering::Relaxed);
        self.tag.store(tag, Ordering::Relaxed);
        self.lease.store(lease::holder(), Ordering::Relaxed);
        let mark = fork_mark();
        for (w, v) in self.forks.iter().zip([mark.0, mark.1, mark.2]) {
            w.store(v, Ordering::Relaxed);
        }
        self.owner.store(process_token(), Ordering::Release);
    }

    /// Whether this process registered this handle already (one relaxed load of the
    /// handle and one of the process token).
    #[inline]
    pub(crate) fn is_here(&self) -> bool {
        self.owner.load(Ordering::Acquire) == process_token()
    }

    /// Before a use that makes this process a holder: unless this process registered the
    /// handle already, registers it and settles the registration the handle carries from
    /// another process (a forked child's copy).
    #[inline]
    pub(crate) fn ready(&self, h: Holders<'_>) -> Ready {
        if self.is_here() {
            return Ready::Already;
        }
        self.ready_slow(h)
    }

    #[cold]
    fn ready_slow(&self, h: Holders<'_>) -> Ready {
        let me = process_token();
        loop {
            let owner = self.owner.load(Ordering::Acquire);
            if owner == me {
                return Ready::Already;
            }
            if owner == me ^ CLAIMING {
                std::thread::yield_now();
                continue;
            }
            if self
                .owner
                .compare_exchange(owner, me ^ CLAIMING, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            let inherited = self.inherited(owner);
            // Register first, then settle: the side never looks unheld in between.
            self.register_here(h);
            let freed = inherited.is_some_and(|(idx, tag, lease)| h.settle(idx, tag, lease));
            return Ready::Registered { freed };
        }
    }

    /// Whether this handle carries a registration made by another process (a forked
    /// child's copy that has not been used yet). One load and two compares.
    #[inline]
    pub(crate) fn is_inherited(&self) -> bool {
        let o = self.owner.load(Ordering::Relaxed);
        let me = process_token();
        o != 0 && o != me && o != me ^ CLAIMING
    }

    /// A use that does not make this process a holder (a get on a queue): settles the
    /// registration a forked child's copy carries, so the copy no longer stands for its
    /// parent's (see the module docs). Returns whether that freed a pending hand-over (the
    /// side may now be gone: check).
    #[cold]
    pub(crate) fn settle_inherited(&self, h: Holders<'_>) -> bool {
        let o = self.owner.load(Ordering::Acquire);
        let me = process_token();
        if o == 0 || o == me || o == me ^ CLAIMING {
            return false;
        }
        // Read before the claim: once `owner` moved from `o`, a thread of this process may
        // register and overwrite them.
        let inherited = self.inherited(o);
        if self
            .owner
            .compare_exchange(o, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        self.idx.store(NO_ENTRY, Ordering::Relaxed);
        inherited.is_some_and(|(idx, tag, lease)| h.settle(idx, tag, lease))
    }

    /// The registration this handle carries, if `owner` (its owner word) names one.
    fn inherited(&self, owner: u64) -> Option<(u32, u32, u64)> {
        if owner == 0 {
            return None;
        }
        let idx = self.idx.load(Ordering::Relaxed);
        (idx != NO_ENTRY).then(|| {
            (
                idx,
                self.tag.load(Ordering::Relaxed),
                self.lease.load(Ordering::Relaxed),
            )
        })
    }

    /// Gives up this handle's hold: by its registering process, releases the registration
    /// (a pending hand-over if the process forked since); by a child that never used its
    /// copy, settles the inherited one. Returns whether an entry was freed (the side may
    /// now be gone: check). Idempotent: a second call does nothing.
    pub(crate) fn release(&self, h: Holders<'_>) -> bool {
        let me = process_token();
        let owner = self.owner.swap(0, Ordering::AcqRel);
        if owner == me ^ CLAIMING {
            return false;
        }
        let Some((idx, tag, lease)) = self.inherited(owner) else {
            return false;
        };
        self.idx.store(NO_ENTRY, Ordering::Relaxed);
        if owner == me {
            let [a, b, c] = &self.forks;
            let then = (
                a.load(Ordering::Relaxed),
                b.load(Ordering::Relaxed),
                c.load(Ordering::Relaxed),
            );
            h.release(idx, tag, lease, forked_since(then))
        } else {
            h.settle(idx, tag, lease)
        }
    }
}
