//! The egress gate (SPEC 14) on a real engine: a bastion container opens a
//! session's gate (`bastion-gate open`, the code the monitor runs), a
//! session container on that session's internal network reaches its
//! upstream through it with `ssh prod`, and nothing else answers: not an
//! undeclared host, not the bastion's own sshd or HTTP port on the gate
//! address (no reset either), not a second session. The network is gone
//! after the session, and after a SIGKILL once reaped.

use super::docker::{client_key, docker, docker_output, require, show, unique, Container};
use crate::harness::TempDir;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

const SOCKET: &str = "/var/run/docker.sock:/var/run/docker.sock";

/// An `--internal` network of the test's own (nothing on it reaches
/// beyond the engine's host), removed on drop.
struct InternalNetwork {
    name: String,
}

impl InternalNetwork {
    fn new(tag: &str) -> InternalNetwork {
        let name = unique(tag);
        docker(&[
            "network",
            "create",
            "--internal",
            "--label",
            "docker-bastion.e2e=1",
            &name,
        ]);
        InternalNetwork { name }
    }
}

impl Drop for InternalNetwork {
    fn drop(&mut self) {
        let _ = docker_output(&["network", "rm", &self.name]);
    }
}

/// Session networks a failed test would leave behind: every member
/// disconnected, then removed, on drop (gone already is fine).
struct SessionNetworks(Vec<String>);

impl Drop for SessionNetworks {
    fn drop(&mut self) {
        for n in &self.0 {
            let members = docker_output(&[
                "network",
                "inspect",
                "--format",
                "{{range $k, $v := .Containers}}{{$k}} {{end}}",
                n,
            ]);
            for m in String::from_utf8_lossy(&members.stdout).split_whitespace() {
                let _ = docker_output(&["network", "disconnect", "--force", n, m]);
            }
            let _ = docker_output(&["network", "rm", n]);
        }
    }
}

/// `docker run -d` of the test image on `network`, with `args` before it.
fn run_on(network: &str, tag: &str, args: &[&str], image_and_cmd: &[&str]) -> Container {
    let name = unique(tag);
    let mut all = vec![
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        network,
        "--label",
        "docker-bastion.e2e=1",
    ];
    all.extend_from_slice(args);
    all.extend_from_slice(image_and_cmd);
    docker(&all);
    Container { name }
}

/// A fresh 16-hex session id.
fn session_id(n: u32) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{:08x}{:04x}{:04x}", t, std::process::id() & 0xffff, n)
}

/// A running `bastion-gate open` inside the bastion container.
struct OpenGate {
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: std::thread::JoinHandle<String>,
    network: String,
    address: String,
    port: u16,
    ssh_config: String,
}

impl OpenGate {
    fn open(bastion: &Container, session: &str, upstream: &str) -> OpenGate {
        let mut child = Command::new("docker")
            .args(["exec", "-i", &bastion.name, "bastion-gate", "open"])
            .args(["--session", session, "--identity", "alice"])
            .args(["--upstream", upstream])
            .args(["--own-port", "22", "--own-port", "8080"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("docker exec runs");
        let stdin = child.stdin.take();
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.is_empty() {
            let _ = child.wait();
            panic!("bastion-gate open failed:\n{}", stderr.join().unwrap());
        }
        let v: serde_json::Value = serde_json::from_str(&line).expect("one JSON line");
        OpenGate {
            network: v["network"].as_str().unwrap().to_owned(),
            address: v["address"].as_str().unwrap().to_owned(),
            port: v["ports"]["prod"].as_u64().unwrap() as u16,
            ssh_config: v["ssh_config"].as_str().unwrap().to_owned(),
            child,
            stdin,
            stderr,
        }
    }

    /// Ends the session: stdin closed, the gate closes; its exit status and
    /// what it logged.
    fn close(mut self) -> (Option<i32>, String) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        (status.code(), self.stderr.join().unwrap())
    }
}

/// What a connection attempt from inside `from` to `ip`:`port` sees.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Connected,
    Refused,
    /// No route or no answer: the session learns nothing.
    Unreachable,
    NoAnswer,
}

fn attempt(from: &Container, ip: &str, port: u16) -> Seen {
    let script = format!("exec 3<>/dev/tcp/{ip}/{port}");
    let out = from.exec(&["timeout", "5", "bash", "-c", &script]);
    let err = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => Seen::Connected,
        Some(124) => Seen::NoAnswer,
        _ if err.contains("Connection refused") => Seen::Refused,
        _ if err.contains("unreachable") || err.contains("No route to host") => Seen::Unreachable,
        _ => panic!("unexpected outcome to {ip}:{port}\n{}", show(&out)),
    }
}

fn silent(s: &Seen) -> bool {
    matches!(s, Seen::NoAnswer | Seen::Unreachable)
}

/// The first IPv4 address of a container on `network`.
fn ip_on(c: &Container, network: &str) -> String {
    c.inspect(&format!(
        "{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"
    ))
}

fn network_exists(name: &str) -> bool {
    docker_output(&["network", "inspect", name])
        .status
        .success()
}

/// Listening TCP sockets in a container, as `ADDR:PORT` hex of /proc/net/tcp.
fn listening(c: &Container) -> Vec<String> {
    let tcp = c.exec_ok(&["cat", "/proc/net/tcp"]);
    tcp.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(3) == Some(&"0A")).then(|| f[1].to_owned())
        })
        .collect()
}

/// Writes `contents` to `path` inside `c`, mode `mode`.
fn put(c: &Container, path: &str, contents: &[u8], mode: &str) {
    let script = format!("mkdir -p \"$(dirname {path})\" && cat > {path} && chmod {mode} {path}");
    let mut child = Command::new("docker")
        .args(["exec", "-i", &c.name, "sh", "-c", &script])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(contents).unwrap();
    assert!(
        child.wait().unwrap().success(),
        "cannot write {path} in {}",
        c.name
    );
}

/// A bastion on `egress` with the docker socket and upstreams declared,
/// its sshd listening (on its boot-time addresses only).
fn bastion(image: &str, egress: &InternalNetwork, prod: &Container) -> Container {
    let upstreams = format!("prod agent@{}:22 /run/secrets/prod_key", prod.name);
    let b = run_on(
        &egress.name,
        "gate-bastion",
        &[
            "-v",
            SOCKET,
            "-e",
            "FORCE_COMMAND=true",
            "-e",
            &format!("SESSION_IMAGE={image}"),
            "-e",
            &format!("UPSTREAMS={upstreams}"),
        ],
        &[image],
    );
    let up = super::docker::eventually(Duration::from_secs(60), || {
        b.exec(&["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/22"])
            .status
            .success()
    });
    assert!(up, "the bastion's sshd never listened\n{}", b.logs());
    b
}

#[test]
#[ignore = "UPSTREAMS is checked at boot now: the bastion here needs a real upstream key and pin (to be given when the gate is wired into the runner)"]
fn a_session_container_reaches_its_upstream_through_the_gate_and_nothing_else() {
    let image = require();
    let tmp = TempDir::new("e2e-gate");
    let (key, line) = client_key(&tmp, "upstream");
    tmp.write("users.d/deploy.pub", &line);
    let users = format!("{}:/etc/bastion/users.d:ro", tmp.join("users.d").display());
    let egress = InternalNetwork::new("gate-egress");
    let sshd = |tag: &str, says: &str| {
        run_on(
            &egress.name,
            tag,
            &["-v", &users, "-e", &format!("FORCE_COMMAND=echo {says}")],
            &[&image],
        )
    };
    let prod = sshd("prod", "prod-says-hi");
    let undeclared = sshd("undeclared", "undeclared-says-hi");
    let bastion = bastion(&image, &egress, &prod);

    // sshd is bound to the addresses the bastion had at boot, not 0.0.0.0.
    let l = listening(&bastion);
    assert!(
        !l.iter().any(|a| a == "00000000:0016"),
        "sshd listens on every address: {l:?}"
    );
    assert!(l.iter().any(|a| a.ends_with(":0016")), "{l:?}");

    let (sa, sb) = (session_id(1), session_id(2));
    let _cleanup = SessionNetworks(vec![
        format!("bastion-net-{sa}"),
        format!("bastion-net-{sb}"),
    ]);
    let upstream = format!("prod=agent@{}:22", prod.name);
    let gate_a = OpenGate::open(&bastion, &sa, &upstream);
    let gate_b = OpenGate::open(&bastion, &sb, &upstream);
    assert_eq!(gate_a.network, format!("bastion-net-{sa}"));
    let labels = docker(&[
        "network",
        "inspect",
        "--format",
        "{{.Internal}} {{index .Labels \"io.docker-bastion.session\"}}",
        &gate_a.network,
    ]);
    assert_eq!(labels, format!("true {sa}"));

    let session = |net: &str, tag: &str| {
        run_on(
            net,
            tag,
            &["--cap-drop", "ALL", "--entrypoint", "/bin/sleep"],
            &[&image, "infinity"],
        )
    };
    let sess_a = session(&gate_a.network, "session-a");
    let sess_b = session(&gate_b.network, "session-b");

    // `ssh prod` in the session container, as on the bastion: the Host
    // block through the gate, the pin under the upstream's real name.
    let pins: String = prod
        .exec_ok(&["sh", "-c", "cat /etc/ssh/keys/*.pub"])
        .lines()
        .map(|k| {
            let mut w = k.split_whitespace();
            format!(
                "{} {} {}\n",
                prod.name,
                w.next().unwrap(),
                w.next().unwrap()
            )
        })
        .collect();
    put(
        &sess_a,
        "/run/bastion/upstream/known_hosts",
        pins.as_bytes(),
        "0644",
    );
    put(
        &sess_a,
        "/etc/ssh/ssh_config.d/bastion-upstreams.conf",
        gate_a.ssh_config.as_bytes(),
        "0644",
    );
    put(&sess_a, "/root/key", &std::fs::read(&key).unwrap(), "0600");
    let ssh_prod = |c: &Container| {
        c.exec(&[
            "timeout",
            "60",
            "ssh",
            "-i",
            "/root/key",
            "-o",
            "IdentityAgent=none",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "prod",
        ])
    };
    let out = ssh_prod(&sess_a);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "prod-says-hi\n");

    // A host key other than the pin fails: the alias is what is checked.
    put(
        &sess_a,
        "/run/bastion/upstream/known_hosts",
        format!(
            "{} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOv1Yg2dCw1Xq4ka9cm2NbJmgGyzNYjtGzaWb3HgG0fe\n",
            prod.name
        )
        .as_bytes(),
        "0644",
    );
    let out = ssh_prod(&sess_a);
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("HOST IDENTIFICATION HAS CHANGED")
            || String::from_utf8_lossy(&out.stderr).contains("Host key verification failed"),
        "{}",
        show(&out)
    );

    // Reachable: the gate's listener. A port nothing holds refuses (the
    // control: the network works and silence below is the gate's doing).
    let a = gate_a.address.as_str();
    assert_eq!(attempt(&sess_a, a, gate_a.port), Seen::Connected);
    assert_eq!(attempt(&sess_a, a, 9), Seen::Refused);
    // The bastion's own sshd and HTTP ports on the gate address: silence.
    for port in [22, 8080] {
        let s = attempt(&sess_a, a, port);
        assert!(silent(&s), "bastion port {port} on the gate address: {s:?}");
    }
    // The undeclared host, prod itself and the bastion on the egress side.
    for (what, ip) in [
        ("undeclared host", ip_on(&undeclared, &egress.name)),
        ("prod directly", ip_on(&prod, &egress.name)),
        ("bastion's egress address", ip_on(&bastion, &egress.name)),
    ] {
        let s = attempt(&sess_a, &ip, 22);
        assert!(silent(&s), "{what} {ip}: {s:?}");
    }
    // The other session: its container and its gate.
    let b_ip = ip_on(&sess_b, &gate_b.network);
    for (what, ip, port) in [
        ("session b's container", b_ip.as_str(), 22),
        ("session b's gate", gate_b.address.as_str(), gate_b.port),
    ] {
        let s = attempt(&sess_a, ip, port);
        assert!(silent(&s), "{what} {ip}:{port}: {s:?}");
    }

    // Session a ends (its container still on the network: cut off too).
    let net_a = gate_a.network.clone();
    let (code, log) = gate_a.close();
    assert_eq!(code, Some(0), "{log}");
    assert!(!network_exists(&net_a), "{net_a} outlived its session");
    let events: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("event=upstream.connect "))
        .collect();
    let ssh_event = events
        .iter()
        .find(|l| {
            l.contains(&format!("session={sa} identity=alice upstream=prod "))
                && l.contains("outcome=closed")
        })
        .unwrap_or_else(|| panic!("no upstream.connect for the ssh session:\n{log}"));
    let field = |name: &str| -> u64 {
        ssh_event
            .split(' ')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {ssh_event}"))
    };
    assert!(
        field("bytes_up") > 500 && field("bytes_down") > 500,
        "{ssh_event}"
    );
    assert!(
        ssh_event.contains(&format!("target={}:22", prod.name)),
        "{ssh_event}"
    );
    // The probe connection is one event of its own; the other attempts
    // never reached the gate.
    assert_eq!(events.len(), 3, "{log}");

    // Session b is killed with the gate's process: its network stays until
    // reaped, and reaping takes only this instance's networks.
    let decoy = unique("decoy");
    docker(&[
        "network",
        "create",
        "--internal",
        "--label",
        "docker-bastion.e2e=1",
        "--label",
        "io.docker-bastion.instance=someone-else",
        &decoy,
    ]);
    let decoy_guard = InternalNetwork {
        name: decoy.clone(),
    };
    bastion.exec_ok(&[
        "sh",
        "-c",
        "for p in /proc/[0-9]*; do [ \"$(cat $p/comm 2>/dev/null)\" = bastion-gate ] && kill -KILL ${p#/proc/}; done; true",
    ]);
    let _ = gate_b.close();
    let net_b = format!("bastion-net-{sb}");
    assert!(
        network_exists(&net_b),
        "nothing left to reap: the test cannot fail"
    );
    let out = bastion.exec(&["bastion-gate", "reap"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("removed {net_b}")
    );
    assert!(!network_exists(&net_b));
    assert!(network_exists(&decoy), "reaped another instance's network");
    drop(decoy_guard);
    drop((sess_a, sess_b));
}
