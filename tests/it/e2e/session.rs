//! Session containers (SPEC 12) on the real engine: every SSH or HTTP
//! session in a fresh, hardened container of `SESSION_IMAGE`, removed when
//! the session ends; the boot checks; the pinned image ID; `SESSION_MAX`
//! and `SESSION_TIMEOUT`; containers of an earlier run removed at boot.
//! Session images are built here from the test image (no registry).

use super::docker::{
    client_key, curl, docker, docker_output, eventually, require, show, ssh, Container, Network,
};
use crate::harness::TempDir;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

const SOCKET: &str = "/var/run/docker.sock:/var/run/docker.sock";

/// A session image built from the test image with `dockerfile_tail` after
/// `FROM`, tagged by its content, built once.
pub fn session_image(base: &str, tag: &str, dockerfile_tail: &str) -> String {
    static BUILD: Mutex<()> = Mutex::new(());
    let _one = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let base_id = docker(&["image", "inspect", "--format", "{{.Id}}", base]);
    let dockerfile = format!("FROM {base_id}\n{dockerfile_tail}\n");
    let sum = {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&dockerfile, &mut h);
        std::hash::Hasher::finish(&h)
    };
    let name = format!("bastion-e2e-session-{tag}:{sum:016x}");
    if docker_output(&["image", "inspect", &name]).status.success() {
        return name;
    }
    let mut c = Command::new("docker");
    c.env("DOCKER_BUILDKIT", "0")
        .args([
            "build",
            "-q",
            "--label",
            "docker-bastion.e2e=1",
            "-t",
            &name,
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("docker build runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dockerfile.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "session image build failed\n{}",
        show(&out)
    );
    name
}

/// A user `dev` (uid 1500) with a home, the image's own command an
/// interactive bash, and an entrypoint that the broker must not reach.
pub(super) fn dev_image(base: &str) -> String {
    session_image(
        base,
        "dev",
        "RUN useradd -m -u 1500 -s /bin/bash dev && echo original > /etc/session-marker\n\
         USER dev\nWORKDIR /home/dev\nENTRYPOINT []\nCMD [\"/bin/bash\"]",
    )
}

/// A tools image whose entrypoint would re-parse its arguments with a shell.
pub(super) fn tools_image(base: &str) -> String {
    session_image(
        base,
        "tools",
        "ENTRYPOINT [\"/bin/sh\", \"-c\", \"echo ENTRYPOINT-RAN: $*\", \"sh\"]\nCMD []",
    )
}

struct Bastion {
    _tmp: TempDir,
    key: PathBuf,
    container: Container,
    port: u16,
}

/// A bastion with the docker socket, alice's key and `env`.
fn bastion(net: &Network, env: &[&str], more: &[&str]) -> Bastion {
    let image = require();
    let tmp = TempDir::new("e2e-session");
    let (key, line) = client_key(&tmp, "alice");
    tmp.write("users.d/alice.pub", &line);
    let users = format!("{}:/etc/bastion/users.d:ro", tmp.join("users.d").display());
    let mut args = vec!["-p", "127.0.0.1::22", "-v", SOCKET, "-v", &users];
    for e in env {
        args.push("-e");
        args.push(e);
    }
    args.extend_from_slice(more);
    args.push(&image);
    let container = Container::run(net, "bastion", &args);
    let port = container.wait_ssh();
    Bastion {
        _tmp: tmp,
        key,
        container,
        port,
    }
}

impl Bastion {
    fn id(&self) -> String {
        self.container.inspect("{{.Id}}")
    }

    /// Session containers of this bastion, running or not.
    fn sessions(&self) -> Vec<String> {
        let out = docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=io.docker-bastion.instance={}", self.id()),
            "--format",
            "{{.Names}}",
        ]);
        out.lines().map(str::to_owned).collect()
    }
}

pub(super) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The value after `key=` on a line of `out`.
pub(super) fn field(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

pub(super) const PROBE: &str = "echo id=$(id -u); echo host=$(hostname); echo session=$BASTION_SESSION_ID; \
    echo identity=$BASTION_IDENTITY; echo greeting=$GREETING; \
    echo cap=$(sed -n 's/^CapEff:[[:space:]]*//p' /proc/self/status); \
    echo nnp=$(sed -n 's/^NoNewPrivs:[[:space:]]*//p' /proc/self/status); \
    echo net=$(ls /sys/class/net | tr '\\n' ' '); \
    if touch /root-write 2>/dev/null; then echo root=writable; else echo root=read-only; fi; \
    echo home=$(touch ~/h && echo writable); \
    echo left=$(cat ~/left-behind 2>/dev/null || echo none); echo mine > ~/left-behind; \
    echo mem=$(cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes); \
    echo pids=$(cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max); \
    exit 3\n";

#[test]
fn each_ssh_session_gets_its_own_hardened_container() {
    let image = require();
    let dev = dev_image(&image);
    let net = Network::new("sess");
    let b = bastion(
        &net,
        &[
            &format!("SESSION_IMAGE={dev}"),
            "SESSION_PULL=never",
            "SESSION_MEMORY=96m",
            "SESSION_PIDS=77",
            "SESSION_ENV=GREETING=hello world",
        ],
        &[],
    );
    let first = ssh(b.port, &b.key, false, &[], PROBE.as_bytes());
    let second = ssh(b.port, &b.key, false, &[], PROBE.as_bytes());
    for out in [&first, &second] {
        let o = text(&out.stdout);
        // The image's own command (bash), as the image's user.
        assert_eq!(out.status.code(), Some(3), "{}", show(out));
        assert_eq!(field(&o, "id"), "1500", "{}", show(out));
        assert_eq!(field(&o, "cap"), "0000000000000000", "{}", show(out));
        assert_eq!(field(&o, "nnp"), "1", "{}", show(out));
        assert_eq!(field(&o, "net"), "lo", "network none: {}", show(out));
        assert_eq!(field(&o, "root"), "read-only", "{}", show(out));
        assert_eq!(field(&o, "home"), "writable", "{}", show(out));
        assert_eq!(
            field(&o, "left"),
            "none",
            "a file of an earlier session: {}",
            show(out)
        );
        assert_eq!(field(&o, "mem"), (96u64 << 20).to_string(), "{}", show(out));
        assert_eq!(field(&o, "pids"), "77", "{}", show(out));
        assert_eq!(field(&o, "greeting"), "hello world", "{}", show(out));
        let session = field(&o, "session");
        assert!(
            session.len() == 16 && session.bytes().all(|c| c.is_ascii_hexdigit()),
            "{}",
            show(out)
        );
        assert!(!field(&o, "identity").is_empty(), "{}", show(out));
    }
    let (a, c) = (text(&first.stdout), text(&second.stdout));
    assert_ne!(field(&a, "host"), field(&c, "host"));
    assert_ne!(field(&a, "session"), field(&c, "session"));
    assert_no_session_left(|| b.sessions());
}

#[test]
fn broker_runs_the_literal_argv_as_the_entrypoint_with_its_status() {
    let image = require();
    let tools = tools_image(&image);
    let net = Network::new("sessbroker");
    let b = bastion(
        &net,
        &[
            &format!("SESSION_IMAGE={tools}"),
            "SESSION_PULL=never",
            "ALLOWED_COMMANDS=echo .*\nfalse\ntty\nmissing-program\n[ ]*--privileged .*",
        ],
        &[],
    );
    let out = ssh(b.port, &b.key, false, &["echo a;b $(id) '*' `x` &&"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        text(&out.stdout),
        "a;b $(id) '*' `x` &&\n",
        "{}",
        show(&out)
    );
    assert!(
        !text(&out.stdout).contains("ENTRYPOINT-RAN"),
        "{}",
        show(&out)
    );
    assert!(
        text(&out.stderr).contains("[broker] ALLOW"),
        "{}",
        show(&out)
    );

    let out = ssh(b.port, &b.key, false, &["false"], b"");
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let out = ssh(b.port, &b.key, false, &["missing-program"], b"");
    assert_eq!(out.status.code(), Some(127), "{}", show(&out));
    // A request spelled like engine options is only ever the program name.
    let out = ssh(
        b.port,
        &b.key,
        false,
        // The leading blank keeps ssh itself from reading it as its option.
        &[" --privileged -v /:/host cat /host/etc/shadow"],
        b"",
    );
    assert_eq!(out.status.code(), Some(127), "{}", show(&out));
    assert!(!text(&out.stdout).contains("root:"), "{}", show(&out));
    let out = ssh(b.port, &b.key, false, &["rm -rf /"], b"");
    assert_eq!(out.status.code(), Some(126), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("[broker] DENY"),
        "{}",
        show(&out)
    );

    // A terminal when the client asks for one, none otherwise.
    let out = ssh(b.port, &b.key, true, &["tty"], b"");
    assert!(text(&out.stdout).contains("/dev/pts/"), "{}", show(&out));
    let out = ssh(b.port, &b.key, false, &["tty"], b"");
    assert!(text(&out.stdout).contains("not a tty"), "{}", show(&out));
    assert_no_session_left(|| b.sessions());
}

#[test]
fn http_requests_run_in_session_containers() {
    let image = require();
    let dev = dev_image(&image);
    let net = Network::new("sesshttp");
    let b = bastion(
        &net,
        &[
            &format!("SESSION_IMAGE={dev}"),
            "SESSION_PULL=never",
            "HTTP_TOKEN=s3cret-token-for-e2e",
            "FORCE_COMMAND=echo host=$(hostname); echo identity=$BASTION_IDENTITY",
        ],
        &["-p", "127.0.0.1::8080"],
    );
    let port = b.container.wait_http();
    let auth = ["-H", "Authorization: Bearer s3cret-token-for-e2e"];
    let one = curl(port, "/cgi-bin/run", &auth);
    let two = curl(port, "/cgi-bin/run", &auth);
    assert_eq!((one.status, one.curl), (200, 0), "{one:?}");
    assert_eq!((two.status, two.curl), (200, 0), "{two:?}");
    assert!(field(&one.body, "host").starts_with("session-"), "{one:?}");
    assert_ne!(field(&one.body, "host"), field(&two.body, "host"));
    assert_no_session_left(|| b.sessions());
}

#[test]
fn the_image_is_pinned_at_boot_and_retagging_changes_nothing() {
    let image = require();
    let dev = dev_image(&image);
    let other = session_image(
        &image,
        "other",
        "RUN echo replaced > /etc/session-marker\nENTRYPOINT []\nCMD [\"/bin/bash\"]",
    );
    let net = Network::new("sesspin");
    let tag = format!("bastion-e2e-session-pin:{}", std::process::id());
    docker(&["tag", &dev, &tag]);
    struct Untag(String);
    impl Drop for Untag {
        fn drop(&mut self) {
            let _ = docker_output(&["rmi", &self.0]);
        }
    }
    let _untag = Untag(tag.clone());
    let b = bastion(
        &net,
        &[&format!("SESSION_IMAGE={tag}"), "SESSION_PULL=never"],
        &[],
    );
    let before = ssh(b.port, &b.key, false, &[], b"cat /etc/session-marker\n");
    assert_eq!(text(&before.stdout), "original\n", "{}", show(&before));
    docker(&["tag", &other, &tag]);
    let after = ssh(b.port, &b.key, false, &[], b"cat /etc/session-marker\n");
    assert_eq!(text(&after.stdout), "original\n", "{}", show(&after));
    let logs = b.container.logs();
    let pinned = docker(&["image", "inspect", "--format", "{{.Id}}", &dev]);
    assert!(
        logs.contains(&pinned),
        "boot log names the image id:\n{logs}"
    );
}

#[test]
fn session_max_gives_the_busy_line_and_timeout_ends_the_session() {
    let image = require();
    let dev = dev_image(&image);
    let net = Network::new("sessmax");
    let b = bastion(
        &net,
        &[
            &format!("SESSION_IMAGE={dev}"),
            "SESSION_PULL=never",
            "SESSION_MAX=1",
            "SESSION_TIMEOUT=3",
            "HTTP_TOKEN=s3cret-token-for-e2e",
        ],
        &["-p", "127.0.0.1::8080"],
    );
    let http = b.container.wait_http();
    // The first session sleeps past its time limit.
    let port = b.port;
    let key = b.key.clone();
    let long =
        std::thread::spawn(move || ssh(port, &key, false, &[], b"sleep 40; echo not-stopped\n"));
    assert!(
        eventually(Duration::from_secs(20), || b.sessions().len() == 1),
        "the first session's container never ran"
    );
    let busy = ssh(b.port, &b.key, false, &[], b"echo ran\n");
    assert_eq!(busy.status.code(), Some(0), "{}", show(&busy));
    assert_eq!(
        text(&busy.stdout),
        "busy: another run is in progress\n",
        "{}",
        show(&busy)
    );
    let r = curl(
        http,
        "/cgi-bin/run",
        &["-H", "Authorization: Bearer s3cret-token-for-e2e"],
    );
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("busy: another run is in progress"), "{r:?}");

    let long = long.join().unwrap();
    assert!(
        !text(&long.stdout).contains("not-stopped"),
        "{}",
        show(&long)
    );
    assert_ne!(long.status.code(), Some(0), "{}", show(&long));
    assert!(
        text(&long.stderr).contains("[session] time limit of 3 s reached"),
        "{}",
        show(&long)
    );
    assert_no_session_left(|| b.sessions());
    // The slot is free again.
    let again = ssh(b.port, &b.key, false, &[], b"echo ran\n");
    assert_eq!(text(&again.stdout), "ran\n", "{}", show(&again));
}

#[test]
fn a_disconnected_client_leaves_no_container() {
    let image = require();
    let dev = dev_image(&image);
    let net = Network::new("sessgone");
    let b = bastion(
        &net,
        &[&format!("SESSION_IMAGE={dev}"), "SESSION_PULL=never"],
        &[],
    );
    for tty in [false, true] {
        let mut c = Command::new("ssh");
        c.args(["-F", "/dev/null", if tty { "-tt" } else { "-T" }])
            .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args(["-o", "LogLevel=ERROR", "-i"])
            .arg(&b.key)
            .args(["-p", &b.port.to_string(), "agent@127.0.0.1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut client = c.spawn().unwrap();
        use std::io::Write;
        // trap '' HUP TERM: the session ignores polite signals; the
        // container still goes.
        let _ = client
            .stdin
            .as_mut()
            .unwrap()
            .write_all(b"trap '' HUP TERM; sleep 300\n");
        assert!(
            eventually(Duration::from_secs(20), || b.sessions().len() == 1),
            "no session container (tty {tty})"
        );
        client.kill().unwrap();
        let _ = client.wait();
        assert!(
            eventually(Duration::from_secs(20), || b.sessions().is_empty()),
            "session container left after the client vanished (tty {tty}): {:?}",
            b.sessions()
        );
    }
    // Each session ended once (its end follows the container's removal),
    // and not as a clean exit.
    let ended = |logs: &str| {
        logs.lines()
            .filter(|l| l.contains("event=session.end"))
            .map(str::to_owned)
            .collect::<Vec<String>>()
    };
    assert!(
        eventually(Duration::from_secs(10), || ended(&b.container.logs()).len()
            >= 2),
        "{}",
        b.container.logs()
    );
    let logs = b.container.logs();
    let ends = ended(&logs);
    assert_eq!(ends.len(), 2, "{logs}");
    for end in ends {
        assert!(!end.contains(" exit=0 "), "{end}");
    }
}

#[test]
fn containers_of_an_earlier_run_are_removed_at_boot() {
    let image = require();
    let dev = dev_image(&image);
    let net = Network::new("sessreap");
    let b = bastion(
        &net,
        &[&format!("SESSION_IMAGE={dev}"), "SESSION_PULL=never"],
        &[],
    );
    let leftover = format!("bastion-session-{:016x}", std::process::id() as u64 * 7919);
    let label = format!("io.docker-bastion.instance={}", b.id());
    docker(&[
        "run",
        "-d",
        "--name",
        &leftover,
        "--label",
        &label,
        "--label",
        "docker-bastion.e2e=1",
        "--network",
        "none",
        &dev,
        "sleep",
        "300",
    ]);
    struct Rm(String);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = docker_output(&["rm", "-f", &self.0]);
        }
    }
    let _rm = Rm(leftover.clone());
    // Another instance's container is not touched.
    let foreign = format!("bastion-session-{:016x}", std::process::id() as u64 * 7907);
    docker(&[
        "run",
        "-d",
        "--name",
        &foreign,
        "--label",
        "io.docker-bastion.instance=someone-else",
        "--label",
        "docker-bastion.e2e=1",
        "--network",
        "none",
        &dev,
        "sleep",
        "300",
    ]);
    let _rm2 = Rm(foreign.clone());
    docker(&["restart", "-t", "5", &b.container.name]);
    b.container.wait_ssh();
    assert!(
        eventually(Duration::from_secs(20), || !docker_output(&[
            "inspect", &leftover
        ])
        .status
        .success()),
        "the earlier run's container is still there"
    );
    assert!(docker_output(&["inspect", &foreign]).status.success());
    let logs = b.container.logs();
    assert!(
        logs.contains(&format!(
            "removed session container {leftover} left by an earlier run"
        )),
        "{logs}"
    );
}

/// Runs the bastion in the foreground; its exit code and output.
fn boot_fails(env: &[&str], with_socket: bool) -> (i32, String) {
    let image = require();
    let mut args = vec![
        "run".to_owned(),
        "--rm".into(),
        "--label".into(),
        "docker-bastion.e2e=1".into(),
    ];
    if with_socket {
        args.extend(["-v".into(), SOCKET.into()]);
    }
    for e in env {
        args.extend(["-e".into(), (*e).to_owned()]);
    }
    args.push(image);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = docker_output(&refs);
    (
        out.status.code().unwrap_or(-1),
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

fn assert_lines(logs: &str, wanted: &[&str]) {
    for w in wanted {
        assert!(
            logs.lines()
                .any(|l| l.starts_with("config error") && l.contains(w)),
            "no config error line with {w:?}:\n{logs}"
        );
    }
    assert!(!logs.contains("panicked"), "{logs}");
}

#[test]
fn session_config_errors_are_all_reported_with_78() {
    let image = require();
    let dev = dev_image(&image);
    // No engine socket: the engine does not answer; every static problem
    // is in the same report.
    let (code, logs) = boot_fails(
        &[
            &format!("SESSION_IMAGE={dev}"),
            "SESSION_RUNTIME=docker",
            "SESSION_NETWORK=host",
            "SESSION_MOUNTS=/var/run/docker.sock:/var/run/docker.sock\n/:/host:ro",
            "SESSION_MEMORY=lots",
            "SESSION_CPUS=0",
            "SESSION_PIDS=-5",
            "SESSION_ENV=GOOD=1\nnot a line\nBASTION_IDENTITY=root",
        ],
        false,
    );
    assert_eq!(code, 78, "{logs}");
    assert_lines(
        &logs,
        &[
            "SESSION_RUNTIME=\"docker\": no container engine answers",
            "SESSION_NETWORK=\"host\"",
            "SESSION_MOUNTS=\"/var/run/docker.sock:/var/run/docker.sock\"",
            "SESSION_MOUNTS=\"/:/host:ro\"",
            "SESSION_MEMORY=\"lots\"",
            "SESSION_CPUS=\"0\"",
            "SESSION_PIDS=\"-5\"",
            "SESSION_ENV=\"not a line\"",
            "SESSION_ENV=\"BASTION_IDENTITY=root\"",
        ],
    );

    // With the engine: an unknown runtime, a missing image under `never`,
    // another container's network namespace.
    let (code, logs) = boot_fails(
        &[
            "SESSION_IMAGE=bastion-e2e-session-missing:nowhere",
            "SESSION_PULL=never",
            "SESSION_RUNTIME=lxc",
            "SESSION_NETWORK=container:db",
        ],
        true,
    );
    assert_eq!(code, 78, "{logs}");
    assert_lines(
        &logs,
        &[
            "SESSION_RUNTIME=\"lxc\": is not a known runtime",
            "SESSION_IMAGE=\"bastion-e2e-session-missing:nowhere\": is not on the engine",
            "SESSION_NETWORK=\"container:db\"",
        ],
    );

    // A pinned digest the local image does not have.
    let pinned = format!("{dev}@sha256:{}", "0".repeat(64));
    let (code, logs) = boot_fails(
        &[&format!("SESSION_IMAGE={pinned}"), "SESSION_PULL=never"],
        true,
    );
    assert_eq!(code, 78, "{logs}");
    assert_lines(&logs, &["does not match its digest"]);

    // A network that does not exist.
    let (code, logs) = boot_fails(
        &[
            &format!("SESSION_IMAGE={dev}"),
            "SESSION_PULL=never",
            "SESSION_NETWORK=bastion-e2e-no-such-network",
        ],
        true,
    );
    assert_eq!(code, 78, "{logs}");
    assert_lines(
        &logs,
        &["SESSION_NETWORK=\"bastion-e2e-no-such-network\": is not a network"],
    );
}

#[test]
fn sigkilled_session_processes_leave_no_container() {
    let image = require();
    let dev = dev_image(&image);
    let net = Network::new("sesskill");
    let b = bastion(
        &net,
        &[
            &format!("SESSION_IMAGE={dev}"),
            "SESSION_PULL=never",
            "METRICS_PORT=9100",
        ],
        &["-p", "127.0.0.1::9100"],
    );
    let metrics = || {
        let m = curl(b.container.port(9100), "/metrics", &[]);
        assert_eq!(m.status, 200);
        m.body
    };
    // A session that ends by itself first: its runner removes the container.
    let out = ssh(b.port, &b.key, false, &[], b"exit 3\n");
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let port = b.port;
    let key = b.key.clone();
    let client = std::thread::spawn(move || ssh(port, &key, false, &[], b"sleep 300\n"));
    assert!(
        eventually(Duration::from_secs(20), || b.sessions().len() == 1),
        "no session container"
    );
    let name = b.sessions().remove(0);
    assert!(
        metrics().contains("bastion_session_containers_active 1"),
        "{}",
        metrics()
    );
    // The session's processes in the bastion: the wrapper and the CLI.
    let victims: Vec<String> = b
        .container
        .processes()
        .into_iter()
        .filter(|p| p.comm.starts_with("bastion-wrap") || p.comm == "docker")
        .map(|p| p.pid.to_string())
        .collect();
    assert!(victims.len() >= 2, "{:?}", b.container.processes());
    let mut kill = vec!["kill", "-KILL"];
    kill.extend(victims.iter().map(String::as_str));
    b.container.exec_ok(&kill);
    // SPEC 12: gone within 10 s of its session's processes.
    assert!(
        eventually(Duration::from_secs(10), || b.sessions().is_empty()),
        "session container outlived its killed processes: {:?}",
        b.sessions()
    );
    let _ = client.join();
    // Counted once the monitor's removal returned (just after the
    // container is gone).
    eventually(Duration::from_secs(10), || {
        metrics().contains("bastion_session_containers_total{outcome=\"reaped\"} 1")
    });
    let m = metrics();
    for want in [
        "bastion_session_containers_total{outcome=\"started\"} 1",
        "bastion_session_containers_total{outcome=\"reaped\"} 1",
        "bastion_session_containers_total{outcome=\"failed\"} 0",
        "bastion_session_containers_active 0",
        // The image's own command is SPEC 11's mode `session`.
        "bastion_sessions_total{transport=\"ssh\",mode=\"session\",outcome=\"failed\"} 1",
        "bastion_sessions_total{transport=\"ssh\",mode=\"session\",outcome=\"lost\"} 1",
    ] {
        assert!(m.contains(want), "{want} missing:\n{m}");
    }
    // The audit trail names the container of the lost session.
    let logs = b.container.logs();
    assert!(
        logs.lines().any(|l| l.contains("session.end")
            && l.contains("exit=lost")
            && l.contains(&format!("container={name}"))),
        "no session.end naming {name} as lost:\n{logs}"
    );
    assert!(
        logs.contains(&format!("removed session container {name}")),
        "{logs}"
    );
}

/// The JSON events in `logs`.
fn events(logs: &str) -> Vec<serde_json::Value> {
    logs.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Every session container is gone (removed with its session) within 20 s.
pub fn assert_no_session_left(sessions: impl Fn() -> Vec<String>) {
    assert!(
        eventually(Duration::from_secs(20), || sessions().is_empty()),
        "session containers left: {:?}",
        sessions()
    );
}

/// `bastion_sessions_total` as (transport, mode, outcome) -> count.
fn sessions_total(metrics: &str) -> std::collections::BTreeMap<(String, String, String), u64> {
    let mut out = std::collections::BTreeMap::new();
    for l in metrics.lines() {
        let Some(rest) = l.strip_prefix("bastion_sessions_total{") else {
            continue;
        };
        let (labels, n) = rest.split_once("} ").expect("a sample");
        let label = |k: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or_else(|| panic!("no {k} in {l}"))
                .to_owned()
        };
        let n: u64 = n.trim().parse().unwrap();
        if n > 0 {
            out.insert((label("transport"), label("mode"), label("outcome")), n);
        }
    }
    out
}

/// SPEC 11 for session containers: a `SESSION_MAX` refusal is a busy
/// session on both transports (event and metric), a `SESSION_TIMEOUT` stop
/// says so in its `session.end`, a command that dies of a signal ends with
/// the status the engine reports (it cannot tell a signal from `exit
/// 128+N`, see README), and the metrics agree with the events.
#[test]
fn session_container_ends_are_audited_and_agree_with_the_metrics() {
    let image = require();
    let tools = session_image(
        &image,
        "enders",
        "RUN printf '#!/bin/sh\\nkill -\"$1\" $$\\n' > /usr/local/bin/selfkill \
         && printf '#!/bin/sh\\nexit \"$1\"\\n' > /usr/local/bin/exitwith \
         && chmod 755 /usr/local/bin/selfkill /usr/local/bin/exitwith\n\
         ENTRYPOINT []\nCMD [\"/bin/bash\"]",
    );
    let net = Network::new("sessaudit");
    let b = bastion(
        &net,
        &[
            &format!("SESSION_IMAGE={tools}"),
            "SESSION_PULL=never",
            "SESSION_MAX=1",
            "SESSION_TIMEOUT=3",
            "ALLOWED_COMMANDS=selfkill [0-9]+\nexitwith [0-9]+\nsleep [0-9]+",
            "HTTP_TOKEN=s3cret-token-for-e2e",
            "METRICS_PORT=9100",
            "LOG_FORMAT=json",
        ],
        &["-p", "127.0.0.1::8080", "-p", "127.0.0.1::9100"],
    );
    let http = b.container.wait_http();
    let auth = "Authorization: Bearer s3cret-token-for-e2e";
    let request = |cmd: &str| {
        curl(
            http,
            "/cgi-bin/run",
            &["-H", auth, "-H", &format!("X-Bastion-Command: {cmd}")],
        )
    };

    // A signal death and `exit 137` look the same through the engine.
    let killed = ssh(b.port, &b.key, false, &["selfkill 9"], b"");
    assert_eq!(killed.status.code(), Some(137), "{}", show(&killed));
    let exited = ssh(b.port, &b.key, false, &["exitwith 137"], b"");
    assert_eq!(exited.status.code(), Some(137), "{}", show(&exited));
    let r = request("selfkill 15");
    assert_eq!(r.status, 200, "{r:?}");

    // One slot, held past its time limit; the next sessions are busy.
    let (port, key) = (b.port, b.key.clone());
    let long = std::thread::spawn(move || ssh(port, &key, false, &["sleep 40"], b""));
    assert!(
        eventually(Duration::from_secs(20), || b.sessions().len() == 1),
        "the long session's container never ran"
    );
    let busy = ssh(b.port, &b.key, false, &["exitwith 0"], b"");
    assert_eq!(
        (busy.status.code(), text(&busy.stdout).as_str()),
        (Some(0), "busy: another run is in progress\n"),
        "{}",
        show(&busy)
    );
    let r = request("exitwith 0");
    assert_eq!(r.status, 503, "{r:?}");
    let long = long.join().unwrap();
    assert!(
        text(&long.stderr).contains("[session] time limit of 3 s reached"),
        "{}",
        show(&long)
    );

    let ends =
        |evs: &[serde_json::Value]| evs.iter().filter(|e| e["event"] == "session.end").count();
    assert!(
        eventually(Duration::from_secs(20), || ends(&events(
            &b.container.logs()
        )) == 6),
        "{}",
        b.container.logs()
    );
    let logs = b.container.logs();
    let evs = events(&logs);
    let of = |session: &serde_json::Value, event: &str| -> Vec<serde_json::Value> {
        evs.iter()
            .filter(|e| e["session"] == *session && e["event"] == event)
            .cloned()
            .collect()
    };
    let end_of = |request: &str, transport: &str| -> serde_json::Value {
        let start = evs
            .iter()
            .find(|e| {
                e["event"] == "session.start"
                    && e["request"] == request
                    && e["transport"] == transport
            })
            .unwrap_or_else(|| panic!("no start of {request} over {transport}:\n{logs}"));
        let ends = of(&start["session"], "session.end");
        assert_eq!(ends.len(), 1, "{request}:\n{logs}");
        ends[0].clone()
    };
    for (req, transport, exit) in [
        ("selfkill 9", "ssh", "137"),
        ("exitwith 137", "ssh", "137"),
        ("selfkill 15", "http", "143"),
    ] {
        let end = end_of(req, transport);
        assert_eq!(end["exit"], exit, "{req}: {end}");
        assert!(
            end["container"]
                .as_str()
                .unwrap_or("")
                .starts_with("bastion-session-"),
            "{end}"
        );
        assert!(end.get("reason").is_none(), "{end}");
    }
    let timed_out = end_of("sleep 40", "ssh");
    assert_eq!(timed_out["reason"], "timeout", "{timed_out}");
    assert_ne!(timed_out["exit"], "0", "{timed_out}");
    for transport in ["ssh", "http"] {
        let end = end_of("exitwith 0", transport);
        assert_eq!(end["exit"], "0", "{end}");
        assert_eq!(
            of(&end["session"], "session.busy").len(),
            1,
            "{transport}:\n{logs}"
        );
        // Refused before any container existed.
        assert!(end.get("container").is_none(), "{end}");
    }

    // The metrics count what the events say.
    let mut from_events = std::collections::BTreeMap::new();
    for end in evs.iter().filter(|e| e["event"] == "session.end") {
        let start = &of(&end["session"], "session.start")[0];
        let outcome = if !of(&end["session"], "session.busy").is_empty() {
            "busy"
        } else if end["exit"] == "0" {
            "ok"
        } else {
            "failed"
        };
        *from_events
            .entry((
                end["transport"].as_str().unwrap().to_owned(),
                start["mode"].as_str().unwrap().to_owned(),
                outcome.to_owned(),
            ))
            .or_insert(0u64) += 1;
    }
    let m = curl(b.container.port(9100), "/metrics", &[]);
    assert_eq!(m.status, 200);
    assert_eq!(sessions_total(&m.body), from_events, "{}", m.body);
    assert_eq!(
        from_events.get(&("http".into(), "broker".into(), "busy".into())),
        Some(&1)
    );
    for want in [
        "bastion_session_containers_total{outcome=\"started\"} 4",
        "bastion_session_containers_active 0",
    ] {
        assert!(m.body.contains(want), "{want}:\n{}", m.body);
    }
    let tmp = TempDir::new("e2e-promtool");
    let file = tmp.write("metrics.txt", &m.body);
    let lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(file).unwrap())
        .output()
        .unwrap();
    assert!(
        lint.status.success() && lint.stdout.is_empty(),
        "{}",
        show(&lint)
    );
}
