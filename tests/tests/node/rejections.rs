//! Every reason a task is refused (DESIGN §3.1), against the real binary: the gRPC code an
//! aggregator sees, no result (nothing signed), and a node that still serves good tasks after.
//!
//! One node serves them all, with one AVS per performer behaviour, so the cases run in parallel
//! without disturbing each other.

#![allow(clippy::unwrap_used)]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::{AVS, AvsSpec, SCHEMES, TestNode, address, now_ms, now_secs};
use avsnode_aggregator::{Aggregator, NewTask, OperatorKey, verify_result};
use avsnode_proto::executor::{TaskResult, TaskSubmission};
use avsnode_signer::Scheme;
use avsnode_signer::messages::EcdsaVerifier;
use avsnode_signing::LocalKey;
use tonic::Code;

/// The good AVS; its payloads are capped at 64 bytes.
const MAX_PAYLOAD: usize = 64;
/// Its performer fails every task with INTERNAL (`--fail-rate 1`).
const FAILING_AVS: &str = "0x000000000000000000000000000000000000fa11";
/// Its performer echoes another task id.
const WRONG_ECHO_AVS: &str = "0x000000000000000000000000000000000000ec40";
/// Its performer pads outputs to 2048 bytes; the AVS caps them at 1024.
const BIG_OUTPUT_AVS: &str = "0x000000000000000000000000000000000000b160";
/// Its performer answers with a gRPC message that is not a `TaskResponse` (`--garbage`).
const GARBAGE_AVS: &str = "0x000000000000000000000000000000000000ba6a";
/// Its performer answers with a body that is not gRPC-framed (`--garbage unframed`).
const UNFRAMED_AVS: &str = "0x000000000000000000000000000000000000ba6f";
/// Its performer exits in the middle of every task.
const CRASHING_AVS: &str = "0x000000000000000000000000000000000000c4a5";
/// Its performer takes 2 s per task.
const SLOW_AVS: &str = "0x000000000000000000000000000000000000510e";
/// One task at a time, one waiting, 1 s each.
const NARROW_AVS: &str = "0x000000000000000000000000000000000000a770";
/// A second AVS served with the same keys (every default operator set), plus its own sets.
const AVS_B: &str = "0x000000000000000000000000000000000000b0b0";
/// Operator sets of `AVS` beyond the default three that share a key with them: BN254, BLS12-381,
/// ECDSA with the same verifier, ECDSA with another verifier.
const TWIN_BN254: u32 = 5;
const TWIN_BLS: u32 = 6;
const TWIN_ECDSA: u32 = 7;
const OTHER_VERIFIER_ECDSA: u32 = 8;
const OTHER_VERIFIER: &str = "0x00000000000000000000000000000000000c0de2";
/// Served by nobody.
const UNKNOWN_AVS: &str = "0x000000000000000000000000000000000000dead";

fn node() -> &'static TestNode {
    static NODE: OnceLock<TestNode> = OnceLock::new();
    NODE.get_or_init(|| {
        TestNode::builder()
            .avs(
                AvsSpec::new(AVS)
                    .max_payload_size(MAX_PAYLOAD)
                    .operator_set(TWIN_BN254, Scheme::Bn254, None)
                    .operator_set(TWIN_BLS, Scheme::Bls12381, None)
                    .operator_set(TWIN_ECDSA, Scheme::Ecdsa, None)
                    .operator_set(OTHER_VERIFIER_ECDSA, Scheme::Ecdsa, Some(OTHER_VERIFIER)),
            )
            .avs(AvsSpec::new(AVS_B))
            .avs(AvsSpec::new(FAILING_AVS).performer(&["--fail-rate", "1"]))
            .avs(AvsSpec::new(WRONG_ECHO_AVS).performer(&["--wrong-task-id"]))
            .avs(
                AvsSpec::new(BIG_OUTPUT_AVS)
                    .performer(&["--output-size", "2048"])
                    .max_output_size(1024),
            )
            .avs(AvsSpec::new(SLOW_AVS).performer(&["--delay-ms", "2000"]))
            .avs(AvsSpec::new(GARBAGE_AVS).performer(&["--garbage"]))
            .avs(AvsSpec::new(UNFRAMED_AVS).performer(&["--garbage", "unframed"]))
            .avs(AvsSpec::new(CRASHING_AVS).performer(&["--crash-mid-task", "--delay-ms", "100"]))
            .avs(
                AvsSpec::new(NARROW_AVS)
                    .performer(&["--delay-ms", "1000"])
                    .max_concurrency(1)
                    .queue_depth(1),
            )
            .start()
    })
}

/// Asserts the submission is refused with `code` and a message containing `says`.
async fn assert_refused(submission: TaskSubmission, code: Code, says: &str) {
    let outcome = node().submit(submission).await;
    assert_refused_with(outcome, code, says);
}

fn assert_refused_with(outcome: Result<TaskResult, tonic::Status>, code: Code, says: &str) {
    match outcome {
        Ok(result) => panic!("expected {code:?}, got a signed result: {result:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "{status:?}");
            assert!(
                status.message().contains(says),
                "expected a message saying {says:?}: {status:?}"
            );
        }
    }
}

/// After a refusal the node still answers a good task, and the answer verifies.
async fn assert_still_serves() {
    let node = node();
    let fixture = node.fixture();
    for scheme in SCHEMES {
        let task = fixture.task(AVS, scheme, &[2, 3]);
        let result = node
            .submit(fixture.sign(scheme, &task))
            .await
            .unwrap_or_else(|s| panic!("a good {scheme} task after a refusal: {s:?}"));
        fixture.assert_verifies(&result, &task);
    }
}

fn good_task(scheme: Scheme) -> NewTask {
    node().fixture().task(AVS, scheme, &[5])
}

fn sign(task: &NewTask) -> TaskSubmission {
    node().fixture().sign(Scheme::Ecdsa, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_task_id_is_invalid_argument() {
    let _log = node().log_on_panic();
    for bad in ["0x1234", "not hex", "", &format!("0x{}", "zz".repeat(32))] {
        let mut submission = sign(&good_task(Scheme::Ecdsa));
        submission.task_id = bad.into();
        assert_refused(submission, Code::InvalidArgument, "task_id").await;
    }
    assert_still_serves().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn task_for_another_executor_is_permission_denied() {
    let _log = node().log_on_panic();
    let mut task = good_task(Scheme::Bn254);
    task.operator = address("0x00000000000000000000000000000000000e0e0e");
    assert_refused(sign(&task), Code::PermissionDenied, "addressed to executor").await;
    assert_still_serves().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_avs_is_not_found() {
    let _log = node().log_on_panic();
    let task = node().fixture().task(UNKNOWN_AVS, Scheme::Ecdsa, &[5]);
    assert_refused(sign(&task), Code::NotFound, "not served by this node").await;
    assert_still_serves().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_operator_set_is_not_found() {
    let _log = node().log_on_panic();
    let mut task = good_task(Scheme::Ecdsa);
    task.operator_set_id = 99;
    assert_refused(sign(&task), Code::NotFound, "operator set 99").await;
    assert_still_serves().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn passed_signed_deadline_is_deadline_exceeded() {
    let _log = node().log_on_panic();
    let mut task = good_task(Scheme::Bls12381);
    task.deadline_unix_ms = Some(now_ms() - 1_000);
    let submission = sign(&task);
    assert_eq!(submission.version, 1001);
    assert_refused(submission, Code::DeadlineExceeded, "deadline").await;

    // Less time left than min_execution_time (50 ms) is refused up front too.
    let mut task = good_task(Scheme::Bls12381);
    task.deadline_unix_ms = Some(now_ms() + 10);
    assert_refused(sign(&task), Code::DeadlineExceeded, "deadline").await;
    assert_still_serves().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_or_future_reference_timestamp_is_failed_precondition() {
    let _log = node().log_on_panic();
    // max_staleness is 1 h by default, max_clock_skew 30 s.
    let mut task = good_task(Scheme::Ecdsa);
    task.reference_timestamp = now_secs() - 2 * 3600;
    assert_refused(sign(&task), Code::FailedPrecondition, "reference timestamp").await;
    let mut task = good_task(Scheme::Ecdsa);
    task.reference_timestamp = now_secs() + 3600;
    assert_refused(sign(&task), Code::FailedPrecondition, "in the future").await;
    assert_still_serves().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_task_signatures_are_permission_denied() {
    let node = node();
    let _log = node.log_on_panic();
    let fixture = node.fixture();
    for scheme in SCHEMES {
        let task = good_task(Scheme::Bn254);
        // A key that is not the configured one, claiming to be the configured aggregator.
        let impostor = Aggregator::new(
            fixture.aggregator(scheme).address,
            LocalKey::generate(scheme),
        );
        assert_refused(
            impostor.sign(&task),
            Code::PermissionDenied,
            "does not verify",
        )
        .await;

        // The configured aggregator's valid signature, over another payload.
        let mut tampered = fixture.sign(scheme, &task);
        tampered.payload = vec![6];
        assert_refused(tampered, Code::PermissionDenied, "does not verify").await;

        // ... or with any other signed field changed.
        let mut tampered = fixture.sign(scheme, &task);
        tampered.task_block_number += 1;
        assert_refused(tampered, Code::PermissionDenied, "does not verify").await;
    }
    // An aggregator the AVS does not list.
    let stranger_key = LocalKey::generate(Scheme::Ecdsa);
    let stranger = match &stranger_key {
        LocalKey::Ecdsa(k) => k.public_key().address(),
        _ => unreachable!(),
    };
    let stranger = Aggregator::new(stranger, stranger_key);
    assert_refused(
        stranger.sign(&good_task(Scheme::Ecdsa)),
        Code::PermissionDenied,
        "not allowed",
    )
    .await;
    assert_still_serves().await;
}

/// Under load aggregator signatures are checked in batches (DESIGN §3.1 step 7): a forged
/// signature in a batch is refused on its own, and every honest task of the same batches is
/// signed.
#[tokio::test(flavor = "multi_thread")]
async fn forged_signatures_in_a_batch_are_refused_alone() {
    use avsnode_proto::stream::stream_event::Kind;
    let node = node();
    let _log = node.log_on_panic();
    let fixture = node.fixture();
    for scheme in SCHEMES {
        let batches = |metrics: &str, part: &str| {
            crate::common::sample(
                metrics,
                &format!("avsnode_aggregator_signature_batch_size_{part}"),
                &[("scheme", scheme.as_str())],
            )
        };
        let before = node.scrape_metrics().await;
        let impostor = Aggregator::new(
            fixture.aggregator(scheme).address,
            LocalKey::generate(scheme),
        );
        let tasks: Vec<NewTask> = (0..64u8)
            .map(|i| fixture.task(AVS, Scheme::Ecdsa, &[i + 1]))
            .collect();
        // Every seventh signed by an impostor, every seventh another's valid signature over a
        // different payload; the rest honest.
        let forged = |i: usize| matches!(i % 7, 3 | 5);
        let submissions = tasks
            .iter()
            .enumerate()
            .map(|(i, task)| match i % 7 {
                3 => impostor.sign(task),
                5 => {
                    let mut tampered = fixture.sign(scheme, task);
                    tampered.payload = vec![99];
                    tampered
                }
                _ => fixture.sign(scheme, task),
            })
            .collect();
        let events = node.stream(submissions).await;
        assert_eq!(events.len(), tasks.len());
        for event in events {
            let (task_id, outcome) = match event.kind.expect("an event") {
                Kind::Result(result) => (result.task_id.clone(), Ok(result)),
                Kind::Rejection(r) => (r.task_id.clone(), Err(r)),
            };
            let i = tasks
                .iter()
                .position(|t| t.task_id.to_wire_string() == task_id)
                .expect("an answer for a task sent");
            match outcome {
                Ok(result) if !forged(i) => fixture.assert_verifies(&result, &tasks[i]),
                Err(r) if forged(i) => assert!(
                    r.code == Code::PermissionDenied as i32
                        && r.message.contains("does not verify"),
                    "{scheme} task {i}: {r:?}"
                ),
                other => panic!("{scheme} task {i} (forged: {}): {other:?}", forged(i)),
            }
        }
        // Batches formed: BN254 and BLS12-381 checks take about a millisecond each, so with 64
        // tasks arriving at once many wait and are checked together. (ECDSA checks take tens of
        // microseconds: they may all run alone.)
        let after = node.scrape_metrics().await;
        let checks = batches(&after, "count") - batches(&before, "count");
        let signatures = batches(&after, "sum") - batches(&before, "sum");
        // (Other tests of this binary may share the node: their checks add to the counts.)
        assert!(
            signatures >= 64.0,
            "{scheme}: {signatures} signatures checked, 64 sent"
        );
        if scheme != Scheme::Ecdsa {
            assert!(
                checks < signatures,
                "{scheme}: {signatures} signatures in {checks} checks: no batch formed"
            );
        }
    }
    assert_still_serves().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unsupported_version_is_invalid_argument() {
    let _log = node().log_on_panic();
    // 2 is Hourglass's own next version (avsnode's signed deadline is 1001): a future Hourglass
    // task is refused by name, never read as avsnode's layout — even one carrying a deadline.
    for version in [0, 2, 3, 1000, 1002] {
        let mut task = good_task(Scheme::Ecdsa);
        if version == 2 {
            task.deadline_unix_ms = Some(now_ms() + 60_000);
        }
        let mut submission = sign(&task);
        submission.version = version;
        assert_refused(
            submission,
            Code::InvalidArgument,
            &format!("unsupported version {version}"),
        )
        .await;
    }
    assert_still_serves().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn payload_over_the_avs_limit_is_invalid_argument() {
    let _log = node().log_on_panic();
    let task = node()
        .fixture()
        .task(AVS, Scheme::Bn254, &[1; MAX_PAYLOAD + 1]);
    assert_refused(
        sign(&task),
        Code::InvalidArgument,
        "exceeds this AVS's limit",
    )
    .await;
    assert_still_serves().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn full_queue_is_resource_exhausted() {
    let node = node();
    let _log = node.log_on_panic();
    let fixture = node.fixture();
    // One task in the performer, one waiting: of four at once, at least one finds no room.
    let tasks: Vec<_> = (0..4u8)
        .map(|i| fixture.task(NARROW_AVS, SCHEMES[i as usize % 3], &[i]))
        .collect();
    let client = node.client().await;
    let calls: Vec<_> = tasks
        .iter()
        .map(|task| {
            let mut client = client.clone();
            let submission = fixture.sign(Scheme::Ecdsa, task);
            tokio::spawn(async move { client.submit_task(submission).await })
        })
        .collect();
    let (mut signed, mut refused) = (0, 0);
    for (call, task) in calls.into_iter().zip(&tasks) {
        match call.await.unwrap() {
            Ok(result) => {
                fixture.assert_verifies(result.get_ref(), task);
                signed += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(status.message().contains("queue is full"), "{status:?}");
                refused += 1;
            }
        }
    }
    assert!(
        refused >= 1,
        "no RESOURCE_EXHAUSTED among 4 tasks with room for 2"
    );
    assert!(signed >= 1, "the task in the performer was answered");

    // Once the queue drains, the same AVS takes tasks again.
    let task = fixture.task(NARROW_AVS, Scheme::Ecdsa, &[9]);
    let result = node
        .submit(fixture.sign(Scheme::Ecdsa, &task))
        .await
        .unwrap();
    fixture.assert_verifies(&result, &task);
    assert_still_serves().await;
}

/// A task id signed once cannot be signed again for another digest. The aggregator re-issues a
/// signed task id with another reference timestamp (validly signed): the certificate digest of
/// the stored output under the new timestamp differs from the recorded one, so the node must
/// refuse (FAILED_PRECONDITION, DESIGN §3.1 step 7 and §5) rather than sign, and rather than
/// answer with the first task's signatures, which do not verify for this one.
#[tokio::test(flavor = "multi_thread")]
async fn same_task_id_with_another_digest_is_failed_precondition() {
    let node = node();
    let _log = node.log_on_panic();
    let fixture = node.fixture();
    for scheme in SCHEMES {
        let first = good_task(scheme);
        let answer = node.submit(sign(&first)).await.unwrap();
        fixture.assert_verifies(&answer, &first);

        let mut reissued = first.clone();
        reissued.reference_timestamp -= 10;
        match node.submit(sign(&reissued)).await {
            Ok(result) => {
                let verifies = fixture.verify(&result, &reissued);
                panic!(
                    "{scheme}: a re-issued task id with another reference timestamp got a result \
                     (identical to the first answer: {}; verifies for the re-issued task: {verifies:?}) \
                     instead of FAILED_PRECONDITION",
                    result == answer
                );
            }
            Err(status) => {
                assert_eq!(
                    status.code(),
                    Code::FailedPrecondition,
                    "{scheme}: {status:?}"
                );
                // The message names what differs: the reference timestamp, not the output
                // (which is the same).
                let expected = format!(
                    "already signed with reference timestamp {}, not {}",
                    first.reference_timestamp, reissued.reference_timestamp
                );
                assert!(status.message().contains(&expected), "{scheme}: {status:?}");
            }
        }

        // The same task id and reference timestamp with another payload: the performer is not
        // asked again and nothing new is signed; the aggregator gets the stored result (DESIGN
        // §3.1 step 7), byte for byte.
        let mut other_payload = first.clone();
        other_payload.payload = vec![6];
        let again = node.submit(sign(&other_payload)).await.unwrap();
        assert_eq!(again, answer, "{scheme}");
    }
    assert_still_serves().await;
}

/// The public key an aggregator checks a result of `operator_set_id` against (the twins share
/// their scheme's key; the other-verifier ECDSA set binds another EIP-712 domain).
fn operator_key(scheme: Scheme, operator_set_id: u32) -> OperatorKey {
    let public = node().fixture().set(scheme).public.clone();
    match (public, operator_set_id) {
        (
            OperatorKey::Ecdsa {
                address: signer, ..
            },
            OTHER_VERIFIER_ECDSA,
        ) => OperatorKey::Ecdsa {
            address: signer,
            verifier: EcdsaVerifier {
                address: address(OTHER_VERIFIER),
                version: "1".into(),
            },
        },
        (public, _) => public,
    }
}

/// Every answer of the test below, with the key it must verify under.
type Answered = Vec<(TaskResult, NewTask, OperatorKey)>;

/// Submits `task`; keeps an answer for the final check.
async fn submit_keeping(
    answered: &mut Answered,
    task: &NewTask,
    scheme: Scheme,
) -> Result<TaskResult, tonic::Status> {
    let outcome = node().submit(sign(task)).await;
    if let Ok(result) = &outcome {
        answered.push((
            result.clone(),
            task.clone(),
            operator_key(scheme, task.operator_set_id),
        ));
    }
    outcome
}

/// DESIGN §5: a result signature binds the task id, reference timestamp and output (and for ECDSA
/// the verifier), never the AVS or the operator set. So a task signed for one AVS and operator set
/// is refused — FAILED_PRECONDITION, no signature — for every other AVS or operator set that
/// shares the key, whatever its payload: two operator sets of one AVS (the attack: two different
/// outputs for one task, both valid), and another AVS replaying a public task id and reference
/// timestamp (a vote on the first AVS's task). An ECDSA set with another verifier is another
/// domain and is signed. Every signature returned verifies under the operator's key.
#[tokio::test(flavor = "multi_thread")]
async fn a_task_signed_for_one_avs_or_operator_set_is_refused_for_every_other() {
    let node = node();
    let _log = node.log_on_panic();
    let fixture = node.fixture();
    let mut answered = Answered::new();
    let a = &mut answered;
    for (scheme, twin) in [
        (Scheme::Bn254, TWIN_BN254),
        (Scheme::Bls12381, TWIN_BLS),
        (Scheme::Ecdsa, TWIN_ECDSA),
    ] {
        let first = fixture.task(AVS, scheme, &[1]);
        submit_keeping(a, &first, scheme).await.unwrap();
        let mut other_set = first.clone();
        other_set.operator_set_id = twin;
        for payload in [vec![2], first.payload.clone()] {
            other_set.payload = payload;
            assert_refused_with(
                submit_keeping(a, &other_set, scheme).await,
                Code::FailedPrecondition,
                &format!("operator set {}, not AVS", fixture.set(scheme).id),
            );
        }
        // The other direction: first signed for the twin set, refused for the default one.
        let first = NewTask {
            operator_set_id: twin,
            ..fixture.task(AVS, scheme, &[3])
        };
        submit_keeping(a, &first, scheme).await.unwrap();
        let mut other_set = first.clone();
        other_set.operator_set_id = fixture.set(scheme).id;
        other_set.payload = vec![4];
        assert_refused_with(
            submit_keeping(a, &other_set, scheme).await,
            Code::FailedPrecondition,
            "already signed with this key",
        );

        // Another AVS replays the task id and reference timestamp.
        let first = fixture.task(AVS, scheme, &[5]);
        submit_keeping(a, &first, scheme).await.unwrap();
        let mut replay = first.clone();
        replay.avs = address(AVS_B);
        for payload in [vec![6], first.payload.clone()] {
            replay.payload = payload;
            assert_refused_with(
                submit_keeping(a, &replay, scheme).await,
                Code::FailedPrecondition,
                &format!("not AVS {AVS_B}"),
            );
        }
        // The first AVS's retry is still answered, with the same bytes.
        let again = submit_keeping(a, &first, scheme).await.unwrap();
        let earlier = a
            .iter()
            .find(|(_, t, _)| t.task_id == first.task_id)
            .unwrap();
        assert_eq!(again, earlier.0);
    }
    // ECDSA under another verifier: another EIP-712 domain, so another record.
    let first = fixture.task(AVS, Scheme::Ecdsa, &[7]);
    submit_keeping(a, &first, Scheme::Ecdsa).await.unwrap();
    let other_domain = NewTask {
        operator_set_id: OTHER_VERIFIER_ECDSA,
        payload: vec![8],
        ..first.clone()
    };
    submit_keeping(a, &other_domain, Scheme::Ecdsa)
        .await
        .unwrap();

    // Per scheme: three firsts and the retry; then the two ECDSA domains.
    assert_eq!(a.len(), 3 * 4 + 2);
    for (result, task, key) in a.iter() {
        verify_result(result, task, key).unwrap_or_else(|e| panic!("{e}"));
    }
    assert_still_serves().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn performer_error_is_passed_through_and_nothing_is_recorded() {
    let node = node();
    let _log = node.log_on_panic();
    let task = node.fixture().task(FAILING_AVS, Scheme::Bn254, &[5]);
    for _ in 0..2 {
        // The retry fails the same way: no answer was recorded for it.
        assert_refused(sign(&task), Code::Internal, "injected failure").await;
    }
    assert_still_serves().await;
}

/// A performer that dies while it runs a task: the task is UNAVAILABLE (retryable), nothing is
/// signed, and the retry is not answered from the ledger. The node and the other AVSs carry on.
#[tokio::test(flavor = "multi_thread")]
async fn performer_crashing_mid_task_is_unavailable_and_nothing_is_signed() {
    let node = node();
    let _log = node.log_on_panic();
    let task = node.fixture().task(CRASHING_AVS, Scheme::Ecdsa, &[5]);
    for _ in 0..2 {
        let start = Instant::now();
        assert_refused(sign(&task), Code::Unavailable, "performer unavailable").await;
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
    }
    assert_still_serves().await;
}

/// A performer that answers with bytes that are not a `TaskResponse` (a gRPC message that does not
/// decode, or a body that is not gRPC at all) while its health checks say SERVING: the task is
/// INTERNAL `performer_error`, nothing is signed (the retry is refused the same way, not answered
/// from the ledger), and the performer is neither restarted nor reported unready.
#[tokio::test(flavor = "multi_thread")]
async fn performer_returning_garbage_is_internal_and_nothing_is_signed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let node = node();
    let _log = node.log_on_panic();
    let cases = [
        (GARBAGE_AVS, "failed to decode Protobuf message"),
        (UNFRAMED_AVS, "invalid compression flag"),
    ];
    for (avs, says) in cases {
        let task = node.fixture().task(avs, Scheme::Bls12381, &[5]);
        for _ in 0..2 {
            assert_refused(sign(&task), Code::Internal, says).await;
        }
        let metrics = node.scrape_metrics().await;
        for wanted in [
            format!("avsnode_task_rejections_total{{avs=\"{avs}\",reason=\"performer_error\"}} 2"),
            format!("avsnode_performer_up{{avs=\"{avs}\",performer=\"process\"}} 1"),
            format!("avsnode_performer_restarts_total{{avs=\"{avs}\"}} 0"),
        ] {
            assert!(
                metrics.lines().any(|line| line == wanted),
                "{avs}: no {wanted:?} in /metrics"
            );
        }
    }

    // Other AVSs' performers may be restarting (the crashing one), so /readyz may say 503; it
    // must not name these.
    let mut readyz = tokio::net::TcpStream::connect(node.metrics_address())
        .await
        .unwrap();
    readyz
        .write_all(b"GET /readyz HTTP/1.0\r\nHost: avsnode\r\n\r\n")
        .await
        .unwrap();
    let mut ready = String::new();
    readyz.read_to_string(&mut ready).await.unwrap();
    assert!(
        ready.starts_with("HTTP/1.0 200")
            || ready.starts_with("HTTP/1.1 200")
            || ready.contains("not ready"),
        "{ready}"
    );
    for (avs, _) in cases {
        assert!(!ready.contains(avs), "/readyz names {avs}: {ready}");
    }
    assert_still_serves().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn performer_echoing_another_task_id_is_internal() {
    let _log = node().log_on_panic();
    let task = node().fixture().task(WRONG_ECHO_AVS, Scheme::Ecdsa, &[5]);
    assert_refused(sign(&task), Code::Internal, "another task id").await;
    assert_still_serves().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn performer_output_over_the_avs_limit_is_internal() {
    let _log = node().log_on_panic();
    let task = node()
        .fixture()
        .task(BIG_OUTPUT_AVS, Scheme::Bls12381, &[5]);
    assert_refused(sign(&task), Code::Internal, "output of 2048 bytes").await;
    assert_still_serves().await;
}

/// A version-1 task's deadline is the gRPC deadline of the call: a performer slower than it is
/// cut off, and the caller hears DEADLINE_EXCEEDED from the node before its deadline.
#[tokio::test(flavor = "multi_thread")]
async fn performer_slower_than_the_grpc_deadline_is_deadline_exceeded() {
    let node = node();
    let _log = node.log_on_panic();
    let task = node.fixture().task(SLOW_AVS, Scheme::Ecdsa, &[5]);
    let mut request = tonic::Request::new(sign(&task));
    request.set_timeout(Duration::from_millis(1000));
    let start = Instant::now();
    let outcome = node
        .client()
        .await
        .submit_task(request)
        .await
        .map(tonic::Response::into_inner);
    let took = start.elapsed();
    assert_refused_with(outcome, Code::DeadlineExceeded, "deadline");
    assert!(
        took < Duration::from_millis(1500),
        "the refusal took {took:?}"
    );
    assert_still_serves().await;
}
