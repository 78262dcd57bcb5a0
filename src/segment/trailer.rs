//! The ndshm trailer: the fixed 192 bytes at the end of every ndshm segment.
//!
//! Whatever a segment holds (an array's `.npy` header and data, a value, a queue…), it ends
//! with this trailer, where numpy never looks. It carries:
//!
//! | offset | field | |
//! |---|---|---|
//! | 0 | magic `b"NDSHM\0TR"` | recognises ndshm segments |
//! | 8 | format version (`u32`) | currently 2 |
//! | 12 | kind (`u32`) | [`SegmentKind`] |
//! | 16 | segment id (`u64`) | random, unique per creation: a reused name is a new id |
//! | 24 | payload length (`u64`) | bytes before the trailer that belong to the content |
//! | 32 | creation time (`u64`, ns since the epoch) | |
//! | 40 | checksum (`u64`) | FNV-1a of bytes 0..40 |
//! | 48 | owner pid (`i32`, atomic) | the process that unlinks it (as its own namespace sees it) |
//! | 52 | persistent flag (`u32`, atomic) | 1: outlives its owner, `gc` leaves it |
//! | 56 | owner start time (`u64`, atomic) | clock ticks since boot (display only) |
//! | 64 | owner lease (`u64`, atomic) | the owner's kernel-held lease: decides whether it lives |
//! | 72 | owner pid namespace (`u64`, atomic) | inode of the owner's pid namespace, 0 unknown |
//! | 80 | spare (16 bytes) | |
//! | 96 | kind-specific area (32 bytes) | |
//! | 128 | lock area (64 bytes) | the segment's own robust lock |
//!
//! All integers are little-endian (native: ndshm runs on little-endian Linux). The payload
//! is padded with zeros to a multiple of 64 bytes, so the trailer is 64-byte aligned and the
//! segment length is `round_up(payload, 64) + 192`.
//!
//! Format 1 (ndshm 0.1) had a 128-byte trailer with a 32-byte lock word set that ndshm no
//! longer uses: its segments are refused with [`ErrorKind::Unsupported`], so an old and a new
//! process can never both believe they hold one lock.

use std::fmt;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

use std::mem::offset_of;

use crate::error::{Error, ErrorKind, Result};
use crate::segment::shared_mem::SharedMem;
use crate::sys::mutex::RobustMutex;
use crate::sys::{lease, proc};

/// Length of the trailer in bytes.
pub(crate) const TRAILER_LEN: usize = 192;
/// Payload alignment: the trailer starts at a multiple of this.
pub(crate) const PAYLOAD_ALIGN: usize = 64;
const MAGIC: [u8; 8] = *b"NDSHM\0TR";
/// The trailer format version this build reads and writes.
pub(crate) const FORMAT_VERSION: u32 = 2;
/// Length of the format-1 trailer, to recognise (and refuse) segments of ndshm 0.1.
const V1_TRAILER_LEN: usize = 128;
/// Offset of the lock area inside the trailer, and its size.
pub(crate) const LOCK_AREA_OFFSET: usize = 128;
/// Size of the lock area.
pub(crate) const LOCK_AREA_LEN: usize = 64;

/// Initialises the lock area of the trailer that ends `segment` (a whole segment or
/// region, not yet shared with anyone: the exclusive borrow says so): an unlocked robust
/// process-shared mutex, see [`RobustMutex`].
///
/// # Errors
/// An OS error when glibc refuses the mutex attributes (it does not on Linux).
pub(crate) fn init_lock_area(segment: &mut [u8]) -> Result<()> {
    let off = segment.len() - TRAILER_LEN + LOCK_AREA_OFFSET;
    RobustMutex::init_in(&mut segment[off..off + LOCK_AREA_LEN])
        .map_err(|e| Error::os("cannot initialise the segment's lock", e))
}

/// What an ndshm segment holds, as recorded in its trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SegmentKind {
    /// A [`SharedNdArray`](crate::SharedNdArray) (`.npy` header and data).
    Array,
    /// A shared scalar value.
    Value,
    /// A standalone robust lock.
    Lock,
    /// A bounded multi-producer multi-consumer queue.
    Queue,
    /// A duplex pipe.
    Pipe,
    /// A shared list.
    List,
    /// A shared hash map.
    Map,
    /// A shared struct (namespace-like state).
    Struct,
    /// The control block of a worker pool.
    Pool,
    /// A re-entrant robust lock ([`RLock`](crate::RLock)).
    RLock,
    /// A counting semaphore ([`Semaphore`](crate::Semaphore) or
    /// [`BoundedSemaphore`](crate::BoundedSemaphore)).
    Semaphore,
    /// An event flag ([`Event`](crate::Event)).
    Event,
    /// A condition variable with its lock ([`Condition`](crate::Condition)).
    Condition,
    /// A barrier ([`Barrier`](crate::Barrier)).
    Barrier,
    /// The task counters of a named [`JoinableQueue`](crate::JoinableQueue) (beside its
    /// queue segment, under the queue's name + `.joinable`).
    JoinableQueue,
}

impl SegmentKind {
    const ALL: [SegmentKind; 15] = [
        SegmentKind::Array,
        SegmentKind::Value,
        SegmentKind::Lock,
        SegmentKind::Queue,
        SegmentKind::Pipe,
        SegmentKind::List,
        SegmentKind::Map,
        SegmentKind::Struct,
        SegmentKind::Pool,
        SegmentKind::RLock,
        SegmentKind::Semaphore,
        SegmentKind::Event,
        SegmentKind::Condition,
        SegmentKind::Barrier,
        SegmentKind::JoinableQueue,
    ];

    fn code(self) -> u32 {
        match self {
            SegmentKind::Array => 1,
            SegmentKind::Value => 2,
            SegmentKind::Lock => 3,
            SegmentKind::Queue => 4,
            SegmentKind::Pipe => 5,
            SegmentKind::List => 6,
            SegmentKind::Map => 7,
            SegmentKind::Struct => 8,
            SegmentKind::Pool => 9,
            SegmentKind::RLock => 10,
            SegmentKind::Semaphore => 11,
            SegmentKind::Event => 12,
            SegmentKind::Condition => 13,
            SegmentKind::Barrier => 14,
            SegmentKind::JoinableQueue => 15,
        }
    }

    fn from_code(code: u32) -> Option<SegmentKind> {
        SegmentKind::ALL.into_iter().find(|k| k.code() == code)
    }

    /// Lower-case name, as `ndshm ls` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            SegmentKind::Array => "array",
            SegmentKind::Value => "value",
            SegmentKind::Lock => "lock",
            SegmentKind::Queue => "queue",
            SegmentKind::Pipe => "pipe",
            SegmentKind::List => "list",
            SegmentKind::Map => "map",
            SegmentKind::Struct => "struct",
            SegmentKind::Pool => "pool",
            SegmentKind::RLock => "rlock",
            SegmentKind::Semaphore => "semaphore",
            SegmentKind::Event => "event",
            SegmentKind::Condition => "condition",
            SegmentKind::Barrier => "barrier",
            SegmentKind::JoinableQueue => "joinable",
        }
    }
}

impl fmt::Display for SegmentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The trailer as it lies in shared memory.
#[repr(C, align(64))]
pub(crate) struct Trailer {
    magic: [u8; 8],
    version: u32,
    kind: u32,
    segment_id: u64,
    payload_len: u64,
    created_ns: u64,
    checksum: u64,
    pub(crate) owner_pid: AtomicI32,
    pub(crate) persistent: AtomicU32,
    pub(crate) owner_start: AtomicU64,
    pub(crate) owner_lease: AtomicU64,
    pub(crate) owner_pidns: AtomicU64,
    _spare: [AtomicU64; 2],
    /// Room for kind-specific words.
    pub(crate) aux: [AtomicU64; 4],
    /// Room for the segment's robust lock.
    pub(crate) lock: [AtomicU64; 8],
}

const _: () = assert!(std::mem::size_of::<Trailer>() == TRAILER_LEN);
const _: () = assert!(std::mem::offset_of!(Trailer, lock) == LOCK_AREA_OFFSET);
const _: () = assert!(std::mem::offset_of!(Trailer, owner_lease) == 64);
const _: () = assert!(crate::sys::mutex::AREA_LEN == LOCK_AREA_LEN);

/// A validated copy of a trailer's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TrailerInfo {
    pub(crate) kind: SegmentKind,
    pub(crate) segment_id: u64,
    pub(crate) payload_len: usize,
    pub(crate) created_ns: u64,
    pub(crate) owner_pid: i32,
    pub(crate) owner_start: u64,
    pub(crate) owner_lease: u64,
    pub(crate) owner_pidns: u64,
    pub(crate) persistent: bool,
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// Segment length for a payload of `payload_len` bytes, checked.
pub(crate) fn segment_len(payload_len: usize) -> Option<usize> {
    payload_len
        .checked_next_multiple_of(PAYLOAD_ALIGN)?
        .checked_add(TRAILER_LEN)
        .filter(|&n| n <= isize::MAX as usize)
}

impl Trailer {
    /// The bytes a fresh trailer is made of.
    pub(crate) fn encode(
        kind: SegmentKind,
        payload_len: usize,
        persistent: bool,
    ) -> [u8; TRAILER_LEN] {
        let mut b = [0u8; TRAILER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&kind.code().to_le_bytes());
        b[16..24].copy_from_slice(&proc::random_u64().to_le_bytes());
        b[24..32].copy_from_slice(&(payload_len as u64).to_le_bytes());
        b[32..40].copy_from_slice(&proc::unix_nanos().to_le_bytes());
        let sum = fnv1a(&b[0..40]);
        b[40..48].copy_from_slice(&sum.to_le_bytes());
        b[48..52].copy_from_slice(&proc::pid().to_le_bytes());
        b[52..56].copy_from_slice(&(persistent as u32).to_le_bytes());
        b[56..64].copy_from_slice(&proc::self_start_time().to_le_bytes());
        b[64..72].copy_from_slice(&lease::mine().to_le_bytes());
        b[72..80].copy_from_slice(&proc::pid_namespace().to_le_bytes());
        b
    }

    /// Parses the last [`TRAILER_LEN`] bytes of a segment of `file_len` bytes.
    ///
    /// Returns `Ok(None)` when they are not an ndshm trailer (no magic): a plain `.npy` file
    /// or foreign data.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidHeader`] for a trailer whose magic is present but whose fields are
    /// corrupt, [`ErrorKind::Unsupported`] for a newer format version,
    /// [`ErrorKind::Truncated`] when the segment is shorter than the trailer says.
    pub(crate) fn parse(b: &[u8; TRAILER_LEN], file_len: usize) -> Result<Option<TrailerInfo>> {
        if b[0..8] != MAGIC {
            let old = &b[TRAILER_LEN - V1_TRAILER_LEN..];
            if old[0..8] == MAGIC && u32_at(old, 8) == 1 {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "ndshm segment format version 1 (made by ndshm 0.1); this build reads \
                         version {FORMAT_VERSION}: recreate the segment with this version \
                         (its data can be saved with the old version's `ndshm save`)"
                    ),
                ));
            }
            return Ok(None);
        }
        let version = u32_at(b, 8);
        if version != FORMAT_VERSION {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "ndshm segment format version {version}; this build reads version \
                     {FORMAT_VERSION}: upgrade ndshm"
                ),
            ));
        }
        if fnv1a(&b[0..40]) != u64_at(b, 40) {
            return Err(Error::new(
                ErrorKind::InvalidHeader,
                "ndshm trailer checksum mismatch: the segment is corrupted",
            ));
        }
        let code = u32_at(b, 12);
        let kind = SegmentKind::from_code(code).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidHeader,
                format!("ndshm trailer names unknown segment kind {code}"),
            )
        })?;
        let payload = u64_at(b, 24);
        let expected = usize::try_from(payload).ok().and_then(segment_len);
        if expected != Some(file_len) {
            return Err(Error::new(
                ErrorKind::Truncated,
                format!(
                    "ndshm trailer says the payload is {payload} bytes, which does not match a \
                     segment of {file_len} bytes"
                ),
            ));
        }
        Ok(Some(TrailerInfo {
            kind,
            segment_id: u64_at(b, 16),
            payload_len: payload as usize,
            created_ns: u64_at(b, 32),
            owner_pid: u32_at(b, 48) as i32,
            persistent: u32_at(b, 52) != 0,
            owner_start: u64_at(b, 56),
            owner_lease: u64_at(b, 64),
            owner_pidns: u64_at(b, 72),
        }))
    }

    /// The owner fields (pid, start time, lease) of raw trailer bytes, if they carry the
    /// ndshm magic. Checks nothing else and allocates nothing: usable in a signal handler,
    /// where it only decides whether the segment under a name is still the one this
    /// process owns.
    pub(crate) fn owner_fields(b: &[u8; TRAILER_LEN]) -> Option<(i32, u64, u64)> {
        (b[0..8] == MAGIC).then(|| (u32_at(b, 48) as i32, u64_at(b, 56), u64_at(b, 64)))
    }
}

/// The live trailer of a mapped segment or region, reached through [`SharedMem`]: the owner
/// fields, the persistent flag and the lock, which other processes may change at any time
/// (the rest never changes after publication and is read from copies, see
/// [`Trailer::parse`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LiveTrailer<'a>(SharedMem<'a>);

impl<'a> LiveTrailer<'a> {
    /// The trailer in `mem`, a window of exactly [`TRAILER_LEN`] bytes.
    pub(crate) fn new(mem: SharedMem<'a>) -> LiveTrailer<'a> {
        assert_eq!(
            mem.len(),
            TRAILER_LEN,
            "ndshm bug: a trailer window is 192 bytes"
        );
        LiveTrailer(mem)
    }

    /// The owner fields.
    pub(crate) fn owner(&self) -> OwnerFields {
        OwnerFields {
            pid: self
                .0
                .atomic::<AtomicI32>(offset_of!(Trailer, owner_pid))
                .load(Ordering::Acquire),
            start: self
                .0
                .u64(offset_of!(Trailer, owner_start))
                .load(Ordering::Relaxed),
            lease: self
                .0
                .u64(offset_of!(Trailer, owner_lease))
                .load(Ordering::Relaxed),
            pidns: self
                .0
                .u64(offset_of!(Trailer, owner_pidns))
                .load(Ordering::Relaxed),
        }
    }

    /// Records `owner` as the owner (the pid last, with release ordering: a reader that
    /// sees the pid sees the rest).
    pub(crate) fn set_owner(&self, owner: OwnerFields) {
        self.0
            .u64(offset_of!(Trailer, owner_start))
            .store(owner.start, Ordering::Relaxed);
        self.0
            .u64(offset_of!(Trailer, owner_pidns))
            .store(owner.pidns, Ordering::Relaxed);
        self.0
            .u64(offset_of!(Trailer, owner_lease))
            .store(owner.lease, Ordering::Relaxed);
        self.0
            .atomic::<AtomicI32>(offset_of!(Trailer, owner_pid))
            .store(owner.pid, Ordering::Release);
    }

    /// Records the calling process as the owner.
    pub(crate) fn claim_ownership(&self) {
        self.set_owner(OwnerFields::this_process());
    }

    /// Whether the segment is marked persistent.
    pub(crate) fn is_persistent(&self) -> bool {
        self.0
            .u32(offset_of!(Trailer, persistent))
            .load(Ordering::Acquire)
            != 0
    }

    /// Marks the segment persistent (or not).
    pub(crate) fn set_persistent(&self, persistent: bool) {
        self.0
            .u32(offset_of!(Trailer, persistent))
            .store(persistent as u32, Ordering::Release);
    }

    /// The segment's robust lock (the lock area).
    pub(crate) fn lock(&self) -> &'a RobustMutex {
        self.0.robust_mutex(LOCK_AREA_OFFSET)
    }
}

/// The owner fields of a trailer: who unlinks the segment, and whose death makes it
/// garbage for `gc` (the lease decides; the rest is for display).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OwnerFields {
    pub(crate) pid: i32,
    pub(crate) start: u64,
    pub(crate) lease: u64,
    pub(crate) pidns: u64,
}

impl OwnerFields {
    /// The calling process.
    pub(crate) fn this_process() -> OwnerFields {
        OwnerFields {
            pid: proc::pid(),
            start: proc::self_start_time(),
            lease: lease::mine(),
            pidns: proc::pid_namespace(),
        }
    }

    /// The owner recorded in a validated trailer copy.
    pub(crate) fn of_info(info: &TrailerInfo) -> OwnerFields {
        OwnerFields {
            pid: info.owner_pid,
            start: info.owner_start,
            lease: info.owner_lease,
            pidns: info.owner_pidns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_parse_round_trip() {
        let b = Trailer::encode(SegmentKind::Queue, 100, true);
        let len = segment_len(100).unwrap();
        assert_eq!(len, 128 + TRAILER_LEN);
        let info = Trailer::parse(&b, len).unwrap().unwrap();
        assert_eq!(info.kind, SegmentKind::Queue);
        assert_eq!(info.payload_len, 100);
        assert!(info.persistent);
        assert_eq!(info.owner_pid, proc::pid());
        assert_eq!(info.owner_lease, lease::mine());
    }

    #[test]
    fn format_1_segments_are_refused() {
        let mut b = [0u8; TRAILER_LEN];
        b[64..72].copy_from_slice(&MAGIC);
        b[72..76].copy_from_slice(&1u32.to_le_bytes());
        let err = Trailer::parse(&b, 256 + TRAILER_LEN).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        assert!(err.message().contains("version 1"), "{err}");
    }

    #[test]
    fn corruption_is_detected() {
        let b = Trailer::encode(SegmentKind::Array, 64, false);
        let len = segment_len(64).unwrap();
        let mut bad = b;
        bad[20] ^= 1;
        assert_eq!(
            Trailer::parse(&bad, len).unwrap_err().kind(),
            ErrorKind::InvalidHeader
        );
        assert_eq!(
            Trailer::parse(&b, len + 64).unwrap_err().kind(),
            ErrorKind::Truncated
        );
        assert!(Trailer::parse(&[0u8; TRAILER_LEN], len).unwrap().is_none());
        // Owner fields are outside the checksum: they change when ownership moves.
        let mut moved = b;
        moved[48] ^= 1;
        assert!(Trailer::parse(&moved, len).unwrap().is_some());
    }
}
