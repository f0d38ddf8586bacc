//! The typed index configuration: one TOML file, then `INDEXER_*` environment variables, then
//! command-line flags. Static checks live here; checks against the catalog live in `catalog`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use serde::Deserialize;

use crate::error::{Error, Result};
pub use engine::schema::{is_region_name, Metric};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub source: SourceConfig,
    pub storage: StorageConfig,
    #[serde(default)]
    pub apply: ApplyConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(rename = "index", default)]
    pub indexes: Vec<IndexConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `postgres://user:password@host:port/dbname`. Env: `INDEXER_DATABASE_URL`.
    pub database_url: String,
    /// Publication to create or verify; it must carry every configured table.
    pub publication: String,
    /// Logical replication slot owned by this indexer shard.
    pub slot: String,
    /// What to do when the slot is missing or invalidated while a checkpoint exists.
    #[serde(default)]
    pub on_slot_loss: SlotLossPolicy,
    /// Regions this shard owns; rows of other regions are ignored. Empty: all regions.
    #[serde(default)]
    pub regions: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotLossPolicy {
    /// Stop with a clear error; an operator decides.
    #[default]
    Fail,
    /// Drop the local index, create a new slot and snapshot again.
    Resnapshot,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Where partitions and the checkpoint live. Env: `INDEXER_DATA_DIR`.
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApplyConfig {
    /// A group commit closes once it holds this many row changes.
    pub max_batch_rows: usize,
    /// ... or once its first transaction has waited this long.
    pub max_batch_delay_ms: u64,
    /// Applied changes are searchable at once and made durable (tantivy commit, then
    /// confirmed to Postgres) at most this long after they were applied ...
    pub commit_interval_ms: u64,
    /// ... or as soon as this many row changes wait for it.
    pub max_uncommitted_rows: usize,
    /// Transactions buffered between the stream and the applier.
    pub queue_transactions: usize,
    /// Memory for each partition's index writer.
    pub writer_memory_mb: usize,
    /// A text value longer than this is not indexed (reported as a rejected field).
    pub max_text_bytes: usize,
    /// A vector graph that took no insert for this long is dumped (if its dump lacks
    /// points) and hnsw_rs's insert structure (~2 KB a vector) is dropped from memory;
    /// searches walk the graph's flat copy, and the next insert loads it back from the
    /// dump. 0 keeps it in memory.
    pub graph_idle_unload_secs: u64,
}

impl Default for ApplyConfig {
    fn default() -> Self {
        ApplyConfig {
            max_batch_rows: 20_000,
            max_batch_delay_ms: 20,
            commit_interval_ms: 1_000,
            max_uncommitted_rows: 50_000,
            queue_transactions: 1024,
            writer_memory_mb: 64,
            max_text_bytes: 1 << 20,
            graph_idle_unload_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Internal shard endpoint (status, metrics, reads). Env: `INDEXER_LISTEN`.
    pub listen: SocketAddr,
    /// Time a client has to send a request's head (and an idle connection stays open).
    pub header_timeout_ms: u64,
    /// Connections open at once (kept under half the open-file limit). query-api holds one
    /// per change stream it relays, plus its link and a few calls.
    pub max_connections: usize,
    /// The secret every caller of the endpoint presents (`Authorization: Bearer`), query-api's
    /// `shard_secret`; required when `listen` is not a loopback address. Env:
    /// `INDEXER_SHARD_SECRET` (preferred: keeps it out of files).
    pub secret: Option<wire::shard::Secret>,
    /// Serve HTTPS with this certificate chain (PEM, leaf first) and its key (PEM). Env:
    /// `INDEXER_TLS_CERT`, `INDEXER_TLS_KEY`. Callers trust its root: query-api's
    /// `tls.shard_ca`, `indexer verify --shard-ca`.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            header_timeout_ms: 10_000,
            max_connections: 4_096,
            secret: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl HttpConfig {
    /// An endpoint reachable beyond this machine must require a secret: it serves every
    /// document.
    pub fn check_exposure(&self, listen: SocketAddr) -> Result<()> {
        if self.secret.is_none() && !listen.ip().is_loopback() {
            return Err(Error::Config(format!(
                "http.listen {} is reachable beyond this machine, and the shard endpoint serves every document: \
                 set INDEXER_SHARD_SECRET (or http.secret), at least {} characters, and give query-api the same \
                 as QUERY_API_SHARD_SECRET (or shard_secret)",
                listen,
                wire::shard::MIN_SECRET_LEN
            )));
        }
        Ok(())
    }

    /// The listener's TLS identity, when `tls_cert` and `tls_key` are set.
    pub fn server_tls(&self) -> Result<Option<Arc<serve::TlsServerConfig>>> {
        match (&self.tls_cert, &self.tls_key) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => tls::server_config(cert, key)
                .map(|c| Some(Arc::new(c)))
                .map_err(|e| Error::Config(format!("http.tls_cert/tls_key: {e}"))),
            _ => Err(Error::Config(
                "http.tls_cert and http.tls_key go together (INDEXER_TLS_CERT, INDEXER_TLS_KEY)"
                    .into(),
            )),
        }
    }

    /// The listener's connection limits: no cap per address (query-api is one address).
    pub fn connection_limits(&self) -> serve::Limits {
        serve::Limits {
            header_timeout: std::time::Duration::from_millis(self.header_timeout_ms),
            max_connections: self.max_connections,
            max_per_address: self.max_connections,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexConfig {
    /// Index name, used in URLs and on disk (`[a-z0-9_-]`).
    pub name: String,
    /// `schema.table`, or `table` for `public.table`.
    pub table: String,
    /// Primary-key columns; read from the catalog when omitted.
    #[serde(default)]
    pub primary_key: Option<Vec<String>>,
    /// The column whose value picks the partition.
    pub region: String,
    #[serde(default)]
    pub text_fields: Vec<TextField>,
    #[serde(default)]
    pub geo: Option<GeoConfig>,
    #[serde(default)]
    pub vector: Option<VectorConfig>,
    /// Columns usable in structured filters.
    #[serde(default)]
    pub filter_fields: Vec<String>,
    /// Columns returned with hits.
    #[serde(default)]
    pub stored_fields: Vec<String>,
    /// How text hits are ordered beyond BM25; BM25 alone when absent.
    #[serde(default)]
    pub ranking: Option<RankingConfig>,
}

/// `ranking = { name_field = "name", popularity = "population", weight = 2.0 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankingConfig {
    /// A text field: documents holding every query word in it rank above the rest.
    #[serde(default)]
    pub name_field: Option<String>,
    /// A numeric filter field adding `weight × log10(1 + value)` to the text score.
    #[serde(default)]
    pub popularity: Option<String>,
    #[serde(default = "one")]
    pub weight: f32,
}

/// A text field: `"body"` or `{ column = "title", boost = 2.0 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TextField {
    Column(String),
    Detailed(TextFieldDetail),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextFieldDetail {
    pub column: String,
    #[serde(default = "one")]
    pub boost: f32,
    /// Stemmer language (e.g. "english"); none by default.
    #[serde(default)]
    pub language: Option<String>,
}

fn one() -> f32 {
    1.0
}

impl TextField {
    pub fn column(&self) -> &str {
        match self {
            TextField::Column(c) => c,
            TextField::Detailed(d) => &d.column,
        }
    }
}

/// Either `{ lat = "lat", lon = "lon" }` or `{ point = "location" }` (a Postgres `point`, x = lon).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoConfig {
    #[serde(default)]
    pub lat: Option<String>,
    #[serde(default)]
    pub lon: Option<String>,
    #[serde(default)]
    pub point: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GeoColumns {
    LatLon { lat: String, lon: String },
    Point(String),
}

impl GeoConfig {
    pub fn columns(&self) -> Result<GeoColumns> {
        match (&self.lat, &self.lon, &self.point) {
            (Some(lat), Some(lon), None) => Ok(GeoColumns::LatLon {
                lat: lat.clone(),
                lon: lon.clone(),
            }),
            (None, None, Some(p)) => Ok(GeoColumns::Point(p.clone())),
            _ => Err(Error::Config(
                "geo: set either both `lat` and `lon`, or `point`".into(),
            )),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorConfig {
    /// A `real[]` column, or a pgvector `vector` column.
    pub column: String,
    pub dimension: usize,
    #[serde(default)]
    pub metric: Metric,
}

/// Overrides from the environment and the command line, applied after the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub database_url: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
}

impl Config {
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        let mut config =
            Config::parse(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        if let Some(url) = &overrides.database_url {
            config.source.database_url = url.clone();
        }
        if let Some(dir) = &overrides.data_dir {
            config.storage.data_dir = dir.clone();
        }
        if let Some(listen) = overrides.listen {
            config.http.listen = listen;
        }
        if let Ok(secret) = std::env::var("INDEXER_SHARD_SECRET") {
            config.http.secret = Some(
                wire::shard::Secret::try_from(secret)
                    .map_err(|e| Error::Config(format!("INDEXER_SHARD_SECRET: {e}")))?,
            );
        }
        if let Ok(cert) = std::env::var("INDEXER_TLS_CERT") {
            config.http.tls_cert = Some(PathBuf::from(cert));
        }
        if let Ok(key) = std::env::var("INDEXER_TLS_KEY") {
            config.http.tls_key = Some(PathBuf::from(key));
        }
        config.http.check_exposure(config.http.listen)?;
        Ok(config)
    }

    /// Parses and validates what can be checked without a database.
    pub fn parse(text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(msg));
        if self.indexes.is_empty() {
            return bad("no [[index]] declared".into());
        }
        if !is_identifier(&self.source.slot) {
            return bad(format!(
                "source.slot {:?}: use lower-case letters, digits and '_' (a Postgres slot name)",
                self.source.slot
            ));
        }
        if self.source.publication.is_empty() {
            return bad("source.publication is empty".into());
        }
        for r in &self.source.regions {
            if !is_region_name(r) {
                return bad(format!("source.regions: {r:?} is not a valid region name"));
            }
        }
        if self.apply.max_batch_rows == 0
            || self.apply.queue_transactions == 0
            || self.apply.max_uncommitted_rows == 0
        {
            return bad("apply.max_batch_rows, apply.queue_transactions and apply.max_uncommitted_rows must be > 0".into());
        }
        if self.apply.commit_interval_ms > 60_000 {
            return bad("apply.commit_interval_ms must be at most 60000".into());
        }
        if self.apply.writer_memory_mb < 16 {
            return bad("apply.writer_memory_mb must be at least 16".into());
        }
        let mut names = BTreeSet::new();
        let mut tables = BTreeSet::new();
        for ix in &self.indexes {
            let at = format!("index {:?}", ix.name);
            if !is_region_name(&ix.name) {
                return bad(format!("{at}: name must match [A-Za-z0-9_-]{{1,64}}"));
            }
            if !names.insert(ix.name.clone()) {
                return bad(format!("{at}: declared twice"));
            }
            if !tables.insert(ix.table.clone()) {
                return bad(format!(
                    "{at}: table {:?} is already indexed by another index",
                    ix.table
                ));
            }
            if ix.region.is_empty() {
                return bad(format!("{at}: region column is empty"));
            }
            if let Some(geo) = &ix.geo {
                geo.columns()
                    .map_err(|e| Error::Config(format!("{at}: {e}")))?;
            }
            if let Some(v) = &ix.vector {
                if v.dimension == 0 || v.dimension > 16_000 {
                    return bad(format!("{at}: vector.dimension must be in 1..=16000"));
                }
            }
            for t in &ix.text_fields {
                if let TextField::Detailed(d) = t {
                    if !(d.boost.is_finite() && d.boost > 0.0) {
                        return bad(format!(
                            "{at}: text field {:?}: boost must be > 0",
                            d.column
                        ));
                    }
                    if let Some(l) = &d.language {
                        if engine::analyzer::language(l).is_none() {
                            let known: Vec<&str> = engine::analyzer::LANGUAGES
                                .iter()
                                .map(|(n, _)| *n)
                                .collect();
                            return bad(format!(
                                "{at}: text field {:?}: unknown language {l:?} (one of: {})",
                                d.column,
                                known.join(", ")
                            ));
                        }
                    }
                }
            }
            if matches!(&ix.primary_key, Some(pk) if pk.is_empty()) {
                return bad(format!(
                    "{at}: primary_key is empty (omit it to read it from the catalog)"
                ));
            }
        }
        Ok(())
    }
}

/// Lower-case identifier, as Postgres folds unquoted names.
pub fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [source]
        database_url = "postgres://postgres@127.0.0.1:5432/app"
        publication = "search"
        slot = "search_shard_0"

        [storage]
        data_dir = "/tmp/x"

        [[index]]
        name = "places"
        table = "public.places"
        region = "region"
        text_fields = ["body", { column = "name", boost = 2.0 }]
        geo = { lat = "lat", lon = "lon" }
        vector = { column = "embedding", dimension = 384 }
        filter_fields = ["population"]
    "#;

    #[test]
    fn parses_a_full_config_with_defaults() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.indexes[0].text_fields[1].column(), "name");
        assert_eq!(c.apply.max_batch_rows, 20_000);
        assert_eq!(c.source.on_slot_loss, SlotLossPolicy::Fail);
        assert_eq!(c.indexes[0].vector.as_ref().unwrap().metric, Metric::Cosine);
    }

    #[test]
    fn rejects_unknown_keys_by_name() {
        let err =
            Config::parse(&GOOD.replace("region = \"region\"", "region = \"region\"\nregon = 1"))
                .unwrap_err()
                .to_string();
        assert!(err.contains("regon"), "{err}");
    }

    #[test]
    fn rejects_half_a_geo_point() {
        let err = Config::parse(&GOOD.replace(
            "geo = { lat = \"lat\", lon = \"lon\" }",
            "geo = { lat = \"lat\" }",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("both `lat` and `lon`"), "{err}");
    }

    #[test]
    fn rejects_bad_slot_names() {
        let err = Config::parse(&GOOD.replace("search_shard_0", "Search-Shard"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("source.slot"), "{err}");
    }
}
