//! The import rules `docs/architecture.md` states, checked on the source: `model` imports
//! nothing from the crate, `store` imports only `model`, `selfmetrics` only `model`; the
//! doors (`api`) reach the agent only through `ops`, and `ops` knows no door.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The parts whose imports are checked, and what each may import from the crate.
const RULES: &[(&str, &[&str])] = &[
    ("model", &[]),
    ("quantity", &[]),
    ("sync", &[]),
    ("store", &["model"]),
    ("selfmetrics", &["model", "sync"]),
    ("auth", &[]),
    ("credentials", &[]),
    ("state_dir", &[]),
    (
        "api",
        &[
            "ops",
            "config",
            "model",
            "quantity",
            "selfmetrics",
            "state_dir",
        ],
    ),
    (
        "ops",
        &[
            "auth",
            "credentials",
            "engine",
            "alerts",
            "monitor",
            "reload",
            "history",
            "model",
            "quantity",
            "sync",
            "tokens",
        ],
    ),
    ("tokens", &["model", "store", "selfmetrics", "sync"]),
];

/// `src/<part>.rs` or every `.rs` file under `src/<part>/`.
fn files_of(part: &str) -> Vec<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut dirs = vec![src.join(part)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for path in entries.map(|e| e.expect("read the source directory").path()) {
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let single = src.join(format!("{part}.rs"));
    if single.is_file() {
        files.push(single);
    }
    files
}

/// The crate's top-level modules a source text names: the first segment of each
/// `crate::` path, and each top segment of a `crate::{…}` group.
fn crate_modules(text: &str) -> BTreeSet<String> {
    let mut modules = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut segment_start = true;
            let mut name = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => segment_start = true,
                    c if segment_start && (c.is_alphanumeric() || c == '_') => name.push(c),
                    _ if segment_start && !name.is_empty() => {
                        modules.insert(std::mem::take(&mut name));
                        segment_start = false;
                    }
                    _ => {}
                }
            }
            if !name.is_empty() {
                modules.insert(name);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            modules.insert(name);
        }
    }
    modules
}

#[test]
fn leaf_parts_import_only_what_the_map_allows() {
    let mut broken = Vec::new();
    for (part, allowed) in RULES {
        let files = files_of(part);
        assert!(!files.is_empty(), "no source files for {part}");
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read a source file");
            for module in crate_modules(&text) {
                if module != *part && !allowed.contains(&module.as_str()) {
                    broken.push(format!("{} imports crate::{module}", file.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn crate_paths_are_read_from_uses_groups_and_expressions() {
    let text = "use crate::model::{Run, Timestamp};\nuse crate::{alerts::Change, store};\n\
                let x = crate::selfmetrics::global();";
    assert_eq!(
        crate_modules(text).into_iter().collect::<Vec<_>>(),
        ["alerts", "model", "selfmetrics", "store"]
    );
}
