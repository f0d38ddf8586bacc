//! Fixtures shared by the end-to-end tests and the soak: a fresh database with a `places`
//! table, an index config pointing at it, a writer that generates mixed load, and
//! verification.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::{Indexer, PgServer};
use anyhow::Result;
use tokio_postgres::Client;

pub struct Fixture {
    pub pg: &'static PgServer,
    pub db: String,
    pub client: Client,
    pub dir: tempfile::TempDir,
    pub slot: String,
}

pub const SCHEMA: &str = "
    CREATE TABLE places (
        id bigint PRIMARY KEY, region text, name text, body text, population bigint,
        lat double precision, lon double precision, embedding real[]);
    CREATE TABLE other (id serial PRIMARY KEY, v text);";

impl Fixture {
    pub async fn new() -> Result<Fixture> {
        Self::on(PgServer::shared()).await
    }

    /// A fixture whose table holds rows 1..=`rows`, and a ready indexer over it (its config
    /// with `extra_source` and `extra_apply`).
    pub async fn indexed(
        rows: i64,
        extra_source: &str,
        extra_apply: &str,
    ) -> Result<(Fixture, PathBuf, Indexer)> {
        let f = Fixture::new().await?;
        f.insert_range(1, rows).await?;
        let config = f.config(extra_source, extra_apply)?;
        let mut ix = Indexer::start(&config, &f.data_dir()).await?;
        ix.wait_ready().await?;
        Ok((f, config, ix))
    }

    pub async fn on(pg: &'static PgServer) -> Result<Fixture> {
        let db = pg.fresh_db().await?;
        let client = pg.connect(&db).await?;
        client.batch_execute(SCHEMA).await?;
        Ok(Fixture {
            pg,
            slot: format!("slot_{db}"),
            db,
            client,
            dir: tempfile::tempdir()?,
        })
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Writes an index config; `extra_source` and `extra_apply` are TOML lines.
    pub fn config(&self, extra_source: &str, extra_apply: &str) -> Result<PathBuf> {
        self.config_on(&self.slot, &self.data_dir(), extra_source, extra_apply)
    }

    /// A config for one more indexer over the same database: its own slot and data dir.
    pub fn config_on(
        &self,
        slot: &str,
        data_dir: &std::path::Path,
        extra_source: &str,
        extra_apply: &str,
    ) -> Result<PathBuf> {
        let path = self.dir.path().join(format!("indexer-{}.toml", uniq()));
        let text = format!(
            r#"
[source]
database_url = "{url}"
publication = "search_pub"
slot = "{slot}"
{extra_source}

[storage]
data_dir = "{data}"

[apply]
writer_memory_mb = 16
{extra_apply}

[[index]]
name = "places"
table = "public.places"
region = "region"
text_fields = ["name", {{ column = "body", boost = 1.0 }}]
geo = {{ lat = "lat", lon = "lon" }}
vector = {{ column = "embedding", dimension = 4 }}
filter_fields = ["population"]
"#,
            url = self.pg.url(&self.db),
            slot = slot,
            data = data_dir.display(),
        );
        std::fs::write(&path, text)?;
        Ok(path)
    }

    pub async fn insert_range(&self, from: i64, to: i64) -> Result<()> {
        self.client
            .execute(
                "INSERT INTO places SELECT g, (ARRAY['europe','asia','africa'])[1 + g % 3], 'place ' || g, \
                 'body of place ' || g, g * 10, (g % 170) - 85, (g % 360) - 180, ARRAY[1, g % 7, 0.5, -1]::real[] \
                 FROM generate_series($1::bigint, $2::bigint) g",
                &[&from, &to],
            )
            .await?;
        Ok(())
    }

    /// Rows 1..=`n` over three regions, each body `words` words of 32 characters (~33 bytes
    /// a word), for tests that need rows of a given weight.
    pub async fn insert_with_bodies(&self, n: i64, words: i32) -> Result<()> {
        self.client
            .execute(
                "INSERT INTO places SELECT g, (ARRAY['europe','asia','africa'])[1 + g % 3], 'place ' || g, \
                 repeat(md5(g::text) || ' ', $2), g, (g % 170) - 85, (g % 360) - 180, ARRAY[1, g % 7, 0.5, -1]::real[] \
                 FROM generate_series(1, $1::bigint) g",
                &[&n, &words],
            )
            .await?;
        Ok(())
    }

    pub async fn lsn(&self) -> Result<String> {
        crate::current_lsn(&self.client).await
    }

    pub async fn verify(
        &self,
        config: &std::path::Path,
        indexer: &Indexer,
    ) -> Result<indexer::verify::Report> {
        let cfg = indexer::config::Config::load(config, &Default::default())?;
        Ok(indexer::verify::verify(&cfg, &indexer.url, None, 5).await?)
    }

    pub async fn assert_equal(
        &self,
        config: &std::path::Path,
        indexer: &Indexer,
    ) -> Result<indexer::verify::Report> {
        indexer.wait_applied(&self.lsn().await?).await?;
        let report = self.verify(config, indexer).await?;
        assert!(
            report.equal(),
            "index differs from table:\n{}\n{}",
            report.lines.join("\n"),
            report
                .differences
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
        Ok(report)
    }

    /// `assert_equal`, and the index holds as many documents as the table has rows.
    pub async fn assert_every_row(
        &self,
        config: &std::path::Path,
        indexer: &Indexer,
    ) -> Result<indexer::verify::Report> {
        let report = self.assert_equal(config, indexer).await?;
        let rows = self.count().await?;
        assert!(
            report.lines[0].contains(&format!("{rows} rows")),
            "{:?}",
            report.lines
        );
        Ok(report)
    }

    /// Writes more WAL than the slot may keep, with checkpoints, until Postgres invalidates
    /// the slot (it ends the walsender of a consumer still connected to it). The server's
    /// `max_slot_wal_keep_size` must be small.
    pub async fn invalidate_slot(&self) -> Result<()> {
        let (client, slot) = (&self.client, &self.slot);
        crate::eventually("the slot to be invalidated", std::time::Duration::from_secs(60), || async move {
            client
                .batch_execute("INSERT INTO other (v) SELECT repeat(md5(g::text), 40) FROM generate_series(1, 20000) g")
                .await?;
            client.batch_execute("CHECKPOINT").await?;
            let status: Option<String> = client
                .query_one("SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1", &[slot])
                .await?
                .get(0);
            Ok((status.as_deref() == Some("lost")).then_some(()))
        })
        .await
    }

    pub async fn count(&self) -> Result<i64> {
        Ok(self
            .client
            .query_one("SELECT count(*) FROM places", &[])
            .await?
            .get(0))
    }
}

/// A name unique in this test process (slots, databases).
pub fn uniq_name(prefix: &str) -> String {
    format!("{prefix}_{}_{}", std::process::id(), uniq())
}

fn uniq() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A background writer: transactions of 1–20 mixed inserts, updates (text, coordinates,
/// region moves) and deletes over ids in `[base, base + span)`, until stopped.
pub struct Writer {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<Result<u64>>,
}

impl Writer {
    pub async fn start(pg: &PgServer, db: &str, base: i64, span: i64, seed: u64) -> Result<Writer> {
        let client = pg.connect(db).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = tokio::spawn(async move {
            let mut rng = seed | 1;
            let mut next = || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            let mut txs = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let n = 1 + next() % 20;
                let mut sql = String::new();
                for _ in 0..n {
                    let id = base + (next() % span as u64) as i64;
                    let region = ["europe", "asia", "africa", "oceania"][(next() % 4) as usize];
                    match next() % 10 {
                        0..=3 => sql.push_str(&format!(
                            "INSERT INTO places VALUES ({id}, '{region}', 'w{id}', 'written {t}', {t}, {lat}, {lon}, '{{1,2,3,{t}}}') \
                             ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body, region = EXCLUDED.region;",
                            t = next() % 1000,
                            lat = (next() % 180) as i64 - 90,
                            lon = (next() % 360) as i64 - 180,
                        )),
                        4..=7 => sql.push_str(&format!(
                            "UPDATE places SET region = '{region}', body = body || ' u', lat = {lat} WHERE id = {id};",
                            lat = (next() % 180) as i64 - 90
                        )),
                        _ => sql.push_str(&format!("DELETE FROM places WHERE id = {id};")),
                    }
                }
                transact(&client, &sql).await?;
                txs += 1;
            }
            Ok(txs)
        });
        Ok(Writer { stop, handle })
    }

    pub async fn stop(self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.await?
    }
}

/// Runs `sql` as one transaction, again from the start while Postgres aborts it as a
/// deadlock victim or a serialization failure: random writers and whole-table statements
/// take row locks in different orders, and Postgres breaks such a cycle by aborting one side.
pub async fn transact(client: &Client, sql: &str) -> Result<()> {
    use tokio_postgres::error::SqlState;
    loop {
        match client
            .batch_execute(&format!("BEGIN; {sql}; COMMIT;"))
            .await
        {
            Ok(()) => return Ok(()),
            Err(e)
                if e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED)
                    || e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE) =>
            {
                client.batch_execute("ROLLBACK").await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A small disk of its own for a data directory (a tmpfs; mounting needs root), unmounted
/// when dropped. `data` is a link into it, so a log written beside `data` stays on the
/// ordinary disk.
pub struct SmallDisk {
    pub mount: PathBuf,
    pub data: PathBuf,
}

impl SmallDisk {
    /// Mounts `mb` MB under `dir`.
    pub fn mount(dir: &std::path::Path, mb: u64) -> Result<SmallDisk> {
        let mount = dir.join("small-disk");
        std::fs::create_dir_all(&mount)?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(&mount)
            .status()?;
        anyhow::ensure!(status.success(), "mount a tmpfs: {status}");
        let disk = SmallDisk {
            data: dir.join("data-on-small-disk"),
            mount,
        };
        std::fs::create_dir_all(disk.mount.join("data"))?;
        std::os::unix::fs::symlink(disk.mount.join("data"), &disk.data)?;
        Ok(disk)
    }

    /// Fills what is left of the disk.
    pub fn fill(&self) -> Result<()> {
        use std::io::Write;
        let mut file = std::fs::File::create(self.mount.join("filler"))?;
        let chunk = vec![7u8; 64 << 10];
        while file.write_all(&chunk).and_then(|()| file.flush()).is_ok() {}
        Ok(())
    }

    /// Gives back what `fill` took.
    pub fn unfill(&self) -> Result<()> {
        Ok(std::fs::remove_file(self.mount.join("filler"))?)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.mount)
            .status();
    }
}
