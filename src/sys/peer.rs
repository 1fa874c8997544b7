//! Credentials of the process at the other end of a Unix socket
//! (`SO_PEERCRED`), for sockets that must only answer one uid.

use nix::libc;
use std::io;
use std::os::fd::AsRawFd;

/// The uid of the process at the other end of a Unix socket.
pub(crate) fn peer_uid(sock: &impl AsRawFd) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes passed, and
    // SO_PEERCRED writes at most `len` bytes of a `struct ucred`.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}
