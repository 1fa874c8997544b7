//! `UPSTREAMS` / `UPSTREAM_KNOWN_HOSTS` (SPEC 13): the declared SSH hosts a
//! session may log in to with a key it can use but never read. Parsing is
//! pure; [`validate`] checks the key files and pins at boot (as root) and
//! reports every problem at once. Nothing here ever keeps private key bytes:
//! only the public half (from `ssh-keygen -y`) leaves this module.

use crate::config::ConfigError;
use crate::keys::line::{self, Line};
use crate::sshkey::PublicKey;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub(crate) const VAR: &str = "UPSTREAMS";
pub(crate) const KNOWN_HOSTS_VAR: &str = "UPSTREAM_KNOWN_HOSTS";
pub(crate) const DEFAULT_KNOWN_HOSTS: &str = "/etc/bastion/upstream_known_hosts";
/// Longest key file read; an RSA-16384 private key is under 13 KiB.
const MAX_KEY_FILE: u64 = 64 * 1024;
/// Longest pinned-host file read.
const MAX_KNOWN_HOSTS: u64 = 1024 * 1024;
const MAX_NAME: usize = 64;
const MAX_UPSTREAMS: usize = 64;

/// One `NAME USER@HOST[:PORT] KEY_FILE` line, syntactically valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Declared {
    pub(crate) name: String,
    pub(crate) user: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) key_file: PathBuf,
    /// 1-based line of `UPSTREAMS`, for messages.
    pub(crate) line: usize,
}

impl Declared {
    /// How OpenSSH names this host in known_hosts: `host`, or `[host]:port`
    /// off port 22.
    pub(crate) fn known_hosts_name(&self) -> String {
        if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }

    pub(crate) fn destination(&self) -> String {
        format!("{}@{}", self.user, self.host)
    }
}

/// The public facts of one upstream, as the proxy and the client config
/// need them: written into the runtime file (no secret in it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Upstream {
    pub(crate) name: String,
    pub(crate) user: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `type base64` of the key's public half.
    pub(crate) public_key: String,
    /// `SHA256:...` of that key.
    pub(crate) fingerprint: String,
    /// `type base64` of every host key pinned for it.
    pub(crate) host_keys: Vec<String>,
}

impl Upstream {
    pub(crate) fn key_blob(&self) -> Option<Vec<u8>> {
        blob_of(&self.public_key)
    }

    pub(crate) fn host_key_blobs(&self) -> Vec<Vec<u8>> {
        self.host_keys.iter().filter_map(|k| blob_of(k)).collect()
    }
}

fn blob_of(openssh: &str) -> Option<Vec<u8>> {
    match line::parse(openssh.as_bytes()) {
        Ok(Line::Key(k)) => Some(k.blob),
        _ => None,
    }
}

/// A user name or host name that ssh_config, known_hosts and `ssh-add -h`
/// all carry without quoting, and that no tool reads as an option.
fn is_plain_word(s: &str, extra: &[u8]) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b) || extra.contains(&b))
}

fn is_name(s: &str) -> bool {
    let mut b = s.bytes();
    s.len() <= MAX_NAME
        && b.next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

/// `USER@HOST[:PORT]`, HOST a name, an IPv4 address or `[IPv6]`.
fn parse_destination(s: &str) -> Result<(String, String, u16), String> {
    let (user, rest) = s
        .split_once('@')
        .ok_or("the destination must be USER@HOST[:PORT]")?;
    if !is_plain_word(user, b"") {
        return Err(format!(
            "user \"{}\" must be letters, digits and ._- (not starting with -)",
            crate::audit::escape(user)
        ));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or("an IPv6 host must be written [ADDRESS]")?;
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!(
                "\"{}\" is not an IPv6 address",
                crate::audit::escape(addr)
            ));
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("expected :PORT after ]")?),
        };
        (addr.to_owned(), port)
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (rest.to_owned(), None),
        }
    };
    if !is_plain_word(&host, b":") || (host.contains(':') && !rest.starts_with('[')) {
        return Err(format!(
            "host \"{}\" must be a host name or address (letters, digits, . and -; IPv6 in [ ])",
            crate::audit::escape(&host)
        ));
    }
    let port = match port {
        None => 22,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                return Err(format!(
                    "port \"{}\" is not a TCP port (1 to 65535)",
                    crate::audit::escape(p)
                ))
            }
        },
    };
    Ok((user.to_owned(), host, port))
}

fn line_error(line: usize, raw: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::new(
        &format!("{VAR} line {line}"),
        Some(raw.trim()),
        problem,
        "write one upstream per line: NAME USER@HOST[:PORT] KEY_FILE, NAME matching [a-z0-9][a-z0-9_-]*",
    )
}

/// Parses `UPSTREAMS`: blank lines and `#` comments are ignored. Every bad
/// line and every duplicate name is an error; all are returned together.
pub(crate) fn parse(text: &str) -> Result<Vec<Declared>, Vec<ConfigError>> {
    let mut out: Vec<Declared> = Vec::new();
    let mut errors = Vec::new();
    let mut names = BTreeSet::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = t.split_ascii_whitespace().collect();
        let [name, dest, key] = fields[..] else {
            errors.push(line_error(
                n,
                raw,
                format!("has {} fields, expected 3", fields.len()),
            ));
            continue;
        };
        if !is_name(name) {
            errors.push(line_error(
                n,
                raw,
                format!(
                    "name \"{}\" is not [a-z0-9][a-z0-9_-]* (at most {MAX_NAME} characters)",
                    crate::audit::escape(name)
                ),
            ));
            continue;
        }
        if !names.insert(name.to_owned()) {
            errors.push(line_error(
                n,
                raw,
                format!("name \"{name}\" is declared twice"),
            ));
            continue;
        }
        let (user, host, port) = match parse_destination(dest) {
            Ok(d) => d,
            Err(problem) => {
                errors.push(line_error(n, raw, problem));
                continue;
            }
        };
        if !key.starts_with('/') || key.chars().any(char::is_control) {
            errors.push(line_error(
                n,
                raw,
                "the key file must be an absolute path inside the container",
            ));
            continue;
        }
        out.push(Declared {
            name: name.to_owned(),
            user,
            host,
            port,
            key_file: PathBuf::from(key),
            line: n,
        });
    }
    if out.len() > MAX_UPSTREAMS {
        errors.push(ConfigError::new(
            VAR,
            None,
            format!("declares {} upstreams", out.len()),
            format!("declare at most {MAX_UPSTREAMS}"),
        ));
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Whether `user` could replace the bytes at `path`: by writing the file,
/// or by renaming something over it in a directory on its path it may
/// write (a sticky directory protects entries it does not own).
pub(crate) fn writable_by(user_uid: u32, user_gids: &[u32], path: &Path) -> Option<PathBuf> {
    let may_write = |m: &fs::Metadata| {
        let mode = m.mode();
        if m.uid() == user_uid {
            return true; // the owner can chmod it
        }
        if user_gids.contains(&m.gid()) && mode & 0o020 != 0 {
            return true;
        }
        mode & 0o002 != 0
    };
    let file = fs::metadata(path).ok()?;
    if may_write(&file) {
        return Some(path.to_owned());
    }
    let mut child_uid = file.uid();
    for dir in path.ancestors().skip(1) {
        let Ok(m) = fs::metadata(dir) else { continue };
        let sticky = m.mode() & 0o1000 != 0;
        if may_write(&m) && !(sticky && child_uid != user_uid) {
            return Some(dir.to_owned());
        }
        child_uid = m.uid();
    }
    None
}

/// The session user's uid and groups, for [`writable_by`].
pub(crate) fn session_ids(name: &str) -> Option<(u32, Vec<u32>)> {
    let u = nix::unistd::User::from_name(name).ok()??;
    let c = std::ffi::CString::new(name).ok()?;
    let gids = nix::unistd::getgrouplist(&c, u.gid)
        .map(|g| g.iter().map(|g| g.as_raw()).collect())
        .unwrap_or_else(|_| vec![u.gid.as_raw()]);
    Some((u.uid.as_raw(), gids))
}

/// Runs `ssh-keygen` with a clean environment and no terminal to ask on.
fn keygen(keygen: &Path, args: &[&std::ffi::OsStr]) -> std::io::Result<std::process::Output> {
    Command::new(keygen)
        .env_clear()
        .args(args)
        .stdin(Stdio::null())
        .output()
}

/// The public half of the private key at `path`, or why it cannot serve:
/// missing, not a regular file, not root-owned, readable by group/other,
/// malformed, or protected by a passphrase (nobody could type it at boot).
fn check_key(d: &Declared, keygen_bin: &Path) -> Result<PublicKey, ConfigError> {
    let var = format!("{VAR} line {}", d.line);
    let shown = d.key_file.display().to_string();
    let err = |problem: String, fix: &str| ConfigError::new(&var, Some(&shown), problem, fix);
    let m = fs::metadata(&d.key_file).map_err(|e| {
        err(
            format!("the key file of upstream {} cannot be read: {e}", d.name),
            "mount the private key there (a docker secret), root-owned, mode 0600",
        )
    })?;
    if !m.is_file() {
        return Err(err(
            format!("the key file of upstream {} is not a regular file", d.name),
            "mount the private key file itself (Docker creates a directory when the source is missing)",
        ));
    }
    if m.uid() != 0 {
        return Err(err(
            format!(
                "the key file of upstream {} is owned by uid {}, not root",
                d.name,
                m.uid()
            ),
            "chown root the file on the host (docker secrets keep the host file's owner)",
        ));
    }
    if m.mode() & 0o077 != 0 {
        return Err(err(
            format!(
                "the key file of upstream {} has mode {:o}: group or others may read it",
                d.name,
                m.mode() & 0o7777
            ),
            "chmod 600 the file",
        ));
    }
    if m.len() > MAX_KEY_FILE {
        return Err(err(
            format!(
                "the key file of upstream {} is {} bytes, not a private key",
                d.name,
                m.len()
            ),
            "mount the OpenSSH private key file",
        ));
    }
    let out = keygen(
        keygen_bin,
        &[
            "-y".as_ref(),
            "-P".as_ref(),
            "".as_ref(),
            "-f".as_ref(),
            d.key_file.as_os_str(),
        ],
    )
    .map_err(|e| {
        err(
            format!("cannot run {}: {e}", keygen_bin.display()),
            "install ssh-keygen",
        )
    })?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr).to_lowercase();
        return Err(if why.contains("passphrase") {
            err(
                format!("the key of upstream {} is protected by a passphrase", d.name),
                "remove it (ssh-keygen -p -N '' -f KEY): no one can type it at boot; protect the file instead",
            )
        } else {
            err(
                format!(
                    "the key file of upstream {} is not a valid private key",
                    d.name
                ),
                "mount an OpenSSH private key (ssh-keygen -t ed25519), not the .pub half",
            )
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    match line::parse(text.trim().as_bytes()) {
        Ok(Line::Key(k)) => Ok(k),
        Ok(Line::Nothing) => Err(err(
            format!("the key file of upstream {} holds no key", d.name),
            "mount an OpenSSH private key",
        )),
        Err(e) => Err(err(
            format!("the key of upstream {} cannot be used: {e}", d.name),
            "use an ed25519, ecdsa or rsa key",
        )),
    }
}

/// Checks the pinned-host file: a regular file the session user can read
/// (its ssh reads it) but can neither write nor replace.
fn check_known_hosts(path: &Path, session_user: &str) -> Result<(), ConfigError> {
    let shown = path.display().to_string();
    let err =
        |problem: String, fix: &str| ConfigError::new(KNOWN_HOSTS_VAR, Some(&shown), problem, fix);
    let m = fs::metadata(path).map_err(|e| {
        err(
            format!("the pinned host keys cannot be read: {e}"),
            "mount an OpenSSH known_hosts file with a line per upstream (ssh-keyscan, checked out of band)",
        )
    })?;
    if !m.is_file() {
        return Err(err(
            "is not a regular file".into(),
            "mount an existing known_hosts file there",
        ));
    }
    if m.len() > MAX_KNOWN_HOSTS {
        return Err(err(
            format!("is {} bytes, more than {MAX_KNOWN_HOSTS}", m.len()),
            "keep only the upstreams' host keys in it",
        ));
    }
    if let Some((uid, gids)) = session_ids(session_user) {
        if let Some(by) = writable_by(uid, &gids, path) {
            return Err(err(
                format!(
                    "the session user {session_user} could change the pins (through {})",
                    by.display()
                ),
                "make the file and every directory above it root-owned and not group/world-writable",
            ));
        }
    }
    Ok(())
}

/// The host keys pinned for `d` in `known_hosts`, found by `ssh-keygen -F`
/// (which understands hashed names, patterns and `[host]:port`). Lines
/// marked `@revoked` or `@cert-authority` are not pins.
fn pins(d: &Declared, known_hosts: &Path, keygen_bin: &Path) -> Result<Vec<PublicKey>, String> {
    let name = d.known_hosts_name();
    let out = keygen(
        keygen_bin,
        &[
            "-F".as_ref(),
            name.as_ref(),
            "-f".as_ref(),
            known_hosts.as_os_str(),
        ],
    )
    .map_err(|e| format!("cannot run {}: {e}", keygen_bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut revoked = Vec::new();
    let mut keys = Vec::new();
    for l in text.lines() {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let (marker, rest) = match l.strip_prefix('@') {
            Some(m) => match m.split_once(char::is_whitespace) {
                Some((m, r)) => (Some(m), r.trim_start()),
                None => continue,
            },
            None => (None, l),
        };
        let Some((_hosts, key)) = rest.split_once(char::is_whitespace) else {
            continue;
        };
        if let Ok(Line::Key(k)) = line::parse(key.trim().as_bytes()) {
            match marker {
                None => keys.push(k),
                Some("revoked") => revoked.push(k),
                Some(_) => {}
            }
        }
    }
    keys.retain(|k| !revoked.contains(k));
    keys.dedup();
    Ok(keys)
}

/// What boot needs for each upstream: the public facts and where its key is.
#[derive(Debug, Clone)]
pub(crate) struct Checked {
    pub(crate) declared: Declared,
    pub(crate) public: Upstream,
}

/// Every check of SPEC 13 at boot, all problems together.
pub(crate) fn validate(
    declared: Vec<Declared>,
    known_hosts: &Path,
    session_user: &str,
    keygen_bin: &Path,
) -> Result<Vec<Checked>, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let hosts_ok = match check_known_hosts(known_hosts, session_user) {
        Ok(()) => true,
        Err(e) => {
            errors.push(e);
            false
        }
    };
    let mut out = Vec::new();
    for d in declared {
        let key = check_key(&d, keygen_bin).map_err(|e| errors.push(e)).ok();
        let host_keys = if hosts_ok {
            match pins(&d, known_hosts, keygen_bin) {
                Ok(k) if !k.is_empty() => Some(k),
                Ok(_) => {
                    errors.push(ConfigError::new(
                        &format!("{VAR} line {}", d.line),
                        Some(&d.name),
                        format!(
                            "upstream {} has no pinned host key for {} in {}",
                            d.name,
                            d.known_hosts_name(),
                            known_hosts.display()
                        ),
                        format!(
                            "add its host key to {} (ssh-keyscan{} {}, checked out of band)",
                            known_hosts.display(),
                            if d.port == 22 {
                                String::new()
                            } else {
                                format!(" -p {}", d.port)
                            },
                            d.host
                        ),
                    ));
                    None
                }
                Err(problem) => {
                    errors.push(ConfigError::new(
                        KNOWN_HOSTS_VAR,
                        None,
                        problem,
                        "install ssh-keygen",
                    ));
                    None
                }
            }
        } else {
            None
        };
        if let (Some(key), Some(host_keys)) = (key, host_keys) {
            let public = Upstream {
                name: d.name.clone(),
                user: d.user.clone(),
                host: d.host.clone(),
                port: d.port,
                public_key: key.to_openssh(),
                fingerprint: key.fingerprint(),
                host_keys: host_keys.iter().map(PublicKey::to_openssh).collect(),
            };
            out.push(Checked {
                declared: d,
                public,
            });
        }
    }
    let mut seen_keys = BTreeSet::new();
    for c in &out {
        if !seen_keys.insert(c.public.fingerprint.clone()) {
            errors.push(ConfigError::new(
                &format!("{VAR} line {}", c.declared.line),
                Some(&c.declared.name),
                format!(
                    "upstream {} uses the same key ({}) as an earlier upstream",
                    c.declared.name, c.public.fingerprint
                ),
                "give each upstream its own key: a key is bound to one host",
            ));
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Declared {
        let mut v = parse(line).unwrap_or_else(|e| panic!("{line:?}: {e:?}"));
        assert_eq!(v.len(), 1);
        v.remove(0)
    }

    fn bad(text: &str) -> Vec<String> {
        parse(text)
            .expect_err(text)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn parses_the_spec_example() {
        let v = parse(
            "  prod    deploy@10.0.0.5:22   /run/secrets/prod_key\n\
             # a comment\n\n\
             backup  backup@backup.internal   /run/secrets/backup_key\n",
        )
        .unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(
            (
                v[0].name.as_str(),
                v[0].user.as_str(),
                v[0].host.as_str(),
                v[0].port
            ),
            ("prod", "deploy", "10.0.0.5", 22)
        );
        assert_eq!(v[0].known_hosts_name(), "10.0.0.5");
        assert_eq!(v[1].line, 4);
        assert_eq!(v[1].host, "backup.internal");
        assert_eq!(v[1].port, 22);
        assert_eq!(v[1].key_file, Path::new("/run/secrets/backup_key"));
    }

    #[test]
    fn ports_and_ipv6() {
        let d = one("web deploy@web.example:2222 /k");
        assert_eq!(d.port, 2222);
        assert_eq!(d.known_hosts_name(), "[web.example]:2222");
        let d = one("v6 root@[2001:db8::1]:2200 /k");
        assert_eq!((d.host.as_str(), d.port), ("2001:db8::1", 2200));
        assert_eq!(d.known_hosts_name(), "[2001:db8::1]:2200");
        assert_eq!(one("v6 a@[::1] /k").port, 22);
        assert_eq!(d.destination(), "root@2001:db8::1");
    }

    #[test]
    fn every_bad_line_is_reported_at_once() {
        let errs = bad("Prod a@h /k\n\
                        ok a@h /k\n\
                        ok b@h /k2\n\
                        two fields\n\
                        four a@h /k extra\n\
                        nouser h /k\n\
                        port a@h:0 /k\n\
                        port2 a@h:99999 /k\n\
                        port3 a@h:+22 /k\n\
                        rel a@h key\n\
                        opt -oProxyCommand=x@h /k\n\
                        opth a@-oProxyCommand /k\n\
                        v6 a@::1 /k\n\
                        v6b a@[zz]:22 /k\n\
                        _x a@h /k\n");
        assert_eq!(errs.len(), 14, "{errs:#?}");
        assert!(errs[0].contains("UPSTREAMS line 1") && errs[0].contains("\"Prod\""));
        assert!(errs[1].contains("declared twice"));
        assert!(errs
            .iter()
            .all(|e| e.starts_with("config error: UPSTREAMS line ")));
        assert!(errs.iter().any(|e| e.contains("line 15")));
    }

    #[test]
    fn names_follow_the_spec_pattern() {
        for good in ["prod", "0", "a-b_c", "db2"] {
            assert!(is_name(good), "{good}");
        }
        for b in ["", "-a", "_a", "Prod", "a.b", "a b", "ä", &"a".repeat(65)] {
            assert!(!is_name(b), "{b}");
        }
    }

    #[test]
    fn empty_text_is_no_upstream() {
        assert_eq!(parse("\n  \n# none\n").unwrap(), vec![]);
    }

    #[test]
    fn writable_by_sees_files_and_directories() {
        use std::os::unix::fs::PermissionsExt;
        let d = std::env::temp_dir().join(format!("bastion-upstream-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("sub")).unwrap();
        let f = d.join("sub/known_hosts");
        fs::write(&f, "x").unwrap();
        let set = |p: &Path, m| fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
        set(&d, 0o755);
        set(&d.join("sub"), 0o755);
        set(&f, 0o644);
        // uid 4242 owns nothing here, is in no group of these files.
        let me = nix::unistd::getuid().as_raw();
        assert_eq!(writable_by(4242, &[4242], &f), None);
        set(&f, 0o666);
        assert_eq!(writable_by(4242, &[4242], &f), Some(f.clone()));
        set(&f, 0o644);
        set(&d.join("sub"), 0o777);
        assert_eq!(writable_by(4242, &[4242], &f), Some(d.join("sub")));
        // A sticky directory does not let others replace an entry they do
        // not own.
        set(&d.join("sub"), 0o1777);
        assert_eq!(writable_by(4242, &[4242], &f), None);
        // The owner may always chmod.
        assert_eq!(writable_by(me, &[], &f), Some(f.clone()));
        fs::remove_dir_all(&d).unwrap();
    }
}
