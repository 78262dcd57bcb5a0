//! `ArrayQueue`: a queue of [`SharedNdArray`] handles. `put` moves an array (by name, zero
//! copy) to whichever process `get`s it, which becomes the owner that unlinks it.

use std::fmt;
use std::time::Duration;

use ndarray::Dimension;

use crate::array::SharedNdArray;
use crate::dtype::Element;
use crate::error::{Error, ErrorKind, Result};
use crate::queue::ByteQueue;
use crate::segment::MAX_NAME_LEN;

/// A bounded queue of shared arrays: Python pickles an array to pass it through a
/// `Queue`; here only its name travels.
///
/// [`put`](ArrayQueue::put) takes the array handle by value: the sender gives up the name
/// (the segment is kept, marked persistent while in flight) and the receiver of
/// [`get`](ArrayQueue::get) attaches it by name and becomes its owner, which unlinks it
/// when dropped. Arrays still in the queue when the queue's owner drops it are unlinked
/// then, so nothing leaks.
///
/// Moving an array into a forked child's closure is not the way to send it: the parent
/// drops its copy of the closure right after the fork. `put` it in the sender instead.
///
/// # Examples
/// ```
/// use ndshm::{ArrayQueue, SharedNdArray};
/// use ndarray::Ix1;
/// # let name = format!("doc-arrayq-{}", std::process::id());
/// let q = ArrayQueue::new(4)?;
/// let a = SharedNdArray::<f64, Ix1>::from_elem(&name, 1000, 1.5)?;
/// q.put(a)?; // only the name travels
/// ndshm::scope(|s| {
///     s.spawn(|| -> ndshm::Result<()> {
///         // SAFETY: the sender gave the array up; nobody else writes it.
///         let b = unsafe { q.get::<f64, Ix1>()? };
///         assert_eq!(b.view().sum(), 1500.0);
///         assert!(b.is_owner());
///         Ok(()) // dropping `b` unlinks the segment
///     })?;
///     Ok(())
/// })?;
/// assert!(ndshm::info(&name).is_err());
/// # Ok::<(), ndshm::Error>(())
/// ```
pub struct ArrayQueue {
    names: ByteQueue,
}

impl ArrayQueue {
    /// An anonymous queue of up to `capacity` arrays, shared with children forked later.
    ///
    /// # Errors
    /// As [`ByteQueue::new`].
    pub fn new(capacity: usize) -> Result<Self> {
        Ok(ArrayQueue {
            names: ByteQueue::new(capacity, MAX_NAME_LEN)?,
        })
    }

    /// Creates queue segment `name` for up to `capacity` arrays.
    ///
    /// # Errors
    /// As [`ByteQueue::create`].
    pub fn create(name: &str, capacity: usize) -> Result<Self> {
        Ok(ArrayQueue {
            names: ByteQueue::create(name, capacity, MAX_NAME_LEN)?,
        })
    }

    /// Attaches queue segment `name`.
    ///
    /// # Errors
    /// As [`ByteQueue::open`].
    pub fn open(name: &str) -> Result<Self> {
        Ok(ArrayQueue {
            names: ByteQueue::open(name)?,
        })
    }

    /// Moves `array` into the queue, waiting while it is full.
    ///
    /// # Errors
    /// [`ErrorKind::Closed`]; the array is then unlinked if this handle owned it.
    /// [`ErrorKind::WrongProcess`] for a handle made by another process (inherited through
    /// `fork`): it is dropped without effect.
    pub fn put<T: Element, D: Dimension>(&self, mut array: SharedNdArray<T, D>) -> Result<()> {
        array.check_bound_here()?;
        let owned = array.is_owner();
        array.persist();
        let name = array.name().to_string();
        drop(array);
        self.names.put(name.as_bytes()).inspect_err(|_| {
            if owned {
                let _ = crate::segment::unlink(&name);
            }
        })
    }

    fn attach<T: Element, D: Dimension>(name: Vec<u8>) -> Result<SharedNdArray<T, D>> {
        let name = String::from_utf8(name).map_err(|_| {
            Error::new(
                ErrorKind::InvalidHeader,
                "an array name in the queue is not UTF-8",
            )
        })?;
        // SAFETY: forwarded to the caller of `get`.
        let mut a = unsafe { SharedNdArray::<T, D>::open(&name)? };
        a.segment_mut().take_ownership();
        Ok(a)
    }

    /// Takes the next array, waiting while the queue is empty; the caller becomes its
    /// owner.
    ///
    /// # Safety
    /// As [`SharedNdArray::open`]: no other process writes the array while it is viewed
    /// here (the sender gave its handle up; other handles attached by name must keep out).
    ///
    /// # Errors
    /// [`ErrorKind::Closed`] when closed and empty; the errors of
    /// [`SharedNdArray::open`] ([`ErrorKind::TypeMismatch`], …), in which case the array's
    /// segment is unlinked.
    pub unsafe fn get<T: Element, D: Dimension>(&self) -> Result<SharedNdArray<T, D>> {
        let name = self.names.get()?;
        Self::attach_or_unlink(name)
    }

    /// [`get`](Self::get), waiting at most `timeout`.
    ///
    /// # Safety
    /// As [`get`](Self::get).
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`], and the errors of [`get`](Self::get).
    pub unsafe fn get_timeout<T: Element, D: Dimension>(
        &self,
        timeout: Duration,
    ) -> Result<SharedNdArray<T, D>> {
        let name = self.names.get_timeout(timeout)?;
        Self::attach_or_unlink(name)
    }

    fn attach_or_unlink<T: Element, D: Dimension>(name: Vec<u8>) -> Result<SharedNdArray<T, D>> {
        let text = String::from_utf8_lossy(&name).into_owned();
        Self::attach(name).inspect_err(|_| {
            let _ = crate::segment::unlink(&text);
        })
    }

    /// Closes the queue (see [`Queue::close`](crate::Queue::close)).
    pub fn close(&self) {
        self.names.close()
    }

    /// Arrays in the queue now.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the queue is empty now.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

impl Drop for ArrayQueue {
    fn drop(&mut self) {
        if self.names.region_is_owner_here() {
            while let Ok(name) = self.names.try_get() {
                if let Ok(name) = std::str::from_utf8(&name) {
                    let _ = crate::segment::unlink(name);
                }
            }
        }
    }
}

impl fmt::Debug for ArrayQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArrayQueue")
            .field("queue", &self.names)
            .finish()
    }
}
