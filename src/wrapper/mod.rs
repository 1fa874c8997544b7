//! `bastion-wrapper` (SPEC 5, 11), sshd's ForceCommand and the HTTP
//! runner: asks the monitor who the session is, takes the per-container
//! lock, then runs FORCE_COMMAND through `/bin/sh -c` or the broker's
//! allowed argv as its child (see `runner`), reports the decision and the
//! end to the monitor, and exits with the command's status. It never gives
//! the client's request to a shell, and never lets it reach the forced
//! command's environment.

mod runner;

use crate::config::{Mode, Runtime, RUNTIME_FILE};
use crate::exit;
use crate::lock::{self, Acquired};
use crate::monitor::protocol::{Client, Msg};
use clap::Parser;
use runner::Status;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

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

/// The session as the monitor knows it (or, without a monitor, a fresh
/// id and identity `unknown`).
struct Session {
    id: String,
    identity: String,
    monitor: Option<Client>,
}

impl Session {
    fn report(&mut self, m: &Msg) {
        if let Some(c) = &mut self.monitor {
            // A monitor that went away sees the connection close and logs
            // the session as lost; nothing more to do here.
            let _ = c.send(m);
        }
    }

    /// Reports the end and waits for the monitor to have logged it.
    fn end(&mut self, exit: String) {
        if let Some(c) = &mut self.monitor {
            let _ = c.ask(&Msg::End { exit });
        }
    }
}

pub fn main() -> ExitCode {
    crate::sys::fd::cloexec_inherited();
    let args = match exit::parse_args::<Args>() {
        Ok(a) => a,
        Err(code) => return code,
    };
    // Another process of the session user must not trace it or read its
    // memory: it holds the session's monitor connection.
    if let Err(e) = crate::sys::privilege::set_non_dumpable() {
        eprintln!("bastion-wrapper: {e}");
        return exit::code(exit::FAILURE);
    }
    let rt = match Runtime::load(&args.runtime) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bastion-wrapper: {e}");
            return exit::code(exit::FAILURE);
        }
    };
    let request = std::env::var_os("SSH_ORIGINAL_COMMAND");
    let mut session = match open_session(&rt, request.as_ref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bastion-wrapper: {e}");
            return exit::code(exit::FAILURE);
        }
    };
    let guard = match lock::acquire(&rt.lock_file, rt.command_lock) {
        Ok(Acquired::Held(guard)) => guard,
        Ok(Acquired::Busy) => {
            session.report(&Msg::Busy);
            println!("{BUSY_LINE}");
            session.end("0".into());
            return exit::code(exit::OK);
        }
        Err(e) => {
            eprintln!("bastion-wrapper: {e}");
            session.end(exit::FAILURE.to_string());
            return exit::code(exit::FAILURE);
        }
    };
    let outcome = match &rt.mode {
        Mode::Force { command } => {
            let mut cmd = command_for(&session, "/bin/sh");
            cmd.arg("-c").arg(command);
            start(cmd, "/bin/sh", false)
        }
        Mode::Broker => broker(&rt, request, &mut session),
    };
    // The command inherited the lock descriptor (see `lock::acquire`);
    // this copy goes now, the command's when its last process exits.
    drop(guard);
    match outcome {
        Ok(status) => {
            session.end(status.audit());
            match status {
                Status::Code(c) => exit::code(u8::try_from(c).unwrap_or(exit::FAILURE)),
                Status::Signal(n) => {
                    crate::sys::child::die_of(n);
                    exit::code(128u8.saturating_add(n as u8))
                }
            }
        }
        Err(code) => {
            session.end(code.to_string());
            exit::code(code)
        }
    }
}

/// Asks the monitor for the session id and identity. Without a monitor
/// (none in the runtime file: outside the image or `--prepare-only`) the
/// session still runs, as `unknown`; with one that cannot be reached or
/// refuses, nothing runs (fail closed).
fn open_session(rt: &Runtime, request: Option<&OsString>) -> Result<Session, String> {
    let tty = crate::sys::child::owns_foreground(0) || std::env::var_os("SSH_TTY").is_some();
    let Some(path) = &rt.monitor_socket else {
        return Ok(Session {
            id: random_id(),
            identity: "unknown".into(),
            monitor: None,
        });
    };
    let refused = |e: String| {
        format!(
            "the bastion's monitor at {} cannot log this session ({e}); nothing was run",
            path.display()
        )
    };
    let mut client = Client::connect(path).map_err(|e| refused(e.to_string()))?;
    let env = |name: &str| std::env::var(name).ok();
    let reply = client
        .ask(&Msg::Start {
            mode: match rt.mode {
                Mode::Force { .. } => "force".into(),
                Mode::Broker => "broker".into(),
            },
            tty,
            request: match rt.mode {
                Mode::Broker => Some(
                    request
                        .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
                        .unwrap_or_default(),
                ),
                Mode::Force { .. } => None,
            },
            ssh_connection: env("SSH_CONNECTION"),
            http_who: env("BASTION_HTTP_WHO"),
            http_client: env("BASTION_HTTP_CLIENT"),
        })
        .map_err(|e| refused(e.to_string()))?;
    match (reply.session, reply.identity, reply.error) {
        (Some(id), Some(identity), None) => Ok(Session {
            id,
            identity,
            monitor: Some(client),
        }),
        (_, _, e) => Err(refused(e.unwrap_or_else(|| "no session id".into()))),
    }
}

/// The command's explicit environment (SPEC 4's list) plus who the
/// session is.
fn command_for(session: &Session, program: &str) -> Command {
    let mut cmd = crate::config::session_command(program);
    cmd.env("BASTION_IDENTITY", &session.identity)
        .env("BASTION_SESSION_ID", &session.id);
    cmd
}

/// Runs `cmd` under the parent runner. An HTTP command stays in the
/// wrapper's process group, which the listener kills when its client is
/// gone; an SSH command gets a group of its own. Errors are exit codes,
/// the message already written.
fn start(cmd: Command, program: &str, broker: bool) -> Result<Status, u8> {
    let own_group = std::env::var_os("BASTION_HTTP_CLIENT").is_none();
    runner::run(cmd, own_group).map_err(|e| {
        if broker {
            let (msg, code) = crate::broker::spawn_failure(program, &e);
            eprintln!("{msg}");
            code
        } else {
            eprintln!("bastion-wrapper: cannot run {program}: {e}");
            if e.kind() == std::io::ErrorKind::NotFound {
                exit::NOT_FOUND
            } else {
                exit::FAILURE
            }
        }
    })
}

/// The broker's decision, reported; on allow, the argv run without a shell.
fn broker(rt: &Runtime, request: Option<OsString>, session: &mut Session) -> Result<Status, u8> {
    let request = match request.map(OsString::into_string) {
        None => String::new(),
        Some(Ok(s)) => s,
        Some(Err(raw)) => {
            // grep in a UTF-8 locale matches no rule against invalid UTF-8.
            let shown = crate::audit::escape_bytes(raw.as_bytes());
            eprintln!("[broker] DENY: {shown}");
            session.report(&Msg::Decision {
                allow: false,
                request: String::from_utf8_lossy(raw.as_bytes()).into_owned(),
                rule: None,
                source: None,
                reason: Some("not valid UTF-8".into()),
            });
            return Err(exit::DENIED);
        }
    };
    let cfg = crate::broker::BrokerConfig::from_runtime(rt);
    match crate::broker::judge(&cfg, &request) {
        crate::broker::Verdict::Deny { reason } => {
            session.report(&Msg::Decision {
                allow: false,
                request,
                rule: None,
                source: None,
                reason: Some(reason),
            });
            Err(exit::DENIED)
        }
        crate::broker::Verdict::Allow { argv, rule, source } => {
            session.report(&Msg::Decision {
                allow: true,
                request,
                rule: Some(rule),
                source: Some(source),
                reason: None,
            });
            let (program, args) = argv
                .split_first()
                .expect("judge never allows an empty argv");
            let mut cmd = command_for(session, program);
            cmd.args(args);
            start(cmd, program, true)
        }
    }
}

/// 16 lowercase hex characters from the kernel's random source (a
/// session without a monitor still gets an id of the same form).
fn random_id() -> String {
    let mut b = [0u8; 8];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
    b.iter().map(|x| format!("{x:02x}")).collect()
}
