//! Asks the installed sshd what it is and what it accepts (`sshd -V`,
//! `sshd -T`, a trial `sshd -t` per doubtful option), and writes the moduli
//! file with the strong Diffie-Hellman groups only. sshd runs here in its
//! test modes only: nothing listens, nothing is logged in.

use super::sshd_config::SshdCaps;
use super::BootError;
use crate::session::SessionEnv;
use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

/// Moduli of fewer bits are dropped (ssh-audit's hardening guide; the file's
/// size field is the bit length minus one, so 3071 means 3072 bits).
const MIN_MODULUS_FIELD: u32 = 3071;

/// A system moduli file is about 500 KiB; more than this is not one.
const MODULI_MAX_BYTES: u64 = 16 << 20;

/// The installed sshd, probed once per boot.
pub(super) struct InstalledSshd {
    sshd: PathBuf,
    /// `-o HostKey=...` for each host key: `sshd -T`/`-t` need one that
    /// loads.
    host_key_opts: Vec<String>,
    /// `OpenSSH_9.2p1`-style release as sshd prints it.
    release: String,
    version: Option<(u32, u32)>,
    /// `sshd -T` of an empty configuration: keyword -> value.
    defaults: HashMap<String, String>,
}

impl InstalledSshd {
    /// `host_keys`: the keys the configuration will have.
    pub(super) fn probe(sshd: &Path, host_keys: &[PathBuf]) -> Result<Self, BootError> {
        let v = run(sshd, &["-V"])
            .map_err(|e| BootError::io(format!("run {} -V", sshd.display()), e))?;
        // `-V` prints "OpenSSH_9.2p1, OpenSSL ..." on stderr; a build without
        // `-V` prints its usage, which starts with the same release.
        let text = String::from_utf8_lossy(&v.stderr);
        let release = text
            .split(|c: char| c.is_whitespace() || c == ',')
            .find(|w| w.starts_with("OpenSSH_"))
            .unwrap_or("OpenSSH (unknown version)")
            .to_owned();
        let version = parse_version(&release);
        let host_key_opts: Vec<String> = host_keys
            .iter()
            .map(|k| format!("HostKey={}", k.display()))
            .collect();
        let mut args = vec!["-T", "-f", "/dev/null"];
        for o in &host_key_opts {
            args.extend(["-o", o.as_str()]);
        }
        let t =
            run(sshd, &args).map_err(|e| BootError::io(format!("run {} -T", sshd.display()), e))?;
        if !t.status.success() {
            return Err(BootError::SshdConfig(format!(
                "{} -T on an empty configuration failed: {}",
                sshd.display(),
                String::from_utf8_lossy(&t.stderr).trim()
            )));
        }
        let defaults = String::from_utf8_lossy(&t.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Ok(Self {
            sshd: sshd.to_owned(),
            host_key_opts,
            release,
            version,
            defaults,
        })
    }

    pub(super) fn release(&self) -> &str {
        &self.release
    }

    /// The moduli file this sshd reads by default (the system's).
    pub(super) fn default_moduli_file(&self) -> PathBuf {
        self.defaults
            .get("modulifile")
            .map_or_else(|| PathBuf::from("/etc/ssh/moduli"), PathBuf::from)
    }

    /// `sshd -t` on an empty configuration plus `directive value`.
    fn trial(&self, directive: &str, value: &str) -> bool {
        let opt = format!("{directive}={value}");
        let mut args = vec!["-t", "-f", "/dev/null"];
        for o in &self.host_key_opts {
            args.extend(["-o", o.as_str()]);
        }
        args.extend(["-o", opt.as_str()]);
        run(&self.sshd, &args).is_ok_and(|o| o.status.success())
    }
}

impl SshdCaps for InstalledSshd {
    fn version(&self) -> Option<(u32, u32)> {
        self.version
    }

    /// An algorithm in sshd's own default list is supported; anything else
    /// is tried.
    fn accepts(&self, directive: &str, value: &str) -> bool {
        let in_defaults = self
            .defaults
            .get(&directive.to_ascii_lowercase())
            .is_some_and(|list| list.split(',').any(|a| a == value));
        in_defaults || self.trial(directive, value)
    }
}

fn run(sshd: &Path, args: &[&str]) -> std::io::Result<std::process::Output> {
    SessionEnv::safe_path()
        .command(sshd)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
}

/// `OpenSSH_9.2p1` -> (9, 2).
fn parse_version(release: &str) -> Option<(u32, u32)> {
    let v = release.strip_prefix("OpenSSH_")?;
    let (major, rest) = v.split_once('.')?;
    let minor: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The lines of a moduli(5) file whose groups have at least 3072 bits.
/// Returns the file and how many groups it keeps.
pub(super) fn strong_moduli(text: &str) -> (String, usize) {
    let mut out = String::from("# The system moduli file without groups under 3072 bits.\n");
    let mut n = 0;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() == 7
            && !f[0].starts_with('#')
            && f[4]
                .parse::<u32>()
                .is_ok_and(|bits| bits >= MIN_MODULUS_FIELD)
        {
            out.push_str(line);
            out.push('\n');
            n += 1;
        }
    }
    (out, n)
}

/// Reads the system moduli file (bounded); a missing one reads as empty.
pub(super) fn read_moduli(path: &Path) -> Result<String, BootError> {
    match std::fs::File::open(path) {
        Ok(f) => {
            let mut buf = Vec::new();
            f.take(MODULI_MAX_BYTES)
                .read_to_end(&mut buf)
                .map_err(|e| BootError::io(format!("read {}", path.display()), e))?;
            Ok(String::from_utf8_lossy(&buf).into_owned())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(BootError::io(format!("read {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_the_release() {
        assert_eq!(parse_version("OpenSSH_9.2p1"), Some((9, 2)));
        assert_eq!(parse_version("OpenSSH_9.9p2"), Some((9, 9)));
        assert_eq!(parse_version("OpenSSH_10.0"), Some((10, 0)));
        assert_eq!(parse_version("OpenSSH_9"), None);
        assert_eq!(parse_version("dropbear_2022.83"), None);
    }

    #[test]
    fn weak_moduli_are_dropped() {
        let text = "# Time Type Tests Tries Size Generator Modulus\n\
                    20220714110357 2 6 100 2047 2 E98F\n\
                    20220714110358 2 6 100 3071 5 C1A3\n\
                    20220714110359 2 6 100 3070 5 C1A5\n\
                    20220714110360 2 6 100 8191 2 FFFF\n\
                    garbage line\n\
                    20220714110361 2 6 100 x 2 AAAA\n";
        let (out, n) = strong_moduli(text);
        assert_eq!(n, 2);
        let kept: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            kept,
            [
                "20220714110358 2 6 100 3071 5 C1A3",
                "20220714110360 2 6 100 8191 2 FFFF"
            ]
        );
        assert_eq!(strong_moduli("").1, 0);
    }
}
