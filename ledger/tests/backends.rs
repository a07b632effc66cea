//! The ledger's one interface ([`Ledger`]) on both backends: the same test bodies run against the
//! embedded ledger (redb in a temporary folder) and against PostgreSQL 15 (a private server per
//! test, each "replica" a `PgLedger` with its own pool). Then what only the shared ledger has:
//! schema versions, claims taken over after a lease, sealed digests re-signed, watermarks, TLS,
//! an unreachable database, and passwords that never show.
//!
//! Without PostgreSQL the PostgreSQL variants print why and pass, except under `CI=true`, where
//! they fail.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use avsnode_ledger::postgres::{PgLedger, PgOptions, SCHEMA_VERSION};
use avsnode_ledger::{
    Claim, Claimed, EmbeddedLedger, Ledger, LedgerError, Origin, Record, RecordKey, Refusal,
    SignOnceError, Signatures,
};
use avsnode_signer::Scheme;
use avsnode_signer::messages::{Address, ResultCertificate, TaskId, certificate_digest};
use avsnode_tests::postgres::{PASSWORD, Postgres, postgres_available};
use tokio::time::Instant;

const LEASE: Duration = Duration::from_secs(30);
const SHORT: Duration = Duration::from_millis(300);

/// Where a test's ledgers live.
enum Fixture {
    Embedded(tempfile::TempDir, std::sync::Mutex<Option<Ledger>>),
    Postgres(Postgres),
}

impl Fixture {
    fn embedded() -> Fixture {
        Fixture::Embedded(tempfile::tempdir().unwrap(), std::sync::Mutex::default())
    }

    /// `None` (after saying why) when PostgreSQL is not installed and this is not CI.
    fn postgres() -> Option<Fixture> {
        postgres_available().then(|| Fixture::Postgres(Postgres::start()))
    }

    fn is_postgres(&self) -> bool {
        matches!(self, Fixture::Postgres(_))
    }

    /// A replica's ledger: on PostgreSQL a connection pool of its own; embedded, the one ledger
    /// of the folder (one node per folder).
    async fn replica(&self, name: &str) -> Ledger {
        match self {
            Fixture::Embedded(dir, open) => {
                let mut open = open.lock().unwrap();
                open.get_or_insert_with(|| {
                    Ledger::Embedded(EmbeddedLedger::open(dir.path()).unwrap())
                })
                .clone()
            }
            Fixture::Postgres(server) => {
                Ledger::Postgres(PgLedger::connect(&options(server, name)).await.unwrap())
            }
        }
    }

    /// Closes the ledger (embedded: its last handle) and opens it again.
    async fn reopen(&self, ledger: Ledger) -> Ledger {
        if let Fixture::Embedded(_, open) = self {
            let held = open.lock().unwrap().take();
            drop(held);
        }
        ledger.close().await.unwrap();
        self.replica("reopened").await
    }
}

fn options(server: &Postgres, replica: &str) -> PgOptions {
    PgOptions {
        url: server.url(),
        password: Some(PASSWORD.to_owned()),
        pool_size: 4,
        connect_timeout: Duration::from_secs(1),
        statement_timeout: Duration::from_secs(5),
        ca_file: None,
        replica: replica.to_owned(),
    }
}

fn certificate() -> ResultCertificate {
    ResultCertificate::new(Scheme::Bn254, None).unwrap()
}

fn key(n: u8) -> RecordKey {
    RecordKey::new([7; 32], &certificate(), TaskId([n; 32]))
}

fn origin(avs: u8) -> Origin {
    Origin {
        avs: Address([avs; 20]),
        operator_set_id: 1,
    }
}

/// Signatures a test can tell apart and tie to their digest (the ledger stores bytes only).
fn signatures(digest: &[u8; 32], by: &str) -> Signatures {
    Signatures {
        result: [digest.as_slice(), by.as_bytes()].concat(),
        auth: by.as_bytes().to_vec(),
    }
}

fn wait(d: Duration) -> Instant {
    Instant::now() + d
}

/// What one request does, as the pipeline does it: claim; answer from a signed record; or run
/// (`output`, counted in `runs`) — or take a sealed output — and sign once. Returns the record
/// answered with.
async fn request(
    ledger: &Ledger,
    task: RecordKey,
    from: Origin,
    reference_timestamp: u32,
    output: &[u8],
    by: &str,
    runs: &AtomicUsize,
) -> Result<Record, LedgerError> {
    let claimed = ledger
        .claim(&task, from, reference_timestamp, LEASE, wait(LEASE))
        .await?;
    let (ticket, output) = match claimed {
        Claimed::Signed(record) => return Ok(record),
        Claimed::Busy => unreachable!("Ledger::claim waits a busy task out"),
        Claimed::Run(ticket) => {
            runs.fetch_add(1, Ordering::SeqCst);
            (ticket, output.to_vec())
        }
        Claimed::Sealed(ticket, record) => (ticket, record.output),
    };
    let claim = Claim {
        task_id: task.task_id,
        origin: from,
        reference_timestamp,
        output,
    };
    let by = by.to_owned();
    let signed = ledger
        .sign_once(ticket, &certificate(), claim, |digest| async move {
            Ok::<_, ()>(signatures(digest.as_bytes(), &by))
        })
        .await;
    match signed {
        Ok(signed) => Ok(signed.record),
        Err(SignOnceError::Ledger(e)) => Err(e),
        Err(SignOnceError::Sign(())) => unreachable!("the test signer does not fail"),
    }
}

/// One test body, run on both backends.
macro_rules! both {
    ($body:ident) => {
        mod $body {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                super::$body(super::Fixture::embedded()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(fixture) = super::Fixture::postgres() {
                    super::$body(fixture).await;
                }
            }
        }
    };
}

/// 16 requests for one task, each with its own output, at once (16 replicas on PostgreSQL):
/// one digest is ever signed, every answer is that record, and on PostgreSQL the task ran once.
async fn racing_outputs_sign_one_digest(fixture: Fixture) {
    let mut replicas = Vec::new();
    for i in 0..16 {
        replicas.push(fixture.replica(&format!("r{i}")).await);
    }
    let task = key(1);
    let runs = Arc::new(AtomicUsize::new(0));
    let mut attempts = Vec::new();
    for (i, ledger) in replicas.iter().enumerate() {
        let (ledger, runs) = (ledger.clone(), runs.clone());
        attempts.push(tokio::spawn(async move {
            let output = format!("output of r{i}").into_bytes();
            request(
                &ledger,
                task,
                origin(1),
                1000,
                &output,
                &format!("r{i}"),
                &runs,
            )
            .await
        }));
    }
    let mut answers = Vec::new();
    let mut refused = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(record) => answers.push(record),
            Err(LedgerError::Conflict {
                refusal: Refusal::OtherOutput,
                ..
            }) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    let digests: HashSet<_> = answers.iter().map(|r| r.digest).collect();
    assert_eq!(digests.len(), 1, "one digest signed");
    let first = &answers[0];
    assert!(answers.iter().all(|r| r == first), "byte-identical answers");
    assert_eq!(answers.len() + refused, 16);
    if fixture.is_postgres() {
        assert_eq!(runs.load(Ordering::SeqCst), 1, "one replica ran the task");
        assert_eq!(refused, 0, "the others waited for its record");
    } else {
        assert_eq!(
            replicas[0].conflicts() as usize,
            refused,
            "refusals counted"
        );
    }
    for ledger in &replicas {
        assert_eq!(ledger.lookup(&task).await.unwrap().as_ref(), Some(first));
    }
    assert_eq!(replicas[0].len().await.unwrap(), 1);
}
both!(racing_outputs_sign_one_digest);

/// A retry gets the stored record (nothing signed again), after a reopen too; another origin or
/// reference timestamp is refused and counted.
async fn retries_answer_from_the_record_and_conflicts_are_refused(fixture: Fixture) {
    let ledger = fixture.replica("a").await;
    let runs = AtomicUsize::new(0);
    let task = key(2);
    let first = request(&ledger, task, origin(1), 1000, b"out", "a", &runs)
        .await
        .unwrap();
    let again = request(&ledger, task, origin(1), 1000, b"other out", "b", &runs)
        .await
        .unwrap();
    assert_eq!(again, first, "answered from the record");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let before = ledger.conflicts();
    for (from, ts, expected) in [
        (origin(2), 1000, "OtherOrigin"),
        (origin(1), 999, "OtherReferenceTimestamp"),
    ] {
        let error = request(&ledger, task, from, ts, b"out", "c", &runs)
            .await
            .unwrap_err();
        assert!(format!("{error:?}").contains(expected), "{error:?}");
    }
    assert_eq!(ledger.conflicts(), before + 2, "refusals counted");
    let ledger = fixture.reopen(ledger).await;
    let reopened = request(&ledger, task, origin(1), 1000, b"x", "d", &runs)
        .await
        .unwrap();
    assert_eq!(reopened, first, "the same answer after a reopen");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}
both!(retries_answer_from_the_record_and_conflicts_are_refused);

/// Pruning removes the older tasks and keeps the newer (embedded: by when recorded; PostgreSQL:
/// by reference timestamp — here both orders agree), and on PostgreSQL a pruned task stays
/// refused.
async fn prune_removes_only_older_tasks(fixture: Fixture) {
    let ledger = fixture.replica("a").await;
    let runs = AtomicUsize::new(0);
    let now = u32::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let old = now - 7200;
    for n in 10..13 {
        request(&ledger, key(n), origin(1), old, b"old", "a", &runs)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for n in 20..22 {
        request(&ledger, key(n), origin(1), now + 3600, b"new", "a", &runs)
            .await
            .unwrap();
    }
    assert_eq!(
        ledger.prune(Duration::from_secs(3600 * 24)).await.unwrap(),
        0
    );
    assert_eq!(ledger.prune(Duration::from_secs(1)).await.unwrap(), 3);
    assert_eq!(ledger.len().await.unwrap(), 2);
    for n in 10..13 {
        assert_eq!(ledger.lookup(&key(n)).await.unwrap(), None);
    }
    for n in 20..22 {
        assert!(ledger.lookup(&key(n)).await.unwrap().is_some());
    }
    if fixture.is_postgres() {
        let error = request(&ledger, key(10), origin(1), old, b"old", "a", &runs)
            .await
            .unwrap_err();
        assert!(matches!(error, LedgerError::Pruned { .. }), "{error:?}");
    }
}
both!(prune_removes_only_older_tasks);

/// Export from one backend, import into the other (both ways): the records come across, a second
/// import skips them, the target refuses the old conflicts, and an import that conflicts writes
/// nothing.
async fn export_import_round_trips_across_backends(source: Fixture) {
    let Some(target) = (if source.is_postgres() {
        Some(Fixture::embedded())
    } else {
        Fixture::postgres()
    }) else {
        return;
    };
    let from = source.replica("a").await;
    let runs = AtomicUsize::new(0);
    let mut records = Vec::new();
    for n in 30..33 {
        records.push(
            request(&from, key(n), origin(1), 1000, &[n], "a", &runs)
                .await
                .unwrap(),
        );
    }
    let mut file = Vec::new();
    assert_eq!(from.export_json(&mut file).await.unwrap(), 3);

    let to = target.replica("b").await;
    let summary = to.import_json(&mut file.as_slice(), &[]).await.unwrap();
    assert_eq!(summary.inserted, 3);
    let summary = to.import_json(&mut file.as_slice(), &[]).await.unwrap();
    assert_eq!((summary.inserted, summary.skipped), (0, 3));
    for record in &records {
        assert_eq!(to.lookup(&record.key).await.unwrap().as_ref(), Some(record));
    }
    // The old conflicts are refused on the target: another origin; another output is answered
    // from the imported record, never signed.
    let error = request(&to, key(30), origin(2), 1000, &[30], "b", &runs)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            LedgerError::Conflict {
                refusal: Refusal::OtherOrigin { .. },
                ..
            }
        ),
        "{error:?}"
    );
    let answer = request(&to, key(31), origin(1), 1000, b"another output", "b", &runs)
        .await
        .unwrap();
    assert_eq!(&answer, &records[1]);

    // An export that conflicts with the target (another digest for task 32) writes nothing.
    let conflicting = export_with_conflict(source.is_postgres()).await;
    let error = to
        .import_json(&mut conflicting.as_slice(), &[])
        .await
        .unwrap_err();
    assert!(error.to_string().contains("conflict"), "{error}");
    assert_eq!(to.len().await.unwrap(), 3);
}
both!(export_import_round_trips_across_backends);

/// An export of a fresh ledger (PostgreSQL or embedded) holding a new task 40 and task 32 with
/// another output than `export_import_round_trips_across_backends` signed.
async fn export_with_conflict(postgres: bool) -> Vec<u8> {
    let fixture = if postgres {
        Fixture::postgres().unwrap()
    } else {
        Fixture::embedded()
    };
    let ledger = fixture.replica("c").await;
    let runs = AtomicUsize::new(0);
    for (n, output) in [(40u8, b"new".as_slice()), (32, b"different")] {
        request(&ledger, key(n), origin(1), 1000, output, "c", &runs)
            .await
            .unwrap();
    }
    let mut file = Vec::new();
    ledger.export_json(&mut file).await.unwrap();
    file
}

// What only the shared ledger has.

macro_rules! postgres {
    () => {{
        if !postgres_available() {
            return;
        }
        Postgres::start()
    }};
}

async fn connect(server: &Postgres, name: &str) -> Ledger {
    Ledger::Postgres(PgLedger::connect(&options(server, name)).await.unwrap())
}

fn sign_claim(task: RecordKey, output: &[u8]) -> Claim {
    Claim {
        task_id: task.task_id,
        origin: origin(1),
        reference_timestamp: 1000,
        output: output.to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_its_schema_once_and_refuses_a_newer_one() {
    let server = postgres!();
    let ledger = PgLedger::connect(&options(&server, "a")).await.unwrap();
    assert_eq!(ledger.schema_version().await.unwrap(), SCHEMA_VERSION);
    // Idempotent: a second replica starting finds the schema in place.
    let again = PgLedger::connect(&options(&server, "b")).await.unwrap();
    assert_eq!(again.schema_version().await.unwrap(), SCHEMA_VERSION);

    let newer = SCHEMA_VERSION + 1;
    server.sql(&format!("UPDATE avsnode_schema SET version = {newer}"));
    let error = PgLedger::connect(&options(&server, "c")).await.unwrap_err();
    assert!(
        matches!(error, LedgerError::SchemaTooNew { found, known } if found == newer && known == SCHEMA_VERSION),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("newer than this avsnode knows"),
        "{error}"
    );
}

/// A replica whose claim lapsed (it died, or was cut off) loses it: another takes the task over
/// and runs it; the first can then seal nothing, and its late signatures never leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_claim_is_taken_over_and_the_old_owner_releases_nothing() {
    let server = postgres!();
    let (a, b) = (connect(&server, "a").await, connect(&server, "b").await);
    let task = key(2);
    // A long lease, so no renewal runs while the test lets it lapse by hand.
    let Claimed::Run(old) = a
        .claim(&task, origin(1), 1000, LEASE, wait(SHORT))
        .await
        .unwrap()
    else {
        panic!("the first claim runs");
    };
    // Held while its ticket lives: another replica waits, then gives up.
    let error = b
        .claim(&task, origin(1), 1000, LEASE, wait(SHORT))
        .await
        .unwrap_err();
    assert!(matches!(error, LedgerError::Busy { .. }), "{error:?}");
    // The holder's lease lapses (as a dead or cut-off replica's does).
    server.sql("UPDATE avsnode_sign_once SET lease_until = now() - interval '1 second'");
    let Claimed::Run(new) = b
        .claim(&task, origin(1), 1000, LEASE, wait(LEASE))
        .await
        .unwrap()
    else {
        panic!("a lapsed claim is taken over");
    };
    let late = a
        .sign_once(
            old,
            &certificate(),
            sign_claim(task, b"late"),
            |d| async move { Ok::<_, ()>(signatures(d.as_bytes(), "a")) },
        )
        .await;
    assert!(
        matches!(
            late,
            Err(SignOnceError::Ledger(LedgerError::ClaimLost { .. }))
        ),
        "{late:?}"
    );
    let record = b
        .sign_once(
            new,
            &certificate(),
            sign_claim(task, b"taken over"),
            |d| async move { Ok::<_, ()>(signatures(d.as_bytes(), "b")) },
        )
        .await
        .unwrap()
        .record;
    assert_eq!(record.output, b"taken over");
    assert_eq!(a.lookup(&task).await.unwrap(), Some(record));
}

/// A replica that stops after sealing (before its record commits): the taker signs the sealed
/// output again and never runs the performer; nothing else can be signed for the task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_task_is_signed_again_from_its_digest_never_run_again() {
    let server = postgres!();
    let (a, b) = (connect(&server, "a").await, connect(&server, "b").await);
    let task = key(3);
    let Claimed::Run(old) = a
        .claim(&task, origin(1), 1000, LEASE, wait(SHORT))
        .await
        .unwrap()
    else {
        panic!("the first claim runs");
    };
    let (sealed_tx, sealed_rx) = tokio::sync::oneshot::channel();
    let stuck = tokio::spawn(async move {
        a.sign_once(
            old,
            &certificate(),
            sign_claim(task, b"sealed output"),
            |_| async move {
                let _ = sealed_tx.send(());
                std::future::pending::<Result<Signatures, ()>>().await
            },
        )
        .await
    });
    sealed_rx.await.unwrap();
    stuck.abort();
    server.sql("UPDATE avsnode_sign_once SET lease_until = now() - interval '1 second'");
    let Claimed::Sealed(ticket, sealed) = b
        .claim(&task, origin(1), 1000, LEASE, wait(LEASE))
        .await
        .unwrap()
    else {
        panic!("a sealed task whose lease ran out is taken over as sealed");
    };
    assert_eq!(sealed.output, b"sealed output");
    assert!(sealed.signatures.is_none());
    // Another output cannot be signed under the sealed digest.
    let other = b
        .sign_once(
            ticket,
            &certificate(),
            sign_claim(task, b"other"),
            |d| async move { Ok::<_, ()>(signatures(d.as_bytes(), "b")) },
        )
        .await;
    assert!(
        matches!(
            other,
            Err(SignOnceError::Ledger(LedgerError::Conflict { .. }))
        ),
        "{other:?}"
    );
    server.sql("UPDATE avsnode_sign_once SET lease_until = now() - interval '1 second'");
    let runs = AtomicUsize::new(0);
    let record = request(&b, task, origin(1), 1000, b"never run", "b", &runs)
        .await
        .unwrap();
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "the performer is not run again"
    );
    let (_, digest) = certificate_digest(&certificate(), &task.task_id, 1000, b"sealed output");
    assert_eq!(&record.digest, digest.as_bytes());
    assert_eq!(record.signatures, Some(signatures(digest.as_bytes(), "b")));
}

/// A claim given up (the performer failed) is free at once for the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_claim_is_free_at_once() {
    let server = postgres!();
    let (a, b) = (connect(&server, "a").await, connect(&server, "b").await);
    let task = key(5);
    let Claimed::Run(ticket) = a
        .claim(&task, origin(1), 1000, LEASE, wait(LEASE))
        .await
        .unwrap()
    else {
        panic!("the first claim runs");
    };
    a.release(ticket).await;
    assert!(matches!(
        b.claim(&task, origin(1), 1000, LEASE, wait(SHORT))
            .await
            .unwrap(),
        Claimed::Run(_)
    ));
}

/// The database stopped: calls fail as unavailable within about a second (never hang), and the
/// same ledger serves again once it is back, without reconnecting by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_unavailable_fast_and_service_resumes() {
    let server = postgres!();
    let ledger = connect(&server, "a").await;
    let runs = AtomicUsize::new(0);
    request(&ledger, key(1), origin(1), 1000, b"a", "a", &runs)
        .await
        .unwrap();
    server.stop();
    let started = std::time::Instant::now();
    let error = request(&ledger, key(2), origin(1), 1000, b"b", "a", &runs)
        .await
        .unwrap_err();
    assert!(
        matches!(error, LedgerError::Unavailable { .. }),
        "{error:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(ledger.unavailable().is_some());
    server.start_again();
    let mut resumed = None;
    for _ in 0..100 {
        match request(&ledger, key(2), origin(1), 1000, b"b", "a", &runs).await {
            Ok(record) => {
                resumed = Some(record);
                break;
            }
            Err(LedgerError::Unavailable { .. }) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(resumed.is_some(), "service resumed without a new ledger");
    assert!(ledger.unavailable().is_none());
}

/// TLS with the server's certificate checked against the configured CA and the URL's host
/// (verify-full): a connection works; a CA that did not sign the server's certificate is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verifies_the_server() {
    let server = postgres!();
    let dir = tempfile::tempdir().unwrap();
    let (ours, theirs) = (dir.path().join("ours"), dir.path().join("theirs"));
    std::fs::create_dir(&ours).unwrap();
    std::fs::create_dir(&theirs).unwrap();
    let pki = avsnode_tests::pki::write(&ours, &[]);
    let other = avsnode_tests::pki::write(&theirs, &[]);
    server.enable_tls(&pki.server_cert(), &pki.server_key());
    let mut tls = options(&server, "tls");
    tls.ca_file = Some(pki.ca());
    let ledger = PgLedger::connect(&tls).await.unwrap();
    assert_eq!(ledger.schema_version().await.unwrap(), SCHEMA_VERSION);

    tls.ca_file = Some(other.ca());
    let error = PgLedger::connect(&tls).await.unwrap_err();
    assert!(
        error.to_string().to_lowercase().contains("certificate"),
        "{error}"
    );
}

/// A wrong password is a clear error that never shows a password; `Debug` of the options hides
/// it; a password in the URL is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_never_show() {
    let server = postgres!();
    let mut wrong = options(&server, "a");
    wrong.password = Some("not-the-Password-81".into());
    let error = PgLedger::connect(&wrong).await.unwrap_err();
    let shown = format!("{error} {error:?} {wrong:?}");
    assert!(
        !shown.contains("not-the-Password-81") && !shown.contains(PASSWORD),
        "{shown}"
    );
    assert!(shown.contains("password authentication failed"), "{shown}");

    let mut in_url = options(&server, "a");
    in_url.url = format!(
        "postgresql://avsnode:{PASSWORD}@127.0.0.1:{}/avsnode",
        server.port
    );
    let error = PgLedger::connect(&in_url).await.unwrap_err();
    assert!(
        matches!(error, LedgerError::InvalidDatabaseUrl { .. }),
        "{error:?}"
    );
    assert!(!error.to_string().contains(PASSWORD), "{error}");
}

/// A claim is renewed while its ticket lives: a task running longer than the lease is not taken
/// over (and run a second time) by another replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_claim_outlives_its_lease() {
    let server = postgres!();
    let (a, b) = (connect(&server, "a").await, connect(&server, "b").await);
    let task = key(6);
    let Claimed::Run(_ticket) = a
        .claim(&task, origin(1), 1000, SHORT, wait(SHORT))
        .await
        .unwrap()
    else {
        panic!("the first claim runs");
    };
    tokio::time::sleep(SHORT * 4).await;
    let error = b
        .claim(&task, origin(1), 1000, LEASE, wait(SHORT))
        .await
        .unwrap_err();
    assert!(matches!(error, LedgerError::Busy { .. }), "{error:?}");
}
