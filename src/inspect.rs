//! The read-only reporting commands: `status`, `doctor`, `quota`, `list`, and
//! `notify --test`.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use serde::Serialize;

use cas_renewd::cas::api::{InstanceFilter, OrderFilter, OrderStatus};
use cas_renewd::cas::credentials::Environment;
use cas_renewd::cas::inventory::Inventory;
use cas_renewd::config::Config;
use cas_renewd::notify;
use cas_renewd::status::{self, Health, Thresholds};

use crate::cli::ListType;
use crate::{Fatal, configured, credentials, engine, failure, init_logging, runtime};

/// Status is a monitoring check: whatever stops it is UNKNOWN (3), a bad
/// configuration included, not the other commands' 1 or 2.
pub(crate) fn status(
    path: &Path,
    json: bool,
    online: bool,
    t: Thresholds,
) -> anyhow::Result<ExitCode> {
    status_report(path, json, online, t).or_else(|e| {
        eprintln!("{}", failure(&e).1);
        Ok(ExitCode::from(Health::Unknown.exit_code()))
    })
}

fn status_report(path: &Path, json: bool, online: bool, t: Thresholds) -> anyhow::Result<ExitCode> {
    let (cfg, rt) = configured(path)?;
    let report = if online {
        rt.block_on(async {
            match engine(cfg.clone()) {
                Ok(engine) => status::online(&engine, t).await,
                // No credentials to ask CAS with: what the disk says, and why.
                Err(e) => status::Report {
                    cas_error: Some(status::CasError {
                        message: format!("{e:#}"),
                        auth: true,
                    }),
                    ..offline_status(&cfg, t)
                },
            }
        })
    } else {
        offline_status(&cfg, t)
    };
    let mut report = report;
    if let Some(spec) = &cfg.fleet {
        rt.block_on(status::fleet::annotate(spec, &mut report));
    }
    if !json {
        print!("{}", report.summary());
    }
    print_rows(&report.rows, json, status::table)?;
    Ok(ExitCode::from(report.health().0.exit_code()))
}

/// `status` from disk and journals: the configured certificates and the
/// discovered ones installed under `discover.output_root`.
fn offline_status(cfg: &Config, t: Thresholds) -> status::Report {
    let mut certs = cfg.certificates.clone();
    certs.extend(cas_renewd::renew::installed_discovered(cfg));
    status::offline(&certs, &cfg.state_dir, cfg.renewal.renew_before, t)
}

pub(crate) fn doctor(path: &Path, json: bool, record: Option<&Path>) -> anyhow::Result<ExitCode> {
    // Logs only for warnings and worse: the report is the output.
    let loaded = Config::load(path);
    if let Ok(cfg) = &loaded {
        let mut quiet = cfg.clone();
        if std::env::var_os("CAS_RENEWD_LOG").is_none() {
            quiet.log.level = "error".into();
        }
        init_logging(&quiet);
    }
    let checks = runtime()?.block_on(cas_renewd::doctor::run(
        path,
        loaded,
        &Environment::from_process(),
        record,
    ));
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &checks)?;
        writeln!(out)?;
    } else {
        out.write_all(cas_renewd::doctor::render(&checks).as_bytes())?;
    }
    Ok(if cas_renewd::doctor::passed(&checks) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub(crate) fn quota(path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let (cfg, rt) = configured(path)?;
    let rows = rt.block_on(async {
        let engine = engine(cfg)?;
        anyhow::Ok(engine.quota().await?)
    })?;
    print_rows(&rows, json, cas_renewd::renew::quota::table)
}

pub(crate) fn list(
    path: &Path,
    status: Option<OrderStatus>,
    order_type: ListType,
    keyword: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (cfg, rt) = configured(path)?;
    if status.is_some() && matches!(order_type, ListType::Instance) {
        anyhow::bail!(
            "--status takes the statuses of V1 orders; V2.0 instances have their own (see the STATUS column without --status)"
        );
    }
    let orders = order_type.order_type().map(|t| OrderFilter {
        keyword: keyword.clone(),
        status,
        order_type: Some(t),
        resource_group_id: None,
    });
    // Instance statuses are not the V1 names, so a --status filter lists orders only.
    let instances = (matches!(order_type, ListType::Cpack | ListType::Instance)
        && status.is_none())
    .then(|| InstanceFilter {
        keyword,
        ..Default::default()
    });
    let inventory = rt.block_on(async {
        let limiter = Arc::new(cfg.api.limiter());
        let cas =
            cas_renewd::cas::cas_client(&cfg.api, Arc::new(credentials(&cfg)?), limiter, None)?;
        let inv = Inventory::fetch(&cas, orders, instances.as_ref(), cfg.api.page_size).await?;
        anyhow::Ok(inv)
    })?;
    let rows = cas_renewd::listing::inventory_rows(&inventory, chrono::Utc::now());
    print_rows(&rows, json, cas_renewd::listing::table)
}

/// `list` and `status` print alike: pretty JSON with `--json`, else the table.
fn print_rows<T: Serialize>(
    rows: &[T],
    json: bool,
    table: fn(&[T]) -> String,
) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, rows)?;
        writeln!(out)?;
    } else {
        out.write_all(table(rows).as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `notify --test`: one test message per channel, one line per channel.
pub(crate) fn notify_test(path: &Path, test: bool) -> anyhow::Result<ExitCode> {
    if !test {
        return Err(Fatal::Plain(anyhow::anyhow!(
            "notify: say --test to send a test message to every channel"
        ))
        .into());
    }
    let (cfg, rt) = configured(path)?;
    if cfg.notify.is_empty() {
        return Err(Fatal::Plain(anyhow::anyhow!(
            "{}: no notification channel is configured (notify:)",
            path.display()
        ))
        .into());
    }
    let lines = rt.block_on(async {
        let (open, failed) = notify::open_channels(&cfg.notify);
        let event = notify::Event::new(
            notify::EventKind::Test,
            "",
            "",
            "a test message from cas-renewd: this channel works",
            chrono::Utc::now(),
        );
        let sent = notify::send_test(&open, &event).await;
        let mut lines: Vec<(String, String, Option<String>)> = failed
            .into_iter()
            .map(|(name, e)| (name, String::new(), Some(e.to_string())))
            .collect();
        for d in sent {
            let err = d.result.err().map(|e| e.to_string());
            lines.push((d.channel, d.channel_type.to_owned(), err));
        }
        lines
    });
    let mut out = std::io::stdout().lock();
    let mut ok = true;
    for (name, ty, err) in &lines {
        let ty = if ty.is_empty() {
            String::new()
        } else {
            format!(" ({ty})")
        };
        match err {
            None => writeln!(out, "{name}{ty}: ok")?,
            Some(e) => {
                ok = false;
                writeln!(out, "{name}{ty}: FAILED: {e}")?;
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
