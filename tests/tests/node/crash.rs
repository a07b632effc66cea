//! Crash safety (DESIGN §5): tasks stream at full rate into a node whose performer answers
//! randomly (`--random-output`: a task executed twice gets two different outputs), and the node
//! is SIGKILLed at random moments, then restarted on the same data directory, 50 times
//! (`AVSNODE_CRASH_CYCLES` changes the count). The aggregator side records every result it
//! received. Every start opens the ledger (the node serves); no task id is ever answered with a
//! second, different signature; and at the end every result received before any crash is served
//! again byte for byte.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{AVS, AvsSpec, Fixture, SCHEMES, TestNode};
use avsnode_proto::executor::{TaskResult, TaskSubmission};
use avsnode_proto::stream::task_stream_client::TaskStreamClient;
use avsnode_proto::stream::{StreamRequest, stream_event, stream_request};
use avsnode_signer::Scheme;

/// A small xorshift generator: the run prints its seed, so a failure can be replayed with
/// `AVSNODE_CRASH_SEED`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the aggregator received for one task id.
#[derive(Clone, PartialEq, Eq)]
struct Answer {
    output: Vec<u8>,
    result_signature: Vec<u8>,
    auth_signature: Vec<u8>,
}

impl From<&TaskResult> for Answer {
    fn from(r: &TaskResult) -> Answer {
        Answer {
            output: r.output.clone(),
            result_signature: r.result_signature.clone(),
            auth_signature: r.auth_signature.clone(),
        }
    }
}

#[derive(Default)]
struct Record {
    /// Every submission sent, by task id (resent later, byte for byte).
    sent: HashMap<String, (Scheme, TaskSubmission)>,
    /// The first answer received per task id.
    answered: HashMap<String, Answer>,
    /// Results received in total, and results that repeated an earlier one.
    results: usize,
    repeats: usize,
    /// Rejections received, by gRPC code.
    rejections: HashMap<i32, usize>,
}

impl Record {
    /// Records a result; panics if the task was answered differently before.
    fn result(&mut self, result: &TaskResult, context: &str) {
        self.results += 1;
        let answer = Answer::from(result);
        match self.answered.get(&result.task_id) {
            Some(earlier) => {
                assert!(
                    *earlier == answer,
                    "{context}: task {} answered with a second, different signature \
                     (output 0x{} then 0x{})",
                    result.task_id,
                    hex::encode(&earlier.output),
                    hex::encode(&answer.output)
                );
                self.repeats += 1;
            }
            None => {
                self.answered.insert(result.task_id.clone(), answer);
            }
        }
    }
}

fn node(fixture: &Arc<Fixture>) -> TestNode {
    TestNode::builder()
        .fixture(fixture.clone())
        .avs(
            AvsSpec::new(AVS)
                .performer(&["--random-output"])
                // The test streams as fast as the node answers and at the end resends every
                // answered task at once (over 20,000 on a fast node): the per-aggregator rate
                // limit (default 5,000/s, burst 10,000) is not what it tests.
                .without_rate_limit(),
        )
        .start()
}

/// Streams new tasks (and resends of earlier ones) as fast as the node takes them until the
/// stream breaks, recording every result.
async fn stream_until_killed(
    node_url: String,
    fixture: Arc<Fixture>,
    record: Arc<Mutex<Record>>,
    seed: u64,
    cycle: usize,
) {
    let Ok(mut client) = TaskStreamClient::connect(node_url).await else {
        return;
    };
    let (sender, outbound) = tokio::sync::mpsc::channel(64);
    let feeder = {
        let record = record.clone();
        let fixture = fixture.clone();
        tokio::spawn(async move {
            let mut rng = Rng(seed);
            for n in 0u64.. {
                // One in five is a resend of a task already sent (answered or not).
                let resend = if n % 5 == 4 {
                    let record = record.lock().unwrap();
                    let ids: Vec<&String> = record.sent.keys().collect();
                    (!ids.is_empty()).then(|| {
                        record.sent[ids[rng.below(ids.len() as u64) as usize]]
                            .1
                            .clone()
                    })
                } else {
                    None
                };
                let submission = resend.unwrap_or_else(|| {
                    // Mostly ECDSA: pairing signatures are slow in debug builds.
                    let scheme = SCHEMES[rng.below(10).saturating_sub(7) as usize];
                    let payload = [cycle as u8, (n >> 8) as u8, n as u8];
                    let task = fixture.task(AVS, scheme, &payload);
                    let submission = fixture.sign(Scheme::Ecdsa, &task);
                    record
                        .lock()
                        .unwrap()
                        .sent
                        .insert(submission.task_id.clone(), (scheme, submission.clone()));
                    submission
                });
                let request = StreamRequest {
                    kind: Some(stream_request::Kind::Task(submission)),
                };
                if sender.send(request).await.is_err() {
                    break;
                }
            }
        })
    };
    if let Ok(response) = client
        .open(tokio_stream::wrappers::ReceiverStream::new(outbound))
        .await
    {
        let mut inbound = response.into_inner();
        while let Ok(Some(event)) = inbound.message().await {
            match event.kind {
                Some(stream_event::Kind::Result(result)) => record
                    .lock()
                    .unwrap()
                    .result(&result, &format!("cycle {cycle}")),
                Some(stream_event::Kind::Rejection(r)) => {
                    *record.lock().unwrap().rejections.entry(r.code).or_default() += 1;
                }
                None => {}
            }
        }
    }
    feeder.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_nine_at_random_moments_never_loses_or_changes_an_answer() {
    let cycles: usize = std::env::var("AVSNODE_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("AVSNODE_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("crash test: {cycles} cycles, AVSNODE_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let fixture = Fixture::new();
    let record = Arc::new(Mutex::new(Record::default()));
    let started = Instant::now();
    for cycle in 0..cycles {
        // Starting proves the ledger opened (the node refuses to serve otherwise).
        let mut node = node(&fixture);
        let streaming = tokio::spawn(stream_until_killed(
            node.url(),
            fixture.clone(),
            record.clone(),
            rng.next() | 1,
            cycle,
        ));
        // Kill at a random moment once results flow (commits are being made).
        let before = record.lock().unwrap().results;
        let waiting = Instant::now();
        while record.lock().unwrap().results == before
            && waiting.elapsed() < Duration::from_secs(30)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(500))).await;
        node.kill();
        tokio::time::timeout(Duration::from_secs(30), streaming)
            .await
            .expect("the stream ends after the kill")
            .unwrap();
        assert!(
            !node.log().contains("\"level\":\"ERROR\"") || !node.log().contains("ledger"),
            "cycle {cycle}: the ledger logged an error:\n{}",
            node.log()
        );
    }
    let (answered, results, repeats, rejections) = {
        let record = record.lock().unwrap();
        let rejections: usize = record.rejections.values().sum();
        (
            record.answered.len(),
            record.results,
            record.repeats,
            rejections,
        )
    };
    println!(
        "crash test: {cycles} kills in {:.1?}; {results} results received for {answered} task ids \
         ({repeats} repeats, all identical); {rejections} rejections",
        started.elapsed()
    );
    assert!(
        answered >= cycles,
        "too few tasks answered to mean anything: {answered}"
    );
    assert!(
        repeats > 0,
        "no task was answered twice: resends did not happen"
    );

    // Every answer received before a crash is served again, byte for byte.
    let node = node(&fixture);
    let _log = node.log_on_panic();
    let sent: Vec<(String, TaskSubmission)> = {
        let record = record.lock().unwrap();
        record
            .answered
            .keys()
            .map(|id| (id.clone(), record.sent[id].1.clone()))
            .collect()
    };
    for chunk in sent.chunks(2000) {
        let events = node
            .stream(chunk.iter().map(|(_, s)| s.clone()).collect())
            .await;
        let mut record = record.lock().unwrap();
        for event in events {
            match event.kind {
                Some(stream_event::Kind::Result(result)) => {
                    record.result(&result, "after the last restart")
                }
                other => panic!("an answered task was not answered again: {other:?}"),
            }
        }
    }
    println!(
        "crash test: all {} answers served again identically",
        sent.len()
    );
}
