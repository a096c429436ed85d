//! An order's way to issuance: DescribeCertificateState moves a renewal through
//! payed, domain verification and processing to an issued certificate.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use serde_json::{Value, json};

use super::{
    DNS_RECORD_HOST, FILE_VALIDATION_URI, Order, Phase, Renewal, SimError, World, int_param,
    validation_sim,
};
use crate::ca::{Ca, IssueJob, Issued, Twist};
use crate::scenario::{IssueOutcome, ValidationKind};

impl World {
    pub(super) fn order_mut(
        &mut self,
        p: &HashMap<String, String>,
    ) -> Result<&mut Order, SimError> {
        let id = int_param(p, "OrderId")?.ok_or_else(|| SimError::missing("OrderId"))?;
        self.orders.get_mut(&id).ok_or_else(|| {
            SimError::new(
                400,
                "InvalidOrderId.NotFound",
                format!("The order {id} does not exist."),
            )
        })
    }

    /// Makes the certificate of an order from the scenario on first request: CAS
    /// generated its key, so the answer carries the private key.
    pub(super) fn ensure_original_material(&mut self, order_id: i64) -> Result<(), SimError> {
        let Some(job) = self.original_job(order_id) else {
            return Ok(());
        };
        let (_, issued) = self.issued_for(order_id, job)?;
        if let Some(o) = self.orders.get_mut(&order_id) {
            o.issued = Some(issued);
        }
        Ok(())
    }

    /// The issuance an order from the scenario still needs for its certificate.
    fn original_job(&self, order_id: i64) -> Option<IssueJob> {
        let o = self.orders.get(&order_id)?;
        if o.issued.is_some() || o.renewal.is_some() {
            return None;
        }
        let now_wall = Utc::now().timestamp_millis();
        let end = o.cert_end_ms.unwrap_or(now_wall);
        // A not-before in the wall clock's past keeps the certificate usable even
        // after the simulated clock was moved forward.
        let start = (end - self.validity_ms).min(now_wall - 300_000);
        Some(IssueJob {
            csr: None,
            names: o.names(),
            algorithm: o.algorithm.clone(),
            not_before_ms: start,
            not_after_ms: end,
            twist: Twist::None,
            avoid_key: None,
        })
    }

    /// The issuance `action` with `p` is about to do, if any, with the CA that does
    /// it: the server does it outside the world's lock and hands the result over
    /// with [`World::offer`], so no request waits behind key generation or signing.
    pub fn issuance_ahead(
        &self,
        action: &str,
        p: &HashMap<String, String>,
    ) -> Option<(i64, IssueJob, Arc<Ca>)> {
        let order_id = match action {
            "DescribeCertificateState" => int_param(p, "OrderId").ok()??,
            "GetUserCertificateDetail" => *self.by_cert.get(&int_param(p, "CertId").ok()??)?,
            _ => return None,
        };
        let job = self.original_job(order_id).or_else(|| {
            self.issues_on_next_poll(order_id)
                .then(|| self.renewal_job(order_id, self.now_ms()))?
        })?;
        Some((order_id, job, self.ca.clone()))
    }

    /// Keeps a certificate made outside the lock for `order_id`'s coming issuance.
    pub fn offer(&mut self, order_id: i64, job: IssueJob, issued: Issued) {
        self.prepared.insert(order_id, (job, issued));
    }

    /// The certificate for `job`: the one prepared outside the lock when it was made
    /// for the same issuance (its times within [`PREPARED_SLACK_MS`]), else made now.
    /// Returns the job that was done (its times are the certificate's).
    fn issued_for(&mut self, order_id: i64, job: IssueJob) -> Result<(IssueJob, Issued), SimError> {
        if let Some((done, issued)) = self.prepared.remove(&order_id)
            && same_issuance(&done, &job)
        {
            return Ok((done, issued));
        }
        let issued = self
            .ca
            .issue_job(&job)
            .map_err(|e| SimError::new(500, "InternalError", e.to_string()))?;
        Ok((job, issued))
    }

    pub(super) fn certificate_fields(o: &Order) -> (Option<String>, Option<String>) {
        match &o.issued {
            Some(i) => (
                Some(format!("{}{}", i.leaf_pem, i.chain_pem)),
                i.private_key_pem.clone(),
            ),
            None => (None, None),
        }
    }

    fn validation_done(&self, o: &Order, token: &str) -> bool {
        self.validated(&o.domain, token, self.validation)
    }

    /// Whether `token` is published for `domain` the way `kind` asks: a TXT record
    /// at `_dnsauth.` the domain, or the file under the web root. V1 orders and
    /// V2.0 instances share it.
    pub(super) fn validated(&self, domain: &str, token: &str, kind: ValidationKind) -> bool {
        let base = domain.trim_start_matches("*.");
        match kind {
            ValidationKind::None => true,
            ValidationKind::Dns => {
                let want = format!("{DNS_RECORD_HOST}.{base}");
                self.records.iter().any(|r| {
                    r.rtype.eq_ignore_ascii_case("TXT")
                        && r.fqdn().eq_ignore_ascii_case(&want)
                        && r.value == token
                })
            }
            ValidationKind::File => self.webroot.as_ref().is_some_and(|root| {
                std::fs::read_to_string(root.join(FILE_VALIDATION_URI.trim_start_matches('/')))
                    .is_ok_and(|c| c.trim() == token.trim())
            }),
        }
    }

    pub(super) fn describe_state(
        &mut self,
        p: &HashMap<String, String>,
    ) -> Result<Value, SimError> {
        let order_id = self.order_mut(p)?.order_id;
        self.ensure_original_material(order_id)?;
        let now = self.now_ms();
        let (phase, token, validated) = self.count_poll(order_id)?;
        let next = if matches!(phase, Phase::Certificate | Phase::VerifyFail) {
            phase
        } else {
            self.advance_renewal(order_id, &token, validated, now)?
        };
        Ok(self.state_json(&self.orders[&order_id], next, &token))
    }

    /// Counts a poll of a renewal still in progress; returns its phase, its
    /// validation token and whether it was validated. An original order is issued.
    fn count_poll(&mut self, order_id: i64) -> Result<(Phase, String, bool), SimError> {
        let o = self
            .orders
            .get_mut(&order_id)
            .ok_or_else(|| SimError::missing("OrderId"))?;
        Ok(match &mut o.renewal {
            None => (Phase::Certificate, String::new(), true),
            Some(r) => {
                if !matches!(r.phase, Phase::Certificate | Phase::VerifyFail) {
                    r.polls += 1;
                }
                (r.phase, r.token.clone(), r.validated)
            }
        })
    }

    /// Moves a renewal in progress to its next phase, issuing its certificate when
    /// it gets there.
    fn advance_renewal(
        &mut self,
        order_id: i64,
        token: &str,
        validated: bool,
        now: i64,
    ) -> Result<Phase, SimError> {
        let o = &self.orders[&order_id];
        let r = o
            .renewal
            .as_ref()
            .ok_or_else(|| SimError::missing("OrderId"))?;
        let validated = validated || self.validation_done(o, token);
        let next = self.next_phase(o, r, validated);
        if next == Phase::Certificate {
            self.issue_renewal(order_id, now)?;
        }
        let o = self
            .orders
            .get_mut(&order_id)
            .ok_or_else(|| SimError::missing("OrderId"))?;
        if let Some(r) = &mut o.renewal {
            r.phase = next;
            r.validated = validated;
        }
        Ok(next)
    }

    /// Where a renewal in progress goes on this poll: it waits for its application
    /// and one poll, then for validation, then for the scenario's number of polls.
    fn next_phase(&self, o: &Order, r: &Renewal, validated: bool) -> Phase {
        let polls_needed = self.polls_before_issued;
        if !r.applied || r.polls == 1 && polls_needed > 0 {
            Phase::Payed
        } else if !validated {
            Phase::DomainVerify
        } else if r.polls > polls_needed && o.issue == IssueOutcome::VerifyFail {
            Phase::VerifyFail
        } else if r.polls > polls_needed {
            Phase::Certificate
        } else {
            Phase::Process
        }
    }

    /// Whether the next DescribeCertificateState of `order_id` issues its renewal
    /// (what [`World::describe_state`] will decide, without changing anything).
    fn issues_on_next_poll(&self, order_id: i64) -> bool {
        let Some(o) = self.orders.get(&order_id) else {
            return false;
        };
        let Some(r) = &o.renewal else {
            return false;
        };
        if matches!(r.phase, Phase::Certificate | Phase::VerifyFail) {
            return false;
        }
        let mut after = r.clone();
        after.polls += 1;
        let validated = r.validated || self.validation_done(o, &r.token);
        self.next_phase(o, &after, validated) == Phase::Certificate
    }

    /// The issuance of `order_id`'s renewal at simulated time `now`.
    fn renewal_job(&self, order_id: i64, now: i64) -> Option<IssueJob> {
        let o = self.orders.get(&order_id)?;
        let r = o.renewal.as_ref()?;
        let validity = o.kind.validity_ms(self.validity_ms);
        let wall = Utc::now().timestamp_millis();
        Some(IssueJob {
            csr: r.csr.clone(),
            names: o.names(),
            algorithm: o.algorithm.clone(),
            not_before_ms: now.min(wall) - 300_000,
            not_after_ms: now + validity,
            twist: twist_of(o.issue),
            // A key CAS makes for a renewal is a new one, never the source order's.
            avoid_key: o
                .source_order_id
                .and_then(|s| self.orders.get(&s))
                .and_then(|s| s.issued.as_ref())
                .and_then(|i| i.private_key_pem.clone()),
        })
    }

    /// Issues a renewal's certificate (from its CSR when it has one) and records it
    /// on the order.
    fn issue_renewal(&mut self, order_id: i64, now: i64) -> Result<(), SimError> {
        let job = self
            .renewal_job(order_id, now)
            .ok_or_else(|| SimError::missing("OrderId"))?;
        let validity = job.not_after_ms - now;
        let (done, issued) = self.issued_for(order_id, job)?;
        // The prepared certificate's times are the order's: what the detail reports
        // matches the certificate.
        let (start, end) = (done.not_after_ms - validity, done.not_after_ms);
        let cert_id = self.next_cert_id;
        self.next_cert_id += 1;
        self.by_cert.insert(cert_id, order_id);
        let o = self
            .orders
            .get_mut(&order_id)
            .ok_or_else(|| SimError::missing("OrderId"))?;
        o.issued = Some(issued);
        o.certificate_id = Some(cert_id);
        o.cert_start_ms = Some(start);
        o.cert_end_ms = Some(end);
        Ok(())
    }

    /// DescribeCertificateState's answer for an order in phase `next`.
    fn state_json(&self, o: &Order, next: Phase, token: &str) -> Value {
        let mut out = json!({ "Type": next.as_str() });
        match next {
            Phase::DomainVerify => self.add_validation_fields(o, token, &mut out),
            Phase::Certificate => {
                let (cert, key) = Self::certificate_fields(o);
                out["Certificate"] = json!(cert);
                if let Some(k) = key {
                    out["PrivateKey"] = json!(k);
                }
                out["CertId"] = json!(o.certificate_id.map(|c| c.to_string()));
            }
            _ => {}
        }
        out
    }

    /// What the applicant must publish: a DNS TXT record or a file on the web server.
    fn add_validation_fields(&self, o: &Order, token: &str, out: &mut Value) {
        match self.validation {
            ValidationKind::Dns => {
                out["ValidateType"] = json!("DNS");
                out["RecordDomain"] = json!(validation_sim::record_domain(
                    self.record_domain,
                    &o.domain,
                    &self.zones
                ));
                out["RecordType"] = json!("TXT");
                out["RecordValue"] = json!(token);
                if let Some(h) = self.hostile_record {
                    validation_sim::make_hostile(h, &o.domain, out);
                }
            }
            _ => {
                out["ValidateType"] = json!("FILE");
                out["Domain"] = json!(o.domain);
                out["Uri"] = json!(FILE_VALIDATION_URI);
                out["Content"] = json!(token);
            }
        }
    }
}

/// The flaw the scenario wants in an issued certificate.
pub(super) fn twist_of(issue: IssueOutcome) -> Twist {
    match issue {
        IssueOutcome::WrongKey => Twist::WrongKey,
        IssueOutcome::WrongName => Twist::WrongName,
        IssueOutcome::Expired => Twist::Expired,
        IssueOutcome::Ok | IssueOutcome::VerifyFail => Twist::None,
    }
}

/// How far a prepared certificate's times may be from the issuance's: the few
/// milliseconds between preparing it and taking the lock again. A larger gap (the
/// simulated clock was moved meanwhile) means it was made for another moment.
const PREPARED_SLACK_MS: i64 = 5_000;

/// Whether `prepared` was made for the issuance `job` describes.
fn same_issuance(prepared: &IssueJob, job: &IssueJob) -> bool {
    let close = |a: i64, b: i64| (a - b).abs() <= PREPARED_SLACK_MS;
    prepared.csr == job.csr
        && prepared.names == job.names
        && prepared.algorithm == job.algorithm
        && prepared.twist == job.twist
        && prepared.avoid_key == job.avoid_key
        && close(prepared.not_before_ms, job.not_before_ms)
        && close(prepared.not_after_ms, job.not_after_ms)
}
