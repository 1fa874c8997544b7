//! The HTTP/1.1 server: accepts connections, applies the limits (open
//! connections in all and per client address, head size, header timeout,
//! no request bodies, no Transfer-Encoding, bounded commands), routes `/healthz` and `/cgi-bin/run`, and logs one line per
//! request. It never runs anything before authentication succeeds.

use super::access_log::{Entry, Exit};
use super::body::Body;
use super::command::{Job, Launcher, EXIT_CODE_TRAILER};
use super::conn_io::{ConnIo, ConnShared};
use super::credentials::Credentials;
use crate::tool::Tool;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};

/// Largest request head (request line and headers), in bytes.
pub(crate) const MAX_HEAD: usize = 8 * 1024;
/// hyper's read buffer bound: a head still incomplete at this size is
/// refused without waiting for more.
const MAX_BUF: usize = 16 * 1024;
/// Open connections at most; beyond it, new ones wait in the kernel's
/// accept queue until one closes (idle ones close at the header timeout).
pub(crate) const MAX_CONNECTIONS: usize = 256;
/// Connections over the per-address cap being answered 503 at once at
/// most; beyond it they are closed without an answer.
const MAX_REFUSING: usize = 32;
/// How long a refused connection is given to take its 503.
const REFUSE_TIME: Duration = Duration::from_secs(2);
/// Keepalive on accepted connections: a client silent for a minute is
/// probed, and one that answers no probe for 30 s more is gone (its command
/// is killed like a client that closed).
const KEEPALIVE: crate::sys::socket::Keepalive = crate::sys::socket::Keepalive {
    idle_secs: 60,
    interval_secs: 10,
    probes: 3,
};

pub(crate) const RUN_PATH: &str = "/cgi-bin/run";
pub(crate) const HEALTH_PATH: &str = "/healthz";
pub(crate) const COMMAND_HEADER: &str = "x-bastion-command";
/// Sent by the image's HEALTHCHECK: its `/healthz` requests are not logged.
pub(crate) const HEALTHCHECK_HEADER: &str = "x-bastion-healthcheck";

#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) header_timeout: Duration,
    pub(crate) max_commands: usize,
    /// Connections open at once from one client address.
    pub(crate) max_per_source: usize,
}

/// Open connections per client address (the full address: a NAT gateway
/// counts as one client, and so does each IPv6 address).
#[derive(Debug, Default)]
struct Sources {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection of an address; the count drops with it.
struct SourceTicket {
    sources: Arc<Sources>,
    ip: IpAddr,
}

impl Sources {
    fn enter(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<SourceTicket> {
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(SourceTicket {
            sources: self.clone(),
            ip,
        })
    }
}

impl Drop for SourceTicket {
    fn drop(&mut self) {
        let mut open = self.sources.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Shared by every connection.
pub(crate) struct App {
    creds: Credentials,
    launcher: Launcher,
    commands: Arc<Semaphore>,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
}

impl App {
    pub(crate) fn new(
        creds: Credentials,
        launcher: Launcher,
        limits: Limits,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            creds,
            launcher,
            commands: Arc::new(Semaphore::new(limits.max_commands)),
            limits,
            shutdown,
        }
    }

    /// Resolves once no command is running any more (all permits back).
    pub(crate) async fn commands_finished(&self) {
        let n = u32::try_from(self.limits.max_commands).unwrap_or(u32::MAX);
        let _ = self.commands.acquire_many(n).await;
    }
}

/// Accepts until `shutdown` turns true.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    mut shutdown: watch::Receiver<bool>,
) {
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let sources = Arc::new(Sources::default());
    loop {
        let Ok(slot) = connections.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some(ticket) = sources.enter(peer.ip(), app.limits.max_per_source) else {
                    // Over the cap: answered without taking a slot, and
                    // only as many at once as MAX_REFUSING (a flood from
                    // one address cannot crowd out the others).
                    drop(slot);
                    if let Ok(permit) = refusing.clone().try_acquire_owned() {
                        let max = app.limits.max_per_source;
                        tokio::spawn(async move {
                            refuse_over_cap(stream, peer, max).await;
                            drop(permit);
                        });
                    }
                    continue;
                };
                let app = app.clone();
                tokio::spawn(async move {
                    connection(stream, peer, app).await;
                    drop(ticket);
                    drop(slot);
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                crate::audit::say(Tool::Cgi, format_args!("accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// 503 to a connection over its address's cap, then close. The request
/// is read (and dropped) until the client closes or `REFUSE_TIME` passes, so
/// the close does not reset the answer away.
async fn refuse_over_cap(mut stream: TcpStream, peer: SocketAddr, max: usize) {
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{}",
        over_cap_text(max).len(),
        over_cap_text(max)
    );
    let _ = tokio::time::timeout(REFUSE_TIME, async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
    Entry::new(peer, "-", b"-").log(
        Some(503),
        Exit::None,
        Some("too many connections from this address"),
    );
}

fn over_cap_text(max: usize) -> String {
    format!("too many connections from your address (at most {max}); retry later\n")
}

async fn connection(stream: TcpStream, peer: SocketAddr, app: Arc<App>) {
    let _ = stream.set_nodelay(true);
    if let Err(e) = crate::sys::socket::set_keepalive(&stream, KEEPALIVE) {
        crate::audit::say(
            Tool::Cgi,
            format_args!("cannot turn keepalive on for {peer}: {e}"),
        );
    }
    let shared = Arc::new(ConnShared::default());
    let conn_state = shared.clone();
    let io = TokioIo::new(ConnIo::new(stream, shared.clone()));
    let opened = std::time::Instant::now();
    let timeout = app.limits.header_timeout;
    let svc_app = app.clone();
    let svc = service_fn(move |req| {
        let response = svc_app.handle(req, peer, &shared);
        async move { Ok::<_, Infallible>(response) }
    });
    let result = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_header_size(MAX_HEAD)
        .max_buf_size(MAX_BUF)
        .half_close(false)
        .keep_alive(true)
        .serve_connection(io, svc)
        .await;
    // Errors hyper answered (or cut) itself never reached `handle`: log
    // them here. Other errors belong to a request already logged.
    if let Err(e) = result {
        let (status, note) = if e.is_parse_too_large() {
            (Some(431), "request head too large")
        } else if e.is_parse() {
            (Some(400), "malformed request")
        } else if e.is_timeout() && conn_state.cut_mid_head() {
            (None, "header timeout")
        } else {
            return;
        };
        let mut entry = Entry::new(peer, "-", b"-");
        entry.started = opened;
        entry.log(status, Exit::None, Some(note));
    }
}

fn text(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(Body::text(format!("{msg}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A refusal after which the connection must not be reused: the framing of
/// what follows on it cannot be trusted.
fn closing(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = text(status, msg);
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// `TE: trailers` (RFC 9110 10.1.4), exactly as hyper reads it: hyper
/// sends trailers only then, and a failure must never be reported in a
/// trailer hyper drops (the body would end cleanly).
fn wants_trailers(req: &Request<Incoming>) -> bool {
    req.headers().get_all(header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|line| {
            line.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    })
}

impl App {
    fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        conn: &Arc<ConnShared>,
    ) -> Response<Body> {
        let head = conn.next_head();
        let mut entry = Entry::new(peer, req.method().as_str(), req.uri().path().as_bytes());
        let log = |entry: &Entry, r: Response<Body>| {
            entry.log(Some(r.status().as_u16()), Exit::None, None);
            r
        };
        let h = req.headers();

        // Framing first: any doubt about where this request ends, and the
        // connection is answered and closed.
        if let Some(fault) = head.fault {
            let r = closing(
                StatusCode::BAD_REQUEST,
                &format!("bad request: {}", fault.describe()),
            );
            entry.log(Some(400), Exit::None, Some(fault.describe()));
            return r;
        }
        if h.contains_key(header::TRANSFER_ENCODING) {
            return log(
                &entry,
                closing(
                    StatusCode::BAD_REQUEST,
                    "bad request: Transfer-Encoding is not accepted on requests",
                ),
            );
        }
        if head.content_length_lines > 1 || h.get_all(header::CONTENT_LENGTH).iter().count() > 1 {
            return log(
                &entry,
                closing(
                    StatusCode::BAD_REQUEST,
                    "bad request: more than one Content-Length",
                ),
            );
        }
        if !hyper::body::Body::is_end_stream(req.body()) {
            return log(
                &entry,
                closing(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request bodies are not accepted; send the command in the X-Bastion-Command header",
                ),
            );
        }

        let path = req.uri().path();
        if path == HEALTH_PATH {
            return match *req.method() {
                // The image's HEALTHCHECK marks its requests: one every few
                // seconds must not fill the log. It runs nothing either way.
                Method::GET | Method::HEAD if h.contains_key(HEALTHCHECK_HEADER) => {
                    text(StatusCode::OK, "ok")
                }
                Method::GET | Method::HEAD => log(&entry, text(StatusCode::OK, "ok")),
                _ => log(&entry, method_not_allowed("GET, HEAD")),
            };
        }
        if path != RUN_PATH {
            return log(&entry, text(StatusCode::NOT_FOUND, "not found"));
        }
        if !matches!(*req.method(), Method::GET | Method::POST) {
            return log(&entry, method_not_allowed("GET, POST"));
        }

        let mut auth = h.get_all(header::AUTHORIZATION).iter();
        let (first, second) = (auth.next(), auth.next());
        let who = match second {
            None => self.creds.check(first.map(HeaderValue::as_bytes)),
            Some(_) => None,
        };
        let Some(who) = who else {
            self.launcher.report_auth_failure();
            let mut r = text(StatusCode::UNAUTHORIZED, "unauthorized");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(self.creds.scheme().challenge()),
            );
            return log(&entry, r);
        };
        entry.who = Some(who);

        if req.version() != Version::HTTP_11 {
            return log(
                &entry,
                closing(
                    StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                    "use HTTP/1.1: the result of a command is signalled by chunked encoding",
                ),
            );
        }
        let mut commands = h.get_all(COMMAND_HEADER).iter();
        let request = match (commands.next(), commands.next()) {
            (_, Some(_)) => {
                return log(
                    &entry,
                    closing(
                        StatusCode::BAD_REQUEST,
                        "bad request: more than one X-Bastion-Command",
                    ),
                )
            }
            (c, None) => c.map(|v| v.as_bytes().to_vec()),
        };
        entry.command.clone_from(&request);

        if *self.shutdown.borrow() {
            return log(
                &entry,
                closing(StatusCode::SERVICE_UNAVAILABLE, "the listener is stopping"),
            );
        }
        let Ok(permit) = self.commands.clone().try_acquire_owned() else {
            let mut r = text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "too many commands running (at most {}); retry later",
                    self.limits.max_commands
                ),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return log(&entry, r);
        };

        let slot = match &self.launcher.session_slots {
            None => None,
            Some(s) => match crate::container::slots::acquire(&s.dir, s.max) {
                Ok(Some(slot)) => Some(slot),
                Ok(None) => {
                    // Logged beside the answer, as a busy session.
                    let (launcher, busy) = (self.launcher.clone(), entry.clone());
                    tokio::spawn(async move {
                        launcher.report_busy(&busy, request.as_deref()).await;
                    });
                    let mut r = text(StatusCode::SERVICE_UNAVAILABLE, crate::lock::BUSY_LINE);
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    return log(&entry, r);
                }
                Err(e) => {
                    eprintln!("bastion-cgi: no session slot: {e}");
                    return log(
                        &entry,
                        closing(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "internal error: the command could not be started",
                        ),
                    );
                }
            },
        };
        let want_trailers = wants_trailers(&req);
        let job = Job {
            request,
            want_trailers,
            entry: entry.clone(),
            permit,
            slot,
        };
        match self.launcher.start(job, self.shutdown.clone()) {
            Ok(output) => {
                let body = Body::stream(output, conn.clone(), self.launcher.stall_timeout);
                let mut r = Response::new(body);
                let hs = r.headers_mut();
                hs.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                hs.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                hs.insert(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                );
                if want_trailers {
                    hs.insert(header::TRAILER, HeaderValue::from_static(EXIT_CODE_TRAILER));
                }
                // Logged by the command's supervisor when it ends.
                r
            }
            Err(e) => {
                crate::audit::say(Tool::Cgi, format_args!("cannot start a command: {e}"));
                let r = closing(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error: the command could not be started",
                );
                entry.log(Some(500), Exit::None, Some(&format!("spawn failed: {e}")));
                r
            }
        }
    }
}
