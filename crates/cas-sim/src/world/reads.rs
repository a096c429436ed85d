//! Read-only calls that only `cas-renewd doctor` makes, to prove a permission
//! without spending: Alidns DescribeDomains (the zones). Field names are the
//! official SDK's; only the fields doctor reads and a few for realism are filled in.
//! (ListInstances is the V2.0 instance model's, in `instances`.)

use std::collections::HashMap;

use serde_json::{Value, json};

use super::{SimError, World, int_param};

/// Page `page` (from 1) of `size` entries of `all`, with the page and size the
/// parameters named (default 1 and 10, at most 100 a page).
fn page_of(
    all: &[Value],
    p: &HashMap<String, String>,
    page: &str,
    size: &str,
) -> Result<(i64, i64, Vec<Value>), SimError> {
    let n = int_param(p, page)?.unwrap_or(1).max(1);
    let s = int_param(p, size)?.unwrap_or(10).clamp(1, 100);
    let start = usize::try_from((n - 1) * s).unwrap_or(usize::MAX);
    let list = all
        .iter()
        .skip(start)
        .take(usize::try_from(s).unwrap_or(10))
        .cloned()
        .collect();
    Ok((n, s, list))
}

impl World {
    /// Alidns DescribeDomains: the account's zones.
    pub(super) fn describe_domains(&self, p: &HashMap<String, String>) -> Result<Value, SimError> {
        let all: Vec<Value> = self
            .zones
            .iter()
            .enumerate()
            .map(|(i, z)| json!({ "DomainName": z, "DomainId": format!("sim-zone-{i}") }))
            .collect();
        let (page, size, list) = page_of(&all, p, "PageNumber", "PageSize")?;
        Ok(json!({
            "TotalCount": all.len(),
            "PageNumber": page,
            "PageSize": size,
            "Domains": { "Domain": list },
        }))
    }
}
