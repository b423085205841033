//! The CNI environment as the container runtime sets it: `CNI_COMMAND`, `CNI_CONTAINERID`,
//! `CNI_NETNS`, `CNI_IFNAME`, `CNI_PATH` and `CNI_ARGS`.
//!
//! Input: `KEY=VALUE` lines (the last value of a repeated key wins). An environment that is
//! accepted must satisfy what the plugins rely on: a command, the variables that command needs,
//! and an interface name that passes the kernel's rules.

use std::collections::BTreeMap;

use spiderpool_cni::protocol::{
    CniArgs, Command, Environment, K8S_ARG_KEYS, validate_interface_name,
};

use crate::targets::annotations::lines_to_map;
use crate::text;

pub fn run(data: &[u8]) {
    let text = text(data);
    let variables: BTreeMap<String, String> = lines_to_map(&text);
    if let Some(args) = variables.get("CNI_ARGS") {
        check_args(args);
    }
    let lookup = |key: &str| variables.get(key).cloned();
    let Ok(environment) = Environment::from_lookup(lookup) else {
        return;
    };
    if matches!(
        environment.command,
        Command::Add | Command::Check | Command::Del
    ) {
        assert!(
            validate_interface_name(&environment.ifname).is_ok(),
            "accepted CNI_IFNAME {:?}",
            environment.ifname
        );
        assert!(!environment.container_id.is_empty());
    }
    if matches!(environment.command, Command::Add | Command::Check) {
        assert!(
            environment.netns.is_some(),
            "ADD without CNI_NETNS was accepted"
        );
    }
    let _ = environment.args.check_known(K8S_ARG_KEYS);
    let _ = environment.args.k8s();
    let _ = environment.command.as_str();
}

fn check_args(text: &str) {
    let Ok(args) = CniArgs::parse(text) else {
        return;
    };
    for (key, _) in args.pairs() {
        assert!(args.get(key).is_some());
    }
    let _ = (
        args.ignore_unknown(),
        args.check_known(K8S_ARG_KEYS),
        args.k8s(),
    );
}
