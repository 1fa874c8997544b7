//! Renders `sshd_config` from the rootfs template. Every value put into the
//! file is checked first: a newline or a `%` in a path must never become a
//! second directive or an sshd token. The algorithm lists follow ssh-audit's
//! hardened policy for the installed OpenSSH, cut to what that sshd
//! accepts, so `sshd -t` passes on every supported version.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// What the renderer needs to know about the installed sshd.
pub(super) trait SshdCaps {
    /// `(major, minor)` of OpenSSH, when it could be told.
    fn version(&self) -> Option<(u32, u32)>;
    /// Whether this sshd accepts `directive value` (a trial `sshd -t`).
    fn accepts(&self, directive: &str, value: &str) -> bool;
}

/// One ssh-audit server policy: the algorithm directives, in the policy's
/// order (its check compares lists exactly, order included).
struct Profile {
    policy: &'static str,
    lists: &'static [(&'static str, &'static [&'static str])],
}

const PUBKEY: &[&str] = &[
    "sk-ssh-ed25519-cert-v01@openssh.com",
    "ssh-ed25519-cert-v01@openssh.com",
    "sk-ssh-ed25519@openssh.com",
    "ssh-ed25519",
    "rsa-sha2-512-cert-v01@openssh.com",
    "rsa-sha2-512",
    "rsa-sha2-256-cert-v01@openssh.com",
    "rsa-sha2-256",
];
const CA_SIGNATURE: &[&str] = &[
    "sk-ssh-ed25519@openssh.com",
    "ssh-ed25519",
    "rsa-sha2-512",
    "rsa-sha2-256",
];
const MACS: &[&str] = &[
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "umac-128-etm@openssh.com",
];

/// `ssh-audit --get-hardening-guide "Debian 12 Server"` (OpenSSH 9.2 up to
/// 9.8; the Debian test image).
const DEBIAN_12: Profile = Profile {
    policy: "Hardened Debian 12 (version 3)",
    lists: &[
        (
            "KexAlgorithms",
            &[
                "sntrup761x25519-sha512",
                "sntrup761x25519-sha512@openssh.com",
                "curve25519-sha256",
                "curve25519-sha256@libssh.org",
                "diffie-hellman-group16-sha512",
                "diffie-hellman-group18-sha512",
                "diffie-hellman-group-exchange-sha256",
            ],
        ),
        (
            "Ciphers",
            &[
                "chacha20-poly1305@openssh.com",
                "aes256-gcm@openssh.com",
                "aes256-ctr",
                "aes192-ctr",
                "aes128-gcm@openssh.com",
                "aes128-ctr",
            ],
        ),
        ("MACs", MACS),
        (
            "HostKeyAlgorithms",
            &[
                "sk-ssh-ed25519-cert-v01@openssh.com",
                "ssh-ed25519-cert-v01@openssh.com",
                "rsa-sha2-512-cert-v01@openssh.com",
                "rsa-sha2-256-cert-v01@openssh.com",
                "sk-ssh-ed25519@openssh.com",
                "ssh-ed25519",
                "rsa-sha2-512",
                "rsa-sha2-256",
            ],
        ),
        ("CASignatureAlgorithms", CA_SIGNATURE),
        ("HostbasedAcceptedAlgorithms", PUBKEY),
        ("PubkeyAcceptedAlgorithms", PUBKEY),
    ],
};

/// ssh-audit's "Hardened OpenSSH Server v9.9 (version 1)" (OpenSSH 9.9 and
/// later; the Alpine 3.21 image): adds the ML-KEM hybrid key exchange.
const OPENSSH_9_9: Profile = Profile {
    policy: "Hardened OpenSSH Server v9.9 (version 1)",
    lists: &[
        (
            "KexAlgorithms",
            &[
                "sntrup761x25519-sha512",
                "sntrup761x25519-sha512@openssh.com",
                "mlkem768x25519-sha256",
                "curve25519-sha256",
                "curve25519-sha256@libssh.org",
                "diffie-hellman-group16-sha512",
                "diffie-hellman-group18-sha512",
                "diffie-hellman-group-exchange-sha256",
            ],
        ),
        (
            "Ciphers",
            &[
                "chacha20-poly1305@openssh.com",
                "aes256-gcm@openssh.com",
                "aes128-gcm@openssh.com",
                "aes256-ctr",
                "aes192-ctr",
                "aes128-ctr",
            ],
        ),
        ("MACs", MACS),
        (
            "HostKeyAlgorithms",
            &[
                "sk-ssh-ed25519-cert-v01@openssh.com",
                "ssh-ed25519-cert-v01@openssh.com",
                "rsa-sha2-512-cert-v01@openssh.com",
                "rsa-sha2-256-cert-v01@openssh.com",
                "sk-ssh-ed25519@openssh.com",
                "rsa-sha2-512",
                "rsa-sha2-256",
                "ssh-ed25519",
            ],
        ),
        ("CASignatureAlgorithms", CA_SIGNATURE),
        ("HostbasedAcceptedAlgorithms", PUBKEY),
        ("PubkeyAcceptedAlgorithms", PUBKEY),
    ],
};

/// The key exchange that uses the moduli file: offered only when the
/// filtered file has groups left.
pub(super) const GROUP_EXCHANGE: &str = "diffie-hellman-group-exchange-sha256";

fn profile(version: Option<(u32, u32)>) -> &'static Profile {
    match version {
        Some(v) if v >= (9, 9) => &OPENSSH_9_9,
        _ => &DEBIAN_12,
    }
}

/// The rendered algorithm directives, and what was left out (for the boot
/// log).
#[derive(Debug)]
pub(super) struct Algorithms {
    pub(super) text: String,
    pub(super) left_out: Vec<String>,
    pub(super) policy: &'static str,
}

/// Picks the policy for this sshd's version and keeps, in order, the
/// entries this sshd accepts. `legacy_host_algorithms` (the algorithm of an
/// ECDSA host key kept from an earlier deployment) go last so those keys
/// are still served; `group_exchange` is false when no DH group of 3072
/// bits or more is left in the moduli file.
pub(super) fn algorithms(
    caps: &dyn SshdCaps,
    legacy_host_algorithms: &[String],
    group_exchange: bool,
) -> Result<Algorithms, String> {
    let p = profile(caps.version());
    let mut text = format!(
        "# ssh-audit policy \"{}\", cut to what this sshd supports.\n",
        p.policy
    );
    let mut left_out = Vec::new();
    for (directive, list) in p.lists {
        let mut keep: Vec<&str> = Vec::new();
        for alg in *list {
            if *alg == GROUP_EXCHANGE && !group_exchange {
                left_out.push(format!("{alg} (no DH group of 3072 bits or more)"));
            } else if caps.accepts(directive, alg) {
                keep.push(alg);
            } else {
                left_out.push(format!("{directive} {alg}"));
            }
        }
        if *directive == "HostKeyAlgorithms" {
            for alg in legacy_host_algorithms {
                if !is_config_safe(alg) {
                    return Err(format!(
                        "host key algorithm \"{}\" is not safe",
                        crate::audit::escape(alg)
                    ));
                }
                if !keep.contains(&alg.as_str()) {
                    keep.push(alg);
                }
            }
        }
        if keep.is_empty() {
            return Err(format!(
                "this sshd supports none of the {directive} of ssh-audit's \"{}\"",
                p.policy
            ));
        }
        let _ = writeln!(text, "{directive} {}", keep.join(","));
    }
    Ok(Algorithms {
        text: text.trim_end().to_owned(),
        left_out,
        policy: p.policy,
    })
}

/// Template lines `#? Directive value` are kept (uncommented) where the
/// installed sshd accepts them and stay a comment otherwise: options newer
/// than some supported OpenSSH (`PerSourcePenalties`, 9.8). Returns the
/// directives left as comments.
fn optional_lines(template: &str, caps: &dyn SshdCaps) -> (String, Vec<String>) {
    let mut out = String::with_capacity(template.len());
    let mut skipped = Vec::new();
    for line in template.split_inclusive('\n') {
        let Some(rest) = line.strip_prefix("#? ") else {
            out.push_str(line);
            continue;
        };
        let body = rest.trim_end();
        let (directive, value) = body.split_once(' ').unwrap_or((body, ""));
        if caps.accepts(directive, value.trim()) {
            out.push_str(body);
            out.push('\n');
        } else {
            let _ = writeln!(out, "# not supported by this sshd: {body}");
            skipped.push(directive.to_owned());
        }
    }
    (out, skipped)
}

/// The values the template's `{{...}}` placeholders take.
#[derive(Debug)]
pub(super) struct SshdValues {
    pub(super) port: u16,
    pub(super) listen: Vec<IpAddr>,
    pub(super) host_keys: Vec<PathBuf>,
    pub(super) user: String,
    pub(super) permit_tty: bool,
    /// Argv of the ForceCommand: the wrapper and its arguments.
    pub(super) force_command: Vec<String>,
    /// Argv of the AuthorizedKeysCommand before `%u %f`.
    pub(super) keys_command: Vec<String>,
    /// The moduli file with the strong DH groups only.
    pub(super) moduli_file: PathBuf,
    /// The algorithm directives, from [`algorithms`].
    pub(super) algorithms: String,
}

/// The rendered file and the optional directives this sshd does not have.
#[derive(Debug)]
pub(super) struct Rendered {
    pub(super) text: String,
    pub(super) unsupported: Vec<String>,
}

/// Bytes a value may contain: enough for absolute paths and flags, nothing
/// sshd_config or the shell running ForceCommand would interpret.
pub(super) fn is_config_safe(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+,=:@".contains(&b))
}

pub(super) fn path_str(p: &Path) -> Result<String, String> {
    match p.to_str() {
        Some(s) if is_config_safe(s) => Ok(s.to_owned()),
        _ => Err(format!(
            "path {} contains characters sshd_config cannot carry safely; use letters, digits and /._-+,=:@",
            crate::audit::escape_bytes(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()))
        )),
    }
}

fn words(argv: &[String]) -> Result<String, String> {
    match argv.iter().find(|w| !is_config_safe(w)) {
        Some(bad) => Err(format!(
            "\"{}\" contains characters sshd_config cannot carry safely",
            crate::audit::escape(bad)
        )),
        None => Ok(argv.join(" ")),
    }
}

/// Fills in `template`. Fails on an unsafe value or on a placeholder the
/// template has that this renderer does not know (a template from another
/// version of the image).
pub(super) fn render(
    template: &str,
    v: &SshdValues,
    caps: &dyn SshdCaps,
) -> Result<Rendered, String> {
    if !is_config_safe(&v.user) {
        return Err(format!(
            "user name \"{}\" is not safe",
            crate::audit::escape(&v.user)
        ));
    }
    let mut listen = String::new();
    for a in &v.listen {
        let _ = writeln!(listen, "ListenAddress {a}");
    }
    if listen.is_empty() {
        listen.push_str("# ListenAddress: all addresses (SSH_LISTEN_ADDRESS unset)\n");
    }
    let mut keys = String::new();
    for k in &v.host_keys {
        let _ = writeln!(keys, "HostKey {}", path_str(k)?);
    }
    let pairs = [
        ("{{SSH_PORT}}", v.port.to_string()),
        ("{{LISTEN_ADDRESSES}}", listen.trim_end().to_owned()),
        ("{{HOST_KEYS}}", keys.trim_end().to_owned()),
        ("{{USER}}", v.user.clone()),
        (
            "{{PERMIT_TTY}}",
            if v.permit_tty { "yes" } else { "no" }.to_owned(),
        ),
        ("{{FORCE_COMMAND}}", words(&v.force_command)?),
        ("{{KEYS_COMMAND}}", words(&v.keys_command)?),
        ("{{MODULI_FILE}}", path_str(&v.moduli_file)?),
        ("{{ALGORITHMS}}", v.algorithms.clone()),
    ];
    let mut out = template.to_owned();
    for (k, val) in &pairs {
        if !out.contains(k) {
            return Err(format!("the template has no {k} placeholder"));
        }
        out = out.replace(k, val);
    }
    if let Some(i) = out.find("{{") {
        let rest: String = out[i..].chars().take(40).collect();
        return Err(format!(
            "the template has an unknown placeholder at \"{rest}\""
        ));
    }
    let (text, unsupported) = optional_lines(&out, caps);
    Ok(Rendered { text, unsupported })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str =
        include_str!("../../rootfs/usr/local/share/bastion/sshd_config.template");

    fn values() -> SshdValues {
        SshdValues {
            port: 2222,
            listen: vec!["127.0.0.1".parse().unwrap()],
            host_keys: vec!["/etc/ssh/keys/ssh_host_ed25519_key".into()],
            user: "agent".into(),
            permit_tty: true,
            force_command: vec!["/usr/local/bin/bastion-wrapper".into()],
            keys_command: vec!["/usr/local/bin/bastion-keys".into()],
            moduli_file: "/run/bastion/moduli".into(),
            algorithms: algorithms(&Caps::v9_2(), &[], true).unwrap().text,
        }
    }

    /// An sshd that knows `known` algorithms and options, by name.
    struct Caps {
        version: Option<(u32, u32)>,
        refused: Vec<&'static str>,
    }

    impl Caps {
        fn v9_2() -> Caps {
            Caps {
                version: Some((9, 2)),
                refused: vec!["mlkem768x25519-sha256", "PerSourcePenalties"],
            }
        }
        fn v9_9() -> Caps {
            Caps {
                version: Some((9, 9)),
                refused: vec![],
            }
        }
    }

    impl SshdCaps for Caps {
        fn version(&self) -> Option<(u32, u32)> {
            self.version
        }
        fn accepts(&self, directive: &str, value: &str) -> bool {
            !self.refused.contains(&directive) && !self.refused.contains(&value)
        }
    }

    fn rendered(caps: &Caps) -> String {
        render(TEMPLATE, &values(), caps).unwrap().text
    }

    fn directive<'a>(cfg: &'a str, name: &str) -> Vec<&'a str> {
        directives(cfg)
            .into_iter()
            .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .collect()
    }

    fn directives(cfg: &str) -> Vec<&str> {
        cfg.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    }

    #[test]
    fn renders_the_hardened_directives() {
        let cfg = rendered(&Caps::v9_2());
        let d = directives(&cfg);
        for want in [
            "Port 2222",
            "ListenAddress 127.0.0.1",
            "HostKey /etc/ssh/keys/ssh_host_ed25519_key",
            "AuthenticationMethods publickey",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "DisableForwarding yes",
            "PermitTunnel no",
            "PermitUserEnvironment no",
            "PermitUserRC no",
            "PermitRootLogin no",
            "AllowUsers agent",
            "AuthorizedKeysFile none",
            "AuthorizedKeysCommand /usr/local/bin/bastion-keys %u %f",
            "AuthorizedKeysCommandUser nobody",
            "ExposeAuthInfo yes",
            "ForceCommand /usr/local/bin/bastion-wrapper",
            "LogLevel VERBOSE",
            "PermitTTY yes",
        ] {
            assert!(d.contains(&want), "missing {want:?} in\n{cfg}");
        }
        assert!(!cfg.contains("{{"));
        assert!(!d.iter().any(|l| l.starts_with("Subsystem")));
    }

    #[test]
    fn refuses_values_that_would_inject_directives() {
        for bad in [
            "/tmp/x\nPermitRootLogin yes",
            "/tmp/a b",
            "/tmp/%u",
            "/tmp/$(id)",
            "/tmp/x;id",
            "",
        ] {
            let mut v = values();
            v.force_command = vec![bad.into()];
            assert!(render(TEMPLATE, &v, &Caps::v9_2()).is_err(), "{bad:?}");
            let mut v = values();
            v.host_keys = vec![bad.into()];
            assert!(render(TEMPLATE, &v, &Caps::v9_2()).is_err(), "{bad:?}");
            let mut v = values();
            v.moduli_file = bad.into();
            assert!(render(TEMPLATE, &v, &Caps::v9_2()).is_err(), "{bad:?}");
            assert!(
                algorithms(&Caps::v9_2(), &[bad.into()], true).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn refuses_unknown_or_missing_placeholders() {
        let caps = Caps::v9_2();
        assert!(render(&format!("{TEMPLATE}\nFoo {{{{BAR}}}}\n"), &values(), &caps).is_err());
        assert!(render(&TEMPLATE.replace("{{USER}}", "agent"), &values(), &caps).is_err());
        assert!(render(&TEMPLATE.replace("{{ALGORITHMS}}", ""), &values(), &caps).is_err());
    }

    #[test]
    fn each_openssh_gets_its_hardened_policy_in_order() {
        let v92 = algorithms(&Caps::v9_2(), &[], true).unwrap();
        assert_eq!(v92.policy, "Hardened Debian 12 (version 3)");
        assert!(v92.text.contains(
            "\nKexAlgorithms sntrup761x25519-sha512,sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org,diffie-hellman-group16-sha512,diffie-hellman-group18-sha512,diffie-hellman-group-exchange-sha256\n"
        ), "{}", v92.text);
        assert!(v92.text.contains(
            "\nCiphers chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes256-ctr,"
        ));
        let v99 = algorithms(&Caps::v9_9(), &[], true).unwrap();
        assert_eq!(v99.policy, "Hardened OpenSSH Server v9.9 (version 1)");
        assert!(v99
            .text
            .contains("@openssh.com,mlkem768x25519-sha256,curve25519-sha256,"));
        assert!(v99.text.contains("\nCiphers chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-gcm@openssh.com,aes256-ctr,"));
        assert!(v99
            .text
            .contains(",rsa-sha2-512,rsa-sha2-256,ssh-ed25519\n"));
        // An unknown version gets the older, smaller policy.
        let unknown = Caps {
            version: None,
            refused: vec![],
        };
        assert_eq!(algorithms(&unknown, &[], true).unwrap().policy, v92.policy);
    }

    #[test]
    fn nothing_weak_is_ever_rendered() {
        for caps in [Caps::v9_2(), Caps::v9_9()] {
            let cfg = rendered(&caps);
            for d in [
                "KexAlgorithms",
                "Ciphers",
                "MACs",
                "HostKeyAlgorithms",
                "PubkeyAcceptedAlgorithms",
                "CASignatureAlgorithms",
            ] {
                let lists = directive(&cfg, d);
                assert_eq!(lists.len(), 1, "{d} in\n{cfg}");
                for weak in [
                    "ecdsa", "sha1", "ssh-rsa", "nistp", "cbc", "group14", "umac-64", "-96",
                    "ssh-dss", "3des",
                ] {
                    assert!(!lists[0].contains(weak), "{d} has {weak}: {}", lists[0]);
                }
            }
            assert_eq!(directive(&cfg, "RequiredRSASize"), ["3072"]);
            assert_eq!(directive(&cfg, "ModuliFile"), ["/run/bastion/moduli"]);
        }
    }

    #[test]
    fn unsupported_entries_and_options_are_left_out() {
        let caps = Caps {
            version: Some((9, 9)),
            refused: vec![
                "mlkem768x25519-sha256",
                "sntrup761x25519-sha512",
                "PerSourcePenalties",
            ],
        };
        let a = algorithms(&caps, &[], true).unwrap();
        assert!(
            !a.text.contains("mlkem") && !a.text.contains("sntrup761x25519-sha512,"),
            "{}",
            a.text
        );
        assert!(a
            .text
            .contains("KexAlgorithms sntrup761x25519-sha512@openssh.com,curve25519-sha256,"));
        assert_eq!(a.left_out.len(), 2, "{:?}", a.left_out);
        let mut v = values();
        v.algorithms = a.text;
        let r = render(TEMPLATE, &v, &caps).unwrap();
        assert_eq!(r.unsupported, ["PerSourcePenalties"]);
        assert!(directive(&r.text, "PerSourcePenalties").is_empty());
        assert!(r
            .text
            .contains("\n# not supported by this sshd: PerSourcePenalties "));
        let r = render(TEMPLATE, &values(), &Caps::v9_9()).unwrap();
        assert!(r.unsupported.is_empty());
        assert_eq!(directive(&r.text, "PerSourcePenalties").len(), 1);
        // Nothing at all supported is an error, not an empty list.
        let none = Caps {
            version: Some((9, 2)),
            refused: vec!["KexAlgorithms"],
        };
        assert!(algorithms(&none, &[], true).is_err());
    }

    #[test]
    fn group_exchange_needs_strong_moduli() {
        let a = algorithms(&Caps::v9_2(), &[], false).unwrap();
        assert!(!a.text.contains(GROUP_EXCHANGE), "{}", a.text);
        assert!(a.text.contains("diffie-hellman-group18-sha512\n"));
    }

    #[test]
    fn legacy_host_key_algorithms_come_last() {
        let a = algorithms(&Caps::v9_2(), &["ecdsa-sha2-nistp256".into()], true).unwrap();
        let hk = a
            .text
            .lines()
            .find(|l| l.starts_with("HostKeyAlgorithms "))
            .unwrap();
        assert!(hk.ends_with(",rsa-sha2-256,ecdsa-sha2-nistp256"), "{hk}");
        // Only host keys: clients still may not log in with ECDSA keys.
        let pk = a
            .text
            .lines()
            .find(|l| l.starts_with("PubkeyAcceptedAlgorithms "))
            .unwrap();
        assert!(!pk.contains("ecdsa"), "{pk}");
    }

    #[test]
    fn connection_limits_let_twenty_sessions_from_one_address_in() {
        let cfg = rendered(&Caps::v9_2());
        let per_source: u32 = directive(&cfg, "PerSourceMaxStartups")[0].parse().unwrap();
        let start: u32 = directive(&cfg, "MaxStartups")[0]
            .split(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(per_source >= 20, "{per_source}");
        assert!(
            start > per_source,
            "one source must not fill every pre-auth slot"
        );
        assert_eq!(directive(&cfg, "UnusedConnectionTimeout").len(), 1);
        assert_eq!(directive(&cfg, "LoginGraceTime").len(), 1);
    }
}
