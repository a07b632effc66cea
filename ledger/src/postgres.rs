//! The sign-once ledger on PostgreSQL, shared by several replicas of one operator (DESIGN §5,
//! `docs/DESIGN-NOTES.md` "Replicas").
//!
//! # Procedure
//!
//! A task goes through three statements, each one round trip and its own transaction:
//!
//! 1. [`PgLedger::claim`], before the performer runs: insert-or-get of the task's row. A new row
//!    is `claimed` by this replica until a lease runs out (the task's deadline). An existing row
//!    answers (`signed`), waits (`claimed` or `sealed` under another replica's live lease), is
//!    refused (another origin or reference timestamp, or below the key's prune watermark), or —
//!    when its lease has run out — is taken over in the same statement.
//! 2. [`PgLedger::seal`], once the output is known and before anything is signed: stores the
//!    output and its digest, only while this replica still holds the claim.
//! 3. [`PgLedger::record`], after signing the sealed digest: stores the signatures, only while
//!    this replica still holds the sealed row, and returns the committed record. Only its
//!    signatures may be released.
//!
//! A replica that loses its claim between two steps (its lease ran out and another took the row)
//! gets [`LedgerError::ClaimLost`] and releases nothing. A takeover of a `sealed` row signs the
//! stored digest again: it never runs the performer a second time, so a task has one output
//! cluster-wide. Leases are judged by the database's clock (`now()`), never a replica's.
//!
//! # Invariant
//!
//! For one (signing key, domain, task id), released signatures are over at most one digest: a
//! row is sealed once (the `status = claimed` condition), its digest never changes after, and
//! `record` stores signatures only for the sealed digest. Two replicas that both signed (one
//! whose lease ran out mid-signing, one that took over) signed the same digest; only the one whose
//! `record` committed releases anything.

use std::fmt;
use std::time::Duration;

use avsnode_signer::messages::{Address, SigningDigest, TaskId, message_hash};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::{LedgerError, Origin, Record, RecordKey, Refusal, Signatures, conflict};

/// The schema versions this avsnode knows, in order; each is applied in one transaction with the
/// version bump. Never edit a released step: add the next one.
const MIGRATIONS: &[&str] = &[
    // 1: the sign-once table and the per-key prune watermarks.
    "CREATE TABLE avsnode_sign_once (
        key_id bytea NOT NULL,
        domain bytea NOT NULL,
        task_id bytea NOT NULL,
        avs bytea NOT NULL,
        operator_set_id bigint NOT NULL,
        reference_timestamp bigint NOT NULL,
        status smallint NOT NULL,
        owner text NOT NULL,
        lease_until timestamptz NOT NULL,
        message_hash bytea,
        digest bytea,
        output bytea,
        result_signature bytea,
        auth_signature bytea,
        created_at_ms bigint NOT NULL,
        PRIMARY KEY (key_id, domain, task_id)
    );
    CREATE INDEX avsnode_sign_once_reference ON avsnode_sign_once (key_id, reference_timestamp);
    CREATE TABLE avsnode_watermark (
        key_id bytea PRIMARY KEY,
        below_reference_timestamp bigint NOT NULL
    );",
];

/// The schema version this avsnode writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Serialises migrations of one database across replicas starting at once.
const MIGRATION_LOCK: i64 = 0x6176_736e_6f64_6531; // "avsnode1"

const CLAIMED: i16 = 1;
const SEALED: i16 = 2;
const SIGNED: i16 = 3;

/// The columns a row is read with, in [`row_record`]'s order.
const COLUMNS: &str = "key_id, domain, task_id, avs, operator_set_id, reference_timestamp, \
    status, owner, message_hash, digest, output, result_signature, auth_signature, created_at_ms";

/// How to reach the database.
#[derive(Clone)]
pub struct PgOptions {
    /// A `postgresql://user@host:port/db` URL or a key=value string, without the password.
    pub url: String,
    /// The password (read from a file by the caller; never logged or shown by `Debug`).
    pub password: Option<String>,
    /// Connections in the pool.
    pub pool_size: usize,
    /// How long a connection attempt (and waiting for a pooled connection) may take.
    pub connect_timeout: Duration,
    /// The server-side `statement_timeout` of every connection.
    pub statement_timeout: Duration,
    /// This replica's name in the `owner` column (with a random suffix per claim).
    pub replica: String,
}

impl fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "(set)"))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("replica", &self.replica)
            .finish()
    }
}

/// What [`PgLedger::claim`] found.
#[derive(Debug)]
pub enum Claimed {
    /// The task is signed: answer from this record (if it [answers](Record::answers) the request).
    Signed(Record),
    /// This replica holds the claim: run the performer, then [`PgLedger::seal`].
    Run(Lease),
    /// This replica took over a sealed row: sign its digest, then [`PgLedger::record`]. The
    /// performer is not run again.
    Sealed(Lease, Record),
    /// Another replica holds a live claim: wait for its record ([`PgLedger::lookup`]).
    Busy,
}

/// A claim this replica holds on one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    key: RecordKey,
    owner: String,
}

/// The ledger on PostgreSQL. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct PgLedger {
    pool: Pool,
    replica: String,
}

impl fmt::Debug for PgLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgLedger")
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

fn database(op: &'static str) -> impl FnOnce(tokio_postgres::Error) -> LedgerError {
    move |source| LedgerError::Database {
        op,
        reason: describe(&source),
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> LedgerError {
    let reason = match &e {
        deadpool_postgres::PoolError::Backend(e) => describe(e),
        other => other.to_string(),
    };
    LedgerError::Unavailable { reason }
}

/// What the server said (its message and SQLSTATE), or the client's error with its causes:
/// `tokio_postgres::Error`'s own `Display` says only "db error".
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

impl PgLedger {
    /// Connects and brings the schema to [`SCHEMA_VERSION`] (created on an empty database,
    /// migrated from an older version, in one transaction); refuses a database whose schema is
    /// newer than this avsnode knows.
    pub async fn connect(options: &PgOptions) -> Result<PgLedger, LedgerError> {
        let mut config: tokio_postgres::Config =
            options.url.parse().map_err(|e: tokio_postgres::Error| {
                LedgerError::InvalidDatabaseUrl {
                    reason: e.to_string(),
                }
            })?;
        if config.get_password().is_some() {
            return Err(LedgerError::InvalidDatabaseUrl {
                reason: "the URL holds a password; put it in ledger.password_file".into(),
            });
        }
        if let Some(password) = &options.password {
            config.password(password.as_bytes());
        }
        config
            .connect_timeout(options.connect_timeout)
            .options(format!(
                "-c statement_timeout={}",
                options.statement_timeout.as_millis()
            ))
            .application_name("avsnode");
        let manager = Manager::from_config(
            config,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.connect_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| LedgerError::Unavailable {
                reason: e.to_string(),
            })?;
        let ledger = PgLedger {
            pool,
            replica: options.replica.clone(),
        };
        ledger.migrate().await?;
        Ok(ledger)
    }

    /// The schema version the database holds.
    pub async fn schema_version(&self) -> Result<i32, LedgerError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client
            .query_one("SELECT version FROM avsnode_schema", &[])
            .await
            .map_err(database("reading the schema version"))?;
        Ok(row.get(0))
    }

    async fn migrate(&self) -> Result<(), LedgerError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let txn = client
            .transaction()
            .await
            .map_err(database("starting the migration"))?;
        txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(database("locking the schema"))?;
        txn.batch_execute(
            "CREATE TABLE IF NOT EXISTS avsnode_schema (version integer NOT NULL);
             INSERT INTO avsnode_schema (version)
                 SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM avsnode_schema);",
        )
        .await
        .map_err(database("creating the schema table"))?;
        let found: i32 = txn
            .query_one("SELECT version FROM avsnode_schema", &[])
            .await
            .map_err(database("reading the schema version"))?
            .get(0);
        if found > SCHEMA_VERSION {
            return Err(LedgerError::SchemaTooNew {
                found,
                known: SCHEMA_VERSION,
            });
        }
        for (version, step) in (1..)
            .zip(MIGRATIONS)
            .skip(usize::try_from(found).unwrap_or(0))
        {
            txn.batch_execute(step)
                .await
                .map_err(database("migrating the schema"))?;
            txn.execute("UPDATE avsnode_schema SET version = $1", &[&version])
                .await
                .map_err(database("migrating the schema"))?;
            tracing::info!(version, "ledger schema migrated");
        }
        txn.commit()
            .await
            .map_err(database("committing the migration"))
    }

    /// Step 1: claims `key` for a request from `origin` with `reference_timestamp`, holding it
    /// until `lease` from now (the database's clock). See the module doc.
    pub async fn claim(
        &self,
        key: &RecordKey,
        origin: Origin,
        reference_timestamp: u32,
        lease: Duration,
    ) -> Result<Claimed, LedgerError> {
        let owner = format!("{}/{:016x}", self.replica, rand_u64());
        let client = self.pool.get().await.map_err(pool_error)?;
        let (key_id, domain, task_id) = key_columns(key);
        let (avs, set, ts) = (
            origin.avs.0.to_vec(),
            i64::from(origin.operator_set_id),
            i64::from(reference_timestamp),
        );
        let lease_secs = lease.as_secs_f64();
        let statement = format!(
            "WITH mine AS (
                INSERT INTO avsnode_sign_once AS r
                    (key_id, domain, task_id, avs, operator_set_id, reference_timestamp, status,
                     owner, lease_until, created_at_ms)
                SELECT $1::bytea, $2::bytea, $3::bytea, $4::bytea, $5::bigint, $6::bigint, {CLAIMED},
                       $7::text, now() + make_interval(secs => $8::float8),
                       (extract(epoch from clock_timestamp()) * 1000)::bigint
                WHERE NOT EXISTS (SELECT 1 FROM avsnode_watermark w
                                  WHERE w.key_id = $1 AND $6 < w.below_reference_timestamp)
                ON CONFLICT (key_id, domain, task_id) DO UPDATE
                    SET owner = EXCLUDED.owner, lease_until = EXCLUDED.lease_until
                    WHERE r.status < {SIGNED} AND r.lease_until < now()
                      AND r.avs = EXCLUDED.avs AND r.operator_set_id = EXCLUDED.operator_set_id
                      AND r.reference_timestamp = EXCLUDED.reference_timestamp
                RETURNING {COLUMNS}
            )
            SELECT {COLUMNS}, true FROM mine
            UNION ALL
            SELECT {COLUMNS}, false FROM avsnode_sign_once
            WHERE key_id = $1 AND domain = $2 AND task_id = $3
              AND NOT EXISTS (SELECT 1 FROM mine)"
        );
        let params: [&(dyn ToSql + Sync); 8] = [
            &key_id,
            &domain,
            &task_id,
            &avs,
            &set,
            &ts,
            &owner,
            &lease_secs,
        ];
        // A row inserted by a transaction that committed after this statement's snapshot is in
        // neither branch: ask again (it is visible to the next statement).
        for _ in 0..3 {
            let rows = client
                .query(&statement, &params)
                .await
                .map_err(database("claiming a task"))?;
            let Some(row) = rows.first() else {
                if self
                    .below_watermark(&client, key, reference_timestamp)
                    .await?
                {
                    return Err(LedgerError::Pruned {
                        task_id: key.task_id,
                    });
                }
                continue;
            };
            let record = row_record(row)?;
            let status: i16 = row.get("status");
            let mine: bool = row.get(COLUMNS.split(", ").count());
            if mine {
                let lease = Lease { key: *key, owner };
                return Ok(match status {
                    SEALED => Claimed::Sealed(lease, record),
                    _ => Claimed::Run(lease),
                });
            }
            if status == SIGNED {
                return Ok(Claimed::Signed(record));
            }
            if record.origin != origin {
                return Err(conflict(
                    key,
                    Refusal::OtherOrigin {
                        recorded: record.origin,
                        asked: origin,
                    },
                ));
            }
            if record.reference_timestamp != reference_timestamp {
                return Err(conflict(
                    key,
                    Refusal::OtherReferenceTimestamp {
                        recorded: record.reference_timestamp,
                        asked: reference_timestamp,
                    },
                ));
            }
            return Ok(Claimed::Busy);
        }
        Err(LedgerError::Unavailable {
            reason: format!("the claim of task {} kept racing", key.task_id),
        })
    }

    async fn below_watermark(
        &self,
        client: &tokio_postgres::Client,
        key: &RecordKey,
        reference_timestamp: u32,
    ) -> Result<bool, LedgerError> {
        let row = client
            .query_opt(
                "SELECT 1 FROM avsnode_watermark
                 WHERE key_id = $1 AND $2 < below_reference_timestamp",
                &[&key.key_id.to_vec(), &i64::from(reference_timestamp)],
            )
            .await
            .map_err(database("reading the prune watermark"))?;
        Ok(row.is_some())
    }

    /// Step 3: seals `output` and its `digest` in the claimed row, and holds it `lease` more for
    /// signing. [`LedgerError::ClaimLost`] if another replica took the row.
    pub async fn seal(
        &self,
        lease: &Lease,
        output: &[u8],
        digest: &SigningDigest,
        hold: Duration,
    ) -> Result<(), LedgerError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let (key_id, domain, task_id) = key_columns(&lease.key);
        let hash = message_hash(&lease.key.task_id, output).0.to_vec();
        let sealed = client
            .execute(
                &format!(
                    "UPDATE avsnode_sign_once
                     SET status = {SEALED}, output = $5, message_hash = $6, digest = $7,
                         lease_until = now() + make_interval(secs => $8)
                     WHERE key_id = $1 AND domain = $2 AND task_id = $3 AND owner = $4
                       AND status = {CLAIMED}"
                ),
                &[
                    &key_id,
                    &domain,
                    &task_id,
                    &lease.owner,
                    &output,
                    &hash,
                    &digest.as_bytes().to_vec(),
                    &hold.as_secs_f64(),
                ],
            )
            .await
            .map_err(database("sealing a task's output"))?;
        if sealed == 1 {
            Ok(())
        } else {
            Err(LedgerError::ClaimLost {
                task_id: lease.key.task_id,
            })
        }
    }

    /// Step 5: stores `signatures` (over the sealed digest) and returns the committed record:
    /// the only signatures that may leave. [`LedgerError::ClaimLost`] if another replica took
    /// the row.
    pub async fn record(
        &self,
        lease: &Lease,
        digest: &SigningDigest,
        signatures: &Signatures,
    ) -> Result<Record, LedgerError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let (key_id, domain, task_id) = key_columns(&lease.key);
        let row = client
            .query_opt(
                &format!(
                    "UPDATE avsnode_sign_once
                     SET status = {SIGNED}, result_signature = $6, auth_signature = $7
                     WHERE key_id = $1 AND domain = $2 AND task_id = $3 AND owner = $4
                       AND status = {SEALED} AND digest = $5
                     RETURNING {COLUMNS}"
                ),
                &[
                    &key_id,
                    &domain,
                    &task_id,
                    &lease.owner,
                    &digest.as_bytes().to_vec(),
                    &signatures.result,
                    &signatures.auth,
                ],
            )
            .await
            .map_err(database("recording a task's signatures"))?;
        match row {
            Some(row) => row_record(&row),
            None => Err(LedgerError::ClaimLost {
                task_id: lease.key.task_id,
            }),
        }
    }

    /// Gives a claim up before sealing (the performer failed): the next request, on any
    /// replica, claims the task at once instead of waiting for the lease.
    pub async fn release(&self, lease: &Lease) -> Result<(), LedgerError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let (key_id, domain, task_id) = key_columns(&lease.key);
        client
            .execute(
                &format!(
                    "UPDATE avsnode_sign_once SET lease_until = now()
                     WHERE key_id = $1 AND domain = $2 AND task_id = $3 AND owner = $4
                       AND status = {CLAIMED}"
                ),
                &[&key_id, &domain, &task_id, &lease.owner],
            )
            .await
            .map_err(database("releasing a claim"))?;
        Ok(())
    }

    /// The signed record of `key`, if there is one.
    pub async fn lookup(&self, key: &RecordKey) -> Result<Option<Record>, LedgerError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let (key_id, domain, task_id) = key_columns(key);
        let row = client
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM avsnode_sign_once
                     WHERE key_id = $1 AND domain = $2 AND task_id = $3 AND status = {SIGNED}"
                ),
                &[&key_id, &domain, &task_id],
            )
            .await
            .map_err(database("reading a record"))?;
        row.as_ref().map(row_record).transpose()
    }

    /// Removes every row of every key whose reference timestamp is below
    /// `below_reference_timestamp`, and raises each key's watermark to it first, in one
    /// transaction: a pruned task is refused by [`PgLedger::claim`] for ever after, on every
    /// replica. Returns how many rows went.
    pub async fn prune(&self, below_reference_timestamp: u32) -> Result<u64, LedgerError> {
        let mut client = self.pool.get().await.map_err(pool_error)?;
        let txn = client
            .transaction()
            .await
            .map_err(database("starting to prune"))?;
        let below = i64::from(below_reference_timestamp);
        txn.execute(
            "INSERT INTO avsnode_watermark (key_id, below_reference_timestamp)
                 SELECT DISTINCT key_id, $1::bigint FROM avsnode_sign_once
             ON CONFLICT (key_id) DO UPDATE
                 SET below_reference_timestamp = GREATEST(
                     avsnode_watermark.below_reference_timestamp, EXCLUDED.below_reference_timestamp)",
            &[&below],
        )
        .await
        .map_err(database("raising the prune watermarks"))?;
        let removed = txn
            .execute(
                "DELETE FROM avsnode_sign_once WHERE reference_timestamp < $1",
                &[&below],
            )
            .await
            .map_err(database("pruning"))?;
        txn.commit()
            .await
            .map_err(database("committing the prune"))?;
        Ok(removed)
    }

    /// Whether the database holds no row.
    pub async fn is_empty(&self) -> Result<bool, LedgerError> {
        self.len().await.map(|n| n == 0)
    }

    /// Rows held (any status).
    pub async fn len(&self) -> Result<u64, LedgerError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let row = client
            .query_one("SELECT count(*) FROM avsnode_sign_once", &[])
            .await
            .map_err(database("counting the records"))?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }
}

/// The key's columns: key id, domain (empty for none), task id.
fn key_columns(key: &RecordKey) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    (
        key.key_id.to_vec(),
        key.domain.map(|d| d.to_vec()).unwrap_or_default(),
        key.task_id.0.to_vec(),
    )
}

fn bytes<const N: usize>(row: &Row, column: &str) -> Result<[u8; N], LedgerError> {
    let value: Vec<u8> = row.get(column);
    value.try_into().map_err(|_| LedgerError::Database {
        op: "reading a record",
        reason: format!("column {column} is not {N} bytes"),
    })
}

/// A row as a [`Record`]; a row not sealed yet has a zero digest and no output or signatures.
fn row_record(row: &Row) -> Result<Record, LedgerError> {
    let domain: Vec<u8> = row.get("domain");
    let domain = match domain.len() {
        0 => None,
        _ => Some(bytes::<32>(row, "domain")?),
    };
    let optional = |column: &str| -> Result<[u8; 32], LedgerError> {
        match row.get::<_, Option<Vec<u8>>>(column) {
            None => Ok([0; 32]),
            Some(_) => bytes::<32>(row, column),
        }
    };
    let signatures = match (
        row.get::<_, Option<Vec<u8>>>("result_signature"),
        row.get::<_, Option<Vec<u8>>>("auth_signature"),
    ) {
        (Some(result), Some(auth)) => Some(Signatures { result, auth }),
        _ => None,
    };
    let number = |column: &str| -> Result<u32, LedgerError> {
        u32::try_from(row.get::<_, i64>(column)).map_err(|_| LedgerError::Database {
            op: "reading a record",
            reason: format!("column {column} is out of range"),
        })
    };
    Ok(Record {
        key: RecordKey {
            key_id: bytes::<32>(row, "key_id")?,
            domain,
            task_id: TaskId(bytes::<32>(row, "task_id")?),
        },
        origin: Origin {
            avs: Address(bytes::<20>(row, "avs")?),
            operator_set_id: number("operator_set_id")?,
        },
        reference_timestamp: number("reference_timestamp")?,
        message_hash: optional("message_hash")?,
        digest: optional("digest")?,
        output: row.get::<_, Option<Vec<u8>>>("output").unwrap_or_default(),
        signatures,
        created_at_unix_ms: u64::try_from(row.get::<_, i64>("created_at_ms")).unwrap_or(0),
    })
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // A claim token only has to differ from every other claim's: the std hasher's random keys
    // per process, mixed with a counter, give that without another dependency.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    hasher.finish()
}
