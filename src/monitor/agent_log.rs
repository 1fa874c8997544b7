//! The agent proxy's events (SPEC 13), relayed into the audit trail: the
//! proxy writes one JSON [`Line`] per event on its stderr, one end of a
//! sequenced-packet socket only the proxy holds; the monitor stamps it,
//! adds the session the asking client belongs to when it can tell, and
//! renders it in `LOG_FORMAT` like every other event. Anything else the
//! proxy says (its own error messages) is relayed escaped, as a note.

use super::procs::{self, ProcKey};
use super::Shared;
use crate::agent::events::Line;
use crate::audit::Record;
use std::os::fd::OwnedFd;

/// How far up from the asking client the session's wrapper may be
/// (`ssh` under a shell under the wrapper is three).
const MAX_DEPTH: usize = 64;

/// Reads records until every proxy is gone. Runs on its own thread.
pub(crate) fn run(fd: OwnedFd, shared: Shared) {
    super::relay::records(fd, |record| {
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        match serde_json::from_slice::<Line>(record)
            .ok()
            .and_then(|l| to_record(&shared, l))
        {
            Some(r) => shared.emit(r),
            None => shared.note(&format!(
                "bastion-agent-proxy: {}",
                crate::audit::escape_bytes(record)
            )),
        }
    });
}

/// The event as the audit trail records it; `None` for a name the proxy
/// does not write.
fn to_record(shared: &Shared, l: Line) -> Option<Record> {
    let name = match l.event.as_str() {
        "upstream.sign" => "upstream.sign",
        "upstream.refused" => "upstream.refused",
        _ => return None,
    };
    let session = l.peer_pid.and_then(|p| session_of(shared, p));
    let (id, identity) = match session {
        Some((id, identity)) => (Some(id), Some(identity)),
        None => (None, None),
    };
    Some(
        Record::new(name)
            .opt("session", id)
            .opt("identity", identity)
            .opt("upstream", l.upstream)
            .opt("key", l.key)
            .opt("reason", l.reason)
            .opt_int("peer_pid", l.peer_pid.map(i64::from)),
    )
}

/// The session (id, identity) whose wrapper is `pid` or an ancestor of
/// it. The kernel sets every parent, so a client cannot claim a session
/// it does not run under; a client in another pid namespace (a session
/// container) has no pid here and no session.
fn session_of(shared: &Shared, pid: i32) -> Option<(String, String)> {
    let st = shared.state.lock().unwrap();
    if st.live.is_empty() {
        return None;
    }
    let mut cur = pid;
    for _ in 0..MAX_DEPTH {
        if cur <= 1 {
            return None;
        }
        let s = procs::stat(cur)?;
        let key = ProcKey {
            pid: cur,
            start: s.start,
        };
        if let Some(found) = st.live.get(&key) {
            return Some(found.clone());
        }
        cur = s.ppid;
    }
    None
}
