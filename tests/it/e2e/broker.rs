//! Broker mode in a container: `COMMAND_PREFIX="docker exec -i <sibling>"`
//! with rules, allowed and refused over SSH and over HTTP, and the live rule
//! file edited while the container runs.

use super::docker::{client_key, curl, require, show, ssh, Container, Network};
use crate::harness::TempDir;

const TOKEN: &str = "broker-e2e-token";

#[test]
fn prefix_and_rules_over_ssh_and_http() {
    let image = require();
    let tmp = TempDir::new("e2e-broker");
    let (key, line) = client_key(&tmp, "ui");
    tmp.write("users.d/ui.pub", &line);
    let list = tmp.write("allowed-commands.list", "# live rules\n");
    crate::harness::set_mode(&list, 0o644);
    let net = Network::new("broker");
    let sibling = Container::sibling(&net, &image);
    sibling.exec_ok(&["touch", "/tmp/keep"]);
    let hostname = sibling.exec_ok(&["cat", "/etc/hostname"]);
    let users = format!("{}:/etc/bastion/users.d:ro", tmp.join("users.d").display());
    let live = format!("{}:/etc/bastion/allowed-commands.list:ro", list.display());
    let bastion = Container::run(
        &net,
        "bastion",
        &[
            "-p",
            "127.0.0.1::22",
            "-p",
            "127.0.0.1::8080",
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            "-v",
            &users,
            "-v",
            &live,
            "-e",
            &format!("COMMAND_PREFIX=docker exec -i {}", sibling.name),
            "-e",
            "ALLOWED_COMMANDS=# read-only\ncat /etc/hostname\necho .*\n",
            "-e",
            &format!("HTTP_TOKEN={TOKEN}"),
            &image,
        ],
    );
    let ssh_port = bastion.wait_ssh();
    let http_port = bastion.wait_http();

    // Allowed: runs in the sibling, through the prefix.
    let out = ssh(ssh_port, &key, false, &["cat /etc/hostname"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), hostname);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("[broker] ALLOW: cat /etc/hostname"),
        "{}",
        show(&out)
    );

    // Allowed, and shell metacharacters are plain argument bytes.
    let req = "echo $(id -u); touch /tmp/pwned | sh && `reboot` > /tmp/x";
    let out = ssh(ssh_port, &key, false, &[req], b"");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "$(id -u); touch /tmp/pwned | sh && `reboot` > /tmp/x\n"
    );

    // Refused: 126 with a DENY line, nothing run anywhere.
    for req in [
        "rm /tmp/keep",
        "cat /etc/hostname /etc/shadow",
        "xcat /etc/hostname",
        "",
    ] {
        let out = ssh(ssh_port, &key, false, &[req], b"");
        assert_eq!(out.status.code(), Some(126), "{req:?}\n{}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("[broker] DENY"),
            "{req:?}\n{}",
            show(&out)
        );
    }
    for c in [&sibling, &bastion] {
        assert_eq!(c.exec(&["test", "-e", "/tmp/pwned"]).status.code(), Some(1));
        assert_eq!(c.exec(&["test", "-e", "/tmp/x"]).status.code(), Some(1));
    }
    sibling.exec_ok(&["test", "-e", "/tmp/keep"]);

    // The same over HTTP: allowed streams the output and ends cleanly...
    let auth = format!("Authorization: Bearer {TOKEN}");
    let r = curl(
        http_port,
        "/cgi-bin/run",
        &["-H", &auth, "-H", "X-Bastion-Command: cat /etc/hostname"],
    );
    assert_eq!((r.status, r.curl), (200, 0), "{r:?}");
    // stdout and stderr merged: the ALLOW line, then the sibling's output.
    assert_eq!(
        r.body,
        format!("[broker] ALLOW: cat /etc/hostname\n{hostname}\n"),
        "{r:?}"
    );

    // ...refused shows the DENY line and no clean end, so strict clients
    // (curl exits 18) see the failure; with `TE: trailers` the exit code.
    let r = curl(
        http_port,
        "/cgi-bin/run",
        &["-H", &auth, "-H", "X-Bastion-Command: rm /tmp/keep"],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_ne!(r.curl, 0, "a refusal ended like a success: {r:?}");
    assert!(r.body.contains("[broker] DENY"), "{r:?}");
    let r = curl(
        http_port,
        "/cgi-bin/run",
        &[
            "-H",
            &auth,
            "-H",
            "TE: trailers",
            "-H",
            "X-Bastion-Command: rm /tmp/keep",
        ],
    );
    assert!(
        r.headers
            .to_ascii_lowercase()
            .contains("x-bastion-exit-code: 126"),
        "{r:?}"
    );
    sibling.exec_ok(&["test", "-e", "/tmp/keep"]);

    // The live list applies without a restart.
    let out = ssh(ssh_port, &key, false, &["uname -n"], b"");
    assert_eq!(out.status.code(), Some(126), "{}", show(&out));
    std::fs::write(&list, "# live rules\nuname -n\n").unwrap();
    let out = ssh(ssh_port, &key, false, &["uname -n"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), hostname);
}

#[test]
fn a_bad_boot_rule_stops_the_container_with_78() {
    let image = require();
    let net = Network::new("badrule");
    let bastion = Container::run(
        &net,
        "bastion",
        &[
            "-e",
            "COMMAND_PREFIX=docker exec -i nowhere",
            "-e",
            "ALLOWED_COMMANDS=email list\n(a)\\1\n",
            &image,
        ],
    );
    assert_eq!(bastion.wait_exit(), 78, "{}", bastion.logs());
    let logs = bastion.logs();
    assert!(logs.contains("(a)\\1"), "the rule is not named:\n{logs}");
    assert!(!logs.contains("panicked"), "{logs}");
}
