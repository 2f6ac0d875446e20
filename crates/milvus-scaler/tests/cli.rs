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
