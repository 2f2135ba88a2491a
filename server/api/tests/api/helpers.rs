//! `spawn_app()`: each test gets its own data dir, its own SQLite ledger (or PostgreSQL
//! database) and its own server on a free port. Logs only with `TEST_LOG` set.
//! `OidcServer`: a real OpenID Connect provider (`oidc/server.mjs`, Node's
//! oidc-provider), installed on first use and stopped when dropped.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, Once};
use std::time::Duration;

use cairn_server::config::{
    AgentSettings, AuthConfig, Config, ModelConfig, OidcConfig, OpenAiSettings,
};
use cairn_server::package::Package;
use cairn_server::startup::Application;
use serde_json::Value;

/// The audience the test provider puts in its access tokens.
pub const AUDIENCE: &str = "https://api.cairn.test";

static TRACING: Once = Once::new();

/// An HTTP client. reqwest is built without a crypto provider of its own (the workspace
/// uses ring everywhere), so install ring as the process default first.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

fn init_tracing() {
    TRACING.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_env("TEST_LOG")
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_test_writer()
                .init();
        }
    });
}

/// A running server and what a test needs to talk to it.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// A client (no default headers).
    pub client: reqwest::Client,
    /// The data dir (removed when the test ends).
    pub data_dir: tempfile::TempDir,
    /// The identity provider, for OIDC apps.
    pub oidc: Option<OidcServer>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Settings a test may change before the server starts.
pub struct Options {
    /// The ledger URL; default an SQLite file in the data dir.
    pub database_url: Option<String>,
    /// Largest JSON body.
    pub max_body_bytes: usize,
    /// Largest package.
    pub max_package_bytes: usize,
    /// Start an OIDC provider and use it.
    pub oidc: bool,
    /// The OpenAI-compatible model's base URL (a `ScriptedServer`'s `url()`); default
    /// the embedded model, which no test without this reaches.
    pub model_url: Option<String>,
    /// The model, when not `model_url` (default: the embedded model).
    pub model: Option<ModelConfig>,
    /// The loop's settings.
    pub agent: AgentSettings,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            database_url: None,
            max_body_bytes: 64 * 1024,
            max_package_bytes: 64 * 1024 * 1024,
            oidc: false,
            model_url: None,
            model: None,
            agent: AgentSettings::default(),
        }
    }
}

/// A server (development identity) whose model is the scripted server at `model_url`.
pub async fn spawn_app_with_model(model_url: String) -> TestApp {
    spawn_app_with(Options {
        model_url: Some(model_url),
        ..Options::default()
    })
    .await
}

/// A server with the development identity and an SQLite ledger.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

/// A server whose callers authenticate with tokens from a real OIDC provider.
pub async fn spawn_oidc_app() -> TestApp {
    spawn_app_with(Options {
        oidc: true,
        ..Options::default()
    })
    .await
}

/// A base config for tests: loopback, port 0, everything under `data_dir`.
pub fn test_config(data_dir: &std::path::Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: None,
        data_dir: data_dir.to_owned(),
        // Shared between tests so each component is compiled once.
        cache_dir: std::env::temp_dir().join("cairn-api-tests-compiled"),
        max_body_bytes: 64 * 1024,
        max_package_bytes: 64 * 1024 * 1024,
        max_concurrent_calls: 2,
        auth: AuthConfig::Dev,
        model: ModelConfig::default(),
        agent: AgentSettings::default(),
        audit: Default::default(),
    }
}

/// A server with `options`.
pub async fn spawn_app_with(options: Options) -> TestApp {
    init_tracing();
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = test_config(data_dir.path());
    config.database_url = options.database_url;
    config.max_body_bytes = options.max_body_bytes;
    config.max_package_bytes = options.max_package_bytes;
    config.agent = options.agent;
    if let Some(model) = options.model {
        config.model = model;
    }
    if let Some(base_url) = options.model_url {
        config.model = ModelConfig::OpenAi(OpenAiSettings {
            base_url,
            model: "scripted".into(),
            api_key: None,
            timeout_seconds: 30,
        });
    }
    let oidc = if options.oidc {
        let server = OidcServer::start().await;
        config.auth = AuthConfig::Oidc(OidcConfig {
            issuer: server.issuer.clone(),
            audience: AUDIENCE.into(),
            tenant_claim: "tenant".into(),
            roles_claim: "roles".into(),
            jwks_cache_seconds: 300,
            jwks_min_refetch_seconds: 0,
            leeway_seconds: 5,
        });
        Some(server)
    } else {
        None
    };
    let app = Application::build(config).await.expect("build the app");
    let address = format!("http://127.0.0.1:{}", app.port());
    let server = tokio::spawn(async move {
        app.run_until_stopped().await.expect("serve");
    });
    TestApp {
        address,
        client: http_client(),
        data_dir,
        oidc,
        server,
    }
}

impl TestApp {
    /// `address + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// A request with an optional bearer token.
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let builder = self.client.request(method, self.url(path));
        match token {
            Some(t) => builder.bearer_auth(t),
            None => builder,
        }
    }

    /// Installs a package; returns the response.
    pub async fn install(&self, package: &[u8], token: Option<&str>) -> reqwest::Response {
        self.request(reqwest::Method::POST, "/v1/plugins", token)
            .header("content-type", "application/octet-stream")
            .body(package.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// Installs and enables the `tasks` plugin; returns its installation id.
    pub async fn install_tasks(&self, token: Option<&str>) -> String {
        let response = self.install(&tasks_package(), token).await;
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        let body: Value = response.json().await.unwrap();
        let id = body["id"].as_str().unwrap().to_owned();
        let response = self
            .request(
                reqwest::Method::POST,
                &format!("/v1/plugins/{id}/enable"),
                token,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        id
    }

    /// Invokes a tool with JSON arguments.
    pub async fn invoke(
        &self,
        id: &str,
        tool: &str,
        arguments: Value,
        token: Option<&str>,
    ) -> reqwest::Response {
        self.request(
            reqwest::Method::POST,
            &format!("/v1/plugins/{id}/tools/{tool}/invoke"),
            token,
        )
        .json(&serde_json::json!({ "arguments": arguments }))
        .send()
        .await
        .unwrap()
    }
}

/// The example `tasks` plugin as a package, built from source by `cairn-test-plugins`.
pub fn tasks_package() -> Vec<u8> {
    let plugin = cairn_test_plugins::EXAMPLE_PLUGINS
        .iter()
        .find(|p| p.name == "tasks")
        .expect("the tasks example plugin did not build (wasm32-wasip2 target missing?)");
    let manifest = std::fs::read_to_string(plugin.manifest).unwrap();
    let component = std::fs::read(plugin.component).unwrap();
    let package = Package::new(manifest, component).unwrap();
    let mut bytes = Vec::new();
    package.write_to(&mut bytes).unwrap();
    bytes
}

/// Asserts that each of `routes` answers `token`'s caller 404 `not_found`, exactly like an
/// id that does not exist (another tenant's data is never confirmed to exist).
pub async fn expect_not_found(app: &TestApp, routes: Vec<(reqwest::Method, String)>, token: &str) {
    for (method, path) in routes {
        let error = expect_error(
            app.request(method.clone(), &path, Some(token))
                .send()
                .await
                .unwrap(),
            404,
        )
        .await;
        assert_eq!(error["code"], "not_found", "{method} {path}");
    }
}

/// Asserts an error response's status and shape; returns its `error` object.
pub async fn expect_error(response: reqwest::Response, status: u16) -> Value {
    let actual = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(actual, status, "body: {text}");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    let error = body["error"].clone();
    assert!(error["code"].is_string(), "{body}");
    assert!(error["message"].is_string(), "{body}");
    error
}

/// A real OpenID Connect provider on a free loopback port.
pub struct OidcServer {
    /// Its issuer URL.
    pub issuer: String,
    child: Child,
    client: reqwest::Client,
}

impl Drop for OidcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node_modules() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("cairn").join("node")
}

/// Installs oidc-provider once (idempotent: skipped when already there).
fn ensure_oidc_provider() -> PathBuf {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let prefix = node_modules();
    let modules = prefix.join("node_modules");
    if !modules.join("oidc-provider").join("package.json").exists() {
        std::fs::create_dir_all(&prefix).unwrap();
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&prefix)
            .arg("oidc-provider@9")
            .status()
            .expect("run npm (Node 20+ is needed for the OIDC tests)");
        assert!(status.success(), "npm install oidc-provider@9 failed");
    }
    modules
}

impl OidcServer {
    /// Starts the provider and waits until it listens.
    pub async fn start() -> Self {
        let modules = ensure_oidc_provider();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/oidc/server.mjs");
        let mut child = Command::new("node")
            .arg(script)
            .env("PORT", port.to_string())
            .env("CAIRN_NODE_MODULES", &modules)
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("start node");
        let stdout = child.stdout.take().unwrap();
        let ready = tokio::task::spawn_blocking(move || {
            let mut lines = BufReader::new(stdout).lines();
            lines.find_map(|l| {
                l.ok()
                    .and_then(|l| l.strip_prefix("ready ").map(str::to_owned))
            })
        });
        let issuer = tokio::time::timeout(Duration::from_secs(30), ready)
            .await
            .expect("the OIDC provider did not start within 30 s")
            .unwrap()
            .expect("the OIDC provider exited before it was ready");
        Self {
            issuer,
            child,
            client: http_client(),
        }
    }

    /// An access token from the provider for `client` (e.g. `acme-admin`), by the
    /// client-credentials grant.
    pub async fn token(&self, client: &str) -> String {
        let response = self
            .client
            .post(format!("{}/token", self.issuer))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=client_credentials&client_id={client}&client_secret=secret&scope=api"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// A token with exactly `claims`, signed by the published key or by a `rogue` key
    /// the provider does not publish (under the published key's id).
    pub async fn mint(&self, claims: Value, key: &str) -> String {
        self.client
            .post(format!("{}/__mint", self.issuer))
            .json(&serde_json::json!({ "claims": claims, "key": key }))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Makes the provider sign with a new key (both stay published).
    pub async fn rotate(&self) {
        let response = self
            .client
            .post(format!("{}/__rotate", self.issuer))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    /// Claims a valid token for acme's admin would carry, for tests to spoil one by one.
    pub fn claims(&self) -> Value {
        let now = chrono::Utc::now().timestamp();
        serde_json::json!({
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": "mallory",
            "tenant": "acme",
            "roles": ["user", "admin", "auditor"],
            "iat": now,
            "exp": now + 600,
        })
    }
}
