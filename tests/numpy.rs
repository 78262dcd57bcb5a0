//! Round trips with numpy, with no code of ours on the Python side.
//!
//! Python comes from `NDSHM_PYTHON` (default `python3`). Without numpy each test prints
//! `SKIPPED <test>: ...` on the real stderr (visible in `cargo test` output, which captures
//! only `print!`/`eprint!`) and passes without checking anything, unless
//! `NDSHM_REQUIRE_NUMPY=1` (set by CI, which installs numpy in a virtualenv), which turns a
//! missing numpy into a failure.

mod common;

use std::io::Write;
use std::process::Command;

use common::{Name, TempDir};
use ndarray::{Array2, Ix1, Ix2};
use ndshm::{CreateOptions, DType, SharedNdArray};

/// The Python that has numpy, or `None` after reporting test `test` as skipped.
fn python(test: &str) -> Option<String> {
    let py = std::env::var("NDSHM_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let ok = Command::new(&py)
        .args(["-c", "import numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(py);
    }
    if std::env::var("NDSHM_REQUIRE_NUMPY").is_ok_and(|v| v == "1") {
        panic!("NDSHM_REQUIRE_NUMPY=1 but `{py} -c 'import numpy'` fails: install numpy");
    }
    // Straight to the process's stderr: the harness would swallow `eprintln!` of a test
    // that passes, and a skip must not read as a plain `ok`.
    let _ = writeln!(
        std::io::stderr().lock(),
        "SKIPPED {test}: no numpy for {py} (install numpy, or point NDSHM_PYTHON at a python \
         that has it; NDSHM_REQUIRE_NUMPY=1 makes this a failure)"
    );
    None
}

/// Runs `script` with `args`; panics with Python's stderr on failure; returns stdout.
fn run_py(py: &str, script: &str, args: &[&str]) -> String {
    let out = Command::new(py)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn numpy_memmaps_an_ndshm_segment_and_writes_go_both_ways() {
    let Some(py) = python("numpy_memmaps_an_ndshm_segment_and_writes_go_both_ways") else {
        return;
    };
    let name = Name::new("np-rw");
    let src = Array2::from_shape_fn((1000, 3), |(i, j)| (i * 3 + j) as f64);
    let a = SharedNdArray::from_array(&name, &src).unwrap();
    let script = r#"
import sys, numpy as np
a = np.load("/dev/shm/" + sys.argv[1], mmap_mode="r+")
assert a.dtype == np.float64 and a.shape == (1000, 3), (a.dtype, a.shape)
assert (a == np.arange(3000, dtype=np.float64).reshape(1000, 3)).all()
a[1, 2] = 42.0
a[999, :] *= -1
a.flush()
print(a.sum())
"#;
    let out = run_py(&py, script, &[&name]);
    assert_eq!(a.view()[[1, 2]], 42.0);
    assert_eq!(a.view()[[999, 0]], -2997.0);
    let expected: f64 = a.view().sum();
    assert_eq!(out.trim().parse::<f64>().unwrap(), expected);
}

#[test]
fn every_element_type_has_numpys_dtype() {
    let Some(py) = python("every_element_type_has_numpys_dtype") else {
        return;
    };
    let script = r#"
import sys, numpy as np
for name, descr in zip(sys.argv[1::2], sys.argv[2::2]):
    a = np.load("/dev/shm/" + name, mmap_mode="r")
    assert a.dtype == np.dtype(descr), (name, a.dtype, descr)
    assert a.shape == (2, 3), a.shape
    assert (a.ravel().real == np.arange(6)).all(), a
print("ok")
"#;
    macro_rules! make {
        ($($t:ty),*) => {{
            let mut keep = Vec::new();
            $(
                let name = Name::new(<$t as ndshm::Element>::DTYPE.short_name());
                let src = Array2::from_shape_fn((2, 3), |(i, j)| {
                    <$t as ndshm::Element>::from_f64((i * 3 + j) as f64)
                });
                let a = SharedNdArray::from_array(&name, &src).unwrap();
                keep.push((name, Box::new(a) as Box<dyn std::any::Any>, <$t as ndshm::Element>::DTYPE));
            )*
            keep
        }};
    }
    let keep = make!(
        i8,
        u8,
        i16,
        u16,
        i32,
        u32,
        i64,
        u64,
        f32,
        f64,
        num_complex::Complex32,
        num_complex::Complex64
    );
    assert_eq!(keep.len(), DType::ALL.len());
    let mut args = Vec::new();
    for (name, _, dtype) in &keep {
        args.push(name.to_string());
        args.push(dtype.descr().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(run_py(&py, script, &args).trim(), "ok");
}

#[test]
fn numpy_written_files_load_and_open() {
    let Some(py) = python("numpy_written_files_load_and_open") else {
        return;
    };
    let dir = TempDir::new("np-files");
    let (c_name, f_name, direct) = (Name::new("np-c"), Name::new("np-f"), Name::new("np-direct"));
    let script = r#"
import sys, numpy as np
d = sys.argv[1]
np.save(d + "/c.npy", np.arange(12, dtype="<i4").reshape(3, 4))
np.save(d + "/f.npy", np.asfortranarray(np.arange(12, dtype="<f4").reshape(3, 4)))
with open("/dev/shm/" + sys.argv[2], "wb") as f:  # np.save would append ".npy"
    np.save(f, np.arange(5, dtype=np.float64) ** 2)
"#;
    run_py(&py, script, &[dir.0.to_str().unwrap(), &direct]);
    let c = SharedNdArray::<i32, Ix2>::load(&c_name, dir.join("c.npy")).unwrap();
    assert_eq!(
        c.view(),
        Array2::from_shape_fn((3, 4), |(i, j)| (i * 4 + j) as i32)
    );
    let f = SharedNdArray::<f32, Ix2>::load(&f_name, dir.join("f.npy")).unwrap();
    assert!(f.is_fortran_order());
    assert_eq!(
        f.view(),
        Array2::from_shape_fn((3, 4), |(i, j)| (i * 4 + j) as f32)
    );
    // np.save straight into /dev/shm: a plain .npy, no trailer, still an array.
    // SAFETY: private test segment.
    let d = unsafe { SharedNdArray::<f64, Ix1>::open(&direct) }.unwrap();
    assert_eq!(d.as_slice().unwrap(), &[0.0, 1.0, 4.0, 9.0, 16.0]);
    // And the other way: ndshm saves, numpy loads.
    f.save(dir.join("back.npy")).unwrap();
    let out = run_py(
        &py,
        "import sys, numpy as np; a = np.load(sys.argv[1]); print(a.flags.f_contiguous, a[2, 3])",
        &[dir.join("back.npy").to_str().unwrap()],
    );
    assert_eq!(out.trim(), "True 11.0");
}

#[test]
fn python_shared_memory_and_open_raw_like_the_seed() {
    let Some(py) = python("python_shared_memory_and_open_raw_like_the_seed") else {
        return;
    };
    // Python creates the segment (SharedMemory(create=True), no header) and passes name,
    // shape and dtype out of band, as in the seed's worker pattern; Rust squares a slice.
    let name = Name::new("py-raw");
    let script = r#"
import sys
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory
import numpy as np
arr = np.arange(10, dtype=np.float64)
shm = SharedMemory(name=sys.argv[1], create=True, size=arr.nbytes)
np.ndarray(arr.shape, dtype=arr.dtype, buffer=shm.buf)[:] = arr
# Hand the segment over to Rust: stop Python's tracker from unlinking it at exit.
resource_tracker.unregister(shm._name, "shared_memory")
shm.close()
"#;
    run_py(&py, script, &[&name]);
    {
        // SAFETY: Python has exited; nobody else writes the segment.
        let mut a = unsafe { SharedNdArray::<f64, Ix1>::open_raw(&name, 10) }.unwrap();
        a.view_mut()
            .slice_mut(ndarray::s![2..6])
            .mapv_inplace(|x| x * x);
    }
    let script = r#"
import sys
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory
import numpy as np
shm = SharedMemory(name=sys.argv[1])
resource_tracker.unregister(shm._name, "shared_memory")
print(np.ndarray((10,), dtype=np.float64, buffer=shm.buf).tolist())
shm.close()
"#;
    let out = run_py(&py, script, &[&name]);
    assert_eq!(
        out.trim(),
        "[0.0, 1.0, 4.0, 9.0, 16.0, 25.0, 6.0, 7.0, 8.0, 9.0]"
    );
}

#[test]
fn fortran_segment_made_by_ndshm_reads_in_numpy() {
    let Some(py) = python("fortran_segment_made_by_ndshm_reads_in_numpy") else {
        return;
    };
    let name = Name::new("np-fortran");
    let src = Array2::from_shape_fn((3, 2), |(i, j)| (i * 2 + j) as i64);
    let _a =
        SharedNdArray::from_array(CreateOptions::named(&name).fortran_order(true), &src).unwrap();
    let out = run_py(
        &py,
        "import sys, numpy as np; a = np.load('/dev/shm/' + sys.argv[1], mmap_mode='r'); print(a.flags.f_contiguous, a.tolist())",
        &[&name],
    );
    assert_eq!(out.trim(), "True [[0, 1], [2, 3], [4, 5]]");
}
