//! Challenge authentication of the management API (DESIGN §7).
//!
//! A client asks `GetChallengeToken` for a single-use token, then sends the real request with
//! `auth = AuthSignature { challenge_token, signature }`, where `signature` is a 65-byte
//! secp256k1 signature (`r‖s‖v`) by an **admin** key over
//! `keccak256(challenge_token ‖ full method name ‖ keccak256(request encoded without auth))`
//! ([`ManagementAuth`]).
//!
//! # Caveat
//!
//! A token is consumed by any request that presents it, whether or not the signature then
//! verifies: a token can never be tried twice. Presented tokens are compared in constant time
//! against every outstanding token, and unknown, used and expired tokens fail with one error, so
//! probing learns nothing about which tokens exist. Every failure of authentication is
//! UNAUTHENTICATED: a signature that recovers to a key that is not an admin is indistinguishable
//! from garbage bytes, which recover to some key too. Signatures must be low-s (the malleable
//! high-s twin of an admin's signature is refused).
//!
//! Anyone who reaches the listener can ask for tokens, so they are bounded per source address:
//! a source over its share replaces its own oldest token, never another's, and when every place
//! is taken by unexpired tokens of other sources a request for one is refused rather than evict
//! an admin's.

use std::fmt;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use avsnode_proto::executor::common::AuthSignature;
use avsnode_signer::ecdsa::{self, SecretKey, Signature};
use avsnode_signer::messages::{Address, ManagementAuth, SigningDigest, keccak256};
use rand::RngCore as _;
use rand::rngs::OsRng;
use subtle::{Choice, ConditionallySelectable as _, ConstantTimeEq as _};

/// Why a management call was not authenticated.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AuthError {
    /// The request has no `auth` field.
    #[error("missing auth: fetch a challenge token and sign the request with an admin key")]
    Missing,
    /// The token is malformed, was never issued, has expired or was already used.
    #[error("challenge token unknown, expired or already used")]
    UnknownToken,
    /// The signature cannot be decoded or no public key can be recovered from it.
    #[error("bad admin signature: {0}")]
    BadSignature(#[source] avsnode_signer::Error),
    /// The signature's `s` is in the upper half of the group order: the malleable twin of a
    /// signature, never what an admin's signer produces.
    #[error("bad admin signature: high s (sign with low s, as Ethereum signers do)")]
    HighS,
    /// The signature is by a key that is not a configured admin (or over different bytes).
    #[error("the signature is not by a management admin (recovered {0})")]
    NotAdmin(Address),
}

impl From<AuthError> for tonic::Status {
    fn from(e: AuthError) -> Self {
        tonic::Status::unauthenticated(e.to_string())
    }
}

/// Every place for a challenge token is taken by an unexpired token of another source.
#[derive(Debug, thiserror::Error)]
#[error("too many challenge tokens outstanding; try again later")]
pub(crate) struct ChallengesFull;

/// One issued, not yet used token.
struct Outstanding {
    token: [u8; 32],
    expires: Instant,
    source: Option<IpAddr>,
}

/// Outstanding challenge tokens: single-use, expiring, bounded in all and per source.
pub(crate) struct Challenges {
    ttl: Duration,
    capacity: usize,
    per_source: usize,
    outstanding: Mutex<Vec<Outstanding>>,
}

impl fmt::Debug for Challenges {
    // The tokens themselves stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Challenges")
            .field("ttl", &self.ttl)
            .field("capacity", &self.capacity)
            .field("outstanding", &self.lock().len())
            .finish()
    }
}

impl Challenges {
    /// Tokens live for `ttl`; at most `capacity` are outstanding at once, `per_source` for one
    /// source address, because unauthenticated callers can ask for them.
    pub(crate) fn new(ttl: Duration, capacity: usize, per_source: usize) -> Self {
        Challenges {
            ttl,
            capacity,
            per_source: per_source.max(1),
            outstanding: Mutex::new(Vec::new()),
        }
    }

    /// Issues a fresh token for a caller at `source`: `0x` + 64 lower-case hex digits of 32
    /// random bytes, and when it expires (unix seconds).
    pub(crate) fn issue(&self, source: Option<IpAddr>) -> Result<(String, u64), ChallengesFull> {
        let mut token = [0u8; 32];
        OsRng.fill_bytes(&mut token);
        let now = Instant::now();
        {
            let mut outstanding = self.lock();
            let from_source = outstanding.iter().filter(|o| o.source == source).count();
            if from_source >= self.per_source {
                // Over its share: the source's own oldest goes (the vector is in issue order).
                if let Some(oldest) = outstanding.iter().position(|o| o.source == source) {
                    outstanding.remove(oldest);
                }
            } else if outstanding.len() >= self.capacity {
                outstanding.retain(|o| now < o.expires);
                if outstanding.len() >= self.capacity {
                    return Err(ChallengesFull);
                }
            }
            outstanding.push(Outstanding {
                token,
                expires: now + self.ttl,
                source,
            });
        }
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let expires_at = (unix_now + self.ttl).as_secs();
        Ok((format!("0x{}", hex::encode(token)), expires_at))
    }

    /// Checks `auth` for a call of `method` (the full gRPC method name) whose request, encoded
    /// without its auth field, is `request_without_auth`; returns the admin who signed it.
    ///
    /// The token is consumed before the signature is looked at, so it is spent even if the
    /// signature fails.
    pub(crate) fn verify(
        &self,
        admins: &[Address],
        method: &str,
        request_without_auth: &[u8],
        auth: Option<&AuthSignature>,
    ) -> Result<Address, AuthError> {
        let auth = auth.ok_or(AuthError::Missing)?;
        let presented = parse_token(&auth.challenge_token).ok_or(AuthError::UnknownToken)?;
        self.consume(&presented)?;

        let signature = Signature::from_bytes(&auth.signature).map_err(AuthError::BadSignature)?;
        if !signature.is_low_s() {
            return Err(AuthError::HighS);
        }
        let digest = digest(&auth.challenge_token, method, request_without_auth);
        let signer = ecdsa::recover_address(digest.as_bytes(), &signature)
            .map_err(AuthError::BadSignature)?;
        if admins.contains(&signer) {
            Ok(signer)
        } else {
            Err(AuthError::NotAdmin(signer))
        }
    }

    /// Removes `presented` from the outstanding tokens; fails if it was not there or had expired.
    fn consume(&self, presented: &[u8; 32]) -> Result<(), AuthError> {
        let now = Instant::now();
        let mut outstanding = self.lock();
        // Every token is compared and the match is selected without branching, so the time taken
        // does not depend on which token (if any) matched or how many of its bytes did.
        let mut found = Choice::from(0);
        let mut index = 0u64;
        for (i, o) in outstanding.iter().enumerate() {
            let hit = o.token.ct_eq(presented);
            index = u64::conditional_select(&index, &(i as u64), hit);
            found |= hit;
        }
        if !bool::from(found) {
            return Err(AuthError::UnknownToken);
        }
        // `index` came from enumerating this vector under the same lock, so it fits a usize.
        let used = outstanding.swap_remove(index as usize);
        if now < used.expires {
            Ok(())
        } else {
            Err(AuthError::UnknownToken)
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Outstanding>> {
        // The vector is never left half-updated, so a panic elsewhere cannot corrupt it.
        self.outstanding
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Client side (`avsnode performer …`): signs a call of `method` (the full gRPC method name)
/// whose request, encoded without its auth field, is `request_without_auth`, using an admin key
/// and a token from `GetChallengeToken`.
pub fn sign_request(
    key: &SecretKey,
    challenge_token: &str,
    method: &str,
    request_without_auth: &[u8],
) -> AuthSignature {
    let digest = digest(challenge_token, method, request_without_auth);
    AuthSignature {
        challenge_token: challenge_token.to_owned(),
        signature: key.sign(&digest).to_bytes().to_vec(),
    }
}

fn digest(challenge_token: &str, method: &str, request_without_auth: &[u8]) -> SigningDigest {
    ManagementAuth {
        challenge_token,
        method,
        request_hash: keccak256(request_without_auth),
    }
    .digest()
}

/// Decodes a token exactly as issued: `0x` + 64 lower-case hex digits.
fn parse_token(s: &str) -> Option<[u8; 32]> {
    let digits = s.strip_prefix("0x")?;
    if digits.len() != 64
        || !digits
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    let mut token = [0u8; 32];
    hex::decode_to_slice(digits, &mut token).ok()?;
    Some(token)
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;

    use avsnode_proto::executor::RemovePerformerRequest;
    use prost::Message as _;

    use super::*;

    const REMOVE_PERFORMER: &str =
        "/eigenlayer.hourglass.v1.ExecutorManagementService/RemovePerformer";
    const DEPLOY_ARTIFACT: &str =
        "/eigenlayer.hourglass.v1.ExecutorManagementService/DeployArtifact";
    const TTL: Duration = Duration::from_secs(300);

    fn key(seed: u8) -> SecretKey {
        let mut bytes = [0x11; 32];
        bytes[31] = seed;
        SecretKey::from_bytes(&bytes).unwrap()
    }

    fn admin() -> SecretKey {
        key(1)
    }

    fn admins() -> Vec<Address> {
        vec![
            key(9).public_key().address(),
            admin().public_key().address(),
        ]
    }

    /// A real request, encoded as the service will: with `auth` unset.
    fn request(performer_id: &str) -> Vec<u8> {
        RemovePerformerRequest {
            performer_id: performer_id.into(),
            auth: None,
        }
        .encode_to_vec()
    }

    fn signed(challenges: &Challenges, signer: &SecretKey) -> AuthSignature {
        let (token, _) = challenges.issue(None).unwrap();
        sign_request(signer, &token, REMOVE_PERFORMER, &request("p-1"))
    }

    fn check(challenges: &Challenges, auth: &AuthSignature) -> Result<Address, AuthError> {
        challenges.verify(&admins(), REMOVE_PERFORMER, &request("p-1"), Some(auth))
    }

    #[test]
    fn issued_tokens_are_fresh_lower_hex_and_expire_after_the_ttl() {
        let challenges = Challenges::new(TTL, 8, 8);
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let (a, expires_at) = challenges.issue(None).unwrap();
        let (b, _) = challenges.issue(None).unwrap();
        assert_ne!(a, b);
        for token in [&a, &b] {
            assert_eq!(token.len(), 66);
            assert_eq!(
                parse_token(token).map(hex::encode),
                Some(token[2..].to_owned())
            );
        }
        let expected = (before + TTL).as_secs();
        assert!(
            (expected..=expected + 1).contains(&expires_at),
            "{expires_at}"
        );
    }

    #[test]
    fn an_admin_signature_authenticates_once() {
        let challenges = Challenges::new(TTL, 8, 8);
        let auth = signed(&challenges, &admin());
        assert_eq!(
            check(&challenges, &auth).unwrap(),
            admin().public_key().address()
        );
        // Single use.
        assert!(matches!(
            check(&challenges, &auth),
            Err(AuthError::UnknownToken)
        ));
    }

    #[test]
    fn a_request_without_auth_is_refused() {
        let challenges = Challenges::new(TTL, 8, 8);
        assert!(matches!(
            challenges.verify(&admins(), REMOVE_PERFORMER, &request("p-1"), None),
            Err(AuthError::Missing)
        ));
    }

    #[test]
    fn a_non_admin_key_is_refused_by_address() {
        let challenges = Challenges::new(TTL, 8, 8);
        let outsider = key(2);
        let auth = signed(&challenges, &outsider);
        match check(&challenges, &auth) {
            Err(AuthError::NotAdmin(a)) => assert_eq!(a, outsider.public_key().address()),
            other => panic!("expected NotAdmin, got {other:?}"),
        }
    }

    #[test]
    fn a_token_is_spent_even_when_the_signature_fails() {
        let challenges = Challenges::new(TTL, 8, 8);

        // Malformed signature bytes.
        let good = signed(&challenges, &admin());
        let malformed = AuthSignature {
            signature: vec![0; 10],
            ..good.clone()
        };
        assert!(matches!(
            check(&challenges, &malformed),
            Err(AuthError::BadSignature(_))
        ));
        assert!(matches!(
            check(&challenges, &good),
            Err(AuthError::UnknownToken)
        ));

        // A well-formed signature by someone else.
        let (token, _) = challenges.issue(None).unwrap();
        let outsider = sign_request(&key(2), &token, REMOVE_PERFORMER, &request("p-1"));
        assert!(matches!(
            check(&challenges, &outsider),
            Err(AuthError::NotAdmin(_))
        ));
        let good = sign_request(&admin(), &token, REMOVE_PERFORMER, &request("p-1"));
        assert!(matches!(
            check(&challenges, &good),
            Err(AuthError::UnknownToken)
        ));
    }

    #[test]
    fn an_expired_token_is_refused() {
        let challenges = Challenges::new(Duration::ZERO, 8, 8);
        let auth = signed(&challenges, &admin());
        assert!(matches!(
            check(&challenges, &auth),
            Err(AuthError::UnknownToken)
        ));
    }

    #[test]
    fn the_signature_binds_request_method_and_token() {
        let challenges = Challenges::new(TTL, 8, 8);

        let auth = signed(&challenges, &admin());
        let tampered = challenges.verify(&admins(), REMOVE_PERFORMER, &request("p-2"), Some(&auth));
        assert!(tampered.is_err(), "{tampered:?}");

        let auth = signed(&challenges, &admin());
        let other_method =
            challenges.verify(&admins(), DEPLOY_ARTIFACT, &request("p-1"), Some(&auth));
        assert!(other_method.is_err(), "{other_method:?}");

        // Signed for one outstanding token, presented with another.
        let auth = signed(&challenges, &admin());
        let (other_token, _) = challenges.issue(None).unwrap();
        let swapped = AuthSignature {
            challenge_token: other_token,
            ..auth
        };
        let swapped = check(&challenges, &swapped);
        assert!(swapped.is_err(), "{swapped:?}");
    }

    #[test]
    fn malformed_tokens_are_unknown_and_spend_nothing() {
        let challenges = Challenges::new(TTL, 8, 8);
        let (token, _) = challenges.issue(None).unwrap();
        let garbage = [
            String::new(),
            "0x".into(),
            token[2..].to_owned(),
            token[..65].to_owned(),
            format!("{token}0"),
            format!("0x{}", "zz".repeat(32)),
            token.to_uppercase().replacen("0X", "0x", 1),
            format!("0x{}", "00".repeat(32)),
        ];
        for bad in garbage {
            let auth = sign_request(&admin(), &bad, REMOVE_PERFORMER, &request("p-1"));
            assert!(
                matches!(check(&challenges, &auth), Err(AuthError::UnknownToken)),
                "{bad:?}"
            );
        }
        let auth = sign_request(&admin(), &token, REMOVE_PERFORMER, &request("p-1"));
        assert!(check(&challenges, &auth).is_ok());
    }

    /// A flood of token requests from one source replaces only that source's tokens; an admin's
    /// token from another source survives it, and when the other places are all taken new
    /// requests are refused rather than evict it.
    #[test]
    fn tokens_are_bounded_per_source_and_a_flood_never_evicts_another_sources() {
        let attacker = Some(IpAddr::from([10, 0, 0, 66]));
        let admin_source = Some(IpAddr::from([127, 0, 0, 1]));
        let challenges = Challenges::new(TTL, 4, 2);
        let (token, _) = challenges.issue(admin_source).unwrap();
        let admin_auth = sign_request(&admin(), &token, REMOVE_PERFORMER, &request("p-1"));
        let mut flood = Vec::new();
        for _ in 0..1000 {
            flood.push(challenges.issue(attacker).unwrap().0);
        }
        // The attacker holds its two newest; the rest of its tokens were replaced.
        assert_eq!(challenges.lock().len(), 3);
        let own = sign_request(&admin(), &flood[0], REMOVE_PERFORMER, &request("p-1"));
        assert!(matches!(
            check(&challenges, &own),
            Err(AuthError::UnknownToken)
        ));
        // Many sources fill the rest: the next is refused, nobody's token evicted.
        challenges.issue(Some(IpAddr::from([10, 0, 0, 1]))).unwrap();
        assert!(challenges.issue(Some(IpAddr::from([10, 0, 0, 2]))).is_err());
        check(&challenges, &admin_auth).unwrap();
        // A place freed is a place to issue again.
        challenges.issue(Some(IpAddr::from([10, 0, 0, 2]))).unwrap();
    }

    #[test]
    fn exactly_one_of_many_concurrent_uses_of_a_token_succeeds() {
        const THREADS: usize = 8;
        let challenges = Challenges::new(TTL, 8, 8);
        let auth = signed(&challenges, &admin());
        let barrier = Barrier::new(THREADS);
        let successes = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        check(&challenges, &auth).is_ok()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|ok| *ok)
                .count()
        });
        assert_eq!(successes, 1);
    }

    #[test]
    fn errors_map_to_grpc_codes() {
        let who = admin().public_key().address();
        let cases = [
            (AuthError::Missing, tonic::Code::Unauthenticated),
            (AuthError::UnknownToken, tonic::Code::Unauthenticated),
            (
                AuthError::BadSignature(avsnode_signer::Error::RecoveryFailed),
                tonic::Code::Unauthenticated,
            ),
            (AuthError::HighS, tonic::Code::Unauthenticated),
            // A garbage signature recovers to some key too: the same answer as any failure.
            (AuthError::NotAdmin(who), tonic::Code::Unauthenticated),
        ];
        for (error, code) in cases {
            let status = tonic::Status::from(error);
            assert_eq!(status.code(), code, "{status:?}");
        }
        let status = tonic::Status::from(AuthError::NotAdmin(who));
        assert!(status.message().contains(&who.to_string()));
        assert_eq!(
            tonic::Status::from(AuthError::UnknownToken).message(),
            "challenge token unknown, expired or already used"
        );
    }
}
