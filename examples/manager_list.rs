//! Seed: "Shared List" — five processes append to a shared list, no server process:
//! prints `[0, 1, 2, 3, 4]` (order may vary). Then the rest of Python's list on the same
//! shared list, each call one step for every process (checked, not printed).

use ndshm::{ErrorKind, SharedList};

fn main() -> ndshm::Result<()> {
    let shared_list = SharedList::<i32>::new(100)?;
    ndshm::scope(|s| -> ndshm::Result<_> {
        for i in 0..5 {
            let list = &shared_list;
            s.spawn(move || list.push(i).map(drop))?;
        }
        Ok(())
    })?;
    println!("{:?}", shared_list.to_vec());

    let l = &shared_list;
    l.sort(); // l.sort()
    l.set(0, 10)?; // l[0] = 10
    l.insert(1, 7)?; // l.insert(1, 7)
    assert_eq!(l.pop(), Some(4)); // l.pop()
    assert_eq!(l.pop_at(0)?, 10); // l.pop(0)
    l.remove(&2)?; // l.remove(2)
    l.extend([9, 8])?; // l.extend([9, 8])
    l.reverse(); // l.reverse()
    assert_eq!(l.to_vec(), [8, 9, 3, 1, 7]);
    assert!(l.contains(&9) && l.index(&3) == Some(2)); // 9 in l, l.index(3)
    l.sort_by_key(|x| -x); // l.sort(key=lambda x: -x)
    let seen: Vec<i32> = l.iter().collect(); // for x in l: a snapshot
    assert_eq!(seen, [9, 8, 7, 3, 1]);
    // l[10] = 0 raises IndexError; here a typed error.
    assert_eq!(l.set(10, 0).unwrap_err().kind(), ErrorKind::IndexOutOfRange);
    l.clear(); // l.clear()
    assert!(l.is_empty());
    Ok(())
}
