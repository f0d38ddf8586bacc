//! One order across shards: hits merged by the request's order (score, distance or a sort
//! field; ties by key, as every shard breaks them), facet counts summed, and hybrid results
//! fused by reciprocal rank fusion from each branch's global order.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use wire::{BranchRanks, BranchScores, FacetBucket, Hit, SearchRequest};

/// How merged hits are ordered.
pub(crate) enum Order {
    ScoreDesc,
    DistanceAsc,
    Sort { descending: bool },
}

pub(crate) fn order_of(req: &SearchRequest) -> Order {
    if let Some(sort) = &req.sort {
        return Order::Sort {
            descending: sort.order == wire::SortOrder::Desc,
        };
    }
    if req.text.is_none() && req.vector.is_none() && req.geo.is_some() {
        return Order::DistanceAsc;
    }
    Order::ScoreDesc
}

/// Sort values compare as numbers when both are, else as strings; missing values go last.
fn compare_sort_values(x: Option<&Value>, y: Option<&Value>, descending: bool) -> Ordering {
    fn present(v: Option<&Value>) -> Option<&Value> {
        v.filter(|v| !v.is_null())
    }
    match (present(x), present(y)) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => {
            let o = match (x.as_f64(), y.as_f64()) {
                (Some(p), Some(q)) => p.total_cmp(&q),
                _ => x
                    .as_str()
                    .unwrap_or_default()
                    .as_bytes()
                    .cmp(y.as_str().unwrap_or_default().as_bytes()),
            };
            if descending {
                o.reverse()
            } else {
                o
            }
        }
    }
}

pub(crate) fn compare_hits(order: &Order, a: &Hit, b: &Hit) -> Ordering {
    let first = match order {
        Order::ScoreDesc => b
            .score
            .unwrap_or(f64::MIN)
            .total_cmp(&a.score.unwrap_or(f64::MIN)),
        Order::DistanceAsc => a
            .distance_m
            .unwrap_or(f64::MAX)
            .total_cmp(&b.distance_m.unwrap_or(f64::MAX)),
        Order::Sort { descending } => {
            compare_sort_values(a.sort_value.as_ref(), b.sort_value.as_ref(), *descending)
        }
    };
    first.then_with(|| a.key.cmp(&b.key))
}

/// Sums each field's value counts over the shards' answers and keeps the request's `size`
/// most frequent (ties by value).
pub(crate) fn merge_facets<'a>(
    req: &SearchRequest,
    answers: impl IntoIterator<Item = &'a BTreeMap<String, Vec<FacetBucket>>>,
) -> Option<BTreeMap<String, Vec<FacetBucket>>> {
    let mut counts: BTreeMap<String, Vec<(Value, u64)>> = BTreeMap::new();
    for facets in answers {
        for (field, buckets) in facets {
            let e = counts.entry(field.clone()).or_default();
            for b in buckets {
                match e.iter_mut().find(|(v, _)| *v == b.value) {
                    Some((_, c)) => *c += b.count,
                    None => e.push((b.value.clone(), b.count)),
                }
            }
        }
    }
    if counts.is_empty() {
        return None;
    }
    let merged = counts
        .into_iter()
        .map(|(field, mut values)| {
            values.sort_by(|a, b| {
                b.1.cmp(&a.1)
                    .then_with(|| a.0.to_string().cmp(&b.0.to_string()))
            });
            let size = req
                .facets
                .iter()
                .find(|f| f.field == field)
                .map_or(10, |f| f.size);
            values.truncate(size);
            let buckets = values
                .into_iter()
                .map(|(value, count)| FacetBucket { value, count })
                .collect();
            (field, buckets)
        })
        .collect();
    Some(merged)
}

/// Reciprocal rank fusion over several shards: each branch is put in its global order first
/// (text by BM25, vector by similarity) and cut at `window`, then fused exactly as one shard
/// fuses its own; the page `offset..offset + limit` of the fused order.
pub(crate) fn fuse(
    req: &SearchRequest,
    window: usize,
    text: Vec<Hit>,
    vector: Vec<Hit>,
    offset: usize,
    limit: usize,
) -> Vec<Hit> {
    let h = req.hybrid.clone().unwrap_or(wire::HybridRequest {
        method: wire::FusionMethod::Rrf,
        k: 60.0,
        weights: wire::Weights::default(),
        window: None,
    });
    let branch = |mut hits: Vec<Hit>| {
        hits.sort_by(|a, b| compare_hits(&Order::ScoreDesc, a, b));
        hits.truncate(window);
        hits
    };
    let mut fused: Vec<Hit> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for (is_text, hits, weight) in [
        (true, branch(text), h.weights.text),
        (false, branch(vector), h.weights.vector),
    ] {
        for (rank, hit) in hits.into_iter().enumerate() {
            let i = *at.entry(hit.key.clone()).or_insert_with(|| {
                fused.push(Hit {
                    key: hit.key.clone(),
                    region: hit.region.clone(),
                    score: Some(0.0),
                    distance_m: None,
                    fields: hit.fields.clone(),
                    highlights: None,
                    sort_value: None,
                    ranks: Some(BranchRanks {
                        text: None,
                        vector: None,
                    }),
                    branch_scores: Some(BranchScores {
                        text: None,
                        vector: None,
                    }),
                });
                fused.len() - 1
            });
            let f = &mut fused[i];
            f.score = Some(f.score.unwrap_or(0.0) + weight / (h.k + rank as f64 + 1.0));
            let (ranks, scores) = (
                f.ranks.as_mut().expect("set above"),
                f.branch_scores.as_mut().expect("set above"),
            );
            if is_text {
                ranks.text = Some(rank + 1);
                scores.text = hit.score;
            } else {
                ranks.vector = Some(rank + 1);
                scores.vector = hit.score;
            }
            if hit.highlights.is_some() {
                f.highlights = hit.highlights;
            }
        }
    }
    fused.sort_by(|a, b| compare_hits(&Order::ScoreDesc, a, b));
    fused.into_iter().skip(offset).take(limit).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hit(key: &str, score: f64, distance_m: f64, sort_value: Value) -> Hit {
        serde_json::from_value(json!({"key": key, "region": "r", "score": score,
            "distance_m": distance_m, "sort_value": sort_value, "fields": null}))
        .unwrap()
    }

    #[test]
    fn merged_hits_follow_the_request_order() {
        let hits = [
            hit("b", 2.0, 5.0, Value::Null),
            hit("a", 2.0, 9.0, json!(3)),
            hit("c", 7.0, 1.0, json!(1)),
        ];
        let sorted = |o: Order| {
            let mut v = hits.to_vec();
            v.sort_by(|x, y| compare_hits(&o, x, y));
            v.iter().map(|h| h.key.clone()).collect::<Vec<_>>()
        };
        assert_eq!(sorted(Order::ScoreDesc), ["c", "a", "b"]);
        assert_eq!(sorted(Order::DistanceAsc), ["c", "b", "a"]);
        assert_eq!(sorted(Order::Sort { descending: true }), ["a", "c", "b"]);
        assert_eq!(sorted(Order::Sort { descending: false }), ["c", "a", "b"]);
    }

    #[test]
    fn fusion_sums_weighted_reciprocal_ranks() {
        let req: SearchRequest =
            wire::parse(br#"{"q": "x", "hybrid": {"k": 1, "weights": {"text": 2, "vector": 1}}}"#)
                .unwrap();
        let text = vec![
            hit("a", 9.0, 0.0, Value::Null),
            hit("b", 5.0, 0.0, Value::Null),
        ];
        let vector = vec![
            hit("b", 0.9, 0.0, Value::Null),
            hit("c", 0.8, 0.0, Value::Null),
        ];
        let fused = fuse(&req, 10, text, vector, 0, 10);
        let got: Vec<(&str, f64)> = fused
            .iter()
            .map(|h| (h.key.as_str(), h.score.unwrap()))
            .collect();
        // a: 2/(1+1) = 1; b: 2/(1+2) + 1/(1+1) = 1.1667; c: 1/(1+2) = 0.3333
        assert_eq!(got[0].0, "b");
        assert!((got[0].1 - (2.0 / 3.0 + 0.5)).abs() < 1e-12);
        assert_eq!((got[1].0, got[1].1), ("a", 1.0));
        assert!((got[2].1 - 1.0 / 3.0).abs() < 1e-12);
        let b = &fused[0];
        assert_eq!(b.ranks.as_ref().unwrap().text, Some(2));
        assert_eq!(b.ranks.as_ref().unwrap().vector, Some(1));
        assert_eq!(b.branch_scores.as_ref().unwrap().vector, Some(0.9));
    }
}
