//! The broker (SPEC 4): anchored allowlist decision over POSIX ERE rules,
//! then a shell-free exec. It must never run anything a rule does not allow,
//! and never hand a byte of the request to a shell.

use crate::config::{ConfigError, Runtime};
use std::path::PathBuf;
use std::process::ExitCode;

/// Where the rules and the prefix come from: the runtime file inside the
/// container, or the environment outside it.
#[derive(Debug, Clone)]
pub(crate) struct BrokerConfig {
    pub(crate) allowed_commands: String,
    pub(crate) allowed_commands_file: PathBuf,
    pub(crate) command_prefix: String,
}

impl BrokerConfig {
    pub(crate) fn from_runtime(rt: &Runtime) -> Self {
        Self {
            allowed_commands: rt.allowed_commands.clone(),
            allowed_commands_file: rt.allowed_commands_file.clone(),
            command_prefix: rt.command_prefix.clone(),
        }
    }
}

/// Decides and, when allowed, execs (does not return). Otherwise returns
/// 126 (denied) or 127 (program not found) after the audit line.
pub(crate) fn run(cfg: &BrokerConfig, request: &str) -> ExitCode {
    let _ = (cfg, request);
    eprintln!("[broker] DENY: not implemented");
    crate::exit::code(crate::exit::DENIED)
}

/// Boot-time check of `ALLOWED_COMMANDS` and `COMMAND_PREFIX`: one error per
/// bad rule, naming the rule and its line.
pub(crate) fn validate_boot(allowed_commands: &str, command_prefix: &str) -> Vec<ConfigError> {
    let _ = (allowed_commands, command_prefix);
    Vec::new()
}

pub fn main() -> ExitCode {
    crate::exit::code(crate::exit::DENIED)
}
