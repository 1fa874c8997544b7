//! Request heads another HTTP parser may split differently from hyper
//! (bare LF or bare CR as a line end, line folding, control characters):
//! answered 400 with the connection closed, on raw TCP, and nothing runs,
//! not even the command a proxy in front would have seen hidden in a header.

use super::fixture::*;
use std::io::Write;

/// Broker mode: the only way to run anything is an `X-Bastion-Command`.
fn bastion() -> Bastion {
    Bastion::start(Opts::broker("touch [^ ]+"))
}

fn ran(b: &Bastion) -> bool {
    b.w().join("ran").exists()
}

/// Heads hiding a command header behind a fault; `{cmd}` is the header.
const FAULTY: &[(&str, &str)] = &[
    ("bare LF between headers", "X-Foo: a\n{cmd}\r\n"),
    ("bare LF after the command", "{cmd}\nX-Foo: a\r\n"),
    ("bare LF ending the head", "{cmd}\r\n\n"),
    ("bare CR between headers", "X-Foo: a\r{cmd}\r\n"),
    ("CR CR LF", "{cmd}\r\r\n"),
    ("obs-fold after the command", "{cmd}\r\n x\r\n"),
    ("tab fold", "X-Foo: a\r\n\t{cmd}\r\n"),
    ("NUL in a value", "X-Foo: a\0b\r\n{cmd}\r\n"),
    ("DEL in a value", "X-Foo: a\x7fb\r\n{cmd}\r\n"),
    ("ESC in a value", "X-Foo: a\x1b[2Jb\r\n{cmd}\r\n"),
];

fn faulty_head(b: &Bastion, headers: &str) -> Vec<u8> {
    let cmd = format!("X-Bastion-Command: touch {}/ran", b.w().display());
    let mut req = run_request(&headers.replace("{cmd}", &cmd));
    // `run_request` ends the head with CRLF; the bare-LF-ending case ends
    // it itself.
    if headers.ends_with("\n\n") {
        req.truncate(req.len() - 2);
    }
    req
}

#[test]
fn heads_with_bare_lf_bare_cr_folding_or_controls_get_400_and_run_nothing() {
    let b = bastion();
    let smuggled = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    for (what, headers) in FAULTY {
        let mut req = faulty_head(&b, headers);
        req.extend_from_slice(smuggled);
        let raw = b.raw(&req);
        let w = parse_response(&raw);
        assert_eq!(w.status, 400, "{what}: {}", String::from_utf8_lossy(&raw));
        assert!(
            w.rest.is_empty(),
            "{what}: the request after it was answered: {}",
            String::from_utf8_lossy(&w.rest)
        );
        assert!(!ran(&b), "{what}: the hidden command ran");
    }
    // The same heads with CRLF everywhere are served (the faults are what
    // is refused, not the headers).
    let cmd = format!("X-Bastion-Command: touch {}/ran", b.w().display());
    let good = run_request(&format!("X-Foo: a\r\n{cmd}\r\nConnection: close\r\n"));
    let w = parse_response(&b.raw(&good));
    assert_eq!(w.status, 200, "{}", w.body_text());
    assert!(ran(&b), "a well-formed request did not run");
    let line = b.wait_log(&["status=400", "line of the request head ends in LF"]);
    assert!(line.contains("path=/cgi-bin/run"), "{line}");
}

#[test]
fn a_faulty_head_after_a_good_one_on_a_keep_alive_connection_is_refused() {
    let b = bastion();
    let mut s = b.connect();
    let mut req = run_request(&format!(
        "X-Bastion-Command: touch {}/first\r\n",
        b.w().display()
    ));
    req.extend_from_slice(&faulty_head(&b, "X-Foo: a\n{cmd}\r\n"));
    req.extend_from_slice(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    s.write_all(&req).unwrap();
    let raw = read_to_eof(&mut s);
    let first = parse_response(&raw);
    assert_eq!(first.status, 200, "{}", String::from_utf8_lossy(&raw));
    assert!(first.terminated, "{}", String::from_utf8_lossy(&raw));
    let second = parse_response(&first.rest);
    assert_eq!(second.status, 400, "{}", String::from_utf8_lossy(&raw));
    assert_eq!(second.header("connection"), Some("close"));
    assert!(
        second.body_text().contains("LF without CR"),
        "{}",
        second.body_text()
    );
    assert!(second.rest.is_empty(), "{}", String::from_utf8_lossy(&raw));
    assert!(b.w().join("first").exists());
    assert!(!ran(&b));
}
