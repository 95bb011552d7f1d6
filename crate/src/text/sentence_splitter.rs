//! Streaming sentence splitting: fed an answer piece by piece, it says where the first sentence
//! ends as soon as that is certain, so the upstream can stop generating right there.
//!
//! A sentence ends at `.`, `!`, `?` (with any closing quotes or brackets) followed by
//! whitespace, at a CJK full stop, or at a line break (small models write one step per line).
//! It does not end at decimals (3.14), abbreviations (e.g., i.e., Dr., U.S.), initials (J. K.),
//! list numbers ("1."), ellipses, or inside quotes, parentheses, inline code or fenced code.

/// Words that end with a period without ending a sentence (compared lowercase, without the dot).
const ABBREVIATIONS: &[&str] = &[
    "e.g", "i.e", "etc", "vs", "cf", "al", "approx", "dr", "mr", "mrs", "ms", "prof", "sr", "jr",
    "st", "no", "fig", "eq", "u.s", "u.k", "u.n", "a.m", "p.m", "ph.d", "inc", "ltd", "co", "mt",
    "gen", "col", "lt", "sgt", "rev", "vol", "pp", "ca",
];

const CLOSERS: &[char] = &['"', '\'', ')', ']', '}', '”', '’', '»', '*', '_'];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The sentence ends at this byte offset.
    End(usize),
    /// Not a sentence end: keep scanning after it.
    No,
    /// Can't tell until more text arrives.
    Wait,
}

/// Byte offset just past the first complete sentence of `text`, if one is certain. With
/// `finished` (no more text will come), the whole non-blank text is a sentence.
pub fn first_sentence_end(text: &str, finished: bool) -> Option<usize> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let (mut parens, mut quote, mut inline_code, mut fence) = (0i32, false, false, false);
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        // Fenced code: ``` toggles; nothing inside ends a sentence.
        if text[at..].starts_with("```") {
            fence = !fence;
            i += 3;
            continue;
        }
        if fence {
            i += 1;
            continue;
        }
        // A terminator (possibly just before a closing quote) that may end the sentence.
        let mut terminator = None;
        match c {
            '`' => inline_code = !inline_code,
            _ if inline_code && c != '\n' => {}
            '(' | '[' | '{' => parens += 1,
            ')' | ']' | '}' => parens = (parens - 1).max(0),
            '"' | '”' if quote => {
                quote = false;
                // A quotation that ends with a terminator can end the sentence: `He said "hi." Then`.
                if parens == 0 && i > 0 && matches!(chars[i - 1].1, '.' | '!' | '?') {
                    terminator = Some(i - 1);
                }
            }
            '"' | '“' => quote = true,
            '\n' => {
                if text[..at].trim().is_empty() {
                    i += 1;
                    continue;
                }
                return Some(at + 1);
            }
            '.' | '!' | '?' | '…' | '。' | '！' | '？' if parens == 0 && !quote => {
                terminator = Some(i)
            }
            _ => {}
        }
        if let Some(t) = terminator {
            match verdict(text, &chars, t, finished) {
                Verdict::End(end) => return Some(end),
                Verdict::Wait => return None,
                Verdict::No => {}
            }
        }
        i += 1;
    }
    // Unclosed fences, quotes or brackets keep the sentence open until the answer ends.
    (finished && !text.trim().is_empty()).then_some(text.len())
}

/// Decides whether the terminator at `chars[i]` ends the sentence.
fn verdict(text: &str, chars: &[(usize, char)], i: usize, finished: bool) -> Verdict {
    let c = chars[i].1;
    if matches!(c, '。' | '！' | '？') {
        return Verdict::End(end_after_closers(text, chars, i + 1));
    }
    // Runs of terminators ("?!", "...") are judged at their last character.
    let mut j = i;
    while j + 1 < chars.len() && matches!(chars[j + 1].1, '.' | '!' | '?' | '…') {
        j += 1;
    }
    let run: String = chars[i..=j].iter().map(|&(_, c)| c).collect();
    let end = end_after_closers(text, chars, j + 1);
    let k = chars
        .iter()
        .position(|&(at, _)| at >= end)
        .unwrap_or(chars.len());
    let Some(&(_, next)) = chars.get(k) else {
        return if finished {
            Verdict::End(end)
        } else {
            Verdict::Wait
        };
    };
    if !next.is_whitespace() {
        // "3.14", "e.g.,", "example.com", "U.S": no break.
        return Verdict::No;
    }
    if run.contains('…') || run.contains("..") {
        return Verdict::No;
    }
    if run == "." {
        let word = word_before(text, chars[i].0);
        let lower = word.to_lowercase();
        let list_number = !word.is_empty()
            && word.chars().all(|c| c.is_ascii_digit())
            && line_prefix_is_blank(text, chars[i].0 - word.len());
        let initial = word.chars().count() == 1 && word.chars().all(char::is_uppercase);
        if ABBREVIATIONS.contains(&lower.as_str()) || list_number || initial {
            return Verdict::No;
        }
        // "approx. three": a lowercase word after the space continues the sentence.
        match chars[k..]
            .iter()
            .find(|&&(_, c)| !c.is_whitespace() || c == '\n')
        {
            None if !finished => return Verdict::Wait,
            Some(&(_, n)) if n.is_lowercase() => return Verdict::No,
            _ => {}
        }
    }
    Verdict::End(end)
}

/// Offset after `chars[from..]`'s closing quotes/brackets/emphasis.
fn end_after_closers(text: &str, chars: &[(usize, char)], from: usize) -> usize {
    let mut k = from;
    while k < chars.len() && CLOSERS.contains(&chars[k].1) {
        k += 1;
    }
    chars.get(k).map_or(text.len(), |&(at, _)| at)
}

/// The word (letters, digits, inner dots) just before byte `at`.
fn word_before(text: &str, at: usize) -> &str {
    let head = &text[..at];
    let start = head
        .rfind(|c: char| !(c.is_alphanumeric() || c == '.'))
        .map_or(0, |p| {
            p + head[p..].chars().next().map_or(1, char::len_utf8)
        });
    &head[start..]
}

fn line_prefix_is_blank(text: &str, at: usize) -> bool {
    let line_start = text[..at].rfind('\n').map_or(0, |p| p + 1);
    text[line_start..at].trim().is_empty()
        || text[line_start..at].trim_end().ends_with(['*', '-', '#'])
}

/// Accumulates streamed text and reports the first sentence once it is complete.
#[derive(Debug, Clone, Default)]
pub struct SentenceSplitter {
    text: String,
}

impl SentenceSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a piece; returns the first sentence's end offset in [`Self::text`] once certain.
    pub fn push(&mut self, piece: &str) -> Option<usize> {
        self.text.push_str(piece);
        first_sentence_end(&self.text, false)
    }

    /// The stream has ended: where the first sentence ends (all that is left, if no end was seen).
    pub fn finish(&self) -> Option<usize> {
        first_sentence_end(&self.text, true)
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Where the first sentence of the text held ends, if that is certain already.
    pub fn pending(&self) -> Option<usize> {
        first_sentence_end(&self.text, false)
    }

    /// Removes and returns the text up to `end` (a sentence given out); the rest stays.
    pub fn take(&mut self, end: usize) -> String {
        let rest = self.text.split_off(end);
        std::mem::replace(&mut self.text, rest)
    }
}

/// The complete sentences at the start of `text`, each with its leading whitespace. Unless
/// `finished`, a last sentence whose end is not yet certain is left out: more may come.
pub fn complete_sentences(text: &str, finished: bool) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(end) = first_sentence_end(rest, finished) {
        out.push(&rest[..end]);
        rest = &rest[end..];
    }
    out
}

/// Splits a complete text into sentences that concatenate back to it.
pub fn split_sentences(text: &str) -> Vec<&str> {
    let mut out = complete_sentences(text, true);
    let rest = &text[out.iter().map(|s| s.len()).sum::<usize>()..];
    if !rest.is_empty() {
        match out.last_mut() {
            // Trailing whitespace stays with the last sentence.
            Some(last) => *last = &text[text.len() - rest.len() - last.len()..],
            None => out.push(rest),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (text, the first sentence) — judged on the whole text, as at the end of an answer.
    const CASES: &[(&str, &str)] = &[
        ("Paris is the capital. It is big.", "Paris is the capital."),
        (
            "Pi is about 3.14 in value. Next.",
            "Pi is about 3.14 in value.",
        ),
        (
            "Use a tool, e.g. a hammer. Then stop.",
            "Use a tool, e.g. a hammer.",
        ),
        ("That is, i.e., the rest. Done.", "That is, i.e., the rest."),
        ("Dr. Smith arrived. He sat.", "Dr. Smith arrived."),
        ("The U.S. economy grew. Good.", "The U.S. economy grew."),
        ("J. K. Rowling wrote it. Yes.", "J. K. Rowling wrote it."),
        ("1. Add the numbers.\n2. Divide.", "1. Add the numbers."),
        ("Wait... then go. Fine.", "Wait... then go."),
        ("Hmm… maybe later. Ok.", "Hmm… maybe later."),
        (
            "He said \"Stop. Now.\" and left. Then.",
            "He said \"Stop. Now.\" and left.",
        ),
        (
            "See (the note. Really.) here. End.",
            "See (the note. Really.) here.",
        ),
        ("Run `a.b(). c` first. Then.", "Run `a.b(). c` first."),
        ("Code:\n", "Code:\n"),
        (
            "```\nx = 1. y = 2.\n``` done. Next.",
            "```\nx = 1. y = 2.\n``` done.",
        ),
        ("Really? Yes!", "Really?"),
        ("What?! No way. Ok.", "What?!"),
        ("今天很好。明天也好。", "今天很好。"),
        ("真的吗？是的！", "真的吗？"),
        ("Step one\nStep two", "Step one\n"),
        (
            "It costs approx. three dollars. Ok.",
            "It costs approx. three dollars.",
        ),
        ("Visit example.com today. Bye.", "Visit example.com today."),
        ("He said \"hi.\" Then left.", "He said \"hi.\""),
        ("17 * 23 = 391. So the answer is 391.", "17 * 23 = 391."),
        ("**Step 1.** Add. More.", "**Step 1.**"),
        ("No end here", "No end here"),
    ];

    #[test]
    fn hard_cases_split_where_a_reader_would() {
        for (text, want) in CASES {
            let end =
                first_sentence_end(text, true).unwrap_or_else(|| panic!("no sentence in {text:?}"));
            assert_eq!(&text[..end], *want, "in {text:?}");
        }
    }

    #[test]
    fn streaming_reports_the_same_end_as_soon_as_it_is_certain() {
        for (text, want) in CASES {
            let mut s = SentenceSplitter::new();
            let mut got = None;
            // Feed two characters at a time, like tokens.
            let chars: Vec<char> = text.chars().collect();
            for piece in chars.chunks(2) {
                if let Some(end) = s.push(&piece.iter().collect::<String>()) {
                    got = Some(end);
                    break;
                }
            }
            let end = got.or_else(|| s.finish()).unwrap();
            assert_eq!(&s.text()[..end], *want, "streamed {text:?}");
        }
    }

    #[test]
    fn a_period_at_the_end_of_the_stream_so_far_waits_for_more() {
        let mut s = SentenceSplitter::new();
        assert_eq!(s.push("It is 3."), None, "could be 3.14");
        assert_eq!(s.push("14 exactly. "), None, "the next word decides");
        assert_eq!(s.push("And"), Some("It is 3.14 exactly.".len()));
    }

    #[test]
    fn split_sentences_concatenates_back_to_the_text() {
        let text = "First one. Second, e.g. this one!\n3. Third line\n\nLast one.  ";
        let parts = split_sentences(text);
        assert_eq!(parts.concat(), text);
        assert_eq!(
            parts,
            vec![
                "First one.",
                " Second, e.g. this one!",
                "\n3. Third line\n",
                "\nLast one.  "
            ]
        );
    }
}
