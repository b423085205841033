//! The plain view of a `SpiderIPPool` that selection and allocation work on.
//!
//! Callers (the CNI plugin, the controller-manager) convert their CRD objects into [`PoolView`]; this
//! crate never sees Kubernetes types. Only the fields that selection, allocation and results read are
//! here.

use serde::{Deserialize, Serialize};

use crate::ip::IpVersion;
use crate::labels::LabelSelector;
use crate::routes::Route;

/// Label whose presence marks an auto-created pool (`ippoolmanager.IsAutoCreatedIPPool`).
pub const LABEL_OWNER_APPLICATION_NAME: &str = "ipam.spidernet.io/owner-application-name";

/// Pod-affinity keys written into auto-created pools (`NewAutoPoolPodAffinity`).
pub const AUTO_POOL_AFFINITY_API_GROUP: &str = "ipam.spidernet.io/app-api-group";
pub const AUTO_POOL_AFFINITY_API_VERSION: &str = "ipam.spidernet.io/app-api-version";
pub const AUTO_POOL_AFFINITY_KIND: &str = "ipam.spidernet.io/app-kind";
pub const AUTO_POOL_AFFINITY_NAMESPACE: &str = "ipam.spidernet.io/app-namespace";
pub const AUTO_POOL_AFFINITY_NAME: &str = "ipam.spidernet.io/app-name";

/// What selection and allocation need to know about one `SpiderIPPool`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolView {
    pub name: String,
    /// `spec.ipVersion`; `None` when the webhook could not derive it.
    pub ip_version: Option<IpVersion>,
    pub subnet: String,
    pub ips: Vec<String>,
    pub exclude_ips: Vec<String>,
    pub gateway: Option<String>,
    pub routes: Vec<Route>,
    /// `spec.default`.
    pub default: bool,
    /// `spec.disable`.
    pub disable: bool,
    /// `metadata.deletionTimestamp` is set.
    pub terminating: bool,
    pub node_name: Vec<String>,
    pub node_affinity: Option<LabelSelector>,
    pub namespace_name: Vec<String>,
    pub namespace_affinity: Option<LabelSelector>,
    pub pod_affinity: Option<LabelSelector>,
    pub multus_name: Vec<String>,
    /// The pool carries the `ipam.spidernet.io/owner-application-name` label (auto-created pool).
    pub auto_created: bool,
}

impl PoolView {
    /// A pool with only a name, family and subnet set (handy for tests and callers building views).
    pub fn new(
        name: impl Into<String>,
        ip_version: IpVersion,
        subnet: impl Into<String>,
    ) -> PoolView {
        PoolView {
            name: name.into(),
            ip_version: Some(ip_version),
            subnet: subnet.into(),
            ..PoolView::default()
        }
    }

    /// The stable priority key of `ByPoolPriority`: pools with pod affinity first, then node name,
    /// node affinity, namespace name, namespace affinity, multus name. Smaller sorts first.
    pub fn priority_key(&self) -> [bool; 6] {
        [
            self.pod_affinity.is_none(),
            self.node_name.is_empty(),
            self.node_affinity.is_none(),
            self.namespace_name.is_empty(),
            self.namespace_affinity.is_none(),
            self.multus_name.is_empty(),
        ]
    }
}

/// Sorts pools by `ByPoolPriority`, keeping the given (user's) order among equally ranked pools
/// (deliberate difference #3: upstream's order of ties is random).
pub fn sort_by_priority(pools: &mut [&PoolView]) {
    pools.sort_by_key(|pool| pool.priority_key());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(name: &str) -> PoolView {
        PoolView::new(name, IpVersion::V4, "10.0.0.0/24")
    }

    fn names(pools: &[&PoolView]) -> Vec<String> {
        pools.iter().map(|pool| pool.name.clone()).collect()
    }

    // G71
    #[test]
    fn priority_orders_pod_node_namespace_multus_then_plain() {
        let pool1 = PoolView {
            pod_affinity: Some(LabelSelector::default()),
            ..pool("pool1")
        };
        let pool2 = PoolView {
            node_name: vec!["node".into()],
            node_affinity: Some(LabelSelector::default()),
            ..pool("pool2")
        };
        let pool3 = PoolView {
            namespace_name: vec!["ns".into()],
            namespace_affinity: Some(LabelSelector::default()),
            ..pool("pool3")
        };
        let pool4 = PoolView {
            multus_name: vec!["nad".into()],
            ..pool("pool4")
        };
        let pool5 = pool("pool5");
        let mut pools = vec![&pool5, &pool4, &pool3, &pool2, &pool1];
        sort_by_priority(&mut pools);
        assert_eq!(
            names(&pools),
            vec!["pool1", "pool2", "pool3", "pool4", "pool5"]
        );
    }

    // G72
    #[test]
    fn priority_compares_criteria_lexicographically() {
        let pool1 = PoolView {
            pod_affinity: Some(LabelSelector::default()),
            ..pool("pool1")
        };
        let pool2 = PoolView {
            node_name: vec!["node".into()],
            ..pool("pool2")
        };
        let pool3 = PoolView {
            node_name: vec!["node".into()],
            namespace_name: vec!["ns".into()],
            ..pool("pool3")
        };
        let pool4 = PoolView {
            namespace_name: vec!["ns".into()],
            multus_name: vec!["nad".into()],
            ..pool("pool4")
        };
        let mut pools = vec![&pool4, &pool2, &pool1, &pool3];
        sort_by_priority(&mut pools);
        assert_eq!(names(&pools), vec!["pool1", "pool3", "pool2", "pool4"]);
    }

    // G73
    #[test]
    fn node_name_outranks_namespace_and_multus_among_pod_affinity_pools() {
        let pool1 = PoolView {
            pod_affinity: Some(LabelSelector::default()),
            namespace_name: vec!["ns".into()],
            multus_name: vec!["nad".into()],
            ..pool("pool1")
        };
        let pool2 = PoolView {
            pod_affinity: Some(LabelSelector::default()),
            node_name: vec!["node".into()],
            ..pool("pool2")
        };
        let mut pools = vec![&pool1, &pool2];
        sort_by_priority(&mut pools);
        assert_eq!(names(&pools), vec!["pool2", "pool1"]);
    }

    #[test]
    fn equal_priority_pools_keep_the_users_order() {
        let a = pool("zeta");
        let b = pool("alpha");
        let c = PoolView {
            node_name: vec!["n".into()],
            ..pool("mid")
        };
        let d = pool("beta");
        let mut pools = vec![&a, &b, &c, &d];
        sort_by_priority(&mut pools);
        assert_eq!(names(&pools), vec!["mid", "zeta", "alpha", "beta"]);
    }
}
