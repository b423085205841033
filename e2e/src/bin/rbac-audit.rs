//! `rbac-audit [--rbac-dir DIR] AUDIT_LOG...`: checks the roles of `config/rbac` against the
//! API server's audit log of a full test run (see `spiderpool_e2e::rbac_audit`). Prints one table
//! per ServiceAccount; exits 1 when a grant went unused, a request was denied or allowed by
//! something unexpected, 2 when the inputs cannot be read.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use spiderpool_e2e::rbac::{Policy, rbac_dir};
use spiderpool_e2e::rbac_audit::{EXEMPTIONS, check, read_logs, render};

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("rbac-audit: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<bool> {
    let mut dir = rbac_dir();
    let mut logs: Vec<PathBuf> = Vec::new();
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--rbac-dir" {
            dir = args
                .next()
                .map(PathBuf::from)
                .ok_or_else(|| anyhow::anyhow!("--rbac-dir needs a directory"))?;
        } else if arg == "--help" || arg == "-h" {
            println!("usage: rbac-audit [--rbac-dir DIR] AUDIT_LOG...");
            return Ok(true);
        } else {
            logs.push(PathBuf::from(arg));
        }
    }
    if logs.is_empty() {
        anyhow::bail!("no audit log given (usage: rbac-audit [--rbac-dir DIR] AUDIT_LOG...)");
    }
    let policy = Policy::load(&dir)?;
    let paths: Vec<&Path> = logs.iter().map(PathBuf::as_path).collect();
    let (requests, malformed) = read_logs(&paths, &policy.accounts)?;
    let mut report = check(&policy, &requests, EXEMPTIONS)?;
    report.malformed_lines = malformed;
    print!("{}", render(&report));
    Ok(report.passed())
}
