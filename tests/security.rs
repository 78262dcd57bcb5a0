//! Security: modes, names that cannot escape /dev/shm, other users' segments, and hostile
//! entries (links, FIFOs, directories) planted in /dev/shm.

// Opts this test binary in to forking on the harness's threads (see tests/common).
mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::mpsc;
use std::time::Duration;

use ndarray::Ix1;
use ndshm::{CreateOptions, ErrorKind, Process, SharedNdArray};
use proptest::prelude::*;

fn name(tag: &str) -> String {
    format!("sec-{}-{tag}", std::process::id())
}

fn path(name: &str) -> String {
    format!("/dev/shm/{name}")
}

struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for n in &self.0 {
            let p = path(n);
            let _ = std::fs::remove_file(&p);
            let _ = std::fs::remove_dir(&p);
        }
    }
}

#[test]
fn segments_are_0600_by_default_and_modes_are_exact() {
    let (a, b) = (name("mode-default"), name("mode-640"));
    let _c = Cleanup(vec![a.clone(), b.clone()]);
    let (a2, b2) = (a.clone(), b.clone());
    // In a child: the umask is process-wide, and other tests run beside this one.
    Process::spawn(move || -> Result<(), String> {
        for umask in [0o000, 0o077] {
            // SAFETY: umask has no memory-safety preconditions.
            unsafe { libc::umask(umask) };
            let x = SharedNdArray::<u8, Ix1>::zeros(&a2, 8).map_err(|e| e.to_string())?;
            let mode = std::fs::metadata(path(&a2)).unwrap().mode() & 0o7777;
            if mode != 0o600 {
                return Err(format!("default mode {mode:o} under umask {umask:o}"));
            }
            drop(x);
            let y = SharedNdArray::<u8, Ix1>::zeros(CreateOptions::named(&b2).mode(0o640), 8)
                .map_err(|e| e.to_string())?;
            let mode = std::fs::metadata(path(&b2)).unwrap().mode() & 0o7777;
            if mode != 0o640 {
                return Err(format!("asked 640, got {mode:o} under umask {umask:o}"));
            }
            drop(y);
        }
        Ok(())
    })
    .unwrap()
    .join()
    .unwrap();
}

const HOSTILE: &[&str] = &[
    "",
    "/",
    "//",
    ".",
    "..",
    "/..",
    "../etc/passwd",
    "a/b",
    "a/../../b",
    "/a/",
    "a\0b",
    "\0",
    "x/",
    ".ndshm-tmp-1-2-3",
];

fn all_calls_refuse(n: &str) {
    let _guard = Cleanup(vec![n.replace(['/', '\0'], "_")]);
    let kinds = [
        SharedNdArray::<u8, Ix1>::zeros(n, 4)
            .map(drop)
            .unwrap_err()
            .kind(),
        // SAFETY: these calls fail on the name before anything is mapped.
        unsafe { SharedNdArray::<u8, Ix1>::open(n) }
            .map(drop)
            .unwrap_err()
            .kind(),
        // SAFETY: as above.
        unsafe { ndshm::open_dyn(n) }.map(drop).unwrap_err().kind(),
        ndshm::info(n).unwrap_err().kind(),
        ndshm::unlink(n).unwrap_err().kind(),
        ndshm::validate_name(n).unwrap_err().kind(),
    ];
    for k in kinds {
        assert_eq!(k, ErrorKind::InvalidName, "name {n:?}");
    }
}

#[test]
fn names_never_escape_dev_shm() {
    for n in HOSTILE {
        all_calls_refuse(n);
    }
    let long = "a".repeat(ndshm::MAX_NAME_LEN + 1);
    all_calls_refuse(&long);
    let err = ndshm::validate_name(&long).unwrap_err();
    assert!(err.to_string().contains("255"), "{err}");
    // The longest name is fine, and so are odd but harmless ones.
    let me = std::process::id();
    let mut longest = format!("sec-{me}-");
    while longest.len() < ndshm::MAX_NAME_LEN {
        longest.push('z');
    }
    let odd = [
        longest,
        format!("...sec-{me}"),
        format!("..%2fsec-{me}"),
        format!(".sec-{me}-hidden"),
        format!("sec {me} spaced"),
        format!("sec-{me}-ünï"),
    ];
    for n in &odd {
        let a = SharedNdArray::<u8, Ix1>::zeros(n, 4).unwrap_or_else(|e| panic!("{n:?}: {e}"));
        let meta = std::fs::metadata(path(n)).unwrap();
        assert!(meta.is_file() && meta.len() > 0);
        drop(a);
        assert!(std::fs::metadata(path(n)).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Any accepted name is one plain entry of /dev/shm.
    #[test]
    fn accepted_names_are_single_entries(n in "(/)?[./a-z\\x00-\\x1f\u{80}-\u{10ffff}-]{0,12}") {
        if let Ok(stripped) = ndshm::validate_name(&n) {
            prop_assert!(!stripped.is_empty() && stripped.len() <= ndshm::MAX_NAME_LEN);
            prop_assert!(!stripped.contains('/') && !stripped.contains('\0'));
            prop_assert!(stripped != "." && stripped != "..");
            let p = std::path::Path::new("/dev/shm").join(stripped);
            prop_assert_eq!(p.parent(), Some(std::path::Path::new("/dev/shm")));
            prop_assert_eq!(p.file_name().map(|f| f.len()), Some(stripped.len()));
        }
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs `f` in a child that has dropped root for uid/gid 65534 (nobody).
fn as_nobody(f: impl FnOnce() -> Result<(), String> + 'static) {
    Process::spawn(move || -> Result<(), String> {
        nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
        nix::unistd::setgid(nix::unistd::Gid::from_raw(65534))
            .map_err(|e| format!("setgid: {e}"))?;
        nix::unistd::setuid(nix::unistd::Uid::from_raw(65534))
            .map_err(|e| format!("setuid: {e}"))?;
        if nix::unistd::geteuid().is_root() {
            return Err("still root".into());
        }
        f()
    })
    .unwrap()
    .join()
    .unwrap();
}

fn expect_kind<T>(what: &str, r: ndshm::Result<T>, kind: ErrorKind) -> Result<(), String> {
    match r {
        Ok(_) => Err(format!("{what}: succeeded, expected {kind:?}")),
        Err(e) if e.kind() == kind => Ok(()),
        Err(e) => Err(format!("{what}: {e} ({:?}), expected {kind:?}", e.kind())),
    }
}

#[test]
fn another_users_segment_is_permission_denied() {
    if !is_root() {
        eprintln!("skipped: needs root to drop to uid 65534");
        return;
    }
    let (private, shared, stale) = (name("private"), name("shared"), name("stale"));
    let _c = Cleanup(vec![private.clone(), shared.clone(), stale.clone()]);
    let a = SharedNdArray::<f64, Ix1>::from_elem(&private, 16, 2.5).unwrap();
    let b =
        SharedNdArray::<f64, Ix1>::from_elem(CreateOptions::named(&shared).mode(0o644), 16, 2.5)
            .unwrap();
    // A stale root segment (its owner died) that nobody can read, and so judge stale, but
    // may not remove (/dev/shm is sticky).
    let s2 = stale.clone();
    Process::spawn(move || {
        std::mem::forget(
            SharedNdArray::<u8, Ix1>::zeros(CreateOptions::named(&s2).mode(0o644), 8).unwrap(),
        );
    })
    .unwrap()
    .join()
    .unwrap();
    let (p, s, st) = (private.clone(), shared.clone(), stale.clone());
    as_nobody(move || {
        // SAFETY (all opens below): these fail before mapping, or map a segment that no
        // process writes during this test.
        expect_kind(
            "open 0600",
            unsafe { SharedNdArray::<f64, Ix1>::open(&p) },
            ErrorKind::PermissionDenied,
        )?;
        expect_kind(
            "open_read_only 0600",
            unsafe { SharedNdArray::<f64, Ix1>::open_read_only(&p) },
            ErrorKind::PermissionDenied,
        )?;
        expect_kind(
            "open_dyn 0600",
            unsafe { ndshm::open_dyn(&p) },
            ErrorKind::PermissionDenied,
        )?;
        expect_kind("info 0600", ndshm::info(&p), ErrorKind::PermissionDenied)?;
        expect_kind("unlink", ndshm::unlink(&p), ErrorKind::PermissionDenied)?;
        expect_kind(
            "create over it",
            SharedNdArray::<f64, Ix1>::zeros(&p, 4),
            ErrorKind::AlreadyExists,
        )?;
        let err = unsafe { SharedNdArray::<f64, Ix1>::open(&p) }.unwrap_err();
        if !err.to_string().contains("uid 0") {
            return Err(format!("message does not say who owns it: {err}"));
        }
        // 0644: others may read, not write.
        expect_kind(
            "open rw 0644",
            unsafe { SharedNdArray::<f64, Ix1>::open(&s) },
            ErrorKind::PermissionDenied,
        )?;
        let r =
            unsafe { SharedNdArray::<f64, Ix1>::open_read_only(&s) }.map_err(|e| e.to_string())?;
        if r.view().sum() != 40.0 {
            return Err("wrong data through the read-only mapping".into());
        }
        // gc as nobody: it sees root's stale segment, but it is not nobody's to remove;
        // no error either.
        if !ndshm::stale()
            .map_err(|e| e.to_string())?
            .iter()
            .any(|x| x.name == st)
        {
            return Err("nobody does not see root's readable stale segment".into());
        }
        let removed = ndshm::gc_matching(|x| x.name == st).map_err(|e| e.to_string())?;
        if !removed.is_empty() {
            return Err(format!("nobody removed root's segment: {removed:?}"));
        }
        Ok(())
    });
    assert!(std::fs::metadata(path(&stale)).is_ok());
    assert_eq!(ndshm::gc_matching(|x| x.name == stale).unwrap().len(), 1);
    drop((a, b));
}

/// Runs `f` on a thread and fails if it takes more than 20 s (a hang).
fn within_time<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{what} hung"))
}

#[test]
fn links_fifos_and_directories_in_dev_shm_are_refused_without_hanging() {
    let (target, link, fifo, dir) = (name("target"), name("link"), name("fifo"), name("dir"));
    let _c = Cleanup(vec![
        target.clone(),
        link.clone(),
        fifo.clone(),
        dir.clone(),
    ]);
    let mut t = SharedNdArray::<u8, Ix1>::zeros(&target, 8).unwrap();
    t.persist();
    drop(t);
    std::os::unix::fs::symlink(path(&target), path(&link)).unwrap();
    nix::unistd::mkfifo(
        path(&fifo).as_str(),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    std::fs::create_dir(path(&dir)).unwrap();
    std::fs::set_permissions(path(&dir), std::fs::Permissions::from_mode(0o700)).unwrap();
    for n in [link.clone(), fifo.clone(), dir.clone()] {
        let n2 = n.clone();
        let kinds = within_time(&format!("opening {n}"), move || {
            vec![
                // SAFETY: none of these is a segment: they fail before mapping.
                unsafe { SharedNdArray::<u8, Ix1>::open(&n2) }
                    .map(drop)
                    .err()
                    .map(|e| e.kind()),
                // SAFETY: as above.
                unsafe { SharedNdArray::<u8, Ix1>::open_read_only(&n2) }
                    .map(drop)
                    .err()
                    .map(|e| e.kind()),
                // SAFETY: as above.
                unsafe { ndshm::open_dyn(&n2) }
                    .map(drop)
                    .err()
                    .map(|e| e.kind()),
                ndshm::info(&n2).map(drop).err().map(|e| e.kind()),
            ]
        });
        for k in kinds {
            let k = k.unwrap_or_else(|| panic!("{n} opened as a segment"));
            assert!(
                matches!(k, ErrorKind::InvalidHeader | ErrorKind::Io),
                "{n}: {k:?}"
            );
        }
    }
    let listed = within_time("ls", ndshm::list).unwrap();
    assert!(listed.iter().any(|s| s.name == target));
    assert!(!listed
        .iter()
        .any(|s| s.name == link || s.name == fifo || s.name == dir));
    within_time("gc", || ndshm::gc_matching(|_| false)).unwrap();
    ndshm::unlink(&target).unwrap();
}
