//! Seed: "Shared List" — five processes append to a shared list, no server process:
//! prints `[0, 1, 2, 3, 4]` (order may vary).

use ndshm::SharedList;

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
    Ok(())
}
