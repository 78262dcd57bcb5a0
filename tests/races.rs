//! Attach races between processes: concurrent creators, openers racing a creator, a
//! creator killed while it initialises, and unlink while others are attached.

// Opts this test binary in to forking on the harness's threads (see tests/common).
mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ndarray::Ix1;
use ndshm::{ErrorKind, Process, SharedNdArray};

/// Words in shared memory that forked children and the parent signal each other with: an
/// anonymous shared mapping, inherited by every child forked after it was made (an
/// array's mapping is not: array handles work only in the process that made them).
struct Flags {
    ptr: *mut u32,
    len: usize,
}

impl Flags {
    fn new(_tag: &str, n: usize) -> Flags {
        // SAFETY: a fresh anonymous shared mapping of n words, zero-filled by the kernel;
        // no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                n * 4,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "cannot map the flags");
        Flags {
            ptr: p.cast(),
            len: n,
        }
    }

    fn at(&self, i: usize) -> &AtomicU32 {
        assert!(i < self.len);
        // SAFETY: `ptr` points to `len` aligned u32 in a shared mapping that lives as long
        // as `self` (in the parent and in every forked child); every access to them, in
        // every process, goes through atomics.
        unsafe { AtomicU32::from_ptr(self.ptr.add(i)) }
    }
}

impl Drop for Flags {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once; the borrows of `at` ended.
        unsafe { libc::munmap(self.ptr.cast(), self.len * 4) };
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) -> Result<(), String> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > Duration::from_secs(30) {
            return Err(format!("timed out waiting for {what}"));
        }
        std::thread::yield_now();
    }
    Ok(())
}

/// Removes a name on drop.
struct Unlink(String);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = ndshm::unlink(&self.0);
    }
}

const WON: u32 = 1;
const ATTACHED: u32 = 2;

#[test]
fn concurrent_creators_one_wins_the_others_attach_to_a_complete_segment() {
    const PROCS: usize = 6;
    const ROUNDS: usize = 25;
    const LEN: usize = 1 << 16;
    let flags = Flags::new("create", 1 + PROCS);
    for round in 0..ROUNDS {
        let name = format!("races-{}-create-{round}", std::process::id());
        let _u = Unlink(name.clone());
        flags.at(0).store(0, Ordering::SeqCst);
        for i in 0..PROCS {
            flags.at(1 + i).store(0, Ordering::SeqCst);
        }
        ndshm::scope(|s| -> ndshm::Result<_> {
            for i in 0..PROCS {
                let (flags, name) = (&flags, &name);
                s.spawn(move || -> Result<(), String> {
                    wait_until("go", || flags.at(0).load(Ordering::Acquire) == 1)?;
                    let marker = 1 + i as u64;
                    match SharedNdArray::<u64, Ix1>::from_elem(name, LEN, marker) {
                        Ok(mut a) => {
                            a.persist();
                            flags.at(1 + i).store(WON, Ordering::Release);
                            Ok(())
                        }
                        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                            // SAFETY: nobody writes the array after its creation.
                            let a = unsafe { SharedNdArray::<u64, Ix1>::open_read_only(name) }
                                .map_err(|e| format!("attach after 'exists': {e}"))?;
                            let v = a.as_slice().ok_or("not contiguous")?;
                            let first = v[0];
                            if v.len() != LEN
                                || !(1..=PROCS as u64).contains(&first)
                                || v.iter().any(|&x| x != first)
                            {
                                return Err(format!("half-written segment seen (first {first})"));
                            }
                            flags.at(1 + i).store(ATTACHED, Ordering::Release);
                            Ok(())
                        }
                        Err(e) => Err(format!("creator {i}: unexpected {e}")),
                    }
                })?;
            }
            flags.at(0).store(1, Ordering::Release);
            Ok(())
        })
        .unwrap();
        let outcomes: Vec<u32> = (0..PROCS)
            .map(|i| flags.at(1 + i).load(Ordering::Acquire))
            .collect();
        assert_eq!(
            outcomes.iter().filter(|&&o| o == WON).count(),
            1,
            "{outcomes:?}"
        );
        assert_eq!(
            outcomes.iter().filter(|&&o| o == ATTACHED).count(),
            PROCS - 1
        );
        ndshm::unlink(&name).unwrap();
    }
}

#[test]
fn openers_racing_a_creator_see_not_found_or_the_complete_segment() {
    const READERS: usize = 4;
    const ROUNDS: usize = 25;
    const LEN: usize = 1 << 18;
    let flags = Flags::new("open", 2 + READERS);
    let mut not_found = 0;
    for round in 0..ROUNDS {
        let name = format!("races-{}-open-{round}", std::process::id());
        let _u = Unlink(name.clone());
        for i in 0..2 + READERS {
            flags.at(i).store(0, Ordering::SeqCst);
        }
        let marker = 1000 + round as u64;
        let mut created = None;
        ndshm::scope(|s| -> ndshm::Result<_> {
            for i in 0..READERS {
                let (flags, name) = (&flags, &name);
                s.spawn(move || -> Result<(), String> {
                    flags.at(1).fetch_add(1, Ordering::AcqRel);
                    let mut misses = 0u32;
                    loop {
                        // SAFETY: nobody writes the array after its creation.
                        match unsafe { ndshm::open_dyn(name) } {
                            Ok(d) => {
                                let a = d.into_typed::<u64, Ix1>().map_err(|e| e.to_string())?;
                                let v = a.as_slice().ok_or("not contiguous")?;
                                if v.len() != LEN || v.iter().any(|&x| x != marker) {
                                    return Err("saw a half-written segment".into());
                                }
                                flags.at(2 + i).store(misses.max(1), Ordering::Release);
                                return Ok(());
                            }
                            Err(e) if e.kind() == ErrorKind::NotFound => misses += 1,
                            Err(e) => return Err(format!("reader {i}: {e}")),
                        }
                    }
                })?;
            }
            wait_until("readers", || {
                flags.at(1).load(Ordering::Acquire) == READERS as u32
            })
            .unwrap();
            created = Some(SharedNdArray::<u64, Ix1>::from_elem(&name, LEN, marker)?);
            Ok(())
        })
        .unwrap();
        not_found += (0..READERS)
            .map(|i| flags.at(2 + i).load(Ordering::Acquire) as u64)
            .sum::<u64>();
        drop(created);
    }
    eprintln!("openers retried {not_found} times on NotFound, never saw garbage");
}

#[test]
fn a_creator_killed_while_initialising_never_publishes_garbage() {
    const ROUNDS: u64 = 12;
    let mut published = 0;
    for round in 0..ROUNDS {
        let name = format!("races-{}-killed-{round}", std::process::id());
        let _u = Unlink(name.clone());
        let n2 = name.clone();
        // 32 MiB to fill: the kill lands before, during or after initialisation.
        let child = Process::spawn(move || {
            let a = SharedNdArray::<u64, Ix1>::from_elem(&n2, 1 << 22, 7).unwrap();
            std::mem::forget(a);
            std::thread::sleep(Duration::from_secs(60));
        })
        .unwrap();
        let pid = child.pid();
        std::thread::sleep(Duration::from_millis(round * round * 2));
        child.kill().unwrap();
        let _ = child.join();
        match unsafe { SharedNdArray::<u64, Ix1>::open_read_only(&name) } {
            // SAFETY (above): nobody writes it; the creator is dead.
            Ok(a) => {
                assert!(a.as_slice().unwrap().iter().all(|&x| x == 7));
                published += 1;
            }
            Err(e) => assert_eq!(e.kind(), ErrorKind::NotFound, "{e}"),
        }
        // Whatever the child left (the published segment, or its temporary one) is gc's.
        ndshm::gc_matching(|s| s.owner_pid == pid).unwrap();
        let leftovers: Vec<String> = std::fs::read_dir("/dev/shm")
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n == &name || n.starts_with(&format!(".ndshm-tmp-{pid}-")))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
    eprintln!("{ROUNDS} creators killed, {published} had published; no garbage, no leftovers");
}

#[test]
fn unlink_while_attached_keeps_mappings_and_fails_new_opens() {
    let name = format!("races-{}-unlink", std::process::id());
    let _u = Unlink(name.clone());
    let flags = Flags::new("unlink", 1);
    let mut a = SharedNdArray::<f64, Ix1>::zeros(&name, 1000).unwrap();
    let child = {
        let (flags, name) = (&flags, &name);
        ndshm::scope(|s| -> ndshm::Result<_> {
            s.spawn(move || -> Result<(), String> {
                // SAFETY: the parent does not touch the data until the child is done (flag 3).
                let mut b =
                    unsafe { SharedNdArray::<f64, Ix1>::open(name) }.map_err(|e| e.to_string())?;
                flags.at(0).store(1, Ordering::Release);
                wait_until("unlink", || flags.at(0).load(Ordering::Acquire) == 2)?;
                b.view_mut().fill(42.0);
                // SAFETY: fails before mapping.
                match unsafe { SharedNdArray::<f64, Ix1>::open(name) } {
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    other => return Err(format!("open after unlink: {:?}", other.map(drop))),
                }
                flags.at(0).store(3, Ordering::Release);
                Ok(())
            })?;
            wait_until("attach", || flags.at(0).load(Ordering::Acquire) == 1).unwrap();
            ndshm::unlink(name)?;
            flags.at(0).store(2, Ordering::Release);
            Ok(())
        })
    };
    child.unwrap();
    assert_eq!(flags.at(0).load(Ordering::Acquire), 3);
    // The parent's mapping saw the child's writes, after the name was gone.
    assert!(a.as_slice().unwrap().iter().all(|&x| x == 42.0));
    a.view_mut()[0] = 1.0;
    assert!(std::fs::metadata(format!("/dev/shm/{name}")).is_err());
    drop(a); // the owner's drop finds the name gone and leaves it
}

#[test]
fn gc_racing_live_owners_never_removes_their_segments() {
    const CREATORS: usize = 4;
    const CYCLES: u32 = 300;
    let prefix = format!("races-{}-gcrace", std::process::id());
    // Some real garbage for gc to find meanwhile: segments of owners that died.
    let dead: Vec<String> = (0..8).map(|i| format!("{prefix}-dead-{i}")).collect();
    let _u: Vec<Unlink> = dead.iter().map(|n| Unlink(n.clone())).collect();
    for n in &dead {
        let n2 = n.clone();
        Process::spawn(move || std::mem::forget(SharedNdArray::<u8, Ix1>::zeros(&n2, 64).unwrap()))
            .unwrap()
            .join()
            .unwrap();
    }
    let flags = Flags::new("gcrace", 1 + CREATORS);
    let mut creators = Vec::new();
    for i in 0..CREATORS {
        let name = format!("{prefix}-live-{i}");
        let ptr = flags.ptr as usize;
        creators.push(
            Process::spawn(move || -> Result<(), String> {
                // SAFETY: the flags mapping is inherited and outlives this child; access is
                // atomic (see `Flags::at`).
                let done = unsafe { AtomicU32::from_ptr((ptr as *mut u32).add(1 + i)) };
                for c in 0..CYCLES {
                    let a = SharedNdArray::<u64, Ix1>::from_elem(&name, 1024, c as u64)
                        .map_err(|e| format!("cycle {c}: create: {e}"))?;
                    // Our own segment must still be there, under its name, until we drop it.
                    let info =
                        ndshm::info(&name).map_err(|e| format!("cycle {c}: gc took it: {e}"))?;
                    if info.segment_id != a.segment_id() {
                        return Err(format!("cycle {c}: another segment under our name"));
                    }
                    drop(a);
                }
                done.store(1, Ordering::Release);
                Ok(())
            })
            .unwrap(),
        );
    }
    let pids: Vec<i32> = creators.iter().map(Process::pid).collect();
    let mut removed = Vec::new();
    let mut passes = 0;
    while (0..CREATORS).any(|i| flags.at(1 + i).load(Ordering::Acquire) == 0)
        && creators.iter_mut().all(|c| !c.is_finished().unwrap())
    {
        // Everything of this test, and the temporary segments of our creators.
        let got =
            ndshm::gc_matching(|s| s.name.starts_with(&prefix) || pids.contains(&s.owner_pid))
                .unwrap();
        removed.extend(got.into_iter().map(|s| s.name));
        passes += 1;
    }
    for c in creators {
        c.join().unwrap();
    }
    removed.extend(
        ndshm::gc_matching(|s| s.name.starts_with(&prefix))
            .unwrap()
            .into_iter()
            .map(|s| s.name),
    );
    removed.sort();
    let mut want = dead.clone();
    want.sort();
    assert_eq!(
        removed, want,
        "gc removed exactly the dead owners' segments"
    );
    eprintln!(
        "{passes} gc passes raced {} live create/drop cycles: only the {} dead owners' segments removed",
        CREATORS as u32 * CYCLES,
        dead.len()
    );
}
