//! The byte layouts of everything the node verifies or signs (DESIGN §4.1–4.3).
//!
//! Each layout is a typed function of the task's fields. Digests the node signs come out as a
//! [`SigningDigest`], which nothing outside this module can construct: that is how the crate makes
//! "sign only digests computed from typed fields" the only possible order.

use std::fmt;
use std::str::FromStr;

use sha3::{Digest as _, Keccak256};

use crate::{Error, Scheme};

/// Ethereum Keccak-256 (original padding; not SHA3-256).
pub fn keccak256(data: &[u8]) -> [u8; 32] {
    Keccak256::digest(data).into()
}

/// `keccak256("BN254Certificate(uint32 referenceTimestamp,bytes32 messageHash)")`.
pub const BN254_CERT_TYPEHASH: [u8; 32] =
    hex32("d9f77a423768f4b0526fa60a7c732334516a93f1d228dce50ad804ea74ced36e");
/// `keccak256("ECDSACertificate(uint32 referenceTimestamp,bytes32 messageHash)")`.
pub const ECDSA_CERT_TYPEHASH: [u8; 32] =
    hex32("da346acb3ce99e7c5132bf8cafb159ad8085970ebfdba78007ef0fe163063d14");
/// `keccak256("BLS12381Certificate(uint32 referenceTimestamp,bytes32 messageHash)")` (avsnode).
pub const BLS12381_CERT_TYPEHASH: [u8; 32] =
    hex32("06484f63c0d32ec758d6d6e7ae133ebf6006d9b506b4d1e55a44e7d125669796");
/// `keccak256("EIP712Domain(string name,string version,address verifyingContract)")`: the
/// EigenLayer domain has no chainId.
pub const EIP712_DOMAIN_TYPEHASH_NO_CHAIN_ID: [u8; 32] =
    hex32("91ab3d17e3a50a9d89e63fd30b92be7f5336b03b287bb946787a83a9d62a2766");

/// Parses 64 hex digits at compile time (for the constants above).
const fn hex32(s: &str) -> [u8; 32] {
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => panic!("not lower-case hex"),
        }
    }
    let b = s.as_bytes();
    assert!(b.len() == 64);
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = (nibble(b[2 * i]) << 4) | nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

/// A 32-byte digest the node computed itself from typed fields, and the only thing any signing
/// function in this crate accepts. Constructed only by the layout functions of this module.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SigningDigest([u8; 32]);

impl SigningDigest {
    /// The digest's bytes (for a backend that hands them to an HSM or remote signer).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Wraps arbitrary bytes: only for known-answer tests inside this crate.
    #[cfg(test)]
    pub(crate) fn for_test(bytes: [u8; 32]) -> Self {
        SigningDigest(bytes)
    }
}

impl fmt::Debug for SigningDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningDigest(0x{})", hex::encode(self.0))
    }
}

/// Decodes `0x`-prefixed hex of exactly `N` bytes, either case.
fn parse_prefixed_hex<const N: usize>(s: &str, what: &'static str) -> Result<[u8; N], Error> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .ok_or(Error::Hex {
            what,
            reason: "missing 0x prefix",
        })?;
    if digits.len() != 2 * N {
        return Err(Error::Length {
            what,
            expected: N,
            got: digits.len() / 2,
        });
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(digits, &mut out).map_err(|_| Error::Hex {
        what,
        reason: "invalid hex digit",
    })?;
    Ok(out)
}

/// A task id: a 32-byte hash, on the wire `0x` + 64 hex digits in either case.
///
/// Inside the node a task id is always these 32 bytes, so `0xAB…` and `0xab…` are the same task.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub [u8; 32]);

impl TaskId {
    /// The canonical wire form: `0x` + 64 lower-case hex digits (66 ASCII characters). This is
    /// also what performers receive as `TaskRequest.task_id`.
    pub fn to_wire_string(&self) -> String {
        format!("0x{}", hex::encode(self.0))
    }
}

impl FromStr for TaskId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        parse_prefixed_hex(s, "task id").map(TaskId)
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_wire_string())
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskId({self})")
    }
}

/// A 20-byte Ethereum address, parsed from `0x` + 40 hex digits in either case (no checksum
/// requirement) and displayed lower-case.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(pub [u8; 20]);

impl Address {
    /// The address as an ABI word: left-padded with 12 zero bytes.
    pub fn word(&self) -> [u8; 32] {
        let mut w = [0u8; 32];
        w[12..].copy_from_slice(&self.0);
        w
    }
}

impl FromStr for Address {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        parse_prefixed_hex(s, "address").map(Address)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

/// An unsigned integer as an ABI word: big-endian, right-aligned.
pub fn word(value: u64) -> [u8; 32] {
    let mut w = [0u8; 32];
    w[24..].copy_from_slice(&value.to_be_bytes());
    w
}

/// The fields of a task the aggregator signs (DESIGN §4.1).
#[derive(Debug, Clone, Copy)]
pub struct TaskMessage<'a> {
    /// The task id.
    pub task_id: TaskId,
    /// The AVS the task belongs to.
    pub avs: Address,
    /// **Our configured operator address**, never the request's `executor_address` field: a
    /// signature made for another operator must not verify here.
    pub operator: Address,
    /// The operator set id.
    pub operator_set_id: u32,
    /// The reference timestamp.
    pub reference_timestamp: u32,
    /// The task's block number.
    pub task_block_number: u64,
    /// The payload (hashed into the message).
    pub payload: &'a [u8],
    /// `Some` for version-1001 tasks, whose signed message carries the deadline; `None` for
    /// version 1 (Hourglass).
    pub deadline_unix_ms: Option<u64>,
}

impl TaskMessage<'_> {
    /// The signed message bytes: 224 bytes for version 1, 256 for version 1001.
    pub fn encode(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(256);
        m.extend_from_slice(&self.task_id.0);
        m.extend_from_slice(&self.avs.word());
        m.extend_from_slice(&self.operator.word());
        m.extend_from_slice(&word(self.operator_set_id.into()));
        m.extend_from_slice(&word(self.reference_timestamp.into()));
        m.extend_from_slice(&word(self.task_block_number));
        m.extend_from_slice(&keccak256(self.payload));
        if let Some(deadline) = self.deadline_unix_ms {
            m.extend_from_slice(&word(deadline));
        }
        m
    }

    /// `h = keccak256(message)`: what the aggregator signed.
    pub fn hash(&self) -> [u8; 32] {
        keccak256(&self.encode())
    }

    /// `h` as a digest to sign, for the **aggregator's** side (the demo, benchmarks, tests).
    /// The node verifies task signatures; it never signs a task message.
    pub fn aggregator_digest(&self) -> SigningDigest {
        SigningDigest(self.hash())
    }
}

/// `messageHash = keccak256(abi.encode(bytes32 taskId, bytes output))`, the value the
/// certificate verifiers on chain check against.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MessageHash(pub [u8; 32]);

impl fmt::Debug for MessageHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageHash(0x{})", hex::encode(self.0))
    }
}

/// Computes [`MessageHash`]: `taskId ‖ word(0x40) ‖ word(len) ‖ output ‖ zero pad to 32`.
pub fn message_hash(task_id: &TaskId, output: &[u8]) -> MessageHash {
    let padded = output.len().div_ceil(32) * 32;
    let mut pre = Vec::with_capacity(96 + padded);
    pre.extend_from_slice(&task_id.0);
    pre.extend_from_slice(&word(0x40));
    pre.extend_from_slice(&word(output.len() as u64));
    pre.extend_from_slice(output);
    pre.resize(96 + padded, 0);
    MessageHash(keccak256(&pre))
}

/// `keccak256(typehash ‖ word(referenceTimestamp) ‖ messageHash)`.
fn certificate_struct_hash(
    typehash: &[u8; 32],
    reference_timestamp: u32,
    message_hash: &MessageHash,
) -> [u8; 32] {
    let mut pre = [0u8; 96];
    pre[..32].copy_from_slice(typehash);
    pre[32..64].copy_from_slice(&word(reference_timestamp.into()));
    pre[64..].copy_from_slice(&message_hash.0);
    keccak256(&pre)
}

/// The certificate an operator set's results are signed under (DESIGN §4.2): the scheme's
/// typehash and, for ECDSA, the verifier's EIP-712 domain. It is also what the sign-once ledger
/// keys on besides the key and the task (DESIGN §5): exactly what the digest binds, nothing more.
/// BN254 and BLS12-381 digests bind only the reference timestamp and the message hash, so one
/// signature is valid for every AVS and operator set that shares the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResultCertificate {
    /// `keccak256(BN254_CERT_TYPEHASH ‖ word(referenceTimestamp) ‖ messageHash)`; the operator
    /// signs `H_sol(digest)`.
    Bn254,
    /// The same shape with `BLS12381_CERT_TYPEHASH` (avsnode extension).
    Bls12381,
    /// EIP-712 without chainId: `keccak256(0x19 ‖ 0x01 ‖ domainSeparator ‖ structHash)`.
    Ecdsa {
        /// The verifier's domain separator ([`EcdsaVerifier::domain_separator`]).
        domain_separator: [u8; 32],
    },
}

impl ResultCertificate {
    /// The certificate a key of `scheme` signs: ECDSA needs its verifier, the other schemes
    /// refuse one. The one place that decides which digest a scheme signs.
    pub fn new(
        scheme: Scheme,
        verifier: Option<&EcdsaVerifier>,
    ) -> Result<ResultCertificate, Error> {
        match (scheme, verifier) {
            (Scheme::Ecdsa, Some(v)) => Ok(ResultCertificate::Ecdsa {
                domain_separator: v.domain_separator()?,
            }),
            (Scheme::Ecdsa, None) => Err(Error::Verifier {
                reason: "an ecdsa operator set needs its certificate verifier and version",
            }),
            (Scheme::Bn254, None) => Ok(ResultCertificate::Bn254),
            (Scheme::Bls12381, None) => Ok(ResultCertificate::Bls12381),
            (Scheme::Bn254 | Scheme::Bls12381, Some(_)) => Err(Error::Verifier {
                reason: "only ecdsa operator sets have a certificate verifier",
            }),
        }
    }

    /// The scheme whose keys sign this certificate.
    pub fn scheme(&self) -> Scheme {
        match self {
            ResultCertificate::Bn254 => Scheme::Bn254,
            ResultCertificate::Bls12381 => Scheme::Bls12381,
            ResultCertificate::Ecdsa { .. } => Scheme::Ecdsa,
        }
    }

    /// The result digest for a task's reference timestamp and message hash.
    pub fn digest(&self, reference_timestamp: u32, message_hash: &MessageHash) -> SigningDigest {
        match self {
            ResultCertificate::Bn254 => SigningDigest(certificate_struct_hash(
                &BN254_CERT_TYPEHASH,
                reference_timestamp,
                message_hash,
            )),
            ResultCertificate::Bls12381 => SigningDigest(certificate_struct_hash(
                &BLS12381_CERT_TYPEHASH,
                reference_timestamp,
                message_hash,
            )),
            ResultCertificate::Ecdsa { domain_separator } => {
                let struct_hash = certificate_struct_hash(
                    &ECDSA_CERT_TYPEHASH,
                    reference_timestamp,
                    message_hash,
                );
                let mut pre = [0u8; 66];
                pre[0] = 0x19;
                pre[1] = 0x01;
                pre[2..34].copy_from_slice(domain_separator);
                pre[34..].copy_from_slice(&struct_hash);
                SigningDigest(keccak256(&pre))
            }
        }
    }

    /// What the digest binds besides the task, reference timestamp and output: the ECDSA
    /// verifier's domain separator, nothing for BN254 and BLS12-381. The sign-once domain.
    pub fn bound_domain(&self) -> Option<[u8; 32]> {
        match self {
            ResultCertificate::Ecdsa { domain_separator } => Some(*domain_separator),
            ResultCertificate::Bn254 | ResultCertificate::Bls12381 => None,
        }
    }
}

/// `messageHash` and the result digest of one task's output: the one certificate-digest function
/// the pipeline, the remote signer and the test aggregator all use.
pub fn certificate_digest(
    certificate: &ResultCertificate,
    task_id: &TaskId,
    reference_timestamp: u32,
    output: &[u8],
) -> (MessageHash, SigningDigest) {
    let mh = message_hash(task_id, output);
    let digest = certificate.digest(reference_timestamp, &mh);
    (mh, digest)
}

/// The on-chain ECDSA certificate verifier an ECDSA operator set's signatures are bound to:
/// part of the EIP-712 domain (per operator set configuration).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EcdsaVerifier {
    /// The verifier contract (`verifyingContract`).
    pub address: Address,
    /// The contract's `version()` string, e.g. `"1.2.3"` (a bare major version such as `"1"` is
    /// the same to the domain). The EIP-712 `version` is derived from it by the contract's rule,
    /// [`EcdsaVerifier::eip712_version`].
    pub version: String,
}

impl EcdsaVerifier {
    /// The EIP-712 `version` of the domain, derived from the contract's `version()` string as
    /// `SemVerMixin._majorVersion()` does in eigenlayer-contracts v1.7.0–v1.9.0 (the releases with
    /// `ECDSACertificateVerifier`): its first character. `"1.2.3"` → `"1"`.
    pub fn eip712_version(&self) -> Result<&str, Error> {
        match self.version.as_bytes().first() {
            Some(b) if b.is_ascii_graphic() => Ok(&self.version[..1]),
            Some(_) => Err(Error::Verifier {
                reason: "the verifier version must start with a printable ASCII character",
            }),
            None => Err(Error::Verifier {
                reason: "the verifier version is empty",
            }),
        }
    }

    /// `keccak256(DOMAIN_TYPEHASH ‖ keccak256("EigenLayer") ‖ keccak256(major version) ‖
    /// word(address))`: what the contract's `domainSeparator()` returns.
    pub fn domain_separator(&self) -> Result<[u8; 32], Error> {
        let mut pre = [0u8; 128];
        pre[..32].copy_from_slice(&EIP712_DOMAIN_TYPEHASH_NO_CHAIN_ID);
        pre[32..64].copy_from_slice(&keccak256(b"EigenLayer"));
        pre[64..96].copy_from_slice(&keccak256(self.eip712_version()?.as_bytes()));
        pre[96..].copy_from_slice(&self.address.word());
        Ok(keccak256(&pre))
    }
}

/// The fields the auth signature binds a result to (DESIGN §4.3).
#[derive(Debug, Clone, Copy)]
pub struct AuthMessage<'a> {
    /// The task id.
    pub task_id: TaskId,
    /// The AVS.
    pub avs: Address,
    /// Our operator address.
    pub operator: Address,
    /// The operator set id.
    pub operator_set_id: u32,
    /// The result signature bytes this auth signature vouches for.
    pub result_signature: &'a [u8],
}

impl AuthMessage<'_> {
    /// The 160 signed bytes: task id ‖ AVS ‖ operator ‖ operator set id ‖ keccak256(result sig).
    pub fn encode(&self) -> [u8; 160] {
        let mut m = [0u8; 160];
        m[..32].copy_from_slice(&self.task_id.0);
        m[32..64].copy_from_slice(&self.avs.word());
        m[64..96].copy_from_slice(&self.operator.word());
        m[96..128].copy_from_slice(&word(self.operator_set_id.into()));
        m[128..].copy_from_slice(&keccak256(self.result_signature));
        m
    }

    /// `keccak256` of the 160 bytes: what the auth signature signs.
    pub fn digest(&self) -> SigningDigest {
        SigningDigest(keccak256(&self.encode()))
    }
}

/// What an admin signs to authenticate one management call (DESIGN §7).
///
/// The fields are concatenated without length prefixes, as Hourglass does; that is unambiguous
/// because a challenge token is always `0x` + 64 hex digits and a full method name starts with `/`.
#[derive(Debug, Clone, Copy)]
pub struct ManagementAuth<'a> {
    /// The single-use challenge token, exactly as issued (`0x` + 64 lower-case hex digits).
    pub challenge_token: &'a str,
    /// The full gRPC method name, e.g.
    /// `/eigenlayer.hourglass.v1.ExecutorManagementService/DeployArtifact`.
    pub method: &'a str,
    /// `keccak256` of the protobuf encoding of the request with its `auth` field unset.
    pub request_hash: [u8; 32],
}

impl ManagementAuth<'_> {
    /// The signed bytes: challenge token (UTF-8) ‖ method (UTF-8) ‖ request hash.
    pub fn encode(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(self.challenge_token.len() + self.method.len() + 32);
        m.extend_from_slice(self.challenge_token.as_bytes());
        m.extend_from_slice(self.method.as_bytes());
        m.extend_from_slice(&self.request_hash);
        m
    }

    /// `keccak256` of [`encode`](Self::encode): what the admin signs (raw, no EIP-191 prefix).
    pub fn digest(&self) -> SigningDigest {
        SigningDigest(keccak256(&self.encode()))
    }
}

#[cfg(test)]
mod tests {
    //! Expected values were computed independently with Python's `eth-abi` (`abi.encode`) and
    //! `eth-account` (`encode_typed_data`, EIP-712 with no chainId).
    use super::*;
    use proptest::prelude::*;

    const TS: u32 = 1_700_000_000;

    fn task_id() -> TaskId {
        TaskId([0xab; 32])
    }
    fn avs() -> Address {
        Address([0x11; 20])
    }
    fn operator() -> Address {
        Address([0x22; 20])
    }

    fn task_message(deadline_unix_ms: Option<u64>) -> TaskMessage<'static> {
        TaskMessage {
            task_id: task_id(),
            avs: avs(),
            operator: operator(),
            operator_set_id: 7,
            reference_timestamp: TS,
            task_block_number: 12_345_678,
            payload: b"payload",
            deadline_unix_ms,
        }
    }

    #[test]
    fn task_message_layouts() {
        let v1 = task_message(None);
        assert_eq!(v1.encode().len(), 224);
        assert_eq!(
            hex::encode(v1.hash()),
            "5aa9a035ee24f23d8d323224e888ba98b8cc4e10fb9cfe8bbde4d449fabd642d"
        );
        let v2 = task_message(Some(1_700_000_123_456));
        assert_eq!(v2.encode().len(), 256);
        assert_eq!(v2.encode()[..224], v1.encode()[..]);
        assert_eq!(
            hex::encode(v2.hash()),
            "9c7e9c976ee9d4676e6fc959433ea4b7a3a14c834a9cf2215bc4227dc9e87d8f"
        );
    }

    #[test]
    fn message_hash_is_abi_encode_of_task_id_and_output() {
        let cases: [(&[u8], &str); 4] = [
            (
                b"",
                "910cb25e1df5bb9ce0aa750070b9b07982289b433fd737daf76f23c17e09bdb2",
            ),
            (
                b"hello",
                "c51c84588a19bee2edf9c43edb8056c0480867cb78cc1146599b102ee421c8c6",
            ),
            (
                &[b'x'; 32],
                "64eaad1f52c917557f0c12e28cc90b9573c128264b429ba42790433dd4eada17",
            ),
            (
                &[b'y'; 33],
                "e6ab4f066fd2eb755fcd3ce4888734b31a81307b366187238e7f34062b00c689",
            ),
        ];
        for (output, expected) in cases {
            assert_eq!(
                hex::encode(message_hash(&task_id(), output).0),
                expected,
                "len {}",
                output.len()
            );
        }
    }

    #[test]
    fn certificate_digests() {
        let mh = message_hash(&task_id(), b"hello");
        let digest =
            |certificate: ResultCertificate| hex::encode(certificate.digest(TS, &mh).as_bytes());
        assert_eq!(
            digest(ResultCertificate::Bn254),
            "3b2063c0ca44f1dd877c2fd76f1094a505b7f9e2dfe03ce7f56ffe0eadd41f1b"
        );
        assert_eq!(
            digest(ResultCertificate::Bls12381),
            "01fac34fe585c95d1076529ff225dd9ef2784cf165047acfd567cdf9b1f028ca"
        );
        let verifier = EcdsaVerifier {
            address: Address([0x33; 20]),
            version: "1".into(),
        };
        let ecdsa = ResultCertificate::new(Scheme::Ecdsa, Some(&verifier)).unwrap();
        assert_eq!(
            digest(ecdsa),
            "e867822e3d607e6e998872a5818f0222a70806da309e74639ad6e869d4420e86"
        );
        // The domain binds the digest to one verifier and major version.
        let other = EcdsaVerifier {
            version: "2".into(),
            ..verifier.clone()
        };
        let other = ResultCertificate::new(Scheme::Ecdsa, Some(&other)).unwrap();
        assert_ne!(digest(other), digest(ecdsa));
        assert_eq!(
            ecdsa.bound_domain(),
            Some(verifier.domain_separator().unwrap())
        );
        assert_eq!(ResultCertificate::Bn254.bound_domain(), None);
        assert_eq!(ResultCertificate::Bls12381.bound_domain(), None);
        // The one function every caller uses gives the same digest.
        assert_eq!(
            hex::encode(
                certificate_digest(&ecdsa, &task_id(), TS, b"hello")
                    .1
                    .as_bytes()
            ),
            digest(ecdsa)
        );
    }

    const DOMAIN_SEPARATOR_0X33_V1: &str =
        "19059c4120408d6ef3dd8ee92bb36ff7b8bc2e58700dc08cac7b82d4fc6b1e33";

    #[test]
    fn the_eip712_version_is_the_first_character_of_the_contract_version() {
        // eigenlayer-contracts v1.7.0–v1.9.0, SemVerMixin._majorVersion(): the first byte of
        // version(). A node that hashed "1.2.3" whole signed under a domain the chain rejects.
        let verifier = |version: &str| EcdsaVerifier {
            address: Address([0x33; 20]),
            version: version.into(),
        };
        assert_eq!(verifier("1.2.3").eip712_version(), Ok("1"));
        assert_eq!(
            verifier("1.2.3").domain_separator(),
            verifier("1").domain_separator()
        );
        // Cross-checked with Python (pycryptodome keccak) from the contract's formula.
        assert_eq!(
            hex::encode(verifier("1.2.3").domain_separator().unwrap()),
            DOMAIN_SEPARATOR_0X33_V1
        );
        assert!(verifier("").domain_separator().is_err());
        assert!(verifier("\u{e9}1").domain_separator().is_err());
    }

    #[test]
    fn each_scheme_takes_a_verifier_only_if_it_is_ecdsa() {
        let verifier = EcdsaVerifier {
            address: Address([0x33; 20]),
            version: "1".into(),
        };
        assert!(ResultCertificate::new(Scheme::Ecdsa, None).is_err());
        assert!(ResultCertificate::new(Scheme::Bn254, Some(&verifier)).is_err());
        assert!(ResultCertificate::new(Scheme::Bls12381, Some(&verifier)).is_err());
        assert_eq!(
            ResultCertificate::new(Scheme::Bn254, None),
            Ok(ResultCertificate::Bn254)
        );
        assert_eq!(
            ResultCertificate::new(Scheme::Bls12381, None),
            Ok(ResultCertificate::Bls12381)
        );
    }

    #[test]
    fn auth_message_layout() {
        let result_signature: Vec<u8> = (0u8..64).collect();
        let auth = AuthMessage {
            task_id: task_id(),
            avs: avs(),
            operator: operator(),
            operator_set_id: 7,
            result_signature: &result_signature,
        };
        assert_eq!(
            hex::encode(auth.digest().as_bytes()),
            "b4b1f2f081efa54463c45c6121b91baec813d7da936cead70f853d3f6bff4f0e"
        );
    }

    const DEPLOY_ARTIFACT: &str =
        "/eigenlayer.hourglass.v1.ExecutorManagementService/DeployArtifact";

    fn management_auth(token: &str) -> ManagementAuth<'_> {
        ManagementAuth {
            challenge_token: token,
            method: DEPLOY_ARTIFACT,
            request_hash: keccak256(b"request bytes"),
        }
    }

    #[test]
    fn management_auth_layout() {
        // Expected value from pycryptodome (`Crypto.Hash.keccak`, 256 bits), not `eth-abi`: this
        // layout is a plain concatenation, no ABI encoding.
        let token = format!("0x{}", "5a".repeat(32));
        let auth = management_auth(&token);
        assert_eq!(
            hex::encode(auth.request_hash),
            "901a4f49562725d5bcc2f712c27b7605aed8b9a48302b8c42df0b321113c9a48"
        );
        assert_eq!(auth.encode().len(), 66 + DEPLOY_ARTIFACT.len() + 32);
        assert_eq!(
            hex::encode(auth.digest().as_bytes()),
            "ed1296fdf36cd270d96adb2365f12867204f4cfd7ecc184d9372e1e2cd1951ba"
        );
    }

    #[test]
    fn management_auth_binds_every_field() {
        let token = format!("0x{}", "5a".repeat(32));
        let other_token = format!("0x{}", "5b".repeat(32));
        let base = management_auth(&token);
        let mut other_request = base.request_hash;
        other_request[31] ^= 1;
        let variants = [
            management_auth(&other_token),
            ManagementAuth {
                method: "/eigenlayer.hourglass.v1.ExecutorManagementService/RemovePerformer",
                ..base
            },
            ManagementAuth {
                request_hash: other_request,
                ..base
            },
        ];
        for variant in variants {
            assert_ne!(variant.digest(), base.digest(), "{variant:?}");
        }
    }

    #[test]
    fn task_ids_and_addresses_parse_in_either_case() {
        let lower: TaskId = "0xabababababababababababababababababababababababababababababababab"
            .parse()
            .unwrap();
        let upper: TaskId = "0xABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB"
            .parse()
            .unwrap();
        assert_eq!(lower, upper);
        assert_eq!(lower.to_wire_string().len(), 66);
        assert_eq!(
            lower.to_string(),
            "0xabababababababababababababababababababababababababababababababab"
        );
        let addr: Address = "0x008AEEDA4D805471DF9B2A5B0F38A0C3BCBA786B"
            .parse()
            .unwrap();
        assert_eq!(
            addr.to_string(),
            "0x008aeeda4d805471df9b2a5b0f38a0c3bcba786b"
        );
        assert_eq!(addr.word()[..12], [0u8; 12]);

        assert_eq!(
            "ab".repeat(32).parse::<TaskId>(),
            Err(Error::Hex {
                what: "task id",
                reason: "missing 0x prefix"
            })
        );
        assert!(matches!(
            "0xabab".parse::<TaskId>(),
            Err(Error::Length {
                what: "task id",
                ..
            })
        ));
        assert!(matches!(
            format!("0x{}", "zz".repeat(32)).parse::<TaskId>(),
            Err(Error::Hex { .. })
        ));
        assert!(matches!(
            "0x1234".parse::<Address>(),
            Err(Error::Length {
                what: "address",
                ..
            })
        ));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC{0,80}") {
            let _ = s.parse::<TaskId>();
            let _ = s.parse::<Address>();
        }

        #[test]
        fn task_id_round_trips(bytes in any::<[u8; 32]>()) {
            let id = TaskId(bytes);
            prop_assert_eq!(id.to_wire_string().parse::<TaskId>().unwrap(), id);
            prop_assert_eq!(id.to_wire_string().to_uppercase().replacen("0X", "0x", 1).parse::<TaskId>().unwrap(), id);
        }
    }
}
