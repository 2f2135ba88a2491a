//! Shared set-up: runtimes over one compiled-component cache, the hostile plugin's
//! manifest, a local HTTP server that records what reaches it, and the containment check
//! every attack goes through.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_manifest::Manifest;
use cairn_runtime::{
    CallContext, CallFailure, HostCeilings, NoCredentials, Plugin, Runtime, RuntimeConfig,
};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame};
use serde_json::{Value, json};
use tempfile::TempDir;

pub use cairn_test_plugins::HOSTILE_TOOLS;

pub fn hostile_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| std::fs::read(cairn_test_plugins::HOSTILE).expect("hostile plugin built"))
}

/// The hostile plugin's manifest with `permissions` (and `config` declarations) given.
pub fn hostile_manifest(permissions: Value, config: Value) -> Manifest {
    let tools: Vec<Value> = HOSTILE_TOOLS
        .iter()
        .map(|name| {
            json!({
                "name": name,
                "description": format!("hostile {name}"),
                "input_schema": { "type": "object" },
                "output_schema": { "type": "object" },
            })
        })
        .collect();
    let manifest = json!({
        "id": "hostile",
        "version": "0.1.0",
        "publisher": "Cairn runtime tests",
        "description": "Attacks the host.",
        "tools": tools,
        "permissions": permissions,
        "config": config,
    });
    Manifest::from_json_str(&manifest.to_string()).expect("valid hostile manifest")
}

/// One cache directory for the whole test binary, so the hostile plugin is compiled once.
pub fn shared_cache_dir() -> &'static Path {
    static DIR: OnceLock<TempDir> = OnceLock::new();
    DIR.get_or_init(|| TempDir::new().unwrap()).path()
}

/// Serialises loads so parallel tests do not all compile the same component at once.
static LOADING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn test_ceilings() -> HostCeilings {
    HostCeilings {
        wall_clock_ms_per_call: 5_000,
        ..HostCeilings::default()
    }
}

pub fn runtime(config: RuntimeConfig) -> Runtime {
    Runtime::new(config).expect("runtime starts")
}

pub fn default_config() -> RuntimeConfig {
    RuntimeConfig {
        ceilings: test_ceilings(),
        authorizer: Arc::new(NoCredentials),
        ..RuntimeConfig::new(shared_cache_dir())
    }
}

/// Loads the hostile plugin with `permissions` into `runtime`.
pub async fn load_hostile(runtime: &Runtime, permissions: Value) -> Plugin {
    let _guard = LOADING.lock().await;
    runtime
        .load(
            hostile_bytes(),
            hostile_manifest(permissions, json!({})),
            Default::default(),
        )
        .await
        .expect("hostile plugin loads")
}

/// The usual attack set-up: a runtime with test ceilings and the hostile plugin.
pub async fn hostile(permissions: Value) -> (Runtime, Plugin) {
    let rt = runtime(default_config());
    let plugin = load_hostile(&rt, permissions).await;
    (rt, plugin)
}

pub fn alice() -> CallContext {
    CallContext::new("acme", "alice")
}

/// How long a benign `echo` may take even while an attack runs (debug build, 2 cores).
/// Generous on purpose: it catches a benign call stuck behind an attack (which would take
/// the attack's whole budget or forever), not slowness. Under a loaded CI machine (load
/// average 10 on 2 cores) a benign call beside a spinning guest on one thread was measured
/// at 1.6 s, which a 1.5 s bound turned into a false failure. Starvation proper is checked
/// by `contained`'s `during > 0`: a benign call must finish while the attack still runs.
const BENIGN_BUDGET: Duration = Duration::from_secs(5);

/// Runs `tool` as an attack and proves it contained: benign calls started while it runs
/// complete normally and promptly; the attack fails; and the same plugin then serves a
/// benign call. With `long`, at least one benign call must finish while the attack is
/// still running (the attack blocks no worker thread).
pub async fn contained(plugin: &Plugin, tool: &str, args: Value, long: bool) -> CallFailure {
    let attack = {
        let plugin = plugin.clone();
        let tool = tool.to_string();
        tokio::spawn(async move { plugin.call(&alice(), &tool, &args.to_string()).await })
    };
    // Benign calls completed while the attack was still running.
    let mut during = 0;
    loop {
        assert_benign(plugin).await;
        if attack.is_finished() {
            break;
        }
        during += 1;
    }
    if long {
        assert!(during > 0, "no benign call completed while {tool} ran");
    }
    let failure = match attack.await.expect("attack task") {
        Ok(outcome) => panic!("{tool} was not stopped: {}", outcome.output),
        Err(failure) => failure,
    };
    assert_benign(plugin).await;
    failure
}

/// A benign call on `plugin` succeeds, returns its input, and is prompt.
pub async fn assert_benign(plugin: &Plugin) {
    let started = Instant::now();
    let outcome = plugin
        .call(
            &CallContext::new("acme", "bob"),
            "echo",
            r#"{"hello":"world"}"#,
        )
        .await
        .expect("benign call succeeds");
    let elapsed = started.elapsed();
    assert_eq!(outcome.output, r#"{"hello":"world"}"#);
    assert!(elapsed < BENIGN_BUDGET, "benign call took {elapsed:?}");
}

/// One request a [`TestServer`] received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: http::HeaderMap,
}

/// A local HTTP server on 127.0.0.1 that records every request:
/// `/ok` → 200 `hello`; `/redirect?to=URL` → 302; `/big?n=N` → N bytes with a length;
/// `/stream?n=N` → N bytes chunked; `/slow` → answers after 30 s.
pub struct TestServer {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let log = Arc::clone(&log);
                        async move { Ok::<_, Infallible>(respond(req, &log).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(wasmtime_wasi_http::io::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TestServer { addr, seen }
    }

    /// `http://127.0.0.1:PORT`
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

type Reply = http::Response<http_body_util::combinators::BoxBody<Bytes, Infallible>>;

async fn respond(req: http::Request<hyper::body::Incoming>, log: &Mutex<Vec<Seen>>) -> Reply {
    log.lock().unwrap().push(Seen {
        path: req.uri().path().to_string(),
        headers: req.headers().clone(),
    });
    let query = req.uri().query().unwrap_or("").to_string();
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .map(str::to_string)
    };
    let full = |status: u16, body: Vec<u8>| {
        http::Response::builder()
            .status(status)
            .body(Full::new(Bytes::from(body)).boxed())
            .unwrap()
    };
    match req.uri().path() {
        "/ok" => full(200, b"hello".to_vec()),
        "/redirect" => http::Response::builder()
            .status(302)
            .header("location", param("to").unwrap_or_default())
            .body(Full::new(Bytes::new()).boxed())
            .unwrap(),
        "/big" => {
            let n: usize = param("n").and_then(|n| n.parse().ok()).unwrap_or(0);
            full(200, vec![b'b'; n])
        }
        "/stream" => {
            let n: usize = param("n").and_then(|n| n.parse().ok()).unwrap_or(0);
            http::Response::builder()
                .status(200)
                .body(Chunks { left: n }.boxed())
                .unwrap()
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            full(200, b"late".to_vec())
        }
        _ => full(404, b"not found".to_vec()),
    }
}

/// A body of `left` bytes in 1 KiB chunks with no declared length (sent chunked).
struct Chunks {
    left: usize,
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(1024);
        self.left -= n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b's'; n])))))
    }
}
