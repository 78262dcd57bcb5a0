//! SharedNdArray against a real /dev/shm: creation, attachment, ownership, layouts, and
//! every kind of bad input of the foundation issue.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use common::{Name, TempDir};
use ndarray::{array, Array2, Ix1, Ix2, Ix3, IxDyn};
use ndshm::{CreateOptions, DType, ErrorKind, Process, SharedNdArray};

/// How long a handshake with a child may take before the test fails instead of hanging.
const DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

fn write_file(name: &Name, bytes: &[u8]) {
    let mut f = std::fs::File::create(name.path()).unwrap();
    f.write_all(bytes).unwrap();
}

fn open_kind<T: ndshm::Element, D: ndarray::Dimension>(name: &str) -> ErrorKind {
    // SAFETY: test segments are private to the test.
    unsafe { SharedNdArray::<T, D>::open(name) }
        .map(drop)
        .unwrap_err()
        .kind()
}

#[test]
fn create_view_and_attach_by_name() {
    let name = Name::new("attach");
    let mut a = SharedNdArray::<f64, Ix2>::zeros(&name, (1000, 3)).unwrap();
    assert_eq!(a.shape(), &[1000, 3]);
    assert_eq!((a.len(), a.ndim(), a.nbytes()), (3000, 2, 24000));
    assert_eq!(a.name(), name.as_str());
    assert_eq!(a.dtype(), DType::F64);
    assert!(a.is_owner());
    for (i, x) in a.as_slice_mut().unwrap().iter_mut().enumerate() {
        *x = i as f64;
    }
    // A second handle in the same process is refused: no two live &mut views.
    assert_eq!(open_kind::<f64, Ix2>(&name), ErrorKind::AlreadyOpen);

    // Another process attaches by name and writes; we see the write.
    let child_name = name.to_string();
    let child = Process::spawn(move || -> Result<(), String> {
        // SAFETY: the parent waits for this child before touching the array again.
        let mut b =
            unsafe { SharedNdArray::<f64, Ix2>::open(&child_name) }.map_err(|e| e.to_string())?;
        if b.is_owner() || b.view()[[999, 2]] != 2999.0 {
            return Err(format!("unexpected handle state: {b:?}"));
        }
        b.view_mut()[[0, 0]] = -1.0;
        Ok(())
    })
    .unwrap();
    child.join().unwrap();
    assert_eq!(a.view()[[0, 0]], -1.0);
    assert!(name.path().exists(), "an attached handle never unlinks");
    drop(a);
    assert!(!name.path().exists(), "the owner's drop unlinks");
}

#[test]
fn from_elem_from_array_and_views() {
    let (n1, n2, n3) = (Name::new("elem"), Name::new("arr"), Name::new("t"));
    let a = SharedNdArray::<i32, Ix3>::from_elem(&n1, (2, 3, 4), 7).unwrap();
    assert_eq!(a.view().sum(), 7 * 24);
    let src = array![[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]];
    let b = SharedNdArray::from_array(&n2, &src).unwrap();
    assert_eq!(b.view(), src);
    assert_eq!(b.as_slice().unwrap(), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    // A strided, transposed input is copied in logical order.
    let c = SharedNdArray::from_array(&n3, &src.t()).unwrap();
    assert_eq!(c.view(), src.t());
    assert_eq!(c.as_slice().unwrap(), &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    assert_eq!(format!("{c}"), format!("{}", src.t()));
}

#[test]
fn fortran_order_round_trip() {
    let (n1, n2) = (Name::new("f1"), Name::new("f2"));
    let src = Array2::from_shape_fn((3, 4), |(i, j)| (i * 10 + j) as u16);
    let mut a =
        SharedNdArray::from_array(CreateOptions::named(&n1).fortran_order(true), &src).unwrap();
    assert!(a.is_fortran_order());
    assert!(
        a.as_slice().is_none(),
        "Fortran data is not a C-order slice"
    );
    assert_eq!(a.as_slice_memory_order()[..3], [0, 10, 20]);
    assert_eq!(a.view(), src);
    a.view_mut()[[2, 3]] = 99;
    a.persist();
    drop(a);
    // SAFETY: private test segment.
    let mut b = unsafe { SharedNdArray::<u16, Ix2>::open(&n1) }.unwrap();
    assert_eq!(b.view()[[2, 3]], 99);
    assert_eq!(b.view()[[1, 2]], 12);
    let z = SharedNdArray::<u8, Ix2>::zeros(CreateOptions::named(&n2).fortran_order(true), (2, 3))
        .unwrap();
    assert_eq!(z.view().strides(), &[1, 2]);
    drop(z);
    b.unlink().unwrap();
}

#[test]
fn zero_length_and_zero_dim_arrays_work() {
    let (n1, n2, n3) = (Name::new("empty"), Name::new("scalar"), Name::new("dyn0"));
    let a = SharedNdArray::<f64, Ix2>::zeros(&n1, (0, 3)).unwrap();
    assert!(a.is_empty());
    assert_eq!(a.view().shape(), &[0, 3]);
    assert_eq!(a.as_slice().unwrap().len(), 0);
    let s = SharedNdArray::<i64, ndarray::Ix0>::from_elem(&n2, (), 42).unwrap();
    assert_eq!(s.view()[[]], 42);
    let mut d = SharedNdArray::<u8, IxDyn>::zeros(&n3, IxDyn(&[4, 0, 2])).unwrap();
    d.persist();
    drop(d);
    // SAFETY: private test segment.
    let d = unsafe { ndshm::open_dyn(&n3) }.unwrap();
    assert_eq!((d.shape(), d.len()), (&[4, 0, 2][..], 0));
}

#[test]
fn persist_unlink_and_ownership() {
    let name = Name::new("persist");
    let mut a = SharedNdArray::<u8, Ix1>::zeros(&name, 10).unwrap();
    a.persist();
    assert!(!a.is_owner());
    drop(a);
    assert!(
        name.path().exists(),
        "persisted segments outlive their creator"
    );
    let info = ndshm::info(&name).unwrap();
    assert!(info.persistent);
    // SAFETY: private test segment.
    let mut b = unsafe { SharedNdArray::<u8, Ix1>::open(&name) }.unwrap();
    b.unlink().unwrap();
    assert!(!name.path().exists());
    assert_eq!(
        ndshm::unlink(&name).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(open_kind::<u8, Ix1>(&name), ErrorKind::NotFound);
}

#[test]
fn unlinked_segment_keeps_working_for_attached_handles() {
    let name = Name::new("unlinked");
    let mut a = SharedNdArray::<i64, Ix1>::zeros(&name, 100).unwrap();
    let child_name = name.to_string();
    let (parent_end, child_end) = ndshm::pipe().unwrap();
    // The child attaches and says so, the parent unlinks and says so, the child still
    // works on its mapping.
    let child = Process::spawn(move || -> Result<(), String> {
        // SAFETY: the child writes element 0 only; the parent reads after join.
        let mut b =
            unsafe { SharedNdArray::<i64, Ix1>::open(&child_name) }.map_err(|e| e.to_string())?;
        child_end.send_str("attached").map_err(|e| e.to_string())?;
        let msg = child_end
            .recv_bytes_timeout(DEADLINE)
            .map_err(|e| e.to_string())?;
        if msg != b"unlinked" || std::path::Path::new("/dev/shm").join(&child_name).exists() {
            return Err("the parent did not unlink the name".into());
        }
        b.view_mut()[0] = 77;
        Ok(())
    })
    .unwrap();
    assert_eq!(
        parent_end.recv_bytes_timeout(DEADLINE).unwrap(),
        b"attached"
    );
    ndshm::unlink(&name).unwrap();
    parent_end.send_str("unlinked").unwrap();
    child.join().unwrap();
    assert_eq!(a.view()[0], 77);
    a.view_mut()[1] = 1;
    assert_eq!(open_kind::<i64, Ix1>(&name), ErrorKind::NotFound);
    drop(a); // the owner's drop finds the name gone and leaves it alone
}

#[test]
fn read_only_and_prefault() {
    let name = Name::new("ro");
    let mut a = SharedNdArray::<f32, Ix1>::from_elem(&name, 5000, 2.5).unwrap();
    a.prefault().unwrap();
    a.persist();
    drop(a);
    // SAFETY: private test segment.
    let r = unsafe { SharedNdArray::<f32, Ix1>::open_read_only(&name) }.unwrap();
    r.prefault().unwrap();
    assert_eq!(r.view().sum(), 12500.0);
    assert!(!r.is_owner());
    drop(r);
    ndshm::unlink(&name).unwrap();
    let b =
        SharedNdArray::<f64, Ix1>::zeros(CreateOptions::named(&name).prefault(true), 4096).unwrap();
    assert_eq!(b.view().sum(), 0.0);
}

#[test]
fn segments_are_0600_unless_asked() {
    let (n1, n2) = (Name::new("mode"), Name::new("mode2"));
    let _a = SharedNdArray::<u8, Ix1>::zeros(&n1, 1).unwrap();
    let mode = std::fs::metadata(n1.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let _b = SharedNdArray::<u8, Ix1>::zeros(CreateOptions::named(&n2).mode(0o644), 1).unwrap();
    let mode = std::fs::metadata(n2.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
}

#[test]
fn names_are_checked_with_the_rule_broken() {
    let check = |name: &str, needle: &str| {
        let err = SharedNdArray::<u8, Ix1>::zeros(name, 1).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidName, "{name:?}");
        assert!(err.to_string().contains(needle), "{name:?}: {err}");
    };
    check("", "empty");
    check("/", "empty");
    check(&"x".repeat(256), "limit is 255");
    check("a/b", "'/'");
    check("//a", "'/'");
    check("a\0b", "NUL");
    check("..", "directory entry");
    check("../etc/passwd", "'/'");
    check(".ndshm-tmp-1", "reserves");
    // One leading '/' is accepted and ignored.
    let name = Name::new("slash");
    let a = SharedNdArray::<u8, Ix1>::zeros(&format!("/{}", name.as_str()), 1).unwrap();
    assert_eq!(a.name(), name.as_str());
    // 255 bytes is fine.
    let long = Name(format!(
        "{}-{}",
        name.as_str(),
        "y".repeat(255 - name.len() - 1)
    ));
    assert_eq!(long.len(), 255);
    SharedNdArray::<u8, Ix1>::zeros(&long, 1).unwrap();
}

#[test]
fn create_existing_and_open_missing() {
    let name = Name::new("exists");
    let _a = SharedNdArray::<u8, Ix1>::zeros(&name, 3).unwrap();
    let err = SharedNdArray::<u8, Ix1>::zeros(&name, 3).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert!(err.to_string().contains("ndshm rm"), "{err}");
    let missing = Name::new("missing");
    let err = unsafe { SharedNdArray::<u8, Ix1>::open(&missing) }.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains(missing.as_str()));
    // A file created by someone else under that name also blocks creation.
    let foreign = Name::new("foreign");
    write_file(&foreign, b"hello");
    assert_eq!(
        SharedNdArray::<u8, Ix1>::zeros(&foreign, 3)
            .unwrap_err()
            .kind(),
        ErrorKind::AlreadyExists
    );
    assert_eq!(std::fs::read(foreign.path()).unwrap(), b"hello");
}

#[test]
fn wrong_type_and_dimensionality_are_typed_errors() {
    let name = Name::new("types");
    let mut a = SharedNdArray::<f64, Ix2>::zeros(&name, (2, 3)).unwrap();
    a.persist();
    drop(a);
    let err = unsafe { SharedNdArray::<f32, Ix2>::open(&name) }.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TypeMismatch);
    assert!(
        err.to_string().contains("f8") && err.to_string().contains("f4"),
        "{err}"
    );
    let err = unsafe { SharedNdArray::<f64, Ix3>::open(&name) }.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DimensionMismatch);
    assert!(err.to_string().contains("2-dimensional"), "{err}");
    // IxDyn takes any dimensionality; open_dyn any type.
    let d = unsafe { SharedNdArray::<f64, IxDyn>::open(&name) }.unwrap();
    assert_eq!(d.shape(), &[2, 3]);
    drop(d);
    let d = unsafe { ndshm::open_dyn(&name) }.unwrap();
    assert_eq!(d.dtype(), DType::F64);
    assert_eq!(
        d.into_typed::<i64, Ix2>().unwrap_err().kind(),
        ErrorKind::TypeMismatch
    );
}

fn npy_bytes(descr: &str, shape: &str, data_len: usize) -> Vec<u8> {
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let mut text = dict.into_bytes();
    while (10 + text.len() + 1) % 64 != 0 {
        text.push(b' ');
    }
    text.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(text.len() as u16).to_le_bytes());
    out.extend_from_slice(&text);
    out.resize(out.len() + data_len, 0);
    out
}

#[test]
fn hostile_and_broken_segments_are_typed_errors() {
    let cases: Vec<(&str, Vec<u8>, ErrorKind)> = vec![
        ("zero-length", vec![], ErrorKind::Truncated),
        (
            "random",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
            ErrorKind::InvalidHeader,
        ),
        ("magic-only", b"\x93NUMPY".to_vec(), ErrorKind::Truncated),
        (
            "truncated-header",
            npy_bytes("<f8", "(4,)", 0)[..30].to_vec(),
            ErrorKind::Truncated,
        ),
        (
            "short-data",
            npy_bytes("<f8", "(4,)", 31),
            ErrorKind::Truncated,
        ),
        (
            "corrupt-dict",
            {
                let mut b = npy_bytes("<f8", "(4,)", 32);
                b[11] = b'#';
                b
            },
            ErrorKind::InvalidHeader,
        ),
        (
            "big-endian",
            npy_bytes(">f8", "(4,)", 32),
            ErrorKind::Unsupported,
        ),
        (
            "structured",
            {
                let dict = "{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (4,), }";
                let mut b = b"\x93NUMPY\x01\x00".to_vec();
                b.extend_from_slice(&(dict.len() as u16).to_le_bytes());
                b.extend_from_slice(dict.as_bytes());
                b
            },
            ErrorKind::Unsupported,
        ),
        (
            "overflow",
            npy_bytes("<f8", "(4611686018427387904, 4)", 0),
            ErrorKind::SizeOverflow,
        ),
        (
            "version-9",
            {
                let mut b = npy_bytes("<f8", "(4,)", 32);
                b[6] = 9;
                b
            },
            ErrorKind::Unsupported,
        ),
    ];
    for (tag, bytes, kind) in cases {
        let name = Name::new(tag);
        write_file(&name, &bytes);
        let err = unsafe { SharedNdArray::<f64, Ix1>::open(&name) }.unwrap_err();
        assert_eq!(err.kind(), kind, "{tag}: {err}");
        let err = unsafe { ndshm::open_dyn(&name) }.unwrap_err();
        assert_eq!(err.kind(), kind, "{tag} (dyn): {err}");
        assert!(ndshm::info(&name).is_err(), "{tag}");
    }
}

#[test]
fn corrupted_trailer_and_header_of_an_ndshm_segment() {
    let name = Name::new("corrupt");
    let mut a = SharedNdArray::<u32, Ix1>::zeros(&name, 16).unwrap();
    a.persist();
    drop(a);
    let good = std::fs::read(name.path()).unwrap();
    let len = good.len();
    // Trailer checksum broken.
    let mut bad = good.clone();
    bad[len - 192 + 17] ^= 0xff;
    std::fs::write(name.path(), &bad).unwrap();
    assert_eq!(open_kind::<u32, Ix1>(&name), ErrorKind::InvalidHeader);
    // Segment cut short: the trailer no longer ends it; what is left is a truncated npy.
    std::fs::write(name.path(), &good[..len - 100]).unwrap();
    assert_eq!(open_kind::<u32, Ix1>(&name), ErrorKind::Truncated);
    // Header claims more elements than the segment holds.
    let mut bad = good.clone();
    let at = bad.windows(5).position(|w| w == b"(16,)").unwrap();
    bad[at..at + 5].copy_from_slice(b"(99,)");
    std::fs::write(name.path(), &bad).unwrap();
    let err = unsafe { SharedNdArray::<u32, Ix1>::open(&name) }.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Truncated, "{err}");
    std::fs::write(name.path(), &good).unwrap();
    unsafe { SharedNdArray::<u32, Ix1>::open(&name) }.unwrap();
}

#[test]
fn shape_overflow_is_an_error() {
    let name = Name::new("overflow");
    let err = SharedNdArray::<f64, Ix2>::zeros(&name, (usize::MAX / 2, 3)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SizeOverflow);
    let err = SharedNdArray::<u8, Ix2>::zeros(&name, (usize::MAX / 2, 2)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SizeOverflow);
    assert!(!name.path().exists());
}

#[test]
fn no_room_in_dev_shm_is_an_error_at_create_time() {
    let name = Name::new("nospace");
    let st = nix::sys::statvfs::statvfs("/dev/shm").unwrap();
    let free = st.blocks_available() as usize * st.fragment_size() as usize;
    let err = SharedNdArray::<u8, Ix1>::zeros(&name, free + (1 << 30)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoSpace);
    let msg = err.to_string();
    assert!(msg.contains("bytes free"), "{msg}");
    assert!(
        msg.contains("64 MiB") && msg.contains("--shm-size"),
        "{msg}"
    );
    assert!(!name.path().exists());
    // No temporary segment was left behind either. Temporary names carry the creating
    // process's pid, so the attempt runs in a child of its own: the only temporary names
    // with its pid are those this attempt made (sibling tests create segments from the
    // parent's pid, and the forked child has a single thread).
    let (name, size) = (name.to_string(), free + (1 << 30));
    Process::spawn(move || -> Result<(), String> {
        let err = SharedNdArray::<u8, Ix1>::zeros(&name, size).unwrap_err();
        if err.kind() != ErrorKind::NoSpace {
            return Err(format!("expected NoSpace, got {err}"));
        }
        let ours = format!(".ndshm-tmp-{}-", std::process::id());
        let leftovers: Vec<_> = std::fs::read_dir("/dev/shm")
            .map_err(|e| e.to_string())?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&ours))
            .collect();
        if leftovers.is_empty() {
            Ok(())
        } else {
            Err(format!("temporary segments left behind: {leftovers:?}"))
        }
    })
    .unwrap()
    .join()
    .unwrap();
}

/// How many pages of `[start, start + len)` this process has mapped in its page tables
/// (the "present" bit of `/proc/self/pagemap`): what it touched through a mapping of
/// shared memory. Only this range counts, so sibling tests in other threads do not
/// disturb it. `start` and `len` are multiples of the page size.
fn pages_touched(start: *const u8, len: usize) -> usize {
    use std::os::unix::fs::FileExt;
    const PAGE: usize = 4096;
    assert!(start as usize % PAGE == 0 && len % PAGE == 0);
    let pagemap = std::fs::File::open("/proc/self/pagemap").unwrap();
    let mut entries = vec![0u8; len / PAGE * 8];
    pagemap
        .read_exact_at(&mut entries, (start as usize / PAGE * 8) as u64)
        .unwrap();
    entries
        .chunks_exact(8)
        .filter(|e| u64::from_le_bytes((*e).try_into().unwrap()) >> 63 == 1)
        .count()
}

const BIG: usize = 8 << 20;
const MIB2: usize = 2 << 20;

/// The start of the page-aligned mapping that holds `a`'s data (which starts in page 0).
fn mapping_start<T: ndshm::Element, D: ndarray::Dimension>(a: &SharedNdArray<T, D>) -> *const u8 {
    let data = a.as_slice_memory_order().as_ptr() as usize;
    (data & !4095) as *const u8
}

#[test]
fn opening_a_big_array_reads_its_header_with_pread_not_through_the_mapping() {
    let name = Name::new("hdr-pread");
    let mut a = SharedNdArray::<u8, Ix1>::zeros(&name, BIG).unwrap();
    a.persist();
    drop(a);
    // SAFETY: private test segment.
    let a = unsafe { SharedNdArray::<u8, Ix1>::open(&name) }.unwrap();
    assert_eq!(a.len(), BIG);
    // The header was read from the file: opening touched nothing of the first 2 MiB of
    // the mapping, where other processes may be writing the data (reading the header
    // through the mapping touched all of them).
    let touched = pages_touched(mapping_start(&a), MIB2);
    assert_eq!(touched, 0, "opening touched {touched} pages of the mapping");
    // The same for an array attached without its type.
    drop(a);
    // SAFETY: private test segment.
    let d = unsafe { ndshm::open_dyn(&name) }.unwrap();
    let typed = d.into_typed::<u8, Ix1>().unwrap();
    let touched = pages_touched(mapping_start(&typed), MIB2);
    assert_eq!(
        touched, 0,
        "open_dyn touched {touched} pages of the mapping"
    );
}

#[test]
fn open_raw_probes_for_a_header_with_pread_not_through_the_mapping() {
    let name = Name::new("raw-pread");
    write_file(&name, &vec![7u8; BIG]);
    // SAFETY: private test segment.
    let a = unsafe { SharedNdArray::<u8, Ix1>::open_raw(&name, BIG) }.unwrap();
    let touched = pages_touched(mapping_start(&a), MIB2);
    assert_eq!(
        touched, 0,
        "the magic probe touched {touched} pages of the mapping"
    );
}

#[test]
fn save_copies_the_data_with_pread_not_through_the_mapping() {
    let dir = TempDir::new("save-pread");
    let name = Name::new("save-pread");
    let a = SharedNdArray::<u8, Ix1>::zeros(&name, BIG).unwrap();
    // Creation wrote the header (page 0) and the trailer (the end); look in between.
    let middle = mapping_start(&a).wrapping_add(MIB2);
    let before = pages_touched(middle, BIG - 2 * MIB2);
    assert_eq!(before, 0, "creation touched {before} pages of the data");
    a.save(dir.join("a.npy")).unwrap();
    let after = pages_touched(middle, BIG - 2 * MIB2);
    assert_eq!(after, 0, "save touched {after} pages of the mapping");
    let back = Name::new("save-pread-back");
    let copy = SharedNdArray::<u8, Ix1>::load(&back, dir.join("a.npy")).unwrap();
    assert_eq!(copy.len(), BIG);
}

#[test]
fn save_of_a_segment_shrunk_behind_its_back_says_it_shrank() {
    let dir = TempDir::new("save-trunc");
    let names = [Name::new("save-trunc"), Name::new("save-trunc-dyn")];
    for name in &names {
        let mut a = SharedNdArray::<u64, Ix1>::zeros(name, 1 << 17).unwrap();
        a.persist();
    }
    let segs = [names[0].to_string(), names[1].to_string()];
    let out = dir.join("a.npy");
    // In a child: touching a shrunk mapping faults (SIGBUS in user code, EFAULT in a
    // write(2) from it), which must fail the test, not kill it.
    let child = Process::spawn(move || -> Result<(), String> {
        let shrink = |name: &str| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(std::path::Path::new("/dev/shm").join(name))
                .and_then(|f| f.set_len(4096))
                .map_err(|e| e.to_string())
        };
        // SAFETY: private test segments; the truncation breaks the `open` contract on
        // purpose, and `save` must still not fault.
        let a = unsafe { SharedNdArray::<u64, Ix1>::open(&segs[0]) }.map_err(|e| e.to_string())?;
        // SAFETY: as above.
        let d = unsafe { ndshm::open_dyn(&segs[1]) }.map_err(|e| e.to_string())?;
        shrink(&segs[0])?;
        shrink(&segs[1])?;
        for err in [a.save(&out).unwrap_err(), d.save(&out).unwrap_err()] {
            if err.kind() != ErrorKind::Truncated || !err.to_string().contains("shrank") {
                return Err(format!("expected a Truncated error, got {err}"));
            }
            if out.exists() {
                return Err("the partial .npy file was left behind".into());
            }
        }
        Ok(())
    })
    .unwrap();
    child.join().unwrap();
}

#[test]
fn open_raw_attaches_headerless_segments() {
    let name = Name::new("raw");
    let values = [1.0f64, 2.0, 3.0, 4.0, 5.0];
    write_file(&name, bytemuck::cast_slice(&values));
    let mut a = unsafe { SharedNdArray::<f64, Ix1>::open_raw(&name, 5) }.unwrap();
    assert_eq!(a.as_slice().unwrap(), &values);
    a.view_mut().mapv_inplace(|x| x * 2.0);
    drop(a);
    let back: Vec<f64> = std::fs::read(name.path())
        .unwrap()
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(back, [2.0, 4.0, 6.0, 8.0, 10.0]);
    let err = unsafe { SharedNdArray::<f64, Ix1>::open_raw(&name, 6) }.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Truncated);
    // A segment with a header must be opened with open().
    let headed = Name::new("raw-headed");
    let _h = SharedNdArray::<f64, Ix1>::zeros(&headed, 5).unwrap();
    let other = Name::new("raw-npy");
    write_file(&other, &npy_bytes("<f8", "(5,)", 40));
    let err = unsafe { SharedNdArray::<f64, Ix1>::open_raw(&other, 5) }.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidHeader);
}

#[test]
fn plain_npy_without_trailer_opens_as_an_array() {
    let name = Name::new("plain-npy");
    let mut bytes = npy_bytes("<i4", "(2, 3)", 0);
    for v in 0..6i32 {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    write_file(&name, &bytes);
    let a = unsafe { SharedNdArray::<i32, Ix2>::open(&name) }.unwrap();
    assert_eq!(a.view(), array![[0, 1, 2], [3, 4, 5]]);
    assert_eq!(a.segment_id(), 0);
    let info = ndshm::info(&name).unwrap();
    assert_eq!(info.kind, None);
    assert_eq!(info.shape, Some(vec![2, 3]));
}

#[test]
fn save_and_load_npy_files() {
    let dir = TempDir::new("npy");
    let (n1, n2, n3) = (Name::new("save"), Name::new("load"), Name::new("load-bad"));
    let src = Array2::from_shape_fn((5, 7), |(i, j)| (i * 7 + j) as f64 * 0.5);
    let a = SharedNdArray::from_array(&n1, &src).unwrap();
    let path = dir.join("a.npy");
    a.save(&path).unwrap();
    let b = SharedNdArray::<f64, Ix2>::load(&n2, &path).unwrap();
    assert!(b.is_owner());
    assert_eq!(b.view(), src);
    // A file of another type is refused before anything is created.
    let err = SharedNdArray::<f32, Ix2>::load(&n3, &path).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TypeMismatch);
    assert!(!n3.path().exists());
    // A truncated file is an error, and leaves no segment.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(dir.join("short.npy"), &bytes[..bytes.len() - 8]).unwrap();
    let err = SharedNdArray::<f64, Ix2>::load(&n3, dir.join("short.npy")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Truncated);
    assert!(!n3.path().exists());
    let err = SharedNdArray::<f64, Ix2>::load(&n3, dir.join("missing.npy")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[test]
fn permission_denied_in_an_unprivileged_child() {
    let name = Name::new("perm");
    let _a = SharedNdArray::<u8, Ix1>::zeros(&name, 8).unwrap();
    let child_name = name.to_string();
    let child = Process::spawn(move || -> Result<(), String> {
        nix::unistd::setgid(nix::unistd::Gid::from_raw(65534)).map_err(|e| e.to_string())?;
        nix::unistd::setuid(nix::unistd::Uid::from_raw(65534)).map_err(|e| e.to_string())?;
        // SAFETY: the open is expected to fail; nothing is viewed.
        match unsafe { SharedNdArray::<u8, Ix1>::open(&child_name) } {
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                let msg = e.to_string();
                if msg.contains("uid 0") && msg.contains("mode 600") {
                    Ok(())
                } else {
                    Err(format!("message lacks owner/mode: {msg}"))
                }
            }
            Err(e) => Err(format!("wrong error: {e}")),
            Ok(_) => Err("an unprivileged user opened a 0600 root segment".into()),
        }
    })
    .unwrap();
    child.join().unwrap();
}

#[test]
fn list_and_info_describe_segments() {
    let name = Name::new("list");
    let _a = SharedNdArray::<i16, Ix2>::zeros(&name, (4, 5)).unwrap();
    let info = ndshm::info(&name).unwrap();
    assert_eq!(info.kind, Some(ndshm::SegmentKind::Array));
    assert_eq!(info.dtype, Some(DType::I16));
    assert_eq!(info.layout(), "C");
    assert_eq!(info.owner_pid, std::process::id() as i32);
    assert!(info.owner_alive && !info.persistent && !info.is_stale());
    assert!(ndshm::list()
        .unwrap()
        .iter()
        .any(|i| i.name == name.as_str()));
}

/// Read-only handles give only `&` views, which may alias each other: a program may open a
/// segment read-only as often as it likes; each handle unmaps on its own drop.
#[test]
fn read_only_handles_may_be_opened_twice_in_one_process() {
    let name = Name::new("ro-twice");
    let mut a = SharedNdArray::<u32, Ix1>::from_elem(&name, 4, 9).unwrap();
    a.persist();
    drop(a);
    // SAFETY: test segments are private to the test; nobody writes this one.
    let r1 = unsafe { SharedNdArray::<u32, Ix1>::open_read_only(&name) }.unwrap();
    // SAFETY: as above.
    let r2 = unsafe { SharedNdArray::<u32, Ix1>::open_read_only(&name) }.unwrap();
    // SAFETY: as above.
    let d = unsafe { ndshm::DynSharedArray::open_read_only(&name) }.unwrap();
    assert_eq!(r1.view(), r2.view());
    assert_eq!(r1.as_slice().unwrap(), &[9, 9, 9, 9]);
    assert_eq!(d.shape(), &[4]);
    drop(r1);
    assert_eq!(
        r2.view().sum(),
        36,
        "the other handle's mapping outlives the first"
    );
    // While read-only handles live, a read-write one would alias their views.
    assert_eq!(open_kind::<u32, Ix1>(&name), ErrorKind::AlreadyOpen);
    drop((r2, d));
    // The last reader gone, a writer may come.
    // SAFETY: as above.
    let mut w = unsafe { SharedNdArray::<u32, Ix1>::open(&name) }.unwrap();
    w.unlink().unwrap();
}

/// A read-write handle may hand out `&mut` views: no other handle of the segment, read-only
/// or read-write, may exist beside it in this process, whichever came first.
#[test]
fn a_mutable_handle_is_still_refused_while_another_exists() {
    let name = Name::new("rw-refused");
    let a = SharedNdArray::<f32, Ix2>::zeros(&name, (2, 2)).unwrap();
    assert_eq!(open_kind::<f32, Ix2>(&name), ErrorKind::AlreadyOpen);
    // SAFETY: test segments are private to the test.
    let ro = unsafe { SharedNdArray::<f32, Ix2>::open_read_only(&name) };
    assert_eq!(ro.map(drop).unwrap_err().kind(), ErrorKind::AlreadyOpen);
    // SAFETY: as above.
    let dy = unsafe { ndshm::open_dyn(&name) };
    assert_eq!(dy.map(drop).unwrap_err().kind(), ErrorKind::AlreadyOpen);
    // SAFETY: as above.
    let dro = unsafe { ndshm::DynSharedArray::open_read_only(&name) };
    assert_eq!(dro.map(drop).unwrap_err().kind(), ErrorKind::AlreadyOpen);
    drop(a);
    assert!(!name.path().exists());
}
