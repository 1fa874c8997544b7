//! Connection limits on the wire: a CI fleet of 20 behind one address is
//! served at once by default, a flood of idle connections from one address
//! gets 503 beyond the per-address cap while other addresses are served,
//! and accepted connections carry TCP keepalive so a vanished client is
//! noticed. Floods are bounded (a few hundred connections, each closed).

use super::fixture::*;
use crate::harness::{stdout, wait_until};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};

/// The listener's default per-address cap (`--max-per-source`).
const DEFAULT_CAP: usize = 32;

#[test]
fn twenty_clients_behind_one_address_run_at_once_by_default() {
    // Each run waits until 20 runs are in progress (or gives up after
    // ~15 s) and prints how many it saw.
    let b = Bastion::start(
        Opts::force(
            "touch {w}/m.$$; i=0; \
             while [ \"$(ls {w} | grep -c '^m[.]')\" -lt 20 ] && [ $i -lt 300 ]; do sleep 0.05; i=$((i+1)); done; \
             ls {w} | grep -c '^m[.]'",
        )
        .lock("none"),
    );
    let outs: Vec<String> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..20).map(|_| s.spawn(|| stdout(&b.run(&[])))).collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for out in outs {
        assert_eq!(out, "20\n", "a run did not see all 20 running at once");
    }
}

fn healthz_from(b: &Bastion, source: &str) -> String {
    stdout(&b.curl(
        "/healthz",
        &["-i", "--interface", source, "-H", "Connection: close"],
    ))
}

#[test]
fn a_flood_from_one_address_gets_503_beyond_the_cap_and_others_are_served() {
    let b = Bastion::start(Opts::force("echo ran").arg("--header-timeout").arg("120"));
    // Idle connections that never send a head hold their slots.
    let idle: Vec<TcpStream> = (0..DEFAULT_CAP).map(|_| b.connect()).collect();
    // Once all are accepted, the next one from the same address is refused.
    assert!(
        wait_until(PATIENCE, || healthz_from(&b, "127.0.0.1")
            .starts_with("HTTP/1.1 503 ")),
        "no 503 with {DEFAULT_CAP} connections open"
    );
    let refused = healthz_from(&b, "127.0.0.1");
    assert!(
        refused.contains("too many connections from your address (at most 32)"),
        "{refused}"
    );
    assert!(
        refused.to_ascii_lowercase().contains("retry-after: 1"),
        "{refused}"
    );
    // A bounded burst on top: every one is refused or closed, none served.
    for _ in 0..200 {
        let mut s = b.connect();
        s.write_all(&run_request("Connection: close\r\n")).unwrap();
        let raw = read_to_eof(&mut s);
        assert!(
            raw.is_empty() || raw.starts_with(b"HTTP/1.1 503 "),
            "{}",
            String::from_utf8_lossy(&raw)
        );
    }
    assert!(!b.err.text().contains("accept failed"), "{}", b.err.text());
    // Another address is served all along, commands included.
    assert!(healthz_from(&b, "127.0.0.2").starts_with("HTTP/1.1 200 "));
    let auth = format!("Authorization: Bearer {TOKEN}");
    let out = b.curl(
        "/cgi-bin/run",
        &["--interface", "127.0.0.2", "-H", auth.as_str()],
    );
    assert_eq!(stdout(&out), "ran\n");
    b.wait_log(&[
        "status=503",
        "note=\"too many connections from this address\"",
    ]);
    // Slots come back when the flood goes away.
    drop(idle);
    assert!(wait_until(PATIENCE, || healthz_from(&b, "127.0.0.1")
        .starts_with("HTTP/1.1 200 ")));
    assert_eq!(stdout(&b.run(&[])), "ran\n");
}

#[test]
fn the_cap_is_per_address_and_can_be_set() {
    let b = Bastion::start(Opts::force("echo ran").arg("--max-per-source").arg("2"));
    let held: Vec<TcpStream> = (0..2).map(|_| b.connect()).collect();
    assert!(wait_until(PATIENCE, || healthz_from(&b, "127.0.0.1")
        .contains("(at most 2)")));
    assert!(healthz_from(&b, "127.0.0.3").starts_with("HTTP/1.1 200 "));
    drop(held);
    assert!(wait_until(PATIENCE, || healthz_from(&b, "127.0.0.1")
        .starts_with("HTTP/1.1 200 ")));
}

/// `/proc/net/tcp` encoding of an IPv4 socket address.
fn proc_net_addr(a: SocketAddr) -> String {
    let SocketAddr::V4(a) = a else {
        panic!("IPv4 only: {a}")
    };
    let o = a.ip().octets();
    format!(
        "{:02X}{:02X}{:02X}{:02X}:{:04X}",
        o[3],
        o[2],
        o[1],
        o[0],
        a.port()
    )
}

#[test]
fn accepted_connections_have_tcp_keepalive() {
    let b = Bastion::start(
        Opts::force("echo started; while [ ! -e {w}/go ]; do sleep 0.05; done; echo done")
            .lock("none"),
    );
    let mut s = b.connect();
    s.write_all(&run_request("Connection: close\r\n")).unwrap();
    let mut got = read_until(&mut s, "started");
    // The listener's end of this connection: local = the listener,
    // remote = us. Its timer column says `02` (keepalive) with the
    // listener's idle time, where a socket without keepalive shows `00`.
    let (local, remote) = (
        proc_net_addr(b.addr),
        proc_net_addr(s.local_addr().unwrap()),
    );
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let line = table
        .lines()
        .find(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 5 && f[1] == local && f[2] == remote
        })
        .unwrap_or_else(|| panic!("no {local} {remote} in\n{table}"));
    let timer = line.split_whitespace().nth(5).unwrap();
    let (kind, when) = timer.split_once(':').unwrap();
    assert_eq!(kind, "02", "no keepalive timer: {line}");
    // In clock ticks (USER_HZ, 100 a second): the first probe within the
    // listener's 60 s, not the kernel's default two hours.
    let when = u64::from_str_radix(when, 16).unwrap();
    assert!(when <= 60 * 100, "keepalive idle time {when} ticks: {line}");
    std::fs::write(b.w().join("go"), "").unwrap();
    got.extend(read_to_eof(&mut s));
    let w = parse_response(&got);
    assert_eq!(w.body_text(), "started\ndone\n");
}
