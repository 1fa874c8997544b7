//! `bastion-monitor`: the one long-running bastion process (root,
//! non-dumpable, started by the entrypoint before sshd). It relays sshd's
//! log escaped, holds the HTTP listening sockets and restarts the
//! listener on them, collects session events over its socket and writes
//! the audit trail, and serves metrics. A session user can neither signal,
//! trace nor out-bind it, and nothing a session sends decides who the
//! session is.

mod agent_log;
mod collector;
mod keeper;
mod metrics;
mod output;
mod procs;
mod relay;

pub(crate) use crate::audit::Format;

use crate::config::{Runtime, RUNTIME_FILE};
use crate::exit::{self, Failure, Tool};
use clap::Parser;
use std::io::Read as _;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

/// The event socket, in its own root-owned directory next to the runtime
/// file.
pub(crate) fn socket_path(runtime_file: &Path) -> PathBuf {
    runtime_file
        .parent()
        .unwrap_or(Path::new("/"))
        .join("monitor/events.sock")
}

/// Started by bastion-entrypoint: relays sshd's log, keeps the HTTP
/// sockets, writes the audit trail, serves metrics.
#[derive(Parser, Debug)]
#[command(name = "bastion-monitor", version)]
struct Args {
    /// Runtime file written by bastion-entrypoint.
    #[arg(long, value_name = "PATH", default_value = RUNTIME_FILE)]
    runtime: PathBuf,
    /// Descriptor of the read end of sshd's stderr (a SOCK_SEQPACKET socket).
    #[arg(long, value_name = "FD")]
    sshd_log_fd: Option<i32>,
    /// Descriptor of the read end of the agent proxies' stderr (the same
    /// kind of socket): their events.
    #[arg(long, value_name = "FD")]
    agent_log_fd: Option<i32>,
    /// HTTP port to keep (the credentials come on stdin).
    #[arg(long, value_name = "PORT")]
    http_port: Option<u16>,
    /// Serve /metrics on this port.
    #[arg(long, value_name = "PORT")]
    metrics_port: Option<u16>,
    /// `text` or `json`.
    #[arg(long, default_value = "text")]
    log_format: String,
}

struct State {
    logins: collector::Logins,
    /// SSH sessions by their wrapper: (session id, identity), for the
    /// agent proxy's events.
    live: std::collections::HashMap<procs::ProcKey, (String, String)>,
    metrics: metrics::Metrics,
    /// The HTTP listener running now.
    listener: Option<procs::ProcKey>,
}

/// What every part of the monitor shares.
#[derive(Clone)]
pub(crate) struct Shared {
    state: Arc<Mutex<State>>,
    logins_changed: Arc<tokio::sync::Notify>,
    out: output::Output,
    format: Format,
    user: Arc<str>,
    /// Session containers (SPEC 12): the engine of the runtime file, the
    /// only one the monitor runs to remove a lost session's container.
    engine: Option<Arc<crate::container::engine::Engine>>,
    /// The egress gate (SPEC 14): opened per session on its connection.
    gate: Option<Arc<GateConfig>>,
}

/// What every session's gate is opened with.
pub(crate) struct GateConfig {
    runtime: crate::gate::GateRuntime,
    /// This bastion's container id (the networks' instance label).
    instance: String,
}

pub fn main() -> ExitCode {
    exit::main(Tool::Monitor, || {
        crate::sys::fd::cloexec_inherited().map_err(Failure::descriptors)?;
        let args = exit::parse_args::<Args>()?;
        run(args).map_err(Failure::os)?;
        Ok(exit::code(exit::OK))
    })
}

fn run(args: Args) -> Result<(), String> {
    crate::sys::privilege::set_non_dumpable().map_err(|e| e.to_string())?;
    let format = Format::parse(&args.log_format).ok_or_else(|| {
        format!(
            "--log-format {}: expected text or json",
            crate::audit::escape(&args.log_format)
        )
    })?;
    let rt = Runtime::load(&args.runtime).map_err(|e| e.to_string())?;
    let creds = match args.http_port {
        Some(_) => Some(read_credentials()?),
        None => None,
    };
    let sshd_log = match args.sshd_log_fd {
        Some(fd) => Some(adopt("sshd-log-fd", fd)?),
        None => None,
    };
    let agent_log = match args.agent_log_fd {
        Some(fd) => Some(adopt("agent-log-fd", fd)?),
        None => None,
    };
    // SPEC 14: with the egress gate, the bastion's own listeners keep to
    // the addresses it has now, before any session network is joined.
    let gated = rt.session.as_ref().is_some_and(|s| s.gate.is_some());
    let boot_addresses = if gated {
        Some(
            crate::gate::own_ports::boot_addresses()
                .map_err(|e| format!("cannot list the container's addresses: {e}"))?,
        )
    } else {
        None
    };
    let sockets = match args.http_port {
        Some(port) => Some(keeper::bind(port, boot_addresses.as_deref())?),
        None => None,
    };
    let shared = Shared {
        state: Arc::new(Mutex::new(State {
            logins: Default::default(),
            live: Default::default(),
            metrics: Default::default(),
            listener: None,
        })),
        logins_changed: Arc::new(tokio::sync::Notify::new()),
        out: output::Output::stderr(format),
        format,
        user: rt.user.clone().into(),
        engine: rt.session.as_ref().map(|s| Arc::new(s.engine.clone())),
        gate: rt.session.as_ref().and_then(|s| {
            let runtime = s.gate.clone()?;
            Some(Arc::new(GateConfig {
                runtime,
                instance: s.instance.clone(),
            }))
        }),
    };
    let socket = socket_path(&args.runtime);
    let listener = bind_events(&socket)?;

    // sshd gone (its log closed by every process that held it), or the
    // entrypoint that became sshd gone: the container is ending.
    let sshd_gone = Arc::new(tokio::sync::Notify::new());
    if let Some(fd) = sshd_log {
        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
        let (s, out, gone) = (shared.clone(), shared.out.clone(), sshd_gone.clone());
        std::thread::spawn(move || {
            relay::run(fd, s, out, format);
            gone.notify_one();
        });
    }

    if let Some(fd) = agent_log {
        let s = shared.clone();
        std::thread::spawn(move || agent_log::run(fd, s));
    }

    let tokio_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    tokio_rt.block_on(async move {
        let listener = tokio::net::UnixListener::from_std(listener)
            .map_err(|e| format!("cannot serve {}: {e}", socket.display()))?;
        if let (Some(gate), Some(engine)) = (&shared.gate, &shared.engine) {
            // Before any session opens one: networks of an earlier run.
            let cli = collector::engine_cli(engine);
            let (gone, failed) = crate::gate::network::reap(&cli, &gate.instance, None).await;
            for n in gone {
                shared.note(&format!(
                    "removed session network {n} left by an earlier run"
                ));
            }
            for e in failed {
                shared.note(&format!("warning: {e}"));
            }
        }
        tokio::spawn(collector::serve(listener, shared.clone()));
        if let Some(port) = args.metrics_port {
            let addrs: Vec<std::net::SocketAddr> = match &boot_addresses {
                Some(a) => a.iter().map(|ip| (*ip, port).into()).collect(),
                None => vec![([0, 0, 0, 0], port).into()],
            };
            let s = shared.clone();
            let render: Arc<dyn Fn() -> String + Send + Sync> =
                Arc::new(move || s.state.lock().unwrap().metrics.render(s.out.dropped()));
            for at in addrs {
                let l = tokio::net::TcpListener::bind(at)
                    .await
                    .map_err(|e| format!("cannot serve metrics on {at}: {e}"))?;
                tokio::spawn(metrics::serve(l, render.clone()));
            }
            shared.note(&format!("metrics on port {port} (GET /metrics)"));
        }
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let keeping = match (sockets, creds) {
            (Some((sockets, note)), Some(creds)) => {
                if let Some(n) = note {
                    shared.note(&n);
                }
                let k = keeper::Keeper {
                    cgi: sibling("bastion-cgi")?,
                    runtime: args.runtime.clone(),
                    sockets,
                    creds,
                    format,
                };
                Some(tokio::spawn(k.run(shared.clone(), stopped)))
            }
            _ => None,
        };
        shared.note(&format!(
            "serving {} (log format {})",
            socket.display(),
            format.name()
        ));
        let why = tokio::select! {
            s = crate::sys::stop::stop_signal() => s,
            _ = sshd_gone.notified() => "sshd is gone",
        };
        shared.note(&format!("{why}: stopping"));
        let _ = stop.send(true);
        if let Some(k) = keeping {
            let _ = k.await;
        }
        shared.out.close(std::time::Duration::from_secs(2));
        Ok(())
    })
}

fn adopt(option: &str, fd: i32) -> Result<OwnedFd, String> {
    crate::sys::fd::adopt_inherited(fd).map_err(|e| format!("--{option} {fd}: {e}"))
}

/// The credentials the entrypoint writes on stdin, then closes.
fn read_credentials() -> Result<crate::cgi::Credentials, String> {
    let mut wire = Vec::new();
    std::io::stdin()
        .take(8192)
        .read_to_end(&mut wire)
        .map_err(|e| format!("cannot read the HTTP credentials from stdin: {e}"))?;
    crate::cgi::Credentials::from_wire(&wire)
}

/// `/run/bastion/monitor/` root-owned 0755, the socket 0666 (any session
/// may connect; the monitor checks who it is).
fn bind_events(socket: &Path) -> Result<std::os::unix::net::UnixListener, String> {
    let dir = socket.parent().unwrap_or(Path::new("/"));
    crate::checked::ensure_root_dir(dir, 0o755)
        .map_err(|e| format!("cannot prepare {}: {e}", dir.display()))?;
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot replace {}: {e}", socket.display())),
    }
    let l = std::os::unix::net::UnixListener::bind(socket)
        .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| format!("cannot open {} to sessions: {e}", socket.display()))?;
    l.set_nonblocking(true)
        .map_err(|e| format!("cannot serve {}: {e}", socket.display()))?;
    Ok(l)
}

fn sibling(name: &str) -> Result<PathBuf, String> {
    let p =
        crate::sibling::sibling(name).map_err(|e| format!("cannot find my own executable: {e}"))?;
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "{} is missing: {name} must sit next to bastion-monitor",
            p.display()
        ))
    }
}
