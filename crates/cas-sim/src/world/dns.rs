//! The simulated Alidns zone: AddDomainRecord, DeleteDomainRecord,
//! DescribeDomainRecords and DescribeSubDomainRecords.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::{SimError, World, int_param, param, required, validation_sim};

#[derive(Debug, Clone)]
pub struct DnsRecord {
    pub record_id: String,
    pub zone: String,
    pub rr: String,
    pub rtype: String,
    pub value: String,
    pub ttl: i64,
    pub line: String,
}

impl DnsRecord {
    pub(super) fn fqdn(&self) -> String {
        if self.rr == "@" {
            self.zone.clone()
        } else {
            format!("{}.{}", self.rr, self.zone)
        }
    }

    pub(super) fn to_json(&self) -> Value {
        json!({
            "RecordId": self.record_id,
            "DomainName": self.zone,
            "RR": self.rr,
            "Type": self.rtype,
            "Value": self.value,
            "TTL": self.ttl,
            "Line": self.line,
            "Status": "ENABLE",
            "Locked": false,
            "Weight": 1,
        })
    }
}

impl World {
    fn zone_param(&self, p: &HashMap<String, String>) -> Result<String, SimError> {
        let zone = required(p, "DomainName")?
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if !self.zones.contains(&zone) {
            return Err(SimError::new(
                400,
                "InvalidDomainName.NoExist",
                format!("The specified domain name {zone} does not exist in this account."),
            ));
        }
        Ok(zone)
    }

    pub(super) fn add_record(&mut self, p: &HashMap<String, String>) -> Result<Value, SimError> {
        if self.dns_busy > 0 {
            self.dns_busy -= 1;
            *self
                .faults
                .entry("LastOperationNotFinished".into())
                .or_default() += 1;
            return Err(SimError::new(
                400,
                "LastOperationNotFinished",
                "Last operation is not finished,please try again later.",
            ));
        }
        let zone = self.zone_param(p)?;
        let rr = required(p, "RR")?.to_owned();
        let rtype = required(p, "Type")?.to_ascii_uppercase();
        let value = required(p, "Value")?.to_owned();
        let ttl = int_param(p, "TTL")?.unwrap_or(600);
        if self
            .records
            .iter()
            .any(|r| r.zone == zone && r.rr == rr && r.rtype == rtype && r.value == value)
        {
            return Err(SimError::new(
                400,
                "DomainRecordDuplicate",
                "The DNS record already exists.",
            ));
        }
        let record_id = self.next_record_id.to_string();
        self.next_record_id += 1;
        self.records.push(DnsRecord {
            record_id: record_id.clone(),
            zone,
            rr,
            rtype,
            value,
            ttl,
            line: param(p, "Line").unwrap_or("default").to_owned(),
        });
        Ok(json!({ "RecordId": record_id }))
    }

    pub(super) fn delete_record(&mut self, p: &HashMap<String, String>) -> Result<Value, SimError> {
        let id = required(p, "RecordId")?.to_owned();
        let before = self.records.len();
        self.records.retain(|r| r.record_id != id);
        if self.records.len() == before {
            return Err(SimError::new(
                400,
                "DomainRecordNotBelongToUser",
                format!("The DNS record {id} does not exist or does not belong to you."),
            ));
        }
        Ok(json!({ "RecordId": id }))
    }

    fn page_of(
        records: Vec<&DnsRecord>,
        p: &HashMap<String, String>,
        max: i64,
    ) -> Result<Value, SimError> {
        let page = int_param(p, "PageNumber")?.unwrap_or(1);
        let size = int_param(p, "PageSize")?.unwrap_or(20);
        if page < 1 {
            return Err(SimError::invalid("PageNumber", "must be at least 1"));
        }
        if !(1..=max).contains(&size) {
            return Err(SimError::invalid(
                "PageSize",
                format!("must be between 1 and {max}"),
            ));
        }
        let total = records.len();
        let items: Vec<Value> = records
            .into_iter()
            .skip(usize::try_from((page - 1) * size).unwrap_or(usize::MAX))
            .take(usize::try_from(size).unwrap_or(0))
            .map(DnsRecord::to_json)
            .collect();
        Ok(json!({
            "TotalCount": total,
            "PageNumber": page,
            "PageSize": size,
            "DomainRecords": { "Record": items },
        }))
    }

    pub(super) fn describe_records(&self, p: &HashMap<String, String>) -> Result<Value, SimError> {
        let zone = self.zone_param(p)?;
        let rr_kw = param(p, "RRKeyWord").map(str::to_ascii_lowercase);
        let type_kw = param(p, "TypeKeyWord")
            .or(param(p, "Type"))
            .map(str::to_ascii_uppercase);
        let value_kw = param(p, "ValueKeyWord");
        let matching: Vec<&DnsRecord> = self
            .records
            .iter()
            .filter(|r| r.zone == zone)
            .filter(|r| {
                rr_kw
                    .as_deref()
                    .is_none_or(|k| r.rr.to_ascii_lowercase().contains(k))
            })
            .filter(|r| type_kw.as_deref().is_none_or(|t| r.rtype == t))
            .filter(|r| value_kw.is_none_or(|v| r.value.contains(v)))
            .collect();
        Self::page_of(matching, p, 500)
    }

    pub(super) fn describe_sub_records(
        &self,
        p: &HashMap<String, String>,
    ) -> Result<Value, SimError> {
        let sub = required(p, "SubDomain")?
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let rtype = param(p, "Type").map(str::to_ascii_uppercase);
        // Alidns splits SubDomain at DomainName when given, else at the registrable
        // domain: a record in a delegated sub-zone is found only with DomainName.
        let zone = match param(p, "DomainName") {
            Some(_) => self.zone_param(p)?,
            None => validation_sim::registrable(&sub),
        };
        if sub != zone && !sub.ends_with(&format!(".{zone}")) {
            return Err(SimError::invalid(
                "SubDomain",
                format!("{sub} is not under {zone}"),
            ));
        }
        let matching: Vec<&DnsRecord> = self
            .records
            .iter()
            .filter(|r| r.zone == zone && r.fqdn() == sub)
            .filter(|r| rtype.as_deref().is_none_or(|t| r.rtype == t))
            .collect();
        Self::page_of(matching, p, 100)
    }
}
