//! Rendering of `cas-renewd list`: one row per order, as an aligned table or JSON.
//!
//! Domains come from CAS as they are: the table escapes them (one row stays one
//! line, no terminal control), JSON keeps them exact (its encoder escapes).

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;

use crate::cas::api::CertificateOrder;
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
}

/// Rows sorted by expiry (soonest first, unknown expiry last), then domain.
pub fn rows(orders: &[CertificateOrder], now: DateTime<Utc>) -> Vec<Row> {
    let mut rows: Vec<(Option<i64>, Row)> = orders
        .iter()
        .map(|o| {
            let ms = o.not_after_ms();
            let when = ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single());
            (
                ms,
                Row {
                    domain: o.domain_name().unwrap_or("-").to_owned(),
                    order_id: o.order_id,
                    certificate_id: o.certificate_id,
                    instance_id: o.instance_id.clone(),
                    status: o.status.map_or_else(|| "-".to_owned(), |s| s.to_string()),
                    not_after: when.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                    days_left: when.map(|t| (t - now).num_seconds().div_euclid(86_400)),
                },
            )
        })
        .collect();
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
    let header = ["DOMAIN", "ORDER ID", "STATUS", "EXPIRES (UTC)", "DAYS LEFT"];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                escape(&r.domain),
                r.order_id
                    .or(r.certificate_id)
                    .map_or_else(|| "-".into(), |i| i.to_string()),
                escape(&r.status),
                r.not_after.as_deref().map_or_else(
                    || "-".into(),
                    |t| t.replace('T', " ").trim_end_matches('Z').to_owned(),
                ),
                r.days_left.map_or_else(|| "-".into(), |d| d.to_string()),
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
        let col = lines[0].find("ORDER ID").expect("header");
        assert_eq!(&lines[2][col..col + 2], "1 ", "{t}");
        assert_eq!(&lines[3][col..col + 2], "2 ", "{t}");
        // JSON keeps the exact name; its encoder escapes it.
        let json = serde_json::to_string(&r[1]).expect("json");
        assert!(json.contains(r#"evil\u001b[2J\nfake"#), "{json}");
    }
}
