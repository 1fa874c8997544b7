//! Force-command mode over ssh: the configured command runs whatever the
//! client asks, and never sees the request.

use super::fixture::Bastion;
use crate::harness::{run_expect, stderr, stdout};
use std::io::Write as _;
use std::process::Stdio;

#[test]
fn runs_the_configured_command_whatever_the_client_asks() {
    let b = Bastion::new("force-ignore").force(
        r#"echo forced; echo "req=[${SSH_ORIGINAL_COMMAND-unset}]"; env | grep -c ORIGINAL || true"#,
    );
    let cfg = b.prepare();
    let marker = b.writable_dir().join("client-was-obeyed");
    let out = run_expect(
        b.ssh(&cfg)
            .arg(format!("touch {}; echo client-command", marker.display())),
        0,
    );
    assert_eq!(stdout(&out), "forced\nreq=[unset]\n0\n");
    assert!(!marker.exists());
    // No command at all: the same.
    let out = run_expect(&mut b.ssh(&cfg), 0);
    assert_eq!(stdout(&out), "forced\nreq=[unset]\n0\n");
}

#[test]
fn exit_status_and_streams_reach_the_client() {
    let b = Bastion::new("force-exit").force("echo to-stdout; echo to-stderr >&2; exit 7");
    let cfg = b.prepare();
    let out = run_expect(b.ssh(&cfg).arg("ignored"), 7);
    assert_eq!(stdout(&out), "to-stdout\n");
    assert_eq!(stderr(&out), "to-stderr\n");
}

#[test]
fn shell_metacharacters_work_and_sigpipe_is_default() {
    // FORCE_COMMAND is a shell command by contract; `yes | head` must end
    // quietly (SIGPIPE at its default, not ignored as in a Rust parent).
    let b = Bastion::new("force-meta").force("yes | head -n 2 && echo \"$((6 * 7))\"");
    let cfg = b.prepare();
    let out = run_expect(&mut b.ssh(&cfg), 0);
    assert_eq!(stdout(&out), "y\ny\n42\n");
    assert_eq!(stderr(&out), "");
}

#[test]
fn the_command_gets_an_explicit_environment() {
    let b = Bastion::new("force-env").force("env | sort");
    let cfg = b.prepare();
    let out = run_expect(b.ssh(&cfg).args(["-o", "SetEnv=INJECTED=1"]).arg("x"), 0);
    let env = stdout(&out);
    let names: Vec<&str> = env.lines().filter_map(|l| l.split('=').next()).collect();
    for name in &names {
        assert!(
            [
                "HOME",
                "USER",
                "LOGNAME",
                "SHELL",
                "TERM",
                "PATH",
                "PWD",
                "SSH_CLIENT",
                "SSH_CONNECTION",
                "SSH_TTY",
                "SSH_USER_AUTH",
                "BASTION_IDENTITY",
                "BASTION_SESSION_ID",
                "SHLVL",
                "_"
            ]
            .contains(name),
            "unexpected variable {name} in\n{env}"
        );
    }
    assert!(env.contains("USER=agent\n"), "{env}");
    assert!(
        env.contains("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"),
        "{env}"
    );
}

#[test]
fn the_lock_descriptor_is_inherited_by_the_command() {
    let b = Bastion::new("force-fd").force("ls -l /proc/$$/fd/ | grep -c command.lock");
    let cfg = b.prepare();
    let out = run_expect(&mut b.ssh(&cfg), 0);
    assert_eq!(stdout(&out), "1\n");
}

#[test]
fn tty_request_gets_a_working_pty() {
    let b = Bastion::new("force-pty")
        .force(r#"tty; if [ -t 0 ]; then echo interactive; fi; read -r line; echo "got:$line""#);
    let cfg = b.prepare();
    let mut child = b
        .ssh(&cfg)
        .arg("-tt")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello from the keyboard\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = stdout(&out).replace('\r', "");
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("interactive\n"), "{text}");
    assert!(text.contains("got:hello from the keyboard\n"), "{text}");
    // Without -t there is no terminal.
    let out = run_expect(&mut b.ssh(&cfg), 0);
    assert!(stdout(&out).starts_with("not a tty\n"), "{}", stdout(&out));
}
