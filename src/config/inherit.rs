//! Settings a certificate sets or inherits from `defaults`: key, validation and
//! reload hooks, checked the same way in both places.

use std::collections::BTreeMap;

use serde_saphyr::Spanned;

use super::problems::Problems;
use super::raw::{RawHook, RawKey, RawValidation};
use super::{KeySpec, ValidationConfig, ValidationMethod};

/// A key setting: what `raw` says, the rest from `inherited`.
pub(super) fn key_spec(raw: Option<&RawKey>, inherited: &KeySpec) -> KeySpec {
    KeySpec {
        algorithm: raw.and_then(|k| k.algorithm).unwrap_or(inherited.algorithm),
        reuse: raw.and_then(|k| k.reuse).unwrap_or(inherited.reuse),
    }
}

/// A validation setting; `inherited` when `raw` gives none.
pub(super) fn validation_config(
    raw: Option<&Spanned<RawValidation>>,
    inherited: &ValidationConfig,
    key: &str,
    p: &mut Problems<'_>,
) -> ValidationConfig {
    let Some(v) = raw else {
        return inherited.clone();
    };
    if v.value.method == ValidationMethod::File && v.value.webroot.is_none() {
        p.at(
            v.referenced,
            format!("{key}.webroot"),
            "validation method `file` needs `webroot`: the directory the web server serves for this domain",
        );
    }
    ValidationConfig {
        method: v.value.method,
        webroot: v.value.webroot.as_ref().map(|w| w.0.clone()),
    }
}

/// The hooks `refs` names, each once; a name not under `hooks` is a problem.
pub(super) fn check_hook_refs(
    refs: &[Spanned<String>],
    hooks: &BTreeMap<String, RawHook>,
    key: &str,
    p: &mut Problems<'_>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (i, r) in refs.iter().enumerate() {
        if !hooks.contains_key(&r.value) {
            let known: Vec<&str> = hooks.keys().map(String::as_str).collect();
            p.at(
                r.referenced,
                format!("{key}[{i}]"),
                format!(
                    "reload names hook {:?}, which is not defined under `hooks` (defined: {})",
                    r.value,
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
        if !out.contains(&r.value) {
            out.push(r.value.clone());
        }
    }
    out
}
