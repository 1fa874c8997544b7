//! Upstream hosts in containers (SPEC 13): `prod` and an undeclared host
//! are sshd containers of their own on the test's network, both trusting
//! the same key; the bastion holds that key. From a shell of the session
//! user: `ssh prod` works with no option, nothing else does.

use super::docker::{client_key, require, show, ssh, Container, Network};
use crate::harness::{self, TempDir};
use std::path::Path;

/// An sshd container from the test image with its own host key, trusting
/// `authorized` for `agent`. Returns it and its host key line.
pub(super) fn sshd(
    net: &Network,
    image: &str,
    dir: &Path,
    tag: &str,
    authorized: &str,
) -> (Container, String) {
    std::fs::create_dir_all(dir).unwrap();
    harness::set_mode(dir, 0o755);
    let host_pub = harness::keygen(&dir.join("host_key"), "");
    std::fs::write(dir.join("authorized_keys"), authorized).unwrap();
    std::fs::write(
        dir.join("sshd_config"),
        "Port 22\nHostKey /up/host_key\nPidFile none\nAuthorizedKeysFile /up/authorized_keys\n\
         StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
         AllowUsers agent\nLogLevel VERBOSE\n",
    )
    .unwrap();
    let mount = format!("{}:/up:ro", dir.display());
    let c = Container::run(
        net,
        tag,
        &[
            "-v",
            &mount,
            "--entrypoint",
            "/usr/sbin/sshd",
            image,
            "-D",
            "-e",
            "-f",
            "/up/sshd_config",
        ],
    );
    let key: Vec<&str> = host_pub.split_whitespace().take(2).collect();
    (c, key.join(" "))
}

#[test]
fn ssh_prod_from_a_session_with_a_held_key() {
    let image = require();
    let tmp = TempDir::new("e2e-upstream");
    let (client, line) = client_key(&tmp, "ops");
    tmp.write("users.d/ops.pub", &line);
    let key = tmp.join("secrets/prod_key");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    let public = harness::keygen(&key, "prod@e2e");
    let net = Network::new("upstream");
    let (prod, prod_host) = sshd(&net, &image, &tmp.join("prod"), "prod", &public);
    let (other, other_host) = sshd(&net, &image, &tmp.join("other"), "other", &public);
    let pins = tmp.write(
        "upstream_known_hosts",
        format!("{} {prod_host}\n", prod.name),
    );
    tmp.write(
        "other_known_hosts",
        format!("{} {other_host}\n", other.name),
    );
    let users = format!("{}:/etc/bastion/users.d:ro", tmp.join("users.d").display());
    let secret = format!("{}:/run/secrets/prod_key:ro", key.display());
    let pinned = format!("{}:/etc/bastion/upstream_known_hosts:ro", pins.display());
    let other_pins = format!(
        "{}:/etc/bastion/other_known_hosts:ro",
        tmp.join("other_known_hosts").display()
    );
    let bastion = Container::run(
        &net,
        "bastion",
        &[
            "-p",
            "127.0.0.1::22",
            "-v",
            &users,
            "-v",
            &secret,
            "-v",
            &pinned,
            "-v",
            &other_pins,
            "-e",
            "FORCE_COMMAND=sh",
            "-e",
            &format!(
                "UPSTREAMS=prod agent@{}:22 /run/secrets/prod_key",
                prod.name
            ),
            &image,
        ],
    );
    let port = bastion.wait_ssh();
    let script = format!(
        "ssh prod 'echo via-prod-$((6*7))'\n\
         ssh-add -l | grep -c ED25519 | sed 's/^/keys=/'\n\
         ssh-add -D </dev/null; echo \"D=$?\"\n\
         ssh -F /dev/null -o BatchMode=yes -o IdentityAgent=$SSH_AUTH_SOCK \
             -o IdentityFile=/run/bastion/upstreams/prod.pub -o IdentitiesOnly=yes \
             -o UserKnownHostsFile=/etc/bastion/other_known_hosts \
             -o StrictHostKeyChecking=yes agent@{other} echo PWNED; echo \"other=$?\"\n\
         cat /run/secrets/prod_key >/dev/null 2>&1 && echo KEY-READABLE\n\
         ssh prod echo again\n",
        other = other.name
    );
    let out = ssh(port, &client, false, &[], script.as_bytes());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("via-prod-42\n"), "{}", show(&out));
    assert!(text.contains("keys=1\n"), "{}", show(&out));
    assert!(text.contains("D=1\n"), "{}", show(&out));
    assert!(
        text.contains("other=255\n") && !text.contains("PWNED"),
        "{}",
        show(&out)
    );
    assert!(!text.contains("KEY-READABLE"), "{}", show(&out));
    assert!(text.ends_with("again\n"), "{}", show(&out));
    // The agent and the proxy run as `bastion`, not as the session user.
    let procs = bastion.processes();
    let bastion_uid: u32 = bastion
        .exec_ok(&["id", "-u", "bastion"])
        .trim()
        .parse()
        .unwrap();
    for comm in ["ssh-agent", "bastion-agent-p"] {
        let p = procs
            .iter()
            .find(|p| p.comm == comm)
            .unwrap_or_else(|| panic!("no {comm} in {procs:?}"));
        assert_eq!(p.uid, bastion_uid, "{p:?}");
    }
    let logs = bastion.logs();
    let has = |event: &str, field: &str| {
        logs.lines()
            .any(|l| l.starts_with("ts=") && l.contains(event) && l.contains(field))
    };
    assert!(has(" event=upstream.sign ", " upstream=prod "), "{logs}");
    assert!(has(" event=upstream.refused ", " reason=remove"), "{logs}");
}
