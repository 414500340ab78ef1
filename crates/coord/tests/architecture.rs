//! The architecture's invariants that are about the source itself
//! (ARCHITECTURE.md, "Invariants"), checked over the whole workspace:
//!
//! * no import circle between the top-level modules of any crate;
//! * no source file over 800 lines;
//! * no `thread_local!` and no process-wide `static` in the daemon or
//!   the engine (two daemons in one process share nothing);
//! * the engine imports no HTTP stack and no socket type; the state
//!   machine no runtime and no store; the crates depend on each other one
//!   way, as ARCHITECTURE.md draws them.
//!
//! A file is read as text: comment lines are skipped, so a doc link to
//! another module is not an import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every crate of the workspace: its directory name and path.
fn crates() -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(workspace().join("crates"))
        .expect("crates/")
        .flatten()
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    v.sort();
    v
}

/// The code of a file without its comment lines.
fn code(path: &Path) -> String {
    std::fs::read_to_string(path)
        .expect("read source")
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The names `crate::NAME` mentions in `text`.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `coord_crate::…` and the like
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

/// The import graph between a crate's top-level modules: module → the
/// modules its files name through `crate::`.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let top = |f: &Path| -> Option<String> {
        let rel = f.strip_prefix(src).ok()?;
        let first = rel.components().next()?.as_os_str().to_string_lossy();
        let name = first.trim_end_matches(".rs").to_string();
        (name != "lib" && name != "main").then_some(name)
    };
    let modules: BTreeSet<String> = files.iter().filter_map(|f| top(f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let Some(m) = top(f) else { continue };
        let deps = graph.entry(m.clone()).or_default();
        for d in crate_paths(&code(f)) {
            if d != m && modules.contains(&d) {
                deps.insert(d);
            }
        }
    }
    graph
}

/// The strongly connected components of more than one node (Tarjan's).
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'g> {
        g: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on: BTreeSet<&'g str>,
        out: Vec<Vec<String>>,
    }
    impl<'g> T<'g> {
        fn visit(&mut self, v: &'g str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on.insert(v);
            for w in self.g.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low[v];
                    self.low.insert(v, lv.min(lw));
                } else if self.on.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low[v];
                    self.low.insert(v, lv.min(iw));
                }
            }
            if self.low[v] == self.index[v] {
                let mut scc = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    scc.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if scc.len() > 1 {
                    scc.sort();
                    self.out.push(scc);
                }
            }
        }
    }
    let mut t = T {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out
}

#[test]
fn the_circle_finder_finds_circles() {
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(circles(&g), vec![vec!["a", "b", "c"]]);
    assert_eq!(
        crate_paths("use crate::hub::Hub; x::coord_crate::no; crate::writer"),
        ["hub", "writer"].into_iter().map(String::from).collect()
    );
}

#[test]
fn no_crate_has_an_import_circle_between_its_modules() {
    let mut found = Vec::new();
    for (name, dir) in crates() {
        for c in circles(&module_graph(&dir.join("src"))) {
            found.push(format!("{name}: {}", c.join(" ↔ ")));
        }
    }
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

#[test]
fn no_source_file_is_over_800_lines() {
    let mut files = Vec::new();
    for (_, dir) in crates() {
        rust_files(&dir.join("src"), &mut files);
        rust_files(&dir.join("tests"), &mut files);
    }
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).ok()?.lines().count();
            (n > 800).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over 800 lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_daemon_and_the_engine_keep_no_process_wide_state() {
    let mut bad = Vec::new();
    for krate in ["coord-daemon", "coord-engine"] {
        let mut files = Vec::new();
        rust_files(
            &workspace().join("crates").join(krate).join("src"),
            &mut files,
        );
        for f in files {
            for (i, line) in code(&f).lines().enumerate() {
                let l = line.trim_start();
                let is_static = ["static ", "pub static ", "pub(crate) static "]
                    .iter()
                    .any(|p| l.starts_with(p));
                if l.contains("thread_local!") || is_static {
                    bad.push(format!("{}:{}: {l}", f.display(), i + 1));
                }
            }
        }
    }
    assert!(bad.is_empty(), "process-wide state:\n{}", bad.join("\n"));
}

/// The `[dependencies]` of a crate, by name.
fn dependencies(krate: &str) -> BTreeSet<String> {
    let toml = std::fs::read_to_string(workspace().join("crates").join(krate).join("Cargo.toml"))
        .expect("Cargo.toml");
    let mut in_deps = false;
    let mut out = BTreeSet::new();
    for line in toml.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            in_deps = l == "[dependencies]";
            continue;
        }
        if in_deps {
            if let Some((name, _)) = l.split_once('=') {
                let name = name.trim();
                if !name.is_empty() && !name.starts_with('#') {
                    out.insert(name.to_string());
                }
            }
        }
    }
    out
}

#[test]
fn crates_import_only_what_their_layer_may() {
    let forbidden: &[(&str, &[&str])] = &[
        (
            "coord-engine",
            &[
                "hyper",
                "hyper-util",
                "axum",
                "http-body-util",
                "coord-daemon",
                "coord-client",
            ],
        ),
        (
            "coord-core",
            &["tokio", "coord-store", "coord-engine", "hyper", "axum"],
        ),
        (
            "coord-store",
            &["coord-core", "coord-engine", "hyper", "axum"],
        ),
        (
            "coord-proto",
            &["tokio", "coord-core", "coord-store", "hyper", "axum"],
        ),
    ];
    let mut bad = Vec::new();
    for (krate, never) in forbidden {
        let deps = dependencies(krate);
        for n in *never {
            if deps.contains(*n) {
                bad.push(format!("{krate} depends on {n}"));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    // No socket type in the engine's code either (it gets everything
    // through its handle and its feed).
    let mut files = Vec::new();
    rust_files(&workspace().join("crates/coord-engine/src"), &mut files);
    for f in files {
        let c = code(&f);
        for t in ["UnixStream", "UnixListener", "TcpStream", "TcpListener"] {
            assert!(!c.contains(t), "{} names {t}", f.display());
        }
    }
}
