//! Vector answers on the real dev data (30k 384-d MiniLM embeddings): exact mode returns the
//! exact top-10, globally and within a region; after a stream of changes and after kill -9
//! they equal a brute-force float64 oracle over the table.

use std::collections::BTreeSet;

use anyhow::Result;
use e2e::dev_data::{self, DevShard};
use e2e::{Indexer, PgServer};
use serde_json::{json, Value};

async fn knn(
    ix: &Indexer,
    values: &[f32],
    k: usize,
    regions: &[&str],
    exact: bool,
) -> Result<Vec<(i64, f64)>> {
    let v = ix
        .search_ok(&json!({"index": "places", "regions": regions, "vector": {"values": values, "k": k, "exact": exact}, "limit": k}))
        .await?;
    Ok(v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["key"].as_str().unwrap().parse().unwrap(),
                h["score"].as_f64().unwrap(),
            )
        })
        .collect())
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// (id, region, embedding, lat, lon) of every row with a vector.
type Table = Vec<(i64, String, Vec<f32>, f64, f64)>;

/// Every row with a vector: the oracle's input, read once per check.
async fn table(client: &tokio_postgres::Client) -> Result<Table> {
    Ok(client
        .query(
            "SELECT id, region, embedding, lat, lon FROM places WHERE embedding IS NOT NULL",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect())
}

/// Exact top-k ids among rows passing `keep`, best first, ties by id.
fn oracle_where(
    rows: &Table,
    q: &[f32],
    k: usize,
    keep: impl Fn(&(i64, String, Vec<f32>, f64, f64)) -> bool,
) -> Vec<i64> {
    let mut all: Vec<(f64, i64)> = rows
        .iter()
        .filter(|r| keep(r))
        .map(|r| (cosine(q, &r.2), r.0))
        .collect();
    all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    all.into_iter().take(k).map(|x| x.1).collect()
}

fn oracle(rows: &Table, q: &[f32], k: usize, region: Option<&str>) -> Vec<i64> {
    oracle_where(rows, q, k, |r| region.is_none_or(|reg| r.1 == reg))
}

fn embedding(q: &Value) -> Vec<f32> {
    q["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// Recall@10 against an expected list, accepting either side of a tie at the cut.
fn recall(got: &[i64], want: &[Value], scores: &[Value], score_11th: f64) -> f64 {
    let want: Vec<i64> = want.iter().map(|v| v.as_i64().unwrap()).collect();
    let tie_at_cut = scores.len() == 10 && scores[9].as_f64().unwrap() - score_11th < 1e-6;
    let need: BTreeSet<i64> = want
        .iter()
        .take(if tie_at_cut { 9 } else { 10 })
        .copied()
        .collect();
    let found = need.iter().filter(|id| got.contains(id)).count() + usize::from(tie_at_cut);
    found as f64 / want.len().max(1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_vector_search_on_dev_data_through_updates_and_kill9() -> Result<()> {
    let Some(_) = dev_data::require() else {
        return Ok(());
    };
    let pg = PgServer::shared();
    let db = pg.fresh_db().await?;
    let client = pg.connect(&db).await?;
    dev_data::load(&client, true).await?;
    let shard = DevShard::new(
        &pg.url(&db),
        "vec",
        "writer_memory_mb = 32\ncommit_interval_ms = 60000",
        "vector = { column = \"embedding\", dimension = 384, metric = \"cosine\" }\n\
         geo = { lat = \"lat\", lon = \"lon\" }\nfilter_fields = [\"country_code\", \"population\"]",
    )?;
    let mut ix = shard.start().await?;

    // 1. The query file: exact mode returns the exact top-10, global and in the query's region;
    //    once the graph has every vector, the default (graph) mode has recall@10 >= 0.95.
    let queries = dev_data::queries("queries_vector.jsonl")?;
    let n = queries.len() as f64;
    let mean_recall = |exact: bool| {
        let ix = &ix;
        let queries = &queries;
        async move {
            let (mut global, mut regional) = (0.0, 0.0);
            for q in queries {
                let v = embedding(q);
                let got: Vec<i64> = knn(ix, &v, 10, &[], exact)
                    .await?
                    .iter()
                    .map(|h| h.0)
                    .collect();
                global += recall(
                    &got,
                    q["top10_ids"].as_array().unwrap(),
                    q["top10_scores"].as_array().unwrap(),
                    q["score_11th"].as_f64().unwrap_or(-2.0),
                );
                let region = q["filter_region"].as_str().unwrap();
                let got: Vec<i64> = knn(ix, &v, 10, &[region], exact)
                    .await?
                    .iter()
                    .map(|h| h.0)
                    .collect();
                let want: Vec<i64> = q["top10_ids_in_region"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_i64().unwrap())
                    .collect();
                regional += want.iter().filter(|id| got.contains(id)).count() as f64
                    / want.len().max(1) as f64;
            }
            anyhow::Ok((global / n, regional / n))
        }
    };
    assert_eq!(
        mean_recall(true).await?,
        (1.0, 1.0),
        "exact mode: mean recall@10 (global, in region)"
    );
    e2e::eventually(
        "the graph to hold every vector",
        std::time::Duration::from_secs(300),
        || {
            let ix = &ix;
            async move {
                let s = ix.status().await?;
                let pending: u64 = s["partitions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["vectors_pending_graph"].as_u64().unwrap_or(1))
                    .sum();
                Ok((pending == 0).then_some(()))
            }
        },
    )
    .await?;
    let (global, regional) = mean_recall(false).await?;
    eprintln!("graph mode: mean recall@10 global {global:.4}, in region {regional:.4}");
    assert!(
        global >= 0.95 && regional >= 0.95,
        "graph mode: mean recall@10 global {global}, in region {regional}"
    );

    // 1b. Geo-filtered vector queries (geo filters, the vector ranks): exact when the filter
    //     is selective or `exact` is set; the graph with a post-filter otherwise.
    let rows = table(&client).await?;
    let mut wide_recall = 0.0;
    let sample: Vec<&Value> = queries.iter().step_by(10).collect();
    for q in &sample {
        let v = embedding(q);
        let top1 = q["top10_ids"][0].as_i64().unwrap();
        let (lat, lon) = rows
            .iter()
            .find(|r| r.0 == top1)
            .map(|r| (r.3, r.4))
            .unwrap();
        for (radius_m, exact) in [
            (500_000.0, false),
            (5_000_000.0, true),
            (5_000_000.0, false),
        ] {
            let body = json!({"index": "places", "geo": {"within": {"lat": lat, "lon": lon, "radius_m": radius_m}},
                              "vector": {"values": v, "k": 10, "exact": exact}, "limit": 10});
            let resp = ix.search(&body).await?.1;
            let got: Vec<i64> = resp["hits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["key"].as_str().unwrap().parse().unwrap())
                .collect();
            let want = oracle_where(&rows, &v, 10, |r| {
                engine::geo::haversine_m(lat, lon, r.3, r.4) <= radius_m
            });
            if exact || radius_m < 1_000_000.0 {
                assert_eq!(
                    got, want,
                    "query {} within {radius_m} m (exact {exact})",
                    q["qid"]
                );
            } else {
                wide_recall += want.iter().filter(|id| got.contains(id)).count() as f64
                    / want.len().max(1) as f64;
            }
        }
    }
    let wide_recall = wide_recall / sample.len() as f64;

    // 1c. Field-filtered vector queries: a selective filter (one country, or a population
    //     band) is searched exactly, so the answer is the oracle's over the passing rows.
    let attrs: std::collections::HashMap<i64, (Option<String>, Option<i64>)> = client
        .query("SELECT id, country_code, population FROM places", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    for q in &sample {
        let v = embedding(q);
        let top1 = q["top10_ids"][0].as_i64().unwrap();
        let cc = attrs[&top1].0.clone().unwrap_or_default();
        for (filter, keep) in [
            (
                json!({"term": {"country_code": cc}}),
                Box::new(|id: i64| attrs[&id].0.as_deref() == Some(cc.as_str()))
                    as Box<dyn Fn(i64) -> bool>,
            ),
            (
                json!({"and": [{"range": {"population": {"gte": 50000, "lt": 60000}}}, {"not": {"term": {"country_code": "US"}}}]}),
                Box::new(|id: i64| {
                    let (c, p) = &attrs[&id];
                    p.is_some_and(|p| (50_000..60_000).contains(&p)) && c.as_deref() != Some("US")
                }),
            ),
        ] {
            let resp = ix
                .search(&json!({"index": "places", "vector": {"values": v, "k": 10}, "filter": filter, "limit": 10}))
                .await?
                .1;
            let got: Vec<i64> = resp["hits"]
                .as_array()
                .unwrap_or_else(|| panic!("{resp}"))
                .iter()
                .map(|h| h["key"].as_str().unwrap().parse().unwrap())
                .collect();
            let want = oracle_where(&rows, &v, 10, |r| keep(r.0));
            assert_eq!(got, want, "query {} with filter {filter}", q["qid"]);
        }
    }
    eprintln!("geo-filtered graph mode (5,000 km): mean recall@10 {wide_recall:.4}");
    assert!(
        wide_recall >= 0.9,
        "geo-filtered graph mode recall@10 {wide_recall}"
    );
    let bad: Value = ix.search(&json!({"index": "places", "geo": {"nearest": {"lat": 0.0, "lon": 0.0, "k": 5}}, "vector": {"values": embedding(&queries[0]), "k": 5}})).await?.1;
    assert_eq!(bad["error"]["field"], "geo.nearest", "{bad}");

    // 2. Changes: new embeddings, region moves, deletes, rows without a vector. Answered from
    //    the fresh layer (60 s commit interval), then after kill -9 from the replayed stream.
    client
        .batch_execute(
            "UPDATE places p SET embedding = q.embedding FROM places q WHERE p.id % 53 = 0 AND q.id = (SELECT min(id) FROM places);
             UPDATE places SET region = CASE region WHEN 'asia' THEN 'europe' ELSE 'asia' END WHERE id % 47 = 0;
             UPDATE places SET embedding = NULL WHERE id % 43 = 0;
             DELETE FROM places WHERE id % 41 = 0;",
        )
        .await?;
    ix.wait_applied(&e2e::current_lsn(&client).await?).await?;
    let rows = table(&client).await?;
    let current: std::collections::HashMap<i64, &Vec<f32>> =
        rows.iter().map(|r| (r.0, &r.2)).collect();
    for round in ["fresh", "after kill -9"] {
        for q in &sample {
            let v = embedding(q);
            // Graph mode never returns a deleted or replaced version: each hit is a current row
            // and scores exactly its current vector.
            for (id, score) in knn(&ix, &v, 10, &[], false).await? {
                let row = current
                    .get(&id)
                    .unwrap_or_else(|| panic!("{round}: hit {id} is not in the table"));
                assert!(
                    (score - cosine(&v, row)).abs() < 1e-9,
                    "{round}: hit {id} scored a stale vector"
                );
            }
            let got: Vec<i64> = knn(&ix, &v, 10, &[], true)
                .await?
                .iter()
                .map(|h| h.0)
                .collect();
            assert_eq!(
                got,
                oracle(&rows, &v, 10, None),
                "{round}: query {}",
                q["qid"]
            );
            let region = q["filter_region"].as_str().unwrap();
            let got: Vec<i64> = knn(&ix, &v, 10, &[region], true)
                .await?
                .iter()
                .map(|h| h.0)
                .collect();
            assert_eq!(
                got,
                oracle(&rows, &v, 10, Some(region)),
                "{round}: query {} in {region}",
                q["qid"]
            );
        }
        ix.kill9();
        ix = shard.start().await?;
        ix.wait_applied(&e2e::current_lsn(&client).await?).await?;
        // The graph was reloaded from its dump, not rebuilt: right after the restart it
        // already holds (nearly) every vector (a rebuild inserts ~3k vectors/s).
        let status = ix.status().await?;
        let points: u64 = status["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["graph_points"].as_u64().unwrap_or(0))
            .sum();
        assert!(
            points >= 25_000,
            "graph points after restart: {points}: {status}"
        );
    }
    Ok(())
}

/// Mean recall@10 of graph search against exact search over every fourth query.
async fn graph_recall(ix: &Indexer, queries: &[Value]) -> Result<f64> {
    let mut sum = 0.0;
    for q in queries.iter().step_by(4) {
        let v = embedding(q);
        let want: Vec<i64> = knn(ix, &v, 10, &[], true)
            .await?
            .iter()
            .map(|h| h.0)
            .collect();
        let got: Vec<i64> = knn(ix, &v, 10, &[], false)
            .await?
            .iter()
            .map(|h| h.0)
            .collect();
        sum += want.iter().filter(|id| got.contains(id)).count() as f64 / 10.0;
    }
    Ok(sum / queries.iter().step_by(4).count() as f64)
}

/// Graph search (not exact) for each row's vector finds that row first.
async fn graph_finds(ix: &Indexer, rows: &[(i64, Vec<f32>)]) -> Result<()> {
    for (id, v) in rows {
        let got = knn(ix, v, 1, &[], false).await?;
        assert_eq!(
            got.first().map(|h| h.0),
            Some(*id),
            "graph search for row {id}'s vector"
        );
    }
    Ok(())
}

/// Every partition's graph status field `field`, once all partitions report it.
async fn graph_field(ix: &Indexer, field: &str) -> Result<Vec<Value>> {
    let s = ix.status().await?;
    Ok(s["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[field].clone())
        .collect())
}

/// Waits until every vector is in a graph and every graph's insert structure is in memory
/// (`loaded`) or dropped (`!loaded`).
async fn wait_graphs(ix: &Indexer, loaded: bool) -> Result<()> {
    e2e::eventually(
        "graphs complete with their insert structure as wanted",
        std::time::Duration::from_secs(240),
        || async {
            let pending = graph_field(ix, "vectors_pending_graph").await?;
            let state = graph_field(ix, "graph_insert_structure_loaded").await?;
            let done = pending.iter().all(|p| p.as_u64() == Some(0))
                && state.iter().all(|s| s.as_bool() == Some(loaded));
            Ok(done.then_some(()))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_graph_drops_its_insert_structure_and_loads_it_back_for_new_vectors() -> Result<()>
{
    let Some(_) = dev_data::require() else {
        return Ok(());
    };
    let pg = PgServer::shared();
    let db = pg.fresh_db().await?;
    let client = pg.connect(&db).await?;
    dev_data::load(&client, true).await?;
    let shard = DevShard::new(
        &pg.url(&db),
        "vecidle",
        "writer_memory_mb = 16\ncommit_interval_ms = 200\ngraph_idle_unload_secs = 1",
        "vector = { column = \"embedding\", dimension = 384, metric = \"cosine\" }",
    )?;
    let mut ix = shard.start().await?;
    let pid = ix.pid().unwrap();
    // The snapshot's graphs are built, dumped once idle, and their insert structures dropped.
    wait_graphs(&ix, false).await?;
    let queries = dev_data::queries("queries_vector.jsonl")?;
    let before = graph_recall(&ix, &queries).await?;
    assert!(before >= 0.95, "recall@10 from the copies alone: {before}");
    let anon_idle = e2e::status_mb(pid, "RssAnon:")?;

    // New vectors: each partition's next insert loads its structure back from the dump.
    // Rows whose embedding becomes another row's negation are found by graph search.
    client
        .batch_execute(
            "UPDATE places p SET embedding = (SELECT array_agg(-x ORDER BY i) FROM unnest(q.embedding) WITH ORDINALITY u(x, i))
             FROM places q WHERE p.id % 97 = 0 AND q.id = p.id + 1 AND q.embedding IS NOT NULL",
        )
        .await?;
    let lsn = e2e::current_lsn(&client).await?;
    ix.wait_applied(&lsn).await?;
    e2e::eventually(
        "the new vectors inserted",
        std::time::Duration::from_secs(120),
        || async {
            let pending = graph_field(&ix, "vectors_pending_graph").await?;
            let state = graph_field(&ix, "graph_insert_structure_loaded").await?;
            let done = pending.iter().all(|p| p.as_u64() == Some(0))
                && state.iter().any(|s| s.as_bool() == Some(true));
            Ok(done.then_some(()))
        },
    )
    .await?;
    let anon_loaded = e2e::status_mb(pid, "RssAnon:")?;
    let moved: Vec<(i64, Vec<f32>)> = client
        .query("SELECT id, embedding FROM places WHERE id % 97 = 0 AND embedding IS NOT NULL ORDER BY id LIMIT 20", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(moved.len() >= 10);
    graph_finds(&ix, &moved).await?;
    // Idle again: dumped with the new points and dropped; the answers stay.
    wait_graphs(&ix, false).await?;
    let anon_dropped = e2e::status_mb(pid, "RssAnon:")?;
    eprintln!(
        "indexer anonymous memory: {anon_idle:.0} MB idle, {anon_loaded:.0} MB with the insert structures loaded, {anon_dropped:.0} MB dropped again"
    );
    // hnsw_rs's structures of 30k 384-d points take ~100 MB; the allocator must give their
    // pages back too (they were allocated on the insert threads: `indexer::memory`).
    assert!(
        anon_loaded - anon_dropped >= 40.0,
        "dropping 30k points' insert structures frees memory: {anon_loaded:.0} -> {anon_dropped:.0} MB"
    );
    assert!(
        anon_dropped <= anon_idle + 50.0,
        "memory returns near where it was before the new vectors: {anon_idle:.0} -> {anon_dropped:.0} MB"
    );
    graph_finds(&ix, &moved).await?;
    let after = graph_recall(&ix, &queries).await?;
    assert!(
        after >= 0.95,
        "recall@10 after the reload and drop: {after}"
    );
    // A restart reads the dump written before the drop: the new points are in it.
    ix.kill9();
    ix = shard.start().await?;
    let points: u64 = graph_field(&ix, "graph_points")
        .await?
        .iter()
        .map(|p| p.as_u64().unwrap_or(0))
        .sum();
    assert!(points >= 30_000, "graph points after restart: {points}");
    graph_finds(&ix, &moved).await?;
    Ok(())
}
