//! The module structure of every crate under `src/` has no cycles, as the `use` lines say.
//!
//! Each source file is a module (`lib.rs` the crate root, `a/mod.rs` and `a.rs` module `a`,
//! `a/b.rs` module `a::b`); every `crate::`, `super::` and `self::` path outside comments and
//! `#[cfg(test)]` code is an edge to the deepest module it names. An edge between two modules is
//! counted between their ancestors that are siblings (`webhook::server -> webhook::handlers`,
//! `ippool::controller -> gc` as `ippool -> gc`); edges between a module and its own ancestors or
//! descendants are not (a parent declares its children; a child may use its parent's items).
//! Among the siblings of each parent the edges must not form a circle. Binaries (`main.rs`,
//! `bin/`) are crates of their own and are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|name| name != "bin") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            out.push(path);
        }
    }
}

/// The module of a file, relative to the crate's `src/`.
fn module_of(relative: &Path) -> Module {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    let file = parts.pop().unwrap_or_default();
    match file.as_str() {
        "lib.rs" | "mod.rs" => {}
        other => parts.push(other.trim_end_matches(".rs").to_string()),
    }
    parts
}

/// The code of a file before its tests, without comments.
fn code_of(text: &str) -> String {
    let code = match text.find("#[cfg(test)]") {
        Some(index) => &text[..index],
        None => text,
    };
    code.lines()
        .map(|line| match line.find("//") {
            Some(index) => &line[..index],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path a `use` tree names, expanded (`a::{b, c::d}` -> `a::b`, `a::c::d`).
fn expand_use(tree: &str, prefix: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let path = tree.split(" as ").next().unwrap_or_default().trim();
        if !path.is_empty() {
            out.push(format!("{prefix}{path}"));
        }
        return;
    };
    let head = format!("{prefix}{}", &tree[..open]);
    let close = tree
        .rfind('}')
        .filter(|close| *close > open)
        .unwrap_or(tree.len());
    let inner = &tree[open + 1..close];
    let mut depth = 0;
    let mut start = 0;
    for (index, character) in inner.char_indices() {
        match character {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                expand_use(&inner[start..index], &head, out);
                start = index + 1;
            }
            _ => {}
        }
    }
    expand_use(&inner[start..], &head, out);
}

/// The paths a file names: its `use` declarations (a line starting with `use` or `pub use`, up to
/// its `;`) and the `crate::`/`super::` paths anywhere in its code.
fn paths_of(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut statement: Option<String> = None;
    for line in code.lines() {
        let trimmed = line.trim_start();
        let declaration = trimmed
            .strip_prefix("pub ")
            .or_else(|| {
                trimmed
                    .strip_prefix("pub(")
                    .and_then(|rest| rest.split_once(") ").map(|(_, rest)| rest))
            })
            .unwrap_or(trimmed);
        let text = match (&mut statement, declaration.strip_prefix("use ")) {
            (Some(open), _) => {
                open.push_str(trimmed);
                open.clone()
            }
            (None, Some(tree)) => tree.to_string(),
            (None, None) => continue,
        };
        match text.split_once(';') {
            Some((tree, _)) => {
                expand_use(tree, "", &mut paths);
                statement = None;
            }
            None => statement = Some(text),
        }
    }
    for prefix in ["crate::", "super::"] {
        let mut rest = code;
        while let Some(index) = rest.find(prefix) {
            let before = rest[..index].chars().last();
            let tail = &rest[index..];
            let end = tail
                .find(|character: char| {
                    !(character.is_alphanumeric() || character == '_' || character == ':')
                })
                .unwrap_or(tail.len());
            if !before.is_some_and(|character| {
                character.is_alphanumeric() || character == '_' || character == ':'
            }) {
                paths.push(tail[..end].to_string());
            }
            rest = &rest[index + prefix.len()..];
        }
    }
    paths
}

/// The deepest known module a path names, from the file's module.
fn resolve(path: &str, from: &Module, modules: &BTreeSet<Module>) -> Option<Module> {
    let mut segments = path.split("::").filter(|segment| !segment.is_empty());
    let mut base: Module = match segments.next()? {
        "crate" => Vec::new(),
        "self" => from.clone(),
        "super" => from[..from.len().checked_sub(1)?].to_vec(),
        _ => return None,
    };
    let rest: Vec<&str> = segments.collect();
    let mut index = 0;
    while index < rest.len() && rest[index] == "super" {
        base.pop();
        index += 1;
    }
    let mut target = base;
    for segment in &rest[index..] {
        let mut deeper = target.clone();
        deeper.push((*segment).to_string());
        if modules.contains(&deeper) {
            target = deeper;
        } else {
            break;
        }
    }
    Some(target)
}

/// Circles among siblings: `(parent, members, the file edges that tie them)`.
fn circles(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.retain(|file| file.file_name().is_some_and(|name| name != "main.rs"));
    let modules: BTreeSet<Module> = files
        .iter()
        .filter_map(|file| file.strip_prefix(src).ok().map(module_of))
        .collect();
    // (parent, from sibling, to sibling) -> the edges behind it
    let mut edges: BTreeMap<(Module, String, String), BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Ok(relative) = file.strip_prefix(src) else {
            continue;
        };
        let from = module_of(relative);
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for path in paths_of(&code_of(&text)) {
            let Some(to) = resolve(&path, &from, &modules) else {
                continue;
            };
            let common = from
                .iter()
                .zip(&to)
                .take_while(|(left, right)| left == right)
                .count();
            if common == from.len() || common == to.len() {
                continue;
            }
            edges
                .entry((
                    from[..common].to_vec(),
                    from[common].clone(),
                    to[common].clone(),
                ))
                .or_default()
                .insert(format!("{} -> {path}", relative.display()));
        }
    }
    let mut found = Vec::new();
    let parents: BTreeSet<&Module> = edges.keys().map(|(parent, _, _)| parent).collect();
    for parent in parents {
        let graph: BTreeMap<&str, Vec<&str>> = edges
            .keys()
            .filter(|(edge_parent, _, _)| edge_parent == parent)
            .fold(BTreeMap::new(), |mut graph, (_, from, to)| {
                graph.entry(from.as_str()).or_default().push(to.as_str());
                graph
            });
        for start in graph.keys() {
            // A path from `start` back to itself through siblings greater than it (each circle
            // once, from its smallest member).
            let mut stack = vec![(*start, vec![*start])];
            let mut seen = BTreeSet::new();
            while let Some((node, trail)) = stack.pop() {
                for next in graph.get(node).into_iter().flatten() {
                    if next == start {
                        let ties: Vec<String> = trail
                            .iter()
                            .zip(trail.iter().skip(1).chain([start]))
                            .flat_map(|(from, to)| {
                                edges[&(parent.clone(), from.to_string(), to.to_string())]
                                    .iter()
                                    .cloned()
                            })
                            .collect();
                        found.push(format!(
                            "{}: {} ({})",
                            src.display(),
                            trail.join(" -> ") + " -> " + start,
                            ties.join("; ")
                        ));
                    } else if next > start && seen.insert(*next) {
                        let mut longer = trail.clone();
                        longer.push(next);
                        stack.push((next, longer));
                    }
                }
            }
        }
    }
    found
}

#[test]
fn no_crate_has_a_module_cycle() {
    let workspace_src = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut crates: Vec<PathBuf> = std::fs::read_dir(&workspace_src)
        .expect("the workspace's src/")
        .flatten()
        .map(|entry| entry.path().join("src"))
        .filter(|src| src.is_dir())
        .collect();
    crates.sort();
    assert!(crates.len() >= 5, "crates found: {crates:?}");
    let found: Vec<String> = crates.iter().flat_map(|src| circles(src)).collect();
    assert!(found.is_empty(), "module cycles:\n{}", found.join("\n"));
}

#[test]
fn the_check_sees_a_cycle_between_siblings_and_ignores_parent_child_edges() {
    let dir = std::env::temp_dir().join(format!("module-cycles-{}", std::process::id()));
    let write = |path: &str, text: &str| {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("a directory");
        std::fs::write(path, text).expect("a file");
    };
    write("lib.rs", "pub mod a;\npub mod b;\n");
    write("a/mod.rs", "pub mod x;\nuse crate::b::Thing;\n");
    write("a/x.rs", "use super::Parent;\n");
    write("b.rs", "use crate::{a::x::Other, c};\n");
    let found = circles(&dir);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("a -> b -> a"), "{found:?}");
    write(
        "b.rs",
        "// use crate::a::x;\nfn f() {}\n#[cfg(test)]\nmod tests { use crate::a; }\n",
    );
    assert!(circles(&dir).is_empty());
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
