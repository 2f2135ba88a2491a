//! Reasoning normalisation: the model's chain of thought, whatever shape the server
//! returns it in, becomes [`ChatMessage::reasoning`](crate::ChatMessage::reasoning), and the
//! visible content is left clean.
//!
//! Servers disagree on where reasoning goes:
//! - a `reasoning_content` field beside `content` (DeepSeek's API, vLLM and SGLang with a
//!   reasoning parser, llama.cpp's server with `--reasoning-format deepseek`);
//! - a `reasoning` field (OpenRouter, Ollama's OpenAI-compatible endpoint, recent vLLM);
//! - `<think>…</think>` at the start of `content` (any server that passes the raw model
//!   output through: llama.cpp with `--reasoning-format none`, plain templates).
//!
//! The ledger records reasoning in one place, and some servers need it back on later
//! turns ([`ReasoningReplay`]), so the provider normalises it here. Everything in this
//! module is pure: no I/O, easy to test exhaustively.

use serde::{Deserialize, Serialize};

/// The tag that opens a reasoning block in content.
pub const THINK_OPEN: &str = "<think>";
/// The tag that closes it.
pub const THINK_CLOSE: &str = "</think>";

/// How to pass an assistant message's reasoning back to the server on later turns.
///
/// Most servers drop earlier reasoning themselves (their chat templates strip it) and
/// some reject unknown fields, so the default sends nothing. Models with "interleaved
/// thinking" across tool calls lose the thread unless their reasoning comes back:
///
/// | value | on disk | servers, for example |
/// | --- | --- | --- |
/// | [`None`](Self::None) | `"none"` | OpenAI; DeepSeek-R1 (its API refuses `reasoning_content` in input); Ollama and most vLLM/llama.cpp setups |
/// | [`Field`](Self::Field)`("reasoning_content")` | `{"field": "reasoning_content"}` | DeepSeek V3.1+ thinking mode with tools, Kimi K2 Thinking or GLM 4.5+ on vLLM/SGLang, whose templates read `reasoning_content` of past turns |
/// | [`Field`](Self::Field)`("reasoning")` | `{"field": "reasoning"}` | OpenRouter |
/// | [`ThinkTags`](Self::ThinkTags) | `"think_tags"` | models that expect their `<think>` block kept in the history (MiniMax-M2; llama.cpp with `--reasoning-format none`) |
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasoningReplay {
    /// Do not send reasoning back.
    #[default]
    None,
    /// Send it in this field of the assistant message, beside `content`.
    Field(String),
    /// Send it as `<think>…</think>` in front of the assistant message's `content`.
    ThinkTags,
}

/// Splits a leading `<think>…</think>` block off `content`.
///
/// Returns the reasoning (trimmed, `None` when there is no block or it is empty) and the
/// content after the block with leading whitespace removed. A block that never closes
/// (the answer hit the token cap mid-thought) is all reasoning. Only a block at the start
/// counts: a model that talks *about* `<think>` later in its answer keeps its words.
pub fn split_think_tags(content: &str) -> (Option<String>, String) {
    let trimmed = content.trim_start();
    let Some(after_open) = trimmed.strip_prefix(THINK_OPEN) else {
        return (None, content.to_owned());
    };
    let (reasoning, rest) = match after_open.find(THINK_CLOSE) {
        Some(end) => (
            &after_open[..end],
            after_open[end + THINK_CLOSE.len()..].trim_start(),
        ),
        None => (after_open, ""),
    };
    (non_empty(reasoning.trim()), rest.to_owned())
}

/// Normalises reasoning from the fields a server sent and its content.
///
/// `fields` are the values of `reasoning_content` and `reasoning`, in that order of
/// preference (a server that sends both sends the same text twice). Think tags in the
/// content are stripped either way, and their text is used when no field had any.
/// Returns `(reasoning, content)`; content that is empty after cleaning is `None`.
pub fn normalise(
    fields: &[Option<&str>],
    content: Option<&str>,
) -> (Option<String>, Option<String>) {
    let from_field = fields
        .iter()
        .flatten()
        .find_map(|text| non_empty(text.trim()));
    let (from_tags, content) = match content {
        Some(content) => {
            let (reasoning, rest) = split_think_tags(content);
            (reasoning, non_empty(&rest))
        }
        None => (None, None),
    };
    (from_field.or(from_tags), content)
}

/// Prepends reasoning as a `<think>` block to content, for [`ReasoningReplay::ThinkTags`].
pub fn join_think_tags(reasoning: &str, content: Option<&str>) -> String {
    format!(
        "{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}\n\n{}",
        content.unwrap_or_default()
    )
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

/// A piece of streamed content after think tags were taken out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Visible text.
    Content(String),
    /// Reasoning text.
    Reasoning(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing but whitespace (or a partial `<think>`) seen yet.
    Start,
    /// Just after `<think>`: whitespace is dropped.
    ThinkStart,
    /// Inside the block: reasoning.
    Think,
    /// Just after `</think>`: whitespace is dropped.
    AfterThink,
    /// Plain content from here on.
    Content,
}

/// Finds a `<think>` block at the start of streamed content, however the server split
/// it across deltas (`"<thi"`, `"nk>I sh"`, `"ould</th"`, `"ink>Hi"`).
///
/// Feed each content delta to [`push`](Self::push), then call
/// [`finish`](Self::finish) at the end of the stream. It holds back only what it cannot
/// classify yet (a possible partial tag, trailing whitespace inside the block), so text
/// flows with at most a few characters of delay, and the concatenated pieces equal what
/// [`split_think_tags`] gives for the whole content.
#[derive(Debug, Clone)]
pub struct ThinkTagSplitter {
    state: State,
    held: String,
}

impl Default for ThinkTagSplitter {
    fn default() -> Self {
        Self::new()
    }
}

impl ThinkTagSplitter {
    /// A splitter at the start of a message.
    pub fn new() -> Self {
        Self {
            state: State::Start,
            held: String::new(),
        }
    }

    /// Takes the next content delta and returns what can be classified so far.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        let mut out = Vec::new();
        self.held.push_str(text);
        loop {
            match self.state {
                State::Start => {
                    let trimmed = self.held.trim_start();
                    if let Some(rest) = trimmed.strip_prefix(THINK_OPEN) {
                        self.held = rest.to_owned();
                        self.state = State::ThinkStart;
                    } else if THINK_OPEN.starts_with(trimmed) {
                        // Only whitespace or a partial `<think>` so far: wait.
                        return out;
                    } else {
                        self.state = State::Content;
                    }
                }
                State::ThinkStart => {
                    let trimmed = self.held.trim_start();
                    if trimmed.is_empty() {
                        self.held.clear();
                        return out;
                    }
                    self.held = trimmed.to_owned();
                    self.state = State::Think;
                }
                State::Think => {
                    if let Some(end) = self.held.find(THINK_CLOSE) {
                        let reasoning = self.held[..end].trim_end().to_owned();
                        push_piece(&mut out, Piece::Reasoning(reasoning));
                        self.held = self.held[end + THINK_CLOSE.len()..].to_owned();
                        self.state = State::AfterThink;
                    } else {
                        // Emit all but what may still turn out to be `</think>` or the
                        // whitespace in front of it.
                        let keep_from = partial_suffix_start(&self.held, THINK_CLOSE);
                        let emit_to = self.held[..keep_from].trim_end().len();
                        let reasoning: String = self.held.drain(..emit_to).collect();
                        push_piece(&mut out, Piece::Reasoning(reasoning));
                        return out;
                    }
                }
                State::AfterThink => {
                    let trimmed = self.held.trim_start();
                    if trimmed.is_empty() {
                        self.held.clear();
                        return out;
                    }
                    self.held = trimmed.to_owned();
                    self.state = State::Content;
                }
                State::Content => {
                    let content = std::mem::take(&mut self.held);
                    push_piece(&mut out, Piece::Content(content));
                    return out;
                }
            }
        }
    }

    /// Ends the stream: whatever was held back is classified now (a partial `<think>`
    /// that never completed is content; an unclosed block is reasoning).
    pub fn finish(&mut self) -> Vec<Piece> {
        let held = std::mem::take(&mut self.held);
        let mut out = Vec::new();
        match self.state {
            // Whitespace only, or a partial `<think>` that never completed: content.
            State::Start => push_piece(&mut out, Piece::Content(held)),
            // An unclosed block, or one whose close tag was cut off: reasoning.
            State::ThinkStart | State::Think => {
                push_piece(&mut out, Piece::Reasoning(held.trim_end().to_owned()))
            }
            State::AfterThink | State::Content => push_piece(&mut out, Piece::Content(held)),
        }
        self.state = State::Content;
        out
    }
}

fn push_piece(out: &mut Vec<Piece>, piece: Piece) {
    let empty = match &piece {
        Piece::Content(text) | Piece::Reasoning(text) => text.is_empty(),
    };
    if !empty {
        out.push(piece);
    }
}

/// Where a proper prefix of `tag` starts at the end of `text` (`text.len()` if none).
fn partial_suffix_start(text: &str, tag: &str) -> usize {
    (1..tag.len())
        .rev()
        .filter(|&len| len <= text.len() && text.is_char_boundary(text.len() - len))
        .find(|&len| tag.starts_with(&text[text.len() - len..]))
        .map_or(text.len(), |len| text.len() - len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(chunks: &[&str]) -> (Option<String>, Option<String>) {
        let mut splitter = ThinkTagSplitter::new();
        let mut pieces: Vec<Piece> = chunks.iter().flat_map(|c| splitter.push(c)).collect();
        pieces.extend(splitter.finish());
        let mut reasoning = String::new();
        let mut content = String::new();
        for piece in pieces {
            match piece {
                Piece::Reasoning(text) => reasoning.push_str(&text),
                Piece::Content(text) => content.push_str(&text),
            }
        }
        (non_empty(&reasoning), non_empty(&content))
    }

    fn whole(content: &str) -> (Option<String>, Option<String>) {
        normalise(&[], Some(content))
    }

    #[test]
    fn splits_a_leading_block() {
        assert_eq!(
            split_think_tags("<think>\nadd 2 and 2\n</think>\n\nIt is 4."),
            (Some("add 2 and 2".to_owned()), "It is 4.".to_owned())
        );
    }

    #[test]
    fn leaves_content_without_a_leading_block_alone() {
        let text = "Use <think> tags like <think>this</think>.";
        assert_eq!(split_think_tags(text), (None, text.to_owned()));
    }

    #[test]
    fn an_unclosed_block_is_all_reasoning() {
        assert_eq!(
            split_think_tags("<think>still going"),
            (Some("still going".to_owned()), String::new())
        );
    }

    #[test]
    fn fields_win_over_tags_and_tags_are_stripped_anyway() {
        assert_eq!(
            normalise(
                &[None, Some(" from field ")],
                Some("<think>from tags</think>answer")
            ),
            (Some("from field".to_owned()), Some("answer".to_owned()))
        );
        assert_eq!(
            normalise(&[Some(""), None], Some("<think>from tags</think>answer")),
            (Some("from tags".to_owned()), Some("answer".to_owned()))
        );
    }

    #[test]
    fn streaming_matches_whole_content_for_every_split() {
        let samples = [
            "<think>\nI should add.\n</think>\n\nIt is 4.",
            "  <think>a < b and c </th not yet</think>x</think>y",
            "<think>unclosed  ",
            "<thinking is not a tag",
            "plain answer",
            "<think></think>only content",
            "<think>reasoning only</think>\n",
            "<thi",
            "  ",
            "<think>é ü 中文 </think> ok",
        ];
        for sample in samples {
            let expected = whole(sample);
            let chars: Vec<(usize, char)> = sample.char_indices().collect();
            // Every way of cutting the text into two, and into chunks of each size.
            for (cut, _) in &chars {
                assert_eq!(
                    stream(&[&sample[..*cut], &sample[*cut..]]),
                    expected,
                    "{sample:?} cut at {cut}"
                );
            }
            for size in 1..6 {
                let chunks: Vec<String> = chars
                    .chunks(size)
                    .map(|c| c.iter().map(|(_, ch)| ch).collect())
                    .collect();
                let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
                assert_eq!(stream(&chunks), expected, "{sample:?} in chunks of {size}");
            }
        }
    }

    #[test]
    fn reasoning_flows_before_the_block_closes() {
        let mut splitter = ThinkTagSplitter::new();
        assert_eq!(splitter.push("<thi"), vec![]);
        assert_eq!(
            splitter.push("nk>step one </th"),
            vec![Piece::Reasoning("step one".to_owned())]
        );
        assert_eq!(
            splitter.push("ink>Hi"),
            vec![Piece::Content("Hi".to_owned())]
        );
    }

    #[test]
    fn join_then_split_round_trips() {
        let joined = join_think_tags("why", Some("what"));
        assert_eq!(
            split_think_tags(&joined),
            (Some("why".to_owned()), "what".to_owned())
        );
    }
}
