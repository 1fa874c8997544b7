//! Owned by the keys work; see tests/it/main.rs.
