//! `bastion-wrapper` (SPEC 5), sshd's ForceCommand and the HTTP runner:
//! takes the per-container lock, then runs FORCE_COMMAND or the broker.

use std::process::ExitCode;

pub fn main() -> ExitCode {
    crate::exit::code(crate::exit::FAILURE)
}
