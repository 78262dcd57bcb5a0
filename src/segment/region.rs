//! `Region`: the memory every synchronisation type and container lives in — a named
//! segment (attachable by name from any process) or an anonymous shared mapping (inherited
//! by children forked after it was made) — with the same layout either way: the payload,
//! then the trailer whose `lock` area holds the region's robust lock.

use crate::error::{Error, ErrorKind, Result};
use crate::segment::shared_mem::SharedMem;
use crate::segment::trailer::{self, SegmentKind, LOCK_AREA_OFFSET, TRAILER_LEN};
use crate::segment::{CreateOptions, MapAccess, Segment};
use crate::sys::fork::AnonShared;
use crate::sys::mutex::RobustMutex;
use crate::sys::proc;

enum Backing {
    Named(Segment),
    Anon(AnonShared),
}

/// A named segment or an anonymous shared mapping: payload, then a trailer.
pub(crate) struct Region {
    backing: Option<Backing>,
    payload_len: usize,
    /// Token of the process that made this handle (`proc::process_token`); a copy
    /// inherited through `fork` is not dropped as a handle in the child (it would unlink
    /// the parent's name or unmap memory the parent's other copies still use). A token,
    /// not a pid: after two forks a dead maker's pid can come back as a grandchild's.
    maker: u64,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("name", &self.name())
            .field("payload_len", &self.payload_len)
            .finish()
    }
}

impl Region {
    /// Creates the named segment `opts` describe, of `kind`; `init` fills the zeroed payload
    /// before publication.
    pub(crate) fn create(
        opts: &CreateOptions,
        kind: SegmentKind,
        payload_len: usize,
        init: impl FnOnce(&mut [u8]) -> Result<()>,
    ) -> Result<Region> {
        let seg = Segment::create(opts, kind, payload_len, init)?;
        Ok(Region {
            backing: Some(Backing::Named(seg)),
            payload_len,
            maker: proc::process_token(),
        })
    }

    /// Attaches segment `name`, which must be of `kind`; the payload must be at least
    /// `min_len` bytes (the caller validates the rest of its header).
    pub(crate) fn open(name: &str, kind: SegmentKind, min_len: usize) -> Result<Region> {
        let seg = Segment::open(name, MapAccess::SHARED_OBJECT)?;
        seg.expect_kind(kind)?;
        let payload_len = seg.payload_len();
        if payload_len < min_len {
            return Err(Error::new(
                ErrorKind::Truncated,
                format!(
                    "segment '{name}' holds {payload_len} bytes, fewer than a {kind} header \
                     needs ({min_len}): it is corrupted"
                ),
            ));
        }
        Ok(Region {
            backing: Some(Backing::Named(seg)),
            payload_len,
            maker: proc::process_token(),
        })
    }

    /// Anonymous shared memory of the same layout, inherited by children forked later.
    pub(crate) fn anonymous(
        payload_len: usize,
        init: impl FnOnce(&mut [u8]) -> Result<()>,
    ) -> Result<Region> {
        let total = trailer::segment_len(payload_len).ok_or_else(|| {
            Error::new(
                ErrorKind::SizeOverflow,
                format!("{payload_len} bytes overflow the address space"),
            )
        })?;
        let (mem, filled) = AnonShared::new_with(total, |all| {
            init(&mut all[..payload_len])?;
            // Before anyone can fork: children forked from now on inherit the lock
            // initialised.
            trailer::init_lock_area(all)
        })
        .map_err(|e| Error::os(format!("cannot map {total} bytes of shared memory"), e))?;
        filled?;
        Ok(Region {
            backing: Some(Backing::Anon(mem)),
            payload_len,
            maker: proc::process_token(),
        })
    }

    /// The whole mapping: payload, padding, trailer.
    fn mem(&self) -> SharedMem<'_> {
        match self.backing.as_ref() {
            Some(Backing::Named(s)) => SharedMem::segment_whole(s)
                .expect("ndshm bug: a region's segment is writable, with a trailer, not an array"),
            Some(Backing::Anon(m)) => SharedMem::anon(m),
            None => unreachable!("backing is only taken in drop"),
        }
    }

    /// The payload: the bytes before the trailer, page-aligned.
    pub(crate) fn payload(&self) -> SharedMem<'_> {
        self.mem().sub(0, self.payload_len)
    }

    /// Payload length in bytes.
    pub(crate) fn payload_len(&self) -> usize {
        self.payload_len
    }

    /// The region's robust lock (the trailer's lock area).
    pub(crate) fn lock(&self) -> &RobustMutex {
        let mem = self.mem();
        // Every backing is `segment_len(payload) = round_up(payload, 64) + TRAILER_LEN`
        // bytes long (checked at open by the trailer parser): the trailer is its tail.
        mem.robust_mutex(mem.len() - TRAILER_LEN + LOCK_AREA_OFFSET)
    }

    /// Whether this handle is the one that decides the fate of the contents: the owner of a
    /// named segment, or the process that made anonymous memory (not a forked copy).
    pub(crate) fn is_owner_here(&self) -> bool {
        if proc::process_token() != self.maker {
            return false;
        }
        match self.backing.as_ref() {
            Some(Backing::Named(s)) => s.is_owner(),
            _ => true,
        }
    }

    /// The segment's name, or `None` for anonymous memory.
    pub(crate) fn name(&self) -> Option<&str> {
        match self.backing.as_ref() {
            Some(Backing::Named(s)) => Some(s.name()),
            _ => None,
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if matches!(self.backing, Some(Backing::Anon(_))) && self.lock().held_in_this_process() {
            // A leaked guard: a thread's robust list runs through the lock's memory, which
            // must stay mapped (a named segment sees to that in its own drop).
            std::mem::forget(self.backing.take());
            return;
        }
        if proc::process_token() != self.maker {
            // A copy inherited through fork: the child must neither unlink the parent's
            // name nor touch the parent's registry entry. The mapping goes when the child
            // exits. (The named segment's own `Drop` checks its token too; anonymous
            // memory has no other guard.)
            if let Some(b) = self.backing.take() {
                std::mem::forget(b);
            }
        }
    }
}

/// A tag that tells segments holding different Rust types apart: a hash of the type's
/// name and size (never 0). Stable for one build of a type; processes of one program (or
/// programs built with the same crate versions) agree on it.
pub(crate) fn type_tag<T>() -> u64 {
    let name = std::any::type_name::<T>();
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    h ^ (std::mem::size_of::<T>() as u64).rotate_left(48) | 1
}

/// Reads the `u64` at byte `off` of a region's payload (header words written before the
/// segment was published and never changed since).
pub(crate) fn header_word(region: &Region, off: usize) -> u64 {
    region
        .payload()
        .u64(off)
        .load(std::sync::atomic::Ordering::Acquire)
}
