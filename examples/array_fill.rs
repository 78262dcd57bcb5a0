//! Seed: "Shared Array" — a child fills `Array('d', 5)`; then the two ways to create one:
//! prints `[10.0, 11.0, 12.0, 13.0, 14.0]`, `[1, 2, 3, 4, 5]` and ten zeros.

use ndarray::{arr1, Ix1};
use ndshm::SharedNdArray;

fn main() -> ndshm::Result<()> {
    let id = std::process::id();
    let mut arr = SharedNdArray::<f64, Ix1>::zeros(&format!("example-arr-{id}"), 5)?; // Array('d', 5)
    ndshm::scope(|s| -> ndshm::Result<_> {
        // Process(target=fill_array, args=(arr, 10)): the child is handed the array.
        s.spawn_with(&mut arr, |arr| {
            for (i, x) in arr.view_mut().iter_mut().enumerate() {
                *x = 10.0 + i as f64;
            }
        })?;
        Ok(())
    })?;
    println!("{:?}", arr.as_slice().unwrap());
    let arr1 = SharedNdArray::<i32, Ix1>::from_array(
        &format!("example-arr1-{id}"),
        &arr1(&[1, 2, 3, 4, 5]),
    )?;
    println!("{:?}", arr1.as_slice().unwrap());
    let arr2 = SharedNdArray::<f64, Ix1>::zeros(&format!("example-arr2-{id}"), 10)?;
    println!("{:?}", arr2.as_slice().unwrap());
    Ok(())
}
