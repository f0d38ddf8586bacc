//! The shard link (`wire::link`) spoken by hand, as a hostile or broken peer would: query-api
//! sends its searches and document reads on it, so it must answer each call by id and refuse
//! what is not a call without harming the shard.

use std::time::Duration;

use anyhow::Result;
use reqwest::StatusCode;
use serde_json::{json, Value};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::Fixture;

/// A connection to the shard at `authority`, upgraded to the link.
async fn open_link(authority: &str) -> Result<TcpStream> {
    let mut tcp = TcpStream::connect(authority).await?;
    let hello = format!(
        "GET {} HTTP/1.1\r\nHost: {authority}\r\nConnection: upgrade\r\nUpgrade: {}\r\n\r\n",
        wire::link::PATH,
        wire::link::UPGRADE
    );
    tcp.write_all(hello.as_bytes()).await?;
    // The 101's head, byte by byte, so no frame is read past it.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await?);
    }
    let head = String::from_utf8(head)?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 101"), "{head}");
    Ok(tcp)
}

async fn send(tcp: &mut TcpStream, frame: &[u8]) -> Result<()> {
    tcp.write_u32(frame.len() as u32).await?;
    tcp.write_all(frame).await?;
    Ok(())
}

/// The shard's `indexer_searches_cancelled_total`, from its metrics (0 before the first).
async fn searches_cancelled(shard: &str) -> Result<f64> {
    let metrics = reqwest::get(format!("{shard}/metrics"))
        .await?
        .text()
        .await?;
    Ok(metrics
        .lines()
        .find(|l| l.starts_with("indexer_searches_cancelled_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0))
}

/// The next answer: its call id, status and JSON body.
async fn answer(tcp: &mut TcpStream) -> Result<(u64, u16, Value)> {
    let len = tokio::time::timeout(Duration::from_secs(10), tcp.read_u32()).await??;
    let mut frame = vec![0; len as usize];
    tcp.read_exact(&mut frame).await?;
    let (id, status, body) = wire::link::parse(&frame).expect("a whole header");
    Ok((id, status, serde_json::from_slice(body)?))
}

/// The shard link, spoken by hand as a hostile or broken peer would: calls answered by id in
/// one connection, bad bodies and unknown calls refused naming the field, and a frame that is
/// not one (too short, too long) ends the connection; the path refuses plain requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shard_link_answers_each_call_by_id_and_refuses_garbage() -> Result<()> {
    let (_f, _config, mut ix) = Fixture::indexed(10, "", "").await?;
    let authority = ix.url.trim_start_matches("http://").to_owned();

    // Without the upgrade: 426, in the shard's error shape.
    let resp = reqwest::get(format!("{}{}", ix.url, wire::link::PATH)).await?;
    assert_eq!(resp.status(), StatusCode::UPGRADE_REQUIRED);
    let v: Value = resp.json().await?;
    assert_eq!(v["error"]["field"], "upgrade", "{v}");

    let open = || open_link(&authority);

    let mut tcp = open().await?;
    let calls: [(u64, u16, Value); 6] = [
        (
            11,
            wire::link::Call::Search.code(),
            json!({"index": "places", "q": "place", "limit": 3}),
        ),
        (
            12,
            wire::link::Call::Document.code(),
            json!({"index": "places", "key": "4"}),
        ),
        (
            13,
            wire::link::Call::Document.code(),
            json!({"index": "places", "key": "../../status?x#y"}),
        ),
        (
            14,
            wire::link::Call::Search.code(),
            json!({"index": "places", "q": "x", "limit": "many"}),
        ),
        (15, 999, json!({})),
        (
            16,
            wire::link::Call::Search.code(),
            json!({"index": "nope", "q": "x"}),
        ),
    ];
    for (id, code, body) in &calls {
        send(
            &mut tcp,
            &wire::link::frame(*id, *code, body.to_string().as_bytes()),
        )
        .await?;
    }
    let mut answers = std::collections::BTreeMap::new();
    for _ in 0..calls.len() {
        let (id, status, body) = answer(&mut tcp).await?;
        answers.insert(id, (status, body));
    }
    let keys: Vec<u64> = answers.keys().copied().collect();
    assert_eq!(keys, [11, 12, 13, 14, 15, 16]);
    let (status, v) = &answers[&11];
    assert_eq!(*status, 200, "{v}");
    assert_eq!(v["hits"].as_array().map(Vec::len), Some(3), "{v}");
    let (status, v) = &answers[&12];
    assert_eq!(
        (*status, &v["key"], &v["region"]),
        (200, &json!("4"), &json!("asia")),
        "{v}"
    );
    // A key is data: no path, no query string, just a key nobody has.
    let (status, v) = &answers[&13];
    assert_eq!((*status, &v["error"]["field"]), (404, &json!("key")), "{v}");
    let (status, v) = &answers[&14];
    assert_eq!(
        (*status, &v["error"]["field"]),
        (400, &json!("limit")),
        "{v}"
    );
    let (status, v) = &answers[&15];
    assert_eq!(
        (*status, &v["error"]["field"]),
        (400, &json!("call")),
        "{v}"
    );
    let (status, v) = &answers[&16];
    assert_eq!(
        (*status, &v["error"]["field"]),
        (404, &json!("index")),
        "{v}"
    );

    // A frame shorter than its header ends the connection.
    send(&mut tcp, b"short").await?;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest)).await?;
    assert!(read.is_err() || rest.is_empty(), "{read:?} {rest:?}");

    // So does a length beyond the largest call, before any of it is read.
    let mut tcp = open().await?;
    tcp.write_u32(wire::link::MAX_CALL as u32 + 1).await?;
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest)).await?;
    assert!(read.is_err() || rest.is_empty(), "{read:?} {rest:?}");

    // The shard still answers a new connection.
    let mut tcp = open().await?;
    send(
        &mut tcp,
        &wire::link::frame(
            1,
            wire::link::Call::Search.code(),
            br#"{"index": "places", "q": "place"}"#,
        ),
    )
    .await?;
    assert_eq!(answer(&mut tcp).await?.1, 200);
    ix.stop()?;
    Ok(())
}

/// A `Cancel` call stops the search it names: sent right behind each of 50 searches (in the
/// same write), it reaches the shard before most of them have scanned, and those answer 503
/// "stopped" instead of a page; every call still gets exactly one answer, and a cancel for
/// an id that is not running changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_call_stops_the_search_it_names() -> Result<()> {
    let (_f, _config, mut ix) = Fixture::indexed(200, "", "").await?;
    let mut tcp = open_link(ix.url.trim_start_matches("http://")).await?;
    let search = json!({"index": "places", "q": "place", "limit": 5, "track_total_hits": true});
    let mut bytes = Vec::new();
    for id in 0..50u64 {
        for frame in [
            wire::link::frame(
                id,
                wire::link::Call::Search.code(),
                search.to_string().as_bytes(),
            ),
            wire::link::frame(id, wire::link::Call::Cancel.code(), b""),
        ] {
            bytes.extend_from_slice(&(frame.len() as u32).to_be_bytes());
            bytes.extend_from_slice(&frame);
        }
    }
    // A cancel naming no running call.
    let stray = wire::link::frame(999, wire::link::Call::Cancel.code(), b"");
    bytes.extend_from_slice(&(stray.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&stray);
    tcp.write_all(&bytes).await?;
    let mut stopped = 0;
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..50 {
        let (id, status, v) = answer(&mut tcp).await?;
        assert!(ids.insert(id), "two answers for {id}");
        match status {
            200 => assert_eq!(v["total"], 200, "{v}"),
            503 => {
                assert!(
                    v["error"]["message"].as_str().unwrap().contains("stopped"),
                    "{v}"
                );
                stopped += 1;
            }
            other => panic!("{other}: {v}"),
        }
    }
    assert!(stopped > 0, "no search was stopped");
    // The connection still serves: a search without a cancel is answered whole.
    send(
        &mut tcp,
        &wire::link::frame(
            77,
            wire::link::Call::Search.code(),
            search.to_string().as_bytes(),
        ),
    )
    .await?;
    let (id, status, v) = answer(&mut tcp).await?;
    assert_eq!((id, status), (77, 200), "{v}");
    let counted = searches_cancelled(&ix.url).await?;
    assert_eq!(counted, f64::from(stopped));

    // query-api cancels what it stops waiting for: with a 1 ms shard timeout its searches
    // time out (partial answers), and the shard is told to stop them.
    let api = e2e::QueryApi::start(
        &crate::api::api_config(&_f, &ix.url, "[limits]\nshard_timeout_ms = 1")?,
        _f.dir.path(),
    )
    .await?;
    let c = crate::api::Client::of(&api.url);
    // Eight fuzzy words: building their automata alone takes the shard milliseconds.
    let public = json!({"text": {"q": "plac~2 plce~2 pace~2 plae~2 palce~2 lpace~2 placx~2 plaec~2", "operator": "or"}, "track_total_hits": true});
    for _ in 0..40 {
        let (st, v) = c.search(public.clone()).await?;
        assert!(
            st == StatusCode::SERVICE_UNAVAILABLE || st == StatusCode::OK,
            "{v}"
        );
    }
    e2e::eventually(
        "query-api's abandoned searches are cancelled",
        Duration::from_secs(10),
        || async { Ok((searches_cancelled(&ix.url).await? > counted).then_some(())) },
    )
    .await?;
    ix.stop()?;
    Ok(())
}
