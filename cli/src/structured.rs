//! Structured command output as `az` prints it: a JSON value, optionally narrowed by a JMESPath
//! `--query`, rendered as JSON, TSV (scalars bare, one line per list element, an object's scalar
//! values tab-separated in the order of their keys, sorted) or a table (one column per scalar key).
//!
//! So the reference walkthrough's idiom `--query "proposalId" --output tsv` gives the bare id, fit
//! for `$(...)` in a script.

use anyhow::{Context, Result};
use serde_json::Value;

/// How a command prints a structured result.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Indented JSON.
    Json,
    /// Tab-separated values, strings unquoted: for shell scripts.
    Tsv,
    /// Aligned columns with a header.
    Table,
}

/// Applies `query` (JMESPath) to `value`, then renders it in `format`, ending with a newline
/// unless the result is empty.
pub fn render(value: &Value, format: Format, query: Option<&str>) -> Result<String> {
    let value = match query {
        Some(expression) => search(value, expression)?,
        None => value.clone(),
    };
    let mut out = match format {
        Format::Json => serde_json::to_string_pretty(&value).expect("a JSON value serialises"),
        Format::Tsv => tsv(&value),
        Format::Table => table(&value),
    };
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

/// Prints [`render`]'s result on stdout.
pub fn print(value: &Value, format: Format, query: Option<&str>) -> Result<()> {
    print!("{}", render(value, format, query)?);
    Ok(())
}

fn search(value: &Value, expression: &str) -> Result<Value> {
    let compiled = jmespath::compile(expression)
        .with_context(|| format!("invalid --query expression {expression:?}"))?;
    let data =
        jmespath::Variable::from_serializable(value).context("the result cannot be queried")?;
    let found = compiled
        .search(data)
        .with_context(|| format!("--query {expression:?} failed"))?;
    serde_json::to_value(&*found).context("the query result is not JSON")
}

/// A scalar as TSV prints it; `None` for objects and arrays (which `az` leaves out of a row).
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::Null => Some(String::new()),
        Value::Bool(b) => Some(if *b { "True" } else { "False" }.to_owned()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.replace(['\t', '\n'], " ")),
        Value::Array(_) | Value::Object(_) => None,
    }
}

fn tsv_row(value: &Value) -> String {
    match value {
        Value::Object(map) => map
            .values()
            .filter_map(scalar)
            .collect::<Vec<_>>()
            .join("\t"),
        Value::Array(items) => items
            .iter()
            .filter_map(scalar)
            .collect::<Vec<_>>()
            .join("\t"),
        other => scalar(other).unwrap_or_default(),
    }
}

fn tsv(value: &Value) -> String {
    match value {
        Value::Array(items) => items.iter().map(tsv_row).collect::<Vec<_>>().join("\n"),
        other => tsv_row(other),
    }
}

fn table(value: &Value) -> String {
    let rows: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    };
    // Columns: every scalar key, in first-seen order; a list of scalars is one "Result" column.
    let mut columns: Vec<String> = Vec::new();
    for row in &rows {
        match row {
            Value::Object(map) => {
                for (key, field) in map {
                    if scalar(field).is_some() && !columns.contains(key) {
                        columns.push(key.clone());
                    }
                }
            }
            _ => {
                if !columns.iter().any(|c| c == "Result") {
                    columns.push("Result".to_owned());
                }
            }
        }
    }
    if columns.is_empty() {
        return String::new();
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|column| match row {
                    Value::Object(map) => map.get(column).and_then(scalar).unwrap_or_default(),
                    other if column == "Result" => scalar(other).unwrap_or_default(),
                    _ => String::new(),
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, column)| {
            cells
                .iter()
                .map(|row| row[i].chars().count())
                .chain([column.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: Vec<String>| {
        values
            .iter()
            .zip(&widths)
            .map(|(value, width)| format!("{value:<width$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = vec![
        line(columns.clone()),
        line(widths.iter().map(|w| "-".repeat(*w)).collect()),
    ];
    out.extend(cells.into_iter().map(line));
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_walkthrough_idiom_gives_the_bare_id() {
        let proposal = json!({"proposalId": "ab12", "proposalState": "Open", "ballotCount": 0});
        let out = render(&proposal, Format::Tsv, Some("proposalId")).unwrap();
        assert_eq!(out, "ab12\n");
    }

    #[test]
    fn tsv_prints_one_line_per_element_and_skips_nested_values() {
        let members = json!([
            {"memberId": "m1", "status": "Active", "memberData": {"identifier": "a"}},
            {"memberId": "m2", "status": "Accepted", "memberData": {"identifier": "b"}},
        ]);
        assert_eq!(
            render(&members, Format::Tsv, None).unwrap(),
            "m1\tActive\nm2\tAccepted\n"
        );
        assert_eq!(
            render(
                &json!({"ok": true, "n": 3, "none": null}),
                Format::Tsv,
                None
            )
            .unwrap(),
            "3\t\tTrue\n"
        );
    }

    #[test]
    fn a_query_can_project_a_list() {
        let listing = json!({"value": [{"id": "c1"}, {"id": "c2"}]});
        assert_eq!(
            render(&listing, Format::Tsv, Some("value[].id")).unwrap(),
            "c1\nc2\n"
        );
        let json = render(&listing, Format::Json, Some("length(value)")).unwrap();
        assert_eq!(json, "2\n");
    }

    #[test]
    fn a_table_has_one_column_per_scalar_key() {
        let rows = json!([
            {"id": "contract-1", "state": "Draft"},
            {"id": "c2", "state": "Accepted", "extra": {"x": 1}},
        ]);
        let out = render(&rows, Format::Table, None).unwrap();
        assert_eq!(
            out,
            "id          state\n----------  --------\ncontract-1  Draft\nc2          Accepted\n"
        );
        assert_eq!(
            render(&json!(["a", "bb"]), Format::Table, None).unwrap(),
            "Result\n------\na\nbb\n"
        );
    }

    #[test]
    fn a_bad_query_is_a_clear_error() {
        let error = render(&json!({}), Format::Json, Some("value[")).unwrap_err();
        assert!(format!("{error:#}").contains("invalid --query expression \"value[\""));
    }

    #[test]
    fn a_missing_field_prints_nothing_in_tsv_and_null_in_json() {
        let value = json!({"a": 1});
        assert_eq!(render(&value, Format::Tsv, Some("b")).unwrap(), "");
        assert_eq!(render(&value, Format::Json, Some("b")).unwrap(), "null\n");
    }
}
