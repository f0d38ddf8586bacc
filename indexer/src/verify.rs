//! `indexer verify`: proves (or disproves) that a running index equals its source tables,
//! exactly, while writers run.
//!
//! One round: note the WAL position `L0`, read every configured table inside one snapshot
//! (taken after `L0`), wait until the indexer has applied the snapshot's WAL position, then
//! dump the index (per key: region and content hash) together with the keys it applied a
//! change for after `L0` (from its change feed). The dump is newer than the table read, so a
//! key changed in between may rightly differ: those keys are set aside, and every other key
//! is compared. A key set aside is compared in a later round (a new snapshot), so a live
//! system verifies with no false difference and every real one found. Rounds repeat while
//! keys remain set aside or differences appear (a difference is reported only when the last
//! round still shows it). When the feed cannot say what changed (a TRUNCATE, or a check
//! slower than the feed keeps), the round compares every key, as before.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use crate::catalog::{self, ResolvedIndex};
use crate::config::Config;
use crate::copy::CopyRows;
use crate::error::{Error, Result};
use crate::pg::{self, PgConn};
use engine::document::{map, MapLimits, Mapped};
use wire::shard::{path, DumpResponse, WaitResponse};
use wire::Lsn;

/// region → key → content hash
type Side = BTreeMap<String, HashMap<String, u64>>;

#[derive(Debug, Default)]
pub struct Report {
    pub lsn: Lsn,
    pub lines: Vec<String>,
    pub differences: Vec<String>,
    /// Keys changing in every round, so never compared.
    pub unsettled: usize,
}

impl Report {
    pub fn equal(&self) -> bool {
        self.differences.is_empty()
    }
}

/// Compares the table with the index served at `indexer_url` (an `https` one is trusted
/// when its certificate leads to `shard_ca`, or to a Mozilla root when `None`).
pub async fn verify(
    config: &Config,
    indexer_url: &str,
    shard_ca: Option<&std::path::Path>,
    attempts: u32,
) -> Result<Report> {
    let conn = PgConn::from_url(&config.source.database_url)?;
    let client = conn.connect().await?;
    let indexes = catalog::resolve(&client, config).await?;
    let limits = MapLimits {
        max_text_bytes: config.apply.max_text_bytes,
        owned_regions: config.source.regions.clone(),
    };
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(secret) = &config.http.secret {
        let mut v = reqwest::header::HeaderValue::try_from(secret.header_value())
            .map_err(|e| Error::Shard(format!("shard secret: {e}")))?;
        v.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, v);
    }
    let mut http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .default_headers(headers);
    if indexer_url.starts_with("https://") {
        let tls = tls::client_config(tls::Verify::Full, shard_ca)
            .map_err(|e| Error::Config(format!("--shard-ca: {e}")))?;
        http = http.tls_backend_preconfigured(tls);
    }
    let http = http
        .build()
        .map_err(|e| Error::Shard(format!("http client: {e}")))?;
    let base = indexer_url.trim_end_matches('/');
    let mut report = Report::default();
    // index → keys set aside in an earlier round and not compared since.
    let mut unsettled: Vec<HashSet<String>> = vec![HashSet::new(); indexes.len()];
    for attempt in 1..=attempts.max(1) {
        let before = settled_point(&client).await?;
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let lsn = pg::current_wal_lsn(&client).await?;
        let mut source = Vec::new();
        for ix in &indexes {
            source.push(read_source(&client, ix, &limits).await?);
        }
        client.batch_execute("COMMIT").await?;

        let wait: WaitResponse =
            get_json(&http, &format!("{base}{}", path::wait(lsn, 30_000))).await?;
        if !wait.reached {
            return Err(Error::Shard(format!(
                "the indexer has not applied {lsn} within 30 s (applied {})",
                wait.applied_lsn
            )));
        }
        report = Report {
            lsn,
            ..Default::default()
        };
        let mut set_aside = 0;
        let mut unknown = Vec::new();
        for ((ix, src), unsettled) in indexes.iter().zip(&source).zip(&mut unsettled) {
            let url = format!("{base}{}", path::dump_changed_after(&ix.name, before));
            let dump: DumpResponse = get_json(&http, &url).await?;
            if dump.changed.is_none() {
                unknown.push(ix.name.as_str());
            }
            let changed: HashSet<String> = dump.changed.iter().flatten().cloned().collect();
            compare(ix, src, &dump, &changed, &mut report);
            // Compared this round: settled; changed again: still waiting.
            unsettled.retain(|k| changed.contains(k));
            if attempt == 1 {
                unsettled.extend(changed.iter().cloned());
            }
            set_aside += changed.len();
        }
        report.unsettled = unsettled.iter().map(HashSet::len).sum();
        if !unknown.is_empty() {
            report.lines.push(format!(
                "round {attempt}: the change feed could not say what changed in {} (a TRUNCATE, or older than it keeps): every key compared",
                unknown.join(", ")
            ));
        }
        report.lines.push(format!(
            "round {attempt}: {set_aside} keys changed while the table was read and were set aside; {} still to compare",
            report.unsettled
        ));
        if (report.equal() && report.unsettled == 0) || attempt == attempts {
            break;
        }
        tracing::info!(
            attempt,
            differences = report.differences.len(),
            unsettled = report.unsettled,
            "another round: differences to confirm, or keys that changed during this one"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(report)
}

/// A WAL position every change the next snapshot misses comes after: the position now, once
/// every transaction then in progress has ended (one in progress may already have written
/// its commit record below the position, yet stay invisible to a snapshot taken before it
/// ends). Waits at most 10 s for them; a transaction open longer (idle in a session) can
/// only make a round report a difference the next round no longer shows.
async fn settled_point(client: &tokio_postgres::Client) -> Result<Lsn> {
    let lsn = pg::current_wal_lsn(client).await?;
    let running: Vec<i64> = client
        .query(
            "SELECT txid_snapshot_xip(txid_current_snapshot())::bigint",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !running.is_empty() && tokio::time::Instant::now() < deadline {
        let open: i64 = client
            .query_one(
                "SELECT count(*) FROM unnest($1::bigint[]) x WHERE txid_status(x) = 'in progress'",
                &[&running],
            )
            .await?
            .get(0);
        if open == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A commit record starting exactly there still comes after.
    Ok(Lsn(lsn.0.saturating_sub(1)))
}

async fn read_source(
    client: &tokio_postgres::Client,
    ix: &ResolvedIndex,
    limits: &MapLimits,
) -> Result<Side> {
    let mut side = Side::new();
    let mut copy = CopyRows::start(client, ix, crate::copy::Range::All).await?;
    while let Some(rows) = copy.next_batch(5_000).await? {
        for row in rows {
            if let Mapped::Doc(doc, _) = map(ix, row, limits) {
                let hash = doc.content_hash();
                side.entry(doc.region).or_default().insert(doc.key, hash);
            }
        }
    }
    Ok(side)
}

async fn get_json<T: serde::de::DeserializeOwned>(http: &reqwest::Client, url: &str) -> Result<T> {
    let resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| Error::Shard(format!("GET {url}: {e}")))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        let hint = if status == reqwest::StatusCode::UNAUTHORIZED {
            " (the endpoint wants the shards' secret: set http.secret or INDEXER_SHARD_SECRET)"
        } else {
            ""
        };
        return Err(Error::Shard(format!("GET {url}: {status}{hint}: {body}")));
    }
    resp.json()
        .await
        .map_err(|e| Error::Shard(format!("GET {url}: bad body: {e}")))
}

/// Compares every key but those in `changed` (changed after the table was read).
fn compare(
    ix: &ResolvedIndex,
    source: &Side,
    dump: &DumpResponse,
    changed: &HashSet<String>,
    report: &mut Report,
) {
    // key → [(region, hash)] over the whole index, to see duplicates and moves.
    let mut index_side: HashMap<String, Vec<(String, u64)>> = HashMap::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (region, docs) in &dump.partitions {
        counts.insert(region.clone(), docs.len());
        for (key, hash) in docs {
            let hash = u64::from_str_radix(hash, 16).unwrap_or(0);
            index_side
                .entry(key.clone())
                .or_default()
                .push((region.clone(), hash));
        }
    }
    let source_total: usize = source.values().map(HashMap::len).sum();
    let index_total: usize = counts.values().sum();
    report.lines.push(format!(
        "index {}: {} rows in {}.{}, {} documents in the index",
        ix.name, source_total, ix.schema, ix.table, index_total
    ));
    let mut regions: Vec<&String> = source.keys().chain(counts.keys()).collect();
    regions.sort();
    regions.dedup();
    for r in regions {
        let s = source.get(r).map(HashMap::len).unwrap_or(0);
        let i = counts.get(r).copied().unwrap_or(0);
        report.lines.push(format!(
            "  {r}: table {s}, index {i}{}",
            if s == i { "" } else { "  <- differs" }
        ));
    }
    let name = &ix.name;
    for (region, rows) in source {
        for (key, hash) in rows {
            if changed.contains(key) {
                continue;
            }
            match index_side.get(key).map(Vec::as_slice) {
                None | Some([]) => report.differences.push(format!(
                    "{name}: key {key} ({region}) is missing from the index"
                )),
                Some([(r, h)]) if r == region && h == hash => {}
                Some([(r, _)]) if r != region => report.differences.push(format!(
                    "{name}: key {key} is in partition {r}, the table says {region}"
                )),
                Some([_]) => report.differences.push(format!(
                    "{name}: key {key} ({region}) has different content"
                )),
                Some(many) => report.differences.push(format!(
                    "{name}: key {key} appears {} times (partitions {})",
                    many.len(),
                    many.iter()
                        .map(|(r, _)| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        }
    }
    for (key, places) in &index_side {
        if !changed.contains(key) && !source.values().any(|rows| rows.contains_key(key)) {
            for (r, _) in places {
                report.differences.push(format!(
                    "{name}: key {key} is in partition {r} but not in the table"
                ));
            }
        }
    }
}
