//! The one error answer of the public API: a status, a stable code, the request field at
//! fault (if any) and a message, plus optional members (freshness, missing shards). Internal
//! causes are logged where they happen, never sent.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// An error answer: status, a stable code, the request field at fault (if any), a message,
/// and optional extra members (e.g. freshness). Internal details are logged, never sent.
#[derive(Debug)]
pub struct ApiError(Box<ErrorBody>);

impl ApiError {
    /// The request field at fault (empty if none).
    pub fn field(&self) -> &str {
        &self.0.field
    }

    /// The HTTP status it answers with.
    pub fn status(&self) -> StatusCode {
        self.0.status
    }
}

#[derive(Debug)]
struct ErrorBody {
    status: StatusCode,
    code: &'static str,
    field: String,
    message: String,
    extra: Option<(String, Value)>,
    retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        field: &str,
        message: impl Into<String>,
    ) -> Self {
        ApiError(Box::new(ErrorBody {
            status,
            code,
            field: field.to_owned(),
            message: message.into(),
            extra: None,
            retry_after: None,
        }))
    }

    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", field, message)
    }

    pub(crate) fn with(mut self, name: &str, v: Value) -> Self {
        self.0.extra = Some((name.to_owned(), v));
        self
    }

    pub(crate) fn retry_after(mut self, seconds: u64) -> Self {
        self.0.retry_after = Some(seconds);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = *self.0;
        let mut body = json!({"error": {"code": e.code, "field": e.field, "message": e.message}});
        if let Some((k, v)) = e.extra {
            body[k] = v;
        }
        let mut resp = (e.status, Json(body)).into_response();
        if let Some(s) = e.retry_after {
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from(s));
        }
        resp
    }
}
