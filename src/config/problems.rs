//! Located problems: what `check-config` prints, one `file:line:column: key: message` each.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_saphyr::Location;

use super::MAX_CONFIG_BYTES;

/// One located problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: u64,
    pub column: u64,
    /// Dotted path of the key, e.g. `certificates[1].output.dir`.
    pub key: String,
    pub message: String,
    /// Source excerpt under the message, when the parser gave one.
    pub snippet: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.key,
            self.message
        )?;
        if let Some(snippet) = &self.snippet {
            write!(f, "\n{snippet}")?;
        }
        Ok(())
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read configuration: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: configuration is {size} bytes; the limit is {MAX_CONFIG_BYTES}")]
    TooLarge { path: PathBuf, size: u64 },
    #[error("{path}: is {kind}, not a regular file; give --config the configuration file")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{}", display_problems(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// The located problems, empty for I/O errors.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid(p) => p,
            _ => &[],
        }
    }
}

fn display_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Turns a parser error (syntax, unknown key, wrong type, bad value) into a located
/// problem; `path` is the serde path of the value that failed, when known.
pub(super) fn problem_from_yaml(
    e: &serde_saphyr::Error,
    path: Option<String>,
    source: &Path,
) -> Problem {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((1, 1));
    let source_name = source.display().to_string();
    let rendered = e.render_with_options(serde_saphyr::render_options! {
        source_name: Some(source_name.as_str()),
    });
    // The rendering starts with "error: line L column C: message"; keep the message
    // and the snippet beneath it, and put our own located header in front.
    let mut lines = rendered.lines();
    let first = lines.next().unwrap_or_default();
    let message = first
        .split_once(": ")
        .map(|(_, rest)| rest)
        .map(
            |rest| match rest.split_once(&format!("column {column}: ")) {
                Some((_, m)) => m,
                None => rest,
            },
        )
        .unwrap_or(first)
        .to_owned();
    let snippet: Vec<String> = lines.map(redact_snippet_line).collect();
    let key = match path.as_deref() {
        None | Some("" | ".") => "(document)".to_owned(),
        // `Spanned` wraps its value in a `value` field; no key of ours is so named.
        Some(p) => p
            .replace(".value[", "[")
            .replace(".value.", ".")
            .trim_end_matches(".value")
            .to_owned(),
    };
    // A value the parser quotes in its message is dropped when the key holds a secret.
    let message = if is_sensitive(&key) {
        without_quoted_values(&message)
    } else {
        message
    };
    Problem {
        file: source.to_owned(),
        line,
        column,
        key,
        message,
        snippet: (!snippet.is_empty()).then(|| snippet.join("\n")),
    }
}

/// Words in a key that may hold a secret inline (a `*_file` key holds only a path).
const SENSITIVE: [&str; 4] = ["secret", "token", "password", "url"];

fn is_sensitive(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    SENSITIVE.iter().any(|word| {
        lower
            .match_indices(word)
            .any(|(at, w)| !lower[at + w.len()..].starts_with("_file"))
    })
}

/// A snippet line (`  3 |   access_key_secret: value`) with everything after the
/// key's colon hidden when the line names a key that may hold a secret: the parser
/// shows the lines around a mistake, and a secret beside it would reach
/// `check-config`, `reload.json` and the log.
fn redact_snippet_line(line: &str) -> String {
    let Some((gutter, content)) = line.split_once('|') else {
        return line.to_owned();
    };
    // Only source lines (a line number in the gutter), not the parser's marker lines.
    if gutter.trim().is_empty() || !is_sensitive(content) {
        return line.to_owned();
    }
    match content.split_once(':') {
        Some((key, _)) => format!("{gutter}|{key}: <redacted>"),
        None => format!("{gutter}| <redacted>"),
    }
}

/// `message` with every quoted or back-quoted part replaced by `<redacted>`.
fn without_quoted_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut open: Option<char> = None;
    for c in message.chars() {
        match open {
            Some(q) if c == q => open = None,
            Some(_) => {}
            None if matches!(c, '"' | '`' | '\'') => {
                open = Some(c);
                out.push_str("<redacted>");
            }
            None => out.push(c),
        }
    }
    out
}

/// Collects located problems during validation.
pub(super) struct Problems<'a> {
    file: &'a Path,
    list: Vec<Problem>,
}

impl<'a> Problems<'a> {
    pub(super) fn new(file: &'a Path) -> Self {
        Problems {
            file,
            list: Vec::new(),
        }
    }

    pub(super) fn at(&mut self, loc: Location, key: impl Into<String>, message: impl Into<String>) {
        let (line, column) = if loc == Location::UNKNOWN {
            (1, 1)
        } else {
            (loc.line(), loc.column())
        };
        self.list.push(Problem {
            file: self.file.to_owned(),
            line,
            column,
            key: key.into(),
            message: message.into(),
            snippet: None,
        });
    }

    /// `Err` with every problem in file order, or `Ok` when there was none.
    pub(super) fn finish(mut self) -> Result<(), ConfigError> {
        if self.list.is_empty() {
            return Ok(());
        }
        self.list.sort_by_key(|x| (x.line, x.column));
        Err(ConfigError::Invalid(self.list))
    }
}
