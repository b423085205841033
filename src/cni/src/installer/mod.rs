//! `spiderpool-installer`: the node side of an install, run by a DaemonSet on every node (what
//! upstream's agent and its init container do for its plugins).
//!
//! - Copies the `spiderpool`, `ifacer` and `coordinator` plugins from its image into the node's
//!   CNI bin directory, atomically, and puts them back if they change on disk.
//! - Writes `spiderpool.kubeconfig` (the plugins' identity: a token of the `spiderpool-cni`
//!   ServiceAccount minted with the TokenRequest API and bound to the node, see [`token`]) and
//!   renews it at half its lifetime, long before it expires.
//! - Writes `spiderpool.yaml`, the plugins' settings, from `conf.yml` of the `spiderpool-conf`
//!   ConfigMap (the object the controller-manager reads its settings from), whenever it changes.
//!   A `conf.yml` the plugins would refuse is not written: the old file stays and the installer
//!   reports not ready, saying why.
//! - Is ready (the ready file exists, checked by `spiderpool-installer probe`) only while all
//!   three are in place and the token is valid.
//! - On SIGTERM it stops. Only when its DaemonSet has been deleted (an uninstall, seen through a
//!   watch opened while its permissions still existed) does it remove what it wrote besides the
//!   plugin binaries: those stay, as upstream's do, so pods still running can be torn down.

pub mod files;
pub mod kubeconfig;
pub mod token;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::Api;
use kube::runtime::watcher;

use files::Written;
use token::Minted;

/// The plugins the installer puts on the node.
pub const PLUGINS: [&str; 3] = ["spiderpool", "ifacer", "coordinator"];
/// File names inside the configuration directory (the plugins' defaults under
/// `/etc/cni/net.d/spiderpool.d/`).
pub const KUBECONFIG_FILE: &str = "spiderpool.kubeconfig";
pub const SETTINGS_FILE: &str = "spiderpool.yaml";
/// The ConfigMap key holding the settings (upstream's).
pub const SETTINGS_KEY: &str = "conf.yml";

/// How often the binaries on the node and the CA file are compared with what they should be.
const RECHECK_INTERVAL: Duration = Duration::from_secs(30);
/// First wait after a failed renewal; doubles up to [`RETRY_CAP`].
const RETRY_INITIAL: Duration = Duration::from_secs(2);
const RETRY_CAP: Duration = Duration::from_secs(60);
/// A token closer than this to its expiry no longer counts as ready.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// Where things are and who the plugins are.
#[derive(Debug, Clone)]
pub struct Options {
    pub plugins_dir: PathBuf,
    pub cni_bin_dir: PathBuf,
    pub config_dir: PathBuf,
    pub namespace: String,
    pub settings_configmap: String,
    pub plugin_service_account: String,
    pub token_lifetime: Duration,
    pub api_server: String,
    pub ca_file: PathBuf,
    pub node_name: Option<String>,
    pub daemonset_name: Option<String>,
    pub ready_file: PathBuf,
}

/// Errors that stop the installer (anything transient is retried inside the loop instead).
#[derive(Debug, thiserror::Error)]
pub enum InstallerError {
    #[error("installing plugin {plugin}: {source}")]
    Plugin {
        plugin: &'static str,
        #[source]
        source: files::FileError,
    },
    #[error("{0}")]
    File(#[from] files::FileError),
    #[error("invalid options: {0}")]
    Options(String),
    #[error("waiting for signals: {0}")]
    Signal(std::io::Error),
}

/// Copies every plugin whose bytes differ into the CNI bin directory; returns those it wrote.
pub fn install_plugins(
    plugins_dir: &Path,
    cni_bin_dir: &Path,
) -> Result<Vec<&'static str>, InstallerError> {
    let mut written = Vec::new();
    for plugin in PLUGINS {
        let source = plugins_dir.join(plugin);
        let bytes =
            files::read(&source).map_err(|source| InstallerError::Plugin { plugin, source })?;
        match files::replace_if_changed(&cni_bin_dir.join(plugin), &bytes, 0o755)
            .map_err(|source| InstallerError::Plugin { plugin, source })?
        {
            Written::Replaced => written.push(plugin),
            Written::Unchanged => {}
        }
    }
    Ok(written)
}

/// The settings file for a `conf.yml` (absent: the defaults), refused when the plugins would
/// refuse it.
pub fn render_settings(source: &str, conf_yml: Option<&str>) -> Result<String, String> {
    let text = conf_yml.unwrap_or_default();
    crate::ipam_plugin::parse_settings(text)
        .map_err(|error| format!("{SETTINGS_KEY} of {source} is not valid: {error}"))?;
    let origin = if conf_yml.is_some() {
        format!("{SETTINGS_KEY} of ConfigMap {source}")
    } else {
        format!("nothing: ConfigMap {source} has no {SETTINGS_KEY}, so the defaults apply")
    };
    let mut out = format!("# Written by spiderpool-installer from {origin}; do not edit.\n");
    out.push_str(text);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

/// What is in place on the node, and why the installer is not ready when it is not.
#[derive(Debug)]
struct State {
    plugins: bool,
    token: Option<Minted>,
    settings: Result<(), String>,
    settings_seen: bool,
}

impl State {
    fn new() -> State {
        State {
            plugins: false,
            token: None,
            settings: Ok(()),
            settings_seen: false,
        }
    }

    /// `None` when ready, else the reason.
    fn not_ready_reason(&self, now: SystemTime) -> Option<String> {
        if !self.plugins {
            return Some("the plugins are not installed".into());
        }
        match &self.token {
            None => return Some("no plugin token has been minted yet".into()),
            Some(minted) if !minted.valid_at(now, EXPIRY_MARGIN) => {
                return Some("the plugin token is about to expire and could not be renewed".into());
            }
            Some(_) => {}
        }
        if !self.settings_seen {
            return Some("the settings ConfigMap has not been read yet".into());
        }
        self.settings.as_ref().err().cloned()
    }
}

/// Runs until SIGTERM/SIGINT.
pub async fn run(client: Client, options: Options) -> Result<(), InstallerError> {
    if options.token_lifetime < token::MINIMUM_LIFETIME {
        return Err(InstallerError::Options(format!(
            "--token-lifetime {:?} is below the API server's minimum of 10m",
            options.token_lifetime
        )));
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(InstallerError::Signal)?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(InstallerError::Signal)?;
    let _ = files::remove_if_present(&options.ready_file);

    let mut state = State::new();
    let written = install_plugins(&options.plugins_dir, &options.cni_bin_dir)?;
    log::info!(
        "plugins in {}: {} (written now: {written:?})",
        options.cni_bin_dir.display(),
        PLUGINS.join(", ")
    );
    state.plugins = true;

    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &options.namespace);
    let mut settings_events = watcher(
        config_maps,
        watcher::Config::default().fields(&format!("metadata.name={}", options.settings_configmap)),
    )
    .boxed();
    let mut settings_initial: Option<ConfigMap> = None;

    let mut daemonset_events = match &options.daemonset_name {
        Some(name) => {
            let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), &options.namespace);
            watcher(
                daemonsets,
                watcher::Config::default().fields(&format!("metadata.name={name}")),
            )
            .boxed()
        }
        None => futures_util::stream::pending().boxed(),
    };
    let mut uninstalling = false;

    let mut ca = files::read(&options.ca_file)?;
    let mut next_mint = tokio::time::Instant::now();
    let mut retry = RETRY_INITIAL;
    let mut recheck = tokio::time::interval(RECHECK_INTERVAL);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_ready: Option<bool> = None;

    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            () = tokio::time::sleep_until(next_mint) => {
                match mint_and_write(&client, &options, &ca).await {
                    Ok(minted) => {
                        next_mint = deadline_at(minted.renew_at());
                        log::info!(
                            "wrote {} (token valid until {}, renewal due at {})",
                            options.config_dir.join(KUBECONFIG_FILE).display(),
                            unix_seconds(minted.expires),
                            unix_seconds(minted.renew_at())
                        );
                        state.token = Some(minted);
                        retry = RETRY_INITIAL;
                    }
                    Err(error) => {
                        log::error!("renewing the plugin kubeconfig failed (retry in {retry:?}): {error}");
                        next_mint = tokio::time::Instant::now() + retry;
                        retry = (retry * 2).min(RETRY_CAP);
                    }
                }
            }
            Some(event) = settings_events.next() => {
                match event {
                    Ok(watcher::Event::Init) => settings_initial = None,
                    Ok(watcher::Event::InitApply(object)) => settings_initial = Some(object),
                    Ok(watcher::Event::InitDone) => {
                        let object = settings_initial.take();
                        write_settings(&options, object.as_ref(), &mut state);
                    }
                    Ok(watcher::Event::Apply(object)) => write_settings(&options, Some(&object), &mut state),
                    Ok(watcher::Event::Delete(_)) => write_settings(&options, None, &mut state),
                    Err(error) => log::warn!("watching ConfigMap {}: {error}", options.settings_configmap),
                }
            }
            Some(event) = daemonset_events.next() => {
                match event {
                    Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                        uninstalling = object.metadata.deletion_timestamp.is_some();
                    }
                    Ok(watcher::Event::Delete(_)) => uninstalling = true,
                    Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
                    // After an uninstall the watch fails (the ServiceAccount is gone): keep
                    // what was seen.
                    Err(error) => log::debug!("watching the DaemonSet: {error}"),
                }
                if uninstalling {
                    log::info!("the installer's DaemonSet is being deleted: an uninstall");
                }
            }
            _ = recheck.tick() => {
                match install_plugins(&options.plugins_dir, &options.cni_bin_dir) {
                    Ok(written) if !written.is_empty() => log::warn!("plugins changed on the node, put back: {written:?}"),
                    Ok(_) => {}
                    Err(error) => {
                        log::error!("{error}");
                        state.plugins = false;
                    }
                }
                match files::read(&options.ca_file) {
                    Ok(current) if current != ca => {
                        log::info!("the cluster CA changed: rewriting the kubeconfig");
                        ca = current;
                        next_mint = tokio::time::Instant::now();
                    }
                    Ok(_) => {}
                    Err(error) => log::warn!("{error}"),
                }
            }
        }
        publish_readiness(&options, &state, &mut last_ready);
    }

    let _ = files::remove_if_present(&options.ready_file);
    if uninstalling {
        remove_node_files(&options);
    }
    log::info!("stopped");
    Ok(())
}

async fn mint_and_write(client: &Client, options: &Options, ca: &[u8]) -> Result<Minted, String> {
    let minted = token::mint(
        client,
        &options.namespace,
        &options.plugin_service_account,
        options.token_lifetime,
        options.node_name.as_deref(),
    )
    .await?;
    let text = kubeconfig::render(&options.api_server, ca, &minted.token)?;
    files::replace_if_changed(
        &options.config_dir.join(KUBECONFIG_FILE),
        text.as_bytes(),
        0o600,
    )
    .map_err(|error| error.to_string())?;
    Ok(minted)
}

fn write_settings(options: &Options, object: Option<&ConfigMap>, state: &mut State) {
    let source = format!("{}/{}", options.namespace, options.settings_configmap);
    let conf_yml = object
        .and_then(|object| object.data.as_ref())
        .and_then(|data| data.get(SETTINGS_KEY))
        .map(String::as_str);
    state.settings_seen = true;
    state.settings = render_settings(&source, conf_yml).and_then(|text| {
        files::replace_if_changed(
            &options.config_dir.join(SETTINGS_FILE),
            text.as_bytes(),
            0o644,
        )
        .map(|written| {
            if written == Written::Replaced {
                log::info!(
                    "wrote {} from {source}",
                    options.config_dir.join(SETTINGS_FILE).display()
                );
            }
        })
        .map_err(|error| error.to_string())
    });
    if let Err(reason) = &state.settings {
        log::error!("{reason}; the plugins keep the previous settings file");
    }
}

fn publish_readiness(options: &Options, state: &State, last: &mut Option<bool>) {
    let reason = state.not_ready_reason(SystemTime::now());
    let ready = reason.is_none();
    let result = if ready {
        files::replace_if_changed(&options.ready_file, b"ready\n", 0o644).map(|_| ())
    } else {
        files::remove_if_present(&options.ready_file).map(|_| ())
    };
    if let Err(error) = result {
        log::error!("readiness file: {error}");
    }
    if *last != Some(ready) {
        match &reason {
            None => log::info!("ready: plugins, kubeconfig and settings are in place"),
            Some(reason) => log::info!("not ready: {reason}"),
        }
        *last = Some(ready);
    }
}

/// After an uninstall: the kubeconfig (its token died with its ServiceAccount) and the
/// settings. The plugin binaries stay (see the module docs).
fn remove_node_files(options: &Options) {
    for name in [KUBECONFIG_FILE, SETTINGS_FILE] {
        let path = options.config_dir.join(name);
        match files::remove_if_present(&path) {
            Ok(true) => log::info!("uninstall: removed {}", path.display()),
            Ok(false) => {}
            Err(error) => log::warn!("uninstall: {error}"),
        }
    }
    if files::remove_dir_if_empty(&options.config_dir) {
        log::info!("uninstall: removed {}", options.config_dir.display());
    }
}

/// The Tokio instant of a wall-clock time (now when it has passed).
fn deadline_at(at: SystemTime) -> tokio::time::Instant {
    let wait = at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    tokio::time::Instant::now() + wait
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map(|duration| duration.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_written_verbatim_under_a_header() {
        let text = render_settings(
            "kube-system/spiderpool-conf",
            Some("enableIPv6: false\nlockDir: \"\""),
        )
        .unwrap();
        assert!(text.starts_with("# Written by spiderpool-installer from conf.yml of ConfigMap kube-system/spiderpool-conf"));
        assert!(text.ends_with("enableIPv6: false\nlockDir: \"\"\n"));
        let (settings, node) = crate::ipam_plugin::parse_settings(&text).unwrap();
        assert!(!settings.enable_ipv6);
        assert_eq!(node.lock_dir, "");
    }

    #[test]
    fn an_absent_configmap_gives_the_defaults_and_says_so() {
        let text = render_settings("kube-system/spiderpool-conf", None).unwrap();
        assert!(text.contains("the defaults apply"), "{text}");
        let (settings, _) = crate::ipam_plugin::parse_settings(&text).unwrap();
        assert_eq!(
            settings,
            spiderpool_ipam::settings::ClusterSettings::default()
        );
    }

    #[test]
    fn settings_the_plugins_would_refuse_are_not_written() {
        let error = render_settings(
            "kube-system/spiderpool-conf",
            Some("enableIPv4: [not a bool"),
        )
        .unwrap_err();
        assert!(
            error.starts_with("conf.yml of kube-system/spiderpool-conf is not valid"),
            "{error}"
        );
        let error = render_settings(
            "kube-system/spiderpool-conf",
            Some("cniTimeoutSeconds: soon"),
        )
        .unwrap_err();
        assert!(
            error.contains("cniTimeoutSeconds") || error.contains("invalid"),
            "{error}"
        );
    }

    #[test]
    fn readiness_names_what_is_missing() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let mut state = State::new();
        assert_eq!(
            state.not_ready_reason(now).unwrap(),
            "the plugins are not installed"
        );
        state.plugins = true;
        assert!(state.not_ready_reason(now).unwrap().contains("token"));
        state.token = Some(Minted {
            token: "t".into(),
            issued: SystemTime::UNIX_EPOCH,
            expires: SystemTime::UNIX_EPOCH + Duration::from_secs(1030),
        });
        assert!(
            state
                .not_ready_reason(now)
                .unwrap()
                .contains("about to expire")
        );
        state.token.as_mut().unwrap().expires = SystemTime::UNIX_EPOCH + Duration::from_secs(4600);
        assert!(state.not_ready_reason(now).unwrap().contains("ConfigMap"));
        state.settings_seen = true;
        assert_eq!(state.not_ready_reason(now), None);
        state.settings = Err("conf.yml of x is not valid".into());
        assert_eq!(
            state.not_ready_reason(now).unwrap(),
            "conf.yml of x is not valid"
        );
    }

    #[test]
    fn plugins_are_copied_once_and_replaced_when_they_differ() {
        let base = std::env::temp_dir().join(format!(
            "spiderpool-installer-plugins-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&base);
        let image = base.join("image");
        let node = base.join("node");
        std::fs::create_dir_all(&image).unwrap();
        for plugin in PLUGINS {
            std::fs::write(image.join(plugin), plugin.as_bytes()).unwrap();
        }
        assert_eq!(install_plugins(&image, &node).unwrap(), PLUGINS.to_vec());
        assert!(install_plugins(&image, &node).unwrap().is_empty());
        std::fs::write(node.join("ifacer"), b"tampered").unwrap();
        assert_eq!(install_plugins(&image, &node).unwrap(), vec!["ifacer"]);
        assert_eq!(std::fs::read(node.join("ifacer")).unwrap(), b"ifacer");
        std::fs::remove_file(image.join("coordinator")).unwrap();
        let error = install_plugins(&image, &node).unwrap_err().to_string();
        assert!(
            error.starts_with("installing plugin coordinator: read "),
            "{error}"
        );
        std::fs::remove_dir_all(base).unwrap();
    }
}
