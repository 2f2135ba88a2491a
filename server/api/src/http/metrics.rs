//! Prometheus metrics, kept in memory and rendered as text at `GET /metrics`.
//!
//! Few series and a lock held for nanoseconds: a dependency-free registry is enough.
//! Every label value comes from a closed set, because `/metrics` is unauthenticated and
//! each new value is a new series kept forever: the route is the matched route pattern
//! (never the raw path), the method one of the standard ones or `other` (any token is a
//! valid HTTP method), and tool-call series past [`MAX_TOOL_SERIES`] (plugin and tool
//! names come from tenant manifests) are counted under `other`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;

/// The most distinct (plugin, tool, outcome) series kept; later ones count as `other`.
pub const MAX_TOOL_SERIES: usize = 1000;

/// The method label: a standard method's name, or `other`.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    KNOWN
        .iter()
        .find(|m| *m == method)
        .map_or("other", Method::as_str)
}

impl crate::copilot::ToolCallMetrics for Metrics {
    fn record_tool_call(&self, plugin: &str, tool: &str, ok: bool, elapsed: Duration) {
        Metrics::record_tool_call(self, plugin, tool, ok, elapsed);
    }
}

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }
}

/// The server's metrics.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, String, u16), Histogram>>,
    tool_calls: Mutex<BTreeMap<(String, String, &'static str), Histogram>>,
}

impl Metrics {
    /// Records one HTTP request. `route` must be a matched route pattern (or
    /// `unmatched`), never a raw path.
    pub fn record_request(&self, method: &Method, route: &str, status: u16, elapsed: Duration) {
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        requests
            .entry((method_label(method), route.to_owned(), status))
            .or_default()
            .observe(elapsed);
    }

    /// Records one tool call and whether it succeeded.
    pub fn record_tool_call(&self, plugin: &str, tool: &str, ok: bool, elapsed: Duration) {
        let mut calls = self.tool_calls.lock().unwrap_or_else(|e| e.into_inner());
        let outcome = if ok { "ok" } else { "error" };
        let mut key = (plugin.to_owned(), tool.to_owned(), outcome);
        if !calls.contains_key(&key) && calls.len() >= MAX_TOOL_SERIES {
            key = ("other".to_owned(), "other".to_owned(), outcome);
        }
        calls.entry(key).or_default().observe(elapsed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        out.push_str("# HELP cairn_http_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE cairn_http_requests_total counter\n");
        for ((method, route, status), h) in requests.iter() {
            let _ = writeln!(
                out,
                "cairn_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {}",
                escape(route),
                h.count
            );
        }
        out.push_str("# HELP cairn_http_request_duration_seconds HTTP request latency.\n");
        out.push_str("# TYPE cairn_http_request_duration_seconds histogram\n");
        for ((method, route, status), h) in requests.iter() {
            let labels = format!(
                "method=\"{method}\",route=\"{}\",status=\"{status}\"",
                escape(route)
            );
            write_histogram(&mut out, "cairn_http_request_duration_seconds", &labels, h);
        }
        drop(requests);
        let calls = self.tool_calls.lock().unwrap_or_else(|e| e.into_inner());
        out.push_str("# HELP cairn_tool_calls_total Tool calls by plugin, tool and outcome.\n");
        out.push_str("# TYPE cairn_tool_calls_total counter\n");
        for ((plugin, tool, outcome), h) in calls.iter() {
            let _ = writeln!(
                out,
                "cairn_tool_calls_total{{plugin=\"{}\",tool=\"{}\",outcome=\"{outcome}\"}} {}",
                escape(plugin),
                escape(tool),
                h.count
            );
        }
        out.push_str("# HELP cairn_tool_call_duration_seconds Tool call latency.\n");
        out.push_str("# TYPE cairn_tool_call_duration_seconds histogram\n");
        for ((plugin, tool, outcome), h) in calls.iter() {
            let labels = format!(
                "plugin=\"{}\",tool=\"{}\",outcome=\"{outcome}\"",
                escape(plugin),
                escape(tool)
            );
            write_histogram(&mut out, "cairn_tool_call_duration_seconds", &labels, h);
        }
        out
    }
}

fn write_histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    for (bound, count) in BUCKETS.iter().zip(h.counts) {
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {count}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Middleware: times every request and counts it by matched route and status.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    state.metrics.record_request(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_come_from_closed_sets() {
        let metrics = Metrics::default();
        for i in 0..600 {
            let method = Method::from_bytes(format!("X{i}").as_bytes()).unwrap();
            metrics.record_request(&method, "unmatched", 405, Duration::ZERO);
            metrics.record_tool_call(&format!("p{i}"), &format!("t{i}"), true, Duration::ZERO);
            metrics.record_tool_call(&format!("p{i}"), "t", false, Duration::ZERO);
        }
        metrics.record_request(&Method::GET, "/healthz", 200, Duration::ZERO);
        let text = metrics.render();
        assert!(text.contains("method=\"other\",route=\"unmatched\",status=\"405\"} 600"));
        assert!(!text.contains("X1"), "made-up methods leaked into labels");
        assert!(text.contains("method=\"GET\",route=\"/healthz\""));
        assert_eq!(
            metrics.tool_calls.lock().unwrap().len(),
            MAX_TOOL_SERIES + 2
        );
        assert!(text.contains("plugin=\"other\",tool=\"other\",outcome=\"error\""));
    }
}
