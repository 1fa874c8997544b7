//! `bastion-gate`: one session's egress gate run on its own (for operators
//! diagnosing a deployment, and for the end-to-end tests), and the reaper of
//! this instance's session networks. It prints only what the gate decided;
//! it never takes a destination from a connection.

use super::network::{self, EngineCli};
use super::relay::{ConnectRecord, EventSink, Limits, Target};
use super::ssh_config::{render, ContainerSide, ContainerUpstream};
use super::{GateSpec, SessionGate};
use crate::exit::{self, Failure, Tool};
use clap::{Parser, Subcommand};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// The egress gate of one session (SPEC 14), run outside the monitor.
#[derive(Parser, Debug)]
#[command(name = "bastion-gate", version)]
struct Cli {
    /// The container engine's client.
    #[arg(long, value_name = "PROGRAM", default_value = "docker")]
    engine: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the session's network, join it, listen for each upstream;
    /// print {"network","address","ports","ssh_config"} as one JSON line
    /// (ssh_config: the file for the session container), then one
    /// `upstream.connect` line per connection on stderr; close everything
    /// when stdin ends or on SIGTERM/SIGINT.
    Open {
        /// Session id: 16 lowercase hex characters.
        #[arg(long)]
        session: String,
        #[arg(long, default_value = "unknown")]
        identity: String,
        /// NAME=USER@HOST:PORT, in declaration order (repeatable).
        #[arg(long = "upstream", value_name = "NAME=USER@HOST:PORT", required = true)]
        upstreams: Vec<String>,
        /// The agent proxy's socket as the session container sees it (for
        /// the printed ssh_config).
        #[arg(long, default_value = super::CONTAINER_AGENT_SOCKET)]
        agent_socket: String,
        /// The pinned known_hosts file as the session container sees it.
        #[arg(long, default_value = super::CONTAINER_KNOWN_HOSTS)]
        known_hosts: String,
        /// A port of the bastion's own to hold silent on the gate address
        /// (repeatable: sshd, HTTP, metrics).
        #[arg(long = "own-port", value_name = "PORT")]
        own_ports: Vec<u16>,
        #[arg(long, default_value_t = Limits::default().max_connections)]
        max_connections: usize,
        /// Seconds without a byte either way before a connection is closed.
        #[arg(long, default_value_t = Limits::default().idle.as_secs())]
        idle: u64,
    },
    /// Remove the session networks this instance left behind (all, or one
    /// session's).
    Reap {
        #[arg(long)]
        session: Option<String>,
    },
}

pub fn main() -> ExitCode {
    exit::main(Tool::Gate, run)
}

fn run() -> Result<ExitCode, Failure> {
    let cli = exit::parse_args::<Cli>()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::os(format!("cannot start: {e}")))?;
    let engine = EngineCli::new(&cli.engine);
    rt.block_on(serve(cli.command, engine))
        .map_err(|(code, message)| Failure::Other { code, message })?;
    Ok(exit::code(exit::OK))
}

async fn serve(command: Command, engine: EngineCli) -> Result<(), (u8, String)> {
    let instance = network::own_container_id().map_err(|e| (exit::FAILURE, e.to_string()))?;
    match command {
        Command::Reap { session } => {
            let (gone, failed) = network::reap(&engine, &instance, session.as_deref()).await;
            for n in &gone {
                println!("removed {n}");
            }
            match failed.first() {
                None => Ok(()),
                Some(e) => Err((exit::FAILURE, e.to_string())),
            }
        }
        Command::Open {
            session,
            identity,
            upstreams,
            agent_socket,
            known_hosts,
            own_ports,
            max_connections,
            idle,
        } => {
            let parsed = upstreams
                .iter()
                .map(|u| parse_upstream(u))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| (exit::USAGE, e))?;
            let targets: Vec<Target> = parsed.iter().map(|(_, t)| t.clone()).collect();
            let spec = GateSpec {
                session,
                identity,
                instance,
                targets,
                own_ports,
                limits: Limits {
                    max_connections,
                    idle: Duration::from_secs(idle),
                    ..Limits::default()
                },
            };
            let sink: EventSink = Arc::new(|r: ConnectRecord| {
                eprintln!(
                    "{}",
                    crate::audit::render_now(&r.record(), crate::audit::format())
                )
            });
            let gate = SessionGate::open(spec, &engine, sink)
                .await
                .map_err(|e| (exit::FAILURE, e.to_string()))?;
            let ports: serde_json::Map<String, serde_json::Value> = gate
                .ports()
                .iter()
                .map(|(n, p)| (n.clone(), (*p).into()))
                .collect();
            let address = gate.address().to_string();
            let side = ContainerSide {
                gate_host: &address,
                agent_socket: &agent_socket,
                known_hosts: &known_hosts,
            };
            let blocks: Vec<ContainerUpstream> = parsed
                .iter()
                .zip(gate.ports())
                .map(|((user, t), (_, gate_port))| ContainerUpstream {
                    name: &t.name,
                    user,
                    host: &t.host,
                    port: t.port,
                    gate_port: *gate_port,
                })
                .collect();
            let ssh_config = match render(&side, &blocks) {
                Ok(c) => c,
                Err(e) => {
                    let _ = gate.close().await;
                    return Err((exit::USAGE, e));
                }
            };
            println!(
                "{}",
                serde_json::json!({
                    "network": gate.network(),
                    "address": address,
                    "ports": ports,
                    "ssh_config": ssh_config,
                })
            );
            until_stdin_ends_or_signal().await;
            gate.close()
                .await
                .map_err(|e| (exit::FAILURE, e.to_string()))
        }
    }
}

/// `NAME=USER@HOST:PORT`, `HOST` possibly a bracketed IPv6 literal: the
/// user, and where the gate forwards.
fn parse_upstream(s: &str) -> Result<(String, Target), String> {
    let bad = || format!("--upstream {s:?}: expected NAME=USER@HOST:PORT");
    let (name, rest) = s.split_once('=').ok_or_else(bad)?;
    let (user, hostport) = rest.split_once('@').ok_or_else(bad)?;
    let (host, port) = hostport.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 = port.parse().map_err(|_| bad())?;
    if name.is_empty() || user.is_empty() || host.is_empty() || port == 0 {
        return Err(bad());
    }
    let target = Target {
        name: name.to_owned(),
        host: host.to_owned(),
        port,
    };
    Ok((user.to_owned(), target))
}

async fn until_stdin_ends_or_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    // A plain thread: nothing waits for it at exit, as a blocking task
    // of the runtime would be.
    let (ended, stdin_ended) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        use std::io::Read as _;
        let mut buf = [0u8; 256];
        let mut input = std::io::stdin();
        while matches!(input.read(&mut buf), Ok(n) if n > 0) {}
        let _ = ended.send(());
    });
    let term = async {
        match term.as_mut() {
            Some(s) => drop(s.recv().await),
            None => std::future::pending().await,
        }
    };
    let int = async {
        match int.as_mut() {
            Some(s) => drop(s.recv().await),
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = stdin_ended => {}
        _ = term => {}
        _ = int => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_arguments() {
        let (u, t) = parse_upstream("prod=deploy@10.0.0.5:22").unwrap();
        assert_eq!(
            (u.as_str(), t.name.as_str(), t.host.as_str(), t.port),
            ("deploy", "prod", "10.0.0.5", 22)
        );
        let (_, t) = parse_upstream("v6=u@[fd00::5]:2222").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("fd00::5", 2222));
        for bad in [
            "prod",
            "prod=host",
            "p=h:22",
            "=u@h:22",
            "p=@h:22",
            "p=u@:22",
            "p=u@h:0",
            "p=u@h:99999",
            "p=u@h:x",
        ] {
            assert!(parse_upstream(bad).is_err(), "{bad}");
        }
    }
}
