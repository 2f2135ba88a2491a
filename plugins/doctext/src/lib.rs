//! Outline, word counts, action items and dates in a document's text.
//!
//! Pure text analysis inside the plugin: no network, no storage. Dates that depend on
//! the current day ("tomorrow", "next Tuesday", "12 March") are resolved against the
//! optional `today` argument, since a plugin has no business trusting a clock the host
//! did not give it; the model knows today's date and passes it.

use cairn_sdk::prelude::*;

pub mod dates;
pub mod text;

use dates::Date;

/// The longest text accepted, in bytes.
pub const MAX_TEXT_BYTES: usize = 2 * 1024 * 1024;

/// Arguments of `outline` and `word_count`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TextInput {
    /// The document's text (Markdown or plain text).
    pub text: String,
}

/// Arguments of `word_count`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WordCountInput {
    /// The document's text (Markdown or plain text).
    pub text: String,
    /// Reading speed for the reading time, in words per minute (default 230).
    #[schemars(range(min = 50, max = 1000))]
    pub words_per_minute: Option<u32>,
}

/// Arguments of `find_action_items` and `find_dates`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatedTextInput {
    /// The document's text (Markdown or plain text).
    pub text: String,
    /// Today's date (YYYY-MM-DD), to resolve "tomorrow", "next Tuesday" or "12 March".
    /// Without it such dates are found but not resolved.
    pub today: Option<String>,
}

/// One heading.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Heading {
    /// 1 for a top-level heading, 2 below it, and so on.
    pub level: u32,
    /// The heading's text.
    pub text: String,
    /// The line it is on (1-based).
    pub line: usize,
    /// How it was written: "markdown" (`## Title`), "underlined" (`===`/`---` below) or
    /// "numbered" (`2.1 Title`).
    pub style: String,
    /// The section number of a numbered heading, e.g. "2.1".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
}

/// The result of `outline`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Outline {
    /// The headings in document order.
    pub headings: Vec<Heading>,
    /// How many headings.
    pub count: usize,
}

/// The result of `word_count`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct WordCount {
    /// Words.
    pub words: usize,
    /// Sentences (headings and list items count as one each).
    pub sentences: usize,
    /// Paragraphs: runs of non-blank lines.
    pub paragraphs: usize,
    /// Characters, spaces included.
    pub characters: usize,
    /// Characters without spaces and line breaks.
    pub characters_no_spaces: usize,
    /// Estimated reading time in minutes, to one decimal.
    pub reading_time_minutes: f64,
    /// The reading time in words, e.g. "about 4 minutes".
    pub reading_time: String,
}

/// One action item.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ActionItem {
    /// What is to be done, as written.
    pub text: String,
    /// The line it is on (1-based).
    pub line: usize,
    /// Who is to do it, when the text says (`@anna`, "Anna will …", "owner: Anna").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The due date as written, e.g. "by Friday" → "Friday".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due: Option<String>,
    /// The due date as YYYY-MM-DD, when it can be determined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_date: Option<String>,
    /// What marked it: "checkbox", "todo", "action", "mention", "assignment" or "request".
    pub source: String,
}

/// The result of `find_action_items`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ActionItems {
    /// The items in document order.
    pub items: Vec<ActionItem>,
    /// How many items.
    pub count: usize,
}

/// One date found in the text.
#[derive(Debug, Serialize, JsonSchema)]
pub struct FoundDate {
    /// The text as written, e.g. "next Tuesday".
    pub text: String,
    /// The date as YYYY-MM-DD, when it can be determined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// The line it is on (1-based).
    pub line: usize,
    /// "absolute" (a calendar date), "relative" (to today) or "ambiguous" (numeric with
    /// day and month order unknown, e.g. 03/04/2027).
    pub kind: String,
}

/// The result of `find_dates`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Dates {
    /// The dates in document order.
    pub dates: Vec<FoundDate>,
    /// How many dates.
    pub count: usize,
}

/// Lists the document's headings.
pub fn outline(input: TextInput) -> Result<Outline, ToolError> {
    check_size(&input.text)?;
    let headings: Vec<Heading> = text::outline(&input.text)
        .into_iter()
        .map(|h| Heading {
            level: h.level,
            text: h.text,
            line: h.line,
            style: match h.style {
                text::Style::Markdown => "markdown",
                text::Style::Underlined => "underlined",
                text::Style::Numbered => "numbered",
            }
            .to_owned(),
            number: h.number,
        })
        .collect();
    Ok(Outline {
        count: headings.len(),
        headings,
    })
}

/// Counts words, sentences and paragraphs and estimates the reading time.
pub fn word_count(input: WordCountInput) -> Result<WordCount, ToolError> {
    check_size(&input.text)?;
    let wpm = input.words_per_minute.unwrap_or(230);
    if !(50..=1000).contains(&wpm) {
        return Err(ToolError::invalid_input(
            "`words_per_minute` must be between 50 and 1000",
        ));
    }
    let c = text::counts(&input.text);
    let minutes = c.words as f64 / f64::from(wpm);
    let rounded = minutes.round() as u64;
    let reading_time = match rounded {
        _ if c.words == 0 => "no reading time".to_owned(),
        0 => "under a minute".to_owned(),
        1 => "about 1 minute".to_owned(),
        n => format!("about {n} minutes"),
    };
    Ok(WordCount {
        words: c.words,
        sentences: c.sentences,
        paragraphs: c.paragraphs,
        characters: c.characters,
        characters_no_spaces: c.characters_no_spaces,
        reading_time_minutes: (minutes * 10.0).round() / 10.0,
        reading_time,
    })
}

/// Finds tasks, to-dos and requests in the text, with owner and due hints.
pub fn find_action_items(input: DatedTextInput) -> Result<ActionItems, ToolError> {
    check_size(&input.text)?;
    let today = parse_today(input.today.as_deref())?;
    let items: Vec<ActionItem> = text::action_items(&input.text, today)
        .into_iter()
        .map(|i| ActionItem {
            text: i.text,
            line: i.line,
            owner: i.owner,
            due: i.due,
            due_date: i.due_date.map(|d| d.to_string()),
            source: match i.source {
                text::Source::Checkbox => "checkbox",
                text::Source::Todo => "todo",
                text::Source::Action => "action",
                text::Source::Mention => "mention",
                text::Source::Assignment => "assignment",
                text::Source::Request => "request",
            }
            .to_owned(),
        })
        .collect();
    Ok(ActionItems {
        count: items.len(),
        items,
    })
}

/// Finds dates in the text and normalises them to YYYY-MM-DD.
pub fn find_dates(input: DatedTextInput) -> Result<Dates, ToolError> {
    check_size(&input.text)?;
    let today = parse_today(input.today.as_deref())?;
    let mut found = Vec::new();
    for (line, content) in text::prose_lines(&input.text) {
        for f in dates::find_in_line(content, today) {
            found.push(FoundDate {
                text: f.text,
                date: f.date.map(|d| d.to_string()),
                line,
                kind: match f.kind {
                    dates::Kind::Absolute => "absolute",
                    dates::Kind::Relative => "relative",
                    dates::Kind::Ambiguous => "ambiguous",
                }
                .to_owned(),
            });
        }
    }
    Ok(Dates {
        count: found.len(),
        dates: found,
    })
}

cairn_sdk::plugin! { tools: [outline, word_count, find_action_items, find_dates] }

fn check_size(text: &str) -> Result<(), ToolError> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(ToolError::invalid_input(format!(
            "`text` is {} bytes; at most {MAX_TEXT_BYTES} are accepted",
            text.len()
        )));
    }
    Ok(())
}

fn parse_today(today: Option<&str>) -> Result<Option<Date>, ToolError> {
    today
        .map(|t| {
            Date::parse_iso(t).ok_or_else(|| {
                ToolError::invalid_input(format!(
                    "`today` must be a date written YYYY-MM-DD, e.g. 2027-03-12; got `{t}`"
                ))
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTES: &str = "# Weekly sync — 12 March 2027

## Decisions
1. Launch moves to 2027-04-01.
2. Budget stays as is.

## Action items
- [ ] @anna will send the revised deck by Monday
- [x] Book the room
- Tom to review the contract before 19 March
- Please update the forecast by end of the week.

Next meeting: next Tuesday.
";

    #[test]
    fn outline_of_meeting_minutes() {
        let o = outline(TextInput {
            text: MINUTES.into(),
        })
        .unwrap();
        let got: Vec<(u32, &str)> = o
            .headings
            .iter()
            .map(|h| (h.level, h.text.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (1, "Weekly sync — 12 March 2027"),
                (2, "Decisions"),
                (2, "Action items")
            ]
        );
    }

    #[test]
    fn action_items_of_meeting_minutes() {
        let r = find_action_items(DatedTextInput {
            text: MINUTES.into(),
            today: Some("2027-03-12".into()),
        })
        .unwrap();
        let got: Vec<(&str, Option<&str>, Option<&str>, &str)> = r
            .items
            .iter()
            .map(|i| {
                (
                    i.text.as_str(),
                    i.owner.as_deref(),
                    i.due_date.as_deref(),
                    i.source.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "@anna will send the revised deck by Monday",
                    Some("anna"),
                    Some("2027-03-15"),
                    "checkbox"
                ),
                (
                    "Tom to review the contract before 19 March",
                    Some("Tom"),
                    Some("2027-03-19"),
                    "assignment"
                ),
                (
                    "Please update the forecast by end of the week.",
                    None,
                    Some("2027-03-12"),
                    "request"
                ),
            ]
        );
    }

    #[test]
    fn dates_of_meeting_minutes() {
        let r = find_dates(DatedTextInput {
            text: MINUTES.into(),
            today: Some("2027-03-12".into()),
        })
        .unwrap();
        let got: Vec<(&str, Option<&str>, usize)> = r
            .dates
            .iter()
            .map(|d| (d.text.as_str(), d.date.as_deref(), d.line))
            .collect();
        assert_eq!(
            got,
            [
                ("12 March 2027", Some("2027-03-12"), 1),
                ("2027-04-01", Some("2027-04-01"), 4),
                ("Monday", Some("2027-03-15"), 8),
                ("19 March", Some("2027-03-19"), 10),
                ("next Tuesday", Some("2027-03-16"), 13),
            ]
        );
    }

    #[test]
    fn word_count_and_reading_time() {
        let text = "word ".repeat(460);
        let r = word_count(WordCountInput {
            text,
            words_per_minute: None,
        })
        .unwrap();
        assert_eq!(r.words, 460);
        assert_eq!(r.reading_time_minutes, 2.0);
        assert_eq!(r.reading_time, "about 2 minutes");
        let r = word_count(WordCountInput {
            text: "Short.".into(),
            words_per_minute: Some(100),
        })
        .unwrap();
        assert_eq!(r.reading_time, "under a minute");
        assert_eq!(r.characters, 6);
        let e = word_count(WordCountInput {
            text: "x".into(),
            words_per_minute: Some(5),
        })
        .unwrap_err();
        assert_eq!(e.code, "invalid_input");
    }

    #[test]
    fn bad_today_and_huge_text() {
        for today in ["tomorrow", "2027-02-30", "12/03/2027"] {
            let e = find_dates(DatedTextInput {
                text: "x".into(),
                today: Some(today.into()),
            })
            .unwrap_err();
            assert_eq!(e.code, "invalid_input");
            assert!(e.message.contains("`today`"), "{}", e.message);
        }
        let e = outline(TextInput {
            text: "a".repeat(MAX_TEXT_BYTES + 1),
        })
        .unwrap_err();
        assert_eq!(e.code, "invalid_input");
    }

    #[test]
    fn json_calls_as_the_host_makes_them() {
        let out = call_tool("find_dates", r#"{"text":"see you tomorrow"}"#).unwrap();
        assert_eq!(
            out,
            r#"{"dates":[{"text":"tomorrow","line":1,"kind":"relative"}],"count":1}"#
        );
        let e = call_tool("outline", r#"{"text": 5}"#).unwrap_err();
        assert!(e.message.contains("`text`"), "{}", e.message);
        let out = call_tool("word_count", r#"{"text":""}"#).unwrap();
        assert!(out.contains(r#""words":0"#), "{out}");
    }

    /// The examples in README.md.
    #[test]
    fn readme_examples() {
        let out = call_tool(
            "word_count",
            r#"{ "text": "Hello world. This is Dr. Smith.\n\nSecond paragraph" }"#,
        )
        .unwrap();
        assert_eq!(
            out,
            r#"{"words":8,"sentences":3,"paragraphs":2,"characters":49,"characters_no_spaces":41,"reading_time_minutes":0.0,"reading_time":"under a minute"}"#
        );
        let out = call_tool(
            "outline",
            r##"{ "text": "# Report\n\n## Results\n\n2.1 Revenue\n..." }"##,
        )
        .unwrap();
        assert_eq!(
            out,
            r#"{"headings":[{"level":1,"text":"Report","line":1,"style":"markdown"},{"level":2,"text":"Results","line":3,"style":"markdown"},{"level":2,"text":"Revenue","line":5,"style":"numbered","number":"2.1"}],"count":3}"#
        );
        let out = call_tool(
            "find_dates",
            r#"{ "text": "Kickoff 2027-03-15, review next Tuesday, ship by 1 April.", "today": "2027-03-12" }"#,
        )
        .unwrap();
        assert_eq!(
            out,
            r#"{"dates":[{"text":"2027-03-15","date":"2027-03-15","line":1,"kind":"absolute"},{"text":"next Tuesday","date":"2027-03-16","line":1,"kind":"relative"},{"text":"1 April","date":"2027-04-01","line":1,"kind":"absolute"}],"count":3}"#
        );
        let out = call_tool(
            "find_action_items",
            r#"{ "text": "- [ ] @anna will send the deck by Monday\nTom to review the contract before 19 March", "today": "2027-03-12" }"#,
        )
        .unwrap();
        assert_eq!(
            out,
            r#"{"items":[{"text":"@anna will send the deck by Monday","line":1,"owner":"anna","due":"Monday","due_date":"2027-03-15","source":"checkbox"},{"text":"Tom to review the contract before 19 March","line":2,"owner":"Tom","due":"19 March","due_date":"2027-03-19","source":"assignment"}],"count":2}"#
        );
    }
}
