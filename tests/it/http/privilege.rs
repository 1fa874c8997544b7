//! The listener runs as the session user with its groups from /etc/group,
//! never root, and a session (a command run as that same user) cannot read
//! its credentials: not from a file, not from /proc/<pid>/environ, mem,
//! cmdline or its stdin pipe.

use super::fixture::*;
use crate::harness::{run_expect, stdout, SESSION_USER};
use std::process::Command;

fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn id_of(args: &[&str]) -> String {
    stdout(&run_expect(
        Command::new("id").args(args).arg(SESSION_USER),
        0,
    ))
    .trim()
    .to_owned()
}

/// Gives the session user a supplementary group for the test's lifetime,
/// as the entrypoint does for the docker socket.
struct ExtraGroup(&'static str);

impl ExtraGroup {
    fn add(name: &'static str) -> ExtraGroup {
        let _ = Command::new("groupdel").arg(name).output();
        // Other tests may hold the /etc/group lock for a moment.
        let retry = |args: &[&str]| {
            let ok = crate::harness::wait_until(PATIENCE, || {
                Command::new(args[0])
                    .args(&args[1..])
                    .output()
                    .is_ok_and(|o| o.status.success())
            });
            assert!(ok, "{args:?} failed");
        };
        retry(&["groupadd", name]);
        retry(&["usermod", "-aG", name, SESSION_USER]);
        ExtraGroup(name)
    }

    fn gid(&self) -> String {
        let out = run_expect(Command::new("getent").args(["group", self.0]), 0);
        stdout(&out).split(':').nth(2).unwrap().to_owned()
    }
}

impl Drop for ExtraGroup {
    fn drop(&mut self) {
        let _ = Command::new("gpasswd")
            .args(["-d", SESSION_USER, self.0])
            .output();
        let _ = Command::new("groupdel").arg(self.0).output();
    }
}

#[test]
fn the_listener_drops_to_the_session_user_and_its_groups() {
    let g = ExtraGroup::add("bastion-it-http");
    let b = Bastion::start(Opts::force("id -u; id -G"));
    let uid = id_of(&["-u"]);
    let gid = id_of(&["-g"]);
    assert_ne!(uid, "0");
    assert_eq!(
        status_field(b.pid(), "Uid"),
        format!("{uid} {uid} {uid} {uid}")
    );
    assert_eq!(
        status_field(b.pid(), "Gid"),
        format!("{gid} {gid} {gid} {gid}")
    );
    // Every group the listener has is one of the user's, the test group
    // (only in /etc/group) and the primary one included.
    let want: Vec<String> = id_of(&["-G"]).split(' ').map(str::to_owned).collect();
    let got: Vec<String> = status_field(b.pid(), "Groups")
        .split(' ')
        .map(str::to_owned)
        .collect();
    assert!(
        got.contains(&g.gid()),
        "the supplementary group is missing: {got:?}"
    );
    assert!(got.contains(&gid), "{got:?}");
    assert!(got.iter().all(|x| want.contains(x)), "{got:?} vs {want:?}");
    assert!(!got.contains(&"0".to_owned()), "{got:?}");
    assert_eq!(status_field(b.pid(), "CapEff"), "0000000000000000");
    // The command runs as the same user.
    let out = stdout(&b.run(&[]));
    assert!(out.starts_with(&format!("{uid}\n")), "{out}");
}

/// What a session tries against the listener's secrets. Every attempt
/// prints the error it got (or the bytes, which must not hold the secret).
fn snoop_script(pid: u32, secret_file: &str) -> String {
    format!(
        "for f in /proc/{pid}/environ /proc/{pid}/cmdline /proc/{pid}/maps /proc/{pid}/fd/0 {secret_file}; do \
           echo \"== $f\"; cat \"$f\" 2>&1 | tr '\\0' ' '; echo; \
         done; \
         echo '== mem'; dd if=/proc/{pid}/mem bs=4096 count=1 skip=16 2>&1 | tail -c 200; echo; \
         echo '== ls fd'; ls -l /proc/{pid}/fd/ 2>&1; \
         echo '== cwd'; ls /proc/{pid}/root/ 2>&1 | head -3; \
         echo '== status'; grep -E '^(Uid|Gid):' /proc/{pid}/status"
    )
}

fn assert_nothing_leaks(b: &Bastion, secret_file: &str) {
    // The command learns the listener's pid from the request (its parent is
    // the listener too, but the test should not depend on that).
    let out = b.run(&[]);
    let text = stdout(&out);
    assert!(!text.contains(TOKEN), "the session read the token:\n{text}");
    for what in [
        format!("/proc/{}/environ", b.pid()),
        format!("/proc/{}/mem", b.pid()),
        format!("/proc/{}/maps", b.pid()),
        format!("/proc/{}/fd/0", b.pid()),
        secret_file.to_owned(),
    ] {
        let section = text
            .split("== ")
            .find(|s| s.starts_with(&what) || (what.ends_with("/mem") && s.starts_with("mem")))
            .unwrap_or_else(|| panic!("no section for {what}:\n{text}"));
        assert!(
            section.contains("Permission denied"),
            "{what} was readable by the session:\n{section}"
        );
    }
}

#[test]
fn a_session_cannot_read_env_credentials_of_the_listener() {
    // Standalone: the token is in the listener's initial environment, which
    // /proc/<pid>/environ would show to a dumpable process of the same user.
    let secret = crate::harness::TempDir::new("http-secret");
    let file = secret.write("token", format!("{TOKEN}\n"));
    crate::harness::set_mode(&file, 0o600);
    // The pid is only known after the start: the force command reads it
    // from a file the test writes.
    let b = Bastion::start(Opts::force("sh {w}/snoop.sh"));
    let script = snoop_script(b.pid(), file.to_str().unwrap());
    std::fs::write(b.w().join("snoop.sh"), script).unwrap();
    assert!(
        std::fs::read(format!("/proc/{}/environ", b.pid()))
            .map(|e| String::from_utf8_lossy(&e).contains(TOKEN))
            .unwrap_or(false),
        "test premise: root sees the token in the environment"
    );
    assert_nothing_leaks(&b, file.to_str().unwrap());
}

#[test]
fn a_session_cannot_read_file_or_stdin_credentials_of_the_listener() {
    let secret = crate::harness::TempDir::new("http-secret");
    let file = secret.write("token", format!("{TOKEN}\n"));
    crate::harness::set_mode(&file, 0o600);
    let mut o = Opts::force("sh {w}/snoop.sh");
    o.auth = Auth::Env(vec![(
        "HTTP_TOKEN_FILE".into(),
        file.to_str().unwrap().into(),
    )]);
    let b = Bastion::start(o);
    std::fs::write(
        b.w().join("snoop.sh"),
        snoop_script(b.pid(), file.to_str().unwrap()),
    )
    .unwrap();
    assert_nothing_leaks(&b, file.to_str().unwrap());

    let mut o = Opts::force("sh {w}/snoop.sh");
    o.auth = Auth::Stdin(format!("bearer\n{TOKEN}").into_bytes());
    let b = Bastion::start(o);
    std::fs::write(
        b.w().join("snoop.sh"),
        snoop_script(b.pid(), file.to_str().unwrap()),
    )
    .unwrap();
    assert_nothing_leaks(&b, file.to_str().unwrap());
}

#[test]
fn a_session_cannot_inspect_the_listener_through_ptrace_gated_files() {
    // These are readable by the same user for a dumpable process.
    let b = Bastion::start(Opts::force("sh {w}/snoop.sh"));
    std::fs::write(
        b.w().join("snoop.sh"),
        format!(
            "for f in syscall auxv personality; do cat /proc/{}/$f 2>&1 | head -c 100; echo; done",
            b.pid()
        ),
    )
    .unwrap();
    let text = stdout(&b.run(&[]));
    assert_eq!(text.matches("Permission denied").count(), 3, "{text}");
}
