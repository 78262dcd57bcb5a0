//! The `ndshm` binary, run as a separate process.

// The library's test helpers (unique segment names removed on drop, scratch directories).
#[path = "../../tests/common/mod.rs"]
mod common;

use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};

use common::{Name, TempDir};
use ndshm::ndarray::{self, Ix2};
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
    assert!(!name.path().exists());
    let err = fails(&["create", &name, "--shape", "1000000000000,1000000000000"]);
    assert!(
        err.contains("no space") || err.contains("overflow"),
        "{err}"
    );
    let err = fails(&["info", &name]);
    assert!(err.contains("not found"), "{err}");
    let err = fails(&["load", &name, "/nonexistent/file.npy"]);
    assert!(
        err.contains("file not found: /nonexistent/file.npy"),
        "{err}"
    );
    ok(&["create", &name, "--shape", "3"]);
    let err = fails(&["create", &name, "--shape", "3"]);
    assert!(err.contains("already exists"), "{err}");
    // Usage errors come from the argument parser: exit status 2.
    assert_eq!(ndshm(&["create"]).status.code(), Some(2));
    assert_eq!(ndshm(&["frobnicate"]).status.code(), Some(2));
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

/// Runs `ndshm args` with its stdout going to `stdout`; returns (exit code, stderr).
fn with_stdout(args: &[&str], stdout: Stdio) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(args)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .expect("run ndshm");
    (out.status.code(), String::from_utf8(out.stderr).unwrap())
}

/// A stdout whose reader is gone before ndshm starts: every write fails with EPIPE, as
/// when `head` has exited (a socket pair, so that it does not depend on timing).
fn closed_pipe() -> Stdio {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    drop(ours);
    Stdio::from(std::os::fd::OwnedFd::from(theirs))
}

fn dev_full() -> Stdio {
    Stdio::from(
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap(),
    )
}

#[test]
fn shape_is_parsed_strictly_naming_the_bad_token() {
    let name = Name::new("cli-shape");
    for (shape, says) in [
        ("3,,4", "axis 2 of \"3,,4\" is empty"),
        (",", "axis 1 of \",\" is empty"),
        (",,,", "axis 1 of \",,,\" is empty"),
        ("3,", "axis 2 of \"3,\" is empty"),
        ("+3", "\"+3\" (axis 1 of \"+3\"): a length takes no sign"),
        (
            "-1",
            "\"-1\" (axis 1 of \"-1\"): a length cannot be negative",
        ),
        ("3x4", "\"3x4\" (axis 1 of \"3x4\"): it is not a length"),
        ("", "the shape is empty"),
    ] {
        let out = ndshm(&["create", &name, "--shape", shape]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--shape {shape:?}: {err}");
        assert!(err.contains(says), "--shape {shape:?}: {err}");
        assert!(!name.path().exists(), "--shape {shape:?} made a segment");
    }
    // `--shape=-1` reads the same as `--shape -1`.
    let err = fails(&["create", &name, "--shape=-1"]);
    assert!(err.contains("cannot be negative"), "{err}");
    // The plain form, and `()` for a 0-d array.
    ok(&["create", &name, "--shape", "3,4"]);
    assert!(ok(&["info", &name]).contains("shape:      (3,4)"));
    ok(&["rm", &name]);
    ok(&["create", &name, "--shape", "()", "--fill", "arange"]);
    assert!(ok(&["info", &name]).contains("shape:      ()"));
    assert_eq!(ok(&["dump", &name]).trim(), "0");
}

#[test]
fn ls_into_a_closed_pipe_ends_quietly() {
    let _one = Name::new("cli-epipe-ls");
    ok(&["create", &_one, "--shape", "2"]);
    let (code, err) = with_stdout(&["ls"], closed_pipe());
    assert_eq!(code, Some(0), "{err}");
    assert!(err.is_empty(), "ls | head said: {err}");
}

#[test]
fn dump_into_a_closed_pipe_ends_quietly() {
    let name = Name::new("cli-epipe-dump");
    ok(&["create", &name, "--shape", "100000", "--fill", "arange"]);
    let (code, err) = with_stdout(&["dump", &name], closed_pipe());
    assert_eq!(code, Some(0), "{err}");
    assert!(err.is_empty(), "dump | head said: {err}");
    for args in [&["info", &name, "--json"][..], &["--help"], &["--version"]] {
        let (code, err) = with_stdout(args, closed_pipe());
        assert_eq!((code, err.as_str()), (Some(0), ""), "ndshm {args:?}");
    }
}

#[test]
fn dump_to_a_full_disk_is_an_error_message() {
    let name = Name::new("cli-full");
    ok(&["create", &name, "--shape", "1000", "--fill", "arange"]);
    for args in [
        &["dump", &name][..],
        &["ls"],
        &["info", &name, "--json"],
        &["--help"],
    ] {
        let (code, err) = with_stdout(args, dev_full());
        assert_eq!(code, Some(1), "ndshm {args:?} > /dev/full: {err}");
        assert!(
            err.starts_with("ndshm: error: cannot write the output: no space left on device"),
            "ndshm {args:?} > /dev/full: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn json_output_of_ls_info_and_gc_dry_run() {
    let name = Name::new("cli-json");
    ok(&[
        "create",
        &name,
        "--dtype",
        "i4",
        "--shape",
        "4,3",
        "--fortran",
    ]);
    let info: serde_json::Value = serde_json::from_str(&ok(&["info", &name, "--json"])).unwrap();
    assert_eq!(info["name"], name.as_str());
    assert_eq!(info["kind"], "array");
    assert_eq!(info["dtype"], "i4");
    assert_eq!(info["descr"], "<i4");
    assert_eq!(info["shape"], serde_json::json!([4, 3]));
    assert_eq!(info["layout"], "F");
    assert_eq!(info["bytes"], name.path().metadata().unwrap().len());
    assert_eq!(info["owner_status"], "dead");
    assert_eq!(info["persistent"], true);
    assert_eq!(info["stale"], false);
    assert_eq!(info["mode"], "600");
    assert_eq!(info["segment_id"].as_str().unwrap().len(), 16);

    let ls: serde_json::Value = serde_json::from_str(&ok(&["ls", "--json"])).unwrap();
    let mine: Vec<&serde_json::Value> = ls
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == name.as_str())
        .collect();
    assert_eq!(mine, [&info], "ls --json and info --json describe it alike");

    // A stale segment of this test, in gc --dry-run --json.
    let stale = Name::new("cli-json-stale");
    let child_name = stale.to_string();
    ndshm::Process::spawn(move || -> ndshm::Result<()> {
        std::mem::forget(SharedNdArray::<u8, ndarray::Ix1>::zeros(&child_name, 8)?);
        Ok(())
    })
    .unwrap()
    .join()
    .unwrap();
    let gc: serde_json::Value =
        serde_json::from_str(&ok(&["gc", "--dry-run", "--json", "--prefix", &stale])).unwrap();
    assert_eq!(gc["dry_run"], true);
    let names: Vec<&str> = gc["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [stale.as_str()]);
    assert_eq!(gc["segments"][0]["stale"], true);
    assert!(gc["left"].as_array().unwrap().is_empty());
    assert!(stale.path().exists(), "a dry run removes nothing");
}

#[test]
fn ls_sizes_its_name_column_to_the_longest_name_and_prints_a_total() {
    let long = Name::new(&"long-name-".repeat(8));
    let short = Name::new("s");
    ok(&["create", &long, "--dtype", "u1", "--shape", "3000"]);
    ok(&["create", &short, "--dtype", "f8", "--shape", "1000,3"]);
    let ls = ok(&["ls"]);
    let lines: Vec<&str> = ls.lines().collect();
    let header = lines[0];
    assert!(header.starts_with("NAME "), "{header}");
    let kind_at = header.find("KIND").unwrap();
    assert!(kind_at > long.len(), "{header}");
    for name in [&long, &short] {
        let line = lines.iter().find(|l| l.starts_with(name.as_str())).unwrap();
        assert_eq!(&line[kind_at..kind_at + 5], "array", "{header}\n{line}");
    }
    // Sizes in human form, right-aligned under SIZE; --bytes gives raw bytes.
    let size_end = header.find("SIZE").unwrap() + 4;
    let line = lines
        .iter()
        .find(|l| l.starts_with(short.as_str()))
        .unwrap();
    let bytes = short.path().metadata().unwrap().len();
    let human = format!(" {:.1} KiB", bytes as f64 / 1024.0);
    assert!(line[..size_end].ends_with(&human), "{header}\n{line}");
    let total = lines.last().unwrap();
    assert!(
        total.starts_with("total: ") && total.contains(" segments, "),
        "{total}"
    );
    let raw = ok(&["ls", "--bytes"]);
    let header = raw.lines().next().unwrap();
    let size_end = header.find("BYTES").unwrap() + 5;
    let line = raw.lines().find(|l| l.starts_with(short.as_str())).unwrap();
    assert!(
        line[..size_end].ends_with(&format!(" {bytes}")),
        "{header}\n{line}"
    );
    let total = raw.lines().last().unwrap();
    assert!(
        total.starts_with("total: ") && total.contains(" bytes"),
        "{total}"
    );
}

#[test]
fn load_and_save_name_the_missing_file() {
    let dir = TempDir::new("cli-files");
    let name = Name::new("cli-files");
    let missing = dir.join("missing.npy");
    let err = fails(&["load", &name, missing.to_str().unwrap()]);
    assert_eq!(
        err.trim(),
        format!("ndshm: error: file not found: {}", missing.display())
    );
    assert!(!name.path().exists());
    ok(&["create", &name, "--shape", "3"]);
    let nowhere = dir.join("no/such/dir/a.npy");
    let err = fails(&["save", &name, nowhere.to_str().unwrap()]);
    assert!(
        err.contains("directory not found") && err.contains("no/such/dir"),
        "{err}"
    );
    assert!(!err.contains("segment not found"), "{err}");
}

#[test]
fn load_of_a_file_that_is_not_npy_does_not_suggest_a_rust_api() {
    let dir = TempDir::new("cli-notnpy");
    let name = Name::new("cli-notnpy");
    let file = dir.join("data.bin");
    std::fs::write(&file, [0u8; 80]).unwrap();
    let err = fails(&["load", &name, file.to_str().unwrap()]);
    assert!(err.contains("is not a .npy file"), "{err}");
    assert!(!err.contains("open_raw"), "{err}");
    assert!(!name.path().exists());
    // Nor does dump of a headerless segment (as Python's SharedMemory makes).
    std::fs::write(name.path(), [0u8; 80]).unwrap();
    let err = fails(&["dump", &name]);
    assert!(
        err.contains("neither an ndshm segment nor a .npy file"),
        "{err}"
    );
    assert!(!err.contains("open_raw"), "{err}");
}

#[test]
fn rm_removes_every_name_it_can_and_reports_the_rest() {
    let (a, b, nosuch, c) = (
        Name::new("cli-rm-a"),
        Name::new("cli-rm-b"),
        Name::new("cli-rm-nosuch"),
        Name::new("cli-rm-c"),
    );
    for name in [&a, &b, &c] {
        ok(&["create", name, "--shape", "2"]);
    }
    let out = ndshm(&["rm", &a, &b, &nosuch, &c]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("ndshm: error: segment not found") && err.contains(nosuch.as_str()),
        "{err}"
    );
    for name in [&a, &b, &c] {
        assert!(!name.path().exists(), "{} left", name.as_str());
    }
}

#[test]
fn rm_refuses_a_live_owners_segment_without_force() {
    let name = Name::new("cli-rm-live");
    // Owned by this test process, which is alive.
    let a = SharedNdArray::<u8, ndarray::Ix1>::zeros(&name, 4).unwrap();
    let err = fails(&["rm", &name]);
    assert!(
        err.contains("left alone")
            && err.contains("ndshm array in use")
            && err.contains(&format!("pid {}", std::process::id()))
            && err.contains("--force"),
        "{err}"
    );
    assert!(name.path().exists());
    ok(&["rm", "--force", &name]);
    assert!(!name.path().exists());
    drop(a);
}

#[test]
fn rm_refuses_a_file_that_is_not_an_ndshm_segment_without_force() {
    let name = Name::new("cli-rm-foreign");
    std::fs::write(name.path(), b"somebody else's shared memory").unwrap();
    let err = fails(&["rm", &name]);
    assert!(
        err.contains("left alone: it is not an ndshm segment")
            && err.contains("neither an ndshm segment nor a .npy file")
            && err.contains("--force"),
        "{err}"
    );
    assert!(name.path().exists());
    ok(&["rm", "-f", &name]);
    assert!(!name.path().exists());
}

/// A segment whose trailer is ndshm 0.1's format 1: `info` says so and leaves it alone
/// (moved from the library's tests/lock_liveness.rs when the CLI became its own crate).
#[test]
fn a_format_1_segment_is_described_not_locked() {
    let name = Name::new("cli-format1");
    let mut bytes = vec![0u8; 64 + 128];
    let old = &mut bytes[64..];
    old[0..8].copy_from_slice(b"NDSHM\0TR");
    old[8..12].copy_from_slice(&1u32.to_le_bytes());
    old[12..16].copy_from_slice(&3u32.to_le_bytes()); // kind: lock
    std::fs::write(name.path(), &bytes).unwrap();
    let err = fails(&["info", &name]);
    assert!(err.contains("version 1"), "ndshm info said: {err}");
    assert_eq!(std::fs::read(name.path()).unwrap(), bytes);
}

#[test]
fn help_documents_exit_status_and_json_fields() {
    let help = ok(&["--help"]);
    for needle in [
        "Exit status:",
        "0  success",
        "1  an error",
        "2  a usage error",
    ] {
        assert!(help.contains(needle), "{needle:?} not in\n{help}");
    }
    for cmd in ["ls", "info"] {
        let help = ok(&[cmd, "--help"]);
        assert!(
            help.contains("--json") && help.contains("owner_status") && help.contains("segment_id"),
            "{cmd} --help:\n{help}"
        );
    }
    let help = ok(&["gc", "--help"]);
    assert!(help.contains("dry_run") && help.contains("left"), "{help}");
    assert!(ok(&["create", "--help"]).contains("N[,N...]"));
}
