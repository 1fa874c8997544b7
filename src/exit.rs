//! The documented exit codes of every binary, in one place so the README,
//! the tests and the code agree.

use std::process::ExitCode;

/// Success, and also "busy": another run holds the lock (SPEC 5).
pub(crate) const OK: u8 = 0;
/// An operating-system failure that is not the client's doing.
pub(crate) const FAILURE: u8 = 1;
/// Bad command line (clap's convention).
pub(crate) const USAGE: u8 = 2;
/// EX_CONFIG: the configuration is wrong; every problem was printed.
pub(crate) const CONFIG: u8 = 78;
/// The broker refused the request.
pub(crate) const DENIED: u8 = 126;
/// The allowed program does not exist on the safe PATH.
pub(crate) const NOT_FOUND: u8 = 127;

pub(crate) fn code(c: u8) -> ExitCode {
    ExitCode::from(c)
}

/// Parses the command line. `--help`/`--version` print and give `OK`; a
/// usage error prints clap's message and gives `USAGE`.
pub(crate) fn parse_args<T: clap::Parser>() -> Result<T, ExitCode> {
    T::try_parse().map_err(|e| {
        let _ = e.print();
        code(if e.use_stderr() { USAGE } else { OK })
    })
}
