//! Domain names as the daemon accepts them (from its configuration and from CAS),
//! how ownership of a domain is proven, and safe display of any text that came
//! from outside.
//!
//! A domain decides a certificate's name, its output directory, its journal file
//! and what a reload hook is told, so a name CAS reports is data to check, never
//! to trust: only a [`Domain`] may reach any of those.

use std::fmt;
use std::path::PathBuf;

/// Longest domain name (RFC 1035 §2.3.4 without the root's length octets).
pub const MAX_LEN: usize = 253;
/// Longest label (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;

/// How domain ownership is proven when an order waits in `domain_verify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValidationMethod {
    None,
    Dns,
    File,
}

/// A certificate's validation settings (`certificates[].validation`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationSpec {
    pub method: ValidationMethod,
    /// For `file`: the directory the web server serves for the domain.
    pub webroot: Option<PathBuf>,
}

impl Default for ValidationSpec {
    /// No validation step: CAS validates by itself (or the operator does).
    fn default() -> Self {
        ValidationSpec {
            method: ValidationMethod::None,
            webroot: None,
        }
    }
}

/// A checked domain name: RFC 1035 host-name labels (ASCII letters, digits,
/// hyphens; 1..=63 octets; no hyphen first or last) joined by dots, 253 octets at
/// most, lower-case, with an optional leading `*.`. Internationalised names are
/// accepted in their punycode (`xn--`) form only. It is never empty, never `.`
/// or `..`, and never holds `/`, whitespace, a control character or a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Domain(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("is empty")]
    Empty,
    #[error("is {len} octets long; a domain name has at most {MAX_LEN}")]
    TooLong { len: usize },
    #[error("ends with a dot; write it without the trailing dot")]
    TrailingDot,
    #[error("has an empty label (two dots in a row, or a leading dot)")]
    EmptyLabel,
    #[error("has a label of {len} octets; a label has at most {MAX_LABEL_LEN}")]
    LabelTooLong { len: usize },
    #[error("has label {label:?} that starts or ends with a hyphen")]
    Hyphen { label: String },
    #[error(
        "holds the non-ASCII character {found}; write an internationalised name in its punycode (xn--) form"
    )]
    NonAscii { found: String },
    #[error("holds the character {found}; only letters, digits, hyphens and dots are allowed")]
    BadChar { found: String },
    #[error("has `*` other than as a whole leading `*.` label")]
    Wildcard,
}

impl Domain {
    /// Checks `s` and returns it lower-cased; nothing else is changed.
    pub fn parse(s: &str) -> Result<Domain, DomainError> {
        if s.is_empty() {
            return Err(DomainError::Empty);
        }
        if s.len() > MAX_LEN {
            return Err(DomainError::TooLong { len: s.len() });
        }
        let rest = s.strip_prefix("*.").unwrap_or(s);
        if rest.is_empty() {
            return Err(DomainError::Empty);
        }
        if rest.ends_with('.') && !rest.starts_with('.') && !rest.contains("..") {
            return Err(DomainError::TrailingDot);
        }
        for label in rest.split('.') {
            check_label(label)?;
        }
        Ok(Domain(s.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `*.example.com` without its `*.`, when it is a wildcard.
    pub fn wildcard_base(&self) -> Option<&str> {
        self.0.strip_prefix("*.")
    }
}

fn check_label(label: &str) -> Result<(), DomainError> {
    if label.is_empty() {
        return Err(DomainError::EmptyLabel);
    }
    if let Some(c) = label.chars().find(|c| !c.is_ascii()) {
        return Err(DomainError::NonAscii {
            found: escape(&c.to_string()),
        });
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Err(if c == '*' {
            DomainError::Wildcard
        } else {
            DomainError::BadChar {
                found: format!("'{}'", escape(&c.to_string())),
            }
        });
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(DomainError::LabelTooLong { len: label.len() });
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(DomainError::Hyphen {
            label: label.to_owned(),
        });
    }
    Ok(())
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Domain {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Text from outside (CAS, a file) for a terminal table: printable ASCII stays as
/// it is; a backslash, every control character and everything beyond ASCII is
/// written as an escape (`\\`, `\n`, `\x1b`, `\u{fc}`), so it can neither move
/// the cursor, end a line, reorder text (bidi controls) nor pass for another name
/// (look-alike letters). The escaping is reversible: two inputs never print alike.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(f, self.0, |c| (' '..='~').contains(&c) && c != '\\')
    }
}

/// Text for a log line: like [`Escaped`], but letters beyond ASCII (CAS messages
/// may be Chinese) and backslashes stay as they are; only what could end a line,
/// drive a terminal or reorder text is escaped.
pub struct ControlsEscaped<'a>(pub &'a str);

impl fmt::Display for ControlsEscaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(f, self.0, |c| !(c.is_control() || is_layout_control(c)))
    }
}

/// Unicode format characters that move or reorder text without being control
/// characters: line and paragraph separators, bidi marks, embeddings, overrides
/// and isolates, and invisible separators.
fn is_layout_control(c: char) -> bool {
    matches!(
        c,
        '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}'
            | '\u{061c}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
    )
}

fn write_escaped(f: &mut fmt::Formatter<'_>, s: &str, keep: impl Fn(char) -> bool) -> fmt::Result {
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if keep(c) {
            continue;
        }
        f.write_str(&s[start..i])?;
        match c {
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if c.is_ascii() => write!(f, "\\x{:02x}", u32::from(c))?,
            c => write!(f, "\\u{{{:x}}}", u32::from(c))?,
        }
        start = i + c.len_utf8();
    }
    f.write_str(&s[start..])
}

/// [`Escaped`] as an owned string.
pub fn escape(s: &str) -> String {
    Escaped(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_host_names_wildcards_and_punycode_and_lower_cases_them() {
        for (input, want) in [
            ("www.example.com", "www.example.com"),
            ("WWW.Example.COM", "www.example.com"),
            ("*.example.com", "*.example.com"),
            ("*.EXAMPLE.com", "*.example.com"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("a-b.c-d.example", "a-b.c-d.example"),
            ("localhost", "localhost"),
            ("1.2.3.example", "1.2.3.example"),
        ] {
            assert_eq!(
                Domain::parse(input).map(|d| d.as_str().to_owned()),
                Ok(want.to_owned()),
                "{input}"
            );
        }
        let label63 = "a".repeat(63);
        assert!(Domain::parse(&format!("{label63}.example")).is_ok());
        // 253 octets exactly: four labels of 63 and one dot-separated "a".
        let long = format!("{0}.{0}.{0}.{1}", "a".repeat(63), "a".repeat(61));
        assert_eq!(long.len(), 253);
        assert!(Domain::parse(&long).is_ok());
        assert_eq!(
            Domain::parse("*.example.com")
                .expect("valid")
                .wildcard_base(),
            Some("example.com")
        );
        assert_eq!(
            Domain::parse("example.com").expect("valid").wildcard_base(),
            None
        );
    }

    #[test]
    fn refuses_everything_that_could_become_a_path_or_forge_text() {
        let long = format!("{0}.{0}.{0}.{0}.{0}", "a".repeat(59));
        assert_eq!(long.len(), 299);
        for (input, want) in [
            ("", DomainError::Empty),
            (".", DomainError::EmptyLabel),
            ("..", DomainError::EmptyLabel),
            (
                "a/../../etc",
                DomainError::BadChar {
                    found: "'/'".into(),
                },
            ),
            (
                "foo/bar",
                DomainError::BadChar {
                    found: "'/'".into(),
                },
            ),
            ("-x.com", DomainError::Hyphen { label: "-x".into() }),
            ("x-.com", DomainError::Hyphen { label: "x-".into() }),
            (
                "xn--.com",
                DomainError::Hyphen {
                    label: "xn--".into(),
                },
            ),
            (&long, DomainError::TooLong { len: 299 }),
            (
                "a\0b.com",
                DomainError::BadChar {
                    found: "'\\x00'".into(),
                },
            ),
            (
                "a\nb.com",
                DomainError::BadChar {
                    found: "'\\n'".into(),
                },
            ),
            (
                "evil\x1b[2J.com",
                DomainError::BadChar {
                    found: "'\\x1b'".into(),
                },
            ),
            (
                "www example.com",
                DomainError::BadChar {
                    found: "' '".into(),
                },
            ),
            (
                "under_score.com",
                DomainError::BadChar {
                    found: "'_'".into(),
                },
            ),
            (
                "a,b.com",
                DomainError::BadChar {
                    found: "','".into(),
                },
            ),
            (
                "bücher.example",
                DomainError::NonAscii {
                    found: "\\u{fc}".into(),
                },
            ),
            ("example.com.", DomainError::TrailingDot),
            ("*", DomainError::Wildcard),
            ("*.", DomainError::Empty),
            ("a.*.example.com", DomainError::Wildcard),
            ("*a.example.com", DomainError::Wildcard),
            ("**.example.com", DomainError::Wildcard),
            ("*.*.example.com", DomainError::Wildcard),
            (".example.com", DomainError::EmptyLabel),
            ("a..b", DomainError::EmptyLabel),
        ] {
            assert_eq!(Domain::parse(input), Err(want), "{input:?}");
        }
        assert_eq!(
            Domain::parse(&format!("{}.com", "a".repeat(64))),
            Err(DomainError::LabelTooLong { len: 64 })
        );
    }

    #[test]
    fn errors_never_carry_raw_control_characters() {
        for bad in ["a\nb", "x\x1b[31m", "a\u{202e}b", "\u{9b}31m"] {
            let msg = Domain::parse(bad).expect_err("invalid").to_string();
            assert!(
                msg.chars().all(|c| !c.is_control() && c.is_ascii()),
                "{msg:?}"
            );
        }
    }

    #[test]
    fn escaping_keeps_printable_ascii_and_escapes_the_rest_reversibly() {
        assert_eq!(escape("www.example.com"), "www.example.com");
        assert_eq!(escape("www example.com"), "www example.com");
        assert_eq!(
            escape("a\nb\r\tc\x1b[2J\x7f\0"),
            "a\\nb\\r\\tc\\x1b[2J\\x7f\\x00"
        );
        assert_eq!(escape("bücher"), "b\\u{fc}cher");
        // Bidi override, C1 CSI, line separator: all visible.
        assert_eq!(
            escape("\u{202e}\u{9b}\u{2028}"),
            "\\u{202e}\\u{9b}\\u{2028}"
        );
        // A literal backslash-n and a newline print differently.
        assert_eq!(escape("\\n"), "\\\\n");
        assert_ne!(escape("\\n"), escape("\n"));
    }

    #[test]
    fn log_escaping_keeps_letters_and_escapes_line_breaks_and_controls() {
        let s = |t: &str| ControlsEscaped(t).to_string();
        assert_eq!(s("证书 bücher C:\\x"), "证书 bücher C:\\x");
        assert_eq!(s("a\nb\rc\x1b[2J"), "a\\nb\\rc\\x1b[2J");
        assert_eq!(s("\u{2028}\u{202e}\u{85}"), "\\u{2028}\\u{202e}\\u{85}");
    }
}
