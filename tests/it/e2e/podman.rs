//! Session containers on Podman (SPEC 12): the bastion itself runs in
//! rootful Podman with Podman's API socket (`podman system service`, started
//! by tests/setup-host) mounted where the docker CLI looks for its engine,
//! so the docker CLI drives Podman through its Docker-compatible API. The
//! images are copied from Docker's storage into Podman's (same image IDs).

use super::docker::{client_key, docker, require, show, ssh};
use super::session::{assert_no_session_left, dev_image, field, text, tools_image, PROBE};
use crate::harness::{describe, output, TempDir};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SOCKET: &str = "/run/podman/podman.sock";

fn podman_output(args: &[&str]) -> std::process::Output {
    output(Command::new("podman").args(args))
}

fn podman(args: &[&str]) -> String {
    let mut c = Command::new("podman");
    c.args(args);
    let out = output(&mut c);
    assert!(
        out.status.success(),
        "podman failed\n{}",
        describe(&c, &out)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
}

/// Fails with what to run unless Podman's API service answers.
fn require_podman() {
    let ok = Path::new(SOCKET).exists()
        && output(
            Command::new("docker")
                .env("DOCKER_HOST", format!("unix://{SOCKET}"))
                .args(["version", "--format", "{{.Server.Version}}"]),
        )
        .status
        .success();
    assert!(
        ok,
        "Podman's API service does not answer on {SOCKET}: run tests/setup-host"
    );
}

/// `image` from Docker's storage in Podman's, as `localhost/<image>`.
fn in_podman(image: &str) -> String {
    static COPY: Mutex<()> = Mutex::new(());
    let _one = COPY.lock().unwrap_or_else(|e| e.into_inner());
    let id = docker(&["image", "inspect", "--format", "{{.Id}}", image]);
    let name = format!("localhost/{image}");
    let have = podman_output(&["image", "inspect", "--format", "{{.Id}}", &name]);
    if !have.status.success() || !id.ends_with(String::from_utf8_lossy(&have.stdout).trim()) {
        let out = output(Command::new("sh").args([
            "-c",
            "docker save \"$1\" | podman load -q",
            "sh",
            image,
        ]));
        assert!(
            out.status.success(),
            "copying {image} to Podman\n{}",
            show(&out)
        );
    }
    name
}

struct PodmanBastion {
    _tmp: TempDir,
    key: PathBuf,
    name: String,
    net: String,
    port: u16,
}

impl Drop for PodmanBastion {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = podman_output(&["logs", &self.name]);
            eprintln!(
                "--- podman logs {} ---\n{}{}",
                self.name,
                text(&logs.stdout),
                text(&logs.stderr)
            );
        }
        let _ = podman_output(&["rm", "-f", &self.name]);
        let _ = podman_output(&["network", "rm", "-f", &self.net]);
    }
}

impl PodmanBastion {
    fn start(tag: &str, env: &[&str]) -> PodmanBastion {
        require_podman();
        let image = in_podman(&require());
        let tmp = TempDir::new("e2e-podman");
        let (key, line) = client_key(&tmp, "alice");
        tmp.write("users.d/alice.pub", &line);
        let name = super::docker::unique(tag);
        let net = format!("{name}-net");
        podman(&["network", "create", "--label", "docker-bastion.e2e=1", &net]);
        let users = format!("{}:/etc/bastion/users.d:ro", tmp.join("users.d").display());
        let socket = format!("{SOCKET}:/var/run/docker.sock");
        let mut args = vec![
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            &net,
            "--label",
            "docker-bastion.e2e=1",
            "-p",
            "127.0.0.1::22",
            "-v",
            &socket,
            "-v",
            &users,
        ];
        for e in env {
            args.extend(["-e", e]);
        }
        args.push(&image);
        podman(&args);
        let mut b = PodmanBastion {
            _tmp: tmp,
            key,
            name: name.clone(),
            net: net.clone(),
            port: 0,
        };
        let port = podman(&["port", &b.name, "22/tcp"]);
        let (host, p) = port
            .lines()
            .next()
            .unwrap_or_default()
            .rsplit_once(':')
            .expect("HOST:PORT");
        assert_eq!(host, "127.0.0.1", "published beyond loopback: {port}");
        b.port = p.parse().unwrap();
        let end = Instant::now() + Duration::from_secs(90);
        while super::docker::banner(b.port).is_none() {
            assert!(Instant::now() < end, "the bastion in Podman did not answer");
            std::thread::sleep(Duration::from_millis(200));
        }
        b
    }

    fn sessions(&self) -> Vec<String> {
        let id = podman(&["inspect", "--format", "{{.Id}}", &self.name]);
        podman(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=io.docker-bastion.instance={id}"),
            "--format",
            "{{.Names}}",
        ])
        .lines()
        .map(str::to_owned)
        .collect()
    }
}

#[test]
fn podman_sessions_get_their_own_hardened_containers() {
    let image = require();
    let dev = in_podman(&dev_image(&image));
    let b = PodmanBastion::start(
        "podman",
        &[
            &format!("SESSION_IMAGE={dev}"),
            "SESSION_PULL=never",
            "SESSION_MEMORY=96m",
            "SESSION_PIDS=77",
            "SESSION_ENV=GREETING=hello world",
        ],
    );
    let first = ssh(b.port, &b.key, false, &[], PROBE.as_bytes());
    let second = ssh(b.port, &b.key, false, &[], PROBE.as_bytes());
    for out in [&first, &second] {
        let o = text(&out.stdout);
        assert_eq!(out.status.code(), Some(3), "{}", show(out));
        assert_eq!(field(&o, "id"), "1500", "{}", show(out));
        assert_eq!(field(&o, "cap"), "0000000000000000", "{}", show(out));
        assert_eq!(field(&o, "nnp"), "1", "{}", show(out));
        assert_eq!(field(&o, "net"), "lo", "{}", show(out));
        assert_eq!(field(&o, "root"), "read-only", "{}", show(out));
        assert_eq!(field(&o, "home"), "writable", "{}", show(out));
        assert_eq!(field(&o, "left"), "none", "{}", show(out));
        assert_eq!(field(&o, "mem"), (96u64 << 20).to_string(), "{}", show(out));
        assert_eq!(field(&o, "pids"), "77", "{}", show(out));
        assert_eq!(field(&o, "greeting"), "hello world", "{}", show(out));
    }
    assert_ne!(
        field(&text(&first.stdout), "host"),
        field(&text(&second.stdout), "host")
    );
    assert_no_session_left(|| b.sessions());
}

#[test]
fn podman_broker_runs_the_literal_argv_with_its_status_and_tty() {
    let image = require();
    let tools = in_podman(&tools_image(&image));
    let b = PodmanBastion::start(
        "podmanbroker",
        &[
            &format!("SESSION_IMAGE={tools}"),
            "SESSION_PULL=never",
            "ALLOWED_COMMANDS=echo .*\nfalse\ntty",
        ],
    );
    let out = ssh(b.port, &b.key, false, &["echo a;b $(id) '*'"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(text(&out.stdout), "a;b $(id) '*'\n", "{}", show(&out));
    let out = ssh(b.port, &b.key, false, &["false"], b"");
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let out = ssh(b.port, &b.key, true, &["tty"], b"");
    assert!(text(&out.stdout).contains("/dev/pts/"), "{}", show(&out));
    assert_no_session_left(|| b.sessions());
}
