//! Every error code the `spiderpool` IPAM plugin returns, in one place, and the mapping from the
//! store's errors to CNI errors with a message and a hint a user can act on.
//!
//! Codes below 100 are the CNI specification's; 11 ("try again later") marks failures a retry
//! of the same call may fix (API server unreachable or slow, the call's deadline, a pool that kept
//! changing under concurrent writers). Codes 110 and up are this plugin's.

use spiderpool_ipam::ledger::AllocateError;
use spiderpool_ipam::selection::SelectionError;
use spiderpool_store::StoreError;

use crate::protocol::{CniError, ErrorCode};

/// The API server is unreachable or slow, the deadline passed, or conflicts never stopped.
pub const TRY_AGAIN_LATER: ErrorCode = ErrorCode::TRY_AGAIN_LATER;
/// Anything else that went wrong inside the plugin (kubeconfig, unexpected objects).
pub const PLUGIN_FAILURE: ErrorCode = ErrorCode::PLUGIN_FAILURE;
/// A pod or namespace `ipam.spidernet.io/*` annotation does not parse or is inconsistent.
pub const INVALID_ANNOTATION: ErrorCode = ErrorCode(110);
/// No pool is configured for the pod, or a named pool does not exist (or is named twice).
pub const NO_POOL: ErrorCode = ErrorCode(111);
/// Every candidate pool of a NIC and family was filtered out (affinity, disabled, family...).
pub const POOLS_FILTERED_OUT: ErrorCode = ErrorCode(112);
/// Every candidate pool of a NIC and family is out of free addresses.
pub const IP_EXHAUSTED: ErrorCode = ErrorCode(113);
/// The pod does not exist or is finished/terminating: nothing is allocated to it.
pub const POD_UNUSABLE: ErrorCode = ErrorCode(114);
/// A pool's ledger or spec is broken, or an address is recorded for another pod.
pub const POOL_DATA_BROKEN: ErrorCode = ErrorCode(115);
/// The API server refused a request (RBAC, validation).
pub const API_REJECTED: ErrorCode = ErrorCode(116);
/// SpiderSubnet mode: the auto-created pool is not there (yet) or is ambiguous.
pub const AUTO_POOL_UNAVAILABLE: ErrorCode = ErrorCode(117);
/// The allocation has no address for `CNI_IFNAME`.
pub const NO_ADDRESS_FOR_INTERFACE: ErrorCode = ErrorCode(118);

/// The code of a store error.
pub fn code_of(error: &StoreError) -> ErrorCode {
    match error {
        StoreError::Unavailable { .. }
        | StoreError::Deadline { .. }
        | StoreError::ConflictsExhausted { .. }
        | StoreError::PoolGone { .. }
        | StoreError::Lock { .. } => TRY_AGAIN_LATER,
        StoreError::Kubeconfig { .. } | StoreError::Invalid(_) => PLUGIN_FAILURE,
        StoreError::Api { .. } => API_REJECTED,
        StoreError::PodNotFound { .. } | StoreError::DeadPod { .. } => POD_UNUSABLE,
        StoreError::Selection(error) => selection_code(error),
        StoreError::Annotation(_) => INVALID_ANNOTATION,
        StoreError::Allocate(
            AllocateError::Exhausted { .. } | AllocateError::ThresholdExceeded { .. },
        ) => IP_EXHAUSTED,
        StoreError::Allocate(_) | StoreError::Ledger(_) => POOL_DATA_BROKEN,
        StoreError::Result(spiderpool_ipam::result::ResultError::NoAllocationForInterface(_)) => {
            NO_ADDRESS_FOR_INTERFACE
        }
        StoreError::Result(_) => POOL_DATA_BROKEN,
        StoreError::AutoPool(_) => AUTO_POOL_UNAVAILABLE,
    }
}

fn selection_code(error: &SelectionError) -> ErrorCode {
    match error {
        SelectionError::SubnetAnnotationWithoutAutoPool
        | SelectionError::SubnetAnnotation(_)
        | SelectionError::Annotation(_)
        | SelectionError::BadWildcard { .. }
        | SelectionError::EmptyPoolName { .. }
        | SelectionError::ThirdPartyNeedsFixedIpNumber { .. }
        | SelectionError::OrphanPodInSubnetMode => INVALID_ANNOTATION,
        SelectionError::NoClusterDefaultPool
        | SelectionError::NoWildcardMatch { .. }
        | SelectionError::DuplicatePool { .. }
        | SelectionError::PoolNotFound { .. } => NO_POOL,
        SelectionError::AllFiltered { .. } => POOLS_FILTERED_OUT,
        SelectionError::CandidateExhausted { .. } => IP_EXHAUSTED,
    }
}

/// What the user can do about it (the error's `details`).
fn hint(code: ErrorCode) -> &'static str {
    match code {
        TRY_AGAIN_LATER => {
            "transient: the runtime retries the call; if it persists check that the API server is reachable from the node with the plugin's kubeconfig"
        }
        INVALID_ANNOTATION => {
            "fix the pod's (or its namespace's) ipam.spidernet.io annotation and re-create the pod"
        }
        NO_POOL => {
            "name existing SpiderIPPools with the ipam.spidernet.io/ippool(s) pod annotation, the namespace's default-ipv4/ipv6-ippool annotations, the network's default_ipv4/ipv6_ippool, or mark a pool spec.default: true"
        }
        POOLS_FILTERED_OUT => {
            "each reason names the pool and the rule (nodeName/nodeAffinity, namespaceName/namespaceAffinity, podAffinity, multusName, disable, ipVersion) that excluded it"
        }
        IP_EXHAUSTED => {
            "add addresses to the pools' spec.ips, or free addresses by deleting pods; kubectl get sp shows the usage"
        }
        POD_UNUSABLE => "the pod is gone or finished; the runtime will not need an address",
        POOL_DATA_BROKEN => "inspect the pool's status.allocatedIPs and spec",
        API_REJECTED => {
            "check the RBAC of the plugin's kubeconfig against config/rbac/cni.yaml (pods, namespaces, nodes, replicasets, jobs, statefulsets, spiderippools(/status), spidersubnets(/status), spiderreservedips, spiderendpoints)"
        }
        AUTO_POOL_UNAVAILABLE => {
            "SpiderSubnet mode: the controller-manager creates the workload's auto pool; check its logs and the SpiderSubnet's free addresses"
        }
        _ => "",
    }
}

/// The CNI error for a failed allocation (upstream's message prefix kept).
pub fn allocation_error(error: &StoreError) -> CniError {
    let code = code_of(error);
    CniError::new(code, format!("spiderpool IP allocation error: {error}")).with_details(hint(code))
}

/// The CNI error for a failed release.
pub fn release_error(error: &StoreError) -> CniError {
    let code = code_of(error);
    CniError::new(code, format!("spiderpool IP release error: {error}")).with_details(hint(code))
}

#[cfg(test)]
mod tests {
    use super::*;
    use spiderpool_ipam::IpVersion;

    #[test]
    fn transient_failures_ask_the_runtime_to_retry() {
        let error = StoreError::Unavailable {
            what: "get pod default/p".into(),
            detail: "connection refused".into(),
        };
        let cni = allocation_error(&error);
        assert_eq!(cni.code, ErrorCode::TRY_AGAIN_LATER);
        assert_eq!(
            cni.msg,
            "spiderpool IP allocation error: API server unavailable: failed to get pod default/p: connection refused"
        );
        assert_eq!(
            code_of(&StoreError::ConflictsExhausted {
                pool: "p".into(),
                attempts: 15,
                releasing: true,
            }),
            TRY_AGAIN_LATER
        );
    }

    #[test]
    fn a_release_that_kept_conflicting_says_it_was_releasing() {
        let allocating = StoreError::ConflictsExhausted {
            pool: "p".into(),
            attempts: 15,
            releasing: false,
        };
        assert_eq!(
            allocation_error(&allocating).msg,
            "spiderpool IP allocation error: exhaust all retries (15 times), failed to allocate IP from IPPool p: the pool kept changing under concurrent writers"
        );
        assert_eq!(
            release_error(&allocating.in_release()).msg,
            "spiderpool IP release error: exhaust all retries (15 times), failed to release IP to IPPool p: the pool kept changing under concurrent writers"
        );
    }

    #[test]
    fn selection_failures_have_distinct_codes() {
        let filtered = StoreError::Selection(SelectionError::AllFiltered {
            version: IpVersion::V4,
            pools: vec!["a".into()],
            nic: "eth0".into(),
            reasons: vec!["unmatched Node name of IPPool a".into()],
        });
        assert_eq!(code_of(&filtered), POOLS_FILTERED_OUT);
        let exhausted = StoreError::Selection(SelectionError::CandidateExhausted {
            version: IpVersion::V4,
            nic: "eth0".into(),
            pools: vec!["a".into()],
            errors: vec!["all IP addresses used out".into()],
        });
        let cni = allocation_error(&exhausted);
        assert_eq!(cni.code, IP_EXHAUSTED);
        assert!(cni.details.contains("spec.ips"));
        assert_eq!(
            code_of(&StoreError::Selection(SelectionError::NoClusterDefaultPool)),
            NO_POOL
        );
    }
}
