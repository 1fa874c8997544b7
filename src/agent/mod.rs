//! `bastion-agent-proxy` (SPEC 13): the socket sessions get as
//! `SSH_AUTH_SOCK`, in front of the OpenSSH `ssh-agent` that holds the
//! upstream keys. It passes list, `session-bind@openssh.com` and login
//! signatures for a pinned upstream, refuses everything else, and never
//! holds key material itself. Started as root by the entrypoint: binds its
//! socket (root-owned directory, group of the session user, mode 0660),
//! then becomes the agent's own user for good and non-dumpable, so the
//! session user can neither signal, trace nor out-bind it.

pub(crate) mod events;
pub mod policy;
pub mod protocol;
mod proxy;

use crate::exit::{self, Failure, Tool};
use crate::upstream::Upstream;
use clap::Parser;
use policy::Target;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// The account ssh-agent and this proxy run as (made in the image).
pub(crate) const AGENT_USER: &str = "bastion";

#[derive(Parser, Debug)]
#[command(
    name = "bastion-agent-proxy",
    version,
    about = "Filters the ssh-agent protocol between sessions and the agent holding the upstream keys"
)]
struct Args {
    /// The socket to listen on (sessions' SSH_AUTH_SOCK).
    #[arg(long, value_name = "PATH")]
    listen: PathBuf,
    /// The real agent's socket.
    #[arg(long, value_name = "PATH")]
    agent: PathBuf,
    /// The upstream table written by bastion-entrypoint (JSON).
    #[arg(long, value_name = "PATH")]
    upstreams: PathBuf,
    /// Become this user after binding (when started as root).
    #[arg(long, value_name = "NAME", default_value = AGENT_USER)]
    user: String,
    /// The user whose processes may connect (root always may); its group
    /// owns the socket.
    #[arg(long, value_name = "NAME", default_value = crate::config::SESSION_USER)]
    client_user: String,
    /// Let a process of any uid connect (socket mode 0666): the socket
    /// session containers get through the egress gate's share (SPEC 14),
    /// whose users are the image's, not the bastion's. What it passes is
    /// the same: list, session-bind and signatures for a pinned upstream.
    #[arg(long)]
    any_client: bool,
    /// Client connections at once at most.
    #[arg(long, value_name = "N", default_value_t = 128,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    max_connections: u32,
    /// End when process PID (the one that started this one) ends.
    #[arg(long, value_name = "PID")]
    parent_pid: Option<u32>,
    /// Keep the upstream counters here, in Prometheus text.
    #[arg(long, value_name = "PATH")]
    metrics_file: Option<PathBuf>,
    /// Its own lines in `text` or `json` (LOG_FORMAT).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Write the events on this inherited descriptor (the monitor's
    /// socket) instead of stderr.
    #[arg(long, value_name = "FD")]
    events_fd: Option<i32>,
}

pub fn main() -> ExitCode {
    exit::main(Tool::AgentProxy, || {
        crate::sys::fd::cloexec_inherited().map_err(Failure::descriptors)?;
        let args = exit::parse_args::<Args>()?;
        run(args).map_err(Failure::os)?;
        Ok(exit::code(exit::OK))
    })
}

/// The filter's view of the upstream table.
pub(crate) fn targets(upstreams: &[Upstream]) -> Result<Vec<Target>, String> {
    upstreams
        .iter()
        .map(|u| {
            Ok(Target {
                name: u.name.clone(),
                user: u.user.clone(),
                fingerprint: u.fingerprint.clone(),
                key: u
                    .key_blob()
                    .ok_or_else(|| format!("upstream {}: bad public key", u.name))?,
                host_keys: u.host_key_blobs(),
            })
        })
        .collect()
}

fn load_targets(path: &Path) -> Result<Vec<Target>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let ups: Vec<Upstream> =
        serde_json::from_str(&text).map_err(|e| format!("cannot parse {}: {e}", path.display()))?;
    targets(&ups)
}

/// Binds `path`, replacing a stale socket (never another kind of file).
fn bind(
    path: &Path,
    group: Option<u32>,
    any_client: bool,
) -> Result<std::os::unix::net::UnixListener, String> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            let _ = std::fs::remove_file(path);
        }
        Ok(_) => return Err(format!("{} exists and is not a socket", path.display())),
        Err(_) => {}
    }
    let l = std::os::unix::net::UnixListener::bind(path)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, Some(0), Some(gid))
            .map_err(|e| format!("cannot chown {}: {e}", path.display()))?;
    }
    let mode = match (any_client, group) {
        (true, _) => 0o666,
        (false, Some(_)) => 0o660,
        (false, None) => 0o600,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
    Ok(l)
}

fn run(args: Args) -> Result<(), String> {
    if let Some(f) = crate::audit::Format::parse(&args.log_format) {
        crate::audit::set_format(f);
    }
    if let Some(fd) = args.events_fd {
        let fd =
            crate::sys::fd::adopt_inherited(fd).map_err(|e| format!("--events-fd {fd}: {e}"))?;
        events::send_to(fd).map_err(|e| format!("--events-fd: {e}"))?;
    }
    let targets = load_targets(&args.upstreams)?;
    let client = nix::unistd::User::from_name(&args.client_user)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("user {} does not exist", args.client_user))?;
    let root = crate::sys::privilege::is_root();
    let listener = bind(
        &args.listen,
        root.then_some(client.gid.as_raw()),
        args.any_client,
    )?;
    let mut peers = vec![0, client.uid.as_raw()];
    if root {
        let me = crate::sys::privilege::drop_to(&args.user).map_err(|e| e.to_string())?;
        peers.push(me.uid);
    } else {
        peers.push(nix::unistd::getuid().as_raw());
    }
    crate::sys::privilege::set_non_dumpable().map_err(|e| e.to_string())?;
    if let Some(parent) = args.parent_pid {
        crate::sys::privilege::exit_with_parent(parent).map_err(|e| e.to_string())?;
    }
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot set the listener non-blocking: {e}"))?;
    let limits = proxy::Limits {
        max_connections: args.max_connections as usize,
        ..proxy::Limits::default()
    };
    let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
    crate::audit::say(
        Tool::AgentProxy,
        format!(
            "listening on {} for {} ({}), agent {}",
            args.listen.display(),
            if args.any_client {
                "session containers"
            } else {
                &args.client_user
            },
            if names.is_empty() {
                "no upstream".to_owned()
            } else {
                names.join(", ")
            },
            args.agent.display()
        ),
    );
    let mut shared = proxy::Shared::new(targets, args.agent, peers, limits, args.metrics_file);
    shared.any_peer = args.any_client;
    let shared = Arc::new(shared);
    if let Ok(c) = shared.counters.lock() {
        shared.write_metrics(&c);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the event loop: {e}"))?;
    rt.block_on(async move {
        let l = tokio::net::UnixListener::from_std(listener)
            .map_err(|e| format!("cannot use the listener: {e}"))?;
        proxy::serve(l, shared)
            .await
            .map_err(|e| format!("accept failed: {e}"))
    })
}
