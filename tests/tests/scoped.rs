//! Tenant-scoped keys: a read key restricted to regions and a mandatory filter never sees a
//! document outside them, through random searches (text, filter-only, geo, vector; own
//! filters, regions, pages, cursors, facets), document reads and the change feed, while
//! random writes move documents in and out of its scope. Seeded, so a failure repeats.

use std::collections::BTreeMap;

use anyhow::Result;
use e2e::QueryApi;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::api::{read_events, Client, ADMIN, READ};
use crate::common::Fixture;

const TENANT: &str = "tenant-key-0123456789";
const REGIONS: [&str; 3] = ["europe", "asia", "africa"];

/// id → (region, population): what the table holds.
type Model = BTreeMap<i64, (String, i64)>;

fn in_scope(region: &str, population: i64) -> bool {
    (region == "europe" || region == "asia") && (100..600).contains(&population)
}

fn scoped_ids(m: &Model) -> Vec<String> {
    m.iter()
        .filter(|(_, (r, p))| in_scope(r, *p))
        .map(|(id, _)| id.to_string())
        .collect()
}

/// A small seeded generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

fn random_filter(rng: &mut Rng) -> Option<Value> {
    let pop = |rng: &mut Rng| (rng.below(100) * 10) as i64;
    match rng.below(6) {
        0 => None,
        1 => Some(json!({"range": {"population": {"gte": pop(rng), "lt": pop(rng)}}})),
        2 => Some(json!({"in": {"population": [pop(rng), pop(rng), pop(rng)]}})),
        3 => Some(json!({"not": {"range": {"population": {"lt": pop(rng)}}}})),
        4 => Some(json!({"or": [{"term": {"population": pop(rng)}}, {"exists": "population"}]})),
        _ => Some(json!({"not": {"exists": "population"}})),
    }
}

fn random_search(rng: &mut Rng) -> Value {
    let mut body = match rng.below(4) {
        0 => json!({"q": *rng.pick(&["place", "body", "place 17", "place 42 OR place 3"])}),
        1 => json!({}),
        2 => json!({"geo": {"nearest": {"lat": 10.0, "lon": 20.0, "k": 1 + rng.below(40)}}}),
        _ => {
            json!({"vector": {"values": [1.0, (rng.below(7)) as f64, 0.5, -1.0], "k": 1 + rng.below(40)}})
        }
    };
    if let Some(f) = random_filter(rng) {
        body["filter"] = f;
    }
    match rng.below(4) {
        0 => body["regions"] = json!(["europe"]),
        1 => body["regions"] = json!(["asia", "europe"]),
        2 => body["regions"] = json!(["africa"]),
        _ => {}
    }
    body["limit"] = json!(1 + rng.below(25));
    if body.get("geo").is_none() && body.get("vector").is_none() {
        body["offset"] = json!(rng.below(30));
        if rng.below(2) == 0 {
            body["facets"] = json!([{"field": "population", "size": 100}]);
            body["track_total_hits"] = json!(true);
        }
    }
    body
}

/// One random write, as a single-row transaction, applied to the model; the change event a
/// tenant should see for it (op, key), if any.
async fn random_write(f: &Fixture, m: &mut Model, rng: &mut Rng) -> Result<Option<(String, i64)>> {
    let ids: Vec<i64> = m.keys().copied().collect();
    let id = *rng.pick(&ids);
    match rng.below(5) {
        0 | 1 => {
            let pop = (rng.below(100) * 10) as i64;
            f.client
                .execute(
                    "UPDATE places SET population = $2 WHERE id = $1",
                    &[&id, &pop],
                )
                .await?;
            let e = m.get_mut(&id).unwrap();
            e.1 = pop;
            Ok(in_scope(&e.0, e.1).then(|| ("upsert".to_owned(), id)))
        }
        2 => {
            let region = rng.pick(&REGIONS).to_string();
            f.client
                .execute(
                    "UPDATE places SET region = $2 WHERE id = $1",
                    &[&id, &region],
                )
                .await?;
            let e = m.get_mut(&id).unwrap();
            e.0 = region;
            Ok(in_scope(&e.0, e.1).then(|| ("upsert".to_owned(), id)))
        }
        3 if m.len() > 20 => {
            f.client
                .execute("DELETE FROM places WHERE id = $1", &[&id])
                .await?;
            let (r, p) = m.remove(&id).unwrap();
            Ok(in_scope(&r, p).then(|| ("delete".to_owned(), id)))
        }
        _ => {
            let id = m.keys().last().copied().unwrap_or(0) + 1;
            let region = rng.pick(&REGIONS).to_string();
            let pop = (rng.below(100) * 10) as i64;
            f.client
                .execute(
                    "INSERT INTO places (id, region, name, body, population, lat, lon, embedding) \
                     VALUES ($1, $2, $4, $5, $3, 10, 20, ARRAY[1, 2, 0.5, -1]::real[])",
                    &[
                        &id,
                        &region,
                        &pop,
                        &format!("place {id}"),
                        &format!("body of place {id}"),
                    ],
                )
                .await?;
            m.insert(id, (region.clone(), pop));
            Ok(in_scope(&region, pop).then(|| ("upsert".to_owned(), id)))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_key_never_sees_a_document_outside_its_scope() -> Result<()> {
    let seed: u64 = std::env::var("SCOPE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x05EE_D0F5_C0FE);
    let mut rng = Rng(seed);
    let (f, _config, ix) = Fixture::indexed(90, "", "").await?;
    let mut m: Model = (1..=90)
        .map(|g| (g, (REGIONS[(g % 3) as usize].to_owned(), g * 10)))
        .collect();
    let conf = f.dir.path().join("query-api-scoped.toml");
    std::fs::write(
        &conf,
        format!(
            "[[shard]]\nurl = \"{}\"\n[auth]\nkeys = [\n\
             {{ key = \"{READ}\", scope = \"read\" }},\n\
             {{ key = \"{ADMIN}\", scope = \"admin\" }},\n\
             {{ key = \"{TENANT}\", scope = \"read\", indexes = [\"places\"], regions = [\"europe\", \"asia\"], \
                filter = {{ range = {{ population = {{ gte = 100, lt = 600 }} }} }} }},\n]\n",
            ix.url
        ),
    )?;
    let api = QueryApi::start(&conf, f.dir.path()).await?;
    let c = Client::of(&api.url);

    // The feed, opened before any write: it must show exactly the in-scope changes.
    let start = f.lsn().await?;
    let feed = c
        .http
        .get(format!(
            "{}/v1/indexes/places/changes?since_lsn={start}",
            api.url
        ))
        .header("x-api-key", TENANT)
        .send()
        .await?;
    assert_eq!(feed.status(), StatusCode::OK);
    let mut expected_events = Vec::new();

    // Another index, even an existing one, is unknown to the key; another region is refused.
    let (st, v) = c
        .post("/v1/indexes/other/search", Some(TENANT), &json!({"q": "x"}))
        .await?;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (StatusCode::NOT_FOUND, Some("index")),
        "{v}"
    );
    let (st, _) = c.get("/v1/indexes/other/documents/1", Some(TENANT)).await?;
    assert_eq!(st, StatusCode::NOT_FOUND);

    let (mut searches, mut pages, mut reads) = (0, 0, 0);
    for round in 0..8 {
        // Writes between rounds move documents in and out of the scope.
        for _ in 0..12 {
            if let Some(e) = random_write(&f, &mut m, &mut rng).await? {
                expected_events.push(e);
            }
        }
        let lsn = f.lsn().await?;
        ix.wait_applied(&lsn).await?;
        let scope = scoped_ids(&m);

        // A filter-only listing of everything shows exactly the scope.
        let (st, v) = c
            .post(
                "/v1/indexes/places/search",
                Some(TENANT),
                &json!({"limit": 1000}),
            )
            .await?;
        assert_eq!(st, StatusCode::OK, "{v}");
        let mut seen = e2e::hit_keys(&v);
        seen.sort_by_key(|k| k.parse::<i64>().unwrap());
        assert_eq!(seen, scope, "round {round}");

        for _ in 0..20 {
            let body = random_search(&mut rng);
            let (st, v) = c
                .post("/v1/indexes/places/search", Some(TENANT), &body)
                .await?;
            searches += 1;
            if body["regions"] == json!(["africa"]) {
                assert_eq!(st, StatusCode::FORBIDDEN, "{body} {v}");
                assert_eq!(v["error"]["field"], "regions", "{v}");
                continue;
            }
            assert_eq!(
                st,
                StatusCode::OK,
                "{body} {v}\n{}\n{}",
                api.log_text(),
                ix.log_text()
            );
            for k in e2e::hit_keys(&v) {
                assert!(scope.contains(&k), "{k} is outside the scope: {body} {v}");
            }
            if let Some(total) = v["total"].as_u64().filter(|_| v["total_relation"] == "eq") {
                assert!(total as usize <= scope.len(), "total {total}: {body} {v}");
            }
            if let Some(buckets) = v["facets"]["population"].as_array() {
                let sum: u64 = buckets.iter().map(|b| b["count"].as_u64().unwrap()).sum();
                assert!(sum as usize <= scope.len(), "{v}");
                for b in buckets {
                    let p = b["value"].as_i64().unwrap();
                    assert!((100..600).contains(&p), "facet value {p} outside: {v}");
                }
            }
            // Follow its cursor for a few pages.
            let mut cursor = v["next_cursor"].as_str().map(str::to_owned);
            let mut hops = 0;
            while let (Some(cur), true) = (cursor.take(), hops < 3) {
                let mut next = body.clone();
                next.as_object_mut().unwrap().remove("offset");
                next["cursor"] = json!(cur);
                let (st, v) = c
                    .post("/v1/indexes/places/search", Some(TENANT), &next)
                    .await?;
                assert_eq!(st, StatusCode::OK, "{next} {v}");
                for k in e2e::hit_keys(&v) {
                    assert!(scope.contains(&k), "{k} on a later page: {next} {v}");
                }
                cursor = v["next_cursor"].as_str().map(str::to_owned);
                hops += 1;
                pages += 1;
            }
        }
        // A cursor of an unscoped key's search is refused to the tenant.
        let (_, v) = c
            .post(
                "/v1/indexes/places/search",
                Some(READ),
                &json!({"q": "place", "limit": 2}),
            )
            .await?;
        let foreign = v["next_cursor"].as_str().expect("a next page").to_owned();
        let (st, v) = c
            .post(
                "/v1/indexes/places/search",
                Some(TENANT),
                &json!({"q": "place", "limit": 2, "cursor": foreign}),
            )
            .await?;
        assert_eq!(
            (st, v["error"]["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("cursor")),
            "{v}"
        );

        // Document reads: found exactly when in scope.
        for _ in 0..15 {
            let id = 1 + rng.below(m.keys().last().copied().unwrap_or(1) as u64 + 5);
            let (st, v) = c
                .get(&format!("/v1/indexes/places/documents/{id}"), Some(TENANT))
                .await?;
            reads += 1;
            let want = if scope.contains(&id.to_string()) {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            };
            assert_eq!(st, want, "document {id}: {v}");
        }
    }

    // The feed showed exactly the in-scope changes, in order, and nothing else: after them,
    // one more in-scope write is the very next event.
    f.client
        .execute(
            "INSERT INTO places (id, region, name, population) VALUES (100000, 'europe', 'sentinel', 150)",
            &[],
        )
        .await?;
    expected_events.push(("upsert".to_owned(), 100_000));
    let events = read_events(feed, expected_events.len()).await?;
    let got: Vec<(String, i64)> = events
        .iter()
        .filter(|e| e.1 == "change")
        .map(|e| {
            (
                e.2["op"].as_str().unwrap().to_owned(),
                e.2["key"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, expected_events, "seed {seed:#x}");
    eprintln!(
        "scoped: seed {seed:#x}: {searches} searches, {pages} cursor pages, {reads} document reads, \
         {} visible of {} changes",
        expected_events.len(),
        8 * 12 + 1
    );
    Ok(())
}
