//! Intake limits against the real binary: the per-aggregator rate limit (checked before any
//! signature), the node-wide cap on tasks held, and the idle-stream timeout.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use avsnode::aggregator::Aggregator;
use avsnode::signing::LocalKey;
use avsnode_proto::stream::task_stream_client::TaskStreamClient;
use avsnode_proto::stream::{StreamRequest, stream_request};
use avsnode_signer::Scheme;
use common::{AVS, AvsSpec, TestNode};
use tonic::Code;

/// An aggregator over its rate gets RESOURCE_EXHAUSTED `rate_limited`, and that is decided
/// before its signature is: forged tasks over the limit are refused as rate-limited, not as
/// forged. Its bucket refills at the configured rate, and other AVSs are not affected.
#[tokio::test(flavor = "multi_thread")]
async fn an_aggregator_over_its_rate_is_refused_before_signature_checks() {
    const LIMITED: &str = "0x00000000000000000000000000000000000011aa";
    let node = TestNode::builder()
        .avs(AvsSpec::new(LIMITED).toml("aggregator_rate_limit = 2\naggregator_burst = 5"))
        .avs(AvsSpec::new(AVS))
        .start();
    let _log = node.log_on_panic();
    let fixture = node.fixture();

    // Spend the burst with forged tasks: each is refused as forged (a token was taken).
    let impostor = Aggregator::new(
        fixture.aggregator(Scheme::Ecdsa).address,
        LocalKey::generate(Scheme::Ecdsa),
    );
    let mut codes = Vec::new();
    for n in 0..12u8 {
        let task = fixture.task(LIMITED, Scheme::Ecdsa, &[n]);
        codes.push(node.submit(impostor.sign(&task)).await.unwrap_err());
    }
    let forged = codes
        .iter()
        .filter(|s| s.code() == Code::PermissionDenied)
        .count();
    let limited: Vec<_> = codes
        .iter()
        .filter(|s| s.code() == Code::ResourceExhausted)
        .collect();
    // 5 from the burst, and perhaps one more token refilled while sending (2 per second).
    assert!((5..=7).contains(&forged), "{codes:?}");
    assert_eq!(forged + limited.len(), codes.len(), "{codes:?}");
    assert!(
        limited[0].message().contains("rate limit"),
        "{:?}",
        limited[0]
    );

    // An honest task now is rate-limited too (same aggregator, same address) ...
    let task = fixture.task(LIMITED, Scheme::Ecdsa, &[100]);
    let refused = node.submit(fixture.sign(Scheme::Ecdsa, &task)).await;
    assert_eq!(refused.unwrap_err().code(), Code::ResourceExhausted);
    // ... while the other AVS serves the same aggregator normally.
    let other = fixture.task(AVS, Scheme::Ecdsa, &[1]);
    let result = node
        .submit(fixture.sign(Scheme::Ecdsa, &other))
        .await
        .unwrap();
    fixture.assert_verifies(&result, &other);

    // Tokens come back at 2 per second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let result = node
        .submit(fixture.sign(Scheme::Ecdsa, &task))
        .await
        .unwrap();
    fixture.assert_verifies(&result, &task);

    let metrics = node.scrape_metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("avsnode_task_rejections_total")
                && l.contains("rate_limited")
                && !l.ends_with(" 0")),
        "no rate_limited rejections in the metrics"
    );
}

/// With `intake.max_tasks_in_memory` tasks held, further tasks get RESOURCE_EXHAUSTED
/// `node_overloaded` at once; the held ones complete, and the node serves again after.
#[tokio::test(flavor = "multi_thread")]
async fn tasks_over_the_node_wide_cap_are_refused_at_once() {
    let node = TestNode::builder()
        .avs(AvsSpec::new(AVS).performer(&["--delay-ms", "1500"]))
        .stream_inflight(4)
        .intake_toml("max_tasks_in_memory = 4")
        .start();
    let _log = node.log_on_panic();
    let fixture = node.fixture().clone();
    let mut calls = Vec::new();
    for n in 0..10u8 {
        let task = fixture.task(AVS, Scheme::Ecdsa, &[n]);
        let submission = fixture.sign(Scheme::Ecdsa, &task);
        let mut client = node.client().await;
        calls.push(tokio::spawn(async move {
            let started = Instant::now();
            let outcome = client.submit_task(submission).await;
            (outcome.map(|r| r.into_inner()), started.elapsed(), task)
        }));
        // In order: the first four are held before the rest arrive.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut signed = 0;
    let mut overloaded = 0;
    for call in calls {
        let (outcome, took, task) = call.await.unwrap();
        match outcome {
            Ok(result) => {
                fixture.assert_verifies(&result, &task);
                signed += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(status.message().contains("limit of 4 tasks"), "{status:?}");
                assert!(took < Duration::from_secs(1), "refused after {took:?}");
                overloaded += 1;
            }
        }
    }
    assert_eq!(signed, 4, "the four held tasks complete");
    assert_eq!(overloaded, 6);
    let task = fixture.task(AVS, Scheme::Ecdsa, &[99]);
    let result = node
        .submit(fixture.sign(Scheme::Ecdsa, &task))
        .await
        .unwrap();
    fixture.assert_verifies(&result, &task);
}

/// A task stream that sends nothing for `stream_idle_timeout` while none of its tasks runs is
/// closed with UNAVAILABLE naming the setting; one with a task still running is not.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_task_stream_is_closed() {
    let node = TestNode::builder()
        .avs(AvsSpec::new(AVS).performer(&["--delay-ms", "2500"]))
        .intake_toml("stream_idle_timeout = \"1s\"")
        .start();
    let _log = node.log_on_panic();
    let fixture = node.fixture();
    let mut client = TaskStreamClient::connect(node.url()).await.unwrap();
    let (sender, outbound) = tokio::sync::mpsc::channel(4);
    let task = fixture.task(AVS, Scheme::Ecdsa, &[1]);
    sender
        .send(StreamRequest {
            kind: Some(stream_request::Kind::Task(
                fixture.sign(Scheme::Ecdsa, &task),
            )),
        })
        .await
        .unwrap();
    let started = Instant::now();
    let mut inbound = client
        .open(tokio_stream::wrappers::ReceiverStream::new(outbound))
        .await
        .unwrap()
        .into_inner();
    // The task takes 2.5 s, longer than the idle timeout: the stream stays open for its answer.
    let event = inbound.message().await.unwrap().expect("the task's answer");
    assert!(
        matches!(
            event.kind,
            Some(avsnode_proto::stream::stream_event::Kind::Result(_))
        ),
        "{event:?}"
    );
    // Then nothing is sent: closed about a second later.
    let ended = tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .expect("closed within 10 s");
    let status = ended.expect_err("closed with a status");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("stream_idle_timeout"),
        "{status:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(3000));
    drop(sender);
}
