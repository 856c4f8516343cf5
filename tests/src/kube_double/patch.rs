//! The patch formats a custom resource accepts: JSON merge patch (RFC 7386),
//! JSON patch (RFC 6902), and the field sets server-side apply works on.
//! (Strategic merge patch is not among them: the API server refuses it for
//! custom resources, and so does the double.)

use serde_json::{Map, Value};

/// A path of object keys from the root to a field.
pub type FieldPath = Vec<String>;

/// RFC 7386: objects merge key by key, `null` removes, anything else replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// The fields of `v` that apply sets: every path to a value that is not a
/// non-empty object (lists are atomic).
pub fn leaves(v: &Value) -> Vec<FieldPath> {
    fn walk(v: &Value, path: &mut FieldPath, out: &mut Vec<FieldPath>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, child) in m {
                    path.push(k.clone());
                    walk(child, path, out);
                    path.pop();
                }
            }
            _ => out.push(path.clone()),
        }
    }
    let mut out = Vec::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// Whether a field of an apply configuration for the main resource is one
/// the applier can own: not the type, the identity or server-set metadata,
/// and not the status (which belongs to the subresource).
pub fn is_owned_field(p: &FieldPath) -> bool {
    match p.first().map(String::as_str) {
        Some("apiVersion" | "kind" | "status") | None => false,
        Some("metadata") => matches!(
            p.get(1).map(String::as_str),
            Some("labels" | "annotations" | "finalizers" | "ownerReferences")
        ),
        Some(_) => true,
    }
}

pub fn get_path<'a>(v: &'a Value, p: &FieldPath) -> Option<&'a Value> {
    p.iter().try_fold(v, |v, k| v.get(k))
}

/// Sets the field at `p`, creating the objects on the way.
pub fn set_path(v: &mut Value, p: &FieldPath, value: Value) {
    let Some((last, parents)) = p.split_last() else {
        *v = value;
        return;
    };
    let mut cur = v;
    for k in parents {
        if !cur.get(k).is_some_and(Value::is_object) {
            cur[k.as_str()] = Value::Object(Map::new());
        }
        cur = &mut cur[k.as_str()];
    }
    cur[last.as_str()] = value;
}

pub fn remove_path(v: &mut Value, p: &FieldPath) {
    let Some((last, parents)) = p.split_last() else {
        return;
    };
    let mut cur = v;
    for k in parents {
        match cur.get_mut(k) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
}

/// A JSON pointer (RFC 6901) as its reference tokens.
fn pointer(s: &str) -> Result<Vec<String>, String> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = s.strip_prefix('/') else {
        return Err(format!("path {s:?} does not start with '/'"));
    };
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn parent_of<'a>(
    doc: &'a mut Value,
    tokens: &[String],
    path: &str,
) -> Result<&'a mut Value, String> {
    let mut cur = doc;
    for t in tokens {
        cur = match cur {
            Value::Object(m) => m.get_mut(t),
            Value::Array(a) => t.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| format!("path {path:?} does not exist"))?;
    }
    Ok(cur)
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let tokens = pointer(path)?;
    let Some((last, parents)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent_of(doc, parents, path)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
        }
        Value::Array(a) => {
            let i = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= a.len())
                    .ok_or_else(|| format!("index {last:?} out of range in {path:?}"))?
            };
            a.insert(i, value);
        }
        _ => return Err(format!("path {path:?}: parent is not a container")),
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let tokens = pointer(path)?;
    let Some((last, parents)) = tokens.split_last() else {
        return Err("cannot remove the whole document".into());
    };
    match parent_of(doc, parents, path)? {
        Value::Object(m) => m.remove(last),
        Value::Array(a) => last
            .parse::<usize>()
            .ok()
            .filter(|i| *i < a.len())
            .map(|i| a.remove(i)),
        _ => None,
    }
    .ok_or_else(|| format!("path {path:?} does not exist"))
}

fn get(doc: &Value, path: &str) -> Result<Value, String> {
    let tokens = pointer(path)?;
    let mut cur = doc;
    for t in &tokens {
        cur = match cur {
            Value::Object(m) => m.get(t),
            Value::Array(a) => t.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        }
        .ok_or_else(|| format!("path {path:?} does not exist"))?;
    }
    Ok(cur.clone())
}

/// RFC 6902: the operations in order, all or nothing.
pub fn json_patch(doc: &Value, ops: &Value) -> Result<Value, String> {
    let ops = ops
        .as_array()
        .ok_or("a JSON patch is a list of operations")?;
    let mut doc = doc.clone();
    for (i, op) in ops.iter().enumerate() {
        let field = |f: &str| -> Result<String, String> {
            op.get(f)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("operation {i}: missing {f:?}"))
        };
        let value = || -> Result<Value, String> {
            op.get("value")
                .cloned()
                .ok_or_else(|| format!("operation {i}: missing \"value\""))
        };
        let path = field("path")?;
        match field("op")?.as_str() {
            "add" => add(&mut doc, &path, value()?)?,
            "remove" => {
                remove(&mut doc, &path)?;
            }
            "replace" => {
                remove(&mut doc, &path)?;
                add(&mut doc, &path, value()?)?;
            }
            "move" => {
                let v = remove(&mut doc, &field("from")?)?;
                add(&mut doc, &path, v)?;
            }
            "copy" => {
                let v = get(&doc, &field("from")?)?;
                add(&mut doc, &path, v)?;
            }
            "test" => {
                if get(&doc, &path)? != value()? {
                    return Err(format!("operation {i}: test of {path:?} failed"));
                }
            }
            other => return Err(format!("operation {i}: unknown op {other:?}")),
        }
    }
    Ok(doc)
}
