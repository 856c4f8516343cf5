//! Field and label selectors, as lists and watches filter by them.
//!
//! A custom resource supports only `metadata.name` and `metadata.namespace`
//! in field selectors (without `selectableFields` in its CRD); any other
//! field is refused, as the API server refuses it.

use serde_json::Value;

use super::store::ApiError;

#[derive(Clone, Debug, PartialEq)]
enum Op {
    Eq(String),
    Ne(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
}

#[derive(Clone, Debug, PartialEq)]
struct Requirement {
    key: String,
    op: Op,
}

impl Requirement {
    fn matches(&self, value: Option<&str>) -> bool {
        match (&self.op, value) {
            (Op::Eq(want), Some(v)) => v == want,
            (Op::Ne(want), v) => v != Some(want.as_str()),
            (Op::In(set), Some(v)) => set.iter().any(|s| s == v),
            (Op::NotIn(set), v) => v.is_none_or(|v| !set.iter().any(|s| s == v)),
            (Op::Exists, v) => v.is_some(),
            (Op::NotExists, v) => v.is_none(),
            (Op::Eq(_) | Op::In(_), None) => false,
        }
    }
}

/// What a list or watch selects: a namespace (or all), field and label
/// requirements.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    pub namespace: Option<String>,
    fields: Vec<Requirement>,
    labels: Vec<Requirement>,
}

/// Splits at commas outside parentheses (`a in (x,y),b`).
fn split_top(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0i32, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn parse_equality(term: &str) -> Option<Requirement> {
    for (sep, ne) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((k, v)) = term.split_once(sep) {
            let (key, value) = (k.trim().to_owned(), v.trim().to_owned());
            let op = if ne { Op::Ne(value) } else { Op::Eq(value) };
            return Some(Requirement { key, op });
        }
    }
    None
}

fn parse_labels(s: &str) -> Result<Vec<Requirement>, ApiError> {
    let bad = |t: &str| ApiError::bad_request(format!("unable to parse requirement: {t:?}"));
    split_top(s)
        .into_iter()
        .map(|term| {
            if let Some(r) = parse_equality(term) {
                return Ok(r);
            }
            let set = |rest: &str| -> Option<Vec<String>> {
                let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
                Some(inner.split(',').map(|v| v.trim().to_owned()).collect())
            };
            if let Some((k, rest)) = term.split_once(" notin ") {
                let vals = set(rest).ok_or_else(|| bad(term))?;
                return Ok(Requirement {
                    key: k.trim().into(),
                    op: Op::NotIn(vals),
                });
            }
            if let Some((k, rest)) = term.split_once(" in ") {
                let vals = set(rest).ok_or_else(|| bad(term))?;
                return Ok(Requirement {
                    key: k.trim().into(),
                    op: Op::In(vals),
                });
            }
            if let Some(k) = term.strip_prefix('!') {
                return Ok(Requirement {
                    key: k.trim().into(),
                    op: Op::NotExists,
                });
            }
            if term.contains(char::is_whitespace) {
                return Err(bad(term));
            }
            Ok(Requirement {
                key: term.into(),
                op: Op::Exists,
            })
        })
        .collect()
}

fn parse_fields(s: &str) -> Result<Vec<Requirement>, ApiError> {
    split_top(s)
        .into_iter()
        .map(|term| {
            let r = parse_equality(term).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                ))
            })?;
            if r.key != "metadata.name" && r.key != "metadata.namespace" {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {}",
                    r.key
                )));
            }
            Ok(r)
        })
        .collect()
}

impl Filter {
    pub fn new(
        namespace: Option<&str>,
        field_selector: Option<&str>,
        label_selector: Option<&str>,
    ) -> Result<Self, ApiError> {
        Ok(Self {
            namespace: namespace.map(str::to_owned),
            fields: field_selector
                .map(parse_fields)
                .transpose()?
                .unwrap_or_default(),
            labels: label_selector
                .map(parse_labels)
                .transpose()?
                .unwrap_or_default(),
        })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let meta = |f: &str| {
            obj.get("metadata")
                .and_then(|m| m.get(f))
                .and_then(Value::as_str)
        };
        if let Some(ns) = &self.namespace
            && meta("namespace") != Some(ns.as_str())
        {
            return false;
        }
        let field_ok = self.fields.iter().all(|r| {
            let field = r.key.strip_prefix("metadata.").unwrap_or(&r.key);
            r.matches(meta(field))
        });
        let labels = obj.get("metadata").and_then(|m| m.get("labels"));
        let label_ok = self
            .labels
            .iter()
            .all(|r| r.matches(labels.and_then(|l| l.get(&r.key)).and_then(Value::as_str)));
        field_ok && label_ok
    }
}
