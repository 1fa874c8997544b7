//! The egress gate (SPEC 14) on a real engine, through real sessions: a
//! bastion with `SESSION_IMAGE` (the test image: it has ssh) and one
//! upstream runs each SSH session in a container on that session's own
//! network; `ssh prod` there reaches the upstream through the gate with the
//! key the bastion's agent holds, and nothing else answers: not an
//! undeclared host, not the bastion's own ports on the gate address (no
//! reset either), not a concurrent session's container or gate. Networks
//! are gone after the session, and after its processes are SIGKILLed.

use super::docker::{
    client_key, curl, docker, docker_output, eventually, require, show, ssh, Container, Network,
};
use crate::harness::{self, TempDir};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SOCKET: &str = "/var/run/docker.sock:/var/run/docker.sock";

/// `probe NAME HOST PORT` prints `NAME=connected|refused|timeout|unreachable`:
/// what a TCP connection attempt from the session container saw within 5 s.
const PROBE: &str = r#"probe() {
  out=$(timeout 5 bash -c "exec 3<>/dev/tcp/$2/$3" 2>&1); rc=$?
  case "$rc:$out" in
    0:*) w=connected;; 124:*) w=timeout;; *refused*) w=refused;;
    *nreachable*|*"No route"*) w=unreachable;; *) w="other($rc:$out)";;
  esac
  echo "$1=$w"
}
"#;

fn field(out: &str, key: &str) -> String {
    super::session::field(out, key)
}

fn network_exists(name: &str) -> bool {
    docker_output(&["network", "inspect", name])
        .status
        .success()
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

struct Gated {
    tmp: TempDir,
    key: std::path::PathBuf,
    bastion: Container,
    port: u16,
}

/// A bastion on `net` with the engine's socket, `SESSION_IMAGE` the test
/// image, `prod` declared as its one upstream (key held, host key pinned)
/// and a share directory at /run/bastion/share.
fn gated_bastion(
    net: &Network,
    image: &str,
    prod: &Container,
    prod_host: &str,
    tmp: TempDir,
    more: &[&str],
) -> Gated {
    let (key, line) = client_key(&tmp, "alice");
    tmp.write("users.d/alice.pub", &line);
    let pins = tmp.write(
        "upstream_known_hosts",
        format!("{} {prod_host}\n", prod.name),
    );
    std::fs::create_dir_all(tmp.join("share")).unwrap();
    let users = format!("{}:/etc/bastion/users.d:ro", tmp.join("users.d").display());
    let secret = format!(
        "{}:/run/secrets/prod_key:ro",
        tmp.join("secrets/prod_key").display()
    );
    let pinned = format!("{}:/etc/bastion/upstream_known_hosts:ro", pins.display());
    let share = format!("{}:/run/bastion/share", tmp.join("share").display());
    let session_image = format!("SESSION_IMAGE={image}");
    let upstreams = format!(
        "UPSTREAMS=prod agent@{}:22 /run/secrets/prod_key",
        prod.name
    );
    let mut args = vec![
        "-p",
        "127.0.0.1::22",
        "-v",
        SOCKET,
        "-v",
        &users,
        "-v",
        &secret,
        "-v",
        &pinned,
        "-v",
        &share,
        "-e",
        &session_image,
        "-e",
        "SESSION_PULL=never",
        "-e",
        &upstreams,
    ];
    args.extend_from_slice(more);
    args.push(image);
    let bastion = Container::run(net, "gate-bastion", &args);
    let port = bastion.wait_ssh();
    Gated {
        tmp,
        key,
        bastion,
        port,
    }
}

/// A session that stays open: its stdout read line by line.
struct Open {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Open {
    fn start(g: &Gated, script: &str) -> Open {
        let mut child = Command::new("timeout")
            .args(["120", "ssh", "-F", "/dev/null", "-T"])
            .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
            .args(["-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null"])
            .args(["-o", "LogLevel=ERROR"])
            .arg("-i")
            .arg(&g.key)
            .args(["-p", &g.port.to_string()])
            .arg(format!("{}@127.0.0.1", harness::SESSION_USER))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh runs");
        child
            .stdin
            .as_mut()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Open { child, lines }
    }

    /// Lines up to and including `last`.
    fn until(&self, last: &str) -> String {
        let mut seen = String::new();
        loop {
            match self.lines.recv_timeout(Duration::from_secs(60)) {
                Ok(l) => {
                    seen.push_str(&l);
                    seen.push('\n');
                    if l == last {
                        return seen;
                    }
                }
                Err(_) => panic!("no {last:?} from the session; it said:\n{seen}"),
            }
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ssh_prod_from_a_session_container_reaches_only_its_upstream() {
    let image = require();
    let tmp = TempDir::new("e2e-gate");
    let upstream_key = tmp.join("secrets/prod_key");
    std::fs::create_dir_all(upstream_key.parent().unwrap()).unwrap();
    let public = harness::keygen(&upstream_key, "prod@e2e");
    let net = Network::new("gate");
    let (prod, prod_host) = super::upstream::sshd(&net, &image, &tmp.join("prod"), "prod", &public);
    let (undeclared, _) =
        super::upstream::sshd(&net, &image, &tmp.join("undeclared"), "undeclared", &public);
    let g = gated_bastion(
        &net,
        &image,
        &prod,
        &prod_host,
        tmp,
        &["-e", "FORCE_COMMAND=bash", "-e", "METRICS_PORT=9100"],
    );
    let ip_of = |c: &Container| {
        c.inspect(&format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            net.name
        ))
    };

    // Session B stays open: a listener of its own (a forward through the
    // gate, so it is a real port in its container) and its addresses.
    let b = Open::start(
        &g,
        &format!(
            "{PROBE}ssh -f -N -o ExitOnForwardFailure=yes -L 0.0.0.0:7000:127.0.0.1:22 prod\n\
             echo session=$BASTION_SESSION_ID\n\
             echo ip=$(getent hosts $(hostname) | cut -d' ' -f1)\n\
             echo gate=$(getent hosts bastion-gate | cut -d' ' -f1)\n\
             probe own-listener $(getent hosts $(hostname) | cut -d' ' -f1) 7000\n\
             echo ready\nsleep 300\n"
        ),
    );
    let said_b = b.until("ready");
    let (sb, b_ip, b_gate) = (
        field(&said_b, "session"),
        field(&said_b, "ip"),
        field(&said_b, "gate"),
    );
    let mut guard = SessionNetworks(vec![format!("bastion-net-{sb}")]);
    assert_eq!(field(&said_b, "own-listener"), "connected", "{said_b}");
    assert!(network_exists(&format!("bastion-net-{sb}")), "{said_b}");

    let script = format!(
        "{PROBE}echo session=$BASTION_SESSION_ID\n\
         ssh prod 'echo via-gate-$((6*7))' </dev/null; echo prod=$?\n\
         ssh prod true </dev/null; echo again=$?\n\
         echo net=$(ls /sys/class/net | tr '\\n' ' ')\n\
         gate=$(getent hosts bastion-gate | cut -d' ' -f1); echo gate=$gate\n\
         probe gate-port $gate 2200 &\n\
         probe unused-port $gate 9 &\n\
         probe bastion-sshd $gate 22 &\n\
         probe bastion-metrics $gate 9100 &\n\
         probe undeclared {undeclared} 22 &\n\
         probe prod-direct {prod} 22 &\n\
         probe bastion-direct {bastion} 22 &\n\
         probe session-b {b_ip} 7000 &\n\
         probe session-b-gate {b_gate} 2200 &\n\
         wait\n\
         ls -l /run/bastion/upstream/agent.sock >/dev/null && echo socket=there\n\
         rm -f /run/bastion/upstream/agent.sock 2>/dev/null; echo rm=$?\n\
         echo x >> /etc/ssh/ssh_config.d/bastion-upstreams.conf 2>/dev/null; echo write=$?\n\
         exit 0\n",
        undeclared = ip_of(&undeclared),
        prod = ip_of(&prod),
        bastion = ip_of(&g.bastion),
    );
    let out = ssh(g.port, &g.key, false, &[], script.as_bytes());
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let sa = field(&said, "session");
    guard.0.push(format!("bastion-net-{sa}"));
    assert!(said.contains("via-gate-42\n"), "{}", show(&out));
    assert_eq!(field(&said, "prod"), "0", "{}", show(&out));
    assert_eq!(field(&said, "again"), "0", "{}", show(&out));
    // One interface besides loopback: the session's own network.
    assert_eq!(field(&said, "net").split(' ').count(), 2, "{said}");
    assert_ne!(
        field(&said, "gate"),
        b_gate,
        "two sessions, one gate address"
    );
    // The controls: the gate answers, an unused port there refuses.
    assert_eq!(field(&said, "gate-port"), "connected", "{said}");
    assert_eq!(field(&said, "unused-port"), "refused", "{said}");
    // The bastion's own ports on the gate address: no answer at all.
    for k in ["bastion-sshd", "bastion-metrics"] {
        assert_eq!(field(&said, k), "timeout", "{k}: {said}");
    }
    // Everything beyond the session's network: no answer or no route,
    // never a refusal that tells the session something is there.
    for k in [
        "undeclared",
        "prod-direct",
        "bastion-direct",
        "session-b",
        "session-b-gate",
    ] {
        let w = field(&said, k);
        assert!(w == "timeout" || w == "unreachable", "{k}={w}: {said}");
    }
    assert_eq!(field(&said, "socket"), "there", "{said}");
    assert_ne!(field(&said, "rm"), "0", "{said}");
    assert_ne!(field(&said, "write"), "0", "{said}");

    // Session A is over: its network is gone, B's is not.
    let net_a = format!("bastion-net-{sa}");
    let net_b = format!("bastion-net-{sb}");
    assert!(!network_exists(&net_a), "{net_a} outlived its session");
    assert!(network_exists(&net_b));

    // B's processes in the bastion are SIGKILLed (the wrapper and the
    // engine CLI): the monitor removes its container, then its network.
    let victims: Vec<String> = g
        .bastion
        .processes()
        .into_iter()
        .filter(|p| p.comm.starts_with("bastion-wrap") || p.comm == "docker")
        .map(|p| p.pid.to_string())
        .collect();
    assert!(victims.len() >= 2, "{:?}", g.bastion.processes());
    let mut kill = vec!["kill", "-KILL"];
    kill.extend(victims.iter().map(String::as_str));
    g.bastion.exec_ok(&kill);
    assert!(
        eventually(Duration::from_secs(20), || !network_exists(&net_b)),
        "{net_b} outlived its session's killed processes"
    );
    let left = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("name=bastion-session-{sb}"),
        "--format",
        "{{.Names}}",
    ]);
    assert!(left.is_empty(), "session container left: {left}");
    drop(b);

    // The audit trail: one upstream.connect per forwarded connection, with
    // the session, identity and bytes.
    let logs = g.bastion.logs();
    let connects: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("event=upstream.connect"))
        .collect();
    let a_ssh: Vec<&&str> = connects
        .iter()
        .filter(|l| {
            l.contains(&format!("session={sa} identity=alice upstream=prod"))
                && l.contains(&format!("target={}:22", prod.name))
                && l.contains("outcome=closed")
        })
        .collect();
    assert!(a_ssh.len() >= 2, "no upstream.connect for A's ssh:\n{logs}");
    let bytes = |l: &str, k: &str| -> u64 {
        l.split(' ')
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert!(
        bytes(a_ssh[0], "bytes_up") > 500 && bytes(a_ssh[0], "bytes_down") > 500,
        "{}",
        a_ssh[0]
    );
    // B's forward ended with its container (removed before the gate).
    let b_forward = connects
        .iter()
        .find(|l| l.contains(&format!("session={sb} identity=alice upstream=prod")))
        .unwrap_or_else(|| panic!("no upstream.connect for B's forward:\n{logs}"));
    assert!(bytes(b_forward, "bytes_up") > 500, "{b_forward}");
    // The key signed for prod from a session container, through the
    // container's own proxy socket.
    assert!(logs.contains("event=upstream.sign upstream=prod"), "{logs}");
    drop(g.tmp);
}

#[test]
fn an_http_session_container_reaches_its_upstream_through_the_gate() {
    let image = require();
    let tmp = TempDir::new("e2e-gate-http");
    let upstream_key = tmp.join("secrets/prod_key");
    std::fs::create_dir_all(upstream_key.parent().unwrap()).unwrap();
    let public = harness::keygen(&upstream_key, "prod@e2e");
    let net = Network::new("gatehttp");
    let (prod, prod_host) = super::upstream::sshd(&net, &image, &tmp.join("prod"), "prod", &public);
    let g = gated_bastion(
        &net,
        &image,
        &prod,
        &prod_host,
        tmp,
        &[
            "-p",
            "127.0.0.1::8080",
            "-e",
            "HTTP_TOKEN=s3cret-token-for-e2e",
            "-e",
            "FORCE_COMMAND=ssh -n prod 'echo via-gate-$((6*7))'; echo prod=$?; \
             timeout 5 bash -c 'exec 3<>/dev/tcp/bastion-gate/8080' 2>/dev/null; echo http-port=$?",
        ],
    );
    let port = g.bastion.wait_http();
    let r = curl(
        port,
        "/cgi-bin/run",
        &["-H", "Authorization: Bearer s3cret-token-for-e2e"],
    );
    assert_eq!((r.status, r.curl), (200, 0), "{r:?}");
    assert!(r.body.contains("via-gate-42\n"), "{r:?}");
    assert_eq!(field(&r.body, "prod"), "0", "{r:?}");
    // The bastion's HTTP port on the gate address: no answer (124 is the
    // timeout; a refusal would be 1).
    assert_eq!(field(&r.body, "http-port"), "124", "{r:?}");
    let logs = g.bastion.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("event=upstream.connect") && l.contains("outcome=closed")),
        "{logs}"
    );
    assert!(
        eventually(Duration::from_secs(20), || {
            let n = docker(&[
                "network",
                "ls",
                "--filter",
                &format!(
                    "label=io.docker-bastion.instance={}",
                    g.bastion.inspect("{{.Id}}")
                ),
                "--format",
                "{{.Name}}",
            ]);
            n.is_empty()
        }),
        "a session network outlived the HTTP session"
    );

    // A network this instance left (as if it had died mid-session), and
    // one of another instance: a restart removes the first only.
    let id = g.bastion.inspect("{{.Id}}");
    let hex = |n: u64| format!("{:016x}", (u64::from(std::process::id()) << 32) | n);
    let (left, other) = (
        format!("bastion-net-{}", hex(0xfeed)),
        format!("bastion-net-{}", hex(0xbeef)),
    );
    let _guard = SessionNetworks(vec![left.clone(), other.clone()]);
    for (name, instance) in [(&left, id.as_str()), (&other, "someone-else")] {
        docker(&[
            "network",
            "create",
            "--internal",
            "--label",
            "docker-bastion.e2e=1",
            "--label",
            &format!("io.docker-bastion.instance={instance}"),
            name,
        ]);
    }
    docker(&["restart", "--time", "5", &g.bastion.name]);
    g.bastion.wait_http();
    assert!(!network_exists(&left), "{left} survived the boot");
    assert!(
        network_exists(&other),
        "another instance's network was removed"
    );
    let logs = g.bastion.logs();
    assert!(
        logs.contains(&format!(
            "removed session network {left} left by an earlier run"
        )),
        "{logs}"
    );
}

#[test]
fn without_the_share_volume_the_gate_is_a_config_error() {
    let image = require();
    let tmp = TempDir::new("e2e-gate-noshare");
    let key = tmp.join("prod_key");
    harness::keygen(&key, "prod@e2e");
    let host = tmp.join("host_key");
    let host_pub = harness::keygen(&host, "");
    let pin: Vec<&str> = host_pub.split_whitespace().take(2).collect();
    let pins = tmp.write("known_hosts", format!("192.0.2.10 {}\n", pin.join(" ")));
    let out = docker_output(&[
        "run",
        "--rm",
        "--label",
        "docker-bastion.e2e=1",
        "-v",
        SOCKET,
        "-v",
        &format!("{}:/run/secrets/prod_key:ro", key.display()),
        "-v",
        &format!("{}:/etc/bastion/upstream_known_hosts:ro", pins.display()),
        "-e",
        "FORCE_COMMAND=true",
        "-e",
        &format!("SESSION_IMAGE={image}"),
        "-e",
        "SESSION_PULL=never",
        "-e",
        "UPSTREAMS=prod agent@192.0.2.10:22 /run/secrets/prod_key",
        &image,
    ]);
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(78), "{logs}");
    let line = logs
        .lines()
        .find(|l| l.starts_with("config error: UPSTREAMS"))
        .unwrap_or_else(|| panic!("no config error for the share volume:\n{logs}"));
    assert!(
        line.contains("no volume at /run/bastion/share")
            && line.contains("-v bastion-share:/run/bastion/share"),
        "{line}"
    );
    // The only error: the key and pin are fine.
    assert_eq!(
        logs.lines()
            .filter(|l| l.starts_with("config error"))
            .count(),
        1,
        "{logs}"
    );
}
