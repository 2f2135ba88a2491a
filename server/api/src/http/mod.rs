//! The HTTP API: shared state, the router, and one module per group of routes.
//!
//! Routes are thin adapters over the application layer (`cairn_app::App`): each parses
//! the request, checks the caller's role, calls one application function and renders
//! its answer or its [`cairn_app::AppError`] (through [`error::ApiError`]).
//!
//! [`router`] is pure (state in, `Router` out), so tests can drive it without a socket;
//! [`crate::startup`] binds it. The OpenAPI document is generated from the handlers'
//! `#[utoipa::path]` annotations and served at `/openapi.json`.

pub mod auth;
pub mod browser;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod routes;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use cairn_audit::Ledger;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::registry::Registry;
use auth::Authenticator;
use error::ApiError;
use metrics::Metrics;

/// Everything handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The audit ledger.
    pub ledger: Arc<dyn Ledger>,
    /// The plugin registry (which owns the sandbox runtime).
    pub registry: Arc<Registry>,
    /// The application layer: runs, direct invocation, chat translation, event
    /// following, approval policy.
    pub app: Arc<cairn_app::App>,
    /// How callers are authenticated.
    pub auth: Authenticator,
    /// Request and tool-call metrics.
    pub metrics: Arc<Metrics>,
    /// Body size limits.
    pub limits: Limits,
    /// What browsers may do (`Host`/`Origin` rules in dev mode, CORS in OIDC mode).
    pub browser: browser::BrowserPolicy,
    /// Signed checkpoints, proofs and bundles over the ledger.
    pub transparency: Arc<cairn_audit::transparency::Transparency>,
    /// The ledger connection purges go through (the retention role), and the minimum
    /// retention the server enforces before asking it.
    pub retention: Retention,
}

/// Where purges go, from `[audit]`.
#[derive(Clone)]
pub struct Retention {
    /// The retention role's ledger (or the server's own).
    pub ledger: Arc<dyn Ledger>,
    /// Runs sealed less than this long ago are never purged.
    pub min_retention: chrono::Duration,
}

/// Body size limits, from config.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest JSON body.
    pub max_body_bytes: usize,
    /// Largest plugin package.
    pub max_package_bytes: usize,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Cairn API",
        description = "Enterprise copilot plugin platform: runs of the reasoning loop, OpenAI-compatible chat completions, plugins, direct tool invocation, and the audit ledger. Errors are `{\"error\": {\"code\", \"message\", \"field\"?}}`."
    ),
    modifiers(&BearerAuth),
    components(schemas(error::ErrorBody, error::ErrorDetail)),
    tags(
        (name = "health", description = "Liveness, readiness and metrics."),
        (name = "plugins", description = "Installing, configuring and invoking plugins (writes: admin role)."),
        (name = "audit", description = "The audit ledger (auditor role)."),
        (name = "runs", description = "Runs of the reasoning loop: start, follow, approve, cancel (user role)."),
        (name = "chat", description = "OpenAI-compatible chat completions over the reasoning loop (user role)."),
        (name = "policy", description = "The tenant's approval policy (admin role; changes are audited).")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                utoipa::openapi::security::HttpBuilder::from(Http::new(HttpAuthScheme::Bearer))
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::health::router())
        .merge(routes::plugins::router())
        .merge(routes::audit::router())
        .merge(routes::runs::router())
        .merge(routes::chat::router())
        .merge(routes::policy::router())
}

/// The OpenAPI 3.1 document, generated from the handlers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router().split_for_parts().1
}

/// The application's routes over `state`.
pub fn router(state: AppState) -> Router {
    let (router, openapi) = api_router().split_for_parts();
    let document = Arc::new(openapi);
    let cors = browser::cors_layer(&state.browser);
    let router = router
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let document = Arc::clone(&document);
                async move { axum::Json(document.as_ref().clone()) }
            }),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.browser.clone(),
            browser::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ));
    // Outside the guard and the routes, so a preflight is answered before either.
    let router = match cors {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

async fn not_found() -> impl IntoResponse {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> impl IntoResponse {
    ApiError::MethodNotAllowed
}
