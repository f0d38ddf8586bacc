//! The public API over several shards and against its own contract: `/openapi.json` holds
//! under schemathesis; two shards (europe | asia + africa) answer like one indexer over every
//! region (nearest, exact vector, text sets); hybrid answers are the RRF of the API's own text
//! and vector answers, fused by the shard or, across shards, by query-api; cursors page
//! exactly; unknown regions are named.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use e2e::{Indexer, QueryApi};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::Fixture;

const ADMIN: &str = "admin-key-0123456789";

use e2e::free_port;

/// A query-api config over `shards` (url, regions), one admin key, no practical rate limit.
fn api_config(f: &Fixture, shards: &[(&str, &[&str])]) -> Result<PathBuf> {
    let mut text = String::new();
    for (url, regions) in shards {
        text += &format!("[[shard]]\nurl = \"{url}\"\nregions = {regions:?}\n");
    }
    text += &format!(
        "[auth]\nkeys = [{{ key = \"{ADMIN}\", scope = \"admin\" }}]\n\
         [limits]\nrate_per_sec = 100000.0\nburst = 100000.0\n"
    );
    let path = f
        .dir
        .path()
        .join(format!("query-api-{}.toml", free_port()?));
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Starts an indexer on its own slot and data dir, owning `regions` (all when empty).
async fn shard(f: &Fixture, name: &str, regions: &[&str]) -> Result<(Indexer, String)> {
    let listen = format!("127.0.0.1:{}", free_port()?);
    let config = f.config_on(
        &format!("{}_{name}", f.slot),
        &f.dir.path().join(format!("data_{name}")),
        &format!("regions = {regions:?}"),
        "",
    )?;
    let mut ix =
        Indexer::start_on(&config, &f.dir.path().join(format!("data_{name}")), &listen).await?;
    ix.wait_ready().await?;
    Ok((ix, format!("http://{listen}")))
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn search(&self, body: &Value) -> Result<(StatusCode, Value)> {
        let resp = self
            .http
            .post(format!("{}/v1/indexes/places/search", self.base))
            .bearer_auth(ADMIN)
            .json(body)
            .send()
            .await?;
        let status = resp.status();
        Ok((status, resp.json().await?))
    }

    /// A search that must succeed.
    async fn ok(&self, body: Value) -> Result<Value> {
        let (st, v) = self.search(&body).await?;
        ensure!(st == StatusCode::OK, "{body}: {st} {v}");
        ensure!(v["partial"] == false, "{body}: partial {v}");
        Ok(v)
    }

    async fn get(&self, path_and_query: &str) -> Result<(StatusCode, Value)> {
        let resp = self
            .http
            .get(format!("{}{path_and_query}", self.base))
            .bearer_auth(ADMIN)
            .send()
            .await?;
        let status = resp.status();
        Ok((status, resp.json().await?))
    }
}

fn hits(v: &Value) -> &[Value] {
    v["hits"].as_array().map(Vec::as_slice).unwrap_or_default()
}

fn keys(v: &Value) -> Vec<String> {
    hits(v)
        .iter()
        .map(|h| h["key"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// RRF of two ranked key lists, as the API documents it: Σ weight / (k + rank), ties by key.
fn rrf(
    text: &[String],
    vector: &[String],
    k: f64,
    weights: (f64, f64),
    limit: usize,
) -> Vec<(String, f64)> {
    let mut scores: std::collections::BTreeMap<String, f64> = Default::default();
    for (list, weight) in [(text, weights.0), (vector, weights.1)] {
        for (i, key) in list.iter().enumerate() {
            *scores.entry(key.clone()).or_default() += weight / (k + i as f64 + 1.0);
        }
    }
    let mut out: Vec<(String, f64)> = scores.into_iter().collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out.truncate(limit);
    out
}

/// The hybrid answer equals the RRF of the same API's text-only and vector-only answers, with
/// equal and with unequal weights; every hit's ranks and branch scores point back into them.
async fn assert_hybrid_is_rrf(api: &Api, regions: &[&str]) -> Result<()> {
    assert_hybrid_is_weighted_rrf(api, regions, (1.0, 1.0)).await?;
    assert_hybrid_is_weighted_rrf(api, regions, (2.0, 0.5)).await
}

async fn assert_hybrid_is_weighted_rrf(
    api: &Api,
    regions: &[&str],
    (wt, wv): (f64, f64),
) -> Result<()> {
    let window = 40;
    let q = json!({"q": "place", "operator": "or"});
    let vector = json!({"values": [1.0, 3.0, 0.5, -1.0], "k": window, "exact": true});
    let text_only = api
        .ok(json!({"text": q, "regions": regions, "limit": window}))
        .await?;
    let vector_only = api
        .ok(json!({"vector": vector, "regions": regions, "limit": window}))
        .await?;
    ensure!(keys(&text_only).len() == window && keys(&vector_only).len() == window);
    let fused = api
        .ok(
            json!({"text": q, "vector": vector, "regions": regions, "limit": 10,
                   "hybrid": {"k": 60.0, "window": window, "weights": {"text": wt, "vector": wv}}}),
        )
        .await?;
    let want = rrf(&keys(&text_only), &keys(&vector_only), 60.0, (wt, wv), 10);
    let got: Vec<(String, f64)> = hits(&fused)
        .iter()
        .map(|h| {
            (
                h["key"].as_str().unwrap_or_default().to_owned(),
                h["score"].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect();
    ensure!(got.len() == want.len(), "{regions:?}: {got:?} vs {want:?}");
    for ((gk, gs), (wk, ws)) in got.iter().zip(&want) {
        ensure!(
            gk == wk && (gs - ws).abs() < 1e-9,
            "{regions:?}: hybrid {got:?}\n  != RRF of the API's own branches {want:?}\n\
             hybrid hits {}\ntext {:?}\nvector {:?}",
            Value::Array(
                hits(&fused)
                    .iter()
                    .map(|h| json!([h["key"], h["ranks"]]))
                    .collect()
            ),
            keys(&text_only),
            keys(&vector_only)
        );
    }
    // Each hit says where it ranked in each branch, with that branch's score: the branch
    // answers' own, or absent when the hit is not in that branch's window.
    for h in hits(&fused) {
        let mut found = false;
        for (branch, answer) in [("text", &text_only), ("vector", &vector_only)] {
            let listed = hits(answer).iter().position(|b| b["key"] == h["key"]);
            let rank = h["ranks"][branch].as_u64();
            ensure!(
                rank == listed.map(|i| i as u64 + 1),
                "{regions:?} {branch}: rank {rank:?}, listed at {listed:?}: {h}"
            );
            if let Some(i) = listed {
                found = true;
                let (got, want) = (
                    h["branch_scores"][branch].as_f64(),
                    hits(answer)[i]["score"].as_f64(),
                );
                ensure!(
                    got.zip(want)
                        .is_some_and(|(g, w)| (g - w).abs() <= 1e-6 * w.abs().max(1.0)),
                    "{regions:?} {branch}: branch score {got:?} != {want:?}: {h}"
                );
                // The same stored fields as the branch's hit, and the text branch's snippets.
                let theirs = &hits(answer)[i];
                ensure!(
                    h["fields"] == theirs["fields"] && !h["fields"].is_null(),
                    "{regions:?} {branch}: fields {} != {}",
                    h["fields"],
                    theirs["fields"]
                );
                if branch == "text" {
                    ensure!(
                        h["highlights"] == theirs["highlights"] && h["highlights"].is_object(),
                        "{regions:?}: highlights {} != the text branch's {}",
                        h["highlights"],
                        theirs["highlights"]
                    );
                }
            } else {
                ensure!(h["branch_scores"][branch].is_null(), "{h}");
            }
        }
        ensure!(found, "a fused hit from neither branch: {h}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_answer_like_one_and_fuse_and_page_exactly() -> Result<()> {
    let f = Fixture::new().await?;
    f.insert_range(1, 300).await?;
    let (mut all, all_url) = shard(&f, "all", &[]).await?;
    let (mut eu, eu_url) = shard(&f, "eu", &["europe"]).await?;
    let (mut rest, rest_url) = shard(&f, "rest", &["asia", "africa"]).await?;
    let one = QueryApi::start(&api_config(&f, &[(&all_url, &[])])?, f.dir.path()).await?;
    let two = QueryApi::start(
        &api_config(
            &f,
            &[(&eu_url, &["europe"]), (&rest_url, &["asia", "africa"])],
        )?,
        f.dir.path(),
    )
    .await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let one = Api {
        http: http.clone(),
        base: one.url.clone(),
    };
    let two = Api {
        http,
        base: two.url.clone(),
    };

    // Nearest, exact vector and text sets: two shards merged = one indexer.
    for body in [
        json!({"geo": {"nearest": {"lat": 10.0, "lon": 20.0, "k": 25}}, "limit": 25}),
        json!({"vector": {"values": [1.0, 2.0, 0.5, -1.0], "k": 25, "exact": true}, "limit": 25}),
    ] {
        let (a, b) = (one.ok(body.clone()).await?, two.ok(body.clone()).await?);
        assert_eq!(keys(&a), keys(&b), "{body}");
        assert_eq!(keys(&a).len(), 25, "{body}");
        assert_eq!(b["freshness"]["shards"].as_array().unwrap().len(), 2, "{b}");
    }
    let body = json!({"q": "place", "limit": 1000});
    let (a, b) = (one.ok(body.clone()).await?, two.ok(body.clone()).await?);
    let (mut ka, mut kb) = (keys(&a), keys(&b));
    ka.sort();
    kb.sort();
    assert_eq!((ka.len(), a["total"].as_u64()), (300, Some(300)));
    assert_eq!(ka, kb);
    assert_eq!(b["total"], 300);

    // Hybrid: the shard fuses (one), query-api fuses across shards (two); both are the RRF of
    // the API's own branch answers.
    assert_hybrid_is_rrf(&one, &[]).await?;
    assert_hybrid_is_rrf(&two, &[]).await?;
    assert_hybrid_is_rrf(&two, &["asia", "europe"]).await?;

    // Cursors: three pages of 7 are the first 21, in order, across both shards.
    for api in [&one, &two] {
        let base = json!({"geo": {"nearest": {"lat": -5.0, "lon": 5.0, "k": 21}}});
        let mut whole = base.clone();
        whole["limit"] = json!(21);
        let whole = keys(&api.ok(whole).await?);
        let mut paged = Vec::new();
        let mut cursor: Option<String> = None;
        for page in 0..3 {
            let mut body = base.clone();
            body["limit"] = json!(7);
            if let Some(c) = &cursor {
                body["cursor"] = json!(c);
            }
            let v = api.ok(body).await?;
            paged.extend(keys(&v));
            cursor = v["next_cursor"].as_str().map(str::to_owned);
            assert_eq!(cursor.is_some(), page < 2, "page {page}: {v}");
        }
        assert_eq!(paged, whole);
        // A text search pages to its total and stops.
        let mut seen = Vec::new();
        let mut body = json!({"q": "place", "regions": ["africa"], "limit": 40});
        loop {
            let v = api.ok(body.clone()).await?;
            seen.extend(keys(&v));
            match v["next_cursor"].as_str() {
                Some(c) => body["cursor"] = json!(c),
                None => break,
            }
        }
        let n = seen.len();
        seen.sort();
        seen.dedup();
        assert_eq!((n, seen.len()), (100, 100), "africa has 100 places");
    }
    let v = two.ok(json!({"q": "place", "limit": 5})).await?;
    let c = v["next_cursor"].as_str().context("a next cursor")?;
    for (body, status, field) in [
        (json!({"q": "place", "cursor": "garbage!"}), 400, "cursor"),
        (json!({"q": "other", "cursor": c}), 422, "cursor"),
        (
            json!({"q": "place", "cursor": c, "offset": 5}),
            422,
            "offset",
        ),
        (
            json!({"q": "place", "regions": ["atlantis"]}),
            422,
            "regions",
        ),
    ] {
        for api in [&one, &two] {
            let (st, v) = api.search(&body).await?;
            assert_eq!(st.as_u16(), status, "{body}: {v}");
            assert_eq!(v["error"]["field"], field, "{body}: {v}");
        }
    }
    let (st, v) = one
        .search(&json!({"q": "place", "regions": ["atlantis"]}))
        .await?;
    assert!(
        st == 422
            && v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("africa, asia, europe"),
        "{v}"
    );

    // The GET form: sort, facets, offset, highlight off.
    let (st, v) = two
        .get("/v1/indexes/places/search?q=place&sort=-population&facets=population&limit=3&offset=1&highlight=false")
        .await?;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(keys(&v), ["299", "298", "297"], "{v}");
    assert!(hits(&v)[0].get("highlights").is_none(), "{v}");
    assert_eq!(
        v["facets"]["population"].as_array().map(Vec::len),
        Some(10),
        "{v}"
    );
    // The top-level highlight switch (for text.highlight).
    let plain = two
        .ok(json!({"q": "place", "highlight": false, "limit": 1}))
        .await?;
    assert!(hits(&plain)[0].get("highlights").is_none(), "{plain}");
    let marked = two.ok(json!({"q": "place", "limit": 1})).await?;
    assert!(hits(&marked)[0]["highlights"].is_object(), "{marked}");

    for ix in [&mut all, &mut eu, &mut rest] {
        ix.stop()?;
    }
    Ok(())
}

/// The schemathesis binary: `SCHEMATHESIS`, or the venv `scripts/ensure-schemathesis` makes.
fn schemathesis() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("SCHEMATHESIS") {
        return Ok(PathBuf::from(p));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let st = root.join("target/tools/schemathesis/bin/st");
    ensure!(
        st.exists(),
        "{} is missing: run scripts/ensure-schemathesis (scripts/test does)",
        st.display()
    );
    Ok(st)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_holds_under_schemathesis() -> Result<()> {
    let st = schemathesis()?;
    let f = Fixture::new().await?;
    f.insert_range(1, 300).await?;
    let (mut ix, url) = shard(&f, "st", &[]).await?;
    let api = QueryApi::start(&api_config(&f, &[(&url, &[])])?, f.dir.path()).await?;

    // The document names every route.
    let doc: Value = reqwest::get(format!("{}/openapi.json", api.url))
        .await?
        .json()
        .await?;
    for path in [
        "/v1/indexes/{index}/search",
        "/v1/indexes/{index}/documents/{id}",
        "/v1/indexes/{index}/changes",
        "/v1/indexes",
        "/v1/status",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from openapi.json"
        );
    }

    // Every documented operation but the endless change stream, fuzzed: no 5xx, and every
    // answer's status, content type and body as documented.
    std::fs::write(
        f.dir.path().join("schemathesis.toml"),
        "[parameters]\n\"index\" = \"places\"\n\"id\" = \"42\"\n",
    )?;
    let out = tokio::process::Command::new(&st)
        .current_dir(f.dir.path())
        .args([
            "run",
            &format!("{}/openapi.json", api.url),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--exclude-path",
            "/v1/indexes/{index}/changes",
            "--header",
            &format!("Authorization: Bearer {ADMIN}"),
            "--max-examples",
            "150",
            "--workers",
            "2",
            "--request-timeout",
            "20",
            "--seed",
            "1",
        ])
        .env("NO_COLOR", "1")
        .output()
        .await
        .context("running schemathesis")?;
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{report}\nquery-api log:\n{}",
        api.log_text()
    );
    // It did test the operations (not a vacuous pass).
    assert!(report.contains("passed"), "{report}");
    ix.stop()?;
    Ok(())
}
