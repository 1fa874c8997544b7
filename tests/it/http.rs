//! `bastion-cgi` (SPEC 7, issue 6), run for real: started as root, it drops
//! to the session user and runs each command as the wrapper would; clients are real
//! `curl` and raw TCP on 127.0.0.1, so the tests see the bytes on the wire.

mod fixture;

mod auth;
mod boot;
mod connections;
mod framing;
mod limits;
mod privilege;
mod session;
mod streaming;
