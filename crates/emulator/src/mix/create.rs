//! Decoding and validating `POST /api/sessions` bodies as the Go handler and session service
//! do: `json.Decoder` with `DisallowUnknownFields` (first value only, case-insensitive keys, Go's
//! error wording), then the handler's checks in its order. The session service's own wording
//! (browser mode, cdpUrl) and the callback checks are not public; those messages are ours.

use axum::response::Response;
use serde_json::Value;

use super::reply;

const BROWSER_MODES: [&str; 3] = [
    "electron-embedded-browser",
    "local-browser-service",
    "remote-cdp-websocket",
];
const MAX_REPLACE_PROMPT_BYTES: usize = 100 * 1024;
const MAX_APPEND_PROMPT_BYTES: usize = 50 * 1024;

/// `CreateSessionRequest` after Go-style decoding; absent and `null` fields are empty.
#[derive(Debug, Default)]
pub(super) struct CreateRequest {
    pub(super) title: String,
    pub(super) custom_system_prompt: String,
    pub(super) prompt_mode: String,
    pub(super) session_type: String,
    pub(super) subagent_type: String,
    pub(super) browser_mode: String,
    pub(super) cdp_url: String,
    pub(super) callbacks: Vec<Value>,
}

/// The JSON keys of Go's `CallbackConfig`; any other key in a callback is an unknown field.
const CALLBACK_KEYS: [&str; 10] = [
    "toolName",
    "type",
    "name",
    "bashCommand",
    "bashTimeout",
    "excludeFromContext",
    "includeFullHistory",
    "messageContent",
    "subAgentPrompt",
    "subAgentType",
];

/// Go's `json.Decoder` with `DisallowUnknownFields`: only the first JSON value is read, keys
/// match case-insensitively, unknown keys and wrong types fail with Go's wording.
pub(super) fn decode_create(body: &[u8]) -> Result<CreateRequest, String> {
    let value = match serde_json::Deserializer::from_slice(body)
        .into_iter::<Value>()
        .next()
    {
        None => return Err("EOF".to_owned()),
        Some(Err(err)) if err.is_eof() => return Err("unexpected EOF".to_owned()),
        Some(Err(err)) => return Err(err.to_string()),
        Some(Ok(value)) => value,
    };
    let map = match value {
        Value::Null => return Ok(CreateRequest::default()),
        Value::Object(map) => map,
        other => {
            let kind = json_kind(&other);
            return Err(format!(
                "json: cannot unmarshal {kind} into Go value of type http.CreateSessionRequest"
            ));
        }
    };
    let mut req = CreateRequest::default();
    for (key, value) in map {
        let type_error = |go_type: &str| {
            let kind = json_kind(&value);
            format!(
                "json: cannot unmarshal {kind} into Go struct field CreateSessionRequest.{key} of type {go_type}"
            )
        };
        let field = match key.to_ascii_lowercase().as_str() {
            "title" => &mut req.title,
            "customsystemprompt" => &mut req.custom_system_prompt,
            "promptmode" => &mut req.prompt_mode,
            "sessiontype" => &mut req.session_type,
            "subagenttype" => &mut req.subagent_type,
            "browsermode" => &mut req.browser_mode,
            "cdpurl" => &mut req.cdp_url,
            "callbacks" => {
                match &value {
                    Value::Null => {}
                    Value::Array(items) => {
                        for item in items {
                            let Value::Object(callback) = item else {
                                return Err(type_error("interfaces.CallbackConfig"));
                            };
                            if let Some(unknown) = callback
                                .keys()
                                .find(|k| !CALLBACK_KEYS.iter().any(|c| c.eq_ignore_ascii_case(k)))
                            {
                                return Err(format!("json: unknown field \"{unknown}\""));
                            }
                        }
                        req.callbacks = items.clone();
                    }
                    _ => return Err(type_error("[]interfaces.CallbackConfig")),
                }
                continue;
            }
            _ => return Err(format!("json: unknown field \"{key}\"")),
        };
        match &value {
            Value::Null => {}
            Value::String(text) => *field = text.clone(),
            _ => return Err(type_error("string")),
        }
    }
    Ok(req)
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The error response for an invalid request, if any: the handler's checks in its order, then
/// the session service's (which the handler reports as 500), then the callbacks'.
pub(super) fn reject_create(req: &CreateRequest) -> Option<Response> {
    if req.title.is_empty() {
        return Some(reply::validation_error("title", "title is required"));
    }
    let mode = if req.prompt_mode.is_empty() {
        "default"
    } else {
        req.prompt_mode.as_str()
    };
    let limit = match mode {
        "default" => None,
        "append" => Some(("append", MAX_APPEND_PROMPT_BYTES)),
        "replace" => Some(("replace", MAX_REPLACE_PROMPT_BYTES)),
        _ => {
            let message = "promptMode must be 'default', 'append', or 'replace'";
            return Some(reply::validation_error("promptMode", message));
        }
    };
    let size = req.custom_system_prompt.len();
    if let Some((mode, max)) = limit
        && size > max
    {
        let message = format!(
            "Custom prompt size ({}KB) exceeds {mode} mode limit of {}KB",
            size / 1024,
            max / 1024
        );
        return Some(reply::validation_error("customSystemPrompt", &message));
    }
    if !req.session_type.is_empty() && req.session_type != "main" {
        let message =
            "API can only create main sessions. Subagent sessions are created automatically.";
        return Some(reply::validation_error("sessionType", message));
    }
    if !req.subagent_type.is_empty() {
        let message = "subagentType cannot be set for API-created sessions. Subagent sessions are created \
                       programmatically by the task delegation system.";
        return Some(reply::validation_error("subagentType", message));
    }
    // The session service's wording is not public; these messages are the emulator's own.
    let service_error = |why: String| Some(reply::internal_error("creating session", &why));
    if req.browser_mode.is_empty() {
        return service_error("browser mode is required".to_owned());
    }
    if !BROWSER_MODES.contains(&req.browser_mode.as_str()) {
        return service_error(format!("invalid browser mode: {}", req.browser_mode));
    }
    let ws = req.cdp_url.starts_with("ws://") || req.cdp_url.starts_with("wss://");
    if req.browser_mode == "remote-cdp-websocket" && !ws {
        return service_error(
            "cdpUrl must start with ws:// or wss:// for remote-cdp-websocket".to_owned(),
        );
    }
    for (i, callback) in req.callbacks.iter().enumerate() {
        let text = |key: &str| {
            callback
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
        };
        if text("toolName").is_empty() {
            return Some(reply::validation_error(
                "callbacks",
                &format!("callback {i}: toolName is required"),
            ));
        }
        if !["bash_script", "sub_agent", "send_message"].contains(&text("type")) {
            let message = format!("callback {i}: invalid callback type '{}'", text("type"));
            return Some(reply::validation_error("callbacks", &message));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_like_go() {
        let req = decode_create(
            br#"{"Title":"t","browserMode":"local-browser-service","cdpUrl":null} trailing"#,
        )
        .unwrap();
        assert_eq!(
            (req.title.as_str(), req.browser_mode.as_str()),
            ("t", "local-browser-service")
        );
        assert_eq!(decode_create(b"").unwrap_err(), "EOF");
        assert_eq!(
            decode_create(br#"{"title":"#).unwrap_err(),
            "unexpected EOF"
        );
        assert_eq!(
            decode_create(br#"{"bogus":1}"#).unwrap_err(),
            r#"json: unknown field "bogus""#
        );
        assert_eq!(
            decode_create(br#"{"title":5}"#).unwrap_err(),
            "json: cannot unmarshal number into Go struct field CreateSessionRequest.title of type string"
        );
        assert_eq!(
            decode_create(b"[]").unwrap_err(),
            "json: cannot unmarshal array into Go value of type http.CreateSessionRequest"
        );
        assert_eq!(
            decode_create(br#"{"callbacks":[{"toolName":"*","type":"bash_script","x":1}]}"#)
                .unwrap_err(),
            r#"json: unknown field "x""#
        );
        assert_eq!(decode_create(b"null").unwrap().title, "");
    }
}
