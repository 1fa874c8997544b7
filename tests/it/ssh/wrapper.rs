//! `bastion-wrapper` run directly, as the HTTP listener runs it: bad
//! input gives a clear message and a documented exit code, and runs
//! nothing.

use super::fixture::Bastion;
use crate::harness::{self, run_expect, stderr, stdout};

fn wrapper() -> std::process::Command {
    harness::clean_cmd(harness::bin("bastion-wrapper"))
}

#[test]
fn runs_force_command_from_the_runtime_file() {
    let b = Bastion::new("wrap-run").force("echo \"[$SSH_ORIGINAL_COMMAND]\"; exit 3");
    b.prepare();
    let rt = b.root.join("run/bastion/runtime.json");
    let out = run_expect(
        wrapper()
            .arg("--runtime")
            .arg(&rt)
            .env("SSH_ORIGINAL_COMMAND", "rm -rf /"),
        3,
    );
    assert_eq!(stdout(&out), "[]\n");
}

#[test]
fn missing_runtime_file_is_a_clear_failure() {
    let b = Bastion::new("wrap-nort");
    let out = run_expect(
        wrapper()
            .arg("--runtime")
            .arg(b.root.join("nope.json"))
            .env("SSH_ORIGINAL_COMMAND", "echo hi"),
        78,
    );
    assert_eq!(stdout(&out), "");
    assert!(stderr(&out).contains("nope.json"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("bastion-entrypoint"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn corrupt_runtime_file_runs_nothing() {
    let b = Bastion::new("wrap-corrupt");
    let marker = b.writable_dir().join("ran");
    for bad in [
        "".to_owned(),
        "{".to_owned(),
        format!(
            r#"{{"user":"agent","mode":{{"kind":"force","command":"touch {}"}}}}"#,
            marker.display()
        ),
        "\u{0}\u{1}binary".to_owned(),
    ] {
        let rt = b.root.write("rt.json", &bad);
        let out = run_expect(wrapper().arg("--runtime").arg(&rt), 78);
        assert!(
            stderr(&out).contains("cannot read runtime file"),
            "{}",
            stderr(&out)
        );
        assert!(!marker.exists());
    }
}

#[test]
fn missing_lock_file_fails_closed() {
    let b = Bastion::new("wrap-nolock").force("echo should-not-run");
    b.prepare();
    std::fs::remove_file(b.root.join("run/bastion/command.lock")).unwrap();
    let out = run_expect(
        wrapper()
            .arg("--runtime")
            .arg(b.root.join("run/bastion/runtime.json")),
        1,
    );
    assert_eq!(stdout(&out), "");
    assert!(stderr(&out).contains("command.lock"), "{}", stderr(&out));
}

#[test]
fn unknown_arguments_are_usage_errors() {
    let out = run_expect(wrapper().arg("--bogus"), 2);
    assert_eq!(stdout(&out), "");
    let out = run_expect(wrapper().arg("extra-positional"), 2);
    assert_eq!(stdout(&out), "");
}

#[test]
fn descriptors_leaked_by_the_caller_do_not_reach_the_command() {
    // Whatever started the wrapper may have leaked descriptors (here 7 and
    // 9, without close-on-exec): the command keeps only 0-2 and the lock.
    let b = Bastion::new("wrap-fds").force("ls -l /proc/$$/fd");
    b.prepare();
    let rt = b.root.join("run/bastion/runtime.json");
    let script = format!(
        "exec 7</dev/null 9>/dev/null; exec {} --runtime {}",
        harness::bin("bastion-wrapper").display(),
        rt.display()
    );
    let out = run_expect(harness::clean_cmd("/bin/sh").args(["-c", &script]), 0);
    let listed = stdout(&out);
    let fd = |n: &str| listed.lines().any(|l| l.contains(&format!(" {n} -> ")));
    assert!(fd("0") && fd("1") && fd("2"), "{listed}");
    assert!(
        !fd("7") && !fd("9"),
        "a leaked descriptor reached the command\n{listed}"
    );
    assert!(listed.contains("command.lock"), "{listed}");
}
