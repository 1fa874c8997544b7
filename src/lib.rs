//! docker-bastion: small helpers around OpenSSH `sshd` that give a client one
//! scoped capability (a fixed command, or an allowlisted one run without a
//! shell). Each binary in `bin/` is a thin call into one module here.

#![deny(unsafe_code)]

pub mod agent;
pub mod broker;
pub mod cgi;
pub mod entrypoint;
pub mod keys;
pub mod monitor;
pub mod wrapper;

pub(crate) mod audit;
pub(crate) mod checked;
pub(crate) mod config;
pub(crate) mod exit;
pub(crate) mod lock;
pub(crate) mod session;
pub(crate) mod sibling;
pub(crate) mod sshkey;
#[allow(unsafe_code)]
pub(crate) mod sys;
pub(crate) mod tool;
pub(crate) mod upstream;
