//! Defaults of a SpiderMultusConfig, exactly as the mutating webhook and the CRD schema apply
//! them: the controller-manager's webhook defaults with this, and its NAD renderer calls it
//! first, so an SMC created while the webhook was down (or written straight to etcd) still
//! renders to what an admitted one would.

use crate::{
    CniType, CoordinatorMode, CoordinatorSpec, LinkState, MultusCNIConfigSpec, SpiderpoolPools,
    VlanMode,
};

/// Fills every field the webhook or the CRD schema would default. Idempotent.
pub fn multus_config(spec: &mut MultusCNIConfigSpec) {
    let cni_type = *spec.cni_type.get_or_insert(CniType::Custom);
    spec.disable_ipam.get_or_insert(false);
    if cni_type == CniType::Custom {
        spec.enable_coordinator = Some(false);
        spec.coordinator = None;
        spec.custom_cni.get_or_insert_with(String::new);
    } else {
        spec.enable_coordinator.get_or_insert(true);
        default_coordinator(
            spec.coordinator
                .get_or_insert_with(CoordinatorSpec::default),
        );
    }
    spec.chain_cni_json_data.get_or_insert_with(Vec::new);

    if let Some(macvlan) = spec.macvlan.as_mut() {
        default_macvlan_like(macvlan);
    }
    if let Some(ipvlan) = spec.ipvlan.as_mut() {
        default_macvlan_like(ipvlan);
    }
    if let Some(vlan) = spec.vlan.as_mut() {
        let mode = *vlan.vlan_mode.get_or_insert(VlanMode::Manual);
        if mode == VlanMode::Manual {
            vlan.vlan_id.get_or_insert(0);
        }
        vlan.mtu.get_or_insert(0);
        if let Some(bond) = vlan.bond.as_mut() {
            bond.options.get_or_insert_with(String::new);
        }
        vlan.rdma_resource_name.get_or_insert_with(String::new);
        default_pools(&mut vlan.ippools, false);
    }
    if let Some(sriov) = spec.sriov.as_mut() {
        sriov.vlan_id.get_or_insert(0);
        sriov.mtu.get_or_insert(0);
        sriov.min_tx_rate_mbps.get_or_insert(0);
        sriov.max_tx_rate_mbps.get_or_insert(0);
        sriov.rdma_isolation.get_or_insert(false);
        default_pools(&mut sriov.ippools, true);
    }
    if let Some(ibsriov) = spec.ibsriov.as_mut() {
        ibsriov.pkey.get_or_insert_with(String::new);
        ibsriov.link_state.get_or_insert(LinkState::Enable);
        ibsriov.rdma_isolation.get_or_insert(true);
        ibsriov.enable_ib_kubernetes.get_or_insert(false);
        default_pools(&mut ibsriov.ippools, false);
    }
    if let Some(ipoib) = spec.ipoib.as_mut() {
        default_pools(&mut ipoib.ippools, false);
    }
    if let Some(ovs) = spec.ovs.as_mut() {
        ovs.vlan.get_or_insert(0);
        ovs.device_id.get_or_insert_with(String::new);
        default_pools(&mut ovs.ippools, false);
    }
}

fn default_macvlan_like(config: &mut crate::SpiderMacvlanCniConfig) {
    config.mtu.get_or_insert(0);
    config.vlan_id.get_or_insert(0);
    if let Some(bond) = config.bond.as_mut() {
        bond.options.get_or_insert_with(String::new);
    }
    config.rdma_resource_name.get_or_insert_with(String::new);
    default_pools(&mut config.ippools, false);
}

fn default_pools(pools: &mut Option<SpiderpoolPools>, sriov: bool) {
    let pools = pools.get_or_insert_with(SpiderpoolPools::default);
    pools.ipv4.get_or_insert_with(Vec::new);
    pools.ipv6.get_or_insert_with(Vec::new);
    if sriov {
        pools.match_master_subnet.get_or_insert(false);
    }
}

/// Coordinator defaults of an SMC. Upstream's webhook fills `tunePodRoutes: false` for a
/// coordinator section that omits it, but in a real cluster the CRD default (`true`) has always
/// been applied first; we use `true`, which is what every admitted object carries.
fn default_coordinator(coordinator: &mut CoordinatorSpec) {
    coordinator.mode.get_or_insert(CoordinatorMode::Auto);
    coordinator.hijack_cidr.get_or_insert_with(Vec::new);
    coordinator.policy_routes.get_or_insert_with(Vec::new);
    coordinator.pod_mac_prefix.get_or_insert_with(String::new);
    coordinator
        .pod_default_route_nic
        .get_or_insert_with(String::new);
    coordinator
        .veth_link_address
        .get_or_insert_with(String::new);
    coordinator.tune_pod_routes.get_or_insert(true);
    coordinator.pod_rp_filter.get_or_insert(0);
    coordinator.tx_queue_len.get_or_insert(0);
    coordinator.host_rule_table.get_or_insert(500);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_spec_becomes_custom_without_coordinator() {
        let mut spec = MultusCNIConfigSpec::default();
        multus_config(&mut spec);
        assert_eq!(spec.cni_type, Some(CniType::Custom));
        assert_eq!(spec.enable_coordinator, Some(false));
        assert_eq!(spec.coordinator, None);
        assert_eq!(spec.custom_cni.as_deref(), Some(""));
        assert_eq!(spec.chain_cni_json_data, Some(vec![]));
    }

    #[test]
    fn vlan_without_mode_defaults_to_manual_with_id_zero() {
        // G45
        let mut spec = MultusCNIConfigSpec {
            cni_type: Some(CniType::Vlan),
            vlan: Some(crate::SpiderVlanCniConfig {
                master: vec!["eth0".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        multus_config(&mut spec);
        let vlan = spec
            .vlan
            .as_ref()
            .map(|vlan| (vlan.vlan_mode, vlan.vlan_id));
        assert_eq!(vlan, Some((Some(VlanMode::Manual), Some(0))));
    }

    #[test]
    fn auto_vlan_mode_gets_no_vlan_id() {
        let mut spec = MultusCNIConfigSpec {
            cni_type: Some(CniType::Vlan),
            vlan: Some(crate::SpiderVlanCniConfig {
                master: vec!["eth0".into()],
                vlan_mode: Some(VlanMode::Auto),
                ..Default::default()
            }),
            ..Default::default()
        };
        multus_config(&mut spec);
        assert_eq!(spec.vlan.and_then(|vlan| vlan.vlan_id), None);
    }

    #[test]
    fn defaults_are_idempotent() {
        let mut once = MultusCNIConfigSpec {
            cni_type: Some(CniType::Macvlan),
            macvlan: Some(crate::SpiderMacvlanCniConfig {
                master: vec!["eth0".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        multus_config(&mut once);
        let mut twice = once.clone();
        multus_config(&mut twice);
        assert_eq!(once, twice);
    }
}
