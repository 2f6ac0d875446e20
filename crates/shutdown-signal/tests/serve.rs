//! The one serve loop: a request in flight when the stop comes still gets its whole response,
//! the listener closes, and `serve` returns once the connections are done (or the grace is up).

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use shutdown_signal::{CancellationToken, TowerToHyperService, serve_http1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_millis(300)).await;
    "finished"
}

async fn server(
    grace: Duration,
) -> (
    std::net::SocketAddr,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let app = Router::new().route("/slow", get(slow));
    let task = tokio::spawn(serve_http1(
        "test",
        listener,
        TowerToHyperService::new(app),
        stop.clone().cancelled_owned(),
        grace,
    ));
    (addr, stop, task)
}

async fn request(addr: std::net::SocketAddr) -> TcpStream {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /slow HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    conn
}

#[tokio::test]
async fn a_request_in_flight_at_stop_finishes_and_the_listener_closes() {
    let (addr, stop, task) = server(Duration::from_secs(5)).await;
    let mut conn = request(addr).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.cancel();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_string(&mut response))
        .await
        .expect("the connection closes after its response")
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("finished"), "{response}");
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("serve returns once the connection is done")
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn the_grace_period_bounds_the_wait() {
    let (addr, stop, task) = server(Duration::from_millis(100)).await;
    let _conn = request(addr).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    stop.cancel();
    task.await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_millis(280),
        "serve returned after {took:?}: the grace (100 ms), not the request (300 ms)"
    );
}
