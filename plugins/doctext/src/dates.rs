//! Finding dates in text and normalising them to ISO 8601 (`YYYY-MM-DD`).
//!
//! Absolute forms: `2027-03-12`, `12 March 2027`, `12th of March`, `March 12, 2027`,
//! `Mar 12th`, `12/03/2027` (day-first or month-first only when unambiguous). Relative
//! forms, resolved against `today` when given: `today`, `tomorrow`, `yesterday`, `the day
//! after tomorrow`, weekdays (`Friday`, `this Friday`, `next Tuesday`, `last Monday`),
//! `in 3 days`, `in two weeks`, `next week`.

use std::fmt;

/// A calendar date (proleptic Gregorian).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    /// Year.
    pub year: i32,
    /// Month, 1–12.
    pub month: u32,
    /// Day, 1–31.
    pub day: u32,
}

impl Date {
    /// The date if it exists.
    pub fn new(year: i32, month: u32, day: u32) -> Option<Date> {
        ((1..=12).contains(&month)
            && day >= 1
            && day <= days_in_month(year, month)
            && (1..=9999).contains(&year))
        .then_some(Date { year, month, day })
    }

    /// Parses `YYYY-MM-DD`.
    pub fn parse_iso(s: &str) -> Option<Date> {
        let b = s.trim().as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let digits = |r: std::ops::Range<usize>| -> Option<u32> {
            let part = &b[r];
            if part.iter().all(u8::is_ascii_digit) {
                std::str::from_utf8(part).ok()?.parse().ok()
            } else {
                None
            }
        };
        Date::new(digits(0..4)? as i32, digits(5..7)?, digits(8..10)?)
    }

    /// Days since 1970-01-01.
    pub fn to_days(self) -> i64 {
        // Howard Hinnant's days_from_civil.
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(self.month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// The date `days` after 1970-01-01.
    pub fn from_days(days: i64) -> Date {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        Date { year, month, day }
    }

    /// This date plus `n` days.
    pub fn add_days(self, n: i64) -> Date {
        Date::from_days(self.to_days() + n)
    }

    /// 0 = Monday … 6 = Sunday.
    pub fn weekday(self) -> u32 {
        // 1970-01-01 was a Thursday (3).
        (self.to_days() + 3).rem_euclid(7) as u32
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    }
}

/// How a found date was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A calendar date (possibly without its year).
    Absolute,
    /// Relative to today.
    Relative,
    /// Numeric with day and month order unknown, e.g. `03/04/2027`.
    Ambiguous,
}

/// One date found in a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The text as written.
    pub text: String,
    /// Byte range in the line.
    pub start: usize,
    /// End of the byte range.
    pub end: usize,
    /// The date, when it can be determined.
    pub date: Option<Date>,
    /// How it was written.
    pub kind: Kind,
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

const WEEKDAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// A word of the line: a run of letters and digits, with its byte range.
#[derive(Debug, Clone, Copy)]
struct Word<'a> {
    text: &'a str,
    start: usize,
    end: usize,
}

fn words(line: &str) -> Vec<Word<'_>> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices() {
        if c.is_alphanumeric() {
            start.get_or_insert(i);
        } else if let Some(s) = start.take() {
            out.push(Word {
                text: &line[s..i],
                start: s,
                end: i,
            });
        }
    }
    if let Some(s) = start {
        out.push(Word {
            text: &line[s..],
            start: s,
            end: line.len(),
        });
    }
    out
}

/// The month a word names: full names in any case; abbreviations (`Mar`, `Sept`) and the
/// words that are also common English (`May`, `March`) only when capitalised.
fn month(word: &str) -> Option<u32> {
    let lower = word.to_lowercase();
    let capitalised = word.chars().next().is_some_and(char::is_uppercase);
    if let Some(i) = MONTHS.iter().position(|m| *m == lower) {
        if matches!(lower.as_str(), "may" | "march") && !capitalised {
            return None;
        }
        return Some(i as u32 + 1);
    }
    if !capitalised || lower.len() < 3 {
        return None;
    }
    if lower == "sept" {
        return Some(9);
    }
    if lower.len() == 3 {
        return MONTHS
            .iter()
            .position(|m| m.starts_with(&lower))
            .map(|i| i as u32 + 1);
    }
    None
}

fn weekday(word: &str) -> Option<u32> {
    let lower = word.to_lowercase();
    WEEKDAYS.iter().position(|d| *d == lower).map(|i| i as u32)
}

/// A day of the month: `12`, `12th`, `1st`.
fn day_number(word: &str) -> Option<u32> {
    let digits: String = word.chars().take_while(char::is_ascii_digit).collect();
    let suffix = &word[digits.len()..];
    if digits.is_empty() || digits.len() > 2 {
        return None;
    }
    if !matches!(
        suffix.to_lowercase().as_str(),
        "" | "st" | "nd" | "rd" | "th"
    ) {
        return None;
    }
    digits.parse().ok().filter(|d| (1..=31).contains(d))
}

fn year_number(word: &str) -> Option<i32> {
    (word.len() == 4 && word.bytes().all(|b| b.is_ascii_digit()))
        .then(|| word.parse().ok())
        .flatten()
        .filter(|y| (1000..=9999).contains(y))
}

fn small_number(word: &str) -> Option<i64> {
    const NUMBERS: [&str; 13] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve",
    ];
    let lower = word.to_lowercase();
    if matches!(lower.as_str(), "a" | "an") {
        return Some(1);
    }
    if let Some(i) = NUMBERS.iter().position(|n| *n == lower) {
        return Some(i as i64);
    }
    lower.parse().ok().filter(|n| (0..=366).contains(n))
}

/// Whether only spaces and the given punctuation separate two words.
fn gap_is(line: &str, a: &Word<'_>, b: &Word<'_>, allowed: &[char]) -> bool {
    line[a.end..b.start]
        .chars()
        .all(|c| c == ' ' || allowed.contains(&c))
}

/// The year for a day and month written without one: the year of `today`, unless that
/// date is more than six months past, in which case next year.
fn infer_year(month: u32, day: u32, today: Option<Date>) -> Option<Date> {
    let today = today?;
    let this_year = Date::new(today.year, month, day)?;
    if today.to_days() - this_year.to_days() > 183 {
        Date::new(today.year + 1, month, day)
    } else {
        Some(this_year)
    }
}

/// Finds the dates in one line, left to right, without overlaps.
pub fn find_in_line(line: &str, today: Option<Date>) -> Vec<Found> {
    let mut found = numeric_dates(line);
    let ws = words(line);
    let mut i = 0;
    while i < ws.len() {
        if found
            .iter()
            .any(|f| ws[i].start < f.end && ws[i].end > f.start)
        {
            i += 1;
            continue;
        }
        if let Some((used, date, kind)) = word_date(line, &ws[i..], today) {
            let start = ws[i].start;
            let end = ws[i + used - 1].end;
            found.push(Found {
                text: line[start..end].to_owned(),
                start,
                end,
                date,
                kind,
            });
            i += used;
        } else {
            i += 1;
        }
    }
    found.sort_by_key(|f| f.start);
    absorb_weekdays(line, &mut found);
    found
}

/// `Tuesday, 12 March 2027`: a weekday right before a calendar date belongs to it.
fn absorb_weekdays(line: &str, found: &mut Vec<Found>) {
    let mut i = 0;
    while i + 1 < found.len() {
        let (a, b) = (&found[i], &found[i + 1]);
        let joined = a.kind == Kind::Relative
            && weekday(&a.text).is_some()
            && b.kind != Kind::Relative
            && line[a.end..b.start].chars().all(|c| c == ' ' || c == ',');
        if joined {
            let start = a.start;
            let b = found.remove(i + 1);
            found[i] = Found {
                text: line[start..b.end].to_owned(),
                start,
                ..b
            };
        }
        i += 1;
    }
}

/// ISO `YYYY-MM-DD` and numeric `D/M/YYYY`, `M/D/YYYY`, `D.M.YYYY`.
fn numeric_dates(line: &str) -> Vec<Found> {
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() || (i > 0 && (b[i - 1].is_ascii_alphanumeric())) {
            i += 1;
            continue;
        }
        let run = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
        let n1 = run(i);
        // ISO
        if n1 == 4 && b.get(i + 4) == Some(&b'-') && run(i + 5) == 2 && b.get(i + 7) == Some(&b'-')
        {
            let end = i + 8 + run(i + 8);
            if end - (i + 8) == 2 && !b.get(end).is_some_and(u8::is_ascii_alphanumeric) {
                if let Some(d) = Date::parse_iso(&line[i..end]) {
                    out.push(Found {
                        text: line[i..end].to_owned(),
                        start: i,
                        end,
                        date: Some(d),
                        kind: Kind::Absolute,
                    });
                }
                i = end;
                continue;
            }
        }
        // D/M/Y or M/D/Y (also with dots), 4-digit year.
        if (1..=2).contains(&n1) {
            let sep = b.get(i + n1).copied();
            if matches!(sep, Some(b'/') | Some(b'.')) {
                let j = i + n1 + 1;
                let n2 = run(j);
                if (1..=2).contains(&n2) && b.get(j + n2).copied() == sep {
                    let k = j + n2 + 1;
                    let n3 = run(k);
                    let end = k + n3;
                    if n3 == 4 && !b.get(end).is_some_and(u8::is_ascii_alphanumeric) {
                        let p = |r: std::ops::Range<usize>| line[r].parse::<u32>().unwrap_or(0);
                        let (x, y, year) = (p(i..i + n1), p(j..j + n2), p(k..end) as i32);
                        let day_first = Date::new(year, y, x);
                        let month_first = Date::new(year, x, y);
                        let (date, kind) = match (day_first, month_first) {
                            (Some(a), Some(b)) if a == b => (Some(a), Kind::Absolute),
                            (Some(_), Some(_)) => (None, Kind::Ambiguous),
                            // Dots are day-first by convention (12.03.2027).
                            (Some(a), None) => (Some(a), Kind::Absolute),
                            (None, Some(b)) if sep == Some(b'/') => (Some(b), Kind::Absolute),
                            _ => {
                                i = end;
                                continue;
                            }
                        };
                        let (date, kind) = if sep == Some(b'.') && kind == Kind::Ambiguous {
                            (day_first, Kind::Absolute)
                        } else {
                            (date, kind)
                        };
                        out.push(Found {
                            text: line[i..end].to_owned(),
                            start: i,
                            end,
                            date,
                            kind,
                        });
                        i = end;
                        continue;
                    }
                }
            }
        }
        i += n1;
    }
    out
}

/// Tries the word patterns at the start of `ws`: (words used, date, kind).
fn word_date(
    line: &str,
    ws: &[Word<'_>],
    today: Option<Date>,
) -> Option<(usize, Option<Date>, Kind)> {
    let lower = |k: usize| ws.get(k).map(|w| w.text.to_lowercase());
    let adjacent = |a: usize, b: usize, allowed: &[char]| {
        ws.get(b)
            .is_some_and(|wb| gap_is(line, &ws[a], wb, allowed))
    };
    let w0 = lower(0)?;

    // D [of] Month [Year]
    if let Some(day) = day_number(ws[0].text) {
        let (m_at, of) = if lower(1).as_deref() == Some("of") && adjacent(0, 1, &[]) {
            (2, true)
        } else {
            (1, false)
        };
        if (adjacent(m_at - 1, m_at, &['.', ',']) || (of && adjacent(1, 2, &[])))
            && let Some(m) = ws.get(m_at).and_then(|w| month(w.text))
        {
            if let Some(y) = ws
                .get(m_at + 1)
                .and_then(|w| year_number(w.text))
                .filter(|_| adjacent(m_at, m_at + 1, &[',', '.']))
            {
                return Some((m_at + 2, Date::new(y, m, day), Kind::Absolute));
            }
            return Some((m_at + 1, infer_year(m, day, today), Kind::Absolute));
        }
    }

    // Month D[th] [, Year]
    if let Some(m) = month(ws[0].text)
        && adjacent(0, 1, &['.'])
        && let Some(day) = ws.get(1).and_then(|w| day_number(w.text))
    {
        if let Some(y) = ws
            .get(2)
            .and_then(|w| year_number(w.text))
            .filter(|_| adjacent(1, 2, &[',']))
        {
            return Some((3, Date::new(y, m, day), Kind::Absolute));
        }
        return Some((2, infer_year(m, day, today), Kind::Absolute));
    }

    let rel = |n: i64| today.map(|t| t.add_days(n));
    match w0.as_str() {
        "today" | "tonight" => return Some((1, rel(0), Kind::Relative)),
        "tomorrow" => return Some((1, rel(1), Kind::Relative)),
        "yesterday" => return Some((1, rel(-1), Kind::Relative)),
        "day"
            if lower(1).as_deref() == Some("after")
                && lower(2).as_deref() == Some("tomorrow")
                && adjacent(0, 1, &[])
                && adjacent(1, 2, &[]) =>
        {
            return Some((3, rel(2), Kind::Relative));
        }
        "next" | "this" | "last" | "coming" if adjacent(0, 1, &[]) => {
            if let Some(wd) = ws.get(1).and_then(|w| weekday(w.text)) {
                let date = today.map(|t| match w0.as_str() {
                    "next" => {
                        // The weekday in next week (weeks start on Monday).
                        let monday_next = t.add_days(7 - i64::from(t.weekday()));
                        monday_next.add_days(i64::from(wd))
                    }
                    "last" => {
                        let back = (i64::from(t.weekday()) - i64::from(wd) + 6).rem_euclid(7) + 1;
                        t.add_days(-back)
                    }
                    _ => t.add_days((i64::from(wd) - i64::from(t.weekday())).rem_euclid(7)),
                });
                return Some((2, date, Kind::Relative));
            }
            if w0 == "next" && lower(1).as_deref() == Some("week") {
                let date = today.map(|t| t.add_days(7 - i64::from(t.weekday())));
                return Some((2, date, Kind::Relative));
            }
        }
        "in" if adjacent(0, 1, &[]) && adjacent(1, 2, &[]) => {
            if let (Some(n), Some(unit)) = (ws.get(1).and_then(|w| small_number(w.text)), lower(2))
            {
                let days = match unit.as_str() {
                    "day" | "days" => Some(n),
                    "week" | "weeks" => Some(n * 7),
                    _ => None,
                };
                if let Some(days) = days {
                    return Some((3, rel(days), Kind::Relative));
                }
            }
        }
        _ => {}
    }
    if let Some(wd) = weekday(ws[0].text) {
        // A bare weekday: the next one on or after today.
        let date =
            today.map(|t| t.add_days((i64::from(wd) - i64::from(t.weekday())).rem_euclid(7)));
        return Some((1, date, Kind::Relative));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Date {
        Date::parse_iso(s).unwrap()
    }

    /// A Friday.
    fn today() -> Option<Date> {
        Some(d("2027-03-12"))
    }

    fn find(line: &str) -> Vec<(String, Option<String>)> {
        find_in_line(line, today())
            .into_iter()
            .map(|f| (f.text, f.date.map(|d| d.to_string())))
            .collect()
    }

    fn one(line: &str) -> Option<String> {
        let f = find(line);
        assert_eq!(f.len(), 1, "{line}: {f:?}");
        f[0].1.clone()
    }

    #[test]
    fn calendar_arithmetic() {
        assert_eq!(d("1970-01-01").to_days(), 0);
        assert_eq!(Date::from_days(0), d("1970-01-01"));
        for s in [
            "2000-02-29",
            "2027-03-12",
            "1999-12-31",
            "2400-02-29",
            "1601-01-01",
        ] {
            assert_eq!(Date::from_days(d(s).to_days()), d(s));
        }
        assert_eq!(d("2027-03-12").weekday(), 4);
        assert_eq!(d("2027-12-31").add_days(1), d("2028-01-01"));
        assert_eq!(Date::new(2027, 2, 29), None);
        assert_eq!(Date::parse_iso("2027-3-12"), None);
    }

    #[test]
    fn absolute_dates() {
        assert_eq!(one("due 2027-04-01."), Some("2027-04-01".into()));
        assert_eq!(one("on 12 March 2027 we"), Some("2027-03-12".into()));
        assert_eq!(one("the 3rd of April, 2028"), Some("2028-04-03".into()));
        assert_eq!(one("March 12, 2027"), Some("2027-03-12".into()));
        assert_eq!(one("Mar 5th"), Some("2027-03-05".into()));
        assert_eq!(one("by Sept. 30"), Some("2027-09-30".into()));
        assert_eq!(one("12 Dec"), Some("2027-12-12".into()));
        // More than six months past: next year.
        assert_eq!(one("January 5"), Some("2027-01-05".into()));
        assert_eq!(one("15 August"), Some("2027-08-15".into()));
        assert_eq!(
            find_in_line("on 1 March", Some(d("2027-12-20")))[0].date,
            Some(d("2028-03-01"))
        );
        assert_eq!(one("31/12/2027"), Some("2027-12-31".into()));
        assert_eq!(one("12/31/2027"), Some("2027-12-31".into()));
        assert_eq!(one("12.03.2027"), Some("2027-03-12".into()));
        let f = find_in_line("03/04/2027", today());
        assert_eq!((f[0].date, f[0].kind), (None, Kind::Ambiguous));
        assert_eq!(one("Tuesday, 16 March 2027"), Some("2027-03-16".into()));
        assert_eq!(
            find("Tuesday, 16 March 2027")[0].0,
            "Tuesday, 16 March 2027"
        );
    }

    #[test]
    fn not_dates() {
        for line in [
            "we may 3 times",
            "version 2027-13-45",
            "march 4 soldiers",
            "30 February 2027 is not real",
            "room 12 on floor 3",
            "call 555-1234",
            "ids 12/45/2027 and 1.2.3",
            "a2027-03-12",
        ] {
            let f = find_in_line(line, today());
            assert!(
                f.iter()
                    .all(|f| f.date.is_none() || f.kind != Kind::Absolute),
                "{line}: {f:?}"
            );
        }
        assert!(find("30 February 2027")[0].1.is_none());
    }

    #[test]
    fn relative_dates() {
        assert_eq!(one("do it today"), Some("2027-03-12".into()));
        assert_eq!(one("Tomorrow!"), Some("2027-03-13".into()));
        assert_eq!(one("yesterday"), Some("2027-03-11".into()));
        assert_eq!(one("the day after tomorrow"), Some("2027-03-14".into()));
        // Today is Friday 2027-03-12.
        assert_eq!(one("on Friday"), Some("2027-03-12".into()));
        assert_eq!(one("by Monday"), Some("2027-03-15".into()));
        assert_eq!(one("this Sunday"), Some("2027-03-14".into()));
        assert_eq!(one("next Tuesday"), Some("2027-03-16".into()));
        assert_eq!(one("next Friday"), Some("2027-03-19".into()));
        assert_eq!(one("last Friday"), Some("2027-03-05".into()));
        assert_eq!(one("last Thursday"), Some("2027-03-11".into()));
        assert_eq!(one("in 3 days"), Some("2027-03-15".into()));
        assert_eq!(one("in two weeks"), Some("2027-03-26".into()));
        assert_eq!(one("in a week"), Some("2027-03-19".into()));
        assert_eq!(one("next week"), Some("2027-03-15".into()));
        // On a Monday, "next Tuesday" is the Tuesday of next week, not tomorrow.
        let monday = Some(d("2027-03-08"));
        assert_eq!(
            find_in_line("next Tuesday", monday)[0].date,
            Some(d("2027-03-16"))
        );
        // Without today, relative dates are found but not resolved.
        let f = find_in_line("tomorrow or 12 March", None);
        assert_eq!(f.len(), 2);
        assert!(f.iter().all(|f| f.date.is_none()));
    }

    #[test]
    fn several_in_a_line_in_order() {
        let f = find("Kickoff 2027-03-15, review next Tuesday and ship by 1 April 2027.");
        let texts: Vec<&str> = f.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(texts, ["2027-03-15", "next Tuesday", "1 April 2027"]);
    }
}
