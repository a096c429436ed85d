//! ListUserCertificateOrder: the page answer, the filters, and a pager that walks
//! every page.

use serde::Deserialize;

use super::de::{de_i64, de_opt_i64};
use super::{Cas, CertificateOrder, OrderStatus, OrderType, param};
use crate::cas::client::{ApiError, Idempotence, Response};

/// The documented default page size of ListUserCertificateOrder. The maximum is not
/// documented; callers may ask for more and the server decides.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// A pager stops after this many pages whatever TotalCount says, so a server that
/// keeps answering full pages cannot hold a pass forever.
const MAX_PAGES: u32 = 100_000;
/// The most orders the listing makes room for before it has them.
const MAX_RESERVED: usize = 200_000;

/// One page of ListUserCertificateOrder.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OrderPage {
    #[serde(default)]
    pub request_id: String,
    #[serde(deserialize_with = "de_i64")]
    pub total_count: i64,
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub show_size: Option<i64>,
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub current_page: Option<i64>,
    #[serde(default)]
    pub certificate_order_list: Vec<CertificateOrder>,
}

/// Filters of ListUserCertificateOrder.
#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    pub keyword: Option<String>,
    pub status: Option<OrderStatus>,
    pub order_type: Option<OrderType>,
    pub resource_group_id: Option<String>,
}

impl Cas {
    /// One page of ListUserCertificateOrder (pages count from 1).
    pub async fn list_orders_page(
        &self,
        filter: &OrderFilter,
        page: u32,
        page_size: u32,
    ) -> Result<Response<OrderPage>, ApiError> {
        let mut p = vec![param("CurrentPage", page), param("ShowSize", page_size)];
        if let Some(k) = &filter.keyword {
            p.push(param("Keyword", k));
        }
        if let Some(s) = filter.status {
            p.push(param("Status", s.as_str()));
        }
        if let Some(t) = filter.order_type {
            p.push(param("OrderType", t.as_str()));
        }
        if let Some(g) = &filter.resource_group_id {
            p.push(param("ResourceGroupId", g));
        }
        self.client
            .call("ListUserCertificateOrder", &p, Idempotence::Idempotent)
            .await
    }

    /// A pager over every matching entry.
    pub fn list_orders(&self, filter: OrderFilter, page_size: u32) -> OrderPager<'_> {
        OrderPager {
            cas: self,
            filter,
            page_size: page_size.max(1),
            next_page: 1,
            seen: 0,
            total: 0,
            done: false,
        }
    }

    /// Every matching entry, page after page.
    pub async fn list_all_orders(
        &self,
        filter: OrderFilter,
        page_size: u32,
    ) -> Result<Vec<CertificateOrder>, ApiError> {
        let mut pager = self.list_orders(filter, page_size);
        let mut all = Vec::new();
        while let Some(page) = pager.next_page().await? {
            if all.is_empty() {
                // Room for the whole account at once: grown page by page, the list
                // doubled, and at 11,000 orders held ~2x its size while it copied.
                // A TotalCount beyond reason reserves no more than MAX_RESERVED.
                let total = usize::try_from(pager.total).unwrap_or(0);
                all.reserve_exact(total.min(MAX_RESERVED));
            }
            all.extend(page);
        }
        Ok(all)
    }
}

/// Walks ListUserCertificateOrder page by page until `TotalCount` entries were seen
/// (or a page comes back empty).
pub struct OrderPager<'a> {
    cas: &'a Cas,
    filter: OrderFilter,
    page_size: u32,
    next_page: u32,
    seen: u64,
    /// TotalCount of the last page.
    total: u64,
    done: bool,
}

impl OrderPager<'_> {
    /// The next page's entries, or `None` after the last.
    pub async fn next_page(&mut self) -> Result<Option<Vec<CertificateOrder>>, ApiError> {
        if self.done {
            return Ok(None);
        }
        let resp = self
            .cas
            .list_orders_page(&self.filter, self.next_page, self.page_size)
            .await?;
        let page = resp.body;
        let total = u64::try_from(page.total_count.max(0)).unwrap_or(0);
        self.total = total;
        self.seen += page.certificate_order_list.len() as u64;
        self.next_page += 1;
        if self.seen >= total
            || page.certificate_order_list.is_empty()
            || self.next_page > MAX_PAGES
        {
            if self.seen < total {
                tracing::warn!(
                    request_id = %resp.request_id,
                    seen = self.seen,
                    total,
                    "ListUserCertificateOrder returned an empty page before TotalCount was reached"
                );
            }
            self.done = true;
        }
        if page.certificate_order_list.is_empty() {
            return Ok(None);
        }
        Ok(Some(page.certificate_order_list))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_page_parses_documented_sample_and_string_numbers() {
        let json = r#"{"ShowSize": 10, "CurrentPage": "1", "TotalCount": "2", "RequestId": "R1",
            "CertificateOrderList": [
              {"Algorithm": "RSA", "AliyunOrderId": 234567, "BuyDate": 1634283958000, "CertEndTime": 1665819958000,
               "CertStartTime": 1665819958000, "CertType": "FREE", "Domain": "aliyundoc.com", "DomainCount": 1,
               "DomainType": "ONE", "OrderId": "2345687", "Status": "WILLEXPIRED", "SourceType": "buy"},
              {"Status": "SOMETHING_NEW", "CommonName": "a.example.com", "Sans": "a.example.com,b.example.com",
               "EndDate": "2022-11-17", "CertificateId": 896521, "Expired": false}
            ]}"#;
        let page: OrderPage = serde_json::from_str(json).expect("parses");
        assert_eq!(page.total_count, 2);
        let a = &page.certificate_order_list[0];
        assert_eq!(a.order_id, Some(2_345_687));
        assert_eq!(a.status, Some(OrderStatus::Willexpired));
        assert_eq!(a.not_after_ms(), Some(1_665_819_958_000));
        let b = &page.certificate_order_list[1];
        assert_eq!(b.status, Some(OrderStatus::Unknown));
        assert_eq!(b.domain_name(), Some("a.example.com"));
        assert_eq!(b.names(), vec!["a.example.com", "b.example.com"]);
        assert!(b.not_after_ms().is_some());
    }

    #[test]
    fn missing_total_count_is_an_error() {
        let err =
            serde_json::from_str::<OrderPage>(r#"{"RequestId":"x","CertificateOrderList":[]}"#)
                .expect_err("TotalCount is required");
        assert!(err.to_string().contains("TotalCount"), "{err}");
        assert!(serde_json::from_str::<OrderPage>(r#"{"TotalCount":"many"}"#).is_err());
    }
}
