//! The module graph of `src/`, read from the code itself (`crate::…` and `super::…` paths outside
//! `#[cfg(test)]` sections): no module may depend on itself through others (no circles), and the
//! folders depend only downward in the layer order of docs/architecture.md, with no known
//! exception (`KNOWN_UPWARD` is empty).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Folders (and top-level files) from the top layer down.
const LAYERS: [&str; 13] =
    ["cli", "report", "bench", "train", "eval", "infer", "store", "step", "parallel", "model", "backend", "data", "util"];

/// Upward arrows that exist today (from, to). None: a new one fails this test.
const KNOWN_UPWARD: [(&str, &str); 0] = [];

/// Module path (`store::config`) -> source text without its test sections.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, root, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(root).unwrap().with_extension("");
                let parts: Vec<_> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
                let mut name = parts.join("::");
                if let Some(parent) = name.strip_suffix("::mod") {
                    name = parent.to_string();
                }
                out.insert(name, without_test_items(&std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    walk(&root, &root, &mut out);
    out.remove("main");
    out.remove("lib");
    out
}

/// `code` without each item marked `#[cfg(test)]` (a `mod tests { … }`, a test helper): from the
/// attribute to the item's `;`, or to the `}` that closes its first `{`.
fn without_test_items(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at..];
        let end = match (item.find('{'), item.find(';')) {
            (Some(open), semi) if semi.is_none_or(|s| open < s) => {
                let mut depth = 0;
                item[open..].char_indices().find_map(|(i, c)| {
                    depth += (c == '{') as i32 - (c == '}') as i32;
                    (depth == 0).then_some(open + i + 1)
                })
            }
            (_, Some(semi)) => Some(semi + 1),
            _ => None,
        };
        rest = &item[end.unwrap_or(item.len())..];
    }
    out.push_str(rest);
    out
}

/// The longest known module that `path` (a `::`-separated path) starts with.
fn owner<'a>(path: &str, known: &'a BTreeMap<String, String>) -> Option<&'a String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len()).rev().find_map(|k| known.get_key_value(&parts[..k].join("::")).map(|(k, _)| k))
}

/// Paths after `prefix` in `code`: `crate::a::b::C` gives `a::b::C`, and a group
/// `crate::a::{b, c::D, self}` gives `a::b`, `a::c::D` and `a` (nested groups by their head).
fn paths_after(code: &str, prefix: &str) -> Vec<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = Vec::new();
    for (i, _) in code.match_indices(prefix) {
        if i > 0 && (ident(code.as_bytes()[i - 1] as char)) {
            continue;
        }
        let rest = &code[i + prefix.len()..];
        let end = rest.find(|c: char| !(ident(c) || c == ':')).unwrap_or(rest.len());
        let base = rest[..end].trim_end_matches(':');
        if rest[end..].starts_with('{') {
            // The group up to its matching `}`, split at its top-level commas.
            let group = &rest[end + 1..];
            let (mut depth, mut items, mut from) = (0, Vec::new(), 0);
            for (k, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        items.push(&group[from..k]);
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        items.push(&group[from..k]);
                        from = k + 1;
                    }
                    _ => {}
                }
            }
            for item in items.into_iter().map(str::trim).filter(|s| !s.is_empty()) {
                let head = item.split(|c: char| !(ident(c) || c == ':')).next().unwrap_or("").trim_end_matches(':');
                out.push(match (base.is_empty(), head) {
                    (_, "self") => base.to_string(),
                    (true, h) => h.to_string(),
                    (false, h) => format!("{base}::{h}"),
                });
            }
        } else {
            out.push(base.to_string());
        }
    }
    out.retain(|p| !p.is_empty());
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, code) in &mods {
        let parent = m.rsplit_once("::").map_or("", |(p, _)| p);
        let mut targets: Vec<String> = paths_after(code, "crate::");
        targets.extend(
            paths_after(code, "super::")
                .into_iter()
                .filter(|p| !p.starts_with("super"))
                .map(|p| if parent.is_empty() { p.to_string() } else { format!("{parent}::{p}") }),
        );
        for t in targets {
            if let Some(o) = owner(&t, &mods)
                && o != m
                && !m.starts_with(&format!("{o}::"))
            {
                edges.entry(m.clone()).or_default().insert(o.clone());
            }
        }
    }
    edges
}

/// A circle through `start`, if there is one (depth-first search).
fn circle_from(start: &str, edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn go(at: &str, start: &str, edges: &BTreeMap<String, BTreeSet<String>>, path: &mut Vec<String>, seen: &mut BTreeSet<String>) -> bool {
        for next in edges.get(at).into_iter().flatten() {
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if go(next, start, edges, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    go(start, start, edges, &mut path, &mut BTreeSet::new()).then(|| {
        path.push(start.to_string());
        path
    })
}

#[test]
fn no_module_depends_on_itself_through_others() {
    let edges = graph();
    assert!(edges.len() > 30, "the scan found only {} modules with dependencies", edges.len());
    let circles: Vec<String> = edges.keys().filter_map(|m| circle_from(m, &edges)).map(|c| c.join(" -> ")).collect();
    assert!(circles.is_empty(), "circles between modules:\n{}", circles.join("\n"));
}

#[test]
fn folders_depend_only_downward() {
    let layer = |m: &str| {
        let top = m.split("::").next().unwrap();
        LAYERS.iter().position(|l| *l == top).unwrap_or_else(|| panic!("module {m}: folder `{top}` is not in LAYERS"))
    };
    let mut upward = BTreeSet::new();
    for (from, tos) in graph() {
        for to in tos {
            let (a, b) = (from.split("::").next().unwrap().to_string(), to.split("::").next().unwrap().to_string());
            if layer(&from) > layer(&to) {
                upward.insert((a, b, format!("{from} -> {to}")));
            }
        }
    }
    let unknown: Vec<&String> =
        upward.iter().filter(|(a, b, _)| !KNOWN_UPWARD.iter().any(|(x, y)| x == a && y == b)).map(|(_, _, e)| e).collect();
    assert!(unknown.is_empty(), "upward imports (a lower layer reaching up):\n{unknown:#?}");
    for (x, y) in KNOWN_UPWARD {
        assert!(upward.iter().any(|(a, b, _)| a == x && b == y), "{x} -> {y} is gone: remove it from KNOWN_UPWARD");
    }
}

/// The scanner reads grouped imports and drops only the test items.
#[test]
fn the_scanner_reads_groups_and_skips_only_test_items() {
    let code = "use crate::store::{config, presets::{Preset, Other}, self};\nuse super::{a::B, c};\n#[cfg(test)]\nfn helper() { crate::x::y(); }\nuse crate::z::W;\n#[cfg(test)]\nmod tests { fn f() { if true { crate::t::u(); } } }\nfn g() { crate::after::tests(); }\n";
    assert_eq!(paths_after(code, "crate::"), ["store::config", "store::presets", "store", "x::y", "z::W", "t::u", "after::tests"]);
    assert_eq!(paths_after(code, "super::"), ["a::B", "c"]);
    let kept = without_test_items(code);
    assert_eq!(paths_after(&kept, "crate::"), ["store::config", "store::presets", "store", "z::W", "after::tests"]);
}

/// The scan itself finds a circle when there is one.
#[test]
fn the_scan_sees_a_planted_circle() {
    let mut edges = graph();
    edges.entry("util::fs".into()).or_default().insert("cli::export".into());
    let c = circle_from("util::fs", &edges).expect("util::fs -> cli::export -> util::fs");
    assert_eq!(c.first(), c.last());
}
