//! The ledger's errors: one enum for the API, and the typed causes it carries.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use avsnode_signer::messages::TaskId;

use super::{LOCK_FILE, RecordKey, Refusal};

/// Everything a ledger operation can fail with.
///
/// [`LedgerError::Conflict`] is the one refusal the pipeline expects in normal operation (a second,
/// different output for a task already recorded); every other variant is an operational failure.
/// In every error case no signature may be released: `commit_signed` drops the caller's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// Another process (or another [`EmbeddedLedger`](super::EmbeddedLedger) in this process) holds the data
    /// directory's lock.
    #[error(
        "another avsnode is using the data directory {} (it holds {LOCK_FILE} there); \
         stop that process first, or use another data directory",
        path.display()
    )]
    Locked {
        /// The data directory.
        path: PathBuf,
    },

    /// The database file could not be opened or created.
    #[error("cannot open the ledger database {}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// What redb said.
        #[source]
        source: redb::DatabaseError,
    },

    /// A file-system operation outside the database failed (creating the directory, the lock file,
    /// starting the writer thread).
    #[error("ledger I/O failed on {}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A database transaction failed. When this comes back from `commit_signed`, the whole
    /// group-commit batch failed and nothing in it was committed.
    #[error("ledger storage failed while {op}")]
    Storage {
        /// What the ledger was doing.
        op: &'static str,
        /// What redb said (shared by every request of a failed batch).
        #[source]
        source: Arc<redb::Error>,
    },

    /// The ledger already holds a record for this (key, domain, task) that refuses the request:
    /// another origin, reference timestamp or output ([`Refusal`]). Releasing signatures would
    /// break the sign-once invariant; none are released for this request.
    #[error("refusing to sign task {}: already {refusal}", key.task_id)]
    Conflict {
        /// The record's key (boxed: it is most of the error's size).
        key: Box<RecordKey>,
        /// Why.
        refusal: Refusal,
    },

    /// The proposal or signatures handed to
    /// `EmbeddedLedger::commit_signed` are inconsistent or too long: a
    /// caller bug.
    #[error("refusing to record task {task_id}: {problem}")]
    InvalidProposal {
        /// The task.
        task_id: TaskId,
        /// What is wrong.
        problem: &'static str,
    },

    /// A stored entry cannot be decoded. The ledger fails closed: it neither answers with
    /// signatures nor overwrites the entry.
    #[error("corrupt ledger entry{}", CorruptTask(task_id))]
    Corrupt {
        /// The task, when the entry's key could still be decoded.
        task_id: Option<TaskId>,
        /// What is wrong with the bytes.
        #[source]
        source: DecodeError,
    },

    /// An older ledger holds the same task signed for more than one AVS or operator set with one
    /// key (the double signing DESIGN §5 forbids). Nothing was changed; the node does not start
    /// until the operator decides.
    #[error(
        "the ledger holds {} task(s) signed with one key for more than one AVS or operator set; \
         each of those signatures is valid for all of them, so only one record per task may \
         answer from now on. Nothing was changed. Decide with `avsnode ledger migrate --data-dir \
         DIR --keep-earliest --dropped-to FILE` (keeps the earliest record of each task and \
         writes the others to FILE), see docs/OPERATING.md \"Migrating the ledger\":\n{}",
        collisions.len(),
        CollisionList(collisions)
    )]
    MigrationCollisions {
        /// Every collision.
        collisions: Vec<super::Collision>,
    },

    /// An older ledger's ECDSA record whose verifier version is none of those tried.
    #[error(
        "migrating the ledger: the record of task {task_id} (verifier {verifier}) was signed \
         under a verifier version other than those tried ({}); pass the one that node ran with: \
         `avsnode ledger migrate --data-dir DIR --verifier-version VERSION`",
        tried.join(", ")
    )]
    UnknownVerifierVersion {
        /// The task.
        task_id: TaskId,
        /// The verifier address the record was keyed by.
        verifier: avsnode_signer::messages::Address,
        /// The version strings tried.
        tried: Vec<String>,
    },

    /// The database holds both an older and a current records table.
    #[error(
        "the ledger holds records in both the old and the current layout; avsnode never writes \
         that. Export what you need with an avsnode of the old version and import it into a \
         fresh data directory"
    )]
    MigrationConflict,

    /// `import_json` refused its input; nothing was written.
    #[error(transparent)]
    Import(#[from] ImportError),

    /// Writing `export_json`'s output failed (the export is incomplete).
    #[error("writing the ledger export failed")]
    Export {
        /// The writer's error.
        #[source]
        source: std::io::Error,
    },

    /// The database (PostgreSQL backend) answered with an error.
    #[error("ledger database failed while {op}: {reason}")]
    Database {
        /// What the ledger was doing.
        op: &'static str,
        /// What the database or its client said (never holds the password).
        reason: String,
    },

    /// The database cannot be reached now (no connection within the connect timeout): nothing
    /// was recorded; the request may be retried.
    #[error("the ledger database is unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },

    /// `ledger.url` is not a PostgreSQL URL avsnode can use.
    #[error("ledger.url: {reason}")]
    InvalidDatabaseUrl {
        /// Why.
        reason: String,
    },

    /// The database's schema was written by a newer avsnode.
    #[error(
        "the ledger database has schema version {found}, newer than this avsnode knows \
         ({known}); run the avsnode version that wrote it, or a newer one"
    )]
    SchemaTooNew {
        /// The database's version.
        found: i32,
        /// The newest this avsnode knows.
        known: i32,
    },

    /// Another replica took over this task's claim (this replica's lease ran out): nothing of
    /// this attempt may be released.
    #[error("task {task_id}: another replica took over the claim; nothing released")]
    ClaimLost {
        /// The task.
        task_id: TaskId,
    },

    /// Another replica held the task for as long as this request could wait: nothing was
    /// signed here; a retry gets that replica's record.
    #[error("task {task_id}: another replica is running it; retry for its answer")]
    Busy {
        /// The task.
        task_id: TaskId,
    },

    /// The task is older than what was pruned for its key: it can never be signed again.
    #[error("task {task_id} is older than the ledger's prune watermark; refusing to sign it")]
    Pruned {
        /// The task.
        task_id: TaskId,
    },

    /// The writer thread is gone (it panicked, or the ledger is shutting down).
    #[error("the ledger writer has stopped; nothing was recorded")]
    Closed,
}

struct CollisionList<'a>(&'a [super::Collision]);

impl fmt::Display for CollisionList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 20;
        for collision in self.0.iter().take(SHOWN) {
            writeln!(f, "  {collision}")?;
        }
        if self.0.len() > SHOWN {
            writeln!(f, "  and {} more", self.0.len() - SHOWN)?;
        }
        Ok(())
    }
}

struct CorruptTask<'a>(&'a Option<TaskId>);

impl fmt::Display for CorruptTask<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(task_id) => write!(f, " for task {task_id}"),
            None => Ok(()),
        }
    }
}

/// Why stored bytes could not be decoded (the key and value layouts are documented in
/// `ledger/src/codec.rs`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The key does not have the fixed key length.
    #[error("key is {got} bytes, expected {expected}")]
    KeyLength {
        /// Expected length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// The key's domain (or, in layout 1, verifier) flag is neither 0 nor 1.
    #[error("domain flag is {0}, expected 0 or 1")]
    DomainFlag(u8),
    /// The key says "no domain" but the domain bytes are not zero.
    #[error("domain bytes are set although the flag says there is none")]
    DomainPadding,
    /// The value's leading version byte is not one this build understands.
    #[error("record format version {0} is unknown to this avsnode")]
    UnknownVersion(u8),
    /// The value's flags byte has bits this version does not define.
    #[error("record flags {0:#04x} has undefined bits")]
    Flags(u8),
    /// The value ends early.
    #[error("record is truncated: {needed} bytes needed at offset {offset}")]
    Truncated {
        /// Where the read started.
        offset: usize,
        /// How many bytes it needed.
        needed: usize,
    },
    /// The value has bytes after its last field.
    #[error("record has {0} trailing bytes")]
    TrailingBytes(usize),
}

/// Why `import_json` refused its input. Nothing is written in any of these cases.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The input could not be read.
    #[error("ledger import failed: cannot read the input")]
    Read(#[source] std::io::Error),
    /// The input is not JSON of the expected shape (serde_json says where: line and column).
    #[error("ledger import refused: the input is not a valid avsnode ledger export")]
    Json(#[source] serde_json::Error),
    /// `format` is not `avsnode-ledger`.
    #[error("ledger import refused: format is {found:?}, expected \"avsnode-ledger\"")]
    Format {
        /// What the file says.
        found: String,
    },
    /// `version` is not one this build reads.
    #[error("ledger import refused: version is {found:?}, expected \"2\" (or \"1\")")]
    Version {
        /// What the file says.
        found: String,
    },
    /// One record is not JSON of the expected shape.
    #[error("ledger import refused: records[{index}]")]
    Record {
        /// The record's position in `records`.
        index: usize,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
    /// One field of one record is malformed.
    #[error("ledger import refused: records[{index}].{field}: {problem}")]
    Field {
        /// The record's position in `records`.
        index: usize,
        /// The field's JSON name.
        field: &'static str,
        /// What is wrong.
        problem: FieldProblem,
    },
    /// Records whose task the ledger (or an earlier record of the same file) already holds for
    /// another origin or with a different digest.
    #[error(
        "ledger import refused: {} record(s) conflict with records already held for the same \
         key, domain and task (another AVS or operator set, or a different digest): {}",
        task_ids.len(),
        TaskList(task_ids)
    )]
    Conflicts {
        /// Every conflicting task id, in file order.
        task_ids: Vec<TaskId>,
    },
}

struct TaskList<'a>(&'a [TaskId]);

impl fmt::Display for TaskList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 20;
        for (i, task_id) in self.0.iter().take(SHOWN).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{task_id}")?;
        }
        if self.0.len() > SHOWN {
            write!(f, " and {} more", self.0.len() - SHOWN)?;
        }
        Ok(())
    }
}

/// What is wrong with one field of an imported record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldProblem {
    /// Not `0x` followed by hex digits.
    #[error("expected 0x-prefixed hex")]
    NotHex,
    /// Hex of the wrong length.
    #[error("expected {expected} bytes, got {got}")]
    Length {
        /// Expected byte length.
        expected: usize,
        /// Actual byte length.
        got: usize,
    },
    /// Not a decimal integer string in range.
    #[error("expected a decimal integer in a string, within range")]
    NotDecimal,
    /// One of the two signatures is present without the other.
    #[error("result_signature and auth_signature must both be present or both be null")]
    HalfSigned,
    /// `message_hash` is not keccak256(abi.encode(task_id, output)).
    #[error("does not match task_id and output")]
    MessageHashMismatch,
    /// Longer than the record layout allows (4 GiB).
    #[error("too long")]
    TooLong,
}
