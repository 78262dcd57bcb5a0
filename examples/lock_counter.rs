//! Seed: "With Lock" — a read-modify-write under a process-shared lock: prints
//! `Counter: 200000`.

use ndshm::{Lock, SharedValue};

fn increment(counter: &SharedValue<i32>, lock: &Lock, n: usize) {
    for _ in 0..n {
        let _guard = lock.lock(); // with lock:
        counter.store(counter.load() + 1); // counter.value += 1
    }
}

fn main() -> ndshm::Result<()> {
    let counter = SharedValue::<i32>::new(0)?;
    let lock = Lock::new()?;
    ndshm::scope(|s| -> ndshm::Result<_> {
        s.spawn(|| increment(&counter, &lock, 100_000))?;
        s.spawn(|| increment(&counter, &lock, 100_000))?;
        Ok(())
    })?;
    println!("Counter: {}", counter.load()); // Always 200000
    Ok(())
}
