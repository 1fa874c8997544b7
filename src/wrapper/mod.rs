//! `bastion-wrapper` (SPEC 5), sshd's ForceCommand and the HTTP runner:
//! takes the per-container lock, then execs FORCE_COMMAND through `/bin/sh -c`
//! or hands the request to the broker. It never gives the client's request
//! to a shell, and never lets it reach the forced command's environment.

pub(crate) mod plan;

use crate::config::{Mode, Runtime, RUNTIME_FILE};
use crate::exit::{self, Failure, Tool};
use crate::lock::{self, Acquired, LockGuard};
use crate::session::{self, ExecRunner, Runner, SessionEnv};
use clap::Parser;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
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
    exit::main(Tool::Wrapper, run)
}

fn run() -> Result<ExitCode, Failure> {
    crate::sys::fd::cloexec_inherited().map_err(Failure::descriptors)?;
    let args = exit::parse_args::<Args>()?;
    let rt = Runtime::load(&args.runtime)?;
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
            return Ok(exit::code(exit::OK));
        }
        Err(e) => return Err(Failure::os(e)),
    };
    let request = std::env::var_os("SSH_ORIGINAL_COMMAND");
    Ok(match &rt.mode {
        Mode::Force { command } => run_forced(command, guard),
        Mode::Broker => run_broker(&rt, request, guard),
    })
}

/// `exec /bin/sh -c "$FORCE_COMMAND"` with an explicit environment. Only
/// returns if the exec failed.
fn run_forced(command: &str, guard: LockGuard) -> ExitCode {
    let cmd = session::Command::shell(command, SessionEnv::from_process());
    match ExecRunner.run(cmd, Some(guard)) {
        Ok(code) => code,
        Err(e) => {
            Tool::Wrapper.say(&e);
            exit::code(e.exit_code())
        }
    }
}

/// Hands the request to the broker, which execs on allow (the lock
/// descriptor goes with it) and returns 126/127 otherwise.
fn run_broker(rt: &Runtime, request: Option<OsString>, guard: LockGuard) -> ExitCode {
    let request = match request.map(OsString::into_string) {
        None => String::new(),
        Some(Ok(s)) => s,
        Some(Err(raw)) => {
            return crate::broker::deny_bytes(raw.as_bytes(), crate::broker::NOT_UTF8.into())
        }
    };
    let cfg = crate::broker::BrokerConfig::from_runtime(rt);
    crate::broker::run(&cfg, &request, ExecRunner, Some(guard))
}
