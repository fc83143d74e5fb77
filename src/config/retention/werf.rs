//! werf's `keepPolicies`, field for field, its default set, and reference patterns anchored
//! exactly as werf anchors them (with the warning for a top-level `|`).

use serde::{Deserialize, Serialize};

use super::*;

/// One werf keep policy, field for field.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeepPolicy {
    pub references: References,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images_per_reference: Option<Limit>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct References {
    /// `/regex/` or a literal tag name. Checked as it is read, so a bad one is named with
    /// its line, as written.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "checked_reference_pattern"
    )]
    pub tag: Option<String>,
    /// `/regex/` or a literal branch name.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "checked_reference_pattern"
    )]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<Limit>,
}

/// werf's `limit` / `imagesPerReference`: `last`, `in`, `operator`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<i64>,
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    pub within: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<Operator>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum Operator {
    #[default]
    And,
    Or,
}

/// werf's default `keepPolicies`, used when a scope gives none.
pub fn werf_default_policies() -> Vec<KeepPolicy> {
    let days7 = Some(HumanDuration::from_secs(168 * 3600));
    vec![
        KeepPolicy {
            references: References {
                tag: Some("/.*/".into()),
                branch: None,
                limit: Some(Limit {
                    last: Some(10),
                    ..Limit::default()
                }),
            },
            images_per_reference: None,
        },
        KeepPolicy {
            references: References {
                tag: None,
                branch: Some("/.*/".into()),
                limit: Some(Limit {
                    last: Some(10),
                    within: days7,
                    operator: Some(Operator::And),
                }),
            },
            images_per_reference: Some(Limit {
                last: Some(2),
                within: days7,
                operator: Some(Operator::And),
            }),
        },
        KeepPolicy {
            references: References {
                tag: None,
                branch: Some("/^(main|master|staging|production)$/".into()),
                limit: None,
            },
            images_per_reference: Some(Limit {
                last: Some(10),
                ..Limit::default()
            }),
        },
    ]
}

/// A `/regex/` or a literal, anchored exactly as werf anchors it: `"^" + body + "$"`, with no
/// group around the body, so `/main|3/` means `(^main)|(3$)` (see [`pattern_warning`]).
pub fn reference_pattern(text: &str) -> Result<regex::Regex, regex::Error> {
    let source = match regex_body(text) {
        Some(body) => body.to_string(),
        None => regex::escape(text),
    };
    regex::Regex::new(&format!("^{source}$"))
}

/// The body of a `/regex/` value; `None` for a literal.
fn regex_body(text: &str) -> Option<&str> {
    text.strip_prefix('/')
        .and_then(|t| t.strip_suffix('/'))
        .filter(|_| text.len() >= 2)
}

/// Reads a reference pattern and compiles it, so that an invalid one fails where it is written
/// (file and line), showing the value as the user wrote it rather than the anchored rewrite.
fn checked_reference_pattern<'de, D>(deserializer: D) -> Result<Option<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let text = String::deserialize(deserializer)?;
    check_reference_pattern(&text).map_err(serde::de::Error::custom)?;
    Ok(Some(text))
}

/// Why `text` is not a reference pattern, in the user's words: the value as written, and the
/// regex crate's message without its rendering of the (rewritten) pattern.
pub(super) fn check_reference_pattern(text: &str) -> Result<(), String> {
    reference_pattern(text)
        .map(drop)
        .map_err(|e| format!("{text:?} is not a valid pattern: {}", regex_error(&e)))
}

fn regex_error(error: &regex::Error) -> String {
    match error {
        regex::Error::Syntax(text) => text
            .lines()
            .rev()
            .find(|l| l.starts_with("error:"))
            .map_or_else(
                || text.clone(),
                |l| l.trim_start_matches("error: ").to_string(),
            ),
        other => other.to_string(),
    }
}

/// A reference pattern whose body has a top-level `|`: werf anchors only the first and last
/// alternative, which selects more than it seems to (`/main|3/` also selects
/// `chore/merge-main-into-3`). Not an error — regkeeper must select what werf selects — but
/// worth a warning with the grouped form.
pub fn pattern_warning(text: &str) -> Option<String> {
    let body = regex_body(text)?;
    let (mut depth, mut in_class, mut escaped) = (0usize, false, false);
    let mut top_level_bar = false;
    for c in body.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            '(' if !in_class => depth += 1,
            ')' if !in_class => depth = depth.saturating_sub(1),
            '|' if !in_class && depth == 0 => top_level_bar = true,
            _ => {}
        }
    }
    let grouped = body.trim_start_matches('^').trim_end_matches('$');
    top_level_bar.then(|| {
        format!(
            "{text} is anchored as werf anchors it, \"^\" + body + \"$\": only the first alternative is anchored at the start and only the last at the end, so it selects more names than it lists; write /^({grouped})$/ to select exactly those names"
        )
    })
}
