//! Look up and annotate contacts and accounts in a REST CRM.
//!
//! The CRM lives at the `base_url` setting; the README documents the small REST API the
//! plugin expects. The plugin sends no credentials of its own: the host injects the
//! tenant's OAuth token at egress, and only to the hosts the manifest allows, so a token
//! never passes through the plugin.

use cairn_sdk::http::{self, HttpError, Request, Response};
use cairn_sdk::prelude::*;
use serde::Deserializer;
use serde_json::Value;

/// Most contacts `search_contacts` returns.
pub const MAX_LIMIT: u32 = 50;
/// Longest note accepted, in characters.
pub const MAX_NOTE_CHARS: usize = 5000;

/// A person in the CRM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Contact {
    /// The contact's id in the CRM.
    #[serde(deserialize_with = "id_string")]
    pub id: String,
    /// Full name.
    pub name: String,
    /// Email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Phone number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Job title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The id of the account (company) the contact belongs to.
    #[serde(
        default,
        deserialize_with = "opt_id_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub account_id: Option<String>,
}

/// A company in the CRM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Account {
    /// The account's id in the CRM.
    #[serde(deserialize_with = "id_string")]
    pub id: String,
    /// Company name.
    pub name: String,
    /// Industry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub industry: Option<String>,
    /// Website.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub website: Option<String>,
    /// Who owns the account on our side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Annual revenue, in the CRM's currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annual_revenue: Option<f64>,
    /// The account's contacts, if the CRM includes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contacts: Vec<Contact>,
}

/// A note attached to a contact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Note {
    /// The note's id in the CRM.
    #[serde(deserialize_with = "id_string")]
    pub id: String,
    /// The contact the note is attached to.
    #[serde(deserialize_with = "id_string")]
    pub contact_id: String,
    /// The note's text.
    pub text: String,
    /// When the CRM recorded it (RFC 3339), if it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

/// Arguments of `search_contacts`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchContacts {
    /// Words to look for in names, emails and companies, e.g. "Anna Berg" or "acme.com".
    pub query: String,
    /// At most this many contacts (1 to 50, default 10).
    #[schemars(range(min = 1, max = 50))]
    pub limit: Option<u32>,
}

/// The result of `search_contacts`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ContactList {
    /// Matching contacts, best match first.
    pub contacts: Vec<Contact>,
    /// How many contacts are returned.
    pub count: usize,
}

/// Arguments of `get_account`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetAccount {
    /// The account's id, e.g. from a contact's `account_id`.
    pub id: String,
}

/// Arguments of `add_note`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddNote {
    /// The contact's id, from `search_contacts`.
    pub contact_id: String,
    /// The note, e.g. a summary of a call.
    pub text: String,
}

/// Searches the CRM's contacts.
pub fn search_contacts(input: SearchContacts) -> Result<ContactList, ToolError> {
    let query = input.query.trim();
    if query.is_empty() {
        return Err(ToolError::invalid_input("`query` must not be empty"));
    }
    let limit = input.limit.unwrap_or(10);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ToolError::invalid_input(format!(
            "`limit` must be between 1 and {MAX_LIMIT}"
        )));
    }
    let url = format!(
        "{}/contacts?q={}&limit={limit}",
        base_url()?,
        http::encode_component(query)
    );
    let response = send(Request::get(url), "contacts")?;
    // The API answers `{"contacts": [...]}`; a bare array is accepted too.
    let contacts: Vec<Contact> = match parse::<Value>(&response)? {
        Value::Array(items) => from_value(Value::Array(items), &response)?,
        Value::Object(mut obj) => match obj.remove("contacts") {
            Some(items) => from_value(items, &response)?,
            None => return Err(unexpected(&response, "no `contacts` field")),
        },
        _ => return Err(unexpected(&response, "not a list of contacts")),
    };
    let contacts: Vec<Contact> = contacts.into_iter().take(limit as usize).collect();
    Ok(ContactList {
        count: contacts.len(),
        contacts,
    })
}

/// Fetches one account by id.
pub fn get_account(input: GetAccount) -> Result<Account, ToolError> {
    let id = non_empty_id("id", &input.id)?;
    let url = format!("{}/accounts/{}", base_url()?, http::encode_component(id));
    let response = send(Request::get(url), &format!("account `{id}`"))?;
    parse(&response)
}

/// Attaches a note to a contact.
pub fn add_note(input: AddNote) -> Result<Note, ToolError> {
    let id = non_empty_id("contact_id", &input.contact_id)?;
    let text = input.text.trim();
    if text.is_empty() {
        return Err(ToolError::invalid_input("`text` must not be empty"));
    }
    if text.chars().count() > MAX_NOTE_CHARS {
        return Err(ToolError::invalid_input(format!(
            "`text` is longer than {MAX_NOTE_CHARS} characters"
        )));
    }
    let url = format!(
        "{}/contacts/{}/notes",
        base_url()?,
        http::encode_component(id)
    );
    let request = Request::post(url).json(&serde_json::json!({ "text": text }))?;
    let response = send(request, &format!("contact `{id}`"))?;
    parse(&response)
}

cairn_sdk::plugin! { tools: [search_contacts, get_account, add_note] }

/// The configured CRM root, without a trailing slash.
fn base_url() -> Result<String, ToolError> {
    let url = config::require("base_url")?;
    let url = url.trim().trim_end_matches('/');
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("https://") || lower.starts_with("http://")) || url.contains(['?', '#'])
    {
        return Err(ToolError::config(format!(
            "the `base_url` setting must be an http(s) URL without query, e.g. https://crm.example.com; got `{url}`"
        )));
    }
    Ok(url.to_owned())
}

fn non_empty_id<'a>(field: &str, id: &'a str) -> Result<&'a str, ToolError> {
    let id = id.trim();
    if id.is_empty() {
        return Err(ToolError::invalid_input(format!(
            "`{field}` must not be empty"
        )));
    }
    Ok(id)
}

/// Sends a request expecting JSON and maps the CRM's error statuses to tool errors.
fn send(request: Request, what: &str) -> Result<Response, ToolError> {
    let response = http::request(request.header("accept", "application/json"))?;
    let status = response.status;
    if response.is_success() {
        return Ok(response);
    }
    let detail = error_detail(&response);
    let err = match status {
        404 => ToolError::not_found(format!("the CRM has no {what}")),
        400 | 422 => ToolError::invalid_input(format!("the CRM rejected the request: {detail}")),
        401 | 403 => ToolError::new(
            "upstream_unauthorized",
            format!(
                "the CRM refused access (HTTP {status}); an administrator may need to \
                 reconnect the CRM account"
            ),
        ),
        429 => ToolError::new(
            "upstream_rate_limited",
            "the CRM is rate limiting requests; try again in a minute",
        ),
        _ => ToolError::from(HttpError::Status {
            status,
            url: response.url.clone(),
            body: detail,
        }),
    };
    Err(err)
}

/// The CRM's own error message (`{"error": ...}` or `{"message": ...}`), else the start of
/// the body.
fn error_detail(response: &Response) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(&response.body) {
        for key in ["error", "message", "detail"] {
            match v.get(key) {
                Some(Value::String(s)) => return s.clone(),
                Some(Value::Object(o)) => {
                    if let Some(Value::String(s)) = o.get("message") {
                        return s.clone();
                    }
                }
                _ => {}
            }
        }
    }
    let text = response.text();
    let text = text.trim();
    if text.is_empty() {
        format!("HTTP {}", response.status)
    } else {
        text.chars().take(200).collect()
    }
}

fn parse<T: serde::de::DeserializeOwned>(response: &Response) -> Result<T, ToolError> {
    serde_json::from_slice(&response.body).map_err(|e| unexpected(response, &e.to_string()))
}

fn from_value<T: serde::de::DeserializeOwned>(
    value: Value,
    response: &Response,
) -> Result<T, ToolError> {
    serde_json::from_value(value).map_err(|e| unexpected(response, &e.to_string()))
}

fn unexpected(response: &Response, why: &str) -> ToolError {
    ToolError::upstream(format!(
        "the CRM answered {} with unexpected content: {why}",
        response.url
    ))
}

/// Ids may come as strings or numbers; the plugin always hands out strings.
fn id_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "expected an id (string or number), got {other}"
        ))),
    }
}

fn opt_id_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        Value::Number(n) => Ok(Some(n.to_string())),
        other => Err(serde::de::Error::custom(format!(
            "expected an id (string or number), got {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_sdk::http::Method;
    use cairn_sdk::testing::{mock_http, set_config, unset_config};
    use serde_json::json;
    use std::cell::RefCell;
    use std::rc::Rc;

    const BASE: &str = "https://crm.example.com/api";

    /// Installs a mock CRM that records requests and answers with `answer`.
    fn crm(answer: impl Fn(&Request) -> Response + 'static) -> Rc<RefCell<Vec<Request>>> {
        set_config("base_url", &format!("{BASE}/"));
        let seen = Rc::new(RefCell::new(Vec::new()));
        let log = seen.clone();
        mock_http(move |req| {
            log.borrow_mut().push(req.clone());
            Ok(answer(req))
        });
        seen
    }

    fn search(query: &str, limit: Option<u32>) -> Result<ContactList, ToolError> {
        search_contacts(SearchContacts {
            query: query.into(),
            limit,
        })
    }

    #[test]
    fn searches_contacts() {
        let seen = crm(|_| {
            Response::new(
                200,
                json!({ "contacts": [
                    { "id": 7, "name": "Anna Berg", "email": "anna@acme.com", "account_id": 3, "extra": true },
                    { "id": "c-8", "name": "Bo Acme" }
                ] })
                .to_string(),
            )
        });
        let r = search("  Anna & Co/x ", Some(5)).unwrap();
        assert_eq!(r.count, 2);
        assert_eq!(r.contacts[0].id, "7");
        assert_eq!(r.contacts[0].account_id.as_deref(), Some("3"));
        assert_eq!(r.contacts[1].email, None);
        let seen = seen.borrow();
        assert_eq!(seen[0].method, Method::Get);
        assert_eq!(
            seen[0].url,
            "https://crm.example.com/api/contacts?q=Anna%20%26%20Co%2Fx&limit=5"
        );
        assert_eq!(seen[0].header_value("accept"), Some("application/json"));
        // The plugin never sends credentials itself: the host injects them at egress.
        assert_eq!(seen[0].header_value("authorization"), None);
        assert_eq!(seen[0].header_value("cookie"), None);
    }

    #[test]
    fn accepts_a_bare_array_and_caps_the_limit() {
        crm(|_| {
            let items: Vec<Value> = (0..30)
                .map(|i| json!({ "id": i, "name": format!("P{i}") }))
                .collect();
            Response::new(200, Value::from(items).to_string())
        });
        assert_eq!(search("p", None).unwrap().count, 10);
        assert_eq!(search("p", Some(50)).unwrap().count, 30);
    }

    #[test]
    fn rejects_bad_search_input_without_calling_the_crm() {
        let seen = crm(|_| Response::new(200, "[]"));
        assert_eq!(search(" ", None).unwrap_err().code, "invalid_input");
        assert_eq!(search("x", Some(0)).unwrap_err().code, "invalid_input");
        assert_eq!(search("x", Some(51)).unwrap_err().code, "invalid_input");
        assert!(seen.borrow().is_empty());
    }

    #[test]
    fn gets_an_account() {
        let seen = crm(|_| {
            Response::new(
                200,
                json!({ "id": "acc 1", "name": "Acme", "industry": "Tools", "annual_revenue": 1.5e6,
                        "contacts": [ { "id": 7, "name": "Anna Berg" } ] })
                .to_string(),
            )
        });
        let a = get_account(GetAccount { id: "acc 1".into() }).unwrap();
        assert_eq!(a.name, "Acme");
        assert_eq!(a.contacts.len(), 1);
        assert_eq!(
            seen.borrow()[0].url,
            "https://crm.example.com/api/accounts/acc%201"
        );
    }

    #[test]
    fn path_ids_cannot_escape_the_api() {
        let seen = crm(|_| Response::new(404, ""));
        let e = get_account(GetAccount {
            id: "../admin?x=1".into(),
        })
        .unwrap_err();
        assert_eq!(e.code, "not_found");
        assert_eq!(
            seen.borrow()[0].url,
            "https://crm.example.com/api/accounts/..%2Fadmin%3Fx%3D1"
        );
    }

    #[test]
    fn adds_a_note() {
        let seen = crm(|req| {
            let body: Value = serde_json::from_slice(req.body.as_deref().unwrap()).unwrap();
            Response::new(
                201,
                json!({ "id": 99, "contact_id": 7, "text": body["text"], "created_at": "2027-03-12T10:00:00Z" })
                    .to_string(),
            )
        });
        let n = add_note(AddNote {
            contact_id: "7".into(),
            text: "  Called about the renewal.  ".into(),
        })
        .unwrap();
        assert_eq!(n.id, "99");
        assert_eq!(n.text, "Called about the renewal.");
        let seen = seen.borrow();
        assert_eq!(seen[0].method, Method::Post);
        assert_eq!(seen[0].url, "https://crm.example.com/api/contacts/7/notes");
        assert_eq!(
            seen[0].header_value("content-type"),
            Some("application/json")
        );
    }

    #[test]
    fn note_input_is_checked() {
        crm(|_| Response::new(201, "{}"));
        let bad = |contact_id: &str, text: String| {
            add_note(AddNote {
                contact_id: contact_id.into(),
                text,
            })
            .unwrap_err()
            .code
        };
        assert_eq!(bad("", "x".into()), "invalid_input");
        assert_eq!(bad("7", "   ".into()), "invalid_input");
        assert_eq!(bad("7", "x".repeat(MAX_NOTE_CHARS + 1)), "invalid_input");
    }

    #[test]
    fn maps_crm_errors() {
        let status = Rc::new(RefCell::new(500u16));
        let s = status.clone();
        crm(move |_| {
            let code = *s.borrow();
            match code {
                422 => Response::new(422, r#"{"error":{"message":"text too long"}}"#),
                _ => Response::new(code, "<html>Service Unavailable</html>"),
            }
        });
        let code_for = |c: u16| {
            *status.borrow_mut() = c;
            get_account(GetAccount { id: "1".into() }).unwrap_err()
        };
        assert_eq!(code_for(404).code, "not_found");
        let e = code_for(422);
        assert_eq!(e.code, "invalid_input");
        assert!(e.message.contains("text too long"), "{}", e.message);
        assert_eq!(code_for(401).code, "upstream_unauthorized");
        assert_eq!(code_for(403).code, "upstream_unauthorized");
        assert_eq!(code_for(429).code, "upstream_rate_limited");
        let e = code_for(503);
        assert_eq!(e.code, "upstream_error");
        assert!(
            e.message.contains("503") && e.message.contains("Service Unavailable"),
            "{}",
            e.message
        );
    }

    #[test]
    fn bad_json_is_an_upstream_error() {
        crm(|req| {
            if req.url.contains("/accounts/") {
                Response::new(200, "<html>login</html>")
            } else {
                Response::new(200, r#"{"items": []}"#)
            }
        });
        let e = get_account(GetAccount { id: "1".into() }).unwrap_err();
        assert_eq!(e.code, "upstream_error");
        assert!(e.message.contains("unexpected content"), "{}", e.message);
        let e = search("x", None).unwrap_err();
        assert!(e.message.contains("no `contacts` field"), "{}", e.message);
    }

    #[test]
    fn egress_denial_and_missing_config() {
        set_config("base_url", BASE);
        mock_http(|_| Err(HttpError::Denied("not in outbound_hosts".into())));
        assert_eq!(search("x", None).unwrap_err().code, "egress_denied");
        unset_config("base_url");
        assert_eq!(search("x", None).unwrap_err().code, "config_missing");
        set_config("base_url", "crm.example.com");
        assert_eq!(search("x", None).unwrap_err().code, "config_missing");
    }

    #[test]
    fn follows_redirects_within_the_crm() {
        crm(|req| {
            if req.url.ends_with("/accounts/1") {
                Response::new(301, "").with_header("location", "/api/accounts/1-new")
            } else {
                Response::new(200, r#"{"id":"1-new","name":"Acme"}"#)
            }
        });
        assert_eq!(
            get_account(GetAccount { id: "1".into() }).unwrap().id,
            "1-new"
        );
    }

    #[test]
    fn json_calls_as_the_host_makes_them() {
        crm(|_| Response::new(200, r#"{"contacts":[]}"#));
        assert_eq!(
            call_tool("search_contacts", r#"{"query":"anna"}"#).unwrap(),
            r#"{"contacts":[],"count":0}"#
        );
        let e = call_tool("get_account", r#"{"account":"1"}"#).unwrap_err();
        assert_eq!(e.code, "invalid_input");
    }
}
