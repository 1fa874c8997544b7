//! The e2e harness: the engine and image checks, a per-test network,
//! containers removed on drop (their logs printed first when the test
//! failed), and ssh/curl clients aimed at the published ports.

use crate::harness::{describe, output, TempDir};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a container may take to boot before the test gives up.
const BOOT: Duration = Duration::from_secs(60);

/// The image under test: `BASTION_TEST_IMAGE`, else `docker-bastion:test`.
pub fn image() -> String {
    std::env::var("BASTION_TEST_IMAGE").unwrap_or_else(|_| "docker-bastion:test".into())
}

/// Runs `docker ARGS`, panicking with the whole exchange unless it succeeds.
pub fn docker(args: &[&str]) -> String {
    let mut c = Command::new("docker");
    c.args(args);
    let out = output(&mut c);
    if !out.status.success() {
        panic!("docker failed\n{}", describe(&c, &out));
    }
    String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
}

/// `docker ARGS` whatever its outcome.
pub fn docker_output(args: &[&str]) -> Output {
    output(Command::new("docker").args(args))
}

/// A unique, docker-safe name for this test process.
pub fn unique(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "bastion-e2e-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        tag
    )
}

/// Fails the test with what to do unless a Docker engine answers and the
/// test image exists and carries the release binaries of this tree.
pub fn require() -> String {
    let image = image();
    let info = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdin(Stdio::null())
        .output();
    match info {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "no Docker engine answers (`docker info`: {}): start one, e.g. with tests/setup-host",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!("the docker client cannot run ({e}): install it with tests/setup-host"),
    }
    let label = docker_output(&[
        "image",
        "inspect",
        "--format",
        "{{index .Config.Labels \"docker-bastion.test.binaries\"}}",
        &image,
    ]);
    if !label.status.success() {
        panic!(
            "the test image {image} does not exist: run `cargo build --release && tests/e2e/build-image` (tests/run does both)"
        );
    }
    let label = String::from_utf8_lossy(&label.stdout).trim().to_owned();
    if let Some(sums) = release_sums() {
        if std::env::var_os("BASTION_TEST_IMAGE").is_none() && sums != label {
            panic!(
                "the test image {image} carries other binaries than {}: run tests/e2e/build-image",
                release_dir().display()
            );
        }
    }
    image
}

/// Where `cargo build --release` puts the binaries of this tree.
fn release_dir() -> PathBuf {
    let debug = PathBuf::from(env!("CARGO_BIN_EXE_bastion-entrypoint"));
    debug.parent().unwrap().parent().unwrap().join("release")
}

/// The digest build-image stamps on the image, over the release binaries.
fn release_sums() -> Option<String> {
    let dir = release_dir();
    // Cargo.toml's `[[bin]]` names, sorted, as build-image lists them.
    let binaries = crate::image::cargo_bins();
    if !binaries.iter().all(|b| dir.join(b).is_file()) {
        return None;
    }
    let out = output(
        Command::new("sh")
            .current_dir(&dir)
            .arg("-c")
            .arg("sha256sum \"$@\" | sha256sum | cut -c1-64")
            .arg("sh")
            .args(&binaries),
    );
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A bridge network of its own for one test, removed on drop (declare it
/// before the containers on it, so it is dropped after them).
pub struct Network {
    pub name: String,
}

impl Network {
    pub fn new(tag: &str) -> Network {
        let name = unique(tag);
        docker(&[
            "network",
            "create",
            "--label",
            "docker-bastion.e2e=1",
            &name,
        ]);
        Network { name }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = docker_output(&["network", "rm", &self.name]);
    }
}

/// A container, force-removed with its anonymous volumes on drop. When the
/// test failed, its logs go to stderr first.
pub struct Container {
    pub name: String,
}

impl Container {
    /// `docker run -d` on `net` with `args` (options, then image and command).
    pub fn run(net: &Network, tag: &str, args: &[&str]) -> Container {
        let name = unique(tag);
        let mut all = vec![
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            &net.name,
            "--label",
            "docker-bastion.e2e=1",
        ];
        all.extend_from_slice(args);
        docker(&all);
        Container { name }
    }

    /// A plain sibling from the test image: `sleep`, with sh, cat and
    /// coreutils, for the bastion to `docker exec` into.
    pub fn sibling(net: &Network, image: &str) -> Container {
        Container::run(
            net,
            "sibling",
            &["--entrypoint", "/bin/sleep", image, "infinity"],
        )
    }

    /// The host port published for `port`/tcp (always on 127.0.0.1).
    pub fn port(&self, port: u16) -> u16 {
        let out = docker(&["port", &self.name, &format!("{port}/tcp")]);
        let line = out.lines().next().unwrap_or_default();
        let (host, p) = line.rsplit_once(':').expect("HOST:PORT");
        assert_eq!(host, "127.0.0.1", "published beyond loopback: {out}");
        p.parse().unwrap()
    }

    /// stdout and stderr of the container, merged.
    pub fn logs(&self) -> String {
        let out = docker_output(&["logs", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    pub fn inspect(&self, format: &str) -> String {
        docker(&["inspect", "--format", format, &self.name])
    }

    pub fn running(&self) -> bool {
        self.inspect("{{.State.Running}}") == "true"
    }

    /// `docker exec` in the container, whatever the outcome.
    pub fn exec(&self, cmd: &[&str]) -> Output {
        let mut all = vec!["exec", &self.name];
        all.extend_from_slice(cmd);
        docker_output(&all)
    }

    /// stdout of a `docker exec` that must succeed.
    pub fn exec_ok(&self, cmd: &[&str]) -> String {
        let mut all = vec!["exec", self.name.as_str()];
        all.extend_from_slice(cmd);
        docker(&all)
    }

    /// Waits until sshd answers on the published SSH port with its banner.
    pub fn wait_ssh(&self) -> u16 {
        let port = self.port(22);
        let end = Instant::now() + BOOT;
        loop {
            if banner(port).is_some() {
                return port;
            }
            if !self.running() || Instant::now() > end {
                panic!(
                    "sshd of {} did not answer (running: {})\n--- logs ---\n{}",
                    self.name,
                    self.running(),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the HTTP listener answers `/healthz` with 200.
    pub fn wait_http(&self) -> u16 {
        let port = self.port(8080);
        let end = Instant::now() + BOOT;
        loop {
            let r = curl(port, "/healthz", &[]);
            if r.status == 200 {
                return port;
            }
            if !self.running() || Instant::now() > end {
                panic!(
                    "the HTTP listener of {} did not answer (last: {r:?})\n--- logs ---\n{}",
                    self.name,
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the container to exit; its exit code.
    pub fn wait_exit(&self) -> i32 {
        let end = Instant::now() + BOOT;
        while self.running() {
            assert!(
                Instant::now() < end,
                "{} is still running\n{}",
                self.name,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.inspect("{{.State.ExitCode}}").parse().unwrap()
    }

    /// Processes of the container, read from /proc.
    pub fn processes(&self) -> Vec<Proc> {
        let out = self.exec_ok(&[
            "sh",
            "-c",
            "for d in /proc/[0-9]*; do s=$(cat $d/stat 2>/dev/null) || continue; \
             u=$(sed -n 's/^Uid:[[:space:]]*\\([0-9]*\\).*/\\1/p' $d/status 2>/dev/null); \
             echo \"$u $s\"; done",
        ]);
        out.lines().filter_map(Proc::parse).collect()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- docker logs {} ---\n{}", self.name, self.logs());
        }
        let _ = docker_output(&["rm", "-f", "-v", &self.name]);
    }
}

/// One line of /proc/PID/stat with the owner's uid.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    /// Process group: `tini -g` signals the whole group of its child.
    pub pgrp: u32,
    pub state: char,
    pub comm: String,
    pub uid: u32,
}

impl Proc {
    fn parse(line: &str) -> Option<Proc> {
        let (uid, stat) = line.split_once(' ')?;
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        let mut rest = stat[close + 1..].split_whitespace();
        Some(Proc {
            pid: stat[..open].trim().parse().ok()?,
            comm: stat[open + 1..close].to_owned(),
            state: rest.next()?.chars().next()?,
            ppid: rest.next()?.parse().ok()?,
            pgrp: rest.next()?.parse().ok()?,
            uid: uid.parse().ok()?,
        })
    }
}

/// The SSH banner on 127.0.0.1:`port`, if sshd answers.
pub fn banner(port: u16) -> Option<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    text.starts_with("SSH-").then_some(text)
}

/// A client key pair in `dir`: (private key path, public key line).
pub fn client_key(dir: &TempDir, name: &str) -> (PathBuf, String) {
    let p = dir.join(format!("{name}-key"));
    // The comment does not carry the name: logs must name the identity
    // from the users.d file name alone.
    let line = crate::harness::keygen(&p, "e2e-client");
    (p, line)
}

/// `ssh` to 127.0.0.1:`port` as the session user; `tty` asks for a forced
/// terminal (`-tt`). `request` is the remote command (may be empty).
/// Bounded by `timeout` so a hung session fails the test instead of
/// hanging it.
pub fn ssh(port: u16, key: &Path, tty: bool, request: &[&str], stdin: &[u8]) -> Output {
    let mut c = Command::new("timeout");
    c.args(["60", "ssh", "-F", "/dev/null"])
        .arg(if tty { "-tt" } else { "-T" })
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
        .args(["-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10"])
        .arg("-i")
        .arg(key)
        .args(["-p", &port.to_string()])
        .arg(format!("{}@127.0.0.1", crate::harness::SESSION_USER))
        .args(request)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("ssh runs");
    let mut sin = child.stdin.take().unwrap();
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = sin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    out
}

/// What an HTTP request got back.
#[derive(Debug)]
pub struct Reply {
    /// 0 when no response arrived.
    pub status: u16,
    pub headers: String,
    pub body: String,
    /// curl's own exit code: 0 for a complete response, 18 when the body
    /// ended without its terminating chunk.
    pub curl: i32,
}

/// `curl` to http://127.0.0.1:`port``path` with extra `args`.
pub fn curl(port: u16, path: &str, args: &[&str]) -> Reply {
    let tmp = TempDir::new("curl");
    let body = tmp.join("body");
    let headers = tmp.join("headers");
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "60", "-o"])
        .arg(&body)
        .arg("-D")
        .arg(&headers)
        .args(["-w", "%{http_code}"])
        .args(args)
        .arg(format!("http://127.0.0.1:{port}{path}"));
    let out = output(&mut c);
    Reply {
        status: String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0),
        headers: std::fs::read_to_string(&headers).unwrap_or_default(),
        body: std::fs::read_to_string(&body).unwrap_or_default(),
        curl: out.status.code().unwrap_or(-1),
    }
}

/// Checks an ssh/curl-like outcome and shows everything when it is wrong.
pub fn show(out: &Output) -> String {
    format!(
        "status: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Polls `f` for up to `timeout`; its last answer.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    crate::harness::wait_until(timeout, &mut f)
}

/// The host keys sshd presents on `port`, sorted.
pub fn host_keys(port: u16) -> Vec<String> {
    let mut c = Command::new("ssh-keyscan");
    c.args(["-T", "10", "-p", &port.to_string(), "127.0.0.1"]);
    let out = output(&mut c);
    let mut keys: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' ').map(|(_, k)| k.to_owned()))
        .collect();
    keys.sort();
    assert!(
        !keys.is_empty(),
        "no host key on port {port}\n{}",
        show(&out)
    );
    keys
}
