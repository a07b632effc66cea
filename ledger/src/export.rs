//! `avsnode ledger export | import`: the ledger as JSON, in the spirit of EIP-3076 (slashing
//! protection interchange): every integer is a decimal string, every byte string `0x`-hex.
//!
//! ```json
//! {"format":"avsnode-ledger","version":"2","records":[
//! {"key_id":"0x…","domain":null,"task_id":"0x…","avs":"0x…","operator_set_id":"7",
//!  "reference_timestamp":"…","message_hash":"0x…","digest":"0x…","output":"0x…",
//!  "result_signature":"0x…","auth_signature":"0x…","created_at_unix_ms":"…"}
//! ]}
//! ```
//!
//! `domain` is the ECDSA verifier's domain separator (`null` for BN254 and BLS12-381): with
//! `key_id` and `task_id` it is the sign-once key. `avs` and `operator_set_id` are the record's
//! origin. Version 1 files (written before the key was narrowed, with `verifier` instead of
//! `domain`) are read too: their ECDSA records get their domain the way the migration finds it
//! (`migrate.rs`).
//!
//! Import merges in one transaction, in file order: a record not held is inserted; one held (or
//! earlier in the file) with the same origin and digest is skipped (or gains the imported
//! signatures if it had none); one held with another origin or digest refuses the whole import,
//! and nothing is written.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use avsnode_signer::messages::{Address, TaskId, message_hash};
use redb::{Database, ReadableTable};
use serde::{Deserialize, Serialize};

use super::codec::{self, decode_entry, decode_value, encode_key, encode_value, task_id_of_key};
use super::error::{FieldProblem, ImportError};
use super::{LedgerError, Origin, RECORDS, Record, RecordKey, Signatures, legacy, storage};

const FORMAT: &str = "avsnode-ledger";
const VERSION: &str = "2";
/// Written before the sign-once key was narrowed to what the digest binds.
const LEGACY_VERSION: &str = "1";

/// What [`EmbeddedLedger::import_json`](super::EmbeddedLedger::import_json) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Records the ledger did not hold, now inserted.
    pub inserted: u64,
    /// Records already held with the same digest (left as they were).
    pub skipped: u64,
    /// Records held with the same digest but unsigned, which took the imported signatures.
    pub signatures_added: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportFile {
    format: String,
    version: String,
    records: Vec<serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRecord {
    key_id: String,
    domain: Option<String>,
    task_id: String,
    avs: String,
    operator_set_id: String,
    reference_timestamp: String,
    message_hash: String,
    digest: String,
    output: String,
    result_signature: Option<String>,
    auth_signature: Option<String>,
    created_at_unix_ms: String,
}

/// A version-1 record: the verifier address where version 2 has the domain.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyJsonRecord {
    key_id: String,
    avs: String,
    operator_set_id: String,
    verifier: Option<String>,
    task_id: String,
    reference_timestamp: String,
    message_hash: String,
    digest: String,
    output: String,
    result_signature: Option<String>,
    auth_signature: Option<String>,
    created_at_unix_ms: String,
}

fn hex0x(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

impl From<&Record> for JsonRecord {
    fn from(r: &Record) -> Self {
        JsonRecord {
            key_id: hex0x(&r.key.key_id),
            domain: r.key.domain.map(|d| hex0x(&d)),
            task_id: r.key.task_id.to_string(),
            avs: r.origin.avs.to_string(),
            operator_set_id: r.origin.operator_set_id.to_string(),
            reference_timestamp: r.reference_timestamp.to_string(),
            message_hash: hex0x(&r.message_hash),
            digest: hex0x(&r.digest),
            output: hex0x(&r.output),
            result_signature: r.signatures.as_ref().map(|s| hex0x(&s.result)),
            auth_signature: r.signatures.as_ref().map(|s| hex0x(&s.auth)),
            created_at_unix_ms: r.created_at_unix_ms.to_string(),
        }
    }
}

/// Writes `records` in the export format.
pub(super) fn write_records(
    out: &mut dyn Write,
    records: impl IntoIterator<Item = Result<Record, LedgerError>>,
) -> Result<u64, LedgerError> {
    let mut out = BufWriter::new(out);
    let io = |source| LedgerError::Export { source };
    write!(
        out,
        "{{\"format\":\"{FORMAT}\",\"version\":\"{VERSION}\",\"records\":["
    )
    .map_err(io)?;
    let mut count = 0u64;
    for record in records {
        let record = record?;
        out.write_all(if count == 0 { b"\n" } else { b",\n" })
            .map_err(io)?;
        serde_json::to_writer(&mut out, &JsonRecord::from(&record)).map_err(|e| io(e.into()))?;
        count += 1;
    }
    out.write_all(b"\n]}\n").map_err(io)?;
    out.flush().map_err(io)?;
    Ok(count)
}

/// Writes every record, in key order, from one read snapshot.
pub(super) fn export(db: &Database, out: &mut dyn Write) -> Result<u64, LedgerError> {
    let table = super::read_records(db)?;
    let records = table
        .iter()
        .map_err(storage("reading the records"))?
        .map(|entry| {
            let (key, value) = entry.map_err(storage("reading the records"))?;
            decode_entry(key.value(), value.value()).map_err(|source| LedgerError::Corrupt {
                task_id: task_id_of_key(key.value()),
                source,
            })
        });
    write_records(out, records)
}

/// Writes `records` to a new file at `path` (never over an existing one) and syncs it to disk.
pub(super) fn write_file(path: &Path, records: &[Record]) -> Result<(), LedgerError> {
    let io = |source| LedgerError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io)?;
    write_records(&mut file, records.iter().cloned().map(Ok))?;
    file.sync_all().map_err(io)
}

/// Parses the whole input, then merges it in one write transaction (see the module doc).
pub(super) fn import(
    db: &Database,
    input: &mut dyn Read,
    verifier_versions: &[String],
) -> Result<ImportSummary, LedgerError> {
    let records = read(input, verifier_versions)?;
    let mut txn = db
        .begin_write()
        .map_err(storage("starting a write transaction"))?;
    txn.set_two_phase_commit(true);
    let merged = merge(&txn, records);
    match merged {
        Ok(summary) => {
            txn.commit().map_err(storage("committing the import"))?;
            Ok(summary)
        }
        Err(e) => {
            // Nothing of a refused import is written.
            if let Err(abort) = txn.abort() {
                tracing::warn!(error = %abort, "aborting a refused ledger import failed");
            }
            Err(e)
        }
    }
}

/// Every record of an export (version 2, or version 1 with `verifier_versions` to find its
/// ECDSA records' domains), checked field by field; nothing is merged yet.
pub(super) fn read(
    input: &mut dyn Read,
    verifier_versions: &[String],
) -> Result<Vec<Record>, LedgerError> {
    let file: ImportFile = serde_json::from_reader(BufReader::new(input)).map_err(|e| {
        if e.is_io() {
            ImportError::Read(e.into())
        } else {
            ImportError::Json(e)
        }
    })?;
    if file.format != FORMAT {
        return Err(ImportError::Format { found: file.format }.into());
    }
    let legacy = match file.version.as_str() {
        VERSION => false,
        LEGACY_VERSION => true,
        _ => {
            return Err(ImportError::Version {
                found: file.version,
            }
            .into());
        }
    };
    let mut records = Vec::with_capacity(file.records.len());
    for (index, value) in file.records.into_iter().enumerate() {
        let json = |e| ImportError::Record { index, source: e };
        records.push(if legacy {
            let r: LegacyJsonRecord = serde_json::from_value(value).map_err(json)?;
            parse_legacy(index, r, verifier_versions)?
        } else {
            parse(index, serde_json::from_value(value).map_err(json)?)?
        });
    }
    Ok(records)
}

/// What an import does with one record, given the record held for its key: the one decision
/// both backends merge by.
pub(super) enum Merge {
    /// Not held: insert it.
    Insert(Record),
    /// Held unsigned with the same origin and digest: the held record takes the imported
    /// signatures.
    AddSignatures(Record),
    /// Held with the same origin and digest: nothing to do.
    Skip,
    /// Held with another origin or digest: the import is refused.
    Conflict,
}

impl Merge {
    pub(super) fn of(held: Option<Record>, record: Record) -> Merge {
        match held {
            None => Merge::Insert(record),
            Some(held)
                if held
                    .permits(record.origin, record.reference_timestamp, &record.digest)
                    .is_err() =>
            {
                Merge::Conflict
            }
            Some(mut held) if held.signatures.is_none() && record.signatures.is_some() => {
                held.signatures = record.signatures;
                Merge::AddSignatures(held)
            }
            Some(_) => Merge::Skip,
        }
    }

    /// Counts this decision in `summary`; the conflicts' task ids go to `conflicts`.
    pub(super) fn count(
        &self,
        task_id: TaskId,
        summary: &mut ImportSummary,
        conflicts: &mut Vec<TaskId>,
    ) {
        match self {
            Merge::Insert(_) => summary.inserted += 1,
            Merge::AddSignatures(_) => summary.signatures_added += 1,
            Merge::Skip => summary.skipped += 1,
            Merge::Conflict => conflicts.push(task_id),
        }
    }
}

/// The summary of an import, or its refusal when any record conflicts.
pub(super) fn conclude(
    summary: ImportSummary,
    conflicts: Vec<TaskId>,
) -> Result<ImportSummary, LedgerError> {
    if conflicts.is_empty() {
        return Ok(summary);
    }
    tracing::error!(
        conflicts = conflicts.len(),
        "ledger import refused: records conflict with different digests already held"
    );
    Err(ImportError::Conflicts {
        task_ids: conflicts,
    }
    .into())
}

fn merge(txn: &redb::WriteTransaction, records: Vec<Record>) -> Result<ImportSummary, LedgerError> {
    let mut table = txn
        .open_table(RECORDS)
        .map_err(storage("opening the records table"))?;
    let mut summary = ImportSummary::default();
    let mut conflicts = Vec::new();
    for record in records {
        let key = encode_key(&record.key);
        let task_id = record.key.task_id;
        let held = table
            .get(key.as_slice())
            .map_err(storage("reading a record"))?
            .map(|value| decode_value(record.key, value.value()))
            .transpose()
            .map_err(|source| LedgerError::Corrupt {
                task_id: Some(task_id),
                source,
            })?;
        let merge = Merge::of(held, record);
        merge.count(task_id, &mut summary, &mut conflicts);
        let (Merge::Insert(to_write) | Merge::AddSignatures(to_write)) = merge else {
            continue;
        };
        // Lengths were checked by `parse`, so the encoding cannot fail.
        let value = encode_value(&to_write).ok_or(LedgerError::InvalidProposal {
            task_id,
            problem: "a byte field is longer than the ledger layout allows (4 GiB)",
        })?;
        table
            .insert(key.as_slice(), value.as_slice())
            .map_err(storage("writing a record"))?;
    }
    conclude(summary, conflicts)
}

fn parse(index: usize, r: JsonRecord) -> Result<Record, ImportError> {
    let field = |field: &'static str| {
        move |problem| ImportError::Field {
            index,
            field,
            problem,
        }
    };
    let key = RecordKey {
        key_id: fixed_hex(&r.key_id).map_err(field("key_id"))?,
        domain: r
            .domain
            .as_deref()
            .map(fixed_hex)
            .transpose()
            .map_err(field("domain"))?,
        task_id: TaskId(fixed_hex(&r.task_id).map_err(field("task_id"))?),
    };
    let output = var_hex(&r.output).map_err(field("output"))?;
    let message_hash_bytes: [u8; 32] = fixed_hex(&r.message_hash).map_err(field("message_hash"))?;
    if message_hash(&key.task_id, &output).0 != message_hash_bytes {
        return Err(field("message_hash")(FieldProblem::MessageHashMismatch));
    }
    let signatures = match (r.result_signature, r.auth_signature) {
        (None, None) => None,
        (Some(result), Some(auth)) => Some(Signatures {
            result: var_hex(&result).map_err(field("result_signature"))?,
            auth: var_hex(&auth).map_err(field("auth_signature"))?,
        }),
        (Some(_), None) => return Err(field("auth_signature")(FieldProblem::HalfSigned)),
        (None, Some(_)) => return Err(field("result_signature")(FieldProblem::HalfSigned)),
    };
    Ok(Record {
        key,
        origin: Origin {
            avs: Address(fixed_hex(&r.avs).map_err(field("avs"))?),
            operator_set_id: decimal(&r.operator_set_id).map_err(field("operator_set_id"))?,
        },
        reference_timestamp: decimal(&r.reference_timestamp)
            .map_err(field("reference_timestamp"))?,
        message_hash: message_hash_bytes,
        digest: fixed_hex(&r.digest).map_err(field("digest"))?,
        output,
        signatures,
        created_at_unix_ms: decimal(&r.created_at_unix_ms).map_err(field("created_at_unix_ms"))?,
    })
}

/// A version-1 record: parsed as version 2 without a domain, then its ECDSA domain is found as
/// the migration finds it.
fn parse_legacy(
    index: usize,
    r: LegacyJsonRecord,
    verifier_versions: &[String],
) -> Result<Record, LedgerError> {
    let verifier = r
        .verifier
        .as_deref()
        .map(fixed_hex)
        .transpose()
        .map_err(|problem| ImportError::Field {
            index,
            field: "verifier",
            problem,
        })?
        .map(Address);
    let mut record = parse(
        index,
        JsonRecord {
            key_id: r.key_id,
            domain: None,
            task_id: r.task_id,
            avs: r.avs,
            operator_set_id: r.operator_set_id,
            reference_timestamp: r.reference_timestamp,
            message_hash: r.message_hash,
            digest: r.digest,
            output: r.output,
            result_signature: r.result_signature,
            auth_signature: r.auth_signature,
            created_at_unix_ms: r.created_at_unix_ms,
        },
    )?;
    if let Some(verifier) = verifier {
        record.key.domain = Some(legacy::domain_of(&record, verifier, verifier_versions)?);
    }
    Ok(record)
}

fn var_hex(s: &str) -> Result<Vec<u8>, FieldProblem> {
    let digits = s.strip_prefix("0x").ok_or(FieldProblem::NotHex)?;
    let bytes = hex::decode(digits).map_err(|_| FieldProblem::NotHex)?;
    if codec::fits(&bytes) {
        Ok(bytes)
    } else {
        Err(FieldProblem::TooLong)
    }
}

fn fixed_hex<const N: usize>(s: &str) -> Result<[u8; N], FieldProblem> {
    let bytes = var_hex(s)?;
    let got = bytes.len();
    bytes
        .try_into()
        .map_err(|_| FieldProblem::Length { expected: N, got })
}

/// A decimal integer string: ASCII digits only (no sign, no spaces), within `T`'s range.
fn decimal<T: std::str::FromStr>(s: &str) -> Result<T, FieldProblem> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FieldProblem::NotDecimal);
    }
    s.parse().map_err(|_| FieldProblem::NotDecimal)
}
