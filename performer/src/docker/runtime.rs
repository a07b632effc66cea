//! The Docker Engine as the node sees it: the performer network, the containers this node owns.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bollard::Docker;
use bollard::models::{ContainerSummaryStateEnum, NetworkCreateRequest};
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};

use super::error::{DockerError, failed, status};
use super::{LABEL_AVS, LABEL_IMAGE, LABEL_NODE, LABEL_PERFORMER};

/// How a container stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerExit {
    /// Its exit code; `None` if the container is gone.
    pub code: Option<i64>,
    /// The kernel killed it for exceeding its memory limit.
    pub oom_killed: bool,
}

impl fmt::Display for ContainerExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(code) => write!(f, "exit code {code}")?,
            None => f.write_str("container removed")?,
        }
        if self.oom_killed {
            f.write_str(", out of memory")?;
        }
        Ok(())
    }
}

/// A container carrying this node's label, as [`DockerRuntime::owned_containers`] lists it.
#[derive(Debug, Clone)]
pub struct OwnedContainer {
    /// The container id.
    pub id: String,
    /// Its name, without Docker's leading `/`.
    pub name: String,
    /// Label `io.avsnode.avs`.
    pub avs: String,
    /// Label `io.avsnode.performer`.
    pub performer_id: String,
    /// Whether it is running.
    pub running: bool,
    /// The image reference it was started from (label `io.avsnode.image`).
    pub image: String,
}

/// A connection to the Docker Engine, shared (cloned) by all docker performers of a node.
#[derive(Clone, Debug)]
pub struct DockerRuntime {
    pub(super) docker: Docker,
    /// Docker 20.10 happily creates two networks with one name when asked at the same time:
    /// this node's callers take turns.
    pub(super) network_lock: Arc<tokio::sync::Mutex<()>>,
}

impl DockerRuntime {
    /// Connects to the engine `DOCKER_HOST` names (`unix://…` or `tcp://…`), else to
    /// `/var/run/docker.sock`, and settles on the API version both sides speak.
    pub async fn connect() -> Result<Self, DockerError> {
        let host = std::env::var("DOCKER_HOST")
            .unwrap_or_else(|_| "unix:///var/run/docker.sock".to_owned());
        let connect = |source| DockerError::Connect {
            host: host.clone(),
            source: Box::new(source),
        };
        let docker = Docker::connect_with_defaults()
            .map_err(connect)?
            // Older engines (20.10 speaks 1.41) refuse requests for a newer API version.
            .negotiate_version()
            .await
            .map_err(connect)?;
        Ok(Self {
            docker,
            network_lock: Arc::default(),
        })
    }

    /// Creates the bridge network `name`, labelled `io.avsnode.node={node_id}`, unless it exists;
    /// `internal`: with no route beyond this host (Docker's `--internal`). An existing network of
    /// that name must be internal exactly when asked for.
    pub async fn ensure_network(
        &self,
        name: &str,
        node_id: &str,
        internal: bool,
    ) -> Result<(), DockerError> {
        let _turn = self.network_lock.lock().await;
        match self.docker.inspect_network(name, None).await {
            Ok(network) if network.internal.unwrap_or(false) == internal => return Ok(()),
            Ok(_) => {
                return Err(DockerError::Invalid(format!(
                    "the Docker network {name} exists but {} internal; remove it (docker network \
                     rm {name}) so the node can create it as configured",
                    if internal { "is not" } else { "is" }
                )));
            }
            Err(e) if status(&e) == Some(404) => {}
            Err(e) => return Err(failed("inspect network", name)(e)),
        }
        let request = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".into()),
            internal: Some(internal),
            labels: Some(HashMap::from([(LABEL_NODE.to_owned(), node_id.to_owned())])),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(_) => {
                tracing::info!(network = name, internal, "created the performer network");
                Ok(())
            }
            // Created by someone else in the meantime.
            Err(e) if status(&e) == Some(409) => Ok(()),
            Err(e) => Err(failed("create network", name)(e)),
        }
    }

    /// Every container (running or not) labelled `io.avsnode.node={node_id}`.
    pub async fn owned_containers(
        &self,
        node_id: &str,
    ) -> Result<Vec<OwnedContainer>, DockerError> {
        let containers = list(&self.docker, &[(LABEL_NODE, node_id)]).await?;
        Ok(containers
            .into_iter()
            .map(|c| {
                let label = |name: &str| {
                    c.labels
                        .as_ref()
                        .and_then(|labels| labels.get(name))
                        .cloned()
                        .unwrap_or_default()
                };
                OwnedContainer {
                    name: c
                        .names
                        .as_ref()
                        .and_then(|names| names.first())
                        .map(|name| name.trim_start_matches('/').to_owned())
                        .unwrap_or_default(),
                    avs: label(LABEL_AVS),
                    performer_id: label(LABEL_PERFORMER),
                    running: c.state == Some(ContainerSummaryStateEnum::RUNNING),
                    image: Some(label(LABEL_IMAGE))
                        .filter(|image| !image.is_empty())
                        .or(c.image)
                        .unwrap_or_default(),
                    id: c.id.unwrap_or_default(),
                }
            })
            .collect())
    }

    /// Kills and removes a container (and its anonymous volumes). One that does not exist is
    /// already removed.
    pub async fn remove_container(&self, id: &str) -> Result<(), DockerError> {
        remove(&self.docker, id).await
    }
}

/// A summary of every container (running or not) carrying all of `labels`.
pub(super) async fn list(
    docker: &Docker,
    labels: &[(&str, &str)],
) -> Result<Vec<bollard::models::ContainerSummary>, DockerError> {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let filters = HashMap::from([("label", labels.clone())]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(options))
        .await
        .map_err(failed("list containers labelled", &labels.join(",")))
}

pub(super) async fn remove(docker: &Docker, id: &str) -> Result<(), DockerError> {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(id, Some(options)).await {
        Err(e) if status(&e) != Some(404) => Err(failed("remove container", id)(e)),
        _ => Ok(()),
    }
}
