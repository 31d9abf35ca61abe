//! `POST /admin/plugins/{name}/promote` and `/rollback`: finish a plugin's staged rollout by
//! hand (docs/plugins.md, "Staged rollout").

use http::{HeaderValue, Method, Response, StatusCode};

use super::{json, method_not_allowed};
use crate::body::Body;
use crate::error::json_error;
use crate::plugins::PluginName;
use crate::state::plugins::GatewayPlugins;

/// `rest` is the path after `/admin/plugins/`.
pub(super) fn rollout(
    plugins: Option<&GatewayPlugins>,
    method: &Method,
    path: &str,
    rest: &str,
    request_id: &HeaderValue,
) -> Response<Body> {
    let Some((name, action)) = rest.split_once('/') else {
        return not_found(path, request_id);
    };
    if action != "promote" && action != "rollback" {
        return not_found(path, request_id);
    }
    if method != Method::POST {
        return method_not_allowed(method, path, "POST", request_id);
    }
    let name = match PluginName::new(name) {
        Ok(n) => n,
        Err(message) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "bad_plugin_name",
                &message,
                request_id,
            )
        }
    };
    let Some(plugins) = plugins else {
        return json_error(
            StatusCode::NOT_FOUND,
            "no_rollout",
            "no route uses plugins",
            request_id,
        );
    };
    let manager = plugins.manager();
    let result = if action == "promote" {
        manager.promote(&name)
    } else {
        manager.rollback(&name)
    };
    match result {
        Ok(hash) => json(
            StatusCode::OK,
            &serde_json::json!({ "plugin": name.as_str(), "action": action, "hash": hash }),
        ),
        Err(e) => json_error(
            StatusCode::CONFLICT,
            "no_rollout",
            &e.to_string(),
            request_id,
        ),
    }
}

fn not_found(path: &str, request_id: &HeaderValue) -> Response<Body> {
    json_error(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("no admin endpoint at {path}; use /admin/plugins/{{name}}/promote or /rollback"),
        request_id,
    )
}
