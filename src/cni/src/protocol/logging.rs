//! Logging for plugins: never stdout. Lines go to stderr until a plugin points them at a log file from its
//! configuration (as upstream's `log_file_path` / `logOptions.logFile`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use log::{LevelFilter, Log, Metadata, Record};

use super::error::CniError;

struct PluginLogger {
    plugin: &'static str,
    file: Mutex<Option<File>>,
}

static LOGGER: OnceLock<PluginLogger> = OnceLock::new();

impl Log for PluginLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let line = format!(
            "{}.{:03} {:<5} {}[{}] {}: {}\n",
            now.as_secs(),
            now.subsec_millis(),
            record.level(),
            self.plugin,
            std::process::id(),
            record.target(),
            record.args()
        );
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match file.as_mut() {
            Some(file) => {
                let _ = file.write_all(line.as_bytes());
            }
            None => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

/// Install the logger (once per process); the level comes from `CNI_LOG_LEVEL` when set, else `info`.
pub fn init(plugin: &'static str) {
    let logger = LOGGER.get_or_init(|| PluginLogger {
        plugin,
        file: Mutex::new(None),
    });
    if log::set_logger(logger).is_ok() {
        let level = std::env::var("CNI_LOG_LEVEL")
            .ok()
            .and_then(|level| parse_level(&level).ok());
        log::set_max_level(level.unwrap_or(LevelFilter::Info));
    }
}

/// Upstream's level names (`debug`, `info`, `warn`, `error`, `fatal`, case-insensitive).
pub fn parse_level(level: &str) -> Result<LevelFilter, CniError> {
    match level.to_ascii_lowercase().as_str() {
        "debug" => Ok(LevelFilter::Debug),
        "info" => Ok(LevelFilter::Info),
        "warn" | "warning" => Ok(LevelFilter::Warn),
        "error" | "fatal" | "panic" | "dpanic" => Ok(LevelFilter::Error),
        _ => Err(CniError::invalid_config(format!(
            "unsupported log level {level}"
        ))),
    }
}

pub fn set_level(level: LevelFilter) {
    log::set_max_level(level);
}

/// Append log lines to `path` from now on (parent directories are created).
pub fn log_to_file(path: &Path) -> Result<(), CniError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|error| {
            CniError::plugin(format!(
                "failed to create log directory {}: {error}",
                parent.display()
            ))
        })?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|error| {
            CniError::plugin(format!(
                "failed to open log file {}: {error}",
                path.display()
            ))
        })?;
    if let Some(logger) = LOGGER.get() {
        *logger
            .file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(file);
    }
    Ok(())
}
