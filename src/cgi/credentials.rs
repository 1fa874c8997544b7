//! The HTTP credentials: read from the environment or files at boot, handed
//! to the listener over a pipe, checked per request in constant time. A
//! secret is never printed, logged, put in argv, in an environment or in a
//! `ConfigError`; only the Basic user name of a request that matched is
//! shown (as "who" in the access log).

use crate::config::{env_var, ConfigError};
use base64::Engine as _;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use subtle::ConstantTimeEq;

/// Longest accepted secret (`user:password` or token), in bytes. It is a
/// public bound: a presented value longer than this fails without looking at
/// the secret, and every comparison costs the same whatever the lengths.
pub(crate) const MAX_SECRET: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Basic,
    Bearer,
}

impl Scheme {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Scheme::Basic => "basic",
            Scheme::Bearer => "bearer",
        }
    }

    /// The `WWW-Authenticate` value a 401 carries.
    pub(crate) fn challenge(self) -> &'static str {
        match self {
            Scheme::Basic => "Basic realm=\"bastion\", charset=\"UTF-8\"",
            Scheme::Bearer => "Bearer realm=\"bastion\"",
        }
    }
}

/// The configured HTTP credentials (Basic wins over Bearer). Opaque: never
/// printed, never serialized into the runtime file.
pub(crate) struct Credentials {
    scheme: Scheme,
    /// The secret, zero-padded to `MAX_SECRET` so a comparison always reads
    /// the same number of bytes.
    padded: Box<[u8; MAX_SECRET]>,
    len: usize,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.scheme.name())
    }
}

/// Who a request authenticated as, for the access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Who {
    /// The Basic user name (already checked to be printable).
    User(String),
    Bearer,
}

impl Who {
    /// The principal's name as the access log shows it (escaped there).
    pub(crate) fn name(&self) -> &str {
        match self {
            Who::User(u) => u,
            Who::Bearer => "bearer",
        }
    }
}

impl Credentials {
    /// Validates and stores a secret. The error text never contains it.
    pub(crate) fn new(scheme: Scheme, secret: &[u8]) -> Result<Self, String> {
        validate(scheme, secret)?;
        let mut padded = Box::new([0u8; MAX_SECRET]);
        padded[..secret.len()].copy_from_slice(secret);
        Ok(Self {
            scheme,
            padded,
            len: secret.len(),
        })
    }

    pub(crate) fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Constant time in the secret: always compares `MAX_SECRET` bytes and
    /// folds the length check in with `subtle`, so neither the content nor
    /// the length of the secret shows in the timing.
    fn matches(&self, presented: &[u8]) -> bool {
        if presented.len() > MAX_SECRET {
            return false;
        }
        let mut buf = [0u8; MAX_SECRET];
        buf[..presented.len()].copy_from_slice(presented);
        let same_bytes = buf[..].ct_eq(&self.padded[..]);
        let same_len = (presented.len() as u64).ct_eq(&(self.len as u64));
        (same_bytes & same_len).into()
    }

    /// Checks an `Authorization` header value. `None`: refused.
    pub(crate) fn check(&self, authorization: Option<&[u8]>) -> Option<Who> {
        let (scheme, param) = split_authorization(authorization?)?;
        match self.scheme {
            Scheme::Basic if scheme.eq_ignore_ascii_case(b"basic") => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(param)
                    .ok()?;
                if !self.matches(&decoded) {
                    return None;
                }
                let user = decoded.split(|&b| b == b':').next().unwrap_or_default();
                Some(Who::User(String::from_utf8_lossy(user).into_owned()))
            }
            Scheme::Bearer if scheme.eq_ignore_ascii_case(b"bearer") => {
                self.matches(param).then_some(Who::Bearer)
            }
            _ => None,
        }
    }

    /// The form written to the listener's stdin by `spawn_listener`: the
    /// scheme name, a newline, the secret.
    pub(crate) fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.len);
        out.extend_from_slice(self.scheme.name().as_bytes());
        out.push(b'\n');
        out.extend_from_slice(&self.padded[..self.len]);
        out
    }

    pub(crate) fn from_wire(wire: &[u8]) -> Result<Self, String> {
        let nl = wire
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("credentials on stdin: expected `basic` or `bearer`, a newline, the secret")?;
        let scheme = match &wire[..nl] {
            b"basic" => Scheme::Basic,
            b"bearer" => Scheme::Bearer,
            _ => {
                return Err(
                    "credentials on stdin: unknown scheme (expected basic or bearer)".into(),
                )
            }
        };
        Self::new(scheme, &wire[nl + 1..]).map_err(|e| format!("credentials on stdin: {e}"))
    }
}

/// `Scheme SP+ param`, the param without surrounding blanks.
fn split_authorization(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let value = value.trim_ascii();
    let sp = value.iter().position(|&b| b == b' ' || b == b'\t')?;
    let (scheme, rest) = value.split_at(sp);
    let param = rest.trim_ascii();
    (!param.is_empty()).then_some((scheme, param))
}

/// What a secret must look like to be sendable in a header at all.
fn validate(scheme: Scheme, secret: &[u8]) -> Result<(), String> {
    if secret.is_empty() {
        return Err("is empty".into());
    }
    if secret.len() > MAX_SECRET {
        return Err(format!("is longer than {MAX_SECRET} bytes"));
    }
    match scheme {
        Scheme::Basic => {
            let colon = secret
                .iter()
                .position(|&b| b == b':')
                .ok_or("must be `user:password` (no colon found)")?;
            if colon == 0 {
                return Err("has an empty user name (expected `user:password`)".into());
            }
            if colon + 1 == secret.len() {
                return Err("has an empty password (expected `user:password`)".into());
            }
            if std::str::from_utf8(secret).is_err() {
                return Err("is not valid UTF-8".into());
            }
            if secret.iter().any(|&b| b < 0x20 || b == 0x7f) {
                return Err("contains a control character".into());
            }
        }
        Scheme::Bearer => {
            if !secret.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
                return Err(
                    "may only contain printable ASCII without spaces (a header cannot carry it otherwise)"
                        .into(),
                );
            }
        }
    }
    Ok(())
}

/// One of the two credential sources (`HTTP_BASIC_AUTH`/`HTTP_TOKEN`), from
/// the variable or its `_FILE` twin. `Ok(None)`: neither is set.
fn read_source(
    var: &str,
    scheme: Scheme,
    session_user: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<Credentials> {
    let file_var = format!("{var}_FILE");
    let fix = match scheme {
        Scheme::Basic => "set it to `user:password` (printable, UTF-8, at most 4096 bytes)",
        Scheme::Bearer => "set it to a token of printable ASCII without spaces, at most 4096 bytes",
    };
    let value = env_var(var).map_err(|e| errors.push(e)).ok()?;
    let file = env_var(&file_var).map_err(|e| errors.push(e)).ok()?;
    match (value, file) {
        (None, None) => None,
        (Some(_), Some(path)) => {
            errors.push(ConfigError::new(
                &file_var,
                Some(&path),
                format!("is set together with {var}"),
                format!("set only one of {var} and {file_var}"),
            ));
            None
        }
        (Some(v), None) => Credentials::new(scheme, v.as_bytes())
            .map_err(|p| errors.push(ConfigError::new(var, None, p, fix)))
            .ok(),
        (None, Some(path)) => {
            let secret = read_secret_file(Path::new(&path), session_user)
                .map_err(|p| errors.push(ConfigError::new(&file_var, Some(&path), p, fix)))
                .ok()?;
            Credentials::new(scheme, &secret)
                .map_err(|p| {
                    errors.push(ConfigError::new(
                        &file_var,
                        Some(&path),
                        format!("the file's content {p}"),
                        fix,
                    ))
                })
                .ok()
        }
    }
}

/// Reads a secret file (docker secrets end it with a newline, which is not
/// part of the secret). Refuses a file the session user could read: a
/// session must never be able to read the listener's credentials.
fn read_secret_file(path: &Path, session_user: &str) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read the file: {e}"))?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    if crate::sys::privilege::user_may_read(session_user, &meta) {
        return Err(format!(
            "the file is readable by the session user {session_user} (mode {:o}, owner {}:{}); \
             make it readable by root only (chown root:root, chmod 0400)",
            meta.mode() & 0o7777,
            meta.uid(),
            meta.gid()
        ));
    }
    if meta.len() > (MAX_SECRET + 2) as u64 {
        return Err(format!("the file is larger than {MAX_SECRET} bytes"));
    }
    let mut secret = std::fs::read(path).map_err(|e| format!("cannot read the file: {e}"))?;
    while secret.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
        secret.pop();
    }
    Ok(secret)
}

/// Reads `HTTP_BASIC_AUTH`, `HTTP_TOKEN` and their `_FILE` variants.
/// `Ok(None)`: HTTP is off. Every problem is reported, secrets redacted.
pub(crate) fn credentials_from_env() -> Result<Option<Credentials>, Vec<ConfigError>> {
    from_env_for(crate::config::SESSION_USER)
}

pub(crate) fn from_env_for(session_user: &str) -> Result<Option<Credentials>, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let basic = read_source("HTTP_BASIC_AUTH", Scheme::Basic, session_user, &mut errors);
    let bearer = read_source("HTTP_TOKEN", Scheme::Bearer, session_user, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(basic.or(bearer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn bearer_matches_only_the_exact_token() {
        let c = Credentials::new(Scheme::Bearer, b"s3cret-token").unwrap();
        assert_eq!(c.check(Some(b"Bearer s3cret-token")), Some(Who::Bearer));
        assert_eq!(c.check(Some(b"bearer   s3cret-token ")), Some(Who::Bearer));
        for bad in [
            &b"Bearer s3cret-toke"[..],
            b"Bearer s3cret-token2",
            b"Bearer S3cret-token",
            b"Bearer ",
            b"Bearer",
            b"s3cret-token",
            b"Basic s3cret-token",
            b"Bearers3cret-token",
            b"",
        ] {
            assert_eq!(
                c.check(Some(bad)),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(c.check(None), None);
    }

    #[test]
    fn basic_matches_user_and_password_and_names_the_user() {
        let c = Credentials::new(Scheme::Basic, b"alice:pa:ss").unwrap();
        let ok = format!("Basic {}", b64("alice:pa:ss"));
        assert_eq!(
            c.check(Some(ok.as_bytes())),
            Some(Who::User("alice".into()))
        );
        for bad in ["alice:pa", "alice:pa:ss ", "bob:pa:ss", ":pa:ss", "alice"] {
            let h = format!("Basic {}", b64(bad));
            assert_eq!(c.check(Some(h.as_bytes())), None, "{bad}");
        }
        assert_eq!(c.check(Some(b"Basic !!!notbase64")), None);
        let bearer = format!("Bearer {}", b64("alice:pa:ss"));
        assert_eq!(c.check(Some(bearer.as_bytes())), None);
    }

    #[test]
    fn zero_padding_does_not_make_prefixes_equal() {
        // The secret is zero-padded: a presented value with trailing NULs
        // must still fail on the length.
        let c = Credentials::new(Scheme::Basic, b"u:p").unwrap();
        assert!(!c.matches(b"u:p\0"));
        assert!(!c.matches(b"u:"));
        assert!(c.matches(b"u:p"));
        assert!(!c.matches(&[b'a'; MAX_SECRET + 1]));
    }

    #[test]
    fn malformed_secrets_are_refused_without_echoing_them() {
        for (scheme, s) in [
            (Scheme::Basic, "nocolonSECRET"),
            (Scheme::Basic, ":SECRET"),
            (Scheme::Basic, "SECRET:"),
            (Scheme::Basic, "user:SECRET\nword"),
            (Scheme::Basic, "user:SECRET\x7f"),
            (Scheme::Bearer, "has SECRET"),
            (Scheme::Bearer, "tab\tSECRET"),
            (Scheme::Bearer, "\u{e9}SECRET"),
        ] {
            let e = Credentials::new(scheme, s.as_bytes()).unwrap_err();
            assert!(!e.contains("SECRET"), "{e}");
        }
        assert!(Credentials::new(Scheme::Bearer, b"").is_err());
        let long = "x".repeat(MAX_SECRET + 1);
        assert!(Credentials::new(Scheme::Bearer, long.as_bytes()).is_err());
        assert!(Credentials::new(Scheme::Bearer, &long.as_bytes()[1..]).is_ok());
    }

    #[test]
    fn wire_round_trip() {
        let c = Credentials::new(Scheme::Basic, b"u:p w").unwrap();
        let back = Credentials::from_wire(&c.to_wire()).unwrap();
        assert_eq!(back.scheme(), Scheme::Basic);
        assert!(back.matches(b"u:p w"));
        assert!(Credentials::from_wire(b"digest\nx").is_err());
        assert!(Credentials::from_wire(b"bearer").is_err());
        assert!(Credentials::from_wire(b"bearer\n").is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let c = Credentials::new(Scheme::Bearer, b"topsecret").unwrap();
        assert!(!format!("{c:?}").contains("topsecret"));
    }
}
