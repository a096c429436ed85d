//! The health `status` reports, Nagios-style: each certificate's state from its
//! row, and the exit code of the whole (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).

use std::time::Duration;

use serde::Serialize;

use super::StatusRow;

/// One certificate's health, or the whole's. The order is how bad it is: the
/// whole takes its worst row (CRITICAL before UNKNOWN before WARNING).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    #[default]
    Ok,
    Warning,
    Unknown,
    Critical,
}

impl Health {
    /// The Nagios plugin exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Health::Ok => 0,
            Health::Warning => 1,
            Health::Critical => 2,
            Health::Unknown => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "OK",
            Health::Warning => "WARNING",
            Health::Critical => "CRITICAL",
            Health::Unknown => "UNKNOWN",
        }
    }
}

/// How close to expiry a certificate may come before `status` complains.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub warning: Duration,
    pub critical: Duration,
}

impl Default for Thresholds {
    /// WARNING at 21 days left (renewal, due at 30 days by default, is 9 days
    /// late), CRITICAL at 7.
    fn default() -> Self {
        Thresholds {
            warning: Duration::from_secs(21 * 86_400),
            critical: Duration::from_secs(7 * 86_400),
        }
    }
}

/// The health of `row` at `now` (Unix seconds) and why, in a few words.
pub fn of_row(
    row: &StatusRow,
    not_after: Option<i64>,
    now: i64,
    t: Thresholds,
) -> (Health, String) {
    let left = not_after.map(|n| n - now);
    let mut worst = (Health::Ok, String::new());
    let mut note = |h: Health, why: String| {
        if h > worst.0 {
            worst = (h, why);
        }
    };
    match left {
        None => note(Health::Critical, "no certificate installed".into()),
        Some(l) if l <= 0 => note(
            Health::Critical,
            "the installed certificate has expired".into(),
        ),
        Some(l) if l < secs(t.critical) => {
            note(Health::Critical, format!("expires in {}", days(l)))
        }
        Some(l) if l < secs(t.warning) => note(Health::Warning, format!("expires in {}", days(l))),
        Some(_) => {}
    }
    if row.next_action == "blocked" {
        note(
            Health::Critical,
            "blocked: needs the operator (see NEXT)".into(),
        );
    }
    if row.last_error.is_some() {
        note(
            Health::Warning,
            "the last attempt failed (retried automatically)".into(),
        );
    }
    if row.served_matches_disk == Some(false) {
        note(
            Health::Warning,
            "the served certificate is not the one on disk".into(),
        );
    }
    worst
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn days(secs: i64) -> String {
    let d = secs.div_euclid(86_400);
    if d == 0 {
        "less than a day".into()
    } else {
        format!("{d} day(s)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_nagios_codes_and_the_worst_row_wins() {
        let codes: Vec<u8> = [
            Health::Ok,
            Health::Warning,
            Health::Critical,
            Health::Unknown,
        ]
        .iter()
        .map(|h| h.exit_code())
        .collect();
        assert_eq!(codes, [0, 1, 2, 3]);
        let worst = [Health::Warning, Health::Unknown, Health::Ok]
            .into_iter()
            .max();
        assert_eq!(worst, Some(Health::Unknown));
        assert!(Health::Critical > Health::Unknown);
    }
}
