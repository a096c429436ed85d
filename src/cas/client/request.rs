//! One signed request: a fresh date and nonce per attempt, so a retry is never a
//! replay, signed with ACS3-HMAC-SHA256.

use rand::Rng;

use super::ApiClient;
use crate::cas::credentials::Credential;
use crate::cas::sign::{self, EMPTY_PAYLOAD_SHA256, V3Input};

/// A request ready to send, and what was signed (kept to explain a mismatch).
pub(super) struct SignedRequest {
    pub request: reqwest::RequestBuilder,
    /// Holds only hashes, never the secret.
    pub string_to_sign: String,
}

impl ApiClient {
    /// `action` with `params` as a signed POST to the endpoint, under `cred`.
    pub(super) fn signed_request(
        &self,
        action: &str,
        params: &[(String, String)],
        cred: &Credential,
    ) -> SignedRequest {
        let headers = self.acs_headers(action, cred);
        let sig = sign::sign_v3(
            &V3Input {
                method: "POST",
                path: "/",
                query: params,
                headers: &headers,
                payload_hash: EMPTY_PAYLOAD_SHA256,
            },
            cred.access_key_secret.expose().as_bytes(),
        );
        let mut url = self.settings.endpoint.clone();
        url.set_path("/");
        url.set_query(
            Some(&sign::canonical_query(params))
                .filter(|q| !q.is_empty())
                .map(String::as_str),
        );

        let mut req = self.http.post(url);
        for (k, v) in &headers {
            // reqwest sets Host from the URL; sending it twice would be wrong.
            if k != "host" {
                req = req.header(k, v);
            }
        }
        req = req.header(
            reqwest::header::AUTHORIZATION,
            sign::authorization_v3(&cred.access_key_id, &sig),
        );
        SignedRequest {
            request: req,
            string_to_sign: sig.string_to_sign,
        }
    }

    /// The headers every attempt signs: host, action, version, a new date and nonce,
    /// and the STS token when the credential has one.
    fn acs_headers(&self, action: &str, cred: &Credential) -> Vec<(String, String)> {
        let date = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let nonce = new_nonce();
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), self.host.clone()),
            ("x-acs-action".into(), action.to_owned()),
            ("x-acs-version".into(), self.settings.version.to_owned()),
            ("x-acs-date".into(), date),
            ("x-acs-signature-nonce".into(), nonce),
            (
                "x-acs-content-sha256".into(),
                EMPTY_PAYLOAD_SHA256.to_owned(),
            ),
        ];
        if let Some(token) = &cred.security_token {
            headers.push(("x-acs-security-token".into(), token.expose().to_owned()));
            headers.push(("x-acs-accesskey-id".into(), cred.access_key_id.clone()));
        }
        headers
    }
}

/// 32 random hex characters, unique per attempt.
fn new_nonce() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_unique_hex() {
        let a = new_nonce();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, new_nonce());
    }
}
