//! The parent runner: the wrapper starts the command as its child instead
//! of becoming it, so it outlives the command to report how it ended. It
//! forwards the signals it is sent, waits, and hands back the status for
//! the wrapper to exit with (or die of). When the client is gone (SIGHUP,
//! or the peer of its stdout/stderr closed) the command's process group
//! gets SIGTERM, then SIGKILL after a short grace, so nothing of it is
//! left holding the lock.

use super::{Command as SessionCommand, ExecError, Runner};
use crate::lock::LockGuard;
use crate::sys::child;
use nix::sys::signal::Signal;
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

/// Between SIGTERM and SIGKILL when the client is gone.
const GRACE: Duration = Duration::from_secs(2);

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Code(i32),
    Signal(i32),
}

impl Status {
    /// The audit form: the status, or `signal:N`.
    pub(crate) fn audit(self) -> String {
        match self {
            Status::Code(c) => c.to_string(),
            Status::Signal(n) => format!("signal:{n}"),
        }
    }
}

/// The signals the runner takes as data. The terminal's job-control
/// signals are only blocked (the runner is never the foreground group of
/// a terminal while the command runs).
const TAKEN: [Signal; 10] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
    Signal::SIGCHLD,
    Signal::SIGTTOU,
    Signal::SIGTTIN,
];

impl Status {
    /// Exits like the command: its code, or death by the same signal (core
    /// dumps off), so sshd reports the same exit-status or exit-signal.
    pub(crate) fn exit(self) -> ExitCode {
        match self {
            Status::Code(c) => crate::exit::code(u8::try_from(c).unwrap_or(crate::exit::FAILURE)),
            Status::Signal(n) => {
                child::die_of(n);
                crate::exit::code(128u8.saturating_add(n as u8))
            }
        }
    }
}

/// The parent runner: spawns the command, stays its parent, and calls
/// `ended` with its status before returning the exit code to die with.
/// With `own_group` (SSH) the command leads a process group of its own,
/// the one a vanished client's teardown signals; without (HTTP) it stays
/// in the wrapper's group, which the listener signals itself.
pub(crate) struct ParentRunner<F: FnOnce(Status)> {
    pub(crate) own_group: bool,
    pub(crate) ended: F,
}

impl<F: FnOnce(Status)> Runner for ParentRunner<F> {
    fn run(self, cmd: SessionCommand, lock: Option<LockGuard>) -> Result<ExitCode, ExecError> {
        let Some((program, args)) = cmd.argv.split_first() else {
            return Err(ExecError::Other {
                program: String::new(),
                problem: "empty command".into(),
            });
        };
        let mut c = cmd.env.command(program);
        c.args(args);
        let status = run(c, self.own_group)
            .map_err(|e| ExecError::from_io(program.to_string_lossy().into_owned(), &e));
        // The command inherited the lock descriptor (see `lock::acquire`):
        // the tree keeps it held; this copy goes now.
        drop(lock);
        let status = status?;
        (self.ended)(status);
        Ok(status.exit())
    }
}

/// Spawns `cmd` (in a process group of its own with `own_group`, holding
/// the terminal's foreground when the runner held it) and waits for it.
/// Errors: the command could not be started.
fn run(mut cmd: Command, own_group: bool) -> std::io::Result<Status> {
    let sfd = child::take_signals(&TAKEN)?;
    let terminal = own_group && child::owns_foreground(0);
    child::unblock_signals_in_child(&mut cmd);
    if own_group {
        child::own_group(&mut cmd, terminal);
    }
    let mut proc = cmd.spawn()?;
    drop(cmd);
    let pid = proc.id() as i32;
    // The client's side of the session: stdout and stderr, when open.
    let mut watch: Vec<i32> = [1, 2]
        .into_iter()
        .filter(|&fd| child::is_open(fd))
        .collect();
    // When the client is gone: the SIGKILL deadline.
    let mut kill_at: Option<Instant> = None;
    let mut status: Option<Status> = None;
    loop {
        if status.is_none() {
            if let Ok(Some(s)) = proc.try_wait() {
                status = Some(match (s.code(), s.signal()) {
                    (Some(c), _) => Status::Code(c),
                    (_, Some(n)) => Status::Signal(n),
                    _ => Status::Code(1),
                });
            }
        }
        match (status, kill_at) {
            (Some(s), None) => break finish(s, terminal),
            (Some(s), Some(_)) if !own_group || !child::group_alive(pid) => {
                break finish(s, terminal)
            }
            (_, Some(at)) if Instant::now() >= at => {
                child::signal(pid, nix::libc::SIGKILL, own_group);
                if status.is_none() {
                    let s = proc.wait()?;
                    status = Some(match (s.code(), s.signal()) {
                        (Some(c), _) => Status::Code(c),
                        (_, Some(n)) => Status::Signal(n),
                        _ => Status::Code(1),
                    });
                }
                break finish(status.unwrap_or(Status::Code(1)), terminal);
            }
            _ => {}
        }
        let timeout = match kill_at {
            Some(at) => at
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50)),
            None => Duration::from_secs(3600),
        };
        let woken = child::wait(&sfd, &watch, timeout)?;
        let mut gone = !woken.hung_up.is_empty();
        if gone {
            watch.clear();
        }
        for sig in woken.signals {
            match Signal::try_from(sig) {
                Ok(Signal::SIGCHLD | Signal::SIGTTOU | Signal::SIGTTIN) => {}
                Ok(Signal::SIGHUP) => gone = true,
                _ if status.is_none() => child::signal(pid, sig, false),
                _ => {}
            }
        }
        if gone && kill_at.is_none() {
            child::signal(pid, nix::libc::SIGTERM, own_group);
            kill_at = Some(Instant::now() + GRACE);
        }
    }
}

fn finish(s: Status, terminal: bool) -> std::io::Result<Status> {
    if terminal {
        child::take_foreground_back(0);
    }
    Ok(s)
}
