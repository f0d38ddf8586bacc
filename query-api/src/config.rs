//! query-api configuration: one TOML file, a few environment overrides. Unknown keys are
//! errors that name the key.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Which indexer shard serves which regions.
    #[serde(rename = "shard")]
    pub shards: Vec<ShardConfig>,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub cors: CorsConfig,
    /// The shards' secret (the indexers' `http.secret`), presented on every shard call. Env:
    /// `QUERY_API_SHARD_SECRET` (preferred: keeps it out of files).
    #[serde(default)]
    pub shard_secret: Option<wire::shard::Secret>,
    #[serde(default)]
    pub tls: TlsConfig,
}

/// TLS on the public listener, and the roots `https` shard URLs are checked against.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Serve HTTPS with this certificate chain (PEM, leaf first) and key (PEM). Env:
    /// `QUERY_API_TLS_CERT`, `QUERY_API_TLS_KEY`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Root certificate(s) (PEM) an `https` shard's certificate must lead to; its host name
    /// is checked too. Default: the Mozilla roots. Env: `QUERY_API_SHARD_CA`.
    #[serde(default)]
    pub shard_ca: Option<PathBuf>,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardConfig {
    /// Base URL of the indexer's shard endpoint, e.g. `http://127.0.0.1:7070`.
    pub url: String,
    /// Regions this shard owns; empty: every region no other shard lists.
    #[serde(default)]
    pub regions: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub keys: Vec<ApiKey>,
    /// Serve without keys (demo, local use). Without keys and without this, start-up fails.
    #[serde(default)]
    pub open: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    pub key: String,
    pub scope: Scope,
    /// A tenant's key (read scope only): the indexes it may read, the regions, and a filter
    /// every search, document read and change-feed event must pass (public filter syntax).
    #[serde(default)]
    pub indexes: Option<Vec<String>>,
    #[serde(default)]
    pub regions: Option<Vec<String>>,
    #[serde(default)]
    pub filter: Option<serde_json::Value>,
}

impl ApiKey {
    pub(crate) fn restriction(&self) -> crate::scope::Restriction {
        crate::scope::Restriction {
            indexes: self.indexes.clone(),
            regions: self.regions.clone(),
            filter: self.filter.clone(),
        }
    }

    fn is_restricted(&self) -> bool {
        self.indexes.is_some() || self.regions.is_some() || self.filter.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Search, documents, indexes, the change stream.
    Read,
    /// Also `/v1/status`.
    Admin,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default = "d_body")]
    pub max_body_bytes: usize,
    /// Whole-request deadline (waits for `min_lsn` included).
    #[serde(default = "d_request_timeout")]
    pub request_timeout_ms: u64,
    /// How long a shard may take to answer one search before the answer is partial.
    #[serde(default = "d_shard_timeout")]
    pub shard_timeout_ms: u64,
    /// Requests served at once; more get 503.
    #[serde(default = "d_concurrency")]
    pub max_concurrent_requests: usize,
    /// Requests one client (API key, or address when open) may have in flight; more get 429.
    #[serde(default = "d_concurrency_per_client")]
    pub max_concurrent_per_client: usize,
    /// Searches waiting for their `consistency.min_lsn` at once, over all clients (503) and
    /// per client (429): waits hold these, so they cannot take every request slot.
    #[serde(default = "d_waits")]
    pub max_waits: usize,
    #[serde(default = "d_waits_per_client")]
    pub max_waits_per_client: usize,
    /// Change streams (`/changes`) open at once, over all clients and per client.
    #[serde(default = "d_streams")]
    pub max_streams: usize,
    #[serde(default = "d_streams_per_client")]
    pub max_streams_per_client: usize,
    /// Time a client has to send a request's head (also how long an idle kept-alive
    /// connection stays open): half-open connections are closed after it.
    #[serde(default = "d_header_timeout")]
    pub header_timeout_ms: u64,
    /// Connections open at once (kept under half the open-file limit); over it, accepting waits.
    #[serde(default = "d_connections")]
    pub max_connections: usize,
    /// Connections from one client address; more are closed at once. Raise it behind a proxy
    /// that connects from one address.
    #[serde(default = "d_connections_per_address")]
    pub max_connections_per_address: usize,
    /// Per API key (or per client address when open): sustained requests per second, burst.
    #[serde(default = "d_rate")]
    pub rate_per_sec: f64,
    #[serde(default = "d_burst")]
    pub burst: f64,
    /// Default and largest `consistency.wait_timeout_ms`.
    #[serde(default = "d_wait")]
    pub default_wait_timeout_ms: u64,
    #[serde(default = "d_max_wait")]
    pub max_wait_timeout_ms: u64,
}

fn d_body() -> usize {
    1 << 20
}
fn d_request_timeout() -> u64 {
    30_000
}
fn d_shard_timeout() -> u64 {
    5_000
}
fn d_concurrency() -> usize {
    256
}
fn d_concurrency_per_client() -> usize {
    64
}
fn d_waits() -> usize {
    128
}
fn d_waits_per_client() -> usize {
    32
}
fn d_streams() -> usize {
    1_024
}
fn d_streams_per_client() -> usize {
    32
}
fn d_header_timeout() -> u64 {
    10_000
}
fn d_connections() -> usize {
    10_000
}
fn d_connections_per_address() -> usize {
    512
}
fn d_rate() -> f64 {
    200.0
}
fn d_burst() -> f64 {
    400.0
}
fn d_wait() -> u64 {
    5_000
}
fn d_max_wait() -> u64 {
    25_000
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body_bytes: d_body(),
            request_timeout_ms: d_request_timeout(),
            shard_timeout_ms: d_shard_timeout(),
            max_concurrent_requests: d_concurrency(),
            max_concurrent_per_client: d_concurrency_per_client(),
            max_waits: d_waits(),
            max_waits_per_client: d_waits_per_client(),
            max_streams: d_streams(),
            max_streams_per_client: d_streams_per_client(),
            header_timeout_ms: d_header_timeout(),
            max_connections: d_connections(),
            max_connections_per_address: d_connections_per_address(),
            rate_per_sec: d_rate(),
            burst: d_burst(),
            default_wait_timeout_ms: d_wait(),
            max_wait_timeout_ms: d_max_wait(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed to call the API from a browser (`"*"` for any); none by default.
    #[serde(default)]
    pub allow_origins: Vec<String>,
}

impl Config {
    /// The listener's connection limits.
    pub fn connection_limits(&self) -> serve::Limits {
        serve::Limits {
            header_timeout: std::time::Duration::from_millis(self.limits.header_timeout_ms),
            max_connections: self.limits.max_connections,
            max_per_address: self.limits.max_connections_per_address,
        }
    }

    /// The listener's TLS identity, when `tls.cert` and `tls.key` are set.
    pub fn server_tls(&self) -> Result<Option<Arc<serve::TlsServerConfig>>, String> {
        match (&self.tls.cert, &self.tls.key) {
            (Some(cert), Some(key)) => tls::server_config(cert, key)
                .map(|c| Some(Arc::new(c)))
                .map_err(|e| format!("tls.cert/tls.key: {e}")),
            _ => Ok(None),
        }
    }

    /// How `https` shards are reached: their certificate must lead to `tls.shard_ca` and name
    /// their host. None when no shard URL is `https`.
    pub fn shard_tls(&self) -> Result<Option<tls::rustls::ClientConfig>, String> {
        if !self.shards.iter().any(|s| s.url.starts_with("https://")) {
            return Ok(None);
        }
        tls::client_config(tls::Verify::Full, self.tls.shard_ca.as_deref())
            .map(Some)
            .map_err(|e| format!("tls.shard_ca: {e}"))
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        let c: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        c.check()?;
        Ok(c)
    }

    /// `QUERY_API_LISTEN`, `QUERY_API_KEYS` (`key:scope,key:scope`), `QUERY_API_SHARDS`
    /// (`url` or `url=region|region`, comma-separated), `QUERY_API_SHARD_SECRET`, the
    /// `tls` paths (`QUERY_API_TLS_CERT`, `QUERY_API_TLS_KEY`, `QUERY_API_SHARD_CA`) and the
    /// rate limit (`QUERY_API_RATE_PER_SEC`, `QUERY_API_BURST`) override the file.
    pub fn apply_env(&mut self) -> Result<(), String> {
        if let Ok(l) = std::env::var("QUERY_API_LISTEN") {
            self.listen = l;
        }
        if let Ok(secret) = std::env::var("QUERY_API_SHARD_SECRET") {
            self.shard_secret = Some(
                wire::shard::Secret::try_from(secret)
                    .map_err(|e| format!("QUERY_API_SHARD_SECRET: {e}"))?,
            );
        }
        for (var, slot) in [
            ("QUERY_API_TLS_CERT", &mut self.tls.cert),
            ("QUERY_API_TLS_KEY", &mut self.tls.key),
            ("QUERY_API_SHARD_CA", &mut self.tls.shard_ca),
        ] {
            if let Ok(v) = std::env::var(var) {
                *slot = Some(PathBuf::from(v));
            }
        }
        for (var, slot) in [
            ("QUERY_API_RATE_PER_SEC", &mut self.limits.rate_per_sec),
            ("QUERY_API_BURST", &mut self.limits.burst),
        ] {
            if let Ok(v) = std::env::var(var) {
                *slot = parse_number(var, &v)?;
            }
        }
        if let Ok(shards) = std::env::var("QUERY_API_SHARDS") {
            self.shards = parse_shards(&shards)?;
        }
        if let Ok(keys) = std::env::var("QUERY_API_KEYS") {
            self.auth.keys = keys
                .split(',')
                .filter(|k| !k.trim().is_empty())
                .map(|k| {
                    let (key, scope) = k.trim().rsplit_once(':').ok_or_else(|| {
                        "QUERY_API_KEYS: each entry is key:scope (read or admin)".to_owned()
                    })?;
                    let scope = match scope {
                        "read" => Scope::Read,
                        "admin" => Scope::Admin,
                        other => {
                            return Err(format!(
                                "QUERY_API_KEYS: unknown scope {other:?} (read or admin)"
                            ))
                        }
                    };
                    Ok(ApiKey {
                        key: key.to_owned(),
                        scope,
                        indexes: None,
                        regions: None,
                        filter: None,
                    })
                })
                .collect::<Result<_, String>>()?;
        }
        self.check()
    }

    fn check(&self) -> Result<(), String> {
        if self.shards.is_empty() {
            return Err("at least one [[shard]] is required".into());
        }
        for s in &self.shards {
            if !(s.url.starts_with("http://") || s.url.starts_with("https://")) {
                return Err(format!(
                    "shard url {:?} must start with http:// or https://",
                    s.url
                ));
            }
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(
                "tls.cert and tls.key go together (QUERY_API_TLS_CERT, QUERY_API_TLS_KEY)".into(),
            );
        }
        if self.auth.keys.is_empty() && !self.auth.open {
            return Err(
                "no API keys: set [auth] keys (or QUERY_API_KEYS), or auth.open = true to serve without keys"
                    .into(),
            );
        }
        if self.auth.keys.iter().any(|k| k.key.len() < 16) {
            return Err("API keys must be at least 16 characters".into());
        }
        for (i, k) in self.auth.keys.iter().enumerate() {
            if k.is_restricted() && k.scope != Scope::Read {
                return Err(format!(
                    "auth.keys[{i}]: indexes, regions and filter restrict read keys only"
                ));
            }
            if k.indexes.as_ref().is_some_and(Vec::is_empty)
                || k.regions.as_ref().is_some_and(Vec::is_empty)
            {
                return Err(format!(
                    "auth.keys[{i}]: an empty indexes or regions list would allow nothing; leave it out to allow all"
                ));
            }
            if k.filter.as_ref().is_some_and(|f| !f.is_object()) {
                return Err(format!(
                    "auth.keys[{i}].filter: a filter object, e.g. {{ term = {{ tenant_id = 42 }} }}"
                ));
            }
        }
        let l = &self.limits;
        for (name, v) in [
            ("max_concurrent_requests", l.max_concurrent_requests),
            ("max_concurrent_per_client", l.max_concurrent_per_client),
            ("max_waits", l.max_waits),
            ("max_waits_per_client", l.max_waits_per_client),
            ("max_streams", l.max_streams),
            ("max_streams_per_client", l.max_streams_per_client),
            ("max_connections", l.max_connections),
            ("max_connections_per_address", l.max_connections_per_address),
        ] {
            if v == 0 {
                return Err(format!("limits.{name} must be at least 1"));
            }
        }
        if l.header_timeout_ms == 0 {
            return Err("limits.header_timeout_ms must be at least 1".into());
        }
        if !(self.limits.rate_per_sec > 0.0 && self.limits.burst >= 1.0) {
            return Err("limits.rate_per_sec must be > 0 and limits.burst >= 1".into());
        }
        Ok(())
    }
}

/// `QUERY_API_SHARDS`: `url` (every region) or `url=region|region`, comma-separated.
pub fn parse_shards(text: &str) -> Result<Vec<ShardConfig>, String> {
    let shards: Vec<ShardConfig> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (url, regions) = s.split_once('=').unwrap_or((s, ""));
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("QUERY_API_SHARDS: {url:?} is not an http(s) URL"));
            }
            Ok(ShardConfig {
                url: url.trim_end_matches('/').to_owned(),
                regions: regions
                    .split('|')
                    .filter(|r| !r.is_empty())
                    .map(str::to_owned)
                    .collect(),
            })
        })
        .collect::<Result<_, _>>()?;
    if shards.is_empty() {
        return Err("QUERY_API_SHARDS: no shard given".into());
    }
    Ok(shards)
}

/// A number from the environment variable `var`, or an error naming it.
fn parse_number(var: &str, text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite())
        .ok_or_else(|| format!("{var}: {text:?} is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks() {
        let c = Config::parse(
            "listen = \"0.0.0.0:9000\"\n[[shard]]\nurl = \"http://a:7070\"\nregions = [\"europe\"]\n\
             [[shard]]\nurl = \"http://b:7070\"\n[auth]\nkeys = [{ key = \"0123456789abcdef\", scope = \"read\" }]\n",
        )
        .unwrap();
        assert_eq!(c.shards.len(), 2);
        assert_eq!(c.auth.keys[0].scope, Scope::Read);
        assert!(Config::parse("[[shard]]\nurl = \"http://a\"\n")
            .unwrap_err()
            .contains("no API keys"));
        assert!(Config::parse("bogus = 1\n[[shard]]\nurl = \"http://a\"\n")
            .unwrap_err()
            .contains("bogus"));
    }

    #[test]
    fn numbers_from_the_environment_name_their_variable() {
        assert_eq!(parse_number("QUERY_API_RATE_PER_SEC", " 1000 "), Ok(1000.0));
        assert_eq!(parse_number("QUERY_API_BURST", "2.5"), Ok(2.5));
        for bad in ["fast", "", "NaN", "inf"] {
            let e = parse_number("QUERY_API_RATE_PER_SEC", bad).unwrap_err();
            assert!(e.starts_with("QUERY_API_RATE_PER_SEC: "), "{e}");
        }
    }

    #[test]
    fn shards_from_the_environment() {
        let s = parse_shards("http://a:7070/, http://b:7070=asia|africa").unwrap();
        assert_eq!(s[0].url, "http://a:7070");
        assert!(s[0].regions.is_empty());
        assert_eq!(s[1].regions, ["asia", "africa"]);
        assert!(parse_shards("a:7070").is_err());
        assert!(parse_shards(" ").is_err());
    }
}
