//! spiderpool-controller-manager: parses the flags, starts logging and hands over to the
//! composition root ([`spiderpool_controller_manager::run`]).

#![forbid(unsafe_code)]

use clap::Parser;
use spiderpool_controller_manager::args::Args;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // kube and the webhook server use rustls; pick ring before anything opens a connection.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    init_logging(&args);
    match spiderpool_controller_manager::run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("spiderpool-controller-manager: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(args: &Args) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}
