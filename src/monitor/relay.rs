//! The sshd log relay (issue 12.2): sshd's stderr is one end of a
//! sequenced-packet socket, so every `write` of sshd (one log message) is
//! one record. Each record is escaped as a whole and written as one line:
//! a newline, backspace or bell a client put in its user name is shown as
//! `\n`, `\x08`, `\x07` and can never start a line of its own. Records
//! that are whole, clean lines are also read for what the monitor needs:
//! which key authenticated which client address, which identity
//! `bastion-keys` gave that key, and failed logins.

use super::output::Output;
use super::Shared;
use crate::audit::{Format, Record};
use std::io::Read as _;
use std::os::fd::OwnedFd;
use std::time::Instant;

/// What sshd said about one accepted public-key login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Accepted {
    pub(crate) fingerprint: String,
    /// The identity `bastion-keys` logged for this fingerprint during the
    /// login, if it did.
    pub(crate) identity: Option<String>,
    pub(crate) at: Instant,
}

/// One parsed line of sshd's log.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Said {
    /// `Accepted publickey for USER from IP port PORT ssh2: TYPE FP`.
    Accepted {
        user: String,
        client: String,
        fingerprint: String,
    },
    /// `bastion-keys: key FP: identity NAME (line N)...`.
    KeyIdentity {
        fingerprint: String,
        identity: Option<String>,
    },
    /// A refused or abandoned login attempt.
    Failure,
    Other,
}

/// Reads records until sshd and everything that inherited its stderr are
/// gone. Runs on its own thread: writes never block (see `Output`).
pub(crate) fn run(fd: OwnedFd, shared: Shared, out: Output, format: Format) {
    let mut partial: Vec<u8> = Vec::new();
    records(fd, |record| {
        let whole = record.ends_with(b"\n");
        if !whole {
            // A writer that splits its lines over several writes: keep the
            // pieces until the newline (bounded), never parse them.
            partial.extend_from_slice(record);
            if partial.len() >= 4096 {
                emit(&out, format, &std::mem::take(&mut partial));
            }
            return;
        }
        if !partial.is_empty() {
            partial.extend_from_slice(record);
            emit(&out, format, &std::mem::take(&mut partial));
            return;
        }
        let body = strip_end(record);
        if !body.iter().any(|&b| b < 0x20 || b == 0x7f) {
            if let Ok(text) = std::str::from_utf8(body) {
                shared.sshd_said(parse(text));
            }
        }
        emit(&out, format, record);
    });
    if !partial.is_empty() {
        emit(&out, format, &partial);
    }
}

/// Calls `each` with every record of the sequenced-packet socket `fd`
/// (up to 16 KiB each) until every writer is gone.
pub(crate) fn records(fd: OwnedFd, mut each: impl FnMut(&[u8])) {
    let mut file = std::fs::File::from(fd);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => each(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
}

fn strip_end(record: &[u8]) -> &[u8] {
    let r = record.strip_suffix(b"\n").unwrap_or(record);
    r.strip_suffix(b"\r").unwrap_or(r)
}

/// One record as one line: in text format sshd's message escaped as it
/// is (so `docker logs` reads as before), in JSON an `sshd` event.
fn emit(out: &Output, format: Format, record: &[u8]) {
    let text = crate::audit::escape_bytes(strip_end(record));
    match format {
        Format::Text => out.line(text),
        Format::Json => out.line(crate::audit::render_now(
            &Record::new("sshd").str("message", text),
            Format::Json,
        )),
    }
}

/// Parses one clean line (no control characters).
pub(crate) fn parse(line: &str) -> Said {
    if let Some(rest) = line.strip_prefix("Accepted publickey for ") {
        return parse_accepted(rest).unwrap_or(Said::Other);
    }
    if let Some(rest) = line.strip_prefix("bastion-keys: key ") {
        return parse_key_identity(rest).unwrap_or(Said::Other);
    }
    const FAILURES: [&str; 5] = [
        "Invalid user ",
        "Failed ",
        "Connection closed by authenticating user ",
        "Connection closed by invalid user ",
        "Disconnecting authenticating user ",
    ];
    if FAILURES.iter().any(|p| line.starts_with(p))
        || line.contains("maximum authentication attempts exceeded")
    {
        return Said::Failure;
    }
    Said::Other
}

fn parse_accepted(rest: &str) -> Option<Said> {
    let (user, rest) = rest.split_once(" from ")?;
    let (ip, rest) = rest.split_once(" port ")?;
    let (port, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix("ssh2: ")?;
    let mut words = rest.split(' ');
    let _key_type = words.next()?;
    let fingerprint = words.next()?;
    if user.contains(' ') || ip.contains(' ') || port.parse::<u16>().is_err() {
        return None;
    }
    if !fingerprint.starts_with("SHA256:") {
        return None;
    }
    Some(Said::Accepted {
        user: user.to_owned(),
        client: client_key(ip, port),
        fingerprint: fingerprint.to_owned(),
    })
}

fn parse_key_identity(rest: &str) -> Option<Said> {
    let (fingerprint, rest) = rest.split_once(": ")?;
    if !fingerprint.starts_with("SHA256:") || fingerprint.contains(' ') {
        return None;
    }
    let identity = match rest.strip_prefix("identity ") {
        Some(r) => Some(r.split_once(" (line ")?.0.to_owned()),
        None if rest.starts_with("no identity has this key") => None,
        None => return None,
    };
    Some(Said::KeyIdentity {
        fingerprint: fingerprint.to_owned(),
        identity,
    })
}

/// How a client address is keyed: `ip:port`, IPv6 in brackets (the form
/// of the `client` field).
pub(crate) fn client_key(ip: &str, port: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_lines() {
        assert_eq!(
            parse("Accepted publickey for agent from 172.17.0.1 port 40000 ssh2: ED25519 SHA256:abc/+D"),
            Said::Accepted {
                user: "agent".into(),
                client: "172.17.0.1:40000".into(),
                fingerprint: "SHA256:abc/+D".into()
            }
        );
        assert_eq!(
            parse("Accepted publickey for agent from ::1 port 22 ssh2: RSA SHA256:x"),
            Said::Accepted {
                user: "agent".into(),
                client: "[::1]:22".into(),
                fingerprint: "SHA256:x".into()
            }
        );
        for bad in [
            "Accepted publickey for agent from 1.2.3.4 port x ssh2: ED25519 SHA256:abc",
            "Accepted publickey for agent from 1.2.3.4 port 1 ssh2: ED25519 MD5:abc",
            "Accepted password for agent from 1.2.3.4 port 1 ssh2",
            "Invalid user Accepted publickey for agent from 1.2.3.4 port 1 ssh2: E SHA256:a",
        ] {
            assert!(!matches!(parse(bad), Said::Accepted { .. }), "{bad}");
        }
    }

    #[test]
    fn key_identity_lines() {
        assert_eq!(
            parse("bastion-keys: key SHA256:abc: identity alice (line 1)"),
            Said::KeyIdentity {
                fingerprint: "SHA256:abc".into(),
                identity: Some("alice".into())
            }
        );
        assert_eq!(
            parse("bastion-keys: key SHA256:abc: identity my key (line 3) (the same key is also listed for: b (line 1); sshd uses the first)"),
            Said::KeyIdentity {
                fingerprint: "SHA256:abc".into(),
                identity: Some("my key".into())
            }
        );
        assert_eq!(
            parse("bastion-keys: key SHA256:abc: no identity has this key"),
            Said::KeyIdentity {
                fingerprint: "SHA256:abc".into(),
                identity: None
            }
        );
    }

    #[test]
    fn failures() {
        assert_eq!(parse("Invalid user bob from 1.2.3.4 port 5"), Said::Failure);
        assert_eq!(
            parse("Connection closed by authenticating user agent 1.2.3.4 port 5 [preauth]"),
            Said::Failure
        );
        assert_eq!(parse("Server listening on 0.0.0.0 port 22."), Said::Other);
    }
}
