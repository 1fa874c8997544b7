//! The event socket's messages (newline-delimited JSON over a stream
//! socket) and the client the wrapper and the HTTP listener use
//! (through `session::report`). A
//! message says what happened; who it happened to (identity, client
//! address, transport) the monitor works out itself.

use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Longest message accepted, newline included.
pub(crate) const MAX_MESSAGE: usize = 128 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Msg {
    /// Readiness check (the entrypoint waits for an answer).
    Ping,
    /// A session begins: answered with its id and identity.
    Start {
        mode: String,
        tty: bool,
        #[serde(default)]
        request: Option<String>,
        /// `SSH_CONNECTION` as sshd set it (checked against sshd's log).
        #[serde(default)]
        ssh_connection: Option<String>,
        /// Set by the HTTP listener for the request it runs (believed
        /// only from the listener the monitor runs).
        #[serde(default)]
        http_who: Option<String>,
        #[serde(default)]
        http_client: Option<String>,
    },
    /// The broker's decision.
    Decision {
        allow: bool,
        request: String,
        #[serde(default)]
        rule: Option<String>,
        #[serde(default)]
        source: Option<String>,
        #[serde(default)]
        reason: Option<String>,
    },
    /// The lock was held.
    Busy,
    /// A per-session resource to release when the session is over.
    Register { container: String },
    /// Open the session's egress gate (SPEC 14), after its container is
    /// registered: answered with the network and the gate's address.
    Gate,
    /// The session is over: `exit` is the status or `signal:N`;
    /// `timed_out`: `SESSION_TIMEOUT` stopped it.
    End {
        exit: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        timed_out: bool,
    },
    /// The HTTP listener refused credentials.
    HttpAuthFailure,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Reply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    /// The session's gate network (answer to [`Msg::Gate`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) network: Option<String>,
    /// The gate's address on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) address: Option<String>,
}

/// How long a client waits for the monitor before giving up.
pub(crate) const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to the monitor.
pub(crate) struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects without waiting on a full backlog; every later read and
    /// write is bounded by a timeout. The socket is close-on-exec, so a
    /// command never holds the session's connection.
    pub(crate) fn connect(path: &Path) -> std::io::Result<Client> {
        let s = crate::sys::unix_connect::connect_unix_nonblocking(path)?;
        s.set_nonblocking(false)?;
        s.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        s.set_write_timeout(Some(CLIENT_TIMEOUT))?;
        Ok(Client {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
        })
    }

    pub(crate) fn send(&mut self, m: &Msg) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(m).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.writer.write_all(&line)
    }

    pub(crate) fn ask(&mut self, m: &Msg) -> std::io::Result<Reply> {
        self.send(m)?;
        let mut line = Vec::new();
        (&mut self.reader)
            .take(MAX_MESSAGE as u64)
            .read_until(b'\n', &mut line)?;
        if line.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the monitor closed the connection",
            ));
        }
        serde_json::from_slice(&line).map_err(std::io::Error::other)
    }
}

use std::io::Read as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let m = Msg::Start {
            mode: "broker".into(),
            tty: false,
            request: Some("ls\n".into()),
            ssh_connection: Some("1.2.3.4 5 6.7.8.9 22".into()),
            http_who: None,
            http_client: None,
        };
        let s = serde_json::to_string(&m).unwrap();
        assert!(s.starts_with(r#"{"op":"start""#), "{s}");
        assert_eq!(serde_json::from_str::<Msg>(&s).unwrap(), m);
        let e: Msg = serde_json::from_str(r#"{"op":"end","exit":"signal:9"}"#).unwrap();
        assert_eq!(
            e,
            Msg::End {
                exit: "signal:9".into(),
                timed_out: false,
            }
        );
        assert!(serde_json::from_str::<Msg>(r#"{"op":"nope"}"#).is_err());
        assert_eq!(
            serde_json::to_string(&Msg::Gate).unwrap(),
            r#"{"op":"gate"}"#
        );
    }
}
