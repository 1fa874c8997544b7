//! The exec runner: replaces this process with the command. The lock
//! descriptor is inheritable, so after `exec` the command tree holds the
//! lock until its last process exits; nothing is left to clean up here.

use super::{Command, Runner};
use crate::lock::LockGuard;
use std::fmt;
use std::os::unix::process::CommandExt as _;
use std::process::ExitCode;

/// The exec did not happen.
#[derive(Debug)]
pub(crate) enum ExecError {
    NotFound { program: String },
    NotExecutable { program: String, problem: String },
    Other { program: String, problem: String },
}

impl ExecError {
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            ExecError::NotFound { .. } => crate::exit::NOT_FOUND,
            ExecError::NotExecutable { .. } => crate::exit::DENIED,
            ExecError::Other { .. } => crate::exit::FAILURE,
        }
    }

    pub(crate) fn from_io(program: String, e: &std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::NotFound => ExecError::NotFound { program },
            std::io::ErrorKind::PermissionDenied => ExecError::NotExecutable {
                program,
                problem: e.to_string(),
            },
            _ if e.raw_os_error() == Some(nix::libc::ENOEXEC) => ExecError::NotExecutable {
                program,
                problem: e.to_string(),
            },
            _ => ExecError::Other {
                program,
                problem: e.to_string(),
            },
        }
    }
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecError::NotFound { program } => write!(
                f,
                "command not found: \"{}\" is not on PATH {}",
                crate::audit::escape(program),
                crate::config::SAFE_PATH
            ),
            ExecError::NotExecutable { program, problem } => write!(
                f,
                "cannot execute \"{}\": {problem}",
                crate::audit::escape(program)
            ),
            ExecError::Other { program, problem } => write!(
                f,
                "cannot run \"{}\": {problem}",
                crate::audit::escape(program)
            ),
        }
    }
}

/// Runs a command by `execvp`: this process becomes the command.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ExecRunner;

impl Runner for ExecRunner {
    fn run(self, cmd: Command, lock: Option<LockGuard>) -> Result<ExitCode, ExecError> {
        let Some((program, args)) = cmd.argv.split_first() else {
            return Err(ExecError::Other {
                program: String::new(),
                problem: "empty command".into(),
            });
        };
        // std resets SIGPIPE and the signal mask before exec, so the
        // command starts clean; the lock descriptor survives (see
        // `lock::acquire`).
        let e = cmd.env.command(program).args(args).exec();
        // Only reached when exec failed: nothing runs, release the lock.
        drop(lock);
        Err(ExecError::from_io(
            program.to_string_lossy().into_owned(),
            &e,
        ))
    }
}
