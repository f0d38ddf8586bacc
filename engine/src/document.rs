//! From a row's column values (text form, as pgoutput and COPY both render them; the vector
//! column's value may come as floats instead) to the document a partition stores: key,
//! region, parsed geo point and vector, and which fields were rejected. The same function
//! serves the snapshot, the stream and `verify`, so the three can never disagree about what
//! a row becomes.
//!
//! A vector is kept once, as floats: a document's text cells never hold an indexed vector's
//! text (the cell is `None`, the value is `Document::vector`), so neither the stored row nor
//! the content hash depends on how Postgres printed the floats, and the snapshot can read
//! them in binary.

use crate::schema::is_region_name;
use crate::schema::{GeoSpec, ResolvedIndex, VectorType};

/// Column values aligned with `ResolvedIndex::columns`; `None` is SQL NULL.
pub type RawRow = Vec<Option<String>>;

/// A row's values: text cells, and the vector column's value as floats when it is known as
/// floats (read in binary by the snapshot, or stored): that column's cell is then `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    pub raw: RawRow,
    pub vector: Option<Vec<f32>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub key: String,
    pub region: String,
    /// The row's text cells; the vector column's is `None` when `vector` holds its value (a
    /// rejected vector keeps its text here, so the stored row still shows it).
    pub raw: RawRow,
    /// (latitude, longitude) in degrees, when configured and valid.
    pub geo: Option<(f64, f64)>,
    pub vector: Option<Vec<f32>>,
    /// Per `ResolvedIndex::text` entry: whether its value is indexed.
    pub text_ok: Vec<bool>,
    /// Per `ResolvedIndex::filters` entry: its typed value (None when NULL or unparsable).
    pub filters: Vec<Option<crate::filter::FilterValue>>,
}

/// A row or field that could not be indexed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub index: String,
    pub key: String,
    pub field: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Mapped {
    /// Index this document; the rejections name fields left out of it.
    Doc(Document, Vec<Rejection>),
    /// The row belongs in no partition of this shard: a rejection when the row is bad
    /// (no key, no region), none when its region is simply owned by another shard.
    Skip(Option<Rejection>),
}

#[derive(Debug, Clone, Default)]
pub struct MapLimits {
    pub max_text_bytes: usize,
    /// Regions this shard owns; empty means all.
    pub owned_regions: Vec<String>,
}

/// The document key: the primary key's text, or a JSON array of texts for a composite key.
pub fn row_key(ix: &ResolvedIndex, raw: &RawRow) -> Option<String> {
    if let [single] = ix.pk.as_slice() {
        return raw[*single].clone();
    }
    let mut parts = Vec::with_capacity(ix.pk.len());
    for &p in &ix.pk {
        parts.push(serde_json::Value::String(raw[p].clone()?));
    }
    Some(serde_json::Value::Array(parts).to_string())
}

pub fn map_row(ix: &ResolvedIndex, raw: RawRow, limits: &MapLimits) -> Mapped {
    map(ix, Row { raw, vector: None }, limits)
}

/// As [`map_row`], for a row whose vector may come as floats.
pub fn map(ix: &ResolvedIndex, row: Row, limits: &MapLimits) -> Mapped {
    let Row { mut raw, vector } = row;
    let reject = |key: &str, field: &str, reason: String| Rejection {
        index: ix.name.clone(),
        key: key.to_owned(),
        field: field.to_owned(),
        reason,
    };
    let Some(key) = row_key(ix, &raw) else {
        return Mapped::Skip(Some(reject(
            "",
            "primary_key",
            "primary key is null".into(),
        )));
    };
    let region_col = ix.column_name(ix.region);
    let region = match &raw[ix.region] {
        None => return Mapped::Skip(Some(reject(&key, region_col, "region is null".into()))),
        Some(r) if !is_region_name(r) => {
            return Mapped::Skip(Some(reject(
                &key,
                region_col,
                format!("region {r:?} is not a valid region name ([A-Za-z0-9_-]{{1,64}})"),
            )))
        }
        Some(r) => r.clone(),
    };
    if !limits.owned_regions.is_empty() && !limits.owned_regions.contains(&region) {
        return Mapped::Skip(None);
    }

    let mut rejections = Vec::new();
    let mut text_ok = Vec::with_capacity(ix.text.len());
    for t in &ix.text {
        let ok = match &raw[t.column] {
            Some(v) if v.len() > limits.max_text_bytes => {
                rejections.push(reject(
                    &key,
                    ix.column_name(t.column),
                    format!(
                        "text is {} bytes, over the limit of {}",
                        v.len(),
                        limits.max_text_bytes
                    ),
                ));
                false
            }
            Some(_) => true,
            None => false,
        };
        text_ok.push(ok);
    }

    let geo = match ix.geo {
        None => None,
        Some(spec) => match parse_geo(spec, &raw) {
            Ok(g) => g,
            Err((col, reason)) => {
                rejections.push(reject(&key, ix.column_name(col), reason));
                None
            }
        },
    };

    let vector = match ix.vector {
        None => None,
        Some(spec) => {
            let value = match (vector, &raw[spec.column]) {
                (Some(v), _) => Some(Ok(v)),
                (None, Some(text)) => Some(parse_floats(text, spec.sql_type)),
                (None, None) => None,
            };
            let usable = |v: &[f32]| {
                check_vector(v, spec.dimension)?;
                if spec.metric == crate::schema::Metric::Cosine && v.iter().all(|x| *x == 0.0) {
                    return Err("zero vector has no direction (cosine)".to_owned());
                }
                Ok(())
            };
            match value {
                None => None,
                // Not an array of numbers: the text stays as it came.
                Some(Err(reason)) => {
                    rejections.push(reject(&key, ix.column_name(spec.column), reason));
                    None
                }
                Some(Ok(v)) => match usable(&v) {
                    Ok(()) => {
                        raw[spec.column] = None;
                        Some(v)
                    }
                    // Kept as text, printed from the floats: the same whether they came as
                    // text or in binary.
                    Err(reason) => {
                        rejections.push(reject(&key, ix.column_name(spec.column), reason));
                        raw[spec.column] = Some(render_vector(&v, spec.sql_type));
                        None
                    }
                },
            }
        }
    };

    let filters = ix
        .filters
        .iter()
        .map(|f| match &raw[f.column] {
            None => None,
            Some(text) => match f.kind.parse(text) {
                Ok(v) => Some(v),
                Err(reason) => {
                    rejections.push(reject(&key, ix.column_name(f.column), reason));
                    None
                }
            },
        })
        .collect();

    Mapped::Doc(
        Document {
            key,
            region,
            raw,
            geo,
            vector,
            text_ok,
            filters,
        },
        rejections,
    )
}

fn parse_geo(spec: GeoSpec, raw: &RawRow) -> Result<Option<(f64, f64)>, (usize, String)> {
    let (lat, lon) = match spec {
        GeoSpec::LatLon { lat, lon } => {
            let (Some(lat_text), Some(lon_text)) = (&raw[lat], &raw[lon]) else {
                return Ok(None);
            };
            let la = parse_float(lat_text)
                .ok_or((lat, format!("latitude {lat_text:?} is not a number")))?;
            let lo = parse_float(lon_text)
                .ok_or((lon, format!("longitude {lon_text:?} is not a number")))?;
            check_lat_lon(la, lo).map_err(|e| (if e.starts_with("lat") { lat } else { lon }, e))?;
            (la, lo)
        }
        GeoSpec::Point(col) => {
            let Some(text) = &raw[col] else {
                return Ok(None);
            };
            let inner = text
                .trim()
                .strip_prefix('(')
                .and_then(|s| s.strip_suffix(')'))
                .ok_or((col, format!("point {text:?} is not (x,y)")))?;
            let (x, y) = inner
                .split_once(',')
                .ok_or((col, format!("point {text:?} is not (x,y)")))?;
            let lo = parse_float(x).ok_or((col, format!("point x {x:?} is not a number")))?;
            let la = parse_float(y).ok_or((col, format!("point y {y:?} is not a number")))?;
            check_lat_lon(la, lo).map_err(|e| (col, e))?;
            (la, lo)
        }
    };
    Ok(Some((lat, lon)))
}

fn parse_float(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok()
}

fn check_lat_lon(lat: f64, lon: f64) -> Result<(), String> {
    if !(-90.0..=90.0).contains(&lat) {
        return Err(format!("latitude {lat} is outside [-90, 90]"));
    }
    if !(-180.0..=180.0).contains(&lon) {
        return Err(format!("longitude {lon} is outside [-180, 180]"));
    }
    Ok(())
}

/// Parses `real[]` text (`{1,2}`) or pgvector text (`[1,2]`) into finite floats of `dimension`.
pub fn parse_vector(text: &str, dimension: usize) -> Result<Vec<f32>, String> {
    let v = parse_floats(text, VectorType::Real)?;
    check_vector(&v, dimension)?;
    Ok(v)
}

/// Parses a flat array literal of numbers (`{1,2}` or `[1,2]`), any length, any values, as
/// the column's type holds them: `double precision` values are read as f64 and then rounded
/// to f32, exactly as a value read in binary is.
fn parse_floats(text: &str, ty: VectorType) -> Result<Vec<f32>, String> {
    let t = text.trim();
    let inner = t
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .or_else(|| t.strip_prefix('[').and_then(|s| s.strip_suffix(']')))
        .ok_or_else(|| "vector is not an array literal".to_owned())?;
    if inner.contains('{') {
        return Err("vector is a nested array".into());
    }
    let mut out = Vec::new();
    if !inner.trim().is_empty() {
        for (i, part) in inner.split(',').enumerate() {
            let part = part.trim();
            let v = match ty {
                VectorType::Double => part.parse::<f64>().map(|x| x as f32),
                VectorType::Real | VectorType::Pgvector => part.parse::<f32>(),
            };
            out.push(v.map_err(|_| format!("vector element {i} ({part:?}) is not a number"))?);
        }
    }
    Ok(out)
}

/// Whether floats make a vector of `dimension`: that many, every one finite.
pub fn check_vector(v: &[f32], dimension: usize) -> Result<(), String> {
    if let Some((i, x)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        return Err(format!("vector element {i} is {x}"));
    }
    if v.len() != dimension {
        return Err(format!(
            "vector has {} dimensions, expected {dimension}",
            v.len()
        ));
    }
    Ok(())
}

/// A vector as text in its column type's form (`{1,0.5}` for arrays, `[1,0.5]` for
/// pgvector), each float in its shortest form that reads back as the same value.
pub fn render_vector(v: &[f32], ty: VectorType) -> String {
    use std::fmt::Write;
    let (open, close) = match ty {
        VectorType::Real | VectorType::Double => ('{', '}'),
        VectorType::Pgvector => ('[', ']'),
    };
    let mut out = String::with_capacity(v.len() * 12 + 2);
    out.push(open);
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write!(out, "{x}").expect("writing to a String");
    }
    out.push(close);
    out
}

/// Content hash of a document as stored: region, every configured column's text, and the
/// vector's floats. `verify` computes it from the table, the partition from its stored copy.
pub fn content_hash(region: &str, raw: &RawRow, vector: Option<&[f32]>) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(region.as_bytes());
    h.update(&[0xff]);
    for v in raw {
        match v {
            None => h.update(&[0]),
            Some(s) => {
                h.update(&[1]);
                h.update(&(s.len() as u64).to_le_bytes());
                h.update(s.as_bytes());
            }
        }
    }
    if let Some(v) = vector {
        h.update(&[2]);
        h.update(&(v.len() as u64).to_le_bytes());
        for x in v {
            h.update(&x.to_le_bytes());
        }
    }
    h.digest()
}

impl Document {
    /// See [`content_hash`].
    pub fn content_hash(&self) -> u64 {
        content_hash(&self.region, &self.raw, self.vector.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn places() -> ResolvedIndex {
        crate::schema::test_index(
            &["id", "region", "body", "lat", "lon", "embedding"],
            Some(2),
            Some((3, 4)),
            Some((5, 3)),
        )
    }

    fn row(vals: [Option<&str>; 6]) -> RawRow {
        vals.iter().map(|v| v.map(String::from)).collect()
    }

    fn limits() -> MapLimits {
        MapLimits {
            max_text_bytes: 100,
            owned_regions: vec![],
        }
    }

    #[test]
    fn maps_a_good_row() {
        let r = row([
            Some("7"),
            Some("europe"),
            Some("Paris"),
            Some("48.85"),
            Some("2.35"),
            Some("{1,0,0}"),
        ]);
        let Mapped::Doc(d, rej) = map_row(&places(), r, &limits()) else {
            panic!()
        };
        assert!(rej.is_empty());
        assert_eq!((d.key.as_str(), d.region.as_str()), ("7", "europe"));
        assert_eq!(d.geo, Some((48.85, 2.35)));
        assert_eq!(d.vector, Some(vec![1.0, 0.0, 0.0]));
        assert_eq!(d.text_ok, vec![true]);
    }

    #[test]
    fn bad_fields_are_dropped_and_named() {
        let r = row([
            Some("8"),
            Some("asia"),
            Some(&"x".repeat(101)),
            Some("200"),
            Some("0"),
            Some("{1,NaN,0}"),
        ]);
        let Mapped::Doc(d, rej) = map_row(&places(), r, &limits()) else {
            panic!()
        };
        let fields: Vec<&str> = rej.iter().map(|r| r.field.as_str()).collect();
        assert_eq!(fields, ["body", "lat", "embedding"]);
        assert!(rej.iter().all(|r| r.key == "8"));
        assert_eq!((d.geo, d.vector, d.text_ok), (None, None, vec![false]));
    }

    #[test]
    fn wrong_dimension_is_rejected() {
        assert!(parse_vector("{1,2}", 3)
            .unwrap_err()
            .contains("2 dimensions"));
        assert_eq!(
            parse_vector("[1, 2.5, -3]", 3).unwrap(),
            vec![1.0, 2.5, -3.0]
        );
        assert!(parse_vector("{1,Infinity,2}", 3).is_err());
        assert!(parse_vector("{{1},{2},{3}}", 3).is_err());
    }

    #[test]
    fn rows_without_region_are_skipped_with_a_reason() {
        let r = row([Some("9"), None, None, None, None, None]);
        let Mapped::Skip(Some(rej)) = map_row(&places(), r, &limits()) else {
            panic!()
        };
        assert_eq!((rej.key.as_str(), rej.field.as_str()), ("9", "region"));
        let r = row([Some("9"), Some("../etc"), None, None, None, None]);
        assert!(matches!(
            map_row(&places(), r, &limits()),
            Mapped::Skip(Some(_))
        ));
    }

    #[test]
    fn foreign_regions_are_skipped_silently() {
        let l = MapLimits {
            owned_regions: vec!["europe".into()],
            ..limits()
        };
        let r = row([Some("1"), Some("asia"), None, None, None, None]);
        assert_eq!(map_row(&places(), r, &l), Mapped::Skip(None));
    }

    #[test]
    fn point_columns_are_x_lon_y_lat() {
        let mut ix = places();
        ix.geo = Some(GeoSpec::Point(3));
        let r = row([
            Some("1"),
            Some("europe"),
            None,
            Some("(2.35,48.85)"),
            None,
            None,
        ]);
        let Mapped::Doc(d, _) = map_row(&ix, r, &limits()) else {
            panic!()
        };
        assert_eq!(d.geo, Some((48.85, 2.35)));
    }

    #[test]
    fn hash_distinguishes_null_from_empty_and_region() {
        let a = content_hash("eu", &vec![Some(String::new())], None);
        let b = content_hash("eu", &vec![None], None);
        let c = content_hash("as", &vec![Some(String::new())], None);
        let d = content_hash("eu", &vec![None], Some(&[]));
        let e = content_hash("eu", &vec![None], Some(&[0.0]));
        let f = content_hash("eu", &vec![None], Some(&[-0.0]));
        let all = [a, b, c, d, e, f];
        for (i, x) in all.iter().enumerate() {
            assert!(all[i + 1..].iter().all(|y| y != x), "hash {i} repeats");
        }
    }

    #[test]
    fn a_vector_is_the_same_document_from_text_or_floats() {
        let text = row([
            Some("7"),
            Some("europe"),
            None,
            None,
            None,
            Some("{0.1, -2.5e-7,3}"),
        ]);
        let floats = Row {
            raw: row([Some("7"), Some("europe"), None, None, None, None]),
            vector: Some(vec![0.1, -2.5e-7, 3.0]),
        };
        let (Mapped::Doc(a, _), Mapped::Doc(b, _)) = (
            map_row(&places(), text, &limits()),
            map(&places(), floats, &limits()),
        ) else {
            panic!()
        };
        assert_eq!(a, b);
        assert_eq!(a.raw[5], None, "an indexed vector's text is not kept");
        assert_eq!(a.content_hash(), b.content_hash());
    }

    #[test]
    fn a_rejected_vector_keeps_its_value_as_text() {
        for v in [
            vec![1.0, 2.0],
            vec![0.0, 0.0, 0.0],
            vec![1.0, f32::NAN, 0.0],
        ] {
            let floats = Row {
                raw: row([Some("7"), Some("europe"), None, None, None, None]),
                vector: Some(v.clone()),
            };
            let Mapped::Doc(d, rej) = map(&places(), floats, &limits()) else {
                panic!()
            };
            assert_eq!(rej.len(), 1, "{v:?}");
            assert_eq!(d.vector, None);
            let text = d.raw[5].clone().expect("kept as text");
            // The text reads back as the same rejection.
            let Mapped::Doc(again, rej2) = map_row(&places(), d.raw.clone(), &limits()) else {
                panic!()
            };
            assert_eq!((again.raw[5].as_ref(), rej2), (Some(&text), rej));
        }
    }

    #[test]
    fn rendered_vectors_read_back_exactly() {
        let v = [0.1f32, -2.5e-7, 3.0, f32::MIN_POSITIVE, 1e30, -0.0];
        let text = render_vector(&v, VectorType::Real);
        assert_eq!(parse_vector(&text, v.len()).unwrap(), v);
        assert!(render_vector(&v, VectorType::Pgvector).starts_with('['));
    }
}
