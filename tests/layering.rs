//! The module layering stays as documented: no import circles, nothing below the
//! top (`config`, `daemon`, the binary) imports `config`, and the layering list at
//! the top of `src/lib.rs` names every library module with exactly the modules it
//! imports, each below the modules it uses. The edges come from
//! `scripts/module_cycles.py --edges`, the same script the README points to.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// Modules that may import `config`: the top of the library, and the binary's own.
const MAY_IMPORT_CONFIG: &[&str] = &[
    "config", "daemon", "main", "demo", "assets", "handoff", "cli", "inspect",
];

/// `module -> the crate modules it imports`, as the script prints them.
fn real_edges(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let out = match Command::new("python3")
        .arg(root.join("scripts/module_cycles.py"))
        .arg("--edges")
        .arg(root.join("src"))
        .output()
    {
        Ok(o) => o,
        Err(e) if std::env::var("CAS_RENEWD_E2E").as_deref() != Ok("1") => {
            eprintln!("skipping: python3 cannot run ({e})");
            return BTreeMap::new();
        }
        Err(e) => panic!("CAS_RENEWD_E2E=1 but python3 cannot run: {e}"),
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && text.ends_with("0 circle(s)\n"),
        "import circles:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut edges = BTreeMap::new();
    for line in text.lines().filter(|l| l.contains(" -> ")) {
        let (from, to) = line.split_once(" -> ").expect("checked above");
        let targets = to
            .split(", ")
            .filter(|t| *t != "-")
            .map(str::to_owned)
            .collect();
        edges.insert(from.to_owned(), targets);
    }
    assert!(edges.contains_key("renew"), "no edges parsed from:\n{text}");
    edges
}

/// The layering list of `lib.rs`, in order: `//! - [`name`] (`a`, `b`): ...`.
fn documented(lib: &str) -> Vec<(String, BTreeSet<String>)> {
    let mut list = Vec::new();
    for line in lib.lines() {
        let Some(rest) = line.strip_prefix("//! - [`") else {
            continue;
        };
        let Some((name, after)) = rest.split_once("`]") else {
            continue;
        };
        let uses = match after.strip_prefix(" (") {
            Some(a) => a
                .split_once(')')
                .map(|(inside, _)| inside)
                .unwrap_or_else(|| panic!("unclosed bracket in lib.rs: {line}"))
                .split(", ")
                .map(|u| u.trim_matches('`').to_owned())
                .collect(),
            None => BTreeSet::new(),
        };
        list.push((name.to_owned(), uses));
    }
    list
}

#[test]
fn no_module_below_the_top_imports_config_and_lib_rs_lists_every_edge() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let edges = real_edges(root);
    if edges.is_empty() {
        return;
    }
    let importers: Vec<&String> = edges
        .iter()
        .filter(|(m, to)| to.contains("config") && !MAY_IMPORT_CONFIG.contains(&m.as_str()))
        .map(|(m, _)| m)
        .collect();
    assert!(
        importers.is_empty(),
        "below the top, these import config: {importers:?}"
    );

    let lib = std::fs::read_to_string(root.join("src/lib.rs")).expect("read src/lib.rs");
    let modules: BTreeSet<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod ")?.strip_suffix(';'))
        .collect();
    let list = documented(&lib);
    let listed: BTreeSet<&str> = list.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(
        listed, modules,
        "lib.rs: the layering list and `pub mod`s differ"
    );
    for (i, (module, uses)) in list.iter().enumerate() {
        let real = edges.get(module).cloned().unwrap_or_default();
        assert_eq!(uses, &real, "lib.rs lists {module} as using {uses:?}");
        let above: BTreeSet<&str> = list[..i].iter().map(|(m, _)| m.as_str()).collect();
        for u in uses {
            assert!(
                above.contains(u.as_str()),
                "lib.rs: {module} uses {u}, which is not above it"
            );
        }
    }
}
