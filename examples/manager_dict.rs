//! Seed: "Shared Dictionary" — five processes insert `key_i -> i ** 2`, no server process:
//! prints `{'key_0': 0, 'key_1': 1, 'key_2': 4, 'key_3': 9, 'key_4': 16}`.

use ndshm::SharedMap;

fn main() -> ndshm::Result<()> {
    let shared_dict = SharedMap::<String, i64>::new(100)?;
    ndshm::scope(|s| -> ndshm::Result<_> {
        for i in 0..5i64 {
            let dict = &shared_dict;
            s.spawn(move || dict.insert(&format!("key_{i}"), i * i).map(drop))?;
        }
        Ok(())
    })?;
    let mut entries = shared_dict.to_vec();
    entries.sort();
    let body: Vec<String> = entries.iter().map(|(k, v)| format!("'{k}': {v}")).collect();
    println!("{{{}}}", body.join(", "));
    Ok(())
}
