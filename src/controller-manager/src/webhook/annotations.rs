//! Validation of the `ipam.spidernet.io/*` annotations on Pods, on the pod templates of
//! workloads and on Namespaces — beyond upstream, which only finds a typo at CNI time.
//!
//! The syntax is checked with the very parsers the CNI plugin uses (`spiderpool_ipam::annotations`),
//! then every pool or subnet named must exist and be of the family it is listed under (glob
//! patterns are left to allocation time). A denial names the annotation, the bad part and the fix.
//! Objects without such annotations are never judged.
//!
//! Two phases keep the rules pure: [`referenced_names`] lists the pools and subnets to look up;
//! the handler resolves them (cache first, then the API server, so a pool created a moment ago is
//! never reported missing) into a [`Known`] map; [`validate`] judges.

use std::collections::BTreeMap;

use spiderpool_ipam::annotations::{
    ANNO_DEFAULT_ROUTE_NIC, ANNO_NS_DEFAULT_IPV4_POOL, ANNO_NS_DEFAULT_IPV6_POOL, ANNO_POD_IPPOOL,
    ANNO_POD_IPPOOLS, ANNO_POD_ROUTES, ANNO_POOL_IP_NUMBER, ANNO_POOL_RECLAIM, ANNO_SUBNET,
    ANNO_SUBNETS, parse_namespace_default_pools, parse_pod_ippool, parse_pod_ippools,
    parse_pod_routes, parse_pool_ip_number, parse_pool_reclaim, parse_subnet_annotations,
    validate_multiple_nics,
};
use spiderpool_ipam::glob::has_wildcard;
use spiderpool_ipam::ip::IpVersion;

use super::field::{BadValue, FieldError};

/// Prefix of every annotation judged here.
pub const PREFIX: &str = "ipam.spidernet.io/";

/// Where the annotations were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A Pod, or a workload's pod template.
    Pod,
    Namespace,
}

/// What the handler knows about named objects: name -> IP version (`None` = does not exist).
#[derive(Debug, Clone, Default)]
pub struct Known {
    pub pools: BTreeMap<String, Option<IpVersion>>,
    pub subnets: BTreeMap<String, Option<IpVersion>>,
}

/// The `ipam.spidernet.io/*` annotations of a map, if any.
pub fn ipam_annotations(annotations: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    annotations
        .iter()
        .filter(|(key, _)| key.starts_with(PREFIX))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// `(pools, subnets)` named by the annotations, wildcard patterns left out; syntax errors are
/// ignored here ([`validate`] reports them).
pub fn referenced_names(
    annotations: &BTreeMap<String, String>,
    target: Target,
) -> (Vec<String>, Vec<String>) {
    let mut pools = Vec::new();
    let mut subnets = Vec::new();
    match target {
        Target::Pod => {
            if let Some(Ok(value)) = annotations
                .get(ANNO_POD_IPPOOL)
                .map(|value| parse_pod_ippool(value))
            {
                pools.extend(value.ipv4.into_iter().chain(value.ipv6));
            }
            if let Some(Ok(items)) = annotations
                .get(ANNO_POD_IPPOOLS)
                .map(|value| parse_pod_ippools(value))
            {
                for item in items {
                    pools.extend(item.ipv4.into_iter().chain(item.ipv6));
                }
            }
            if let Ok(Some(config)) = parse_subnet_annotations(annotations, 0) {
                for item in config.multiple.iter().chain(config.single.iter()) {
                    subnets.extend(item.ipv4.iter().chain(item.ipv6.iter()).cloned());
                }
            }
        }
        Target::Namespace => {
            if let Ok((v4, v6)) = parse_namespace_default_pools(annotations) {
                pools.extend(v4.into_iter().chain(v6));
            }
        }
    }
    let keep = |names: Vec<String>| {
        let mut names: Vec<String> = names
            .into_iter()
            .filter(|name| !name.is_empty() && !has_wildcard(name))
            .collect();
        names.sort();
        names.dedup();
        names
    };
    (keep(pools), keep(subnets))
}

fn family_word(version: IpVersion) -> &'static str {
    match version {
        IpVersion::V4 => "ipv4",
        IpVersion::V6 => "ipv6",
    }
}

/// Checks that each named object exists and is of `version`.
fn check_names(
    kind: &str,
    resource: &str,
    names: &[String],
    version: IpVersion,
    known: &BTreeMap<String, Option<IpVersion>>,
) -> Option<String> {
    for name in names.iter().filter(|name| !has_wildcard(name)) {
        if name.is_empty() {
            return Some(format!(
                "an empty {kind} name is listed under \"{}\"; remove it or name an existing {kind}",
                family_word(version)
            ));
        }
        match known.get(name) {
            Some(Some(actual)) if *actual == version => {}
            Some(Some(actual)) => {
                return Some(format!(
                    "{kind} {name:?} is an IPv{actual} {kind} but is listed under \"{}\"; move it to \"{}\"",
                    family_word(version),
                    family_word(*actual)
                ));
            }
            Some(None) | None => {
                return Some(format!(
                    "{kind} {name:?} does not exist; create it first or fix the name (kubectl get {resource})"
                ));
            }
        }
    }
    None
}

fn pools_error(known: &Known, ipv4: &[String], ipv6: &[String]) -> Option<String> {
    check_names(
        "SpiderIPPool",
        "spiderippools",
        ipv4,
        IpVersion::V4,
        &known.pools,
    )
    .or_else(|| {
        check_names(
            "SpiderIPPool",
            "spiderippools",
            ipv6,
            IpVersion::V6,
            &known.pools,
        )
    })
}

fn subnets_error(known: &Known, ipv4: &[String], ipv6: &[String]) -> Option<String> {
    check_names(
        "SpiderSubnet",
        "spidersubnets",
        ipv4,
        IpVersion::V4,
        &known.subnets,
    )
    .or_else(|| {
        check_names(
            "SpiderSubnet",
            "spidersubnets",
            ipv6,
            IpVersion::V6,
            &known.subnets,
        )
    })
}

/// Linux interface names: 1 to 15 bytes, no `/`, `:` or whitespace, not `.` or `..`.
fn interface_name_error(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 15 {
        return Some(format!(
            "interface name {name:?} must be 1 to 15 characters long, e.g. \"net1\""
        ));
    }
    if name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Some(format!(
            "interface name {name:?} may not be '.' or '..' nor contain '/', ':' or spaces, e.g. \"net1\""
        ));
    }
    None
}

/// Judges the annotations; one error per bad annotation. `path` is the annotations' field path
/// (`metadata.annotations`, `spec.template.metadata.annotations`, ...).
/// `subnet_annotations_refused` is true when the cluster has the SpiderSubnet feature on but
/// auto pools off, where the CNI plugin refuses the subnet annotations at ADD.
pub fn validate(
    annotations: &BTreeMap<String, String>,
    target: Target,
    known: &Known,
    path: &str,
    subnet_annotations_refused: bool,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut report = |key: &str, detail: String| {
        errors.push(FieldError::invalid(
            format!("{path}[{key}]"),
            BadValue::str(annotations.get(key).cloned().unwrap_or_default()),
            detail,
        ));
    };
    match target {
        Target::Namespace => match parse_namespace_default_pools(annotations) {
            Err(error) => {
                let key = [ANNO_NS_DEFAULT_IPV4_POOL, ANNO_NS_DEFAULT_IPV6_POOL]
                    .into_iter()
                    .find(|key| error.to_string().contains(key))
                    .unwrap_or(ANNO_NS_DEFAULT_IPV4_POOL);
                report(key, error.to_string());
            }
            Ok((v4, v6)) => {
                if let Some(detail) = pools_error(known, &v4, &[]) {
                    report(ANNO_NS_DEFAULT_IPV4_POOL, detail);
                }
                if let Some(detail) = pools_error(known, &[], &v6) {
                    report(ANNO_NS_DEFAULT_IPV6_POOL, detail);
                }
            }
        },
        Target::Pod => {
            if let Some(value) = annotations.get(ANNO_POD_IPPOOL) {
                match parse_pod_ippool(value) {
                    Err(error) => report(ANNO_POD_IPPOOL, error.to_string()),
                    Ok(pool) => {
                        if let Some(detail) = pools_error(known, &pool.ipv4, &pool.ipv6) {
                            report(ANNO_POD_IPPOOL, detail);
                        }
                    }
                }
            }
            if let Some(value) = annotations.get(ANNO_POD_IPPOOLS) {
                let checked = parse_pod_ippools(value).and_then(|mut items| {
                    // The NIC of a CNI call is unknown here: every named item is accepted as
                    // the current one; the rest of upstream's rules apply.
                    let current = items
                        .first()
                        .map(|item| item.interface.clone())
                        .unwrap_or_default();
                    validate_multiple_nics(&mut items, &current).map(|()| items)
                });
                match checked {
                    Err(error) => report(ANNO_POD_IPPOOLS, error.to_string()),
                    Ok(items) => {
                        // An item whose interface no CNI call can carry (`a/b`) never applies.
                        let detail = items.iter().find_map(|item| {
                            interface_name_error(&item.interface)
                                .or_else(|| pools_error(known, &item.ipv4, &item.ipv6))
                                .map(|detail| format!("interface {}: {detail}", item.interface))
                        });
                        if let Some(detail) = detail {
                            report(ANNO_POD_IPPOOLS, detail);
                        }
                    }
                }
            }
            if let Some(value) = annotations.get(ANNO_POD_ROUTES)
                && let Err(error) = parse_pod_routes(value)
            {
                report(ANNO_POD_ROUTES, error.to_string());
            }
            if let Some(value) = annotations.get(ANNO_DEFAULT_ROUTE_NIC)
                && let Some(detail) = interface_name_error(value)
            {
                report(
                    ANNO_DEFAULT_ROUTE_NIC,
                    format!("{detail} (the pod interface that should carry the default route)"),
                );
            }
            if let Some(value) = annotations.get(ANNO_POOL_IP_NUMBER)
                && let Err(error) = parse_pool_ip_number(value)
            {
                report(
                    ANNO_POOL_IP_NUMBER,
                    format!(
                        "{error}; write \"N\" for exactly N addresses or \"+N\" for replicas plus N"
                    ),
                );
            }
            if annotations.contains_key(ANNO_POOL_RECLAIM)
                && let Err(error) = parse_pool_reclaim(annotations)
            {
                report(ANNO_POOL_RECLAIM, error.to_string());
            }
            let subnet_key = if annotations.contains_key(ANNO_SUBNETS) {
                ANNO_SUBNETS
            } else {
                ANNO_SUBNET
            };
            // The number and reclaim annotations were judged above on their own.
            let mut subnet_only = annotations.clone();
            subnet_only.remove(ANNO_POOL_IP_NUMBER);
            subnet_only.remove(ANNO_POOL_RECLAIM);
            if subnet_annotations_refused && annotations.contains_key(subnet_key) {
                report(
                    subnet_key,
                    "it's invalid to use 'ipam.spidernet.io/subnets' or 'ipam.spidernet.io/subnet' annotation when Auto-Pool feature is disabled (enableAutoPoolForApplication is false in the cluster settings): name pools with 'ipam.spidernet.io/ippool(s)' instead".to_string(),
                );
                return errors;
            }
            match parse_subnet_annotations(&subnet_only, 0) {
                Err(error) => report(subnet_key, error.to_string()),
                Ok(None) => {}
                Ok(Some(config)) => {
                    let detail =
                        config
                            .multiple
                            .iter()
                            .chain(config.single.iter())
                            .find_map(|item| {
                                subnets_error(known, &item.ipv4, &item.ipv6)
                                    .map(|detail| format!("interface {}: {detail}", item.interface))
                            });
                    if let Some(detail) = detail {
                        report(subnet_key, detail);
                    }
                }
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    fn known() -> Known {
        Known {
            pools: BTreeMap::from([
                ("v4-pool".to_string(), Some(IpVersion::V4)),
                ("v6-pool".to_string(), Some(IpVersion::V6)),
                ("gone".to_string(), None),
            ]),
            subnets: BTreeMap::from([("subnet-v4".to_string(), Some(IpVersion::V4))]),
        }
    }

    fn messages(pairs: &[(&str, &str)], target: Target) -> Vec<String> {
        validate(&map(pairs), target, &known(), "metadata.annotations", false)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn valid_annotations_pass() {
        assert!(messages(
            &[
                (ANNO_POD_IPPOOL, r#"{"ipv4":["v4-pool"],"ipv6":["v6-pool"]}"#),
                (ANNO_POD_IPPOOLS, r#"[{"interface":"eth0","ipv4":["v4-pool"]},{"interface":"net1","ipv4":["v4-*"]}]"#),
                (ANNO_POD_ROUTES, r#"[{"dst":"10.0.0.0/16","gw":"192.168.1.1"}]"#),
                (ANNO_DEFAULT_ROUTE_NIC, "net1"),
                (ANNO_SUBNET, r#"{"ipv4":["subnet-v4"]}"#),
                (ANNO_POOL_IP_NUMBER, "+1"),
                (ANNO_POOL_RECLAIM, "false"),
                ("ipam.spidernet.io/unknown", "ignored"),
            ],
            Target::Pod
        )
        .is_empty());
        assert!(
            messages(
                &[(ANNO_NS_DEFAULT_IPV4_POOL, r#"["v4-pool"]"#)],
                Target::Namespace
            )
            .is_empty()
        );
    }

    #[test]
    fn syntax_errors_name_the_annotation_and_the_expected_shape() {
        let errors = messages(&[(ANNO_POD_IPPOOL, "{\"ipv4\": \"v4-pool\"}")], Target::Pod);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("metadata.annotations[ipam.spidernet.io/ippool]: Invalid value: \"{\\\"ipv4\\\": \\\"v4-pool\\\"}\": wrong input, invalid format of Pod annotation 'ipam.spidernet.io/ippool'"), "{}", errors[0]);
        assert!(errors[0].contains("expected JSON like"), "{}", errors[0]);
        let errors = messages(
            &[(ANNO_POD_ROUTES, r#"[{"dst":"10.0.0.0/16","gw":"fd00::1"}]"#)],
            Target::Pod,
        );
        assert!(errors[0].contains("invalid route format 'dst: 10.0.0.0/16, gw: fd00::1'"));
        let errors = messages(
            &[(
                ANNO_POD_IPPOOLS,
                r#"[{"interface":"eth0"},{"interface":"eth0"}]"#,
            )],
            Target::Pod,
        );
        assert!(errors[0].contains("duplicate interface eth0"));
        let errors = messages(&[(ANNO_POOL_IP_NUMBER, "++1")], Target::Pod);
        assert!(
            errors[0].contains("ipam.spidernet.io/ippool-ip-number")
                && errors[0].contains("\"+N\"")
        );
        let errors = messages(&[(ANNO_POOL_RECLAIM, "maybe")], Target::Pod);
        assert!(errors[0].contains("strconv.ParseBool"));
        let errors = messages(
            &[(ANNO_DEFAULT_ROUTE_NIC, "a-very-long-interface")],
            Target::Pod,
        );
        assert!(errors[0].contains("1 to 15 characters"));
        // Found by the bad-input corpus: an ippools item for an interface no CNI call can have.
        let errors = messages(
            &[(ANNO_POD_IPPOOLS, r#"[{"interface":"a/b","ipv4":["p"]}]"#)],
            Target::Pod,
        );
        assert!(
            errors[0].starts_with("metadata.annotations[ipam.spidernet.io/ippools]")
                && errors[0].contains("interface a/b: interface name \"a/b\" may not"),
            "{}",
            errors[0]
        );
        let errors = messages(&[(ANNO_SUBNETS, r#"[{"interface":"eth0"}]"#)], Target::Pod);
        assert!(errors[0].starts_with("metadata.annotations[ipam.spidernet.io/subnets]"));
        let errors = messages(
            &[(ANNO_NS_DEFAULT_IPV6_POOL, "not json")],
            Target::Namespace,
        );
        assert!(
            errors[0].starts_with("metadata.annotations[ipam.spidernet.io/default-ipv6-ippool]"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn named_objects_must_exist_with_the_right_family() {
        let errors = messages(&[(ANNO_POD_IPPOOL, r#"{"ipv4":["missing"]}"#)], Target::Pod);
        assert!(errors[0].ends_with("SpiderIPPool \"missing\" does not exist; create it first or fix the name (kubectl get spiderippools)"), "{}", errors[0]);
        let errors = messages(&[(ANNO_POD_IPPOOL, r#"{"ipv4":["v6-pool"]}"#)], Target::Pod);
        assert!(errors[0].ends_with("SpiderIPPool \"v6-pool\" is an IPv6 SpiderIPPool but is listed under \"ipv4\"; move it to \"ipv6\""));
        let errors = messages(
            &[(
                ANNO_POD_IPPOOLS,
                r#"[{"interface":"net1","ipv6":["gone"]}]"#,
            )],
            Target::Pod,
        );
        assert!(errors[0].contains("interface net1: SpiderIPPool \"gone\" does not exist"));
        let errors = messages(&[(ANNO_SUBNET, r#"{"ipv6":["subnet-v4"]}"#)], Target::Pod);
        assert!(
            errors[0]
                .contains("interface eth0: SpiderSubnet \"subnet-v4\" is an IPv4 SpiderSubnet")
        );
        let errors = messages(
            &[(ANNO_NS_DEFAULT_IPV4_POOL, r#"["v6-pool"]"#)],
            Target::Namespace,
        );
        assert!(
            errors[0].starts_with("metadata.annotations[ipam.spidernet.io/default-ipv4-ippool]")
        );
    }

    #[test]
    fn subnet_annotations_are_refused_when_auto_pools_are_off() {
        let annotations = map(&[(ANNO_SUBNET, r#"{"ipv4":["subnet-v4"]}"#)]);
        let errors = validate(
            &annotations,
            Target::Pod,
            &known(),
            "metadata.annotations",
            true,
        );
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0]
                .to_string()
                .contains("when Auto-Pool feature is disabled")
        );
    }

    #[test]
    fn referenced_names_skip_patterns_and_bad_syntax() {
        let (pools, subnets) = referenced_names(
            &map(&[
                (ANNO_POD_IPPOOL, r#"{"ipv4":["a","b*"]}"#),
                (ANNO_POD_IPPOOLS, "not json"),
                (ANNO_SUBNETS, r#"[{"interface":"eth0","ipv4":["s"]}]"#),
            ]),
            Target::Pod,
        );
        assert_eq!(
            (pools, subnets),
            (vec!["a".to_string()], vec!["s".to_string()])
        );
    }
}
