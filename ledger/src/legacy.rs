//! What layout 1 did not store: an ECDSA record's verifier domain, found again from its digest.
//!
//! Both the migration on open ([`super::migrate`]) and `ledger import` of a format-1 file re-key
//! such records; this is the one place that knows how.

use avsnode_signer::messages::{
    Address, EIP712_DOMAIN_TYPEHASH_NO_CHAIN_ID, MessageHash, ResultCertificate, keccak256,
};

use super::{LedgerError, Record};

/// The domain separator a layout-1 ECDSA record's digest was made under.
pub(super) fn domain_of(
    record: &Record,
    verifier: Address,
    versions: &[String],
) -> Result<[u8; 32], LedgerError> {
    let digits = (b'0'..=b'9').map(|d| char::from(d).to_string());
    let mut tried: Vec<String> = versions.iter().cloned().chain(digits).collect();
    tried.dedup();
    for version in &tried {
        let domain_separator = legacy_domain_separator(verifier, version);
        let certificate = ResultCertificate::Ecdsa { domain_separator };
        let digest = certificate.digest(
            record.reference_timestamp,
            &MessageHash(record.message_hash),
        );
        if *digest.as_bytes() == record.digest {
            return Ok(domain_separator);
        }
    }
    Err(LedgerError::UnknownVerifierVersion {
        task_id: record.key.task_id,
        verifier,
        tried,
    })
}

/// The domain separator with `version` hashed whole, as layout-1 avsnode computed it.
pub(super) fn legacy_domain_separator(verifier: Address, version: &str) -> [u8; 32] {
    let mut pre = [0u8; 128];
    pre[..32].copy_from_slice(&EIP712_DOMAIN_TYPEHASH_NO_CHAIN_ID);
    pre[32..64].copy_from_slice(&keccak256(b"EigenLayer"));
    pre[64..96].copy_from_slice(&keccak256(version.as_bytes()));
    pre[96..].copy_from_slice(&verifier.word());
    keccak256(&pre)
}
