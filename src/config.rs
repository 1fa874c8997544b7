//! What the binaries share about configuration: the fixed paths of the image,
//! the runtime file the entrypoint writes for the session side, and the
//! operator-facing `ConfigError`. It never holds a secret: HTTP credentials
//! live only in the listener (see `cgi`).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// The session user sshd runs commands as.
pub(crate) const SESSION_USER: &str = "agent";
/// Where the entrypoint writes the runtime file, and where the session-side
/// binaries read it unless `--runtime PATH` says otherwise.
pub(crate) const RUNTIME_FILE: &str = "/run/bastion/runtime.json";
/// The live broker rule file (SPEC 3), re-read on every request.
pub(crate) const ALLOWED_COMMANDS_FILE: &str = "/etc/bastion/allowed-commands.list";
/// PATH for everything the bastion executes; never the client's.
pub(crate) const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Which of the two jobs the container does (SPEC 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub(crate) enum Mode {
    /// Run this shell command on every session, whatever the client asked.
    Force { command: String },
    /// Run the client's request if an allowlist rule matches.
    Broker,
}

/// `COMMAND_LOCK` (SPEC 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockPolicy {
    Exclusive,
    Wait { seconds: u32 },
    None,
}

impl LockPolicy {
    pub(crate) fn parse(value: &str) -> Result<Self, String> {
        match value.trim() {
            "" | "exclusive" => Ok(Self::Exclusive),
            "none" => Ok(Self::None),
            v => match v.strip_prefix("wait:").map(str::parse::<u32>) {
                Some(Ok(seconds)) if seconds <= 86_400 => Ok(Self::Wait { seconds }),
                _ => Err("expected `exclusive`, `none` or `wait:SECONDS` (0 to 86400)".into()),
            },
        }
    }
}

impl fmt::Display for LockPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exclusive => f.write_str("exclusive"),
            Self::Wait { seconds } => write!(f, "wait:{seconds}"),
            Self::None => f.write_str("none"),
        }
    }
}

impl Serialize for LockPolicy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LockPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The runtime file: everything the wrapper, broker and key lookup need,
/// written by the entrypoint (root-owned, mode 0644) because sshd gives its
/// children a clean environment. No secrets, ever.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Runtime {
    pub(crate) user: String,
    pub(crate) mode: Mode,
    /// `ALLOWED_COMMANDS` as it was at boot (already validated); empty when
    /// `rules_snapshot` holds the rules.
    pub(crate) allowed_commands: String,
    pub(crate) allowed_commands_file: PathBuf,
    pub(crate) command_prefix: String,
    pub(crate) command_lock: LockPolicy,
    pub(crate) lock_file: PathBuf,
    pub(crate) authorized_keys_dir: PathBuf,
    /// `AUTHORIZED_KEYS_HOST` + `AUTHORIZED_KEYS_REPO`, merged at boot.
    pub(crate) merged_keys_file: PathBuf,
    /// Whether keys carry `pty` (an interactive FORCE_COMMAND needs a TTY).
    pub(crate) pty: bool,
    /// The monitor's event socket when one runs (full boot); absent for
    /// `--prepare-only` and outside the image. When it is set and cannot
    /// be reached, sessions are refused (fail closed).
    #[serde(default)]
    pub(crate) monitor_socket: Option<PathBuf>,
    /// `ALLOWED_COMMANDS` compiled at boot (broker mode); when set, requests
    /// are decided from it and never from `allowed_commands`.
    #[serde(default)]
    pub(crate) rules_snapshot: Option<PathBuf>,
    /// The filtering agent proxy sessions get as `SSH_AUTH_SOCK` (SPEC
    /// 13), when upstreams are declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) agent_socket: Option<PathBuf>,
}

impl Runtime {
    pub(crate) fn load(path: &Path) -> Result<Self, RuntimeError> {
        let text = std::fs::read_to_string(path).map_err(|e| RuntimeError {
            path: path.to_owned(),
            problem: e.to_string(),
        })?;
        serde_json::from_str(&text).map_err(|e| RuntimeError {
            path: path.to_owned(),
            problem: e.to_string(),
        })
    }
}

/// The runtime file is missing or unreadable: the container was not booted
/// by `bastion-entrypoint`, or was tampered with.
#[derive(Debug)]
pub(crate) struct RuntimeError {
    pub(crate) path: PathBuf,
    pub(crate) problem: String,
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot read runtime file {}: {} (is the container started by bastion-entrypoint?)",
            self.path.display(),
            self.problem
        )
    }
}

/// One problem with the configuration, for the operator reading
/// `docker logs`: which variable, its value (secrets redacted), what is wrong
/// and what to do. Boot collects all of them, prints one per line, exits 78.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigError {
    pub(crate) var: String,
    /// Shown as `VAR=value`; `None` when the value is a secret or absent.
    pub(crate) value: Option<String>,
    pub(crate) problem: String,
    pub(crate) fix: String,
}

impl ConfigError {
    pub(crate) fn new(
        var: &str,
        value: Option<&str>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            var: var.to_owned(),
            value: value.map(crate::audit::escape),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(
                f,
                "config error: {}=\"{}\": {}; {}",
                self.var, v, self.problem, self.fix
            ),
            None => write!(
                f,
                "config error: {}: {}; {}",
                self.var, self.problem, self.fix
            ),
        }
    }
}

/// Reads one environment variable as UTF-8; an unset or empty variable is
/// `None`, a non-UTF-8 one is a `ConfigError`.
pub(crate) fn env_var(var: &str) -> Result<Option<String>, ConfigError> {
    match std::env::var(var) {
        Ok(v) if v.is_empty() => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::new(
            var,
            None,
            "is not valid UTF-8",
            "set it to UTF-8 text",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_policy_round_trips() {
        for v in ["exclusive", "none", "wait:0", "wait:30"] {
            assert_eq!(LockPolicy::parse(v).unwrap().to_string(), v);
        }
        assert_eq!(LockPolicy::parse("").unwrap(), LockPolicy::Exclusive);
    }

    #[test]
    fn lock_policy_rejects_garbage() {
        for v in [
            "wait",
            "wait:",
            "wait:-1",
            "wait:1.5",
            "wait:99999999",
            "shared",
            "EXCLUSIVE",
        ] {
            assert!(LockPolicy::parse(v).is_err(), "{v}");
        }
    }

    #[test]
    fn config_error_names_var_value_and_fix() {
        let e = ConfigError::new("HTTP_PORT", Some("abc\n"), "is not a port", "use 1-65535");
        assert_eq!(
            e.to_string(),
            r#"config error: HTTP_PORT="abc\n": is not a port; use 1-65535"#
        );
        let s = ConfigError::new("HTTP_TOKEN", None, "is empty", "set a token");
        assert!(!s.to_string().contains('='));
    }
}
