//! A V2.0 instance's applications: UpdateInstance fills one in, ApplyCertificate
//! submits it (a task GetTaskAttribute follows), GetInstanceDetail polls move it
//! through domain validation (the V1 DNS and file machinery) to an issued
//! certificate; CAS's managed re-issue (AutoReissue) issues by itself.
//!
//! Error codes the docs do not give are marked ASSUMED; the engine never branches
//! on them.

use std::collections::HashMap;

use chrono::Utc;
use serde_json::{Value, json};

use super::instances::{Instance, InstanceCert, Review, Task};
use super::issuance::twist_of;
use super::packages::csr_common_name;
use super::{SimError, World, int_param, new_token, param, required, validation_sim};
use crate::ca::Twist;
use crate::scenario::{IssueOutcome, ValidationKind};
use crate::v2::{AutoReissueKey, TaskIdForm};

const KEY_ALGORITHMS: [&str; 5] = ["RSA_2048", "RSA_3072", "RSA_4096", "ECC_256", "SM2"];

/// ASSUMED (undocumented code): an operation the instance's status does not allow.
fn invalid_status(id: &str, why: &str) -> SimError {
    SimError::new(400, "InvalidStatus", format!("The instance {id} {why}."))
}

fn one_of<'a>(
    p: &'a HashMap<String, String>,
    name: &str,
    allowed: &[&str],
) -> Result<Option<&'a str>, SimError> {
    match param(p, name) {
        Some(v) if !allowed.contains(&v) => Err(SimError::invalid(
            name,
            format!("one of {}", allowed.join(", ")),
        )),
        v => Ok(v),
    }
}

impl World {
    fn instance_mut(&mut self, id: &str) -> Result<&mut Instance, SimError> {
        self.instances
            .map
            .get_mut(id)
            .ok_or_else(|| SimError::missing("InstanceId"))
    }

    /// The instance `InstanceId` names, unless it is pending, over, refunded or
    /// closed (then no change is allowed).
    fn changeable(&self, p: &HashMap<String, String>) -> Result<String, SimError> {
        let id = self.instance_id_param(p)?;
        let id = id.as_str();
        let status = self.instances.map[id].status(self.now_ms());
        match status {
            "pending" => Err(invalid_status(id, "has an application under review")),
            "expired" | "refund" | "closed" => Err(invalid_status(
                id,
                &format!("is {status}; buy a renewal of the instance"),
            )),
            _ => Ok(id.to_owned()),
        }
    }

    /// UpdateInstance on a V2.0 instance (the V1 pending-application path is in
    /// `packages`).
    pub(super) fn update_instance_v2(
        &mut self,
        p: &HashMap<String, String>,
    ) -> Result<Value, SimError> {
        let id = self.changeable(p)?;
        let domain = self.instances.map[&id].domain.clone();
        // ASSUMED: a re-issue keeps the bound domain; another one is refused.
        if let Some(d) = param(p, "Domain")
            && !d.eq_ignore_ascii_case(&domain)
        {
            return Err(SimError::invalid(
                "Domain",
                format!("the instance is bound to {domain}"),
            ));
        }
        let method = one_of(p, "GenerateCsrMethod", &["online", "upload"])?.unwrap_or("online");
        let csr = match (method, param(p, "Csr")) {
            ("upload", None) => return Err(SimError::missing("Csr")),
            ("upload", Some(c)) => {
                let cn = csr_common_name(c)?;
                if cn != domain {
                    return Err(SimError::invalid(
                        "Csr",
                        format!("the CN {cn:?} is not the instance's domain"),
                    ));
                }
                Some(c.to_owned())
            }
            _ => None,
        };
        let validation = one_of(p, "ValidationMethod", &["DNS", "HTTP"])?;
        let key = one_of(p, "KeyAlgorithm", &KEY_ALGORITHMS)?;
        let auto = one_of(p, "AutoReissue", &["enable", "disable"])?;
        int_param(p, "CompanyId")?;
        let i = self.instance_mut(&id)?;
        i.app.method = method.to_owned();
        i.app.csr = csr;
        if let Some(v) = validation {
            i.app.validation_method = v.to_owned();
        }
        if let Some(k) = key {
            i.app.key_algorithm = k.to_owned();
        }
        if let Some(a) = auto {
            i.auto_reissue = a == "enable";
        }
        Ok(json!({}))
    }

    /// ApplyCertificate on a V2.0 instance: counted, then under review (or, for
    /// `issue: verify_fail`, a task that fails).
    pub(super) fn apply_certificate_v2(
        &mut self,
        p: &HashMap<String, String>,
    ) -> Result<Value, SimError> {
        let id = self.changeable(p)?;
        let i = self.instance_mut(&id)?;
        if i.app.method == "upload" && i.app.csr.is_none() {
            return Err(invalid_status(&id, "has no CSR; call UpdateInstance first"));
        }
        let issue = i.issue;
        *self.instances.apply_calls.entry(id.clone()).or_default() += 1;
        let i = self.instance_mut(&id)?;
        let failure = (issue == IssueOutcome::VerifyFail)
            .then(|| "The CA refused the application (simulated).".to_owned());
        i.pending_result = failure.clone();
        if failure.is_none() {
            i.review = Some(Review {
                token: new_token(),
                polls: 0,
                validated: false,
            });
        }
        // Under `v2.task_id: request_id` the answer's RequestId is the task's id,
        // so this call writes it (the server keeps a RequestId it finds).
        let (task_id, answer) = match self.instances.forms.task_id {
            TaskIdForm::InstanceId => (id.clone(), json!({})),
            TaskIdForm::RequestId => {
                let rid = super::new_request_id();
                (rid.clone(), json!({ "RequestId": rid }))
            }
        };
        let i = self.instance_mut(&id)?;
        i.task = Some(Task {
            id: task_id,
            polls: 0,
            failure,
        });
        Ok(answer)
    }

    /// GetTaskAttribute. ASSUMED: the TaskId of an ApplyCertificate is the
    /// instance's id (the Chinese doc says "实例 id"; ApplyCertificate answers only a
    /// RequestId), or with `v2.task_id: request_id` that RequestId.
    pub(super) fn task_attribute(
        &mut self,
        p: &HashMap<String, String>,
    ) -> Result<Value, SimError> {
        let task_id = required(p, "TaskId")?.to_owned();
        one_of(p, "TaskType", &["ApplyCertificate"])?;
        let polls_needed = self.instances.task_processing_polls;
        let task = self
            .instances
            .map
            .values_mut()
            .filter_map(|i| i.task.as_mut())
            .find(|t| t.id == task_id)
            // ASSUMED: the code is not documented.
            .ok_or_else(|| {
                SimError::new(
                    400,
                    "InvalidTaskId.NotFound",
                    format!("The task {task_id} does not exist."),
                )
            })?;
        task.polls += 1;
        Ok(match &task.failure {
            _ if task.polls <= polls_needed => json!({ "TaskStatus": "processing" }),
            Some(m) => json!({ "TaskStatus": "failed", "TaskMessage": m }),
            None => json!({ "TaskStatus": "success" }),
        })
    }

    /// How an instance's application is validated: not at all when the scenario
    /// validates nothing, else by the instance's ValidationMethod.
    fn instance_validation(&self, method: &str) -> ValidationKind {
        match (self.validation, method) {
            (ValidationKind::None, _) => ValidationKind::None,
            (_, "HTTP") => ValidationKind::File,
            _ => ValidationKind::Dns,
        }
    }

    /// `DomainValidationList` while an application waits for validation.
    pub(super) fn validation_list(&self, i: &Instance) -> Vec<Value> {
        let Some(r) = i.review.as_ref().filter(|r| !r.validated) else {
            return Vec::new();
        };
        let root = validation_sim::zone_hosting(i.domain.trim_start_matches("*."), &self.zones);
        let forms = &self.instances.forms;
        match self.instance_validation(&i.app.validation_method) {
            ValidationKind::None => Vec::new(),
            ValidationKind::Dns => vec![json!({
                "Domain": i.domain,
                "RootDomain": root,
                "ValidationType": "TXT",
                // ASSUMED: the host record relative to the root domain
                // (`v2.validation_key`, `v2.validation_value` for the others).
                "ValidationKey": forms.txt_key(&i.domain, &self.zones),
                "ValidationValue": forms.txt_value(&r.token),
            })],
            ValidationKind::File => vec![json!({
                "Domain": i.domain,
                "RootDomain": root,
                "ValidationType": "HTTP",
                // ASSUMED: the file's path on the domain's web server, its
                // content the token (`v2.file_key`, `v2.file_value`).
                "ValidationKey": forms.file_key(&i.domain),
                "ValidationValue": forms.file_content(&r.token),
            })],
        }
    }

    /// One GetInstanceDetail poll of an application under review: validation
    /// first, then the scenario's number of polls, then the certificate.
    pub(super) fn advance_review(&mut self, id: &str, now: i64) -> Result<(), SimError> {
        let i = &self.instances.map[id];
        let Some(r) = &i.review else {
            return Ok(());
        };
        let kind = self.instance_validation(&i.app.validation_method);
        // What must be published: the bare token in DNS, the whole content in a file.
        let want = match kind {
            ValidationKind::File => self.instances.forms.file_content(&r.token),
            _ => r.token.clone(),
        };
        let validated = r.validated || self.validated(&i.domain, &want, kind);
        let polls = r.polls + 1;
        let needed = self.instances.polls_before_issued;
        if let Some(r) = self
            .instances
            .map
            .get_mut(id)
            .and_then(|i| i.review.as_mut())
        {
            r.polls = polls;
            r.validated = validated;
        }
        if validated && polls > needed {
            self.issue_instance_cert(id, now, false)?;
        }
        Ok(())
    }

    /// Issues the instance's next certificate: from its CSR when the application
    /// uploaded one (for CAS's managed re-issue only with `v2.auto_reissue_key:
    /// last_csr`), else with a key CAS makes.
    fn issue_instance_cert(&mut self, id: &str, now: i64, auto: bool) -> Result<(), SimError> {
        let i = &self.instances.map[id];
        let reuse = self.instances.forms.auto_reissue_key == AutoReissueKey::LastCsr;
        let csr = if auto && !reuse {
            None
        } else {
            i.app.csr.clone()
        };
        let mut end = now + i.validity_ms;
        if self.instances.cert_within_service {
            end = end.min(i.end_ms);
        }
        let wall = Utc::now().timestamp_millis();
        let twist = if auto { Twist::None } else { twist_of(i.issue) };
        let issued = self
            .ca
            .issue(
                csr.as_deref(),
                &i.names(),
                i.ca_algorithm(),
                crate::ca::ms_offset(now.min(wall) - 300_000),
                crate::ca::ms_offset(end),
                twist,
            )
            .map_err(|e| SimError::new(500, "InternalError", e.to_string()))?;
        let cert_id = self.next_cert_id;
        self.next_cert_id += 1;
        self.instances.by_cert.insert(cert_id, id.to_owned());
        let i = self.instance_mut(id)?;
        i.certs.push(InstanceCert {
            cert_id,
            start_ms: now,
            end_ms: end,
            issued: Some(issued),
            auto,
        });
        i.review = None;
        i.pending_result = None;
        Ok(())
    }

    /// CAS's managed re-issue: every AutoReissue instance whose certificate is
    /// `willExpire` gets a new one while its service period has room for it.
    pub(super) fn auto_reissue_due(&mut self, now: i64) -> Result<(), SimError> {
        let within = self.instances.cert_within_service;
        let due: Vec<String> = self
            .instances
            .map
            .values()
            .filter(|i| i.auto_reissue && i.pinned.is_none() && i.review.is_none())
            .filter(|i| now < i.end_ms)
            .filter(|i| {
                i.latest().is_some_and(|c| {
                    c.end_ms - now <= i.will_expire_ms && (!within || c.end_ms < i.end_ms)
                })
            })
            .map(|i| i.id.clone())
            .collect();
        for id in due {
            self.issue_instance_cert(&id, now, true)?;
            *self.instances.auto_reissues.entry(id).or_default() += 1;
        }
        Ok(())
    }

    /// Makes the scenario's certificate of an instance on first request (CAS's key).
    pub(super) fn ensure_instance_material(
        &mut self,
        id: &str,
        cert_id: i64,
    ) -> Result<(), SimError> {
        let i = &self.instances.map[id];
        let Some(c) = i.certs.iter().find(|c| c.cert_id == cert_id) else {
            return Ok(());
        };
        if c.issued.is_some() {
            return Ok(());
        }
        let wall = Utc::now().timestamp_millis();
        let start = c.start_ms.min(wall - 300_000);
        let issued = self
            .ca
            .issue(
                None,
                &i.names(),
                i.ca_algorithm(),
                crate::ca::ms_offset(start),
                crate::ca::ms_offset(c.end_ms),
                Twist::None,
            )
            .map_err(|e| SimError::new(500, "InternalError", e.to_string()))?;
        if let Some(c) = self
            .instances
            .map
            .get_mut(id)
            .and_then(|i| i.certs.iter_mut().find(|c| c.cert_id == cert_id))
        {
            c.issued = Some(issued);
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "instance_tests.rs"]
mod tests;
