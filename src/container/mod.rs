//! Session containers (SPEC 12): with `SESSION_IMAGE` set, every session
//! runs in a fresh, hardened container of that image, started through the
//! host engine's CLI and removed when the session ends. This module owns the
//! `SESSION_*` settings and their boot checks, the `create` argv, the parent
//! runner, `SESSION_MAX` slots, reaping, and the seam to the monitor that
//! removes a container whose session's processes were killed. It never
//! hands a session a privilege, a device, the engine's socket or the host's
//! network.

pub(crate) mod boot;
pub(crate) mod engine;
pub(crate) mod plan;
pub(crate) mod reap;
pub(crate) mod runner;
pub(crate) mod settings;
pub(crate) mod slots;
pub(crate) mod watch;

pub(crate) use boot::SessionRuntime;

/// A fresh session id: 16 lowercase hex characters from the kernel's CSPRNG.
pub(crate) fn new_session_id() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}
