use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::kdf::KdfParamsJson;
use crate::sealed::{CIPHER, FieldNames, Sealed, SealedText, random_uuid};
use crate::{Curve, Error, Kdf, Password, SecretBytes};

const VERSION: u64 = 4;
const CHECKSUM: &str = "sha256";
const BN254: &str = "bn254";
const FIELDS: FieldNames = FieldNames {
    salt: "crypto.kdf.params.salt",
    iv: "crypto.cipher.params.iv",
    ciphertext: "crypto.cipher.message",
    tag: "crypto.checksum.message",
};

/// An EIP-2335 keystore (`version` 4) holding a BLS12-381 or BN254 secret.
///
/// Parsing validates everything that does not need the password (formats, lengths, KDF limits),
/// so [`decrypt`](Self::decrypt) can only fail on the password.
#[derive(Debug, Clone)]
pub struct Eip2335Keystore {
    sealed: Sealed,
    curve: Curve,
    pubkey: String,
    path: String,
    uuid: String,
    description: Option<String>,
    /// Unknown top-level fields, kept so that rewriting a file does not drop them.
    extra: Map<String, Value>,
}

impl Eip2335Keystore {
    /// Parses and validates a keystore. The curve is BN254 if `curveType` (Hourglass) or `curve`
    /// (Cerberus) is `"bn254"`, BLS12-381 if both are absent; any other value is an error.
    pub fn from_json(json: &str) -> Result<Self, Error> {
        let found = crate::version_of(json)?;
        if found != VERSION {
            return Err(Error::UnsupportedVersion {
                found,
                expected: "4 (EIP-2335)",
            });
        }
        let file: FileJson = serde_json::from_str(json).map_err(Error::Json)?;
        let mut curve = Curve::Bls12381;
        for name in [&file.curve_type, &file.curve].into_iter().flatten() {
            if name != BN254 {
                return Err(Error::UnknownCurve(name.clone()));
            }
            curve = Curve::Bn254;
        }
        let crypto = &file.crypto;
        if crypto.checksum.function != CHECKSUM {
            return Err(Error::UnknownChecksum(crypto.checksum.function.clone()));
        }
        let text = SealedText {
            kdf_function: &crypto.kdf.function,
            kdf_params: &crypto.kdf.params,
            cipher: &crypto.cipher.function,
            iv: &crypto.cipher.params.iv,
            ciphertext: &crypto.cipher.message,
            tag: &crypto.checksum.message,
        };
        Ok(Self {
            sealed: Sealed::decode(&text, &FIELDS)?,
            curve,
            pubkey: file.pubkey,
            path: file.path,
            uuid: file.uuid,
            description: file.description,
            extra: file.extra,
        })
    }

    /// Encrypts `secret` with a fresh random salt, IV and UUID. `pubkey_hex` and `path` are
    /// recorded as given (the caller derives the public key). Secp256k1 is refused: use
    /// [`Web3Keystore`](crate::Web3Keystore).
    pub fn encrypt(
        secret: &[u8],
        password: &Password,
        curve: Curve,
        pubkey_hex: &str,
        path: &str,
        kdf: &Kdf,
    ) -> Result<Self, Error> {
        if curve == Curve::Secp256k1 {
            return Err(Error::CurveNotEip2335(curve));
        }
        Ok(Self {
            sealed: Sealed::seal(secret, &password.eip2335_bytes(), *kdf, checksum)?,
            curve,
            pubkey: pubkey_hex.to_owned(),
            path: path.to_owned(),
            uuid: random_uuid(),
            description: None,
            extra: Map::new(),
        })
    }

    /// Decrypts the secret; a checksum mismatch is [`Error::WrongPassword`].
    pub fn decrypt(&self, password: &Password) -> Result<SecretBytes, Error> {
        self.sealed
            .open(&password.eip2335_bytes(), checksum, "checksum")
    }

    /// The file as pretty-printed JSON; BN254 is marked with `"curveType": "bn254"`.
    pub fn to_json(&self) -> String {
        let s = &self.sealed;
        let (kdf_function, kdf_params) = s.kdf.to_json(&s.salt);
        let file = FileJson {
            crypto: CryptoJson {
                kdf: Module {
                    function: kdf_function.to_owned(),
                    params: kdf_params,
                    message: String::new(),
                },
                checksum: Module {
                    function: CHECKSUM.to_owned(),
                    params: Value::Object(Map::new()),
                    message: hex::encode(s.tag),
                },
                cipher: Module {
                    function: CIPHER.to_owned(),
                    params: CipherParams {
                        iv: hex::encode(s.iv),
                    },
                    message: hex::encode(&s.ciphertext),
                },
            },
            description: self.description.clone(),
            pubkey: self.pubkey.clone(),
            path: self.path.clone(),
            uuid: self.uuid.clone(),
            version: VERSION,
            curve_type: (self.curve == Curve::Bn254).then(|| BN254.to_owned()),
            curve: None,
            extra: self.extra.clone(),
        };
        serde_json::to_string_pretty(&file)
            .expect("a keystore with string map keys always serialises")
    }

    /// The curve of the secret.
    pub fn curve(&self) -> Curve {
        self.curve
    }

    /// The key derivation parameters.
    pub fn kdf(&self) -> Kdf {
        self.sealed.kdf
    }

    /// The `pubkey` field as hex without `0x` (for BN254 in the Hourglass format, the 128-byte G2
    /// key). Not verified against the secret: that is the caller's job.
    pub fn pubkey_hex(&self) -> &str {
        self.pubkey.strip_prefix("0x").unwrap_or(&self.pubkey)
    }

    /// The key derivation path recorded in the file (may be empty).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The file's UUID.
    pub fn uuid(&self) -> &str {
        &self.uuid
    }
}

fn checksum(key: &[u8], ciphertext: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(key)
        .chain_update(ciphertext)
        .finalize()
        .into()
}

#[derive(Serialize, Deserialize)]
struct FileJson {
    crypto: CryptoJson,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(default)]
    pubkey: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    uuid: String,
    /// Checked by [`crate::version_of`] before parsing the rest.
    version: u64,
    #[serde(rename = "curveType", default, skip_serializing_if = "Option::is_none")]
    curve_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    curve: Option<String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Serialize, Deserialize)]
struct CryptoJson {
    kdf: Module<KdfParamsJson>,
    checksum: Module<Value>,
    cipher: Module<CipherParams>,
}

#[derive(Serialize, Deserialize)]
struct Module<P> {
    function: String,
    params: P,
    #[serde(default)]
    message: String,
}

#[derive(Serialize, Deserialize)]
struct CipherParams {
    iv: String,
}
