//! The counterparts of `multiprocessing.Manager`'s containers, without a server process:
//! [`SharedList`](list::SharedList), [`SharedMap`](map::SharedMap) and
//! [`SharedStruct`](shared_struct::SharedStruct), each in one segment (or anonymous shared
//! memory) under its robust lock.

mod fault;
pub(crate) mod list;
pub(crate) mod map;
pub(crate) mod shared_struct;
