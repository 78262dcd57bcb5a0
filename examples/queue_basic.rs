//! Seed: "Basic Queue" — a producer puts 1..=5, a consumer takes them. No sentinel: the
//! producer shuts the queue down and the consumer's `get` then ends. Prints five `Produced:`
//! and five `Consumed:` lines (the two processes' lines interleave in any order; the
//! consumed items come in order 1..5).

use ndshm::{write_stdout, Queue};

fn main() -> ndshm::Result<()> {
    let q = Queue::<i32>::new(16)?;
    ndshm::scope(|s| {
        s.spawn(|| -> ndshm::Result<()> {
            for item in [1, 2, 3, 4, 5] {
                q.put(item)?;
                write_stdout(&format!("Produced: {item}\n"))?;
            }
            q.shutdown(false); // instead of q.put(None): consumers drain, then stop
            Ok(())
        })?;
        s.spawn(|| -> ndshm::Result<()> {
            while let Ok(item) = q.get() {
                write_stdout(&format!("Consumed: {item}\n"))?;
            }
            Ok(())
        })?;
        Ok(())
    })
}
