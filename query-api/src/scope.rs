//! Tenant-scoped keys: a read key restricted to some indexes, some regions and a mandatory
//! filter (e.g. `{"term": {"tenant_id": 42}}`). Searches carry the restriction inside the
//! request (regions narrowed, the filter AND-ed with the caller's own), so hits, totals,
//! facets and cursors all obey it; document reads and change feeds carry it to the shard
//! (`wire::shard::ReadScope`), which answers only what lies within it.

use axum::http::StatusCode;
use serde_json::{json, Value};
use wire::shard::ReadScope;
use wire::SearchRequest;

use crate::ApiError;

/// What a key may read (every part None: everything).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Restriction {
    pub indexes: Option<Vec<String>>,
    pub regions: Option<Vec<String>>,
    pub filter: Option<Value>,
}

impl Restriction {
    /// An index this key may not read is answered as unknown: a tenant does not learn the
    /// names of the others.
    pub fn check_index(&self, index: &str) -> Result<(), ApiError> {
        match &self.indexes {
            Some(allowed) if !allowed.iter().any(|i| i == index) => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "index",
                format!("unknown index {index:?}"),
            )),
            _ => Ok(()),
        }
    }

    /// Whether this key may see `index` listed.
    pub fn shows_index(&self, index: &str) -> bool {
        self.check_index(index).is_ok()
    }

    /// Narrows a search to the restriction: no regions asked means the key's regions, a
    /// region beyond them is refused; the key's filter is AND-ed with the request's.
    pub fn apply(&self, req: &mut SearchRequest) -> Result<(), ApiError> {
        if let Some(allowed) = &self.regions {
            if req.regions.is_empty() {
                req.regions = allowed.clone();
            } else if let Some(r) = req.regions.iter().find(|r| !allowed.contains(r)) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "regions",
                    format!("this key may not read region {r:?}"),
                ));
            }
        }
        if let Some(scope) = &self.filter {
            req.filter = Some(match req.filter.take() {
                None => scope.clone(),
                Some(own) => json!({ "and": [scope, own] }),
            });
        }
        Ok(())
    }

    /// The restriction as the shard takes it with a document read or a feed.
    pub fn read_scope(&self) -> ReadScope {
        ReadScope {
            scope_regions: self.regions.as_ref().map(|r| r.join(",")),
            scope_filter: self.filter.as_ref().map(Value::to_string),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_is_narrowed_to_the_keys_regions_and_filter() {
        let r = Restriction {
            indexes: Some(vec!["places".into()]),
            regions: Some(vec!["europe".into(), "asia".into()]),
            filter: Some(json!({"term": {"tenant": 42}})),
        };
        assert!(r.check_index("places").is_ok());
        assert_eq!(
            r.check_index("other").unwrap_err().status(),
            StatusCode::NOT_FOUND
        );

        let mut req: SearchRequest = serde_json::from_value(json!({"q": "x"})).unwrap();
        r.apply(&mut req).unwrap();
        assert_eq!(req.regions, ["europe", "asia"]);
        assert_eq!(req.filter, Some(json!({"term": {"tenant": 42}})));

        let mut req: SearchRequest = serde_json::from_value(
            json!({"q": "x", "regions": ["asia"], "filter": {"or": [{"term": {"tenant": 7}}]}}),
        )
        .unwrap();
        r.apply(&mut req).unwrap();
        assert_eq!(req.regions, ["asia"]);
        assert_eq!(
            req.filter,
            Some(json!({"and": [{"term": {"tenant": 42}}, {"or": [{"term": {"tenant": 7}}]}]}))
        );

        let mut req: SearchRequest =
            serde_json::from_value(json!({"q": "x", "regions": ["asia", "africa"]})).unwrap();
        let e = r.apply(&mut req).unwrap_err();
        assert_eq!((e.status(), e.field()), (StatusCode::FORBIDDEN, "regions"));

        let scope = r.read_scope();
        assert_eq!(scope.scope_regions.as_deref(), Some("europe,asia"));
        assert_eq!(
            scope.scope_filter.as_deref(),
            Some(r#"{"term":{"tenant":42}}"#)
        );
        assert!(Restriction::default().read_scope().is_open());
    }
}
