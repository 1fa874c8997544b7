//! The HTTP listener (SPEC 7): authenticates, runs `/cgi-bin/run` as the
//! wrapper would (in-process: only the command is started), streams its
//! output. It runs as the session user and its
//! credentials never reach a file, an environment or a readable /proc entry.
//!
//! Boot order matters: read the credentials and the runtime file and bind
//! the port as root, then drop to the session user for good, then become
//! non-dumpable, and only then serve.

mod access_log;
mod body;
mod command;
mod conn_io;
mod credentials;
mod server;

pub(crate) use credentials::Credentials;

use crate::config::{ConfigError, Runtime, RUNTIME_FILE};
use crate::exit::{self, Failure, Tool};
use crate::sys::privilege;
use clap::Parser;
use std::io::Read as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Default `HTTP_PORT`.
pub(crate) const DEFAULT_PORT: u16 = 8080;
/// Default bound on commands running at once (503 beyond it).
pub(crate) const DEFAULT_MAX_COMMANDS: u32 = 32;
/// Default bound on connections open at once from one client address:
/// room for a CI fleet of 20 jobs behind one NAT address, each with a
/// connection, and for its health checks.
pub(crate) const DEFAULT_MAX_PER_SOURCE: u32 = 32;
/// Default time a client has to send a complete request head.
pub(crate) const DEFAULT_HEADER_TIMEOUT_SECS: u64 = 10;
/// Default time output may wait for a client that reads nothing.
pub(crate) const DEFAULT_STALL_TIMEOUT_SECS: u64 = 60;
/// How long a stopping listener waits for killed commands to be reaped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Reads `HTTP_BASIC_AUTH`, `HTTP_TOKEN` and their `_FILE` variants.
/// `Ok(None)`: HTTP is off.
pub(crate) fn credentials_from_env() -> Result<Option<Credentials>, Vec<ConfigError>> {
    credentials::credentials_from_env()
}

/// `bastion-cgi`: the HTTP listener.
///
/// Started by bastion-entrypoint with --credentials-stdin. Standalone (for
/// operators and tests), it reads HTTP_BASIC_AUTH or HTTP_TOKEN (or their
/// _FILE variants) from its environment instead.
#[derive(Debug, Parser)]
#[command(name = "bastion-cgi", version, args_override_self = true)]
struct Args {
    /// Runtime file written by bastion-entrypoint (the session user and
    /// what the wrapper needs).
    #[arg(long, value_name = "PATH", default_value = RUNTIME_FILE)]
    runtime: PathBuf,
    /// TCP port to listen on (0: any free port, printed at startup).
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0")]
    listen: IpAddr,
    /// Serve on this inherited listening socket instead of binding (the
    /// monitor keeps the sockets; repeat for IPv4 and IPv6).
    #[arg(long, value_name = "FD", conflicts_with_all = ["port", "listen"])]
    listen_fd: Vec<i32>,
    /// Read the credentials from stdin (`basic` or `bearer`, a newline, the
    /// secret) instead of the environment.
    #[arg(long)]
    credentials_stdin: bool,
    /// Commands running at once at most; more get 503.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_COMMANDS,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    max_commands: u32,
    /// Connections open at once from one client address at most; more get
    /// 503 and are closed.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_PER_SOURCE,
          value_parser = clap::value_parser!(u32).range(1..=server::MAX_CONNECTIONS as i64))]
    max_per_source: u32,
    /// Seconds a client has to send a complete request head.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_HEADER_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    header_timeout: u64,
    /// Seconds a command's output may wait for a client that reads
    /// nothing; then the client counts as gone and the command is killed.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_STALL_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=86400))]
    stall_timeout: u64,
    /// Access lines in `text` (the `[http]` line) or `json` (an
    /// `http.access` object, as the monitor's events in LOG_FORMAT=json).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

pub fn main() -> ExitCode {
    exit::main(Tool::Cgi, || {
        crate::sys::fd::cloexec_inherited().map_err(Failure::descriptors)?;
        let args = exit::parse_args::<Args>()?;
        run(args)?;
        Ok(exit::code(exit::OK))
    })
}

fn read_stdin_credentials() -> Result<Credentials, Failure> {
    let mut wire = Vec::new();
    std::io::stdin()
        .take((credentials::MAX_SECRET + 64) as u64)
        .read_to_end(&mut wire)
        .map_err(|e| Failure::os(format!("cannot read credentials from stdin: {e}")))?;
    Credentials::from_wire(&wire).map_err(|p| {
        Failure::Config(vec![ConfigError::new(
            "--credentials-stdin",
            None,
            p,
            "start bastion-cgi through bastion-entrypoint, or without --credentials-stdin",
        )])
    })
}

fn run(args: Args) -> Result<(), Failure> {
    if let Some(f) = crate::audit::Format::parse(&args.log_format) {
        crate::audit::set_format(f);
    }
    let runtime = Runtime::load(&args.runtime)?;
    // Read once, as root, like the runtime file: both are written at boot
    // and never change while the container runs.
    let broker = crate::broker::BrokerConfig::preloaded_from_runtime(&runtime);
    let creds = if args.credentials_stdin {
        read_stdin_credentials()?
    } else {
        credentials::from_env_for(&runtime.user)
            .map_err(Failure::Config)?
            .ok_or_else(|| {
                Failure::Config(vec![ConfigError::new(
                    "HTTP_BASIC_AUTH",
                    None,
                    "no HTTP credentials are configured (there is no anonymous access)",
                    "set HTTP_BASIC_AUTH=user:password or HTTP_TOKEN (or HTTP_BASIC_AUTH_FILE / HTTP_TOKEN_FILE)",
                )])
            })?
    };
    let listeners = if args.listen_fd.is_empty() {
        let addr = SocketAddr::new(args.listen, args.port);
        vec![std::net::TcpListener::bind(addr)
            .map_err(|e| Failure::os(format!("cannot listen on {addr}: {e}")))?]
    } else {
        args.listen_fd
            .iter()
            .map(|&fd| {
                crate::sys::socket::adopt_listener(fd)
                    .map_err(|e| Failure::os(format!("--listen-fd {fd}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    // With --port 0 the kernel picks the port; say which.
    let addr = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(" and ");

    // Root is needed for nothing past this point.
    let account = if privilege::is_root() {
        privilege::drop_to(&runtime.user)
    } else {
        crate::audit::say(
            Tool::Cgi,
            "not started as root: serving as the current user, without a privilege drop",
        );
        privilege::current_account()
    }
    .map_err(|e| Failure::os(e.to_string()))?;
    privilege::set_non_dumpable().map_err(|e| Failure::os(e.to_string()))?;

    let workdir = if account.home.is_dir() {
        account.home.clone()
    } else {
        PathBuf::from("/")
    };
    let session_slots = runtime
        .session
        .as_ref()
        .map(|s| crate::container::slots::SlotDir {
            dir: s.slots_dir.clone(),
            max: s.max,
        });
    let launcher = command::Launcher {
        broker: Arc::new(broker),
        monitor_links: Default::default(),
        runtime: Arc::new(runtime),
        account: account.clone(),
        workdir,
        stall_timeout: Duration::from_secs(args.stall_timeout),
        session_slots,
        wrapper: crate::sibling::sibling("bastion-wrapper").map_err(Failure::os)?,
        runtime_file: args.runtime.clone(),
    };
    let limits = server::Limits {
        header_timeout: Duration::from_secs(args.header_timeout),
        max_commands: args.max_commands as usize,
        max_per_source: args.max_per_source as usize,
    };
    crate::audit::say(Tool::Cgi, format_args!(
        "listening on {addr} ({} auth) as {} (uid {}), at most {} commands at once, {} connections per client address",
        creds.scheme().name(),
        account.name,
        account.uid,
        limits.max_commands,
        limits.max_per_source
    ));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::os(format!("cannot start the runtime: {e}")))?;
    rt.block_on(async move {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let app = Arc::new(server::App::new(creds, launcher, limits, stopped.clone()));
        let mut serving = Vec::new();
        for listener in listeners {
            listener
                .set_nonblocking(true)
                .map_err(|e| Failure::os(format!("cannot set up the listener: {e}")))?;
            let listener = tokio::net::TcpListener::from_std(listener)
                .map_err(|e| Failure::os(format!("cannot set up the listener: {e}")))?;
            serving.push(tokio::spawn(server::serve(
                listener,
                app.clone(),
                stopped.clone(),
            )));
        }
        let signal = crate::sys::stop::stop_signal().await;
        crate::audit::say(
            Tool::Cgi,
            format_args!("{signal}: killing running commands and stopping"),
        );
        let _ = stop.send(true);
        for s in serving {
            let _ = s.await;
        }
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, app.commands_finished()).await;
        Ok(())
    })
}
