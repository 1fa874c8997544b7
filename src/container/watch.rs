//! The seam between a session's runner and the root `bastion-monitor`,
//! which outlives every session and cannot be signalled by it: before the
//! runner creates a container it tells the monitor the container's name on
//! a connection it keeps open for the session's life. When that connection
//! drops (the runner ended, normally or by SIGKILL), the monitor removes the
//! container with [`super::reap::remove_container`], so no session container
//! outlives its session's processes by more than the monitor's removal.
//!
//! Protocol on the monitor's event socket, one JSON object per line:
//! `{"type":"container.watch","name":"bastion-session-<id>"}` from the
//! runner, `{"ok":true}` (or `{"ok":false,"error":"..."}`) from the monitor.
//! The monitor accepts only names of the form `bastion-session-<16 hex>`
//! and removes only a container carrying its own instance label.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Held for the session's life; dropping it (or dying) tells the monitor
/// to remove the container.
#[derive(Debug)]
pub(crate) struct Watch {
    _conn: Option<UnixStream>,
}

/// The message registering `name`.
pub(crate) fn request(name: &str) -> String {
    serde_json::json!({ "type": "container.watch", "name": name }).to_string()
}

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

/// Registers `name` with the monitor at `socket`. Without a monitor (no
/// socket configured) there is no watch: the runner still removes its
/// container itself on every end it lives through.
pub(crate) fn register(socket: Option<&Path>, name: &str) -> Result<Watch, String> {
    let Some(socket) = socket else {
        return Ok(Watch { _conn: None });
    };
    let fail =
        |e: std::io::Error| format!("the monitor at {} does not answer: {e}", socket.display());
    let mut conn = UnixStream::connect(socket).map_err(fail)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(fail)?;
    conn.write_all(format!("{}\n", request(name)).as_bytes())
        .map_err(fail)?;
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line).map_err(fail)?;
    let reply: serde_json::Value = serde_json::from_str(line.trim())
        .map_err(|e| format!("the monitor's answer is not JSON: {e}"))?;
    if reply.get("ok") == Some(&serde_json::Value::Bool(true)) {
        Ok(Watch { _conn: Some(conn) })
    } else {
        Err(format!(
            "the monitor refused to watch {name}: {}",
            reply
                .get("error")
                .and_then(|e| e.as_str())
                .unwrap_or("no reason given")
        ))
    }
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
        assert_eq!(
            request("bastion-session-0123456789abcdef"),
            r#"{"name":"bastion-session-0123456789abcdef","type":"container.watch"}"#
        );
    }
}
