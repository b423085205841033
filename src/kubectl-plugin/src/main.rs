//! `kubectl-spiderpool`: a kubectl plugin (`kubectl spiderpool ...`) that answers what operators
//! ask about Spiderpool IPAM:
//!
//! - `explain pod NS/NAME`: per NIC, the candidate sources, every pool considered with why it was
//!   taken or skipped, and what an ADD would do now; for a pod with addresses, whether its
//!   records, pools and endpoint agree;
//! - `free POOL|SUBNET`: free, reserved, excluded and used addresses as compact ranges;
//! - `check`: the consistency check of pools, subnets, endpoints, pods and workloads (exit 1 on
//!   any violation).
//!
//! Exit status: 0 done (and, for `check`, consistent); 1 `check` found violations; 2 an error
//! (a missing object, an unreachable API server, a bad flag).
//!
//! Reads go through `spiderpool-store` and decisions through `spiderpool-ipam`, the crates the
//! CNI plugin uses. Nothing is written.

mod check;
mod explain;
mod free;
mod render;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use spiderpool_ipam::settings::ClusterSettings;
use spiderpool_store::{Store, StoreOptions};

#[derive(Debug, Parser)]
#[command(
    name = "kubectl-spiderpool",
    bin_name = "kubectl spiderpool",
    version,
    about = "Explain Spiderpool IP allocation, list free addresses, check consistency"
)]
struct Cli {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    context: Option<String>,
    /// Namespace of the pod (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    output: Format,
    /// Namespace Spiderpool is installed in (its `spiderpool-conf` ConfigMap holds the settings).
    #[arg(long, global = true, default_value = "kube-system")]
    spiderpool_namespace: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Why a pod got (or did not get) its addresses, and what an ADD would do now.
    Explain {
        /// `pod`.
        #[arg(value_parser = ["pod", "pods", "po"])]
        kind: String,
        /// `NAMESPACE/NAME`, or `NAME` with -n.
        pod: String,
        /// Also explain this NIC (eth0, the NICs of the pod's annotations and endpoint are
        /// always explained).
        #[arg(long = "interface")]
        interfaces: Vec<String>,
    },
    /// Free, reserved, excluded and used addresses of a SpiderIPPool or SpiderSubnet.
    Free {
        /// A pool or subnet name (`ippool/NAME` or `subnet/NAME` when both exist).
        name: String,
    },
    /// Consistency check: records, pods and endpoints agree, no address twice, counts are true,
    /// subnets and pools agree, auto pools match their workloads. Exits 1 on any violation;
    /// `-n` checks what touches one namespace.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: starting the runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// The client and the default namespace of the chosen kubeconfig and context.
async fn client(cli: &Cli) -> anyhow::Result<(kube::Client, String)> {
    let options = KubeConfigOptions {
        context: cli.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &cli.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?
        }
        None if cli.context.is_some() => kube::Config::from_kubeconfig(&options).await?,
        None => kube::Config::infer()
            .await
            .context("no kubeconfig found: pass --kubeconfig or set $KUBECONFIG")?,
    };
    let namespace = config.default_namespace.clone();
    Ok((kube::Client::try_from(config)?, namespace))
}

/// The cluster settings from `spiderpool-conf` (the chart defaults when it does not exist).
async fn settings(client: &kube::Client, namespace: &str) -> anyhow::Result<ClusterSettings> {
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let Some(configmap) = configmaps
        .get_opt("spiderpool-conf")
        .await
        .with_context(|| format!("reading ConfigMap {namespace}/spiderpool-conf"))?
    else {
        return Ok(ClusterSettings::default());
    };
    let text = configmap
        .data
        .and_then(|data| data.get("conf.yml").cloned())
        .unwrap_or_default();
    let mut settings = ClusterSettings::from_yaml(&text)
        .with_context(|| format!("ConfigMap {namespace}/spiderpool-conf: conf.yml"))?;
    settings.spiderpool_namespace = namespace.to_string();
    Ok(settings)
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let (client, default_namespace) = client(&cli).await?;
    let store = Store::new(client.clone(), StoreOptions::default());
    match &cli.command {
        Command::Explain {
            pod, interfaces, ..
        } => {
            let (namespace, name) = match pod.split_once('/') {
                Some((namespace, name)) => (namespace.to_string(), name.to_string()),
                None => (
                    cli.namespace.clone().unwrap_or(default_namespace),
                    pod.clone(),
                ),
            };
            let Some(inspection) = store.inspect_pod(&namespace, &name).await? else {
                bail!("pod {namespace}/{name} not found");
            };
            let settings = settings(&client, &cli.spiderpool_namespace).await?;
            let pools = store.list_pools().await?;
            let reserved = store.list_reserved().await?;
            let explanation = explain::explain(&explain::Inputs {
                context: &inspection.context,
                endpoint: inspection.endpoint.as_ref(),
                pools: &pools,
                reserved: &reserved,
                settings: &settings,
                extra_nics: interfaces,
            });
            render::print(cli.output, &explanation, render::explanation)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Free { name } => {
            let (kind, name) = match name.split_once('/') {
                Some((kind, name)) => (Some(kind), name),
                None => (None, name.as_str()),
            };
            let reserved = store.list_reserved().await?;
            let pool = match kind {
                None | Some("ippool" | "spiderippool" | "sp") => {
                    Api::<spiderpool_api::SpiderIPPool>::all(client.clone())
                        .get_opt(name)
                        .await
                        .with_context(|| format!("reading SpiderIPPool {name}"))?
                }
                _ => None,
            };
            let subnet = match kind {
                None | Some("subnet" | "spidersubnet" | "ss") => {
                    Api::<spiderpool_api::SpiderSubnet>::all(client.clone())
                        .get_opt(name)
                        .await
                        .with_context(|| format!("reading SpiderSubnet {name}"))?
                }
                _ => None,
            };
            let report = match (pool, subnet, kind) {
                (Some(_), Some(_), None) => bail!(
                    "both a SpiderIPPool and a SpiderSubnet are named {name}: say ippool/{name} or subnet/{name}"
                ),
                (Some(pool), _, _) => free::pool_report(&pool, &reserved)?,
                (None, Some(subnet), _) => free::subnet_report(&subnet, &reserved)?,
                (None, None, Some(kind))
                    if ![
                        "ippool",
                        "spiderippool",
                        "sp",
                        "subnet",
                        "spidersubnet",
                        "ss",
                    ]
                    .contains(&kind) =>
                {
                    bail!("unknown kind {kind:?}: use ippool/NAME or subnet/NAME")
                }
                (None, None, _) => bail!("no SpiderIPPool or SpiderSubnet named {name}"),
            };
            render::print(cli.output, &report, render::free)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check => {
            let settings = settings(&client, &cli.spiderpool_namespace).await?;
            let report = check::run(&client, settings, cli.namespace.clone()).await?;
            render::print(cli.output, &report, render::check)?;
            Ok(if report.violations.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}
