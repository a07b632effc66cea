//! The aggregator's side of the protocol: sign tasks (DESIGN §4.1) and verify the node's answers
//! (§4.2, §4.3). Used by `avsnode demo`, `avsnode bench`, the end-to-end tests and the fuzz
//! seeds; an operator can also use it to check a node's answers independently of the node.

use avsnode_proto::executor::{TaskResult, TaskSubmission};
use avsnode_signer::bn254::{self, HashToG1};
use avsnode_signer::messages::{
    Address, AuthMessage, EcdsaVerifier, ResultCertificate, TaskId, TaskMessage, certificate_digest,
};
use avsnode_signer::{bls12_381, ecdsa};

use avsnode_signing::LocalKey;

/// A task as an aggregator builds it, before signing.
#[derive(Debug, Clone)]
pub struct NewTask {
    /// The task id.
    pub task_id: TaskId,
    /// The AVS.
    pub avs: Address,
    /// The operator it is addressed to.
    pub operator: Address,
    /// The operator set.
    pub operator_set_id: u32,
    /// Reference timestamp (unix seconds).
    pub reference_timestamp: u32,
    /// Block number.
    pub task_block_number: u64,
    /// Payload.
    pub payload: Vec<u8>,
    /// `Some` → a version-1001 task with this signed deadline.
    pub deadline_unix_ms: Option<u64>,
}

impl NewTask {
    /// The task message the aggregator signs (DESIGN §4.1).
    pub fn message(&self) -> TaskMessage<'_> {
        TaskMessage {
            task_id: self.task_id,
            avs: self.avs,
            operator: self.operator,
            operator_set_id: self.operator_set_id,
            reference_timestamp: self.reference_timestamp,
            task_block_number: self.task_block_number,
            payload: &self.payload,
            deadline_unix_ms: self.deadline_unix_ms,
        }
    }
}

/// An aggregator with its signing key.
#[derive(Debug)]
pub struct Aggregator {
    /// The address it sends as `aggregator_address`.
    pub address: Address,
    key: LocalKey,
}

impl Aggregator {
    /// An aggregator signing with `key`; ECDSA aggregators are identified by the key's address.
    pub fn new(address: Address, key: LocalKey) -> Aggregator {
        Aggregator { address, key }
    }

    /// The key (to configure the node with its public part).
    pub fn key(&self) -> &LocalKey {
        &self.key
    }

    /// A signed submission: ECDSA over `h`, BN254 `sk·H_rfc(h)`, BLS12-381 over `h`.
    pub fn sign(&self, task: &NewTask) -> TaskSubmission {
        let digest = task.message().aggregator_digest();
        let signature = match &self.key {
            LocalKey::Ecdsa(k) => k.sign(&digest).to_bytes().to_vec(),
            LocalKey::Bn254(k) => k.sign(&digest, HashToG1::Rfc9380).to_wire().to_vec(),
            LocalKey::Bls12381(k) => k.sign(&digest).to_bytes().to_vec(),
        };
        TaskSubmission {
            task_id: task.task_id.to_wire_string(),
            aggregator_address: self.address.to_string(),
            avs_address: task.avs.to_string(),
            payload: task.payload.clone(),
            signature,
            operator_set_id: task.operator_set_id,
            reference_timestamp: task.reference_timestamp,
            executor_address: task.operator.to_string(),
            task_block_number: task.task_block_number,
            version: if task.deadline_unix_ms.is_some() {
                avsnode_proto::SIGNED_DEADLINE_TASK_VERSION
            } else {
                avsnode_proto::HOURGLASS_TASK_VERSION
            },
            deadline_unix_ms: task.deadline_unix_ms.unwrap_or(0),
        }
    }
}

/// An operator set's public key, as an aggregator knows it.
#[derive(Debug, Clone)]
pub enum OperatorKey {
    /// ECDSA: the operator's signing address and the set's certificate verifier.
    Ecdsa {
        /// The address results are signed by.
        address: Address,
        /// The EIP-712 domain's verifier.
        verifier: EcdsaVerifier,
    },
    /// BN254: the G2 public key.
    Bn254(bn254::G2PublicKey),
    /// BLS12-381: the public key.
    Bls12381(bls12_381::PublicKey),
}

impl OperatorKey {
    /// The scheme of the key.
    pub fn scheme(&self) -> avsnode_signer::Scheme {
        match self {
            OperatorKey::Ecdsa { .. } => avsnode_signer::Scheme::Ecdsa,
            OperatorKey::Bn254(_) => avsnode_signer::Scheme::Bn254,
            OperatorKey::Bls12381(_) => avsnode_signer::Scheme::Bls12381,
        }
    }

    /// The public half of `key` (with the verifier for ECDSA sets).
    pub fn of(key: &LocalKey, verifier: Option<EcdsaVerifier>) -> Option<OperatorKey> {
        Some(match key {
            LocalKey::Ecdsa(k) => OperatorKey::Ecdsa {
                address: k.public_key().address(),
                verifier: verifier?,
            },
            LocalKey::Bn254(k) => OperatorKey::Bn254(k.public_key_g2()),
            LocalKey::Bls12381(k) => OperatorKey::Bls12381(k.public_key()),
        })
    }
}

/// Checks an answer the way an aggregator and the chain would: fields echo the task, and both
/// the result signature (certificate digest) and the auth signature verify under `key`.
pub fn verify_result(result: &TaskResult, task: &NewTask, key: &OperatorKey) -> Result<(), String> {
    if result.task_id.parse::<TaskId>().ok() != Some(task.task_id) {
        return Err(format!(
            "answer for task {} instead of {}",
            result.task_id, task.task_id
        ));
    }
    if result.operator_address.parse::<Address>().ok() != Some(task.operator) {
        return Err(format!(
            "operator_address {} is not {}",
            result.operator_address, task.operator
        ));
    }
    if result.avs_address.parse::<Address>().ok() != Some(task.avs)
        || result.operator_set_id != task.operator_set_id
    {
        return Err("avs_address or operator_set_id do not echo the task".into());
    }
    let verifier = match key {
        OperatorKey::Ecdsa { verifier, .. } => Some(verifier),
        OperatorKey::Bn254(_) | OperatorKey::Bls12381(_) => None,
    };
    let certificate = ResultCertificate::new(key.scheme(), verifier).map_err(|e| e.to_string())?;
    let (_, digest) = certificate_digest(
        &certificate,
        &task.task_id,
        task.reference_timestamp,
        &result.output,
    );
    let auth = AuthMessage {
        task_id: task.task_id,
        avs: task.avs,
        operator: task.operator,
        operator_set_id: task.operator_set_id,
        result_signature: &result.result_signature,
    }
    .digest();
    let (result_ok, auth_ok) = match key {
        OperatorKey::Ecdsa { address, .. } => {
            let check = |sig: &[u8], d: &[u8; 32]| {
                ecdsa::Signature::from_bytes(sig)
                    .is_ok_and(|s| s.is_low_s() && ecdsa::verify(address, d, &s))
            };
            (
                check(&result.result_signature, digest.as_bytes()),
                check(&result.auth_signature, auth.as_bytes()),
            )
        }
        OperatorKey::Bn254(pk) => {
            let check = |sig: &[u8], d: &[u8; 32], map| {
                bn254::Signature::from_wire(sig).is_ok_and(|s| bn254::verify(pk, d, &s, map))
            };
            (
                check(
                    &result.result_signature,
                    digest.as_bytes(),
                    HashToG1::Solidity,
                ),
                check(&result.auth_signature, auth.as_bytes(), HashToG1::Rfc9380),
            )
        }
        OperatorKey::Bls12381(pk) => {
            let check = |sig: &[u8], d: &[u8; 32]| {
                bls12_381::Signature::from_bytes(sig).is_ok_and(|s| bls12_381::verify(pk, d, &s))
            };
            (
                check(&result.result_signature, digest.as_bytes()),
                check(&result.auth_signature, auth.as_bytes()),
            )
        }
    };
    match (result_ok, auth_ok) {
        (true, true) => Ok(()),
        (false, _) => Err(format!(
            "task {}: result signature does not verify",
            task.task_id
        )),
        (true, false) => Err(format!(
            "task {}: auth signature does not verify",
            task.task_id
        )),
    }
}
