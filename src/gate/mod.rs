//! The egress gate (SPEC 14): a session container on its own `--internal`
//! network reaches the bastion's gate there, one listener per upstream,
//! each forwarding to exactly its upstream's host:port, and nothing else.
//! The gate never forwards anywhere a client names, and never leaves a
//! session's network behind without a way to reap it.

pub(crate) mod relay;
pub(crate) mod ssh_config;

use crate::config::ConfigError;

/// SPEC 14: with upstreams declared, a session container's only way out is
/// the gate, so a session network of the operator's choosing (which could
/// reach anything) cannot be combined with them. `None` when the pair is
/// fine. Unset, empty and `none` are all "no network".
pub(crate) fn check_session_network(
    session_network: Option<&str>,
    upstreams: Option<&str>,
) -> Option<ConfigError> {
    let network = session_network.map(str::trim).filter(|n| !n.is_empty());
    let has_upstreams = upstreams.is_some_and(|u| !u.trim().is_empty());
    match network {
        Some(n) if n != "none" && has_upstreams => Some(ConfigError::new(
            "SESSION_NETWORK",
            Some(n),
            "cannot be combined with UPSTREAMS: session containers reach upstreams only through the egress gate",
            "unset SESSION_NETWORK (or set it to none), or unset UPSTREAMS",
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_network_with_upstreams_is_a_config_error() {
        let ups = Some("prod deploy@10.0.0.5:22 /run/secrets/prod_key");
        for net in ["bridge", "backend", " backend ", "None", "host"] {
            let e = check_session_network(Some(net), ups).expect(net);
            let line = e.to_string();
            assert!(
                line.starts_with("config error: SESSION_NETWORK=\""),
                "{line}"
            );
            assert!(
                line.contains("UPSTREAMS") && line.contains("unset"),
                "{line}"
            );
        }
        // A value that tries to forge a second log line is shown escaped.
        let e = check_session_network(Some("x\nconfig error: fine"), ups).unwrap();
        assert!(!e.to_string().contains('\n'), "{e}");
    }

    #[test]
    fn none_or_no_upstreams_is_fine() {
        let ups = Some("prod deploy@10.0.0.5:22 /run/secrets/prod_key");
        for net in [None, Some(""), Some("none"), Some("  none ")] {
            assert!(check_session_network(net, ups).is_none(), "{net:?}");
        }
        for u in [None, Some(""), Some(" \n\t")] {
            assert!(check_session_network(Some("backend"), u).is_none(), "{u:?}");
        }
    }
}
