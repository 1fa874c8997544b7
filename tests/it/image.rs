//! Owned by the image work; see tests/it/main.rs.
