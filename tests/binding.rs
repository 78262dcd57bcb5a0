//! Handles bound to their process (issue 9, section 1): array handles, views and guards
//! work only in the process that made them. Each test reaches a handle from a forked child
//! through safe code (a `Mutex`, a `RefCell`, a `static`, an `Arc`, a captured view) and
//! shows a clean refusal — never two writers: the parent's data stays as it was.

mod common;

use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{Name, TempDir};
use ndarray::{ArrayViewMut, Ix1};
use ndshm::{
    fork_chunks, open_dyn, Chunk, ChunkPlan, ErrorKind, Lock, Process, Queue, SharedNdArray,
    SharedStruct, SharedValue, WorkerPool,
};

/// The words every refusal names.
const RULE: &str = "works only in the process that made it";

fn assert_refused(err: &ndshm::Error) {
    assert_eq!(err.kind(), ErrorKind::WorkerFailed, "{err}");
    assert!(err.message().contains(RULE), "the rule is not named: {err}");
}

/// Whether `f` panics with a message naming the rule (run in a child: the child's panic
/// hook is silent).
fn panics_naming_the_rule<R>(f: impl FnOnce() -> R) -> bool {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(_) => false,
        Err(p) => p.downcast_ref::<String>().is_some_and(|m| m.contains(RULE)),
    }
}

#[test]
fn scope_child_cannot_use_a_handle_inherited_through_a_mutex() {
    let name = Name::new("scope-mutex");
    let m = Mutex::new(SharedNdArray::<u64, Ix1>::zeros(&name, 4).unwrap());
    let err = ndshm::scope(|s| -> ndshm::Result<_> {
        let child = s.spawn(|| {
            // The child locks *its copy* of the mutex and tries to write.
            m.lock().unwrap().as_slice_mut().unwrap()[0] = 42;
        })?;
        // Meanwhile the parent holds `&[u64]` of the same memory.
        let g = m.lock().unwrap();
        let held = g.as_slice().unwrap();
        assert_eq!(held[0], 0);
        child.join()
    })
    .unwrap_err();
    assert_refused(&err);
    assert_eq!(m.lock().unwrap().as_slice().unwrap(), &[0, 0, 0, 0]);
}

#[test]
fn fork_chunks_closure_capturing_refcell_handle_is_refused() {
    let (cn, wn) = (Name::new("refcell-counter"), Name::new("refcell-work"));
    let counter = RefCell::new(SharedNdArray::<u64, Ix1>::zeros(&cn, 1).unwrap());
    let mut work = SharedNdArray::<u8, Ix1>::zeros(&wn, 4).unwrap();
    let err = fork_chunks(&mut work, 4, |_, mut mine| {
        mine.fill(1); // the chunk the call handed over works
        let mut c = counter.borrow_mut();
        for _ in 0..1000 {
            c.view_mut()[0] += 1;
        }
    })
    .unwrap_err();
    assert_refused(&err);
    assert_eq!(counter.borrow().view()[0], 0, "an increment happened");
    assert_eq!(work.as_slice().unwrap(), &[1, 1, 1, 1]);
}

static STATIC_COUNTER: OnceLock<Mutex<SharedNdArray<u64, Ix1>>> = OnceLock::new();
/// Chunks this process ran (process-local: a worker's count stays in the worker).
static CALLER_CHUNKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
const BUMPS: u64 = 20_000;

fn bump_static(_: Chunk, _: ArrayViewMut<'_, u8, Ix1>, _: &()) {
    let mut g = STATIC_COUNTER.get().unwrap().lock().unwrap();
    let mut v = g.view_mut();
    CALLER_CHUNKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    for _ in 0..BUMPS {
        v[0] += 1;
    }
}

#[test]
fn pool_map_fn_reaching_a_static_handle_is_refused() {
    let (cn, wn) = (Name::new("static-counter"), Name::new("static-work"));
    STATIC_COUNTER
        .set(Mutex::new(SharedNdArray::zeros(&cn, 1).unwrap()))
        .unwrap();
    // The workers are forked after the static was set: each inherits a copy of the handle.
    let mut pool = WorkerPool::new(3).unwrap();
    let mut work = SharedNdArray::<u8, Ix1>::zeros(&wn, 64).unwrap();
    let plan = ChunkPlan::balanced(64, 64).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut refused = None;
    while refused.is_none() && Instant::now() < deadline {
        if let Err(e) = pool.map(&mut work, &plan, (), bump_static) {
            refused = Some(e);
        }
    }
    let err = refused.expect("no chunk ever ran in a worker");
    assert_refused(&err);
    // Exactly the caller's increments: no worker wrote, none was lost.
    let ran_here = CALLER_CHUNKS.load(std::sync::atomic::Ordering::Relaxed);
    let counter = STATIC_COUNTER.get().unwrap().lock().unwrap().view()[0];
    assert_eq!(counter, ran_here * BUMPS);
    drop(pool);
    // The static is never dropped: unlink its segment now (the Name guard would too).
    STATIC_COUNTER
        .get()
        .unwrap()
        .lock()
        .unwrap()
        .unlink()
        .unwrap();
}

#[test]
fn process_spawn_with_arc_mutex_handle_is_refused() {
    let name = Name::new("arc-mutex");
    let shared = Arc::new(Mutex::new(
        SharedNdArray::<u64, Ix1>::zeros(&name, 8).unwrap(),
    ));
    let theirs = Arc::clone(&shared);
    let child = Process::spawn(move || {
        theirs.lock().unwrap().view_mut().fill(42);
    })
    .unwrap();
    assert_refused(&child.join().unwrap_err());
    assert!(shared
        .lock()
        .unwrap()
        .as_slice()
        .unwrap()
        .iter()
        .all(|&x| x == 0));
    assert!(
        name.path().exists(),
        "the child's drop unlinked the parent's segment"
    );
}

#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Ns {
    x: u64,
}

#[test]
fn inherited_guards_do_not_work_in_the_child() {
    let (sn, an) = (Name::new("guard-struct"), Name::new("guard-array"));
    let ns = SharedStruct::create(&sn, Ns { x: 1 }).unwrap();
    let mut a = SharedNdArray::<u64, Ix1>::zeros(&an, 4).unwrap();
    let struct_guard = RefCell::new(Some(ns.lock()));
    let array_guard = RefCell::new(Some(a.lock().unwrap()));
    ndshm::scope(|s| -> ndshm::Result<_> {
        s.spawn(|| -> Result<(), String> {
            let mut sg = struct_guard.borrow_mut().take().unwrap();
            let mut ag = array_guard.borrow_mut().take().unwrap();
            if !panics_naming_the_rule(|| sg.x) || !panics_naming_the_rule(|| sg.x = 9) {
                return Err("the inherited StructGuard dereferenced".into());
            }
            if !panics_naming_the_rule(|| ag.view()[0])
                || !panics_naming_the_rule(|| ag.view_mut()[0] = 9)
                || !panics_naming_the_rule(|| ag.as_slice_memory_order_mut()[0] = 9)
            {
                return Err("the inherited ArrayLockGuard gave a view".into());
            }
            // Dropping the copies releases nothing: the parent still holds both locks.
            drop(sg);
            drop(ag);
            let theirs = SharedStruct::<Ns>::open(&sn).map_err(|e| e.to_string())?;
            match theirs.lock_timeout(Duration::from_millis(300)) {
                Err(e) if e.kind() == ErrorKind::Timeout => {}
                _ => return Err("the child's drop released the struct's lock".into()),
            }
            // SAFETY: this child only tries the lock; it never makes a view.
            let mut mine =
                unsafe { SharedNdArray::<u64, Ix1>::open(&an) }.map_err(|e| e.to_string())?;
            let held = matches!(mine.try_lock(), Ok(None));
            if held {
                Ok(())
            } else {
                Err("the child's drop released the array's lock".into())
            }
        })?;
        Ok(())
    })
    .unwrap();
    // The parent's guards still work, and unlock on drop.
    let mut sg = struct_guard.borrow_mut().take().unwrap();
    sg.x += 1;
    drop(sg);
    array_guard.borrow_mut().take().unwrap().view_mut()[0] = 5;
    drop(array_guard);
    assert_eq!(ns.load().x, 2);
    assert_eq!(a.as_slice().unwrap(), &[5, 0, 0, 0]);
}

#[test]
fn a_view_smuggled_into_a_child_faults_instead_of_writing() {
    let (an, wn) = (Name::new("smuggled"), Name::new("smuggled-work"));
    let mut a = SharedNdArray::<u64, Ix1>::zeros(&an, 1024).unwrap();
    let mut work = SharedNdArray::<u8, Ix1>::zeros(&wn, 2).unwrap();
    {
        // A view of *another* array, reachable from every child through the mutex.
        let smuggled = Mutex::new(a.view_mut());
        let err = fork_chunks(&mut work, 2, |_, _| {
            smuggled.lock().unwrap().fill(7);
        })
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WorkerFailed, "{err}");
        assert!(err.message().contains("SIGSEGV"), "{err}");
    }
    assert!(
        a.as_slice().unwrap().iter().all(|&x| x == 0),
        "a child wrote"
    );
}

#[test]
fn a_childs_new_mapping_never_lands_in_a_placeholder() {
    let name = Name::new("placeholder");
    let len = 1 << 20;
    let a = SharedNdArray::<u8, Ix1>::zeros(&name, len).unwrap();
    let start = a.as_slice().unwrap().as_ptr() as usize;
    let child = Process::spawn(move || -> Result<(), String> {
        let page = 4096;
        let base = start & !(page - 1);
        // Something occupies the array's range in the child: asking for it exactly fails.
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping.
        let p = unsafe {
            libc::mmap(
                base as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            return Err(format!(
                "a new mapping landed at {p:?}, in the array's range"
            ));
        }
        // What occupies it is an inaccessible placeholder, not the parent's mapping.
        let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| e.to_string())?;
        let line = maps
            .lines()
            .find(|l| {
                let (lo, hi) = l.split(' ').next().unwrap().split_once('-').unwrap();
                let lo = usize::from_str_radix(lo, 16).unwrap();
                let hi = usize::from_str_radix(hi, 16).unwrap();
                lo <= base && base < hi
            })
            .ok_or("nothing mapped at the array's address")?;
        if !line.contains(" ---p ") || line.contains("/dev/shm") {
            return Err(format!(
                "the array's range in the child is not a placeholder: {line}"
            ));
        }
        // New mappings, with the range as a hint or anywhere, stay outside it.
        let mut maps = Vec::new();
        for i in 0..64 {
            let hint = if i == 0 { base } else { 0 };
            // SAFETY: a fresh private anonymous mapping; the hint is only a hint.
            let p = unsafe {
                libc::mmap(
                    hint as *mut libc::c_void,
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return Err("mmap failed".into());
            }
            maps.push(p);
            let q = p as usize;
            if q < base + len && base < q + len {
                return Err(format!(
                    "mapping {i} at {q:#x} overlaps the array at {base:#x}"
                ));
            }
        }
        for p in maps {
            // SAFETY: unmapping the mappings made above, once.
            unsafe { libc::munmap(p, len) };
        }
        Ok(())
    })
    .unwrap();
    child.join().unwrap();
    drop(a);
}

#[test]
fn dropping_an_inherited_queue_in_a_child_does_not_unlink_the_parents_name() {
    let (qn, ln, vn) = (
        Name::new("drop-q"),
        Name::new("drop-l"),
        Name::new("drop-v"),
    );
    let q = RefCell::new(Some(Queue::<u64>::create(&qn, 4).unwrap()));
    let l = RefCell::new(Some(Lock::create(&ln).unwrap()));
    let v = RefCell::new(Some(SharedValue::<u64>::create(&vn, 0).unwrap()));
    ndshm::scope(|s| -> ndshm::Result<_> {
        s.spawn(|| -> Result<(), String> {
            let (q, l, v) = (
                q.borrow_mut().take().unwrap(),
                l.borrow_mut().take().unwrap(),
                v.borrow_mut().take().unwrap(),
            );
            // Sync and ipc objects stay usable in the child...
            q.put(7).map_err(|e| e.to_string())?;
            drop(l.lock());
            v.fetch_add(1);
            // ...and dropping them there leaves the parent's names alone.
            drop((q, l, v));
            Ok(())
        })?;
        Ok(())
    })
    .unwrap();
    for n in [&qn, &ln, &vn] {
        assert!(
            n.path().exists(),
            "the child's drop unlinked '{}'",
            n.as_str()
        );
    }
    let (q, l, v) = (q.take().unwrap(), l.take().unwrap(), v.take().unwrap());
    assert_eq!(q.try_get().unwrap(), 7);
    assert_eq!(v.load(), 1);
    drop(l.lock());
    drop((q, l, v));
    for n in [&qn, &ln, &vn] {
        assert!(
            !n.path().exists(),
            "the parent's drop left '{}'",
            n.as_str()
        );
    }
}

#[test]
fn dropping_an_inherited_array_in_a_child_does_not_unlink_its_name() {
    let name = Name::new("drop-array");
    let a = RefCell::new(Some(
        SharedNdArray::<u64, Ix1>::from_elem(&name, 4, 2).unwrap(),
    ));
    ndshm::scope(|s| -> ndshm::Result<_> {
        s.spawn(|| drop(a.borrow_mut().take().unwrap()))?;
        Ok(())
    })
    .unwrap();
    assert!(
        name.path().exists(),
        "the child's drop unlinked the parent's array"
    );
    let a = a.take().unwrap();
    assert!(a.is_owner());
    assert_eq!(a.as_slice().unwrap(), &[2, 2, 2, 2]);
    drop(a);
    assert!(!name.path().exists(), "the parent's drop left its array");
}

#[test]
fn a_child_may_open_a_segment_its_parent_holds() {
    let name = Name::new("child-opens");
    let a = SharedNdArray::<u64, Ix1>::zeros(&name, 4).unwrap();
    let n2 = name.to_string();
    let child = Process::spawn(move || -> Result<(), String> {
        // SAFETY: the parent reads only after joining this child.
        let mut mine =
            unsafe { SharedNdArray::<u64, Ix1>::open(&n2) }.map_err(|e| e.to_string())?;
        mine.view_mut()[1] = 11;
        // Within the child, the one-handle rule still holds.
        // SAFETY: the open is refused before anything is mapped.
        match unsafe { SharedNdArray::<u64, Ix1>::open(&n2) } {
            Err(e) if e.kind() == ErrorKind::AlreadyOpen => Ok(()),
            other => Err(format!("a second handle in the child: {other:?}")),
        }
    })
    .unwrap();
    child.join().unwrap();
    assert_eq!(a.as_slice().unwrap(), &[0, 11, 0, 0]);
}

#[test]
fn wrong_process_is_a_typed_error_for_fallible_calls() {
    let (an, dn) = (Name::new("wrong-typed"), Name::new("wrong-dyn"));
    let dir = TempDir::new("wrong-process");
    let mut a = SharedNdArray::<u64, Ix1>::from_elem(&an, 4, 3).unwrap();
    let mut d0 = SharedNdArray::<u8, Ix1>::zeros(&dn, 2).unwrap();
    d0.persist();
    drop(d0);
    // SAFETY: nobody else writes this segment.
    let d = RefCell::new(Some(unsafe { open_dyn(&dn) }.unwrap()));
    let path = dir.join("x.npy");
    ndshm::scope(|s| -> ndshm::Result<_> {
        s.spawn(|| -> Result<(), String> {
            let check = |what: &str, r: ndshm::Result<()>| match r {
                Err(e) if e.kind() == ErrorKind::WrongProcess && e.message().contains(RULE) => {
                    Ok(())
                }
                other => Err(format!("{what} in the child gave {other:?}")),
            };
            check("lock", a.lock().map(drop))?;
            check("try_lock", a.try_lock().map(drop))?;
            check(
                "lock_timeout",
                a.lock_timeout(Duration::from_secs(1)).map(drop),
            )?;
            check("save", a.save(&path))?;
            check("prefault", a.prefault())?;
            check("unlink", a.unlink())?;
            let d = d.borrow_mut().take().unwrap();
            check("dyn save", d.save(&path))?;
            check("into_typed", d.into_typed::<u8, Ix1>().map(drop))?;
            if !panics_naming_the_rule(|| a.persist()) {
                return Err("persist in the child did not panic".into());
            }
            Ok(())
        })?;
        Ok(())
    })
    .unwrap();
    assert!(!path.exists(), "a child saved through an inherited handle");
    assert!(
        an.path().exists(),
        "a child unlinked through an inherited handle"
    );
    assert!(a.is_owner());
    assert_eq!(a.as_slice().unwrap(), &[3, 3, 3, 3]);
    let mut d = d.take().unwrap().into_typed::<u8, Ix1>().unwrap();
    d.unlink().unwrap();
}

#[test]
fn a_fork_while_other_threads_open_and_drop_segments_leaves_the_child_a_working_registry() {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn: Vec<_> = (0..2)
        .map(|t| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let name = Name::new(&format!("churn-{t}"));
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    drop(SharedNdArray::<u8, Ix1>::zeros(&name, 16).unwrap());
                }
            })
        })
        .collect();
    let name = Name::new("registry-child");
    let mut hung = 0;
    for _ in 0..200 {
        // A fork that is not ndshm's (a plain `fork`, as another library would do), at
        // any moment of the churning threads: the child must find the registry usable.
        // SAFETY: the child only creates and drops a segment (the allocator is fork-safe
        // in glibc, and the registry is what this test checks) and leaves with `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let ok = SharedNdArray::<u8, Ix1>::zeros(&name, 8).is_ok();
            // SAFETY: `_exit` ends the child without running the parent's destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut status = 0;
        loop {
            // SAFETY: waits for our own child; `status` is a valid out pointer.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                assert!(
                    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                    "child failed: {status:#x}"
                );
                break;
            }
            if Instant::now() > deadline {
                hung += 1;
                // SAFETY: kill and reap our own hung child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                break;
            }
            std::thread::yield_now();
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in churn {
        t.join().unwrap();
    }
    assert_eq!(hung, 0, "children hung on a registry lock inherited held");
}

/// The children of `fork_chunks_into` adopt the handles they are given (the input borrowed
/// shared, here a read-only handle, counted in the child's registry): their mappings come
/// back over the placeholders the fork left, and the data is there.
#[test]
fn forked_chunk_children_adopt_a_read_only_input_and_see_its_data() {
    let (i, o) = (Name::new("adopt-in"), Name::new("adopt-out"));
    let mut src = SharedNdArray::<u64, Ix1>::from_elem(&i, 16, 5).unwrap();
    src.persist();
    drop(src);
    // SAFETY: nobody writes the input while the test reads it.
    let input = unsafe { SharedNdArray::<u64, Ix1>::open_read_only(&i) }.unwrap();
    let mut out = SharedNdArray::<u64, Ix1>::zeros(&o, 16).unwrap();
    let plan = ndshm::ChunkPlan::balanced(16, 4).unwrap();
    ndshm::fork_chunks_into(&input, &mut out, &plan, |chunk, x, mut y| {
        for (k, n) in chunk.range().enumerate() {
            y[k] = x[n] * 2 + n as u64;
        }
    })
    .unwrap();
    let want: Vec<u64> = (0..16).map(|n| 10 + n).collect();
    assert_eq!(out.as_slice().unwrap(), &want[..]);
    assert!(input.view().iter().all(|&x| x == 5));
}
