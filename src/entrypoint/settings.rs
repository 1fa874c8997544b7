//! The container's configuration, read once at boot: every path (all under
//! `BASTION_ROOT`, `/` in the image) and every variable of SPEC 3, validated
//! together so the operator sees every problem in one go.

use crate::cgi::Credentials;
use crate::config::{self, ConfigError, LockPolicy, Mode};
use std::ffi::OsString;
use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
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
    /// Session containers (SPEC 12), checked against the engine.
    pub(super) session: Option<crate::container::SessionRuntime>,
    /// `UPSTREAMS`, every key and pin checked (SPEC 13).
    pub(super) upstreams: Vec<crate::upstream::Checked>,
    /// `LOG_FORMAT`: `text` (default) or `json`.
    pub(super) log_format: crate::monitor::Format,
    /// `METRICS_PORT`: unset, no metrics.
    pub(super) metrics_port: Option<u16>,
    /// Problems worth a line in the log that do not stop the boot.
    pub(super) warnings: Vec<String>,
}

/// Default `SSH_PORT`.
pub(super) const DEFAULT_SSH_PORT: u16 = 22;
/// Default `HTTP_PORT` (the listener's own default too).
pub(super) const DEFAULT_HTTP_PORT: u16 = crate::cgi::DEFAULT_PORT;

/// The variable names this module reads.
mod var {
    pub(super) const BASTION_ROOT: &str = "BASTION_ROOT";
    pub(super) const SSH_PORT: &str = "SSH_PORT";
    pub(super) const HTTP_PORT: &str = "HTTP_PORT";
    pub(super) const SSH_LISTEN_ADDRESS: &str = "SSH_LISTEN_ADDRESS";
    pub(super) const COMMAND_LOCK: &str = "COMMAND_LOCK";
    pub(super) const FORCE_COMMAND: &str = "FORCE_COMMAND";
    pub(super) const ALLOWED_COMMANDS: &str = "ALLOWED_COMMANDS";
    pub(super) const COMMAND_PREFIX: &str = "COMMAND_PREFIX";
    pub(super) const AUTHORIZED_KEYS_DIR: &str = "AUTHORIZED_KEYS_DIR";
    pub(super) const AUTHORIZED_KEYS_HOST: &str = "AUTHORIZED_KEYS_HOST";
    pub(super) const AUTHORIZED_KEYS_REPO: &str = "AUTHORIZED_KEYS_REPO";
    pub(super) const LOG_FORMAT: &str = "LOG_FORMAT";
    pub(super) const METRICS_PORT: &str = "METRICS_PORT";
}

/// `LOG_FORMAT` (text or json) and `METRICS_PORT` (unset: no metrics).
fn read_audit(env: &mut Env<'_>) -> (crate::monitor::Format, Option<u16>) {
    let format = match env.get(var::LOG_FORMAT) {
        None => crate::monitor::Format::Text,
        Some(v) => crate::monitor::Format::parse(v.trim()).unwrap_or_else(|| {
            env.errors.push(ConfigError::new(
                var::LOG_FORMAT,
                Some(&v),
                "is not a log format",
                "use text (the default) or json",
            ));
            crate::monitor::Format::Text
        }),
    };
    let metrics = env
        .get(var::METRICS_PORT)
        .map(|_| env.port(var::METRICS_PORT, 0))
        .filter(|&p| p != 0);
    (format, metrics)
}

/// Reads variables through a lookup (the process environment at boot, a
/// map in tests), pushing a ConfigError for each bad one.
struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<OsString>,
    errors: Vec<ConfigError>,
}

impl<'a> Env<'a> {
    fn new(lookup: &'a dyn Fn(&str) -> Option<OsString>) -> Self {
        Self {
            lookup,
            errors: Vec::new(),
        }
    }

    /// UTF-8 text; unset or empty is `None`, non-UTF-8 an error.
    fn get(&mut self, var: &str) -> Option<String> {
        match (self.lookup)(var)?.into_string() {
            Ok(v) if v.is_empty() => None,
            Ok(v) => Some(v),
            Err(_) => {
                self.errors.push(ConfigError::new(
                    var,
                    None,
                    "is not valid UTF-8",
                    "set it to UTF-8 text",
                ));
                None
            }
        }
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

/// `BASTION_ROOT`: `/` unless set to an absolute directory.
fn read_root(env: &mut Env<'_>) -> PathBuf {
    match env.get(var::BASTION_ROOT) {
        None => PathBuf::from("/"),
        Some(r) if r.starts_with('/') => PathBuf::from(r),
        Some(r) => {
            env.errors.push(ConfigError::new(
                var::BASTION_ROOT,
                Some(&r),
                "is not an absolute path",
                "unset it (the image uses /) or give an absolute directory",
            ));
            PathBuf::from("/")
        }
    }
}

/// Ports and listen addresses.
#[derive(Debug, PartialEq, Eq)]
struct Network {
    ssh_port: u16,
    http_port: u16,
    listen: Vec<IpAddr>,
}

fn read_network(env: &mut Env<'_>) -> Network {
    let ssh_port = env.port(var::SSH_PORT, DEFAULT_SSH_PORT);
    let http_port = env.port(var::HTTP_PORT, DEFAULT_HTTP_PORT);
    let mut listen = Vec::new();
    if let Some(v) = env.get(var::SSH_LISTEN_ADDRESS) {
        for a in v.split([',', ' ']).filter(|a| !a.is_empty()) {
            match a.parse::<IpAddr>() {
                Ok(ip) => listen.push(ip),
                Err(_) => env.errors.push(ConfigError::new(
                    var::SSH_LISTEN_ADDRESS,
                    Some(&v),
                    format!("\"{}\" is not an IP address", crate::audit::escape(a)),
                    "give IP addresses separated by commas, or unset it to listen on all",
                )),
            }
        }
    }
    Network {
        ssh_port,
        http_port,
        listen,
    }
}

/// SPEC 14, with session containers and upstreams: sshd listens only on
/// the addresses the container had at boot (unless SSH_LISTEN_ADDRESS says
/// otherwise), never on a session network it joins later; and the egress
/// gate is a session's only way to its upstreams.
fn read_gate(env: &mut Env<'_>, net: &mut Network) {
    let image = env.get("SESSION_IMAGE");
    let upstreams = env.get("UPSTREAMS");
    let session_network = env.get("SESSION_NETWORK");
    let set = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.trim().is_empty());
    if net.listen.is_empty() && set(&image) && set(&upstreams) {
        match crate::gate::own_ports::boot_addresses() {
            Ok(a) => net.listen = a,
            Err(e) => env.errors.push(ConfigError::new(
                var::SSH_LISTEN_ADDRESS,
                None,
                format!("cannot list the container's addresses to listen on: {e}"),
                "set SSH_LISTEN_ADDRESS to the addresses sshd should listen on",
            )),
        }
    }
    if let Some(e) =
        crate::gate::check_session_network(session_network.as_deref(), upstreams.as_deref())
    {
        env.errors.push(e);
    }
}

/// `sessions`: session containers are on. They share nothing, so sessions
/// run side by side (bounded by SESSION_MAX) unless a lock is asked for.
fn read_lock(env: &mut Env<'_>, sessions: bool) -> LockPolicy {
    match env.get(var::COMMAND_LOCK) {
        None if sessions => LockPolicy::None,
        None => LockPolicy::Exclusive,
        Some(v) => LockPolicy::parse(&v).unwrap_or_else(|problem| {
            env.errors.push(ConfigError::new(
                var::COMMAND_LOCK,
                Some(&v),
                "is not a lock policy",
                problem,
            ));
            LockPolicy::Exclusive
        }),
    }
}

/// What is at the rule list file's path, looked at once at boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListFile {
    Missing,
    Regular { world_readable: bool },
    NotRegular,
}

impl ListFile {
    fn at(path: &Path) -> Self {
        match fs::metadata(path) {
            Ok(m) if m.is_file() => ListFile::Regular {
                world_readable: m.permissions().mode() & 0o004 != 0,
            },
            Ok(_) => ListFile::NotRegular,
            Err(_) => ListFile::Missing,
        }
    }
}

/// The mode and the broker's inputs.
#[derive(Debug, PartialEq, Eq)]
struct ModeSettings {
    mode: Mode,
    allowed_commands: String,
    command_prefix: String,
}

/// Mode (SPEC 3): broker when ALLOWED_COMMANDS is set or the list file
/// exists; otherwise FORCE_COMMAND is required.
fn read_mode(
    env: &mut Env<'_>,
    list_path: &Path,
    list: ListFile,
    sessions: bool,
    warnings: &mut Vec<String>,
) -> ModeSettings {
    let force = env.get(var::FORCE_COMMAND);
    let allowed_commands = env.get(var::ALLOWED_COMMANDS).unwrap_or_default();
    let command_prefix = env.get(var::COMMAND_PREFIX).unwrap_or_default();
    let list_exists = match list {
        ListFile::Regular { world_readable } => {
            if !world_readable {
                warnings.push(format!(
                    "{} is not world-readable; the broker runs as {} and must read it on every request",
                    list_path.display(),
                    config::SESSION_USER
                ));
            }
            true
        }
        ListFile::NotRegular => {
            env.errors.push(ConfigError::new(
                "allowed-commands.list",
                Some(&list_path.display().to_string()),
                "is not a regular file (Docker creates a directory when the mounted file is missing)",
                "mount an existing rule file there",
            ));
            true
        }
        ListFile::Missing => false,
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
    } else if sessions {
        // SPEC 12: neither: the session container runs its image's command.
        Mode::Image
    } else {
        env.errors.push(ConfigError::new(
            var::FORCE_COMMAND,
            None,
            format!(
                "no mode configured: neither FORCE_COMMAND nor ALLOWED_COMMANDS is set and {} does not exist",
                list_path.display()
            ),
            "set FORCE_COMMAND for force-command mode, ALLOWED_COMMANDS (or mount the list file) for broker mode, or SESSION_IMAGE to run an image's own command per session",
        ));
        Mode::Broker
    };
    ModeSettings {
        mode,
        allowed_commands,
        command_prefix,
    }
}

/// Where the keys come from (SPEC 3, 6).
#[derive(Debug, PartialEq, Eq)]
struct KeySources {
    dir: PathBuf,
    host: PathBuf,
    repo: PathBuf,
}

fn read_key_sources(env: &mut Env<'_>, paths: &Paths) -> KeySources {
    KeySources {
        dir: env.path(
            var::AUTHORIZED_KEYS_DIR,
            paths.under("/etc/bastion/users.d"),
        ),
        host: env.path(
            var::AUTHORIZED_KEYS_HOST,
            paths.under("/etc/bastion/authorized_keys.host"),
        ),
        repo: env.path(
            var::AUTHORIZED_KEYS_REPO,
            paths.under("/etc/bastion/authorized_keys.repo"),
        ),
    }
}

impl Settings {
    pub(super) fn from_env() -> Result<Settings, Vec<ConfigError>> {
        let bin_dir = crate::sibling::exe_dir().unwrap_or_else(|| PathBuf::from("/usr/local/bin"));
        Self::read(&|name| std::env::var_os(name), bin_dir)
    }

    /// Every reader over `lookup`, then the checks that look at files.
    fn read(
        lookup: &dyn Fn(&str) -> Option<OsString>,
        bin_dir: PathBuf,
    ) -> Result<Settings, Vec<ConfigError>> {
        let mut env = Env::new(lookup);
        let mut warnings = Vec::new();

        let paths = Paths::new(read_root(&mut env), bin_dir);
        for (what, p) in [
            ("the bastion binaries' directory", &paths.bin_dir),
            (var::BASTION_ROOT, &paths.runtime_file),
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
        let mut session_errors = Vec::new();
        let session_settings =
            crate::container::settings::parse(&mut |v| env.get(v), &mut session_errors);
        env.errors.extend(session_errors);
        let sessions = session_settings.is_some();
        let mut net = read_network(&mut env);
        read_gate(&mut env, &mut net);
        let command_lock = read_lock(&mut env, sessions);
        let list = ListFile::at(&paths.allowed_commands_file);
        let mode = read_mode(
            &mut env,
            &paths.allowed_commands_file,
            list,
            sessions,
            &mut warnings,
        );

        // A missing key source just has no keys; one that exists but cannot
        // be read is a mistake worth stopping for.
        let keys = read_key_sources(&mut env, &paths);
        check_keys_dir(&keys.dir, &mut env.errors, &mut warnings);
        check_key_file(var::AUTHORIZED_KEYS_HOST, &keys.host, &mut env.errors);
        check_key_file(var::AUTHORIZED_KEYS_REPO, &keys.repo, &mut env.errors);

        let credentials = match crate::cgi::credentials_from_env() {
            Ok(c) => c,
            Err(es) => {
                env.errors.extend(es);
                None
            }
        };
        if credentials.is_some() && net.http_port == net.ssh_port {
            env.errors.push(ConfigError::new(
                var::HTTP_PORT,
                Some(&net.http_port.to_string()),
                "is the same as SSH_PORT",
                "give the HTTP listener and sshd different ports",
            ));
        }

        let upstreams = upstreams_from_env(&mut env, &paths);
        let (log_format, metrics_port) = read_audit(&mut env);
        if let Some(m) = metrics_port {
            if m == net.ssh_port || (credentials.is_some() && m == net.http_port) {
                env.errors.push(ConfigError::new(
                    var::METRICS_PORT,
                    Some(&m.to_string()),
                    "is the same as SSH_PORT or HTTP_PORT",
                    "give the metrics their own port",
                ));
            }
        }

        // Last: these ask the engine, and report with everything else.
        let session = session_settings.and_then(|ss| {
            crate::container::boot::check(
                &ss,
                paths.run_dir.join("sessions"),
                &mut env.errors,
                &mut warnings,
            )
        });

        let mut session = session;
        if let Some(rt) = session.as_mut().filter(|_| !upstreams.is_empty()) {
            let mut own_ports = vec![net.ssh_port];
            own_ports.extend(credentials.is_some().then_some(net.http_port));
            own_ports.extend(metrics_port);
            own_ports.sort_unstable();
            own_ports.dedup();
            match crate::container::boot::share_source(&rt.engine, &rt.instance) {
                Ok(share_source) => {
                    rt.gate = Some(crate::gate::GateRuntime {
                        share_source,
                        targets: upstreams
                            .iter()
                            .map(|c| crate::gate::relay::Target {
                                name: c.declared.name.clone(),
                                host: c.declared.host.clone(),
                                port: c.declared.port,
                            })
                            .collect(),
                        own_ports,
                    })
                }
                Err(problem) => env.errors.push(ConfigError::new(
                    crate::upstream::VAR,
                    None,
                    format!(
                        "{problem}: with SESSION_IMAGE, session containers get the upstreams' agent socket, pins and ssh_config from there"
                    ),
                    format!(
                        "give the bastion a volume at {}: -v bastion-share:{} (a named volume, or a host directory)",
                        crate::gate::SHARE_DIR,
                        crate::gate::SHARE_DIR
                    ),
                )),
            }
        }

        if !env.errors.is_empty() {
            return Err(env.errors);
        }
        Ok(Settings {
            session,
            log_format,
            metrics_port,
            paths,
            mode: mode.mode,
            allowed_commands: mode.allowed_commands,
            command_prefix: mode.command_prefix,
            command_lock,
            ssh_port: net.ssh_port,
            http_port: net.http_port,
            listen: net.listen,
            keys_dir: keys.dir,
            keys_host: keys.host,
            keys_repo: keys.repo,
            credentials,
            upstreams,
            warnings,
        })
    }
}

/// `UPSTREAMS` and `UPSTREAM_KNOWN_HOSTS` (SPEC 13): parsed, then every
/// key file and pin checked, all problems reported together.
fn upstreams_from_env(env: &mut Env<'_>, paths: &Paths) -> Vec<crate::upstream::Checked> {
    use crate::upstream::{self, DEFAULT_KNOWN_HOSTS, KNOWN_HOSTS_VAR, VAR};
    let text = env.get(VAR).unwrap_or_default();
    let known_hosts = env.path(KNOWN_HOSTS_VAR, paths.under(DEFAULT_KNOWN_HOSTS));
    let declared = match upstream::parse(&text) {
        Ok(d) => d,
        Err(es) => {
            env.errors.extend(es);
            return Vec::new();
        }
    };
    if declared.is_empty() {
        return Vec::new();
    }
    let Some(keygen) = config::SAFE_PATH
        .split(':')
        .map(|d| Path::new(d).join("ssh-keygen"))
        .find(|p| p.is_file())
    else {
        env.errors.push(ConfigError::new(
            VAR,
            None,
            "ssh-keygen is not installed, so the keys cannot be checked",
            "use the bastion image (it carries openssh-keygen)",
        ));
        return Vec::new();
    };
    match upstream::validate(declared, &known_hosts, config::SESSION_USER, &keygen) {
        Ok(v) => v,
        Err(es) => {
            env.errors.extend(es);
            Vec::new()
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(pairs: &[(&str, &str)], read: impl FnOnce(&mut Env<'_>)) -> Vec<ConfigError> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        let lookup = move |name: &str| map.get(name).cloned();
        let mut env = Env::new(&lookup);
        read(&mut env);
        env.errors
    }

    #[test]
    fn network_defaults_and_addresses() {
        let errors = with(&[("SSH_LISTEN_ADDRESS", "127.0.0.1, ::1")], |env| {
            let n = read_network(env);
            assert_eq!((n.ssh_port, n.http_port), (22, 8080));
            assert_eq!(n.listen.len(), 2);
        });
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn with_session_containers_and_upstreams_sshd_keeps_to_the_boot_addresses() {
        let gated = [
            ("SESSION_IMAGE", "bastion-session:latest"),
            ("UPSTREAMS", "prod deploy@10.0.0.5:22 /run/secrets/prod_key"),
        ];
        let errors = with(&gated, |env| {
            let mut n = read_network(env);
            read_gate(env, &mut n);
            assert!(
                n.listen.contains(&"127.0.0.1".parse().unwrap()),
                "{:?}",
                n.listen
            );
            assert!(
                n.listen.iter().all(|a| !a.is_unspecified()),
                "{:?}",
                n.listen
            );
        });
        assert!(errors.is_empty(), "{errors:?}");
        // Either alone changes nothing; an explicit address list wins.
        for pairs in [&gated[..1], &gated[1..]] {
            with(pairs, |env| {
                let mut n = read_network(env);
                read_gate(env, &mut n);
                assert!(n.listen.is_empty(), "{pairs:?}: {:?}", n.listen);
            });
        }
        let mut explicit = gated.to_vec();
        explicit.push(("SSH_LISTEN_ADDRESS", "::1"));
        with(&explicit, |env| {
            let mut n = read_network(env);
            read_gate(env, &mut n);
            assert_eq!(n.listen, ["::1".parse::<IpAddr>().unwrap()]);
        });
        let errors = with(&[gated[1], ("SESSION_NETWORK", "backend")], |env| {
            let mut n = read_network(env);
            read_gate(env, &mut n);
        });
        let vars: Vec<&str> = errors.iter().map(|e| e.var.as_str()).collect();
        assert_eq!(vars, ["SESSION_NETWORK"]);
    }

    #[test]
    fn every_bad_network_value_is_reported() {
        let errors = with(
            &[
                ("SSH_PORT", "0"),
                ("HTTP_PORT", "http"),
                ("SSH_LISTEN_ADDRESS", "localhost"),
            ],
            |env| {
                let n = read_network(env);
                assert_eq!((n.ssh_port, n.http_port), (22, 8080));
            },
        );
        let vars: Vec<&str> = errors.iter().map(|e| e.var.as_str()).collect();
        assert_eq!(vars, ["SSH_PORT", "HTTP_PORT", "SSH_LISTEN_ADDRESS"]);
    }

    #[test]
    fn non_utf8_is_an_error_and_empty_is_unset() {
        use std::os::unix::ffi::OsStringExt;
        let lookup = |name: &str| match name {
            "SSH_PORT" => Some(OsString::from_vec(b"2\xff".to_vec())),
            "HTTP_PORT" => Some(OsString::new()),
            _ => None,
        };
        let mut env = Env::new(&lookup);
        let n = read_network(&mut env);
        assert_eq!((n.ssh_port, n.http_port), (22, 8080));
        assert_eq!(env.errors.len(), 1);
        assert!(env.errors[0].to_string().contains("not valid UTF-8"));
    }

    #[test]
    fn session_containers_default_the_lock_off_and_allow_the_image_mode() {
        let errors = with(&[], |env| {
            assert_eq!(read_lock(env, true), LockPolicy::None);
            let m = read_mode(
                env,
                Path::new("/nonexistent"),
                ListFile::Missing,
                true,
                &mut Vec::new(),
            );
            assert_eq!(m.mode, Mode::Image);
        });
        assert!(errors.is_empty(), "{errors:?}");
        let errors = with(&[("COMMAND_LOCK", "exclusive")], |env| {
            assert_eq!(read_lock(env, true), LockPolicy::Exclusive);
        });
        assert!(errors.is_empty());
    }

    #[test]
    fn lock_policy_is_read_or_reported() {
        assert!(with(&[("COMMAND_LOCK", "wait:5")], |env| {
            assert_eq!(read_lock(env, false), LockPolicy::Wait { seconds: 5 });
        })
        .is_empty());
        let errors = with(&[("COMMAND_LOCK", "shared")], |env| {
            assert_eq!(read_lock(env, false), LockPolicy::Exclusive);
        });
        assert_eq!(errors[0].var, "COMMAND_LOCK");
    }

    #[test]
    fn mode_follows_the_rules_then_force_command() {
        let list = Path::new("/etc/bastion/allowed-commands.list");
        let mut warnings = Vec::new();
        let errors = with(
            &[("FORCE_COMMAND", "uptime"), ("ALLOWED_COMMANDS", "ls")],
            |env| {
                let m = read_mode(env, list, ListFile::Missing, false, &mut warnings);
                assert_eq!(m.mode, Mode::Broker);
            },
        );
        assert!(errors.is_empty());
        assert_eq!(warnings, ["FORCE_COMMAND is ignored: broker mode is on"]);
        let errors = with(&[("FORCE_COMMAND", "uptime")], |env| {
            let m = read_mode(env, list, ListFile::Missing, false, &mut Vec::new());
            assert_eq!(
                m.mode,
                Mode::Force {
                    command: "uptime".into()
                }
            );
        });
        assert!(errors.is_empty());
        let errors = with(&[], |env| {
            let m = read_mode(
                env,
                list,
                ListFile::Regular {
                    world_readable: true,
                },
                false,
                &mut Vec::new(),
            );
            assert_eq!(m.mode, Mode::Broker);
        });
        assert!(errors.is_empty());
        let errors = with(&[], |env| {
            read_mode(env, list, ListFile::Missing, false, &mut Vec::new());
        });
        assert_eq!(errors[0].var, "FORCE_COMMAND");
        let errors = with(&[("ALLOWED_COMMANDS", "(a)\\1")], |env| {
            read_mode(env, list, ListFile::Missing, false, &mut Vec::new());
        });
        assert_eq!(errors[0].var, "ALLOWED_COMMANDS");
    }

    #[test]
    fn key_sources_must_be_absolute() {
        let paths = Paths::new(PathBuf::from("/r"), PathBuf::from("/bin"));
        let errors = with(
            &[
                ("AUTHORIZED_KEYS_DIR", "keys"),
                ("AUTHORIZED_KEYS_REPO", "/srv/repo.keys"),
            ],
            |env| {
                let k = read_key_sources(env, &paths);
                assert_eq!(k.dir, Path::new("/r/etc/bastion/users.d"));
                assert_eq!(k.host, Path::new("/r/etc/bastion/authorized_keys.host"));
                assert_eq!(k.repo, Path::new("/srv/repo.keys"));
            },
        );
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].var, "AUTHORIZED_KEYS_DIR");
    }

    #[test]
    fn a_relative_root_is_refused() {
        let errors = with(&[("BASTION_ROOT", "tmp")], |env| {
            assert_eq!(read_root(env), PathBuf::from("/"));
        });
        assert_eq!(errors[0].var, "BASTION_ROOT");
    }
}
