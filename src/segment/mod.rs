//! The named-segment substrate every shared object is built on.
//!
//! - `name`: the rules a segment name follows, and the temporary names of segments being
//!   built;
//! - `segment`: [`Segment`], one mapping of a named segment — create and publish
//!   atomically, open, own, unlink;
//! - `registry`: the one-handle rule for arrays (alone, so it can be reviewed alone);
//! - `trailer`: the 192 bytes that end every ndshm segment;
//! - `region`: a named segment or anonymous shared memory, with the same layout, for the
//!   sync, ipc and manager types;
//! - `shared_mem`: [`SharedMem`](shared_mem::SharedMem), the bounds-checked window on
//!   shared memory (atomics, copies, the robust lock);
//! - `owned`: the segments this process owns (unlinked at exit or on a signal);
//! - `reclaim`: removing a segment only while a check of its trailer still holds (gc and
//!   the exit watchdog);
//! - `options`: [`CreateOptions`], how every create-style constructor is told the name;
//! - `exit_cleanup`: the watchdog behind [`CreateOptions::cleanup_on_exit`].

pub(crate) mod exit_cleanup;
pub(crate) mod name;
pub(crate) mod options;
pub(crate) mod owned;
pub(crate) mod reclaim;
pub(crate) mod region;
pub(crate) mod registry;
#[allow(clippy::module_inception)]
pub(crate) mod segment;
pub(crate) mod shared_mem;
pub(crate) mod trailer;

pub(crate) use name::TEMP_PREFIX;
pub use name::{validate_name, MAX_NAME_LEN};
pub use options::CreateOptions;
pub use segment::unlink;
pub(crate) use segment::{MapAccess, Segment};
pub(crate) use trailer::OwnerFields;
