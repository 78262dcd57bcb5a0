//! Opt-in cleanup on fatal signals: Ctrl-C (`SIGINT`), `SIGTERM` or `SIGHUP` in the middle
//! of a forked job stops and reaps the workers, unlinks the segments this process owns, and
//! then lets the signal kill the process as it would have without ndshm.
//!
//! A library must not take over a program's signals behind its back, so nothing happens
//! until the program asks for it with [`SignalCleanup::install`].

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;

use crate::error::{Error, ErrorKind, Result};
use crate::segment::owned;
use crate::segment::trailer::{Trailer, TRAILER_LEN};
use crate::sys::{lease, proc, signal};

/// The signals [`SignalCleanup::install`] handles.
const DEFAULT_SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Signals the handler may be installed for: their default action ends the process (so
/// re-raising after the cleanup ends it), and they report no fault (after a SIGSEGV the
/// process state cannot be trusted enough to walk tables).
const CATCHABLE: [i32; 13] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGPIPE,
    libc::SIGALRM,
    libc::SIGXCPU,
    libc::SIGXFSZ,
    libc::SIGVTALRM,
    libc::SIGPROF,
    libc::SIGPWR,
];

/// How long the handler gives the children to end on `SIGTERM` (and clean up after
/// themselves) before it kills the rest with `SIGKILL`.
const GRACE_MS: u64 = 200;
const POLL_MS: u64 = 2;

/// The pid of the process whose handler is running (0: none). Keyed by pid because a
/// forked child inherits the value.
static CLEANING: AtomicI32 = AtomicI32::new(0);

/// What is installed: the signals and their previous dispositions, and how many guards
/// share the installation.
struct Installed {
    guards: usize,
    saved: Vec<(i32, signal::SavedAction)>,
}

static INSTALLED: Mutex<Installed> = Mutex::new(Installed {
    guards: 0,
    saved: Vec::new(),
});

/// The handler: async-signal-safe only (atomics, `kill`, `waitpid`, `nanosleep`, `open`,
/// `pread`, `close`, `unlink`, `sigaction`, `raise`); no allocation, no lock.
extern "C" fn on_fatal_signal(sig: libc::c_int) {
    // getpid (std::process::id) is async-signal-safe.
    let me = proc::pid();
    let prev = CLEANING.load(Ordering::Acquire);
    if prev == me
        || CLEANING
            .compare_exchange(prev, me, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
    {
        // Another thread of this process is already cleaning up; it will end the process.
        return;
    }
    stop_children();
    unlink_owned_segments();
    signal::die_of(sig);
}

/// Asks every tracked child to stop (`SIGTERM`: a child that inherited this handler
/// cleans up its own segments and children), waits up to [`GRACE_MS`], then kills the rest
/// with `SIGKILL`, and reaps them all.
fn stop_children() {
    let mut any = false;
    owned::for_each_child(|pid| {
        signal::kill(pid, libc::SIGTERM);
        any = true;
    });
    let mut waited = 0;
    while any && waited < GRACE_MS {
        any = false;
        owned::for_each_child(|pid| {
            if signal::reap(pid, false) {
                owned::untrack_child(pid);
            } else {
                any = true;
            }
        });
        if any {
            signal::sleep_ms(POLL_MS);
            waited += POLL_MS;
        }
    }
    owned::for_each_child(|pid| signal::kill(pid, libc::SIGKILL));
    owned::for_each_child(|pid| {
        signal::reap(pid, true);
        owned::untrack_child(pid);
    });
}

/// Unlinks every segment this process owns, if the segment under the name still records
/// this process as its owner (a name removed and re-created by someone else is left).
///
/// The owner is recognised by its lease (see the crate docs): a pid could name another
/// process in another pid namespace. Only when neither this process nor the segment has a
/// lease (none could be claimed) does the handler fall back to pid and start time.
fn unlink_owned_segments() {
    // getpid (std::process::id) is async-signal-safe.
    let me = proc::pid();
    let my_lease = lease::mine_if_claimed();
    let my_start = proc::self_start_time_cached();
    owned::for_each_segment(|name| {
        let mut tail = [0u8; TRAILER_LEN];
        if !signal::read_tail(name, &mut tail) {
            return;
        }
        let Some((pid, start, owner)) = Trailer::owner_fields(&tail) else {
            return;
        };
        let ours = match my_lease {
            Some(mine) => owner == mine,
            None => owner == 0 && pid == me && my_start.is_none_or(|s| s == start),
        };
        if ours {
            signal::unlink_segment(name);
        }
    });
}

/// Cleanup on `SIGINT`, `SIGTERM` and `SIGHUP`, installed while this guard lives.
///
/// When one of these signals arrives, the handler
/// 1. sends `SIGTERM` to every child this process forked through ndshm ([`Process`],
///    [`scope`], the worker pool), gives them 200 ms to end, kills the rest with `SIGKILL`,
///    and reaps them all (no zombie, no orphan left computing);
/// 2. unlinks every segment this process owns (not persistent, not merely attached);
/// 3. restores the default disposition and re-raises the signal, so the process dies of
///    that signal (a shell sees "killed by SIGINT", exit status 130).
///
/// The handler only makes async-signal-safe calls: it allocates nothing and takes no lock,
/// so it is sound whatever the interrupted thread was doing.
///
/// Children forked after `install` inherit the handler, and with it the same cleanup of
/// *their* segments and children (each process acts only on what it made itself).
/// A signal whose disposition is "ignore" when `install` runs (`nohup` sets `SIGHUP` so) is
/// left ignored. Dropping the last guard restores the dispositions that were there before.
/// Guards nest: installing twice shares one installation.
///
/// [`Process`]: crate::Process
/// [`scope`]: crate::scope
///
/// # Examples
/// ```
/// use ndshm::{SharedNdArray, SignalCleanup};
/// # let name = format!("doc-signals-{}", std::process::id());
/// let _cleanup = SignalCleanup::install()?; // for the rest of main
/// let a = SharedNdArray::<f64, ndarray::Ix1>::zeros(&name, 1000)?;
/// // ... fork workers; Ctrl-C now stops them and removes /dev/shm/<name> ...
/// # Ok::<(), ndshm::Error>(())
/// ```
#[derive(Debug)]
#[must_use = "the handlers are removed when the guard is dropped"]
pub struct SignalCleanup {
    _private: (),
}

impl SignalCleanup {
    /// Installs the cleanup handler for `SIGINT`, `SIGTERM` and `SIGHUP`.
    ///
    /// # Errors
    /// An OS error from `sigaction`.
    ///
    /// # Examples
    /// ```
    /// let cleanup = ndshm::SignalCleanup::install()?;
    /// let again = ndshm::SignalCleanup::install()?; // guards nest: one installation
    /// drop(again);
    /// drop(cleanup); // the previous dispositions are back
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn install() -> Result<SignalCleanup> {
        Self::install_for(&DEFAULT_SIGNALS)
    }

    /// Installs the cleanup handler for the given signals (for example adding `SIGQUIT`).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for a signal whose default action does not end the
    /// process (`SIGCHLD`, `SIGWINCH`, `SIGCONT`, `SIGTSTP`…: re-raising it after the
    /// cleanup would leave the process running without its segments), one that cannot be
    /// caught or reports a fault (`SIGKILL`, `SIGSTOP`, `SIGSEGV`, `SIGBUS`, `SIGILL`,
    /// `SIGFPE`, `SIGABRT`), a real-time signal or an unknown number; an OS error from
    /// `sigaction` (then no disposition was changed).
    ///
    /// # Examples
    /// ```
    /// use ndshm::{ErrorKind, SignalCleanup};
    /// let _cleanup = SignalCleanup::install_for(&[libc::SIGINT, libc::SIGQUIT])?;
    /// // A signal whose default action does not end the process is refused.
    /// let err = SignalCleanup::install_for(&[libc::SIGCHLD]).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn install_for(signals: &[i32]) -> Result<SignalCleanup> {
        for &sig in signals {
            if !CATCHABLE.contains(&sig) {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!(
                        "cannot install the cleanup handler for signal {sig}: it must be a \
                         signal whose default action ends the process and that reports no \
                         fault: SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGPIPE, \
                         SIGALRM, SIGXCPU, SIGXFSZ, SIGVTALRM, SIGPROF or SIGPWR"
                    ),
                ));
            }
        }
        // Compute the start time now: the handler may only read the cached value.
        proc::self_start_time();
        let mut inst = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
        let mut block = DEFAULT_SIGNALS.to_vec();
        block.extend_from_slice(signals);
        let mut fresh = Vec::new();
        let result = (|| {
            for &sig in signals {
                if inst.saved.iter().chain(&fresh).any(|(s, _)| *s == sig) {
                    continue;
                }
                let ignored = signal::is_ignored(sig).map_err(|e| {
                    Error::os(format!("cannot read the disposition of signal {sig}"), e)
                })?;
                if ignored {
                    continue;
                }
                // `on_fatal_signal` is async-signal-safe (see its doc), as `install_handler`
                // requires.
                let old = signal::install_handler(sig, on_fatal_signal, &block).map_err(|e| {
                    Error::os(format!("cannot install a handler for signal {sig}"), e)
                })?;
                fresh.push((sig, old));
            }
            Ok(())
        })();
        if let Err(e) = result {
            // Leave the dispositions as they were before this call.
            for (sig, old) in fresh.drain(..).rev() {
                let _ = signal::restore(sig, &old);
            }
            return Err(e);
        }
        inst.saved.append(&mut fresh);
        inst.guards += 1;
        Ok(SignalCleanup { _private: () })
    }
}

impl Drop for SignalCleanup {
    fn drop(&mut self) {
        let mut inst = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
        inst.guards = inst.guards.saturating_sub(1);
        if inst.guards == 0 {
            for (sig, old) in inst.saved.drain(..) {
                let _ = signal::restore(sig, &old);
            }
        }
    }
}

/// Makes the calling process (a forked worker) die with `SIGKILL` when its parent dies,
/// even of `SIGKILL`, so that no worker of a killed parent keeps running
/// (`prctl(PR_SET_PDEATHSIG)`). If the parent is already gone, the caller dies at once.
///
/// Call it first thing in a child, passing the parent's pid as the parent saw it before
/// forking. The kernel sends the signal when the *thread* that forked the child ends, not
/// only the whole parent: use it for children forked by a thread that outlives them (the
/// main thread, or the thread that owns a pool).
///
/// The parent's segments are not removed by this (its owner is dead): `ndshm gc` removes
/// them.
///
/// # Errors
/// An OS error from `prctl`.
///
/// # Examples
/// ```
/// let parent = std::process::id() as i32;
/// let child = ndshm::Process::spawn(move || ndshm::die_with_parent(parent))?;
/// child.join()?;
/// # Ok::<(), ndshm::Error>(())
/// ```
pub fn die_with_parent(parent: i32) -> Result<()> {
    proc::die_with_parent(parent).map_err(|e| Error::os("prctl(PR_SET_PDEATHSIG)", e))
}
