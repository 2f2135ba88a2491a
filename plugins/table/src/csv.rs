//! A small RFC 4180 CSV reader: quoted fields with `""` escapes, delimiters and line
//! breaks inside quotes, CRLF or LF line ends, a UTF-8 byte order mark, blank lines
//! skipped. The first record is the header.

use serde_json::{Map, Value};

/// A parse failure, with the 1-based line it happened on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvError {
    /// The line (1-based) of the problem.
    pub line: usize,
    /// What went wrong.
    pub message: String,
}

impl std::fmt::Display for CsvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CSV line {}: {}", self.line, self.message)
    }
}

/// Splits `text` into records of fields. Each record carries the line it starts on.
pub fn records(text: &str, delimiter: char) -> Result<Vec<(usize, Vec<String>)>, CsvError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    let mut record: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut line = 1;
    let mut record_line = 1;
    // Whether the current field was quoted, and whether we are inside the quotes.
    let mut quoted = false;
    let mut in_quotes = false;
    let mut after_quote = false;
    let mut chars = text.chars().peekable();

    let mut end_record =
        |record: &mut Vec<String>, field: &mut String, start: usize, quoted: bool| {
            record.push(std::mem::take(field));
            let blank = record.len() == 1 && record[0].is_empty() && !quoted;
            let fields = std::mem::take(record);
            if !blank {
                out.push((start, fields));
            }
        };

    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => {
                    in_quotes = false;
                    after_quote = true;
                }
                '\n' => {
                    line += 1;
                    field.push('\n');
                }
                '\r' if chars.peek() == Some(&'\n') => {
                    // A CRLF inside quotes is kept as a plain line break.
                }
                c => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() && !quoted => {
                quoted = true;
                in_quotes = true;
            }
            c if c == delimiter => {
                record.push(std::mem::take(&mut field));
                quoted = false;
                after_quote = false;
            }
            '\r' | '\n' => {
                if c == '\r' && chars.peek() == Some(&'\n') {
                    chars.next();
                }
                end_record(&mut record, &mut field, record_line, quoted);
                quoted = false;
                after_quote = false;
                line += 1;
                record_line = line;
            }
            c if after_quote => {
                if !c.is_whitespace() {
                    return Err(CsvError {
                        line,
                        message: format!("unexpected `{c}` after a closing quote"),
                    });
                }
            }
            '"' => {
                return Err(CsvError {
                    line,
                    message: "a quote inside an unquoted field; quote the whole field and \
                              double the inner quotes"
                        .into(),
                });
            }
            c => field.push(c),
        }
    }
    if in_quotes {
        return Err(CsvError {
            line: record_line,
            message: "a quoted field is never closed".into(),
        });
    }
    if !field.is_empty() || !record.is_empty() || quoted {
        end_record(&mut record, &mut field, record_line, quoted);
    }
    Ok(out)
}

/// Picks the delimiter from the header line: `,` unless the header has none and has `;`
/// or tabs.
pub fn sniff_delimiter(text: &str) -> char {
    let header = text.lines().next().unwrap_or_default();
    if header.contains(',') {
        ','
    } else if header.contains('\t') {
        '\t'
    } else if header.contains(';') {
        ';'
    } else {
        ','
    }
}

/// Column names in header order, and the rows.
pub type Parsed = (Vec<String>, Vec<Map<String, Value>>);

/// Parses CSV with a header into rows keyed by the header's names. Cells are typed:
/// empty → null, `true`/`false` → booleans, numbers → numbers (except ones with leading
/// zeros such as `007`, which stay text), everything else text. Returns the column
/// names in header order and the rows.
pub fn parse(text: &str, delimiter: Option<char>) -> Result<Parsed, CsvError> {
    let delimiter = delimiter.unwrap_or_else(|| sniff_delimiter(text));
    let mut records = records(text, delimiter)?.into_iter();
    let Some((header_line, header)) = records.next() else {
        return Ok((Vec::new(), Vec::new()));
    };
    let mut names: Vec<String> = Vec::with_capacity(header.len());
    for (i, name) in header.iter().enumerate() {
        let name = name.trim();
        let name = if name.is_empty() {
            format!("column_{}", i + 1)
        } else {
            name.to_owned()
        };
        if names.contains(&name) {
            return Err(CsvError {
                line: header_line,
                message: format!("the header names column `{name}` twice"),
            });
        }
        names.push(name);
    }
    let mut rows = Vec::new();
    for (line, fields) in records {
        if fields.len() != names.len() {
            return Err(CsvError {
                line,
                message: format!(
                    "{} fields, but the header has {} columns",
                    fields.len(),
                    names.len()
                ),
            });
        }
        let row = names
            .iter()
            .cloned()
            .zip(fields.into_iter().map(|f| typed(&f)))
            .collect();
        rows.push(row);
    }
    Ok((names, rows))
}

/// The JSON value a CSV cell stands for.
pub fn typed(cell: &str) -> Value {
    let t = cell.trim();
    if t.is_empty() {
        return Value::Null;
    }
    match t {
        "true" | "TRUE" | "True" => return Value::Bool(true),
        "false" | "FALSE" | "False" => return Value::Bool(false),
        _ => {}
    }
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    let leading_zero = digits.len() > 1 && digits.starts_with('0') && !digits.starts_with("0.");
    let numeric_shape = digits.chars().next().is_some_and(|c| c.is_ascii_digit())
        && digits
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'));
    if numeric_shape && !leading_zero {
        if let Ok(i) = t.parse::<i64>() {
            return Value::from(i);
        }
        if let Ok(f) = t.parse::<f64>()
            && f.is_finite()
        {
            return Value::from(f);
        }
    }
    Value::String(cell.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(text: &str) -> Vec<Vec<String>> {
        records(text, ',')
            .unwrap()
            .into_iter()
            .map(|(_, r)| r)
            .collect()
    }

    #[test]
    fn plain_and_quoted_fields() {
        assert_eq!(rec("a,b\n1,2\n"), [["a", "b"], ["1", "2"]]);
        assert_eq!(rec("a,b"), [["a", "b"]]);
        assert_eq!(
            rec("\"x, y\",\"say \"\"hi\"\"\"\n"),
            [["x, y", "say \"hi\""]]
        );
        assert_eq!(rec("a,,\n"), [["a", "", ""]]);
        assert_eq!(rec("\"\"\n"), [[""]]);
    }

    #[test]
    fn crlf_blank_lines_and_bom() {
        assert_eq!(
            rec("\u{feff}a,b\r\n1,2\r\n\r\n3,4"),
            [["a", "b"], ["1", "2"], ["3", "4"]]
        );
    }

    #[test]
    fn line_breaks_inside_quotes_and_line_numbers() {
        let r = records("a,b\n\"multi\r\nline\",2\nx,y\n", ',').unwrap();
        assert_eq!(r[1], (2, vec!["multi\nline".to_owned(), "2".to_owned()]));
        assert_eq!(r[2].0, 4);
    }

    #[test]
    fn errors_name_the_line() {
        let e = records("a,b\n\"open,2\n", ',').unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("never closed"));
        let e = records("a\n\"x\"y\n", ',').unwrap_err();
        assert_eq!(e.line, 2);
        let e = records("a\nx\"y\n", ',').unwrap_err();
        assert!(e.message.contains("quote inside"));
        let e = parse("a,b\n1\n", None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "CSV line 2: 1 fields, but the header has 2 columns"
        );
        assert!(parse("a,a\n", None).unwrap_err().message.contains("twice"));
    }

    #[test]
    fn typed_cells() {
        assert_eq!(typed("42"), json!(42));
        assert_eq!(typed(" -3.5 "), json!(-3.5));
        assert_eq!(typed("1e3"), json!(1000.0));
        assert_eq!(typed("007"), json!("007"));
        assert_eq!(typed("0.5"), json!(0.5));
        assert_eq!(typed(""), Value::Null);
        assert_eq!(typed("true"), json!(true));
        assert_eq!(typed("12abc"), json!("12abc"));
        assert_eq!(typed("inf"), json!("inf"));
        assert_eq!(typed("NaN"), json!("NaN"));
        assert_eq!(typed("2027-03-12"), json!("2027-03-12"));
    }

    #[test]
    fn parses_with_header_and_sniffs_delimiters() {
        let (columns, rows) = parse("name;amount\nAnna;10\nBo;\n", None).unwrap();
        assert_eq!(columns, ["name", "amount"]);
        assert_eq!(rows[0]["amount"], json!(10));
        assert_eq!(rows[1]["amount"], Value::Null);
        let (_, rows) = parse("a\tb\n1\t2\n", None).unwrap();
        assert_eq!(rows[0]["b"], json!(2));
        let (_, rows) = parse(",x\n1,2\n", None).unwrap();
        assert_eq!(rows[0]["column_1"], json!(1));
        assert!(parse("", None).unwrap().1.is_empty());
    }
}
