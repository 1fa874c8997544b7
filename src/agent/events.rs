//! `upstream.sign` / `upstream.refused` (SPEC 13) and the counters behind
//! `bastion_upstream_signatures_total{upstream}` and
//! `bastion_upstream_refused_total{reason}`. [`emit`] is the one seam to
//! the audit trail: today the rendered line on stderr (the container log),
//! the collector's socket once it takes the events over.

use crate::audit::{self, Event};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Writes the event to the audit trail.
pub(crate) fn emit(ev: &Event<'_>) {
    eprintln!("{}", audit::render(ev));
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
    fn lines_carry_the_fields_and_cannot_be_forged() {
        let ev = Event::UpstreamSign {
            upstream: "prod",
            key: "SHA256:abc",
            peer_pid: Some(42),
        };
        assert_eq!(
            audit::render(&ev),
            "event=upstream.sign upstream=prod key=SHA256:abc peer_pid=42"
        );
        let forged = Event::UpstreamRefused {
            reason: "wrong-host",
            upstream: Some("x\nevent=upstream.sign y"),
            peer_pid: None,
        };
        let line = audit::render(&forged);
        assert_eq!(
            line,
            "event=upstream.refused reason=wrong-host upstream=x\\nevent=upstream.sign\\x20y"
        );
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
