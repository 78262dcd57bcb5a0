//! Seed: "Concurrent Array Access" — ten processes each add 1 to every element under the
//! array's lock: prints `[10, 10, 10, 10, 10]`.

use ndarray::{arr1, Ix1};
use ndshm::{Process, SharedNdArray};

fn main() -> ndshm::Result<()> {
    let name = format!("example-concurrent-{}", std::process::id());
    let mut arr = SharedNdArray::<i32, Ix1>::from_array(&name, &arr1(&[0, 0, 0, 0, 0]))?;
    let processes = (0..10)
        .map(|_| {
            let name = name.clone();
            Process::spawn(move || -> ndshm::Result<()> {
                // SAFETY: every process writes this array only under its lock.
                let mut arr = unsafe { SharedNdArray::<i32, Ix1>::open(&name)? };
                let mut guard = arr.lock()?; // with lock:
                guard.view_mut().map_inplace(|x| *x += 1);
                Ok(())
            })
        })
        .collect::<ndshm::Result<Vec<_>>>()?;
    for p in processes {
        p.join()?;
    }
    println!("{:?}", arr.lock()?.view().to_vec());
    Ok(())
}
