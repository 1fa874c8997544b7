//! A real `bastion-cgi` on 127.0.0.1 (any free port), started as root like
//! in the image, so it drops to the session user; a runtime file and lock
//! file in a temp dir; the real `bastion-wrapper` and broker next to it.
//! Plus raw-TCP and chunked-decoding helpers to check bytes on the wire.
#![allow(dead_code)]

use crate::harness::{bin, clean_cmd, set_mode, wait_until, TempDir};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "t0ken-Secret_value.42";
pub const BASIC: &str = "deployer:pa ss:w0rd";

/// How long anything the tests wait for may take before it counts as "never"
/// (a liveness bound, not a performance threshold).
pub const PATIENCE: Duration = Duration::from_secs(20);

#[derive(Clone)]
pub enum Mode {
    Force(String),
    Broker { rules: String, prefix: String },
}

#[derive(Clone)]
pub enum Auth {
    /// Environment variables given to a standalone listener.
    Env(Vec<(String, String)>),
    /// Bytes written to the listener's stdin with `--credentials-stdin`.
    Stdin(Vec<u8>),
}

#[derive(Clone)]
pub struct Opts {
    pub mode: Mode,
    pub lock: &'static str,
    pub auth: Auth,
    pub args: Vec<String>,
    pub user: String,
}

impl Opts {
    pub fn force(cmd: &str) -> Opts {
        Opts {
            mode: Mode::Force(cmd.to_owned()),
            lock: "exclusive",
            auth: Auth::Env(vec![("HTTP_TOKEN".into(), TOKEN.into())]),
            args: Vec::new(),
            user: crate::harness::SESSION_USER.into(),
        }
    }

    pub fn broker(rules: &str) -> Opts {
        Opts {
            mode: Mode::Broker {
                rules: rules.into(),
                prefix: String::new(),
            },
            ..Opts::force("true")
        }
    }

    pub fn env(mut self, var: &str, value: &str) -> Opts {
        match &mut self.auth {
            Auth::Env(v) => v.push((var.into(), value.into())),
            Auth::Stdin(_) => self.auth = Auth::Env(vec![(var.into(), value.into())]),
        }
        self
    }

    pub fn only_env(mut self, vars: &[(&str, &str)]) -> Opts {
        self.auth = Auth::Env(
            vars.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        );
        self
    }

    pub fn arg(mut self, a: &str) -> Opts {
        self.args.push(a.into());
        self
    }

    pub fn lock(mut self, policy: &'static str) -> Opts {
        self.lock = policy;
        self
    }
}

/// Collects a child's output stream line by line in the background.
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<String>>);

impl Lines {
    fn collect(stream: impl Read + Send + 'static) -> Lines {
        let l = Lines::default();
        let shared = l.0.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stream);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                shared.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        l
    }

    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    pub fn wait_for(&self, what: &str) -> bool {
        wait_until(PATIENCE, || self.text().contains(what))
    }
}

pub struct Bastion {
    pub child: Child,
    pub addr: SocketAddr,
    pub tmp: TempDir,
    pub log: Lines,
    pub err: Lines,
}

/// Writes the runtime file and a root-owned lock file into `tmp`, and a
/// directory `w` the session user may write; `{w}` in the force command or
/// the rules stands for its path.
pub fn write_runtime(tmp: &TempDir, opts: &Opts) -> PathBuf {
    let w = tmp.join("w");
    std::fs::create_dir_all(&w).unwrap();
    set_mode(&w, 0o777);
    let w = w.to_str().unwrap();
    let (mode, rules, prefix) = match &opts.mode {
        Mode::Force(c) => (
            serde_json::json!({"kind": "force", "command": c.replace("{w}", w)}),
            String::new(),
            String::new(),
        ),
        Mode::Broker { rules, prefix } => (
            serde_json::json!({"kind": "broker"}),
            rules.replace("{w}", w),
            prefix.replace("{w}", w),
        ),
    };
    let lock = tmp.write("command.lock", "");
    set_mode(&lock, 0o644);
    let rt = serde_json::json!({
        "user": opts.user,
        "mode": mode,
        "allowed_commands": rules,
        "allowed_commands_file": tmp.join("allowed-commands.list"),
        "command_prefix": prefix,
        "command_lock": opts.lock,
        "lock_file": lock,
        "authorized_keys_dir": tmp.join("users.d"),
        "merged_keys_file": tmp.join("authorized_keys.merged"),
        "pty": false,
    });
    let p = tmp.write("runtime.json", serde_json::to_vec_pretty(&rt).unwrap());
    set_mode(&p, 0o644);
    p
}

/// The listener command for `opts`, not started.
pub fn command(tmp: &TempDir, opts: &Opts) -> Command {
    let runtime = write_runtime(tmp, opts);
    let mut c = clean_cmd(bin("bastion-cgi"));
    c.arg("--runtime")
        .arg(&runtime)
        .args(["--listen", "127.0.0.1", "--port", "0"])
        .args(&opts.args);
    match &opts.auth {
        Auth::Env(vars) => {
            for (k, v) in vars {
                c.env(k, v);
            }
            c.stdin(Stdio::null());
        }
        Auth::Stdin(_) => {
            c.arg("--credentials-stdin").stdin(Stdio::piped());
        }
    }
    c
}

impl Bastion {
    pub fn start(opts: Opts) -> Bastion {
        let tmp = TempDir::new("http");
        let mut c = command(&tmp, &opts);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().expect("start bastion-cgi");
        if let Auth::Stdin(bytes) = &opts.auth {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(bytes).unwrap();
        }
        let log = Lines::collect(child.stdout.take().unwrap());
        let err = Lines::collect(child.stderr.take().unwrap());
        let mut addr = None;
        wait_until(PATIENCE, || {
            addr = err
                .text()
                .split_once("listening on ")
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .and_then(|a| a.parse().ok());
            addr.is_some() || child.try_wait().unwrap().is_some()
        });
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            panic!(
                "bastion-cgi did not start\nstderr:\n{}\nstdout:\n{}",
                err.text(),
                log.text()
            );
        };
        Bastion {
            child,
            addr,
            tmp,
            log,
            err,
        }
    }

    /// The directory `{w}` stands for.
    pub fn w(&self) -> PathBuf {
        self.tmp.join("w")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `curl -sS` with the bearer token on `path`, plus `args`.
    pub fn curl(&self, path: &str, args: &[&str]) -> Output {
        let mut c = Command::new("curl");
        c.args(["-sS", "--max-time", "60"])
            .args(args)
            .arg(self.url(path))
            .stdin(Stdio::null());
        c.output().expect("run curl")
    }

    pub fn run(&self, extra: &[&str]) -> Output {
        let auth = format!("Authorization: Bearer {TOKEN}");
        let mut args = vec!["-H", auth.as_str()];
        args.extend_from_slice(extra);
        self.curl("/cgi-bin/run", &args)
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        s
    }

    /// Sends `req` on a fresh connection and reads until the server closes
    /// it. Panics if it is still open after `PATIENCE`.
    pub fn raw(&self, req: &[u8]) -> Vec<u8> {
        let mut s = self.connect();
        s.write_all(req).unwrap();
        read_to_eof(&mut s)
    }

    /// The access log lines so far.
    pub fn access_lines(&self) -> Vec<String> {
        self.log.text().lines().map(str::to_owned).collect()
    }

    /// Waits until the access log has a line containing every one of `parts`.
    pub fn wait_log(&self, parts: &[&str]) -> String {
        let mut found = None;
        wait_until(PATIENCE, || {
            found = self
                .access_lines()
                .into_iter()
                .find(|l| parts.iter().all(|p| l.contains(p)));
            found.is_some()
        });
        found.unwrap_or_else(|| {
            panic!(
                "no access line with {parts:?}\naccess log:\n{}\nstderr:\n{}",
                self.log.text(),
                self.err.text()
            )
        })
    }

    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let end = Instant::now() + PATIENCE;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!("bastion-cgi did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Bastion {
    /// SIGTERM first, so the listener kills the commands still running
    /// (SIGKILL would leave them behind).
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        if !wait_until(Duration::from_secs(10), || {
            self.child.try_wait().ok().flatten().is_some()
        }) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

pub fn read_to_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => out,
        // A reset after the response is still the end of the connection.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => out,
        Err(e) => panic!(
            "connection still open or failed ({e}); got so far:\n{}",
            String::from_utf8_lossy(&out)
        ),
    }
}

/// Reads from `s` until `needle` appeared in what was read.
pub fn read_until(s: &mut TcpStream, needle: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&out).contains(needle) {
        let n = s.read(&mut buf).unwrap_or_else(|e| {
            panic!(
                "waiting for {needle:?}: {e}; got:\n{}",
                String::from_utf8_lossy(&out)
            )
        });
        assert!(
            n > 0,
            "closed before {needle:?}; got:\n{}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
    }
    out
}

pub fn half_close(s: &TcpStream) {
    let _ = s.shutdown(Shutdown::Write);
}

/// A response as it came over the wire.
#[derive(Debug)]
pub struct Wire {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The chunked body ended with its terminating chunk.
    pub terminated: bool,
    pub trailers: Vec<(String, String)>,
    /// Bytes after the first response.
    pub rest: Vec<u8>,
}

impl Wire {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_fields(text: &str) -> Vec<(String, String)> {
    text.split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').expect("header line");
            (n.to_owned(), v.trim().to_owned())
        })
        .collect()
}

/// Parses one HTTP/1.1 response (Content-Length or chunked).
pub fn parse_response(raw: &[u8]) -> Wire {
    let text = String::from_utf8_lossy(raw);
    let end = find(raw, b"\r\n\r\n").unwrap_or_else(|| panic!("no response head in:\n{text}"));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let (status_line, fields) = head.split_once("\r\n").unwrap_or((&head, ""));
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = parse_fields(fields);
    let mut w = Wire {
        status,
        headers,
        body: Vec::new(),
        terminated: false,
        trailers: Vec::new(),
        rest: Vec::new(),
    };
    let mut pos = end + 4;
    if let Some(len) = w.header("content-length") {
        let len: usize = len.parse().unwrap();
        let stop = (pos + len).min(raw.len());
        w.body = raw[pos..stop].to_vec();
        w.rest = raw[stop..].to_vec();
        return w;
    }
    assert_eq!(w.header("transfer-encoding"), Some("chunked"), "{text}");
    while let Some(nl) = find(&raw[pos..], b"\r\n") {
        let size_text = String::from_utf8_lossy(&raw[pos..pos + nl]).into_owned();
        let size = usize::from_str_radix(size_text.trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size_text:?} in:\n{text}"));
        pos += nl + 2;
        if size == 0 {
            let Some(t_end) = find(&raw[pos..], b"\r\n")
                .filter(|&i| i == 0)
                .or_else(|| find(&raw[pos..], b"\r\n\r\n").map(|i| i + 2))
            else {
                break;
            };
            w.trailers = parse_fields(&String::from_utf8_lossy(&raw[pos..pos + t_end]));
            w.terminated = true;
            w.rest = raw[pos + t_end + 2..].to_vec();
            return w;
        }
        if raw.len() < pos + size + 2 {
            w.body
                .extend_from_slice(&raw[pos..raw.len().min(pos + size)]);
            break;
        }
        w.body.extend_from_slice(&raw[pos..pos + size]);
        pos += size + 2;
    }
    w
}

/// A GET of /cgi-bin/run with the token and extra header lines.
pub fn run_request(extra: &str) -> Vec<u8> {
    format!(
        "GET /cgi-bin/run HTTP/1.1\r\nHost: bastion\r\nAuthorization: Bearer {TOKEN}\r\n{extra}\r\n"
    )
    .into_bytes()
}

/// Whether process `pid` exists (zombies count as gone).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}
