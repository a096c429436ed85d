//! Where a renewal stands, as a tagged enum whose phases carry the data they need:
//! a step reads its phase's fields and never meets one that is missing.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::stamp;
use crate::ids::{InstanceId, OrderId, Subject};

/// Which paid call a renewal attempt makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PaidCall {
    /// RenewCertificateOrderForPackageRequest on the source order.
    #[default]
    Renew,
    /// CreateCertificateForPackageRequest: a new certificate for a kind CAS does not
    /// renew (`renewal.mode: reapply`).
    Create,
    /// The re-issue of a V2.0 instance's certificate within its service period:
    /// UpdateInstance (repeatable), then ApplyCertificate (never repeated blindly).
    /// Spends no quota, but an application under review cannot be made twice.
    Reissue,
}

impl PaidCall {
    pub fn action(self) -> &'static str {
        match self {
            PaidCall::Renew => "RenewCertificateOrderForPackageRequest",
            PaidCall::Create => "CreateCertificateForPackageRequest",
            PaidCall::Reissue => "ApplyCertificate",
        }
    }
}

/// A key this host made and keeps under the state directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFile {
    pub key_path: PathBuf,
    /// SHA-256 of the key's SubjectPublicKeyInfo, hex.
    pub key_spki_sha256: String,
}

/// The V2.0 instance an attempt re-issues (its order fields are [`OrderId::NONE`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRef {
    pub instance_id: InstanceId,
    /// The instance's CertificateId before the re-issue: the re-issue's certificate
    /// is the one with another id.
    #[serde(default)]
    pub previous_certificate_id: Option<i64>,
}

impl InstanceRef {
    pub fn new(instance_id: &InstanceId, previous_certificate_id: Option<i64>) -> InstanceRef {
        InstanceRef {
            instance_id: instance_id.clone(),
            previous_certificate_id,
        }
    }
}

/// A renewal attempt of ours before its order is known: its id, the order it
/// replaces, the paid call it makes and the key its CSR carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// Random id of the attempt; names its key and files, and tags its order.
    pub attempt: String,
    pub source_order_id: OrderId,
    #[serde(default)]
    pub paid_call: PaidCall,
    /// The ProductCode of the paid call (`create`), or of the source order.
    #[serde(default)]
    pub product_code: Option<String>,
    #[serde(flatten)]
    pub key: KeyFile,
    pub csr_sha256: String,
    /// The instance a `reissue` attempt is about; none for an order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<InstanceRef>,
}

/// The paid call is (about to be) made; its outcome may be unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewRequested {
    #[serde(flatten)]
    pub attempt: Attempt,
    #[serde(default = "Utc::now", with = "stamp::or_now")]
    pub requested_at: DateTime<Utc>,
    /// Every OrderId the account showed before the paid call: an unclear call's
    /// order is one not in this list. Empty in journals older than the list: then
    /// an order newer than the source stands for "not known before".
    #[serde(default)]
    pub known_order_ids: Vec<OrderId>,
    /// When an unclear paid call's grace period ended without its order showing.
    #[serde(default, with = "stamp")]
    pub unclear_since: Option<DateTime<Utc>>,
}

/// What validation published for an order, to be removed when the order ends
/// (also after a crash), and what the operator was last told.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publication {
    /// A DNS validation record to delete (zone, record id).
    #[serde(default)]
    pub dns_record: Option<(String, String)>,
    /// A validation file to delete.
    #[serde(default)]
    pub validation_file: Option<PathBuf>,
    /// The validation instruction the operator was last given for this order, so
    /// it is logged once rather than at every poll.
    #[serde(default)]
    pub validation_told: Option<String>,
}

/// An order being followed until CAS issues it: ours (the paid call's) or one
/// made elsewhere and adopted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Following {
    pub attempt: String,
    pub new_order_id: OrderId,
    /// The order the paid call renewed; none for an adopted order.
    #[serde(default)]
    pub source_order_id: Option<OrderId>,
    /// When the paid call was made, or the order taken up.
    #[serde(default = "Utc::now", with = "stamp::or_now")]
    pub requested_at: DateTime<Utc>,
    #[serde(default)]
    pub paid_call: PaidCall,
    #[serde(default)]
    pub product_code: Option<String>,
    /// The order was taken over from elsewhere (console, another host), not made here.
    #[serde(default)]
    pub adopted: bool,
    /// Our key and CSR; none for an adopted order (CAS makes its key).
    #[serde(default)]
    pub key: Option<KeyFile>,
    #[serde(default)]
    pub csr_sha256: Option<String>,
    #[serde(flatten)]
    pub published: Publication,
    /// What the operator must do for an order stuck in `payed` (pending application)
    /// that cas-renewd cannot submit itself.
    #[serde(default)]
    pub pending_application: Option<String>,
    /// The V2.0 instance followed instead of an order (`new_order_id` is
    /// [`OrderId::NONE`] then); none for an order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<InstanceRef>,
    /// When an instance's ApplyCertificate was sent a second time (after the first
    /// one's unclear outcome), journaled before that call goes out: a second call
    /// is made once at most, crash or not.
    #[serde(default, with = "stamp", skip_serializing_if = "Option::is_none")]
    pub reapplied_at: Option<DateTime<Utc>>,
}

/// The issued certificate passed its checks and is saved with its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    pub attempt: String,
    pub new_order_id: OrderId,
    #[serde(flatten)]
    pub key: KeyFile,
    /// Certificate chain saved after the checks passed.
    pub issued_path: PathBuf,
    /// Our renewal (a CSR of ours), not an adopted order's certificate.
    #[serde(default)]
    pub renewed: bool,
    /// The V2.0 instance the certificate came from; none for an order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<InstanceRef>,
}

/// Issued but refused (or the paid call refused); needs an operator (`renew --force`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// What the refused order may have left published; removed when a renewal
    /// starts afresh.
    #[serde(flatten)]
    pub published: Publication,
}

/// Where a renewal stands, written before and after every step that matters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "phase", rename_all = "kebab-case")]
pub enum Phase {
    /// Nothing in flight.
    #[default]
    Idle,
    /// The new key is on disk; no paid call was made yet.
    KeyReady(Attempt),
    /// The paid call is being made; its outcome may be unknown.
    RenewRequested(RenewRequested),
    /// The paid call returned the new order (or an order made elsewhere is adopted).
    OrderCreated(Following),
    /// The new order sat in `payed` (pending application); the application call for
    /// it is being made. Never made twice: its outcome shows in the order's state.
    ApplicationRequested(Following),
    /// The application was accepted; the order is followed as after `OrderCreated`.
    ApplicationSubmitted(Following),
    /// The issued certificate passed its checks and is saved under the state dir.
    Issued(Issued),
    /// The output files are in place; the reload is pending.
    Installed,
    /// Issued but refused by the checks; needs an operator (`renew --force`).
    Rejected(Rejected),
}

/// The name of a phase, as the journal, `status` and the plan write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PhaseName {
    #[default]
    Idle,
    KeyReady,
    RenewRequested,
    OrderCreated,
    ApplicationRequested,
    ApplicationSubmitted,
    Issued,
    Installed,
    Rejected,
}

impl PhaseName {
    /// Every phase, in the order a renewal passes them.
    pub const ALL: [PhaseName; 9] = [
        PhaseName::Idle,
        PhaseName::KeyReady,
        PhaseName::RenewRequested,
        PhaseName::OrderCreated,
        PhaseName::ApplicationRequested,
        PhaseName::ApplicationSubmitted,
        PhaseName::Issued,
        PhaseName::Installed,
        PhaseName::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PhaseName::Idle => "idle",
            PhaseName::KeyReady => "key-ready",
            PhaseName::RenewRequested => "renew-requested",
            PhaseName::OrderCreated => "order-created",
            PhaseName::ApplicationRequested => "application-requested",
            PhaseName::ApplicationSubmitted => "application-submitted",
            PhaseName::Issued => "issued",
            PhaseName::Installed => "installed",
            PhaseName::Rejected => "rejected",
        }
    }
}

impl std::fmt::Display for PhaseName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which of the three phases that follow an order the journal is at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    OrderCreated,
    ApplicationRequested,
    ApplicationSubmitted,
}

impl RenewRequested {
    /// The paid call's order is known: follow it.
    pub fn ordered(self, new_order_id: OrderId) -> Following {
        let a = self.attempt;
        Following {
            attempt: a.attempt,
            new_order_id,
            source_order_id: Some(a.source_order_id),
            requested_at: self.requested_at,
            paid_call: a.paid_call,
            product_code: a.product_code,
            adopted: false,
            key: Some(a.key),
            csr_sha256: Some(a.csr_sha256),
            published: Publication::default(),
            pending_application: None,
            instance: a.instance,
            reapplied_at: None,
        }
    }
}

impl Following {
    /// An order made elsewhere (console, another host), taken up at `now`.
    pub fn adopted(attempt: String, order: OrderId, now: DateTime<Utc>) -> Following {
        Following {
            attempt,
            new_order_id: order,
            source_order_id: None,
            requested_at: now,
            paid_call: PaidCall::Renew,
            product_code: None,
            adopted: true,
            key: None,
            csr_sha256: None,
            published: Publication::default(),
            pending_application: None,
            instance: None,
            reapplied_at: None,
        }
    }

    /// An application under review on `instance` made elsewhere (console, another
    /// host), taken up at `now`: followed until its certificate shows.
    pub fn adopted_instance(
        attempt: String,
        instance: InstanceRef,
        now: DateTime<Utc>,
    ) -> Following {
        Following {
            paid_call: PaidCall::Reissue,
            instance: Some(instance),
            ..Following::adopted(attempt, OrderId::NONE, now)
        }
    }

    /// What is followed: the order, or the instance.
    pub fn subject(&self) -> Subject {
        match &self.instance {
            Some(i) => Subject::Instance(i.instance_id.clone()),
            None => Subject::Order(self.new_order_id),
        }
    }
}

impl Phase {
    pub fn name(&self) -> PhaseName {
        match self {
            Phase::Idle => PhaseName::Idle,
            Phase::KeyReady(_) => PhaseName::KeyReady,
            Phase::RenewRequested(_) => PhaseName::RenewRequested,
            Phase::OrderCreated(_) => PhaseName::OrderCreated,
            Phase::ApplicationRequested(_) => PhaseName::ApplicationRequested,
            Phase::ApplicationSubmitted(_) => PhaseName::ApplicationSubmitted,
            Phase::Issued(_) => PhaseName::Issued,
            Phase::Installed => PhaseName::Installed,
            Phase::Rejected(_) => PhaseName::Rejected,
        }
    }

    /// The phase that follows `order` at `stage`.
    pub fn following(stage: Stage, order: Following) -> Phase {
        match stage {
            Stage::OrderCreated => Phase::OrderCreated(order),
            Stage::ApplicationRequested => Phase::ApplicationRequested(order),
            Stage::ApplicationSubmitted => Phase::ApplicationSubmitted(order),
        }
    }

    /// A renewal is under way (a step of the engine carries it on).
    pub fn in_flight(&self) -> bool {
        !matches!(self, Phase::Idle | Phase::Installed | Phase::Rejected(_))
    }

    /// The id of the current attempt, whose key and files are kept.
    pub fn attempt(&self) -> Option<&str> {
        match self {
            Phase::KeyReady(a) => Some(&a.attempt),
            Phase::RenewRequested(r) => Some(&r.attempt.attempt),
            Phase::OrderCreated(o)
            | Phase::ApplicationRequested(o)
            | Phase::ApplicationSubmitted(o) => Some(&o.attempt),
            Phase::Issued(i) => Some(&i.attempt),
            Phase::Idle | Phase::Installed | Phase::Rejected(_) => None,
        }
    }

    /// The order this phase is about: the new one when known, else the one renewed;
    /// none for a phase about an instance.
    pub fn order_id(&self) -> Option<OrderId> {
        let id = match self {
            Phase::KeyReady(a) => Some(a.source_order_id),
            Phase::RenewRequested(r) => Some(r.attempt.source_order_id),
            Phase::OrderCreated(o)
            | Phase::ApplicationRequested(o)
            | Phase::ApplicationSubmitted(o) => Some(o.new_order_id),
            Phase::Issued(i) => Some(i.new_order_id),
            Phase::Idle | Phase::Installed | Phase::Rejected(_) => None,
        };
        id.filter(|o| *o != OrderId::NONE)
    }

    /// The new order of the attempt, once known (never for an instance).
    pub fn new_order_id(&self) -> Option<OrderId> {
        let id = match self {
            Phase::OrderCreated(o)
            | Phase::ApplicationRequested(o)
            | Phase::ApplicationSubmitted(o) => Some(o.new_order_id),
            Phase::Issued(i) => Some(i.new_order_id),
            _ => None,
        };
        id.filter(|o| *o != OrderId::NONE)
    }

    /// The V2.0 instance this phase is about, if it is about one.
    pub fn instance(&self) -> Option<&InstanceRef> {
        match self {
            Phase::KeyReady(a) => a.instance.as_ref(),
            Phase::RenewRequested(r) => r.attempt.instance.as_ref(),
            Phase::OrderCreated(o)
            | Phase::ApplicationRequested(o)
            | Phase::ApplicationSubmitted(o) => o.instance.as_ref(),
            Phase::Issued(i) => i.instance.as_ref(),
            Phase::Idle | Phase::Installed | Phase::Rejected(_) => None,
        }
    }

    /// The ProductCode of an attempt whose paid call may be out.
    pub fn product_code(&self) -> Option<&str> {
        match self {
            Phase::KeyReady(a) => a.product_code.as_deref(),
            Phase::RenewRequested(r) => r.attempt.product_code.as_deref(),
            _ => None,
        }
    }

    /// What validation published, when the phase records any.
    pub fn publication(&self) -> Option<&Publication> {
        match self {
            Phase::OrderCreated(o)
            | Phase::ApplicationRequested(o)
            | Phase::ApplicationSubmitted(o) => Some(&o.published),
            Phase::Rejected(r) => Some(&r.published),
            _ => None,
        }
    }

    /// The pending-application message of an order being followed.
    pub fn pending_application(&self) -> Option<&str> {
        match self {
            Phase::OrderCreated(o)
            | Phase::ApplicationRequested(o)
            | Phase::ApplicationSubmitted(o) => o.pending_application.as_deref(),
            _ => None,
        }
    }

    /// Since when an unclear paid call has shown no order.
    pub fn unclear_since(&self) -> Option<DateTime<Utc>> {
        match self {
            Phase::RenewRequested(r) => r.unclear_since,
            _ => None,
        }
    }
}

#[cfg(test)]
impl Phase {
    /// A phase named `name` about `order` (new or source), with made-up data:
    /// for tests that care about the phase and its order only.
    pub fn example(name: PhaseName, order: OrderId) -> Phase {
        let attempt = Attempt {
            attempt: "3f9c2a1b7d4e".into(),
            source_order_id: order,
            paid_call: PaidCall::Renew,
            product_code: None,
            key: KeyFile {
                key_path: "/var/lib/cas-renewd/keys/www-3f9c2a1b7d4e.key".into(),
                key_spki_sha256: "ab".repeat(32),
            },
            csr_sha256: "cd".repeat(32),
            instance: None,
        };
        let requested = RenewRequested {
            attempt: attempt.clone(),
            requested_at: Utc::now(),
            known_order_ids: vec![],
            unclear_since: None,
        };
        let following = requested.clone().ordered(order);
        match name {
            PhaseName::Idle => Phase::Idle,
            PhaseName::KeyReady => Phase::KeyReady(attempt),
            PhaseName::RenewRequested => Phase::RenewRequested(requested),
            PhaseName::OrderCreated => Phase::OrderCreated(following),
            PhaseName::ApplicationRequested => Phase::ApplicationRequested(following),
            PhaseName::ApplicationSubmitted => Phase::ApplicationSubmitted(following),
            PhaseName::Issued => Phase::Issued(Issued {
                attempt: attempt.attempt,
                new_order_id: order,
                key: attempt.key,
                issued_path: "/var/lib/cas-renewd/issued/www-3f9c2a1b7d4e.pem".into(),
                renewed: true,
                instance: None,
            }),
            PhaseName::Installed => Phase::Installed,
            PhaseName::Rejected => Phase::Rejected(Rejected::default()),
        }
    }
}
