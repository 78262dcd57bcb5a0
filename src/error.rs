//! The crate's one error type.

use std::fmt;
use std::io;

/// The result type of every fallible ndshm call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, as a value to match on.
///
/// The list grows as ndshm grows, so it is `#[non_exhaustive]`: match the kinds you act on
/// and keep a `_` arm.
/// # Examples
/// ```
/// use ndshm::{ErrorKind, SharedNdArray};
/// # let name = format!("doc-errorkind-{}", std::process::id());
/// let _a = SharedNdArray::<f64, ndarray::Ix1>::zeros(&name, 4)?;
/// // Act on the kinds you expect; the message says what was wrong and how to fix it.
/// match SharedNdArray::<f64, ndarray::Ix1>::zeros(&name, 4) {
///     Err(e) if e.kind() == ErrorKind::AlreadyExists => assert!(e.message().contains(&name)),
///     other => panic!("expected AlreadyExists, got {other:?}"),
/// }
/// # Ok::<(), ndshm::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A segment name breaks one of the naming rules (empty, too long, holds `/` or NUL,
    /// `.`/`..`, or a reserved prefix). The message says which rule.
    InvalidName,
    /// Creating a segment whose name is already taken.
    AlreadyExists,
    /// Opening a segment that does not exist.
    NotFound,
    /// The operating system refused access (file mode or ownership).
    PermissionDenied,
    /// The segment holds another element type than the one asked for.
    TypeMismatch,
    /// The segment holds an array of another dimensionality than the one asked for.
    DimensionMismatch,
    /// The segment is an ndshm segment of another kind (a queue opened as an array…).
    KindMismatch,
    /// The segment's header or trailer is truncated, corrupted, or not ndshm/npy at all.
    InvalidHeader,
    /// Run-time state read from shared memory is impossible (a map whose slots are all
    /// full, an index out of range…): something other than ndshm wrote over the segment.
    /// The message names what was wrong; recreate the structure.
    Corrupt,
    /// The segment is shorter than its header says (including a zero-length segment).
    Truncated,
    /// A valid `.npy` header that ndshm does not support (big-endian or structured dtype,
    /// unknown version).
    Unsupported,
    /// A shape whose element count or byte size overflows `usize`/`isize`.
    SizeOverflow,
    /// A shape that does not fit the data (wrong length, wrong dimensionality…).
    ShapeMismatch,
    /// `/dev/shm` has no room for the segment.
    NoSpace,
    /// This process already holds a handle to the segment; share that handle instead.
    AlreadyOpen,
    /// A worker process failed (panicked, returned an error, or died of a signal).
    WorkerFailed,
    /// A blocking call ran out of time, or a pool job passed its deadline (the message
    /// names the chunks that did not finish).
    Timeout,
    /// A pool job was cancelled through its [`CancelToken`](crate::CancelToken) (from
    /// another thread, a signal handler, or Ctrl-C with
    /// [`CancelToken::cancel_on_signal`](crate::CancelToken::cancel_on_signal)); the
    /// message names the chunks that did not finish.
    Cancelled,
    /// The peer or the structure was closed.
    Closed,
    /// A bounded structure is full.
    Full,
    /// A non-blocking receive found nothing to take now (an empty queue's `try_get`, a
    /// pipe's `try_recv`): not an error of the structure; try again later or wait.
    Empty,
    /// An argument is out of range (zero workers, a message larger than the slot…).
    InvalidArgument,
    /// A handle, guard or pool was used in a process other than the one that made it (a
    /// copy inherited through `fork`): re-open the segment by name in that process, or
    /// hand the child what it needs through the forking APIs.
    WrongProcess,
    /// A forking API was asked to fork a closure while this process has other threads
    /// (or while `/proc` cannot tell), and the process has not opted in with
    /// [`allow_fork_with_threads`](crate::allow_fork_with_threads): a lock another thread
    /// held at the fork would hang the child. Fork before starting threads, or opt in; a
    /// caller may also fall back to threads on this kind.
    ForkWithThreads,
    /// The calling thread already holds the lock it asked for: ndshm's locks are not
    /// reentrant (locking again would wait for itself forever). Drop the first guard.
    WouldDeadlock,
    /// Any other operating-system error; see [`Error::source`](std::error::Error::source).
    Io,
    /// An index past the end of a shared list (Python's `IndexError`).
    IndexOutOfRange,
    /// A shared map gained or lost keys while it was being iterated (Python's
    /// `RuntimeError: dictionary changed size during iteration`).
    ChangedDuringIteration,
    /// A [`Barrier`](crate::Barrier) is broken (Python's `BrokenBarrierError`): a party
    /// timed out or died while waiting, or the barrier was aborted or reset while this
    /// party waited. [`Barrier::reset`](crate::Barrier::reset) makes it usable again.
    BrokenBarrier,
    /// The other end of a pipe is gone: every handle of it was dropped or closed, or the
    /// processes holding it died (Python's `EOFError` / `BrokenPipeError`, `mpsc`'s
    /// `Disconnected`). A receive reports it only after every message already sent.
    Disconnected,
}

impl ErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidName => "invalid segment name",
            ErrorKind::AlreadyExists => "segment already exists",
            ErrorKind::NotFound => "segment not found",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::TypeMismatch => "element type mismatch",
            ErrorKind::DimensionMismatch => "dimensionality mismatch",
            ErrorKind::KindMismatch => "segment kind mismatch",
            ErrorKind::InvalidHeader => "invalid header",
            ErrorKind::Corrupt => "corrupted shared state",
            ErrorKind::Truncated => "segment truncated",
            ErrorKind::Unsupported => "unsupported format",
            ErrorKind::SizeOverflow => "size overflow",
            ErrorKind::ShapeMismatch => "shape mismatch",
            ErrorKind::NoSpace => "no space in shared memory",
            ErrorKind::AlreadyOpen => "segment already open in this process",
            ErrorKind::WorkerFailed => "worker failed",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Closed => "closed",
            ErrorKind::Full => "full",
            ErrorKind::Empty => "empty",
            ErrorKind::WrongProcess => "used in another process than its creator",
            ErrorKind::ForkWithThreads => "fork with other threads alive",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::WouldDeadlock => "this thread already holds the lock",
            ErrorKind::Io => "I/O error",
            ErrorKind::IndexOutOfRange => "index out of range",
            ErrorKind::ChangedDuringIteration => "changed during iteration",
            ErrorKind::BrokenBarrier => "broken barrier",
            ErrorKind::Disconnected => "the other end hung up",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An ndshm error: a [`ErrorKind`], a message that says what was wrong and how to fix it,
/// and the operating-system error behind it, if any, as its [`source`](std::error::Error::source).
///
/// # Examples
/// ```
/// use ndshm::{ErrorKind, SharedNdArray};
/// use ndarray::Ix1;
/// let err = SharedNdArray::<f64, Ix1>::zeros("a/b", 3).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::InvalidName);
/// assert!(err.to_string().contains("'/'"));
/// ```
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<io::Error>,
}

impl Error {
    /// An error of `kind` with a message.
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// An error from an OS call, classified by its errno; `context` says what was being done.
    pub(crate) fn os(context: impl Into<String>, err: io::Error) -> Error {
        let kind = match err.kind() {
            io::ErrorKind::NotFound => ErrorKind::NotFound,
            io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
            io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            _ => match err.raw_os_error() {
                Some(libc::ENOSPC) => ErrorKind::NoSpace,
                Some(libc::ENAMETOOLONG) => ErrorKind::InvalidName,
                _ => ErrorKind::Io,
            },
        };
        Error {
            kind,
            message: context.into(),
            source: Some(err),
        }
    }

    /// The error of a fallible call made through a handle bound to another process (a
    /// copy inherited through `fork`): `what` names the handle type, `name` its segment.
    pub(crate) fn wrong_process(what: &str, name: &str) -> Error {
        Error::new(
            ErrorKind::WrongProcess,
            format!("{} (segment '{name}')", foreign_handle_message(what)),
        )
    }

    /// An error from a `nix` call.
    pub(crate) fn errno(context: impl Into<String>, errno: nix::errno::Errno) -> Error {
        Error::os(context, io::Error::from_raw_os_error(errno as i32))
    }

    /// What went wrong, as a value to match on.
    ///
    /// # Examples
    /// ```
    /// let e = ndshm::validate_name("a/b").unwrap_err();
    /// assert_eq!(e.kind(), ndshm::ErrorKind::InvalidName);
    /// assert!(e.message().contains("'/'"), "{e}");
    /// assert_eq!(e.raw_os_error(), None); // not an OS error
    /// ```
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without the kind or the OS error.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The errno behind this error, if an OS call failed.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.source.as_ref().and_then(io::Error::raw_os_error)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)?;
        if let Some(source) = &self.source {
            write!(f, " ({source})")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("source", &self.source)
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> io::Error {
        let kind = match err.kind {
            ErrorKind::NotFound => io::ErrorKind::NotFound,
            ErrorKind::AlreadyExists => io::ErrorKind::AlreadyExists,
            ErrorKind::PermissionDenied => io::ErrorKind::PermissionDenied,
            ErrorKind::Timeout => io::ErrorKind::TimedOut,
            ErrorKind::Cancelled => io::ErrorKind::Interrupted,
            ErrorKind::InvalidName | ErrorKind::InvalidArgument => io::ErrorKind::InvalidInput,
            ErrorKind::InvalidHeader | ErrorKind::Corrupt | ErrorKind::Truncated => {
                io::ErrorKind::InvalidData
            }
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, err)
    }
}

/// What a handle used in the wrong process says: the rule and how to follow it.
pub(crate) fn foreign_handle_message(what: &str) -> String {
    format!(
        "ndshm: this {what} handle was made by another process and inherited through fork; a \
         handle works only in the process that made it (crate docs, Soundness): hand the \
         child its data with fork_chunks / spawn_with, or re-open the segment by name in the \
         child"
    )
}

/// The panic of an infallible accessor (a view, a slice, a guard's deref) used through a
/// handle bound to another process. Kept out of line so that the check at the call site
/// stays one compare and a branch.
#[cold]
#[inline(never)]
#[track_caller]
pub(crate) fn foreign_handle_panic(what: &str) -> ! {
    panic!("{}", foreign_handle_message(what))
}
