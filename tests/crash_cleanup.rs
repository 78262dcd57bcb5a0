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
