//! The wrapper's decision as a library, for a caller that starts the
//! command itself (the HTTP listener: one process image per request, no
//! wrapper in between). Once the lock is held, [`plan`] says what the
//! wrapper would do: the command to start and the lines it writes first,
//! or the lines and the exit code when nothing starts. Every line is the
//! one the wrapper writes, byte for byte, so a client sees no difference.
//! It never starts anything and never writes anywhere itself.

use crate::audit::{self, Event};
use crate::config::{Mode, Runtime, SAFE_PATH};
use crate::session::report::Decided;
use crate::session::{Command, ExecError, SessionEnv};
use crate::tool::Tool;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What the wrapper prints on stdout when another run holds the lock.
pub(crate) use super::BUSY_LINE;

/// What happens to one request once the lock is held.
#[derive(Debug)]
pub(crate) enum Plan {
    /// Start `cmd`, after writing `said` (the broker's notes and ALLOW
    /// line). If it cannot start, `speaker` says why.
    Run {
        cmd: Command,
        said: Vec<u8>,
        speaker: Tool,
        /// The broker's allow, for the audit trail (none in force mode).
        allowed: Option<Decided>,
    },
    /// Nothing starts: the wrapper writes `said` and exits with `code`.
    Done {
        said: Vec<u8>,
        code: u8,
        /// The broker's deny, for the audit trail (none when nothing was
        /// decided).
        denied: Option<Decided>,
    },
}

/// [`plan_with`] with the broker's configuration read from `rt` now.
#[cfg(test)]
pub(crate) fn plan(rt: &Runtime, request: Option<&[u8]>, env: SessionEnv) -> Plan {
    plan_with(
        rt,
        &crate::broker::BrokerConfig::from_runtime(rt),
        request,
        env,
    )
}

/// The wrapper's decision for `request` (its `SSH_ORIGINAL_COMMAND`), the
/// command getting `env`: FORCE_COMMAND through `/bin/sh -c`, or the
/// broker's allowed argv under `broker_cfg` (built once by the caller: the
/// listener's, from its runtime file, holds the boot snapshot read when it
/// started). The live list file is read here, as the wrapper reads it on
/// every request.
pub(crate) fn plan_with(
    rt: &Runtime,
    broker_cfg: &crate::broker::BrokerConfig,
    request: Option<&[u8]>,
    env: SessionEnv,
) -> Plan {
    match &rt.mode {
        Mode::Force { command } => Plan::Run {
            cmd: Command::shell(command, env),
            said: Vec::new(),
            speaker: Tool::Wrapper,
            allowed: None,
        },
        Mode::Broker => broker(broker_cfg, request.unwrap_or_default(), env),
        // Only with session containers, which never plan in-process.
        Mode::Image => {
            let mut said = Vec::new();
            say(
                &mut said,
                Tool::Wrapper,
                "the image-command mode needs SESSION_IMAGE",
            );
            Plan::Done {
                said,
                code: crate::exit::FAILURE,
                denied: None,
            }
        }
    }
}

fn broker(cfg: &crate::broker::BrokerConfig, raw: &[u8], env: SessionEnv) -> Plan {
    let shown = String::from_utf8_lossy(raw).into_owned();
    let deny = |said: Vec<u8>, reason: String| {
        let mut said = said;
        line(
            &mut said,
            &audit::render(&Event::BrokerDeny {
                request: raw,
                reason: Some(reason.clone()),
            }),
        );
        Plan::Done {
            said,
            code: crate::exit::DENIED,
            denied: Some(Decided {
                request: shown.clone(),
                rule: None,
                reason: Some(reason),
            }),
        }
    };
    let Ok(request) = std::str::from_utf8(raw) else {
        return deny(Vec::new(), crate::broker::NOT_UTF8.into());
    };
    let (notes, decision) = crate::broker::allowed_noted(cfg, request);
    let mut said = Vec::new();
    for note in notes {
        say(&mut said, Tool::Broker, note);
    }
    match decision {
        Err(crate::broker::Refusal::Denied(reason)) => deny(said, reason.to_string()),
        // The boot-compiled rules cannot be used: nothing is decided.
        Err(crate::broker::Refusal::Snapshot(e)) => {
            say(&mut said, Tool::Broker, e);
            Plan::Done {
                said,
                code: crate::exit::CONFIG,
                denied: None,
            }
        }
        Ok(crate::broker::Allowed { argv, rule, source }) => {
            line(
                &mut said,
                &audit::render(&Event::BrokerAllow { request: raw }),
            );
            Plan::Run {
                cmd: Command::argv(argv, env),
                said,
                speaker: Tool::Broker,
                allowed: Some(Decided {
                    request: request.to_owned(),
                    rule: Some((rule, source)),
                    reason: None,
                }),
            }
        }
    }
}

/// `PREFIX message` and a newline, as [`Tool::say`] writes it.
pub(crate) fn say(out: &mut Vec<u8>, tool: Tool, message: impl std::fmt::Display) {
    line(out, &format!("{} {message}", tool.prefix()));
}

fn line(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(text.as_bytes());
    out.push(b'\n');
}

/// What the wrapper writes when the command could not start, and its exit
/// code (127 for a program that is not on the PATH).
pub(crate) fn start_failed(speaker: Tool, e: &ExecError) -> (Vec<u8>, u8) {
    let mut said = Vec::new();
    say(&mut said, speaker, e);
    (said, e.exit_code())
}

/// A decided command located the way `execvp` finds it on [`SAFE_PATH`]
/// (the PATH the command gets), so it can be started by full path: one
/// `posix_spawn`, no search in the child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) program: PathBuf,
    /// `argv`, its first word as the command was written.
    pub(crate) argv: Vec<OsString>,
}

impl Target {
    /// What `execvp` runs for a file the kernel refuses as not a binary
    /// (ENOEXEC): `/bin/sh FILE ARGS...`.
    pub(crate) fn as_script(&self) -> Target {
        let mut argv: Vec<OsString> = vec!["/bin/sh".into(), self.program.clone().into()];
        argv.extend(self.argv.iter().skip(1).cloned());
        Target {
            program: PathBuf::from("/bin/sh"),
            argv,
        }
    }
}

/// Finds `cmd`'s program as `execvp` would: a name with a `/` as is;
/// otherwise the first executable regular file in a [`SAFE_PATH`]
/// directory, skipping ones that exist but cannot be executed (then
/// "permission denied" if nothing else is found), else "not found".
pub(crate) fn locate(cmd: &Command) -> Result<Target, ExecError> {
    let Some(first) = cmd.argv.first() else {
        return Err(ExecError::Other {
            program: String::new(),
            problem: "empty command".into(),
        });
    };
    let shown = || first.to_string_lossy().into_owned();
    let target = |program: PathBuf| Target {
        program,
        argv: cmd.argv.clone(),
    };
    if first.as_bytes().contains(&b'/') {
        return Ok(target(PathBuf::from(first)));
    }
    if first.is_empty() {
        return Err(ExecError::NotFound { program: shown() });
    }
    let mut denied = false;
    for dir in SAFE_PATH.split(':') {
        let candidate = Path::new(dir).join(first);
        match executable(&candidate) {
            Found::Yes => return Ok(target(candidate)),
            Found::Denied => denied = true,
            Found::No => {}
        }
    }
    if denied {
        let e = std::io::Error::from_raw_os_error(nix::libc::EACCES);
        return Err(ExecError::from_io(shown(), &e));
    }
    Err(ExecError::NotFound { program: shown() })
}

enum Found {
    Yes,
    /// There, but `execve` would refuse it with EACCES.
    Denied,
    No,
}

fn executable(path: &Path) -> Found {
    use nix::unistd::{access, AccessFlags};
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && access(path, AccessFlags::X_OK).is_ok() => Found::Yes,
        Ok(_) => Found::Denied,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Found::Denied,
        Err(_) => Found::No,
    }
}

/// The command's first word, for messages.
pub(crate) fn shown(cmd: &Command) -> String {
    cmd.argv
        .first()
        .map_or_else(String::new, |a| a.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Through the file format, so fields other code adds keep their
    /// defaults here.
    fn runtime(mode: Mode, rules: &str, prefix: &str) -> Runtime {
        serde_json::from_value(serde_json::json!({
            "user": "agent",
            "mode": mode,
            "allowed_commands": rules,
            "allowed_commands_file": "/nonexistent/bastion-test.list",
            "command_prefix": prefix,
            "command_lock": "none",
            "lock_file": "/nonexistent/lock",
            "authorized_keys_dir": "",
            "merged_keys_file": "",
            "pty": false,
        }))
        .unwrap()
    }

    fn said(p: &Plan) -> String {
        match p {
            Plan::Run { said, .. } | Plan::Done { said, .. } => {
                String::from_utf8_lossy(said).into_owned()
            }
        }
    }

    #[test]
    fn force_mode_is_sh_dash_c_whatever_the_request() {
        let rt = runtime(
            Mode::Force {
                command: "echo hi".into(),
            },
            "",
            "",
        );
        let p = plan(&rt, Some(b"rm -rf /"), SessionEnv::safe_path());
        let Plan::Run {
            cmd, said, speaker, ..
        } = p
        else {
            panic!("not run")
        };
        assert_eq!(cmd.argv, ["/bin/sh", "-c", "echo hi"]);
        assert!(said.is_empty());
        assert_eq!(speaker, Tool::Wrapper);
    }

    #[test]
    fn broker_allow_says_allow_and_runs_the_split_request() {
        let rt = runtime(Mode::Broker, "echo [a-z ]+", "");
        let p = plan(&rt, Some(b"echo a  b"), SessionEnv::safe_path());
        assert_eq!(said(&p), "[broker] ALLOW: echo a  b\n");
        let Plan::Run { cmd, .. } = p else {
            panic!("not run")
        };
        assert_eq!(cmd.argv, ["echo", "a", "b"]);
    }

    #[test]
    fn broker_denials_are_the_wrapper_s_lines_and_126() {
        let rt = runtime(Mode::Broker, "echo [a-z]+\n(a)\\1", "");
        for (request, shown) in [
            (
                &b"rm -rf /"[..],
                "[broker] DENY: rm -rf / (no rule matches)\n",
            ),
            (
                b"echo \xff",
                "[broker] DENY: echo \\xff (request is not valid UTF-8)\n",
            ),
            (b"echo a\nid", "[broker] DENY: echo a\\nid ("),
        ] {
            let p = plan(&rt, Some(request), SessionEnv::empty());
            let text = said(&p);
            assert!(text.contains(shown), "{text}");
            assert!(matches!(p, Plan::Done { code: 126, .. }), "{p:?}");
        }
        // The unusable rule is noted before the decision, as the wrapper
        // logs it (not for a request that is not UTF-8: never decided).
        let text = said(&plan(&rt, Some(b"rm"), SessionEnv::empty()));
        assert!(
            text.starts_with("[broker] skipped: rule \"(a)\\1\""),
            "{text}"
        );
        // No request at all: empty, refused without a prefix.
        let p = plan(&rt, None, SessionEnv::empty());
        assert!(matches!(p, Plan::Done { code: 126, .. }), "{p:?}");
    }

    #[test]
    fn an_unusable_rules_snapshot_runs_nothing_and_is_78() {
        let dir = std::env::temp_dir().join(format!("bastion-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let snap = dir.join("rules.snapshot");
        std::fs::write(&snap, b"not a snapshot").unwrap();
        let mut rt = runtime(Mode::Broker, "", "");
        rt.rules_snapshot = Some(snap);
        let p = plan(&rt, Some(b"echo hi"), SessionEnv::empty());
        let text = said(&p);
        assert!(text.starts_with("[broker] "), "{text}");
        assert!(!text.contains("ALLOW:"), "{text}");
        assert!(matches!(p, Plan::Done { code: 78, .. }), "{p:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The listener's configuration reads the snapshot once: later
    /// requests decide from what it read (checked each time), whatever
    /// happens to the file, and an unusable file refuses every request.
    #[test]
    fn a_preloaded_snapshot_is_read_once_and_still_fails_closed() {
        let dir = std::env::temp_dir().join(format!("bastion-plan-pre-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let snap = dir.join("rules.snapshot");
        let good = crate::broker::snapshot::compile("echo [a-z]+").unwrap();
        std::fs::write(&snap, &good).unwrap();
        let mut rt = runtime(Mode::Broker, "", "");
        rt.rules_snapshot = Some(snap.clone());
        let cfg = crate::broker::BrokerConfig::preloaded_from_runtime(&rt);
        std::fs::remove_file(&snap).unwrap();
        for _ in 0..2 {
            let p = plan_with(&rt, &cfg, Some(b"echo hi"), SessionEnv::empty());
            assert!(matches!(p, Plan::Run { .. }), "{p:?}");
            let p = plan_with(&rt, &cfg, Some(b"rm -rf /"), SessionEnv::empty());
            assert!(matches!(p, Plan::Done { code: 126, .. }), "{p:?}");
        }
        // Read damaged: nothing runs, and a repaired file is not looked at.
        std::fs::write(&snap, &good[..good.len() - 3]).unwrap();
        let cfg = crate::broker::BrokerConfig::preloaded_from_runtime(&rt);
        std::fs::write(&snap, &good).unwrap();
        for _ in 0..2 {
            let p = plan_with(&rt, &cfg, Some(b"echo hi"), SessionEnv::empty());
            assert!(matches!(p, Plan::Done { code: 78, .. }), "{p:?}");
            assert!(!said(&p).contains("ALLOW:"));
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn locate_searches_the_safe_path_like_execvp() {
        let c = Command::argv(vec!["sh".into(), "-c".into()], SessionEnv::empty());
        let t = locate(&c).unwrap();
        assert!(
            t.program.is_absolute() && t.program.ends_with("sh"),
            "{t:?}"
        );
        assert_eq!(t.argv, ["sh", "-c"]);
        let c = Command::argv(vec!["bastion-no-such-program".into()], SessionEnv::empty());
        let e = locate(&c).unwrap_err();
        assert_eq!(e.exit_code(), crate::exit::NOT_FOUND);
        let (said, code) = start_failed(Tool::Broker, &e);
        assert_eq!(code, 127);
        assert_eq!(
            String::from_utf8(said).unwrap(),
            format!("[broker] command not found: \"bastion-no-such-program\" is not on PATH {SAFE_PATH}\n")
        );
        // A slash: no search, the kernel decides at spawn time.
        let c = Command::argv(vec!["./x".into()], SessionEnv::empty());
        assert_eq!(locate(&c).unwrap().program, PathBuf::from("./x"));
        // A directory on the PATH is not a program: "permission denied"
        // only when nothing else is found.
        let c = Command::argv(vec!["..".into()], SessionEnv::empty());
        assert_eq!(locate(&c).unwrap_err().exit_code(), crate::exit::DENIED);
    }

    #[test]
    fn a_script_runs_through_sh_with_its_path() {
        let t = Target {
            program: "/usr/bin/x".into(),
            argv: vec!["x".into(), "a".into()],
        };
        let s = t.as_script();
        assert_eq!(s.program, PathBuf::from("/bin/sh"));
        assert_eq!(s.argv, ["/bin/sh", "/usr/bin/x", "a"]);
    }
}
