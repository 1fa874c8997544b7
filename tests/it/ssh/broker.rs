//! Broker mode over ssh: the client's request runs only if a rule allows
//! it, without a shell; exit codes 0/126/127/the command's own reach the
//! client; stdout and stderr stay apart.

use super::fixture::{spawn, Bastion};
use crate::harness::{output, run_expect, stderr, stdout};
use std::io::Read as _;
use std::os::unix::ffi::OsStrExt;

const RULES: &str = "\
# comments and blank lines are ignored

echo [a-z ]+
ls /etc/hostname( /nonexistent-[a-z]+)?
false
missing-program-xyz( .*)?
env
sleep [0-9]+
";

fn broker(tag: &str) -> (Bastion, std::path::PathBuf) {
    let b = Bastion::new(tag).env("ALLOWED_COMMANDS", RULES);
    let cfg = b.prepare();
    (b, cfg)
}

#[test]
fn allowed_request_runs_and_exits_zero() {
    let (b, cfg) = broker("broker-allow");
    let out = run_expect(b.ssh(&cfg).arg("echo hello world"), 0);
    assert_eq!(stdout(&out), "hello world\n");
    assert!(
        stderr(&out).contains("[broker] ALLOW: echo hello world"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn refused_requests_exit_126_and_run_nothing() {
    let (b, cfg) = broker("broker-deny");
    let marker = b.writable_dir().join("pwned");
    for req in [
        format!("touch {}", marker.display()),
        format!("echo hi; touch {}", marker.display()),
        format!("echo hi && touch {}", marker.display()),
        format!("echo $(touch {})", marker.display()),
        "echo hi\ntouch /tmp/x".to_owned(),
        "ech".to_owned(),
        String::new(),
    ] {
        let out = run_expect(b.ssh(&cfg).arg(&req), 126);
        assert_eq!(stdout(&out), "", "{req:?}");
        assert!(
            stderr(&out).contains("[broker] DENY"),
            "{req:?}: {}",
            stderr(&out)
        );
        assert!(!marker.exists(), "{req:?} ran");
    }
}

#[test]
fn non_utf8_request_is_refused() {
    let (b, cfg) = broker("broker-utf8");
    let mut c = b.ssh(&cfg);
    c.arg(std::ffi::OsStr::from_bytes(b"echo \xff\xfe"));
    let out = run_expect(&mut c, 126);
    assert!(
        stderr(&out).contains("[broker] DENY: echo \\xff\\xfe"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn missing_program_is_127() {
    let (b, cfg) = broker("broker-127");
    let out = run_expect(b.ssh(&cfg).arg("missing-program-xyz --flag"), 127);
    assert_eq!(stdout(&out), "");
    assert!(!stderr(&out).is_empty());
}

#[test]
fn the_commands_own_status_and_streams_reach_the_client() {
    let (b, cfg) = broker("broker-own");
    let out = run_expect(b.ssh(&cfg).arg("false"), 1);
    assert_eq!(stdout(&out), "");
    let out = run_expect(b.ssh(&cfg).arg("ls /etc/hostname /nonexistent-abc"), 2);
    assert_eq!(stdout(&out), "/etc/hostname\n");
    let err = stderr(&out);
    assert!(
        err.contains("[broker] ALLOW: ls /etc/hostname /nonexistent-abc"),
        "{err}"
    );
    assert!(err.contains("nonexistent-abc"), "{err}");
    assert!(!err.contains("/etc/hostname\n"), "{err}");
}

#[test]
fn client_environment_does_not_reach_the_command() {
    let (b, cfg) = broker("broker-env");
    let out = run_expect(
        b.ssh(&cfg)
            .args(["-o", "SetEnv=EVIL=setenv-value LD_PRELOAD=/tmp/x.so"])
            .arg("env"),
        0,
    );
    let env = stdout(&out);
    assert!(
        !env.contains("setenv-value") && !env.contains("LD_PRELOAD"),
        "{env}"
    );
}

#[test]
fn no_pty_in_broker_mode() {
    // Commands run without a shell or a terminal; a client that insists on
    // one (-t/-tt) gets the server's refusal and gives up (OpenSSH exits
    // 255 when an explicitly requested TTY is refused).
    let b = Bastion::new("broker-pty");
    let marker = b.writable_dir().join("ran");
    let req = format!("touch {}", marker.display());
    let b = b.env("ALLOWED_COMMANDS", &req);
    let cfg = b.prepare();
    let out = output(b.ssh(&cfg).arg("-tt").arg(&req));
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("PTY allocation request failed"),
        "{}",
        stderr(&out)
    );
    assert!(!marker.exists());
    // Without -t the same request runs.
    run_expect(b.ssh(&cfg).arg(&req), 0);
    assert!(marker.exists());
}

#[test]
fn the_lock_applies_to_broker_runs() {
    // The allowed command holds the lock until the test releases it, so no
    // timing is involved: a script run by an allowed `sh SCRIPT` request.
    let b = Bastion::new("broker-lock");
    let release = b.root.join("release");
    let script = b.root.write(
        "hold.sh",
        format!(
            "echo held\nwhile [ ! -e {} ]; do sleep 0.05; done\n",
            release.display()
        ),
    );
    let req = format!("sh {}", script.display());
    let b = b.env("ALLOWED_COMMANDS", &format!("{req}\necho [a-z]+"));
    let cfg = b.prepare();
    let mut first = spawn(b.ssh(&cfg).arg(&req));
    let mut line = [0u8; 5];
    let read = first.stdout.as_mut().unwrap().read_exact(&mut line);
    if read.is_err() || &line != b"held\n" {
        std::fs::write(&release, b"").unwrap();
        let out = first.wait_with_output().unwrap();
        panic!("the first run did not start: {}", stderr(&out));
    }
    let out = run_expect(b.ssh(&cfg).arg("echo second"), 0);
    std::fs::write(&release, b"").unwrap();
    assert_eq!(stdout(&out), "busy: another run is in progress\n");
    assert_eq!(first.wait_with_output().unwrap().status.code(), Some(0));
    // Released: the next one runs.
    let out = run_expect(b.ssh(&cfg).arg("echo third"), 0);
    assert_eq!(stdout(&out), "third\n");
}

#[test]
fn the_list_file_alone_turns_broker_mode_on_and_is_read_live() {
    let b = Bastion::new("broker-file");
    let list = b
        .root
        .write("etc/bastion/allowed-commands.list", "echo one\n");
    let cfg = b.prepare();
    let out = run_expect(b.ssh(&cfg).arg("echo one"), 0);
    assert_eq!(stdout(&out), "one\n");
    run_expect(b.ssh(&cfg).arg("echo two"), 126);
    std::fs::write(&list, "echo one\necho two\n").unwrap();
    let out = run_expect(b.ssh(&cfg).arg("echo two"), 0);
    assert_eq!(stdout(&out), "two\n");
}

#[test]
fn command_prefix_is_prepended() {
    let b = Bastion::new("broker-prefix")
        .env("ALLOWED_COMMANDS", "[a-z]+ [a-z]+")
        .env("COMMAND_PREFIX", "echo 'prefixed by'");
    let cfg = b.prepare();
    let out = run_expect(b.ssh(&cfg).arg("list users"), 0);
    assert_eq!(stdout(&out), "prefixed by list users\n");
    let out = output(b.ssh(&cfg).arg("list users; id"));
    assert_eq!(out.status.code(), Some(126));
}
