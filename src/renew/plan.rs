//! The plan: a pure function from (orders, journal, disk, now, config) to what to
//! do for one certificate, with the reason in words an operator can act on.

use std::time::Duration;

use serde::Serialize;

use crate::cas::api::{CertificateOrder, Instance, OrderStatus};
use crate::cas::api_apply::{NotRenewable, not_renewable};
use crate::ids::{InstanceId, OrderId};
use crate::pki::CertInfo;
use crate::settings::RenewalMode;
use crate::store::{Journal, Phase, PhaseName};

/// CertEndTime and the certificate's notAfter may differ a little; a newer order
/// must expire at least this much later than the installed certificate.
const NEWER_SLACK_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// Nothing to do this pass.
    Nothing,
    /// Continue the renewal the journal records.
    Resume { phase: PhaseName },
    /// The certificate is installed but its reload hooks have not succeeded.
    RerunReload,
    /// An issued order holds a newer certificate than the one on disk.
    Install { order_id: OrderId },
    /// A renewal made elsewhere (console, another host) is in progress: follow it.
    Adopt { order_id: OrderId },
    /// Renew this order (spends quota).
    Renew { source_order_id: OrderId },
    /// Apply for a new certificate of the same product, for an order CAS does not
    /// renew (`renewal.mode: reapply`; spends quota).
    Reapply {
        source_order_id: OrderId,
        product_code: String,
    },
    /// Re-issue the certificate of a V2.0 instance within its service period
    /// (UpdateInstance with our CSR, then ApplyCertificate).
    Reissue {
        instance_id: InstanceId,
        /// The instance's certificate before the re-issue.
        certificate_id: Option<i64>,
    },
    /// A V2.0 instance holds a newer certificate than the one on disk (CAS's
    /// managed re-issue, the console, or the first install).
    InstallInstance {
        instance_id: InstanceId,
        certificate_id: i64,
    },
    /// A V2.0 instance has an application under review made elsewhere: follow it.
    AdoptInstance {
        instance_id: InstanceId,
        certificate_id: Option<i64>,
    },
    /// Cannot proceed without the operator.
    Blocked,
}

/// The plan as people read it, in logs and in `once --dry-run` (no Rust Debug text).
impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Nothing => f.write_str("nothing"),
            Action::Resume { phase } => write!(f, "resume ({phase})"),
            Action::RerunReload => f.write_str("reload"),
            Action::Install { order_id } => write!(f, "install (order {order_id})"),
            Action::Adopt { order_id } => write!(f, "adopt (order {order_id})"),
            Action::Renew { source_order_id } => write!(f, "renew (order {source_order_id})"),
            Action::Reapply {
                source_order_id,
                product_code,
            } => write!(f, "reapply ({product_code}, for order {source_order_id})"),
            Action::Reissue { instance_id, .. } => write!(f, "reissue (instance {instance_id})"),
            Action::InstallInstance {
                instance_id,
                certificate_id,
            } => write!(
                f,
                "install (instance {instance_id}, certificate {certificate_id})"
            ),
            Action::AdoptInstance { instance_id, .. } => {
                write!(f, "adopt (instance {instance_id})")
            }
            Action::Blocked => f.write_str("blocked"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub cert: String,
    #[serde(flatten)]
    pub action: Action,
    pub reason: String,
}

/// Everything the decision depends on.
pub struct PlanInput<'a> {
    pub cert: &'a str,
    pub domain: &'a str,
    /// The account's orders for this domain.
    pub orders: &'a [CertificateOrder],
    /// The account's V2.0 instances for this domain.
    pub instances: &'a [Instance],
    pub journal: &'a Journal,
    /// The installed leaf, if any.
    pub disk: Option<&'a CertInfo>,
    pub now_ms: i64,
    pub renew_before: Duration,
    /// `renew --force`: renew even when not due, and past a rejection.
    pub force: bool,
    /// `renewal.mode` of this certificate.
    pub mode: RenewalMode,
}

fn days(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

fn date(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// Decides what to do for one certificate.
pub fn plan(i: &PlanInput<'_>) -> Plan {
    let out = |action: Action, reason: String| Plan {
        cert: i.cert.to_owned(),
        action,
        reason,
    };
    let j = i.journal;
    match &j.phase {
        phase if phase.in_flight() => {
            return out(
                Action::Resume {
                    phase: phase.name(),
                },
                format!(
                    "a renewal is in flight at phase {}{}{}{}",
                    phase.name(),
                    phase
                        .new_order_id()
                        .map(|o| format!(" (order {o})"))
                        .or_else(|| phase
                            .instance()
                            .map(|x| format!(" (instance {})", x.instance_id)))
                        .unwrap_or_default(),
                    phase
                        .unclear_since()
                        .map(|t| t.to_rfc3339())
                        .map(|t| format!(
                            "; the paid call's outcome is unclear and no order has shown since {t}: see last_error"
                        ))
                        .unwrap_or_default(),
                    phase
                        .pending_application()
                        .map(|p| format!("; {p}"))
                        .unwrap_or_default()
                ),
            );
        }
        Phase::Rejected(_) if !i.force => {
            return out(
                Action::Blocked,
                format!(
                    "the last renewal was refused: {}; check it, then run `cas-renewd renew --cert {} --force`",
                    j.last_error.as_deref().unwrap_or("no reason recorded"),
                    i.cert
                ),
            );
        }
        _ => {}
    }
    let p = decide(i, &out);
    // A pending reload runs at the end of the pass anyway; it only becomes the
    // action when nothing else is to be done.
    if !j.reload_pending.is_empty() && matches!(p.action, Action::Nothing) {
        return out(
            Action::RerunReload,
            format!(
                "the installed certificate still needs its reload ({})",
                j.reload_pending.join(", ")
            ),
        );
    }
    p
}

/// What to do when no renewal is in flight and nothing was refused: install a
/// newer issued order, follow a renewal made elsewhere, or renew when due.
fn decide(i: &PlanInput<'_>, out: &dyn Fn(Action, String) -> Plan) -> Plan {
    if let Some(inst) = instance::source(i) {
        return instance::decide(i, out, inst);
    }
    let disk_end = i.disk.map(|d| d.not_after * 1000);
    let is_issued = |o: &&CertificateOrder| {
        matches!(
            o.status,
            Some(OrderStatus::Issued | OrderStatus::Willexpired)
        ) && o.cert_end_time.is_some()
    };
    let newest_issued = i
        .orders
        .iter()
        .filter(is_issued)
        .max_by_key(|o| (o.cert_end_time, o.order_id));
    let newest_any = i.orders.iter().max_by_key(|o| o.order_id);

    if let Some(n) = newest_issued
        && let Some(p) = install_newer(i, out, n, disk_end)
    {
        return p;
    }
    if let Some(p) = adopt_elsewhere(i, out, newest_issued) {
        return p;
    }
    let Some(current) = newest_issued.or(newest_any) else {
        return out(
            Action::Blocked,
            format!(
                "no order for {} in the account; check the domain (it must equal the order's Domain)",
                i.domain
            ),
        );
    };
    renew_when_due(i, out, current, disk_end)
}

/// The newest issued order `n`, when it holds a certificate newer than the one
/// on disk: install it, or block when its key was lost.
fn install_newer(
    i: &PlanInput<'_>,
    out: &dyn Fn(Action, String) -> Plan,
    n: &CertificateOrder,
    disk_end: Option<i64>,
) -> Option<Plan> {
    // Issued orders are chosen by their end time, and every order the inventory
    // keeps has an OrderId.
    let (Some(end), Some(id)) = (n.cert_end_time, n.order_id.map(OrderId::new)) else {
        return None;
    };
    let newer = disk_end.is_none_or(|d| end > d + NEWER_SLACK_MS);
    if newer && i.journal.unusable_orders.contains(&id) {
        // `renew --force` pays for a renewal of our own instead (the hint says so).
        if i.force {
            return None;
        }
        return Some(out(
            Action::Blocked,
            format!(
                "order {id} (valid until {}) was renewed elsewhere and its private key is not available here; install it with that host's key: `cas-renewd import --cert {cert} --key FILE`, or pay for a renewal made here: `cas-renewd renew --cert {cert} --force`{}",
                date(end),
                if n.status == Some(OrderStatus::Willexpired) {
                    ""
                } else {
                    " (once CAS marks the order WILLEXPIRED: it renews no other)"
                },
                cert = i.cert
            ),
        ));
    }
    if newer {
        return Some(out(
            Action::Install { order_id: id },
            match disk_end {
                None => format!(
                    "no certificate on disk; order {id} holds one valid until {}",
                    date(end)
                ),
                Some(d) => format!(
                    "order {id} holds a certificate valid until {}, newer than the one on disk ({})",
                    date(end),
                    date(d)
                ),
            },
        ));
    }
    None
}

/// A renewal order newer than every issued one, not ours, still being processed.
/// Following it is bounded: the engine gives an adopted order up (and lists it as
/// unusable) when it is not issued within `issuance_timeout`, so an order bought
/// in the console and never applied for cannot hold the renewal back for ever.
fn adopt_elsewhere(
    i: &PlanInput<'_>,
    out: &dyn Fn(Action, String) -> Plan,
    newest_issued: Option<&CertificateOrder>,
) -> Option<Plan> {
    let j = i.journal;
    let newest_issued_id = newest_issued.and_then(|o| o.order_id);
    if let Some((id, p)) = i
        .orders
        .iter()
        .filter_map(|o| Some((OrderId::new(o.order_id?), o)))
        .find(|(id, o)| {
            matches!(o.status, Some(OrderStatus::Payed | OrderStatus::Checking))
                && newest_issued_id.is_none_or(|n| id.get() > n)
                && Some(*id) != j.order_id()
                && !j.unusable_orders.contains(id)
        })
    {
        return Some(out(
            Action::Adopt { order_id: id },
            format!(
                "order {id} ({}) is a renewal made elsewhere that is still in progress; following it instead of renewing again",
                p.status.map(|s| s.as_str()).unwrap_or("?")
            ),
        ));
    }
    None
}

/// Renews (or re-applies for) the `current` order when forced or due, else says
/// when it will be due or why it cannot be.
fn renew_when_due(
    i: &PlanInput<'_>,
    out: &dyn Fn(Action, String) -> Plan,
    current: &CertificateOrder,
    disk_end: Option<i64>,
) -> Plan {
    let Some(current_id) = current.order_id.map(OrderId::new) else {
        return out(Action::Blocked, "the newest order has no OrderId".into());
    };
    let end = disk_end.or(current.cert_end_time);
    let window = i64::try_from(i.renew_before.as_millis()).unwrap_or(i64::MAX);
    let status = current.status.unwrap_or(OrderStatus::Unknown);
    let left = end.map(|e| e - i.now_ms);
    // WILLEXPIRED speaks of the order's certificate: when the installed one is newer
    // (the renewal's order missing from this listing: a listing lag, or an entry
    // kept as a V2.0 instance), it does not make the certificate due, or the same
    // renewal would be paid twice.
    let disk_newer = matches!(
        (disk_end, current.not_after_ms()),
        (Some(d), Some(c)) if d > c + NEWER_SLACK_MS
    );
    let flagged = status == OrderStatus::Willexpired && !disk_newer;
    let due = flagged || left.is_some_and(|l| l <= window);

    let kind = not_renewable(current);
    let replace = |why: String| replace_order(i, out, current, current_id, kind.as_ref(), why);
    if i.force {
        return replace(format!("forced renewal of order {current_id} ({status})"));
    }
    if !due {
        return out(
            Action::Nothing,
            match end {
                Some(e) => format!(
                    "valid until {} ({} days); renewal due from {}",
                    date(e),
                    days(e - i.now_ms),
                    date(e - window)
                ),
                None => format!(
                    "order {current_id} ({status}) shows no end date and nothing is installed; it is renewed when CAS marks it WILLEXPIRED"
                ),
            },
        );
    }
    let left_words = left
        .map(|l| format!(" ({} days left)", days(l)))
        .unwrap_or_default();
    if kind.is_some() {
        // A new application does not need the order to be WILLEXPIRED, nor unexpired.
        return replace(format!("due: order {current_id} is {status}{left_words}"));
    }
    match status {
        OrderStatus::Willexpired => {
            replace(format!("order {current_id} is WILLEXPIRED{left_words}"))
        }
        OrderStatus::Expired => out(
            Action::Blocked,
            format!(
                "order {current_id} has EXPIRED; CAS cannot renew an expired order: buy a new certificate"
            ),
        ),
        other => out(
            Action::Nothing,
            format!(
                "due (renew_before), but order {current_id} is {other}; CAS renews only WILLEXPIRED orders, so this waits until it is"
            ),
        ),
    }
}

/// Replaces order `current_id` for the reason `why`: renew it, or, for a kind CAS
/// does not renew, apply for a new certificate or say what fixes it.
fn replace_order(
    i: &PlanInput<'_>,
    out: &dyn Fn(Action, String) -> Plan,
    current: &CertificateOrder,
    current_id: OrderId,
    kind: Option<&NotRenewable>,
    why: String,
) -> Plan {
    match (kind, i.mode) {
        (Some(k), RenewalMode::Reapply) => match current.product_code.as_deref() {
            Some(pc) if !pc.is_empty() => out(
                Action::Reapply {
                    source_order_id: current_id,
                    product_code: pc.to_owned(),
                },
                format!(
                    "{why}; order {current_id} is {}, which CAS does not renew: applying for a new {pc} certificate (renewal.mode: reapply)",
                    k.describe()
                ),
            ),
            _ => out(
                Action::Blocked,
                format!(
                    "{why}; order {current_id} is {}, which CAS does not renew, and it has no ProductCode to apply for again: apply for a new certificate in the console",
                    k.describe()
                ),
            ),
        },
        (Some(k), RenewalMode::Renew) => out(
            Action::Blocked,
            format!(
                "{why}; order {current_id} is {}, which CAS does not renew: a new certificate must be applied for; set `renewal: {{ mode: reapply }}` on certificate {} (or under `defaults:`) to let cas-renewd apply with CreateCertificateForPackageRequest, or apply in the console",
                k.describe(),
                i.cert
            ),
        ),
        (None, _) => out(
            Action::Renew {
                source_order_id: current_id,
            },
            why,
        ),
    }
}

pub mod chain;
pub mod instance;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod properties;
