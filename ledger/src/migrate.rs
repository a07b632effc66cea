//! Layout 1 → layout 2: records keyed by what the digest binds, not by AVS and operator set.
//!
//! Layout 1 keyed a record by (key id, AVS, operator set, verifier address, task id). The digest
//! binds neither the AVS nor the operator set, so two records in layout 1 can be one sign-once
//! key in layout 2 (the same task signed for two AVSs or operator sets that share a key). Those
//! collisions are evidence of exactly the double signing DESIGN §5 now forbids; they are never
//! merged silently. With [`Collisions::Refuse`] (the node's start-up) the migration changes
//! nothing and fails with [`LedgerError::MigrationCollisions`], which lists them and names the
//! command that decides; with [`Collisions::KeepEarliest`] (`avsnode ledger migrate
//! --keep-earliest --dropped-to FILE`) the earliest record of each collision stays and the others
//! are written to a file first.
//!
//! An ECDSA record's new key holds the verifier's domain separator, which layout 1 did not store
//! (it kept the verifier address, not its version). The migration finds it: among the candidate
//! version strings (those configured, hashed whole as the avsnode that wrote layout 1 did, and the
//! single characters `0`–`9`), the one whose domain reproduces the record's digest. A record that
//! none reproduces stops the migration with [`LedgerError::UnknownVerifierVersion`].
//!
//! Everything happens in one write transaction: the new table filled, the old one deleted,
//! committed durably — or nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle};

use super::codec::{decode_legacy_entry, encode_key, encode_value, task_id_of_key};
use super::legacy::domain_of;
use super::{Collision, LedgerError, RECORDS, Record, RecordKey, storage};

/// Layout 1's table.
const LEGACY_RECORDS: TableDefinition<'static, &'static [u8], &'static [u8]> =
    TableDefinition::new("sign_once_records");

/// What to do with layout-1 records that are one key in layout 2.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Collisions {
    /// Change nothing and fail, listing them (the node's start-up).
    #[default]
    Refuse,
    /// Keep the earliest record of each; write the others to this file (JSON, the export
    /// format) before anything is committed.
    KeepEarliest {
        /// Where the dropped records go.
        dropped_to: PathBuf,
    },
}

/// How to migrate a layout-1 ledger.
#[derive(Debug, Clone, Default)]
pub struct MigrationOptions {
    /// Verifier version strings to try, as the operator configured them (each hashed whole).
    pub verifier_versions: Vec<String>,
    /// What to do with collisions.
    pub collisions: Collisions,
}

/// What a migration did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Records now in layout 2.
    pub migrated: u64,
    /// Records dropped under [`Collisions::KeepEarliest`] (written to its file).
    pub dropped: u64,
}

/// Migrates `db` if it holds a layout-1 table; `None` if there was nothing to migrate.
pub(super) fn run(
    db: &Database,
    options: &MigrationOptions,
) -> Result<Option<MigrationReport>, LedgerError> {
    let mut txn = db
        .begin_write()
        .map_err(storage("starting the migration"))?;
    let legacy_exists = txn
        .list_tables()
        .map_err(storage("listing the tables"))?
        .any(|t| t.name() == LEGACY_RECORDS.name());
    if !legacy_exists {
        txn.abort().map_err(storage("ending the migration check"))?;
        return Ok(None);
    }
    txn.set_two_phase_commit(true);
    let records = {
        let legacy = txn
            .open_table(LEGACY_RECORDS)
            .map_err(storage("opening the layout-1 table"))?;
        let mut records = Vec::new();
        for entry in legacy
            .iter()
            .map_err(storage("reading the layout-1 table"))?
        {
            let (key, value) = entry.map_err(storage("reading the layout-1 table"))?;
            let entry = decode_legacy_entry(key.value(), value.value()).map_err(|source| {
                LedgerError::Corrupt {
                    task_id: task_id_of_key(key.value()),
                    source,
                }
            })?;
            let mut record = entry.record;
            record.key.domain = match entry.verifier {
                None => None,
                Some(verifier) => Some(domain_of(&record, verifier, &options.verifier_versions)?),
            };
            records.push(record);
        }
        records
    };

    let (kept, collisions) = resolve(records);
    let dropped: Vec<Record> = collisions.iter().flat_map(|c| c.dropped.clone()).collect();
    if !collisions.is_empty() {
        match &options.collisions {
            Collisions::Refuse => {
                txn.abort()
                    .map_err(storage("ending the refused migration"))?;
                return Err(LedgerError::MigrationCollisions {
                    collisions: collisions.into_iter().map(|c| c.summary).collect(),
                });
            }
            Collisions::KeepEarliest { dropped_to } => {
                super::export::write_file(dropped_to, &dropped)?;
            }
        }
    }

    {
        let mut table = txn
            .open_table(RECORDS)
            .map_err(storage("opening the records table"))?;
        if !table
            .is_empty()
            .map_err(storage("reading the records table"))?
        {
            // A layout-2 table beside a layout-1 one: not something avsnode writes. Fail closed.
            return Err(LedgerError::MigrationConflict);
        }
        for record in &kept {
            let value = encode_value(record).ok_or(LedgerError::InvalidProposal {
                task_id: record.key.task_id,
                problem: "a byte field is longer than the ledger layout allows (4 GiB)",
            })?;
            table
                .insert(encode_key(&record.key).as_slice(), value.as_slice())
                .map_err(storage("writing a migrated record"))?;
        }
    }
    txn.delete_table(LEGACY_RECORDS)
        .map_err(storage("removing the layout-1 table"))?;
    txn.commit().map_err(storage("committing the migration"))?;
    let report = MigrationReport {
        migrated: kept.len() as u64,
        dropped: dropped.len() as u64,
    };
    tracing::info!(
        migrated = report.migrated,
        dropped = report.dropped,
        "ledger migrated to layout 2 (records keyed by signing key, verifier domain and task)"
    );
    Ok(Some(report))
}

/// One key that several records share: the earliest is kept, the others dropped.
pub(super) struct ResolvedCollision {
    pub(super) summary: Collision,
    pub(super) dropped: Vec<Record>,
}

/// Groups re-keyed records: one per key is kept (the earliest), the rest of each group are
/// collisions.
pub(super) fn resolve(records: Vec<Record>) -> (Vec<Record>, Vec<ResolvedCollision>) {
    let mut groups: BTreeMap<RecordKey, Vec<Record>> = BTreeMap::new();
    for record in records {
        groups.entry(record.key).or_default().push(record);
    }
    let mut kept = Vec::with_capacity(groups.len());
    let mut collisions = Vec::new();
    for (key, mut group) in groups {
        group.sort_by_key(|r| (r.created_at_unix_ms, r.origin));
        let mut group = group.into_iter();
        let Some(first) = group.next() else { continue };
        let rest: Vec<Record> = group.collect();
        if !rest.is_empty() {
            collisions.push(ResolvedCollision {
                summary: Collision {
                    key,
                    origins: std::iter::once(&first)
                        .chain(&rest)
                        .map(|r| (r.origin, r.reference_timestamp, r.created_at_unix_ms))
                        .collect(),
                },
                dropped: rest,
            });
        }
        kept.push(first);
    }
    (kept, collisions)
}
