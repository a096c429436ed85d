//! The signatures each receiver checks (pure functions, so the tests' receivers
//! can check them independently).

use aws_lc_rs::hmac;
use base64::Engine as _;

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::sign(&key, msg).as_ref().to_vec()
}

/// The generic webhook's `X-Cas-Renewd-Signature`: lower-case hex HMAC-SHA256 of the
/// exact body bytes, keyed with the secret file's content.
pub fn webhook_signature(secret: &str, body: &[u8]) -> String {
    hex::encode(hmac_sha256(secret.as_bytes(), body))
}

/// DingTalk custom robot, "加签" (security settings: signature):
/// <https://open.dingtalk.com/document/robots/customize-robot-security-settings>.
/// The string to sign is `timestamp + "\n" + secret` (timestamp in milliseconds),
/// HMAC-SHA256 keyed with the secret, then Base64; the caller URL-encodes it into
/// the `sign` query parameter beside `timestamp`.
pub fn dingtalk_sign(timestamp_ms: i64, secret: &str) -> String {
    let to_sign = format!("{timestamp_ms}\n{secret}");
    base64::engine::general_purpose::STANDARD
        .encode(hmac_sha256(secret.as_bytes(), to_sign.as_bytes()))
}

/// Feishu/Lark custom bot, "签名校验":
/// <https://open.feishu.cn/document/client-docs/bot-v3/add-custom-bot> (Lark:
/// <https://open.larksuite.com/document/client-docs/bot-v3/add-custom-bot>). Unlike
/// DingTalk, `timestamp + "\n" + secret` (timestamp in seconds) is the HMAC-SHA256
/// *key* and the message is empty; the Base64 result goes into the body's `sign`.
pub fn feishu_sign(timestamp_s: i64, secret: &str) -> String {
    let key = format!("{timestamp_s}\n{secret}");
    base64::engine::general_purpose::STANDARD.encode(hmac_sha256(key.as_bytes(), b""))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values computed independently with Python's hmac module, the way
    // each vendor's documented sample code does it.
    #[test]
    fn dingtalk_signature_matches_the_documented_algorithm() {
        assert_eq!(
            dingtalk_sign(1_700_000_000_000, "SECtest"),
            "aZLLrriXgn05YbwaGR7knYsLeJADjr9NwLaNNKpxh4g="
        );
    }

    #[test]
    fn feishu_signature_matches_the_documented_algorithm() {
        assert_eq!(
            feishu_sign(1_700_000_000, "test"),
            "eSJQnOl8XqPTMPHWz9e5IzeHS/tqoc68g2967ekIPmg="
        );
    }

    #[test]
    fn webhook_signature_is_hex_hmac_of_the_body() {
        assert_eq!(
            webhook_signature("key", b"The quick brown fox jumps over the lazy dog"),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }
}
