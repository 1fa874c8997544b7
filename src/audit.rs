//! Audit events and their one rendering. Every byte a client controls goes
//! through [`escape`] at render time, so a request can never forge a second
//! log line, nor a field of this one. It never writes anywhere itself: the
//! caller (or an event collector) decides where a rendered line goes.

mod record;

pub(crate) use record::{now_rfc3339, Format, Record};

use crate::tool::Tool;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;

/// Something the audit trail records.
#[derive(Debug, Clone)]
pub(crate) enum Event<'a> {
    /// The broker allows `request` and is about to run it.
    BrokerAllow { request: &'a [u8] },
    /// The broker refused `request`, for `reason` (none: not said).
    BrokerDeny {
        request: &'a [u8],
        reason: Option<String>,
    },
    /// One HTTP request, as it ended.
    HttpAccess(HttpAccess<'a>),
    /// What a key lookup found (already one escaped line of text).
    KeyNote { text: &'a str },
    /// An event of SPEC 11's trail (`session.start`, ..., the monitor's
    /// own lines) in `LOG_FORMAT`, stamped with `ts`.
    Record {
        record: &'a Record,
        format: Format,
        ts: &'a str,
    },
}

/// The fields of an HTTP access line; raw bytes as the client sent them.
#[derive(Debug, Clone)]
pub(crate) struct HttpAccess<'a> {
    pub(crate) client: SocketAddr,
    pub(crate) method: &'a str,
    pub(crate) path: &'a [u8],
    pub(crate) status: Option<u16>,
    /// The authenticated principal (a user name, or `bearer`).
    pub(crate) who: Option<&'a str>,
    pub(crate) duration_ms: u128,
    pub(crate) exit: CommandExit,
    pub(crate) note: Option<&'a str>,
    pub(crate) command: Option<&'a [u8]>,
}

/// How a request's command ended, for the `exit=` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommandExit {
    /// No command ran.
    None,
    /// The wrapper's exit status (128+N for signal N).
    Code(i32),
    /// The client went away (or the listener stopped) and the command's
    /// process group was killed.
    Killed,
}

impl fmt::Display for CommandExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandExit::None => f.write_str("-"),
            CommandExit::Code(c) => write!(f, "{c}"),
            CommandExit::Killed => f.write_str("killed"),
        }
    }
}

/// `LOG_FORMAT` of this process's own lines ([`say`], access lines);
/// text until [`set_format`].
static FORMAT: std::sync::OnceLock<Format> = std::sync::OnceLock::new();

/// Sets this process's `LOG_FORMAT`, once, as soon as it is known.
pub(crate) fn set_format(f: Format) {
    let _ = FORMAT.set(f);
}

/// This process's `LOG_FORMAT`.
pub(crate) fn format() -> Format {
    FORMAT.get().copied().unwrap_or(Format::Text)
}

/// One diagnostic line of `tool` on stderr: `PREFIX message` in text,
/// `{"ts":...,"event":TOOL,"message":...}` in JSON (so that with
/// `LOG_FORMAT=json` the long-running tools' lines parse too).
pub(crate) fn say(tool: Tool, message: impl fmt::Display) {
    match format() {
        Format::Text => tool.say(message),
        Format::Json => eprintln!(
            "{}",
            render_now(
                &Record::new(tool.event()).str("message", message.to_string()),
                Format::Json
            )
        ),
    }
}

/// The one rendering of an event: a single line, no newline. A
/// [`Event::Record`] is in its `LOG_FORMAT`; the other events are text.
pub(crate) fn render(event: &Event<'_>) -> String {
    match event {
        Event::BrokerAllow { request } => {
            format!("{} ALLOW: {}", Tool::Broker.prefix(), shown(request))
        }
        Event::BrokerDeny { request, reason } => match reason {
            Some(r) => format!(
                "{} DENY: {} ({})",
                Tool::Broker.prefix(),
                shown(request),
                escape(r)
            ),
            None => format!("{} DENY: {}", Tool::Broker.prefix(), shown(request)),
        },
        Event::HttpAccess(a) => render_access(a),
        Event::KeyNote { text } => format!("{} {}", Tool::Keys.prefix(), escape_kept(text)),
        Event::Record { record, format, ts } => record.render(*format, ts),
    }
}

/// `record` in `format`, stamped with the time now, through [`render`].
pub(crate) fn render_now(record: &Record, format: Format) -> String {
    let ts = now_rfc3339();
    render(&Event::Record {
        record,
        format,
        ts: &ts,
    })
}

impl HttpAccess<'_> {
    /// The access line as an `http.access` event, for `LOG_FORMAT=json`:
    /// the same fields, `-` fields left out; client bytes are escaped when
    /// rendered (bytes that are not UTF-8 shown as U+FFFD).
    pub(crate) fn record(&self) -> Record {
        let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Record::new("http.access")
            .str("client", self.client.to_string())
            .str("method", self.method)
            .str("path", lossy(self.path))
            .opt_int("status", self.status.map(i64::from))
            .opt("who", self.who)
            .int("duration_ms", self.duration_ms as i64)
            .str("exit", self.exit.to_string())
            .opt("note", self.note)
            .opt("command", self.command.map(lossy))
    }
}

fn render_access(a: &HttpAccess<'_>) -> String {
    let mut s = String::with_capacity(160);
    let _ = write!(
        s,
        "[http] client={} method={} path={} status={} who={} duration_ms={} exit={}",
        a.client,
        field(&escape(a.method)),
        field(&escape_bytes(a.path)),
        a.status.map_or_else(|| "-".to_owned(), |c| c.to_string()),
        a.who.map_or_else(|| "-".to_owned(), |w| field(&escape(w))),
        a.duration_ms,
        a.exit,
    );
    if let Some(n) = a.note {
        let _ = write!(s, " note=\"{}\"", quoted(&escape(n)));
    }
    if let Some(c) = a.command {
        let _ = write!(s, " command=\"{}\"", quoted(&escape_bytes(c)));
    }
    s
}

/// An unquoted `key=value` field: also no ASCII space, so a reader that
/// splits on white space sees exactly the fields written.
fn field(escaped: &str) -> String {
    escaped.replace(' ', "\\x20")
}

/// The inside of a `key="value"` field: a quote cannot end it early.
fn quoted(escaped: &str) -> String {
    escaped.replace('"', "\\\"")
}

/// Text that was escaped by its producer: only what could still break the
/// line is escaped again (a backslash is kept as it is).
fn escape_kept(text: &str) -> String {
    text.split('\\').map(escape).collect::<Vec<_>>().join("\\")
}

/// A request as the audit line shows it: escaped, and cut short so a
/// 64 KiB request does not flood the log.
fn shown(request: &[u8]) -> String {
    const MAX_SHOWN: usize = 1024;
    if request.len() <= MAX_SHOWN {
        return escape_bytes(request);
    }
    let mut cut = MAX_SHOWN;
    if let Ok(text) = std::str::from_utf8(request) {
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
    }
    format!(
        "{}... ({} bytes)",
        escape_bytes(&request[..cut]),
        request.len()
    )
}

/// Escapes control characters, backslash and anything not printable so the
/// result is one line of printable UTF-8: `\n`, `\r`, `\t`, `\\`, `\xNN` for
/// other bytes below 0x20 and 0x7f, `\u{NNNN}` for other non-printable chars.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\x7f' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_invisible(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Escapes bytes that may not be UTF-8 (file names, raw input).
pub(crate) fn escape_bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        out.push_str(&escape(chunk.valid()));
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

/// A path as a log line shows it (file names are any bytes).
pub(crate) fn escape_path(path: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt as _;
    escape_bytes(path.as_os_str().as_bytes())
}

/// C1 controls, Unicode spaces other than ASCII space (a reader that
/// splits on white space must not see a field boundary a client made),
/// line/paragraph separators, bidi overrides and other format characters
/// that could make a log line read differently.
fn is_invisible(c: char) -> bool {
    matches!(c as u32,
        0x80..=0x9f | 0xa0 | 0xad | 0x061c | 0x1680 | 0x180e | 0x2000..=0x200f
        | 0x2028..=0x202f | 0x205f..=0x2069 | 0x3000 | 0xfeff | 0xfff9..=0xfffb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_whatever_the_input() {
        let forged = "ls\n[broker] ALLOW: rm -rf /\r\x1b[2K\u{202e}x\\";
        let e = escape(forged);
        assert_eq!(e, "ls\\n[broker] ALLOW: rm -rf /\\r\\x1b[2K\\u{202e}x\\\\");
        assert!(!e.chars().any(|c| c.is_control()));
    }

    #[test]
    fn printable_unicode_and_tab() {
        assert_eq!(escape("é ü 日本 a\tb"), "é ü 日本 a\\tb");
    }

    #[test]
    fn unicode_spaces_are_escaped() {
        for c in [
            '\u{a0}', '\u{1680}', '\u{2000}', '\u{2005}', '\u{200a}', '\u{202f}', '\u{205f}',
            '\u{3000}',
        ] {
            let e = escape(&format!("a{c}b"));
            assert_eq!(e, format!("a\\u{{{:04x}}}b", c as u32));
            assert!(!e.chars().any(char::is_whitespace), "{e}");
        }
    }

    fn access<'a>(path: &'a [u8], who: Option<&'a str>) -> HttpAccess<'a> {
        HttpAccess {
            client: "127.0.0.1:5000".parse().unwrap(),
            method: "GET",
            path,
            status: Some(404),
            who,
            duration_ms: 3,
            exit: CommandExit::None,
            note: None,
            command: None,
        }
    }

    /// A reader that splits the line on Unicode white space and reads
    /// `key=value` pairs sees each key once, with the value the server set.
    #[test]
    fn a_client_cannot_fake_access_fields() {
        for sp in [
            "\u{a0}", "\u{2000}", "\u{2003}", "\u{200a}", "\u{3000}", " ", "\t", "\n",
        ] {
            let path = format!("/x{sp}status=200{sp}who=admin");
            let line = render(&Event::HttpAccess(access(
                path.as_bytes(),
                Some("a\u{a0}who=root"),
            )));
            let fields: Vec<&str> = line.split(char::is_whitespace).collect();
            let status: Vec<&&str> = fields.iter().filter(|f| f.starts_with("status=")).collect();
            let who: Vec<&&str> = fields.iter().filter(|f| f.starts_with("who=")).collect();
            assert_eq!(status, [&"status=404"], "{line}");
            assert_eq!(who.len(), 1, "{line}");
            assert!(!line.contains('\n'));
        }
    }

    #[test]
    fn access_line_text() {
        let mut a = access(b"/cgi-bin/run", Some("alice\nstatus=200"));
        a.status = Some(200);
        a.exit = CommandExit::Code(3);
        a.command = Some(b"ls \"x\"\n[http] forged");
        assert_eq!(
            render(&Event::HttpAccess(a)),
            "[http] client=127.0.0.1:5000 method=GET path=/cgi-bin/run status=200 \
             who=alice\\nstatus=200 duration_ms=3 exit=3 command=\"ls \\\"x\\\"\\n[http] forged\""
        );
        let mut a = access(b"/x\xff", None);
        a.status = None;
        a.note = Some("header timeout");
        assert_eq!(
            render(&Event::HttpAccess(a)),
            "[http] client=127.0.0.1:5000 method=GET path=/x\\xff status=- who=- duration_ms=3 \
             exit=- note=\"header timeout\""
        );
    }

    #[test]
    fn broker_lines() {
        assert_eq!(
            render(&Event::BrokerAllow { request: b"ls -l" }),
            "[broker] ALLOW: ls -l"
        );
        assert_eq!(
            render(&Event::BrokerDeny {
                request: b"rm\n[broker] ALLOW: x",
                reason: Some("no rule matches".into())
            }),
            "[broker] DENY: rm\\n[broker] ALLOW: x (no rule matches)"
        );
        let long = "é".repeat(600);
        let l = render(&Event::BrokerAllow {
            request: long.as_bytes(),
        });
        assert!(
            l.ends_with(&format!("{}... (1200 bytes)", "é".repeat(512))),
            "{l}"
        );
    }

    #[test]
    fn key_notes_keep_their_escapes_and_stay_one_line() {
        assert_eq!(
            render(&Event::KeyNote {
                text: "f-x\\nbastion-keys: forged.pub: skipped"
            }),
            "bastion-keys: f-x\\nbastion-keys: forged.pub: skipped"
        );
        assert_eq!(
            render(&Event::KeyNote { text: "a\nb" }),
            "bastion-keys: a\\nb"
        );
    }

    #[test]
    fn invalid_utf8_bytes_are_hex() {
        assert_eq!(escape_bytes(b"a\xffb\n"), "a\\xffb\\n");
    }
}
