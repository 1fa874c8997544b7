//! The event socket and the session registry: one connection per session
//! (the wrapper's), every `session.start` answered with a session id and
//! the identity the monitor found, and exactly one `session.end` per
//! start: the reported status, or `lost` the moment the connection closes
//! without one. The monitor decides who a session is; a message never
//! names its own identity, client address or transport.

use super::event::{Event, Format};
use super::procs::{self, ProcKey};
use super::protocol::{Msg, Reply, MAX_MESSAGE};
use super::relay::{client_key, Accepted, Said};
use super::Shared;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// How long a session waits for sshd's `Accepted publickey` line.
const ACCEPTED_WAIT: Duration = Duration::from_secs(5);
/// Accepted lines not claimed by a session within this are forgotten.
const ACCEPTED_KEEP: Duration = Duration::from_secs(600);
/// The identity when none can be established.
pub(crate) const UNKNOWN: &str = "unknown";

/// Who an SSH connection is, cached per privileged sshd.
#[derive(Debug, Clone)]
pub(crate) struct SshWho {
    identity: String,
    key: Option<String>,
    client: String,
}

/// What the relay and the sessions share about logins.
#[derive(Debug, Default)]
pub(crate) struct Logins {
    accepted: HashMap<String, VecDeque<Accepted>>,
    key_identity: HashMap<String, (Option<String>, Instant)>,
    by_sshd: HashMap<ProcKey, SshWho>,
}

/// A resource a session registered, released or reported when it ends.
#[derive(Debug, Clone)]
pub(crate) enum Resource {
    /// A session container (SPEC 12), by name.
    Container(String),
}

struct Session {
    id: String,
    identity: String,
    transport: &'static str,
    mode: &'static str,
    client: String,
    key: Option<String>,
    started: Instant,
    /// Set by `busy` or a broker refusal: the outcome whatever the exit.
    outcome: Option<&'static str>,
    resources: Vec<Resource>,
}

impl Shared {
    /// A line the relay parsed.
    pub(crate) fn sshd_said(&self, said: Said) {
        let mut st = self.state.lock().unwrap();
        match said {
            Said::Accepted {
                user,
                client,
                fingerprint,
            } => {
                if *user != *self.user {
                    return;
                }
                let now = Instant::now();
                let identity = st
                    .logins
                    .key_identity
                    .get(&fingerprint)
                    .filter(|(_, at)| now.duration_since(*at) < Duration::from_secs(120))
                    .and_then(|(i, _)| i.clone());
                let logins = &mut st.logins;
                logins.accepted.retain(|_, q| {
                    q.retain(|a| now.duration_since(a.at) < ACCEPTED_KEEP);
                    !q.is_empty()
                });
                logins
                    .accepted
                    .entry(client)
                    .or_default()
                    .push_back(Accepted {
                        fingerprint,
                        identity,
                        at: now,
                    });
                drop(st);
                self.logins_changed.notify_waiters();
            }
            Said::KeyIdentity {
                fingerprint,
                identity,
            } => {
                let logins = &mut st.logins;
                if logins.key_identity.len() > 4096 {
                    logins.key_identity.clear();
                }
                logins
                    .key_identity
                    .insert(fingerprint, (identity, Instant::now()));
            }
            Said::Failure => st.metrics.ssh_login_failures += 1,
            Said::Other => {}
        }
    }

    pub(crate) fn emit(&self, e: Event) {
        self.out
            .line(e.render(self.format, &super::event::now_rfc3339()));
    }

    /// A line of the monitor's own (not an audit event).
    pub(crate) fn note(&self, msg: &str) {
        match self.format {
            Format::Text => self.out.line(format!("bastion-monitor: {msg}")),
            Format::Json => self.emit(Event::new("monitor").str("message", msg)),
        }
    }
}

/// Accepts session connections until the task is dropped.
pub(crate) async fn serve(listener: UnixListener, shared: Shared) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let shared = shared.clone();
                tokio::spawn(async move { connection(stream, shared).await });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn connection(stream: UnixStream, shared: Shared) {
    let Ok((pid, _uid)) = crate::sys::socket::peer_cred(&stream) else {
        return;
    };
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut session: Option<Session> = None;
    let mut ended = false;
    loop {
        let mut line = Vec::new();
        let n = (&mut r)
            .take(MAX_MESSAGE as u64)
            .read_until(b'\n', &mut line)
            .await
            .unwrap_or_default();
        if n == 0 || !line.ends_with(b"\n") {
            break;
        }
        let Ok(msg) = serde_json::from_slice::<Msg>(&line) else {
            shared.note(&format!(
                "unreadable message from pid {pid}: {}",
                crate::audit::escape_bytes(&line[..line.len().min(200)])
            ));
            break;
        };
        let reply = match msg {
            Msg::Ping => Some(Reply {
                session: None,
                identity: None,
                error: None,
            }),
            Msg::Start { .. } if session.is_some() => break,
            Msg::Start {
                mode,
                tty,
                request,
                ssh_connection,
                http_who,
                http_client,
            } => match start(&shared, pid, &mode, ssh_connection, http_who, http_client).await {
                Ok(s) => {
                    shared.emit(
                        common(Event::new("session.start"), &s)
                            .str("mode", s.mode)
                            .bool("tty", tty)
                            .opt("request", request),
                    );
                    shared.state.lock().unwrap().metrics.active(s.transport, 1);
                    let reply = Reply {
                        session: Some(s.id.clone()),
                        identity: Some(s.identity.clone()),
                        error: None,
                    };
                    session = Some(s);
                    Some(reply)
                }
                Err(e) => {
                    shared.note(&format!("refused a session from pid {pid}: {e}"));
                    Some(Reply {
                        session: None,
                        identity: None,
                        error: Some(e),
                    })
                }
            },
            Msg::HttpAuthFailure => {
                if is_listener(&shared, pid) {
                    shared.state.lock().unwrap().metrics.http_auth_failures += 1;
                }
                None
            }
            _ if session.is_none() || ended => break,
            Msg::Decision {
                allow,
                request,
                rule,
                source,
                reason,
            } => {
                let s = session.as_mut().expect("checked above");
                let e = if allow {
                    shared.state.lock().unwrap().metrics.allowed += 1;
                    common(Event::new("command.allow"), s)
                        .str("request", request)
                        .opt("rule", rule)
                        .opt("source", source)
                } else {
                    shared.state.lock().unwrap().metrics.denied += 1;
                    s.outcome = Some("denied");
                    common(Event::new("command.deny"), s)
                        .str("request", request)
                        .opt("reason", reason)
                };
                shared.emit(e);
                None
            }
            Msg::Busy => {
                let s = session.as_mut().expect("checked above");
                s.outcome = Some("busy");
                shared.emit(common(Event::new("session.busy"), s));
                None
            }
            Msg::Register { container } => {
                let s = session.as_mut().expect("checked above");
                s.resources.push(Resource::Container(container));
                None
            }
            Msg::End { exit } => {
                let s = session.as_ref().expect("checked above");
                end(&shared, s, &exit);
                ended = true;
                Some(Reply {
                    session: Some(s.id.clone()),
                    identity: None,
                    error: None,
                })
            }
        };
        if let Some(reply) = reply {
            let mut b = serde_json::to_vec(&reply).unwrap_or_default();
            b.push(b'\n');
            if w.write_all(&b).await.is_err() {
                break;
            }
        }
    }
    if let Some(s) = &session {
        if !ended {
            end(&shared, s, "lost");
        }
    }
}

/// The common fields of SPEC 11 (`ts` and `event` are added by render).
fn common(e: Event, s: &Session) -> Event {
    let e = e
        .str("session", s.id.clone())
        .str("identity", s.identity.clone())
        .str("transport", s.transport)
        .str("client", s.client.clone())
        .opt("key", s.key.clone());
    s.resources.iter().fold(e, |e, r| match r {
        Resource::Container(name) => e.str("container", name.clone()),
    })
}

fn end(shared: &Shared, s: &Session, exit: &str) {
    let took = s.started.elapsed();
    shared.emit(
        common(Event::new("session.end"), s)
            .str("exit", exit)
            .int("duration_ms", took.as_millis() as i64),
    );
    let outcome = match (s.outcome, exit) {
        (_, "lost") => "lost",
        (Some(o), _) => o,
        (None, "0") => "ok",
        (None, _) => "failed",
    };
    let mut st = shared.state.lock().unwrap();
    st.metrics.active(s.transport, -1);
    st.metrics.observe_duration(took);
    *st.metrics
        .sessions
        .entry((s.transport, s.mode, outcome))
        .or_default() += 1;
}

/// Whether `pid` is the HTTP listener the monitor runs. Only the listener
/// itself: it runs each request in-process, so its children are session
/// commands, which must never report an HTTP session (or a user) of their
/// choosing.
fn is_listener(shared: &Shared, pid: i32) -> bool {
    let Some(cgi) = shared.state.lock().unwrap().listener else {
        return false;
    };
    pid == cgi.pid && procs::alive(cgi)
}

async fn start(
    shared: &Shared,
    pid: i32,
    mode: &str,
    ssh_connection: Option<String>,
    http_who: Option<String>,
    http_client: Option<String>,
) -> Result<Session, String> {
    let mode: &'static str = match mode {
        "force" => "force",
        "broker" => "broker",
        "session" => "session",
        _ => return Err("unknown mode".into()),
    };
    let (transport, identity, client, key) = if is_listener(shared, pid) {
        let who = http_who.ok_or("an HTTP session without its user")?;
        let client = http_client.ok_or("an HTTP session without its client")?;
        ("http", who, client, None)
    } else if let Some(sshd) = procs::sshd_ancestor(pid) {
        let who = ssh_identity(shared, sshd, ssh_connection.as_deref()).await;
        ("ssh", who.identity, who.client, who.key)
    } else {
        return Err("the peer is neither under an sshd connection nor the HTTP listener".into());
    };
    Ok(Session {
        id: session_id()?,
        identity,
        transport,
        mode,
        client,
        key,
        started: Instant::now(),
        outcome: None,
        resources: Vec::new(),
    })
}

/// The identity of the connection `sshd` stands for: cached after the
/// first session of that connection; otherwise the key sshd logged as
/// accepted for the client address in `SSH_CONNECTION`, each accepted
/// line claimed by one connection only.
async fn ssh_identity(shared: &Shared, sshd: ProcKey, conn: Option<&str>) -> SshWho {
    if let Some(w) = shared.state.lock().unwrap().logins.by_sshd.get(&sshd) {
        return w.clone();
    }
    let client = conn
        .and_then(|c| {
            let mut it = c.split(' ');
            Some(client_key(it.next()?, it.next()?))
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let deadline = tokio::time::Instant::now() + ACCEPTED_WAIT;
    let found = loop {
        let changed = shared.logins_changed.notified();
        {
            let mut st = shared.state.lock().unwrap();
            if let Some(w) = st.logins.by_sshd.get(&sshd) {
                return w.clone();
            }
            if let Some(a) = st
                .logins
                .accepted
                .get_mut(&client)
                .and_then(VecDeque::pop_front)
            {
                break Some(a);
            }
        }
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            break None;
        }
    };
    let who = match found {
        Some(a) => {
            if a.identity.is_none() {
                shared.note(&format!(
                    "key {} of client {} maps to no users.d file or merged key: identity {UNKNOWN}",
                    a.fingerprint,
                    crate::audit::escape(&client)
                ));
            }
            SshWho {
                identity: a.identity.unwrap_or_else(|| UNKNOWN.to_owned()),
                key: Some(a.fingerprint),
                client,
            }
        }
        None => {
            shared.note(&format!(
                "no accepted login of client {} in sshd's log: identity {UNKNOWN}",
                crate::audit::escape(&client)
            ));
            SshWho {
                identity: UNKNOWN.to_owned(),
                key: None,
                client,
            }
        }
    };
    let mut st = shared.state.lock().unwrap();
    let cache = &mut st.logins.by_sshd;
    if cache.len() > 1024 {
        cache.retain(|k, _| procs::alive(*k));
    }
    cache.insert(sshd, who.clone());
    who
}

/// 16 lowercase hex characters from the kernel's random source.
fn session_id() -> Result<String, String> {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .map_err(|e| format!("no random session id: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}
