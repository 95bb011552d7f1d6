//! OpenAI's wire conventions that `serve` and the gateway answer with:
//! the error body, one map from the crate's typed errors to an HTTP status and an OpenAI error
//! type and code, and response ids.

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::error::Error;

/// An OpenAI-shaped error body: `{"error": {"message", "type", "code", "param"}}`.
pub fn error_body(kind: &str, code: &str, message: impl std::fmt::Display) -> Value {
    json!({ "error": {
        "message": message.to_string(), "type": kind, "code": code, "param": null,
    } })
}

/// An OpenAI-shaped error response (429s say when to retry).
pub fn error_response(
    status: StatusCode,
    kind: &str,
    code: &str,
    message: impl std::fmt::Display,
) -> Response {
    let mut r = (status, Json(error_body(kind, code, message))).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

/// The response `e` answers with.
pub fn failure_response(e: &Error) -> Response {
    let (status, kind, code) = status_and_type(e);
    error_response(status, kind, code, e)
}

/// The HTTP status, OpenAI error type and error code an error answers with: the request's
/// fault is a 4xx `invalid_request_error`, the server's a 5xx.
pub fn status_and_type(e: &Error) -> (StatusCode, &'static str, &'static str) {
    use StatusCode as S;
    const INVALID: &str = "invalid_request_error";
    match e {
        Error::ContextOverflow { .. } => (S::BAD_REQUEST, INVALID, "context_length_exceeded"),
        // What the request sent: empty, malformed, not tokenizable, not renderable by the
        // chat template, or sampling parameters out of range.
        Error::EmptyInput(_)
        | Error::Data(_)
        | Error::Tokenizer(_)
        | Error::Template(_)
        | Error::Sampling(_) => (S::BAD_REQUEST, INVALID, "invalid_request"),
        Error::NotFound(_) => (S::NOT_FOUND, INVALID, "not_found"),
        // The upstream refused the request itself (a bad pass-through parameter): the client's.
        Error::Remote {
            status: Some(400 | 422),
            ..
        } => (S::BAD_REQUEST, INVALID, "upstream_rejected_request"),
        Error::Remote { .. } => (S::BAD_GATEWAY, "upstream_error", "upstream_error"),
        Error::Timeout(_) => (S::GATEWAY_TIMEOUT, "upstream_error", "upstream_timeout"),
        // The work was stopped before it finished (a client gone, a shutdown): try again.
        Error::Cancelled => (S::SERVICE_UNAVAILABLE, "server_error", "cancelled"),
        Error::Gguf(_)
        | Error::UnsupportedArchitecture(_)
        | Error::Shape { .. }
        | Error::Config(_)
        | Error::Io { .. }
        | Error::Diverged(_)
        | Error::Device(_)
        | Error::Adapter(_) => (S::INTERNAL_SERVER_ERROR, "server_error", "server_error"),
    }
}

/// Seconds since the Unix epoch: a response's `created`.
pub fn created() -> u64 {
    web_time::SystemTime::now()
        .duration_since(web_time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A response id unique to the response: `cmpl-` (`chatcmpl-` for chat), 16 hex digits drawn
/// at random once per process, and the process's count of responses.
pub fn response_id(chat: bool) -> String {
    static PROCESS: OnceLock<u64> = OnceLock::new();
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    // std's hasher keys are random per process (from the OS).
    let process = *PROCESS.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            web_time::SystemTime::now()
                .duration_since(web_time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        h.finish()
    });
    let prefix = if chat { "chatcmpl" } else { "cmpl" };
    let n = SERIAL.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{process:016x}{n:x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_errors_are_typed() {
        let (a, b) = (response_id(false), response_id(true));
        assert!(
            a.starts_with("cmpl-") && b.starts_with("chatcmpl-"),
            "{a} {b}"
        );
        assert_ne!(a["cmpl-".len()..], b["chatcmpl-".len()..]);
        let overflow = Error::ContextOverflow {
            needed: 9000,
            max: 8192,
        };
        assert_eq!(
            status_and_type(&overflow),
            (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "context_length_exceeded"
            )
        );
        let device = Error::Device("lost".into());
        assert_eq!(
            status_and_type(&device),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "server_error"
            )
        );
        assert_eq!(
            status_and_type(&Error::Timeout("slow".into())).0,
            StatusCode::GATEWAY_TIMEOUT
        );
    }
}
