//! The shipped RBAC (`config/rbac`) as data: the objects `kubectl apply -k config/rbac` would
//! apply, and what they grant to each ServiceAccount. The e2e harness applies them and waits until
//! the authorizer honours them; the audit checker ([`crate::rbac_audit`]) compares them with what
//! the components really did.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde::Deserialize;
use serde_json::Value;

/// `config/rbac` of this repository.
pub fn rbac_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/rbac"))
}

/// Every document of the YAML files named by `dir/kustomization.yaml` (`resources:`), in order.
pub fn kustomization_documents(dir: &Path) -> anyhow::Result<Vec<Value>> {
    let path = dir.join("kustomization.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let kustomization: serde_yaml::Value =
        serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let resources = kustomization["resources"]
        .as_sequence()
        .with_context(|| format!("{} lists no resources", path.display()))?;
    let mut documents = Vec::new();
    for resource in resources {
        let file = resource
            .as_str()
            .with_context(|| format!("{}: a resource that is not a path", path.display()))?;
        documents.extend(yaml_documents(&dir.join(file))?);
    }
    Ok(documents)
}

/// The non-empty documents of a multi-document YAML file, as JSON values.
pub fn yaml_documents(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value =
            Value::deserialize(document).with_context(|| format!("parsing {}", path.display()))?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

/// A ServiceAccount, `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Account {
    pub namespace: String,
    pub name: String,
}

impl Account {
    /// The user name its tokens authenticate as.
    pub fn username(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }
}

impl std::fmt::Display for Account {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}/{}", self.namespace, self.name)
    }
}

/// A role and where it applies.
#[derive(Debug, Clone)]
pub struct GrantedRole {
    /// `Role` or `ClusterRole`.
    pub kind: String,
    pub name: String,
    /// The namespace a RoleBinding limits it to; `None` for a ClusterRoleBinding.
    pub scope: Option<String>,
    /// `ClusterRoleBinding "name"` or `RoleBinding "name/namespace"`, as the RBAC authorizer
    /// names the binding in its audit reason.
    pub binding: String,
    pub rules: Vec<PolicyRule>,
}

/// Everything the RBAC objects grant.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// The ServiceAccounts the objects define, in file order.
    pub accounts: Vec<Account>,
    pub cluster_roles: Vec<ClusterRole>,
    pub roles: Vec<Role>,
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
    pub role_bindings: Vec<RoleBinding>,
}

impl Policy {
    /// Reads the objects of `config/rbac` (or another kustomization directory).
    pub fn load(dir: &Path) -> anyhow::Result<Policy> {
        Policy::from_documents(&kustomization_documents(dir)?)
    }

    pub fn from_documents(documents: &[Value]) -> anyhow::Result<Policy> {
        let mut policy = Policy::default();
        for document in documents {
            let kind = document["kind"].as_str().unwrap_or_default();
            let decode_error = || format!("decoding {kind} {}", document["metadata"]["name"]);
            match kind {
                "ServiceAccount" => policy.accounts.push(Account {
                    namespace: document["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or("default")
                        .to_string(),
                    name: document["metadata"]["name"]
                        .as_str()
                        .with_context(decode_error)?
                        .to_string(),
                }),
                "ClusterRole" => policy
                    .cluster_roles
                    .push(serde_json::from_value(document.clone()).with_context(decode_error)?),
                "Role" => policy
                    .roles
                    .push(serde_json::from_value(document.clone()).with_context(decode_error)?),
                "ClusterRoleBinding" => policy
                    .cluster_role_bindings
                    .push(serde_json::from_value(document.clone()).with_context(decode_error)?),
                "RoleBinding" => policy
                    .role_bindings
                    .push(serde_json::from_value(document.clone()).with_context(decode_error)?),
                other => bail!("unexpected kind {other:?} among the RBAC objects"),
            }
        }
        Ok(policy)
    }

    fn role_rules(
        &self,
        kind: &str,
        name: &str,
        namespace: Option<&str>,
    ) -> Option<Vec<PolicyRule>> {
        match kind {
            "ClusterRole" => self
                .cluster_roles
                .iter()
                .find(|role| role.metadata.name.as_deref() == Some(name))
                .map(|role| role.rules.clone().unwrap_or_default()),
            "Role" => self
                .roles
                .iter()
                .find(|role| {
                    role.metadata.name.as_deref() == Some(name)
                        && role.metadata.namespace.as_deref() == namespace
                })
                .map(|role| role.rules.clone().unwrap_or_default()),
            _ => None,
        }
    }

    /// The roles bound to `account`, in the order of the bindings. A binding to a role the
    /// objects do not define is an error (the checker could not know what it grants).
    pub fn granted(&self, account: &Account) -> anyhow::Result<Vec<GrantedRole>> {
        let names_account = |subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>,
                             binding_namespace: Option<&str>| {
            subjects.iter().flatten().any(|subject| {
                subject.kind == "ServiceAccount"
                    && subject.name == account.name
                    && subject.namespace.as_deref().or(binding_namespace)
                        == Some(account.namespace.as_str())
            })
        };
        let mut granted = Vec::new();
        for binding in &self.cluster_role_bindings {
            if !names_account(&binding.subjects, None) {
                continue;
            }
            let name = binding.metadata.name.clone().unwrap_or_default();
            let rules = self
                .role_rules(&binding.role_ref.kind, &binding.role_ref.name, None)
                .with_context(|| {
                    format!(
                        "ClusterRoleBinding {name} refers to {} {}, which is not defined",
                        binding.role_ref.kind, binding.role_ref.name
                    )
                })?;
            granted.push(GrantedRole {
                kind: binding.role_ref.kind.clone(),
                name: binding.role_ref.name.clone(),
                scope: None,
                binding: format!("ClusterRoleBinding {name:?}"),
                rules,
            });
        }
        for binding in &self.role_bindings {
            let namespace = binding.metadata.namespace.clone().unwrap_or_default();
            if !names_account(&binding.subjects, Some(&namespace)) {
                continue;
            }
            let name = binding.metadata.name.clone().unwrap_or_default();
            let role_namespace = (binding.role_ref.kind == "Role").then_some(namespace.as_str());
            let rules = self
                .role_rules(
                    &binding.role_ref.kind,
                    &binding.role_ref.name,
                    role_namespace,
                )
                .with_context(|| {
                    format!(
                        "RoleBinding {namespace}/{name} refers to {} {}, which is not defined",
                        binding.role_ref.kind, binding.role_ref.name
                    )
                })?;
            granted.push(GrantedRole {
                kind: binding.role_ref.kind.clone(),
                name: binding.role_ref.name.clone(),
                scope: Some(namespace.clone()),
                binding: format!("RoleBinding \"{name}/{namespace}\""),
                rules,
            });
        }
        Ok(granted)
    }
}

/// What a request asks for, in RBAC terms.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    pub verb: String,
    /// Resource requests: API group (`""` for core), resource, subresource, namespace, name.
    pub api_group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// Non-resource requests (`/api`, `/apis/...`): the path; empty for resource requests.
    pub path: String,
}

impl Request {
    /// `resource` or `resource/subresource`.
    pub fn resource_path(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

fn contains_or_star(values: &Option<Vec<String>>, wanted: &str) -> bool {
    values
        .iter()
        .flatten()
        .any(|value| value == "*" || value == wanted)
}

/// Whether `rule` allows `request` (the RBAC authorizer's `RuleAllows`, without wildcard
/// subresources, which config/rbac never uses).
pub fn rule_allows(rule: &PolicyRule, request: &Request) -> bool {
    if !rule
        .verbs
        .iter()
        .any(|verb| verb == "*" || *verb == request.verb)
    {
        return false;
    }
    if request.resource.is_empty() {
        return rule.non_resource_urls.iter().flatten().any(|url| {
            url == "*"
                || *url == request.path
                || url
                    .strip_suffix('*')
                    .is_some_and(|prefix| request.path.starts_with(prefix))
        });
    }
    contains_or_star(&rule.api_groups, &request.api_group)
        && contains_or_star(&rule.resources, &request.resource_path())
        && rule
            .resource_names
            .as_ref()
            .is_none_or(|names| names.is_empty() || names.contains(&request.name))
}

/// Whether a role granted in `scope` applies to a request in `namespace`.
pub fn scope_covers(scope: &Option<String>, namespace: &str) -> bool {
    scope.as_deref().is_none_or(|scope| scope == namespace)
}
