//! Lexical evidence for tool retrieval: BM25 over each tool's name, description and
//! examples.
//!
//! Why: all-MiniLM places "sort the rows", "filter the rows" and "sum the rows" close
//! together (they share most of their words and all of their topic), and "delete task 5"
//! close to "complete task 5". The verb that tells them apart is a rare word in the tools'
//! texts, which is exactly what BM25's inverse document frequency rewards. The two
//! scores are added (see `IndexOptions::lexical_weight`), so lexical evidence breaks
//! semantic near-ties without overriding a clear semantic match.

use std::collections::{BTreeSet, HashMap};

/// BM25's term-frequency saturation: the usual value.
const K1: f32 = 1.2;
/// BM25's document-length normalisation: the usual value.
const B: f32 = 0.75;

/// Words too common to say anything about which tool is meant.
const STOPWORDS: &[&str] = &[
    "a", "about", "after", "again", "all", "also", "am", "an", "and", "any", "are", "as", "at",
    "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "can",
    "could", "did", "do", "does", "doing", "down", "during", "each", "few", "for", "from",
    "further", "had", "has", "have", "having", "he", "her", "here", "hers", "him", "his", "how",
    "i", "if", "in", "into", "is", "it", "its", "itself", "just", "let", "me", "more", "most",
    "my", "myself", "no", "nor", "not", "now", "of", "off", "on", "once", "only", "or", "other",
    "our", "ours", "out", "over", "own", "please", "same", "she", "should", "so", "some", "such",
    "than", "that", "the", "their", "theirs", "them", "then", "there", "these", "they", "this",
    "those", "through", "to", "too", "under", "until", "up", "us", "very", "was", "we", "were",
    "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with", "would",
    "you", "your", "yours", "yourself",
];

/// The words of `text` that carry meaning, lower-cased and reduced to a rough stem:
/// hyphenated words joined ("to-do" is "todo", not two stopwords), words with digits
/// dropped (ids, numbers and dates say nothing about the tool), stopwords dropped.
pub(crate) fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '-'))
        .filter(|w| w.chars().any(char::is_alphabetic) && !w.chars().any(|c| c.is_ascii_digit()))
        .map(|w| w.replace('-', "").to_lowercase())
        .filter(|w| w.chars().count() > 1 && !STOPWORDS.contains(&w.as_str()))
        .map(|w| stem(&w))
        .collect()
}

/// A light suffix stripper so "sorted", "sorting" and "sorts" meet at "sort", "tasks" at
/// "task", "completed" and "complete" at "complet". Deliberately crude (no Porter rules):
/// it only has to map a word's usual inflections together, and both sides go through it.
/// A stem keeps at least three characters.
pub(crate) fn stem(word: &str) -> String {
    let mut w = word.to_owned();
    let strip = |w: &mut String, suffix: &str, replacement: &str| -> bool {
        if w.ends_with(suffix) && w.len() - suffix.len() + replacement.len() >= 3 {
            w.truncate(w.len() - suffix.len());
            w.push_str(replacement);
            true
        } else {
            false
        }
    };
    if !strip(&mut w, "ies", "y") && !w.ends_with("ss") && !w.ends_with("us") {
        strip(&mut w, "s", "");
    }
    if !strip(&mut w, "ing", "") {
        strip(&mut w, "ed", "");
    }
    strip(&mut w, "e", "");
    w
}

/// Every tool's texts as a bag of terms, for BM25.
#[derive(Debug, Clone, Default)]
pub(crate) struct LexicalIndex {
    /// Per tool: term -> how often it occurs in the tool's texts.
    docs: Vec<HashMap<String, u32>>,
    /// Per tool: how many terms its texts hold.
    lengths: Vec<f32>,
    average_length: f32,
    /// Term -> how many tools mention it.
    document_frequency: HashMap<String, u32>,
}

impl LexicalIndex {
    /// One document per tool, from all of that tool's texts.
    pub(crate) fn new<'a>(tools: impl IntoIterator<Item = Vec<&'a str>>) -> Self {
        let mut index = Self::default();
        for texts in tools {
            let mut doc: HashMap<String, u32> = HashMap::new();
            let mut length = 0u32;
            for t in texts.iter().flat_map(|t| terms(t)) {
                *doc.entry(t).or_default() += 1;
                length += 1;
            }
            for t in doc.keys() {
                *index.document_frequency.entry(t.clone()).or_default() += 1;
            }
            index.docs.push(doc);
            index.lengths.push(length as f32);
        }
        let n = index.lengths.len().max(1) as f32;
        index.average_length = (index.lengths.iter().sum::<f32>() / n).max(1.0);
        index
    }

    /// BM25's inverse document frequency (the non-negative variant): highest for a term
    /// no tool mentions, which makes such terms count against every tool.
    fn idf(&self, term: &str) -> f32 {
        let n = self.docs.len() as f32;
        let df = self.document_frequency.get(term).copied().unwrap_or(0) as f32;
        (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
    }

    /// Each tool's BM25 score for `query`, divided by the most any tool could score (every
    /// distinct query term present, with saturated frequency), so it lies in [0, 1] and
    /// means the same for short and long requests: 0 when no informative word of the
    /// request appears in the tool's texts, near 1 when every one does. A request made
    /// only of stopwords scores 0 everywhere.
    pub(crate) fn scores(&self, query: &str) -> Vec<f32> {
        // Sorted, so the sums below add in the same order every time: a hash set's order
        // varies between runs and moved scores by an ulp.
        let distinct: BTreeSet<String> = terms(query).into_iter().collect();
        let weights: Vec<(&String, f32)> = distinct.iter().map(|t| (t, self.idf(t))).collect();
        let ceiling: f32 = weights.iter().map(|(_, idf)| idf * (K1 + 1.0)).sum();
        self.docs
            .iter()
            .zip(&self.lengths)
            .map(|(doc, &length)| {
                if ceiling <= 0.0 {
                    return 0.0;
                }
                let norm = K1 * (1.0 - B + B * length / self.average_length);
                let score: f32 = weights
                    .iter()
                    .filter_map(|(t, idf)| {
                        let tf = *doc.get(*t)? as f32;
                        Some(idf * tf * (K1 + 1.0) / (tf + norm))
                    })
                    .sum();
                (score / ceiling).min(1.0)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn inflections_meet_at_one_stem() {
        for group in [
            &["sort", "sorted", "sorting", "sorts"][..],
            &["task", "tasks"],
            &["complete", "completed", "completes"],
            &["entry", "entries"],
            &["delete", "deleted", "deleting"],
        ] {
            let stems: HashSet<String> = group.iter().map(|w| stem(w)).collect();
            assert_eq!(stems.len(), 1, "{group:?} -> {stems:?}");
        }
        assert_eq!(stem("status"), "status");
        assert_eq!(stem("address"), "address");
        assert_eq!(stem("is"), "is");
    }

    #[test]
    fn terms_drop_stopwords_numbers_and_ids() {
        assert_eq!(
            terms("Please sort THESE 12 rows by ACC-1042, then 2027-01-31!"),
            ["sort", "row"]
        );
        assert_eq!(
            terms("my to-do list, - follow-ups"),
            ["todo", "list", "followup"]
        );
    }

    fn tools() -> LexicalIndex {
        LexicalIndex::new([
            vec![
                "sort rows: Sorts the rows of a table by a column",
                "order by price",
            ],
            vec!["filter rows: Keeps the rows of a table that meet conditions"],
            vec!["add task: Adds a task to the to-do list"],
        ])
    }

    #[test]
    fn the_rare_verb_decides_between_similar_tools() {
        let s = tools().scores("sort this table by city");
        assert!(s[0] > s[1] && s[1] > s[2], "{s:?}");
        let s = tools().scores("keep only the rows from Spain");
        assert!(s[1] > s[0], "{s:?}");
    }

    #[test]
    fn scores_are_normalised_and_zero_without_shared_words() {
        let index = tools();
        let s = index.scores("good morning, how are you?");
        assert!(s.iter().all(|&x| x == 0.0), "{s:?}");
        let s = index.scores("sort rows");
        assert!(s.iter().all(|&x| (0.0..=1.0).contains(&x)), "{s:?}");
        assert!(s[0] > 0.5, "{s:?}");
        assert!(index.scores("").iter().all(|&x| x == 0.0));
    }
}
