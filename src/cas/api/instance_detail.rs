//! GetInstanceDetail (one V2.0 instance: its application, the domain validation
//! CAS asks for, its latest certificate) and GetTaskAttribute (where a submitted
//! ApplyCertificate stands). Times are UNIX seconds.

use serde::Deserialize;

use super::de::{de_int_list, de_list, de_opt, de_opt_i64, de_opt_string};
use super::instance::Instance;
use super::{Cas, param};
use crate::cas::client::{ApiError, Idempotence, Response};

/// One entry of `DomainValidationList`: what must be published for a domain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DomainValidation {
    /// The CNAME value of a validation-free authorisation; may be empty.
    #[serde(deserialize_with = "de_opt")]
    pub cname: Option<String>,
    #[serde(deserialize_with = "de_opt")]
    pub cname_key: Option<String>,
    #[serde(deserialize_with = "de_opt")]
    pub domain: Option<String>,
    #[serde(deserialize_with = "de_opt")]
    pub root_domain: Option<String>,
    /// The host record (DNS) or the file (HTTP).
    #[serde(deserialize_with = "de_opt")]
    pub validation_key: Option<String>,
    /// `TXT`, `HTTP` or `CNAME`.
    #[serde(deserialize_with = "de_opt")]
    pub validation_type: Option<String>,
    #[serde(deserialize_with = "de_opt")]
    pub validation_value: Option<String>,
}

/// One entry of `DingGroupList` (expert-service chat groups).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DingGroup {
    #[serde(deserialize_with = "de_opt")]
    pub ding_group_instance_id: Option<String>,
    #[serde(deserialize_with = "de_opt")]
    pub ding_group_name: Option<String>,
    #[serde(deserialize_with = "de_opt")]
    pub ding_group_type: Option<String>,
    #[serde(deserialize_with = "de_opt")]
    pub ding_group_url: Option<String>,
}

/// A resource tag as the V2.0 answers write it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct InstanceTag {
    #[serde(deserialize_with = "de_opt")]
    pub tag_key: Option<String>,
    #[serde(deserialize_with = "de_opt")]
    pub tag_value: Option<String>,
}

/// GetInstanceDetail's answer (every field of the SDK model). The fields it shares
/// with a ListInstances entry are in `instance` (whose `certificate_domain` and
/// `using_product_list`, ListInstances-only, stay empty here).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct InstanceDetail {
    pub request_id: String,
    #[serde(flatten)]
    pub instance: Instance,
    /// 1 when this edition includes managed re-issue.
    #[serde(deserialize_with = "de_opt_i64")]
    pub auto_reissue_flag: Option<i64>,
    /// Seconds, a string in the SDK model (a number accepted).
    #[serde(deserialize_with = "de_opt_string")]
    pub average_waiting_time: Option<String>,
    #[serde(deserialize_with = "de_opt")]
    pub city: Option<String>,
    #[serde(deserialize_with = "de_opt_i64")]
    pub company_id: Option<i64>,
    #[serde(deserialize_with = "de_int_list")]
    pub contact_id_list: Vec<i64>,
    #[serde(deserialize_with = "de_opt")]
    pub country_code: Option<String>,
    /// The CSR of the current application (public: no key material).
    #[serde(deserialize_with = "de_opt")]
    pub csr: Option<String>,
    #[serde(deserialize_with = "de_opt_i64")]
    pub deployment_resource_count: Option<i64>,
    #[serde(deserialize_with = "de_opt_i64")]
    pub deployment_use_count: Option<i64>,
    #[serde(deserialize_with = "de_list")]
    pub ding_group_list: Vec<DingGroup>,
    #[serde(deserialize_with = "de_list")]
    pub domain_validation_list: Vec<DomainValidation>,
    /// `online` (CAS makes the key) or `upload` (our CSR).
    #[serde(deserialize_with = "de_opt")]
    pub generate_csr_method: Option<String>,
    #[serde(deserialize_with = "de_opt_i64")]
    pub monitor_expand_flag: Option<i64>,
    #[serde(deserialize_with = "de_opt_i64")]
    pub monitor_use_count: Option<i64>,
    #[serde(deserialize_with = "de_opt")]
    pub order_progress: Option<String>,
    #[serde(deserialize_with = "de_opt")]
    pub province: Option<String>,
    #[serde(deserialize_with = "de_list")]
    pub tags: Vec<InstanceTag>,
    #[serde(deserialize_with = "de_opt_i64")]
    pub total_deployment_count: Option<i64>,
    #[serde(deserialize_with = "de_opt_i64")]
    pub total_monitor_count: Option<i64>,
    /// `none`, `payed` or `issued`.
    #[serde(deserialize_with = "de_opt")]
    pub upgrade_status: Option<String>,
    /// `DNS` or `HTTP`.
    #[serde(deserialize_with = "de_opt")]
    pub validation_method: Option<String>,
}

/// GetTaskAttribute's `TaskStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// The application was submitted.
    Success,
    Processing,
    Failed,
    #[serde(other)]
    Unknown,
}

/// GetTaskAttribute's answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskAttribute {
    #[serde(default)]
    pub request_id: String,
    /// Required: an answer without a status says nothing about the task.
    #[serde(deserialize_with = "de_required_status")]
    pub task_status: TaskStatus,
    /// The reason of a failure.
    #[serde(default, deserialize_with = "de_opt")]
    pub task_message: Option<String>,
}

fn de_required_status<'de, D: serde::Deserializer<'de>>(d: D) -> Result<TaskStatus, D::Error> {
    de_opt::<D, TaskStatus>(d)?.ok_or_else(|| serde::de::Error::custom("TaskStatus is empty"))
}

/// The default `TaskType` of GetTaskAttribute: the result of an ApplyCertificate.
pub const TASK_TYPE_APPLY: &str = "ApplyCertificate";

impl Cas {
    pub async fn get_instance_detail(
        &self,
        instance_id: &str,
    ) -> Result<Response<InstanceDetail>, ApiError> {
        self.client()
            .call(
                "GetInstanceDetail",
                &[param("InstanceId", instance_id)],
                Idempotence::Idempotent,
            )
            .await
    }

    /// Where the asynchronous task `task_id` of type `task_type` (by default
    /// [`TASK_TYPE_APPLY`]) stands.
    pub async fn get_task_attribute(
        &self,
        task_id: &str,
        task_type: Option<&str>,
    ) -> Result<Response<TaskAttribute>, ApiError> {
        let mut p = vec![param("TaskId", task_id)];
        if let Some(t) = task_type.filter(|t| !t.is_empty()) {
            p.push(param("TaskType", t));
        }
        self.client()
            .call("GetTaskAttribute", &p, Idempotence::Idempotent)
            .await
    }

    /// Where the ApplyCertificate of `instance_id` stands, whichever id its task
    /// has: the docs call the TaskId the instance's id, but ApplyCertificate
    /// answers only a RequestId, which may be the task's id instead (README,
    /// simulator assumption 19). The InstanceId is asked first; when the service
    /// refuses it outright (a 4xx answer that is not an authentication failure)
    /// and `apply_request_id` is known, that is asked too. No error code is
    /// interpreted. The task only says whether the application was submitted:
    /// the issued certificate is followed through GetInstanceDetail, which works
    /// under both readings.
    pub async fn apply_task(
        &self,
        instance_id: &str,
        apply_request_id: Option<&str>,
    ) -> Result<Response<TaskAttribute>, ApiError> {
        let first = self
            .get_task_attribute(instance_id, Some(TASK_TYPE_APPLY))
            .await;
        match (first, apply_request_id.filter(|r| !r.is_empty())) {
            (Err(e), Some(rid)) if refused_outright(&e) => {
                self.get_task_attribute(rid, Some(TASK_TYPE_APPLY)).await
            }
            (r, _) => r,
        }
    }
}

/// A definite answer that the request was wrong (HTTP 4xx, not throttling and not
/// an authentication failure), as opposed to a failure of the call itself.
fn refused_outright(e: &ApiError) -> bool {
    matches!(e, ApiError::Service(s) if (400..500).contains(&s.status) && s.retry_after.is_none())
        && !e.is_auth_failure()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cas::api::InstanceStatus;

    #[test]
    fn pending_detail_with_validation_parses() {
        let d: InstanceDetail = serde_json::from_str(
            r#"{"RequestId":"R","InstanceId":"cas-ivauto-1","Status":"pending","CertificateStatus":"issued",
                "Domain":"www.example.com","GenerateCsrMethod":"upload","ValidationMethod":"DNS",
                "KeyAlgorithm":"ECC_256","CertificateId":"77","CertificateNotAfter":"1781675381",
                "InstanceStartTime":1773899381,"InstanceEndTime":1837057781,"AutoReissueFlag":"1",
                "AverageWaitingTime":3600,"ContactIdList":[1,"2"],"Tags":[{"TagKey":"k","TagValue":""}],
                "DingGroupList":null,"UpgradeStatus":"none",
                "DomainValidationList":[{"Domain":"www.example.com","RootDomain":"example.com",
                  "ValidationType":"TXT","ValidationKey":"_dnsauth.www","ValidationValue":"2026abc","Cname":""}]}"#,
        )
        .expect("parses");
        assert_eq!(d.instance.status, Some(InstanceStatus::Pending));
        assert_eq!(d.instance.certificate_id, Some(77));
        assert_eq!(d.instance.certificate_not_after, Some(1_781_675_381));
        assert_eq!(d.average_waiting_time.as_deref(), Some("3600"));
        assert_eq!(d.contact_id_list, vec![1, 2]);
        assert_eq!(d.tags[0].tag_value, None);
        assert!(d.ding_group_list.is_empty());
        let v = &d.domain_validation_list[0];
        assert_eq!(v.validation_key.as_deref(), Some("_dnsauth.www"));
        assert_eq!(v.cname, None);
    }

    #[test]
    fn empty_strings_in_a_detail_are_absent() {
        let d: InstanceDetail = serde_json::from_str(
            r#"{"InstanceId":"i","Status":"","CertificateStatus":"","CertificateId":"","Csr":"",
                "CertificateNotAfter":"","DomainValidationList":"","ContactIdList":"","Tags":""}"#,
        )
        .expect("parses");
        assert!(d.instance.status.is_none() && d.instance.certificate_status.is_none());
        assert!(d.instance.certificate_id.is_none() && d.csr.is_none());
        assert!(d.domain_validation_list.is_empty() && d.contact_id_list.is_empty());
    }

    #[test]
    fn hostile_details_are_clear_errors() {
        for (json, want) in [
            (r#"{"CertificateId":"12; rm"}"#, "not an integer"),
            (r#"{"DomainValidationList":{"Domain":"x"}}"#, "not a list"),
            (r#"{"ContactIdList":["one"]}"#, "not an integer"),
            (r#"{"DomainValidationList":[{"Domain":5}]}"#, "list entry"),
            (r#"{"Status":true}"#, ""),
        ] {
            let err = serde_json::from_str::<InstanceDetail>(json).expect_err(json);
            assert!(err.to_string().contains(want), "{json}: {err}");
        }
    }

    #[test]
    fn only_a_definite_refusal_asks_the_task_again_by_request_id() {
        use crate::cas::client::ServiceError;
        let service = |status: u16, code: &str, retry: Option<u64>| {
            ApiError::Service(Box::new(ServiceError {
                action: "GetTaskAttribute".into(),
                status,
                code: code.into(),
                message: "m".into(),
                request_id: "R".into(),
                host_id: None,
                retry_after: retry.map(std::time::Duration::from_secs),
            }))
        };
        assert!(refused_outright(&service(400, "AnyCode", None)));
        assert!(refused_outright(&service(404, "Other.NotFound", None)));
        assert!(!refused_outright(&service(403, "Forbidden.RAM", None)));
        assert!(!refused_outright(&service(400, "Throttling.User", Some(1))));
        assert!(!refused_outright(&service(503, "ServiceUnavailable", None)));
        let transport = ApiError::Transport {
            action: "GetTaskAttribute".into(),
            detail: "reset".into(),
            not_sent: false,
        };
        assert!(!refused_outright(&transport));
    }

    #[test]
    fn task_status_parses_and_is_required() {
        let t: TaskAttribute = serde_json::from_str(
            r#"{"RequestId":"CBF1E9B7","TaskStatus":"failed","TaskMessage":"domain not validated"}"#,
        )
        .expect("parses");
        assert_eq!(t.task_status, TaskStatus::Failed);
        assert_eq!(t.task_message.as_deref(), Some("domain not validated"));
        let t: TaskAttribute =
            serde_json::from_str(r#"{"TaskStatus":"queued","TaskMessage":""}"#).expect("parses");
        assert_eq!((t.task_status, t.task_message), (TaskStatus::Unknown, None));
        for bad in [r#"{"RequestId":"R"}"#, r#"{"TaskStatus":""}"#] {
            let err = serde_json::from_str::<TaskAttribute>(bad).expect_err(bad);
            assert!(err.to_string().contains("TaskStatus"), "{bad}: {err}");
        }
    }
}
