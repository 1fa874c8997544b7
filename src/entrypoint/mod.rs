//! `bastion-entrypoint` (SPEC 2, 3, 8): validates the configuration (every
//! problem at once, exit 78), prepares host keys, merged keys, the lock and
//! runtime files, the docker socket group and `sshd_config`, starts the HTTP
//! listener, then execs `sshd -D -e`. It never writes a secret to a file.

mod docker_group;
mod files;
mod hostkeys;
mod settings;
mod sshd_config;

use crate::config::{Mode, Runtime, RUNTIME_FILE, SAFE_PATH, SESSION_USER};
use crate::exit::{self, Failure, Tool};
use crate::session::SessionEnv;
use clap::Parser;
use settings::Settings;
use std::fmt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "bastion-entrypoint",
    version,
    about = "Boots the bastion: validates the environment, prepares keys and sshd_config, \
             starts the HTTP listener, then execs sshd -D -e"
)]
struct Args {
    /// Do everything up to starting sshd and the HTTP listener, print the
    /// rendered sshd_config path, and exit 0.
    #[arg(long)]
    prepare_only: bool,
}

/// A boot step failed after the configuration was accepted.
#[derive(Debug)]
pub(crate) enum BootError {
    Io {
        what: String,
        source: std::io::Error,
    },
    Failed(String),
    /// sshd rejected the rendered config (`sshd -t`).
    SshdConfig(String),
}

impl BootError {
    fn io(what: String, source: std::io::Error) -> Self {
        Self::Io { what, source }
    }

    fn exit_code(&self) -> u8 {
        match self {
            Self::SshdConfig(_) => exit::CONFIG,
            _ => exit::FAILURE,
        }
    }
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { what, source } => write!(f, "cannot {what}: {source}"),
            Self::Failed(s) => f.write_str(s),
            Self::SshdConfig(s) => write!(f, "sshd rejects the rendered configuration: {s}"),
        }
    }
}

pub fn main() -> ExitCode {
    exit::main(Tool::Entrypoint, || {
        let args = exit::parse_args::<Args>()?;
        let settings = Settings::from_env().map_err(Failure::Config)?;
        for w in &settings.warnings {
            log(&format!("warning: {w}"));
        }
        boot(settings, args.prepare_only).map_err(|e| Failure::Other {
            code: e.exit_code(),
            message: e.to_string(),
        })?;
        Ok(exit::code(exit::OK))
    })
}

fn log(msg: &str) {
    Tool::Entrypoint.say(msg);
}

/// Runs the boot steps in order; returns only for `--prepare-only` or on
/// failure (otherwise the process becomes sshd).
fn boot(s: Settings, prepare_only: bool) -> Result<(), BootError> {
    let p = s.paths.clone();
    let sshd = find_program("sshd")?;
    let keygen = find_program("ssh-keygen")?;

    files::ensure_root_dir(&p.run_dir, 0o755)
        .map_err(|e| BootError::io(format!("prepare {}", p.run_dir.display()), e))?;
    prepare_key_index_dir(&p.runtime_file)?;
    let host_keys = hostkeys::ensure(&p.host_keys_dir, &keygen)?;

    let merged = merge_keys(&[&s.keys_host, &s.keys_repo])?;
    files::write_root_file(&p.merged_keys_file, &merged, 0o644)
        .map_err(|e| BootError::io(format!("write {}", p.merged_keys_file.display()), e))?;
    let n_keys = count_keys(&merged) + count_dir_keys(&s.keys_dir);
    if n_keys == 0 {
        log(&format!(
            "warning: no authorized keys at all (users.d {}, {}, {}): nobody can log in until a key is added to users.d, which is read at every login",
            s.keys_dir.display(),
            s.keys_host.display(),
            s.keys_repo.display()
        ));
    } else {
        log(&format!("{n_keys} authorized key line(s) found at boot"));
    }

    files::ensure_lock_file(&p.lock_file)
        .map_err(|e| BootError::io(format!("prepare lock file {}", p.lock_file.display()), e))?;

    align_docker_group(&p.docker_socket, &p.group_file)?;

    let pty = matches!(s.mode, Mode::Force { .. });
    let runtime = Runtime {
        user: SESSION_USER.to_owned(),
        mode: s.mode.clone(),
        allowed_commands: s.allowed_commands.clone(),
        allowed_commands_file: p.allowed_commands_file.clone(),
        command_prefix: s.command_prefix.clone(),
        command_lock: s.command_lock,
        lock_file: p.lock_file.clone(),
        authorized_keys_dir: s.keys_dir.clone(),
        merged_keys_file: p.merged_keys_file.clone(),
        pty,
    };
    let json = serde_json::to_vec_pretty(&runtime)
        .map_err(|e| BootError::Failed(format!("cannot encode the runtime file: {e}")))?;
    files::write_root_file(&p.runtime_file, &json, 0o644)
        .map_err(|e| BootError::io(format!("write {}", p.runtime_file.display()), e))?;

    let config = render_sshd_config(&s, &host_keys, pty)?;
    files::write_root_file(&p.sshd_config, config.as_bytes(), 0o644)
        .map_err(|e| BootError::io(format!("write {}", p.sshd_config.display()), e))?;
    check_sshd_config(&sshd, &p.sshd_config)?;
    log(&format!(
        "mode {}, lock {}, ssh port {}, sshd_config {}",
        match &s.mode {
            Mode::Force { .. } => "force-command",
            Mode::Broker => "broker",
        },
        s.command_lock,
        s.ssh_port,
        p.sshd_config.display()
    ));

    if prepare_only {
        println!("{}", p.sshd_config.display());
        return Ok(());
    }

    if let Some(creds) = s.credentials {
        let cgi = p.bin_dir.join("bastion-cgi");
        crate::cgi::spawn_listener(&cgi, &p.runtime_file, s.http_port, creds)
            .map_err(|e| BootError::io(format!("start the HTTP listener {}", cgi.display()), e))?;
        log(&format!("HTTP listener started on port {}", s.http_port));
    } else {
        log("HTTP is off (no HTTP_BASIC_AUTH or HTTP_TOKEN)");
    }

    // sshd gets a clean environment: the container's (HTTP secrets
    // included) must not be visible in its /proc entry.
    let err = SessionEnv::safe_path()
        .command(&sshd)
        .args(["-D", "-e", "-f"])
        .arg(&p.sshd_config)
        .exec();
    Err(BootError::io(format!("exec {}", sshd.display()), err))
}

/// The key index's socket directory, next to the runtime file: owned by
/// `nobody` (sshd's AuthorizedKeysCommandUser), mode 0700, so no other
/// user can plant or squat the socket. Without a `nobody` user, lookups
/// read every file (slower, still correct).
fn prepare_key_index_dir(runtime_file: &Path) -> Result<(), BootError> {
    let dir = crate::keys::index::socket_dir(runtime_file);
    let Ok(Some(nobody)) = nix::unistd::User::from_name("nobody") else {
        log(&format!(
            "warning: no user nobody: no key index, {} not created",
            dir.display()
        ));
        return Ok(());
    };
    crate::checked::ensure_private_dir(&dir, nobody.uid.as_raw(), nobody.gid.as_raw(), 0o700)
        .map_err(|e| BootError::io(format!("prepare {}", dir.display()), e))
}

fn find_program(name: &str) -> Result<PathBuf, BootError> {
    SAFE_PATH
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            BootError::Failed(format!("{name} is not installed (looked in {SAFE_PATH})"))
        })
}

/// Concatenates the boot-time key files (a missing one contributes nothing;
/// the settings check already refused unreadable ones).
fn merge_keys(sources: &[&Path]) -> Result<Vec<u8>, BootError> {
    let mut out = Vec::new();
    for src in sources {
        match std::fs::read(src) {
            Ok(bytes) => {
                log(&format!(
                    "merged {} ({} key line(s))",
                    src.display(),
                    count_keys(&bytes)
                ));
                out.extend_from_slice(&bytes);
                if !out.is_empty() && !out.ends_with(b"\n") {
                    out.push(b'\n');
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(BootError::io(format!("read {}", src.display()), e)),
        }
    }
    Ok(out)
}

fn count_keys(bytes: &[u8]) -> usize {
    bytes
        .split(|b| *b == b'\n')
        .map(|l| l.trim_ascii())
        .filter(|l| !l.is_empty() && !l.starts_with(b"#"))
        .count()
}

/// Valid keys in `users.d`, read the way `bastion-keys` reads them (no
/// symlinks, no FIFOs or devices, bounded size), so a hostile entry can
/// neither hang nor exhaust the boot.
fn count_dir_keys(dir: &Path) -> usize {
    use crate::keys::source;
    let Ok(names) = source::list_dir(dir) else {
        return 0;
    };
    names
        .iter()
        .filter_map(|name| source::read_entry(dir, name))
        .map(|found| found.keys.len())
        .sum()
}

fn align_docker_group(socket: &Path, group_file: &Path) -> Result<(), BootError> {
    let gid = match docker_group::docker_socket_gid(socket) {
        None => return Ok(()),
        Some(Err(w)) => {
            log(&format!("warning: {w}; docker commands will not work"));
            return Ok(());
        }
        Some(Ok(gid)) => gid,
    };
    if gid == 0 {
        log(&format!(
            "warning: {} belongs to group root (gid 0); {SESSION_USER} is not added to the root group, so docker commands will fail: give the socket a dedicated group on the host",
            socket.display()
        ));
        return Ok(());
    }
    let text = std::fs::read_to_string(group_file)
        .map_err(|e| BootError::io(format!("read {}", group_file.display()), e))?;
    let (new, change) = docker_group::align(&text, gid, SESSION_USER);
    if new != text {
        files::write_root_file(group_file, new.as_bytes(), 0o644)
            .map_err(|e| BootError::io(format!("write {}", group_file.display()), e))?;
    }
    log(&format!(
        "docker socket {} (gid {gid}): {SESSION_USER} {change}",
        socket.display()
    ));
    Ok(())
}

fn render_sshd_config(s: &Settings, host_keys: &[PathBuf], pty: bool) -> Result<String, BootError> {
    let p = &s.paths;
    let template = std::fs::read_to_string(&p.template).map_err(|e| {
        BootError::io(
            format!("read the sshd_config template {}", p.template.display()),
            e,
        )
    })?;
    let bin = |name: &str| -> Result<Vec<String>, BootError> {
        let mut argv =
            vec![sshd_config::path_str(&p.bin_dir.join(name)).map_err(BootError::Failed)?];
        if p.runtime_file != Path::new(RUNTIME_FILE) {
            argv.push("--runtime".to_owned());
            argv.push(sshd_config::path_str(&p.runtime_file).map_err(BootError::Failed)?);
        }
        Ok(argv)
    };
    let values = sshd_config::SshdValues {
        port: s.ssh_port,
        listen: s.listen.clone(),
        host_keys: host_keys.to_vec(),
        user: SESSION_USER.to_owned(),
        permit_tty: pty,
        force_command: bin("bastion-wrapper")?,
        keys_command: bin("bastion-keys")?,
    };
    sshd_config::render(&template, &values)
        .map_err(|e| BootError::Failed(format!("cannot render {}: {e}", p.template.display())))
}

fn check_sshd_config(sshd: &Path, config: &Path) -> Result<(), BootError> {
    let out = SessionEnv::safe_path()
        .command(sshd)
        .arg("-t")
        .arg("-f")
        .arg(config)
        .output()
        .map_err(|e| BootError::io(format!("run {} -t", sshd.display()), e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(BootError::SshdConfig(format!(
            "{}\n{}",
            config.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
