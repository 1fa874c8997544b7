//! The one integration-test binary: real binaries, real peers (sshd, ssh,
//! curl, grep, Docker). Each area owns one module.

mod harness;

mod audit;
mod broker;
mod e2e;
mod http;
mod image;
mod keys;
mod ssh;
