//! Garbage collection: removing the segments whose owner died without unlinking them
//! (killed by `SIGKILL`, crashed, or ended with `_exit`).
//!
//! A segment is *stale* when it carries a valid ndshm trailer, is not persistent, and its
//! owner — the pid **and** start time recorded in the trailer, so that a reused pid is not
//! taken for the owner — is no longer running. Temporary segments (`.ndshm-tmp-<pid>-…`,
//! what [`create`](crate::SharedNdArray::zeros) builds before it publishes) are stale when
//! their creator is gone. Nothing else in `/dev/shm` is ever touched: not a live owner's
//! segment, not a persistent one, not a `.npy` file without a trailer, not a foreign file,
//! link, FIFO or directory.
//!
//! # Races
//! gc never unlinks a name it has not re-checked: it first renames the candidate to a
//! private temporary name (`renameat2(RENAME_NOREPLACE)`), checks that the renamed file is
//! the inode it inspected (a segment re-created under the same name by a live process is
//! renamed back untouched) and reads its trailer again (an owner that claimed the segment
//! in the meantime keeps it: it is renamed back), and only then unlinks. While a candidate
//! is under the private name, an `open` of it fails with "not found" (it is garbage
//! anyway). If gc itself is killed in that window, the private name holds gc's pid, so the
//! next gc removes it.
//!
//! # Limits
//! Owners are identified by pid in gc's own pid namespace: run gc in the namespace (the
//! container) whose processes created the segments; a `/dev/shm` shared between pid
//! namespaces (`docker --ipc=host`, `--ipc=container:`) makes another namespace's live
//! segments look stale. Segments of other users are removed only when gc may unlink them
//! (`/dev/shm` is sticky: their owner or root); others are skipped.

use std::fs::File;
use std::os::unix::fs::MetadataExt;

use crate::error::{Error, Result};
use crate::info::{describe, SegmentInfo};
use crate::segment::TEMP_PREFIX;
use crate::sys::{proc, shm};
use crate::trailer::{Trailer, TrailerInfo, TRAILER_LEN};

/// Seconds of slack when comparing a temporary segment's time with its creator's start
/// time (boot time has one-second resolution and moves with clock adjustments).
const CLOCK_SLACK_SECS: i64 = 5;

/// Lists the segments [`gc`] would remove now, without removing anything (a dry run).
///
/// # Errors
/// An OS error reading `/dev/shm`.
///
/// # Examples
/// ```
/// for s in ndshm::stale()? {
///     println!("{} (owner {} is gone)", s.name, s.owner_pid);
/// }
/// # Ok::<(), ndshm::Error>(())
/// ```
pub fn stale() -> Result<Vec<SegmentInfo>> {
    Ok(candidates()?.into_iter().map(|c| c.info).collect())
}

/// Removes every stale segment from `/dev/shm` and returns what it removed, sorted by name.
///
/// Stale: an ndshm segment (valid trailer) that is not persistent and whose owner (pid and
/// start time) is no longer running, or a temporary segment whose creator is gone. A live
/// owner's segment, a persistent one, and any file that is not an ndshm segment (a `.npy`
/// without trailer, a foreign file, a link, a FIFO, a directory) are never touched.
///
/// # Races
/// A candidate is first renamed to a private temporary name (`RENAME_NOREPLACE`), checked
/// again there (same inode as judged, trailer still stale), and only then unlinked; one
/// that was re-created or re-claimed by a live process in the meantime is renamed back.
/// While it is under the private name, opening it fails with "not found".
///
/// # Limits
/// Owners are pids of gc's own pid namespace: run gc where the segments' creators run
/// (a `/dev/shm` shared across containers makes other containers' segments look stale).
///
/// # Errors
/// An OS error reading `/dev/shm`. Segments gc may not remove (another user's) are skipped.
///
/// # Examples
/// ```
/// use ndshm::{Process, SharedNdArray};
/// # let name = format!("doc-gc-{}", std::process::id());
/// let n = name.clone();
/// // A child creates a segment and dies without unlinking it.
/// Process::spawn(move || {
///     let a = SharedNdArray::<f64, ndarray::Ix1>::zeros(&n, 10).unwrap();
///     std::mem::forget(a); // no Drop: the segment outlives its dead owner
/// })?
/// .join()?;
/// let removed = ndshm::gc_matching(|s| s.name == name)?;
/// assert_eq!(removed.len(), 1);
/// assert!(ndshm::info(&name).is_err());
/// # Ok::<(), ndshm::Error>(())
/// ```
pub fn gc() -> Result<Vec<SegmentInfo>> {
    gc_matching(|_| true)
}

/// [`gc`] restricted to the stale segments for which `select` returns `true` (for example
/// those whose name starts with a prefix).
///
/// # Errors
/// As [`gc`].
pub fn gc_matching(mut select: impl FnMut(&SegmentInfo) -> bool) -> Result<Vec<SegmentInfo>> {
    let mut removed = Vec::new();
    for c in candidates()? {
        if select(&c.info) && c.remove() {
            removed.push(c.info);
        }
    }
    Ok(removed)
}

/// A segment found stale, with the open file it was judged by.
struct Candidate {
    info: SegmentInfo,
    file: File,
    file_id: (u64, u64),
    temporary: bool,
}

fn candidates() -> Result<Vec<Candidate>> {
    let dir = std::fs::read_dir(shm::SHM_DIR).map_err(|e| Error::os("cannot read /dev/shm", e))?;
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if let Some(c) = inspect(&name) {
            out.push(c);
        }
    }
    out.sort_by(|a, b| a.info.name.cmp(&b.info.name));
    Ok(out)
}

/// Judges one entry of `/dev/shm`; `Some` when it is stale.
fn inspect(name: &str) -> Option<Candidate> {
    let file = shm::open_for_inspection(name).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let file_id = (meta.dev(), meta.ino());
    if let Some(rest) = name.strip_prefix(TEMP_PREFIX) {
        let pid: i32 = rest.split('-').next()?.parse().ok()?;
        if !creator_gone(pid, meta.mtime()) {
            return None;
        }
        let info = SegmentInfo {
            name: name.to_string(),
            kind: None,
            dtype: None,
            shape: None,
            fortran_order: false,
            bytes: meta.len(),
            owner_pid: pid,
            owner_alive: false,
            persistent: false,
            segment_id: 0,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
        };
        return Some(Candidate {
            info,
            file,
            file_id,
            temporary: true,
        });
    }
    let t = read_trailer(&file)?;
    if !is_stale(&t) {
        return None;
    }
    // Describe it fully when its content parses; a stale segment with a damaged header is
    // still an ndshm segment (its trailer is valid) and still garbage.
    let info = describe(name, &file).unwrap_or_else(|_| SegmentInfo {
        name: name.to_string(),
        kind: Some(t.kind),
        dtype: None,
        shape: None,
        fortran_order: false,
        bytes: meta.len(),
        owner_pid: t.owner_pid,
        owner_alive: false,
        persistent: false,
        segment_id: t.segment_id,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
    });
    // `describe` re-read the owner: if it came alive in between, leave it.
    if info.owner_alive || info.persistent || info.kind.is_none() {
        return None;
    }
    Some(Candidate {
        info,
        file,
        file_id,
        temporary: false,
    })
}

/// The validated trailer of an open segment file, if it has one.
fn read_trailer(file: &File) -> Option<TrailerInfo> {
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

fn is_stale(t: &TrailerInfo) -> bool {
    !t.persistent && !proc::is_alive(t.owner_pid, t.owner_start)
}

/// Whether the creator of a temporary segment last written at `mtime` (seconds since the
/// epoch) is gone: no process `pid` runs, or the one that does started after the file was
/// last written (a reused pid).
fn creator_gone(pid: i32, mtime: i64) -> bool {
    match proc::start_unix_secs(pid) {
        None => true,
        Some(started) => mtime + CLOCK_SLACK_SECS < started as i64,
    }
}

impl Candidate {
    /// Removes the segment if it is still stale; `true` when this call removed it.
    fn remove(&self) -> bool {
        let name = &self.info.name;
        if self.temporary {
            // Temporary names are unique per creation: nobody re-creates one.
            return shm::unlink(name).is_ok();
        }
        // Take the name away first, so that nobody opens the segment while it is checked
        // again, and so that the unlink below can only hit the inode we checked.
        let private = format!("{TEMP_PREFIX}{}-gc-{:x}", proc::pid(), proc::random_u64());
        if shm::publish(name, &private).is_err() {
            return false; // gone already, or not ours to remove
        }
        let same = shm::file_id_of_name(&private) == Some(self.file_id);
        if same && read_trailer(&self.file).is_some_and(|t| is_stale(&t)) {
            return shm::unlink(&private).is_ok();
        }
        // Re-created or re-claimed since we looked: put it back. Should a new segment have
        // taken the name in this instant, the renamed one is left under the private name,
        // which the next gc judges on its own (it holds this gc's pid).
        let _ = shm::publish(&private, name);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::{CreateOptions, Segment};
    use crate::trailer::SegmentKind;
    use std::os::unix::fs::FileExt;

    /// A persistent segment whose trailer names `owner` (pid, start) and is not persistent.
    fn segment_owned_by(name: &str, owner: (i32, u64)) -> Segment {
        let opts = CreateOptions::new().persistent(true);
        let seg = Segment::create(name, SegmentKind::Value, 8, &opts, |_| Ok(())).unwrap();
        set_owner(name, owner);
        seg
    }

    fn set_owner(name: &str, (pid, start): (i32, u64)) {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(shm::path(name))
            .unwrap();
        let end = f.metadata().unwrap().len() - TRAILER_LEN as u64;
        f.write_all_at(&pid.to_le_bytes(), end + 48).unwrap();
        f.write_all_at(&0u32.to_le_bytes(), end + 52).unwrap();
        f.write_all_at(&start.to_le_bytes(), end + 56).unwrap();
    }

    const DEAD: (i32, u64) = (i32::MAX - 7, 12345);

    #[test]
    fn a_name_recreated_after_the_check_is_left_alone() {
        let name = format!("gc-unit-{}-recreated", proc::pid());
        let old = segment_owned_by(&name, DEAD);
        let c = inspect(&name).expect("stale");
        drop(old);
        shm::unlink(&name).unwrap();
        // A live process re-creates the name between gc's check and its removal.
        let fresh = Segment::create(&name, SegmentKind::Value, 8, &CreateOptions::new(), |_| {
            Ok(())
        })
        .unwrap();
        assert!(!c.remove());
        assert!(
            shm::file_id_of_name(&name).is_some(),
            "the new segment survives"
        );
        drop(fresh);
        assert!(shm::file_id_of_name(&name).is_none());
    }

    #[test]
    fn a_segment_claimed_after_the_check_is_put_back() {
        let name = format!("gc-unit-{}-claimed", proc::pid());
        let seg = segment_owned_by(&name, DEAD);
        let c = inspect(&name).expect("stale");
        // A live process takes ownership between gc's check and its removal.
        set_owner(&name, (proc::pid(), proc::self_start_time()));
        assert!(!c.remove());
        assert!(shm::file_id_of_name(&name).is_some(), "renamed back");
        assert!(inspect(&name).is_none());
        drop(seg);
        shm::unlink(&name).unwrap();
    }

    #[test]
    fn a_stale_segment_is_removed() {
        let name = format!("gc-unit-{}-stale", proc::pid());
        let seg = segment_owned_by(&name, DEAD);
        let c = inspect(&name).expect("stale");
        assert!(c.remove());
        assert!(shm::file_id_of_name(&name).is_none());
        // Two gcs racing: the loser finds nothing to remove.
        assert!(!c.remove());
        drop(seg);
    }

    #[test]
    fn temp_creator_rules() {
        // No such process.
        assert!(creator_gone(i32::MAX, 0));
        // This process, and a file written now: not gone.
        let now = proc::unix_nanos() as i64 / 1_000_000_000;
        assert!(!creator_gone(proc::pid(), now));
        // A file written long before this process started: its creator was another
        // process that had our pid.
        assert!(creator_gone(proc::pid(), 1_000));
    }
}
