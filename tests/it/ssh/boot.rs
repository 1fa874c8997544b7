//! The entrypoint itself: config errors (one line each, exit 78, nothing
//! touched), host keys that survive restarts, the root-owned runtime and
//! lock files, the docker socket group, and a real listening sshd.

use super::fixture::Bastion;
use crate::harness::{self, output, run_expect, stderr, stdout};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn keyscan(port: u16) -> Vec<String> {
    let out = run_expect(
        Command::new("ssh-keyscan")
            .args(["-p", &port.to_string(), "-t", "ed25519,ecdsa,rsa"])
            .arg("127.0.0.1"),
        0,
    );
    let mut keys: Vec<String> = stdout(&out)
        .lines()
        .filter(|l| !l.starts_with('#'))
        // "[127.0.0.1]:PORT type key": the port changes between boots.
        .map(|l| l.split_once(' ').map_or(l, |(_, key)| key).to_owned())
        .collect();
    keys.sort();
    keys
}

#[test]
fn host_keys_are_generated_once_and_survive_a_restart() {
    let b = Bastion::without_host_keys("boot-hostkeys").force("echo through the daemon");
    let mut first = b.start();
    let before = keyscan(first.port);
    // A fresh deployment: ed25519 and 4096-bit RSA, no ECDSA.
    assert_eq!(before.len(), 2, "{before:?}");
    assert!(before[0].starts_with("ssh-ed25519 "), "{before:?}");
    assert!(before[1].starts_with("ssh-rsa "), "{before:?}");
    // A real login through the listening sshd the entrypoint exec'd.
    let out = run_expect(&mut harness::ssh_to_port(first.port, &b.key), 0);
    assert_eq!(stdout(&out), "through the daemon\n");
    first.stop();
    let dir = b.root.join("etc/ssh/keys");
    let snapshot = |d: &Path| -> Vec<(String, Vec<u8>, u32)> {
        let mut v: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .map(|e| {
                let m = e.metadata().unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                    m.mode() & 0o7777,
                )
            })
            .collect();
        v.sort();
        v
    };
    let files = snapshot(&dir);
    assert_eq!(files.len(), 4);
    let rsa = run_expect(
        Command::new("ssh-keygen")
            .arg("-lf")
            .arg(dir.join("ssh_host_rsa_key.pub")),
        0,
    );
    assert!(stdout(&rsa).starts_with("4096 "), "{}", stdout(&rsa));
    for (name, _, mode) in &files {
        let want = if name.ends_with(".pub") { 0o644 } else { 0o600 };
        assert_eq!(*mode, want, "{name}");
    }
    let second = b.start();
    assert_eq!(keyscan(second.port), before);
    assert_eq!(snapshot(&dir), files);
}

/// Runs the entrypoint expecting exit 78 and returns its stderr lines.
fn config_errors(b: &Bastion) -> Vec<String> {
    let out = output(b.entrypoint().arg("--prepare-only"));
    assert_eq!(
        out.status.code(),
        Some(78),
        "{}",
        harness::describe(&Command::new("bastion-entrypoint"), &out)
    );
    assert_eq!(stdout(&out), "");
    let lines: Vec<String> = stderr(&out).lines().map(str::to_owned).collect();
    for l in &lines {
        assert!(
            l.starts_with("config error: "),
            "not a config error line: {l:?}"
        );
    }
    // Nothing was prepared: no run dir, no generated host key.
    assert!(!b.root.join("run/bastion").exists());
    assert!(!b.root.join("etc/ssh/keys").exists());
    lines
}

#[test]
fn no_mode_is_one_clear_line() {
    let b = Bastion::without_host_keys("boot-nomode");
    let lines = config_errors(&b);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("FORCE_COMMAND") && lines[0].contains("ALLOWED_COMMANDS"));
}

#[test]
fn unreadable_key_sources_are_refused() {
    let b = Bastion::without_host_keys("boot-keysrc");
    // What Docker leaves when the mounted file is missing: a directory.
    std::fs::create_dir_all(b.root.join("etc/bastion/authorized_keys.host")).unwrap();
    let not_dir = b.root.write("keys-dir-is-a-file", "x");
    let b = b
        .force("true")
        .env("AUTHORIZED_KEYS_DIR", not_dir.to_str().unwrap());
    let lines = config_errors(&b);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("config error: AUTHORIZED_KEYS_DIR=\""),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("config error: AUTHORIZED_KEYS_HOST=\""),
        "{lines:?}"
    );
    assert!(lines[1].contains("not a regular file"), "{lines:?}");
}

#[test]
fn bad_ports_lock_policy_and_paths_are_refused() {
    for (var, value) in [
        ("SSH_PORT", "ssh"),
        ("SSH_PORT", "0"),
        ("SSH_PORT", "65536"),
        ("SSH_PORT", "-22"),
        ("HTTP_PORT", "80a"),
        ("COMMAND_LOCK", "sometimes"),
        ("COMMAND_LOCK", "wait:forever"),
        ("SSH_LISTEN_ADDRESS", "localhost"),
        ("AUTHORIZED_KEYS_DIR", "etc/bastion/users.d"),
        ("AUTHORIZED_KEYS_HOST", "./keys"),
    ] {
        let b = Bastion::without_host_keys("boot-port")
            .force("true")
            .env(var, value);
        let lines = config_errors(&b);
        assert_eq!(lines.len(), 1, "{var}={value}: {lines:?}");
        assert!(
            lines[0].starts_with(&format!("config error: {var}=\"{value}\": ")),
            "{lines:?}"
        );
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let b = Bastion::without_host_keys("boot-all")
        .env("SSH_PORT", "99999")
        .env("HTTP_PORT", "http")
        .env("COMMAND_LOCK", "maybe");
    let lines = config_errors(&b);
    assert_eq!(lines.len(), 4, "{lines:?}");
    for var in ["SSH_PORT", "HTTP_PORT", "COMMAND_LOCK", "FORCE_COMMAND"] {
        assert!(lines.iter().any(|l| l.contains(var)), "{var}: {lines:?}");
    }
}

#[test]
fn a_bad_rule_in_allowed_commands_is_refused_at_boot() {
    let b = Bastion::without_host_keys("boot-badrule")
        .env("ALLOWED_COMMANDS", "echo [a-z]+\nls (a)\\1\n");
    let lines = config_errors(&b);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("ALLOWED_COMMANDS"), "{lines:?}");
    assert!(
        lines[0].contains("(a)\\\\1") || lines[0].contains("(a)\\1"),
        "{lines:?}"
    );
}

#[test]
fn runtime_and_lock_files_are_root_owned_and_read_only_for_the_session() {
    let b = Bastion::new("boot-files").force("true");
    b.prepare();
    let run = b.root.join("run/bastion");
    let m = std::fs::metadata(&run).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, 0, 0o755));
    for f in [
        "runtime.json",
        "command.lock",
        "authorized_keys.merged",
        "sshd_config",
        "moduli",
    ] {
        let m = std::fs::metadata(run.join(f)).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, 0, 0o644), "{f}");
    }
    // The key index's socket directory: nobody's alone.
    let sockets = run.join("keys-index");
    let m = std::fs::symlink_metadata(&sockets).unwrap();
    assert!(m.is_dir());
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (65534, 65534, 0o700));
    let runtime = std::fs::read_to_string(run.join("runtime.json")).unwrap();
    assert!(runtime.contains("\"kind\": \"force\""), "{runtime}");
    let lock = run.join("command.lock");
    let inode = std::fs::metadata(&lock).unwrap().ino();
    // The session user can neither remove, replace, write nor rename it.
    let l = lock.display();
    let r = run.join("runtime.json");
    let r = r.display();
    for attack in [
        format!("rm -f {l}"),
        format!("echo x > {l}"),
        format!("mv {l} {l}.old"),
        format!("ln -sf /tmp/x {l}"),
        format!("echo '{{}}' > {r}"),
        format!("touch {}/evil", run.display()),
        format!("touch {}/evil", sockets.display()),
        format!("ls {}", sockets.display()),
        format!("mv {0} {0}.old", sockets.display()),
    ] {
        let out = output(
            Command::new("runuser")
                .args(["-u", "agent", "--", "sh", "-c"])
                .arg(&attack),
        );
        assert!(!out.status.success(), "session user could: {attack}");
    }
    assert_eq!(std::fs::metadata(&lock).unwrap().ino(), inode);
    assert_eq!(std::fs::read(&lock).unwrap(), b"");
    // A second boot keeps the same lock inode (a lock on the old one would
    // otherwise be invisible to new runs).
    b.prepare();
    assert_eq!(std::fs::metadata(&lock).unwrap().ino(), inode);
    let m = std::fs::symlink_metadata(&sockets).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (65534, 65534, 0o700));
}

#[test]
fn the_key_index_serves_from_its_private_directory() {
    let b = Bastion::new("boot-keys-index").force("true");
    b.prepare();
    let run = b.root.join("run/bastion");
    let keys = |extra: &str| {
        let mut c = harness::clean_cmd("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(harness::bin("bastion-keys"))
            .arg("--runtime")
            .arg(run.join("runtime.json"))
            .args([extra, "agent"].into_iter().filter(|a| !a.is_empty()));
        output(&mut c)
    };
    // The first lookup reads every file and starts the index; later ones
    // get the same answer from it, over a socket in keys-index/.
    let first = keys("");
    assert!(stdout(&first).contains(" tester\n"), "{first:?}");
    assert!(
        harness::wait_until(std::time::Duration::from_secs(20), || keys("--index-only")
            .status
            .success()),
        "the key index did not start"
    );
    assert_eq!(stdout(&keys("--index-only")), stdout(&first));
    let socks: Vec<_> = std::fs::read_dir(run.join("keys-index"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".sock"))
        .collect();
    assert_eq!(socks.len(), 1, "{socks:?}");
    // Its directory goes away with the test's root: so does the index.
}

#[test]
fn the_session_user_joins_the_docker_socket_group() {
    let b = Bastion::new("boot-docker").force("true");
    let sock = b.root.join("var/run/docker.sock");
    std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    std::os::unix::fs::chown(&sock, Some(0), Some(4242)).unwrap();
    let group = b.root.join("etc/group");
    assert!(!std::fs::read_to_string(&group).unwrap().contains(":4242:"));
    let out = run_expect(b.entrypoint().arg("--prepare-only"), 0);
    let text = std::fs::read_to_string(&group).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains(":x:4242:"))
        .unwrap_or_else(|| panic!("no group 4242 in\n{text}"));
    assert!(line.ends_with(":x:4242:agent"), "{line}");
    assert!(stderr(&out).contains("gid 4242"), "{}", stderr(&out));
    assert_eq!(std::fs::metadata(&group).unwrap().mode() & 0o7777, 0o644);
    // Idempotent on restart.
    b.prepare();
    assert_eq!(std::fs::read_to_string(&group).unwrap(), text);

    // An existing group with the socket's gid gains the member instead.
    let daemon_gid = 1;
    std::os::unix::fs::chown(&sock, Some(0), Some(daemon_gid)).unwrap();
    b.prepare();
    let text = std::fs::read_to_string(&group).unwrap();
    let daemon = text.lines().find(|l| l.starts_with("daemon:")).unwrap();
    assert!(daemon.ends_with("agent"), "{daemon}");

    // Never the root group.
    std::os::unix::fs::chown(&sock, Some(0), Some(0)).unwrap();
    let out = run_expect(b.entrypoint().arg("--prepare-only"), 0);
    let root_line = std::fs::read_to_string(&group)
        .unwrap()
        .lines()
        .find(|l| l.starts_with("root:"))
        .unwrap()
        .to_owned();
    assert!(!root_line.contains("agent"), "{root_line}");
    assert!(stderr(&out).contains("group root"), "{}", stderr(&out));
}

#[test]
fn zero_keys_is_a_warning_not_a_failure() {
    let b = Bastion::new("boot-nokeys").force("true");
    std::fs::remove_file(b.root.join("etc/bastion/users.d/tester.pub")).unwrap();
    let out = run_expect(b.entrypoint().arg("--prepare-only"), 0);
    assert!(
        stderr(&out).contains("warning: no authorized keys"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn hostile_users_d_entries_neither_hang_nor_count_at_boot() {
    let b = Bastion::new("boot-hostile-usersd").force("true");
    let dir = b.root.join("etc/bastion/users.d");
    // A FIFO would block a plain read forever, /dev/zero would never end,
    // and text that is not a key is not a key.
    run_expect(Command::new("mkfifo").arg(dir.join("fifo.pub")), 0);
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.pub")).unwrap();
    std::fs::write(dir.join("junk.pub"), "not a key\nssh-ed25519 !!!\n").unwrap();
    let mut child = b
        .entrypoint()
        .arg("--prepare-only")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let finished = harness::wait_until(Duration::from_secs(60), || {
        child.try_wait().unwrap().is_some()
    });
    if !finished {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(finished, "the boot hangs on a hostile users.d entry");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Only tester.pub's key counts.
    assert!(
        stderr(&out).contains("1 authorized key line(s) found at boot"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn host_key_and_merged_key_files_are_used() {
    // Keys from AUTHORIZED_KEYS_HOST and _REPO log in; users.d is empty.
    let b = Bastion::new("boot-merge").force("echo merged-key-login");
    let public = std::fs::read_to_string(b.root.join("etc/bastion/users.d/tester.pub")).unwrap();
    std::fs::remove_file(b.root.join("etc/bastion/users.d/tester.pub")).unwrap();
    let other = harness::keygen(&b.root.join("client/other"), "other@it");
    b.root
        .write("etc/bastion/authorized_keys.host", other.trim_end());
    b.root.write("etc/bastion/authorized_keys.repo", &public);
    let cfg = b.prepare();
    let merged =
        std::fs::read_to_string(b.root.join("run/bastion/authorized_keys.merged")).unwrap();
    assert_eq!(merged, format!("{}\n{public}", other.trim_end()));
    let out = run_expect(b.ssh(&cfg).arg("x"), 0);
    assert_eq!(stdout(&out), "merged-key-login\n");
    // A key in no source is refused.
    let stranger = b.root.join("client/stranger");
    harness::keygen(&stranger, "stranger@it");
    let out = output(&mut harness::ssh_via_inetd(&cfg, &b.log(), &stranger));
    assert_eq!(out.status.code(), Some(255));
    assert_eq!(stdout(&out), "");
}

#[test]
fn a_config_sshd_rejects_exits_78_with_its_reason() {
    let b = Bastion::new("boot-sshd-t").force("true");
    let template = b.root.join("usr/local/share/bastion/sshd_config.template");
    let mut t = std::fs::read_to_string(&template).unwrap();
    t.push_str("NoSuchDirective yes\n");
    std::fs::write(&template, t).unwrap();
    let out = run_expect(b.entrypoint().arg("--prepare-only"), 78);
    assert!(stderr(&out).contains("sshd rejects"), "{}", stderr(&out));
    assert!(stderr(&out).contains("NoSuchDirective"), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
}

#[test]
fn a_missing_template_is_a_clear_failure() {
    let b = Bastion::new("boot-notemplate").force("true");
    std::fs::remove_file(b.root.join("usr/local/share/bastion/sshd_config.template")).unwrap();
    let out = run_expect(b.entrypoint().arg("--prepare-only"), 1);
    assert!(
        stderr(&out).contains("sshd_config.template"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn http_credential_errors_are_reported_without_the_secret() {
    let b = Bastion::without_host_keys("boot-http")
        .force("true")
        .env("HTTP_BASIC_AUTH", "no-colon-s3cret-value");
    let lines = config_errors(&b);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("HTTP_BASIC_AUTH"), "{lines:?}");
    assert!(!lines[0].contains("s3cret"), "secret printed: {lines:?}");

    let missing = b.root.join("no-such-token-file");
    let b = Bastion::without_host_keys("boot-http-file")
        .force("true")
        .env("HTTP_TOKEN_FILE", missing.to_str().unwrap());
    let lines = config_errors(&b);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("HTTP_TOKEN_FILE"), "{lines:?}");

    let b = Bastion::without_host_keys("boot-http-port")
        .force("true")
        .env("HTTP_TOKEN", "a-long-enough-token-value-0123456789")
        .env("HTTP_PORT", "2222")
        .env("SSH_PORT", "2222");
    let lines = config_errors(&b);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("config error: HTTP_PORT=\"2222\""),
        "{lines:?}"
    );
    assert!(!lines[0].contains("0123456789"), "{lines:?}");
}

#[test]
fn sshd_runs_with_an_empty_environment() {
    // The container's environment (HTTP secrets included) must not be in
    // the /proc entry of the long-running sshd the entrypoint becomes.
    let b = Bastion::new("boot-environ")
        .force("true")
        .env("CANARY_SECRET", "do-not-leak-0123");
    let d = b.start();
    let environ = std::fs::read(format!("/proc/{}/environ", d.child.id())).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(!environ.contains("do-not-leak"), "{environ}");
    assert!(!environ.contains("FORCE_COMMAND"), "{environ}");
    let exe = std::fs::read_link(format!("/proc/{}/exe", d.child.id())).unwrap();
    assert_eq!(exe, harness::which("sshd"));
}
