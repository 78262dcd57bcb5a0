//! Runs every seed example and checks what it prints (sorted where the seed says the
//! order may vary). The examples are built once, by one `cargo build --examples` (a no-op
//! when `cargo test` has already built them).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

fn examples_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--examples",
                "--quiet",
                "--offline",
                "--profile",
                "test",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cannot run cargo to build the examples");
        assert!(status.success(), "building the examples failed");
        // target/<profile>/deps/<this test> -> target/<profile>/examples
        let exe = std::env::current_exe().unwrap();
        exe.parent().unwrap().parent().unwrap().join("examples")
    })
}

fn run(name: &str, args: &[&str]) -> String {
    let out = Command::new(examples_dir().join(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run example {name}: {e}"));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "example {name} failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn counters_reach_200000() {
    assert_eq!(run("value_counter", &[]), "Counter: 200000\n");
    assert_eq!(run("value_counter", &["--exec"]), "Counter: 200000\n");
    assert_eq!(run("lock_counter", &[]), "Counter: 200000\n");
    assert_eq!(run("value_lock", &[]), "Counter: 200000\n");
}

#[test]
fn arrays() {
    assert_eq!(
        run("array_fill", &[]),
        "[10.0, 11.0, 12.0, 13.0, 14.0]\n[1, 2, 3, 4, 5]\n\
         [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]\n"
    );
    assert_eq!(run("array_concurrent", &[]), "[10, 10, 10, 10, 10]\n");
}

#[test]
fn queues() {
    let out = run("queue_basic", &[]);
    let mut expected: Vec<String> = (1..=5)
        .flat_map(|i| [format!("Produced: {i}"), format!("Consumed: {i}")])
        .collect();
    expected.sort();
    assert_eq!(sorted_lines(&out), expected);
    // Consumed in order.
    let consumed: Vec<&str> = out.lines().filter(|l| l.starts_with("Consumed")).collect();
    assert_eq!(
        consumed,
        [
            "Consumed: 1",
            "Consumed: 2",
            "Consumed: 3",
            "Consumed: 4",
            "Consumed: 5"
        ]
    );
    assert_eq!(
        run("queue_results", &[]),
        "{0: 0, 1: 1, 2: 4, 3: 9, 4: 16}\n"
    );
}

#[test]
fn pipes() {
    assert_eq!(
        run("pipe_basic", &[]),
        "Received: Hello from sender!\nReceived: [1, 2, 3]\n"
    );
    let mut expected = Vec::new();
    for i in 0..3 {
        expected.push(format!("Worker received: Main message {i}"));
        expected.push(format!("Main received: Worker reply {i}"));
    }
    // Each exchange completes before the next starts, so the order is fixed.
    assert_eq!(
        run("pipe_ping_pong", &[]).lines().collect::<Vec<_>>(),
        expected
    );
}

#[test]
fn managers() {
    let list = run("manager_list", &[]);
    let mut items: Vec<i32> = list
        .trim()
        .trim_matches(['[', ']'])
        .split(", ")
        .map(|x| x.parse().unwrap())
        .collect();
    items.sort();
    assert_eq!(items, [0, 1, 2, 3, 4]);
    assert_eq!(
        run("manager_dict", &[]),
        "{'key_0': 0, 'key_1': 1, 'key_2': 4, 'key_3': 9, 'key_4': 16}\n"
    );
    assert_eq!(
        run("manager_namespace", &[]),
        "x = 5\nitems = [1, 2, 3, 4, 5]\n"
    );
}

/// The `attach` example, run as two separate processes (moved here from the CLI's tests
/// when the CLI became its own crate: the examples belong to the library).
#[test]
fn attach_example_in_two_processes() {
    let name = common::Name::new("attach-ex");
    assert!(run("attach", &["--create", &name]).contains("created"));
    let out = run("attach", &["--open", &name]);
    assert!(
        out.contains("temperature 19.50, humidity 49.50, pressure 1024.50"),
        "{out}"
    );
    run("attach", &["--rm", &name]);
    assert!(!name.path().exists());
    let out = Command::new(examples_dir().join("attach"))
        .args(["--open", &name])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// `pool_jobs --quick`: c = a*b + d and the heat equation through multi-array pool jobs,
/// each result checked inside the example (the heat runs bit for bit against serial).
#[test]
fn pool_jobs_quick_matches_serial_and_rayon() {
    let out = run("pool_jobs", &["--quick"]);
    assert!(
        out.contains("pool and rayon results identical to the serial run"),
        "{out}"
    );
    assert!(out.contains("| c = a*b + d"), "{out}");
    assert!(out.contains("| tiny job"), "{out}");
}

/// `tiles --quick`: the blocked transpose-and-add, every result checked in the example.
#[test]
fn tiles_example_quick_run_checks_every_result() {
    let out = run("tiles", &["--quick"]);
    assert!(out.contains("pool, tile plan"), "{out}");
    assert!(out.contains("every result checked"), "{out}");
}

/// `pool_deadline --quick`: a never-ending chunk stopped by a deadline and by a cancel.
#[test]
fn pool_deadline_quick() {
    // The example fails itself when the pool is unhealthy after a stop or leaves anything.
    assert!(run("pool_deadline", &["--quick"]).contains("segments left"));
}

/// `fault_figures --quick`: issue 14's figures under SIGKILLs, no guarantee broken.
#[test]
fn fault_figures_quick_breaks_no_guarantee() {
    // The example exits non-zero on a duplicate, a loss beyond `lost()`, a lost map entry
    // or memory held by the pool (latency goals are only reported).
    let out = run("fault_figures", &["--quick"]);
    assert!(out.contains("| Figure | Measured | Goal | Met |"), "{out}");
    let rows = out.lines().filter(|l| l.starts_with("| ")).count();
    assert_eq!(rows, 8, "one header and 7 rows: {out}");
}
