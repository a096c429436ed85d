//! The flat journal every version before the phase enum wrote (no `"version"`),
//! and its conversion to the current form on read.
//!
//! The conversion is safe first: a journal whose phase lacks the data it needs
//! never becomes a state that would pay again for a call that may already be out.
//! A renewal whose paid call may be out (renew-requested, or an order phase without
//! its order) becomes a reconciliation when the journal holds what one needs, and
//! otherwise `rejected` with the reason in `last_error`, so only the operator
//! (`renew --force`) pays again. Phases before the paid call (key-ready) start over
//! from `idle` when incomplete: nothing was spent yet.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::phase::{
    Attempt, Following, Issued, KeyFile, PaidCall, Phase, PhaseName, Publication, Rejected,
    RenewRequested,
};
use super::{Journal, new_attempt_id, stamp};
use crate::ids::OrderId;

/// The flat journal: one field per datum, most meaningful in some phases only.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(super) struct LegacyJournal {
    cert: String,
    /// The flat form's phase names are the current ones.
    phase: PhaseName,
    attempt: Option<String>,
    source_order_id: Option<OrderId>,
    new_order_id: Option<OrderId>,
    #[serde(with = "stamp")]
    requested_at: Option<DateTime<Utc>>,
    paid_call: PaidCall,
    product_code: Option<String>,
    known_order_ids: Vec<OrderId>,
    #[serde(with = "stamp")]
    unclear_since: Option<DateTime<Utc>>,
    adopted: bool,
    pending_application: Option<String>,
    key_path: Option<PathBuf>,
    key_spki_sha256: Option<String>,
    csr_sha256: Option<String>,
    issued_path: Option<PathBuf>,
    dns_record: Option<(String, String)>,
    validation_file: Option<PathBuf>,
    validation_told: Option<String>,
    reload_pending: Vec<String>,
    unusable_orders: Vec<OrderId>,
    installed_sha256: Option<String>,
    served_sha256: Option<String>,
    #[serde(with = "stamp")]
    served_checked_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    #[serde(with = "stamp")]
    last_success: Option<DateTime<Utc>>,
    #[serde(with = "stamp")]
    updated_at: Option<DateTime<Utc>>,
}

impl From<LegacyJournal> for Journal {
    fn from(l: LegacyJournal) -> Journal {
        let (phase, problem) = l.phase();
        let last_error = match problem {
            Some(p) => Some(format!(
                "{p}; cas-renewd pays nothing more for it: check the order in the CAS console, then run `cas-renewd renew --cert {} --force`",
                l.cert
            )),
            None => l.last_error.clone(),
        };
        Journal {
            last_order_id: l.new_order_id.or(l.source_order_id),
            cert: l.cert,
            phase,
            reload_pending: l.reload_pending,
            unusable_orders: l.unusable_orders,
            installed_sha256: l.installed_sha256,
            served_sha256: l.served_sha256,
            served_checked_at: l.served_checked_at,
            last_error,
            last_success: l.last_success,
            updated_at: l.updated_at,
            ..Journal::default()
        }
    }
}

impl LegacyJournal {
    /// The phase with its data, and what was missing when the journal could only
    /// be converted to `rejected`.
    fn phase(&self) -> (Phase, Option<String>) {
        let published = Publication {
            dns_record: self.dns_record.clone(),
            validation_file: self.validation_file.clone(),
            validation_told: self.validation_told.clone(),
        };
        match self.phase {
            PhaseName::Idle => (Phase::Idle, None),
            PhaseName::Installed => (Phase::Installed, None),
            PhaseName::Rejected => (Phase::Rejected(Rejected { published }), None),
            // Nothing was spent at key-ready: without its key it starts over.
            PhaseName::KeyReady => (
                self.attempt_data().map_or(Phase::Idle, Phase::KeyReady),
                None,
            ),
            PhaseName::RenewRequested => self.reconcile(published),
            PhaseName::OrderCreated
            | PhaseName::ApplicationRequested
            | PhaseName::ApplicationSubmitted => match self.following(published.clone()) {
                Some(o) => (
                    match self.phase {
                        PhaseName::ApplicationRequested => Phase::ApplicationRequested(o),
                        PhaseName::ApplicationSubmitted => Phase::ApplicationSubmitted(o),
                        _ => Phase::OrderCreated(o),
                    },
                    None,
                ),
                // These phases are written only after the paid call returned its
                // order, so the call certainly succeeded; without the order's id a
                // reconciliation could miss it and pay again: the operator decides.
                None => self.lost_order(published),
            },
            PhaseName::Issued => match (self.issued(), self.following(published.clone())) {
                (Some(i), _) => (Phase::Issued(i), None),
                // The chain or key is not recorded: fetch the issued order again
                // (no call is paid for that).
                (None, Some(o)) => (Phase::OrderCreated(o), None),
                (None, None) => self.lost_order(published),
            },
        }
    }

    fn key(&self) -> Option<KeyFile> {
        Some(KeyFile {
            key_path: self.key_path.clone()?,
            // Only a record, never checked; empty if an old journal lacked it.
            key_spki_sha256: self.key_spki_sha256.clone().unwrap_or_default(),
        })
    }

    fn attempt_data(&self) -> Option<Attempt> {
        Some(Attempt {
            instance: None,
            attempt: self.attempt.clone()?,
            source_order_id: self.source_order_id?,
            paid_call: self.paid_call,
            product_code: self.product_code.clone(),
            key: self.key()?,
            csr_sha256: self.csr_sha256.clone()?,
        })
    }

    /// A paid call that may be out: reconciled (its order looked for, never paid
    /// again blindly) when the journal names the attempt, its source order and
    /// key; else `rejected`. A journal older than `known_order_ids` reconciles
    /// with "newer than the source order" standing for "not known before".
    fn reconcile(&self, published: Publication) -> (Phase, Option<String>) {
        match self.attempt_data() {
            Some(attempt) => (
                Phase::RenewRequested(RenewRequested {
                    attempt,
                    // Unknown: the waits start again now (see `stamp::or_now`).
                    requested_at: self.requested_at.unwrap_or_else(Utc::now),
                    known_order_ids: self.known_order_ids.clone(),
                    unclear_since: self.unclear_since,
                }),
                None,
            ),
            None => (
                Phase::Rejected(Rejected { published }),
                Some(format!(
                    "the journal (written by an earlier version) is at {} but lacks the attempt, source order or key a paid call's order is looked for with",
                    self.phase
                )),
            ),
        }
    }

    /// A phase written after the paid call returned, but without the order it
    /// returned: never reconciled (which could pay again), `rejected` instead. The
    /// record or file it published stays in the phase, removed when the journal
    /// starts afresh (`renew --force`, or an import).
    fn lost_order(&self, published: Publication) -> (Phase, Option<String>) {
        (
            Phase::Rejected(Rejected { published }),
            Some(format!(
                "the journal (written by an earlier version) is at {} but does not name the order its paid call returned",
                self.phase
            )),
        )
    }

    fn following(&self, published: Publication) -> Option<Following> {
        Some(Following {
            instance: None,
            attempt: self.attempt.clone().unwrap_or_else(new_attempt_id),
            new_order_id: self.new_order_id?,
            source_order_id: self.source_order_id,
            // Unknown: the issuance timeout starts again now.
            requested_at: self.requested_at.unwrap_or_else(Utc::now),
            paid_call: self.paid_call,
            product_code: self.product_code.clone(),
            adopted: self.adopted,
            key: self.key(),
            csr_sha256: self.csr_sha256.clone(),
            published,
            pending_application: self.pending_application.clone(),
            reapplied_at: None,
        })
    }

    fn issued(&self) -> Option<Issued> {
        Some(Issued {
            instance: None,
            attempt: self.attempt.clone().unwrap_or_else(new_attempt_id),
            new_order_id: self.new_order_id?,
            key: self.key()?,
            issued_path: self.issued_path.clone()?,
            renewed: self.csr_sha256.is_some(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StateDir;

    const KEY: &str = "/var/lib/cas-renewd/keys/www-3f9c2a1b7d4e.key";

    fn at(t: &str) -> DateTime<Utc> {
        stamp::parse(t).expect("a fixture stamp")
    }

    /// Loads `text` as the journal of `www` from a state directory, checks that a
    /// save in the current form loads back the same, and returns it.
    fn load(text: &str) -> Journal {
        let d = tempfile::tempdir().expect("tempdir");
        let sd = StateDir::open(d.path()).expect("open");
        std::fs::write(sd.journal_path("www"), text).expect("write fixture");
        let j = sd
            .load_journal("www")
            .expect("an earlier version's journal loads");
        assert_eq!(j.cert, "www");
        let mut again = j.clone();
        sd.save_journal(&mut again).expect("save");
        let saved = std::fs::read_to_string(sd.journal_path("www")).expect("saved");
        assert!(saved.contains("\"version\": 2"), "{saved}");
        assert_eq!(sd.load_journal("www").expect("reload"), again);
        j
    }

    fn key() -> KeyFile {
        KeyFile {
            key_path: KEY.into(),
            key_spki_sha256: "ab".repeat(32),
        }
    }

    fn attempt() -> Attempt {
        Attempt {
            attempt: "3f9c2a1b7d4e".into(),
            source_order_id: OrderId::new(1001),
            paid_call: PaidCall::Renew,
            product_code: Some("digicert-free-1-free".into()),
            key: key(),
            csr_sha256: "cd".repeat(32),
            instance: None,
        }
    }

    /// The order 1002 of the renewal in most fixtures, as it is followed.
    fn following_1002(published: Publication, pending: Option<&str>) -> Following {
        Following {
            attempt: "3f9c2a1b7d4e".into(),
            new_order_id: OrderId::new(1002),
            source_order_id: Some(OrderId::new(1001)),
            requested_at: at("2026-11-29T05:59:58.25+00:00"),
            paid_call: PaidCall::Renew,
            product_code: Some("digicert-free-1-free".into()),
            adopted: false,
            key: Some(key()),
            csr_sha256: Some("cd".repeat(32)),
            published,
            pending_application: pending.map(str::to_owned),
            instance: None,
            reapplied_at: None,
        }
    }

    #[test]
    fn idle_keeps_the_facts_about_the_installed_certificate() {
        let j = load(include_str!("../fixtures/journal-idle.json"));
        assert_eq!(j.phase, Phase::Idle);
        assert_eq!(j.installed_sha256, Some("ef".repeat(32)));
        assert_eq!(j.served_sha256, Some("EF".repeat(32)));
        assert_eq!(j.served_checked_at, Some(at("2026-11-28T03:00:02+00:00")));
        assert_eq!(j.last_success, Some(at("2026-11-28T03:00:00.5+00:00")));
        assert!(j.reload_pending.is_empty() && j.last_order_id.is_none());
    }

    #[test]
    fn key_ready_keeps_its_key_and_source_order() {
        let j = load(include_str!("../fixtures/journal-key-ready.json"));
        assert_eq!(j.phase, Phase::KeyReady(attempt()));
        assert_eq!(j.unusable_orders, [OrderId::new(990)]);
    }

    #[test]
    fn renew_requested_stays_a_reconciliation_with_its_known_orders() {
        let j = load(include_str!("../fixtures/journal-renew-requested.json"));
        assert_eq!(
            j.phase,
            Phase::RenewRequested(RenewRequested {
                attempt: attempt(),
                requested_at: at("2026-11-29T05:59:58.25+00:00"),
                known_order_ids: vec![OrderId::new(990), OrderId::new(1001)],
                unclear_since: Some(at("2026-11-29T06:00:10+00:00")),
            })
        );
        assert_eq!(
            j.last_error.as_deref(),
            Some("RenewCertificateOrderForPackageRequest: connection reset")
        );
        assert_eq!(j.order_id(), Some(OrderId::new(1001)));
    }

    #[test]
    fn order_created_keeps_the_record_to_delete() {
        let j = load(include_str!("../fixtures/journal-order-created.json"));
        let published = Publication {
            dns_record: Some(("example.com".into(), "rec-77".into())),
            ..Publication::default()
        };
        assert_eq!(
            j.phase,
            Phase::OrderCreated(following_1002(published, None))
        );
    }

    #[test]
    fn a_create_call_keeps_its_product() {
        let j = load(include_str!(
            "../fixtures/journal-order-created-create.json"
        ));
        let Phase::OrderCreated(o) = j.phase else {
            panic!("{:?}", j.phase)
        };
        assert_eq!(o.paid_call, PaidCall::Create);
        assert_eq!(o.product_code.as_deref(), Some("digicert-free-1-free"));
        assert_eq!(
            (o.new_order_id, o.source_order_id),
            (OrderId::new(1003), Some(OrderId::new(1001)))
        );
        assert_eq!(o.key, Some(key()));
        assert!(!o.adopted);
    }

    #[test]
    fn an_adopted_order_has_no_key_of_ours() {
        let j = load(include_str!(
            "../fixtures/journal-order-created-adopted.json"
        ));
        let Phase::OrderCreated(o) = j.phase else {
            panic!("{:?}", j.phase)
        };
        assert!(o.adopted);
        assert_eq!(o.new_order_id, OrderId::new(1004));
        assert_eq!(o.source_order_id, None);
        assert_eq!((o.key, o.csr_sha256), (None, None));
        assert_eq!(o.requested_at, at("2026-11-29T05:00:00+00:00"));
    }

    #[test]
    fn application_requested_keeps_what_the_operator_was_told() {
        let j = load(include_str!(
            "../fixtures/journal-application-requested.json"
        ));
        assert_eq!(
            j.phase,
            Phase::ApplicationRequested(following_1002(
                Publication::default(),
                Some("order 1002 waits in payed")
            ))
        );
    }

    #[test]
    fn application_submitted_keeps_the_file_to_delete() {
        let j = load(include_str!(
            "../fixtures/journal-application-submitted.json"
        ));
        let published = Publication {
            dns_record: None,
            validation_file: Some("/srv/www/.well-known/pki-validation/fileauth.txt".into()),
            validation_told: Some("publish fileauth.txt".into()),
        };
        assert_eq!(
            j.phase,
            Phase::ApplicationSubmitted(following_1002(published, None))
        );
    }

    #[test]
    fn issued_keeps_its_chain_and_key() {
        let j = load(include_str!("../fixtures/journal-issued.json"));
        assert_eq!(
            j.phase,
            Phase::Issued(Issued {
                attempt: "3f9c2a1b7d4e".into(),
                new_order_id: OrderId::new(1002),
                key: key(),
                issued_path: "/var/lib/cas-renewd/issued/www-3f9c2a1b7d4e.pem".into(),
                renewed: true,
                instance: None,
            })
        );
    }

    #[test]
    fn installed_keeps_its_pending_hooks() {
        let j = load(include_str!("../fixtures/journal-installed.json"));
        assert_eq!(j.phase, Phase::Installed);
        assert_eq!(j.reload_pending, ["nginx", "haproxy"]);
        assert_eq!(j.unusable_orders, [OrderId::new(990)]);
        assert_eq!(j.installed_sha256, Some("12".repeat(32)));
        assert_eq!(j.order_id(), Some(OrderId::new(1002)));
    }

    #[test]
    fn rejected_keeps_its_reason() {
        let j = load(include_str!("../fixtures/journal-rejected.json"));
        assert_eq!(j.phase, Phase::Rejected(Rejected::default()));
        assert_eq!(
            j.last_error.as_deref(),
            Some(
                "certificate of order 1002 refused: not valid yet; the installed files are unchanged"
            )
        );
        assert_eq!(j.last_order_id, Some(OrderId::new(1002)));
    }

    #[test]
    fn the_first_format_without_the_later_fields_loads() {
        let j = load(include_str!("../fixtures/journal-v1-order-created.json"));
        let Phase::OrderCreated(o) = &j.phase else {
            panic!("{:?}", j.phase)
        };
        assert_eq!(o.paid_call, PaidCall::Renew);
        assert_eq!(
            o.published.dns_record,
            Some(("example.com".into(), "rec-5".into()))
        );
        assert_eq!(o.requested_at, at("2026-10-01T02:00:00.000000001+00:00"));
        assert!(!o.adopted && o.product_code.is_none());
        assert_eq!(j.last_success, Some(at("2026-09-01T02:00:00+00:00")));
    }

    #[test]
    fn the_fuzz_corpus_minimal_journal_follows_its_order() {
        let before = Utc::now();
        let j = load(include_str!("../fixtures/journal-minimal.json"));
        let Phase::OrderCreated(o) = &j.phase else {
            panic!("{:?}", j.phase)
        };
        assert_eq!(o.new_order_id, OrderId::new(7));
        assert_eq!((o.key.as_ref(), o.source_order_id), (None, None));
        // No stamp: the issuance timeout counts from the reading.
        assert!(o.requested_at >= before);
        assert!(!o.attempt.is_empty() && !o.attempt.contains('-'));
        assert_eq!(j.reload_pending, ["nginx"]);
    }

    #[test]
    fn a_stamp_edited_into_nonsense_reads_as_absent() {
        let before = Utc::now();
        let j = load(
            r#"{"cert":"www","phase":"order-created","new_order_id":7,"requested_at":"yesterday","last_success":"never"}"#,
        );
        let Phase::OrderCreated(o) = &j.phase else {
            panic!("{:?}", j.phase)
        };
        assert_eq!(o.new_order_id, OrderId::new(7));
        assert!(o.requested_at >= before);
        assert_eq!(j.last_success, None);
    }

    /// A renewal whose paid call may be out but whose journal lacks what the
    /// reconciliation needs is never turned into a state that pays again.
    #[test]
    fn an_incomplete_paid_phase_never_pays_again() {
        for text in [
            r#"{"cert":"www","phase":"renew-requested","source_order_id":1001}"#,
            r#"{"cert":"www","phase":"order-created","attempt":"ab","source_order_id":1001}"#,
            r#"{"cert":"www","phase":"issued","issued_path":"/x.pem"}"#,
        ] {
            let j = load(text);
            assert!(
                matches!(j.phase, Phase::Rejected(_)),
                "{text}: {:?}",
                j.phase
            );
            let why = j.last_error.unwrap_or_default();
            assert!(why.contains("renew --cert www --force"), "{why}");
        }
        // After the paid call returned, but without its order: never a
        // reconciliation (it could miss the order and pay again), even when the
        // journal has everything else; the record it published is kept for removal.
        for phase in ["order-created", "application-requested", "issued"] {
            let j = load(&format!(
                r#"{{"cert":"www","phase":"{phase}","attempt":"ab","source_order_id":1001,"key_path":"/k","csr_sha256":"cd","dns_record":["example.com","rec-1"]}}"#
            ));
            let Phase::Rejected(r) = &j.phase else {
                panic!("{phase}: {:?}", j.phase)
            };
            assert!(r.published.dns_record.is_some(), "{phase}: {r:?}");
            let why = j.last_error.unwrap_or_default();
            assert!(why.contains("renew --cert www --force"), "{why}");
        }
        // Before its answer, a paid call may be out: a reconciliation, as before.
        let j = load(
            r#"{"cert":"www","phase":"renew-requested","attempt":"ab","source_order_id":1001,"key_path":"/k","csr_sha256":"cd"}"#,
        );
        let Phase::RenewRequested(r) = &j.phase else {
            panic!("{:?}", j.phase)
        };
        assert!(r.known_order_ids.is_empty());
        assert_eq!(r.attempt.source_order_id, OrderId::new(1001));
        // Before the paid call, nothing was spent: an incomplete key-ready starts over.
        let j = load(r#"{"cert":"www","phase":"key-ready","source_order_id":1001}"#);
        assert_eq!(j.phase, Phase::Idle);
    }
}
