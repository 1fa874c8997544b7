//! The events of SPEC 11's audit trail (`session.start`, `session.end`,
//! ...): a name and fields, rendered by `audit::render` in either format:
//! `text` (`ts=... event=... key=value`, values with spaces quoted) or
//! `json` (one object per line). Every string value is escaped first
//! (control, invisible and non-ASCII space characters), then cut to 1 KiB,
//! so no field can forge a line, a field or exceed the line budget.

use std::fmt::Write as _;

/// Longest escaped string value shown, in bytes.
const MAX_VALUE: usize = 1024;

/// `LOG_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Text,
    Json,
}

impl Format {
    pub(crate) fn parse(v: &str) -> Option<Format> {
        match v {
            "" | "text" => Some(Format::Text),
            "json" => Some(Format::Json),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Json => "json",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
}

/// An event: its name and fields in order (`ts` and `event` come first).
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) name: &'static str,
    pub(crate) fields: Vec<(&'static str, Value)>,
}

impl Record {
    pub(crate) fn new(name: &'static str) -> Record {
        Record {
            name,
            fields: Vec::new(),
        }
    }

    pub(crate) fn str(mut self, key: &'static str, v: impl Into<String>) -> Record {
        self.fields.push((key, Value::Str(v.into())));
        self
    }

    pub(crate) fn opt(self, key: &'static str, v: Option<impl Into<String>>) -> Record {
        match v {
            Some(v) => self.str(key, v),
            None => self,
        }
    }

    pub(crate) fn int(mut self, key: &'static str, v: i64) -> Record {
        self.fields.push((key, Value::Int(v)));
        self
    }

    pub(crate) fn opt_int(self, key: &'static str, v: Option<i64>) -> Record {
        match v {
            Some(v) => self.int(key, v),
            None => self,
        }
    }

    pub(crate) fn bool(mut self, key: &'static str, v: bool) -> Record {
        self.fields.push((key, Value::Bool(v)));
        self
    }

    /// The line, without its newline, stamped with `ts` (RFC 3339 UTC ms);
    /// reached through `audit::render` only.
    pub(super) fn render(&self, format: Format, ts: &str) -> String {
        let mut out = String::with_capacity(256);
        match format {
            Format::Text => {
                let _ = write!(out, "ts={ts} event={}", self.name);
                for (k, v) in &self.fields {
                    out.push(' ');
                    out.push_str(k);
                    out.push('=');
                    match v {
                        Value::Str(s) => push_text(&mut out, &shown(s)),
                        Value::Int(i) => {
                            let _ = write!(out, "{i}");
                        }
                        Value::Bool(b) => {
                            let _ = write!(out, "{b}");
                        }
                    }
                }
            }
            Format::Json => {
                let _ = write!(out, "{{\"ts\":\"{ts}\",\"event\":\"{}\"", self.name);
                for (k, v) in &self.fields {
                    let _ = write!(out, ",\"{k}\":");
                    match v {
                        Value::Str(s) => push_json(&mut out, &shown(s)),
                        Value::Int(i) => {
                            let _ = write!(out, "{i}");
                        }
                        Value::Bool(b) => {
                            let _ = write!(out, "{b}");
                        }
                    }
                }
                out.push('}');
            }
        }
        out
    }
}

/// `s` escaped (one printable line, no Unicode space but U+0020) and cut
/// to [`MAX_VALUE`] bytes without splitting an escape sequence.
pub(super) fn shown(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_VALUE));
    let mut buf = [0u8; 4];
    for c in s.chars() {
        let piece = if c != ' ' && c.is_whitespace() && !c.is_ascii() {
            format!("\\u{{{:04x}}}", c as u32)
        } else {
            crate::audit::escape(c.encode_utf8(&mut buf))
        };
        if out.len() + piece.len() > MAX_VALUE {
            out.push_str("...");
            break;
        }
        out.push_str(&piece);
    }
    out
}

/// A text value: bare when it has no space, quote, `=` or is non-empty;
/// otherwise in double quotes with `"` escaped (backslashes already are).
fn push_text(out: &mut String, v: &str) {
    if !v.is_empty() && !v.contains([' ', '"', '=']) {
        out.push_str(v);
        return;
    }
    out.push('"');
    for c in v.chars() {
        if c == '"' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// A JSON string. `v` holds no control character (escaped already).
fn push_json(out: &mut String, v: &str) {
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Now as RFC 3339 UTC with milliseconds (`2026-01-02T03:04:05.678Z`).
pub(crate) fn now_rfc3339() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs() as i64, d.subsec_millis())
}

fn rfc3339(secs: i64, ms: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{render, Event};

    const TS: &str = "2026-01-01T00:00:00.000Z";

    /// Through the audit module's one rendering, as the monitor does.
    fn line(r: &Record, format: Format) -> String {
        render(&Event::Record {
            record: r,
            format,
            ts: TS,
        })
    }

    fn hostile() -> Record {
        Record::new("session.start")
            .str("session", "0123456789abcdef")
            .str("identity", "al\"ice")
            .str(
                "request",
                "ls\nts=x event=session.end exit=0\u{a0}status=200\u{202e}\"}",
            )
            .bool("tty", false)
            .int("duration_ms", 12)
    }

    #[test]
    fn text_is_one_line_and_fields_cannot_be_forged() {
        let l = line(&hostile(), Format::Text);
        assert!(!l.contains('\n') && !l.contains('\u{a0}') && !l.contains('\u{202e}'));
        // A reader that honours quotes (logfmt) finds exactly these fields.
        let keys: Vec<String> = logfmt(&l).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "ts",
                "event",
                "session",
                "identity",
                "request",
                "tty",
                "duration_ms"
            ],
            "{l}"
        );
        assert!(l.starts_with("ts=2026-01-01T00:00:00.000Z event=session.start session=0123456789abcdef identity=\"al\\\"ice\" request=\"ls\\n"), "{l}");
        assert!(l.ends_with(" tty=false duration_ms=12"), "{l}");
    }

    /// `key=value` pairs, values bare or in double quotes with `\"`.
    fn logfmt(l: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut it = l.chars().peekable();
        while it.peek().is_some() {
            let key: String = it.by_ref().take_while(|&c| c != '=').collect();
            let mut val = String::new();
            if it.peek() == Some(&'"') {
                it.next();
                while let Some(c) = it.next() {
                    match c {
                        '\\' if it.peek() == Some(&'"') => val.push(it.next().unwrap()),
                        '"' => break,
                        c => val.push(c),
                    }
                }
                it.next();
            } else {
                val = it.by_ref().take_while(|&c| c != ' ').collect();
            }
            out.push((key, val));
        }
        out
    }

    #[test]
    fn json_parses_with_the_same_fields() {
        let l = line(&hostile(), Format::Json);
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["event"], "session.start");
        assert_eq!(v["identity"], "al\"ice");
        assert_eq!(v["tty"], false);
        assert_eq!(v["duration_ms"], 12);
        let r = v["request"].as_str().unwrap();
        assert!(r.starts_with("ls\\nts=x") && r.contains("\\u{00a0}") && r.contains("\\u{202e}"));
        assert!(!l.contains('\n'));
    }

    #[test]
    fn long_values_stay_within_the_line_budget() {
        let e = Record::new("command.allow")
            .str("request", "\x01".repeat(10_000))
            .str("rule", "é".repeat(10_000));
        for f in [Format::Text, Format::Json] {
            let l = line(&e, f);
            assert!(l.len() < 4096, "{}", l.len());
        }
        assert!(shown(&"a".repeat(2000)).ends_with("..."));
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_709_251_199, 5), "2024-02-29T23:59:59.005Z");
        assert_eq!(rfc3339(1_798_761_600, 999), "2027-01-01T00:00:00.999Z");
    }
}
