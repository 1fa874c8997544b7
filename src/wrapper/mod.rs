//! `bastion-wrapper` (SPEC 5), sshd's ForceCommand and the HTTP runner:
//! takes the per-container lock, then execs FORCE_COMMAND through `/bin/sh -c`
//! or hands the request to the broker. It never gives the client's request
//! to a shell, and never lets it reach the forced command's environment.

use crate::config::{Mode, Runtime, RUNTIME_FILE};
use crate::exit;
use crate::lock::{self, Acquired, LockGuard};
use clap::Parser;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;

/// What a client sees when another run holds the lock (stdout, exit 0): the
/// shell version's exact line, so retrying clients keep working.
pub(crate) const BUSY_LINE: &str = "busy: another run is in progress";

#[derive(Parser, Debug)]
#[command(
    name = "bastion-wrapper",
    version,
    about = "Runs one bastion command under the per-container lock: FORCE_COMMAND, or the \
             broker for the request in $SSH_ORIGINAL_COMMAND"
)]
struct Args {
    /// Runtime file written by bastion-entrypoint.
    #[arg(long, value_name = "PATH", default_value = RUNTIME_FILE)]
    runtime: PathBuf,
}

pub fn main() -> ExitCode {
    crate::sys::fd::cloexec_inherited();
    let args = match exit::parse_args::<Args>() {
        Ok(a) => a,
        Err(code) => return code,
    };
    let rt = match Runtime::load(&args.runtime) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bastion-wrapper: {e}");
            return exit::code(exit::FAILURE);
        }
    };
    // The upstream agent (SPEC 13): only the bastion's own socket, never
    // one a client could have named.
    match &rt.agent_socket {
        Some(sock) => std::env::set_var("SSH_AUTH_SOCK", sock),
        None => std::env::remove_var("SSH_AUTH_SOCK"),
    }
    let guard = match lock::acquire(&rt.lock_file, rt.command_lock) {
        Ok(Acquired::Held(guard)) => guard,
        Ok(Acquired::Busy) => {
            println!("{BUSY_LINE}");
            return exit::code(exit::OK);
        }
        Err(e) => {
            eprintln!("bastion-wrapper: {e}");
            return exit::code(exit::FAILURE);
        }
    };
    let request = std::env::var_os("SSH_ORIGINAL_COMMAND");
    match &rt.mode {
        Mode::Force { command } => exec_forced(command, guard),
        Mode::Broker => run_broker(&rt, request, guard),
    }
}

/// `exec /bin/sh -c "$FORCE_COMMAND"` with an explicit environment. Only
/// returns if the exec failed.
fn exec_forced(command: &str, guard: LockGuard) -> ExitCode {
    let mut cmd = crate::config::session_command("/bin/sh");
    cmd.arg("-c").arg(command);
    // The lock descriptor is inheritable (see `lock::acquire`); std resets
    // SIGPIPE and the signal mask before exec, so the shell starts clean.
    let err = cmd.exec();
    drop(guard);
    eprintln!("bastion-wrapper: cannot run /bin/sh: {err}");
    exit::code(if err.kind() == std::io::ErrorKind::NotFound {
        exit::NOT_FOUND
    } else {
        exit::FAILURE
    })
}

/// Hands the request to the broker, which execs on allow (inheriting the
/// lock descriptor, so it must not close inherited descriptors) and returns
/// 126/127 otherwise.
fn run_broker(rt: &Runtime, request: Option<OsString>, guard: LockGuard) -> ExitCode {
    let request = match request.map(OsString::into_string) {
        None => String::new(),
        Some(Ok(s)) => s,
        Some(Err(raw)) => {
            // grep in a UTF-8 locale matches no rule against invalid UTF-8.
            eprintln!(
                "[broker] DENY: {}",
                crate::audit::escape_bytes(raw.as_bytes())
            );
            return exit::code(exit::DENIED);
        }
    };
    let code = crate::broker::run(&crate::broker::BrokerConfig::from_runtime(rt), &request);
    drop(guard);
    code
}
