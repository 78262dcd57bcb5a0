//! Passing data between processes.
//!
//! - [`ring`]: the bounded slot ring in shared memory that every channel here is built on
//!   (layout, claim/publish, recovery from dead peers, waiting); the only `unsafe` of the
//!   folder, for the zero-copy slot slices.
//! - [`error`]: the typed errors of every channel (`put`/`try_put`/`put_timeout`,
//!   `get`/`try_get`/`get_timeout`, and `send`/`recv` likewise for pipes).
//! - [`queue`]: [`Queue<T>`](crate::Queue) for `Pod` items, and the one-ring segment it
//!   shares with [`byte_queue`]: [`ByteQueue`](crate::ByteQueue) for byte messages.
//! - [`pipe`]: [`pipe()`](crate::pipe) and its two [`Connection`](crate::Connection) ends,
//!   two rings in one segment, messages of any length in slot-sized chunks.
//! - [`holders`]: who holds one side of a channel (a pipe end, a queue's producers): the
//!   holder table in shared memory, registration on first use, hand-over to forked children.
//! - [`spsc`]: [`SpscQueue<T>`](crate::SpscQueue), one producer and one consumer process at a
//!   time, the fast path between two processes.
//! - [`joinable_queue`]: [`JoinableQueue<T>`](crate::JoinableQueue), a [`Queue<T>`](crate::Queue)
//!   with Python's `task_done()` / `join()`.
//! - [`array_queue`]: [`NdArrayQueue`](crate::NdArrayQueue), a [`ByteQueue`](crate::ByteQueue)
//!   of segment names that moves whole arrays between processes.

pub(crate) mod array_queue;
pub(crate) mod byte_queue;
pub(crate) mod error;
pub(crate) mod holders;
pub(crate) mod joinable_queue;
pub(crate) mod pipe;
pub(crate) mod queue;
pub(crate) mod ring;
pub(crate) mod spsc;
