//! `GET /openapi.json`: the public API described from the code (utoipa). Request and answer
//! schemas are the `wire` types the service itself parses with, so they cannot drift.

use axum::response::{IntoResponse, Response};
use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Search over Postgres CDC",
        description = "Full-text, geo and vector search over tables tailed from Postgres \
            logical replication. Every answer says how fresh it is (`freshness`); \
            `consistency.min_lsn` reads your own write.",
    ),
    paths(
        crate::routes::search::search_post,
        crate::routes::search::search_get,
        crate::routes::documents::document,
        crate::routes::status::indexes,
        crate::routes::status::status,
        crate::routes::changes::changes,
        crate::routes::status::healthz,
        crate::routes::status::readyz,
        crate::routes::status::metrics_text,
    ),
    components(schemas(wire::ErrorResponse, wire::SearchResponse, wire::SearchRequest)),
    modifiers(&Security),
    tags((name = "search"), (name = "documents"), (name = "operations"))
)]
pub(crate) struct Doc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
        );
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub(crate) async fn serve() -> Response {
    Json(Doc::openapi()).into_response()
}
