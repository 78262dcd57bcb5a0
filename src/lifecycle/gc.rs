//! Garbage collection: removing the segments whose owner died without unlinking them
//! (killed by `SIGKILL`, crashed, or ended with `_exit`).
//!
//! A segment is *stale* when it carries a valid ndshm trailer, is not persistent, and its
//! owner is provably dead: the owner's lease (see the crate docs, "Crashes and signals") was
//! released by the kernel. Nothing is decided from `/proc`: an owner in another pid
//! namespace, or one gc cannot see, is alive or unknown, never stale, and an owner whose
//! liveness cannot be told ([`OwnerStatus::Unknown`]) keeps its segment.
//!
//! Temporary segments (`.ndshm-tmp-…`, what [`create`](crate::SharedNdArray::zeros) builds
//! before it publishes) are removed when their creator is gone: the creator holds an OFD
//! lock on the file while it builds it, and records its lease in the name. A locked one is
//! never removed; an unlocked one is removed when the lease in its name is dead, or, with
//! no lease to go by, once it has not been written for [`TEMP_GRACE_SECS`].
//!
//! Nothing else in `/dev/shm` is ever touched: not a live or unknown owner's segment, not a
//! persistent one, not a `.npy` file without a trailer, not a foreign file, link, FIFO or
//! directory.
//!
//! # Races
//! gc never unlinks a name it has not re-checked: it locks the candidate's file, renames it
//! to a private temporary name (`renameat2(RENAME_NOREPLACE)`), checks that the renamed file
//! is the inode it inspected (a segment re-created under the same name by a live process is
//! renamed back untouched) and reads its trailer again (an owner that claimed the segment
//! in the meantime keeps it: it is renamed back), and only then unlinks. While a candidate
//! is under the private name, an `open` of it fails with "not found" (it is garbage
//! anyway), and gc's lock tells other gcs to leave it. If gc itself is killed in that
//! window, the next gc removes the private name (once unlocked, when the segment's owner is
//! dead).

use std::fs::File;
use std::os::unix::fs::MetadataExt;

use crate::error::{Error, Result};
use crate::lifecycle::info::{describe, in_other_pid_namespace, OwnerStatus, SegmentInfo};
use crate::segment::reclaim::{self, read_trailer, RECLAIM_MARK};
use crate::segment::trailer::TrailerInfo;
use crate::segment::TEMP_PREFIX;
use crate::sys::lease::{self, Liveness};
use crate::sys::{proc, shm};

/// Seconds an unlocked temporary segment without a usable lease in its name must have gone
/// unwritten before gc removes it (its creator locks it right after creating it; this
/// covers that instant, generously).
pub(crate) const TEMP_GRACE_SECS: i64 = 10;

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
/// Stale: an ndshm segment (valid trailer) that is not persistent and whose owner is
/// provably dead ([`OwnerStatus::Dead`]: the kernel released the owner's lease), or a
/// temporary segment whose creator is gone. A live owner's segment, one whose owner cannot
/// be told ([`OwnerStatus::Unknown`]), a persistent one, and any file that is not an ndshm
/// segment (a `.npy` without trailer, a foreign file, a link, a FIFO, a directory) are
/// never touched.
///
/// Liveness does not come from `/proc`, so gc is right whatever pid namespace it runs in:
/// containers sharing `/dev/shm` see each other's live segments as live (`ndshm ls` says
/// "alive, in another pid namespace").
///
/// # Races
/// A candidate is first locked and renamed to a private temporary name
/// (`RENAME_NOREPLACE`), checked again there (same inode as judged, owner still dead), and
/// only then unlinked; one that was re-created or re-claimed by a live process in the
/// meantime is renamed back. While it is under the private name, opening it fails with
/// "not found".
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
///
/// # Examples
/// ```
/// // Only the stale segments under this program's prefix (nothing removed when none is).
/// let prefix = format!("doc-gc-matching-{}-", std::process::id());
/// let removed = ndshm::gc_matching(|s| s.name.starts_with(&prefix))?;
/// assert!(removed.iter().all(|s| s.name.starts_with(&prefix) && s.is_stale()));
/// # Ok::<(), ndshm::Error>(())
/// ```
pub fn gc_matching(mut select: impl FnMut(&SegmentInfo) -> bool) -> Result<Vec<SegmentInfo>> {
    gc_where(|c| select(&c.info))
}

/// [`gc`] restricted to the stale segments and temporary segments whose owner (creator)
/// recorded lease `owner`: what a dead process left behind. Removes nothing for lease 0.
pub(crate) fn gc_owned_by(owner: u64) -> Result<Vec<SegmentInfo>> {
    if owner == 0 {
        return Ok(Vec::new());
    }
    gc_where(|c| c.owner_lease == owner)
}

fn gc_where(mut select: impl FnMut(&Candidate) -> bool) -> Result<Vec<SegmentInfo>> {
    let mut removed = Vec::new();
    for c in candidates()? {
        if select(&c) && c.remove() {
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
    /// The lease of the owner (creator, for a temporary segment); 0 when none is known.
    owner_lease: u64,
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
        let (pid, creator) = parse_temp_name(rest)?;
        if !temp_abandoned(name, &file, creator, meta.mtime()) {
            return None;
        }
        let t = read_trailer(&file);
        let info = SegmentInfo {
            name: name.to_string(),
            kind: None,
            dtype: None,
            shape: None,
            fortran_order: false,
            bytes: meta.len(),
            owner_pid: pid,
            owner_alive: false,
            owner_status: OwnerStatus::Dead,
            owner_in_other_pid_namespace: t.as_ref().is_some_and(in_other_pid_namespace),
            persistent: false,
            segment_id: t.map_or(0, |t| t.segment_id),
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
        };
        return Some(Candidate {
            info,
            file,
            file_id,
            owner_lease: creator,
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
        owner_status: OwnerStatus::Dead,
        owner_in_other_pid_namespace: in_other_pid_namespace(&t),
        persistent: false,
        segment_id: t.segment_id,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
    });
    // `describe` re-read the owner: if it is not dead after all (claimed in between), or
    // the trailer changed, leave it.
    if info.owner_status != OwnerStatus::Dead || info.persistent || info.kind.is_none() {
        return None;
    }
    Some(Candidate {
        info,
        file,
        file_id,
        owner_lease: t.owner_lease,
        temporary: false,
    })
}

/// The pid and the lease (0 if none) in a temporary name, after its prefix:
/// `<pid>-L<lease hex>-…` (segments being built, gc's private names) or `<pid>-…`.
fn parse_temp_name(rest: &str) -> Option<(i32, u64)> {
    let mut parts = rest.split('-');
    let pid: i32 = parts.next()?.parse().ok()?;
    let lease = parts
        .next()
        .and_then(|p| p.strip_prefix('L'))
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .unwrap_or(0);
    Some((pid, lease))
}

/// Whether a temporary segment was abandoned by its creator (see the module docs):
/// never while some process holds a lock on it; then when the lease in its name is dead;
/// else once it has gone unwritten for [`TEMP_GRACE_SECS`] — and a gc private name only
/// when the segment's own owner is dead as well.
fn temp_abandoned(name: &str, file: &File, creator: u64, mtime: i64) -> bool {
    if lease::file_is_locked(file).unwrap_or(true) {
        return false; // being built, or being checked by a running gc
    }
    if name.contains(RECLAIM_MARK) {
        // A segment a gc renamed and then died: garbage only if its owner is dead.
        return read_trailer(file).is_some_and(|t| is_stale(&t));
    }
    match lease::check(creator) {
        Liveness::Dead => true,
        Liveness::Alive => false,
        Liveness::Unknown => {
            let now = (proc::unix_nanos() / 1_000_000_000) as i64;
            mtime + TEMP_GRACE_SECS < now
        }
    }
}

/// Not persistent, and its owner provably dead.
fn is_stale(t: &TrailerInfo) -> bool {
    !t.persistent && OwnerStatus::of(t) == OwnerStatus::Dead
}

impl Candidate {
    /// Removes the segment if it is still stale; `true` when this call removed it.
    fn remove(&self) -> bool {
        let name = &self.info.name;
        if self.temporary {
            // Temporary names are unique per creation: nobody re-creates one. Check the
            // lock once more (a gc that just renamed a segment to its private name).
            if shm::file_id_of_name(name) != Some(self.file_id)
                || lease::file_is_locked(&self.file).unwrap_or(true)
            {
                return false;
            }
            return shm::unlink(name).is_ok();
        }
        reclaim::remove_checked(name, &self.file, self.file_id, is_stale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::trailer::{SegmentKind, TRAILER_LEN};
    use crate::segment::{CreateOptions, Segment};
    use std::os::unix::fs::FileExt;

    /// A segment (persistent, so that its handle leaves the name) whose trailer names an
    /// owner with lease `owner`, and is not persistent.
    fn segment_owned_by(name: &str, owner: u64) -> Segment {
        let opts = CreateOptions::named(name).persistent(true);
        let seg = Segment::create(&opts, SegmentKind::Value, 8, |_| Ok(())).unwrap();
        set_owner(name, owner);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(shm::path(name))
            .unwrap();
        let end = f.metadata().unwrap().len() - TRAILER_LEN as u64;
        f.write_all_at(&0u32.to_le_bytes(), end + 52).unwrap();
        seg
    }

    fn set_owner(name: &str, lease: u64) {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(shm::path(name))
            .unwrap();
        let end = f.metadata().unwrap().len() - TRAILER_LEN as u64;
        f.write_all_at(&lease.to_le_bytes(), end + 64).unwrap();
    }

    #[test]
    fn a_name_recreated_after_the_check_is_left_alone() {
        let name = format!("gc-unit-{}-recreated", proc::pid());
        let old = segment_owned_by(&name, lease::dead_lease_for_tests());
        let c = inspect(&name).expect("stale");
        drop(old);
        shm::unlink(&name).unwrap();
        // A live process re-creates the name between gc's check and its removal.
        let fresh = Segment::create(&CreateOptions::named(&name), SegmentKind::Value, 8, |_| {
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
        let seg = segment_owned_by(&name, lease::dead_lease_for_tests());
        let c = inspect(&name).expect("stale");
        // A live process takes ownership between gc's check and its removal.
        set_owner(&name, lease::mine());
        assert!(!c.remove());
        assert!(shm::file_id_of_name(&name).is_some(), "renamed back");
        assert!(inspect(&name).is_none());
        drop(seg);
        shm::unlink(&name).unwrap();
    }

    #[test]
    fn a_stale_segment_is_removed_and_an_unknown_owners_is_not() {
        let name = format!("gc-unit-{}-stale", proc::pid());
        let seg = segment_owned_by(&name, lease::dead_lease_for_tests());
        let c = inspect(&name).expect("stale");
        assert!(c.remove());
        assert!(shm::file_id_of_name(&name).is_none());
        // Two gcs racing: the loser finds nothing to remove.
        assert!(!c.remove());
        drop(seg);
        // No lease recorded: unknown, never stale.
        let seg = segment_owned_by(&name, 0);
        assert!(inspect(&name).is_none());
        assert_eq!(
            crate::lifecycle::info::info(&name).unwrap().owner_status,
            OwnerStatus::Unknown
        );
        drop(seg);
        shm::unlink(&name).unwrap();
    }

    /// A temporary file of `len` bytes with the given name, last written `age` seconds ago.
    fn temp_file(name: &str, len: usize, age: u64) -> File {
        let f = shm::create_excl(name, 0o600).unwrap();
        f.set_len(len as u64).unwrap();
        let t = std::time::SystemTime::now() - std::time::Duration::from_secs(age);
        f.set_modified(t).unwrap();
        f
    }

    #[test]
    fn a_locked_temporary_segment_is_kept_whatever_its_age_or_lease() {
        let dead = lease::dead_lease_for_tests();
        let name = format!("{TEMP_PREFIX}{}-L{dead:x}-gcunit-locked", proc::pid());
        let f = temp_file(&name, 64, 3600);
        lease::lock_file(&f).unwrap();
        assert!(inspect(&name).is_none(), "its creator still holds it");
        drop(f); // the creator goes: unlocked, and its lease is dead
        let c = inspect(&name).expect("abandoned");
        assert!(c.remove());
        assert!(shm::file_id_of_name(&name).is_none());
    }

    #[test]
    fn an_unlocked_temporary_segment_without_lease_waits_out_the_grace() {
        let fresh = format!("{TEMP_PREFIX}{}-L0-gcunit-fresh", proc::pid());
        let old = format!("{TEMP_PREFIX}{}-L0-gcunit-old", proc::pid());
        let live = format!(
            "{TEMP_PREFIX}{}-L{:x}-gcunit-live",
            proc::pid(),
            lease::mine()
        );
        let _f = temp_file(&fresh, 0, 0);
        let _o = temp_file(&old, 0, TEMP_GRACE_SECS as u64 + 60);
        let _l = temp_file(&live, 0, 3600);
        assert!(
            inspect(&fresh).is_none(),
            "its creator may be about to lock it"
        );
        assert!(inspect(&live).is_none(), "its creator's lease is held");
        assert!(inspect(&old).expect("abandoned").remove());
        shm::unlink(&fresh).unwrap();
        shm::unlink(&live).unwrap();
    }

    #[test]
    fn create_holds_a_lock_on_the_temporary_segment_while_it_builds_it() {
        let name = format!("gc-unit-{}-building", proc::pid());
        let marker = proc::random_u64().to_le_bytes();
        let seg = Segment::create(&CreateOptions::named(&name), SegmentKind::Value, 8, |b| {
            b[..8].copy_from_slice(&marker);
            // Find our own temporary file among this process's open files by its content.
            let mut found = 0;
            for fd in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
                let Ok(target) = std::fs::read_link(fd.path()) else {
                    continue;
                };
                let Some(tmp) = target
                    .to_str()
                    .and_then(|t| t.strip_prefix("/dev/shm/"))
                    .filter(|t| t.starts_with(TEMP_PREFIX))
                else {
                    continue;
                };
                let Ok(f) = shm::open_for_inspection(tmp) else {
                    continue;
                };
                let mut head = [0u8; 8];
                if shm::read_at(&f, &mut head, 0).ok() != Some(8) || head != marker {
                    continue;
                }
                found += 1;
                assert!(lease::file_is_locked(&f).unwrap(), "{tmp} is not locked");
                assert!(inspect(tmp).is_none(), "gc would remove {tmp}");
            }
            assert_eq!(found, 1, "the temporary segment was not found");
            Ok(())
        })
        .unwrap();
        drop(seg);
    }

    #[test]
    fn temp_names_carry_pid_and_lease() {
        assert_eq!(parse_temp_name("12-Lab-3-ff"), Some((12, 0xab)));
        assert_eq!(parse_temp_name("12-3-ff"), Some((12, 0)));
        assert_eq!(parse_temp_name("lease-12-ff"), None);
    }
}
