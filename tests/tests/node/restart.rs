//! The sign-once ledger across restarts (DESIGN §5): answers survive a SIGTERM and come back byte
//! for byte without the performer; one data directory serves one node at a time.

#![allow(clippy::unwrap_used)]

use std::ffi::OsStr;
use std::time::Duration;

use crate::common::{AVS, AvsSpec, Fixture, SCHEMES, TestNode, avsnode_cli};
use avsnode_aggregator::NewTask;
use avsnode_proto::executor::TaskResult;
use avsnode_proto::stream::stream_event;
use avsnode_signer::Scheme;
use tonic::Code;

/// Submits every task at once (unary) and returns the answers in task order.
async fn submit_all(node: &TestNode, tasks: &[(Scheme, NewTask)]) -> Vec<TaskResult> {
    let client = node.client().await;
    let fixture = node.fixture();
    let calls: Vec<_> = tasks
        .iter()
        .map(|(aggregator, task)| {
            let mut client = client.clone();
            let submission = fixture.sign(*aggregator, task);
            tokio::spawn(async move { client.submit_task(submission).await })
        })
        .collect();
    let mut answers = Vec::with_capacity(tasks.len());
    for (call, (_, task)) in calls.into_iter().zip(tasks) {
        let answer = call
            .await
            .unwrap()
            .unwrap_or_else(|s| panic!("task {}: {s:?}", task.task_id));
        answers.push(answer.into_inner());
    }
    answers
}

/// Twenty tasks signed by a node whose performer answers randomly; SIGTERM (exit 0, promptly);
/// restart on the same data dir with a performer that fails everything: the same twenty tasks get
/// byte-identical answers, unary and streamed — they came from the ledger, not the performer.
/// While the first node runs, a second one on its data dir refuses to start.
#[tokio::test(flavor = "multi_thread")]
async fn answers_survive_a_restart_and_come_from_the_ledger() {
    let fixture = Fixture::new();
    let mut first = TestNode::builder()
        .fixture(fixture.clone())
        .avs(AvsSpec::new(AVS).performer(&["--random-output"]))
        .start();
    let tasks: Vec<(Scheme, NewTask)> = (0..20)
        .map(|i| {
            let aggregator = SCHEMES[(i / 3) % 3];
            let mut task = fixture.task(AVS, SCHEMES[i % 3], &[i as u8, 1]);
            if i % 2 == 0 {
                task.deadline_unix_ms = Some(crate::common::now_ms() + 120_000);
            }
            (aggregator, task)
        })
        .collect();
    let answers = submit_all(&first, &tasks).await;
    for (answer, (_, task)) in answers.iter().zip(&tasks) {
        fixture.verify_random(answer, task).unwrap();
    }

    // One data directory, one node.
    let (status, stderr) = TestNode::builder()
        .fixture(fixture.clone())
        .avs(AvsSpec::new(AVS))
        .run_to_exit();
    assert!(
        !status.success(),
        "a second node on the same data dir ran: {stderr}"
    );
    assert!(
        stderr.contains("another avsnode is using the data directory"),
        "{stderr}"
    );

    let (status, took) = first.stop();
    assert!(status.success(), "SIGTERM: {status}\n{}", first.log());
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");

    let second = TestNode::builder()
        .fixture(fixture.clone())
        .avs(AvsSpec::new(AVS).performer(&["--fail-rate", "1"]))
        .start();
    let _log = second.log_on_panic();
    let again = submit_all(&second, &tasks).await;
    for (i, (before, after)) in answers.iter().zip(&again).enumerate() {
        assert_eq!(
            before, after,
            "task {i} was answered differently after the restart"
        );
    }
    let streamed = second
        .stream(
            tasks
                .iter()
                .map(|(aggregator, task)| fixture.sign(*aggregator, task))
                .collect(),
        )
        .await;
    for event in streamed {
        let Some(stream_event::Kind::Result(result)) = event.kind else {
            panic!("a streamed retry was not answered: {event:?}");
        };
        let before = answers
            .iter()
            .find(|a| a.task_id == result.task_id)
            .unwrap();
        assert_eq!(&result, before);
    }

    // The performer really does fail now: a new task is not signed.
    let task = fixture.task(AVS, Scheme::Ecdsa, &[1]);
    let status = second
        .submit(fixture.sign(Scheme::Ecdsa, &task))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
}

/// A record committed but left unsigned (the state a crash between commit and signing leaves;
/// here made by clearing the signatures of an exported record and importing it into a fresh data
/// dir) is finished from its recorded output, without the performer, and the signatures equal
/// the first ones (every scheme signs deterministically). Before that, the same task id with
/// another reference timestamp, which would need a second digest, is refused: FAILED_PRECONDITION.
#[tokio::test(flavor = "multi_thread")]
async fn an_unsigned_record_is_finished_from_its_output_and_never_signed_twice() {
    let fixture = Fixture::new();
    let mut first = TestNode::builder()
        .fixture(fixture.clone())
        .avs(AvsSpec::new(AVS).performer(&["--random-output"]))
        .start();
    let tasks: Vec<(Scheme, NewTask)> = SCHEMES
        .into_iter()
        .map(|scheme| (scheme, fixture.task(AVS, scheme, &[4, 2])))
        .collect();
    let answers = submit_all(&first, &tasks).await;
    let (status, _) = first.stop();
    assert!(status.success());

    let export = fixture.dir().join("export.json");
    let (status, _, stderr) = avsnode_cli(&[
        OsStr::new("ledger"),
        OsStr::new("export"),
        OsStr::new("--data-dir"),
        fixture.data_dir().as_os_str(),
        OsStr::new("--out"),
        export.as_os_str(),
    ]);
    assert!(status.success(), "ledger export: {stderr}");
    let mut exported: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&export).unwrap()).unwrap();
    let records = exported["records"].as_array_mut().unwrap();
    assert_eq!(records.len(), tasks.len(), "one record per signed task");
    for record in records.iter_mut() {
        record["result_signature"] = serde_json::Value::Null;
        record["auth_signature"] = serde_json::Value::Null;
    }
    let unsigned = fixture.dir().join("unsigned.json");
    std::fs::write(&unsigned, exported.to_string()).unwrap();
    let fresh = fixture.dir().join("fresh-data");
    let (status, stdout, stderr) = avsnode_cli(&[
        OsStr::new("ledger"),
        OsStr::new("import"),
        OsStr::new("--data-dir"),
        fresh.as_os_str(),
        unsigned.as_os_str(),
    ]);
    assert!(status.success(), "ledger import: {stdout}{stderr}");

    let second = TestNode::builder()
        .fixture(fixture.clone())
        .data_dir(&fresh)
        .avs(AvsSpec::new(AVS).performer(&["--fail-rate", "1"]))
        .start();
    let _log = second.log_on_panic();
    // First a re-issue that needs another digest: refused, and the record is untouched.
    for (aggregator, task) in &tasks {
        let mut reissued = task.clone();
        reissued.reference_timestamp -= 10;
        let status = second
            .submit(fixture.sign(*aggregator, &reissued))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    }

    let again = submit_all(&second, &tasks).await;
    for ((before, after), (_, task)) in answers.iter().zip(&again).zip(&tasks) {
        fixture.verify_random(after, task).unwrap();
        assert_eq!(before, after, "{}", task.task_id);
    }
}

/// SIGTERM: a new task on a stream that is already open is refused at once (UNAVAILABLE, shutting
/// down); a task still in the performer when `shutdown_grace` runs out is answered UNAVAILABLE
/// then, not left hanging until the performer finishes; the node exits 0 soon after.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_refuses_new_tasks_and_answers_the_rest_unavailable_after_the_grace() {
    use avsnode_proto::stream::task_stream_client::TaskStreamClient;
    use avsnode_proto::stream::{StreamRequest, stream_request};
    use std::time::Instant;

    let mut node = TestNode::builder()
        .avs(AvsSpec::new(AVS).performer(&["--delay-ms", "6000"]))
        .shutdown_grace("1s")
        .start();
    let fixture = node.fixture().clone();
    let mut client = TaskStreamClient::connect(node.url()).await.unwrap();
    let (sender, outbound) = tokio::sync::mpsc::channel(4);
    let request = |payload: u8| StreamRequest {
        kind: Some(stream_request::Kind::Task(fixture.sign(
            Scheme::Ecdsa,
            &fixture.task(AVS, Scheme::Ecdsa, &[payload]),
        ))),
    };
    sender.send(request(1)).await.unwrap();
    let mut inbound = client
        .open(tokio_stream::wrappers::ReceiverStream::new(outbound))
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let sigterm = Instant::now();
    let stopping = tokio::task::spawn_blocking(move || {
        let stopped = node.stop();
        (stopped, node.log())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    sender.send(request(2)).await.unwrap();

    let mut answers = Vec::new();
    while answers.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(5), inbound.message())
            .await
            .expect("both tasks answered within 5 s of SIGTERM")
            .expect("the stream stays up until both are answered")
            .expect("an event");
        let Some(stream_event::Kind::Rejection(rejection)) = event.kind else {
            panic!("expected a rejection, got {event:?}");
        };
        answers.push((rejection, sigterm.elapsed()));
    }
    for (rejection, _) in &answers {
        assert_eq!(rejection.code, Code::Unavailable as i32, "{rejection:?}");
        assert!(rejection.message.contains("shutting down"), "{rejection:?}");
    }
    // The new task first, at once; the running one at the end of the grace, long before its
    // performer would have finished (6 s).
    let (_, new_after) = &answers[0];
    let (_, running_after) = &answers[1];
    assert!(*new_after < Duration::from_millis(1000), "{answers:?}");
    assert!(
        *running_after >= Duration::from_millis(900) && *running_after < Duration::from_secs(4),
        "{answers:?}"
    );
    let ((status, took), log) = stopping.await.unwrap();
    assert!(status.success(), "{status}\n{log}");
    assert!(took < Duration::from_secs(5), "exit took {took:?}\n{log}");
    assert!(
        log.contains("answering unfinished tasks UNAVAILABLE"),
        "{log}"
    );
}

/// A ledger file exactly as an avsnode before the narrowed sign-once key left it (layout 1: records
/// keyed by key id, AVS, operator set, verifier and task), with `records` unsigned — committed, the
/// signatures lost to a crash — each (AVS, task, output, created at).
fn write_layout_1_ledger(fixture: &Fixture, records: &[(&str, &NewTask, &[u8], u64)]) {
    use avsnode_signer::messages::{ResultCertificate, certificate_digest, keccak256};
    let crate::common::OperatorSetKey {
        public: avsnode_aggregator::OperatorKey::Bn254(public),
        ..
    } = fixture.set(Scheme::Bn254)
    else {
        unreachable!("the fixture's BN254 set has a BN254 key")
    };
    let key_id = keccak256(&public.to_wire());
    std::fs::create_dir_all(fixture.data_dir()).unwrap();
    let db = redb::Database::create(fixture.data_dir().join("ledger.redb")).unwrap();
    let table: redb::TableDefinition<'_, &[u8], &[u8]> =
        redb::TableDefinition::new("sign_once_records");
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(table).unwrap();
        for (avs, task, output, created) in records {
            let mut key = key_id.to_vec();
            key.extend_from_slice(&crate::common::address(avs).0);
            key.extend_from_slice(&task.operator_set_id.to_be_bytes());
            key.extend_from_slice(&[0; 21]); // no verifier
            key.extend_from_slice(&task.task_id.0);
            let (mh, digest) = certificate_digest(
                &ResultCertificate::Bn254,
                &task.task_id,
                task.reference_timestamp,
                output,
            );
            let mut value = vec![1, 0]; // layout version 1, unsigned
            value.extend_from_slice(&task.reference_timestamp.to_be_bytes());
            value.extend_from_slice(&mh.0);
            value.extend_from_slice(digest.as_bytes());
            value.extend_from_slice(&created.to_be_bytes());
            value.extend_from_slice(&u32::try_from(output.len()).unwrap().to_be_bytes());
            value.extend_from_slice(output);
            table.insert(key.as_slice(), value.as_slice()).unwrap();
        }
    }
    txn.commit().unwrap();
}

/// Upgrading from an avsnode that keyed its ledger by AVS and operator set: a task recorded for
/// two AVSs with one BN254 key (the double signing DESIGN §5 now forbids) stops the node at start,
/// naming both, until the operator decides with `avsnode ledger migrate --keep-earliest
/// --dropped-to FILE`. Then the node starts; the earliest AVS's task is completed from its record
/// (signed, verifying), the other AVS is refused, and a record without a collision migrated too.
#[tokio::test(flavor = "multi_thread")]
async fn an_older_ledger_with_one_task_for_two_avss_stops_the_node_until_the_operator_decides() {
    const AVS_B: &str = "0x000000000000000000000000000000000000b0b0";
    let fixture = Fixture::new();
    let task = fixture.task(AVS, Scheme::Bn254, &[3]);
    let for_b = NewTask {
        avs: crate::common::address(AVS_B),
        payload: vec![4],
        ..task.clone()
    };
    let alone = fixture.task(AVS, Scheme::Bn254, &[5]);
    let square = |p: &[u8]| avsnode_example_performer::square(p).unwrap();
    write_layout_1_ledger(
        &fixture,
        &[
            (AVS, &task, &square(&task.payload), 1_000),
            (AVS_B, &for_b, &square(&for_b.payload), 2_000),
            (AVS, &alone, &square(&alone.payload), 3_000),
        ],
    );
    let builder = || {
        TestNode::builder()
            .fixture(fixture.clone())
            .avs(AvsSpec::new(AVS))
            .avs(AvsSpec::new(AVS_B))
    };

    let (status, stderr) = builder().run_to_exit();
    assert!(!status.success(), "{stderr}");
    for needed in [
        "avsnode ledger migrate",
        "--keep-earliest",
        &format!("AVS {AVS} operator set 1"),
        &format!("AVS {AVS_B} operator set 1"),
        &task.task_id.to_string(),
    ] {
        assert!(stderr.contains(needed), "{needed:?} missing:\n{stderr}");
    }
    let data_dir = fixture.data_dir();
    let dropped = fixture.dir().join("dropped.json");
    let (status, _, stderr) = avsnode_cli(&[
        OsStr::new("ledger"),
        OsStr::new("export"),
        OsStr::new("--data-dir"),
        data_dir.as_os_str(),
    ]);
    assert!(!status.success(), "export of an undecided ledger: {stderr}");
    let (status, stdout, stderr) = avsnode_cli(&[
        OsStr::new("ledger"),
        OsStr::new("migrate"),
        OsStr::new("--data-dir"),
        data_dir.as_os_str(),
        OsStr::new("--keep-earliest"),
        OsStr::new("--dropped-to"),
        dropped.as_os_str(),
    ]);
    assert!(status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("migrated 2 records"), "{stdout}");
    assert!(stdout.contains("dropped 1"), "{stdout}");
    let dropped: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&dropped).unwrap()).unwrap();
    assert_eq!(dropped["records"][0]["avs"], AVS_B);

    let node = builder().start();
    let _log = node.log_on_panic();
    for task in [&task, &alone] {
        let result = node
            .submit(fixture.sign(Scheme::Ecdsa, task))
            .await
            .unwrap();
        fixture.assert_verifies(&result, task);
    }
    let refused = node
        .submit(fixture.sign(Scheme::Ecdsa, &for_b))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused
            .message()
            .contains(&format!("for AVS {AVS} operator set 1, not AVS {AVS_B}")),
        "{refused:?}"
    );
}
