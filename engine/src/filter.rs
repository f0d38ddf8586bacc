//! Structured filters on an index's `filter_fields`: term, IN, range, exists, combined with
//! and / or / not. One expression is both lowered to a tantivy query (committed segments,
//! over the typed `f_<column>` fields) and evaluated directly on fresh documents.
//!
//! JSON form (the request's `filter`):
//! `{"term": {"country_code": "FR"}}`, `{"in": {"country_code": ["FR", "DE"]}}`,
//! `{"range": {"population": {"gte": 1000, "lt": 50000}}}`, `{"exists": "population"}`,
//! `{"and": [..]}`, `{"or": [..]}`, `{"not": {..}}`.

use std::ops::Bound;

use serde_json::Value;
use tantivy::query::{
    AllQuery, BooleanQuery, ExistsQuery, Occur, Query, RangeQuery, TermQuery, TermSetQuery,
};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::Term;

/// How a filter column is typed in the index (from its Postgres type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterKind {
    Int,
    Float,
    Bool,
    Text,
    /// `date`, `timestamp`, `timestamptz`: microseconds since the Unix epoch, UTC (dates and
    /// timestamps without zone are taken as UTC).
    Time,
}

/// A filter column's value in one document.
#[derive(Clone, Debug, PartialEq)]
pub enum FilterValue {
    Int(i64),
    Float(f64),
    Bool(bool),
    Text(String),
    /// Microseconds since the Unix epoch, UTC.
    Time(i64),
}

/// Microseconds since the epoch of a Postgres or RFC 3339 date/time text: with an offset
/// (`2024-01-31 12:34:56.789+01`), without one (UTC), or a date alone (midnight UTC).
pub fn parse_time(text: &str) -> Option<i64> {
    match text {
        "infinity" => return Some(i64::MAX),
        "-infinity" => return Some(i64::MIN),
        _ => {}
    }
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Some(t.as_microsecond());
    }
    let civil = text.parse::<jiff::civil::DateTime>().ok()?;
    jiff::tz::TimeZone::UTC
        .to_timestamp(civil)
        .ok()
        .map(|t| t.as_microsecond())
}

/// RFC 3339 form of microseconds since the epoch (UTC).
pub fn format_time(micros: i64) -> String {
    match micros {
        i64::MAX => "infinity".into(),
        i64::MIN => "-infinity".into(),
        m => jiff::Timestamp::from_microsecond(m)
            .map(|t| t.to_string())
            .unwrap_or_else(|_| m.to_string()),
    }
}

impl FilterKind {
    /// The kind for a Postgres type name, if filters support it.
    pub fn of_pg_type(type_name: &str) -> Option<FilterKind> {
        Some(match type_name {
            "int2" | "int4" | "int8" => FilterKind::Int,
            "float4" | "float8" | "numeric" => FilterKind::Float,
            "bool" => FilterKind::Bool,
            "text" | "varchar" | "bpchar" | "name" | "citext" => FilterKind::Text,
            "date" | "timestamp" | "timestamptz" => FilterKind::Time,
            _ => return None,
        })
    }

    /// Parses a column's Postgres text form.
    pub fn parse(self, text: &str) -> Result<FilterValue, String> {
        match self {
            FilterKind::Int => text
                .parse()
                .map(FilterValue::Int)
                .map_err(|_| format!("{text:?} is not an integer")),
            FilterKind::Float => match text.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(FilterValue::Float(v)),
                _ => Err(format!("{text:?} is not a finite number")),
            },
            FilterKind::Bool => match text {
                "t" | "true" => Ok(FilterValue::Bool(true)),
                "f" | "false" => Ok(FilterValue::Bool(false)),
                _ => Err(format!("{text:?} is not a boolean")),
            },
            FilterKind::Text => Ok(FilterValue::Text(text.to_owned())),
            FilterKind::Time => parse_time(text)
                .map(FilterValue::Time)
                .ok_or_else(|| format!("{text:?} is not a date or time this index can read")),
        }
    }
}

/// A filter column of the schema.
#[derive(Clone, Debug)]
pub struct FilterField {
    pub field: Field,
    /// The column's name (what requests use).
    pub name: String,
    pub kind: FilterKind,
    /// Position of the column in the row.
    pub column: usize,
}

impl FilterField {
    fn term(&self, v: &FilterValue) -> Term {
        match v {
            FilterValue::Int(i) | FilterValue::Time(i) => Term::from_field_i64(self.field, *i),
            FilterValue::Float(f) => Term::from_field_f64(self.field, *f),
            FilterValue::Bool(b) => Term::from_field_bool(self.field, *b),
            FilterValue::Text(s) => Term::from_field_text(self.field, s),
        }
    }
}

/// A parsed filter expression; field numbers index `Fields::filters`.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    In(usize, Vec<FilterValue>),
    Range {
        field: usize,
        lower: Bound<FilterValue>,
        upper: Bound<FilterValue>,
    },
    Exists(usize),
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
}

/// A malformed filter: the JSON path of the offending part, and what is wrong.
#[derive(Debug, PartialEq)]
pub struct FilterError {
    pub path: String,
    pub message: String,
}

fn err<T>(path: &str, message: impl Into<String>) -> Result<T, FilterError> {
    Err(FilterError {
        path: path.to_owned(),
        message: message.into(),
    })
}

/// Most nested parts and values one filter may have.
const MAX_PARTS: usize = 1_024;

impl Filter {
    /// Parses the JSON form against the index's filter fields; `path` names the request
    /// field (`"filter"`) in errors.
    pub fn parse(v: &Value, fields: &[FilterField], path: &str) -> Result<Filter, FilterError> {
        let mut budget = MAX_PARTS;
        parse(v, fields, path, &mut budget)
    }

    pub fn to_tantivy(&self, fields: &[FilterField]) -> Box<dyn Query> {
        match self {
            Filter::In(f, values) => {
                let ff = &fields[*f];
                if values.len() == 1 {
                    Box::new(TermQuery::new(
                        ff.term(&values[0]),
                        IndexRecordOption::Basic,
                    ))
                } else {
                    Box::new(TermSetQuery::new(values.iter().map(|v| ff.term(v))))
                }
            }
            Filter::Range {
                field,
                lower,
                upper,
            } => {
                let ff = &fields[*field];
                let map = |b: &Bound<FilterValue>| match b {
                    Bound::Included(v) => Bound::Included(ff.term(v)),
                    Bound::Excluded(v) => Bound::Excluded(ff.term(v)),
                    Bound::Unbounded => Bound::Unbounded,
                };
                Box::new(RangeQuery::new(map(lower), map(upper)))
            }
            Filter::Exists(f) => {
                Box::new(ExistsQuery::new(format!("f_{}", fields[*f].name), false))
            }
            Filter::And(parts) => Box::new(BooleanQuery::new(
                parts
                    .iter()
                    .map(|p| (Occur::Must, p.to_tantivy(fields)))
                    .collect(),
            )),
            Filter::Or(parts) => Box::new(BooleanQuery::new(
                parts
                    .iter()
                    .map(|p| (Occur::Should, p.to_tantivy(fields)))
                    .collect(),
            )),
            Filter::Not(p) => Box::new(BooleanQuery::new(vec![
                (Occur::Must, Box::new(AllQuery) as Box<dyn Query>),
                (Occur::MustNot, p.to_tantivy(fields)),
            ])),
        }
    }

    /// Whether a document with these filter values (one per filter field) passes.
    pub fn matches(&self, values: &[Option<FilterValue>]) -> bool {
        match self {
            Filter::In(f, wanted) => values[*f].as_ref().is_some_and(|v| wanted.contains(v)),
            Filter::Range {
                field,
                lower,
                upper,
            } => values[*field].as_ref().is_some_and(|v| {
                let above = match lower {
                    Bound::Included(l) => compare(v, l).is_some_and(|o| o.is_ge()),
                    Bound::Excluded(l) => compare(v, l).is_some_and(|o| o.is_gt()),
                    Bound::Unbounded => true,
                };
                let below = match upper {
                    Bound::Included(u) => compare(v, u).is_some_and(|o| o.is_le()),
                    Bound::Excluded(u) => compare(v, u).is_some_and(|o| o.is_lt()),
                    Bound::Unbounded => true,
                };
                above && below
            }),
            Filter::Exists(f) => values[*f].is_some(),
            Filter::And(parts) => parts.iter().all(|p| p.matches(values)),
            Filter::Or(parts) => parts.iter().any(|p| p.matches(values)),
            Filter::Not(p) => !p.matches(values),
        }
    }
}

fn compare(a: &FilterValue, b: &FilterValue) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (FilterValue::Int(x), FilterValue::Int(y))
        | (FilterValue::Time(x), FilterValue::Time(y)) => Some(x.cmp(y)),
        (FilterValue::Float(x), FilterValue::Float(y)) => x.partial_cmp(y),
        (FilterValue::Bool(x), FilterValue::Bool(y)) => Some(x.cmp(y)),
        // Tantivy orders text terms by bytes; so do we.
        (FilterValue::Text(x), FilterValue::Text(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        _ => None,
    }
}

fn field<'a>(
    name: &str,
    fields: &'a [FilterField],
    path: &str,
) -> Result<(usize, &'a FilterField), FilterError> {
    match fields.iter().position(|f| f.name == name) {
        Some(i) => Ok((i, &fields[i])),
        None => {
            let known: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
            err(
                path,
                format!(
                    "{name:?} is not a filter field (filter fields: {})",
                    if known.is_empty() {
                        "none configured".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            )
        }
    }
}

/// A request value as a value of the field's kind.
fn value(v: &Value, f: &FilterField, path: &str) -> Result<FilterValue, FilterError> {
    let wrong = || {
        err(
            path,
            format!("{v} is not a {} (field {:?})", kind_name(f.kind), f.name),
        )
    };
    match f.kind {
        FilterKind::Int => match v.as_i64() {
            Some(i) => Ok(FilterValue::Int(i)),
            None => wrong(),
        },
        FilterKind::Float => match v.as_f64() {
            Some(x) if x.is_finite() => Ok(FilterValue::Float(x)),
            _ => wrong(),
        },
        FilterKind::Bool => match v.as_bool() {
            Some(b) => Ok(FilterValue::Bool(b)),
            None => wrong(),
        },
        FilterKind::Text => match v.as_str() {
            Some(s) => Ok(FilterValue::Text(s.to_owned())),
            None => wrong(),
        },
        FilterKind::Time => match v.as_str().and_then(parse_time) {
            Some(t) => Ok(FilterValue::Time(t)),
            None => wrong(),
        },
    }
}

fn kind_name(k: FilterKind) -> &'static str {
    match k {
        FilterKind::Int => "integer",
        FilterKind::Float => "number",
        FilterKind::Bool => "boolean",
        FilterKind::Text => "string",
        FilterKind::Time => {
            "date or time (RFC 3339, e.g. \"2024-01-31\" or \"2024-01-31T12:00:00Z\")"
        }
    }
}

/// The single `{"name": value}` pair of an operator's object.
fn single<'a>(v: &'a Value, path: &str) -> Result<(&'a String, &'a Value), FilterError> {
    match v.as_object() {
        Some(m) if m.len() == 1 => Ok(m.iter().next().expect("one entry")),
        _ => err(path, "must be an object with exactly one field name"),
    }
}

fn parse(
    v: &Value,
    fields: &[FilterField],
    path: &str,
    budget: &mut usize,
) -> Result<Filter, FilterError> {
    if *budget == 0 {
        return err(path, format!("a filter may have at most {MAX_PARTS} parts"));
    }
    *budget -= 1;
    let Some(obj) = v.as_object().filter(|m| m.len() == 1) else {
        return err(
            path,
            "must be an object with one operator: term, in, range, exists, and, or, not",
        );
    };
    let (op, arg) = obj.iter().next().expect("one entry");
    let here = format!("{path}.{op}");
    match op.as_str() {
        "term" => {
            let (name, val) = single(arg, &here)?;
            let at = format!("{here}.{name}");
            let (i, f) = field(name, fields, &at)?;
            Ok(Filter::In(i, vec![value(val, f, &at)?]))
        }
        "in" => {
            let (name, vals) = single(arg, &here)?;
            let at = format!("{here}.{name}");
            let (i, f) = field(name, fields, &at)?;
            let Some(vals) = vals.as_array() else {
                return err(&at, "must be an array of values");
            };
            if vals.len() > *budget {
                return err(&at, format!("a filter may have at most {MAX_PARTS} values"));
            }
            *budget -= vals.len();
            let values = vals
                .iter()
                .enumerate()
                .map(|(k, x)| value(x, f, &format!("{at}[{k}]")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Filter::In(i, values))
        }
        "range" => {
            let (name, bounds) = single(arg, &here)?;
            let at = format!("{here}.{name}");
            let (i, f) = field(name, fields, &at)?;
            if f.kind == FilterKind::Bool {
                return err(&at, "a boolean field has no range: use term");
            }
            let Some(bounds) = bounds.as_object().filter(|b| !b.is_empty()) else {
                return err(&at, "must be an object of gt / gte / lt / lte");
            };
            let (mut lower, mut upper) = (Bound::Unbounded, Bound::Unbounded);
            for (k, x) in bounds {
                let p = format!("{at}.{k}");
                let val = value(x, f, &p)?;
                match k.as_str() {
                    "gt" => lower = Bound::Excluded(val),
                    "gte" => lower = Bound::Included(val),
                    "lt" => upper = Bound::Excluded(val),
                    "lte" => upper = Bound::Included(val),
                    _ => return err(&p, "range bounds are gt, gte, lt, lte"),
                }
            }
            Ok(Filter::Range {
                field: i,
                lower,
                upper,
            })
        }
        "exists" => {
            let Some(name) = arg.as_str() else {
                return err(&here, "must be a field name");
            };
            let (i, _) = field(name, fields, &here)?;
            Ok(Filter::Exists(i))
        }
        "and" | "or" => {
            let Some(parts) = arg.as_array().filter(|a| !a.is_empty()) else {
                return err(&here, "must be a non-empty array of filters");
            };
            let parts = parts
                .iter()
                .enumerate()
                .map(|(k, p)| parse(p, fields, &format!("{here}[{k}]"), budget))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(if op == "and" {
                Filter::And(parts)
            } else {
                Filter::Or(parts)
            })
        }
        "not" => Ok(Filter::Not(Box::new(parse(arg, fields, &here, budget)?))),
        _ => err(
            &here,
            format!("unknown operator {op:?} (term, in, range, exists, and, or, not)"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields() -> Vec<FilterField> {
        let mut b = tantivy::schema::Schema::builder();
        vec![
            FilterField {
                field: b.add_i64_field("f_population", tantivy::schema::INDEXED),
                name: "population".into(),
                kind: FilterKind::Int,
                column: 0,
            },
            FilterField {
                field: b.add_text_field("f_country_code", tantivy::schema::STRING),
                name: "country_code".into(),
                kind: FilterKind::Text,
                column: 1,
            },
        ]
    }

    fn doc(pop: Option<i64>, cc: &str) -> Vec<Option<FilterValue>> {
        vec![
            pop.map(FilterValue::Int),
            Some(FilterValue::Text(cc.into())),
        ]
    }

    #[test]
    fn parses_and_evaluates() {
        let f = fields();
        let q = Filter::parse(
            &json!({"and": [
                {"in": {"country_code": ["FR", "DE"]}},
                {"range": {"population": {"gte": 1000, "lt": 5000}}},
                {"not": {"term": {"population": 2000}}}
            ]}),
            &f,
            "filter",
        )
        .unwrap();
        assert!(q.matches(&doc(Some(1000), "FR")));
        assert!(q.matches(&doc(Some(4999), "DE")));
        assert!(!q.matches(&doc(Some(5000), "DE")));
        assert!(!q.matches(&doc(Some(2000), "DE")));
        assert!(!q.matches(&doc(Some(1500), "IT")));
        assert!(!q.matches(&doc(None, "FR")));
        let exists = Filter::parse(&json!({"exists": "population"}), &f, "filter").unwrap();
        assert!(!exists.matches(&doc(None, "FR")));
        let either = Filter::parse(
            &json!({"or": [{"term": {"country_code": "IT"}}, {"exists": "population"}]}),
            &f,
            "filter",
        )
        .unwrap();
        assert!(either.matches(&doc(None, "IT")));
        assert!(!either.matches(&doc(None, "FR")));
    }

    #[test]
    fn times_parse_from_postgres_and_rfc3339_forms() {
        let t = |s: &str| parse_time(s).unwrap();
        assert_eq!(t("1970-01-01"), 0);
        assert_eq!(t("1970-01-01 00:00:01.5"), 1_500_000);
        assert_eq!(t("1970-01-01 01:00:00+01"), 0);
        assert_eq!(t("1970-01-01T00:00:00Z"), 0);
        assert_eq!(
            t("2024-01-31 12:34:56.789+05:30"),
            t("2024-01-31T07:04:56.789Z")
        );
        assert_eq!(
            format_time(t("2024-01-31 07:04:56.789+00")),
            "2024-01-31T07:04:56.789Z"
        );
        assert!(parse_time("yesterday").is_none());
        assert_eq!(
            FilterKind::of_pg_type("timestamptz"),
            Some(FilterKind::Time)
        );
    }

    #[test]
    fn errors_name_the_path() {
        let f = fields();
        let e = |v: Value| Filter::parse(&v, &f, "filter").unwrap_err().path;
        assert_eq!(e(json!({"term": {"nope": 1}})), "filter.term.nope");
        assert_eq!(
            e(json!({"term": {"population": "many"}})),
            "filter.term.population"
        );
        assert_eq!(
            e(json!({"and": [{"exists": "population"}, {"bogus": 1}]})),
            "filter.and[1].bogus"
        );
        assert_eq!(
            e(json!({"range": {"population": {"above": 3}}})),
            "filter.range.population.above"
        );
        assert_eq!(
            e(json!({"in": {"country_code": ["FR", 3]}})),
            "filter.in.country_code[1]"
        );
        assert_eq!(
            e(json!({"term": {"population": 1.5}})),
            "filter.term.population"
        );
        assert_eq!(e(json!([])), "filter");
    }
}
