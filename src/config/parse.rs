//! The first step: YAML text to the raw schema, with every type error of the file
//! rather than only the first.
//!
//! serde stops at the first error, and a deserializer cannot resume inside the
//! value that failed. So after an error inside a top-level section (`api:`,
//! `certificates:`, ...) that section's lines are blanked (line numbers stay) and
//! the text is read again; each section's errors are found on their own. Where the
//! text cannot be cut so (an error outside any top-level key, a file that uses
//! anchors and aliases, which a cut could break), reading stops at that error and
//! its message says the rest of the file was not checked.

use std::path::Path;

use super::ConfigError;
use super::problems::{Problem, problem_from_yaml};
use super::raw::RawConfig;

/// More type errors than this in one file are not worth reading on for.
const MAX_PARSE_PROBLEMS: usize = 20;

pub(super) fn parse_raw(text: &str, source: &Path) -> Result<RawConfig, ConfigError> {
    if text.trim().is_empty() {
        return Err(ConfigError::Invalid(vec![Problem {
            file: source.to_owned(),
            line: 1,
            column: 1,
            key: "(document)".into(),
            message: "the file is empty; see config/cas-renewd.example.yaml".into(),
            snippet: None,
        }]));
    }
    let anchors = uses_anchors(text);
    let mut text = text.to_owned();
    let mut problems: Vec<Problem> = Vec::new();
    loop {
        let mut problem = match parse_once(&text, source) {
            Ok(raw) if problems.is_empty() => return Ok(raw),
            Ok(_) => break,
            Err(p) => p,
        };
        let line = usize::try_from(problem.line).unwrap_or(usize::MAX);
        let stop = if anchors {
            Some("the file uses YAML anchors and aliases")
        } else if problems.len() + 1 >= MAX_PARSE_PROBLEMS {
            Some("too many problems")
        } else {
            None
        };
        let next = match stop {
            None => blank_section(&text, line).ok_or("the YAML cannot be read past it"),
            Some(reason) => Err(reason),
        };
        match next {
            Ok(cut) => {
                problems.push(problem);
                if !has_content(&cut) {
                    break;
                }
                text = cut;
            }
            Err(reason) => {
                if has_content_after(&text, line) {
                    problem.message = format!(
                        "{} (the rest of the file was not checked: {reason})",
                        problem.message
                    );
                }
                problems.push(problem);
                break;
            }
        }
    }
    problems.sort_by_key(|p| (p.line, p.column));
    Err(ConfigError::Invalid(problems))
}

/// One serde pass over `text`: the schema, or the first error located.
fn parse_once(text: &str, source: &Path) -> Result<RawConfig, Problem> {
    let mut path = None;
    // An alias bomb in a config file is an attack, not a configuration: cap how
    // much aliases may expand far below the parser's defaults.
    let mut alias_limits = serde_saphyr::options::AliasLimits::default();
    alias_limits.max_total_replayed_events = 10_000;
    alias_limits.max_replay_stack_depth = 16;
    alias_limits.max_alias_expansions_per_anchor = 100;
    let options = serde_saphyr::options! { alias_limits: alias_limits };
    serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            path = Some(e.path().to_string());
            e.into_inner()
        })
    })
    .map_err(|e| problem_from_yaml(&e, path, source))
}

/// Whether `line` (a line of the text) starts a top-level block-mapping key
/// such as `api:` or `certificates:`.
fn is_top_level_key(line: &str) -> bool {
    let name_len = line
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
        .count();
    name_len > 0
        && line.as_bytes()[0].is_ascii_alphabetic()
        && line[name_len..].trim_start().starts_with(':')
}

/// Whether a line is a document marker, after which nothing belongs to the section.
fn is_document_marker(line: &str) -> bool {
    line.starts_with("---") || line.starts_with("...")
}

/// `text` with the top-level section holding 1-based `line` replaced by empty
/// lines; `None` when that line is not inside one.
fn blank_section(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.split('\n').collect();
    let at = line.checked_sub(1).filter(|i| *i < lines.len())?;
    let start = (0..=at)
        .rev()
        .find(|i| is_top_level_key(lines[*i]) || is_document_marker(lines[*i]))?;
    if !is_top_level_key(lines[start]) {
        return None;
    }
    let end = (start + 1..lines.len())
        .find(|i| is_top_level_key(lines[*i]) || is_document_marker(lines[*i]))
        .unwrap_or(lines.len());
    let kept: Vec<&str> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| if (start..end).contains(&i) { "" } else { l })
        .collect();
    Some(kept.join("\n"))
}

/// Whether a line holds YAML rather than only space or a comment.
fn is_content(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with('#')
}

fn has_content(text: &str) -> bool {
    text.lines().any(is_content)
}

/// Whether anything but space and comments follows 1-based `line`.
fn has_content_after(text: &str, line: usize) -> bool {
    text.lines().skip(line).any(is_content)
}

/// Whether the text defines an anchor (`&name`): blanking the section that
/// defines one would turn its aliases elsewhere into errors of our making.
fn uses_anchors(text: &str) -> bool {
    text.lines().filter(|l| is_content(l)).any(|l| {
        l.match_indices('&').any(|(i, _)| {
            let before = l[..i].chars().next_back();
            let after = l[i + 1..].chars().next();
            before.is_none_or(|c| c.is_whitespace() || "[{,:-".contains(c))
                && after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_is_blanked_and_line_numbers_stay() {
        let text = "api:\n  timeout: 30\n# note\ncertificates:\n  - name: www\n";
        let cut = blank_section(text, 2).expect("inside api");
        assert_eq!(cut, "\n\n\ncertificates:\n  - name: www\n");
        assert_eq!(
            blank_section(text, 5).expect("inside certificates"),
            "api:\n  timeout: 30\n# note\n\n\n"
        );
        assert!(blank_section("- a\n- b\n", 2).is_none());
        assert!(blank_section("---\napi: {}\n", 1).is_none());
    }

    #[test]
    fn anchors_are_recognised_but_not_ampersands_in_values() {
        assert!(uses_anchors("a: &x [1]\nb: *x\n"));
        assert!(uses_anchors("a:\n  - &x\n    k: v\n"));
        assert!(!uses_anchors("cron: \"0 17 3 * * *\"\nq: \"a&b\"\n# &c\n"));
    }
}
