//! The vocabulary of the admission server: the webhooks it answers ([`Hook`]: path, kind,
//! mutating or not), what a handler decides ([`Outcome`]), and the decoding and patching of the
//! reviewed objects ([`typed`], [`patch_between`]).

use kube::core::DynamicObject;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::field::{BadValue, Denial, FieldError, GROUP};

/// What a handler decided.
#[derive(Debug)]
pub enum Outcome {
    Allow,
    Patch(json_patch::Patch),
    Deny(Denial),
}

/// The webhooks this server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    MutateIPPool,
    ValidateIPPool,
    MutateSubnet,
    ValidateSubnet,
    MutateReservedIP,
    ValidateReservedIP,
    MutateMultusConfig,
    ValidateMultusConfig,
    MutateCoordinator,
    ValidateCoordinator,
    ValidatePodAnnotations,
    ValidateWorkloadAnnotations,
    ValidateNamespaceAnnotations,
}

impl Hook {
    pub const ALL: [Hook; 13] = [
        Hook::MutateIPPool,
        Hook::ValidateIPPool,
        Hook::MutateSubnet,
        Hook::ValidateSubnet,
        Hook::MutateReservedIP,
        Hook::ValidateReservedIP,
        Hook::MutateMultusConfig,
        Hook::ValidateMultusConfig,
        Hook::MutateCoordinator,
        Hook::ValidateCoordinator,
        Hook::ValidatePodAnnotations,
        Hook::ValidateWorkloadAnnotations,
        Hook::ValidateNamespaceAnnotations,
    ];

    /// The URL path: upstream's controller-runtime paths for Spiderpool kinds, ours for the
    /// annotation checks.
    pub fn path(self) -> &'static str {
        match self {
            Hook::MutateIPPool => "/mutate-spiderpool-spidernet-io-v2beta1-spiderippool",
            Hook::ValidateIPPool => "/validate-spiderpool-spidernet-io-v2beta1-spiderippool",
            Hook::MutateSubnet => "/mutate-spiderpool-spidernet-io-v2beta1-spidersubnet",
            Hook::ValidateSubnet => "/validate-spiderpool-spidernet-io-v2beta1-spidersubnet",
            Hook::MutateReservedIP => "/mutate-spiderpool-spidernet-io-v2beta1-spiderreservedip",
            Hook::ValidateReservedIP => {
                "/validate-spiderpool-spidernet-io-v2beta1-spiderreservedip"
            }
            Hook::MutateMultusConfig => {
                "/mutate-spiderpool-spidernet-io-v2beta1-spidermultusconfig"
            }
            Hook::ValidateMultusConfig => {
                "/validate-spiderpool-spidernet-io-v2beta1-spidermultusconfig"
            }
            Hook::MutateCoordinator => "/mutate-spiderpool-spidernet-io-v2beta1-spidercoordinator",
            Hook::ValidateCoordinator => {
                "/validate-spiderpool-spidernet-io-v2beta1-spidercoordinator"
            }
            Hook::ValidatePodAnnotations => "/validate-ipam-annotations-v1-pod",
            Hook::ValidateWorkloadAnnotations => "/validate-ipam-annotations-workload",
            Hook::ValidateNamespaceAnnotations => "/validate-ipam-annotations-v1-namespace",
        }
    }

    /// The kind label of metrics and logs.
    pub fn kind(self) -> &'static str {
        match self {
            Hook::MutateIPPool | Hook::ValidateIPPool => "SpiderIPPool",
            Hook::MutateSubnet | Hook::ValidateSubnet => "SpiderSubnet",
            Hook::MutateReservedIP | Hook::ValidateReservedIP => "SpiderReservedIP",
            Hook::MutateMultusConfig | Hook::ValidateMultusConfig => "SpiderMultusConfig",
            Hook::MutateCoordinator | Hook::ValidateCoordinator => "SpiderCoordinator",
            Hook::ValidatePodAnnotations => "Pod",
            Hook::ValidateWorkloadAnnotations => "Workload",
            Hook::ValidateNamespaceAnnotations => "Namespace",
        }
    }

    pub fn is_mutating(self) -> bool {
        matches!(
            self,
            Hook::MutateIPPool
                | Hook::MutateSubnet
                | Hook::MutateReservedIP
                | Hook::MutateMultusConfig
                | Hook::MutateCoordinator
        )
    }
}

/// Decodes the request's object (or old object) into a typed kind. An object that does not fit
/// the type (a required field left out, a wrong type) is denied as Kubernetes denies invalid
/// objects, naming the field: mutating webhooks run before the API server checks the schema.
pub fn typed<K: DeserializeOwned>(object: Option<&DynamicObject>, what: &str) -> Result<K, Denial> {
    let object =
        object.ok_or_else(|| Denial::BadRequest(format!("the review carries no {what}")))?;
    let value = serde_json::to_value(object)
        .map_err(|error| Denial::BadRequest(format!("cannot decode the {what}: {error}")))?;
    serde_path_to_error::deserialize(value).map_err(|error| {
        let kind = object
            .types
            .as_ref()
            .map(|types| types.kind.clone())
            .unwrap_or_default();
        let group = object
            .types
            .as_ref()
            .and_then(|types| types.api_version.split_once('/'))
            .map(|(group, _)| group)
            .unwrap_or_default();
        Denial::InvalidIn {
            group: if group == GROUP { GROUP } else { "" },
            kind,
            name: object.metadata.name.clone().unwrap_or_default(),
            errors: vec![decode_error(
                &error.path().to_string(),
                &error.inner().to_string(),
            )],
        }
    })
}

/// The field error of a serde failure at `path` (`.` for the top level).
fn decode_error(path: &str, message: &str) -> FieldError {
    let parent = path.trim_start_matches('.').trim_matches('?');
    let join = |field: &str| {
        if parent.is_empty() {
            field.to_string()
        } else {
            format!("{parent}.{field}")
        }
    };
    match message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        Some(field) => FieldError::required(join(field), ""),
        None => FieldError::invalid(parent, BadValue::Omitted, message),
    }
}

/// The JSON patch turning `before` into `after`.
pub fn patch_between<K: Serialize>(before: &K, after: &K) -> Result<json_patch::Patch, Denial> {
    let before = serde_json::to_value(before)
        .map_err(|error| Denial::Internal(format!("encoding the object: {error}")))?;
    let after = serde_json::to_value(after)
        .map_err(|error| Denial::Internal(format!("encoding the object: {error}")))?;
    Ok(json_patch::diff(&before, &after))
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use spiderpool_api::SpiderIPPool;

    use super::*;

    fn object(value: serde_json::Value) -> DynamicObject {
        serde_json::from_value(value).expect("a dynamic object")
    }

    #[test]
    fn a_pool_without_subnet_is_denied_naming_spec_subnet() {
        let pool = object(json!({
            "apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderIPPool",
            "metadata": {"name": "p"}, "spec": {"ips": ["10.0.0.1"]},
        }));
        let Err(denial) = typed::<SpiderIPPool>(Some(&pool), "object") else {
            panic!("decoded a pool without subnet");
        };
        assert_eq!(
            denial.message(),
            "SpiderIPPool.spiderpool.spidernet.io \"p\" is invalid: spec.subnet: Required value"
        );
        assert_eq!(denial.code(), 422);
    }

    #[test]
    fn a_field_of_the_wrong_type_is_named() {
        let pool = object(json!({
            "apiVersion": "spiderpool.spidernet.io/v2beta1", "kind": "SpiderIPPool",
            "metadata": {"name": "p"}, "spec": {"subnet": "10.0.0.0/24", "ipVersion": "four"},
        }));
        let Err(denial) = typed::<SpiderIPPool>(Some(&pool), "object") else {
            panic!("decoded a string ipVersion");
        };
        let message = denial.message();
        assert!(
            message.starts_with("SpiderIPPool.spiderpool.spidernet.io \"p\" is invalid: spec.ipVersion: Invalid value"),
            "{message}"
        );
        assert!(
            message.contains("invalid type: string \"four\""),
            "{message}"
        );
    }
}
