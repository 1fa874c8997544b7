//! Removing session containers: one by name (a session's end, or the
//! monitor when a session's processes vanished), and every container of
//! this bastion instance left by an earlier run (boot). Removal is forced
//! (`rm -f`): a session container holds nothing worth keeping.

use super::engine::{Engine, QUERY_TIMEOUT};
use super::plan::LABEL_INSTANCE;

/// Removes container `name`; one that is already gone is not an error.
pub(crate) fn remove_container(engine: &Engine, name: &str) -> Result<(), String> {
    let r = engine.query(&["rm", "--force", "--volumes", name], QUERY_TIMEOUT);
    let gone = |s: &str| {
        let s = s.to_ascii_lowercase();
        s.contains("no such container")
            || s.contains("no container with name")
            || s.contains("already in progress")
    };
    if r.ok || gone(&r.stderr) {
        Ok(())
    } else {
        Err(format!("cannot remove {name}: {}", r.reason()))
    }
}

/// Removes every container labelled with `instance`; the names removed, or
/// why the engine could not list them. Each removal failure is returned
/// too, so the caller can log it.
pub(crate) fn remove_instance(
    engine: &Engine,
    instance: &str,
) -> Result<Vec<Result<String, String>>, String> {
    let filter = format!("label={LABEL_INSTANCE}={instance}");
    let r = engine.query(
        &[
            "ps",
            "--all",
            "--quiet",
            "--no-trunc",
            "--filter",
            &filter,
            "--format",
            "{{.Names}}",
        ],
        QUERY_TIMEOUT,
    );
    if !r.ok {
        return Err(format!("cannot list session containers: {}", r.reason()));
    }
    Ok(r.stdout
        .lines()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|name| remove_container(engine, name).map(|()| name.to_owned()))
        .collect())
}
