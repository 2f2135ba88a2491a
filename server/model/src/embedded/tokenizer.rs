//! The model's byte-level BPE tokenizer, built from the GGUF's own vocabulary and merges.
//!
//! candle's GGUF tokenizer helper mis-tokenizes SmolLM2: its `tokenizer.ggml.pre = "smollm"`
//! needs every digit split off on its own and a GPT-2 byte-level pre-tokenizer without a
//! prefix space. This is that pipeline, as llama.cpp runs it: split out control tokens,
//! isolate digits, split with the GPT-2 regex, map bytes to GPT-2's printable characters,
//! then merge pairs by rank.

use std::collections::HashMap;

use candle_core::quantized::gguf_file;
use fancy_regex::Regex;

use crate::ModelError;

/// Token id, as the model and llguidance number them.
pub type TokenId = u32;

/// `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// The GPT-2 split used by llama.cpp for `pre = "smollm"` (after the digit split).
const GPT2_SPLIT: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// A byte-level BPE tokenizer read from a GGUF file.
#[derive(Debug)]
pub struct Tokenizer {
    /// Every token's bytes (control tokens: their text).
    token_bytes: Vec<Vec<u8>>,
    /// Whether a token is a control token (`<|im_start|>`…), never produced by BPE.
    special: Vec<bool>,
    /// Control and user-defined token texts, longest first, matched verbatim in input.
    specials_by_len: Vec<(String, TokenId)>,
    /// Byte-mapped token text to id.
    vocab: HashMap<String, TokenId>,
    /// `(left, right)` to `(rank, merged)`.
    merges: HashMap<(TokenId, TokenId), (u32, TokenId)>,
    /// GPT-2 byte to printable character, as token texts spell bytes.
    byte_to_char: [char; 256],
    /// Token id of each single byte; SmolLM2 lacks a few control bytes, which are
    /// dropped as llama.cpp drops them.
    byte_token: [Option<TokenId>; 256],
    split: Regex,
}

impl Tokenizer {
    /// Builds the tokenizer from `tokenizer.ggml.*` metadata; fails when the vocabulary
    /// is not byte-level BPE (the only kind this provider runs).
    pub fn from_gguf(content: &gguf_file::Content) -> Result<Self, ModelError> {
        let md = &content.metadata;
        let get = |key: &str| {
            md.get(key)
                .ok_or_else(|| ModelError::Embedded(format!("the GGUF has no `{key}` metadata")))
        };
        let model = get("tokenizer.ggml.model")?
            .to_string()
            .map_err(|e| ModelError::Embedded(e.to_string()))?;
        if model != "gpt2" {
            return Err(ModelError::Embedded(format!(
                "the GGUF's tokenizer is `{model}`; only byte-level BPE (`gpt2`) is supported"
            )));
        }
        let strings = |key: &str| -> Result<Vec<String>, ModelError> {
            get(key)?
                .to_vec()
                .and_then(|v| v.iter().map(|s| s.to_string().cloned()).collect())
                .map_err(|e| ModelError::Embedded(format!("`{key}`: {e}")))
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?;
        let types: Vec<i32> = match md.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()
                .and_then(|v| v.iter().map(|t| t.to_i32()).collect())
                .map_err(|e| ModelError::Embedded(format!("`tokenizer.ggml.token_type`: {e}")))?,
            None => vec![1; tokens.len()],
        };
        Self::new(&tokens, &merges, &types)
    }

    /// Builds the tokenizer from token texts (GPT-2 byte-mapped), `"a b"` merges and
    /// llama.cpp token types.
    pub fn new(tokens: &[String], merges: &[String], types: &[i32]) -> Result<Self, ModelError> {
        let byte_to_char = gpt2_byte_chars();
        let mut char_to_byte = HashMap::with_capacity(256);
        for (b, c) in byte_to_char.iter().enumerate() {
            char_to_byte.insert(*c, b as u8);
        }
        let vocab: HashMap<String, TokenId> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as TokenId))
            .collect();
        let mut special = vec![false; tokens.len()];
        let mut specials_by_len = Vec::new();
        let mut token_bytes = Vec::with_capacity(tokens.len());
        for (id, text) in tokens.iter().enumerate() {
            let kind = types.get(id).copied().unwrap_or(1);
            if kind == TOKEN_TYPE_CONTROL || kind == TOKEN_TYPE_USER_DEFINED {
                specials_by_len.push((text.clone(), id as TokenId));
                special[id] = kind == TOKEN_TYPE_CONTROL;
                token_bytes.push(text.as_bytes().to_vec());
                continue;
            }
            // A normal token spells its bytes with GPT-2's printable characters.
            let bytes: Option<Vec<u8>> = text
                .chars()
                .map(|c| char_to_byte.get(&c).copied())
                .collect();
            token_bytes.push(bytes.unwrap_or_else(|| text.as_bytes().to_vec()));
        }
        specials_by_len.sort_by_key(|(text, _)| std::cmp::Reverse(text.len()));

        let mut byte_token = [None; 256];
        for (b, c) in byte_to_char.iter().enumerate() {
            byte_token[b] = vocab.get(&c.to_string()).copied();
        }
        let mut merge_map = HashMap::with_capacity(merges.len());
        for (rank, merge) in merges.iter().enumerate() {
            let Some((left, right)) = merge.split_once(' ') else {
                return Err(ModelError::Embedded(format!("malformed merge `{merge}`")));
            };
            let (Some(&l), Some(&r), Some(&m)) = (
                vocab.get(left),
                vocab.get(right),
                vocab.get(&format!("{left}{right}")),
            ) else {
                continue;
            };
            merge_map.entry((l, r)).or_insert((rank as u32, m));
        }
        let split = Regex::new(GPT2_SPLIT).map_err(|e| ModelError::Embedded(e.to_string()))?;
        Ok(Self {
            token_bytes,
            special,
            specials_by_len,
            vocab,
            merges: merge_map,
            byte_to_char,
            byte_token,
            split,
        })
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }

    /// The id of a token spelled exactly `text` (a control token such as `<|im_end|>`).
    pub fn token_id(&self, text: &str) -> Option<TokenId> {
        self.specials_by_len
            .iter()
            .find(|(t, _)| t == text)
            .map(|(_, id)| *id)
            .or_else(|| self.vocab.get(text).copied())
    }

    /// Whether `id` is a control token (never part of visible text).
    pub fn is_special(&self, id: TokenId) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// The bytes of every token, control tokens as their text: what llguidance's token
    /// trie is built from.
    pub fn token_bytes(&self) -> &[Vec<u8>] {
        &self.token_bytes
    }

    /// Encodes text, turning control-token spellings (`<|im_start|>`) into their ids, as
    /// the chat template's output needs.
    pub fn encode_with_specials(&self, text: &str) -> Vec<TokenId> {
        let mut out = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            // The earliest special occurrence (longest at that position).
            let mut next: Option<(usize, &str, TokenId)> = None;
            for (s, id) in &self.specials_by_len {
                if let Some(pos) = rest.find(s.as_str())
                    && next.is_none_or(|(p, t, _)| pos < p || (pos == p && s.len() > t.len()))
                {
                    next = Some((pos, s, *id));
                }
            }
            match next {
                Some((pos, s, id)) => {
                    self.encode_into(&rest[..pos], &mut out);
                    out.push(id);
                    rest = &rest[pos + s.len()..];
                }
                None => {
                    self.encode_into(rest, &mut out);
                    break;
                }
            }
        }
        out
    }

    /// Encodes text as plain text: a control token's spelling is just characters.
    pub fn encode(&self, text: &str) -> Vec<TokenId> {
        let mut out = Vec::new();
        self.encode_into(text, &mut out);
        out
    }

    fn encode_into(&self, text: &str, out: &mut Vec<TokenId>) {
        // Digits first, each on its own (regex `\p{N}` in llama.cpp), then GPT-2's split
        // inside the spans between them; text no rule matches stays one piece.
        let mut span_start = 0;
        for (i, c) in text.char_indices() {
            if c.is_numeric() {
                self.split_gpt2(&text[span_start..i], out);
                self.bpe(&text[i..i + c.len_utf8()], out);
                span_start = i + c.len_utf8();
            }
        }
        self.split_gpt2(&text[span_start..], out);
    }

    fn split_gpt2(&self, span: &str, out: &mut Vec<TokenId>) {
        let mut last = 0;
        for m in self.split.find_iter(span) {
            // The regex has bounded backtracking on these inputs; an error would mean a
            // pathological input, and the whole span as one piece is still a valid encoding.
            let Ok(m) = m else { break };
            if m.start() > last {
                self.bpe(&span[last..m.start()], out);
            }
            self.bpe(m.as_str(), out);
            last = m.end();
        }
        if last < span.len() {
            self.bpe(&span[last..], out);
        }
    }

    /// Merges one pre-token's bytes by rank, lowest first.
    fn bpe(&self, piece: &str, out: &mut Vec<TokenId>) {
        if piece.is_empty() {
            return;
        }
        let mapped: String = piece
            .bytes()
            .map(|b| self.byte_to_char[b as usize])
            .collect();
        if let Some(&id) = self.vocab.get(&mapped) {
            out.push(id);
            return;
        }
        let mut symbols: Vec<TokenId> = piece
            .bytes()
            .filter_map(|b| self.byte_token[b as usize])
            .collect();
        loop {
            let best = symbols
                .windows(2)
                .enumerate()
                .filter_map(|(i, w)| self.merges.get(&(w[0], w[1])).map(|&(r, m)| (r, i, m)))
                .min();
            let Some((_, i, merged)) = best else { break };
            symbols[i] = merged;
            symbols.remove(i + 1);
        }
        out.extend_from_slice(&symbols);
    }

    /// The bytes a token stands for; control tokens give their text.
    pub fn token_to_bytes(&self, id: TokenId) -> &[u8] {
        self.token_bytes
            .get(id as usize)
            .map_or(&[], |b| b.as_slice())
    }

    /// Decodes tokens to text, dropping control tokens (lossy on invalid UTF-8).
    pub fn decode(&self, ids: &[TokenId]) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .filter(|id| !self.is_special(**id))
            .flat_map(|id| self.token_to_bytes(*id).iter().copied())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Turns a stream of token bytes into text pieces that end on character boundaries, so a
/// streamed delta never splits a multi-byte character.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Adds bytes and returns whatever is now complete text.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            Err(e) if e.error_len().is_some() => self.pending.len(), // invalid: flush lossy
            Err(e) => e.valid_up_to(),
        };
        let rest = self.pending.split_off(valid);
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending = rest;
        text
    }

    /// Whatever is left at the end (lossy).
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

/// GPT-2's reversible map from bytes to printable characters.
fn gpt2_byte_chars() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        map[b as usize] = if printable {
            b as char
        } else {
            let c = char::from_u32(next).unwrap_or('\u{FFFD}');
            next += 1;
            c
        };
    }
    map
}
