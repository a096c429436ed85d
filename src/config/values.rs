//! Value types with their own checks, so a bad value is reported where it stands:
//! durations, file modes, absolute paths, API endpoints, cron expressions, names.

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// A `humantime` duration such as `30s`, `15m` or `30d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"30s\", \"15m\" or \"30d\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<HumanDuration, E> {
                humantime::parse_duration(s.trim())
                    .map(HumanDuration)
                    .map_err(|e| {
                        E::custom(format!(
                            "invalid duration {s:?}: {e} (write it like \"30s\", \"15m\", \"72h\" or \"30d\")"
                        ))
                    })
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "a duration needs a unit: write \"{n}s\", \"{n}m\" or \"{n}d\", not {n}"
                )))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<HumanDuration, E> {
                Err(E::custom(format!("a duration needs a unit, not {n}")))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<HumanDuration, E> {
                Err(E::custom(format!("a duration needs a unit, not {n}")))
            }
        }
        d.deserialize_any(V)
    }
}

/// A Unix file mode written as a quoted octal string (`"0640"`). An unquoted `0640`
/// is refused: YAML 1.1 reads it as octal and YAML 1.2 as decimal 640, so it is
/// ambiguous. Only permission bits (at most `0777`) are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl FileMode {
    pub(super) fn parse(s: &str) -> Result<Self, String> {
        let digits = s.strip_prefix("0o").unwrap_or(s);
        if digits.is_empty()
            || digits.len() > 5
            || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
        {
            return Err(format!(
                "invalid file mode {s:?}: write three or four octal digits such as \"0640\""
            ));
        }
        let mode =
            u32::from_str_radix(digits, 8).map_err(|e| format!("invalid file mode {s:?}: {e}"))?;
        if mode > 0o777 {
            return Err(format!(
                "file mode {s:?} sets setuid, setgid or sticky bits; only permission bits up to \"0777\" are allowed"
            ));
        }
        Ok(FileMode(mode))
    }
}

impl fmt::Display for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        fn unquoted<E: de::Error>(shown: &str) -> E {
            E::custom(format!(
                "file mode {shown} is not quoted; write it as a quoted octal string such as \"0640\" (unquoted, YAML may read it as a decimal number)"
            ))
        }
        impl Visitor<'_> for V {
            type Value = FileMode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quoted octal file mode such as \"0640\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<FileMode, E> {
                FileMode::parse(s).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<FileMode, E> {
                Err(unquoted(&n.to_string()))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<FileMode, E> {
                Err(unquoted(&n.to_string()))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<FileMode, E> {
                Err(unquoted(&n.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// An absolute path without `..` components.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AbsPath(pub PathBuf);

impl AbsPath {
    pub(super) fn parse(s: &str) -> Result<Self, String> {
        let p = Path::new(s);
        if !p.is_absolute() {
            return Err(format!(
                "path {s:?} is relative; write an absolute path (starting with /)"
            ));
        }
        if p.components().any(|c| c == Component::ParentDir) {
            return Err(format!("path {s:?} contains `..`; write it without"));
        }
        // Normalise `/a/./b/` to `/a/b` so that duplicates are found by comparison.
        Ok(AbsPath(p.components().collect()))
    }
}

impl<'de> Deserialize<'de> for AbsPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        AbsPath::parse(&s).map_err(de::Error::custom)
    }
}

/// An API endpoint: `https://`, or `http://` only towards a loopback address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint(pub reqwest::Url);

impl Endpoint {
    pub(super) fn parse(s: &str) -> Result<Self, String> {
        let url = reqwest::Url::parse(s).map_err(|e| format!("invalid URL {s:?}: {e}"))?;
        match url.scheme() {
            "https" => {}
            "http" if is_loopback_host(&url) => {}
            "http" => {
                return Err(format!(
                    "{s:?} uses plain http:// towards a host that is not loopback; use https:// (http:// is only for a local simulator on 127.0.0.1 or ::1)"
                ));
            }
            other => return Err(format!("{s:?} has scheme {other:?}; use https://")),
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("{s:?} has no host"));
        }
        if !(url.path() == "/" || url.path().is_empty()) || url.query().is_some() {
            return Err(format!(
                "{s:?} has a path or query; give only scheme, host and port"
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!("{s:?} carries user information; remove it"));
        }
        Ok(Endpoint(url))
    }
}

/// Whether a URL's host is a loopback address or `localhost`.
pub fn is_loopback_host(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Endpoint::parse(&s).map_err(de::Error::custom)
    }
}

/// Whether `name` can name a certificate or a hook: what file names and metric
/// labels can carry unquoted.
pub(super) fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Parses a schedule the way the scheduler will (tokio-cron-scheduler's croner
/// settings: six fields, seconds first; day-of-month and day-of-week both apply).
pub fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    let fields = expr.split_whitespace().count();
    if fields != 6 {
        return Err(format!(
            "cron expression {expr:?} has {fields} fields; write six: sec min hour day month weekday (e.g. \"{}\")",
            super::DEFAULT_CRON
        ));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expr)
        .map_err(|e| format!("cron expression {expr:?} is invalid: {e}"))
}

/// The next `n` times `expr` fires after `after` (UTC).
pub fn next_fires(
    expr: &str,
    after: chrono::DateTime<chrono::Utc>,
    n: usize,
) -> Vec<chrono::DateTime<chrono::Utc>> {
    parse_cron(expr)
        .map(|c| c.iter_after(after).take(n).collect())
        .unwrap_or_default()
}
