//! The binary's command line: bad configuration files give one clear line and exit code 2.

use std::io::Write;
use std::process::Command;

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_milvus-scaler"))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("run milvus-scaler")
}

fn config_file(text: &str) -> tempfile_path::TempPath {
    tempfile_path::write(text)
}

/// A minimal temp-file helper (no extra dependency): removed on drop.
mod tempfile_path {
    use std::path::PathBuf;
    pub struct TempPath(pub PathBuf);
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    pub fn write(text: &str) -> TempPath {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "milvus-scaler-cli-{}-{}.yaml",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let mut f = std::fs::File::create(&path).expect("create temp config");
        super::Write::write_all(&mut f, text.as_bytes()).expect("write temp config");
        TempPath(path)
    }
}

const GOOD: &str = "milvus:\n  - name: demo\n    scrape: { targets: [\"http://127.0.0.1:9/metrics\"], interval: 1s }\n";

#[test]
fn valid_config_checks_ok() {
    let f = config_file(GOOD);
    let out = run(&["check-config", "--config", f.0.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid, 1 Milvus instance"));
}

#[test]
fn bad_configs_exit_2_with_one_line_naming_the_key() {
    let cases = [
        (GOOD.replace("1s", "soon"), "milvus[0].scrape.interval"),
        (
            GOOD.replace("name: demo", "name: demo\n    colour: red"),
            "milvus[0].colour",
        ),
        (
            GOOD.replace("http://127.0.0.1:9/metrics", "tcp://x"),
            "milvus[0].scrape.targets[0]",
        ),
        (
            "milvus: [".to_string(),
            "did not find expected node content",
        ),
        ("".to_string(), "milvus"),
        (
            format!("{GOOD}signals: {{ window: 1s }}\n"),
            "signals.window",
        ),
    ];
    for (text, key) in cases {
        let f = config_file(&text);
        for command in ["check-config", "serve", "signals"] {
            let out = run(&[command, "--config", f.0.to_str().unwrap()]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{command} with {key}: {stderr}");
            assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
            assert!(stderr.starts_with("error: "), "{stderr}");
            assert!(
                stderr.contains(key),
                "{command}: expected {key} in {stderr}"
            );
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
    }
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = run(&[
        "check-config",
        "--config",
        "/nonexistent/milvus-scaler.yaml",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/milvus-scaler.yaml: cannot read"),
        "{stderr}"
    );
}
