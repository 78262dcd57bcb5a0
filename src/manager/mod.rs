//! The counterparts of `multiprocessing.Manager`'s containers, without a server process:
//! [`SharedList`](list::SharedList), [`SharedMap`](map::SharedMap) (in insertion order) and
//! [`SharedStruct`](shared_struct::SharedStruct), each in one segment (or anonymous shared
//! memory) under its own robust lock. (They do not take a shared [`Lock`](crate::Lock) as
//! `SharedValue::with_lock` does: their crash recovery rests on the lock telling them that
//! *their* holder died, which a lock shared with other objects cannot promise.) `fault`
//! holds the crash points of their crash tests.

mod fault;
pub(crate) mod list;
pub(crate) mod map;
pub(crate) mod shared_struct;
