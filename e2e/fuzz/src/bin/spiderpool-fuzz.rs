//! The fuzz binary. Built with `--cfg fuzzing` and the sanitizer-coverage flags (`run.sh`), it is
//! libFuzzer running the target named by `SPIDERPOOL_FUZZ_TARGET`; built plainly, it offers:
//!
//! - `spiderpool-fuzz seeds DIR`: writes every target's seed corpus to `DIR/<target>/`;
//! - `spiderpool-fuzz replay TARGET FILE...`: runs files through a target without
//!   instrumentation (to reproduce a crash under a debugger or with a backtrace).

#![cfg_attr(fuzzing, no_main)]
// The instrumented build exports libFuzzer's entry point, which is unsafe by nature.
#![cfg_attr(not(fuzzing), forbid(unsafe_code))]

#[cfg(fuzzing)]
mod engine {
    use std::sync::OnceLock;

    use spiderpool_fuzz::Target;

    fn target() -> Target {
        static TARGET: OnceLock<Target> = OnceLock::new();
        *TARGET.get_or_init(|| {
            let name = std::env::var("SPIDERPOOL_FUZZ_TARGET").unwrap_or_default();
            match Target::from_name(&name) {
                Some(target) => target,
                None => {
                    eprintln!("SPIDERPOOL_FUZZ_TARGET={name:?} names no target");
                    std::process::exit(2);
                }
            }
        })
    }

    libfuzzer_sys::fuzz_target!(|data: &[u8]| target().run(data));
}

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    use std::path::Path;
    use std::process::ExitCode;

    use spiderpool_fuzz::{Target, seeds};

    let arguments: Vec<String> = std::env::args().skip(1).collect();
    match arguments.as_slice() {
        [command, directory] if command == "seeds" => {
            for target in Target::ALL {
                let directory = Path::new(directory).join(target.name());
                if let Err(error) = std::fs::create_dir_all(&directory) {
                    eprintln!("cannot create {}: {error}", directory.display());
                    return ExitCode::FAILURE;
                }
                let seeds = seeds::seeds(target);
                for (index, seed) in seeds.iter().enumerate() {
                    let path = directory.join(format!("seed-{index:05}"));
                    if let Err(error) = std::fs::write(&path, seed) {
                        eprintln!("cannot write {}: {error}", path.display());
                        return ExitCode::FAILURE;
                    }
                }
                println!("{}: {} seeds", target.name(), seeds.len());
            }
            ExitCode::SUCCESS
        }
        [command, name, files @ ..] if command == "replay" => {
            let Some(target) = Target::from_name(name) else {
                eprintln!("no target {name:?}");
                return ExitCode::FAILURE;
            };
            for file in files {
                match std::fs::read(file) {
                    Ok(data) => {
                        eprintln!("{}: {file} ({} bytes)", target.name(), data.len());
                        target.run(&data);
                    }
                    Err(error) => {
                        eprintln!("cannot read {file}: {error}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: spiderpool-fuzz seeds DIR | spiderpool-fuzz replay TARGET FILE...");
            ExitCode::FAILURE
        }
    }
}
