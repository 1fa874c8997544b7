//! The parent runner of one session container: takes a `SESSION_MAX` slot,
//! registers the container with the monitor, creates it, attaches to it
//! (stdin, stdout, stderr, a TTY when the client has one), and stays the
//! engine CLI's parent until it ends, so it can return the command's exit
//! status, enforce `SESSION_TIMEOUT`, and remove the container however the
//! session ends. It never runs anything through a shell of the bastion.

use super::boot::SessionRuntime;
use super::engine::{run_bounded, Engine, QUERY_TIMEOUT};
use super::plan::{self, ApplyLimits, Payload, SessionId};
use super::settings::{LimitsPolicy, PullPolicy};
use super::{reap, slots, watch};
use crate::lock::LockGuard;
use crate::session::report::Finished;
use crate::session::{Command, ExecError, Runner};
use nix::sys::signal::{SigSet, Signal};
use std::io::IsTerminal;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::process::{Child, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A line on stderr that never panics: the client may be gone, and the
/// runner must still remove its container.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Exit status when the container cannot be started (the engine CLI's own).
pub(crate) const CANNOT_START: u8 = 125;
/// Grace between SIGTERM and SIGKILL at `SESSION_TIMEOUT` (SPEC 12).
const TIMEOUT_GRACE_SECS: &str = "10";
/// Grace when the client is gone or the session is told to stop: short
/// enough that the container is stopped and removed within the HTTP
/// listener's own grace before it SIGKILLs this process.
const HANGUP_GRACE_SECS: &str = "1";
/// How long creating a container may take.
const CREATE_TIMEOUT: Duration = Duration::from_secs(120);

/// The parent runner of session containers (a [`Runner`]): every command
/// it is given runs in a fresh container of the session image.
pub(crate) struct ContainerRunner<'a> {
    rt: &'a SessionRuntime,
    /// Tells the monitor the container's name (and engine) before it is
    /// created, on the session's own connection; an error refuses the
    /// session. Without it (no monitor) nothing is registered.
    register: Option<Register<'a>>,
    /// Told the session's exit status once the container is removed.
    ended: Option<Ended<'a>>,
    /// Opens the session's egress gate (SPEC 14) once the container is
    /// registered: the network and the gate's address.
    gate: Option<OpenGate<'a>>,
    /// A `SESSION_MAX` slot the HTTP listener took and passed.
    slot_fd: Option<i32>,
    /// The session's id and identity when the monitor gave them; otherwise
    /// a fresh id and `unknown`.
    known: Option<(String, String)>,
}

/// See [`ContainerRunner::with_monitor`].
pub(crate) type Register<'a> = Box<dyn FnMut(&str) -> Result<(), String> + 'a>;
/// See [`ContainerRunner::with_monitor`].
pub(crate) type Ended<'a> = Box<dyn FnOnce(Finished) + 'a>;
/// See [`ContainerRunner::with_gate`].
pub(crate) type OpenGate<'a> = Box<dyn FnOnce() -> Result<(String, String), String> + 'a>;

impl<'a> ContainerRunner<'a> {
    pub(crate) fn new(rt: &'a SessionRuntime, slot_fd: Option<i32>) -> Self {
        Self {
            rt,
            register: None,
            ended: None,
            gate: None,
            slot_fd,
            known: None,
        }
    }

    /// The session id (16 lowercase hex) and identity the monitor assigned:
    /// the container's name, labels and `BASTION_*` variables use them.
    pub(crate) fn with_session(mut self, id: String, identity: String) -> Self {
        self.known = Some((id, identity));
        self
    }

    /// The session's monitor connection: `register` is given the
    /// container's name before the container is created (from then on the
    /// monitor removes it if this process dies, whatever kills it), and
    /// `ended` how the session ended, after the runner removed it.
    pub(crate) fn with_monitor(mut self, register: Register<'a>, ended: Ended<'a>) -> Self {
        self.register = Some(register);
        self.ended = Some(ended);
        self
    }

    /// With upstreams declared (the runtime file's `gate`), `open` asks the
    /// monitor for the session's gate network after the container is
    /// registered; the container is attached to it only. Without it (no
    /// monitor), such a session cannot start.
    pub(crate) fn with_gate(mut self, open: OpenGate<'a>) -> Self {
        self.gate = Some(open);
        self
    }
}

impl Runner for ContainerRunner<'_> {
    /// Always `Ok`: a container that cannot start is the session's exit
    /// status 125, with the reason on stderr. The lock is held until the
    /// container is removed.
    fn run(mut self, cmd: Command, lock: Option<LockGuard>) -> Result<ExitCode, ExecError> {
        let ended = self.ended.take();
        let finished = self.session(cmd);
        drop(lock);
        if let Some(ended) = ended {
            ended(finished);
        }
        Ok(ExitCode::from(finished.code()))
    }
}

impl ContainerRunner<'_> {
    fn session(self, cmd: Command) -> Finished {
        let mut argv = Vec::with_capacity(cmd.argv.len());
        for a in cmd.argv {
            match a.into_string() {
                Ok(a) => argv.push(a),
                Err(raw) => {
                    return cannot_start(&format!(
                        "an argument is not UTF-8: {}",
                        crate::audit::escape_bytes(raw.as_bytes())
                    ))
                }
            }
        }
        let payload = if argv.is_empty() {
            Payload::ImageDefault
        } else {
            Payload::Argv(argv)
        };
        let (id, identity) = match self.known {
            Some((id, identity)) if watch::is_session_name(&super::plan::container_name(&id)) => {
                (id, identity)
            }
            Some((id, _)) => {
                return cannot_start(&format!(
                    "session id \"{}\" is not 16 lowercase hex characters",
                    crate::audit::escape(&id)
                ))
            }
            None => match super::new_session_id() {
                Ok(id) => (id, "unknown".to_owned()),
                Err(e) => return cannot_start(&format!("no session id: {e}")),
            },
        };
        let tty = std::io::stdin().is_terminal();
        let term = cmd
            .env
            .get("TERM")
            .filter(|_| tty)
            .and_then(|t| t.to_str())
            .map(str::to_owned);
        run(SessionRun {
            rt: self.rt,
            session: SessionId { id, identity, term },
            payload,
            tty,
            register: self.register,
            gate: self.gate,
            slot_fd: self.slot_fd,
        })
    }
}

/// One session to run.
struct SessionRun<'a> {
    rt: &'a SessionRuntime,
    session: SessionId,
    payload: Payload,
    /// The SSH client asked for a PTY (stdin is a terminal).
    tty: bool,
    register: Option<Register<'a>>,
    gate: Option<OpenGate<'a>>,
    slot_fd: Option<i32>,
}

/// What the session's end is, as the runner saw it.
enum End {
    Exited(std::process::ExitStatus),
    Signal(Signal),
    ClientGone,
    Deadline,
}

fn cannot_start(reason: &str) -> Finished {
    say!("[session] cannot start: {reason}");
    Finished::Status(CANNOT_START)
}

/// Runs the session; the command's exit status, the busy line (exit 0)
/// when `SESSION_MAX` containers already run, or 125 when it cannot start.
fn run(s: SessionRun<'_>) -> Finished {
    let rt = s.rt;
    let slot = match s.slot_fd {
        Some(fd) => slots::adopt(&rt.slots_dir, rt.max, fd),
        None => slots::acquire(&rt.slots_dir, rt.max),
    };
    let slot = match slot {
        Ok(Some(slot)) => slot,
        Ok(None) => {
            {
                use std::io::Write;
                let _ = writeln!(std::io::stdout(), "{}", crate::lock::BUSY_LINE);
            }
            return Finished::Busy;
        }
        Err(e) => return cannot_start(&format!("no session slot: {e}")),
    };
    let limits = match apply_limits(rt) {
        Ok(l) => l,
        Err(reason) => return cannot_start(&reason),
    };
    let image_id = if rt.pull == PullPolicy::Always {
        match super::boot::resolve_image(&rt.engine, &rt.image, rt.pull) {
            Ok(id) => id,
            Err((problem, _)) => return cannot_start(&format!("{} {problem}", rt.image)),
        }
    } else {
        rt.image_id.clone()
    };
    let name = plan::container_name(&s.session.id);
    // Before the container exists: from here on the monitor removes it if
    // this process dies, whatever kills it.
    if let Some(mut register) = s.register {
        if let Err(reason) = register(&name) {
            return cannot_start(&reason);
        }
    }
    // SPEC 14: the session's own network to the gate, and nothing else.
    let gate = match (&rt.gate, s.gate) {
        (None, _) => None,
        (Some(_), None) => return cannot_start("the egress gate needs the bastion's monitor"),
        (Some(_), Some(open)) => {
            match open().and_then(|(n, a)| plan::GateAttach::new(&s.session.id, n, &a)) {
                Ok(g) => Some(g),
                Err(reason) => return cannot_start(&reason),
            }
        }
    };
    let argv = plan::create_argv(
        rt,
        &image_id,
        &s.session,
        s.tty,
        limits,
        gate.as_ref(),
        &s.payload,
    );
    let mut create = rt.engine.command();
    create
        .args(&argv)
        .envs(plan::env_values(rt, &s.session))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Signals that end the session are taken by a thread from here on
    // (the CLI children get a clean mask: std resets it before exec).
    let mask = ending_signals();
    let _ = mask.thread_block();
    let created = run_bounded(create, CREATE_TIMEOUT);
    if !created.ok {
        let _ = reap::remove_container(&rt.engine, &name);
        return cannot_start(&created.reason());
    }
    let code = attach_and_wait(&rt.engine, &name, rt.timeout_secs, mask);
    if let Err(e) = reap::remove_container(&rt.engine, &name) {
        say!("[session] {e}");
    }
    drop(slot);
    code
}

/// The limits to put on the command line, or why the session is refused.
fn apply_limits(rt: &SessionRuntime) -> Result<ApplyLimits, String> {
    let sup = rt.limit_support;
    let missing: Vec<&str> = [
        ("memory", sup.memory),
        ("cpus", sup.cpus),
        ("pids", sup.pids),
    ]
    .iter()
    .filter(|(_, ok)| !ok)
    .map(|(n, _)| *n)
    .collect();
    if !missing.is_empty() {
        match rt.limits_policy {
            LimitsPolicy::Required => {
                return Err(format!(
                    "the engine cannot apply the {} limit(s) (SESSION_LIMITS=required; give the engine cgroup controllers, or set SESSION_LIMITS=best-effort)",
                    missing.join(", ")
                ))
            }
            LimitsPolicy::BestEffort => say!(
                "[session] warning: running without the {} limit(s): the engine cannot apply them (SESSION_LIMITS=best-effort)",
                missing.join(", ")
            ),
        }
    }
    Ok(ApplyLimits {
        memory: sup.memory,
        cpus: sup.cpus,
        pids: sup.pids,
    })
}

fn ending_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGHUP,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGQUIT,
    ] {
        set.add(s);
    }
    set
}

/// `start --attach --interactive NAME` with this process's stdio; waits for
/// the first of: the CLI ends, an ending signal, the client gone, the
/// deadline. Returns the session's exit status.
fn attach_and_wait(engine: &Engine, name: &str, timeout_secs: u64, mask: SigSet) -> Finished {
    let mut start = engine.command();
    start.args(["start", "--attach", "--interactive", name]);
    let child = match start.spawn() {
        Ok(c) => c,
        Err(e) => return cannot_start(&format!("cannot run {}: {e}", engine.cli.display())),
    };
    let pid = child.id();
    let (tx, rx) = mpsc::channel::<End>();
    spawn_waiter(child, tx.clone());
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            if let Ok(sig) = mask.wait() {
                let _ = tx.send(End::Signal(sig));
            }
        });
    }
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            if wait_client_gone() {
                let _ = tx.send(End::ClientGone);
            }
        });
    }
    let deadline = (timeout_secs > 0).then(|| Instant::now() + Duration::from_secs(timeout_secs));
    let first = match deadline {
        None => rx.recv().ok(),
        Some(d) => match rx.recv_timeout(d.saturating_duration_since(Instant::now())) {
            Ok(e) => Some(e),
            Err(mpsc::RecvTimeoutError::Timeout) => Some(End::Deadline),
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
        },
    };
    let stop = |grace: &str| {
        let _ = engine.query(&["stop", "--time", grace, name], QUERY_TIMEOUT);
    };
    Finished::Status(match first {
        Some(End::Exited(status)) => status_code(status),
        Some(End::Deadline) => {
            say!(
                "[session] time limit of {timeout_secs} s reached: stopping the session (SIGTERM, then SIGKILL after {TIMEOUT_GRACE_SECS} s)"
            );
            stop(TIMEOUT_GRACE_SECS);
            return Finished::Deadline(wait_end(&rx, pid));
        }
        Some(End::Signal(sig)) => {
            stop(HANGUP_GRACE_SECS);
            let _ = wait_end(&rx, pid);
            128 + sig as u8
        }
        Some(End::ClientGone) => {
            stop(HANGUP_GRACE_SECS);
            let _ = wait_end(&rx, pid);
            128 + Signal::SIGHUP as u8
        }
        None => crate::exit::FAILURE,
    })
}

fn spawn_waiter(mut child: Child, tx: mpsc::Sender<End>) {
    std::thread::spawn(move || {
        if let Ok(status) = child.wait() {
            let _ = tx.send(End::Exited(status));
        }
    });
}

/// After the container was stopped: the CLI's status, killing the CLI if
/// it lingers.
fn wait_end(rx: &mpsc::Receiver<End>, pid: u32) -> u8 {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        match rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
            Ok(End::Exited(status)) => return status_code(status),
            Ok(_) => continue,
            Err(_) => {
                if let Ok(p) = i32::try_from(pid) {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), Signal::SIGKILL);
                }
                return crate::exit::FAILURE;
            }
        }
    }
}

fn status_code(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    u8::try_from(code).unwrap_or(1)
}

/// Blocks until stdout or stderr reports that its reader is gone (the
/// client disconnected: sshd closed its end, or the terminal hung up).
/// False when that cannot be watched.
fn wait_client_gone() -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    // SAFETY-free: borrowing our own standard descriptors for the call.
    let out = std::io::stdout();
    let err = std::io::stderr();
    let fds: [BorrowedFd<'_>; 2] = [out.as_fd(), err.as_fd()];
    loop {
        let mut p = [
            PollFd::new(fds[0], PollFlags::empty()),
            PollFd::new(fds[1], PollFlags::empty()),
        ];
        match poll(&mut p, PollTimeout::NONE) {
            Ok(_) => {
                let gone = p.iter().any(|x| {
                    x.revents()
                        .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP))
                });
                if gone {
                    return true;
                }
                if p.iter()
                    .any(|x| x.revents().is_some_and(|r| r.contains(PollFlags::POLLNVAL)))
                {
                    return false;
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}
