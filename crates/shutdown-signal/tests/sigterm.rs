//! A SIGTERM sent to this test process cancels the process's token, even when it arrives while
//! nothing waits for it, after the wait loop has gone round many times. Its own test binary:
//! the signal goes to the whole process, and the token is one per process.

use std::time::Duration;

#[tokio::test]
async fn sigterm_between_two_waits_is_not_lost() {
    let token = shutdown_signal::install();
    // The binaries' wait loops: a fresh wait on every pass, most passes ending on the timer.
    for _ in 0..1_000 {
        tokio::select! {
            () = tokio::task::yield_now() => {}
            () = token.cancelled() => panic!("cancelled before any signal"),
        }
    }
    // The signal arrives while no pass is waiting.
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(std::process::id().to_string())
        .status()
        .expect("running kill");
    assert!(
        status.success(),
        "kill -TERM {}: {status}",
        std::process::id()
    );
    // Still between two passes: the runtime handles the signal while nothing waits for it
    // (with a fresh tokio listener per pass, as the binaries had, this SIGTERM was lost).
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The next pass sees it.
    tokio::time::timeout(Duration::from_secs(5), token.cancelled())
        .await
        .expect("the token is cancelled by the SIGTERM sent before this wait began");
    // One token per process: asking again gives the same, cancelled one.
    assert!(shutdown_signal::install().is_cancelled());
}
