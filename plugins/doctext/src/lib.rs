//! Outline, word counts, action items and dates in a document's text.
