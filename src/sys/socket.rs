//! TCP socket options the standard library does not offer: keepalive
//! probes with our own timing, so a client that vanished without a FIN
//! (cable, NAT state, suspended laptop) is noticed. It never changes
//! anything but the options it names.

use nix::libc;
use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// Timing of keepalive probes on an accepted connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keepalive {
    /// Seconds of silence before the first probe.
    pub(crate) idle_secs: u32,
    /// Seconds between unanswered probes.
    pub(crate) interval_secs: u32,
    /// Unanswered probes after which the connection is dead.
    pub(crate) probes: u32,
}

fn set_int(fd: &impl AsFd, level: libc::c_int, name: libc::c_int, value: u32) -> io::Result<()> {
    let value = libc::c_int::try_from(value).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: setsockopt reads exactly `size_of::<c_int>()` bytes from a
    // live local; the descriptor is borrowed, so it is open.
    let r = unsafe {
        libc::setsockopt(
            fd.as_fd().as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Turns keepalive on for a TCP socket, with `k`'s timing.
pub(crate) fn set_keepalive(fd: &impl AsFd, k: Keepalive) -> io::Result<()> {
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, k.idle_secs)?;
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, k.interval_secs)?;
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, k.probes)?;
    set_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)
}
