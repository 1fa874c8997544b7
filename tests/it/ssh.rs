//! The SSH path against real OpenSSH: the real `bastion-entrypoint` prepares
//! a root (`BASTION_ROOT`), renders `sshd_config` from `rootfs/`, and a real
//! `ssh` client logs in through `sshd -i` (or a real listening sshd) with
//! the real `bastion-keys`, `bastion-wrapper` and `bastion-broker`.

pub(crate) mod fixture;

mod boot;
mod broker;
pub mod crypto;
mod exhaustion;
mod force;
mod hardening;
mod lock;
mod one_uid;
mod rules_snapshot;
mod upstream;
mod wrapper;
