//! The plugin entry point: dispatch on `CNI_COMMAND`, print exactly one JSON document (result or error) on
//! stdout, turn panics into error JSON, and bound the whole call with a hard timeout.

use std::io::{Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::config::Context;
use super::env::{Command, Environment};
use super::error::CniError;
use super::logging;
use super::result::CniResult;
use super::version::{CniVersion, version_info};

/// Default bound for one plugin call (upstream's agent client uses 100 s; the runtime's own timeout is
/// usually longer).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(90);

/// A CNI plugin: one handler per command. Handlers return typed values; [`run`] prints them.
pub trait Plugin: Send + Sync + 'static {
    /// Binary name, used in logs.
    fn name(&self) -> &'static str;

    fn add(&self, context: &Context) -> Result<CniResult, CniError>;

    /// Must be idempotent: a DEL for something already gone succeeds.
    fn del(&self, context: &Context) -> Result<(), CniError>;

    fn check(&self, context: &Context) -> Result<(), CniError> {
        let _ = context;
        Ok(())
    }

    fn status(&self, context: &Context) -> Result<(), CniError> {
        let _ = context;
        Ok(())
    }

    fn gc(&self, context: &Context) -> Result<(), CniError> {
        let _ = context;
        Ok(())
    }

    fn timeout(&self) -> Duration {
        DEFAULT_TIMEOUT
    }
}

/// What one invocation prints.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A JSON document for stdout (ADD result, VERSION answer); exit status 0.
    Print(serde_json::Value),
    /// Success without output (DEL, CHECK, STATUS, GC); exit status 0.
    Silent,
    /// An error JSON for stdout; exit status 1.
    Failed {
        cni_version: String,
        error: CniError,
    },
}

impl Outcome {
    fn failed(error: CniError) -> Self {
        Self::Failed {
            cni_version: CniVersion::LATEST.as_str().to_string(),
            error,
        }
    }

    /// The text for stdout (empty for [`Outcome::Silent`]).
    pub fn stdout_text(&self) -> String {
        match self {
            Self::Print(value) => value.to_string(),
            Self::Silent => String::new(),
            Self::Failed { cni_version, error } => error.to_json(cni_version).to_string(),
        }
    }
}

/// Dispatch one command to `plugin` (no timeout, no panic guard: see [`run_guarded`]).
pub fn execute<P: Plugin + ?Sized>(plugin: &P, env: Environment, stdin: Vec<u8>) -> Outcome {
    if env.command == Command::Version {
        return Outcome::Print(version_info());
    }
    let command = env.command;
    let context = match Context::new(env, stdin) {
        Ok(context) => context,
        Err(error) => return Outcome::failed(error),
    };
    let version = context.version;
    let fail = |error: CniError| {
        log::error!("{command} failed: {error}");
        Outcome::Failed {
            cni_version: version.as_str().to_string(),
            error,
        }
    };
    let outcome = match command {
        Command::Add => plugin
            .add(&context)
            .map(|result| Some(result.to_json(version))),
        Command::Del => plugin.del(&context).map(|()| None),
        Command::Check => plugin.check(&context).map(|()| None),
        Command::Status | Command::Gc if !version.has_status_and_gc() => {
            Err(CniError::incompatible_version(format!(
                "{command} requires cniVersion 1.1.0 or later, got {version}"
            )))
        }
        Command::Status => plugin.status(&context).map(|()| None),
        Command::Gc => plugin.gc(&context).map(|()| None),
        Command::Version => Ok(Some(version_info())),
    };
    match outcome {
        Ok(Some(value)) => Outcome::Print(value),
        Ok(None) => Outcome::Silent,
        Err(error) => fail(error),
    }
}

/// [`execute`] on a worker thread: a panic becomes an internal error, and when `timeout` passes first the
/// outcome is a try-again-later error (the worker is abandoned; [`run`] then exits the process).
pub fn run_guarded<P: Plugin>(
    plugin: Arc<P>,
    env: Environment,
    stdin: Vec<u8>,
    timeout: Duration,
) -> (Outcome, bool) {
    let command = env.command;
    let (sender, receiver) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("cni-command".into())
        .spawn(move || {
            let outcome = catch_unwind(AssertUnwindSafe(|| execute(plugin.as_ref(), env, stdin)))
                .unwrap_or_else(|payload| {
                    Outcome::failed(CniError::internal(format!(
                        "plugin panicked: {}",
                        panic_message(&*payload)
                    )))
                });
            let _ = sender.send(outcome);
        });
    if let Err(error) = spawned {
        return (
            Outcome::failed(CniError::internal(format!(
                "failed to start worker thread: {error}"
            ))),
            false,
        );
    }
    match receiver.recv_timeout(timeout) {
        Ok(outcome) => (outcome, false),
        Err(mpsc::RecvTimeoutError::Timeout) => (
            Outcome::failed(CniError::try_again_later(format!(
                "{command} did not finish within {}s and was aborted",
                timeout.as_secs_f64()
            ))),
            true,
        ),
        Err(mpsc::RecvTimeoutError::Disconnected) => (
            Outcome::failed(CniError::internal("worker thread ended without an outcome")),
            false,
        ),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

/// The `main` of a plugin binary: `fn main() -> ExitCode { run(MyPlugin) }`.
///
/// File descriptor 1 is re-pointed at stderr before anything else runs, so no library can write stray text
/// into the result stream; the result or error JSON is written to a private duplicate of the original stdout.
pub fn run<P: Plugin>(plugin: P) -> ExitCode {
    logging::init(plugin.name());
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        log::error!("panic: {info}");
        default_hook(info);
    }));

    let mut result_stream: Box<dyn Write> = match nix::unistd::dup(std::io::stdout()) {
        Ok(fd) => {
            let file = std::fs::File::from(fd);
            if let Err(error) = nix::unistd::dup2_stdout(std::io::stderr()) {
                log::warn!("failed to point stdout at stderr: {error}");
            }
            Box::new(file)
        }
        Err(error) => {
            log::warn!("failed to duplicate stdout: {error}");
            Box::new(std::io::stdout())
        }
    };

    let deadline = Instant::now() + plugin.timeout();
    let outcome = match Environment::from_process() {
        Err(error) => Outcome::failed(error),
        Ok(env) => match read_stdin(deadline) {
            Err(error) => Outcome::failed(error),
            Ok(stdin) => {
                let remaining = deadline.saturating_duration_since(Instant::now());
                let (outcome, timed_out) = run_guarded(Arc::new(plugin), env, stdin, remaining);
                if timed_out {
                    emit(&mut *result_stream, &outcome);
                    // The worker may be stuck in a syscall: end the process instead of waiting for it.
                    std::process::exit(1);
                }
                outcome
            }
        },
    };
    emit(&mut *result_stream, &outcome)
}

/// Read the whole configuration from stdin, giving up at `deadline` (a runtime that never closes stdin
/// must not hang the plugin past its timeout).
fn read_stdin(deadline: Instant) -> Result<Vec<u8>, CniError> {
    let (sender, receiver) = mpsc::channel();
    std::thread::Builder::new()
        .name("cni-stdin".into())
        .spawn(move || {
            let mut stdin = Vec::new();
            let _ = sender.send(std::io::stdin().read_to_end(&mut stdin).map(|_| stdin));
        })
        .map_err(|error| CniError::internal(format!("failed to start stdin reader: {error}")))?;
    match receiver.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(Ok(stdin)) => Ok(stdin),
        Ok(Err(error)) => Err(CniError::new(
            super::ErrorCode::IO_FAILURE,
            format!("failed to read network configuration from stdin: {error}"),
        )),
        Err(_) => Err(CniError::try_again_later(
            "timed out reading the network configuration from stdin",
        )),
    }
}

fn emit(stream: &mut dyn Write, outcome: &Outcome) -> ExitCode {
    if let Outcome::Failed { error, .. } = outcome {
        log::error!("returning error code {}: {error}", error.code);
    }
    let text = outcome.stdout_text();
    if !text.is_empty() {
        let _ = stream.write_all(text.as_bytes());
        let _ = stream.write_all(b"\n");
        let _ = stream.flush();
    }
    match outcome {
        Outcome::Failed { .. } => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    struct TestPlugin;

    impl Plugin for TestPlugin {
        fn name(&self) -> &'static str {
            "test"
        }
        fn add(&self, context: &Context) -> Result<CniResult, CniError> {
            match context.env.ifname.as_str() {
                "panic" => panic!("boom"),
                "sleep" => {
                    std::thread::sleep(Duration::from_secs(5));
                    Ok(context.pass_through())
                }
                "fail" => Err(CniError::plugin("it failed").with_details("because")),
                _ => Ok(context.pass_through()),
            }
        }
        fn del(&self, _context: &Context) -> Result<(), CniError> {
            Ok(())
        }
    }

    fn env(command: Command, ifname: &str) -> Environment {
        Environment {
            command,
            container_id: "c1".into(),
            netns: Some("/var/run/netns/none".into()),
            ifname: ifname.into(),
            args: Default::default(),
            path: vec![],
        }
    }

    const CONFIG: &[u8] = br#"{"cniVersion":"0.3.1","name":"n","type":"test"}"#;

    #[test]
    fn add_prints_an_empty_result_of_the_requested_version() {
        let (outcome, _) = run_guarded(
            Arc::new(TestPlugin),
            env(Command::Add, "eth0"),
            CONFIG.to_vec(),
            DEFAULT_TIMEOUT,
        );
        assert_eq!(outcome.stdout_text(), r#"{"cniVersion":"0.3.1","dns":{}}"#);
    }

    #[test]
    fn a_panic_becomes_an_internal_error_json() {
        let (outcome, timed_out) = run_guarded(
            Arc::new(TestPlugin),
            env(Command::Add, "panic"),
            CONFIG.to_vec(),
            DEFAULT_TIMEOUT,
        );
        assert!(!timed_out);
        let Outcome::Failed { error, .. } = &outcome else {
            panic!("expected failure, got {outcome:?}")
        };
        assert_eq!(error.code, ErrorCode::INTERNAL);
        assert_eq!(error.msg, "plugin panicked: boom");
    }

    #[test]
    fn a_slow_command_is_cut_off_by_the_timeout() {
        let (outcome, timed_out) = run_guarded(
            Arc::new(TestPlugin),
            env(Command::Add, "sleep"),
            CONFIG.to_vec(),
            Duration::from_millis(100),
        );
        assert!(timed_out);
        let Outcome::Failed { error, .. } = outcome else {
            panic!("expected failure")
        };
        assert_eq!(error.code, ErrorCode::TRY_AGAIN_LATER);
    }

    #[test]
    fn plugin_errors_carry_the_config_version() {
        let outcome = execute(&TestPlugin, env(Command::Add, "fail"), CONFIG.to_vec());
        assert_eq!(
            outcome.stdout_text(),
            r#"{"cniVersion":"0.3.1","code":100,"msg":"it failed","details":"because"}"#
        );
    }

    #[test]
    fn version_needs_no_config_and_del_prints_nothing() {
        let outcome = execute(&TestPlugin, env(Command::Version, ""), Vec::new());
        assert!(outcome.stdout_text().contains("supportedVersions"));
        assert_eq!(
            execute(&TestPlugin, env(Command::Del, "eth0"), CONFIG.to_vec()),
            Outcome::Silent
        );
    }

    #[test]
    fn status_and_gc_need_version_1_1_0() {
        let outcome = execute(&TestPlugin, env(Command::Status, ""), CONFIG.to_vec());
        assert!(
            matches!(outcome, Outcome::Failed { ref error, .. } if error.code == ErrorCode::INCOMPATIBLE_VERSION)
        );
        let config = br#"{"cniVersion":"1.1.0","name":"n","type":"test"}"#;
        assert_eq!(
            execute(&TestPlugin, env(Command::Status, ""), config.to_vec()),
            Outcome::Silent
        );
        assert_eq!(
            execute(&TestPlugin, env(Command::Gc, ""), config.to_vec()),
            Outcome::Silent
        );
    }
}
