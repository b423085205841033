//! Fuzz targets for everything spiderpool-rs parses from users, the API server or the container
//! runtime, and the seed corpora they start from.
//!
//! Each target takes raw bytes and drives one family of parsers through the same public
//! functions production code calls; it returns nothing and must never panic or hang. The engine
//! is libFuzzer (`libfuzzer-sys`) built on the stable toolchain with LLVM's sanitizer-coverage
//! passes (`run.sh`); the same targets run without instrumentation in this crate's tests, which
//! replay every seed and every saved crash (`regressions/`), so `cargo test` keeps them green.
//!
//! Input shapes, chosen so that byte mutations stay meaningful:
//! - string parsers take `selector byte + text` (the selector picks the parser);
//! - structured targets (selection, SpiderMultusConfig, admission reviews) take JSON, seeded
//!   with the repository's samples and test vectors ([`seeds`]).

#![forbid(unsafe_code)]

pub mod seeds;
pub mod targets;

use std::borrow::Cow;

/// The fuzz targets, one per family of parsers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `ipam.spidernet.io/*` pod, namespace and workload annotations, Multus network selections,
    /// and the webhook's annotation rules.
    Annotations,
    /// IP ranges, CIDRs, IP sets and pool address lists.
    Ranges,
    /// `status.allocatedIPs` / `status.controlledIPPools` and the allocate / release steps.
    Ledger,
    /// The CNI environment (`CNI_COMMAND`, `CNI_ARGS`, ...).
    CniEnv,
    /// CNI stdin: the common network configuration with `prevResult`, the spiderpool IPAM
    /// section, the coordinator and ifacer configurations, the plugins' settings file.
    CniConfig,
    /// Candidate selection for a pod (annotations, pools, IPAM config, cluster settings).
    Selection,
    /// AdmissionReviews through the webhook server's entry point, for every hook.
    Webhook,
    /// SpiderMultusConfig defaulting, validation and NAD rendering.
    MultusConfig,
}

impl Target {
    pub const ALL: [Target; 8] = [
        Target::Annotations,
        Target::Ranges,
        Target::Ledger,
        Target::CniEnv,
        Target::CniConfig,
        Target::Selection,
        Target::Webhook,
        Target::MultusConfig,
    ];

    /// The name used on the command line, in `SPIDERPOOL_FUZZ_TARGET` and for directories.
    pub fn name(self) -> &'static str {
        match self {
            Target::Annotations => "annotations",
            Target::Ranges => "ranges",
            Target::Ledger => "ledger",
            Target::CniEnv => "cni_env",
            Target::CniConfig => "cni_config",
            Target::Selection => "selection",
            Target::Webhook => "webhook",
            Target::MultusConfig => "multusconfig",
        }
    }

    pub fn from_name(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|target| target.name() == name)
    }

    /// Feeds one input to the target.
    pub fn run(self, data: &[u8]) {
        match self {
            Target::Annotations => targets::annotations::run(data),
            Target::Ranges => targets::ranges::run(data),
            Target::Ledger => targets::ledger::run(data),
            Target::CniEnv => targets::cni_env::run(data),
            Target::CniConfig => targets::cni_config::run(data),
            Target::Selection => targets::selection::run(data),
            Target::Webhook => targets::webhook::run(data),
            Target::MultusConfig => targets::multusconfig::run(data),
        }
    }
}

/// The input as text: invalid UTF-8 is replaced (every parser here takes `&str`, as the values
/// reach them through Kubernetes strings or JSON).
pub(crate) fn text(data: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// `selector byte + rest`; `None` for an empty input.
pub(crate) fn select(data: &[u8]) -> Option<(u8, &[u8])> {
    data.split_first().map(|(selector, rest)| (*selector, rest))
}
