//! The monitor against the real entrypoint, a real listening sshd, real
//! `ssh`, `curl`, paramiko and promtool: identities from sshd's own log,
//! exactly one end per start however a session ends, both log formats
//! parsed by real parsers, metrics that agree with the events, a client
//! that cannot forge sshd lines, a session that cannot take over the HTTP
//! port, and a vanished client whose command is ended.

use crate::harness::{self, run_expect, stdout, TempDir};
use crate::ssh::fixture::{spawn, Bastion, Daemon};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

type Ev = HashMap<String, String>;

struct Running {
    b: Bastion,
    d: Daemon,
    keys: HashMap<&'static str, PathBuf>,
}

/// A bastion with `users.d/alice.pub` and `users.d/bob.pub` besides the
/// fixture's `tester`, booted for real.
fn boot(b: Bastion) -> Running {
    let mut keys = HashMap::new();
    for name in ["alice", "bob"] {
        let key = b.root.join(format!("client/{name}"));
        let public = harness::keygen(&key, &format!("{name}@it"));
        b.root
            .write(format!("etc/bastion/users.d/{name}.pub"), public);
        keys.insert(name, key);
    }
    keys.insert("tester", b.key.clone());
    let d = b.start();
    Running { b, d, keys }
}

impl Running {
    fn log(&self) -> String {
        std::fs::read_to_string(self.b.root.join(format!("entrypoint-{}.log", self.d.port)))
            .unwrap_or_default()
    }

    fn ssh(&self, who: &str) -> Command {
        harness::ssh_to_port(self.d.port, &self.keys[who])
    }

    /// Every audit event so far, in either format.
    fn events(&self) -> Vec<Ev> {
        self.log().lines().filter_map(parse_event).collect()
    }

    /// Waits for an event matching every `key=value` of `want`.
    fn wait_event(&self, want: &[(&str, &str)]) -> Ev {
        let mut found = None;
        harness::wait_until(Duration::from_secs(10), || {
            found = self.events().into_iter().find(|e| {
                want.iter()
                    .all(|(k, v)| e.get(*k).map(String::as_str) == Some(*v))
            });
            found.is_some()
        });
        found.unwrap_or_else(|| panic!("no event {want:?} in:\n{}", self.log()))
    }

    fn metrics(&self, port: u16) -> String {
        let out = run_expect(
            Command::new("curl").args([
                "-sS",
                "--fail",
                &format!("http://127.0.0.1:{port}/metrics"),
            ]),
            0,
        );
        stdout(&out)
    }
}

/// One line as an event: `ts=... event=...` (logfmt) or a JSON object.
fn parse_event(line: &str) -> Option<Ev> {
    if line.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
        let o = v.as_object()?;
        return Some(
            o.iter()
                .map(|(k, v)| {
                    let s = match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), s)
                })
                .collect(),
        );
    }
    if !line.starts_with("ts=") {
        return None;
    }
    let mut out = HashMap::new();
    let mut it = line.chars().peekable();
    while it.peek().is_some() {
        let key: String = it.by_ref().take_while(|&c| c != '=').collect();
        let mut val = String::new();
        if it.peek() == Some(&'"') {
            it.next();
            while let Some(c) = it.next() {
                match c {
                    '\\' if it.peek() == Some(&'"') => val.push(it.next().unwrap()),
                    '"' => break,
                    c => val.push(c),
                }
            }
            it.next();
        } else {
            val = it.by_ref().take_while(|&c| c != ' ').collect();
        }
        out.insert(key, val);
    }
    Some(out)
}

fn is_session_id(s: &str) -> bool {
    s.len() == 16
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Every start has exactly one end, and nothing ends that did not start.
fn assert_balanced(r: &Running) {
    let ev = r.events();
    let ids = |name: &str| -> Vec<String> {
        let mut v: Vec<String> = ev
            .iter()
            .filter(|e| e.get("event").map(String::as_str) == Some(name))
            .map(|e| e["session"].clone())
            .collect();
        v.sort();
        v
    };
    let (starts, ends) = (ids("session.start"), ids("session.end"));
    assert_eq!(starts, ends, "{}", r.log());
    let mut dedup = starts.clone();
    dedup.dedup();
    assert_eq!(dedup, starts, "a session id used twice: {}", r.log());
}

fn audit_trail_in(format: &str) {
    let r = boot(
        Bastion::new(&format!("audit-{format}"))
            .force(r#"echo "$BASTION_IDENTITY $BASTION_SESSION_ID"; exit 3"#)
            .env("LOG_FORMAT", format),
    );
    for who in ["alice", "bob", "tester"] {
        let out = run_expect(&mut r.ssh(who), 3);
        let text = stdout(&out);
        let (identity, id) = text.trim().split_once(' ').unwrap();
        assert_eq!(identity, who, "{text}");
        assert!(is_session_id(id), "{text}");
        let start = r.wait_event(&[("event", "session.start"), ("session", id)]);
        assert_eq!(start["identity"], who);
        assert_eq!(start["transport"], "ssh");
        assert_eq!(start["mode"], "force");
        assert_eq!(start["tty"], "false");
        assert!(start["client"].starts_with("127.0.0.1:"), "{start:?}");
        assert!(start["key"].starts_with("SHA256:"), "{start:?}");
        assert!(
            start["ts"].ends_with('Z') && start["ts"].len() == 24,
            "{start:?}"
        );
        let end = r.wait_event(&[("event", "session.end"), ("session", id)]);
        assert_eq!(end["exit"], "3");
        assert_eq!(end["identity"], who);
        assert!(end["duration_ms"].parse::<u64>().is_ok(), "{end:?}");
    }
    // Two keys, two fingerprints.
    let keys: Vec<String> = r
        .events()
        .iter()
        .filter(|e| e["event"] == "session.start")
        .map(|e| e["key"].clone())
        .collect();
    assert_eq!(keys.len(), 3);
    assert!(keys[0] != keys[1] && keys[1] != keys[2]);
    assert_balanced(&r);
    if format == "json" {
        // Every line the monitor writes is JSON then, sshd's too.
        for l in r.log().lines().filter(|l| l.starts_with('{')) {
            serde_json::from_str::<serde_json::Value>(l).unwrap();
        }
        assert!(
            r.log()
                .contains(r#""event":"sshd","message":"Accepted publickey for agent"#),
            "{}",
            r.log()
        );
    }
}

#[test]
fn ssh_sessions_carry_the_identity_of_their_key_in_text() {
    audit_trail_in("text");
}

#[test]
fn ssh_sessions_carry_the_identity_of_their_key_in_json() {
    audit_trail_in("json");
}

/// Reads the first line of a running session's stdout.
fn first_line(child: &mut Child) -> String {
    use std::io::Read as _;
    let mut line = Vec::new();
    let out = child.stdout.as_mut().unwrap();
    let mut byte = [0u8];
    while out.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
}

fn group_alive(pgid: i32) -> bool {
    Command::new("kill")
        .args(["-0", "--", &format!("-{pgid}")])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[test]
fn broker_decisions_busy_and_metrics_agree_and_pass_promtool() {
    let metrics_port = harness::free_port();
    let r = boot(
        Bastion::new("audit-broker")
            .env("ALLOWED_COMMANDS", "echo [a-z]+\nsleep [0-9]+")
            .env("METRICS_PORT", &metrics_port.to_string()),
    );
    let ok = run_expect(r.ssh("alice").arg("echo hello"), 0);
    assert_eq!(stdout(&ok), "hello\n");
    let denied = run_expect(r.ssh("bob").arg("rm -rf /\u{1b}[2K"), 126);
    assert_eq!(stdout(&denied), "");
    // A long-running one holds the lock; the next is busy.
    let mut long = spawn(r.ssh("alice").arg("sleep 300"));
    r.wait_event(&[("event", "command.allow"), ("request", "sleep 300")]);
    let busy = run_expect(r.ssh("bob").arg("echo again"), 0);
    assert_eq!(stdout(&busy), "busy: another run is in progress\n");
    let _ = long.kill();
    let _ = long.wait();

    let allow = r.wait_event(&[("event", "command.allow"), ("request", "echo hello")]);
    assert_eq!(allow["identity"], "alice");
    assert_eq!(allow["rule"], "echo [a-z]+");
    assert_eq!(allow["source"], "ALLOWED_COMMANDS line 1");
    let deny = r.wait_event(&[("event", "command.deny"), ("identity", "bob")]);
    assert_eq!(deny["request"], "rm -rf /\\x1b[2K", "{deny:?}");
    r.wait_event(&[("event", "session.busy"), ("identity", "bob")]);
    let busy_end = r.wait_event(&[("event", "session.end"), ("identity", "bob"), ("exit", "0")]);
    assert!(is_session_id(&busy_end["session"]));
    r.wait_event(&[("event", "session.end"), ("exit", "126")]);
    // The killed client's command was ended by SIGTERM.
    r.wait_event(&[("event", "session.end"), ("exit", "signal:15")]);
    assert_balanced(&r);

    let text = r.metrics(metrics_port);
    for want in [
        "bastion_sessions_total{transport=\"ssh\",mode=\"broker\",outcome=\"ok\"} 1",
        "bastion_sessions_total{transport=\"ssh\",mode=\"broker\",outcome=\"denied\"} 1",
        "bastion_sessions_total{transport=\"ssh\",mode=\"broker\",outcome=\"busy\"} 1",
        "bastion_sessions_total{transport=\"ssh\",mode=\"broker\",outcome=\"failed\"} 1",
        "bastion_broker_decisions_total{decision=\"allow\"} 2",
        "bastion_broker_decisions_total{decision=\"deny\"} 1",
        "bastion_sessions_active{transport=\"ssh\"} 0",
        "bastion_session_duration_seconds_count 4",
    ] {
        assert!(text.contains(want), "{want} not in:\n{text}");
    }
    for forbidden in ["alice", "bob", "echo", "SHA256"] {
        assert!(!text.contains(forbidden), "{forbidden} in metrics:\n{text}");
    }
    let tmp = TempDir::new("promtool");
    let file = tmp.write("metrics.txt", &text);
    let lint = run_expect(
        Command::new(harness::which("promtool"))
            .args(["check", "metrics"])
            .stdin(std::fs::File::open(file).unwrap()),
        0,
    );
    assert_eq!(stdout(&lint), "", "{}", harness::stderr(&lint));
}

#[test]
fn a_vanished_client_ends_its_command_and_frees_the_lock() {
    let r = boot(
        Bastion::new("audit-vanish")
            .force(r#"echo "pgid=$(ps -o pgid= -p $$ | tr -d ' ')"; sleep 300 & sleep 301; wait"#),
    );
    let mut first = spawn(&mut r.ssh("alice"));
    let line = first_line(&mut first);
    let pgid: i32 = line
        .strip_prefix("pgid=")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    // The client dies without a word (no EOF, no exit-status read).
    let _ = first.kill();
    let _ = first.wait();
    assert!(
        harness::wait_until(Duration::from_secs(10), || !group_alive(pgid)),
        "the command's group {pgid} is still running after its client vanished"
    );
    let end = r.wait_event(&[("event", "session.end"), ("identity", "alice")]);
    assert_eq!(end["exit"], "signal:15", "{end:?}");
    // The lock is free: the next session runs its command.
    let mut next = spawn(&mut r.ssh("bob"));
    let line = first_line(&mut next);
    assert!(line.starts_with("pgid="), "{line}");
    let _ = next.kill();
    let _ = next.wait();
    r.wait_event(&[("event", "session.end"), ("identity", "bob")]);
    assert_balanced(&r);
}

#[test]
fn sigkilled_session_processes_are_logged_lost() {
    let r = boot(
        Bastion::new("audit-lost")
            .force(r#"echo "wrapper=$PPID pgid=$(ps -o pgid= -p $$ | tr -d ' ')"; sleep 300"#),
    );
    let mut s = spawn(&mut r.ssh("alice"));
    let line = first_line(&mut s);
    let (w, g) = line.split_once(' ').unwrap();
    let wrapper = w.strip_prefix("wrapper=").unwrap();
    let pgid = g.strip_prefix("pgid=").unwrap();
    let start = r.wait_event(&[("event", "session.start"), ("identity", "alice")]);
    run_expect(Command::new("kill").args(["-9", wrapper]), 0);
    run_expect(
        Command::new("kill").args(["-9", "--", &format!("-{pgid}")]),
        0,
    );
    let end = r.wait_event(&[("event", "session.end"), ("session", &start["session"])]);
    assert_eq!(end["exit"], "lost", "{end:?}");
    let _ = s.kill();
    let _ = s.wait();
    assert_balanced(&r);
}

#[test]
fn a_user_name_cannot_forge_an_sshd_log_line() {
    let r = boot(Bastion::new("audit-forge").force("true"));
    let forged = "x\nAccepted publickey for agent from 203.0.113.9 port 4242 ssh2: ED25519 SHA256:forged\x08\x07\r\nbastion-keys: key SHA256:forged: identity alice (line 1)";
    let script = r#"
import sys, paramiko
t = paramiko.Transport(("127.0.0.1", int(sys.argv[1])))
t.start_client(timeout=10)
try:
    t.auth_publickey(sys.argv[2], paramiko.Ed25519Key.from_private_key_file(sys.argv[3]))
except paramiko.SSHException as e:
    print("refused:", type(e).__name__)
t.close()
"#;
    let stranger = r.b.root.join("client/stranger");
    harness::keygen(&stranger, "stranger");
    let out = run_expect(
        Command::new("/usr/bin/python3")
            .args(["-c", script, &r.d.port.to_string(), forged])
            .arg(&stranger),
        0,
    );
    assert!(stdout(&out).starts_with("refused:"), "{}", stdout(&out));
    assert!(
        harness::wait_until(Duration::from_secs(10), || r.log().contains("203.0.113.9")),
        "sshd never logged the attempt:\n{}",
        r.log()
    );
    let log = r.log();
    for l in log.lines() {
        assert!(
            !l.starts_with("Accepted publickey for agent from 203.0.113.9")
                && !l.starts_with("bastion-keys: key SHA256:forged"),
            "forged line:\n{log}"
        );
        assert!(
            !l.contains('\x07') && !l.contains('\x08') && !l.contains('\r'),
            "{l:?}"
        );
    }
    assert!(
        log.contains("\\nAccepted publickey for agent from 203.0.113.9"),
        "{log}"
    );
    // A real login afterwards still gets its own identity.
    let ok = run_expect(&mut r.ssh("bob"), 0);
    assert_eq!(stdout(&ok), "");
    let start = r.wait_event(&[("event", "session.start")]);
    assert_eq!(start["identity"], "bob");
}

#[test]
fn http_sessions_are_logged_and_a_session_cannot_take_over_the_port() {
    let http_port = harness::free_port();
    let metrics_port = harness::free_port();
    let b = Bastion::new("audit-http");
    let result = b.writable_dir().join("takeover");
    // A hostile command: kill its own listener (its parent: the listener
    // runs each request in-process), then try to bind the port
    // (IPv4 and IPv6) to capture the next client's credentials.
    let hostile = format!(
        r#"echo "$BASTION_IDENTITY $BASTION_SESSION_ID"
if [ -e {forge} ]; then
  sock="$(find {root} -name events.sock | head -n 1)"
  perl -MIO::Socket::UNIX -e '$s = IO::Socket::UNIX->new(Peer => $ARGV[0]) or die "connect: $!"; print $s qq({{"op":"start","mode":"force","tty":false,"http_who":"admin","http_client":"10.0.0.1:1"}}\n); print scalar <$s>' "$sock"
fi
if [ -e {flag} ]; then
  listener="$PPID"
  setsid sh -c 'sleep 1; perl -MIO::Socket::IP -e '"'"'for my $h ("0.0.0.0", "::", "127.0.0.1") {{ my $s = IO::Socket::IP->new(LocalHost => $h, LocalPort => $ARGV[0], Listen => 1, ReuseAddr => 1); print "$h ", ($s ? "BOUND" : "refused: $!"), "\n" }}'"'"' {port} > {result}' </dev/null >/dev/null 2>&1 &
  kill -9 "$listener"
fi"#,
        flag = b.root.join("takeover-now").display(),
        forge = b.root.join("forge-now").display(),
        root = b.root.join(".").display(),
        port = http_port,
        result = result.display()
    );
    let r = boot(
        b.force(&hostile)
            .env("HTTP_BASIC_AUTH", "deployer:s3cret-pw")
            .env("HTTP_PORT", &http_port.to_string())
            .env("METRICS_PORT", &metrics_port.to_string()),
    );
    harness::wait_port(http_port, Duration::from_secs(10));
    let url = format!("http://127.0.0.1:{http_port}/cgi-bin/run");
    let curl = |auth: &str| harness::output(Command::new("curl").args(["-sS", "-u", auth, &url]));
    let out = curl("deployer:s3cret-pw");
    let text = stdout(&out);
    let (identity, id) = text
        .trim()
        .split_once(' ')
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(identity, "deployer");
    let start = r.wait_event(&[("event", "session.start"), ("session", id)]);
    assert_eq!(start["transport"], "http");
    assert!(start["client"].starts_with("127.0.0.1:"), "{start:?}");
    assert!(!start.contains_key("key"));
    r.wait_event(&[("event", "session.end"), ("session", id), ("exit", "0")]);
    let refused = curl("deployer:wrong");
    assert!(stdout(&refused).contains("unauthorized"));
    assert!(harness::wait_until(Duration::from_secs(5), || r
        .metrics(metrics_port)
        .contains("bastion_http_auth_failures_total 1")));

    // A command (the listener's own child) claims an HTTP session as
    // another user: refused, nothing logged as that user.
    std::fs::write(r.b.root.join("forge-now"), "").unwrap();
    let forged = stdout(&curl("deployer:s3cret-pw"));
    std::fs::remove_file(r.b.root.join("forge-now")).unwrap();
    assert!(forged.contains(r#""error""#), "{forged}");
    assert!(!forged.contains(r#""session""#), "{forged}");
    assert!(
        !r.events()
            .iter()
            .any(|e| e.get("identity").map(String::as_str) == Some("admin")),
        "{}",
        r.log()
    );

    // The takeover attempt.
    std::fs::write(r.b.root.join("takeover-now"), "").unwrap();
    let _ = curl("deployer:s3cret-pw");
    assert!(harness::wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&result).is_ok_and(|t| t.lines().count() == 3)
    }));
    let verdict = std::fs::read_to_string(&result).unwrap();
    assert!(
        !verdict.contains("BOUND"),
        "a session bound the HTTP port:\n{verdict}"
    );
    assert_eq!(
        verdict.matches("refused: Address already in use").count(),
        3,
        "{verdict}"
    );
    std::fs::remove_file(r.b.root.join("takeover-now")).unwrap();
    // The real listener is back on the same socket and answers.
    assert!(
        harness::wait_until(Duration::from_secs(10), || {
            stdout(&curl("deployer:s3cret-pw")).starts_with("deployer ")
        }),
        "{}",
        r.log()
    );
    assert!(
        r.log().contains("exited (signal 9); starting it again"),
        "{}",
        r.log()
    );
    let health = harness::output(Command::new("curl").args([
        "-sS",
        "-H",
        "X-Bastion-Healthcheck: 1",
        &format!("http://127.0.0.1:{http_port}/healthz"),
    ]));
    assert_eq!(stdout(&health), "ok\n");
    assert!(harness::wait_until(Duration::from_secs(5), || r
        .metrics(metrics_port)
        .contains("bastion_http_listener_restarts_total 1")));
    assert_balanced(&r);
    // Credentials never reach the log.
    assert!(!r.log().contains("s3cret-pw"), "{}", r.log());
}

#[test]
fn no_monitor_to_log_the_session_means_nothing_runs_over_http_and_ssh() {
    let http_port = harness::free_port();
    let b = Bastion::new("audit-closed");
    let marker = b.writable_dir().join("ran");
    let r = boot(
        b.force(&format!("touch {}; echo ran", marker.display()))
            .env("HTTP_BASIC_AUTH", "deployer:s3cret-pw")
            .env("HTTP_PORT", &http_port.to_string()),
    );
    harness::wait_port(http_port, Duration::from_secs(10));
    let url = format!("http://127.0.0.1:{http_port}/cgi-bin/run");
    let curl = || {
        harness::output(Command::new("curl").args([
            "-sS",
            "--raw",
            "-H",
            "TE: trailers",
            "-u",
            "deployer:s3cret-pw",
            &url,
        ]))
    };
    let first = stdout(&curl());
    assert!(
        first.lines().any(|l| l.trim_end() == "ran") && first.contains("x-bastion-exit-code: 0"),
        "{first}"
    );
    std::fs::remove_file(&marker).unwrap();
    // The monitor's socket goes away: the runtime file still expects it.
    let sock = walk(&r.b.root.join("."))
        .into_iter()
        .find(|p| p.ends_with("events.sock"))
        .unwrap_or_else(|| panic!("no event socket under the root"));
    std::fs::remove_file(&sock).unwrap();

    let http = stdout(&curl());
    assert!(
        http.contains("cannot log this session") && http.contains("nothing was run"),
        "{http}"
    );
    assert!(http.contains("x-bastion-exit-code: 1"), "{http}");
    let ssh = harness::output(r.ssh("alice").arg("x"));
    assert_eq!(ssh.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&ssh.stderr).contains("nothing was run"),
        "{ssh:?}"
    );
    assert!(!marker.exists(), "a command ran without its audit trail");
}

/// Every file under `dir` (unreadable directories skipped).
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The monitor's pid: the child of the entrypoint (now sshd) whose program
/// is `bastion-monitor`.
fn monitor_pid(d: &Daemon) -> u32 {
    let parent = d.child.id();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // pid (comm) state ppid ...
            let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
            let ppid = after.split(' ').nth(1).and_then(|p| p.parse::<u32>().ok());
            ppid == Some(parent)
                && std::fs::read_link(format!("/proc/{pid}/exe"))
                    .is_ok_and(|p| p.ends_with("bastion-monitor"))
        })
        .unwrap_or_else(|| panic!("no bastion-monitor under pid {parent}"))
}

/// What a session with a shell on the bastion would try against the one
/// process that writes its audit trail: signal it, stop it, trace it, read
/// its memory, environment and descriptors, replace its event socket. None
/// of it works, and the monitor keeps logging the next session.
#[test]
fn a_session_cannot_stop_trace_or_replace_the_monitor() {
    let b = Bastion::new("audit-hostile");
    let pid_file = b.writable_dir().join("monitor.pid");
    // PTRACE_ATTACH (16) and PTRACE_SEIZE (0x4206) through syscall 101
    // (x86_64 ptrace; the pid numeric, or perl passes a pointer): either
    // succeeding means the session can trace it. Opening /proc/PID/mem
    // needs the same permission as attaching.
    let hostile = format!(
        r#"p=$(cat {pid_file})
echo "pid $p"
kill -0 "$p" 2>/dev/null && echo SIGNALLABLE
kill -STOP "$p" 2>/dev/null && echo STOPPED
kill -9 "$p" 2>/dev/null && echo KILLED
( exec 3<"/proc/$p/mem" ) 2>/dev/null && echo MEM-READABLE
cat "/proc/$p/environ" >/dev/null 2>&1 && echo ENV-READABLE
ls "/proc/$p/fd" >/dev/null 2>&1 && echo FDS-LISTABLE
perl -e 'exit((syscall(101, 16, $ARGV[0] + 0, 0, 0) == 0 || syscall(101, 0x4206, $ARGV[0] + 0, 0, 0) == 0) ? 0 : 1)' "$p" && echo TRACED
sock="$(find {root} -name events.sock | head -n 1)"
echo "sock $sock"
rm -f "$sock" 2>/dev/null; [ -S "$sock" ] || echo SOCKET-REMOVED
touch "$(dirname "$sock")/planted" 2>/dev/null && echo DIR-WRITABLE
exit 0"#,
        pid_file = pid_file.display(),
        root = b.root.join(".").display(),
    );
    let r = boot(b.force(&hostile));
    let pid = monitor_pid(&r.d);
    std::fs::write(&pid_file, pid.to_string()).unwrap();
    let out = run_expect(&mut r.ssh("alice"), 0);
    let text = stdout(&out);
    assert!(text.contains(&format!("pid {pid}\n")), "{text}");
    assert!(text.contains("sock /"), "no event socket found: {text}");
    for bad in [
        "SIGNALLABLE",
        "STOPPED",
        "KILLED",
        "MEM-READABLE",
        "ENV-READABLE",
        "FDS-LISTABLE",
        "TRACED",
        "SOCKET-REMOVED",
        "DIR-WRITABLE",
    ] {
        assert!(!text.contains(bad), "{bad}:\n{text}");
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("State:") && !l.contains("stopped")),
        "{status}"
    );
    // The attacking session itself was logged, start and end, and so is
    // the next one.
    let start = r.wait_event(&[("event", "session.start"), ("identity", "alice")]);
    r.wait_event(&[
        ("event", "session.end"),
        ("session", &start["session"]),
        ("exit", "0"),
    ]);
    run_expect(&mut r.ssh("bob"), 0);
    let next = r.wait_event(&[("event", "session.start"), ("identity", "bob")]);
    r.wait_event(&[("event", "session.end"), ("session", &next["session"])]);
    assert_balanced(&r);
}
