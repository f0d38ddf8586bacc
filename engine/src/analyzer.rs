//! Text analysis, shared by indexing, query parsing and the fresh-layer scorer (so a document
//! tokenizes the same whether tantivy or the fresh layer scores it).
//!
//! Words are maximal runs of letters, digits and combining marks (so Devanagari or Arabic
//! words with vowel signs stay whole). Runs of CJK ideographs, kana and hangul have no spaces
//! between words: they are cut into overlapping bigrams (one unigram for a lone character),
//! as Lucene's CJK analyzer does, so any two-character substring of a name is findable; a
//! query is analyzed the same way and its bigrams matched as a phrase. Each word is put in
//! Unicode NFKC form (a decomposed `Zu\u{308}rich` is `Zürich`, full-width `Ｔｏｋｙｏ` is
//! `Tokyo`), and invisible format characters inside it (zero-width space and joiners, word
//! joiner, soft hyphen, BOM) are dropped rather than splitting it. Then Unicode lowercasing,
//! ASCII folding (`café` = `cafe`) and, per field, an optional stemmer.

use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, Stemmer, TextAnalyzer, Token,
    TokenStream, Tokenizer,
};
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::{is_nfkc_quick, IsNormalized, UnicodeNormalization};

/// Tokens longer than this (bytes) are dropped: they are noise, not words.
const MAX_TOKEN_BYTES: usize = 100;

/// Stemmer languages a text field may name in its `language` option.
pub const LANGUAGES: &[(&str, Language)] = &[
    ("arabic", Language::Arabic),
    ("danish", Language::Danish),
    ("dutch", Language::Dutch),
    ("english", Language::English),
    ("finnish", Language::Finnish),
    ("french", Language::French),
    ("german", Language::German),
    ("greek", Language::Greek),
    ("hungarian", Language::Hungarian),
    ("italian", Language::Italian),
    ("norwegian", Language::Norwegian),
    ("portuguese", Language::Portuguese),
    ("romanian", Language::Romanian),
    ("russian", Language::Russian),
    ("spanish", Language::Spanish),
    ("swedish", Language::Swedish),
    ("tamil", Language::Tamil),
    ("turkish", Language::Turkish),
];

pub fn language(name: &str) -> Option<Language> {
    LANGUAGES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, l)| *l)
}

/// The tokenizer name registered for a field's language (none: the default analyzer).
pub fn tokenizer_name(language: Option<&str>) -> String {
    match language {
        None => "fold".to_owned(),
        Some(l) => format!("fold_{}", l.to_ascii_lowercase()),
    }
}

/// The analyzer for a field: words, lowercase, ASCII folding, then the stemmer if any.
pub fn analyzer(language: Option<Language>) -> TextAnalyzer {
    let base = TextAnalyzer::builder(WordTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter);
    match language {
        None => base.build(),
        Some(l) => base.filter(Stemmer::new(l)).build(),
    }
}

/// Registers the analyzers every language option needs on an index.
pub fn register(index: &tantivy::Index) {
    index.tokenizers().register("fold", analyzer(None));
    for (name, l) in LANGUAGES {
        index
            .tokenizers()
            .register(&tokenizer_name(Some(name)), analyzer(Some(*l)));
    }
}

/// The tokens of `text`, in order (positions are their indexes).
pub fn tokens(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stream = analyzer.token_stream(text);
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x1100..=0x11FF       // Hangul Jamo
        | 0x3040..=0x309F     // Hiragana
        | 0x30A0..=0x30FF     // Katakana
        | 0x3130..=0x318F     // Hangul compatibility Jamo
        | 0x31F0..=0x31FF     // Katakana phonetic extensions
        | 0x3400..=0x4DBF     // CJK extension A
        | 0x4E00..=0x9FFF     // CJK unified ideographs
        | 0xAC00..=0xD7AF     // Hangul syllables
        | 0xF900..=0xFAFF     // CJK compatibility ideographs
        | 0xFF66..=0xFF9F     // half-width katakana
        | 0x20000..=0x2FA1F) // CJK extensions B–F, compatibility supplement
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || is_combining_mark(c)
}

/// Invisible format characters that may sit inside a word without ending it.
fn is_ignorable(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}' | '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}'
    )
}

/// A word's text: without ignorable characters, in NFKC form (borrowed when it already is).
fn normal(word: &str) -> String {
    if !word.chars().any(is_ignorable) && is_nfkc_quick(word.chars()) == IsNormalized::Yes {
        return word.to_owned();
    }
    word.chars().filter(|c| !is_ignorable(*c)).nfkc().collect()
}

/// Splits text into words, and CJK runs into bigrams (see the module comment).
#[derive(Clone, Default)]
pub struct WordTokenizer {
    tokens: Vec<Token>,
}

pub struct WordStream<'a> {
    tokens: &'a mut Vec<Token>,
    next: usize,
}

impl Tokenizer for WordTokenizer {
    type TokenStream<'a> = WordStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> WordStream<'a> {
        self.tokens.clear();
        let mut position = 0;
        let mut push = |tokens: &mut Vec<Token>, from: usize, to: usize| {
            tokens.push(Token {
                offset_from: from,
                offset_to: to,
                position,
                text: normal(&text[from..to]),
                position_length: 1,
            });
            position += 1;
        };
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let end_of = |i: usize| chars.get(i).map_or(text.len(), |(o, _)| *o);
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i].1;
            if !is_word(c) {
                i += 1;
                continue;
            }
            // A run of one kind: CJK characters, or other word characters (with ignorable
            // characters inside it, not at its end).
            let cjk = is_cjk(c);
            let start = i;
            loop {
                while i < chars.len() && is_word(chars[i].1) && is_cjk(chars[i].1) == cjk {
                    i += 1;
                }
                let mut j = i;
                while j < chars.len() && is_ignorable(chars[j].1) {
                    j += 1;
                }
                if cjk || j == i || j == chars.len() || !is_word(chars[j].1) || is_cjk(chars[j].1) {
                    break;
                }
                i = j;
            }
            if !cjk || i - start == 1 {
                push(&mut self.tokens, chars[start].0, end_of(i));
            } else {
                for (j, &(offset, _)) in chars.iter().enumerate().take(i - 1).skip(start) {
                    push(&mut self.tokens, offset, end_of(j + 2));
                }
            }
        }
        WordStream {
            tokens: &mut self.tokens,
            next: 0,
        }
    }
}

impl TokenStream for WordStream<'_> {
    fn advance(&mut self) -> bool {
        self.next += 1;
        self.next <= self.tokens.len()
    }

    fn token(&self) -> &Token {
        &self.tokens[self.next - 1]
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.next - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(text: &str) -> Vec<String> {
        tokens(&mut analyzer(None), text)
    }

    #[test]
    fn latin_words_are_lowercased_and_folded() {
        assert_eq!(
            toks("Café São-Paulo, ÅLESUND!"),
            ["cafe", "sao", "paulo", "alesund"]
        );
        assert_eq!(toks("Mililani Mauka 96789"), ["mililani", "mauka", "96789"]);
        assert!(toks("  ,,  ").is_empty());
    }

    #[test]
    fn words_are_compared_in_one_unicode_form_and_invisible_characters_do_not_split_them() {
        // Decomposed (NFD) and composed forms, full-width letters, a ligature.
        assert_eq!(toks("Zu\u{308}rich"), toks("Zürich"));
        assert_eq!(toks("Zu\u{308}rich"), ["zurich"]);
        assert_eq!(toks("Ｔｏｋｙｏ ﬁne"), ["tokyo", "fine"]);
        assert_eq!(toks("Kyo\u{301}to"), ["kyoto"]);
        // Zero-width space, joiner, soft hyphen, word joiner inside a word: still one word.
        assert_eq!(
            toks("Ams\u{200B}terdam Ro\u{00AD}ma Ber\u{2060}lin"),
            ["amsterdam", "roma", "berlin"]
        );
        // At a word's edge they change nothing; alone they are no word.
        assert_eq!(toks("\u{200B}paris\u{200B} \u{FEFF}"), ["paris"]);
        // Highlight offsets still point into the original text.
        let text = "Zu\u{308}rich";
        let mut a = analyzer(None);
        let mut s = a.token_stream(text);
        assert!(s.advance());
        assert_eq!(
            (s.token().offset_from, s.token().offset_to),
            (0, text.len())
        );
        // Persian words with a zero-width non-joiner stay whole.
        assert_eq!(toks("می\u{200C}خواهم").len(), 1);
    }

    #[test]
    fn non_latin_scripts_keep_their_words() {
        assert_eq!(toks("Казимиру Київ"), ["казимиру", "київ"]);
        assert_eq!(toks("كارلسكرونا"), ["كارلسكرونا"]);
        // Devanagari vowel signs and virama are combining marks: one word, not pieces.
        assert_eq!(toks("दिल्ली"), ["दिल्ली"]);
        // Folding is to ASCII only: Greek keeps its accents (stripping marks would break
        // scripts whose vowel signs are marks).
        assert_eq!(toks("Βούλα"), ["βούλα"]);
    }

    #[test]
    fn cjk_runs_become_bigrams() {
        assert_eq!(toks("那大镇"), ["那大", "大镇"]);
        assert_eq!(toks("镇"), ["镇"]);
        assert_eq!(toks("東京tower"), ["東京", "tower"]);
        assert_eq!(toks("イェウパトーリヤ").len(), 7);
        let mut a = analyzer(None);
        let mut s = a.token_stream("那大 镇x");
        let mut seen = Vec::new();
        while s.advance() {
            let t = s.token();
            seen.push((t.text.clone(), t.position, t.offset_from, t.offset_to));
        }
        assert_eq!(
            seen,
            [
                ("那大".to_owned(), 0, 0, 6),
                ("镇".to_owned(), 1, 7, 10),
                ("x".to_owned(), 2, 10, 11)
            ]
        );
    }

    #[test]
    fn stemmer_applies_after_folding() {
        let mut en = analyzer(language("English"));
        assert_eq!(tokens(&mut en, "Running cities"), ["run", "citi"]);
        assert!(language("klingon").is_none());
    }
}
