//! Audit lines on stderr. Every byte a client controls goes through
//! [`escape`] first, so a request can never forge a second log line.

use std::fmt::Write as _;

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

/// C1 controls, line/paragraph separators, bidi overrides and other
/// format characters that could make a log line read differently.
fn is_invisible(c: char) -> bool {
    matches!(c as u32,
        0x80..=0x9f | 0xad | 0x061c | 0x180e | 0x200b..=0x200f | 0x2028..=0x202e
        | 0x2060..=0x2069 | 0xfeff | 0xfff9..=0xfffb)
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
    fn invalid_utf8_bytes_are_hex() {
        assert_eq!(escape_bytes(b"a\xffb\n"), "a\\xffb\\n");
    }
}
