//! A YAML document as `a.b.c → value` pairs, so two configurations compare field by field.

use serde_yaml::Value;
use std::collections::BTreeMap;

pub type Flat = BTreeMap<String, String>;

/// The node at `path` (mapping keys), flattened; empty when absent. Each part of `path` is one key,
/// so names with dots in them (`iscsi.config`, IQNs) are looked up whole.
pub fn section(doc: &Value, path: &[&str]) -> Flat {
    let mut v = doc;
    for key in path {
        match v.get(*key) {
            Some(next) => v = next,
            None => return Flat::new(),
        }
    }
    let mut out = Flat::new();
    walk(v, String::new(), &mut out);
    out
}

fn walk(v: &Value, at: String, out: &mut Flat) {
    let join = |k: &str| if at.is_empty() { k.to_string() } else { format!("{at}.{k}") };
    match v {
        Value::Mapping(m) => {
            for (k, v) in m {
                walk(v, join(&scalar(k)), out);
            }
        }
        // Lists of scalars compare as one value; lists of mappings (nodes, links) by position.
        Value::Sequence(items) if items.iter().all(|i| !matches!(i, Value::Mapping(_))) => {
            out.insert(at, items.iter().map(scalar).collect::<Vec<_>>().join(", "));
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, format!("{at}[{i}]"), out);
            }
        }
        other => {
            out.insert(at, scalar(other));
        }
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => serde_yaml::to_string(other).unwrap_or_default().trim().to_string(),
    }
}

/// `(field, old, new)` for every field that differs; `field` is `prefix.key`.
pub fn differences(old: &Flat, new: &Flat, prefix: &str) -> Vec<(String, String, String)> {
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let (a, b) = (old.get(k), new.get(k));
            let field = if k.is_empty() { prefix.to_string() } else { format!("{prefix}.{k}") };
            (a != b).then(|| (field, shown(a), shown(b)))
        })
        .collect()
}

fn shown(v: Option<&String>) -> String {
    match v {
        Some(v) if v.is_empty() => "\"\"".to_string(),
        Some(v) => v.clone(),
        None => "(none)".to_string(),
    }
}
