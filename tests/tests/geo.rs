//! Geo answers on the real dev data are exact: against the query file's expected answers,
//! then against a brute-force oracle computed from the table after a stream of updates
//! (fresh layer only, then committed, then after kill -9).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use e2e::{dev_data, Indexer, PgServer};
use engine::geo::haversine_m;
use serde_json::{json, Value};

use crate::common::uniq_name;

async fn search(ix: &Indexer, body: Value) -> Result<Value> {
    let v = ix.search_ok(&body).await?;
    Ok(v)
}

fn hits(v: &Value) -> Vec<(i64, f64)> {
    v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["key"].as_str().unwrap().parse().unwrap(),
                h["distance_m"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// (id → (lat, lon)) of the table, the oracle's input.
async fn table(client: &tokio_postgres::Client) -> Result<BTreeMap<i64, (f64, f64)>> {
    Ok(client
        .query("SELECT id, lat, lon FROM places", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect())
}

/// Every query of the file, radius and nearest-10, against a brute-force oracle.
async fn assert_oracle(
    ix: &Indexer,
    client: &tokio_postgres::Client,
    queries: &[Value],
) -> Result<()> {
    let rows = table(client).await?;
    for q in queries {
        let (lat, lon, r) = (
            q["lat"].as_f64().unwrap(),
            q["lon"].as_f64().unwrap(),
            q["radius_km"].as_f64().unwrap() * 1000.0,
        );
        let got = hits(&search(ix, json!({"index": "places", "geo": {"within": {"lat": lat, "lon": lon, "radius_m": r}}, "limit": 10000})).await?);
        let want: BTreeSet<i64> = rows
            .iter()
            .filter(|(_, p)| haversine_m(lat, lon, p.0, p.1) <= r)
            .map(|(k, _)| *k)
            .collect();
        let got_ids: BTreeSet<i64> = got.iter().map(|h| h.0).collect();
        assert_eq!(got_ids, want, "radius query {}", q["qid"]);

        let got = hits(&search(ix, json!({"index": "places", "geo": {"nearest": {"lat": lat, "lon": lon, "k": 10}}, "limit": 10})).await?);
        let mut all: Vec<(f64, i64)> = rows
            .iter()
            .map(|(k, p)| (haversine_m(lat, lon, p.0, p.1), *k))
            .collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let want: Vec<f64> = all.iter().take(10).map(|x| x.0).collect();
        let got_d: Vec<f64> = got.iter().map(|h| h.1).collect();
        assert_eq!(got_d.len(), want.len(), "nearest query {}", q["qid"]);
        for (g, w) in got_d.iter().zip(&want) {
            assert!(
                (g - w).abs() < 1e-6,
                "nearest query {}: {got_d:?} vs {want:?}",
                q["qid"]
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geo_is_exact_on_dev_data_through_updates_restarts_and_kill9() -> Result<()> {
    let Some(_) = dev_data::require() else {
        return Ok(());
    };
    let pg = PgServer::shared();
    let db = pg.fresh_db().await?;
    let client = pg.connect(&db).await?;
    let n = dev_data::load(&client, false).await?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("geo.toml");
    let slot = uniq_name("geo");
    let data = dir.path().join("data");
    let write_config = |commit_ms: u64| {
        dev_data::write_config(
            &config,
            &pg.url(&db),
            &slot,
            &data,
            &format!("writer_memory_mb = 16\ncommit_interval_ms = {commit_ms}"),
            "text_fields = [\"name\"]\ngeo = { lat = \"lat\", lon = \"lon\" }",
        )
    };
    write_config(60_000)?;
    let mut ix = Indexer::start(&config, &data).await?;
    ix.wait_ready().await?;

    // 1. The query file's exact answers.
    let queries = dev_data::queries("queries_geo.jsonl")?;
    for q in &queries {
        let (lat, lon, r) = (
            q["lat"].as_f64().unwrap(),
            q["lon"].as_f64().unwrap(),
            q["radius_km"].as_f64().unwrap() * 1000.0,
        );
        let got = hits(&search(&ix, json!({"index": "places", "geo": {"within": {"lat": lat, "lon": lon, "radius_m": r}}, "limit": 10000})).await?);
        let boundary: BTreeSet<i64> = q["boundary_ids"]
            .as_array()
            .context("boundary_ids")?
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        let expected: BTreeMap<i64, f64> = q["expected_ids"]
            .as_array()
            .unwrap()
            .iter()
            .zip(q["distances_km"].as_array().unwrap())
            .map(|(id, d)| (id.as_i64().unwrap(), d.as_f64().unwrap() * 1000.0))
            .collect();
        let got_ids: BTreeSet<i64> = got
            .iter()
            .map(|h| h.0)
            .filter(|id| !boundary.contains(id))
            .collect();
        let want_ids: BTreeSet<i64> = expected
            .keys()
            .copied()
            .filter(|id| !boundary.contains(id))
            .collect();
        assert_eq!(got_ids, want_ids, "query {} ({})", q["qid"], q["kind"]);
        for (id, d) in &got {
            if let Some(want) = expected.get(id) {
                assert!(
                    (d - want).abs() <= 1.0,
                    "query {} id {id}: {d} m vs {want} m",
                    q["qid"]
                );
            }
        }
        // Sorted by distance.
        assert!(
            got.windows(2).all(|w| w[0].1 <= w[1].1),
            "query {} not sorted",
            q["qid"]
        );
    }

    // 2. A stream of changes: region moves, new coordinates, deletes, inserts. With a 60 s
    //    commit interval they are answered from the fresh layer.
    client
        .batch_execute(
            "UPDATE places SET region = CASE region WHEN 'europe' THEN 'asia' ELSE 'europe' END WHERE id % 97 = 0;
             UPDATE places SET lat = -lat, lon = CASE WHEN lon > 0 THEN lon - 180 ELSE lon + 180 END WHERE id % 89 = 0;
             DELETE FROM places WHERE id % 83 = 0;
             INSERT INTO places (id, region, name, lat, lon) SELECT 900000000 + g, 'oceania', 'new ' || g, 89.9 - g * 0.001, 179.99 - g * 0.01 FROM generate_series(1, 100) g;",
        )
        .await?;
    ix.wait_applied(&e2e::current_lsn(&client).await?).await?;
    assert_oracle(&ix, &client, &queries).await?;

    // 3. Committed (clean stop commits), reopened: the R-tree is rebuilt from the partitions.
    assert!(ix.stop()?.success());
    write_config(50)?;
    let mut ix = Indexer::start(&config, &data).await?;
    ix.wait_ready().await?;
    assert_oracle(&ix, &client, &queries).await?;

    // 4. More changes, then kill -9 and restart: the same answers.
    client
        .batch_execute("UPDATE places SET lat = lat / 2 WHERE id % 71 = 0; DELETE FROM places WHERE id % 67 = 0;")
        .await?;
    ix.wait_applied(&e2e::current_lsn(&client).await?).await?;
    assert_oracle(&ix, &client, &queries[..50]).await?;
    ix.kill9();
    let mut ix = Indexer::start(&config, &data).await?;
    ix.wait_ready().await?;
    ix.wait_applied(&e2e::current_lsn(&client).await?).await?;
    assert_oracle(&ix, &client, &queries).await?;
    assert!(n >= 30_000);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_geo_requests_name_the_field() -> Result<()> {
    let f = crate::common::Fixture::new().await?;
    f.insert_range(1, 20).await?;
    let config = f.config("", "")?;
    let mut ix = Indexer::start(&config, &f.data_dir()).await?;
    ix.wait_ready().await?;
    let http = reqwest::Client::new();
    let url = format!("{}/internal/search", ix.url);
    for (body, status, field) in [
        (
            json!({"index": "places", "geo": {"within": {"lat": 200.0, "lon": 0.0, "radius_m": 1.0}}}),
            422,
            "geo.within.lat",
        ),
        (
            json!({"index": "places", "geo": {"within": {"lat": 0.0, "lon": 0.0, "radius_m": -1.0}}}),
            422,
            "geo.within.radius_m",
        ),
        (
            json!({"index": "places", "geo": {"nearest": {"lat": 0.0, "lon": 0.0, "k": 0}}}),
            422,
            "geo.nearest.k",
        ),
        (
            json!({"index": "places", "geo": {"bbox": {"south": 10.0, "west": 0.0, "north": 0.0, "east": 1.0}}}),
            422,
            "geo.bbox.south",
        ),
        (
            json!({"index": "places", "geo": {"within": {"lat": 0.0, "lon": 0.0, "radius_m": 1.0}}, "limit": 0}),
            422,
            "limit",
        ),
        (
            json!({"index": "nope", "geo": {"within": {"lat": 0.0, "lon": 0.0, "radius_m": 1.0}}}),
            404,
            "index",
        ),
        // Malformed bodies name the field by its JSON path: the object missing a member,
        // or the member of the wrong type.
        (
            json!({"index": "places", "geo": {"within": {"lat": 0.0, "lon": 0.0}}}),
            400,
            "geo.within",
        ),
        (json!({"index": "places", "sort": "x"}), 400, "sort"),
    ] {
        let resp = http.post(&url).json(&body).send().await?;
        assert_eq!(resp.status().as_u16(), status, "{body}");
        let v: Value = resp.json().await?;
        assert_eq!(v["error"]["field"], field, "{body} -> {v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    // The message names the missing member.
    let v: Value = http
        .post(&url)
        .json(&json!({"index": "places", "geo": {"within": {"lat": 0.0, "lon": 0.0}}}))
        .send()
        .await?
        .json()
        .await?;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("radius_m"),
        "{v}"
    );
    Ok(())
}
