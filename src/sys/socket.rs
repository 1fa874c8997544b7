//! Socket options and sockets the standard library does not offer:
//! keepalive probes with our own timing (a client that vanished without a
//! FIN is noticed); a sequenced-packet socket pair (each `write` of sshd is
//! one record, so a log line cannot be forged by an embedded newline); an
//! IPv6-only TCP listener (the IPv4 and IPv6 wildcards are two sockets and
//! neither family is left free); adopting a listening socket inherited as
//! a descriptor number; and the pid and uid at the other end of a Unix
//! socket.

use nix::libc;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

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

/// A connected `SOCK_SEQPACKET` pair, both ends close-on-exec.
pub(crate) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two ints for socketpair to fill.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by no one else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A listening TCP socket on `[::]:port` with IPV6_V6ONLY and
/// SO_REUSEADDR, close-on-exec.
pub(crate) fn listen_v6only(port: u16, backlog: i32) -> io::Result<TcpListener> {
    // SAFETY: plain syscall with constant arguments.
    let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    for (level, opt) in [
        (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY),
        (libc::SOL_SOCKET, libc::SO_REUSEADDR),
    ] {
        // SAFETY: `one` is a valid c_int for the duration of the call and
        // its size is passed.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                level,
                opt,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: sockaddr_in6 is plain data; all zeroes is `[::]:0`.
    let mut addr: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    addr.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    addr.sin6_port = port.to_be();
    // SAFETY: `addr` is a valid sockaddr_in6 and its size is passed; the
    // kernel only reads it.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_in6).cast(),
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: plain syscall on a descriptor we own.
    if unsafe { libc::listen(fd.as_raw_fd(), backlog) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TcpListener::from(fd))
}

/// Adopts descriptor `fd`, inherited from the parent, as a TCP listener
/// after checking that it is a listening stream socket. Call once per
/// number: the descriptor is owned by the result.
pub(crate) fn adopt_listener(fd: RawFd) -> io::Result<TcpListener> {
    if fd < 3 {
        return Err(io::Error::other("descriptor below 3 is not a listener"));
    }
    let flag = |opt| -> io::Result<libc::c_int> {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v` and `len` are valid for writes of the sizes passed.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(v)
        }
    };
    if flag(libc::SO_TYPE)? != libc::SOCK_STREAM || flag(libc::SO_ACCEPTCONN)? != 1 {
        return Err(io::Error::other(format!(
            "descriptor {fd} is not a listening stream socket"
        )));
    }
    // SAFETY: the parent handed this descriptor to us for this purpose and
    // nothing else in the process refers to it (the caller adopts each
    // number once).
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    crate::sys::fd::set_cloexec(&owned)?;
    Ok(TcpListener::from(owned))
}

/// Pid and uid of the process at the other end of a Unix socket, as the
/// kernel recorded them at connect time.
pub(crate) fn peer_cred(sock: &impl AsRawFd) -> io::Result<(i32, u32)> {
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
    Ok((cred.pid, cred.uid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn seqpacket_keeps_write_boundaries() {
        let (a, b) = seqpacket_pair().unwrap();
        let mut w = std::fs::File::from(a);
        let mut r = std::fs::File::from(b);
        w.write_all(b"Invalid user x\nAccepted publickey\r\n")
            .unwrap();
        w.write_all(b"second\n").unwrap();
        let mut buf = [0u8; 256];
        let n = r.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"Invalid user x\nAccepted publickey\r\n");
        let n = r.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"second\n");
        drop(w);
        assert_eq!(r.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn v6only_leaves_the_v4_wildcard_to_another_socket_and_vice_versa() {
        let v6 = match listen_v6only(0, 16) {
            Ok(l) => l,
            Err(_) => return, // no IPv6 in this environment
        };
        let port = v6.local_addr().unwrap().port();
        let v4 = TcpListener::bind(("0.0.0.0", port)).unwrap();
        // Now neither family is free on that port.
        assert!(TcpListener::bind(("0.0.0.0", port)).is_err());
        assert!(TcpListener::bind(("127.0.0.1", port)).is_err());
        assert!(TcpListener::bind(("::", port)).is_err());
        assert!(TcpListener::bind(("::1", port)).is_err());
        drop(v4);
    }

    #[test]
    fn adopt_refuses_what_is_not_a_listener() {
        let f = std::fs::File::open("/dev/null").unwrap();
        let fd = f.as_raw_fd();
        assert!(adopt_listener(fd).is_err());
        drop(f);
    }
}
