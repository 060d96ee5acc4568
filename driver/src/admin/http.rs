//! The admin endpoint's HTTP side: one thread takes requests from the
//! `tiny_http` server, checks the token, and answers each path.

use base64::Engine;

use super::metrics;
use super::status::Source;

/// The dashboard: one static page, inline JavaScript, no build step.
const DASHBOARD: &str = include_str!("dashboard.html");

/// Serves requests until the server is unblocked (the handle dropped).
pub(super) fn run(server: &tiny_http::Server, source: &Source, token: Option<&str>) {
    for request in server.incoming_requests() {
        let response = answer(&request, source, token);
        // A client that went away is no concern of ours.
        let _ = request.respond(response);
    }
}

type Response = tiny_http::Response<std::io::Cursor<Vec<u8>>>;

fn answer(request: &tiny_http::Request, source: &Source, token: Option<&str>) -> Response {
    if let Some(token) = token {
        if !authorized(request, token) {
            return respond(
                401,
                "text/plain; charset=utf-8",
                "a token is required\n".into(),
            )
            .with_header(header("WWW-Authenticate", "Basic realm=\"reign admin\""));
        }
    }
    if !matches!(
        request.method(),
        tiny_http::Method::Get | tiny_http::Method::Head
    ) {
        return respond(405, "text/plain; charset=utf-8", "GET only\n".into())
            .with_header(header("Allow", "GET, HEAD"));
    }
    let path = request.url().split('?').next().unwrap_or("/");
    match path {
        "/" | "/index.html" => respond(200, "text/html; charset=utf-8", DASHBOARD.into()),
        "/status" => json(&source.status()),
        "/cluster" => json(&source.cluster()),
        "/metrics" => respond(
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics::encode(&source.status()).into_bytes(),
        ),
        _ => respond(
            404,
            "text/plain; charset=utf-8",
            "not found: try /, /status, /cluster or /metrics\n".into(),
        ),
    }
}

fn json<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => respond(200, "application/json", body),
        Err(e) => respond(500, "text/plain; charset=utf-8", e.to_string().into_bytes()),
    }
}

fn respond(code: u16, content_type: &str, body: Vec<u8>) -> Response {
    tiny_http::Response::from_data(body)
        .with_status_code(code)
        .with_header(header("Content-Type", content_type))
        .with_header(header("Cache-Control", "no-store"))
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes())
        .expect("static header names and values are valid")
}

/// Whether the request carries `token`: `Authorization: Bearer TOKEN`, or
/// HTTP Basic with TOKEN as the password (any user name).
fn authorized(request: &tiny_http::Request, token: &str) -> bool {
    let Some(value) = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.as_str().trim())
    else {
        return false;
    };
    if let Some(given) = strip_scheme(value, "Bearer") {
        return same(given.trim().as_bytes(), token.as_bytes());
    }
    if let Some(encoded) = strip_scheme(value, "Basic") {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let password = match decoded.iter().position(|&b| b == b':') {
            Some(colon) => &decoded[colon + 1..],
            None => return false,
        };
        return same(password, token.as_bytes());
    }
    false
}

/// `value` without its authentication scheme (matched case-insensitively).
fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, rest) = value.split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then_some(rest)
}

/// Compares in time that does not depend on where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_and_comparison() {
        assert_eq!(strip_scheme("Bearer abc", "bearer"), Some("abc"));
        assert_eq!(strip_scheme("Basic abc", "Bearer"), None);
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
    }
}
