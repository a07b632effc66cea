//! The sign-once ledger on PostgreSQL, shared by several replicas of one operator (DESIGN §5,
//! `docs/DESIGN-NOTES.md` "Replicas").
//!
//! # Procedure
//!
//! A task goes through three statements, each one round trip and its own transaction:
//!
//! 1. `PgLedger::claim`, before the performer runs: insert-or-get of the task's row. A new row
//!    is `claimed` by this replica until a short lease runs out, renewed while the claim is held
//!    (so a dead replica's claims are free again within one lease). An existing row
//!    answers (`signed`), waits (`claimed` or `sealed` under another replica's live lease), is
//!    refused (another origin or reference timestamp, or below the key's prune watermark), or —
//!    when its lease has run out — is taken over in the same statement.
//! 2. `PgLedger::seal`, once the output is known and before anything is signed: stores the
//!    output and its digest, only while this replica still holds the claim.
//! 3. `PgLedger::record`, after signing the sealed digest: stores the signatures, only while
//!    this replica still holds the sealed row, and returns the committed record. Only its
//!    signatures may be released.
//!
//! Every call is bounded by the statement timeout on the client side too (a database that does
//! not answer is unavailable, not slow), and after a connection failure calls fail at once for a
//! back-off (100 ms doubling to 2 s) instead of each waiting on a dead server.
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
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use avsnode_signer::messages::{Address, SigningDigest, TaskId, message_hash};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::export::{self, Merge};
use crate::{Claimed, ImportSummary, LedgerError, Origin, Record, RecordKey, Signatures, Ticket};

mod tls;

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

/// The statements of the signing path, written out once (and prepared once per connection).
struct Statements {
    claim: String,
    seal: String,
    record: String,
    renew: String,
    release: String,
    lookup: String,
    held: String,
    export: String,
}

static SQL: LazyLock<Statements> = LazyLock::new(|| {
    // The columns a row is read with, by name in `row_record`.
    let columns = "key_id, domain, task_id, avs, operator_set_id, reference_timestamp, status, \
        message_hash, digest, output, result_signature, auth_signature, created_at_ms";
    let key = "key_id = $1 AND domain = $2 AND task_id = $3";
    Statements {
        claim: format!(
            "WITH mine AS (
                INSERT INTO avsnode_sign_once AS r
                    (key_id, domain, task_id, avs, operator_set_id, reference_timestamp, status,
                     owner, lease_until, created_at_ms)
                SELECT $1::bytea, $2::bytea, $3::bytea, $4::bytea, $5::bigint, $6::bigint,
                       {CLAIMED}, $7::text, now() + make_interval(secs => $8::float8),
                       (extract(epoch from clock_timestamp()) * 1000)::bigint
                WHERE NOT EXISTS (SELECT 1 FROM avsnode_watermark w
                                  WHERE w.key_id = $1 AND $6 < w.below_reference_timestamp)
                ON CONFLICT (key_id, domain, task_id) DO UPDATE
                    SET owner = EXCLUDED.owner, lease_until = EXCLUDED.lease_until
                    WHERE r.status < {SIGNED} AND r.lease_until < now()
                      AND r.avs = EXCLUDED.avs AND r.operator_set_id = EXCLUDED.operator_set_id
                      AND r.reference_timestamp = EXCLUDED.reference_timestamp
                RETURNING {columns}
            )
            SELECT {columns}, true AS mine FROM mine
            UNION ALL
            SELECT {columns}, false AS mine FROM avsnode_sign_once
            WHERE {key} AND NOT EXISTS (SELECT 1 FROM mine)
            UNION ALL
            SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                   NULL
            FROM avsnode_watermark w
            WHERE w.key_id = $1 AND $6 < w.below_reference_timestamp"
        ),
        seal: format!(
            "UPDATE avsnode_sign_once
             SET status = {SEALED}, output = $5, message_hash = $6, digest = $7,
                 lease_until = now() + make_interval(secs => $8)
             WHERE {key} AND owner = $4 AND status = {CLAIMED}"
        ),
        record: format!(
            "UPDATE avsnode_sign_once
             SET status = {SIGNED}, result_signature = $6, auth_signature = $7
             WHERE {key} AND owner = $4 AND status = {SEALED} AND digest = $5
             RETURNING {columns}"
        ),
        renew: format!(
            "UPDATE avsnode_sign_once SET lease_until = now() + make_interval(secs => $5)
             WHERE {key} AND owner = $4 AND status < {SIGNED}"
        ),
        release: format!(
            "UPDATE avsnode_sign_once SET lease_until = now()
             WHERE {key} AND owner = $4 AND status < {SIGNED}"
        ),
        lookup: format!(
            "SELECT {columns} FROM avsnode_sign_once WHERE {key} AND status = {SIGNED}"
        ),
        held: format!(
            "SELECT {columns} FROM avsnode_sign_once WHERE {key} AND status >= {SEALED}
             FOR UPDATE"
        ),
        export: format!(
            "SELECT {columns} FROM avsnode_sign_once WHERE status >= {SEALED}
             ORDER BY key_id, domain, task_id"
        ),
    }
});

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
    /// The longest a statement may take, on the server (`statement_timeout`) and on the client:
    /// past it the database counts as unavailable.
    pub statement_timeout: Duration,
    /// TLS to the database: the CA file the server's certificate must chain to; the server's
    /// name must match the URL's host (`verify-full`). `None`: no TLS.
    pub ca_file: Option<PathBuf>,
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
            .field("ca_file", &self.ca_file)
            .field("replica", &self.replica)
            .finish()
    }
}

/// A claim this replica holds on one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lease {
    key: RecordKey,
    owner: String,
}

impl Lease {
    pub(crate) fn key(&self) -> &RecordKey {
        &self.key
    }
}

/// The ledger on PostgreSQL. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct PgLedger {
    pool: Pool,
    replica: String,
    timeout: Duration,
    breaker: Arc<Breaker>,
    statements: Arc<AtomicU64>,
    conflicts: Arc<AtomicU64>,
}

impl fmt::Debug for PgLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgLedger")
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

/// After a connection failure, calls fail at once until a back-off has passed (100 ms, doubling
/// to 2 s while failures go on), then try the database again; a success closes it.
#[derive(Default)]
struct Breaker(Mutex<Option<Tripped>>);

struct Tripped {
    until: Instant,
    delay: Duration,
    reason: String,
}

impl Breaker {
    const FIRST: Duration = Duration::from_millis(100);
    const MOST: Duration = Duration::from_secs(2);

    fn check(&self) -> Result<(), LedgerError> {
        let state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match &*state {
            Some(t) if Instant::now() < t.until => Err(LedgerError::Unavailable {
                reason: format!(
                    "{} (next try in {} ms)",
                    t.reason,
                    t.until
                        .saturating_duration_since(Instant::now())
                        .as_millis()
                ),
            }),
            _ => Ok(()),
        }
    }

    fn observe<T>(&self, result: &Result<T, LedgerError>) {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Err(LedgerError::Unavailable { reason }) => {
                let delay = state
                    .as_ref()
                    .map_or(Self::FIRST, |t| (t.delay * 2).min(Self::MOST));
                if state.is_none() {
                    tracing::warn!(%reason, "the ledger database is unavailable");
                }
                *state = Some(Tripped {
                    until: Instant::now() + delay,
                    delay,
                    reason: reason.clone(),
                });
            }
            Err(_) => {}
            Ok(_) => {
                if state.take().is_some() {
                    tracing::info!("the ledger database is reachable again");
                }
            }
        }
    }

    fn reason(&self) -> Option<String> {
        let state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        state.as_ref().map(|t| t.reason.clone())
    }
}

/// A statement's error: the connection's (closed, I/O) means the database is unavailable;
/// anything the server answered is a database error.
fn database(op: &'static str) -> impl FnOnce(tokio_postgres::Error) -> LedgerError {
    move |source| {
        if source.as_db_error().is_none() {
            LedgerError::Unavailable {
                reason: format!("{op}: {}", describe(&source)),
            }
        } else {
            LedgerError::Database {
                op,
                reason: describe(&source),
            }
        }
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> LedgerError {
    let reason = match &e {
        deadpool_postgres::PoolError::Backend(e) => describe(e),
        deadpool_postgres::PoolError::Timeout(_) => {
            "no connection within the connect timeout".into()
        }
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

type Client = deadpool_postgres::Object;

impl PgLedger {
    /// Connects and brings the schema to [`SCHEMA_VERSION`] (created on an empty database,
    /// migrated from an older version, in one transaction); refuses a database whose schema is
    /// newer than this avsnode knows.
    pub async fn connect(options: &PgOptions) -> Result<PgLedger, LedgerError> {
        let ledger = PgLedger::pool(options)?;
        ledger.migrate().await?;
        Ok(ledger)
    }

    /// The schema version a database holds (0: none yet), without creating or migrating
    /// anything: what `avsnode check-config` reports.
    pub async fn inspect(options: &PgOptions) -> Result<i32, LedgerError> {
        let ledger = PgLedger::pool(options)?;
        let client = ledger.client().await?;
        let exists = client
            .query_one("SELECT to_regclass('avsnode_schema') IS NOT NULL", &[])
            .await
            .map_err(database("looking for the schema"))?
            .get::<_, bool>(0);
        if !exists {
            return Ok(0);
        }
        drop(client);
        ledger.schema_version().await
    }

    fn pool(options: &PgOptions) -> Result<PgLedger, LedgerError> {
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
            .keepalives_idle(Duration::from_secs(10))
            // A connection whose data goes unacknowledged (a cut network path) is closed by the
            // kernel instead of hanging until the statement timeout each time.
            .tcp_user_timeout(options.connect_timeout + options.statement_timeout)
            .options(format!(
                "-c statement_timeout={}",
                options.statement_timeout.as_millis()
            ))
            .application_name("avsnode");
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &options.ca_file {
            Some(ca_file) => {
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                Manager::from_config(config, tls::connector(ca_file)?, manager_config)
            }
            None => Manager::from_config(config, tokio_postgres::NoTls, manager_config),
        };
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
            timeout: options.statement_timeout,
            breaker: Arc::default(),
            statements: Arc::default(),
            conflicts: Arc::default(),
        };
        Ok(ledger)
    }

    /// Runs one call against the database with a pooled connection: refused at once while the
    /// breaker is open, bounded by the timeouts, and its connection failures trip the breaker.
    /// A connection whose statement timed out is closed, not handed back to the pool (it may
    /// hang on a dead network path).
    async fn call<T>(
        &self,
        op: &'static str,
        body: impl AsyncFnOnce(&Client) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        self.breaker.check()?;
        let result = match self.client().await {
            Ok(client) => match tokio::time::timeout(self.timeout, body(&client)).await {
                Ok(result) => result,
                Err(_) => {
                    // The path to the database is likely dead for every idle connection too.
                    drop(deadpool_postgres::Object::take(client));
                    self.pool.retain(|_, _| false);
                    Err(LedgerError::Unavailable {
                        reason: format!(
                            "no answer from the database within {} ms while {op}",
                            self.timeout.as_millis()
                        ),
                    })
                }
            },
            Err(e) => Err(e),
        };
        self.breaker.observe(&result);
        result
    }

    async fn client(&self) -> Result<Client, LedgerError> {
        self.pool.get().await.map_err(pool_error)
    }

    /// One statement of the signing path, prepared once per connection.
    async fn query(
        &self,
        client: &Client,
        op: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, LedgerError> {
        let statement = client.prepare_cached(sql).await.map_err(database(op))?;
        self.statements.fetch_add(1, Ordering::Relaxed);
        client.query(&statement, params).await.map_err(database(op))
    }

    /// [`PgLedger::query`] for a statement without rows: how many rows it changed.
    async fn execute(
        &self,
        client: &Client,
        op: &'static str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, LedgerError> {
        let statement = client.prepare_cached(sql).await.map_err(database(op))?;
        self.statements.fetch_add(1, Ordering::Relaxed);
        client
            .execute(&statement, params)
            .await
            .map_err(database(op))
    }

    /// Statements of the signing path executed so far (claim, seal, record, renewals, lookups):
    /// each is one round trip to the database.
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// Logs and counts a refusal.
    pub(crate) fn refuse(&self, key: &RecordKey, refusal: crate::Refusal) -> LedgerError {
        self.conflicts.fetch_add(1, Ordering::Relaxed);
        crate::conflict(key, refusal)
    }

    /// Requests refused since connecting because the task is held for another origin or digest.
    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(Ordering::Relaxed)
    }

    /// Why the database is unavailable now, if the last call found it so.
    pub fn unavailable(&self) -> Option<String> {
        self.breaker.reason()
    }

    /// The schema version the database holds (one call: also a health check).
    pub async fn schema_version(&self) -> Result<i32, LedgerError> {
        self.call("reading the schema version", async |client| {
            let row = client
                .query_one("SELECT version FROM avsnode_schema", &[])
                .await
                .map_err(database("reading the schema version"))?;
            Ok(row.get(0))
        })
        .await
    }

    async fn migrate(&self) -> Result<(), LedgerError> {
        let mut client = self.client().await?;
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
    /// for `lease` (the database's clock). See the module doc. Never [`Claimed::Busy`] with a
    /// refusal: a row for another origin or reference timestamp is a conflict.
    pub(crate) async fn claim(
        &self,
        key: &RecordKey,
        origin: Origin,
        reference_timestamp: u32,
        lease: Duration,
    ) -> Result<Claimed, LedgerError> {
        let owner = format!("{}/{:016x}", self.replica, rand_u64());
        let (key_id, domain, task_id) = key_columns(key);
        let (avs, set, ts) = (
            origin.avs.0.to_vec(),
            i64::from(origin.operator_set_id),
            i64::from(reference_timestamp),
        );
        let lease_secs = lease.as_secs_f64();
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
        self.call("claiming a task", async |client| {
            // A row inserted by a transaction that committed after this statement's snapshot is
            // in neither branch: ask again (it is visible to the next statement).
            for _ in 0..3 {
                let rows = self
                    .query(client, "claiming a task", &SQL.claim, &params)
                    .await?;
                let Some(row) = rows
                    .iter()
                    .find(|r| r.get::<_, Option<Vec<u8>>>(0).is_some())
                else {
                    if rows.is_empty() {
                        continue;
                    }
                    // Only the watermark's row: the task is below it.
                    return Err(LedgerError::Pruned {
                        task_id: key.task_id,
                    });
                };
                let record = row_record(row)?;
                let status: i16 = row.get("status");
                if row.get::<_, bool>("mine") {
                    let ticket = Ticket::leased(Lease {
                        key: *key,
                        owner: owner.clone(),
                    });
                    return Ok(match status {
                        SEALED => Claimed::Sealed(ticket.sealed(record.digest), Box::new(record)),
                        _ => Claimed::Run(ticket),
                    });
                }
                if status == SIGNED {
                    return Ok(Claimed::Signed(record));
                }
                record
                    .admits(origin, reference_timestamp)
                    .map_err(|refusal| self.refuse(key, refusal))?;
                return Ok(Claimed::Busy);
            }
            Err(LedgerError::Unavailable {
                reason: format!("the claim of task {} kept racing", key.task_id),
            })
        })
        .await
    }

    /// Step 2: seals `output` and its `digest` in the claimed row, and holds it `hold` more for
    /// signing. [`LedgerError::ClaimLost`] if another replica took the row.
    pub(crate) async fn seal(
        &self,
        lease: &Lease,
        output: &[u8],
        digest: &SigningDigest,
        hold: Duration,
    ) -> Result<(), LedgerError> {
        let (key_id, domain, task_id) = key_columns(&lease.key);
        let hash = message_hash(&lease.key.task_id, output).0.to_vec();
        let digest = digest.as_bytes().to_vec();
        let hold = hold.as_secs_f64();
        let params: [&(dyn ToSql + Sync); 8] = [
            &key_id,
            &domain,
            &task_id,
            &lease.owner,
            &output,
            &hash,
            &digest,
            &hold,
        ];
        let sealed = self
            .call("sealing a task's output", async |client| {
                self.execute(client, "sealing a task's output", &SQL.seal, &params)
                    .await
            })
            .await?;
        if sealed == 1 {
            Ok(())
        } else {
            Err(LedgerError::ClaimLost {
                task_id: lease.key.task_id,
            })
        }
    }

    /// Step 3: stores `signatures` (over the sealed digest) and returns the committed record:
    /// the only signatures that may leave. [`LedgerError::ClaimLost`] if another replica took
    /// the row.
    pub(crate) async fn record(
        &self,
        lease: &Lease,
        digest: &SigningDigest,
        signatures: &Signatures,
    ) -> Result<Record, LedgerError> {
        let (key_id, domain, task_id) = key_columns(&lease.key);
        let digest = digest.as_bytes().to_vec();
        let params: [&(dyn ToSql + Sync); 7] = [
            &key_id,
            &domain,
            &task_id,
            &lease.owner,
            &digest,
            &signatures.result,
            &signatures.auth,
        ];
        let rows = self
            .call("recording a task's signatures", async |client| {
                self.query(
                    client,
                    "recording a task's signatures",
                    &SQL.record,
                    &params,
                )
                .await
            })
            .await?;
        match rows.first() {
            Some(row) => row_record(row),
            None => Err(LedgerError::ClaimLost {
                task_id: lease.key.task_id,
            }),
        }
    }

    /// Holds a claim `hold` longer (a long performer call); false if it is no longer ours.
    pub(crate) async fn renew(&self, lease: &Lease, hold: Duration) -> Result<bool, LedgerError> {
        let (key_id, domain, task_id) = key_columns(&lease.key);
        let hold = hold.as_secs_f64();
        let params: [&(dyn ToSql + Sync); 5] = [&key_id, &domain, &task_id, &lease.owner, &hold];
        self.call("renewing a claim", async |client| {
            let renewed = self
                .execute(client, "renewing a claim", &SQL.renew, &params)
                .await?;
            Ok(renewed == 1)
        })
        .await
    }

    /// Gives a claim up unsigned (the performer or the signer failed): the next request, on any
    /// replica, takes the task over at once instead of waiting for the lease. A sealed row keeps
    /// its digest.
    pub(crate) async fn release(&self, lease: &Lease) -> Result<(), LedgerError> {
        let (key_id, domain, task_id) = key_columns(&lease.key);
        let params: [&(dyn ToSql + Sync); 4] = [&key_id, &domain, &task_id, &lease.owner];
        self.call("releasing a claim", async |client| {
            self.execute(client, "releasing a claim", &SQL.release, &params)
                .await
                .map(drop)
        })
        .await
    }

    /// The signed record of `key`, if there is one.
    pub async fn lookup(&self, key: &RecordKey) -> Result<Option<Record>, LedgerError> {
        let (key_id, domain, task_id) = key_columns(key);
        let params: [&(dyn ToSql + Sync); 3] = [&key_id, &domain, &task_id];
        let rows = self
            .call("reading a record", async |client| {
                self.query(client, "reading a record", &SQL.lookup, &params)
                    .await
            })
            .await?;
        rows.first().map(row_record).transpose()
    }

    /// Removes every row whose reference timestamp is below `below_reference_timestamp`, and
    /// raises each key's watermark to it first, in one transaction: a pruned task is refused by
    /// `PgLedger::claim` for ever after, on every replica. Returns how many rows went.
    pub async fn prune(&self, below_reference_timestamp: u32) -> Result<u64, LedgerError> {
        let mut client = self.client().await?;
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

    /// Rows held (any status).
    pub(crate) async fn len(&self) -> Result<u64, LedgerError> {
        self.call("counting the records", async |client| {
            let row = client
                .query_one("SELECT count(*) FROM avsnode_sign_once", &[])
                .await
                .map_err(database("counting the records"))?;
            Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
        })
        .await
    }

    /// Writes every sealed or signed row in the export format (`export.rs`); a row only claimed
    /// has no digest yet and is left out.
    pub async fn export_json(&self, out: &mut dyn Write) -> Result<u64, LedgerError> {
        let client = self.client().await?;
        let rows = client
            .query(SQL.export.as_str(), &[])
            .await
            .map_err(database("reading the records"))?;
        export::write_records(out, rows.iter().map(row_record))
    }

    /// Merges an export in one transaction, by the same decision as the embedded ledger
    /// (`export::Merge`): nothing is written if any record conflicts with a held one.
    pub async fn import_json(
        &self,
        input: &mut dyn Read,
        verifier_versions: &[String],
    ) -> Result<ImportSummary, LedgerError> {
        let records = export::read(input, verifier_versions)?;
        let mut client = self.client().await?;
        let txn = client
            .transaction()
            .await
            .map_err(database("starting the import"))?;
        let mut summary = ImportSummary::default();
        let mut conflicts = Vec::new();
        for record in records {
            let task_id = record.key.task_id;
            let (key_id, domain, task) = key_columns(&record.key);
            let held = txn
                .query_opt(SQL.held.as_str(), &[&key_id, &domain, &task])
                .await
                .map_err(database("reading a record"))?
                .map(|row| row_record(&row))
                .transpose()?;
            let merge = Merge::of(held, record);
            merge.count(task_id, &mut summary, &mut conflicts);
            let (Merge::Insert(r) | Merge::AddSignatures(r)) = merge else {
                continue;
            };
            let status = if r.signatures.is_some() {
                SIGNED
            } else {
                SEALED
            };
            let (result, auth) = match &r.signatures {
                Some(s) => (Some(s.result.as_slice()), Some(s.auth.as_slice())),
                None => (None, None),
            };
            txn.execute(
                "INSERT INTO avsnode_sign_once
                    (key_id, domain, task_id, avs, operator_set_id, reference_timestamp, status,
                     owner, lease_until, message_hash, digest, output, result_signature,
                     auth_signature, created_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'import', now(), $8, $9, $10, $11, $12, $13)
                 ON CONFLICT (key_id, domain, task_id) DO UPDATE SET
                    avs = EXCLUDED.avs, operator_set_id = EXCLUDED.operator_set_id,
                    reference_timestamp = EXCLUDED.reference_timestamp, status = EXCLUDED.status,
                    owner = EXCLUDED.owner, lease_until = EXCLUDED.lease_until,
                    message_hash = EXCLUDED.message_hash, digest = EXCLUDED.digest,
                    output = EXCLUDED.output, result_signature = EXCLUDED.result_signature,
                    auth_signature = EXCLUDED.auth_signature",
                &[
                    &key_id,
                    &domain,
                    &task,
                    &r.origin.avs.0.as_slice(),
                    &i64::from(r.origin.operator_set_id),
                    &i64::from(r.reference_timestamp),
                    &status,
                    &r.message_hash.as_slice(),
                    &r.digest.as_slice(),
                    &r.output,
                    &result,
                    &auth,
                    &i64::try_from(r.created_at_unix_ms).unwrap_or(i64::MAX),
                ],
            )
            .await
            .map_err(database("importing a record"))?;
        }
        let summary = export::conclude(summary, conflicts)?;
        txn.commit()
            .await
            .map_err(database("committing the import"))?;
        Ok(summary)
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
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}
