//! Hostile segments: arbitrary bytes, near-valid `.npy` headers, valid segments of every
//! element type, shape and order, and mutations of valid ndshm segments (truncations, bit
//! flips, overwritten windows) are written to `/dev/shm/<name>` and opened through the
//! public API (`info`, `open_dyn` + `into_typed` + reading every element, `open`,
//! `open_read_only`). Never a panic, a hang or an out-of-bounds access (which would kill
//! the test process with SIGSEGV/SIGBUS); always `Ok` for a valid segment; otherwise a
//! typed error of an expected kind.
//!
//! Runs on stable in `cargo test`; `NDSHM_FUZZ_SCALE=10 cargo test --test fuzz_header`
//! runs ten times as many inputs.

use ndarray::IxDyn;
use ndshm::{CreateOptions, DType, DynSharedArray, ErrorKind, SharedNdArray};
use num_complex::Complex;
use proptest::prelude::*;

thread_local! {
    /// Inputs opened by the test running on this thread (each test has its own thread).
    static INPUTS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// Of those, how many opened as arrays.
    static ACCEPTED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn cases(base: u32) -> ProptestConfig {
    let scale: u32 = std::env::var("NDSHM_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    ProptestConfig {
        cases: base * scale.max(1),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn shm_path(name: &str) -> String {
    format!("/dev/shm/{name}")
}

/// One file name per test function (proptest runs a function's cases one after another).
fn name(tag: &str) -> String {
    format!("fuzz-{}-{tag}", std::process::id())
}

/// Removes the file when the test function ends, whatever happens.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(shm_path(&self.0));
    }
}

fn allowed(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::InvalidHeader
            | ErrorKind::Truncated
            | ErrorKind::Unsupported
            | ErrorKind::SizeOverflow
            | ErrorKind::KindMismatch
            | ErrorKind::TypeMismatch
            | ErrorKind::DimensionMismatch
            | ErrorKind::ShapeMismatch
    )
}

/// Reads every element of an attached array (through its view and its memory-order slice):
/// a header that lied about the size would fault here.
fn touch(d: DynSharedArray) -> ndshm::Result<(DType, Vec<usize>, bool)> {
    let meta = (d.dtype(), d.shape().to_vec(), d.is_fortran_order());
    macro_rules! read_all {
        ($t:ty) => {{
            let a = d.into_typed::<$t, IxDyn>()?;
            assert_eq!(a.view().iter().count(), a.len());
            let bytes: &[u8] = bytemuck::cast_slice(a.as_slice_memory_order());
            std::hint::black_box(bytes.iter().fold(0u8, |x, &b| x ^ b));
        }};
    }
    match meta.0 {
        DType::I8 => read_all!(i8),
        DType::U8 => read_all!(u8),
        DType::I16 => read_all!(i16),
        DType::U16 => read_all!(u16),
        DType::I32 => read_all!(i32),
        DType::U32 => read_all!(u32),
        DType::I64 => read_all!(i64),
        DType::U64 => read_all!(u64),
        DType::F32 => read_all!(f32),
        DType::F64 => read_all!(f64),
        DType::C64 => read_all!(Complex<f32>),
        DType::C128 => read_all!(Complex<f64>),
        other => panic!("new dtype {other:?}: extend this test"),
    }
    Ok(meta)
}

/// Writes `bytes` as segment `name` and opens it every public way. Returns what
/// `open_dyn` saw, or its error kind; panics (fails the case) on an untyped outcome or on
/// disagreement between the ways.
fn probe(name: &str, bytes: &[u8]) -> Result<(DType, Vec<usize>, bool), ErrorKind> {
    INPUTS.with(|c| c.set(c.get() + 1));
    std::fs::write(shm_path(name), bytes).unwrap();
    let info = ndshm::info(name);
    // SAFETY: no other process knows this name; nobody writes the file while it is open.
    let dynamic = unsafe { ndshm::open_dyn(name) }.and_then(touch);
    // SAFETY: as above.
    let typed = unsafe { SharedNdArray::<f64, IxDyn>::open(name) }.map(|a| a.view().sum());
    // SAFETY: as above.
    let read_only =
        unsafe { SharedNdArray::<u8, IxDyn>::open_read_only(name) }.map(|a| a.view().len());
    for (what, kind) in [
        ("info", info.as_ref().err().map(|e| e.kind())),
        ("open_dyn", dynamic.as_ref().err().map(|e| e.kind())),
        ("open<f64>", typed.as_ref().err().map(|e| e.kind())),
        (
            "open_read_only<u8>",
            read_only.as_ref().err().map(|e| e.kind()),
        ),
    ] {
        if let Some(kind) = kind {
            assert!(allowed(kind), "{what}: unexpected error kind {kind:?}");
        }
    }
    match (&info, &dynamic) {
        (Ok(i), Ok((dtype, shape, fortran))) => {
            assert_eq!(i.dtype, Some(*dtype));
            assert_eq!(i.shape.as_deref(), Some(&shape[..]));
            assert_eq!(i.fortran_order, *fortran);
            let need = shape.iter().product::<usize>() * dtype.size();
            assert!(
                need as u64 <= i.bytes,
                "{need} bytes of data in a {}-byte file",
                i.bytes
            );
        }
        (Err(_), Ok(_)) => panic!("info refused what open_dyn accepted"),
        _ => {}
    }
    if let (Ok((dtype, _, _)), Err(e)) = (&dynamic, &typed) {
        if *dtype == DType::F64 {
            panic!("open<f64> refused an f64 array that open_dyn accepted: {e}");
        }
    }
    if dynamic.is_ok() {
        ACCEPTED.with(|c| c.set(c.get() + 1));
    }
    dynamic.map_err(|e| e.kind())
}

fn dtype_strategy() -> impl Strategy<Value = DType> {
    prop::sample::select(DType::ALL.to_vec())
}

fn shape_strategy() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0usize..7, 0..5)
}

fn shape_text(shape: &[usize]) -> String {
    match shape {
        [] => "()".to_string(),
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A `.npy` file as numpy (or another writer) lays it out: the three keys in `order`,
/// version 1 or 2, padded so that the data is 64-byte aligned, then `data`.
fn npy_file(
    descr: &str,
    fortran: bool,
    shape: &[usize],
    order: &[usize],
    version: u8,
    data: &[u8],
) -> Vec<u8> {
    let entries = [
        format!("'descr': '{descr}'"),
        format!(
            "'fortran_order': {}",
            if fortran { "True" } else { "False" }
        ),
        format!("'shape': {}", shape_text(shape)),
    ];
    let mut dict = String::from("{");
    for &i in order {
        dict.push_str(&entries[i]);
        dict.push_str(", ");
    }
    dict.push('}');
    let prefix = if version == 1 { 10 } else { 12 };
    let total = (prefix + dict.len() + 1).div_ceil(64) * 64;
    let text_len = total - prefix;
    let mut out = b"\x93NUMPY".to_vec();
    out.push(version);
    out.push(0);
    if version == 1 {
        out.extend_from_slice(&(text_len as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(text_len as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    out.extend_from_slice(data);
    out
}

/// A valid ndshm segment (header, data, trailer) made by the crate itself.
fn ndshm_segment(name: &str, dtype: DType, shape: &[usize], fortran: bool) -> Vec<u8> {
    let dim = IxDyn(shape);
    macro_rules! make {
        ($t:ty) => {
            SharedNdArray::<$t, IxDyn>::zeros(
                CreateOptions::named(name).fortran_order(fortran),
                dim,
            )
            .map(|a| {
                let bytes = std::fs::read(shm_path(name)).unwrap();
                drop(a); // unlinks
                bytes
            })
        };
    }
    match dtype {
        DType::I8 => make!(i8),
        DType::U8 => make!(u8),
        DType::I16 => make!(i16),
        DType::U16 => make!(u16),
        DType::I32 => make!(i32),
        DType::U32 => make!(u32),
        DType::I64 => make!(i64),
        DType::U64 => make!(u64),
        DType::F32 => make!(f32),
        DType::F64 => make!(f64),
        DType::C64 => make!(Complex<f32>),
        DType::C128 => make!(Complex<f64>),
        other => panic!("new dtype {other:?}: extend this test"),
    }
    .unwrap()
}

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(usize),
    Flip(Vec<(usize, u8)>),
    Overwrite(usize, Vec<u8>),
    Extend(Vec<u8>),
}

fn mutation_strategy() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        prop::collection::vec((any::<usize>(), 0u8..8), 1..8).prop_map(Mutation::Flip),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(at, b)| Mutation::Overwrite(at, b)),
        prop::collection::vec(any::<u8>(), 1..200).prop_map(Mutation::Extend),
    ]
}

fn mutate(mut bytes: Vec<u8>, m: &Mutation) -> Vec<u8> {
    let len = bytes.len().max(1);
    match m {
        Mutation::Truncate(n) => bytes.truncate(n % len),
        Mutation::Flip(flips) => {
            for &(at, bit) in flips {
                let at = at % len;
                if at < bytes.len() {
                    bytes[at] ^= 1 << bit;
                }
            }
        }
        Mutation::Overwrite(at, b) => {
            let at = at % len;
            for (i, &x) in b.iter().enumerate() {
                if let Some(slot) = bytes.get_mut(at + i) {
                    *slot = x;
                }
            }
        }
        Mutation::Extend(b) => bytes.extend_from_slice(b),
    }
    bytes
}

fn report(test: &str) {
    eprintln!(
        "{test}: {} inputs opened, {} accepted as arrays, the rest typed errors",
        INPUTS.with(|c| c.get()),
        ACCEPTED.with(|c| c.get())
    );
}

#[test]
fn arbitrary_bytes_are_typed_errors() {
    let n = name("arbitrary");
    let _c = Cleanup(n.clone());
    let magic_prefixed = prop::collection::vec(any::<u8>(), 0..300).prop_map(|mut v| {
        let mut out = b"\x93NUMPY".to_vec();
        out.append(&mut v);
        out
    });
    let strategy = prop_oneof![prop::collection::vec(any::<u8>(), 0..700), magic_prefixed,];
    proptest!(cases(5000), |(bytes in strategy)| {
        // Random bytes may still form a valid npy header by chance; then Ok is right.
        let _ = probe(&n, &bytes);
    });
    report("arbitrary bytes");
}

#[test]
fn near_valid_header_text_is_typed_errors() {
    let n = name("text");
    let _c = Cleanup(n.clone());
    // Dictionaries that look like numpy's, with random descr, order and shape text.
    let text = "\\{('(descr|shape|fortran_order|x)': ?('[<>|=]?[a-zA-Z]{0,2}[0-9]{0,3}'|True|False|\\([0-9, -]{0,24}\\)|[0-9]{1,25}|\\[\\]|None), ?){0,4}\\} {0,70}\n?";
    let strategy = (text, 1u8..4, prop::collection::vec(any::<u8>(), 0..400));
    proptest!(cases(5000), |((dict, version, data) in strategy)| {
        let prefix = if version == 1 { 10 } else { 12 };
        let mut bytes = b"\x93NUMPY".to_vec();
        bytes.push(version);
        bytes.push(0);
        if version == 1 {
            bytes.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        } else {
            bytes.extend_from_slice(&(dict.len() as u32).to_le_bytes());
        }
        bytes.extend_from_slice(dict.as_bytes());
        prop_assert_eq!(bytes.len(), prefix + dict.len());
        bytes.extend_from_slice(&data);
        let _ = probe(&n, &bytes);
    });
    report("near-valid header text");
}

#[test]
fn valid_npy_files_always_open() {
    let n = name("valid");
    let _c = Cleanup(n.clone());
    let order = Just(vec![0usize, 1, 2]).prop_shuffle();
    let strategy = (
        dtype_strategy(),
        shape_strategy(),
        any::<bool>(),
        order,
        prop::sample::select(vec![1u8, 2, 3]),
        any::<u64>(),
        mutation_strategy(),
    );
    proptest!(cases(2000), |((dtype, shape, fortran, order, version, seed, mutation) in strategy)| {
        // A plain .npy (no trailer) must be exactly header + data, as numpy writes it.
        let bytes_needed = shape.iter().product::<usize>() * dtype.size();
        let data: Vec<u8> = (0..bytes_needed).map(|i| (seed >> (i % 8 * 8)) as u8 ^ i as u8).collect();
        let descr = if seed % 3 == 0 { dtype.descr().replace('<', "=") } else { dtype.descr().to_string() };
        let bytes = npy_file(&descr, fortran, &shape, &order, version, &data);
        match probe(&n, &bytes) {
            Ok((d, s, f)) => {
                prop_assert_eq!(d, dtype);
                prop_assert_eq!(s, shape);
                prop_assert_eq!(f, fortran);
            }
            Err(kind) => prop_assert!(false, "valid file refused: {:?}", kind),
        }
        let _ = probe(&n, &mutate(bytes, &mutation));
    });
    report("valid npy files + mutations");
}

#[test]
fn extreme_shapes_are_typed_errors_or_exact() {
    // Axis lengths at the limits, with and without a zero axis: (2**63, 0) has no element
    // but no ndarray view either (found by the libFuzzer target; now SizeOverflow).
    let n = name("extreme");
    let _c = Cleanup(n.clone());
    let dim = prop_oneof![
        0usize..4,
        Just(0usize),
        Just(isize::MAX as usize),
        Just(isize::MAX as usize + 1),
        Just(usize::MAX),
        (0u32..64).prop_map(|b| 1usize << b),
        any::<usize>(),
    ];
    let strategy = (
        dtype_strategy(),
        prop::collection::vec(dim, 0..5),
        any::<bool>(),
    );
    proptest!(cases(2000), |((dtype, shape, fortran) in strategy)| {
        let need = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|c| c.checked_mul(dtype.size()));
        let data = vec![0u8; need.unwrap_or(0).min(4096)];
        let bytes = npy_file(dtype.descr(), fortran, &shape, &[0, 1, 2], 1, &data);
        match probe(&n, &bytes) {
            Ok((d, s, f)) => {
                prop_assert_eq!((d, &s, f), (dtype, &shape, fortran));
                prop_assert_eq!(need, Some(data.len()));
            }
            Err(kind) => prop_assert!(
                matches!(kind, ErrorKind::SizeOverflow | ErrorKind::Truncated),
                "{:?}",
                kind
            ),
        }
    });
    report("extreme shapes");
    // The creating side refuses the same shapes.
    let huge = isize::MAX as usize + 1;
    let err = SharedNdArray::<f64, IxDyn>::zeros(&n, IxDyn(&[huge, 0])).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SizeOverflow);
}

#[test]
fn valid_ndshm_segments_open_and_their_mutations_are_typed_errors() {
    let (src, n) = (name("src"), name("mutated"));
    let _c = (Cleanup(src.clone()), Cleanup(n.clone()));
    let strategy = (
        dtype_strategy(),
        shape_strategy(),
        any::<bool>(),
        prop::collection::vec(mutation_strategy(), 1..3),
    );
    proptest!(cases(2000), |((dtype, shape, fortran, mutations) in strategy)| {
        let valid = ndshm_segment(&src, dtype, &shape, fortran);
        match probe(&n, &valid) {
            Ok((d, s, f)) => {
                prop_assert_eq!(d, dtype);
                prop_assert_eq!(&s, &shape);
                prop_assert_eq!(f, fortran);
            }
            Err(kind) => prop_assert!(false, "valid segment refused: {:?}", kind),
        }
        let mut bytes = valid;
        for m in &mutations {
            bytes = mutate(bytes, m);
        }
        let _ = probe(&n, &bytes);
    });
    report("valid ndshm segments + mutations");
}
