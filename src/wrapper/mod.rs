//! `bastion-wrapper` (SPEC 5, 11), sshd's ForceCommand and the HTTP
//! runner: asks the monitor who the session is, takes the per-container
//! lock, then runs FORCE_COMMAND through `/bin/sh -c` or the broker's
//! allowed argv as its child (`session::ParentRunner`), reports the
//! decision and the end to the monitor, and exits with the command's
//! status. It never gives the client's request to a shell, and never lets
//! it reach the forced command's environment.

use crate::config::{Mode, Runtime, RUNTIME_FILE};
use crate::container::runner::ContainerRunner;
use crate::exit::{self, Failure, Tool};
use crate::lock::{self, Acquired, LockGuard};
use crate::monitor::protocol::{Client, Msg};
use crate::session::{self, ParentRunner, Runner, SessionEnv, Status};
use clap::Parser;
use std::cell::RefCell;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

/// What a client sees when another run holds the lock (stdout, exit 0).
pub(crate) use crate::lock::BUSY_LINE;

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

    /// Reports the end and waits until the monitor has logged it.
    /// Registers a session container (see `container::watch`): the
    /// monitor removes it if this connection drops before the end.
    fn register(&mut self, name: &str) -> Result<(), String> {
        let Some(c) = &mut self.monitor else {
            return Ok(());
        };
        let reply = c
            .ask(&Msg::Register {
                container: name.to_owned(),
            })
            .map_err(|e| format!("the monitor cannot watch {name}: {e}"))?;
        match reply.error {
            None => Ok(()),
            Some(e) => Err(format!("the monitor refused to watch {name}: {e}")),
        }
    }

    fn end(&mut self, exit: String) {
        if let Some(c) = &mut self.monitor {
            let _ = c.ask(&Msg::End { exit });
        }
    }

    /// The command's environment: SPEC 4's list plus who the session is.
    fn env(&self) -> SessionEnv {
        SessionEnv::from_process()
            .with("BASTION_IDENTITY", &self.identity)
            .with("BASTION_SESSION_ID", &self.id)
    }
}

pub fn main() -> ExitCode {
    exit::main(Tool::Wrapper, run)
}

fn run() -> Result<ExitCode, Failure> {
    crate::sys::fd::cloexec_inherited().map_err(Failure::descriptors)?;
    let args = exit::parse_args::<Args>()?;
    // Another process of the session user must not trace it or read its
    // memory: it holds the session's monitor connection.
    crate::sys::privilege::set_non_dumpable().map_err(Failure::os)?;
    let rt = Runtime::load(&args.runtime)?;
    // The upstream agent (SPEC 13): only the bastion's own socket, never
    // one a client could have named.
    match &rt.agent_socket {
        Some(sock) => std::env::set_var("SSH_AUTH_SOCK", sock),
        None => std::env::remove_var("SSH_AUTH_SOCK"),
    }
    let request = std::env::var_os("SSH_ORIGINAL_COMMAND");
    let mut session = open_session(&rt, request.as_ref()).map_err(Failure::os)?;
    let guard = match lock::acquire(&rt.lock_file, rt.command_lock) {
        Ok(Acquired::Held(guard)) => guard,
        Ok(Acquired::Busy) => {
            session.report(&Msg::Busy);
            println!("{BUSY_LINE}");
            session.end("0".into());
            return Ok(exit::code(exit::OK));
        }
        Err(e) => {
            session.end(exit::FAILURE.to_string());
            return Err(Failure::os(e));
        }
    };
    let session = RefCell::new(session);
    let Some(containers) = &rt.session else {
        return Ok(match &rt.mode {
            Mode::Force { command } => {
                let cmd = session::Command::shell(command, session.borrow().env());
                start(&session, cmd, guard, Tool::Wrapper)
            }
            Mode::Broker => run_broker(&rt, request, guard, &session, None),
            Mode::Image => {
                Tool::Wrapper.say("the image-command mode needs SESSION_IMAGE");
                session.borrow_mut().end(exit::FAILURE.to_string());
                exit::code(exit::FAILURE)
            }
        });
    };
    // SPEC 12: the command runs in a fresh container; this process stays
    // its parent runner until the container is gone.
    let slot_fd = args.session_slot_fd;
    let runner = || container_runner(containers, slot_fd, &session);
    let env = session.borrow().env();
    Ok(match &rt.mode {
        Mode::Force { command } => finish(
            &session,
            runner().run(session::Command::shell(command, env), Some(guard)),
        ),
        Mode::Broker => run_broker(&rt, request, guard, &session, Some(&runner)),
        Mode::Image => finish(
            &session,
            runner().run(session::Command::image_default(env), Some(guard)),
        ),
    })
}

/// A session container runner on this session's monitor connection.
fn container_runner<'a>(
    containers: &'a crate::container::SessionRuntime,
    slot_fd: Option<i32>,
    session: &'a RefCell<Session>,
) -> ContainerRunner<'a> {
    let (id, identity) = {
        let s = session.borrow();
        (s.id.clone(), s.identity.clone())
    };
    let runner = ContainerRunner::new(containers, slot_fd).with_session(id, identity);
    if session.borrow().monitor.is_none() {
        return runner;
    }
    runner.with_monitor(
        Box::new(|name: &str| session.borrow_mut().register(name)),
        Box::new(|code: u8| session.borrow_mut().end(code.to_string())),
    )
}

/// A container runner's result (it reports its own end).
fn finish(session: &RefCell<Session>, r: Result<ExitCode, session::ExecError>) -> ExitCode {
    match r {
        Ok(code) => code,
        Err(e) => {
            Tool::Wrapper.say(&e);
            session.borrow_mut().end(e.exit_code().to_string());
            exit::code(e.exit_code())
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
            id: random_id()?,
            identity: "unknown".into(),
            monitor: None,
        });
    };
    let refused = |e: String| {
        format!(
            "the bastion's monitor at {} cannot log this session ({e}); nothing was run",
            crate::audit::escape_path(path)
        )
    };
    let mut client = Client::connect(path).map_err(|e| refused(e.to_string()))?;
    let env = |name: &str| std::env::var(name).ok();
    let reply = client
        .ask(&Msg::Start {
            mode: match rt.mode {
                Mode::Force { .. } => "force".into(),
                Mode::Broker => "broker".into(),
                Mode::Image => "image".into(),
            },
            tty,
            request: match rt.mode {
                Mode::Broker => Some(
                    request
                        .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
                        .unwrap_or_default(),
                ),
                Mode::Force { .. } | Mode::Image => None,
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

/// Runs `cmd` under the parent runner and reports its end. An HTTP
/// command stays in the wrapper's process group, which the listener
/// signals when its client is gone; an SSH command gets a group of its own.
fn start(
    session: &RefCell<Session>,
    cmd: session::Command,
    guard: LockGuard,
    tool: Tool,
) -> ExitCode {
    let runner = ParentRunner {
        own_group: std::env::var_os("BASTION_HTTP_CLIENT").is_none(),
        ended: |s: Status| session.borrow_mut().end(s.audit()),
    };
    match runner.run(cmd, Some(guard)) {
        Ok(code) => code,
        Err(e) => {
            tool.say(&e);
            session.borrow_mut().end(e.exit_code().to_string());
            exit::code(e.exit_code())
        }
    }
}

/// The broker's decision, reported; on allow, the argv run without a shell.
fn run_broker<'a>(
    rt: &Runtime,
    request: Option<OsString>,
    guard: LockGuard,
    session: &'a RefCell<Session>,
    containers: Option<&dyn Fn() -> ContainerRunner<'a>>,
) -> ExitCode {
    let deny = |request: &[u8], reason: String| {
        let mut s = session.borrow_mut();
        s.report(&Msg::Decision {
            allow: false,
            request: String::from_utf8_lossy(request).into_owned(),
            rule: None,
            source: None,
            reason: Some(reason),
        });
        s.end(exit::DENIED.to_string());
    };
    let request = match request.map(OsString::into_string) {
        None => String::new(),
        Some(Ok(s)) => s,
        Some(Err(raw)) => {
            let code = crate::broker::deny_bytes(raw.as_bytes(), crate::broker::NOT_UTF8.into());
            deny(raw.as_bytes(), crate::broker::NOT_UTF8.into());
            return code;
        }
    };
    let cfg = crate::broker::BrokerConfig::from_runtime(rt);
    match crate::broker::judge(&cfg, &request) {
        crate::broker::Verdict::Deny { reason } => {
            deny(request.as_bytes(), reason);
            exit::code(exit::DENIED)
        }
        crate::broker::Verdict::Unusable => {
            session.borrow_mut().end(exit::CONFIG.to_string());
            exit::code(exit::CONFIG)
        }
        crate::broker::Verdict::Allow { argv, rule, source } => {
            session.borrow_mut().report(&Msg::Decision {
                allow: true,
                request,
                rule: Some(rule),
                source: Some(source),
                reason: None,
            });
            let cmd = session::Command::argv(argv, session.borrow().env());
            match containers {
                Some(runner) => finish(session, runner().run(cmd, Some(guard))),
                None => start(session, cmd, guard, Tool::Broker),
            }
        }
    }
}

/// 16 lowercase hex characters from the kernel's random source (a
/// session without a monitor still gets an id of the same form).
fn random_id() -> Result<String, String> {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .map_err(|e| format!("no random session id: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}
