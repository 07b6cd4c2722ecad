//! The source tree's shape, checked: each top-level module imports only the layers below it
//! (the data path bbq → prompt → engine → store → study → analysis → the front ends), and
//! code for a particular GPU stays in the engine, so a build for another device (Metal)
//! cannot break through code outside it.

use std::path::{Path, PathBuf};

/// The top-level modules, lowest first. A module may use only those before it.
const LAYERS: &[&str] = &[
    "error", "vocab", "rules", "bbq", "prompt", "engine", "store", "study", "analysis", "bench",
    "tui", "cli",
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every source file with its top-level module (`None` for lib.rs and main.rs).
fn files() -> Vec<(PathBuf, Option<String>)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    sources(&src, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&src).expect("under src").to_path_buf();
            let first = rel.components().next().map(|c| {
                c.as_os_str()
                    .to_string_lossy()
                    .trim_end_matches(".rs")
                    .to_string()
            });
            let top = first.filter(|m| m != "lib" && m != "main");
            (p, top)
        })
        .collect()
}

/// The modules a line names as `crate::NAME`.
fn crate_paths(line: &str) -> Vec<&str> {
    line.match_indices("crate::")
        .map(|(i, _)| {
            let rest = &line[i + "crate::".len()..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

#[test]
fn every_module_is_a_known_layer() {
    for (path, top) in files() {
        if let Some(top) = top {
            assert!(
                LAYERS.contains(&top.as_str()),
                "{} belongs to `{top}`, which tests/layers.rs does not place",
                path.display()
            );
        }
    }
}

#[test]
fn no_module_imports_a_layer_above_it() {
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
    let mut wrong = Vec::new();
    for (path, top) in files() {
        let Some(top) = top else { continue };
        let own = rank(&top).expect("placed");
        let text = std::fs::read_to_string(&path).expect("read");
        for (n, line) in text.lines().enumerate() {
            for used in crate_paths(line) {
                if let Some(r) = rank(used)
                    && r > own
                {
                    wrong.push(format!(
                        "{}:{}: `{top}` uses `{used}`, a layer above it",
                        path.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn gpu_specific_code_stays_in_the_engine() {
    const MARKS: [&str; 4] = [
        "feature = \"cuda\"",
        "feature = \"metal\"",
        "cudarc",
        "cuda_backend",
    ];
    let mut outside = Vec::new();
    for (path, top) in files() {
        if top.as_deref() == Some("engine") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        // Comments may name the GPU libraries (error texts recognised from them); code may not.
        let code = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim_start().starts_with("//"));
        for (n, line) in code {
            if let Some(mark) = MARKS.iter().find(|m| line.contains(*m)) {
                outside.push(format!("{}:{}: {mark}", path.display(), n + 1));
            }
        }
    }
    assert!(outside.is_empty(), "{}", outside.join("\n"));
}

#[test]
fn the_checks_see_what_they_look_for() {
    // The scanners themselves, on lines like the ones they guard against.
    assert_eq!(
        crate_paths("use crate::tui::App; let x = crate::engine::quant::build;"),
        vec!["tui", "engine"]
    );
    assert!(
        files()
            .iter()
            .any(|(p, top)| top.as_deref() == Some("engine")
                && std::fs::read_to_string(p).is_ok_and(|t| t.contains("feature = \"cuda\"")))
    );
}
