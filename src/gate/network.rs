//! The per-session network, through the engine's CLI: `bastion-net-<session>`
//! created `--internal` and labelled with the session and this instance, the
//! bastion's own container joined to it for the session's life, then every
//! member disconnected and the network removed. It never touches a network
//! that does not carry this instance's label.

use super::GateError;
use crate::config::SAFE_PATH;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// Label naming the session a network (or container) belongs to (SPEC 12).
pub(crate) const SESSION_LABEL: &str = "io.docker-bastion.session";
/// Label naming the bastion container that made it (SPEC 12).
pub(crate) const INSTANCE_LABEL: &str = "io.docker-bastion.instance";
/// What the bastion is called on a session network, besides its address.
pub(crate) const GATE_ALIAS: &str = "bastion-gate";

/// No engine call may hang a session: past this the call is killed and
/// counts as failed.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(30);

/// Variables the engine's CLI may need from the bastion's environment;
/// nothing else reaches it.
const ENGINE_ENV: [&str; 8] = [
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_API_VERSION",
    "DOCKER_CERT_PATH",
    "DOCKER_TLS_VERIFY",
    "CONTAINER_HOST",
    "CONTAINER_CONNECTION",
    "HOME",
];

/// The engine's command-line client (`docker`, `podman`, `nerdctl`: the
/// network commands used here are the same in all three).
#[derive(Clone)]
pub(crate) struct EngineCli {
    /// A fresh command for the CLI, environment already set.
    base: std::sync::Arc<dyn Fn() -> std::process::Command + Send + Sync>,
    /// How the CLI is named in messages.
    name: String,
}

impl std::fmt::Debug for EngineCli {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineCli")
            .field("name", &self.name)
            .finish()
    }
}

impl EngineCli {
    /// `program` with a clean environment: the safe PATH and only the
    /// variables of [`ENGINE_ENV`] that are set.
    pub(crate) fn new(program: impl Into<PathBuf>) -> EngineCli {
        let program: PathBuf = program.into();
        let name = program.display().to_string();
        EngineCli::from_command(name, move || {
            let mut c = std::process::Command::new(&program);
            c.env_clear().env("PATH", SAFE_PATH);
            for v in ENGINE_ENV {
                if let Some(val) = std::env::var_os(v) {
                    c.env(v, val);
                }
            }
            c
        })
    }

    /// The CLI as the session runner already builds it (engine address,
    /// `--remote`, environment): `base` gives a fresh command each call.
    pub(crate) fn from_command(
        name: impl Into<String>,
        base: impl Fn() -> std::process::Command + Send + Sync + 'static,
    ) -> EngineCli {
        EngineCli {
            base: std::sync::Arc::new(base),
            name: name.into(),
        }
    }

    /// Runs `program ARGS`; its stdout, or what it said on failure.
    async fn run(&self, args: &[&str]) -> Result<String, String> {
        let mut c = tokio::process::Command::from((self.base)());
        c.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = c
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.name))?;
        let out = match tokio::time::timeout(ENGINE_TIMEOUT, child.wait_with_output()).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return Err(format!("{}: {e}", self.name)),
            Err(_) => {
                return Err(format!(
                    "{} gave no answer within {}s",
                    self.name,
                    ENGINE_TIMEOUT.as_secs()
                ))
            }
        };
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            let err = crate::audit::escape(err.trim());
            Err(if err.is_empty() {
                format!("{} exited with {}", self.name, out.status)
            } else {
                err
            })
        }
    }
}

/// `bastion-net-<session id>`.
pub(crate) fn network_name(session: &str) -> String {
    format!("bastion-net-{session}")
}

/// Creates the session's internal network; its name.
pub(crate) async fn create(
    engine: &EngineCli,
    session: &str,
    instance: &str,
) -> Result<String, GateError> {
    let name = network_name(session);
    let session_label = format!("{SESSION_LABEL}={session}");
    let instance_label = format!("{INSTANCE_LABEL}={instance}");
    engine
        .run(&[
            "network",
            "create",
            "--internal",
            "--label",
            &session_label,
            "--label",
            &instance_label,
            &name,
        ])
        .await
        .map_err(|detail| GateError::Engine {
            action: format!("create the session network {name}"),
            detail,
        })?;
    Ok(name)
}

/// Joins `container` to `network`, reachable there as [`GATE_ALIAS`] too.
pub(crate) async fn connect(
    engine: &EngineCli,
    network: &str,
    container: &str,
) -> Result<(), GateError> {
    engine
        .run(&[
            "network", "connect", "--alias", GATE_ALIAS, network, container,
        ])
        .await
        .map(drop)
        .map_err(|detail| GateError::Engine {
            action: format!("join the bastion to the session network {network}"),
            detail,
        })
}

/// The address `container` has on `network`.
pub(crate) async fn address_on(
    engine: &EngineCli,
    container: &str,
    network: &str,
) -> Result<IpAddr, GateError> {
    let action = || format!("learn the bastion's address on {network}");
    let json = engine
        .run(&[
            "inspect",
            "--format",
            "{{json .NetworkSettings.Networks}}",
            container,
        ])
        .await
        .map_err(|detail| GateError::Engine {
            action: action(),
            detail,
        })?;
    address_in(&json, network).ok_or_else(|| GateError::Engine {
        action: action(),
        detail: format!("no IPv4 address on it in {}", crate::audit::escape(&json)),
    })
}

/// The `IPAddress` of `network` in an inspect's `.NetworkSettings.Networks`.
fn address_in(json: &str, network: &str) -> Option<IpAddr> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    v.get(network)?.get("IPAddress")?.as_str()?.parse().ok()
}

/// Disconnects every member of `network` (forcibly: a session container
/// still on it is cut off) and removes it. A network that is already gone
/// is fine.
pub(crate) async fn remove(engine: &EngineCli, network: &str) -> Result<(), GateError> {
    let members = match engine
        .run(&[
            "network",
            "inspect",
            "--format",
            "{{json .Containers}}",
            network,
        ])
        .await
    {
        Ok(json) => members_in(&json),
        Err(e) if is_missing(&e) => return Ok(()),
        Err(detail) => {
            return Err(GateError::Engine {
                action: format!("inspect the session network {network}"),
                detail,
            })
        }
    };
    for m in members {
        // Gone already is fine; anything else shows up when `rm` fails.
        let _ = engine
            .run(&["network", "disconnect", "--force", network, &m])
            .await;
    }
    match engine.run(&["network", "rm", network]).await {
        Ok(_) => Ok(()),
        Err(e) if is_missing(&e) => Ok(()),
        Err(detail) => Err(GateError::Engine {
            action: format!("remove the session network {network}"),
            detail,
        }),
    }
}

/// The member container ids in a network inspect's `.Containers`.
fn members_in(json: &str) -> Vec<String> {
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

fn is_missing(engine_said: &str) -> bool {
    let s = engine_said.to_ascii_lowercase();
    s.contains("no such network") || s.contains("not found")
}

/// Removes every session network this instance made (`session` given:
/// only that session's). At boot nothing of an earlier run is in use; on a
/// lost session its container is gone. The names removed, and the
/// failures.
pub(crate) async fn reap(
    engine: &EngineCli,
    instance: &str,
    session: Option<&str>,
) -> (Vec<String>, Vec<GateError>) {
    let mut args = vec![
        "network".to_owned(),
        "ls".to_owned(),
        "--filter".to_owned(),
        format!("label={INSTANCE_LABEL}={instance}"),
    ];
    if let Some(s) = session {
        args.push("--filter".into());
        args.push(format!("label={SESSION_LABEL}={s}"));
    }
    args.extend(["--format".into(), "{{.Name}}".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let names = match engine.run(&args).await {
        Ok(out) => out.lines().map(str::to_owned).collect::<Vec<_>>(),
        Err(detail) => {
            let e = GateError::Engine {
                action: "list this instance's session networks".into(),
                detail,
            };
            return (Vec::new(), vec![e]);
        }
    };
    let (mut gone, mut failed) = (Vec::new(), Vec::new());
    for n in names.into_iter().filter(|n| n.starts_with("bastion-net-")) {
        match remove(engine, &n).await {
            Ok(()) => gone.push(n),
            Err(e) => failed.push(e),
        }
    }
    (gone, failed)
}

/// This process's container id, from the engine's own bind mounts
/// (`/var/lib/docker/containers/<id>/hostname`, podman's
/// `overlay-containers/<id>/userdata`), whatever the hostname was set to.
pub(crate) fn own_container_id() -> Result<String, GateError> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    container_id_in(&mountinfo).ok_or_else(|| GateError::NotInContainer {
        detail: "no engine bind mount (/etc/hostname, /etc/hosts) in /proc/self/mountinfo".into(),
    })
}

/// The 64-hex id in a `containers/<id>/` path of a mount of `/etc/hostname`
/// (or `/etc/hosts`, `/etc/resolv.conf`).
fn container_id_in(mountinfo: &str) -> Option<String> {
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(root), Some(mount_point)) = (fields.get(3), fields.get(4)) else {
            continue;
        };
        if !matches!(
            *mount_point,
            "/etc/hostname" | "/etc/hosts" | "/etc/resolv.conf"
        ) {
            continue;
        }
        for marker in ["/containers/", "/overlay-containers/"] {
            if let Some(i) = root.find(marker) {
                let id: String = root[i + marker.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_hexdigit())
                    .collect();
                if id.len() == 64 {
                    return Some(id);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_on_one_network() {
        let json = r#"{"bastion-net-0123456789abcdef":{"IPAMConfig":null,"IPAddress":"172.30.0.2","Gateway":""},"egress":{"IPAddress":"172.18.0.5"}}"#;
        assert_eq!(
            address_in(json, "bastion-net-0123456789abcdef"),
            Some("172.30.0.2".parse().unwrap())
        );
        assert_eq!(
            address_in(json, "egress"),
            Some("172.18.0.5".parse().unwrap())
        );
        assert_eq!(address_in(json, "other"), None);
        assert_eq!(address_in(r#"{"n":{"IPAddress":""}}"#, "n"), None);
        assert_eq!(address_in("not json", "n"), None);
    }

    #[test]
    fn members_of_a_network() {
        let json = r#"{"aaa":{"Name":"bastion"},"bbb":{"Name":"bastion-session-x"}}"#;
        let mut m = members_in(json);
        m.sort();
        assert_eq!(m, ["aaa", "bbb"]);
        assert!(members_in("{}").is_empty());
        assert!(members_in("null").is_empty());
    }

    #[test]
    fn own_id_from_docker_and_podman_mounts() {
        let id = "4f1c8a0d6b2e4c1a9f3e7d5b2a1c0e9f8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a";
        let docker = format!(
            "100 90 0:50 / / rw,relatime - overlay overlay rw\n\
             612 600 254:1 /var/lib/docker/containers/{id}/resolv.conf /etc/resolv.conf rw - ext4 /dev/vda1 rw\n\
             613 600 254:1 /var/lib/docker/containers/{id}/hostname /etc/hostname rw - ext4 /dev/vda1 rw\n"
        );
        assert_eq!(container_id_in(&docker).as_deref(), Some(id));
        let podman = format!(
            "700 600 0:44 /containers/storage/overlay-containers/{id}/userdata/hostname /etc/hostname rw - tmpfs tmpfs rw\n"
        );
        assert_eq!(container_id_in(&podman).as_deref(), Some(id));
        // A bind mount elsewhere naming some other container is not ours.
        let other = format!(
            "612 600 254:1 /var/lib/docker/containers/{id}/hostname /srv/x rw - ext4 /dev/vda1 rw\n"
        );
        assert_eq!(container_id_in(&other), None);
        assert_eq!(container_id_in(""), None);
        let short =
            "1 2 3:4 /var/lib/docker/containers/abc/hostname /etc/hostname rw - ext4 x rw\n";
        assert_eq!(container_id_in(short), None);
    }

    #[test]
    fn missing_networks_are_recognised_in_each_engine_wording() {
        assert!(is_missing("Error: No such network: bastion-net-x"));
        assert!(is_missing(
            "Error: unable to find network with name or ID bastion-net-x: network not found"
        ));
        assert!(!is_missing(
            "permission denied while trying to connect to the Docker daemon socket"
        ));
    }
}
