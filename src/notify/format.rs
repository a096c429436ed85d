//! What each receiver is sent: the scrubbed text, the generic webhook's JSON, and
//! the message bodies of the robots as their documentation describes them.

use serde_json::{Value, json};

use super::Event;

/// The most text one message carries: WeCom refuses `text.content` over 2048
/// bytes, and nobody reads more in a chat.
const MAX_TEXT_BYTES: usize = 2000;

/// `text` with PEM private-key blocks and every given secret removed, control
/// characters other than newline replaced, and the length bounded. Messages quote
/// CAS and hooks, so they are scrubbed whatever their source.
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut s = without_private_keys(text);
    for secret in secrets.iter().filter(|x| x.len() >= 4) {
        s = s.replace(secret, "[redacted]");
    }
    let mut s: String = s
        .chars()
        .map(|c| if c.is_control() && c != '\n' { ' ' } else { c })
        .collect();
    if s.len() > MAX_TEXT_BYTES {
        let mut cut = MAX_TEXT_BYTES;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// `text` with every PEM block whose label names a private key (PKCS#1, SEC1,
/// PKCS#8, encrypted PKCS#8) replaced; an unterminated one is cut to the end.
/// Certificates are public and stay.
fn without_private_keys(text: &str) -> String {
    const BEGIN: &str = "-----BEGIN ";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(BEGIN) {
        out.push_str(&rest[..i]);
        let block = &rest[i..];
        let label_end = block[BEGIN.len()..]
            .find("-----")
            .map(|j| BEGIN.len() + j + 5);
        match label_end {
            Some(h) if block[..h].contains("PRIVATE KEY") => {
                out.push_str("[private key removed]");
                rest = block[h..]
                    .find("-----END ")
                    .map(|e| &block[h + e + 9..])
                    .and_then(|after| after.find("-----").map(|k| &after[k + 5..]))
                    .unwrap_or("");
            }
            _ => {
                out.push_str(BEGIN);
                rest = &block[BEGIN.len()..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The subject line (e-mail) and first line (robots).
pub(super) fn title(e: &Event) -> String {
    if e.cert.is_empty() {
        format!("cas-renewd: {}", e.event.as_str())
    } else {
        format!("cas-renewd: {} {} ({})", e.event.as_str(), e.cert, e.domain)
    }
}

/// The text of a robot message or e-mail.
pub(super) fn text(e: &Event) -> String {
    let mut s = format!("{}\n{}", title(e), e.message);
    if let Some(n) = &e.not_after {
        s.push_str(&format!("\nexpires: {n}"));
    }
    s.push_str(&format!("\ntime: {}", e.time));
    s
}

/// DingTalk custom robot text message:
/// <https://open.dingtalk.com/document/robots/custom-robot-access> (`msgtype`
/// `text`, `text.content`).
pub(super) fn dingtalk_body(text: &str) -> Value {
    json!({ "msgtype": "text", "text": { "content": text } })
}

/// Feishu/Lark custom bot text message, with the signature fields when signed:
/// <https://open.feishu.cn/document/client-docs/bot-v3/add-custom-bot>.
pub(super) fn feishu_body(text: &str, signed: Option<(i64, String)>) -> Value {
    let mut v = json!({ "msg_type": "text", "content": { "text": text } });
    if let Some((ts, sign)) = signed {
        v["timestamp"] = Value::String(ts.to_string());
        v["sign"] = Value::String(sign);
    }
    v
}

/// WeCom group robot text message:
/// <https://developer.work.weixin.qq.com/document/path/91770> (`msgtype` `text`,
/// `text.content` at most 2048 bytes).
pub(super) fn wecom_body(text: &str) -> Value {
    json!({ "msgtype": "text", "text": { "content": text } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_keys_and_secrets_are_removed_and_certificates_kept() {
        let msg = "hook said: -----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n\
                   then -----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY----- \
                   and -----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY----- \
                   secret=hunter2hunter2 tail\x07";
        let s = scrub(msg, &["hunter2hunter2", ""]);
        assert!(!s.contains("MHcCAQEE") && !s.contains("MIGH"), "{s}");
        assert!(!s.contains("hunter2hunter2"), "{s}");
        assert!(s.contains("MIIB"), "a certificate is public: {s}");
        assert_eq!(s.matches("[private key removed]").count(), 2, "{s}");
        assert!(s.contains("[redacted] tail "), "{s}");
    }

    #[test]
    fn an_unterminated_private_key_is_cut_to_the_end() {
        let s = scrub("x -----BEGIN RSA PRIVATE KEY-----\nMIIE", &[]);
        assert_eq!(s, "x [private key removed]");
    }

    #[test]
    fn long_text_is_bounded_on_a_character_boundary() {
        let s = scrub(&"証".repeat(2000), &[]);
        assert!(s.len() <= MAX_TEXT_BYTES + 3, "{}", s.len());
        assert!(s.ends_with('…'));
    }
}
