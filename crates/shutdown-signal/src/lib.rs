//! Process lifecycle shared by the `milvus-scaler` and `segment-cache` binaries.
//!
//! - [`install`]: the process's one [`CancellationToken`], cancelled on SIGTERM (how Kubernetes
//!   stops a pod) or Ctrl-C. The signal listeners are registered once, when it is first called,
//!   so a signal arriving while no one is waiting is not lost: waiting on the token afterwards
//!   returns at once. (A fresh `tokio::signal` listener per loop pass, as before, only sees
//!   signals delivered after it was made, and tokio's handler has already replaced the default
//!   action, so a SIGTERM between two passes was swallowed.)
//! - [`serve`] / [`serve_http1`]: the one accept loop for every hyper/axum server: accept until
//!   the token is cancelled, then stop accepting and let in-flight requests finish, for a bounded
//!   grace period.

use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use hyper_util::server::graceful::{GracefulConnection, GracefulShutdown};
pub use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
pub use tokio_util::sync::CancellationToken;

static TOKEN: OnceLock<CancellationToken> = OnceLock::new();

/// The process's shutdown token, cancelled on the first SIGTERM or Ctrl-C. The first call
/// registers the signal listeners (before it returns, so from then on the signals no longer
/// kill the process but cancel the token) and spawns the task that waits on them on the current
/// tokio runtime; later calls return the same token. Must be called from inside a runtime.
///
/// If SIGTERM cannot be listened for, says so and the token is cancelled by Ctrl-C alone.
pub fn install() -> CancellationToken {
    TOKEN
        .get_or_init(|| {
            let token = CancellationToken::new();
            let wait = listen();
            let cancel = token.clone();
            tokio::spawn(async move {
                wait.await;
                tracing::info!("stop requested (SIGTERM or Ctrl-C)");
                cancel.cancel();
            });
            token
        })
        .clone()
}

/// Registers the listeners now and returns the future that resolves on the first signal.
#[cfg(unix)]
fn listen() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            (Err(e), Ok(mut int)) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the process");
                int.recv().await;
            }
            (Ok(mut term), Err(e)) => {
                tracing::error!(error = %e, "cannot listen for Ctrl-C; only SIGTERM stops the process");
                term.recv().await;
            }
            (Err(e), Err(_)) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM or Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Registers the listener now and returns the future that resolves on the first signal.
#[cfg(not(unix))]
fn listen() -> impl Future<Output = ()> + Send + 'static {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Serves the connections `listener` accepts until `stop` resolves, then stops accepting and
/// asks every open connection to shut down gracefully (finish the request in flight, then
/// close), waiting up to `grace` for them. `connect` turns an accepted socket into a hyper
/// connection (after a TLS handshake, say), or `None` to drop it; it runs on the connection's
/// own task and counts as in flight. `name` prefixes the log lines.
pub async fn serve<F, Fut, C>(
    name: &'static str,
    listener: TcpListener,
    stop: impl Future<Output = ()>,
    grace: Duration,
    mut connect: F,
) where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = Option<C>> + Send + 'static,
    C: GracefulConnection + Send + 'static,
    C::Error: Display,
{
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (socket, remote) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors, typically: back off instead of spinning.
                        tracing::warn!(error = %e, "{name}: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Taken before the handshake, so a connection still being set up is waited for.
                let watcher = graceful.watcher();
                let connection = connect(socket, remote);
                tokio::spawn(async move {
                    let Some(conn) = connection.await else { return };
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(%remote, error = %e, "{name}: connection ended with an error");
                    }
                });
            }
            () = &mut stop => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "{name}: connections still open after the grace period; closing them"
        );
    }
}

/// [`serve`] with plain HTTP/1.1 over TCP: every connection served by a clone of `service` (a
/// hyper service; wrap a tower service, such as an axum `Router`, in [`TowerToHyperService`]).
pub async fn serve_http1<S, B>(
    name: &'static str,
    listener: TcpListener,
    service: S,
    stop: impl Future<Output = ()>,
    grace: Duration,
) where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<B>,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve(name, listener, stop, grace, move |socket, _| {
        let service = service.clone();
        async move {
            let _ = socket.set_nodelay(true);
            Some(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(socket), service),
            )
        }
    })
    .await;
}
