//! Seed: "Value with Built-in Lock" — `with counter.get_lock(): counter.value += 1`:
//! prints `Counter: 200000`.

use ndshm::SharedValue;

fn increment(counter: &SharedValue<i32>, n: usize) {
    for _ in 0..n {
        let _guard = counter.lock();
        counter.store(counter.load() + 1);
    }
}

fn main() -> ndshm::Result<()> {
    let counter = SharedValue::<i32>::new(0)?; // has a built-in lock
    ndshm::scope(|s| -> ndshm::Result<_> {
        s.spawn(|| increment(&counter, 100_000))?;
        s.spawn(|| increment(&counter, 100_000))?;
        Ok(())
    })?;
    println!("Counter: {}", counter.load());
    Ok(())
}
