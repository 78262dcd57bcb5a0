//! Plain `write(2)` to the standard descriptors, taking no lock (for forked children).

use std::os::fd::BorrowedFd;

/// Writes all of `bytes` to file descriptor 1 with a `write(2)` loop (retrying on
/// `EINTR`), taking no lock: std's stdout lock may have been held by another thread of the
/// parent at the fork.
pub(crate) fn write_stdout(mut bytes: &[u8]) -> nix::Result<()> {
    // SAFETY: descriptor 1 is the process's standard output, borrowed for the writes of
    // this call only (`BorrowedFd` closes nothing); whatever file it names, if any, a bad
    // descriptor comes back as EBADF.
    let fd = unsafe { BorrowedFd::borrow_raw(1) };
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
