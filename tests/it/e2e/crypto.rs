//! The image's sshd as an auditor sees it: a fresh container passes
//! ssh-audit's hardened policy for the OpenSSH it ships, with no failing
//! algorithm and only ed25519 and 4096-bit RSA host keys.

use super::docker::{require, Container, Network};
use crate::harness::{output, stdout};
use crate::ssh::crypto::{failing_algorithms, hardened_policy_for, ssh_audit};

#[test]
fn a_fresh_container_passes_the_hardened_ssh_audit_policy() {
    let image = require();
    let net = Network::new("audit");
    let c = Container::run(
        &net,
        "audit",
        &["-p", "127.0.0.1::22", "-e", "FORCE_COMMAND=true", &image],
    );
    let port = c.wait_ssh().to_string();
    let version = c.exec(&["/usr/sbin/sshd", "-V"]);
    let version = String::from_utf8_lossy(&version.stderr).into_owned();
    let debian = c.exec(&["cat", "/etc/debian_version"]);
    let policy = hardened_policy_for(&version, &stdout(&debian));
    let out = output(ssh_audit().args(["-P", &policy, "-p", &port, "127.0.0.1"]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "policy {policy}:\n{}\n{}",
        stdout(&out),
        c.logs()
    );
    let out = output(ssh_audit().args(["-j", "-p", &port, "127.0.0.1"]));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("ssh-audit -j: {e}\n{}", stdout(&out)));
    assert_eq!(failing_algorithms(&report), Vec::<String>::new());
    let keys: Vec<(String, u64)> = report["key"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["algorithm"].as_str().unwrap_or("").to_owned(),
                k["keysize"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("ssh-ed25519".to_owned(), 0),
            ("rsa-sha2-512".to_owned(), 4096),
            ("rsa-sha2-256".to_owned(), 4096)
        ],
        "{report}"
    );
    let logs = c.logs();
    assert!(
        logs.contains(&format!("algorithms of ssh-audit's \"{policy}\"")),
        "{logs}"
    );
}
