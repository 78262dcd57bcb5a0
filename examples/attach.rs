//! The second use of ndshm: another binary attaches to an array by name.
//!
//! Terminal 1 creates and fills a persistent array, then exits:
//! ```text
//! cargo run --example attach -- --create weather
//! ```
//! Terminal 2 (any later process, any binary) opens it by name and reduces it:
//! ```text
//! cargo run --example attach -- --open weather
//! ```
//! And removes it:
//! ```text
//! cargo run --example attach -- --rm weather
//! ```
//! numpy sees the same array: `np.load("/dev/shm/weather", mmap_mode="r")`.

use ndarray::{Axis, Ix2};
use ndshm::{CreateOptions, SharedNdArray};

const ROWS: usize = 1000;
const COLS: usize = 3;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [flag, name] if flag == "--create" => create(name),
        [flag, name] if flag == "--open" => open(name),
        [flag, name] if flag == "--rm" => ndshm::unlink(name),
        _ => {
            eprintln!("usage: attach (--create NAME | --open NAME | --rm NAME)");
            std::process::exit(2);
        }
    };
    if let Err(err) = result {
        eprintln!("attach: error: {err}");
        std::process::exit(1);
    }
}

/// Creates a persistent 1000 x 3 array of "weather" readings: row i is
/// (temperature, humidity, pressure) = (i % 40, i % 100, 1000 + i % 50).
fn create(name: &str) -> ndshm::Result<()> {
    let mut a = SharedNdArray::<f64, Ix2>::zeros(
        CreateOptions::named(name).persistent(true),
        (ROWS, COLS),
    )?;
    for (i, mut row) in a.view_mut().axis_iter_mut(Axis(0)).enumerate() {
        row[0] = (i % 40) as f64;
        row[1] = (i % 100) as f64;
        row[2] = 1000.0 + (i % 50) as f64;
    }
    println!(
        "created '{}': {:?} {} in /dev/shm/{}; it stays until `--rm {}`",
        a.name(),
        a.shape(),
        a.dtype(),
        a.name(),
        a.name()
    );
    Ok(())
}

/// Attaches by name and prints the column means.
fn open(name: &str) -> ndshm::Result<()> {
    // SAFETY: this example only reads, and the creator has exited; nobody writes the
    // segment while we view it.
    let a = unsafe { SharedNdArray::<f64, Ix2>::open_read_only(name)? };
    let means = a.view().mean_axis(Axis(0)).expect("the array has rows");
    println!(
        "opened '{}': {:?} {}; column means: temperature {:.2}, humidity {:.2}, pressure {:.2}",
        a.name(),
        a.shape(),
        a.dtype(),
        means[0],
        means[1],
        means[2]
    );
    Ok(())
}
