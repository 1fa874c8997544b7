//! Host keys in `/etc/ssh/keys` (a bind mount, so they survive restarts):
//! generates the missing ed25519 and 4096-bit RSA keys with `ssh-keygen`,
//! never touches an existing one. Keys an earlier deployment made (ECDSA,
//! RSA under 4096 bits) keep being served, so clients that pinned them keep
//! connecting, with one warning each at boot saying how to retire them.

use super::BootError;
use crate::session::SessionEnv;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The key types a fresh deployment gets, strongest first (the order sshd
/// offers them), with the `ssh-keygen` arguments that make them.
const GENERATED: [(&str, &str, &[&str]); 2] = [
    ("ed25519", "ssh_host_ed25519_key", &["-t", "ed25519"]),
    ("rsa", "ssh_host_rsa_key", &["-t", "rsa", "-b", "4096"]),
];

/// Made by earlier deployments (the shell version): served when present,
/// never generated.
const LEGACY_ECDSA: &str = "ssh_host_ecdsa_key";

/// sshd's `RequiredRSASize` (the template's): a smaller RSA host key is
/// refused by sshd, so it is not offered to it.
pub(super) const MIN_RSA_BITS: u32 = 3072;

/// A host key sshd is given.
#[derive(Debug)]
pub(super) struct HostKey {
    pub(super) path: PathBuf,
    /// The host key algorithm sshd must offer beyond the hardened policy's
    /// to serve this key (a legacy ECDSA key), if any.
    pub(super) extra_algorithm: Option<String>,
}

/// What `ssh-keygen -l` says about a key.
#[derive(Debug, PartialEq)]
struct KeyInfo {
    bits: u32,
    /// `ED25519`, `RSA`, `ECDSA`, ...
    kind: String,
    hash: String,
}

/// Makes sure the ed25519 and RSA host keys exist in `dir` and returns
/// every key to serve. Logs the fingerprint of each, generated or kept.
pub(super) fn ensure(dir: &Path, keygen: &Path) -> Result<Vec<HostKey>, BootError> {
    fs::create_dir_all(dir).map_err(|e| BootError::io(format!("create {}", dir.display()), e))?;
    let mut keys = Vec::new();
    for (kind, name, args) in GENERATED {
        let path = dir.join(name);
        // `metadata` follows a symlink: sshd reads the key it points to, so
        // that is the mode to check.
        let action = match fs::metadata(&path) {
            Ok(m) => {
                warn_mode(&path, &m);
                "kept"
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                generate(kind, args, &path, keygen)?;
                "generated"
            }
            Err(e) => return Err(BootError::io(format!("inspect {}", path.display()), e)),
        };
        if let Some(key) = admit(path, action, keygen) {
            keys.push(key);
        }
    }
    let ecdsa = dir.join(LEGACY_ECDSA);
    match fs::metadata(&ecdsa) {
        Ok(m) => {
            warn_mode(&ecdsa, &m);
            if let Some(key) = admit(ecdsa, "kept", keygen) {
                keys.push(key);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(BootError::io(format!("inspect {}", ecdsa.display()), e)),
    }
    Ok(keys)
}

fn warn_mode(path: &Path, m: &fs::Metadata) {
    if m.permissions().mode() & 0o077 != 0 {
        super::log(&format!(
            "warning: host key {} is readable by group or others (mode {:o}); sshd will refuse it: chmod 600 it",
            path.display(),
            m.permissions().mode() & 0o7777
        ));
    }
}

/// Logs the key and decides whether sshd gets it: every key but an RSA key
/// sshd would refuse. A legacy key gets its one warning here.
fn admit(path: PathBuf, action: &str, keygen: &Path) -> Option<HostKey> {
    let info = describe(&path, keygen);
    let shown = info.as_ref().map_or_else(
        || "fingerprint unavailable".to_owned(),
        |i| format!("{} {} ({})", i.bits, i.hash, i.kind),
    );
    super::log(&format!("host key {} {action}: {shown}", path.display()));
    let verdict = info.as_ref().map_or(Verdict::Current, judge);
    if let Some(w) = warning(&path, &verdict) {
        super::log(&format!("warning: {w}"));
    }
    match verdict {
        Verdict::Refused { .. } => None,
        Verdict::LegacyEcdsa { algorithm } => Some(HostKey {
            path,
            extra_algorithm: Some(algorithm),
        }),
        Verdict::Current | Verdict::LegacyRsa { .. } => Some(HostKey {
            path,
            extra_algorithm: None,
        }),
    }
}

#[derive(Debug, PartialEq)]
enum Verdict {
    Current,
    LegacyEcdsa { algorithm: String },
    LegacyRsa { bits: u32 },
    Refused { bits: u32 },
}

fn judge(info: &KeyInfo) -> Verdict {
    match info.kind.as_str() {
        "ECDSA" => Verdict::LegacyEcdsa {
            algorithm: format!(
                "ecdsa-sha2-nistp{}",
                match info.bits {
                    384 => 384,
                    521 => 521,
                    _ => 256,
                }
            ),
        },
        "RSA" if info.bits < MIN_RSA_BITS => Verdict::Refused { bits: info.bits },
        "RSA" if info.bits < 4096 => Verdict::LegacyRsa { bits: info.bits },
        _ => Verdict::Current,
    }
}

fn warning(path: &Path, verdict: &Verdict) -> Option<String> {
    let p = path.display();
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    match verdict {
        Verdict::Current => None,
        Verdict::LegacyEcdsa { .. } => Some(format!(
            "host key {p} is ECDSA, from an earlier deployment: still served so clients that pinned it keep connecting, but ssh-audit's hardened policy refuses ECDSA. To retire it: let clients learn the ed25519 key (ssh-keyscan -t ed25519), then delete {name} and {name}.pub from the host key volume and restart; no ECDSA key is made again"
        )),
        Verdict::LegacyRsa { bits } => Some(format!(
            "host key {p} is RSA {bits} bits, from an earlier deployment: still served so clients that pinned it keep connecting, but ssh-audit's hardened policy wants 4096 bits. To retire it: delete {name} and {name}.pub from the host key volume and restart; a 4096-bit key is made (clients that pinned the old RSA key must update known_hosts, or pin the ed25519 key)"
        )),
        Verdict::Refused { bits } => Some(format!(
            "host key {p} is RSA {bits} bits: NOT served, sshd refuses RSA keys under {MIN_RSA_BITS} bits. Delete {name} and {name}.pub from the host key volume and restart to get a 4096-bit key"
        )),
    }
}

/// Generates into temporary names and renames into place, so a boot killed
/// half-way never leaves a truncated key behind that later boots would keep.
fn generate(kind: &str, args: &[&str], path: &Path, keygen: &Path) -> Result<(), BootError> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let tmp_pub = tmp.with_extension("tmp.pub");
    let _ = fs::remove_file(&tmp);
    let _ = fs::remove_file(&tmp_pub);
    let out = SessionEnv::empty()
        .command(keygen)
        .arg("-q")
        .args(args)
        .args(["-N", "", "-C", "", "-f"])
        .arg(&tmp)
        .output()
        .map_err(|e| BootError::io(format!("run {}", keygen.display()), e))?;
    if !out.status.success() {
        return Err(BootError::Failed(format!(
            "ssh-keygen could not generate a {kind} host key in {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let public = path.with_file_name(format!(
        "{}.pub",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    fs::rename(&tmp_pub, &public)
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(|e| BootError::io(format!("install {}", path.display()), e))
}

fn describe(path: &Path, keygen: &Path) -> Option<KeyInfo> {
    let out = SessionEnv::empty()
        .command(keygen)
        .arg("-lf")
        .arg(path)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    parse_keygen_l(&String::from_utf8_lossy(&out.stdout))
}

/// "3072 SHA256:... comment words (RSA)": size, hash and type.
fn parse_keygen_l(text: &str) -> Option<KeyInfo> {
    let f: Vec<&str> = text.split_whitespace().collect();
    let bits = f.first()?.parse().ok()?;
    let hash = (*f.get(1)?).to_owned();
    let kind = f.last()?.strip_prefix('(')?.strip_suffix(')')?.to_owned();
    (f.len() >= 3).then_some(KeyInfo { bits, kind, hash })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(bits: u32, kind: &str) -> KeyInfo {
        KeyInfo {
            bits,
            kind: kind.into(),
            hash: "SHA256:x".into(),
        }
    }

    #[test]
    fn parses_ssh_keygen_listing() {
        assert_eq!(
            parse_keygen_l("3072 SHA256:abc no comment here (RSA)\n"),
            Some(info(3072, "RSA")).map(|mut i| {
                i.hash = "SHA256:abc".into();
                i
            })
        );
        assert_eq!(
            parse_keygen_l("256 SHA256:abc (ED25519)").map(|i| i.kind),
            Some("ED25519".into())
        );
        assert_eq!(parse_keygen_l(""), None);
        assert_eq!(parse_keygen_l("x SHA256:abc (RSA)"), None);
        assert_eq!(parse_keygen_l("256 SHA256:abc ED25519"), None);
    }

    #[test]
    fn legacy_keys_are_told_apart() {
        assert_eq!(judge(&info(256, "ED25519")), Verdict::Current);
        assert_eq!(judge(&info(4096, "RSA")), Verdict::Current);
        assert_eq!(judge(&info(3072, "RSA")), Verdict::LegacyRsa { bits: 3072 });
        assert_eq!(judge(&info(2048, "RSA")), Verdict::Refused { bits: 2048 });
        for (bits, curve) in [(256, 256), (384, 384), (521, 521)] {
            assert_eq!(
                judge(&info(bits, "ECDSA")),
                Verdict::LegacyEcdsa {
                    algorithm: format!("ecdsa-sha2-nistp{curve}")
                }
            );
        }
    }

    #[test]
    fn each_legacy_warning_says_how_to_retire_the_key() {
        let p = Path::new("/etc/ssh/keys/ssh_host_ecdsa_key");
        let w = warning(
            p,
            &Verdict::LegacyEcdsa {
                algorithm: "ecdsa-sha2-nistp256".into(),
            },
        )
        .unwrap();
        assert!(
            w.contains("delete ssh_host_ecdsa_key and ssh_host_ecdsa_key.pub"),
            "{w}"
        );
        let p = Path::new("/etc/ssh/keys/ssh_host_rsa_key");
        let w = warning(p, &Verdict::LegacyRsa { bits: 3072 }).unwrap();
        assert!(
            w.contains("RSA 3072 bits") && w.contains("4096-bit key is made"),
            "{w}"
        );
        assert_eq!(warning(p, &Verdict::Current), None);
    }
}
