//! Document structure: headings, counts, action items.

use crate::dates::{self, Date};

/// Lines outside fenced code blocks, with their 1-based numbers.
pub fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut fence: Option<&str> = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if let Some(marker) = fence {
            if t.starts_with(marker) {
                fence = None;
            }
            continue;
        }
        if t.starts_with("```") {
            fence = Some("```");
            continue;
        }
        if t.starts_with("~~~") {
            fence = Some("~~~");
            continue;
        }
        out.push((i + 1, line));
    }
    out
}

/// How a heading was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `## Title`
    Markdown,
    /// `Title` over `=====` (level 1) or `-----` (level 2).
    Underlined,
    /// `2.1 Title`
    Numbered,
}

/// A heading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heading {
    /// 1 for top level.
    pub level: u32,
    /// The heading's text.
    pub text: String,
    /// 1-based line number.
    pub line: usize,
    /// How it was written.
    pub style: Style,
    /// The section number of a numbered heading, e.g. `2.1`.
    pub number: Option<String>,
}

fn atx(t: &str) -> Option<(u32, String)> {
    let hashes = t.chars().take_while(|c| *c == '#').count();
    if !(1..=6).contains(&hashes) {
        return None;
    }
    let rest = &t[hashes..];
    if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    let mut title = rest.trim();
    // Closing hashes: `## Title ##`.
    let stripped = title.trim_end_matches('#');
    if stripped.len() < title.len() && (stripped.is_empty() || stripped.ends_with(' ')) {
        title = stripped.trim_end();
    }
    (!title.is_empty()).then(|| (hashes as u32, title.to_owned()))
}

fn underline(t: &str) -> Option<u32> {
    let t = t.trim();
    if t.len() >= 2 && t.chars().all(|c| c == '=') {
        Some(1)
    } else if t.len() >= 2 && t.chars().all(|c| c == '-') {
        Some(2)
    } else {
        None
    }
}

fn is_list_item(t: &str) -> bool {
    t.starts_with("- ") || t.starts_with("* ") || t.starts_with("+ ") || t.starts_with('>')
}

/// `2.1 Title` or `3. Title`: (section number, level, title).
fn numbered(t: &str) -> Option<(String, u32, String)> {
    let end = t.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let number = t[..end].trim_end_matches('.');
    let rest = &t[end..];
    if number.is_empty() || !rest.starts_with([' ', '\t']) {
        return None;
    }
    let groups: Vec<&str> = number.split('.').collect();
    if groups
        .iter()
        .any(|g| g.is_empty() || g.len() > 2 || g.starts_with('0'))
    {
        return None;
    }
    let title = rest.trim();
    let first = title.chars().next()?;
    let words = title.split_whitespace().count();
    if !first.is_uppercase() || words > 12 || title.ends_with(['.', ',', ';', '!', '?']) {
        return None;
    }
    Some((number.to_owned(), groups.len() as u32, title.to_owned()))
}

/// The headings of a document, in order.
pub fn outline(text: &str) -> Vec<Heading> {
    let lines = prose_lines(text);
    let mut out = Vec::new();
    let mut skip_next = false;
    for (k, &(line_no, line)) in lines.iter().enumerate() {
        if std::mem::take(&mut skip_next) {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let t = line.trim();
        if t.is_empty() || indent >= 4 {
            continue;
        }
        if let Some((level, title)) = atx(t) {
            out.push(Heading {
                level,
                text: title,
                line: line_no,
                style: Style::Markdown,
                number: None,
            });
            continue;
        }
        // Underlined: the next line (directly below) is all `=` or `-`.
        if let Some(&(next_no, next)) = lines.get(k + 1)
            && next_no == line_no + 1
            && let Some(level) = underline(next)
            && !is_list_item(t)
            && underline(t).is_none()
        {
            out.push(Heading {
                level,
                text: t.to_owned(),
                line: line_no,
                style: Style::Underlined,
                number: None,
            });
            skip_next = true;
            continue;
        }
        if let Some((number, level, title)) = numbered(t) {
            // `1. Buy milk` directly above or below `2. Call Anna` is a list, not headings.
            let neighbour_is_item = |j: Option<usize>| {
                j.and_then(|j| lines.get(j))
                    .is_some_and(|&(n, l)| n.abs_diff(line_no) == 1 && numbered_single(l.trim()))
            };
            let in_list = level == 1
                && (neighbour_is_item(k.checked_sub(1)) || neighbour_is_item(Some(k + 1)));
            if !in_list {
                out.push(Heading {
                    level,
                    text: title,
                    line: line_no,
                    style: Style::Numbered,
                    number: Some(number),
                });
            }
        }
    }
    out
}

/// A line that starts like `3. ` or `3) `.
fn numbered_single(t: &str) -> bool {
    let digits = t.chars().take_while(char::is_ascii_digit).count();
    digits > 0 && (t[digits..].starts_with(". ") || t[digits..].starts_with(") "))
}

/// Word, sentence and paragraph counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Words: whitespace-separated tokens with a letter or digit.
    pub words: usize,
    /// Sentences.
    pub sentences: usize,
    /// Paragraphs: runs of non-blank lines.
    pub paragraphs: usize,
    /// Characters.
    pub characters: usize,
    /// Characters other than whitespace.
    pub characters_no_spaces: usize,
}

const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "eg", "ie",
    "inc", "ltd", "co", "corp", "no", "fig", "approx", "dept", "est", "cf", "al", "jan", "feb",
    "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "p", "pp", "vol",
];

/// Counts words, sentences and paragraphs.
pub fn counts(text: &str) -> Counts {
    let mut c = Counts {
        characters: text.chars().count(),
        characters_no_spaces: text.chars().filter(|c| !c.is_whitespace()).count(),
        words: text
            .split_whitespace()
            .filter(|w| w.chars().any(char::is_alphanumeric))
            .count(),
        ..Counts::default()
    };
    let mut block = String::new();
    let mut in_paragraph = false;
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() {
            c.sentences += sentences(&block);
            block.clear();
            in_paragraph = false;
            continue;
        }
        if !in_paragraph {
            c.paragraphs += 1;
            in_paragraph = true;
        }
        // Headings and list items are sentences of their own even without a full stop.
        let starts_block =
            t.starts_with('#') || is_list_item(t) || numbered_single(t) || underline(t).is_some();
        if starts_block {
            c.sentences += sentences(&block);
            block.clear();
        }
        if underline(t).is_none() {
            block.push_str(t);
            block.push(' ');
        }
    }
    c.sentences += sentences(&block);
    c
}

/// Sentences in one block of prose.
fn sentences(block: &str) -> usize {
    let chars: Vec<char> = block.chars().collect();
    let mut count = 0;
    let mut content = false;
    let mut i = 0;
    while i < chars.len() {
        let ch = chars[i];
        if ch.is_alphanumeric() {
            content = true;
        }
        if matches!(ch, '.' | '!' | '?' | '…') {
            let mut j = i + 1;
            while j < chars.len()
                && matches!(
                    chars[j],
                    '.' | '!' | '?' | '…' | '"' | '\'' | ')' | '”' | '’'
                )
            {
                j += 1;
            }
            let at_break = j >= chars.len() || chars[j].is_whitespace();
            if at_break && content && !(ch == '.' && abbreviation_before(&chars, i, j)) {
                count += 1;
                content = false;
            }
            i = j;
            continue;
        }
        i += 1;
    }
    count + usize::from(content)
}

/// Whether the `.` at `dot` ends an abbreviation or an initial rather than a sentence.
fn abbreviation_before(chars: &[char], dot: usize, after: usize) -> bool {
    // A sentence still ends here if nothing follows.
    let next_word: String = chars[after..]
        .iter()
        .skip_while(|c| c.is_whitespace())
        .take_while(|c| !c.is_whitespace())
        .collect();
    if next_word.is_empty() {
        return false;
    }
    let start = chars[..dot]
        .iter()
        .rposition(|c| c.is_whitespace() || *c == '(')
        .map_or(0, |p| p + 1);
    let word: String = chars[start..dot].iter().collect::<String>().to_lowercase();
    if word.chars().count() == 1 && word.chars().all(char::is_alphabetic) {
        return true; // an initial: "J. Smith"
    }
    ABBREVIATIONS.contains(&word.as_str())
        && !next_word.chars().next().is_some_and(char::is_uppercase)
        || matches!(
            word.as_str(),
            "mr" | "mrs" | "ms" | "dr" | "prof" | "e.g" | "i.e"
        )
}

/// Where an action item was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An unchecked Markdown checkbox, `- [ ] ...`.
    Checkbox,
    /// `TODO`, `FIXME`.
    Todo,
    /// `Action:`, `Action item:`, `Follow-up:`, `Next step:`.
    Action,
    /// `@name will ...`.
    Mention,
    /// `Name will ...` or `Name to ...`.
    Assignment,
    /// `Please ...`.
    Request,
}

/// An action item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionItem {
    /// What is to be done.
    pub text: String,
    /// 1-based line number.
    pub line: usize,
    /// Who is to do it, if the text says.
    pub owner: Option<String>,
    /// The due date as written, if the text gives one.
    pub due: Option<String>,
    /// The due date, when it can be determined.
    pub due_date: Option<Date>,
    /// What marked it.
    pub source: Source,
}

const MARKERS: &[(&str, Source)] = &[
    ("action items", Source::Action),
    ("action item", Source::Action),
    ("action", Source::Action),
    ("follow-up", Source::Action),
    ("follow up", Source::Action),
    ("next steps", Source::Action),
    ("next step", Source::Action),
    ("to do", Source::Todo),
    ("to-do", Source::Todo),
];

const NOT_NAMES: &[&str] = &[
    "i",
    "we",
    "you",
    "he",
    "she",
    "it",
    "they",
    "this",
    "that",
    "these",
    "those",
    "there",
    "the",
    "a",
    "an",
    "who",
    "what",
    "which",
    "if",
    "when",
    "then",
    "everyone",
    "nobody",
    "someone",
    "it'll",
    "that'll",
    "there'll",
    "one",
    "each",
    "all",
    "team",
    "today",
    "tomorrow",
    "next",
    "also",
    "and",
    "but",
    "or",
    "so",
    "our",
    "my",
    "your",
    "their",
    "his",
    "her",
    "its",
    "time",
    "more",
    "nothing",
    "something",
    "anything",
    "everything",
    "everybody",
    "anybody",
    "somebody",
    "nobody",
    "here",
    "now",
    "how",
    "why",
    "where",
    "plan",
    "plans",
    "goal",
    "goals",
    "need",
    "needs",
    "want",
    "wants",
    "aim",
    "way",
    "hope",
    "easy",
    "hard",
    "good",
    "great",
    "nice",
    "important",
    "remember",
    "note",
    "try",
    "going",
    "able",
    "ready",
    "happy",
    "glad",
    "sorry",
    "sure",
    "first",
    "second",
    "finally",
    "later",
    "soon",
    "customers",
    "users",
    "people",
    "management",
    "nothing's",
    "time's",
    "hard",
    "decision",
    "agreed",
    "decided",
    "remains",
    "still",
];

/// Strips a list marker (`- `, `* `, `+ `, `1. `, `1) `).
fn strip_list_marker(t: &str) -> &str {
    for m in ["- ", "* ", "+ ", "• "] {
        if let Some(rest) = t.strip_prefix(m) {
            return rest.trim_start();
        }
    }
    let digits = t.chars().take_while(char::is_ascii_digit).count();
    if digits > 0 && (t[digits..].starts_with(". ") || t[digits..].starts_with(") ")) {
        return t[digits + 2..].trim_start();
    }
    t
}

/// `prefix` at the start of `t` (ignoring case), followed by `:` or ` -`: the rest.
fn after_marker<'a>(t: &'a str, prefix: &str) -> Option<&'a str> {
    let head = t.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = &t[prefix.len()..];
    let rest = rest
        .strip_prefix(':')
        .or_else(|| rest.strip_prefix(" -"))
        .or_else(|| rest.strip_prefix(" –"))
        .or_else(|| rest.strip_prefix(" :"))?;
    Some(rest.trim())
}

/// The action items of a document.
pub fn action_items(text: &str, today: Option<Date>) -> Vec<ActionItem> {
    let mut out = Vec::new();
    for (line_no, line) in prose_lines(text) {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        let body = strip_list_marker(t);
        let marked =
            if let Some(rest) = body.strip_prefix("[ ]").or_else(|| body.strip_prefix("[]")) {
                Some((rest.trim(), Source::Checkbox))
            } else if body.starts_with("[x]") || body.starts_with("[X]") {
                None // done
            } else if let Some(pos) = t.find("TODO").or_else(|| t.find("FIXME")) {
                let rest = &t[pos..];
                let rest = rest.trim_start_matches(|c: char| c.is_ascii_uppercase());
                let rest = rest.trim_start_matches([':', '-', '–', ' ', '(', ')']);
                Some((rest.trim(), Source::Todo))
            } else {
                MARKERS
                    .iter()
                    .find_map(|(m, source)| after_marker(body, m).map(|rest| (rest, *source)))
                    .or_else(|| {
                        after_marker(body, "AI")
                            .filter(|_| body.starts_with("AI"))
                            .map(|r| (r, Source::Action))
                    })
            };
        if let Some((item, source)) = marked {
            if !item.is_empty() {
                let owner = sentence_action(item).and_then(|(_, owner)| owner);
                out.push(item_from(item, line_no, source, owner, today));
            }
            continue;
        }
        for sentence in split_sentences(body) {
            if let Some((source, owner)) = sentence_action(sentence) {
                out.push(item_from(sentence, line_no, source, owner, today));
            }
        }
    }
    out
}

fn split_sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    for (i, c) in text.char_indices() {
        if matches!(c, '.' | '!' | '?' | ';') && bytes.get(i + 1).is_none_or(|b| *b == b' ') {
            let s = text[start..=i].trim();
            if !s.is_empty() {
                out.push(s);
            }
            start = i + 1;
        }
    }
    let s = text[start..].trim();
    if !s.is_empty() {
        out.push(s);
    }
    out
}

fn is_name(word: &str) -> bool {
    let w = word.trim_matches(|c: char| !c.is_alphanumeric());
    w.chars().next().is_some_and(char::is_uppercase)
        && w.chars()
            .all(|c| c.is_alphabetic() || c == '-' || c == '\'')
        && !NOT_NAMES.contains(&w.to_lowercase().as_str())
}

/// Whether a sentence asks someone to do something: (source, owner).
fn sentence_action(s: &str) -> Option<(Source, Option<String>)> {
    let words: Vec<&str> = s.split_whitespace().collect();
    let lower: Vec<String> = words
        .iter()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric() && c != '@')
                .to_lowercase()
        })
        .collect();
    // @name will / @name to / @name: / @name please
    if let Some(k) = words.iter().position(|w| w.starts_with('@') && w.len() > 1) {
        let name = words[k]
            .trim_start_matches('@')
            .trim_end_matches(|c: char| !c.is_alphanumeric());
        let next = lower.get(k + 1).map(String::as_str);
        let addressed = words[k].ends_with(':') || words[k].ends_with(',') || k == 0;
        if addressed
            || matches!(
                next,
                Some("will" | "to" | "should" | "please" | "can" | "must")
            )
        {
            return Some((Source::Mention, Some(name.to_owned())));
        }
    }
    // Please ... / Name, please ...
    if let Some(k) = lower.iter().position(|w| w == "please") {
        let owner = (k > 0 && words[k - 1].ends_with(',') && k <= 2)
            .then(|| words[..k].join(" ").trim_end_matches(',').to_owned())
            .filter(|o| o.split_whitespace().all(is_name));
        if k == 0 || owner.is_some() || lower.get(k - 1).is_some_and(|w| w == "can" || w == "could")
        {
            return Some((Source::Request, owner));
        }
    }
    // Name [Name] will|to|shall <verb>
    for n in 1..=2usize {
        if words.len() > n + 1
            && words[..n].iter().all(|w| is_name(w))
            && matches!(lower[n].as_str(), "will" | "to" | "shall")
            && lower[n + 1].chars().all(char::is_alphabetic)
            && !matches!(lower[n + 1].as_str(), "be" | "have" | "the" | "a")
        {
            let owner = words[..n].join(" ");
            return Some((Source::Assignment, Some(owner)));
        }
    }
    None
}

/// Builds an item: explicit owner hints, and the due date.
fn item_from(
    text: &str,
    line: usize,
    source: Source,
    owner: Option<String>,
    today: Option<Date>,
) -> ActionItem {
    let owner = explicit_owner(text).or(owner);
    let (due, due_date) = due_hint(text, today);
    ActionItem {
        text: text.trim().to_owned(),
        line,
        owner,
        due,
        due_date,
        source,
    }
}

/// `@anna`, `owner: Anna`, `assigned to Anna`, `(Anna)` at the end.
fn explicit_owner(text: &str) -> Option<String> {
    let lower = text.to_lowercase();
    for key in ["owner:", "assignee:", "assigned to", "responsible:"] {
        if let Some(p) = lower.find(key) {
            let rest = text[p + key.len()..].trim_start();
            let name: Vec<&str> = rest
                .split_whitespace()
                .take(2)
                .map(|w| w.trim_end_matches(|c: char| !c.is_alphanumeric()))
                .take_while(|w| is_name(w) || w.starts_with('@'))
                .collect();
            if !name.is_empty() {
                return Some(name.join(" ").trim_start_matches('@').to_owned());
            }
        }
    }
    let at = text
        .split_whitespace()
        .find(|w| w.starts_with('@') && w.len() > 1)?;
    Some(
        at.trim_start_matches('@')
            .trim_end_matches(|c: char| !c.is_alphanumeric())
            .to_owned(),
    )
    .filter(|s| !s.is_empty())
}

/// The due date: the first date after `by`, `before`, `due`, `until` or `deadline`,
/// else the first date in the item; `EOD`, `end of day`, `end of (the) week` too.
fn due_hint(text: &str, today: Option<Date>) -> (Option<String>, Option<Date>) {
    let found = dates::find_in_line(text, today);
    let lower = text.to_lowercase();
    let after_keyword = found.iter().find(|f| {
        let before = lower[..f.start].trim_end();
        [
            "by",
            "before",
            "due",
            "until",
            "deadline",
            "deadline:",
            "due:",
            "no later than",
            "on",
        ]
        .iter()
        .any(|k| before.ends_with(k))
    });
    if let Some(f) = after_keyword.or(found.first()) {
        return (Some(f.text.clone()), f.date);
    }
    for (phrase, days_from_today) in [
        ("eod", Some(0)),
        ("end of day", Some(0)),
        ("end of the day", Some(0)),
        ("end of week", None),
        ("end of the week", None),
        ("eow", None),
    ] {
        let hit = lower.match_indices(phrase).find(|(p, _)| {
            let before_ok = *p == 0 || !lower.as_bytes()[p - 1].is_ascii_alphanumeric();
            let end = p + phrase.len();
            before_ok
                && lower
                    .as_bytes()
                    .get(end)
                    .is_none_or(|b| !b.is_ascii_alphanumeric())
        });
        if let Some((p, _)) = hit {
            let date = today.map(|t| match days_from_today {
                Some(d) => t.add_days(d),
                // Friday of this week (or today, at the weekend).
                None => t.add_days((4 - i64::from(t.weekday())).max(0)),
            });
            return (Some(text[p..p + phrase.len()].to_owned()), date);
        }
    }
    (None, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heads(text: &str) -> Vec<(u32, String, Style)> {
        outline(text)
            .into_iter()
            .map(|h| (h.level, h.text, h.style))
            .collect()
    }

    #[test]
    fn markdown_headings() {
        let doc = "# Title\n\nIntro.\n\n## Part one ##\ntext\n###No space is not a heading\n#######  too deep\n```\n# code\n```\n    # indented code\n### Three";
        assert_eq!(
            heads(doc),
            [
                (1, "Title".into(), Style::Markdown),
                (2, "Part one".into(), Style::Markdown),
                (3, "Three".into(), Style::Markdown)
            ]
        );
        assert_eq!(outline(doc)[2].line, 13);
    }

    #[test]
    fn underlined_headings() {
        let doc = "Report\n======\n\nSummary\n-------\nText here.\n\n---\n\n- item\n---\n";
        assert_eq!(
            heads(doc),
            [
                (1, "Report".into(), Style::Underlined),
                (2, "Summary".into(), Style::Underlined)
            ]
        );
    }

    #[test]
    fn numbered_headings_but_not_lists() {
        let doc = "1. Introduction\nSome text.\n\n1.1 Scope\n\n2. Results\n\nSteps:\n1. Buy milk\n2. Call Anna\n\n2.1.3 Deep Detail\n3. this is lowercase\n4. A sentence that ends.\n2027 Budget\n";
        let h = outline(doc);
        let got: Vec<(u32, &str, Option<&str>)> = h
            .iter()
            .map(|h| (h.level, h.text.as_str(), h.number.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (1, "Introduction", Some("1")),
                (2, "Scope", Some("1.1")),
                (1, "Results", Some("2")),
                (3, "Deep Detail", Some("2.1.3"))
            ]
        );
    }

    #[test]
    fn counts_words_sentences_paragraphs() {
        let c =
            counts("Hello world. This is Dr. Smith, e.g. a test!\n\nSecond paragraph - no stop\n");
        assert_eq!(c.words, 13);
        assert_eq!(c.sentences, 3);
        assert_eq!(c.paragraphs, 2);
        let c = counts("# Title\n- one\n- two\n\nIt costs 3.50 dollars... really? Yes.");
        assert_eq!(c.sentences, 6);
        assert_eq!(c.paragraphs, 2);
        assert_eq!(counts(""), Counts::default());
        let c = counts("   \n\n  ");
        assert_eq!((c.words, c.sentences, c.paragraphs), (0, 0, 0));
        assert_eq!(counts("J. R. R. Tolkien wrote books.").sentences, 1);
        assert_eq!(counts("Élan vital. Ça va?").sentences, 2);
    }

    fn items(text: &str) -> Vec<ActionItem> {
        action_items(text, Date::parse_iso("2027-03-12"))
    }

    #[test]
    fn finds_marked_items() {
        let doc = "Notes\n- [ ] Send the deck to Anna by Friday\n- [x] Book room\nTODO: fix the budget table\n// FIXME handle errors\nAction: Bo to call the supplier before 2027-03-20\nAction items:\nNext step - draft the contract (owner: Cy)\n";
        let got = items(doc);
        let texts: Vec<&str> = got.iter().map(|i| i.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "Send the deck to Anna by Friday",
                "fix the budget table",
                "handle errors",
                "Bo to call the supplier before 2027-03-20",
                "draft the contract (owner: Cy)"
            ]
        );
        assert_eq!(got[0].source, Source::Checkbox);
        assert_eq!(got[0].due.as_deref(), Some("Friday"));
        assert_eq!(got[0].due_date, Date::parse_iso("2027-03-12"));
        assert_eq!(got[0].line, 2);
        assert_eq!(got[3].due_date, Date::parse_iso("2027-03-20"));
        assert_eq!(got[3].owner.as_deref(), Some("Bo"));
        assert_eq!(got[4].owner.as_deref(), Some("Cy"));
    }

    #[test]
    fn finds_items_in_prose() {
        let doc = "We met on Tuesday. Anna will send the minutes by Monday. It will rain.\n@bo to review the draft tomorrow. Please update the forecast by EOD.\nTom, please book the flights. Maria Lopez to follow up with legal next week. The team will be there.";
        let got = items(doc);
        let summary: Vec<(&str, Option<&str>, Option<String>)> = got
            .iter()
            .map(|i| {
                (
                    i.text.as_str(),
                    i.owner.as_deref(),
                    i.due_date.map(|d| d.to_string()),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "Anna will send the minutes by Monday.",
                    Some("Anna"),
                    Some("2027-03-15".into())
                ),
                (
                    "@bo to review the draft tomorrow.",
                    Some("bo"),
                    Some("2027-03-13".into())
                ),
                (
                    "Please update the forecast by EOD.",
                    None,
                    Some("2027-03-12".into())
                ),
                ("Tom, please book the flights.", Some("Tom"), None),
                (
                    "Maria Lopez to follow up with legal next week.",
                    Some("Maria Lopez"),
                    Some("2027-03-15".into())
                ),
            ]
        );
    }

    #[test]
    fn ignores_code_and_plain_text() {
        assert!(
            items("```\nTODO: not this\n```\nJust a sentence. Nothing to do here.\n").is_empty()
        );
        assert!(items("").is_empty());
        assert!(items("Something to think about. Here to stay. Nice to have.").is_empty());
    }
}
