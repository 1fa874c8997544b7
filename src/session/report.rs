//! One session as the monitor sees it. [`Session`] is the client side of
//! the monitor's event socket that every session uses: the wrapper (SSH)
//! and the HTTP listener, which runs the command in-process. [`Report`] is
//! the listener's one place where an HTTP session starts (before the
//! lock), is decided and ends (exactly once, however it ended).

use crate::config::{Mode, Runtime};
use crate::session::protocol::{Client, Msg};
use crate::session::SessionEnv;
use std::net::SocketAddr;
use std::path::Path;

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
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .map_err(|e| format!("no random session id: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
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
/// may report HTTP sessions.
#[must_use = "a started session must be ended"]
pub(crate) struct Report {
    session: Session,
}

impl Report {
    /// An authorized request from `client` (`who`: the Basic user, or
    /// `bearer`) starts, before the lock. Blocks on the monitor (bounded
    /// by the client's timeouts): call it off the listener's thread.
    /// Errors: the message the wrapper gives when its monitor cannot log
    /// the session; nothing may run.
    pub(crate) fn start(
        rt: &Runtime,
        who: &str,
        client: SocketAddr,
        request: Option<&[u8]>,
    ) -> Result<Self, String> {
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
        Session::open(rt.monitor_socket.as_deref(), &start).map(|session| Self { session })
    }

    /// The command's environment: `env` plus who the session is.
    pub(crate) fn env(&self, env: SessionEnv) -> SessionEnv {
        self.session.tag(env)
    }

    /// The lock was held: the busy line goes out.
    pub(crate) fn busy(&mut self) {
        self.session.report(&Msg::Busy);
    }

    /// The broker decided.
    pub(crate) fn decided(&mut self, allow: bool, d: Decided) {
        self.session.report(&decision(allow, d));
    }

    /// The session is over. Blocks until the monitor has logged it (call
    /// it off the listener's thread).
    pub(crate) fn end(mut self, end: End) {
        match end {
            End::Code(c) => self.session.end(c.to_string()),
            End::Signal(n) => self.session.end(format!("signal:{n}")),
            // Closing the connection without an end is how the monitor
            // learns a session was lost.
            End::Lost => {}
        }
    }
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
