//! The egress gate (SPEC 14): a session container on its own `--internal`
//! network reaches the bastion's gate there, one listener per upstream,
//! each forwarding to exactly its upstream's host:port, and nothing else.
//! The gate never forwards anywhere a client names, and never leaves a
//! session's network behind without a way to reap it.

mod cli;
pub(crate) mod network;
pub(crate) mod own_ports;
pub(crate) mod relay;
pub(crate) mod ssh_config;

use crate::config::ConfigError;
use network::EngineCli;
use own_ports::Shadow;
use relay::{EventSink, Limits, Owner, Relay, Target};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use tokio::net::TcpSocket;

pub use cli::main;

/// The first gate port; upstream `i` (in declaration order) gets the
/// `i`-th free port from here, the same in every session, so a session's
/// ssh_config differs from another's only in the gate's address.
pub(crate) const FIRST_GATE_PORT: u16 = 2200;

/// Where a session container finds the agent proxy's socket and the
/// pinned known_hosts file (one read-only mount: it can connect to the
/// socket, not replace it).
pub(crate) const CONTAINER_AGENT_SOCKET: &str = "/run/bastion/upstream/agent.sock";
pub(crate) const CONTAINER_KNOWN_HOSTS: &str = "/run/bastion/upstream/known_hosts";
/// Where a session container's ssh reads the upstream blocks (Debian's and
/// Alpine's ssh_config include `ssh_config.d/*.conf`).
pub(crate) const CONTAINER_SSH_CONFIG: &str = "/etc/ssh/ssh_config.d/bastion-upstreams.conf";

/// The bastion's own volume (named or bind) the engine can mount from: the
/// files every session container gets (the agent proxy's socket, the
/// pinned known_hosts, the container ssh_config) live there.
pub(crate) const SHARE_DIR: &str = "/run/bastion/share";
/// The files in [`SHARE_DIR`].
pub(crate) const SHARE_AGENT_SOCKET: &str = "agent.sock";
pub(crate) const SHARE_KNOWN_HOSTS: &str = "known_hosts";
pub(crate) const SHARE_SSH_CONFIG: &str = "ssh_config";

/// The gate part of the runtime file (SESSION_IMAGE and UPSTREAMS both
/// set), fixed at boot: what the monitor opens per session and what the
/// runner mounts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct GateRuntime {
    /// The host path (as the engine sees it) of the volume at
    /// [`SHARE_DIR`].
    pub(crate) share_source: String,
    /// The declared upstreams, in declaration order.
    pub(crate) targets: Vec<Target>,
    /// The bastion's own ports (sshd, HTTP, metrics), held silent on each
    /// gate address and skipped by the gate ports.
    pub(crate) own_ports: Vec<u16>,
}

impl GateRuntime {
    /// `(host path in the share, path in the session container)` of each
    /// file a session container gets, all read-only (a socket can be
    /// connected to on a read-only mount, not replaced).
    pub(crate) fn mounts(&self) -> [(String, &'static str); 3] {
        let at = |f: &str| format!("{}/{f}", self.share_source.trim_end_matches('/'));
        [
            (at(SHARE_AGENT_SOCKET), CONTAINER_AGENT_SOCKET),
            (at(SHARE_KNOWN_HOSTS), CONTAINER_KNOWN_HOSTS),
            (at(SHARE_SSH_CONFIG), CONTAINER_SSH_CONFIG),
        ]
    }
}

/// The `Source` of the mount at [`SHARE_DIR`] in a container inspect's
/// `.Mounts` (JSON): the host path the engine mounts session files from.
/// `Err` says why there is none usable.
pub(crate) fn share_source_in(mounts_json: &str) -> Result<String, String> {
    let v: serde_json::Value = serde_json::from_str(mounts_json)
        .map_err(|e| format!("cannot read the bastion's mounts from the engine: {e}"))?;
    let source = v
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m.get("Destination").and_then(|d| d.as_str()) == Some(SHARE_DIR))
        .and_then(|m| m.get("Source"))
        .and_then(|s| s.as_str())
        .ok_or_else(|| format!("the bastion's container has no volume at {SHARE_DIR}"))?;
    // It goes into `--mount type=bind,source=...`: a comma or a control
    // character would be read as another option.
    let plain = source.starts_with('/')
        && !source
            .chars()
            .any(|c| c == ',' || c == '"' || c.is_control());
    if plain {
        Ok(source.to_owned())
    } else {
        Err(format!(
            "the host path of the volume at {SHARE_DIR} (\"{}\") is not a plain absolute path",
            crate::audit::escape(source)
        ))
    }
}

/// Why a session's gate could not open (the session then fails with this
/// reason) or close cleanly.
#[derive(Debug)]
pub(crate) enum GateError {
    /// The session id is not 16 lowercase hex characters.
    BadSession(String),
    /// An engine call failed: what the gate was doing and what the engine
    /// said.
    Engine { action: String, detail: String },
    /// The bastion cannot tell which container it runs in.
    NotInContainer { detail: String },
    /// A listener (gate or shadow) could not be bound.
    Listen { what: String, err: std::io::Error },
}

impl fmt::Display for GateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GateError::BadSession(s) => write!(
                f,
                "session id \"{}\" is not 16 lowercase hex characters",
                crate::audit::escape(s)
            ),
            GateError::Engine { action, detail } => write!(f, "cannot {action}: {detail}"),
            GateError::NotInContainer { detail } => write!(
                f,
                "cannot tell which container the bastion runs in ({detail}); the egress gate needs the bastion to run in a container of the same engine"
            ),
            GateError::Listen { what, err } => write!(f, "cannot listen for {what}: {err}"),
        }
    }
}

impl std::error::Error for GateError {}

/// Everything a session's gate is opened with.
#[derive(Debug, Clone)]
pub(crate) struct GateSpec {
    pub(crate) session: String,
    pub(crate) identity: String,
    /// The bastion's own container id (the networks' instance label).
    pub(crate) instance: String,
    /// The declared upstreams, in declaration order.
    pub(crate) targets: Vec<Target>,
    /// The bastion's own ports (sshd, HTTP, metrics), held silent on the
    /// gate's address.
    pub(crate) own_ports: Vec<u16>,
    pub(crate) limits: Limits,
}

/// One session's gate: its network, the bastion's address there, a
/// listener per upstream. Open for the session's life; [`SessionGate::close`]
/// when it ends. Dropped without `close`, the listeners stop but the
/// network stays: [`network::reap`] removes it (lost session, boot).
pub(crate) struct SessionGate {
    engine: EngineCli,
    network: String,
    address: IpAddr,
    ports: Vec<(String, u16)>,
    relay: Relay,
    _shadow: Shadow,
}

impl SessionGate {
    /// Creates the session network, joins the bastion to it, and listens
    /// there for each upstream. On any failure nothing is left behind (the
    /// network is removed again) and the error says what failed.
    pub(crate) async fn open(
        spec: GateSpec,
        engine: &EngineCli,
        sink: EventSink,
    ) -> Result<SessionGate, GateError> {
        if !is_session_id(&spec.session) {
            return Err(GateError::BadSession(spec.session));
        }
        let network = network::create(engine, &spec.session, &spec.instance).await?;
        match Self::join_and_listen(&spec, engine, &network, sink).await {
            Ok(gate) => Ok(gate),
            Err(e) => {
                let _ = network::remove(engine, &network).await;
                Err(e)
            }
        }
    }

    async fn join_and_listen(
        spec: &GateSpec,
        engine: &EngineCli,
        network: &str,
        sink: EventSink,
    ) -> Result<SessionGate, GateError> {
        network::connect(engine, network, &spec.instance).await?;
        let address = network::address_on(engine, &spec.instance, network).await?;
        let ports = plan_ports(spec.targets.len(), &spec.own_ports);
        let mut listeners = Vec::new();
        for (target, &port) in spec.targets.iter().zip(&ports) {
            let at = SocketAddr::new(address, port);
            let l = bind(at).map_err(|err| GateError::Listen {
                what: format!("upstream {} on {at}", target.name),
                err,
            })?;
            listeners.push((l, target.clone()));
        }
        // Every address the bastion has on that interface (an IPv6 one if
        // the engine gave the network IPv6), not only the one it listens on.
        let listen_err = |err| GateError::Listen {
            what: "the bastion's own ports on the session network".into(),
            err,
        };
        let addrs = own_ports::interface_addresses(address).map_err(listen_err)?;
        let shadow = Shadow::hold(&addrs, &spec.own_ports)
            .await
            .map_err(listen_err)?;
        let owner = Owner {
            session: spec.session.clone(),
            identity: spec.identity.clone(),
        };
        let names = spec.targets.iter().map(|t| t.name.clone());
        Ok(SessionGate {
            engine: engine.clone(),
            network: network.to_owned(),
            address,
            ports: names.zip(ports).collect(),
            relay: Relay::start(listeners, owner, spec.limits, sink),
            _shadow: shadow,
        })
    }

    pub(crate) fn network(&self) -> &str {
        &self.network
    }

    /// The bastion's address on the session network: the containers'
    /// `HostName` for every upstream.
    pub(crate) fn address(&self) -> IpAddr {
        self.address
    }

    /// `(upstream name, gate port)` in declaration order.
    pub(crate) fn ports(&self) -> &[(String, u16)] {
        &self.ports
    }

    /// Closes every connection (each gets its event), stops listening,
    /// disconnects everything from the network and removes it.
    pub(crate) async fn close(self) -> Result<(), GateError> {
        self.relay.close().await;
        drop(self._shadow);
        network::remove(&self.engine, &self.network).await
    }
}

/// Session ids are 16 lowercase hex characters (SPEC 11); anything else
/// never reaches an engine argument.
fn is_session_id(s: &str) -> bool {
    s.len() == 16
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `n` gate ports from [`FIRST_GATE_PORT`] up, skipping the bastion's own.
pub(crate) fn plan_ports(n: usize, own: &[u16]) -> Vec<u16> {
    (FIRST_GATE_PORT..=u16::MAX)
        .filter(|p| !own.contains(p))
        .take(n)
        .collect()
}

fn bind(at: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let sock = match at {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    sock.bind(at)?;
    sock.listen(64)
}

/// SPEC 14: with upstreams declared, a session container's only way out is
/// the gate, so a session network of the operator's choosing (which could
/// reach anything) cannot be combined with them. `None` when the pair is
/// fine. Unset, empty and `none` are all "no network".
pub(crate) fn check_session_network(
    session_network: Option<&str>,
    upstreams: Option<&str>,
) -> Option<ConfigError> {
    let network = session_network.map(str::trim).filter(|n| !n.is_empty());
    let has_upstreams = upstreams.is_some_and(|u| !u.trim().is_empty());
    match network {
        Some(n) if n != "none" && has_upstreams => Some(ConfigError::new(
            "SESSION_NETWORK",
            Some(n),
            "cannot be combined with UPSTREAMS: session containers reach upstreams only through the egress gate",
            "unset SESSION_NETWORK (or set it to none), or unset UPSTREAMS",
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> GateSpec {
        GateSpec {
            session: "0123456789abcdef".into(),
            identity: "alice".into(),
            instance: "f".repeat(64),
            targets: vec![Target {
                name: "prod".into(),
                host: "127.0.0.1".into(),
                port: 22,
            }],
            own_ports: vec![22],
            limits: Limits::default(),
        }
    }

    fn sink() -> EventSink {
        std::sync::Arc::new(|_| {})
    }

    /// A CLI that answers every call the way an engine out of address
    /// pools does.
    fn failing_engine() -> EngineCli {
        EngineCli::from_command("docker", || {
            let mut c = std::process::Command::new("sh");
            c.args(["-c", "echo 'Error response from daemon: could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network' >&2; exit 1", "sh"]);
            c
        })
    }

    #[tokio::test]
    async fn a_network_that_cannot_be_made_fails_the_session_with_the_engines_words() {
        let e = SessionGate::open(spec(), &failing_engine(), sink())
            .await
            .err()
            .expect("opened without a network");
        let msg = e.to_string();
        assert!(
            msg.starts_with("cannot create the session network bastion-net-0123456789abcdef: Error response from daemon: could not find an available"),
            "{msg}"
        );
        let e = SessionGate::open(spec(), &EngineCli::new("/nonexistent/docker"), sink())
            .await
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("cannot run /nonexistent/docker"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_hostile_session_id_never_reaches_the_engine() {
        // The engine would record every call; none may happen.
        let log = std::env::temp_dir().join(format!("bastion-gate-calls-{}", std::process::id()));
        let _ = std::fs::remove_file(&log);
        let log2 = log.clone();
        let engine = EngineCli::from_command("docker", move || {
            let mut c = std::process::Command::new("sh");
            c.arg("-c").arg("echo \"$@\" >> \"$0\"").arg(&log2);
            c
        });
        let mut s = spec();
        s.session = "--driver=host x".into();
        let e = SessionGate::open(s, &engine, sink()).await.err().unwrap();
        assert!(matches!(e, GateError::BadSession(_)), "{e}");
        assert!(!log.exists(), "the engine was called");
        // The control: a good id does reach it.
        let _ = SessionGate::open(spec(), &engine, sink()).await;
        assert!(std::fs::read_to_string(&log)
            .unwrap()
            .contains("network create --internal"));
        let _ = std::fs::remove_file(&log);
    }

    #[tokio::test]
    async fn a_failure_after_the_network_exists_removes_it() {
        let log = std::env::temp_dir().join(format!("bastion-gate-join-{}", std::process::id()));
        let _ = std::fs::remove_file(&log);
        let log2 = log.clone();
        let engine = EngineCli::from_command("docker", move || {
            let mut c = std::process::Command::new("sh");
            c.arg("-c")
                .arg(
                    "log=$0; shift 0; echo \"$*\" >> \"$log\"; \
                     case \"$1 $2\" in \
                       'network connect') echo 'Error response from daemon: No such container: f' >&2; exit 1;; \
                       'network inspect') echo '{}';; \
                     esac",
                )
                .arg(&log2);
            c
        });
        let e = SessionGate::open(spec(), &engine, sink())
            .await
            .err()
            .unwrap();
        assert!(
            e.to_string().starts_with("cannot join the bastion to the session network bastion-net-0123456789abcdef: Error response from daemon: No such container"),
            "{e}"
        );
        let calls = std::fs::read_to_string(&log).unwrap();
        let _ = std::fs::remove_file(&log);
        assert!(
            calls.lines().last() == Some("network rm bastion-net-0123456789abcdef"),
            "{calls}"
        );
    }

    #[test]
    fn the_share_volume_is_found_among_the_mounts() {
        let json = r#"[{"Type":"bind","Source":"/var/run/docker.sock","Destination":"/var/run/docker.sock"},
            {"Type":"volume","Name":"bastion-share","Source":"/var/lib/docker/volumes/bastion-share/_data","Destination":"/run/bastion/share"}]"#;
        assert_eq!(
            share_source_in(json).unwrap(),
            "/var/lib/docker/volumes/bastion-share/_data"
        );
        let none = r#"[{"Type":"bind","Source":"/srv","Destination":"/run/bastion/sharex"}]"#;
        assert!(share_source_in(none)
            .unwrap_err()
            .contains("no volume at /run/bastion/share"));
        assert!(share_source_in("[]").is_err());
        assert!(share_source_in("null").is_err());
        assert!(share_source_in("not json").is_err());
        // A host path that would add mount options is refused.
        for hostile in ["/srv/a,readonly=false", "relative/path", "/srv/a\nb"] {
            let json = format!(r#"[{{"Source":"{hostile}","Destination":"/run/bastion/share"}}]"#);
            assert!(share_source_in(&json).is_err(), "{hostile}");
        }
        let rt = GateRuntime {
            share_source: "/srv/share/".into(),
            targets: Vec::new(),
            own_ports: vec![22],
        };
        assert_eq!(
            rt.mounts()[0],
            ("/srv/share/agent.sock".to_owned(), CONTAINER_AGENT_SOCKET)
        );
    }

    #[test]
    fn gate_ports_are_stable_and_skip_the_bastions_own() {
        assert_eq!(plan_ports(3, &[22, 8080]), [2200, 2201, 2202]);
        assert_eq!(plan_ports(3, &[2201, 22]), [2200, 2202, 2203]);
        assert!(plan_ports(0, &[]).is_empty());
    }

    #[test]
    fn only_real_session_ids_reach_the_engine() {
        assert!(is_session_id("0123456789abcdef"));
        for bad in [
            "",
            "0123456789ABCDEF",
            "0123456789abcde",
            "--help0123456789",
            "0123456789abcdef0",
            "0123456789abcde\n",
        ] {
            assert!(!is_session_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_session_network_with_upstreams_is_a_config_error() {
        let ups = Some("prod deploy@10.0.0.5:22 /run/secrets/prod_key");
        for net in ["bridge", "backend", " backend ", "None", "host"] {
            let e = check_session_network(Some(net), ups).expect(net);
            let line = e.to_string();
            assert!(
                line.starts_with("config error: SESSION_NETWORK=\""),
                "{line}"
            );
            assert!(
                line.contains("UPSTREAMS") && line.contains("unset"),
                "{line}"
            );
        }
        // A value that tries to forge a second log line is shown escaped.
        let e = check_session_network(Some("x\nconfig error: fine"), ups).unwrap();
        assert!(!e.to_string().contains('\n'), "{e}");
    }

    #[test]
    fn none_or_no_upstreams_is_fine() {
        let ups = Some("prod deploy@10.0.0.5:22 /run/secrets/prod_key");
        for net in [None, Some(""), Some("none"), Some("  none ")] {
            assert!(check_session_network(net, ups).is_none(), "{net:?}");
        }
        for u in [None, Some(""), Some(" \n\t")] {
            assert!(check_session_network(Some("backend"), u).is_none(), "{u:?}");
        }
    }
}
