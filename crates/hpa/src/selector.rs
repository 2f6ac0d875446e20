//! Metric label selectors (`metav1.LabelSelector`) and their rendering as the `labelSelector`
//! query parameter, exactly as `metav1.LabelSelectorAsSelector(..).String()` renders them.

use std::collections::BTreeMap;

/// A `matchExpressions` operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectorOperator {
    /// `In`: the label's value is one of `values`.
    In,
    /// `NotIn`: the label is absent or its value is none of `values`.
    NotIn,
    /// `Exists`: the label is present.
    Exists,
    /// `DoesNotExist`: the label is absent.
    DoesNotExist,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorExpression {
    /// The label key.
    pub key: String,
    /// The operator.
    pub operator: SelectorOperator,
    /// The values (`In`/`NotIn` only; empty for `Exists`/`DoesNotExist`).
    pub values: Vec<String>,
}

/// A label selector: `matchLabels` and `matchExpressions`, ANDed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// `matchLabels`.
    pub match_labels: BTreeMap<String, String>,
    /// `matchExpressions`.
    pub match_expressions: Vec<SelectorExpression>,
}

impl LabelSelector {
    /// The selector in Kubernetes' string form (`labels.Selector.String()` of
    /// `LabelSelectorAsSelector`): one requirement per label or expression, sorted by key,
    /// values of `in`/`notin` sorted, joined by `,`. An empty selector renders as `""`, which
    /// the client leaves out of the query (select everything).
    pub fn render(&self) -> String {
        let mut reqs: Vec<(String, String)> = Vec::new();
        for (k, v) in &self.match_labels {
            reqs.push((k.clone(), format!("{k}={v}")));
        }
        for e in &self.match_expressions {
            let mut values = e.values.clone();
            values.sort();
            let text = match e.operator {
                SelectorOperator::In => format!("{} in ({})", e.key, values.join(",")),
                SelectorOperator::NotIn => format!("{} notin ({})", e.key, values.join(",")),
                SelectorOperator::Exists => e.key.clone(),
                SelectorOperator::DoesNotExist => format!("!{}", e.key),
            };
            reqs.push((e.key.clone(), text));
        }
        // `Add` sorts requirements by key (stable here: labels first, then expressions).
        reqs.sort_by(|a, b| a.0.cmp(&b.0));
        reqs.into_iter()
            .map(|(_, text)| text)
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_label_selector_as_selector() {
        let sel = LabelSelector {
            match_labels: [("milvus", "prod"), ("app", "x")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            match_expressions: vec![
                SelectorExpression {
                    key: "collection".into(),
                    operator: SelectorOperator::In,
                    values: vec!["b".into(), "a".into()],
                },
                SelectorExpression {
                    key: "zone".into(),
                    operator: SelectorOperator::DoesNotExist,
                    values: vec![],
                },
                SelectorExpression {
                    key: "tier".into(),
                    operator: SelectorOperator::NotIn,
                    values: vec!["gold".into()],
                },
                SelectorExpression {
                    key: "env".into(),
                    operator: SelectorOperator::Exists,
                    values: vec![],
                },
            ],
        };
        assert_eq!(
            sel.render(),
            "app=x,collection in (a,b),env,milvus=prod,tier notin (gold),!zone"
        );
        assert_eq!(LabelSelector::default().render(), "");
    }
}
