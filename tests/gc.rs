//! `gc`: removes the segments of dead owners, and nothing else.

// Opts this test binary in to forking on the harness's threads (see tests/common).
mod common;

use std::os::unix::fs::FileExt;
use std::time::{Duration, SystemTime};

use ndarray::Ix1;
use ndshm::{CreateOptions, ErrorKind, Process, SharedNdArray};

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
        let opts = CreateOptions::new().persistent(true);
        let b = SharedNdArray::<u32, Ix1>::zeros_with(&k, 10, &opts).unwrap();
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

/// Writes owner pid and start time into a segment's trailer (outside its checksum).
fn forge_owner(name: &str, pid: i32, start: u64) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path(name))
        .unwrap();
    let len = f.metadata().unwrap().len();
    f.write_all_at(&pid.to_le_bytes(), len - 192 + 48).unwrap();
    f.write_all_at(&start.to_le_bytes(), len - 192 + 56)
        .unwrap();
}

fn start_time(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    rest.split_whitespace().nth(19).unwrap().parse().unwrap()
}

#[test]
fn a_reused_pid_is_not_the_owner() {
    let (reused, same) = (name("reused"), name("same"));
    let _c = Cleanup(vec![reused.clone(), same.clone()]);
    let me = std::process::id() as i32;
    let mine = start_time(me);
    for n in [&reused, &same] {
        let mut a = SharedNdArray::<u8, Ix1>::zeros(n, 64).unwrap();
        a.persist();
        drop(a);
    }
    // Owner: a process with our pid but another start time -> our pid was reused.
    forge_owner(&reused, me, mine + 1);
    forge_owner(&same, me, mine);
    // Not persistent any more (the persist above only kept them past the drop).
    for n in [&reused, &same] {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path(n))
            .unwrap();
        let len = f.metadata().unwrap().len();
        f.write_all_at(&0u32.to_le_bytes(), len - 192 + 52).unwrap();
    }
    assert!(ndshm::info(&reused).unwrap().is_stale());
    assert!(!ndshm::info(&same).unwrap().is_stale());
    assert_eq!(gc_mine(&[&reused, &same]), vec![reused.clone()]);
    assert!(exists(&same));
}

#[test]
fn temporary_segments_of_dead_creators_are_removed() {
    let me = std::process::id();
    let dead = format!(".ndshm-tmp-{}-gctest{me}-0", dead_pid());
    let live = format!(".ndshm-tmp-{me}-gctest{me}-1");
    // Our pid, but written long before this process started: another process with our
    // pid made it.
    let reused = format!(".ndshm-tmp-{me}-gctest{me}-2");
    let _c = Cleanup(vec![dead.clone(), live.clone(), reused.clone()]);
    for n in [&dead, &live, &reused] {
        std::fs::write(path(n), [0u8; 256]).unwrap();
    }
    let old = SystemTime::now() - Duration::from_secs(24 * 3600);
    std::fs::File::options()
        .write(true)
        .open(path(&reused))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let mut removed = gc_mine(&[&dead, &live, &reused]);
    removed.sort();
    let mut want = vec![dead.clone(), reused.clone()];
    want.sort();
    assert_eq!(removed, want);
    assert!(exists(&live));
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
