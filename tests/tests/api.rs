//! The public API end to end: real Postgres, the indexer and query-api as processes. A write
//! made with SQL is in the first answer that asks for its LSN; updates and deletes likewise;
//! auth, limits and bad input get JSON errors naming the field; a dead shard gives 503 and
//! `/readyz` says so, and a restarted one restores answers.

use std::time::Duration;

use anyhow::Result;
use e2e::{Indexer, QueryApi};
use reqwest::StatusCode;
use serde_json::{json, Value};
use wire::Lsn;

use crate::common::Fixture;

pub(crate) const READ: &str = "read-key-0123456789";
pub(crate) const ADMIN: &str = "admin-key-0123456789";

use e2e::free_port;

pub(crate) fn api_config(f: &Fixture, shard: &str, extra: &str) -> Result<std::path::PathBuf> {
    let path = f
        .dir
        .path()
        .join(format!("query-api-{}.toml", free_port()?));
    std::fs::write(
        &path,
        format!(
            "[[shard]]\nurl = \"{shard}\"\n\
             [auth]\nkeys = [{{ key = \"{READ}\", scope = \"read\" }}, {{ key = \"{ADMIN}\", scope = \"admin\" }}]\n\
             {extra}\n"
        ),
    )?;
    Ok(path)
}

pub(crate) struct Client {
    pub http: reqwest::Client,
    pub base: String,
}

impl Client {
    /// A client of the API at `base`, with a generous timeout.
    pub fn of(base: &str) -> Client {
        Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("an HTTP client"),
            base: base.to_owned(),
        }
    }

    pub async fn post(
        &self,
        path: &str,
        key: Option<&str>,
        body: &Value,
    ) -> Result<(StatusCode, Value)> {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await?;
        let status = resp.status();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    pub async fn get(&self, path: &str, key: Option<&str>) -> Result<(StatusCode, Value)> {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    pub async fn search(&self, body: Value) -> Result<(StatusCode, Value)> {
        self.post("/v1/indexes/places/search", Some(READ), &body)
            .await
    }
}

use e2e::hit_keys as keys;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_api_reads_its_writes_and_guards_its_doors() -> Result<()> {
    let f = Fixture::new().await?;
    f.insert_range(1, 300).await?;
    let config = f.config("", "commit_interval_ms = 60000")?;
    let listen = format!("127.0.0.1:{}", free_port()?);
    let mut ix = Indexer::start_on(&config, &f.data_dir(), &listen).await?;
    ix.wait_ready().await?;
    let shard = format!("http://{listen}");
    let api = QueryApi::start(
        &api_config(&f, &shard, "[limits]\nmax_body_bytes = 65536")?,
        f.dir.path(),
    )
    .await?;
    let c = Client {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?,
        base: api.url.clone(),
    };
    let (st, ready) = c.get("/readyz", None).await?;
    assert_eq!(st, StatusCode::OK, "{ready}");

    // 1. Read your writes: the insert is in the first answer that names its LSN.
    f.client
        .batch_execute("INSERT INTO places VALUES (9001, 'europe', 'Quuxville', 'a zorblatt town', 5, 10, 10, NULL)")
        .await?;
    let lsn = f.lsn().await?;
    let (st, v) = c
        .search(json!({"text": {"q": "zorblatt"}, "consistency": {"min_lsn": lsn, "wait_timeout_ms": 10000}}))
        .await?;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(keys(&v), ["9001"], "{v}");
    // Highlighted, though only the fresh layer has the word yet.
    assert!(
        v["hits"][0]["highlights"]["body"]
            .as_str()
            .is_some_and(|h| h.contains("<b>zorblatt</b>")),
        "{v}"
    );
    let applied = v["freshness"]["min_applied_lsn"].as_str().unwrap();
    assert!(
        applied.parse::<Lsn>().ok() >= lsn.parse::<Lsn>().ok(),
        "{applied} < {lsn}"
    );
    assert_eq!(v["partial"], false);
    assert!(v["freshness"]["shards"][0]["lag_ms"].is_u64(), "{v}");
    // Update and delete, read the same way.
    f.client
        .batch_execute("UPDATE places SET body = 'a glorp town' WHERE id = 9001")
        .await?;
    let lsn = f.lsn().await?;
    let (_, v) = c
        .search(json!({"text": {"q": "glorp"}, "consistency": {"min_lsn": lsn}}))
        .await?;
    assert_eq!(keys(&v), ["9001"], "{v}");
    let (_, v) = c
        .search(json!({"text": {"q": "zorblatt"}, "consistency": {"min_lsn": lsn}}))
        .await?;
    assert!(keys(&v).is_empty(), "{v}");
    let (st, doc) = c
        .get("/v1/indexes/places/documents/9001", Some(READ))
        .await?;
    assert_eq!(st, StatusCode::OK, "{doc}");
    assert_eq!(doc["region"], "europe");
    f.client
        .batch_execute("DELETE FROM places WHERE id = 9001")
        .await?;
    let lsn = f.lsn().await?;
    let (_, v) = c
        .search(json!({"text": {"q": "glorp"}, "consistency": {"min_lsn": lsn}}))
        .await?;
    assert!(keys(&v).is_empty(), "{v}");
    let (st, v) = c
        .get("/v1/indexes/places/documents/9001", Some(READ))
        .await?;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    // Ids and index names are data, never URL text: none reaches another shard route.
    for id in [
        "..%2F..%2Fstatus",
        "..%2F..%2Fstatus%3Fx=1",
        "..%2F..%2Finternal%2Fdump%3Findex=places",
        "a%23b",
    ] {
        let (st, v) = c
            .get(&format!("/v1/indexes/places/documents/{id}"), Some(READ))
            .await?;
        assert_eq!(st, StatusCode::NOT_FOUND, "{id}: {v}");
        assert_eq!(v["error"]["field"], "id", "{id}: {v}");
    }
    let (st, v) = c
        .get("/v1/indexes/..%2Fstatus/documents/1", Some(READ))
        .await?;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["error"]["field"], "index", "{v}");

    // A future LSN: a distinct status and how far each shard got.
    let (st, v) = c
        .search(json!({"text": {"q": "place"}, "consistency": {"min_lsn": "FF/0", "wait_timeout_ms": 200}}))
        .await?;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"]["code"], "min_lsn_not_reached");
    assert!(
        v["freshness"]["shards"][0]["applied_lsn"].is_string(),
        "{v}"
    );

    // Global order and pages across regions, geo through the GET form, facets.
    let (st, v) = c
        .search(json!({"geo": {"within": {"lat": 15.0, "lon": -80.0, "radius_m": 3000000.0}}, "limit": 5}))
        .await?;
    assert_eq!(st, StatusCode::OK, "{v}");
    let d: Vec<f64> = v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["distance_m"].as_f64().unwrap())
        .collect();
    assert!(!d.is_empty() && d.windows(2).all(|w| w[0] <= w[1]), "{d:?}");
    let (st, v) = c
        .get(
            "/v1/indexes/places/search?q=place&region=asia&limit=3",
            Some(READ),
        )
        .await?;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["hits"].as_array().unwrap().len(), 3);
    assert!(v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h["region"] == "asia"));
    let (st, v) = c
        .search(json!({"filter": {"range": {"population": {"lt": 100}}}, "sort": {"field": "population", "order": "desc"}, "limit": 3}))
        .await?;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(keys(&v), ["9", "8", "7"], "{v}");

    // 2. Auth.
    let (st, v) = c
        .post(
            "/v1/indexes/places/search",
            None,
            &json!({"text": {"q": "x"}}),
        )
        .await?;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(v["error"]["code"], "unauthorized");
    let (st, _) = c
        .post(
            "/v1/indexes/places/search",
            Some("wrong-key-0123456789"),
            &json!({"text": {"q": "x"}}),
        )
        .await?;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, v) = c.get("/v1/status", Some(READ)).await?;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    let (st, v) = c.get("/v1/status", Some(ADMIN)).await?;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["shards"][0]["reachable"], true);
    assert!(v["shards"][0]["partitions"].as_array().unwrap().len() >= 3);
    assert_eq!(v["shards"][0]["stream"], "streaming", "{v}");
    for p in v["shards"][0]["partitions"].as_array().unwrap() {
        // The fixture's index has a vector column: the graph's progress is public.
        let (points, pending) = (
            p["graph_points"].as_u64(),
            p["vectors_pending_graph"].as_u64(),
        );
        assert!(points.is_some() && pending.is_some(), "{p}");
        assert!(
            points.unwrap() + pending.unwrap() >= p["documents"].as_u64().unwrap().min(1),
            "{p}"
        );
    }
    // Per index: the partitions summed, the graph's completion, the snapshot.
    let summary = &v["indexes"][0];
    assert_eq!(summary["name"], "places", "{v}");
    let partitions = v["shards"][0]["partitions"].as_array().unwrap();
    let documents: u64 = partitions
        .iter()
        .map(|p| p["documents"].as_u64().unwrap())
        .sum();
    assert_eq!(summary["documents"].as_u64(), Some(documents), "{summary}");
    assert_eq!(summary["snapshot"]["state"], "done", "{summary}");
    assert!(
        summary["applied_lsn"].is_string() && summary["lag_ms"].is_u64(),
        "{summary}"
    );
    assert!(summary["graph"]["complete"].is_boolean(), "{summary}");
    let (st, v) = c.get("/v1/indexes", Some(READ)).await?;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["indexes"][0]["name"], "places");

    // 3. Bad input: a 4xx with a JSON body naming the field.
    for (body, status, field) in [
        (
            json!({"geo": {"within": {"lat": 95.0, "lon": 0.0, "radius_m": 10.0}}}),
            422,
            "geo.within.lat",
        ),
        (
            json!({"geo": {"within": {"lat": 1.0, "lon": 0.0, "radius_m": -1.0}}}),
            422,
            "geo.within.radius_m",
        ),
        (
            json!({"vector": {"values": [1.0, 2.0], "k": 3}}),
            422,
            "vector.values",
        ),
        (json!({"text": {"q": "x"}, "limit": 100000}), 422, "limit"),
        (
            json!({"text": {"q": "x"}, "consistency": {"min_lsn": "nope"}}),
            422,
            "consistency.min_lsn",
        ),
        (json!({"text": {"q": "nope:x"}}), 422, "text.q"),
        (
            json!({"vector": {"values": [1.0, 2.0, 3.0, 4.0], "k": 5000}}),
            422,
            "vector.k",
        ),
        (
            json!({"geo": {"nearest": {"lat": 1.0, "lon": 2.0, "k": 20000}}}),
            422,
            "geo.nearest.k",
        ),
        (
            json!({"filter": {"term": {"population": "many"}}}),
            422,
            "filter.term.population",
        ),
    ] {
        let (st, v) = c.search(body.clone()).await?;
        assert_eq!(st.as_u16(), status, "{body}: {v}");
        assert_eq!(v["error"]["field"], field, "{body}: {v}");
    }
    let (st, v) = c
        .post(
            "/v1/indexes/nope/search",
            Some(READ),
            &json!({"text": {"q": "x"}}),
        )
        .await?;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["error"]["field"], "index");
    let (st, v) = c
        .post(
            "/v1/indexes/places/search",
            Some(READ),
            &json!({"text": {"q": "x"}, "bogus": 1}),
        )
        .await?;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["field"], "bogus", "{v}");
    for (body, field) in [
        (json!({"text": {"q": "x", "nope": 1}}), "text.nope"),
        (json!({"text": {"q": 5}}), "text.q"),
        (json!({"text": {"q": "x", "typo": "always"}}), "text.typo"),
        (json!({"text": {"q": "x", "prefix": 7}}), "text.prefix"),
        (
            json!({"geo": {"within": {"lat": "north", "lon": 0.0, "radius_m": 1.0}}}),
            "geo.within.lat",
        ),
        (json!({"vector": {"values": "abc"}}), "vector.values"),
        (json!({"text": {"q": "x"}, "limit": -1}), "limit"),
        (
            json!({"text": {"q": "x"}, "track_total_hits": "yes"}),
            "track_total_hits",
        ),
        (
            json!({"text": {"q": "x"}, "consistency": {"bogus": 1}}),
            "consistency.bogus",
        ),
    ] {
        let (st, v) = c.search(body.clone()).await?;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(v["error"]["field"], field, "{body}: {v}");
    }
    // Lenient words cost a dictionary walk each: 60 long words ask for 60, the budget (as for
    // explicit fuzzy and prefix words) grants 8, and the answer comes.
    let words: Vec<String> = (0..60).map(|i| format!("averylongword{i}")).collect();
    let (st, v) = c
        .search(json!({"text": {"q": words.join(" "), "operator": "or", "typo": "auto", "prefix": "last"}}))
        .await?;
    assert_eq!(st, StatusCode::OK, "{v}");
    // NaN is not JSON: the body is refused, naming where it broke.
    let resp = c
        .http
        .post(format!("{}/v1/indexes/places/search", c.base))
        .bearer_auth(READ)
        .body(r#"{"geo": {"within": {"lat": NaN, "lon": 0, "radius_m": 1}}}"#)
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = resp.json().await?;
    assert_eq!(v["error"]["code"], "bad_body", "{v}");
    assert!(
        v["error"]["field"]
            .as_str()
            .unwrap()
            .starts_with("geo.within"),
        "{v}"
    );
    let big = json!({"text": {"q": "x".repeat(70_000)}});
    let (st, _) = c
        .post("/v1/indexes/places/search", Some(READ), &big)
        .await?;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    let (st, metrics) = c.get("/metrics", Some(ADMIN)).await?;
    assert_eq!(st, StatusCode::OK);
    let metrics = metrics.as_str().unwrap();
    assert!(metrics.contains("query_api_requests_total"), "{metrics}");
    assert!(metrics.contains("query_api_request_seconds"), "{metrics}");
    for region in ["europe", "asia", "africa"] {
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with("query_api_partition_documents{")
                    && l.contains(&format!("region=\"{region}\""))
            })
            .unwrap_or_else(|| panic!("no document gauge for {region}: {metrics}"));
        let n: f64 = line.rsplit(' ').next().unwrap().parse()?;
        assert!(n >= 99.0, "{line}");
    }
    assert!(metrics.contains("query_api_partition_lag_ms{"), "{metrics}");
    assert!(
        metrics.contains("query_api_partition_rejected_rows{"),
        "{metrics}"
    );
    assert!(metrics.contains("query_api_shard_up{"), "{metrics}");

    // 4. Rate limit: a second replica with a burst of 2, set by its environment.
    let tight = QueryApi::start_with_env(
        &api_config(&f, &shard, "")?,
        f.dir.path(),
        &[
            ("QUERY_API_RATE_PER_SEC", "0.2".to_owned()),
            ("QUERY_API_BURST", "2".to_owned()),
        ],
    )
    .await?;
    let t = Client {
        http: c.http.clone(),
        base: tight.url.clone(),
    };
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..3 {
        let resp = t
            .http
            .post(format!("{}/v1/indexes/places/search", t.base))
            .bearer_auth(READ)
            .json(&json!({"text": {"q": "place"}}))
            .send()
            .await?;
        statuses.push(resp.status().as_u16());
        if let Some(r) = resp.headers().get("retry-after") {
            retry_after = Some(r.to_str()?.to_owned());
        }
    }
    assert_eq!(statuses, [200, 200, 429]);
    assert!(retry_after.is_some_and(|r| r.parse::<u64>().unwrap() >= 1));

    // 5. A dead shard: not ready, a clear 503; restarted on its port, answers come back.
    // (Readiness is reused for up to half a second: `/readyz` needs no key.)
    ix.kill9();
    let v = e2e::eventually("readyz says not ready", Duration::from_secs(5), || async {
        let (st, v) = c.get("/readyz", None).await?;
        Ok((st == StatusCode::SERVICE_UNAVAILABLE).then_some(v))
    })
    .await?;
    assert_eq!(v["shards"][0]["reachable"], false);
    let (st, v) = c.search(json!({"text": {"q": "place"}})).await?;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"]["code"], "shards_unavailable");
    let mut ix = Indexer::start_on(&config, &f.data_dir(), &listen).await?;
    ix.wait_ready().await?;
    e2e::eventually("readyz says ready", Duration::from_secs(5), || async {
        let (st, _) = c.get("/readyz", None).await?;
        Ok((st == StatusCode::OK).then_some(()))
    })
    .await?;
    let (st, v) = c
        .search(json!({"text": {"q": "place"}, "limit": 3}))
        .await?;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(keys(&v).len(), 3);
    drop(api);
    ix.stop()?;
    Ok(())
}

/// Reads server-sent events until `changes` change events arrived (or the timeout): returns
/// (id, event, data) of each, the start event included.
pub(crate) async fn read_events(
    resp: reqwest::Response,
    changes: usize,
) -> Result<Vec<(String, String, Value)>> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    let mut bytes = resp.bytes_stream();
    let mut reader = wire::sse::SseReader::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while out
        .iter()
        .filter(|e: &&(String, String, Value)| e.1 == "change")
        .count()
        < changes
    {
        let chunk = tokio::time::timeout_at(deadline, bytes.next())
            .await
            .map_err(|_| anyhow::anyhow!("timed out; events so far: {out:?}"))?
            .ok_or_else(|| anyhow::anyhow!("stream ended; events so far: {out:?}"))??;
        for e in reader.push(&chunk) {
            if !e.event.is_empty() {
                let data = serde_json::from_str(&e.data).unwrap_or(Value::Null);
                out.push((e.id, e.event, data));
            }
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_stream_delivers_each_change_once_in_order_and_resumes() -> Result<()> {
    let (f, _config, mut ix) = Fixture::indexed(10, "", "").await?;
    let api = QueryApi::start(&api_config(&f, &ix.url, "")?, f.dir.path()).await?;
    let http = reqwest::Client::new();
    let open = |last: Option<String>| {
        let mut req = http
            .get(format!("{}/v1/indexes/places/changes", api.url))
            .bearer_auth(READ);
        if let Some(id) = last {
            req = req.header("last-event-id", id);
        }
        req.send()
    };
    let resp = open(None).await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let first_lsn_before = f.lsn().await?;
    f.client
        .batch_execute(
            "INSERT INTO places (id, region, name) VALUES (2001, 'europe', 'a'), (2002, 'asia', 'b');
             UPDATE places SET name = 'a2' WHERE id = 2001;
             DELETE FROM places WHERE id = 2002;
             UPDATE places SET region = 'africa' WHERE id = 2001;",
        )
        .await?;
    let want = [
        ("2001", "upsert", Some("europe")),
        ("2002", "upsert", Some("asia")),
        ("2001", "upsert", Some("europe")),
        ("2002", "delete", Some("asia")), // where it was
        ("2001", "upsert", Some("africa")),
        ("2003", "upsert", Some("asia")),
    ];
    // Read three changes, then disconnect.
    let events = read_events(resp, 3).await?;
    assert_eq!(events[0].1, "start", "{events:?}");
    let changes: Vec<_> = events.iter().filter(|e| e.1 == "change").take(3).collect();
    let last_id = changes[2].0.clone();
    // More changes while disconnected; then resume from the last id seen.
    f.client
        .batch_execute("INSERT INTO places (id, region, name) VALUES (2003, 'asia', 'c')")
        .await?;
    let resp = open(Some(last_id)).await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let rest = read_events(resp, 3).await?;
    let all: Vec<&(String, String, Value)> = changes
        .into_iter()
        .chain(rest.iter().filter(|e| e.1 == "change"))
        .collect();
    let got: Vec<(String, String, Option<String>)> = all
        .iter()
        .map(|e| {
            (
                e.2["key"].as_str().unwrap().to_owned(),
                e.2["op"].as_str().unwrap().to_owned(),
                e.2["region"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let want: Vec<(String, String, Option<String>)> = want
        .iter()
        .map(|(k, o, r)| (k.to_string(), o.to_string(), r.map(str::to_owned)))
        .collect();
    assert_eq!(
        got, want,
        "each change once, in order, across the reconnect"
    );
    // LSNs never go back; every change is after the writes began.
    let lsns: Vec<Lsn> = all
        .iter()
        .map(|e| e.2["lsn"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(lsns.windows(2).all(|w| w[0] <= w[1]), "{lsns:?}");
    assert!(lsns[0] > first_lsn_before.parse::<Lsn>().unwrap());
    // From before what the feed keeps: 410, and where to follow from.
    let resp = http
        .get(format!(
            "{}/v1/indexes/places/changes?since_lsn=0/1",
            api.url
        ))
        .bearer_auth(READ)
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::GONE);
    let v: Value = resp.json().await?;
    assert_eq!(v["error"]["code"], "gone", "{v}");
    assert!(v["complete_after"].is_string(), "{v}");
    ix.stop()?;
    Ok(())
}
