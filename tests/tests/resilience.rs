//! Crashes, restarts and lost slots: nothing is lost, nothing is duplicated.

use std::time::Duration;

use anyhow::Result;
use e2e::{Indexer, PgServer};

use crate::common::{Fixture, Writer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_writes_loses_nothing() -> Result<()> {
    let f = Fixture::new().await?;
    f.insert_range(1, 3_000).await?;
    // Durable commits every 50 ms, so kills land before, during and after commits.
    let config = f.config("", "commit_interval_ms = 50")?;
    let writer = Writer::start(f.pg, &f.db, 1, 4_000, 42).await?;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for round in 0..5 {
        let mut ix = Indexer::start(&config, &f.data_dir()).await?;
        if round > 0 {
            ix.wait_ready().await?;
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Kill at a random moment: during the snapshot (round 0 may), the stream, a commit.
        tokio::time::sleep(Duration::from_millis(100 + seed % 1_500)).await;
        ix.kill9();
    }
    let txs = writer.stop().await?;
    assert!(txs > 10, "writer made {txs} transactions");
    let mut ix = Indexer::start(&config, &f.data_dir()).await?;
    ix.wait_ready().await?;
    f.assert_every_row(&config, &ix).await?;
    Ok(())
}

/// A process killed while Postgres is still creating its slot (CREATE_REPLICATION_SLOT waits
/// for transactions in progress) leaves an ephemeral slot, which Postgres drops itself once
/// the old walsender notices; the next start finds it, tries to drop it, and must not fail
/// when it is gone first (seen in CI: "replication slot … does not exist", exit 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_slot_creation_does_not_stop_the_next_start() -> Result<()> {
    let f = Fixture::new().await?;
    f.insert_range(1, 200).await?;
    let config = f.config("", "")?;
    // An open transaction with an xid holds the slot's creation back.
    let blocker = f.pg.connect(&f.db).await?;
    blocker
        .batch_execute(
            "BEGIN; INSERT INTO places (id, region, name) VALUES (100000, 'europe', 'held')",
        )
        .await?;
    let mut ix = Indexer::start(&config, &f.data_dir()).await?;
    let (client, slot) = (&f.client, &f.slot);
    e2e::eventually(
        "the slot being created",
        Duration::from_secs(30),
        || async move {
            let n: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
                    &[slot],
                )
                .await?
                .get(0);
            Ok((n > 0).then_some(()))
        },
    )
    .await?;
    ix.kill9();
    // The next start sees the slot held by the old walsender, which lets go (and Postgres
    // drops the unfinished slot) only when the blocking transaction ends.
    let mut ix = Indexer::start(&config, &f.data_dir()).await?;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    blocker.batch_execute("COMMIT").await?;
    ix.wait_ready().await?;
    f.assert_every_row(&config, &ix).await?;
    assert!(
        ix.log_text()
            .contains("dropping a slot without a usable snapshot"),
        "the second start found the unfinished slot: {}",
        ix.log_text()
    );
    Ok(())
}

/// A partition commit that fails, by a panic or by an error, stops the indexer with a clear
/// message and a non-zero exit (never a silent stall of durability); a restart without the
/// fault replays from the durable checkpoint and the index equals the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_stops_the_process_and_a_restart_recovers() -> Result<()> {
    let (f, config, mut ix) = Fixture::indexed(300, "", "commit_interval_ms = 50").await?;
    assert!(ix.stop()?.success());
    let mut next = 301;
    for fault in ["panic", "error"] {
        let env = [("INDEXER_FAULT_COMMIT", fault.to_owned())];
        let mut ix = Indexer::start_with_env(&config, &f.data_dir(), "127.0.0.1:0", &env).await?;
        // After the first round, the rows it left undurable are replayed at once and their
        // commit fails: the process may stop before it is seen ready (the exit is asserted
        // below either way).
        let ready = ix.wait_ready().await;
        assert!(ready.is_ok() || fault != "panic", "{fault}: {ready:?}");
        // Searchable at once (the fresh layer), then the commit fails.
        f.insert_range(next, next + 49).await?;
        next += 50;
        let code = ix.wait_exit(Duration::from_secs(30)).await?;
        assert_eq!(code.code(), Some(2), "{fault}: {}", ix.log_text());
        let log = ix.log_text();
        assert!(
            log.contains("partition commit failed") && log.contains("injected commit fault"),
            "{fault}: {log}"
        );
    }
    let mut ix = Indexer::start(&config, &f.data_dir()).await?;
    let status = ix.wait_ready().await?;
    assert_eq!(status["snapshot"]["state"], "resumed", "{status}");
    let report = f.assert_equal(&config, &ix).await?;
    assert!(report.lines[0].contains("400 rows"), "{:?}", report.lines);
    Ok(())
}

/// Slots may keep 1 MB of WAL: a little writing invalidates one (the limit is cluster-wide).
const SMALL_WAL_KEEP: &str = "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'";

/// A cluster of its own (stopping or restarting the shared one, or changing its settings,
/// would disturb other tests; leaked for the 'static fixture, the watchdog stops and removes
/// it at exit) with `settings` (SQL, e.g. `ALTER SYSTEM`) in force and `rows` rows, indexed
/// by a running indexer.
async fn own_cluster_indexed(
    rows: i64,
    settings: &str,
) -> Result<(&'static PgServer, Fixture, std::path::PathBuf, Indexer)> {
    let pg: &'static PgServer = Box::leak(Box::new(PgServer::start_with_watchdog()?));
    let f = Fixture::on(pg).await?;
    if !settings.is_empty() {
        f.client.batch_execute(settings).await?;
        f.client.batch_execute("SELECT pg_reload_conf()").await?;
    }
    f.insert_range(1, rows).await?;
    let config = f.config("", "")?;
    let mut ix = Indexer::start(&config, &f.data_dir()).await?;
    ix.wait_ready().await?;
    Ok((pg, f, config, ix))
}

/// Runs `sql` on a new connection to `pg` (the fixture's own may have been cut by a
/// restart) and waits until the indexer has applied it.
async fn write_and_wait(pg: &PgServer, f: &Fixture, ix: &Indexer, sql: &str) -> Result<()> {
    let client = pg.connect(&f.db).await?;
    client.batch_execute(sql).await?;
    ix.wait_applied(&e2e::current_lsn(&client).await?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_postgres_restart() -> Result<()> {
    let (pg, f, config, mut ix) = own_cluster_indexed(500, "").await?;
    pg.restart()?;
    write_and_wait(pg, &f, &ix, "INSERT INTO places VALUES (9001, 'asia', 'after restart', 'x', 1, 1, 1, NULL); DELETE FROM places WHERE id < 10").await?;
    let status = ix.status().await?;
    assert!(status["reconnects"].as_u64().unwrap() >= 1, "{status}");
    let cfg = indexer::config::Config::load(&config, &Default::default())?;
    let report = indexer::verify::verify(&cfg, &ix.url, None, 5).await?;
    assert!(report.equal(), "{:?}", report.differences);
    ix.stop()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_without_copying() -> Result<()> {
    let f = Fixture::new().await?;
    f.insert_range(1, 1_000).await?;
    let config = f.config("", "")?;
    let mut ix = Indexer::start(&config, &f.data_dir()).await?;
    let first = ix.wait_ready().await?;
    assert_eq!(first["snapshot"]["state"], "done");
    assert!(ix.stop()?.success());
    f.insert_range(1_001, 1_100).await?;
    f.client
        .batch_execute("DELETE FROM places WHERE id <= 10")
        .await?;
    let mut ix = Indexer::start(&config, &f.data_dir()).await?;
    let second = ix.wait_ready().await?;
    assert_eq!(second["snapshot"]["state"], "resumed", "{second}");
    assert_eq!(second["snapshot"]["rows"], 0);
    f.assert_equal(&config, &ix).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_slot_is_reported_then_rebuilt_when_allowed() -> Result<()> {
    let (f, config, mut ix) = Fixture::indexed(300, "", "").await?;
    assert!(ix.stop()?.success());
    // The walsender of the stopped indexer may take a moment to let go of the slot.
    let (client, slot) = (&f.client, &f.slot);
    e2e::eventually(
        "the slot to be dropped",
        Duration::from_secs(30),
        || async move {
            Ok(client
                .execute("SELECT pg_drop_replication_slot($1)", &[slot])
                .await
                .ok())
        },
    )
    .await?;
    f.insert_range(301, 310).await?;

    let mut ix = Indexer::spawn(&config, &f.data_dir())?;
    let code = ix.wait_exit(Duration::from_secs(30)).await?;
    assert_eq!(code.code(), Some(2));
    let log = ix.log_text();
    assert!(
        log.contains("replication slot")
            && log.contains("does not exist")
            && log.contains("resnapshot"),
        "{log}"
    );

    rebuilt_at_start(&f).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidated_slot_is_reported_then_rebuilt_when_allowed() -> Result<()> {
    let (_, f, config, mut ix) = own_cluster_indexed(200, SMALL_WAL_KEEP).await?;
    assert!(ix.stop()?.success());

    // With the indexer down, write more WAL than the slot may keep; a checkpoint invalidates it.
    f.invalidate_slot().await?;
    f.insert_range(201, 220).await?;

    let mut ix = Indexer::spawn(&config, &f.data_dir())?;
    assert_eq!(ix.wait_exit(Duration::from_secs(30)).await?.code(), Some(2));
    let log = ix.log_text();
    assert!(log.contains("was invalidated"), "{log}");

    rebuilt_at_start(&f).await?;
    Ok(())
}

/// With `on_slot_loss = "resnapshot"`, an indexer started on a lost slot rebuilds from a new
/// snapshot and ends equal to the table; its config and the running indexer.
async fn rebuilt_at_start(f: &Fixture) -> Result<(std::path::PathBuf, Indexer)> {
    let rebuild = f.config("on_slot_loss = \"resnapshot\"", "")?;
    let mut ix = Indexer::start(&rebuild, &f.data_dir()).await?;
    let status = ix.wait_ready().await?;
    assert_eq!(status["snapshot"]["state"], "done", "{status}");
    f.assert_equal(&rebuild, &ix).await?;
    Ok((rebuild, ix))
}

/// Waits (up to a minute) until the indexer has rebuilt from a new snapshot in the same
/// process after a lost slot whose error says `cause`, and streams again; its status then.
async fn rebuilt_after(ix: &Indexer, cause: &str) -> Result<serde_json::Value> {
    e2e::eventually(
        "a rebuilt snapshot",
        Duration::from_secs(60),
        || async move {
            let s = ix.status().await?;
            Ok((s["snapshot"]["state"] == "done"
                && s["stream"] == "streaming"
                && s["last_error"].as_str().is_some_and(|e| e.contains(cause)))
            .then_some(s))
        },
    )
    .await
}

/// The slot is invalidated while the indexer streams (paused with SIGSTOP meanwhile, as a
/// stalled process would be, its connection open): with `on_slot_loss = "fail"` it stops
/// within seconds of resuming, saying why; with `"resnapshot"` it rebuilds in the same
/// process and ends equal to the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_invalidated_while_streaming_stops_or_rebuilds() -> Result<()> {
    let (_, f, _, mut ix) = own_cluster_indexed(200, SMALL_WAL_KEEP).await?;
    ix.pause()?;
    f.invalidate_slot().await?;
    f.insert_range(201, 220).await?;
    ix.resume()?;
    let code = ix.wait_exit(Duration::from_secs(10)).await?;
    let log = ix.log_text();
    assert_eq!(code.code(), Some(2), "{log}");
    assert!(
        log.contains("was invalidated") && log.contains("resnapshot"),
        "{log}"
    );

    // Rebuilt at start (the slot is lost), then lost again while streaming: rebuilt again.
    let (rebuild, ix) = rebuilt_at_start(&f).await?;
    let reconnects = ix.status().await?["reconnects"].as_u64().unwrap_or(0);
    ix.pause()?;
    f.invalidate_slot().await?;
    f.insert_range(221, 300).await?;
    f.client
        .batch_execute("DELETE FROM places WHERE id <= 20")
        .await?;
    ix.resume()?;
    let status = rebuilt_after(&ix, "was invalidated").await?;
    // One failed attempt at most before the loss is recognised, not a loop of them.
    assert!(
        status["reconnects"].as_u64().unwrap_or(0) <= reconnects + 1,
        "{status}"
    );
    f.assert_equal(&rebuild, &ix).await?;
    Ok(())
}

/// While the stream is down (Postgres stopped), freshness says so: the stream's state, and a
/// lag that grows with the time since the stream was last live, never 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_grows_while_the_stream_is_down() -> Result<()> {
    let (pg, f, _config, ix) = own_cluster_indexed(100, "").await?;
    let query = serde_json::json!({"index": "places", "q": "place", "limit": 1});
    let live = ix.search_ok(&query).await?;
    assert_eq!(live["stream"], "streaming", "{live}");
    assert_eq!(live["lag_ms"], 0, "{live}");

    pg.stop()?;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let status = ix.status().await?;
    assert_ne!(status["stream"], "streaming", "{status}");
    assert!(status["lag_ms"].as_u64().unwrap() >= 2_000, "{status}");
    let down = ix.search_ok(&query).await?;
    assert_ne!(down["stream"], "streaming", "{down}");
    assert!(down["lag_ms"].as_u64().unwrap() >= 2_000, "{down}");
    let metrics = reqwest::get(format!("{}/metrics", ix.url))
        .await?
        .text()
        .await?;
    let lag_seconds = metrics
        .lines()
        .find_map(|l| l.strip_prefix("indexer_lag_seconds "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(lag_seconds >= 2.0, "{metrics}");

    pg.start_again()?;
    write_and_wait(pg, &f, &ix, "UPDATE places SET name = 'back' WHERE id = 1").await?;
    let back = ix.search_ok(&query).await?;
    assert_eq!(back["stream"], "streaming", "{back}");
    assert_eq!(back["lag_ms"], 0, "{back}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_lost_while_streaming_is_rebuilt_in_process() -> Result<()> {
    let (f, config, mut ix) = Fixture::indexed(500, "on_slot_loss = \"resnapshot\"", "").await?;
    let endpoint = ix.url.clone();

    // Cut the walsender and drop the slot before the indexer reconnects (it backs off 100 ms).
    let (client, slot) = (&f.client, &f.slot);
    e2e::eventually("the active slot to be dropped", Duration::from_secs(30), || async move {
        client
            .execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active",
                &[slot],
            )
            .await?;
        Ok(client.execute("SELECT pg_drop_replication_slot($1)", &[slot]).await.ok())
    })
    .await?;
    f.insert_range(501, 600).await?;
    f.client
        .batch_execute("DELETE FROM places WHERE id <= 50")
        .await?;

    // Same process, same endpoint: it rebuilds and catches up.
    let ix_status = rebuilt_after(&ix, "does not exist").await?;
    assert_eq!(ix.url, endpoint);
    assert!(
        ix_status["snapshot"]["rows"].as_u64().unwrap() >= 500,
        "{ix_status}"
    );
    f.assert_equal(&config, &ix).await?;
    ix.wait_ready().await?;
    Ok(())
}

/// A taken address stops either process at once with a message naming the address and the
/// setting that chose it, not a bare "Address already in use".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_address_is_named_with_its_setting() -> Result<()> {
    let f = Fixture::new().await?;
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = taken.local_addr()?.to_string();
    let config = f.config("", "")?;
    let mut ix = Indexer::spawn_on(&config, &f.data_dir(), &addr)?;
    let code = ix.wait_exit(Duration::from_secs(30)).await?;
    let log = ix.log_text();
    assert_eq!(code.code(), Some(2), "{log}");
    assert!(
        log.contains(&format!("cannot listen on {addr}"))
            && log.contains("http.listen")
            && log.contains("INDEXER_LISTEN")
            && log.contains("another process listens there"),
        "{log}"
    );

    let api_config = crate::api::api_config(&f, "http://127.0.0.1:9", "")?;
    let out = std::process::Command::new(e2e::query_api_bin())
        .args(["--config", api_config.to_str().unwrap(), "--listen", &addr])
        .output()?;
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains(&format!("cannot listen on {addr}"))
            && text.contains("QUERY_API_LISTEN")
            && text.contains("another process listens there"),
        "{text}"
    );
    drop(taken);
    Ok(())
}

/// A full disk stops the indexer with one line naming the data directory, its free space and
/// what to do (not tantivy's error structures); once there is room again, a restart loses
/// nothing. The data directory lives on a 16 MB tmpfs of its own, which needs root (CI runs
/// as root); the logs stay on the ordinary disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_named_and_a_restart_after_it_loses_nothing() -> Result<()> {
    if !e2e::running_as_root() {
        eprintln!("skipped: mounting a small tmpfs needs root (CI runs as root)");
        return Ok(());
    }
    let f = Fixture::new().await?;
    f.insert_range(1, 300).await?;
    let disk = e2e::fixture::SmallDisk::mount(f.dir.path(), 16)?;
    let data = disk.data.clone();
    let config = f.config_on(&f.slot, &data, "", "commit_interval_ms = 50")?;
    let mut ix = Indexer::start(&config, &data).await?;
    ix.wait_ready().await?;

    disk.fill()?;
    f.insert_range(301, 3_300).await?;
    let code = ix.wait_exit(Duration::from_secs(60)).await?;
    let log = ix.log_text();
    assert_eq!(code.code(), Some(2), "{log}");
    let said = log
        .lines()
        .rfind(|l| l.starts_with("error:"))
        .unwrap_or_default();
    eprintln!("the indexer said: {said}");
    assert!(
        said.contains(&format!(
            "no space left on the disk holding {}",
            data.display()
        )) && said.contains("MB available of 16 MB")
            && said.contains("INDEXER_DATA_DIR")
            && said.contains("nothing is lost")
            && !said.contains("Os {"),
        "{log}"
    );

    disk.unfill()?;
    let mut ix = Indexer::start(&config, &data).await?;
    ix.wait_ready().await?;
    f.assert_equal(&config, &ix).await?;
    Ok(())
}
