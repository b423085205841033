//! Routes: the `{dst, gw}` type shared by pools, subnets, endpoints and the pod annotation; the
//! pool route rules of the IPPool / Subnet webhooks (§1.1.2); and the per-NIC routes of an allocation
//! (§5.6): pool routes, then custom routes from `ipam.spidernet.io/routes` whose gateway lies in the
//! allocated address' subnet (see [`crate::result::attach_custom_routes`]), then the default route via
//! the pool gateway unless `cleanGateway`.

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::cidr::Cidr;
use crate::ip::{IpVersion, parse_ip};

/// A route as stored in `spec.routes`, `ipam.spidernet.io/routes` and SpiderEndpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    pub gw: String,
}

impl Route {
    pub fn new(dst: impl Into<String>, gw: impl Into<String>) -> Route {
        Route {
            dst: dst.into(),
            gw: gw.into(),
        }
    }
}

/// A route attached to one NIC (the agent response's `Route{ifName, dst, gw}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NicRoute {
    pub if_name: String,
    pub dst: String,
    pub gw: String,
}

impl NicRoute {
    pub fn new(if_name: &str, route: &Route) -> NicRoute {
        NicRoute {
            if_name: if_name.to_string(),
            dst: route.dst.clone(),
            gw: route.gw.clone(),
        }
    }

    pub fn route(&self) -> Route {
        Route::new(self.dst.clone(), self.gw.clone())
    }
}

/// The default route via `gateway` on `nic` (`genDefaultRoute`); `None` if the gateway is not an
/// address.
pub fn default_route(nic: &str, gateway: &str) -> Option<NicRoute> {
    let version = if parse_ip(IpVersion::V4, gateway).is_some() {
        IpVersion::V4
    } else if parse_ip(IpVersion::V6, gateway).is_some() {
        IpVersion::V6
    } else {
        return None;
    };
    Some(NicRoute {
        if_name: nic.to_string(),
        dst: version.default_route_dst().to_string(),
        gw: gateway.to_string(),
    })
}

/// `IsRouteWithoutIPVersion`: `dst` is a CIDR and `gw` an address of the same family.
pub fn is_route_of_any_family(route: &Route) -> bool {
    [IpVersion::V4, IpVersion::V6].into_iter().any(|version| {
        Cidr::parse(version, &route.dst).is_ok() && parse_ip(version, &route.gw).is_some()
    })
}

/// Which part of `spec.routes[i]` a rule failed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteField {
    Dst,
    Gw,
}

impl fmt::Display for RouteField {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            RouteField::Dst => "dst",
            RouteField::Gw => "gw",
        })
    }
}

/// A broken pool route rule, displayed as the Kubernetes field error upstream returns.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("spec.routes[{index}].{field}: Invalid value: {value:?}: {detail}")]
pub struct RouteRuleError {
    pub index: usize,
    pub field: RouteField,
    pub value: String,
    pub detail: String,
}

impl RouteRuleError {
    /// A stable category for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        "invalid_route"
    }
}

/// `validateIPPoolRoutes` (also the subnet's): the first broken rule, checked in upstream's order.
pub fn validate_pool_routes(
    version: IpVersion,
    subnet: &str,
    routes: &[Route],
) -> Result<(), RouteRuleError> {
    let mut destinations = HashSet::new();
    for (index, route) in routes.iter().enumerate() {
        let dst_error = |detail: String| RouteRuleError {
            index,
            field: RouteField::Dst,
            value: route.dst.clone(),
            detail,
        };
        if route.dst == version.default_route_dst() {
            return Err(dst_error(
                "please specify 'spec.gateway' to configure the default route".to_string(),
            ));
        }
        if !destinations.insert(route.dst.as_str()) {
            return Err(dst_error("duplicate route with the same dst".to_string()));
        }
        if let Err(error) = Cidr::parse(version, &route.dst) {
            return Err(dst_error(error.to_string()));
        }
        let gw_error = |detail: String| RouteRuleError {
            index,
            field: RouteField::Gw,
            value: route.gw.clone(),
            detail,
        };
        let subnet_cidr =
            Cidr::parse(version, subnet).map_err(|error| gw_error(error.to_string()))?;
        let gateway = parse_ip(version, &route.gw)
            .ok_or_else(|| gw_error(format!("invalid IP format in IPv{version} '{}'", route.gw)))?;
        if !subnet_cidr.contains_ip(&gateway) {
            return Err(gw_error(format!(
                "not pertains to the 'spec.subnet' {subnet} of IPPool"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // G32
    #[test]
    fn pool_route_rules_reject_default_duplicate_bad_dst_and_foreign_gateway() {
        let subnet = "172.18.40.0/24";
        let cases = [
            (
                vec![Route::new("0.0.0.0/0", "172.18.40.1")],
                "spec.routes[0].dst: Invalid value: \"0.0.0.0/0\": please specify 'spec.gateway' to configure the default route",
            ),
            (
                vec![
                    Route::new("192.168.40.0/24", "172.18.40.1"),
                    Route::new("192.168.40.0/24", "172.18.40.2"),
                ],
                "spec.routes[1].dst: Invalid value: \"192.168.40.0/24\": duplicate route with the same dst",
            ),
            (
                vec![Route::new("192.168.40.0/24", "172.18.41.1")],
                "spec.routes[0].gw: Invalid value: \"172.18.41.1\": not pertains to the 'spec.subnet' 172.18.40.0/24 of IPPool",
            ),
            (
                vec![Route::new("invalid", "172.18.40.1")],
                "spec.routes[0].dst: Invalid value: \"invalid\": invalid CIDR format in IPv4 'invalid'",
            ),
            (
                vec![Route::new("192.168.40.0/24", "invalid")],
                "spec.routes[0].gw: Invalid value: \"invalid\": invalid IP format in IPv4 'invalid'",
            ),
        ];
        for (routes, message) in cases {
            let error = validate_pool_routes(IpVersion::V4, subnet, &routes).unwrap_err();
            assert_eq!(error.to_string(), message);
        }
        let valid = [Route::new("192.168.40.0/24", "172.18.40.40")];
        assert!(validate_pool_routes(IpVersion::V4, subnet, &valid).is_ok());
    }

    #[test]
    fn default_route_follows_gateway_family() {
        assert_eq!(
            default_route("eth0", "172.18.40.1"),
            Some(NicRoute {
                if_name: "eth0".into(),
                dst: "0.0.0.0/0".into(),
                gw: "172.18.40.1".into()
            })
        );
        assert_eq!(
            default_route("eth0", "fd00::1").map(|route| route.dst),
            Some("::/0".into())
        );
        assert_eq!(default_route("eth0", ""), None);
    }

    #[test]
    fn route_family_check_matches_upstream() {
        assert!(is_route_of_any_family(&Route::new(
            "10.0.0.0/16",
            "192.168.1.1"
        )));
        assert!(is_route_of_any_family(&Route::new("fd00::/64", "fd00::1")));
        assert!(!is_route_of_any_family(&Route::new(
            "10.0.0.0/16",
            "fd00::1"
        )));
        assert!(!is_route_of_any_family(&Route::new(
            "10.0.0.1",
            "192.168.1.1"
        )));
    }
}
