//! Owned by the http work; see tests/it/main.rs.
