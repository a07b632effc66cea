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

/// Stand-in signatures: distinct tags give distinct bytes, like two runs of a randomised signer.
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

/// `commit_signed` of `output` under `key`, signed with `sigs(tag)`.
async fn commit(
    ledger: &Ledger,
    key: RecordKey,
    output: &[u8],
    tag: u8,
) -> Result<Record, LedgerError> {
    ledger
        .commit_signed(key, proposal(&key.task_id, output), sigs(tag))
        .await
}

fn assert_conflict(committed: Result<Record, LedgerError>, expected: &RecordKey) {
    match committed {
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

/// Gives `ledger` a record for `key` over `output` with no signatures: the state an older avsnode
/// (which committed before signing) left after a crash. Made the way an operator would carry it
/// over: an export whose signatures are null, imported.
async fn import_unsigned(ledger: &Ledger, key: RecordKey, output: &[u8]) -> Record {
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
        .import_json(&mut value.to_string().as_bytes())
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
                Err(LedgerError::Conflict {
                    task_id, domain, ..
                }) => {
                    assert_eq!((task_id, domain), (key.task_id, key.domain));
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
        let ledger = Ledger::open(dir.path()).expect("open");
        let stored = commit(&ledger, signed_key, b"done", 3)
            .await
            .expect("commit");
        assert_eq!(stored.signatures, Some(sigs(3)));
        // Left unsigned by an older avsnode's crash between commit and signing.
        let unsigned = import_unsigned(&ledger, unsigned_key, b"first").await;
        drop(ledger);
        (stored, unsigned)
    };

    let ledger = Ledger::open(dir.path()).expect("reopen");
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

    let ledger = Ledger::open(dir.path()).expect("reopen after close");
    assert_eq!(
        ledger.lookup(&unsigned_key).expect("lookup"),
        Some(finished)
    );
    assert_eq!(ledger.lookup(&signed_key).expect("lookup"), Some(stored));
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
        let tag = u8::try_from(i).expect("small");
        let record = commit(&ledger, *key, &[tag], tag).await.expect("commit");
        assert_eq!(record.signatures, Some(sigs(tag)));
    }
    assert_eq!(ledger.len().expect("len"), keys.len() as u64);
    for (i, key) in keys.iter().enumerate() {
        let record = ledger.lookup(key).expect("lookup").expect("held");
        assert_eq!(record.key, *key);
        assert_eq!(record.output, [u8::try_from(i).expect("small")]);
        assert_conflict(commit(&ledger, *key, &[0xee], 0xee).await, key);
    }
}

#[tokio::test]
async fn a_second_open_is_locked_until_the_first_is_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Ledger::open(dir.path()).expect("open");
    let clone = first.clone();

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

    // A clone keeps the writer (and so the lock) alive.
    drop(first);
    assert!(matches!(
        Ledger::open(dir.path()),
        Err(LedgerError::Locked { .. })
    ));
    commit(&clone, key(6), b"x", 6)
        .await
        .expect("commit through the remaining clone");
    drop(clone);

    let reopened = Ledger::open(dir.path()).expect("open after the last clone is gone");
    assert_eq!(
        reopened
            .lookup(&key(6))
            .expect("lookup")
            .expect("held")
            .signatures,
        Some(sigs(6))
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
async fn sample_records(ledger: &Ledger) -> Vec<RecordKey> {
    let mut keys = Vec::new();
    for n in 0..4u8 {
        let mut key = key(n);
        if n % 2 == 1 {
            key.domain.verifier = Some(Address([n; 20]));
            key.domain.operator_set_id = u32::MAX - u32::from(n);
        }
        let output: Vec<u8> = (0..n * 20).collect();
        if n == 2 {
            import_unsigned(ledger, key, &output).await;
        } else {
            commit(ledger, key, &output, n).await.expect("commit");
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

    let unsigned_json = json.clone();
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
    let output: Vec<u8> = (0..40).collect();
    let signed = commit(&src, unsigned, &output, 9).await.expect("commit");
    assert_eq!(signed.signatures, Some(sigs(9)));
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
    assert_conflict(commit(&dst, keys[0], b"different", 0).await, &keys[0]);
    // And an imported unsigned record binds and is completed like one left by a crash.
    let (_dir, fresh) = open_temp();
    fresh
        .import_json(&mut unsigned_json.as_slice())
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
    let ledger = Ledger::open(dir.path()).expect("open");
    commit(&ledger, key(11), b"o", 11).await.expect("commit");
    ledger.flush().await.expect("flush");
    // One write, one durable commit; the flush has nothing left to commit.
    let stats = ledger.stats();
    assert_eq!(stats.requests, 1, "{stats:?}");
    assert_eq!(stats.commits, 1, "{stats:?}");
    ledger.close().await.expect("close");
    let reopened = Ledger::open(dir.path()).expect("lock released by close");
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
