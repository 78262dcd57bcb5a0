//! What the benchmark examples (`squares`, `tiles`, `pool_jobs`) share: medians and
//! percentiles of timings, the core count, and the check that `/dev/shm` has room for a run.
// Each example uses the part it needs.
#![allow(dead_code)]

use std::time::Duration;

/// The median of `v` (the upper one of an even count).
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The `p`-th percentile (0..=1) of `sorted`.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The CPUs this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Checks that /dev/shm has room for `need` bytes, with a message that says what to do if
/// not; `smaller` names the example's way to a smaller run ("--quick (8 MB) or a smaller
/// --size").
pub fn check_shm_space(need: u64, smaller: &str) -> Result<(), Box<dyn std::error::Error>> {
    let st = nix::sys::statvfs::statvfs("/dev/shm")?;
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    if free < need {
        return Err(format!(
            "this run needs {:.0} MB of /dev/shm and only {:.0} MB are free: run with \
             {smaller}, free some space (`ndshm gc` removes segments of dead processes), or \
             enlarge /dev/shm (Docker: --shm-size={}g)",
            need as f64 / 1e6,
            free as f64 / 1e6,
            need.div_ceil(1 << 30) + 1
        )
        .into());
    }
    Ok(())
}
