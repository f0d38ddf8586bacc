//! A hostile client against the real processes: the reproductions of issue 14 as tests.
//! Half-open and idle connections are closed and one address cannot fill the server; one
//! client's waits and change streams cannot take every slot; a query too costly to run is
//! refused with a 422 naming the field, and the shard's memory stays bounded meanwhile.

use std::time::{Duration, Instant};

use anyhow::Result;
use e2e::QueryApi;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::api::{api_config, Client, ADMIN, READ};
use crate::common::Fixture;

/// `rows` rows indexed, and query-api with its default limits in front.
async fn served(rows: i64) -> Result<(Fixture, e2e::Indexer, QueryApi, Client)> {
    let (f, _config, ix) = Fixture::indexed(rows, "", "").await?;
    let api = QueryApi::start(&api_config(&f, &ix.url, "")?, f.dir.path()).await?;
    let c = Client::of(&api.url);
    Ok((f, ix, api, c))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_feed_from_beyond_the_servers_wal_is_refused_and_a_fresh_commit_is_not(
) -> Result<()> {
    let (f, _ix, _api, c) = served(5).await?;
    let open = |since: String| {
        let c = &c;
        async move {
            let resp = c
                .http
                .get(format!(
                    "{}/v1/indexes/places/changes?since_lsn={since}",
                    c.base
                ))
                .header("x-api-key", READ)
                .send()
                .await?;
            let status = resp.status();
            let body = match status {
                StatusCode::OK => Value::Null, // a stream: not read
                _ => resp.json().await?,
            };
            anyhow::Ok((status, body))
        }
    };
    let t = Instant::now();
    let (st, v) = open("FFFFFFFF/FFFFFFFF".into()).await?;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["field"], "since_lsn", "{v}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // Each of a burst is answered within about a second (Postgres is asked once a second).
    let t = Instant::now();
    let burst =
        futures_util::future::join_all((0..20).map(|i| open(format!("FFFFFFFF/{i:X}")))).await;
    for r in burst {
        assert_eq!(r?.0, StatusCode::UNPROCESSABLE_ENTITY);
    }
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // A client's own commit, followed at once (the shard may not have applied it yet): 200.
    for id in 100..105i64 {
        f.client
            .execute(
                "INSERT INTO places (id, region, name) VALUES ($1, 'asia', 'x')",
                &[&id],
            )
            .await?;
        let (st, v) = open(f.lsn().await?).await?;
        assert_eq!(st, StatusCode::OK, "{v}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_search_page_works_with_keys_without_putting_one_in_a_url() -> Result<()> {
    let (f, _ix, api, _c) = served(30).await?;
    // A writer for the page's change stream to follow, until the page is done.
    let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = {
        let (writing, pg, db) = (writing.clone(), f.pg, f.db.clone());
        tokio::spawn(async move {
            let client = pg.connect(&db).await?;
            let mut id: i64 = 1_000;
            while writing.load(std::sync::atomic::Ordering::Relaxed) {
                id += 1;
                client
                    .execute(
                        "INSERT INTO places (id, region, name) VALUES ($1, 'europe', 'written')",
                        &[&id],
                    )
                    .await?;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            anyhow::Ok(())
        })
    };
    let report = e2e::browser::run("keyed_page.cjs", &[&api.url, READ]).await;
    writing.store(false, std::sync::atomic::Ordering::Relaxed);
    writer.await??;
    let report = report?;
    assert!(report.contains("badge: live"), "{report}");
    Ok(())
}

/// Open file descriptors of a process.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// `GET /healthz` on a new connection from `from` (any 127/8 address is this machine's):
/// the status line, and how long it took.
async fn healthz_from(api: &str, from: &str) -> Result<(String, Duration)> {
    let t = Instant::now();
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse()?)?;
    let mut s = socket.connect(api.parse()?).await?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut answer)).await??;
    let line = answer.lines().next().unwrap_or_default().to_owned();
    Ok((line, t.elapsed()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_are_closed_and_one_address_cannot_fill_the_server() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("query-api.toml");
    // No shard needs to answer: the doors are query-api's own.
    std::fs::write(
        &config,
        format!(
            "[[shard]]\nurl = \"http://127.0.0.1:9\"\n[auth]\nkeys = [{{ key = \"{READ}\", scope = \"read\" }}]\n\
             [limits]\nheader_timeout_ms = 1500\n"
        ),
    )?;
    let api = QueryApi::start(&config, dir.path()).await?;
    let addr = api.url.trim_start_matches("http://").to_owned();
    let pid = api.pid().expect("running");
    // The reproduction: many sockets from one client, each sending half a request head.
    let limit = rlimit::increase_nofile_limit(u64::MAX)?;
    let n = usize::try_from(limit)
        .unwrap_or(usize::MAX)
        .saturating_sub(200)
        .min(3_000);
    assert!(
        n > 600,
        "the open-file limit ({limit}) is too low for this test"
    );
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let Ok(mut s) = TcpStream::connect(&addr).await else {
            continue;
        };
        let _ = s.write_all(b"GET / HTTP/1.1\r\n").await;
        held.push(s);
    }
    // Another client is served at once, and query-api holds at most one address's share.
    let (line, took) = healthz_from(&addr, "127.0.0.2").await?;
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let open = fds(pid);
    assert!(open < 512 + 100, "query-api holds {open} descriptors");
    // Within the header timeout every half-open socket is closed by the server.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 256];
    for s in &mut held {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => {}
            Ok(Ok(_)) => {} // a 408 or similar before the close is fine
            Err(_) => panic!("a half-open connection is still open after 10 s"),
        }
    }
    drop(held);
    let (line, _) = healthz_from(&addr, "127.0.0.1").await?;
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_take_every_slot_with_waits_or_streams() -> Result<()> {
    let (_f, mut ix, _api, c) = served(20).await?;

    // 40 waits on a far-future LSN from one key: 32 (its share) wait, the rest are refused
    // at once; another key searches meanwhile.
    let far =
        json!({"q": "place", "consistency": {"min_lsn": "FFFFFFFF/0", "wait_timeout_ms": 4000}});
    let waits = futures_util::future::join_all((0..40).map(|_| {
        let (c, far) = (&c, far.clone());
        async move { c.post("/v1/indexes/places/search", Some(READ), &far).await }
    }));
    let other = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t = Instant::now();
        let answer = c
            .post(
                "/v1/indexes/places/search",
                Some(ADMIN),
                &json!({"q": "place"}),
            )
            .await;
        (answer, t.elapsed())
    };
    let (waits, (other, took)) = tokio::join!(waits, other);
    let (st, v) = other?;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let mut statuses: Vec<(u16, String)> = Vec::new();
    for w in waits {
        let (st, v) = w?;
        statuses.push((
            st.as_u16(),
            v["error"]["code"].as_str().unwrap_or("").to_owned(),
        ));
        if st == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(v["error"]["field"], "consistency.min_lsn", "{v}");
        }
    }
    let count = |s: u16, code: &str| statuses.iter().filter(|x| x.0 == s && x.1 == code).count();
    assert_eq!(count(409, "min_lsn_not_reached"), 32, "{statuses:?}");
    assert_eq!(count(429, "too_many_waits"), 8, "{statuses:?}");

    // 33 change streams from one key: 32 open, the 33rd is refused; another key opens one.
    let open = |key: &'static str| {
        c.http
            .get(format!("{}/v1/indexes/places/changes", c.base))
            .bearer_auth(key)
            .send()
    };
    let mut streams = Vec::new();
    for _ in 0..32 {
        let resp = open(READ).await?;
        assert_eq!(resp.status(), StatusCode::OK);
        streams.push(resp);
    }
    let refused = open(READ).await?;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let v: Value = refused.json().await?;
    assert_eq!(v["error"]["code"], "too_many_streams", "{v}");
    let admin = open(ADMIN).await?;
    assert_eq!(admin.status(), StatusCode::OK);
    let (st, v) = c.search(json!({"q": "place"})).await?;
    assert_eq!(st, StatusCode::OK, "{v}");
    // Closing streams returns their share.
    drop(streams);
    let again = e2e::eventually(
        "a closed stream's share returns",
        Duration::from_secs(30),
        || async {
            let resp = open(READ).await?;
            Ok((resp.status() == StatusCode::OK).then_some(resp))
        },
    )
    .await?;
    drop((again, admin));
    ix.stop()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_too_costly_to_run_is_refused_and_the_shard_stays_small() -> Result<()> {
    let (_f, mut ix, _api, c) = served(2_000).await?;
    let pid = ix.pid().expect("running");
    // The peak from here on (the start-up's is forgotten).
    e2e::reset_peak_rss(pid)?;
    let before = e2e::status_mb(pid, "VmHWM:")?;
    // The reproductions, several of each at once: 17,000 words (100 KB), 676 two-letter
    // prefixes, 2,000 fuzzy words, and a vector of 150,000 values.
    let words = vec!["paris"; 17_000].join(" ");
    let mut prefixes = Vec::new();
    for a in 'a'..='z' {
        for b in 'a'..='z' {
            prefixes.push(format!("{a}{b}*"));
        }
    }
    let fuzzy = vec!["london~2"; 2_000].join(" ");
    let mut bodies = Vec::new();
    for _ in 0..6 {
        bodies.push((json!({"q": words}), "text.q"));
        bodies.push((json!({"q": prefixes.join(" ")}), "text.q"));
        bodies.push((json!({"text": {"q": fuzzy, "operator": "or"}}), "text.q"));
        // 750 KB as sent (`0.1` each), under the 1 MB body limit.
        let values: Value = serde_json::from_str(&format!("[{}]", vec!["0.1"; 150_000].join(",")))?;
        bodies.push((json!({"vector": {"values": values}}), "vector.values"));
    }
    let answers = futures_util::future::join_all(
        bodies
            .iter()
            .map(|(b, _)| c.post("/v1/indexes/places/search", Some(READ), b)),
    )
    .await;
    for (answer, (_, field)) in answers.into_iter().zip(&bodies) {
        let (st, v) = answer?;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(v["error"]["field"], *field, "{v}");
    }
    let after = e2e::status_mb(pid, "VmHWM:")?;
    assert!(
        after - before < 100.0,
        "the shard grew from {before:.0} MB to a peak of {after:.0} MB"
    );
    // Queries within the limits still run.
    let (st, v) = c.search(json!({"q": vec!["place"; 300].join(" ")})).await?;
    assert_eq!(st, StatusCode::OK, "{v}");
    ix.stop()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shard_endpoint_requires_its_secret() -> Result<()> {
    const SECRET: &str = "shard-secret-0123456789";
    let f = Fixture::new().await?;
    f.insert_range(1, 20).await?;
    let config = f.config("", "")?;
    // Beyond loopback without a secret, the indexer refuses to start and says what to set.
    let out = std::process::Command::new(e2e::indexer_bin())
        .args([
            "run",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "0.0.0.0:0",
        ])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("INDEXER_SHARD_SECRET"), "{stderr}");

    let env = [("INDEXER_SHARD_SECRET", SECRET.to_owned())];
    let mut ix = e2e::Indexer::start_with_env(&config, &f.data_dir(), "127.0.0.1:0", &env).await?;
    ix.wait_ready().await?;
    // Without the secret, or with another, every route but /healthz is refused.
    let http = reqwest::Client::new();
    for path in [
        "/status",
        "/internal/dump?index=places",
        "/internal/document?index=places&key=1",
        wire::link::PATH,
    ] {
        for auth in [None, Some("Bearer shard-secret-0123456780"), Some(SECRET)] {
            let mut req = http.get(format!("{}{path}", ix.url));
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let resp = req.send().await?;
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path} {auth:?}");
            let v: Value = resp.json().await?;
            assert_eq!(v["error"]["field"], "authorization", "{v}");
        }
    }
    let resp = http.get(format!("{}/healthz", ix.url)).send().await?;
    assert_eq!(resp.status(), StatusCode::OK);

    // query-api with the secret answers searches (the link), waits, documents and feeds;
    // without it, the shard is unavailable.
    let with = QueryApi::start_with_env(
        &api_config(&f, &ix.url, "")?,
        f.dir.path(),
        &[("QUERY_API_SHARD_SECRET", SECRET.to_owned())],
    )
    .await?;
    let c = Client::of(&with.url);
    let lsn = e2e::current_lsn(&f.client).await?;
    let (st, v) = c
        .search(json!({"q": "place", "consistency": {"min_lsn": lsn}}))
        .await?;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(!e2e::hit_keys(&v).is_empty(), "{v}");
    let (st, v) = c.get("/v1/indexes/places/documents/1", Some(READ)).await?;
    assert_eq!(st, StatusCode::OK, "{v}");
    let feed = c
        .http
        .get(format!("{}/v1/indexes/places/changes", c.base))
        .bearer_auth(READ)
        .send()
        .await?;
    assert_eq!(feed.status(), StatusCode::OK);
    drop(feed);
    let without = QueryApi::start(&api_config(&f, &ix.url, "")?, f.dir.path()).await?;
    let c = Client::of(&without.url);
    let (st, v) = c.search(json!({"q": "place"})).await?;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    // verify presents the secret from the same environment.
    let out = std::process::Command::new(e2e::indexer_bin())
        .args([
            "verify",
            "--config",
            config.to_str().unwrap(),
            "--indexer-url",
            &ix.url,
        ])
        .env("INDEXER_SHARD_SECRET", SECRET)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    ix.stop()?;
    Ok(())
}

/// A raw request on a new connection (the path as sent, unnormalised): status and JSON body.
async fn raw(api: &str, request: &str) -> Result<(u16, Value)> {
    let mut s = TcpStream::connect(api.trim_start_matches("http://")).await?;
    s.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await??;
    let text = String::from_utf8_lossy(&answer);
    let status = text.split(' ').nth(1).unwrap_or("0").parse()?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{text}"
    );
    Ok((status, serde_json::from_str(body)?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_json_naming_its_field_and_text_is_compared_in_one_form() -> Result<()> {
    let (f, _config, mut ix) = Fixture::indexed(20, "", "").await?;
    f.client
        .batch_execute(
            "INSERT INTO places VALUES (9001, 'europe', 'Zürich', 'a lake town', 5, 47.4, 8.5, '{1,0,0,0}'), \
             (9002, 'europe', 'Amsterdam', 'canals', 5, 52.4, 4.9, '{0,1,0,0}')",
        )
        .await?;
    let lsn = e2e::current_lsn(&f.client).await?;
    ix.wait_applied(&lsn).await?;
    let api = QueryApi::start(
        &api_config(&f, &ix.url, "[limits]\nrate_per_sec = 0.1\nburst = 30")?,
        f.dir.path(),
    )
    .await?;
    let c = Client::of(&api.url);
    let close = "Connection: close\r\n";
    let auth = format!("Authorization: Bearer {ADMIN}\r\n");
    // A method the route does not take; a path that is not UTF-8; a NUL in an id.
    let (st, v) = raw(
        &api.url,
        &format!("DELETE /v1/indexes/places/documents/1 HTTP/1.1\r\nHost: x\r\n{auth}{close}\r\n"),
    )
    .await?;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (405, Some("method")),
        "{v}"
    );
    let (st, v) = raw(
        &api.url,
        &format!("GET /v1/indexes/%FF%FE/documents/1 HTTP/1.1\r\nHost: x\r\n{auth}{close}\r\n"),
    )
    .await?;
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (400, Some("path")),
        "{v}"
    );
    let (st, v) = c
        .get("/v1/indexes/places/documents/%00", Some(ADMIN))
        .await?;
    assert_eq!(
        (st.as_u16(), v["error"]["field"].as_str()),
        (404, Some("id")),
        "{v}"
    );
    // Bodies that are not one JSON value name the body.
    for body in [
        r#"{"q" "zurich"}"#,
        r#"{"q": "x"} trailing"#,
        r#"{"q": "x"}{"q": "y"}"#,
    ] {
        let resp = c
            .http
            .post(format!("{}/v1/indexes/places/search", c.base))
            .bearer_auth(ADMIN)
            .body(body)
            .send()
            .await?;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body}");
        let v: Value = resp.json().await?;
        assert_eq!(v["error"]["field"], "body", "{body}: {v}");
    }
    // A value beyond f32, and a direction-less vector under cosine.
    let resp = c
        .http
        .post(format!("{}/v1/indexes/places/search", c.base))
        .bearer_auth(ADMIN)
        .body(r#"{"vector": {"values": [1e39, 0, 0, 0]}}"#)
        .send()
        .await?;
    let st = resp.status();
    let v: Value = resp.json().await?;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["field"], "vector.values", "{v}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("1e39") && message.contains("32-bit float's range"),
        "{v}"
    );
    let (st, v) = c
        .post(
            "/v1/indexes/places/search",
            Some(ADMIN),
            &json!({"vector": {"values": [0, 0, 0, 0]}}),
        )
        .await?;
    assert_eq!(
        (st.as_u16(), v["error"]["field"].as_str()),
        (422, Some("vector.values")),
        "{v}"
    );
    // One Unicode form: decomposed, composed and with a zero-width space find the same place.
    for q in ["Zürich", "Zu\u{308}rich", "Zü\u{200B}rich", "ＺＵＲＩＣＨ"] {
        let (st, v) = c
            .post("/v1/indexes/places/search", Some(ADMIN), &json!({"q": q}))
            .await?;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(e2e::hit_keys(&v), ["9001"], "{q:?}: {v}");
    }
    // Readiness names no shard address; metrics need an admin key.
    let (st, v) = c.get("/readyz", None).await?;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(!v.to_string().contains("127.0.0.1"), "{v}");
    let (st, v) = c.get("/metrics", Some(READ)).await?;
    assert_eq!(
        (st.as_u16(), v["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{v}"
    );
    // Guessing keys is rate limited like using one (burst 30 here, per address).
    let mut statuses = Vec::new();
    for i in 0..33 {
        let (st, _) = c
            .get("/v1/indexes", Some(&format!("guess-{i:016}")))
            .await?;
        statuses.push(st.as_u16());
    }
    assert_eq!(statuses[..30], [401; 30]);
    assert_eq!(statuses[30..], [429; 3]);
    ix.stop()?;
    Ok(())
}
