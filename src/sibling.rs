//! The bastion binaries are installed side by side; each finds the others
//! next to its own executable, never on PATH (which a session could
//! change).

use std::path::PathBuf;

/// The directory of this process's executable.
pub(crate) fn exe_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.parent().map(PathBuf::from)
}

/// `name` next to this process's executable.
pub(crate) fn sibling(name: &str) -> std::io::Result<PathBuf> {
    Ok(std::env::current_exe()?.with_file_name(name))
}
