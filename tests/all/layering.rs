//! The host's layers stay layers: no import circle between its top-level modules, and only
//! the lifecycle modules read the config model.
//!
//! A plain scan of `crate::` paths in `host/src` (test code excluded: a test may build whatever
//! it checks). Each top-level module (`routing`, `proxy/`, `config/`...) is a node; a path
//! `crate::x` written in module `m` is an edge `m → x`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The modules that may import `config`: they load, reload and hold it (README, Architecture).
const CONFIG_READERS: [&str; 5] = ["config", "main", "gateway", "reload", "state"];

/// Where each edge was seen, for the failure message: `(from, to) → "file:line"`.
type Edges = BTreeMap<(String, String), String>;

#[test]
fn host_modules_form_no_import_circle() {
    let edges = host_edges();
    let circles = circles(&edges);
    assert!(
        circles.is_empty(),
        "import circles between host modules (each module must only use modules below it):\n{}",
        circles
            .iter()
            .map(|circle| describe(circle, &edges))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn only_the_lifecycle_imports_config() {
    let offenders: Vec<String> = host_edges()
        .into_iter()
        .filter(|((from, to), _)| to == "config" && !CONFIG_READERS.contains(&from.as_str()))
        .map(|((from, _), at)| format!("  {from} imports config at {at}"))
        .collect();
    assert!(
        offenders.is_empty(),
        "config sits on top: a module owns its policy types and config/ converts into them; \
         only {CONFIG_READERS:?} may import it:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_scan_sees_grouped_and_inline_paths() {
    let found = crate_paths(
        "use crate::{proxy::body, upstream::{self, X}};\nlet x = crate::routing::find();\n",
    );
    assert_eq!(found, ["proxy", "upstream", "routing"]);
}

fn host_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `crate::` edge between top-level modules, with one place it was seen.
fn host_edges() -> Edges {
    let src = host_src();
    let mut edges = Edges::new();
    for file in rust_files(&src) {
        let relative = file.strip_prefix(&src).expect("under src");
        if relative.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let from = top_module(relative);
        let text = std::fs::read_to_string(&file).expect("read source");
        for (index, line) in non_test_code(&text).lines().enumerate() {
            for to in crate_paths(line) {
                if to != from {
                    edges
                        .entry((from.clone(), to))
                        .or_insert_with(|| format!("{}:{}", relative.display(), index + 1));
                }
            }
        }
    }
    edges
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// `routing/mod.rs` → `routing`, `error.rs` → `error`.
fn top_module(relative: &Path) -> String {
    let first = relative
        .components()
        .next()
        .expect("a file path")
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

/// The file up to its first `#[cfg(test)]` (unit tests sit at the bottom, STYLE.md).
fn non_test_code(text: &str) -> &str {
    match text.find("#[cfg(test)]") {
        Some(at) => &text[..at],
        None => text,
    }
}

/// The top-level modules named by `crate::` paths in one line of code, in order.
fn crate_paths(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a::b, c}`: the first identifier of each item at the group's top level.
            let mut depth = 0;
            let mut item_start = true;
            for (i, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        rest = &group[i..];
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_alphanumeric() || c == '_') => {
                        found.push(identifier(&group[i..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = identifier(rest);
            if !name.is_empty() {
                found.push(name);
            }
        }
    }
    found
}

fn identifier(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Strongly connected components with more than one module (Tarjan's algorithm).
fn circles(edges: &Edges) -> Vec<Vec<String>> {
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        graph.entry(from).or_default().insert(to);
        graph.entry(to).or_default();
    }
    struct Tarjan<'a> {
        graph: &'a BTreeMap<&'a str, BTreeSet<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, node: &'a str) {
            let n = self.index.len();
            self.index.insert(node, n);
            self.low.insert(node, n);
            self.stack.push(node);
            self.on_stack.insert(node);
            for &next in &self.graph[node] {
                if !self.index.contains_key(next) {
                    self.visit(next);
                    let low = self.low[node].min(self.low[next]);
                    self.low.insert(node, low);
                } else if self.on_stack.contains(next) {
                    let low = self.low[node].min(self.index[next]);
                    self.low.insert(node, low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut component = Vec::new();
                while let Some(top) = self.stack.pop() {
                    self.on_stack.remove(top);
                    component.push(top.to_owned());
                    if top == node {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut tarjan = Tarjan {
        graph: &graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for &node in graph.keys() {
        if !tarjan.index.contains_key(node) {
            tarjan.visit(node);
        }
    }
    tarjan.found
}

/// One circle's modules and the imports inside it.
fn describe(circle: &[String], edges: &Edges) -> String {
    let inside: Vec<String> = edges
        .iter()
        .filter(|((from, to), _)| circle.contains(from) && circle.contains(to))
        .map(|((from, to), at)| format!("    {from} → {to} ({at})"))
        .collect();
    format!("  {}:\n{}", circle.join(", "), inside.join("\n"))
}
