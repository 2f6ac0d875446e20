//! The binary's command line: bad configuration files give one clear line and exit code 2.

use std::process::Command;

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_milvus-scaler"))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("run milvus-scaler")
}

/// [`run`] as outside a pod, whatever the machine running the test is.
fn run_outside_a_cluster(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_milvus-scaler"))
        .args(args)
        .env("RUST_LOG", "off")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        // Nor a kubeconfig (headroom would use one).
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .expect("run milvus-scaler")
}

/// A temporary file holding `text`, removed when dropped.
fn config_file(text: &str) -> tempfile::TempPath {
    let file = tempfile::Builder::new()
        .prefix("milvus-scaler-cli-")
        .suffix(".yaml")
        .tempfile()
        .expect("create temp config");
    std::fs::write(file.path(), text).expect("write temp config");
    file.into_temp_path()
}

const GOOD: &str = "milvus:\n  - name: demo\n    scrape: { targets: [\"http://127.0.0.1:9/metrics\"], interval: 1s }\n";

#[test]
fn valid_config_checks_ok() {
    let f = config_file(GOOD);
    let out = run(&["check-config", "--config", f.to_str().unwrap()]);
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
            let out = run(&[command, "--config", f.to_str().unwrap()]);
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

/// A node_groups section for GOOD's instance.
const NODE_GROUPS: &str = "node_groups:\n  groups:\n    - name: q\n      asg: a\n      milvus: demo\n      instance_type: r6i.2xlarge\n      pod: { cpu: \"2\", memory: 8Gi }\n      replicas: { signal: search_queue_depth, target_per_pod: 8, max: 10 }\n";

/// Runs `args` and checks exit status 2 with one `error:` line that contains `key`.
fn assert_config_error(args: &[&str], key: &str) {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(key), "{args:?}: expected {key} in {stderr}");
}

#[test]
fn node_group_errors_exit_2_in_every_command() {
    // Node groups are validated once, at load: every command stops there with 2.
    let cases = [
        (
            format!("{GOOD}{NODE_GROUPS}").replace("search_queue_depth", "cpu"),
            "node_groups.groups[0].replicas.signal",
        ),
        (
            format!("{GOOD}{NODE_GROUPS}").replace(
                "max: 10",
                "max: 10 }\n      warm_pool: { min_size: 1, pool_state: Off",
            ),
            "node_groups.groups[0].warm_pool.pool_state",
        ),
        (
            format!("{GOOD}{NODE_GROUPS}").replace("milvus: demo", "milvus: other"),
            "node_groups.groups[0].milvus",
        ),
    ];
    for (text, key) in cases {
        let f = config_file(&text);
        for command in ["check-config", "serve", "plan-nodes"] {
            assert_config_error(&[command, "--config", f.to_str().unwrap()], key);
        }
    }
}

#[test]
fn plan_nodes_inputs_are_configuration() {
    // No node_groups section: nothing to plan, a configuration error naming the section.
    let f = config_file(GOOD);
    assert_config_error(
        &["plan-nodes", "--config", f.to_str().unwrap()],
        "node_groups",
    );
    // A bad trace for --simulate names the trace file and the key.
    let f = config_file(&format!("{GOOD}{NODE_GROUPS}"));
    let trace = config_file("{\"step_seconds\": 15, \"groups\": {\"q\": {\"desired\": -1}}}");
    let trace_path = trace.to_str().unwrap();
    assert_config_error(
        &[
            "plan-nodes",
            "--config",
            f.to_str().unwrap(),
            "--simulate",
            trace_path,
        ],
        &format!("{trace_path}: groups.q.desired"),
    );
    // A trace naming a group that is not configured.
    let trace = config_file(
        "{\"step_seconds\": 15, \"groups\": {\"x\": {\"desired\": 1, \"min_size\": 0, \"max_size\": 3}}, \"values\": {\"x\": [1]}}",
    );
    assert_config_error(
        &[
            "plan-nodes",
            "--config",
            f.to_str().unwrap(),
            "--simulate",
            trace.to_str().unwrap(),
        ],
        "trace group \"x\" is not in node_groups.groups",
    );
}

#[test]
fn local_hpa_with_a_bad_hpa_file_exits_2_naming_the_field() {
    let hpa = config_file(
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: { name: q }\nspec:\n  scaleTargetRef: { apiVersion: apps/v1, kind: Deployment, name: q }\n  maxReplicas: lots\n",
    );
    assert_config_error(
        &[
            "local-hpa",
            "--hpa",
            hpa.to_str().unwrap(),
            "--scale-url",
            "http://127.0.0.1:9/scale",
            "--once",
        ],
        "spec.maxReplicas",
    );
    assert_config_error(
        &[
            "local-hpa",
            "--hpa",
            "/nonexistent/hpa.yaml",
            "--scale-url",
            "http://127.0.0.1:9/scale",
            "--once",
        ],
        "/nonexistent/hpa.yaml: cannot read",
    );
}

#[test]
fn local_hpa_cpu_timings_are_durations_named_when_bad() {
    for flag in ["--cpu-initialization-period", "--initial-readiness-delay"] {
        let out = run(&[
            "local-hpa",
            "--hpa",
            "/nonexistent/hpa.yaml",
            "--scale-url",
            "http://127.0.0.1:9/scale",
            flag,
            "5 parsecs",
            "--once",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // clap's usage error (exit 2), before the HPA file is even read.
        assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
        assert!(
            stderr.starts_with("error: invalid value '5 parsecs' for"),
            "{stderr}"
        );
        assert!(stderr.contains(flag), "{flag}: {stderr}");
        assert!(!stderr.contains("cannot read"), "{stderr}");
    }
    // Documented with kube-controller-manager's defaults and flag names.
    let out = run(&["local-hpa", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for text in [
        "--cpu-initialization-period <CPU_INITIALIZATION_PERIOD>",
        "[default: 5m]",
        "--horizontal-pod-autoscaler-cpu-initialization-period",
        "--initial-readiness-delay <INITIAL_READINESS_DELAY>",
        "[default: 30s]",
        "--horizontal-pod-autoscaler-initial-readiness-delay",
    ] {
        assert!(help.contains(text), "{text} not in {help}");
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

#[test]
fn live_front_proxy_ca_outside_a_cluster_exits_2_saying_what_to_mount() {
    let f = config_file(&format!(
        "{GOOD}telemetry: {{ listen: \"127.0.0.1:0\" }}\nexternal_metrics:\n  listen: 127.0.0.1:0\n  client_auth: {{ client_ca: {{ from_cluster: true }} }}\n"
    ));
    let out = run_outside_a_cluster(&["serve", "--config", f.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("client_ca.from_cluster"), "{stderr}");
    assert!(stderr.contains("automountServiceAccountToken"), "{stderr}");
    assert_eq!(
        stderr.matches("from_cluster").count(),
        1,
        "said once: {stderr}"
    );
}

const HEADROOM: &str = "headroom:\n  milvus: demo\n  workload: { namespace: milvus, deployment: milvus-querynode }\n  planner: { pod_capacity: 60, time_to_ready: { node_launch: 100s, load: 20s }, growth_window: 5m, hold: 10m, step_down_interval: 1m, cap: 8 }\n  holder: { placeholder: { namespace: milvus, deployment: milvus-querynode-headroom } }\n";

#[test]
fn a_headroom_section_is_checked_and_its_errors_name_the_key() {
    let f = config_file(&format!("{GOOD}{HEADROOM}"));
    let out = run(&["check-config", "--config", f.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("headroom: placeholder"), "{stdout}");
    let bad = config_file(&format!("{GOOD}{HEADROOM}").replace("milvus: demo", "milvus: prod"));
    assert_config_error(
        &["check-config", "--config", bad.to_str().unwrap()],
        "headroom.milvus",
    );
    let bad = config_file(&format!("{GOOD}{HEADROOM}").replace("placeholder:", "balloon:"));
    assert_config_error(
        &["check-config", "--config", bad.to_str().unwrap()],
        "headroom.holder",
    );
    let bad = config_file(&format!("{GOOD}{HEADROOM}").replace("cap: 8", "cap: 8, floor: 9"));
    assert_config_error(
        &["check-config", "--config", bad.to_str().unwrap()],
        "floor: 9 is above cap 8",
    );
}

#[test]
fn headroom_outside_a_cluster_exits_2_saying_what_to_mount() {
    let f = config_file(&format!("{GOOD}{HEADROOM}"));
    let out = run_outside_a_cluster(&["plan-nodes", "--config", f.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("headroom: not running in a Kubernetes pod"),
        "{stderr}"
    );
    assert!(stderr.contains("automountServiceAccountToken"), "{stderr}");
    assert!(stderr.contains("no usable kubeconfig"), "{stderr}");
}

#[test]
fn leader_election_errors_name_the_key() {
    // One set of settings (crates/leader-lease) in both sections, each named under its own.
    for (section, text) in [("headroom", HEADROOM), ("node_groups", NODE_GROUPS)] {
        let with = |le: &str| {
            config_file(&format!(
                "{GOOD}{text}  mode: apply\n  leader_election: {le}\n"
            ))
        };
        for (le, key) in [
            ("{ renew_deadline: 15s }", "renew_deadline"),
            ("{ lease_name: Headroom }", "lease_name"),
        ] {
            let f = with(le);
            assert_config_error(
                &["check-config", "--config", f.to_str().unwrap()],
                &format!("{section}.leader_election.{key}"),
            );
        }
        // Turned on outside a pod without a namespace: serve says which key to set, before it
        // looks for a cluster. (In a pod the namespace file gives one; then there is nothing to test.)
        if std::path::Path::new(leader_lease::lease::NAMESPACE_FILE).exists() {
            continue;
        }
        let f = with("{ enabled: true }");
        let out = run_outside_a_cluster(&["serve", "--config", f.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{section}: {stderr}");
        assert!(
            stderr.contains(&format!("{section}.leader_election.namespace: unset")),
            "{stderr}"
        );
    }
}

#[test]
fn the_two_loops_are_not_elected_on_one_lease() {
    // Both loops run (placeholder holder): one Lease for both is refused, by name.
    let f = config_file(&format!(
        "{GOOD}{NODE_GROUPS}  leader_election: {{ lease_name: milvus-scaler-headroom }}\n{HEADROOM}"
    ));
    assert_config_error(
        &["check-config", "--config", f.to_str().unwrap()],
        "node_groups.leader_election.lease_name",
    );
    let f = config_file(&format!("{GOOD}{NODE_GROUPS}{HEADROOM}"));
    let out = run(&["check-config", "--config", f.to_str().unwrap()]);
    assert!(out.status.success(), "the defaults differ: {out:?}");
}

/// The repository's own files, as a user runs `simulate` from a checkout.
fn repo_file(path: &str) -> String {
    format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn simulate_runs_every_hpa_alone_and_with_each_headroom() {
    // A short spike keeps the test quick; the shipped files as they are.
    let trace = config_file(
        "kind: spike\nquiet_qps: 40\nspike_qps: 400\nquiet_seconds: 300\nramp_seconds: 60\nspike_seconds: 600\ncooldown_seconds: 300\n",
    );
    let (model, hpa) = (
        repo_file("bench/models/milvus-2.3.5-harness.yaml"),
        repo_file("manifests/examples/hpa-querynode.yaml"),
    );
    let (fixed, floor) = (
        repo_file("bench/policies/headroom-fixed-2.yaml"),
        repo_file("bench/policies/headroom-floor-6.yaml"),
    );
    let out = run(&[
        "simulate",
        "--model",
        &model,
        "--trace",
        trace.to_str().unwrap(),
        "--hpa",
        &hpa,
        "--headroom",
        &fixed,
        "--headroom",
        &floor,
        "--static-up-to",
        "0",
        "--output",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "hpa-querynode.yaml",
            "hpa-querynode.yaml + headroom-fixed-2.yaml",
            "hpa-querynode.yaml + headroom-floor-6.yaml"
        ]
    );
    let placeholder_hours: Vec<f64> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r["outcome"]["summary"]["headroom_pod_hours"]
                .as_f64()
                .unwrap()
        })
        .collect();
    // Alone: no placeholders; the floor of 6 holds more room than 2 fixed.
    assert_eq!(placeholder_hours[0], 0.0);
    assert!(
        placeholder_hours[1] > 0.0 && placeholder_hours[2] > placeholder_hours[1],
        "{placeholder_hours:?}"
    );
    for r in runs.as_array().unwrap() {
        assert!(
            r["outcome"]["summary"]["spike_slo_fraction"].is_f64(),
            "a spike trace is judged: {r}"
        );
    }
}

#[test]
fn simulate_with_a_bad_headroom_file_exits_2_naming_the_file_and_key() {
    let headroom = config_file(
        "pod_capacity: 60\nhpa_tolerance: 0.1\ntime_to_ready: {node_launch: 115s, load: 35s}\ngrowth_window: 5m\nhold: 5m\nstep_down_interval: 1m\nfloor: 8\ncap: 2\npeaks: []\n",
    );
    let path = headroom.to_str().unwrap();
    let (model, trace, hpa) = (
        repo_file("bench/models/milvus-2.3.5-harness.yaml"),
        repo_file("bench/traces/spike-10x.yaml"),
        repo_file("manifests/examples/hpa-querynode.yaml"),
    );
    let args = [
        "simulate",
        "--model",
        &model,
        "--trace",
        &trace,
        "--hpa",
        &hpa,
        "--headroom",
        path,
    ];
    assert_config_error(&args, "floor: 8 is above cap 2");
    assert_config_error(&args, path);
}

/// Runs `serve` with `config` and returns its exit code and stderr. A `serve` that starts
/// instead of failing would run forever: it is killed (by its own handle) after 60 s and the
/// test fails.
fn serve_exit(config: &str) -> (Option<i32>, String) {
    use std::io::Read;
    let f = config_file(config);
    let mut child = Command::new(env!("CARGO_BIN_EXE_milvus-scaler"))
        .args(["serve", "--config", f.to_str().unwrap()])
        .env("RUST_LOG", "off")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run milvus-scaler");
    let deadline = std::time::Duration::from_secs(60);
    let mut waited = std::time::Duration::ZERO;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for milvus-scaler") {
            break status;
        }
        if waited >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("milvus-scaler serve still running after {deadline:?} with {config}");
        }
        // A plain test thread (no runtime): std's sleep is right here.
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(std::time::Duration::from_millis(50));
        waited += std::time::Duration::from_millis(50);
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code(), stderr)
}

/// How one server section names its TLS files in the configuration and in its errors.
struct TlsSection {
    /// The section: `external_metrics` or `keda`.
    name: &'static str,
    /// The prefix of the serving pair's keys in error messages.
    key_prefix: &'static str,
    /// The YAML that makes `path` the client CA file: (inside `tls: {...}`, after it).
    client_ca: fn(&str) -> (String, String),
    /// The client CA file's key in error messages.
    client_ca_key: &'static str,
}

/// The TLS files of one server section, each broken in every way a user can break it: the
/// server must not start, and the one error line names the key and the file (exit 2, like
/// every configuration error). Files are generated in a temporary directory.
fn bad_tls_files_exit_2(section: &TlsSection) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pair = |cn: &str| rcgen::generate_simple_self_signed(vec![cn.to_string()]).unwrap();
    let good = pair("localhost");
    let other = pair("other");
    std::fs::write(d.join("tls.crt"), good.cert.pem()).unwrap();
    std::fs::write(d.join("tls.key"), good.signing_key.serialize_pem()).unwrap();
    std::fs::write(d.join("other.key"), other.signing_key.serialize_pem()).unwrap();
    std::fs::write(d.join("garbage.pem"), "this is not PEM\n").unwrap();
    // A key where a certificate belongs: PEM, but no CERTIFICATE block.
    std::fs::write(d.join("key-as-cert.pem"), good.signing_key.serialize_pem()).unwrap();
    // A directory in place of a file: unreadable even for root (chmod 000 is not).
    std::fs::create_dir(d.join("a-directory")).unwrap();
    let path = |name: &str| d.join(name).display().to_string();
    let (crt, key) = (path("tls.crt"), path("tls.key"));
    let serving = |bad_key: &str| format!("{}{bad_key}", section.key_prefix);
    // (cert_file, key_file, client CA file, the key and file the error must name)
    let mut cases = vec![];
    for name in [
        "missing.crt",
        "a-directory",
        "garbage.pem",
        "key-as-cert.pem",
    ] {
        cases.push((
            path(name),
            key.clone(),
            None,
            serving("cert_file"),
            path(name),
        ));
    }
    // The last: a well-formed key of another certificate.
    for name in ["missing.key", "a-directory", "garbage.pem", "other.key"] {
        cases.push((
            crt.clone(),
            path(name),
            None,
            serving("key_file"),
            path(name),
        ));
    }
    // With the good pair, a bad client CA: the error names the CA, so the pair passed (the
    // cases above fail for the file they break, not for something else).
    for name in [
        "missing.crt",
        "a-directory",
        "garbage.pem",
        "key-as-cert.pem",
    ] {
        let ca = Some(path(name));
        let bad = section.client_ca_key.to_string();
        cases.push((crt.clone(), key.clone(), ca, bad, path(name)));
    }
    for (cert_file, key_file, ca, bad_key, bad_path) in cases {
        let (inside, after) = ca.as_deref().map(section.client_ca).unwrap_or_default();
        let config = format!(
            "{GOOD}telemetry: {{ listen: \"127.0.0.1:0\" }}\n{}:\n  listen: 127.0.0.1:0\n  tls: {{ cert_file: \"{cert_file}\", key_file: \"{key_file}\"{inside} }}\n{after}",
            section.name
        );
        let (code, stderr) = serve_exit(&config);
        let what = format!("{} with {bad_key} = {bad_path}", section.name);
        assert_eq!(code, Some(2), "{what}: {stderr}");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{what}: one line: {stderr}"
        );
        assert!(stderr.starts_with("error: "), "{what}: {stderr}");
        let named = format!("{bad_key}: {bad_path}");
        assert!(
            stderr.contains(&named),
            "{what}: expected {named:?} in {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    }
}

#[test]
fn bad_external_metrics_tls_files_exit_2_naming_key_and_path() {
    bad_tls_files_exit_2(&TlsSection {
        name: "external_metrics",
        key_prefix: "external_metrics.tls.",
        client_ca: |p| {
            let after = format!("  client_auth: {{ client_ca: {{ file: \"{p}\" }} }}\n");
            (String::new(), after)
        },
        client_ca_key: "external_metrics.client_auth.client_ca_file",
    });
}

#[test]
fn bad_keda_tls_files_exit_2_naming_key_and_path() {
    bad_tls_files_exit_2(&TlsSection {
        name: "keda",
        key_prefix: "keda.tls.",
        client_ca: |p| (format!(", client_ca_file: \"{p}\""), String::new()),
        client_ca_key: "keda.tls.client_ca_file",
    });
}

/// The positive side of the TLS cases above, and the one stop token: with a good pair for both
/// servers `serve` starts every part (pollers, telemetry, external metrics API, KEDA), and one
/// SIGTERM (sent by PID) stops them all and exits 0. A part that ignored the token would hold
/// the exit for its 5 s join timeout; a healthy stop takes milliseconds, so the bound is 4 s.
#[test]
fn serve_with_good_tls_starts_everything_and_sigterm_stops_it() {
    use std::io::BufRead;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (crt, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&crt, c.cert.pem()).unwrap();
    std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
    let tls = format!(
        "tls: {{ cert_file: \"{}\", key_file: \"{}\" }}",
        crt.display(),
        key.display()
    );
    let f = config_file(&format!(
        "{GOOD}telemetry: {{ listen: \"127.0.0.1:0\" }}\nexternal_metrics:\n  listen: 127.0.0.1:0\n  {tls}\nkeda:\n  listen: 127.0.0.1:0\n  {tls}\n"
    ));
    let mut child = Command::new(env!("CARGO_BIN_EXE_milvus-scaler"))
        .args(["serve", "--config", f.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run milvus-scaler");
    let (tx, lines) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Stops the child by its own handle if an assertion below fails first.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Kill(child);
    let mut seen = vec![];
    let wanted = [
        "external metrics API serving",
        "KEDA external scaler serving",
        "milvus-scaler serving",
    ];
    while !wanted
        .iter()
        .all(|w| seen.iter().any(|l: &String| l.contains(w)))
    {
        match lines.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => seen.push(line),
            Err(e) => panic!(
                "serve did not start every part ({e}); its log:\n{}",
                seen.join("\n")
            ),
        }
    }
    let pid = child.0.id().to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill (procps) to send SIGTERM");
    assert!(sent.success(), "kill -TERM {pid}");
    // A plain test thread measuring a child process: std's clock is the right one here.
    #[allow(clippy::disallowed_types, clippy::disallowed_methods)]
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "serve still running {:?} after SIGTERM; its log:\n{}",
            started.elapsed(),
            seen.join("\n")
        );
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(Duration::from_millis(20));
    };
    reader.join().unwrap();
    seen.extend(lines.try_iter());
    assert_eq!(status.code(), Some(0), "log:\n{}", seen.join("\n"));
    assert!(
        seen.iter().any(|l| l.contains("shutting down")),
        "log:\n{}",
        seen.join("\n")
    );
}
