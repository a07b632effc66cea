//! The node end to end: the real `avsnode run` binary and example performer, an aggregator client
//! over real sockets, and every answer checked as a chain would check it (DESIGN §2–§5).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::{AVS, AvsSpec, SCHEMES, TestNode, now_ms};
use avsnode_proto::executor::TaskResult;
use avsnode_proto::stream::stream_event;
use avsnode_signer::Scheme;

/// An AVS whose performer takes 300 ms and returns a different output on every execution.
const RANDOM_SLOW_AVS: &str = "0x00000000000000000000000000000000000005a1";

/// One node for the tests that do not change its settings: the default AVS, and one with a
/// slow, nondeterministic performer.
fn node() -> &'static TestNode {
    static NODE: OnceLock<TestNode> = OnceLock::new();
    NODE.get_or_init(|| {
        let fixture = crate::common::Fixture::new();
        let log = random_slow_log(&fixture);
        TestNode::builder()
            .fixture(fixture.clone())
            .avs(AvsSpec::new(AVS))
            .avs(AvsSpec::new(RANDOM_SLOW_AVS).performer(&[
                "--random-output",
                "--delay-ms",
                "300",
                "--task-log",
                &log.display().to_string(),
            ]))
            .start()
    })
}

/// Where the random, slow performer logs each task it runs.
fn random_slow_log(fixture: &crate::common::Fixture) -> std::path::PathBuf {
    fixture.dir().join("random-slow-executions")
}

/// How many times the random, slow performer ran `task`.
fn executions(node: &TestNode, task: &avsnode_aggregator::NewTask) -> usize {
    let wire = task.task_id.to_wire_string();
    std::fs::read_to_string(random_slow_log(node.fixture()))
        .unwrap_or_default()
        .lines()
        .filter(|line| *line == wire)
        .count()
}

/// Every aggregator scheme × every operator-set scheme, as a version-1 (Hourglass) task and as a
/// version-1001 task with a signed deadline: each answer echoes the task and verifies.
#[tokio::test(flavor = "multi_thread")]
async fn every_aggregator_scheme_with_every_operator_set_scheme() {
    let node = node();
    let _log = node.log_on_panic();
    let fixture = node.fixture();
    let mut checked = 0;
    for aggregator in SCHEMES {
        for set in SCHEMES {
            for deadline in [None, Some(now_ms() + 30_000)] {
                let mut task = fixture.task(AVS, set, &(checked as u64 + 3).to_be_bytes());
                task.deadline_unix_ms = deadline;
                let submission = fixture.sign(aggregator, &task);
                assert_eq!(
                    submission.version,
                    if deadline.is_some() { 1001 } else { 1 }
                );
                let result = node
                    .submit(submission.clone())
                    .await
                    .unwrap_or_else(|s| panic!("{aggregator} → {set}, {deadline:?}: {s}"));
                fixture.verify(&result, &task).unwrap_or_else(|e| {
                    panic!(
                        "{aggregator} aggregator → {set} operator set, deadline {deadline:?}: {e}"
                    )
                });
                assert_eq!(result.task_id, submission.task_id);
                assert_eq!(result.operator_address, fixture.operator.to_string());
                assert_eq!(result.avs_address, AVS);
                assert_eq!(result.operator_set_id, fixture.set(set).id);
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 18);
}

/// The task id is 32 bytes however it is spelt: an upper-case id is echoed as sent, and the
/// lower-case spelling is the same task (answered from the ledger with the same signatures).
#[tokio::test(flavor = "multi_thread")]
async fn task_ids_are_case_insensitive_and_echoed_as_sent() {
    let node = node();
    let _log = node.log_on_panic();
    let fixture = node.fixture();
    let task = fixture.task(AVS, Scheme::Bn254, &[9]);
    let mut upper = fixture.sign(Scheme::Ecdsa, &task);
    upper.task_id = format!("0x{}", upper.task_id[2..].to_uppercase());
    let first = node.submit(upper.clone()).await.unwrap();
    assert_eq!(first.task_id, upper.task_id);
    fixture.assert_verifies(&first, &task);

    let lower = fixture.sign(Scheme::Ecdsa, &task);
    let second = node.submit(lower.clone()).await.unwrap();
    assert_eq!(second.task_id, lower.task_id);
    assert_eq!(
        (
            &second.output,
            &second.result_signature,
            &second.auth_signature
        ),
        (
            &first.output,
            &first.result_signature,
            &first.auth_signature
        )
    );
}

/// One stream, 300 tasks across the three operator sets and aggregators: exactly one event per
/// task, every result verifies, and a malformed task in the middle gets an INVALID_ARGUMENT
/// rejection without closing the stream.
#[tokio::test(flavor = "multi_thread")]
async fn one_stream_carries_hundreds_of_tasks_and_survives_a_malformed_one() {
    let node = node();
    let _log = node.log_on_panic();
    let fixture = node.fixture();
    const TASKS: usize = 300;
    const BAD_AT: usize = TASKS / 2;
    const BAD_ID: &str = "0x1234";
    let mut tasks = HashMap::new();
    let mut submissions = Vec::with_capacity(TASKS + 1);
    for i in 0..TASKS {
        if i == BAD_AT {
            let mut bad = fixture.sign(Scheme::Ecdsa, &fixture.task(AVS, Scheme::Ecdsa, &[1]));
            bad.task_id = BAD_ID.into();
            submissions.push(bad);
        }
        let set = SCHEMES[i % 3];
        let aggregator = SCHEMES[(i / 3) % 3];
        let mut task = fixture.task(AVS, set, &(i as u64 * 7919).to_be_bytes());
        if i % 2 == 1 {
            task.deadline_unix_ms = Some(now_ms() + 60_000);
        }
        let submission = fixture.sign(aggregator, &task);
        tasks.insert(submission.task_id.clone(), task);
        submissions.push(submission);
    }

    let events = node.stream(submissions).await;
    assert_eq!(events.len(), TASKS + 1);
    let mut results = Vec::with_capacity(TASKS);
    let mut rejections = Vec::new();
    for event in events {
        match event.kind.expect("an event with a kind") {
            stream_event::Kind::Result(result) => results.push(result),
            stream_event::Kind::Rejection(r) => rejections.push(r),
        }
    }
    let mut seen = HashMap::new();
    let mut answers = Vec::with_capacity(TASKS);
    for result in &results {
        let task = tasks
            .get(&result.task_id)
            .unwrap_or_else(|| panic!("a result for an unknown task {}", result.task_id));
        *seen.entry(&result.task_id).or_insert(0) += 1;
        answers.push((result, task));
    }
    assert_eq!(seen.len(), TASKS, "every good task got a result");
    assert!(seen.values().all(|&n| n == 1), "one event per task");
    let failures = fixture.verify_all(&answers);
    assert!(
        failures.is_empty(),
        "{} answers fail: {failures:#?}",
        failures.len()
    );
    assert_eq!(rejections.len(), 1, "{rejections:?}");
    let rejection = &rejections[0];
    assert_eq!(rejection.task_id, BAD_ID);
    assert_eq!(
        rejection.code,
        tonic::Code::InvalidArgument as i32,
        "{rejection:?}"
    );
    assert!(rejection.message.contains("task_id"), "{rejection:?}");
}

/// Single flight and sign-once: with a performer that answers differently on every execution, 16
/// concurrent submissions of one task all get byte-identical answers (one execution, one digest
/// signed), and a later retry is answered from the ledger: the performer's log shows one run.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_duplicates_share_one_execution_and_one_signature() {
    let node = node();
    let _log = node.log_on_panic();
    let fixture = node.fixture();
    for set in SCHEMES {
        let task = fixture.task(RANDOM_SLOW_AVS, set, &[7, 7]);
        let submission = fixture.sign(Scheme::Ecdsa, &task);
        let client = node.client().await;
        let calls: Vec<_> = (0..16)
            .map(|_| {
                let mut client = client.clone();
                let submission = submission.clone();
                tokio::spawn(async move { client.submit_task(submission).await })
            })
            .collect();
        let mut answers: Vec<TaskResult> = Vec::new();
        for call in calls {
            answers.push(call.await.unwrap().unwrap().into_inner());
        }
        let first = &answers[0];
        fixture.verify_random(first, &task).unwrap();
        for answer in &answers[1..] {
            assert_eq!(
                answer, first,
                "{set}: every concurrent caller gets the same answer"
            );
        }

        let retry = node.submit(submission).await.unwrap();
        assert_eq!(&retry, first, "{set}: a retry gets the stored answer");
        assert_eq!(
            executions(node, &task),
            1,
            "{set}: the performer ran more than once (a retry must be answered from the ledger)"
        );
    }
}

/// Two concurrent requests for one task id that differ (here in the reference timestamp, so in
/// the signed digest) never share an answer: exactly one is signed, the other is refused as a
/// ledger conflict — an answer whose signatures do not verify for its own request is never sent.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_different_requests_for_one_task_id_never_share_an_answer() {
    let node = node();
    let _log = node.log_on_panic();
    let fixture = node.fixture();
    for set in SCHEMES {
        let first = fixture.task(RANDOM_SLOW_AVS, set, &[5, 5]);
        let mut second = first.clone();
        second.reference_timestamp -= 1;
        let calls: Vec<_> = [&first, &second]
            .into_iter()
            .map(|task| {
                let submission = fixture.sign(Scheme::Ecdsa, task);
                let node_url = node.url();
                tokio::spawn(async move {
                    let mut client =
                        avsnode_proto::executor::executor_service_client::ExecutorServiceClient::connect(node_url)
                            .await
                            .unwrap();
                    client.submit_task(submission).await.map(tonic::Response::into_inner)
                })
            })
            .collect();
        let mut signed = 0;
        for (call, task) in calls.into_iter().zip([&first, &second]) {
            match call.await.unwrap() {
                Ok(result) => {
                    fixture
                        .verify_random(&result, task)
                        .unwrap_or_else(|e| panic!("{set}: {e}"));
                    signed += 1;
                }
                Err(status) => assert_eq!(
                    status.code(),
                    tonic::Code::FailedPrecondition,
                    "{set}: {status}"
                ),
            }
        }
        assert_eq!(signed, 1, "{set}: exactly one of the two is signed");
    }
}

/// DESIGN §3.2: a caller that goes away does not stop sign-and-commit. The caller gives up
/// after 100 ms (its call is cancelled); the performer takes 300 ms and answers differently each
/// time. The retry is then answered from the ledger — quickly, with no second execution — which
/// is only possible if the abandoned task was still executed, recorded and signed.
#[tokio::test(flavor = "multi_thread")]
async fn a_caller_that_leaves_does_not_stop_sign_and_commit() {
    let node = node();
    let _log = node.log_on_panic();
    let fixture = node.fixture();
    for set in SCHEMES {
        let task = fixture.task(RANDOM_SLOW_AVS, set, &[9, 9]);
        let submission = fixture.sign(Scheme::Ecdsa, &task);
        let mut client = node.client().await;
        let abandoned = tokio::time::timeout(
            Duration::from_millis(100),
            client.submit_task(submission.clone()),
        )
        .await;
        assert!(
            abandoned.is_err(),
            "{set}: the 300 ms performer answered within 100 ms"
        );

        // Let the abandoned flight finish (300 ms performer + signing).
        tokio::time::sleep(Duration::from_millis(700)).await;
        let start = Instant::now();
        let retry = node.submit(submission.clone()).await.unwrap();
        let took = start.elapsed();
        fixture.verify_random(&retry, &task).unwrap();
        assert!(
            took < Duration::from_millis(250),
            "{set}: the retry took {took:?}: the abandoned task was not recorded and signed"
        );
        assert_eq!(
            node.submit(submission).await.unwrap(),
            retry,
            "{set}: stable answer"
        );
    }
}

/// Backpressure: with `stream_inflight = 4`, a stream of 24 tasks that each take 50 ms all
/// complete, and never more than 4 at once (so it takes at least 6 rounds of 50 ms).
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_beyond_its_inflight_cap_completes_in_bounded_rounds() {
    const CAP: usize = 4;
    const TASKS: usize = 24;
    const DELAY_MS: u64 = 50;
    let node = TestNode::builder()
        .stream_inflight(CAP)
        .avs(AvsSpec::new(AVS).performer(&["--delay-ms", &DELAY_MS.to_string()]))
        .start();
    let fixture = node.fixture();
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| fixture.task(AVS, SCHEMES[i % 3], &[i as u8]))
        .collect();
    let submissions = tasks
        .iter()
        .map(|t| fixture.sign(Scheme::Bn254, t))
        .collect();
    let start = Instant::now();
    let events = node.stream(submissions).await;
    let took = start.elapsed();
    let by_id: HashMap<_, _> = tasks
        .iter()
        .map(|t| (t.task_id.to_wire_string(), t))
        .collect();
    for event in &events {
        match event.kind.as_ref().unwrap() {
            stream_event::Kind::Result(result) => {
                fixture.verify(result, by_id[&result.task_id]).unwrap()
            }
            stream_event::Kind::Rejection(r) => panic!("rejected: {r:?}"),
        }
    }
    let rounds = (TASKS / CAP) as u32;
    assert!(
        took >= Duration::from_millis(DELAY_MS) * rounds - Duration::from_millis(20),
        "{TASKS} tasks of {DELAY_MS} ms with {CAP} in flight took only {took:?}: the cap was not applied"
    );
}

/// Issue 14 §4: a process performer inherited the node's whole environment (and so could read
/// what the node was started with: keystore and PIN file paths, cloud credentials). Now its
/// environment is `PORT` and the `env` its AVS declares, nothing else: the node here runs with
/// `AVSNODE_EXAMPLE_MARKER` set, which the example performer would append to every output; the
/// AVS that does not declare it gets bare outputs, the one that declares another value gets that.
#[tokio::test(flavor = "multi_thread")]
async fn a_process_performer_sees_only_its_declared_environment() {
    const DECLARING_AVS: &str = "0x00000000000000000000000000000000000000d1";
    let performer = avsnode_tests::binary("avsnode-example-performer");
    let node = TestNode::builder()
        .env("AVSNODE_EXAMPLE_MARKER", "inherited-from-the-node")
        .avs(AvsSpec::new(AVS))
        .avs(AvsSpec::new(DECLARING_AVS).performer_toml(&format!(
            "runtime = \"process\"\ncommand = {:?}\nargs = [\"--host\", \"127.0.0.1\"]\n\
             env = {{ AVSNODE_EXAMPLE_MARKER = \"declared\" }}",
            performer.display().to_string()
        )))
        .start();
    let _log = node.log_on_panic();
    let fixture = node.fixture();
    let task = fixture.task(AVS, Scheme::Bn254, &[4]);
    let result = node
        .submit(fixture.sign(Scheme::Ecdsa, &task))
        .await
        .unwrap();
    fixture.assert_verifies(&result, &task);
    let task = fixture.task(DECLARING_AVS, Scheme::Bn254, &[4]);
    let result = node
        .submit(fixture.sign(Scheme::Ecdsa, &task))
        .await
        .unwrap();
    fixture.verify_marked(&result, &task, "declared").unwrap();
}

/// CLI conventions: `--version` names the commit; shell completions and the man page come from
/// the CLI definition, so they list every subcommand.
#[test]
fn version_completions_and_man_page_come_from_the_cli() {
    let run = |args: &[&str]| {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        let (status, out, err) = crate::common::avsnode_cli(&args);
        assert!(status.success(), "avsnode {args:?}: {err}");
        out
    };
    let version = run(&["--version"]);
    let commit = version
        .trim()
        .strip_prefix(&format!("avsnode {} (", env!("CARGO_PKG_VERSION")))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{version:?}"));
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{version:?}"
    );
    let subcommands = [
        "run",
        "demo",
        "bench",
        "check-config",
        "keys",
        "performer",
        "signer",
        "ledger",
    ];
    let bash = run(&["completions", "bash"]);
    assert!(bash.contains("complete -F _avsnode"), "{bash}");
    let zsh = run(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef avsnode"), "{zsh}");
    let man = run(&["man"]);
    assert!(man.contains(".TH avsnode 1"), "{man}");
    for sub in subcommands {
        assert!(
            bash.contains(sub) && zsh.contains(sub),
            "completions without {sub}"
        );
        assert!(
            man.contains(&sub.replace('-', "\\-")),
            "man page without {sub}"
        );
    }
}
