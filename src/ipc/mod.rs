//! Passing data between processes: the bounded ring that [`Queue`](queue::Queue),
//! [`ByteQueue`](queue::ByteQueue) and [`Pipe`](pipe::Pipe) share, and the queue of arrays
//! ([`ArrayQueue`](array_queue::ArrayQueue)).

pub(crate) mod array_queue;
pub(crate) mod pipe;
pub(crate) mod queue;
