//! `discover`: which domains of the account become managed certificates, under
//! which name and output directory, and which are refused (invalid) or blocked
//! (their name or directory is another certificate's).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};

use serde::Serialize;
use tracing::warn;

use crate::cas::api::CertificateOrder;
use crate::cas::inventory::Inventory;
use crate::domain::{Domain, Escaped};
use crate::settings::{CertificateConfig, Config, DiscoverConfig, OutputConfig};

/// A name and output directory for a domain found by `discover`: `www.example.com`
/// becomes name `www_example_com`, directory `www.example.com`; `*.example.com`
/// becomes `wildcard_example_com`, directory `_wildcard.example.com`. Only a
/// checked [`Domain`] gets here, so the directory is one plain path component
/// (no `/`, never `.` or `..`). Two domains can still share a name (`*.x.com` and
/// `wildcard.x.com`): [`targets`] blocks both rather than pick one.
pub fn discovered_names(domain: &Domain) -> (String, String) {
    match domain.wildcard_base() {
        Some(base) => (
            format!("wildcard_{}", base.replace('.', "_")),
            format!("_wildcard.{base}"),
        ),
        None => (
            domain.as_str().replace('.', "_"),
            domain.as_str().to_owned(),
        ),
    }
}

/// `output_root/dir`, when `dir` is exactly one normal path component, so the
/// result is a direct child of `output_root`; `None` for anything else.
pub fn child_dir(output_root: &Path, dir: &str) -> Option<PathBuf> {
    let mut parts = Path::new(dir).components();
    let one_normal =
        matches!(parts.next(), Some(Component::Normal(c)) if c == dir) && parts.next().is_none();
    let path = output_root.join(dir);
    (one_normal && path.parent() == Some(output_root)).then_some(path)
}

/// Longest directory name (and so certificate name) a discovered domain may
/// give: the journal, key and issued files add up to 17 octets to the name, and
/// a file name holds at most 255.
const MAX_DISCOVERED_DIR: usize = 235;

/// A discovered domain that is not managed until the operator decides: its name
/// or directory collides with another certificate's.
#[derive(Debug, Clone, Serialize)]
pub struct BlockedTarget {
    /// `discovered:` and the domain: unlike a certificate name, it cannot collide.
    pub name: String,
    pub domain: String,
    /// The directory the domain would have had.
    pub dir: PathBuf,
    pub reason: String,
}

/// What a pass manages: configured certificates and usable discovered ones, and
/// the discovered domains that are blocked.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    pub certs: Vec<CertificateConfig>,
    pub blocked: Vec<BlockedTarget>,
}

/// Configured certificates, then one per discovered domain not configured.
///
/// A domain from CAS is checked before it can name anything: an invalid one is
/// skipped with a warning (escaped: it may hold anything), and a valid one whose
/// name or directory another certificate already uses is blocked, never
/// silently dropped or allowed to share a journal or directory.
pub fn targets(cfg: &Config, orders: &[CertificateOrder]) -> Targets {
    targets_from(cfg, orders.iter().filter_map(CertificateOrder::domain_name))
}

/// As [`targets`], over the V1 orders and the V2.0 instances of `inv`: a domain
/// found in either becomes one certificate (a domain in both is one candidate).
pub fn inventory_targets(cfg: &Config, inv: &Inventory) -> Targets {
    targets_from(cfg, inv.domains())
}

fn targets_from<'a>(cfg: &Config, domains: impl Iterator<Item = &'a str>) -> Targets {
    let mut out = Targets {
        certs: cfg.certificates.clone(),
        blocked: vec![],
    };
    let Some(d) = &cfg.discover else {
        return out;
    };
    let configured = &cfg.certificates;
    let candidates: Vec<Candidate> = matching_domains(domains, &d.keyword)
        .into_iter()
        .filter(|dom| !configured.iter().any(|c| c.domain == dom.as_str()))
        .map(|dom| {
            let (name, dir) = discovered_names(&dom);
            (dom, name, dir)
        })
        .collect();
    let sharing = Sharing::of(&candidates);
    out.certs.reserve_exact(candidates.len());
    for (i, (domain, name, dir)) in candidates.iter().enumerate() {
        let path = child_dir(&d.output_root, dir);
        let others = sharing.others(i, name, dir);
        let why = collisions(
            d,
            configured,
            others.iter().map(|&j| &candidates[j]),
            (domain, name, dir),
            path.as_ref(),
        );
        match path {
            Some(path) if why.is_empty() => {
                out.certs.push(discovered_config(cfg, domain, name, path));
            }
            _ => {
                let reason = format!(
                    "discovered domain {domain} is not managed: {}; configure it (and any domain it collides with) under `certificates` with its own name and output.dir",
                    why.join("; ")
                );
                warn!(domain = %domain, name = %name, "{reason}");
                out.blocked.push(BlockedTarget {
                    name: format!("discovered:{domain}"),
                    domain: domain.to_string(),
                    dir: d.output_root.join(dir),
                    reason,
                });
            }
        }
    }
    out
}

/// The discovered certificates installed under `discover.output_root`, found
/// without asking CAS (`status` offline): each subdirectory named as a valid
/// domain's directory would be, that no configured certificate claims.
pub fn installed_discovered(cfg: &Config) -> Vec<CertificateConfig> {
    let Some(d) = &cfg.discover else {
        return vec![];
    };
    let Ok(entries) = std::fs::read_dir(&d.output_root) else {
        return vec![];
    };
    let mut out: Vec<CertificateConfig> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let dir = e.file_name().to_str()?.to_owned();
            let text = dir
                .strip_prefix("_wildcard.")
                .map_or_else(|| dir.clone(), |base| format!("*.{base}"));
            let domain = Domain::parse(&text).ok()?;
            let (name, expected) = discovered_names(&domain);
            let claimed = cfg
                .certificates
                .iter()
                .any(|c| c.name == name || c.domain == domain.as_str());
            let path = child_dir(&d.output_root, &dir)?;
            (expected == dir && !claimed).then(|| discovered_config(cfg, &domain, &name, path))
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// A discovered domain with its certificate name and directory name.
type Candidate = (Domain, String, String);

/// The candidates by certificate name and by directory, so each one meets only
/// those it may collide with (comparing every pair took seconds at 10,000).
struct Sharing<'a> {
    by_name: HashMap<&'a str, Vec<usize>>,
    by_dir: HashMap<&'a str, Vec<usize>>,
}

impl<'a> Sharing<'a> {
    fn of(candidates: &'a [Candidate]) -> Self {
        let mut s = Sharing {
            by_name: HashMap::new(),
            by_dir: HashMap::new(),
        };
        for (i, (_, name, dir)) in candidates.iter().enumerate() {
            s.by_name.entry(name).or_default().push(i);
            s.by_dir.entry(dir).or_default().push(i);
        }
        s
    }

    /// The other candidates with candidate `i`'s `name` or `dir`, in candidate order.
    fn others(&self, i: usize, name: &str, dir: &str) -> Vec<usize> {
        let mut out: Vec<usize> = [self.by_name.get(name), self.by_dir.get(dir)]
            .into_iter()
            .flatten()
            .flatten()
            .copied()
            .filter(|&j| j != i)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// The valid `domains` that contain `keyword` (ASCII case-insensitive); each
/// invalid one is logged (escaped) and left out.
fn matching_domains<'a>(domains: impl Iterator<Item = &'a str>, keyword: &str) -> BTreeSet<Domain> {
    let kw = keyword.to_ascii_lowercase();
    let mut found = BTreeSet::new();
    let mut invalid = BTreeMap::new();
    for raw in domains {
        if !raw.to_ascii_lowercase().contains(&kw) {
            continue;
        }
        match Domain::parse(raw) {
            Ok(dom) => {
                found.insert(dom);
            }
            Err(e) => {
                invalid.insert(raw.to_owned(), e);
            }
        }
    }
    for (raw, e) in &invalid {
        warn!(domain = %Escaped(raw), error = %e, "discovered domain is not a valid domain name; it is not managed");
    }
    found
}

/// Why the candidate (`domain`, `name`, `dir`), whose directory is `path`, cannot
/// be managed: an unusable directory, or a name or directory another configured
/// certificate or discovered candidate already has. Empty when it can.
fn collisions<'a>(
    d: &DiscoverConfig,
    configured: &[CertificateConfig],
    candidates: impl Iterator<Item = &'a Candidate>,
    (domain, name, dir): (&Domain, &String, &String),
    path: Option<&PathBuf>,
) -> Vec<String> {
    let mut why = Vec::new();
    if path.is_none() {
        why.push(format!(
            "its directory {dir:?} is not a plain name under {}",
            d.output_root.display()
        ));
    }
    if dir.len() > MAX_DISCOVERED_DIR {
        why.push(format!(
            "its directory name is {} octets long; at most {MAX_DISCOVERED_DIR} fit the state files",
            dir.len()
        ));
    }
    for c in configured {
        if c.name == *name {
            why.push(format!(
                "its certificate name {name} is already the name of the configured certificate for {}",
                c.domain
            ));
        }
        if path == Some(&c.output.dir) {
            why.push(format!(
                "its directory {} is already the output.dir of the configured certificate {}",
                c.output.dir.display(),
                c.name
            ));
        }
    }
    for (other, other_name, other_dir) in candidates {
        if other == domain {
            continue;
        }
        if other_name == name {
            why.push(format!(
                "discovered domain {other} maps to the same certificate name {name}"
            ));
        }
        if other_dir == dir {
            why.push(format!(
                "discovered domain {other} maps to the same directory {dir}"
            ));
        }
    }
    why
}

/// The certificate a usable discovered domain becomes: the `defaults` section's
/// key, validation, reload and mode, written to `path` with the default modes.
fn discovered_config(
    cfg: &Config,
    domain: &Domain,
    name: &str,
    path: PathBuf,
) -> CertificateConfig {
    CertificateConfig {
        name: name.to_owned(),
        domain: domain.to_string(),
        output: OutputConfig {
            dir: path,
            owner: None,
            group: None,
            key_mode: 0o600,
            cert_mode: 0o644,
            keep: 5,
            allow_insecure_dir: false,
        },
        key: cfg.defaults.key.clone(),
        validation: cfg.defaults.validation.clone(),
        reload: cfg.defaults.reload.clone(),
        verify: None,
        mode: cfg.defaults.mode,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dom(s: &str) -> Domain {
        Domain::parse(s).expect("valid domain")
    }

    #[test]
    fn discovered_domains_get_safe_names_and_directories() {
        assert_eq!(
            discovered_names(&dom("www.example.com")),
            ("www_example_com".to_owned(), "www.example.com".to_owned())
        );
        assert_eq!(
            discovered_names(&dom("*.Example.com")),
            (
                "wildcard_example_com".to_owned(),
                "_wildcard.example.com".to_owned()
            )
        );
        // The old naming stripped every leading `wildcard_`, so this became
        // `wildcard_example_com` too.
        assert_eq!(
            discovered_names(&dom("*.wildcard.example.com")).0,
            "wildcard_wildcard_example_com"
        );
        // The one pair of valid domains that share a name (blocked by `targets`).
        assert_eq!(
            discovered_names(&dom("*.example.com")).0,
            discovered_names(&dom("wildcard.example.com")).0
        );
    }

    #[test]
    fn child_dir_is_a_direct_child_or_nothing() {
        let root = Path::new("/srv/out");
        assert_eq!(
            child_dir(root, "www.example.com"),
            Some(PathBuf::from("/srv/out/www.example.com"))
        );
        assert_eq!(
            child_dir(root, "_wildcard.example.com"),
            Some(PathBuf::from("/srv/out/_wildcard.example.com"))
        );
        for bad in ["", ".", "..", "a/b", "a/../..", "/etc", "./x", "x/"] {
            assert_eq!(child_dir(root, bad), None, "{bad:?}");
        }
    }

    fn orders(domains: &[&str]) -> Vec<CertificateOrder> {
        domains
            .iter()
            .map(|d| CertificateOrder {
                domain: Some((*d).to_owned()),
                ..Default::default()
            })
            .collect()
    }

    fn config(certs: &str) -> Config {
        Config::parse(
            &format!("discover: {{ keyword: example, output_root: /srv/out }}\n{certs}"),
            Path::new("t.yaml"),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn names(t: &Targets) -> (Vec<&str>, Vec<&str>) {
        (
            t.certs.iter().map(|c| c.name.as_str()).collect(),
            t.blocked.iter().map(|b| b.name.as_str()).collect(),
        )
    }

    #[test]
    fn invalid_domains_are_skipped_and_never_take_a_valid_ones_name() {
        let t = targets(
            &config(""),
            &orders(&[
                "www example.com",
                "WWW.Example.com",
                "www.example.com",
                "..",
                "example/../..",
                "bücher.example",
                "xn--bcher-kva.example",
                "other.org",
            ]),
        );
        assert_eq!(
            names(&t),
            (vec!["www_example_com", "xn--bcher-kva_example"], vec![])
        );
        let dirs: Vec<&Path> = t.certs.iter().map(|c| c.output.dir.as_path()).collect();
        assert_eq!(
            dirs,
            [
                Path::new("/srv/out/www.example.com"),
                Path::new("/srv/out/xn--bcher-kva.example")
            ]
        );
        assert_eq!(t.certs[0].domain, "www.example.com");
    }

    #[test]
    fn discover_covers_instances_beside_orders() {
        use crate::cas::api::Instance;
        let inv = Inventory {
            listed_as_instances: vec![],
            orders: orders(&["www.example.com", "shop.example.com"]),
            instances: vec![
                Instance {
                    domain: Some("shop.example.com".into()),
                    ..Default::default()
                },
                Instance {
                    domain: Some("v2.example.com".into()),
                    ..Default::default()
                },
                Instance {
                    certificate_domain: Some("later.example.com,x.example.com".into()),
                    ..Default::default()
                },
                Instance::default(),
            ],
        };
        let t = inventory_targets(&config(""), &inv);
        assert_eq!(
            names(&t),
            (
                vec![
                    "later_example_com",
                    "shop_example_com",
                    "v2_example_com",
                    "www_example_com"
                ],
                vec![]
            ),
            "a domain in both kinds is one certificate"
        );
        let only_orders = targets(&config(""), &inv.orders);
        assert_eq!(only_orders.certs.len(), 2);
    }

    #[test]
    fn collisions_block_every_party_but_a_configured_certificate() {
        let t = targets(
            &config(
                "certificates:\n  - { name: www_example_com, domain: api.example.com, output: { dir: /srv/api } }\n  - { name: shop, domain: shop.example.com, output: { dir: /srv/out/mail.example.com } }\n",
            ),
            &orders(&[
                "*.example.com",
                "wildcard.example.com",
                "www.example.com",
                "mail.example.com",
                "shop.example.com",
                "api.example.com",
                "ok.example.com",
                "*.wildcard.example.com",
            ]),
        );
        assert_eq!(
            names(&t),
            (
                vec![
                    "www_example_com",
                    "shop",
                    "wildcard_wildcard_example_com",
                    "ok_example_com"
                ],
                vec![
                    "discovered:*.example.com",
                    "discovered:mail.example.com",
                    "discovered:wildcard.example.com",
                    "discovered:www.example.com",
                ]
            )
        );
        let reason = |n: &str| {
            t.blocked
                .iter()
                .find(|b| b.name == n)
                .map(|b| b.reason.as_str())
                .unwrap_or_default()
        };
        assert!(
            reason("discovered:*.example.com").contains(
                "discovered domain wildcard.example.com maps to the same certificate name wildcard_example_com"
            ),
            "{t:?}"
        );
        assert!(
            reason("discovered:www.example.com")
                .contains("the configured certificate for api.example.com"),
            "{t:?}"
        );
        assert!(
            reason("discovered:mail.example.com")
                .contains("output.dir of the configured certificate shop"),
            "{t:?}"
        );
    }

    #[test]
    fn each_candidate_meets_only_those_sharing_its_name_or_directory() {
        let candidates: Vec<Candidate> = ["*.x.com", "a.x.com", "wildcard.x.com", "b.x.com"]
            .into_iter()
            .map(|d| {
                let dom = dom(d);
                let (name, dir) = discovered_names(&dom);
                (dom, name, dir)
            })
            .collect();
        let s = Sharing::of(&candidates);
        let others = |i: usize| s.others(i, &candidates[i].1, &candidates[i].2);
        assert_eq!(others(0), [2], "*.x.com and wildcard.x.com share a name");
        assert_eq!(others(2), [0]);
        assert!(others(1).is_empty() && others(3).is_empty());
        // A candidate sharing both name and directory with another is met once.
        let twice = vec![candidates[1].clone(), candidates[1].clone()];
        let s = Sharing::of(&twice);
        assert_eq!(s.others(0, &twice[0].1, &twice[0].2), [1]);
    }

    #[test]
    fn a_domain_too_long_for_the_state_files_is_blocked() {
        // Valid (253 octets) but its journal file name would exceed 255.
        let long = format!("{0}.{0}.{0}.{1}", "a".repeat(63), "a".repeat(53));
        let long = format!("{long}.example");
        assert_eq!(long.len(), 253);
        let t = targets(&config(""), &orders(&[&long]));
        assert!(t.certs.is_empty(), "{t:?}");
        assert!(t.blocked[0].reason.contains("253 octets long"), "{t:?}");
    }
}
