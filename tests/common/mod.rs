//! Helpers shared by the integration tests: unique segment names that are removed when the
//! test ends, pass or fail.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

/// A unique segment name (pid + counter + tag); the segment, if any, is unlinked on drop.
pub struct Name(pub String);

impl Name {
    pub fn new(tag: &str) -> Name {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        Name(format!(
            "ndshm-test-{}-{}-{tag}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn path(&self) -> std::path::PathBuf {
        std::path::Path::new("/dev/shm").join(&self.0)
    }
}

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Drop for Name {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.path());
    }
}

/// A scratch directory under the system temp dir, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ndshm-test-{}-{}-{tag}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn join(&self, file: &str) -> std::path::PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Set in a test process that must not opt in to forking with other threads (see
/// [`rerun_in_fresh_process`]).
pub const NO_FORK_OPT_IN: &str = "NDSHM_TEST_NO_FORK_OPT_IN";

/// Runs before `main` in every test binary that declares `mod common`: the harness runs
/// tests on threads of one process, so the forking APIs need the process-wide opt-in.
#[used]
#[link_section = ".init_array"]
static OPT_IN_TO_FORK_WITH_THREADS: extern "C" fn() = opt_in_to_fork_with_threads;

extern "C" fn opt_in_to_fork_with_threads() {
    if std::env::var_os(NO_FORK_OPT_IN).is_none() {
        // SAFETY: the tests' forked closures take no lock that another test thread may
        // hold at the fork: they compute, write shared memory, use ndshm's lock-free or
        // process-shared primitives, and print (if at all) into the harness's per-test
        // capture buffer, which only the forking test's own thread uses.
        unsafe { ndshm::allow_fork_with_threads() }
    }
}

/// Whether this process is a fresh re-run started by [`rerun_in_fresh_process`].
pub fn in_fresh_process() -> bool {
    std::env::var_os(NO_FORK_OPT_IN).is_some()
}

/// Runs test `test` of this test binary again in a fresh process that has not opted in to
/// forking with other threads, in its own process group; returns its output. Fails the
/// calling test, killing the whole group (forked children included), when the re-run takes
/// longer than `limit`: the deadline of tests that could hang.
pub fn rerun_in_fresh_process(test: &str, limit: std::time::Duration) -> std::process::Output {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"]);
    rerun(cmd, test, limit)
}

/// [`rerun_in_fresh_process`] in a private mount namespace whose `/proc` is an empty tmpfs
/// (`unshare -m`, which needs root): the re-run cannot read `/proc/self`.
pub fn rerun_in_fresh_process_without_proc(
    test: &str,
    limit: std::time::Duration,
) -> std::process::Output {
    let mut cmd = std::process::Command::new("unshare");
    cmd.args([
        "-m",
        "sh",
        "-c",
        "mount -t tmpfs none /proc && exec \"$0\" \"$@\"",
    ])
    .arg(std::env::current_exe().unwrap())
    .args([test, "--exact", "--nocapture", "--test-threads=1"]);
    rerun(cmd, test, limit)
}

fn rerun(
    mut cmd: std::process::Command,
    test: &str,
    limit: std::time::Duration,
) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    let child = cmd
        .env(NO_FORK_OPT_IN, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let out = rx.recv_timeout(limit);
    if out.is_err() {
        // SAFETY: kill(2) with a negative pid signals the process group we made.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
    // The re-run's `Name`s (`ndshm-test-<its pid>-…`) are left behind when it is killed.
    let prefix = format!("ndshm-test-{pgid}-");
    let remove_leftovers = || {
        for entry in std::fs::read_dir("/dev/shm").unwrap().flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    };
    match out {
        Ok(out) => {
            remove_leftovers();
            out.unwrap()
        }
        Err(_) => {
            let out = rx.recv().unwrap().unwrap();
            remove_leftovers();
            panic!(
                "{test} in a fresh process still ran after {limit:?} (a hang): stdout {:?}, \
                 stderr {:?}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Joins `p`, failing the test (after killing it) when it runs longer than `limit`.
pub fn join_within(mut p: ndshm::Process, limit: std::time::Duration) -> ndshm::Result<()> {
    let deadline = std::time::Instant::now() + limit;
    while !p.is_finished()? {
        if std::time::Instant::now() > deadline {
            let _ = p.kill();
            panic!("process {} still ran after {limit:?} (a hang)", p.pid());
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    p.join()
}

/// How long a polled step may take before the test fails instead of hanging.
pub const POLL_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// Polls `cond` every millisecond until it holds (true) or [`POLL_DEADLINE`] passes (false).
pub fn within_deadline(mut cond: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while !cond() {
        if start.elapsed() > POLL_DEADLINE {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    true
}

/// The `ndshm` command-line tool, for the library tests that drive it: it is the `ndshm-cli`
/// crate of this workspace, so cargo gives the library's tests no `CARGO_BIN_EXE_ndshm`.
/// Built once per test binary with the test binary's own profile (a no-op after `cargo
/// test` at the workspace root, which builds it).
pub fn ndshm_cli_bin() -> &'static std::path::Path {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        // target/<profile>/deps/<this test> -> target/<profile>/ndshm
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap().parent().unwrap();
        let profile = if dir.file_name().is_some_and(|d| d == "release") {
            "release"
        } else {
            "test"
        };
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "-p", "ndshm-cli", "--bin", "ndshm", "--quiet"])
            .args(["--offline", "--profile", profile])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cannot run cargo to build the ndshm CLI");
        assert!(status.success(), "building the ndshm CLI failed");
        dir.join("ndshm")
    })
}

/// splitmix64: a small deterministic generator, so a child and its parent draw the same
/// operations.
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// An index below `n`.
    pub fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }
}
