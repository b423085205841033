//! The per-NIC allocation result and the three shapes built from it: the IPAM response (IP configs
//! plus routes, §5.5/§5.6), the SpiderEndpoint `status.current.ips` entries (§5.7), and the data of
//! the CNI result for one interface (§6.1). JSON encoding of the CNI result belongs to the CNI crate;
//! this module provides the values in upstream's order.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::cidr::Cidr;
use crate::ip::IpVersion;
use crate::ledger::IpAndUid;
use crate::pool::PoolView;
use crate::routes::{NicRoute, Route, default_route};

/// Name of the first NIC of a pod (`constant.ClusterDefaultInterfaceName`).
pub const DEFAULT_INTERFACE: &str = "eth0";

/// Errors building results.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ResultError {
    #[error("IPPool {pool} has no valid spec.ipVersion")]
    MissingIpVersion { pool: String },
    #[error("invalid 'spec.subnet' {subnet} of IPPool {pool}: {detail}")]
    InvalidSubnet {
        pool: String,
        subnet: String,
        detail: String,
    },
    #[error("no Interface {0} IP allocation found")]
    NoAllocationForInterface(String),
    #[error("invalid route destination '{dst}' for interface {if_name}: {detail}")]
    InvalidRouteDst {
        if_name: String,
        dst: String,
        detail: String,
    },
    #[error("invalid IPv{version} address '{address}' for interface {if_name}")]
    InvalidAddress {
        if_name: String,
        version: IpVersion,
        address: String,
    },
}

impl ResultError {
    /// A stable category for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ResultError::MissingIpVersion { .. } | ResultError::InvalidSubnet { .. } => {
                "invalid_pool"
            }
            ResultError::NoAllocationForInterface(_) => "no_allocation_for_interface",
            ResultError::InvalidRouteDst { .. } | ResultError::InvalidAddress { .. } => {
                "invalid_result"
            }
        }
    }
}

/// One allocated address (the agent's `IpConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// `<ip>/<pool prefix length>`.
    pub address: String,
    pub nic: String,
    pub version: IpVersion,
    pub ip_pool: String,
    /// The pool gateway, empty when the pool has none.
    pub gateway: String,
    pub vlan: i64,
    pub mac: Option<String>,
    pub enable_gateway_detection: bool,
    pub enable_ip_conflict_detection: bool,
}

/// One address allocated to one NIC with its routes (`types.AllocationResult`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationResult {
    pub ip: IpConfig,
    /// Pool routes, then matched custom routes (see [`attach_custom_routes`]).
    pub routes: Vec<NicRoute>,
    pub clean_gateway: bool,
}

impl AllocationResult {
    /// `GenIPConfigResult` plus the pool routes tagged with the NIC.
    pub fn new(
        pool: &PoolView,
        address: IpAddr,
        nic: &str,
        clean_gateway: bool,
    ) -> Result<AllocationResult, ResultError> {
        let version = pool
            .ip_version
            .ok_or_else(|| ResultError::MissingIpVersion {
                pool: pool.name.clone(),
            })?;
        let subnet =
            Cidr::parse(version, &pool.subnet).map_err(|error| ResultError::InvalidSubnet {
                pool: pool.name.clone(),
                subnet: pool.subnet.clone(),
                detail: error.to_string(),
            })?;
        Ok(AllocationResult {
            ip: IpConfig {
                address: subnet.address_with_prefix(&address),
                nic: nic.to_string(),
                version,
                ip_pool: pool.name.clone(),
                gateway: pool.gateway.clone().unwrap_or_default(),
                vlan: 0,
                mac: None,
                enable_gateway_detection: false,
                enable_ip_conflict_detection: false,
            },
            routes: pool
                .routes
                .iter()
                .map(|route| NicRoute::new(nic, route))
                .collect(),
            clean_gateway,
        })
    }

    /// The subnet of the allocated address (for grouping custom routes).
    pub fn subnet(&self) -> Option<Cidr> {
        Cidr::parse(self.ip.version, &self.ip.address).ok()
    }
}

/// `groupCustomRoutes` over results: each custom route goes to the first result (in order) whose
/// subnet contains its gateway. Returns the routes no result took (upstream logs and drops them).
pub fn attach_custom_routes(results: &mut [AllocationResult], custom: &[Route]) -> Vec<Route> {
    let mut remaining: Vec<Route> = custom.to_vec();
    for result in results.iter_mut() {
        let Some(subnet) = result.subnet() else {
            continue;
        };
        let nic = result.ip.nic.clone();
        remaining.retain(|route| {
            let inside = crate::ip::parse_any_ip(&route.gw)
                .is_some_and(|gateway| subnet.contains_ip(&gateway));
            if inside {
                result.routes.push(NicRoute::new(&nic, route));
            }
            !inside
        });
    }
    remaining
}

/// `ConvertResultsToIPConfigsAndAllRoutes`: IP configs in result order; per result its routes, then
/// the default route via the gateway unless `clean_gateway`.
pub fn response_from_results(results: &[AllocationResult]) -> (Vec<IpConfig>, Vec<NicRoute>) {
    let mut ips = Vec::with_capacity(results.len());
    let mut routes = Vec::new();
    for result in results {
        ips.push(result.ip.clone());
        routes.extend(result.routes.iter().cloned());
        if result.clean_gateway || result.ip.gateway.is_empty() {
            continue;
        }
        routes.extend(default_route(&result.ip.nic, &result.ip.gateway));
    }
    (ips, routes)
}

/// Unnamed multi-NIC mode (`ippools` items without `interface`): results sorted by their numeric
/// temporary NIC name, and NIC `"0"` (with its routes) renamed to `eth0`.
pub fn rename_unnamed_nics(results: &mut [AllocationResult]) {
    results.sort_by(|left, right| {
        match (left.ip.nic.parse::<i64>(), right.ip.nic.parse::<i64>()) {
            (Ok(left), Ok(right)) => left.cmp(&right),
            _ => std::cmp::Ordering::Equal,
        }
    });
    for result in results.iter_mut() {
        if result.ip.nic == "0" {
            result.ip.nic = DEFAULT_INTERFACE.to_string();
            for route in &mut result.routes {
                route.if_name = DEFAULT_INTERFACE.to_string();
            }
        }
    }
}

/// One SpiderEndpoint `status.current.ips` entry (`IPAllocationDetail`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpAllocationDetail {
    pub interface: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4_pool: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4_gateway: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_pool: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_gateway: Option<String>,
    pub vlan: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clean_gateway: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// `ConvertResultsToIPDetails`: results grouped per NIC (first-seen order). In unnamed multi-NIC
/// mode the entries are sorted by numeric NIC name, the first stored as `eth0`, the rest with an
/// empty interface (claimed by later CNI ADDs).
pub fn endpoint_details(
    results: &[AllocationResult],
    multiple_nic_without_names: bool,
) -> Vec<IpAllocationDetail> {
    let mut details: Vec<IpAllocationDetail> = Vec::new();
    for result in results {
        let gateway = (!result.ip.gateway.is_empty()).then(|| result.ip.gateway.clone());
        let routes: Vec<Route> = result.routes.iter().map(NicRoute::route).collect();
        let mac = result.ip.mac.clone().filter(|mac| !mac.is_empty());
        if let Some(detail) = details
            .iter_mut()
            .find(|detail| detail.interface == result.ip.nic)
        {
            set_family(detail, result, gateway);
            detail.routes.extend(routes);
            if detail.mac.is_none() {
                detail.mac = mac;
            }
            continue;
        }
        let mut detail = IpAllocationDetail {
            interface: result.ip.nic.clone(),
            vlan: result.ip.vlan,
            clean_gateway: gateway.as_ref().map(|_| result.clean_gateway),
            routes,
            mac,
            ..IpAllocationDetail::default()
        };
        set_family(&mut detail, result, gateway);
        details.push(detail);
    }
    if multiple_nic_without_names {
        details.sort_by(|left, right| {
            match (
                left.interface.parse::<i64>(),
                right.interface.parse::<i64>(),
            ) {
                (Ok(left), Ok(right)) => left.cmp(&right),
                _ => std::cmp::Ordering::Equal,
            }
        });
        for (index, detail) in details.iter_mut().enumerate() {
            detail.interface = if index == 0 {
                DEFAULT_INTERFACE.to_string()
            } else {
                String::new()
            };
        }
    }
    details
}

fn set_family(detail: &mut IpAllocationDetail, result: &AllocationResult, gateway: Option<String>) {
    match result.ip.version {
        IpVersion::V4 => {
            detail.ipv4 = Some(result.ip.address.clone());
            detail.ipv4_pool = Some(result.ip.ip_pool.clone());
            detail.ipv4_gateway = gateway;
        }
        IpVersion::V6 => {
            detail.ipv6 = Some(result.ip.address.clone());
            detail.ipv6_pool = Some(result.ip.ip_pool.clone());
            detail.ipv6_gateway = gateway;
        }
    }
}

/// `RetrieveIPAllocation`'s entry test: the stored allocation serves `nic` when it has an entry for
/// that NIC or an unnamed one (unnamed multi-NIC mode).
pub fn has_allocation_for(details: &[IpAllocationDetail], nic: &str) -> bool {
    details
        .iter()
        .any(|detail| detail.interface == nic || detail.interface.is_empty())
}

/// `UpdateAllocationNICName`: unless `nic` already has an entry, the first unnamed entry (entries are
/// in NIC order) is given its name. Returns whether anything changed (the endpoint must be written).
pub fn claim_unnamed_nic(details: &mut [IpAllocationDetail], nic: &str) -> bool {
    for detail in details.iter_mut() {
        if detail.interface.is_empty() {
            detail.interface = nic.to_string();
            return true;
        }
        if detail.interface == nic {
            return false;
        }
    }
    false
}

/// `GroupIPAllocationDetails`: pool name -> the bare addresses (with `uid`) to release or rewrite.
pub fn addresses_by_pool(
    details: &[IpAllocationDetail],
    uid: &str,
) -> BTreeMap<String, Vec<IpAndUid>> {
    let mut by_pool: BTreeMap<String, Vec<IpAndUid>> = BTreeMap::new();
    for detail in details {
        let families = [
            (&detail.ipv4, &detail.ipv4_pool),
            (&detail.ipv6, &detail.ipv6_pool),
        ];
        for (address, pool) in families {
            let Some(address) = address else { continue };
            let bare = address.split('/').next().unwrap_or_default();
            by_pool
                .entry(pool.clone().unwrap_or_default())
                .or_default()
                .push(IpAndUid::new(bare, uid));
        }
    }
    by_pool
}

/// `ConvertIPDetailsToIPConfigsAndAllRoutes`: the response rebuilt from stored endpoint entries; per
/// NIC the IPv4 default route, the IPv6 default route (unless `cleanGateway`), then stored routes.
pub fn response_from_details(
    details: &[IpAllocationDetail],
    enable_ip_conflict_detection: bool,
    enable_gateway_detection: bool,
) -> (Vec<IpConfig>, Vec<NicRoute>) {
    let mut ips = Vec::new();
    let mut routes = Vec::new();
    for detail in details {
        let nic = detail.interface.as_str();
        let families = [
            (
                IpVersion::V4,
                &detail.ipv4,
                &detail.ipv4_pool,
                &detail.ipv4_gateway,
            ),
            (
                IpVersion::V6,
                &detail.ipv6,
                &detail.ipv6_pool,
                &detail.ipv6_gateway,
            ),
        ];
        for (version, address, pool, gateway) in families {
            let Some(address) = address else { continue };
            let gateway = gateway.clone().unwrap_or_default();
            if !gateway.is_empty() && detail.clean_gateway != Some(true) {
                routes.extend(default_route(nic, &gateway));
            }
            ips.push(IpConfig {
                address: address.clone(),
                nic: nic.to_string(),
                version,
                ip_pool: pool.clone().unwrap_or_default(),
                gateway,
                vlan: detail.vlan,
                mac: None,
                enable_gateway_detection,
                enable_ip_conflict_detection,
            });
        }
        routes.extend(detail.routes.iter().map(|route| NicRoute::new(nic, route)));
    }
    (ips, routes)
}

/// One `ips[]` entry of the CNI result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniIp {
    pub version: IpVersion,
    /// `<ip>/<prefix length>` as allocated (host bits kept).
    pub address: String,
    /// `None` when the pool has no gateway.
    pub gateway: Option<IpAddr>,
}

/// One `routes[]` entry of the CNI result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniRoute {
    /// The destination normalised to its network address (Go's `net.ParseCIDR`).
    pub dst: String,
    /// `None` when the gateway is not an address.
    pub gw: Option<IpAddr>,
}

/// The values of the CNI result for one interface (`assembleResult`). `dns` is always empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniResultData {
    pub ips: Vec<CniIp>,
    pub routes: Vec<CniRoute>,
}

/// `assembleResult`: routes and IPs of `if_name`, in response order.
pub fn cni_result_for(
    if_name: &str,
    ips: &[IpConfig],
    routes: &[NicRoute],
) -> Result<CniResultData, ResultError> {
    let mut result_routes = Vec::new();
    for route in routes.iter().filter(|route| route.if_name == if_name) {
        let dst = Cidr::parse_any(&route.dst).map_err(|error| ResultError::InvalidRouteDst {
            if_name: if_name.to_string(),
            dst: route.dst.clone(),
            detail: error.to_string(),
        })?;
        result_routes.push(CniRoute {
            dst: dst.canonical(),
            gw: crate::ip::parse_any_ip(&route.gw),
        });
    }
    let mut result_ips = Vec::new();
    for ip in ips.iter().filter(|ip| ip.nic == if_name) {
        let cidr =
            Cidr::parse(ip.version, &ip.address).map_err(|_| ResultError::InvalidAddress {
                if_name: if_name.to_string(),
                version: ip.version,
                address: ip.address.clone(),
            })?;
        result_ips.push(CniIp {
            version: ip.version,
            address: cidr.to_string(),
            gateway: crate::ip::parse_any_ip(&ip.gateway),
        });
    }
    if result_ips.is_empty() {
        return Err(ResultError::NoAllocationForInterface(if_name.to_string()));
    }
    Ok(CniResultData {
        ips: result_ips,
        routes: result_routes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool_v4() -> PoolView {
        PoolView {
            gateway: Some("172.18.40.1".into()),
            ips: vec!["172.18.40.40".into()],
            routes: vec![Route::new("10.0.0.0/8", "172.18.40.1")],
            ..PoolView::new("pool-v4", IpVersion::V4, "172.18.40.0/24")
        }
    }

    // G75 (result part; the ledger part is in ledger.rs)
    #[test]
    fn allocation_result_carries_prefix_gateway_pool_nic_and_version() {
        let result =
            AllocationResult::new(&pool_v4(), "172.18.40.40".parse().unwrap(), "eth0", false)
                .unwrap();
        assert_eq!(result.ip.address, "172.18.40.40/24");
        assert_eq!(result.ip.gateway, "172.18.40.1");
        assert_eq!(result.ip.ip_pool, "pool-v4");
        assert_eq!(result.ip.nic, "eth0");
        assert_eq!(result.ip.version, IpVersion::V4);
    }

    #[test]
    fn response_routes_are_pool_then_custom_then_default() {
        let mut result =
            AllocationResult::new(&pool_v4(), "172.18.40.40".parse().unwrap(), "eth0", false)
                .unwrap();
        let unmatched = attach_custom_routes(
            std::slice::from_mut(&mut result),
            &[Route::new("192.168.0.0/16", "172.18.40.2")],
        );
        assert!(unmatched.is_empty());
        let (ips, routes) = response_from_results(std::slice::from_ref(&result));
        assert_eq!(ips.len(), 1);
        let destinations: Vec<&str> = routes.iter().map(|route| route.dst.as_str()).collect();
        assert_eq!(
            destinations,
            vec!["10.0.0.0/8", "192.168.0.0/16", "0.0.0.0/0"]
        );

        result.clean_gateway = true;
        let (_, routes) = response_from_results(std::slice::from_ref(&result));
        assert_eq!(routes.len(), 2);
    }

    // §6.1 example
    #[test]
    fn cni_result_keeps_gateway_even_with_clean_gateway() {
        let result =
            AllocationResult::new(&pool_v4(), "172.18.40.40".parse().unwrap(), "eth0", true)
                .unwrap();
        let (ips, routes) = response_from_results(std::slice::from_ref(&result));
        let data = cni_result_for("eth0", &ips, &routes).unwrap();
        assert_eq!(data.ips[0].address, "172.18.40.40/24");
        assert_eq!(data.ips[0].gateway, Some("172.18.40.1".parse().unwrap()));
        assert_eq!(data.routes.len(), 1);
    }

    // G77
    #[test]
    fn cni_result_selects_the_interface_and_normalises_route_destinations() {
        let ips = vec![
            IpConfig {
                address: "1.2.3.30/24".into(),
                nic: "eth0".into(),
                version: IpVersion::V4,
                ip_pool: "v4".into(),
                gateway: "1.2.3.1".into(),
                vlan: 0,
                mac: None,
                enable_gateway_detection: false,
                enable_ip_conflict_detection: false,
            },
            IpConfig {
                address: "fc00:f853:ccd:e793:f::fc/64".into(),
                nic: "eth0".into(),
                version: IpVersion::V6,
                ip_pool: "v6".into(),
                gateway: "fc00:f853:ccd:e793:f::2".into(),
                vlan: 0,
                mac: None,
                enable_gateway_detection: false,
                enable_ip_conflict_detection: false,
            },
        ];
        let routes = vec![
            NicRoute {
                if_name: "eth0".into(),
                dst: "15.5.6.8/24".into(),
                gw: "1.2.3.2".into(),
            },
            NicRoute {
                if_name: "net1".into(),
                dst: "16.0.0.0/8".into(),
                gw: "1.2.3.2".into(),
            },
        ];
        let data = cni_result_for("eth0", &ips, &routes).unwrap();
        assert_eq!(
            data.ips,
            vec![
                CniIp {
                    version: IpVersion::V4,
                    address: "1.2.3.30/24".into(),
                    gateway: Some("1.2.3.1".parse().unwrap())
                },
                CniIp {
                    version: IpVersion::V6,
                    address: "fc00:f853:ccd:e793:f::fc/64".into(),
                    gateway: Some("fc00:f853:ccd:e793:f::2".parse().unwrap())
                },
            ]
        );
        assert_eq!(
            data.routes,
            vec![CniRoute {
                dst: "15.5.6.0/24".into(),
                gw: Some("1.2.3.2".parse().unwrap())
            }]
        );
        let error = cni_result_for("net2", &ips, &routes).unwrap_err();
        assert_eq!(error.to_string(), "no Interface net2 IP allocation found");
    }

    #[test]
    fn custom_routes_attach_to_results_in_order() {
        let v6 = PoolView::new("pool-v6", IpVersion::V6, "fd00::/64");
        let mut results = vec![
            AllocationResult::new(&pool_v4(), "172.18.40.40".parse().unwrap(), "eth0", false)
                .unwrap(),
            AllocationResult::new(&v6, "fd00::40".parse().unwrap(), "eth0", false).unwrap(),
        ];
        let unmatched = attach_custom_routes(
            &mut results,
            &[
                Route::new("fd01::/64", "fd00::1"),
                Route::new("192.168.0.0/16", "172.18.40.2"),
                Route::new("10.9.0.0/16", "10.9.0.1"),
            ],
        );
        assert_eq!(unmatched, vec![Route::new("10.9.0.0/16", "10.9.0.1")]);
        assert_eq!(results[0].routes.len(), 2);
        assert_eq!(
            results[1].routes,
            vec![NicRoute::new("eth0", &Route::new("fd01::/64", "fd00::1"))]
        );
    }

    #[test]
    fn stored_allocation_is_found_and_unnamed_entries_are_claimed_in_order() {
        let mut details = vec![
            IpAllocationDetail {
                interface: "eth0".into(),
                ipv4: Some("10.0.0.5/24".into()),
                ipv4_pool: Some("a".into()),
                ..IpAllocationDetail::default()
            },
            IpAllocationDetail {
                interface: String::new(),
                ipv6: Some("fd00::5/64".into()),
                ipv6_pool: Some("b".into()),
                ..IpAllocationDetail::default()
            },
            IpAllocationDetail::default(),
        ];
        assert!(has_allocation_for(&details, "net1"));
        assert!(claim_unnamed_nic(&mut details, "net1"));
        assert_eq!(details[1].interface, "net1");
        assert!(!claim_unnamed_nic(&mut details, "eth0"));
        assert!(!claim_unnamed_nic(&mut details, "net1"));
        let pairs = addresses_by_pool(&details, "uid");
        assert_eq!(pairs["a"], vec![IpAndUid::new("10.0.0.5", "uid")]);
        assert_eq!(pairs["b"], vec![IpAndUid::new("fd00::5", "uid")]);
        assert!(!has_allocation_for(&details[..2], "net2"));
    }

    #[test]
    fn unnamed_multi_nic_results_are_sorted_and_first_renamed_eth0() {
        let pool = pool_v4();
        let mut results = vec![
            AllocationResult::new(&pool, "172.18.40.41".parse().unwrap(), "1", false).unwrap(),
            AllocationResult::new(&pool, "172.18.40.40".parse().unwrap(), "0", false).unwrap(),
        ];
        rename_unnamed_nics(&mut results);
        assert_eq!(results[0].ip.nic, "eth0");
        assert_eq!(results[0].routes[0].if_name, "eth0");
        assert_eq!(results[1].ip.nic, "1");

        let details = endpoint_details(&results, true);
        assert_eq!(details[0].interface, "eth0");
        assert_eq!(details[1].interface, "");
    }

    #[test]
    fn endpoint_details_group_families_per_nic_and_round_trip_to_the_response() {
        let v4 = pool_v4();
        let v6 = PoolView {
            gateway: Some("fd00::1".into()),
            ..PoolView::new("pool-v6", IpVersion::V6, "fd00::/64")
        };
        let results = vec![
            AllocationResult::new(&v4, "172.18.40.40".parse().unwrap(), "eth0", false).unwrap(),
            AllocationResult::new(&v6, "fd00::40".parse().unwrap(), "eth0", false).unwrap(),
        ];
        let details = endpoint_details(&results, false);
        assert_eq!(details.len(), 1);
        let detail = &details[0];
        assert_eq!(detail.ipv4.as_deref(), Some("172.18.40.40/24"));
        assert_eq!(detail.ipv6.as_deref(), Some("fd00::40/64"));
        assert_eq!(detail.ipv6_gateway.as_deref(), Some("fd00::1"));
        assert_eq!(detail.clean_gateway, Some(false));
        assert_eq!(
            serde_json::to_string(detail).unwrap(),
            r#"{"interface":"eth0","ipv4":"172.18.40.40/24","ipv4Pool":"pool-v4","ipv4Gateway":"172.18.40.1","ipv6":"fd00::40/64","ipv6Pool":"pool-v6","ipv6Gateway":"fd00::1","vlan":0,"cleanGateway":false,"routes":[{"dst":"10.0.0.0/8","gw":"172.18.40.1"}]}"#
        );
        let (ips, routes) = response_from_details(&details, false, false);
        assert_eq!(ips.len(), 2);
        let destinations: Vec<&str> = routes.iter().map(|route| route.dst.as_str()).collect();
        assert_eq!(destinations, vec!["0.0.0.0/0", "::/0", "10.0.0.0/8"]);
    }
}
