//! Typed Alibaba Cloud DNS operations (API version 2015-01-09) for DNS validation.

use serde::Deserialize;

use super::client::{ApiClient, ApiError, Idempotence};

pub const DNS_VERSION: &str = "2015-01-09";

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Record {
    pub record_id: String,
    #[serde(default)]
    pub domain_name: Option<String>,
    #[serde(rename = "RR")]
    pub rr: String,
    #[serde(rename = "Type")]
    pub record_type: String,
    pub value: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Records {
    #[serde(default)]
    record: Vec<Record>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RecordPage {
    domain_records: Records,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RecordIdAnswer {
    record_id: String,
}

fn p(k: &str, v: &str) -> (String, String) {
    (k.to_owned(), v.to_owned())
}

/// The DNS operations validation needs.
#[derive(Debug, Clone)]
pub struct Dns {
    client: ApiClient,
}

impl Dns {
    pub fn new(client: ApiClient) -> Self {
        Dns { client }
    }

    /// The zone of `fqdn` hosted in this account: the longest suffix that
    /// DescribeDomainRecords accepts (as acme.sh finds it).
    pub async fn find_zone(&self, fqdn: &str) -> Result<Option<String>, ApiError> {
        let labels: Vec<&str> = fqdn.trim_end_matches('.').split('.').collect();
        for i in 0..labels.len().saturating_sub(1) {
            let candidate = labels[i..].join(".");
            let r = self
                .client
                .call::<RecordPage>(
                    "DescribeDomainRecords",
                    &[p("DomainName", &candidate), p("PageSize", "1")],
                    Idempotence::Idempotent,
                )
                .await;
            match r {
                Ok(_) => return Ok(Some(candidate)),
                Err(e) if matches!(e.code(), Some(c) if c.starts_with("InvalidDomainName") || c == "DomainNotFound" || c == "Forbidden.DomainNotBelongToUser") =>
                    {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// TXT (or other) records at `fqdn`.
    pub async fn records_at(&self, fqdn: &str, record_type: &str) -> Result<Vec<Record>, ApiError> {
        let r = self
            .client
            .call::<RecordPage>(
                "DescribeSubDomainRecords",
                &[
                    p("SubDomain", fqdn),
                    p("Type", record_type),
                    p("PageSize", "100"),
                ],
                Idempotence::Idempotent,
            )
            .await?;
        Ok(r.body.domain_records.record)
    }

    /// Adds a record and returns its id. Adding a record that exists is not
    /// idempotent on the server (it answers DomainRecordDuplicate); callers look first.
    pub async fn add_record(
        &self,
        zone: &str,
        rr: &str,
        record_type: &str,
        value: &str,
    ) -> Result<String, ApiError> {
        let r = self
            .client
            .call::<RecordIdAnswer>(
                "AddDomainRecord",
                &[
                    p("DomainName", zone),
                    p("RR", rr),
                    p("Type", record_type),
                    p("Value", value),
                    p("TTL", "600"),
                ],
                Idempotence::Idempotent,
            )
            .await?;
        Ok(r.body.record_id)
    }

    pub async fn delete_record(&self, record_id: &str) -> Result<(), ApiError> {
        match self
            .client
            .call::<RecordIdAnswer>(
                "DeleteDomainRecord",
                &[p("RecordId", record_id)],
                Idempotence::Idempotent,
            )
            .await
        {
            Ok(_) => Ok(()),
            // Already gone (a retry after a lost answer): the goal is reached.
            Err(e) if e.code() == Some("DomainRecordNotBelongToUser") => Ok(()),
            Err(e) => Err(e),
        }
    }
}
