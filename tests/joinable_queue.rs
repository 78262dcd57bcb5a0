//! Process-level tests of `JoinableQueue`: Python's `task_done()` / `join()`, and a
//! consumer that dies before `task_done`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ndshm::{ErrorKind, JoinableQueue, Process};

/// Longest wait of a step that must not hang: a hang fails the test instead.
const DEADLINE: Duration = Duration::from_secs(30);

#[test]
fn joinable_queue_join_returns_after_every_task_done() {
    let q = JoinableQueue::<u32>::new(8).unwrap();
    let results = ndshm::Queue::<u32>::new(32).unwrap();
    ndshm::scope(|s| -> ndshm::Result<()> {
        for _ in 0..2 {
            s.spawn(|| -> ndshm::Result<()> {
                while let Ok(item) = q.get_timeout(DEADLINE) {
                    if item == u32::MAX {
                        q.task_done()?;
                        return Ok(());
                    }
                    results.put(item * item)?;
                    q.task_done()?;
                }
                Ok(())
            })?;
        }
        for i in 0..20 {
            q.put(i)?;
        }
        q.join_timeout(DEADLINE)?;
        // Every task was done before join returned: all 20 results are there.
        assert_eq!(q.unfinished(), 0);
        assert_eq!(results.len(), 20);
        q.put(u32::MAX)?;
        q.put(u32::MAX)?;
        q.join_timeout(DEADLINE)?;
        Ok(())
    })
    .unwrap();
    let mut sum = 0;
    while let Ok(r) = results.try_get() {
        sum += r;
    }
    assert_eq!(sum, (0..20).map(|i| i * i).sum::<u32>());
    assert_eq!(q.lost(), 0);

    // join waits while a task is unfinished (bounded here).
    q.put(1).unwrap();
    assert_eq!(
        q.join_timeout(Duration::from_millis(50))
            .unwrap_err()
            .kind(),
        ErrorKind::Timeout
    );
    assert_eq!(q.get().unwrap(), 1);
    assert_eq!(
        q.join_timeout(Duration::from_millis(50))
            .unwrap_err()
            .kind(),
        ErrorKind::Timeout,
        "taken is not done"
    );
    q.task_done().unwrap();
    q.join().unwrap();
}

#[test]
fn task_done_more_than_put_is_an_error() {
    let q = JoinableQueue::<u8>::new(4).unwrap();
    let e = q.task_done().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("task_done"), "{e}");
    q.put(1).unwrap();
    q.put(2).unwrap();
    q.get().unwrap();
    q.get().unwrap();
    q.task_done().unwrap();
    q.task_done().unwrap();
    assert_eq!(
        q.task_done().unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(q.unfinished(), 0, "the failed call leaves the count at 0");
    q.join().unwrap();
    // A failed put does not count as a task.
    let q = JoinableQueue::<u8>::new(2).unwrap();
    q.put(1).unwrap();
    q.put(2).unwrap();
    assert!(q.try_put(3).unwrap_err().is_full());
    assert_eq!(q.unfinished(), 2);
}

#[test]
fn joinable_queue_join_survives_a_consumer_killed_before_task_done() {
    let q = Arc::new(JoinableQueue::<u32>::new(8).unwrap());
    let took = Arc::new(ndshm::Queue::<u32>::new(4).unwrap());
    q.put(1).unwrap();
    q.put(2).unwrap();
    // The consumer takes one item, says so, and is killed before task_done.
    let consumer = Process::spawn({
        let (q, took) = (Arc::clone(&q), Arc::clone(&took));
        move || -> ndshm::Result<()> {
            let item = q.get()?;
            took.put(item)?;
            loop {
                std::thread::park();
            }
        }
    })
    .unwrap();
    assert_eq!(took.get_timeout(DEADLINE).unwrap(), 1);
    consumer.kill().unwrap();
    assert!(consumer.join().is_err());
    // The other item is done normally.
    assert_eq!(q.get().unwrap(), 2);
    q.task_done().unwrap();
    let start = Instant::now();
    q.join_timeout(DEADLINE).unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(q.lost(), 1, "the dead consumer's item is reported lost");
    assert_eq!(q.unfinished(), 0);
}

#[test]
fn a_named_joinable_queue_is_joined_across_processes_that_open_it_by_name() {
    let name = common::Name::new("joinable-named");
    let q = JoinableQueue::<u64>::create(&name, 8).unwrap();
    let n = name.0.clone();
    // A process that only knows the name: it takes every item and marks it done.
    let consumer = Process::spawn(move || -> ndshm::Result<()> {
        let q = JoinableQueue::<u64>::open(&n)?;
        loop {
            let item = q.get_timeout(DEADLINE)?;
            q.task_done()?;
            if item == u64::MAX {
                return Ok(());
            }
        }
    })
    .unwrap();
    for i in 0..20 {
        q.put(i).unwrap();
    }
    q.join_timeout(DEADLINE).unwrap();
    assert_eq!(q.unfinished(), 0);
    q.put(u64::MAX).unwrap();
    consumer.join().unwrap();
    q.join_timeout(DEADLINE).unwrap();
    // A plain queue of the same name is not a joinable one: a typed error, not a guess.
    let plain = common::Name::new("joinable-plain");
    let _p = ndshm::Queue::<u64>::create(&plain, 2).unwrap();
    let e = JoinableQueue::<u64>::open(&plain).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("plain queue"), "{e}");
}

#[test]
fn both_segments_of_a_named_joinable_queue_go_with_its_creator() {
    let name = common::Name::new("joinable-drop");
    let counters = std::path::Path::new("/dev/shm").join(format!("{}.joinable", name.0));
    let _cleanup = common::Name(format!("{}.joinable", name.0));
    let q = JoinableQueue::<u32>::create(&name, 2).unwrap();
    assert!(name.path().exists() && counters.exists());
    let attached = JoinableQueue::<u32>::open(&name).unwrap();
    drop(attached); // an attached handle unlinks nothing
    assert!(name.path().exists() && counters.exists());
    drop(q);
    assert!(!name.path().exists() && !counters.exists());
}
