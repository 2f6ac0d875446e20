//! The binary's command line: every configuration error, at load or found later in a file the
//! configuration names, exits 2 with one line naming the file and the key.

use std::path::Path;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_segment-cache"))
        .args(args)
        .env("RUST_LOG", "off")
        .env_remove("SEGMENT_CACHE_SECRET_KEY")
        .env_remove("SEGMENT_CACHE_CONFIG")
        .output()
        .expect("run segment-cache")
}

/// A valid configuration with its cache directory in `dir`; the upstream is never reached by
/// these tests (port 9 on loopback: nothing listens).
fn good(dir: &Path) -> String {
    format!(
        "auth: {{ access_key: milvus, secret_key: s3cr3t }}\n\
         upstream: {{ endpoint_url: \"http://127.0.0.1:9\", bucket: milvus-bucket }}\n\
         cache: {{ dir: \"{}\", capacity: 1GiB }}\n",
        dir.join("cache").display()
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path.display().to_string()
}

/// Runs `args`, checks exit status 2 and one `error:` line containing each of `expected`.
fn assert_config_error(args: &[&str], expected: &[&str]) {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    for e in expected {
        assert!(stderr.contains(e), "{args:?}: expected {e:?} in {stderr}");
    }
}

#[test]
fn valid_config_checks_ok() {
    let d = tempfile::tempdir().unwrap();
    let f = write(d.path(), "c.yaml", &good(d.path()));
    let out = run(&["check-config", "--config", &f]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));
}

#[test]
fn bad_configs_exit_2_naming_the_key_in_every_command() {
    let d = tempfile::tempdir().unwrap();
    let good = good(d.path());
    let cases = [
        (
            good.replace("capacity: 1GiB", "capacity: lots"),
            "cache.capacity",
        ),
        (
            good.replace("capacity: 1GiB", "capacity: 0"),
            "cache.capacity",
        ),
        (
            good.replace("milvus-bucket", "Milvus_Bucket"),
            "upstream.bucket",
        ),
        (format!("{good}colour: red\n"), "colour"),
        (
            good.replace("secret_key: s3cr3t", "secret_key: \"\""),
            "auth.secret_key",
        ),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let f = write(d.path(), &format!("bad-{i}.yaml"), text);
        for command in ["check-config", "serve", "warm"] {
            assert_config_error(&[command, "--config", &f], &[&f, key]);
        }
    }
    assert_config_error(
        &[
            "check-config",
            "--config",
            "/nonexistent/segment-cache.yaml",
        ],
        &["/nonexistent/segment-cache.yaml: cannot read"],
    );
}

#[test]
fn an_unreadable_warm_key_list_exits_2_naming_the_key() {
    // The key list is read when the warm starts, after load: it used to exit 1 like a failed GET.
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("keys.txt").display().to_string();
    let f = write(
        d.path(),
        "c.yaml",
        &format!("{}warm: {{ key_list: \"{missing}\" }}\n", good(d.path())),
    );
    assert_config_error(&["warm", "--config", &f], &[&missing, "warm.key_list"]);
}

/// `serve` and `warm` resolve `cache.capacity` against the filesystem holding `cache.dir`: a
/// size above the filesystem's total exits 2 naming the key, the value and the size;
/// `check-config` checks only the file (it is meant for another machine's disk).
#[test]
fn a_capacity_above_the_filesystem_exits_2_at_start() {
    let d = tempfile::tempdir().unwrap();
    let huge = good(d.path()).replace("capacity: 1GiB", "capacity: 1000000TiB");
    let f = write(d.path(), "huge.yaml", &huge);
    for command in ["serve", "warm"] {
        assert_config_error(
            &[command, "--config", &f],
            &[
                &f,
                "cache.capacity",
                "1024000000.0 GiB",
                "filesystem's total size",
            ],
        );
    }
    assert!(run(&["check-config", "--config", &f]).status.success());
    // The flag is checked the same way.
    let ok = write(d.path(), "ok.yaml", &good(d.path()));
    assert_config_error(
        &["warm", "--config", &ok, "--capacity", "1000000TiB"],
        &["cache.capacity", "with flags"],
    );
}
