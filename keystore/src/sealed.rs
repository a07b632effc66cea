//! The encrypted core both formats share: KDF, AES-128-CTR, and a 32-byte integrity tag over
//! `DK[16..32] ‖ ciphertext` (sha256 in EIP-2335, keccak256 in Web3 v3).

use ctr::cipher::{KeyIvInit, StreamCipher};
use rand::RngCore;
use rand::rngs::OsRng;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::decode_hex;
use crate::kdf::{DKLEN, KdfParamsJson};
use crate::{Error, Kdf, SecretBytes};

pub(crate) const CIPHER: &str = "aes-128-ctr";
const SALT_LEN: usize = 32;

/// Computes the integrity tag from the second half of the derived key and the ciphertext.
pub(crate) type TagFn = fn(&[u8], &[u8]) -> [u8; 32];

/// The validated encrypted part of a key file.
#[derive(Debug, Clone)]
pub(crate) struct Sealed {
    pub(crate) kdf: Kdf,
    pub(crate) salt: Vec<u8>,
    pub(crate) iv: [u8; 16],
    pub(crate) ciphertext: Vec<u8>,
    pub(crate) tag: [u8; 32],
}

/// The encrypted part as written in a file, before validation.
pub(crate) struct SealedText<'a> {
    pub(crate) kdf_function: &'a str,
    pub(crate) kdf_params: &'a KdfParamsJson,
    pub(crate) cipher: &'a str,
    pub(crate) iv: &'a str,
    pub(crate) ciphertext: &'a str,
    pub(crate) tag: &'a str,
}

/// Where each field sits in the format's JSON, for error messages.
pub(crate) struct FieldNames {
    pub(crate) salt: &'static str,
    pub(crate) iv: &'static str,
    pub(crate) ciphertext: &'static str,
    pub(crate) tag: &'static str,
}

impl Sealed {
    /// Validates everything that can be checked without the password.
    pub(crate) fn decode(text: &SealedText<'_>, names: &FieldNames) -> Result<Self, Error> {
        let (kdf, salt) = text.kdf_params.decode(text.kdf_function, names.salt)?;
        if text.cipher != CIPHER {
            return Err(Error::UnknownCipher(text.cipher.to_owned()));
        }
        let ciphertext = decode_hex(names.ciphertext, text.ciphertext)?;
        if ciphertext.is_empty() {
            return Err(Error::Length {
                field: names.ciphertext,
                expected: "non-empty",
                actual: 0,
            });
        }
        Ok(Self {
            kdf,
            salt,
            iv: decode_array(names.iv, text.iv, "16 bytes")?,
            ciphertext,
            tag: decode_array(names.tag, text.tag, "32 bytes")?,
        })
    }

    /// Encrypts `secret` under a fresh random salt and IV.
    pub(crate) fn seal(
        secret: &[u8],
        password: &[u8],
        kdf: Kdf,
        tag_fn: TagFn,
    ) -> Result<Self, Error> {
        if secret.is_empty() {
            return Err(Error::Length {
                field: "secret",
                expected: "non-empty",
                actual: 0,
            });
        }
        let mut salt = vec![0u8; SALT_LEN];
        OsRng.fill_bytes(&mut salt);
        let mut iv = [0u8; 16];
        OsRng.fill_bytes(&mut iv);
        let dk = kdf.derive(password, &salt)?;
        let mut ciphertext = secret.to_vec();
        apply_aes_ctr(&dk, &iv, &mut ciphertext);
        let tag = tag_fn(&dk[16..], &ciphertext);
        Ok(Self {
            kdf,
            salt,
            iv,
            ciphertext,
            tag,
        })
    }

    /// Verifies the tag (in constant time) and only then decrypts, so a wrong password is an
    /// error rather than garbage.
    pub(crate) fn open(
        &self,
        password: &[u8],
        tag_fn: TagFn,
        check: &'static str,
    ) -> Result<SecretBytes, Error> {
        let dk = self.kdf.derive(password, &self.salt)?;
        let expected = tag_fn(&dk[16..], &self.ciphertext);
        if !bool::from(expected.ct_eq(&self.tag)) {
            return Err(Error::WrongPassword { check });
        }
        let mut plaintext = Zeroizing::new(self.ciphertext.clone());
        apply_aes_ctr(&dk, &self.iv, &mut plaintext);
        Ok(SecretBytes::new(plaintext))
    }
}

fn apply_aes_ctr(dk: &[u8; DKLEN], iv: &[u8; 16], buf: &mut [u8]) {
    let mut cipher = ctr::Ctr128BE::<aes::Aes128>::new(dk[..16].into(), iv.into());
    cipher.apply_keystream(buf);
}

fn decode_array<const N: usize>(
    field: &'static str,
    hex_str: &str,
    expected: &'static str,
) -> Result<[u8; N], Error> {
    decode_hex(field, hex_str)?
        .try_into()
        .map_err(|v: Vec<u8>| Error::Length {
            field,
            expected,
            actual: v.len(),
        })
}

/// A random (version 4) UUID, formatted by hand to avoid a dependency.
pub(crate) fn random_uuid() -> String {
    let mut b = [0u8; 16];
    OsRng.fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}
