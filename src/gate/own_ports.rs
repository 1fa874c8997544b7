//! Keeps the bastion's own ports (sshd, HTTP, metrics) out of reach of a
//! session network. Two halves: the bastion binds its listeners to the
//! addresses it had at boot ([`boot_addresses`]), so nothing of it listens
//! on a session network's address; and on that address the gate holds each
//! of those ports with a [`Shadow`], a listener whose one-slot accept queue
//! is kept full, so the kernel drops a session's SYN (a timeout) instead of
//! answering with a reset ("connection refused" would still tell the
//! session the bastion is there and which ports it serves elsewhere).

use std::io;
use std::net::{IpAddr, SocketAddr};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// The addresses to bind the bastion's listeners to: every IPv4 address
/// and every IPv6 address that is not link-local, on every interface up at
/// boot (loopback included). Sorted, no duplicates.
pub(crate) fn boot_addresses() -> io::Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().map_err(io::Error::from)? {
        let Some(addr) = ifa.address else { continue };
        let ip = if let Some(v4) = addr.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            let ip = v6.ip();
            // fe80::/10 needs a scope; sshd cannot listen on it by address.
            if (ip.segments()[0] & 0xffc0) == 0xfe80 {
                continue;
            }
            IpAddr::V6(ip)
        } else {
            continue;
        };
        out.push(ip);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Every address of the interface that carries `addr` (`addr` first), IPv6
/// link-local ones with their scope: all the ways a session network's
/// members could address the bastion.
pub(crate) fn interface_addresses(addr: IpAddr) -> io::Result<Vec<SocketAddr>> {
    let all: Vec<_> = nix::ifaddrs::getifaddrs()
        .map_err(io::Error::from)?
        .collect();
    let sock = |ifa: &nix::ifaddrs::InterfaceAddress| -> Option<SocketAddr> {
        let a = ifa.address.as_ref()?;
        if let Some(v4) = a.as_sockaddr_in() {
            Some(SocketAddr::new(IpAddr::V4(v4.ip()), 0))
        } else {
            let v6 = a.as_sockaddr_in6()?;
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                v6.ip(),
                0,
                0,
                v6.scope_id(),
            )))
        }
    };
    let Some(iface) = all
        .iter()
        .find(|ifa| sock(ifa).map(|s| s.ip()) == Some(addr))
        .map(|ifa| ifa.interface_name.clone())
    else {
        return Ok(vec![SocketAddr::new(addr, 0)]);
    };
    let mut out = vec![SocketAddr::new(addr, 0)];
    for s in all
        .iter()
        .filter(|ifa| ifa.interface_name == iface)
        .filter_map(sock)
    {
        if !out.iter().any(|o| o.ip() == s.ip()) {
            out.push(s);
        }
    }
    Ok(out)
}

/// Ports of the bastion held silent on one address for as long as it
/// lives.
pub(crate) struct Shadow {
    _held: Vec<(TcpListener, TcpStream)>,
}

impl Shadow {
    /// Binds `addr`:`port` for each port with a backlog of one connection
    /// and fills that slot with a connection of its own that is never
    /// accepted. Linux drops a SYN for a listener whose accept queue is
    /// full, so every further connection attempt goes unanswered.
    pub(crate) async fn hold(addrs: &[SocketAddr], ports: &[u16]) -> io::Result<Shadow> {
        let mut held = Vec::new();
        // Collected first: no iterator of borrowed closures lives across
        // an await (the future must be Send for the monitor's tasks).
        let mut all = Vec::with_capacity(addrs.len() * ports.len());
        for a in addrs {
            for &p in ports {
                let mut at = *a;
                at.set_port(p);
                all.push(at);
            }
        }
        for at in all {
            let sock = match at {
                SocketAddr::V4(_) => TcpSocket::new_v4()?,
                SocketAddr::V6(_) => TcpSocket::new_v6()?,
            };
            sock.bind(at)
                .map_err(|e| io::Error::new(e.kind(), format!("bind {at}: {e}")))?;
            // Backlog 0: the queue is full with one connection in it.
            let listener = sock.listen(0)?;
            let filler = TcpStream::connect(at)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("fill {at}: {e}")))?;
            held.push((listener, filler));
        }
        Ok(Shadow { _held: held })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    fn free_port() -> u16 {
        std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// What a client sees within `wait`: connected, refused, or nothing.
    async fn attempt(addr: SocketAddr) -> &'static str {
        match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await {
            Ok(Ok(_)) => "connected",
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => "refused",
            Ok(Err(_)) => "other error",
            Err(_) => "no answer",
        }
    }

    #[tokio::test]
    async fn a_shadowed_port_gives_no_answer_where_a_free_one_refuses() {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        // The control: nothing there, the kernel refuses.
        assert_eq!(attempt(addr).await, "refused");
        let shadow = Shadow::hold(&[addr], &[addr.port()]).await.unwrap();
        for _ in 0..3 {
            assert_eq!(attempt(addr).await, "no answer");
        }
        drop(shadow);
        assert_eq!(attempt(addr).await, "refused");
    }

    #[tokio::test]
    async fn a_port_in_use_is_an_error_naming_it() {
        let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let e = Shadow::hold(&[SocketAddr::from((Ipv4Addr::LOCALHOST, 0))], &[port])
            .await
            .err()
            .expect("bound a port in use");
        assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    }

    #[test]
    fn the_interface_of_an_address_is_found_with_all_its_addresses() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let a = interface_addresses(lo).unwrap();
        assert_eq!(a[0].ip(), lo, "{a:?}");
        // Loopback carries ::1 too where IPv6 is on; never another
        // interface's address.
        let others: Vec<IpAddr> = boot_addresses()
            .unwrap()
            .into_iter()
            .filter(|ip| !ip.is_loopback())
            .collect();
        assert!(
            a.iter().all(|s| !others.contains(&s.ip())),
            "{a:?} {others:?}"
        );
    }

    #[test]
    fn boot_addresses_include_loopback_and_no_link_local() {
        let a = boot_addresses().unwrap();
        assert!(a.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{a:?}");
        assert!(
            !a.iter()
                .any(|ip| matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)),
            "{a:?}"
        );
    }
}
