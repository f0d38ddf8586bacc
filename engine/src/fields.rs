//! Facet counts and sorting over filter fields: tantivy collectors reading the typed fast
//! fields of committed segments, and the same keys computed from fresh documents' values, so
//! both tiers merge into one answer.

use std::collections::HashMap;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, StrColumn};
use tantivy::{DocAddress, DocId, Score, SegmentOrdinal, SegmentReader};

use crate::filter::{FilterField, FilterKind, FilterValue};

/// A filter field's value as a facet bucket or sort key. Ordered within one kind (floats by
/// total order; text by bytes, as tantivy orders terms).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Int(i64),
    /// `f64` bits mapped so that integer order is the float total order.
    Float(i64),
    Bool(bool),
    Text(String),
    /// Microseconds since the epoch, UTC.
    Time(i64),
}

impl Key {
    pub fn float(x: f64) -> Key {
        let b = x.to_bits() as i64;
        Key::Float(b ^ ((((b >> 63) as u64) >> 1) as i64))
    }

    pub fn of(v: &FilterValue) -> Key {
        match v {
            FilterValue::Int(i) => Key::Int(*i),
            FilterValue::Float(x) => Key::float(*x),
            FilterValue::Bool(b) => Key::Bool(*b),
            FilterValue::Text(s) => Key::Text(s.clone()),
            FilterValue::Time(t) => Key::Time(*t),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Key::Int(i) => (*i).into(),
            Key::Float(k) => {
                let b = *k ^ ((((*k >> 63) as u64) >> 1) as i64);
                f64::from_bits(b as u64).into()
            }
            Key::Bool(b) => (*b).into(),
            Key::Text(s) => s.clone().into(),
            Key::Time(t) => crate::filter::format_time(*t).into(),
        }
    }
}

/// One segment's fast-field column of a filter field.
pub(crate) enum SegmentColumn {
    Int(Column<i64>),
    Time(Column<i64>),
    Float(Column<f64>),
    Bool(Column<bool>),
    Text(Option<StrColumn>),
}

impl SegmentColumn {
    pub(crate) fn open(segment: &SegmentReader, f: &FilterField) -> tantivy::Result<SegmentColumn> {
        let ff = segment.fast_fields();
        let name = format!("f_{}", f.name);
        Ok(match f.kind {
            FilterKind::Int => SegmentColumn::Int(ff.i64(&name)?),
            FilterKind::Float => SegmentColumn::Float(ff.f64(&name)?),
            FilterKind::Bool => SegmentColumn::Bool(ff.bool(&name)?),
            FilterKind::Text => SegmentColumn::Text(ff.str(&name)?),
            FilterKind::Time => SegmentColumn::Time(ff.i64(&name)?),
        })
    }

    /// A numeric field's value as a number (None for other kinds, or no value).
    pub(crate) fn number(&self, doc: DocId) -> Option<f64> {
        match self {
            SegmentColumn::Int(c) => c.first(doc).map(|v| v as f64),
            SegmentColumn::Float(c) => c.first(doc),
            _ => None,
        }
    }

    fn key(&self, doc: DocId) -> Option<Key> {
        match self {
            SegmentColumn::Int(c) => c.first(doc).map(Key::Int),
            SegmentColumn::Time(c) => c.first(doc).map(Key::Time),
            SegmentColumn::Float(c) => c.first(doc).map(Key::float),
            SegmentColumn::Bool(c) => c.first(doc).map(Key::Bool),
            SegmentColumn::Text(c) => {
                let c = c.as_ref()?;
                let ord = c.term_ords(doc).next()?;
                let mut s = String::new();
                c.ord_to_str(ord, &mut s).ok()?;
                Some(Key::Text(s))
            }
        }
    }
}

/// Counts the values of some filter fields over the matching documents.
pub struct FacetCollector {
    pub fields: Vec<FilterField>,
}

pub type FacetCounts = Vec<HashMap<Key, u64>>;

pub struct FacetSegment {
    columns: Vec<SegmentColumn>,
    /// Text columns count by term ordinal (resolved to strings once, at harvest).
    by_ord: Vec<HashMap<u64, u64>>,
    counts: FacetCounts,
}

impl Collector for FacetCollector {
    type Fruit = FacetCounts;
    type Child = FacetSegment;

    fn for_segment(
        &self,
        _: SegmentOrdinal,
        segment: &SegmentReader,
    ) -> tantivy::Result<FacetSegment> {
        Ok(FacetSegment {
            columns: self
                .fields
                .iter()
                .map(|f| SegmentColumn::open(segment, f))
                .collect::<tantivy::Result<_>>()?,
            by_ord: vec![HashMap::new(); self.fields.len()],
            counts: vec![HashMap::new(); self.fields.len()],
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<FacetCounts>) -> tantivy::Result<FacetCounts> {
        let mut total: FacetCounts = vec![HashMap::new(); self.fields.len()];
        for fruit in fruits {
            add_counts(&mut total, fruit);
        }
        Ok(total)
    }
}

/// Adds `more` into `into`, field by field.
pub fn add_counts(into: &mut FacetCounts, more: FacetCounts) {
    for (t, m) in into.iter_mut().zip(more) {
        for (k, n) in m {
            *t.entry(k).or_default() += n;
        }
    }
}

impl SegmentCollector for FacetSegment {
    type Fruit = FacetCounts;

    fn collect(&mut self, doc: DocId, _: Score) {
        for (i, c) in self.columns.iter().enumerate() {
            match c {
                SegmentColumn::Text(Some(s)) => {
                    if let Some(ord) = s.term_ords(doc).next() {
                        *self.by_ord[i].entry(ord).or_default() += 1;
                    }
                }
                SegmentColumn::Text(None) => {}
                other => {
                    if let Some(k) = other.key(doc) {
                        *self.counts[i].entry(k).or_default() += 1;
                    }
                }
            }
        }
    }

    fn harvest(mut self) -> FacetCounts {
        for (i, c) in self.columns.iter().enumerate() {
            if let SegmentColumn::Text(Some(s)) = c {
                for (&ord, &n) in &self.by_ord[i] {
                    let mut text = String::new();
                    if s.ord_to_str(ord, &mut text).unwrap_or(false) {
                        *self.counts[i].entry(Key::Text(text)).or_default() += n;
                    }
                }
            }
        }
        self.counts
    }
}

/// The `size` most frequent values of each field, most frequent first (ties by value).
pub fn top_values(counts: &HashMap<Key, u64>, size: usize) -> Vec<(Key, u64)> {
    let mut v: Vec<(Key, u64)> = counts.iter().map(|(k, n)| (k.clone(), *n)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(size);
    v
}

/// The first `limit` matching documents ordered by a filter field (documents without a value
/// last, in either direction); ties are broken later by document key.
pub struct SortCollector {
    pub field: FilterField,
    pub descending: bool,
    pub limit: usize,
}

pub struct SortSegment {
    column: SegmentColumn,
    segment: SegmentOrdinal,
    descending: bool,
    limit: usize,
    found: Vec<(Option<Key>, DocId)>,
    /// Prune when `found` reaches this (grows when many documents tie at the edge).
    next_prune: usize,
}

/// Sort order of two optional keys: values first (ascending or descending), missing last.
pub fn compare(a: &Option<Key>, b: &Option<Key>, descending: bool) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Some(x), Some(y)) => {
            if descending {
                y.cmp(x)
            } else {
                x.cmp(y)
            }
        }
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

impl SortSegment {
    fn prune(&mut self) {
        let d = self.descending;
        // Keep every document tied with the last kept one: the key tie-break comes later.
        self.found
            .sort_unstable_by(|a, b| compare(&a.0, &b.0, d).then(a.1.cmp(&b.1)));
        if self.found.len() > self.limit {
            let edge = self.found[self.limit - 1].0.clone();
            let keep = self.limit
                + self.found[self.limit..]
                    .iter()
                    .take_while(|(k, _)| *k == edge)
                    .count();
            self.found.truncate(keep);
        }
        self.next_prune = (4 * self.limit + 64).max(2 * self.found.len());
    }
}

impl Collector for SortCollector {
    type Fruit = Vec<(Option<Key>, DocAddress)>;
    type Child = SortSegment;

    fn for_segment(
        &self,
        ord: SegmentOrdinal,
        segment: &SegmentReader,
    ) -> tantivy::Result<SortSegment> {
        Ok(SortSegment {
            column: SegmentColumn::open(segment, &self.field)?,
            segment: ord,
            descending: self.descending,
            limit: self.limit.max(1),
            found: Vec::new(),
            next_prune: 4 * self.limit.max(1) + 64,
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(
        &self,
        fruits: Vec<Vec<(Option<Key>, DocAddress)>>,
    ) -> tantivy::Result<Vec<(Option<Key>, DocAddress)>> {
        Ok(fruits.into_iter().flatten().collect())
    }
}

impl SegmentCollector for SortSegment {
    type Fruit = Vec<(Option<Key>, DocAddress)>;

    fn collect(&mut self, doc: DocId, _: Score) {
        let key = self.column.key(doc);
        self.found.push((key, doc));
        if self.found.len() >= self.next_prune {
            self.prune();
        }
    }

    fn harvest(mut self) -> Self::Fruit {
        self.prune();
        let segment = self.segment;
        self.found
            .into_iter()
            .map(|(k, doc)| (k, DocAddress::new(segment, doc)))
            .collect()
    }
}

/// The best `limit` documents of each segment by score, ties broken by key (ascending: a
/// segment's key ordinals follow the keys' byte order). tantivy's `TopDocs` breaks ties by
/// document address, so which tied documents made the cut would depend on the page depth, and
/// consecutive pages could repeat or skip documents; the caller merges segments, partitions
/// and the fresh layer by (score, key) too, so every depth agrees.
pub struct TopByScore {
    pub limit: usize,
}

pub struct TopByScoreSegment {
    keys: Option<StrColumn>,
    segment: SegmentOrdinal,
    limit: usize,
    found: Vec<(Score, u64, DocId)>,
    next_prune: usize,
    /// Once `limit` are kept, a lower score cannot enter.
    floor: Option<Score>,
}

impl TopByScoreSegment {
    fn prune(&mut self) {
        self.found
            .sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        self.found.truncate(self.limit);
        if self.found.len() == self.limit {
            self.floor = self.found.last().map(|f| f.0);
        }
        self.next_prune = 2 * self.limit + 64;
    }
}

impl Collector for TopByScore {
    type Fruit = Vec<(Score, DocAddress)>;
    type Child = TopByScoreSegment;

    fn for_segment(
        &self,
        ord: SegmentOrdinal,
        segment: &SegmentReader,
    ) -> tantivy::Result<TopByScoreSegment> {
        let limit = self.limit.max(1);
        Ok(TopByScoreSegment {
            keys: segment.fast_fields().str(crate::rows::KEY_FIELD)?,
            segment: ord,
            limit,
            found: Vec::new(),
            next_prune: 2 * limit + 64,
            floor: None,
        })
    }

    fn requires_scoring(&self) -> bool {
        true
    }

    fn merge_fruits(
        &self,
        fruits: Vec<Vec<(Score, DocAddress)>>,
    ) -> tantivy::Result<Vec<(Score, DocAddress)>> {
        Ok(fruits.into_iter().flatten().collect())
    }
}

impl SegmentCollector for TopByScoreSegment {
    type Fruit = Vec<(Score, DocAddress)>;

    fn collect(&mut self, doc: DocId, score: Score) {
        if self.floor.is_some_and(|f| score < f) {
            return;
        }
        let ord = self
            .keys
            .as_ref()
            .and_then(|k| k.term_ords(doc).next())
            .unwrap_or(u64::MAX);
        self.found.push((score, ord, doc));
        if self.found.len() >= self.next_prune {
            self.prune();
        }
    }

    fn harvest(mut self) -> Self::Fruit {
        self.prune();
        let segment = self.segment;
        self.found
            .into_iter()
            .map(|(score, _, doc)| (score, DocAddress::new(segment, doc)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_keys_order_totally() {
        let xs = [-1e9, -2.5, -0.0, 0.0, 1e-9, 3.0, 1e300];
        for w in xs.windows(2) {
            assert!(Key::float(w[0]) < Key::float(w[1]), "{} < {}", w[0], w[1]);
        }
        for x in xs {
            assert_eq!(Key::float(x).to_json(), serde_json::json!(x));
        }
    }

    #[test]
    fn missing_values_sort_last_both_ways() {
        let (a, b) = (Some(Key::Int(1)), None);
        assert!(compare(&a, &b, false).is_lt());
        assert!(compare(&a, &b, true).is_lt());
        assert!(compare(&Some(Key::Int(1)), &Some(Key::Int(2)), true).is_gt());
    }
}
