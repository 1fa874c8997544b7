//! Runs one `/cgi-bin/run` request the way `bastion-wrapper` would, in
//! the listener: takes the lock (a `wait:SECONDS` wait polls, so it never
//! holds up other requests), makes the wrapper's decision
//! ([`crate::wrapper::plan`]) and starts only the command, with an
//! environment built from scratch, stdout and stderr merged into one pipe,
//! in its own process group. The lock descriptor is made inheritable right
//! before that one spawn and the listener's copy dropped right after, so
//! the command tree holds the lock until its last process exits. What the
//! wrapper would write (busy line, broker lines, "command not found")
//! goes into the body before or instead of the command's output. When the
//! client goes away or the listener stops, the group gets SIGTERM, a short
//! grace, then SIGKILL; when the command ends, what is left of its group
//! is killed. It knows nothing of connections.

use super::access_log::{Entry, Exit};
use super::body::{CommandFailed, Output};
use crate::config::{LockPolicy, Runtime};
use crate::lock::{LockError, LockFile, LockGuard};
use crate::session::report::{self, Report};
use crate::session::{self, ExecError, SessionEnv};
use crate::sys::privilege::Account;
use crate::sys::process_group;
use crate::tool::Tool;
use crate::wrapper::plan::{self, Plan, Target, BUSY_LINE};
use bytes::{Bytes, BytesMut};
use hyper::header::{HeaderName, HeaderValue};
use hyper::HeaderMap;
use std::io::{PipeReader, PipeWriter};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};

pub(crate) const EXIT_CODE_TRAILER: &str = "x-bastion-exit-code";

/// Bytes read from the command's pipe per body chunk, at most.
const READ_CHUNK: usize = 64 * 1024;
/// Pipe buffer asked of the kernel (fewer wake-ups on large output).
const PIPE_BYTES: i32 = 1024 * 1024;
/// Chunks in flight between the pipe and hyper: the command blocks on a
/// full pipe when the client reads slowly (backpressure, bounded memory).
const CHANNEL_DEPTH: usize = 2;
/// How long a command whose client is gone has between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// `wait:SECONDS`: the first pause between tries of the lock, doubled up
/// to [`LOCK_POLL_MAX`].
const LOCK_POLL_FIRST: Duration = Duration::from_millis(2);
const LOCK_POLL_MAX: Duration = Duration::from_millis(50);

/// Everything fixed at boot to start a command.
#[derive(Debug, Clone)]
pub(crate) struct Launcher {
    /// The runtime file as read at boot (root-owned, never rewritten).
    pub(crate) runtime: Arc<Runtime>,
    /// The broker's configuration from it, the boot-compiled rules read
    /// when the listener started (root-owned, written once at boot).
    pub(crate) broker: Arc<crate::broker::BrokerConfig>,
    /// Connections to the monitor between two sessions.
    pub(crate) monitor_links: Arc<report::Links>,
    pub(crate) account: Account,
    /// The account's home if it exists (the command's working directory).
    pub(crate) workdir: PathBuf,
    /// How long output may wait for a client that does not read before the
    /// client counts as gone.
    pub(crate) stall_timeout: Duration,
    /// Session containers: `SESSION_MAX` is checked before the response
    /// starts (a full bastion answers 503), and each request runs through
    /// the wrapper, which stays the container's parent runner.
    pub(crate) session_slots: Option<crate::container::slots::SlotDir>,
    /// The wrapper and the runtime file's path it reads (session containers).
    pub(crate) wrapper: PathBuf,
    pub(crate) runtime_file: PathBuf,
}

/// The descriptor number a held session slot has in the wrapper.
const SLOT_FD: i32 = 3;

/// One command to run.
pub(crate) struct Job {
    pub(crate) request: Option<Vec<u8>>,
    pub(crate) want_trailers: bool,
    pub(crate) entry: Entry,
    pub(crate) permit: OwnedSemaphorePermit,
    /// The session slot taken for this request, held until the wrapper is
    /// reaped.
    pub(crate) slot: Option<crate::container::slots::Slot>,
}

impl Launcher {
    /// Starts the session's task and returns its output for the response
    /// body (the server builds the body: it knows the connection, this
    /// does not). Errors: no pipe for the output (descriptors exhausted).
    pub(crate) fn start(
        &self,
        job: Job,
        shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<mpsc::Receiver<Output>> {
        let pipe = std::io::pipe()?;
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let out = Out {
            tx,
            shutdown,
            stall_timeout: self.stall_timeout,
        };
        tokio::spawn(self.clone().session(job, pipe, out));
        Ok(rx)
    }

    /// Tells the monitor a request was refused for its credentials (for
    /// `bastion_http_auth_failures_total`). Never waits: a monitor that
    /// cannot take it now misses one count.
    pub(crate) fn report_auth_failure(&self) {
        let Some(path) = &self.runtime.monitor_socket else {
            return;
        };
        if let Ok(mut s) = crate::sys::unix_connect::connect_unix_nonblocking(path) {
            use std::io::Write as _;
            let _ = s.write_all(b"{\"op\":\"http_auth_failure\"}\n");
        }
    }

    /// A request refused because `SESSION_MAX` session containers run
    /// (answered 503 with the busy line): a busy session for the audit
    /// trail, as a held lock is. A monitor that cannot log it changes
    /// nothing: nothing runs either way.
    pub(crate) async fn report_busy(self, entry: &Entry, request: Option<&[u8]>) {
        match self.open_report(entry, request).await {
            Ok(mut report) => {
                report.busy().await;
                report.end(report::End::Code(0)).await;
            }
            Err(e) => eprintln!("bastion-cgi: {}", crate::audit::escape(&e)),
        }
    }

    /// The wrapper's steps: the session's start (the monitor), lock,
    /// decide, start; then the output, the session's end and the end of
    /// the body.
    async fn session(self, job: Job, (reader, writer): (PipeReader, PipeWriter), mut out: Out) {
        if self.session_slots.is_some() {
            return self.in_container(job, (reader, writer), out).await;
        }
        let Job {
            request,
            want_trailers,
            entry,
            permit,
            slot: _,
        } = job;
        let mut report = match self.open_report(&entry, request.as_deref()).await {
            Ok(r) => r,
            // A monitor is expected and cannot log the session: nothing
            // runs, and the client reads what the wrapper would say.
            Err(refused) => {
                let mut said = Vec::new();
                plan::say(&mut said, Tool::Wrapper, refused);
                let ended = out.said(said, crate::exit::FAILURE).await;
                out.finish(ended, want_trailers, entry, permit).await;
                return;
            }
        };
        let ended = match self.take_lock(&mut out).await {
            Taken::Held(guard) => {
                let env = report.env(SessionEnv::for_account(&self.account));
                match plan::plan_with(&self.runtime, &self.broker, request.as_deref(), env) {
                    Plan::Done { said, code, denied } => {
                        drop(guard);
                        if let Some(d) = denied {
                            report.decided(false, d).await;
                        }
                        out.said(said, code).await
                    }
                    Plan::Run {
                        cmd,
                        said,
                        speaker,
                        allowed,
                    } => {
                        if let Some(d) = allowed {
                            report.decided(true, d).await;
                        }
                        match out.send(said).await {
                            Some(stop) => Ended::stopped(stop),
                            None => match self.run_command(cmd, writer, guard).await {
                                Ok((child, pgid)) => supervise(child, pgid, reader, &mut out).await,
                                Err(e) => {
                                    let (said, code) = plan::start_failed(speaker, &e);
                                    out.said(said, code).await
                                }
                            },
                        }
                    }
                }
            }
            Taken::Busy => {
                report.busy().await;
                out.said(format!("{BUSY_LINE}\n").into_bytes(), 0).await
            }
            Taken::Failed(e) => {
                let mut said = Vec::new();
                plan::say(&mut said, Tool::Wrapper, e);
                out.said(said, crate::exit::FAILURE).await
            }
            Taken::Stopped(stop) => Ended::stopped(stop),
        };
        let end = match (ended.signal, ended.stop) {
            (Some(n), _) => report::End::Signal(n),
            // Stopped with no status: nothing ran, or it cannot be known.
            (None, Some(_)) if ended.code < 0 => report::End::Lost,
            (None, _) => report::End::Code(ended.code),
        };
        // Logged before the body ends, as the wrapper reports before it
        // exits.
        report.end(end).await;
        out.finish(ended, want_trailers, entry, permit).await;
    }

    /// Session containers (SPEC 12): the wrapper runs the request, as on
    /// the SSH path, and stays the container's parent runner; it reports
    /// the session to the monitor itself (the monitor believes the HTTP
    /// user only from a direct child of its listener, and where session
    /// containers run, the listener's only children are wrappers). The
    /// request's `SESSION_MAX` slot is handed to it.
    async fn in_container(
        self,
        job: Job,
        (reader, writer): (PipeReader, PipeWriter),
        mut out: Out,
    ) {
        let Job {
            request,
            want_trailers,
            entry,
            permit,
            slot,
        } = job;
        let mut env = SessionEnv::for_account(&self.account);
        if let Some(r) = &request {
            env = env.with("SSH_ORIGINAL_COMMAND", std::ffi::OsStr::from_bytes(r));
        }
        if let Some(who) = &entry.who {
            env = env.with("BASTION_HTTP_WHO", who.name());
        }
        env = env.with("BASTION_HTTP_CLIENT", entry.client.to_string());
        let started = (|| -> std::io::Result<(tokio::process::Child, u32)> {
            let mut cmd = tokio::process::Command::new(&self.wrapper);
            cmd.arg("--runtime")
                .arg(&self.runtime_file)
                .env_clear()
                .envs(env.vars())
                .current_dir(&self.workdir)
                .stdin(Stdio::null())
                .stdout(writer.try_clone()?)
                .stderr(writer)
                .process_group(0);
            if let Some(slot) = &slot {
                cmd.arg("--session-slot-fd").arg(SLOT_FD.to_string());
                crate::sys::fd::pass_to_child(cmd.as_std_mut(), slot.share()?, SLOT_FD);
            }
            let child = cmd.spawn()?;
            let pgid = child.id().unwrap_or(0);
            Ok((child, pgid))
        })();
        let ended = match started {
            Ok((child, pgid)) => supervise(child, pgid, reader, &mut out).await,
            Err(e) => {
                let mut said = Vec::new();
                plan::say(
                    &mut said,
                    Tool::Wrapper,
                    format!("cannot start the session: {e}"),
                );
                out.said(said, crate::exit::FAILURE).await
            }
        };
        drop(slot);
        out.finish(ended, want_trailers, entry, permit).await;
    }

    /// [`Report::start`] for this request.
    async fn open_report(&self, entry: &Entry, request: Option<&[u8]>) -> Result<Report, String> {
        let who = entry.who.as_ref().map_or("unknown", |w| w.name());
        Report::start(
            &self.runtime,
            &self.monitor_links,
            who,
            entry.client,
            request,
        )
        .await
    }

    /// The one place a decided command is started. Session containers
    /// (the runtime's container settings) plug in here with their own
    /// runner; until then every command is started directly, as the
    /// listener's child.
    async fn run_command(
        &self,
        cmd: session::Command,
        writer: PipeWriter,
        guard: LockGuard,
    ) -> Result<(tokio::process::Child, u32), ExecError> {
        spawn_off_thread(cmd, self.workdir.clone(), writer, guard).await
    }

    /// The lock as the wrapper takes it; `wait:SECONDS` tries again after
    /// short pauses until the time is up (the client leaving or the
    /// listener stopping ends the wait).
    async fn take_lock(&self, out: &mut Out) -> Taken {
        let wait = match self.runtime.command_lock {
            LockPolicy::None => return Taken::Held(LockGuard::unlocked()),
            LockPolicy::Exclusive => Duration::ZERO,
            LockPolicy::Wait { seconds } => Duration::from_secs(seconds.into()),
        };
        let deadline = tokio::time::Instant::now() + wait;
        let mut file = match LockFile::open(&self.runtime.lock_file) {
            Ok(f) => f,
            Err(e) => return Taken::Failed(e),
        };
        let mut pause = LOCK_POLL_FIRST;
        loop {
            file = match file.try_take() {
                Ok(Ok(guard)) => return Taken::Held(guard),
                Ok(Err(file)) => file,
                Err(e) => return Taken::Failed(e),
            };
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Taken::Busy;
            }
            tokio::select! {
                () = tokio::time::sleep(pause.min(deadline - now)) => {}
                () = out.tx.closed() => return Taken::Stopped(Stop::ClientGone),
                _ = out.shutdown.changed() => return Taken::Stopped(Stop::Shutdown),
            }
            pause = (pause * 2).min(LOCK_POLL_MAX);
        }
    }
}

/// [`spawn`] on a blocking thread: `posix_spawn` suspends its caller until
/// the child has exec'd (vfork), which must neither stall the listener nor
/// make commands start one at a time.
async fn spawn_off_thread(
    cmd: session::Command,
    workdir: PathBuf,
    writer: PipeWriter,
    lock: LockGuard,
) -> Result<(tokio::process::Child, u32), ExecError> {
    let shown = plan::shown(&cmd);
    tokio::task::spawn_blocking(move || spawn(&cmd, &workdir, writer, lock))
        .await
        .unwrap_or_else(|e| {
            Err(ExecError::Other {
                program: shown,
                problem: e.to_string(),
            })
        })
}

/// Starts the command by full path (one `posix_spawn`), holding the lock:
/// its descriptor is inheritable only while this child starts, and this
/// process's copy is gone when this returns. Another command starting at
/// the same time (another thread) holds no lock descriptor: every request
/// has the same policy, and an exclusive lock has one holder at a time,
/// this listener's copy until the spawn is done.
fn spawn(
    cmd: &session::Command,
    workdir: &std::path::Path,
    writer: PipeWriter,
    lock: LockGuard,
) -> Result<(tokio::process::Child, u32), ExecError> {
    let target = plan::locate(cmd)?;
    let failed = |e: &std::io::Error| ExecError::from_io(plan::shown(cmd), e);
    lock.inherit().map_err(|e| failed(&e))?;
    let start = |t: &Target| -> std::io::Result<tokio::process::Child> {
        let (program, args) = t.argv.split_first().unwrap_or((&t.argv[0], &[]));
        tokio::process::Command::new(&t.program)
            .arg0(program)
            .args(args)
            .env_clear()
            .envs(cmd.env.vars())
            .current_dir(workdir)
            .stdin(Stdio::null())
            .stdout(writer.try_clone()?)
            .stderr(writer.try_clone()?)
            .process_group(0)
            .spawn()
    };
    let child = match start(&target) {
        // Not a binary the kernel runs: `execvp` hands it to sh.
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOEXEC) => start(&target.as_script()),
        other => other,
    };
    // The command's copies are its own now; EOF on the pipe comes when
    // its processes have closed theirs.
    drop(lock);
    drop(writer);
    let child = child.map_err(|e| failed(&e))?;
    let pgid = child.id().unwrap_or(0);
    Ok((child, pgid))
}

/// The outcome of taking the lock.
enum Taken {
    Held(LockGuard),
    Busy,
    Failed(LockError),
    /// The wait was cut short.
    Stopped(Stop),
}

/// How a session ended, for the body's end and the access line.
struct Ended {
    stop: Option<Stop>,
    code: i32,
    /// The signal that ended the command, if one did.
    signal: Option<i32>,
    /// Why the exit status is unknown.
    problem: Option<String>,
}

impl Ended {
    fn code(code: i32) -> Self {
        Self {
            stop: None,
            code,
            signal: None,
            problem: None,
        }
    }

    fn stopped(stop: Stop) -> Self {
        Self {
            stop: Some(stop),
            code: -1,
            signal: None,
            problem: None,
        }
    }
}

/// The sending side of one response body.
struct Out {
    tx: mpsc::Sender<Output>,
    shutdown: watch::Receiver<bool>,
    stall_timeout: Duration,
}

impl Out {
    /// Sends one chunk; why it could not be, if so.
    async fn send(&mut self, data: impl Into<Bytes>) -> Option<Stop> {
        let data = data.into();
        if data.is_empty() {
            return None;
        }
        tokio::select! {
            r = tokio::time::timeout(self.stall_timeout, self.tx.send(Output::Data(data))) => match r {
                Ok(Ok(())) => None,
                Ok(Err(_)) => Some(Stop::ClientGone),
                Err(_) => Some(Stop::ClientStalled),
            },
            _ = self.shutdown.changed() => Some(Stop::Shutdown),
        }
    }

    /// What the wrapper writes when it runs nothing, and its exit code.
    async fn said(&mut self, said: Vec<u8>, code: u8) -> Ended {
        match self.send(said).await {
            Some(stop) => Ended::stopped(stop),
            None => Ended::code(code.into()),
        }
    }

    /// Ends the body according to the exit status and logs the request.
    async fn finish(
        self,
        ended: Ended,
        want_trailers: bool,
        entry: Entry,
        permit: OwnedSemaphorePermit,
    ) {
        let Ended {
            stop,
            code,
            problem,
            ..
        } = ended;
        let stall_timeout = self.stall_timeout;
        let (exit, note) = match (stop, problem) {
            (Some(Stop::ClientGone), _) => (Exit::Killed, Some("client gone".to_owned())),
            (Some(Stop::ClientStalled), _) => (
                Exit::Killed,
                Some(format!(
                    "client read nothing for {} s",
                    stall_timeout.as_secs()
                )),
            ),
            (Some(Stop::Shutdown), _) => (Exit::Killed, Some("listener stopping".to_owned())),
            (None, problem) => (Exit::Code(code), problem),
        };
        let tx = self.tx;
        if !matches!(stop, Some(Stop::ClientGone | Stop::ClientStalled)) {
            let last = if want_trailers {
                let mut t = HeaderMap::new();
                t.insert(
                    HeaderName::from_static(EXIT_CODE_TRAILER),
                    HeaderValue::from(code),
                );
                Output::Trailers(t)
            } else if code != 0 {
                Output::Failed(CommandFailed { exit_code: code })
            } else {
                Output::End
            };
            // A client that reads nothing gets its connection cut instead.
            let _ = tokio::time::timeout(stall_timeout, tx.send(last)).await;
        }
        drop(tx);
        drop(permit);
        entry.log(Some(200), exit, note.as_deref());
    }
}

/// Why the output stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The client went away: nobody to answer.
    ClientGone,
    /// The client stopped reading: treated as gone.
    ClientStalled,
    /// The listener is stopping: the client is told the command failed.
    Shutdown,
}

/// Streams the output, reaps the command and kills what is left of its
/// group.
async fn supervise(
    mut child: tokio::process::Child,
    pgid: u32,
    reader: PipeReader,
    out: &mut Out,
) -> Ended {
    let reader = OwnedFd::from(reader);
    process_group::grow_pipe(&reader, PIPE_BYTES);
    let mut stop = match pipe::Receiver::from_owned_fd(reader) {
        Ok(mut pipe) => pump(&mut pipe, out).await,
        // No way to read it: the command is stopped as if the client left.
        Err(_) => Some(Stop::ClientGone),
    };
    let status = match stop {
        Some(_) => stop_group(&mut child, pgid).await,
        None => tokio::select! {
            s = child.wait() => s,
            () = out.tx.closed() => {
                stop = Some(Stop::ClientGone);
                stop_group(&mut child, pgid).await
            }
            _ = out.shutdown.changed() => {
                stop = Some(Stop::Shutdown);
                stop_group(&mut child, pgid).await
            }
        },
    };
    // The command is reaped; anything it left in its group goes too (the
    // group id cannot be reused while a member is alive).
    let _ = process_group::kill_group(pgid);
    Ended {
        stop,
        code: status.as_ref().map_or(-1, |s| exit_code(*s)),
        signal: status.as_ref().ok().and_then(|s| s.signal()),
        problem: status.err().map(|e| format!("wait failed: {e}")),
    }
}

/// Stops a command nobody waits for any more: SIGTERM to its group, then
/// [`STOP_GRACE`] for the command to end (a runner may need it to clean up
/// after its child), then SIGKILL. The caller SIGKILLs what is left of the
/// group once the command is reaped.
async fn stop_group(child: &mut tokio::process::Child, pgid: u32) -> std::io::Result<ExitStatus> {
    let _ = process_group::terminate_group(pgid);
    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            let _ = process_group::kill_group(pgid);
            child.wait().await
        }
    }
}

/// Copies the pipe to the body until EOF (`None`) or until it must stop.
async fn pump(pipe: &mut pipe::Receiver, out: &mut Out) -> Option<Stop> {
    let mut buf = BytesMut::new();
    loop {
        buf.reserve(READ_CHUNK);
        let read = tokio::select! {
            biased;
            () = out.tx.closed() => return Some(Stop::ClientGone),
            _ = out.shutdown.changed() => return Some(Stop::Shutdown),
            r = pipe.read_buf(&mut buf) => r,
        };
        match read {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        if let Some(stop) = out.send(buf.split().freeze()).await {
            return Some(stop);
        }
    }
}

/// The status as a shell reports it: the code, or 128+N for signal N.
fn exit_code(s: ExitStatus) -> i32 {
    s.code()
        .or_else(|| s.signal().map(|n| 128 + n))
        .unwrap_or(-1)
}
