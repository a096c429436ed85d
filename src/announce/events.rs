//! From what a pass reports to the events people hear about.

use chrono::{DateTime, Utc};

use crate::notify::{Event, EventKind, rfc3339};
use crate::renew::{Outcome, PassReport};

/// The events of a finished pass. `expiring` is offered for every certificate
/// whose expiry is known and that this pass neither renewed nor is still following
/// an order for; each channel then applies its own `expiring_within`.
pub fn events_from_report(report: &PassReport, now: DateTime<Utc>) -> Vec<Event> {
    let mut out = Vec::new();
    for c in &report.certs {
        let kind = match c.outcome {
            Outcome::Renewed => Some(EventKind::Renewed),
            Outcome::Installed => Some(EventKind::Installed),
            Outcome::Failed => Some(EventKind::Failed),
            Outcome::Blocked => Some(EventKind::Blocked),
            Outcome::Unchanged | Outcome::Reloaded | Outcome::Planned | Outcome::Waiting => None,
        };
        let not_after = c
            .not_after
            .as_deref()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc));
        let with_expiry = |mut e: Event| {
            e.not_after = not_after.map(rfc3339);
            e.seconds_left = not_after.map(|t| (t - now).num_seconds());
            e
        };
        if let Some(kind) = kind {
            out.push(with_expiry(Event::new(
                kind, &c.name, &c.domain, &c.message, now,
            )));
        }
        // A fix is on the way when the pass installed a certificate or follows an order.
        let fixing = matches!(
            c.outcome,
            Outcome::Renewed | Outcome::Installed | Outcome::Waiting | Outcome::Planned
        );
        if let Some(t) = not_after
            && !fixing
        {
            let days = (t - now).num_days();
            let message = format!(
                "expires {} ({} day{}) and this pass did not renew it: {}",
                rfc3339(t),
                days,
                if days == 1 { "" } else { "s" },
                c.message
            );
            out.push(with_expiry(Event::new(
                EventKind::Expiring,
                &c.name,
                &c.domain,
                &message,
                now,
            )));
        }
    }
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::renew::CertReport;
    use crate::renew::plan::{Action, Plan};

    pub(in crate::announce) fn cert(
        name: &str,
        outcome: Outcome,
        not_after: Option<&str>,
    ) -> CertReport {
        CertReport {
            name: name.to_owned(),
            domain: format!("{name}.example.com"),
            plan: Plan {
                cert: name.to_owned(),
                action: Action::Nothing,
                reason: String::new(),
            },
            outcome,
            message: format!("{name} message"),
            order_id: None,
            not_after: not_after.map(str::to_owned),
            previous_not_after: None,
            files: vec![],
            renew_calls: 0,
            served_matches_disk: None,
            steps: vec![],
        }
    }

    #[test]
    fn outcomes_become_events_and_expiry_without_a_fix_becomes_expiring() {
        let now = DateTime::parse_from_rfc3339("2026-11-29T00:00:00Z")
            .expect("a valid time")
            .with_timezone(&Utc);
        let report = PassReport {
            certs: vec![
                cert("a", Outcome::Renewed, Some("2027-11-29T00:00:00Z")),
                cert("b", Outcome::Failed, Some("2026-12-04T00:00:00Z")),
                cert("c", Outcome::Waiting, Some("2026-12-01T00:00:00Z")),
                cert("d", Outcome::Unchanged, None),
                cert("e", Outcome::Blocked, None),
            ],
            hooks: vec![],
        };
        let events = events_from_report(&report, now);
        let got: Vec<(EventKind, &str, Option<i64>)> = events
            .iter()
            .map(|e| (e.event, e.cert.as_str(), e.seconds_left))
            .collect();
        assert_eq!(
            got,
            [
                (EventKind::Renewed, "a", Some(365 * 86_400)),
                (EventKind::Failed, "b", Some(5 * 86_400)),
                (EventKind::Expiring, "b", Some(5 * 86_400)),
                (EventKind::Blocked, "e", None),
            ]
        );
        let body = serde_json::to_value(&events[0]).expect("serializes");
        assert_eq!(body["event"], "renewed");
        assert_eq!(body["not_after"], "2027-11-29T00:00:00Z");
        assert_eq!(body["time"], "2026-11-29T00:00:00Z");
        let blocked = serde_json::to_value(&events[3]).expect("serializes");
        assert!(blocked["not_after"].is_null());
    }
}
