//! Tool arguments grounded in the conversation, not in the tool's own prompt.
//!
//! A small model asked to fill `add_task {"title": ...}` copies whatever text is nearest
//! and most fluent, and that is often the schema's example (`"Call Anna about the
//! budget"`) rather than the user's words. Two uses share this module:
//!
//! - [`ground_schema`] narrows a tool's argument schema for one request, for the embedded
//!   decoder's grammar: a free-text string may only be a span of the conversation (from a
//!   word's start to a word's end), a date only one the conversation mentions (relative
//!   dates resolved against the run's date), a number only one it contains; an optional
//!   field the conversation gives nothing for cannot be written at all. Enums, booleans
//!   and formatted strings keep their schema.
//! - [`check_arguments`] finds what a served model wrote that the conversation cannot
//!   have supplied (text from the tool's descriptions or examples, unresolved or
//!   malformed dates), so the loop returns it as a correctable error instead of running
//!   or silently changing the call.

use chrono::{Datelike, Days, NaiveDate, Weekday};
use serde_json::{Map, Value, json};

use crate::{ChatMessage, Role, RunClock};

/// The longest span a free-text string may be, in characters: the grammar's cap on
/// strings (a small model otherwise loops inside one).
pub const MAX_SPAN_CHARS: usize = 128;

/// The most span starts one pattern offers; a pasted document longer than this offers
/// its first ones (they bound the grammar's size: each start is one alternative).
const MAX_SPAN_STARTS: usize = 400;

/// What the conversation gives a tool call to work with.
#[derive(Debug, Clone)]
pub struct Grounding {
    /// The texts spans may come from: user and assistant messages, tool results.
    texts: Vec<String>,
    /// The date relative dates resolve against: one the user states ("Today is
    /// 2027-06-07"), else the run's.
    today: NaiveDate,
    /// Every date the conversation mentions, resolved, in order of appearance.
    dates: Vec<NaiveDate>,
    /// Every number it mentions (digits, or number words up to twenty).
    numbers: Vec<f64>,
}

impl Grounding {
    /// The grounding of a conversation at the run's `clock` (the current UTC date when
    /// the host gave none). System messages are the host's, not the user's: left out.
    pub fn new(messages: &[ChatMessage], clock: Option<&RunClock>) -> Self {
        let texts: Vec<String> = messages
            .iter()
            .filter(|m| m.role != Role::System)
            .filter_map(|m| m.content.clone())
            .filter(|t| !t.trim().is_empty())
            .collect();
        Self::from_texts(texts, clock)
    }

    /// The grounding of plain texts (the conversation's, in order).
    pub fn from_texts(texts: Vec<String>, clock: Option<&RunClock>) -> Self {
        let run_today = clock.map_or_else(|| chrono::Utc::now().date_naive(), RunClock::today);
        let today = texts
            .iter()
            .find_map(|t| stated_today(t, run_today))
            .unwrap_or(run_today);
        let mut dates = Vec::new();
        let mut numbers = Vec::new();
        for t in &texts {
            for d in dates_in(t, today) {
                if !dates.contains(&d) {
                    dates.push(d);
                }
            }
            for n in numbers_in(t) {
                if !numbers.contains(&n) {
                    numbers.push(n);
                }
            }
        }
        Self {
            texts,
            today,
            dates,
            numbers,
        }
    }

    /// The date "today" means in this conversation.
    pub fn today(&self) -> NaiveDate {
        self.today
    }

    /// The dates the conversation mentions, resolved.
    pub fn dates(&self) -> &[NaiveDate] {
        &self.dates
    }

    /// The numbers it mentions.
    pub fn numbers(&self) -> &[f64] {
        &self.numbers
    }

    /// A regex (anchored) matching exactly the spans a free-text string may be: from
    /// the start of a word to the end of a later (or the same) word of one text, at most
    /// [`MAX_SPAN_CHARS`] long, under `rules`. `None` when no span is left.
    pub fn span_pattern(&self, rules: &SpanRules) -> Option<String> {
        let mut alternatives = Vec::new();
        for text in &self.texts {
            let words = words_of(text, rules);
            for (i, first) in words.iter().enumerate() {
                if alternatives.len() >= MAX_SPAN_STARTS {
                    break;
                }
                if first.claimed || (first.edge && !first.after_boundary) {
                    continue;
                }
                let mut ends: Vec<usize> = words[i..]
                    .iter()
                    .take_while(|w| !w.claimed)
                    .filter(|w| !w.edge)
                    .flat_map(|w| w.ends.iter().copied())
                    .filter(|&e| text[first.start..e].chars().count() <= MAX_SPAN_CHARS)
                    .collect();
                ends.sort_unstable();
                ends.dedup();
                if ends.is_empty() {
                    continue;
                }
                // `a(b(c)?)?`: the span from the word's start to any of the ends. The
                // first letter in either case: "Call the plumber" for "call the plumber"
                // is the user's words all the same.
                let mut rx = String::new();
                let mut at = first.start;
                if let Some(c) = text[at..].chars().next()
                    && c.is_alphabetic()
                {
                    let (lo, up): (String, String) =
                        (c.to_lowercase().collect(), c.to_uppercase().collect());
                    if lo != up && lo.chars().count() == 1 && up.chars().count() == 1 {
                        rx.push_str(&format!("[{lo}{up}]"));
                        at += c.len_utf8();
                    }
                }
                for (k, &e) in ends.iter().enumerate() {
                    if k > 0 {
                        rx.push_str("(?:");
                    }
                    rx.push_str(&regex_escape(&text[at..e]));
                    at = e;
                }
                for _ in 1..ends.len() {
                    rx.push_str(")?");
                }
                if !alternatives.contains(&rx) {
                    alternatives.push(rx);
                }
            }
        }
        if alternatives.is_empty() {
            None
        } else {
            Some(format!("^(?:{})$", alternatives.join("|")))
        }
    }

    /// Whether `value` (compared ignoring case and runs of whitespace) occurs in the
    /// conversation.
    pub fn contains(&self, value: &str) -> bool {
        let needle = fold(value);
        needle.is_empty() || self.texts.iter().any(|t| fold(t).contains(&needle))
    }
}

/// Lower case, whitespace runs as one space, trimmed.
fn fold(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Characters that end a word. Everything else (letters, digits, `@ . _ - / # & + % '`)
/// belongs to one, so emails, ids (`ACC-2290`, `c_9`), dates and Markdown marks stay
/// whole; separators between words are kept inside a span as written.
fn is_separator(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            ',' | ';'
                | ':'
                | '"'
                | '('
                | ')'
                | '['
                | ']'
                | '{'
                | '}'
                | '<'
                | '>'
                | '|'
                | '!'
                | '?'
                | '`'
                | '“'
                | '”'
                | '‘'
                | '’'
        )
}

/// What a free-text span may not hold, besides leaving the conversation's words.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SpanRules {
    /// Words (lower case) another field of the same call takes: an enum value of a
    /// sibling (`low` for `priority`). A span stops before them.
    pub claimed: Vec<String>,
    /// Whether a sibling field is a date: then date phrases ("by Friday", "in 3
    /// days", "2027-03-01") are that field's, and a span stops before them.
    pub dates: bool,
}

/// Words that neither start a span in mid-sentence nor end one: "the office plants"
/// and "call the" are not what a person means by a title.
const EDGE_WORDS: [&str; 44] = [
    "a", "an", "the", "to", "of", "for", "by", "on", "in", "at", "and", "or", "with", "from",
    "about", "that", "it", "its", "is", "are", "as", "me", "my", "i", "we", "our", "your", "you",
    "please", "this", "these", "those", "into", "than", "then", "so", "if", "but", "be", "was",
    "were", "due", "before", "until",
];

/// One word of a text, for spans.
struct Word {
    /// Where it starts (after a leading quote or dash).
    start: usize,
    /// Where a span ending with it may end: after it, and before each of its trailing
    /// `.`, `'` or `-` ("bug.'" ends a span as "bug.'", "bug." or "bug").
    ends: Vec<usize>,
    /// An edge word ([`EDGE_WORDS`]).
    edge: bool,
    /// It starts the text, or follows punctuation rather than a space: an edge word may
    /// start a span there (a quotation: "'The board met…'").
    after_boundary: bool,
    /// Another field takes it ([`SpanRules`]).
    claimed: bool,
}

fn words_of(text: &str, rules: &SpanRules) -> Vec<Word> {
    let mut out: Vec<Word> = Vec::new();
    let mut lower: Vec<String> = Vec::new();
    let mut start = None;
    let mut push = |s: usize, e: usize, out: &mut Vec<Word>| {
        let word = &text[s..e];
        let lead = word.len() - word.trim_start_matches(['\'', '-', '.']).len();
        let s = s + lead;
        if s >= e {
            return;
        }
        let mut ends = vec![e];
        let mut w = &text[s..e];
        while let Some(shorter) = w.strip_suffix(['.', '\'', '-'])
            && !shorter.is_empty()
        {
            w = shorter;
            ends.push(s + w.len());
        }
        let before = text[..s].chars().next_back();
        let after_boundary = before.is_none_or(|c| !c.is_whitespace())
            || text[..s]
                .trim_end()
                .chars()
                .next_back()
                .is_some_and(|c| matches!(c, ':' | '"' | '\'' | '\n' | '(' | '“' | '‘'))
            || text[..s].ends_with('\n');
        let l = w.to_lowercase();
        out.push(Word {
            start: s,
            ends,
            edge: EDGE_WORDS.contains(&l.as_str()),
            after_boundary,
            claimed: rules.claimed.contains(&l),
        });
        lower.push(l);
    };
    for (i, c) in text.char_indices() {
        if is_separator(c) {
            if let Some(s) = start.take() {
                push(s, i, &mut out);
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        push(s, text.len(), &mut out);
    }
    if rules.dates {
        for (i, claimed) in date_words(&lower).into_iter().enumerate() {
            out[i].claimed |= claimed;
        }
    }
    out
}

/// Which of these (lower-case) words belong to a date phrase: ISO dates, `today`,
/// `tomorrow`, weekdays with `next`/`this`/`last`, `next week`, `in N days`, `12 March`,
/// `March 12`.
fn date_words(words: &[String]) -> Vec<bool> {
    let mut out = vec![false; words.len()];
    let is_num = |w: &str| small_number(w).is_some() && w != "a" && w != "an";
    for (i, w) in words.iter().enumerate() {
        let next = words.get(i + 1).map(String::as_str);
        let w = w.as_str();
        if iso_date(w).is_some()
            || matches!(w, "today" | "tomorrow" | "tonight" | "yesterday")
            || weekday(w).is_some()
        {
            out[i] = true;
        }
        if matches!(w, "next" | "this" | "last" | "coming")
            && next.is_some_and(|n| weekday(n).is_some() || n == "week")
        {
            out[i] = true;
            out[i + 1] = true;
        }
        if w == "in"
            && next.is_some_and(is_num)
            && words
                .get(i + 2)
                .is_some_and(|u| matches!(u.as_str(), "day" | "days" | "week" | "weeks"))
        {
            out[i..=i + 2].iter_mut().for_each(|c| *c = true);
        }
        if w != "may" && month(w).is_some() {
            out[i] = true;
            if next.is_some_and(|n| {
                n.trim_end_matches(|c: char| c.is_ascii_alphabetic())
                    .parse::<u32>()
                    .is_ok()
            }) {
                out[i + 1] = true;
            }
            if i > 0
                && words[i - 1]
                    .trim_end_matches(|c: char| c.is_ascii_alphabetic())
                    .parse::<u32>()
                    .is_ok()
            {
                out[i - 1] = true;
            }
        }
    }
    out
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' | '.' | '+' | '*' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$'
            | '#' | '&' | '-' | '~' | '/' | '"' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out
}

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

const NUMBER_WORDS: [&str; 21] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
];

fn month(word: &str) -> Option<u32> {
    let w = word.trim_end_matches('.');
    if w.len() < 3 {
        return None;
    }
    MONTHS
        .iter()
        .position(|m| *m == w || (w.len() == 3 && m.starts_with(w)) || (w == "sept"))
        .map(|i| i as u32 + 1)
}

fn weekday(word: &str) -> Option<Weekday> {
    Some(match word {
        "monday" | "mon" => Weekday::Mon,
        "tuesday" | "tue" | "tues" => Weekday::Tue,
        "wednesday" | "wed" => Weekday::Wed,
        "thursday" | "thu" | "thurs" => Weekday::Thu,
        "friday" | "fri" => Weekday::Fri,
        "saturday" | "sat" => Weekday::Sat,
        "sunday" | "sun" => Weekday::Sun,
        _ => return None,
    })
}

fn small_number(word: &str) -> Option<u64> {
    word.parse::<u64>().ok().or_else(|| {
        if word == "a" || word == "an" {
            return Some(1);
        }
        NUMBER_WORDS
            .iter()
            .position(|w| *w == word)
            .map(|i| i as u64)
    })
}

/// The lower-cased words of a text, without surrounding punctuation, and an ordinal's
/// suffix (`12th` -> `12`).
fn plain_words(text: &str) -> Vec<String> {
    text.split(|c: char| {
        c.is_whitespace()
            || matches!(
                c,
                ',' | ';' | ':' | '"' | '(' | ')' | '?' | '!' | '\'' | '’'
            )
    })
    .map(|w| {
        w.trim_matches(|c: char| matches!(c, '.' | '-'))
            .to_lowercase()
    })
    .filter(|w| !w.is_empty())
    .map(|w| {
        let digits = w.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        if !digits.is_empty()
            && digits.chars().all(|c| c.is_ascii_digit())
            && matches!(&w[digits.len()..], "st" | "nd" | "rd" | "th")
        {
            digits.to_owned()
        } else {
            w
        }
    })
    .collect()
}

fn iso_date(word: &str) -> Option<NaiveDate> {
    let w = word.trim_end_matches(['.', ',']);
    if w.len() != 10 {
        return None;
    }
    NaiveDate::parse_from_str(w, "%Y-%m-%d").ok()
}

/// The weekday `wd` on or after `today` (`this Friday`, `by Friday`).
fn coming(today: NaiveDate, wd: Weekday) -> NaiveDate {
    let ahead = (7 + i64::from(wd.num_days_from_monday())
        - i64::from(today.weekday().num_days_from_monday()))
        % 7;
    today + Days::new(ahead as u64)
}

/// The weekday `wd` in the week after this one (weeks start on Monday), as the doctext
/// plugin reads `next Friday`.
fn in_next_week(today: NaiveDate, wd: Weekday) -> NaiveDate {
    let monday = today + Days::new(7 - u64::from(today.weekday().num_days_from_monday()));
    monday + Days::new(u64::from(wd.num_days_from_monday()))
}

/// A calendar date without a year: this year's, or next year's when this year's is more
/// than six months past (the doctext plugin's rule).
fn with_year(today: NaiveDate, m: u32, d: u32, year: Option<i32>) -> Option<NaiveDate> {
    if let Some(y) = year {
        return NaiveDate::from_ymd_opt(y, m, d);
    }
    let this = NaiveDate::from_ymd_opt(today.year(), m, d)?;
    if (today - this).num_days() > 183 {
        NaiveDate::from_ymd_opt(today.year() + 1, m, d)
    } else {
        Some(this)
    }
}

fn year(word: Option<&String>) -> Option<i32> {
    word.and_then(|w| w.parse::<i32>().ok())
        .filter(|y| (1900..=2200).contains(y))
}

/// Every date a text mentions, resolved against `today`: ISO dates, `12 March [2027]`,
/// `March 12[th][, 2027]`, `today`, `tomorrow`, `the day after tomorrow`, `yesterday`,
/// weekdays (`Friday`, `this`/`by`/`on Friday` = the coming one, `next Friday` = in next
/// week), `next week`, `in N days`/`weeks`.
pub fn dates_in(text: &str, today: NaiveDate) -> Vec<NaiveDate> {
    let words = plain_words(text);
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = words[i].as_str();
        let next = words.get(i + 1).map(String::as_str);
        let mut found = None;
        let mut used = 1;
        if let Some(d) = iso_date(w) {
            found = Some(d);
        } else if w == "today" || w == "tonight" {
            found = Some(today);
        } else if w == "tomorrow" {
            found = today.checked_add_days(Days::new(1));
        } else if w == "yesterday" {
            found = today.checked_sub_days(Days::new(1));
        } else if w == "day"
            && next == Some("after")
            && words.get(i + 2).map(String::as_str) == Some("tomorrow")
        {
            found = today.checked_add_days(Days::new(2));
            used = 3;
        } else if w == "next" && next == Some("week") {
            found = Some(in_next_week(today, Weekday::Mon));
            used = 2;
        } else if w == "next" && next.and_then(weekday).is_some() {
            found = next.and_then(weekday).map(|wd| in_next_week(today, wd));
            used = 2;
        } else if w == "last" && next.and_then(weekday).is_some() {
            found = next.and_then(weekday).map(|wd| {
                let back = (7 + i64::from(today.weekday().num_days_from_monday())
                    - i64::from(wd.num_days_from_monday())
                    - 1)
                    % 7
                    + 1;
                today - Days::new(back as u64)
            });
            used = 2;
        } else if let Some(wd) = weekday(w) {
            found = Some(coming(today, wd));
        } else if w == "in" {
            if let (Some(n), Some(unit)) = (next.and_then(small_number), words.get(i + 2)) {
                let days = match unit.as_str() {
                    "day" | "days" => Some(n),
                    "week" | "weeks" => Some(n * 7),
                    _ => None,
                };
                if let Some(days) = days {
                    found = today.checked_add_days(Days::new(days));
                    used = 3;
                }
            }
        } else if let Some(m) = month(w) {
            // `March 12[, 2027]`
            if let Some(d) = next
                .and_then(|n| n.parse::<u32>().ok())
                .filter(|d| (1..=31).contains(d))
            {
                let y = year(words.get(i + 2));
                found = with_year(today, m, d, y);
                used = if y.is_some() { 3 } else { 2 };
            }
        } else if let Ok(d) = w.parse::<u32>()
            && (1..=31).contains(&d)
            && let Some(m) = next.and_then(month)
        {
            // `12 March [2027]`
            let y = year(words.get(i + 2));
            found = with_year(today, m, d, y);
            used = if y.is_some() { 3 } else { 2 };
        }
        if let Some(d) = found {
            out.push(d);
            i += used;
        } else {
            i += 1;
        }
    }
    out
}

/// A date the text states as today's ("Today is 2027-06-07", "today's date is 12 March
/// 2027"), which relative dates in it then resolve against.
fn stated_today(text: &str, run_today: NaiveDate) -> Option<NaiveDate> {
    let words = plain_words(text);
    let pos = words
        .windows(2)
        .position(|w| (w[0] == "today" || w[0] == "today's" || w[0] == "date") && w[1] == "is")?;
    let rest = words[pos + 2..].join(" ");
    dates_in(&rest, run_today)
        .into_iter()
        .next()
        .filter(|_| words.get(pos + 2).is_some_and(|w| w != "today"))
}

/// Every number a text mentions: digit runs standing alone (`150`, `1,000` is two,
/// `2.5`), and number words up to twenty.
pub fn numbers_in(text: &str) -> Vec<f64> {
    let mut out = Vec::new();
    for w in text.split(|c: char| {
        c.is_whitespace()
            || matches!(
                c,
                ',' | ';' | ':' | '"' | '\'' | '(' | ')' | '?' | '!' | '|' | '$' | '€' | '£' | '%'
            )
    }) {
        let w = w.trim_end_matches('.');
        let lower = w.to_lowercase();
        let n = if !w.is_empty() && w.chars().all(|c| c.is_ascii_digit() || c == '.') {
            w.parse::<f64>().ok()
        } else {
            NUMBER_WORDS
                .iter()
                .position(|x| *x == lower)
                .map(|i| i as f64)
        };
        if let Some(n) = n
            && !out.contains(&n)
        {
            out.push(n);
        }
    }
    out
}

/// What a string field holds, judged from its schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StringKind {
    /// Free text: a span of the conversation.
    Free,
    /// A calendar date, `YYYY-MM-DD` (`format: date`, or a description that says so).
    Date,
    /// Today's date (a field named `today`, or described as today's date).
    Today,
    /// Constrained by the schema itself (`enum`, `const`, `pattern`, another `format`).
    Schema,
}

fn string_kind(name: &str, schema: &Map<String, Value>) -> StringKind {
    if schema.contains_key("enum") || schema.contains_key("const") || schema.contains_key("pattern")
    {
        return StringKind::Schema;
    }
    let description = schema
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let is_date = schema.get("format").and_then(Value::as_str) == Some("date")
        || description.contains("YYYY-MM-DD");
    if is_date && (name == "today" || description.to_lowercase().starts_with("today's date")) {
        return StringKind::Today;
    }
    if is_date {
        return StringKind::Date;
    }
    if schema.contains_key("format") {
        return StringKind::Schema;
    }
    StringKind::Free
}

fn types_of(schema: &Map<String, Value>) -> Vec<String> {
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// Narrows a tool's argument schema to what `grounding` supplies (see the module doc).
/// Every value the result allows is valid under the original schema; an optional
/// property nothing in the conversation can fill is removed, so the model cannot
/// invent it. Only for the decoder's grammar: the tool is still described, and its
/// calls validated, with its own schema.
///
/// `tool` is the tool's name: its words ("add", "task") name the action, not what it
/// acts on, so free text stops before them ("Add a task to call the plumber" gives
/// "call the plumber", not the whole request).
pub fn ground_schema(schema: &Value, tool: &str, grounding: &Grounding) -> Value {
    let mut out = schema.clone();
    let cx = Cx {
        g: grounding,
        root: schema,
        spans: std::cell::RefCell::new(std::collections::HashMap::new()),
        tool_words: name_words(tool),
    };
    cx.ground(&mut out, "", &SpanRules::default());
    out
}

/// A tool name's words, lower case, singular and plural (`list_tasks` -> list, lists,
/// tasks, task).
fn name_words(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for w in name.split(['_', '-']).filter(|w| w.len() > 1) {
        let w = w.to_lowercase();
        match w.strip_suffix('s') {
            Some(singular) if singular.len() > 1 => out.push(singular.to_owned()),
            _ => out.push(format!("{w}s")),
        }
        out.push(w);
    }
    out
}

struct Cx<'a> {
    g: &'a Grounding,
    /// The tool's schema as given, for resolving `$ref`s.
    root: &'a Value,
    /// Span patterns by the rules they were built under.
    spans: std::cell::RefCell<std::collections::HashMap<SpanRules, Option<String>>>,
    /// The tool name's words, which no span holds.
    tool_words: Vec<String>,
}

/// Arrays the grammar lets the embedded model write hold one item (unless the schema
/// needs more): SmolLM2 repeats an item until the array's cap, and a request it can
/// serve names one condition, one sort key, one aggregate.
const GROUNDED_MAX_ITEMS: u64 = 1;

impl Cx<'_> {
    fn span_pattern(&self, rules: &SpanRules) -> Option<String> {
        let mut rules = rules.clone();
        rules.claimed.extend(self.tool_words.iter().cloned());
        self.spans
            .borrow_mut()
            .entry(rules.clone())
            .or_insert_with(|| self.g.span_pattern(&rules))
            .clone()
    }

    /// The schema a `$ref` points at (or the schema itself).
    fn resolved<'b>(&'b self, schema: &'b Value) -> &'b Value {
        resolve(self.root, schema).unwrap_or(schema)
    }

    /// The string values a field's schema lists, lower case, through `$ref`s and
    /// `anyOf`/`oneOf`.
    fn listed(&self, schema: &Value, out: &mut Vec<String>, depth: usize) {
        let schema = self.resolved(schema);
        if depth > 4 {
            return;
        }
        if let Some(Value::String(c)) = schema.get("const") {
            out.push(c.to_lowercase());
        }
        if let Some(Value::Array(xs)) = schema.get("enum") {
            out.extend(xs.iter().filter_map(|x| x.as_str().map(str::to_lowercase)));
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(Value::Array(options)) = schema.get(key) {
                for o in options {
                    self.listed(o, out, depth + 1);
                }
            }
        }
    }

    fn kind_of(&self, name: &str, schema: &Value) -> Option<StringKind> {
        let map = self.resolved(schema).as_object()?;
        types_of(map)
            .iter()
            .any(|t| t == "string")
            .then(|| string_kind(name, map))
    }

    /// Grounds `schema` (the value of a field called `name`, whose free text follows
    /// `rules`); `false` when no value but `null` is left for it.
    fn ground(&self, schema: &mut Value, name: &str, rules: &SpanRules) -> bool {
        let Value::Object(map) = schema else {
            return true;
        };
        for key in ["$defs", "definitions"] {
            if let Some(Value::Object(defs)) = map.get_mut(key) {
                for (n, d) in defs.iter_mut() {
                    self.ground(d, n, &SpanRules::default());
                }
            }
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(Value::Array(options)) = map.get_mut(key) {
                for o in options.iter_mut() {
                    self.ground(o, name, rules);
                }
            }
        }
        if let Some(items) = map.get_mut("items") {
            let fillable = self.ground(items, name, rules);
            if !fillable && map.get("minItems").and_then(Value::as_u64).unwrap_or(0) == 0 {
                // Only `[]` is left: nothing to write.
                return false;
            }
            let min = map.get("minItems").and_then(Value::as_u64).unwrap_or(0);
            let max = map
                .get("maxItems")
                .and_then(Value::as_u64)
                .unwrap_or(u64::MAX);
            map.insert(
                "maxItems".into(),
                json!(max.min(GROUNDED_MAX_ITEMS.max(min))),
            );
        }
        let lists_properties = map
            .get("properties")
            .and_then(Value::as_object)
            .is_some_and(|p| !p.is_empty());
        if !lists_properties
            && types_of(map).iter().any(|t| t == "object")
            && map.get("additionalProperties") != Some(&Value::Bool(false))
        {
            // Keys neither the schema nor the conversation names (a table's rows as
            // objects): the model would invent them, and their values with them.
            return false;
        }
        if let Some(Value::Object(props)) = map.get("properties") {
            // What each property's siblings take: their listed values, and date phrases
            // when one of them is a date.
            let names: Vec<String> = props.keys().cloned().collect();
            let mut listed: Vec<Vec<String>> = Vec::new();
            let mut kinds = Vec::new();
            for (n, p) in props {
                let mut l = Vec::new();
                self.listed(p, &mut l, 0);
                listed.push(l);
                kinds.push(self.kind_of(n, p));
            }
            let mut required: Vec<String> = map
                .get("required")
                .and_then(Value::as_array)
                .map(|r| {
                    r.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let mut drop = Vec::new();
            if let Some(Value::Object(props)) = map.get_mut("properties") {
                for (i, (n, p)) in props.iter_mut().enumerate() {
                    let rules = SpanRules {
                        claimed: listed
                            .iter()
                            .enumerate()
                            .filter(|(j, _)| *j != i)
                            .flat_map(|(_, l)| l.iter().cloned())
                            .collect(),
                        dates: kinds
                            .iter()
                            .enumerate()
                            .any(|(j, k)| j != i && *k == Some(StringKind::Date)),
                    };
                    if !self.ground(p, n, &rules) {
                        drop.push(n.clone());
                    }
                }
                for n in drop {
                    if !required.contains(&n) {
                        props.remove(&n);
                    }
                }
            }
            // The run's date is always right for a field that asks for today's.
            for (n, k) in names.iter().zip(&kinds) {
                if *k == Some(StringKind::Today) && !required.contains(n) {
                    required.push(n.clone());
                }
            }
            if !required.is_empty() {
                map.insert("required".into(), json!(required));
            }
            return true;
        }
        if map.contains_key("enum") || map.contains_key("const") || map.contains_key("$ref") {
            return true;
        }
        let types = types_of(map);
        if types.is_empty() {
            return true;
        }
        let description = map.get("description").cloned();
        let mut parts: Vec<Value> = Vec::new();
        let mut fillable = false;
        let mut nullable = false;
        for t in &types {
            match t.as_str() {
                "string" => match string_kind(name, map) {
                    StringKind::Schema => {
                        let mut s = map.clone();
                        s.insert("type".into(), json!("string"));
                        parts.push(Value::Object(s));
                        fillable = true;
                    }
                    StringKind::Free => match self.span_pattern(rules) {
                        Some(p) => {
                            parts.push(json!({ "type": "string", "pattern": p }));
                            fillable = true;
                        }
                        None => parts.push(json!({ "type": "string", "maxLength": 0 })),
                    },
                    kind @ (StringKind::Date | StringKind::Today) => {
                        let dates: Vec<Value> = if kind == StringKind::Today {
                            vec![json!(self.g.today.format("%Y-%m-%d").to_string())]
                        } else {
                            self.g
                                .dates
                                .iter()
                                .map(|d| json!(d.format("%Y-%m-%d").to_string()))
                                .collect()
                        };
                        if !dates.is_empty() {
                            parts.push(json!({ "enum": dates }));
                            fillable = true;
                        }
                    }
                },
                "integer" | "number" => {
                    let min = map.get("minimum").and_then(Value::as_f64);
                    let max = map.get("maximum").and_then(Value::as_f64);
                    let ok: Vec<Value> = self
                        .g
                        .numbers
                        .iter()
                        .filter(|n| t == "number" || n.fract() == 0.0)
                        .filter(|n| min.is_none_or(|m| **n >= m) && max.is_none_or(|m| **n <= m))
                        .map(|n| {
                            if n.fract() == 0.0 && n.abs() < 1e15 {
                                json!(*n as i64)
                            } else {
                                json!(n)
                            }
                        })
                        .collect();
                    if !ok.is_empty() {
                        parts.push(json!({ "enum": ok }));
                        fillable = true;
                    }
                }
                "null" => nullable = true,
                other => {
                    let mut s = map.clone();
                    s.insert("type".into(), json!(other));
                    parts.push(Value::Object(s));
                    fillable = true;
                }
            }
        }
        if nullable {
            parts.push(json!({ "type": "null" }));
        }
        let mut grounded = match parts.len() {
            // Nothing grounded is left (a number the request does not give): the
            // field's own schema stays, for a required field to remain writable, and an
            // optional one is dropped by its object.
            0 => return false,
            1 => parts.remove(0),
            _ => json!({ "anyOf": parts }),
        };
        if let (Some(d), Value::Object(g)) = (description, &mut grounded) {
            g.insert("description".into(), d);
        }
        *schema = grounded;
        fillable
    }
}

/// Why a call's arguments are not grounded, worded for the model that wrote them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ungrounded {
    /// The argument's JSON pointer (`/title`).
    pub at: String,
    /// What is wrong and how to fix it.
    pub problem: String,
}

impl std::fmt::Display for Ungrounded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at {}: {}", self.at, self.problem)
    }
}

/// The words a check compares: lower-cased runs of letters and digits.
fn content_words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || matches!(c, '@' | '.' | '_' | '-')))
        .map(|w| w.trim_matches(['.', '-', '_']).to_lowercase())
        .filter(|w| !w.is_empty())
        .collect()
}

/// Words too common to show copying on their own or in a pair.
const STOPWORDS: [&str; 40] = [
    "a", "an", "the", "and", "or", "of", "to", "in", "on", "at", "by", "for", "with", "from", "is",
    "are", "be", "as", "it", "its", "this", "that", "e.g", "eg", "i", "my", "me", "we", "our",
    "you", "your", "about", "into", "not", "no", "so", "if", "then", "than", "do",
];

/// Checks the arguments a model wrote for one call against the conversation:
/// - a string may not carry text from the tool's own prompt (`reference`: its
///   description, its schema's descriptions, its examples) that the conversation does
///   not contain: a pair of words, or a word holding a digit, `@` or `.` (an example
///   date, address or id);
/// - a date field (`format: date`, or described as `YYYY-MM-DD`) must hold a real
///   `YYYY-MM-DD` date: a relative one ("tomorrow") is reported with what it resolves
///   to at the run's date.
///
/// Values the schema lists (`enum`, `const`) are always fine. Returns every problem, for
/// a correctable error; an empty list means the call is grounded.
pub fn check_arguments(
    schema: &Value,
    reference: &[&str],
    arguments: &Value,
    grounding: &Grounding,
) -> Vec<Ungrounded> {
    let mut reference_words: Vec<Vec<String>> = Vec::new();
    collect_descriptions(schema, &mut |d| reference_words.push(content_words(d)));
    for r in reference {
        reference_words.push(content_words(r));
    }
    let conversation: Vec<String> = grounding
        .texts
        .iter()
        .flat_map(|t| content_words(t))
        .collect();
    let in_conversation_pair =
        |a: &str, b: &str| conversation.windows(2).any(|w| w[0] == a && w[1] == b);
    let in_reference_pair = |a: &str, b: &str| {
        reference_words
            .iter()
            .any(|r| r.windows(2).any(|w| w[0] == a && w[1] == b))
    };
    let in_reference_word = |a: &str| reference_words.iter().any(|r| r.iter().any(|w| w == a));
    let listed = listed_values(schema);
    let mut out = Vec::new();
    walk_strings(
        schema,
        schema,
        arguments,
        "",
        "",
        &mut |at, name, field, value| {
            if listed.iter().any(|l| l == value) {
                return;
            }
            let kind = field.map_or(StringKind::Free, |f| string_kind(name, f));
            if matches!(kind, StringKind::Date | StringKind::Today) {
                let parsed = NaiveDate::parse_from_str(value, "%Y-%m-%d")
                    .ok()
                    .filter(|_| value.len() == 10);
                // A date the conversation gives, resolved, is grounded whatever it looks like.
                if parsed.is_some_and(|d| d == grounding.today || grounding.dates.contains(&d)) {
                    return;
                }
                if parsed.is_none() {
                    let resolved = dates_in(value, grounding.today);
                    let problem = match resolved.first() {
                        Some(d) => format!(
                            "{value:?} is not a YYYY-MM-DD date; today is {}, so it is {}",
                            grounding.today,
                            d.format("%Y-%m-%d")
                        ),
                        None => format!(
                            "{value:?} is not a YYYY-MM-DD date (today is {})",
                            grounding.today
                        ),
                    };
                    out.push(Ungrounded {
                        at: at.to_owned(),
                        problem,
                    });
                    return;
                }
            }
            let words = content_words(value);
            let mut copied: Option<String> = None;
            for w in words.windows(2) {
                if STOPWORDS.contains(&w[0].as_str()) && STOPWORDS.contains(&w[1].as_str()) {
                    continue;
                }
                if in_reference_pair(&w[0], &w[1]) && !in_conversation_pair(&w[0], &w[1]) {
                    copied = Some(format!("{} {}", w[0], w[1]));
                    break;
                }
            }
            if copied.is_none() {
                copied = words
                    .iter()
                    .find(|w| {
                        w.chars()
                            .any(|c| c.is_ascii_digit() || c == '@' || c == '.')
                            && in_reference_word(w)
                            && !conversation.contains(w)
                    })
                    .cloned();
            }
            if let Some(c) = copied {
                out.push(Ungrounded {
                at: at.to_owned(),
                problem: format!(
                    "{c:?} comes from the tool's description or examples, not from the conversation; use the user's own words"
                ),
            });
            }
        },
    );
    out
}

fn collect_descriptions(schema: &Value, f: &mut dyn FnMut(&str)) {
    match schema {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("description" | "title", Value::String(s)) => f(s),
                    ("examples", Value::Array(xs)) => {
                        for x in xs {
                            if let Value::String(s) = x {
                                f(s);
                            }
                        }
                    }
                    ("enum" | "const", _) => {}
                    _ => collect_descriptions(v, f),
                }
            }
        }
        Value::Array(xs) => xs.iter().for_each(|x| collect_descriptions(x, f)),
        _ => {}
    }
}

/// Every string a schema lists as a value (`enum`, `const`).
fn listed_values(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    fn go(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, x) in map {
                    match (k.as_str(), x) {
                        ("const", Value::String(s)) => out.push(s.clone()),
                        ("enum", Value::Array(xs)) => {
                            out.extend(xs.iter().filter_map(|x| x.as_str().map(str::to_owned)));
                        }
                        _ => go(x, out),
                    }
                }
            }
            Value::Array(xs) => xs.iter().for_each(|x| go(x, out)),
            _ => {}
        }
    }
    go(schema, &mut out);
    out
}

/// What [`walk_strings`] calls: pointer, field name, field schema, value.
type StringVisitor<'a> = dyn FnMut(&str, &str, Option<&Map<String, Value>>, &str) + 'a;

/// Calls `f(pointer, field name, field schema, value)` for every string in `value`, with
/// the schema of the object property it is (resolving local `$ref`s), when known.
fn walk_strings(
    root: &Value,
    schema: &Value,
    value: &Value,
    at: &str,
    name: &str,
    f: &mut StringVisitor<'_>,
) {
    let schema = resolve(root, schema);
    match value {
        Value::String(s) => f(at, name, schema.and_then(Value::as_object), s),
        Value::Object(obj) => {
            for (k, v) in obj {
                let child = schema.and_then(|s| property_schema(root, s, k));
                walk_strings(
                    root,
                    child.unwrap_or(&Value::Null),
                    v,
                    &format!("{at}/{k}"),
                    k,
                    f,
                );
            }
        }
        Value::Array(xs) => {
            let items = schema.and_then(|s| s.get("items"));
            for (i, v) in xs.iter().enumerate() {
                walk_strings(
                    root,
                    items.unwrap_or(&Value::Null),
                    v,
                    &format!("{at}/{i}"),
                    name,
                    f,
                );
            }
        }
        _ => {}
    }
}

/// Follows a local `$ref` (`#/$defs/X`, `#/definitions/X`).
fn resolve<'a>(root: &'a Value, schema: &'a Value) -> Option<&'a Value> {
    let mut s = schema;
    for _ in 0..8 {
        match s.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let pointer = r.strip_prefix('#')?;
                s = root.pointer(pointer)?;
            }
            None => return (!s.is_null()).then_some(s),
        }
    }
    None
}

/// The schema of property `key` of an object schema, looking into `anyOf`/`oneOf`.
fn property_schema<'a>(root: &'a Value, schema: &'a Value, key: &str) -> Option<&'a Value> {
    if let Some(p) = schema.get("properties").and_then(|p| p.get(key)) {
        return Some(p);
    }
    for k in ["anyOf", "oneOf", "allOf"] {
        if let Some(Value::Array(options)) = schema.get(k) {
            for o in options {
                if let Some(p) = resolve(root, o).and_then(|o| property_schema(root, o, key)) {
                    return Some(p);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn relative_dates_resolve_against_the_run_date() {
        let wed = d("2027-03-10");
        let one = |t: &str| dates_in(t, wed);
        assert_eq!(one("tomorrow"), vec![d("2027-03-11")]);
        assert_eq!(one("due today"), vec![wed]);
        assert_eq!(one("by Friday"), vec![d("2027-03-12")]);
        assert_eq!(one("next Friday"), vec![d("2027-03-19")]);
        assert_eq!(one("next Monday"), vec![d("2027-03-15")]);
        assert_eq!(one("in 3 days"), vec![d("2027-03-13")]);
        assert_eq!(one("in two weeks"), vec![d("2027-03-24")]);
        assert_eq!(one("next week"), vec![d("2027-03-15")]);
        assert_eq!(one("the day after tomorrow"), vec![d("2027-03-12")]);
        assert_eq!(one("before March 12th"), vec![d("2027-03-12")]);
        assert_eq!(one("on 4 October 2027"), vec![d("2027-10-04")]);
        assert_eq!(one("renew it by 2027-03-01."), vec![d("2027-03-01")]);
        assert_eq!(one("no date here, just 12 apples"), Vec::<NaiveDate>::new());
    }

    #[test]
    fn a_stated_today_wins_over_the_run_date() {
        let g = Grounding::from_texts(
            vec!["Today is 2027-06-07. What is next Monday?".into()],
            None,
        );
        assert_eq!(g.today(), d("2027-06-07"));
        assert!(g.dates().contains(&d("2027-06-14")));
    }

    #[test]
    fn spans_start_and_end_at_words() {
        let g = Grounding::from_texts(
            vec!["Add a task: 'Call the plumber', by Friday.".into()],
            None,
        );
        let rx = g.span_pattern(&SpanRules::default()).unwrap();
        let re = fancy_regex::Regex::new(&rx).unwrap();
        for ok in [
            "Call the plumber",
            "call the plumber",
            "plumber",
            "Add a task",
            "Friday",
            "Friday.",
            "plumber', by Friday",
        ] {
            assert!(re.is_match(ok).unwrap(), "{ok} should be a span");
        }
        for bad in [
            "Call Anna about the budget",
            "lumber",
            "Call the plumb",
            "'Call",
            "the plumber",
            "Call the",
            "",
        ] {
            assert!(!re.is_match(bad).unwrap(), "{bad} should not be a span");
        }
    }

    #[test]
    fn a_span_leaves_what_sibling_fields_take() {
        let g = Grounding::from_texts(
            vec!["Renew my passport by 2027-03-01, low priority, in 3 days".into()],
            None,
        );
        let rules = SpanRules {
            claimed: vec!["low".into(), "high".into()],
            dates: true,
        };
        let re = fancy_regex::Regex::new(&g.span_pattern(&rules).unwrap()).unwrap();
        assert!(re.is_match("Renew my passport").unwrap());
        for bad in [
            "Renew my passport by 2027-03-01",
            "low priority",
            "passport by",
        ] {
            assert!(!re.is_match(bad).unwrap(), "{bad} should not be a span");
        }
        assert!(re.is_match("priority").unwrap());
    }

    #[test]
    fn grounding_a_schema_keeps_enums_and_drops_what_the_request_cannot_fill() {
        let schema = json!({
            "type": "object",
            "properties": {
                "title": { "type": "string", "description": "e.g. \"Call Anna\"" },
                "due": { "type": ["string", "null"], "description": "Due date as YYYY-MM-DD" },
                "limit": { "type": ["integer", "null"], "minimum": 1, "maximum": 50 },
                "priority": { "anyOf": [{ "$ref": "#/$defs/P" }, { "type": "null" }] }
            },
            "required": ["title"],
            "additionalProperties": false,
            "$defs": { "P": { "type": "string", "enum": ["low", "high"] } }
        });
        let clock = RunClock::fixed("2027-03-10T09:00:00+01:00").unwrap();
        let g = Grounding::from_texts(vec!["Water the plants tomorrow".into()], Some(&clock));
        let grounded = ground_schema(&schema, "add_task", &g);
        let props = &grounded["properties"];
        assert!(props["title"]["pattern"].is_string());
        assert_eq!(props["due"]["anyOf"][0]["enum"], json!(["2027-03-11"]));
        assert!(props.get("limit").is_none(), "no number in the request");
        assert_eq!(grounded["$defs"]["P"], schema["$defs"]["P"]);
        for ok in [
            json!({"title": "Water the plants", "due": "2027-03-11"}),
            json!({"title": "plants", "priority": "high"}),
        ] {
            assert!(jsonschema::is_valid(&grounded, &ok), "{ok}");
            assert!(jsonschema::is_valid(&schema, &ok));
        }
        for bad in [
            json!({"title": "Call Anna"}),
            json!({"title": "Water the plants", "due": "2027-03-12"}),
            json!({"title": "Water", "limit": 10}),
        ] {
            assert!(!jsonschema::is_valid(&grounded, &bad), "{bad}");
        }
    }

    #[test]
    fn copied_descriptions_and_unresolved_dates_are_reported() {
        let schema = json!({
            "type": "object",
            "properties": {
                "title": { "type": "string", "description": "What to do, e.g. \"Call Anna about the budget\"." },
                "due": { "type": ["string", "null"], "description": "Due date as YYYY-MM-DD, e.g. \"2027-03-12\"." },
                "priority": { "enum": ["low", "normal", "high"] }
            }
        });
        let clock = RunClock::fixed("2027-03-10T09:00:00+01:00").unwrap();
        let g = Grounding::from_texts(
            vec!["Add a task to call the plumber tomorrow, it's high priority".into()],
            Some(&clock),
        );
        let check =
            |args: Value| check_arguments(&schema, &["remind me to call Anna tomorrow"], &args, &g);
        assert!(
            check(json!({"title": "call the plumber", "due": "2027-03-11", "priority": "high"}))
                .is_empty()
        );
        // A paraphrase with no copied text passes.
        assert!(check(json!({"title": "Phone the plumber"})).is_empty());
        let copied = check(json!({"title": "Call Anna about the budget"}));
        assert_eq!(copied.len(), 1);
        assert_eq!(copied[0].at, "/title");
        assert!(
            copied[0].problem.contains("description or examples"),
            "{}",
            copied[0]
        );
        let example_date = check(json!({"title": "call the plumber", "due": "2027-03-12"}));
        assert_eq!(example_date.len(), 1, "{example_date:?}");
        let relative = check(json!({"title": "call the plumber", "due": "tomorrow"}));
        assert_eq!(relative.len(), 1);
        assert!(
            relative[0].problem.contains("2027-03-11"),
            "{}",
            relative[0]
        );
    }
}
