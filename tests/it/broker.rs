//! The broker through its real binary: decisions, the shell-free exec
//! (injection suite with a canary), rule files, the environment the command
//! gets, audit lines. The grep differential suite is in `differential`.

mod differential;
mod rulefile;

use crate::harness::{bin, clean_cmd, describe, output, run_expect, stderr, stdout, TempDir};
use std::process::Command;

/// The broker with only the variables a test names.
fn broker(rules: &str, prefix: Option<&str>) -> Command {
    let mut c = clean_cmd(bin("bastion-broker"));
    c.env("ALLOWED_COMMANDS", rules);
    c.env(
        "ALLOWED_COMMANDS_FILE",
        "/nonexistent/allowed-commands.list",
    );
    if let Some(p) = prefix {
        c.env("COMMAND_PREFIX", p);
    }
    c
}

/// Lines of stderr that look like audit lines.
fn audit_lines(out: &std::process::Output) -> Vec<String> {
    stderr(out)
        .lines()
        .filter(|l| l.starts_with("[broker]"))
        .map(str::to_owned)
        .collect()
}

const HOSTILE: &[&str] = &[
    "; touch CANARY",
    "$(touch CANARY)",
    "`touch CANARY`",
    "| touch CANARY",
    "&& touch CANARY",
    "& touch CANARY",
    "> CANARY",
    ">> CANARY < /etc/passwd",
    "'$(touch CANARY)' \"`touch CANARY`\"",
    "${IFS}touch${IFS}CANARY",
    "* ? [a-z] ~ ~root {a,b}",
    "a\\ b \\; \\$HOME $HOME",
    "-e --help -- -",
    "é 日本 \u{202e}x \u{200b}",
    "\ttab\tseparated\t\tfields",
];

/// Every byte of a hostile request arrives as a literal argument: the
/// prefix prints its argv one per line, and nothing else runs.
#[test]
fn injection_every_byte_is_a_literal_argument() {
    let dir = TempDir::new("broker-inject");
    // Files a glob would expand to if the broker globbed.
    dir.write("aaa", "");
    dir.write("bbb", "");
    for req in HOSTILE {
        let mut cmd = broker(".*", Some("printf '<%s>\\n'"));
        cmd.current_dir(dir.path()).arg("--").arg(req);
        let out = run_expect(&mut cmd, 0);
        let want: String = req
            .split([' ', '\t'])
            .filter(|w| !w.is_empty())
            .map(|w| format!("<{w}>\n"))
            .collect();
        assert_eq!(stdout(&out), want, "{}", describe(&cmd, &out));
        assert!(!dir.join("CANARY").exists(), "{}", describe(&cmd, &out));
    }
}

/// Without a prefix the first word is the program, still exec'd directly.
#[test]
fn injection_without_prefix_and_via_ssh_original_command() {
    let dir = TempDir::new("broker-inject2");
    for req in HOSTILE {
        let full = format!("printf [%s] {req}");
        let mut cmd = broker("printf .*", None);
        cmd.current_dir(dir.path())
            .env("SSH_ORIGINAL_COMMAND", &full);
        let out = run_expect(&mut cmd, 0);
        let words: Vec<&str> = req.split([' ', '\t']).filter(|w| !w.is_empty()).collect();
        let want: String = words.iter().map(|w| format!("[{w}]")).collect();
        assert_eq!(stdout(&out), want, "{}", describe(&cmd, &out));
        assert!(!dir.join("CANARY").exists(), "{}", describe(&cmd, &out));
    }
}

/// Newlines, carriage returns, NUL-free control characters: refused before
/// any rule is consulted, even with a rule that allows everything, and the
/// audit line stays one line.
#[test]
fn control_characters_are_refused_and_escaped() {
    let dir = TempDir::new("broker-ctl");
    for req in [
        "ls\ntouch CANARY",
        "ls\rtouch CANARY",
        "ls\n[broker] ALLOW: rm -rf /",
        "ls\x1b[2K",
        "ls\x7f",
        "ls\u{85}",
        "ls\x0b",
    ] {
        let mut cmd = broker(".*", Some("touch CANARY"));
        cmd.current_dir(dir.path()).arg("--").arg(req);
        let out = run_expect(&mut cmd, 126);
        let audit = audit_lines(&out);
        assert_eq!(audit.len(), 1, "{}", describe(&cmd, &out));
        assert!(
            audit[0].starts_with("[broker] DENY: ls\\"),
            "{}",
            describe(&cmd, &out)
        );
        assert_eq!(stderr(&out).lines().count(), 1, "{}", describe(&cmd, &out));
        assert!(!dir.join("CANARY").exists());
    }
}

#[test]
fn empty_request_needs_a_prefix() {
    for req in ["", " ", "\t \t"] {
        let out = run_expect(broker("()|.*", None).arg("--").arg(req), 126);
        assert!(stderr(&out).contains("[broker] DENY"), "{}", stderr(&out));
    }
    // With a prefix, an empty request runs the prefix alone if a rule allows "".
    let out = run_expect(broker("()", Some("echo prefix-only")).arg(""), 0);
    assert_eq!(stdout(&out), "prefix-only\n");
    run_expect(broker("x", Some("echo prefix-only")).arg(""), 126);
}

#[test]
fn request_size_limit_is_64_kib() {
    let dir = TempDir::new("broker-size");
    let ok = "a".repeat(64 * 1024);
    let out = run_expect(broker("a*", Some("true")).arg(&ok), 0);
    assert!(stderr(&out).contains("[broker] ALLOW"));
    let big = "a".repeat(64 * 1024 + 1);
    let mut cmd = broker("a*", Some("touch CANARY"));
    cmd.current_dir(dir.path()).arg(&big);
    let out = run_expect(&mut cmd, 126);
    assert!(stderr(&out).contains("longer than 64 KiB"));
    assert!(stderr(&out).len() < 4096, "audit line is bounded");
    assert!(!dir.join("CANARY").exists());
}

#[test]
fn no_matching_rule_is_denied_and_nothing_runs() {
    let dir = TempDir::new("broker-deny");
    for (rules, req) in [
        ("ls", "ls -l"),
        ("ls|uptime", "lsuptime"),
        ("a|b", "ab"),
        ("^ls$", "ls;"),
        ("", "ls"),
        ("# ls", "ls"),
        ("ls.*", "touch CANARY"),
    ] {
        let mut cmd = broker(rules, None);
        cmd.current_dir(dir.path()).arg(req);
        let out = run_expect(&mut cmd, 126);
        assert!(
            audit_lines(&out)
                .iter()
                .any(|l| l.starts_with("[broker] DENY: ")),
            "{}",
            describe(&cmd, &out)
        );
        assert_eq!(stdout(&out), "");
    }
    assert!(!dir.join("CANARY").exists());
}

#[test]
fn allowed_command_runs_with_its_own_exit_status() {
    // `sh -c exit 7` is `exit` with $0 = 7: words are never re-joined.
    run_expect(broker("sh -c .*", None).args(["sh -c exit\t7"]), 0);
    let out = run_expect(broker("[0-9]+", Some("sh -c 'exit \"$1\"' sh")).arg("7"), 7);
    assert_eq!(audit_lines(&out), vec!["[broker] ALLOW: 7".to_string()]);
    run_expect(broker("false", None).arg("false"), 1);
    // A signal is the command's own too: the process was replaced.
    let out = output(broker("()", Some("sh -c 'kill -9 $$'")).arg(""));
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(out.status.signal(), Some(9), "{out:?}");
}

#[test]
fn missing_program_is_127_with_a_clear_message() {
    let out = run_expect(
        broker("no-such-program-xyz.*", None).arg("no-such-program-xyz a"),
        127,
    );
    assert!(
        stderr(&out).contains("command not found: \"no-such-program-xyz\""),
        "{}",
        stderr(&out)
    );
    let out = run_expect(broker(".*", Some("/nonexistent/tool --x")).arg("a"), 127);
    assert!(
        stderr(&out).contains("/nonexistent/tool"),
        "{}",
        stderr(&out)
    );
}

/// The command gets PATH = the safe PATH and a short list of session
/// variables; never SSH_ORIGINAL_COMMAND, LD_PRELOAD or anything else.
#[test]
fn command_environment_is_explicit() {
    let out = run_expect(
        broker("env", None)
            .env("SSH_ORIGINAL_COMMAND", "env")
            .env("HOME", "/home/agent")
            .env("SSH_CONNECTION", "127.0.0.1 1 127.0.0.1 22")
            .env("LD_PRELOAD", "/tmp/evil.so")
            .env("BASH_ENV", "/tmp/evil")
            .env("FOO", "bar")
            .env("PATH", "/tmp/evil-bin:/usr/bin:/bin"),
        0,
    );
    let env = stdout(&out);
    let names: Vec<&str> = env
        .lines()
        .filter_map(|l| l.split_once('=').map(|p| p.0))
        .collect();
    assert!(
        env.contains("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"),
        "{env}"
    );
    assert!(env.contains("HOME=/home/agent\n"), "{env}");
    assert!(
        env.contains("SSH_CONNECTION=127.0.0.1 1 127.0.0.1 22\n"),
        "{env}"
    );
    for banned in [
        "SSH_ORIGINAL_COMMAND",
        "LD_PRELOAD",
        "BASH_ENV",
        "FOO",
        "ALLOWED_COMMANDS",
        "COMMAND_PREFIX",
    ] {
        assert!(!names.contains(&banned), "{banned} leaked:\n{env}");
    }
}

#[test]
fn check_decides_only_and_names_the_rule() {
    let dir = TempDir::new("broker-check");
    let mut cmd = broker("ls\ntouch [A-Z]+", None);
    cmd.current_dir(dir.path())
        .args(["--check", "touch CANARY"]);
    let out = run_expect(&mut cmd, 0);
    assert_eq!(
        stdout(&out),
        "allowed by rule \"touch [A-Z]+\" (ALLOWED_COMMANDS line 2)\n"
    );
    assert!(!dir.join("CANARY").exists(), "--check executed the command");
    let out = run_expect(broker("ls", None).args(["--check", "rm -rf /"]), 126);
    assert!(stderr(&out).contains("[broker] DENY: rm -rf / (no rule matches)"));
}

#[test]
fn bad_rules_are_skipped_logged_and_listed() {
    let rules = "ls\n(a)\\1\nuptime\n[[:nope:]]";
    let out = run_expect(broker(rules, None).args(["--check", "uptime"]), 0);
    let err = stderr(&out);
    assert!(
        err.contains("ALLOWED_COMMANDS line 2") && err.contains("back-reference"),
        "{err}"
    );
    assert!(
        err.contains("ALLOWED_COMMANDS line 4") && err.contains("nope"),
        "{err}"
    );
    let out = run_expect(broker(rules, None).arg("--list"), 78);
    let list = stdout(&out);
    assert!(
        list.contains("ok   ALLOWED_COMMANDS line 1: ls\n"),
        "{list}"
    );
    assert!(
        list.contains("BAD  ALLOWED_COMMANDS line 2: (a)\\1: "),
        "{list}"
    );
    let out = run_expect(broker("ls\nuptime", None).arg("--list"), 0);
    assert_eq!(stdout(&out).lines().count(), 2);
}

#[test]
fn bad_prefix_is_denied() {
    let out = run_expect(broker(".*", Some("echo 'unclosed")).arg("x"), 126);
    assert!(stderr(&out).contains("COMMAND_PREFIX"), "{}", stderr(&out));
    assert!(stderr(&out).contains("[broker] DENY: x (COMMAND_PREFIX cannot be split"));
    assert_eq!(stdout(&out), "");
    run_expect(
        broker(".*", Some("echo 'unclosed")).args(["--check", "x"]),
        126,
    );
}

#[test]
fn non_utf8_request_is_denied() {
    use std::os::unix::ffi::OsStrExt as _;
    let raw = std::ffi::OsStr::from_bytes(b"ls \xff\xfe");
    let out = run_expect(
        broker(".*", Some("echo")).env("SSH_ORIGINAL_COMMAND", raw),
        126,
    );
    assert!(
        stderr(&out).contains("[broker] DENY: ls \\xff\\xfe"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn usage_errors_exit_2() {
    run_expect(clean_cmd(bin("bastion-broker")).arg("--bogus"), 2);
    run_expect(
        clean_cmd(bin("bastion-broker")).args(["--list", "--check"]),
        2,
    );
}

/// The POSIX classes the broker embeds are exactly what the host's GNU grep
/// answers, checked for every code point a request can hold (tab, printable
/// ASCII, everything from U+00A0 but surrogates).
#[test]
fn class_tables_match_grep() {
    const N: usize = 0x11_0000;
    let points = std::iter::once(9u32)
        .chain(0x20..0x7f)
        .chain(0xa0..0xd800)
        .chain(0xe000..0x11_0000);
    let mut input = String::new();
    for p in points.clone() {
        input.push(char::from_u32(p).unwrap());
        input.push('\n');
    }
    for name in [
        "alpha", "digit", "alnum", "upper", "lower", "space", "blank", "punct", "print", "graph",
        "cntrl", "xdigit",
    ] {
        let mut child = Command::new("grep")
            .args(["-Ex", &format!("[[:{name}:]]")])
            .env_clear()
            .env("LC_ALL", "C.UTF-8")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let text = input.clone();
        let writer = std::thread::spawn(move || {
            use std::io::Write as _;
            let _ = stdin.write_all(text.as_bytes());
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        let mut grep = vec![false; N];
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let mut cs = line.chars();
            let c = cs.next().unwrap();
            assert!(cs.next().is_none());
            grep[c as usize] = true;
        }
        let mut ours = vec![false; N];
        for (a, b) in bastion::broker::probe::class_table(name).unwrap() {
            for p in a..=b {
                ours[p as usize] = true;
            }
        }
        let wrong: Vec<String> = points
            .clone()
            .filter(|&p| grep[p as usize] != ours[p as usize])
            .take(20)
            .map(|p| format!("U+{p:04X}"))
            .collect();
        assert!(
            wrong.is_empty(),
            "[:{name}:] differs from grep at {wrong:?}"
        );
    }
}
