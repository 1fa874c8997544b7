//! Owned by the broker work; see tests/it/main.rs.
