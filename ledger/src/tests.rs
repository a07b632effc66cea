//! The ledger against real redb files in temporary directories.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use avsnode_signer::messages::{
    Address, EcdsaVerifier, ResultCertificate, TaskId, certificate_digest,
};
use proptest::prelude::*;
use redb::ReadableDatabase;

use super::codec::{KEY_LEN, decode_entry, decode_key, decode_value, encode_key, encode_value};
use super::*;

const TS: u32 = 1_700_000_000;

/// The origin most tests sign for.
const ORIGIN: Origin = Origin {
    avs: Address([0xa5; 20]),
    operator_set_id: 7,
};

fn key(n: u8) -> RecordKey {
    RecordKey::new([0x11; 32], &ResultCertificate::Bn254, TaskId([n; 32]))
}

/// The proposal a BN254 key makes for `output` from `ORIGIN`.
fn proposal(task_id: &TaskId, output: &[u8]) -> Proposal {
    proposal_for(ORIGIN, &ResultCertificate::Bn254, task_id, TS, output)
}

fn proposal_for(
    origin: Origin,
    certificate: &ResultCertificate,
    task_id: &TaskId,
    reference_timestamp: u32,
    output: &[u8],
) -> Proposal {
    let (mh, digest) = certificate_digest(certificate, task_id, reference_timestamp, output);
    Proposal {
        origin,
        reference_timestamp,
        message_hash: mh.0,
        digest,
        output: output.to_vec(),
    }
}

fn ecdsa_certificate(verifier: u8, version: &str) -> ResultCertificate {
    let verifier = EcdsaVerifier {
        address: Address([verifier; 20]),
        version: version.into(),
    };
    ResultCertificate::new(avsnode_signer::Scheme::Ecdsa, Some(&verifier)).expect("certificate")
}

/// Stand-in signatures: distinct tags give distinct bytes, like two runs of a randomised signer.
fn sigs(tag: u8) -> Signatures {
    Signatures {
        result: vec![tag; 64],
        auth: vec![tag ^ 0xff; 64],
    }
}

fn open_temp() -> (tempfile::TempDir, EmbeddedLedger) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = EmbeddedLedger::open(dir.path()).expect("open ledger");
    (dir, ledger)
}

/// `commit_signed` of `output` under `key`, signed with `sigs(tag)`.
async fn commit(
    ledger: &EmbeddedLedger,
    key: RecordKey,
    output: &[u8],
    tag: u8,
) -> Result<Record, LedgerError> {
    ledger
        .commit_signed(key, proposal(&key.task_id, output), sigs(tag))
        .await
}

fn assert_conflict(committed: Result<Record, LedgerError>, expected: &RecordKey) -> Refusal {
    match committed {
        Err(LedgerError::Conflict { key, refusal }) => {
            assert_eq!(*key, *expected);
            refusal
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
}

/// Gives `ledger` a record for `key` over `output` with no signatures: the state an older avsnode
/// (which committed before signing) left after a crash. Made the way an operator would carry it
/// over: an export whose signatures are null, imported.
async fn import_unsigned(ledger: &EmbeddedLedger, key: RecordKey, output: &[u8]) -> Record {
    let (_dir, scratch) = open_temp();
    commit(&scratch, key, output, 0xee).await.expect("commit");
    let mut json = Vec::new();
    scratch.export_json(&mut json).expect("export");
    let mut value: serde_json::Value = serde_json::from_slice(&json).expect("json");
    for record in value["records"].as_array_mut().expect("records") {
        record["result_signature"] = serde_json::Value::Null;
        record["auth_signature"] = serde_json::Value::Null;
    }
    let summary = ledger
        .import_json(&mut value.to_string().as_bytes(), &[])
        .expect("import");
    assert_eq!(summary.inserted, 1);
    let record = ledger.lookup(&key).expect("lookup").expect("imported");
    assert_eq!(record.signatures, None);
    record
}

/// 16 concurrent commits of 16 different outputs (so digests) for one task: exactly one is
/// committed, and from then on only its signatures are ever returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_one_of_sixteen_different_digests_wins() {
    const RACERS: u8 = 16;
    let (_dir, ledger) = open_temp();
    for round in 0..20u8 {
        let key = key(round);
        let barrier = Arc::new(tokio::sync::Barrier::new(RACERS.into()));
        let racers: Vec<_> = (0..RACERS)
            .map(|i| {
                let ledger = ledger.clone();
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    let output = vec![round, i];
                    barrier.wait().await;
                    let committed = commit(&ledger, key, &output, i).await;
                    (i, output, committed)
                })
            })
            .collect();

        let mut winners = Vec::new();
        let mut losers = Vec::new();
        for racer in racers {
            let (i, output, committed) = racer.await.expect("racer panicked");
            match committed {
                Ok(record) => winners.push((i, output, record)),
                Err(LedgerError::Conflict { key: refused, .. }) => {
                    assert_eq!(*refused, key);
                    losers.push(output);
                }
                other => panic!("round {round}: unexpected {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one Ok");
        assert_eq!(
            losers.len(),
            usize::from(RACERS - 1),
            "round {round}: all others Conflict"
        );

        let (winner, winning_output, stored) = winners.pop().expect("one winner");
        let winning = proposal(&key.task_id, &winning_output);
        assert_eq!(stored.key, key);
        assert_eq!(stored.digest, *winning.digest.as_bytes());
        assert_eq!(stored.output, winning_output);
        assert_eq!(stored.signatures, Some(sigs(winner)));
        assert_eq!(ledger.lookup(&key).expect("lookup"), Some(stored.clone()));

        // Afterwards: the winner's digest gets the stored record — the winner's signature bytes,
        // whatever was signed this time — and every other digest is refused.
        let retries: Vec<_> = (0..4u8)
            .map(|n| {
                let ledger = ledger.clone();
                let winning = winning.clone();
                tokio::spawn(async move { ledger.commit_signed(key, winning, sigs(100 + n)).await })
            })
            .collect();
        for retry in retries {
            assert_eq!(retry.await.expect("task").expect("retry"), stored);
        }
        for output in &losers {
            assert_conflict(commit(&ledger, key, output, 200).await, &key);
        }
        assert_eq!(ledger.lookup(&key).expect("lookup"), Some(stored));
    }
    assert_eq!(ledger.len().expect("len"), 20);
    // 15 racers and 15 late retries per round.
    assert_eq!(ledger.stats().conflicts, 20 * 30);
}

/// Within one batch a later request sees an earlier one's insert: of two different digests the
/// second is a conflict; of two same-digest commits the second gets the first's signatures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_sees_its_own_earlier_inserts() {
    let (_dir, ledger) = open_temp();
    let key = key(1);
    // Queued back to back (no await in between), so they very likely share a batch; correct
    // either way.
    let a = commit(&ledger, key, b"a", 1);
    let b = commit(&ledger, key, b"b", 2);
    let (a, b) = tokio::join!(a, b);
    let outcomes = [a, b];
    let oks = outcomes.iter().filter(|r| r.is_ok()).count();
    let conflicts = outcomes
        .iter()
        .filter(|r| matches!(r, Err(LedgerError::Conflict { .. })))
        .count();
    assert_eq!((oks, conflicts), (1, 1), "{outcomes:?}");

    let key = self::key(2);
    let a = commit(&ledger, key, b"same", 1);
    let b = commit(&ledger, key, b"same", 2);
    let (a, b) = tokio::join!(a, b);
    let (a, b) = (a.expect("first"), b.expect("second"));
    assert_eq!(a, b);
    assert!(
        a.signatures == Some(sigs(1)) || a.signatures == Some(sigs(2)),
        "{a:?}"
    );
}

/// 16 concurrent commits of the same digest, each with different signature bytes (a randomised
/// signer): all 16 answer with the same bytes, those of the one committed first, and so does every
/// later retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_digest_commits_all_answer_the_first_signatures() {
    const RETRIES: u8 = 16;
    let (_dir, ledger) = open_temp();
    let key = key(2);
    let same = proposal(&key.task_id, b"the one output");

    let calls: Vec<_> = (0..RETRIES)
        .map(|i| {
            let ledger = ledger.clone();
            let same = same.clone();
            tokio::spawn(async move { ledger.commit_signed(key, same, sigs(i)).await })
        })
        .collect();
    let mut records = Vec::new();
    for call in calls {
        records.push(call.await.expect("task").expect("commit"));
    }
    let first = records[0].clone();
    let kept = first.signatures.clone().expect("signed");
    assert!(
        (0..RETRIES).any(|i| sigs(i) == kept),
        "the kept bytes are one caller's"
    );
    let answers: HashSet<_> = records
        .iter()
        .map(|r| r.signatures.clone().expect("signed"))
        .collect();
    assert_eq!(answers.len(), 1, "every call answers with the same bytes");
    for record in &records {
        // The record was inserted once; every later call got that same record.
        assert_eq!(record, &first);
        assert_eq!(record.digest, *same.digest.as_bytes());
        assert_eq!(record.output, b"the one output");
    }

    let calls: Vec<_> = (0..RETRIES)
        .map(|i| {
            let ledger = ledger.clone();
            let same = same.clone();
            tokio::spawn(async move { ledger.commit_signed(key, same, sigs(100 + i)).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.expect("task").expect("retry"), first);
    }
    assert_eq!(ledger.lookup(&key).expect("lookup"), Some(first));
    assert_eq!(ledger.len().expect("len"), 1);
    assert_eq!(ledger.stats().conflicts, 0);
}

#[tokio::test]
async fn records_survive_reopen_and_an_unsigned_record_stays_binding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signed_key = key(3);
    let unsigned_key = key(4);
    let (stored, unsigned) = {
        let ledger = EmbeddedLedger::open(dir.path()).expect("open");
        let stored = commit(&ledger, signed_key, b"done", 3)
            .await
            .expect("commit");
        assert_eq!(stored.signatures, Some(sigs(3)));
        // Left unsigned by an older avsnode's crash between commit and signing.
        let unsigned = import_unsigned(&ledger, unsigned_key, b"first").await;
        drop(ledger);
        (stored, unsigned)
    };

    let ledger = EmbeddedLedger::open(dir.path()).expect("reopen");
    assert_eq!(
        ledger.lookup(&signed_key).expect("lookup"),
        Some(stored.clone())
    );
    assert_eq!(
        commit(&ledger, signed_key, b"done", 30)
            .await
            .expect("retry"),
        stored,
        "the committed signatures survive the reopen and win over new ones"
    );
    assert_conflict(commit(&ledger, signed_key, b"other", 31).await, &signed_key);

    assert_eq!(
        ledger.lookup(&unsigned_key).expect("lookup"),
        Some(unsigned.clone())
    );
    assert_conflict(
        commit(&ledger, unsigned_key, b"second", 40).await,
        &unsigned_key,
    );
    // The conflict left it as it was: unsigned, its digest still binding.
    assert_eq!(
        ledger.lookup(&unsigned_key).expect("lookup"),
        Some(unsigned.clone())
    );
    let finished = commit(&ledger, unsigned_key, b"first", 4)
        .await
        .expect("the same digest completes it");
    assert_eq!(
        finished,
        Record {
            signatures: Some(sigs(4)),
            ..unsigned
        }
    );
    assert_eq!(
        commit(&ledger, unsigned_key, b"first", 41)
            .await
            .expect("retry"),
        finished
    );
    ledger.close().await.expect("close");

    let ledger = EmbeddedLedger::open(dir.path()).expect("reopen after close");
    assert_eq!(
        ledger.lookup(&unsigned_key).expect("lookup"),
        Some(finished)
    );
    assert_eq!(ledger.lookup(&signed_key).expect("lookup"), Some(stored));
}

/// The key is what the digest binds: another signing key or another ECDSA verifier domain is
/// another record; the same task id under one key is one record, whichever AVS or operator set
/// asks.
#[tokio::test]
async fn only_keys_and_verifier_domains_separate_records() {
    let (_dir, ledger) = open_temp();
    let task_id = TaskId([5; 32]);
    let certificates = [
        ecdsa_certificate(0x01, "1"),
        ecdsa_certificate(0x02, "1"),
        ecdsa_certificate(0x01, "2"),
        // A verifier at the zero address is still a verifier: not the same record as none.
        ecdsa_certificate(0x00, "1"),
    ];
    let mut keys: Vec<(RecordKey, ResultCertificate)> = certificates
        .iter()
        .map(|c| (RecordKey::new([0x11; 32], c, task_id), *c))
        .collect();
    keys.push((
        RecordKey::new([0x11; 32], &ResultCertificate::Bn254, task_id),
        ResultCertificate::Bn254,
    ));
    keys.push((
        RecordKey::new([0x22; 32], &ResultCertificate::Bn254, task_id),
        ResultCertificate::Bn254,
    ));
    for (i, (key, certificate)) in keys.iter().enumerate() {
        // Same task id everywhere, a different output under each key: each one may be signed.
        let tag = u8::try_from(i).expect("small");
        let p = proposal_for(ORIGIN, certificate, &task_id, TS, &[tag]);
        let record = ledger
            .commit_signed(*key, p, sigs(tag))
            .await
            .expect("commit");
        assert_eq!(record.signatures, Some(sigs(tag)));
    }
    assert_eq!(ledger.len().expect("len"), keys.len() as u64);
    for (i, (key, certificate)) in keys.iter().enumerate() {
        let record = ledger.lookup(key).expect("lookup").expect("held");
        assert_eq!(record.key, *key);
        assert_eq!(record.output, [u8::try_from(i).expect("small")]);
        let other = proposal_for(ORIGIN, certificate, &task_id, TS, &[0xee]);
        assert_eq!(
            assert_conflict(ledger.commit_signed(*key, other, sigs(0xee)).await, key),
            Refusal::OtherOutput
        );
    }
}

/// A BN254 signature binds neither the AVS nor the operator set: once a task is signed for one
/// origin, no other origin sharing the key gets a record — not with another output, not even with
/// the very same digest (its auth signature would bind the other origin).
#[tokio::test]
async fn another_avs_or_operator_set_never_gets_the_task() {
    let (_dir, ledger) = open_temp();
    let key = key(6);
    let signed = commit(&ledger, key, b"for A", 6).await.expect("commit");
    assert_eq!(signed.origin, ORIGIN);
    let other_avs = Origin {
        avs: Address([0xb6; 20]),
        ..ORIGIN
    };
    let other_set = Origin {
        operator_set_id: 5,
        ..ORIGIN
    };
    for origin in [other_avs, other_set] {
        for output in [&b"for B"[..], b"for A"] {
            let p = proposal_for(origin, &ResultCertificate::Bn254, &key.task_id, TS, output);
            let refusal = assert_conflict(ledger.commit_signed(key, p, sigs(7)).await, &key);
            assert_eq!(
                refusal,
                Refusal::OtherOrigin {
                    recorded: ORIGIN,
                    asked: origin
                }
            );
        }
    }
    // Another reference timestamp with the same output is another digest, and said so.
    let p = proposal_for(
        ORIGIN,
        &ResultCertificate::Bn254,
        &key.task_id,
        TS + 1,
        b"for A",
    );
    assert_eq!(
        assert_conflict(ledger.commit_signed(key, p, sigs(8)).await, &key),
        Refusal::OtherReferenceTimestamp {
            recorded: TS,
            asked: TS + 1
        }
    );
    assert_eq!(ledger.lookup(&key).expect("lookup"), Some(signed));
    assert_eq!(ledger.stats().conflicts, 5);
}

/// `sign_once` refuses before signing, answers a retry from the record without signing, and
/// signs (once) what is new.
#[tokio::test]
async fn sign_once_signs_only_what_the_ledger_allows() {
    let (_dir, ledger) = open_temp();
    let signs = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let claim = |origin: Origin, output: &[u8]| Claim {
        task_id: TaskId([7; 32]),
        origin,
        reference_timestamp: TS,
        output: output.to_vec(),
    };
    let sign = |tag: u8| {
        let signs = Arc::clone(&signs);
        move |_digest| async move {
            signs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, std::convert::Infallible>(sigs(tag))
        }
    };
    let certificate = ResultCertificate::Bn254;
    let first = ledger
        .sign_once([0x11; 32], &certificate, claim(ORIGIN, b"out"), sign(1))
        .await
        .expect("signed");
    assert!(first.fresh);
    assert_eq!(first.record.signatures, Some(sigs(1)));
    let again = ledger
        .sign_once([0x11; 32], &certificate, claim(ORIGIN, b"out"), sign(2))
        .await
        .expect("answered");
    assert!(!again.fresh);
    assert_eq!(again.record, first.record);
    let other = Origin {
        operator_set_id: 8,
        ..ORIGIN
    };
    for (origin, output) in [(ORIGIN, &b"other"[..]), (other, b"out"), (other, b"x")] {
        match ledger
            .sign_once([0x11; 32], &certificate, claim(origin, output), sign(3))
            .await
        {
            Err(SignOnceError::Ledger(LedgerError::Conflict { .. })) => {}
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    // One signing call in all: the retry and the refusals never reached the signer.
    assert_eq!(signs.load(std::sync::atomic::Ordering::SeqCst), 1);
    // A signer failure records nothing.
    let failed = ledger
        .sign_once(
            [0x11; 32],
            &certificate,
            Claim {
                task_id: TaskId([8; 32]),
                ..claim(ORIGIN, b"out")
            },
            |_digest| async { Err::<Signatures, _>("token gone") },
        )
        .await;
    assert!(matches!(failed, Err(SignOnceError::Sign("token gone"))));
    assert_eq!(ledger.len().expect("len"), 1);
}

#[tokio::test]
async fn a_second_open_is_locked_until_the_first_is_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = EmbeddedLedger::open(dir.path()).expect("open");
    let clone = first.clone();

    let err = EmbeddedLedger::open(dir.path()).expect_err("second open must fail");
    assert!(
        matches!(&err, LedgerError::Locked { path } if path == dir.path()),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("another avsnode"), "{message}");
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );

    // A clone keeps the writer (and so the lock) alive.
    drop(first);
    assert!(matches!(
        EmbeddedLedger::open(dir.path()),
        Err(LedgerError::Locked { .. })
    ));
    commit(&clone, key(6), b"x", 6)
        .await
        .expect("commit through the remaining clone");
    drop(clone);

    let reopened = EmbeddedLedger::open(dir.path()).expect("open after the last clone is gone");
    assert_eq!(
        reopened
            .lookup(&key(6))
            .expect("lookup")
            .expect("held")
            .signatures,
        Some(sigs(6))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_batches_concurrent_commits() {
    const TASKS: u32 = 500;
    let (_dir, ledger) = open_temp();
    let before = ledger.stats();
    let started = std::time::Instant::now();
    let calls: Vec<_> = (0..TASKS)
        .map(|i| {
            let ledger = ledger.clone();
            tokio::spawn(async move {
                let mut key = key(0);
                key.task_id.0[..4].copy_from_slice(&i.to_be_bytes());
                let tag = i.to_be_bytes()[3];
                let record = commit(&ledger, key, b"out", tag).await;
                (tag, record)
            })
        })
        .collect();
    for call in calls {
        let (tag, record) = call.await.expect("task");
        assert_eq!(record.expect("commit").signatures, Some(sigs(tag)));
    }
    let elapsed = started.elapsed();
    let after = ledger.stats();
    let commits = after.commits - before.commits;
    let requests = after.requests - before.requests;
    eprintln!(
        "group commit: {requests} records in {commits} commits ({:.1} per commit, largest {}), \
         {:.2} ms per commit, {:.3} ms per record, {elapsed:?} wall",
        requests as f64 / commits as f64,
        after.max_batch,
        after.commit_seconds_total * 1e3 / after.commits as f64,
        after.commit_seconds_total * 1e3 / after.requests as f64,
    );
    assert_eq!(requests, u64::from(TASKS));
    assert!(commits < requests / 2, "{commits} commits for {requests}");
    assert_eq!(after.failed_commits, 0);
    assert_eq!(ledger.len().expect("len"), u64::from(TASKS));

    // For comparison: one record at a time, so one commit each.
    let before = ledger.stats();
    for i in 0..20u32 {
        let mut key = key(1);
        key.task_id.0[..4].copy_from_slice(&i.to_be_bytes());
        commit(&ledger, key, b"out", 1).await.expect("commit");
    }
    let after = ledger.stats();
    eprintln!(
        "sequential: {} records in {} commits, {:.2} ms per commit",
        after.requests - before.requests,
        after.commits - before.commits,
        (after.commit_seconds_total - before.commit_seconds_total) * 1e3
            / (after.commits - before.commits) as f64,
    );
}

#[tokio::test]
async fn prune_removes_only_older_records() {
    let (_dir, ledger) = open_temp();
    for n in 0..3 {
        commit(&ledger, key(n), b"old", n).await.expect("commit");
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cutoff = writer::now_unix_ms();
    tokio::time::sleep(Duration::from_millis(20)).await;
    for n in 10..12 {
        commit(&ledger, key(n), b"new", n).await.expect("commit");
    }
    assert_eq!(ledger.len().expect("len"), 5);
    assert_eq!(ledger.prune(0).expect("prune nothing"), 0);
    assert_eq!(ledger.prune(cutoff).expect("prune"), 3);
    assert_eq!(ledger.len().expect("len"), 2);
    for n in 0..3 {
        assert_eq!(ledger.lookup(&key(n)).expect("lookup"), None);
    }
    for n in 10..12 {
        assert!(ledger.lookup(&key(n)).expect("lookup").is_some());
    }
    assert_eq!(ledger.prune(cutoff).expect("prune again"), 0);
    assert_eq!(ledger.prune(u64::MAX).expect("prune all"), 2);
    assert!(ledger.is_empty().expect("is_empty"));
}

/// Fills a ledger with signed, unsigned and ECDSA-domain records.
async fn sample_records(ledger: &EmbeddedLedger) -> Vec<RecordKey> {
    let mut keys = Vec::new();
    for n in 0..4u8 {
        let output: Vec<u8> = (0..n * 20).collect();
        let key = if n % 2 == 1 {
            let certificate = ecdsa_certificate(n, "1");
            let key = RecordKey::new([0x11; 32], &certificate, TaskId([n; 32]));
            let origin = Origin {
                avs: ORIGIN.avs,
                operator_set_id: u32::MAX - u32::from(n),
            };
            let p = proposal_for(origin, &certificate, &key.task_id, TS, &output);
            ledger.commit_signed(key, p, sigs(n)).await.expect("commit");
            key
        } else if n == 2 {
            import_unsigned(ledger, key(n), &output).await;
            key(n)
        } else {
            commit(ledger, key(n), &output, n).await.expect("commit");
            key(n)
        };
        keys.push(key);
    }
    keys
}

#[tokio::test]
async fn export_then_import_reproduces_every_record() {
    let (_src_dir, src) = open_temp();
    let keys = sample_records(&src).await;
    let mut json = Vec::new();
    assert_eq!(
        src.export_json(&mut json).expect("export"),
        keys.len() as u64
    );

    let value: serde_json::Value = serde_json::from_slice(&json).expect("export is JSON");
    assert_eq!(value["format"], "avsnode-ledger");
    assert_eq!(value["version"], "2");
    let records = value["records"].as_array().expect("records");
    assert_eq!(records.len(), keys.len());
    for record in records {
        for field in [
            "operator_set_id",
            "reference_timestamp",
            "created_at_unix_ms",
        ] {
            assert!(
                record[field].is_string(),
                "{field} must be a string: {record}"
            );
        }
        assert!(record["task_id"].as_str().expect("hex").starts_with("0x"));
    }
    assert!(records.iter().any(|r| r["domain"].is_null()));
    assert!(records.iter().any(|r| r["domain"].is_string()));
    assert!(records.iter().any(|r| r["result_signature"].is_null()));
    assert!(records.iter().any(|r| r["operator_set_id"] == "4294967294"));

    let unsigned_json = json.clone();
    let (_dst_dir, dst) = open_temp();
    let summary = dst.import_json(&mut json.as_slice(), &[]).expect("import");
    assert_eq!(
        summary,
        ImportSummary {
            inserted: 4,
            skipped: 0,
            signatures_added: 0
        }
    );
    for key in &keys {
        assert_eq!(
            dst.lookup(key).expect("lookup"),
            src.lookup(key).expect("lookup"),
            "{key:?}"
        );
    }
    // Importing again changes nothing.
    let again = dst
        .import_json(&mut json.as_slice(), &[])
        .expect("re-import");
    assert_eq!((again.inserted, again.skipped), (0, 4));

    // The unsigned record is signed at the source later: importing that fills in the signatures.
    let unsigned = keys[2];
    let output: Vec<u8> = (0..40).collect();
    let signed = commit(&src, unsigned, &output, 9).await.expect("commit");
    assert_eq!(signed.signatures, Some(sigs(9)));
    let mut json = Vec::new();
    src.export_json(&mut json).expect("export");
    let third = dst.import_json(&mut json.as_slice(), &[]).expect("import");
    assert_eq!(
        third,
        ImportSummary {
            inserted: 0,
            skipped: 3,
            signatures_added: 1
        }
    );
    assert_eq!(
        dst.lookup(&unsigned).expect("lookup"),
        src.lookup(&unsigned).expect("lookup")
    );
    // The imported records bind: a different output for an imported task is refused.
    assert_conflict(commit(&dst, keys[0], b"different", 0).await, &keys[0]);
    // And an imported unsigned record binds and is completed like one left by a crash.
    let (_dir, fresh) = open_temp();
    fresh
        .import_json(&mut unsigned_json.as_slice(), &[])
        .expect("import");
    assert_eq!(
        fresh
            .lookup(&unsigned)
            .expect("lookup")
            .expect("held")
            .signatures,
        None
    );
    assert_conflict(commit(&fresh, unsigned, b"different", 2).await, &unsigned);
    assert_eq!(
        commit(&fresh, unsigned, &output, 2)
            .await
            .expect("commit")
            .signatures,
        Some(sigs(2))
    );
}

#[tokio::test]
async fn a_conflicting_import_is_refused_whole() {
    let (_dir, ledger) = open_temp();
    let keys = sample_records(&ledger).await;
    let mut json = Vec::new();
    ledger.export_json(&mut json).expect("export");

    // Another ledger holds a different output for one of the tasks.
    let (_dir2, other) = open_temp();
    commit(&other, keys[1], b"elsewhere", 1)
        .await
        .expect("commit");
    let held_before = other.lookup(&keys[1]).expect("lookup");

    let err = other
        .import_json(&mut json.as_slice(), &[])
        .expect_err("conflict refused");
    match &err {
        LedgerError::Import(ImportError::Conflicts { task_ids }) => {
            assert_eq!(task_ids, &vec![keys[1].task_id]);
        }
        other => panic!("expected Conflicts, got {other:?}"),
    }
    assert!(
        err.to_string().contains(&keys[1].task_id.to_string()),
        "{err}"
    );
    // Nothing of it was written: the three non-conflicting records are not there either.
    assert_eq!(other.len().expect("len"), 1);
    assert_eq!(other.lookup(&keys[1]).expect("lookup"), held_before);

    // A file that contradicts itself is refused the same way.
    let value: serde_json::Value = serde_json::from_slice(&json).expect("json");
    let mut doubled = value.clone();
    let mut twin = value["records"][0].clone();
    let output = "0x99";
    let task_id: TaskId = twin["task_id"]
        .as_str()
        .expect("str")
        .parse()
        .expect("task id");
    let p = proposal(&task_id, &[0x99]);
    twin["output"] = output.into();
    twin["message_hash"] = format!("0x{}", hex::encode(p.message_hash)).into();
    twin["digest"] = format!("0x{}", hex::encode(p.digest.as_bytes())).into();
    doubled["records"]
        .as_array_mut()
        .expect("records")
        .push(twin);
    let (_dir3, fresh) = open_temp();
    let err = fresh
        .import_json(
            &mut serde_json::to_vec(&doubled).expect("json").as_slice(),
            &[],
        )
        .expect_err("self-conflicting file refused");
    assert!(
        matches!(&err, LedgerError::Import(ImportError::Conflicts { task_ids }) if task_ids == &vec![task_id]),
        "{err:?}"
    );
    assert!(fresh.is_empty().expect("is_empty"));
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[tokio::test]
async fn malformed_imports_are_refused_with_a_clear_reason() {
    let (_dir, ledger) = open_temp();
    sample_records(&ledger).await;
    let mut json = Vec::new();
    ledger.export_json(&mut json).expect("export");
    let good: serde_json::Value = serde_json::from_slice(&json).expect("json");

    let (_dir2, target) = open_temp();
    let import = |text: &str| {
        target
            .import_json(&mut text.as_bytes(), &[])
            .expect_err("refused")
    };

    let err = import("{\"format\":\"avsnode-ledger\",\n\"version\":\"2\",\n\"records\":[{]}");
    assert!(
        matches!(err, LedgerError::Import(ImportError::Json(_))),
        "{err:?}"
    );
    let chain = error_chain(&err);
    assert!(chain.contains("line 3"), "{chain}");

    let mut missing = good.clone();
    missing["records"][0]
        .as_object_mut()
        .expect("object")
        .remove("digest");
    let chain = error_chain(&import(&missing.to_string()));
    assert!(chain.contains("missing field `digest`"), "{chain}");

    let mut number = good.clone();
    number["records"][1]["operator_set_id"] = 7.into();
    let chain = error_chain(&import(&number.to_string()));
    assert!(chain.contains("expected a string"), "{chain}");

    let mut bad_hex = good.clone();
    bad_hex["records"][2]["avs"] = "0xzz".into();
    let err = import(&bad_hex.to_string());
    assert!(
        matches!(
            &err,
            LedgerError::Import(ImportError::Field {
                index: 2,
                field: "avs",
                problem: FieldProblem::NotHex
            })
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("records[2].avs"), "{err}");

    let mut short = good.clone();
    short["records"][0]["task_id"] = "0x1234".into();
    assert!(matches!(
        import(&short.to_string()),
        LedgerError::Import(ImportError::Field {
            field: "task_id",
            problem: FieldProblem::Length {
                expected: 32,
                got: 2
            },
            ..
        })
    ));

    let mut signed_decimal = good.clone();
    signed_decimal["records"][0]["reference_timestamp"] = "+5".into();
    assert!(matches!(
        import(&signed_decimal.to_string()),
        LedgerError::Import(ImportError::Field {
            field: "reference_timestamp",
            problem: FieldProblem::NotDecimal,
            ..
        })
    ));

    let mut tampered = good.clone();
    tampered["records"][0]["output"] = "0xdeadbeef".into();
    assert!(matches!(
        import(&tampered.to_string()),
        LedgerError::Import(ImportError::Field {
            field: "message_hash",
            problem: FieldProblem::MessageHashMismatch,
            ..
        })
    ));

    let mut half = good.clone();
    half["records"][0]["auth_signature"] = serde_json::Value::Null;
    assert!(matches!(
        import(&half.to_string()),
        LedgerError::Import(ImportError::Field {
            problem: FieldProblem::HalfSigned,
            ..
        })
    ));

    let mut unknown = good.clone();
    unknown["records"][0]["extra"] = "1".into();
    let chain = error_chain(&import(&unknown.to_string()));
    assert!(chain.contains("unknown field `extra`"), "{chain}");

    let mut format = good.clone();
    format["format"] = "interchange".into();
    assert!(matches!(
        import(&format.to_string()),
        LedgerError::Import(ImportError::Format { .. })
    ));
    let mut version = good.clone();
    version["version"] = "3".into();
    assert!(matches!(
        import(&version.to_string()),
        LedgerError::Import(ImportError::Version { .. })
    ));

    assert!(target.is_empty().expect("is_empty"));
}

/// Writes raw bytes under a key, bypassing the API (what disk corruption would do).
fn write_raw(ledger: &EmbeddedLedger, key: &[u8], value: &[u8]) {
    let txn = ledger.inner.db.begin_write().expect("begin");
    {
        let mut table = txn.open_table(RECORDS).expect("table");
        table.insert(key, value).expect("insert");
    }
    txn.commit().expect("commit");
}

#[tokio::test]
async fn corrupt_entries_fail_closed_without_panicking() {
    let (_dir, ledger) = open_temp();
    let key = key(8);
    let encoded = encode_key(&key);
    let garbage: [&[u8]; 6] = [
        b"",
        b"\x01garbage",
        b"\x03 a future layout",
        b"\x01 the old layout",
        &[2, 0x80, 0, 0, 0, 0],
        &[0xff; 200],
    ];
    for value in garbage {
        write_raw(&ledger, &encoded, value);
        assert!(
            matches!(ledger.lookup(&key), Err(LedgerError::Corrupt { task_id: Some(t), .. }) if t == key.task_id),
            "{value:?}"
        );
        // `commit_signed` refuses too, and does not overwrite what it cannot read.
        let err = commit(&ledger, key, b"x", 8)
            .await
            .expect_err("corrupt record refused");
        assert!(matches!(err, LedgerError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains(&key.task_id.to_string()), "{err}");
        assert!(matches!(
            ledger.lookup(&key),
            Err(LedgerError::Corrupt { .. })
        ));
        assert!(matches!(
            ledger.export_json(&mut Vec::new()),
            Err(LedgerError::Corrupt { .. })
        ));
        assert!(matches!(
            ledger.prune(u64::MAX),
            Err(LedgerError::Corrupt { .. })
        ));
    }
    // The writer survived every refusal and still serves other tasks.
    let other = self::key(9);
    commit(&ledger, other, b"ok", 9).await.expect("commit");

    // A key of the wrong shape.
    let (_dir2, ledger) = open_temp();
    write_raw(&ledger, b"short key", b"\x02");
    let err = ledger
        .export_json(&mut Vec::new())
        .expect_err("corrupt key refused");
    assert!(
        matches!(
            err,
            LedgerError::Corrupt {
                task_id: None,
                source: DecodeError::KeyLength { .. }
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn inconsistent_proposals_are_refused() {
    let (_dir, ledger) = open_temp();
    let key = key(10);
    let mut p = proposal(&key.task_id, b"real output");
    p.output = b"another output".to_vec();
    let err = ledger
        .commit_signed(key, p, sigs(10))
        .await
        .expect_err("refused");
    assert!(
        matches!(err, LedgerError::InvalidProposal { .. }),
        "{err:?}"
    );
    assert!(ledger.is_empty().expect("is_empty"));
}

#[tokio::test]
async fn close_flushes_and_releases_the_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = EmbeddedLedger::open(dir.path()).expect("open");
    commit(&ledger, key(11), b"o", 11).await.expect("commit");
    ledger.flush().await.expect("flush");
    // One write, one durable commit; the flush has nothing left to commit.
    let stats = ledger.stats();
    assert_eq!(stats.requests, 1, "{stats:?}");
    assert_eq!(stats.commits, 1, "{stats:?}");
    ledger.close().await.expect("close");
    let reopened = EmbeddedLedger::open(dir.path()).expect("lock released by close");
    let record = reopened.lookup(&key(11)).expect("lookup").expect("record");
    assert!(
        record.signatures.is_some(),
        "the committed signatures survived"
    );
    drop(reopened);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let nested = dir.path().join("a/b");
        drop(EmbeddedLedger::open(&nested).expect("open nested"));
        let mode = std::fs::metadata(&nested)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let mode = std::fs::metadata(nested.join(DB_FILE))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the database file is private");
    }
}

fn arb_record() -> impl Strategy<Value = Record> {
    (
        any::<[u8; 32]>(),
        any::<[u8; 20]>(),
        any::<u32>(),
        proptest::option::of(any::<[u8; 32]>()),
        any::<[u8; 32]>(),
        any::<u32>(),
        any::<[u8; 32]>(),
        any::<[u8; 32]>(),
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::option::of((
            proptest::collection::vec(any::<u8>(), 0..100),
            proptest::collection::vec(any::<u8>(), 0..100),
        )),
        any::<u64>(),
    )
        .prop_map(
            |(key_id, avs, set, domain, task, ts, mh, digest, output, sigs, created)| Record {
                key: RecordKey {
                    key_id,
                    domain,
                    task_id: TaskId(task),
                },
                origin: Origin {
                    avs: Address(avs),
                    operator_set_id: set,
                },
                reference_timestamp: ts,
                message_hash: mh,
                digest,
                output,
                signatures: sigs.map(|(result, auth)| Signatures { result, auth }),
                created_at_unix_ms: created,
            },
        )
}

proptest! {
    #[test]
    fn codec_round_trips(record in arb_record()) {
        let key = encode_key(&record.key);
        prop_assert_eq!(key.len(), KEY_LEN);
        let value = encode_value(&record).expect("fits");
        prop_assert_eq!(decode_entry(&key, &value), Ok(record.clone()));
        // Any truncation or extension is detected.
        for cut in 0..value.len() {
            prop_assert!(decode_value(record.key, &value[..cut]).is_err());
        }
        let mut longer = value.clone();
        longer.push(0);
        prop_assert_eq!(decode_value(record.key, &longer), Err(DecodeError::TrailingBytes(1)));
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(
        key in proptest::collection::vec(any::<u8>(), 0..120),
        value in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let _ = decode_key(&key);
        let _ = decode_entry(&key, &value);
    }

    #[test]
    fn distinct_keys_encode_distinctly(a in arb_record(), b in arb_record()) {
        prop_assert_eq!(a.key == b.key, encode_key(&a.key) == encode_key(&b.key));
    }
}

#[test]
fn records_read_from_a_snapshot_match_the_api() {
    // Keeps the raw read path (used by export and prune) honest against `lookup`.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let (_dir, ledger) = open_temp();
    rt.block_on(async {
        commit(&ledger, key(12), b"s", 12).await.expect("commit");
    });
    let txn = ledger.inner.db.begin_read().expect("read");
    let table = txn.open_table(RECORDS).expect("table");
    let value = table
        .get(encode_key(&key(12)).as_slice())
        .expect("get")
        .expect("held");
    assert_eq!(
        decode_entry(&encode_key(&key(12)), value.value()).ok(),
        ledger.lookup(&key(12)).expect("lookup")
    );
}

/// Layout 1 as avsnode before the narrowed key wrote it (codec.rs documents both layouts).
mod legacy {
    use super::*;

    pub(super) const TABLE: redb::TableDefinition<'static, &'static [u8], &'static [u8]> =
        redb::TableDefinition::new("sign_once_records");

    pub(super) fn key(record: &Record, verifier: Option<Address>) -> Vec<u8> {
        let mut out = Vec::with_capacity(109);
        out.extend_from_slice(&record.key.key_id);
        out.extend_from_slice(&record.origin.avs.0);
        out.extend_from_slice(&record.origin.operator_set_id.to_be_bytes());
        match verifier {
            Some(v) => {
                out.push(1);
                out.extend_from_slice(&v.0);
            }
            None => {
                out.push(0);
                out.extend_from_slice(&[0; 20]);
            }
        }
        out.extend_from_slice(&record.key.task_id.0);
        out
    }

    pub(super) fn value(record: &Record) -> Vec<u8> {
        // Layout 2 without the origin, under version byte 1.
        let mut current = encode_value(record).expect("fits");
        current.drain(2..26);
        current[0] = 1;
        current
    }

    /// A ledger directory holding `records` in layout 1 only.
    pub(super) fn ledger(records: &[(Record, Option<Address>)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = redb::Database::create(dir.path().join(DB_FILE)).expect("create");
        let txn = db.begin_write().expect("begin");
        {
            let mut table = txn.open_table(TABLE).expect("table");
            for (record, verifier) in records {
                table
                    .insert(key(record, *verifier).as_slice(), value(record).as_slice())
                    .expect("insert");
            }
        }
        txn.commit().expect("commit");
        dir
    }

    /// A signed record as layout 1 held it (its key's domain is filled in by the migration).
    pub(super) fn record(
        origin: Origin,
        certificate: &ResultCertificate,
        task: u8,
        output: &[u8],
        created: u64,
    ) -> Record {
        let task_id = TaskId([task; 32]);
        let p = proposal_for(origin, certificate, &task_id, TS, output);
        Record {
            key: RecordKey {
                key_id: [0x11; 32],
                domain: None,
                task_id,
            },
            origin,
            reference_timestamp: TS,
            message_hash: p.message_hash,
            digest: *p.digest.as_bytes(),
            output: output.to_vec(),
            signatures: Some(sigs(task)),
            created_at_unix_ms: created,
        }
    }
}

/// An older ledger is migrated on open: BN254 records keep their origin under the narrowed key,
/// ECDSA records get the domain their digest was made under (found among the candidate versions,
/// the configured "1.2.3" hashed whole as the older avsnode did), and the migration is durable.
#[tokio::test]
async fn an_older_ledger_is_migrated_on_open() {
    let verifier = Address([0x44; 20]);
    let old_domain = |version: &str| ResultCertificate::Ecdsa {
        domain_separator: crate::legacy::legacy_domain_separator(verifier, version),
    };
    let bn254 = legacy::record(ORIGIN, &ResultCertificate::Bn254, 1, b"one", 10);
    let ecdsa_v1 = legacy::record(ORIGIN, &old_domain("1"), 2, b"two", 11);
    let ecdsa_whole = legacy::record(ORIGIN, &old_domain("1.2.3"), 3, b"three", 12);
    let dir = legacy::ledger(&[
        (bn254.clone(), None),
        (ecdsa_v1.clone(), Some(verifier)),
        (ecdsa_whole.clone(), Some(verifier)),
    ]);

    // Without the configured version, the "1.2.3" record cannot be placed: nothing changes.
    let err = EmbeddedLedger::open(dir.path()).expect_err("unknown version");
    assert!(
        matches!(&err, LedgerError::UnknownVerifierVersion { task_id, .. } if *task_id == ecdsa_whole.key.task_id),
        "{err:?}"
    );
    assert!(err.to_string().contains("--verifier-version"), "{err}");

    let options = || LedgerOptions {
        migration: MigrationOptions {
            verifier_versions: vec!["1.2.3".into()],
            collisions: Collisions::Refuse,
        },
        ..LedgerOptions::default()
    };
    let ledger = EmbeddedLedger::open_with(dir.path(), options()).expect("migrated");
    assert_eq!(
        ledger.migrated(),
        Some(&MigrationReport {
            migrated: 3,
            dropped: 0
        })
    );
    let expect = |mut record: Record, certificate: &ResultCertificate| {
        record.key = RecordKey::new([0x11; 32], certificate, record.key.task_id);
        record
    };
    let expected = [
        expect(bn254, &ResultCertificate::Bn254),
        expect(ecdsa_v1, &old_domain("1")),
        expect(ecdsa_whole, &old_domain("1.2.3")),
    ];
    for record in &expected {
        assert_eq!(
            ledger.lookup(&record.key).expect("lookup").as_ref(),
            Some(record)
        );
    }
    // The "1" record's domain is the current rule's for version "1.2.3" (its first character):
    // a task signed before is still held for the verifier the node signs under now.
    assert_eq!(
        expected[1].key,
        RecordKey::new(
            [0x11; 32],
            &ecdsa_certificate(0x44, "1.2.3"),
            expected[1].key.task_id
        )
    );
    drop(ledger);
    let reopened = EmbeddedLedger::open(dir.path()).expect("nothing left to migrate");
    assert_eq!(reopened.migrated(), None);
    assert_eq!(reopened.len().expect("len"), 3);
}

/// The same task signed for two origins with one key is reported and never merged: the node's
/// open refuses and changes nothing; `--keep-earliest` keeps the first and writes the other to a
/// file before committing.
#[tokio::test]
async fn colliding_records_stop_the_migration_until_the_operator_decides() {
    let other = Origin {
        avs: Address([0xb6; 20]),
        operator_set_id: 5,
    };
    let first = legacy::record(ORIGIN, &ResultCertificate::Bn254, 1, b"for A", 100);
    let second = legacy::record(other, &ResultCertificate::Bn254, 1, b"for B", 200);
    let alone = legacy::record(ORIGIN, &ResultCertificate::Bn254, 2, b"x", 150);
    let dir = legacy::ledger(&[
        (second.clone(), None),
        (first.clone(), None),
        (alone.clone(), None),
    ]);

    for _ in 0..2 {
        let err = EmbeddedLedger::open(dir.path()).expect_err("collision refused");
        match &err {
            LedgerError::MigrationCollisions { collisions } => {
                assert_eq!(collisions.len(), 1);
                assert_eq!(collisions[0].key.task_id, TaskId([1; 32]));
                let origins: Vec<Origin> = collisions[0].origins.iter().map(|o| o.0).collect();
                assert_eq!(origins, vec![ORIGIN, other]);
            }
            other => panic!("expected MigrationCollisions, got {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains("avsnode ledger migrate"), "{text}");
        assert!(text.contains(&other.to_string()), "{text}");
    }

    let dropped = dir.path().join("dropped.json");
    let ledger = EmbeddedLedger::open_with(
        dir.path(),
        LedgerOptions {
            migration: MigrationOptions {
                verifier_versions: Vec::new(),
                collisions: Collisions::KeepEarliest {
                    dropped_to: dropped.clone(),
                },
            },
            ..LedgerOptions::default()
        },
    )
    .expect("migrated");
    assert_eq!(
        ledger.migrated(),
        Some(&MigrationReport {
            migrated: 2,
            dropped: 1
        })
    );
    let kept = ledger.lookup(&key(1)).expect("lookup").expect("kept");
    assert_eq!(
        (kept.origin, kept.output.as_slice()),
        (ORIGIN, &b"for A"[..])
    );
    // The dropped record is in the file, in the export format.
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&dropped).expect("dropped file")).expect("json");
    let records = file["records"].as_array().expect("records");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["avs"], other.avs.to_string());
    assert_eq!(records[0]["output"], "0x666f722042");
    // From now on the other origin is refused for that task.
    let p = proposal_for(
        other,
        &ResultCertificate::Bn254,
        &TaskId([1; 32]),
        TS,
        b"for B",
    );
    assert!(matches!(
        ledger.commit_signed(key(1), p, sigs(9)).await,
        Err(LedgerError::Conflict {
            refusal: Refusal::OtherOrigin { .. },
            ..
        })
    ));
}

/// A version-1 export (from an older avsnode) imports under the narrowed key; two of its records
/// for one task and key from different origins refuse the import.
#[tokio::test]
async fn a_version_1_export_imports_and_its_collisions_are_refused() {
    let verifier = Address([0x44; 20]);
    let old = ResultCertificate::Ecdsa {
        domain_separator: crate::legacy::legacy_domain_separator(verifier, "1"),
    };
    let ecdsa = legacy::record(ORIGIN, &old, 3, b"e", 1);
    let bn254 = legacy::record(ORIGIN, &ResultCertificate::Bn254, 4, b"b", 2);
    let v1 = |record: &Record, verifier: Option<Address>| {
        serde_json::json!({
            "key_id": format!("0x{}", hex::encode(record.key.key_id)),
            "avs": record.origin.avs.to_string(),
            "operator_set_id": record.origin.operator_set_id.to_string(),
            "verifier": verifier.map(|v| v.to_string()),
            "task_id": record.key.task_id.to_string(),
            "reference_timestamp": record.reference_timestamp.to_string(),
            "message_hash": format!("0x{}", hex::encode(record.message_hash)),
            "digest": format!("0x{}", hex::encode(record.digest)),
            "output": format!("0x{}", hex::encode(&record.output)),
            "result_signature": "0x01",
            "auth_signature": "0x02",
            "created_at_unix_ms": record.created_at_unix_ms.to_string(),
        })
    };
    let file = |records: Vec<serde_json::Value>| {
        serde_json::json!({"format": "avsnode-ledger", "version": "1", "records": records})
            .to_string()
    };
    let (_dir, ledger) = open_temp();
    let summary = ledger
        .import_json(
            &mut file(vec![v1(&ecdsa, Some(verifier)), v1(&bn254, None)]).as_bytes(),
            &[],
        )
        .expect("import");
    assert_eq!(summary.inserted, 2);
    let key = RecordKey::new([0x11; 32], &old, ecdsa.key.task_id);
    assert_eq!(
        ledger.lookup(&key).expect("lookup").expect("held").origin,
        ORIGIN
    );

    let twin = legacy::record(
        Origin {
            operator_set_id: 9,
            ..ORIGIN
        },
        &ResultCertificate::Bn254,
        5,
        b"b",
        3,
    );
    let mut first = twin.clone();
    first.origin = ORIGIN;
    let (_dir, fresh) = open_temp();
    let err = fresh
        .import_json(
            &mut file(vec![v1(&first, None), v1(&twin, None)]).as_bytes(),
            &[],
        )
        .expect_err("two origins for one task");
    assert!(
        matches!(&err, LedgerError::Import(ImportError::Conflicts { task_ids }) if task_ids == &vec![twin.key.task_id]),
        "{err:?}"
    );
    assert!(fresh.is_empty().expect("is_empty"));
}
