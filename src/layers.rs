//! Holds the code to the layering its module headers document: every top-level module says in
//! its `//!` header what it "May call:" (backticked module names, or "nothing"), and this test
//! reads every `crate::…` path in the module's files (tests excluded) and fails on a module it
//! does not list. [`LEAVES`] may be called from anywhere. The modules' actual imports must also
//! form no cycle, so the layers can be read bottom-up.
//!
//! May call: nothing (it reads the sources as text).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// Modules anyone may call: they call nothing back (metrics sinks, date arithmetic).
const LEAVES: [&str; 3] = ["metrics", "calendar", "scalar"];

/// The library's top-level modules (as `lib.rs` declares them) and their files.
fn modules(src: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let lib = fs::read_to_string(src.join("lib.rs")).unwrap();
    let declared: BTreeSet<&str> = lib
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix("pub mod ")
                .or_else(|| l.strip_prefix("mod "))?
                .strip_suffix(';')
        })
        .collect();
    let mut modules = BTreeMap::new();
    for entry in fs::read_dir(src).unwrap().flatten() {
        let path = entry.path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if !declared.contains(name.as_str()) {
            continue;
        }
        if path.is_dir() {
            let mut files = Vec::new();
            collect(&path, &mut files);
            modules.insert(name, files);
        } else if path.extension().is_some_and(|e| e == "rs") && name != "main" && name != "lib" {
            let mut files = vec![path.clone()];
            // `src/x.rs` with submodules in `src/x/`.
            collect(&src.join(&name), &mut files);
            modules.entry(name).or_insert_with(Vec::new).extend(files);
        }
    }
    modules
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The module's root file: `x/mod.rs` or `x.rs`.
fn root(src: &Path, module: &str) -> PathBuf {
    let nested = src.join(module).join("mod.rs");
    if nested.exists() {
        nested
    } else {
        src.join(format!("{module}.rs"))
    }
}

/// What the header's "May call:" names; `None` when it has no such line.
fn allowed(header: &str) -> Option<BTreeSet<String>> {
    let start = header.find("May call:")? + "May call:".len();
    let rest = &header[start..];
    // The clause runs to the end of its paragraph.
    let clause = rest.split("\n\n").next().unwrap_or(rest);
    let mut names = BTreeSet::new();
    for quoted in clause.split('`').skip(1).step_by(2) {
        let first = quoted.split("::").next().unwrap_or(quoted);
        if first.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            names.insert(first.to_string());
        }
    }
    Some(names)
}

fn header(text: &str) -> String {
    text.lines()
        .take_while(|l| l.starts_with("//!"))
        .map(|l| l.trim_start_matches("//!").trim())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The source without its test module (by convention the file's last item) and comments.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .filter(|l| {
            let l = l.trim_start();
            !l.starts_with("//")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules `crate::…` paths in `code` name.
fn used(code: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let bytes = code.as_bytes();
    let mut from = 0;
    while let Some(at) = code[from..].find("crate::") {
        let start = from + at + "crate::".len();
        from = start;
        if bytes.get(start) == Some(&b'{') {
            // `crate::{a, b::c, d::{e, f}}`: the first name of each top-level item.
            let mut depth = 0;
            let mut item_start = true;
            let mut name = String::new();
            for &b in &bytes[start..] {
                match b {
                    b'{' => {
                        depth += 1;
                        if depth > 1 {
                            item_start = false;
                        }
                    }
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    b',' if depth == 1 => {
                        if !name.is_empty() {
                            used.insert(std::mem::take(&mut name));
                        }
                        item_start = true;
                    }
                    c if depth == 1 && item_start => {
                        if c.is_ascii_alphanumeric() || c == b'_' {
                            name.push(c as char);
                        } else if !name.is_empty() {
                            used.insert(std::mem::take(&mut name));
                            item_start = false;
                        }
                    }
                    _ => {}
                }
            }
            if !name.is_empty() {
                used.insert(name);
            }
        } else {
            let name: String = code[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                used.insert(name);
            }
        }
    }
    used
}

/// Every module's actual uses of other modules.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules(src);
    modules
        .iter()
        .map(|(module, files)| {
            let mut uses = BTreeSet::new();
            for file in files {
                uses.extend(used(&code(&fs::read_to_string(file).unwrap())));
            }
            uses.retain(|u| u != module && modules.contains_key(u));
            (module.clone(), uses)
        })
        .collect()
}

/// A cycle through `start`, if any, as the path that closes it.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_string());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn every_module_calls_only_what_its_header_allows() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = graph(&src);
    let mut problems = Vec::new();
    for (module, uses) in &graph {
        let text = fs::read_to_string(root(&src, module)).unwrap();
        let Some(allowed) = allowed(&header(&text)) else {
            problems.push(format!("{module}: its header has no \"May call:\" line"));
            continue;
        };
        for used in uses {
            if !allowed.contains(used) && !LEAVES.contains(&used.as_str()) {
                problems.push(format!(
                    "{module} calls `{used}`, which its header does not allow ({allowed:?})"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_layers_have_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = graph(&src);
    assert_eq!(cycle(&graph), None, "{graph:#?}");
}

#[test]
fn paths_are_read_as_the_compiler_reads_them() {
    let code = "use crate::{a, b::c, d::{e, f}};\nfn x() { crate::g::h(); }";
    let names: Vec<String> = used(code).into_iter().collect();
    assert_eq!(names, ["a", "b", "d", "g"]);
    assert_eq!(
        allowed("Owns: x.\nMay call: `index` (model types), `sources::git`.\n\nMore."),
        Some(BTreeSet::from(["index".to_string(), "sources".to_string()]))
    );
    assert_eq!(allowed("May call: nothing."), Some(BTreeSet::new()));
    let graph = BTreeMap::from([
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["a".to_string()])),
    ]);
    assert_eq!(
        cycle(&graph),
        Some(vec!["a".into(), "b".into(), "a".into()])
    );
}
