//! `gc`: removes the segments of dead owners, and nothing else.

// Opts this test binary in to forking on the harness's threads (see tests/common).
mod common;

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::{Duration, SystemTime};

use ndarray::Ix1;
use ndshm::{CreateOptions, ErrorKind, OwnerStatus, Process, SharedNdArray};

fn name(tag: &str) -> String {
    format!("gc-{}-{tag}", std::process::id())
}

fn path(name: &str) -> String {
    format!("/dev/shm/{name}")
}

fn exists(name: &str) -> bool {
    std::fs::symlink_metadata(path(name)).is_ok()
}

/// Removes the names on drop, whatever happened.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = std::fs::remove_file(path(n));
        }
    }
}

/// gc restricted to this test's names, so that tests running beside it are left alone.
fn gc_mine(names: &[&str]) -> Vec<String> {
    ndshm::gc_matching(|s| names.contains(&s.name.as_str()))
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect()
}

/// A pid that no process has: a child that has ended and been reaped.
fn dead_pid() -> i32 {
    let p = Process::spawn(|| {}).unwrap();
    let pid = p.pid();
    p.join().unwrap();
    pid
}

/// Waits until segment `name` exists (a child is creating it).
fn wait_for(name: &str) {
    let start = std::time::Instant::now();
    while !exists(name) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{name} never appeared"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn sigkilled_owner_segment_is_removed() {
    let n = name("killed");
    let _c = Cleanup(vec![n.clone()]);
    let n2 = n.clone();
    let child = Process::spawn(move || {
        let _a = SharedNdArray::<f64, Ix1>::from_elem(&n2, 1000, 1.5).unwrap();
        #[allow(clippy::empty_loop)]
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
        #[allow(unreachable_code)]
        ()
    })
    .unwrap();
    wait_for(&n);
    // Its owner is alive: not stale, gc leaves it.
    assert!(!ndshm::info(&n).unwrap().is_stale());
    assert!(gc_mine(&[&n]).is_empty());
    assert!(exists(&n));

    child.kill().unwrap();
    let err = child.join().unwrap_err();
    assert!(err.to_string().contains("SIGKILL"), "{err}");
    let info = ndshm::info(&n).unwrap();
    assert!(info.is_stale(), "{info:?}");
    assert!(ndshm::stale().unwrap().iter().any(|s| s.name == n));
    assert_eq!(gc_mine(&[&n]), vec![n.clone()]);
    assert!(!exists(&n));
    assert_eq!(ndshm::info(&n).unwrap_err().kind(), ErrorKind::NotFound);
    // A second run finds nothing.
    assert!(gc_mine(&[&n]).is_empty());
}

#[test]
fn exited_without_drop_is_removed_and_persistent_is_kept() {
    let (gone, kept) = (name("exit"), name("persist"));
    let _c = Cleanup(vec![gone.clone(), kept.clone()]);
    let (g, k) = (gone.clone(), kept.clone());
    Process::spawn(move || {
        let a = SharedNdArray::<u32, Ix1>::zeros(&g, 10).unwrap();
        std::mem::forget(a); // ends with _exit: no Drop ran, the owner is gone
        let b = SharedNdArray::<u32, Ix1>::zeros(CreateOptions::named(&k).persistent(true), 10)
            .unwrap();
        std::mem::forget(b);
    })
    .unwrap()
    .join()
    .unwrap();
    assert!(!ndshm::info(&kept).unwrap().is_stale());
    assert_eq!(gc_mine(&[&gone, &kept]), vec![gone.clone()]);
    assert!(exists(&kept), "a persistent segment outlives its owner");
    ndshm::unlink(&kept).unwrap();
}

#[test]
fn live_owner_foreign_files_and_plain_npy_are_never_touched() {
    let (live, foreign, npy, tiny, dir) = (
        name("live"),
        name("foreign"),
        name("npy"),
        name("tiny"),
        name("dir"),
    );
    let _c = Cleanup(vec![
        live.clone(),
        foreign.clone(),
        npy.clone(),
        tiny.clone(),
    ]);
    let a = SharedNdArray::<f64, Ix1>::zeros(&live, 100).unwrap();
    std::fs::write(path(&foreign), vec![0xAB; 4096]).unwrap();
    std::fs::write(path(&tiny), b"x").unwrap();
    std::fs::create_dir(path(&dir)).unwrap();
    // A .npy file numpy wrote: header, data, no trailer.
    let mut npy_bytes =
        b"\x93NUMPY\x01\x00\x76\x00{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }"
            .to_vec();
    npy_bytes.resize(127, b' ');
    npy_bytes.push(b'\n');
    npy_bytes.extend_from_slice(&[0u8; 16]);
    std::fs::write(path(&npy), &npy_bytes).unwrap();
    let all = [&*live, &*foreign, &*npy, &*tiny, &*dir];
    assert!(gc_mine(&all).is_empty());
    for n in all {
        assert!(exists(n), "{n} was removed");
    }
    std::fs::remove_dir(path(&dir)).unwrap();
    drop(a);
    assert!(!exists(&live));
}

/// Writes owner pid, start time and lease into a segment's trailer (outside its checksum).
fn forge_owner(name: &str, pid: i32, start: u64, lease: u64) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path(name))
        .unwrap();
    let len = f.metadata().unwrap().len();
    f.write_all_at(&pid.to_le_bytes(), len - 192 + 48).unwrap();
    f.write_all_at(&start.to_le_bytes(), len - 192 + 56)
        .unwrap();
    f.write_all_at(&lease.to_le_bytes(), len - 192 + 64)
        .unwrap();
}

/// The owner fields (pid, start time, lease) a segment's trailer records.
fn owner_of(name: &str) -> (i32, u64, u64) {
    let f = std::fs::File::open(path(name)).unwrap();
    let len = f.metadata().unwrap().len();
    let mut b = [0u8; 24];
    f.read_exact_at(&mut b, len - 192 + 48).unwrap();
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    (
        i32::from_le_bytes(b[0..4].try_into().unwrap()),
        u64_at(8),
        u64_at(16),
    )
}

/// The lease of a process that has exited: read from a segment it made, then reaped.
fn dead_lease() -> u64 {
    let n = name(&format!("dead-lease-{}", dead_pid()));
    let _c = Cleanup(vec![n.clone()]);
    let n2 = n.clone();
    Process::spawn(move || std::mem::forget(SharedNdArray::<u8, Ix1>::zeros(&n2, 8).unwrap()))
        .unwrap()
        .join()
        .unwrap();
    owner_of(&n).2
}

#[test]
fn a_reused_pid_is_not_the_owner() {
    // Pid and start time decide nothing any more: the owner's lease does. A segment that
    // names our pid and start time but the lease of a process that exited is stale; one
    // that names our lease is ours, whatever pid and start time it shows.
    let (reused, same) = (name("reused"), name("same"));
    let _c = Cleanup(vec![reused.clone(), same.clone()]);
    let me = std::process::id() as i32;
    for n in [&reused, &same] {
        let mut a = SharedNdArray::<u8, Ix1>::zeros(n, 64).unwrap();
        a.persist();
        drop(a);
    }
    let (pid, start, mine) = owner_of(&same);
    assert_eq!(pid, me);
    forge_owner(&reused, me, start, dead_lease());
    forge_owner(&same, i32::MAX - 7, start + 1, mine);
    // Not persistent any more (the persist above only kept them past the drop).
    for n in [&reused, &same] {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path(n))
            .unwrap();
        let len = f.metadata().unwrap().len();
        f.write_all_at(&0u32.to_le_bytes(), len - 192 + 52).unwrap();
    }
    let info = ndshm::info(&reused).unwrap();
    assert!(info.is_stale(), "{info:?}");
    assert_eq!(info.owner_status, OwnerStatus::Dead);
    let info = ndshm::info(&same).unwrap();
    assert!(!info.is_stale() && info.owner_alive, "{info:?}");
    assert_eq!(gc_mine(&[&reused, &same]), vec![reused.clone()]);
    assert!(exists(&same));
    // No lease recorded: unknown, and gc leaves it.
    forge_owner(&same, i32::MAX - 7, 0, 0);
    let info = ndshm::info(&same).unwrap();
    assert_eq!(info.owner_status, OwnerStatus::Unknown, "{info:?}");
    assert!(!info.is_stale() && !info.owner_alive);
    assert!(gc_mine(&[&same]).is_empty());
    assert!(exists(&same));
}

/// Forks a process that creates temporary segment `name` and holds an OFD lock on it, as
/// `create` does while it builds a segment; it keeps it until killed.
fn creator_holding(name: &str) -> Process {
    let n = name.to_string();
    let creator = Process::spawn::<_, ()>(move || {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path(&n))
            .unwrap();
        f.set_len(256).unwrap();
        let old = SystemTime::now() - Duration::from_secs(24 * 3600);
        f.set_modified(old).unwrap();
        ofd_read_lock(&f);
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    })
    .unwrap();
    // Wait until it holds the lock (then the file's mtime is old).
    let start = std::time::Instant::now();
    loop {
        let old = std::fs::metadata(path(name))
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < SystemTime::now() - Duration::from_secs(3600));
        if old && is_locked(name) {
            return creator;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "creator never ready"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn ofd_lock_request(kind: i32) -> libc::flock {
    // SAFETY: all-zero is a valid flock; the fields that matter are set below.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl
}

fn ofd_read_lock(f: &std::fs::File) {
    let mut fl = ofd_lock_request(libc::F_RDLCK);
    // SAFETY: a valid fd and flock for the duration of the call.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
}

fn is_locked(name: &str) -> bool {
    let Ok(f) = std::fs::File::open(path(name)) else {
        return false;
    };
    let mut fl = ofd_lock_request(libc::F_WRLCK);
    // SAFETY: a valid fd and flock for the duration of the call.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    r == 0 && fl.l_type != libc::F_UNLCK as libc::c_short
}

/// Runs `ndshm gc --prefix <prefix>` with an empty tmpfs over /proc (a private mount
/// namespace), within a deadline.
fn gc_cli_without_proc(prefix: &str) {
    let mut child = std::process::Command::new("unshare")
        .args([
            "-m",
            "sh",
            "-c",
            r#"mount -t tmpfs none /proc && exec "$0" "$@""#,
            common::ndshm_cli_bin().to_str().unwrap(),
            "gc",
            "--prefix",
            prefix,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ndshm gc did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        status.success(),
        "ndshm gc without /proc failed ({status}): {err}"
    );
}

#[test]
fn a_temporary_segment_of_a_live_creator_is_never_removed_and_a_dead_ones_is() {
    // Build the CLI first: the "fresh" file below must still be fresh when gc runs (a build
    // of the CLI in between takes longer than gc's grace period for unlocked files).
    common::ndshm_cli_bin();
    // Names only this test uses: the pid field is not a pid (nothing decides by pid).
    let me = std::process::id() | 0x4000_0000;
    // Old names without a lease: only the creator's lock tells.
    let live = format!(".ndshm-tmp-{me}-gctest-live");
    let killed = format!(".ndshm-tmp-{me}-gctest-killed");
    // The name records a dead creator's lease: removed at once, whatever its age.
    let dead = format!(".ndshm-tmp-{me}-L{:x}-gctest-dead", dead_lease());
    // Unlocked and no lease, but just written: its creator may be about to lock it.
    let fresh = format!(".ndshm-tmp-{me}-gctest-fresh");
    let _c = Cleanup(vec![
        live.clone(),
        killed.clone(),
        dead.clone(),
        fresh.clone(),
    ]);
    let creator = creator_holding(&live);
    let victim = creator_holding(&killed);
    victim.kill().unwrap();
    let _ = victim.join();
    std::fs::write(path(&dead), [0u8; 256]).unwrap();
    std::fs::write(path(&fresh), [0u8; 256]).unwrap();
    // `ndshm gc` where /proc is unreadable: nothing decides from pids.
    gc_cli_without_proc(&format!(".ndshm-tmp-{me}-"));
    assert!(!exists(&killed) && !exists(&dead));
    assert!(exists(&live) && exists(&fresh));
    assert!(gc_mine(&[&live, &killed, &dead, &fresh]).is_empty());
    creator.kill().unwrap();
    let _ = creator.join();
    // Its creator gone, the file is unlocked and old: garbage now.
    assert_eq!(gc_mine(&[&live]), vec![live.clone()]);
}

#[test]
fn a_stale_name_recreated_by_a_live_owner_survives() {
    // Staleness is judged when gc runs, not when it was listed. (The narrower race, a name
    // re-created or re-claimed between gc's own check and its unlink, is covered by the
    // unit tests in src/gc.rs.)
    let n = name("recreated");
    let _c = Cleanup(vec![n.clone()]);
    let n2 = n.clone();
    Process::spawn(move || {
        std::mem::forget(SharedNdArray::<u8, Ix1>::zeros(&n2, 8).unwrap());
    })
    .unwrap()
    .join()
    .unwrap();
    assert!(ndshm::stale().unwrap().iter().any(|s| s.name == n));
    ndshm::unlink(&n).unwrap();
    let fresh = SharedNdArray::<u8, Ix1>::zeros(&n, 8).unwrap();
    assert!(gc_mine(&[&n]).is_empty());
    assert!(exists(&n));
    drop(fresh);
}
