//! [`Event`], a process-shared flag that processes wait for (Python's
//! `multiprocessing.Event`).

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::segment::region::Region;
use crate::segment::trailer::SegmentKind;
use crate::segment::CreateOptions;
use crate::sync::waiting::{self, deadline_after};

/// Payload: the flag (`u32` futex word, 0 or 1), the sleepers' count (`u32`).
const PAYLOAD: usize = 8;

/// A flag that processes set, clear and wait for: Python's `multiprocessing.Event`, in a
/// named segment or in anonymous shared memory (inherited by forked children).
///
/// [`wait`](Event::wait) returns at once when the flag is set; otherwise it spins a few
/// microseconds, then sleeps on a futex until [`set`](Event::set) wakes every waiter.
/// `set` makes a system call only when someone sleeps. The state is one word: a waiter or
/// setter that dies leaves nothing to repair (a waiter killed while asleep costs the next
/// `set` one needless wake-up call).
///
/// # Examples
/// ```
/// // Python: e = multiprocessing.Event(); Process(target=lambda: e.set()).start(); e.wait()
/// let e = ndshm::Event::new()?;
/// ndshm::scope(|s| -> ndshm::Result<_> {
///     s.spawn(|| e.set())?;
///     e.wait();
///     Ok(())
/// })?;
/// assert!(e.is_set());
/// # Ok::<(), ndshm::Error>(())
/// ```
pub struct Event {
    region: Region,
}

impl Event {
    /// An anonymous event, clear, shared with the children forked after it was made.
    ///
    /// # Errors
    /// An OS error when the shared mapping fails.
    ///
    /// # Examples
    /// ```
    /// let e = ndshm::Event::new()?;
    /// assert!(!e.is_set());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn new() -> Result<Event> {
        Ok(Event {
            region: Region::anonymous(PAYLOAD, |_| Ok(()))?,
        })
    }

    /// Creates event segment `segment` (clear); other processes [`open`](Event::open) it.
    ///
    /// # Errors
    /// The errors of segment creation.
    ///
    /// # Examples
    /// ```
    /// use ndshm::{CreateOptions, Event};
    /// let e = Event::create(CreateOptions::unique())?;
    /// Event::open(e.name().unwrap())?.set();
    /// assert!(e.is_set());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn create(segment: impl Into<CreateOptions>) -> Result<Event> {
        Ok(Event {
            region: Region::create(&segment.into(), SegmentKind::Event, PAYLOAD, |_| Ok(()))?,
        })
    }

    /// Attaches event segment `name` (any number of times, in any process).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound),
    /// [`ErrorKind::KindMismatch`](crate::ErrorKind::KindMismatch).
    ///
    /// # Examples
    /// ```
    /// # let name = format!("doc-event-open-{}", std::process::id());
    /// let e = ndshm::Event::create(&name)?;
    /// assert!(!ndshm::Event::open(&name)?.is_set());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn open(name: &str) -> Result<Event> {
        Ok(Event {
            region: Region::open(name, SegmentKind::Event, PAYLOAD)?,
        })
    }

    fn flag(&self) -> &AtomicU32 {
        self.region.payload().u32(0)
    }

    fn sleepers(&self) -> &AtomicU32 {
        self.region.payload().u32(4)
    }

    /// Sets the flag and wakes every waiting process.
    ///
    /// # Examples
    /// ```
    /// let e = ndshm::Event::new()?;
    /// e.set();
    /// e.wait(); // returns at once
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn set(&self) {
        if self.flag().swap(1, Ordering::SeqCst) == 0 {
            waiting::wake(self.flag(), self.sleepers(), i32::MAX);
        }
    }

    /// Clears the flag: later waits wait for the next [`set`](Event::set).
    ///
    /// # Examples
    /// ```
    /// let e = ndshm::Event::new()?;
    /// e.set();
    /// e.clear();
    /// assert!(!e.is_set());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn clear(&self) {
        self.flag().store(0, Ordering::SeqCst);
    }

    /// Whether the flag is set.
    ///
    /// # Examples
    /// ```
    /// let e = ndshm::Event::new()?;
    /// assert!(!e.is_set());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn is_set(&self) -> bool {
        self.flag().load(Ordering::Acquire) != 0
    }

    /// Waits until the flag is set (returns at once if it is).
    ///
    /// # Examples
    /// ```
    /// let (ready, go) = (ndshm::Event::new()?, ndshm::Event::new()?);
    /// ndshm::scope(|s| -> ndshm::Result<_> {
    ///     s.spawn(|| {
    ///         ready.set();
    ///         go.wait(); // sleeps until the parent sets `go`
    ///     })?;
    ///     ready.wait();
    ///     go.set();
    ///     Ok(())
    /// })?;
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn wait(&self) {
        self.wait_until(None);
    }

    /// Waits at most `timeout` for the flag; returns whether it is set (Python's
    /// `wait(timeout)` return value).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let e = ndshm::Event::new()?;
    /// assert!(!e.wait_timeout(Duration::from_millis(1)));
    /// e.set();
    /// assert!(e.wait_timeout(Duration::from_millis(1)));
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(deadline_after(timeout))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        let flag = self.flag();
        if waiting::spin_until(|| flag.load(Ordering::Acquire) != 0) {
            return true;
        }
        loop {
            let Some(slice) = waiting::left(deadline) else {
                return flag.load(Ordering::Acquire) != 0;
            };
            waiting::sleep(flag, 0, self.sleepers(), slice);
            if flag.load(Ordering::Acquire) != 0 {
                return true;
            }
        }
    }

    /// The segment name, or `None` for an anonymous event.
    ///
    /// # Examples
    /// ```
    /// assert_eq!(ndshm::Event::new()?.name(), None);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn name(&self) -> Option<&str> {
        self.region.name()
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("name", &self.name())
            .field("set", &self.is_set())
            .finish()
    }
}
