//! Extractors that answer bad input in the API's own error shape, naming the field.
//!
//! axum's `Json`, `Query` and `Path` reject with plain-text bodies; these wrappers parse
//! with `serde_path_to_error` so a 400 says which field (or JSON line and column) is at
//! fault.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON body (request) or JSON response.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppJson<T>(pub T);

impl<T: Serialize> IntoResponse for AppJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Reads the whole body, mapping the body-limit rejection to a 413 in our shape.
pub async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(
                "request body is larger than this server accepts (max_body_bytes)".into(),
            )
        } else {
            ApiError::bad_request("invalid_body", rejection.body_text(), None)
        }
    })
}

fn is_json(req: &Request) -> bool {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        return false;
    };
    let Ok(text) = value.to_str() else {
        return false;
    };
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<S, T> FromRequest<S> for AppJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(&req) {
            return Err(ApiError::UnsupportedMediaType(
                "expected a JSON body with `Content-Type: application/json`".into(),
            ));
        }
        let bytes = read_body(req, state).await?;
        parse_json(&bytes).map(AppJson)
    }
}

/// Parses JSON text into `T`, naming the path or position of the first problem.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    use serde_json::error::Category;
    let syntax = |inner: serde_json::Error| {
        ApiError::bad_request("invalid_json", format!("malformed JSON: {inner}"), None)
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        match inner.classify() {
            Category::Syntax | Category::Eof | Category::Io => syntax(inner),
            Category::Data => {
                let message = strip_position(&inner.to_string());
                let field = field_from(&path, &message);
                ApiError::bad_request(
                    "invalid_body",
                    match &field {
                        Some(f) => format!("{f}: {message}"),
                        None => message,
                    },
                    field,
                )
            }
        }
    })?;
    de.end().map_err(syntax)?;
    Ok(value)
}

/// serde_json appends " at line 1 column 42" to data errors; for a field error the path
/// says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// The field a data error is about: the path serde tracked, refined by the field named
/// in an unknown- or missing-field message (which is reported at the parent's path).
fn field_from(path: &str, message: &str) -> Option<String> {
    let named = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next())
        .map(str::to_owned);
    let parent = (path != "." && !path.is_empty()).then(|| path.to_owned());
    match (parent, named) {
        // An unknown field is already the last segment of the path.
        (Some(p), Some(n)) if p == n || p.ends_with(&format!(".{n}")) => Some(p),
        (Some(p), Some(n)) => Some(format!("{p}.{n}")),
        (Some(p), None) => Some(p),
        (None, n) => n,
    }
}

/// A query string, parsed into `T` (use `deny_unknown_fields`).
#[derive(Debug, Clone, Default)]
pub struct AppQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for AppQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(url::form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(AppQuery)
            .map_err(|error| {
                let path = error.path().to_string();
                let message = error.into_inner().to_string();
                let field = field_from(&path, &message);
                ApiError::bad_request(
                    "invalid_query",
                    match &field {
                        Some(f) => format!("query parameter `{f}`: {message}"),
                        None => format!("query string: {message}"),
                    },
                    field,
                )
            })
    }
}

/// Path parameters, parsed into `T` (a struct whose fields are the parameter names), so
/// an invalid id is a 400 naming the parameter.
#[derive(Debug, Clone)]
pub struct AppPath<T>(pub T);

impl<S, T> FromRequestParts<S> for AppPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let raw = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request("invalid_path", e.body_text(), None))?;
        let map: serde_json::Map<String, serde_json::Value> = raw
            .iter()
            .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v.to_owned())))
            .collect();
        serde_path_to_error::deserialize(serde_json::Value::Object(map))
            .map(AppPath)
            .map_err(|error| {
                let path = error.path().to_string();
                let message = error.into_inner().to_string();
                let field = field_from(&path, &message);
                ApiError::bad_request(
                    "invalid_path",
                    match &field {
                        Some(f) => format!("path parameter `{f}`: {message}"),
                        None => message,
                    },
                    field,
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        count: u32,
    }

    fn field(json: &str) -> (String, Option<String>) {
        match parse_json::<Body>(json.as_bytes()).unwrap_err() {
            ApiError::BadRequest { code, field, .. } => (code.to_owned(), field),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            field(r#"{"name": 1}"#),
            ("invalid_body".into(), Some("name".into()))
        );
        assert_eq!(
            field(r#"{"name": "a", "extra": 1}"#),
            ("invalid_body".into(), Some("extra".into()))
        );
        assert_eq!(field(r#"{}"#), ("invalid_body".into(), Some("name".into())));
        assert_eq!(
            field(r#"{"name": "a", "inner": {"count": -1}}"#),
            ("invalid_body".into(), Some("inner.count".into()))
        );
        assert_eq!(field(r#"{"name": "a""#), ("invalid_json".into(), None));
        assert_eq!(field(r#"{"name": "a"} x"#), ("invalid_json".into(), None));
    }
}
