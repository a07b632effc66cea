//! The management API's client: what `avsnode performer deploy|list|remove` (and the tests) use.
//! Each call fetches a fresh challenge token and signs it with the admin key (DESIGN §7).

use std::fmt;
use std::time::Duration;

use avsnode_proto::executor::common::AuthSignature;
use avsnode_proto::executor::executor_management_service_client::ExecutorManagementServiceClient;
use avsnode_proto::executor::{
    DeployArtifactRequest, DeployArtifactResponse, GetChallengeTokenRequest, ListPerformersRequest,
    Performer, PerformerEnv, RemovePerformerRequest, RemovePerformerResponse,
};
use avsnode_signer::ecdsa;
use avsnode_signer::messages::Address;
use prost::Message;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};

use super::auth::sign_request;
use super::methods;

/// A connection to a node's management listener, with the admin key that signs each call.
pub struct AdminClient {
    client: ExecutorManagementServiceClient<Channel>,
    operator: Address,
    /// `None`: send calls unsigned (for a node with `require_auth = false`).
    key: Option<ecdsa::SecretKey>,
}

impl fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminClient")
            .field("operator", &self.operator)
            .field(
                "admin",
                &self.key.as_ref().map(|k| k.public_key().address()),
            )
            .finish()
    }
}

impl AdminClient {
    /// Connects to `endpoint` (`http://HOST:PORT`) of the node whose operator is `operator`.
    pub async fn connect(
        endpoint: &str,
        operator: Address,
        key: Option<ecdsa::SecretKey>,
    ) -> Result<AdminClient, Status> {
        let channel = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| Status::invalid_argument(format!("endpoint {endpoint:?}: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| Status::unavailable(format!("connecting to {endpoint}: {e}")))?;
        Ok(AdminClient {
            // Deploys wait for a container to start and the old one to drain.
            client: ExecutorManagementServiceClient::new(channel),
            operator,
            key,
        })
    }

    /// Signs a call of `method` whose request encodes (without auth) to `unsigned`.
    async fn auth(
        &mut self,
        method: &str,
        unsigned: &[u8],
    ) -> Result<Option<AuthSignature>, Status> {
        let Some(key) = &self.key else {
            return Ok(None);
        };
        let token = self
            .client
            .get_challenge_token(GetChallengeTokenRequest {
                operator_address: self.operator.to_string(),
            })
            .await?
            .into_inner()
            .challenge_token;
        Ok(Some(sign_request(key, &token, method, unsigned)))
    }

    /// Deploys `image` (a reference, or `registry` + `digest` as Hourglass sends them; see
    /// [`super::image_reference`]) for `avs` with `env`.
    pub async fn deploy(
        &mut self,
        avs: &str,
        registry: &str,
        digest: &str,
        env: Vec<(String, String)>,
    ) -> Result<DeployArtifactResponse, Status> {
        let mut request = DeployArtifactRequest {
            avs_address: avs.to_owned(),
            digest: digest.to_owned(),
            registry_url: registry.to_owned(),
            env: env
                .into_iter()
                .map(|(name, value)| PerformerEnv {
                    name,
                    value,
                    ..Default::default()
                })
                .collect(),
            kubernetes: None,
            auth: None,
        };
        request.auth = self.auth(methods::DEPLOY, &request.encode_to_vec()).await?;
        Ok(self.client.deploy_artifact(request).await?.into_inner())
    }

    /// Lists the performers (of one AVS if `avs` is not empty).
    pub async fn list(&mut self, avs: &str) -> Result<Vec<Performer>, Status> {
        let mut request = ListPerformersRequest {
            avs_address: avs.to_owned(),
            auth: None,
        };
        request.auth = self.auth(methods::LIST, &request.encode_to_vec()).await?;
        Ok(self
            .client
            .list_performers(request)
            .await?
            .into_inner()
            .performers)
    }

    /// Stops and removes a performer.
    pub async fn remove(&mut self, performer_id: &str) -> Result<RemovePerformerResponse, Status> {
        let mut request = RemovePerformerRequest {
            performer_id: performer_id.to_owned(),
            auth: None,
        };
        request.auth = self.auth(methods::REMOVE, &request.encode_to_vec()).await?;
        Ok(self.client.remove_performer(request).await?.into_inner())
    }
}
