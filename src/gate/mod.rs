//! The egress gate (SPEC 14): a session container on its own `--internal`
//! network reaches the bastion's gate there, one listener per upstream,
//! each forwarding to exactly its upstream's host:port, and nothing else.
//! The gate never forwards anywhere a client names, and never leaves a
//! session's network behind without a way to reap it.

pub(crate) mod relay;
pub(crate) mod ssh_config;
