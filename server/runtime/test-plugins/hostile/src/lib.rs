//! A deliberately hostile plugin used by the runtime's sandbox tests.
//!
//! One component, one tool per attack, plus benign tools (`noop`, `echo`, `counter`) so
//! a test can prove the host still serves the same plugin right after an attack. Written
//! straight against `sdk/wit` with `wit-bindgen` (not through `cairn-sdk`) so the attacks
//! do not depend on what the SDK allows.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingResponse, Method, OutgoingBody, OutgoingRequest, Scheme,
};

wit_bindgen::generate!({
    path: "../../../../sdk/wit",
    world: "cairn:plugin/plugin",
    with: {
        "wasi:http/types@0.2.12": wasip2::http::types,
        "wasi:http/outgoing-handler@0.2.12": wasip2::http::outgoing_handler,
        "wasi:io/poll@0.2.12": wasip2::io::poll,
        "wasi:io/error@0.2.12": wasip2::io::error,
        "wasi:io/streams@0.2.12": wasip2::io::streams,
        "wasi:clocks/monotonic-clock@0.2.12": wasip2::clocks::monotonic_clock,
    },
});

use exports::cairn::plugin::tools::{Guest, ToolDescriptor, ToolError};

/// The tools this component claims to export, in `describe()` order.
const TOOLS: &[&str] = &[
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

/// Incremented by `counter`: a fresh instance per call must always start it at zero.
static COUNTER: AtomicU64 = AtomicU64::new(0);

struct Hostile;

impl Guest for Hostile {
    fn describe() -> Vec<ToolDescriptor> {
        // A slow describe() when the `describe_delay_ms` setting asks for one: the host's
        // tests prove that loading one plugin holds up nobody else.
        if let Some(ms) =
            cairn::plugin::config::get("describe_delay_ms").and_then(|v| v.parse::<u64>().ok())
        {
            wasip2::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
        }
        TOOLS
            .iter()
            .map(|name| ToolDescriptor {
                name: (*name).to_string(),
                input_schema: r#"{"type":"object"}"#.to_string(),
                output_schema: r#"{"type":"object"}"#.to_string(),
            })
            .collect()
    }

    fn call(name: String, arguments: String) -> Result<String, ToolError> {
        let args: Value = serde_json::from_str(&arguments)
            .map_err(|e| tool_error("invalid_input", e.to_string()))?;
        let out = match name.as_str() {
            "noop" => return Ok("{}".to_string()),
            "echo" => args,
            "counter" => json!({ "count": COUNTER.fetch_add(1, Ordering::SeqCst) + 1 }),
            "infinite_loop" => infinite_loop(),
            "allocate_forever" => allocate_forever(),
            "recurse_forever" => json!({ "depth": recurse(0, &mut [0u8; 64]) }),
            // `as` hands the host `bytes` bytes as the raw result, the tool error's
            // message or one log line, each built in ONE guest allocation, so the host
            // is the only place a second copy could appear. (Modes of one tool rather
            // than new tools: worktrees sharing a target dir share this component's file,
            // and a different tool list would break the others' manifests.)
            "huge_output" => match args["as"].as_str() {
                None => json!({ "data": "x".repeat(size(&args)) }),
                Some("result") => return Ok(json_string_of(size(&args))),
                Some("error") => return Err(tool_error("huge", "e".repeat(size(&args)))),
                Some("log") => {
                    let line = "l".repeat(size(&args));
                    cairn::plugin::logging::log(cairn::plugin::logging::Level::Info, &line);
                    json!({ "logged": line.len() })
                }
                Some(other) => return Err(tool_error("invalid_input", format!("as: {other}"))),
            },
            "fetch" => fetch(&args)?,
            "fetch_many" => fetch_many(&args)?,
            "panic" => panic!("hostile plugin panicked on purpose"),
            "read_file" => read_files(),
            "read_env" => json!({
                "vars": std::env::vars().collect::<Vec<_>>(),
                "args": std::env::args().collect::<Vec<_>>(),
                "cwd": std::env::current_dir().ok().map(|p| p.display().to_string()),
            }),
            "kv_set" => {
                let key = args["key"].as_str().unwrap_or_default();
                let value = args["value"].as_str().unwrap_or_default();
                cairn::plugin::kv::set(key, value.as_bytes()).map_err(kv_error)?;
                json!({})
            }
            "kv_get" => {
                let key = args["key"].as_str().unwrap_or_default();
                let value = cairn::plugin::kv::get(key).map_err(kv_error)?;
                let keys = cairn::plugin::kv::list_keys("").map_err(kv_error)?;
                json!({
                    "value": value.map(|v| String::from_utf8_lossy(&v).into_owned()),
                    "keys": keys,
                })
            }
            "config_get" => {
                let key = args["key"].as_str().unwrap_or_default();
                json!({ "value": cairn::plugin::config::get(key) })
            }
            "log_flood" => {
                let lines = args["lines"].as_u64().unwrap_or(10_000);
                for i in 0..lines {
                    cairn::plugin::logging::log(
                        cairn::plugin::logging::Level::Info,
                        &format!("line {i} {}", "y".repeat(10_000)),
                    );
                }
                json!({ "logged": lines })
            }
            other => return Err(tool_error("unknown_tool", format!("no tool {other}"))),
        };
        Ok(out.to_string())
    }
}

fn size(args: &Value) -> usize {
    args["bytes"].as_u64().unwrap_or(1 << 20) as usize
}

/// A JSON string of exactly `bytes` bytes (quotes included), in one allocation.
fn json_string_of(bytes: usize) -> String {
    let mut out = String::with_capacity(bytes.max(2));
    out.push('"');
    out.extend(std::iter::repeat_n('x', bytes.saturating_sub(2)));
    out.push('"');
    out
}

fn tool_error(code: &str, message: impl Into<String>) -> ToolError {
    ToolError {
        code: code.to_string(),
        message: message.into(),
    }
}

fn kv_error(e: cairn::plugin::kv::KvError) -> ToolError {
    use cairn::plugin::kv::KvError;
    match e {
        KvError::QuotaExceeded => tool_error("quota_exceeded", "kv quota exceeded"),
        KvError::InvalidKey(m) => tool_error("invalid_key", m),
        KvError::Store(m) => tool_error("store", m),
    }
}

/// Spins without ever calling the host: only an epoch deadline can stop it.
fn infinite_loop() -> Value {
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

/// Grows the heap a megabyte at a time and touches every page.
fn allocate_forever() -> Value {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![0xAB; 1 << 20]);
        std::hint::black_box(&hoard);
    }
}

/// Unbounded recursion with a frame the optimiser cannot remove.
#[expect(unconditional_recursion, reason = "the stack overflow is the attack")]
fn recurse(depth: u64, pad: &mut [u8; 64]) -> u64 {
    pad[(depth % 64) as usize] = depth as u8;
    let mut next = [0u8; 64];
    next.copy_from_slice(std::hint::black_box(&pad[..]));
    1 + recurse(depth + 1, std::hint::black_box(&mut next))
}

fn read_files() -> Value {
    let paths = [
        "/etc/passwd",
        "/etc/hostname",
        "/proc/self/environ",
        ".",
        "/",
    ];
    let results: Vec<Value> = paths
        .iter()
        .map(|p| match std::fs::read(p) {
            Ok(bytes) => json!({ "path": p, "ok": true, "len": bytes.len() }),
            Err(e) => json!({ "path": p, "ok": false, "error": e.to_string() }),
        })
        .collect();
    let listing = std::fs::read_dir("/").map(|d| d.count()).ok();
    json!({ "results": results, "root_entries": listing })
}

/// GETs `args.url`, following up to `args.max_redirects` (default 5) redirects itself,
/// each as a new request (the host must check every one).
fn fetch(args: &Value) -> Result<Value, ToolError> {
    let mut url = args["url"]
        .as_str()
        .ok_or_else(|| tool_error("invalid_input", "url missing"))?
        .to_string();
    let max_redirects = args["max_redirects"].as_u64().unwrap_or(5);
    let headers: Vec<(String, String)> = args["headers"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let mut hops = Vec::new();
    for _ in 0..=max_redirects {
        let (status, location, body) = get(&url, &headers)
            .map_err(|e| tool_error("upstream_error", format!("GET {url}: {e}")))?;
        hops.push(json!({ "url": url, "status": status }));
        match location {
            Some(next) if (300..400).contains(&status) => url = next,
            _ => {
                return Ok(json!({
                    "status": status,
                    "body": String::from_utf8_lossy(&body),
                    "hops": hops,
                }));
            }
        }
    }
    Err(tool_error("upstream_error", "too many redirects"))
}

/// Issues `args.count` GETs of `args.url` and reports how many succeeded.
fn fetch_many(args: &Value) -> Result<Value, ToolError> {
    let url = args["url"]
        .as_str()
        .ok_or_else(|| tool_error("invalid_input", "url missing"))?;
    let count = args["count"].as_u64().unwrap_or(10);
    let mut ok = 0;
    for i in 0..count {
        get(url, &[])
            .map_err(|e| tool_error("upstream_error", format!("request {i} of {count}: {e}")))?;
        ok += 1;
    }
    Ok(json!({ "ok": ok }))
}

/// One GET. Returns status, `Location` header and the body.
fn get(url: &str, headers: &[(String, String)]) -> Result<(u16, Option<String>, Vec<u8>), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("not an absolute URL: {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let fields = Fields::new();
    for (k, v) in headers {
        fields
            .append(k, v.as_bytes())
            .map_err(|e| format!("header {k} refused: {e:?}"))?;
    }
    let request = OutgoingRequest::new(fields);
    request.set_method(&Method::Get).map_err(|()| "method")?;
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_string()),
    };
    request.set_scheme(Some(&scheme)).map_err(|()| "scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|()| "authority")?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| "path")?;
    let body = request.body().map_err(|()| "body")?;
    OutgoingBody::finish(body, None).map_err(error_text)?;

    let future = outgoing_handler::handle(request, None).map_err(error_text)?;
    let response: IncomingResponse = loop {
        match future.get() {
            Some(result) => {
                break result
                    .map_err(|()| "response taken twice".to_string())?
                    .map_err(error_text)?;
            }
            None => future.subscribe().block(),
        }
    };
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .first()
        .map(|v| String::from_utf8_lossy(v).into_owned());
    let incoming = response.consume().map_err(|()| "consume")?;
    let stream = incoming.stream().map_err(|()| "stream")?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(wasip2::io::streams::StreamError::Closed) => break,
            Err(wasip2::io::streams::StreamError::LastOperationFailed(e)) => {
                return Err(format!("reading body: {}", e.to_debug_string()));
            }
        }
    }
    drop(stream);
    Ok((status, location, body))
}

fn error_text(e: ErrorCode) -> String {
    format!("{e:?}")
}

export!(Hostile);
