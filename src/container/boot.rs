//! Boot checks of session containers (SPEC 12), as root, before sshd
//! starts: the engine answers, the image is there (pulled if the policy
//! says so) and resolved to its ID, a pinned digest matches, the network
//! exists, the limits can be applied, and this bastion knows its own
//! container id. Every failure is a `ConfigError` naming the fix.

use super::engine::{Engine, QUERY_TIMEOUT};
use super::settings::{
    EngineKind, Limits, LimitsPolicy, Mount, PullPolicy, RuntimeChoice, SessionSettings,
};
use crate::config::ConfigError;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// How long a pull at boot may take.
const PULL_TIMEOUT: Duration = Duration::from_secs(600);

/// Which limits the engine can enforce (from `info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LimitSupport {
    pub(crate) memory: bool,
    pub(crate) cpus: bool,
    pub(crate) pids: bool,
}

/// The session-container part of the runtime file: what every session runs,
/// fixed at boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SessionRuntime {
    pub(crate) engine: Engine,
    /// `SESSION_IMAGE` as configured.
    pub(crate) image: String,
    /// The image ID every session runs (`sha256:...`).
    pub(crate) image_id: String,
    pub(crate) pull: PullPolicy,
    pub(crate) user: Option<String>,
    /// The home directory of the session user in the image, with its uid
    /// and gid, made a tmpfs when the root is read-only.
    pub(crate) home: Option<Home>,
    pub(crate) limits: Limits,
    pub(crate) limits_policy: LimitsPolicy,
    pub(crate) limit_support: LimitSupport,
    pub(crate) network: String,
    pub(crate) read_only: bool,
    pub(crate) mounts: Vec<Mount>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) workdir: Option<String>,
    pub(crate) max: u32,
    pub(crate) timeout_secs: u64,
    /// This bastion's full container id: the instance label.
    pub(crate) instance: String,
    /// The `SESSION_MAX` slot files (one per concurrent session).
    pub(crate) slots_dir: PathBuf,
    /// The egress gate (SPEC 14), when upstreams are declared too: each
    /// session container then gets its own gate network instead of
    /// `network`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) gate: Option<crate::gate::GateRuntime>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Home {
    pub(crate) path: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

fn error(var: &str, value: Option<&str>, problem: String, fix: &str) -> ConfigError {
    ConfigError::new(var, value, problem, fix)
}

/// The engine named by `SESSION_RUNTIME`, answering.
fn engine(choice: RuntimeChoice, errors: &mut Vec<ConfigError>) -> Option<Engine> {
    let host = |kind: EngineKind| {
        let var = if kind == EngineKind::Podman {
            "CONTAINER_HOST"
        } else {
            "DOCKER_HOST"
        };
        crate::config::env_var(var).ok().flatten()
    };
    let kinds: Vec<EngineKind> = match choice {
        RuntimeChoice::Auto => EngineKind::ALL.to_vec(),
        RuntimeChoice::Engine(k) => vec![k],
    };
    let mut tried = Vec::new();
    for kind in kinds {
        let Some(mut engine) = Engine::find(kind, host(kind)) else {
            tried.push(format!("{kind}: not installed"));
            continue;
        };
        match engine.ping() {
            Ok(()) => return Some(engine),
            Err(reason) => tried.push(format!("{kind}: {reason}")),
        }
    }
    let value = match choice {
        RuntimeChoice::Auto => "auto".to_owned(),
        RuntimeChoice::Engine(k) => k.to_string(),
    };
    errors.push(error(
        "SESSION_RUNTIME",
        Some(&value),
        format!("no container engine answers ({})", tried.join("; ")),
        "mount the engine's API socket into the bastion (/var/run/docker.sock for Docker, or Podman's socket there), or set SESSION_RUNTIME to the engine you run",
    ));
    None
}

/// Splits `name@sha256:HEX` into the name and the digest.
fn split_digest(image: &str) -> (&str, Option<&str>) {
    match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    }
}

/// The image's ID, pulling it first when the policy says so.
pub(crate) fn resolve_image(
    engine: &Engine,
    image: &str,
    pull: PullPolicy,
) -> Result<String, (String, &'static str)> {
    let (name, digest) = split_digest(image);
    let inspect = |r: &str| {
        engine.query(
            &["image", "inspect", "--format", "{{.Id}}", r],
            QUERY_TIMEOUT,
        )
    };
    let do_pull = || {
        let r = engine.query(&["pull", "--quiet", image], PULL_TIMEOUT);
        if r.ok {
            Ok(())
        } else {
            Err((
                format!("cannot be pulled: {}", r.reason()),
                "make the registry reachable from the engine, or load the image on the engine's host and set SESSION_PULL=never",
            ))
        }
    };
    if pull == PullPolicy::Always {
        do_pull()?;
    }
    let mut found = inspect(name);
    if !found.ok && pull == PullPolicy::IfNotPresent {
        do_pull()?;
        found = inspect(name);
    }
    if !found.ok {
        return Err((
            format!("is not on the engine ({})", found.reason()),
            match pull {
                PullPolicy::Never => "load or build the image on the engine's host first, or allow pulling with SESSION_PULL=if-not-present",
                _ => "check the image name",
            },
        ));
    }
    let id = found.stdout.trim().to_owned();
    if let Some(digest) = digest {
        let r = engine.query(
            &[
                "image",
                "inspect",
                "--format",
                "{{range .RepoDigests}}{{println .}}{{end}}",
                name,
            ],
            QUERY_TIMEOUT,
        );
        // A repo digest names the image's manifest: `repo@sha256:...`.
        let matches = r
            .stdout
            .lines()
            .any(|l| l.trim().rsplit_once('@').is_some_and(|(_, d)| d == digest));
        if !matches {
            let have: Vec<&str> = r.stdout.lines().filter(|l| !l.is_empty()).collect();
            return Err((
                format!(
                    "does not match its digest: {name} is {id} with registry digest(s) [{}], not {digest}",
                    have.join(", ")
                ),
                "pull the pinned image, or fix the digest in SESSION_IMAGE",
            ));
        }
    }
    Ok(id)
}

fn limit_support(engine: &Engine) -> LimitSupport {
    match engine.kind {
        EngineKind::Podman => {
            let r = engine.query(
                &["info", "--format", "{{.Host.CgroupControllers}}"],
                QUERY_TIMEOUT,
            );
            let has = |c: &str| r.stdout.split([' ', '[', ']']).any(|w| w == c);
            LimitSupport {
                memory: has("memory"),
                cpus: has("cpu"),
                pids: has("pids"),
            }
        }
        _ => {
            let r = engine.query(
                &[
                    "info",
                    "--format",
                    "{{.MemoryLimit}} {{.CPUCfsQuota}} {{.PidsLimit}}",
                ],
                QUERY_TIMEOUT,
            );
            let w: Vec<&str> = r.stdout.split_whitespace().collect();
            let yes = |i: usize| w.get(i) == Some(&"true");
            LimitSupport {
                memory: yes(0),
                cpus: yes(1),
                pids: yes(2),
            }
        }
    }
}

/// This bastion's full container id, as the engine knows it: from the
/// engine's own bind mounts (`.../containers/<id>/hostname`), else the
/// hostname; confirmed by `inspect`.
fn instance_id(engine: &Engine) -> Result<String, String> {
    let mut candidates = Vec::new();
    if let Ok(mi) = std::fs::read_to_string("/proc/self/mountinfo") {
        for line in mi.lines() {
            if let Some(root) = line.split(' ').nth(3) {
                for part in root.split('/') {
                    if part.len() == 64 && part.bytes().all(|b| b.is_ascii_hexdigit()) {
                        candidates.push(part.to_owned());
                    }
                }
            }
        }
    }
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        candidates.push(h.trim().to_owned());
    }
    candidates.dedup();
    for c in candidates.iter().filter(|c| !c.is_empty()) {
        let r = engine.query(
            &["container", "inspect", "--format", "{{.Id}}", c],
            QUERY_TIMEOUT,
        );
        let id = r.stdout.trim();
        if r.ok && id.len() == 64 && (id == c || c.len() < 64) {
            return Ok(id.to_owned());
        }
    }
    Err("the engine does not know this bastion's container (looked for its id in /proc/self/mountinfo and its hostname)".into())
}

/// The host path of this bastion's volume at `/run/bastion/share` (the
/// egress gate's files for session containers), from the engine.
pub(crate) fn share_source(engine: &Engine, instance: &str) -> Result<String, String> {
    let r = engine.query(
        &[
            "container",
            "inspect",
            "--format",
            "{{json .Mounts}}",
            instance,
        ],
        QUERY_TIMEOUT,
    );
    if !r.ok {
        return Err(format!(
            "the engine cannot inspect the bastion's container ({})",
            r.reason()
        ));
    }
    crate::gate::share_source_in(r.stdout.trim())
}

/// The home of `user` (or of the image's own user) from the image's
/// /etc/passwd, copied out of a created, never started container.
fn image_home(engine: &Engine, image_id: &str, user: Option<&str>) -> Option<Home> {
    let user = match user {
        Some(u) => u.to_owned(),
        None => {
            let r = engine.query(
                &["image", "inspect", "--format", "{{.Config.User}}", image_id],
                QUERY_TIMEOUT,
            );
            r.stdout.trim().to_owned()
        }
    };
    let who = user.split(':').next().unwrap_or_default();
    let who = if who.is_empty() { "root" } else { who };
    let created = engine.query(
        &[
            "create",
            "--network",
            "none",
            "--entrypoint",
            "/nonexistent",
            image_id,
        ],
        QUERY_TIMEOUT,
    );
    if !created.ok {
        return None;
    }
    let cid = created.stdout.trim().to_owned();
    let mut c = engine.command();
    c.args(["cp", &format!("{cid}:/etc/passwd"), "-"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let tar = super::engine::run_bounded(c, QUERY_TIMEOUT);
    let _ = engine.query(&["rm", "-f", &cid], QUERY_TIMEOUT);
    let passwd = first_tar_member(tar.stdout.as_bytes())?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 7 || (f[0] != who && f[2] != who) {
            return None;
        }
        let path = f[5].trim_end_matches('/');
        if !path.starts_with('/') || path.len() < 2 || path.contains(',') {
            return None;
        }
        Some(Home {
            path: path.to_owned(),
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
        })
    })
}

/// The contents of the first file of a tar stream.
fn first_tar_member(tar: &[u8]) -> Option<String> {
    let header = tar.get(..512)?;
    let size_field = std::str::from_utf8(&header[124..136]).ok()?;
    let size =
        usize::from_str_radix(size_field.trim_matches(|c: char| c == '\0' || c == ' '), 8).ok()?;
    let body = tar.get(512..512 + size)?;
    Some(String::from_utf8_lossy(body).into_owned())
}

/// Runs every boot check of `s`; `None` (with the errors pushed) when one
/// fails.
pub(crate) fn check(
    s: &SessionSettings,
    slots_dir: PathBuf,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) -> Option<SessionRuntime> {
    let engine = engine(s.runtime, errors)?;
    let before = errors.len();
    let image_id = match resolve_image(&engine, &s.image, s.pull) {
        Ok(id) => Some(id),
        Err((problem, fix)) => {
            errors.push(error("SESSION_IMAGE", Some(&s.image), problem, fix));
            None
        }
    };
    if s.network != "none" {
        let r = engine.query(
            &["network", "inspect", "--format", "{{.Name}}", &s.network],
            QUERY_TIMEOUT,
        );
        if !r.ok {
            errors.push(error(
                "SESSION_NETWORK",
                Some(&s.network),
                format!("is not a network on the engine ({})", r.reason()),
                "create it first (docker network create NAME), or use none",
            ));
        }
    }
    let instance = match instance_id(&engine) {
        Ok(id) => Some(id),
        Err(problem) => {
            errors.push(error(
                "SESSION_IMAGE",
                Some(&s.image),
                problem,
                "run the bastion as a container of the same engine that runs the sessions",
            ));
            None
        }
    };
    let support = limit_support(&engine);
    let missing: Vec<&str> = [
        ("memory", support.memory),
        ("cpus", support.cpus),
        ("pids", support.pids),
    ]
    .iter()
    .filter(|(_, ok)| !ok)
    .map(|(n, _)| *n)
    .collect();
    if !missing.is_empty() {
        warnings.push(format!(
            "the {} engine cannot apply the {} limit(s) (no cgroup controller): {}",
            engine.kind,
            missing.join(", "),
            match s.limits_policy {
                LimitsPolicy::Required => "every session will be refused (SESSION_LIMITS=required)",
                LimitsPolicy::BestEffort =>
                    "sessions start without them (SESSION_LIMITS=best-effort)",
            }
        ));
    }
    if errors.len() > before {
        return None;
    }
    let image_id = image_id?;
    let home = if s.read_only {
        image_home(&engine, &image_id, s.user.as_deref())
    } else {
        None
    };
    Some(SessionRuntime {
        engine,
        image: s.image.clone(),
        image_id,
        pull: s.pull,
        user: s.user.clone(),
        home,
        limits: s.limits.clone(),
        limits_policy: s.limits_policy,
        limit_support: support,
        network: s.network.clone(),
        read_only: s.read_only,
        mounts: s.mounts.clone(),
        env: s.env.clone(),
        workdir: s.workdir.clone(),
        max: s.max,
        timeout_secs: s.timeout_secs,
        instance: instance?,
        slots_dir,
        gate: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_split() {
        assert_eq!(
            split_digest("a/b:1@sha256:ff"),
            ("a/b:1", Some("sha256:ff"))
        );
        assert_eq!(split_digest("a/b:1"), ("a/b:1", None));
    }

    #[test]
    fn tar_member() {
        let mut t = vec![0u8; 512];
        t[124..135].copy_from_slice(b"00000000005");
        t.extend_from_slice(b"hello");
        t.resize(1024, 0);
        assert_eq!(first_tar_member(&t).as_deref(), Some("hello"));
        assert_eq!(first_tar_member(&t[..100]), None);
    }
}
