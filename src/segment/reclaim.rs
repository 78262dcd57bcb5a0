//! Removing a segment that another process may be re-creating or re-claiming meanwhile:
//! the one mechanism behind `gc` and the exit watchdog of
//! [`CreateOptions::cleanup_on_exit`](crate::CreateOptions::cleanup_on_exit).
//!
//! The name is first moved to a private temporary name (so nobody opens the segment while
//! it is checked again, and the unlink can only hit the inode that was checked), the
//! trailer is read again, and only then is the private name unlinked; a segment that
//! changed in between is put back under its name.

use std::fs::File;

use crate::segment::name::TEMP_PREFIX;
use crate::segment::trailer::{Trailer, TrailerInfo, TRAILER_LEN};
use crate::sys::{lease, proc, shm};

/// Marks the private names of segments being reclaimed
/// (`.ndshm-tmp-<pid>-L<lease>-gc-…`): gc judges such a name by its trailer's owner, never
/// by the lease in the name, so a reclaimer that dies between the rename and the put-back
/// cannot get a live owner's segment removed.
pub(crate) const RECLAIM_MARK: &str = "-gc-";

/// The validated trailer of an open segment file, if it has one.
pub(crate) fn read_trailer(file: &File) -> Option<TrailerInfo> {
    let len = file.metadata().ok()?.len();
    if len < TRAILER_LEN as u64 {
        return None;
    }
    let mut tail = [0u8; TRAILER_LEN];
    let got = shm::read_at(file, &mut tail, len - TRAILER_LEN as u64).ok()?;
    if got != TRAILER_LEN {
        return None;
    }
    Trailer::parse(&tail, usize::try_from(len).ok()?).ok()?
}

/// Removes segment `name`, open as `file` with identity `file_id`, if `garbage` still holds
/// for its trailer once the name has been taken away; `true` when this call removed it.
pub(crate) fn remove_checked(
    name: &str,
    file: &File,
    file_id: (u64, u64),
    garbage: impl FnOnce(&TrailerInfo) -> bool,
) -> bool {
    // Lock it, so that other gcs leave it alone under the private name (the lock lives as
    // long as `file`; without it, other gcs judge the private name by the trailer).
    let _ = lease::lock_file(file);
    let private = format!(
        "{TEMP_PREFIX}{}-L{:x}{RECLAIM_MARK}{:x}",
        proc::pid(),
        lease::mine(),
        proc::random_u64()
    );
    if shm::publish(name, &private).is_err() {
        return false; // gone already, or not ours to remove
    }
    if shm::file_id_of_name(&private) == Some(file_id)
        && read_trailer(file).is_some_and(|t| garbage(&t))
    {
        return shm::unlink(&private).is_ok();
    }
    // Re-created or re-claimed since we looked: put it back. Should a new segment have
    // taken the name in this instant, the renamed one is left under the private name,
    // which the next gc judges on its own (by its trailer's owner).
    let _ = shm::publish(&private, name);
    false
}
