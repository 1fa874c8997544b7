//! The counters behind `GET /metrics` (SPEC 11) and their Prometheus text
//! rendering, plus the small server on METRICS_PORT. No label ever carries
//! an identity, a request or anything a client chose.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Upper bounds of the session duration histogram, in seconds.
const BUCKETS: [f64; 11] = [
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 14400.0,
];

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// (transport, mode, outcome) -> sessions ended so.
    pub(crate) sessions: BTreeMap<(&'static str, &'static str, &'static str), u64>,
    pub(crate) active_ssh: i64,
    pub(crate) active_http: i64,
    duration_buckets: [u64; BUCKETS.len()],
    duration_sum: f64,
    duration_count: u64,
    pub(crate) allowed: u64,
    pub(crate) denied: u64,
    pub(crate) http_auth_failures: u64,
    pub(crate) ssh_login_failures: u64,
    pub(crate) listener_restarts: u64,
}

impl Metrics {
    pub(crate) fn observe_duration(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                self.duration_buckets[i] += 1;
            }
        }
        self.duration_sum += s;
        self.duration_count += 1;
    }

    pub(crate) fn active(&mut self, transport: &str, delta: i64) {
        match transport {
            "http" => self.active_http += delta,
            _ => self.active_ssh += delta,
        }
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub(crate) fn render(&self, log_lines_dropped: u64) -> String {
        let mut o = String::with_capacity(2048);
        family(
            &mut o,
            "bastion_sessions_total",
            "counter",
            "Sessions ended, by transport, mode and outcome (ok, failed, denied, busy, lost).",
        );
        for ((t, m, out), n) in &self.sessions {
            let _ = writeln!(
                o,
                "bastion_sessions_total{{transport=\"{t}\",mode=\"{m}\",outcome=\"{out}\"}} {n}"
            );
        }
        family(
            &mut o,
            "bastion_sessions_active",
            "gauge",
            "Sessions running now.",
        );
        let _ = writeln!(
            o,
            "bastion_sessions_active{{transport=\"ssh\"}} {}",
            self.active_ssh
        );
        let _ = writeln!(
            o,
            "bastion_sessions_active{{transport=\"http\"}} {}",
            self.active_http
        );
        family(
            &mut o,
            "bastion_session_duration_seconds",
            "histogram",
            "Duration of ended sessions.",
        );
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                o,
                "bastion_session_duration_seconds_bucket{{le=\"{b}\"}} {}",
                self.duration_buckets[i]
            );
        }
        let _ = writeln!(
            o,
            "bastion_session_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            self.duration_count
        );
        let _ = writeln!(
            o,
            "bastion_session_duration_seconds_sum {}",
            self.duration_sum
        );
        let _ = writeln!(
            o,
            "bastion_session_duration_seconds_count {}",
            self.duration_count
        );
        family(
            &mut o,
            "bastion_broker_decisions_total",
            "counter",
            "Broker decisions.",
        );
        let _ = writeln!(
            o,
            "bastion_broker_decisions_total{{decision=\"allow\"}} {}",
            self.allowed
        );
        let _ = writeln!(
            o,
            "bastion_broker_decisions_total{{decision=\"deny\"}} {}",
            self.denied
        );
        family(
            &mut o,
            "bastion_http_auth_failures_total",
            "counter",
            "HTTP requests refused for missing or wrong credentials.",
        );
        let _ = writeln!(
            o,
            "bastion_http_auth_failures_total {}",
            self.http_auth_failures
        );
        family(
            &mut o,
            "bastion_ssh_login_failures_total",
            "counter",
            "Refused or abandoned SSH login attempts, as sshd logged them.",
        );
        let _ = writeln!(
            o,
            "bastion_ssh_login_failures_total {}",
            self.ssh_login_failures
        );
        family(
            &mut o,
            "bastion_http_listener_restarts_total",
            "counter",
            "Times the HTTP listener was started again after it exited.",
        );
        let _ = writeln!(
            o,
            "bastion_http_listener_restarts_total {}",
            self.listener_restarts
        );
        family(
            &mut o,
            "bastion_log_lines_dropped_total",
            "counter",
            "Log lines dropped because the log reader did not keep up.",
        );
        let _ = writeln!(o, "bastion_log_lines_dropped_total {log_lines_dropped}");
        family(
            &mut o,
            "bastion_build_info",
            "gauge",
            "Always 1; the version is a label.",
        );
        let _ = writeln!(
            o,
            "bastion_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        o
    }
}

fn family(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

/// Serves `GET /metrics` on `listener` until the task is dropped. One
/// request per connection, a bounded head, a short timeout.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    render: Arc<dyn Fn() -> String + Send + Sync>,
) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let render = render.clone();
        tokio::spawn(async move {
            let mut head = Vec::with_capacity(512);
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                true
            })
            .await;
            if read != Ok(true) {
                return;
            }
            let (status, body) =
                if head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?") {
                    ("200 OK", render())
                } else if head.starts_with(b"GET ") {
                    ("404 Not Found", "not found\n".to_owned())
                } else {
                    ("405 Method Not Allowed", "method not allowed\n".to_owned())
                };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(resp.as_bytes()))
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_every_family_and_no_free_text_label() {
        let mut m = Metrics::default();
        m.sessions.insert(("ssh", "broker", "denied"), 2);
        m.observe_duration(Duration::from_millis(300));
        m.observe_duration(Duration::from_secs(7200));
        let t = m.render(3);
        for f in [
            "bastion_sessions_total{transport=\"ssh\",mode=\"broker\",outcome=\"denied\"} 2",
            "bastion_sessions_active{transport=\"http\"} 0",
            "bastion_session_duration_seconds_bucket{le=\"0.1\"} 0",
            "bastion_session_duration_seconds_bucket{le=\"0.5\"} 1",
            "bastion_session_duration_seconds_bucket{le=\"+Inf\"} 2",
            "bastion_session_duration_seconds_count 2",
            "bastion_broker_decisions_total{decision=\"deny\"} 0",
            "bastion_http_auth_failures_total 0",
            "bastion_log_lines_dropped_total 3",
            "bastion_build_info{version=",
        ] {
            assert!(t.contains(f), "{f} missing:\n{t}");
        }
    }
}
