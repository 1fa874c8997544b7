//! `upstream.sign` / `upstream.refused` (SPEC 13) and the counters behind
//! `bastion_upstream_signatures_total{upstream}` and
//! `bastion_upstream_refused_total{reason}`. [`emit`] is the one seam to
//! the audit trail: it writes the text form on stderr (the container log)
//! until the collector takes the events over.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    Sign {
        upstream: String,
        key: String,
        peer_pid: Option<i32>,
    },
    Refused {
        reason: &'static str,
        /// The upstream whose key was asked for, when there was one.
        upstream: Option<String>,
        peer_pid: Option<i32>,
    },
}

/// `2026-12-01T20:17:14.123Z`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

impl Event {
    /// One `event=... key=value` line (SPEC 11 text form). Every value is
    /// either ours (names validated at boot, fixed reasons) or escaped.
    pub(crate) fn text(&self, ts: SystemTime) -> String {
        let mut s = String::with_capacity(128);
        let _ = write!(s, "ts={} ", rfc3339(ts));
        let pid = |s: &mut String, p: &Option<i32>| {
            if let Some(p) = p {
                let _ = write!(s, " peer_pid={p}");
            }
        };
        match self {
            Event::Sign {
                upstream,
                key,
                peer_pid,
            } => {
                let _ = write!(
                    s,
                    "event=upstream.sign upstream={} key={}",
                    crate::audit::escape(upstream),
                    crate::audit::escape(key)
                );
                pid(&mut s, peer_pid);
            }
            Event::Refused {
                reason,
                upstream,
                peer_pid,
            } => {
                let _ = write!(s, "event=upstream.refused reason={reason}");
                if let Some(u) = upstream {
                    let _ = write!(s, " upstream={}", crate::audit::escape(u));
                }
                pid(&mut s, peer_pid);
            }
        }
        s
    }
}

/// Writes the event to the audit trail. The seam: today a text line on
/// stderr; the collector's socket when it exists.
pub(crate) fn emit(ev: &Event) {
    eprintln!("{}", ev.text(SystemTime::now()));
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

    pub(crate) fn count(&mut self, ev: &Event) {
        match ev {
            Event::Sign { upstream, .. } => {
                *self.signatures.entry(upstream.clone()).or_default() += 1
            }
            Event::Refused { reason, .. } => *self.refused.entry(reason).or_default() += 1,
        }
    }

    /// Prometheus text exposition of both counters.
    pub(crate) fn prometheus(&self) -> String {
        let mut s = String::new();
        s.push_str("# HELP bastion_upstream_signatures_total Signatures made for a login to an upstream.\n");
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
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc_millis() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_796_156_234_123);
        assert_eq!(rfc3339(t), "2026-12-01T20:17:14.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn lines_carry_the_fields_and_cannot_be_forged() {
        let ev = Event::Sign {
            upstream: "prod".into(),
            key: "SHA256:abc".into(),
            peer_pid: Some(42),
        };
        assert_eq!(
            ev.text(UNIX_EPOCH),
            "ts=1970-01-01T00:00:00.000Z event=upstream.sign upstream=prod key=SHA256:abc peer_pid=42"
        );
        let forged = Event::Refused {
            reason: "wrong-host",
            upstream: Some("x\nevent=upstream.sign".into()),
            peer_pid: None,
        };
        let line = forged.text(UNIX_EPOCH);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("event=upstream.refused reason=wrong-host upstream=x\\nevent"));
    }

    #[test]
    fn counters_start_at_zero_and_count() {
        let mut c = Counters::new(["prod", "backup"]);
        c.count(&Event::Sign {
            upstream: "prod".into(),
            key: String::new(),
            peer_pid: None,
        });
        c.count(&Event::Refused {
            reason: "add",
            upstream: None,
            peer_pid: None,
        });
        let text = c.prometheus();
        assert!(text.contains("bastion_upstream_signatures_total{upstream=\"prod\"} 1\n"));
        assert!(text.contains("bastion_upstream_signatures_total{upstream=\"backup\"} 0\n"));
        assert!(text.contains("bastion_upstream_refused_total{reason=\"add\"} 1\n"));
        assert!(text.contains("bastion_upstream_refused_total{reason=\"unbound\"} 0\n"));
    }
}
