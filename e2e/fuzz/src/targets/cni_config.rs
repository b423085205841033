//! CNI stdin: the common network configuration (`cniVersion`, `prevResult` of any version) read
//! by the protocol layer, then each plugin's own configuration, validated with the same pure
//! steps the plugin runs before it touches the host or the API server.
//!
//! Input: a selector byte (which plugin reads stdin, and which command runs), then the stdin
//! bytes. The call goes through [`spiderpool_cni::protocol::execute`], the dispatcher every
//! plugin binary uses, with a stand-in plugin whose handlers stop before any I/O.

use spiderpool_cni::coordinator::config::{
    CoordinatorConfig, Fallback, Settings, fallback_from_coordinator, parse_mac_prefix,
};
use spiderpool_cni::ifacer::{IfacerConfig, parse_bond_options, plan};
use spiderpool_cni::ipam_plugin::parse_settings;
use spiderpool_cni::protocol::{
    CniArgs, CniError, CniResult, Command, Context, Environment, K8S_ARG_KEYS, Plugin, execute,
};
use spiderpool_ipam::config::{IpamConfig, check_cni_version};

use crate::{select, text};

/// Which plugin's configuration stdin is.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Spiderpool,
    Coordinator,
    Ifacer,
}

struct StandIn(Kind);

/// The fields the spiderpool plugin reads from its network configuration.
#[derive(serde::Deserialize)]
struct SpiderpoolNetwork {
    #[serde(rename = "cniVersion", default)]
    cni_version: String,
    #[serde(default)]
    ipam: Option<IpamConfig>,
}

impl StandIn {
    fn parse(&self, context: &Context) -> Result<(), CniError> {
        match self.0 {
            Kind::Spiderpool => {
                let network: SpiderpoolNetwork = context.config()?;
                check_cni_version(&network.cni_version)
                    .map_err(|error| CniError::incompatible_version(error.to_string()))?;
                let ipam = network.ipam.unwrap_or_default();
                ipam.log_level()
                    .map_err(|error| CniError::invalid_config(error.to_string()))?;
                let _ = (
                    ipam.kubeconfig_path(),
                    ipam.settings_path(),
                    ipam.log_file_path(),
                );
                let _ = (ipam.log_file_max_size(), ipam.log_file_max_age());
                let _ = (ipam.log_file_max_count(), ipam.ipam_unix_socket_path());
                context.env.args.check_known(K8S_ARG_KEYS)?;
            }
            Kind::Coordinator => {
                let config: CoordinatorConfig = context.config()?;
                if let Some(prefix) = &config.pod_mac_prefix {
                    let _ = parse_mac_prefix(prefix);
                }
                let _ = Settings::merge(&config, &Fallback::default())?;
                let spec = spiderpool_api::CoordinatorSpec::default();
                let fallback = fallback_from_coordinator(
                    &spec,
                    config.overlay_pod_cidr.clone().unwrap_or_default(),
                    config.service_cidr.clone().unwrap_or_default(),
                    config.pod_default_route_nic.as_deref(),
                );
                let _ = Settings::merge(&CoordinatorConfig::default(), &fallback);
            }
            Kind::Ifacer => {
                let config: IfacerConfig = context.config()?;
                if let Some(bond) = &config.bond {
                    let _ = parse_bond_options(&bond.options);
                }
                let desired = config.validate()?;
                plan(&desired, &[])?;
            }
        }
        Ok(())
    }
}

impl Plugin for StandIn {
    fn name(&self) -> &'static str {
        "fuzz"
    }

    fn add(&self, context: &Context) -> Result<CniResult, CniError> {
        self.parse(context)?;
        Ok(context.pass_through())
    }

    fn del(&self, context: &Context) -> Result<(), CniError> {
        self.parse(context)
    }

    fn check(&self, context: &Context) -> Result<(), CniError> {
        self.parse(context)
    }
}

pub fn run(data: &[u8]) {
    let Some((selector, stdin)) = select(data) else {
        return;
    };
    if selector % 8 == 7 {
        // The plugins' settings file (YAML), which the node installer also checks.
        let _ = parse_settings(&text(stdin));
        return;
    }
    let kind = match selector % 3 {
        0 => Kind::Spiderpool,
        1 => Kind::Coordinator,
        _ => Kind::Ifacer,
    };
    let command = match (selector / 3) % 4 {
        0 => Command::Add,
        1 => Command::Del,
        2 => Command::Check,
        _ => Command::Gc,
    };
    let environment = Environment {
        command,
        container_id: "fuzz".into(),
        netns: Some("/var/run/netns/fuzz".into()),
        ifname: "eth0".into(),
        args: CniArgs::parse("K8S_POD_NAMESPACE=default;K8S_POD_NAME=fuzz").unwrap_or_default(),
        path: Vec::new(),
    };
    let outcome = execute(&StandIn(kind), environment, stdin.to_vec());
    let printed = outcome.stdout_text();
    if !printed.is_empty() {
        assert!(
            serde_json::from_str::<serde_json::Value>(&printed).is_ok(),
            "the plugin printed something that is not JSON: {printed}"
        );
    }
}
