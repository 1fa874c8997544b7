//! Waiting for the signals that ask a long-running bastion process to stop.

/// Resolves on SIGTERM (docker stop, tini) or SIGINT, with the signal's
/// name. Without signal handling it never resolves: the process still
/// serves until it is killed.
pub(crate) async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
