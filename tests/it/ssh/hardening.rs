//! sshd hardening (SPEC 8) as a client sees it: no forwarding of any kind,
//! no tunnel, no sftp/scp, no client environment, no password, and the
//! effective configuration `sshd -T` reports.

use super::fixture::{spawn, Bastion};
use crate::harness::{self, output, run_expect, stderr, stdout};
use std::io::Read as _;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

/// A loopback target that must never be reached through the bastion.
struct Target(TcpListener);

impl Target {
    fn new() -> Target {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        Target(l)
    }

    fn port(&self) -> u16 {
        self.0.local_addr().unwrap().port()
    }

    fn assert_untouched(&self) {
        match self.0.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("the target was reached through the bastion: {other:?}"),
        }
    }
}

/// A session whose command holds until `release` exists.
fn holding(tag: &str) -> (Bastion, std::path::PathBuf) {
    let b = Bastion::new(tag);
    let release = b.root.join("release");
    let cmd = format!(
        "echo session; while [ ! -e {} ]; do sleep 0.05; done",
        release.display()
    );
    (b.force(&cmd), release)
}

fn end(child: Child, release: &Path) -> std::process::Output {
    std::fs::write(release, b"").unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn local_forwarding_is_refused() {
    let (b, release) = holding("hard-L");
    let cfg = b.prepare();
    let target = Target::new();
    let lport = harness::free_port();
    let session = spawn(
        b.ssh(&cfg)
            .arg("-L")
            .arg(format!("{lport}:127.0.0.1:{}", target.port())),
    );
    harness::wait_port(lport, Duration::from_secs(30));
    let mut s = TcpStream::connect(("127.0.0.1", lport)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 16];
    // The server refuses the channel: the client closes our connection.
    assert_eq!(s.read(&mut buf).unwrap_or(0), 0);
    target.assert_untouched();
    let out = end(session, &release);
    assert_eq!(stdout(&out), "session\n");
}

#[test]
fn dynamic_forwarding_is_refused() {
    let (b, release) = holding("hard-D");
    let cfg = b.prepare();
    let target = Target::new();
    let dport = harness::free_port();
    let session = spawn(b.ssh(&cfg).arg("-D").arg(dport.to_string()));
    harness::wait_port(dport, Duration::from_secs(30));
    let curl = output(
        Command::new("curl")
            .args(["-s", "-m", "10", "--socks5"])
            .arg(format!("127.0.0.1:{dport}"))
            .arg(format!("http://127.0.0.1:{}/", target.port())),
    );
    assert!(!curl.status.success());
    target.assert_untouched();
    end(session, &release);
}

#[test]
fn remote_forwarding_is_refused() {
    let (b, release) = holding("hard-R");
    let cfg = b.prepare();
    let target = Target::new();
    let rport = harness::free_port();
    let mut session = spawn(
        b.ssh_logging(&cfg, "INFO")
            .arg("-R")
            .arg(format!("{rport}:127.0.0.1:{}", target.port())),
    );
    // Wait until the command runs, then nothing listens on the remote port.
    let mut first = [0u8; 8];
    session
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    assert_eq!(&first, b"session\n");
    assert!(TcpStream::connect(("127.0.0.1", rport)).is_err());
    let out = end(session, &release);
    assert!(
        stderr(&out).contains(&format!(
            "remote port forwarding failed for listen port {rport}"
        )),
        "{}",
        stderr(&out)
    );
    target.assert_untouched();
    // With ExitOnForwardFailure the client gives up instead.
    let out = output(
        b.ssh(&cfg)
            .args(["-o", "ExitOnForwardFailure=yes", "-R"])
            .arg(format!("{rport}:127.0.0.1:{}", target.port())),
    );
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
}

#[test]
fn agent_forwarding_is_refused() {
    let b = Bastion::new("hard-A")
        .force("find /tmp -maxdepth 2 -type s -user agent 2>/dev/null | wc -l");
    let cfg = b.prepare();
    let sock = b.root.join("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(harness::wait_until(Duration::from_secs(10), || sock.exists()));
    let out = run_expect(b.ssh(&cfg).env("SSH_AUTH_SOCK", &sock).arg("-A"), 0);
    let _ = agent.kill();
    let _ = agent.wait();
    // sshd would have created /tmp/ssh-*/agent.N owned by the session user.
    assert_eq!(stdout(&out).trim(), "0");
}

#[test]
fn x11_forwarding_is_refused() {
    let b = Bastion::new("hard-X").force("echo ran");
    let cfg = b.prepare();
    let out = run_expect(
        b.ssh_logging(&cfg, "INFO")
            .env("DISPLAY", "127.0.0.1:55")
            .env("XAUTHORITY", "/nonexistent")
            .arg("-Y"),
        0,
    );
    assert_eq!(stdout(&out), "ran\n");
    assert!(
        stderr(&out).contains("X11 forwarding request failed"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn tunnel_forwarding_is_refused() {
    let b = Bastion::new("hard-w").force("echo ran");
    let cfg = b.prepare();
    // The client opens a tun device on its side: give it its own network
    // namespace so nothing appears on the host.
    let mut ssh = b.ssh_logging(&cfg, "ERROR");
    ssh.args(["-o", "ExitOnForwardFailure=yes", "-w", "any"]);
    let mut cmd = Command::new("unshare");
    cmd.arg("--net").arg(ssh.get_program()).args(ssh.get_args());
    let out = output(&mut cmd);
    assert_eq!(
        out.status.code(),
        Some(255),
        "{}",
        harness::describe(&cmd, &out)
    );
    assert!(
        stderr(&out).contains("Tunnel forwarding failed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "");
}

#[test]
fn sftp_and_scp_are_refused() {
    let b = Bastion::new("hard-sftp").force("echo forced");
    let cfg = b.prepare();
    let key = b.key.display().to_string();
    let proxy = b.proxy_command(&cfg);
    let common = [
        "-F",
        "/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-i",
        &key,
        "-o",
        &proxy,
    ];
    let dest = b.writable_dir().join("uploaded");
    let src = b.root.write("upload-me", "secret payload\n");
    let out = output(
        Command::new("sftp")
            .args(common)
            .args(["-b", "-"])
            .arg("agent@bastion-test"),
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("subsystem request failed"),
        "{}",
        stderr(&out)
    );
    // scp over sftp (the default) and the legacy protocol (-O, which runs
    // `scp -t` as a command: the forced command runs instead).
    for legacy in [false, true] {
        let mut scp = Command::new("scp");
        scp.args(common);
        if legacy {
            scp.arg("-O");
        }
        scp.arg(&src)
            .arg(format!("agent@bastion-test:{}", dest.display()));
        let out = output(&mut scp);
        assert_ne!(out.status.code(), Some(0), "scp legacy={legacy}");
        assert!(!dest.exists(), "scp legacy={legacy} wrote the file");
    }
    assert!(b
        .sshd_log()
        .contains("subsystem request for sftp by user agent failed"));
}

#[test]
fn client_environment_never_reaches_the_command() {
    let b = Bastion::new("hard-env").force("env");
    let cfg = b.prepare();
    let out = run_expect(
        b.ssh(&cfg)
            .env("LC_EVIL", "sendenv-value")
            .env("LANG", "sendenv-lang")
            .args([
                "-o",
                "SendEnv=LC_EVIL LANG",
                "-o",
                "SetEnv=EVIL=setenv-value LD_PRELOAD=/tmp/x.so",
            ])
            .arg("x"),
        0,
    );
    let env = stdout(&out);
    for leaked in [
        "sendenv-value",
        "sendenv-lang",
        "setenv-value",
        "LD_PRELOAD",
    ] {
        assert!(!env.contains(leaked), "{leaked} leaked:\n{env}");
    }
}

#[test]
fn password_login_is_impossible() {
    let b = Bastion::new("hard-pw").force("echo ran");
    let cfg = b.prepare();
    let out = output(
        b.ssh_logging(&cfg, "ERROR")
            .args(["-o", "PubkeyAuthentication=no"])
            .args([
                "-o",
                "PreferredAuthentications=password,keyboard-interactive",
            ])
            .arg("x"),
    );
    assert_eq!(out.status.code(), Some(255));
    assert_eq!(stdout(&out), "");
    // The server offers nothing but publickey.
    assert!(
        stderr(&out).contains("Permission denied (publickey)."),
        "{}",
        stderr(&out)
    );
    // And root cannot log in even with a key the bastion accepts.
    let mut root = b.ssh(&cfg);
    let args: Vec<_> = root.get_args().map(|a| a.to_owned()).collect();
    let mut cmd = Command::new("ssh");
    for a in &args {
        if a == "agent@bastion-test" {
            cmd.arg("root@bastion-test");
        } else {
            cmd.arg(a);
        }
    }
    root = cmd;
    let out = output(root.arg("x"));
    assert_eq!(out.status.code(), Some(255));
    assert_eq!(stdout(&out), "");
}

#[test]
fn effective_sshd_configuration_is_hardened() {
    for (mode, tty) in [
        (("FORCE_COMMAND", "true"), "yes"),
        (("ALLOWED_COMMANDS", "true"), "no"),
    ] {
        let b = Bastion::new("hard-T").env(mode.0, mode.1);
        let cfg = b.prepare();
        let out = run_expect(
            Command::new(harness::which("sshd"))
                .arg("-T")
                .arg("-f")
                .arg(&cfg)
                .args(["-C", "user=agent,host=client.example,addr=127.0.0.1"]),
            0,
        );
        let t = stdout(&out);
        let lines: Vec<&str> = t.lines().collect();
        for want in [
            "authenticationmethods publickey",
            "passwordauthentication no",
            "kbdinteractiveauthentication no",
            "hostbasedauthentication no",
            "pubkeyauthentication yes",
            "usepam no",
            "permitrootlogin no",
            "allowusers agent",
            "authorizedkeysfile none",
            "authorizedkeyscommanduser nobody",
            "exposeauthinfo yes",
            "disableforwarding yes",
            "allowtcpforwarding no",
            "allowstreamlocalforwarding no",
            "allowagentforwarding no",
            "x11forwarding no",
            "permittunnel no",
            "permituserenvironment no",
            "permituserrc no",
            "loglevel VERBOSE",
            "pidfile none",
            &format!("permittty {tty}"),
        ] {
            assert!(lines.contains(&want), "missing {want:?} in\n{t}");
        }
        assert!(!lines.iter().any(|l| l.starts_with("subsystem ")), "{t}");
        assert!(!lines.iter().any(|l| l.starts_with("acceptenv ")), "{t}");
        let force = lines
            .iter()
            .find(|l| l.starts_with("forcecommand "))
            .unwrap();
        assert!(force.contains("/bastion-wrapper --runtime "), "{force}");
        let keys = lines
            .iter()
            .find(|l| l.starts_with("authorizedkeyscommand "))
            .unwrap();
        assert!(
            keys.contains("/bastion-keys --runtime ") && keys.ends_with(" %u %f"),
            "{keys}"
        );
    }
}
