//! The shard protocol: what query-api asks an indexer shard and what the shard answers, on its
//! internal endpoint. Both ends serialize and parse these types; none of them is public API
//! (the public answers are built from them in query-api).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{FacetBucket, FieldError, Hit, Lsn, SearchRequest};

/// The paths of the shard endpoint. Every name, key or position is a percent-encoded query
/// value: never a path segment (URL parsers resolve `..`, even encoded), so no value can
/// reach another route.
pub mod path {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

    use crate::Lsn;

    /// Everything but RFC 3986's unreserved characters is encoded.
    const VALUE: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');

    fn query(pairs: &[(&str, &str)]) -> String {
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, VALUE)))
            .collect::<Vec<_>>()
            .join("&")
    }

    pub const SEARCH: &str = "/internal/search";
    pub const STATUS: &str = "/status";

    pub fn wait(lsn: Lsn, timeout_ms: u64) -> String {
        format!("/internal/wait?lsn={lsn}&timeout_ms={timeout_ms}")
    }

    pub fn dump(index: &str) -> String {
        format!("/internal/dump?{}", query(&[("index", index)]))
    }

    /// The dump, with the keys changed after `lsn` (`DumpResponse::changed`).
    pub fn dump_changed_after(index: &str, lsn: Lsn) -> String {
        let lsn = lsn.to_string();
        format!(
            "/internal/dump?{}",
            query(&[("index", index), ("changed_after", &lsn)])
        )
    }

    /// The scope's parameters, as pairs beside the others.
    fn scoped<'a>(mut pairs: Vec<(&'a str, &'a str)>, scope: &'a super::ReadScope) -> String {
        if let Some(r) = &scope.scope_regions {
            pairs.push(("scope_regions", r));
        }
        if let Some(f) = &scope.scope_filter {
            pairs.push(("scope_filter", f));
        }
        query(&pairs)
    }

    pub fn document(index: &str, key: &str, scope: &super::ReadScope) -> String {
        format!(
            "/internal/document?{}",
            scoped(vec![("index", index), ("key", key)], scope)
        )
    }

    /// The feed of `index`, after `since` (a position `LSN:n`, or an LSN) when given.
    pub fn changes(index: &str, since: Option<&str>, scope: &super::ReadScope) -> String {
        let mut pairs = vec![("index", index)];
        if let Some(s) = since {
            pairs.push(("since", s));
        }
        format!("/internal/changes?{}", scoped(pairs, scope))
    }
}

/// What a caller with a scoped key may read, carried with its document reads and change
/// feeds (its searches carry it inside the request: regions and an AND-ed filter). Both as
/// text, so they travel as query values too: regions comma-separated (region names have no
/// commas), the filter as JSON in the public filter syntax. None: no restriction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadScope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope_regions: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope_filter: Option<String>,
}

impl ReadScope {
    pub fn is_open(&self) -> bool {
        self.scope_regions.is_none() && self.scope_filter.is_none()
    }

    /// The regions allowed, when restricted.
    pub fn regions(&self) -> Option<Vec<&str>> {
        self.scope_regions
            .as_deref()
            .map(|r| r.split(',').filter(|r| !r.is_empty()).collect())
    }
}

/// The secret a shard endpoint requires of its callers (`Authorization: Bearer <secret>` on
/// every route but `/healthz`, the shard link's upgrade included), shared by query-api and the
/// indexer. It never prints: `Debug` shows it redacted.
#[derive(Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct Secret(String);

/// Shortest secret accepted.
pub const MIN_SECRET_LEN: usize = 16;

impl TryFrom<String> for Secret {
    type Error = String;

    fn try_from(s: String) -> Result<Secret, String> {
        if s.len() < MIN_SECRET_LEN || s.chars().any(|c| !c.is_ascii_graphic()) {
            return Err(format!(
                "a shard secret is at least {MIN_SECRET_LEN} printable ASCII characters, without spaces"
            ));
        }
        Ok(Secret(s))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    /// The `Authorization` header value that presents it.
    pub fn header_value(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Whether an `Authorization` header value presents this secret (constant time in the
    /// secret's content).
    pub fn admits(&self, authorization: Option<&[u8]>) -> bool {
        use subtle::ConstantTimeEq;
        let presented = authorization
            .and_then(|v| v.strip_prefix(b"Bearer "))
            .unwrap_or_default();
        bool::from(presented.ct_eq(self.0.as_bytes()))
    }
}

/// `POST /internal/search`: the public request (its paging set by query-api) plus the index,
/// in one flat JSON object.
#[derive(Debug, Clone, Serialize)]
pub struct ShardSearchRequest<'a> {
    pub index: &'a str,
    #[serde(flatten)]
    pub search: &'a SearchRequest,
}

/// Parses a shard search body: the index name, then the request; a malformed body names the
/// field at fault by its JSON path, as for the public request.
pub fn parse_shard_search(bytes: &[u8]) -> Result<(String, SearchRequest), FieldError> {
    let mut body: Value = crate::parse(bytes)?;
    let index = match body.as_object_mut().and_then(|o| o.remove("index")) {
        Some(Value::String(name)) => name,
        _ => return Err(FieldError::new("index", "index: a string is required")),
    };
    Ok((index, crate::parse_value(body)?))
}

/// A shard's answer to a search: its hits (already the page asked for), and how fresh it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardSearchResponse {
    pub applied_lsn: Lsn,
    pub lag_ms: u64,
    pub lag_bytes: u64,
    /// The shard's stream: `streaming`, or why not (`connecting`, `reconnecting`,
    /// `slot lost`, `snapshot`).
    #[serde(default = "streaming")]
    pub stream: String,
    /// Milliseconds since the commit time of the last transaction the shard applied (absent
    /// before its first since it started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_commit_age_ms: Option<u64>,
    pub hits: Vec<Hit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_relation: Option<crate::TotalRelation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facets: Option<BTreeMap<String, Vec<FacetBucket>>>,
}

fn streaming() -> String {
    "streaming".to_owned()
}

/// `GET /internal/wait?lsn=…&timeout_ms=…`: 200 when reached, 409 when not.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WaitResponse {
    pub requested_lsn: Lsn,
    pub applied_lsn: Lsn,
    pub reached: bool,
}

/// Every error a shard answers: the request field at fault (empty if none) and a message;
/// a change feed asked from too far back adds where it is complete from (410).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardError {
    pub error: ShardErrorDetail,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete_after: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardErrorDetail {
    pub field: String,
    pub message: String,
}

impl ShardError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> ShardError {
        ShardError {
            error: ShardErrorDetail {
                field: field.into(),
                message: message.into(),
            },
            complete_after: None,
        }
    }
}

/// A document read on the shard link (`link::Call::Document`): the index and the key, as
/// data.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentRequest {
    pub index: String,
    pub key: String,
    /// A scoped caller's restriction: a document outside it is not found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope_regions: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope_filter: Option<String>,
}

impl DocumentRequest {
    pub fn scope(&self) -> ReadScope {
        ReadScope {
            scope_regions: self.scope_regions.clone(),
            scope_filter: self.scope_filter.clone(),
        }
    }
}

/// `GET /internal/document?index=…&key=…`: one document's stored fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DocumentResponse {
    pub key: String,
    pub region: String,
    pub fields: Box<serde_json::value::RawValue>,
    pub applied_lsn: Lsn,
}

/// `GET /internal/dump/{index}`: every document as (key, content hash in hex), per region.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DumpResponse {
    pub applied_lsn: Lsn,
    pub durable_lsn: Lsn,
    pub partitions: BTreeMap<String, Vec<(String, String)>>,
    /// Asked with `changed_after`: the keys of the index changed after that LSN, through
    /// `applied_lsn` at least (from the change feed). None when unknown: not asked, a
    /// TRUNCATE among those changes, or older than the feed keeps.
    #[serde(default)]
    pub changed: Option<Vec<String>>,
}

/// One change of the feed (`/internal/changes/{index}`, the `data` of a `change` event).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeData {
    pub index: String,
    /// None for TRUNCATE.
    pub key: Option<String>,
    /// `upsert`, `delete` or `truncate`.
    pub op: String,
    /// Where the document now lives (upsert) or lived (delete; None when that is unknown).
    pub region: Option<String>,
    pub lsn: Lsn,
}

/// `GET /status`: the shard's stream, snapshot, slot, freshness and partitions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardStatus {
    pub slot: String,
    /// `streaming`, `reconnecting in … ms`, …
    pub stream: String,
    pub last_error: Option<String>,
    pub reconnects: u64,
    pub snapshot: SnapshotProgress,
    pub applied_lsn: Lsn,
    pub server_wal_end: Lsn,
    pub lag_bytes: u64,
    pub lag_ms: u64,
    /// Milliseconds since the commit time of the last transaction applied since start.
    #[serde(default)]
    pub last_commit_age_ms: Option<u64>,
    pub slot_status: Option<SlotStatus>,
    pub rows_applied: u64,
    pub transactions_applied: u64,
    pub rejected_rows: u64,
    pub rejected_rows_without_partition: u64,
    pub recent_rejections: Vec<RejectionReport>,
    pub partitions: Vec<PartitionStatus>,
}

impl ShardStatus {
    /// Snapshot done (or resumed) and the stream live.
    pub fn ready(&self) -> bool {
        matches!(self.snapshot.state.as_str(), "done" | "resumed") && self.stream == "streaming"
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SnapshotProgress {
    /// `pending`, `copying`, `committing` (copied; the last rows are being indexed and
    /// committed), `done` or `resumed` (restarted from a checkpoint, nothing copied).
    pub state: String,
    /// Rows copied so far (while copying) or in all.
    pub rows: u64,
    /// Rows copied per second so far.
    pub rows_per_sec: f64,
    /// Seconds since the copy started (while copying) or that it took.
    pub seconds: f64,
    pub lsn: Option<Lsn>,
    /// Postgres' estimate of the rows to copy (its statistics, so approximate).
    #[serde(default)]
    pub rows_estimate: Option<u64>,
    /// Seconds left at the rate so far, while copying (from the estimate).
    #[serde(default)]
    pub eta_seconds: Option<f64>,
    /// The index whose table is being copied.
    #[serde(default)]
    pub index: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SlotStatus {
    pub wal_status: Option<String>,
    pub safe_wal_size: Option<i64>,
    pub confirmed_flush_lsn: Option<String>,
    pub restart_lsn: Option<String>,
    pub active: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RejectionReport {
    pub index: String,
    pub key: String,
    pub field: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionStatus {
    pub index: String,
    pub region: String,
    pub documents: u64,
    /// Written and searchable, not yet in a durable commit (scanned by every query).
    pub fresh_documents: u64,
    pub checkpoint_lsn: Lsn,
    pub applied_lsn: Lsn,
    pub lag_bytes: u64,
    pub lag_ms: u64,
    pub rejected_rows: u64,
    pub vectors_pending_graph: Option<u64>,
    pub graph_points: Option<u64>,
    /// Whether the graph's insert structure (hnsw_rs's) is in memory: an idle graph drops it
    /// and searches its compact copy (absent from an indexer that predates the field).
    #[serde(default)]
    pub graph_insert_structure_loaded: Option<bool>,
    /// Segments of the committed documents: every query pays per segment; a quiet shard
    /// merges them (0 from an indexer that predates the field).
    #[serde(default)]
    pub segments: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_admits_only_itself_and_never_prints() {
        let s = Secret::try_from("0123456789abcdef".to_owned()).unwrap();
        assert!(s.admits(Some(b"Bearer 0123456789abcdef")));
        for wrong in [
            &b"Bearer 0123456789abcdeF"[..],
            b"Bearer 0123456789abcdef0",
            b"Bearer 0123456789abcde",
            b"0123456789abcdef",
            b"Bearer ",
        ] {
            assert!(!s.admits(Some(wrong)));
        }
        assert!(!s.admits(None));
        assert!(!format!("{s:?}").contains("0123"));
        assert!(Secret::try_from("short".to_owned()).is_err());
        assert!(Secret::try_from("with a space in it!".to_owned()).is_err());
    }

    #[test]
    fn names_and_keys_are_query_values_only() {
        assert_eq!(
            path::document("places", "../../status?x=1&y=2#z", &ReadScope::default()),
            "/internal/document?index=places&key=..%2F..%2Fstatus%3Fx%3D1%26y%3D2%23z"
        );
        let scope = ReadScope {
            scope_regions: Some("eu,asia".into()),
            scope_filter: Some(r#"{"term":{"t":"a&b"}}"#.into()),
        };
        assert_eq!(
            path::document("p", "1", &scope),
            "/internal/document?index=p&key=1&scope_regions=eu%2Casia&scope_filter=%7B%22term%22%3A%7B%22t%22%3A%22a%26b%22%7D%7D"
        );
        assert_eq!(path::dump("café"), "/internal/dump?index=caf%C3%A9");
        assert_eq!(
            path::changes("p", Some("0/1:2"), &ReadScope::default()),
            "/internal/changes?index=p&since=0%2F1%3A2"
        );
    }

    #[test]
    fn a_shard_search_carries_the_index_beside_the_request() {
        let req: SearchRequest = crate::parse(br#"{"q": "x", "limit": 3}"#).unwrap();
        let body = serde_json::to_vec(&ShardSearchRequest {
            index: "places",
            search: &req,
        })
        .unwrap();
        let (index, again) = parse_shard_search(&body).unwrap();
        assert_eq!(index, "places");
        assert_eq!(format!("{req:?}"), format!("{again:?}"));
        assert_eq!(
            parse_shard_search(br#"{"q": "x"}"#).unwrap_err().field,
            "index"
        );
        assert_eq!(
            parse_shard_search(br#"{"index": "p", "bogus": 1}"#)
                .unwrap_err()
                .field,
            "bogus"
        );
    }
}
