//! The sent-record: which channel told whom about which event for which
//! certificate on which UTC day, so that a daemon passing every few minutes (or
//! a cron job running `once`) sends one message a day, not one a pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tracing::warn;

use super::Event;
use crate::store::{self, FileSpec, safe_fs};

/// The record's file in the state directory.
pub(super) const FILE: &str = "notify-sent.json";
/// A record larger than this is damaged or planted; it is started afresh.
const MAX_BYTES: u64 = 1024 * 1024;

pub(super) struct Sent {
    path: PathBuf,
    /// `channel|event|cert` to the UTC day (`YYYY-MM-DD`) it was last sent.
    days: BTreeMap<String, String>,
}

fn key(channel: &str, e: &Event) -> String {
    format!("{channel}|{}|{}", e.event.as_str(), e.cert)
}

/// The UTC day of an event (its `time` starts with it).
fn day(e: &Event) -> &str {
    e.time.get(..10).unwrap_or(&e.time)
}

impl Sent {
    /// The record in `state_dir`; an unreadable one is reported and started afresh
    /// (at worst a message is sent twice that day).
    pub(super) fn load(state_dir: &Path) -> Sent {
        let path = state_dir.join(FILE);
        let days = match safe_fs::read_regular(&path, MAX_BYTES) {
            Ok(Some(data)) => serde_json::from_slice(&data).unwrap_or_else(|e| {
                warn!(path = %path.display(), error = %e, "the notification record is damaged; starting afresh");
                BTreeMap::new()
            }),
            Ok(None) => BTreeMap::new(),
            Err(e) => {
                warn!(error = %e, "cannot read the notification record; starting afresh");
                BTreeMap::new()
            }
        };
        Sent { path, days }
    }

    /// Whether `channel` already sent `e`'s event for its certificate today.
    pub(super) fn already(&self, channel: &str, e: &Event) -> bool {
        self.days.get(&key(channel, e)).is_some_and(|d| d == day(e))
    }

    /// Records a delivery and writes the record (atomically); entries of other
    /// days are dropped, so the file stays small.
    pub(super) fn record(&mut self, channel: &str, e: &Event) {
        let today = day(e).to_owned();
        self.days.retain(|_, d| *d == today);
        self.days.insert(key(channel, e), today);
        let data = match serde_json::to_vec_pretty(&self.days) {
            Ok(d) => d,
            Err(err) => {
                warn!(error = %err, "cannot encode the notification record");
                return;
            }
        };
        if let Err(err) = store::write_file(&self.path, &data, FileSpec::private()) {
            warn!(error = %err, "cannot write the notification record; a message may be sent again today");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::EventKind;

    fn event(kind: EventKind, cert: &str, time: &str) -> Event {
        let mut e = Event::new(kind, cert, "d", "m", chrono::Utc::now());
        e.time = time.to_owned();
        e
    }

    #[test]
    fn one_message_per_channel_event_certificate_and_day_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Sent::load(dir.path());
        let e = event(EventKind::Failed, "www", "2026-11-29T03:17:00Z");
        assert!(!s.already("hook", &e));
        s.record("hook", &e);
        let s = Sent::load(dir.path());
        assert!(s.already("hook", &e));
        assert!(!s.already("mail", &e), "another channel");
        assert!(!s.already(
            "hook",
            &event(EventKind::Blocked, "www", "2026-11-29T04:00:00Z")
        ));
        assert!(!s.already(
            "hook",
            &event(EventKind::Failed, "api", "2026-11-29T04:00:00Z")
        ));
        assert!(!s.already(
            "hook",
            &event(EventKind::Failed, "www", "2026-11-30T00:00:01Z")
        ));
    }

    #[test]
    fn a_damaged_record_starts_afresh() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(FILE), b"{not json").expect("write");
        let s = Sent::load(dir.path());
        assert!(!s.already(
            "hook",
            &event(EventKind::Failed, "www", "2026-11-29T03:17:00Z")
        ));
    }
}
