//! A key decrypted into memory from a keystore file (the `local` signing method), also the
//! demo's and the tests' keys.

use std::fmt;

use avsnode_keystore::{Curve, Eip2335Keystore, Kdf, Keystore, Password, Web3Keystore};
use avsnode_signer::bn254::{self, HashToG1};
use avsnode_signer::messages::{AuthMessage, SigningDigest, keccak256};
use avsnode_signer::{Scheme, bls12_381, ecdsa};

use crate::ResultSignatures;
use crate::definition::{SignerBackend, SignerDefinition};
use crate::error::{SignerError, check_permissions};

/// A decrypted operator key of one of the three schemes.
pub enum LocalKey {
    /// secp256k1.
    Ecdsa(ecdsa::SecretKey),
    /// BN254.
    Bn254(bn254::SecretKey),
    /// BLS12-381.
    Bls12381(bls12_381::SecretKey),
}

/// The scheme of the keys of a keystore's curve.
pub fn scheme_of(curve: Curve) -> Scheme {
    match curve {
        Curve::Secp256k1 => Scheme::Ecdsa,
        Curve::Bn254 => Scheme::Bn254,
        Curve::Bls12381 => Scheme::Bls12381,
    }
}

/// Why a keystore file does not give a key.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Unreadable, malformed, or the password is wrong.
    #[error(transparent)]
    Keystore(#[from] avsnode_keystore::Error),
    /// The secret is not a key of the file's curve, or not the key the file records.
    #[error("{0}")]
    BadKey(String),
}

impl fmt::Debug for LocalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalKey({}, {})", self.scheme(), self.public_id())
    }
}

impl LocalKey {
    /// Generates a fresh key (for `keys generate` and the demo).
    pub fn generate(scheme: Scheme) -> LocalKey {
        let mut rng = rand::rngs::OsRng;
        match scheme {
            Scheme::Ecdsa => LocalKey::Ecdsa(ecdsa::SecretKey::random(&mut rng)),
            Scheme::Bn254 => LocalKey::Bn254(bn254::SecretKey::random(&mut rng)),
            Scheme::Bls12381 => LocalKey::Bls12381(bls12_381::SecretKey::random(&mut rng)),
        }
    }

    /// Decodes a raw 32-byte big-endian secret.
    pub fn from_secret(scheme: Scheme, secret: &[u8]) -> Result<LocalKey, avsnode_signer::Error> {
        Ok(match scheme {
            Scheme::Ecdsa => LocalKey::Ecdsa(ecdsa::SecretKey::from_bytes(secret)?),
            Scheme::Bn254 => LocalKey::Bn254(bn254::SecretKey::from_bytes(secret)?),
            Scheme::Bls12381 => LocalKey::Bls12381(bls12_381::SecretKey::from_bytes(secret)?),
        })
    }

    /// Decodes the secret of a keystore file. BN254 keystores written by Hourglass may hold an
    /// unreduced scalar; it is reduced mod r (see `bn254::SecretKey::from_keystore_bytes`).
    pub fn from_keystore_secret(
        scheme: Scheme,
        secret: &[u8],
    ) -> Result<LocalKey, avsnode_signer::Error> {
        match scheme {
            Scheme::Bn254 => Ok(LocalKey::Bn254(bn254::SecretKey::from_keystore_bytes(
                secret,
            )?)),
            _ => LocalKey::from_secret(scheme, secret),
        }
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        match self {
            LocalKey::Ecdsa(_) => Scheme::Ecdsa,
            LocalKey::Bn254(_) => Scheme::Bn254,
            LocalKey::Bls12381(_) => Scheme::Bls12381,
        }
    }

    /// The public key bytes that identify the key: the 20-byte address for ECDSA, the 128-byte
    /// G2 key for BN254, the 48-byte key for BLS12-381.
    pub fn public_bytes(&self) -> Vec<u8> {
        match self {
            LocalKey::Ecdsa(k) => k.public_key().address().0.to_vec(),
            LocalKey::Bn254(k) => k.public_key_g2().to_wire().to_vec(),
            LocalKey::Bls12381(k) => k.public_key().to_bytes().to_vec(),
        }
    }

    /// A short public identifier for logs: the address, or the start of the public key.
    pub fn public_id(&self) -> String {
        let bytes = self.public_bytes();
        match self {
            LocalKey::Ecdsa(_) => format!("0x{}", hex::encode(bytes)),
            _ => format!("0x{}…", hex::encode(&bytes[..8])),
        }
    }

    /// The ledger's key id: `keccak256(public_bytes)`.
    pub fn key_id(&self) -> [u8; 32] {
        keccak256(&self.public_bytes())
    }

    /// Signs a certificate digest: BN254 with `H_sol` (what the contracts verify).
    pub fn sign_certificate(&self, digest: &SigningDigest) -> Vec<u8> {
        match self {
            LocalKey::Ecdsa(k) => k.sign(digest).to_bytes().to_vec(),
            LocalKey::Bn254(k) => k.sign(digest, HashToG1::Solidity).to_wire().to_vec(),
            LocalKey::Bls12381(k) => k.sign(digest).to_bytes().to_vec(),
        }
    }

    /// Signs the auth message: BN254 with the RFC 9380 map (DESIGN §4.3).
    pub fn sign_auth(&self, auth: &AuthMessage<'_>) -> Vec<u8> {
        let digest = auth.digest();
        match self {
            LocalKey::Ecdsa(k) => k.sign(&digest).to_bytes().to_vec(),
            LocalKey::Bn254(k) => k.sign(&digest, HashToG1::Rfc9380).to_wire().to_vec(),
            LocalKey::Bls12381(k) => k.sign(&digest).to_bytes().to_vec(),
        }
    }

    /// Signs a task's certificate digest, then the auth message over that signature.
    pub fn sign_result(&self, digest: &SigningDigest, auth: AuthMessage<'_>) -> ResultSignatures {
        let result = self.sign_certificate(digest);
        let auth = self.sign_auth(&AuthMessage {
            result_signature: &result,
            ..auth
        });
        ResultSignatures { result, auth }
    }

    /// Unlocks a `[[signer]]`: checks file permissions, decrypts, checks the scheme and that the
    /// secret matches the keystore's public key where the file records one.
    pub fn load(config: &SignerDefinition) -> Result<LocalKey, SignerError> {
        let name = &config.name;
        let Ok(SignerBackend::Keystore {
            keystore: keystore_path,
            password_file,
        }) = config.backend()
        else {
            return Err(SignerError::Backend {
                name: name.clone(),
                reason: "not a keystore signer".into(),
            });
        };
        for path in [keystore_path, password_file] {
            check_permissions(
                &format!("signer {name:?}"),
                path,
                config.allow_insecure_permissions,
            )?;
        }
        let password_text =
            std::fs::read_to_string(password_file).map_err(|source| SignerError::Read {
                name: format!("signer {name:?}"),
                path: password_file.to_owned(),
                source,
            })?;
        let password = Password::from_file_contents(&zeroize::Zeroizing::new(password_text));
        let keystore_error = |source| SignerError::Keystore {
            name: name.clone(),
            path: keystore_path.to_owned(),
            source,
        };
        let keystore = Keystore::read(keystore_path).map_err(keystore_error)?;
        if scheme_of(keystore.curve()) != config.scheme {
            return Err(SignerError::WrongCurve {
                name: name.clone(),
                scheme: config.scheme,
                curve: keystore.curve(),
            });
        }
        LocalKey::decrypt(&keystore, &password).map_err(|e| match e {
            KeyFileError::Keystore(source) => keystore_error(source),
            KeyFileError::BadKey(reason) => SignerError::BadKey {
                name: name.clone(),
                reason,
            },
        })
    }

    /// Decrypts `keystore` into the key of its curve, checked against the public key the file
    /// records.
    pub fn decrypt(keystore: &Keystore, password: &Password) -> Result<LocalKey, KeyFileError> {
        let secret = keystore.decrypt(password)?;
        let scheme = scheme_of(keystore.curve());
        let key = LocalKey::from_keystore_secret(scheme, secret.as_bytes())
            .map_err(|e| KeyFileError::BadKey(format!("not a valid {scheme} key: {e}")))?;
        key.check_recorded_public_key(keystore)
            .map_err(KeyFileError::BadKey)?;
        Ok(key)
    }

    /// Encrypts the key into its scheme's keystore format (Web3 Secret Storage v3 for ecdsa,
    /// EIP-2335 for bn254 and bls12-381).
    pub fn encrypt(
        &self,
        password: &Password,
        kdf: &Kdf,
    ) -> Result<Keystore, avsnode_keystore::Error> {
        let (secret, public) = match self {
            LocalKey::Ecdsa(k) => (k.to_bytes(), hex::encode(k.public_key().address().0)),
            LocalKey::Bn254(k) => (k.to_bytes(), hex::encode(self.public_bytes())),
            LocalKey::Bls12381(k) => (k.to_bytes(), hex::encode(self.public_bytes())),
        };
        let eip2335 =
            |curve| Eip2335Keystore::encrypt(secret.as_ref(), password, curve, &public, "", kdf);
        Ok(match self {
            LocalKey::Ecdsa(_) => Keystore::Web3(Web3Keystore::encrypt(
                secret.as_ref(),
                password,
                Some(&public),
                kdf,
            )?),
            LocalKey::Bn254(_) => Keystore::Eip2335(eip2335(Curve::Bn254)?),
            LocalKey::Bls12381(_) => Keystore::Eip2335(eip2335(Curve::Bls12381)?),
        })
    }

    /// The public facts about the key, as `avsnode keys inspect` shows them.
    pub fn public_facts(&self) -> Vec<(&'static str, String)> {
        let hex = |bytes: &[u8]| format!("0x{}", hex::encode(bytes));
        match self {
            LocalKey::Ecdsa(k) => vec![
                ("scheme", "ecdsa".into()),
                ("address", k.public_key().address().to_string()),
                ("public_key", hex(&k.public_key().to_uncompressed())),
            ],
            LocalKey::Bn254(k) => vec![
                ("scheme", "bn254".into()),
                ("g1_public_key", hex(&k.public_key_g1().to_wire())),
                ("g2_public_key", hex(&k.public_key_g2().to_wire())),
                ("operator_id", hex(&k.public_key_g1().operator_id())),
            ],
            LocalKey::Bls12381(k) => vec![
                ("scheme", "bls12-381".into()),
                ("public_key", hex(&k.public_key().to_bytes())),
            ],
        }
    }

    /// The keystores leave `pubkey`/`address` outside their checksum: a decrypted key that does
    /// not match them means a damaged or tampered file.
    fn check_recorded_public_key(&self, keystore: &Keystore) -> Result<(), String> {
        let (recorded, ours) = match (keystore, self) {
            (Keystore::Web3(w), LocalKey::Ecdsa(k)) => match w.address() {
                Some(a) => (
                    a.trim_start_matches("0x").to_lowercase(),
                    hex::encode(k.public_key().address().0),
                ),
                None => return Ok(()),
            },
            (Keystore::Eip2335(e), LocalKey::Bls12381(k)) => (
                e.pubkey_hex().to_lowercase(),
                hex::encode(k.public_key().to_bytes()),
            ),
            (Keystore::Eip2335(e), LocalKey::Bn254(k)) => {
                let recorded = e.pubkey_hex().to_lowercase();
                // The Hourglass format records the 128-byte G2 key; the Cerberus variant a
                // compressed G1 key, which we do not decode: only the G2 form is compared.
                if recorded.len() != 256 {
                    return Ok(());
                }
                (recorded, hex::encode(k.public_key_g2().to_wire()))
            }
            _ => return Err("keystore format does not match the scheme".into()),
        };
        if recorded.is_empty() || recorded == ours {
            Ok(())
        } else {
            Err(format!(
                "the decrypted key's public key 0x{ours} does not match the keystore's 0x{recorded}"
            ))
        }
    }
}
