//! Inspecting segments without attaching: `info`, `list` (what `ndshm info`/`ls` print).
//!
//! These read the segment file with `pread` and never map it, so a truncated or hostile
//! segment cannot fault the caller, and no process-wide handle is taken.

use std::fs::File;
use std::os::unix::fs::MetadataExt;

use crate::element::DType;
use crate::error::{Error, ErrorKind, Result};
use crate::segment::trailer::{SegmentKind, Trailer, TrailerInfo, TRAILER_LEN};
use crate::segment::{validate_name, TEMP_PREFIX};
use crate::sys::lease::{self, Liveness};
use crate::sys::{proc, shm};

/// Whether a segment's owner runs, as the kernel vouches for it.
///
/// ndshm never decides this from `/proc`: the owner's *lease* (a lock the kernel holds for
/// the owning process and drops when it exits, recorded in the segment's trailer) says so,
/// whatever pid namespace the owner and the asker run in. See the crate docs, "Crashes and
/// signals".
///
/// # Examples
/// ```
/// use ndshm::{CreateOptions, OwnerStatus, SharedValue};
/// let v = SharedValue::create(CreateOptions::unique(), 0u32)?;
/// let info = ndshm::info(v.name().unwrap())?;
/// assert_eq!(info.owner_status, OwnerStatus::Alive); // this process holds its lease
/// assert_eq!(info.owner_status.to_string(), "alive");
/// # Ok::<(), ndshm::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OwnerStatus {
    /// The owner holds its lease: it runs (perhaps in another pid namespace).
    Alive,
    /// The owner's lease was released: it has exited. Only such segments are stale.
    Dead,
    /// Cannot be decided (no lease was recorded, or the lease file cannot be read): the
    /// segment is treated as live and `gc` leaves it.
    Unknown,
}

impl OwnerStatus {
    /// Lower-case word, as `ndshm ls` prints it: `alive`, `dead` or `unknown`.
    ///
    /// # Examples
    /// ```
    /// assert_eq!(ndshm::OwnerStatus::Dead.as_str(), "dead");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            OwnerStatus::Alive => "alive",
            OwnerStatus::Dead => "dead",
            OwnerStatus::Unknown => "unknown",
        }
    }

    /// The status of the owner recorded in a trailer.
    pub(crate) fn of(t: &TrailerInfo) -> OwnerStatus {
        match lease::check(t.owner_lease) {
            Liveness::Alive => OwnerStatus::Alive,
            Liveness::Dead => OwnerStatus::Dead,
            Liveness::Unknown => OwnerStatus::Unknown,
        }
    }
}

impl std::fmt::Display for OwnerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the owner recorded in `t` runs in another pid namespace than the caller (both
/// namespaces known): its pid is then a pid of that namespace.
pub(crate) fn in_other_pid_namespace(t: &TrailerInfo) -> bool {
    let here = proc::pid_namespace();
    t.owner_pidns != 0 && here != 0 && t.owner_pidns != here
}

/// What a segment is, read from its trailer and (for arrays) its `.npy` header.
///
/// # Examples
/// ```
/// use ndshm::{CreateOptions, SegmentKind, SharedList};
/// let list = SharedList::<u64>::create(CreateOptions::unique(), 100)?;
/// let info = ndshm::info(list.name().unwrap())?;
/// assert_eq!(info.kind, Some(SegmentKind::List));
/// assert_eq!(info.dtype, None); // not an array
/// assert!(!info.persistent && !info.is_stale());
/// assert_eq!(info.layout(), "-");
/// # Ok::<(), ndshm::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The segment's name.
    pub name: String,
    /// Its kind; `None` for a plain `.npy` file without an ndshm trailer.
    pub kind: Option<SegmentKind>,
    /// Element type, for arrays.
    pub dtype: Option<DType>,
    /// Shape, for arrays.
    pub shape: Option<Vec<usize>>,
    /// Fortran order, for arrays.
    pub fortran_order: bool,
    /// Size of the segment file in bytes.
    pub bytes: u64,
    /// The owner's pid (0 when unknown), as the owner's own pid namespace numbers it.
    pub owner_pid: i32,
    /// Whether the owner is known to run ([`OwnerStatus::Alive`]). `false` does not mean
    /// dead: see [`owner_status`](Self::owner_status).
    pub owner_alive: bool,
    /// Whether the owner runs, has exited, or cannot be told (from its kernel-held lease,
    /// never from `/proc`).
    pub owner_status: OwnerStatus,
    /// Whether the owner runs (or ran) in another pid namespace than this process (another
    /// container sharing `/dev/shm`): [`owner_pid`](Self::owner_pid) is then a pid of that
    /// namespace, not of this one. `false` when either namespace is unknown.
    pub owner_in_other_pid_namespace: bool,
    /// Whether the segment outlives its owner.
    pub persistent: bool,
    /// The unique id of the segment's creation (0 when unknown).
    pub segment_id: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owning user id.
    pub uid: u32,
}

impl SegmentInfo {
    /// Whether `gc` would remove it: an ndshm segment, not persistent, whose owner is
    /// provably dead ([`OwnerStatus::Dead`]; an [`Unknown`](OwnerStatus::Unknown) owner is
    /// never stale).
    ///
    /// # Examples
    /// ```
    /// let mine = ndshm::SharedValue::create(ndshm::CreateOptions::unique(), 1i64)?;
    /// assert!(!ndshm::info(mine.name().unwrap())?.is_stale()); // its owner (we) runs
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn is_stale(&self) -> bool {
        self.kind.is_some() && !self.persistent && self.owner_status == OwnerStatus::Dead
    }

    /// The owner's status in words, as `ndshm ls` and `ndshm info` print it: `alive`,
    /// `alive, in another pid namespace (pid N there)`, `dead` or `unknown`.
    ///
    /// # Examples
    /// ```
    /// let mine = ndshm::Lock::create(ndshm::CreateOptions::unique())?;
    /// assert_eq!(ndshm::info(mine.name().unwrap())?.owner_text(), "alive");
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn owner_text(&self) -> String {
        match (self.owner_status, self.owner_in_other_pid_namespace) {
            (OwnerStatus::Alive, true) => format!(
                "alive, in another pid namespace (pid {} there)",
                self.owner_pid
            ),
            (status, _) => status.as_str().to_string(),
        }
    }

    /// `C` or `F` for arrays, `-` otherwise.
    ///
    /// # Examples
    /// ```
    /// use ndshm::{CreateOptions, SharedNdArray};
    /// let a = SharedNdArray::<f32, ndarray::Ix2>::zeros(CreateOptions::unique(), (2, 3))?;
    /// assert_eq!(ndshm::info(a.name())?.layout(), "C");
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn layout(&self) -> &'static str {
        match (self.dtype, self.fortran_order) {
            (None, _) => "-",
            (Some(_), false) => "C",
            (Some(_), true) => "F",
        }
    }
}

/// Describes segment `name` without attaching to it.
///
/// # Errors
/// [`ErrorKind::NotFound`], [`ErrorKind::PermissionDenied`], and
/// [`ErrorKind::InvalidHeader`]/[`ErrorKind::Truncated`] when it is neither an ndshm segment
/// nor a `.npy` file.
///
/// # Examples
/// ```
/// # let name = format!("doc-info-{}", std::process::id());
/// let a = ndshm::SharedNdArray::<f64, ndarray::Ix2>::zeros(&name, (1000, 3))?;
/// let info = ndshm::info(&name)?;
/// assert_eq!(info.shape.as_deref(), Some(&[1000, 3][..]));
/// assert_eq!(info.owner_pid, std::process::id() as i32);
/// assert!(info.owner_alive);
/// # Ok::<(), ndshm::Error>(())
/// ```
pub fn info(name: &str) -> Result<SegmentInfo> {
    let name = validate_name(name)?;
    let file = shm::open_for_inspection(name).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            return not_regular(name);
        }
        let msg = match e.kind() {
            std::io::ErrorKind::NotFound => format!("no segment named '{name}' in /dev/shm"),
            _ => format!("cannot read segment '{name}'"),
        };
        Error::os(msg, e)
    })?;
    describe(name, &file)
}

fn not_regular(name: &str) -> Error {
    Error::new(
        ErrorKind::InvalidHeader,
        format!(
            "'{name}' in /dev/shm is not a regular file (a link, FIFO or directory), so not a \
             segment: ndshm never follows links there"
        ),
    )
}

pub(crate) fn describe(name: &str, file: &File) -> Result<SegmentInfo> {
    let meta = file
        .metadata()
        .map_err(|e| Error::os(format!("cannot stat segment '{name}'"), e))?;
    if !meta.is_file() {
        return Err(not_regular(name));
    }
    let len = meta.len();
    if len == 0 {
        return Err(Error::new(
            ErrorKind::Truncated,
            format!("segment '{name}' is empty (zero bytes)"),
        ));
    }
    let mut out = SegmentInfo {
        name: name.to_string(),
        kind: None,
        dtype: None,
        shape: None,
        fortran_order: false,
        bytes: len,
        owner_pid: 0,
        owner_alive: false,
        owner_status: OwnerStatus::Unknown,
        owner_in_other_pid_namespace: false,
        persistent: false,
        segment_id: 0,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
    };
    let read_err = |e| Error::os(format!("cannot read segment '{name}'"), e);
    let mut payload = None;
    if len >= TRAILER_LEN as u64 {
        let mut tail = [0u8; TRAILER_LEN];
        let got = shm::read_at(file, &mut tail, len - TRAILER_LEN as u64).map_err(read_err)?;
        if got == TRAILER_LEN {
            if let Some(t) = Trailer::parse(&tail, len as usize)? {
                payload = Some(t.payload_len as u64);
                out.kind = Some(t.kind);
                out.owner_pid = t.owner_pid;
                out.owner_status = OwnerStatus::of(&t);
                out.owner_alive = out.owner_status == OwnerStatus::Alive;
                out.owner_in_other_pid_namespace = in_other_pid_namespace(&t);
                out.persistent = t.persistent;
                out.segment_id = t.segment_id;
            }
        }
    }
    if matches!(out.kind, None | Some(SegmentKind::Array)) {
        match crate::array::npy::read_npy_header(file, payload.unwrap_or(len)).map_err(read_err)? {
            Ok((h, offset)) => {
                let have = usize::try_from(payload.unwrap_or(len)).unwrap_or(usize::MAX);
                h.check_fits(name, offset, have, payload.is_some())?;
                out.dtype = Some(h.dtype);
                out.shape = Some(h.shape);
                out.fortran_order = h.fortran_order;
            }
            Err(e) if out.kind.is_some() => return Err(e),
            Err(_) => {
                return Err(Error::new(
                    ErrorKind::InvalidHeader,
                    format!("'{name}' in /dev/shm is neither an ndshm segment nor a .npy file"),
                ))
            }
        }
    }
    Ok(out)
}

/// Lists the ndshm segments in `/dev/shm` (those with an ndshm trailer), sorted by name.
/// Segments this process may not read, and files that are not ndshm segments, are skipped.
///
/// # Errors
/// An OS error reading `/dev/shm`.
///
/// # Examples
/// ```
/// let q = ndshm::SharedValue::create(ndshm::CreateOptions::unique(), 0u8)?;
/// let all = ndshm::list()?;
/// assert!(all.iter().any(|s| Some(s.name.as_str()) == q.name()));
/// # Ok::<(), ndshm::Error>(())
/// ```
pub fn list() -> Result<Vec<SegmentInfo>> {
    let dir = std::fs::read_dir(shm::SHM_DIR).map_err(|e| Error::os("cannot read /dev/shm", e))?;
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with(TEMP_PREFIX) {
            continue;
        }
        let Ok(file) = shm::open_for_inspection(&name) else {
            continue;
        };
        if let Ok(info) = describe(&name, &file) {
            if info.kind.is_some() {
                out.push(info);
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
