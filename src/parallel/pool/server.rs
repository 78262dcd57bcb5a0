//! The pool's fork server: the one process that forks, reaps and reports the workers.
//!
//! The caller forks it once, when the pool is made; from then on it is single-threaded and
//! runs only this module's code, so the workers it forks (the initial ones, and each
//! replacement the caller asks for) come from a process where no other thread can hold a
//! lock. Being their parent, it is the one process for which `waitpid` on them is
//! meaningful: it learns each exit from the worker's pidfd, reads the status with
//! `waitid(WNOWAIT)` (the worker stays a zombie, so its pid cannot be reused yet), stores it
//! in the worker's slot of the control block (`state = EXITED`), and only then reaps it.
//! The caller never `waitpid`s a worker.
//!
//! Requests arrive on a pipe whose write end only the caller holds (a private descriptor:
//! ndshm's fork paths close it in every child): 2-byte messages, a slot number to fork a
//! replacement into, or [`SHUTDOWN`]. End of file (`POLLHUP`) means the caller is gone,
//! however it ended; so does the caller's pidfd turning readable (which also covers a
//! child of the caller that still holds an inherited write end): the server then kills its
//! workers at once (`SIGKILL`), reaps them and exits. Workers get `PR_SET_PDEATHSIG` = `SIGKILL` towards the server (whose only thread
//! is the one that forked them), so they also die with it if it is killed.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;

use super::control::{Block, EXITED, FORK_FAILED, RUNNING};
use super::worker::worker_main;
use super::MAX_WORKERS;
use crate::sys::fork::{self as sys_fork, Exit};
use crate::sys::pidfd::{self, Pidfd};
use crate::sys::pipe::PrivateFd;
use crate::sys::{futex, pipe, proc};

/// Request: stop (kill and reap every worker, then exit).
pub(super) const SHUTDOWN: u16 = u16::MAX;

/// How often the server looks at its workers when it cannot watch them through pidfds.
const SWEEP_MS: i32 = 10;

/// What the server works with, allocated by the caller before the fork (the server then
/// needs no allocation).
pub(super) struct ServerState {
    /// The read end of the request pipe (dropped, so closed, in each worker).
    pub(super) requests: Option<OwnedFd>,
    pub(super) pidfds: Vec<Option<Pidfd>>,
    pub(super) pids: Vec<i32>,
    pub(super) pollfds: Vec<pipe::PollFd>,
    pub(super) slot_of: Vec<usize>,
}

impl ServerState {
    pub(super) fn new(workers: usize, requests: OwnedFd) -> ServerState {
        ServerState {
            requests: Some(requests),
            pidfds: (0..workers).map(|_| None).collect(),
            pids: vec![0; workers],
            pollfds: Vec::with_capacity(workers + 1),
            slot_of: Vec::with_capacity(workers + 1),
        }
    }
}

/// The server's life (never returns). `caller_end` is the server's copy of the caller's
/// write end of the request pipe: the server never writes requests, and holding it would
/// hide the caller's death, so it is closed first thing.
pub(super) fn server_main(
    block: &Block,
    caller_end: &PrivateFd,
    caller: i32,
    st: &mut ServerState,
) -> ! {
    pipe::close_private_in_child();
    caller_end.close_in_child();
    // The server never touches the caller's segments; dropping the mappings it inherited
    // keeps it (and its workers, forked from it) from pinning their memory.
    proc::unmap_shm_mappings_in_fork_server();
    let Some(requests) = st.requests.as_ref().map(AsRawFd::as_raw_fd) else {
        sys_fork::exit_now(70)
    };
    pidfd::keep_child_statuses();
    // The caller's pidfd, a second witness of its death that does not depend on every
    // process that inherited the request pipe's write end having closed it. Opened, then
    // checked: if our parent is still the caller, the pidfd names it.
    let caller_fd = Pidfd::open(caller).ok();
    if proc::parent_pid() != caller {
        shutdown(block, st);
    }
    let me = proc::pid();
    for slot in 0..st.pids.len() {
        spawn(block, slot, me, st);
    }
    let mut buf = [0u8; 512];
    loop {
        st.pollfds.clear();
        st.slot_of.clear();
        st.pollfds.push(pipe::watch_input(requests));
        st.slot_of.push(usize::MAX);
        if let Some(fd) = &caller_fd {
            st.pollfds.push(pipe::watch_input(fd.as_raw_fd()));
            st.slot_of.push(usize::MAX);
        }
        let mut blind = false;
        for (slot, pid) in st.pids.iter().enumerate() {
            if *pid == 0 {
                continue;
            }
            match &st.pidfds[slot] {
                Some(fd) => {
                    st.pollfds.push(pipe::watch_input(fd.as_raw_fd()));
                    st.slot_of.push(slot);
                }
                None => blind = true,
            }
        }
        let timeout = if blind { SWEEP_MS } else { -1 };
        if pipe::poll(&mut st.pollfds, timeout).is_err() {
            // Cannot wait properly (should not happen): do not spin.
            std::thread::sleep(std::time::Duration::from_millis(SWEEP_MS as u64));
        }
        if caller_fd.as_ref().is_some_and(|fd| fd.has_exited()) {
            // The caller died (its descriptor may live on in a child of its own).
            shutdown(block, st);
        }
        reap_exited(block, st);
        let req = st.pollfds[0];
        if pipe::has_input(&req) {
            let n = pipe::read_some(requests, &mut buf).unwrap_or(0);
            if n == 0 {
                shutdown(block, st);
            }
            for m in buf[..n & !1].chunks_exact(2) {
                let m = u16::from_ne_bytes([m[0], m[1]]);
                if m == SHUTDOWN {
                    shutdown(block, st);
                }
                let slot = m as usize;
                if slot < st.pids.len() && st.pids[slot] == 0 {
                    spawn(block, slot, me, st);
                }
            }
        } else if pipe::hung_up(&req) {
            // The caller is gone (or closed its end without a word): stop at once.
            shutdown(block, st);
        }
    }
}

/// Forks a worker into `slot` and reports it (or the failure) in the slot.
fn spawn(block: &Block, slot: usize, me: i32, st: &mut ServerState) {
    let s = block.ctl().slot(slot);
    s.active().store(0, Ordering::Relaxed);
    s.chunk().store(0, Ordering::Relaxed);
    s.sleeping().store(0, Ordering::Relaxed);
    s.exit_kind().store(0, Ordering::Relaxed);
    s.exit_value().store(0, Ordering::Relaxed);
    // The sequence number at the fork: the caller waits for this spawn before its next
    // job, so the worker starts from the latest one.
    let seen = block.ctl().seq().load(Ordering::SeqCst);
    // The server is single-threaded (a forked process that started no thread) and runs
    // only ndshm code; the child runs `worker_main`, which ends with `_exit`.
    let forked = sys_fork::fork_into(|| {
        // The request pipe's read end is the server's business only.
        drop(st.requests.take());
        // The forking thread is the server's only thread: the death signal fires
        // exactly when the server ends.
        let _ = proc::die_with_parent(me);
        worker_main(block, slot, me, seen)
    });
    match forked {
        Ok(pid) => {
            st.pidfds[slot] = Pidfd::open(pid).ok();
            st.pids[slot] = pid;
            s.pid().store(pid, Ordering::Relaxed);
            s.state().store(RUNNING, Ordering::Release);
        }
        Err(e) => {
            s.pid().store(0, Ordering::Relaxed);
            s.exit_value()
                .store(e.raw_os_error().unwrap_or(0), Ordering::Relaxed);
            s.state().store(FORK_FAILED, Ordering::Release);
        }
    }
    s.gen().fetch_add(1, Ordering::AcqRel);
    notify(block);
}

/// Reports and reaps every worker that has ended.
fn reap_exited(block: &Block, st: &mut ServerState) {
    for slot in 0..st.pids.len() {
        let pid = st.pids[slot];
        if pid == 0 {
            continue;
        }
        let exit = match pidfd::peek_exit(pid) {
            Ok(Some(exit)) => exit,
            Ok(None) => continue,
            // ECHILD: no child of ours has this pid any more (SIGCHLD is reset to the
            // default above, so this should not happen): it ended, status unknown.
            Err(_) => Exit::Code(-1),
        };
        let s = block.ctl().slot(slot);
        if s.sleeping().swap(0, Ordering::SeqCst) != 0 {
            block.ctl().sleepers().fetch_sub(1, Ordering::SeqCst);
        }
        let (kind, value) = match exit {
            Exit::Code(c) => (1, c),
            Exit::Signal(sig) => (2, sig),
        };
        s.exit_kind().store(kind, Ordering::Relaxed);
        s.exit_value().store(value, Ordering::Relaxed);
        // Reported while it is still a zombie: a caller that opened a pidfd on `pid` and
        // then still sees RUNNING knows the pidfd names this worker.
        s.state().store(EXITED, Ordering::Release);
        notify(block);
        let _ = sys_fork::wait_child(pid, false);
        st.pids[slot] = 0;
        st.pidfds[slot] = None;
    }
}

/// Kills and reaps every worker, then exits.
fn shutdown(block: &Block, st: &mut ServerState) -> ! {
    for &pid in st.pids.iter().filter(|&&p| p != 0) {
        let _ = sys_fork::send_signal(pid, sys_fork::SIGKILL);
    }
    for slot in 0..st.pids.len() {
        let pid = st.pids[slot];
        if pid != 0 {
            let _ = sys_fork::wait_child(pid, false);
            st.pids[slot] = 0;
        }
    }
    let _ = block;
    sys_fork::exit_now(0)
}

/// Tells the caller that a slot changed: bumps the event word and wakes whoever sleeps on
/// it or on the done counter (a caller joining a job must notice a dead worker).
fn notify(block: &Block) {
    block.ctl().events().fetch_add(1, Ordering::SeqCst);
    futex::wake(block.ctl().events(), i32::MAX);
    if block.ctl().caller_sleeping().load(Ordering::SeqCst) != 0 {
        futex::wake(block.ctl().done(), 1);
    }
}

const _: () = assert!(MAX_WORKERS < SHUTDOWN as usize);
