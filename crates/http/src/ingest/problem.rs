//! RFC 9457 problem details: every ingest error answer is `application/problem+json` with
//! `type`, `title`, `status` and `detail`. Details are fixed texts or a payload decoder's
//! description of what is wrong with the payload: never internals, never a secret.

use std::borrow::Cow;

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The `type` URIs of the problems ingest answers with, one per kind (documented in
/// `docs/ingest-api.openapi.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    BadRequest,
    Unauthenticated,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Timeout,
    TooLarge,
    UnsupportedMediaType,
    RateLimited,
    Unavailable,
    Internal,
}

impl Kind {
    fn parts(self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Kind::BadRequest => (
                StatusCode::BAD_REQUEST,
                "urn:wardgate:problem:bad-request",
                "The request or its payload is malformed",
            ),
            Kind::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                "urn:wardgate:problem:unauthenticated",
                "Authentication required",
            ),
            Kind::Forbidden => (
                StatusCode::FORBIDDEN,
                "urn:wardgate:problem:forbidden",
                "Not allowed for this device",
            ),
            Kind::NotFound => (
                StatusCode::NOT_FOUND,
                "urn:wardgate:problem:not-found",
                "No such resource",
            ),
            Kind::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "urn:wardgate:problem:method-not-allowed",
                "Method not allowed",
            ),
            Kind::Timeout => (
                StatusCode::REQUEST_TIMEOUT,
                "urn:wardgate:problem:request-timeout",
                "The request body did not arrive in time",
            ),
            Kind::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "urn:wardgate:problem:too-large",
                "Payload too large",
            ),
            Kind::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "urn:wardgate:problem:unsupported-media-type",
                "Unsupported media type",
            ),
            Kind::RateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                "urn:wardgate:problem:rate-limited",
                "Too many requests",
            ),
            Kind::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "urn:wardgate:problem:unavailable",
                "Not accepted now; keep the reading and retry later",
            ),
            Kind::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "urn:wardgate:problem:internal",
                "The reading could not be stored",
            ),
        }
    }

    /// The HTTP status.
    pub(crate) fn status(self) -> StatusCode {
        self.parts().0
    }
}

/// One problem answer.
#[derive(Debug)]
pub(crate) struct Problem {
    pub(crate) kind: Kind,
    pub(crate) detail: Cow<'static, str>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Problem {
    pub(crate) fn new(kind: Kind, detail: impl Into<Cow<'static, str>>) -> Problem {
        Problem {
            kind,
            detail: detail.into(),
            headers: Vec::new(),
        }
    }

    /// Adds `Retry-After: secs`.
    pub(crate) fn retry_after(mut self, secs: u32) -> Problem {
        self.headers
            .push((header::RETRY_AFTER, HeaderValue::from(secs)));
        self
    }

    /// Adds a `WWW-Authenticate` challenge.
    pub(crate) fn challenge(mut self, value: &'static str) -> Problem {
        self.headers
            .push((header::WWW_AUTHENTICATE, HeaderValue::from_static(value)));
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body<'a> {
            #[serde(rename = "type")]
            kind: &'a str,
            title: &'a str,
            status: u16,
            detail: &'a str,
        }
        let (status, kind, title) = self.kind.parts();
        let body = serde_json::to_vec(&Body {
            kind,
            title,
            status: status.as_u16(),
            detail: &self.detail,
        })
        .unwrap_or_default();
        let mut response = (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/problem+json"),
            )],
            body,
        )
            .into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}
