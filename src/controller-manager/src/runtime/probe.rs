//! Startup probe: before any controller starts, check that every API the controller-manager
//! needs is served, and say exactly what to install when one is missing, instead of letting a
//! watch fail later with a bare 404.

use kube::Client;
use kube::discovery::{Discovery, verbs};

/// An API the controller-manager depends on.
#[derive(Debug, Clone, Copy)]
pub struct RequiredApi {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub how_to_fix: &'static str,
}

const SPIDERPOOL_CRDS: &str = "install the spiderpool CRDs: kubectl apply --server-side -f crds/";

pub const REQUIRED: &[RequiredApi] = &[
    RequiredApi {
        group: "spiderpool.spidernet.io",
        version: "v2beta1",
        plural: "spiderippools",
        how_to_fix: SPIDERPOOL_CRDS,
    },
    RequiredApi {
        group: "spiderpool.spidernet.io",
        version: "v2beta1",
        plural: "spidersubnets",
        how_to_fix: SPIDERPOOL_CRDS,
    },
    RequiredApi {
        group: "spiderpool.spidernet.io",
        version: "v2beta1",
        plural: "spiderendpoints",
        how_to_fix: SPIDERPOOL_CRDS,
    },
    RequiredApi {
        group: "spiderpool.spidernet.io",
        version: "v2beta1",
        plural: "spiderreservedips",
        how_to_fix: SPIDERPOOL_CRDS,
    },
    RequiredApi {
        group: "spiderpool.spidernet.io",
        version: "v2beta1",
        plural: "spidermultusconfigs",
        how_to_fix: SPIDERPOOL_CRDS,
    },
    RequiredApi {
        group: "spiderpool.spidernet.io",
        version: "v2beta1",
        plural: "spidercoordinators",
        how_to_fix: SPIDERPOOL_CRDS,
    },
    RequiredApi {
        group: "k8s.cni.cncf.io",
        version: "v1",
        plural: "network-attachment-definitions",
        how_to_fix: "install Multus, or its NetworkAttachmentDefinition CRD alone: kubectl apply -f crds/k8s.cni.cncf.io_networkattachmentdefinitions.yaml",
    },
    RequiredApi {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        how_to_fix: "the API server must serve coordination.k8s.io/v1 (Kubernetes 1.14 or newer)",
    },
];

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("api discovery failed: {0}")]
    Discovery(#[source] kube::Error),
    #[error("required APIs are missing:\n{}", .0.join("\n"))]
    Missing(Vec<String>),
}

/// Checks that every API in `required` is served with list and watch verbs.
pub async fn check(client: &Client, required: &[RequiredApi]) -> Result<(), ProbeError> {
    let mut groups: Vec<&str> = required.iter().map(|api| api.group).collect();
    groups.sort_unstable();
    groups.dedup();
    let discovery = Discovery::new(client.clone())
        .filter(&groups)
        .run()
        .await
        .map_err(ProbeError::Discovery)?;
    let missing: Vec<String> = required
        .iter()
        .filter(|api| {
            let served = discovery.groups().any(|group| {
                group.name() == api.group
                    && group.versioned_resources(api.version).iter().any(
                        |(resource, capabilities)| {
                            resource.plural == api.plural
                                && capabilities.supports_operation(verbs::LIST)
                                && capabilities.supports_operation(verbs::WATCH)
                        },
                    )
            });
            !served
        })
        .map(|api| {
            format!(
                "  - {}/{} {} is not served: {}",
                api.group, api.version, api.plural, api.how_to_fix
            )
        })
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ProbeError::Missing(missing))
    }
}
