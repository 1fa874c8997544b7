//! Container end-to-end tests: the image `docker-bastion:test` (built by
//! `tests/e2e/build-image` from the release binaries) on a real Docker
//! engine, with sibling containers on a network each test creates, ports
//! published on 127.0.0.1 only, everything removed when the test ends.
//! Without an engine or the image these tests fail with what to run.

mod docker;

mod audit;
mod broker;
mod crypto;
mod force_command;
mod keys;
mod lifecycle;
mod quickstart;
mod upstream;
