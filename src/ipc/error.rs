//! The typed errors of every channel-like type in ndshm, crossbeam/std style.
//!
//! Queues ([`Queue`](crate::Queue), [`ByteQueue`](crate::ByteQueue),
//! [`NdArrayQueue`](crate::NdArrayQueue)) return [`PutError`], [`TryPutError`],
//! [`PutTimeoutError`] from `put`, `try_put`, `put_timeout` and [`GetError`],
//! [`TryGetError`], [`GetTimeoutError`] from `get`, `try_get`, `get_timeout`. Pipe ends
//! ([`Connection`](crate::Connection)) return [`SendError`], [`TrySendError`],
//! [`SendTimeoutError`], [`RecvError`], [`TryRecvError`], [`RecvTimeoutError`].
//!
//! Every error of a sending call hands the item back ([`into_inner`](TryPutError::into_inner)).
//! Besides full / empty / closed / timeout, each has one `Failed` variant for everything
//! else (a message larger than a slot, a handle used in the wrong process, shared memory
//! that was overwritten, a queued array of another type…), carrying the [`Error`] that says
//! what and how to fix it. Each converts into [`ndshm::Error`](crate::Error) with `?`,
//! keeping its [`ErrorKind`]: `Full`, `Empty`, `Closed`, `Timeout`, or the `Failed` error's
//! own kind.
//!
//! # Examples
//! ```
//! use ndshm::{ErrorKind, Queue, TryGetError, TryPutError};
//! let q = Queue::<u32>::new(2)?;
//! assert_eq!(q.try_get(), Err(TryGetError::Empty));
//! q.put(1)?;
//! q.put(2)?;
//! let err = q.try_put(3).unwrap_err();
//! assert!(err.is_full());
//! assert_eq!(err.into_inner(), 3); // the item comes back
//! let err: ndshm::Error = q.try_put(3).unwrap_err().into();
//! assert_eq!(err.kind(), ErrorKind::Full);
//! # Ok::<(), ndshm::Error>(())
//! ```

use std::fmt;

use crate::error::{Error, ErrorKind};

/// The `ErrorKind` and message of a variant, for `Display` and `From<..> for Error`.
fn describe(kind: ErrorKind, pipe: bool) -> &'static str {
    match (kind, pipe) {
        (ErrorKind::Full, false) => {
            "the queue is full: wait for room (put, put_timeout) or make a larger queue"
        }
        (ErrorKind::Full, true) => {
            "the pipe is full (or another process is sending a long message on this end): \
             wait for room (send, send_timeout) or make a pipe with more slots"
        }
        (ErrorKind::Empty, false) => {
            "the queue is empty now: wait for an item (get, get_timeout) or try again later"
        }
        (ErrorKind::Empty, true) => {
            "no message is waiting now: wait for one (recv, recv_timeout) or try again later"
        }
        (ErrorKind::Timeout, false) => {
            "the queue stayed full (put) or empty (get) until the timeout: wait longer, or \
             check that the other side is still running"
        }
        (ErrorKind::Timeout, true) => {
            "the pipe stayed full (send) or no message arrived (recv) before the timeout: \
             wait longer, or check that the other end is still running"
        }
        (ErrorKind::Closed, false) => {
            "the queue was closed (and, for a get, everything in it was taken): no more \
             items will come; stop, or make a new queue"
        }
        (ErrorKind::Closed, true) => {
            "this handle of the pipe was closed (close()): it cannot be used any more; keep \
             another handle open, or make a new pipe"
        }
        (ErrorKind::Disconnected, false) => {
            "every producer of the queue is gone (each handle that put dropped or closed it, \
             or its process died) and everything in it was taken: no more items will come \
             (mpsc's Disconnected)"
        }
        (ErrorKind::Disconnected, true) => {
            "the other end of the pipe is gone (every handle of it dropped or closed, or its \
             processes died): no more messages will come, and none sent will be received \
             (Python's EOFError / BrokenPipeError)"
        }
        _ => "failed",
    }
}

macro_rules! item_error {
    (
        $(#[$doc:meta])*
        $t:ident, $pipe:expr, $verb:literal { $($(#[$vdoc:meta])* $v:ident => $kind:ident, $is:ident;)* }
    ) => {
        $(#[$doc])*
        #[non_exhaustive]
        pub enum $t<T> {
            $($(#[$vdoc])* $v(T),)*
            /// Anything but the cases above (a message larger than a slot, a handle used
            /// in the wrong process, overwritten shared memory…); the item comes back with
            /// the [`Error`] that says what went wrong and how to fix it.
            Failed(T, Error),
        }

        impl<T> $t<T> {
            /// The item that was not
            #[doc = $verb]
            pub fn into_inner(self) -> T {
                match self {
                    $($t::$v(x))|* | $t::Failed(x, _) => x,
                }
            }

            /// The [`ErrorKind`] this error converts to.
            pub fn kind(&self) -> ErrorKind {
                match self {
                    $($t::$v(_) => ErrorKind::$kind,)*
                    $t::Failed(_, e) => e.kind(),
                }
            }

            $(
                #[doc = concat!("Whether this is `", stringify!($v), "`.")]
                pub fn $is(&self) -> bool {
                    matches!(self, $t::$v(_))
                }
            )*
        }

        impl<T: PartialEq> PartialEq for $t<T> {
            /// Equal variants with equal items; `Failed` errors compare by kind.
            fn eq(&self, other: &Self) -> bool {
                match (self, other) {
                    $(($t::$v(a), $t::$v(b)) => a == b,)*
                    ($t::Failed(a, e), $t::Failed(b, f)) => a == b && e.kind() == f.kind(),
                    _ => false,
                }
            }
        }

        impl<T> fmt::Debug for $t<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($t::$v(_) => f.write_str(concat!(stringify!($v), "(..)")),)*
                    $t::Failed(_, e) => f.debug_tuple("Failed").field(&"..").field(e).finish(),
                }
            }
        }

        impl<T> fmt::Display for $t<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $t::Failed(_, e) => fmt::Display::fmt(e, f),
                    other => f.write_str(describe(other.kind(), $pipe)),
                }
            }
        }

        impl<T> std::error::Error for $t<T> {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                match self {
                    $t::Failed(_, e) => Some(e),
                    _ => None,
                }
            }
        }

        impl<T> From<$t<T>> for Error {
            fn from(e: $t<T>) -> Error {
                match e {
                    $t::Failed(_, e) => e,
                    other => Error::new(other.kind(), describe(other.kind(), $pipe)),
                }
            }
        }
    };
}

macro_rules! plain_error {
    (
        $(#[$doc:meta])*
        $t:ident, $pipe:expr, { $($(#[$vdoc:meta])* $v:ident => $kind:ident, $is:ident;)* }
    ) => {
        $(#[$doc])*
        #[non_exhaustive]
        pub enum $t {
            $($(#[$vdoc])* $v,)*
            /// Anything but the cases above (a message of the wrong size or type, a
            /// receive from two threads at once, overwritten shared memory…), with the
            /// [`Error`] that says what went wrong and how to fix it.
            Failed(Error),
        }

        impl $t {
            /// The [`ErrorKind`] this error converts to.
            pub fn kind(&self) -> ErrorKind {
                match self {
                    $($t::$v => ErrorKind::$kind,)*
                    $t::Failed(e) => e.kind(),
                }
            }

            $(
                #[doc = concat!("Whether this is `", stringify!($v), "`.")]
                pub fn $is(&self) -> bool {
                    matches!(self, $t::$v)
                }
            )*
        }

        impl PartialEq for $t {
            /// Equal variants; `Failed` errors compare by kind.
            fn eq(&self, other: &Self) -> bool {
                match (self, other) {
                    $(($t::$v, $t::$v) => true,)*
                    ($t::Failed(e), $t::Failed(f)) => e.kind() == f.kind(),
                    _ => false,
                }
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($t::$v => f.write_str(stringify!($v)),)*
                    $t::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
                }
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $t::Failed(e) => fmt::Display::fmt(e, f),
                    other => f.write_str(describe(other.kind(), $pipe)),
                }
            }
        }

        impl std::error::Error for $t {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                match self {
                    $t::Failed(e) => Some(e),
                    _ => None,
                }
            }
        }

        impl From<$t> for Error {
            fn from(e: $t) -> Error {
                match e {
                    $t::Failed(e) => e,
                    other => Error::new(other.kind(), describe(other.kind(), $pipe)),
                }
            }
        }
    };
}

item_error!(
    /// The error of a blocking `put` on a queue: the item comes back.
    PutError, false, "put." {
        /// The queue was closed.
        Closed => Closed, is_closed;
    }
);
item_error!(
    /// The error of a queue's `try_put`: the item comes back.
    TryPutError, false, "put." {
        /// The queue is full now.
        Full => Full, is_full;
        /// The queue was closed.
        Closed => Closed, is_closed;
    }
);
item_error!(
    /// The error of a queue's `put_timeout`: the item comes back.
    PutTimeoutError, false, "put." {
        /// The queue stayed full until the timeout.
        Timeout => Timeout, is_timeout;
        /// The queue was closed.
        Closed => Closed, is_closed;
    }
);
plain_error!(
    /// The error of a blocking `get` on a queue.
    GetError, false, {
        /// The queue was closed and everything in it was taken.
        Closed => Closed, is_closed;
        /// Every producer is gone (see [`Queue`](crate::Queue), "Producers") and
        /// everything they put was taken: `mpsc`'s `Disconnected`.
        Disconnected => Disconnected, is_disconnected;
    }
);
plain_error!(
    /// The error of a queue's `try_get`.
    TryGetError, false, {
        /// Nothing to take now (also while a live but stalled peer holds the next item).
        Empty => Empty, is_empty;
        /// The queue was closed and everything in it was taken.
        Closed => Closed, is_closed;
        /// Every producer is gone (see [`Queue`](crate::Queue), "Producers") and
        /// everything they put was taken: `mpsc`'s `Disconnected`.
        Disconnected => Disconnected, is_disconnected;
    }
);
plain_error!(
    /// The error of a queue's `get_timeout`.
    GetTimeoutError, false, {
        /// Nothing came before the timeout.
        Timeout => Timeout, is_timeout;
        /// The queue was closed and everything in it was taken.
        Closed => Closed, is_closed;
        /// Every producer is gone (see [`Queue`](crate::Queue), "Producers") and
        /// everything they put was taken: `mpsc`'s `Disconnected`.
        Disconnected => Disconnected, is_disconnected;
    }
);
item_error!(
    /// The error of a blocking `send` on a pipe end: the item comes back.
    SendError, true, "sent." {
        /// This handle was closed ([`Connection::close`](crate::Connection::close)).
        Closed => Closed, is_closed;
        /// The other end is gone (dropped, closed or dead): nobody will receive it
        /// (Python's `BrokenPipeError`).
        Disconnected => Disconnected, is_disconnected;
    }
);
item_error!(
    /// The error of a pipe end's `try_send`: the item comes back.
    TrySendError, true, "sent." {
        /// No room for the message's first chunk now, or another process or thread is
        /// sending a long message on this end.
        Full => Full, is_full;
        /// This handle was closed ([`Connection::close`](crate::Connection::close)).
        Closed => Closed, is_closed;
        /// The other end is gone (dropped, closed or dead): nobody will receive it.
        Disconnected => Disconnected, is_disconnected;
    }
);
item_error!(
    /// The error of a pipe end's `send_timeout`: the item comes back.
    SendTimeoutError, true, "sent." {
        /// No room before the timeout.
        Timeout => Timeout, is_timeout;
        /// This handle was closed ([`Connection::close`](crate::Connection::close)).
        Closed => Closed, is_closed;
        /// The other end is gone (dropped, closed or dead): nobody will receive it.
        Disconnected => Disconnected, is_disconnected;
    }
);
plain_error!(
    /// The error of a blocking `recv` on a pipe end.
    RecvError, true, {
        /// This handle was closed ([`Connection::close`](crate::Connection::close)).
        Closed => Closed, is_closed;
        /// The other end is gone (dropped, closed or dead) and every message it sent was
        /// received (Python's `EOFError`).
        Disconnected => Disconnected, is_disconnected;
    }
);
plain_error!(
    /// The error of a pipe end's `try_recv`.
    TryRecvError, true, {
        /// No whole message is waiting now (what arrived of a long one is kept for the next
        /// receive).
        Empty => Empty, is_empty;
        /// This handle was closed ([`Connection::close`](crate::Connection::close)).
        Closed => Closed, is_closed;
        /// The other end is gone and every message it sent was received.
        Disconnected => Disconnected, is_disconnected;
    }
);
plain_error!(
    /// The error of a pipe end's `recv_timeout`.
    RecvTimeoutError, true, {
        /// No whole message arrived before the timeout (what arrived of a long one is kept
        /// for the next receive).
        Timeout => Timeout, is_timeout;
        /// This handle was closed ([`Connection::close`](crate::Connection::close)).
        Closed => Closed, is_closed;
        /// The other end is gone and every message it sent was received.
        Disconnected => Disconnected, is_disconnected;
    }
);

/// How a ring operation ended, before it is typed: the item-less outcome every queue and
/// pipe call maps onto its own error type with [`Outcome`]'s methods.
#[derive(Debug)]
pub(crate) enum Outcome {
    Full,
    Empty,
    Timeout,
    Closed,
    Failed(Error),
    /// Pipes: the other end is gone; queues (gets only): every producer is gone.
    Disconnected,
}

impl Outcome {
    pub(crate) fn put<T>(self, item: T) -> PutError<T> {
        match self {
            Outcome::Failed(e) => PutError::Failed(item, e),
            _ => PutError::Closed(item),
        }
    }
    pub(crate) fn try_put<T>(self, item: T) -> TryPutError<T> {
        match self {
            Outcome::Full | Outcome::Empty | Outcome::Timeout => TryPutError::Full(item),
            Outcome::Closed | Outcome::Disconnected => TryPutError::Closed(item),
            Outcome::Failed(e) => TryPutError::Failed(item, e),
        }
    }
    pub(crate) fn put_timeout<T>(self, item: T) -> PutTimeoutError<T> {
        match self {
            Outcome::Full | Outcome::Empty | Outcome::Timeout => PutTimeoutError::Timeout(item),
            Outcome::Closed | Outcome::Disconnected => PutTimeoutError::Closed(item),
            Outcome::Failed(e) => PutTimeoutError::Failed(item, e),
        }
    }
    pub(crate) fn get(self) -> GetError {
        match self {
            Outcome::Failed(e) => GetError::Failed(e),
            Outcome::Disconnected => GetError::Disconnected,
            _ => GetError::Closed,
        }
    }
    pub(crate) fn try_get(self) -> TryGetError {
        match self {
            Outcome::Full | Outcome::Empty | Outcome::Timeout => TryGetError::Empty,
            Outcome::Closed => TryGetError::Closed,
            Outcome::Disconnected => TryGetError::Disconnected,
            Outcome::Failed(e) => TryGetError::Failed(e),
        }
    }
    pub(crate) fn get_timeout(self) -> GetTimeoutError {
        match self {
            Outcome::Full | Outcome::Empty | Outcome::Timeout => GetTimeoutError::Timeout,
            Outcome::Closed => GetTimeoutError::Closed,
            Outcome::Disconnected => GetTimeoutError::Disconnected,
            Outcome::Failed(e) => GetTimeoutError::Failed(e),
        }
    }
    pub(crate) fn send<T>(self, item: T) -> SendError<T> {
        match self {
            Outcome::Failed(e) => SendError::Failed(item, e),
            Outcome::Disconnected => SendError::Disconnected(item),
            _ => SendError::Closed(item),
        }
    }
    pub(crate) fn try_send<T>(self, item: T) -> TrySendError<T> {
        match self {
            Outcome::Full | Outcome::Empty | Outcome::Timeout => TrySendError::Full(item),
            Outcome::Closed => TrySendError::Closed(item),
            Outcome::Disconnected => TrySendError::Disconnected(item),
            Outcome::Failed(e) => TrySendError::Failed(item, e),
        }
    }
    pub(crate) fn send_timeout<T>(self, item: T) -> SendTimeoutError<T> {
        match self {
            Outcome::Full | Outcome::Empty | Outcome::Timeout => SendTimeoutError::Timeout(item),
            Outcome::Closed => SendTimeoutError::Closed(item),
            Outcome::Disconnected => SendTimeoutError::Disconnected(item),
            Outcome::Failed(e) => SendTimeoutError::Failed(item, e),
        }
    }
    pub(crate) fn recv(self) -> RecvError {
        match self {
            Outcome::Failed(e) => RecvError::Failed(e),
            Outcome::Disconnected => RecvError::Disconnected,
            _ => RecvError::Closed,
        }
    }
    pub(crate) fn try_recv(self) -> TryRecvError {
        match self {
            Outcome::Full | Outcome::Empty | Outcome::Timeout => TryRecvError::Empty,
            Outcome::Closed => TryRecvError::Closed,
            Outcome::Disconnected => TryRecvError::Disconnected,
            Outcome::Failed(e) => TryRecvError::Failed(e),
        }
    }
    pub(crate) fn recv_timeout(self) -> RecvTimeoutError {
        match self {
            Outcome::Full | Outcome::Empty | Outcome::Timeout => RecvTimeoutError::Timeout,
            Outcome::Closed => RecvTimeoutError::Closed,
            Outcome::Disconnected => RecvTimeoutError::Disconnected,
            Outcome::Failed(e) => RecvTimeoutError::Failed(e),
        }
    }
}

impl From<Error> for Outcome {
    fn from(e: Error) -> Outcome {
        Outcome::Failed(e)
    }
}
