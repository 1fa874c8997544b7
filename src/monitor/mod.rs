//! `bastion-monitor`: the one long-running bastion process (root,
//! non-dumpable, started by the entrypoint before sshd). It relays sshd's
//! log escaped, holds the HTTP listening sockets and restarts the
//! listener on them, collects session events over its socket and writes
//! the audit trail, and serves metrics. A session user can neither signal,
//! trace nor out-bind it, and nothing a session sends decides who the
//! session is.

mod collector;
mod event;
mod keeper;
mod metrics;
mod output;
mod procs;
mod relay;

pub(crate) use event::Format;

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
        Some(fd) => Some(adopt(fd)?),
        None => None,
    };
    let sockets = match args.http_port {
        Some(port) => Some(keeper::bind(port)?),
        None => None,
    };
    let shared = Shared {
        state: Arc::new(Mutex::new(State {
            logins: Default::default(),
            metrics: Default::default(),
            listener: None,
        })),
        logins_changed: Arc::new(tokio::sync::Notify::new()),
        out: output::Output::stderr(format == Format::Json),
        format,
        user: rt.user.clone().into(),
        engine: rt.session.as_ref().map(|s| Arc::new(s.engine.clone())),
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

    let tokio_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    tokio_rt.block_on(async move {
        let listener = tokio::net::UnixListener::from_std(listener)
            .map_err(|e| format!("cannot serve {}: {e}", socket.display()))?;
        tokio::spawn(collector::serve(listener, shared.clone()));
        if let Some(port) = args.metrics_port {
            let l = tokio::net::TcpListener::bind(("0.0.0.0", port))
                .await
                .map_err(|e| format!("cannot serve metrics on 0.0.0.0:{port}: {e}"))?;
            let s = shared.clone();
            let render: Arc<dyn Fn() -> String + Send + Sync> =
                Arc::new(move || s.state.lock().unwrap().metrics.render(s.out.dropped()));
            tokio::spawn(metrics::serve(l, render));
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

fn adopt(fd: i32) -> Result<OwnedFd, String> {
    crate::sys::fd::adopt_inherited(fd).map_err(|e| format!("--sshd-log-fd {fd}: {e}"))
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
