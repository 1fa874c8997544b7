//! The container's configuration, read once at boot: every path (all under
//! `BASTION_ROOT`, `/` in the image) and every variable of SPEC 3, validated
//! together so the operator sees every problem in one go.

use crate::cgi::Credentials;
use crate::config::{self, env_var, ConfigError, LockPolicy, Mode};
use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where everything lives. In the image these are the fixed paths of SPEC 3;
/// tests set `BASTION_ROOT` to a directory and get the same tree under it.
#[derive(Debug, Clone)]
pub(super) struct Paths {
    pub(super) root: PathBuf,
    /// Where the other `bastion-*` binaries are: next to this one.
    pub(super) bin_dir: PathBuf,
    pub(super) host_keys_dir: PathBuf,
    pub(super) run_dir: PathBuf,
    pub(super) runtime_file: PathBuf,
    pub(super) lock_file: PathBuf,
    pub(super) merged_keys_file: PathBuf,
    pub(super) sshd_config: PathBuf,
    pub(super) template: PathBuf,
    pub(super) allowed_commands_file: PathBuf,
    pub(super) group_file: PathBuf,
    pub(super) docker_socket: PathBuf,
}

pub(super) const TEMPLATE: &str = "/usr/local/share/bastion/sshd_config.template";

impl Paths {
    fn new(root: PathBuf, bin_dir: PathBuf) -> Self {
        let at = |abs: &str| root.join(abs.trim_start_matches('/'));
        let run_dir = at("/run/bastion");
        Self {
            bin_dir,
            host_keys_dir: at("/etc/ssh/keys"),
            runtime_file: at(config::RUNTIME_FILE),
            lock_file: run_dir.join("command.lock"),
            merged_keys_file: run_dir.join("authorized_keys.merged"),
            sshd_config: run_dir.join("sshd_config"),
            template: at(TEMPLATE),
            allowed_commands_file: at(config::ALLOWED_COMMANDS_FILE),
            group_file: at("/etc/group"),
            docker_socket: at("/var/run/docker.sock"),
            run_dir,
            root,
        }
    }

    pub(super) fn under(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }
}

/// Everything the boot needs, validated.
pub(super) struct Settings {
    pub(super) paths: Paths,
    pub(super) mode: Mode,
    pub(super) allowed_commands: String,
    pub(super) command_prefix: String,
    pub(super) command_lock: LockPolicy,
    pub(super) ssh_port: u16,
    pub(super) http_port: u16,
    pub(super) listen: Vec<IpAddr>,
    pub(super) keys_dir: PathBuf,
    pub(super) keys_host: PathBuf,
    pub(super) keys_repo: PathBuf,
    pub(super) credentials: Option<Credentials>,
    /// Problems worth a line in the log that do not stop the boot.
    pub(super) warnings: Vec<String>,
}

/// Reads variables, pushing a ConfigError for each bad one.
struct Env<'a> {
    errors: &'a mut Vec<ConfigError>,
}

impl Env<'_> {
    fn get(&mut self, var: &str) -> Option<String> {
        env_var(var).unwrap_or_else(|e| {
            self.errors.push(e);
            None
        })
    }

    fn port(&mut self, var: &str, default: u16) -> u16 {
        match self.get(var) {
            None => default,
            Some(v) => match v.trim().parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => {
                    self.errors.push(ConfigError::new(
                        var,
                        Some(&v),
                        "is not a TCP port",
                        "use a number from 1 to 65535",
                    ));
                    default
                }
            },
        }
    }

    /// An absolute path: the session-side helpers run with another working
    /// directory, so a relative one would silently point elsewhere.
    fn path(&mut self, var: &str, default: PathBuf) -> PathBuf {
        match self.get(var) {
            None => default,
            Some(v) if v.starts_with('/') => PathBuf::from(v),
            Some(v) => {
                self.errors.push(ConfigError::new(
                    var,
                    Some(&v),
                    "is not an absolute path",
                    "give the full path inside the container, starting with /",
                ));
                default
            }
        }
    }
}

impl Settings {
    pub(super) fn from_env() -> Result<Settings, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let mut env = Env {
            errors: &mut errors,
        };

        let root = match env.get("BASTION_ROOT") {
            None => PathBuf::from("/"),
            Some(r) if r.starts_with('/') => PathBuf::from(r),
            Some(r) => {
                env.errors.push(ConfigError::new(
                    "BASTION_ROOT",
                    Some(&r),
                    "is not an absolute path",
                    "unset it (the image uses /) or give an absolute directory",
                ));
                PathBuf::from("/")
            }
        };
        let bin_dir = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_owned))
            .unwrap_or_else(|| PathBuf::from("/usr/local/bin"));
        let paths = Paths::new(root, bin_dir);
        for (what, p) in [
            ("the bastion binaries' directory", &paths.bin_dir),
            ("BASTION_ROOT", &paths.runtime_file),
        ] {
            if let Err(problem) = super::sshd_config::path_str(p) {
                env.errors.push(ConfigError::new(
                    what,
                    None,
                    problem,
                    "install the binaries and the root under a plain path",
                ));
            }
        }

        let ssh_port = env.port("SSH_PORT", 22);
        let http_port = env.port("HTTP_PORT", 8080);
        let command_lock = match env.get("COMMAND_LOCK") {
            None => LockPolicy::Exclusive,
            Some(v) => LockPolicy::parse(&v).unwrap_or_else(|problem| {
                env.errors.push(ConfigError::new(
                    "COMMAND_LOCK",
                    Some(&v),
                    "is not a lock policy",
                    problem,
                ));
                LockPolicy::Exclusive
            }),
        };
        let mut listen = Vec::new();
        if let Some(v) = env.get("SSH_LISTEN_ADDRESS") {
            for a in v.split([',', ' ']).filter(|a| !a.is_empty()) {
                match a.parse::<IpAddr>() {
                    Ok(ip) => listen.push(ip),
                    Err(_) => env.errors.push(ConfigError::new(
                        "SSH_LISTEN_ADDRESS",
                        Some(&v),
                        format!("\"{}\" is not an IP address", crate::audit::escape(a)),
                        "give IP addresses separated by commas, or unset it to listen on all",
                    )),
                }
            }
        }

        // SPEC 14: with the gate, sshd listens only on the addresses the
        // container had at boot, never on a session network it joins later.
        let gated = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.trim().is_empty());
        if listen.is_empty() && gated(&env.get("SESSION_IMAGE")) && gated(&env.get("UPSTREAMS")) {
            match crate::gate::own_ports::boot_addresses() {
                Ok(a) => listen = a,
                Err(e) => env.errors.push(ConfigError::new(
                    "SSH_LISTEN_ADDRESS",
                    None,
                    format!("cannot list the container's addresses to listen on: {e}"),
                    "set SSH_LISTEN_ADDRESS to the addresses sshd should listen on",
                )),
            }
        }

        // SPEC 14: the egress gate is a session's only way to its upstreams.
        let session_network = env.get("SESSION_NETWORK");
        let upstreams = env.get("UPSTREAMS");
        if let Some(e) =
            crate::gate::check_session_network(session_network.as_deref(), upstreams.as_deref())
        {
            env.errors.push(e);
        }

        // Mode (SPEC 3): broker when ALLOWED_COMMANDS is set or the list file
        // exists; otherwise FORCE_COMMAND is required.
        let force = env.get("FORCE_COMMAND");
        let allowed_commands = env.get("ALLOWED_COMMANDS").unwrap_or_default();
        let command_prefix = env.get("COMMAND_PREFIX").unwrap_or_default();
        let list_exists = match fs::metadata(&paths.allowed_commands_file) {
            Ok(m) if m.is_file() => {
                if m.permissions().mode() & 0o004 == 0 {
                    warnings.push(format!(
                        "{} is not world-readable; the broker runs as {} and must read it on every request",
                        paths.allowed_commands_file.display(),
                        config::SESSION_USER
                    ));
                }
                true
            }
            Ok(_) => {
                env.errors.push(ConfigError::new(
                    "allowed-commands.list",
                    Some(&paths.allowed_commands_file.display().to_string()),
                    "is not a regular file (Docker creates a directory when the mounted file is missing)",
                    "mount an existing rule file there",
                ));
                true
            }
            Err(_) => false,
        };
        let mode = if !allowed_commands.is_empty() || list_exists {
            if force.is_some() {
                warnings.push("FORCE_COMMAND is ignored: broker mode is on".to_owned());
            }
            env.errors.extend(crate::broker::validate_boot(
                &allowed_commands,
                &command_prefix,
            ));
            Mode::Broker
        } else if let Some(command) = force {
            Mode::Force { command }
        } else {
            env.errors.push(ConfigError::new(
                "FORCE_COMMAND",
                None,
                format!(
                    "no mode configured: neither FORCE_COMMAND nor ALLOWED_COMMANDS is set and {} does not exist",
                    paths.allowed_commands_file.display()
                ),
                "set FORCE_COMMAND for force-command mode, or ALLOWED_COMMANDS (or mount the list file) for broker mode",
            ));
            Mode::Broker
        };

        // Key sources (SPEC 3, 6): a missing source just has no keys; one
        // that exists but cannot be read is a mistake worth stopping for.
        let keys_dir = env.path("AUTHORIZED_KEYS_DIR", paths.under("/etc/bastion/users.d"));
        let keys_host = env.path(
            "AUTHORIZED_KEYS_HOST",
            paths.under("/etc/bastion/authorized_keys.host"),
        );
        let keys_repo = env.path(
            "AUTHORIZED_KEYS_REPO",
            paths.under("/etc/bastion/authorized_keys.repo"),
        );
        check_keys_dir(&keys_dir, env.errors, &mut warnings);
        check_key_file("AUTHORIZED_KEYS_HOST", &keys_host, env.errors);
        check_key_file("AUTHORIZED_KEYS_REPO", &keys_repo, env.errors);

        let credentials = match crate::cgi::credentials_from_env() {
            Ok(c) => c,
            Err(es) => {
                env.errors.extend(es);
                None
            }
        };
        if credentials.is_some() && http_port == ssh_port {
            env.errors.push(ConfigError::new(
                "HTTP_PORT",
                Some(&http_port.to_string()),
                "is the same as SSH_PORT",
                "give the HTTP listener and sshd different ports",
            ));
        }

        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Settings {
            paths,
            mode,
            allowed_commands,
            command_prefix,
            command_lock,
            ssh_port,
            http_port,
            listen,
            keys_dir,
            keys_host,
            keys_repo,
            credentials,
            warnings,
        })
    }
}

fn check_key_file(var: &str, path: &Path, errors: &mut Vec<ConfigError>) {
    let shown = path.display().to_string();
    match fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => errors.push(ConfigError::new(
            var,
            Some(&shown),
            format!("cannot be read: {e}"),
            "mount a readable authorized_keys file there, or unset the variable",
        )),
        Ok(m) if !m.is_file() => errors.push(ConfigError::new(
            var,
            Some(&shown),
            "is not a regular file (Docker creates a directory when the mounted file is missing)",
            "mount an existing authorized_keys file there, or unset the variable",
        )),
        Ok(_) => {
            if let Err(e) = fs::File::open(path) {
                errors.push(ConfigError::new(
                    var,
                    Some(&shown),
                    format!("cannot be read: {e}"),
                    "make it readable by root",
                ));
            }
        }
    }
}

/// `users.d` is read live by bastion-keys as `nobody`: warn about files that
/// user cannot read (they would silently not work).
fn check_keys_dir(dir: &Path, errors: &mut Vec<ConfigError>, warnings: &mut Vec<String>) {
    let shown = dir.display().to_string();
    let entries = match fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Ok(m) if !m.is_dir() => {
            errors.push(ConfigError::new(
                "AUTHORIZED_KEYS_DIR",
                Some(&shown),
                "is not a directory",
                "mount a directory of *.pub files there, or unset the variable",
            ));
            return;
        }
        Err(e) => Err(e),
        Ok(m) => {
            if m.permissions().mode() & 0o005 != 0o005 {
                warnings.push(format!(
                    "{shown} is not readable by others (mode {:o}); bastion-keys runs as nobody and will see no key in it",
                    m.permissions().mode() & 0o7777
                ));
            }
            fs::read_dir(dir)
        }
    };
    match entries {
        Err(e) => errors.push(ConfigError::new(
            "AUTHORIZED_KEYS_DIR",
            Some(&shown),
            format!("cannot be read: {e}"),
            "make it a readable directory",
        )),
        Ok(entries) => {
            for e in entries.flatten() {
                let p = e.path();
                if p.extension().is_none_or(|x| x != "pub") {
                    continue;
                }
                if let Ok(m) = fs::metadata(&p) {
                    if m.is_file() && m.permissions().mode() & 0o004 == 0 {
                        warnings.push(format!(
                            "{} is not readable by others (mode {:o}); bastion-keys runs as nobody and will not see it",
                            p.display(),
                            m.permissions().mode() & 0o7777
                        ));
                    }
                }
            }
        }
    }
}

/// The socket's group id when a Docker socket is mounted.
pub(super) fn docker_socket_gid(path: &Path) -> Option<Result<u32, String>> {
    use std::os::unix::fs::MetadataExt;
    match fs::metadata(path) {
        Err(_) => None,
        Ok(m) if m.file_type().is_socket() => Some(Ok(m.gid())),
        Ok(_) => Some(Err(format!(
            "{} exists but is not a socket (Docker creates a directory when the mounted path is missing)",
            path.display()
        ))),
    }
}
