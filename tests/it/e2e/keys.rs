//! Keys in a running container: `users.d` read live (a key dropped in works
//! on the next login, a key removed is refused), and zero keys is a warning,
//! not a failure.

use super::docker::{banner, client_key, require, show, ssh, Container, Network};
use crate::harness::TempDir;

#[test]
fn users_d_key_added_and_revoked_while_running() {
    let image = require();
    let tmp = TempDir::new("e2e-keys");
    let (alice, alice_pub) = client_key(&tmp, "alice");
    let (bob, bob_pub) = client_key(&tmp, "bob");
    tmp.write("users.d/alice.pub", &alice_pub);
    let net = Network::new("keys");
    let users = format!("{}:/etc/bastion/users.d:ro", tmp.join("users.d").display());
    let bastion = Container::run(
        &net,
        "bastion",
        &[
            "-p",
            "127.0.0.1::22",
            "-v",
            &users,
            "-e",
            "FORCE_COMMAND=echo welcome",
            &image,
        ],
    );
    let port = bastion.wait_ssh();
    let login = |key: &std::path::Path| ssh(port, key, false, &[], b"");

    let out = login(&alice);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "welcome\n");
    let out = login(&bob);
    assert_eq!(
        out.status.code(),
        Some(255),
        "bob has no key yet\n{}",
        show(&out)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("welcome"));

    // Granted by dropping a file in, no restart.
    tmp.write("users.d/bob.pub", &bob_pub);
    let out = login(&bob);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "welcome\n");
    // The identity is the file name, shown in the logs of that session.
    let logs = bastion.logs();
    assert!(
        logs.contains("bob"),
        "bob's login is not in the logs:\n{logs}"
    );

    // Revoked by removing it.
    std::fs::remove_file(tmp.join("users.d/alice.pub")).unwrap();
    let out = login(&alice);
    assert_eq!(
        out.status.code(),
        Some(255),
        "alice was revoked\n{}",
        show(&out)
    );
    let out = login(&bob);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(bastion.running());
}

#[test]
fn zero_keys_is_a_warning_not_a_failure() {
    let image = require();
    let tmp = TempDir::new("e2e-nokeys");
    let (key, _) = client_key(&tmp, "nobody");
    let net = Network::new("nokeys");
    let bastion = Container::run(
        &net,
        "bastion",
        &[
            "-p",
            "127.0.0.1::22",
            "-e",
            "FORCE_COMMAND=echo welcome",
            &image,
        ],
    );
    let port = bastion.wait_ssh();
    assert!(banner(port).is_some());
    let logs = bastion.logs().to_ascii_lowercase();
    assert!(
        logs.lines()
            .any(|l| l.contains("warn") && l.contains("key")),
        "no warning about zero keys:\n{logs}"
    );
    let out = ssh(port, &key, false, &[], b"");
    assert_eq!(out.status.code(), Some(255), "{}", show(&out));
    assert!(bastion.running(), "{}", bastion.logs());
}
