//! What the engine is told about each index: the configured table resolved against the
//! catalog (column order, key, region, text, geo, vector, filter and stored columns). Every
//! row the engine handles has its values in `columns` order.

use serde::Deserialize;

/// One configured table, checked against the catalog.
#[derive(Debug, Clone)]
pub struct ResolvedIndex {
    /// Position in the config's index list.
    pub ordinal: usize,
    pub name: String,
    pub schema: String,
    pub table: String,
    /// Every configured column, each once, in a fixed order.
    pub columns: Vec<String>,
    /// Positions (in `columns`) of the primary key.
    pub pk: Vec<usize>,
    pub region: usize,
    pub text: Vec<TextSpec>,
    pub geo: Option<GeoSpec>,
    pub vector: Option<VectorSpec>,
    pub filters: Vec<FilterSpec>,
    pub stored: Vec<usize>,
    /// Per column: how its values read as typed JSON in answers (numbers, booleans, times);
    /// None: as text.
    pub value_kinds: Vec<Option<crate::filter::FilterKind>>,
    /// How text hits are ordered beyond BM25 (none configured: BM25 alone).
    pub ranking: RankingSpec,
}

/// Ranking rules for text hits, as configured (`ranking` in the index config).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RankingSpec {
    /// Position in `text` of the field whose full match ranks first: a document holding
    /// every query word in it (a prefix or typo alternative counting) outranks any document
    /// matching otherwise.
    pub name_field: Option<usize>,
    /// Position in `filters` of a numeric field that adds `weight × log10(1 + value)` to the
    /// text score (values ≤ 0 or missing add nothing).
    pub popularity: Option<usize>,
    pub weight: f32,
}

#[derive(Debug, Clone, Copy)]
pub struct FilterSpec {
    pub column: usize,
    pub kind: crate::filter::FilterKind,
}

#[derive(Debug, Clone)]
pub struct TextSpec {
    pub column: usize,
    pub boost: f32,
    pub language: Option<String>,
}

#[derive(Debug, Clone, Copy)]
pub enum GeoSpec {
    LatLon {
        lat: usize,
        lon: usize,
    },
    /// Postgres `point`: x is longitude, y latitude.
    Point(usize),
}

#[derive(Debug, Clone, Copy)]
pub struct VectorSpec {
    pub column: usize,
    pub dimension: usize,
    pub metric: Metric,
    /// The column's SQL type: how the snapshot reads it in binary, how answers print it.
    pub sql_type: VectorType,
}

/// The SQL types a vector column may have.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum VectorType {
    /// `real[]`
    #[default]
    Real,
    /// `double precision[]`
    Double,
    /// pgvector's `vector`
    Pgvector,
}

impl ResolvedIndex {
    pub fn column_name(&self, position: usize) -> &str {
        &self.columns[position]
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    #[default]
    Cosine,
    L2,
    Dot,
}

/// Region and index names become directory names: keep them boring.
pub fn is_region_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A resolved index for tests: key column 0, region column 1, cosine vectors.
pub fn test_index(
    columns: &[&str],
    text: Option<usize>,
    geo: Option<(usize, usize)>,
    vector: Option<(usize, usize)>,
) -> ResolvedIndex {
    ResolvedIndex {
        ordinal: 0,
        name: "places".into(),
        schema: "public".into(),
        table: "places".into(),
        columns: columns.iter().map(|c| c.to_string()).collect(),
        pk: vec![0],
        region: 1,
        text: text
            .map(|column| TextSpec {
                column,
                boost: 1.0,
                language: None,
            })
            .into_iter()
            .collect(),
        geo: geo.map(|(lat, lon)| GeoSpec::LatLon { lat, lon }),
        vector: vector.map(|(column, dimension)| VectorSpec {
            column,
            dimension,
            metric: Metric::Cosine,
            sql_type: VectorType::Real,
        }),
        filters: vec![],
        stored: vec![],
        value_kinds: vec![None; columns.len()],
        ranking: RankingSpec::default(),
    }
}
