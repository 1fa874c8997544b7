//! The engine `create` argv of one session container (SPEC 12): the
//! hardening that is always on, the limits, labels, name and environment,
//! and what runs. Pure: the tests read the exact argv.

use super::boot::SessionRuntime;

/// What the session container runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Payload {
    /// The command's argv as entrypoint + arguments: the broker's allowed
    /// argv without a shell, or `/bin/sh -c FORCE_COMMAND`.
    Argv(Vec<String>),
    /// Neither: the image's own entrypoint and command.
    ImageDefault,
}

/// One session's identity in the container's labels and environment.
#[derive(Debug, Clone)]
pub(crate) struct SessionId {
    pub(crate) id: String,
    pub(crate) identity: String,
    /// The client's terminal type, passed on when the session has a TTY.
    pub(crate) term: Option<String>,
}

pub(crate) const LABEL_SESSION: &str = "io.docker-bastion.session";
pub(crate) const LABEL_INSTANCE: &str = "io.docker-bastion.instance";
pub(crate) const LABEL_IDENTITY: &str = "io.docker-bastion.identity";

/// The container's name for session `id`.
pub(crate) fn container_name(id: &str) -> String {
    format!("bastion-session-{id}")
}

/// Which limits go on the command line: all of them, or (best-effort) those
/// the engine can apply.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ApplyLimits {
    pub(crate) memory: bool,
    pub(crate) cpus: bool,
    pub(crate) pids: bool,
}

/// The DNS server of a gated session container: one nothing answers for.
const NO_DNS: &str = "192.0.2.1";

/// Where a session container of the egress gate (SPEC 14) is attached:
/// its own network, the gate's address there as `bastion-gate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GateAttach {
    pub(crate) network: String,
    pub(crate) address: std::net::IpAddr,
}

impl GateAttach {
    /// The monitor's answer, checked: the network of this very session,
    /// an IP address.
    pub(crate) fn new(session: &str, network: String, address: &str) -> Result<Self, String> {
        if network != crate::gate::network::network_name(session) {
            return Err(format!(
                "the gate network \"{}\" is not this session's",
                crate::audit::escape(&network)
            ));
        }
        let address = address.parse().map_err(|_| {
            format!(
                "the gate address \"{}\" is not an IP address",
                crate::audit::escape(address)
            )
        })?;
        Ok(GateAttach { network, address })
    }
}

/// `create` and its options, up to and including the image and command.
/// Environment values are not in it: each `-e NAME` takes its value from
/// the CLI's environment, so no value shows in a process list.
pub(crate) fn create_argv(
    rt: &SessionRuntime,
    image_id: &str,
    session: &SessionId,
    tty: bool,
    limits: ApplyLimits,
    gate: Option<&GateAttach>,
    payload: &Payload,
) -> Vec<String> {
    let mut a: Vec<String> = Vec::with_capacity(64);
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| (*s).to_owned()));
    push(&["create", "--init", "--interactive"]);
    // Docker removes the container on exit by itself, even when no client
    // is attached any more. Podman would remove it before `start --attach`
    // learns the exit status (and report 0), so there the runner's own
    // removal (and the monitor's) is the only one.
    if !rt.engine.podman {
        push(&["--rm"]);
    }
    if tty {
        push(&["--tty"]);
    }
    let name = container_name(&session.id);
    push(&["--name", &name, "--hostname", &short_hostname(&session.id)]);
    push(&["--cap-drop", "ALL", "--security-opt", "no-new-privileges"]);
    match gate {
        // The gate is named in /etc/hosts; no name needs DNS. The engine's
        // embedded resolver would forward other names to the host's
        // servers (a way out by DNS queries): it is pointed at a
        // documentation address (RFC 5737) the session network has no
        // route to, not at a loopback one (newer engines send queries for
        // a loopback server from the host's own namespace).
        Some(g) => push(&[
            "--network",
            &g.network,
            "--add-host",
            &format!("{}:{}", crate::gate::network::GATE_ALIAS, g.address),
            "--dns",
            NO_DNS,
        ]),
        None => push(&["--network", &rt.network]),
    }
    push(&[
        "--label",
        &format!("{LABEL_SESSION}={}", session.id),
        "--label",
        &format!("{LABEL_INSTANCE}={}", rt.instance),
        "--label",
        &format!("{LABEL_IDENTITY}={}", session.identity),
    ]);
    if limits.memory {
        // Swap equal to memory: the limit cannot be dodged by swapping.
        push(&[
            "--memory",
            &rt.limits.memory,
            "--memory-swap",
            &rt.limits.memory,
        ]);
    }
    if limits.cpus {
        push(&["--cpus", &rt.limits.cpus]);
    }
    if limits.pids {
        push(&["--pids-limit", &rt.limits.pids.to_string()]);
    }
    if rt.read_only {
        push(&["--read-only", "--tmpfs", "/tmp", "--tmpfs", "/run"]);
        if let Some(h) = &rt.home {
            if h.path != "/tmp" && h.path != "/run" {
                // Owned by the session user: Podman chowns with `U`,
                // Docker takes the ids.
                let opts = if rt.engine.podman {
                    "U,mode=0700".to_owned()
                } else {
                    format!("uid={},gid={},mode=0700", h.uid, h.gid)
                };
                push(&["--tmpfs", &format!("{}:{opts}", h.path)]);
            }
        }
    }
    if let Some(u) = &rt.user {
        push(&["--user", u]);
    }
    if let Some(w) = &rt.workdir {
        push(&["--workdir", w]);
    }
    for m in &rt.mounts {
        let mut spec = format!("type=bind,source={},target={}", m.source, m.target);
        if m.read_only {
            spec.push_str(",readonly");
        }
        push(&["--mount", &spec]);
    }
    if let (Some(_), Some(g)) = (gate, &rt.gate) {
        for (source, target) in g.mounts() {
            push(&[
                "--mount",
                &format!("type=bind,source={source},target={target},readonly"),
            ]);
        }
    }
    for (name, _) in env_values(rt, session) {
        push(&["--env", &name]);
    }
    match payload {
        Payload::Argv(argv) => {
            let (program, args) = argv.split_first().expect("an allowed argv is never empty");
            // One argument, so a program spelled like an option (`-x`,
            // `--privileged`) can only ever be the entrypoint's value.
            push(&[&format!("--entrypoint={program}"), image_id]);
            a.extend(args.iter().cloned());
        }
        Payload::ImageDefault => push(&[image_id]),
    }
    a
}

/// The variables every session gets, for the CLI's environment: the
/// bastion's own, `TERM` with a terminal, then `SESSION_ENV` (which may
/// override `TERM`).
pub(crate) fn env_values(rt: &SessionRuntime, session: &SessionId) -> Vec<(String, String)> {
    let mut v = vec![
        ("BASTION_SESSION_ID".to_owned(), session.id.clone()),
        ("BASTION_IDENTITY".to_owned(), session.identity.clone()),
    ];
    if let Some(t) = &session.term {
        if !rt.env.iter().any(|(n, _)| n == "TERM") {
            v.push(("TERM".to_owned(), t.clone()));
        }
    }
    v.extend(rt.env.iter().cloned());
    v
}

/// Each session is its own host: `s-` and the first 12 characters of the id.
fn short_hostname(id: &str) -> String {
    format!("session-{}", &id[..id.len().min(12)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::boot::{Home, LimitSupport};
    use crate::container::engine::Engine;
    use crate::container::settings::{EngineKind, Limits, LimitsPolicy, Mount, PullPolicy};

    fn rt() -> SessionRuntime {
        SessionRuntime {
            engine: Engine {
                kind: EngineKind::Docker,
                cli: "/usr/bin/docker".into(),
                host: None,
                podman: false,
            },
            image: "tools:1".into(),
            image_id: "sha256:abc".into(),
            pull: PullPolicy::Never,
            user: Some("1000:1000".into()),
            home: Some(Home {
                path: "/home/dev".into(),
                uid: 1000,
                gid: 1000,
            }),
            limits: Limits {
                memory: "512m".into(),
                cpus: "1".into(),
                pids: 256,
            },
            limits_policy: LimitsPolicy::Required,
            limit_support: LimitSupport {
                memory: true,
                cpus: true,
                pids: true,
            },
            network: "none".into(),
            read_only: true,
            mounts: vec![Mount {
                source: "/srv/www".into(),
                target: "/var/www".into(),
                read_only: true,
            }],
            env: vec![("APP".into(), "secret value".into())],
            workdir: Some("/var/www".into()),
            max: 16,
            timeout_secs: 0,
            instance: "f".repeat(64),
            slots_dir: "/run/bastion/sessions".into(),
            gate: None,
        }
    }

    const ALL: ApplyLimits = ApplyLimits {
        memory: true,
        cpus: true,
        pids: true,
    };

    fn sess() -> SessionId {
        SessionId {
            id: "0123456789abcdef".into(),
            identity: "alice".into(),
            term: None,
        }
    }

    fn pairs(a: &[String]) -> Vec<(String, String)> {
        a.windows(2).map(|w| (w[0].clone(), w[1].clone())).collect()
    }

    #[test]
    fn hardening_is_always_there() {
        let a = create_argv(
            &rt(),
            "sha256:abc",
            &sess(),
            false,
            ALL,
            None,
            &Payload::ImageDefault,
        );
        let p = pairs(&a);
        for (k, v) in [
            ("--cap-drop", "ALL"),
            ("--security-opt", "no-new-privileges"),
            ("--network", "none"),
            ("--memory", "512m"),
            ("--memory-swap", "512m"),
            ("--cpus", "1"),
            ("--pids-limit", "256"),
            ("--name", "bastion-session-0123456789abcdef"),
            ("--label", "io.docker-bastion.session=0123456789abcdef"),
            ("--label", "io.docker-bastion.identity=alice"),
            ("--tmpfs", "/tmp"),
            ("--tmpfs", "/run"),
            ("--tmpfs", "/home/dev:uid=1000,gid=1000,mode=0700"),
            ("--user", "1000:1000"),
            ("--workdir", "/var/www"),
            (
                "--mount",
                "type=bind,source=/srv/www,target=/var/www,readonly",
            ),
            ("--env", "BASTION_SESSION_ID"),
            ("--env", "BASTION_IDENTITY"),
            ("--env", "APP"),
        ] {
            assert!(p.contains(&(k.into(), v.into())), "{k} {v} missing: {a:?}");
        }
        for flag in ["--init", "--read-only", "--rm", "--interactive"] {
            assert!(a.iter().any(|x| x == flag), "{flag}: {a:?}");
        }
        assert!(!a
            .iter()
            .any(|x| x == "--tty" || x.contains("privileged") || x.contains("--device")));
        assert!(!a.iter().any(|x| x.contains("secret value")), "{a:?}");
        assert_eq!(a.last().unwrap(), "sha256:abc");
    }

    #[test]
    fn broker_argv_is_entrypoint_plus_literal_arguments() {
        let argv: Vec<String> = ["echo", "a;b", "$(id)", "'q'"].map(String::from).to_vec();
        let a = create_argv(
            &rt(),
            "sha256:abc",
            &sess(),
            true,
            ALL,
            None,
            &Payload::Argv(argv),
        );
        let i = a
            .iter()
            .position(|x| x.starts_with("--entrypoint="))
            .unwrap();
        assert_eq!(
            &a[i..],
            ["--entrypoint=echo", "sha256:abc", "a;b", "$(id)", "'q'"]
        );
        assert!(a.iter().any(|x| x == "--tty"));
        // A program spelled like an option stays the entrypoint's value.
        let argv: Vec<String> = ["--privileged", "-v", "/:/host"].map(String::from).to_vec();
        let a = create_argv(
            &rt(),
            "sha256:abc",
            &sess(),
            false,
            ALL,
            None,
            &Payload::Argv(argv),
        );
        let i = a
            .iter()
            .position(|x| x.starts_with("--entrypoint="))
            .unwrap();
        assert_eq!(
            &a[i..],
            ["--entrypoint=--privileged", "sha256:abc", "-v", "/:/host"]
        );
        assert_eq!(a.iter().filter(|x| *x == "--privileged").count(), 0);
    }

    #[test]
    fn force_command_runs_through_sh() {
        let a = create_argv(
            &rt(),
            "sha256:abc",
            &sess(),
            false,
            ALL,
            None,
            &Payload::Argv(vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo $HOME | wc".into(),
            ]),
        );
        let i = a
            .iter()
            .position(|x| x.starts_with("--entrypoint="))
            .unwrap();
        assert_eq!(
            &a[i..],
            [
                "--entrypoint=/bin/sh",
                "sha256:abc",
                "-c",
                "echo $HOME | wc"
            ]
        );
    }

    #[test]
    fn a_gated_session_is_on_its_own_network_with_the_gates_files() {
        let mut r = rt();
        r.gate = Some(crate::gate::GateRuntime {
            share_source: "/var/lib/docker/volumes/share/_data".into(),
            targets: Vec::new(),
            own_ports: vec![22],
        });
        let g = GateAttach::new(
            "0123456789abcdef",
            "bastion-net-0123456789abcdef".into(),
            "172.30.0.2",
        )
        .unwrap();
        let a = create_argv(
            &r,
            "sha256:abc",
            &sess(),
            false,
            ALL,
            Some(&g),
            &Payload::ImageDefault,
        );
        let p = pairs(&a);
        assert_eq!(a.iter().filter(|x| *x == "--network").count(), 1, "{a:?}");
        assert!(p.contains(&("--network".into(), "bastion-net-0123456789abcdef".into())));
        assert!(p.contains(&("--add-host".into(), "bastion-gate:172.30.0.2".into())));
        assert!(p.contains(&("--dns".into(), NO_DNS.into())), "{a:?}");
        for (file, target) in [
            ("agent.sock", "/run/bastion/upstream/agent.sock"),
            ("known_hosts", "/run/bastion/upstream/known_hosts"),
            ("ssh_config", "/etc/ssh/ssh_config.d/bastion-upstreams.conf"),
        ] {
            let want = format!(
                "type=bind,source=/var/lib/docker/volumes/share/_data/{file},target={target},readonly"
            );
            assert!(
                p.contains(&("--mount".into(), want.clone())),
                "{want} in {a:?}"
            );
        }
        // Without a gate, the configured network and none of the files.
        let a = create_argv(
            &r,
            "sha256:abc",
            &sess(),
            false,
            ALL,
            None,
            &Payload::ImageDefault,
        );
        assert!(pairs(&a).contains(&("--network".into(), "none".into())));
        assert!(!a
            .iter()
            .any(|x| x.contains("agent.sock") || x == "--add-host"));
    }

    #[test]
    fn only_this_sessions_gate_network_and_an_ip_are_taken() {
        let id = "0123456789abcdef";
        assert!(GateAttach::new(id, "bastion-net-fedcba9876543210".into(), "172.30.0.2").is_err());
        assert!(GateAttach::new(id, "host".into(), "172.30.0.2").is_err());
        for bad in ["", "bastion-gate", "172.30.0.2 --privileged", "1.2.3.4:22"] {
            assert!(
                GateAttach::new(id, format!("bastion-net-{id}"), bad).is_err(),
                "{bad:?}"
            );
        }
        assert!(GateAttach::new(id, format!("bastion-net-{id}"), "fd00::2").is_ok());
    }

    #[test]
    fn best_effort_drops_only_unsupported_limits() {
        let a = create_argv(
            &rt(),
            "sha256:abc",
            &sess(),
            false,
            ApplyLimits {
                memory: false,
                cpus: true,
                pids: false,
            },
            None,
            &Payload::ImageDefault,
        );
        assert!(!a.iter().any(|x| x == "--memory" || x == "--pids-limit"));
        assert!(a.iter().any(|x| x == "--cpus"));
    }

    #[test]
    fn term_goes_with_a_tty_and_session_env_wins() {
        let mut s = sess();
        s.term = Some("xterm-256color".into());
        let v = env_values(&rt(), &s);
        assert!(
            v.contains(&("TERM".into(), "xterm-256color".into())),
            "{v:?}"
        );
        let mut r = rt();
        r.env.push(("TERM".into(), "dumb".into()));
        let v = env_values(&r, &s);
        assert_eq!(v.iter().filter(|(n, _)| n == "TERM").count(), 1, "{v:?}");
        let a = create_argv(
            &r,
            "sha256:abc",
            &s,
            true,
            ALL,
            None,
            &Payload::ImageDefault,
        );
        assert_eq!(a.iter().filter(|x| *x == "TERM").count(), 1, "{a:?}");
    }

    #[test]
    fn podman_home_is_chowned_by_the_engine() {
        let mut r = rt();
        r.engine.podman = true;
        let a = create_argv(
            &r,
            "sha256:abc",
            &sess(),
            false,
            ALL,
            None,
            &Payload::ImageDefault,
        );
        assert!(
            pairs(&a).contains(&("--tmpfs".into(), "/home/dev:U,mode=0700".into())),
            "{a:?}"
        );
        assert!(!a.iter().any(|x| x == "--rm"), "{a:?}");
    }
}
