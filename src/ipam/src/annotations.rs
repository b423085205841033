//! Typed parsers for the `ipam.spidernet.io/*` pod and namespace annotations (§2.1, §2.2).
//!
//! The CNI plugin reads them to choose pools; the validating webhook can run the same parsers to
//! reject a malformed annotation before the pod is scheduled. Errors keep upstream's text as a prefix
//! (e.g. `wrong input, invalid format of Pod annotation 'ipam.spidernet.io/ippools': ...`) and add what
//! was wrong and the expected shape. JSON values are decoded with Go's leniency (see
//! the internal `gojson` module). The Multus annotations live in [`crate::multus`].

use std::collections::BTreeMap;

use thiserror::Error;

use crate::gojson::{self, GoObject};
use crate::routes::{Route, is_route_of_any_family};

/// Explicit pools for the NIC of the current CNI call.
pub const ANNO_POD_IPPOOL: &str = "ipam.spidernet.io/ippool";
/// Explicit pools for several NICs at once.
pub const ANNO_POD_IPPOOLS: &str = "ipam.spidernet.io/ippools";
/// Extra routes.
pub const ANNO_POD_ROUTES: &str = "ipam.spidernet.io/routes";
/// Overrides the coordinator's default-route NIC.
pub const ANNO_DEFAULT_ROUTE_NIC: &str = "ipam.spidernet.io/default-route-nic";
/// SpiderSubnet mode, several NICs.
pub const ANNO_SUBNETS: &str = "ipam.spidernet.io/subnets";
/// SpiderSubnet mode, one NIC.
pub const ANNO_SUBNET: &str = "ipam.spidernet.io/subnet";
/// Size of the auto-created pool (`N` or `+N`).
pub const ANNO_POOL_IP_NUMBER: &str = "ipam.spidernet.io/ippool-ip-number";
/// Whether the auto-created pool is deleted with its application.
pub const ANNO_POOL_RECLAIM: &str = "ipam.spidernet.io/ippool-reclaim";
/// Namespace default IPv4 pools.
pub const ANNO_NS_DEFAULT_IPV4_POOL: &str = "ipam.spidernet.io/default-ipv4-ippool";
/// Namespace default IPv6 pools.
pub const ANNO_NS_DEFAULT_IPV6_POOL: &str = "ipam.spidernet.io/default-ipv6-ippool";

const IPPOOL_EXAMPLE: &str = r#"{"ipv4":["v4-pool"],"ipv6":["v6-pool"]}"#;
const IPPOOLS_EXAMPLE: &str =
    r#"[{"interface":"eth0","ipv4":["v4-pool"],"ipv6":["v6-pool"],"cleangateway":false}]"#;
const ROUTES_EXAMPLE: &str = r#"[{"dst":"10.0.0.0/16","gw":"192.168.1.1"}]"#;
const POOL_LIST_EXAMPLE: &str = r#"["pool-a","pool-b"]"#;
const SUBNETS_EXAMPLE: &str = r#"[{"interface":"eth0","ipv4":["subnet-v4"],"ipv6":["subnet-v6"]}]"#;
const SUBNET_EXAMPLE: &str = r#"{"interface":"eth0","ipv4":["subnet-v4"],"ipv6":["subnet-v6"]}"#;

/// Errors of annotation parsing and validation.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AnnotationError {
    /// `constant.ErrWrongInput` wrapping of a pod annotation (`ippool`, `ippools`, `routes`).
    #[error("wrong input, invalid format of Pod annotation '{key}': {detail}")]
    Pod { key: &'static str, detail: String },
    /// Namespace default pools that are not a JSON list of names.
    #[error("wrong input, invalid format of Namespace annotation '{key}': {detail}")]
    Namespace { key: &'static str, detail: String },
    /// `GetPoolIPNumber`.
    #[error("invalid input '{value}'{}", .detail.as_ref().map(|detail| format!(": {detail}")).unwrap_or_default())]
    PoolIpNumber {
        value: String,
        detail: Option<String>,
    },
    #[error(
        "subnet 'ipam.spidernet.io/ippool-ip-number' value must equal or greater than 0, got {0}"
    )]
    NegativePoolIpNumber(i64),
    /// `ShouldReclaimIPPool`.
    #[error(
        "failed to parse spider subnet 'ipam.spidernet.io/ippool-reclaim', error: strconv.ParseBool: parsing {value:?}: invalid syntax (use true or false)"
    )]
    Reclaim { value: String },
    /// `GetSubnetAnnoConfig` JSON errors (upstream's typo "anntation" kept).
    #[error("failed to parse anntation '{key}' value '{value}', error: {detail}")]
    SubnetJson {
        key: &'static str,
        value: String,
        detail: String,
    },
    /// `mutateAndValidateSubnetAnno` rules.
    #[error("{0}")]
    SubnetRule(String),
}

impl AnnotationError {
    /// A stable category for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            AnnotationError::Pod { .. } => "invalid_pod_annotation",
            AnnotationError::Namespace { .. } => "invalid_namespace_annotation",
            AnnotationError::PoolIpNumber { .. } | AnnotationError::NegativePoolIpNumber(_) => {
                "invalid_pool_ip_number"
            }
            AnnotationError::Reclaim { .. } => "invalid_pool_reclaim",
            AnnotationError::SubnetJson { .. } | AnnotationError::SubnetRule(_) => {
                "invalid_subnet_annotation"
            }
        }
    }
}

fn pod_error(key: &'static str, detail: impl Into<String>) -> AnnotationError {
    AnnotationError::Pod {
        key,
        detail: detail.into(),
    }
}

fn with_example(detail: String, example: &str) -> String {
    format!("{detail} (expected JSON like '{example}')")
}

/// `ipam.spidernet.io/default-route-nic`: the NIC that should carry the default route, if set.
pub fn default_route_nic(annotations: &BTreeMap<String, String>) -> Option<&str> {
    annotations
        .get(ANNO_DEFAULT_ROUTE_NIC)
        .map(String::as_str)
        .filter(|nic| !nic.is_empty())
}

/// `ipam.spidernet.io/ippool`: pools for the current NIC.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodIpPool {
    pub ipv4: Vec<String>,
    pub ipv6: Vec<String>,
}

/// Parses `ipam.spidernet.io/ippool`.
pub fn parse_pod_ippool(value: &str) -> Result<PodIpPool, AnnotationError> {
    let wrap = |detail: String| pod_error(ANNO_POD_IPPOOL, with_example(detail, IPPOOL_EXAMPLE));
    let document = gojson::parse(value).map_err(wrap)?;
    let Some(object) =
        GoObject::new(&document, "AnnoPodIPPoolValue", "types.AnnoPodIPPoolValue").map_err(wrap)?
    else {
        return Ok(PodIpPool::default());
    };
    Ok(PodIpPool {
        ipv4: object.strings("ipv4").map_err(wrap)?,
        ipv6: object.strings("ipv6").map_err(wrap)?,
    })
}

/// One item of `ipam.spidernet.io/ippools`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodIpPoolsItem {
    /// NIC name; empty in unnamed mode until [`validate_multiple_nics`] names it `"0"`, `"1"`, ...
    pub interface: String,
    pub ipv4: Vec<String>,
    pub ipv6: Vec<String>,
    pub clean_gateway: bool,
}

/// Parses `ipam.spidernet.io/ippools` (syntax only; see [`validate_multiple_nics`]).
pub fn parse_pod_ippools(value: &str) -> Result<Vec<PodIpPoolsItem>, AnnotationError> {
    let wrap = |detail: String| pod_error(ANNO_POD_IPPOOLS, with_example(detail, IPPOOLS_EXAMPLE));
    let document = gojson::parse(value).map_err(wrap)?;
    let mut items = Vec::new();
    for item in gojson::array(&document, "types.AnnoPodIPPoolsValue").map_err(wrap)? {
        let Some(object) =
            GoObject::new(item, "AnnoIPPoolItem", "types.AnnoIPPoolItem").map_err(wrap)?
        else {
            items.push(PodIpPoolsItem::default());
            continue;
        };
        items.push(PodIpPoolsItem {
            interface: object.string("interface").map_err(wrap)?,
            ipv4: object.strings("ipv4").map_err(wrap)?,
            ipv6: object.strings("ipv6").map_err(wrap)?,
            clean_gateway: object.boolean("cleangateway").map_err(wrap)?,
        });
    }
    Ok(items)
}

/// `validateAndMutateMultipleNICAnnotations`: at least one item; interfaces all named or all empty;
/// unnamed items named `"0"`, `"1"`, ... by index; no duplicate; a named list must include the NIC
/// of the current CNI call.
pub fn validate_multiple_nics(
    items: &mut [PodIpPoolsItem],
    current_nic: &str,
) -> Result<(), AnnotationError> {
    let wrap = |detail: String| pod_error(ANNO_POD_IPPOOLS, detail);
    let Some(first) = items.first() else {
        return Err(wrap(format!(
            "value requires at least one item, e.g. '{IPPOOLS_EXAMPLE}'"
        )));
    };
    let named = !first.interface.is_empty();
    let mut seen: Vec<String> = Vec::with_capacity(items.len());
    for (index, item) in items.iter_mut().enumerate() {
        if item.interface.is_empty() == named {
            return Err(wrap(format!(
                "NIC should be either all specified or all unspecified (item {index} differs from item 0)"
            )));
        }
        if item.interface.is_empty() {
            item.interface = index.to_string();
        }
        if seen.contains(&item.interface) {
            return Err(wrap(format!("duplicate interface {}", item.interface)));
        }
        seen.push(item.interface.clone());
    }
    if named && !seen.iter().any(|nic| nic == current_nic) {
        return Err(wrap(format!(
            "interface {current_nic} must be specified (the annotation names only {})",
            seen.join(", ")
        )));
    }
    Ok(())
}

/// `IsMultipleNicWithNoName`: the pod uses `ipam.spidernet.io/ippools` with unnamed items.
pub fn is_multiple_nic_without_names(annotations: &BTreeMap<String, String>) -> bool {
    annotations
        .get(ANNO_POD_IPPOOLS)
        .and_then(|value| parse_pod_ippools(value).ok())
        .is_some_and(|items| items.iter().any(|item| item.interface.is_empty()))
}

/// Parses `ipam.spidernet.io/routes`; every route must be a CIDR plus a gateway of the same family.
pub fn parse_pod_routes(value: &str) -> Result<Vec<Route>, AnnotationError> {
    let wrap = |detail: String| pod_error(ANNO_POD_ROUTES, with_example(detail, ROUTES_EXAMPLE));
    let document = gojson::parse(value).map_err(wrap)?;
    let mut routes = Vec::new();
    for item in gojson::array(&document, "types.AnnoPodRoutesValue").map_err(wrap)? {
        let route =
            match GoObject::new(item, "AnnoRouteItem", "types.AnnoRouteItem").map_err(wrap)? {
                Some(object) => Route::new(
                    object.string("dst").map_err(wrap)?,
                    object.string("gw").map_err(wrap)?,
                ),
                None => Route::default(),
            };
        if !is_route_of_any_family(&route) {
            return Err(pod_error(
                ANNO_POD_ROUTES,
                format!(
                    "invalid route format 'dst: {}, gw: {}' (dst must be a CIDR and gw an address of the same IP family)",
                    route.dst, route.gw
                ),
            ));
        }
        routes.push(route);
    }
    Ok(routes)
}

/// `GetNSDefaultPools`: the namespace's default IPv4 and IPv6 pool names (empty when absent).
pub fn parse_namespace_default_pools(
    annotations: &BTreeMap<String, String>,
) -> Result<(Vec<String>, Vec<String>), AnnotationError> {
    let parse = |key: &'static str| -> Result<Vec<String>, AnnotationError> {
        let Some(value) = annotations.get(key) else {
            return Ok(Vec::new());
        };
        let wrap = |detail: String| AnnotationError::Namespace {
            key,
            detail: with_example(detail, POOL_LIST_EXAMPLE),
        };
        let document = gojson::parse(value).map_err(wrap)?;
        gojson::string_list(&document, "types.AnnoNSDefautlV4PoolValue").map_err(wrap)
    };
    Ok((
        parse(ANNO_NS_DEFAULT_IPV4_POOL)?,
        parse(ANNO_NS_DEFAULT_IPV6_POOL)?,
    ))
}

/// `ipam.spidernet.io/ippool-ip-number`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolIpNumber {
    /// `"N"`: exactly N addresses.
    Fixed(i64),
    /// `"+N"`: replicas + N addresses.
    Flexible(i64),
}

impl PoolIpNumber {
    /// The annotation value written on auto-created pools (`"N"` or `"+N"`).
    pub fn annotation_value(&self) -> String {
        match self {
            PoolIpNumber::Fixed(number) => number.to_string(),
            PoolIpNumber::Flexible(number) => format!("+{number}"),
        }
    }

    /// The desired pool size for an application with `replicas` replicas.
    pub fn desired(&self, replicas: i64) -> i64 {
        match self {
            PoolIpNumber::Fixed(number) => *number,
            PoolIpNumber::Flexible(number) => replicas.saturating_add(*number),
        }
    }
}

/// Go's `strconv.Atoi` error text for `text`.
fn atoi(text: &str) -> Result<i64, String> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(format!("strconv.Atoi: parsing {text:?}: invalid syntax"));
    }
    text.parse::<i64>()
        .map_err(|_| format!("strconv.Atoi: parsing {text:?}: value out of range"))
}

/// `GetPoolIPNumber` plus the non-negative rule: `"N"` or `"+N"` with at most one `+`, N >= 0.
pub fn parse_pool_ip_number(value: &str) -> Result<PoolIpNumber, AnnotationError> {
    let plus_signs = value.matches('+').count();
    if plus_signs > 1 {
        return Err(AnnotationError::PoolIpNumber {
            value: value.to_string(),
            detail: Some("at most one '+' is allowed, write \"N\" or \"+N\"".to_string()),
        });
    }
    let (flexible, number_text) = match value.split_once('+') {
        Some((_, after)) => (true, after),
        None => (false, value),
    };
    let number = atoi(number_text).map_err(|detail| AnnotationError::PoolIpNumber {
        value: value.to_string(),
        detail: Some(detail),
    })?;
    if number < 0 {
        return Err(AnnotationError::NegativePoolIpNumber(number));
    }
    Ok(if flexible {
        PoolIpNumber::Flexible(number)
    } else {
        PoolIpNumber::Fixed(number)
    })
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// `ShouldReclaimIPPool`: `ipam.spidernet.io/ippool-reclaim`, default true.
pub fn parse_pool_reclaim(annotations: &BTreeMap<String, String>) -> Result<bool, AnnotationError> {
    match annotations.get(ANNO_POOL_RECLAIM) {
        None => Ok(true),
        Some(value) => parse_go_bool(value).ok_or_else(|| AnnotationError::Reclaim {
            value: value.clone(),
        }),
    }
}

/// One NIC of the subnet annotations (`AnnoSubnetItem`); after validation at most one subnet per
/// family remains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubnetItem {
    pub interface: String,
    pub ipv4: Vec<String>,
    pub ipv6: Vec<String>,
}

impl SubnetItem {
    /// The IPv4 subnet name, if any.
    pub fn ipv4_subnet(&self) -> Option<&str> {
        self.ipv4.first().map(String::as_str)
    }

    /// The IPv6 subnet name, if any.
    pub fn ipv6_subnet(&self) -> Option<&str> {
        self.ipv6.first().map(String::as_str)
    }
}

/// `PodSubnetAnnoConfig`: the SpiderSubnet configuration of a pod or pod template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetAnnotation {
    /// From `ipam.spidernet.io/subnets`; empty when the single form was used.
    pub multiple: Vec<SubnetItem>,
    /// From `ipam.spidernet.io/subnet` (interface defaulted to `eth0`).
    pub single: Option<SubnetItem>,
    pub ip_number: PoolIpNumber,
    pub reclaim: bool,
}

impl SubnetAnnotation {
    /// The item for `nic`: the matching `subnets` item, or the single item.
    pub fn item_for(&self, nic: &str) -> Option<&SubnetItem> {
        if !self.multiple.is_empty() {
            return self.multiple.iter().find(|item| item.interface == nic);
        }
        self.single.as_ref()
    }
}

/// `HasSubnetsAnnotation`.
pub fn has_subnet_annotation(annotations: &BTreeMap<String, String>) -> bool {
    annotations.contains_key(ANNO_SUBNETS) || annotations.contains_key(ANNO_SUBNET)
}

fn subnet_item(
    value: &serde_json::Value,
    wrap: &dyn Fn(String) -> AnnotationError,
) -> Result<SubnetItem, AnnotationError> {
    match GoObject::new(value, "AnnoSubnetItem", "types.AnnoSubnetItem").map_err(wrap)? {
        Some(object) => Ok(SubnetItem {
            interface: object.string("interface").map_err(wrap)?,
            ipv4: object.strings("ipv4").map_err(wrap)?,
            ipv6: object.strings("ipv6").map_err(wrap)?,
        }),
        None => Ok(SubnetItem::default()),
    }
}

/// `GetSubnetAnnoConfig`: `None` when neither subnet annotation is present ("default IPAM mode").
/// `default_flexible_ip_number` is the cluster setting used when `ippool-ip-number` is absent.
pub fn parse_subnet_annotations(
    annotations: &BTreeMap<String, String>,
    default_flexible_ip_number: i64,
) -> Result<Option<SubnetAnnotation>, AnnotationError> {
    let mut multiple = Vec::new();
    let mut single = None;
    if let Some(value) = annotations.get(ANNO_SUBNETS) {
        let wrap = |detail: String| AnnotationError::SubnetJson {
            key: ANNO_SUBNETS,
            value: value.clone(),
            detail: with_example(detail, SUBNETS_EXAMPLE),
        };
        let document = gojson::parse(value).map_err(wrap)?;
        for item in gojson::array(&document, "[]types.AnnoSubnetItem").map_err(wrap)? {
            multiple.push(subnet_item(item, &wrap)?);
        }
    } else if let Some(value) = annotations.get(ANNO_SUBNET) {
        let wrap = |detail: String| AnnotationError::SubnetJson {
            key: ANNO_SUBNET,
            value: value.clone(),
            detail: with_example(detail, SUBNET_EXAMPLE),
        };
        let document = gojson::parse(value).map_err(wrap)?;
        single = Some(subnet_item(&document, &wrap)?);
    } else {
        return Ok(None);
    }
    let ip_number = match annotations.get(ANNO_POOL_IP_NUMBER) {
        Some(value) => parse_pool_ip_number(value)?,
        None => PoolIpNumber::Flexible(default_flexible_ip_number),
    };
    let reclaim = parse_pool_reclaim(annotations)?;
    let mut config = SubnetAnnotation {
        multiple,
        single,
        ip_number,
        reclaim,
    };
    validate_subnet_annotation(&mut config)?;
    Ok(Some(config))
}

/// `mutateAndValidateSubnetAnno`: keeps only the first subnet per family, rejects empty names,
/// items without any subnet, subnets used by two NICs and duplicate NICs; defaults the single item's
/// interface to `eth0`.
fn validate_subnet_annotation(config: &mut SubnetAnnotation) -> Result<(), AnnotationError> {
    let rule = |text: String| AnnotationError::SubnetRule(text);
    if !config.multiple.is_empty() {
        let mut v4_subnets: Vec<String> = Vec::new();
        let mut v6_subnets: Vec<String> = Vec::new();
        let mut interfaces: Vec<String> = Vec::new();
        for (index, item) in config.multiple.iter_mut().enumerate() {
            interfaces.push(item.interface.clone());
            item.ipv4.truncate(1);
            item.ipv6.truncate(1);
            if let Some(subnet) = item.ipv4.first() {
                if subnet.is_empty() {
                    return Err(rule(format!(
                        "it's invalid to set an empty IPv4 subnet with mutilple interfaces (item {index})"
                    )));
                }
                v4_subnets.push(subnet.clone());
            }
            if let Some(subnet) = item.ipv6.first() {
                if subnet.is_empty() {
                    return Err(rule(format!(
                        "it's invalid to set an empty IPv6 subnet with mutilple interfaces (item {index})"
                    )));
                }
                v6_subnets.push(subnet.clone());
            }
            if item.ipv4.is_empty() && item.ipv6.is_empty() {
                return Err(rule(format!(
                    "it's invalid to set dual empty subnet with multiple interfaces (item {index} has neither ipv4 nor ipv6)"
                )));
            }
        }
        if let Some(duplicate) =
            first_duplicate(&v4_subnets).or_else(|| first_duplicate(&v6_subnets))
        {
            return Err(rule(format!(
                "it's invalid to use the same subnet for multiple interfaces: subnet {duplicate} is listed twice"
            )));
        }
        if let Some(duplicate) = first_duplicate(&interfaces) {
            return Err(rule(format!(
                "it's invalid to use the same Interface name for multiple interfaces: interface '{duplicate}' is listed twice"
            )));
        }
        return Ok(());
    }
    let Some(item) = config.single.as_mut() else {
        return Err(rule("no subnets specified".to_string()));
    };
    item.ipv4.truncate(1);
    item.ipv6.truncate(1);
    if item.ipv4.first().is_some_and(String::is_empty) {
        return Err(rule(
            "it's invalid to set an empty IPv4 subnet with single interface".to_string(),
        ));
    }
    if item.ipv6.first().is_some_and(String::is_empty) {
        return Err(rule(
            "it's invalid to set an empty IPv6 subnet with single interface".to_string(),
        ));
    }
    if item.ipv4.is_empty() && item.ipv6.is_empty() {
        return Err(rule(
            "it's invalid to set dual empty subnet with single interface (set ipv4 and/or ipv6)"
                .to_string(),
        ));
    }
    if item.interface.is_empty() {
        item.interface = crate::result::DEFAULT_INTERFACE.to_string();
    }
    Ok(())
}

fn first_duplicate(values: &[String]) -> Option<&str> {
    let mut sorted: Vec<&str> = values.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted
        .windows(2)
        .find(|pair| pair[0] == pair[1])
        .map(|pair| pair[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn ippool_annotation_parses_both_families() {
        let parsed = parse_pod_ippool(
            r#"{"ipv4":["demo-v4-ippool1"],"ipv6":["demo-v6-ippool1","demo-v6-ippool2"]}"#,
        )
        .unwrap();
        assert_eq!(parsed.ipv4, vec!["demo-v4-ippool1"]);
        assert_eq!(parsed.ipv6, vec!["demo-v6-ippool1", "demo-v6-ippool2"]);
        let error = parse_pod_ippool(r#"{"ipv4":"pool"}"#).unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"wrong input, invalid format of Pod annotation 'ipam.spidernet.io/ippool': json: cannot unmarshal string into Go struct field AnnoPodIPPoolValue.ipv4 of type []string (expected JSON like '{"ipv4":["v4-pool"],"ipv6":["v6-pool"]}')"#
        );
        assert_eq!(error.metric_label(), "invalid_pod_annotation");
        assert!(parse_pod_ippool("not json").is_err());
    }

    #[test]
    fn ippools_annotation_parses_items_with_clean_gateway() {
        let items = parse_pod_ippools(
            r#"[{"interface":"eth0","ipv4":["v4-a"],"ipv6":["v6-a"],"cleangateway":true},{"interface":"net1","ipv4":["v4-b"]}]"#,
        )
        .unwrap();
        assert_eq!(items.len(), 2);
        assert!(items[0].clean_gateway);
        assert_eq!(items[1].interface, "net1");
        assert!(!items[1].clean_gateway);
        assert!(parse_pod_ippools(r#"{"interface":"eth0"}"#)
            .unwrap_err()
            .to_string()
            .starts_with("wrong input, invalid format of Pod annotation 'ipam.spidernet.io/ippools': json: cannot unmarshal object"));
    }

    // G79
    #[test]
    fn multiple_nic_validation_names_unnamed_items_and_rejects_mixtures() {
        let item = |interface: &str| PodIpPoolsItem {
            interface: interface.into(),
            ..PodIpPoolsItem::default()
        };
        let mut mixed = vec![item(""), item("net1")];
        assert!(validate_multiple_nics(&mut mixed, "eth0")
            .unwrap_err()
            .to_string()
            .starts_with("wrong input, invalid format of Pod annotation 'ipam.spidernet.io/ippools': NIC should be either all specified or all unspecified"));
        let mut duplicate = vec![item("eth0"), item("eth0")];
        assert_eq!(
            validate_multiple_nics(&mut duplicate, "eth0")
                .unwrap_err()
                .to_string(),
            "wrong input, invalid format of Pod annotation 'ipam.spidernet.io/ippools': duplicate interface eth0"
        );
        let mut missing = vec![item("net1")];
        assert!(validate_multiple_nics(&mut missing, "eth0")
            .unwrap_err()
            .to_string()
            .starts_with("wrong input, invalid format of Pod annotation 'ipam.spidernet.io/ippools': interface eth0 must be specified"));
        let mut unnamed = vec![item(""), item("")];
        validate_multiple_nics(&mut unnamed, "eth0").unwrap();
        assert_eq!(unnamed[0].interface, "0");
        assert_eq!(unnamed[1].interface, "1");
        let mut empty: Vec<PodIpPoolsItem> = vec![];
        assert!(
            validate_multiple_nics(&mut empty, "eth0")
                .unwrap_err()
                .to_string()
                .contains("value requires at least one item")
        );
    }

    #[test]
    fn unnamed_mode_is_detected_from_the_annotation() {
        assert!(is_multiple_nic_without_names(&annotations(&[(
            ANNO_POD_IPPOOLS,
            r#"[{"ipv4":["a"]},{"ipv4":["b"]}]"#
        )])));
        assert!(!is_multiple_nic_without_names(&annotations(&[(
            ANNO_POD_IPPOOLS,
            r#"[{"interface":"eth0","ipv4":["a"]}]"#
        )])));
        assert!(!is_multiple_nic_without_names(&annotations(&[])));
    }

    #[test]
    fn routes_annotation_requires_cidr_and_same_family_gateway() {
        let routes = parse_pod_routes(r#"[{"dst":"10.0.0.0/16","gw":"192.168.1.1"}]"#).unwrap();
        assert_eq!(routes, vec![Route::new("10.0.0.0/16", "192.168.1.1")]);
        assert_eq!(
            parse_pod_routes(r#"[{"dst":"10.0.0.0/16","gw":"fd00::1"}]"#)
                .unwrap_err()
                .to_string(),
            "wrong input, invalid format of Pod annotation 'ipam.spidernet.io/routes': invalid route format 'dst: 10.0.0.0/16, gw: fd00::1' (dst must be a CIDR and gw an address of the same IP family)"
        );
    }

    // G82
    #[test]
    fn namespace_default_pools_parse_json_lists() {
        let (v4, v6) = parse_namespace_default_pools(&annotations(&[
            (
                ANNO_NS_DEFAULT_IPV4_POOL,
                r#"["ns-default-ipv4-ippool1", "ns-default-ipv4-ippool2"]"#,
            ),
            (ANNO_NS_DEFAULT_IPV6_POOL, r#"["ns-default-ipv6-ippool1"]"#),
        ]))
        .unwrap();
        assert_eq!(
            v4,
            vec!["ns-default-ipv4-ippool1", "ns-default-ipv4-ippool2"]
        );
        assert_eq!(v6, vec!["ns-default-ipv6-ippool1"]);
        let error = parse_namespace_default_pools(&annotations(&[(
            ANNO_NS_DEFAULT_IPV4_POOL,
            "invalid value",
        )]))
        .unwrap_err();
        assert!(error.to_string().starts_with(
            "wrong input, invalid format of Namespace annotation 'ipam.spidernet.io/default-ipv4-ippool': "
        ));
        assert_eq!(
            parse_namespace_default_pools(&annotations(&[])).unwrap(),
            (vec![], vec![])
        );
    }

    // G23
    #[test]
    fn pool_ip_number_is_fixed_or_flexible() {
        assert_eq!(parse_pool_ip_number("5"), Ok(PoolIpNumber::Fixed(5)));
        assert_eq!(parse_pool_ip_number("+5"), Ok(PoolIpNumber::Flexible(5)));
        assert!(parse_pool_ip_number("++5").is_err());
        assert_eq!(
            parse_pool_ip_number("a").unwrap_err().to_string(),
            "invalid input 'a': strconv.Atoi: parsing \"a\": invalid syntax"
        );
        assert!(matches!(
            parse_pool_ip_number("-1"),
            Err(AnnotationError::NegativePoolIpNumber(-1))
        ));
        assert_eq!(PoolIpNumber::Flexible(2).desired(3), 5);
        assert_eq!(PoolIpNumber::Fixed(2).annotation_value(), "2");
        assert_eq!(PoolIpNumber::Flexible(2).annotation_value(), "+2");
    }

    // G24
    #[test]
    fn subnet_annotation_combines_ip_number_and_reclaim() {
        let subnets =
            r#"[{"interface":"eth0","ipv4":["default-v4-subnet"],"ipv6":["default-v6-subnet"]}]"#;
        let with = |extra: &[(&str, &str)]| {
            let mut pairs = vec![(ANNO_SUBNETS, subnets)];
            pairs.extend_from_slice(extra);
            parse_subnet_annotations(&annotations(&pairs), 0)
        };
        assert!(with(&[(ANNO_POOL_IP_NUMBER, "a")]).is_err());
        assert!(with(&[(ANNO_POOL_IP_NUMBER, "-1")]).is_err());
        assert_eq!(
            with(&[(ANNO_POOL_IP_NUMBER, "5")])
                .unwrap()
                .unwrap()
                .ip_number,
            PoolIpNumber::Fixed(5)
        );
        assert_eq!(
            with(&[]).unwrap().unwrap().ip_number,
            PoolIpNumber::Flexible(0)
        );
        let flexible = with(&[(ANNO_POOL_IP_NUMBER, "+1")]).unwrap().unwrap();
        assert_eq!(flexible.ip_number, PoolIpNumber::Flexible(1));
        assert!(flexible.reclaim);
        assert!(with(&[(ANNO_POOL_RECLAIM, "wrong-input")]).is_err());
        assert!(
            !with(&[(ANNO_POOL_RECLAIM, "false")])
                .unwrap()
                .unwrap()
                .reclaim
        );
        assert_eq!(parse_subnet_annotations(&annotations(&[]), 1), Ok(None));
        assert_eq!(
            parse_subnet_annotations(&annotations(&[(ANNO_SUBNET, r#"{"ipv4":["s"]}"#)]), 1)
                .unwrap()
                .unwrap()
                .ip_number,
            PoolIpNumber::Flexible(1)
        );
    }

    // G25
    #[test]
    fn subnet_annotation_rejects_duplicates_and_empty_items() {
        let parse =
            |key: &str, value: &str| parse_subnet_annotations(&annotations(&[(key, value)]), 1);
        assert!(
            parse(
                ANNO_SUBNETS,
                r#"[{"interface":"eth0","ipv4":["s1"]},{"interface":"net1","ipv4":["s1"]}]"#
            )
            .is_err()
        );
        assert!(
            parse(
                ANNO_SUBNETS,
                r#"[{"interface":"eth0","ipv4":["s1"]},{"interface":"eth0","ipv4":["s2"]}]"#
            )
            .is_err()
        );
        assert!(parse(ANNO_SUBNETS, r#"[{"interface":"eth0"}]"#).is_err());
        assert!(parse(ANNO_SUBNET, r#"{"ipv4":[""]}"#).is_err());
        let single = parse(ANNO_SUBNET, r#"{"ipv4":["subnet-6","ignored"]}"#)
            .unwrap()
            .unwrap();
        let item = single.single.as_ref().unwrap();
        assert_eq!(item.interface, "eth0");
        assert_eq!(item.ipv4, vec!["subnet-6"]);
        assert_eq!(
            single.item_for("eth0").and_then(SubnetItem::ipv4_subnet),
            Some("subnet-6")
        );
        let json_error = parse(ANNO_SUBNETS, "{").unwrap_err();
        assert!(json_error.to_string().starts_with(
            "failed to parse anntation 'ipam.spidernet.io/subnets' value '{', error: "
        ));
    }

    #[test]
    fn default_route_nic_is_read_when_set() {
        assert_eq!(
            default_route_nic(&annotations(&[(ANNO_DEFAULT_ROUTE_NIC, "net1")])),
            Some("net1")
        );
        assert_eq!(
            default_route_nic(&annotations(&[(ANNO_DEFAULT_ROUTE_NIC, "")])),
            None
        );
    }

    #[test]
    fn reclaim_uses_go_parse_bool() {
        for (value, expected) in [
            ("1", true),
            ("t", true),
            ("True", true),
            ("0", false),
            ("F", false),
            ("FALSE", false),
        ] {
            assert_eq!(
                parse_pool_reclaim(&annotations(&[(ANNO_POOL_RECLAIM, value)])),
                Ok(expected)
            );
        }
        assert_eq!(parse_pool_reclaim(&annotations(&[])), Ok(true));
        assert_eq!(
            parse_pool_reclaim(&annotations(&[(ANNO_POOL_RECLAIM, "yes")]))
                .unwrap_err()
                .to_string(),
            "failed to parse spider subnet 'ipam.spidernet.io/ippool-reclaim', error: strconv.ParseBool: parsing \"yes\": invalid syntax (use true or false)"
        );
    }
}
