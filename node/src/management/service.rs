//! `ExecutorManagementService` (DESIGN §2.1, §7): deploy, list and remove performers, on its own
//! listener, every call but `GetChallengeToken` authenticated by an admin key.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use avsnode_metrics::Metrics;
use avsnode_proto::executor::executor_management_service_server::{
    ExecutorManagementService, ExecutorManagementServiceServer,
};
use avsnode_proto::executor::{
    DeployArtifactRequest, DeployArtifactResponse, GetChallengeTokenRequest,
    GetChallengeTokenResponse, ListPerformersRequest, ListPerformersResponse, Performer,
    PerformerEnv, RemovePerformerRequest, RemovePerformerResponse,
};
use avsnode_signer::messages::Address;
use prost::Message;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::auth::Challenges;
use crate::deployments::{DeployError, Deployments, PerformerInfo};
use crate::pipeline::rate_limit::RateLimiter;
use avsnode_listener::Connections;
use avsnode_metrics::WarningBudget;

/// Full method names: what an admin signs, with the request (DESIGN §7).
pub mod methods {
    /// `DeployArtifact`.
    pub const DEPLOY: &str = "/eigenlayer.hourglass.v1.ExecutorManagementService/DeployArtifact";
    /// `ListPerformers`.
    pub const LIST: &str = "/eigenlayer.hourglass.v1.ExecutorManagementService/ListPerformers";
    /// `RemovePerformer`.
    pub const REMOVE: &str = "/eigenlayer.hourglass.v1.ExecutorManagementService/RemovePerformer";
}

/// How long a challenge token lives.
const CHALLENGE_TTL: Duration = Duration::from_secs(300);
/// Outstanding challenge tokens at most (anyone who reaches the port can ask for one) ...
const MAX_CHALLENGES: usize = 1024;
/// ... and from one source address: asking for more replaces that address's oldest, never
/// anyone else's, so a flood of token requests cannot evict an admin's token.
const MAX_CHALLENGES_PER_SOURCE: usize = 8;

/// The management service.
#[derive(Debug)]
pub struct Management {
    performers: Arc<Deployments>,
    operator: Address,
    /// `None`: authentication is off (`require_auth = false`).
    admins: Option<Vec<Address>>,
    /// Node environment variables a deploy may pass by name (`value_from_env`).
    env_from_node: Vec<String>,
    challenges: Challenges,
    /// Calls per source address, checked before a request is read.
    calls: Arc<RateLimiter<Option<IpAddr>>>,
    metrics: Arc<Metrics>,
}

impl Management {
    /// A service over `performers`; `admins` `None` turns authentication off; `env_from_node`
    /// names the node's environment variables a deploy may pass on; `calls_per_second` (in
    /// bursts of up to five times that) is what one source address may call.
    pub fn new(
        performers: Arc<Deployments>,
        operator: Address,
        admins: Option<Vec<Address>>,
        env_from_node: Vec<String>,
        calls_per_second: f64,
        metrics: Arc<Metrics>,
    ) -> Management {
        for reason in ["rate_limited", "challenges_full"] {
            metrics.management_refused.with_label_values(&[reason]);
        }
        let burst = (calls_per_second * 5.0)
            .ceil()
            .clamp(1.0, f64::from(u32::MAX)) as u32;
        Management {
            performers,
            operator,
            admins,
            env_from_node,
            challenges: Challenges::new(CHALLENGE_TTL, MAX_CHALLENGES, MAX_CHALLENGES_PER_SOURCE),
            calls: Arc::new(RateLimiter::new(calls_per_second, burst)),
            metrics,
        }
    }

    /// Checks the signed challenge of a call to `method` whose request, without its `auth`
    /// field, encodes to `unsigned`.
    fn authenticate(
        &self,
        method: &str,
        unsigned: &[u8],
        auth: Option<&avsnode_proto::executor::common::AuthSignature>,
    ) -> Result<(), Status> {
        let Some(admins) = &self.admins else {
            return Ok(());
        };
        match self.challenges.verify(admins, method, unsigned, auth) {
            Ok(admin) => {
                info!(%admin, method, "management call authenticated");
                Ok(())
            }
            Err(e) => {
                warn!(method, error = %e, "management call refused");
                Err(e.into())
            }
        }
    }
}

/// Serves `service` on `connections` (admitted by the management listener's gate) until
/// `shutdown`, over TLS (with its handshake timeout) when `tls` is given. Requests over
/// `max_message_size` are refused from their length prefix, and a source address over its call
/// rate before its request is read.
pub async fn serve(
    service: Management,
    connections: Connections,
    max_message_size: usize,
    tls: Option<(Arc<avsnode_listener::tls::ServerTls>, Duration)>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let calls = service.calls.clone();
    let metrics = service.metrics.clone();
    let warnings = Arc::new(WarningBudget::new("management", 10));
    // Interceptors run on the headers, before the body is read or decoded.
    let rate_limit = move |request: Request<()>| {
        let source = request.remote_addr().map(|a| a.ip());
        if calls.take(source, None, std::time::Instant::now()) {
            Ok(request)
        } else {
            metrics
                .management_refused
                .with_label_values(&["rate_limited"])
                .inc();
            warnings.warn(|| {
                warn!(
                    source = ?source,
                    "management call refused: over the calls allowed per second from one address"
                );
            });
            Err(Status::resource_exhausted(
                "too many management calls from this address; slow down",
            ))
        }
    };
    let service =
        ExecutorManagementServiceServer::new(service).max_decoding_message_size(max_message_size);
    let router = tonic::transport::Server::builder()
        .add_service(InterceptedService::new(service, rate_limit));
    match tls {
        None => {
            router
                .serve_with_incoming_shutdown(connections, shutdown)
                .await
        }
        Some((tls, handshake_timeout)) => {
            router
                .serve_with_incoming_shutdown(
                    avsnode_listener::tls::incoming(connections, tls, handshake_timeout),
                    shutdown,
                )
                .await
        }
    }
}

#[tonic::async_trait]
impl ExecutorManagementService for Management {
    async fn get_challenge_token(
        &self,
        request: Request<GetChallengeTokenRequest>,
    ) -> Result<Response<GetChallengeTokenResponse>, Status> {
        let source = request.remote_addr().map(|a| a.ip());
        let asked = request.into_inner().operator_address;
        let asked: Address = asked
            .parse()
            .map_err(|e| Status::invalid_argument(format!("operator_address {asked:?}: {e}")))?;
        if asked != self.operator {
            return Err(Status::invalid_argument(format!(
                "operator_address {asked} is not this node's operator ({})",
                self.operator
            )));
        }
        let (challenge_token, expires_at) = self.challenges.issue(source).map_err(|full| {
            self.metrics
                .management_refused
                .with_label_values(&["challenges_full"])
                .inc();
            Status::resource_exhausted(full.to_string())
        })?;
        Ok(Response::new(GetChallengeTokenResponse {
            challenge_token,
            expires_at: i64::try_from(expires_at).unwrap_or(i64::MAX),
        }))
    }

    async fn deploy_artifact(
        &self,
        request: Request<DeployArtifactRequest>,
    ) -> Result<Response<DeployArtifactResponse>, Status> {
        let mut request = request.into_inner();
        let auth = request.auth.take();
        self.authenticate(methods::DEPLOY, &request.encode_to_vec(), auth.as_ref())?;
        if request.kubernetes.is_some() {
            return Err(Status::invalid_argument(
                "kubernetes settings are not supported: this node runs performers in Docker",
            ));
        }
        let image = image_reference(&request.registry_url, &request.digest)
            .map_err(Status::invalid_argument)?;
        let env = request
            .env
            .iter()
            .map(|env| resolve_env(env, &self.env_from_node))
            .collect::<Result<Vec<_>, _>>()
            .map_err(Status::invalid_argument)?;
        // Spawned: a caller that goes away (a deadline, Ctrl-C) must not abandon a half-done
        // deploy with a started container or an undrained old one.
        let performers = self.performers.clone();
        let avs = request.avs_address.clone();
        let id = tokio::spawn(async move { performers.deploy(&avs, image, env).await })
            .await
            .map_err(|e| Status::internal(format!("the deploy task failed: {e}")))?
            .map_err(to_status)?;
        Ok(Response::new(DeployArtifactResponse {
            success: true,
            message: format!("performer {id} is serving AVS {}", request.avs_address),
            deployment_id: id,
        }))
    }

    async fn list_performers(
        &self,
        request: Request<ListPerformersRequest>,
    ) -> Result<Response<ListPerformersResponse>, Status> {
        let mut request = request.into_inner();
        let auth = request.auth.take();
        self.authenticate(methods::LIST, &request.encode_to_vec(), auth.as_ref())?;
        let avs = match request.avs_address.as_str() {
            "" => None,
            a => Some(
                a.parse::<Address>()
                    .map_err(|e| Status::invalid_argument(format!("avs_address {a:?}: {e}")))?,
            ),
        };
        let performers = self
            .performers
            .list(avs.as_ref())
            .into_iter()
            .map(to_wire)
            .collect();
        Ok(Response::new(ListPerformersResponse { performers }))
    }

    async fn remove_performer(
        &self,
        request: Request<RemovePerformerRequest>,
    ) -> Result<Response<RemovePerformerResponse>, Status> {
        let mut request = request.into_inner();
        let auth = request.auth.take();
        self.authenticate(methods::REMOVE, &request.encode_to_vec(), auth.as_ref())?;
        let performers = self.performers.clone();
        let id = request.performer_id.clone();
        let avs = tokio::spawn(async move { performers.remove(&id).await })
            .await
            .map_err(|e| Status::internal(format!("the removal task failed: {e}")))?
            .map_err(to_status)?;
        Ok(Response::new(RemovePerformerResponse {
            success: true,
            message: format!(
                "performer {} of AVS {avs} removed; the AVS has no performer until the next deploy",
                request.performer_id
            ),
        }))
    }
}

/// The image a deploy asks for. Hourglass sends a registry and a digest and runs
/// `registry@digest`; a `digest` that is not `sha256:…` is taken as a tag (`registry:tag`), and
/// with no registry the digest alone is used (a local image id `sha256:…`, or a full reference).
pub fn image_reference(registry: &str, digest: &str) -> Result<String, String> {
    let bad = |c: char| c.is_whitespace() || c.is_control();
    if registry.contains(bad) || digest.contains(bad) {
        return Err("registry_url and digest must not contain whitespace".into());
    }
    match (registry, digest) {
        (_, "") => Err("digest is empty: name the image's sha256 digest (or a tag)".into()),
        ("", digest) => Ok(digest.to_owned()),
        (registry, digest) if digest.starts_with("sha256:") => Ok(format!("{registry}@{digest}")),
        (registry, tag) => Ok(format!("{registry}:{tag}")),
    }
}

/// A `PerformerEnv` as a (name, value) pair; `value_from_env` reads the node's own environment.
fn resolve_env(env: &PerformerEnv, env_from_node: &[String]) -> Result<(String, String), String> {
    let name = &env.name;
    avsnode_performer::check_env_name(name)?;
    if env.kubernetes_env.is_some() {
        return Err(format!(
            "env {name}: kubernetes secret/config-map references are not supported"
        ));
    }
    if !env.value_from_env.is_empty() {
        if !env_from_node.contains(&env.value_from_env) {
            return Err(format!(
                "env {name}: value_from_env {:?} is not in management.env_from_node",
                env.value_from_env
            ));
        }
        return std::env::var(&env.value_from_env)
            .map(|value| (name.clone(), value))
            .map_err(|_| {
                format!(
                    "env {name}: value_from_env names {:?}, which is not set in the node's environment",
                    env.value_from_env
                )
            });
    }
    Ok((name.clone(), env.value.clone()))
}

fn to_status(e: DeployError) -> Status {
    let message = e.to_string();
    match e {
        DeployError::UnknownAvs(_) | DeployError::UnknownPerformer(_) => Status::not_found(message),
        DeployError::NotDocker { .. } | DeployError::Start { .. } => {
            Status::failed_precondition(message)
        }
        DeployError::InProgress(_) => Status::already_exists(message),
        DeployError::Invalid(_) => Status::invalid_argument(message),
        DeployError::NoDocker(_) => Status::unavailable(message),
        DeployError::Persist { .. } => Status::internal(message),
    }
}

fn to_wire(info: PerformerInfo) -> Performer {
    let (registry, tag) = split_reference(&info.image);
    Performer {
        performer_id: info.performer_id,
        avs_address: info.avs.to_string(),
        status: info.status,
        artifact_registry: registry,
        artifact_digest: info.image_id,
        resource_healthy: info.resource_healthy,
        application_healthy: info.application_healthy,
        last_health_check: info
            .last_health_check
            .map(|t| humantime::format_rfc3339_seconds(t).to_string())
            .unwrap_or_default(),
        container_id: info.container_id,
        artifact_tag: tag,
    }
}

/// `registry/name:tag` → (`registry/name`, `tag`); digests and ids have no tag.
fn split_reference(image: &str) -> (String, String) {
    if let Some((name, _digest)) = image.split_once('@') {
        return (name.to_owned(), String::new());
    }
    if image.starts_with("sha256:") {
        return (String::new(), String::new());
    }
    // A ':' after the last '/' is a tag; one before it is a registry port.
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name.to_owned(), tag.to_owned()),
        _ => (image.to_owned(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references() {
        assert_eq!(
            image_reference("ghcr.io/x/perf", "sha256:abc").unwrap(),
            "ghcr.io/x/perf@sha256:abc"
        );
        assert_eq!(image_reference("perf", "v2").unwrap(), "perf:v2");
        assert_eq!(image_reference("", "sha256:abc").unwrap(), "sha256:abc");
        assert!(image_reference("perf", "").is_err());
        assert!(image_reference("perf x", "v1").is_err());
    }

    #[test]
    fn references_split_into_registry_and_tag() {
        assert_eq!(
            split_reference("localhost:5000/perf:v2"),
            ("localhost:5000/perf".into(), "v2".into())
        );
        assert_eq!(
            split_reference("localhost:5000/perf"),
            ("localhost:5000/perf".into(), String::new())
        );
        assert_eq!(
            split_reference("perf@sha256:ab"),
            ("perf".into(), String::new())
        );
    }

    #[test]
    fn env_names_are_checked() {
        let env = |name: &str| PerformerEnv {
            name: name.into(),
            value: "v".into(),
            ..Default::default()
        };
        assert_eq!(
            resolve_env(&env("A"), &[]).unwrap(),
            ("A".into(), "v".into())
        );
        assert!(resolve_env(&env("PORT"), &[]).is_err());
        assert!(resolve_env(&env(""), &[]).is_err());
        let missing = PerformerEnv {
            name: "B".into(),
            value_from_env: "AVSNODE_TEST_SURELY_UNSET_VARIABLE".into(),
            ..Default::default()
        };
        let allowed = ["AVSNODE_TEST_SURELY_UNSET_VARIABLE".to_owned()];
        let err = resolve_env(&missing, &allowed).unwrap_err();
        assert!(err.contains("not set in the node's environment"), "{err}");
        let err = resolve_env(&missing, &[]).unwrap_err();
        assert!(err.contains("management.env_from_node"), "{err}");
    }
}
