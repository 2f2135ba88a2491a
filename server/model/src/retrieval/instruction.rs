//! The instruction in a request, without the data pasted into it.
//!
//! Why: a request like "only keep the overdue rows:" followed by twenty CSV lines is
//! mostly CSV. all-MiniLM mean-pools every token, so the pasted rows outweigh the few words
//! that say what to do, and the request lands near whichever tool's texts mention tables
//! most. Ranking on the instruction alone fixes that; the data still goes to the chat model
//! unchanged (this only shapes what retrieval sees).

/// The lines of `request` that are not pasted data, joined with newlines, without values;
/// the whole request when nothing else is left to rank on.
///
/// Data is:
/// - fenced code blocks (from a line starting with three backticks or tildes to the next,
///   fences included; an unclosed fence runs to the end);
/// - tables: two or more consecutive lines that split on the same delimiter (`,`, tab,
///   `;` or `|`) into the same number (at least two) of short cells (at most
///   [`MAX_CELL_WORDS`] words each), e.g. CSV with its header, or a Markdown table with
///   its `|---|` rule;
/// - quoted passages of at least [`MIN_QUOTED_WORDS`] words ("count the words in 'We
///   shipped…'"); shorter quotes are usually a title or a search term, and stay;
/// - values: words holding a digit (dates, numbers, ids such as `ACC-1042`), which say
///   which record, not which tool.
///
/// Prose, headings and bullet lists are kept: they are rarely long enough to drown the
/// instruction, and their shape is itself a cue (checkboxes suggest action items).
pub fn instruction_text(request: &str) -> String {
    let lines: Vec<&str> = request.lines().collect();
    let mut data = vec![false; lines.len()];
    mark_fences(&lines, &mut data);
    mark_tables(&lines, &mut data);
    let kept: Vec<String> = lines
        .iter()
        .zip(&data)
        .filter(|(_, is_data)| !**is_data)
        .map(|(line, _)| without_values(&without_quoted_passages(line)))
        .filter(|line| !line.trim().is_empty())
        .collect();
    if kept.is_empty() {
        request.to_owned()
    } else {
        kept.join("\n")
    }
}

/// `line` without the words that hold a digit: dates, numbers and ids ("2027-03-01",
/// "20", "ACC-1042", the 7 of "task 7") are the values the chat model fills arguments
/// with; they say which record, not which tool, and to an embedding a date looks like a
/// request to find dates.
fn without_values(line: &str) -> String {
    line.split_whitespace()
        .filter(|w| !w.chars().any(|c| c.is_ascii_digit()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quoted passages this long or longer are pasted text, not part of the instruction.
pub const MIN_QUOTED_WORDS: usize = 6;

/// Quote pairs: straight single and double, and typographic.
const QUOTES: [(char, char); 4] = [('\'', '\''), ('"', '"'), ('“', '”'), ('‘', '’')];

/// `line` without its long quoted passages. A quote opens at the start of the line or
/// after whitespace or `:`/`(`, and closes before the end, whitespace or punctuation, so
/// apostrophes ("it's", "customers' names") are not quotes.
fn without_quoted_passages(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    'scan: while i < chars.len() {
        let c = chars[i];
        let opens = i == 0 || chars[i - 1].is_whitespace() || matches!(chars[i - 1], ':' | '(');
        if let Some(&(_, close)) = QUOTES.iter().find(|(open, _)| *open == c).filter(|_| opens) {
            for j in i + 1..chars.len() {
                let closes = chars[j] == close
                    && !chars[j - 1].is_whitespace()
                    && chars
                        .get(j + 1)
                        .is_none_or(|n| n.is_whitespace() || n.is_ascii_punctuation());
                if closes {
                    let inner: String = chars[i + 1..j].iter().collect();
                    if inner.split_whitespace().count() >= MIN_QUOTED_WORDS {
                        i = j + 1;
                        continue 'scan;
                    }
                    break;
                }
            }
        }
        out.push(c);
        i += 1;
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Cells longer than this many words are prose, not table cells: a sentence with a few
/// commas ("Friends, colleagues, thank you for coming tonight.") is not a CSV row.
pub const MAX_CELL_WORDS: usize = 4;

const DELIMITERS: [char; 4] = [',', '\t', ';', '|'];

fn mark_fences(lines: &[&str], data: &mut [bool]) {
    let mut inside = false;
    for (line, d) in lines.iter().zip(data.iter_mut()) {
        let t = line.trim_start();
        let fence = t.starts_with("```") || t.starts_with("~~~");
        if fence || inside {
            *d = true;
        }
        if fence {
            inside = !inside;
        }
    }
}

/// The number of cells `line` splits into on `delimiter`, if it looks like a table row
/// (at least two cells, each short). Markdown's outer pipes and `|---|` rules count.
fn cells(line: &str, delimiter: char) -> Option<usize> {
    let t = line.trim();
    let t = if delimiter == '|' {
        let t = t.strip_prefix('|').unwrap_or(t);
        t.strip_suffix('|').unwrap_or(t)
    } else {
        t
    };
    if !t.contains(delimiter) {
        return None;
    }
    let parts: Vec<&str> = t.split(delimiter).collect();
    let short = parts
        .iter()
        .all(|c| c.split_whitespace().count() <= MAX_CELL_WORDS);
    (parts.len() >= 2 && short).then_some(parts.len())
}

fn mark_tables(lines: &[&str], data: &mut [bool]) {
    for delimiter in DELIMITERS {
        let mut start = 0;
        while start < lines.len() {
            let Some(width) = cells(lines[start], delimiter) else {
                start += 1;
                continue;
            };
            let mut end = start + 1;
            while end < lines.len() && cells(lines[end], delimiter) == Some(width) {
                end += 1;
            }
            if end - start >= 2 {
                data[start..end].iter_mut().for_each(|d| *d = true);
            }
            start = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_after_the_instruction_is_dropped() {
        let r = "Only keep the paid rows:\ninvoice,client,status\n1,Acme,paid\n2,Globex,due";
        assert_eq!(instruction_text(r), "Only keep the paid rows:");
    }

    #[test]
    fn an_instruction_after_the_data_is_kept_too() {
        let r = "name;age\nAna;31\nLuc;28\nsort that by age";
        assert_eq!(instruction_text(r), "sort that by age");
    }

    #[test]
    fn markdown_tables_and_their_rule_are_dropped() {
        let r = "Top two by amount?\n| id | amount |\n|---|---|\n| 1 | 400 |\n| 2 | 950 |";
        assert_eq!(instruction_text(r), "Top two by amount?");
    }

    #[test]
    fn tab_separated_rows_are_dropped() {
        let r = "Total per team\nteam\tpoints\nred\t3\nblue\t5";
        assert_eq!(instruction_text(r), "Total per team");
    }

    #[test]
    fn code_fences_are_dropped_even_unclosed() {
        let r = "What does this do?\n```rust\nfn main() {}\n```\nshort answer please";
        assert_eq!(
            instruction_text(r),
            "What does this do?\nshort answer please"
        );
        assert_eq!(instruction_text("Explain:\n```\nlet x = 1;"), "Explain:");
    }

    #[test]
    fn prose_with_commas_is_not_a_table() {
        let r = "Friends, colleagues, thank you all for coming tonight.\nThis year, more than any, tested us and our resolve.";
        assert_eq!(instruction_text(r), r);
    }

    #[test]
    fn a_single_comma_line_is_not_a_table() {
        let r = "Add milk, eggs to my list";
        assert_eq!(instruction_text(r), r);
    }

    #[test]
    fn lists_and_headings_are_kept() {
        let r = "Outline this:\n# Intro\n## Scope\n- [ ] Ana to send it\n- Marc will check";
        assert_eq!(instruction_text(r), r);
    }

    #[test]
    fn long_quoted_passages_are_dropped_and_short_quotes_kept() {
        assert_eq!(
            instruction_text("Count the words: 'We met on Monday and agreed on a plan.' thanks"),
            "Count the words: thanks"
        );
        assert_eq!(
            instruction_text("Dates in “The lease starts on 1 May and ends in June”?"),
            "Dates in ?"
        );
        let short = "Add 'Renew the passport' to my list";
        assert_eq!(instruction_text(short), short);
    }

    #[test]
    fn values_are_dropped() {
        assert_eq!(
            instruction_text("Move task 12 to 2027-03-01, account ACC-1042."),
            "Move task to account"
        );
    }

    #[test]
    fn apostrophes_are_not_quotes() {
        let r = "It's our customers' list, isn't it? Show the top ones that we've got today";
        assert_eq!(instruction_text(r), r);
    }

    #[test]
    fn a_request_that_is_only_data_is_kept_whole() {
        let r = "a,b\n1,2\n3,4";
        assert_eq!(instruction_text(r), r);
    }
}
