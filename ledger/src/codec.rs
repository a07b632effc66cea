//! The on-disk layout of one ledger entry: a fixed-length key and a versioned binary value.
//!
//! Key (97 bytes; all integers big-endian, so keys sort by signing key, then domain, then task):
//!
//! | offset | bytes | field |
//! | --- | --- | --- |
//! | 0 | 32 | key id (keccak256 of the signing public key) |
//! | 32 | 1 | domain flag: 0 = none (BN254, BLS12-381), 1 = present (ECDSA) |
//! | 33 | 32 | the ECDSA verifier's domain separator, or 32 zero bytes when the flag is 0 |
//! | 65 | 32 | task id |
//!
//! Value, version 2:
//!
//! | offset | bytes | field |
//! | --- | --- | --- |
//! | 0 | 1 | layout version = 2 |
//! | 1 | 1 | flags: bit 0 = signatures present; other bits must be 0 |
//! | 2 | 20 | origin: AVS address |
//! | 22 | 4 | origin: operator set id (u32) |
//! | 26 | 4 | reference timestamp (u32) |
//! | 30 | 32 | messageHash |
//! | 62 | 32 | the digest (the one digest this record allows signing) |
//! | 94 | 8 | created at, Unix milliseconds (u64) |
//! | 102 | 4 + n | output: length (u32) then bytes |
//! | … | 4 + r, 4 + a | if flag bit 0: result signature, then auth signature, each length (u32) then bytes |
//!
//! Nothing may follow the last field. A new layout takes a new version byte; readers refuse
//! versions they do not know ([`DecodeError::UnknownVersion`]) rather than guess.
//!
//! Layout 1 (avsnode before the sign-once key was narrowed to what the digest binds) keyed
//! records by (key id, AVS, operator set, verifier address, task id) in 109 bytes, with value
//! version 1 (layout 2 without the origin fields). [`decode_legacy_entry`] reads it for the
//! migration (`migrate.rs`) and nothing else.

use avsnode_signer::messages::{Address, TaskId};

use super::{DecodeError, Origin, Record, RecordKey, Signatures};

/// Length of an encoded [`RecordKey`].
pub(super) const KEY_LEN: usize = 32 + 1 + 32 + 32;

/// The value layout this build writes.
pub(super) const VALUE_VERSION: u8 = 2;

/// Layout 1's value version and key length (read by the migration only).
const LEGACY_VALUE_VERSION: u8 = 1;
const LEGACY_KEY_LEN: usize = 32 + 20 + 4 + 1 + 20 + 32;

const FLAG_SIGNED: u8 = 0b0000_0001;

/// Encodes a key; the encoding is total and injective.
pub(super) fn encode_key(key: &RecordKey) -> [u8; KEY_LEN] {
    let mut out = [0u8; KEY_LEN];
    out[0..32].copy_from_slice(&key.key_id);
    if let Some(domain) = key.domain {
        out[32] = 1;
        out[33..65].copy_from_slice(&domain);
    }
    out[65..97].copy_from_slice(&key.task_id.0);
    out
}

/// Decodes a key written by [`encode_key`].
pub(super) fn decode_key(bytes: &[u8]) -> Result<RecordKey, DecodeError> {
    let bytes: &[u8; KEY_LEN] = bytes.try_into().map_err(|_| DecodeError::KeyLength {
        expected: KEY_LEN,
        got: bytes.len(),
    })?;
    let domain = match bytes[32] {
        0 if bytes[33..65].iter().all(|b| *b == 0) => None,
        0 => return Err(DecodeError::DomainPadding),
        1 => Some(array(&bytes[33..65])),
        flag => return Err(DecodeError::DomainFlag(flag)),
    };
    Ok(RecordKey {
        key_id: array(&bytes[0..32]),
        domain,
        task_id: TaskId(array(&bytes[65..97])),
    })
}

/// The task id of an encoded key, if the key is long enough to hold one (for error messages).
pub(super) fn task_id_of_key(bytes: &[u8]) -> Option<TaskId> {
    match bytes.len() {
        KEY_LEN => Some(TaskId(array(&bytes[65..97]))),
        LEGACY_KEY_LEN => Some(TaskId(array(&bytes[77..109]))),
        _ => None,
    }
}

/// Encodes a record's value (its key is stored separately). Returns `None` if a byte field is
/// longer than the layout's u32 length prefix allows; callers check lengths before this.
pub(super) fn encode_value(record: &Record) -> Option<Vec<u8>> {
    let signed_len = record
        .signatures
        .as_ref()
        .map_or(0, |s| 8 + s.result.len() + s.auth.len());
    let mut out = Vec::with_capacity(106 + record.output.len() + signed_len);
    out.push(VALUE_VERSION);
    out.push(if record.signatures.is_some() {
        FLAG_SIGNED
    } else {
        0
    });
    out.extend_from_slice(&record.origin.avs.0);
    out.extend_from_slice(&record.origin.operator_set_id.to_be_bytes());
    out.extend_from_slice(&record.reference_timestamp.to_be_bytes());
    out.extend_from_slice(&record.message_hash);
    out.extend_from_slice(&record.digest);
    out.extend_from_slice(&record.created_at_unix_ms.to_be_bytes());
    put_bytes(&mut out, &record.output)?;
    if let Some(signatures) = &record.signatures {
        put_bytes(&mut out, &signatures.result)?;
        put_bytes(&mut out, &signatures.auth)?;
    }
    Some(out)
}

/// Whether a byte field fits the layout's u32 length prefix.
pub(super) fn fits(bytes: &[u8]) -> bool {
    u32::try_from(bytes.len()).is_ok()
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) -> Option<()> {
    let len = u32::try_from(bytes.len()).ok()?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Some(())
}

/// Decodes a value written by [`encode_value`].
pub(super) fn decode_value(key: RecordKey, bytes: &[u8]) -> Result<Record, DecodeError> {
    let mut r = Reader { bytes, offset: 0 };
    match r.u8()? {
        VALUE_VERSION => {}
        other => return Err(DecodeError::UnknownVersion(other)),
    }
    let flags = r.flags()?;
    let origin = Origin {
        avs: Address(r.array()?),
        operator_set_id: u32::from_be_bytes(r.array()?),
    };
    r.record(key, origin, flags)
}

/// Decodes one stored (key, value) pair.
pub(super) fn decode_entry(key: &[u8], value: &[u8]) -> Result<Record, DecodeError> {
    decode_value(decode_key(key)?, value)
}

/// One entry of layout 1, as the migration reads it: the record with its origin, and the
/// verifier address its key held (ECDSA records). The record's `key.domain` is `None`: for ECDSA
/// records the migration finds the domain separator the digest was made under.
pub(super) struct LegacyEntry {
    pub(super) record: Record,
    pub(super) verifier: Option<Address>,
}

/// Decodes one layout-1 (key, value) pair.
pub(super) fn decode_legacy_entry(key: &[u8], value: &[u8]) -> Result<LegacyEntry, DecodeError> {
    let key: &[u8; LEGACY_KEY_LEN] = key.try_into().map_err(|_| DecodeError::KeyLength {
        expected: LEGACY_KEY_LEN,
        got: key.len(),
    })?;
    let verifier = match key[56] {
        0 if key[57..77].iter().all(|b| *b == 0) => None,
        0 => return Err(DecodeError::DomainPadding),
        1 => Some(Address(array(&key[57..77]))),
        flag => return Err(DecodeError::DomainFlag(flag)),
    };
    let origin = Origin {
        avs: Address(array(&key[32..52])),
        operator_set_id: u32::from_be_bytes(array(&key[52..56])),
    };
    let record_key = RecordKey {
        key_id: array(&key[0..32]),
        domain: None,
        task_id: TaskId(array(&key[77..109])),
    };
    let mut r = Reader {
        bytes: value,
        offset: 0,
    };
    match r.u8()? {
        LEGACY_VALUE_VERSION => {}
        other => return Err(DecodeError::UnknownVersion(other)),
    }
    let flags = r.flags()?;
    Ok(LegacyEntry {
        record: r.record(record_key, origin, flags)?,
        verifier,
    })
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(bytes);
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl Reader<'_> {
    fn take(&mut self, needed: usize) -> Result<&[u8], DecodeError> {
        let truncated = DecodeError::Truncated {
            offset: self.offset,
            needed,
        };
        let end = self.offset.checked_add(needed).ok_or(truncated.clone())?;
        let slice = self.bytes.get(self.offset..end).ok_or(truncated)?;
        self.offset = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        self.take(N).map(array)
    }

    fn flags(&mut self) -> Result<u8, DecodeError> {
        let flags = self.u8()?;
        if flags & !FLAG_SIGNED != 0 {
            return Err(DecodeError::Flags(flags));
        }
        Ok(flags)
    }

    /// The fields both layouts share, from the reference timestamp to the end.
    fn record(mut self, key: RecordKey, origin: Origin, flags: u8) -> Result<Record, DecodeError> {
        let reference_timestamp = u32::from_be_bytes(self.array()?);
        let message_hash = self.array()?;
        let digest = self.array()?;
        let created_at_unix_ms = u64::from_be_bytes(self.array()?);
        let output = self.bytes()?;
        let signatures = if flags & FLAG_SIGNED != 0 {
            Some(Signatures {
                result: self.bytes()?,
                auth: self.bytes()?,
            })
        } else {
            None
        };
        let rest = self.bytes.len() - self.offset;
        if rest != 0 {
            return Err(DecodeError::TrailingBytes(rest));
        }
        Ok(Record {
            key,
            origin,
            reference_timestamp,
            message_hash,
            digest,
            output,
            signatures,
            created_at_unix_ms,
        })
    }

    fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let len = u32::from_be_bytes(self.array()?);
        // u32 always fits usize on the 32- and 64-bit targets avsnode supports.
        let len = usize::try_from(len).map_err(|_| DecodeError::Truncated {
            offset: self.offset,
            needed: usize::MAX,
        })?;
        self.take(len).map(<[u8]>::to_vec)
    }
}
