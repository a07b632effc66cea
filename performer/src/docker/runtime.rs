//! The Docker Engine as the node sees it: the performer network, the containers this node owns.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bollard::Docker;
use bollard::models::{ContainerSummaryStateEnum, NetworkConnectRequest, NetworkCreateRequest};
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
    /// The node's own container, when the node runs in one on this engine: it joins the
    /// performer networks so it can reach the containers it starts.
    own_container: Option<String>,
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
        let own_container = own_container(&docker).await;
        Ok(Self {
            docker,
            network_lock: Arc::default(),
            own_container,
        })
    }

    /// Creates the bridge network `name`, labelled `io.avsnode.node={node_id}`, unless it exists;
    /// `internal`: with no route beyond this host (Docker's `--internal`). An existing network of
    /// that name must be internal exactly when asked for. A node running in a container on this
    /// engine connects its own container to the network (once), so it reaches its performers.
    pub async fn ensure_network(
        &self,
        name: &str,
        node_id: &str,
        internal: bool,
    ) -> Result<(), DockerError> {
        let _turn = self.network_lock.lock().await;
        self.create_network(name, node_id, internal).await?;
        let Some(me) = &self.own_container else {
            return Ok(());
        };
        let network = self
            .docker
            .inspect_network(name, None)
            .await
            .map_err(failed("inspect network", name))?;
        if network
            .containers
            .is_some_and(|containers| containers.contains_key(me))
        {
            return Ok(());
        }
        let request = NetworkConnectRequest {
            container: me.clone(),
            endpoint_config: None,
        };
        self.docker
            .connect_network(name, request)
            .await
            .map_err(failed("connect the node's container to network", name))?;
        tracing::info!(
            network = name,
            container = %me,
            "joined the performer network (the node runs in a container)"
        );
        Ok(())
    }

    async fn create_network(
        &self,
        name: &str,
        node_id: &str,
        internal: bool,
    ) -> Result<(), DockerError> {
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

/// The id of the container this process runs in, if it runs in one this engine knows: Docker
/// bind-mounts `/etc/hostname` from `…/containers/<id>/hostname`, which `/proc/self/mountinfo`
/// shows (with cgroup v2, `/proc/self/cgroup` no longer names the container).
async fn own_container(docker: &Docker) -> Option<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let id = container_id_from_mountinfo(&mountinfo)?;
    match docker.inspect_container(&id, None).await {
        Ok(_) => Some(id),
        Err(e) => {
            tracing::debug!(
                container = %id,
                error = %e,
                "running in a container the engine does not know; not joining performer networks"
            );
            None
        }
    }
}

fn container_id_from_mountinfo(mountinfo: &str) -> Option<String> {
    mountinfo.lines().find_map(|line| {
        // Fields: id, parent, major:minor, root, mount point, …
        let mut fields = line.split(' ');
        let root = fields.nth(3)?;
        if fields.next()? != "/etc/hostname" {
            return None;
        }
        let (_, rest) = root.rsplit_once("/containers/")?;
        let (id, _) = rest.split_once('/')?;
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::container_id_from_mountinfo;

    #[test]
    fn the_container_id_is_read_from_the_hostname_mount() {
        let id = "3f4e2a9c1b0d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f";
        let mountinfo = format!(
            "600 500 0:50 / / rw,relatime - overlay overlay rw\n\
             610 600 254:1 /var/lib/docker/containers/{id}/resolv.conf /etc/resolv.conf rw - ext4 /dev/vda1 rw\n\
             611 600 254:1 /var/lib/docker/containers/{id}/hostname /etc/hostname rw - ext4 /dev/vda1 rw\n"
        );
        assert_eq!(container_id_from_mountinfo(&mountinfo), Some(id.to_owned()));
        // On the host: no such mount.
        assert_eq!(
            container_id_from_mountinfo("22 1 254:1 / / rw - ext4 /dev/vda1 rw\n"),
            None
        );
        // Not a container id.
        assert_eq!(
            container_id_from_mountinfo(
                "611 600 254:1 /srv/containers/web/hostname /etc/hostname rw - ext4 /dev/vda1 rw\n"
            ),
            None
        );
    }
}
