//! Cleanup at exit for the segments created with
//! [`CreateOptions::cleanup_on_exit`](crate::CreateOptions::cleanup_on_exit): Python's
//! `SharedMemory(track=True)`, done by a watchdog instead of a tracker that unlinks what it
//! merely saw attached (CPython gh-82300).
//!
//! The first such segment of a process starts its watchdog (once per process: a forked
//! child that creates one starts its own), a small forked process in its own session that
//! holds no mapping. The creator tells it each tracked segment (name and creation id)
//! through a socket whose write end only the creator holds (a private descriptor: every
//! forked child closes its copy at the fork), so the watchdog reads end of file exactly
//! when the creator has ended, however it ended (`SIGKILL` included). It then removes each
//! tracked segment that is still that very creation (same creation id), still owned by the
//! creator (its lease: a segment handed over to another owner is left) and not persistent,
//! and exits. Segments the creator unlinked itself are simply gone by then.
//!
//! Lives in the segment layer because `Segment::create` starts it; it uses only `sys`.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::{Error, Result};
use crate::segment::reclaim::{self, read_trailer};
use crate::segment::trailer::TrailerInfo;
use crate::sys::pipe::{self, PrivateFd};
use crate::sys::proc::ForkSafeMutex;
use crate::sys::{fork, lease, proc, shm};

/// This process's watchdog, as far as this process knows. Inherited by forked children,
/// which recognise it as their parent's by `pid` and start their own.
struct State {
    /// The process the watchdog serves (0: none).
    pid: i32,
    /// The write end of the socket to the watchdog (`None` while none runs).
    tx: Option<PrivateFd>,
    /// The process one of whose threads is starting a watchdog (0: nobody).
    starting: i32,
}

static STATE: ForkSafeMutex<State> = ForkSafeMutex::new(State {
    pid: 0,
    tx: None,
    starting: 0,
});

/// What a caller of [`track`] must do next.
enum Next {
    /// Tell the running watchdog through this descriptor.
    Send(RawFd),
    /// Start the watchdog (this thread claimed the start).
    Start,
    /// Another thread of this process is starting it: wait.
    Wait,
}

/// Makes sure this process's cleanup-at-exit watchdog runs and tells it segment `name`
/// (creation `segment_id`): it is removed when this process ends, however it ends, unless
/// it was unlinked, persisted or handed over meanwhile.
///
/// Must not be called with the registry lock held (it may fork).
pub(crate) fn track(name: &str, segment_id: u64) -> Result<()> {
    let record = format!("{segment_id:016x} {name}\n");
    // One retry: a watchdog that died (killed by someone) is replaced once.
    for attempt in 0..2 {
        let fd = loop {
            let me = proc::pid();
            let next = STATE.with(|s| {
                if s.pid == me {
                    if let Some(tx) = &s.tx {
                        return Next::Send(tx.as_raw_fd());
                    }
                }
                if s.starting == me {
                    return Next::Wait;
                }
                if s.pid != me {
                    // Inherited from the parent: its descriptor was closed at the fork, and
                    // dropping the handle could close a number that names another file now.
                    if let Some(old) = s.tx.take() {
                        std::mem::forget(old);
                    }
                    s.pid = 0;
                }
                s.starting = me;
                Next::Start
            });
            match next {
                Next::Send(fd) => break fd,
                Next::Wait => std::thread::yield_now(),
                Next::Start => {
                    let started = start();
                    let fd = STATE.with(|s| {
                        s.starting = 0;
                        started.map(|tx| {
                            let fd = tx.as_raw_fd();
                            s.pid = me;
                            s.tx = Some(tx);
                            fd
                        })
                    })?;
                    break fd;
                }
            }
        };
        // One write of less than PIPE_BUF bytes: records of concurrent threads never mix.
        match pipe::write_all(fd, record.as_bytes()) {
            Ok(()) => return Ok(()),
            Err(e) if attempt == 1 => {
                return Err(Error::os(
                    format!(
                        "cannot register segment '{name}' for cleanup at exit with its watchdog"
                    ),
                    e,
                ))
            }
            Err(_) => {
                // The watchdog is gone: forget it (closing our end) and start another.
                let me = proc::pid();
                STATE.with(|s| {
                    if s.pid == me {
                        s.pid = 0;
                        s.tx = None;
                    }
                });
            }
        }
    }
    unreachable!("the loop returns on its second attempt")
}

/// Forks the watchdog; returns the write end of its socket, private to this process.
fn start() -> Result<PrivateFd> {
    let err = |e| Error::os("cannot start the cleanup-at-exit watchdog", e);
    // Claimed before the fork: the segments this process owns record this lease.
    let owner = lease::mine();
    let (rx, tx) = pipe::pipe().map_err(err)?;
    // Private before the fork, so that the watchdog (and every later child) closes its copy.
    let tx = PrivateFd::new(tx);
    let rx_fd = rx.as_raw_fd();
    let forked = fork::fork_into(|| {
        let _ = catch_unwind(AssertUnwindSafe(|| watch(rx_fd, owner)));
        fork::exit_now(0)
    });
    drop(rx);
    forked.map_err(err)?;
    Ok(tx)
}

/// The watchdog's life: leave the creator's session, drop the inherited mappings, collect
/// the tracked segments until the creator's end of the socket closes, then remove those
/// that are still the creator's.
fn watch(rx: RawFd, owner: u64) {
    let _ = proc::new_session();
    // This process uses nothing it inherited but `rx` and plain values: it opens segment
    // files itself.
    proc::unmap_inherited_shm_mappings();
    let mut tracked: BTreeMap<String, u64> = BTreeMap::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    let mut prune_at = 1024;
    loop {
        match pipe::read_some(rx, &mut buf) {
            Ok(0) => break,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if let Some((id, name)) = parse_record(&line[..line.len() - 1]) {
                tracked.insert(name, id);
            }
        }
        if tracked.len() >= prune_at {
            // Forget the segments that are gone (unlinked by their handles): a long-lived
            // creator of many tracked segments costs the watchdog only the live ones.
            tracked.retain(|name, _| shm::file_id_of_name(name).is_some());
            prune_at = (tracked.len() * 2).max(1024);
        }
    }
    // The creator is gone, but a child it forked an instant before it died may not have
    // run its fork handler yet, which closes the child's copy of the creator's lease fd:
    // until then the kernel still holds the lease. Wait (bounded) for it to read dead.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while lease::check(owner) == lease::Liveness::Alive && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    if lease::check(owner) != lease::Liveness::Dead {
        return; // never remove a segment whose owner may live
    }
    // In name order (which the tests rely on to know when a name has been judged).
    for (name, id) in &tracked {
        remove_if_still_tracked(name, *id, owner);
    }
}

/// `"<16 hex digits> <name>"` -> (id, name).
fn parse_record(line: &[u8]) -> Option<(u64, String)> {
    let line = std::str::from_utf8(line).ok()?;
    let (id, name) = line.split_once(' ')?;
    Some((u64::from_str_radix(id, 16).ok()?, name.to_owned()))
}

/// Whether the trailer still describes the tracked creation, owned by `owner`, not
/// persistent.
fn still_tracked(t: &TrailerInfo, id: u64, owner: u64) -> bool {
    t.segment_id == id && t.owner_lease == owner && !t.persistent
}

/// Removes segment `name` if it is still creation `id` of `owner` and not persistent,
/// through the same checked removal as `gc` (`segment::reclaim`).
fn remove_if_still_tracked(name: &str, id: u64, owner: u64) {
    let Ok(file) = shm::open_for_inspection(name) else {
        return; // gone already
    };
    if !read_trailer(&file).is_some_and(|t| still_tracked(&t, id, owner)) {
        return;
    }
    let Ok(file_id) = shm::file_id(&file) else {
        return;
    };
    reclaim::remove_checked(name, &file, file_id, |t| still_tracked(t, id, owner));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let line = format!("{:016x} {}", 0xabcdef_u64, "a name");
        assert_eq!(
            parse_record(line.as_bytes()),
            Some((0xabcdef, "a name".to_string()))
        );
        assert_eq!(parse_record(b"zz name"), None);
        assert_eq!(parse_record(b"no-space"), None);
    }
}
