//! Filter, sort, group and summarise tabular data given in the call: JSON rows (an array
//! of objects) or CSV text with a header line.
//!
//! Values are compared sensibly across both forms: CSV cells are typed on reading (empty
//! → null, `true`/`false`, numbers, text), and a comparison is numeric whenever both sides
//! read as numbers (so `"10" > 9` holds), else a case-insensitive text comparison, which
//! orders ISO dates correctly. Null or missing cells never satisfy an ordering condition
//! and sort last.

use cairn_sdk::prelude::*;
use serde_json::{Map, Number, Value};
use std::cmp::Ordering;

pub mod csv;

/// One row: column name → value.
pub type Row = Map<String, Value>;

/// A comparison in a filter condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Equal (numbers by value, text ignoring case and surrounding spaces).
    Eq,
    /// Not equal.
    Ne,
    /// Greater than.
    Gt,
    /// Less than.
    Lt,
    /// Greater than or equal.
    Ge,
    /// Less than or equal.
    Le,
    /// The cell's text contains the value's text, ignoring case.
    Contains,
}

/// One filter condition: `column op value`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// The column to test.
    pub column: String,
    /// The comparison.
    pub op: Op,
    /// The value to compare with: a number, text, boolean or null.
    pub value: Value,
}

/// How conditions combine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MatchMode {
    /// Every condition must hold (the default).
    #[default]
    All,
    /// At least one condition must hold.
    Any,
}

/// Arguments of `filter_rows`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterRows {
    /// The table as an array of objects, one per row. Give this or `csv`.
    pub rows: Option<Vec<Row>>,
    /// The table as CSV text whose first line names the columns. Give this or `rows`.
    pub csv: Option<String>,
    /// The CSV delimiter; detected from the header line when omitted (`,`, `;` or tab).
    pub delimiter: Option<char>,
    /// The conditions a row must meet.
    pub conditions: Vec<Condition>,
    /// "all" (default): every condition must hold; "any": at least one.
    #[serde(rename = "match")]
    pub match_mode: Option<MatchMode>,
    /// Return at most this many rows; `total` still counts every match.
    pub limit: Option<usize>,
}

/// One sort key.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SortKey {
    /// The column to sort by.
    pub column: String,
    /// Largest first when true; smallest first by default.
    #[serde(default)]
    pub descending: bool,
}

/// Arguments of `sort_rows`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SortRows {
    /// The table as an array of objects, one per row. Give this or `csv`.
    pub rows: Option<Vec<Row>>,
    /// The table as CSV text whose first line names the columns. Give this or `rows`.
    pub csv: Option<String>,
    /// The CSV delimiter; detected from the header line when omitted (`,`, `;` or tab).
    pub delimiter: Option<char>,
    /// Sort keys, most significant first. Ties keep the input order.
    pub by: Vec<SortKey>,
    /// Return at most this many rows (e.g. the top 5).
    pub limit: Option<usize>,
}

/// An aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AggOp {
    /// Number of rows, or of non-empty cells when a column is given.
    Count,
    /// Sum of a numeric column.
    Sum,
    /// Mean of a numeric column.
    Avg,
    /// Smallest value (numbers, or text in alphabetical order).
    Min,
    /// Largest value.
    Max,
}

/// One aggregate to compute per group.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Aggregate {
    /// The function.
    pub op: AggOp,
    /// The column it applies to; required except for `count`.
    pub column: Option<String>,
    /// The result's name; `<op>_<column>` (or `count`) by default.
    #[serde(rename = "as")]
    pub name: Option<String>,
}

/// Arguments of `summarize`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Summarize {
    /// The table as an array of objects, one per row. Give this or `csv`.
    pub rows: Option<Vec<Row>>,
    /// The table as CSV text whose first line names the columns. Give this or `rows`.
    pub csv: Option<String>,
    /// The CSV delimiter; detected from the header line when omitted (`,`, `;` or tab).
    pub delimiter: Option<char>,
    /// Columns to group by; omit for one summary of the whole table.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// What to compute per group; a row count when omitted.
    #[serde(default)]
    pub aggregates: Vec<Aggregate>,
}

/// Rows returned by `filter_rows` and `sort_rows`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RowsResult {
    /// The rows.
    pub rows: Vec<Row>,
    /// How many rows are returned.
    pub count: usize,
    /// How many rows matched before `limit`.
    pub total: usize,
    /// The table's columns, in order.
    pub columns: Vec<String>,
}

/// The result of `summarize`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SummaryResult {
    /// One object per group, in order of first appearance: the group-by columns' values,
    /// then each aggregate under its name.
    pub groups: Vec<Row>,
    /// How many groups.
    pub count: usize,
}

/// Keeps the rows that meet the conditions.
pub fn filter_rows(input: FilterRows) -> Result<RowsResult, ToolError> {
    let table = Table::load(input.rows, input.csv, input.delimiter)?;
    let conditions = input
        .conditions
        .iter()
        .map(|c| Ok((table.column(&c.column)?, c)))
        .collect::<Result<Vec<_>, ToolError>>()?;
    let any = input.match_mode.unwrap_or_default() == MatchMode::Any;
    let matches = |row: &Row| {
        let mut results = conditions.iter().map(|(col, c)| {
            test(
                row.get(col.as_str()).unwrap_or(&Value::Null),
                c.op,
                &c.value,
            )
        });
        if any {
            results.any(|r| r)
        } else {
            results.all(|r| r)
        }
    };
    let rows: Vec<Row> = table.rows.iter().filter(|r| matches(r)).cloned().collect();
    Ok(limited(rows, input.limit, table.columns))
}

/// Sorts the rows by one or more columns.
pub fn sort_rows(input: SortRows) -> Result<RowsResult, ToolError> {
    if input.by.is_empty() {
        return Err(ToolError::invalid_input("`by` needs at least one column"));
    }
    let table = Table::load(input.rows, input.csv, input.delimiter)?;
    let keys = input
        .by
        .iter()
        .map(|k| Ok((table.column(&k.column)?, k.descending)))
        .collect::<Result<Vec<_>, ToolError>>()?;
    let mut rows = table.rows;
    rows.sort_by(|a, b| {
        keys.iter().fold(Ordering::Equal, |acc, (col, desc)| {
            acc.then_with(|| {
                sort_order(
                    a.get(col.as_str()).unwrap_or(&Value::Null),
                    b.get(col.as_str()).unwrap_or(&Value::Null),
                    *desc,
                )
            })
        })
    });
    Ok(limited(rows, input.limit, table.columns))
}

/// Groups rows and computes aggregates per group.
pub fn summarize(input: Summarize) -> Result<SummaryResult, ToolError> {
    let table = Table::load(input.rows, input.csv, input.delimiter)?;
    let group_by = input
        .group_by
        .iter()
        .map(|c| table.column(c))
        .collect::<Result<Vec<_>, _>>()?;
    let aggregates = if input.aggregates.is_empty() {
        vec![Aggregate {
            op: AggOp::Count,
            column: None,
            name: None,
        }]
    } else {
        input.aggregates
    };
    let mut plan = Vec::new();
    for a in &aggregates {
        let column = match (&a.column, a.op) {
            (Some(c), _) => Some(table.column(c)?),
            (None, AggOp::Count) => None,
            (None, op) => {
                return Err(ToolError::invalid_input(format!(
                    "aggregate `{}` needs a `column`",
                    op_name(op)
                )));
            }
        };
        let name = match (&a.name, &column) {
            (Some(n), _) if !n.trim().is_empty() => n.trim().to_owned(),
            (_, Some(c)) => format!("{}_{c}", op_name(a.op)),
            (_, None) => "count".to_owned(),
        };
        if group_by.contains(&name) || plan.iter().any(|(_, _, n): &(AggOp, _, String)| *n == name)
        {
            return Err(ToolError::invalid_input(format!(
                "two outputs are named `{name}`; name the aggregate with `as`"
            )));
        }
        plan.push((a.op, column, name));
    }

    // Groups in order of first appearance; the key is the group columns' JSON text.
    let mut keys: Vec<String> = Vec::new();
    let mut groups: Vec<(Row, Vec<usize>)> = Vec::new();
    for (i, row) in table.rows.iter().enumerate() {
        let values: Vec<Value> = group_by
            .iter()
            .map(|c| row.get(c.as_str()).cloned().unwrap_or(Value::Null))
            .collect();
        let key = serde_json::to_string(&values).unwrap_or_default();
        match keys.iter().position(|k| *k == key) {
            Some(g) => groups[g].1.push(i),
            None => {
                keys.push(key);
                let head = group_by.iter().cloned().zip(values).collect();
                groups.push((head, vec![i]));
            }
        }
    }
    if groups.is_empty() && group_by.is_empty() {
        groups.push((Row::new(), Vec::new()));
    }
    let mut out = Vec::with_capacity(groups.len());
    for (mut head, members) in groups {
        for (op, column, name) in &plan {
            let cells = members.iter().map(|&i| {
                let row = &table.rows[i];
                let v = column.as_ref().map_or(&Value::Bool(true), |c| {
                    row.get(c.as_str()).unwrap_or(&Value::Null)
                });
                (i, v)
            });
            let value = aggregate(*op, column.as_deref().unwrap_or(""), cells)?;
            head.insert(name.clone(), value);
        }
        out.push(head);
    }
    Ok(SummaryResult {
        count: out.len(),
        groups: out,
    })
}

cairn_sdk::plugin! { tools: [filter_rows, sort_rows, summarize] }

/// A loaded table and its columns in order.
struct Table {
    rows: Vec<Row>,
    columns: Vec<String>,
}

impl Table {
    fn load(
        rows: Option<Vec<Row>>,
        csv: Option<String>,
        delimiter: Option<char>,
    ) -> Result<Table, ToolError> {
        let (mut columns, rows) = match (rows, csv) {
            (Some(rows), None) => (Vec::new(), rows),
            (None, Some(text)) => csv::parse(&text, delimiter)
                .map_err(|e| ToolError::invalid_input(format!("`csv`: {e}")))?,
            (Some(_), Some(_)) => {
                return Err(ToolError::invalid_input(
                    "give the table as either `rows` or `csv`, not both",
                ));
            }
            (None, None) => {
                return Err(ToolError::invalid_input(
                    "no table: give `rows` (an array of objects) or `csv` (text with a header line)",
                ));
            }
        };
        for row in &rows {
            for k in row.keys() {
                if !columns.contains(k) {
                    columns.push(k.clone());
                }
            }
        }
        Ok(Table { rows, columns })
    }

    /// Resolves a column name: exact, else the one column equal ignoring case and spaces.
    fn column(&self, name: &str) -> Result<String, ToolError> {
        if self.rows.is_empty() || self.columns.iter().any(|c| c == name) {
            return Ok(name.to_owned());
        }
        let wanted = name.trim().to_lowercase();
        let close: Vec<&String> = self
            .columns
            .iter()
            .filter(|c| c.trim().to_lowercase() == wanted)
            .collect();
        if let [one] = close.as_slice() {
            return Ok((*one).clone());
        }
        Err(ToolError::invalid_input(format!(
            "unknown column `{name}`; the columns are: {}",
            self.columns
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

fn limited(rows: Vec<Row>, limit: Option<usize>, columns: Vec<String>) -> RowsResult {
    let total = rows.len();
    let mut rows = rows;
    if let Some(limit) = limit {
        rows.truncate(limit);
    }
    RowsResult {
        count: rows.len(),
        total,
        rows,
        columns,
    }
}

fn op_name(op: AggOp) -> &'static str {
    match op {
        AggOp::Count => "count",
        AggOp::Sum => "sum",
        AggOp::Avg => "avg",
        AggOp::Min => "min",
        AggOp::Max => "max",
    }
}

/// The number a value stands for: JSON numbers, and text that reads as a number.
fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match csv::typed(s) {
            Value::Number(n) => n.as_f64(),
            _ => None,
        },
        _ => None,
    }
}

/// The text a value is compared as.
fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.trim().to_lowercase(),
        Value::Null => String::new(),
        other => other.to_string().to_lowercase(),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

/// Compares two non-empty values: numerically when both are numbers, else as text.
fn compare(a: &Value, b: &Value) -> Ordering {
    match (as_number(a), as_number(b)) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        _ => as_text(a).cmp(&as_text(b)),
    }
}

fn test(cell: &Value, op: Op, value: &Value) -> bool {
    match op {
        Op::Eq => equal(cell, value),
        Op::Ne => !equal(cell, value),
        Op::Contains => !is_empty(cell) && as_text(cell).contains(&as_text(value)),
        _ if is_empty(cell) || is_empty(value) => false,
        Op::Gt => compare(cell, value) == Ordering::Greater,
        Op::Lt => compare(cell, value) == Ordering::Less,
        Op::Ge => compare(cell, value) != Ordering::Less,
        Op::Le => compare(cell, value) != Ordering::Greater,
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (is_empty(a), is_empty(b)) {
        (true, true) => true,
        (false, false) => compare(a, b) == Ordering::Equal,
        _ => false,
    }
}

/// Sort order: empty cells last in either direction; numbers before text.
fn sort_order(a: &Value, b: &Value, descending: bool) -> Ordering {
    match (is_empty(a), is_empty(b)) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        _ => {}
    }
    let ord = match (as_number(a), as_number(b)) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => as_text(a).cmp(&as_text(b)),
    };
    if descending { ord.reverse() } else { ord }
}

fn aggregate<'a>(
    op: AggOp,
    column: &str,
    cells: impl Iterator<Item = (usize, &'a Value)>,
) -> Result<Value, ToolError> {
    let present: Vec<(usize, &Value)> = cells.filter(|(_, v)| !is_empty(v)).collect();
    match op {
        AggOp::Count => Ok(Value::from(present.len())),
        AggOp::Sum | AggOp::Avg => {
            let mut ints: Option<i128> = Some(0);
            let mut total = 0.0;
            for (row, v) in &present {
                let n = as_number(v).ok_or_else(|| {
                    ToolError::invalid_input(format!(
                        "column `{column}` has `{}` in row {}, which is not a number; \
                         filter it out or pick a numeric column",
                        short_value(v),
                        row + 1
                    ))
                })?;
                total += n;
                ints = match (ints, integer(v)) {
                    (Some(acc), Some(i)) => acc.checked_add(i128::from(i)),
                    _ => None,
                };
            }
            if op == AggOp::Avg {
                if present.is_empty() {
                    return Ok(Value::Null);
                }
                return float(total / present.len() as f64);
            }
            match ints.and_then(|i| i64::try_from(i).ok()) {
                Some(i) => Ok(Value::from(i)),
                None => float(total),
            }
        }
        AggOp::Min | AggOp::Max => {
            let numeric = present.iter().all(|(_, v)| as_number(v).is_some());
            let pick = present.iter().map(|(_, v)| *v).reduce(|best, v| {
                let ord = if numeric {
                    compare(v, best)
                } else {
                    as_text(v).cmp(&as_text(best))
                };
                let better = if op == AggOp::Min {
                    ord == Ordering::Less
                } else {
                    ord == Ordering::Greater
                };
                if better { v } else { best }
            });
            Ok(match pick {
                None => Value::Null,
                Some(v) if numeric => match as_number(v) {
                    Some(_) if integer(v).is_some() => Value::from(integer(v).unwrap_or(0)),
                    Some(n) => float(n)?,
                    None => v.clone(),
                },
                Some(v) => v.clone(),
            })
        }
    }
}

fn integer(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => match csv::typed(s) {
            Value::Number(n) => n.as_i64(),
            _ => None,
        },
        _ => None,
    }
}

fn float(x: f64) -> Result<Value, ToolError> {
    // Round away binary noise such as 0.1 + 0.2 = 0.30000000000000004.
    let rounded = (x * 1e9).round() / 1e9;
    let x = if rounded.is_finite() { rounded } else { x };
    Number::from_f64(x)
        .map(Value::Number)
        .ok_or_else(|| ToolError::invalid_input("the result is too large to represent"))
}

fn short_value(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows(v: Value) -> Option<Vec<Row>> {
        Some(serde_json::from_value(v).unwrap())
    }

    fn sales() -> Option<Vec<Row>> {
        rows(json!([
            { "region": "North", "rep": "Anna", "amount": 120, "date": "2027-03-02" },
            { "region": "South", "rep": "Bo", "amount": 80.5, "date": "2027-01-15" },
            { "region": "North", "rep": "Cy", "amount": "45", "date": "2027-02-20" },
            { "region": "south", "rep": "Di", "amount": null, "date": "2027-03-30" },
            { "region": "East", "rep": "Ed", "amount": 300 }
        ]))
    }

    fn cond(column: &str, op: Op, value: Value) -> Condition {
        Condition {
            column: column.into(),
            op,
            value,
        }
    }

    fn filter(conditions: Vec<Condition>, mode: Option<MatchMode>) -> Vec<String> {
        filter_rows(FilterRows {
            rows: sales(),
            csv: None,
            delimiter: None,
            conditions,
            match_mode: mode,
            limit: None,
        })
        .unwrap()
        .rows
        .iter()
        .map(|r| r["rep"].as_str().unwrap().to_owned())
        .collect()
    }

    #[test]
    fn filters_numbers_and_text_sensibly() {
        assert_eq!(
            filter(vec![cond("amount", Op::Gt, json!(50))], None),
            ["Anna", "Bo", "Ed"]
        );
        // "45" is a number too; null never satisfies an ordering.
        assert_eq!(
            filter(vec![cond("amount", Op::Lt, json!("100"))], None),
            ["Bo", "Cy"]
        );
        assert_eq!(
            filter(vec![cond("amount", Op::Eq, json!(45.0))], None),
            ["Cy"]
        );
        assert_eq!(
            filter(vec![cond("region", Op::Eq, json!("SOUTH"))], None),
            ["Bo", "Di"]
        );
        assert_eq!(
            filter(vec![cond("rep", Op::Contains, json!("n"))], None),
            ["Anna"]
        );
        assert_eq!(
            filter(vec![cond("amount", Op::Eq, Value::Null)], None),
            ["Di"]
        );
        assert_eq!(
            filter(vec![cond("date", Op::Eq, Value::Null)], None),
            ["Ed"]
        );
        assert_eq!(
            filter(vec![cond("date", Op::Ge, json!("2027-03-01"))], None),
            ["Anna", "Di"]
        );
        assert_eq!(
            filter(vec![cond("region", Op::Ne, json!("north"))], None),
            ["Bo", "Di", "Ed"]
        );
        assert_eq!(
            filter(
                vec![
                    cond("region", Op::Eq, json!("north")),
                    cond("amount", Op::Ge, json!(100))
                ],
                None
            ),
            ["Anna"]
        );
        assert_eq!(
            filter(
                vec![
                    cond("rep", Op::Eq, json!("Bo")),
                    cond("rep", Op::Eq, json!("Ed"))
                ],
                Some(MatchMode::Any)
            ),
            ["Bo", "Ed"]
        );
        // No conditions keep every row.
        assert_eq!(filter(vec![], None).len(), 5);
    }

    #[test]
    fn unknown_columns_are_clear_errors() {
        let e = filter_rows(FilterRows {
            rows: sales(),
            csv: None,
            delimiter: None,
            conditions: vec![cond("price", Op::Gt, json!(1))],
            match_mode: None,
            limit: None,
        })
        .unwrap_err();
        assert_eq!(e.code, "invalid_input");
        assert!(
            e.message.contains("unknown column `price`"),
            "{}",
            e.message
        );
        assert!(e.message.contains("`amount`"), "{}", e.message);
        // Case-insensitive fallback.
        assert_eq!(
            filter(vec![cond(" Rep ", Op::Eq, json!("bo"))], None),
            ["Bo"]
        );
    }

    #[test]
    fn filter_limit_reports_total() {
        let r = filter_rows(FilterRows {
            rows: sales(),
            csv: None,
            delimiter: None,
            conditions: vec![],
            match_mode: None,
            limit: Some(2),
        })
        .unwrap();
        assert_eq!((r.count, r.total), (2, 5));
        assert_eq!(r.columns, ["region", "rep", "amount", "date"]);
    }

    #[test]
    fn needs_exactly_one_table() {
        for (rows, csv) in [(None, None), (sales(), Some("a\n1".to_owned()))] {
            let e = sort_rows(SortRows {
                rows,
                csv,
                delimiter: None,
                by: vec![SortKey {
                    column: "a".into(),
                    descending: false,
                }],
                limit: None,
            })
            .unwrap_err();
            assert_eq!(e.code, "invalid_input");
        }
    }

    fn sort(by: Vec<(&str, bool)>) -> Vec<String> {
        sort_rows(SortRows {
            rows: sales(),
            csv: None,
            delimiter: None,
            by: by
                .into_iter()
                .map(|(c, d)| SortKey {
                    column: c.into(),
                    descending: d,
                })
                .collect(),
            limit: None,
        })
        .unwrap()
        .rows
        .iter()
        .map(|r| r["rep"].as_str().unwrap().to_owned())
        .collect()
    }

    #[test]
    fn sorts_numbers_numerically_and_nulls_last() {
        assert_eq!(
            sort(vec![("amount", false)]),
            ["Cy", "Bo", "Anna", "Ed", "Di"]
        );
        assert_eq!(
            sort(vec![("amount", true)]),
            ["Ed", "Anna", "Bo", "Cy", "Di"]
        );
        assert_eq!(sort(vec![("date", true)]), ["Di", "Anna", "Cy", "Bo", "Ed"]);
        // Case-insensitive text, ties by the next key, stable otherwise.
        assert_eq!(
            sort(vec![("region", false), ("amount", true)]),
            ["Ed", "Anna", "Cy", "Bo", "Di"]
        );
        assert!(
            sort_rows(SortRows {
                rows: sales(),
                csv: None,
                delimiter: None,
                by: vec![],
                limit: None
            })
            .is_err()
        );
    }

    #[test]
    fn summarizes_groups() {
        let r = summarize(Summarize {
            rows: sales(),
            csv: None,
            delimiter: None,
            group_by: vec!["region".into()],
            aggregates: vec![
                Aggregate {
                    op: AggOp::Sum,
                    column: Some("amount".into()),
                    name: None,
                },
                Aggregate {
                    op: AggOp::Count,
                    column: None,
                    name: None,
                },
                Aggregate {
                    op: AggOp::Avg,
                    column: Some("amount".into()),
                    name: Some("mean".into()),
                },
                Aggregate {
                    op: AggOp::Max,
                    column: Some("rep".into()),
                    name: None,
                },
            ],
        })
        .unwrap();
        assert_eq!(r.count, 4);
        assert_eq!(
            Value::from(r.groups[0].clone()),
            json!({ "region": "North", "sum_amount": 165, "count": 2, "mean": 82.5, "max_rep": "Cy" })
        );
        assert_eq!(r.groups[1]["sum_amount"], json!(80.5));
        // "south" is its own group (values group exactly); its only amount is null.
        assert_eq!(
            Value::from(r.groups[2].clone()),
            json!({ "region": "south", "sum_amount": 0, "count": 1, "mean": null, "max_rep": "Di" })
        );
    }

    #[test]
    fn summarizes_whole_table_and_min_max() {
        let r = summarize(Summarize {
            rows: sales(),
            csv: None,
            delimiter: None,
            group_by: vec![],
            aggregates: vec![
                Aggregate {
                    op: AggOp::Min,
                    column: Some("amount".into()),
                    name: None,
                },
                Aggregate {
                    op: AggOp::Max,
                    column: Some("amount".into()),
                    name: None,
                },
                Aggregate {
                    op: AggOp::Count,
                    column: Some("amount".into()),
                    name: Some("with_amount".into()),
                },
                Aggregate {
                    op: AggOp::Min,
                    column: Some("date".into()),
                    name: None,
                },
            ],
        })
        .unwrap();
        assert_eq!(
            Value::from(r.groups[0].clone()),
            json!({ "min_amount": 45, "max_amount": 300, "with_amount": 4, "min_date": "2027-01-15" })
        );
        // Default aggregate is a row count; an empty table still has one summary row.
        let r = summarize(Summarize {
            rows: rows(json!([])),
            csv: None,
            delimiter: None,
            group_by: vec![],
            aggregates: vec![],
        })
        .unwrap();
        assert_eq!(Value::from(r.groups[0].clone()), json!({ "count": 0 }));
    }

    #[test]
    fn summarize_errors() {
        let run = |aggregates: Vec<Aggregate>, group_by: Vec<String>| {
            summarize(Summarize {
                rows: sales(),
                csv: None,
                delimiter: None,
                group_by,
                aggregates,
            })
            .unwrap_err()
        };
        let e = run(
            vec![Aggregate {
                op: AggOp::Sum,
                column: Some("rep".into()),
                name: None,
            }],
            vec![],
        );
        assert!(
            e.message.contains("`Anna` in row 1, which is not a number"),
            "{}",
            e.message
        );
        let e = run(
            vec![Aggregate {
                op: AggOp::Avg,
                column: None,
                name: None,
            }],
            vec![],
        );
        assert!(e.message.contains("needs a `column`"), "{}", e.message);
        let e = run(
            vec![Aggregate {
                op: AggOp::Count,
                column: None,
                name: Some("region".into()),
            }],
            vec!["region".into()],
        );
        assert!(e.message.contains("`region`"), "{}", e.message);
        let e = run(vec![], vec!["zone".into()]);
        assert!(e.message.contains("unknown column `zone`"), "{}", e.message);
    }

    #[test]
    fn works_on_csv() {
        let csv = "Region,Amount,Note\r\nNorth,\"1,200.50\",\"said \"\"hi\"\"\"\r\nNorth,10,\r\nSouth,5,x\r\n";
        let r = filter_rows(FilterRows {
            rows: None,
            csv: Some(csv.into()),
            delimiter: None,
            conditions: vec![cond("region", Op::Eq, json!("north"))],
            match_mode: None,
            limit: None,
        })
        .unwrap();
        assert_eq!(r.total, 2);
        assert_eq!(r.columns, ["Region", "Amount", "Note"]);
        assert_eq!(r.rows[0]["Note"], json!("said \"hi\""));
        assert_eq!(r.rows[1]["Amount"], json!(10));
        // "1,200.50" is text (thousands separators are ambiguous), so summing it is an error.
        let e = summarize(Summarize {
            rows: None,
            csv: Some(csv.into()),
            delimiter: None,
            group_by: vec![],
            aggregates: vec![Aggregate {
                op: AggOp::Sum,
                column: Some("amount".into()),
                name: None,
            }],
        })
        .unwrap_err();
        assert!(e.message.contains("1,200.50"), "{}", e.message);
        let e = filter_rows(FilterRows {
            rows: None,
            csv: Some("a,b\n1,2,3\n".into()),
            delimiter: None,
            conditions: vec![],
            match_mode: None,
            limit: None,
        })
        .unwrap_err();
        assert_eq!(
            e.message,
            "`csv`: CSV line 2: 3 fields, but the header has 2 columns"
        );
    }

    #[test]
    fn sums_floats_without_noise_and_big_ints_exactly() {
        let r = summarize(Summarize {
            rows: rows(json!([{ "x": 0.1 }, { "x": 0.2 }, { "x": 9007199254740993i64 }])),
            csv: None,
            delimiter: None,
            group_by: vec![],
            aggregates: vec![Aggregate {
                op: AggOp::Sum,
                column: Some("x".into()),
                name: None,
            }],
        })
        .unwrap();
        assert!(r.groups[0]["sum_x"].is_f64());
        let r = summarize(Summarize {
            rows: rows(json!([{ "x": 9007199254740993i64 }, { "x": 1 }])),
            csv: None,
            delimiter: None,
            group_by: vec![],
            aggregates: vec![Aggregate {
                op: AggOp::Sum,
                column: Some("x".into()),
                name: None,
            }],
        })
        .unwrap();
        assert_eq!(r.groups[0]["sum_x"], json!(9007199254740994i64));
        let r = summarize(Summarize {
            rows: rows(json!([{ "x": 0.1 }, { "x": 0.2 }])),
            csv: None,
            delimiter: None,
            group_by: vec![],
            aggregates: vec![Aggregate {
                op: AggOp::Sum,
                column: Some("x".into()),
                name: None,
            }],
        })
        .unwrap();
        assert_eq!(r.groups[0]["sum_x"], json!(0.3));
    }

    #[test]
    fn json_calls_as_the_host_makes_them() {
        let out = call_tool(
            "summarize",
            r#"{"csv":"team;hours\nA;3\nB;4\nA;5","group_by":["team"],"aggregates":[{"op":"sum","column":"hours","as":"total"}]}"#,
        )
        .unwrap();
        assert_eq!(
            out,
            r#"{"groups":[{"team":"A","total":8},{"team":"B","total":4}],"count":2}"#
        );
        let e = call_tool(
            "filter_rows",
            r#"{"rows":[{"a":1}],"conditions":[{"column":"a","op":"between","value":1}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, "invalid_input");
        assert!(e.message.contains("conditions[0].op"), "{}", e.message);
        let e = call_tool("sort_rows", r#"{"rows":[1,2],"by":[{"column":"a"}]}"#).unwrap_err();
        assert!(e.message.contains("rows[0]"), "{}", e.message);
    }
}
