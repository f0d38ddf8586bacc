//! Full-text queries: the query language, its lowering to tantivy queries for committed
//! segments, and an exact scorer for fresh-layer documents that gives the same BM25 score
//! tantivy would (same analyzers, same quantised field norms, same statistics), so a
//! document ranks the same before and after its commit.
//!
//! Syntax (Google-like): words are ANDed by default (`operator: or` makes plain words
//! optional); `"quoted phrase"`; `caf*` prefix; `paris~` / `paris~2` fuzzy (edit distance 1 or
//! 2, a transposition counting 1); `+word` required, `-word` excluded; `name:paris` or
//! `name:"new york"` scoped to one text field; `a OR b` alternatives, binding tighter than
//! the implicit AND (`cafe OR bar paris` = `(cafe OR bar) AND paris`). Words match across
//! all text fields with their configured boosts (the best field counts, plus a tenth of the
//! others: a disjunction-max, as Elasticsearch's `best_fields`).
//!
//! Long (~880 lines with tests) on purpose: the query language's parser, its limits, its
//! lenient alternatives (typo, prefix) and the ranking's name-field clause, its
//! lowering to tantivy and the exact scorer for fresh documents must agree clause by clause.

use tantivy::fieldnorm::FieldNormReader;
use tantivy::query::{
    AllQuery, Bm25StatisticsProvider, Bm25Weight, BooleanQuery, BoostQuery, ConstScoreQuery,
    DisjunctionMaxQuery, FuzzyTermQuery, Occur, PhraseQuery, Query, TermQuery,
};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{Score, Term};

use crate::analyzer;

/// Share of the non-best fields' scores a word gets (disjunction-max tie breaker).
pub const TIE_BREAKER: Score = 0.1;

/// Longest query text, in bytes.
pub const MAX_QUERY_BYTES: usize = 4_096;
/// Most terms a query may search for, each word (or phrase word) counted once per text field
/// it is matched in: every term costs a posting-list reader per segment, so a query of 17,000
/// words took 1.2 GB and 20 s before this cap.
pub const MAX_TERMS: usize = 1_024;
/// Most prefix (`caf*`) and fuzzy (`paris~`) words in a query: each expands to every matching
/// term of the dictionary (a fuzzy word builds a Levenshtein automaton of up to ~0.5 MB), so
/// 2,000 of them took 1.2 GB.
pub const MAX_EXPANSIONS: usize = 8;

/// What a document holding every query word in the ranking's name field gains: more than
/// any BM25 score plus popularity, so such documents rank first.
pub const NAME_MATCH_SCORE: Score = 1000.0;

/// Shortest plain word (in characters) matched within one edit under `typo`, and within two
/// (Meilisearch's defaults).
const ONE_TYPO_CHARS: usize = 5;
const TWO_TYPOS_CHARS: usize = 9;

pub use wire::Operator;

/// How forgiving a query is, and the ranking's name field.
#[derive(Clone, Copy, Debug, Default)]
pub struct Leniency {
    /// Plain words of 5 or more characters also match within one edit, of 9 or more within
    /// two (each such alternative scores like a fuzzy word, below an exact match).
    pub typo: bool,
    /// The last plain word also matches as a prefix (search as you type).
    pub prefix_last: bool,
    /// Position in the text fields of `RankingSpec::name_field`: documents holding every
    /// word of the query there score `NAME_MATCH_SCORE` more.
    pub name_field: Option<usize>,
}

/// A text field of the schema, as configured.
#[derive(Debug, Clone)]
pub struct TextField {
    pub field: Field,
    /// The column's name (what queries scope terms with: `name:paris`).
    pub name: String,
    /// Row position of the column.
    pub column: usize,
    pub boost: f32,
    pub language: Option<tantivy::tokenizer::Language>,
}

impl TextField {
    pub fn analyzer(&self) -> tantivy::tokenizer::TextAnalyzer {
        analyzer::analyzer(self.language)
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Form {
    Words(String),
    Phrase(String),
    Prefix(String),
    Fuzzy(String, u8),
}

#[derive(Clone, Debug, PartialEq)]
struct Clause {
    field: Option<String>,
    form: Form,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Sign {
    Plain,
    Required,
    Excluded,
}

/// One whitespace-separated item of a query, with its `OR` alternatives.
#[derive(Clone, Debug, PartialEq)]
struct Item {
    sign: Sign,
    alternatives: Vec<Clause>,
}

/// A query that cannot be parsed or lowered; the message is for the user.
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(pub String);

fn parse(q: &str) -> Result<Vec<Item>, QueryError> {
    let chars: Vec<char> = q.chars().collect();
    let mut i = 0;
    let mut items: Vec<Item> = Vec::new();
    let mut join_next = false;
    while i < chars.len() {
        if chars[i].is_whitespace() {
            i += 1;
            continue;
        }
        let mut sign = Sign::Plain;
        if (chars[i] == '+' || chars[i] == '-')
            && chars.get(i + 1).is_some_and(|c| !c.is_whitespace())
        {
            sign = if chars[i] == '+' {
                Sign::Required
            } else {
                Sign::Excluded
            };
            i += 1;
        }
        // `field:` scope: an identifier (not all digits) right before a colon.
        let mut field = None;
        let mut j = i;
        while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
            j += 1;
        }
        if j > i
            && j + 1 < chars.len()
            && chars[j] == ':'
            && !chars[j + 1].is_whitespace()
            && !chars[i..j].iter().all(char::is_ascii_digit)
        {
            field = Some(chars[i..j].iter().collect::<String>());
            i = j + 1;
        }
        let form = if chars[i] == '"' {
            let close = chars[i + 1..]
                .iter()
                .position(|&c| c == '"')
                .ok_or_else(|| QueryError("unterminated quote".into()))?;
            let text: String = chars[i + 1..i + 1 + close].iter().collect();
            i += close + 2;
            Form::Phrase(text)
        } else {
            let start = i;
            while i < chars.len() && !chars[i].is_whitespace() && chars[i] != '"' {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if sign == Sign::Plain && field.is_none() && (word == "OR" || word == "AND") {
                if word == "OR" && !items.is_empty() {
                    join_next = true;
                }
                continue;
            }
            if let Some(w) = word.strip_suffix('*') {
                Form::Prefix(w.to_owned())
            } else if let Some((w, d)) = word.rsplit_once('~') {
                let distance = match d {
                    "" => 1,
                    "1" => 1,
                    "2" => 2,
                    _ => {
                        return Err(QueryError(format!(
                            "fuzzy distance in {word:?} must be 1 or 2"
                        )))
                    }
                };
                Form::Fuzzy(w.to_owned(), distance)
            } else {
                Form::Words(word)
            }
        };
        let clause = Clause { field, form };
        match items.last_mut() {
            Some(last) if join_next && sign == Sign::Plain && last.sign == Sign::Plain => {
                last.alternatives.push(clause)
            }
            _ => items.push(Item {
                sign,
                alternatives: vec![clause],
            }),
        }
        join_next = false;
    }
    Ok(items)
}

/// A lowered query: what both tantivy and the fresh scorer evaluate.
#[derive(Clone)]
pub enum Node {
    /// BM25 over one token.
    Term {
        field: usize,
        token: String,
        weight: Option<Bm25Weight>,
    },
    /// BM25 over consecutive tokens (term frequency = occurrences of the phrase).
    Phrase {
        field: usize,
        tokens: Vec<String>,
        weight: Option<Bm25Weight>,
    },
    /// Any token starting with `prefix`; constant score 1.
    Prefix {
        field: usize,
        prefix: String,
    },
    /// Any token within `distance` edits; constant score 1.
    Fuzzy {
        field: usize,
        token: String,
        distance: u8,
    },
    Boost(Box<Node>, Score),
    /// This score when the child matches (its own score ignored).
    Const(Box<Node>, Score),
    /// Best child plus `TIE_BREAKER` times the others.
    DisMax(Vec<Node>),
    /// Every `must`, no `must_not`, and (without `must`) at least one `should`.
    Bool {
        must: Vec<Node>,
        should: Vec<Node>,
        must_not: Vec<Node>,
    },
    All,
}

/// A parsed, lowered text query over an index's text fields.
#[derive(Clone)]
pub struct TextQuery {
    pub root: Node,
    fields: Vec<Field>,
}

impl TextQuery {
    pub fn parse(q: &str, operator: Operator, text: &[TextField]) -> Result<TextQuery, QueryError> {
        TextQuery::parse_with(q, operator, text, Leniency::default())
    }

    /// `parse`, with typo and prefix alternatives and the name-field ranking of `leniency`.
    pub fn parse_with(
        q: &str,
        operator: Operator,
        text: &[TextField],
        leniency: Leniency,
    ) -> Result<TextQuery, QueryError> {
        if q.len() > MAX_QUERY_BYTES {
            return Err(QueryError(format!(
                "the query is {} bytes long, at most {MAX_QUERY_BYTES}",
                q.len()
            )));
        }
        let items = parse(q)?;
        let expansions = items
            .iter()
            .flat_map(|i| &i.alternatives)
            .filter(|c| matches!(c.form, Form::Prefix(_) | Form::Fuzzy(..)))
            .count();
        if expansions > MAX_EXPANSIONS {
            return Err(QueryError(format!(
                "the query has {expansions} prefix (word*) or fuzzy (word~) words, at most {MAX_EXPANSIONS}"
            )));
        }
        let items = widen(items, leniency, MAX_EXPANSIONS - expansions);
        let name_match = leniency
            .name_field
            .and_then(|f| text.get(f))
            .and_then(|f| name_match(&items, f, text).transpose())
            .transpose()?;
        let mut terms = 0;
        let (mut must, mut should, mut must_not) = (Vec::new(), Vec::new(), Vec::new());
        for item in items {
            let mut alternatives = Vec::new();
            for clause in &item.alternatives {
                if let Some(node) = lower_clause(clause, text)? {
                    visit(&node, &mut |n| match n {
                        Node::Term { .. } | Node::Prefix { .. } | Node::Fuzzy { .. } => terms += 1,
                        Node::Phrase { tokens, .. } => terms += tokens.len(),
                        _ => {}
                    });
                    if terms > MAX_TERMS {
                        return Err(QueryError(format!(
                            "the query searches more than {MAX_TERMS} terms (each word counts once per text field it is matched in); shorten it"
                        )));
                    }
                    alternatives.push(node);
                }
            }
            let node = match alternatives.len() {
                0 => continue,
                1 => alternatives.pop().expect("one"),
                _ => Node::Bool {
                    must: vec![],
                    should: alternatives,
                    must_not: vec![],
                },
            };
            match (item.sign, operator) {
                (Sign::Excluded, _) => must_not.push(node),
                (Sign::Required, _) | (Sign::Plain, Operator::And) => must.push(node),
                (Sign::Plain, Operator::Or) => should.push(node),
            }
        }
        if must.is_empty() && should.is_empty() {
            if must_not.is_empty() {
                return Err(QueryError("no searchable words".into()));
            }
            must.push(Node::All);
        }
        let mut root = Node::Bool {
            must,
            should,
            must_not,
        };
        if let Some(name) = name_match {
            root = Node::Bool {
                must: vec![root],
                should: vec![Node::Const(Box::new(name), NAME_MATCH_SCORE)],
                must_not: vec![],
            };
        }
        Ok(TextQuery {
            root,
            fields: text.iter().map(|t| t.field).collect(),
        })
    }

    /// Matches every document, with score 1 (for filter-only searches).
    pub fn all(text: &[TextField]) -> TextQuery {
        TextQuery {
            root: Node::All,
            fields: text.iter().map(|t| t.field).collect(),
        }
    }

    /// Every (field, token) the query scores with BM25, for statistics.
    pub fn terms(&self) -> Vec<Term> {
        let mut out = Vec::new();
        visit(&self.root, &mut |n| match n {
            Node::Term { field, token, .. } => {
                out.push(Term::from_field_text(self.fields[*field], token))
            }
            Node::Phrase { field, tokens, .. } => out.extend(
                tokens
                    .iter()
                    .map(|t| Term::from_field_text(self.fields[*field], t)),
            ),
            _ => {}
        });
        out
    }

    /// Fixes the BM25 weights from `stats` (for the fresh scorer; tantivy computes its own
    /// from the same provider).
    pub fn prepare(&mut self, stats: &dyn Bm25StatisticsProvider) -> tantivy::Result<()> {
        let fields = self.fields.clone();
        let mut result = Ok(());
        visit_mut(&mut self.root, &mut |n| match n {
            Node::Term {
                field,
                token,
                weight,
            } => {
                match Bm25Weight::for_terms(stats, &[Term::from_field_text(fields[*field], token)])
                {
                    Ok(w) => *weight = Some(w),
                    Err(e) => result = Err(e),
                }
            }
            Node::Phrase {
                field,
                tokens,
                weight,
            } => {
                let terms: Vec<Term> = tokens
                    .iter()
                    .map(|t| Term::from_field_text(fields[*field], t))
                    .collect();
                match Bm25Weight::for_terms(stats, &terms) {
                    Ok(w) => *weight = Some(w),
                    Err(e) => result = Err(e),
                }
            }
            _ => {}
        });
        result
    }

    /// The tantivy query for committed segments.
    pub fn to_tantivy(&self) -> Box<dyn Query> {
        to_tantivy(&self.root, &self.fields)
    }

    /// The score of an analyzed document (tokens per text field), `None` if it does not
    /// match. `prepare` must have run.
    pub fn score(&self, doc: &[Vec<String>]) -> Option<Score> {
        eval(&self.root, doc)
    }
}

/// Adds typo and prefix alternatives to plain words, as `leniency` asks, at most `budget` of
/// them (each expands to the matching terms of the dictionary): the first words first.
fn widen(mut items: Vec<Item>, leniency: Leniency, mut budget: usize) -> Vec<Item> {
    let last = items.iter().rposition(|i| i.sign != Sign::Excluded);
    for (n, item) in items.iter_mut().enumerate() {
        if item.sign == Sign::Excluded || item.alternatives.len() != 1 {
            continue;
        }
        let Clause {
            field,
            form: Form::Words(word),
        } = item.alternatives[0].clone()
        else {
            continue;
        };
        // One word, as the unstemmed analyzer sees it (not a hyphenated pair, not a number
        // split in two).
        let tokens = analyzer::tokens(&mut analyzer::analyzer(None), &word);
        let [token] = tokens.as_slice() else {
            continue;
        };
        let chars = token.chars().count();
        let mut more = Vec::new();
        if leniency.typo && chars >= ONE_TYPO_CHARS {
            let distance = if chars >= TWO_TYPOS_CHARS { 2 } else { 1 };
            more.push(Form::Fuzzy(token.clone(), distance));
        }
        if leniency.prefix_last && Some(n) == last {
            more.push(Form::Prefix(token.clone()));
        }
        for form in more {
            if budget == 0 {
                break;
            }
            budget -= 1;
            let field = field.clone();
            item.alternatives.push(Clause { field, form });
        }
    }
    items
}

/// The query's words all in `name` (each word by any of its alternatives); None when a
/// word is scoped to another field or the query has no positive word.
fn name_match(
    items: &[Item],
    name: &TextField,
    text: &[TextField],
) -> Result<Option<Node>, QueryError> {
    let mut must = Vec::new();
    for item in items.iter().filter(|i| i.sign != Sign::Excluded) {
        let mut alternatives = Vec::new();
        for clause in &item.alternatives {
            if clause.field.as_ref().is_some_and(|f| f != &name.name) {
                continue;
            }
            let scoped = Clause {
                field: Some(name.name.clone()),
                form: clause.form.clone(),
            };
            alternatives.extend(lower_clause(&scoped, text)?);
        }
        must.push(match alternatives.len() {
            0 => return Ok(None),
            1 => alternatives.pop().expect("one"),
            _ => Node::Bool {
                must: vec![],
                should: alternatives,
                must_not: vec![],
            },
        });
    }
    Ok((!must.is_empty()).then_some(Node::Bool {
        must,
        should: vec![],
        must_not: vec![],
    }))
}

fn lower_clause(clause: &Clause, text: &[TextField]) -> Result<Option<Node>, QueryError> {
    let targets: Vec<usize> = match &clause.field {
        None => (0..text.len()).collect(),
        Some(name) => match text.iter().position(|t| &t.name == name) {
            Some(i) => vec![i],
            None => {
                let known: Vec<&str> = text.iter().map(|t| t.name.as_str()).collect();
                return Err(QueryError(format!(
                    "unknown text field {name:?} (text fields: {})",
                    known.join(", ")
                )));
            }
        },
    };
    let mut per_field = Vec::new();
    for f in targets {
        let node = match &clause.form {
            Form::Words(s) | Form::Phrase(s) => {
                let mut tokens = analyzer::tokens(&mut text[f].analyzer(), s);
                match tokens.len() {
                    0 => None,
                    1 => Some(Node::Term {
                        field: f,
                        token: tokens.pop().expect("one"),
                        weight: None,
                    }),
                    _ => Some(Node::Phrase {
                        field: f,
                        tokens,
                        weight: None,
                    }),
                }
            }
            // Prefixes and fuzzy words are matched unstemmed (a stem of a prefix is no prefix).
            Form::Prefix(s) => {
                let mut tokens = analyzer::tokens(&mut analyzer::analyzer(None), s);
                let prefix = tokens.pop();
                prefix.map(|prefix| {
                    let last = Node::Prefix { field: f, prefix };
                    if tokens.is_empty() {
                        last
                    } else {
                        let mut must: Vec<Node> = tokens
                            .into_iter()
                            .map(|token| Node::Term {
                                field: f,
                                token,
                                weight: None,
                            })
                            .collect();
                        must.push(last);
                        Node::Bool {
                            must,
                            should: vec![],
                            must_not: vec![],
                        }
                    }
                })
            }
            Form::Fuzzy(s, distance) => {
                let mut tokens = analyzer::tokens(&mut analyzer::analyzer(None), s);
                match tokens.len() {
                    0 => None,
                    1 => Some(Node::Fuzzy {
                        field: f,
                        token: tokens.pop().expect("one"),
                        distance: *distance,
                    }),
                    _ => Some(Node::Phrase {
                        field: f,
                        tokens,
                        weight: None,
                    }),
                }
            }
        };
        if let Some(node) = node {
            let boost = text[f].boost;
            per_field.push(if boost == 1.0 {
                node
            } else {
                Node::Boost(Box::new(node), boost)
            });
        }
    }
    Ok(match per_field.len() {
        0 => None,
        1 => per_field.pop(),
        _ => Some(Node::DisMax(per_field)),
    })
}

fn visit(n: &Node, f: &mut dyn FnMut(&Node)) {
    f(n);
    match n {
        Node::Boost(c, _) | Node::Const(c, _) => visit(c, f),
        Node::DisMax(cs) => cs.iter().for_each(|c| visit(c, f)),
        Node::Bool {
            must,
            should,
            must_not,
        } => must
            .iter()
            .chain(should)
            .chain(must_not)
            .for_each(|c| visit(c, f)),
        _ => {}
    }
}

fn visit_mut(n: &mut Node, f: &mut dyn FnMut(&mut Node)) {
    f(n);
    match n {
        Node::Boost(c, _) | Node::Const(c, _) => visit_mut(c, f),
        Node::DisMax(cs) => cs.iter_mut().for_each(|c| visit_mut(c, f)),
        Node::Bool {
            must,
            should,
            must_not,
        } => must
            .iter_mut()
            .chain(should.iter_mut())
            .chain(must_not.iter_mut())
            .for_each(|c| visit_mut(c, f)),
        _ => {}
    }
}

fn to_tantivy(n: &Node, fields: &[Field]) -> Box<dyn Query> {
    let term = |f: usize, t: &str| Term::from_field_text(fields[f], t);
    match n {
        Node::Term { field, token, .. } => Box::new(TermQuery::new(
            term(*field, token),
            IndexRecordOption::WithFreqs,
        )),
        Node::Phrase { field, tokens, .. } => Box::new(PhraseQuery::new(
            tokens.iter().map(|t| term(*field, t)).collect(),
        )),
        Node::Prefix { field, prefix } => {
            Box::new(FuzzyTermQuery::new_prefix(term(*field, prefix), 0, true))
        }
        Node::Fuzzy {
            field,
            token,
            distance,
        } => Box::new(FuzzyTermQuery::new(term(*field, token), *distance, true)),
        Node::Boost(c, b) => Box::new(BoostQuery::new(to_tantivy(c, fields), *b)),
        Node::Const(c, score) => Box::new(ConstScoreQuery::new(to_tantivy(c, fields), *score)),
        Node::DisMax(cs) => Box::new(DisjunctionMaxQuery::with_tie_breaker(
            cs.iter().map(|c| to_tantivy(c, fields)).collect(),
            TIE_BREAKER,
        )),
        Node::Bool {
            must,
            should,
            must_not,
        } => Box::new(BooleanQuery::new(
            must.iter()
                .map(|c| (Occur::Must, to_tantivy(c, fields)))
                .chain(
                    should
                        .iter()
                        .map(|c| (Occur::Should, to_tantivy(c, fields))),
                )
                .chain(
                    must_not
                        .iter()
                        .map(|c| (Occur::MustNot, to_tantivy(c, fields))),
                )
                .collect(),
        )),
        Node::All => Box::new(AllQuery),
    }
}

fn fieldnorm_id(tokens: &[String]) -> u8 {
    FieldNormReader::fieldnorm_to_id(tokens.len() as u32)
}

fn eval(n: &Node, doc: &[Vec<String>]) -> Option<Score> {
    match n {
        Node::Term {
            field,
            token,
            weight,
        } => {
            let toks = &doc[*field];
            let tf = toks.iter().filter(|t| *t == token).count() as u32;
            (tf > 0).then(|| {
                weight
                    .as_ref()
                    .expect("prepared")
                    .score(fieldnorm_id(toks), tf)
            })
        }
        Node::Phrase {
            field,
            tokens,
            weight,
        } => {
            let toks = &doc[*field];
            let tf = toks.windows(tokens.len()).filter(|w| w == tokens).count() as u32;
            (tf > 0).then(|| {
                weight
                    .as_ref()
                    .expect("prepared")
                    .score(fieldnorm_id(toks), tf)
            })
        }
        Node::Prefix { field, prefix } => doc[*field]
            .iter()
            .any(|t| t.starts_with(prefix.as_str()))
            .then_some(1.0),
        Node::Fuzzy {
            field,
            token,
            distance,
        } => doc[*field]
            .iter()
            .any(|t| within_edits(token, t, *distance as usize))
            .then_some(1.0),
        Node::Boost(c, b) => eval(c, doc).map(|s| s * b),
        Node::Const(c, score) => eval(c, doc).map(|_| *score),
        Node::DisMax(cs) => {
            let scores: Vec<Score> = cs.iter().filter_map(|c| eval(c, doc)).collect();
            if scores.is_empty() {
                return None;
            }
            let max = scores.iter().copied().fold(Score::MIN, Score::max);
            let sum: Score = scores.iter().sum();
            Some(max + (sum - max) * TIE_BREAKER)
        }
        Node::Bool {
            must,
            should,
            must_not,
        } => {
            if must_not.iter().any(|c| eval(c, doc).is_some()) {
                return None;
            }
            let mut score = 0.0;
            for c in must {
                score += eval(c, doc)?;
            }
            let mut any = false;
            for c in should {
                if let Some(s) = eval(c, doc) {
                    score += s;
                    any = true;
                }
            }
            (any || !must.is_empty()).then_some(score)
        }
        Node::All => Some(1.0),
    }
}

/// Whether `a` and `b` are within `max` edits (insert, delete, substitute, or swap of two
/// adjacent characters), counted in characters — tantivy's Levenshtein automaton's measure.
pub fn within_edits(a: &str, b: &str, max: usize) -> bool {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > max {
        return false;
    }
    // Optimal string alignment distance, three rows.
    let mut prev2: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                cur[j] = cur[j].min(prev2[j - 2] + 1);
            }
        }
        if cur.iter().min().copied().unwrap_or(0) > max {
            return false;
        }
        prev2 = std::mem::replace(&mut prev, cur);
    }
    prev[b.len()] <= max
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clause(field: Option<&str>, form: Form) -> Clause {
        Clause {
            field: field.map(str::to_owned),
            form,
        }
    }

    #[test]
    fn syntax() {
        let items = parse(r#"+name:"new york" caf* paris~ -london~2 cafe OR bar"#).unwrap();
        assert_eq!(items.len(), 5);
        assert_eq!(items[0].sign, Sign::Required);
        assert_eq!(
            items[0].alternatives,
            [clause(Some("name"), Form::Phrase("new york".into()))]
        );
        assert_eq!(
            items[1].alternatives,
            [clause(None, Form::Prefix("caf".into()))]
        );
        assert_eq!(
            items[2].alternatives,
            [clause(None, Form::Fuzzy("paris".into(), 1))]
        );
        assert_eq!(items[3].sign, Sign::Excluded);
        assert_eq!(
            items[3].alternatives,
            [clause(None, Form::Fuzzy("london".into(), 2))]
        );
        assert_eq!(
            items[4].alternatives,
            [
                clause(None, Form::Words("cafe".into())),
                clause(None, Form::Words("bar".into()))
            ]
        );
        // Times and lone signs are words, not scopes or operators.
        let items = parse("10:30 - x").unwrap();
        assert_eq!(
            items[0].alternatives,
            [clause(None, Form::Words("10:30".into()))]
        );
        assert_eq!(items[1].sign, Sign::Plain);
        assert!(parse("\"open").is_err());
        assert!(parse("paris~3").is_err());
    }

    #[test]
    fn edit_distance_counts_a_swap_as_one() {
        assert!(within_edits("paris", "paris", 0));
        assert!(within_edits("paris", "pairs", 1));
        assert!(within_edits("paris", "parsi", 1));
        assert!(within_edits("paris", "pari", 1));
        assert!(!within_edits("paris", "london", 2));
        assert!(within_edits("kyiv", "kiev", 2));
        assert!(!within_edits("kyiv", "kiev", 1));
        assert!(within_edits("", "ab", 2));
    }

    #[test]
    fn a_query_costs_at_most_its_limits() {
        let mut schema = tantivy::schema::Schema::builder();
        let fields: Vec<TextField> = ["name", "alt", "body"]
            .iter()
            .enumerate()
            .map(|(column, name)| TextField {
                field: schema.add_text_field(name, tantivy::schema::TEXT),
                name: (*name).to_owned(),
                column,
                boost: 1.0,
                language: None,
            })
            .collect();
        let parse = |q: &str| TextQuery::parse(q, Operator::And, &fields).map(|_| ());
        // 341 words over three fields is 1,023 terms; 342 is too many, however written.
        let words = |n: usize| vec!["paris"; n].join(" ");
        assert!(parse(&words(341)).is_ok());
        let e = parse(&words(342)).unwrap_err();
        assert!(e.0.contains("1024 terms"), "{e}");
        assert!(parse(&format!("\"{}\"", words(342))).is_err());
        assert!(parse(&vec!["a"; 342].join("-")).is_err());
        assert!(parse(&format!("name:\"{}\"", words(600))).is_ok());
        // Expansions: eight prefixes or fuzzy words, not nine.
        assert!(parse(&["pa*"; 8].join(" ")).is_ok());
        let e = parse(
            &vec!["pa*"; 5]
                .into_iter()
                .chain(vec!["lond~2"; 4])
                .collect::<Vec<_>>()
                .join(" "),
        )
        .unwrap_err();
        assert!(e.0.contains("9 prefix"), "{e}");
        let e = parse(&"x".repeat(MAX_QUERY_BYTES + 1)).unwrap_err();
        assert!(e.0.contains("bytes"), "{e}");
    }
}
