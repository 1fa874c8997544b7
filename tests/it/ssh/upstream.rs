//! Upstream hosts with held keys (SPEC 13) against real OpenSSH: a real
//! `prod` sshd on loopback that trusts the upstream key, an undeclared
//! sshd (another host key) that trusts the same key, the bastion booted by
//! the real entrypoint (real ssh-agent, real proxy), and everything tried
//! from a shell of the session user on the bastion.

use super::fixture::{Bastion, Daemon};
use crate::harness::{self, stderr, stdout, TempDir};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// A real sshd on 127.0.0.1 with its own host key, accepting `authorized`
/// for the user `agent` (the host's test user), killed on drop.
struct UpstreamSshd {
    port: u16,
    /// `ssh-ed25519 AAAA...` of its host key.
    host_key: String,
    log: PathBuf,
    child: Child,
}

impl UpstreamSshd {
    fn start(dir: &Path, authorized: &str) -> UpstreamSshd {
        std::fs::create_dir_all(dir).unwrap();
        harness::set_mode(dir, 0o755);
        let key = dir.join("host_key");
        let public = harness::keygen(&key, "");
        let host_key = public
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let auth = dir.join("authorized_keys");
        std::fs::write(&auth, authorized).unwrap();
        let port = harness::free_port();
        let cfg = dir.join("sshd_config");
        std::fs::write(
            &cfg,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile none\n\
                 AuthorizedKeysFile {}\nStrictModes no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nAllowUsers {}\nLogLevel VERBOSE\n",
                key.display(),
                auth.display(),
                harness::SESSION_USER
            ),
        )
        .unwrap();
        let log = dir.join("sshd.log");
        let child = Command::new(harness::which("sshd"))
            .args(["-D", "-e", "-f"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        harness::wait_port(port, Duration::from_secs(20));
        UpstreamSshd {
            port,
            host_key,
            log,
            child,
        }
    }

    fn pin(&self) -> String {
        format!("[127.0.0.1]:{} {}\n", self.port, self.host_key)
    }
}

impl Drop for UpstreamSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bastion whose FORCE_COMMAND is a shell reading its script from the
/// client, with `prod` declared, and the two upstream hosts.
struct World {
    bastion: Bastion,
    prod: UpstreamSshd,
    other: UpstreamSshd,
    /// The private key the agent holds, and its public half.
    key: PathBuf,
    public: String,
    /// Where the other host's host key is pinned (for the session to try).
    other_pins: PathBuf,
    _hosts: TempDir,
}

fn world(tag: &str) -> World {
    world_in(tag, false)
}

/// With `broker`, broker mode with one rule: `ssh -F CONF prod (uptime|echo ok)`.
fn world_in(tag: &str, broker: bool) -> World {
    let hosts = TempDir::new(&format!("{tag}-hosts"));
    let mut b = Bastion::new(tag).force("sh");
    if broker {
        let conf = b.root.join("etc/ssh/ssh_config.d/bastion-upstreams.conf");
        let rule = format!(
            "ssh -F {} prod (uptime|echo ok)",
            regex_escape(&conf.display().to_string())
        );
        b = b.env("ALLOWED_COMMANDS", &rule);
    }
    let key = b.root.join("secrets/prod_key");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    harness::set_mode(key.parent().unwrap(), 0o700);
    let public = harness::keygen(&key, "prod@it");
    let prod = UpstreamSshd::start(&hosts.join("prod"), &public);
    let other = UpstreamSshd::start(&hosts.join("other"), &public);
    b.root.write("etc/bastion/upstream_known_hosts", prod.pin());
    let other_pins = hosts.write("other_known_hosts", other.pin());
    let b = b.env(
        "UPSTREAMS",
        &format!(
            "# the one upstream\nprod {}@127.0.0.1:{} {}\n",
            harness::SESSION_USER,
            prod.port,
            key.display()
        ),
    );
    World {
        bastion: b,
        prod,
        other,
        key,
        public,
        other_pins,
        _hosts: hosts,
    }
}

impl World {
    fn conf(&self) -> PathBuf {
        self.bastion
            .root
            .join("etc/ssh/ssh_config.d/bastion-upstreams.conf")
    }

    /// Runs `script` in a shell of the session user on the bastion.
    fn session(&self, d: &Daemon, script: &str) -> Output {
        let mut c = harness::ssh_to_port(d.port, &self.bastion.key);
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    fn ssh_prod(&self, command: &str) -> String {
        format!("ssh -F {} prod {command}", self.conf().display())
    }

    fn entrypoint_log(&self, d: &Daemon) -> String {
        std::fs::read_to_string(self.bastion.root.join(format!("entrypoint-{}.log", d.port)))
            .unwrap_or_default()
    }
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(out),
        stderr(out)
    )
}

/// A line of the private key's base64 body: bytes that must never be
/// readable by the session.
fn secret_line(key: &Path) -> String {
    let text = std::fs::read_to_string(key).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len() / 2].to_owned()
}

#[test]
fn ssh_prod_works_and_the_key_is_never_readable() {
    let w = world("up-works");
    let d = w.bastion.start();
    let secret = secret_line(&w.key);
    let root = w.bastion.root.path().display().to_string();
    let script = format!(
        "set -u\n\
         {ssh}\n\
         echo \"sock=$SSH_AUTH_SOCK\"\n\
         cat {key} >/dev/null 2>&1 && echo KEY-READABLE\n\
         env | grep -qF '{secret}' && echo KEY-IN-ENV\n\
         grep -rsqF '{secret}' {root} /run /tmp /home /etc 2>/dev/null && echo KEY-IN-FILE\n\
         for p in $(pgrep -x ssh-agent) $(pgrep -x bastion-agent-p); do\n\
           echo \"pid $p\"\n\
           ( exec 3</proc/$p/mem ) 2>/dev/null && echo MEM-READABLE\n\
           cat /proc/$p/environ >/dev/null 2>&1 && echo ENV-READABLE\n\
           kill -0 $p 2>/dev/null && echo SIGNALLABLE\n\
           kill -STOP $p 2>/dev/null && echo STOPPED\n\
         done\n\
         exit 0\n",
        ssh = w.ssh_prod("echo via-prod"),
        key = w.key.display(),
    );
    let out = w.session(&d, &script);
    let text = stdout(&out);
    assert!(text.starts_with("via-prod\n"), "{}", show(&out));
    assert!(
        text.contains(&format!("sock={root}/run/bastion/agent/agent.sock")),
        "{}",
        show(&out)
    );
    for bad in [
        "KEY-READABLE",
        "KEY-IN-ENV",
        "KEY-IN-FILE",
        "MEM-READABLE",
        "ENV-READABLE",
        "SIGNALLABLE",
        "STOPPED",
    ] {
        assert!(!text.contains(bad), "{bad}\n{}", show(&out));
    }
    // The agent and the proxy both exist (the loop above saw them).
    assert!(text.matches("pid ").count() >= 2, "{}", show(&out));
    // The test itself (root) can read the secret: the grep could match.
    assert!(std::fs::read_to_string(&w.key).unwrap().contains(&secret));
    // The upstream saw a public-key login with exactly that key.
    let fp = fingerprint(&w.public);
    let upstream_log = std::fs::read_to_string(&w.prod.log).unwrap();
    assert!(
        upstream_log.contains("Accepted publickey") && upstream_log.contains(&fp),
        "{upstream_log}"
    );
    // The signature is an audit event of the session that asked for it.
    let log = w.entrypoint_log(&d);
    let sign = log
        .lines()
        .find(|l| l.contains(" event=upstream.sign "))
        .unwrap_or_else(|| panic!("no upstream.sign in\n{log}"));
    assert!(sign.starts_with("ts="), "{sign}");
    assert!(
        sign.contains(" upstream=prod ") && sign.contains(&format!(" key={fp}")),
        "{sign}"
    );
    let session = sign
        .split(' ')
        .find_map(|f| f.strip_prefix("session="))
        .unwrap_or_else(|| panic!("no session in {sign}"));
    assert!(
        log.lines()
            .any(|l| l.contains(" event=session.start ")
                && l.contains(&format!(" session={session} "))),
        "{session} is no session of\n{log}"
    );
    // Files of the client config are root's.
    let m = std::fs::metadata(w.conf()).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o7777), (0, 0o644));
}

fn fingerprint(public: &str) -> String {
    let tmp = TempDir::new("fp");
    let p = tmp.write("k.pub", public);
    let out = harness::run_expect(Command::new("ssh-keygen").arg("-lf").arg(&p), 0);
    stdout(&out).split_whitespace().nth(1).unwrap().to_owned()
}

#[test]
fn the_session_cannot_manage_the_agent_or_sign_anything_else() {
    let w = world("up-refuse");
    let d = w.bastion.start();
    let script = format!(
        "t=$(mktemp -d)\n\
         printf '%s\\n' '#!/bin/sh' 'echo pw' >$t/askpass; chmod +x $t/askpass\n\
         export SSH_ASKPASS=$t/askpass SSH_ASKPASS_REQUIRE=force\n\
         echo '{public}' >$t/prod.pub\n\
         ssh-add -l >/dev/null && echo LIST-OK\n\
         ssh-add -D </dev/null; echo \"D=$?\"\n\
         ssh-add -d $t/prod.pub </dev/null; echo \"d=$?\"\n\
         ssh-add -x </dev/null; echo \"x=$?\"\n\
         ssh-add -X </dev/null; echo \"X=$?\"\n\
         ssh-keygen -q -t ed25519 -N '' -f $t/mine\n\
         ssh-add $t/mine </dev/null; echo \"add=$?\"\n\
         ssh-add -l | grep -c ED25519 | sed 's/^/count=/'\n\
         echo data >$t/file\n\
         ssh-keygen -Y sign -f $t/prod.pub -n file $t/file </dev/null; echo \"Y=$?\"\n\
         test -e $t/file.sig && echo SIGNED\n\
         ssh -F /dev/null -o BatchMode=yes -o IdentityAgent=$SSH_AUTH_SOCK \
             -o IdentityFile=$t/prod.pub -o IdentitiesOnly=yes \
             -o UserKnownHostsFile={other_pins} -o StrictHostKeyChecking=yes \
             -p {other_port} {user}@127.0.0.1 echo PWNED; echo \"other=$?\"\n\
         {ssh}\n",
        public = w.public.trim(),
        other_pins = w.other_pins.display(),
        other_port = w.other.port,
        user = harness::SESSION_USER,
        ssh = w.ssh_prod("echo still-works"),
    );
    let out = w.session(&d, &script);
    let text = stdout(&out);
    let err = stderr(&out);
    assert!(text.contains("LIST-OK\n"), "{}", show(&out));
    for refused in ["D=", "d=", "x=", "X=", "add=", "Y=", "other="] {
        let line = text
            .lines()
            .find(|l| l.starts_with(refused))
            .unwrap_or_else(|| panic!("no {refused} line\n{}", show(&out)));
        assert_ne!(line, format!("{refused}0"), "{}", show(&out));
    }
    assert!(
        text.contains("count=1\n"),
        "the agent still holds exactly one key\n{}",
        show(&out)
    );
    assert!(
        !text.contains("SIGNED") && !text.contains("PWNED"),
        "{}",
        show(&out)
    );
    assert!(err.contains("agent refused operation"), "{}", show(&out));
    assert!(err.contains("Permission denied"), "{}", show(&out));
    assert!(text.ends_with("still-works\n"), "{}", show(&out));
    // The undeclared host does trust the key: the refusal was the agent's.
    let mut direct = harness::ssh_client(&w.key, "ERROR");
    direct
        .args(["-p", &w.other.port.to_string()])
        .arg(format!("{}@127.0.0.1", harness::SESSION_USER))
        .arg("echo direct");
    assert_eq!(stdout(&harness::run_expect(&mut direct, 0)), "direct\n");
    let other_log = std::fs::read_to_string(&w.other.log).unwrap();
    assert_eq!(
        other_log.matches("Accepted publickey").count(),
        1,
        "{other_log}"
    );
    let other_log = std::fs::read_to_string(&w.other.log).unwrap();
    assert_eq!(
        other_log.matches("Accepted publickey").count(),
        1,
        "{other_log}"
    );
    let log = w.entrypoint_log(&d);
    // ssh-keygen -Y never binds the connection; the undeclared host gets
    // no signature because the agent does not even offer the key there.
    for reason in ["remove", "lock", "unlock", "add", "unbound"] {
        assert!(
            log.lines().any(|l| l.contains(" event=upstream.refused ")
                && l.contains(&format!(" reason={reason}"))),
            "no refusal {reason} in\n{log}"
        );
    }
    assert!(
        log.lines()
            .any(|l| l.contains(" event=upstream.sign ") && l.contains(" upstream=prod ")),
        "{log}"
    );
}

#[test]
fn a_host_key_that_does_not_match_the_pin_fails_the_connection() {
    let w = world("up-wrongpin");
    // prod's pin is the other host's key.
    let wrong = format!("[127.0.0.1]:{} {}\n", w.prod.port, w.other.host_key);
    w.bastion
        .root
        .write("etc/bastion/upstream_known_hosts", wrong);
    let d = w.bastion.start();
    let out = w.session(&d, &format!("{}; echo \"rc=$?\"\n", w.ssh_prod("echo NO")));
    assert!(!stdout(&out).contains("NO"), "{}", show(&out));
    assert!(stdout(&out).contains("rc=255"), "{}", show(&out));
    assert!(
        stderr(&out).contains("Host key verification failed"),
        "{}",
        show(&out)
    );
    let upstream_log = std::fs::read_to_string(&w.prod.log).unwrap();
    assert!(!upstream_log.contains("Accepted"), "{upstream_log}");
}

/// Runs the entrypoint of `b` with `env` added, expecting exit 78; its
/// stderr lines.
fn config_errors(b: &Bastion, env: &[(&str, &str)]) -> Vec<String> {
    let mut c = b.entrypoint();
    c.envs(env.iter().copied());
    let out = harness::output(c.arg("--prepare-only"));
    assert_eq!(out.status.code(), Some(78), "{}", show(&out));
    let lines: Vec<String> = stderr(&out).lines().map(str::to_owned).collect();
    assert!(
        lines.iter().all(|l| l.starts_with("config error: ")),
        "{lines:#?}"
    );
    assert!(!b.root.join("run/bastion").exists());
    lines
}

#[test]
fn every_upstream_config_error_is_reported_at_once() {
    let b = Bastion::new("up-config").force("true");
    let dir = b.root.join("secrets");
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good");
    harness::keygen(&good, "");
    let not_root = dir.join("not_root");
    harness::keygen(&not_root, "");
    std::os::unix::fs::chown(&not_root, Some(1), None).unwrap();
    let group_readable = dir.join("group_readable");
    harness::keygen(&group_readable, "");
    harness::set_mode(&group_readable, 0o640);
    let malformed = b.root.write(
        "secrets/malformed",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nnope\n",
    );
    harness::set_mode(&malformed, 0o600);
    let public_half = dir.join("good.pub");
    harness::set_mode(&public_half, 0o600);
    let protected = dir.join("protected");
    let _ = std::fs::remove_file(&protected);
    harness::run_expect(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "sesame", "-C", "", "-f"])
            .arg(&protected),
        0,
    );
    let missing = dir.join("missing");
    // Pins: only `good` (on 127.0.0.1:2201) has one.
    let pins = b.root.write(
        "etc/bastion/upstream_known_hosts",
        "[127.0.0.1]:2201 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n",
    );
    let line = |name: &str, port: u16, key: &Path| {
        format!("{name} deploy@127.0.0.1:{port} {}\n", key.display())
    };
    let upstreams = [
        line("good", 2201, &good),
        line("Bad", 2201, &good),
        line("good", 2201, &good),
        "short deploy@127.0.0.1\n".to_owned(),
        line("notroot", 2201, &not_root),
        line("groupread", 2201, &group_readable),
        line("malformed", 2201, &malformed),
        line("pubhalf", 2201, &public_half),
        line("protected", 2201, &protected),
        line("missing", 2201, &missing),
        line("nopin", 2299, &good),
    ]
    .concat();
    // Syntax errors come first and alone (nothing else is looked at).
    let syntax = config_errors(&b, &[("UPSTREAMS", &upstreams)]);
    assert_eq!(syntax.len(), 3, "{syntax:#?}");
    assert!(
        syntax[0].contains("line 2") && syntax[0].contains("\"Bad\""),
        "{syntax:#?}"
    );
    assert!(
        syntax[1].contains("line 3") && syntax[1].contains("declared twice"),
        "{syntax:#?}"
    );
    assert!(
        syntax[2].contains("line 4") && syntax[2].contains("2 fields"),
        "{syntax:#?}"
    );
    let files_only: String = upstreams
        .lines()
        .enumerate()
        .filter(|(i, _)| ![1, 2, 3].contains(i))
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    let lines = config_errors(&b, &[("UPSTREAMS", &files_only)]);
    let has = |what: &str, name: &str| {
        lines
            .iter()
            .any(|l| l.contains(what) && l.contains(&format!("upstream {name}")))
    };
    assert!(has("not root", "notroot"), "{lines:#?}");
    assert!(
        has("group or others may read it", "groupread"),
        "{lines:#?}"
    );
    assert!(has("not a valid private key", "malformed"), "{lines:#?}");
    assert!(has("not a valid private key", "pubhalf"), "{lines:#?}");
    assert!(has("passphrase", "protected"), "{lines:#?}");
    assert!(has("cannot be read", "missing"), "{lines:#?}");
    assert!(
        has("no pinned host key for [127.0.0.1]:2299", "nopin"),
        "{lines:#?}"
    );
    assert_eq!(lines.len(), 7, "{lines:#?}");
    assert!(!lines.iter().any(|l| l.contains("sesame")));

    // The pinned file: missing, then writable by the session user.
    let only_good = line("good", 2201, &good);
    std::fs::remove_file(&pins).unwrap();
    let l = config_errors(&b, &[("UPSTREAMS", &only_good)]);
    assert_eq!(l.len(), 1, "{l:#?}");
    assert!(
        l[0].starts_with("config error: UPSTREAM_KNOWN_HOSTS=\""),
        "{l:#?}"
    );
    let writable = b.root.write(
        "writable-pins/known_hosts",
        "[127.0.0.1]:2201 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n",
    );
    let agent_uid = nix_uid(harness::SESSION_USER);
    std::os::unix::fs::chown(&writable, Some(agent_uid), None).unwrap();
    let with_pins = [
        ("UPSTREAMS", only_good.as_str()),
        ("UPSTREAM_KNOWN_HOSTS", writable.to_str().unwrap()),
    ];
    let l = config_errors(&b, &with_pins);
    assert_eq!(l.len(), 1, "{l:#?}");
    assert!(l[0].contains("could change the pins"), "{l:#?}");
    std::os::unix::fs::chown(&writable, Some(0), None).unwrap();
    harness::set_mode(writable.parent().unwrap(), 0o777);
    let with_pins = [
        ("UPSTREAMS", only_good.as_str()),
        ("UPSTREAM_KNOWN_HOSTS", writable.to_str().unwrap()),
    ];
    let l = config_errors(&b, &with_pins);
    assert!(l[0].contains("could change the pins"), "{l:#?}");
    // Root-owned and not writable: the boot goes through.
    harness::set_mode(writable.parent().unwrap(), 0o755);
    let mut ok = b.entrypoint();
    ok.envs(with_pins).arg("--prepare-only");
    harness::run_expect(&mut ok, 0);
    let pins =
        std::fs::read_to_string(b.root.join("run/bastion/upstreams/good.known_hosts")).unwrap();
    assert!(
        pins.starts_with("127.0.0.1,[127.0.0.1]:2201 ssh-ed25519 "),
        "{pins}"
    );
    assert!(std::fs::metadata(&good).unwrap().permissions().mode() & 0o077 == 0);
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nix_uid(name: &str) -> u32 {
    let out = harness::run_expect(Command::new("id").args(["-u", name]), 0);
    stdout(&out).trim().parse().unwrap()
}

/// The proxy alone, in front of a real ssh-agent: hostile frames get
/// FAILURE (or the door), the cap holds, and 100 idle connections fit in
/// 8 MiB.
#[test]
fn the_proxy_survives_hostile_clients_in_bounded_memory() {
    use std::io::Read as _;
    use std::os::unix::net::UnixStream;
    let dir = TempDir::new("up-proxy");
    // Run as root, the proxy becomes `bastion`; ssh-agent accepts only its
    // own uid and root, so it runs as `bastion` too, as in the image.
    let bastion_uid = nix_uid("bastion");
    let private = dir.join("private");
    std::fs::create_dir(&private).unwrap();
    std::os::unix::fs::chown(&private, Some(bastion_uid), None).unwrap();
    harness::set_mode(&private, 0o700);
    let agent_sock = private.join("agent.sock");
    let _agent = KillOnDrop(
        Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&agent_sock)
            .uid(bastion_uid)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(harness::wait_until(Duration::from_secs(10), || agent_sock.exists()));
    let table = dir.write("upstreams.json", "[]");
    let listen = dir.join("proxy.sock");
    let log = dir.join("proxy.log");
    let proxy = KillOnDrop(
        Command::new(harness::bin("bastion-agent-proxy"))
            .arg("--listen")
            .arg(&listen)
            .arg("--agent")
            .arg(&agent_sock)
            .arg("--upstreams")
            .arg(&table)
            .args(["--max-connections", "100"])
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    assert!(harness::wait_until(Duration::from_secs(10), || {
        UnixStream::connect(&listen).is_ok()
    }));
    let ask = |bytes: &[u8]| -> Vec<u8> {
        let mut s = UnixStream::connect(&listen).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(bytes).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    };
    let failure = [0u8, 0, 0, 1, 5];
    // A length over 256 KiB, a zero length: one FAILURE, then closed.
    assert_eq!(ask(&[0x00, 0x04, 0x00, 0x01, 11]), failure);
    assert_eq!(ask(&[0xff, 0xff, 0xff, 0xff]), failure);
    assert_eq!(ask(&[0, 0, 0, 0]), failure);
    // Remove-all, lock, garbage, a truncated sign, then a real list: the
    // connection survives refusals and still answers the list.
    let mut s = UnixStream::connect(&listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let read_reply = |s: &mut UnixStream| -> Vec<u8> {
        let mut h = [0u8; 4];
        s.read_exact(&mut h).unwrap();
        let mut b = vec![0u8; u32::from_be_bytes(h) as usize];
        s.read_exact(&mut b).unwrap();
        b
    };
    for msg in [
        &[0, 0, 0, 1, 19][..],
        &[0, 0, 0, 5, 22, 0, 0, 0, 0],
        &[0, 0, 0, 3, 0xde, 0xad, 0xbe],
        &[0, 0, 0, 6, 13, 0, 0, 1, 0, 1],
    ] {
        s.write_all(msg).unwrap();
        assert_eq!(read_reply(&mut s), [5], "{msg:?}");
    }
    s.write_all(&[0, 0, 0, 1, 11]).unwrap();
    assert_eq!(
        read_reply(&mut s),
        [12, 0, 0, 0, 0],
        "an empty identity list"
    );
    drop(s);
    // A truncated frame then EOF: the proxy just closes.
    let mut t = UnixStream::connect(&listen).unwrap();
    t.write_all(&[0, 0, 0, 9, 13, 0]).unwrap();
    t.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    t.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = t.read_to_end(&mut rest);
    assert!(rest.is_empty() || rest == failure, "{rest:?}");

    // 100 idle connections, each having sent half a header.
    let mut idle = Vec::new();
    for _ in 0..100 {
        let mut c = UnixStream::connect(&listen).unwrap();
        c.write_all(&[0, 0]).unwrap();
        idle.push(c);
    }
    // They are all being served: the 101st is turned away at once.
    let mut over = UnixStream::connect(&listen).unwrap();
    over.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let _ = over.write_all(&[0, 0, 0, 1, 11]);
    let mut buf = Vec::new();
    let _ = over.read_to_end(&mut buf);
    assert!(buf.is_empty(), "served beyond the cap: {buf:?}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", proxy.0.id())).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert!(
        rss_kib < 8 * 1024,
        "RSS {rss_kib} KiB with 100 idle connections"
    );
    // The proxy runs as `bastion`, non-dumpable.
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_owned();
    assert!(
        uid_line
            .split_whitespace()
            .skip(1)
            .all(|u| u == bastion_uid.to_string()),
        "{uid_line}"
    );
    drop(idle);
    drop(proxy);
    // Without a monitor to hand them to, the events are JSON lines on
    // stderr.
    let text = std::fs::read_to_string(&log).unwrap();
    for reason in [
        "malformed",
        "remove",
        "lock",
        "unknown-message",
        "connection-limit",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(r#"{"event":"upstream.refused""#)
                    && l.contains(&format!(r#""reason":"{reason}""#))),
            "{reason}: {text}"
        );
    }
}

#[test]
fn a_broker_rule_reaches_prod_and_nothing_else() {
    let w = world_in("up-broker", true);
    let d = w.bastion.start();
    let conf = w.conf().display().to_string();
    let allowed = harness::run_expect(
        harness::ssh_to_port(d.port, &w.bastion.key).arg(format!("ssh -F {conf} prod echo ok")),
        0,
    );
    assert_eq!(stdout(&allowed), "ok\n");
    let denied = harness::output(
        harness::ssh_to_port(d.port, &w.bastion.key).arg(format!("ssh -F {conf} prod id")),
    );
    assert_eq!(denied.status.code(), Some(126), "{}", show(&denied));
    assert!(
        stderr(&denied).contains("[broker] DENY"),
        "{}",
        show(&denied)
    );
}

/// `rule` text matching `s` literally (ERE).
fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if "\\^$.|?*+()[]{}".contains(c) {
                format!("\\{c}")
            } else {
                c.to_string()
            }
        })
        .collect()
}
