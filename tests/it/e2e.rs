//! Owned by the e2e work; see tests/it/main.rs.
