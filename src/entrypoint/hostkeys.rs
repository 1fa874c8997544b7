//! Host keys in `/etc/ssh/keys` (a bind mount, so they survive restarts):
//! generates the missing ones with `ssh-keygen`, never touches an existing
//! one.

use super::BootError;
use crate::session::SessionEnv;
use crate::tool::Tool;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The key types sshd gets, strongest first (the order sshd offers them).
const TYPES: [(&str, &str); 3] = [
    ("ed25519", "ssh_host_ed25519_key"),
    ("ecdsa", "ssh_host_ecdsa_key"),
    ("rsa", "ssh_host_rsa_key"),
];

/// Makes sure each host key exists in `dir` and returns their paths. Logs
/// the fingerprint of each, generated or kept.
pub(super) fn ensure(dir: &Path, keygen: &Path) -> Result<Vec<PathBuf>, BootError> {
    fs::create_dir_all(dir).map_err(|e| BootError::io(format!("create {}", dir.display()), e))?;
    let mut paths = Vec::new();
    for (kind, name) in TYPES {
        let path = dir.join(name);
        // `metadata` follows a symlink: sshd reads the key it points to, so
        // that is the mode to check.
        let action = match fs::metadata(&path) {
            Ok(m) => {
                if m.permissions().mode() & 0o077 != 0 {
                    Tool::Entrypoint.say(format_args!(
                        "warning: host key {} is readable by group or others (mode {:o}); sshd will refuse it: chmod 600 it",
                        path.display(),
                        m.permissions().mode() & 0o7777
                    ));
                }
                "kept"
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                generate(kind, &path, keygen)?;
                "generated"
            }
            Err(e) => return Err(BootError::io(format!("inspect {}", path.display()), e)),
        };
        Tool::Entrypoint.say(format_args!(
            "host key {} {action}: {}",
            path.display(),
            fingerprint(&path, keygen)
        ));
        paths.push(path);
    }
    Ok(paths)
}

/// Generates into temporary names and renames into place, so a boot killed
/// half-way never leaves a truncated key behind that later boots would keep.
fn generate(kind: &str, path: &Path, keygen: &Path) -> Result<(), BootError> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let tmp_pub = tmp.with_extension("tmp.pub");
    let _ = fs::remove_file(&tmp);
    let _ = fs::remove_file(&tmp_pub);
    let out = SessionEnv::empty()
        .command(keygen)
        .args(["-q", "-t", kind, "-N", "", "-C", "", "-f"])
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

fn fingerprint(path: &Path, keygen: &Path) -> String {
    match SessionEnv::empty()
        .command(keygen)
        .arg("-lf")
        .arg(path)
        .output()
    {
        // "256 SHA256:... comment (ED25519)": keep size, hash and type.
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            let f: Vec<&str> = text.split_whitespace().collect();
            match (f.first(), f.get(1), f.last()) {
                (Some(bits), Some(hash), Some(kind)) if f.len() >= 3 => {
                    format!("{bits} {hash} {kind}")
                }
                _ => text.trim().to_owned(),
            }
        }
        _ => "fingerprint unavailable".to_owned(),
    }
}
