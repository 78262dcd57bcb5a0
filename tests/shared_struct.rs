//! `SharedStruct` with over-aligned types: the value is aligned to its type, or the type
//! is refused with a typed error.

mod common;

use common::Name;
use ndshm::{ErrorKind, Process, SharedStruct};

#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(128))]
struct Aligned128 {
    x: u64,
    rest: [u64; 15],
}

#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(8192))]
struct Aligned8192 {
    bytes: [[u8; 4096]; 2],
}

fn value(x: u64) -> Aligned128 {
    Aligned128 { x, rest: [x; 15] }
}

#[test]
fn a_struct_aligned_to_128_bytes_loads_stores_and_is_shared() {
    let s = SharedStruct::new(value(1)).unwrap();
    assert_eq!(s.load(), value(1));
    s.store(value(2));
    {
        let g = s.lock();
        assert_eq!(&*g as *const Aligned128 as usize % 128, 0);
        assert_eq!(g.x, 2);
    }
    // Named: another process opens it by name and writes through the guard.
    let name = Name::new("struct-align");
    let named = SharedStruct::create(&name, value(3)).unwrap();
    let n = name.to_string();
    Process::spawn(move || -> ndshm::Result<()> {
        let s = SharedStruct::<Aligned128>::open(&n)?;
        let mut g = s.lock();
        g.x += 10;
        g.rest[14] = 99;
        Ok(())
    })
    .unwrap()
    .join()
    .unwrap();
    let got = named.load();
    assert_eq!((got.x, got.rest[0], got.rest[14]), (13, 3, 99));
}

#[test]
fn a_struct_aligned_beyond_a_page_is_an_invalid_argument() {
    let zero = Aligned8192 {
        bytes: [[0; 4096]; 2],
    };
    let err = SharedStruct::new(zero).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("8192-byte alignment"), "{err}");
    let name = Name::new("struct-align-big");
    let err = SharedStruct::create(&name, zero).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(
        !name.path().exists(),
        "nothing is created for a refused type"
    );
    let err = SharedStruct::<Aligned8192>::open(&name).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
}

/// Spins until `cond` holds, failing the test after 10 s.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::yield_now();
    }
}

#[test]
fn shared_struct_try_lock_returns_none_while_another_process_holds_it() {
    use ndshm::SharedValue;
    use std::time::Duration;
    let name = Name::new("struct-try-lock");
    let phase_name = Name::new("struct-try-lock-phase");
    let shared = SharedStruct::<u64>::create(&name, 0).unwrap();
    let phase = SharedValue::<u32>::create(&phase_name, 0).unwrap();
    let (n, p) = (name.to_string(), phase_name.to_string());
    let child = Process::spawn(move || -> ndshm::Result<()> {
        let shared = SharedStruct::<u64>::open(&n)?;
        let phase = SharedValue::<u32>::open(&p)?;
        let mut g = shared.lock();
        *g = 7;
        phase.store(1);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while phase.load() != 2 && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        Ok(())
    })
    .unwrap();
    wait_until("the child to hold the lock", || phase.load() == 1);
    assert!(shared.try_lock().is_none(), "took a live holder's lock");
    let err = shared.lock_timeout(Duration::from_millis(50)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    phase.store(2);
    child.join().unwrap();
    let g = shared.try_lock().expect("free once the child has unlocked");
    assert!(!g.owner_died());
    assert_eq!(*g, 7, "the holder's write is visible");
}

#[test]
fn a_struct_guard_inherited_through_fork_releases_nothing_in_the_child() {
    let shared = SharedStruct::new(1u32).unwrap();
    let g = shared.lock();
    let addr = &g as *const ndshm::StructGuard<'_, u32> as usize;
    // The child drops its copy of the parent's guard: that must not unlock (the lock
    // belongs to the parent's thread).
    let child = Process::spawn(move || {
        // SAFETY: the child's memory is a copy of the parent's, so `addr` holds the
        // child's copy of the guard; it is read out once and dropped once here.
        let copy: ndshm::StructGuard<'static, u32> = unsafe { std::ptr::read(addr as *const _) };
        drop(copy);
    })
    .unwrap();
    child.join().unwrap();
    assert!(
        shared.try_lock().is_none(),
        "the child released the parent's lock"
    );
    drop(g);
    assert_eq!(*shared.try_lock().unwrap(), 1);
}
