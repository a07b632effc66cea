//! The PostgreSQL ledger against a real PostgreSQL 15 server (one per test, on a private port):
//! schema creation and refusal of a newer schema, the claim → seal → record flow between
//! replicas (each a `PgLedger` of its own with its own pool), takeovers after a lease, conflicts,
//! pruning with watermarks, and what a wrong password shows.
//!
//! Without PostgreSQL the tests print why and pass, except under `CI=true`, where they fail.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::sync::Arc;
use std::time::Duration;

use avsnode_ledger::postgres::{Claimed, PgLedger, PgOptions, SCHEMA_VERSION};
use avsnode_ledger::{LedgerError, Origin, RecordKey, Refusal, Signatures};
use avsnode_signer::Scheme;
use avsnode_signer::messages::{Address, ResultCertificate, TaskId, certificate_digest};
use avsnode_tests::postgres::{PASSWORD, Postgres, postgres_available};

const LONG: Duration = Duration::from_secs(30);
const SHORT: Duration = Duration::from_millis(300);

fn options(server: &Postgres, replica: &str) -> PgOptions {
    PgOptions {
        url: server.url(),
        password: Some(PASSWORD.to_owned()),
        pool_size: 4,
        connect_timeout: Duration::from_secs(2),
        statement_timeout: Duration::from_secs(5),
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

/// Seals `output` under `lease` and records signatures made by `by`, as the pipeline does.
async fn finish(
    ledger: &PgLedger,
    lease: &avsnode_ledger::postgres::Lease,
    task: TaskId,
    output: &[u8],
    by: &str,
) -> Result<avsnode_ledger::Record, LedgerError> {
    let (_, digest) = certificate_digest(&certificate(), &task, 1000, output);
    ledger.seal(lease, output, &digest, LONG).await?;
    ledger
        .record(lease, &digest, &signatures(digest.as_bytes(), by))
        .await
}

macro_rules! server {
    () => {{
        if !postgres_available() {
            return;
        }
        Postgres::start()
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_its_schema_once_and_refuses_a_newer_one() {
    let server = server!();
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

/// 16 replicas get the same task at once, each with its own output: exactly one runs it, one
/// digest is signed, and every replica then answers with that one record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_sixteen_racing_replicas_runs_and_signs() {
    let server = server!();
    let mut replicas = Vec::new();
    for i in 0..16 {
        replicas.push(Arc::new(
            PgLedger::connect(&options(&server, &format!("r{i}")))
                .await
                .unwrap(),
        ));
    }
    let task = key(1);
    let mut attempts = Vec::new();
    for (i, replica) in replicas.iter().enumerate() {
        let replica = replica.clone();
        attempts.push(tokio::spawn(async move {
            match replica.claim(&task, origin(1), 1000, LONG).await.unwrap() {
                Claimed::Run(lease) => {
                    let output = format!("output of r{i}").into_bytes();
                    Some(
                        finish(&replica, &lease, task.task_id, &output, &format!("r{i}"))
                            .await
                            .unwrap(),
                    )
                }
                Claimed::Busy | Claimed::Signed(_) => None,
                Claimed::Sealed(..) => panic!("no row was sealed before"),
            }
        }));
    }
    let mut signed = Vec::new();
    for attempt in attempts {
        signed.extend(attempt.await.unwrap());
    }
    assert_eq!(signed.len(), 1, "exactly one replica ran the task");
    let record = &signed[0];
    for replica in &replicas {
        match replica.claim(&task, origin(1), 1000, LONG).await.unwrap() {
            Claimed::Signed(again) => assert_eq!(&again, record, "the same answer everywhere"),
            other => panic!("expected the signed record, got {other:?}"),
        }
    }
    assert_eq!(
        replicas[0].lookup(&task).await.unwrap().as_ref(),
        Some(record)
    );
    assert_eq!(replicas[0].len().await.unwrap(), 1);
}

/// A replica that dies after claiming loses the claim when its lease runs out; another takes it
/// over and runs the task; the first, if it comes back, can seal nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_claim_is_taken_over_and_the_old_owner_releases_nothing() {
    let server = server!();
    let (a, b) = (
        PgLedger::connect(&options(&server, "a")).await.unwrap(),
        PgLedger::connect(&options(&server, "b")).await.unwrap(),
    );
    let task = key(2);
    let Claimed::Run(old) = a.claim(&task, origin(1), 1000, SHORT).await.unwrap() else {
        panic!("the first claim runs");
    };
    assert!(matches!(
        b.claim(&task, origin(1), 1000, LONG).await.unwrap(),
        Claimed::Busy
    ));
    tokio::time::sleep(SHORT * 2).await;
    let Claimed::Run(new) = b.claim(&task, origin(1), 1000, LONG).await.unwrap() else {
        panic!("an expired claim is taken over");
    };
    let error = finish(&a, &old, task.task_id, b"late", "a")
        .await
        .unwrap_err();
    assert!(matches!(error, LedgerError::ClaimLost { .. }), "{error:?}");
    let record = finish(&b, &new, task.task_id, b"taken over", "b")
        .await
        .unwrap();
    assert_eq!(record.output, b"taken over");
    assert_eq!(a.lookup(&task).await.unwrap(), Some(record));
}

/// A replica that dies after sealing: the taker signs the sealed digest again and never gets to
/// run the performer; the old owner's late record is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_row_is_signed_again_from_its_digest_never_run_again() {
    let server = server!();
    let (a, b) = (
        PgLedger::connect(&options(&server, "a")).await.unwrap(),
        PgLedger::connect(&options(&server, "b")).await.unwrap(),
    );
    let task = key(3);
    let Claimed::Run(old) = a.claim(&task, origin(1), 1000, LONG).await.unwrap() else {
        panic!("the first claim runs");
    };
    let (_, digest) = certificate_digest(&certificate(), &task.task_id, 1000, b"sealed output");
    a.seal(&old, b"sealed output", &digest, SHORT)
        .await
        .unwrap();
    assert!(matches!(
        b.claim(&task, origin(1), 1000, LONG).await.unwrap(),
        Claimed::Busy
    ));
    tokio::time::sleep(SHORT * 2).await;
    let Claimed::Sealed(new, sealed) = b.claim(&task, origin(1), 1000, LONG).await.unwrap() else {
        panic!("a sealed row whose lease ran out is taken over as sealed");
    };
    assert_eq!(sealed.output, b"sealed output");
    assert_eq!(&sealed.digest, digest.as_bytes());
    assert!(sealed.signatures.is_none());
    // Another digest cannot be recorded under the sealed one.
    let (_, other) = certificate_digest(&certificate(), &task.task_id, 1000, b"other");
    let error = b
        .record(&new, &other, &signatures(other.as_bytes(), "b"))
        .await
        .unwrap_err();
    assert!(matches!(error, LedgerError::ClaimLost { .. }), "{error:?}");
    let record = b
        .record(&new, &digest, &signatures(digest.as_bytes(), "b"))
        .await
        .unwrap();
    assert_eq!(record.signatures, Some(signatures(digest.as_bytes(), "b")));
    let error = a
        .record(&old, &digest, &signatures(digest.as_bytes(), "a"))
        .await
        .unwrap_err();
    assert!(matches!(error, LedgerError::ClaimLost { .. }), "{error:?}");
    assert_eq!(a.lookup(&task).await.unwrap(), Some(record));
}

/// Another AVS (sharing the key) or another reference timestamp is refused while the task is
/// claimed; once signed, the record refuses them as the redb ledger does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_origins_and_reference_timestamps_are_refused() {
    let server = server!();
    let ledger = PgLedger::connect(&options(&server, "a")).await.unwrap();
    let task = key(4);
    let Claimed::Run(lease) = ledger.claim(&task, origin(1), 1000, LONG).await.unwrap() else {
        panic!("the first claim runs");
    };
    let error = ledger
        .claim(&task, origin(2), 1000, LONG)
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
    let error = ledger.claim(&task, origin(1), 999, LONG).await.unwrap_err();
    assert!(
        matches!(
            error,
            LedgerError::Conflict {
                refusal: Refusal::OtherReferenceTimestamp { .. },
                ..
            }
        ),
        "{error:?}"
    );
    finish(&ledger, &lease, task.task_id, b"out", "a")
        .await
        .unwrap();
    let Claimed::Signed(record) = ledger.claim(&task, origin(2), 1000, LONG).await.unwrap() else {
        panic!("a signed record is returned for the caller's decision");
    };
    assert!(matches!(
        record.answers(&certificate(), origin(2), 1000),
        Err(Refusal::OtherOrigin { .. })
    ));
    assert_eq!(record.answers(&certificate(), origin(1), 1000), Ok(()));
}

/// A claim given up (the performer failed) is free at once for the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_claim_is_free_at_once() {
    let server = server!();
    let (a, b) = (
        PgLedger::connect(&options(&server, "a")).await.unwrap(),
        PgLedger::connect(&options(&server, "b")).await.unwrap(),
    );
    let task = key(5);
    let Claimed::Run(lease) = a.claim(&task, origin(1), 1000, LONG).await.unwrap() else {
        panic!("the first claim runs");
    };
    a.release(&lease).await.unwrap();
    assert!(matches!(
        b.claim(&task, origin(1), 1000, LONG).await.unwrap(),
        Claimed::Run(_)
    ));
}

/// Pruning removes rows below a reference timestamp and raises the key's watermark: a pruned
/// task can never be claimed again, a newer one can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruned_tasks_stay_refused() {
    let server = server!();
    let ledger = PgLedger::connect(&options(&server, "a")).await.unwrap();
    for (n, ts) in [(10u8, 100u32), (11, 200)] {
        let task = key(n);
        let Claimed::Run(lease) = ledger.claim(&task, origin(1), ts, LONG).await.unwrap() else {
            panic!("the first claim runs");
        };
        let (_, digest) = certificate_digest(&certificate(), &task.task_id, ts, b"x");
        ledger.seal(&lease, b"x", &digest, LONG).await.unwrap();
        ledger
            .record(&lease, &digest, &signatures(digest.as_bytes(), "a"))
            .await
            .unwrap();
    }
    assert_eq!(ledger.prune(150).await.unwrap(), 1);
    assert_eq!(ledger.len().await.unwrap(), 1);
    let error = ledger
        .claim(&key(10), origin(1), 100, LONG)
        .await
        .unwrap_err();
    assert!(matches!(error, LedgerError::Pruned { .. }), "{error:?}");
    let error = ledger
        .claim(&key(12), origin(1), 149, LONG)
        .await
        .unwrap_err();
    assert!(matches!(error, LedgerError::Pruned { .. }), "{error:?}");
    assert!(matches!(
        ledger.claim(&key(13), origin(1), 150, LONG).await.unwrap(),
        Claimed::Run(_)
    ));
    // A lower cutoff never lowers the watermark.
    ledger.prune(50).await.unwrap();
    let error = ledger
        .claim(&key(14), origin(1), 120, LONG)
        .await
        .unwrap_err();
    assert!(matches!(error, LedgerError::Pruned { .. }), "{error:?}");
}

/// A wrong password is a clear error that never shows a password; `Debug` of the options hides
/// it; a password in the URL is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_never_show() {
    let server = server!();
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
