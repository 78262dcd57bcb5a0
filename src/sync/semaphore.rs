//! [`Semaphore`] and [`BoundedSemaphore`], process-shared counting semaphores (Python's
//! `multiprocessing.Semaphore` / `BoundedSemaphore`).

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use crate::segment::region::{header_word, Region};
use crate::segment::trailer::SegmentKind;
use crate::segment::CreateOptions;
use crate::sync::waiting::{self, deadline_after};

/// Payload: value (`u32` futex word), sleepers (`u32`), then the header word at 8: the
/// initial value in the low 32 bits, bit 32 set for a bounded semaphore.
const PAYLOAD: usize = 16;
const HEADER: usize = 8;
const BOUNDED: u64 = 1 << 32;

/// The shared core of both semaphore types.
struct Core {
    region: Region,
}

impl Core {
    fn init(value: u32, bounded: bool) -> impl FnOnce(&mut [u8]) -> Result<()> {
        move |p: &mut [u8]| {
            p[0..4].copy_from_slice(&value.to_ne_bytes());
            let h = value as u64 | if bounded { BOUNDED } else { 0 };
            p[HEADER..HEADER + 8].copy_from_slice(&h.to_ne_bytes());
            Ok(())
        }
    }

    fn new(value: u32, bounded: bool) -> Result<Core> {
        Ok(Core {
            region: Region::anonymous(PAYLOAD, Self::init(value, bounded))?,
        })
    }

    fn create(opts: CreateOptions, value: u32, bounded: bool) -> Result<Core> {
        Ok(Core {
            region: Region::create(
                &opts,
                SegmentKind::Semaphore,
                PAYLOAD,
                Self::init(value, bounded),
            )?,
        })
    }

    fn open(name: &str, bounded: bool) -> Result<Core> {
        let region = Region::open(name, SegmentKind::Semaphore, PAYLOAD)?;
        let is_bounded = header_word(&region, HEADER) & BOUNDED != 0;
        if is_bounded != bounded {
            let (is, want) = if is_bounded {
                ("a BoundedSemaphore", "BoundedSemaphore::open")
            } else {
                ("a Semaphore", "Semaphore::open")
            };
            return Err(Error::new(
                ErrorKind::KindMismatch,
                format!("segment '{name}' holds {is}: open it with {want}"),
            ));
        }
        Ok(Core { region })
    }

    fn value_word(&self) -> &AtomicU32 {
        self.region.payload().u32(0)
    }

    fn sleepers(&self) -> &AtomicU32 {
        self.region.payload().u32(4)
    }

    #[inline]
    fn try_take(&self) -> bool {
        let v = self.value_word();
        let mut cur = v.load(Ordering::Relaxed);
        while cur > 0 {
            match v.compare_exchange_weak(cur, cur - 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
        false
    }

    /// Takes a permit, waiting until `deadline`; `false` when it passed.
    #[inline]
    fn acquire_until(&self, deadline: Option<Instant>) -> bool {
        if self.try_take() {
            return true;
        }
        self.acquire_slow(deadline)
    }

    #[cold]
    fn acquire_slow(&self, deadline: Option<Instant>) -> bool {
        let v = self.value_word();
        if waiting::spin_until(|| v.load(Ordering::Relaxed) > 0 && self.try_take()) {
            return true;
        }
        loop {
            if self.try_take() {
                return true;
            }
            let Some(slice) = waiting::left(deadline) else {
                // Leaving without the permit: if a release woke this waiter for one that
                // is still there, pass the wake-up on.
                if v.load(Ordering::SeqCst) > 0 {
                    waiting::wake(v, self.sleepers(), 1);
                }
                return false;
            };
            waiting::sleep(v, 0, self.sleepers(), slice);
        }
    }

    fn release(&self, n: u32) -> Result<()> {
        let v = self.value_word();
        let h = header_word(&self.region, HEADER);
        let bounded = h & BOUNDED != 0;
        let limit = if bounded { h as u32 } else { u32::MAX };
        let mut cur = v.load(Ordering::Relaxed);
        loop {
            let Some(next) = cur.checked_add(n).filter(|&x| x <= limit) else {
                return Err(if bounded {
                    Error::new(
                        ErrorKind::InvalidArgument,
                        format!(
                            "BoundedSemaphore released too many times: its value is {cur} \
                             and its bound (initial value) {limit}; release only what was \
                             acquired"
                        ),
                    )
                } else {
                    Error::new(
                        ErrorKind::InvalidArgument,
                        format!("Semaphore value {cur} + {n} would overflow u32"),
                    )
                });
            };
            match v.compare_exchange_weak(cur, next, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        waiting::wake(v, self.sleepers(), n.min(i32::MAX as u32) as i32);
        Ok(())
    }
}

fn timeout_error(timeout: Duration) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!("no semaphore permit became free within {timeout:?}; wait longer or release more"),
    )
}

macro_rules! semaphore_methods {
    ($T:ident, $bounded:expr) => {
        impl $T {
            /// An anonymous semaphore holding `value` permits, shared with the children
            /// forked after it was made.
            ///
            /// # Errors
            /// An OS error when the shared mapping fails.
            ///
            /// # Examples
            /// ```
            #[doc = concat!("let s = ndshm::", stringify!($T), "::new(2)?;")]
            /// assert_eq!(s.value(), 2);
            /// # Ok::<(), ndshm::Error>(())
            /// ```
            pub fn new(value: u32) -> Result<$T> {
                Ok($T {
                    core: Core::new(value, $bounded)?,
                })
            }

            /// Creates semaphore segment `segment` holding `value` permits; other
            /// processes open it by name.
            ///
            /// # Errors
            /// The errors of segment creation.
            ///
            /// # Examples
            /// ```
            #[doc = concat!("use ndshm::{CreateOptions, ", stringify!($T), "};")]
            #[doc = concat!("let s = ", stringify!($T), "::create(CreateOptions::unique(), 1)?;")]
            #[doc = concat!("let same = ", stringify!($T), "::open(s.name().unwrap())?;")]
            /// same.acquire();
            /// assert_eq!(s.value(), 0);
            /// # Ok::<(), ndshm::Error>(())
            /// ```
            pub fn create(segment: impl Into<CreateOptions>, value: u32) -> Result<$T> {
                Ok($T {
                    core: Core::create(segment.into(), value, $bounded)?,
                })
            }

            /// Attaches semaphore segment `name` (any number of times, in any process).
            ///
            /// # Errors
            /// [`ErrorKind::NotFound`], [`ErrorKind::KindMismatch`] when `name` is not a
            #[doc = concat!("`", stringify!($T), "`.")]
            ///
            /// # Examples
            /// ```
            /// # let name = format!("doc-sem-open-{}", std::process::id());
            #[doc = concat!("let s = ndshm::", stringify!($T), "::create(&name, 3)?;")]
            #[doc = concat!("assert_eq!(ndshm::", stringify!($T), "::open(&name)?.value(), 3);")]
            /// # Ok::<(), ndshm::Error>(())
            /// ```
            pub fn open(name: &str) -> Result<$T> {
                Ok($T {
                    core: Core::open(name, $bounded)?,
                })
            }

            /// Takes a permit, waiting as long as there is none (spins a few
            /// microseconds, then sleeps until a [`release`](Self::release)).
            ///
            /// # Examples
            /// ```
            #[doc = concat!("let s = ndshm::", stringify!($T), "::new(1)?;")]
            /// s.acquire();
            /// assert_eq!(s.value(), 0);
            /// s.release()?;
            /// # Ok::<(), ndshm::Error>(())
            /// ```
            #[inline]
            pub fn acquire(&self) {
                self.core.acquire_until(None);
            }

            /// Takes a permit if one is free, without waiting.
            ///
            /// # Examples
            /// ```
            #[doc = concat!("let s = ndshm::", stringify!($T), "::new(1)?;")]
            /// assert!(s.try_acquire());
            /// assert!(!s.try_acquire());
            /// # Ok::<(), ndshm::Error>(())
            /// ```
            pub fn try_acquire(&self) -> bool {
                self.core.try_take()
            }

            /// Takes a permit, waiting at most `timeout`.
            ///
            /// # Errors
            /// [`ErrorKind::Timeout`] when no permit became free in time.
            ///
            /// # Examples
            /// ```
            /// use std::time::Duration;
            #[doc = concat!("let s = ndshm::", stringify!($T), "::new(0)?;")]
            /// let e = s.acquire_timeout(Duration::from_millis(1)).unwrap_err();
            /// assert_eq!(e.kind(), ndshm::ErrorKind::Timeout);
            /// # Ok::<(), ndshm::Error>(())
            /// ```
            pub fn acquire_timeout(&self, timeout: Duration) -> Result<()> {
                if self.core.acquire_until(deadline_after(timeout)) {
                    Ok(())
                } else {
                    Err(timeout_error(timeout))
                }
            }

            /// The number of free permits now (a snapshot; Python's `get_value()`).
            ///
            /// # Examples
            /// ```
            #[doc = concat!("assert_eq!(ndshm::", stringify!($T), "::new(5)?.value(), 5);")]
            /// # Ok::<(), ndshm::Error>(())
            /// ```
            pub fn value(&self) -> u32 {
                self.core.value_word().load(Ordering::Relaxed)
            }

            /// The segment name, or `None` for an anonymous semaphore.
            ///
            /// # Examples
            /// ```
            #[doc = concat!("assert_eq!(ndshm::", stringify!($T), "::new(1)?.name(), None);")]
            /// # Ok::<(), ndshm::Error>(())
            /// ```
            pub fn name(&self) -> Option<&str> {
                self.core.region.name()
            }
        }

        impl fmt::Debug for $T {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($T))
                    .field("name", &self.name())
                    .field("value", &self.value())
                    .finish()
            }
        }
    };
}

/// A counting semaphore shared between processes: Python's `multiprocessing.Semaphore`, in
/// a named segment or in anonymous shared memory (inherited by forked children).
///
/// Unlike [`Lock`](crate::Lock), a permit belongs to nobody: any process may
/// [`release`](Semaphore::release) what another acquired — the use Python's `Lock` also
/// serves, which ndshm's owner-bound robust lock does not. The flip side: a process that
/// dies holding a permit does not give it back (nobody knows it held one).
///
/// Uncontended, `acquire` and `release` are one atomic compare-and-swap each; a waiter
/// spins a few microseconds, then sleeps on a futex, and `release` makes a system call
/// only when someone sleeps.
///
/// # Examples
/// ```
/// // Python: s = multiprocessing.Semaphore(0); Process(target=s.release).start(); s.acquire()
/// let s = ndshm::Semaphore::new(0)?;
/// ndshm::scope(|sc| -> ndshm::Result<_> {
///     sc.spawn(|| s.release())?; // released by another process
///     s.acquire();
///     Ok(())
/// })?;
/// # Ok::<(), ndshm::Error>(())
/// ```
pub struct Semaphore {
    core: Core,
}

/// A [`Semaphore`] that refuses to be released above its initial value: Python's
/// `multiprocessing.BoundedSemaphore` (whose `release` raises `ValueError` there; here it
/// is an [`ErrorKind::InvalidArgument`] error).
///
/// # Examples
/// ```
/// let s = ndshm::BoundedSemaphore::new(1)?;
/// s.acquire();
/// s.release()?;
/// assert!(s.release().is_err()); // above the initial value
/// # Ok::<(), ndshm::Error>(())
/// ```
pub struct BoundedSemaphore {
    core: Core,
}

semaphore_methods!(Semaphore, false);
semaphore_methods!(BoundedSemaphore, true);

impl Semaphore {
    /// Gives a permit back (from any process) and wakes one waiter, if any sleeps.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when the value would pass `u32::MAX`.
    ///
    /// # Examples
    /// ```
    /// let s = ndshm::Semaphore::new(0)?;
    /// s.release()?;
    /// assert!(s.try_acquire());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn release(&self) -> Result<()> {
        self.core.release(1)
    }
}

impl BoundedSemaphore {
    /// Gives a permit back (from any process) and wakes one waiter, if any sleeps.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] when the value would pass the initial value (more
    /// releases than acquires: Python's `ValueError`); the value is then unchanged.
    ///
    /// # Examples
    /// ```
    /// let s = ndshm::BoundedSemaphore::new(2)?;
    /// assert_eq!(s.release().unwrap_err().kind(), ndshm::ErrorKind::InvalidArgument);
    /// assert_eq!(s.value(), 2);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn release(&self) -> Result<()> {
        self.core.release(1)
    }
}
