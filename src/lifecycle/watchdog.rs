//! `CrashCleanup`: a watchdog process that removes this process's segments if it dies
//! without unlinking them (`SIGKILL`, abort), so that nobody has to run `gc`.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::Result;
use crate::lifecycle::gc;
use crate::parallel::process::fork_with;
use crate::sys::{fork, lease, proc};

/// A watchdog for the segments this process owns: while the guard lives, a small forked
/// process waits for this one to end; if it ends without having unlinked its segments
/// (killed by `SIGKILL`, aborted, `_exit`), the watchdog removes the segments that still
/// name this process as their owner (by its kernel-held lease, recorded before the fork:
/// never by pid) and are not persistent, then exits. A segment whose owner is alive or
/// cannot be told is never removed. It is Python's `resource_tracker` done right: it never touches a segment this
/// process merely attached to (CPython gh-82300), or one it persisted.
///
/// The watchdog runs in its own session (`setsid`), so Ctrl-C in the terminal and a kill
/// of the process group do not take it down with its parent. It waits on a pidfd (no
/// polling on Linux 5.3+), holds no mapping of any segment (so removed segments free their
/// memory at once), and is not one of the children that [`SignalCleanup`] stops.
/// Dropping the guard stops and reaps the watchdog.
///
/// Only segments owned by this very process are covered (not those of its workers, which
/// are their own owners). Create the guard in the process that creates the segments, once.
/// To cover chosen segments only, create them with
/// [`CreateOptions::cleanup_on_exit`](crate::CreateOptions::cleanup_on_exit) instead (Python's
/// `track=True`): that starts a watchdog of its own, lazily, for those segments.
///
/// [`SignalCleanup`]: crate::SignalCleanup
///
/// # Examples
/// ```
/// let _watch = ndshm::CrashCleanup::spawn()?; // for the rest of main
/// # let name = format!("doc-crash-{}", std::process::id());
/// let a = ndshm::SharedNdArray::<f64, ndarray::Ix1>::zeros(&name, 1000)?;
/// // Even `kill -9` of this process now leaves no segment behind.
/// # Ok::<(), ndshm::Error>(())
/// ```
#[must_use = "the watchdog is stopped when the guard is dropped"]
pub struct CrashCleanup {
    pid: i32,
}

impl CrashCleanup {
    /// Forks the watchdog.
    ///
    /// # Errors
    /// An OS error when `fork` fails.
    ///
    /// # Examples
    /// ```
    /// let watch = ndshm::CrashCleanup::spawn()?;
    /// // ... create segments; if this process is killed, the watchdog removes them ...
    /// drop(watch); // stops and reaps the watchdog
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn spawn() -> Result<CrashCleanup> {
        let parent = proc::pid();
        // Claimed here, before the fork: the segments this process owns record this lease.
        let owner = lease::mine();
        let pid = fork_with(move || {
            let _ = catch_unwind(AssertUnwindSafe(|| watch(parent, owner)));
            fork::exit_now(0)
        })?;
        Ok(CrashCleanup { pid })
    }

    /// The watchdog's pid.
    ///
    /// # Examples
    /// ```
    /// let watch = ndshm::CrashCleanup::spawn()?;
    /// assert!(watch.pid() > 0 && watch.pid() != std::process::id() as i32);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn pid(&self) -> i32 {
        self.pid
    }
}

/// The watchdog's life: leave the parent's session, drop the inherited mappings, wait for
/// the parent to end, remove what it still owns (by lease `owner`; nothing when it has
/// none).
fn watch(parent: i32, owner: u64) {
    let _ = proc::new_session();
    // This forked process never touches the handles it inherited from its parent: it only
    // reads /dev/shm through gc, which opens files itself.
    proc::unmap_inherited_shm_mappings();
    proc::wait_for_parent_exit(parent);
    // The parent is gone, but a child it forked an instant before it died may not have run
    // its fork handler yet, which closes the child's copy of the parent's lease fd: until
    // then the kernel still holds the lease. Wait (bounded) for it to read dead.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while lease::check(owner) == lease::Liveness::Alive && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let _ = gc::gc_owned_by(owner);
}

impl Drop for CrashCleanup {
    fn drop(&mut self) {
        let _ = fork::send_signal(self.pid, libc::SIGKILL);
        let _ = fork::wait_child(self.pid, false);
    }
}

impl fmt::Debug for CrashCleanup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrashCleanup")
            .field("pid", &self.pid)
            .finish()
    }
}
