//! Runs `bastion-wrapper` for one `/cgi-bin/run` request: a clean explicit
//! environment, the request in `SSH_ORIGINAL_COMMAND`, stdout and stderr
//! merged into one pipe, its own process group. The output is streamed to
//! a channel the body reads; when the client goes away or the listener
//! stops, the group gets SIGTERM, a short grace, then SIGKILL; when the
//! command ends, what is left of its group is killed, so nothing is left
//! running and the lock is released. It knows nothing of connections.

use super::access_log::{Entry, Exit};
use super::body::{CommandFailed, Output};
use crate::session::SessionEnv;
use crate::sys::privilege::Account;
use crate::sys::process_group;
use bytes::BytesMut;
use hyper::header::{HeaderName, HeaderValue};
use hyper::HeaderMap;
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
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
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Everything fixed at boot to start a command.
#[derive(Debug, Clone)]
pub(crate) struct Launcher {
    pub(crate) wrapper: PathBuf,
    pub(crate) runtime: PathBuf,
    pub(crate) account: Account,
    /// The account's home if it exists (the command's working directory).
    pub(crate) workdir: PathBuf,
    /// How long output may wait for a client that does not read before the
    /// client counts as gone.
    pub(crate) stall_timeout: std::time::Duration,
}

/// One command to run.
pub(crate) struct Job {
    pub(crate) request: Option<Vec<u8>>,
    pub(crate) want_trailers: bool,
    pub(crate) entry: Entry,
    pub(crate) permit: OwnedSemaphorePermit,
}

impl Launcher {
    /// Starts the wrapper and a task that streams its output; returns the
    /// output for the response body (the server builds the body: it knows
    /// the connection, this does not). Errors: the wrapper could not be
    /// started.
    pub(crate) fn start(
        &self,
        job: Job,
        shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<mpsc::Receiver<Output>> {
        let (reader, writer) = std::io::pipe()?;
        let mut env = SessionEnv::for_account(&self.account);
        if let Some(r) = &job.request {
            env = env.with("SSH_ORIGINAL_COMMAND", OsStr::from_bytes(r));
        }
        let mut cmd = tokio::process::Command::new(&self.wrapper);
        cmd.arg("--runtime")
            .arg(&self.runtime)
            .env_clear()
            .envs(env.vars())
            .current_dir(&self.workdir)
            .stdin(Stdio::null())
            .stdout(writer.try_clone()?)
            .stderr(writer)
            .process_group(0);
        let child = cmd.spawn()?;
        // Our copies of the write end go with `cmd`: EOF comes when the
        // command's processes have closed theirs.
        drop(cmd);
        let pgid = child.id().unwrap_or(0);
        let reader = OwnedFd::from(reader);
        process_group::grow_pipe(&reader, PIPE_BYTES);
        let pipe = match pipe::Receiver::from_owned_fd(reader) {
            Ok(p) => p,
            Err(e) => {
                let _ = process_group::kill_group(pgid);
                return Err(e);
            }
        };
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        tokio::spawn(supervise(
            child,
            pgid,
            pipe,
            tx,
            job,
            shutdown,
            self.stall_timeout,
        ));
        Ok(rx)
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

/// Streams the output, reaps the wrapper, kills what is left of its
/// group, ends the body according to the exit status and logs the request.
async fn supervise(
    mut child: tokio::process::Child,
    pgid: u32,
    mut pipe: pipe::Receiver,
    tx: mpsc::Sender<Output>,
    job: Job,
    mut shutdown: watch::Receiver<bool>,
    stall_timeout: std::time::Duration,
) {
    let Job {
        want_trailers,
        entry,
        permit,
        ..
    } = job;
    let mut stop = pump(&mut pipe, &tx, &mut shutdown, stall_timeout).await;
    drop(pipe);
    let status = match stop {
        Some(_) => stop_group(&mut child, pgid).await,
        None => tokio::select! {
            s = child.wait() => s,
            _ = tx.closed() => {
                stop = Some(Stop::ClientGone);
                stop_group(&mut child, pgid).await
            }
            _ = shutdown.changed() => {
                stop = Some(Stop::Shutdown);
                stop_group(&mut child, pgid).await
            }
        },
    };
    // The wrapper is reaped; anything it left in its group goes too (the
    // group id cannot be reused while a member is alive).
    let _ = process_group::kill_group(pgid);
    let code = status.as_ref().map_or(-1, |s| exit_code(*s));
    let (exit, note) = match (stop, &status) {
        (Some(Stop::ClientGone), _) => (Exit::Killed, Some("client gone".to_owned())),
        (Some(Stop::ClientStalled), _) => (
            Exit::Killed,
            Some(format!(
                "client read nothing for {} s",
                stall_timeout.as_secs()
            )),
        ),
        (Some(Stop::Shutdown), _) => (Exit::Killed, Some("listener stopping".to_owned())),
        (None, Err(e)) => (Exit::Code(code), Some(format!("wait failed: {e}"))),
        (None, Ok(_)) => (Exit::Code(code), None),
    };
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

/// Stops a command nobody waits for any more: SIGTERM to its group, then
/// [`STOP_GRACE`] for the wrapper to end (a runner may need it to clean up
/// after its child), then SIGKILL. The caller SIGKILLs what is left of the
/// group once the wrapper is reaped.
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
async fn pump(
    pipe: &mut pipe::Receiver,
    tx: &mpsc::Sender<Output>,
    shutdown: &mut watch::Receiver<bool>,
    stall_timeout: std::time::Duration,
) -> Option<Stop> {
    let mut buf = BytesMut::new();
    loop {
        buf.reserve(READ_CHUNK);
        let read = tokio::select! {
            biased;
            _ = tx.closed() => return Some(Stop::ClientGone),
            _ = shutdown.changed() => return Some(Stop::Shutdown),
            r = pipe.read_buf(&mut buf) => r,
        };
        match read {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        let data = buf.split().freeze();
        tokio::select! {
            r = tokio::time::timeout(stall_timeout, tx.send(Output::Data(data))) => match r {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Some(Stop::ClientGone),
                Err(_) => return Some(Stop::ClientStalled),
            },
            _ = shutdown.changed() => return Some(Stop::Shutdown),
        }
    }
}

/// The status as a shell reports it: the code, or 128+N for signal N.
fn exit_code(s: ExitStatus) -> i32 {
    s.code()
        .or_else(|| s.signal().map(|n| 128 + n))
        .unwrap_or(-1)
}
