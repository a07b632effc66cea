//! The EigenLayer AVS node API (AVS node specification v0.0.1, "AVS Node API") on the metrics
//! listener: who the node is, its health as one HTTP status, and its backing services each with
//! its own health. The node decides what its services are and how healthy it is
//! ([`NodeReport`]); this module only speaks the protocol.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The specification version served (also what `?version=` may name).
pub const SPEC_VERSION: &str = "v0.0.1";

/// The node's health as the specification counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeHealth {
    /// 200: every service up.
    Healthy,
    /// 206: initializing, or some backing services not healthy while the node still serves.
    PartiallyHealthy,
    /// 503: the node cannot serve.
    Unhealthy,
}

/// A backing service's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceStatus {
    /// Serving.
    Up,
    /// Not serving.
    Down,
    /// Starting.
    Initializing,
}

impl ServiceStatus {
    fn as_str(self) -> &'static str {
        match self {
            ServiceStatus::Up => "Up",
            ServiceStatus::Down => "Down",
            ServiceStatus::Initializing => "Initializing",
        }
    }

    fn http(self) -> StatusCode {
        match self {
            ServiceStatus::Up => StatusCode::OK,
            ServiceStatus::Initializing => StatusCode::PARTIAL_CONTENT,
            ServiceStatus::Down => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// One backing service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeService {
    /// Stable id (used in `/eigen/node/services/{id}/health`).
    pub id: String,
    /// Short name.
    pub name: String,
    /// What it is.
    pub description: String,
    /// Its status now.
    pub status: ServiceStatus,
}

/// The node's health and services, now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    /// Overall.
    pub health: NodeHealth,
    /// Every backing service.
    pub services: Vec<NodeService>,
}

/// Builds the report on each request.
pub type NodeApi = Arc<dyn Fn() -> NodeReport + Send + Sync>;

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A JSON string literal.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `?version=` other than the served one: 404 with the specification's message.
fn unsupported(query: Option<&str>) -> Option<Response> {
    let asked = query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("version="))?;
    let served = SPEC_VERSION.trim_start_matches('v');
    (asked.trim_start_matches('v') != served).then(|| {
        json(
            StatusCode::NOT_FOUND,
            r#"{"message":"API version not found"}"#.into(),
        )
    })
}

/// The `/eigen` routes.
pub(crate) fn routes(node: NodeApi) -> Router {
    let identity = format!(
        r#"{{"node_name":"avsnode","spec_version":{},"node_version":{}}}"#,
        quote(SPEC_VERSION),
        quote(&format!("v{}", crate::VERSION))
    );
    let version = format!(
        r#"{{"version":{}}}"#,
        quote(&format!("avsnode/v{}", env!("CARGO_PKG_VERSION")))
    );
    let spec = format!(r#"{{"api_version":{}}}"#, quote(SPEC_VERSION));
    // A fixed JSON answer.
    let fixed = |body: String| {
        get(move |RawQuery(q): RawQuery| async move {
            unsupported(q.as_deref()).unwrap_or_else(|| json(StatusCode::OK, body))
        })
    };
    let (health_node, services_node, service_node) = (node.clone(), node.clone(), node);
    Router::new()
        .route("/eigen/node", fixed(identity))
        .route("/eigen/node/version", fixed(version))
        .route("/eigen/node/spec-version", fixed(spec))
        .route(
            "/eigen/node/health",
            get(move |RawQuery(q): RawQuery| async move {
                if let Some(refused) = unsupported(q.as_deref()) {
                    return refused;
                }
                let status = match health_node().health {
                    NodeHealth::Healthy => StatusCode::OK,
                    NodeHealth::PartiallyHealthy => StatusCode::PARTIAL_CONTENT,
                    NodeHealth::Unhealthy => StatusCode::SERVICE_UNAVAILABLE,
                };
                status.into_response()
            }),
        )
        .route(
            "/eigen/node/services",
            get(move |RawQuery(q): RawQuery| async move {
                if let Some(refused) = unsupported(q.as_deref()) {
                    return refused;
                }
                let entries: Vec<String> = services_node()
                    .services
                    .iter()
                    .map(|s| {
                        format!(
                            r#"{{"id":{},"name":{},"description":{},"status":{}}}"#,
                            quote(&s.id),
                            quote(&s.name),
                            quote(&s.description),
                            quote(s.status.as_str())
                        )
                    })
                    .collect();
                json(
                    StatusCode::OK,
                    format!(r#"{{"services":[{}]}}"#, entries.join(",")),
                )
            }),
        )
        .route(
            "/eigen/node/services/{id}/health",
            get(
                move |Path(id): Path<String>, RawQuery(q): RawQuery| async move {
                    if let Some(refused) = unsupported(q.as_deref()) {
                        return refused;
                    }
                    match service_node().services.iter().find(|s| s.id == id) {
                        Some(s) => s.status.http().into_response(),
                        None => json(
                            StatusCode::NOT_FOUND,
                            r#"{"message":"no such service"}"#.into(),
                        ),
                    }
                },
            ),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(quote("a\"b\\c\n"), r#""a\"b\\c\u000a""#);
    }

    #[test]
    fn only_the_served_version_is_answered() {
        assert!(unsupported(None).is_none());
        assert!(unsupported(Some("version=v0.0.1")).is_none());
        assert!(unsupported(Some("x=1&version=0.0.1")).is_none());
        let refused = unsupported(Some("version=1.0.0")).expect("refused");
        assert_eq!(refused.status(), StatusCode::NOT_FOUND);
    }
}
