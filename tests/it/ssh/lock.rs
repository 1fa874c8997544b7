//! The per-container lock over ssh (SPEC 5): one run at a time, "busy" and
//! exit 0 for the others, released when the command's tree dies (SIGKILL
//! included), `wait:SECONDS` waits.

use super::fixture::{spawn, Bastion};
use crate::harness::{self, run_expect, stdout};
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

const BUSY: &str = "busy: another run is in progress\n";

/// A command that says it runs, then holds the lock until `release` exists.
fn held_until(release: &Path) -> String {
    format!(
        "echo ran; while [ ! -e {} ]; do sleep 0.05; done",
        release.display()
    )
}

fn finish(child: Child) -> Output {
    child.wait_with_output().unwrap()
}

fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
    harness::wait_until(timeout, || child.try_wait().unwrap().is_some())
}

#[test]
fn twenty_concurrent_sessions_exactly_one_runs() {
    let b = Bastion::new("lock-20");
    let release = b.root.join("release");
    let b = b.force(&held_until(&release));
    let cfg = b.prepare();
    let mut children: Vec<Child> = (0..20).map(|_| spawn(&mut b.ssh(&cfg))).collect();
    // 19 are turned away while the one runner waits for `release`.
    let all_but_one = harness::wait_until(Duration::from_secs(120), || {
        let mut done = 0;
        for c in children.iter_mut() {
            if c.try_wait().unwrap().is_some() {
                done += 1;
            }
        }
        done == 19
    });
    std::fs::write(&release, b"").unwrap();
    assert!(
        all_but_one,
        "the 19 others did not all finish while one ran"
    );
    let outs: Vec<Output> = children.into_iter().map(finish).collect();
    for o in &outs {
        assert_eq!(o.status.code(), Some(0), "{}", harness::stderr(o));
    }
    let ran = outs.iter().filter(|o| stdout(o) == "ran\n").count();
    let busy = outs.iter().filter(|o| stdout(o) == BUSY).count();
    assert_eq!((ran, busy), (1, 19));
}

#[test]
fn a_killed_session_releases_the_lock() {
    // The command leaves a background child too: the whole tree holds the
    // lock, and the whole tree is killed.
    let b = Bastion::new("lock-kill")
        .force(r#"echo "pgid=$(ps -o pgid= -p $$ | tr -d ' ')"; sleep 300 & sleep 301; wait"#);
    let cfg = b.prepare();
    let mut first = spawn(&mut b.ssh(&cfg));
    let pgid = read_pgid(&mut first);
    // While it runs, another session is busy.
    let out = run_expect(&mut b.ssh(&cfg), 0);
    assert_eq!(stdout(&out), BUSY);
    // kill -9 the whole session: the command's process group and the client.
    run_expect(
        Command::new("kill").args(["-9", "--", &format!("-{pgid}")]),
        0,
    );
    let _ = first.kill();
    let _ = first.wait();
    assert!(harness::wait_until(Duration::from_secs(10), || {
        !group_alive(pgid)
    }));
    // The very next session runs its command.
    let mut next = spawn(&mut b.ssh(&cfg));
    let pgid2 = read_pgid(&mut next);
    let _ = Command::new("kill")
        .args(["-9", "--", &format!("-{pgid2}")])
        .status();
    let _ = next.kill();
    let _ = next.wait();
}

/// Reads the `pgid=N` line the command prints first (busy would fail here).
fn read_pgid(child: &mut Child) -> i32 {
    use std::io::Read as _;
    let mut line = Vec::new();
    let out = child.stdout.as_mut().unwrap();
    let mut byte = [0u8];
    while out.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&line).into_owned();
    line.strip_prefix("pgid=")
        .and_then(|p| p.parse().ok())
        .filter(|p| *p > 1)
        .unwrap_or_else(|| panic!("expected the command to run and print pgid=N, got {line:?}"))
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
fn wait_policy_waits_for_the_lock() {
    let b = Bastion::new("lock-wait");
    let release = b.root.join("release");
    let b = b
        .force(&held_until(&release))
        .env("COMMAND_LOCK", "wait:60");
    let cfg = b.prepare();
    let first = spawn(&mut b.ssh(&cfg));
    assert!(harness::wait_until(Duration::from_secs(30), || {
        is_holding(&b.root.join("run/bastion/command.lock"))
    }));
    let mut second = spawn(&mut b.ssh(&cfg));
    // The second waits instead of printing busy...
    assert!(!wait_exit(&mut second, Duration::from_secs(2)));
    std::fs::write(&release, b"").unwrap();
    // ...and runs once the first is done (it sees `release` too and ends).
    let (a, z) = (finish(first), finish(second));
    assert_eq!(stdout(&a), "ran\n");
    assert_eq!(stdout(&z), "ran\n");
    assert_eq!(z.status.code(), Some(0));
}

#[test]
fn wait_policy_gives_up_busy_after_the_timeout() {
    let b = Bastion::new("lock-wait-timeout");
    let release = b.root.join("release");
    let b = b.force(&held_until(&release)).env("COMMAND_LOCK", "wait:1");
    let cfg = b.prepare();
    let first = spawn(&mut b.ssh(&cfg));
    assert!(harness::wait_until(Duration::from_secs(30), || {
        is_holding(&b.root.join("run/bastion/command.lock"))
    }));
    let t = Instant::now();
    let out = run_expect(&mut b.ssh(&cfg), 0);
    assert!(t.elapsed() >= Duration::from_secs(1));
    assert_eq!(stdout(&out), BUSY);
    std::fs::write(&release, b"").unwrap();
    assert_eq!(stdout(&finish(first)), "ran\n");
}

#[test]
fn none_policy_runs_concurrently() {
    let b = Bastion::new("lock-none");
    let release = b.root.join("release");
    let started = b.root.join("started");
    std::fs::create_dir(&started).unwrap();
    harness::set_mode(&started, 0o1777);
    let b = b
        .force(&format!(
            "touch {}/$$; {}",
            started.display(),
            held_until(&release)
        ))
        .env("COMMAND_LOCK", "none");
    let cfg = b.prepare();
    let children: Vec<Child> = (0..3).map(|_| spawn(&mut b.ssh(&cfg))).collect();
    // All three are running at the same time before any is released.
    let all = harness::wait_until(Duration::from_secs(60), || {
        std::fs::read_dir(&started).unwrap().count() == 3
    });
    std::fs::write(&release, b"").unwrap();
    assert!(all, "the three sessions did not run concurrently");
    for c in children {
        assert_eq!(stdout(&finish(c)), "ran\n");
    }
    assert!(!is_holding(&b.root.join("run/bastion/command.lock")));
}

/// Whether someone holds a lock on `path` (`flock -n` from outside fails).
fn is_holding(path: &Path) -> bool {
    !Command::new("flock")
        .args(["-n", "-s"])
        .arg(path)
        .arg("true")
        .status()
        .unwrap()
        .success()
}
