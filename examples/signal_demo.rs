//! A forked job that runs until it is interrupted: shows (and lets the tests check) what
//! `SignalCleanup` does on Ctrl-C.
//!
//! ```text
//! cargo run --example signal_demo -- [--workers N] [--len N] [--no-cleanup] [--die-with-parent]
//!                                     [--stubborn] [--watchdog]
//! ```
//! It creates an owned array `ndshm-signal-demo-<pid>`, forks N workers that each attach to
//! it by name and keep incrementing their own chunk forever, prints `ready <segment> <worker pids…>` and
//! waits. Press Ctrl-C (or `kill -TERM <pid>`): the workers are stopped and reaped, the
//! segment is removed, and the process dies of the signal. With `--no-cleanup` nothing is
//! installed: the segment stays behind after a signal (`ndshm gc` removes it) and the
//! workers of a `SIGKILL`ed parent keep running unless `--die-with-parent` is given.
//! `--stubborn` workers ignore `SIGTERM`: the cleanup then kills them with `SIGKILL` after
//! its grace period. `--watchdog` starts a `CrashCleanup` watchdog: even `kill -9` of the
//! demo then leaves no segment behind (with `--die-with-parent`, no worker either).

use ndarray::{s, Ix1};
use ndshm::{CrashCleanup, SharedNdArray, SignalCleanup};

fn main() -> ndshm::Result<()> {
    let mut workers = 3usize;
    let mut len = 1usize << 20;
    let mut cleanup = true;
    let mut die_with_parent = false;
    let mut stubborn = false;
    let mut watchdog = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut num = |what: &str| -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{what} needs a number"))
        };
        match arg.as_str() {
            "--workers" => workers = num("--workers").max(1),
            "--len" => len = num("--len").max(workers),
            "--no-cleanup" => cleanup = false,
            "--die-with-parent" => die_with_parent = true,
            "--stubborn" => stubborn = true,
            "--watchdog" => watchdog = true,
            other => panic!("unknown argument {other:?}"),
        }
    }
    let _guard = if cleanup {
        Some(SignalCleanup::install()?)
    } else {
        None
    };
    let _watchdog = if watchdog {
        Some(CrashCleanup::spawn()?)
    } else {
        None
    };
    let parent = std::process::id() as i32;
    let name = format!("ndshm-signal-demo-{parent}");
    // The demo's process owns the segment; each worker attaches to it by name.
    let _array = SharedNdArray::<f64, Ix1>::zeros(&name, len)?;
    let chunk = len.div_ceil(workers);
    ndshm::scope(|s| -> ndshm::Result<_> {
        let mut pids = Vec::new();
        for start in (0..len).step_by(chunk) {
            let name = &name;
            pids.push(
                s.spawn(move || -> ndshm::Result<()> {
                    if die_with_parent {
                        ndshm::die_with_parent(parent)?;
                    }
                    if stubborn {
                        use nix::sys::signal::{signal, SigHandler, Signal};
                        // SAFETY: SIG_IGN runs no code.
                        unsafe { signal(Signal::SIGTERM, SigHandler::SigIgn) }
                            .expect("ignore SIGTERM");
                    }
                    // SAFETY: each worker writes only its own chunk (the chunks are disjoint),
                    // and the parent does not touch the array while the workers run.
                    let mut array = unsafe { SharedNdArray::<f64, Ix1>::open(name)? };
                    let mut view = array.view_mut();
                    let mut part = view.slice_mut(s![start..(start + chunk).min(len)]);
                    loop {
                        part.mapv_inplace(|x| x + 1.0);
                    }
                })?
                .pid(),
            );
        }
        let pids: Vec<String> = pids.iter().map(i32::to_string).collect();
        ndshm::write_stdout(&format!("ready {name} {}\n", pids.join(" ")))?;
        Ok(())
    })
}
