//! The ssh-agent wire protocol (draft-miller-ssh-agent), read as hostile
//! input: a frame is a `u32` length then that many bytes, the first the
//! message type. Parsing never allocates from a length it was given, never
//! panics, and rejects trailing bytes, so what the filter decides on is
//! exactly what the agent would read.

use std::fmt;

/// Largest message either side may send (SPEC 13); OpenSSH's agent uses
/// the same bound.
pub const MAX_MESSAGE: usize = 256 * 1024;

pub const FAILURE: u8 = 5;
pub const SUCCESS: u8 = 6;
pub const REQUEST_IDENTITIES: u8 = 11;
pub const IDENTITIES_ANSWER: u8 = 12;
pub const SIGN_REQUEST: u8 = 13;
pub const SIGN_RESPONSE: u8 = 14;
pub const ADD_IDENTITY: u8 = 17;
pub const REMOVE_IDENTITY: u8 = 18;
pub const REMOVE_ALL_IDENTITIES: u8 = 19;
pub const ADD_SMARTCARD_KEY: u8 = 20;
pub const REMOVE_SMARTCARD_KEY: u8 = 21;
pub const LOCK: u8 = 22;
pub const UNLOCK: u8 = 23;
pub const ADD_ID_CONSTRAINED: u8 = 25;
pub const ADD_SMARTCARD_KEY_CONSTRAINED: u8 = 26;
pub const EXTENSION: u8 = 27;
pub const EXTENSION_FAILURE: u8 = 28;

pub const SESSION_BIND: &[u8] = b"session-bind@openssh.com";

/// `SSH2_MSG_USERAUTH_REQUEST` (RFC 4252), the only thing signed for a
/// login.
const USERAUTH_REQUEST: u8 = 50;

/// The frame the proxy answers every refusal with.
pub const FAILURE_FRAME: [u8; 5] = [0, 0, 0, 1, FAILURE];

/// Why a frame header cannot start a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Length 0: no message type.
    Empty,
    /// Longer than [`MAX_MESSAGE`].
    TooLong(u32),
}

/// The body length a 4-byte header announces, if acceptable.
pub fn frame_len(header: [u8; 4]) -> Result<usize, FrameError> {
    match u32::from_be_bytes(header) {
        0 => Err(FrameError::Empty),
        n if n as usize > MAX_MESSAGE => Err(FrameError::TooLong(n)),
        n => Ok(n as usize),
    }
}

/// Frames `body` for the wire.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + body.len());
    v.extend_from_slice(&(body.len() as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// Why a message body was not understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    Truncated,
    TrailingBytes,
    BadBoolean,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Truncated => "truncated",
            Self::TrailingBytes => "trailing bytes",
            Self::BadBoolean => "bad boolean",
        })
    }
}

/// A reader over SSH wire types.
pub struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Reader(b)
    }

    pub fn byte(&mut self) -> Result<u8, Malformed> {
        let (&b, rest) = self.0.split_first().ok_or(Malformed::Truncated)?;
        self.0 = rest;
        Ok(b)
    }

    pub fn u32(&mut self) -> Result<u32, Malformed> {
        if self.0.len() < 4 {
            return Err(Malformed::Truncated);
        }
        let (h, rest) = self.0.split_at(4);
        self.0 = rest;
        Ok(u32::from_be_bytes([h[0], h[1], h[2], h[3]]))
    }

    pub fn string(&mut self) -> Result<&'a [u8], Malformed> {
        let n = self.u32()? as usize;
        if self.0.len() < n {
            return Err(Malformed::Truncated);
        }
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(s)
    }

    pub fn boolean(&mut self) -> Result<bool, Malformed> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Malformed::BadBoolean),
        }
    }

    pub fn end(&self) -> Result<(), Malformed> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Malformed::TrailingBytes)
        }
    }
}

/// A message the filter refuses without asking the agent, by kind (also
/// the `reason` label of `bastion_upstream_refused_total`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forbidden {
    /// add, add-constrained
    Add,
    /// remove, remove-all
    Remove,
    Lock,
    Unlock,
    /// add or remove a PKCS#11 provider
    Smartcard,
    /// SSH protocol 1 messages (1..=9, 24)
    Legacy,
    /// An extension other than session-bind, by name.
    Extension(Vec<u8>),
    /// A message type this protocol does not define.
    Unknown(u8),
}

impl Forbidden {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Remove => "remove",
            Self::Lock => "lock",
            Self::Unlock => "unlock",
            Self::Smartcard => "smartcard",
            Self::Legacy => "legacy",
            Self::Extension(_) => "extension",
            Self::Unknown(_) => "unknown-message",
        }
    }
}

/// One client message, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    RequestIdentities,
    Sign {
        key: &'a [u8],
        data: &'a [u8],
        flags: u32,
    },
    /// `session-bind@openssh.com`: binds the connection to the host key
    /// of one SSH session (the agent checks the host's signature).
    SessionBind {
        host_key: &'a [u8],
        session_id: &'a [u8],
        signature: &'a [u8],
        forwarding: bool,
    },
    Forbidden(Forbidden),
}

/// Parses one message body (the bytes after the length). A forbidden
/// message is recognised by its type alone: its contents (a private key,
/// a passphrase) are never looked at.
pub fn parse_request(body: &[u8]) -> Result<Request<'_>, Malformed> {
    let mut r = Reader::new(body);
    let kind = r.byte()?;
    let req = match kind {
        REQUEST_IDENTITIES => Request::RequestIdentities,
        SIGN_REQUEST => {
            let key = r.string()?;
            let data = r.string()?;
            let flags = r.u32()?;
            Request::Sign { key, data, flags }
        }
        EXTENSION => {
            let name = r.string()?;
            if name != SESSION_BIND {
                return Ok(Request::Forbidden(Forbidden::Extension(name.to_vec())));
            }
            let host_key = r.string()?;
            let session_id = r.string()?;
            let signature = r.string()?;
            let forwarding = r.boolean()?;
            Request::SessionBind {
                host_key,
                session_id,
                signature,
                forwarding,
            }
        }
        ADD_IDENTITY | ADD_ID_CONSTRAINED => return Ok(Request::Forbidden(Forbidden::Add)),
        REMOVE_IDENTITY | REMOVE_ALL_IDENTITIES => {
            return Ok(Request::Forbidden(Forbidden::Remove))
        }
        LOCK => return Ok(Request::Forbidden(Forbidden::Lock)),
        UNLOCK => return Ok(Request::Forbidden(Forbidden::Unlock)),
        ADD_SMARTCARD_KEY | REMOVE_SMARTCARD_KEY | ADD_SMARTCARD_KEY_CONSTRAINED => {
            return Ok(Request::Forbidden(Forbidden::Smartcard))
        }
        1 | 3 | 7 | 8 | 9 | 24 => return Ok(Request::Forbidden(Forbidden::Legacy)),
        other => return Ok(Request::Forbidden(Forbidden::Unknown(other))),
    };
    r.end()?;
    Ok(req)
}

/// What a sign request's data must be for a login: the user-auth request
/// of RFC 4252 section 7 (or its host-bound variant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAuth<'a> {
    pub session_id: &'a [u8],
    pub user: &'a [u8],
    pub service: &'a [u8],
    pub algorithm: &'a [u8],
    pub key: &'a [u8],
    /// The server host key, for `publickey-hostbound-v00@openssh.com`.
    pub host_key: Option<&'a [u8]>,
}

/// Parses sign-request data as a public-key user-auth request with a
/// signature (`TRUE`); anything else (a file to sign with `ssh-keygen -Y`,
/// an arbitrary blob) is `None`.
pub fn parse_userauth(data: &[u8]) -> Option<UserAuth<'_>> {
    let mut r = Reader::new(data);
    let session_id = r.string().ok()?;
    if r.byte().ok()? != USERAUTH_REQUEST {
        return None;
    }
    let user = r.string().ok()?;
    let service = r.string().ok()?;
    let method = r.string().ok()?;
    let hostbound = match method {
        b"publickey" => false,
        b"publickey-hostbound-v00@openssh.com" => true,
        _ => return None,
    };
    if !r.boolean().ok()? {
        return None;
    }
    let algorithm = r.string().ok()?;
    let key = r.string().ok()?;
    let host_key = if hostbound {
        Some(r.string().ok()?)
    } else {
        None
    };
    r.end().ok()?;
    Some(UserAuth {
        session_id,
        user,
        service,
        algorithm,
        key,
        host_key,
    })
}

/// The message type of an agent reply body, if it has one.
pub fn reply_kind(body: &[u8]) -> Option<u8> {
    body.first().copied()
}

/// Writers for the tests and the fuzz target: build well-formed messages.
pub mod build {
    use super::*;

    pub fn string(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&(s.len() as u32).to_be_bytes());
        out.extend_from_slice(s);
    }

    pub fn sign(key: &[u8], data: &[u8], flags: u32) -> Vec<u8> {
        let mut v = vec![SIGN_REQUEST];
        string(&mut v, key);
        string(&mut v, data);
        v.extend_from_slice(&flags.to_be_bytes());
        v
    }

    pub fn session_bind(host_key: &[u8], session_id: &[u8], sig: &[u8], fwd: bool) -> Vec<u8> {
        let mut v = vec![EXTENSION];
        string(&mut v, SESSION_BIND);
        string(&mut v, host_key);
        string(&mut v, session_id);
        string(&mut v, sig);
        v.push(u8::from(fwd));
        v
    }

    pub fn userauth(
        session_id: &[u8],
        user: &[u8],
        key: &[u8],
        host_key: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut v = Vec::new();
        string(&mut v, session_id);
        v.push(USERAUTH_REQUEST);
        string(&mut v, user);
        string(&mut v, b"ssh-connection");
        string(
            &mut v,
            if host_key.is_some() {
                b"publickey-hostbound-v00@openssh.com"
            } else {
                b"publickey"
            },
        );
        v.push(1);
        string(&mut v, b"ssh-ed25519");
        string(&mut v, key);
        if let Some(h) = host_key {
            string(&mut v, h);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    #[test]
    fn frame_lengths() {
        assert_eq!(frame_len([0, 0, 0, 1]), Ok(1));
        assert_eq!(frame_len([0, 4, 0, 0]), Ok(MAX_MESSAGE));
        assert_eq!(
            frame_len([0, 4, 0, 1]),
            Err(FrameError::TooLong(MAX_MESSAGE as u32 + 1))
        );
        assert_eq!(frame_len([0xff; 4]), Err(FrameError::TooLong(u32::MAX)));
        assert_eq!(frame_len([0; 4]), Err(FrameError::Empty));
        assert_eq!(frame(&[5]), FAILURE_FRAME);
    }

    #[test]
    fn request_identities_takes_no_body() {
        assert_eq!(parse_request(&[11]), Ok(Request::RequestIdentities));
        assert_eq!(parse_request(&[11, 0]), Err(Malformed::TrailingBytes));
    }

    #[test]
    fn sign_request_exactly() {
        let m = sign(b"KEY", b"DATA", 2);
        assert_eq!(
            parse_request(&m),
            Ok(Request::Sign {
                key: b"KEY",
                data: b"DATA",
                flags: 2
            })
        );
        // Every truncation is refused, never read past the end.
        for cut in 1..m.len() {
            assert_eq!(parse_request(&m[..cut]), Err(Malformed::Truncated), "{cut}");
        }
        let mut long = m.clone();
        long.push(0);
        assert_eq!(parse_request(&long), Err(Malformed::TrailingBytes));
        // A string length pointing far past the end.
        let mut huge = vec![SIGN_REQUEST, 0xff, 0xff, 0xff, 0xff];
        huge.extend_from_slice(b"abc");
        assert_eq!(parse_request(&huge), Err(Malformed::Truncated));
    }

    #[test]
    fn session_bind_exactly() {
        let m = session_bind(b"HK", b"SID", b"SIG", false);
        assert_eq!(
            parse_request(&m),
            Ok(Request::SessionBind {
                host_key: b"HK",
                session_id: b"SID",
                signature: b"SIG",
                forwarding: false
            })
        );
        let fwd = session_bind(b"HK", b"SID", b"SIG", true);
        assert!(matches!(
            parse_request(&fwd),
            Ok(Request::SessionBind {
                forwarding: true,
                ..
            })
        ));
        let mut bad_bool = m.clone();
        *bad_bool.last_mut().unwrap() = 2;
        assert_eq!(parse_request(&bad_bool), Err(Malformed::BadBoolean));
        for cut in 1..m.len() {
            assert_eq!(parse_request(&m[..cut]), Err(Malformed::Truncated), "{cut}");
        }
        let mut long = m;
        long.push(1);
        assert_eq!(parse_request(&long), Err(Malformed::TrailingBytes));
    }

    #[test]
    fn every_other_message_is_forbidden_by_type() {
        let cases: &[(u8, &str)] = &[
            (ADD_IDENTITY, "add"),
            (ADD_ID_CONSTRAINED, "add"),
            (REMOVE_IDENTITY, "remove"),
            (REMOVE_ALL_IDENTITIES, "remove"),
            (LOCK, "lock"),
            (UNLOCK, "unlock"),
            (ADD_SMARTCARD_KEY, "smartcard"),
            (REMOVE_SMARTCARD_KEY, "smartcard"),
            (ADD_SMARTCARD_KEY_CONSTRAINED, "smartcard"),
            (1, "legacy"),
            (3, "legacy"),
            (7, "legacy"),
            (8, "legacy"),
            (9, "legacy"),
            (24, "legacy"),
        ];
        for &(t, reason) in cases {
            // With or without a body, garbage or not: refused unread.
            for body in [vec![t], vec![t, 0xff, 0xff], vec![t; 300]] {
                match parse_request(&body) {
                    Ok(Request::Forbidden(f)) => assert_eq!(f.reason(), reason, "type {t}"),
                    other => panic!("type {t}: {other:?}"),
                }
            }
        }
        let known = [11u8, 13, 27];
        for t in 0..=255u8 {
            if known.contains(&t) || cases.iter().any(|c| c.0 == t) {
                continue;
            }
            assert_eq!(
                parse_request(&[t]),
                Ok(Request::Forbidden(Forbidden::Unknown(t))),
                "type {t}"
            );
        }
        // Replies sent as requests are unknown requests too.
        for t in [
            FAILURE,
            SUCCESS,
            IDENTITIES_ANSWER,
            SIGN_RESPONSE,
            EXTENSION_FAILURE,
        ] {
            assert_eq!(
                parse_request(&[t]).unwrap(),
                Request::Forbidden(Forbidden::Unknown(t))
            );
        }
    }

    #[test]
    fn other_extensions_are_forbidden_by_name() {
        for name in [&b"query"[..], b"session-bind@openssh.co", b"", b"x\n"] {
            let mut m = vec![EXTENSION];
            string(&mut m, name);
            m.extend_from_slice(b"whatever follows");
            assert_eq!(
                parse_request(&m),
                Ok(Request::Forbidden(Forbidden::Extension(name.to_vec())))
            );
        }
        // An extension without even a name is malformed.
        assert_eq!(parse_request(&[EXTENSION, 0, 0]), Err(Malformed::Truncated));
        assert_eq!(parse_request(&[]), Err(Malformed::Truncated));
    }

    #[test]
    fn userauth_data() {
        let d = userauth(b"SID", b"deploy", b"KEY", None);
        let u = parse_userauth(&d).unwrap();
        assert_eq!(
            (u.session_id, u.user, u.service, u.key, u.host_key),
            (
                &b"SID"[..],
                &b"deploy"[..],
                &b"ssh-connection"[..],
                &b"KEY"[..],
                None
            )
        );
        let h = userauth(b"SID", b"deploy", b"KEY", Some(b"HK"));
        assert_eq!(parse_userauth(&h).unwrap().host_key, Some(&b"HK"[..]));
        for cut in 0..d.len() {
            assert!(parse_userauth(&d[..cut]).is_none(), "{cut}");
        }
        let mut long = d.clone();
        long.push(0);
        assert!(parse_userauth(&long).is_none());
        // Not a user-auth request: what `ssh-keygen -Y sign` sends.
        assert!(parse_userauth(b"SSHSIG\0\0\0\x04file").is_none());
        // Wrong message number, wrong method, no signature flag.
        let mut m = d.clone();
        m[4 + 3] = 51;
        assert!(parse_userauth(&m).is_none());
        let mut v = Vec::new();
        string(&mut v, b"SID");
        v.push(50);
        string(&mut v, b"deploy");
        string(&mut v, b"ssh-connection");
        string(&mut v, b"password");
        v.push(1);
        assert!(parse_userauth(&v).is_none());
        let flag_at = d.len() - (4 + 3) - (4 + 11) - 1;
        let mut q = d;
        assert_eq!(q[flag_at], 1);
        q[flag_at] = 0;
        assert!(parse_userauth(&q).is_none());
    }
}
