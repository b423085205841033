//! Every target replays its seed corpus and its saved crashes (`regressions/<target>/`) without
//! instrumentation, so `cargo test` keeps every input that ever broke a parser fixed, and the
//! targets themselves compile and run.

use std::path::Path;

use spiderpool_fuzz::{Target, seeds};

fn regressions(target: Target) -> Vec<(String, Vec<u8>)> {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("regressions")
        .join(target.name());
    let Ok(entries) = std::fs::read_dir(&directory) else {
        return Vec::new();
    };
    let mut files: Vec<(String, Vec<u8>)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let data = std::fs::read(entry.path()).ok()?;
            Some((entry.file_name().to_string_lossy().into_owned(), data))
        })
        .collect();
    files.sort();
    files
}

fn replay(target: Target, minimum_seeds: usize) {
    let seeds = seeds::seeds(target);
    assert!(
        seeds.len() >= minimum_seeds,
        "{}: only {} seeds",
        target.name(),
        seeds.len()
    );
    for seed in &seeds {
        target.run(seed);
    }
    for (name, data) in regressions(target) {
        eprintln!("{}: regression {name}", target.name());
        target.run(&data);
    }
}

#[test]
fn annotation_seeds_and_regressions_replay() {
    replay(Target::Annotations, 100);
}

#[test]
fn range_seeds_and_regressions_replay() {
    replay(Target::Ranges, 100);
}

#[test]
fn ledger_seeds_and_regressions_replay() {
    replay(Target::Ledger, 4);
}

#[test]
fn cni_env_seeds_and_regressions_replay() {
    replay(Target::CniEnv, 4);
}

#[test]
fn cni_config_seeds_and_regressions_replay() {
    replay(Target::CniConfig, 10);
}

#[test]
fn selection_seeds_and_regressions_replay() {
    replay(Target::Selection, 30);
}

#[test]
fn webhook_seeds_and_regressions_replay() {
    replay(Target::Webhook, 100);
}

#[test]
fn multusconfig_seeds_and_regressions_replay() {
    replay(Target::MultusConfig, 20);
}

#[test]
fn every_target_is_found_by_its_name() {
    for target in Target::ALL {
        assert_eq!(Target::from_name(target.name()), Some(target));
    }
    assert_eq!(Target::from_name("nope"), None);
}
