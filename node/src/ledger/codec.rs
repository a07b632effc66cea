//! The on-disk layout of one ledger entry: a fixed-length key and a versioned binary value.
//!
//! Key (109 bytes; all integers big-endian, so keys sort by signing key, then domain, then task):
//!
//! | offset | bytes | field |
//! | --- | --- | --- |
//! | 0 | 32 | key id (keccak256 of the signing public key) |
//! | 32 | 20 | AVS address |
//! | 52 | 4 | operator set id (u32) |
//! | 56 | 1 | verifier flag: 0 = none, 1 = present |
//! | 57 | 20 | verifier address, or 20 zero bytes when the flag is 0 |
//! | 77 | 32 | task id |
//!
//! Value, version 1:
//!
//! | offset | bytes | field |
//! | --- | --- | --- |
//! | 0 | 1 | layout version = 1 |
//! | 1 | 1 | flags: bit 0 = signatures present; other bits must be 0 |
//! | 2 | 4 | reference timestamp (u32) |
//! | 6 | 32 | messageHash |
//! | 38 | 32 | the digest (the one digest this record allows signing) |
//! | 70 | 8 | created at, Unix milliseconds (u64) |
//! | 78 | 4 + n | output: length (u32) then bytes |
//! | … | 4 + r, 4 + a | if flag bit 0: result signature, then auth signature, each length (u32) then bytes |
//!
//! Nothing may follow the last field. A new layout takes a new version byte; readers refuse
//! versions they do not know ([`DecodeError::UnknownVersion`]) rather than guess.

use avsnode_signer::messages::{Address, TaskId};

use super::{DecodeError, Domain, Record, RecordKey, Signatures};

/// Length of an encoded [`RecordKey`].
pub(super) const KEY_LEN: usize = 32 + 20 + 4 + 1 + 20 + 32;

/// The value layout this build writes.
pub(super) const VALUE_VERSION: u8 = 1;

const FLAG_SIGNED: u8 = 0b0000_0001;

/// Encodes a key; the encoding is total and injective.
pub(super) fn encode_key(key: &RecordKey) -> [u8; KEY_LEN] {
    let mut out = [0u8; KEY_LEN];
    out[0..32].copy_from_slice(&key.key_id);
    out[32..52].copy_from_slice(&key.domain.avs.0);
    out[52..56].copy_from_slice(&key.domain.operator_set_id.to_be_bytes());
    if let Some(verifier) = key.domain.verifier {
        out[56] = 1;
        out[57..77].copy_from_slice(&verifier.0);
    }
    out[77..109].copy_from_slice(&key.task_id.0);
    out
}

/// Decodes a key written by [`encode_key`].
pub(super) fn decode_key(bytes: &[u8]) -> Result<RecordKey, DecodeError> {
    let bytes: &[u8; KEY_LEN] = bytes.try_into().map_err(|_| DecodeError::KeyLength {
        expected: KEY_LEN,
        got: bytes.len(),
    })?;
    let verifier = match bytes[56] {
        0 if bytes[57..77].iter().all(|b| *b == 0) => None,
        0 => return Err(DecodeError::VerifierPadding),
        1 => Some(Address(array(&bytes[57..77]))),
        flag => return Err(DecodeError::VerifierFlag(flag)),
    };
    Ok(RecordKey {
        key_id: array(&bytes[0..32]),
        domain: Domain {
            avs: Address(array(&bytes[32..52])),
            operator_set_id: u32::from_be_bytes(array(&bytes[52..56])),
            verifier,
        },
        task_id: TaskId(array(&bytes[77..109])),
    })
}

/// The task id of an encoded key, if the key is long enough to hold one (for error messages).
pub(super) fn task_id_of_key(bytes: &[u8]) -> Option<TaskId> {
    (bytes.len() == KEY_LEN).then(|| TaskId(array(&bytes[77..109])))
}

/// Encodes a record's value (its key is stored separately). Returns `None` if a byte field is
/// longer than the layout's u32 length prefix allows; callers check lengths before this.
pub(super) fn encode_value(record: &Record) -> Option<Vec<u8>> {
    let signed_len = record
        .signatures
        .as_ref()
        .map_or(0, |s| 8 + s.result.len() + s.auth.len());
    let mut out = Vec::with_capacity(82 + record.output.len() + signed_len);
    out.push(VALUE_VERSION);
    out.push(if record.signatures.is_some() {
        FLAG_SIGNED
    } else {
        0
    });
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

/// Decodes a value written by [`encode_value`] (any version this build knows).
pub(super) fn decode_value(key: RecordKey, bytes: &[u8]) -> Result<Record, DecodeError> {
    let mut r = Reader { bytes, offset: 0 };
    match r.u8()? {
        VALUE_VERSION => {}
        other => return Err(DecodeError::UnknownVersion(other)),
    }
    let flags = r.u8()?;
    if flags & !FLAG_SIGNED != 0 {
        return Err(DecodeError::Flags(flags));
    }
    let reference_timestamp = u32::from_be_bytes(r.array()?);
    let message_hash = r.array()?;
    let digest = r.array()?;
    let created_at_unix_ms = u64::from_be_bytes(r.array()?);
    let output = r.bytes()?;
    let signatures = if flags & FLAG_SIGNED != 0 {
        Some(Signatures {
            result: r.bytes()?,
            auth: r.bytes()?,
        })
    } else {
        None
    };
    let rest = bytes.len() - r.offset;
    if rest != 0 {
        return Err(DecodeError::TrailingBytes(rest));
    }
    Ok(Record {
        key,
        reference_timestamp,
        message_hash,
        digest,
        output,
        signatures,
        created_at_unix_ms,
    })
}

/// Decodes one stored (key, value) pair.
pub(super) fn decode_entry(key: &[u8], value: &[u8]) -> Result<Record, DecodeError> {
    decode_value(decode_key(key)?, value)
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
