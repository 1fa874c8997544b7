//! The HTTP listener (SPEC 7): authenticates, runs the wrapper for
//! `/cgi-bin/run`, streams its output. It runs as the session user and its
//! credentials never reach a file, an environment or a readable /proc entry.

use crate::config::ConfigError;
use std::path::Path;
use std::process::{Child, ExitCode};

/// The configured HTTP credentials (Basic wins over Bearer). Opaque: never
/// printed, never serialized into the runtime file.
pub(crate) struct Credentials {
    _private: (),
}

/// Reads `HTTP_BASIC_AUTH`, `HTTP_TOKEN` and their `_FILE` variants.
/// `Ok(None)`: HTTP is off.
pub(crate) fn credentials_from_env() -> Result<Option<Credentials>, Vec<ConfigError>> {
    Ok(None)
}

/// Starts `bastion-cgi` (the binary at `exe`) for the entrypoint: as root, it
/// binds `port`, reads `creds` from a pipe, then drops to the session user.
pub(crate) fn spawn_listener(
    exe: &Path,
    runtime_file: &Path,
    port: u16,
    creds: Credentials,
) -> std::io::Result<Child> {
    let _ = (exe, runtime_file, port, creds);
    Err(std::io::Error::other("HTTP listener not implemented"))
}

pub fn main() -> ExitCode {
    crate::exit::code(crate::exit::FAILURE)
}
