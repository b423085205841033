//! Kubernetes field errors and API status errors, rendered exactly as Go's
//! `k8s.io/apimachinery` renders them, so a denial reads the same as upstream Spiderpool's.
//!
//! - [`FieldError`] is `field.Error`: `<path>: <Type>[: <value>][: <detail>]`.
//! - [`Denial`] is the `apierrors.StatusError` a validator returns: `NewInvalid` (422),
//!   `NewForbidden` (403), `NewAlreadyExists` (409), `NewInternalError` (500), `NewBadRequest`
//!   (400). [`Denial::status`] builds the `metav1.Status` put into the AdmissionResponse; the API
//!   server prefixes the message with `admission webhook "<name>" denied the request: `.
//!
//! Bad values are printed the way Go's `%q` / `%v` / `%#v` print them for strings, numbers,
//! string slices, string maps and the few structs upstream passes. Upstream also passes structs
//! holding pointers (whose `%#v` contains memory addresses); those are printed as their JSON,
//! which is the one deliberate deviation in message text.

use std::collections::BTreeMap;
use std::fmt;

use kube::core::response::{Status, StatusCause, StatusDetails, StatusSummary};

pub const GROUP: &str = spiderpool_api::constants::GROUP;

/// `field.ErrorType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    Invalid,
    Required,
    Forbidden,
    NotSupported,
    Internal,
}

impl ErrorType {
    fn as_str(self) -> &'static str {
        match self {
            ErrorType::Invalid => "Invalid value",
            ErrorType::Required => "Required value",
            ErrorType::Forbidden => "Forbidden",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::Internal => "Internal error",
        }
    }

    /// `metav1.CauseType` (the `field.ErrorType` string of Go).
    fn cause_type(self) -> &'static str {
        match self {
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::Internal => "InternalError",
        }
    }
}

/// A bad value as Go's `field.Error.ErrorBody` prints it.
#[derive(Debug, Clone, PartialEq)]
pub enum BadValue {
    /// Not printed (Required, Forbidden, Internal).
    Omitted,
    /// A nil pointer: `null`.
    Null,
    /// `%q` of a string.
    Str(String),
    /// `%v` of an integer.
    Int(i64),
    /// Printed verbatim (a `%#v` rendering made by the caller).
    Raw(String),
}

impl BadValue {
    pub fn str(value: impl Into<String>) -> BadValue {
        BadValue::Str(value.into())
    }

    /// `%#v` of a `[]string`.
    pub fn string_slice(values: &[String]) -> BadValue {
        BadValue::Raw(go_string_slice(values))
    }

    /// `%#v` of a `map[string]string` (Go sorts map keys when printing).
    pub fn string_map(map: &BTreeMap<String, String>) -> BadValue {
        BadValue::Raw(go_string_map(map))
    }

    /// JSON of a value whose Go `%#v` would contain pointer addresses.
    pub fn json<T: serde::Serialize>(value: &T) -> BadValue {
        BadValue::Raw(serde_json::to_string(value).unwrap_or_else(|_| "{}".to_string()))
    }
}

/// The most of a bad value a denial echoes back (bytes); a detail may quote the value once more,
/// so it gets four times that. A hostile 1 MB value must not come back in the answer.
pub const MAX_ECHOED_VALUE: usize = 256;

/// `text` cut at `limit` bytes (on a character boundary), saying how much was left out.
pub fn shorten(text: &str, limit: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= limit {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!(
        "{}... ({} more bytes)",
        &text[..end],
        text.len() - end
    ))
}

/// Go's `%q` of a string (close enough: Rust's debug escaping matches for printable text).
pub fn go_quote(text: &str) -> String {
    format!("{text:?}")
}

/// `%#v` of a `[]string`: `[]string{"a", "b"}`, `[]string(nil)` when absent.
pub fn go_string_slice(values: &[String]) -> String {
    let items: Vec<String> = values.iter().map(|value| go_quote(value)).collect();
    format!("[]string{{{}}}", items.join(", "))
}

/// `%#v` of a `map[string]string`: `map[string]string{"k":"v"}`.
pub fn go_string_map(map: &BTreeMap<String, String>) -> String {
    let items: Vec<String> = map
        .iter()
        .map(|(key, value)| format!("{}:{}", go_quote(key), go_quote(value)))
        .collect();
    format!("map[string]string{{{}}}", items.join(", "))
}

/// `field.Error`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub error_type: ErrorType,
    pub field: String,
    pub value: BadValue,
    pub detail: String,
}

impl FieldError {
    /// `field.Invalid`.
    pub fn invalid(field: impl Into<String>, value: BadValue, detail: impl Into<String>) -> Self {
        FieldError {
            error_type: ErrorType::Invalid,
            field: field.into(),
            value,
            detail: detail.into(),
        }
    }

    /// `field.Required`.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            error_type: ErrorType::Required,
            field: field.into(),
            value: BadValue::Omitted,
            detail: detail.into(),
        }
    }

    /// `field.Forbidden`.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            error_type: ErrorType::Forbidden,
            field: field.into(),
            value: BadValue::Omitted,
            detail: detail.into(),
        }
    }

    /// `field.NotSupported(path, value, valid)`: detail `supported values: "a", "b"`.
    pub fn not_supported(field: impl Into<String>, value: BadValue, valid: &[&str]) -> Self {
        let quoted: Vec<String> = valid.iter().map(|value| go_quote(value)).collect();
        FieldError {
            error_type: ErrorType::NotSupported,
            field: field.into(),
            value,
            detail: format!("supported values: {}", quoted.join(", ")),
        }
    }

    /// `field.InternalError`.
    pub fn internal(field: impl Into<String>, error: impl fmt::Display) -> Self {
        FieldError {
            error_type: ErrorType::Internal,
            field: field.into(),
            value: BadValue::Omitted,
            detail: error.to_string(),
        }
    }

    /// `ErrorBody`: everything after `<path>: `.
    pub fn body(&self) -> String {
        let mut text = match (&self.error_type, &self.value) {
            (ErrorType::Required | ErrorType::Forbidden | ErrorType::Internal, _)
            | (_, BadValue::Omitted) => self.error_type.as_str().to_string(),
            (error_type, BadValue::Null) => format!("{}: null", error_type.as_str()),
            (error_type, BadValue::Str(value)) => format!(
                "{}: {}",
                error_type.as_str(),
                go_quote(&shorten(value, MAX_ECHOED_VALUE))
            ),
            (error_type, BadValue::Int(value)) => format!("{}: {value}", error_type.as_str()),
            (error_type, BadValue::Raw(value)) => format!(
                "{}: {}",
                error_type.as_str(),
                shorten(value, MAX_ECHOED_VALUE)
            ),
        };
        if !self.detail.is_empty() {
            text.push_str(": ");
            text.push_str(&shorten(&self.detail, 4 * MAX_ECHOED_VALUE));
        }
        text
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.field, self.body())
    }
}

/// `ErrorList.ToAggregate().Error()`: one message as is, several as `[a, b]` (duplicates
/// dropped, like `utilerrors.NewAggregate` over `field.ErrorList`).
pub fn aggregate(errors: &[FieldError]) -> String {
    let mut messages: Vec<String> = Vec::new();
    for error in errors {
        let message = error.to_string();
        if !messages.contains(&message) {
            messages.push(message);
        }
    }
    match messages.len() {
        1 => messages.remove(0),
        _ => format!("[{}]", messages.join(", ")),
    }
}

/// Why a request is refused: the Go `apierrors` constructor upstream uses.
#[derive(Debug, Clone, PartialEq)]
pub enum Denial {
    /// `NewInvalid(GroupKind{GROUP, kind}, name, errors)`: 422.
    Invalid {
        kind: &'static str,
        name: String,
        errors: Vec<FieldError>,
    },
    /// `NewInvalid` for a kind of another group (`""` for core), e.g. a Pod: 422.
    InvalidIn {
        group: &'static str,
        kind: String,
        name: String,
        errors: Vec<FieldError>,
    },
    /// `NewForbidden(GroupResource{GROUP, resource} or empty, name, message)`: 403.
    Forbidden {
        resource: Option<&'static str>,
        name: String,
        message: String,
    },
    /// `NewAlreadyExists(GroupResource{GROUP, kind}, name)`: 409.
    AlreadyExists {
        resource: &'static str,
        name: String,
    },
    /// `NewBadRequest(message)`: 400, for reviews we cannot read.
    BadRequest(String),
    /// `NewInternalError`: 500.
    Internal(String),
}

impl Denial {
    pub fn invalid(kind: &'static str, name: &str, errors: Vec<FieldError>) -> Denial {
        Denial::Invalid {
            kind,
            name: name.to_string(),
            errors,
        }
    }

    pub fn invalid_one(kind: &'static str, name: &str, error: FieldError) -> Denial {
        Denial::invalid(kind, name, vec![error])
    }

    /// `NewForbidden(schema.GroupResource{}, "", errors.New(message))`.
    pub fn forbidden_plain(message: impl Into<String>) -> Denial {
        Denial::Forbidden {
            resource: None,
            name: String::new(),
            message: message.into(),
        }
    }

    /// The message of the status error, as Go builds it.
    pub fn message(&self) -> String {
        match self {
            Denial::Invalid { kind, name, errors } => {
                if errors.is_empty() {
                    format!("{kind}.{GROUP} {} is invalid", go_quote(name))
                } else {
                    format!(
                        "{kind}.{GROUP} {} is invalid: {}",
                        go_quote(name),
                        aggregate(errors)
                    )
                }
            }
            Denial::InvalidIn {
                group,
                kind,
                name,
                errors,
            } => {
                let qualified = if group.is_empty() {
                    kind.clone()
                } else {
                    format!("{kind}.{group}")
                };
                format!(
                    "{qualified} {} is invalid: {}",
                    go_quote(name),
                    aggregate(errors)
                )
            }
            Denial::Forbidden {
                resource,
                name,
                message,
            } => match resource {
                None => format!("forbidden: {message}"),
                Some(resource) if name.is_empty() => {
                    format!("{resource}.{GROUP} is forbidden: {message}")
                }
                Some(resource) => {
                    format!(
                        "{resource}.{GROUP} {} is forbidden: {message}",
                        go_quote(name)
                    )
                }
            },
            Denial::AlreadyExists { resource, name } => {
                format!("{resource}.{GROUP} {} already exists", go_quote(name))
            }
            Denial::BadRequest(message) => message.clone(),
            Denial::Internal(message) => {
                format!("Internal error occurred: {message}")
            }
        }
    }

    pub fn code(&self) -> u16 {
        match self {
            Denial::Invalid { .. } | Denial::InvalidIn { .. } => 422,
            Denial::Forbidden { .. } => 403,
            Denial::AlreadyExists { .. } => 409,
            Denial::BadRequest(_) => 400,
            Denial::Internal(_) => 500,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Denial::Invalid { .. } | Denial::InvalidIn { .. } => "Invalid",
            Denial::Forbidden { .. } => "Forbidden",
            Denial::AlreadyExists { .. } => "AlreadyExists",
            Denial::BadRequest(_) => "BadRequest",
            Denial::Internal(_) => "InternalError",
        }
    }

    /// A stable category for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Denial::Invalid { .. } | Denial::InvalidIn { .. } => "invalid",
            Denial::Forbidden { .. } => "forbidden",
            Denial::AlreadyExists { .. } => "already_exists",
            Denial::BadRequest(_) => "bad_request",
            Denial::Internal(_) => "internal",
        }
    }

    /// The `metav1.Status` of the AdmissionResponse.
    pub fn status(&self) -> Status {
        let causes = |errors: &[FieldError]| -> Vec<StatusCause> {
            errors
                .iter()
                .map(|error| StatusCause {
                    reason: error.error_type.cause_type().to_string(),
                    message: error.body(),
                    field: error.field.clone(),
                })
                .collect()
        };
        let details = match self {
            Denial::Invalid { kind, name, errors } => Some(StatusDetails {
                name: name.clone(),
                group: GROUP.to_string(),
                kind: (*kind).to_string(),
                causes: causes(errors),
                uid: String::new(),
                retry_after_seconds: 0,
            }),
            Denial::InvalidIn {
                group,
                kind,
                name,
                errors,
            } => Some(StatusDetails {
                name: name.clone(),
                group: (*group).to_string(),
                kind: kind.clone(),
                causes: causes(errors),
                uid: String::new(),
                retry_after_seconds: 0,
            }),
            Denial::Forbidden { resource, name, .. } => Some(StatusDetails {
                name: name.clone(),
                group: resource.map(|_| GROUP.to_string()).unwrap_or_default(),
                kind: resource.unwrap_or_default().to_string(),
                uid: String::new(),
                causes: Vec::new(),
                retry_after_seconds: 0,
            }),
            Denial::AlreadyExists { resource, name } => Some(StatusDetails {
                name: name.clone(),
                group: GROUP.to_string(),
                kind: (*resource).to_string(),
                uid: String::new(),
                causes: Vec::new(),
                retry_after_seconds: 0,
            }),
            Denial::BadRequest(_) | Denial::Internal(_) => None,
        };
        Status {
            status: Some(StatusSummary::Failure),
            code: self.code(),
            message: self.message(),
            reason: self.reason().to_string(),
            details,
            metadata: None,
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_errors_render_like_go() {
        assert_eq!(
            FieldError::invalid(
                "spec.subnet",
                BadValue::str("172.18.40.1/24"),
                "unformatted"
            )
            .to_string(),
            "spec.subnet: Invalid value: \"172.18.40.1/24\": unformatted"
        );
        assert_eq!(
            FieldError::invalid("spec.ipVersion", BadValue::Null, "is not generated").to_string(),
            "spec.ipVersion: Invalid value: null: is not generated"
        );
        assert_eq!(
            FieldError::forbidden("spec.ips", "overlap").to_string(),
            "spec.ips: Forbidden: overlap"
        );
        assert_eq!(
            FieldError::required("spec.sriovConfig", "no x specified").to_string(),
            "spec.sriovConfig: Required value: no x specified"
        );
        assert_eq!(
            FieldError::not_supported("spec.ipVersion", BadValue::Int(5), &["4", "6"]).to_string(),
            "spec.ipVersion: Unsupported value: 5: supported values: \"4\", \"6\""
        );
        assert_eq!(
            FieldError::internal("spec.subnet", "boom").to_string(),
            "spec.subnet: Internal error: boom"
        );
        assert_eq!(
            go_string_slice(&["a".into(), "b".into()]),
            "[]string{\"a\", \"b\"}"
        );
        let map = BTreeMap::from([("k".to_string(), "v".to_string())]);
        assert_eq!(go_string_map(&map), "map[string]string{\"k\":\"v\"}");
    }

    // Found by the bad-input corpus: a 200 kB `spec.ips` item came back twice in a 400 kB denial.
    #[test]
    fn a_huge_bad_value_is_echoed_shortened() {
        let huge = "9".repeat(200_000);
        let error = FieldError::invalid(
            "spec.ips[0]",
            BadValue::str(huge.as_str()),
            format!("invalid IP range format in IPv4 '{huge}'"),
        );
        let body = error.body();
        assert!(body.len() < 6 * MAX_ECHOED_VALUE, "{} bytes", body.len());
        assert!(body.contains("... (199744 more bytes)"), "{body}");
        assert_eq!(shorten("☃☃", 4), "☃... (3 more bytes)");
        assert_eq!(shorten("short", 256), "short");
    }

    #[test]
    fn denials_carry_upstream_message_code_and_reason() {
        let invalid = Denial::invalid_one(
            "SpiderIPPool",
            "pool",
            FieldError::forbidden("spec.ips", "x"),
        );
        assert_eq!(
            invalid.message(),
            "SpiderIPPool.spiderpool.spidernet.io \"pool\" is invalid: spec.ips: Forbidden: x"
        );
        assert_eq!((invalid.code(), invalid.reason()), (422, "Invalid"));
        let two = Denial::invalid(
            "SpiderIPPool",
            "pool",
            vec![
                FieldError::forbidden("a", "x"),
                FieldError::forbidden("b", "y"),
                FieldError::forbidden("a", "x"),
            ],
        );
        assert!(
            two.message()
                .ends_with("is invalid: [a: Forbidden: x, b: Forbidden: y]")
        );
        assert_eq!(
            Denial::forbidden_plain("cannot update a terminating IPPool").message(),
            "forbidden: cannot update a terminating IPPool"
        );
        let delete = Denial::Forbidden {
            resource: Some("spiderippools"),
            name: "pool".into(),
            message: "cannot delete an IPPool with allocated IPs(5)".into(),
        };
        assert_eq!(
            delete.message(),
            "spiderippools.spiderpool.spidernet.io \"pool\" is forbidden: cannot delete an IPPool with allocated IPs(5)"
        );
        assert_eq!(delete.code(), 403);
        let exists = Denial::AlreadyExists {
            resource: "SpiderIPPool",
            name: "pool".into(),
        };
        assert_eq!(
            exists.message(),
            "SpiderIPPool.spiderpool.spidernet.io \"pool\" already exists"
        );
        assert_eq!(exists.status().code, 409);
        assert_eq!(exists.status().reason, "AlreadyExists");
    }
}
