//! Process-shared synchronisation: the robust [`Lock`](lock::Lock), atomic shared values
//! ([`SharedValue`](value::SharedValue)), and the lock every array carries.

pub(crate) mod array_lock;
pub(crate) mod lock;
pub(crate) mod value;
