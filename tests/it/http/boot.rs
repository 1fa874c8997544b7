//! Starting the listener: every configuration problem is reported at once
//! with exit 78 and never shows a secret; an unsafe setup is refused.

use super::fixture::*;
use crate::harness::{output, stderr, TempDir};

/// Runs the listener with `vars` and expects it to refuse to start.
fn refused(opts: Opts, code: i32) -> String {
    let tmp = TempDir::new("http-boot");
    let mut c = command(&tmp, &opts);
    let out = output(&mut c);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}",
        crate::harness::describe(&c, &out)
    );
    let err = stderr(&out);
    assert!(!err.contains("listening on"), "{err}");
    err
}

#[test]
fn malformed_credentials_exit_78_without_showing_them() {
    let err = refused(
        Opts::force("true").only_env(&[
            ("HTTP_BASIC_AUTH", "nocolon-Secret"),
            ("HTTP_TOKEN", "has space Secret"),
        ]),
        78,
    );
    assert!(
        err.contains("config error: HTTP_BASIC_AUTH: must be `user:password`"),
        "{err}"
    );
    assert!(
        err.contains("config error: HTTP_TOKEN: may only contain printable ASCII"),
        "{err}"
    );
    assert!(!err.contains("Secret"), "a secret was printed:\n{err}");
    for (var, value, says) in [
        ("HTTP_BASIC_AUTH", ":Secret", "empty user name"),
        ("HTTP_BASIC_AUTH", "user:", "empty password"),
        ("HTTP_BASIC_AUTH", "user:pa\tSecret", "control character"),
        ("HTTP_TOKEN", "tok\u{e9}Secret", "printable ASCII"),
    ] {
        let err = refused(Opts::force("true").only_env(&[(var, value)]), 78);
        assert!(err.contains(var) && err.contains(says), "{var}: {err}");
        assert!(!err.contains("Secret"), "{err}");
    }
    let long = "x".repeat(5000);
    let err = refused(Opts::force("true").only_env(&[("HTTP_TOKEN", &long)]), 78);
    assert!(err.contains("longer than 4096"), "{err}");
}

#[test]
fn no_credentials_means_no_listener() {
    let err = refused(Opts::force("true").only_env(&[]), 78);
    assert!(err.contains("no HTTP credentials"), "{err}");
}

#[test]
fn secret_files_must_be_private_and_unambiguous() {
    let tmp = TempDir::new("http-secret");
    let open = tmp.write("open", "Secret-token\n");
    crate::harness::set_mode(&open, 0o644);
    let err = refused(
        Opts::force("true").only_env(&[("HTTP_TOKEN_FILE", open.to_str().unwrap())]),
        78,
    );
    assert!(
        err.contains("HTTP_TOKEN_FILE") && err.contains("readable by the session user agent"),
        "{err}"
    );
    assert!(!err.contains("Secret-token"), "{err}");

    let private = tmp.write("private", "Secret-token\n");
    crate::harness::set_mode(&private, 0o600);
    let err = refused(
        Opts::force("true").only_env(&[
            ("HTTP_TOKEN_FILE", private.to_str().unwrap()),
            ("HTTP_TOKEN", "Secret-token"),
        ]),
        78,
    );
    assert!(
        err.contains("set only one of HTTP_TOKEN and HTTP_TOKEN_FILE"),
        "{err}"
    );

    let err = refused(
        Opts::force("true").only_env(&[("HTTP_BASIC_AUTH_FILE", "/nonexistent/secret")]),
        78,
    );
    assert!(
        err.contains("HTTP_BASIC_AUTH_FILE=\"/nonexistent/secret\": cannot read the file"),
        "{err}"
    );

    let bad = tmp.write("bad", "no-colon-Secret\n");
    crate::harness::set_mode(&bad, 0o400);
    let err = refused(
        Opts::force("true").only_env(&[("HTTP_BASIC_AUTH_FILE", bad.to_str().unwrap())]),
        78,
    );
    assert!(
        err.contains("the file's content must be `user:password`"),
        "{err}"
    );
    assert!(!err.contains("no-colon-Secret"), "{err}");

    // The private file works, with its trailing newline dropped.
    let b = Bastion::start(
        Opts::force("echo ran").only_env(&[("HTTP_TOKEN_FILE", private.to_str().unwrap())]),
    );
    let out = b.curl(
        "/cgi-bin/run",
        &["-H", "Authorization: Bearer Secret-token"],
    );
    assert_eq!(crate::harness::stdout(&out), "ran\n");
}

#[test]
fn garbage_on_the_credentials_pipe_exits_78() {
    for wire in [&b""[..], b"bearer", b"digest\nx", b"basic\nnocolon-Secret"] {
        let mut o = Opts::force("true");
        o.auth = Auth::Stdin(wire.to_vec());
        let tmp = TempDir::new("http-boot");
        let mut c = command(&tmp, &o);
        c.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), wire).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(78), "{wire:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("Secret"));
    }
}

#[test]
fn an_unusable_runtime_or_user_is_refused() {
    let mut o = Opts::force("true");
    o.user = "no-such-user-here".into();
    let err = refused(o, 1);
    assert!(
        err.contains("user no-such-user-here does not exist"),
        "{err}"
    );
    let mut o = Opts::force("true");
    o.user = "root".into();
    let err = refused(o, 1);
    assert!(err.contains("must not be root"), "{err}");

    let tmp = TempDir::new("http-boot");
    let mut c = crate::harness::clean_cmd(crate::harness::bin("bastion-cgi"));
    c.args([
        "--runtime",
        "/nonexistent/runtime.json",
        "--listen",
        "127.0.0.1",
        "--port",
        "0",
    ])
    .env("HTTP_TOKEN", TOKEN);
    let out = output(&mut c);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains("/nonexistent/runtime.json"),
        "{}",
        stderr(&out)
    );
    drop(tmp);
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let err = refused(Opts::force("true").arg("--port").arg(&port), 1);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
}

#[test]
fn bad_arguments_exit_2() {
    for args in [
        &["--max-commands", "0"][..],
        &["--header-timeout", "x"],
        &["--bogus"],
    ] {
        let mut o = Opts::force("true");
        o.args = args.iter().map(|s| s.to_string()).collect();
        refused(o, 2);
    }
}
