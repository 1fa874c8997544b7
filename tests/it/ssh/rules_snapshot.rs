//! `ALLOWED_COMMANDS` compiled once at boot: the entrypoint writes the
//! snapshot next to the runtime file (root-owned, read-only for the
//! session), requests over ssh are decided from it, and a snapshot that is
//! truncated, corrupt, replaced, or not root's alone runs nothing (exit 78).

use super::fixture::Bastion;
use crate::harness::{output, run_expect, set_mode, stderr, stdout};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

fn booted(tag: &str) -> (Bastion, PathBuf, PathBuf) {
    let b = Bastion::new(tag);
    let marker = b.writable_dir().join("ran");
    let b = b.env(
        "ALLOWED_COMMANDS",
        &format!("echo [a-z]+\n# a comment\ntouch {}", marker.display()),
    );
    let cfg = b.prepare();
    (b, cfg, marker)
}

#[test]
fn the_snapshot_is_written_at_boot_and_decides_requests() {
    let (b, cfg, marker) = booted("rules-snapshot");
    let run = b.root.join("run/bastion");
    let snap = run.join("allowed-commands.rules");
    let m = std::fs::symlink_metadata(&snap).unwrap();
    assert!(m.is_file());
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, 0, 0o644));
    let runtime = std::fs::read_to_string(run.join("runtime.json")).unwrap();
    assert!(
        runtime.contains(&format!("\"rules_snapshot\": \"{}\"", snap.display())),
        "{runtime}"
    );
    let out = run_expect(b.ssh(&cfg).arg("echo hello"), 0);
    assert_eq!(stdout(&out), "hello\n");
    run_expect(b.ssh(&cfg).arg("echo Hello"), 126);
    let out = run_expect(b.ssh(&cfg).arg(format!("touch {}", marker.display())), 0);
    assert!(stderr(&out).contains("[broker] ALLOW"), "{}", stderr(&out));
    assert!(marker.exists());
    // The session user can change nothing about it.
    let s = snap.display();
    for attack in [
        format!("echo x >> {s}"),
        format!("rm -f {s}"),
        format!("mv {s} {s}.old"),
    ] {
        let out = output(
            std::process::Command::new("runuser")
                .args(["-u", "agent", "--", "sh", "-c"])
                .arg(&attack),
        );
        assert!(!out.status.success(), "session user could: {attack}");
    }
}

#[test]
fn a_damaged_snapshot_runs_nothing_and_exits_78() {
    let (b, cfg, marker) = booted("rules-snapshot-bad");
    let snap = b.root.join("run/bastion/allowed-commands.rules");
    let good = std::fs::read(&snap).unwrap();
    let touch = format!("touch {}", marker.display());
    type Damage<'a> = (&'a str, Box<dyn Fn() + 'a>);
    let damages: Vec<Damage> = vec![
        (
            "truncated",
            Box::new(|| std::fs::write(&snap, &good[..good.len() - 3]).unwrap()),
        ),
        (
            "one byte changed",
            Box::new(|| {
                let mut bad = good.clone();
                let at = bad.len() - 5;
                bad[at] ^= 0x20;
                std::fs::write(&snap, bad).unwrap()
            }),
        ),
        ("empty", Box::new(|| std::fs::write(&snap, b"").unwrap())),
        ("missing", Box::new(|| std::fs::remove_file(&snap).unwrap())),
        (
            "writable by others",
            Box::new(|| {
                std::fs::write(&snap, &good).unwrap();
                set_mode(&snap, 0o666);
            }),
        ),
        (
            "owned by the session user",
            Box::new(|| {
                std::fs::write(&snap, &good).unwrap();
                set_mode(&snap, 0o644);
                let agent = nix::unistd::User::from_name("agent").unwrap().unwrap();
                std::os::unix::fs::chown(&snap, Some(agent.uid.as_raw()), None).unwrap();
            }),
        ),
        (
            "a symlink to an intact copy",
            Box::new(|| {
                let copy = b.root.join("copy.rules");
                std::fs::write(&copy, &good).unwrap();
                let _ = std::fs::remove_file(&snap);
                std::os::unix::fs::symlink(&copy, &snap).unwrap();
            }),
        ),
    ];
    for (what, damage) in &damages {
        let _ = std::fs::remove_file(&snap);
        std::fs::write(&snap, &good).unwrap();
        damage();
        for req in ["echo hello", touch.as_str()] {
            let out = run_expect(b.ssh(&cfg).arg(req), 78);
            assert_eq!(stdout(&out), "", "{what}");
            assert!(
                stderr(&out).contains("the compiled ALLOWED_COMMANDS")
                    && stderr(&out).contains("nothing runs"),
                "{what}: {}",
                stderr(&out)
            );
        }
        assert!(!marker.exists(), "{what}: a command ran");
    }
    // A new boot writes it again.
    let _ = std::fs::remove_file(&snap);
    b.prepare();
    assert_eq!(
        stdout(&run_expect(b.ssh(&cfg).arg("echo again"), 0)),
        "again\n"
    );
}
