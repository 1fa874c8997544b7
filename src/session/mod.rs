//! How a session command is run, once decided: its environment
//! ([`SessionEnv`], one value for every child) and the runner chosen by
//! the mode. It never decides what may run (the broker does) and never
//! hands the client's request to a shell: every runner takes an argv.
//!
//! Runners:
//! * [`ExecRunner`] replaces the process (`/bin/sh -c FORCE_COMMAND`, or
//!   the broker's allowed argv).
//! * [`ParentRunner`] spawns the command instead, stays its parent,
//!   forwards signals, waits, ends the command's group when the client is
//!   gone, and reports the status (the wrapper's runner). The lock
//!   descriptor is inherited by the child, so the tree holds the lock.
//! * The HTTP listener starts the command itself, as the wrapper would
//!   have (`wrapper::plan`: the same decision and lines; [`report`]: the
//!   session's start, decision and end, to the monitor).

mod env;
mod exec;
mod parent;
pub(crate) mod protocol;
pub(crate) mod report;

pub(crate) use env::SessionEnv;
pub(crate) use exec::{ExecError, ExecRunner};
pub(crate) use parent::{ParentRunner, Status};

use crate::lock::LockGuard;
use std::ffi::OsString;
use std::process::ExitCode;

/// One command to run: an argv (never a string for a shell, except
/// FORCE_COMMAND as `sh -c`'s argument) and its whole environment.
#[derive(Debug, Clone)]
pub(crate) struct Command {
    pub(crate) argv: Vec<OsString>,
    pub(crate) env: SessionEnv,
}

impl Command {
    /// `/bin/sh -c FORCE_COMMAND`: the one shell command, by contract.
    pub(crate) fn shell(force_command: &str, env: SessionEnv) -> Self {
        Self {
            argv: vec!["/bin/sh".into(), "-c".into(), force_command.into()],
            env,
        }
    }

    /// No argv: a session container runs its image's own command (SPEC 12);
    /// only a container runner accepts it.
    pub(crate) fn image_default(env: SessionEnv) -> Self {
        Self {
            argv: Vec::new(),
            env,
        }
    }

    /// An argv the broker allowed, run as is.
    pub(crate) fn argv(argv: Vec<String>, env: SessionEnv) -> Self {
        Self {
            argv: argv.into_iter().map(OsString::from).collect(),
            env,
        }
    }
}

/// Runs one decided command. `lock` is the held command lock, if any: the
/// runner keeps it held until the last process of the command tree exits.
/// `Ok` is this process's exit code (a parent runner returns the child's);
/// `Err` means the command did not start.
pub(crate) trait Runner {
    fn run(self, cmd: Command, lock: Option<LockGuard>) -> Result<ExitCode, ExecError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_is_sh_dash_c_with_the_whole_command_as_one_argument() {
        let c = Command::shell("echo a; echo b", SessionEnv::empty());
        assert_eq!(c.argv, ["/bin/sh", "-c", "echo a; echo b"]);
    }

    #[test]
    fn argv_is_kept_word_for_word() {
        let c = Command::argv(vec!["ls".into(), "$(x)".into()], SessionEnv::empty());
        assert_eq!(c.argv, ["ls", "$(x)"]);
    }

    #[test]
    fn a_failed_exec_reports_not_found() {
        let c = Command::argv(
            vec!["/nonexistent/bastion-test-program".into()],
            SessionEnv::safe_path(),
        );
        let e = ExecRunner.run(c, None).unwrap_err();
        assert_eq!(e.exit_code(), crate::exit::NOT_FOUND);
    }
}
