//! Errors of the API as `application/problem+json` (RFC 9457). The one place that maps an
//! error to an HTTP status.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

/// Media type of error bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error body: RFC 9457 problem details, with the request field at fault when there is one.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// Always `about:blank`: the status and title say what happened.
    #[serde(rename = "type")]
    pub kind: String,
    /// The HTTP reason phrase.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong and what is allowed.
    pub detail: String,
    /// The request field at fault (`fps`, `url`, `batch_sizes[2]`, …), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// What can go wrong in a request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (syntax, a bad path id, a bad query).
    #[error("{detail}")]
    BadRequest {
        /// What is wrong.
        detail: String,
        /// The field at fault.
        field: Option<String>,
    },
    /// No valid bearer token.
    #[error("{detail}")]
    Unauthorized {
        /// What is wrong.
        detail: String,
        /// Whether a (wrong) token was presented.
        token_given: bool,
    },
    /// A valid token whose role is too low.
    #[error("{detail}")]
    Forbidden {
        /// What is needed.
        detail: String,
    },
    /// No such resource.
    #[error("{0}")]
    NotFound(String),
    /// The resource exists already, or changed meanwhile.
    #[error("{0}")]
    Conflict(String),
    /// The body is larger than `admin.max_body_bytes`.
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The body did not arrive within `admin.request_timeout_ms`.
    #[error("the request body did not arrive within {} ms", .0.as_millis())]
    RequestTimeout(std::time::Duration),
    /// The body is not JSON.
    #[error("the request body must be application/json")]
    UnsupportedMediaType,
    /// The body is JSON but a field is invalid.
    #[error("{field}: {detail}")]
    Unprocessable {
        /// The field at fault.
        field: String,
        /// What is wrong and what is allowed.
        detail: String,
    },
    /// A dependency (NATS, the registry bucket, a scheduler) cannot be reached now.
    #[error("{0}")]
    Unavailable(String),
    /// The client sent more mutating requests than the rate limit allows; retry after the
    /// duration given.
    #[error("too many changes from this client: at most {burst} at once and {per_sec} per second; retry in {} ms", .retry_after.as_millis())]
    TooManyRequests {
        /// When the next request will be admitted.
        retry_after: std::time::Duration,
        /// The burst allowed.
        burst: f64,
        /// The sustained rate allowed.
        per_sec: f64,
    },
}

impl ApiError {
    /// A 400 about a field.
    pub fn bad_field(field: &str, detail: impl Into<String>) -> Self {
        ApiError::BadRequest {
            detail: detail.into(),
            field: Some(field.to_owned()),
        }
    }

    /// A 422 about a field.
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        ApiError::Unprocessable {
            field: field.into(),
            detail: detail.into(),
        }
    }

    /// The problem body of this error.
    pub fn problem(&self) -> Problem {
        let status = self.status_code();
        let field = match self {
            ApiError::BadRequest { field, .. } => field.clone(),
            ApiError::Unprocessable { field, .. } => Some(field.clone()),
            _ => None,
        };
        let detail = match self {
            ApiError::Unprocessable { detail, .. } => detail.clone(),
            other => other.to_string(),
        };
        Problem {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail,
            field,
        }
    }
}

impl From<its_bus::BusError> for ApiError {
    fn from(e: its_bus::BusError) -> Self {
        tracing::warn!(error = %e, "admin request failed on nats");
        ApiError::Unavailable(format!("nats: {e}"))
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status_code());
        resp.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)));
        if let ApiError::Unauthorized { token_given, .. } = self {
            resp.insert_header((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(if *token_given {
                    "Bearer realm=\"its-admin\", error=\"invalid_token\""
                } else {
                    "Bearer realm=\"its-admin\""
                }),
            ));
        }
        if let ApiError::TooManyRequests { retry_after, .. } = self {
            // Whole seconds, rounded up, at least 1.
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            resp.insert_header((header::RETRY_AFTER, secs.max(1).to_string()));
        }
        resp.body(serde_json::to_string(&self.problem()).unwrap_or_default())
    }
}
