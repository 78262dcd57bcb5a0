//! The `ndshm` binary and the `attach` example, run as separate processes.
#![cfg(feature = "cli")]

mod common;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output};

use common::{Name, TempDir};
use ndarray::Ix2;
use ndshm::SharedNdArray;

const BIN: &str = env!("CARGO_BIN_EXE_ndshm");

fn ndshm(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run ndshm")
}

fn ok(args: &[&str]) -> String {
    let out = ndshm(args);
    assert!(
        out.status.success(),
        "ndshm {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let out = ndshm(args);
    assert!(!out.status.success(), "ndshm {args:?} should fail");
    assert!(out.stdout.is_empty());
    String::from_utf8(out.stderr).unwrap()
}

/// `cargo test` builds the examples next to the binaries' directory.
fn example(name: &str) -> PathBuf {
    let bin = PathBuf::from(BIN);
    let path = bin.parent().unwrap().join("examples").join(name);
    assert!(
        path.exists(),
        "{} not built (run `cargo test`)",
        path.display()
    );
    path
}

#[test]
fn create_info_ls_dump_rm() {
    let name = Name::new("cli");
    assert_eq!(
        ok(&["create", &name, "--dtype", "f8", "--shape", "4,3", "--fill", "arange"]).trim(),
        name.as_str()
    );
    let info = ok(&["info", &name]);
    for needle in [
        "kind:       array",
        "dtype:      f8 (f64, numpy <f8, python 'd')",
        "shape:      (4,3)",
        "layout:     C",
        "alive:      no",
        "persistent: yes",
        "mode:       600",
    ] {
        assert!(info.contains(needle), "{needle:?} not in\n{info}");
    }
    let ls = ok(&["ls"]);
    let line = ls
        .lines()
        .find(|l| l.starts_with(name.as_str()))
        .unwrap_or_else(|| panic!("{} not in\n{ls}", name.as_str()));
    assert!(line.contains("array") && line.contains("(4,3)"), "{line}");
    assert_eq!(
        ok(&["dump", &name]).trim(),
        "[[0, 1, 2],\n [3, 4, 5],\n [6, 7, 8],\n [9, 10, 11]]"
    );
    // The library attaches to what the CLI made (a separate process).
    // SAFETY: nothing else writes this test's segment.
    let a = unsafe { SharedNdArray::<f64, Ix2>::open(&name) }.unwrap();
    assert_eq!(a.view().sum(), 66.0);
    drop(a);
    ok(&["rm", &name]);
    assert!(!name.path().exists());
    let err = fails(&["rm", &name]);
    assert!(err.starts_with("ndshm: error: segment not found"), "{err}");
}

#[test]
fn big_arrays_dump_abbreviated() {
    let name = Name::new("cli-big");
    ok(&[
        "create", &name, "--dtype", "i4", "--shape", "100000", "--fill", "arange",
    ]);
    let dump = ok(&["dump", &name]);
    assert!(dump.contains("..."), "{dump}");
    assert!(
        dump.len() < 2000,
        "dump of 1e5 elements is {} bytes",
        dump.len()
    );
    assert!(dump.contains("99999"));
}

#[test]
fn save_and_load_through_files() {
    let dir = TempDir::new("cli-npy");
    let (a, b) = (Name::new("cli-save"), Name::new("cli-load"));
    ok(&[
        "create",
        &a,
        "--dtype",
        "u2",
        "--shape",
        "2,3",
        "--fill",
        "arange",
        "--fortran",
    ]);
    let file = dir.join("a.npy");
    ok(&["save", &a, file.to_str().unwrap()]);
    assert_eq!(ok(&["load", &b, file.to_str().unwrap()]).trim(), b.as_str());
    let info = ok(&["info", &b]);
    assert!(
        info.contains("layout:     F") && info.contains("persistent: yes"),
        "{info}"
    );
    assert_eq!(ok(&["dump", &b]), ok(&["dump", &a]));
}

#[test]
fn bad_input_is_a_clear_error_with_non_zero_exit() {
    let name = Name::new("cli-bad");
    let err = fails(&["create", "a/b", "--shape", "3"]);
    assert!(
        err.contains("invalid segment name") && err.contains("'/'"),
        "{err}"
    );
    let err = fails(&["create", &name, "--dtype", "q9", "--shape", "3"]);
    assert!(err.contains("unsupported") && err.contains("f8"), "{err}");
    let err = fails(&["create", &name, "--shape", "3,x"]);
    assert!(err.contains("\"x\""), "{err}");
    let err = fails(&["create", &name, "--shape", "1000000000000,1000000000000"]);
    assert!(
        err.contains("no space") || err.contains("overflow"),
        "{err}"
    );
    let err = fails(&["info", &name]);
    assert!(err.contains("not found"), "{err}");
    let err = fails(&["load", &name, "/nonexistent/file.npy"]);
    assert!(err.contains("/nonexistent/file.npy"), "{err}");
    ok(&["create", &name, "--shape", "3"]);
    let err = fails(&["create", &name, "--shape", "3"]);
    assert!(err.contains("already exists"), "{err}");
    // Usage errors come from the argument parser, also non-zero.
    assert!(!ndshm(&["create"]).status.success());
    assert!(!ndshm(&["frobnicate"]).status.success());
}

#[test]
fn permission_denied_for_another_user() {
    let name = Name::new("cli-perm");
    ok(&["create", &name, "--shape", "3"]);
    let out = Command::new(BIN)
        .args(["dump", &name])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("permission denied") && err.contains("mode 600"),
        "{err}"
    );
}

#[test]
fn dump_and_save_need_only_read_permission() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("cli-ro");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o777)).unwrap();
    let name = Name::new("cli-ro");
    let src = ndarray::array![[1u16, 2, 3], [4, 5, 6]];
    let _a =
        SharedNdArray::from_array(ndshm::CreateOptions::named(&name).mode(0o644), &src).unwrap();
    // Another user may read the segment but not write it: `dump` and `save` only read,
    // so they map it read-only and work.
    let as_nobody = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ndshm {args:?} as nobody failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(
        as_nobody(&["dump", &name]).trim(),
        "[[1, 2, 3],\n [4, 5, 6]]"
    );
    let file = dir.join("ro.npy");
    as_nobody(&["save", &name, file.to_str().unwrap()]);
    let back = Name::new("cli-ro-back");
    let b = SharedNdArray::<u16, Ix2>::load(&back, &file).unwrap();
    assert_eq!(b.view(), src);
}

#[test]
fn attach_example_in_two_processes() {
    let name = Name::new("attach-ex");
    let bin = example("attach");
    let run = |flag: &str| {
        let out = Command::new(&bin).args([flag, &name]).output().unwrap();
        assert!(
            out.status.success(),
            "attach {flag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(run("--create").contains("created"));
    let out = run("--open");
    assert!(
        out.contains("temperature 19.50, humidity 49.50, pressure 1024.50"),
        "{out}"
    );
    run("--rm");
    assert!(!name.path().exists());
    let out = Command::new(&bin).args(["--open", &name]).output().unwrap();
    assert!(!out.status.success());
}

#[test]
fn ls_marks_stale_segments_and_gc_removes_them() {
    let (stale, live) = (Name::new("cli-gc-stale"), Name::new("cli-gc-live"));
    let _live = SharedNdArray::<u8, ndarray::Ix1>::zeros(&live, 4).unwrap();
    let child_name = stale.to_string();
    // The child creates an owned segment and exits without running its destructors: the
    // segment's owner is dead, as after a SIGKILL.
    ndshm::Process::spawn(move || -> ndshm::Result<()> {
        let a = SharedNdArray::<f32, ndarray::Ix1>::zeros(&child_name, 16)?;
        std::mem::forget(a);
        Ok(())
    })
    .unwrap()
    .join()
    .unwrap();
    assert!(stale.path().exists());
    let ls = ok(&["ls"]);
    let line = ls.lines().find(|l| l.starts_with(stale.as_str())).unwrap();
    assert!(line.trim_end().ends_with("yes"), "STALE column: {line}");
    let line = ls.lines().find(|l| l.starts_with(live.as_str())).unwrap();
    assert!(line.trim_end().ends_with("no"), "STALE column: {line}");

    let prefix = format!("ndshm-test-{}-", std::process::id());
    let dry = ok(&["gc", "--dry-run", "--prefix", &prefix]);
    assert!(
        dry.contains(&format!("would remove {}", stale.as_str())),
        "{dry}"
    );
    assert!(!dry.contains(live.as_str()), "{dry}");
    assert!(stale.path().exists(), "a dry run removes nothing");
    let out = ok(&["gc", "--prefix", &prefix]);
    assert!(
        out.contains(&format!("removed {}", stale.as_str())),
        "{out}"
    );
    assert!(!stale.path().exists());
    assert!(
        live.path().exists(),
        "gc never touches a live owner's segment"
    );
}
