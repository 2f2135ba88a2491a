//! Shared set-up: a ledger per test (SQLite in a temp dir, or a UUID-named PostgreSQL
//! database dropped afterwards), the real runtime with the `tasks`, `table` and hostile
//! plugins, a scripted model, and decorators that count tool executions and fail the
//! ledger on purpose.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use cairn_agent::{
    Agent, AgentConfig, AgentDeps, ApprovalDecision, AvailableTool, Caller, RunOutcome,
    RuntimeTools, StartRun, ToolExecution, ToolExecutor, ToolFailure, ToolInvocation, ToolSelector,
};
use cairn_audit::{
    Actor, Backend, Ledger, LedgerError, NewRun, NewStep, PurgeReport, Run, RunId, StepKind,
    StepPage, StepQuery, StepRecord, TenantId, UserId, VerifyReport,
};
use cairn_manifest::Manifest;
use cairn_model::reasoning::ReasoningReplay;
use cairn_model::{ChatModel, OpenAiCompatible, OpenAiConfig};
use cairn_runtime::{HostCeilings, Plugin, Runtime, RuntimeConfig};
pub use cairn_scripted_model::{ReasoningShape, ScriptedCall, ScriptedServer, Step};
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use serde_json::{Value, json};
use sqlx::Connection;
use tempfile::TempDir;

pub const TENANT: &str = "acme";
pub const USER: &str = "alice";

pub fn tenant() -> TenantId {
    TenantId::parse(TENANT).unwrap()
}

pub fn user() -> UserId {
    UserId::parse(USER).unwrap()
}

// ---------------------------------------------------------------- scripted model

/// One turn calling these tools at once; the server numbers their ids
/// `call_<request>_<position>`, both from 1.
pub fn calls(calls: &[(&str, Value)]) -> Step {
    Step::tool_calls(calls.iter().map(|(n, a)| ScriptedCall::new(*n, a.clone()))).usage(200, 20)
}

/// One turn calling one tool.
pub fn call(name: &str, args: Value) -> Step {
    calls(&[(name, args)])
}

/// A final answer.
pub fn text(text: &str) -> Step {
    Step::text(text).usage(100, 10)
}

/// An answer that comes far too late: the run is cancelled or times out meanwhile.
pub fn hang() -> Step {
    Step::text("too late").delayed(Duration::from_secs(60))
}

/// How a test's provider is configured: tiny backoffs, a generous timeout, and
/// reasoning sent back as `reasoning_content` so replay can be checked on the wire.
pub fn model_config(server: &ScriptedServer) -> OpenAiConfig {
    OpenAiConfig {
        max_retries: 2,
        backoff_base: Duration::from_millis(5),
        backoff_cap: Duration::from_millis(20),
        request_timeout: Duration::from_secs(30),
        reasoning_replay: ReasoningReplay::Field("reasoning_content".into()),
        ..OpenAiConfig::new(server.url(), "scripted")
    }
}

/// Waits until the server has received `n` requests.
pub async fn requests_reach(server: &ScriptedServer, n: usize) {
    let started = std::time::Instant::now();
    while server.requests().len() < n {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the model never got request {n}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------- plugins

fn cache_dir() -> &'static Path {
    static DIR: OnceLock<TempDir> = OnceLock::new();
    DIR.get_or_init(|| TempDir::new().unwrap()).path()
}

/// Serialises loads so parallel tests do not all compile the same component at once.
static LOADING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The hostile plugin's tools, as its `describe()` returns them.
const HOSTILE_TOOLS: &[&str] = &[
    "noop",
    "echo",
    "counter",
    "infinite_loop",
    "allocate_forever",
    "recurse_forever",
    "huge_output",
    "fetch",
    "fetch_many",
    "panic",
    "read_file",
    "read_env",
    "kv_set",
    "kv_get",
    "config_get",
    "log_flood",
];

/// The hostile plugin's manifest: every tool read-only (so calls run without approval)
/// and a short CPU budget so `infinite_loop` is stopped quickly.
fn hostile_manifest() -> Manifest {
    let tools: Vec<Value> = HOSTILE_TOOLS
        .iter()
        .map(|name| {
            json!({
                "name": name,
                "description": format!("hostile {name}"),
                "input_schema": { "type": "object" },
                "output_schema": { "type": "object" },
                "annotations": { "read_only": true },
            })
        })
        .collect();
    Manifest::from_json_str(
        &json!({
            "id": "hostile",
            "version": "0.1.0",
            "publisher": "Cairn agent tests",
            "description": "Attacks the host.",
            "tools": tools,
            "permissions": { "cpu_ms_per_call": 200 },
        })
        .to_string(),
    )
    .unwrap()
}

fn example(name: &str) -> &'static cairn_test_plugins::ExamplePlugin {
    cairn_test_plugins::EXAMPLE_PLUGINS
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("example plugin {name} was not built"))
}

/// A fresh runtime (own key-value store) with `tasks`, `table` and `hostile` loaded.
pub async fn plugins() -> Vec<Plugin> {
    let runtime = Runtime::new(RuntimeConfig {
        ceilings: HostCeilings {
            wall_clock_ms_per_call: 5_000,
            ..HostCeilings::default()
        },
        max_concurrent_calls: 8,
        ..RuntimeConfig::new(cache_dir())
    })
    .unwrap();
    let _guard = LOADING.lock().await;
    let mut out = Vec::new();
    for name in ["tasks", "table"] {
        let p = example(name);
        let manifest = Manifest::from_path(Path::new(p.manifest)).unwrap();
        let bytes = std::fs::read(p.component).unwrap();
        out.push(
            runtime
                .load(&bytes, manifest, Default::default())
                .await
                .unwrap(),
        );
    }
    let bytes = std::fs::read(cairn_test_plugins::HOSTILE).unwrap();
    out.push(
        runtime
            .load(&bytes, hostile_manifest(), Default::default())
            .await
            .unwrap(),
    );
    out
}

/// Counts the calls that reach the executor: proof that a tool did (not) run.
pub struct Counting {
    inner: Arc<dyn ToolExecutor>,
    pub executed: AtomicUsize,
    pub names: Mutex<Vec<String>>,
}

impl Counting {
    pub fn new(inner: Arc<dyn ToolExecutor>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            executed: AtomicUsize::new(0),
            names: Mutex::new(Vec::new()),
        })
    }

    pub fn executed(&self) -> usize {
        self.executed.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl ToolExecutor for Counting {
    async fn tools(&self, tenant: &TenantId) -> Result<Vec<AvailableTool>, ToolFailure> {
        self.inner.tools(tenant).await
    }

    async fn execute(&self, call: ToolInvocation) -> ToolExecution {
        self.executed.fetch_add(1, Ordering::SeqCst);
        self.names.lock().unwrap().push(call.tool.clone());
        self.inner.execute(call).await
    }
}

// ---------------------------------------------------------------- ledgers

pub fn admin_url() -> String {
    std::env::var("CAIRN_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A UUID-named PostgreSQL database, dropped when this is dropped.
pub struct PgDb {
    pub name: String,
    pub url: String,
}

impl PgDb {
    pub async fn create() -> PgDb {
        let name = format!("cairn_agent_{}", uuid::Uuid::new_v4().simple());
        let mut c = sqlx::PgConnection::connect(&admin_url()).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut c)
            .await
            .unwrap();
        let admin = admin_url();
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        let url = format!("{base}/{name}");
        PgDb { name, url }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop on a thread of its own: this may run inside a finished runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin_url()).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut c)
                        .await;
                }
            });
        })
        .join();
    }
}

/// A ledger that refuses the `fail_on`-th append (1-based) as unavailable, and then
/// works again (so the loop's best-effort `run_failed` can be seen).
pub struct FailingLedger {
    pub inner: Arc<dyn Ledger>,
    pub fail_on: usize,
    appends: AtomicUsize,
}

impl FailingLedger {
    pub fn new(inner: Arc<dyn Ledger>, fail_on: usize) -> Self {
        Self {
            inner,
            fail_on,
            appends: AtomicUsize::new(0),
        }
    }
}

#[async_trait]
impl Ledger for FailingLedger {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }
    fn database(&self) -> cairn_audit::Database {
        self.inner.database()
    }
    async fn start_run(&self, new: NewRun) -> cairn_audit::Result<Run> {
        self.inner.start_run(new).await
    }
    async fn append(
        &self,
        tenant: &TenantId,
        run: RunId,
        step: NewStep,
    ) -> cairn_audit::Result<StepRecord> {
        let n = self.appends.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.fail_on {
            return Err(LedgerError::Unavailable {
                operation: "append",
                elapsed: Duration::from_millis(5),
                reason: format!("injected failure on append {n} ({})", step.step.kind_name()),
            });
        }
        self.inner.append(tenant, run, step).await
    }
    async fn run(&self, tenant: &TenantId, run: RunId) -> cairn_audit::Result<Run> {
        self.inner.run(tenant, run).await
    }
    async fn trail(&self, tenant: &TenantId, run: RunId) -> cairn_audit::Result<Vec<StepRecord>> {
        self.inner.trail(tenant, run).await
    }
    async fn query(&self, query: &StepQuery) -> cairn_audit::Result<StepPage> {
        self.inner.query(query).await
    }
    async fn purge_before(
        &self,
        tenant: &TenantId,
        cutoff: DateTime<Utc>,
        actor: &Actor,
    ) -> cairn_audit::Result<PurgeReport> {
        self.inner.purge_before(tenant, cutoff, actor).await
    }
    async fn verify(
        &self,
        tenant: Option<&TenantId>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> cairn_audit::Result<VerifyReport> {
        self.inner.verify(tenant, from, to).await
    }
    fn export(&self, query: StepQuery) -> BoxStream<'_, cairn_audit::Result<StepRecord>> {
        self.inner.export(query)
    }
}

// ---------------------------------------------------------------- harness

/// One test's world: a ledger, the real plugins behind a counting executor, a scripted
/// model, and an agent over them.
pub struct World {
    pub agent: Agent,
    pub ledger: Arc<dyn Ledger>,
    pub server: ScriptedServer,
    pub tools: Arc<Counting>,
    pub config: AgentConfig,
    _dir: Option<TempDir>,
    pub pg: Option<PgDb>,
}

/// A change to a test's provider config (retries, timeout).
type ModelTweak = Box<dyn FnOnce(&mut OpenAiConfig)>;

pub struct WorldBuilder {
    script: Vec<Step>,
    config: AgentConfig,
    model: Option<ModelTweak>,
    chat_model: Option<Arc<dyn ChatModel>>,
    selector: Option<Arc<dyn ToolSelector>>,
    pg: bool,
    fail_append: Option<usize>,
}

pub fn world(script: impl IntoIterator<Item = Step>) -> WorldBuilder {
    WorldBuilder {
        script: script.into_iter().collect(),
        config: AgentConfig {
            system_prompt: Some("You are Cairn.".into()),
            ..AgentConfig::default()
        },
        pg: false,
        fail_append: None,
        model: None,
        chat_model: None,
        selector: None,
    }
}

impl WorldBuilder {
    pub fn config(mut self, f: impl FnOnce(&mut AgentConfig)) -> Self {
        f(&mut self.config);
        self
    }

    pub fn model(mut self, f: impl FnOnce(&mut OpenAiConfig) + 'static) -> Self {
        self.model = Some(Box::new(f));
        self
    }

    /// Runs against this model instead of the scripted server (which still starts, idle).
    pub fn chat_model(mut self, model: Arc<dyn ChatModel>) -> Self {
        self.chat_model = Some(model);
        self
    }

    /// Narrows the tools offered with this selector.
    pub fn selector(mut self, selector: Arc<dyn ToolSelector>) -> Self {
        self.selector = Some(selector);
        self
    }

    pub fn postgres(mut self) -> Self {
        self.pg = true;
        self
    }

    pub fn fail_append(mut self, n: usize) -> Self {
        self.fail_append = Some(n);
        self
    }

    pub async fn build(self) -> World {
        let (ledger, dir, pg) = if self.pg {
            let db = PgDb::create().await;
            let ledger = <dyn Ledger>::open(&db.url).await.unwrap();
            (ledger, None, Some(db))
        } else {
            let dir = TempDir::new().unwrap();
            let url = format!("sqlite:{}", dir.path().join("ledger.db").display());
            (<dyn Ledger>::open(&url).await.unwrap(), Some(dir), None)
        };
        let runtime_tools: Arc<dyn ToolExecutor> = Arc::new(RuntimeTools::new(plugins().await));
        let tools = Counting::new(runtime_tools);
        let server = ScriptedServer::start(self.script).await;
        let mut model_config = model_config(&server);
        if let Some(f) = self.model {
            f(&mut model_config);
        }
        let model: Arc<dyn ChatModel> = match self.chat_model {
            Some(m) => m,
            None => Arc::new(OpenAiCompatible::new(model_config).unwrap()),
        };
        let agent_ledger: Arc<dyn Ledger> = match self.fail_append {
            Some(n) => Arc::new(FailingLedger::new(Arc::clone(&ledger), n)),
            None => Arc::clone(&ledger),
        };
        let mut agent = Agent::new(
            self.config.clone(),
            AgentDeps {
                model,
                ledger: agent_ledger,
                tools: tools.clone(),
            },
        );
        if let Some(selector) = self.selector {
            agent = agent.with_tool_selector(selector);
        }
        World {
            agent,
            ledger,
            server,
            tools,
            config: self.config,
            _dir: dir,
            pg,
        }
    }
}

impl World {
    pub async fn start(&self, message: &str) -> cairn_agent::Result<RunOutcome> {
        self.agent
            .start(StartRun {
                tenant: tenant(),
                user: user(),
                conversation_id: None,
                message: message.into(),
                settings: cairn_agent::RunSettings::default(),
            })
            .await
    }

    /// The run's steps, after checking the whole ledger verifies.
    pub async fn trail(&self, run: RunId) -> Vec<StepRecord> {
        let report = self
            .ledger
            .verify(Some(&tenant()), None, None)
            .await
            .unwrap();
        assert!(report.is_ok(), "ledger does not verify: {report}");
        self.ledger.trail(&tenant(), run).await.unwrap()
    }

    /// Asserts the run's exact sequence of step kinds (and that the ledger verifies);
    /// returns the steps for field checks.
    pub async fn assert_trail(&self, run: RunId, kinds: &[&str]) -> Vec<StepKind> {
        let trail = self.trail(run).await;
        let got: Vec<&str> = trail.iter().map(|s| s.step.kind_name()).collect();
        assert_eq!(got, kinds, "trail of run {run}");
        trail.into_iter().map(|s| s.step).collect()
    }
}

/// The run's owner deciding or cancelling their own run.
pub fn owner() -> Caller {
    Caller::user(user(), ["user"])
}

/// `bob`, who did not start the runs but holds the policy's default approver role; the
/// decisions of [`approve`] and [`deny`] are his.
pub fn approver() -> Caller {
    Caller::user(UserId::parse("bob").unwrap(), ["user", "approver"])
}

pub fn approve(call_id: &str) -> ApprovalDecision {
    ApprovalDecision {
        call_id: call_id.into(),
        approve: true,
        by: UserId::parse("bob").unwrap(),
        reason: None,
        arguments_sha256: None,
    }
}

pub fn deny(call_id: &str, reason: &str) -> ApprovalDecision {
    ApprovalDecision {
        call_id: call_id.into(),
        approve: false,
        by: UserId::parse("bob").unwrap(),
        reason: Some(reason.into()),
        arguments_sha256: None,
    }
}

/// The tool messages of a request body, as (call id, content).
pub fn tool_messages(request: &Value) -> Vec<(String, String)> {
    request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| {
            (
                m["tool_call_id"].as_str().unwrap_or_default().to_string(),
                m["content"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The assistant messages of a request body that call tools.
pub fn assistant_calls(request: &Value) -> Vec<Value> {
    request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "assistant" && m["tool_calls"].is_array())
        .cloned()
        .collect()
}

/// The fields of a tool_error step.
pub fn tool_error(step: &StepKind) -> (&str, &str) {
    match step {
        StepKind::ToolError {
            error_type,
            message,
            ..
        } => (error_type.as_str(), message.as_str()),
        other => panic!("expected tool_error, got {other:?}"),
    }
}
