//! The plan for a certificate whose source is an SSL Certificate Management V2.0
//! instance: re-issue within the service period, install what CAS issued, or
//! block when the service period has no room for another certificate.
//!
//! The rule for "room": a re-issued certificate is worth asking for only when the
//! instance's service period ends at least [`ROOM_MARGIN_MS`] after the current
//! certificate's expiry (or after now, when that is later). CAS issues no
//! certificate past the service end, so one asked for later would add less than
//! that margin, and the operator must buy a renewal of the instance instead.

use super::{Action, DAY_MS, NEWER_SLACK_MS, Plan, PlanInput, date, days};
use crate::cas::api::{CertificateStatus, Instance, InstanceStatus};
use crate::ids::InstanceId;

/// How much later than the current certificate a re-issued one must be able to
/// expire (within the service period) for a re-issue to be worth it.
pub const ROOM_MARGIN_MS: i64 = 7 * DAY_MS;

/// The instance the certificate comes from, when it comes from one: among the
/// instances for its domain, those not refunded or closed, the one whose service
/// period ends last. A domain with orders and no such instance keeps its orders.
pub fn source<'a>(i: &PlanInput<'a>) -> Option<&'a Instance> {
    let live = i.instances.iter().filter(|x| {
        !matches!(
            x.status,
            Some(InstanceStatus::Refund | InstanceStatus::Closed)
        )
    });
    let best = live.max_by_key(|x| (x.instance_end_time, x.certificate_not_after));
    match best {
        Some(b) => Some(b),
        // Only refunded or closed instances and no order: the plan says so.
        None if i.orders.is_empty() => i.instances.first(),
        None => None,
    }
}

fn ms(secs: Option<i64>) -> Option<i64> {
    secs.map(|s| s.saturating_mul(1000))
}

/// Decides for `inst`, the instance the certificate comes from.
pub fn decide(i: &PlanInput<'_>, out: &dyn Fn(Action, String) -> Plan, inst: &Instance) -> Plan {
    let Some(id) = inst.instance_id.clone().map(InstanceId::new) else {
        return out(
            Action::Blocked,
            "the instance for this domain has no InstanceId".into(),
        );
    };
    let status = inst.status.unwrap_or(InstanceStatus::Unknown);
    if matches!(status, InstanceStatus::Refund | InstanceStatus::Closed) {
        return out(
            Action::Blocked,
            format!("instance {id} is {status}: buy a renewal of instance {id} or a new one"),
        );
    }
    if status == InstanceStatus::Pending {
        return out(
            Action::AdoptInstance {
                instance_id: id.clone(),
                certificate_id: inst.certificate_id,
            },
            format!(
                "instance {id} has an application under review (pending) made elsewhere; following it instead of applying again"
            ),
        );
    }
    let disk_end = i.disk.map(|d| d.not_after * 1000);
    let cert_end = ms(inst.certificate_not_after);
    if let (Some(cert_id), Some(end)) = (inst.certificate_id, cert_end)
        && disk_end.is_none_or(|d| end > d + NEWER_SLACK_MS)
        && end > i.now_ms
    {
        let managed = if inst.auto_reissue_enabled() {
            "managed by CAS (AutoReissue); "
        } else {
            ""
        };
        return out(
            Action::InstallInstance {
                instance_id: id.clone(),
                certificate_id: cert_id,
            },
            format!(
                "{managed}instance {id} holds certificate {cert_id} valid until {}, newer than {}",
                date(end),
                disk_end.map_or("nothing on disk".to_owned(), |d| format!(
                    "the one on disk ({})",
                    date(d)
                ))
            ),
        );
    }
    if inst.auto_reissue_enabled() {
        return out(
            Action::Nothing,
            format!(
                "managed by CAS (AutoReissue): instance {id} is re-issued by CAS, cas-renewd installs each new certificate{}",
                service_words(inst)
            ),
        );
    }
    reissue_when_due(i, out, inst, id, disk_end.or(cert_end))
}

/// ` ; service period ends <date>`, when the instance gives its end.
fn service_words(inst: &Instance) -> String {
    ms(inst.instance_end_time)
        .map(|e| format!("; service period ends {}", date(e)))
        .unwrap_or_default()
}

/// Re-issues when the certificate is due and the service period has room.
fn reissue_when_due(
    i: &PlanInput<'_>,
    out: &dyn Fn(Action, String) -> Plan,
    inst: &Instance,
    id: InstanceId,
    end: Option<i64>,
) -> Plan {
    let window = i64::try_from(i.renew_before.as_millis()).unwrap_or(i64::MAX);
    // CAS's flag is about the certificate it lists: it counts only when that one
    // is not older than the installed one (a stale listing, or a newer
    // certificate installed from another host or by AutoReissue, is not due).
    let listed_current = match (ms(inst.certificate_not_after), i.disk) {
        (_, None) => true,
        (Some(listed), Some(d)) => listed + NEWER_SLACK_MS >= d.not_after * 1000,
        (None, Some(_)) => false,
    };
    let flagged = listed_current
        && matches!(
            inst.certificate_status,
            Some(CertificateStatus::WillExpire | CertificateStatus::Expired)
        );
    let due = flagged || end.is_none_or(|e| e - i.now_ms <= window);
    if !due && !i.force {
        let e = end.unwrap_or(i.now_ms);
        return out(
            Action::Nothing,
            format!(
                "valid until {} ({} days); re-issue of instance {id} due from {}{}",
                date(e),
                days(e - i.now_ms),
                date(e - window),
                service_words(inst)
            ),
        );
    }
    let service_end = ms(inst.instance_end_time);
    let over = service_end.is_none_or(|s| s <= i.now_ms);
    let base = end.unwrap_or(i.now_ms).max(i.now_ms);
    let no_room = service_end.is_none_or(|s| s < base + ROOM_MARGIN_MS);
    if over || no_room {
        let why = match service_end {
            None => "gives no service end".to_owned(),
            Some(s) if s <= i.now_ms => format!("service period ended {}", date(s)),
            Some(s) => format!(
                "service period ends {}, too soon after the current certificate ({}) for a new one",
                date(s),
                date(base)
            ),
        };
        return out(
            Action::Blocked,
            format!("instance {id} {why}: buy a renewal of instance {id}"),
        );
    }
    let words = if i.force && !due {
        format!("forced re-issue of instance {id}")
    } else {
        format!(
            "due: the certificate of instance {id} {}",
            match end {
                Some(e) => format!("expires {} ({} days left)", date(e), days(e - i.now_ms)),
                None => "is missing".to_owned(),
            }
        )
    };
    out(
        Action::Reissue {
            instance_id: id,
            certificate_id: inst.certificate_id,
        },
        format!("{words}{}", service_words(inst)),
    )
}

#[cfg(test)]
mod tests;
