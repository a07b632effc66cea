use std::path::PathBuf;

/// Everything that can go wrong reading, writing or decrypting a key file.
///
/// Messages name the offending field or value; they never contain the password, a derived key
/// or plaintext.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key file could not be read.
    #[error("cannot read keystore file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Not JSON, or JSON of the wrong shape (serde_json's message includes line and column).
    #[error("malformed keystore JSON: {0}")]
    Json(serde_json::Error),
    /// A `version` this reader does not handle.
    #[error("unsupported keystore version {found} (expected {expected})")]
    UnsupportedVersion {
        /// The file's version.
        found: u64,
        /// What was expected.
        expected: &'static str,
    },
    /// A KDF other than scrypt or pbkdf2.
    #[error("unknown kdf function {0:?} (expected \"scrypt\" or \"pbkdf2\")")]
    UnknownKdf(String),
    /// A pbkdf2 PRF other than hmac-sha256.
    #[error("unknown pbkdf2 prf {0:?} (only \"hmac-sha256\")")]
    UnknownPrf(String),
    /// A cipher other than aes-128-ctr.
    #[error("unknown cipher {0:?} (only \"aes-128-ctr\")")]
    UnknownCipher(String),
    /// An EIP-2335 checksum function other than sha256.
    #[error("unknown checksum function {0:?} (only \"sha256\")")]
    UnknownChecksum(String),
    /// An EIP-2335 `curveType`/`curve` other than bn254.
    #[error("unknown curve {0:?} (expected \"bn254\", or no curve field for bls12-381)")]
    UnknownCurve(String),
    /// An EIP-2335 keystore was asked to hold a key of another curve.
    #[error("EIP-2335 keystores hold bls12-381 or bn254 keys, not {0}")]
    CurveNotEip2335(crate::Curve),
    /// A parameter the chosen KDF needs is absent.
    #[error("{kdf} kdf params: missing {param}")]
    MissingKdfParam {
        /// `scrypt` or `pbkdf2`.
        kdf: &'static str,
        /// The absent parameter.
        param: &'static str,
    },
    /// `dklen` other than 32 (the cipher key and checksum key are its two halves).
    #[error("kdf dklen must be 32, got {0}")]
    DkLen(u64),
    /// scrypt `n` is not a power of two of at least 2.
    #[error("scrypt n must be a power of two >= 2, got {0}")]
    ScryptN(u64),
    /// scrypt `r` or `p` is zero.
    #[error("scrypt {0} must be >= 1")]
    ScryptZero(&'static str),
    /// scrypt would need more than 1 GiB.
    #[error(
        "scrypt memory 128*n*r*p exceeds 1 GiB (n={n}, r={r}, p={p}): refused to avoid memory exhaustion"
    )]
    ScryptMemory {
        /// Cost parameter.
        n: u64,
        /// Block size.
        r: u32,
        /// Parallelism.
        p: u32,
    },
    /// scrypt parameters within the limits that scrypt itself rejects (it needs n < 2^(16*r)).
    #[error("scrypt parameters n={n}, r={r}, p={p} are invalid (n must be below 2^(16*r))")]
    ScryptParams {
        /// Cost parameter.
        n: u64,
        /// Block size.
        r: u32,
        /// Parallelism.
        p: u32,
    },
    /// pbkdf2 `c` is zero.
    #[error("pbkdf2 c must be >= 1")]
    Pbkdf2ZeroRounds,
    /// pbkdf2 `c` above 10^8.
    #[error("pbkdf2 c = {0} exceeds 100000000: refused to avoid CPU denial of service")]
    Pbkdf2Rounds(u64),
    /// A hex field that does not decode.
    #[error("{field}: invalid hex")]
    Hex {
        /// Path of the field in the JSON, e.g. `crypto.cipher.params.iv`.
        field: &'static str,
        /// The decoding error.
        #[source]
        source: hex::FromHexError,
    },
    /// A field of the wrong length.
    #[error("{field}: must be {expected}, got {actual} bytes")]
    Length {
        /// Path of the field in the JSON.
        field: &'static str,
        /// The expected length, e.g. `16 bytes` or `non-empty`.
        expected: &'static str,
        /// The decoded length.
        actual: usize,
    },
    /// The checksum (EIP-2335) or MAC (Web3) does not match: the password is wrong, or the file
    /// was altered.
    #[error("wrong password: keystore {check} mismatch")]
    WrongPassword {
        /// `checksum` or `MAC`.
        check: &'static str,
    },
}

/// Decodes the hex text of one keystore field, naming the field when it is not hex.
pub(crate) fn decode_hex(field: &'static str, hex_str: &str) -> Result<Vec<u8>, Error> {
    hex::decode(hex_str).map_err(|source| Error::Hex { field, source })
}
