//! The account's inventory: V1 orders (ListUserCertificateOrder) and SSL
//! Certificate Management V2.0 instances (ListInstances) in one listing, so a
//! configured or discovered domain matches either kind.

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;

use super::api::{Cas, CertificateOrder, Instance, InstanceFilter, OrderFilter};
use super::client::ApiError;

/// Which API a certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A V1 order (ListUserCertificateOrder).
    Order,
    /// A V2.0 instance (ListInstances).
    Instance,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Order => "order",
            Kind::Instance => "instance",
        }
    }
}

/// One entry of the inventory, either kind.
#[derive(Debug, Clone, Copy)]
pub enum Entry<'a> {
    Order(&'a CertificateOrder),
    Instance(&'a Instance),
}

impl Entry<'_> {
    pub fn kind(&self) -> Kind {
        match self {
            Entry::Order(_) => Kind::Order,
            Entry::Instance(_) => Kind::Instance,
        }
    }

    /// The entry's (first) domain.
    pub fn domain(&self) -> Option<&str> {
        match self {
            Entry::Order(o) => o.domain_name(),
            Entry::Instance(i) => i.domain_name(),
        }
    }

    /// Every name the entry covers.
    pub fn names(&self) -> Vec<String> {
        match self {
            Entry::Order(o) => o.names(),
            Entry::Instance(i) => [i.domain.as_deref(), i.certificate_domain.as_deref()]
                .into_iter()
                .flatten()
                .flat_map(|d| d.split(','))
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }

    /// When the current certificate expires (orders give milliseconds,
    /// instances seconds).
    pub fn not_after(&self) -> Option<DateTime<Utc>> {
        match self {
            Entry::Order(o) => o
                .not_after_ms()
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
            Entry::Instance(i) => i.certificate_not_after(),
        }
    }
}

/// Orders and instances of one pass.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub orders: Vec<CertificateOrder>,
    pub instances: Vec<Instance>,
    /// The OrderIds of the listing's orders kept only as instances (see
    /// [`Inventory::new`]): known before a paid call all the same, so an unclear
    /// call's reconciliation never takes one for the call's new order.
    pub listed_as_instances: Vec<i64>,
}

impl Inventory {
    /// Every matching order, then every matching instance (`None` lists none of
    /// that kind), each paged and rate limited per action.
    pub async fn fetch(
        cas: &Cas,
        orders: Option<OrderFilter>,
        instances: Option<&InstanceFilter>,
        page_size: u32,
    ) -> Result<Inventory, ApiError> {
        let orders = match orders {
            Some(f) => cas.list_all_orders(f, page_size).await?,
            None => Vec::new(),
        };
        let instances = match instances {
            Some(f) => cas.list_all_instances(f, page_size).await?,
            None => Vec::new(),
        };
        Ok(Inventory::new(orders, instances))
    }

    /// Orders and instances of one pass, each certificate once: an instance that
    /// ListUserCertificateOrder also shows (README, simulator assumption 29) stays
    /// only as the instance, so it is never renewed as a V1 order.
    pub fn new(mut orders: Vec<CertificateOrder>, instances: Vec<Instance>) -> Inventory {
        let before = orders.len();
        let listed_as_instances = orders
            .iter()
            .filter(|o| lists_an_instance(o, &instances))
            .filter_map(|o| o.order_id)
            .collect();
        orders.retain(|o| !lists_an_instance(o, &instances));
        if orders.len() < before {
            tracing::debug!(
                dropped = before - orders.len(),
                "V2.0 instances also listed as V1 orders are kept as instances only"
            );
        }
        Inventory {
            orders,
            instances,
            listed_as_instances,
        }
    }

    /// Orders first, then instances.
    pub fn entries(&self) -> impl Iterator<Item = Entry<'_>> {
        self.orders
            .iter()
            .map(Entry::Order)
            .chain(self.instances.iter().map(Entry::Instance))
    }

    /// The entries that cover `domain` (ASCII case-insensitive), either kind.
    pub fn for_domain(&self, domain: &str) -> Vec<Entry<'_>> {
        self.entries()
            .filter(|e| e.names().iter().any(|n| n.eq_ignore_ascii_case(domain)))
            .collect()
    }

    /// The (first) domain of every entry, either kind.
    pub fn domains(&self) -> impl Iterator<Item = &str> {
        self.entries().filter_map(|e| match e {
            Entry::Order(o) => o.domain_name(),
            Entry::Instance(i) => i.domain_name(),
        })
    }
}

/// Whether `o`, an entry of ListUserCertificateOrder, is one of `instances` (a
/// V2.0 certificate the V1 listing shows too): it carries an instance's InstanceId
/// or CertificateId. The V1 operations are not supported for such a certificate,
/// and RenewCertificateOrderForPackageRequest on it would fail or spend.
pub fn lists_an_instance(o: &CertificateOrder, instances: &[Instance]) -> bool {
    let id = o
        .instance_id
        .as_deref()
        .map(str::trim)
        .filter(|i| !i.is_empty());
    let cert = o.certificate_id.filter(|c| *c > 0);
    instances.iter().any(|i| {
        id.is_some_and(|id| i.instance_id.as_deref().map(str::trim) == Some(id))
            || cert.is_some_and(|c| i.certificate_id == Some(c))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inventory() -> Inventory {
        Inventory {
            orders: vec![CertificateOrder {
                domain: Some("www.example.com".into()),
                order_id: Some(1),
                cert_end_time: Some(1_781_675_381_000),
                ..Default::default()
            }],
            instances: vec![Instance {
                instance_id: Some("cas-ivauto-1".into()),
                domain: Some("Shop.example.com,shop2.example.com".into()),
                certificate_not_after: Some(1_781_675_381),
                ..Default::default()
            }],
            listed_as_instances: vec![],
        }
    }

    #[test]
    fn a_domain_matches_either_kind() {
        let inv = inventory();
        let www = inv.for_domain("WWW.example.com");
        assert_eq!(www.len(), 1);
        assert_eq!(www[0].kind(), Kind::Order);
        let shop = inv.for_domain("shop2.example.com");
        assert_eq!(shop.len(), 1);
        assert_eq!(shop[0].kind(), Kind::Instance);
        assert!(inv.for_domain("api.example.com").is_empty());
        let domains: Vec<&str> = inv.domains().collect();
        assert_eq!(domains, ["www.example.com", "Shop.example.com"]);
    }

    #[test]
    fn an_instance_also_listed_as_an_order_is_kept_once_as_the_instance() {
        let instance = inventory().instances[0].clone();
        let listed = |instance_id: Option<&str>, certificate_id: Option<i64>| CertificateOrder {
            domain: Some("shop.example.com".into()),
            order_id: Some(900_001),
            instance_id: instance_id.map(str::to_owned),
            certificate_id,
            ..Default::default()
        };
        let with_cert = Instance {
            certificate_id: Some(77),
            ..instance.clone()
        };
        for (order, why) in [
            (listed(Some("cas-ivauto-1"), None), "same InstanceId"),
            (
                listed(Some(" cas-ivauto-1 "), Some(5)),
                "InstanceId, spaces",
            ),
            (listed(None, Some(77)), "same CertificateId"),
            (listed(Some("cas-other"), Some(77)), "CertificateId alone"),
        ] {
            let inv = Inventory::new(
                vec![inventory().orders[0].clone(), order],
                vec![with_cert.clone()],
            );
            assert_eq!(inv.orders.len(), 1, "{why}");
            assert_eq!(
                inv.orders[0].order_id,
                Some(1),
                "{why}: the real order stays"
            );
            let shop = inv.for_domain("shop.example.com");
            assert_eq!(shop.len(), 1, "{why}");
            assert_eq!(shop[0].kind(), Kind::Instance, "{why}");
        }
        // Nothing in common (or only empty ids): both stay.
        for order in [
            listed(Some("cas-other"), Some(78)),
            listed(Some(""), Some(0)),
            listed(None, None),
        ] {
            let no_cert = Instance {
                certificate_id: None,
                instance_id: Some(String::new()),
                ..instance.clone()
            };
            let inv = Inventory::new(vec![order.clone()], vec![with_cert.clone()]);
            assert_eq!(inv.orders.len(), 1, "{order:?}");
            let inv = Inventory::new(vec![order.clone()], vec![no_cert]);
            assert_eq!(inv.orders.len(), 1, "{order:?}");
        }
    }

    #[test]
    fn both_kinds_give_the_same_expiry_from_their_own_units() {
        let inv = inventory();
        let ends: Vec<_> = inv.entries().map(|e| e.not_after()).collect();
        assert_eq!(ends[0], ends[1], "milliseconds and seconds of one instant");
        assert!(ends[0].is_some());
    }
}
