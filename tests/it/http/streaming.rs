//! Output: merged stdout+stderr, streamed as produced, clean end on exit 0,
//! cut without the terminating chunk otherwise, the exit code in a trailer
//! for `TE: trailers`, busy as 200, broker and force mode through the real
//! wrapper.

use super::fixture::*;
use crate::harness::stdout;
use std::io::Write;

#[test]
fn stdout_and_stderr_arrive_merged_in_order() {
    let b = Bastion::start(Opts::force(
        "echo one; echo two >&2; echo three; echo four >&2",
    ));
    let out = b.run(&[]);
    assert_eq!(stdout(&out), "one\ntwo\nthree\nfour\n");
    let w = parse_response(&b.raw(&run_request("Connection: close\r\n")));
    assert_eq!(w.status, 200);
    assert_eq!(w.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(w.header("transfer-encoding"), Some("chunked"));
    assert!(w.terminated);
}

#[test]
fn output_is_streamed_while_the_command_runs() {
    // The command prints, then waits for the test to create a file: the
    // first line can only reach us before the end if it is streamed.
    let b = Bastion::start(Opts::force(
        "echo first; while [ ! -e {w}/go ]; do sleep 0.05; done; echo second",
    ));
    let mut s = b.connect();
    s.write_all(&run_request("")).unwrap();
    let got = read_until(&mut s, "first\n");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(!String::from_utf8_lossy(&got).contains("second"));
    std::fs::write(b.w().join("go"), "").unwrap();
    let rest = read_until(&mut s, "0\r\n\r\n");
    assert!(String::from_utf8_lossy(&rest).contains("second\n"));
}

#[test]
fn exit_zero_ends_the_body_and_keeps_the_connection() {
    let b = Bastion::start(Opts::force("echo ok"));
    let mut s = b.connect();
    s.write_all(&run_request("")).unwrap();
    let first = read_until(&mut s, "0\r\n\r\n");
    let w = parse_response(&first);
    assert!(w.terminated, "{w:?}");
    assert_eq!(w.body_text(), "ok\n");
    // Same connection, second request.
    s.write_all(&run_request("Connection: close\r\n")).unwrap();
    let second = parse_response(&read_to_eof(&mut s));
    assert_eq!(
        (
            second.status,
            second.body_text().as_str(),
            second.terminated
        ),
        (200, "ok\n", true)
    );
}

#[test]
fn non_zero_exit_cuts_the_connection_without_the_last_chunk() {
    let b = Bastion::start(Opts::force("echo partial; echo why >&2; exit 3"));
    let out = b.run(&[]);
    assert_eq!(
        out.status.code(),
        Some(18),
        "curl must see a failed transfer: {out:?}"
    );
    assert_eq!(stdout(&out), "partial\nwhy\n");
    let fail = b.run(&["--fail-with-body"]);
    assert_ne!(fail.status.code(), Some(0));
    assert_eq!(stdout(&fail), "partial\nwhy\n");

    let w = parse_response(&b.raw(&run_request("")));
    assert_eq!(w.status, 200);
    assert_eq!(w.body_text(), "partial\nwhy\n");
    assert!(
        !w.terminated,
        "terminating chunk sent for a failed command: {w:?}"
    );
    b.wait_log(&["status=200", "exit=3"]);
}

#[test]
fn a_failed_command_loses_no_output_before_the_cut() {
    // Much more than the socket buffers: the cut must wait until every
    // byte was written.
    let b = Bastion::start(Opts::force(
        "head -c 3000000 /dev/zero | tr '\\0' a; echo; echo last line; exit 7",
    ));
    for _ in 0..3 {
        let w = parse_response(&b.raw(&run_request("")));
        assert!(!w.terminated);
        assert_eq!(
            w.body.len(),
            3_000_000 + 1 + 10,
            "bytes lost before the cut"
        );
        assert!(w.body_text().ends_with("\nlast line\n"));
    }
    // A failure with no output at all still shows the response head.
    let b = Bastion::start(Opts::force("exit 1"));
    let out = b.run(&["-i"]);
    assert_eq!(out.status.code(), Some(18), "{out:?}");
    assert!(stdout(&out).starts_with("HTTP/1.1 200 OK"));
}

#[test]
fn te_trailers_get_the_exit_code_and_a_clean_end() {
    let b = Bastion::start(Opts::force("echo partial; exit 3"));
    let w = parse_response(&b.raw(&run_request("TE: trailers\r\nConnection: close\r\n")));
    assert!(w.terminated, "{w:?}");
    assert_eq!(w.header("trailer"), Some("x-bastion-exit-code"));
    assert_eq!(
        w.trailers,
        vec![("x-bastion-exit-code".to_owned(), "3".to_owned())]
    );
    assert_eq!(w.body_text(), "partial\n");
    let out = b.run(&["-H", "TE: trailers"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    let ok = Bastion::start(Opts::force("echo fine"));
    for te in ["TE: gzip, Trailers", "TE: gzip\r\nTE: trailers"] {
        let w = parse_response(&ok.raw(&run_request(&format!("{te}\r\nConnection: close\r\n"))));
        assert!(w.terminated);
        assert_eq!(
            w.trailers,
            vec![("x-bastion-exit-code".to_owned(), "0".to_owned())]
        );
    }
    // Not the `trailers` keyword: a failure must then cut the connection,
    // never hide in a trailer that is not sent.
    for te in ["TE: trailers;q=1", "TE: trailer", "TE: gzip"] {
        let w = parse_response(&b.raw(&run_request(&format!("{te}\r\n"))));
        assert!(!w.terminated && w.trailers.is_empty(), "{te}: {w:?}");
    }
    // Without TE: trailers, no trailer (and none announced).
    let w = parse_response(&ok.raw(&run_request("Connection: close\r\n")));
    assert!(
        w.terminated && w.trailers.is_empty() && w.header("trailer").is_none(),
        "{w:?}"
    );
}

#[test]
fn busy_lock_answers_200_with_the_busy_line() {
    let b = Bastion::start(Opts::force("echo ran"));
    let lock = std::fs::File::open(b.tmp.join("command.lock")).unwrap();
    lock.try_lock().unwrap();
    let out = b.run(&[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(stdout(&out), "busy: another run is in progress\n");
    lock.unlock().unwrap();
    assert_eq!(stdout(&b.run(&[])), "ran\n");
}

#[test]
fn broker_mode_runs_allowed_requests_and_shows_denials() {
    let b = Bastion::start(Opts::broker("echo [a-z ]+\nprintf .*"));
    let out = b.run(&["-H", "X-Bastion-Command: echo hello world"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout(&out).ends_with("hello world\n"), "{}", stdout(&out));

    // Shell metacharacters are plain arguments: nothing else runs.
    let pwned = b.w().join("pwned");
    let req = format!("X-Bastion-Command: printf %s; touch {}", pwned.display());
    let out = b.run(&["-H", &req]);
    assert!(!pwned.exists());
    assert!(stdout(&out).contains("\ntouch;"), "{}", stdout(&out));

    let denied = b.run(&["-H", "X-Bastion-Command: rm -rf /tmp/x"]);
    assert_eq!(denied.status.code(), Some(18), "{denied:?}");
    assert!(
        stdout(&denied).contains("[broker] DENY: rm -rf /tmp/x"),
        "{}",
        stdout(&denied)
    );
    let w = parse_response(&b.raw(&run_request(
        "X-Bastion-Command: rm -rf /tmp/x\r\nTE: trailers\r\nConnection: close\r\n",
    )));
    assert_eq!(
        w.trailers,
        vec![("x-bastion-exit-code".to_owned(), "126".to_owned())]
    );

    // Bytes that are not UTF-8 (a header may carry them): refused by the
    // broker, escaped in the log.
    let mut req = run_request("TE: trailers\r\nConnection: close\r\n");
    let at = req.len() - 2;
    req.splice(
        at..at,
        b"X-Bastion-Command: echo \xff\xfe\r\n".iter().copied(),
    );
    let w = parse_response(&b.raw(&req));
    assert_eq!(w.trailers[0].1, "126", "{w:?}");
    b.wait_log(&["command=\"echo \\xff\\xfe\""]);

    // No header: an empty request, refused without a prefix.
    let none = parse_response(&b.raw(&run_request("TE: trailers\r\nConnection: close\r\n")));
    assert_eq!(none.trailers[0].1, "126", "{none:?}");
    let line = b.wait_log(&["exit=126", "command=\"rm -rf /tmp/x\""]);
    assert!(line.contains("who=bearer"), "{line}");
}

#[test]
fn force_mode_ignores_the_requested_command() {
    let b = Bastion::start(Opts::force("echo forced; env"));
    let pwned = b.w().join("pwned");
    let req = format!("X-Bastion-Command: touch {}", pwned.display());
    let out = b.run(&["-H", &req]);
    let text = stdout(&out);
    assert!(text.starts_with("forced\n"), "{text}");
    assert!(!pwned.exists());
    // The command's environment is the wrapper's clean one: no request, no
    // credentials.
    assert!(!text.contains("SSH_ORIGINAL_COMMAND"), "{text}");
    assert!(!text.contains("HTTP_"), "{text}");
    assert!(!text.contains(TOKEN), "{text}");
    assert!(text.contains("USER=agent"), "{text}");
}

#[test]
fn two_x_bastion_command_headers_are_refused() {
    let b = Bastion::start(Opts::broker("echo .*"));
    let w = parse_response(&b.raw(&run_request(
        "X-Bastion-Command: echo a\r\nX-Bastion-Command: echo b\r\n",
    )));
    assert_eq!(w.status, 400, "{w:?}");
    assert_eq!(w.header("connection"), Some("close"));
}
