//! Validates a shard search request and decides how to answer it: which engine searches,
//! with which filters, sort and facets. Errors name the request field (422).

use engine::partition::Fields;
use serde_json::Value;

use crate::catalog::ResolvedIndex;
use wire::{FieldError, MAX_FACET_SIZE, MAX_HITS, MAX_K};
use wire::{GeoRequest, HybridRequest, SortOrder};

fn check_lat(field: &'static str, v: f64) -> Result<f64, FieldError> {
    if v.is_finite() && (-90.0..=90.0).contains(&v) {
        Ok(v)
    } else {
        Err(FieldError::new(
            field,
            "latitude must be a number in [-90, 90]",
        ))
    }
}

fn check_lon(field: &'static str, v: f64) -> Result<f64, FieldError> {
    if v.is_finite() && (-180.0..=180.0).contains(&v) {
        Ok(v)
    } else {
        Err(FieldError::new(
            field,
            "longitude must be a number in [-180, 180]",
        ))
    }
}

/// Checks a geo part's ranges (the types were checked by parsing).
fn validate_geo(g: GeoRequest) -> Result<engine::search::GeoQuery, FieldError> {
    use engine::search::GeoQuery;
    Ok(match g {
        GeoRequest::Within { lat, lon, radius_m } => {
            if !(radius_m.is_finite() && radius_m >= 0.0) {
                return Err(FieldError::new(
                    "geo.within.radius_m",
                    "radius must be a number >= 0 (metres)",
                ));
            }
            GeoQuery::Within {
                lat: check_lat("geo.within.lat", lat)?,
                lon: check_lon("geo.within.lon", lon)?,
                radius_m,
            }
        }
        GeoRequest::Bbox {
            south,
            west,
            north,
            east,
        } => {
            let b = engine::geo::BBox {
                south: check_lat("geo.bbox.south", south)?,
                west: check_lon("geo.bbox.west", west)?,
                north: check_lat("geo.bbox.north", north)?,
                east: check_lon("geo.bbox.east", east)?,
            };
            if b.south > b.north {
                return Err(FieldError::new(
                    "geo.bbox.south",
                    "south must not be north of north",
                ));
            }
            GeoQuery::BBox(b)
        }
        GeoRequest::Nearest { lat, lon, k } => {
            if k == 0 || k > MAX_HITS {
                return Err(FieldError::new(
                    "geo.nearest.k",
                    format!("k must be in 1..={MAX_HITS}"),
                ));
            }
            GeoQuery::Nearest {
                lat: check_lat("geo.nearest.lat", lat)?,
                lon: check_lon("geo.nearest.lon", lon)?,
                k,
            }
        }
    })
}

/// What a search request asks the engines for.
// One per request, built once and moved once: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Planned {
    Geo(engine::search::GeoQuery, Option<engine::filter::Filter>),
    Vector(engine::search::VectorQuery),
    Text(engine::search::TextSearch),
    Hybrid(
        engine::search::TextSearch,
        engine::search::VectorQuery,
        engine::search::Fusion,
    ),
}

/// A geo part beside a text or vector query filters it: within a radius or a box.
fn geo_filter(
    ix: &ResolvedIndex,
    geo: Option<GeoRequest>,
    what: &str,
) -> Result<Option<engine::search::GeoQuery>, FieldError> {
    let Some(g) = geo else { return Ok(None) };
    if ix.geo.is_none() {
        return Err(FieldError::new(
            "geo",
            format!("index {:?} has no geo field", ix.name),
        ));
    }
    match validate_geo(g)? {
        engine::search::GeoQuery::Nearest { .. } => Err(FieldError::new(
            "geo.nearest",
            format!("nearest cannot filter a {what} query: use within or bbox"),
        )),
        q => Ok(Some(q)),
    }
}

/// The query parts of a search request.
pub(super) struct Parts {
    pub text: Option<wire::TextRequest>,
    pub geo: Option<GeoRequest>,
    pub vector: Option<wire::VectorRequest>,
    pub hybrid: Option<HybridRequest>,
    pub filter: Option<Value>,
    pub sort: Option<wire::SortRequest>,
    pub facets: Vec<wire::FacetRequest>,
    /// Count every match (`track_total_hits`).
    pub count: bool,
}

/// The position of a filter field named in `sort` or `facets`.
fn filter_field(fields: &Fields, name: &str, at: &'static str) -> Result<usize, FieldError> {
    fields
        .filters
        .iter()
        .position(|f| f.name == name)
        .ok_or_else(|| {
            let known: Vec<&str> = fields.filters.iter().map(|f| f.name.as_str()).collect();
            FieldError::new(
                at,
                format!(
                    "{name:?} is not a filter field (filter fields: {})",
                    known.join(", ")
                ),
            )
        })
}

/// Validates a request's parts and decides how to answer it: text alone (geo filters it),
/// vector alone (likewise), text and vector fused by RRF, or geo alone.
pub(super) fn plan(
    ix: &ResolvedIndex,
    fields: &Fields,
    parts: Parts,
    limit: usize,
    offset: usize,
) -> Result<Planned, FieldError> {
    let Parts {
        text,
        geo,
        vector,
        hybrid,
        filter,
        sort,
        facets,
        count,
    } = parts;
    let sort = match sort {
        None => None,
        Some(s) => Some(engine::search::SortBy {
            field: filter_field(fields, &s.field, "sort.field")?,
            descending: s.order == SortOrder::Desc,
        }),
    };
    if facets.len() > 16 {
        return Err(FieldError::new("facets", "at most 16 facets"));
    }
    let mut facet_list = Vec::new();
    for f in &facets {
        if f.size == 0 || f.size > MAX_FACET_SIZE {
            return Err(FieldError::new(
                "facets.size",
                format!("size must be in 1..={MAX_FACET_SIZE}"),
            ));
        }
        facet_list.push((filter_field(fields, &f.field, "facets.field")?, f.size));
    }
    let ranked_elsewhere = |what: &str| -> Result<(), FieldError> {
        if sort.is_some() {
            return Err(FieldError::new(
                "sort",
                format!("sort applies to text or filter searches, not {what}"),
            ));
        }
        if !facet_list.is_empty() {
            return Err(FieldError::new(
                "facets",
                format!("facets apply to text or filter searches, not {what}"),
            ));
        }
        Ok(())
    };
    let fields_filter = match &filter {
        None => None,
        Some(v) => Some(
            engine::filter::Filter::parse(v, &fields.filters, "filter")
                .map_err(|e| FieldError::new(e.path, e.message))?,
        ),
    };
    if hybrid.is_some() && (text.is_none() || vector.is_none()) {
        return Err(FieldError::new(
            "hybrid",
            "hybrid fuses a text and a vector query: give both",
        ));
    }
    let text = match text {
        None => None,
        Some(t) => {
            if fields.text.is_empty() {
                return Err(FieldError::new(
                    "text",
                    format!("index {:?} has no text fields", ix.name),
                ));
            }
            let leniency = engine::text::Leniency {
                typo: t.typo == wire::Typo::Auto,
                prefix_last: t.prefix == wire::PrefixMode::Last,
                name_field: fields.ranking.name_field,
            };
            let query =
                engine::text::TextQuery::parse_with(&t.q, t.operator, &fields.text, leniency)
                    .map_err(|e| FieldError::new("text.q", e.0))?;
            Some((query, t.highlight))
        }
    };
    let vector = match vector {
        None => None,
        Some(v) => {
            let Some(spec) = ix.vector else {
                return Err(FieldError::new(
                    "vector",
                    format!("index {:?} has no vector field", ix.name),
                ));
            };
            if v.values.len() != spec.dimension {
                return Err(FieldError::new(
                    "vector.values",
                    format!(
                        "the vector has {} dimensions, index {:?} has {}",
                        v.values.len(),
                        ix.name,
                        spec.dimension
                    ),
                ));
            }
            if v.k == 0 || v.k > MAX_K {
                return Err(FieldError::new(
                    "vector.k",
                    format!("k must be in 1..={MAX_K}"),
                ));
            }
            if v.values.iter().any(|x| !x.is_finite()) {
                return Err(FieldError::new(
                    "vector.values",
                    "values must be finite numbers",
                ));
            }
            if spec.metric == engine::schema::Metric::Cosine && v.values.iter().all(|x| *x == 0.0) {
                return Err(FieldError::new(
                    "vector.values",
                    "an all-zero vector has no direction: cosine similarity to it is undefined",
                ));
            }
            if v.ef.is_some_and(|ef| ef == 0 || ef > 10 * MAX_K) {
                return Err(FieldError::new(
                    "vector.ef",
                    format!("ef must be in 1..={}", 10 * MAX_K),
                ));
            }
            Some(v)
        }
    };
    Ok(match (text, vector) {
        (None, None) => match geo {
            // A filter alone browses the matching documents (score 1, by key).
            None if fields_filter.is_some() => Planned::Text(engine::search::TextSearch {
                query: engine::text::TextQuery::all(&fields.text),
                limit,
                offset,
                filter: None,
                fields_filter,
                highlight: false,
                sort,
                facets: facet_list,
                count,
                rows: true,
                cancel: None,
            }),
            None => {
                return Err(FieldError::new(
                    "text",
                    "a text, geo, vector or filter query is required",
                ))
            }
            Some(g) => {
                if ix.geo.is_none() {
                    return Err(FieldError::new(
                        "geo",
                        format!("index {:?} has no geo field", ix.name),
                    ));
                }
                ranked_elsewhere("geo searches (sorted by distance)")?;
                Planned::Geo(validate_geo(g)?, fields_filter)
            }
        },
        (None, Some(v)) => {
            ranked_elsewhere("vector searches")?;
            Planned::Vector(engine::search::VectorQuery {
                k: v.k.min(offset + limit),
                values: v.values,
                ef: v.ef,
                exact: v.exact,
                filter: geo_filter(ix, geo, "vector")?,
                fields_filter,
                cancel: None,
            })
        }
        (Some((query, highlight)), None) => Planned::Text(engine::search::TextSearch {
            query,
            limit,
            offset,
            filter: geo_filter(ix, geo, "text")?,
            fields_filter,
            highlight,
            sort,
            facets: facet_list,
            count,
            rows: true,
            cancel: None,
        }),
        (Some((query, highlight)), Some(v)) => {
            ranked_elsewhere("hybrid searches")?;
            let h = hybrid.unwrap_or(HybridRequest {
                method: wire::FusionMethod::Rrf,
                k: 60.0,
                weights: wire::Weights::default(),
                window: None,
            });
            if !(h.k.is_finite() && h.k >= 0.0) {
                return Err(FieldError::new("hybrid.k", "k must be a number >= 0"));
            }
            for (field, w) in [
                ("hybrid.weights.text", h.weights.text),
                ("hybrid.weights.vector", h.weights.vector),
            ] {
                if !(w.is_finite() && w >= 0.0) {
                    return Err(FieldError::new(field, "weights must be numbers >= 0"));
                }
            }
            let window = h.window.unwrap_or(100);
            if window == 0 || window > MAX_K {
                return Err(FieldError::new(
                    "hybrid.window",
                    format!("window must be in 1..={MAX_K}"),
                ));
            }
            let filter = geo_filter(ix, geo, "hybrid")?;
            Planned::Hybrid(
                engine::search::TextSearch {
                    query,
                    limit,
                    offset,
                    filter: filter.clone(),
                    fields_filter: fields_filter.clone(),
                    highlight,
                    sort: None,
                    facets: Vec::new(),
                    count: false,
                    rows: true,
                    cancel: None,
                },
                engine::search::VectorQuery {
                    k: v.k,
                    values: v.values,
                    ef: v.ef,
                    exact: v.exact,
                    filter,
                    fields_filter,
                    cancel: None,
                },
                engine::search::Fusion {
                    k: h.k,
                    text_weight: h.weights.text,
                    vector_weight: h.weights.vector,
                    window,
                },
            )
        }
    })
}
