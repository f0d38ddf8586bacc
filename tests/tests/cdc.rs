//! Snapshot and streaming: every kind of change ends with the index equal to the table.

use std::time::Duration;

use anyhow::Result;
use e2e::Indexer;

use crate::common::{Fixture, Writer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_with_concurrent_writes_equals_table() -> Result<()> {
    let f = Fixture::new().await?;
    f.insert_range(1, 20_000).await?;
    let config = f.config("", "")?;
    // The writer starts once the slot is consistent, so every change it makes lands during or
    // after the snapshot (the copy reads the slot's exported snapshot): the copy must see
    // exactly the 20,000 rows of that moment and the stream must bring everything after.
    // (Started before the slot, a slow start-up under the parallel suite let it delete rows
    // first; started when the slot merely existed, its first commits could precede the
    // slot's consistent point and so be in the snapshot: 19,989 rows copied under CI load.
    // A logical slot has a confirmed_flush_lsn once it is consistent.)
    let mut ix = Indexer::start(&config, &f.data_dir()).await?;
    let client = &f.client;
    let slot = &f.slot;
    e2e::eventually(
        "the indexer's slot to be consistent",
        Duration::from_secs(60),
        || async move {
            let n: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_replication_slots \
                     WHERE slot_name = $1 AND confirmed_flush_lsn IS NOT NULL",
                    &[slot],
                )
                .await?
                .get(0);
            Ok((n > 0).then_some(()))
        },
    )
    .await?;
    let writer = Writer::start(f.pg, &f.db, 1, 25_000, 7).await?;
    let status = ix.wait_ready().await?;
    let txs = writer.stop().await?;
    assert!(txs > 0, "the writer ran during the snapshot");
    assert_eq!(
        status["snapshot"]["rows"].as_u64(),
        Some(20_000),
        "the copy reads the slot's snapshot, untouched by later writes: {status}"
    );
    f.assert_every_row(&config, &ix).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_change_is_applied() -> Result<()> {
    let (f, config, mut ix) = Fixture::indexed(100, "", "").await?;
    let c = &f.client;

    // A 20+ KB incompressible body is stored out of line (TOAST); updating another column
    // sends it as "unchanged", and the stored value must be kept.
    c.batch_execute(
        "INSERT INTO places VALUES (500, 'europe', 'big', \
           (SELECT string_agg(md5(g::text || random()::text), '') FROM generate_series(1, 700) g), 1, 1, 1, '{1,1,1,1}')",
    )
    .await?;
    let toasted: i32 = c
        .query_one(
            "SELECT pg_column_size(body) FROM places WHERE id = 500",
            &[],
        )
        .await?
        .get(0);
    assert!(toasted > 20_000, "body is {toasted} bytes");
    c.batch_execute("UPDATE places SET population = 42 WHERE id = 500")
        .await?;
    f.assert_equal(&config, &ix).await?;

    c.batch_execute(
        "INSERT INTO places VALUES (101, 'asia', 'new', 'inserted', 5, 10, 10, '{0,0,0,1}');
         UPDATE places SET body = 'changed text' WHERE id = 2;
         DELETE FROM places WHERE id = 3;
         UPDATE places SET id = 100000 WHERE id = 4;               -- primary key change
         UPDATE places SET region = 'oceania' WHERE id = 5;          -- moves partition
         BEGIN; UPDATE places SET region = 'south_america', id = 100001 WHERE id = 7; DELETE FROM places WHERE id = 8; COMMIT;",
    )
    .await?;
    let report = f.assert_equal(&config, &ix).await?;
    assert!(
        report
            .lines
            .iter()
            .any(|l| l.contains("oceania: table 1, index 1")),
        "{:?}",
        report.lines
    );

    c.batch_execute("TRUNCATE places; INSERT INTO places VALUES (1, 'africa', 'after', 'truncate', 1, 0, 0, NULL)").await?;
    let report = f.assert_equal(&config, &ix).await?;
    assert!(report.lines[0].contains("1 rows"), "{:?}", report.lines);
    ix.stop()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_changes_of_unconfigured_columns_do_not_stop_the_stream() -> Result<()> {
    let (f, config, ix) = Fixture::indexed(50, "", "").await?;
    f.client
        .batch_execute(
            "ALTER TABLE places ADD COLUMN extra int;
             INSERT INTO places VALUES (51, 'asia', 'x', 'with extra', 1, 1, 1, NULL, 7);
             UPDATE places SET extra = 1, body = 'b2' WHERE id = 2;",
        )
        .await?;
    f.assert_equal(&config, &ix).await?;
    f.client
        .batch_execute(
            "ALTER TABLE places DROP COLUMN extra;
             INSERT INTO places VALUES (52, 'europe', 'y', 'after drop', 1, 1, 1, NULL);
             UPDATE places SET body = 'b3' WHERE id = 3;",
        )
        .await?;
    f.assert_equal(&config, &ix).await?;
    assert_eq!(ix.status().await?["stream"], "streaming");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_are_reported_and_the_stream_goes_on() -> Result<()> {
    let (f, config, ix) = Fixture::indexed(10, "", "max_text_bytes = 4096").await?;
    f.client
        .batch_execute(
            "INSERT INTO places VALUES (1001, 'asia', 'dim', 'wrong dimension', 1, 1, 1, '{1,2}');
             INSERT INTO places VALUES (1002, 'asia', 'nan', 'nan vector', 1, 1, 1, '{1,NaN,0,0}');
             INSERT INTO places VALUES (1003, 'asia', 'lat', 'latitude 200', 1, 200, 1, '{1,0,0,0}');
             INSERT INTO places VALUES (1004, 'asia', 'long', repeat('x', 5000), 1, 1, 1, '{1,0,0,0}');
             INSERT INTO places VALUES (1005, NULL, 'noregion', 'no region', 1, 1, 1, '{1,0,0,0}');
             INSERT INTO places VALUES (1006, 'europe', 'good', 'a good row after the bad ones', 1, 1, 1, '{1,0,0,0}');",
        )
        .await?;
    f.assert_equal(&config, &ix).await?;
    let status = ix.status().await?;
    assert!(status["rejected_rows"].as_u64().unwrap() >= 5, "{status}");
    let recent = status["recent_rejections"].as_array().unwrap();
    for (key, field) in [
        ("1001", "embedding"),
        ("1002", "embedding"),
        ("1003", "lat"),
        ("1004", "body"),
        ("1005", "region"),
    ] {
        assert!(
            recent
                .iter()
                .any(|r| r["key"] == key && r["field"] == field),
            "no rejection for key {key} field {field}: {recent:?}"
        );
    }
    let asia = status["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["region"] == "asia")
        .unwrap();
    assert!(asia["rejected_rows"].as_u64().unwrap() >= 4, "{asia}");
    assert!(
        ix.log_text().contains("key=1003"),
        "rejections are logged with their key"
    );
    assert_eq!(status["stream"], "streaming");
    // Metrics export the same.
    let metrics = reqwest::get(format!("{}/metrics", ix.url))
        .await?
        .text()
        .await?;
    assert!(metrics.contains("indexer_rejected_rows_total"), "{metrics}");
    assert!(
        metrics.contains("indexer_partition_documents{index=\"places\",region=\"asia\"}"),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_slot_confirms_wal_of_unpublished_tables() -> Result<()> {
    let (f, _config, ix) = Fixture::indexed(10, "", "").await?;
    let before: String = f
        .client
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&f.slot],
        )
        .await?
        .get(0);
    for i in 0..1000 {
        f.client
            .execute("INSERT INTO other (v) VALUES ($1)", &[&format!("v{i}")])
            .await?;
    }
    let target = f.lsn().await?;
    let target = &target;
    let client = &f.client;
    let slot = &f.slot;
    let advanced = e2e::eventually("confirmed_flush_lsn to pass the unrelated commits", Duration::from_secs(30), || async move {
        let row = client
            .query_one(
                "SELECT confirmed_flush_lsn >= $2::text::pg_lsn, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
                &[slot, target],
            )
            .await?;
        let ok: bool = row.get(0);
        Ok(ok.then(|| row.get::<_, String>(1)))
    })
    .await?;
    assert_ne!(advanced, before);
    // And the freshness watermark followed, so a reader waiting for `target` is not stuck.
    ix.wait_applied(&f.lsn().await?).await?;
    Ok(())
}
