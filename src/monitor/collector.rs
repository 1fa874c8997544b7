//! The event socket and the session registry: one connection per session
//! (the wrapper's), every `session.start` answered with a session id and
//! the identity the monitor found, and exactly one `session.end` per
//! start: the reported status, or `lost` the moment the connection closes
//! without one. The monitor decides who a session is; a message never
//! names its own identity, client address or transport.

use super::procs::{self, ProcKey};
use super::relay::{client_key, Accepted, Said};
use super::Shared;
use crate::audit::{Format, Record};
use crate::container::engine::Engine;
use crate::gate::network::EngineCli;
use crate::gate::relay::{ConnectRecord, EventSink, Limits};
use crate::gate::{GateSpec, SessionGate};
use crate::session::protocol::{Msg, Reply, MAX_MESSAGE};
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

    pub(crate) fn emit(&self, e: Record) {
        self.out.line(crate::audit::render_now(&e, self.format));
    }

    /// A line of the monitor's own (not an audit event).
    pub(crate) fn note(&self, msg: &str) {
        match self.format {
            Format::Text => self.out.line(format!("bastion-monitor: {msg}")),
            Format::Json => self.emit(Record::new("monitor").str("message", msg)),
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
    let Ok((pid, _uid)) = crate::sys::peer::peer_cred(&stream) else {
        return;
    };
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut session: Option<Session> = None;
    let mut gate: Option<SessionGate> = None;
    let mut wrapper: Option<ProcKey> = None;
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
            Msg::Ping => Some(Reply::default()),
            // One session at a time; a connection whose session ended may
            // start the next (the listener keeps its connections).
            Msg::Start { .. } if session.is_some() && !ended => break,
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
                        common(Record::new("session.start"), &s)
                            .str("mode", s.mode)
                            .bool("tty", tty)
                            .opt("request", request),
                    );
                    {
                        let mut st = shared.state.lock().unwrap();
                        st.metrics.active(s.transport, 1);
                        // The agent proxy's events name the SSH session
                        // whose wrapper (this peer) asked.
                        if s.transport == "ssh" {
                            if let Some(k) = procs::key(pid) {
                                st.live.insert(k, (s.id.clone(), s.identity.clone()));
                                wrapper = Some(k);
                            }
                        }
                    }
                    let reply = Reply {
                        session: Some(s.id.clone()),
                        identity: Some(s.identity.clone()),
                        ..Reply::default()
                    };
                    session = Some(s);
                    ended = false;
                    Some(reply)
                }
                Err(e) => {
                    shared.note(&format!("refused a session from pid {pid}: {e}"));
                    Some(Reply {
                        error: Some(e),
                        ..Reply::default()
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
                    common(Record::new("command.allow"), s)
                        .str("request", request)
                        .opt("rule", rule)
                        .opt("source", source)
                } else {
                    shared.state.lock().unwrap().metrics.denied += 1;
                    s.outcome = Some("denied");
                    common(Record::new("command.deny"), s)
                        .str("request", request)
                        .opt("reason", reason)
                };
                shared.emit(e);
                None
            }
            Msg::Busy => {
                let s = session.as_mut().expect("checked above");
                s.outcome = Some("busy");
                shared.emit(common(Record::new("session.busy"), s));
                None
            }
            Msg::Register { container } => {
                let s = session.as_mut().expect("checked above");
                let error = register(&shared, s, container);
                Some(Reply {
                    error,
                    ..Reply::default()
                })
            }
            Msg::Gate => {
                let s = session.as_ref().expect("checked above");
                Some(match open_gate(&shared, s, &gate).await {
                    Ok(g) => {
                        let reply = Reply {
                            network: Some(g.network().to_owned()),
                            address: Some(g.address().to_string()),
                            ..Reply::default()
                        };
                        gate = Some(g);
                        reply
                    }
                    Err(e) => {
                        shared.note(&format!("no egress gate for session {}: {e}", s.id));
                        Reply {
                            error: Some(e),
                            ..Reply::default()
                        }
                    }
                })
            }
            Msg::End { exit, timed_out } => {
                let s = session.as_ref().expect("checked above");
                end(&shared, s, &exit, timed_out);
                // The runner removed its container before reporting the end.
                containers_ended(&shared, s, if exit == "125" { "failed" } else { "started" });
                close_gate(&shared, s, gate.take()).await;
                ended = true;
                Some(Reply {
                    session: Some(s.id.clone()),
                    ..Reply::default()
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
    if let Some(k) = wrapper {
        shared.state.lock().unwrap().live.remove(&k);
    }
    if let Some(s) = &session {
        if !ended {
            end(&shared, s, "lost", false);
            reap(&shared, s).await;
        }
        // After the container is gone: nothing is left on the network.
        close_gate(&shared, s, gate.take()).await;
    }
}

/// Opens the egress gate of session `s` (SPEC 14): only where the gate is
/// configured, once, and only after the session's container is registered
/// (so a lost session's container is removed before its network).
async fn open_gate(
    shared: &Shared,
    s: &Session,
    open: &Option<SessionGate>,
) -> Result<SessionGate, String> {
    let (Some(cfg), Some(engine)) = (shared.gate.clone(), shared.engine.clone()) else {
        return Err("this bastion has no egress gate (no UPSTREAMS with SESSION_IMAGE)".into());
    };
    if open.is_some() {
        return Err("the session's gate is open already".into());
    }
    if s.resources.is_empty() {
        return Err("no session container is registered".into());
    }
    let spec = GateSpec {
        session: s.id.clone(),
        identity: s.identity.clone(),
        instance: cfg.instance.clone(),
        targets: cfg.runtime.targets.clone(),
        own_ports: cfg.runtime.own_ports.clone(),
        limits: Limits::default(),
    };
    let out = shared.clone();
    let sink: EventSink = std::sync::Arc::new(move |r: ConnectRecord| {
        out.emit(r.record());
    });
    SessionGate::open(spec, &engine_cli(&engine), sink)
        .await
        .map_err(|e| e.to_string())
}

/// The engine's CLI for the gate's network calls: the runtime file's
/// engine, its environment and address.
pub(crate) fn engine_cli(engine: &std::sync::Arc<Engine>) -> EngineCli {
    let e = engine.clone();
    EngineCli::from_command(engine.cli.display().to_string(), move || e.command())
}

/// Closes the session's gate (its connections are logged
/// `outcome=gate-closed`), removing its network.
async fn close_gate(shared: &Shared, s: &Session, gate: Option<SessionGate>) {
    let Some(g) = gate else { return };
    if let Err(e) = g.close().await {
        shared.note(&format!(
            "warning: session {}: {e} (it is removed at the next boot)",
            s.id
        ));
    }
}

/// A session container the session will create: only the one named after
/// this session's own id, only where session containers are configured,
/// one per session. `None` when accepted, else why not.
fn register(shared: &Shared, s: &mut Session, container: String) -> Option<String> {
    if shared.engine.is_none() {
        return Some("this bastion runs no session containers".into());
    }
    if container != crate::container::plan::container_name(&s.id)
        || !crate::container::watch::is_session_name(&container)
    {
        return Some("not this session's container name".into());
    }
    if !s.resources.is_empty() {
        return Some("a container is registered already".into());
    }
    s.resources.push(Resource::Container(container));
    shared.state.lock().unwrap().metrics.containers_active += 1;
    None
}

/// Counts the session's containers as ended with `outcome`.
fn containers_ended(shared: &Shared, s: &Session, outcome: &'static str) {
    let n = s.resources.len();
    if n == 0 {
        return;
    }
    let mut st = shared.state.lock().unwrap();
    st.metrics.containers_active -= n as i64;
    *st.metrics.containers.entry(outcome).or_default() += n as u64;
}

/// The session's connection dropped without an end (its runner was
/// killed, or died): `ENGINE rm -f` each container it registered. The
/// monitor outlives the runner and the engine CLI, and the session cannot
/// signal it.
async fn reap(shared: &Shared, s: &Session) {
    let Some(engine) = shared.engine.clone() else {
        return;
    };
    for Resource::Container(name) in s.resources.clone() {
        let engine = engine.clone();
        let n = name.clone();
        let r = tokio::task::spawn_blocking(move || {
            crate::container::reap::remove_container(&engine, &n)
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        match r {
            Ok(()) => shared.note(&format!(
                "removed session container {name} (session {} lost)",
                s.id
            )),
            Err(e) => shared.note(&format!("warning: {e}")),
        }
    }
    containers_ended(shared, s, "reaped");
}

/// The common fields of SPEC 11 (`ts` and `event` are added by render).
fn common(e: Record, s: &Session) -> Record {
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

/// `timed_out`: `SESSION_TIMEOUT` stopped the session (`reason=timeout`).
fn end(shared: &Shared, s: &Session, exit: &str, timed_out: bool) {
    let took = s.started.elapsed();
    shared.emit(
        common(Record::new("session.end"), s)
            .str("exit", exit)
            .int("duration_ms", took.as_millis() as i64)
            .opt("reason", timed_out.then_some("timeout")),
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

/// Whether `pid` is a wrapper the listener started for a session
/// container. Where session containers run, the listener runs no command
/// itself: each request's wrapper is its only kind of child (the command
/// runs in the container, under the wrapper), so a direct child of the
/// listener may report an HTTP session.
fn is_listener_wrapper(shared: &Shared, pid: i32) -> bool {
    if shared.engine.is_none() {
        return false;
    }
    let Some(cgi) = shared.state.lock().unwrap().listener else {
        return false;
    };
    procs::alive(cgi) && procs::stat(pid).is_some_and(|s| s.ppid == cgi.pid)
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
    let (transport, identity, client, key) = if is_listener(shared, pid)
        || is_listener_wrapper(shared, pid)
    {
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
    crate::sys::random::hex_id().map_err(|e| format!("no random session id: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn shared(containers: bool) -> Shared {
        Shared {
            state: Arc::new(Mutex::new(super::super::State {
                logins: Default::default(),
                live: Default::default(),
                metrics: Default::default(),
                listener: None,
            })),
            logins_changed: Arc::new(tokio::sync::Notify::new()),
            out: super::super::output::Output::start(Box::new(std::io::sink()), Format::Text),
            format: Format::Text,
            user: "agent".into(),
            gate: None,
            engine: containers.then(|| {
                Arc::new(crate::container::engine::Engine {
                    kind: crate::container::settings::EngineKind::Docker,
                    cli: "/bin/false".into(),
                    host: None,
                    podman: false,
                })
            }),
        }
    }

    fn session(id: &str) -> Session {
        Session {
            id: id.into(),
            identity: "alice".into(),
            transport: "ssh",
            mode: "session",
            client: "127.0.0.1".into(),
            key: None,
            started: Instant::now(),
            outcome: None,
            resources: Vec::new(),
        }
    }

    /// The listener keeps its connection: once a session has ended the next
    /// may start on it, but never a second one while a session runs (that
    /// closes the connection, and the running session is lost).
    #[test]
    fn a_connection_carries_one_session_at_a_time() {
        let sh = shared(false);
        sh.state.lock().unwrap().listener = procs::key(std::process::id() as i32);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (ours, theirs) = UnixStream::pair().unwrap();
            let task = tokio::spawn(connection(theirs, sh.clone()));
            let (r, mut w) = ours.into_split();
            let mut r = BufReader::new(r);
            let start = "{\"op\":\"start\",\"mode\":\"broker\",\"tty\":false,\"request\":\"echo hi\",\"http_who\":\"bearer\",\"http_client\":\"127.0.0.1:1\"}\n";
            let end = "{\"op\":\"end\",\"exit\":\"0\"}\n";
            let mut ids = Vec::new();
            for m in [start, end, start, end, start] {
                w.write_all(m.as_bytes()).await.unwrap();
                let mut line = String::new();
                r.read_line(&mut line).await.unwrap();
                let reply: Reply = serde_json::from_str(&line).unwrap();
                assert_eq!(reply.error, None, "{line}");
                if m == start {
                    ids.push(reply.session.unwrap());
                }
            }
            assert!(ids[0] != ids[1] && ids[1] != ids[2], "{ids:?}");
            // A second start while the third session runs: no answer, the
            // connection is closed.
            w.write_all(start.as_bytes()).await.unwrap();
            let mut line = String::new();
            assert_eq!(r.read_line(&mut line).await.unwrap(), 0, "{line}");
            task.await.unwrap();
        });
        let st = sh.state.lock().unwrap();
        assert_eq!(st.metrics.sessions.get(&("http", "broker", "ok")), Some(&2));
        assert_eq!(
            st.metrics.sessions.get(&("http", "broker", "lost")),
            Some(&1)
        );
    }

    #[test]
    fn a_session_registers_only_its_own_container_once() {
        let sh = shared(true);
        let mut s = session("0123456789abcdef");
        for hostile in [
            "bastion-session-fedcba9876543210",
            "bastion-session-0123456789ABCDEF",
            "bastion-session-0123456789abcdef0",
            "bastion-session-0123456789abcdef; rm -rf /",
            "--all",
            "my-database",
            "",
        ] {
            assert!(
                register(&sh, &mut s, hostile.into()).is_some(),
                "{hostile:?} accepted"
            );
        }
        assert!(s.resources.is_empty());
        assert_eq!(
            register(&sh, &mut s, "bastion-session-0123456789abcdef".into()),
            None
        );
        assert!(register(&sh, &mut s, "bastion-session-0123456789abcdef".into()).is_some());
        assert_eq!(sh.state.lock().unwrap().metrics.containers_active, 1);
        containers_ended(&sh, &s, "started");
        let st = sh.state.lock().unwrap();
        assert_eq!(st.metrics.containers_active, 0);
        assert_eq!(st.metrics.containers.get("started"), Some(&1));
    }

    #[tokio::test]
    async fn a_gate_opens_only_where_configured_and_after_the_container() {
        let mut sh = shared(true);
        let mut s = session("0123456789abcdef");
        let e = open_gate(&sh, &s, &None).await.err().unwrap();
        assert!(e.contains("no egress gate"), "{e}");
        sh.gate = Some(Arc::new(super::super::GateConfig {
            runtime: crate::gate::GateRuntime {
                share_source: "/srv/share".into(),
                targets: Vec::new(),
                own_ports: vec![22],
            },
            instance: "f".repeat(64),
        }));
        let e = open_gate(&sh, &s, &None).await.err().unwrap();
        assert!(e.contains("no session container is registered"), "{e}");
        assert_eq!(
            register(&sh, &mut s, "bastion-session-0123456789abcdef".into()),
            None
        );
        // Now the engine is asked (and this one fails): its words come back.
        let e = open_gate(&sh, &s, &None).await.err().unwrap();
        assert!(
            e.starts_with("cannot create the session network bastion-net-0123456789abcdef: "),
            "{e}"
        );
    }

    #[test]
    fn a_bastion_without_session_containers_registers_none() {
        let sh = shared(false);
        let mut s = session("0123456789abcdef");
        assert!(register(&sh, &mut s, "bastion-session-0123456789abcdef".into()).is_some());
        assert!(s.resources.is_empty());
    }
}
