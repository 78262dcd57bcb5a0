//! Seed: "Shared Value" — two processes add 1 to a shared counter 100000 times each.
//! Python's `counter.value += 1` races; `fetch_add` is atomic, so the count is exact,
//! without a lock: prints `Counter: 200000`.
//!
//! `cargo run --example value_counter` forks the two workers. With `--exec`, the workers
//! are unrelated processes instead: this binary starts two copies of itself, which attach
//! the counter by name.

use ndshm::SharedValue;

fn increment(counter: &SharedValue<i32>, n: usize) {
    for _ in 0..n {
        counter.fetch_add(1);
    }
}

fn main() -> ndshm::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, name] = &args[..] {
        if flag == "--worker" {
            // An unrelated process: attach by name.
            let counter = SharedValue::<i32>::open(name)?;
            increment(&counter, 100_000);
            return Ok(());
        }
    }
    if args.get(1).map(String::as_str) == Some("--exec") {
        let name = format!("example-counter-{}", std::process::id());
        let counter = SharedValue::<i32>::create(&name, 0)?; // Value('i', 0), named
        let exe = std::env::current_exe()
            .map_err(std::io::Error::other)
            .unwrap();
        let workers: Vec<_> = (0..2)
            .map(|_| {
                std::process::Command::new(&exe)
                    .args(["--worker", &name])
                    .spawn()
            })
            .collect::<std::io::Result<_>>()
            .expect("cannot start a worker process");
        for mut w in workers {
            assert!(w.wait().expect("wait for a worker").success());
        }
        println!("Counter: {}", counter.load());
        return Ok(());
    }
    let counter = SharedValue::<i32>::new(0)?; // Value('i', 0)
    ndshm::scope(|s| -> ndshm::Result<_> {
        s.spawn(|| increment(&counter, 100_000))?;
        s.spawn(|| increment(&counter, 100_000))?;
        Ok(())
    })?;
    println!("Counter: {}", counter.load());
    Ok(())
}
