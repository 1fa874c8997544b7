//! `bastion-entrypoint` (SPEC 2, 3, 8): validates the configuration (every
//! problem at once, exit 78), prepares host keys, merged keys, the lock and
//! runtime files, the docker socket group and `sshd_config`, starts the HTTP
//! listener, then execs `sshd -D -e`. It never writes a secret to a file.

mod docker_group;
mod files;
mod hostkeys;
mod settings;
mod sshd_config;
mod sshd_probe;
mod upstreams;

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
        crate::audit::set_format(settings.log_format);
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
    crate::audit::say(Tool::Entrypoint, msg);
}

/// Runs the boot steps in order; returns only for `--prepare-only` or on
/// failure (otherwise the process becomes sshd).
fn boot(s: Settings, prepare_only: bool) -> Result<(), BootError> {
    let p = s.paths.clone();
    let sshd = find_program("sshd")?;
    let keygen = find_program("ssh-keygen")?;

    crate::checked::ensure_root_dir(&p.run_dir, 0o755)
        .map_err(|e| BootError::io(format!("prepare {}", p.run_dir.display()), e))?;
    prepare_key_index_dir(&p.runtime_file)?;
    let host_keys = hostkeys::ensure(&p.host_keys_dir, &keygen)?;

    let merged = merge_keys(&[&s.keys_host, &s.keys_repo])?;
    files::write_root_file(&p.merged_keys_file, &merged, 0o644)
        .map_err(|e| BootError::io(format!("write {}", p.merged_keys_file.display()), e))?;
    let n_keys = count_keys(&merged) + count_dir_keys(&s.keys_dir, &merged);
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

    let up = upstreams::UpstreamPaths::new(
        &p.run_dir,
        p.under("/etc/ssh/ssh_config.d/bastion-upstreams.conf"),
    );
    let with_agent = upstreams::prepare(&s.upstreams, &up)?;
    let gate = s.session.as_ref().and_then(|r| r.gate.as_ref());
    let share_dir = p.under(crate::gate::SHARE_DIR);
    if let Some(gate) = gate {
        upstreams::prepare_share(&s.upstreams, gate, &share_dir)?;
    }

    let rules_snapshot = write_rules_snapshot(&s, &p.runtime_file)?;
    // A TTY for an interactive FORCE_COMMAND, and for every session
    // container (the image's shell, or a tool run with `ssh -tt`).
    let pty = matches!(s.mode, Mode::Force { .. }) || s.session.is_some();
    if let Some(session) = &s.session {
        prepare_sessions(session)?;
    }
    let runtime = Runtime {
        user: SESSION_USER.to_owned(),
        mode: s.mode.clone(),
        // The snapshot holds the rules; the runtime file, read by every
        // request, does not carry them twice.
        allowed_commands: if rules_snapshot.is_some() {
            String::new()
        } else {
            s.allowed_commands.clone()
        },
        allowed_commands_file: p.allowed_commands_file.clone(),
        command_prefix: s.command_prefix.clone(),
        command_lock: s.command_lock,
        lock_file: p.lock_file.clone(),
        authorized_keys_dir: s.keys_dir.clone(),
        merged_keys_file: p.merged_keys_file.clone(),
        pty,
        session: s.session.clone(),
        agent_socket: with_agent.then(|| up.socket.clone()),
        rules_snapshot,
        monitor_socket: (!prepare_only).then(|| crate::monitor::socket_path(&p.runtime_file)),
    };
    let json = serde_json::to_vec_pretty(&runtime)
        .map_err(|e| BootError::Failed(format!("cannot encode the runtime file: {e}")))?;
    files::write_root_file(&p.runtime_file, &json, 0o644)
        .map_err(|e| BootError::io(format!("write {}", p.runtime_file.display()), e))?;

    let config = render_sshd_config(&s, &sshd, &host_keys, pty)?;
    files::write_root_file(&p.sshd_config, config.as_bytes(), 0o644)
        .map_err(|e| BootError::io(format!("write {}", p.sshd_config.display()), e))?;
    check_sshd_config(&sshd, &p.sshd_config)?;
    log(&format!(
        "mode {}, lock {}, ssh port {}, sshd_config {}",
        match &s.mode {
            Mode::Force { .. } => "force-command",
            Mode::Broker => "broker",
            Mode::Image => "image command",
        },
        s.command_lock,
        s.ssh_port,
        p.sshd_config.display()
    ));

    if prepare_only {
        println!("{}", p.sshd_config.display());
        return Ok(());
    }

    // The agent proxies' events reach the monitor on a socket of their own
    // (one record per event), as sshd's log does below.
    let agent_log = if with_agent {
        let (read, write) = crate::sys::socket::seqpacket_pair()
            .map_err(|e| BootError::io("create the agent event socket".into(), e))?;
        let share_socket = gate.map(|_| share_dir.join(crate::gate::SHARE_AGENT_SOCKET));
        upstreams::start(
            &s.upstreams,
            &up,
            &p.bin_dir.join("bastion-agent-proxy"),
            share_socket.as_deref(),
            &write,
        )?;
        Some(read)
    } else {
        None
    };

    // sshd's stderr is one end of a sequenced-packet pair (one record per
    // log message); the monitor relays the other end escaped.
    let (log_read, log_write) = crate::sys::socket::seqpacket_pair()
        .map_err(|e| BootError::io("create the sshd log socket".into(), e))?;
    let monitor = p.bin_dir.join("bastion-monitor");
    let http_port = s.credentials.is_some().then_some(s.http_port);
    spawn_monitor(
        &monitor,
        &p.runtime_file,
        log_read,
        agent_log,
        &s,
        s.credentials.as_ref(),
    )?;
    match http_port {
        Some(port) => log(&format!(
            "HTTP listener on port {port}, kept by the monitor"
        )),
        None => log("HTTP is off (no HTTP_BASIC_AUTH or HTTP_TOKEN)"),
    }

    // sshd gets a clean environment: the container's (HTTP secrets
    // included) must not be visible in its /proc entry.
    let err = SessionEnv::safe_path()
        .command(&sshd)
        .args(["-D", "-e", "-f"])
        .arg(&p.sshd_config)
        .stderr(std::process::Stdio::from(log_write))
        .exec();
    Err(BootError::io(format!("exec {}", sshd.display()), err))
}

/// Session containers: the `SESSION_MAX` slot files, and the removal of
/// every container an earlier run of this instance left behind.
fn prepare_sessions(session: &crate::container::SessionRuntime) -> Result<(), BootError> {
    use crate::container::reap;
    crate::container::slots::prepare(&session.slots_dir, session.max)
        .map_err(|e| BootError::io(format!("prepare {}", session.slots_dir.display()), e))?;
    match reap::remove_instance(&session.engine, &session.instance) {
        Ok(removed) => {
            for r in removed {
                match r {
                    Ok(name) => log(&format!(
                        "removed session container {name} left by an earlier run"
                    )),
                    Err(e) => log(&format!("warning: {e}")),
                }
            }
        }
        Err(e) => log(&format!("warning: {e}")),
    }
    log(&format!(
        "session containers: {} image {} ({}), network {}, at most {} at once{}",
        session.engine.kind,
        session.image,
        session.image_id,
        session.network,
        session.max,
        if session.timeout_secs > 0 {
            format!(", {} s each", session.timeout_secs)
        } else {
            String::new()
        }
    ));
    Ok(())
}

/// Starts `bastion-monitor` (root, for the container's life) with the read
/// end of sshd's log as descriptor 3, that of the agent proxy's events as
/// 4, and the HTTP credentials on a pipe, and waits until its event socket
/// answers.
fn spawn_monitor(
    exe: &Path,
    runtime_file: &Path,
    log_read: std::os::fd::OwnedFd,
    agent_log: Option<std::os::fd::OwnedFd>,
    s: &Settings,
    creds: Option<&crate::cgi::Credentials>,
) -> Result<(), BootError> {
    use std::io::Write as _;
    use std::os::fd::AsRawFd as _;
    let fail = |e| BootError::io(format!("start the monitor {}", exe.display()), e);
    let log_read = crate::sys::fd::dup_high(&log_read).map_err(fail)?;
    let mut cmd = SessionEnv::safe_path().command(exe);
    cmd.arg("--runtime")
        .arg(runtime_file)
        .arg("--sshd-log-fd")
        .arg("3")
        .arg("--log-format")
        .arg(s.log_format.name())
        .stdin(std::process::Stdio::piped());
    if creds.is_some() {
        cmd.arg("--http-port").arg(s.http_port.to_string());
    }
    if let Some(m) = s.metrics_port {
        cmd.arg("--metrics-port").arg(m.to_string());
    }
    let mut fds = vec![(log_read.as_raw_fd(), 3)];
    let agent_log = match agent_log {
        Some(fd) => {
            let fd = crate::sys::fd::dup_high(&fd).map_err(fail)?;
            cmd.arg("--agent-log-fd").arg("4");
            fds.push((fd.as_raw_fd(), 4));
            Some(fd)
        }
        None => None,
    };
    crate::sys::fd::pass_fds(&mut cmd, fds).map_err(fail)?;
    let mut child = cmd.spawn().map_err(fail)?;
    drop(log_read);
    drop(agent_log);
    if let Some(mut pipe) = child.stdin.take() {
        if let Some(c) = creds {
            pipe.write_all(&c.to_wire()).map_err(fail)?;
        }
    }
    let socket = crate::monitor::socket_path(runtime_file);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(BootError::Failed(format!(
                "the monitor {} exited at start ({status}); see its message above",
                exe.display()
            )));
        }
        let answered = crate::session::protocol::Client::connect(&socket)
            .and_then(|mut c| c.ask(&crate::session::protocol::Msg::Ping))
            .is_ok();
        if answered {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            return Err(BootError::Failed(format!(
                "the monitor did not answer on {} within 15 s",
                socket.display()
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Broker mode: `ALLOWED_COMMANDS` (validated already) compiled once into a
/// root-owned file next to the runtime file, written before the runtime
/// file that names it, so no request sees one without the other.
fn write_rules_snapshot(s: &Settings, runtime_file: &Path) -> Result<Option<PathBuf>, BootError> {
    if !matches!(s.mode, Mode::Broker) {
        return Ok(None);
    }
    let path = crate::broker::snapshot::path_for(runtime_file);
    let bytes = crate::broker::snapshot::compile(&s.allowed_commands).map_err(BootError::Failed)?;
    files::write_root_file(&path, &bytes, 0o644)
        .map_err(|e| BootError::io(format!("write {}", path.display()), e))?;
    Ok(Some(path))
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

pub(super) fn find_program(name: &str) -> Result<PathBuf, BootError> {
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
/// neither hang nor exhaust the boot. Warns about each key there or in the
/// merged file that sshd's hardened algorithms will refuse.
fn count_dir_keys(dir: &Path, merged: &[u8]) -> usize {
    use crate::keys::source;
    let mut found = source::FileKeys::default();
    source::parse_into(merged, "merged", "merged", &mut found);
    let mut n = 0;
    if let Ok(names) = source::list_dir(dir) {
        for name in &names {
            if let Some(entry) = source::read_entry(dir, name) {
                n += entry.keys.len();
                found.keys.extend(entry.keys);
            }
        }
    }
    let refused: Vec<String> = found.keys.iter().filter_map(refused_key).collect();
    const SHOWN: usize = 20;
    for r in refused.iter().take(SHOWN) {
        log(&format!("warning: {r}"));
    }
    if refused.len() > SHOWN {
        log(&format!(
            "warning: and {} more keys sshd will refuse",
            refused.len() - SHOWN
        ));
    }
    n
}

/// Why sshd will refuse `k` (its `PubkeyAcceptedAlgorithms` take ed25519
/// and RSA only, `RequiredRSASize` 3072), if it will.
fn refused_key(k: &crate::keys::source::FoundKey) -> Option<String> {
    let why = match k.key.rsa_bits() {
        Some(bits) if bits < hostkeys::MIN_RSA_BITS => {
            format!("RSA keys under {} bits are refused", hostkeys::MIN_RSA_BITS)
        }
        Some(_) => return None,
        None if k.key.kind.contains("ecdsa") => {
            "ECDSA keys are not among the hardened algorithms".to_owned()
        }
        None => return None,
    };
    Some(format!(
        "key {} of {} (line {}, {}) will be refused by sshd: {why}; use an ed25519 key (ssh-keygen -t ed25519)",
        k.fingerprint, k.identity, k.line, k.key.kind
    ))
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

fn render_sshd_config(
    s: &Settings,
    sshd: &Path,
    host_keys: &[hostkeys::HostKey],
    pty: bool,
) -> Result<String, BootError> {
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
    let key_paths: Vec<PathBuf> = host_keys.iter().map(|k| k.path.clone()).collect();
    if key_paths.is_empty() {
        return Err(BootError::Failed("no host key sshd can serve".to_owned()));
    }
    let installed = sshd_probe::InstalledSshd::probe(sshd, &key_paths)?;

    // Diffie-Hellman group exchange with the system's groups of 3072 bits
    // or more only; without any, that key exchange is left out.
    let system_moduli = installed.default_moduli_file();
    let (moduli, groups) = sshd_probe::strong_moduli(&sshd_probe::read_moduli(&system_moduli)?);
    let moduli_file = p.run_dir.join("moduli");
    files::write_root_file(&moduli_file, moduli.as_bytes(), 0o644)
        .map_err(|e| BootError::io(format!("write {}", moduli_file.display()), e))?;
    if groups == 0 {
        log(&format!(
            "warning: {} has no Diffie-Hellman group of 3072 bits or more: {} is not offered",
            system_moduli.display(),
            sshd_config::GROUP_EXCHANGE
        ));
    }

    let legacy: Vec<String> = host_keys
        .iter()
        .filter_map(|k| k.extra_algorithm.clone())
        .collect();
    let algorithms =
        sshd_config::algorithms(&installed, &legacy, groups > 0).map_err(BootError::Failed)?;
    let values = sshd_config::SshdValues {
        port: s.ssh_port,
        listen: s.listen.clone(),
        host_keys: key_paths,
        user: SESSION_USER.to_owned(),
        permit_tty: pty,
        force_command: bin("bastion-wrapper")?,
        keys_command: bin("bastion-keys")?,
        moduli_file,
        algorithms: algorithms.text,
    };
    let rendered = sshd_config::render(&template, &values, &installed)
        .map_err(|e| BootError::Failed(format!("cannot render {}: {e}", p.template.display())))?;
    let mut note = format!(
        "sshd {}: algorithms of ssh-audit's \"{}\"",
        installed.release(),
        algorithms.policy
    );
    if !algorithms.left_out.is_empty() {
        note.push_str(&format!(
            "; not supported here: {}",
            algorithms.left_out.join(", ")
        ));
    }
    if !rendered.unsupported.is_empty() {
        note.push_str(&format!(
            "; options this sshd lacks: {}",
            rendered.unsupported.join(", ")
        ));
    }
    if !legacy.is_empty() {
        note.push_str(&format!(
            "; also offered for legacy host keys: {}",
            legacy.join(", ")
        ));
    }
    log(&note);
    Ok(rendered.text)
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
