//! Algorithms and host keys as an auditor and a pinned client see them:
//! `ssh-audit` (installed by tests/setup-host) against the real listening
//! sshd, the legacy host keys of an earlier deployment still served, and
//! the Diffie-Hellman groups sshd offers.

use super::fixture::Bastion;
use crate::harness::{self, output, run_expect, stderr, stdout};
use std::path::{Path, PathBuf};
use std::process::Command;

const SSH_AUDIT: &str = "/opt/ssh-audit/bin/ssh-audit";

pub fn ssh_audit() -> Command {
    assert!(
        Path::new(SSH_AUDIT).exists(),
        "{SSH_AUDIT} is missing: run tests/setup-host"
    );
    let mut c = Command::new(SSH_AUDIT);
    // No colours; no connection-rate probe (it floods on purpose, see the
    // README on DHEat).
    c.args(["-n", "--skip-rate-test", "-t", "30"]);
    c
}

/// The ssh-audit server policy for the sshd on this machine.
fn hardened_policy() -> String {
    let v = output(Command::new(harness::which("sshd")).arg("-V"));
    let debian = std::fs::read_to_string("/etc/debian_version").unwrap_or_default();
    hardened_policy_for(&stderr(&v), &debian)
}

/// The ssh-audit server policy for an sshd whose `sshd -V` printed
/// `version` on a system with `debian_version` (empty if not Debian): the
/// Debian 12 one for Debian's OpenSSH 9.2 (what the test image runs), else
/// the generic one of the same release.
pub fn hardened_policy_for(version: &str, debian_version: &str) -> String {
    let release = version
        .split(|c: char| c.is_whitespace() || c == ',')
        .find(|w| w.starts_with("OpenSSH_"))
        .unwrap_or_else(|| panic!("no release in {version:?}"))
        .trim_start_matches("OpenSSH_")
        .to_owned();
    let list = run_expect(ssh_audit().arg("--list-policies"), 0);
    let list = stdout(&list);
    let prefix = if release.starts_with("9.2") && debian_version.starts_with("12") {
        "Hardened Debian 12 (".to_owned()
    } else {
        let mm: String = release
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        format!("Hardened OpenSSH Server v{mm} (")
    };
    list.lines()
        .filter_map(|l| l.trim().strip_prefix("* \"")?.strip_suffix('"'))
        .filter(|name| name.starts_with(&prefix))
        .max()
        .unwrap_or_else(|| panic!("no ssh-audit policy {prefix}...) in\n{list}"))
        .to_owned()
}

/// Every algorithm ssh-audit rates `fail`, as "kind name: reason".
pub fn failing_algorithms(report: &serde_json::Value) -> Vec<String> {
    let mut bad = Vec::new();
    for kind in ["kex", "key", "enc", "mac"] {
        for alg in report[kind].as_array().into_iter().flatten() {
            if let Some(fail) = alg["notes"]["fail"].as_array() {
                bad.push(format!("{kind} {}: {fail:?}", alg["algorithm"]));
            }
        }
    }
    if let Some(critical) = report["recommendations"].get("critical") {
        bad.push(format!("critical recommendations: {critical}"));
    }
    bad
}

#[test]
fn a_fresh_deployment_passes_the_hardened_ssh_audit_policy() {
    let b = Bastion::without_host_keys("crypto-audit").force("true");
    let d = b.start();
    let policy = hardened_policy();
    let port = d.port.to_string();
    let out = output(
        ssh_audit()
            .args(["-P", &policy, "-p", &port])
            .arg("127.0.0.1"),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "policy {policy}:\n{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("Passed"), "{}", stdout(&out));

    let out = output(ssh_audit().args(["-j", "-p", &port]).arg("127.0.0.1"));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("ssh-audit -j: {e}\n{}", stdout(&out)));
    assert_eq!(failing_algorithms(&report), Vec::<String>::new());
    // 3 is ssh-audit's "failure"; 2 (warnings: no post-quantum protection
    // in the classic key exchanges the policy itself requires) is accepted.
    assert_ne!(out.status.code(), Some(3), "{}", stdout(&out));
    // The group exchange hands out 3072 bits or more to a modern client.
    let gex = report["kex"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["algorithm"] == "diffie-hellman-group-exchange-sha256")
        .expect("group exchange is offered");
    assert!(gex["keysize"].as_u64().unwrap_or(0) >= 3072, "{gex}");
    let log = d.output();
    assert!(
        log.contains(&format!("algorithms of ssh-audit's \"{policy}\"")),
        "{log}"
    );
    assert!(!log.contains("warning: host key"), "{log}");
    // The moduli file sshd reads holds only groups of 3072 bits or more.
    let moduli = std::fs::read_to_string(b.root.join("run/bastion/moduli")).unwrap();
    let sizes: Vec<u32> = moduli
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().nth(4).unwrap().parse().unwrap())
        .collect();
    assert!(!sizes.is_empty());
    assert!(sizes.iter().all(|s| *s >= 3071), "{sizes:?}");
}

#[test]
fn weak_algorithms_are_refused_to_a_client_that_insists() {
    let b = Bastion::new("crypto-weak").force("echo in");
    let cfg = b.prepare();
    // The client's own default list is accepted.
    let out = run_expect(&mut b.ssh(&cfg), 0);
    assert_eq!(stdout(&out), "in\n");
    // A MAC is only negotiated with a cipher that has none of its own.
    for weak in [
        &["KexAlgorithms=diffie-hellman-group14-sha256"][..],
        &["KexAlgorithms=ecdh-sha2-nistp256"],
        &["Ciphers=aes128-cbc"],
        &["Ciphers=aes128-ctr", "MACs=hmac-sha1"],
        &["Ciphers=aes128-ctr", "MACs=umac-64-etm@openssh.com"],
        &["Ciphers=aes128-ctr", "MACs=hmac-sha2-256"],
        &["HostKeyAlgorithms=ecdsa-sha2-nistp256"],
        &["HostKeyAlgorithms=ssh-rsa"],
    ] {
        let mut ssh = b.ssh_logging(&cfg, "INFO");
        for o in weak {
            ssh.arg("-o").arg(o);
        }
        let out = output(&mut ssh);
        assert_eq!(out.status.code(), Some(255), "{weak:?} was accepted");
        assert_eq!(stdout(&out), "", "{weak:?}");
        assert!(
            stderr(&out).contains("no matching"),
            "{weak:?}: {}",
            stderr(&out)
        );
    }
    // The strong ones those were tried against do work.
    let out = run_expect(
        b.ssh(&cfg).args([
            "-o",
            "Ciphers=aes128-ctr",
            "-o",
            "MACs=hmac-sha2-256-etm@openssh.com",
        ]),
        0,
    );
    assert_eq!(stdout(&out), "in\n");
}

#[test]
fn weak_client_keys_are_refused() {
    let b = Bastion::new("crypto-clientkeys").force("echo in");
    // Keys sshd must refuse, each in its own users.d file: RSA under 3072
    // bits and ECDSA (not in the hardened PubkeyAcceptedAlgorithms).
    let mut refused = Vec::new();
    for (name, args) in [
        ("rsa2048", &["-t", "rsa", "-b", "2048"][..]),
        ("ecdsa", &["-t", "ecdsa"][..]),
    ] {
        let key = b.root.join(format!("client/{name}"));
        run_expect(
            Command::new("ssh-keygen")
                .arg("-q")
                .args(args)
                .args(["-N", "", "-C", name, "-f"])
                .arg(&key),
            0,
        );
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        b.root
            .write(format!("etc/bastion/users.d/{name}.pub"), public);
        refused.push(key);
    }
    // A 3072-bit RSA key is still good enough.
    let rsa3072 = b.root.join("client/rsa3072");
    run_expect(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "rsa", "-b", "3072", "-N", "", "-C", "", "-f"])
            .arg(&rsa3072),
        0,
    );
    b.root.write(
        "etc/bastion/users.d/rsa3072.pub",
        std::fs::read_to_string(rsa3072.with_extension("pub")).unwrap(),
    );
    // The boot names each key sshd will refuse, and only those.
    let out = run_expect(b.entrypoint().arg("--prepare-only"), 0);
    let cfg = PathBuf::from(stdout(&out).trim());
    let warned: Vec<String> = stderr(&out)
        .lines()
        .filter(|l| l.contains("will be refused by sshd"))
        .map(str::to_owned)
        .collect();
    assert_eq!(warned.len(), 2, "{}", stderr(&out));
    assert!(
        warned[0].contains(" of ecdsa (line 1, ecdsa-sha2-nistp256)"),
        "{warned:?}"
    );
    assert!(
        warned[1].contains(" of rsa2048 (line 1, ssh-rsa)")
            && warned[1].contains("under 3072 bits"),
        "{warned:?}"
    );
    let log = b.log();
    for key in &refused {
        let out = output(&mut harness::ssh_via_inetd(&cfg, &log, key));
        assert_eq!(out.status.code(), Some(255), "{key:?} logged in");
        assert_eq!(stdout(&out), "");
    }
    let out = run_expect(&mut harness::ssh_via_inetd(&cfg, &log, &rsa3072), 0);
    assert_eq!(stdout(&out), "in\n");
}

/// Host keys as the shell version made them: ECDSA and 3072-bit RSA, plus
/// the ed25519 one.
fn legacy_keys(dir: &Path) -> Vec<(PathBuf, &'static str)> {
    std::fs::create_dir_all(dir).unwrap();
    let mut v = Vec::new();
    for (t, bits, alg) in [
        ("ed25519", "256", "ssh-ed25519"),
        ("ecdsa", "256", "ecdsa-sha2-nistp256"),
        ("rsa", "3072", "rsa-sha2-512"),
    ] {
        let p = dir.join(format!("ssh_host_{t}_key"));
        run_expect(
            Command::new("ssh-keygen")
                .args(["-q", "-t", t, "-b", bits, "-N", "", "-C", "", "-f"])
                .arg(&p),
            0,
        );
        v.push((p, alg));
    }
    v
}

#[test]
fn legacy_host_keys_keep_being_served_with_one_warning_each() {
    let b = Bastion::without_host_keys("crypto-legacy").force("echo pinned");
    let dir = b.root.join("etc/ssh/keys");
    let keys = legacy_keys(&dir);
    let mut d = b.start();
    // A client that pinned each key (known_hosts with only that key,
    // strict checking, only that algorithm) still logs in.
    for (key, alg) in &keys {
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        let known = b.root.write(
            format!("known-{alg}"),
            format!("[127.0.0.1]:{} {public}", d.port),
        );
        let mut ssh = harness::ssh_to_port(d.port, &b.key);
        ssh.args(["-o", "StrictHostKeyChecking=yes"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known.display()))
            .arg("-o")
            .arg(format!("HostKeyAlgorithms={alg}"));
        let out = run_expect(&mut ssh, 0);
        assert_eq!(stdout(&out), "pinned\n", "{alg}");
    }
    let log = d.output();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("warning: host key"))
        .collect();
    assert_eq!(warnings.len(), 2, "{log}");
    assert!(
        warnings[0].contains("ssh_host_rsa_key is RSA 3072 bits")
            && warnings[0].contains("delete ssh_host_rsa_key and ssh_host_rsa_key.pub"),
        "{}",
        warnings[0]
    );
    assert!(
        warnings[1].contains("ssh_host_ecdsa_key is ECDSA")
            && warnings[1].contains("delete ssh_host_ecdsa_key and ssh_host_ecdsa_key.pub"),
        "{}",
        warnings[1]
    );
    // Retiring them as the warnings say: a 4096-bit RSA key is made, no
    // ECDSA key comes back, and no warning is left.
    d.stop();
    for name in ["ssh_host_rsa_key", "ssh_host_ecdsa_key"] {
        std::fs::remove_file(dir.join(name)).unwrap();
        std::fs::remove_file(dir.join(format!("{name}.pub"))).unwrap();
    }
    let d = b.start();
    assert!(!d.output().contains("warning: host key"), "{}", d.output());
    assert!(!dir.join("ssh_host_ecdsa_key").exists());
    let rsa = run_expect(
        Command::new("ssh-keygen")
            .arg("-lf")
            .arg(dir.join("ssh_host_rsa_key.pub")),
        0,
    );
    assert!(stdout(&rsa).starts_with("4096 "), "{}", stdout(&rsa));
}

#[test]
fn an_rsa_host_key_sshd_would_refuse_is_not_served_and_said_so() {
    let b = Bastion::without_host_keys("crypto-rsa2048").force("echo in");
    let dir = b.root.join("etc/ssh/keys");
    std::fs::create_dir_all(&dir).unwrap();
    run_expect(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-C", "", "-f"])
            .arg(dir.join("ssh_host_rsa_key")),
        0,
    );
    let out = run_expect(b.entrypoint().arg("--prepare-only"), 0);
    let cfg = PathBuf::from(stdout(&out).trim());
    let err = stderr(&out);
    assert_eq!(err.matches("warning: host key").count(), 1, "{err}");
    assert!(err.contains("NOT served"), "{err}");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let host_keys: Vec<&str> = text.lines().filter(|l| l.starts_with("HostKey ")).collect();
    assert_eq!(host_keys.len(), 1, "{text}");
    assert!(host_keys[0].ends_with("/ssh_host_ed25519_key"), "{text}");
    // The ed25519 key alone serves logins.
    let out = run_expect(&mut b.ssh(&cfg), 0);
    assert_eq!(stdout(&out), "in\n");
}
