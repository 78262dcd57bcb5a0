//! The waiting discipline the futex-based primitives share ([`Event`](crate::Event),
//! [`Semaphore`](crate::Semaphore), [`Condition`](crate::Condition),
//! [`Barrier`](crate::Barrier)): spin briefly (bounded by [`SPIN`]), then sleep on a
//! futex word, counted in a `sleepers` word so that wakers make the `FUTEX_WAKE` system
//! call only when someone sleeps.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::sync::raw_lock::SPIN;
use crate::sys::futex;

/// Busy-wait rounds (`spin_loop` hints, well under a microsecond in all) before a waiter
/// starts yielding its CPU.
const SPINS: u32 = 64;

/// Spins until `ready()` holds, bounded: [`SPINS`] busy rounds, then `sched_yield` rounds
/// until [`SPIN`] has passed (so that a partner that needs this CPU runs: on a loaded
/// machine a pure busy-wait only delays the very wake-up it waits for); says whether
/// `ready()` came true. The caller sleeps on its futex after a `false`.
#[inline]
pub(crate) fn spin_until(mut ready: impl FnMut() -> bool) -> bool {
    if ready() {
        return true;
    }
    for _ in 0..SPINS {
        std::hint::spin_loop();
        if ready() {
            return true;
        }
    }
    let start = Instant::now();
    loop {
        std::thread::yield_now();
        if ready() {
            return true;
        }
        if start.elapsed() >= SPIN {
            return false;
        }
    }
}

/// The time left until `deadline`: `Some(None)` without a deadline, `None` once it passed.
pub(crate) fn left(deadline: Option<Instant>) -> Option<Option<Duration>> {
    match deadline {
        None => Some(None),
        Some(d) => {
            let l = d.saturating_duration_since(Instant::now());
            (!l.is_zero()).then_some(Some(l))
        }
    }
}

/// Sleeps while `word` holds `expected`, at most `slice` (forever when `None`), counted in
/// `sleepers` for the duration. The caller re-checks its condition afterwards (wake-ups may
/// be spurious).
pub(crate) fn sleep(
    word: &AtomicU32,
    expected: u32,
    sleepers: &AtomicU32,
    slice: Option<Duration>,
) {
    // SeqCst pairs with the waker's SeqCst change of `word` then load of `sleepers`:
    // either the waker sees this sleeper, or the kernel sees the changed word.
    sleepers.fetch_add(1, Ordering::SeqCst);
    futex::wait(word, expected, slice);
    sleepers.fetch_sub(1, Ordering::SeqCst);
}

/// Wakes up to `n` sleepers of `word` if any are counted in `sleepers` (call after
/// changing `word` with `SeqCst`).
#[inline]
pub(crate) fn wake(word: &AtomicU32, sleepers: &AtomicU32, n: i32) {
    if sleepers.load(Ordering::SeqCst) > 0 {
        futex::wake(word, n);
    }
}

/// A deadline `timeout` from now (`None`: too far to represent, so no deadline).
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}
