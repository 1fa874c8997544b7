//! Owned by the ssh work; see tests/it/main.rs.
