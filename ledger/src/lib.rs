//! The sign-once ledger (DESIGN §5): the record that makes a second, different signature for a
//! task impossible, even across crashes and retries.
//!
//! # Invariant
//!
//! For one (signing key, domain, task id) the node releases signatures over at most one digest,
//! for one origin (AVS and operator set), and the record holding those signatures is durably
//! committed (fsynced) before any of them leaves the process. The domain is exactly what the
//! signed digest binds besides the task ([`ResultCertificate::bound_domain`]): the ECDSA
//! verifier's domain separator, nothing for BN254 and BLS12-381. The AVS and the operator set are
//! not in the key — the digest does not bind them, so a signature made for one is valid for every
//! other that shares the key — but each record keeps its [`Origin`], and answers no other.
//!
//! # Procedure
//!
//! [`EmbeddedLedger::sign_once`] is the one way to get signatures released. It computes the certificate
//! digest itself from the claim (task id, reference timestamp, output) and then:
//!
//! - a record that refuses the claim ([`Record::permits`]: another origin, reference timestamp or
//!   output) → [`LedgerError::Conflict`] before anything is signed;
//! - a signed record for the same origin and digest → that record, nothing signed;
//! - otherwise the caller's `sign` is called with the digest, and the signatures go to the writer,
//!   which decides again in one exclusive write transaction and replies only after that
//!   transaction is durably committed:
//!   - no record → insert it with the signatures, commit → the new record;
//!   - a signed record with the same origin and digest (a racing call won) → the stored record,
//!     unchanged: its signatures win and the caller's are discarded, so a retry gets
//!     byte-identical answers even from a randomised signer (HSM);
//!   - an unsigned record with the same origin and digest (left by a crash of an older avsnode,
//!     which committed before signing, or imported that way) → store the caller's signatures in
//!     it, commit → that record;
//!   - a record that refuses the claim → [`LedgerError::Conflict`], logged at error level with the
//!     task id and key (never payloads or signatures). The caller's signatures are dropped.
//!
//! The only signatures the API ever hands back are those inside a returned [`Record`], and a
//! record is returned only once it is durably committed: a caller that answers from the returned
//! record (never from the signatures it made) cannot release a signature that is not the
//! committed one. The pipeline's fast path (the claim, [`Ledger::claim`], and [`Record::answers`],
//! before executing a task) answers retries with the same decision.
//!
//! # Group commit
//!
//! One thread, `ledger-writer`, owns every `commit_signed` write. Callers queue a request with a
//! oneshot reply and await it. The writer blocks for the first request, waits
//! [`LedgerOptions::commit_delay`] for more to join, takes whatever is queued (up to 1024),
//! applies them in order in one transaction (so of two different digests for one task in the
//! same batch, the second is a conflict, and of two same-digest calls the second gets the
//! first's signatures), commits once — one fsync pair (redb two-phase commit) for the whole
//! batch — and only then replies. If the commit fails, every request of the batch gets the error
//! and no signature of the batch is returned. [`EmbeddedLedger::stats`] counts commits and requests so
//! the per-task commit cost can be measured.
//!
//! A caller that stops waiting (its future dropped) may still have its record committed, with
//! its signatures; its retry gets that stored record. The pipeline runs sign-and-commit as a unit
//! anyway (DESIGN §3.2).
//!
//! # Migration
//!
//! Ledgers written before the key was narrowed (layout 1, keyed by AVS and operator set) are
//! migrated when opened, in one transaction; records that are one key now (the same task signed
//! for two origins with one key) stop the migration until the operator decides with `avsnode
//! ledger migrate`. See `migrate.rs`.
//!
//! # Lock
//!
//! [`EmbeddedLedger::open`] takes an OS lock (`flock`) on `<data_dir>/LOCK` for the ledger's lifetime: a
//! second process, or a second `open` in this one, gets [`LedgerError::Locked`]. Export, import
//! and prune from the command line open the ledger too, so they cannot run beside a live node.
//! Dropping the last clone of a [`EmbeddedLedger`] drains the queue, commits, stops the writer and
//! releases the lock; [`EmbeddedLedger::close`] does the same and reports errors.
//!
//! # Caveat
//!
//! The writer's check comes after signing: two calls for one task that race past the check
//! before signing (two origins, or two outputs, at the same moment) both sign, and the writer
//! refuses the second. That signature — over a digest or for an origin the ledger refuses — has
//! been COMPUTED and held in this process's memory. It is never stored and never returned, so it
//! never leaves the process through this API; it is dropped with the refused request (its bytes
//! may linger in freed memory, a core dump or swap until overwritten). The pre-check in
//! `sign_once` and the pipeline's single flight make such wasted signatures rare.
//!
//! The ledger protects one data directory on one machine. It does not protect against:
//!
//! - the same key running in two nodes with different data directories (two machines, a restored
//!   backup, a copied VM): each ledger is consistent on its own and together they can sign two
//!   outputs. Move records with `avsnode ledger export | import` and never run a key twice;
//! - an operator deleting or rolling back `ledger.redb`, or pruning with a cutoff inside some AVS's
//!   `max_staleness` (a pruned task that is still fresh could be signed again);
//! - storage that acknowledges `fsync` without persisting (some consumer SSDs, some virtual
//!   disks), or a shared/network file system where `flock` is not enforced;
//! - signatures made outside this API (a key used by another program), or a caller that releases
//!   the signatures it computed instead of those in the returned record;
//! - a `sign` callback that signs something else than the digest it is handed, or a
//!   [`ResultCertificate`] that is not the one the key signs under (the operator set's scheme and
//!   verifier, DESIGN §4.2).

mod backend;
mod codec;
mod error;
mod export;
mod legacy;
mod migrate;
pub mod postgres;
pub mod settings;
mod writer;

#[cfg(test)]
mod tests;

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::future::Future;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use avsnode_signer::messages::{
    Address, MessageHash, ResultCertificate, SigningDigest, TaskId, certificate_digest,
    message_hash,
};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::{mpsc, oneshot};

pub use backend::{Claimed, Ledger, Ticket};
pub use error::{DecodeError, FieldProblem, ImportError, LedgerError};
pub use export::ImportSummary;
pub use migrate::{Collisions, MigrationOptions, MigrationReport};

use codec::{decode_entry, decode_value, encode_key, task_id_of_key};
use writer::{Counters, Request, conflict};

/// The data directory's lock file.
pub const LOCK_FILE: &str = "LOCK";

/// The ledger database file in the data directory.
pub const DB_FILE: &str = "ledger.redb";

/// The one table: encoded [`RecordKey`] → encoded record (layout 2, in `codec.rs`). Layout 1's
/// table had another name; `migrate.rs` moves its records here.
const RECORDS: TableDefinition<'static, &'static [u8], &'static [u8]> =
    TableDefinition::new("sign_once");

/// What one record is about: the signing key, what the signed digest binds besides the task
/// (DESIGN §5), and the task. Nothing else: the AVS and the operator set are not in the digest,
/// so they are not in the key either (see [`Origin`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey {
    /// keccak256 of the signing public key.
    pub key_id: [u8; 32],
    /// [`ResultCertificate::bound_domain`]: the ECDSA verifier's domain separator, `None` for BN254 and
    /// BLS12-381.
    pub domain: Option<[u8; 32]>,
    /// The task.
    pub task_id: TaskId,
}

impl RecordKey {
    /// The key of `task_id` signed by the key `key_id` under `certificate`.
    pub fn new(key_id: [u8; 32], certificate: &ResultCertificate, task_id: TaskId) -> RecordKey {
        RecordKey {
            key_id,
            domain: certificate.bound_domain(),
            task_id,
        }
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "task {} key 0x{}",
            self.task_id,
            hex::encode(&self.key_id[..8])
        )?;
        if let Some(domain) = self.domain {
            write!(f, " verifier domain 0x{}", hex::encode(domain))?;
        }
        Ok(())
    }
}

/// The AVS and operator set a record was signed for. Not part of the sign-once key, but stored:
/// a record answers only requests from its own origin, and a request for the same task from
/// another AVS or operator set that shares the key is refused (its signature would be valid for
/// both, DESIGN §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    /// The AVS.
    pub avs: Address,
    /// The operator set.
    pub operator_set_id: u32,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AVS {} operator set {}", self.avs, self.operator_set_id)
    }
}

/// Why a record refuses a request for its task: the one decision behind every sign-once refusal
/// (the pipeline's fast path, [`EmbeddedLedger::sign_once`], the writer's check, import).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The task was signed for another AVS or operator set that uses the same key.
    #[error("signed with this key for {recorded}, not {asked}")]
    OtherOrigin {
        /// The record's origin.
        recorded: Origin,
        /// The request's.
        asked: Origin,
    },
    /// The task was signed with another reference timestamp.
    #[error("signed with reference timestamp {recorded}, not {asked}")]
    OtherReferenceTimestamp {
        /// The record's.
        recorded: u32,
        /// The request's.
        asked: u32,
    },
    /// The task was signed with another output.
    #[error("signed with a different output")]
    OtherOutput,
}

/// One sign-once key that several records of an older ledger (or of an import) share: each
/// origin with its reference timestamp and creation time, earliest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collision {
    /// The shared key.
    pub key: RecordKey,
    /// (origin, reference timestamp, created at Unix ms) of each record.
    pub origins: Vec<(Origin, u32, u64)>,
}

impl fmt::Display for Collision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} signed for", self.key)?;
        for (i, (origin, reference_timestamp, created)) in self.origins.iter().enumerate() {
            let sep = if i == 0 { " " } else { "; " };
            write!(
                f,
                "{sep}{origin} (reference timestamp {reference_timestamp}, recorded at {created} ms)"
            )?;
        }
        Ok(())
    }
}

/// What the pipeline signed for a task.
#[derive(Clone)]
pub struct Proposal {
    /// Who asks.
    pub origin: Origin,
    /// The task's reference timestamp (part of the certificate digest).
    pub reference_timestamp: u32,
    /// keccak256(abi.encode(task id, output)); checked against `output` by `commit_signed`.
    pub message_hash: [u8; 32],
    /// The result digest the signatures are over (DESIGN §4.2).
    pub digest: SigningDigest,
    /// The performer's output, kept so a retry can be answered in full.
    pub output: Vec<u8>,
}

impl fmt::Debug for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No payloads in logs: the output is shown by length only.
        f.debug_struct("Proposal")
            .field("origin", &self.origin)
            .field("reference_timestamp", &self.reference_timestamp)
            .field("message_hash", &Hex(&self.message_hash))
            .field("digest", &self.digest)
            .field("output_len", &self.output.len())
            .finish()
    }
}

/// One task to sign once: who asks, and the fields the certificate digest is computed from.
#[derive(Clone)]
pub struct Claim {
    /// The task.
    pub task_id: TaskId,
    /// Who asks.
    pub origin: Origin,
    /// The task's reference timestamp.
    pub reference_timestamp: u32,
    /// The performer's output.
    pub output: Vec<u8>,
}

impl fmt::Debug for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claim")
            .field("task_id", &self.task_id)
            .field("origin", &self.origin)
            .field("reference_timestamp", &self.reference_timestamp)
            .field("output_len", &self.output.len())
            .finish()
    }
}

/// What [`EmbeddedLedger::sign_once`] answers with: the durably committed record, whose signatures are
/// the only ones that may be released.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The record.
    pub record: Record,
    /// Whether this call signed it (false: an earlier call had, and its signatures answer).
    pub fresh: bool,
}

/// Why [`EmbeddedLedger::sign_once`] released no signature.
#[derive(Debug, thiserror::Error)]
pub enum SignOnceError<E> {
    /// The ledger refused ([`LedgerError::Conflict`]) or failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The signing backend failed; nothing was recorded.
    #[error(transparent)]
    Sign(E),
}

/// The two signatures released for a task (DESIGN §4.2, §4.3).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Signatures {
    /// The result (certificate) signature.
    pub result: Vec<u8>,
    /// The auth signature.
    pub auth: Vec<u8>,
}

impl fmt::Debug for Signatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signatures")
            .field("result", &Hex(&self.result))
            .field("auth", &Hex(&self.auth))
            .finish()
    }
}

/// One ledger record.
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    /// Key, domain and task.
    pub key: RecordKey,
    /// The AVS and operator set it was signed for.
    pub origin: Origin,
    /// The task's reference timestamp.
    pub reference_timestamp: u32,
    /// keccak256(abi.encode(task id, output)).
    pub message_hash: [u8; 32],
    /// The one digest this record allows signing.
    pub digest: [u8; 32],
    /// The output the digest covers.
    pub output: Vec<u8>,
    /// The released signatures. `None` only in records this version does not write: left by a
    /// crash of an older avsnode (which committed before signing), or imported that way.
    pub signatures: Option<Signatures>,
    /// When the record was first committed (Unix milliseconds); pruning goes by this.
    pub created_at_unix_ms: u64,
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("key", &self.key)
            .field("origin", &self.origin)
            .field("reference_timestamp", &self.reference_timestamp)
            .field("message_hash", &Hex(&self.message_hash))
            .field("digest", &Hex(&self.digest))
            .field("output_len", &self.output.len())
            .field("signatures", &self.signatures)
            .field("created_at_unix_ms", &self.created_at_unix_ms)
            .finish()
    }
}

impl Record {
    /// Whether this record may answer a request from `origin` with `reference_timestamp`: only
    /// its own origin, and only for the very digest it holds (recomputed under `certificate` from
    /// the request's reference timestamp and the recorded output). The same output under another
    /// reference timestamp is another digest.
    pub fn answers(
        &self,
        certificate: &ResultCertificate,
        origin: Origin,
        reference_timestamp: u32,
    ) -> Result<(), Refusal> {
        let digest = certificate.digest(reference_timestamp, &MessageHash(self.message_hash));
        self.permits(origin, reference_timestamp, digest.as_bytes())
    }

    /// Whether signatures over `digest` for `origin` may be released under this record: the one
    /// sign-once decision (DESIGN §5).
    pub fn permits(
        &self,
        origin: Origin,
        reference_timestamp: u32,
        digest: &[u8; 32],
    ) -> Result<(), Refusal> {
        if self.origin == origin && self.digest == *digest {
            return Ok(());
        }
        self.admits(origin, reference_timestamp)?;
        Err(Refusal::OtherOutput)
    }

    /// Whether a request from `origin` with `reference_timestamp` may be for this record at all,
    /// before its output is known: the record's own origin and reference timestamp (another
    /// reference timestamp is another digest).
    pub fn admits(&self, origin: Origin, reference_timestamp: u32) -> Result<(), Refusal> {
        if self.origin != origin {
            Err(Refusal::OtherOrigin {
                recorded: self.origin,
                asked: origin,
            })
        } else if self.reference_timestamp != reference_timestamp {
            Err(Refusal::OtherReferenceTimestamp {
                recorded: self.reference_timestamp,
                asked: reference_timestamp,
            })
        } else {
            Ok(())
        }
    }
}

struct Hex<'a>(&'a [u8]);

impl fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(self.0))
    }
}

/// Group-commit counters since [`EmbeddedLedger::open`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LedgerStats {
    /// Successful durable batch commits (every committed batch is durable).
    pub commits: u64,
    /// Batches that failed (every request in them got an error).
    pub failed_commits: u64,
    /// `EmbeddedLedger::commit_signed` calls in successfully committed durable batches (refusals
    /// decided inside a committed batch, such as conflicts, included).
    pub requests: u64,
    /// Time spent in committed batches, from `begin_write` to the end of `commit`.
    pub commit_seconds_total: f64,
    /// The largest committed batch.
    pub max_batch: u64,
    /// `EmbeddedLedger::commit_signed` calls refused with [`LedgerError::Conflict`].
    pub conflicts: u64,
}

/// The sign-once ledger of one data directory. Cheap to clone; all clones share one writer.
#[derive(Debug, Clone)]
pub struct EmbeddedLedger {
    inner: Arc<Inner>,
}

struct Inner {
    data_dir: PathBuf,
    sender: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    migrated: Option<MigrationReport>,
    // Field order matters: the database closes before the lock file is released.
    db: Arc<Database>,
    _lock: File,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedLedger")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue lets the writer drain and commit what is left, then return.
        drop(self.sender.take());
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!("the ledger writer thread panicked");
        }
    }
}

fn storage<E: Into<redb::Error>>(op: &'static str) -> impl FnOnce(E) -> LedgerError {
    move |e| LedgerError::Storage {
        op,
        source: Arc::new(e.into()),
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> LedgerError + '_ {
    move |source| LedgerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Tuning of the ledger's writer.
#[derive(Debug, Clone)]
pub struct LedgerOptions {
    /// How long the writer waits, after taking a batch that holds a write, for more writes to
    /// share its fsync. Adds up to this much latency; at 1,000 tasks/s a few milliseconds
    /// put several records in each durable commit. Zero commits at once.
    pub commit_delay: Duration,
    /// Observes each durable commit's duration (`avsnode_ledger_commit_seconds`).
    pub commit_seconds: Option<avsnode_metrics::PromHistogram>,
    /// redb's page cache in bytes. Written pages stay in it, so the node's memory grows with
    /// the ledger up to this size (redb's own default of 1 GiB made a long-running node's RSS
    /// follow the ledger file).
    pub cache_size: usize,
    /// How to migrate a ledger written by an older avsnode (`migrate.rs`).
    pub migration: MigrationOptions,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        LedgerOptions {
            commit_delay: Duration::from_millis(5),
            commit_seconds: None,
            cache_size: 16 << 20,
            migration: MigrationOptions::default(),
        }
    }
}

impl EmbeddedLedger {
    /// [`EmbeddedLedger::open_with`] the default options.
    pub fn open(data_dir: &Path) -> Result<EmbeddedLedger, LedgerError> {
        EmbeddedLedger::open_with(data_dir, LedgerOptions::default())
    }

    /// Opens (creating if needed) the ledger in `data_dir`: creates the directory (mode 0700),
    /// locks `data_dir/LOCK`, opens `data_dir/ledger.redb` and starts the writer thread.
    ///
    /// Fails with [`LedgerError::Locked`] if another avsnode (or another `EmbeddedLedger` in this process)
    /// uses the directory.
    pub fn open_with(
        data_dir: &Path,
        options: LedgerOptions,
    ) -> Result<EmbeddedLedger, LedgerError> {
        create_private_dir(data_dir)?;

        let lock_path = data_dir.join(LOCK_FILE);
        let mut lock = private_file()
            .read(true)
            .write(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io_error(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LedgerError::Locked {
                    path: data_dir.to_path_buf(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_error(&lock_path)(e)),
        }
        // For a person wondering who holds the lock; the lock itself is the flock.
        lock.set_len(0)
            .and_then(|()| writeln!(lock, "{}", std::process::id()))
            .map_err(io_error(&lock_path))?;

        let db_path = data_dir.join(DB_FILE);
        // Create the file ourselves so it is private from the start; redb initialises it.
        drop(
            private_file()
                .append(true)
                .open(&db_path)
                .map_err(io_error(&db_path))?,
        );
        let db = Database::builder()
            .set_cache_size(options.cache_size)
            .create(&db_path)
            .map_err(|source| LedgerError::Open {
                path: db_path.clone(),
                source,
            })?;
        let migrated = migrate::run(&db, &options.migration)?;
        // Read transactions cannot open a table that was never created.
        let txn = db
            .begin_write()
            .map_err(storage("starting a write transaction"))?;
        txn.open_table(RECORDS)
            .map_err(storage("creating the records table"))?;
        txn.commit()
            .map_err(storage("committing the records table"))?;

        let db = Arc::new(db);
        let counters = Arc::new(Counters::with_commit_histogram(
            options.commit_seconds.clone(),
        ));
        let (sender, queue) = mpsc::channel(writer::QUEUE_CAPACITY);
        let writer = std::thread::Builder::new()
            .name("ledger-writer".to_owned())
            .spawn({
                let db = Arc::clone(&db);
                let counters = Arc::clone(&counters);
                move || writer::run(db, queue, counters, options.commit_delay)
            })
            .map_err(io_error(data_dir))?;

        Ok(EmbeddedLedger {
            inner: Arc::new(Inner {
                data_dir: data_dir.to_path_buf(),
                sender: Some(sender),
                writer: Some(writer),
                counters,
                migrated,
                db,
                _lock: lock,
            }),
        })
    }

    /// What opening this ledger migrated from an older layout, if anything.
    pub fn migrated(&self) -> Option<&MigrationReport> {
        self.inner.migrated.as_ref()
    }

    /// The data directory this ledger locks.
    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    /// The fast path (DESIGN §3.1 step 7): the record for `key`, from a read snapshot, without
    /// the writer. A signed record answers a retry at once; a record with another digest than the
    /// one the pipeline would produce means the task must not be answered ([`Record::answers`]).
    /// Only [`EmbeddedLedger::sign_once`] releases new signatures.
    pub fn lookup(&self, key: &RecordKey) -> Result<Option<Record>, LedgerError> {
        let table = read_records(&self.inner.db)?;
        let Some(value) = table
            .get(encode_key(key).as_slice())
            .map_err(storage("reading a record"))?
        else {
            return Ok(None);
        };
        decode_value(*key, value.value())
            .map(Some)
            .map_err(|source| LedgerError::Corrupt {
                task_id: Some(key.task_id),
                source,
            })
    }

    /// DESIGN §5's procedure, and the only way avsnode gets signatures to release: computes the
    /// certificate digest of `claim` itself (one [`certificate_digest`]), refuses before signing
    /// if a record for the task holds another origin or digest, answers from a signed record for
    /// the same digest, and otherwise calls `sign` with the digest, durably commits the
    /// signatures and returns the committed record. Answer from the returned record only.
    ///
    /// `key_id` is the signing key's id ([`keccak256`] of its public key) and `certificate` what
    /// it signs under; together with the task id they are the record's key.
    ///
    /// [`keccak256`]: avsnode_signer::messages::keccak256
    pub async fn sign_once<F, Fut, E>(
        &self,
        key_id: [u8; 32],
        certificate: &ResultCertificate,
        claim: Claim,
        sign: F,
    ) -> Result<Signed, SignOnceError<E>>
    where
        F: FnOnce(SigningDigest) -> Fut,
        Fut: Future<Output = Result<Signatures, E>>,
    {
        let key = RecordKey::new(key_id, certificate, claim.task_id);
        let (message_hash, digest) = certificate_digest(
            certificate,
            &claim.task_id,
            claim.reference_timestamp,
            &claim.output,
        );
        if let Some(record) = self.lookup(&key)? {
            // Refused before anything is signed for a digest the ledger would refuse.
            if let Err(refusal) =
                record.permits(claim.origin, claim.reference_timestamp, digest.as_bytes())
            {
                return Err(self.refuse(&key, refusal).into());
            }
            if record.signatures.is_some() {
                return Ok(Signed {
                    record,
                    fresh: false,
                });
            }
        }
        let signatures = sign(digest).await.map_err(SignOnceError::Sign)?;
        let proposal = Proposal {
            origin: claim.origin,
            reference_timestamp: claim.reference_timestamp,
            message_hash: message_hash.0,
            digest,
            output: claim.output,
        };
        let record = self.commit_signed(key, proposal, signatures).await?;
        if record.digest != *digest.as_bytes() {
            return Err(LedgerError::InvalidProposal {
                task_id: key.task_id,
                problem: "the ledger answered for another digest",
            }
            .into());
        }
        Ok(Signed {
            record,
            fresh: true,
        })
    }

    /// Logs and counts a refusal found outside the writer (the writer logs its own).
    pub(crate) fn refuse(&self, key: &RecordKey, refusal: Refusal) -> LedgerError {
        self.inner.counters.conflict();
        conflict(key, refusal)
    }

    /// Check-and-commit (DESIGN §3.1 step 11, §5): `signatures` are the caller's signatures over
    /// `proposal.digest`; see the module doc for the procedure. Returns only after the decision
    /// is durably committed, and returns the record to answer with: its signatures are the ones
    /// committed, which are not `signatures` when an earlier call for the same digest won.
    /// Answer from the returned record, never from `signatures`.
    ///
    /// Refuses with [`LedgerError::InvalidProposal`] if `proposal.message_hash` is not
    /// keccak256(abi.encode(task id, output)) or a field does not fit the record layout, and with
    /// [`LedgerError::Conflict`] if the record holds another digest; in every error case the
    /// caller's signatures are dropped.
    async fn commit_signed(
        &self,
        key: RecordKey,
        proposal: Proposal,
        signatures: Signatures,
    ) -> Result<Record, LedgerError> {
        let invalid = |problem| {
            Err(LedgerError::InvalidProposal {
                task_id: key.task_id,
                problem,
            })
        };
        if !codec::fits(&proposal.output) {
            return invalid("the output is longer than the ledger layout allows (4 GiB)");
        }
        if !codec::fits(&signatures.result) || !codec::fits(&signatures.auth) {
            return invalid("a signature is longer than the ledger layout allows (4 GiB)");
        }
        if message_hash(&key.task_id, &proposal.output).0 != proposal.message_hash {
            return invalid("message_hash is not keccak256(abi.encode(task_id, output))");
        }
        let (reply, answer) = oneshot::channel();
        self.send(Request::Commit {
            key,
            proposal,
            signatures,
            reply,
        })
        .await?;
        let committed = answer.await.map_err(|_| LedgerError::Closed)?;
        if let Err(LedgerError::Conflict { .. }) = &committed {
            self.inner.counters.conflict();
        }
        committed
    }

    async fn send(&self, request: Request) -> Result<(), LedgerError> {
        let sender = self.inner.sender.as_ref().ok_or(LedgerError::Closed)?;
        sender.send(request).await.map_err(|_| LedgerError::Closed)
    }

    /// Number of records held.
    pub fn len(&self) -> Result<u64, LedgerError> {
        read_records(&self.inner.db)?
            .len()
            .map_err(storage("counting the records"))
    }

    /// Whether the ledger holds no record.
    pub fn is_empty(&self) -> Result<bool, LedgerError> {
        self.len().map(|n| n == 0)
    }

    /// Removes every record created before `older_than_unix_ms` and returns how many went, in one
    /// durable transaction. The cutoff must be older than every AVS's `max_staleness` (DESIGN §5),
    /// so a pruned task is rejected as stale before it reaches the ledger. Blocking: call it
    /// from `spawn_blocking` in async code.
    pub fn prune(&self, older_than_unix_ms: u64) -> Result<u64, LedgerError> {
        let mut txn = self
            .inner
            .db
            .begin_write()
            .map_err(storage("starting a write transaction"))?;
        txn.set_two_phase_commit(true);
        let removed = {
            let mut table = txn
                .open_table(RECORDS)
                .map_err(storage("opening the records table"))?;
            let mut doomed = Vec::new();
            for entry in table.iter().map_err(storage("reading the records"))? {
                let (key, value) = entry.map_err(storage("reading the records"))?;
                let record = decode_entry(key.value(), value.value()).map_err(|source| {
                    LedgerError::Corrupt {
                        task_id: task_id_of_key(key.value()),
                        source,
                    }
                })?;
                if record.created_at_unix_ms < older_than_unix_ms {
                    doomed.push(key.value().to_vec());
                }
            }
            for key in &doomed {
                table
                    .remove(key.as_slice())
                    .map_err(storage("removing a record"))?;
            }
            doomed.len()
        };
        txn.commit().map_err(storage("committing the prune"))?;
        Ok(u64::try_from(removed).unwrap_or(u64::MAX))
    }

    /// Writes every record as JSON (see `export.rs` for the format) and returns how many.
    /// Meant for a stopped node: `avsnode ledger export` holds the data directory's lock.
    pub fn export_json(&self, out: &mut dyn Write) -> Result<u64, LedgerError> {
        export::export(&self.inner.db, out)
    }

    /// Merges records from JSON written by [`export_json`](EmbeddedLedger::export_json), in one
    /// transaction: nothing is written if any record conflicts with a held one (another origin
    /// or digest for the same key, domain and task), two records of the input share a key, or the
    /// input is malformed. `verifier_versions` are tried for version-1 files' ECDSA records, as
    /// [`MigrationOptions::verifier_versions`].
    pub fn import_json(
        &self,
        input: &mut dyn Read,
        verifier_versions: &[String],
    ) -> Result<ImportSummary, LedgerError> {
        export::import(&self.inner.db, input, verifier_versions)
    }

    /// Group-commit counters.
    pub fn stats(&self) -> LedgerStats {
        self.inner.counters.snapshot()
    }

    /// Waits until every request queued before this call is committed (or has failed).
    pub async fn flush(&self) -> Result<(), LedgerError> {
        let (reply, done) = oneshot::channel();
        self.send(Request::Flush { reply }).await?;
        done.await.map_err(|_| LedgerError::Closed)
    }

    /// Flushes, then drops this handle. If it was the last one (no other clone), the writer
    /// thread stops and the data directory's lock is released before this returns.
    pub async fn close(self) -> Result<(), LedgerError> {
        self.flush().await?;
        drop(self);
        Ok(())
    }
}

/// The records table in a read snapshot of its own (the table keeps the snapshot alive).
pub(crate) fn read_records(
    db: &Database,
) -> Result<redb::ReadOnlyTable<&'static [u8], &'static [u8]>, LedgerError> {
    db.begin_read()
        .map_err(storage("starting a read transaction"))?
        .open_table(RECORDS)
        .map_err(storage("opening the records table"))
}

/// Options that create a file readable by its owner only.
fn private_file() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

fn create_private_dir(dir: &Path) -> Result<(), LedgerError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(io_error(dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // An existing directory keeps its mode; say so if others can reach the ledger.
        let mode = std::fs::metadata(dir)
            .map_err(io_error(dir))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                data_dir = %dir.display(),
                mode = %format_args!("{:o}", mode & 0o777),
                "the data directory is accessible to other users; chmod 700 it"
            );
        }
    }
    Ok(())
}
