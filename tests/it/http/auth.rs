//! Authentication and routing: Basic/Bearer, 401 with a challenge, /healthz
//! without auth, 404, 405; nothing runs without valid credentials.

use super::fixture::*;
use crate::harness::stdout;

/// A force command that leaves a trace, to prove whether it ran.
fn marker_opts() -> Opts {
    Opts::force("touch {w}/ran; echo ran")
}

fn start_with_marker(opts: Opts) -> (Bastion, std::path::PathBuf) {
    let b = Bastion::start(opts);
    let ran = b.w().join("ran");
    (b, ran)
}

#[test]
fn bearer_token_runs_the_command() {
    let (b, ran) = start_with_marker(marker_opts());
    let out = b.run(&[]);
    assert_eq!(stdout(&out), "ran\n", "{out:?}");
    assert_eq!(out.status.code(), Some(0));
    assert!(ran.exists());
    let line = b.wait_log(&["path=/cgi-bin/run", "status=200"]);
    assert!(line.contains("who=bearer"), "{line}");
    assert!(line.contains("exit=0"), "{line}");
}

#[test]
fn wrong_or_missing_credentials_get_401_and_run_nothing() {
    let (b, ran) = start_with_marker(marker_opts());
    let basic_of_token = format!("Authorization: Basic {}", base64_of(TOKEN));
    let cases: Vec<Vec<String>> = vec![
        vec![],
        vec!["-H".into(), "Authorization: Bearer wrong".into()],
        vec![
            "-H".into(),
            format!("Authorization: Bearer {}", &TOKEN[..TOKEN.len() - 1]),
        ],
        vec!["-H".into(), format!("Authorization: Bearer {TOKEN}x")],
        vec!["-H".into(), format!("Authorization: Token {TOKEN}")],
        vec!["-H".into(), format!("Authorization: {TOKEN}")],
        vec!["-H".into(), basic_of_token],
        vec!["-u".into(), format!("x:{TOKEN}")],
    ];
    for args in &cases {
        let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
        a.extend(["-i"]);
        let out = b.curl("/cgi-bin/run", &a);
        let text = stdout(&out);
        assert!(text.starts_with("HTTP/1.1 401 "), "{args:?}: {text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("www-authenticate: bearer realm=\"bastion\""),
            "{args:?}: {text}"
        );
    }
    // Two Authorization headers, one of them right: refused too.
    let raw = b.raw(&format!(
        "GET /cgi-bin/run HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    ).into_bytes());
    assert_eq!(parse_response(&raw).status, 401);
    assert!(!ran.exists(), "the command ran without valid credentials");
    // The log is read from the listener's stdout as it comes.
    assert!(
        crate::harness::wait_until(PATIENCE, || b
            .access_lines()
            .iter()
            .filter(|l| l.contains("status=401 who=- "))
            .count()
            > cases.len()),
        "{:#?}",
        b.access_lines()
    );
}

#[test]
fn basic_auth_names_the_user_in_the_log() {
    let (b, ran) = start_with_marker(marker_opts().only_env(&[("HTTP_BASIC_AUTH", BASIC)]));
    let bad = b.curl("/cgi-bin/run", &["-i", "-u", "deployer:pa ss:w0rD"]);
    let text = stdout(&bad);
    assert!(text.starts_with("HTTP/1.1 401 "), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("www-authenticate: basic realm=\"bastion\""),
        "{text}"
    );
    let bearer = b.run(&["-i"]);
    assert!(stdout(&bearer).starts_with("HTTP/1.1 401 "));
    assert!(!ran.exists());

    let ok = b.curl("/cgi-bin/run", &["-u", BASIC]);
    assert_eq!(stdout(&ok), "ran\n");
    let line = b.wait_log(&["status=200", "who=deployer "]);
    assert!(line.contains("exit=0"), "{line}");
}

#[test]
fn basic_wins_over_bearer_when_both_are_set() {
    let b = Bastion::start(Opts::force("echo ran").env("HTTP_BASIC_AUTH", BASIC));
    assert!(stdout(&b.run(&["-i"])).starts_with("HTTP/1.1 401 "));
    assert_eq!(stdout(&b.curl("/cgi-bin/run", &["-u", BASIC])), "ran\n");
    assert!(b.err.text().contains("(basic auth)"), "{}", b.err.text());
}

#[test]
fn credentials_from_stdin_as_the_entrypoint_passes_them() {
    let mut o = Opts::force("echo ran");
    o.auth = Auth::Stdin(format!("bearer\n{TOKEN}").into_bytes());
    let b = Bastion::start(o);
    assert_eq!(stdout(&b.run(&[])), "ran\n");
    // Nothing of the secret in the listener's environment or argv.
    let env = std::fs::read(format!("/proc/{}/environ", b.pid())).unwrap();
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", b.pid())).unwrap();
    assert!(!String::from_utf8_lossy(&env).contains(TOKEN));
    assert!(!String::from_utf8_lossy(&cmdline).contains(TOKEN));
    assert!(!String::from_utf8_lossy(&env).contains("HTTP_"), "{env:?}");
}

#[test]
fn healthz_needs_no_auth_and_runs_nothing() {
    let (b, ran) = start_with_marker(marker_opts());
    let out = b.curl("/healthz", &["-i"]);
    let text = stdout(&out);
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert!(text.ends_with("\r\n\r\nok\n"), "{text}");
    let head = stdout(&b.curl("/healthz", &["-I"]));
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let post = stdout(&b.curl("/healthz", &["-i", "-X", "POST"]));
    assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
    assert!(
        post.to_ascii_lowercase().contains("allow: get, head"),
        "{post}"
    );
    assert!(!ran.exists());
    b.wait_log(&["path=/healthz", "status=200", "who=-", "exit=-"]);
}

#[test]
fn unknown_paths_404_and_other_methods_405() {
    let (b, ran) = start_with_marker(marker_opts());
    let auth = format!("Authorization: Bearer {TOKEN}");
    for path in [
        "/",
        "/cgi-bin/run/",
        "/cgi-bin/runx",
        "/cgi-bin/../cgi-bin/run",
        "/CGI-BIN/RUN",
        "/healthz/x",
    ] {
        let raw = b.raw(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        let w = parse_response(&raw);
        assert_eq!(w.status, 404, "{path}: {}", String::from_utf8_lossy(&raw));
    }
    for method in ["PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"] {
        let how = if method == "HEAD" { "-I" } else { "-i" };
        let out = b.curl("/cgi-bin/run", &[how, "-X", method, "-H", &auth]);
        let text = stdout(&out);
        assert!(text.starts_with("HTTP/1.1 405 "), "{method}: {text}");
        assert!(
            text.to_ascii_lowercase().contains("allow: get, post"),
            "{text}"
        );
    }
    let post = b.run(&["-X", "POST"]);
    assert_eq!(stdout(&post), "ran\n");
    // The query string is not part of the path.
    std::fs::remove_file(&ran).unwrap();
    assert_eq!(stdout(&b.curl("/cgi-bin/run?x=1", &["-H", &auth])), "ran\n");
}

#[test]
fn access_log_has_one_line_per_request_and_never_a_secret() {
    let b = Bastion::start(
        Opts::force("echo ran; echo oops >&2; exit 3").env("HTTP_BASIC_AUTH", BASIC),
    );
    let _ = b.curl("/healthz", &[]);
    let _ = b.curl("/cgi-bin/run", &["-u", BASIC]);
    let _ = b.curl("/cgi-bin/run", &["-u", "deployer:guess"]);
    let _ = b.run(&[]);
    let _ = b.curl("/nope", &[]);
    let line = b.wait_log(&["who=deployer", "exit=3"]);
    assert!(line.starts_with("[http] client=127.0.0.1:"), "{line}");
    assert!(
        line.contains(" method=GET path=/cgi-bin/run status=200 "),
        "{line}"
    );
    assert!(line.contains(" duration_ms="), "{line}");
    b.wait_log(&["path=/nope", "status=404"]);
    let lines = b.access_lines();
    assert_eq!(lines.len(), 5, "{lines:#?}");
    let all = format!("{}{}", b.log.text(), b.err.text());
    for secret in [TOKEN, "pa ss:w0rd", "guess", &base64_of(BASIC)] {
        assert!(!all.contains(secret), "{secret} in the logs:\n{all}");
    }
}

pub fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// An unauthenticated path with Unicode spaces cannot fake the access
/// line's fields for a reader that splits on Unicode white space.
#[test]
fn unicode_spaces_in_a_path_cannot_fake_log_fields() {
    let b = Bastion::start(Opts::force("echo ran"));
    for (n, sp) in ["\u{a0}", "\u{2000}", "\u{2009}", "\u{3000}"]
        .iter()
        .enumerate()
    {
        let req = format!(
            "GET /probe{n}{sp}status=200{sp}who=admin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        let _ = b.raw(req.as_bytes());
        let line = b.wait_log(&[&format!("/probe{n}")]);
        let fields: Vec<&str> = line.split(char::is_whitespace).collect();
        let status: Vec<&str> = fields
            .iter()
            .copied()
            .filter(|f| f.starts_with("status="))
            .collect();
        assert_eq!(status, ["status=404"], "{line}");
        let who: Vec<&str> = fields
            .iter()
            .copied()
            .filter(|f| f.starts_with("who="))
            .collect();
        assert_eq!(who, ["who=-"], "{line}");
        let escaped = format!("\\u{{{:04x}}}", sp.chars().next().unwrap() as u32);
        assert!(line.contains(&escaped), "{line}");
    }
}
