//! How long a pool's workers outlive their caller when the caller is SIGKILLed mid-job.
//!
//! ```text
//! cargo run --release --example pool_orphans -- --trials 20
//! ```
//! Each trial forks a caller that starts a 3-executor pool and a job of long chunks; once
//! the workers are inside their chunks, the caller is killed, and the time until every
//! worker has ended (its pidfd turns readable) is measured. Goal: under 50 ms.

use clap::Parser;

#[path = "shared/orphans.rs"]
mod orphans;

#[derive(Parser, Debug)]
#[command(about = "Lifetime of pool workers after their caller's SIGKILL")]
struct Args {
    /// Number of trials.
    #[arg(long, default_value_t = 20)]
    trials: usize,
}

fn main() -> ndshm::Result<()> {
    let args = Args::parse();
    let mut times = Vec::with_capacity(args.trials);
    for i in 0..args.trials {
        times.push(orphans::trial(i)?);
    }
    times.sort();
    let p = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "orphan worker lifetime after the caller's SIGKILL mid-job ({} trials, 2 workers): \
         median {:?}, max {:?}",
        times.len(),
        p(0.5),
        p(1.0)
    );
    Ok(())
}
