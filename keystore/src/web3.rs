use serde::{Deserialize, Serialize};
use sha3::{Digest, Keccak256};

use crate::kdf::KdfParamsJson;
use crate::sealed::{CIPHER, FieldNames, Sealed, SealedText, random_uuid};
use crate::{Error, Kdf, Password, SecretBytes};

const VERSION: u64 = 3;
const FIELDS: FieldNames = FieldNames {
    salt: "crypto.kdfparams.salt",
    iv: "crypto.cipherparams.iv",
    ciphertext: "crypto.ciphertext",
    tag: "crypto.mac",
};

/// A Web3 Secret Storage v3 keystore (`version` 3) holding a secp256k1 secret. The password is
/// used as raw UTF-8, without EIP-2335 normalisation.
#[derive(Debug, Clone)]
pub struct Web3Keystore {
    sealed: Sealed,
    id: String,
    address: Option<String>,
}

impl Web3Keystore {
    /// Parses and validates a keystore; accepts `crypto` or `Crypto` (geth writes either).
    pub fn from_json(json: &str) -> Result<Self, Error> {
        let found = crate::version_of(json)?;
        if found != VERSION {
            return Err(Error::UnsupportedVersion {
                found,
                expected: "3 (Web3 Secret Storage)",
            });
        }
        let file: FileJson = serde_json::from_str(json).map_err(Error::Json)?;
        let c = &file.crypto;
        let text = SealedText {
            kdf_function: &c.kdf,
            kdf_params: &c.kdfparams,
            cipher: &c.cipher,
            iv: &c.cipherparams.iv,
            ciphertext: &c.ciphertext,
            tag: &c.mac,
        };
        Ok(Self {
            sealed: Sealed::decode(&text, &FIELDS)?,
            id: file.id,
            address: file.address,
        })
    }

    /// Encrypts `secret` with a fresh random salt, IV and id. `address_hex` is recorded as given
    /// (the caller derives it).
    pub fn encrypt(
        secret: &[u8],
        password: &Password,
        address_hex: Option<&str>,
        kdf: &Kdf,
    ) -> Result<Self, Error> {
        Ok(Self {
            sealed: Sealed::seal(secret, password.raw_bytes(), *kdf, mac)?,
            id: random_uuid(),
            address: address_hex.map(str::to_owned),
        })
    }

    /// Decrypts the secret; a MAC mismatch is [`Error::WrongPassword`].
    pub fn decrypt(&self, password: &Password) -> Result<SecretBytes, Error> {
        self.sealed.open(password.raw_bytes(), mac, "MAC")
    }

    /// The file as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        let s = &self.sealed;
        let (kdf, kdfparams) = s.kdf.to_json(&s.salt);
        let file = FileJson {
            crypto: CryptoJson {
                cipher: CIPHER.to_owned(),
                cipherparams: CipherParams {
                    iv: hex::encode(s.iv),
                },
                ciphertext: hex::encode(&s.ciphertext),
                kdf: kdf.to_owned(),
                kdfparams,
                mac: hex::encode(s.tag),
            },
            id: self.id.clone(),
            version: VERSION,
            address: self.address.clone(),
        };
        serde_json::to_string_pretty(&file)
            .expect("a keystore with string map keys always serialises")
    }

    /// The key derivation parameters.
    pub fn kdf(&self) -> Kdf {
        self.sealed.kdf
    }

    /// The `address` field as written in the file, if any. Not verified against the secret.
    pub fn address(&self) -> Option<&str> {
        self.address.as_deref()
    }

    /// The file's `id`.
    pub fn id(&self) -> &str {
        &self.id
    }
}

fn mac(key: &[u8], ciphertext: &[u8]) -> [u8; 32] {
    Keccak256::new()
        .chain_update(key)
        .chain_update(ciphertext)
        .finalize()
        .into()
}

#[derive(Serialize, Deserialize)]
struct FileJson {
    #[serde(alias = "Crypto")]
    crypto: CryptoJson,
    #[serde(default)]
    id: String,
    version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    address: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct CryptoJson {
    cipher: String,
    cipherparams: CipherParams,
    ciphertext: String,
    kdf: String,
    kdfparams: KdfParamsJson,
    mac: String,
}

#[derive(Serialize, Deserialize)]
struct CipherParams {
    iv: String,
}
