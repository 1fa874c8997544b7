//! The seam between a session's runner and the root `bastion-monitor`,
//! which outlives every session and cannot be signalled by it: before the
//! runner creates a container it tells the monitor the container's name on
//! a connection it keeps open for the session's life. When that connection
//! drops (the runner ended, normally or by SIGKILL), the monitor removes the
//! container with [`super::reap::remove_container`], so no session container
//! outlives its session's processes by more than the monitor's removal.
//!
//! On the session's connection to the monitor's event socket the runner
//! sends `{"op":"register","container":"bastion-session-<id>"}` (the engine
//! is the one in the root-owned runtime file, never one the session names)
//! and waits for the answer (an `error` refuses the session). The monitor
//! accepts only names of the form `bastion-session-<16 hex>`
//! and removes only a container carrying its own instance label.

/// Whether `name` is a session container name the monitor may remove
/// (the monitor's side of the protocol checks every name with it).
pub(crate) fn is_session_name(name: &str) -> bool {
    name.strip_prefix("bastion-session-").is_some_and(|id| {
        id.len() == 16
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_session_name("bastion-session-0123456789abcdef"));
        for n in [
            "bastion-session-",
            "bastion-session-0123456789ABCDEF",
            "other",
            "bastion-session-0123456789abcdef0",
        ] {
            assert!(!is_session_name(n), "{n}");
        }
    }
}
