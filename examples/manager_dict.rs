//! Seed: "Shared Dictionary" — five processes insert `key_i -> i ** 2`, no server process:
//! prints `{'key_0': 0, 'key_1': 1, 'key_2': 4, 'key_3': 9, 'key_4': 16}`. Then the dict
//! keeps insertion order, as Python's does (checked, not printed).

use ndshm::{ErrorKind, SharedMap};

fn main() -> ndshm::Result<()> {
    let shared_dict = SharedMap::<String, i64>::new(100)?;
    ndshm::scope(|s| -> ndshm::Result<_> {
        for i in 0..5i64 {
            let dict = &shared_dict;
            s.spawn(move || dict.insert(&format!("key_{i}"), i * i).map(drop))?;
        }
        Ok(())
    })?;
    // The children inserted in any order: sort for the seed's output.
    let mut entries = shared_dict.to_vec();
    entries.sort();
    let body: Vec<String> = entries.iter().map(|(k, v)| format!("'{k}': {v}")).collect();
    println!("{{{}}}", body.join(", "));

    let d = SharedMap::<String, i64>::new(8)?;
    for (k, v) in [("b", 1), ("a", 2), ("c", 3)] {
        d.insert(k, v)?; // d[k] = v
    }
    d.insert("b", 10)?; // a replacement keeps its place
    let keys: Vec<String> = d.keys().collect::<ndshm::Result<_>>()?; // list(d)
    assert_eq!(keys, ["b", "a", "c"]);
    assert_eq!(d.popitem()?, Some(("c".to_string(), 3))); // d.popitem(): the last inserted
    let back: Vec<String> = d.keys().rev().collect::<ndshm::Result<_>>()?; // list(reversed(d))
    assert_eq!(back, ["a", "b"]);
    let mut it = d.iter();
    it.next().transpose()?;
    d.remove("a")?; // del d["a"] while iterating ...
    let e = it.next().unwrap().unwrap_err(); // ... RuntimeError: dictionary changed size
    assert_eq!(e.kind(), ErrorKind::ChangedDuringIteration);
    Ok(())
}
