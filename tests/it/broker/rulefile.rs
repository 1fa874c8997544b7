//! The live list file and the runtime file: comments, indentation, CRLF,
//! a bad rule among good ones, unreadable or missing files, a 10,000-line
//! list, and edits applying on the next request.

use crate::harness::{bin, clean_cmd, run_expect, stderr, stdout, TempDir};
use std::process::Command;

fn with_file(file: &std::path::Path, rules: &str) -> Command {
    let mut c = clean_cmd(bin("bastion-broker"));
    c.env("ALLOWED_COMMANDS", rules)
        .env("ALLOWED_COMMANDS_FILE", file);
    c
}

#[test]
fn comments_indentation_and_crlf() {
    let dir = TempDir::new("broker-crlf");
    let f = dir.write(
        "list",
        "# header comment\r\n\r\n   ls -l   \r\n\t# indented comment\r\n\tuptime\t\r\n  \r\necho [a-z]+\r\n",
    );
    let out = run_expect(with_file(&f, "").args(["--check", "ls -l"]), 0);
    assert!(
        stdout(&out).contains(&format!("{} line 3", f.display())),
        "{}",
        stdout(&out)
    );
    let out = run_expect(with_file(&f, "").args(["--check", "uptime"]), 0);
    assert!(stdout(&out).contains("line 5"), "{}", stdout(&out));
    run_expect(with_file(&f, "").args(["--check", "echo abc"]), 0);
    // The CR is not part of the rule, and a comment is not a rule.
    run_expect(with_file(&f, "").args(["--check", "echo abc\r"]), 126);
    run_expect(with_file(&f, "").args(["--check", "# header comment"]), 126);
    let out = run_expect(with_file(&f, "").arg("--list"), 0);
    assert_eq!(stdout(&out).lines().count(), 3, "{}", stdout(&out));
    assert!(stderr(&out).is_empty());
}

#[test]
fn env_rules_come_first_then_the_file() {
    let dir = TempDir::new("broker-order");
    let f = dir.write("list", "ls.*\n");
    let out = run_expect(with_file(&f, "ls( -l)?").args(["--check", "ls -l"]), 0);
    assert!(stdout(&out).contains("ALLOWED_COMMANDS line 1"));
    let out = run_expect(with_file(&f, "ls( -l)?").args(["--check", "ls -a"]), 0);
    assert!(stdout(&out).contains("list line 1"));
}

#[test]
fn a_bad_rule_among_good_ones_is_skipped_and_logged() {
    let dir = TempDir::new("broker-bad");
    let f = dir.write("list", "ls\n\\<bad\nuptime\n[z-a]\n");
    let out = run_expect(with_file(&f, "").args(["--check", "uptime"]), 0);
    let err = stderr(&out);
    assert!(
        err.contains("list line 2") && err.contains("\\<bad"),
        "{err}"
    );
    assert!(
        err.contains("list line 4") && err.contains("reversed"),
        "{err}"
    );
    run_expect(with_file(&f, "").args(["--check", "bad"]), 126);
    let out = run_expect(with_file(&f, "").arg("--list"), 78);
    assert_eq!(stdout(&out).matches("BAD ").count(), 2, "{}", stdout(&out));
    // A non-UTF-8 line is one bad rule, not a broken file.
    let f2 = dir.write("list2", b"ls\n\xff\xfe\nuptime\n");
    let out = run_expect(with_file(&f2, "").args(["--check", "uptime"]), 0);
    assert!(stderr(&out).contains("not valid UTF-8"), "{}", stderr(&out));
}

#[test]
fn missing_or_unreadable_file_leaves_env_rules() {
    let dir = TempDir::new("broker-unreadable");
    let missing = dir.join("absent");
    let out = run_expect(with_file(&missing, "ls").args(["--check", "ls"]), 0);
    assert!(
        stderr(&out).is_empty(),
        "a missing list is normal: {}",
        stderr(&out)
    );
    run_expect(with_file(&missing, "ls").args(["--check", "uptime"]), 126);

    // A directory, a FIFO (must not block) and /dev/zero (must not hang).
    let fifo = dir.join("fifo");
    run_expect(Command::new("mkfifo").arg(&fifo), 0);
    for bad in [dir.path().to_path_buf(), fifo, "/dev/zero".into()] {
        let out = run_expect(with_file(&bad, "ls").args(["--check", "ls"]), 0);
        assert!(
            stderr(&out).contains("cannot read rule list"),
            "{}",
            stderr(&out)
        );
        run_expect(with_file(&bad, "ls").args(["--check", "uptime"]), 126);
        let out = run_expect(with_file(&bad, "ls").arg("--list"), 78);
        assert!(stdout(&out).contains("BAD  cannot read rule list"));
    }
}

#[test]
fn edits_apply_on_the_next_request() {
    let dir = TempDir::new("broker-live");
    let f = dir.write("list", "ls\n");
    run_expect(with_file(&f, "").args(["--check", "uptime"]), 126);
    std::fs::write(&f, "ls\nuptime\n").unwrap();
    run_expect(with_file(&f, "").args(["--check", "uptime"]), 0);
    std::fs::remove_file(&f).unwrap();
    run_expect(with_file(&f, "").args(["--check", "ls"]), 126);
}

#[test]
fn ten_thousand_line_list() {
    let dir = TempDir::new("broker-10k");
    let mut text = String::new();
    for i in 0..10_000 {
        match i % 4 {
            0 => text.push_str(&format!("cmd{i:05} [a-z]+ --n=[0-9]{{1,4}}\n")),
            1 => text.push_str(&format!("# comment {i}\n")),
            2 => text.push_str(&format!("  svc{i:05} (start|stop|status)\r\n")),
            _ => text.push_str(&format!("plain{i:05}\n")),
        }
    }
    let f = dir.write("list", &text);
    let out = run_expect(with_file(&f, "").args(["--check", "svc09998 status"]), 0);
    assert!(stdout(&out).contains("line 9999"), "{}", stdout(&out));
    run_expect(
        with_file(&f, "").args(["--check", "cmd09996 abc --n=42"]),
        0,
    );
    run_expect(with_file(&f, "").args(["--check", "plain09999"]), 0);
    run_expect(
        with_file(&f, "").args(["--check", "cmd09996 abc --n=12345"]),
        126,
    );
    run_expect(with_file(&f, "").args(["--check", "svc09998 restart"]), 126);
    let out = run_expect(with_file(&f, "").arg("--list"), 0);
    assert_eq!(stdout(&out).lines().count(), 7_500);
}

/// Without any of its variables, the broker reads the runtime file
/// (`--runtime PATH`); a corrupt one is a config error, an absent one means
/// no rules.
#[test]
fn runtime_file_is_read_when_env_is_unset() {
    let dir = TempDir::new("broker-runtime");
    let list = dir.write("list", "uptime\n");
    let rt = serde_json::json!({
        "user": "agent",
        "mode": {"kind": "broker"},
        "allowed_commands": "ls( -l)?",
        "allowed_commands_file": list,
        "command_prefix": "echo via-prefix",
        "command_lock": "exclusive",
        "lock_file": dir.join("lock"),
        "authorized_keys_dir": dir.join("users.d"),
        "merged_keys_file": dir.join("merged"),
        "pty": false,
    });
    let rt_path = dir.write("runtime.json", rt.to_string());
    let b = || {
        let mut c = clean_cmd(bin("bastion-broker"));
        c.arg("--runtime").arg(&rt_path);
        c
    };
    let out = run_expect(b().arg("ls -l"), 0);
    assert_eq!(stdout(&out), "via-prefix ls -l\n");
    run_expect(b().args(["--check", "uptime"]), 0);
    run_expect(b().args(["--check", "rm"]), 126);
    // The environment wins when set.
    run_expect(b().env("ALLOWED_COMMANDS", "rm").args(["--check", "rm"]), 0);

    let corrupt = dir.write("bad.json", "{not json");
    let out = run_expect(
        clean_cmd(bin("bastion-broker"))
            .arg("--runtime")
            .arg(&corrupt)
            .args(["--check", "ls"]),
        78,
    );
    assert!(stderr(&out).contains("runtime file"), "{}", stderr(&out));
    run_expect(
        clean_cmd(bin("bastion-broker"))
            .arg("--runtime")
            .arg(dir.join("absent.json"))
            .args(["--check", "ls"]),
        126,
    );
}
