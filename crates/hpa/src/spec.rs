//! The validated input of the algorithm, converted from a real `autoscaling/v2`
//! `HorizontalPodAutoscaler` (deserialized with k8s-openapi) with the API server's defaults
//! applied (`minReplicas` 1, CPU 80 % when no metrics, `behavior` rules filled in when
//! `behavior` is set) and its validation enforced. Errors name the field path.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2 as k8s;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as K8sLabelSelector;
use thiserror::Error;

use crate::quantity::parse_milli;
use crate::selector::{LabelSelector, SelectorExpression, SelectorOperator};

/// An HPA object that cannot be used: the field path (`spec.metrics[1].external.target.value`)
/// and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{path}: {message}")]
pub struct SpecError {
    /// Where the problem is, as a JSON path into the object.
    pub path: String,
    /// What the problem is.
    pub message: String,
}

fn err<T>(path: impl Into<String>, message: impl Into<String>) -> Result<T, SpecError> {
    Err(SpecError {
        path: path.into(),
        message: message.into(),
    })
}

/// The object whose scale subresource the HPA drives (`spec.scaleTargetRef`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectReference {
    /// `apiVersion` (may be empty when unset).
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// `name`.
    pub name: String,
}

/// A metric's name and label selector (`MetricIdentifier`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricIdentifier {
    /// The metric name.
    pub name: String,
    /// The metric's label selector; `None` when unset.
    pub selector: Option<LabelSelector>,
}

/// Where a metric comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricSource {
    /// `External`: a metric not related to any Kubernetes object (external metrics API).
    External {
        /// The metric.
        metric: MetricIdentifier,
    },
    /// `Object`: a metric describing one object (custom metrics API).
    Object {
        /// The described object.
        described_object: ObjectReference,
        /// The metric.
        metric: MetricIdentifier,
    },
    /// `Pods`: a per-pod metric, averaged (custom metrics API).
    Pods {
        /// The metric.
        metric: MetricIdentifier,
    },
    /// `Resource`: a resource (`cpu`, `memory`) of the pods (resource metrics API).
    Resource {
        /// The resource name.
        name: String,
    },
    /// `ContainerResource`: a resource of one named container of the pods.
    ContainerResource {
        /// The resource name.
        name: String,
        /// The container name.
        container: String,
    },
}

impl MetricSource {
    /// The controller's description of the metric (used in conditions and reasons), e.g.
    /// `external metric milvus_search_queue_depth`.
    pub fn describe(&self) -> String {
        match self {
            MetricSource::External { metric } => format!("external metric {}", metric.name),
            MetricSource::Object {
                described_object,
                metric,
            } => format!("{} metric {}", described_object.kind, metric.name),
            MetricSource::Pods { metric } => format!("pods metric {}", metric.name),
            MetricSource::Resource { name } => format!("{name} resource"),
            MetricSource::ContainerResource { name, .. } => format!("{name} container resource"),
        }
    }

    /// True for `External` and `Object` metrics (the ones that allow `minReplicas: 0`).
    pub fn is_object_or_external(&self) -> bool {
        matches!(
            self,
            MetricSource::External { .. } | MetricSource::Object { .. }
        )
    }
}

/// A metric target, with quantities as milli-values (`Quantity.MilliValue()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricTarget {
    /// `Value`: the metric's total value.
    Value(i64),
    /// `AverageValue`: the value per pod.
    AverageValue(i64),
    /// `Utilization`: percent of the pods' resource requests.
    Utilization(i32),
}

/// One entry of `spec.metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricSpec {
    /// Where the metric comes from.
    pub source: MetricSource,
    /// What value the HPA aims for.
    pub target: MetricTarget,
}

/// `selectPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SelectPolicy {
    /// `Max` (default): the policy allowing the largest change.
    #[default]
    Max,
    /// `Min`: the policy allowing the smallest change.
    Min,
    /// `Disabled`: no change in this direction.
    Disabled,
}

/// A scaling policy's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// `Pods`: an absolute number of pods per period.
    Pods,
    /// `Percent`: a percentage of the replicas at the period's start, per period.
    Percent,
}

/// One `HPAScalingPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScalingPolicy {
    /// `type`.
    pub kind: PolicyKind,
    /// `value` (> 0).
    pub value: i32,
    /// `periodSeconds` (1..=1800).
    pub period_seconds: i32,
}

/// `HPAScalingRules` with the API server's defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingRules {
    /// `stabilizationWindowSeconds`. `None` only for scale-down, where the controller uses its
    /// `--horizontal-pod-autoscaler-downscale-stabilization` (default 300 s).
    pub stabilization_window_seconds: Option<i32>,
    /// `selectPolicy`.
    pub select_policy: SelectPolicy,
    /// `policies`.
    pub policies: Vec<ScalingPolicy>,
    /// `tolerance` (`HPAConfigurableTolerance`); `None`: the controller's `--tolerance`.
    pub tolerance: Option<f64>,
}

impl ScalingRules {
    /// The API server's default scale-up rules: no stabilization, `Max` of 4 pods or 100 %
    /// per 15 s.
    pub fn default_scale_up() -> Self {
        ScalingRules {
            stabilization_window_seconds: Some(0),
            select_policy: SelectPolicy::Max,
            policies: vec![
                ScalingPolicy {
                    kind: PolicyKind::Pods,
                    value: 4,
                    period_seconds: 15,
                },
                ScalingPolicy {
                    kind: PolicyKind::Percent,
                    value: 100,
                    period_seconds: 15,
                },
            ],
            tolerance: None,
        }
    }

    /// The API server's default scale-down rules: the controller's stabilization window,
    /// 100 % per 15 s.
    pub fn default_scale_down() -> Self {
        ScalingRules {
            stabilization_window_seconds: None,
            select_policy: SelectPolicy::Max,
            policies: vec![ScalingPolicy {
                kind: PolicyKind::Percent,
                value: 100,
                period_seconds: 15,
            }],
            tolerance: None,
        }
    }

    /// The longest `periodSeconds` of the policies (0 without policies).
    pub fn longest_period(&self) -> i32 {
        self.policies
            .iter()
            .map(|p| p.period_seconds)
            .max()
            .unwrap_or(0)
    }
}

/// `spec.behavior`, both directions defaulted.
#[derive(Debug, Clone, PartialEq)]
pub struct Behavior {
    /// `scaleUp`.
    pub scale_up: ScalingRules,
    /// `scaleDown`.
    pub scale_down: ScalingRules,
}

/// A validated `autoscaling/v2` HorizontalPodAutoscaler.
#[derive(Debug, Clone, PartialEq)]
pub struct HpaSpec {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace` (`default` when unset): where External metrics are looked up.
    pub namespace: String,
    /// `spec.scaleTargetRef`.
    pub scale_target: ObjectReference,
    /// `spec.minReplicas` (defaulted to 1; 0 only with an External or Object metric).
    pub min_replicas: i32,
    /// `spec.maxReplicas`.
    pub max_replicas: i32,
    /// `spec.metrics` (defaulted to CPU utilization 80 % when empty).
    pub metrics: Vec<MetricSpec>,
    /// `spec.behavior`; `None` when unset, which makes the controller use its legacy
    /// normalization (downscale stabilization window, scale-up limit `max(2 × current, 4)`).
    pub behavior: Option<Behavior>,
}

impl HpaSpec {
    /// Parses an `autoscaling/v2` HorizontalPodAutoscaler from YAML (or JSON, a subset).
    pub fn from_yaml(text: &str) -> Result<HpaSpec, SpecError> {
        let hpa: k8s::HorizontalPodAutoscaler =
            yaml_config::from_str(text).map_err(|e| SpecError {
                path: e.path,
                message: e.message,
            })?;
        HpaSpec::try_from(&hpa)
    }

    /// Parses an `autoscaling/v2` HorizontalPodAutoscaler from JSON.
    pub fn from_json(text: &str) -> Result<HpaSpec, SpecError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let hpa: k8s::HorizontalPodAutoscaler =
            serde_path_to_error::deserialize(&mut de).map_err(|e| SpecError {
                path: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        HpaSpec::try_from(&hpa)
    }
}

impl TryFrom<&k8s::HorizontalPodAutoscaler> for HpaSpec {
    type Error = SpecError;

    fn try_from(hpa: &k8s::HorizontalPodAutoscaler) -> Result<HpaSpec, SpecError> {
        let Some(spec) = &hpa.spec else {
            return err("spec", "required");
        };
        let name = hpa.metadata.name.clone().unwrap_or_default();
        let namespace = hpa
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let scale_target = object_ref("spec.scaleTargetRef", &spec.scale_target_ref)?;

        let metrics = match spec.metrics.as_deref() {
            None | Some([]) => vec![MetricSpec {
                source: MetricSource::Resource {
                    name: "cpu".to_string(),
                },
                target: MetricTarget::Utilization(80),
            }],
            Some(list) => list
                .iter()
                .enumerate()
                .map(|(i, m)| metric_spec(&format!("spec.metrics[{i}]"), m))
                .collect::<Result<Vec<_>, _>>()?,
        };

        let min_replicas = spec.min_replicas.unwrap_or(1);
        if min_replicas < 0 {
            return err("spec.minReplicas", "must be greater than or equal to 0");
        }
        if min_replicas == 0 && !metrics.iter().any(|m| m.source.is_object_or_external()) {
            return err(
                "spec.minReplicas",
                "0 is allowed only with at least one Object or External metric (HPAScaleToZero)",
            );
        }
        if spec.max_replicas < 1 {
            return err("spec.maxReplicas", "must be greater than 0");
        }
        if spec.max_replicas < min_replicas {
            return err(
                "spec.maxReplicas",
                format!("must be greater than or equal to minReplicas ({min_replicas})"),
            );
        }

        let behavior = match &spec.behavior {
            None => None,
            Some(b) => Some(Behavior {
                scale_up: scaling_rules(
                    "spec.behavior.scaleUp",
                    b.scale_up.as_ref(),
                    ScalingRules::default_scale_up(),
                )?,
                scale_down: scaling_rules(
                    "spec.behavior.scaleDown",
                    b.scale_down.as_ref(),
                    ScalingRules::default_scale_down(),
                )?,
            }),
        };

        Ok(HpaSpec {
            name,
            namespace,
            scale_target,
            min_replicas,
            max_replicas: spec.max_replicas,
            metrics,
            behavior,
        })
    }
}

fn object_ref(
    path: &str,
    r: &k8s::CrossVersionObjectReference,
) -> Result<ObjectReference, SpecError> {
    if r.kind.is_empty() {
        return err(format!("{path}.kind"), "required");
    }
    if r.name.is_empty() {
        return err(format!("{path}.name"), "required");
    }
    Ok(ObjectReference {
        api_version: r.api_version.clone().unwrap_or_default(),
        kind: r.kind.clone(),
        name: r.name.clone(),
    })
}

fn identifier(path: &str, m: &k8s::MetricIdentifier) -> Result<MetricIdentifier, SpecError> {
    if m.name.is_empty() {
        return err(format!("{path}.name"), "required");
    }
    let selector = match &m.selector {
        None => None,
        Some(s) => Some(label_selector(&format!("{path}.selector"), s)?),
    };
    Ok(MetricIdentifier {
        name: m.name.clone(),
        selector,
    })
}

fn label_selector(path: &str, s: &K8sLabelSelector) -> Result<LabelSelector, SpecError> {
    let match_labels: BTreeMap<String, String> = s.match_labels.clone().unwrap_or_default();
    let mut match_expressions = Vec::new();
    for (i, e) in s.match_expressions.iter().flatten().enumerate() {
        let at = format!("{path}.matchExpressions[{i}]");
        let values = e.values.clone().unwrap_or_default();
        let operator = match e.operator.as_str() {
            "In" => SelectorOperator::In,
            "NotIn" => SelectorOperator::NotIn,
            "Exists" => SelectorOperator::Exists,
            "DoesNotExist" => SelectorOperator::DoesNotExist,
            other => {
                return err(
                    format!("{at}.operator"),
                    format!("{other:?} is not a valid label selector operator"),
                );
            }
        };
        let needs_values = matches!(operator, SelectorOperator::In | SelectorOperator::NotIn);
        if needs_values && values.is_empty() {
            return err(
                format!("{at}.values"),
                "for 'in', 'notin' operators, values set can't be empty",
            );
        }
        if !needs_values && !values.is_empty() {
            return err(
                format!("{at}.values"),
                "values set must be empty for exists and does not exist",
            );
        }
        match_expressions.push(SelectorExpression {
            key: e.key.clone(),
            operator,
            values,
        });
    }
    Ok(LabelSelector {
        match_labels,
        match_expressions,
    })
}

fn quantity_milli(
    path: &str,
    q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity,
) -> Result<i64, SpecError> {
    let milli = parse_milli(&q.0).map_err(|e| SpecError {
        path: path.to_string(),
        message: e.to_string(),
    })?;
    if milli <= 0 {
        return err(path, "must be positive");
    }
    Ok(milli)
}

fn target(path: &str, t: &k8s::MetricTarget, allowed: &[&str]) -> Result<MetricTarget, SpecError> {
    if !allowed.contains(&t.type_.as_str()) {
        return err(
            format!("{path}.type"),
            format!(
                "{:?} is not supported here; use one of {allowed:?}",
                t.type_
            ),
        );
    }
    let set = [
        ("value", t.value.is_some()),
        ("averageValue", t.average_value.is_some()),
        ("averageUtilization", t.average_utilization.is_some()),
    ];
    let (wanted, parsed) = match t.type_.as_str() {
        "Value" => (
            "value",
            t.value
                .as_ref()
                .map(|q| quantity_milli(&format!("{path}.value"), q).map(MetricTarget::Value)),
        ),
        "AverageValue" => (
            "averageValue",
            t.average_value.as_ref().map(|q| {
                quantity_milli(&format!("{path}.averageValue"), q).map(MetricTarget::AverageValue)
            }),
        ),
        _ => (
            "averageUtilization",
            t.average_utilization.map(|u| {
                if u > 0 {
                    Ok(MetricTarget::Utilization(u))
                } else {
                    err(
                        format!("{path}.averageUtilization"),
                        "must be greater than 0",
                    )
                }
            }),
        ),
    };
    if let Some((other, _)) = set.iter().find(|(name, is_set)| *is_set && *name != wanted) {
        return err(
            format!("{path}.{other}"),
            format!("must not be set with type {}", t.type_),
        );
    }
    match parsed {
        Some(result) => result,
        None => err(
            format!("{path}.{wanted}"),
            format!("required with type {}", t.type_),
        ),
    }
}

fn metric_spec(path: &str, m: &k8s::MetricSpec) -> Result<MetricSpec, SpecError> {
    let sources = [
        ("external", "External", m.external.is_some()),
        ("object", "Object", m.object.is_some()),
        ("pods", "Pods", m.pods.is_some()),
        ("resource", "Resource", m.resource.is_some()),
        (
            "containerResource",
            "ContainerResource",
            m.container_resource.is_some(),
        ),
    ];
    let Some(&(field, _, _)) = sources.iter().find(|(_, ty, _)| *ty == m.type_) else {
        return err(
            format!("{path}.type"),
            format!(
                "{:?} is not a metric source type (External, Object, Pods, Resource, ContainerResource)",
                m.type_
            ),
        );
    };
    if let Some((other, _, _)) = sources.iter().find(|(f, _, set)| *set && *f != field) {
        return err(
            format!("{path}.{other}"),
            format!("must not be set with type {}", m.type_),
        );
    }
    let at = |s: &str| format!("{path}.{field}{s}");
    let missing = || err::<MetricSpec>(at(""), format!("required with type {}", m.type_));
    match m.type_.as_str() {
        "External" => {
            let Some(e) = &m.external else {
                return missing();
            };
            Ok(MetricSpec {
                source: MetricSource::External {
                    metric: identifier(&at(".metric"), &e.metric)?,
                },
                target: target(&at(".target"), &e.target, &["Value", "AverageValue"])?,
            })
        }
        "Object" => {
            let Some(o) = &m.object else { return missing() };
            Ok(MetricSpec {
                source: MetricSource::Object {
                    described_object: object_ref(&at(".describedObject"), &o.described_object)?,
                    metric: identifier(&at(".metric"), &o.metric)?,
                },
                target: target(&at(".target"), &o.target, &["Value", "AverageValue"])?,
            })
        }
        "Pods" => {
            let Some(p) = &m.pods else { return missing() };
            Ok(MetricSpec {
                source: MetricSource::Pods {
                    metric: identifier(&at(".metric"), &p.metric)?,
                },
                target: target(&at(".target"), &p.target, &["AverageValue"])?,
            })
        }
        "Resource" => {
            let Some(r) = &m.resource else {
                return missing();
            };
            if r.name.is_empty() {
                return err(at(".name"), "required");
            }
            Ok(MetricSpec {
                source: MetricSource::Resource {
                    name: r.name.clone(),
                },
                target: target(&at(".target"), &r.target, &["Utilization", "AverageValue"])?,
            })
        }
        _ => {
            let Some(c) = &m.container_resource else {
                return missing();
            };
            if c.name.is_empty() {
                return err(at(".name"), "required");
            }
            if c.container.is_empty() {
                return err(at(".container"), "required");
            }
            Ok(MetricSpec {
                source: MetricSource::ContainerResource {
                    name: c.name.clone(),
                    container: c.container.clone(),
                },
                target: target(&at(".target"), &c.target, &["Utilization", "AverageValue"])?,
            })
        }
    }
}

fn scaling_rules(
    path: &str,
    from: Option<&k8s::HPAScalingRules>,
    defaults: ScalingRules,
) -> Result<ScalingRules, SpecError> {
    let mut rules = defaults;
    let Some(from) = from else {
        return Ok(rules);
    };
    if let Some(w) = from.stabilization_window_seconds {
        if !(0..=3600).contains(&w) {
            return err(
                format!("{path}.stabilizationWindowSeconds"),
                "must be between 0 and 3600",
            );
        }
        rules.stabilization_window_seconds = Some(w);
    }
    if let Some(p) = &from.select_policy {
        rules.select_policy = match p.as_str() {
            "Max" => SelectPolicy::Max,
            "Min" => SelectPolicy::Min,
            "Disabled" => SelectPolicy::Disabled,
            other => {
                return err(
                    format!("{path}.selectPolicy"),
                    format!("{other:?} is not one of Max, Min, Disabled"),
                );
            }
        };
    }
    if let Some(policies) = &from.policies {
        if policies.is_empty() && rules.select_policy != SelectPolicy::Disabled {
            return err(
                format!("{path}.policies"),
                "must specify at least one policy",
            );
        }
        rules.policies = policies
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let at = format!("{path}.policies[{i}]");
                let kind = match p.type_.as_str() {
                    "Pods" => PolicyKind::Pods,
                    "Percent" => PolicyKind::Percent,
                    other => {
                        return err(
                            format!("{at}.type"),
                            format!("{other:?} is not one of Pods, Percent"),
                        );
                    }
                };
                if p.value <= 0 {
                    return err(format!("{at}.value"), "must be greater than zero");
                }
                if !(1..=1800).contains(&p.period_seconds) {
                    return err(format!("{at}.periodSeconds"), "must be between 1 and 1800");
                }
                Ok(ScalingPolicy {
                    kind,
                    value: p.value,
                    period_seconds: p.period_seconds,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
    }
    if let Some(t) = &from.tolerance {
        let at = format!("{path}.tolerance");
        let milli = parse_milli(&t.0).map_err(|e| SpecError {
            path: at.clone(),
            message: e.to_string(),
        })?;
        if milli < 0 {
            return err(at, "must be greater than or equal to 0");
        }
        rules.tolerance = Some(milli as f64 / 1000.0);
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first shipped example (queue depth + p99 `Value`): two metrics and both behaviors.
    const QUERYNODE: &str = include_str!("../../../bench/policies/hpa-first-example.yaml");
    const SHIPPED: &str = include_str!("../../../manifests/examples/hpa-querynode.yaml");

    #[test]
    fn parses_the_shipped_demand_example() {
        let spec = HpaSpec::from_yaml(SHIPPED).unwrap();
        assert_eq!(spec.metrics.len(), 1);
        let MetricSource::External { metric } = &spec.metrics[0].source else {
            panic!("not external: {:?}", spec.metrics[0].source)
        };
        assert_eq!(metric.name, "milvus_search_demand");
        assert_eq!(spec.metrics[0].target, MetricTarget::AverageValue(60_000));
    }

    #[test]
    fn parses_the_first_querynode_example() {
        let spec = HpaSpec::from_yaml(QUERYNODE).unwrap();
        assert_eq!(spec.name, "milvus-querynode");
        assert_eq!(spec.namespace, "milvus");
        assert_eq!((spec.min_replicas, spec.max_replicas), (2, 20));
        assert_eq!(spec.metrics.len(), 2);
        assert_eq!(spec.metrics[0].target, MetricTarget::AverageValue(10_000));
        assert_eq!(spec.metrics[1].target, MetricTarget::Value(200));
        let MetricSource::External { metric } = &spec.metrics[0].source else {
            panic!("not external: {:?}", spec.metrics[0].source)
        };
        assert_eq!(metric.name, "milvus_search_queue_depth");
        assert_eq!(metric.selector.as_ref().unwrap().render(), "milvus=prod");
        let b = spec.behavior.unwrap();
        assert_eq!(b.scale_up.stabilization_window_seconds, Some(0));
        assert_eq!(b.scale_up.policies.len(), 2);
        assert_eq!(b.scale_down.stabilization_window_seconds, Some(600));
        assert_eq!(b.scale_down.select_policy, SelectPolicy::Min);
        assert_eq!(
            b.scale_down.policies,
            vec![ScalingPolicy {
                kind: PolicyKind::Pods,
                value: 1,
                period_seconds: 120
            }]
        );
    }

    fn hpa(spec: &str) -> Result<HpaSpec, SpecError> {
        HpaSpec::from_yaml(&format!(
            "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {{name: h}}\nspec:\n  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: d}}\n{spec}"
        ))
    }

    #[test]
    fn defaults_like_the_api_server() {
        let s = hpa("  maxReplicas: 5\n").unwrap();
        assert_eq!(s.namespace, "default");
        assert_eq!(s.min_replicas, 1);
        assert_eq!(
            s.metrics,
            vec![MetricSpec {
                source: MetricSource::Resource { name: "cpu".into() },
                target: MetricTarget::Utilization(80)
            }]
        );
        assert_eq!(s.behavior, None);
        // A behavior with only scaleDown set gets the default scaleUp rules, and scaleDown keeps
        // the unset window for the controller to fill.
        let s = hpa("  maxReplicas: 5\n  behavior:\n    scaleDown:\n      selectPolicy: Min\n")
            .unwrap();
        let b = s.behavior.unwrap();
        assert_eq!(b.scale_up, ScalingRules::default_scale_up());
        assert_eq!(b.scale_down.stabilization_window_seconds, None);
        assert_eq!(b.scale_down.select_policy, SelectPolicy::Min);
        assert_eq!(
            b.scale_down.policies,
            ScalingRules::default_scale_down().policies
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                "  maxReplicas: 5\n  metrics:\n  - type: External\n    external:\n      metric: {name: m}\n      target: {type: Utilization, averageUtilization: 50}\n",
                "spec.metrics[0].external.target.type",
            ),
            (
                "  maxReplicas: 5\n  metrics:\n  - type: External\n    external:\n      metric: {name: m}\n      target: {type: Value, value: 10x}\n",
                "spec.metrics[0].external.target.value",
            ),
            (
                "  maxReplicas: 5\n  metrics:\n  - type: External\n    external:\n      metric: {name: m}\n      target: {type: AverageValue}\n",
                "spec.metrics[0].external.target.averageValue",
            ),
            (
                "  maxReplicas: 5\n  metrics:\n  - type: Pods\n    external:\n      metric: {name: m}\n      target: {type: AverageValue, averageValue: 1}\n",
                "spec.metrics[0].external",
            ),
            ("  minReplicas: 0\n  maxReplicas: 5\n", "spec.minReplicas"),
            ("  minReplicas: 6\n  maxReplicas: 5\n", "spec.maxReplicas"),
            (
                "  maxReplicas: 5\n  behavior:\n    scaleUp:\n      policies:\n      - {type: Pods, value: 0, periodSeconds: 15}\n",
                "spec.behavior.scaleUp.policies[0].value",
            ),
            (
                "  maxReplicas: 5\n  behavior:\n    scaleDown:\n      selectPolicy: Fastest\n",
                "spec.behavior.scaleDown.selectPolicy",
            ),
            ("  maxReplicas: five\n", "spec.maxReplicas"),
        ];
        for (yaml, path) in cases {
            let e = hpa(yaml).expect_err(yaml);
            assert_eq!(e.path, path, "{yaml}: {e}");
        }
    }

    #[test]
    fn scale_to_zero_needs_an_external_or_object_metric() {
        let s = hpa("  minReplicas: 0\n  maxReplicas: 5\n  metrics:\n  - type: External\n    external:\n      metric: {name: m}\n      target: {type: Value, value: \"1\"}\n").unwrap();
        assert_eq!(s.min_replicas, 0);
    }

    #[test]
    fn rejects_other_api_versions() {
        let text = QUERYNODE.replace("autoscaling/v2", "autoscaling/v1");
        assert!(HpaSpec::from_yaml(&text).is_err());
    }
}
