//! `upstream.sign` / `upstream.refused` (SPEC 13) and the counters behind
//! `bastion_upstream_signatures_total{upstream}` and
//! `bastion_upstream_refused_total{reason}`. [`emit`] is the one seam to
//! the audit trail: one JSON [`Line`] per event on stderr, which the
//! entrypoint makes a socket to the monitor; the monitor stamps it, adds
//! the session when it can tell, and renders it in `LOG_FORMAT`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::net::UnixStream;

/// One agent event as the proxy hands it to the monitor. Every string is
/// the proxy's own (an upstream name of the table, a fingerprint, a fixed
/// reason word); the monitor escapes them anyway when it renders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Line {
    /// `upstream.sign` or `upstream.refused`.
    pub(crate) event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) upstream: Option<String>,
    /// The fingerprint of the key that signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    /// The asking client process (SO_PEERCRED), when the kernel gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) peer_pid: Option<i32>,
}

impl Line {
    pub(crate) fn sign(upstream: &str, key: &str, peer_pid: Option<i32>) -> Line {
        Line {
            event: "upstream.sign".into(),
            upstream: Some(upstream.into()),
            key: Some(key.into()),
            reason: None,
            peer_pid,
        }
    }

    pub(crate) fn refused(reason: &str, upstream: Option<&str>, peer_pid: Option<i32>) -> Line {
        Line {
            event: "upstream.refused".into(),
            upstream: upstream.map(Into::into),
            key: None,
            reason: Some(reason.into()),
            peer_pid,
        }
    }
}

/// Where events go: the monitor's socket once [`send_to`] gave it, else
/// stderr.
static SINK: std::sync::OnceLock<UnixStream> = std::sync::OnceLock::new();

/// Sends every later event to `fd` (the monitor's sequenced-packet
/// socket), without ever blocking on it.
pub(crate) fn send_to(fd: std::os::fd::OwnedFd) -> std::io::Result<()> {
    let sock = UnixStream::from(fd);
    sock.set_nonblocking(true)?;
    let _ = SINK.set(sock);
    Ok(())
}

/// Hands the event to the audit trail: one write, so one record of the
/// monitor's socket. A full socket drops the event rather than stall the
/// proxy (the counters still count it).
pub(crate) fn emit(line: &Line) {
    use std::io::Write as _;
    let Ok(mut b) = serde_json::to_vec(line) else {
        return;
    };
    b.push(b'\n');
    let _ = match SINK.get() {
        Some(mut f) => f.write_all(&b),
        None => std::io::stderr().lock().write_all(&b),
    };
}

/// The SPEC 13 counters, every label known from the start (a reason that
/// never happened reads 0, so a dashboard can tell "none" from "absent").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub(crate) signatures: BTreeMap<String, u64>,
    pub(crate) refused: BTreeMap<&'static str, u64>,
}

impl Counters {
    pub(crate) fn new<'a>(upstreams: impl IntoIterator<Item = &'a str>) -> Self {
        Counters {
            signatures: upstreams.into_iter().map(|u| (u.to_owned(), 0)).collect(),
            refused: super::policy::REASONS.iter().map(|r| (*r, 0)).collect(),
        }
    }

    pub(crate) fn signed(&mut self, upstream: &str) {
        *self.signatures.entry(upstream.to_owned()).or_default() += 1;
    }

    pub(crate) fn refused(&mut self, reason: &'static str) {
        *self.refused.entry(reason).or_default() += 1;
    }

    /// Prometheus text exposition of both counters.
    pub(crate) fn prometheus(&self) -> String {
        let mut s = String::new();
        s.push_str(
            "# HELP bastion_upstream_signatures_total Signatures made for a login to an upstream.\n",
        );
        s.push_str("# TYPE bastion_upstream_signatures_total counter\n");
        for (u, n) in &self.signatures {
            let _ = writeln!(
                s,
                "bastion_upstream_signatures_total{{upstream=\"{u}\"}} {n}"
            );
        }
        s.push_str("# HELP bastion_upstream_refused_total Agent requests the bastion refused.\n");
        s.push_str("# TYPE bastion_upstream_refused_total counter\n");
        for (r, n) in &self.refused {
            let _ = writeln!(s, "bastion_upstream_refused_total{{reason=\"{r}\"}} {n}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_as_one_json_object() {
        let l = Line::sign("prod", "SHA256:abc", Some(42));
        let text = serde_json::to_string(&l).unwrap();
        assert_eq!(
            text,
            r#"{"event":"upstream.sign","upstream":"prod","key":"SHA256:abc","peer_pid":42}"#
        );
        assert_eq!(serde_json::from_str::<Line>(&text).unwrap(), l);
        let r = Line::refused("wrong-host", Some("x\nevent=upstream.sign y"), None);
        let text = serde_json::to_string(&r).unwrap();
        assert!(!text.contains('\n'), "{text}");
        assert_eq!(serde_json::from_str::<Line>(&text).unwrap(), r);
    }

    #[test]
    fn counters_start_at_zero_and_count() {
        let mut c = Counters::new(["prod", "backup"]);
        c.signed("prod");
        c.refused("add");
        let text = c.prometheus();
        assert!(text.contains("bastion_upstream_signatures_total{upstream=\"prod\"} 1\n"));
        assert!(text.contains("bastion_upstream_signatures_total{upstream=\"backup\"} 0\n"));
        assert!(text.contains("bastion_upstream_refused_total{reason=\"add\"} 1\n"));
        assert!(text.contains("bastion_upstream_refused_total{reason=\"unbound\"} 0\n"));
    }
}
