//! The forwarding half of the gate: one listener per upstream, each
//! connection relayed to exactly that upstream's host:port. It never
//! chooses a destination from anything the client sends, and every
//! connection it accepts ends in exactly one [`ConnectRecord`].

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// One declared upstream as the gate sees it: where its connections go.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Target {
    /// The upstream's name (`prod`), as declared in `UPSTREAMS`.
    pub(crate) name: String,
    pub(crate) host: String,
    pub(crate) port: u16,
}

/// Bounds of one session's gate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Connections open at once over all of the session's listeners; one
    /// more is accepted and closed at once (the client sees the close).
    pub(crate) max_connections: usize,
    /// A connection with no byte in either direction for this long is
    /// closed.
    pub(crate) idle: Duration,
    /// How long the gate waits for the upstream to accept.
    pub(crate) connect_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 16,
            idle: Duration::from_secs(15 * 60),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// How a forwarded connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Both sides closed their half (or the relay reached end of stream
    /// both ways).
    Closed,
    /// One side reset or failed mid-stream; the other was closed.
    Reset(String),
    /// No byte either way for [`Limits::idle`].
    Idle,
    /// The session already had [`Limits::max_connections`] open.
    Limit,
    /// The upstream did not accept (refused, unreachable, timed out, no
    /// such name).
    ConnectFailed(String),
    /// The gate was closed (the session ended) while it was open.
    GateClosed,
}

impl Outcome {
    /// The `outcome` field of the event: a fixed word, then the reason.
    pub(crate) fn word(&self) -> &'static str {
        match self {
            Outcome::Closed => "closed",
            Outcome::Reset(_) => "reset",
            Outcome::Idle => "idle",
            Outcome::Limit => "limit",
            Outcome::ConnectFailed(_) => "connect-failed",
            Outcome::GateClosed => "gate-closed",
        }
    }

    pub(crate) fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Reset(r) | Outcome::ConnectFailed(r) => Some(r),
            _ => None,
        }
    }
}

/// What one forwarded connection did: the `upstream.connect` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnectRecord {
    pub(crate) session: String,
    pub(crate) identity: String,
    pub(crate) upstream: String,
    /// `host:port` the gate forwarded to.
    pub(crate) target: String,
    /// The session container's end of the connection.
    pub(crate) client: SocketAddr,
    /// Bytes from the session to the upstream.
    pub(crate) bytes_up: u64,
    /// Bytes from the upstream to the session.
    pub(crate) bytes_down: u64,
    pub(crate) duration: Duration,
    pub(crate) outcome: Outcome,
}

impl ConnectRecord {
    /// The `upstream.connect` audit event (SPEC 14); render it with
    /// `audit::render`.
    pub(crate) fn record(&self) -> crate::audit::Record {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        crate::audit::Record::new("upstream.connect")
            .str("session", self.session.clone())
            .str("identity", self.identity.clone())
            .str("upstream", self.upstream.clone())
            .str("target", self.target.clone())
            .str("client", self.client.to_string())
            .int("bytes_up", n(self.bytes_up))
            .int("bytes_down", n(self.bytes_down))
            .int(
                "duration_ms",
                i64::try_from(self.duration.as_millis()).unwrap_or(i64::MAX),
            )
            .str("outcome", self.outcome.word())
            .opt("reason", self.outcome.reason())
    }
}

/// Where records go (the monitor's audit writer). Called once per
/// connection, from the connection's task; it must not block.
pub(crate) type EventSink = Arc<dyn Fn(ConnectRecord) + Send + Sync>;

/// Who the connections belong to.
#[derive(Debug, Clone)]
pub(crate) struct Owner {
    pub(crate) session: String,
    pub(crate) identity: String,
}

/// The running listeners of one session and their connections.
pub(crate) struct Relay {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Relay {
    /// Serves each `(listener, target)` pair until [`Relay::close`].
    pub(crate) fn start(
        listeners: Vec<(TcpListener, Target)>,
        owner: Owner,
        limits: Limits,
        sink: EventSink,
    ) -> Relay {
        let (stop, _) = watch::channel(false);
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        let mut tasks = JoinSet::new();
        for (listener, target) in listeners {
            let ctx = Ctx {
                owner: owner.clone(),
                target: Arc::new(target),
                limits,
                sink: sink.clone(),
                stop: stop.subscribe(),
            };
            tasks.spawn(accept_loop(listener, ctx, slots.clone()));
        }
        Relay { stop, tasks }
    }

    /// Stops accepting, closes every open connection (each still gets its
    /// record, `gate-closed`) and waits until all are done.
    pub(crate) async fn close(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

#[derive(Clone)]
struct Ctx {
    owner: Owner,
    target: Arc<Target>,
    limits: Limits,
    sink: EventSink,
    stop: watch::Receiver<bool>,
}

impl Ctx {
    fn record(&self, client: SocketAddr, t: &Traffic, outcome: Outcome) {
        (self.sink)(ConnectRecord {
            session: self.owner.session.clone(),
            identity: self.owner.identity.clone(),
            upstream: self.target.name.clone(),
            target: target_text(&self.target),
            client,
            bytes_up: t.up.load(Ordering::Relaxed),
            bytes_down: t.down.load(Ordering::Relaxed),
            duration: t.start.elapsed(),
            outcome,
        });
    }
}

/// `host:port`, with brackets around an IPv6 literal.
fn target_text(t: &Target) -> String {
    if t.host.contains(':') {
        format!("[{}]:{}", t.host, t.port)
    } else {
        format!("{}:{}", t.host, t.port)
    }
}

/// Resolves once the gate is closing (or its owner is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn accept_loop(listener: TcpListener, ctx: Ctx, slots: Arc<Semaphore>) {
    let mut stop = ctx.stop.clone();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            // Reap finished connections so the set does not grow.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            r = listener.accept() => match r {
                Ok((sock, peer)) => match slots.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let ctx = ctx.clone();
                        conns.spawn(async move {
                            forward(sock, peer, &ctx).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        drop(sock);
                        ctx.record(peer, &Traffic::new(), Outcome::Limit);
                    }
                },
                // Out of descriptors or a connection reset before accept:
                // the listener stays; a short pause keeps EMFILE from
                // spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

/// Byte counts and the last moment a byte moved, shared by both
/// directions of one connection.
struct Traffic {
    start: Instant,
    up: AtomicU64,
    down: AtomicU64,
    /// Milliseconds after `start` of the last byte either way.
    last: AtomicU64,
}

impl Traffic {
    fn new() -> Traffic {
        Traffic {
            start: Instant::now(),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            last: AtomicU64::new(0),
        }
    }

    fn moved(&self, counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
        let ms = self.start.elapsed().as_millis() as u64;
        self.last.fetch_max(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

async fn forward(client: TcpStream, peer: SocketAddr, ctx: &Ctx) {
    let traffic = Traffic::new();
    let mut stop = ctx.stop.clone();
    let t = &ctx.target;
    let connect = tokio::time::timeout(
        ctx.limits.connect_timeout,
        TcpStream::connect((t.host.as_str(), t.port)),
    );
    let upstream = tokio::select! {
        _ = stopped(&mut stop) => {
            ctx.record(peer, &traffic, Outcome::GateClosed);
            return;
        }
        r = connect => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                ctx.record(peer, &traffic, Outcome::ConnectFailed(e.to_string()));
                return;
            }
            Err(_) => {
                let why = format!("no answer within {}s", ctx.limits.connect_timeout.as_secs());
                ctx.record(peer, &traffic, Outcome::ConnectFailed(why));
                return;
            }
        },
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    let outcome = {
        let up = pump(cr, uw, &traffic, &traffic.up);
        let down = pump(ur, cw, &traffic, &traffic.down);
        tokio::select! {
            o = both_ways(up, down) => o,
            _ = traffic.idle_for(ctx.limits.idle) => Outcome::Idle,
            _ = stopped(&mut stop) => Outcome::GateClosed,
        }
        // Leaving the block drops both halves of both sockets: closed.
    };
    ctx.record(peer, &traffic, outcome);
}

/// Runs both directions; a clean end of one (its half-close passed on)
/// keeps the other going, a failure of either ends both.
async fn both_ways(
    up: impl std::future::Future<Output = io::Result<()>>,
    down: impl std::future::Future<Output = io::Result<()>>,
) -> Outcome {
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    while !(up_done && down_done) {
        tokio::select! {
            r = &mut up, if !up_done => match r {
                Ok(()) => up_done = true,
                Err(e) => return Outcome::Reset(format!("session side: {e}")),
            },
            r = &mut down, if !down_done => match r {
                Ok(()) => down_done = true,
                Err(e) => return Outcome::Reset(format!("upstream side: {e}")),
            },
        }
    }
    Outcome::Closed
}

/// Copies `r` to `w` until end of stream, then half-closes `w` so the peer
/// sees the same end of stream. Buffer bounded: a peer that stops reading
/// stops the copy (and, in time, trips the idle timeout).
async fn pump(
    mut r: impl AsyncRead + Unpin,
    mut w: impl AsyncWrite + Unpin,
    traffic: &Traffic,
    counter: &AtomicU64,
) -> io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return w.shutdown().await;
        }
        w.write_all(&buf[..n]).await?;
        traffic.moved(counter, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::sync::Mutex;

    /// A gate on 127.0.0.1 forwarding to `target_port`; records collected.
    struct TestGate {
        addr: SocketAddr,
        relay: Relay,
        records: Arc<Mutex<Vec<ConnectRecord>>>,
    }

    async fn gate(target_port: u16, limits: Limits) -> TestGate {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let records = Arc::new(Mutex::new(Vec::new()));
        let sink_records = records.clone();
        let sink: EventSink = Arc::new(move |r| sink_records.lock().unwrap().push(r));
        let target = Target {
            name: "prod".into(),
            host: "127.0.0.1".into(),
            port: target_port,
        };
        let owner = Owner {
            session: "0123456789abcdef".into(),
            identity: "alice".into(),
        };
        let relay = Relay::start(vec![(listener, target)], owner, limits, sink);
        TestGate {
            addr,
            relay,
            records,
        }
    }

    impl TestGate {
        async fn records_after_close(self) -> Vec<ConnectRecord> {
            self.relay.close().await;
            let r = self.records.lock().unwrap().clone();
            r
        }

        async fn wait_records(&self, n: usize) -> Vec<ConnectRecord> {
            for _ in 0..2000 {
                let r = self.records.lock().unwrap().clone();
                if r.len() >= n {
                    return r;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("fewer than {n} records: {:?}", self.records.lock().unwrap());
        }
    }

    fn limits() -> Limits {
        Limits {
            max_connections: 4,
            idle: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// An upstream that reads everything until end of stream, then answers
    /// with how many bytes it got and closes: it only answers if the
    /// session's half-close reached it.
    async fn counting_upstream() -> (u16, tokio::task::JoinHandle<()>) {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let port = l.local_addr().unwrap().port();
        let h = tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut all = Vec::new();
                    s.read_to_end(&mut all).await.unwrap();
                    let reply = format!("got {} bytes", all.len());
                    s.write_all(reply.as_bytes()).await.unwrap();
                    s.shutdown().await.unwrap();
                });
            }
        });
        (port, h)
    }

    #[tokio::test]
    async fn half_close_from_the_session_reaches_the_upstream_and_the_reply_comes_back() {
        let (port, _up) = counting_upstream().await;
        let g = gate(port, limits()).await;
        let mut c = TcpStream::connect(g.addr).await.unwrap();
        let payload = vec![b'x'; 300_000];
        c.write_all(&payload).await.unwrap();
        c.shutdown().await.unwrap();
        let mut reply = String::new();
        tokio::time::timeout(Duration::from_secs(60), c.read_to_string(&mut reply))
            .await
            .expect("the session's end of stream never reached the upstream")
            .unwrap();
        assert_eq!(reply, "got 300000 bytes");
        let r = g.wait_records(1).await;
        assert_eq!(r.len(), 1, "{r:?}");
        let r = &r[0];
        assert_eq!(r.outcome, Outcome::Closed);
        assert_eq!(r.bytes_up, 300_000);
        assert_eq!(r.bytes_down, "got 300000 bytes".len() as u64);
        assert_eq!(r.upstream, "prod");
        assert_eq!(r.session, "0123456789abcdef");
        assert_eq!(r.identity, "alice");
        assert_eq!(r.target, format!("127.0.0.1:{port}"));
        assert_eq!(r.client, c.local_addr().unwrap());
    }

    #[tokio::test]
    async fn half_close_from_the_upstream_leaves_the_session_side_open() {
        // The upstream greets, closes its sending half, then still reads
        // what the session sends and answers on a second connection-less
        // channel: here, it records what it read.
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let port = l.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            s.write_all(b"hello").await.unwrap();
            s.shutdown().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            let _ = tx.send(got);
        });
        let g = gate(port, limits()).await;
        let mut c = TcpStream::connect(g.addr).await.unwrap();
        let mut greeting = Vec::new();
        tokio::time::timeout(Duration::from_secs(60), c.read_to_end(&mut greeting))
            .await
            .expect("the upstream's end of stream never reached the session")
            .unwrap();
        assert_eq!(greeting, b"hello");
        // End of stream seen, yet the other way still carries data.
        c.write_all(b"still here").await.unwrap();
        c.shutdown().await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(60), rx).await;
        assert_eq!(
            got.expect("the upstream never saw the end").unwrap(),
            b"still here"
        );
        let r = g.wait_records(1).await;
        assert_eq!(r[0].outcome, Outcome::Closed);
        assert_eq!((r[0].bytes_up, r[0].bytes_down), (10, 5));
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_and_recorded() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            // Echo forever; never closes on its own.
            let mut buf = [0u8; 64];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
        let g = gate(
            port,
            Limits {
                idle: Duration::from_millis(300),
                ..limits()
            },
        )
        .await;
        let mut c = TcpStream::connect(g.addr).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        // Then silence: the gate closes the session's side.
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(60), c.read_to_end(&mut rest))
            .await
            .expect("the idle connection was never closed");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        let r = g.wait_records(1).await;
        assert_eq!(r[0].outcome, Outcome::Idle);
        assert_eq!((r[0].bytes_up, r[0].bytes_down), (4, 4));
    }

    #[tokio::test]
    async fn connections_beyond_the_bound_are_closed_and_recorded() {
        // An upstream that keeps each connection until the session ends it.
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut sink = Vec::new();
                    let _ = s.read_to_end(&mut sink).await;
                });
            }
        });
        let g = gate(port, limits()).await;
        let mut open = Vec::new();
        for _ in 0..4 {
            let mut c = TcpStream::connect(g.addr).await.unwrap();
            c.write_all(b"x").await.unwrap();
            open.push(c);
        }
        // The fifth: closed by the gate, recorded as `limit`. Retried until
        // the gate has taken all four slots (accepting is asynchronous).
        let mut limited = None;
        for _ in 0..500 {
            let mut extra = TcpStream::connect(g.addr).await.unwrap();
            let mut buf = [0u8; 1];
            match tokio::time::timeout(Duration::from_millis(100), extra.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    limited = Some(extra.local_addr().unwrap());
                    break;
                }
                _ => drop(extra),
            }
        }
        let limited = limited.expect("a connection over the bound was never closed");
        let r = g.wait_records(1).await;
        let lim: Vec<_> = r.iter().filter(|r| r.outcome == Outcome::Limit).collect();
        assert_eq!(lim.len(), 1, "{r:?}");
        assert_eq!(lim[0].client, limited);
        // A freed slot is usable again: a new connection then stays open.
        drop(open.pop());
        let mut reused = false;
        for _ in 0..500 {
            let mut again = TcpStream::connect(g.addr).await.unwrap();
            let mut b = [0u8; 1];
            if tokio::time::timeout(Duration::from_millis(100), again.read(&mut b))
                .await
                .is_err()
            {
                reused = true;
                open.push(again);
                break;
            }
        }
        assert!(reused, "a freed slot was never reused");
        let all = g.records_after_close().await;
        // Each connection ends in exactly one record: the 4 held at close.
        let closed = all
            .iter()
            .filter(|r| r.outcome == Outcome::GateClosed)
            .count();
        assert_eq!(closed, 4, "{all:?}");
    }

    #[tokio::test]
    async fn an_upstream_that_refuses_is_one_record_and_a_closed_client() {
        // A port with nothing listening: bind, learn it, close.
        let port = {
            let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            l.local_addr().unwrap().port()
        };
        let g = gate(port, limits()).await;
        let mut c = TcpStream::connect(g.addr).await.unwrap();
        let _ = c.write_all(b"SSH-2.0-test\r\n").await;
        let mut buf = Vec::new();
        let _ = c.read_to_end(&mut buf).await;
        assert!(buf.is_empty());
        let r = g.wait_records(1).await;
        assert!(
            matches!(&r[0].outcome, Outcome::ConnectFailed(why) if why.contains("refused")),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn a_reset_from_the_session_ends_both_sides() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let port = l.local_addr().unwrap().port();
        let (got_tx, got_rx) = tokio::sync::oneshot::channel();
        let (end_tx, end_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 3];
            s.read_exact(&mut buf).await.unwrap();
            let _ = got_tx.send(buf);
            let mut rest = Vec::new();
            let _ = end_tx.send(s.read_to_end(&mut rest).await.map(|_| rest.len()));
        });
        let g = gate(port, limits()).await;
        let c = TcpStream::connect(g.addr).await.unwrap();
        let mut c = c;
        c.write_all(b"abc").await.unwrap();
        assert_eq!(&got_rx.await.unwrap(), b"abc");
        // SO_LINGER 0: closing sends a reset instead of an end of stream.
        #[allow(deprecated)] // blocking on drop is what a reset needs here
        c.set_linger(Some(Duration::ZERO)).unwrap();
        drop(c);
        let end = tokio::time::timeout(Duration::from_secs(60), end_rx)
            .await
            .expect("the upstream side was never closed")
            .unwrap();
        assert!(matches!(end, Ok(0) | Err(_)), "{end:?}");
        let r = g.wait_records(1).await;
        assert!(matches!(r[0].outcome, Outcome::Reset(_)), "{r:?}");
        assert_eq!(r[0].bytes_up, 3);
    }

    #[tokio::test]
    async fn closing_the_gate_closes_open_connections_with_a_record_each() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        let g = gate(port, limits()).await;
        let addr = g.addr;
        let mut a = TcpStream::connect(addr).await.unwrap();
        let mut b = TcpStream::connect(addr).await.unwrap();
        a.write_all(b"12").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = g.records_after_close().await;
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(r.iter().all(|r| r.outcome == Outcome::GateClosed), "{r:?}");
        let mut buf = Vec::new();
        assert!(matches!(a.read_to_end(&mut buf).await, Ok(0) | Err(_)));
        assert!(matches!(b.read_to_end(&mut buf).await, Ok(0) | Err(_)));
        // And the listener is gone.
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
