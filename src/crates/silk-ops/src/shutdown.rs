//! Waiting for the signals that end a daemon: SIGTERM (monit, bpm) and SIGINT.

use tokio::signal::unix::{signal, SignalKind};

/// Resolves with the signal's name when SIGTERM or SIGINT arrives.
pub async fn wait_for_signal() -> std::io::Result<&'static str> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
