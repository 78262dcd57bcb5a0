//! [`CreateOptions`]: what every named segment is created with — its name (given, or
//! generated), permission bits, persistence, cleanup at exit, prefaulting and, for arrays,
//! memory order.

use crate::error::Result;
use crate::segment::validate_name;
use crate::sys::proc;

/// How a named segment is created: the one options mechanism of every `create`-style
/// constructor (`SharedNdArray::zeros`, `Queue::create`, `Lock::create`, …).
///
/// Those constructors take `impl Into<CreateOptions>`, so a plain name is enough — a
/// `&str` or `String` converts into the default options for that name — and the options
/// are spelled only when something differs from the defaults (mode `0o600`, owned by the
/// creator and unlinked when its handle drops, no cleanup-at-exit watchdog, no prefault,
/// C order):
///
/// ```
/// use ndshm::{CreateOptions, SharedNdArray};
/// # let name = format!("doc-options-{}", std::process::id());
/// // Just a name: the defaults.
/// let a = SharedNdArray::<f64, ndarray::Ix2>::zeros(&name, (2, 3))?;
/// drop(a);
/// // Options: readable by the group, Fortran order.
/// let opts = CreateOptions::named(&name).mode(0o640).fortran_order(true);
/// let b = SharedNdArray::<f64, ndarray::Ix2>::zeros(opts, (2, 3))?;
/// assert!(b.is_fortran_order());
/// // No name of your own: a unique one is generated, as Python's SharedMemory(create=True).
/// let c = SharedNdArray::<u8, ndarray::Ix1>::zeros(CreateOptions::unique(), 16)?;
/// assert!(c.name().starts_with("ndshm-"));
/// # Ok::<(), ndshm::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub(crate) name: NameChoice,
    pub(crate) mode: u32,
    pub(crate) persistent: bool,
    pub(crate) prefault: bool,
    pub(crate) fortran_order: bool,
    pub(crate) cleanup_on_exit: bool,
}

/// Where a new segment's name comes from.
#[derive(Debug, Clone)]
pub(crate) enum NameChoice {
    /// The caller's name: creation fails with `AlreadyExists` if it is taken.
    Given(String),
    /// A fresh name under this prefix, drawn again if one is taken.
    Unique(String),
}

/// Prefix of generated names ([`CreateOptions::unique`]).
pub(crate) const UNIQUE_PREFIX: &str = "ndshm-";

impl CreateOptions {
    /// Default options for a segment named `name` (a leading `/` is allowed, as in
    /// `shm_open`; the name is checked when the segment is created: see
    /// [`validate_name`]).
    ///
    /// # Examples
    /// ```
    /// # let name = format!("doc-named-{}", std::process::id());
    /// let opts = ndshm::CreateOptions::named(format!("/{name}")); // a leading '/' is dropped
    /// let a = ndshm::SharedNdArray::<u8, ndarray::Ix1>::zeros(opts, 4)?;
    /// assert_eq!(a.name(), name);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn named(name: impl AsRef<str>) -> CreateOptions {
        CreateOptions::with_name(NameChoice::Given(name.as_ref().to_owned()))
    }

    /// Default options for a segment whose name ndshm generates: `ndshm-` and 16 random hex
    /// digits (Python's `SharedMemory(create=True)` without a name). A generated name that is
    /// taken is drawn again. The handle's `name()` tells it, to pass to other processes.
    ///
    /// # Examples
    /// ```
    /// let a = ndshm::SharedNdArray::<u8, ndarray::Ix1>::zeros(ndshm::CreateOptions::unique(), 4)?;
    /// assert!(a.name().starts_with("ndshm-"));
    /// // Pass a.name() to the processes that should attach it.
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn unique() -> CreateOptions {
        CreateOptions::with_name(NameChoice::Unique(UNIQUE_PREFIX.to_owned()))
    }

    /// Like [`unique`](Self::unique), with your own prefix: `<prefix>` and 16 random hex
    /// digits (so `ndshm ls` groups a program's segments).
    ///
    /// # Examples
    /// ```
    /// let opts = ndshm::CreateOptions::unique_with_prefix("weather-");
    /// let a = ndshm::SharedNdArray::<f32, ndarray::Ix1>::zeros(opts, 4)?;
    /// assert!(a.name().starts_with("weather-"));
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn unique_with_prefix(prefix: impl Into<String>) -> CreateOptions {
        CreateOptions::with_name(NameChoice::Unique(prefix.into()))
    }

    fn with_name(name: NameChoice) -> CreateOptions {
        CreateOptions {
            name,
            mode: 0o600,
            persistent: false,
            prefault: false,
            fortran_order: false,
            cleanup_on_exit: false,
        }
    }

    /// Permission bits of the new segment (default `0o600`: only its user may open it).
    /// They are set exactly, whatever the umask.
    ///
    /// # Examples
    /// ```
    /// use std::os::unix::fs::PermissionsExt;
    /// let opts = ndshm::CreateOptions::unique().mode(0o640);
    /// let a = ndshm::SharedNdArray::<u8, ndarray::Ix1>::zeros(opts, 4)?;
    /// let meta = std::fs::metadata(std::path::Path::new("/dev/shm").join(a.name())).unwrap();
    /// assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// A persistent segment outlives its creator: `Drop` does not unlink it and `gc` leaves
    /// it; remove it with `unlink` or `ndshm rm`.
    ///
    /// # Examples
    /// ```
    /// # let name = format!("doc-persistent-{}", std::process::id());
    /// let opts = ndshm::CreateOptions::named(&name).persistent(true);
    /// let a = ndshm::SharedNdArray::<u8, ndarray::Ix1>::zeros(opts, 4)?;
    /// assert!(!a.is_owner());
    /// drop(a); // stays
    /// ndshm::unlink(&name)?;
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn persistent(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }

    /// Remove the segment when its creator ends, however it ends — Python's
    /// `SharedMemory(create=True, track=True)`: `CreateOptions::unique().cleanup_on_exit(true)`.
    ///
    /// By default a segment is unlinked when its creator's handle drops (or on a fatal
    /// signal handled by [`SignalCleanup`](crate::SignalCleanup)); a creator killed by
    /// `SIGKILL`, or by `SIGTERM` without a handler, leaves it for [`gc`](crate::gc). With
    /// this option the creating process's cleanup-at-exit watchdog is started (once per
    /// process, at the first such segment; a forked child that creates one starts its
    /// own) and told about this segment; when the creator has ended, the watchdog removes
    /// it unless it was unlinked, made persistent or handed over to another owner
    /// meanwhile. Only the segments created with this option are covered (for every
    /// segment of a process, start a [`CrashCleanup`](crate::CrashCleanup) instead).
    ///
    /// Unlike Python's resource tracker, the watchdog never removes a segment that this
    /// process merely attached to (CPython gh-82300): only its own creations. A persistent
    /// segment ([`persistent`](Self::persistent)) is never tracked.
    ///
    /// # Errors
    /// Creation fails with an OS error (and leaves no segment) when the watchdog cannot be
    /// forked or told.
    ///
    /// # Examples
    /// ```
    /// // Python: shm = SharedMemory(create=True, size=8 * 1000, track=True)
    /// let opts = ndshm::CreateOptions::unique().cleanup_on_exit(true);
    /// let a = ndshm::SharedNdArray::<f64, ndarray::Ix1>::zeros(opts, 1000)?;
    /// // Even `kill -9` of this process now leaves no segment behind.
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn cleanup_on_exit(mut self, cleanup: bool) -> Self {
        self.cleanup_on_exit = cleanup;
        self
    }

    /// Fault in the page tables at creation (`MAP_POPULATE`), so first touches cost nothing.
    ///
    /// # Examples
    /// ```
    /// let opts = ndshm::CreateOptions::unique().prefault(true);
    /// let a = ndshm::SharedNdArray::<f64, ndarray::Ix1>::zeros(opts, 1 << 16)?;
    /// assert_eq!(a.view().sum(), 0.0);
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn prefault(mut self, prefault: bool) -> Self {
        self.prefault = prefault;
        self
    }

    /// Lay arrays out in Fortran (column-major) order instead of C order (arrays only;
    /// other segments ignore it).
    ///
    /// # Examples
    /// ```
    /// let opts = ndshm::CreateOptions::unique().fortran_order(true);
    /// let a = ndshm::SharedNdArray::<u8, ndarray::Ix2>::zeros(opts, (2, 3))?;
    /// assert!(a.is_fortran_order());
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn fortran_order(mut self, fortran: bool) -> Self {
        self.fortran_order = fortran;
        self
    }

    /// The same options for a companion segment named `name` (a segment whose state spans
    /// two segments, such as a named joinable queue's counters).
    pub(crate) fn renamed(&self, name: String) -> CreateOptions {
        CreateOptions {
            name: NameChoice::Given(name),
            ..self.clone()
        }
    }

    /// The name to try next: the given one (validated), or a freshly drawn unique one.
    pub(crate) fn next_name(&self) -> Result<String> {
        match &self.name {
            NameChoice::Given(n) => Ok(validate_name(n)?.to_owned()),
            NameChoice::Unique(prefix) => {
                let n = format!("{prefix}{:016x}", proc::random_u64());
                Ok(validate_name(&n)?.to_owned())
            }
        }
    }

    /// Whether a taken name is drawn again (generated names) rather than an error.
    pub(crate) fn retries_taken_names(&self) -> bool {
        matches!(self.name, NameChoice::Unique(_))
    }

    /// The name for messages, before one is drawn.
    pub(crate) fn describe_name(&self) -> String {
        match &self.name {
            NameChoice::Given(n) => n.clone(),
            NameChoice::Unique(p) => format!("{p}<unique>"),
        }
    }
}

/// Any borrowed name (`&str`, `&String`, `&Box<str>`, a type that is `AsRef<str>`): default
/// options for that name.
impl<S: AsRef<str> + ?Sized> From<&S> for CreateOptions {
    fn from(name: &S) -> CreateOptions {
        CreateOptions::named(name.as_ref())
    }
}

impl From<String> for CreateOptions {
    fn from(name: String) -> CreateOptions {
        CreateOptions::named(name)
    }
}

impl From<&CreateOptions> for CreateOptions {
    fn from(opts: &CreateOptions) -> CreateOptions {
        opts.clone()
    }
}
