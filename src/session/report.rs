//! One session as the audit trail sees it, for a caller that runs the
//! command in-process (the HTTP listener): [`Report::start`] once a request
//! is authorized and about to take the lock, [`Report::end`] exactly once,
//! however it ended. This is the one place a session's start and end are
//! reported from that path; nothing collects them yet (the monitor's event
//! socket plugs in here).

use std::net::SocketAddr;

/// How a session ended, as the audit trail spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The command's exit status, or the wrapper's own (busy, denied, not
    /// found) when nothing ran.
    Code(i32),
    /// Its client went away or the listener stopped: the command was
    /// killed.
    Killed,
}

/// A started session.
#[derive(Debug)]
#[must_use = "a started session must be ended"]
pub(crate) struct Report {}

impl Report {
    /// An HTTP session from `client` starts (the request is authorized).
    pub(crate) fn start(client: SocketAddr) -> Self {
        let _ = client;
        Self {}
    }

    /// The session is over.
    pub(crate) fn end(self, end: End) {
        let _ = end;
    }
}
