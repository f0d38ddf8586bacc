//! The soak: what production does to an indexer, in rounds, under a random writer — kill -9
//! at random moments (during the snapshot, during whole-table UPDATEs, while streaming),
//! Postgres restarts, the slot invalidated while the indexer is stalled, a full disk (as root:
//! the data directory on a tmpfs) — and at the end `verify`: the index must equal the table.
//! `scripts/soak` runs it on the release binaries; the end-to-end suite runs a few rounds.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};

use crate::fixture::{self, Fixture, SmallDisk, Writer};
use crate::{Indexer, PgServer};

pub struct Options {
    pub rounds: usize,
    /// Rows in the table before the first start (the writer adds and removes some).
    pub rows: i64,
    pub seed: u64,
}

#[derive(Default)]
pub struct Summary {
    pub rounds: usize,
    pub rows: i64,
    pub kills_in_snapshot: usize,
    pub kills_in_large_transaction: usize,
    pub kills_streaming: usize,
    pub postgres_restarts: usize,
    /// Milliseconds from a start to serving, for the starts that were let get there.
    pub restart_to_serving_ms: Vec<f64>,
    /// Seconds from resuming a stalled indexer whose slot was invalidated to serving again
    /// from a new snapshot.
    pub slot_invalidated_rebuild_s: f64,
    /// What the indexer said when its disk filled (`None`: not root, no tmpfs).
    pub full_disk: Option<String>,
    pub peak_rss_mb: f64,
    pub writer_transactions: u64,
    pub verify: Vec<String>,
    pub differences: usize,
}

impl Summary {
    pub fn equal(&self) -> bool {
        self.differences == 0 && !self.verify.is_empty()
    }
}

fn ms_stats(v: &[f64]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    format!(
        "p50 {:.0} ms, max {:.0} ms ({} starts)",
        s[s.len() / 2],
        s[s.len() - 1],
        s.len()
    )
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "soak: {} kill rounds over {} rows",
            self.rounds, self.rows
        )?;
        writeln!(
            f,
            "  kill -9: {} during the snapshot, {} during a whole-table UPDATE, {} while streaming",
            self.kills_in_snapshot, self.kills_in_large_transaction, self.kills_streaming
        )?;
        writeln!(f, "  Postgres restarts: {}", self.postgres_restarts)?;
        writeln!(
            f,
            "  restart to serving: {}",
            ms_stats(&self.restart_to_serving_ms)
        )?;
        writeln!(
            f,
            "  slot invalidated while stalled: rebuilt and serving {:.1} s after resuming",
            self.slot_invalidated_rebuild_s
        )?;
        match &self.full_disk {
            Some(said) => writeln!(f, "  full disk: {said}")?,
            None => writeln!(f, "  full disk: skipped (mounting a tmpfs needs root)")?,
        }
        writeln!(f, "  indexer peak RSS: {:.0} MB", self.peak_rss_mb)?;
        writeln!(
            f,
            "  writer: {} transactions throughout",
            self.writer_transactions
        )?;
        for line in &self.verify {
            writeln!(f, "  verify: {line}")?;
        }
        write!(
            f,
            "  result: {}",
            if self.equal() {
                "index equal to the table".to_owned()
            } else {
                format!("{} differences", self.differences)
            }
        )
    }
}

/// xorshift: the soak's moments come from its seed, so a failing run can be repeated.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.next() % (to - from))
    }
}

struct Soak {
    pg: &'static PgServer,
    f: Fixture,
    config: PathBuf,
    data: PathBuf,
    disk: Option<SmallDisk>,
    writer: Option<Writer>,
    rng: Rng,
    span: i64,
    summary: Summary,
}

pub async fn soak(opts: &Options) -> Result<Summary> {
    let pg: &'static PgServer = Box::leak(Box::new(PgServer::start_with_watchdog()?));
    let f = Fixture::on(pg).await?;
    f.insert_range(1, opts.rows).await?;
    let disk = if crate::running_as_root() {
        Some(SmallDisk::mount(f.dir.path(), 1024)?)
    } else {
        None
    };
    let data = disk
        .as_ref()
        .map_or_else(|| f.data_dir(), |d| d.data.clone());
    let config = f.config_on(
        &f.slot,
        &data,
        "on_slot_loss = \"resnapshot\"",
        "commit_interval_ms = 100",
    )?;
    let span = opts.rows + opts.rows / 10;
    let mut s = Soak {
        pg,
        writer: Some(Writer::start(pg, &f.db, 1, span, opts.seed).await?),
        f,
        config,
        data,
        disk,
        rng: Rng(opts.seed | 1),
        span,
        summary: Summary {
            rounds: opts.rounds,
            rows: opts.rows,
            ..Default::default()
        },
    };
    for round in 0..opts.rounds {
        s.kill_round(round).await?;
    }
    s.slot_invalidated_while_stalled().await?;
    if s.disk.is_some() {
        s.full_disk().await?;
    }
    s.finish().await
}

impl Soak {
    async fn start(&mut self) -> Result<(Indexer, Instant)> {
        let started = Instant::now();
        let ix = Indexer::start(&self.config, &self.data).await?;
        Ok((ix, started))
    }

    async fn serving(&mut self, ix: &mut Indexer, started: Instant) -> Result<()> {
        ix.wait_ready().await?;
        self.summary
            .restart_to_serving_ms
            .push(started.elapsed().as_secs_f64() * 1e3);
        Ok(())
    }

    fn note_rss(&mut self, ix: &Indexer) {
        if let Some(mb) = ix.pid().and_then(|p| crate::status_mb(p, "VmHWM:").ok()) {
            self.summary.peak_rss_mb = self.summary.peak_rss_mb.max(mb);
        }
    }

    /// One start and one kill -9: in rounds 0, 4, 8, … during a snapshot (the data directory
    /// emptied first, as for a new replica or a rebuild: the kill lands once copying began);
    /// in rounds 2, 6, … at a random moment of a resumed start; in odd rounds once serving,
    /// inside a whole-table UPDATE (rounds 1, 5, 9, …) or after a Postgres restart (rounds
    /// 3, 7, 11, …).
    async fn kill_round(&mut self, round: usize) -> Result<()> {
        let in_snapshot = round.is_multiple_of(4);
        if in_snapshot {
            for entry in std::fs::read_dir(&self.data)? {
                let path = entry?.path();
                if path.is_dir() {
                    std::fs::remove_dir_all(&path)?;
                } else {
                    std::fs::remove_file(&path)?;
                }
            }
        }
        let (mut ix, started) = self.start().await?;
        let mut large = None;
        if in_snapshot {
            let _ = crate::eventually("the snapshot to copy", Duration::from_secs(10), || {
                let ix = &ix;
                async move {
                    let s = ix.status().await?;
                    let state = s["snapshot"]["state"].as_str().unwrap_or_default();
                    Ok((!state.is_empty() && state != "pending").then_some(()))
                }
            })
            .await;
            tokio::time::sleep(self.rng.millis(0, 50)).await;
        } else if round % 2 == 1 {
            self.serving(&mut ix, started).await?;
            if round % 4 == 3 {
                self.restart_postgres().await?;
            } else {
                let client = self.pg.connect(&self.f.db).await?;
                large = Some(tokio::spawn(async move {
                    fixture::transact(&client, "UPDATE places SET body = body || ' soaked'").await
                }));
            }
        }
        if !in_snapshot {
            tokio::time::sleep(self.rng.millis(100, 2_000)).await;
        }
        let snapshot = ix
            .status()
            .await
            .ok()
            .and_then(|s| s["snapshot"]["state"].as_str().map(str::to_owned));
        self.note_rss(&ix);
        ix.kill9();
        match (snapshot.as_deref(), &large) {
            (Some("done" | "resumed"), Some(_)) => self.summary.kills_in_large_transaction += 1,
            (Some("done" | "resumed"), None) => self.summary.kills_streaming += 1,
            _ => self.summary.kills_in_snapshot += 1,
        }
        if let Some(update) = large {
            update.await??;
        }
        Ok(())
    }

    /// Restarts Postgres under the running indexer; the writer, whose connection that
    /// cuts, starts again.
    async fn restart_postgres(&mut self) -> Result<()> {
        if let Some(w) = self.writer.take() {
            self.summary.writer_transactions += w.stop().await.unwrap_or(0);
        }
        self.pg.restart()?;
        self.summary.postgres_restarts += 1;
        self.f.client = self.pg.connect(&self.f.db).await?;
        let seed = self.rng.next();
        self.writer = Some(Writer::start(self.pg, &self.f.db, 1, self.span, seed).await?);
        Ok(())
    }

    /// The indexer stalls (SIGSTOP) while Postgres removes the WAL its slot needs; once
    /// resumed it must rebuild from a new snapshot in the same process.
    async fn slot_invalidated_while_stalled(&mut self) -> Result<()> {
        let (mut ix, started) = self.start().await?;
        self.serving(&mut ix, started).await?;
        let c = &self.f.client;
        c.batch_execute("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
            .await?;
        c.batch_execute("SELECT pg_reload_conf()").await?;
        ix.pause()?;
        let invalidated = self.f.invalidate_slot().await;
        ix.resume()?;
        c.batch_execute("ALTER SYSTEM RESET max_slot_wal_keep_size")
            .await?;
        c.batch_execute("SELECT pg_reload_conf()").await?;
        invalidated?;
        let resumed = Instant::now();
        crate::eventually(
            "a rebuild after the slot's loss",
            Duration::from_secs(300),
            || {
                let ix = &ix;
                async move {
                    let s = ix.status().await?;
                    Ok((s["snapshot"]["state"] == "done"
                        && s["stream"] == "streaming"
                        && s["last_error"]
                            .as_str()
                            .is_some_and(|e| e.contains("was invalidated")))
                    .then_some(()))
                }
            },
        )
        .await?;
        self.summary.slot_invalidated_rebuild_s = resumed.elapsed().as_secs_f64();
        self.note_rss(&ix);
        ensure!(ix.stop()?.success(), "a clean stop after the rebuild");
        Ok(())
    }

    /// The data directory's disk fills while the writer writes: the indexer must stop saying
    /// so, and start again once there is room.
    async fn full_disk(&mut self) -> Result<()> {
        let (mut ix, started) = self.start().await?;
        self.serving(&mut ix, started).await?;
        let disk = self.disk.as_ref().expect("a small disk");
        disk.fill()?;
        let exited = ix.wait_exit(Duration::from_secs(120)).await;
        disk.unfill()?;
        let code = exited?;
        let log = ix.log_text();
        let said = log
            .lines()
            .rfind(|l| l.starts_with("error:"))
            .unwrap_or_default()
            .to_owned();
        ensure!(
            code.code() == Some(2) && said.contains("no space left on the disk holding"),
            "a full disk should stop the indexer saying so: {code}\n{log}"
        );
        self.summary.full_disk = Some(said);
        Ok(())
    }

    async fn finish(mut self) -> Result<Summary> {
        let (mut ix, started) = self.start().await?;
        self.serving(&mut ix, started).await?;
        if let Some(w) = self.writer.take() {
            self.summary.writer_transactions += w.stop().await?;
        }
        self.f.client = self.pg.connect(&self.f.db).await?;
        ix.wait_applied(&self.f.lsn().await?).await?;
        let report = self.f.verify(&self.config, &ix).await?;
        self.note_rss(&ix);
        self.summary.verify = report.lines.clone();
        self.summary
            .verify
            .extend(report.differences.iter().take(20).cloned());
        self.summary.differences = report.differences.len();
        Ok(self.summary)
    }
}
