//! Every operating-system call ndshm makes lives under this module; the rest of the crate
//! calls the small API it exposes.
//!
//! Linux is the target ndshm is built and tested on (POSIX shared memory under `/dev/shm`,
//! futexes, `/proc`); other targets fail to compile with a clear message until someone ports
//! this module.

#[cfg(not(target_os = "linux"))]
compile_error!("ndshm supports Linux only: its sys/ module needs /dev/shm, futex and /proc");

pub(crate) mod fork;
pub(crate) mod futex;
pub(crate) mod io;
pub(crate) mod lease;
pub(crate) mod mutex;
pub(crate) mod pidfd;
pub(crate) mod pipe;
pub(crate) mod proc;
pub(crate) mod shm;
pub(crate) mod signal;
