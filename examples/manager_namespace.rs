//! Seed: "Shared Namespace" — five processes do `ns.x += 1; ns.items.append(ns.x)`, no
//! server process: prints `x = 5` and `items = [1, 2, 3, 4, 5]` (order may vary in
//! Python, where the two steps are separate; here they happen under one lock).

use ndshm::{SharedList, SharedStruct};

#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Namespace {
    x: i64,
}

fn main() -> ndshm::Result<()> {
    let ns = SharedStruct::new(Namespace { x: 0 })?;
    let items = SharedList::<i64>::new(100)?;
    ndshm::scope(|s| -> ndshm::Result<_> {
        for _ in 0..5 {
            s.spawn(|| -> ndshm::Result<()> {
                let mut ns = ns.lock();
                ns.x += 1;
                items.push(ns.x)?;
                Ok(())
            })?;
        }
        Ok(())
    })?;
    println!("x = {}", ns.load().x);
    println!("items = {:?}", items.to_vec());
    Ok(())
}
