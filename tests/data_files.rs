//! The numpy-written files under data/ go into shared memory in one call each.

mod common;

use common::Name;
use ndarray::{Array2, Axis, Ix1, Ix2};
use ndshm::{DType, DynSharedArray, SharedNdArray};

fn data(file: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(file)
}

#[test]
fn weather_loads_typed() {
    let name = Name::new("data-weather");
    let a = SharedNdArray::<f64, Ix2>::load(&name, data("weather.npy")).unwrap();
    assert_eq!(a.shape(), &[1000, 3]);
    let means = a.view().mean_axis(Axis(0)).unwrap();
    assert_eq!(means.to_vec(), vec![19.5, 49.5, 1024.5]);
}

#[test]
fn fortran_file_keeps_its_layout() {
    let name = Name::new("data-fortran");
    let a = SharedNdArray::<i32, Ix2>::load(&name, data("counts_fortran.npy")).unwrap();
    assert!(a.is_fortran_order());
    assert_eq!(
        a.view(),
        Array2::from_shape_fn((4, 6), |(i, j)| (i * 6 + j) as i32)
    );
}

#[test]
fn every_data_file_loads_untyped() {
    let mut seen = 0;
    for entry in std::fs::read_dir(data("")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "npy") {
            let name = Name::new("data-any");
            let a = DynSharedArray::load(&name, &path).unwrap();
            assert!(a.is_owner());
            assert!(!a.is_empty(), "{}", path.display());
            seen += 1;
        }
    }
    assert_eq!(seen, 3);
    let name = Name::new("data-f32");
    let s = SharedNdArray::<f32, Ix1>::load(&name, data("signal_f32.npy")).unwrap();
    assert_eq!(s.dtype(), DType::F32);
    assert!((s.view()[16] - 1.0).abs() < 0.01, "{}", s.view()[16]);
}
