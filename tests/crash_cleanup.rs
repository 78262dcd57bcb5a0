//! `CrashCleanup`: a SIGKILLed owner's segments are removed without anyone running gc.

// Opts this test binary in to forking on the harness's threads (see tests/common).
mod common;

use std::time::{Duration, Instant};

use ndarray::Ix1;
use ndshm::{CrashCleanup, CreateOptions, Process, SharedNdArray};

fn exists(name: &str) -> bool {
    std::fs::symlink_metadata(format!("/dev/shm/{name}")).is_ok()
}

fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(20), "{what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `None` when no process `pid` exists, else its state letter.
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

struct Unlink(Vec<String>);

impl Drop for Unlink {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = ndshm::unlink(n);
        }
    }
}

#[test]
fn a_sigkilled_owners_segments_are_removed_by_its_watchdog() {
    let me = std::process::id();
    let (owned, kept, attached) = (
        format!("crash-{me}-owned"),
        format!("crash-{me}-persistent"),
        format!("crash-{me}-attached"),
    );
    let _u = Unlink(vec![owned.clone(), kept.clone(), attached.clone()]);
    // A segment of this process that the child only attaches to: not the child's to remove.
    let other = SharedNdArray::<u8, Ix1>::zeros(&attached, 16).unwrap();
    let (o, k, a) = (owned.clone(), kept.clone(), attached.clone());
    let child = Process::spawn(move || {
        let watch = CrashCleanup::spawn().unwrap();
        // The persistent one also records the watchdog's pid for the test.
        let mut p =
            SharedNdArray::<i64, Ix1>::zeros(CreateOptions::named(&k).persistent(true), 1).unwrap();
        p.view_mut()[0] = watch.pid() as i64;
        // SAFETY: nobody writes this segment during the test.
        let _att = unsafe { SharedNdArray::<u8, Ix1>::open(&a) }.unwrap();
        let _mine = SharedNdArray::<f64, Ix1>::zeros(&o, 1 << 16).unwrap();
        std::thread::sleep(Duration::from_secs(600)); // until killed
    })
    .unwrap();
    eventually("the child never created its segment", || exists(&owned));
    // SAFETY: nobody writes this segment any more.
    let watchdog = unsafe { SharedNdArray::<i64, Ix1>::open_read_only(&kept) }
        .unwrap()
        .view()[0] as i32;
    assert!(
        matches!(proc_state(watchdog), Some(s) if s != 'Z'),
        "watchdog not running"
    );
    child.kill().unwrap();
    assert!(child.join().is_err());
    eventually(
        "the watchdog did not remove the dead owner's segment",
        || !exists(&owned),
    );
    eventually("the watchdog did not exit", || {
        matches!(proc_state(watchdog), None | Some('Z'))
    });
    assert!(
        exists(&kept),
        "a persistent segment is not the watchdog's to remove"
    );
    assert!(
        exists(&attached),
        "an attached segment is not the watchdog's to remove"
    );
    drop(other);
}

#[test]
fn a_live_owner_keeps_its_segments_and_dropping_the_guard_reaps_the_watchdog() {
    let name = format!("crash-{}-live", std::process::id());
    let _u = Unlink(vec![name.clone()]);
    let a = SharedNdArray::<u8, Ix1>::zeros(&name, 16).unwrap();
    let watch = CrashCleanup::spawn().unwrap();
    let pid = watch.pid();
    // The watchdog drops the mappings it inherited: removed segments free their memory.
    eventually("the watchdog kept a mapping of the segment", || {
        std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .is_ok_and(|m| !m.contains(&format!("/dev/shm/{name}")))
    });
    assert!(exists(&name));
    drop(watch);
    assert_eq!(proc_state(pid), None, "watchdog not reaped");
    assert!(exists(&name));
    drop(a);
    assert!(!exists(&name));
}

/// Forks a creator that makes `tracked` with `cleanup_on_exit(true)` (an array and a queue)
/// and `untracked` with the defaults (arrays), then waits to be killed; returns once all
/// exist.
fn creator(tracked: &[String], untracked: &[String]) -> Process {
    let (t, u) = (tracked.to_vec(), untracked.to_vec());
    let child = Process::spawn(move || -> ndshm::Result<()> {
        let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
        for (i, n) in t.iter().enumerate() {
            let opts = CreateOptions::named(n).cleanup_on_exit(true);
            if i % 2 == 0 {
                keep.push(Box::new(SharedNdArray::<f64, Ix1>::zeros(opts, 1024)?));
            } else {
                keep.push(Box::new(ndshm::Queue::<u64>::create(opts, 4)?));
            }
        }
        for n in &u {
            keep.push(Box::new(SharedNdArray::<u8, Ix1>::zeros(n, 16)?));
        }
        std::thread::sleep(Duration::from_secs(600)); // until killed
        Ok(())
    })
    .unwrap();
    eventually("the creator never made its segments", || {
        tracked.iter().chain(untracked).all(|n| exists(n))
    });
    child
}

#[test]
fn a_tracked_segment_is_removed_when_its_creator_is_sigkilled() {
    let me = std::process::id();
    let names: Vec<String> = ["kill-array", "kill-queue", "term-array", "term-queue"]
        .iter()
        .map(|t| format!("crash-{me}-tracked-{t}"))
        .collect();
    let _u = Unlink(names.clone());
    let killed = creator(&names[..2], &[]);
    let termed = creator(&names[2..], &[]);
    killed.kill().unwrap();
    termed.signal(libc::SIGTERM).unwrap();
    assert!(killed.join().unwrap_err().to_string().contains("SIGKILL"));
    assert!(termed.join().unwrap_err().to_string().contains("SIGTERM"));
    for n in &names {
        eventually(
            &format!("the tracked segment {n} outlived its killed creator"),
            || !exists(n),
        );
    }
}

#[test]
fn an_untracked_segment_survives_its_creators_sigkill_until_gc() {
    let me = std::process::id();
    let (tracked, untracked) = (
        format!("crash-{me}-pertrack-tracked"),
        format!("crash-{me}-pertrack-untracked"),
    );
    let _u = Unlink(vec![tracked.clone(), untracked.clone()]);
    let child = creator(
        std::slice::from_ref(&tracked),
        std::slice::from_ref(&untracked),
    );
    child.kill().unwrap();
    assert!(child.join().is_err());
    // The watchdog has done its work once the tracked one is gone...
    eventually("the tracked segment outlived its killed creator", || {
        !exists(&tracked)
    });
    // ...and it tracks per segment: the default one stays (the safe default), for gc.
    assert!(exists(&untracked), "an untracked segment was removed");
    let removed = ndshm::gc_matching(|s| s.name == untracked).unwrap();
    assert_eq!(removed.len(), 1, "gc finds the dead creator's segment");
    assert!(!exists(&untracked));
}

#[test]
fn a_tracked_segment_unlinked_by_its_creator_is_not_touched_again() {
    // The creator drops its tracked segment, and another process re-creates the name
    // before the creator dies: the watchdog leaves the new segment (another creation).
    let name = format!("crash-{}-recreated", std::process::id());
    // Tracked and kept: the watchdog judges names in order, so once this one is gone it
    // has judged `name` too.
    let marker = format!("{name}-zz-marker");
    let _u = Unlink(vec![name.clone(), marker.clone()]);
    let (n, m) = (name.clone(), marker.clone());
    let child = Process::spawn(move || -> ndshm::Result<()> {
        let first =
            SharedNdArray::<u8, Ix1>::zeros(CreateOptions::named(&n).cleanup_on_exit(true), 8)?;
        let _marker =
            SharedNdArray::<u8, Ix1>::zeros(CreateOptions::named(&m).cleanup_on_exit(true), 8)?;
        drop(first);
        std::thread::sleep(Duration::from_secs(600)); // until killed
        Ok(())
    })
    .unwrap();
    eventually("the child never made its marker", || exists(&marker));
    eventually("the child never dropped its segment", || !exists(&name));
    let mine = SharedNdArray::<u8, Ix1>::zeros(&name, 8).unwrap();
    child.kill().unwrap();
    assert!(child.join().is_err());
    eventually("the watchdog never removed the marker", || !exists(&marker));
    assert!(
        exists(&name),
        "the watchdog removed a segment it did not track"
    );
    drop(mine);
}
