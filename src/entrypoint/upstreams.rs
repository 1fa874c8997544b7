//! Boot of SPEC 13: the per-upstream public files and the root-owned
//! client config, then a real OpenSSH `ssh-agent` as the `bastion` user
//! with each key added under a destination constraint, then the filtering
//! proxy in front of it. The private keys are read by `ssh-add` (as root)
//! straight into the agent and are never copied anywhere.

use super::{files, log, BootError};
use crate::agent::AGENT_USER;
use crate::config::{SAFE_PATH, SESSION_USER};
use crate::upstream::Checked;
use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where everything of this module lives, under the run directory.
pub(super) struct UpstreamPaths {
    /// Public files: NAME.pub, NAME.known_hosts, upstreams.json (root, 0755).
    pub(super) public_dir: PathBuf,
    /// The proxy's socket directory (root, 0755) and socket.
    pub(super) socket_dir: PathBuf,
    pub(super) socket: PathBuf,
    /// The agent's own directory (bastion, 0700): its socket, the counters.
    pub(super) private_dir: PathBuf,
    pub(super) agent_socket: PathBuf,
    pub(super) metrics: PathBuf,
    /// The client config sessions' ssh reads.
    pub(super) ssh_config: PathBuf,
}

impl UpstreamPaths {
    pub(super) fn new(run_dir: &Path, ssh_config: PathBuf) -> Self {
        let socket_dir = run_dir.join("agent");
        let private_dir = run_dir.join("agent-private");
        UpstreamPaths {
            public_dir: run_dir.join("upstreams"),
            socket: socket_dir.join("agent.sock"),
            socket_dir,
            agent_socket: private_dir.join("agent.sock"),
            metrics: private_dir.join("upstream-metrics.prom"),
            private_dir,
            ssh_config,
        }
    }
}

/// One known_hosts line naming the host both ways: plain (what `ssh-add
/// -h` looks up) and `[host]:port` (what ssh looks up off port 22).
fn pin_lines(c: &Checked) -> String {
    let d = &c.declared;
    let names = if d.port == 22 {
        d.host.clone()
    } else {
        format!("{},{}", d.host, d.known_hosts_name())
    };
    let mut s = String::new();
    for k in &c.public.host_keys {
        let _ = writeln!(s, "{names} {k}");
    }
    s
}

/// The `Host NAME` blocks. Every value was validated at boot (names, users
/// and hosts of letters, digits and `._-:`; paths checked here).
pub(super) fn render_ssh_config(
    upstreams: &[Checked],
    p: &UpstreamPaths,
) -> Result<String, String> {
    let agent = super::sshd_config::path_str(&p.socket)?;
    let mut s = String::from(
        "# Written by bastion-entrypoint at boot from UPSTREAMS: one block per upstream.\n\
         # Keys are held by the bastion's agent; host keys are the pinned ones.\n",
    );
    for c in upstreams {
        let d = &c.declared;
        let public = super::sshd_config::path_str(&p.public_dir.join(format!("{}.pub", d.name)))?;
        let pins =
            super::sshd_config::path_str(&p.public_dir.join(format!("{}.known_hosts", d.name)))?;
        let _ = write!(
            s,
            "\nHost {name}\n\
             \x20   HostName {host}\n\
             \x20   User {user}\n\
             \x20   Port {port}\n\
             \x20   IdentityAgent {agent}\n\
             \x20   IdentityFile {public}\n\
             \x20   IdentitiesOnly yes\n\
             \x20   PreferredAuthentications publickey\n\
             \x20   PasswordAuthentication no\n\
             \x20   KbdInteractiveAuthentication no\n\
             \x20   BatchMode yes\n\
             \x20   StrictHostKeyChecking yes\n\
             \x20   UserKnownHostsFile {pins}\n\
             \x20   GlobalKnownHostsFile /dev/null\n\
             \x20   UpdateHostKeys no\n\
             \x20   CheckHostIP no\n\
             \x20   ForwardAgent no\n",
            name = d.name,
            host = d.host,
            user = d.user,
            port = d.port,
        );
    }
    Ok(s)
}

/// Writes the public files and the client config; with no upstream, makes
/// sure no config of an earlier boot is left. Returns whether there is
/// anything to start.
pub(super) fn prepare(upstreams: &[Checked], p: &UpstreamPaths) -> Result<bool, BootError> {
    if upstreams.is_empty() {
        match std::fs::remove_file(&p.ssh_config) {
            Ok(()) => log(&format!(
                "removed {} (no UPSTREAMS)",
                p.ssh_config.display()
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(BootError::io(
                    format!("remove {}", p.ssh_config.display()),
                    e,
                ))
            }
        }
        return Ok(false);
    }
    let io = |what: &Path| {
        let what = what.display().to_string();
        move |e| BootError::io(format!("prepare {what}"), e)
    };
    crate::checked::ensure_root_dir(&p.public_dir, 0o755).map_err(io(&p.public_dir))?;
    crate::checked::ensure_root_dir(&p.socket_dir, 0o755).map_err(io(&p.socket_dir))?;
    let bastion = nix::unistd::User::from_name(AGENT_USER)
        .ok()
        .flatten()
        .ok_or_else(|| {
            BootError::Failed(format!(
                "user {AGENT_USER} does not exist: the image creates it for the upstream agent"
            ))
        })?;
    crate::checked::ensure_private_dir(
        &p.private_dir,
        bastion.uid.as_raw(),
        bastion.gid.as_raw(),
        0o700,
    )
    .map_err(io(&p.private_dir))?;
    for c in upstreams {
        let name = &c.declared.name;
        let public = p.public_dir.join(format!("{name}.pub"));
        files::write_root_file(
            &public,
            format!("{} {name}@bastion\n", c.public.public_key).as_bytes(),
            0o644,
        )
        .map_err(io(&public))?;
        let pins = p.public_dir.join(format!("{name}.known_hosts"));
        files::write_root_file(&pins, pin_lines(c).as_bytes(), 0o644).map_err(io(&pins))?;
    }
    let table: Vec<_> = upstreams.iter().map(|c| c.public.clone()).collect();
    let json = serde_json::to_vec_pretty(&table)
        .map_err(|e| BootError::Failed(format!("cannot encode the upstream table: {e}")))?;
    let table_file = p.public_dir.join("upstreams.json");
    files::write_root_file(&table_file, &json, 0o644).map_err(io(&table_file))?;
    let config = render_ssh_config(upstreams, p).map_err(BootError::Failed)?;
    if let Some(dir) = p.ssh_config.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    files::write_root_file(&p.ssh_config, config.as_bytes(), 0o644).map_err(io(&p.ssh_config))?;
    warn_unless_included(&p.ssh_config);
    Ok(true)
}

/// The egress gate's files for session containers (SPEC 14), in the share
/// volume (root-owned, 0755, not writable by any session): every pin in
/// one known_hosts file, and one ssh_config the same for every session
/// (`HostName bastion-gate`, which each container resolves to its gate
/// with `--add-host`; the ports are stable per upstream). The agent
/// proxy's socket joins them when the agent starts.
pub(super) fn prepare_share(
    upstreams: &[Checked],
    gate: &crate::gate::GateRuntime,
    share_dir: &Path,
) -> Result<(), BootError> {
    use crate::gate;
    let io = |what: &Path| {
        let what = what.display().to_string();
        move |e| BootError::io(format!("prepare {what}"), e)
    };
    crate::checked::ensure_root_dir(share_dir, 0o755).map_err(io(share_dir))?;
    let (pins, config) = share_files(upstreams, gate).map_err(BootError::Failed)?;
    let known = share_dir.join(gate::SHARE_KNOWN_HOSTS);
    files::write_root_file(&known, pins.as_bytes(), 0o644).map_err(io(&known))?;
    let conf = share_dir.join(gate::SHARE_SSH_CONFIG);
    files::write_root_file(&conf, config.as_bytes(), 0o644).map_err(io(&conf))?;
    let ports = gate::plan_ports(upstreams.len(), &gate.own_ports);
    let listed: Vec<String> = upstreams
        .iter()
        .zip(&ports)
        .map(|(c, p)| format!("{} on {p}", c.declared.name))
        .collect();
    log(&format!(
        "egress gate: session containers reach {} at bastion-gate (files in {}, host path {})",
        listed.join(", "),
        share_dir.display(),
        gate.share_source
    ));
    Ok(())
}

/// The share's known_hosts (every pin) and the container ssh_config.
fn share_files(
    upstreams: &[Checked],
    gate: &crate::gate::GateRuntime,
) -> Result<(String, String), String> {
    use crate::gate::{self, ssh_config};
    let pins: String = upstreams.iter().map(pin_lines).collect();
    let ports = gate::plan_ports(upstreams.len(), &gate.own_ports);
    let blocks: Vec<ssh_config::ContainerUpstream> = upstreams
        .iter()
        .zip(&ports)
        .map(|(c, &gate_port)| ssh_config::ContainerUpstream {
            name: &c.declared.name,
            user: &c.declared.user,
            host: &c.declared.host,
            port: c.declared.port,
            gate_port,
        })
        .collect();
    let side = ssh_config::ContainerSide {
        gate_host: gate::network::GATE_ALIAS,
        agent_socket: gate::CONTAINER_AGENT_SOCKET,
        known_hosts: gate::CONTAINER_KNOWN_HOSTS,
    };
    Ok((pins, ssh_config::render(&side, &blocks)?))
}

/// `ssh prod` works only if the system ssh_config reads ssh_config.d (the
/// OpenSSH packages of Alpine and Debian do).
fn warn_unless_included(conf: &Path) {
    let Some(system) = conf
        .parent()
        .and_then(Path::parent)
        .map(|etc_ssh| etc_ssh.join("ssh_config"))
    else {
        return;
    };
    let included = std::fs::read_to_string(&system).is_ok_and(|t| {
        t.lines()
            .map(str::trim)
            .any(|l| l.starts_with("Include") && l.contains("ssh_config.d"))
    });
    if !included {
        log(&format!(
            "warning: {} does not include ssh_config.d: `ssh NAME` will not find the upstream blocks; use `ssh -F {} NAME`",
            system.display(),
            conf.display()
        ));
    }
}

fn wait_for_socket(
    path: &Path,
    child: &mut std::process::Child,
    what: &str,
) -> Result<(), BootError> {
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(BootError::Failed(format!(
                "{what} exited at start ({status})"
            )));
        }
        if Instant::now() >= end {
            let _ = child.kill();
            return Err(BootError::Failed(format!(
                "{what} did not listen on {} within 15 s",
                path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts the agent, loads the keys, starts the proxy. The children die
/// with the process that started them (sshd, once the entrypoint execs).
/// `events` is the write end of the monitor's socket for the proxies'
/// events (descriptor 3 of each proxy).
pub(super) fn start(
    upstreams: &[Checked],
    p: &UpstreamPaths,
    proxy_bin: &Path,
    share_socket: Option<&Path>,
    events: &std::os::fd::OwnedFd,
) -> Result<(), BootError> {
    let agent_bin = super::find_program("ssh-agent")?;
    let add_bin = super::find_program("ssh-add")?;
    let bastion = nix::unistd::User::from_name(AGENT_USER)
        .ok()
        .flatten()
        .ok_or_else(|| BootError::Failed(format!("user {AGENT_USER} does not exist")))?;
    if let Ok(m) = std::fs::symlink_metadata(&p.agent_socket) {
        use std::os::unix::fs::FileTypeExt;
        if m.file_type().is_socket() {
            let _ = std::fs::remove_file(&p.agent_socket);
        }
    }
    // -D: stay in the foreground (a child of sshd, reaped by tini);
    // -P: no PKCS#11 provider may ever be loaded. ssh-agent makes itself
    // non-traceable and checks every peer is root or its own user.
    let mut agent = Command::new(&agent_bin);
    agent
        .env_clear()
        .env("PATH", SAFE_PATH)
        .arg("-D")
        .arg("-a")
        .arg(&p.agent_socket)
        .args(["-P", "/nonexistent/none"])
        .uid(bastion.uid.as_raw())
        .gid(bastion.gid.as_raw())
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    crate::sys::privilege::die_with_parent(&mut agent);
    let mut agent = agent
        .spawn()
        .map_err(|e| BootError::io(format!("start {}", agent_bin.display()), e))?;
    wait_for_socket(&p.agent_socket, &mut agent, "ssh-agent")?;

    for c in upstreams {
        let d = &c.declared;
        let pins = p.public_dir.join(format!("{}.known_hosts", d.name));
        let out = Command::new(&add_bin)
            .env_clear()
            .env("PATH", SAFE_PATH)
            .env("SSH_AUTH_SOCK", &p.agent_socket)
            .arg("-q")
            .arg("-h")
            .arg(d.destination())
            .arg("-H")
            .arg(&pins)
            .arg(&d.key_file)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| BootError::io(format!("run {}", add_bin.display()), e))?;
        if !out.status.success() {
            let _ = agent.kill();
            return Err(BootError::Failed(format!(
                "ssh-add could not load the key of upstream {} ({}): {}",
                d.name,
                d.key_file.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        log(&format!(
            "upstream {}: key {} held by the agent, restricted to {} (port {}) and its {} pinned host key(s)",
            d.name,
            c.public.fingerprint,
            d.destination(),
            d.port,
            c.public.host_keys.len()
        ));
    }

    let proxy_for = |listen: &Path, any_client: bool| {
        let mut proxy = Command::new(proxy_bin);
        proxy
            .env_clear()
            .env("PATH", SAFE_PATH)
            .arg("--listen")
            .arg(listen)
            .arg("--agent")
            .arg(&p.agent_socket)
            .arg("--upstreams")
            .arg(p.public_dir.join("upstreams.json"))
            .arg("--user")
            .arg(AGENT_USER)
            .arg("--client-user")
            .arg(SESSION_USER)
            .arg("--parent-pid")
            .arg(std::process::id().to_string())
            .arg("--events-fd")
            .arg("3")
            .arg("--log-format")
            .arg(crate::audit::format().name())
            .stdin(Stdio::null());
        if any_client {
            proxy.arg("--any-client");
        } else {
            proxy.arg("--metrics-file").arg(&p.metrics);
        }
        let fail = |e| BootError::io(format!("start {}", proxy_bin.display()), e);
        let events = crate::sys::fd::dup_high(events).map_err(fail)?;
        {
            use std::os::fd::AsRawFd as _;
            crate::sys::fd::pass_fds(&mut proxy, vec![(events.as_raw_fd(), 3)]).map_err(fail)?;
        }
        let mut proxy = proxy.spawn().map_err(fail)?;
        wait_for_socket(listen, &mut proxy, "bastion-agent-proxy")?;
        Ok::<_, BootError>(proxy)
    };
    let proxy = match proxy_for(&p.socket, false) {
        Ok(proxy) => proxy,
        Err(e) => {
            let _ = agent.kill();
            return Err(e);
        }
    };
    // Session containers' own socket (SPEC 14): the same filter, open to
    // the image's users, in the share volume the engine mounts from.
    if let Some(share) = share_socket {
        match proxy_for(share, true) {
            Ok(proxy) => std::mem::forget(proxy),
            Err(e) => {
                let _ = agent.kill();
                return Err(e);
            }
        }
    }
    log(&format!(
        "upstream agent ready: sessions get SSH_AUTH_SOCK={}, client config {}",
        p.socket.display(),
        p.ssh_config.display()
    ));
    // Both stay children of this process, and so of sshd after the exec.
    std::mem::forget(agent);
    std::mem::forget(proxy);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::{Declared, Upstream};

    fn checked(name: &str, port: u16) -> Checked {
        Checked {
            declared: Declared {
                name: name.into(),
                user: "deploy".into(),
                host: "10.0.0.5".into(),
                port,
                key_file: "/run/secrets/k".into(),
                line: 1,
            },
            public: Upstream {
                name: name.into(),
                user: "deploy".into(),
                host: "10.0.0.5".into(),
                port,
                public_key: "ssh-ed25519 AAAA".into(),
                fingerprint: "SHA256:x".into(),
                host_keys: vec!["ssh-ed25519 HOSTA".into(), "ssh-rsa HOSTB".into()],
            },
        }
    }

    #[test]
    fn pins_name_the_host_both_ways_off_port_22() {
        assert_eq!(
            pin_lines(&checked("prod", 22)),
            "10.0.0.5 ssh-ed25519 HOSTA\n10.0.0.5 ssh-rsa HOSTB\n"
        );
        assert_eq!(
            pin_lines(&checked("prod", 2222)).lines().next().unwrap(),
            "10.0.0.5,[10.0.0.5]:2222 ssh-ed25519 HOSTA"
        );
    }

    #[test]
    fn session_containers_get_every_pin_and_one_static_config() {
        let gate = crate::gate::GateRuntime {
            share_source: "/srv/share".into(),
            targets: Vec::new(),
            // The bastion's own 2201 is skipped by the gate ports.
            own_ports: vec![22, 2201],
        };
        let (pins, cfg) =
            share_files(&[checked("prod", 2222), checked("backup", 22)], &gate).unwrap();
        assert_eq!(
            pins.lines().collect::<Vec<_>>(),
            [
                "10.0.0.5,[10.0.0.5]:2222 ssh-ed25519 HOSTA",
                "10.0.0.5,[10.0.0.5]:2222 ssh-rsa HOSTB",
                "10.0.0.5 ssh-ed25519 HOSTA",
                "10.0.0.5 ssh-rsa HOSTB",
            ]
        );
        let lines: Vec<&str> = cfg.lines().map(str::trim).collect();
        let block = |name: &str| -> Vec<&str> {
            let at = lines
                .iter()
                .position(|l| *l == format!("Host {name}"))
                .unwrap();
            lines[at + 1..]
                .iter()
                .take_while(|l| !l.starts_with("Host "))
                .copied()
                .collect()
        };
        let prod = block("prod");
        for want in [
            "HostName bastion-gate",
            "Port 2200",
            "User deploy",
            "HostKeyAlias [10.0.0.5]:2222",
            "IdentityAgent /run/bastion/upstream/agent.sock",
            "UserKnownHostsFile /run/bastion/upstream/known_hosts",
            "StrictHostKeyChecking yes",
        ] {
            assert!(prod.contains(&want), "{want:?} missing in\n{cfg}");
        }
        let backup = block("backup");
        assert!(backup.contains(&"Port 2202"), "{cfg}");
        assert!(backup.contains(&"HostKeyAlias 10.0.0.5"), "{cfg}");
    }

    #[test]
    fn one_host_block_per_upstream() {
        let p = UpstreamPaths::new(
            Path::new("/run/bastion"),
            "/etc/ssh/ssh_config.d/x.conf".into(),
        );
        let cfg = render_ssh_config(&[checked("prod", 2222), checked("backup", 22)], &p).unwrap();
        let lines: Vec<&str> = cfg.lines().map(str::trim).collect();
        for want in [
            "Host prod",
            "Host backup",
            "HostName 10.0.0.5",
            "User deploy",
            "Port 2222",
            "IdentityAgent /run/bastion/agent/agent.sock",
            "IdentityFile /run/bastion/upstreams/prod.pub",
            "IdentitiesOnly yes",
            "StrictHostKeyChecking yes",
            "UserKnownHostsFile /run/bastion/upstreams/prod.known_hosts",
            "UserKnownHostsFile /run/bastion/upstreams/backup.known_hosts",
            "ForwardAgent no",
        ] {
            assert!(lines.contains(&want), "missing {want:?} in\n{cfg}");
        }
        assert_eq!(lines.iter().filter(|l| l.starts_with("Host ")).count(), 2);
    }
}
