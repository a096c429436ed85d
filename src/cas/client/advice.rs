//! What an operator should check after an authentication or authorisation
//! refusal: the likely causes for each Alibaba code, most likely first, so a wrong
//! secret does not show up as only the server's terse message.

const SECRET: &str = "the AccessKey secret does not belong to the AccessKey id (a typo, or a stray space or line end in the secret file)";
const KEY_ID: &str = "the AccessKey id is wrong, deleted or disabled";
const CLOCK: &str = "this host's clock is off by more than 15 minutes (check NTP with `timedatectl`; `cas-renewd check-config --online` shows the skew)";
const STS: &str = "the STS token expired or belongs to other credentials (the RAM role's credentials must be refreshed)";
const ENDPOINT: &str = "the endpoint is for another site or region than the key (China or international; check api.endpoint and api.dns_endpoint)";
const PROXY: &str = "a proxy between this host and the endpoint changed the request";

/// The likely causes of the refusal `code` answered to `action`, as one sentence
/// to append to the error; empty for a code that is not an authentication one.
pub fn auth_advice(code: &str, action: &str) -> String {
    let ram = format!(
        "the RAM policy of the key's user or role lacks the action {action} (`cas-renewd doctor` prints the statement to add)"
    );
    let causes: Vec<&str> = if code.starts_with("InvalidAccessKeyId") {
        vec![KEY_ID, ENDPOINT, STS]
    } else if code.starts_with("InvalidSecurityToken") {
        vec![STS, CLOCK]
    } else {
        match code {
            "SignatureDoesNotMatch" | "IncompleteSignature" => vec![SECRET, PROXY],
            "IllegalTimestamp" | "InvalidTimeStamp.Expired" => vec![CLOCK],
            "Forbidden.RAM" | "Forbidden" | "NoPermission" => vec![&ram, ENDPOINT, STS],
            _ => return String::new(),
        }
    };
    let list: Vec<String> = causes
        .iter()
        .enumerate()
        .map(|(i, c)| format!("({}) {c}", i + 1))
        .collect();
    format!("; likely causes: {}", list.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cas::client::is_auth_code;

    #[test]
    fn each_authentication_code_names_its_likely_causes() {
        let a = |code| auth_advice(code, "ListUserCertificateOrder");
        assert!(a("SignatureDoesNotMatch").contains("AccessKey secret"));
        assert!(a("InvalidTimeStamp.Expired").contains("clock"));
        assert!(a("IllegalTimestamp").contains("timedatectl"));
        assert!(a("InvalidSecurityToken.Expired").contains("STS token expired"));
        let ram = a("Forbidden.RAM");
        assert!(
            ram.contains("RAM policy") && ram.contains("ListUserCertificateOrder"),
            "{ram}"
        );
        let key = a("InvalidAccessKeyId.NotFound");
        assert!(
            key.contains("AccessKey id") && key.contains("region"),
            "{key}"
        );
        assert!(key.starts_with("; likely causes: (1) "), "{key}");
    }

    #[test]
    fn every_authentication_code_gets_advice_and_no_other_code_does() {
        for code in [
            "InvalidAccessKeyId.Inactive",
            "InvalidSecurityToken.Malformed",
            "SignatureDoesNotMatch",
            "IncompleteSignature",
            "IllegalTimestamp",
            "InvalidTimeStamp.Expired",
            "Forbidden.RAM",
            "Forbidden",
            "NoPermission",
        ] {
            assert!(is_auth_code(code), "{code}");
            assert!(!auth_advice(code, "A").is_empty(), "{code}");
        }
        for code in ["Throttling.User", "InternalError", "InvalidParameter", "OK"] {
            assert_eq!(auth_advice(code, "A"), "", "{code}");
        }
    }
}
