//! Small test harness: unique temp dirs, a command runner whose failures
//! show the command with its stdout, stderr and status, and real OpenSSH
//! peers (ssh-keygen, sshd started per connection by `ssh`'s ProxyCommand).
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Path of one of the project's binaries, built by cargo for this test run.
pub fn bin(name: &str) -> PathBuf {
    let p = match name {
        "bastion-broker" => env!("CARGO_BIN_EXE_bastion-broker"),
        "bastion-wrapper" => env!("CARGO_BIN_EXE_bastion-wrapper"),
        "bastion-keys" => env!("CARGO_BIN_EXE_bastion-keys"),
        "bastion-cgi" => env!("CARGO_BIN_EXE_bastion-cgi"),
        "bastion-entrypoint" => env!("CARGO_BIN_EXE_bastion-entrypoint"),
        "bastion-agent-proxy" => env!("CARGO_BIN_EXE_bastion-agent-proxy"),
        "bastion-monitor" => env!("CARGO_BIN_EXE_bastion-monitor"),
        other => panic!("unknown binary {other}"),
    };
    PathBuf::from(p)
}

/// Path of one of the project's binaries where sshd accepts it as an
/// AuthorizedKeysCommand or ForceCommand: the file and every parent
/// root-owned and not group/world-writable. Cargo's target dir usually is;
/// a checkout under `/tmp` is not, and then all the binaries are copied
/// side by side (the entrypoint finds the others next to itself) into a
/// root-owned directory under `/var/lib`, once per build.
pub fn sshd_safe_bin(name: &str) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    const ALL: [&str; 7] = [
        "bastion-entrypoint",
        "bastion-monitor",
        "bastion-wrapper",
        "bastion-broker",
        "bastion-cgi",
        "bastion-keys",
        "bastion-agent-proxy",
    ];
    let safe = |p: &Path| {
        p.ancestors()
            .all(|a| std::fs::metadata(a).is_ok_and(|m| m.uid() == 0 && m.mode() & 0o022 == 0))
    };
    let built = bin(name);
    if safe(&built) {
        return built;
    }
    // One directory per build: named after where the binaries are and when
    // they were made, so a rebuild gets a fresh copy.
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for b in ALL {
        let p = bin(b);
        p.hash(&mut h);
        let m = std::fs::metadata(&p).unwrap();
        (m.mtime(), m.mtime_nsec(), m.size()).hash(&mut h);
    }
    let dir = PathBuf::from(format!("/var/lib/bastion-it/{:016x}", h.finish()));
    std::fs::create_dir_all(&dir).unwrap();
    for d in [dir.parent().unwrap(), dir.as_path()] {
        set_mode(d, 0o755);
    }
    for b in ALL {
        let copy = dir.join(b);
        if !copy.exists() {
            // Copied under a private name, then renamed: parallel tests
            // never see a half-written binary.
            let tmp = dir.join(format!(".{b}.{}", std::process::id()));
            std::fs::copy(bin(b), &tmp).unwrap();
            set_mode(&tmp, 0o755);
            std::fs::rename(&tmp, &copy).unwrap();
        }
    }
    let copy = dir.join(name);
    assert!(safe(&copy), "cannot place {name} where sshd accepts it");
    copy
}

/// The repository root (for `rootfs/`, `examples/`, ...).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A unique directory, removed on drop unless the test panicked (kept for
/// inspection, and its path is in the panic message of `run`).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let base = std::env::var_os("BASTION_TEST_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let path = base.join(format!(
            "bastion-it-{}-{}-{}",
            tag,
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        // sshd and ssh-keygen check that no parent of a key is writable by others.
        set_mode(&path, 0o755);
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }

    /// Writes `contents` to `rel`, creating parent directories.
    pub fn write(&self, rel: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, contents).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

pub fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Describes a finished command for a failure message.
pub fn describe(cmd: &Command, out: &Output) -> String {
    let mut s = String::new();
    let _ = write!(s, "command: {:?}", cmd.get_program());
    for a in cmd.get_args() {
        let _ = write!(s, " {a:?}");
    }
    let _ = write!(
        s,
        "\nstatus: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    s
}

/// Runs `cmd` with stdin closed and returns its output.
pub fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null());
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()))
}

/// Runs `cmd` and asserts its exit code, returning the output.
pub fn run_expect(cmd: &mut Command, code: i32) -> Output {
    let out = output(cmd);
    if out.status.code() != Some(code) {
        panic!("expected exit code {code}\n{}", describe(cmd, &out));
    }
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `Command` with an empty environment but PATH: tests state every variable
/// the binary sees.
pub fn clean_cmd(program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new(program);
    c.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin");
    c
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts on 127.0.0.1:`port`.
pub fn wait_port(port: u16, timeout: Duration) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listens on 127.0.0.1:{port} after {timeout:?}");
}

/// Polls `f` until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Generates an ed25519 key pair at `path` (and `path.pub`) with `comment`.
pub fn keygen(path: &Path, comment: &str) -> String {
    let _ = std::fs::remove_file(path);
    run_expect(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(path),
        0,
    );
    std::fs::read_to_string(path.with_extension("pub")).unwrap()
}

/// The session user the tests log in as; `tests/setup-host` creates it.
pub const SESSION_USER: &str = "agent";

/// The `ssh` client, batch mode, no config files, client log level `level`;
/// the caller adds the destination and the command.
pub fn ssh_client(identity: &Path, level: &str) -> Command {
    let mut c = Command::new("ssh");
    c.args(["-F", "/dev/null", "-T"])
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args([
            "-o",
            &format!("LogLevel={level}"),
            "-o",
            "ConnectTimeout=10",
        ])
        .arg("-i")
        .arg(identity);
    c
}

/// `ProxyCommand=...` that starts `sshd -i -f cfg` per connection (as
/// OpenSSH's regress suite does): no port, tests run in parallel. sshd logs
/// to `log`; its stderr, which its helpers (bastion-keys) inherit, goes to
/// `log` + `.stderr`, as it would go to `docker logs`, so the client's
/// stderr is only the session's (ssh runs this through `sh -c "exec ..."`).
pub fn sshd_inetd_proxy(sshd_config: &Path, log: &Path) -> String {
    format!(
        "ProxyCommand={} -i -f {} -E {} 2>>{}.stderr",
        which("sshd").display(),
        sshd_config.display(),
        log.display(),
        log.display()
    )
}

/// The `ssh` client talking to an sshd that `ssh` itself starts per
/// connection (see [`sshd_inetd_proxy`]).
pub fn ssh_via_inetd(sshd_config: &Path, log: &Path, identity: &Path) -> Command {
    let mut c = ssh_client(identity, "ERROR");
    c.arg("-o").arg(sshd_inetd_proxy(sshd_config, log));
    c.arg(format!("{SESSION_USER}@bastion-test"));
    c
}

/// The `ssh` client for an sshd listening on 127.0.0.1:`port`.
pub fn ssh_to_port(port: u16, identity: &Path) -> Command {
    let mut c = ssh_client(identity, "ERROR");
    c.args(["-p", &port.to_string()])
        .arg(format!("{SESSION_USER}@127.0.0.1"));
    c
}

/// Full path of a program on PATH or in the sbin dirs (sshd lives there and
/// must be started by absolute path).
pub fn which(name: &str) -> PathBuf {
    for dir in [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not installed (run tests/setup-host)");
}
