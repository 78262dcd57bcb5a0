//! What this process owns and must clean up: the segments it will unlink and the children
//! it must reap, kept in fixed tables of atomics so that a signal handler can walk them
//! (no locks, no allocation).
//!
//! Entries record the pid that made them: a forked child inherits the tables but never acts
//! on its parent's entries.

use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU8, Ordering};

use crate::sys::proc;

const MAX_CHILDREN: usize = 1024;
const MAX_SEGMENTS: usize = 256;
const NAME_CAP: usize = 256;

struct ChildSlot {
    parent: AtomicI32,
    pid: AtomicI32,
}

struct SegmentSlot {
    /// 0: free; otherwise the pid of the owner process that filled it. Claimed with a CAS
    /// from 0 to -1 (being written), then set to the pid once the name is written.
    owner: AtomicI32,
    len: AtomicU32,
    name: [AtomicU8; NAME_CAP],
}

#[allow(clippy::declare_interior_mutable_const)]
const CHILD_SLOT: ChildSlot = ChildSlot {
    parent: AtomicI32::new(0),
    pid: AtomicI32::new(0),
};
#[allow(clippy::declare_interior_mutable_const)]
const BYTE: AtomicU8 = AtomicU8::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const SEGMENT_SLOT: SegmentSlot = SegmentSlot {
    owner: AtomicI32::new(0),
    len: AtomicU32::new(0),
    name: [BYTE; NAME_CAP],
};

static CHILDREN: [ChildSlot; MAX_CHILDREN] = [CHILD_SLOT; MAX_CHILDREN];
static SEGMENTS: [SegmentSlot; MAX_SEGMENTS] = [SEGMENT_SLOT; MAX_SEGMENTS];

/// Records child `pid` of this process (to be killed and reaped on a fatal signal).
pub(crate) fn track_child(pid: i32) {
    let me = proc::pid();
    for slot in &CHILDREN {
        if slot
            .pid
            .compare_exchange(0, pid, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            slot.parent.store(me, Ordering::Release);
            return;
        }
    }
}

/// Forgets child `pid` (it has been reaped).
pub(crate) fn untrack_child(pid: i32) {
    let me = proc::pid();
    for slot in &CHILDREN {
        if slot.pid.load(Ordering::Acquire) == pid && slot.parent.load(Ordering::Acquire) == me {
            slot.parent.store(0, Ordering::Release);
            slot.pid.store(0, Ordering::Release);
            return;
        }
    }
}

/// Records that this process owns segment `name` (to be unlinked on a fatal signal).
pub(crate) fn track_segment(name: &str) {
    let bytes = name.as_bytes();
    if bytes.len() > NAME_CAP {
        return;
    }
    for slot in &SEGMENTS {
        if slot
            .owner
            .compare_exchange(0, -1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            for (dst, &b) in slot.name.iter().zip(bytes) {
                dst.store(b, Ordering::Relaxed);
            }
            slot.len.store(bytes.len() as u32, Ordering::Relaxed);
            slot.owner.store(proc::pid(), Ordering::Release);
            return;
        }
    }
}

fn slot_name_is(slot: &SegmentSlot, name: &[u8]) -> bool {
    slot.len.load(Ordering::Relaxed) as usize == name.len()
        && slot
            .name
            .iter()
            .zip(name)
            .all(|(a, &b)| a.load(Ordering::Relaxed) == b)
}

/// Forgets segment `name` (unlinked, persisted, or handed to another owner).
pub(crate) fn untrack_segment(name: &str) {
    let me = proc::pid();
    for slot in &SEGMENTS {
        if slot.owner.load(Ordering::Acquire) == me && slot_name_is(slot, name.as_bytes()) {
            slot.owner.store(0, Ordering::Release);
            return;
        }
    }
}

/// Visits, without locking or allocating, the children this process tracks.
pub(crate) fn for_each_child(mut f: impl FnMut(i32)) {
    let me = proc::pid();
    for slot in &CHILDREN {
        let pid = slot.pid.load(Ordering::Acquire);
        if pid != 0 && slot.parent.load(Ordering::Acquire) == me {
            f(pid);
        }
    }
}

/// Visits, without locking or allocating, the names of the segments this process owns
/// (as bytes, copied to a stack buffer).
pub(crate) fn for_each_segment(mut f: impl FnMut(&[u8])) {
    let me = proc::pid();
    let mut buf = [0u8; NAME_CAP];
    for slot in &SEGMENTS {
        if slot.owner.load(Ordering::Acquire) == me {
            let len = (slot.len.load(Ordering::Relaxed) as usize).min(NAME_CAP);
            for (dst, src) in buf.iter_mut().zip(&slot.name).take(len) {
                *dst = src.load(Ordering::Relaxed);
            }
            f(&buf[..len]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_track_and_forget() {
        track_segment("cleanup-unit-a");
        let mut seen = Vec::new();
        for_each_segment(|n| seen.push(n.to_vec()));
        assert!(seen.iter().any(|n| n == b"cleanup-unit-a"));
        untrack_segment("cleanup-unit-a");
        let mut seen = Vec::new();
        for_each_segment(|n| seen.push(n.to_vec()));
        assert!(!seen.iter().any(|n| n == b"cleanup-unit-a"));

        track_child(999_999);
        let mut kids = Vec::new();
        for_each_child(|p| kids.push(p));
        assert!(kids.contains(&999_999));
        untrack_child(999_999);
        let mut kids = Vec::new();
        for_each_child(|p| kids.push(p));
        assert!(!kids.contains(&999_999));
    }
}
