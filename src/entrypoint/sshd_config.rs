//! Renders `sshd_config` from the rootfs template. Every value put into the
//! file is checked first: a newline or a `%` in a path must never become a
//! second directive or an sshd token.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

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
pub(super) fn render(template: &str, v: &SshdValues) -> Result<String, String> {
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
    Ok(out)
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
        }
    }

    fn directives(cfg: &str) -> Vec<&str> {
        cfg.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    }

    #[test]
    fn renders_the_hardened_directives() {
        let cfg = render(TEMPLATE, &values()).unwrap();
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
            assert!(render(TEMPLATE, &v).is_err(), "{bad:?}");
            let mut v = values();
            v.host_keys = vec![bad.into()];
            assert!(render(TEMPLATE, &v).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn refuses_unknown_or_missing_placeholders() {
        assert!(render(&format!("{TEMPLATE}\nFoo {{{{BAR}}}}\n"), &values()).is_err());
        assert!(render(&TEMPLATE.replace("{{USER}}", "agent"), &values()).is_err());
    }
}
