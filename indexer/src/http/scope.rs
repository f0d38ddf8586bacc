//! A scoped caller's restriction on the shard (`wire::shard::ReadScope`, sent by query-api
//! for a tenant-scoped key): the regions and the filter every document read and every change
//! of the feed must satisfy. What lies outside is answered as if it did not exist.

use engine::change::{ChangeEvent, Op};
use engine::document::{map_row, MapLimits, Mapped, RawRow};
use engine::filter::Filter;
use engine::partition::Fields;
use wire::shard::ReadScope;

use crate::catalog::ResolvedIndex;

pub(super) struct Scope {
    regions: Option<Vec<String>>,
    filter: Option<Filter>,
}

impl Scope {
    /// The restriction, its filter checked against the index's filter fields; an error
    /// names the parameter (`scope_filter…`).
    pub(super) fn parse(scope: &ReadScope, fields: &Fields) -> Result<Scope, (String, String)> {
        let filter = match &scope.scope_filter {
            None => None,
            Some(text) => {
                let v: serde_json::Value = serde_json::from_str(text)
                    .map_err(|e| ("scope_filter".to_owned(), e.to_string()))?;
                Some(
                    Filter::parse(&v, &fields.filters, "scope_filter")
                        .map_err(|e| (e.path, e.message))?,
                )
            }
        };
        Ok(Scope {
            regions: scope
                .regions()
                .map(|r| r.into_iter().map(str::to_owned).collect()),
            filter,
        })
    }

    pub(super) fn is_open(&self) -> bool {
        self.regions.is_none() && self.filter.is_none()
    }

    pub(super) fn allows_region(&self, region: &str) -> bool {
        self.regions
            .as_ref()
            .is_none_or(|r| r.iter().any(|a| a == region))
    }

    /// Whether a stored row (of a region it allows) passes the filter.
    pub(super) fn allows_row(&self, ix: &ResolvedIndex, row: &RawRow) -> bool {
        let Some(filter) = &self.filter else {
            return true;
        };
        let limits = MapLimits {
            max_text_bytes: usize::MAX,
            owned_regions: Vec::new(),
        };
        match map_row(ix, row.clone(), &limits) {
            Mapped::Doc(doc, _) => filter.matches(&doc.filters),
            Mapped::Skip(_) => false,
        }
    }

    /// Whether a change is shown: its region allowed and its document (as the change left
    /// it, or as a delete found it) passing the filter. A change whose region or values are
    /// unknown is not shown to a restricted reader; TRUNCATE names no document and is.
    pub(super) fn allows_event(&self, e: &ChangeEvent) -> bool {
        if e.op == Op::Truncate {
            return true;
        }
        let region_ok = match (&self.regions, &e.region) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(_), Some(r)) => self.allows_region(r),
        };
        region_ok
            && self
                .filter
                .as_ref()
                .is_none_or(|f| e.filters.as_deref().is_some_and(|v| f.matches(v)))
    }
}
