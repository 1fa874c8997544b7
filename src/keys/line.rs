//! The key-line parser: accepts only `type base64 [comment]` lines of key
//! types OpenSSH accepts, with a well-formed key blob. It never returns
//! anything taken verbatim from the line: the key is re-encoded from the
//! decoded blob, options and comments are dropped.

use crate::sshkey::{check_blob, PublicKey, KEY_TYPES};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use std::fmt;

/// Longest line looked at; longer ones are skipped. An RSA-16384 public key
/// is under 3 KiB of base64.
pub(crate) const MAX_LINE: usize = 16 * 1024;

/// Padding is optional in what we read (OpenSSH's decoder accepts both);
/// what we print is always canonical padded base64.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What one line of a key file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Line {
    /// Blank, or a `#` comment.
    Nothing,
    Key(PublicKey),
}

/// Why a line was skipped; shown in the log, never fatal for other lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LineError {
    TooLong(usize),
    /// The line starts with authorized_keys options (`command=...`,
    /// `from=...`, `cert-authority`, ...). Skipped whole: dropping the
    /// options and keeping the key could widen access (`from=`).
    HasOptions,
    Certificate(String),
    Dsa,
    UnknownType(String),
    NoKey,
    BadBase64,
    /// The blob does not start with the line's type, or is not the
    /// structure of that type.
    BadBlob(&'static str),
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong(n) => write!(f, "line of {n} bytes is longer than {MAX_LINE}"),
            Self::HasOptions => f.write_str(
                "options are not allowed in a key file (the bastion sets its own); \
                 write only `type base64 [comment]`",
            ),
            Self::Certificate(t) => write!(
                f,
                "certificate key type {} is not accepted; list the plain public key",
                crate::audit::escape(t)
            ),
            Self::Dsa => f.write_str("ssh-dss (DSA) keys are no longer accepted by OpenSSH"),
            Self::UnknownType(t) => write!(f, "unknown key type {}", crate::audit::escape(t)),
            Self::NoKey => f.write_str("key type without a key"),
            Self::BadBase64 => f.write_str("the key is not valid base64"),
            Self::BadBlob(why) => write!(f, "malformed key: {why}"),
        }
    }
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Splits off the first blank-separated token.
fn token(s: &[u8]) -> (&[u8], &[u8]) {
    let end = s.iter().position(|&b| is_blank(b)).unwrap_or(s.len());
    let rest = &s[end..];
    let skip = rest
        .iter()
        .position(|&b| !is_blank(b))
        .unwrap_or(rest.len());
    (&s[..end], &rest[skip..])
}

fn accepted(t: &[u8]) -> Option<&'static str> {
    KEY_TYPES.iter().copied().find(|a| a.as_bytes() == t)
}

/// Parses one line (without its `\n`; a trailing `\r` is ignored).
pub(crate) fn parse(raw: &[u8]) -> Result<Line, LineError> {
    if raw.len() > MAX_LINE {
        return Err(LineError::TooLong(raw.len()));
    }
    let line = raw.strip_suffix(b"\r").unwrap_or(raw);
    let start = line.iter().position(|&b| !is_blank(b));
    let Some(start) = start else {
        return Ok(Line::Nothing);
    };
    let line = &line[start..];
    if line[0] == b'#' {
        return Ok(Line::Nothing);
    }
    let (first, rest) = token(line);
    let Some(kind) = accepted(first) else {
        return Err(classify_unknown(first, line));
    };
    let (b64, _comment) = token(rest);
    if b64.is_empty() {
        return Err(LineError::NoKey);
    }
    let blob = LENIENT.decode(b64).map_err(|_| LineError::BadBase64)?;
    check_blob(kind, &blob).map_err(LineError::BadBlob)?;
    Ok(Line::Key(PublicKey { kind, blob }))
}

/// Names the problem with a line whose first word is not an accepted type.
fn classify_unknown(first: &[u8], line: &[u8]) -> LineError {
    let text = String::from_utf8_lossy(first).into_owned();
    if first.ends_with(b"-cert-v01@openssh.com") {
        return LineError::Certificate(text);
    }
    if first == b"ssh-dss" {
        return LineError::Dsa;
    }
    // Options come first and may contain quoted blanks; any accepted key
    // type later on the line means the line carries options.
    let looks_like_options = first.contains(&b'=')
        || first.contains(&b',')
        || first
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            && line
                .split(|&b| is_blank(b) || b == b'"' || b == b',')
                .any(|w| accepted(w).is_some());
    if looks_like_options {
        LineError::HasOptions
    } else {
        LineError::UnknownType(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    fn s(b: &[u8]) -> Vec<u8> {
        let mut v = (b.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(b);
        v
    }

    fn blob(parts: &[&[u8]]) -> String {
        STANDARD.encode(parts.iter().flat_map(|p| s(p)).collect::<Vec<u8>>())
    }

    fn point(len: usize) -> Vec<u8> {
        let mut p = vec![4u8];
        p.resize(len, 7);
        p
    }

    /// A well-formed line of every accepted type.
    fn samples() -> Vec<(&'static str, String)> {
        let ed = [9u8; 32];
        let rsa_n = [0xc5u8; 257];
        vec![
            ("ssh-ed25519", blob(&[b"ssh-ed25519", &ed])),
            ("ssh-rsa", blob(&[b"ssh-rsa", &[1, 0, 1], &rsa_n])),
            (
                "ecdsa-sha2-nistp256",
                blob(&[b"ecdsa-sha2-nistp256", b"nistp256", &point(65)]),
            ),
            (
                "ecdsa-sha2-nistp384",
                blob(&[b"ecdsa-sha2-nistp384", b"nistp384", &point(97)]),
            ),
            (
                "ecdsa-sha2-nistp521",
                blob(&[b"ecdsa-sha2-nistp521", b"nistp521", &point(133)]),
            ),
            (
                "sk-ssh-ed25519@openssh.com",
                blob(&[b"sk-ssh-ed25519@openssh.com", &ed, b"ssh:"]),
            ),
            (
                "sk-ecdsa-sha2-nistp256@openssh.com",
                blob(&[
                    b"sk-ecdsa-sha2-nistp256@openssh.com",
                    b"nistp256",
                    &point(65),
                    b"ssh:",
                ]),
            ),
        ]
    }

    fn key(line: &str) -> PublicKey {
        match parse(line.as_bytes()) {
            Ok(Line::Key(k)) => k,
            other => panic!("{line:?}: {other:?}"),
        }
    }

    #[test]
    fn every_accepted_type_round_trips() {
        for (kind, b64) in samples() {
            let k = key(&format!("{kind} {b64} user@host"));
            assert_eq!(k.kind, kind);
            assert_eq!(k.to_openssh(), format!("{kind} {b64}"));
        }
    }

    #[test]
    fn comments_with_spaces_tabs_and_crlf() {
        let (kind, b64) = &samples()[0];
        let want = format!("{kind} {b64}");
        for line in [
            format!("{kind} {b64}"),
            format!("{kind} {b64}\r"),
            format!("{kind}\t{b64}\tAlice Smith <alice@example.com> laptop 2024\r"),
            format!("   {kind}  {b64}   a comment with   spaces"),
            format!("{kind} {b64} command=\"rm -rf /\""),
        ] {
            assert_eq!(key(&line).to_openssh(), want, "{line:?}");
        }
    }

    #[test]
    fn unpadded_base64_is_accepted_and_printed_canonical() {
        let (kind, b64) = &samples()[0];
        let k = key(&format!("{kind} {}", b64.trim_end_matches('=')));
        assert_eq!(k.to_openssh(), format!("{kind} {b64}"));
    }

    #[test]
    fn blank_and_comment_lines_are_nothing() {
        for l in ["", "   ", "\t", "\r", "# ssh-ed25519 AAAA", "   # note"] {
            assert_eq!(parse(l.as_bytes()), Ok(Line::Nothing), "{l:?}");
        }
    }

    #[test]
    fn options_are_refused_whatever_their_form() {
        let (kind, b64) = &samples()[0];
        for opts in [
            "command=\"/bin/sh\"",
            "environment=\"LD_PRELOAD=/tmp/x.so\"",
            "from=\"10.0.0.0/8\"",
            "cert-authority",
            "restrict,pty",
            "no-pty",
            "permitopen=\"host:22\",no-agent-forwarding",
            "command=\"echo a b\" ",
        ] {
            let line = format!("{opts} {kind} {b64} c");
            assert_eq!(parse(line.as_bytes()), Err(LineError::HasOptions), "{line}");
        }
    }

    #[test]
    fn certificates_dsa_and_unknown_types_are_refused() {
        let (_, b64) = &samples()[0];
        assert!(matches!(
            parse(format!("ssh-ed25519-cert-v01@openssh.com {b64}").as_bytes()),
            Err(LineError::Certificate(_))
        ));
        assert_eq!(
            parse(format!("ssh-dss {b64}").as_bytes()),
            Err(LineError::Dsa)
        );
        for t in [
            "ssh-xmss@openssh.com",
            "SSH-ED25519",
            "ssh-ed448",
            "garbage",
        ] {
            assert!(
                matches!(
                    parse(format!("{t} {b64}").as_bytes()),
                    Err(LineError::UnknownType(_))
                ),
                "{t}"
            );
        }
    }

    #[test]
    fn malformed_keys_are_refused() {
        let (kind, b64) = &samples()[0];
        let rsa = &samples()[1].1;
        let ecdsa = &samples()[2].1;
        let cases: Vec<(String, &str)> = vec![
            (kind.to_string(), "no key"),
            (format!("{kind}   "), "no key"),
            (format!("{kind} !!!notbase64"), "base64"),
            (format!("{kind} {}", &b64[..b64.len() - 5]), "truncated"),
            // The blob says ssh-rsa but the line says ssh-ed25519.
            (format!("{kind} {rsa}"), "type mismatch"),
            (format!("ecdsa-sha2-nistp384 {ecdsa}"), "curve mismatch"),
            (
                format!("{kind} {}", blob(&[b"ssh-ed25519", &[1; 31]])),
                "short ed25519",
            ),
            (
                format!("{kind} {}", blob(&[b"ssh-ed25519", &[1; 32], b"x"])),
                "trailing",
            ),
            (
                format!(
                    "ecdsa-sha2-nistp256 {}",
                    blob(&[b"ecdsa-sha2-nistp256", b"nistp256", &[2; 33]])
                ),
                "compressed point",
            ),
            (
                format!("ssh-rsa {}", blob(&[b"ssh-rsa", &[3], &[1; 8]])),
                "tiny modulus",
            ),
        ];
        for (line, why) in cases {
            assert!(parse(line.as_bytes()).is_err(), "{why}: {line}");
        }
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let (kind, b64) = &samples()[0];
        let mut long = format!("{kind} {b64} ").into_bytes();
        long.resize(MAX_LINE + 1, b'x');
        assert_eq!(parse(&long), Err(LineError::TooLong(MAX_LINE + 1)));
        for junk in [
            &b"\xff\xfe\x00\x01"[..],
            b"\x00",
            b"ssh-ed25519 \xff\xff",
            b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5\x00",
            b"=",
            b",",
            b"\"",
        ] {
            assert!(parse(junk).is_err(), "{junk:?}");
        }
        // Length fields that point past the end, or wrap.
        let huge = STANDARD.encode([0xffu8, 0xff, 0xff, 0xff, 0, 0]);
        assert!(parse(format!("{kind} {huge}").as_bytes()).is_err());
    }

    #[test]
    fn fingerprint_matches_ssh_keygen() {
        let dir = std::env::temp_dir().join(format!("bastion-keys-fp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for t in ["ed25519", "rsa", "ecdsa"] {
            let path = dir.join(t);
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(path.with_extension("pub"));
            let ok = std::process::Command::new("ssh-keygen")
                .args(["-q", "-t", t, "-N", "", "-C", "x y z", "-f"])
                .arg(&path)
                .status()
                .unwrap()
                .success();
            assert!(ok);
            let pubfile = path.with_extension("pub");
            let line = std::fs::read_to_string(&pubfile).unwrap();
            let out = std::process::Command::new("ssh-keygen")
                .arg("-lf")
                .arg(&pubfile)
                .output()
                .unwrap();
            let listed = String::from_utf8(out.stdout).unwrap();
            let want = listed.split(' ').nth(1).unwrap();
            assert_eq!(key(line.trim_end()).fingerprint(), want, "{t}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
