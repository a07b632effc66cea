//! The ledger against real redb files in temporary directories.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use avsnode_signer::messages::{Address, TaskId, bn254_certificate_digest, message_hash};
use proptest::prelude::*;
use redb::ReadableDatabase;

use super::codec::{KEY_LEN, decode_entry, decode_key, decode_value, encode_key, encode_value};
use super::*;

const TS: u32 = 1_700_000_000;

fn key(n: u8) -> RecordKey {
    RecordKey {
        key_id: [0x11; 32],
        domain: Domain {
            avs: Address([0xa5; 20]),
            operator_set_id: 7,
            verifier: None,
        },
        task_id: TaskId([n; 32]),
    }
}

fn proposal(task_id: &TaskId, output: &[u8]) -> Proposal {
    let mh = message_hash(task_id, output);
    Proposal {
        reference_timestamp: TS,
        message_hash: mh.0,
        digest: bn254_certificate_digest(TS, &mh),
        output: output.to_vec(),
    }
}

fn sigs(tag: u8) -> Signatures {
    Signatures {
        result: vec![tag; 64],
        auth: vec![tag ^ 0xff; 64],
    }
}

fn open_temp() -> (tempfile::TempDir, Ledger) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = Ledger::open(dir.path()).expect("open ledger");
    (dir, ledger)
}

fn permit(recorded: Result<Recorded, LedgerError>) -> SignPermit {
    match recorded {
        Ok(Recorded::Sign(permit)) => permit,
        other => panic!("expected Sign, got {other:?}"),
    }
}

fn signed(recorded: Result<Recorded, LedgerError>) -> Record {
    match recorded {
        Ok(Recorded::Signed(record)) => record,
        other => panic!("expected Signed, got {other:?}"),
    }
}

fn assert_conflict(recorded: Result<Recorded, LedgerError>, expected: &RecordKey) {
    match recorded {
        Err(LedgerError::Conflict {
            task_id,
            domain,
            key_id,
        }) => {
            assert_eq!(task_id, expected.task_id);
            assert_eq!(domain, expected.domain);
            assert_eq!(key_id, expected.key_id);
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
}

/// 16 concurrent proposals of 16 different outputs for one task: exactly one may be signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_one_of_sixteen_different_digests_wins() {
    const RACERS: usize = 16;
    let (_dir, ledger) = open_temp();
    for round in 0..20u8 {
        let key = key(round);
        let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
        let racers: Vec<_> = (0..RACERS)
            .map(|i| {
                let ledger = ledger.clone();
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    let output = vec![round, u8::try_from(i).expect("small")];
                    barrier.wait().await;
                    (
                        output.clone(),
                        ledger.record(key, proposal(&key.task_id, &output)).await,
                    )
                })
            })
            .collect();

        let mut winners = Vec::new();
        let mut losers = Vec::new();
        for racer in racers {
            let (output, recorded) = racer.await.expect("racer panicked");
            match recorded {
                Ok(Recorded::Sign(permit)) => winners.push((output, permit)),
                Err(LedgerError::Conflict {
                    task_id, domain, ..
                }) => {
                    assert_eq!((task_id, domain), (key.task_id, key.domain));
                    losers.push(output);
                }
                other => panic!("round {round}: unexpected {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one Sign");
        assert_eq!(
            losers.len(),
            RACERS - 1,
            "round {round}: all others Conflict"
        );

        let (winning_output, permit) = winners.pop().expect("one winner");
        let winning = proposal(&key.task_id, &winning_output);
        assert_eq!(permit.digest(), &winning.digest);
        assert_eq!(permit.output(), winning_output.as_slice());
        let stored = permit.store(sigs(round)).await.expect("store");
        assert_eq!(stored.signatures, Some(sigs(round)));
        assert_eq!(stored.digest, *winning.digest.as_bytes());

        // Afterwards: the winner's digest is answered from the ledger, every other one refused.
        for _ in 0..3 {
            let again = signed(ledger.record(key, winning.clone()).await);
            assert_eq!(again, stored);
        }
        for output in &losers {
            assert_conflict(
                ledger.record(key, proposal(&key.task_id, output)).await,
                &key,
            );
        }
        assert_eq!(ledger.lookup(&key).expect("lookup"), Some(stored));
    }
    assert_eq!(ledger.len().expect("len"), 20);
    // 15 racers and 15 late retries per round.
    assert_eq!(ledger.stats().conflicts, 20 * 30);
}

/// Of two different digests for one task in one batch, the second is a conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_sees_its_own_earlier_inserts() {
    let (_dir, ledger) = open_temp();
    let key = key(1);
    // Queued back to back (no await in between), so they very likely share a batch; correct
    // either way.
    let a = ledger.record(key, proposal(&key.task_id, b"a"));
    let b = ledger.record(key, proposal(&key.task_id, b"b"));
    let (a, b) = tokio::join!(a, b);
    let outcomes = [a, b];
    let signs = outcomes
        .iter()
        .filter(|r| matches!(r, Ok(Recorded::Sign(_))))
        .count();
    let conflicts = outcomes
        .iter()
        .filter(|r| matches!(r, Err(LedgerError::Conflict { .. })))
        .count();
    assert_eq!((signs, conflicts), (1, 1), "{outcomes:?}");
}

/// Retries with the same digest: `Sign` before `store` (signing the same digest is safe), then
/// `Signed` with the stored bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_digest_retries_sign_then_replay() {
    const RETRIES: usize = 16;
    let (_dir, ledger) = open_temp();
    let key = key(2);
    let same = proposal(&key.task_id, b"the one output");

    let calls: Vec<_> = (0..RETRIES)
        .map(|_| {
            let ledger = ledger.clone();
            let same = same.clone();
            tokio::spawn(async move { ledger.record(key, same).await })
        })
        .collect();
    let mut permits = Vec::new();
    for call in calls {
        permits.push(permit(call.await.expect("task")));
    }
    assert_eq!(permits.len(), RETRIES);
    let created_at = permits[0].record().created_at_unix_ms;
    for p in &permits {
        assert_eq!(p.digest(), &same.digest);
        assert_eq!(p.record().signatures, None);
        // The record was inserted once; later permits see that same record.
        assert_eq!(p.record().created_at_unix_ms, created_at);
    }

    // All store concurrently with different (randomised-HSM-like) bytes: the first stored wins
    // and every permit is told so.
    let stores: Vec<_> = permits
        .into_iter()
        .enumerate()
        .map(|(i, p)| tokio::spawn(p.store(sigs(u8::try_from(i).expect("small")))))
        .collect();
    let mut answers = HashSet::new();
    for store in stores {
        let record = store.await.expect("task").expect("store");
        answers.insert(record.signatures.clone().expect("signed"));
    }
    assert_eq!(answers.len(), 1, "every store answers with the same bytes");
    let kept = answers.into_iter().next();

    let calls: Vec<_> = (0..RETRIES)
        .map(|_| {
            let ledger = ledger.clone();
            let same = same.clone();
            tokio::spawn(async move { ledger.record(key, same).await })
        })
        .collect();
    for call in calls {
        let record = signed(call.await.expect("task"));
        assert_eq!(record.signatures, kept);
        assert_eq!(record.output, b"the one output");
    }
    assert_eq!(ledger.len().expect("len"), 1);
}

#[tokio::test]
async fn records_survive_reopen_and_an_unsigned_record_stays_binding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signed_key = key(3);
    let crashed_key = key(4);
    let stored = {
        let ledger = Ledger::open(dir.path()).expect("open");
        let p = permit(
            ledger
                .record(signed_key, proposal(&signed_key.task_id, b"done"))
                .await,
        );
        let stored = p.store(sigs(3)).await.expect("store");
        // Committed, then "crash" before signing: the permit is dropped without store.
        let crashed = permit(
            ledger
                .record(crashed_key, proposal(&crashed_key.task_id, b"first"))
                .await,
        );
        drop(crashed);
        drop(ledger);
        stored
    };

    let ledger = Ledger::open(dir.path()).expect("reopen");
    assert_eq!(
        ledger.lookup(&signed_key).expect("lookup"),
        Some(stored.clone())
    );
    assert_eq!(
        signed(
            ledger
                .record(signed_key, proposal(&signed_key.task_id, b"done"))
                .await
        ),
        stored
    );
    assert_conflict(
        ledger
            .record(signed_key, proposal(&signed_key.task_id, b"other"))
            .await,
        &signed_key,
    );

    let unsigned = ledger.lookup(&crashed_key).expect("lookup").expect("held");
    assert_eq!(unsigned.signatures, None);
    assert_conflict(
        ledger
            .record(crashed_key, proposal(&crashed_key.task_id, b"second"))
            .await,
        &crashed_key,
    );
    let again = permit(
        ledger
            .record(crashed_key, proposal(&crashed_key.task_id, b"first"))
            .await,
    );
    assert_eq!(again.record(), &unsigned);
    let finished = again.store(sigs(4)).await.expect("store");
    assert_eq!(finished.signatures, Some(sigs(4)));
    ledger.close().await.expect("close");

    let ledger = Ledger::open(dir.path()).expect("reopen after close");
    assert_eq!(ledger.lookup(&crashed_key).expect("lookup"), Some(finished));
}

#[tokio::test]
async fn domains_and_keys_are_separate_records() {
    let (_dir, ledger) = open_temp();
    let base = key(5);
    let mut other_avs = base;
    other_avs.domain.avs = Address([0xa6; 20]);
    let mut other_set = base;
    other_set.domain.operator_set_id = 8;
    let mut with_verifier = base;
    with_verifier.domain.verifier = Some(Address([0x01; 20]));
    let mut other_verifier = base;
    other_verifier.domain.verifier = Some(Address([0x02; 20]));
    let mut other_key_id = base;
    other_key_id.key_id = [0x22; 32];
    let mut zero_verifier = base;
    // A verifier at the zero address is still a verifier: not the same record as none.
    zero_verifier.domain.verifier = Some(Address([0; 20]));

    let keys = [
        base,
        other_avs,
        other_set,
        with_verifier,
        other_verifier,
        other_key_id,
        zero_verifier,
    ];
    for (i, key) in keys.iter().enumerate() {
        // Same task id everywhere, a different output in each domain: each one may be signed.
        let output = [u8::try_from(i).expect("small")];
        let p = permit(ledger.record(*key, proposal(&key.task_id, &output)).await);
        p.store(sigs(5)).await.expect("store");
    }
    assert_eq!(ledger.len().expect("len"), keys.len() as u64);
    for (i, key) in keys.iter().enumerate() {
        let record = ledger.lookup(key).expect("lookup").expect("held");
        assert_eq!(record.key, *key);
        assert_eq!(record.output, [u8::try_from(i).expect("small")]);
        let other = [0xee];
        assert_conflict(
            ledger.record(*key, proposal(&key.task_id, &other)).await,
            key,
        );
    }
}

#[tokio::test]
async fn a_second_open_is_locked_until_the_first_is_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Ledger::open(dir.path()).expect("open");
    let p = permit(first.record(key(6), proposal(&key(6).task_id, b"x")).await);

    let err = Ledger::open(dir.path()).expect_err("second open must fail");
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

    // A permit keeps the writer (and so the lock) alive.
    drop(first);
    assert!(matches!(
        Ledger::open(dir.path()),
        Err(LedgerError::Locked { .. })
    ));
    p.store(sigs(6))
        .await
        .expect("store after the ledger handle was dropped");

    let reopened = Ledger::open(dir.path()).expect("open after the first is gone");
    assert!(
        reopened
            .lookup(&key(6))
            .expect("lookup")
            .expect("held")
            .signatures
            .is_some()
    );
}

#[test]
fn another_process_is_locked_out() {
    // A real second process: `avsnode ledger export` on a data dir this test holds open.
    let (dir, _ledger) = open_temp();
    let out = std::process::Command::new(avsnode_tests::binary("avsnode"))
        .args(["ledger", "export", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run avsnode");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a second process opened a locked ledger: {stderr}"
    );
    assert!(
        stderr.contains("another avsnode"),
        "unclear message: {stderr}"
    );
    assert!(
        stderr.contains(&dir.path().display().to_string()),
        "message does not name the dir: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_batches_concurrent_records() {
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
                ledger.record(key, proposal(&key.task_id, b"out")).await
            })
        })
        .collect();
    for call in calls {
        drop(permit(call.await.expect("task")));
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
        drop(permit(
            ledger.record(key, proposal(&key.task_id, b"out")).await,
        ));
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
        drop(permit(
            ledger
                .record(key(n), proposal(&key(n).task_id, b"old"))
                .await,
        ));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cutoff = writer::now_unix_ms();
    tokio::time::sleep(Duration::from_millis(20)).await;
    for n in 10..12 {
        let p = permit(
            ledger
                .record(key(n), proposal(&key(n).task_id, b"new"))
                .await,
        );
        p.store(sigs(n)).await.expect("store");
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
async fn sample_records(ledger: &Ledger) -> Vec<RecordKey> {
    let mut keys = Vec::new();
    for n in 0..4u8 {
        let mut key = key(n);
        if n % 2 == 1 {
            key.domain.verifier = Some(Address([n; 20]));
            key.domain.operator_set_id = u32::MAX - u32::from(n);
        }
        let output: Vec<u8> = (0..n * 20).collect();
        let p = permit(ledger.record(key, proposal(&key.task_id, &output)).await);
        if n != 2 {
            p.store(sigs(n)).await.expect("store");
        }
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
    assert_eq!(value["version"], "1");
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
    assert!(records.iter().any(|r| r["verifier"].is_null()));
    assert!(records.iter().any(|r| r["result_signature"].is_null()));
    assert!(records.iter().any(|r| r["operator_set_id"] == "4294967294"));

    let (_dst_dir, dst) = open_temp();
    let summary = dst.import_json(&mut json.as_slice()).expect("import");
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
    let again = dst.import_json(&mut json.as_slice()).expect("re-import");
    assert_eq!((again.inserted, again.skipped), (0, 4));

    // The unsigned record is signed at the source later: importing that fills in the signatures.
    let unsigned = keys[2];
    let p = permit(
        src.record(
            unsigned,
            proposal(&unsigned.task_id, &(0..40).collect::<Vec<u8>>()),
        )
        .await,
    );
    p.store(sigs(9)).await.expect("store");
    let mut json = Vec::new();
    src.export_json(&mut json).expect("export");
    let third = dst.import_json(&mut json.as_slice()).expect("import");
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
    assert_conflict(
        dst.record(keys[0], proposal(&keys[0].task_id, b"different"))
            .await,
        &keys[0],
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
    let p = permit(
        other
            .record(keys[1], proposal(&keys[1].task_id, b"elsewhere"))
            .await,
    );
    p.store(sigs(1)).await.expect("store");
    let held_before = other.lookup(&keys[1]).expect("lookup");

    let err = other
        .import_json(&mut json.as_slice())
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
        .import_json(&mut serde_json::to_vec(&doubled).expect("json").as_slice())
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
            .import_json(&mut text.as_bytes())
            .expect_err("refused")
    };

    let err = import("{\"format\":\"avsnode-ledger\",\n\"version\":\"1\",\n\"records\":[{]}");
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
    version["version"] = "2".into();
    assert!(matches!(
        import(&version.to_string()),
        LedgerError::Import(ImportError::Version { .. })
    ));

    assert!(target.is_empty().expect("is_empty"));
}

/// Writes raw bytes under a key, bypassing the API (what disk corruption would do).
fn write_raw(ledger: &Ledger, key: &[u8], value: &[u8]) {
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
    let garbage: [&[u8]; 5] = [
        b"",
        b"\x01garbage",
        b"\x02 a future layout",
        &[1, 0x80, 0, 0, 0, 0],
        &[0xff; 200],
    ];
    for value in garbage {
        write_raw(&ledger, &encoded, value);
        assert!(
            matches!(ledger.lookup(&key), Err(LedgerError::Corrupt { task_id: Some(t), .. }) if t == key.task_id),
            "{value:?}"
        );
        // `record` refuses too, and does not overwrite what it cannot read.
        let err = ledger
            .record(key, proposal(&key.task_id, b"x"))
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
    let p = permit(ledger.record(other, proposal(&other.task_id, b"ok")).await);
    p.store(sigs(9)).await.expect("store");

    // A key of the wrong shape.
    let (_dir2, ledger) = open_temp();
    write_raw(&ledger, b"short key", b"\x01");
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
    let err = ledger.record(key, p).await.expect_err("refused");
    assert!(
        matches!(err, LedgerError::InvalidProposal { .. }),
        "{err:?}"
    );
    assert!(ledger.is_empty().expect("is_empty"));
}

#[tokio::test]
async fn close_flushes_and_releases_the_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = Ledger::open(dir.path()).expect("open");
    let p = permit(
        ledger
            .record(key(11), proposal(&key(11).task_id, b"o"))
            .await,
    );
    p.store(sigs(11)).await.expect("store");
    ledger.flush().await.expect("flush");
    // The record commits durably; the store commits without an fsync (not counted); the flush
    // is a second durable commit that makes the store durable.
    let stats = ledger.stats();
    assert_eq!(stats.requests, 1, "{stats:?}");
    assert_eq!(stats.commits, 2, "{stats:?}");
    ledger.close().await.expect("close");
    let reopened = Ledger::open(dir.path()).expect("lock released by close");
    let record = reopened.lookup(&key(11)).expect("lookup").expect("record");
    assert!(
        record.signatures.is_some(),
        "the flushed signatures survived"
    );
    drop(reopened);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let nested = dir.path().join("a/b");
        drop(Ledger::open(&nested).expect("open nested"));
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
        proptest::option::of(any::<[u8; 20]>()),
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
            |(key_id, avs, set, verifier, task, ts, mh, digest, output, sigs, created)| Record {
                key: RecordKey {
                    key_id,
                    domain: Domain {
                        avs: Address(avs),
                        operator_set_id: set,
                        verifier: verifier.map(Address),
                    },
                    task_id: TaskId(task),
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
        let p = permit(
            ledger
                .record(key(12), proposal(&key(12).task_id, b"s"))
                .await,
        );
        p.store(sigs(12)).await.expect("store");
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
