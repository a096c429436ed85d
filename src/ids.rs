//! Identifiers CAS hands out, as types of their own, so an order's id cannot be
//! mixed up with a count, a time or another kind of id (a V1 order's number or a
//! V2.0 instance's string).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A CAS `OrderId` (ListUserCertificateOrder, RenewCertificateOrderForPackageRequest,
/// DescribeCertificateState). Written as the bare number, as CAS and every journal
/// so far wrote it, also in `Debug` (lists of ids in messages read `[1, 2]`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(i64);

impl OrderId {
    /// Stands where a journal phase about a V2.0 instance has no order (its
    /// `instance` field says what it is about): the phases' order fields are
    /// required in the journal's format, and CAS's OrderIds are positive.
    pub const NONE: OrderId = OrderId(0);

    pub const fn new(id: i64) -> OrderId {
        OrderId(id)
    }

    /// The number, for an API parameter.
    pub const fn get(self) -> i64 {
        self.0
    }
}

impl From<i64> for OrderId {
    fn from(id: i64) -> OrderId {
        OrderId(id)
    }
}

impl fmt::Debug for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The `InstanceId` of an SSL Certificate Management V2.0 instance (ListInstances,
/// GetInstanceDetail, UpdateInstance, ApplyCertificate), such as `cas-ivauto-…`.
/// Written as the bare string on disk and in words.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceId(String);

impl InstanceId {
    pub fn new(id: impl Into<String>) -> InstanceId {
        InstanceId(id.into())
    }

    /// The string, for an API parameter.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a renewal follows: a V1 order or a V2.0 instance. Written `order N` or
/// `instance ID`, as messages name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Order(OrderId),
    Instance(InstanceId),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Order(o) => write!(f, "order {o}"),
            Subject::Instance(i) => write!(f, "instance {i}"),
        }
    }
}

impl From<OrderId> for Subject {
    fn from(o: OrderId) -> Subject {
        Subject::Order(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_id_is_the_bare_number_on_disk_and_in_words() {
        let id = OrderId::new(1002);
        assert_eq!(serde_json::to_string(&id).expect("json"), "1002");
        assert_eq!(serde_json::from_str::<OrderId>("1002").expect("back"), id);
        assert_eq!(id.to_string(), "1002");
        assert_eq!(format!("{:?}", [id, OrderId::new(7)]), "[1002, 7]");
        assert!(serde_json::from_str::<OrderId>("\"1002\"").is_err());
    }

    #[test]
    fn an_instance_id_is_the_bare_string_on_disk_and_in_words() {
        let id = InstanceId::new("cas-ivauto-abc");
        assert_eq!(
            serde_json::to_string(&id).expect("json"),
            "\"cas-ivauto-abc\""
        );
        assert_eq!(
            serde_json::from_str::<InstanceId>("\"cas-ivauto-abc\"").expect("back"),
            id
        );
        assert_eq!(id.to_string(), "cas-ivauto-abc");
        assert_eq!(id.as_str(), "cas-ivauto-abc");
        assert!(serde_json::from_str::<InstanceId>("7").is_err());
        assert_eq!(Subject::Instance(id).to_string(), "instance cas-ivauto-abc");
        assert_eq!(Subject::from(OrderId::new(5)).to_string(), "order 5");
    }
}
