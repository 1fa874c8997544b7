//! The filtering proxy's event loop: one task per client connection, each
//! with its own connection to the real agent (opened at the first message
//! that needs it, so an idle client costs no agent connection). Bounded
//! everywhere a client could make it grow: connections, bytes buffered
//! across all connections, time to send a message, time to read a reply.

use super::events::{self, Counters};
use super::policy::{Connection, Outcome, Refusal, Target, Verdict};
use super::protocol::{self, FAILURE_FRAME, MAX_MESSAGE};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) max_connections: usize,
    /// Bytes of messages held at once, all connections together.
    pub(crate) buffer_budget: usize,
    /// A connection with no message for this long is closed.
    pub(crate) idle: Duration,
    /// Once a message has begun, the rest must come within this.
    pub(crate) message: Duration,
    /// The agent must answer within this.
    pub(crate) agent: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 128,
            buffer_budget: 4 * 1024 * 1024,
            idle: Duration::from_secs(600),
            message: Duration::from_secs(10),
            agent: Duration::from_secs(30),
        }
    }
}

pub(crate) struct Shared {
    pub(crate) targets: Vec<Target>,
    pub(crate) agent: PathBuf,
    /// Uids allowed to connect (the session user, root).
    pub(crate) peers: Vec<u32>,
    /// Any uid may connect (the socket session containers get).
    pub(crate) any_peer: bool,
    pub(crate) limits: Limits,
    pub(crate) counters: Mutex<Counters>,
    /// Where the counters are kept in Prometheus text for the metrics
    /// endpoint, rewritten on every change.
    pub(crate) metrics_file: Option<PathBuf>,
    connections: Arc<Semaphore>,
    /// Budget in KiB.
    budget: Semaphore,
    last_busy_log: Mutex<Option<Instant>>,
}

impl Shared {
    pub(crate) fn new(
        targets: Vec<Target>,
        agent: PathBuf,
        peers: Vec<u32>,
        limits: Limits,
        metrics_file: Option<PathBuf>,
    ) -> Self {
        let counters = Counters::new(targets.iter().map(|t| t.name.as_str()));
        Shared {
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            budget: Semaphore::new(limits.buffer_budget.div_ceil(1024).max(600)),
            targets,
            agent,
            peers,
            any_peer: false,
            limits,
            counters: Mutex::new(counters),
            metrics_file,
            last_busy_log: Mutex::new(None),
        }
    }

    fn signed(&self, target: &Target, peer_pid: Option<i32>) {
        if let Ok(mut c) = self.counters.lock() {
            c.signed(&target.name);
            self.write_metrics(&c);
        }
        events::emit(&events::Line::sign(
            &target.name,
            &target.fingerprint,
            peer_pid,
        ));
    }

    fn refused_reason(&self, reason: &'static str, upstream: Option<&str>, peer_pid: Option<i32>) {
        if let Ok(mut c) = self.counters.lock() {
            c.refused(reason);
            self.write_metrics(&c);
        }
        events::emit(&events::Line::refused(reason, upstream, peer_pid));
    }

    pub(crate) fn write_metrics(&self, c: &Counters) {
        let Some(path) = &self.metrics_file else {
            return;
        };
        let tmp = path.with_extension("tmp");
        if std::fs::write(&tmp, c.prometheus()).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }

    fn refused(&self, r: &Refusal, upstream: Option<usize>, peer_pid: Option<i32>) {
        let name = upstream
            .and_then(|i| self.targets.get(i))
            .map(|t| t.name.as_str());
        self.refused_reason(r.reason(), name, peer_pid);
    }
}

/// Accepts until the listener fails (never, in practice).
pub(crate) async fn serve(listener: UnixListener, shared: Arc<Shared>) -> std::io::Result<()> {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) if is_transient(&e) => {
                // Out of descriptors or memory for a moment: back off
                // instead of spinning.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let cred = stream.peer_cred().ok();
        let pid = cred.and_then(|c| c.pid());
        if !cred.is_some_and(|c| shared.any_peer || shared.peers.contains(&c.uid())) {
            shared.refused_reason("peer", None, pid);
            continue;
        }
        let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
            busy(&shared, pid);
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            handle(stream, &shared, pid).await;
            drop(permit);
        });
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::EMFILE | nix::libc::ENFILE | nix::libc::ENOBUFS | nix::libc::ENOMEM)
    ) || e.kind() == std::io::ErrorKind::ConnectionAborted
        || e.kind() == std::io::ErrorKind::Interrupted
}

/// At the connection cap: counted every time, logged at most every 10 s
/// (a flood must not become a log flood).
fn busy(shared: &Shared, pid: Option<i32>) {
    if let Ok(mut c) = shared.counters.lock() {
        c.refused("connection-limit");
        shared.write_metrics(&c);
    }
    if let Ok(mut last) = shared.last_busy_log.lock() {
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            *last = Some(Instant::now());
            events::emit(&events::Line::refused("connection-limit", None, pid));
        }
    }
}

/// Why a connection ends early.
enum Stop {
    Closed,
    Failed,
}

/// Reads one framed message within the limits; `Ok(None)` on a clean end
/// between messages. A bad length gets one FAILURE and ends the
/// connection: its bytes cannot be skipped safely. A client's message
/// takes its size from the shared budget (`budget`) until it is answered;
/// the agent's replies (one per connection at a time, from a process that
/// is not the client) only have the size bound.
async fn read_message<'s, R: AsyncRead + Unpin>(
    r: &mut R,
    shared: &'s Shared,
    budget: Option<&'s Semaphore>,
    first_wait: Duration,
) -> Result<Option<(Vec<u8>, Option<tokio::sync::SemaphorePermit<'s>>)>, Stop> {
    let mut header = [0u8; 4];
    let n = match tokio::time::timeout(first_wait, r.read(&mut header)).await {
        Err(_) => return Err(Stop::Closed),
        Ok(Err(_)) => return Err(Stop::Failed),
        Ok(Ok(0)) => return Ok(None),
        Ok(Ok(n)) => n,
    };
    let rest = async {
        r.read_exact(&mut header[n..]).await?;
        let len = protocol::frame_len(header)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
        let permit = match budget {
            Some(b) => Some(
                b.acquire_many((len.div_ceil(1024) + 1) as u32)
                    .await
                    .map_err(|_| std::io::Error::other("closed"))?,
            ),
            None => None,
        };
        // Grows with what arrives, not with what the length claims.
        let mut body = Vec::new();
        r.take(len as u64).read_to_end(&mut body).await?;
        if body.len() != len {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        }
        Ok((body, permit))
    };
    match tokio::time::timeout(shared.limits.message, rest).await {
        Ok(Ok(m)) => Ok(Some(m)),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => Err(Stop::Failed),
        _ => Err(Stop::Closed),
    }
}

async fn write_all<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8], limit: Duration) -> bool {
    matches!(
        tokio::time::timeout(limit, w.write_all(bytes)).await,
        Ok(Ok(()))
    )
}

async fn handle(mut client: UnixStream, shared: &Shared, pid: Option<i32>) {
    let mut conn = Connection::new();
    let mut agent: Option<UnixStream> = None;
    loop {
        let (body, _permit) = match read_message(
            &mut client,
            shared,
            Some(&shared.budget),
            shared.limits.idle,
        )
        .await
        {
            Ok(Some(m)) => m,
            Ok(None) | Err(Stop::Closed) => return,
            Err(Stop::Failed) => {
                shared.refused(&Refusal::BadFrame, None, pid);
                let _ = write_all(&mut client, &FAILURE_FRAME, shared.limits.message).await;
                return;
            }
        };
        let pending = match conn.decide(&shared.targets, &body) {
            Verdict::Refuse(r) => {
                let upstream = sign_target(shared, &body);
                shared.refused(&r, upstream, pid);
                if !write_all(&mut client, &FAILURE_FRAME, shared.limits.message).await {
                    return;
                }
                continue;
            }
            Verdict::Forward(p) => p,
        };
        if agent.is_none() {
            match UnixStream::connect(&shared.agent).await {
                Ok(a) => agent = Some(a),
                Err(e) => {
                    crate::audit::say(
                        crate::tool::Tool::AgentProxy,
                        format!("cannot reach the agent at {}: {e}", shared.agent.display()),
                    );
                    let _ = write_all(&mut client, &FAILURE_FRAME, shared.limits.message).await;
                    return;
                }
            }
        }
        let Some(a) = agent.as_mut() else { return };
        let reply = async {
            if !write_all(a, &protocol::frame(&body), shared.limits.agent).await {
                return None;
            }
            drop(body);
            match read_message(a, shared, None, shared.limits.agent).await {
                Ok(Some((reply, _))) => Some(reply),
                _ => None,
            }
        };
        let Some(reply) = reply.await else {
            // The agent went away or broke framing: fail this client, and
            // never reuse that agent connection.
            let _ = write_all(&mut client, &FAILURE_FRAME, shared.limits.message).await;
            return;
        };
        match conn.reply(pending, &reply) {
            Outcome::Listed | Outcome::Bound => {}
            Outcome::Signed { target } => {
                shared.signed(&shared.targets[target], pid);
            }
            Outcome::Refused(r) => shared.refused(&r, None, pid),
        }
        if !write_all(&mut client, &protocol::frame(&reply), shared.limits.message).await {
            return;
        }
        debug_assert!(reply.len() <= MAX_MESSAGE);
    }
}

/// The upstream a refused sign request asked for, for the log.
fn sign_target(shared: &Shared, body: &[u8]) -> Option<usize> {
    match protocol::parse_request(body) {
        Ok(protocol::Request::Sign { key, .. }) => shared.targets.iter().position(|t| t.key == key),
        _ => None,
    }
}
