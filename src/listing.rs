//! Rendering of `cas-renewd list`: one row per V1 order or V2.0 instance, as an
//! aligned table or JSON.
//!
//! Domains come from CAS as they are: the table escapes them (one row stays one
//! line, no terminal control), JSON keeps them exact (its encoder escapes).

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::cas::api::CertificateOrder;
use crate::cas::inventory::{Entry, Inventory, Kind};
use crate::domain::escape;

/// One line of `list`. Field order is the JSON key order; keep it stable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub domain: String,
    pub order_id: Option<i64>,
    pub certificate_id: Option<i64>,
    pub instance_id: Option<String>,
    pub status: String,
    /// RFC 3339, UTC.
    pub not_after: Option<String>,
    /// Whole days until expiry, negative once expired.
    pub days_left: Option<i64>,
    /// `order` (V1) or `instance` (V2.0).
    pub kind: Kind,
    /// An instance's end of service period, RFC 3339, UTC.
    pub service_end: Option<String>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Rows of orders only (see [`inventory_rows`]).
pub fn rows(orders: &[CertificateOrder], now: DateTime<Utc>) -> Vec<Row> {
    sorted(orders.iter().map(Entry::Order), now)
}

/// Rows of every order and instance of `inv`, sorted as [`rows`].
pub fn inventory_rows(inv: &Inventory, now: DateTime<Utc>) -> Vec<Row> {
    sorted(inv.entries(), now)
}

fn row(e: Entry<'_>, now: DateTime<Utc>) -> Row {
    let when = e.not_after();
    let mut r = Row {
        domain: e.domain().unwrap_or("-").to_owned(),
        order_id: None,
        certificate_id: None,
        instance_id: None,
        status: "-".to_owned(),
        not_after: when.map(rfc3339),
        days_left: when.map(|t| (t - now).num_seconds().div_euclid(86_400)),
        kind: e.kind(),
        service_end: None,
    };
    match e {
        Entry::Order(o) => {
            r.order_id = o.order_id;
            r.certificate_id = o.certificate_id;
            r.instance_id = o.instance_id.clone();
            r.status = o.status.map_or_else(|| "-".to_owned(), |s| s.to_string());
        }
        Entry::Instance(i) => {
            r.certificate_id = i.certificate_id;
            r.instance_id = i.instance_id.clone();
            r.status = i.status.map_or_else(|| "-".to_owned(), |s| s.to_string());
            r.service_end = i.service_end().map(rfc3339);
        }
    }
    r
}

/// Sorted by expiry (soonest first, unknown expiry last), then domain.
fn sorted<'a>(entries: impl Iterator<Item = Entry<'a>>, now: DateTime<Utc>) -> Vec<Row> {
    let mut rows: Vec<(Option<DateTime<Utc>>, Row)> =
        entries.map(|e| (e.not_after(), row(e, now))).collect();
    rows.sort_by(|(a, ra), (b, rb)| {
        a.is_none()
            .cmp(&b.is_none())
            .then(a.cmp(b))
            .then_with(|| ra.domain.cmp(&rb.domain))
    });
    rows.into_iter().map(|(_, r)| r).collect()
}

/// An aligned text table with a header line; every text cell is escaped.
pub fn table(rows: &[Row]) -> String {
    // KIND and SERVICE END come last so the V1 columns keep their places.
    let header = [
        "DOMAIN",
        "ID",
        "STATUS",
        "EXPIRES (UTC)",
        "DAYS LEFT",
        "KIND",
        "SERVICE END (UTC)",
    ];
    let time = |t: Option<&str>| {
        t.map_or_else(
            || "-".into(),
            |t| t.replace('T', " ").trim_end_matches('Z').to_owned(),
        )
    };
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            let id = match r.kind {
                Kind::Order => r.order_id.or(r.certificate_id).map(|i| i.to_string()),
                Kind::Instance => r.instance_id.as_deref().map(escape),
            };
            [
                escape(&r.domain),
                id.unwrap_or_else(|| "-".into()),
                escape(&r.status),
                time(r.not_after.as_deref()),
                r.days_left.map_or_else(|| "-".into(), |d| d.to_string()),
                r.kind.as_str().to_owned(),
                time(r.service_end.as_deref()),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cols: &[&str]| {
        let mut l = String::new();
        for (i, c) in cols.iter().enumerate() {
            if i + 1 == cols.len() {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &cells {
        let refs: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&refs);
    }
    if rows.is_empty() {
        out.push_str("(no entries)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cas::api::OrderStatus;
    use chrono::TimeZone;

    fn order(domain: &str, id: i64, end_ms: Option<i64>) -> CertificateOrder {
        CertificateOrder {
            domain: Some(domain.into()),
            order_id: Some(id),
            status: Some(OrderStatus::Issued),
            cert_end_time: end_ms,
            ..Default::default()
        }
    }

    #[test]
    fn rows_sort_by_expiry_and_count_days() {
        let now = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .expect("date");
        let day = 86_400_000;
        let base = now.timestamp_millis();
        let r = rows(
            &[
                order("c.example.com", 3, None),
                order("b.example.com", 2, Some(base + 200 * day)),
                order("a.example.com", 1, Some(base + 20 * day + 5)),
                order("z.example.com", 4, Some(base - 2 * day)),
            ],
            now,
        );
        let domains: Vec<&str> = r.iter().map(|r| r.domain.as_str()).collect();
        assert_eq!(
            domains,
            [
                "z.example.com",
                "a.example.com",
                "b.example.com",
                "c.example.com"
            ]
        );
        assert_eq!(r[0].days_left, Some(-2));
        assert_eq!(r[1].days_left, Some(20));
        assert_eq!(r[1].not_after.as_deref(), Some("2026-01-21T00:00:00Z"));
        let t = table(&r);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 5);
        // Columns line up: STATUS starts at the same offset on every line.
        let col = lines[0].find("STATUS").expect("header");
        assert!(
            lines[1..].iter().all(|l| l[col..].starts_with("ISSUED")),
            "{t}"
        );
        let json = serde_json::to_string(&r[1]).expect("json");
        assert!(
            json.starts_with(r#"{"domain":"a.example.com","order_id":1,"#),
            "{json}"
        );
    }

    #[test]
    fn instances_list_beside_orders_with_kind_and_service_end() {
        use crate::cas::api::{Instance, InstanceStatus};
        let now = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .expect("date");
        let secs = now.timestamp();
        let inv = Inventory {
            listed_as_instances: vec![],
            orders: vec![order(
                "www.example.com",
                7,
                Some((secs + 50 * 86_400) * 1000),
            )],
            instances: vec![
                Instance {
                    instance_id: Some("cas-ivauto-1".into()),
                    domain: Some("shop.example.com".into()),
                    status: Some(InstanceStatus::WillExpire),
                    certificate_id: Some(99),
                    certificate_not_after: Some(secs + 10 * 86_400),
                    instance_end_time: Some(secs + 20 * 86_400),
                    ..Default::default()
                },
                Instance {
                    instance_id: Some("cas-ivauto-2".into()),
                    domain: Some("new.example.com".into()),
                    status: Some(InstanceStatus::Inactive),
                    ..Default::default()
                },
            ],
        };
        let r = inventory_rows(&inv, now);
        let kinds: Vec<(&str, Kind)> = r.iter().map(|r| (r.domain.as_str(), r.kind)).collect();
        assert_eq!(
            kinds,
            [
                ("shop.example.com", Kind::Instance),
                ("www.example.com", Kind::Order),
                ("new.example.com", Kind::Instance)
            ]
        );
        assert_eq!(r[0].days_left, Some(10), "seconds, not milliseconds");
        assert_eq!(r[0].service_end.as_deref(), Some("2026-01-21T00:00:00Z"));
        assert_eq!(r[0].status, "willExpire");
        let t = table(&r);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].ends_with("KIND      SERVICE END (UTC)"), "{t}");
        assert!(
            lines[1].starts_with(
                "shop.example.com  cas-ivauto-1  willExpire  2026-01-11 00:00:00  10  "
            ) && lines[1].ends_with("instance  2026-01-21 00:00:00"),
            "{t}"
        );
        assert!(lines[2].ends_with("order     -"), "{t}");
        let json = serde_json::to_string(&r[0]).expect("json");
        assert!(
            json.ends_with(
                r#""days_left":10,"kind":"instance","service_end":"2026-01-21T00:00:00Z"}"#
            ),
            "{json}"
        );
    }

    #[test]
    fn hostile_domains_stay_on_one_escaped_line() {
        let now = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .expect("date");
        let r = rows(
            &[
                order("evil\x1b[2J\nfake.example.com  999  ISSUED", 1, None),
                order("ok.example.com", 2, None),
                order("b\u{fc}cher.example\r", 3, None),
            ],
            now,
        );
        let t = table(&r);
        assert!(!t.contains('\x1b') && !t.contains('\r'), "{t:?}");
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[1].starts_with("b\\u{fc}cher.example\\r  "), "{t}");
        assert!(
            lines[2].starts_with("evil\\x1b[2J\\nfake.example.com  999  ISSUED  1 "),
            "{t}"
        );
        let col = lines[0].find("ID").expect("header");
        assert_eq!(&lines[2][col..col + 2], "1 ", "{t}");
        assert_eq!(&lines[3][col..col + 2], "2 ", "{t}");
        // JSON keeps the exact name; its encoder escapes it.
        let json = serde_json::to_string(&r[1]).expect("json");
        assert!(json.contains(r#"evil\u001b[2J\nfake"#), "{json}");
    }
}
