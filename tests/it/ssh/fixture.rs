//! A bastion root for one test: `rootfs/` copied in, cached host keys, a
//! client key in `users.d`, and the entrypoint run against it.

use crate::harness::{self, TempDir};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// Host keys generated once per test run (RSA generation is slow) and
/// copied into every root that does not test key generation itself.
fn cached_host_keys() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("bastion-it-hostkeys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // What a fresh deployment makes: ed25519 and 4096-bit RSA.
        for (t, bits) in [("ed25519", "256"), ("rsa", "4096")] {
            harness::run_expect(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", t, "-b", bits, "-N", "", "-C", "", "-f"])
                    .arg(dir.join(format!("ssh_host_{t}_key"))),
                0,
            );
        }
        dir
    })
}

pub struct Bastion {
    pub root: TempDir,
    /// The client's private key; its public half is `users.d/tester.pub`.
    pub key: PathBuf,
    env: Vec<(String, String)>,
}

impl Bastion {
    /// A root with host keys already in place.
    pub fn new(tag: &str) -> Bastion {
        let b = Bastion::without_host_keys(tag);
        let keys = b.root.join("etc/ssh/keys");
        std::fs::create_dir_all(&keys).unwrap();
        harness::run_expect(
            Command::new("cp")
                .arg("-a")
                .arg(format!("{}/.", cached_host_keys().display()))
                .arg(&keys),
            0,
        );
        b
    }

    pub fn without_host_keys(tag: &str) -> Bastion {
        let root = TempDir::new(tag);
        harness::run_expect(
            Command::new("cp")
                .arg("-a")
                .arg(harness::repo().join("rootfs/."))
                .arg(root.path()),
            0,
        );
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::copy("/etc/group", root.join("etc/group")).unwrap();
        let key = root.join("client/id_ed25519");
        std::fs::create_dir_all(key.parent().unwrap()).unwrap();
        let public = harness::keygen(&key, "tester@it");
        root.write("etc/bastion/users.d/tester.pub", public);
        Bastion {
            root,
            key,
            env: Vec::new(),
        }
    }

    /// A directory the session user can write to (mode 1777), so a test
    /// that asserts "this file was not created" could see it if it were.
    pub fn writable_dir(&self) -> PathBuf {
        let dir = self.root.join("writable");
        if !dir.exists() {
            std::fs::create_dir(&dir).unwrap();
            harness::set_mode(&dir, 0o1777);
        }
        dir
    }

    pub fn env(mut self, var: &str, value: &str) -> Bastion {
        self.env.push((var.to_owned(), value.to_owned()));
        self
    }

    pub fn force(self, command: &str) -> Bastion {
        self.env("FORCE_COMMAND", command)
    }

    /// Replaces `from` by `to` in this root's copy of the sshd_config
    /// template (a shorter timeout for a test); `from` must be there.
    pub fn edit_template(self, from: &str, to: &str) -> Bastion {
        let t = self
            .root
            .join("usr/local/share/bastion/sshd_config.template");
        let text = std::fs::read_to_string(&t).unwrap();
        assert!(text.contains(from), "{from:?} is not in the template");
        std::fs::write(&t, text.replace(from, to)).unwrap();
        self
    }

    /// The entrypoint with exactly this root's environment.
    pub fn entrypoint(&self) -> Command {
        // sshd runs the wrapper and bastion-keys from the entrypoint's own
        // directory, so that must be one it accepts.
        let mut c = harness::clean_cmd(harness::sshd_safe_bin("bastion-entrypoint"));
        c.env("BASTION_ROOT", self.root.path());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Runs `bastion-entrypoint --prepare-only`; returns the rendered config.
    pub fn prepare(&self) -> PathBuf {
        let out = harness::run_expect(self.entrypoint().arg("--prepare-only"), 0);
        let cfg = PathBuf::from(harness::stdout(&out).trim());
        assert!(cfg.starts_with(self.root.path()), "{cfg:?}");
        cfg
    }

    pub fn log(&self) -> PathBuf {
        self.root.join("sshd.log")
    }

    pub fn sshd_log(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// `ssh` through `sshd -i` on the rendered config, client log level
    /// ERROR. Options may follow (ssh parses options after the host), then
    /// the remote command.
    pub fn ssh(&self, cfg: &Path) -> Command {
        self.ssh_logging(cfg, "ERROR")
    }

    /// Like [`ssh`](Self::ssh) but the client logs at `level` (INFO shows
    /// the server's refusals of forwardings). sshd's own stderr, which its
    /// helpers (bastion-keys) inherit, goes to a file as it would go to
    /// `docker logs`, so the client's stderr is only the session's.
    pub fn ssh_logging(&self, cfg: &Path, level: &str) -> Command {
        let mut c = harness::ssh_client(&self.key, level);
        c.arg("-o")
            .arg(self.proxy_command(cfg))
            .arg(format!("{}@bastion-test", harness::SESSION_USER));
        c
    }

    /// `ProxyCommand=...` starting `sshd -i` on `cfg`, logging to
    /// [`log`](Self::log).
    pub fn proxy_command(&self, cfg: &Path) -> String {
        harness::sshd_inetd_proxy(cfg, &self.log())
    }

    /// Starts the entrypoint for real (it execs `sshd -D -e`) on a free
    /// loopback port and waits until it accepts.
    pub fn start(&self) -> Daemon {
        let port = harness::free_port();
        let log_path = self.root.join(format!("entrypoint-{port}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = self
            .entrypoint()
            .env("SSH_PORT", port.to_string())
            .env("SSH_LISTEN_ADDRESS", "127.0.0.1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut d = Daemon {
            child,
            port,
            log: log_path,
        };
        harness::wait_port(port, Duration::from_secs(30));
        assert!(d.child.try_wait().unwrap().is_none(), "entrypoint exited");
        d
    }
}

/// A running entrypoint (now sshd); killed on drop.
pub struct Daemon {
    pub child: Child,
    pub port: u16,
    /// The entrypoint's output, then sshd's (`-e`): what `docker logs` shows.
    pub log: PathBuf,
}

impl Daemon {
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Spawns `cmd` with piped stdout/stderr and stdin closed.
pub fn spawn(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}
