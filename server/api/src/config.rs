//! The server's settings: a TOML file (`cairn serve --config FILE`) overlaid by `CAIRN_*`
//! environment variables, with defaults that give the zero-config embedded setup.
//!
//! Every type refuses unknown keys, so a misspelt setting is an error at start-up rather
//! than a default silently used. Each field's doc comment shows the file key and the
//! environment variable. `docs/operators.md` lists them all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use cairn_manifest::HostPattern;
use cairn_runtime::IpRange;
use serde::Deserialize;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for these settings (unknown keys included).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said, with the line.
        message: String,
    },
    /// An environment variable does not parse.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: &'static str,
        /// Why it was refused.
        message: String,
    },
    /// The settings contradict each other or a safety rule.
    #[error("{0}")]
    Invalid(String),
}

/// All settings of `cairn serve`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `listen = "127.0.0.1:8080"` / `CAIRN_LISTEN`: the address the API binds (port 0
    /// picks a free port).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `database_url = "postgres://…"` / `CAIRN_DATABASE_URL` or `DATABASE_URL`: the audit
    /// ledger. Default: embedded SQLite at `sqlite:<data_dir>/ledger.db?mode=rwc`.
    #[serde(default)]
    pub database_url: Option<String>,
    /// `data_dir = "/var/lib/cairn"` / `CAIRN_DATA_DIR`: installed packages, the plugin
    /// registry, plugin key-value data and the embedded ledger. Default
    /// `~/.local/share/cairn`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// `cache_dir = "/var/cache/cairn/compiled"` / `CAIRN_CACHE_DIR`: compiled components.
    /// Loaded as machine code, so it must be writable only by the service. Default
    /// `~/.cache/cairn/compiled`.
    #[serde(default = "default_cache_dir")]
    pub cache_dir: PathBuf,
    /// `max_body_bytes = 1048576` / `CAIRN_MAX_BODY_BYTES`: largest JSON request body;
    /// larger ones get 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// `max_package_bytes = 67108864` / `CAIRN_MAX_PACKAGE_BYTES`: largest plugin package
    /// accepted by `POST /v1/plugins`.
    #[serde(default = "default_max_package")]
    pub max_package_bytes: usize,
    /// `max_concurrent_calls = 64` / `CAIRN_MAX_CONCURRENT_CALLS`: tool calls running at
    /// once (sizes the sandbox's memory pool); more wait.
    #[serde(default = "default_concurrent_calls")]
    pub max_concurrent_calls: u32,
    /// `max_concurrent_calls_per_tenant = 16` / `CAIRN_MAX_CONCURRENT_CALLS_PER_TENANT`:
    /// the share of `max_concurrent_calls` one tenant may hold at once, so a tenant
    /// flooding the host cannot take every slot from the others.
    #[serde(default = "default_calls_per_tenant")]
    pub max_concurrent_calls_per_tenant: u32,
    /// `call_wait_ms = 2000` / `CAIRN_CALL_WAIT_MS`: how long a tool call waits for a
    /// slot before it is refused (`429` with `Retry-After` on direct invocation).
    #[serde(default = "default_call_wait_ms")]
    pub call_wait_ms: u64,
    /// `[egress]`: the operator's ceiling over every plugin's outbound requests.
    #[serde(default)]
    pub egress: EgressSettings,
    /// `[cors]`: which browser origins may call the API (OIDC mode only).
    #[serde(default)]
    pub cors: CorsSettings,
    /// `[auth]`: who callers are. Default: the development identity (loopback only).
    #[serde(default)]
    pub auth: AuthConfig,
    /// `[model]`: the chat model runs talk to. Default: the embedded SmolLM2 model.
    #[serde(default)]
    pub model: ModelConfig,
    /// `[agent]`: how the reasoning loop behaves (budgets, approval policy).
    #[serde(default)]
    pub agent: AgentSettings,
    /// `[secrets]`: the key that seals secret plugin settings at rest.
    #[serde(default)]
    pub secrets: SecretSettings,
    /// `[audit]`: signed checkpoints and retention.
    #[serde(default)]
    pub audit: AuditSettings,
}

/// `[secrets]`: secret plugin settings are sealed (AES-256-GCM) under a key the database
/// never holds. Hosts over one database must share it.
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SecretSettings {
    /// `key = "<64 hex digits>"` / `CAIRN_SECRET_KEY`: the current key. Default: a key
    /// generated into `<data_dir>/secret.key` on first start (embedded defaults; set it
    /// explicitly when several hosts share a database).
    #[serde(default)]
    pub key: Option<String>,
    /// `previous_keys = ["<hex>", …]` / `CAIRN_SECRET_PREVIOUS_KEYS` (comma-separated): keys
    /// that still open values sealed before a rotation; a value is sealed with `key` when
    /// it is next written.
    #[serde(default)]
    pub previous_keys: Vec<String>,
}

impl std::fmt::Debug for SecretSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretSettings")
            .field("key", &self.key.as_ref().map(|_| "<set>"))
            .field("previous_keys", &self.previous_keys.len())
            .finish()
    }
}

/// `[audit]`: the ledger's signed checkpoints and retention.
///
/// The checkpoint signing key is a signed-note Ed25519 private key
/// (`PRIVATE+KEY+<name>+<id>+<base64>`, made by `cairn audit keygen`). It must live outside
/// the database (a file readable only by the service, or the environment): whoever holds
/// it can sign any state of the ledger. Rotation: generate a new key, give auditors its
/// verifier key beside the old one, switch; old checkpoints keep verifying with the old
/// verifier key.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// `checkpoint_key_file = "/etc/cairn/checkpoint.key"` / `CAIRN_CHECKPOINT_KEY_FILE`:
    /// the file holding the signing key. Without it (nor `CAIRN_CHECKPOINT_KEY`), no
    /// checkpoint is signed and proofs are served against those already published.
    #[serde(default)]
    pub checkpoint_key_file: Option<PathBuf>,
    /// `CAIRN_CHECKPOINT_KEY` (environment only, never in the file): the key itself.
    #[serde(skip)]
    pub checkpoint_key: Option<String>,
    /// `checkpoint_interval_seconds = 300` / `CAIRN_CHECKPOINT_INTERVAL_SECONDS`: how often
    /// a checkpoint is published for every tenant whose tree grew; 0 turns the schedule off
    /// (checkpoints are then published only on demand).
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval_seconds: u64,
    /// `min_retention_days = 30` / `CAIRN_MIN_RETENTION_DAYS`: a purge may only remove runs
    /// sealed this long ago. PostgreSQL enforces its own (`audit_settings.min_retention`,
    /// see docs/operators.md).
    #[serde(default = "default_min_retention_days")]
    pub min_retention_days: u32,
    /// `retention_database_url = "postgres://cairn_retention@…"` /
    /// `CAIRN_RETENTION_DATABASE_URL`: the connection purges go through, as the retention
    /// role. Default: the server's own connection (which, as the writer role, may not
    /// purge: the database refuses).
    #[serde(default)]
    pub retention_database_url: Option<String>,
    /// `migrate = true` / `CAIRN_MIGRATE`: run the ledger's migrations at start-up. Set it
    /// to false when the server connects as the writer role, which may not create tables;
    /// the owner runs `cairn audit migrate` instead.
    #[serde(default = "default_true")]
    pub migrate: bool,
}

fn default_true() -> bool {
    true
}

impl std::fmt::Debug for AuditSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSettings")
            .field("checkpoint_key_file", &self.checkpoint_key_file)
            .field(
                "checkpoint_key",
                &self.checkpoint_key.as_ref().map(|_| "***"),
            )
            .field(
                "checkpoint_interval_seconds",
                &self.checkpoint_interval_seconds,
            )
            .field("min_retention_days", &self.min_retention_days)
            .field(
                "retention_database_url",
                &self.retention_database_url.as_ref().map(|_| "***"),
            )
            .field("migrate", &self.migrate)
            .finish()
    }
}

/// `[egress]`: addresses and origins no plugin may reach, whatever its manifest says.
/// Install refuses a manifest outside it (`422 egress_ceiling`) and every outbound request
/// is checked against it again, on the addresses actually connected to.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EgressSettings {
    /// `denied_ranges = ["10.0.0.0/8", "fd00::/8"]`: address ranges (CIDR) plugins may
    /// never reach. Default: loopback, private, link-local and cloud metadata, CGNAT,
    /// NAT64 local use (`64:ff9b:1::/48`), 6to4 (`2002::/16`), Teredo, `192.0.0.0/24`,
    /// `198.18.0.0/15`, documentation, multicast and reserved ranges (see
    /// `docs/operators.md`). Setting it replaces the whole list. Cairn's own listen
    /// address is always denied.
    #[serde(default = "default_denied_ranges")]
    pub denied_ranges: Vec<IpRange>,
    /// `permitted_ranges = ["10.0.0.5/32"]` / `CAIRN_EGRESS_PERMITTED_RANGES` (comma
    /// separated): exceptions carved out of `denied_ranges`, for internal services the
    /// operator decides plugins may reach (a manifest must still name them).
    #[serde(default)]
    pub permitted_ranges: Vec<IpRange>,
    /// `allowed_origins = ["https://*.example.com"]` / `CAIRN_EGRESS_ALLOWED_ORIGINS`
    /// (comma separated): when set, the only origins tenant manifests may list in
    /// `outbound_hosts`. Unset: any origin outside the denied ranges.
    #[serde(default)]
    pub allowed_origins: Option<Vec<HostPattern>>,
    /// `dns_timeout_ms = 5000` / `CAIRN_EGRESS_DNS_TIMEOUT_MS`: how long a plugin's DNS
    /// lookup may take before the request is refused.
    #[serde(default = "default_dns_timeout_ms")]
    pub dns_timeout_ms: u64,
}

impl Default for EgressSettings {
    fn default() -> Self {
        Self {
            denied_ranges: default_denied_ranges(),
            permitted_ranges: Vec::new(),
            allowed_origins: None,
            dns_timeout_ms: default_dns_timeout_ms(),
        }
    }
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            checkpoint_key_file: None,
            checkpoint_key: None,
            checkpoint_interval_seconds: default_checkpoint_interval(),
            min_retention_days: default_min_retention_days(),
            retention_database_url: None,
            migrate: true,
        }
    }
}

impl EgressSettings {
    /// The runtime's ceiling from these settings, with Cairn's own `listen` address.
    pub fn ceiling(&self, listen: SocketAddr) -> cairn_runtime::EgressCeiling {
        cairn_runtime::EgressCeiling::new()
            .with_denied(self.denied_ranges.iter().copied())
            .with_permitted(self.permitted_ranges.iter().copied())
            .with_allowed_origins(self.allowed_origins.clone())
            .with_own_address(listen)
            .with_dns_timeout(std::time::Duration::from_millis(self.dns_timeout_ms))
    }
}

/// `[cors]`: the browser origins allowed to call the API cross-origin. Only with
/// `[auth] mode = "oidc"`: the development identity never answers other origins.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CorsSettings {
    /// `allowed_origins = ["https://addin.example.com"]` / `CAIRN_CORS_ALLOWED_ORIGINS`
    /// (comma separated): exact origins (`scheme://host[:port]`) whose pages may send
    /// requests with a bearer token. Default: none (no CORS headers at all).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

impl AuditSettings {
    /// The signing key, from the environment or the file, if configured.
    pub fn signing_key(&self) -> Result<Option<String>, ConfigError> {
        if let Some(k) = &self.checkpoint_key {
            return Ok(Some(k.clone()));
        }
        match &self.checkpoint_key_file {
            Some(path) => std::fs::read_to_string(path)
                .map(|k| Some(k.trim().to_owned()))
                .map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                }),
            None => Ok(None),
        }
    }
}

fn default_checkpoint_interval() -> u64 {
    300
}
fn default_min_retention_days() -> u32 {
    30
}

/// `[model] provider = "embedded" | "openai"`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "provider", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelConfig {
    /// `provider = "embedded"` / `CAIRN_MODEL_PROVIDER=embedded`: SmolLM2-135M-Instruct
    /// run in-process on the CPU, loaded on the first model request (not at start-up).
    Embedded(EmbeddedSettings),
    /// `provider = "openai"` / `CAIRN_MODEL_PROVIDER=openai`: an OpenAI-compatible chat
    /// completions server (vLLM, llama.cpp's server, Ollama, a cloud endpoint).
    #[serde(rename = "openai")]
    OpenAi(OpenAiSettings),
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig::Embedded(EmbeddedSettings::default())
    }
}

/// `[model]` with `provider = "embedded"`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedSettings {
    /// `model_dir = "/var/lib/cairn/models"` / `CAIRN_MODEL_DIR`: where
    /// `scripts/fetch-models` put the GGUF file. Default `~/.cache/cairn/models`.
    #[serde(default = "default_model_dir")]
    pub model_dir: PathBuf,
    /// `gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"` / `CAIRN_MODEL_GGUF`: the file name
    /// inside `model_dir`.
    #[serde(default = "default_gguf")]
    pub gguf: String,
}

impl Default for EmbeddedSettings {
    fn default() -> Self {
        Self {
            model_dir: default_model_dir(),
            gguf: default_gguf(),
        }
    }
}

/// `[model]` with `provider = "openai"`.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OpenAiSettings {
    /// `base_url = "http://localhost:8000/v1"` / `CAIRN_OPENAI_BASE_URL`: the API base up
    /// to and including the version; `/chat/completions` is appended.
    pub base_url: String,
    /// `model = "Qwen/Qwen3-8B"` / `CAIRN_OPENAI_MODEL`: the model name the server knows.
    pub model: String,
    /// `api_key = "…"` / `CAIRN_OPENAI_API_KEY`: sent as a bearer token; local servers
    /// usually need none. Prefer the environment variable to the file. Never logged.
    #[serde(default)]
    pub api_key: Option<String>,
    /// `timeout_seconds = 120` / `CAIRN_OPENAI_TIMEOUT_SECONDS`: how long one model
    /// request may take.
    #[serde(default = "default_model_timeout")]
    pub timeout_seconds: u64,
}

impl std::fmt::Debug for OpenAiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiSettings")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout_seconds", &self.timeout_seconds)
            .finish()
    }
}

/// `[agent]`: the reasoning loop's settings.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentSettings {
    /// `max_model_calls = 8` / `CAIRN_AGENT_MAX_MODEL_CALLS`: the step budget, the most
    /// model requests one run may make before it fails with `step_budget_exhausted`.
    #[serde(default = "default_max_model_calls")]
    pub max_model_calls: u32,
    /// `deadline_seconds = 120` / `CAIRN_AGENT_DEADLINE_SECONDS`: how long a run may work
    /// from its start (or from each resume) before it fails with `deadline_exceeded`; a
    /// pause for approval does not count.
    #[serde(default = "default_deadline")]
    pub deadline_seconds: u64,
    /// `max_tokens = 512` / `CAIRN_AGENT_MAX_TOKENS`: cap on generated tokens per model
    /// request (unset: the provider's default). A chat completion's `max_tokens` wins.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// `system_prompt = "You are…"` / `CAIRN_AGENT_SYSTEM_PROMPT`: instructions sent
    /// first in every model request.
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// `approval_policy = "/etc/cairn/approval.json"` / `CAIRN_APPROVAL_POLICY`: a JSON
    /// approval policy (which tool calls wait for a person, per tenant and tool). Unset:
    /// calls to tools not marked `read_only` wait for approval.
    #[serde(default)]
    pub approval_policy: Option<PathBuf>,
    /// `retrieval_top_k = 3` / `CAIRN_RETRIEVAL_TOP_K`: offer the model only the `k` tools
    /// that all-MiniLM-L6-v2 ranks best for the request (each tool's description and its
    /// manifest `examples`); `0` offers every enabled tool. Unset: on for the embedded
    /// model, which cannot choose among many tools (retrieval chooses, the model fills in
    /// the arguments), off for an OpenAI-compatible one. The embedding model is read from
    /// the model dir on the first run that needs it.
    #[serde(default)]
    pub retrieval_top_k: Option<usize>,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            max_model_calls: default_max_model_calls(),
            deadline_seconds: default_deadline(),
            max_tokens: None,
            system_prompt: None,
            approval_policy: None,
            retrieval_top_k: None,
        }
    }
}

/// `[auth] mode = "dev" | "oidc"`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// `mode = "dev"` / `CAIRN_AUTH=dev`: every request is user `dev` of tenant `dev`
    /// with the roles user, admin and auditor. Refused on a non-loopback listen address.
    #[default]
    Dev,
    /// `mode = "oidc"` / `CAIRN_AUTH=oidc`: OpenID Connect bearer tokens (JWT access
    /// tokens) checked against the issuer's published keys.
    Oidc(OidcConfig),
}

/// `[auth]` with `mode = "oidc"`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// `issuer = "https://login.example.com/"` / `CAIRN_OIDC_ISSUER`: must equal the
    /// tokens' `iss` and the discovery document's `issuer`.
    pub issuer: String,
    /// `audience = "cairn"` / `CAIRN_OIDC_AUDIENCE`: must be in the tokens' `aud`.
    pub audience: String,
    /// `tenant_claim = "tenant"` / `CAIRN_OIDC_TENANT_CLAIM`: the claim naming the
    /// caller's tenant.
    #[serde(default = "default_tenant_claim")]
    pub tenant_claim: String,
    /// `roles_claim = "roles"` / `CAIRN_OIDC_ROLES_CLAIM`: the claim listing roles (an
    /// array, or a space-separated string); `user`, `admin` and `auditor` are used.
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// `jwks_cache_seconds = 300` / `CAIRN_OIDC_JWKS_CACHE_SECONDS`: how long fetched
    /// keys are used before they are fetched again.
    #[serde(default = "default_jwks_cache")]
    pub jwks_cache_seconds: u64,
    /// `jwks_min_refetch_seconds = 10` / `CAIRN_OIDC_JWKS_MIN_REFETCH_SECONDS`: a token
    /// with an unknown key id makes the keys be fetched again (key rotation) at most
    /// this often, so forged key ids cannot hammer the issuer.
    #[serde(default = "default_min_refetch")]
    pub jwks_min_refetch_seconds: u64,
    /// `leeway_seconds = 30` / `CAIRN_OIDC_LEEWAY_SECONDS`: clock skew tolerated on
    /// `exp` and `nbf`.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// `token_type = "at+jwt"` / `CAIRN_OIDC_TOKEN_TYPE`: the JWT header `typ` every
    /// token must carry (RFC 9068 access tokens; `application/at+jwt` and any case match),
    /// so an ID token with a matching `aud` is refused. `""` turns the check off, for
    /// issuers that do not set it; then `required_claims` must say what marks an access
    /// token.
    #[serde(default = "default_token_type")]
    pub token_type: Option<String>,
    /// `required_claims = { token_use = "access" }`: claims a token must carry with
    /// exactly these values (an array claim must contain the value), e.g. Cognito's
    /// `token_use` or a `scope` only access tokens have. Empty by default.
    #[serde(default)]
    pub required_claims: std::collections::BTreeMap<String, String>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from)
}
fn default_data_dir() -> PathBuf {
    home().join(".local").join("share").join("cairn")
}
fn default_cache_dir() -> PathBuf {
    home().join(".cache").join("cairn").join("compiled")
}
fn default_max_body() -> usize {
    1024 * 1024
}
fn default_max_package() -> usize {
    64 * 1024 * 1024 + 2 * 1024 * 1024
}
fn default_concurrent_calls() -> u32 {
    64
}
fn default_calls_per_tenant() -> u32 {
    16
}
fn default_call_wait_ms() -> u64 {
    2000
}
fn default_denied_ranges() -> Vec<IpRange> {
    cairn_runtime::DEFAULT_DENIED_RANGES
        .iter()
        .map(|(range, _)| range.parse().expect("the default ranges parse"))
        .collect()
}
fn default_dns_timeout_ms() -> u64 {
    cairn_runtime::DEFAULT_DNS_TIMEOUT.as_millis() as u64
}
fn default_model_dir() -> PathBuf {
    home().join(".cache").join("cairn").join("models")
}
fn default_gguf() -> String {
    cairn_model::embedded::DEFAULT_GGUF.into()
}
fn default_model_timeout() -> u64 {
    120
}
fn default_max_model_calls() -> u32 {
    8
}
fn default_deadline() -> u64 {
    120
}
fn default_tenant_claim() -> String {
    "tenant".into()
}
fn default_roles_claim() -> String {
    "roles".into()
}
fn default_jwks_cache() -> u64 {
    300
}
fn default_min_refetch() -> u64 {
    10
}
fn default_leeway() -> u64 {
    30
}
fn default_token_type() -> Option<String> {
    Some("at+jwt".into())
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            database_url: None,
            data_dir: default_data_dir(),
            cache_dir: default_cache_dir(),
            max_body_bytes: default_max_body(),
            max_package_bytes: default_max_package(),
            max_concurrent_calls: default_concurrent_calls(),
            max_concurrent_calls_per_tenant: default_calls_per_tenant(),
            call_wait_ms: default_call_wait_ms(),
            egress: EgressSettings::default(),
            cors: CorsSettings::default(),
            auth: AuthConfig::Dev,
            model: ModelConfig::default(),
            agent: AgentSettings::default(),
            secrets: SecretSettings::default(),
            audit: AuditSettings::default(),
        }
    }
}

impl Config {
    /// Parses a TOML document (unknown keys are errors).
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Loads the file (if given), applies the environment, and checks the result.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Self::from_toml(&text, path)?
            }
            None => Self::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        config.validate()?;
        Ok(config)
    }

    /// Overlays `CAIRN_*` variables (and `DATABASE_URL`) read through `var`.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn parse<T: std::str::FromStr>(var: &'static str, value: String) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            value.parse().map_err(|e: T::Err| ConfigError::Env {
                var,
                message: format!("{value:?}: {e}"),
            })
        }
        if let Some(v) = var("CAIRN_LISTEN") {
            self.listen = parse("CAIRN_LISTEN", v)?;
        }
        if let Some(v) = var("CAIRN_DATABASE_URL").or_else(|| var("DATABASE_URL")) {
            self.database_url = Some(v);
        }
        if let Some(v) = var("CAIRN_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = var("CAIRN_CACHE_DIR") {
            self.cache_dir = PathBuf::from(v);
        }
        if let Some(v) = var("CAIRN_CHECKPOINT_KEY_FILE") {
            self.audit.checkpoint_key_file = Some(PathBuf::from(v));
        }
        if let Some(v) = var("CAIRN_CHECKPOINT_KEY") {
            self.audit.checkpoint_key = Some(v);
        }
        if let Some(v) = var("CAIRN_CHECKPOINT_INTERVAL_SECONDS") {
            self.audit.checkpoint_interval_seconds = parse("CAIRN_CHECKPOINT_INTERVAL_SECONDS", v)?;
        }
        if let Some(v) = var("CAIRN_MIN_RETENTION_DAYS") {
            self.audit.min_retention_days = parse("CAIRN_MIN_RETENTION_DAYS", v)?;
        }
        if let Some(v) = var("CAIRN_MIGRATE") {
            self.audit.migrate = parse("CAIRN_MIGRATE", v)?;
        }
        if let Some(v) = var("CAIRN_RETENTION_DATABASE_URL") {
            self.audit.retention_database_url = Some(v);
        }
        if let Some(v) = var("CAIRN_MAX_BODY_BYTES") {
            self.max_body_bytes = parse("CAIRN_MAX_BODY_BYTES", v)?;
        }
        if let Some(v) = var("CAIRN_MAX_PACKAGE_BYTES") {
            self.max_package_bytes = parse("CAIRN_MAX_PACKAGE_BYTES", v)?;
        }
        if let Some(v) = var("CAIRN_SECRET_KEY") {
            self.secrets.key = Some(v);
        }
        if let Some(v) = var("CAIRN_SECRET_PREVIOUS_KEYS") {
            self.secrets.previous_keys = v
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Some(v) = var("CAIRN_MAX_CONCURRENT_CALLS") {
            self.max_concurrent_calls = parse("CAIRN_MAX_CONCURRENT_CALLS", v)?;
        }
        if let Some(v) = var("CAIRN_MAX_CONCURRENT_CALLS_PER_TENANT") {
            self.max_concurrent_calls_per_tenant =
                parse("CAIRN_MAX_CONCURRENT_CALLS_PER_TENANT", v)?;
        }
        if let Some(v) = var("CAIRN_CALL_WAIT_MS") {
            self.call_wait_ms = parse("CAIRN_CALL_WAIT_MS", v)?;
        }
        self.apply_security_env(&var)?;
        match var("CAIRN_AUTH").as_deref() {
            None => {}
            Some("dev") => self.auth = AuthConfig::Dev,
            Some("oidc") if self.auth == AuthConfig::Dev => {
                let issuer = var("CAIRN_OIDC_ISSUER").ok_or(ConfigError::Env {
                    var: "CAIRN_OIDC_ISSUER",
                    message: "required when CAIRN_AUTH=oidc".into(),
                })?;
                let audience = var("CAIRN_OIDC_AUDIENCE").ok_or(ConfigError::Env {
                    var: "CAIRN_OIDC_AUDIENCE",
                    message: "required when CAIRN_AUTH=oidc".into(),
                })?;
                self.auth = AuthConfig::Oidc(OidcConfig {
                    issuer,
                    audience,
                    tenant_claim: default_tenant_claim(),
                    roles_claim: default_roles_claim(),
                    jwks_cache_seconds: default_jwks_cache(),
                    jwks_min_refetch_seconds: default_min_refetch(),
                    leeway_seconds: default_leeway(),
                    token_type: default_token_type(),
                    required_claims: Default::default(),
                });
            }
            Some("oidc") => {}
            Some(other) => {
                return Err(ConfigError::Env {
                    var: "CAIRN_AUTH",
                    message: format!("{other:?}: expected \"dev\" or \"oidc\""),
                });
            }
        }
        self.apply_model_env(&var)?;
        if let Some(v) = var("CAIRN_AGENT_MAX_MODEL_CALLS") {
            self.agent.max_model_calls = parse("CAIRN_AGENT_MAX_MODEL_CALLS", v)?;
        }
        if let Some(v) = var("CAIRN_AGENT_DEADLINE_SECONDS") {
            self.agent.deadline_seconds = parse("CAIRN_AGENT_DEADLINE_SECONDS", v)?;
        }
        if let Some(v) = var("CAIRN_AGENT_MAX_TOKENS") {
            self.agent.max_tokens = Some(parse("CAIRN_AGENT_MAX_TOKENS", v)?);
        }
        if let Some(v) = var("CAIRN_AGENT_SYSTEM_PROMPT") {
            self.agent.system_prompt = Some(v);
        }
        if let Some(v) = var("CAIRN_APPROVAL_POLICY") {
            self.agent.approval_policy = Some(PathBuf::from(v));
        }
        if let Some(v) = var("CAIRN_RETRIEVAL_TOP_K") {
            self.agent.retrieval_top_k = Some(parse("CAIRN_RETRIEVAL_TOP_K", v)?);
        }
        if let AuthConfig::Oidc(oidc) = &mut self.auth {
            if let Some(v) = var("CAIRN_OIDC_ISSUER") {
                oidc.issuer = v;
            }
            if let Some(v) = var("CAIRN_OIDC_AUDIENCE") {
                oidc.audience = v;
            }
            if let Some(v) = var("CAIRN_OIDC_TENANT_CLAIM") {
                oidc.tenant_claim = v;
            }
            if let Some(v) = var("CAIRN_OIDC_ROLES_CLAIM") {
                oidc.roles_claim = v;
            }
            if let Some(v) = var("CAIRN_OIDC_JWKS_CACHE_SECONDS") {
                oidc.jwks_cache_seconds = parse("CAIRN_OIDC_JWKS_CACHE_SECONDS", v)?;
            }
            if let Some(v) = var("CAIRN_OIDC_JWKS_MIN_REFETCH_SECONDS") {
                oidc.jwks_min_refetch_seconds = parse("CAIRN_OIDC_JWKS_MIN_REFETCH_SECONDS", v)?;
            }
            if let Some(v) = var("CAIRN_OIDC_LEEWAY_SECONDS") {
                oidc.leeway_seconds = parse("CAIRN_OIDC_LEEWAY_SECONDS", v)?;
            }
            if let Some(v) = var("CAIRN_OIDC_TOKEN_TYPE") {
                oidc.token_type = Some(v);
            }
        }
        Ok(())
    }

    /// The `[egress]` and `[cors]` variables: comma-separated lists, each item parsed.
    fn apply_security_env(
        &mut self,
        var: &impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        fn list<T: std::str::FromStr>(var: &'static str, value: &str) -> Result<Vec<T>, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            value
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| {
                    item.parse().map_err(|e: T::Err| ConfigError::Env {
                        var,
                        message: format!("{item:?}: {e}"),
                    })
                })
                .collect()
        }
        if let Some(v) = var("CAIRN_EGRESS_PERMITTED_RANGES") {
            self.egress.permitted_ranges = list("CAIRN_EGRESS_PERMITTED_RANGES", &v)?;
        }
        if let Some(v) = var("CAIRN_EGRESS_ALLOWED_ORIGINS") {
            self.egress.allowed_origins = Some(list("CAIRN_EGRESS_ALLOWED_ORIGINS", &v)?);
        }
        if let Some(v) = var("CAIRN_EGRESS_DNS_TIMEOUT_MS") {
            self.egress.dns_timeout_ms = list("CAIRN_EGRESS_DNS_TIMEOUT_MS", &v)?
                .first()
                .copied()
                .unwrap_or(self.egress.dns_timeout_ms);
        }
        if let Some(v) = var("CAIRN_CORS_ALLOWED_ORIGINS") {
            self.cors.allowed_origins = list("CAIRN_CORS_ALLOWED_ORIGINS", &v)?;
        }
        Ok(())
    }

    /// `CAIRN_MODEL_PROVIDER` switches the provider (with the settings it requires);
    /// the other `CAIRN_MODEL_*` / `CAIRN_OPENAI_*` variables override the chosen one's.
    fn apply_model_env(
        &mut self,
        var: &impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        match var("CAIRN_MODEL_PROVIDER").as_deref() {
            None => {}
            Some("embedded") if !matches!(self.model, ModelConfig::Embedded(_)) => {
                self.model = ModelConfig::default();
            }
            Some("embedded") => {}
            Some("openai") if !matches!(self.model, ModelConfig::OpenAi(_)) => {
                let required = |name: &'static str| {
                    var(name).ok_or(ConfigError::Env {
                        var: name,
                        message: "required when CAIRN_MODEL_PROVIDER=openai".into(),
                    })
                };
                self.model = ModelConfig::OpenAi(OpenAiSettings {
                    base_url: required("CAIRN_OPENAI_BASE_URL")?,
                    model: required("CAIRN_OPENAI_MODEL")?,
                    api_key: None,
                    timeout_seconds: default_model_timeout(),
                });
            }
            Some("openai") => {}
            Some(other) => {
                return Err(ConfigError::Env {
                    var: "CAIRN_MODEL_PROVIDER",
                    message: format!("{other:?}: expected \"embedded\" or \"openai\""),
                });
            }
        }
        match &mut self.model {
            ModelConfig::Embedded(e) => {
                if let Some(v) = var("CAIRN_MODEL_DIR") {
                    e.model_dir = PathBuf::from(v);
                }
                if let Some(v) = var("CAIRN_MODEL_GGUF") {
                    e.gguf = v;
                }
            }
            ModelConfig::OpenAi(o) => {
                if let Some(v) = var("CAIRN_OPENAI_BASE_URL") {
                    o.base_url = v;
                }
                if let Some(v) = var("CAIRN_OPENAI_MODEL") {
                    o.model = v;
                }
                if let Some(v) = var("CAIRN_OPENAI_API_KEY") {
                    o.api_key = Some(v);
                }
                if let Some(v) = var("CAIRN_OPENAI_TIMEOUT_SECONDS") {
                    o.timeout_seconds = v.parse().map_err(|e| ConfigError::Env {
                        var: "CAIRN_OPENAI_TIMEOUT_SECONDS",
                        message: format!("{v:?}: {e}"),
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Checks the rules no single field can: above all, that the development identity,
    /// which lets anyone act as an administrator, is never reachable from another machine.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.auth == AuthConfig::Dev && !self.listen.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "refusing to start: the development identity (auth mode \"dev\") gives every caller \
                 admin rights and may only listen on a loopback address, not {}; configure \
                 [auth] mode = \"oidc\" or listen on 127.0.0.1",
                self.listen
            )));
        }
        if let AuthConfig::Oidc(oidc) = &self.auth {
            url::Url::parse(&oidc.issuer).map_err(|e| {
                ConfigError::Invalid(format!("auth.issuer {:?} is not a URL: {e}", oidc.issuer))
            })?;
            if oidc.audience.is_empty() {
                return Err(ConfigError::Invalid("auth.audience is empty".into()));
            }
            if oidc.token_type.as_deref().is_none_or(str::is_empty)
                && oidc.required_claims.is_empty()
            {
                return Err(ConfigError::Invalid(
                    "auth.token_type is off and auth.required_claims is empty: an ID token \
                     whose aud matches would be taken for an access token; keep \
                     token_type = \"at+jwt\" or name the claims only access tokens carry"
                        .into(),
                ));
            }
        }
        if !self.cors.allowed_origins.is_empty() && self.auth == AuthConfig::Dev {
            return Err(ConfigError::Invalid(
                "cors.allowed_origins is set, but the development identity (auth mode \"dev\") \
                 never answers other origins: a page from another site would act as the \
                 administrator; use [auth] mode = \"oidc\""
                    .into(),
            ));
        }
        for origin in &self.cors.allowed_origins {
            let parsed = url::Url::parse(origin).ok().filter(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.path() == "/"
                    && !origin.ends_with('/')
                    && u.query().is_none()
                    && u.username().is_empty()
            });
            if parsed.is_none() {
                return Err(ConfigError::Invalid(format!(
                    "cors.allowed_origins: {origin:?} is not an origin; write scheme://host[:port], \
                     e.g. \"https://addin.example.com\""
                )));
            }
        }
        if self.max_concurrent_calls_per_tenant == 0 || self.call_wait_ms == 0 {
            return Err(ConfigError::Invalid(
                "max_concurrent_calls_per_tenant and call_wait_ms must be above 0".into(),
            ));
        }
        if self.egress.dns_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "egress.dns_timeout_ms must be above 0".into(),
            ));
        }
        if self.max_body_bytes == 0 || self.max_package_bytes == 0 {
            return Err(ConfigError::Invalid(
                "max_body_bytes and max_package_bytes must be above 0".into(),
            ));
        }
        if let ModelConfig::OpenAi(o) = &self.model {
            let url = url::Url::parse(&o.base_url).map_err(|e| {
                ConfigError::Invalid(format!("model.base_url {:?} is not a URL: {e}", o.base_url))
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ConfigError::Invalid(format!(
                    "model.base_url {:?} must be http or https",
                    o.base_url
                )));
            }
            if o.model.is_empty() || o.timeout_seconds == 0 {
                return Err(ConfigError::Invalid(
                    "model.model must not be empty and model.timeout_seconds must be above 0"
                        .into(),
                ));
            }
        }
        if self.agent.max_model_calls == 0 || self.agent.deadline_seconds == 0 {
            return Err(ConfigError::Invalid(
                "agent.max_model_calls and agent.deadline_seconds must be above 0".into(),
            ));
        }
        Ok(())
    }

    /// The ledger URL: the configured one, or the embedded SQLite file in the data dir.
    pub fn ledger_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite:{}?mode=rwc",
                self.data_dir.join("ledger.db").display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let error = Config::from_toml(
            "listen = \"127.0.0.1:1\"\nlisten_port = 3\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("listen_port"), "{error}");
        let error = Config::from_toml(
            "[auth]\nmode = \"oidc\"\nissuer = \"https://i\"\naudience = \"a\"\nroles = \"x\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("roles"), "{error}");
    }

    #[test]
    fn the_dev_identity_is_refused_off_loopback() {
        let mut config =
            Config::from_toml("listen = \"0.0.0.0:8080\"", Path::new("c.toml")).unwrap();
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("loopback"), "{error}");
        config.listen = "[::1]:8080".parse().unwrap();
        config.validate().unwrap();
    }

    #[test]
    fn model_and_agent_settings_come_from_the_file_and_the_environment() {
        let config = Config::default();
        assert!(matches!(config.model, ModelConfig::Embedded(_)));
        let error = Config::from_toml(
            "[model]\nprovider = \"openai\"\nbase_url = \"http://m/v1\"\nmodel = \"q\"\nkey = \"x\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("key"), "{error}");
        let mut config = Config::from_toml(
            "[model]\nprovider = \"openai\"\nbase_url = \"http://m/v1\"\nmodel = \"q\"\n[agent]\nmax_model_calls = 3\n",
            Path::new("c.toml"),
        )
        .unwrap();
        config
            .apply_env(|name| match name {
                "CAIRN_OPENAI_API_KEY" => Some("sk-secret".into()),
                "CAIRN_AGENT_DEADLINE_SECONDS" => Some("9".into()),
                _ => None,
            })
            .unwrap();
        let ModelConfig::OpenAi(o) = &config.model else {
            panic!("{:?}", config.model)
        };
        assert_eq!(o.api_key.as_deref(), Some("sk-secret"));
        assert!(!format!("{config:?}").contains("sk-secret"));
        assert_eq!(
            (config.agent.max_model_calls, config.agent.deadline_seconds),
            (3, 9)
        );
        config.validate().unwrap();

        let mut config = Config::default();
        let error = config
            .apply_env(|name| (name == "CAIRN_MODEL_PROVIDER").then(|| "openai".into()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("CAIRN_OPENAI_BASE_URL"), "{error}");
        config.model = ModelConfig::OpenAi(OpenAiSettings {
            base_url: "ftp://m".into(),
            model: "q".into(),
            api_key: None,
            timeout_seconds: 1,
        });
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("base_url")
        );
    }

    #[test]
    fn egress_and_cors_sections_parse_strictly() {
        let config = Config::from_toml(
            "[egress]\npermitted_ranges = [\"10.0.0.5/32\"]\nallowed_origins = [\"https://*.example.com\"]\ndns_timeout_ms = 100\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(config.egress.denied_ranges, default_denied_ranges());
        assert_eq!(config.egress.permitted_ranges.len(), 1);
        let ceiling = config.egress.ceiling(config.listen);
        assert!(
            ceiling
                .check_address("10.0.0.5:80".parse().unwrap())
                .is_ok()
        );
        assert!(
            ceiling
                .check_address("10.0.0.6:80".parse().unwrap())
                .is_err()
        );
        assert!(ceiling.check_address(config.listen).is_err());
        for (toml, word) in [
            ("[egress]\ndenied_ranges = [\"10.0.0.1/8\"]\n", "10.0.0.1/8"),
            (
                "[egress]\nallowed_origins = [\"https://x.example/path\"]\n",
                "path",
            ),
            ("[egress]\nblock = []\n", "block"),
            ("[cors]\norigins = []\n", "origins"),
        ] {
            let error = Config::from_toml(toml, Path::new("c.toml"))
                .unwrap_err()
                .to_string();
            assert!(error.contains(word), "{error}");
        }
        let mut config = Config::default();
        config.cors.allowed_origins = vec!["https://addin.example.com".into()];
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("cors.allowed_origins"), "{error}");
        config.auth = Config::from_toml(
            "[auth]\nmode = \"oidc\"\nissuer = \"https://i\"\naudience = \"a\"\n",
            Path::new("c.toml"),
        )
        .unwrap()
        .auth;
        config.validate().unwrap();
        config.cors.allowed_origins = vec!["https://addin.example.com/".into()];
        assert!(config.validate().is_err());
        config.cors.allowed_origins = vec!["*".into()];
        assert!(config.validate().is_err());
        config.cors.allowed_origins.clear();
        config
            .apply_env(|name| match name {
                "CAIRN_EGRESS_PERMITTED_RANGES" => Some("10.1.0.0/16, 10.2.0.0/16".into()),
                "CAIRN_CORS_ALLOWED_ORIGINS" => Some("https://a.example".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(config.egress.permitted_ranges.len(), 2);
        assert_eq!(config.cors.allowed_origins, ["https://a.example"]);
        let error = Config::default()
            .apply_env(|name| (name == "CAIRN_EGRESS_PERMITTED_RANGES").then(|| "nope".into()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("CAIRN_EGRESS_PERMITTED_RANGES"), "{error}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut config = Config::from_toml(
            "[auth]\nmode = \"oidc\"\nissuer = \"https://i\"\naudience = \"a\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        config
            .apply_env(|name| match name {
                "DATABASE_URL" => Some("postgres://db/cairn".into()),
                "CAIRN_OIDC_AUDIENCE" => Some("b".into()),
                "CAIRN_LISTEN" => Some("10.0.0.1:9000".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(config.ledger_url(), "postgres://db/cairn");
        let AuthConfig::Oidc(oidc) = &config.auth else {
            panic!()
        };
        assert_eq!(oidc.audience, "b");
        assert_eq!(oidc.tenant_claim, "tenant");
        config.validate().unwrap();
        let error = config
            .apply_env(|name| (name == "CAIRN_MAX_BODY_BYTES").then(|| "lots".into()))
            .unwrap_err();
        assert!(error.to_string().contains("CAIRN_MAX_BODY_BYTES"));
    }
}
