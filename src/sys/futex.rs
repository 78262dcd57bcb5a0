//! Futex wait and wake on words in shared memory (process-shared: no `FUTEX_PRIVATE_FLAG`).

use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Sleeps while `*word == expected`, at most `timeout` (forever when `None`).
///
/// Returns `false` when the timeout passed, `true` otherwise (woken, value changed, or a
/// spurious wake-up: callers re-check their condition in a loop).
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> bool {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a live, aligned u32 for the whole call; the kernel only reads it
    // (and compares it to `expected`); `ts_ptr` is null or points to a timespec that lives
    // until the call returns. FUTEX_WAIT without the private flag works across processes
    // that map the same memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    !(r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT))
}

/// Wakes up to `n` processes sleeping on `word`; returns how many were woken.
pub(crate) fn wake(word: &AtomicU32, n: i32) -> usize {
    // SAFETY: `word` is a live, aligned u32; FUTEX_WAKE does not access its value.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    r.max(0) as usize
}

/// Wakes up to `n` sleepers on the word at `word`, which may have been unmapped since the
/// caller learnt its address (then the kernel answers `EFAULT` and nothing happens; if
/// something else is mapped there now, its sleepers see a spurious wake-up, which futex
/// users must tolerate). Async-signal-safe: one system call, no memory access.
pub(crate) fn wake_addr(word: *const AtomicU32, n: i32) {
    // SAFETY: FUTEX_WAKE only looks the address up in the kernel (it never reads or writes
    // the word from user space), so any address is sound: an unmapped one gives EFAULT.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word,
            libc::FUTEX_WAKE,
            n,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    #[test]
    fn wait_times_out_and_wake_wakes() {
        let w = AtomicU32::new(0);
        assert!(!wait(&w, 0, Some(Duration::from_millis(5))));
        // Value differs: returns at once.
        assert!(wait(&w, 1, Some(Duration::from_secs(5))));
        let w = Arc::new(AtomicU32::new(0));
        let w2 = Arc::clone(&w);
        let t = std::thread::spawn(move || {
            while w2.load(Ordering::Acquire) == 0 {
                wait(&w2, 0, Some(Duration::from_secs(5)));
            }
        });
        std::thread::sleep(Duration::from_millis(20));
        w.store(1, Ordering::Release);
        wake(&w, 1);
        t.join().unwrap();
    }
}
