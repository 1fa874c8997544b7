//! One access line per request on stdout: client, method, path, status,
//! who, duration, exit code and the requested command, rendered by
//! [`crate::audit::render`] (every client byte escaped there; no forged
//! lines or fields). Credentials never appear.

use super::credentials::Who;
pub(crate) use crate::audit::CommandExit as Exit;
use crate::audit::{Event, Format, HttpAccess};
use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Instant;

/// What is known about a request when its line is written; raw client
/// bytes, escaped only when rendered.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) client: SocketAddr,
    pub(crate) method: String,
    pub(crate) path: Vec<u8>,
    pub(crate) who: Option<Who>,
    pub(crate) command: Option<Vec<u8>>,
    pub(crate) started: Instant,
}

impl Entry {
    pub(crate) fn new(client: SocketAddr, method: &str, path: &[u8]) -> Self {
        Self {
            client,
            method: method.to_owned(),
            path: path.to_owned(),
            who: None,
            command: None,
            started: Instant::now(),
        }
    }

    pub(crate) fn line(&self, status: Option<u16>, exit: Exit, note: Option<&str>) -> String {
        let access = HttpAccess {
            client: self.client,
            method: &self.method,
            path: &self.path,
            status,
            who: self.who.as_ref().map(Who::name),
            duration_ms: self.started.elapsed().as_millis(),
            exit,
            note,
            command: self.command.as_deref(),
        };
        match crate::audit::format() {
            Format::Json => crate::audit::render_now(&access.record(), Format::Json),
            Format::Text => crate::audit::render(&Event::HttpAccess(access)),
        }
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
        e.command = Some(b"ls \"x\"\n[http] forged".to_vec());
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
