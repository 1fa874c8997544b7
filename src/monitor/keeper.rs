//! The HTTP socket keeper (issue 12.1): the monitor binds HTTP_PORT on
//! `0.0.0.0` and `[::]` (IPv6-only, so the two families are two sockets;
//! with the egress gate, each boot-time address instead) and keeps the
//! listening sockets for the container's life. The
//! listener, `bastion-cgi`, gets them as descriptors 3, 4, ... and the
//! credentials on a pipe, drops to the session user, and is started again
//! whenever it exits. A session can kill the listener, but never bind the
//! port (it is always taken, by root) and never see a token.

use super::Shared;
use crate::cgi::Credentials;
use std::io::Write as _;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Pending connections the kernel keeps while the listener restarts.
const BACKLOG: i32 = 1024;
/// A listener that ran this long is restarted at once when it exits.
const STABLE: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The listening sockets, passed to the listener as descriptors 3, 4, ...
pub(crate) struct Sockets {
    fds: Vec<OwnedFd>,
}

/// Binds both wildcards on `port`, or with `only` (the egress gate, SPEC
/// 14: the addresses the container had at boot) each of those addresses,
/// so nothing of the bastion listens on a session network joined later.
/// With the wildcards, IPv4 must succeed; IPv6 may be absent from the
/// kernel or the container (then no one can bind it either).
pub(crate) fn bind(
    port: u16,
    only: Option<&[std::net::IpAddr]>,
) -> Result<(Sockets, Option<String>), String> {
    let high = |l: TcpListener| {
        crate::sys::fd::dup_high(&l).map_err(|e| format!("cannot keep the HTTP socket: {e}"))
    };
    if let Some(addrs) = only {
        let mut fds = Vec::with_capacity(addrs.len());
        for &ip in addrs {
            let at = std::net::SocketAddr::new(ip, port);
            let l = TcpListener::bind(at).map_err(|e| format!("cannot listen on {at}: {e}"))?;
            fds.push(high(l)?);
        }
        if fds.is_empty() {
            return Err(format!("no address to listen on for port {port}"));
        }
        return Ok((Sockets { fds }, None));
    }
    let v4 = TcpListener::bind(("0.0.0.0", port))
        .map_err(|e| format!("cannot listen on 0.0.0.0:{port}: {e}"))?;
    let (v6, note) = match crate::sys::socket::listen_v6only(port, BACKLOG) {
        Ok(l) => (Some(l), None),
        Err(e) => (
            None,
            Some(format!(
                "no IPv6 listener on [::]:{port} ({e}): HTTP is served on IPv4 only"
            )),
        ),
    };
    let mut fds = vec![high(v4)?];
    if let Some(v6) = v6 {
        fds.push(high(v6)?);
    }
    Ok((Sockets { fds }, note))
}

pub(crate) struct Keeper {
    pub(crate) cgi: PathBuf,
    pub(crate) runtime: PathBuf,
    pub(crate) sockets: Sockets,
    pub(crate) creds: Credentials,
    /// `LOG_FORMAT`, for the listener's access lines.
    pub(crate) format: crate::audit::Format,
}

impl Keeper {
    fn spawn(&self) -> std::io::Result<tokio::process::Child> {
        let mut cmd = std::process::Command::new(&self.cgi);
        cmd.env_clear()
            .env("PATH", crate::config::SAFE_PATH)
            .arg("--runtime")
            .arg(&self.runtime)
            .arg("--credentials-stdin")
            .arg("--log-format")
            .arg(self.format.name())
            .stdin(Stdio::piped());
        let mut fds = Vec::with_capacity(self.sockets.fds.len());
        for (fd, n) in self.sockets.fds.iter().zip(3..) {
            cmd.arg("--listen-fd").arg(n.to_string());
            fds.push((fd.as_raw_fd(), n));
        }
        crate::sys::fd::pass_fds(&mut cmd, fds)?;
        let mut child = tokio::process::Command::from(cmd).spawn()?;
        let written = match child.stdin.take() {
            Some(pipe) => {
                let mut pipe = pipe.into_owned_fd().map(std::fs::File::from)?;
                pipe.write_all(&self.creds.to_wire())
            }
            None => Err(std::io::Error::other("no pipe to the listener")),
        };
        if let Err(e) = written {
            let _ = child.start_kill();
            return Err(e);
        }
        Ok(child)
    }

    /// Runs the listener until `stop` turns true, starting it again each
    /// time it exits (at once after a stable run, with a growing delay when
    /// it keeps failing).
    pub(crate) async fn run(self, shared: Shared, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        let mut first = true;
        loop {
            let started = Instant::now();
            let mut child = match self.spawn() {
                Ok(c) => c,
                Err(e) => {
                    shared.note(&format!(
                        "cannot start the HTTP listener {}: {e}",
                        self.cgi.display()
                    ));
                    if wait_or_stop(&mut stop, backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            let pid = child.id().unwrap_or(0) as i32;
            shared.state.lock().unwrap().listener = super::procs::key(pid);
            if !first {
                shared.state.lock().unwrap().metrics.listener_restarts += 1;
            }
            first = false;
            let status = tokio::select! {
                s = child.wait() => s,
                _ = stop.changed() => {
                    stop_listener(&mut child, pid).await;
                    return;
                }
            };
            shared.state.lock().unwrap().listener = None;
            if *stop.borrow() {
                return;
            }
            let how = match status {
                Ok(s) => exit_text(s),
                Err(e) => e.to_string(),
            };
            if started.elapsed() >= STABLE {
                backoff = Duration::from_millis(100);
            }
            shared.note(&format!(
                "the HTTP listener (pid {pid}) exited ({how}); starting it again in {} ms",
                backoff.as_millis()
            ));
            if wait_or_stop(&mut stop, backoff).await {
                return;
            }
            if started.elapsed() < STABLE {
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// SIGTERM (the listener kills its commands and exits), then SIGKILL.
async fn stop_listener(child: &mut tokio::process::Child, pid: i32) {
    if pid > 1 {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(Duration::from_secs(6), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

/// Sleeps `d`; true when told to stop meanwhile.
async fn wait_or_stop(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

fn exit_text(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (_, Some(n)) => format!("signal {n}"),
        _ => "unknown status".into(),
    }
}
