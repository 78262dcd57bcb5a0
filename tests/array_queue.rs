//! Process-level tests of `NdArrayQueue`: who owns a queued array (and reclaims it after a
//! crash), gets that fail without destroying anything, a queue moved into a child, names
//! reused while queued; and `open_raw_reserved` of a sparse segment on a full `/dev/shm`.

mod common;

use std::time::Duration;

use common::{join_within, Name};
use ndarray::{Ix1, Ix2};
use ndshm::{ErrorKind, NdArrayQueue, Process, Queue, SharedNdArray};

const LIMIT: Duration = Duration::from_secs(30);

/// Runs `f` in a forked child and fails the test if it fails or hangs. Queues made inside
/// are held by that child alone: the test binary's other threads fork children of their
/// own, which would otherwise inherit the queue's presence and keep it from draining.
fn isolated(f: impl FnOnce() -> ndshm::Result<()> + 'static) {
    join_within(Process::spawn(f).unwrap(), LIMIT).unwrap();
}

#[test]
fn array_handles_move_between_processes_and_leftovers_are_unlinked() {
    let a = Name::new("arr-a");
    let b = Name::new("arr-b");
    let qname = Name::new("arrq");
    let (a_name, b_name, q_name) = (a.0.clone(), b.0.clone(), qname.0.clone());
    isolated(move || {
        let q = NdArrayQueue::create(&q_name, 4)?;
        q.put(SharedNdArray::<i64, Ix1>::from_elem(&a_name, 10, 3)?)?;
        q.put(SharedNdArray::<i64, Ix1>::from_elem(&b_name, 10, 4)?)?;
        // An unrelated-style receiver: attaches the queue by name, takes one array.
        let n = q_name.clone();
        join_within(
            Process::spawn(move || -> ndshm::Result<()> {
                let q = NdArrayQueue::open(&n)?;
                // SAFETY: the sender gave the array up.
                let got = unsafe { q.get::<i64, Ix1>()? };
                assert_eq!(got.view().sum(), 30);
                assert!(got.is_owner());
                Ok(())
            })?,
            LIMIT,
        )?;
        // The receiver owned it and unlinked it on drop.
        assert_eq!(
            ndshm::info(&a_name).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        // The second is still in flight; dropping the last handle of the queue unlinks it.
        assert!(ndshm::info(&b_name).is_ok());
        drop(q);
        assert_eq!(
            ndshm::info(&b_name).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        Ok(())
    });
}

#[test]
fn queued_arrays_of_a_sigkilled_queue_owner_are_reclaimed_by_gc() {
    let names: Vec<Name> = (0..3).map(|i| Name::new(&format!("aq-kill-{i}"))).collect();
    let ready = Queue::<u64>::new(2).unwrap();
    let result = ndshm::scope(|s| -> ndshm::Result<_> {
        let child = s.spawn(|| -> ndshm::Result<()> {
            let q = NdArrayQueue::new(4)?;
            for n in &names {
                q.put(SharedNdArray::<f64, Ix1>::from_elem(n, 100, 1.0)?)?;
            }
            ready.put(1).unwrap();
            loop {
                std::thread::park(); // until SIGKILLed
            }
        })?;
        let pid = child.pid();
        assert_eq!(ready.get_timeout(LIMIT), Ok(1), "the owner never got ready");
        // SAFETY: kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        child.join()
    });
    assert_eq!(result.unwrap_err().kind(), ErrorKind::WorkerFailed);
    // The queue's owner is gone: its queued arrays are garbage, and gc says so.
    let mine = |s: &ndshm::SegmentInfo| names.iter().any(|n| n.0 == s.name);
    let removed = ndshm::gc_matching(mine).unwrap();
    assert_eq!(removed.len(), 3, "gc reclaimed {removed:?}");
    for n in &names {
        assert_eq!(ndshm::info(n).unwrap_err().kind(), ErrorKind::NotFound);
    }
}

#[test]
fn an_array_put_by_a_child_that_exits_is_kept_for_the_live_queue_owner() {
    let n = Name::new("aq-putter-exits");
    let q = NdArrayQueue::new(2).unwrap();
    ndshm::scope(|s| -> ndshm::Result<_> {
        s.spawn(|| -> ndshm::Result<()> {
            q.put(SharedNdArray::<u32, Ix1>::from_elem(&n, 8, 5)?)?;
            Ok(())
        })?;
        Ok(())
    })
    .unwrap();
    // The putter has ended; the array is the (live) queue owner's now, not garbage.
    let removed = ndshm::gc_matching(|s| s.name == n.0).unwrap();
    assert!(removed.is_empty(), "gc took a queued array: {removed:?}");
    assert_eq!(
        ndshm::info(&n).unwrap().owner_pid,
        std::process::id() as i32
    );
    // SAFETY: the sender gave the array up.
    let a = unsafe { q.get::<u32, Ix1>() }.unwrap();
    assert_eq!(a.view().sum(), 40);
    assert!(a.is_owner());
}

#[test]
fn a_type_mismatch_leaves_the_array_in_the_queue() {
    let n = Name::new("aq-typo");
    let q = NdArrayQueue::new(2).unwrap();
    q.put(SharedNdArray::<f64, Ix1>::from_elem(&n, 10, 2.5).unwrap())
        .unwrap();
    // SAFETY (all gets): the sender gave the array up; nobody else writes it.
    let typo = ndshm::Error::from(unsafe { q.get::<f32, Ix1>() }.unwrap_err());
    assert_eq!(typo.kind(), ErrorKind::TypeMismatch, "{typo}");
    assert!(typo.message().contains("put back"), "{typo}");
    let dims = unsafe { q.get::<f64, Ix2>() }.unwrap_err();
    assert_eq!(dims.kind(), ErrorKind::DimensionMismatch, "{dims}");
    assert_eq!(q.len(), 1);
    let a = unsafe { q.get::<f64, Ix1>() }.unwrap();
    assert_eq!(a.view().sum(), 25.0);
    assert!(a.is_owner());
    drop(a);
    assert_eq!(ndshm::info(&n).unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn an_array_queue_moved_into_a_spawned_process_keeps_its_arrays() {
    // The parent drops its copy of the closure (and of the queue) right after each fork;
    // that must not drain the queue under the child.
    for i in 0..20 {
        let n = Name::new(&format!("aq-moved-{i}"));
        let q = NdArrayQueue::new(1).unwrap();
        q.put(SharedNdArray::<f64, Ix1>::from_elem(&n, 1000, i as f64).unwrap())
            .unwrap();
        let child = Process::spawn(move || -> ndshm::Result<()> {
            // SAFETY: the sender gave the array up.
            let a = unsafe { q.get_timeout::<f64, Ix1>(Duration::from_secs(10))? };
            assert_eq!(a.view().sum(), 1000.0 * i as f64);
            Ok(())
        })
        .unwrap();
        join_within(child, LIMIT).unwrap_or_else(|e| panic!("run {i}: {e}"));
        // The child became the owner and unlinked it.
        assert_eq!(ndshm::info(&n).unwrap_err().kind(), ErrorKind::NotFound);
    }
}

#[test]
fn a_reused_name_is_never_attached_nor_unlinked_by_the_queue() {
    let (n, m, e) = (
        Name::new("aq-reused-get"),
        Name::new("aq-reused-drop"),
        Name::new("aq-reused-drained"),
    );
    let (n, m, e) = (n.0.clone(), m.0.clone(), e.0.clone());
    isolated(move || {
        let q = NdArrayQueue::new(4)?;
        // While queued, the array is removed and another segment takes its name.
        q.put(SharedNdArray::<f64, Ix1>::from_elem(&n, 4, 1.0)?)?;
        ndshm::unlink(&n)?;
        let mut other = SharedNdArray::<f64, Ix1>::from_elem(&n, 4, 7.0)?;
        let other_id = other.segment_id();
        other.persist();
        drop(other); // so that the queue could attach it (and, before, claim it)
                     // SAFETY: nobody else writes these arrays.
        let err = unsafe { q.get::<f64, Ix1>() }.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        assert_eq!(ndshm::info(&n)?.segment_id, other_id);
        // SAFETY: as above.
        let mut other = unsafe { SharedNdArray::<f64, Ix1>::open(&n)? };
        assert_eq!(other.view().sum(), 28.0);
        assert!(
            !other.is_owner(),
            "the failed get claimed the other segment"
        );
        other.unlink()?;
        // The same at the drain, when the last handle goes.
        q.put(SharedNdArray::<f64, Ix1>::from_elem(&m, 4, 1.0)?)?;
        ndshm::unlink(&m)?;
        let other2 = SharedNdArray::<f64, Ix1>::from_elem(&m, 4, 7.0)?;
        q.put(SharedNdArray::<f64, Ix1>::from_elem(&e, 4, 1.0)?)?;
        drop(q);
        assert_eq!(ndshm::info(&m)?.segment_id, other2.segment_id());
        // ... while a queued array that kept its name was drained.
        assert_eq!(ndshm::info(&e).unwrap_err().kind(), ErrorKind::NotFound);
        Ok(())
    });
}

/// Set in the re-run inside a private 4 MiB `/dev/shm`.
const SMALL_SHM: &str = "NDSHM_TEST_SMALL_SHM";

#[test]
fn open_raw_reserved_of_a_sparse_segment_on_a_full_dev_shm_is_no_space() {
    let test = "open_raw_reserved_of_a_sparse_segment_on_a_full_dev_shm_is_no_space";
    if std::env::var_os(SMALL_SHM).is_some() {
        return sparse_segment_on_a_full_dev_shm();
    }
    // Re-run this test in a private mount namespace with a 4 MiB tmpfs over /dev/shm.
    let spawned = std::process::Command::new("unshare")
        .args([
            "-m",
            "sh",
            "-c",
            "mount -t tmpfs -o size=4m ndshm-test /dev/shm || { echo NDSHM_SKIP; exit 0; }; \
             exec \"$0\" \"$@\"",
        ])
        .arg(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(SMALL_SHM, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            eprintln!("SKIPPED {test}: cannot run unshare ({e})");
            return;
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{test} in a private /dev/shm still ran after 60 s (a hang)");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    if stdout.contains("NDSHM_SKIP") || (!out.status.success() && stderr.starts_with("unshare")) {
        eprintln!("SKIPPED {test}: no private tmpfs for /dev/shm here: {stderr}");
        return;
    }
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the re-run failed: stdout {stdout}, stderr {stderr}"
    );
}

/// Inside the private 4 MiB `/dev/shm`.
fn sparse_segment_on_a_full_dev_shm() {
    const MIB: usize = 1 << 20;
    let st = nix::sys::statvfs::statvfs("/dev/shm").unwrap();
    let total = st.blocks() as u64 * st.fragment_size() as u64;
    assert!(
        total <= 8 * MIB as u64,
        "not in the small /dev/shm: {total} bytes"
    );
    // What Python's SharedMemory(create=True, size=3 MiB) does: ftruncate, no blocks.
    let sparse = Name::new("aq-sparse");
    std::fs::File::create(sparse.path())
        .unwrap()
        .set_len(3 * MIB as u64)
        .unwrap();
    let filler = SharedNdArray::<u8, Ix1>::zeros(&Name::new("aq-filler").0, 2 * MIB).unwrap();
    // SAFETY (all opens): nobody else uses these segments.
    let err = unsafe { SharedNdArray::<u8, Ix1>::open_raw_reserved(&sparse, 3 * MIB) }.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoSpace, "{err}");
    // What the docs say happens without reserving: the first write past the free space
    // kills the writer with SIGBUS.
    let n = sparse.0.clone();
    let writer = Process::spawn(move || -> ndshm::Result<()> {
        let mut a = unsafe { SharedNdArray::<u8, Ix1>::open_raw(&n, 3 * MIB)? };
        a.view_mut().fill(1);
        Ok(())
    })
    .unwrap();
    let died = join_within(writer, LIMIT).unwrap_err();
    assert!(died.message().contains("SIGBUS"), "{died}");
    // With room again, reserving succeeds and every page can be written.
    drop(filler);
    let mut a = unsafe { SharedNdArray::<u8, Ix1>::open_raw_reserved(&sparse, 3 * MIB) }.unwrap();
    a.view_mut().fill(2);
    assert_eq!(a.view().iter().map(|&x| x as usize).sum::<usize>(), 6 * MIB);
}

#[test]
fn array_queue_try_put_hands_the_array_back_when_full() {
    let names: Vec<Name> = (0..3).map(|i| Name::new(&format!("aq-full-{i}"))).collect();
    let n: Vec<String> = names.iter().map(|n| n.0.clone()).collect();
    let in_child = n.clone();
    isolated(move || {
        let n = in_child;
        let q = NdArrayQueue::new(2)?;
        q.try_put(SharedNdArray::<u16, Ix1>::from_elem(&n[0], 4, 1)?)?;
        q.try_put(SharedNdArray::<u16, Ix1>::from_elem(&n[1], 4, 2)?)?;
        let c = SharedNdArray::<u16, Ix1>::from_elem(&n[2], 4, 3)?;
        let e = q.try_put(c).unwrap_err();
        assert!(e.is_full(), "{e}");
        let c = e.into_inner();
        // Back as it was: still this handle's, owned by this process, data intact.
        assert!(c.is_owner());
        assert_eq!(ndshm::info(&n[2])?.owner_pid, std::process::id() as i32);
        assert_eq!(c.view().sum(), 12);
        let e = q.put_timeout(c, Duration::from_millis(1)).unwrap_err();
        assert!(e.is_timeout(), "{e}");
        let c = e.into_inner();
        q.close();
        let e = q.put(c).unwrap_err();
        assert!(e.is_closed(), "{e}");
        let c = e.into_inner();
        assert!(c.is_owner());
        drop(c); // the owner unlinks it
        assert_eq!(ndshm::info(&n[2]).unwrap_err().kind(), ErrorKind::NotFound);
        // SAFETY: nothing else writes the queued arrays.
        let e = unsafe { q.try_get::<u16, Ix1>() };
        assert_eq!(e.unwrap().view().sum(), 4);
        Ok(()) // dropping the queue unlinks the array still queued
    });
    for name in &n {
        assert_eq!(ndshm::info(name).unwrap_err().kind(), ErrorKind::NotFound);
    }
}

#[test]
fn array_queue_try_get_on_an_empty_queue_is_empty_not_timeout() {
    let q = NdArrayQueue::new(2).unwrap();
    // SAFETY: nothing is queued, so nothing is attached.
    let e = unsafe { q.try_get::<f64, Ix1>() }.unwrap_err();
    assert_eq!(e, ndshm::TryGetError::Empty);
    assert_eq!(ndshm::Error::from(e).kind(), ErrorKind::Empty);
    // SAFETY: as above.
    let e = unsafe { q.get_timeout::<f64, Ix1>(Duration::from_millis(1)) }.unwrap_err();
    assert_eq!(e, ndshm::GetTimeoutError::Timeout);
}
