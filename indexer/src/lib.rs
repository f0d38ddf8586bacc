//! The indexer: tails Postgres logical replication into per-(index, region) partitions and
//! serves them to the query tier. See ARCHITECTURE.md for the data flow and invariants.

pub mod apply;
pub mod catalog;
pub mod changes;
pub mod checkpoint;
pub mod config;
pub mod copy;
pub mod error;
pub mod http;
pub mod memory;
pub mod metrics;
pub mod pg;
pub mod pgoutput;
pub mod progress;
pub mod sample;
pub mod slot;
pub mod source;
pub mod status;
pub mod verify;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::apply::Applier;
use crate::catalog::ResolvedIndex;
use crate::checkpoint::Checkpoint;
use crate::config::{Config, SlotLossPolicy};
pub use crate::error::{Error, Result};
use crate::pg::PgConn;
use crate::status::{SnapshotProgress, Stats};
use engine::shard::{Shard, ViewCell};
use wire::Lsn;

/// The log filter when `RUST_LOG` is not set: our own INFO, the libraries' warnings only.
/// The replication library logs an ERROR for every dropped connection (the stream logs one
/// WARN per reconnect with the cause and the next attempt instead), and hnsw_rs dozens of
/// INFO lines per graph at every start.
pub const LOG_DEFAULT: &str = "info,pgwire_replication=off,hnsw_rs=warn,anndists=warn,tantivy=warn";

/// Name of the file, in the data directory, that holds the HTTP address actually bound.
pub const ADDR_FILE: &str = "indexer.addr";

/// Runs the indexer until `shutdown` turns true: resolve config, snapshot or resume, stream.
/// A slot lost while running is rebuilt from a new snapshot when `on_slot_loss = "resnapshot"`;
/// the shard endpoint stays up throughout.
pub async fn run(
    config: Config,
    listener: TcpListener,
    prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let conn = PgConn::from_url(&config.source.database_url)?;
    let admin = conn.connect().await?;
    let indexes = catalog::resolve(&admin, &config).await?;
    catalog::ensure_publication(&admin, &config.source.publication, &indexes).await?;
    drop(admin);
    std::fs::create_dir_all(&config.storage.data_dir)?;

    let stats = Arc::new(Stats::default());
    let view = Arc::new(ViewCell::default());
    let http_state = http::HttpState::new(
        stats.clone(),
        view.clone(),
        indexes.clone(),
        config.source.slot.clone(),
        config.http.secret.clone(),
        prometheus,
        conn.clone(),
    );
    let addr = listener.local_addr()?;
    config.http.check_exposure(addr)?;
    let tls = config.http.server_tls()?;
    if tls.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(%addr, "the shard endpoint is reachable beyond this machine without TLS: \
            its secret and every answer cross the network in clear (set http.tls_cert and tls_key)");
    }
    write_addr_file(&config.storage.data_dir, &addr.to_string())?;
    tracing::info!(%addr, tls = tls.is_some(), "shard endpoint listening");
    let mut http_shutdown = shutdown.clone();
    let limits = config.http.connection_limits();
    let server = tokio::spawn(async move {
        serve::serve(
            listener,
            http::router(http_state),
            limits,
            tls,
            async move {
                let _ = http_shutdown.wait_for(|s| *s).await;
            },
        )
        .await;
    });
    let (slot_seen, slot_rx) = watch::channel(None);
    let poller = tokio::spawn(slot::poll(
        conn.clone(),
        config.source.slot.clone(),
        stats.clone(),
        slot_seen,
    ));

    let ctx = RunContext {
        config: &config,
        conn: &conn,
        indexes: &indexes,
        stats: &stats,
        view: &view,
        slot_seen: &slot_rx,
    };
    let result = loop {
        match run_once(&ctx, shutdown.clone()).await {
            Err(e @ Error::SlotLost { .. })
                if config.source.on_slot_loss == SlotLossPolicy::Resnapshot =>
            {
                tracing::warn!(error = %e, "rebuilding the index from a new snapshot");
                *stats.last_error.lock().unwrap() = Some(e.to_string());
            }
            other => break other,
        }
    };
    poller.abort();
    server.abort();
    result.map_err(|e| e.on_full_disk(&config.storage.data_dir))
}

struct RunContext<'a> {
    config: &'a Config,
    conn: &'a PgConn,
    indexes: &'a [ResolvedIndex],
    stats: &'a Arc<Stats>,
    view: &'a Arc<ViewCell>,
    /// The slot poller's latest reading.
    slot_seen: &'a watch::Receiver<Option<slot::SlotSeen>>,
}

/// One life of the shard: snapshot or resume, then stream until shutdown or an error.
async fn run_once(ctx: &RunContext<'_>, mut shutdown: watch::Receiver<bool>) -> Result<()> {
    let config = ctx.config;
    let admin = ctx.conn.connect().await?;
    let slot = config.source.slot.clone();
    let data_dir = config.storage.data_dir.clone();
    let fingerprint = fingerprint(ctx.indexes, &config.source.regions);

    let existing = Checkpoint::load(&data_dir)?;
    let slot_state = pg::slot_status(&admin, &slot).await?;
    if let Some(c) = &existing {
        if c.slot != slot {
            return Err(Error::Checkpoint(format!(
                "{} belongs to slot {:?}, the config says {slot:?}; use another data_dir or remove it",
                data_dir.display(),
                c.slot
            )));
        }
        if c.config_fingerprint != fingerprint {
            return Err(Error::Checkpoint(format!(
                "the index configuration changed since {} was built; remove it to rebuild from a new snapshot",
                data_dir.display()
            )));
        }
    }
    let resumable = existing.as_ref().is_some_and(|c| c.snapshot_done);
    let lost = slot::loss(slot_state.as_ref());
    // A snapshot whose copy stopped part-way goes on from its durable position while its slot
    // is the one it created (never confirmed: the slot's confirmed point is still the
    // snapshot's consistent point) and holds its changes.
    let copy_resume = match (&existing, &slot_state) {
        (Some(c), Some(s)) if !c.snapshot_done && lost.is_none() => {
            let confirmed = s
                .confirmed_flush_lsn
                .as_deref()
                .and_then(|t| t.parse().ok());
            c.copied
                .clone()
                .filter(|_| confirmed == Some(c.snapshot_lsn))
                .map(|copied| source::Resume {
                    consistent: c.snapshot_lsn,
                    copied,
                    ahead: c.copying.clone(),
                })
        }
        _ => None,
    };
    let need_snapshot = if !resumable {
        true
    } else if let Some(loss) = lost {
        if config.source.on_slot_loss == SlotLossPolicy::Fail {
            return Err(Error::SlotLost { slot, loss });
        }
        tracing::warn!(slot = %slot, loss = %loss, "replication slot lost; rebuilding the index from a new snapshot");
        true
    } else {
        false
    };
    if need_snapshot && copy_resume.is_none() {
        if slot_state.is_some() {
            tracing::info!(slot = %slot, "dropping a slot without a usable snapshot");
            pg::drop_slot(&admin, &slot).await?;
        }
        Checkpoint::remove(&data_dir)?;
        Shard::wipe(&data_dir)?;
        ctx.stats.reset_applied();
    }
    drop(admin);
    let checkpoint = match existing {
        Some(c) if !need_snapshot || copy_resume.is_some() => c,
        _ => Checkpoint {
            slot: slot.clone(),
            config_fingerprint: fingerprint,
            snapshot_lsn: Lsn::ZERO,
            snapshot_done: false,
            lsn: Lsn::ZERO,
            copied: None,
            copying: None,
            large: None,
        },
    };
    let start = checkpoint.lsn;

    let limits = engine::document::MapLimits {
        max_text_bytes: config.apply.max_text_bytes,
        owned_regions: config.source.regions.clone(),
    };
    let mut shard = Shard::open(
        &data_dir,
        ctx.indexes.to_vec(),
        limits,
        config.apply.writer_memory_mb << 20,
        ctx.stats.clone(),
        ctx.view.clone(),
        start,
    )?;
    shard.inject_commit_fault(commit_fault_from_env());
    let (apply_tx, apply_rx) = mpsc::channel(config.apply.queue_transactions);
    let (durable_tx, durable_rx) = watch::channel(start);
    let (searchable_tx, searchable_rx) = watch::channel(start);
    let applier = Applier {
        shard,
        config: config.apply.clone(),
        checkpoint,
        data_dir: data_dir.clone(),
        stats: ctx.stats.clone(),
    }
    .spawn(
        apply_rx,
        apply::Progress {
            searchable: searchable_tx,
            durable: durable_tx,
        },
    );

    let source = source::Source {
        conn: ctx.conn.clone(),
        slot: slot.clone(),
        publication: config.source.publication.clone(),
        indexes: ctx.indexes.to_vec(),
        stats: ctx.stats.clone(),
        budget: apply::budget(),
    };
    let stats = ctx.stats;
    let result = async {
        if need_snapshot {
            tokio::select! {
                r = source.snapshot(&apply_tx, copy_resume) => { r?; }
                _ = shutdown.wait_for(|s| *s) => return Ok(()),
            }
        } else {
            *stats.snapshot.lock().unwrap() = SnapshotProgress {
                state: "resumed".into(),
                lsn: Some(start),
                ..Default::default()
            };
            tracing::info!(slot = %slot, from = %start, "resuming from checkpoint");
        }
        let progress = source::ProgressRx {
            searchable: searchable_rx,
            durable: durable_rx,
        };
        source
            .stream(apply_tx, progress, shutdown.clone(), ctx.slot_seen.clone())
            .await
    }
    .await;
    // The stream has dropped its sender: the applier drains, commits and stops.
    let applied = tokio::task::spawn_blocking(move || applier.join())
        .await
        .map_err(|e| Error::ApplierPanicked(e.to_string()))?;
    let applier_result =
        applied.unwrap_or_else(|_| Err(Error::ApplierPanicked("see the log above".into())));
    match (result, applier_result) {
        (Err(Error::ApplierStopped(_)), Err(e)) => Err(e),
        (Err(e), _) => Err(e),
        (Ok(()), r) => r,
    }
}

fn write_addr_file(dir: &std::path::Path, addr: &str) -> Result<()> {
    let tmp = dir.join(format!("{ADDR_FILE}.tmp"));
    std::fs::write(&tmp, addr)?;
    std::fs::rename(&tmp, dir.join(ADDR_FILE))?;
    Ok(())
}

/// Identifies what the partitions were built from: a change means a rebuild.
fn fingerprint(indexes: &[ResolvedIndex], regions: &[String]) -> String {
    let mut s = String::new();
    for ix in indexes {
        s.push_str(&format!(
            "{}|{}.{}|{}|pk{:?}|r{}|t{:?}|g{:?}|v{:?}\n",
            ix.name,
            ix.schema,
            ix.table,
            ix.columns.join(","),
            ix.pk,
            ix.region,
            ix.text.iter().map(|t| t.column).collect::<Vec<_>>(),
            ix.geo,
            ix.vector.map(|v| (v.column, v.dimension)),
        ));
    }
    s.push_str(&regions.join(","));
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(s.as_bytes()))
}

/// Test hook: `INDEXER_FAULT_COMMIT=panic|error` makes every partition commit fail that way,
/// so a test can prove that a failed commit stops the process loudly instead of stalling.
fn commit_fault_from_env() -> Option<engine::shard::CommitFault> {
    let fault = match std::env::var("INDEXER_FAULT_COMMIT").ok()?.as_str() {
        "panic" => engine::shard::CommitFault::Panic,
        "error" => engine::shard::CommitFault::Error,
        other => {
            tracing::warn!(
                value = other,
                "INDEXER_FAULT_COMMIT is not panic or error; ignored"
            );
            return None;
        }
    };
    tracing::warn!(
        ?fault,
        "INDEXER_FAULT_COMMIT: every partition commit will fail"
    );
    Some(fault)
}
