//! Validation of the `certificates` list: each entry alone, and what entries may
//! not share (names, output directories).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_saphyr::{Location, Spanned};

use super::inherit::{check_hook_refs, key_spec, validation_config};
use super::problems::Problems;
use super::raw::{RawCertificate, RawHook, RawOutput, RawVerify};
use super::values::is_valid_name;
use super::{
    CertificateConfig, CertificateDefaults, DEFAULT_OUTPUT_ROOT, OutputConfig, ValidationMethod,
    VerifyConfig,
};

/// What the certificates before this one took: names and output directories
/// (with the certificate and the line that took each first).
#[derive(Default)]
struct Seen {
    names: HashMap<String, Location>,
    dirs: HashMap<PathBuf, (String, Location)>,
}

/// What every certificate is checked against besides its own entry.
struct Context<'a> {
    hooks: &'a BTreeMap<String, RawHook>,
    defaults: &'a CertificateDefaults,
    /// The directory whose `passwd` and `group` must list owners and groups.
    accounts: Option<&'a Path>,
}

pub(super) fn certificates(
    raw: Option<&Spanned<Vec<RawCertificate>>>,
    hooks: &BTreeMap<String, RawHook>,
    defaults: &CertificateDefaults,
    accounts: Option<&Path>,
    p: &mut Problems<'_>,
) -> Vec<CertificateConfig> {
    let cx = Context {
        hooks,
        defaults,
        accounts,
    };
    let mut seen = Seen::default();
    raw.map(|c| c.value.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, c)| certificate(i, c, &cx, &mut seen, p))
        .collect()
}

fn certificate(
    i: usize,
    c: &RawCertificate,
    cx: &Context<'_>,
    seen: &mut Seen,
    p: &mut Problems<'_>,
) -> CertificateConfig {
    let key = format!("certificates[{i}]");
    let name = &c.name.value;
    let duplicate_name = name_unique(&key, &c.name, seen, p);
    let domain = c.domain.value.trim().to_ascii_lowercase();
    // The same check as for a domain CAS reports (`discover`).
    if let Err(e) = crate::domain::Domain::parse(&domain) {
        p.at(
            c.domain.referenced,
            format!("{key}.domain"),
            format!(
                "\"{}\" is not a valid domain name: it {e}",
                crate::domain::Escaped(&c.domain.value)
            ),
        );
    }
    let dir = output_dir(&key, c, duplicate_name, seen, p);
    if let Some(v) = &c.verify {
        verify_connect(&key, v, p);
    }
    let validation = validation_config(
        c.validation.as_ref(),
        &cx.defaults.validation,
        &format!("{key}.validation"),
        p,
    );
    if validation.method == ValidationMethod::File && domain.starts_with("*.") {
        p.at(
            c.domain.referenced,
            format!("{key}.validation.method"),
            "wildcard domains can only be validated by DNS (CAS refuses FILE validation for them)",
        );
    }
    if let Some(etc) = cx.accounts {
        accounts_exist(&key, &c.output, etc, p);
    }
    CertificateConfig {
        name: name.clone(),
        domain,
        output: output(dir, &c.output),
        key: key_spec(c.key.as_ref(), &cx.defaults.key),
        validation,
        reload: match &c.reload {
            Some(r) => check_hook_refs(r, cx.hooks, &format!("{key}.reload"), p),
            None => cx.defaults.reload.clone(),
        },
        verify: c.verify.as_ref().map(|v| VerifyConfig {
            connect: v.connect.value.clone(),
            server_name: v.server_name.clone(),
        }),
        mode: c
            .renewal
            .as_ref()
            .and_then(|r| r.mode)
            .unwrap_or(cx.defaults.mode),
    }
}

/// Checks the name's form and that no earlier certificate has it; true when one has.
fn name_unique(key: &str, name: &Spanned<String>, seen: &mut Seen, p: &mut Problems<'_>) -> bool {
    let value = &name.value;
    if !is_valid_name(value) {
        p.at(
            name.referenced,
            format!("{key}.name"),
            format!("name {value:?} must match [a-z0-9_-]+ (at most 64 characters)"),
        );
    }
    if let Some(first) = seen.names.get(value) {
        p.at(
            name.referenced,
            format!("{key}.name"),
            format!(
                "duplicate certificate name {value:?} (first used at line {})",
                first.line()
            ),
        );
        true
    } else {
        seen.names.insert(value.clone(), name.referenced);
        false
    }
}

/// The certificate's output directory, which no earlier certificate may use.
fn output_dir(
    key: &str,
    c: &RawCertificate,
    duplicate_name: bool,
    seen: &mut Seen,
    p: &mut Problems<'_>,
) -> PathBuf {
    let name = &c.name.value;
    let (dir, dir_loc) = match &c.output.dir {
        Some(d) => (d.value.0.clone(), d.referenced),
        None => (Path::new(DEFAULT_OUTPUT_ROOT).join(name), c.name.referenced),
    };
    // A duplicate name already explains a clash of the directories derived from it.
    let derived_clash = duplicate_name && c.output.dir.is_none();
    if let Some((other, first)) = seen.dirs.get(&dir).filter(|_| !derived_clash) {
        p.at(
            dir_loc,
            format!("{key}.output.dir"),
            format!(
                "output directory {} is also used by certificate {other:?} (line {}); each certificate needs its own",
                dir.display(),
                first.line()
            ),
        );
    } else {
        seen.dirs.insert(dir.clone(), (name.clone(), dir_loc));
    }
    dir
}

/// `verify.connect` must be `address:port` or `host:port`.
fn verify_connect(key: &str, v: &RawVerify, p: &mut Problems<'_>) {
    let connect = &v.connect.value;
    let host_port = connect
        .rsplit_once(':')
        .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok_and(|n| n > 0));
    if connect.parse::<SocketAddr>().is_err() && !host_port {
        p.at(
            v.connect.referenced,
            format!("{key}.verify.connect"),
            format!("{connect:?} is not host:port (e.g. \"127.0.0.1:443\")"),
        );
    }
}

/// Every `output.owner` and `output.group` must exist on this host (`etc`).
fn accounts_exist(key: &str, out: &RawOutput, etc: &Path, p: &mut Problems<'_>) {
    for (field, value, kind) in [
        ("owner", &out.owner, crate::accounts::Kind::User),
        ("group", &out.group, crate::accounts::Kind::Group),
    ] {
        if let Some(v) = value
            && let Err(e) = crate::accounts::lookup_in(etc, &v.value, kind)
        {
            p.at(v.referenced, format!("{key}.output.{field}"), e.to_string());
        }
    }
}

/// The output settings: what the entry says, the rest [`OutputConfig::default`].
fn output(dir: PathBuf, raw: &RawOutput) -> OutputConfig {
    let default = OutputConfig::default();
    OutputConfig {
        dir,
        owner: raw.owner.as_ref().map(|o| o.value.clone()),
        group: raw.group.as_ref().map(|g| g.value.clone()),
        key_mode: raw.key_mode.map_or(default.key_mode, |m| m.0),
        cert_mode: raw.cert_mode.map_or(default.cert_mode, |m| m.0),
        keep: raw.keep.unwrap_or(default.keep),
        allow_insecure_dir: raw.allow_insecure_dir.unwrap_or(default.allow_insecure_dir),
    }
}
