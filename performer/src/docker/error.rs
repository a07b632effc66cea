//! What goes wrong talking to the Docker Engine.

use bollard::errors::Error as BollardError;

/// A failed Docker Engine request, or a malformed docker setting. Never holds env values or
/// registry passwords.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The Docker Engine could not be reached.
    #[error("cannot reach the Docker Engine at {host}: {source}")]
    Connect {
        /// `DOCKER_HOST`, or the default socket.
        host: String,
        /// Why.
        #[source]
        source: Box<BollardError>,
    },
    /// A request failed.
    #[error("cannot {action} {object}: {source}")]
    Request {
        /// What was asked, e.g. `create container`.
        action: &'static str,
        /// Of what: a container, image or network name or id.
        object: String,
        /// The engine's answer (boxed: errors travel up through every `Result`).
        #[source]
        source: Box<BollardError>,
    },
    /// A pull policy that is not `always`, `if-not-present` or `never`.
    #[error("unknown pull policy {0:?}: expected always, if-not-present or never")]
    UnknownPullPolicy(String),
    /// The engine's state does not fit the configuration (a network of the wrong kind).
    #[error("{0}")]
    Invalid(String),
}

impl DockerError {
    /// Whether the engine answered 404 (no such container, image or network).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Request { source, .. } if status(source) == Some(404))
    }
}

pub(super) fn status(error: &BollardError) -> Option<u16> {
    match error {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

pub(super) fn failed(
    action: &'static str,
    object: &str,
) -> impl FnOnce(BollardError) -> DockerError {
    let object = object.to_owned();
    move |source| DockerError::Request {
        action,
        object,
        source: Box::new(source),
    }
}
