//! `config view`: merging the parties' specs into one (ref §7 `merge_specs`), on the YAML
//! documents themselves so fields this crate does not model survive. For each field of the
//! incoming document: absent or null → skipped; absent in the current one → taken; equal →
//! skipped; two lists → each incoming element not already present (structural equality) is
//! appended; two mappings → merged field by field.
//!
//! Departure from the reference, on purpose: where the reference keeps both of two different
//! list entries of the same `name` (two datasources called `input`, so which one a clean room
//! mounts depends on list order) and fails obscurely on two different scalars, this merge stops
//! with a [`MergeConflict`] naming the section, the entry and the first field that differs.
//! Merging equal entries is idempotent, so merging a spec into itself changes nothing.

use serde_yaml::Value;

/// Two specs disagree on one entry or field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct MergeConflict {
    /// Where: the section (`datasources`, `governance.telemetry.application.logs`, …).
    pub section: String,
    /// The entry's `name`, when the conflict is between two list entries of the same name.
    pub entry: Option<String>,
    /// The first field that differs, relative to the entry (or the section), e.g.
    /// `protection.configuration`; empty when the values themselves differ.
    pub field: String,
    /// That field's value in the spec merged so far (abbreviated).
    pub current: String,
    /// That field's value in the incoming spec (abbreviated).
    pub incoming: String,
}

impl MergeConflict {
    fn describe(&self) -> String {
        let what = match &self.entry {
            Some(name) => format!("{} entry '{name}'", self.section),
            None => format!("'{}'", self.section),
        };
        let field = if self.field.is_empty() {
            String::new()
        } else {
            format!(" at {}", self.field)
        };
        format!(
            "conflicting specs: {what} differs{field} ({} here, {} in the incoming spec); \
             entries of the same name must be equal to merge",
            self.current, self.incoming
        )
    }
}

/// Merges `incoming` into `current` (both whole spec documents).
pub fn merge(current: &mut Value, incoming: &Value) -> Result<(), MergeConflict> {
    merge_at(current, incoming, "")
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        other => abbreviate(other),
    }
}

fn name_of(value: &Value) -> Option<&str> {
    value.get("name").and_then(Value::as_str)
}

fn merge_at(current: &mut Value, incoming: &Value, path: &str) -> Result<(), MergeConflict> {
    if incoming.is_null() || current == incoming {
        return Ok(());
    }
    if current.is_null() {
        *current = incoming.clone();
        return Ok(());
    }
    match (current, incoming) {
        (Value::Mapping(mine), Value::Mapping(theirs)) => {
            for (key, value) in theirs {
                match mine.get_mut(key) {
                    Some(existing) => merge_at(existing, value, &join(path, &key_text(key)))?,
                    None => {
                        if !value.is_null() {
                            mine.insert(key.clone(), value.clone());
                        }
                    }
                }
            }
            Ok(())
        }
        (Value::Sequence(mine), Value::Sequence(theirs)) => {
            for element in theirs {
                if mine.contains(element) {
                    continue;
                }
                if let Some(name) = name_of(element)
                    && let Some(same_name) = mine.iter().find(|e| name_of(e) == Some(name))
                {
                    let (field, ours, other) = first_difference(same_name, element, "");
                    return Err(MergeConflict {
                        section: path.to_owned(),
                        entry: Some(name.to_owned()),
                        field,
                        current: ours,
                        incoming: other,
                    });
                }
                mine.push(element.clone());
            }
            Ok(())
        }
        (mine, theirs) => Err(MergeConflict {
            section: path.to_owned(),
            entry: None,
            field: String::new(),
            current: abbreviate(mine),
            incoming: abbreviate(theirs),
        }),
    }
}

/// The first path at which `a` and `b` differ, with both values there.
fn first_difference(a: &Value, b: &Value, path: &str) -> (String, String, String) {
    match (a, b) {
        (Value::Mapping(x), Value::Mapping(y)) => {
            for (key, value) in x {
                let sub = join(path, &key_text(key));
                match y.get(key) {
                    Some(other) if other == value => {}
                    Some(other) => return first_difference(value, other, &sub),
                    None => return (sub, abbreviate(value), "nothing".into()),
                }
            }
            for (key, value) in y {
                if !x.contains_key(key) {
                    return (
                        join(path, &key_text(key)),
                        "nothing".into(),
                        abbreviate(value),
                    );
                }
            }
            (path.to_owned(), abbreviate(a), abbreviate(b))
        }
        (Value::Sequence(x), Value::Sequence(y)) if x.len() == y.len() => {
            for (index, (p, q)) in x.iter().zip(y).enumerate() {
                if p != q {
                    return first_difference(p, q, &format!("{path}[{index}]"));
                }
            }
            (path.to_owned(), abbreviate(a), abbreviate(b))
        }
        _ => (path.to_owned(), abbreviate(a), abbreviate(b)),
    }
}

/// A value as one short line of YAML flow text.
fn abbreviate(value: &Value) -> String {
    const LIMIT: usize = 60;
    let text = match value {
        Value::String(s) => format!("'{s}'"),
        Value::Null => "null".into(),
        other => serde_json::to_string(other).unwrap_or_else(|_| "a value".into()),
    };
    if text.chars().count() <= LIMIT {
        text
    } else {
        let head: String = text.chars().take(LIMIT).collect();
        format!("{head}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn lists_append_new_entries_and_skip_equal_ones() {
        let mut current = yaml(
            "identities: [{name: cgs, url: a}]\ndatasources: [{name: in, mode: CSE}]\ndatasinks: []\n",
        );
        let incoming = yaml(
            "identities: [{name: cgs, url: a}]\ndatasources: [{name: in, mode: CSE}]\n\
             datasinks: [{name: out}]\napplications: [{name: app}]\nfuture: {x: 1}\n",
        );
        merge(&mut current, &incoming).unwrap();
        assert_eq!(
            current,
            yaml(
                "identities: [{name: cgs, url: a}]\ndatasources: [{name: in, mode: CSE}]\n\
                 datasinks: [{name: out}]\napplications: [{name: app}]\nfuture: {x: 1}\n"
            )
        );
        let again = current.clone();
        merge(&mut current, &again).unwrap();
        assert_eq!(current, again, "merging a spec into itself changes nothing");
    }

    #[test]
    fn null_and_absent_fields_are_skipped_and_mappings_merge_by_field() {
        let mut current =
            yaml("governance: {telemetry: {application: {logs: {name: l}}}}\nnetwork: null\n");
        let incoming = yaml(
            "governance: {telemetry: {application: null, infrastructure: {logs: {name: t}}}}\n\
             network: {http: {}}\nsandbox: null\n",
        );
        merge(&mut current, &incoming).unwrap();
        assert_eq!(
            current,
            yaml(
                "governance: {telemetry: {application: {logs: {name: l}}, infrastructure: {logs: {name: t}}}}\n\
                 network: {http: {}}\n"
            )
        );
    }

    #[test]
    fn two_different_entries_of_the_same_name_are_a_conflict() {
        let mut current =
            yaml("datasources: [{name: in, protection: {configuration: AAA}, path: ''}]\n");
        let incoming =
            yaml("datasources: [{name: in, protection: {configuration: BBB}, path: ''}]\n");
        let before = current.clone();
        let conflict = merge(&mut current, &incoming).unwrap_err();
        assert_eq!(conflict.section, "datasources");
        assert_eq!(conflict.entry.as_deref(), Some("in"));
        assert_eq!(conflict.field, "protection.configuration");
        assert_eq!(conflict.current, "'AAA'");
        assert_eq!(conflict.incoming, "'BBB'");
        let message = conflict.to_string();
        assert!(
            message.contains("datasources entry 'in' differs at protection.configuration"),
            "{message}"
        );
        assert_eq!(
            current, before,
            "nothing is merged from a conflicting list entry"
        );
    }

    #[test]
    fn a_field_only_one_side_has_is_named() {
        let mut current = yaml("applications: [{name: app, command: [a]}]\n");
        let incoming = yaml("applications: [{name: app, command: [a], env: {X: '1'}}]\n");
        let conflict = merge(&mut current, &incoming).unwrap_err();
        assert_eq!(conflict.field, "env");
        assert_eq!(conflict.current, "nothing");
        let mut current = yaml("applications: [{name: app, command: [a, b]}]\n");
        let incoming = yaml("applications: [{name: app, command: [a, c]}]\n");
        assert_eq!(
            merge(&mut current, &incoming).unwrap_err().field,
            "command[1]"
        );
    }

    #[test]
    fn two_different_scalars_are_a_conflict_naming_the_path() {
        let mut current =
            yaml("governance: {telemetry: {application: {logs: {name: a, store: {id: x}}}}}\n");
        let incoming =
            yaml("governance: {telemetry: {application: {logs: {name: a, store: {id: y}}}}}\n");
        let conflict = merge(&mut current, &incoming).unwrap_err();
        assert_eq!(
            conflict.section,
            "governance.telemetry.application.logs.store.id"
        );
        assert_eq!(conflict.entry, None);
        assert!(conflict.to_string().contains("'governance.telemetry.application.logs.store.id' differs ('x' here, 'y' in the incoming spec)"), "{conflict}");
    }

    #[test]
    fn a_pinned_manifest_is_kept_and_two_pins_conflict() {
        let pinned = "datasources: [{name: in, manifest: {digest: 'sha256:aa', blob: m}}]\n";
        let mut current = yaml("datasources: []\n");
        merge(&mut current, &yaml(pinned)).unwrap();
        assert_eq!(current, yaml(pinned));
        merge(&mut current, &yaml(pinned)).unwrap();
        assert_eq!(current, yaml(pinned), "the same pin merges");
        let other = yaml("datasources: [{name: in, manifest: {digest: 'sha256:bb', blob: m}}]\n");
        let conflict = merge(&mut current, &other).unwrap_err();
        assert_eq!(conflict.field, "manifest.digest");
        let unpinned = yaml("datasources: [{name: in}]\n");
        assert_eq!(
            merge(&mut current, &unpinned).unwrap_err().field,
            "manifest",
            "dropping the pin is a conflict too"
        );
    }

    #[test]
    fn long_values_are_abbreviated() {
        let long = "x".repeat(200);
        let text = abbreviate(&Value::from(long));
        assert!(text.chars().count() <= 61 && text.ends_with('…'), "{text}");
    }
}
