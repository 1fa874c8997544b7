//! One access line per request on stdout: client, method, path, status,
//! who, duration, exit code and the requested command. Every client byte is
//! escaped (no forged lines); credentials never appear.

use super::credentials::Who;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Instant;

/// How a request ended, for the `exit=` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// No command ran.
    None,
    /// The wrapper's exit status (128+N for signal N).
    Code(i32),
    /// The client went away (or the listener stopped) and the command's
    /// process group was killed.
    Killed,
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::None => f.write_str("-"),
            Exit::Code(c) => write!(f, "{c}"),
            Exit::Killed => f.write_str("killed"),
        }
    }
}

/// What is known about a request when its line is written.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) client: SocketAddr,
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) who: Option<Who>,
    pub(crate) command: Option<String>,
    pub(crate) started: Instant,
}

impl Entry {
    pub(crate) fn new(client: SocketAddr, method: &str, path: &[u8]) -> Self {
        Self {
            client,
            method: crate::audit::escape(method),
            path: crate::audit::escape_bytes(path),
            who: None,
            command: None,
            started: Instant::now(),
        }
    }

    pub(crate) fn line(&self, status: Option<u16>, exit: Exit, note: Option<&str>) -> String {
        let mut s = String::with_capacity(160);
        let _ = write!(
            s,
            "[http] client={} method={} path={} status={} who={} duration_ms={} exit={}",
            self.client,
            self.method,
            self.path,
            status.map_or_else(|| "-".to_owned(), |c| c.to_string()),
            self.who
                .as_ref()
                .map_or_else(|| "-".to_owned(), |w| w.to_string()),
            self.started.elapsed().as_millis(),
            exit,
        );
        if let Some(n) = note {
            let _ = write!(s, " note=\"{}\"", crate::audit::escape(n));
        }
        if let Some(c) = &self.command {
            let _ = write!(s, " command=\"{}\"", c.replace('"', "\\\""));
        }
        s
    }

    /// Writes the line. A closed or full stdout never stops serving.
    pub(crate) fn log(&self, status: Option<u16>, exit: Exit, note: Option<&str>) {
        let mut line = self.line(status, exit, note);
        line.push('\n');
        let _ = std::io::stdout().lock().write_all(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_with_every_field() {
        let mut e = Entry::new("127.0.0.1:5000".parse().unwrap(), "GET", b"/cgi-bin/run");
        e.who = Some(Who::User("alice\nstatus=200".into()));
        e.command = Some(crate::audit::escape_bytes(b"ls \"x\"\n[http] forged"));
        let l = e.line(Some(200), Exit::Code(3), None);
        assert!(l.starts_with(
            "[http] client=127.0.0.1:5000 method=GET path=/cgi-bin/run status=200 who=alice\\nstatus=200 duration_ms="
        ), "{l}");
        assert!(
            l.contains(" exit=3 command=\"ls \\\"x\\\"\\n[http] forged\""),
            "{l}"
        );
        assert!(!l.contains('\n'));
    }

    #[test]
    fn unknowns_are_dashes() {
        let e = Entry::new("[::1]:1".parse().unwrap(), "-", b"/x\xff");
        let l = e.line(None, Exit::None, Some("header timeout"));
        assert!(l.contains("path=/x\\xff status=- who=- "), "{l}");
        assert!(l.ends_with("exit=- note=\"header timeout\""), "{l}");
        assert!(Entry::new("[::1]:1".parse().unwrap(), "GET", b"/")
            .line(Some(499), Exit::Killed, None)
            .ends_with("exit=killed"));
    }
}
