//! Seed: "Collecting Results with Queue" — five workers put `(task_id, task_id ** 2)`;
//! the parent collects them: prints `{0: 0, 1: 1, 2: 4, 3: 9, 4: 16}`.

use std::collections::BTreeMap;

use ndshm::Queue;

fn main() -> ndshm::Result<()> {
    let result_queue = Queue::<[u64; 2]>::new(16)?;
    let rq = &result_queue;
    ndshm::scope(|s| -> ndshm::Result<_> {
        for task_id in 0..5u64 {
            s.spawn(move || rq.put([task_id, task_id.pow(2)]))?;
        }
        Ok::<(), ndshm::Error>(())
    })?;
    let mut results = BTreeMap::new();
    while let Ok([task_id, result]) = result_queue.try_get() {
        results.insert(task_id, result);
    }
    println!("{results:?}");
    Ok(())
}
