//! The second step: from the raw schema to the validated [`Config`], one function
//! per section, every problem collected with its location before any is reported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use super::certificates::certificates;
use super::inherit::{check_hook_refs, key_spec, validation_config};
use super::problems::Problems;
use super::raw::{
    RawApi, RawConfig, RawCredentials, RawDefaults, RawDiscover, RawHook, RawLog, RawMetrics,
    RawRenewal, RawSchedule,
};
use super::values::{HumanDuration, is_valid_name, parse_cron};
use super::{
    ApiConfig, CertificateDefaults, Config, ConfigError, CredentialsConfig, DAY, DEFAULT_STATE_DIR,
    DIR_HOOK, DiscoverConfig, HookConfig, LogConfig, MAX_ATTEMPTS_LIMIT, MAX_PAGE_SIZE,
    MetricsConfig, RenewalConfig, ScheduleConfig, SecretSource,
};

/// `accounts`, when given, is the directory whose `passwd` and `group` files must
/// list every `output.owner` and `output.group`.
pub(super) fn validate(
    raw: RawConfig,
    source: &Path,
    accounts: Option<&Path>,
) -> Result<Config, ConfigError> {
    let mut p = Problems::new(source);
    let api = api(&raw.api, &mut p);
    let credentials = raw
        .credentials
        .as_ref()
        .and_then(|c| credentials(c, &mut p));
    let schedule = schedule(&raw.schedule, &mut p);
    let renewal = renewal(&raw.renewal, &mut p);
    let mut defaults = defaults(&raw.defaults, &raw.hooks, &mut p);
    let hooks = hooks(&raw.hooks, &mut p);
    let mut certificates = certificates(
        raw.certificates.as_ref(),
        &raw.hooks,
        &defaults,
        accounts,
        &mut p,
    );
    let hooks_dir = raw.hooks_dir.map(|d| d.0);
    if hooks_dir.is_some() {
        // After the named hooks, so the directory's programs see the reloaded
        // services; discovered certificates take `defaults.reload`.
        let lists = certificates
            .iter_mut()
            .map(|c| &mut c.reload)
            .chain([&mut defaults.reload]);
        for reload in lists {
            reload.push(DIR_HOOK.to_owned());
        }
    }
    let discover = raw.discover.as_ref().map(|d| discover(d, &mut p));
    if certificates.is_empty() && discover.is_none() {
        p.at(
            raw.certificates
                .as_ref()
                .map_or(Location::UNKNOWN, |c| c.referenced),
            "certificates",
            "no certificates are configured and `discover` is not set: there is nothing to manage",
        );
    }
    let metrics = metrics(&raw.metrics, &mut p);
    let log = log(&raw.log, &mut p);
    let notify = super::notify::notify(&raw.notify, &mut p);
    let fleet = raw
        .fleet
        .as_ref()
        .and_then(|f| super::fleet::fleet(f, &mut p));
    p.finish()?;
    Ok(Config {
        source: source.to_owned(),
        warnings: Vec::new(),
        api,
        credentials,
        state_dir: raw
            .state_dir
            .map(|s| s.0)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
        schedule,
        renewal,
        certificates,
        discover,
        defaults,
        hooks,
        hooks_dir,
        metrics,
        log,
        notify,
        fleet,
    })
}

/// A duration that must not be zero; `default` when not given (or refused).
fn positive(
    v: Option<&Spanned<HumanDuration>>,
    default: Duration,
    key: &str,
    p: &mut Problems<'_>,
) -> Duration {
    match v {
        Some(s) if s.value.0.is_zero() => {
            p.at(s.referenced, key, "must be greater than 0");
            default
        }
        Some(s) => s.value.0,
        None => default,
    }
}

/// A number within `range`; `default` when not given (or refused, with `message`).
fn bounded<T: Copy + PartialOrd>(
    v: Option<&Spanned<T>>,
    range: std::ops::RangeInclusive<T>,
    default: T,
    key: &str,
    message: &str,
    p: &mut Problems<'_>,
) -> T {
    match v {
        Some(s) if !range.contains(&s.value) => {
            p.at(s.referenced, key, message);
            default
        }
        Some(s) => s.value,
        None => default,
    }
}

/// Client-side calls per second: more than 0, at most this.
const MAX_RATE: f64 = 1000.0;

fn api(raw: &RawApi, p: &mut Problems<'_>) -> ApiConfig {
    let default = ApiConfig::default();
    let rate_message = "must be greater than 0 and at most 1000";
    let valid_rate = |r: f64| r > 0.0 && r <= MAX_RATE;
    ApiConfig {
        endpoint: raw
            .endpoint
            .as_ref()
            .map_or(default.endpoint, |e| e.0.clone()),
        dns_endpoint: raw
            .dns_endpoint
            .as_ref()
            .map_or(default.dns_endpoint, |e| e.0.clone()),
        timeout: positive(raw.timeout.as_ref(), default.timeout, "api.timeout", p),
        max_attempts: bounded(
            raw.max_attempts.as_ref(),
            1..=MAX_ATTEMPTS_LIMIT,
            default.max_attempts,
            "api.max_attempts",
            &format!("must be between 1 and {MAX_ATTEMPTS_LIMIT}"),
            p,
        ),
        page_size: bounded(
            raw.page_size.as_ref(),
            1..=MAX_PAGE_SIZE,
            default.page_size,
            "api.page_size",
            &format!("must be between 1 and {MAX_PAGE_SIZE} (CAS documents 50, the default)"),
            p,
        ),
        rate_limit_per_second: match &raw.rate_limit_per_second {
            Some(s) if !valid_rate(s.value) => {
                p.at(s.referenced, "api.rate_limit_per_second", rate_message);
                default.rate_limit_per_second
            }
            Some(s) => s.value,
            None => default.rate_limit_per_second,
        },
        rate_limits: raw
            .rate_limits
            .iter()
            .filter_map(|(action, r)| {
                if valid_rate(r.value) {
                    Some((action.clone(), r.value))
                } else {
                    p.at(
                        r.referenced,
                        format!("api.rate_limits.{action}"),
                        rate_message,
                    );
                    None
                }
            })
            .collect(),
    }
}

fn credentials(raw: &Spanned<RawCredentials>, p: &mut Problems<'_>) -> Option<CredentialsConfig> {
    let loc = raw.referenced;
    let c = &raw.value;
    let kinds = [
        c.access_key_id.is_some()
            || c.access_key_secret.is_some()
            || c.access_key_secret_file.is_some(),
        c.profile.is_some(),
        c.ecs_ram_role.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() > 1 {
        p.at(
            loc,
            "credentials",
            "give one kind of credentials: access_key_id with a secret, or profile, or ecs_ram_role",
        );
        return None;
    }
    if c.metadata_endpoint.is_some() && c.ecs_ram_role.is_none() {
        p.at(
            loc,
            "credentials.metadata_endpoint",
            "only used with ecs_ram_role",
        );
    }
    if c.security_token.is_some() && c.access_key_id.is_none() {
        p.at(
            loc,
            "credentials.security_token",
            "only used with access_key_id",
        );
    }
    if let Some(profile) = &c.profile {
        return Some(CredentialsConfig::Profile(profile.clone()));
    }
    if let Some(role) = &c.ecs_ram_role {
        return Some(CredentialsConfig::EcsRamRole {
            role_name: role.clone(),
            metadata_endpoint: c.metadata_endpoint.as_ref().map(|e| e.0.clone()),
        });
    }
    let Some(id) = &c.access_key_id else {
        p.at(
            loc,
            "credentials.access_key_id",
            "missing: a secret was given without its access_key_id",
        );
        return None;
    };
    let secret = match (&c.access_key_secret, &c.access_key_secret_file) {
        (Some(s), None) => SecretSource::Inline(s.clone()),
        (None, Some(f)) => SecretSource::File(f.0.clone()),
        (Some(_), Some(_)) => {
            p.at(
                loc,
                "credentials",
                "give access_key_secret or access_key_secret_file, not both",
            );
            return None;
        }
        (None, None) => {
            p.at(
                loc,
                "credentials",
                "access_key_id needs access_key_secret_file (or access_key_secret)",
            );
            return None;
        }
    };
    Some(CredentialsConfig::AccessKey {
        access_key_id: id.clone(),
        secret,
        security_token: c.security_token.clone(),
    })
}

fn schedule(raw: &RawSchedule, p: &mut Problems<'_>) -> ScheduleConfig {
    let default = ScheduleConfig::default();
    let retry_after = positive(
        raw.retry_after.as_ref(),
        default.retry_after,
        "schedule.retry_after",
        p,
    );
    let retry_max = positive(
        raw.retry_max.as_ref(),
        default.retry_max.max(retry_after),
        "schedule.retry_max",
        p,
    );
    if let Some(max) = &raw.retry_max
        && retry_max < retry_after
    {
        p.at(
            max.referenced,
            "schedule.retry_max",
            format!(
                "is shorter than schedule.retry_after ({})",
                humantime::format_duration(retry_after)
            ),
        );
    }
    ScheduleConfig {
        cron: match &raw.cron {
            Some(c) => {
                if let Err(e) = parse_cron(&c.value) {
                    p.at(c.referenced, "schedule.cron", e);
                }
                c.value.clone()
            }
            None => default.cron,
        },
        jitter: raw.jitter.map_or(default.jitter, |d| d.0),
        run_at_start: raw.run_at_start.unwrap_or(default.run_at_start),
        retry_after,
        retry_max,
    }
}

fn renewal(r: &RawRenewal, p: &mut Problems<'_>) -> RenewalConfig {
    let default = RenewalConfig::default();
    let concurrency = bounded(
        r.concurrency.as_ref(),
        1..=64,
        default.concurrency as u32,
        "renewal.concurrency",
        "must be between 1 and 64",
        p,
    ) as usize;
    let mut duration = |v: &Option<Spanned<HumanDuration>>, default: Duration, key: &str| {
        positive(v.as_ref(), default, key, p)
    };
    let renewal = RenewalConfig {
        renew_before: duration(
            &r.renew_before,
            default.renew_before,
            "renewal.renew_before",
        ),
        poll_interval: duration(
            &r.poll_interval,
            default.poll_interval,
            "renewal.poll_interval",
        ),
        poll_max_interval: duration(
            &r.poll_max_interval,
            default.poll_max_interval,
            "renewal.poll_max_interval",
        ),
        issuance_timeout: duration(
            &r.issuance_timeout,
            default.issuance_timeout,
            "renewal.issuance_timeout",
        ),
        concurrency,
        unclear_retry_after: duration(
            &r.unclear_retry_after,
            default.unclear_retry_after,
            "renewal.unclear_retry_after",
        ),
    };
    if let Some(max) = &r.poll_max_interval
        && renewal.poll_max_interval < renewal.poll_interval
    {
        p.at(
            max.referenced,
            "renewal.poll_max_interval",
            format!(
                "is shorter than renewal.poll_interval ({})",
                humantime::format_duration(renewal.poll_interval)
            ),
        );
    }
    // CAS certificates live at most about a year; a window longer than that
    // would renew every certificate on every pass.
    if let Some(rb) = &r.renew_before
        && rb.value.0 > 365 * DAY
    {
        p.at(
            rb.referenced,
            "renewal.renew_before",
            "is longer than a certificate's lifetime (365d); every pass would renew",
        );
    }
    renewal
}

fn defaults(
    raw: &RawDefaults,
    hooks: &BTreeMap<String, RawHook>,
    p: &mut Problems<'_>,
) -> CertificateDefaults {
    let base = CertificateDefaults::default();
    CertificateDefaults {
        key: key_spec(raw.key.as_ref(), &base.key),
        validation: validation_config(
            raw.validation.as_ref(),
            &base.validation,
            "defaults.validation",
            p,
        ),
        reload: raw
            .reload
            .as_deref()
            .map(|r| check_hook_refs(r, hooks, "defaults.reload", p))
            .unwrap_or(base.reload),
        mode: raw
            .renewal
            .as_ref()
            .and_then(|r| r.mode)
            .unwrap_or(base.mode),
    }
}

fn hooks(raw: &BTreeMap<String, RawHook>, p: &mut Problems<'_>) -> BTreeMap<String, HookConfig> {
    let mut hooks = BTreeMap::new();
    for (name, h) in raw {
        let key = format!("hooks.{name}");
        if !is_valid_name(name) {
            p.at(
                h.command.referenced,
                &key,
                format!("hook name {name:?} must match [a-z0-9_-]+"),
            );
        }
        match h.command.value.first() {
            None => p.at(h.command.referenced, format!("{key}.command"), "is empty"),
            Some(prog) if !prog.starts_with('/') && prog.contains('/') => p.at(
                h.command.referenced,
                format!("{key}.command"),
                format!(
                    "program {prog:?} is a relative path; give an absolute path or a bare name found on PATH"
                ),
            ),
            Some(_) => {}
        }
        let timeout = positive(
            h.timeout.as_ref(),
            HookConfig::DEFAULT_TIMEOUT,
            &format!("{key}.timeout"),
            p,
        );
        hooks.insert(
            name.clone(),
            HookConfig {
                command: h.command.value.clone(),
                timeout,
                per_certificate: h.per_certificate.unwrap_or(false),
            },
        );
    }
    hooks
}

fn discover(d: &RawDiscover, p: &mut Problems<'_>) -> DiscoverConfig {
    if d.keyword.value.trim().is_empty() {
        p.at(
            d.keyword.referenced,
            "discover.keyword",
            "is empty; it would match every order",
        );
    }
    DiscoverConfig {
        keyword: d.keyword.value.trim().to_owned(),
        output_root: d.output_root.0.clone(),
    }
}

fn metrics(raw: &RawMetrics, p: &mut Problems<'_>) -> MetricsConfig {
    let default = MetricsConfig::default();
    let Some(l) = &raw.listen else {
        return default;
    };
    MetricsConfig {
        listen: l.value.parse().unwrap_or_else(|_| {
            p.at(
                l.referenced,
                "metrics.listen",
                format!(
                    "{:?} is not an address:port such as \"{}\"",
                    l.value, default.listen
                ),
            );
            default.listen
        }),
    }
}

fn log(raw: &RawLog, p: &mut Problems<'_>) -> LogConfig {
    let default = LogConfig::default();
    let level = match &raw.level {
        Some(l) => {
            if tracing_subscriber::EnvFilter::try_new(&l.value).is_err() {
                p.at(
                    l.referenced,
                    "log.level",
                    format!(
                        "{:?} is not a log level (trace, debug, info, warn, error) or filter directive",
                        l.value
                    ),
                );
            }
            l.value.clone()
        }
        None => default.level,
    };
    LogConfig {
        format: raw.format.unwrap_or(default.format),
        level,
    }
}
