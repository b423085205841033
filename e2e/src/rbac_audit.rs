//! Finds unused and missing permissions: compares the roles of `config/rbac` with the API
//! server's audit log of a full test run, in which every component ran with exactly those roles.
//!
//! For each ServiceAccount defined in `config/rbac`, every rule is expanded into its
//! (apiGroup, resource, verb) grants and each request the account made is counted on the rule
//! that authorized it (the binding named in the audit annotation `authorization.k8s.io/reason`,
//! then the first rule of that role that allows the request, as the RBAC authorizer does). The
//! check fails when
//! - a grant was never used and is not in [`EXEMPTIONS`] (the permission is not needed, or no test
//!   exercises the code that needs it),
//! - a request was denied by the authorizer (the permission is missing),
//! - a request was allowed by something else than our rules and the [`PLATFORM_GRANTS`]
//!   (a binding we do not ship, or roles on the server that differ from the YAML).
//!
//! A server-side apply that creates its object (`patch` answered 201) is authorized as `create`
//! as well, so it counts as a use of both. A 403 after an allowed authorization comes from
//! admission (e.g. a namespace being deleted) and is only reported.
//!
//! The audit policy must record the accounts' requests at level `Metadata` or above (the
//! decision and reason annotations are there at every level).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::Context;
use k8s_openapi::api::rbac::v1::PolicyRule;
use serde::Deserialize;

use crate::rbac::{Account, GrantedRole, Policy, Request, rule_allows, scope_covers};

/// A grant a full test run cannot exercise, and why.
#[derive(Debug, Clone, Copy)]
pub struct Exemption {
    /// ServiceAccount name.
    pub account: &'static str,
    pub api_group: &'static str,
    /// `resource` or `resource/subresource`.
    pub resource: &'static str,
    pub verb: &'static str,
    pub reason: &'static str,
}

/// Grants allowed to stay unused in a full run. Keep this short: prefer a test that exercises the
/// code path.
pub const EXEMPTIONS: &[Exemption] = &[];

/// Roles of the platform every authenticated identity holds, and which of our requests they are
/// expected to authorize.
pub const PLATFORM_GRANTS: &[(&str, &str)] = &[(
    "system:discovery",
    "API discovery (/api, /apis/...): the controller-manager's startup probe, kube's lookup of third-party kinds",
)];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditEvent {
    #[serde(rename = "auditID")]
    audit_id: String,
    stage: String,
    #[serde(rename = "requestURI", default)]
    request_uri: String,
    verb: String,
    user: UserInfo,
    #[serde(default)]
    object_ref: Option<ObjectReference>,
    #[serde(default)]
    response_status: Option<ResponseStatus>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct UserInfo {
    #[serde(default)]
    username: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectReference {
    #[serde(default)]
    resource: String,
    #[serde(default)]
    subresource: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    api_group: String,
}

#[derive(Debug, Deserialize)]
struct ResponseStatus {
    #[serde(default)]
    code: Option<i32>,
}

/// One request of one of our accounts, from its last recorded stage.
#[derive(Debug, Clone)]
pub struct Observed {
    pub account: Account,
    pub request: Request,
    pub code: Option<i32>,
    pub decision: String,
    pub reason: String,
    pub uri: String,
}

/// Reads audit logs (JSON lines) and keeps the requests of `accounts`, one per audit ID. Lines
/// that are not audit events (e.g. a line cut short by a crash) are counted, not fatal.
pub fn read_logs(paths: &[&Path], accounts: &[Account]) -> anyhow::Result<(Vec<Observed>, usize)> {
    let by_username: HashMap<String, &Account> = accounts
        .iter()
        .map(|account| (account.username(), account))
        .collect();
    let mut latest: HashMap<String, (u8, Observed)> = HashMap::new();
    let mut malformed = 0;
    for path in paths {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading audit log {}", path.display()))?;
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            let Ok(event) = serde_json::from_str::<AuditEvent>(line) else {
                malformed += 1;
                continue;
            };
            let Some(account) = by_username.get(&event.user.username) else {
                continue;
            };
            let rank = match event.stage.as_str() {
                "ResponseComplete" | "Panic" => 2,
                "ResponseStarted" => 1,
                _ => 0,
            };
            if latest
                .get(&event.audit_id)
                .is_some_and(|(seen, _)| *seen >= rank)
            {
                continue;
            }
            let observed = Observed {
                account: (*account).clone(),
                request: request_of(&event),
                code: event
                    .response_status
                    .as_ref()
                    .and_then(|status| status.code),
                decision: event
                    .annotations
                    .get("authorization.k8s.io/decision")
                    .cloned()
                    .unwrap_or_default(),
                reason: event
                    .annotations
                    .get("authorization.k8s.io/reason")
                    .cloned()
                    .unwrap_or_default(),
                uri: event.request_uri.clone(),
            };
            latest.insert(event.audit_id, (rank, observed));
        }
    }
    let mut requests: Vec<Observed> = latest.into_values().map(|(_, observed)| observed).collect();
    requests.sort_by(|a, b| a.uri.cmp(&b.uri));
    Ok((requests, malformed))
}

fn request_of(event: &AuditEvent) -> Request {
    let Some(object) = &event.object_ref else {
        let path = event
            .request_uri
            .split('?')
            .next()
            .unwrap_or_default()
            .to_string();
        return Request {
            verb: event.verb.clone(),
            path,
            ..Request::default()
        };
    };
    let mut name = object.name.clone();
    if name.is_empty() && matches!(event.verb.as_str(), "list" | "watch") {
        name = field_selector_name(&event.request_uri).unwrap_or_default();
    }
    Request {
        verb: event.verb.clone(),
        api_group: object.api_group.clone(),
        resource: object.resource.clone(),
        subresource: object.subresource.clone(),
        namespace: object.namespace.clone(),
        name,
        path: String::new(),
    }
}

/// `X` of a `fieldSelector=metadata.name=X` query parameter (RBAC applies `resourceNames` to a
/// list or watch only with it).
fn field_selector_name(uri: &str) -> Option<String> {
    let query = uri.split_once('?')?.1;
    query.split('&').find_map(|parameter| {
        let value = parameter.strip_prefix("fieldSelector=")?;
        let decoded = percent_decode(value);
        decoded
            .split(',')
            .find_map(|term| term.strip_prefix("metadata.name=").map(str::to_string))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let decoded = (bytes[index] == b'%')
            .then(|| text.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match decoded {
            Some(byte) => {
                out.push(byte);
                index += 3;
            }
            None => {
                out.push(if bytes[index] == b'+' {
                    b' '
                } else {
                    bytes[index]
                });
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `(binding, role kind, role name)` of an RBAC allow reason, e.g.
/// `RBAC: allowed by ClusterRoleBinding "x" of ClusterRole "y" to ServiceAccount "a/b"`.
fn parse_reason(reason: &str) -> Option<(String, String, String)> {
    let rest = reason.strip_prefix("RBAC: allowed by ")?;
    let (binding_kind, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix('"')?;
    let (binding_name, rest) = rest.split_once('"')?;
    let rest = rest.strip_prefix(" of ")?;
    let (role_kind, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix('"')?;
    let (role_name, _) = rest.split_once('"')?;
    Some((
        format!("{binding_kind} \"{binding_name}\""),
        role_kind.to_string(),
        role_name.to_string(),
    ))
}

/// One (apiGroup, resource, verb) of one rule, and how often it was used.
#[derive(Debug, Clone)]
pub struct GrantUse {
    pub role: String,
    pub rule: usize,
    pub api_group: String,
    pub resource: String,
    pub resource_names: String,
    pub verb: String,
    pub requests: u64,
    pub exemption: Option<&'static str>,
}

/// The findings for one run.
#[derive(Debug, Default)]
pub struct Report {
    /// Per account, every grant of every rule, in YAML order.
    pub grants: Vec<(Account, Vec<GrantUse>)>,
    /// Requests allowed by a platform role, by role.
    pub platform: BTreeMap<String, u64>,
    /// Denied by the authorizer: `account verb resource` -> (count, an example URI).
    pub denied: BTreeMap<String, (u64, String)>,
    /// Allowed by something we did not expect: description -> (count, an example URI).
    pub unexpected: BTreeMap<String, (u64, String)>,
    /// Refused after authorization (admission, e.g. an Event in a namespace being deleted):
    /// `account verb resource` -> count.
    pub refused_by_admission: BTreeMap<String, u64>,
    /// Exemptions whose grant was used after all.
    pub stale_exemptions: Vec<String>,
    pub malformed_lines: usize,
    pub requests: usize,
}

impl Report {
    pub fn unused(&self) -> Vec<(&Account, &GrantUse)> {
        self.grants
            .iter()
            .flat_map(|(account, grants)| grants.iter().map(move |grant| (account, grant)))
            .filter(|(_, grant)| grant.requests == 0 && grant.exemption.is_none())
            .collect()
    }

    pub fn passed(&self) -> bool {
        self.unused().is_empty() && self.denied.is_empty() && self.unexpected.is_empty()
    }
}

fn describe(request: &Request) -> String {
    if request.resource.is_empty() {
        return format!("{} {}", request.verb, request.path);
    }
    let group = if request.api_group.is_empty() {
        "core"
    } else {
        &request.api_group
    };
    let mut text = format!("{} {group}/{}", request.verb, request.resource_path());
    if !request.name.is_empty() {
        text.push_str(&format!(" name={}", request.name));
    }
    if !request.namespace.is_empty() {
        text.push_str(&format!(" namespace={}", request.namespace));
    }
    text
}

fn bump(map: &mut BTreeMap<String, (u64, String)>, key: String, uri: &str) {
    let entry = map.entry(key).or_insert((0, uri.to_string()));
    entry.0 += 1;
}

/// Compares the requests with the policy.
pub fn check(
    policy: &Policy,
    requests: &[Observed],
    exemptions: &[Exemption],
) -> anyhow::Result<Report> {
    let mut report = Report {
        requests: requests.len(),
        ..Report::default()
    };
    let mut granted: HashMap<Account, Vec<GrantedRole>> = HashMap::new();
    // (account, role index, rule index, group, resource, verb) -> requests
    let mut counts: HashMap<(Account, usize, usize, String, String, String), u64> = HashMap::new();
    for account in &policy.accounts {
        granted.insert(account.clone(), policy.granted(account)?);
    }
    for observed in requests {
        let request = &observed.request;
        let roles = granted
            .get(&observed.account)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if observed.decision == "forbid" {
            bump(
                &mut report.denied,
                format!("{} {}", observed.account, describe(request)),
                &observed.uri,
            );
            continue;
        }
        let Some((binding, role_kind, role_name)) = parse_reason(&observed.reason) else {
            bump(
                &mut report.unexpected,
                format!(
                    "{} {} (decision {:?}, reason {:?})",
                    observed.account,
                    describe(request),
                    observed.decision,
                    observed.reason
                ),
                &observed.uri,
            );
            continue;
        };
        let ours = roles.iter().enumerate().find(|(_, role)| {
            role.binding == binding && role.kind == role_kind && role.name == role_name
        });
        let Some((role_index, role)) = ours else {
            if role_kind == "ClusterRole"
                && PLATFORM_GRANTS.iter().any(|(name, _)| *name == role_name)
            {
                *report.platform.entry(role_name).or_insert(0) += 1;
            } else {
                bump(
                    &mut report.unexpected,
                    format!(
                        "{} {} allowed by {binding} of {role_kind} {role_name:?}",
                        observed.account,
                        describe(request)
                    ),
                    &observed.uri,
                );
            }
            continue;
        };
        let Some(rule_index) = first_rule(role, request) else {
            bump(
                &mut report.unexpected,
                format!(
                    "{} {} allowed by {binding}, but no rule of {role_kind} {role_name} in config/rbac allows it (the roles on the server differ)",
                    observed.account,
                    describe(request)
                ),
                &observed.uri,
            );
            continue;
        };
        *counts
            .entry((
                observed.account.clone(),
                role_index,
                rule_index,
                request.api_group.clone(),
                request.resource_path(),
                request.verb.clone(),
            ))
            .or_insert(0) += 1;
        if observed.code.is_some_and(|code| code == 403) {
            let kind = Request {
                name: String::new(),
                namespace: String::new(),
                ..request.clone()
            };
            *report
                .refused_by_admission
                .entry(format!("{} {}", observed.account, describe(&kind)))
                .or_insert(0) += 1;
        }
        // A server-side apply that created the object was authorized as `create` too.
        if request.verb == "patch" && observed.code == Some(201) {
            let create = Request {
                verb: "create".into(),
                name: String::new(),
                ..request.clone()
            };
            let allowed = roles
                .iter()
                .enumerate()
                .find_map(|(index, role)| first_rule(role, &create).map(|rule| (index, rule)));
            match allowed {
                Some((role_index, rule_index)) => {
                    *counts
                        .entry((
                            observed.account.clone(),
                            role_index,
                            rule_index,
                            create.api_group.clone(),
                            create.resource_path(),
                            create.verb.clone(),
                        ))
                        .or_insert(0) += 1;
                }
                None => bump(
                    &mut report.unexpected,
                    format!(
                        "{} {} created by apply, but no rule allows create",
                        observed.account,
                        describe(request)
                    ),
                    &observed.uri,
                ),
            }
        }
    }

    for account in &policy.accounts {
        let mut uses = Vec::new();
        for (role_index, role) in granted.get(account).into_iter().flatten().enumerate() {
            for (rule_index, rule) in role.rules.iter().enumerate() {
                for (api_group, resource, verb) in expand(rule) {
                    let requests = counts
                        .get(&(
                            account.clone(),
                            role_index,
                            rule_index,
                            api_group.clone(),
                            resource.clone(),
                            verb.clone(),
                        ))
                        .copied()
                        .unwrap_or(0);
                    let exemption = exemptions
                        .iter()
                        .find(|exemption| {
                            exemption.account == account.name
                                && exemption.api_group == api_group
                                && exemption.resource == resource
                                && exemption.verb == verb
                        })
                        .map(|exemption| exemption.reason);
                    if exemption.is_some() && requests > 0 {
                        report.stale_exemptions.push(format!(
                            "{account} {verb} {api_group}/{resource} is exempt but was used {requests} times"
                        ));
                    }
                    uses.push(GrantUse {
                        role: format!("{} {}", role.kind, role.name),
                        rule: rule_index + 1,
                        api_group,
                        resource,
                        resource_names: rule
                            .resource_names
                            .as_ref()
                            .filter(|names| !names.is_empty())
                            .map(|names| names.join(","))
                            .unwrap_or_else(|| "*".into()),
                        verb,
                        requests,
                        exemption,
                    });
                }
            }
        }
        report.grants.push((account.clone(), uses));
    }
    Ok(report)
}

fn first_rule(role: &GrantedRole, request: &Request) -> Option<usize> {
    if !request.resource.is_empty() && !scope_covers(&role.scope, &request.namespace) {
        return None;
    }
    role.rules
        .iter()
        .position(|rule| rule_allows(rule, request))
}

/// Every (apiGroup, resource, verb) a rule grants (non-resource URLs as resource `url:<path>`).
fn expand(rule: &PolicyRule) -> Vec<(String, String, String)> {
    let mut grants = Vec::new();
    for verb in &rule.verbs {
        for url in rule.non_resource_urls.iter().flatten() {
            grants.push((String::new(), format!("url:{url}"), verb.clone()));
        }
        for api_group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                grants.push((api_group.clone(), resource.clone(), verb.clone()));
            }
        }
    }
    grants
}

/// The report as text: one table per account, then the findings.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    for (account, grants) in &report.grants {
        out.push_str(&format!("ServiceAccount {account}\n"));
        out.push_str(&format!(
            "  {:<33} {:>4}  {:<28} {:<31} {:<34} {:<16} {:>8}\n",
            "role", "rule", "apiGroup", "resource", "resourceNames", "verb", "requests"
        ));
        for grant in grants {
            let api_group = if grant.api_group.is_empty() {
                "\"\""
            } else {
                &grant.api_group
            };
            let flag = match (grant.requests, grant.exemption) {
                (0, None) => "  UNUSED".to_string(),
                (0, Some(reason)) => format!("  exempt: {reason}"),
                _ => String::new(),
            };
            out.push_str(&format!(
                "  {:<33} {:>4}  {:<28} {:<31} {:<34} {:<16} {:>8}{flag}\n",
                grant.role,
                grant.rule,
                api_group,
                grant.resource,
                grant.resource_names,
                grant.verb,
                grant.requests
            ));
        }
        out.push('\n');
    }
    for (role, count) in &report.platform {
        out.push_str(&format!(
            "allowed by platform ClusterRole {role}: {count} requests\n"
        ));
    }
    for (what, count) in &report.refused_by_admission {
        out.push_str(&format!(
            "refused after authorization (admission), not an RBAC finding: {what} x{count}\n"
        ));
    }
    for stale in &report.stale_exemptions {
        out.push_str(&format!("note: {stale}; drop the exemption\n"));
    }
    if report.malformed_lines > 0 {
        out.push_str(&format!(
            "note: {} audit log lines were not audit events\n",
            report.malformed_lines
        ));
    }
    let unused = report.unused();
    for (account, grant) in &unused {
        out.push_str(&format!(
            "UNUSED: {account} {} {}/{} (rule {} of {}): remove it, or add a test that exercises it, or an exemption saying why a run cannot\n",
            grant.verb,
            if grant.api_group.is_empty() { "core" } else { &grant.api_group },
            grant.resource,
            grant.rule,
            grant.role
        ));
    }
    for (what, (count, uri)) in &report.denied {
        out.push_str(&format!("DENIED: {what} x{count} (e.g. {uri})\n"));
    }
    for (what, (count, uri)) in &report.unexpected {
        out.push_str(&format!("UNEXPECTED: {what} x{count} (e.g. {uri})\n"));
    }
    out.push_str(&format!(
        "{} requests of {} accounts checked: {} unused grants, {} denied, {} unexpected -> {}\n",
        report.requests,
        report.grants.len(),
        unused.len(),
        report.denied.values().map(|(count, _)| count).sum::<u64>(),
        report
            .unexpected
            .values()
            .map(|(count, _)| count)
            .sum::<u64>(),
        if report.passed() { "OK" } else { "FAILED" }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy() -> Policy {
        let documents = [
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "ctl", "namespace": "kube-system"}}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "ctl"},
            "rules": [
                {"apiGroups": ["spiderpool.spidernet.io"], "resources": ["spiderippools"], "verbs": ["get", "list"]},
                {"apiGroups": ["k8s.cni.cncf.io"], "resources": ["network-attachment-definitions"], "verbs": ["create", "patch"]},
            ]}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "ctl"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "ctl"},
                   "subjects": [{"kind": "ServiceAccount", "name": "ctl", "namespace": "kube-system"}]}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "ctl", "namespace": "kube-system"},
                   "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["conf"], "verbs": ["list"]}]}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "ctl", "namespace": "kube-system"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ctl"},
                   "subjects": [{"kind": "ServiceAccount", "name": "ctl", "namespace": "kube-system"}]}),
        ];
        Policy::from_documents(&documents).unwrap()
    }

    const CLUSTER: &str = r#"RBAC: allowed by ClusterRoleBinding "ctl" of ClusterRole "ctl" to ServiceAccount "ctl/kube-system""#;
    const NAMESPACED: &str = r#"RBAC: allowed by RoleBinding "ctl/kube-system" of Role "ctl" to ServiceAccount "ctl/kube-system""#;

    fn event(
        id: &str,
        verb: &str,
        uri: &str,
        object: serde_json::Value,
        code: i32,
        decision: &str,
        reason: &str,
    ) -> String {
        json!({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
            "auditID": id, "stage": "ResponseComplete", "requestURI": uri, "verb": verb,
            "user": {"username": "system:serviceaccount:kube-system:ctl", "groups": ["system:serviceaccounts"]},
            "objectRef": object, "responseStatus": {"metadata": {}, "code": code},
            "annotations": {"authorization.k8s.io/decision": decision, "authorization.k8s.io/reason": reason},
        })
        .to_string()
    }

    /// The policy and the requests of `lines`, read back from an audit log file.
    fn observed(lines: &[String]) -> (Policy, Vec<Observed>) {
        let dir = std::env::temp_dir().join(crate::unique_name("rbac-audit-test"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.log");
        std::fs::write(&path, lines.join("\n")).unwrap();
        let policy = policy();
        let (requests, _) = read_logs(&[path.as_path()], &policy.accounts).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        (policy, requests)
    }

    fn run(lines: &[String]) -> Report {
        let (policy, requests) = observed(lines);
        check(&policy, &requests, &[]).unwrap()
    }

    fn pools(verb: &str, id: &str) -> String {
        event(
            id,
            verb,
            "/apis/spiderpool.spidernet.io/v2beta1/spiderippools",
            json!({"resource": "spiderippools", "apiGroup": "spiderpool.spidernet.io", "apiVersion": "v2beta1"}),
            200,
            "allow",
            CLUSTER,
        )
    }

    fn everything_used() -> Vec<String> {
        vec![
            pools("get", "1"),
            pools("list", "2"),
            event(
                "3",
                "patch",
                "/apis/k8s.cni.cncf.io/v1/namespaces/a/network-attachment-definitions/n",
                json!({"resource": "network-attachment-definitions", "apiGroup": "k8s.cni.cncf.io", "namespace": "a", "name": "n"}),
                201,
                "allow",
                CLUSTER,
            ),
            event(
                "4",
                "list",
                "/api/v1/namespaces/kube-system/configmaps?fieldSelector=metadata.name%3Dconf&limit=500",
                json!({"resource": "configmaps", "namespace": "kube-system", "apiVersion": "v1"}),
                200,
                "allow",
                NAMESPACED,
            ),
        ]
    }

    #[test]
    fn a_run_that_used_every_grant_passes_and_an_apply_that_created_counts_as_create() {
        let report = run(&everything_used());
        assert!(report.passed(), "{}", render(&report));
        let (_, grants) = &report.grants[0];
        let create = grants.iter().find(|grant| grant.verb == "create").unwrap();
        assert_eq!(create.requests, 1);
        let list = grants
            .iter()
            .find(|grant| grant.resource == "configmaps")
            .unwrap();
        assert_eq!((list.requests, list.resource_names.as_str()), (1, "conf"));
    }

    #[test]
    fn a_grant_never_used_fails_unless_exempt() {
        let mut lines = everything_used();
        lines.remove(1);
        let report = run(&lines);
        assert_eq!(report.unused().len(), 1);
        assert!(!report.passed());
        assert!(
            render(&report)
                .contains("UNUSED: kube-system/ctl list spiderpool.spidernet.io/spiderippools")
        );
        let exempt = [Exemption {
            account: "ctl",
            api_group: "spiderpool.spidernet.io",
            resource: "spiderippools",
            verb: "list",
            reason: "because",
        }];
        let (policy, requests) = observed(&lines);
        assert!(check(&policy, &requests, &exempt).unwrap().passed());
    }

    #[test]
    fn denied_requests_and_grants_from_elsewhere_fail_but_discovery_and_admission_refusals_do_not()
    {
        let mut lines = everything_used();
        lines.push(event("5", "delete", "/apis/spiderpool.spidernet.io/v2beta1/spiderippools/p",
                         json!({"resource": "spiderippools", "apiGroup": "spiderpool.spidernet.io", "name": "p"}),
                         403, "forbid", ""));
        let report = run(&lines);
        assert_eq!(report.denied.len(), 1, "{}", render(&report));
        assert!(!report.passed());

        let mut lines = everything_used();
        lines.push(event("6", "get", "/apis", serde_json::Value::Null, 200, "allow",
                         r#"RBAC: allowed by ClusterRoleBinding "system:discovery" of ClusterRole "system:discovery" to Group "system:authenticated""#));
        lines.push(pools("get", "7").replace("\"code\":200", "\"code\":403"));
        let report = run(&lines);
        assert!(report.passed(), "{}", render(&report));
        assert_eq!(report.platform.get("system:discovery"), Some(&1));
        assert_eq!(report.refused_by_admission.len(), 1);

        let mut lines = everything_used();
        lines.push(event("8", "get", "/api/v1/secrets", json!({"resource": "secrets"}), 200, "allow",
                         r#"RBAC: allowed by ClusterRoleBinding "oops" of ClusterRole "cluster-admin" to ServiceAccount "ctl/kube-system""#));
        // Allowed by our binding, but our YAML has no such rule: the server's roles differ.
        lines.push(event("9", "delete", "/apis/spiderpool.spidernet.io/v2beta1/spiderippools/p",
                         json!({"resource": "spiderippools", "apiGroup": "spiderpool.spidernet.io", "name": "p"}),
                         200, "allow", CLUSTER));
        let report = run(&lines);
        assert_eq!(report.unexpected.len(), 2, "{}", render(&report));
    }

    #[test]
    fn resource_names_bind_a_list_only_through_its_name_field_selector() {
        let mut lines = everything_used();
        // A list of every ConfigMap is not covered by the named rule.
        lines.push(event(
            "10",
            "list",
            "/api/v1/namespaces/kube-system/configmaps",
            json!({"resource": "configmaps", "namespace": "kube-system"}),
            200,
            "allow",
            NAMESPACED,
        ));
        let report = run(&lines);
        assert_eq!(report.unexpected.len(), 1, "{}", render(&report));
    }

    #[test]
    fn only_the_last_stage_of_a_request_counts() {
        let mut lines = everything_used();
        lines.push(pools("get", "1").replace("ResponseComplete", "ResponseStarted"));
        let report = run(&lines);
        let (_, grants) = &report.grants[0];
        assert_eq!(
            grants
                .iter()
                .find(|grant| grant.verb == "get")
                .unwrap()
                .requests,
            1
        );
    }

    #[test]
    fn reasons_and_field_selectors_parse() {
        assert_eq!(
            parse_reason(NAMESPACED),
            Some((
                "RoleBinding \"ctl/kube-system\"".into(),
                "Role".into(),
                "ctl".into()
            ))
        );
        assert_eq!(parse_reason("no"), None);
        assert_eq!(
            field_selector_name(
                "/api/v1/configmaps?fieldSelector=metadata.name%3Dspiderpool-conf&watch=true"
            ),
            Some("spiderpool-conf".into())
        );
        assert_eq!(field_selector_name("/api/v1/configmaps?watch=true"), None);
    }
}
