//! Process-shared synchronisation: the raw lock protocol every lock-like type shares
//! ([`LockGuard`](raw_lock::LockGuard), in `raw_lock`), the robust [`Lock`](lock::Lock) and
//! atomic shared values ([`SharedValue`](value::SharedValue)). (The lock every array
//! carries is in `array::lock`; the raw robust mutex all of them rest on is `sys::mutex`.)

pub(crate) mod barrier;
pub(crate) mod condition;
pub(crate) mod event;
pub(crate) mod lock;
pub(crate) mod raw_lock;
pub(crate) mod rlock;
pub(crate) mod semaphore;
pub(crate) mod value;
pub(crate) mod waiting;
