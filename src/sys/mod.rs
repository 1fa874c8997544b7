//! The only place with `unsafe` or raw syscalls. Each `unsafe` block carries
//! a `// SAFETY:` comment.

pub(crate) mod child;
pub(crate) mod fd;
pub(crate) mod inotify;
pub(crate) mod peer;
pub(crate) mod poll;
pub(crate) mod privilege;
pub(crate) mod process_group;
pub(crate) mod random;
pub(crate) mod socket;
pub(crate) mod stop;
pub(crate) mod unix_connect;
