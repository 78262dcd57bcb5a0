//! libFuzzer target: arbitrary bytes as a segment, opened through the public API.
//!
//! ```text
//! cargo +nightly fuzz run open_segment -- -max_total_time=60
//! ```
//! Every outcome must be `Ok` or a typed error of an expected kind; a panic, an
//! out-of-bounds access (SIGSEGV/SIGBUS) or a hang is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ndarray::IxDyn;
use ndshm::{ErrorKind, SharedNdArray};

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

fn check<T>(what: &str, r: ndshm::Result<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            assert!(allowed(e.kind()), "{what}: unexpected {e}");
            None
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let name = format!("ndshm-fuzz-{}", std::process::id());
    let path = format!("/dev/shm/{name}");
    std::fs::write(&path, data).unwrap();
    let info = check("info", ndshm::info(&name));
    // SAFETY: only this process knows the name, and it does not write the file while a
    // handle is open.
    if let Some(d) = check("open_dyn", unsafe { ndshm::open_dyn(&name) }) {
        let info = info.expect("info refused what open_dyn accepted");
        assert!((d.nbytes() as u64) <= info.bytes);
    }
    // SAFETY: as above.
    if let Some(a) = check("open<u8>", unsafe { SharedNdArray::<u8, IxDyn>::open(&name) }) {
        std::hint::black_box(a.view().iter().fold(0u8, |x, &b| x ^ b));
    }
    // SAFETY: as above.
    if let Some(a) = check("open<f64>", unsafe {
        SharedNdArray::<f64, IxDyn>::open_read_only(&name)
    }) {
        std::hint::black_box(a.view().sum());
    }
    let _ = std::fs::remove_file(&path);
});
