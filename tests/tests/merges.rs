//! Quiet-time segment merges: after a burst of commits, a quiet indexer merges each
//! partition's segments (reported in `/status`), and every answer and the verified index are
//! the same before and after, and after a kill -9 and restart.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use e2e::Indexer;
use serde_json::{json, Value};

use crate::common::Fixture;

/// Segments per partition, from the indexer's status.
async fn segments(ix: &Indexer) -> Result<BTreeMap<String, u64>> {
    let s = ix.status().await?;
    Ok(s["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let name = p["region"].as_str().unwrap().to_owned();
            (name, p["segments"].as_u64().unwrap())
        })
        .collect())
}

/// Files of segments a partition no longer holds (merged away): tantivy names a segment's
/// files `<segment id>.<ext>` and lists the held segments in `meta.json`.
fn orphan_files(data: &std::path::Path) -> Vec<String> {
    let mut orphans = Vec::new();
    let mut stack = vec![data.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        for e in &entries {
            if e.path().is_dir() {
                stack.push(e.path());
            }
        }
        let Ok(meta) = std::fs::read(dir.join("meta.json")) else {
            continue;
        };
        let meta: Value = serde_json::from_slice(&meta).unwrap();
        let Some(segments) = meta["segments"].as_array() else {
            continue;
        };
        let held: Vec<String> = segments
            .iter()
            .map(|s| s["segment_id"].as_str().unwrap().replace('-', ""))
            .collect();
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            let stem = name.split('.').next().unwrap_or("");
            let is_segment = stem.len() == 32 && stem.bytes().all(|b| b.is_ascii_hexdigit());
            if is_segment && !held.iter().any(|h| h == stem) {
                orphans.push(e.path().display().to_string());
            }
        }
    }
    orphans
}

/// Each query's keys (as a sorted set: merging drops deleted documents from the term
/// statistics, so BM25 scores of near-ties may change order) and total.
async fn answers(ix: &Indexer) -> Result<Vec<(Vec<String>, Value)>> {
    let queries = [
        json!({"index": "places", "text": {"q": "place"}, "limit": 1000}),
        json!({"index": "places", "text": {"q": "burst"}, "limit": 1000}),
        json!({"index": "places", "text": {"q": "\"body of place\""}, "limit": 1000}),
        json!({"index": "places", "geo": {"nearest": {"lat": 10.0, "lon": 20.0, "k": 25}}}),
        json!({"index": "places", "vector": {"values": [1.0, 3.0, 0.5, -1.0], "k": 25, "exact": true}}),
        json!({"index": "places", "filter": {"range": {"population": {"gte": 1000}}}, "limit": 1000}),
    ];
    let mut out = Vec::new();
    for q in queries {
        let v = ix.search_ok(&q).await?;
        let mut keys: Vec<String> = v["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["key"].as_str().unwrap().to_owned())
            .collect();
        keys.sort();
        out.push((keys, v["total"].clone()));
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_indexer_merges_segments_and_answers_alike() -> Result<()> {
    let (f, config, mut ix) = Fixture::indexed(300, "", "commit_interval_ms = 50").await?;
    // A burst of transactions, each its own commit (a segment per partition it touches):
    // inserts, updates that replace documents and deletes that leave tombstones.
    for i in 0..6i64 {
        f.insert_range(1000 + i * 50, 1000 + i * 50 + 49).await?;
        f.client
            .batch_execute(&format!(
                "UPDATE places SET body = 'burst {i} ' || body WHERE id % 7 = {i};
                 DELETE FROM places WHERE id % 53 = {i};"
            ))
            .await?;
        ix.wait_applied(&f.lsn().await?).await?;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let burst = segments(&ix).await?;
    assert!(
        burst.values().any(|&n| n >= 3),
        "the burst left several segments: {burst:?}"
    );
    let before = answers(&ix).await?;
    assert!(before.iter().all(|(keys, _)| !keys.is_empty()));

    let merged = e2e::eventually("every partition merged", Duration::from_secs(60), || {
        let ix = &ix;
        async move {
            let s = segments(ix).await?;
            Ok(s.values().all(|&n| n == 1).then_some(s))
        }
    })
    .await?;
    eprintln!("segments after the burst {burst:?}, once quiet {merged:?}");
    assert_eq!(answers(&ix).await?, before);
    // The merged-away segments' files are deleted too, though no commit follows.
    let data = f.data_dir();
    e2e::eventually("merged-away files deleted", Duration::from_secs(30), || {
        let orphans = orphan_files(&data);
        async move { Ok(orphans.is_empty().then_some(())) }
    })
    .await?;
    f.assert_every_row(&config, &ix).await?;

    ix.kill9();
    let mut ix = Indexer::start(&config, &f.data_dir()).await?;
    ix.wait_ready().await?;
    assert!(segments(&ix).await?.values().all(|&n| n == 1));
    assert_eq!(answers(&ix).await?, before);
    f.assert_every_row(&config, &ix).await?;
    ix.stop()?;
    Ok(())
}
