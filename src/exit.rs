//! The documented exit codes of every binary, the one `main` shape and the
//! message prefixes, in one place so the README, the tests and the code
//! agree. Errors' `Display`s never carry a tool's prefix; [`main`] adds it.

use crate::config::{ConfigError, RuntimeError};
pub(crate) use crate::tool::Tool;
use std::fmt;
use std::process::ExitCode;

/// Success, and also "busy": another run holds the lock (SPEC 5).
pub(crate) const OK: u8 = 0;
/// An operating-system failure that is not the client's doing.
pub(crate) const FAILURE: u8 = 1;
/// Bad command line (clap's convention).
pub(crate) const USAGE: u8 = 2;
/// EX_CONFIG: the configuration is wrong; every problem was printed.
pub(crate) const CONFIG: u8 = 78;
/// The runtime file is missing or corrupt: the same code in every tool.
pub(crate) const RUNTIME: u8 = CONFIG;
/// The broker refused the request.
pub(crate) const DENIED: u8 = 126;
/// The allowed program does not exist on the safe PATH.
pub(crate) const NOT_FOUND: u8 = 127;

pub(crate) fn code(c: u8) -> ExitCode {
    ExitCode::from(c)
}

/// Why a tool stops early: printed once by [`main`] and mapped to its
/// documented exit code.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Already printed (clap's help, version or usage error): this code.
    Printed(u8),
    /// The runtime file is missing or corrupt ([`RUNTIME`]).
    Runtime(RuntimeError),
    /// Configuration problems, all of them, one line each ([`CONFIG`]).
    /// They read `config error: ...` and carry no tool prefix.
    Config(Vec<ConfigError>),
    /// Anything else, with its code (each line gets the prefix).
    Other { code: u8, message: String },
}

impl Failure {
    pub(crate) fn os(message: impl fmt::Display) -> Self {
        Self::Other {
            code: FAILURE,
            message: message.to_string(),
        }
    }

    /// The descriptors could not all be made close-on-exec: run nothing.
    pub(crate) fn descriptors(e: std::io::Error) -> Self {
        Self::os(format!(
            "cannot mark inherited descriptors close-on-exec ({e}); refusing to run anything"
        ))
    }

    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Failure::Printed(c) => *c,
            Failure::Runtime(_) => RUNTIME,
            Failure::Config(_) => CONFIG,
            Failure::Other { code, .. } => *code,
        }
    }

    fn print(&self, tool: Tool) {
        match self {
            Failure::Printed(_) => {}
            Failure::Runtime(e) => tool.say(e),
            Failure::Config(errors) => {
                for e in errors {
                    eprintln!("{e}");
                }
            }
            Failure::Other { message, .. } => {
                for line in message.lines() {
                    tool.say(line);
                }
            }
        }
    }
}

impl From<RuntimeError> for Failure {
    fn from(e: RuntimeError) -> Self {
        Failure::Runtime(e)
    }
}

/// Every binary's `main`: run, and on failure print the error once with the
/// tool's prefix and exit with its code. Never panics on input.
pub(crate) fn main(tool: Tool, run: impl FnOnce() -> Result<ExitCode, Failure>) -> ExitCode {
    match run() {
        Ok(c) => c,
        Err(e) => {
            e.print(tool);
            code(e.exit_code())
        }
    }
}

/// Parses the command line. `--help`/`--version` print and give `OK`; a
/// usage error prints clap's message and gives `USAGE`.
pub(crate) fn parse_args<T: clap::Parser>() -> Result<T, Failure> {
    T::try_parse().map_err(|e| {
        let _ = e.print();
        Failure::Printed(if e.use_stderr() { USAGE } else { OK })
    })
}
