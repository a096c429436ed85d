//! Typed Alibaba Cloud DNS operations (API version 2015-01-09) for DNS validation.

use std::time::Duration;

use serde::Deserialize;

use super::client::{ApiClient, ApiError, Idempotence};

/// Alidns answers `LastOperationNotFinished` while an earlier change to the same
/// zone is still being applied (two certificates of one zone at once); the change
/// was not made, so it is repeated after a pause (as terraform-provider-alicloud
/// and certd do). Pauses double from this value.
const BUSY_FIRST_PAUSE: Duration = Duration::from_millis(500);
/// Tries of one change in all, so a zone that stays busy fails the step (about 15 s).
const BUSY_TRIES: u32 = 5;

pub const DNS_VERSION: &str = "2015-01-09";

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Record {
    pub record_id: String,
    #[serde(default, deserialize_with = "super::api::de_opt")]
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

/// Alidns's answers to a name that is not a zone of this account.
fn is_zone_miss(e: &ApiError) -> bool {
    e.code().is_some_and(|c| {
        c.starts_with("InvalidDomainName")
            || c == "DomainNotFound"
            || c == "Forbidden.DomainNotBelongToUser"
    })
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
    /// A candidate that is not a zone is the normal miss of this search: it is
    /// logged at debug level, never as a failed call.
    pub async fn find_zone(&self, fqdn: &str) -> Result<Option<String>, ApiError> {
        let labels: Vec<&str> = fqdn.trim_end_matches('.').split('.').collect();
        for i in 0..labels.len().saturating_sub(1) {
            let candidate = labels[i..].join(".");
            let r = self
                .client
                .call_expecting::<RecordPage>(
                    "DescribeDomainRecords",
                    &[p("DomainName", &candidate), p("PageSize", "1")],
                    Idempotence::Idempotent,
                    &is_zone_miss,
                )
                .await;
            match r {
                Ok(_) => return Ok(Some(candidate)),
                Err(e) if is_zone_miss(&e) => {
                    tracing::debug!(candidate = %candidate, fqdn, "not a zone of this account; trying the parent");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// The records at `fqdn` in `zone` (of `record_type`, or of every type).
    /// `DomainName` makes Alidns split the name at that zone; without it Alidns
    /// splits at the registrable domain and never finds a record in a delegated
    /// sub-zone (`sub.example.com` hosted as its own zone).
    pub async fn records_at(
        &self,
        fqdn: &str,
        zone: &str,
        record_type: Option<&str>,
    ) -> Result<Vec<Record>, ApiError> {
        let mut params = vec![
            p("SubDomain", fqdn),
            p("DomainName", zone),
            p("PageSize", "100"),
        ];
        if let Some(t) = record_type {
            params.push(p("Type", t));
        }
        let r = self
            .client
            .call::<RecordPage>("DescribeSubDomainRecords", &params, Idempotence::Idempotent)
            .await?;
        Ok(r.body.domain_records.record)
    }

    /// One zone change, repeated while Alidns says the previous one is unfinished;
    /// the codes `handled` picks are the caller's to act on (logged at debug level).
    async fn change<T: serde::de::DeserializeOwned>(
        &self,
        action: &str,
        params: &[(String, String)],
        handled: fn(&str) -> bool,
    ) -> Result<T, ApiError> {
        let mut pause = BUSY_FIRST_PAUSE;
        let mut tries = 1;
        loop {
            let busy_retried = |e: &ApiError| {
                e.code().is_some_and(|c| {
                    handled(c) || (c == "LastOperationNotFinished" && tries < BUSY_TRIES)
                })
            };
            match self
                .client
                .call_expecting::<T>(action, params, Idempotence::Idempotent, &busy_retried)
                .await
            {
                Err(e) if e.code() == Some("LastOperationNotFinished") && tries < BUSY_TRIES => {
                    tracing::warn!(
                        action,
                        pause_ms = pause.as_millis() as u64,
                        "Alidns is still applying an earlier change to the zone; trying again"
                    );
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    tries += 1;
                }
                r => return r.map(|r| r.body),
            }
        }
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
        let r: RecordIdAnswer = self
            .change(
                "AddDomainRecord",
                &[
                    p("DomainName", zone),
                    p("RR", rr),
                    p("Type", record_type),
                    p("Value", value),
                    p("TTL", "600"),
                ],
                |c| c == "DomainRecordDuplicate",
            )
            .await?;
        Ok(r.record_id)
    }

    pub async fn delete_record(&self, record_id: &str) -> Result<(), ApiError> {
        match self
            .change::<RecordIdAnswer>("DeleteDomainRecord", &[p("RecordId", record_id)], |c| {
                c == "DomainRecordNotBelongToUser"
            })
            .await
        {
            Ok(_) => Ok(()),
            // Already gone (a retry after a lost answer): the goal is reached.
            Err(e) if e.code() == Some("DomainRecordNotBelongToUser") => Ok(()),
            Err(e) => Err(e),
        }
    }
}
