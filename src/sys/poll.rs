//! `poll(2)` over raw descriptors: wait for readability (or priority data)
//! with a timeout. It never reads or owns the descriptors it is given.

use nix::libc;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// Waits until one of `fds` is readable (or, with `pri`, has priority
/// data or an error: how /proc/self/mountinfo says the mounts changed), or
/// `timeout` passes. Returns which are ready.
pub(crate) fn poll(fds: &[(RawFd, bool)], timeout: Duration) -> io::Result<Vec<bool>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&(fd, pri)| libc::pollfd {
            fd,
            events: if pri { libc::POLLPRI } else { libc::POLLIN },
            revents: 0,
        })
        .collect();
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: `p` is a valid array of `p.len()` pollfd structs for the call.
    let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![false; fds.len()]);
        }
        return Err(e);
    }
    Ok(p.iter().map(|x| x.revents != 0).collect())
}
