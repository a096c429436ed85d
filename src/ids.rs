//! Identifiers CAS hands out, as types of their own, so an order's id cannot be
//! mixed up with a count, a time or another kind of id.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A CAS `OrderId` (ListUserCertificateOrder, RenewCertificateOrderForPackageRequest,
/// DescribeCertificateState). Written as the bare number, as CAS and every journal
/// so far wrote it, also in `Debug` (lists of ids in messages read `[1, 2]`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(i64);

impl OrderId {
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
}
