use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::Error;
use crate::error::decode_hex;

/// Largest scrypt working memory (128·n·r·p bytes) accepted, on read and on write.
const SCRYPT_MAX_MEMORY: u128 = 1 << 30;
/// Largest pbkdf2 iteration count accepted, on read and on write.
const PBKDF2_MAX_ROUNDS: u64 = 100_000_000;
/// The derived key: its first half is the AES key, its second half keys the checksum/MAC.
pub(crate) const DKLEN: usize = 32;

/// Key derivation function and its cost parameters (always 32-byte output; pbkdf2 uses
/// hmac-sha256).
///
/// Limits, checked whenever a file is read or written: scrypt `n` a power of two ≥ 2, `r`, `p` ≥ 1
/// and 128·n·r·p ≤ 1 GiB (and n < 2^(16·r), which scrypt requires); pbkdf2 1 ≤ `c` ≤ 10^8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kdf {
    /// scrypt.
    Scrypt {
        /// CPU/memory cost, a power of two.
        n: u64,
        /// Block size.
        r: u32,
        /// Parallelism.
        p: u32,
    },
    /// PBKDF2 with HMAC-SHA256.
    Pbkdf2 {
        /// Iteration count.
        c: u32,
    },
}

impl Kdf {
    /// scrypt n=2^18, r=8, p=1: the EIP-2335 default (about 1 s and 256 MiB).
    pub fn scrypt_default() -> Self {
        Kdf::Scrypt {
            n: 1 << 18,
            r: 8,
            p: 1,
        }
    }

    /// pbkdf2 c=262144: the EIP-2335 default.
    pub fn pbkdf2_default() -> Self {
        Kdf::Pbkdf2 { c: 262_144 }
    }

    /// scrypt n=16, r=8, p=1. For tests only: it protects nothing.
    pub fn light() -> Self {
        Kdf::Scrypt { n: 16, r: 8, p: 1 }
    }

    /// Refuses parameters outside the limits in the type's doc.
    pub fn check_limits(&self) -> Result<(), Error> {
        match *self {
            Kdf::Scrypt { n, r, p } => {
                if n < 2 || !n.is_power_of_two() {
                    return Err(Error::ScryptN(n));
                }
                if r == 0 {
                    return Err(Error::ScryptZero("r"));
                }
                if p == 0 {
                    return Err(Error::ScryptZero("p"));
                }
                scrypt_params(n, r, p)?;
            }
            Kdf::Pbkdf2 { c } => {
                if c == 0 {
                    return Err(Error::Pbkdf2ZeroRounds);
                }
                if u64::from(c) > PBKDF2_MAX_ROUNDS {
                    return Err(Error::Pbkdf2Rounds(c.into()));
                }
            }
        }
        Ok(())
    }

    /// Derives the 32-byte key, after checking the limits.
    pub(crate) fn derive(
        &self,
        password: &[u8],
        salt: &[u8],
    ) -> Result<Zeroizing<[u8; DKLEN]>, Error> {
        self.check_limits()?;
        let mut dk = Zeroizing::new([0u8; DKLEN]);
        match *self {
            Kdf::Scrypt { n, r, p } => {
                let params = scrypt_params(n, r, p)?;
                scrypt::scrypt(password, salt, &params, &mut *dk)
                    .map_err(|_| Error::ScryptParams { n, r, p })?;
            }
            Kdf::Pbkdf2 { c } => pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, salt, c, &mut *dk),
        }
        Ok(dk)
    }

    /// The `function` name and `params` object as both formats write them.
    pub(crate) fn to_json(self, salt: &[u8]) -> (&'static str, KdfParamsJson) {
        let mut params = KdfParamsJson {
            dklen: Some(DKLEN as u64),
            salt: hex::encode(salt),
            ..KdfParamsJson::default()
        };
        match self {
            Kdf::Scrypt { n, r, p } => {
                (params.n, params.r, params.p) = (Some(n), Some(r), Some(p));
            }
            Kdf::Pbkdf2 { c } => {
                (params.c, params.prf) = (Some(c.into()), Some(PRF.to_owned()));
            }
        }
        (self.name(), params)
    }

    /// The `function` name in files.
    fn name(self) -> &'static str {
        match self {
            Kdf::Scrypt { .. } => "scrypt",
            Kdf::Pbkdf2 { .. } => "pbkdf2",
        }
    }
}

/// The memory limit, plus what the scrypt crate itself refuses (n < 2^(16r)); expects n a power
/// of two and r, p non-zero.
fn scrypt_params(n: u64, r: u32, p: u32) -> Result<scrypt::Params, Error> {
    let memory = 128u128
        .saturating_mul(u128::from(n))
        .saturating_mul(u128::from(r))
        .saturating_mul(u128::from(p));
    if memory > SCRYPT_MAX_MEMORY {
        return Err(Error::ScryptMemory { n, r, p });
    }
    // n is a power of two below 2^64, so its log fits in a u8.
    let log_n = n.trailing_zeros() as u8;
    scrypt::Params::new(log_n, r, p, DKLEN).map_err(|_| Error::ScryptParams { n, r, p })
}

const PRF: &str = "hmac-sha256";

/// The KDF `params` object; EIP-2335 and Web3 v3 use the same keys. Fields are optional because
/// which ones are required depends on the function.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct KdfParamsJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    c: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dklen: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prf: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    r: Option<u32>,
    salt: String,
}

impl KdfParamsJson {
    /// Validates `function` and these params into a [`Kdf`] within limits and a non-empty salt.
    pub(crate) fn decode(
        &self,
        function: &str,
        salt_field: &'static str,
    ) -> Result<(Kdf, Vec<u8>), Error> {
        let kdf = match function {
            "scrypt" => {
                let missing = |param| Error::MissingKdfParam {
                    kdf: "scrypt",
                    param,
                };
                Kdf::Scrypt {
                    n: self.n.ok_or_else(|| missing("n"))?,
                    r: self.r.ok_or_else(|| missing("r"))?,
                    p: self.p.ok_or_else(|| missing("p"))?,
                }
            }
            "pbkdf2" => {
                let prf = self.prf.as_deref().ok_or(Error::MissingKdfParam {
                    kdf: "pbkdf2",
                    param: "prf",
                })?;
                if prf != PRF {
                    return Err(Error::UnknownPrf(prf.to_owned()));
                }
                let c = self.c.ok_or(Error::MissingKdfParam {
                    kdf: "pbkdf2",
                    param: "c",
                })?;
                Kdf::Pbkdf2 {
                    c: u32::try_from(c).map_err(|_| Error::Pbkdf2Rounds(c))?,
                }
            }
            other => return Err(Error::UnknownKdf(other.to_owned())),
        };
        let dklen = self.dklen.ok_or(Error::MissingKdfParam {
            kdf: kdf.name(),
            param: "dklen",
        })?;
        if dklen != DKLEN as u64 {
            return Err(Error::DkLen(dklen));
        }
        kdf.check_limits()?;
        let salt = decode_hex(salt_field, &self.salt)?;
        if salt.is_empty() {
            return Err(Error::Length {
                field: salt_field,
                expected: "non-empty",
                actual: 0,
            });
        }
        Ok((kdf, salt))
    }
}
