//! `SESSION_*` (SPEC 12) read from the container's environment: pure
//! parsing, every bad value one `ConfigError`. Nothing here talks to the
//! engine; `boot` does that with what this returns.

use crate::config::ConfigError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Component, Path};

/// `SESSION_RUNTIME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RuntimeChoice {
    Auto,
    Engine(EngineKind),
}

/// The engines whose CLI the runner drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum EngineKind {
    Docker,
    Podman,
    Nerdctl,
}

impl EngineKind {
    pub(crate) const ALL: [EngineKind; 3] = [Self::Docker, Self::Podman, Self::Nerdctl];

    /// The CLI's program name on PATH.
    pub(crate) fn program(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Podman => "podman",
            Self::Nerdctl => "nerdctl",
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.program())
    }
}

/// `SESSION_PULL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum PullPolicy {
    Never,
    IfNotPresent,
    Always,
}

/// `SESSION_LIMITS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum LimitsPolicy {
    Required,
    BestEffort,
}

/// One `SESSION_MOUNTS` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Mount {
    pub(crate) source: String,
    pub(crate) target: String,
    pub(crate) read_only: bool,
}

/// The resource limits, in the engine CLI's own syntax.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Limits {
    /// Bytes, with an optional `b`/`k`/`m`/`g` suffix (`512m`).
    pub(crate) memory: String,
    /// A decimal number of CPUs (`1`, `0.5`).
    pub(crate) cpus: String,
    pub(crate) pids: u32,
}

/// Everything `SESSION_*` says, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionSettings {
    pub(crate) image: String,
    pub(crate) runtime: RuntimeChoice,
    pub(crate) pull: PullPolicy,
    pub(crate) user: Option<String>,
    pub(crate) limits: Limits,
    pub(crate) limits_policy: LimitsPolicy,
    pub(crate) network: String,
    pub(crate) read_only: bool,
    pub(crate) mounts: Vec<Mount>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) workdir: Option<String>,
    pub(crate) max: u32,
    pub(crate) timeout_secs: u64,
}

/// Environment variables the bastion sets itself in every session.
pub(crate) const RESERVED_ENV: [&str; 2] = ["BASTION_SESSION_ID", "BASTION_IDENTITY"];

/// Engine API sockets (and their usual directories): a session that can
/// reach one can start a privileged container, so none may be mounted.
const ENGINE_SOCKETS: [&str; 6] = [
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/podman/podman.sock",
    "/run/containerd/containerd.sock",
    "/var/run/containerd/containerd.sock",
    "/run/buildkit/buildkitd.sock",
];

/// Reads `SESSION_*` through `get` (the environment in production). `None`
/// when `SESSION_IMAGE` is unset: session containers are off, and the other
/// `SESSION_*` variables are not looked at.
pub(crate) fn parse(
    get: &mut dyn FnMut(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) -> Option<SessionSettings> {
    let image = get("SESSION_IMAGE")?.trim().to_owned();
    let mut err = |var: &str, value: &str, problem: String, fix: &str| {
        errors.push(ConfigError::new(var, Some(value), problem, fix));
    };
    if image.is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        err(
            "SESSION_IMAGE",
            &image,
            "is not an image reference".into(),
            "give one image name such as registry/name:tag or name@sha256:DIGEST",
        );
    }
    let runtime = match get("SESSION_RUNTIME").as_deref().map(str::trim) {
        None | Some("auto") => RuntimeChoice::Auto,
        Some(v) => match EngineKind::ALL.iter().find(|k| k.program() == v) {
            Some(k) => RuntimeChoice::Engine(*k),
            None => {
                err(
                    "SESSION_RUNTIME",
                    v,
                    "is not a known runtime".into(),
                    "use docker, podman, nerdctl or auto",
                );
                RuntimeChoice::Auto
            }
        },
    };
    let pull = match get("SESSION_PULL").as_deref().map(str::trim) {
        None | Some("if-not-present") => PullPolicy::IfNotPresent,
        Some("never") => PullPolicy::Never,
        Some("always") => PullPolicy::Always,
        Some(v) => {
            err(
                "SESSION_PULL",
                v,
                "is not a pull policy".into(),
                "use never, if-not-present or always",
            );
            PullPolicy::IfNotPresent
        }
    };
    let user = get("SESSION_USER").map(|v| v.trim().to_owned());
    if let Some(u) = &user {
        if !valid_user(u) {
            err(
                "SESSION_USER",
                u,
                "is not a user".into(),
                "give uid[:gid] (numbers) or a user name of letters, digits, `_`, `-` and `.`",
            );
        }
    }
    let memory = get("SESSION_MEMORY").map_or_else(|| "512m".to_owned(), |v| v.trim().to_owned());
    if !valid_memory(&memory) {
        err(
            "SESSION_MEMORY",
            &memory,
            "is not a memory size of at least 6m".into(),
            "give a number with an optional b, k, m or g suffix, such as 512m or 2g",
        );
    }
    let cpus = get("SESSION_CPUS").map_or_else(|| "1".to_owned(), |v| v.trim().to_owned());
    if !valid_cpus(&cpus) {
        err(
            "SESSION_CPUS",
            &cpus,
            "is not a positive number of CPUs".into(),
            "give a decimal number such as 1 or 0.5 (at most 1024)",
        );
    }
    let pids = number(
        get,
        "SESSION_PIDS",
        256,
        1,
        4_194_304,
        &mut err,
        "give a whole number of processes, 1 or more",
    );
    let limits_policy = match get("SESSION_LIMITS").as_deref().map(str::trim) {
        None | Some("required") => LimitsPolicy::Required,
        Some("best-effort") => LimitsPolicy::BestEffort,
        Some(v) => {
            err(
                "SESSION_LIMITS",
                v,
                "is not a limits policy".into(),
                "use required or best-effort",
            );
            LimitsPolicy::Required
        }
    };
    let network = get("SESSION_NETWORK").map_or_else(|| "none".to_owned(), |v| v.trim().to_owned());
    if network == "host" {
        err(
            "SESSION_NETWORK",
            &network,
            "would give every session the bastion host's own network stack".into(),
            "use none (the default) or the name of a network created for the sessions",
        );
    } else if network.starts_with("container:") || network.starts_with("ns:") {
        err(
            "SESSION_NETWORK",
            &network,
            "would put every session in another container's network namespace".into(),
            "use none (the default) or the name of a network created for the sessions",
        );
    } else if !valid_name(&network) {
        err(
            "SESSION_NETWORK",
            &network,
            "is not a network name".into(),
            "use none or a network name of letters, digits, `_`, `-` and `.`",
        );
    }
    let read_only = match get("SESSION_READ_ONLY").as_deref().map(str::trim) {
        None | Some("true" | "1" | "yes") => true,
        Some("false" | "0" | "no") => false,
        Some(v) => {
            err(
                "SESSION_READ_ONLY",
                v,
                "is not a boolean".into(),
                "use true or false",
            );
            true
        }
    };
    let mounts = get("SESSION_MOUNTS").map_or_else(Vec::new, |v| parse_mounts(&v, &mut err));
    let env = get("SESSION_ENV").map_or_else(Vec::new, |v| parse_env(&v, &mut err));
    let workdir = get("SESSION_WORKDIR").map(|v| v.trim().to_owned());
    if let Some(w) = &workdir {
        if !w.starts_with('/') || w.chars().any(char::is_control) {
            err(
                "SESSION_WORKDIR",
                w,
                "is not an absolute path".into(),
                "give a directory inside the session container, starting with /",
            );
        }
    }
    let max = number(
        get,
        "SESSION_MAX",
        16,
        1,
        4096,
        &mut err,
        "give a whole number from 1 to 4096",
    ) as u32;
    let timeout_secs = number(
        get,
        "SESSION_TIMEOUT",
        0,
        0,
        31_536_000,
        &mut err,
        "give a number of seconds (0: no limit)",
    );
    Some(SessionSettings {
        image,
        runtime,
        pull,
        user,
        limits: Limits {
            memory,
            cpus,
            pids: pids as u32,
        },
        limits_policy,
        network,
        read_only,
        mounts,
        env,
        workdir,
        max,
        timeout_secs,
    })
}

fn number(
    get: &mut dyn FnMut(&str) -> Option<String>,
    var: &str,
    default: u64,
    min: u64,
    max: u64,
    err: &mut dyn FnMut(&str, &str, String, &str),
    fix: &str,
) -> u64 {
    match get(var) {
        None => default,
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => n,
            _ => {
                err(
                    var,
                    v.trim(),
                    format!("is not a number from {min} to {max}"),
                    fix,
                );
                default
            }
        },
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        && s.as_bytes()[0].is_ascii_alphanumeric()
}

fn valid_user(s: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && p.len() <= 32
            && (p.bytes().all(|b| b.is_ascii_digit())
                || (p
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
                    && !p.starts_with('-')))
    };
    match s.split_once(':') {
        None => part(s),
        Some((u, g)) => part(u) && part(g),
    }
}

fn valid_memory(s: &str) -> bool {
    let (digits, mult) = match s.as_bytes().last() {
        Some(b'b' | b'B') => (&s[..s.len() - 1], 1u64),
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1 << 10),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(mult))
            .is_some_and(|bytes| bytes >= 6 << 20)
}

fn valid_cpus(s: &str) -> bool {
    let ok_chars = !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && s.bytes().filter(|b| *b == b'.').count() <= 1
        && !s.starts_with('.')
        && !s.ends_with('.');
    ok_chars && s.parse::<f64>().is_ok_and(|n| n > 0.0 && n <= 1024.0)
}

/// Lines of a newline-separated variable: trimmed of `\r`, blank lines and
/// `#` comments skipped.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
}

fn parse_mounts(text: &str, err: &mut dyn FnMut(&str, &str, String, &str)) -> Vec<Mount> {
    let mut out = Vec::new();
    for line in lines(text) {
        let line = line.trim();
        let parts: Vec<&str> = line.split(':').collect();
        let (source, target, read_only) = match parts.as_slice() {
            [s, t] => (*s, *t, false),
            [s, t, "ro"] => (*s, *t, true),
            [s, t, "rw"] => (*s, *t, false),
            _ => {
                err(
                    "SESSION_MOUNTS",
                    line,
                    "is not SOURCE:TARGET or SOURCE:TARGET:ro".into(),
                    "write one mount per line, both paths absolute, optionally ending in :ro",
                );
                continue;
            }
        };
        let bad_path = |p: &str| {
            !p.starts_with('/')
                || p.chars().any(|c| c.is_control() || c == ',' || c == '"')
                || Path::new(p).components().any(|c| c == Component::ParentDir)
        };
        if bad_path(source) || bad_path(target) {
            err(
                "SESSION_MOUNTS",
                line,
                "needs two absolute paths without `..`, commas or quotes".into(),
                "give SOURCE (a path on the engine's host) and TARGET (a path in the session) as absolute paths",
            );
            continue;
        }
        let norm = |p: &str| {
            let t = p.trim_end_matches('/');
            if t.is_empty() {
                "/".to_owned()
            } else {
                t.to_owned()
            }
        };
        let (source, target) = (norm(source), norm(target));
        if source == "/" || target == "/" {
            err(
                "SESSION_MOUNTS",
                line,
                "mounts the root file system".into(),
                "mount only the directory the sessions need",
            );
            continue;
        }
        if exposes_engine_socket(&source) {
            err(
                "SESSION_MOUNTS",
                line,
                "would give sessions a container engine's socket (root on the host)".into(),
                "never mount an engine socket or the directory holding one into a session",
            );
            continue;
        }
        out.push(Mount {
            source,
            target,
            read_only,
        });
    }
    out
}

/// A known engine socket, a directory holding one, or any `*.sock` whose
/// name says docker, podman or containerd.
fn exposes_engine_socket(source: &str) -> bool {
    let name = source.rsplit('/').next().unwrap_or_default();
    let named = name.ends_with(".sock")
        && ["docker", "podman", "containerd", "buildkit"]
            .iter()
            .any(|e| name.contains(e));
    named
        || ENGINE_SOCKETS.iter().any(|s| {
            *s == source
                || s.strip_prefix(source)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
}

fn parse_env(text: &str, err: &mut dyn FnMut(&str, &str, String, &str)) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in lines(text) {
        let Some((name, value)) = line.split_once('=') else {
            err(
                "SESSION_ENV",
                line,
                "is not NAME=VALUE".into(),
                "write one NAME=VALUE per line",
            );
            continue;
        };
        let name = name.trim();
        let valid = !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !name.as_bytes()[0].is_ascii_digit();
        if !valid {
            err(
                "SESSION_ENV",
                line,
                format!("\"{}\" is not a variable name", crate::audit::escape(name)),
                "use letters, digits and `_`, not starting with a digit",
            );
            continue;
        }
        if RESERVED_ENV.contains(&name) {
            err(
                "SESSION_ENV",
                line,
                format!("{name} is set by the bastion for every session"),
                "remove the line",
            );
            continue;
        }
        out.retain(|(n, _)| n != name);
        out.push((name.to_owned(), value.to_owned()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run(vars: &[(&str, &str)]) -> (Option<SessionSettings>, Vec<String>) {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut errors = Vec::new();
        let mut get = |k: &str| map.get(k).cloned().filter(|v| !v.is_empty());
        let s = parse(&mut get, &mut errors);
        (s, errors.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn off_without_an_image() {
        let (s, e) = run(&[("SESSION_RUNTIME", "bogus")]);
        assert!(s.is_none() && e.is_empty());
    }

    #[test]
    fn defaults_are_the_spec_table() {
        let (s, e) = run(&[("SESSION_IMAGE", "tools:1")]);
        assert!(e.is_empty(), "{e:?}");
        let s = s.unwrap();
        assert_eq!(s.runtime, RuntimeChoice::Auto);
        assert_eq!(s.pull, PullPolicy::IfNotPresent);
        assert_eq!(s.limits.memory, "512m");
        assert_eq!(s.limits.cpus, "1");
        assert_eq!(s.limits.pids, 256);
        assert_eq!(s.limits_policy, LimitsPolicy::Required);
        assert_eq!(s.network, "none");
        assert!(s.read_only);
        assert_eq!((s.max, s.timeout_secs), (16, 0));
        assert!(s.user.is_none() && s.workdir.is_none());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let (_, e) = run(&[
            ("SESSION_IMAGE", "tools"),
            ("SESSION_RUNTIME", "lxc"),
            ("SESSION_PULL", "sometimes"),
            ("SESSION_MEMORY", "1x"),
            ("SESSION_CPUS", "-1"),
            ("SESSION_PIDS", "0"),
            ("SESSION_LIMITS", "maybe"),
            ("SESSION_NETWORK", "host"),
            ("SESSION_READ_ONLY", "perhaps"),
            ("SESSION_MAX", "0"),
            ("SESSION_TIMEOUT", "soon"),
            ("SESSION_USER", "root;id"),
            ("SESSION_WORKDIR", "work"),
        ]);
        for var in [
            "SESSION_RUNTIME",
            "SESSION_PULL",
            "SESSION_MEMORY",
            "SESSION_CPUS",
            "SESSION_PIDS",
            "SESSION_LIMITS",
            "SESSION_NETWORK",
            "SESSION_READ_ONLY",
            "SESSION_MAX",
            "SESSION_TIMEOUT",
            "SESSION_USER",
            "SESSION_WORKDIR",
        ] {
            assert!(
                e.iter()
                    .any(|l| l.starts_with(&format!("config error: {var}="))),
                "{var} missing from {e:#?}"
            );
        }
    }

    #[test]
    fn networks_that_escape_are_refused() {
        for n in [
            "host",
            "container:db",
            "container:",
            "ns:/proc/1/ns/net",
            "a b",
            "-x",
        ] {
            let (_, e) = run(&[("SESSION_IMAGE", "t"), ("SESSION_NETWORK", n)]);
            assert_eq!(e.len(), 1, "{n}: {e:?}");
        }
        for n in ["none", "sessions", "my_net.1"] {
            let (_, e) = run(&[("SESSION_IMAGE", "t"), ("SESSION_NETWORK", n)]);
            assert!(e.is_empty(), "{n}: {e:?}");
        }
    }

    #[test]
    fn mounts_of_root_or_engine_sockets_are_refused() {
        for m in [
            "/:/host",
            "/srv:/",
            "//:/host",
            "/var/run/docker.sock:/var/run/docker.sock",
            "/run:/run2",
            "/var/run:/x:ro",
            "/run/podman/podman.sock:/s",
            "/run/user/1000/podman/podman.sock:/s",
            "/home/me/docker.sock:/d",
            "/run/containerd:/c",
            "relative:/x",
            "/a:relative",
            "/a/../run:/x",
            "/a,b:/x",
            "/a:/b:rx",
            "/a",
        ] {
            let (_, e) = run(&[("SESSION_IMAGE", "t"), ("SESSION_MOUNTS", m)]);
            assert_eq!(e.len(), 1, "{m}: {e:?}");
        }
        let (s, e) = run(&[
            ("SESSION_IMAGE", "t"),
            (
                "SESSION_MOUNTS",
                "/srv/www:/var/www:ro\n\n# comment\n/srv/data/:/data\r\n",
            ),
        ]);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(
            s.unwrap().mounts,
            vec![
                Mount {
                    source: "/srv/www".into(),
                    target: "/var/www".into(),
                    read_only: true
                },
                Mount {
                    source: "/srv/data".into(),
                    target: "/data".into(),
                    read_only: false
                },
            ]
        );
    }

    #[test]
    fn session_env_lines() {
        let (s, e) = run(&[
            ("SESSION_IMAGE", "t"),
            ("SESSION_ENV", "A=1\nB= spaced value \n# c\nA=2\nEMPTY=\n"),
        ]);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(
            s.unwrap().env,
            vec![
                ("B".into(), " spaced value ".into()),
                ("A".into(), "2".into()),
                ("EMPTY".into(), "".into())
            ]
        );
        let (_, e) = run(&[
            ("SESSION_IMAGE", "t"),
            (
                "SESSION_ENV",
                "novalue\n1A=x\nA-B=x\nBASTION_IDENTITY=root\n=x\n",
            ),
        ]);
        assert_eq!(e.len(), 5, "{e:#?}");
    }

    #[test]
    fn limit_syntax() {
        for m in ["512m", "6m", "1g", "6291456", "8192k"] {
            assert!(valid_memory(m), "{m}");
        }
        for m in ["", "m", "5m", "1.5g", "1x", "-1m", "99999999999999999999g"] {
            assert!(!valid_memory(m), "{m}");
        }
        for c in ["1", "0.5", "2.25", "1024"] {
            assert!(valid_cpus(c), "{c}");
        }
        for c in ["0", "0.0", ".5", "1.", "1e3", "-1", "nan", "1025"] {
            assert!(!valid_cpus(c), "{c}");
        }
    }

    #[test]
    fn users() {
        for u in [
            "1000",
            "1000:1000",
            "nobody",
            "www-data:www-data",
            "svc.user",
        ] {
            assert!(valid_user(u), "{u}");
        }
        for u in ["", ":", "1000:", "-u", "a b", "root;id", "a:b:c"] {
            assert!(!valid_user(u), "{u}");
        }
    }
}
