//! [`NdArrayQueue`]: a queue of [`SharedNdArray`] handles, built on a
//! [`ByteQueue`] of segment ids and names. `put` moves an array (by name,
//! zero copy) to whichever process `get`s it, which becomes the owner that unlinks it; every
//! failure hands the array back or leaves it queued.

use std::fmt;
use std::fs::File;
use std::time::Duration;

use ndarray::Dimension;

use crate::array::SharedNdArray;
use crate::element::Element;
use crate::error::{Error, ErrorKind, Result};
use crate::ipc::byte_queue::ByteQueue;
use crate::ipc::error::{
    GetError, GetTimeoutError, Outcome, PutError, PutTimeoutError, TryGetError, TryPutError,
};
use crate::ipc::ring::{deadline, Wait};
use crate::segment::trailer::{Trailer, TRAILER_LEN};
use crate::segment::{CreateOptions, MapAccess, OwnerFields, Segment, MAX_NAME_LEN, TEMP_PREFIX};
use crate::sys::{lease, proc, shm};

/// Bytes of a message before the name: the segment id, little-endian.
const ID_LEN: usize = 8;

/// A bounded queue of shared arrays: Python pickles an array to pass it through a
/// `Queue`; here only its name (and its segment id) travels.
///
/// # Ownership
/// [`put`](NdArrayQueue::put) takes the array handle by value. While the array is queued it
/// belongs to the *queue's owner* process (the one that made the queue with
/// [`new`](NdArrayQueue::new) or [`create`](NdArrayQueue::create)): its trailer names that
/// process as owner, and it is not persistent. The receiver of [`get`](NdArrayQueue::get)
/// attaches it and becomes its owner, which unlinks it when dropped. So an array is never
/// without an owner `gc` can judge: if the queue's owner dies (even by `SIGKILL`) with
/// arrays queued, they are garbage once the kernel has released its lease, and `gc` (or the
/// crash watchdog) removes them.
///
/// Each message carries the array's segment id besides its name: a name that was removed
/// and reused by another segment is never attached nor unlinked by the queue.
///
/// # Dropping the queue
/// Arrays still queued are unlinked when the *last* handle to the queue goes, counting the
/// copies forked children inherited: moving an `NdArrayQueue` into a
/// [`Process::spawn`](crate::Process::spawn) closure (Python's
/// `Process(target=f, args=(q,))`) works, because the parent dropping its copy of the
/// closure right after the fork finds the child's copy still there and leaves the queue
/// alone. What tells: every handle made by `new`/`create` shares one open file
/// description holding a kernel lock (a forked child's copy shares it with the parent
/// until it exits); a dropping handle that finds no other holder drains the queue.
/// Processes that attached a named queue with [`open`](NdArrayQueue::open) are not counted:
/// keep the owner's handle (or a child holding it) alive until they are done. Any child
/// forked while a handle existed counts as a holder until it drops its copy or exits, even
/// one forked for other work: the queue is then drained by the last of them. Arrays no
/// handle drained (the last holder was killed, or two holders let go at the same instant
/// and each saw the other) stay owned by the queue's owner process and are reclaimed by
/// `gc` once it has ended.
///
/// Like every channel in ndshm, it has `put` / `try_put` / `put_timeout` and `get` /
/// `try_get` / `get_timeout` with the typed errors of [`TryPutError`] and its siblings: a
/// put that fails hands the array back, still owned as before. A get that fails because
/// the queued array is of another element type or dimension (a `Failed` error of
/// [`ErrorKind::TypeMismatch`], [`ErrorKind::DimensionMismatch`], …) destroys nothing: the
/// array goes back to the queue (at its tail).
///
/// The name says what it holds: `crossbeam`'s `ArrayQueue` is a bounded queue in an array,
/// a different thing.
///
/// # Examples
/// ```
/// use ndshm::{NdArrayQueue, SharedNdArray};
/// use ndarray::Ix1;
/// # let name = format!("doc-arrayq-{}", std::process::id());
/// let q = NdArrayQueue::new(4)?;
/// let a = SharedNdArray::<f64, Ix1>::from_elem(&name, 1000, 1.5)?;
/// q.put(a)?; // only the name travels
/// ndshm::scope(|s| -> ndshm::Result<()> {
///     s.spawn(|| -> ndshm::Result<()> {
///         // SAFETY: the sender gave the array up; nobody else writes it.
///         let b = unsafe { q.get::<f64, Ix1>()? };
///         assert_eq!(b.view().sum(), 1500.0);
///         assert!(b.is_owner());
///         Ok(()) // dropping `b` unlinks the segment
///     })?;
///     Ok::<(), ndshm::Error>(())
/// })?;
/// assert!(ndshm::info(&name).is_err());
/// # Ok::<(), ndshm::Error>(())
/// ```
pub struct NdArrayQueue {
    names: ByteQueue,
    /// The queue owner's process, recorded as owner of every queued array.
    owner: OwnerFields,
    /// Handles made by `new`/`create` (and their forked copies): an unnamed file whose
    /// open file description holds a shared OFD lock while any copy of this fd is open.
    presence: Option<File>,
    /// Another description of the same file, holding no lock: tests for other holders.
    probe: Option<File>,
}

/// An unnamed tmpfs file, locked through `presence`, and a second description `probe`.
fn presence_file() -> Result<(File, File)> {
    let tmp = format!(
        "{TEMP_PREFIX}{}-L{:x}-aq-{:x}",
        proc::pid(),
        lease::mine(),
        proc::random_u64()
    );
    let ctx = |e| Error::os("cannot make the array queue's presence file in /dev/shm", e);
    let presence = shm::create_excl(&tmp, 0o600).map_err(ctx)?;
    let rest = lease::lock_file(&presence).and_then(|()| shm::open_existing(&tmp, false));
    let _ = shm::unlink(&tmp);
    Ok((presence, rest.map_err(ctx)?))
}

fn encode(id: u64, name: &str) -> Vec<u8> {
    let mut msg = Vec::with_capacity(ID_LEN + name.len());
    msg.extend_from_slice(&id.to_le_bytes());
    msg.extend_from_slice(name.as_bytes());
    msg
}

fn decode(msg: &[u8]) -> Result<(u64, &str)> {
    let corrupt = || {
        Error::new(
            ErrorKind::Corrupt,
            "a message in the array queue is not a segment id and name: the queue's memory \
             was overwritten (or it is not an array queue)",
        )
    };
    if msg.len() <= ID_LEN {
        return Err(corrupt());
    }
    let (id, name) = msg.split_at(ID_LEN);
    let id = u64::from_le_bytes(id.try_into().map_err(|_| corrupt())?);
    let name = std::str::from_utf8(name).map_err(|_| corrupt())?;
    crate::segment::validate_name(name).map_err(|_| corrupt())?;
    Ok((id, name))
}

/// The open file of segment `name` if it is still the segment with id `id`.
fn still_named(name: &str, id: u64) -> Option<File> {
    let file = shm::open_for_inspection(name).ok()?;
    let len = file.metadata().ok()?.len();
    if len < TRAILER_LEN as u64 {
        return None;
    }
    let mut tail = [0u8; TRAILER_LEN];
    let got = shm::read_at(&file, &mut tail, len - TRAILER_LEN as u64).ok()?;
    let info = Trailer::parse(&tail, usize::try_from(len).ok()?).ok()??;
    (got == TRAILER_LEN && info.segment_id == id).then_some(file)
}

/// Unlinks queued array `name` if it still is segment `id` (never another segment that
/// took the name since).
fn unlink_queued(name: &str, id: u64) {
    if let Some(file) = still_named(name, id) {
        if shm::file_id(&file).ok() == shm::file_id_of_name(name) {
            let _ = shm::unlink(name);
        }
    }
}

/// The caller's promise of [`SharedNdArray::open`]'s contract, made by calling one of
/// [`NdArrayQueue`]'s `unsafe fn get*`: only they construct it.
struct Vouched(());

impl NdArrayQueue {
    fn owned(names: ByteQueue) -> Result<Self> {
        let (presence, probe) = presence_file()?;
        Ok(NdArrayQueue {
            names,
            owner: OwnerFields::this_process(),
            presence: Some(presence),
            probe: Some(probe),
        })
    }

    /// An anonymous queue of up to `capacity` arrays, shared with children forked later.
    /// The calling process is the queue's owner (see [Ownership](NdArrayQueue#ownership)).
    ///
    /// # Errors
    /// As [`ByteQueue::new`].
    ///
    /// # Examples
    /// ```
    /// let q = ndshm::NdArrayQueue::new(4)?;
    /// assert!(q.is_empty());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn new(capacity: usize) -> Result<Self> {
        Self::owned(ByteQueue::new(capacity, ID_LEN + MAX_NAME_LEN)?)
    }

    /// Creates a named queue segment for up to `capacity` arrays; the calling process is
    /// the queue's owner.
    ///
    /// # Errors
    /// As [`ByteQueue::create`].
    ///
    /// # Examples
    /// ```
    /// use ndshm::{CreateOptions, NdArrayQueue};
    /// let q = NdArrayQueue::create(CreateOptions::unique(), 4)?;
    /// let other = NdArrayQueue::open(q.name().unwrap())?; // as another process would
    /// assert_eq!(other.len(), 0);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn create(segment: impl Into<CreateOptions>, capacity: usize) -> Result<Self> {
        Self::owned(ByteQueue::create(segment, capacity, ID_LEN + MAX_NAME_LEN)?)
    }

    /// Attaches queue segment `name`. Arrays put through this handle belong to the
    /// queue's owner (as its trailer records it) while they are queued. Dropping this
    /// handle never drains the queue.
    ///
    /// # Errors
    /// As [`ByteQueue::open`].
    ///
    /// # Examples
    /// ```
    /// let err = ndshm::NdArrayQueue::open("no-such-array-queue").unwrap_err();
    /// assert_eq!(err.kind(), ndshm::ErrorKind::NotFound);
    /// ```
    pub fn open(name: &str) -> Result<Self> {
        let names = ByteQueue::open(name)?;
        let access = MapAccess {
            writable: false,
            populate: false,
            register: false,
        };
        let info = Segment::open(name, access)?.info().ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidHeader,
                format!("segment '{name}' has no ndshm trailer, so it is not an array queue"),
            )
        })?;
        Ok(NdArrayQueue {
            names,
            owner: OwnerFields::of_info(&info),
            presence: None,
            probe: None,
        })
    }

    /// Moves `array` into the queue, waiting as `wait` allows; on failure the array comes
    /// back as it was (same owner, same persistence).
    // The error hands the array handle back, as `mpsc::SendError<T>` does.
    #[allow(clippy::result_large_err)]
    fn put_wait<T: Element, D: Dimension>(
        &self,
        mut array: SharedNdArray<T, D>,
        wait: Wait,
    ) -> std::result::Result<(), (SharedNdArray<T, D>, Outcome)> {
        if let Err(e) = array.check_bound_here() {
            return Err((array, Outcome::Failed(e)));
        }
        let msg = encode(array.segment_id(), array.name());
        let owned = array.is_owner();
        // Hand over before the message is visible: a receiver claims it after that.
        let before = match array.segment_mut().hand_over(self.owner) {
            Ok(b) => b,
            Err(e) => return Err((array, Outcome::Failed(e))),
        };
        let Err(o) = self.names.put_wait(&msg, wait) else {
            return Ok(());
        };
        // Not queued: take the array back as it was.
        if owned {
            array.segment_mut().take_ownership();
        }
        array.segment().restore_owner(before);
        Err((array, o))
    }

    /// Moves `array` into the queue, waiting while it is full. From now on the array
    /// belongs to the queue's owner process until a receiver takes it.
    ///
    /// # Errors
    /// [`PutError::Closed`]; [`PutError::Failed`] of [`ErrorKind::WrongProcess`] for a
    /// handle made by another process (inherited through `fork`), of
    /// [`ErrorKind::InvalidArgument`] for a segment without an ndshm trailer (a plain
    /// `.npy` file attached by name). Each hands the array back, unchanged.
    ///
    /// # Examples
    /// ```
    /// use ndshm::{CreateOptions, NdArrayQueue, SharedNdArray};
    /// let q = NdArrayQueue::new(2)?;
    /// q.put(SharedNdArray::<u8, ndarray::Ix1>::zeros(CreateOptions::unique(), 3)?)?;
    /// q.close();
    /// let a = SharedNdArray::<u8, ndarray::Ix1>::zeros(CreateOptions::unique(), 3)?;
    /// let back = q.put(a).unwrap_err().into_inner(); // closed: the array comes back
    /// assert!(back.is_owner());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    // The error hands the array handle back, as `mpsc::SendError<T>` does.
    #[allow(clippy::result_large_err)]
    pub fn put<T: Element, D: Dimension>(
        &self,
        array: SharedNdArray<T, D>,
    ) -> std::result::Result<(), PutError<SharedNdArray<T, D>>> {
        self.put_wait(array, Wait::Until(None))
            .map_err(|(a, o)| o.put(a))
    }

    /// Moves `array` into the queue if there is room now.
    ///
    /// # Errors
    /// [`TryPutError::Full`], [`TryPutError::Closed`], [`TryPutError::Failed`] (as
    /// [`put`](Self::put)); each hands the array back, unchanged.
    ///
    /// # Examples
    /// ```
    /// use ndshm::{CreateOptions, NdArrayQueue, SharedNdArray};
    /// let q = NdArrayQueue::new(2)?;
    /// for _ in 0..2 {
    ///     q.try_put(SharedNdArray::<u8, ndarray::Ix1>::zeros(CreateOptions::unique(), 1)?)?;
    /// }
    /// let a = SharedNdArray::<u8, ndarray::Ix1>::zeros(CreateOptions::unique(), 1)?;
    /// assert!(q.try_put(a).unwrap_err().is_full());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    // The error hands the array handle back, as `mpsc::SendError<T>` does.
    #[allow(clippy::result_large_err)]
    pub fn try_put<T: Element, D: Dimension>(
        &self,
        array: SharedNdArray<T, D>,
    ) -> std::result::Result<(), TryPutError<SharedNdArray<T, D>>> {
        self.put_wait(array, Wait::No)
            .map_err(|(a, o)| o.try_put(a))
    }

    /// Moves `array` into the queue, waiting at most `timeout` for room.
    ///
    /// # Errors
    /// [`PutTimeoutError::Timeout`], [`PutTimeoutError::Closed`],
    /// [`PutTimeoutError::Failed`] (as [`put`](Self::put)); each hands the array back.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use ndshm::{CreateOptions, NdArrayQueue, SharedNdArray};
    /// let q = NdArrayQueue::new(4)?;
    /// let a = SharedNdArray::<u8, ndarray::Ix1>::zeros(CreateOptions::unique(), 1)?;
    /// q.put_timeout(a, Duration::from_millis(10))?;
    /// assert_eq!(q.len(), 1);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    // The error hands the array handle back, as `mpsc::SendError<T>` does.
    #[allow(clippy::result_large_err)]
    pub fn put_timeout<T: Element, D: Dimension>(
        &self,
        array: SharedNdArray<T, D>,
        timeout: Duration,
    ) -> std::result::Result<(), PutTimeoutError<SharedNdArray<T, D>>> {
        self.put_wait(array, deadline(timeout))
            .map_err(|(a, o)| o.put_timeout(a))
    }

    /// Takes the next message, waiting as `wait` allows, and attaches its array; on a
    /// failure other than "gone", the message goes back to the queue.
    fn get_wait<T: Element, D: Dimension>(
        &self,
        wait: Wait,
        vouched: Vouched,
    ) -> std::result::Result<SharedNdArray<T, D>, Outcome> {
        let msg = self.names.get_wait(wait, <[u8]>::to_vec)?;
        self.take(msg, vouched).map_err(Outcome::Failed)
    }

    /// Attaches the array of message `msg`, taken from the queue; on a failure other than
    /// "gone", the message goes back to the queue.
    fn take<T: Element, D: Dimension>(
        &self,
        msg: Vec<u8>,
        _vouched: Vouched,
    ) -> Result<SharedNdArray<T, D>> {
        let (id, name) = decode(&msg)?;
        // SAFETY: `SharedNdArray::open`'s contract (no other process writes the array
        // while this handle views it) is what the caller of the `unsafe fn get*` that made
        // `_vouched` promised (only those functions construct a `Vouched`); the segment is
        // the one the sender handed over, checked by its id below before it is used.
        let opened = unsafe { SharedNdArray::<T, D>::open(name) };
        match opened {
            Ok(mut a) if a.segment_id() == id => {
                a.segment_mut().take_ownership();
                Ok(a)
            }
            // Dropping `a` leaves the other segment alone: it does not own it.
            Ok(_) => Err(gone(name)),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(gone(name)),
            Err(_) if still_named(name, id).is_none() => Err(gone(name)),
            Err(e) => {
                let kept = match self.names.try_put(&msg) {
                    Ok(()) => "the array was put back at the tail of the queue".to_string(),
                    Err(_) => format!(
                        "the queue is full or closed, so the array was left as segment \
                         '{name}', owned by the queue's owner process (attach it with \
                         SharedNdArray::open and the right type, or let gc reclaim it once \
                         that process has ended)"
                    ),
                };
                Err(Error::new(
                    e.kind(),
                    format!("{}; nothing was destroyed: {kept}", e.message()),
                ))
            }
        }
    }

    /// Takes the next array, waiting while the queue is empty; the caller becomes its
    /// owner.
    ///
    /// # Safety
    /// As [`SharedNdArray::open`]: no other process writes the array while it is viewed
    /// here (the sender gave its handle up; other handles attached by name must keep out).
    ///
    /// # Errors
    /// [`GetError::Closed`] when closed and empty. [`GetError::Failed`] of
    /// [`ErrorKind::NotFound`] when the queued array was removed meanwhile (by `ndshm rm`,
    /// or by `gc` after the queue's owner died), even if its name now names another
    /// segment, which is left alone; or with the other errors of [`SharedNdArray::open`]
    /// ([`ErrorKind::TypeMismatch`], [`ErrorKind::DimensionMismatch`], …): the array then
    /// goes back to the tail of the queue, untouched.
    ///
    /// # Examples
    /// ```
    /// use ndshm::{CreateOptions, NdArrayQueue, SharedNdArray};
    /// use ndarray::Ix1;
    /// let q = NdArrayQueue::new(2)?;
    /// q.put(SharedNdArray::<u32, Ix1>::from_elem(CreateOptions::unique(), 4, 7)?)?;
    /// // SAFETY: the sender gave the array up; nobody else writes it.
    /// let wrong = unsafe { q.get::<f32, Ix1>() }.unwrap_err();
    /// assert_eq!(wrong.kind(), ndshm::ErrorKind::TypeMismatch); // still queued
    /// // SAFETY: as above.
    /// let a = unsafe { q.get::<u32, Ix1>()? };
    /// assert_eq!(a.view().sum(), 28);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub unsafe fn get<T: Element, D: Dimension>(
        &self,
    ) -> std::result::Result<SharedNdArray<T, D>, GetError> {
        self.get_wait(Wait::Until(None), Vouched(()))
            .map_err(Outcome::get)
    }

    /// Takes the next array if there is one now.
    ///
    /// # Safety
    /// As [`get`](Self::get).
    ///
    /// # Errors
    /// [`TryGetError::Empty`] (never a timeout), [`TryGetError::Closed`],
    /// [`TryGetError::Failed`] (as [`get`](Self::get)).
    ///
    /// # Examples
    /// ```
    /// use ndshm::{NdArrayQueue, TryGetError};
    /// let q = NdArrayQueue::new(2)?;
    /// // SAFETY: nothing is queued, so nothing is attached.
    /// let e = unsafe { q.try_get::<f64, ndarray::Ix2>() }.unwrap_err();
    /// assert_eq!(e, TryGetError::Empty);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub unsafe fn try_get<T: Element, D: Dimension>(
        &self,
    ) -> std::result::Result<SharedNdArray<T, D>, TryGetError> {
        self.get_wait(Wait::No, Vouched(()))
            .map_err(Outcome::try_get)
    }

    /// Takes the next array, waiting at most `timeout`.
    ///
    /// # Safety
    /// As [`get`](Self::get).
    ///
    /// # Errors
    /// [`GetTimeoutError::Timeout`], [`GetTimeoutError::Closed`],
    /// [`GetTimeoutError::Failed`] (as [`get`](Self::get)).
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// let q = ndshm::NdArrayQueue::new(2)?;
    /// // SAFETY: nothing is queued, so nothing is attached.
    /// let e = unsafe { q.get_timeout::<u8, ndarray::Ix1>(Duration::from_millis(1)) };
    /// assert!(e.unwrap_err().is_timeout());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub unsafe fn get_timeout<T: Element, D: Dimension>(
        &self,
        timeout: Duration,
    ) -> std::result::Result<SharedNdArray<T, D>, GetTimeoutError> {
        self.get_wait(deadline(timeout), Vouched(()))
            .map_err(Outcome::get_timeout)
    }

    /// Closes the queue for every process: puts fail, gets drain what is left (as
    /// [`Queue::shutdown(false)`](crate::Queue::shutdown); this type keeps its
    /// close-for-all meaning).
    pub fn close(&self) {
        self.names.shutdown(false)
    }

    /// Arrays in the queue now.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the queue is empty now.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The segment name, or `None` for an anonymous queue.
    pub fn name(&self) -> Option<&str> {
        self.names.name()
    }
}

fn gone(name: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!(
            "the queued array '{name}' was removed while it was queued (by `ndshm rm`, or by \
             gc after the queue's owner process died); a segment now under that name, if \
             any, is another one and was left alone"
        ),
    )
}

impl Drop for NdArrayQueue {
    fn drop(&mut self) {
        let Some(probe) = self.probe.take() else {
            return; // attached by name: never drains
        };
        // Close this process's copy of the shared description; other copies keep its
        // lock.
        drop(self.presence.take());
        if lease::file_is_locked(&probe).unwrap_or(true) {
            return; // another process still holds the queue
        }
        while let Ok(msg) = self.names.try_get() {
            if let Ok((id, name)) = decode(&msg) {
                unlink_queued(name, id);
            }
        }
    }
}

impl fmt::Debug for NdArrayQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NdArrayQueue")
            .field("queue", &self.names)
            .field("owner_pid", &self.owner.pid)
            .field("made_here", &self.names.region_is_owner_here())
            .finish()
    }
}
