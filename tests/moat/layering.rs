//! The architecture as a test: the layers `src/lib.rs` and
//! docs/architecture.md draw are read back from the `use crate::…` lines and
//! `crate::…` paths of every file in `src/` (comment lines and `#[cfg(test)]`
//! modules aside), and three rules are checked:
//!
//! 1. a module imports only from its own layer or the layers below it;
//! 2. no capability imports another capability;
//! 3. no import cycle between the top-level modules of `src/` (petgraph's
//!    strongly connected components: any with more than one module is a cycle).
//!
//! Every top-level module must be placed in a layer, so a new one cannot
//! slip past the rules. `cargo test --test moat layering` is the command
//! docs/architecture.md names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use petgraph::graph::DiGraph;
use regex::Regex;
use walkdir::WalkDir;

/// Top to bottom. A module may import from its own layer (except
/// capabilities, which never import each other) and from every layer below.
const LAYERS: &[(&str, &[&str])] = &[
    ("app", &["app", "cli", "admin_cli", "dev"]),
    ("process", &["runner"]),
    ("capability", &["admin", "auth", "files", "health", "integrations", "maintenance", "runs", "users", "web"]),
    ("toolkit", &["audit", "http", "identity", "limits", "metrics", "os", "sanitize", "telemetry"]),
    ("foundation", &["config", "crypto", "db", "devmode", "egress", "ids", "problem", "tls"]),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, modules)| modules.contains(&module))
}

/// `(importing module, imported module, file)` for every reference in `files`
/// (path relative to `src/` → source text).
fn edges(files: &BTreeMap<String, String>) -> Vec<(String, String, String)> {
    let path = Regex::new(r"\bcrate::([a-z_][a-z0-9_]*)").unwrap();
    let group = Regex::new(r"\buse\s+crate::\{").unwrap();
    let mut out = Vec::new();
    for (file, text) in files {
        let Some(from) = top_module(file) else { continue };
        let code = code_only(text);
        let mut targets = BTreeSet::new();
        for capture in path.captures_iter(&code) {
            targets.insert(capture[1].to_owned());
        }
        // `use crate::{a, b::c, d::{e, f}}`: the names at the group's first level.
        for found in group.find_iter(&code) {
            targets.extend(first_level_names(&code[found.end()..]));
        }
        for to in targets {
            if to != from && to != "self" {
                out.push((from.clone(), to, file.clone()));
            }
        }
    }
    out
}

/// The top-level module a file belongs to (`runs/ws/hub.rs` → `runs`); none for the crate roots.
fn top_module(file: &str) -> Option<String> {
    let first = file.split('/').next()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

/// The code of a file without its comment lines and its `#[cfg(test)]` module (which ends every file that has one).
fn code_only(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod ").next().unwrap_or(text);
    text.lines().filter(|line| !line.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// The identifiers at depth one of a `{…}` group whose opening brace was just consumed.
fn first_level_names(rest: &str) -> Vec<String> {
    let (mut depth, mut names, mut current, mut at_start) = (1, Vec::new(), String::new(), true);
    for c in rest.chars() {
        let ident = c.is_ascii_alphanumeric() || c == '_';
        if depth == 1 && at_start && ident {
            current.push(c);
            continue;
        }
        if !current.is_empty() {
            names.push(std::mem::take(&mut current));
            at_start = false;
        }
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => at_start = true,
            _ => {}
        }
    }
    names
}

/// Every broken rule, one line each.
fn violations(files: &BTreeMap<String, String>) -> Vec<String> {
    let mut found = BTreeSet::new();
    let modules: BTreeSet<String> = files.keys().filter_map(|f| top_module(f)).collect();
    for module in &modules {
        if layer_of(module).is_none() {
            found.insert(format!(
                "{module}: not placed in any layer (add it to LAYERS, src/lib.rs and docs/architecture.md)"
            ));
        }
    }
    let edges = edges(files);
    for (from, to, file) in &edges {
        let (Some(a), Some(b)) = (layer_of(from), layer_of(to)) else { continue };
        if b < a {
            found.insert(format!("{file}: {from} ({}) imports {to} ({}), a higher layer", LAYERS[a].0, LAYERS[b].0));
        } else if a == b && LAYERS[a].0 == "capability" {
            found.insert(format!("{file}: capability {from} imports capability {to}"));
        }
    }
    let mut graph = DiGraph::<&str, ()>::new();
    let nodes: BTreeMap<&str, _> = modules.iter().map(|m| (m.as_str(), graph.add_node(m.as_str()))).collect();
    for (from, to, _) in &edges {
        if let (Some(&a), Some(&b)) = (nodes.get(from.as_str()), nodes.get(to.as_str())) {
            graph.update_edge(a, b, ());
        }
    }
    for component in petgraph::algo::tarjan_scc(&graph) {
        if component.len() > 1 {
            let mut names: Vec<&str> = component.iter().map(|&n| graph[n]).collect();
            names.sort_unstable();
            found.insert(format!("import cycle between {}", names.join(", ")));
        }
    }
    found.into_iter().collect()
}

fn source_files() -> BTreeMap<String, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    WalkDir::new(&src)
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.path().extension().is_some_and(|x| x == "rs"))
        .map(|e| {
            let relative = e.path().strip_prefix(&src).unwrap().to_string_lossy().replace('\\', "/");
            (relative, std::fs::read_to_string(e.path()).unwrap())
        })
        .collect()
}

#[test]
fn the_source_follows_the_layers() {
    let found = violations(&source_files());
    assert!(found.is_empty(), "the layering rules are broken:\n{}", found.join("\n"));
}

#[test]
fn each_rule_fails_on_a_planted_violation() {
    let clean = source_files();
    let planted = |file: &str, line: &str| {
        let mut files = clean.clone();
        let text = files.get(file).cloned().unwrap_or_default();
        files.insert(file.to_owned(), format!("{line}\n{text}"));
        violations(&files)
    };
    // A toolkit reaching up for the application state.
    let up = planted("http/routes.rs", "use crate::app::AppState;");
    assert!(up.iter().any(|v| v.contains("http (toolkit) imports app (app)")), "{up:?}");
    // A foundation naming a capability, inside a group import.
    let grouped = planted("db/tenant.rs", "use crate::{config, runs::RunsState};");
    assert!(grouped.iter().any(|v| v.contains("db (foundation) imports runs (capability)")), "{grouped:?}");
    // Two capabilities.
    let sideways = planted("files/mod.rs", "fn f() { let _ = crate::users::STATEMENTS; }");
    assert!(sideways.iter().any(|v| v.contains("capability files imports capability users")), "{sideways:?}");
    // A cycle inside one layer.
    let cycle = planted("problem.rs", "use crate::config::Vars;");
    assert!(cycle.iter().any(|v| v.starts_with("import cycle between") && v.contains("problem")), "{cycle:?}");
    // A module nobody placed.
    let mut files = clean.clone();
    files.insert("shortcut.rs".into(), "pub fn f() {}\n".into());
    assert!(violations(&files).iter().any(|v| v.starts_with("shortcut: not placed")));
    // Comments and test modules are not imports.
    let mut files = clean.clone();
    if let Some(text) = files.get_mut("db/tenant.rs") {
        text.push_str("// see crate::app::AppState\n#[cfg(test)]\nmod t { use crate::app::AppState; }\n");
    }
    let commented = violations(&files);
    assert!(commented.is_empty(), "{commented:?}");
}

/// `src/lib.rs`'s layout table and docs/architecture.md show the same layers as [`LAYERS`].
#[test]
fn the_layout_table_and_the_architecture_document_show_these_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    let row = Regex::new(r"^//! \|\s*([a-z]*)\s*\|\s*\[?`([a-z_]+)`").unwrap();
    let (mut layer, mut table) = (String::new(), BTreeMap::new());
    for line in lib.lines() {
        if let Some(c) = row.captures(line) {
            if !c[1].is_empty() {
                layer = c[1].to_owned();
            }
            table.insert(c[2].to_owned(), layer.clone());
        }
    }
    let expected: BTreeMap<String, String> = LAYERS
        .iter()
        .flat_map(|(layer, modules)| modules.iter().map(|m| ((*m).to_owned(), (*layer).to_owned())))
        .collect();
    assert_eq!(table, expected, "src/lib.rs's layout table and LAYERS disagree");
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let order: Vec<&str> = LAYERS.iter().map(|(layer, _)| *layer).collect();
    assert!(doc.contains(&order.join(" → ")), "docs/architecture.md must draw the layers `{}`", order.join(" → "));
    for (layer, modules) in LAYERS {
        let listed = format!("**{layer}**");
        let line = doc
            .lines()
            .find(|l| l.contains(&listed))
            .unwrap_or_else(|| panic!("{listed} missing from docs/architecture.md"));
        for module in *modules {
            assert!(line.contains(&format!("`{module}`")), "docs/architecture.md's {listed} line must list `{module}`");
        }
    }
}
