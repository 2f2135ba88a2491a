//! The SDK as a plugin author uses it, natively: the `plugin!` macro, argument errors,
//! the in-memory kv store, config, and HTTP through a mock (redirects included).

use cairn_sdk::http::{self, HttpError, Method, Request, Response};
use cairn_sdk::prelude::*;
use cairn_sdk::testing;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct AddInput {
    /// First addend.
    a: i64,
    /// Second addend.
    b: i64,
    /// Optional label.
    label: Option<String>,
}

#[derive(Serialize, JsonSchema)]
struct Sum {
    /// The sum.
    sum: i64,
}

fn add(input: AddInput) -> Result<Sum, ToolError> {
    if input.label.as_deref() == Some("") {
        return Err(ToolError::invalid_input("`label` must not be empty"));
    }
    Ok(Sum {
        sum: input
            .a
            .checked_add(input.b)
            .ok_or_else(|| ToolError::invalid_input("overflow"))?,
    })
}

#[derive(Deserialize, JsonSchema)]
struct Empty {}

#[derive(Serialize, JsonSchema)]
struct Count {
    count: u32,
}

fn bump(_: Empty) -> Result<Count, ToolError> {
    let count = kv::get_json::<u32>("count")?.unwrap_or(0) + 1;
    kv::set_json("count", &count)?;
    Ok(Count { count })
}

cairn_sdk::plugin! { tools: [add, bump] }

#[test]
fn describes_tools_with_2020_12_schemas() {
    let d = descriptors();
    assert_eq!(
        d.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        ["add", "bump"]
    );
    let input = &d[0].input_schema;
    assert_eq!(
        input["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(input["type"], "object");
    assert_eq!(input["properties"]["a"]["description"], "First addend.");
    assert_eq!(input["required"], serde_json::json!(["a", "b"]));
    assert_eq!(input["additionalProperties"], false);
    assert_eq!(d[0].output_schema["properties"]["sum"]["type"], "integer");
}

#[test]
fn calls_by_name_through_json() {
    assert_eq!(
        call_tool("add", r#"{"a": 2, "b": 3}"#).unwrap(),
        r#"{"sum":5}"#
    );
    let e = call_tool("nope", "{}").unwrap_err();
    assert_eq!(e.code, "unknown_tool");
    assert!(e.message.contains("nope"));
}

#[test]
fn bad_arguments_name_the_field() {
    let e = call_tool("add", r#"{"a": 2, "b": "three"}"#).unwrap_err();
    assert_eq!(e.code, "invalid_input");
    assert!(e.message.contains("`b`"), "{}", e.message);
    assert!(!e.message.contains("line 1"), "{}", e.message);

    let e = call_tool("add", r#"{"a": 2}"#).unwrap_err();
    assert!(e.message.contains("missing field `b`"), "{}", e.message);

    let e = call_tool("add", r#"{"a": 1, "b": 2, "c": 3}"#).unwrap_err();
    assert!(e.message.contains("unknown field `c`"), "{}", e.message);

    for bad in ["", "[1,2]", "{\"a\":1,\"b\":2} x", "null"] {
        let e = call_tool("add", bad).unwrap_err();
        assert_eq!(e.code, "invalid_input", "{bad}");
    }
    // The tool's own errors pass through untouched.
    let e = call_tool("add", r#"{"a": 1, "b": 2, "label": ""}"#).unwrap_err();
    assert_eq!(e, ToolError::invalid_input("`label` must not be empty"));
}

#[test]
fn kv_is_in_memory_per_test() {
    assert_eq!(call_tool("bump", "{}").unwrap(), r#"{"count":1}"#);
    assert_eq!(call_tool("bump", "{}").unwrap(), r#"{"count":2}"#);
    kv::set("task/2", b"b").unwrap();
    kv::set("task/1", b"a").unwrap();
    kv::set("tasks", b"x").unwrap();
    assert_eq!(kv::list_keys("task/").unwrap(), ["task/1", "task/2"]);
    kv::delete("task/1").unwrap();
    kv::delete("task/1").unwrap();
    assert_eq!(kv::get("task/1").unwrap(), None);
    assert!(matches!(kv::get(""), Err(kv::KvError::InvalidKey(_))));
    assert!(matches!(
        kv::get(&"k".repeat(257)),
        Err(kv::KvError::InvalidKey(_))
    ));
    kv::set("count", b"not json").unwrap();
    let e: ToolError = kv::get_json::<u32>("count").unwrap_err().into();
    assert_eq!(e.code, "storage_error");
    testing::clear_kv();
    assert_eq!(kv::list_keys("").unwrap(), Vec::<String>::new());
}

#[test]
fn kv_quota() {
    testing::set_kv_quota(Some(10));
    kv::set("a", b"123456789").unwrap();
    let e: ToolError = kv::set("b", b"1").unwrap_err().into();
    assert_eq!(e.code, "quota_exceeded");
    kv::set("a", b"12345678").unwrap(); // replacing does not count twice
}

#[test]
fn config_values() {
    assert_eq!(config::get("base_url"), None);
    assert_eq!(
        config::require("base_url").unwrap_err().code,
        "config_missing"
    );
    testing::set_config("base_url", "https://x");
    assert_eq!(config::require("base_url").unwrap(), "https://x");
    testing::set_config("base_url", "  ");
    assert!(config::require("base_url").is_err());
}

#[test]
fn http_without_mock_fails_cleanly() {
    let e = http::get("https://example.com/").unwrap_err();
    assert!(e.to_string().contains("mock"), "{e}");
    assert!(matches!(
        http::get("example.com"),
        Err(HttpError::InvalidUrl { .. })
    ));
}

#[test]
fn follows_redirects_as_new_requests() {
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let log = seen.clone();
    testing::mock_http(move |req| {
        log.borrow_mut()
            .push((req.method.clone(), req.url.clone(), req.body.clone()));
        Ok(match req.url.as_str() {
            "https://a.example/start" => Response::new(302, "").with_header("Location", "/next"),
            "https://a.example/next" => {
                Response::new(307, "").with_header("location", "https://b.example/final")
            }
            "https://b.example/final" => Response::new(200, r#"{"ok":true}"#),
            other => panic!("unexpected {other}"),
        })
    });
    let r = http::request(
        Request::post("https://a.example/start")
            .header("authorization", "Bearer guest-set")
            .body("x"),
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.url, "https://b.example/final");
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["ok"], true);
    let seen = seen.borrow();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].0, Method::Post);
    // 302 after POST turns into a bodiless GET; 307 keeps the method.
    assert_eq!((seen[1].0.clone(), seen[1].2.clone()), (Method::Get, None));
    assert_eq!(seen[2].0, Method::Get);
}

#[test]
fn cross_origin_redirect_drops_credentials() {
    testing::mock_http(|req| {
        Ok(if req.url.starts_with("https://a.example") {
            Response::new(301, "").with_header("location", "https://b.example/")
        } else {
            assert_eq!(req.header_value("authorization"), None);
            assert_eq!(req.header_value("x-keep"), Some("1"));
            Response::new(204, "")
        })
    });
    let r = http::request(
        Request::get("https://a.example/")
            .header("Authorization", "x")
            .header("x-keep", "1"),
    )
    .unwrap();
    assert_eq!(r.status, 204);
}

#[test]
fn stops_after_five_redirects() {
    let mut n = 0;
    testing::mock_http(move |_| {
        n += 1;
        Ok(Response::new(302, "").with_header("location", &format!("/hop{n}")))
    });
    let e = http::get("https://a.example/").unwrap_err();
    assert!(matches!(e, HttpError::TooManyRedirects { .. }), "{e:?}");
    let e: ToolError = e.into();
    assert_eq!(e.code, "upstream_error");

    // Redirects can be returned instead of followed.
    let r = http::request(Request::get("https://a.example/").no_redirects()).unwrap();
    assert_eq!(r.status, 302);
}

#[test]
fn denial_maps_to_egress_denied() {
    testing::mock_http(|_| Err(HttpError::Denied("not allowed".into())));
    let e: ToolError = http::get("https://evil.example/").unwrap_err().into();
    assert_eq!(e.code, "egress_denied");
}

#[test]
fn get_json_checks_status_and_body() {
    testing::mock_http(|req| {
        assert_eq!(req.header_value("Accept"), Some("application/json"));
        Ok(match req.url.as_str() {
            "https://a.example/bad" => Response::new(200, "<html>"),
            "https://a.example/down" => Response::new(503, "maintenance"),
            _ => Response::new(200, "[1,2]"),
        })
    });
    assert_eq!(
        http::get_json::<Vec<u8>>("https://a.example/ok").unwrap(),
        [1, 2]
    );
    let e = http::get_json::<Vec<u8>>("https://a.example/bad").unwrap_err();
    assert!(matches!(e, HttpError::Decode { .. }));
    let e = http::get_json::<Vec<u8>>("https://a.example/down").unwrap_err();
    assert!(
        e.to_string().contains("503") && e.to_string().contains("maintenance"),
        "{e}"
    );
}
