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

    /// Session containers: the `SESSION_MAX` slot the HTTP listener already
    /// holds for this request, passed as this descriptor.
    #[arg(long, value_name = "FD", hide = true)]
    session_slot_fd: Option<i32>,
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
    if let Some(session) = &rt.session {
        let code = run_session(&rt, session, request, args.session_slot_fd);
        drop(guard);
        return code;
    }
    match &rt.mode {
        Mode::Force { command } => exec_forced(command, guard),
        Mode::Broker => run_broker(&rt, request, guard),
        Mode::Image => {
            eprintln!("bastion-wrapper: the image-command mode needs SESSION_IMAGE");
            exit::code(exit::FAILURE)
        }
    }
}

/// SPEC 12: the session runs in a fresh container; this process stays its
/// parent runner until it ends.
fn run_session(
    rt: &Runtime,
    session: &crate::container::SessionRuntime,
    request: Option<OsString>,
    slot_fd: Option<i32>,
) -> ExitCode {
    use crate::container::plan::{Payload, SessionId};
    let payload = match &rt.mode {
        Mode::Force { command } => Payload::Shell(command.clone()),
        Mode::Image => Payload::ImageDefault,
        Mode::Broker => match decode_request(request) {
            Err(code) => return code,
            Ok(request) => {
                match crate::broker::allowed_argv(
                    &crate::broker::BrokerConfig::from_runtime(rt),
                    &request,
                ) {
                    Ok(argv) => Payload::Argv(argv),
                    Err(code) => return code,
                }
            }
        },
    };
    let id = match crate::container::new_session_id() {
        Ok(id) => id,
        Err(e) => {
            eprintln!("[session] cannot start: no session id: {e}");
            return exit::code(crate::container::runner::CANNOT_START);
        }
    };
    crate::container::runner::run(crate::container::runner::SessionRun {
        rt: session,
        session: SessionId {
            id,
            identity: "unknown".to_owned(),
        },
        payload,
        tty: nix::unistd::isatty(std::io::stdin()).unwrap_or(false),
        monitor: None,
        slot_fd,
    })
}

/// The request as UTF-8, or the broker's refusal.
fn decode_request(request: Option<OsString>) -> Result<String, ExitCode> {
    match request.map(OsString::into_string) {
        None => Ok(String::new()),
        Some(Ok(s)) => Ok(s),
        Some(Err(raw)) => {
            // grep in a UTF-8 locale matches no rule against invalid UTF-8.
            eprintln!(
                "[broker] DENY: {}",
                crate::audit::escape_bytes(raw.as_bytes())
            );
            Err(exit::code(exit::DENIED))
        }
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
    let request = match decode_request(request) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let code = crate::broker::run(&crate::broker::BrokerConfig::from_runtime(rt), &request);
    drop(guard);
    code
}
