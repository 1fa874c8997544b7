//! What the wrapper guaranteed, now that the listener starts the command
//! itself: one process image per request (the command's parent is the
//! listener), only the lock descriptor inherited, `wait:SECONDS` waiting
//! without holding up other requests, and the wrapper's own lines (busy,
//! DENY, command not found) in the body.

use super::fixture::*;
use crate::harness::{stdout, wait_until};
use std::io::Write;

/// The descriptors the command has (`ls` execs in its place: its own
/// are the command's, plus the listing's directory).
const SHOW_FDS: &str = "exec ls -l /proc/self/fd";

#[test]
fn the_command_is_the_listener_s_child_and_inherits_only_the_lock() {
    let b = Bastion::start(Opts::force(&format!("echo parent=$PPID; {SHOW_FDS}")));
    let text = stdout(&b.run(&[]));
    assert!(
        text.starts_with(&format!("parent={}\n", b.pid())),
        "the command's parent is not the listener (a second process image?):\n{text}"
    );
    let lock = b.tmp.join("command.lock");
    // Descriptor -> target; the listing's own (gone, or under /proc) aside.
    let fds: std::collections::BTreeMap<u32, &str> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(" -> "))
        .filter(|(_, t)| !t.starts_with("/proc/"))
        .map(|(n, t)| (n.rsplit(' ').next().unwrap().parse().unwrap(), t))
        .collect();
    assert_eq!(fds.get(&0), Some(&"/dev/null"), "{text}");
    assert!(fds[&1].starts_with("pipe:") && fds[&1] == fds[&2], "{text}");
    let others: Vec<&&str> = fds.range(3..).map(|(_, t)| t).collect();
    assert_eq!(
        others,
        [&lock.to_str().unwrap()],
        "exactly the lock must be inherited:\n{text}"
    );
    // No socket of the listener (its clients, its port) reached it.
    assert!(!text.contains("socket:"), "{text}");
}

#[test]
fn lock_none_inherits_nothing_but_the_output() {
    let b = Bastion::start(Opts::force(SHOW_FDS).lock("none"));
    let text = stdout(&b.run(&[]));
    assert!(!text.contains("command.lock"), "{text}");
    assert!(!text.contains("socket:"), "{text}");
}

#[test]
fn a_wait_lock_waits_without_holding_up_other_requests() {
    let b = Bastion::start(
        Opts::force("echo started; while [ ! -e {w}/go ]; do sleep 0.05; done; echo done")
            .lock("wait:30"),
    );
    let mut first = b.connect();
    first.write_all(&run_request("")).unwrap();
    read_until(&mut first, "started");
    // A second run waits for the lock...
    let mut second = b.connect();
    second.write_all(&run_request("")).unwrap();
    // ...while the listener keeps serving everything else.
    for _ in 0..3 {
        let out = b.curl("/healthz", &[]);
        assert_eq!(stdout(&out), "ok\n", "{out:?}");
    }
    let denied = b.curl("/cgi-bin/run", &["-i"]);
    assert!(stdout(&denied).starts_with("HTTP/1.1 401 "));
    std::fs::write(b.w().join("go"), "").unwrap();
    let rest = read_until(&mut first, "0\r\n\r\n");
    assert!(String::from_utf8_lossy(&rest).contains("done\n"));
    // The waiting one got the lock once it was free and ran (not busy).
    let got = read_until(&mut second, "0\r\n\r\n");
    let w = parse_response(&got);
    assert_eq!(w.body_text(), "started\ndone\n", "{w:?}");
}

#[test]
fn a_wait_lock_gives_up_busy_and_a_gone_client_stops_waiting() {
    let b = Bastion::start(Opts::force("echo ran").lock("wait:1"));
    let lock = std::fs::File::open(b.tmp.join("command.lock")).unwrap();
    lock.try_lock().unwrap();
    let out = b.run(&[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(stdout(&out), "busy: another run is in progress\n");
    b.wait_log(&["status=200", "exit=0"]);

    // A client that leaves while waiting: logged as killed, nothing runs
    // later, and its slot is free again.
    let b = Bastion::start(
        Opts::force("touch {w}/ran; echo ran")
            .lock("wait:60")
            .arg("--max-commands")
            .arg("1"),
    );
    let lock = std::fs::File::open(b.tmp.join("command.lock")).unwrap();
    lock.try_lock().unwrap();
    let mut s = b.connect();
    s.write_all(&run_request("")).unwrap();
    // The wait holds the one slot.
    assert!(wait_until(PATIENCE, || stdout(&b.run(&["-i"]))
        .starts_with("HTTP/1.1 503 ")));
    drop(s);
    b.wait_log(&["exit=killed", "note=\"client gone\""]);
    lock.unlock().unwrap();
    assert!(wait_until(PATIENCE, || stdout(&b.run(&[])) == "ran\n"));
}

#[test]
fn a_missing_program_is_127_with_the_wrappers_message() {
    let b = Bastion::start(Opts::broker("bastion-no-such-[a-z]+.*\n/nonexistent/x"));
    let w = parse_response(&b.raw(&run_request(
        "X-Bastion-Command: bastion-no-such-tool --flag\r\nTE: trailers\r\nConnection: close\r\n",
    )));
    assert_eq!(
        w.trailers,
        vec![("x-bastion-exit-code".to_owned(), "127".to_owned())]
    );
    assert_eq!(
        w.body_text(),
        "[broker] ALLOW: bastion-no-such-tool --flag\n\
         [broker] command not found: \"bastion-no-such-tool\" is not on PATH \
         /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
    );
    let w = parse_response(&b.raw(&run_request(
        "X-Bastion-Command: /nonexistent/x\r\nTE: trailers\r\nConnection: close\r\n",
    )));
    assert_eq!(w.trailers[0].1, "127", "{w:?}");
    assert!(
        w.body_text()
            .ends_with("[broker] command not found: \"/nonexistent/x\" is not on PATH /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"),
        "{}",
        w.body_text()
    );
    b.wait_log(&["exit=127", "command=\"/nonexistent/x\""]);
    // The lock is free again: the next request is not busy.
    let lock = std::fs::File::open(b.tmp.join("command.lock")).unwrap();
    assert!(lock.try_lock().is_ok());
}

#[test]
fn a_script_without_interpreter_line_runs_through_sh_as_execvp_does() {
    let b = Bastion::start(Opts::broker("{w}/script.*"));
    let script = b.w().join("script");
    std::fs::write(&script, "echo from-script \"$1\"\n").unwrap();
    crate::harness::set_mode(&script, 0o755);
    let req = format!("X-Bastion-Command: {} arg", script.display());
    let out = b.run(&["-H", &req]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        stdout(&out).ends_with("from-script arg\n"),
        "{}",
        stdout(&out)
    );
    // Not executable: 126 with the wrapper's "cannot execute".
    crate::harness::set_mode(&script, 0o644);
    let out = b.run(&["-H", &req, "-H", "TE: trailers"]);
    assert!(
        stdout(&out).contains(&format!(
            "[broker] cannot execute \"{}\": Permission denied",
            script.display()
        )),
        "{}",
        stdout(&out)
    );
}
