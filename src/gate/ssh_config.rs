//! The ssh_config a session container gets: one `Host NAME` block per
//! upstream, pointing at the session's gate, with `HostKeyAlias` set to the
//! upstream's real host so the pinned key (and the agent's destination
//! constraint, which checks the same key) still decide. It never writes a
//! value that could end its line or open another block.

use std::fmt::Write as _;
use std::net::IpAddr;

/// One upstream as a session container reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContainerUpstream<'a> {
    /// The upstream's name: what `ssh NAME` takes.
    pub(crate) name: &'a str,
    pub(crate) user: &'a str,
    /// The real host and port, as pinned in the known_hosts file.
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    /// The gate's listener for this upstream.
    pub(crate) gate_port: u16,
}

/// What every block shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContainerSide<'a> {
    /// The gate's address (or a name for it) on the session network.
    pub(crate) gate_host: &'a str,
    /// The agent proxy's socket as mounted in the container.
    pub(crate) agent_socket: &'a str,
    /// The pinned known_hosts file as mounted in the container.
    pub(crate) known_hosts: &'a str,
}

/// The known_hosts name OpenSSH looks up for `host`:`port`: the host alone
/// on port 22, else `[host]:port`. With `HostKeyAlias` the alias is looked
/// up verbatim, so it must be this exact form.
pub(crate) fn known_hosts_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    }
}

/// The whole file, or the first value that cannot be written safely.
pub(crate) fn render(
    side: &ContainerSide,
    upstreams: &[ContainerUpstream],
) -> Result<String, String> {
    check_host("gate address", side.gate_host)?;
    check_path("agent socket", side.agent_socket)?;
    check_path("known_hosts file", side.known_hosts)?;
    let mut out = String::from(
        "# Written by the bastion for this session: upstreams through the egress gate.\n",
    );
    for u in upstreams {
        check_name(u.name)?;
        check_user(u.name, u.user)?;
        check_host(u.name, u.host)?;
        let _ = write!(
            out,
            "\nHost {name}\n\
             \x20   HostName {gate}\n\
             \x20   Port {gate_port}\n\
             \x20   User {user}\n\
             \x20   HostKeyAlias {alias}\n\
             \x20   IdentityAgent {agent}\n\
             \x20   StrictHostKeyChecking yes\n\
             \x20   UserKnownHostsFile {known}\n\
             \x20   GlobalKnownHostsFile none\n\
             \x20   CheckHostIP no\n\
             \x20   UpdateHostKeys no\n\
             \x20   ProxyCommand none\n\
             \x20   ProxyJump none\n",
            name = u.name,
            gate = side.gate_host,
            gate_port = u.gate_port,
            user = u.user,
            alias = known_hosts_name(u.host, u.port),
            agent = side.agent_socket,
            known = side.known_hosts,
        );
    }
    Ok(out)
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if first_ok
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        Ok(())
    } else {
        Err(format!("upstream name {name:?} is not [a-z0-9][a-z0-9_-]*"))
    }
}

fn check_user(name: &str, user: &str) -> Result<(), String> {
    let ok = !user.is_empty()
        && !user.starts_with('-')
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "upstream {name}: user {user:?} is not a plain user name"
        ))
    }
}

/// A DNS name or an IP literal: nothing with spaces, quotes, `%` tokens or
/// patterns that ssh_config would read as more than one host.
fn check_host(what: &str, host: &str) -> Result<(), String> {
    let name_ok = !host.is_empty()
        && !host.starts_with(['-', '.'])
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if name_ok || host.parse::<IpAddr>().is_ok() {
        Ok(())
    } else {
        Err(format!(
            "{what}: host {host:?} is not a host name or IP address"
        ))
    }
}

fn check_path(what: &str, path: &str) -> Result<(), String> {
    let ok = path.starts_with('/')
        && path
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\'' | '%' | '\\' | '$' | '~'));
    if ok {
        Ok(())
    } else {
        Err(format!("{what}: {path:?} is not a plain absolute path"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side() -> ContainerSide<'static> {
        ContainerSide {
            gate_host: "172.30.0.2",
            agent_socket: "/run/bastion/agent/agent.sock",
            known_hosts: "/etc/bastion/upstream_known_hosts",
        }
    }

    fn prod() -> ContainerUpstream<'static> {
        ContainerUpstream {
            name: "prod",
            user: "deploy",
            host: "10.0.0.5",
            port: 22,
            gate_port: 2200,
        }
    }

    #[test]
    fn one_block_per_upstream_pointing_at_the_gate() {
        let backup = ContainerUpstream {
            name: "backup",
            user: "backup",
            host: "backup.internal",
            port: 2222,
            gate_port: 2201,
        };
        let text = render(&side(), &[prod(), backup]).unwrap();
        let expected_prod = "\nHost prod\n    HostName 172.30.0.2\n    Port 2200\n    User deploy\n    HostKeyAlias 10.0.0.5\n    IdentityAgent /run/bastion/agent/agent.sock\n    StrictHostKeyChecking yes\n    UserKnownHostsFile /etc/bastion/upstream_known_hosts\n    GlobalKnownHostsFile none\n    CheckHostIP no\n    UpdateHostKeys no\n    ProxyCommand none\n    ProxyJump none\n";
        assert!(text.contains(expected_prod), "{text}");
        // A non-standard port is pinned as [host]:port, and ssh looks the
        // alias up verbatim: the alias must carry the port.
        assert!(
            text.contains("Host backup\n    HostName 172.30.0.2\n    Port 2201\n"),
            "{text}"
        );
        assert!(
            text.contains("    HostKeyAlias [backup.internal]:2222\n"),
            "{text}"
        );
        assert_eq!(text.matches("\nHost ").count(), 2);
    }

    #[test]
    fn known_hosts_names_follow_openssh() {
        assert_eq!(known_hosts_name("10.0.0.5", 22), "10.0.0.5");
        assert_eq!(known_hosts_name("h.example", 2222), "[h.example]:2222");
        assert_eq!(known_hosts_name("fd00::5", 22), "fd00::5");
        assert_eq!(known_hosts_name("fd00::5", 2222), "[fd00::5]:2222");
    }

    #[test]
    fn no_upstream_no_block() {
        let text = render(&side(), &[]).unwrap();
        assert!(!text.contains("Host "), "{text}");
    }

    #[test]
    fn hostile_values_are_refused_not_written() {
        let cases: Vec<ContainerUpstream> = vec![
            ContainerUpstream {
                name: "prod\nHost *",
                ..prod()
            },
            ContainerUpstream {
                name: "*",
                ..prod()
            },
            ContainerUpstream {
                name: "Prod",
                ..prod()
            },
            ContainerUpstream { name: "", ..prod() },
            ContainerUpstream {
                name: "-oProxyCommand=x",
                ..prod()
            },
            ContainerUpstream {
                user: "deploy\n    ProxyCommand sh",
                ..prod()
            },
            ContainerUpstream {
                user: "-l",
                ..prod()
            },
            ContainerUpstream {
                user: "a b",
                ..prod()
            },
            ContainerUpstream {
                host: "10.0.0.5 evil",
                ..prod()
            },
            ContainerUpstream {
                host: "%h",
                ..prod()
            },
            ContainerUpstream {
                host: "h\r\nMatch all",
                ..prod()
            },
            ContainerUpstream {
                host: "-oProxyCommand",
                ..prod()
            },
        ];
        for u in cases {
            assert!(
                render(&side(), std::slice::from_ref(&u)).is_err(),
                "written: {u:?}"
            );
        }
        let bad_sides = [
            ContainerSide {
                gate_host: "1.2.3.4\nHost *",
                ..side()
            },
            ContainerSide {
                agent_socket: "relative.sock",
                ..side()
            },
            ContainerSide {
                agent_socket: "/run/a b.sock",
                ..side()
            },
            ContainerSide {
                known_hosts: "~/.ssh/known_hosts",
                ..side()
            },
            ContainerSide {
                known_hosts: "/etc/%d/kh",
                ..side()
            },
        ];
        for s in bad_sides {
            assert!(render(&s, &[prod()]).is_err(), "written: {s:?}");
        }
    }

    /// The real client reads the file as meant: `ssh -G` prints the options
    /// it would use for `ssh backup`.
    #[test]
    fn openssh_reads_the_blocks_as_meant() {
        let backup = ContainerUpstream {
            name: "backup",
            user: "backup",
            host: "backup.internal",
            port: 2222,
            gate_port: 2201,
        };
        let text = render(&side(), &[prod(), backup]).unwrap();
        let dir = std::env::temp_dir().join(format!("bastion-gate-sshcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("config");
        std::fs::write(&file, &text).unwrap();
        let out = std::process::Command::new("ssh")
            .arg("-G")
            .arg("-F")
            .arg(&file)
            .arg("backup")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("ssh runs");
        let _ = std::fs::remove_dir_all(&dir);
        let got = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{got}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for want in [
            "hostname 172.30.0.2",
            "port 2201",
            "user backup",
            "hostkeyalias [backup.internal]:2222",
            "identityagent /run/bastion/agent/agent.sock",
            "stricthostkeychecking true",
            "userknownhostsfile /etc/bastion/upstream_known_hosts",
            "globalknownhostsfile none",
            "checkhostip no",
        ] {
            assert!(got.lines().any(|l| l == want), "no {want:?} in:\n{got}");
        }
    }

    #[test]
    fn every_line_is_one_option_or_a_host_header() {
        let text = render(&side(), &[prod()]).unwrap();
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let words: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(words.len(), 2, "{line:?}");
            assert!(
                line.starts_with("Host ") || line.starts_with("    "),
                "{line:?}"
            );
        }
    }
}
