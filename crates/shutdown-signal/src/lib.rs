//! Resolves when the process is asked to stop: SIGTERM (how Kubernetes stops a pod) or Ctrl-C.
//! Shared by the `milvus-scaler` and `segment-cache` binaries.

/// Waits for SIGTERM or Ctrl-C. If SIGTERM cannot be listened for, says so and waits for
/// Ctrl-C alone.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the process");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
