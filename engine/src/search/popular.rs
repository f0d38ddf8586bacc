//! Popularity in text ranking (`ranking.popularity`): a numeric field's value adds
//! `weight × log10(1 + value)` to a document's text score, as Elasticsearch's
//! `field_value_factor` with `log1p` summed into the score. Committed segments read the value
//! from the field's column through [`Popular`], a wrapper of the text query; fresh documents
//! add [`bonus`] of their own value. Both give the same score, so a document ranks the same
//! before and after its commit. Block-max WAND does not apply to the wrapped query (its
//! bounds know nothing of the bonus): every match is scored.

use tantivy::query::{EnableScoring, Explanation, Query, Scorer, Weight};
use tantivy::{DocId, DocSet, Score, SegmentReader, Term};

use crate::fields::SegmentColumn;
use crate::filter::{FilterField, FilterValue};

/// What a popularity `value` adds to a text score: nothing for values ≤ 0 (or not finite).
pub fn bonus(value: f64, weight: f32) -> Score {
    if value.is_finite() && value > 0.0 {
        weight * value.ln_1p() as Score / std::f32::consts::LN_10
    } else {
        0.0
    }
}

/// A fresh document's bonus, from its filter value.
pub fn bonus_of(value: Option<&FilterValue>, weight: f32) -> Score {
    match value {
        Some(FilterValue::Int(i)) => bonus(*i as f64, weight),
        Some(FilterValue::Float(f)) => bonus(*f, weight),
        _ => 0.0,
    }
}

/// A text query whose every score gains the popularity bonus of its document.
#[derive(Debug)]
pub struct Popular {
    inner: Box<dyn Query>,
    field: FilterField,
    weight: f32,
}

impl Clone for Popular {
    fn clone(&self) -> Popular {
        Popular {
            inner: self.inner.box_clone(),
            field: self.field.clone(),
            weight: self.weight,
        }
    }
}

impl Popular {
    /// `field` is an integer or float filter field (checked when the config is resolved).
    pub fn new(inner: Box<dyn Query>, field: FilterField, weight: f32) -> Popular {
        Popular {
            inner,
            field,
            weight,
        }
    }
}

impl Query for Popular {
    fn weight(&self, scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(PopularWeight {
            inner: self.inner.weight(scoring)?,
            field: self.field.clone(),
            weight: self.weight,
        }))
    }

    fn query_terms<'a>(&'a self, visitor: &mut dyn FnMut(&'a Term, bool)) {
        self.inner.query_terms(visitor)
    }
}

struct PopularWeight {
    inner: Box<dyn Weight>,
    field: FilterField,
    weight: f32,
}

impl Weight for PopularWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        Ok(Box::new(PopularScorer {
            inner: self.inner.scorer(reader, boost)?,
            values: SegmentColumn::open(reader, &self.field)?,
            weight: self.weight,
        }))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        let mut e = self.inner.explain(reader, doc)?;
        let values = SegmentColumn::open(reader, &self.field)?;
        let value = values.number(doc).unwrap_or(0.0);
        e.add_const("popularity", bonus(value, self.weight));
        Ok(e)
    }
}

struct PopularScorer {
    inner: Box<dyn Scorer>,
    values: SegmentColumn,
    weight: f32,
}

impl DocSet for PopularScorer {
    fn advance(&mut self) -> DocId {
        self.inner.advance()
    }

    fn seek(&mut self, target: DocId) -> DocId {
        self.inner.seek(target)
    }

    fn doc(&self) -> DocId {
        self.inner.doc()
    }

    fn size_hint(&self) -> u32 {
        self.inner.size_hint()
    }
}

impl Scorer for PopularScorer {
    fn score(&mut self) -> Score {
        let doc = self.inner.doc();
        let value = self.values.number(doc).unwrap_or(0.0);
        self.inner.score() + bonus(value, self.weight)
    }
}
