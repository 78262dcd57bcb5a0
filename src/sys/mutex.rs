//! A robust, process-shared glibc `pthread_mutex_t` living in shared memory: the lock
//! area of every ndshm trailer (and of anonymous regions) is one [`RobustMutex`].
//!
//! # Layout (64 bytes, 8-byte aligned)
//! | offset | field | |
//! |---|---|---|
//! | 0 | `pthread_mutex_t` (40 bytes on x86_64 glibc, room for 48) | ROBUST, PROCESS_SHARED, ERRORCHECK, no priority inheritance |
//! | 48 | holder (`u64`, atomic) | the holder's [`process_token`], 0 when unlocked |
//! | 56 | state (`u64`, atomic) | [`READY`] in the high 16 bits once initialised, [`BROKEN`] (bit 47), recoveries in the low 47 |
//!
//! # Why a pthread mutex
//! Liveness of the holder comes from the kernel, not from `/proc`: glibc puts every robust
//! mutex a thread holds on that thread's *robust list* (registered with the kernel once per
//! thread by glibc, which owns the list head: ndshm never calls `set_robust_list`). When the
//! thread ends for any reason — `SIGKILL` included — the kernel walks the list, sets
//! `FUTEX_OWNER_DIED` in each mutex word still owned by the thread and wakes a waiter, who
//! gets `EOWNERDEAD`. That works whatever pid namespace the holder and the waiter live in
//! and needs no readable `/proc`; a live holder is never overtaken, because nobody but the
//! kernel (or the holder itself) ever releases its lock.
//!
//! Ownership is per *thread*. The mutex is of type ERRORCHECK: a thread that locks it twice
//! gets `EDEADLK` (a typed error, [`LockError::WouldDeadlock`]) instead of hanging, and
//! unlocking from a thread that does not hold it fails with `EPERM` without touching it.
//!
//! # Thread ids across pid namespaces
//! The mutex word holds the owner's thread id *as the owner's pid namespace numbers it*.
//! Two threads in different pid namespaces can carry the same number (every container's
//! first process is pid 1). glibc then answers `EDEADLK` to the second one although it does
//! not hold the lock; ndshm tells the two cases apart with the holder's process token (a
//! relock is `EDEADLK` *and* our own token in the holder field) and lets the other one wait
//! (polling every [`COLLISION_POLL`]) until the holder unlocks or dies. One corner remains
//! that no user-space code can close: the kernel also inspects the mutex a dying thread was
//! in the middle of locking (glibc's `list_op_pending`) and marks it `FUTEX_OWNER_DIED` if
//! its word holds the dying thread's own number, so a waiter killed while a *same-numbered*
//! thread of another pid namespace holds the lock would free that live holder's lock. ndshm
//! narrows the window (it never starts a wait inside glibc while the word holds its own
//! number, and sleeps there in slices of [`SLICE`], after which glibc looks again and
//! answers `EDEADLK`), but cannot close it across namespaces whose thread ids collide.
//!
//! [`process_token`]: crate::sys::proc::process_token

use std::cell::UnsafeCell;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::sys::proc;

/// How long `lock` spins (re-trying while the word reads free) before it sleeps in the
/// kernel: waking a sleeping process on this machine costs about 20 µs.
pub(crate) const SPIN: Duration = Duration::from_micros(20);
/// How often a waiter re-tries while the lock is held by a thread of another pid namespace
/// that carries the waiter's own thread id (see the module docs).
pub(crate) const COLLISION_POLL: Duration = Duration::from_millis(1);

/// The longest a waiter sleeps inside glibc before it looks at the lock again.
const SLICE: Duration = Duration::from_millis(10);

/// Size of the lock area a [`RobustMutex`] occupies.
pub(crate) const AREA_LEN: usize = 64;
/// Marks an initialised lock area (high 16 bits of the state word).
const READY: u64 = 0x4e44_u64 << 48; // "ND"
const MAGIC_MASK: u64 = 0xffff << 48;
/// Set once any locker saw `ENOTRECOVERABLE`. glibc's `pthread_mutex_trylock` leaves the
/// word holding the caller's thread id when it answers `ENOTRECOVERABLE`, so the answer is
/// remembered here rather than asked again.
const BROKEN: u64 = 1 << 47;
const COUNT_MASK: u64 = BROKEN - 1;
/// The robust-futex ABI (linux/futex.h): owner thread id in the low 30 bits.
const FUTEX_TID_MASK: u32 = 0x3fff_ffff;

/// Room for a `pthread_mutex_t` at the start of the lock area.
#[repr(C)]
union MutexRoom {
    mutex: libc::pthread_mutex_t,
    _room: [u64; 6],
}

const _: () = assert!(std::mem::size_of::<libc::pthread_mutex_t>() <= 48);
const _: () = assert!(std::mem::align_of::<libc::pthread_mutex_t>() <= 8);

/// The lock area as it lies in shared memory.
#[repr(C, align(8))]
pub(crate) struct RobustMutex {
    mutex: UnsafeCell<MutexRoom>,
    /// The [`proc::process_token`] of the process whose thread holds the lock; written by
    /// the holder right after it locks and cleared right before it unlocks.
    holder: AtomicU64,
    /// [`READY`] | number of recoveries from a dead holder.
    state: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<RobustMutex>() == AREA_LEN);
const _: () = assert!(std::mem::offset_of!(RobustMutex, holder) == 48);

// SAFETY: the pthread mutex is made to be used by many threads (and processes) at once
// through a pointer; glibc synchronises every access to it. The other fields are atomics.
unsafe impl Sync for RobustMutex {}

/// Why a lock could not be taken (besides "busy" and "timed out").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockError {
    /// The calling thread holds the lock already (the mutex is not recursive).
    WouldDeadlock,
    /// A holder gave the lock up without making it consistent after its owner died (only a
    /// foreign program can do that): the mutex can never be locked again.
    NotRecoverable,
    /// The lock area was never initialised (not made by this version of ndshm).
    NotInitialised,
    /// Any other error number from glibc.
    Os(i32),
}

impl LockError {
    /// The error as an `io::Error`, for messages and `source()`.
    pub(crate) fn to_io(self) -> io::Error {
        io::Error::from_raw_os_error(match self {
            LockError::WouldDeadlock => libc::EDEADLK,
            LockError::NotRecoverable => libc::ENOTRECOVERABLE,
            LockError::NotInitialised => libc::EINVAL,
            LockError::Os(e) => e,
        })
    }
}

/// A taken lock: whether its previous holder died holding it.
pub(crate) type OwnerDied = bool;

/// What one attempt of the underlying pthread call came to.
enum Step {
    Got(OwnerDied),
    Busy,
    /// `EDEADLK` while the lock belongs to another process: a thread of another pid
    /// namespace that has our thread id holds it.
    Collision,
}

extern "C" {
    // glibc >= 2.30; the `libc` crate does not declare it yet. Same ABI as
    // `pthread_mutex_timedlock` plus the clock id.
    fn pthread_mutex_clocklock(
        mutex: *mut libc::pthread_mutex_t,
        clockid: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

impl RobustMutex {
    /// Initialises the lock area at `ptr`: an unlocked robust, process-shared,
    /// error-checking mutex without priority inheritance, no recoveries, marked ready.
    ///
    /// # Safety
    /// - `ptr` is 8-byte aligned and points to [`AREA_LEN`] writable bytes that stay
    ///   mapped while this runs;
    /// - no thread or process uses these bytes as a lock yet (the segment or region is not
    ///   published / shared), and nobody initialises them again while it is in use.
    pub(crate) unsafe fn init(ptr: *mut u8) -> io::Result<()> {
        let this = ptr.cast::<RobustMutex>();
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: `attr` is a local that pthread_mutexattr_init initialises; every other
        // call receives the initialised attribute object, and it is destroyed once.
        // `mutex` points into the caller's writable, unshared area (see `# Safety`), which
        // has room and alignment for a pthread_mutex_t (asserted at compile time).
        unsafe {
            check(libc::pthread_mutexattr_init(attr.as_mut_ptr()))?;
            let a = attr.as_mut_ptr();
            let set = check(libc::pthread_mutexattr_settype(
                a,
                libc::PTHREAD_MUTEX_ERRORCHECK,
            ))
            .and_then(|()| {
                check(libc::pthread_mutexattr_setpshared(
                    a,
                    libc::PTHREAD_PROCESS_SHARED,
                ))
            })
            .and_then(|()| {
                check(libc::pthread_mutexattr_setrobust(
                    a,
                    libc::PTHREAD_MUTEX_ROBUST,
                ))
            })
            .and_then(|()| {
                check(libc::pthread_mutexattr_setprotocol(
                    a,
                    libc::PTHREAD_PRIO_NONE,
                ))
            })
            .and_then(|()| {
                let mutex = std::ptr::addr_of_mut!((*this).mutex).cast::<libc::pthread_mutex_t>();
                check(libc::pthread_mutex_init(mutex, a))
            });
            libc::pthread_mutexattr_destroy(a);
            set?;
            (*this).holder.store(0, Ordering::Relaxed);
            (*this).state.store(READY, Ordering::Release);
        }
        Ok(())
    }

    /// Initialises the lock area at the start of `area`, as [`init`](Self::init) does.
    ///
    /// # Errors
    /// An OS error when glibc refuses the mutex attributes (it does not on Linux).
    ///
    /// # Panics
    /// When `area` is shorter than [`AREA_LEN`] or not 8-byte aligned (a bug in the
    /// caller's layout).
    pub(crate) fn init_in(area: &mut [u8]) -> io::Result<()> {
        assert!(
            area.len() >= AREA_LEN && area.as_ptr() as usize % 8 == 0,
            "ndshm bug: a lock area needs {AREA_LEN} bytes, 8-byte aligned"
        );
        // SAFETY: the area is long and aligned enough (asserted) and writable; the
        // exclusive borrow means no one else in this process uses these bytes, as a lock or
        // otherwise, while they are initialised (and the caller shares them only later).
        unsafe { Self::init(area.as_mut_ptr()) }
    }

    /// The lock area at `ptr`.
    ///
    /// # Safety
    /// - `ptr` is 8-byte aligned and points to [`AREA_LEN`] bytes of memory that stay mapped
    ///   (shared) for `'a`;
    /// - those bytes are only ever used through this type (in any process).
    pub(crate) unsafe fn from_ptr<'a>(ptr: *mut u8) -> &'a RobustMutex {
        // SAFETY: forwarded to the caller. Every bit pattern is a valid RobustMutex (a
        // byte union and atomics); an uninitialised area is detected by the state word.
        unsafe { &*ptr.cast::<RobustMutex>() }
    }

    fn raw(&self) -> *mut libc::pthread_mutex_t {
        self.mutex.get().cast()
    }

    /// The mutex word (glibc keeps it at offset 0: `__data.__lock`, the futex of the
    /// robust-futex ABI). Read only, for spinning and diagnostics.
    fn word(&self) -> &AtomicU32 {
        // SAFETY: the first 4 bytes of the 8-byte aligned mutex, inside `self`; glibc and
        // the kernel access this word only atomically, and we only load it.
        unsafe { AtomicU32::from_ptr(self.raw().cast::<u32>()) }
    }

    fn check_ready(&self) -> Result<(), LockError> {
        let state = self.state.load(Ordering::Acquire);
        if state & MAGIC_MASK != READY {
            Err(LockError::NotInitialised)
        } else if state & BROKEN != 0 {
            Err(LockError::NotRecoverable)
        } else {
            Ok(())
        }
    }

    /// Classifies a pthread return code; takes the bookkeeping steps of a successful lock.
    fn step(&self, rc: libc::c_int) -> Result<Step, LockError> {
        match rc {
            0 => Ok(Step::Got(self.taken(false))),
            libc::EOWNERDEAD => {
                // SAFETY: EOWNERDEAD means this thread now holds the mutex, whose previous
                // owner died; marking it consistent is the documented next step.
                let rc = unsafe { libc::pthread_mutex_consistent(self.raw()) };
                debug_assert_eq!(rc, 0, "pthread_mutex_consistent after EOWNERDEAD");
                self.state.fetch_add(1, Ordering::Relaxed);
                Ok(Step::Got(self.taken(true)))
            }
            libc::EBUSY | libc::ETIMEDOUT => Ok(Step::Busy),
            libc::EDEADLK => {
                // Only we write our token, and we clear it before every unlock: if it is
                // there, this very thread holds the lock (another thread of this process
                // has another thread id, so glibc would not say EDEADLK to us).
                if self.holder.load(Ordering::Acquire) == proc::process_token() {
                    Err(LockError::WouldDeadlock)
                } else {
                    Ok(Step::Collision)
                }
            }
            libc::ENOTRECOVERABLE => {
                self.state.fetch_or(BROKEN, Ordering::Release);
                Err(LockError::NotRecoverable)
            }
            e => Err(LockError::Os(e)),
        }
    }

    fn taken(&self, died: OwnerDied) -> OwnerDied {
        self.holder.store(proc::process_token(), Ordering::Release);
        died
    }

    fn trylock_step(&self) -> Result<Step, LockError> {
        // SAFETY: `raw()` points to an initialised (checked by the callers) process-shared
        // mutex in memory that stays mapped while `&self` lives.
        self.step(unsafe { libc::pthread_mutex_trylock(self.raw()) })
    }

    /// Tries once, without waiting. `Ok(Some(owner_died))` when taken, `Ok(None)` when a
    /// live thread (of any process) holds it.
    ///
    /// # Errors
    /// [`LockError::WouldDeadlock`] when this thread holds it already, and the other
    /// variants for a broken lock.
    pub(crate) fn try_lock(&self) -> Result<Option<OwnerDied>, LockError> {
        self.check_ready()?;
        match self.trylock_step()? {
            Step::Got(died) => Ok(Some(died)),
            Step::Busy | Step::Collision => Ok(None),
        }
    }

    /// Takes the lock, waiting until `deadline` (forever when `None`); `Ok(None)` when the
    /// deadline passed first. Spins about [`SPIN`], then sleeps in the kernel.
    ///
    /// # Errors
    /// As [`try_lock`](Self::try_lock).
    #[inline]
    pub(crate) fn lock(&self, deadline: Option<Instant>) -> Result<Option<OwnerDied>, LockError> {
        self.check_ready()?;
        match self.trylock_step()? {
            Step::Got(died) => Ok(Some(died)),
            Step::Busy | Step::Collision => self.lock_slow(deadline),
        }
    }

    #[cold]
    fn lock_slow(&self, deadline: Option<Instant>) -> Result<Option<OwnerDied>, LockError> {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            // Free (0) or its owner died (FUTEX_OWNER_DIED, no thread id): worth a try.
            if self.word().load(Ordering::Relaxed) & FUTEX_TID_MASK == 0 {
                match self.trylock_step()? {
                    Step::Got(died) => return Ok(Some(died)),
                    Step::Busy | Step::Collision => {}
                }
            }
            std::hint::spin_loop();
            spins += 1;
            if spins % 64 == 0 && start.elapsed() >= SPIN {
                break;
            }
        }
        loop {
            self.check_ready()?;
            // Sleep in slices: after each, glibc looks at the word again, and a waiter
            // that finds its own thread id there (a same-numbered holder of another pid
            // namespace, see the module docs) leaves glibc for `wait_out_collision`.
            let slice = match deadline {
                None => SLICE,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    left.min(SLICE)
                }
            };
            let abs = monotonic_after(slice);
            // SAFETY: as in `trylock_step`; `abs` lives across the call.
            let rc = unsafe { pthread_mutex_clocklock(self.raw(), libc::CLOCK_MONOTONIC, &abs) };
            match self.step(rc)? {
                Step::Got(died) => return Ok(Some(died)),
                Step::Busy => {} // timed out: the loop checks the deadline
                Step::Collision => {
                    if !self.wait_out_collision(deadline) {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Waits while the word holds this thread's own id although this process does not
    /// hold the lock (a same-numbered thread of another pid namespace does): polls without
    /// entering glibc, so this thread is never found "in the middle of locking" a mutex
    /// whose word carries its number. Returns `false` when the deadline passed.
    #[cold]
    fn wait_out_collision(&self, deadline: Option<Instant>) -> bool {
        let me = gettid() as u32 & FUTEX_TID_MASK;
        loop {
            let w = self.word().load(Ordering::Acquire);
            if w & FUTEX_TID_MASK != me || self.check_ready().is_err() {
                return true;
            }
            let nap = match deadline {
                None => COLLISION_POLL,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    left.min(COLLISION_POLL)
                }
            };
            std::thread::sleep(nap);
        }
    }

    /// Unlocks.
    ///
    /// # Safety
    /// The calling thread holds the lock: it took it through [`lock`](Self::lock) or
    /// [`try_lock`](Self::try_lock) and has not unlocked it since. (glibc would refuse
    /// another thread with `EPERM`, but the holder field is cleared first.)
    pub(crate) unsafe fn unlock(&self) {
        self.holder.store(0, Ordering::Release);
        // SAFETY: as in `trylock_step`; the caller holds the mutex.
        let rc = unsafe { libc::pthread_mutex_unlock(self.raw()) };
        debug_assert_eq!(rc, 0, "pthread_mutex_unlock by the holding thread");
    }

    /// Whether a live thread of the calling process holds the lock: then the mutex is on
    /// that thread's robust list, which runs through the mutex's own memory (glibc links
    /// the list through `__list` inside each mutex, and the kernel walks it when the thread
    /// ends), so the memory must stay mapped. Only a leaked guard (`mem::forget`) gets here.
    pub(crate) fn held_in_this_process(&self) -> bool {
        self.state.load(Ordering::Acquire) & MAGIC_MASK == READY
            && self.word().load(Ordering::Acquire) & FUTEX_TID_MASK != 0
            && self.holder.load(Ordering::Acquire) == proc::process_token()
    }

    /// Whether some live thread holds the lock now (a snapshot, for diagnostics). A lock
    /// whose holder died reads as free: the next locker takes it at once.
    pub(crate) fn is_locked(&self) -> bool {
        self.word().load(Ordering::Relaxed) & FUTEX_TID_MASK != 0
    }

    /// How many times the lock was taken from a holder that had died.
    pub(crate) fn recoveries(&self) -> u64 {
        self.state.load(Ordering::Relaxed) & COUNT_MASK
    }

    /// Unlocks if the calling thread holds the lock, and says whether it did: the checked,
    /// safe unlock for lock types that keep no [`Held`] per acquisition (the re-entrant
    /// lock counts its holds in shared memory and unlocks at the last release).
    pub(crate) fn unlock_if_held_by_this_thread(&self) -> bool {
        let mine = self.state.load(Ordering::Acquire) & MAGIC_MASK == READY
            && self.holder.load(Ordering::Acquire) == proc::process_token()
            && self.word().load(Ordering::Acquire) & FUTEX_TID_MASK
                == gettid() as u32 & FUTEX_TID_MASK;
        if mine {
            // SAFETY: the word names this thread's id and the holder field this process's
            // token (written only by a thread of this process right after it locked): so
            // this very thread holds the lock, as `unlock` requires. (A same-numbered
            // thread of another pid namespace never writes our token.)
            unsafe { self.unlock() };
        }
        mine
    }
}

/// `CLOCK_MONOTONIC` now plus `d`, as a timespec (saturating).
fn monotonic_after(d: Duration) -> libc::timespec {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let mut sec = (now.tv_sec as u64).saturating_add(d.as_secs());
    let mut nsec = now.tv_nsec as u64 + u64::from(d.subsec_nanos());
    if nsec >= 1_000_000_000 {
        nsec -= 1_000_000_000;
        sec = sec.saturating_add(1);
    }
    libc::timespec {
        tv_sec: sec.min(i64::MAX as u64) as libc::time_t,
        tv_nsec: nsec as libc::c_long,
    }
}

/// The calling thread's id (as its own pid namespace numbers it).
fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

/// A lock taken by the calling thread: dropping it unlocks. The safe face of
/// [`RobustMutex::unlock`], for the guards of `sync::raw_lock`.
///
/// Made only by [`RobustMutex::try_hold`] and [`RobustMutex::hold`] after a successful
/// lock on this thread; `!Send` (the unlock must happen on the locking thread, which owns
/// the robust mutex); a copy inherited through `fork` (same bytes, another process)
/// releases nothing, as the child's thread does not own the lock.
pub(crate) struct Held<'a> {
    mutex: &'a RobustMutex,
    /// The [`proc::process_token`] of the process that took the lock.
    token: u64,
    /// `!Send` but `Sync` (a `&Held` can do nothing): the locking thread must unlock.
    _not_send: std::marker::PhantomData<std::sync::MutexGuard<'static, ()>>,
}

impl RobustMutex {
    fn held(&self) -> Held<'_> {
        Held {
            mutex: self,
            token: proc::process_token(),
            _not_send: std::marker::PhantomData,
        }
    }

    /// [`try_lock`](Self::try_lock), handing back the hold: `Ok(Some((hold, owner_died)))`.
    ///
    /// # Errors
    /// As [`try_lock`](Self::try_lock).
    pub(crate) fn try_hold(&self) -> Result<Option<(Held<'_>, OwnerDied)>, LockError> {
        Ok(self.try_lock()?.map(|died| (self.held(), died)))
    }

    /// [`lock`](Self::lock), handing back the hold; `Ok(None)` when `deadline` passed.
    ///
    /// # Errors
    /// As [`lock`](Self::lock).
    pub(crate) fn hold(
        &self,
        deadline: Option<Instant>,
    ) -> Result<Option<(Held<'_>, OwnerDied)>, LockError> {
        Ok(self.lock(deadline)?.map(|died| (self.held(), died)))
    }
}

impl<'a> Held<'a> {
    /// The mutex this hold is on (to take it again after dropping the hold).
    pub(crate) fn mutex(&self) -> &'a RobustMutex {
        self.mutex
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if proc::process_token() != self.token {
            // A copy inherited through fork: the lock belongs to the parent's thread.
            return;
        }
        // SAFETY: a `Held` is made only right after this thread took the lock (`hold`,
        // `try_hold`); being `!Send` it is dropped on that thread, once, and the token
        // check above skips the copies a fork makes in other processes. So the calling
        // thread holds the lock, as `unlock` requires.
        unsafe { self.mutex.unlock() }
    }
}

impl std::fmt::Debug for Held<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Held")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C, align(64))]
    struct Area([u8; AREA_LEN]);

    fn fresh() -> Box<Area> {
        let mut a = Box::new(Area([0; AREA_LEN]));
        // SAFETY: a private, aligned, 64-byte area nobody else uses.
        unsafe { RobustMutex::init(a.0.as_mut_ptr()).unwrap() };
        a
    }

    fn mutex(a: &Area) -> &RobustMutex {
        // SAFETY: the area lives as long as the borrow and is only used through this type.
        unsafe { RobustMutex::from_ptr(a.0.as_ptr() as *mut u8) }
    }

    #[test]
    fn the_word_holds_the_owner_thread_id_at_offset_0() {
        let a = fresh();
        let m = mutex(&a);
        assert!(!m.is_locked());
        assert_eq!(m.try_lock(), Ok(Some(false)));
        assert_eq!(
            m.word().load(Ordering::Relaxed) & FUTEX_TID_MASK,
            gettid() as u32
        );
        assert!(m.is_locked());
        // SAFETY: this thread holds it.
        unsafe { m.unlock() };
        assert!(!m.is_locked());
    }

    #[test]
    fn relock_from_the_same_thread_is_would_deadlock() {
        let a = fresh();
        let m = mutex(&a);
        assert_eq!(m.lock(None), Ok(Some(false)));
        assert_eq!(m.try_lock(), Err(LockError::WouldDeadlock));
        assert_eq!(m.lock(None), Err(LockError::WouldDeadlock));
        // SAFETY: this thread holds it.
        unsafe { m.unlock() };
    }

    #[test]
    fn unlock_by_another_thread_is_refused_by_pthread() {
        let a = fresh();
        let m = mutex(&a);
        assert_eq!(m.lock(None), Ok(Some(false)));
        let raw = m.raw() as usize;
        let rc = std::thread::spawn(move || {
            // SAFETY: the mutex outlives the thread (joined below); a non-owner unlock of
            // an error-checking mutex is refused without touching it.
            unsafe { libc::pthread_mutex_unlock(raw as *mut libc::pthread_mutex_t) }
        })
        .join()
        .unwrap();
        assert_eq!(rc, libc::EPERM);
        assert!(m.is_locked());
        // SAFETY: this thread holds it.
        unsafe { m.unlock() };
    }

    #[test]
    fn a_lock_left_unrecoverable_by_a_foreign_holder_is_a_typed_error() {
        let a = fresh();
        let m = mutex(&a);
        let raw = m.raw() as usize;
        std::thread::spawn(move || {
            // SAFETY: as above; the thread ends holding the mutex.
            unsafe { libc::pthread_mutex_lock(raw as *mut libc::pthread_mutex_t) };
        })
        .join()
        .unwrap();
        // What a foreign program could do: take it after the owner died, and unlock
        // without pthread_mutex_consistent.
        // SAFETY: as above.
        unsafe {
            assert_eq!(libc::pthread_mutex_lock(m.raw()), libc::EOWNERDEAD);
            assert_eq!(libc::pthread_mutex_unlock(m.raw()), 0);
        }
        assert_eq!(m.try_lock(), Err(LockError::NotRecoverable));
        assert_eq!(m.lock(None), Err(LockError::NotRecoverable));
    }

    #[test]
    fn unlock_if_held_by_this_thread_refuses_other_threads_and_free_locks() {
        let a = fresh();
        let m = mutex(&a);
        assert!(
            !m.unlock_if_held_by_this_thread(),
            "free: nothing to unlock"
        );
        assert_eq!(m.lock(None), Ok(Some(false)));
        let raw = &*a as *const Area as usize;
        let other = std::thread::spawn(move || {
            // SAFETY: the area outlives the thread (joined below).
            let m = unsafe { RobustMutex::from_ptr(raw as *mut u8) };
            m.unlock_if_held_by_this_thread()
        })
        .join()
        .unwrap();
        assert!(
            !other,
            "another thread of the holder's process must not unlock"
        );
        assert!(m.is_locked());
        assert!(m.unlock_if_held_by_this_thread());
        assert!(!m.is_locked());
    }

    #[test]
    fn an_uninitialised_area_is_refused() {
        let a = Box::new(Area([0; AREA_LEN]));
        assert_eq!(mutex(&a).try_lock(), Err(LockError::NotInitialised));
    }

    #[test]
    fn timed_lock_times_out_against_another_thread() {
        let a = fresh();
        let m = mutex(&a);
        assert_eq!(m.lock(None), Ok(Some(false)));
        let raw = &*a as *const Area as usize;
        let got = std::thread::spawn(move || {
            // SAFETY: the area outlives the thread (joined below).
            let m = unsafe { RobustMutex::from_ptr(raw as *mut u8) };
            let t = Instant::now();
            let r = m.lock(Some(t + Duration::from_millis(50)));
            (r, t.elapsed())
        })
        .join()
        .unwrap();
        assert_eq!(got.0, Ok(None));
        assert!(got.1 >= Duration::from_millis(50));
        // SAFETY: this thread holds it.
        unsafe { m.unlock() };
    }
}
