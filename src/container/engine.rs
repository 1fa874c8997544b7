//! The container engine's CLI (docker, podman, nerdctl): finding it, asking
//! it things with a bound on time, and the one environment it runs with.
//! It never passes anything to a shell.

use super::settings::EngineKind;
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a query (version, inspect, rm) may take before it counts as
/// "the engine does not answer".
pub(crate) const QUERY_TIMEOUT: Duration = Duration::from_secs(20);

/// One engine CLI, fixed at boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Engine {
    pub(crate) kind: EngineKind,
    pub(crate) cli: PathBuf,
    /// `DOCKER_HOST` / `CONTAINER_HOST` as the bastion was given it, passed
    /// on to the CLI (the session's environment never reaches it).
    #[serde(default)]
    pub(crate) host: Option<String>,
    /// The server is Podman (its own CLI, or the docker CLI through
    /// Podman's Docker-compatible API): a few options are spelled
    /// differently.
    #[serde(default)]
    pub(crate) podman: bool,
}

/// What a finished CLI call gave back.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) ok: bool,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Reply {
    /// The CLI's last stderr line, for a one-line reason.
    pub(crate) fn reason(&self) -> String {
        let line = self
            .stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no message");
        crate::audit::escape(line.trim())
    }
}

impl Engine {
    /// The CLI of `kind` on the safe PATH, if installed.
    pub(crate) fn find(kind: EngineKind, host: Option<String>) -> Option<Engine> {
        crate::config::SAFE_PATH
            .split(':')
            .map(|d| Path::new(d).join(kind.program()))
            .find(|p| p.is_file())
            .map(|cli| Engine {
                kind,
                cli,
                host,
                podman: kind == EngineKind::Podman,
            })
    }

    /// A `Command` for the CLI with a clean environment: the safe PATH, a
    /// HOME for its config, the engine address, and nothing of the caller's.
    pub(crate) fn command(&self) -> Command {
        let mut c = Command::new(&self.cli);
        c.env_clear().env("PATH", crate::config::SAFE_PATH);
        if let Some(home) = std::env::var_os("HOME") {
            c.env("HOME", home);
        }
        if let Some(h) = &self.host {
            c.env(
                match self.kind {
                    EngineKind::Podman => "CONTAINER_HOST",
                    _ => "DOCKER_HOST",
                },
                h,
            );
        }
        if self.kind == EngineKind::Podman {
            // The bastion never runs containers itself: it talks to the
            // host's Podman service.
            c.arg("--remote");
        }
        c
    }

    /// Runs the CLI with `args`, stdin closed, output captured, killed after
    /// `timeout`.
    pub(crate) fn query(&self, args: &[&str], timeout: Duration) -> Reply {
        let mut c = self.command();
        c.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        run_bounded(c, timeout)
    }

    /// Whether the engine answers; learns whether it is Podman.
    pub(crate) fn ping(&mut self) -> Result<(), String> {
        let format = match self.kind {
            EngineKind::Podman => "{{.Server.Version}} Podman",
            _ => "{{.Server.Version}} {{range .Server.Components}}{{.Name}};{{end}}",
        };
        let r = self.query(&["version", "--format", format], QUERY_TIMEOUT);
        let v = r.stdout.trim();
        if r.ok && !v.is_empty() && !v.starts_with("<no value>") {
            self.podman = self.podman || v.contains("Podman");
            Ok(())
        } else {
            Err(r.reason())
        }
    }
}

/// Spawns `c` and collects its output; kills it when `timeout` passes.
pub(crate) fn run_bounded(mut c: Command, timeout: Duration) -> Reply {
    let mut child = match c.spawn() {
        Ok(ch) => ch,
        Err(e) => {
            return Reply {
                ok: false,
                stdout: String::new(),
                stderr: format!("cannot run {}: {e}", c.get_program().to_string_lossy()),
            }
        }
    };
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut s);
        }
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_end(&mut s);
        }
        s
    });
    let end = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().ok();
            }
            Err(_) => break None,
        }
    };
    let stdout = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    let mut stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    if timed_out {
        stderr.push_str(&format!("\nno answer within {} s", timeout.as_secs()));
    }
    Reply {
        ok: !timed_out && status.is_some_and(|s| s.success()),
        stdout,
        stderr,
    }
}
