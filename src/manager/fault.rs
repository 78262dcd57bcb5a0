//! Crash points for the containers' crash tests: every publishing store of a list or map
//! update goes through [`publish`], which a test can turn into the place where the process
//! leaves (`_exit`), as a `SIGKILL` between two stores would.

use std::sync::atomic::{compiler_fence, AtomicU32, AtomicU64, Ordering};

/// When non-zero, the process leaves with `_exit(FAULT_EXIT)` at that step of the
/// containers' shared-memory updates (steps counted over every list and map of the
/// process).
static FAULT_AT: AtomicU64 = AtomicU64::new(0);
static FAULT_STEPS: AtomicU64 = AtomicU64::new(0);
pub(crate) const FAULT_EXIT: i32 = 86;

/// From now on leave with `_exit(FAULT_EXIT)` at the `step`-th crash point (0: never).
pub(crate) fn exit_at_step(step: u64) {
    FAULT_STEPS.store(0, Ordering::Relaxed);
    FAULT_AT.store(step, Ordering::Relaxed);
}

/// A point between two stores to shared memory where a holder may die.
#[inline(always)]
pub(crate) fn crash_point() {
    if FAULT_AT.load(Ordering::Relaxed) != 0 {
        fault_step();
    }
}

#[cold]
#[inline(never)]
fn fault_step() {
    if FAULT_STEPS.fetch_add(1, Ordering::Relaxed) + 1 == FAULT_AT.load(Ordering::Relaxed) {
        crate::sys::fork::exit_now(FAULT_EXIT);
    }
}

/// Stores `v` as one step: the compiler keeps every store before it before, and every
/// store after it after (a holder killed between two instructions leaves exactly the
/// stores that precede the kill in program order).
#[inline(always)]
pub(crate) fn publish<A: Publish>(word: &A, v: A::Value) {
    compiler_fence(Ordering::SeqCst);
    word.publish(v);
    compiler_fence(Ordering::SeqCst);
    crash_point();
}

pub(crate) trait Publish {
    type Value;
    fn publish(&self, v: Self::Value);
}

impl Publish for AtomicU32 {
    type Value = u32;
    #[inline(always)]
    fn publish(&self, v: u32) {
        self.store(v, Ordering::Release);
    }
}

impl Publish for AtomicU64 {
    type Value = u64;
    #[inline(always)]
    fn publish(&self, v: u64) {
        self.store(v, Ordering::Release);
    }
}
