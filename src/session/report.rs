//! One session as the monitor sees it. [`Session`] is the client side of
//! the monitor's event socket that every session uses: the wrapper (SSH)
//! and the HTTP listener, which runs the command in-process. [`Report`] is
//! the listener's one place where an HTTP session starts (before the
//! lock), is decided and ends (exactly once, however it ended).

use crate::config::{Mode, Runtime};
use crate::session::protocol::{Client, Msg, Reply, CLIENT_TIMEOUT, MAX_MESSAGE};
use crate::session::SessionEnv;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The session as the monitor knows it (or, without a monitor, a fresh
/// id and identity `unknown`).
pub(crate) struct Session {
    id: String,
    identity: String,
    monitor: Option<Client>,
}

impl Session {
    /// Asks the monitor at `monitor` for the session id and identity with
    /// `start` (a [`Msg::Start`]). Without a monitor (none in the runtime
    /// file: outside the image or `--prepare-only`) the session still
    /// runs, as `unknown`; with one that cannot be reached or refuses,
    /// this is the message to give and nothing runs (fail closed).
    pub(crate) fn open(monitor: Option<&Path>, start: &Msg) -> Result<Session, String> {
        let Some(path) = monitor else {
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
        let reply = client.ask(start).map_err(|e| refused(e.to_string()))?;
        match (reply.session, reply.identity, reply.error) {
            (Some(id), Some(identity), None) => Ok(Session {
                id,
                identity,
                monitor: Some(client),
            }),
            (_, _, e) => Err(refused(e.unwrap_or_else(|| "no session id".into()))),
        }
    }

    pub(crate) fn report(&mut self, m: &Msg) {
        if let Some(c) = &mut self.monitor {
            // A monitor that went away sees the connection close and logs
            // the session as lost; nothing more to do here.
            let _ = c.send(m);
        }
    }

    /// Reports the end and waits until the monitor has logged it.
    pub(crate) fn end(&mut self, exit: String) {
        self.end_as(exit, false);
    }

    /// [`Session::end`], saying whether `SESSION_TIMEOUT` ended it.
    pub(crate) fn end_as(&mut self, exit: String, timed_out: bool) {
        if let Some(c) = &mut self.monitor {
            let _ = c.ask(&Msg::End { exit, timed_out });
        }
    }

    /// A session container runner's end ([`Finished`]): `SESSION_MAX`
    /// refusals are busy sessions, as a held lock is.
    pub(crate) fn finished(&mut self, f: Finished) {
        match f {
            Finished::Busy => {
                self.report(&Msg::Busy);
                self.end(f.code().to_string());
            }
            Finished::Status(c) => self.end(c.to_string()),
            Finished::Deadline(c) => self.end_as(c.to_string(), true),
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn identity(&self) -> &str {
        &self.identity
    }

    pub(crate) fn has_monitor(&self) -> bool {
        self.monitor.is_some()
    }

    /// Registers a session container (see `container::watch`): the
    /// monitor removes it if this connection drops before the end.
    pub(crate) fn register(&mut self, name: &str) -> Result<(), String> {
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

    /// Asks the monitor to open the session's egress gate (SPEC 14), after
    /// [`Session::register`]: the network and the gate's address there.
    pub(crate) fn gate(&mut self) -> Result<(String, String), String> {
        let Some(c) = &mut self.monitor else {
            return Err("the egress gate needs the bastion's monitor".into());
        };
        let reply = c
            .ask(&Msg::Gate)
            .map_err(|e| format!("the monitor did not open the egress gate: {e}"))?;
        match (reply.network, reply.address, reply.error) {
            (Some(n), Some(a), None) => Ok((n, a)),
            (_, _, Some(e)) => Err(e),
            _ => Err("the monitor gave no gate network".into()),
        }
    }

    /// `env` plus who the session is (the command's environment).
    pub(crate) fn tag(&self, env: SessionEnv) -> SessionEnv {
        env.with("BASTION_IDENTITY", &self.identity)
            .with("BASTION_SESSION_ID", &self.id)
    }
}

/// The mode as the monitor spells it (SPEC 11: `session` is the session
/// image's own command).
pub(crate) fn mode_name(mode: &Mode) -> &'static str {
    match mode {
        Mode::Force { .. } => "force",
        Mode::Broker => "broker",
        Mode::Image => "session",
    }
}

/// A broker decision as the monitor is told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decided {
    pub(crate) request: String,
    /// The allowing rule and its source; the reason of a deny.
    pub(crate) rule: Option<(String, String)>,
    pub(crate) reason: Option<String>,
}

/// The broker's decision as the monitor is told it.
pub(crate) fn decision(allow: bool, d: Decided) -> Msg {
    let (rule, source) = d.rule.map_or((None, None), |(r, s)| (Some(r), Some(s)));
    Msg::Decision {
        allow,
        request: d.request,
        rule,
        source,
        reason: d.reason,
    }
}

/// 16 lowercase hex characters from the kernel's random source (a
/// session without a monitor still gets an id of the same form).
fn random_id() -> Result<String, String> {
    crate::sys::random::hex_id().map_err(|e| format!("no random session id: {e}"))
}

/// How a session ended, as its report tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finished {
    /// The session's exit status (the engine's status of the container:
    /// 128+N when its command died of signal N, or exited so; the engine
    /// does not tell the two apart).
    Status(u8),
    /// `SESSION_TIMEOUT` stopped it; the status it ended with.
    Deadline(u8),
    /// `SESSION_MAX` containers were running: the busy line, exit 0.
    Busy,
}

impl Finished {
    pub(crate) fn code(self) -> u8 {
        match self {
            Finished::Status(c) | Finished::Deadline(c) => c,
            Finished::Busy => crate::exit::OK,
        }
    }
}

/// How an HTTP session ended, as the audit trail spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum End {
    /// The command's exit status, or the wrapper's own (busy, denied, not
    /// found) when nothing ran.
    Code(i32),
    /// The command was killed by signal N (its client went away, the
    /// listener stopped, or anything else).
    Signal(i32),
    /// Nothing ran and no status exists (the client left while waiting
    /// for the lock): the monitor logs the session as lost.
    Lost,
}

/// A started HTTP session. Its monitor connection is close-on-exec and
/// lives in the listener, which the monitor believes as the one peer that
/// may report HTTP sessions. It is driven on the listener's own thread
/// (non-blocking, every wait bounded by the client's timeout), so a
/// request costs no hand-off to another thread to talk to the monitor.
#[must_use = "a started session must be ended"]
pub(crate) struct Report {
    id: String,
    identity: String,
    monitor: Option<(Link, Arc<Links>)>,
}

/// The listener's connections to the monitor that are between sessions:
/// the monitor logs one session at a time on a connection and lets the
/// next start once the last ended, so a request reuses one instead of
/// connecting (and being accepted and checked) anew.
#[derive(Default)]
pub(crate) struct Links(Mutex<Vec<Link>>);

/// Idle connections kept at most (more than the listener's default bound
/// on commands running at once).
const IDLE_LINKS: usize = 64;

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle = self.0.lock().map_or(0, |l| l.len());
        write!(f, "Links({idle} idle)")
    }
}

impl Links {
    /// A kept connection made through the socket file `socket`; the
    /// others are dropped (their monitor socket is gone).
    fn take_for(&self, socket: (u64, u64)) -> Option<Link> {
        let mut idle = self.0.lock().ok()?;
        idle.retain(|l| l.socket == Some(socket));
        idle.pop()
    }

    fn give(&self, link: Link) {
        if let Ok(mut idle) = self.0.lock() {
            if idle.len() < IDLE_LINKS {
                idle.push(link);
            }
        }
    }
}

impl Report {
    /// An authorized request from `client` (`who`: the Basic user, or
    /// `bearer`) starts, before the lock: waits for the monitor's answer
    /// (without holding up other requests). Errors: the message the
    /// wrapper gives when its monitor cannot log the session; nothing may
    /// run.
    pub(crate) async fn start(
        rt: &Runtime,
        links: &Arc<Links>,
        who: &str,
        client: SocketAddr,
        request: Option<&[u8]>,
    ) -> Result<Self, String> {
        let Some(path) = rt.monitor_socket.as_deref() else {
            return Ok(Self {
                id: random_id()?,
                identity: "unknown".into(),
                monitor: None,
            });
        };
        let start = Msg::Start {
            mode: mode_name(&rt.mode).into(),
            tty: false,
            request: match rt.mode {
                Mode::Broker => Some(String::from_utf8_lossy(request.unwrap_or_default()).into()),
                Mode::Force { .. } | Mode::Image => None,
            },
            ssh_connection: None,
            http_who: Some(who.to_owned()),
            http_client: Some(client.to_string()),
        };
        let refused = |e: String| {
            format!(
                "the bastion's monitor at {} cannot log this session ({e}); nothing was run",
                crate::audit::escape_path(path)
            )
        };
        let fresh = || async {
            let id = socket_id(path);
            let mut link = Link::connect(path)?;
            link.socket = id;
            let reply = link.ask(&start).await?;
            Ok::<_, std::io::Error>((link, reply))
        };
        // A kept connection only while the socket it came through is still
        // the one at `path`: a socket removed or replaced means that monitor
        // takes no new sessions, as a fresh connect would find.
        let kept = socket_id(path).and_then(|now| links.take_for(now));
        let asked = match kept {
            Some(mut link) => match link.ask(&start).await {
                Ok(reply) => Ok((link, reply)),
                // A kept connection the monitor has closed since: a new one.
                Err(e) if e.kind() != std::io::ErrorKind::TimedOut => fresh().await,
                Err(e) => Err(e),
            },
            None => fresh().await,
        };
        let (link, reply) = asked.map_err(|e| refused(e.to_string()))?;
        match (reply.session, reply.identity, reply.error) {
            (Some(id), Some(identity), None) => Ok(Self {
                id,
                identity,
                monitor: Some((link, Arc::clone(links))),
            }),
            (_, _, e) => Err(refused(e.unwrap_or_else(|| "no session id".into()))),
        }
    }

    /// The command's environment: `env` plus who the session is.
    pub(crate) fn env(&self, env: SessionEnv) -> SessionEnv {
        env.with("BASTION_IDENTITY", &self.identity)
            .with("BASTION_SESSION_ID", &self.id)
    }

    /// The lock was held: the busy line goes out.
    pub(crate) async fn busy(&mut self) {
        self.report(&Msg::Busy).await;
    }

    /// The broker decided.
    pub(crate) async fn decided(&mut self, allow: bool, d: Decided) {
        self.report(&decision(allow, d)).await;
    }

    async fn report(&mut self, m: &Msg) {
        if let Some((link, _)) = &mut self.monitor {
            // A monitor that went away sees the connection close and logs
            // the session as lost; nothing more to do here.
            let _ = link.send(m).await;
        }
    }

    /// The session is over. Waits until the monitor has logged it; the
    /// connection then serves a later session.
    pub(crate) async fn end(self, end: End) {
        let exit = match end {
            End::Code(c) => c.to_string(),
            End::Signal(n) => format!("signal:{n}"),
            // Closing the connection without an end is how the monitor
            // learns a session was lost.
            End::Lost => return,
        };
        if let Some((mut link, links)) = self.monitor {
            if link
                .ask(&Msg::End {
                    exit,
                    timed_out: false,
                })
                .await
                .is_ok()
            {
                links.give(link);
            }
        }
    }
}

/// One session's connection to the monitor, non-blocking on the
/// listener's runtime: [`Client`]'s protocol, each wait bounded by
/// [`CLIENT_TIMEOUT`].
struct Link {
    stream: tokio::net::UnixStream,
    /// Device and inode of the socket file it was connected through.
    socket: Option<(u64, u64)>,
    /// Bytes read past the last reply's newline (none, from a monitor that
    /// answers one line per question).
    read: Vec<u8>,
}

impl Link {
    /// Connects without waiting on a full backlog (close-on-exec, so a
    /// command never holds the session's connection).
    fn connect(path: &Path) -> std::io::Result<Link> {
        let s = crate::sys::unix_connect::connect_unix_nonblocking(path)?;
        Ok(Link {
            stream: tokio::net::UnixStream::from_std(s)?,
            socket: None,
            read: Vec::new(),
        })
    }

    async fn send(&mut self, m: &Msg) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt as _;
        let mut line = serde_json::to_vec(m).map_err(std::io::Error::other)?;
        line.push(b'\n');
        bounded(self.stream.write_all(&line)).await
    }

    async fn ask(&mut self, m: &Msg) -> std::io::Result<Reply> {
        self.send(m).await?;
        let line = bounded(self.read_line()).await?;
        serde_json::from_slice(&line).map_err(std::io::Error::other)
    }

    async fn read_line(&mut self) -> std::io::Result<Vec<u8>> {
        use tokio::io::AsyncReadExt as _;
        loop {
            if let Some(at) = self.read.iter().position(|&b| b == b'\n') {
                let rest = self.read.split_off(at + 1);
                return Ok(std::mem::replace(&mut self.read, rest));
            }
            if self.read.len() >= MAX_MESSAGE {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the monitor's answer is too long",
                ));
            }
            self.read.reserve(512);
            if self.stream.read_buf(&mut self.read).await? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the monitor closed the connection",
                ));
            }
        }
    }
}

/// Device and inode of the file at `path` (not following a symlink).
fn socket_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// `io`, given up after [`CLIENT_TIMEOUT`] (a stuck monitor).
async fn bounded<T>(
    io: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    tokio::time::timeout(CLIENT_TIMEOUT, io)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {} s", CLIENT_TIMEOUT.as_secs()),
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_spelled_as_spec_11_names_them() {
        let force = Mode::Force {
            command: "true".into(),
        };
        assert_eq!(mode_name(&force), "force");
        assert_eq!(mode_name(&Mode::Broker), "broker");
        assert_eq!(mode_name(&Mode::Image), "session");
    }
}
