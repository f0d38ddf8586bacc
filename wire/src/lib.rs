//! The search API's wire types, defined once: query-api parses public requests with them and
//! describes them in `/openapi.json`, and the indexer's internal search endpoint parses the same
//! types, so the published schema cannot drift from what the engines accept.
//!
//! Requests deny unknown fields; [`parse`] names the field at fault by its JSON path.
//!
//! Long (~610 lines): the public request and answer types in one place, so the OpenAPI
//! document is generated from one file (the shard protocol is in `shard.rs`).

pub mod link;
pub mod lsn;
pub mod shard;
pub mod sse;

pub use lsn::{Lsn, ParseLsnError};

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use utoipa::ToSchema;

/// Largest `limit`, and largest `offset + limit`, of a search.
pub const MAX_HITS: usize = 10_000;
/// Largest `k` of a vector query.
pub const MAX_K: usize = 1_000;
/// Most values one facet returns.
pub const MAX_FACET_SIZE: usize = 1_000;
/// Most values of a query vector (pgvector's `vector` type allows as many).
pub const MAX_VECTOR_DIMS: usize = 16_000;

/// A search: any of text (`q` or `text`), `geo`, `vector` (fused with text by `hybrid`),
/// `filter`, with sorting, facets and paging, and the caller's freshness demands.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// Full-text query; shorthand for `text: {"q": …}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    /// Regions to search; all when empty or absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<TextRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub geo: Option<GeoRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector: Option<VectorRequest>,
    /// Fuse the text and vector results (reciprocal rank fusion).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hybrid: Option<HybridRequest>,
    /// Structured filter on the index's filter fields: `{"term": {"field": value}}`,
    /// `{"in": {"field": [values]}}`, `{"range": {"field": {"gte"|"gt"|"lte"|"lt": value}}}`,
    /// `{"exists": "field"}`, `{"and": [filters]}`, `{"or": [filters]}`, `{"not": filter}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Value>,
    /// Highlighted snippets for the text part (default true); same as `text.highlight`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub highlight: Option<bool>,
    /// Order by a filter field instead of by relevance (text and filter searches).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sort: Option<SortRequest>,
    /// Value counts of filter fields over the whole matching set (text and filter searches).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub facets: Vec<FacetRequest>,
    /// Count every match, so `total` is exact. Without it, text searches stop counting where
    /// ranking no longer needs to look (block-max WAND skips whole blocks of weak matches) and
    /// `total` is then a lower bound, marked `total_relation: "gte"` (like Elasticsearch's
    /// `track_total_hits`). Facets and sorting by a field count every match anyway.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub track_total_hits: bool,
    #[serde(default = "default_limit")]
    #[schema(minimum = 1, maximum = 10000, default = 10)]
    pub limit: usize,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 9999, default = 0)]
    pub offset: usize,
    /// The `next_cursor` of the previous page: the next page of the same search, at least as
    /// fresh as the previous one. Replaces `offset`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consistency: Option<Consistency>,
}

impl SearchRequest {
    /// The text part, `q` folded in; an error names the field when both are given.
    /// The top-level `highlight` is folded in as well.
    pub fn text_part(&mut self) -> Result<Option<TextRequest>, FieldError> {
        let mut text = match (self.q.take(), self.text.take()) {
            (Some(_), Some(_)) => return Err(FieldError::new("q", "give q or text, not both")),
            (Some(q), None) => Some(TextRequest {
                q,
                operator: Operator::And,
                highlight: true,
                typo: Typo::Off,
                prefix: PrefixMode::None,
            }),
            (None, t) => t,
        };
        if let Some(h) = self.highlight.take() {
            match text.as_mut() {
                Some(t) => t.highlight = h,
                None => {
                    return Err(FieldError::new(
                        "highlight",
                        "highlight applies to a text query (q or text)",
                    ))
                }
            }
        }
        Ok(text)
    }

    /// Checks `limit` (1..=MAX_HITS) and `offset + limit` (at most MAX_HITS): the one rule for
    /// query-api (with a cursor's offset) and the shards.
    pub fn check_page(limit: usize, offset: usize) -> Result<(), FieldError> {
        if limit == 0 || limit > MAX_HITS {
            return Err(FieldError::new(
                "limit",
                format!("limit must be in 1..={MAX_HITS}"),
            ));
        }
        if offset > MAX_HITS - limit {
            return Err(FieldError::new(
                "offset",
                format!("offset + limit must be at most {MAX_HITS}"),
            ));
        }
        Ok(())
    }
}

/// Freshness demands: read your own write, or refuse a stale answer.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Consistency {
    /// Wait until every touched partition has applied this LSN (e.g. the caller's
    /// `pg_current_wal_lsn()` taken after its commit), e.g. `"0/16B3748"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "0/16B3748")]
    pub min_lsn: Option<String>,
    /// Refuse (409 `too_stale`) an answer whose partitions lag more than this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_staleness_ms: Option<u64>,
    /// How long to wait for `min_lsn` (default and maximum from the server's config).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TextRequest {
    /// Words (all required by default), `"phrases"`, `prefix*`, `fuzzy~1`, `+must`, `-not`,
    /// `field:word`, `a OR b`.
    pub q: String,
    #[serde(default)]
    pub operator: Operator,
    /// Return highlighted snippets (`<b>` around matches).
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub highlight: bool,
    /// Typo tolerance for plain words: `auto` matches words of 5 or more characters within
    /// one edit, of 9 or more within two (an exact match still ranks above); `off` (default).
    #[serde(default)]
    pub typo: Typo,
    /// `last`: the last plain word also matches as a prefix (search as you type: `amster`
    /// finds Amsterdam); `none` (default).
    #[serde(default)]
    pub prefix: PrefixMode,
}

/// Typo tolerance of a text query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Typo {
    #[default]
    Off,
    Auto,
}

/// Which words of a text query also match as prefixes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PrefixMode {
    #[default]
    None,
    Last,
}

/// Whether plain words are all required (`and`) or any suffices (`or`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Operator {
    #[default]
    And,
    Or,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SortRequest {
    /// A filter field of the index.
    pub field: String,
    #[serde(default)]
    pub order: SortOrder,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SortOrder {
    #[default]
    Asc,
    Desc,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FacetRequest {
    /// A filter field of the index.
    pub field: String,
    #[serde(default = "default_limit")]
    #[schema(minimum = 1, maximum = 1000, default = 10)]
    pub size: usize,
}

/// Reciprocal rank fusion of the text and vector results: score = Σ weight / (k + rank).
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HybridRequest {
    /// Only `rrf`.
    #[serde(default)]
    pub method: FusionMethod,
    #[serde(default = "default_rrf_k")]
    #[schema(default = 60.0, minimum = 0.0)]
    pub k: f64,
    #[serde(default)]
    pub weights: Weights,
    /// How deep each branch is read; default 100 (at least offset + limit), at most 1000.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub window: Option<usize>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FusionMethod {
    #[default]
    Rrf,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Weights {
    #[serde(default = "one")]
    #[schema(default = 1.0, minimum = 0.0)]
    pub text: f64,
    #[serde(default = "one")]
    #[schema(default = 1.0, minimum = 0.0)]
    pub vector: f64,
}

impl Default for Weights {
    fn default() -> Weights {
        Weights {
            text: 1.0,
            vector: 1.0,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VectorRequest {
    /// The query embedding; as many values as the index's vector dimension.
    #[schema(max_items = 16000)]
    #[serde(deserialize_with = "f32_values")]
    pub values: Vec<f32>,
    #[serde(default = "default_limit")]
    #[schema(minimum = 1, maximum = 1000, default = 10)]
    pub k: usize,
    /// Graph search breadth over the regions searched (default: 1.25·√(vectors searched),
    /// at least 256, at most 4096; a larger graph needs a broader walk for the same recall).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 10000)]
    pub ef: Option<usize>,
    /// Exact scan instead of the graph.
    #[serde(default)]
    pub exact: bool,
}

/// Within a radius, within a box, or the `k` nearest. Beside text or a vector, `within` and
/// `bbox` filter them.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum GeoRequest {
    Within {
        #[schema(minimum = -90.0, maximum = 90.0)]
        lat: f64,
        #[schema(minimum = -180.0, maximum = 180.0)]
        lon: f64,
        #[schema(minimum = 0.0)]
        radius_m: f64,
    },
    Bbox {
        #[schema(minimum = -90.0, maximum = 90.0)]
        south: f64,
        #[schema(minimum = -180.0, maximum = 180.0)]
        west: f64,
        #[schema(minimum = -90.0, maximum = 90.0)]
        north: f64,
        #[schema(minimum = -180.0, maximum = 180.0)]
        east: f64,
    },
    Nearest {
        #[schema(minimum = -90.0, maximum = 90.0)]
        lat: f64,
        #[schema(minimum = -180.0, maximum = 180.0)]
        lon: f64,
        #[schema(minimum = 1, maximum = 10000)]
        k: usize,
    },
}

/// Whether a total is exact or a lower bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TotalRelation {
    Eq,
    Gte,
}

impl TotalRelation {
    /// The relation of a sum of totals: exact only when every part is.
    pub fn and(self, other: TotalRelation) -> TotalRelation {
        if self == TotalRelation::Eq && other == TotalRelation::Eq {
            TotalRelation::Eq
        } else {
            TotalRelation::Gte
        }
    }
}

/// A search answer.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct SearchResponse {
    pub hits: Vec<Hit>,
    /// How many documents match (text and filter searches): exact, or a lower bound when
    /// `total_relation` is `"gte"` (see `track_total_hits`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// `"eq"`: `total` is exact; `"gte"`: at least `total` documents match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_relation: Option<TotalRelation>,
    /// Per requested facet field: its most frequent values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facets: Option<BTreeMap<String, Vec<FacetBucket>>>,
    pub freshness: Freshness,
    /// Some partitions did not answer: see `missing`.
    pub partial: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<Vec<MissingShard>>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// One document found.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct Hit {
    /// The row's primary key, as text.
    pub key: String,
    pub region: String,
    /// Relevance (BM25, cosine similarity, or the fused RRF score).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Distance from the query point (geo searches).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance_m: Option<f64>,
    /// The row's stored fields, typed (null if the row vanished meanwhile). Carried as the
    /// JSON the shard wrote: query-api passes it on without parsing it.
    #[schema(value_type = Option<Object>)]
    pub fields: Box<RawValue>,
    /// Per text field, an HTML snippet with `<b>` around matches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub highlights: Option<BTreeMap<String, String>>,
    /// The value sorted on (with `sort`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object, nullable)]
    pub sort_value: Option<Value>,
    /// Hybrid: the hit's rank in each branch (null when absent from it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ranks: Option<BranchRanks>,
    /// Hybrid: the hit's score in each branch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch_scores: Option<BranchScores>,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct BranchRanks {
    pub text: Option<usize>,
    pub vector: Option<usize>,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct BranchScores {
    pub text: Option<f64>,
    pub vector: Option<f64>,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct FacetBucket {
    #[schema(value_type = Object)]
    pub value: Value,
    pub count: u64,
}

/// How fresh an answer is: each shard's applied LSN and lag, and the worst of them.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct Freshness {
    pub min_applied_lsn: String,
    pub max_lag_ms: u64,
    pub shards: Vec<ShardFreshness>,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct ShardFreshness {
    pub shard: String,
    pub regions: Vec<String>,
    pub applied_lsn: String,
    /// How far behind Postgres the shard is; while its stream is down, at least the time
    /// since it was last live.
    pub lag_ms: u64,
    pub lag_bytes: u64,
    /// `streaming`, or why not: `connecting`, `reconnecting`, `slot lost` (being rebuilt
    /// or stopping), `snapshot`.
    pub stream: String,
    /// Milliseconds since the commit time of the last transaction the shard applied (absent
    /// before its first since it started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_commit_age_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct MissingShard {
    pub shard: String,
    pub regions: Vec<String>,
}

/// Every error answer: a stable code, the request field at fault (empty if none) and a
/// message; some errors add `freshness` (409) or `missing` (503).
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorDetail,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub freshness: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<Vec<MissingShard>>,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// E.g. `invalid`, `bad_body`, `not_found`, `unauthorized`, `forbidden`,
    /// `rate_limited`, `min_lsn_not_reached`, `too_stale`, `shards_unavailable`.
    pub code: String,
    pub field: String,
    pub message: String,
}

/// A request field that fails validation.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Parses JSON into a request type; the error names the field at fault by its JSON path
/// (`body` for the whole), an unknown field included.
///
/// A body is parsed plainly first: tracking the path allocates for every key read, which
/// profiles showed in every request of both processes. Only a body that fails is parsed
/// again, the same way, to find where.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FieldError> {
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(path_error)?;
    // Nothing but whitespace may follow the JSON value.
    de.end()
        .map_err(|e| FieldError::new("body", format!("{e}: only one JSON value is allowed")))?;
    Ok(value)
}

/// Like [`parse`], from a JSON value (plainly first, the path only for a value that fails).
pub fn parse_value<T: DeserializeOwned>(v: Value) -> Result<T, FieldError> {
    if let Ok(value) = T::deserialize(&v) {
        return Ok(value);
    }
    serde_path_to_error::deserialize(v).map_err(path_error)
}

fn path_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> FieldError {
    let path = e.path().to_string();
    // A syntax error before any field is known leaves the path "." or "?".
    let field = if path == "." || path == "?" || path.is_empty() {
        "body".to_owned()
    } else {
        path
    };
    FieldError::new(field, e.inner().to_string())
}

/// A vector's values: numbers within a 32-bit float's range (a larger one would become
/// infinity, and travel on as `null`).
fn f32_values<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
    let values: Vec<f64> = Vec::deserialize(d)?;
    if let Some((i, x)) = values
        .iter()
        .enumerate()
        .find(|(_, x)| x.is_nan() || x.abs() > f64::from(f32::MAX))
    {
        return Err(serde::de::Error::custom(format!(
            "value {i} ({x:e}) is beyond a 32-bit float's range (magnitude at most 3.4e38)"
        )));
    }
    Ok(values.into_iter().map(|x| x as f32).collect())
}

fn default_limit() -> usize {
    10
}

fn default_rrf_k() -> f64 {
    60.0
}

fn yes() -> bool {
    true
}

fn one() -> f64 {
    1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_field_by_path() {
        let e =
            parse::<SearchRequest>(br#"{"geo": {"within": {"lat": 1, "lon": 2, "radius": 3}}}"#)
                .unwrap_err();
        assert_eq!(e.field, "geo.within.radius");
        assert!(e.message.contains("radius"), "{}", e.message);
        let e = parse::<SearchRequest>(br#"{"limit": "ten"}"#).unwrap_err();
        assert_eq!(e.field, "limit");
        let e = parse::<SearchRequest>(br#""x""#).unwrap_err();
        assert_eq!(e.field, "body");
        // Malformed JSON, and anything after the one value, name the body.
        for bad in [
            &br#"{"q" "x"}"#[..],
            br#"{"q": "x"} trailing"#,
            br#"{"q": "x"}{}"#,
        ] {
            let e = parse::<SearchRequest>(bad).unwrap_err();
            assert_eq!(
                e.field,
                "body",
                "{}: {}",
                String::from_utf8_lossy(bad),
                e.message
            );
        }
        assert!(parse::<SearchRequest>(b"{\"q\": \"x\"}\n ").is_ok());
        // Broken inside a field's value: that field is named.
        assert_eq!(parse::<SearchRequest>(br#"{"q": "#).unwrap_err().field, "q");
    }

    #[test]
    fn q_is_shorthand_for_text() {
        let mut r: SearchRequest = parse(br#"{"q": "paris"}"#).unwrap();
        let t = r.text_part().unwrap().unwrap();
        assert_eq!(
            (t.q.as_str(), t.operator, t.highlight),
            ("paris", Operator::And, true)
        );
        let mut r: SearchRequest = parse(br#"{"q": "a", "text": {"q": "b"}}"#).unwrap();
        assert_eq!(r.text_part().unwrap_err().field, "q");
        let mut r: SearchRequest = parse(br#"{"q": "a", "highlight": false}"#).unwrap();
        assert!(!r.text_part().unwrap().unwrap().highlight);
        let mut r: SearchRequest = parse(br#"{"highlight": true}"#).unwrap();
        assert_eq!(r.text_part().unwrap_err().field, "highlight");
    }

    #[test]
    fn a_request_survives_a_round_trip() {
        let body = br#"{"q":"x","regions":["europe"],"geo":{"within":{"lat":1.0,"lon":2.0,"radius_m":3.0}},
            "facets":[{"field":"country","size":5}],"limit":20,"offset":0,"consistency":{"min_lsn":"0/1"}}"#;
        let r: SearchRequest = parse(body).unwrap();
        let again: SearchRequest = parse_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(format!("{r:?}"), format!("{again:?}"));
    }
}
