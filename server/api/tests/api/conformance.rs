//! Regression tests for what schemathesis (scripts/test-api) found: answers the OpenAPI
//! document did not describe. Each test pins one: the server's answer must be one the
//! document lists, with a body its schema accepts.

use serde_json::{Value, json};

use crate::helpers::{expect_error, spawn_app};

/// The document the server serves.
async fn document(app: &crate::helpers::TestApp) -> Value {
    app.client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Checks `value` against the document's response schema for `method path status`
/// (OpenAPI 3.1 schemas are JSON Schema 2020-12; `$ref`s resolve inside the document).
fn assert_conforms(document: &Value, method: &str, path: &str, status: u16, value: &Value) {
    let response = &document["paths"][path][method]["responses"][status.to_string()];
    assert!(
        response.is_object(),
        "{method} {path} does not document {status}"
    );
    let schema = &response["content"]["application/json"]["schema"];
    let mut root = schema.clone();
    root.as_object_mut()
        .expect("a schema object")
        .insert("components".into(), document["components"].clone());
    let validator = jsonschema::draft202012::new(&root).expect("the schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path} {status} does not match its schema: {errors:?}\n{value}"
    );
}

/// PluginDetail was `allOf: [Installation, {tools}]`, and Installation's schema is closed
/// (`additionalProperties: false`), so no plugin detail could ever match it: neither
/// `GET /v1/plugins/{id}` nor `POST /v1/plugins`.
#[tokio::test]
async fn plugin_detail_matches_its_documented_schema() {
    let app = spawn_app().await;
    let document = document(&app).await;
    let response = app.install(&crate::helpers::tasks_package(), None).await;
    assert_eq!(response.status(), 201);
    let installed: Value = response.json().await.unwrap();
    assert_conforms(&document, "post", "/v1/plugins", 201, &installed);

    let id = installed["id"].as_str().unwrap();
    let detail: Value = app
        .client
        .get(app.url(&format!("/v1/plugins/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_conforms(&document, "get", "/v1/plugins/{id}", 200, &detail);
    // Still closed: a field the server does not send is not allowed.
    let mut extra = detail.clone();
    extra["surprise"] = json!(1);
    let root = json!({
        "$ref": "#/components/schemas/PluginDetail",
        "components": document["components"],
    });
    assert!(
        !jsonschema::draft202012::new(&root)
            .unwrap()
            .is_valid(&extra)
    );
}

/// A JSON body sent without `Content-Type: application/json` is a 415, which the
/// settings and invoke routes answered without documenting it.
#[tokio::test]
async fn json_routes_document_their_415() {
    let app = spawn_app().await;
    let document = document(&app).await;
    let id = app.install_tasks(None).await;
    for (method, path, url) in [
        (
            reqwest::Method::PUT,
            "/v1/plugins/{id}/config",
            format!("/v1/plugins/{id}/config"),
        ),
        (
            reqwest::Method::POST,
            "/v1/plugins/{id}/tools/{tool}/invoke",
            format!("/v1/plugins/{id}/tools/list_tasks/invoke"),
        ),
    ] {
        let error = expect_error(
            app.client
                .request(method.clone(), app.url(&url))
                .send()
                .await
                .unwrap(),
            415,
        )
        .await;
        assert_eq!(error["code"], "unsupported_media_type");
        let method = method.as_str().to_ascii_lowercase();
        assert_conforms(&document, &method, path, 415, &json!({ "error": error }));
    }
}

/// `GET /v1/audit/verify` refuses unknown or malformed parameters with a 400 naming the
/// parameter, which its documentation did not list.
#[tokio::test]
async fn audit_verify_documents_its_400() {
    let app = spawn_app().await;
    let document = document(&app).await;
    for query in ["?from=yesterday", "?colour=blue"] {
        let error = expect_error(
            app.client
                .get(app.url(&format!("/v1/audit/verify{query}")))
                .send()
                .await
                .unwrap(),
            400,
        )
        .await;
        assert_eq!(error["code"], "invalid_query");
        assert_conforms(
            &document,
            "get",
            "/v1/audit/verify",
            400,
            &json!({ "error": error }),
        );
    }
}
