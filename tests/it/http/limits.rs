//! Defences, checked on the wire with raw TCP: head size (431), request
//! bodies (413), Transfer-Encoding and ambiguous lengths (400, connection
//! closed, nothing smuggled), slow clients, the command bound (503), and a
//! client disconnect killing the whole process tree.

use super::fixture::*;
use crate::harness::{stdout, wait_until};
use std::io::Write;
use std::time::Duration;

/// The force command of these tests leaves a trace when it runs.
fn marked() -> Bastion {
    Bastion::start(Opts::force("touch {w}/ran; echo ran"))
}

fn ran(b: &Bastion) -> bool {
    b.w().join("ran").exists()
}

#[test]
fn a_head_over_8_kib_gets_431() {
    let b = marked();
    let base = run_request("").len();
    // Just under the limit is served...
    let pad = 8 * 1024 - base - "X-Pad: \r\n".len();
    let ok = run_request(&format!(
        "X-Pad: {}\r\nConnection: close\r\n",
        "a".repeat(pad - 19)
    ));
    assert!(ok.len() <= 8 * 1024);
    let w = parse_response(&b.raw(&ok));
    assert_eq!((w.status, w.body_text().as_str()), (200, "ran\n"));
    std::fs::remove_file(b.w().join("ran")).unwrap();
    // ...one line more is not, whether the head is complete or not.
    for req in [
        run_request(&format!("X-Pad: {}\r\n", "a".repeat(8 * 1024))),
        run_request(&"X-Many: a\r\n".repeat(120)),
        run_request(&format!("X-Pad: {}", "a".repeat(64 * 1024))),
    ] {
        let raw = b.raw(&req);
        let w = parse_response(&raw);
        assert_eq!(w.status, 431, "{}", String::from_utf8_lossy(&raw));
        assert!(w.rest.is_empty());
    }
    assert!(!ran(&b));
    b.wait_log(&["status=431", "note=\"request head too large\""]);
}

#[test]
fn a_request_body_gets_413_and_runs_nothing() {
    let b = marked();
    let out = b.run(&["-i", "-d", "payload"]);
    let text = stdout(&out);
    assert!(text.starts_with("HTTP/1.1 413 "), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    // The body is not read as a second request.
    let mut req = run_request("Content-Length: 5\r\n");
    req.extend_from_slice(b"helloGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let raw = b.raw(&req);
    let w = parse_response(&raw);
    assert_eq!(w.status, 413);
    assert!(
        w.rest.is_empty(),
        "a second response: {}",
        String::from_utf8_lossy(&w.rest)
    );
    assert!(!ran(&b));
    // An empty body is no body.
    let w = parse_response(&b.raw(&run_request("Content-Length: 0\r\nConnection: close\r\n")));
    assert_eq!(w.status, 200);
}

#[test]
fn transfer_encoding_and_ambiguous_lengths_get_400_and_close() {
    let b = marked();
    // After each head, a smuggled request: it must never be answered.
    let smuggled = "0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let cases = [
        // hyper passes these to us: refused by the listener.
        (
            "chunked",
            "Transfer-Encoding: chunked\r\n",
            "Transfer-Encoding",
        ),
        (
            "mixed case",
            "tRaNsFeR-eNcOdInG: ChUnKeD\r\n",
            "Transfer-Encoding",
        ),
        (
            "CL+TE",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding",
        ),
        (
            "TE+CL",
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
            "Transfer-Encoding",
        ),
        (
            "identical CL twice",
            "Content-Length: 0\r\nContent-Length: 0\r\n",
            "Content-Length",
        ),
        (
            "CL, CL split",
            "Content-Length: 0\r\ncontent-length: 0\r\n",
            "Content-Length",
        ),
        // hyper refuses these itself, with an empty 400.
        ("space before colon", "Transfer-Encoding : chunked\r\n", ""),
        ("not chunked", "Transfer-Encoding: gzip\r\n", ""),
        (
            "chunked, then gzip",
            "Transfer-Encoding: chunked, gzip\r\n",
            "",
        ),
        (
            "different CLs",
            "Content-Length: 0\r\nContent-Length: 5\r\n",
            "",
        ),
        ("CL list", "Content-Length: 0, 5\r\n", ""),
        ("obs-fold", "Transfer-Encoding:\r\n chunked\r\n", ""),
    ];
    for (what, headers, says) in cases {
        let mut req = run_request(headers);
        req.extend_from_slice(smuggled.as_bytes());
        let raw = b.raw(&req);
        let w = parse_response(&raw);
        assert_eq!(w.status, 400, "{what}: {}", String::from_utf8_lossy(&raw));
        assert!(w.body_text().contains(says), "{what}: {}", w.body_text());
        assert!(
            w.rest.is_empty(),
            "{what}: the smuggled request was answered: {}",
            String::from_utf8_lossy(&w.rest)
        );
        if !says.is_empty() {
            assert_eq!(w.header("connection"), Some("close"), "{what}");
        }
    }
    // HTTP/1.0 with Transfer-Encoding (hyper).
    let w = parse_response(&b.raw(
        format!("GET /cgi-bin/run HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n{smuggled}").as_bytes(),
    ));
    assert_eq!(w.status, 400);
    assert!(w.rest.is_empty());
    assert!(!ran(&b), "a command ran for a refused request");
    b.wait_log(&["status=400", "path=/cgi-bin/run", "who=-"]);
}

#[test]
fn http_1_0_cannot_run_commands() {
    let b = marked();
    let w = parse_response(&b.raw(
        format!("GET /cgi-bin/run HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n").as_bytes(),
    ));
    assert_eq!(w.status, 505);
    assert!(!ran(&b));
    let w = parse_response(&b.raw(b"GET /healthz HTTP/1.0\r\n\r\n"));
    assert_eq!(w.status, 200);
}

#[test]
fn a_slow_client_is_cut_off_after_the_header_timeout() {
    let b = Bastion::start(
        Opts::force("touch {w}/ran")
            .arg("--header-timeout")
            .arg("1"),
    );
    let mut s = b.connect();
    s.write_all(b"GET /cgi-bin/run HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = std::time::Instant::now();
    let got = read_to_eof(&mut s);
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    assert!(started.elapsed() >= Duration::from_millis(900));
    // Dribbling bytes does not extend it.
    let mut s = b.connect();
    s.write_all(b"GET /cgi-bin/run HTTP/1.1\r\n").unwrap();
    let dribble = std::thread::spawn({
        let mut s = s.try_clone().unwrap();
        move || {
            for _ in 0..100 {
                if s.write_all(b"X-A: b\r\n").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    });
    let got = read_to_eof(&mut s);
    assert!(got.is_empty());
    dribble.join().unwrap();
    // A connection that never sends anything is cut too.
    let mut idle = b.connect();
    assert!(read_to_eof(&mut idle).is_empty());
    assert!(!b.w().join("ran").exists());
    b.wait_log(&["note=\"header timeout\""]);
}

#[test]
fn more_commands_than_the_bound_get_503() {
    let b = Bastion::start(
        Opts::force("echo started; while [ ! -e {w}/go ]; do sleep 0.05; done; echo done")
            .lock("none")
            .arg("--max-commands")
            .arg("2"),
    );
    let mut running = Vec::new();
    for _ in 0..2 {
        let mut s = b.connect();
        s.write_all(&run_request("Connection: close\r\n")).unwrap();
        let head = read_until(&mut s, "started");
        running.push((s, head));
    }
    let out = b.run(&["-i"]);
    let text = stdout(&out);
    assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("retry-after: 1"),
        "{text}"
    );
    // /healthz is not a command.
    assert!(stdout(&b.curl("/healthz", &["-i"])).starts_with("HTTP/1.1 200 "));
    std::fs::write(b.w().join("go"), "").unwrap();
    for (mut s, mut got) in running {
        got.extend(read_to_eof(&mut s));
        let w = parse_response(&got);
        assert_eq!(w.body_text(), "started\ndone\n");
    }
    // Slots are given back.
    assert!(wait_until(PATIENCE, || stdout(&b.run(&[])) == "started\ndone\n"));
    b.wait_log(&["status=503"]);
}

#[test]
fn a_client_disconnect_kills_the_whole_tree_and_releases_the_lock() {
    // A child in the background, a grandchild in a subshell, and the shell
    // itself: all must die when the client goes away.
    let b = Bastion::start(Opts::force(
        "sleep 1000 & echo $! > {w}/child; (sleep 1001 & echo $! > {w}/grandchild; wait) & \
         echo $$ > {w}/shell; while [ ! -s {w}/grandchild ]; do sleep 0.02; done; echo started; wait",
    ));
    let mut s = b.connect();
    s.write_all(&run_request("")).unwrap();
    read_until(&mut s, "started");
    let pid = |name: &str| -> u32 {
        std::fs::read_to_string(b.w().join(name))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let pids = [pid("shell"), pid("child"), pid("grandchild")];
    assert!(pids.iter().all(|&p| alive(p)));
    // The lock is held by the tree meanwhile.
    let lock = std::fs::File::open(b.tmp.join("command.lock")).unwrap();
    assert!(lock.try_lock().is_err());
    drop(s);
    assert!(
        wait_until(PATIENCE, || pids.iter().all(|&p| !alive(p))),
        "still running after the client left: {:?}",
        pids.iter().filter(|&&p| alive(p)).collect::<Vec<_>>()
    );
    assert!(
        wait_until(PATIENCE, || lock.try_lock().is_ok()),
        "lock not released"
    );
    lock.unlock().unwrap();
    b.wait_log(&["status=200", "exit=killed"]);
    // The next request runs normally (not busy).
    std::fs::remove_file(b.w().join("grandchild")).unwrap();
    let mut s = b.connect();
    s.write_all(&run_request("")).unwrap();
    read_until(&mut s, "started");
}

#[test]
fn a_finished_command_leaves_nothing_running() {
    // The shell exits at once; its background child closed the output.
    let b = Bastion::start(Opts::force(
        "sleep 1000 >/dev/null 2>&1 & echo $! > {w}/child; echo done",
    ));
    assert_eq!(stdout(&b.run(&[])), "done\n");
    let child: u32 = std::fs::read_to_string(b.w().join("child"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        wait_until(PATIENCE, || !alive(child)),
        "leftover {child} still running"
    );
    let lock = std::fs::File::open(b.tmp.join("command.lock")).unwrap();
    assert!(wait_until(PATIENCE, || lock.try_lock().is_ok()));
}

#[test]
fn sigterm_kills_running_commands_and_stops() {
    let mut b = Bastion::start(Opts::force("echo $$ > {w}/shell; echo started; sleep 1000"));
    let mut s = b.connect();
    s.write_all(&run_request("")).unwrap();
    let mut all = read_until(&mut s, "started");
    let shell: u32 = std::fs::read_to_string(b.w().join("shell"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let status = b.stop();
    assert_eq!(status.code(), Some(0), "{}", b.err.text());
    assert!(wait_until(PATIENCE, || !alive(shell)));
    assert!(b.err.text().contains("SIGTERM"));
    // The client is told the command did not finish: no clean end.
    let _ = std::io::Read::read_to_end(&mut s, &mut all);
    let w = parse_response(&all);
    assert_eq!(w.body_text(), "started\n");
    assert!(!w.terminated, "{}", String::from_utf8_lossy(&all));
    b.wait_log(&["exit=killed", "note=\"listener stopping\""]);
}

#[test]
fn a_client_that_stops_reading_is_cut_off_and_its_command_killed() {
    // Endless output, a client that never reads: once every buffer is
    // full, the command waits on it; after the stall timeout it is killed
    // and the lock released, instead of holding both forever.
    let b = Bastion::start(
        Opts::force("echo $$ > {w}/shell; exec yes")
            .arg("--stall-timeout")
            .arg("1"),
    );
    let mut s = b.connect();
    s.write_all(&run_request("")).unwrap();
    let line = b.wait_log(&["exit=killed", "note=\"client read nothing for 1 s\""]);
    assert!(line.contains("status=200"), "{line}");
    let shell: u32 = std::fs::read_to_string(b.w().join("shell"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(wait_until(PATIENCE, || !alive(shell)));
    let lock = std::fs::File::open(b.tmp.join("command.lock")).unwrap();
    assert!(wait_until(PATIENCE, || lock.try_lock().is_ok()));
    // Reading now, the client finds the connection cut, not a clean end.
    let got = read_to_eof(&mut s);
    assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(!got.ends_with(b"0\r\n\r\n"), "a clean end after a kill");
    // A command that is merely silent for longer is not affected.
    let quiet = Bastion::start(
        Opts::force("sleep 2; echo late")
            .arg("--stall-timeout")
            .arg("1"),
    );
    assert_eq!(stdout(&quiet.run(&[])), "late\n");
}

/// A vanished client's command gets SIGTERM first, with time to clean up
/// (a runner must remove what it started); one that ignores SIGTERM is
/// killed after the grace.
#[test]
fn a_vanished_client_s_command_gets_sigterm_then_sigkill() {
    let b = Bastion::start(Opts::force(
        "if [ -e {w}/stubborn ]; then trap '' TERM; else trap 'echo cleaned > {w}/cleaned; exit 0' TERM; fi; \
         echo $$ > {w}/shell; echo started; while :; do sleep 1000 & wait; done",
    ));
    let shell = || -> u32 {
        std::fs::read_to_string(b.w().join("shell"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let mut s = b.connect();
    s.write_all(&run_request("")).unwrap();
    read_until(&mut s, "started");
    let polite = shell();
    drop(s);
    assert!(
        wait_until(PATIENCE, || b.w().join("cleaned").exists()),
        "the command was not given SIGTERM to clean up: {}",
        b.log.text()
    );
    assert!(wait_until(PATIENCE, || !alive(polite)));
    b.wait_log(&["exit=killed", "note=\"client gone\""]);

    std::fs::write(b.w().join("stubborn"), "").unwrap();
    std::fs::remove_file(b.w().join("shell")).unwrap();
    let mut s = b.connect();
    s.write_all(&run_request("")).unwrap();
    read_until(&mut s, "started");
    let stubborn = shell();
    drop(s);
    assert!(
        wait_until(PATIENCE, || !alive(stubborn)),
        "a command ignoring SIGTERM outlived its client"
    );
    let lock = std::fs::File::open(b.tmp.join("command.lock")).unwrap();
    assert!(wait_until(PATIENCE, || lock.try_lock().is_ok()));
}
