//! The prompt: the GGUF's own chat template (rendered as Hugging Face renders it, with
//! `trim_blocks` and `lstrip_blocks`) and the tool instructions.
//!
//! SmolLM2's template has no `tools` variable, so offered tools are described in the
//! system message, with the one reply format the constrained decoder then enforces.
//! Keeping tools in the system message also keeps them in the fixed prefix whose KV cache
//! is reused across requests.

use minijinja::Environment;
use serde::Serialize;

use crate::{ChatMessage, ModelError, Role, ToolDefinition};

/// A message as the template sees it: a role and a string.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TemplateMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: &'static str,
    /// The text.
    pub content: String,
}

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
}

impl ChatTemplate {
    /// Compiles a Jinja chat template (from `tokenizer.chat_template`).
    pub fn new(source: &str) -> Result<Self, ModelError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template_owned("chat", source.to_owned())
            .map_err(|e| ModelError::Embedded(format!("the GGUF's chat template: {e}")))?;
        Ok(Self { env })
    }

    /// Renders a conversation; with `add_generation_prompt` it ends where the assistant's
    /// reply begins.
    pub fn render(
        &self,
        messages: &[TemplateMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ModelError> {
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| ModelError::Embedded(e.to_string()))?;
        template
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => "",
                eos_token => "<|im_end|>",
            })
            .map_err(|e| ModelError::Embedded(format!("rendering the chat template: {e}")))
    }
}

/// The system message used when the caller gives none but offers tools (SmolLM2's own
/// default, which the template would otherwise insert).
const DEFAULT_SYSTEM: &str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

/// Builds the template's messages: tools described in the system message, assistant tool
/// calls written in the reply format, tool results as `tool` turns.
pub fn template_messages(
    messages: &[ChatMessage],
    tools: &[ToolDefinition],
) -> Vec<TemplateMessage> {
    let mut out = Vec::with_capacity(messages.len() + 1);
    let mut rest = messages;
    if !tools.is_empty() {
        let system = match messages.first() {
            Some(m) if m.role == Role::System => {
                rest = &messages[1..];
                m.content.clone().unwrap_or_default()
            }
            _ => DEFAULT_SYSTEM.to_owned(),
        };
        out.push(TemplateMessage {
            role: "system",
            content: format!("{system}\n\n{}", tools_prompt(tools)),
        });
    }
    for m in rest {
        let role = match m.role {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        };
        let mut content = m.content.clone().unwrap_or_default();
        for call in &m.tool_calls {
            if !content.is_empty() {
                content.push('\n');
            }
            content.push_str(&call_text(&call.name, &call.arguments));
        }
        out.push(TemplateMessage { role, content });
    }
    out
}

/// The reply format for a call; the constrained decoder produces exactly this shape.
pub fn call_text(name: &str, arguments: &str) -> String {
    let name = serde_json::Value::String(name.to_owned());
    format!("{{\"tool\": {name}, \"arguments\": {arguments}}}")
}

/// The tool section of the system message.
fn tools_prompt(tools: &[ToolDefinition]) -> String {
    let mut s = String::from("You can call these tools:\n");
    for t in tools {
        let schema = serde_json::to_string(&t.parameters).unwrap_or_else(|_| "{}".into());
        s.push_str(&format!(
            "- {}: {}\n  arguments (JSON Schema): {schema}\n",
            t.name, t.description
        ));
    }
    s.push_str(
        "To call a tool, reply with only a JSON object such as \
         {\"tool\": \"<name>\", \"arguments\": {...}}. \
         Otherwise reply with your answer in plain text.",
    );
    s
}

/// The prefix the KV cache is kept for: the system turn (including the tool section) as
/// rendered, when the conversation starts with one; `None` otherwise.
pub fn fixed_prefix(
    template: &ChatTemplate,
    messages: &[TemplateMessage],
) -> Result<Option<String>, ModelError> {
    match messages.first() {
        Some(first) if first.role == "system" => {
            let prefix = template.render(std::slice::from_ref(first), false)?;
            Ok(Some(prefix))
        }
        _ => Ok(None),
    }
}
