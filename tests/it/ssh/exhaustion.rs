//! Connection exhaustion against the real listening sshd, with bounded
//! floods: idle unauthenticated connections from one address must not lock
//! everyone else out, authenticated connections without a session are
//! closed, and a CI fleet behind one address still gets 20 sessions at once.

use super::fixture::{spawn, Bastion};
use crate::harness::{self, output, stderr, stdout};
use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// A flooder at `source` (another loopback address, so it is a different
/// client than the test's own logins): opens TCP connections to
/// 127.0.0.1:`port` that never say anything, and reconnects whenever sshd
/// drops one, until `want` are held or `attempts` were made (bounded).
/// Returns the connections sshd holds.
fn idle_flood(source: Ipv4Addr, port: u16, want: usize, attempts: usize) -> Vec<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut kept = Vec::new();
    for _ in 0..attempts {
        if kept.len() == want {
            break;
        }
        let mut s = rt.block_on(async {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            s.bind(SocketAddr::from((source, 0))).unwrap();
            let c = s
                .connect(SocketAddr::from(([127, 0, 0, 1], port)))
                .await
                .unwrap();
            c.into_std().unwrap()
        });
        if held(&mut s) {
            kept.push(s);
        }
    }
    kept
}

/// What sshd did with a flood connection: sent its banner and now waits
/// for the client (held), or refused it at once (dropped, with "Exceeded
/// MaxStartups" or nothing).
fn held(s: &mut TcpStream) -> bool {
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) | Err(_) => false,
        Ok(n) if buf[..n].starts_with(b"Exceeded MaxStartups") => false,
        Ok(n) => {
            let got = String::from_utf8_lossy(&buf[..n]);
            assert!(got.starts_with("SSH-2.0-"), "{got:?}");
            true
        }
    }
}

/// The template's per-source limit, read from the rendered config.
fn per_source_max_startups(cfg: &str) -> usize {
    cfg.lines()
        .find_map(|l| l.strip_prefix("PerSourceMaxStartups "))
        .expect("PerSourceMaxStartups is set")
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn idle_unauthenticated_connections_do_not_block_a_new_login() {
    let b = Bastion::new("exh-idle").force("echo in");
    let d = b.start();
    let cfg = std::fs::read_to_string(b.root.join("run/bastion/sshd_config")).unwrap();
    let limit = per_source_max_startups(&cfg);
    // The flood that blocked every login: 70 idle connections, reopened
    // as sshd drops them (at most 400 attempts).
    let flood = idle_flood(Ipv4Addr::new(127, 0, 0, 2), d.port, 70, 400);
    let kept = flood.len();
    assert!(kept > 0, "the flood never reached sshd");
    assert!(
        kept <= limit,
        "{kept} idle connections from one address were kept (limit {limit})"
    );
    // With the flood still open, a client from another address logs in.
    let out = output(&mut harness::ssh_to_port(d.port, &b.key));
    assert_eq!(
        out.status.code(),
        Some(0),
        "login blocked by the flood: {}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "in\n");
    drop(flood);
}

#[test]
fn connections_without_a_session_are_closed_and_sessions_are_not() {
    let b = Bastion::new("exh-unused")
        .force("sleep 4; echo done")
        .edit_template("UnusedConnectionTimeout 60", "UnusedConnectionTimeout 2");
    let d = b.start();
    // `ssh -N` opens no session: sshd closes the connection.
    let mut idle: Vec<_> = (0..5)
        .map(|_| spawn(harness::ssh_to_port(d.port, &b.key).arg("-N")))
        .collect();
    let all_closed = harness::wait_until(Duration::from_secs(60), || {
        idle.iter_mut().all(|c| c.try_wait().unwrap().is_some())
    });
    for c in &mut idle {
        let _ = c.kill();
        let _ = c.wait();
    }
    assert!(all_closed, "ssh -N connections stayed open");
    // A session that runs longer than the timeout is not cut.
    let out = output(&mut harness::ssh_to_port(d.port, &b.key));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "done\n");
}

#[test]
fn twenty_sessions_at_once_from_one_address_all_run() {
    const N: usize = 20;
    let b = Bastion::new("exh-fleet").env("COMMAND_LOCK", "none");
    let dir = b.writable_dir();
    // Each session waits until all N run at the same time (bounded).
    let cmd = format!(
        "touch {d}/$$; i=0; while [ $(ls {d} | wc -l) -lt {N} ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; ls {d} | wc -l",
        d = dir.display()
    );
    let b = b.force(&cmd);
    let d = b.start();
    let clients: Vec<_> = (0..N)
        .map(|_| spawn(&mut harness::ssh_to_port(d.port, &b.key)))
        .collect();
    for c in clients {
        let out = c.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out).trim(), N.to_string());
    }
}
