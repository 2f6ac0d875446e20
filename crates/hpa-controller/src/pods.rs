//! What the HPA controller reads for Resource metrics, turned into the [`hpa`] crate's inputs:
//! the target's pods (a core/v1 `PodList`, as the controller's pod lister holds them) and their
//! usage (a `metrics.k8s.io/v1beta1` `PodMetricsList`, as metrics-server serves it).
//!
//! Pure: no I/O. Times become durations since the Unix epoch, which is the autoscaler clock
//! `LocalHpa` uses (so pods that started before the controller keep their real age).

use std::collections::BTreeMap;
use std::time::Duration;

use hpa::{ContainerRequests, PodInfo, PodMetric, PodPhase, PodReadiness};
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Deserialize;

/// A `metrics.k8s.io/v1beta1` `PodMetricsList` (k8s-openapi has no type for it): the fields the
/// HPA's resource metrics client reads.
#[derive(Debug, Clone, Deserialize)]
pub struct PodMetricsList {
    /// `items`.
    #[serde(default)]
    pub items: Vec<PodMetrics>,
}

/// One pod's `PodMetrics`.
#[derive(Debug, Clone, Deserialize)]
pub struct PodMetrics {
    /// `metadata` (name, namespace).
    pub metadata: PodMetricsMeta,
    /// `timestamp`: when the usage was sampled (the end of the window).
    pub timestamp: Time,
    /// `window`: the interval the usage is averaged over, a Go duration (`"30s"`, `"14.982s"`).
    pub window: String,
    /// `containers`: usage per container.
    #[serde(default)]
    pub containers: Vec<ContainerMetrics>,
}

/// `metadata` of a `PodMetrics`.
#[derive(Debug, Clone, Deserialize)]
pub struct PodMetricsMeta {
    /// `name`.
    pub name: String,
    /// `namespace`.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// One container's usage.
#[derive(Debug, Clone, Deserialize)]
pub struct ContainerMetrics {
    /// `name`.
    pub name: String,
    /// `usage`: quantities by resource name (`cpu` in cores, e.g. `"250m"`, `"123456789n"`).
    #[serde(default)]
    pub usage: BTreeMap<String, String>,
}

/// A `metav1.Time` as a duration since the Unix epoch (earlier times saturate to 0).
pub fn since_epoch(t: &Time) -> Duration {
    let ns = t.0.as_nanosecond();
    if ns <= 0 {
        Duration::ZERO
    } else {
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }
}

/// Parses a Go `time.Duration` string as `metav1.Duration` renders it (`"30s"`, `"1m0.5s"`,
/// `"150ms"`, `"0s"`). Negative durations are refused.
pub fn parse_go_duration(input: &str) -> Result<Duration, String> {
    let err = || format!("invalid duration {input:?}");
    let s = input.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.is_empty() {
        return Err(err());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let (number, tail) = rest.split_at(end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(err());
        }
        let value: f64 = number.parse().map_err(|_| err())?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_end);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        total += value * scale;
        rest = next;
    }
    Duration::try_from_secs_f64(total).map_err(|_| err())
}

fn phase(p: Option<&str>) -> PodPhase {
    match p {
        Some("Pending") => PodPhase::Pending,
        Some("Running") => PodPhase::Running,
        Some("Succeeded") => PodPhase::Succeeded,
        Some("Failed") => PodPhase::Failed,
        _ => PodPhase::Unknown,
    }
}

fn requests(c: &Container, pod: &str) -> Result<ContainerRequests, String> {
    let mut out = BTreeMap::new();
    if let Some(reqs) = c.resources.as_ref().and_then(|r| r.requests.as_ref()) {
        for (resource, quantity) in reqs {
            let milli = hpa::parse_milli(&quantity.0).map_err(|e| {
                format!("pod {pod}: container {}: requests.{resource}: {e}", c.name)
            })?;
            out.insert(resource.clone(), milli);
        }
    }
    Ok(ContainerRequests {
        name: c.name.clone(),
        requests: out,
    })
}

/// One pod as the HPA controller's pod lister sees it: phase, deletion, the `Ready` condition,
/// start time, and the requests of its containers and restartable (sidecar) init containers
/// (`calculatePodRequests`).
pub fn pod_info(pod: &Pod) -> Result<PodInfo, String> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| PodReadiness {
            ready: c.status == "True",
            last_transition: c
                .last_transition_time
                .as_ref()
                .map_or(Duration::ZERO, since_epoch),
        });
    let mut containers = Vec::new();
    if let Some(spec) = &pod.spec {
        for c in &spec.containers {
            containers.push(requests(c, &name)?);
        }
        for c in spec.init_containers.iter().flatten() {
            if c.restart_policy.as_deref() == Some("Always") {
                containers.push(requests(c, &name)?);
            }
        }
    }
    Ok(PodInfo {
        phase: phase(status.and_then(|s| s.phase.as_deref())),
        deleting: pod.metadata.deletion_timestamp.is_some(),
        ready,
        start_time: status.and_then(|s| s.start_time.as_ref()).map(since_epoch),
        containers,
        name,
    })
}

/// The pods of a `PodList`.
pub fn pod_infos(pods: &[Pod]) -> Result<Vec<PodInfo>, String> {
    pods.iter().map(pod_info).collect()
}

/// The per-pod samples of one resource, as the HPA's resource metrics client builds them
/// (`getPodMetrics` / `getContainerMetrics`): without a container, the sum over the pod's
/// containers, and a pod with no containers or one lacking the resource is left out (it
/// becomes a pod without metrics); with a container, that container's value, a pod without it
/// in its usage being an error of the whole metric.
pub fn resource_samples(
    list: &PodMetricsList,
    resource: &str,
    container: Option<&str>,
) -> Result<Vec<PodMetric>, String> {
    let mut out = Vec::with_capacity(list.items.len());
    for m in &list.items {
        let window = parse_go_duration(&m.window)
            .map_err(|e| format!("pod metrics of {}: window: {e}", m.metadata.name))?;
        let timestamp = since_epoch(&m.timestamp);
        let value = match container {
            Some(want) => {
                let Some(c) = m.containers.iter().find(|c| c.name == want) else {
                    return Err(format!(
                        "failed to get container metrics: container {want} not present in metrics for pod {}/{}",
                        m.metadata.namespace.as_deref().unwrap_or(""),
                        m.metadata.name
                    ));
                };
                match c.usage.get(resource) {
                    Some(q) => Some(quantity(q, &m.metadata.name)?),
                    None => None,
                }
            }
            None => {
                let mut sum = Some(0i64);
                if m.containers.is_empty() {
                    sum = None;
                }
                for c in &m.containers {
                    match c.usage.get(resource) {
                        Some(q) => {
                            let v = quantity(q, &m.metadata.name)?;
                            sum = sum.map(|s| s.saturating_add(v));
                        }
                        None => {
                            sum = None;
                            break;
                        }
                    }
                }
                sum
            }
        };
        if let Some(value) = value {
            out.push(PodMetric {
                pod: m.metadata.name.clone(),
                value,
                timestamp,
                window,
            });
        }
    }
    Ok(out)
}

fn quantity(q: &str, pod: &str) -> Result<i64, String> {
    hpa::parse_milli(q).map_err(|e| format!("pod metrics of {pod}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::List;

    #[test]
    fn go_durations() {
        let d = |s| parse_go_duration(s).unwrap();
        assert_eq!(d("30s"), Duration::from_secs(30));
        assert_eq!(d("0s"), Duration::ZERO);
        assert_eq!(d("0"), Duration::ZERO);
        assert_eq!(d("1m0.5s"), Duration::from_millis(60_500));
        assert_eq!(d("14.982s"), Duration::from_millis(14_982));
        assert_eq!(d("150ms"), Duration::from_millis(150));
        assert_eq!(d("1h2m3s"), Duration::from_secs(3723));
        assert_eq!(d("2us"), Duration::from_micros(2));
        for bad in ["", "s", "30", "-30s", "1.2.3s", "30x", "m5s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    const PODS: &str = r#"{
      "kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "12"},
      "items": [
        {"metadata": {"name": "qn-0", "namespace": "milvus", "labels": {"app": "qn"}},
         "spec": {"containers": [
            {"name": "querynode", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
            {"name": "cache", "resources": {"requests": {"cpu": "0.1"}}}],
           "initContainers": [
            {"name": "sidecar", "restartPolicy": "Always", "resources": {"requests": {"cpu": "50m"}}},
            {"name": "setup", "resources": {"requests": {"cpu": "2"}}}]},
         "status": {"phase": "Running", "startTime": "2026-01-01T00:00:00Z",
           "conditions": [{"type": "PodScheduled", "status": "True"},
                          {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:01:00Z"}]}},
        {"metadata": {"name": "qn-1", "namespace": "milvus", "deletionTimestamp": "2026-01-01T00:02:00Z"},
         "spec": {"containers": [{"name": "querynode"}]},
         "status": {"phase": "Pending"}}
      ]}"#;

    #[test]
    fn pods_from_a_pod_list() {
        let list: List<Pod> = serde_json::from_str(PODS).unwrap();
        let pods = pod_infos(&list.items).unwrap();
        let t0 = 1_767_225_600; // 2026-01-01T00:00:00Z
        assert_eq!(pods[0].name, "qn-0");
        assert_eq!(pods[0].phase, PodPhase::Running);
        assert!(!pods[0].deleting);
        assert_eq!(pods[0].start_time, Some(Duration::from_secs(t0)));
        assert_eq!(
            pods[0].ready,
            Some(PodReadiness {
                ready: true,
                last_transition: Duration::from_secs(t0 + 60)
            })
        );
        let names: Vec<_> = pods[0].containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["querynode", "cache", "sidecar"]);
        assert_eq!(pods[0].containers[0].requests["cpu"], 500);
        assert_eq!(pods[0].containers[1].requests["cpu"], 100);
        assert_eq!(pods[0].containers[2].requests["cpu"], 50);
        assert_eq!(pods[1].phase, PodPhase::Pending);
        assert!(pods[1].deleting);
        assert_eq!(pods[1].ready, None);
        assert_eq!(pods[1].start_time, None);
        assert!(pods[1].containers[0].requests.is_empty());
    }

    #[test]
    fn a_bad_request_quantity_names_pod_and_container() {
        let text = PODS.replace("\"500m\"", "\"lots\"");
        let list: List<Pod> = serde_json::from_str(&text).unwrap();
        let e = pod_infos(&list.items).unwrap_err();
        assert!(
            e.contains("qn-0") && e.contains("querynode") && e.contains("cpu"),
            "{e}"
        );
    }

    const METRICS: &str = r#"{
      "kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {},
      "items": [
        {"metadata": {"name": "qn-0", "namespace": "milvus"}, "timestamp": "2026-01-01T00:05:00Z",
         "window": "30s", "containers": [
           {"name": "querynode", "usage": {"cpu": "400000000n", "memory": "100Mi"}},
           {"name": "cache", "usage": {"cpu": "50m", "memory": "10Mi"}}]},
        {"metadata": {"name": "qn-1", "namespace": "milvus"}, "timestamp": "2026-01-01T00:05:01Z",
         "window": "29.5s", "containers": [
           {"name": "querynode", "usage": {"memory": "100Mi"}}]},
        {"metadata": {"name": "qn-2", "namespace": "milvus"}, "timestamp": "2026-01-01T00:05:01Z",
         "window": "30s", "containers": []}
      ]}"#;

    #[test]
    fn samples_sum_containers_and_leave_out_incomplete_pods() {
        let list: PodMetricsList = serde_json::from_str(METRICS).unwrap();
        let s = resource_samples(&list, "cpu", None).unwrap();
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(s[0].pod, "qn-0");
        assert_eq!(s[0].value, 450);
        assert_eq!(s[0].window, Duration::from_secs(30));
        assert_eq!(s[0].timestamp, Duration::from_secs(1_767_225_600 + 300));
        let mem = resource_samples(&list, "memory", None).unwrap();
        assert_eq!(mem.len(), 2);
        assert_eq!(mem[1].window, Duration::from_millis(29_500));
    }

    #[test]
    fn container_samples() {
        let list: PodMetricsList = serde_json::from_str(METRICS).unwrap();
        // qn-2 has no querynode container in its metrics: an error, as the controller says.
        let e = resource_samples(&list, "cpu", Some("querynode")).unwrap_err();
        assert!(e.contains("container querynode not present in metrics for pod milvus/qn-2"));
        let mut two = list.clone();
        two.items.truncate(2);
        let s = resource_samples(&two, "cpu", Some("querynode")).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].pod.as_str(), s[0].value), ("qn-0", 400));
    }
}
