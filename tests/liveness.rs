//! Liveness that pid namespaces or a missing `/proc` cannot fool (issue 9, section 3): a
//! queue slot or a segment is taken over only from a provably dead owner.
//!
//! The contenders run in another pid namespace (`unshare --pid --fork --mount-proc`) or with
//! `/proc` hidden under a tmpfs (`unshare -m` + `mount -t tmpfs none /proc`), sharing
//! `/dev/shm` with this process. A queue contender is this very test binary, re-executed
//! with [`ROLE`] set to select its part; gc and ls run as the `ndshm` CLI.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Name, TempDir};
use ndarray::Ix1;
use ndshm::{ByteQueue, CrashCleanup, ErrorKind, Process, SharedNdArray, SharedValue};

/// Selects the contender's part when this binary is re-executed by a test.
const ROLE: &str = "NDSHM_LIVENESS_ROLE";
/// The queue the contender opens.
const QUEUE: &str = "NDSHM_LIVENESS_QUEUE";
/// The other segment the watchdog contender is given.
const OTHER: &str = "NDSHM_LIVENESS_OTHER";
/// How long any one child process may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(60);
const ITEM: usize = 1000;

/// Where the contender runs.
#[derive(Clone, Copy)]
enum Place {
    /// Its own pid namespace, with its own /proc: this process's pids are not there.
    OtherPidNamespace,
    /// This pid namespace, but with an empty tmpfs over /proc.
    NoProc,
}

/// `program args…` wrapped so that it runs at `place`.
fn command_at(place: Place, program: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("unshare");
    match place {
        Place::OtherPidNamespace => {
            cmd.args(["--pid", "--fork", "--kill-child", "--mount-proc"])
                .arg(program);
        }
        Place::NoProc => {
            cmd.args([
                "-m",
                "sh",
                "-c",
                r#"mount -t tmpfs none /proc && exec "$0" "$@""#,
            ])
            .arg(program);
        }
    }
    cmd.args(args);
    cmd
}

/// Runs `cmd` to completion within [`DEADLINE`]; returns (success, stdout + stderr).
fn run(mut cmd: Command, what: &str) -> (bool, String) {
    let dir = TempDir::new("liveness-out");
    let out = dir.join("out");
    let file = std::fs::File::create(&out).unwrap();
    cmd.stdout(file.try_clone().unwrap()).stderr(file);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not finish within {DEADLINE:?}:\n{}",
                std::fs::read_to_string(&out).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    (status.success(), std::fs::read_to_string(&out).unwrap())
}

/// Re-executes this test binary as the contender of test `test`, playing `role` on queue
/// `queue`, at `place`; panics with its output unless it passed.
fn contender(place: Place, test: &str, role: &str, queue: &str) {
    contender_with(place, test, role, &[(QUEUE, queue)]);
}

/// [`contender`] with any environment.
fn contender_with(place: Place, test: &str, role: &str, env: &[(&str, &str)]) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = command_at(
        place,
        &exe,
        &["--exact", test, "--nocapture", "--test-threads=1"],
    );
    cmd.env(ROLE, role).envs(env.iter().copied());
    let (ok, out) = run(cmd, &format!("contender '{role}'"));
    assert!(
        ok && out.contains("1 passed"),
        "contender '{role}' failed:\n{out}"
    );
}

/// The contender's part in the watchdog scenario, in a fresh pid namespace: a child starts
/// a `CrashCleanup`, makes segment `own`, writes its pid (as this namespace numbers it)
/// into the trailer of `other`, a live process's segment (as if that process had the same
/// pid in its own namespace), and ends without unlinking `own`. Its watchdog must remove
/// `own` and leave `other`.
fn play_watched(own: &str, other: &str) {
    assert_eq!(
        std::process::id(),
        1,
        "not the first process of a new pid namespace"
    );
    let (n, o) = (own.to_string(), other.to_string());
    let child = Process::spawn(move || {
        let watchdog = CrashCleanup::spawn().unwrap();
        std::mem::forget(SharedNdArray::<u8, Ix1>::zeros(&n, 8).unwrap());
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(Path::new("/dev/shm").join(&o))
            .unwrap();
        let len = f.metadata().unwrap().len();
        let pid = std::process::id() as i32;
        std::os::unix::fs::FileExt::write_all_at(&f, &pid.to_le_bytes(), len - 192 + 48).unwrap();
        std::mem::forget(watchdog); // ends without unlinking, the watchdog still running
    })
    .unwrap();
    child.join().unwrap();
    let start = Instant::now();
    while Path::new("/dev/shm").join(own).exists() {
        assert!(
            start.elapsed() < DEADLINE,
            "the watchdog never removed {own}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The contender's part, in its own process: a live producer's slot must not be taken
/// (`wait`); a dead one's must be recovered and the item behind it delivered (`recover`).
fn play_contender(role: &str) {
    if role == "watched" {
        return play_watched(
            &std::env::var(QUEUE).unwrap(),
            &std::env::var(OTHER).unwrap(),
        );
    }
    let q = ByteQueue::open(&std::env::var(QUEUE).unwrap()).unwrap();
    match role {
        "wait" => {
            // The producer holds the slot at the head: nothing can be taken, however long
            // we try (well past the 20 ms liveness period), and nothing is marked lost.
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(1200) {
                let e = q.try_get().unwrap_err();
                assert_eq!(e.kind(), ErrorKind::Empty, "{e}");
                let e = q.get_timeout(Duration::from_millis(300)).unwrap_err();
                assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
                assert_eq!(q.lost(), 0, "a live producer's slot was marked lost");
            }
        }
        "recover" => {
            let item = q.get_timeout(Duration::from_secs(30)).unwrap();
            assert_eq!(item, vec![2u8; ITEM], "the item behind the lost slot");
            assert_eq!(q.lost(), 1);
        }
        other => panic!("unknown role {other}"),
    }
}

/// Flags between the test and its producer, opened by name in the producer.
struct Flags {
    inside: (Name, SharedValue<u32>),
    release: (Name, SharedValue<u32>),
}

impl Flags {
    fn new() -> Flags {
        let flag = |tag| {
            let n = Name::new(tag);
            let v = SharedValue::create(&n, 0u32).unwrap();
            (n, v)
        };
        Flags {
            inside: flag("liveness-inside"),
            release: flag("liveness-release"),
        }
    }
}

/// Forks a producer that claims the next slot of `queue` and stays inside its fill
/// callback until `flags.release` is set (then fills it with 1s), or until it is killed.
fn producer_inside_put(queue: &str, flags: &Flags) -> Process {
    let names = [
        queue.to_string(),
        flags.inside.0.to_string(),
        flags.release.0.to_string(),
    ];
    let producer = Process::spawn(move || {
        let q = ByteQueue::open(&names[0]).unwrap();
        let inside = SharedValue::<u32>::open(&names[1]).unwrap();
        let release = SharedValue::<u32>::open(&names[2]).unwrap();
        q.put_with(ITEM, |buf| {
            inside.store(1);
            let start = Instant::now();
            while release.load() == 0 {
                assert!(start.elapsed() < DEADLINE, "never released");
                std::thread::sleep(Duration::from_millis(1));
            }
            buf.fill(1);
        })
        .unwrap();
    })
    .unwrap();
    let start = Instant::now();
    while flags.inside.1.load() == 0 {
        assert!(
            start.elapsed() < DEADLINE,
            "the producer never claimed its slot"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    producer
}

/// The scenario of issue 9: a live producer inside `put_with` keeps its slot against a
/// contender that cannot see it in `/proc`; once SIGKILLed, its slot is recovered and
/// reported lost.
fn live_producer_keeps_its_slot(place: Place, test: &str) {
    if let Ok(role) = std::env::var(ROLE) {
        return play_contender(&role);
    }
    let name = Name::new("liveness-queue");
    let q = ByteQueue::create(&name, 4, ITEM).unwrap();

    // A live producer holds the slot at the head; an item waits behind it.
    let flags = Flags::new();
    let producer = producer_inside_put(&name, &flags);
    q.put(&[2u8; ITEM]).unwrap();
    contender(place, test, "wait", &name);
    assert_eq!(q.lost(), 0);
    // The producer finishes its put: its item is whole and first, nothing was lost.
    flags.release.1.store(1);
    producer.join().unwrap();
    let first = q.get_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(first, vec![1u8; ITEM], "the producer's item was corrupted");
    assert_eq!(
        q.get_timeout(Duration::from_secs(10)).unwrap(),
        vec![2u8; ITEM]
    );
    assert_eq!(q.try_get().unwrap_err().kind(), ErrorKind::Empty);
    assert_eq!(q.lost(), 0);

    // A producer that dies inside its put loses that item, and only that one: the
    // contender recovers the slot and takes the item behind it.
    let flags = Flags::new();
    let producer = producer_inside_put(&name, &flags);
    q.put(&[2u8; ITEM]).unwrap();
    producer.kill().unwrap();
    let err = producer.join().unwrap_err();
    assert!(err.to_string().contains("SIGKILL"), "{err}");
    contender(place, test, "recover", &name);
    assert_eq!(q.lost(), 1, "the dead producer's slot is reported lost");
    assert_eq!(q.try_get().unwrap_err().kind(), ErrorKind::Empty);
}

#[test]
fn queue_slot_of_a_live_producer_in_another_pid_namespace_is_not_stolen() {
    live_producer_keeps_its_slot(
        Place::OtherPidNamespace,
        "queue_slot_of_a_live_producer_in_another_pid_namespace_is_not_stolen",
    );
}

#[test]
fn queue_slot_of_a_live_producer_is_not_stolen_when_proc_is_unreadable() {
    live_producer_keeps_its_slot(
        Place::NoProc,
        "queue_slot_of_a_live_producer_is_not_stolen_when_proc_is_unreadable",
    );
}

fn ndshm_cli(place: Place, args: &[&str]) -> String {
    let bin = common::ndshm_cli_bin();
    let (ok, out) = run(command_at(place, bin, args), &format!("ndshm {args:?}"));
    assert!(ok, "ndshm {args:?} failed:\n{out}");
    out
}

/// Waits until segment `name` exists (a child is creating it).
fn wait_for(name: &Name) {
    let start = Instant::now();
    while !name.path().exists() {
        assert!(
            start.elapsed() < DEADLINE,
            "{} never appeared",
            name.as_str()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn gc_without_proc_never_removes_a_live_owners_segment() {
    let name = Name::new("liveness-gc");
    let n = name.to_string();
    let owner = Process::spawn::<_, ()>(move || {
        let _a = SharedNdArray::<f64, Ix1>::zeros(&n, 100).unwrap();
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    })
    .unwrap();
    wait_for(&name);
    let out = ndshm_cli(Place::NoProc, &["gc", "--prefix", &name]);
    assert!(
        !out.contains(&format!("removed {}", name.as_str())),
        "{out}"
    );
    assert!(
        name.path().exists(),
        "gc removed a live owner's segment:\n{out}"
    );
    let ls = ndshm_cli(Place::NoProc, &["ls"]);
    let line = ls.lines().find(|l| l.starts_with(name.as_str())).unwrap();
    assert!(line.contains(" yes "), "ALIVE column: {line}");

    owner.kill().unwrap();
    let _ = owner.join();
    let out = ndshm_cli(Place::NoProc, &["gc", "--prefix", &name]);
    assert!(out.contains(&format!("removed {}", name.as_str())), "{out}");
    assert!(!name.path().exists());
}

#[test]
fn ls_says_when_the_owner_is_in_another_pid_namespace() {
    let name = Name::new("liveness-ls");
    let _a = SharedNdArray::<u8, Ix1>::zeros(&name, 8).unwrap();
    let me = std::process::id();
    let there = format!("alive, in another pid namespace (pid {me} there)");

    let ls = ndshm_cli(Place::OtherPidNamespace, &["ls"]);
    let line = ls.lines().find(|l| l.starts_with(name.as_str())).unwrap();
    assert!(line.contains(&there), "{line}");
    assert!(!ndshm::info(&name).unwrap().is_stale());
    let info = ndshm_cli(Place::OtherPidNamespace, &["info", &name]);
    assert!(
        info.contains(&format!(
            "alive:      yes, in another pid namespace (pid {me} there)"
        )),
        "{info}"
    );
    let dry = ndshm_cli(
        Place::OtherPidNamespace,
        &["gc", "--dry-run", "--prefix", &name],
    );
    assert!(
        dry.contains(&format!("left {}: owner {there}", name.as_str())),
        "{dry}"
    );
    assert!(!dry.contains("would remove ndshm"), "{dry}");
    // Seen from its own namespace, nothing to note.
    let ls = ndshm_cli_here(&["ls"]);
    let line = ls.lines().find(|l| l.starts_with(name.as_str())).unwrap();
    assert!(!line.contains("namespace"), "{line}");
    assert!(name.path().exists());
}

fn ndshm_cli_here(args: &[&str]) -> String {
    let mut cmd = Command::new(common::ndshm_cli_bin());
    cmd.args(args);
    let (ok, out) = run(cmd, "ndshm");
    assert!(ok, "{out}");
    out
}

#[test]
fn crash_cleanup_never_removes_the_segment_of_a_live_owner_with_its_pid_in_another_namespace() {
    if let Ok(role) = std::env::var(ROLE) {
        return play_contender(&role);
    }
    // Names that sort in this order: the watchdog meets ours before its own.
    let base = Name::new("liveness-watchdog");
    let (ours, theirs) = (
        Name(format!("{}-a-live", base.as_str())),
        Name(format!("{}-b-dead", base.as_str())),
    );
    let a = SharedNdArray::<u8, Ix1>::zeros(&ours, 8).unwrap();
    // The watched process over there gives our segment its own pid (see `play_watched`).
    contender_with(
        Place::OtherPidNamespace,
        "crash_cleanup_never_removes_the_segment_of_a_live_owner_with_its_pid_in_another_namespace",
        "watched",
        &[(QUEUE, &theirs), (OTHER, &ours)],
    );
    assert!(!theirs.path().exists());
    assert!(
        ours.path().exists(),
        "the watchdog removed a live owner's segment"
    );
    assert!(!ndshm::info(&ours).unwrap().is_stale());
    drop(a);
}

#[test]
fn ls_and_gc_call_an_owner_without_lease_unknown_and_leave_its_segment() {
    let name = Name::new("liveness-unknown");
    let mut a = SharedNdArray::<u8, Ix1>::zeros(&name, 8).unwrap();
    a.persist();
    drop(a);
    // No lease recorded (its owner could not claim one), not persistent.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(name.path())
        .unwrap();
    let len = f.metadata().unwrap().len();
    std::os::unix::fs::FileExt::write_all_at(&f, &0u64.to_le_bytes(), len - 192 + 64).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &0u32.to_le_bytes(), len - 192 + 52).unwrap();
    let info = ndshm::info(&name).unwrap();
    assert_eq!(info.owner_status, ndshm::OwnerStatus::Unknown, "{info:?}");
    assert!(!info.is_stale() && !info.owner_alive);

    let ls = ndshm_cli_here(&["ls"]);
    let line = ls.lines().find(|l| l.starts_with(name.as_str())).unwrap();
    assert!(line.contains(" unknown "), "ALIVE column: {line}");
    assert!(line.contains("owner unknown"), "{line}");
    let out = ndshm_cli_here(&["gc", "--prefix", &name]);
    assert!(
        out.contains(&format!("left {}: owner unknown", name.as_str())),
        "{out}"
    );
    assert!(
        name.path().exists(),
        "gc removed a segment it cannot prove stale"
    );
}
