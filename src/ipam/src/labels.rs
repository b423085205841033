//! A minimal Kubernetes `LabelSelector` with `metav1.LabelSelectorAsSelector` semantics.
//!
//! Pools carry `podAffinity`, `namespaceAffinity` and `nodeAffinity` selectors. The allocation path
//! only needs "does this selector match these labels", plus the validation errors Kubernetes produces
//! for malformed selectors (upstream drops the pool with that error as the reason, and the IPPool
//! webhook rejects such selectors). Keeping an own type keeps this crate free of k8s-openapi; callers
//! convert from `k8s_openapi::...::LabelSelector` field by field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A label selector as stored in CRDs (`matchLabels` and `matchExpressions`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One `matchExpressions` item.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelSelectorRequirement {
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`; anything else is invalid.
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// Why a selector cannot be evaluated, in Kubernetes' `field.Error` wording.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LabelSelectorError {
    #[error("{0:?} is not a valid label selector operator")]
    InvalidOperator(String),
    #[error("key: Invalid value: {key:?}: {detail}")]
    InvalidKey { key: String, detail: String },
    #[error("values[{index}][{key}]: Invalid value: {value:?}: {detail}")]
    InvalidValue {
        key: String,
        index: usize,
        value: String,
        detail: String,
    },
    #[error("values: Invalid value: {values}: {detail}")]
    InvalidValueCount { values: String, detail: String },
    /// Several problems with one requirement, joined like `utilerrors.Aggregate`.
    #[error("[{}]", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    Multiple(Vec<LabelSelectorError>),
}

impl LabelSelectorError {
    /// A stable category for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        "invalid_label_selector"
    }
}

const QUALIFIED_NAME_MESSAGE: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const QUALIFIED_NAME_FORMAT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_VALUE_MESSAGE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FORMAT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const DNS1123_SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FORMAT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";

fn regex_error(message: &str, format: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{message} (regex used for validation is '{format}')");
    }
    let mut text = format!("{message} (e.g. ");
    for (index, example) in examples.iter().enumerate() {
        if index > 0 {
            text.push_str(" or ");
        }
        text.push_str(&format!("'{example}', "));
    }
    text.push_str(&format!("regex used for validation is '{format}')"));
    text
}

fn is_alphanumeric(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_qualified_name_part(text: &str) -> bool {
    let bytes = text.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            is_alphanumeric(first)
                && is_alphanumeric(last)
                && bytes
                    .iter()
                    .all(|&byte| is_alphanumeric(byte) || matches!(byte, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$` (Kubernetes `IsDNS1123Label` without the length).
pub(crate) fn is_dns1123_label(text: &str) -> bool {
    let bytes = text.as_bytes();
    let lower_alphanumeric = |byte: u8| byte.is_ascii_lowercase() || byte.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            lower_alphanumeric(first)
                && lower_alphanumeric(last)
                && bytes
                    .iter()
                    .all(|&byte| lower_alphanumeric(byte) || byte == b'-')
        }
        _ => false,
    }
}

/// Kubernetes `IsDNS1123Subdomain`: the list of problems (empty when valid).
pub fn dns1123_subdomain_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > 253 {
        errors.push("must be no more than 253 characters".to_string());
    }
    if !value.split('.').all(is_dns1123_label) {
        errors.push(regex_error(
            DNS1123_SUBDOMAIN_MESSAGE,
            DNS1123_SUBDOMAIN_FORMAT,
            &["example.com"],
        ));
    }
    errors
}

/// Kubernetes `IsQualifiedName`: the list of problems (empty when valid).
pub fn qualified_name_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errors.push("prefix part must be non-empty".to_string());
            } else {
                for message in dns1123_subdomain_errors(prefix) {
                    errors.push(format!("prefix part {message}"));
                }
            }
            *name
        }
        _ => {
            errors.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_MESSAGE, QUALIFIED_NAME_FORMAT, &["MyName", "my.name", "123-abc"])
            ));
            return errors;
        }
    };
    if name.is_empty() {
        errors.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errors.push("name part must be no more than 63 characters".to_string());
    }
    if !is_qualified_name_part(name) {
        errors.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_MESSAGE,
                QUALIFIED_NAME_FORMAT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errors
}

/// Kubernetes `IsValidLabelValue`: the list of problems (empty when valid).
pub fn label_value_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > 63 {
        errors.push("must be no more than 63 characters".to_string());
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        errors.push(regex_error(
            LABEL_VALUE_MESSAGE,
            LABEL_VALUE_FORMAT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errors
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    Equals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

fn go_string_slice(values: &[String]) -> String {
    if values.is_empty() {
        return "[]string(nil)".to_string();
    }
    let quoted: Vec<String> = values.iter().map(|value| format!("{value:?}")).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

/// `labels.NewRequirement` validation.
fn validate_requirement(
    key: &str,
    operator: Operator,
    values: &[String],
) -> Result<(), LabelSelectorError> {
    let mut errors = Vec::new();
    let key_errors = qualified_name_errors(key);
    if !key_errors.is_empty() {
        errors.push(LabelSelectorError::InvalidKey {
            key: key.to_string(),
            detail: key_errors.join("; "),
        });
    }
    let count_problem = match operator {
        Operator::In | Operator::NotIn if values.is_empty() => {
            Some("for 'in', 'notin' operators, values set can't be empty")
        }
        Operator::Equals if values.len() != 1 => {
            Some("exact-match compatibility requires one single value")
        }
        Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
            Some("values set must be empty for exists and does not exist")
        }
        _ => None,
    };
    if let Some(detail) = count_problem {
        errors.push(LabelSelectorError::InvalidValueCount {
            values: go_string_slice(values),
            detail: detail.to_string(),
        });
    }
    for (index, value) in values.iter().enumerate() {
        let value_errors = label_value_errors(value);
        if !value_errors.is_empty() {
            errors.push(LabelSelectorError::InvalidValue {
                key: key.to_string(),
                index,
                value: value.clone(),
                detail: value_errors.join("; "),
            });
        }
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(LabelSelectorError::Multiple(errors)),
    }
}

impl LabelSelector {
    /// A selector that requires exactly these labels.
    pub fn from_match_labels(match_labels: BTreeMap<String, String>) -> LabelSelector {
        LabelSelector {
            match_labels,
            match_expressions: Vec::new(),
        }
    }

    /// Whether the selector has neither `matchLabels` nor `matchExpressions` (it matches everything).
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    fn operator(requirement: &LabelSelectorRequirement) -> Result<Operator, LabelSelectorError> {
        match requirement.operator.as_str() {
            "In" => Ok(Operator::In),
            "NotIn" => Ok(Operator::NotIn),
            "Exists" => Ok(Operator::Exists),
            "DoesNotExist" => Ok(Operator::DoesNotExist),
            other => Err(LabelSelectorError::InvalidOperator(other.to_string())),
        }
    }

    /// `LabelSelectorAsSelector` validation: the first invalid requirement (match labels in key
    /// order, then expressions in order).
    pub fn validate(&self) -> Result<(), LabelSelectorError> {
        if self.is_empty() {
            return Ok(());
        }
        for (key, value) in &self.match_labels {
            validate_requirement(key, Operator::Equals, std::slice::from_ref(value))?;
        }
        for requirement in &self.match_expressions {
            let operator = Self::operator(requirement)?;
            validate_requirement(&requirement.key, operator, &requirement.values)?;
        }
        Ok(())
    }

    /// Kubernetes selector semantics: every requirement must hold. An empty selector matches
    /// everything; an invalid selector is an error (never a silent match).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> Result<bool, LabelSelectorError> {
        self.validate()?;
        let labels_match = self
            .match_labels
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value));
        if !labels_match {
            return Ok(false);
        }
        for requirement in &self.match_expressions {
            let present = labels.get(&requirement.key);
            let holds = match Self::operator(requirement)? {
                Operator::In => present.is_some_and(|value| requirement.values.contains(value)),
                Operator::NotIn => present.is_none_or(|value| !requirement.values.contains(value)),
                Operator::Exists => present.is_some(),
                Operator::DoesNotExist => present.is_none(),
                Operator::Equals => present.is_some_and(|value| requirement.values.contains(value)),
            };
            if !holds {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    fn expression(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: values.iter().map(|value| value.to_string()).collect(),
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert_eq!(LabelSelector::default().matches(&labels(&[])), Ok(true));
    }

    #[test]
    fn operators_follow_kubernetes_semantics() {
        let pod = labels(&[("app", "web"), ("tier", "front")]);
        let cases = [
            (expression("app", "In", &["web", "api"]), true),
            (expression("app", "In", &["api"]), false),
            (expression("app", "NotIn", &["api"]), true),
            (expression("missing", "NotIn", &["api"]), true),
            (expression("app", "NotIn", &["web"]), false),
            (expression("tier", "Exists", &[]), true),
            (expression("missing", "Exists", &[]), false),
            (expression("missing", "DoesNotExist", &[]), true),
            (expression("app", "DoesNotExist", &[]), false),
        ];
        for (requirement, expected) in cases {
            let selector = LabelSelector {
                match_labels: BTreeMap::new(),
                match_expressions: vec![requirement.clone()],
            };
            assert_eq!(selector.matches(&pod), Ok(expected), "{requirement:?}");
        }
        let both = LabelSelector {
            match_labels: labels(&[("app", "web")]),
            match_expressions: vec![expression("tier", "In", &["back"])],
        };
        assert_eq!(both.matches(&pod), Ok(false));
    }

    #[test]
    fn invalid_selectors_are_errors_with_kubernetes_text() {
        let operator = LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![expression("app", "Equals", &["x"])],
        };
        assert_eq!(
            operator.matches(&labels(&[])).unwrap_err().to_string(),
            "\"Equals\" is not a valid label selector operator"
        );
        let value = LabelSelector::from_match_labels(labels(&[("key", ".starts.with.dot")]));
        assert_eq!(
            value.validate().unwrap_err().to_string(),
            "values[0][key]: Invalid value: \".starts.with.dot\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        );
        let empty_in = LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![expression("app", "In", &[])],
        };
        assert_eq!(
            empty_in.validate().unwrap_err().to_string(),
            "values: Invalid value: []string(nil): for 'in', 'notin' operators, values set can't be empty"
        );
        let key = LabelSelector::from_match_labels(labels(&[("-bad", "x")]));
        assert!(
            key.validate()
                .unwrap_err()
                .to_string()
                .starts_with("key: Invalid value: \"-bad\": name part must consist")
        );
        assert!(
            LabelSelector::from_match_labels(labels(&[("example.com/app", "ok")]))
                .validate()
                .is_ok()
        );
        assert!(
            LabelSelector::from_match_labels(labels(&[("Example.com/app", "ok")]))
                .validate()
                .is_err()
        );
    }

    #[test]
    fn selector_serialises_in_kubernetes_shape() {
        let selector = LabelSelector {
            match_labels: labels(&[("a", "b")]),
            match_expressions: vec![expression("c", "Exists", &[])],
        };
        assert_eq!(
            serde_json::to_string(&selector).unwrap(),
            r#"{"matchLabels":{"a":"b"},"matchExpressions":[{"key":"c","operator":"Exists"}]}"#
        );
    }
}
