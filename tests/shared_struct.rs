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
