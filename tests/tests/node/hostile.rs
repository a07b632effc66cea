//! The hostile matrix over the wire (issue 7), against the real binary: forged, replayed,
//! re-addressed, stale, expired, oversized, truncated, wrong-version, unknown-AVS and malformed
//! traffic, each kind alone and then as a flood — thousands of bad tasks interleaved with honest
//! ones on one task stream while other connections (a second stream, unary calls, raw gRPC
//! frames) flood too. Every bad task gets its code (checked per task, with the message naming its
//! reason), every honest task gets a result that verifies under its operator set's key (ECDSA,
//! BN254, BLS12-381), the rejection metrics count exactly what was sent, and the node serves
//! normally afterwards.
//!
//! The AVS's rate limit is raised out of the way (all traffic comes from 127.0.0.1; rate limiting
//! is tested in `limits.rs`), and `intake.max_message_size` lowered to 64 KiB so oversized messages
//! are cheap to send.
//!
//! The always-on flood keeps at most 16 submissions unanswered per connection, so a debug build
//! on a loaded machine stays busy rather than drowned; honest latency (send → answer) is printed
//! without and with the attack but not asserted: speed is checked by measurement, never by timed
//! assertions on a loaded CI machine. `AVSNODE_MEASURE=1` runs the bigger comparison — honest
//! tasks at a fixed rate, the flood at a fixed rate whatever the node does (open loop) — which
//! asserts that the honest p99 under attack stays within twice its quiet value (release build,
//! nothing else running):
//! `AVSNODE_MEASURE=1 cargo test --release -p avsnode-tests --test node hostile::measure -- --nocapture`.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::{AVS, AvsSpec, Fixture, SCHEMES, TestNode, address, now_ms, now_secs};
use avsnode_aggregator::{Aggregator, NewTask};
use avsnode_proto::executor::executor_service_client::ExecutorServiceClient;
use avsnode_proto::executor::{TaskResult, TaskSubmission};
use avsnode_proto::stream::task_stream_client::TaskStreamClient;
use avsnode_proto::stream::{StreamEvent, StreamRequest, stream_event, stream_request};
use avsnode_signer::Scheme;
use avsnode_signing::LocalKey;
use prost::Message as _;
use prost::bytes::BufMut as _;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::client::Grpc;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

/// The AVS's `max_payload_size` (honest payloads are 4 bytes; the example performer squares at
/// most 8).
const MAX_PAYLOAD: usize = 1024;
/// `intake.max_message_size`.
const MAX_MESSAGE: usize = 64 << 10;
/// Served by nobody.
const UNKNOWN_AVS: &str = "0x000000000000000000000000000000000000dead";
/// The `avs` label of requests naming an AVS the node does not serve (or no parsable one).
const UNKNOWN_LABEL: &str = "unknown";
/// Another operator: the addressee of re-addressed tasks.
const OTHER_OPERATOR: &str = "0x00000000000000000000000000000000000e0e0e";
/// The unary method, for raw frames.
const SUBMIT_TASK: &str = "/eigenlayer.hourglass.v1.ExecutorService/SubmitTask";
/// The streaming method, for raw frames.
const OPEN_STREAM: &str = "/avsnode.v1.TaskStream/Open";
/// Unary calls in flight per flooding connection.
const UNARY_IN_FLIGHT: usize = 64;
/// Answered tasks each replaying kind copies.
const VICTIMS_PER_KIND: usize = 6;
/// Most time one connection's traffic may take to be answered (a loaded 2-core machine).
const LANE_TIMEOUT: Duration = Duration::from_secs(300);

fn start_node() -> TestNode {
    TestNode::builder()
        .avs(
            AvsSpec::new(AVS)
                .max_payload_size(MAX_PAYLOAD)
                .without_rate_limit(),
        )
        .intake_toml(&format!("max_message_size = {MAX_MESSAGE}"))
        .start()
}

/// The hostile kinds, each with the answer it must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    /// Signed by another key in the name of a configured aggregator → PERMISSION_DENIED
    /// `bad_signature`.
    Forged,
    /// A configured aggregator's signature with a signed field changed after → `bad_signature`.
    Tampered,
    /// Signed by an aggregator the AVS does not list → PERMISSION_DENIED `unknown_aggregator`.
    UnknownAggregator,
    /// Validly signed for another operator → PERMISSION_DENIED `wrong_executor`.
    Readdressed,
    /// Another operator's task with `executor_address` rewritten to this node → `bad_signature`
    /// (the aggregator signed the addressee).
    Redirected,
    /// `reference_timestamp` older than `max_staleness` → FAILED_PRECONDITION `stale`.
    Stale,
    /// `reference_timestamp` ahead by more than `max_clock_skew` → FAILED_PRECONDITION `stale`.
    Future,
    /// A signed version-1001 deadline that passed or leaves too little time → DEADLINE_EXCEEDED
    /// `deadline`.
    Expired,
    /// A payload over `max_payload_size` → INVALID_ARGUMENT `payload_too_large`.
    OversizedPayload,
    /// `version` not 1 or 1001 (a future Hourglass 2 included) → INVALID_ARGUMENT `unsupported_version`.
    WrongVersion,
    /// → NOT_FOUND `unknown_avs`.
    UnknownAvs,
    /// → NOT_FOUND `unknown_operator_set`.
    UnknownOperatorSet,
    /// A field that does not parse → INVALID_ARGUMENT `malformed`.
    Malformed,
    /// A copy of an answered task → its first answer, byte for byte, from the ledger.
    Replayed,
    /// An answered task id re-signed with another reference timestamp → FAILED_PRECONDITION
    /// `ledger_conflict`.
    Reissued,
    /// An answered task id re-signed with another payload → its first answer, or
    /// `ledger_conflict`; never a second signed output.
    OtherPayload,
    /// A `StreamRequest` without a task (streams only) → INVALID_ARGUMENT.
    NoTask,
    /// A valid message cut short, sent as raw bytes → the gRPC decoder's INTERNAL, or
    /// INVALID_ARGUMENT when the cut falls between two fields.
    Truncated,
    /// Bytes that are no protobuf message → the gRPC decoder's INTERNAL.
    Corrupt,
    /// A message over `intake.max_message_size` → OUT_OF_RANGE from the gRPC layer.
    OversizedMessage,
}

/// Kinds sent as a `TaskSubmission`, in a unary call or on a stream.
const TASK_KINDS: [Kind; 16] = [
    Kind::Forged,
    Kind::Tampered,
    Kind::UnknownAggregator,
    Kind::Readdressed,
    Kind::Redirected,
    Kind::Stale,
    Kind::Future,
    Kind::Expired,
    Kind::OversizedPayload,
    Kind::WrongVersion,
    Kind::UnknownAvs,
    Kind::UnknownOperatorSet,
    Kind::Malformed,
    Kind::Replayed,
    Kind::Reissued,
    Kind::OtherPayload,
];

/// Kinds sent on task streams.
const STREAM_KINDS: [Kind; 17] = [
    Kind::Forged,
    Kind::Tampered,
    Kind::UnknownAggregator,
    Kind::Readdressed,
    Kind::Redirected,
    Kind::Stale,
    Kind::Future,
    Kind::Expired,
    Kind::OversizedPayload,
    Kind::WrongVersion,
    Kind::UnknownAvs,
    Kind::UnknownOperatorSet,
    Kind::Malformed,
    Kind::Replayed,
    Kind::Reissued,
    Kind::OtherPayload,
    Kind::NoTask,
];

/// Kinds sent as raw message bytes in unary calls.
const WIRE_KINDS: [Kind; 3] = [Kind::Truncated, Kind::Corrupt, Kind::OversizedMessage];

/// Kinds that copy an answered task: each has its own pool of them, so that on one stream the
/// answers of different kinds are never for the same task id.
const VICTIM_KINDS: [Kind; 3] = [Kind::Replayed, Kind::Reissued, Kind::OtherPayload];

/// What goes on the wire.
#[derive(Debug, Clone)]
enum Body {
    /// A `TaskSubmission`: a unary call, or a `StreamRequest` on a stream.
    Task(TaskSubmission),
    /// A `StreamRequest` without a task.
    NoTask,
    /// Message bytes as they are, in a unary call.
    Raw(Vec<u8>),
}

/// What the node must answer.
#[derive(Debug, Clone)]
enum Expect {
    /// An honest task: a result that verifies.
    Signed(Box<NewTask>),
    /// Exactly this earlier answer.
    FirstAnswer(Box<TaskResult>),
    /// This earlier answer, or FAILED_PRECONDITION `ledger_conflict`.
    FirstAnswerOrConflict(Box<TaskResult>),
    /// Refused by the pipeline with this code, counted under this `avs` label and reason.
    Refused {
        code: Code,
        reason: &'static str,
        avs: &'static str,
    },
    /// Refused before the pipeline (gRPC decoding, the stream reader): not a counted rejection.
    RefusedOnTheWire(Code),
}

/// One submission and the answer it must get.
#[derive(Debug, Clone)]
struct Planned {
    /// `None` for an honest task.
    kind: Option<Kind>,
    body: Body,
    expect: Expect,
}

impl Planned {
    fn label(&self) -> String {
        self.kind
            .map_or_else(|| "Honest".to_owned(), |k| format!("{k:?}"))
    }
}

/// One task to build: honest, or of a hostile kind; `n` picks the scheme and the variant.
#[derive(Debug, Clone, Copy)]
enum Spec {
    Honest(usize),
    Bad(Kind, usize),
}

type Outcome = Result<TaskResult, (Code, String)>;

/// A submission with the answer it got, and how long after it was sent (see [`Lane`]).
#[derive(Debug)]
struct Answered {
    planned: Planned,
    outcome: Outcome,
    latency: Duration,
}

#[derive(Debug)]
struct Victim {
    task: NewTask,
    submission: TaskSubmission,
    answer: TaskResult,
}

/// Builds honest and hostile submissions for one node.
#[derive(Debug)]
struct Hostile {
    fixture: Arc<Fixture>,
    /// Per scheme: a configured aggregator's address with another key.
    impostors: Vec<Aggregator>,
    /// An aggregator no AVS lists.
    stranger: Aggregator,
    victims: HashMap<Kind, Vec<Victim>>,
}

impl Hostile {
    /// Keys for the forgers, and the answered tasks the replaying kinds copy (submitted here).
    async fn new(node: &TestNode, tally: &mut Tally) -> Hostile {
        let fixture = node.fixture().clone();
        let impostors = SCHEMES
            .iter()
            .map(|&s| Aggregator::new(fixture.aggregator(s).address, LocalKey::generate(s)))
            .collect();
        let stranger_key = LocalKey::generate(Scheme::Ecdsa);
        let stranger_address = match &stranger_key {
            LocalKey::Ecdsa(k) => k.public_key().address(),
            _ => unreachable!("generated an ECDSA key"),
        };
        let mut victims = HashMap::new();
        for (k, kind) in VICTIM_KINDS.into_iter().enumerate() {
            let mut pool = Vec::new();
            for n in 0..VICTIMS_PER_KIND {
                let task = fixture.task(AVS, SCHEMES[n % 3], &payload(1000 * k + n));
                let submission = fixture.sign(SCHEMES[(n / 3) % 3], &task);
                let answer = node
                    .submit(submission.clone())
                    .await
                    .unwrap_or_else(|s| panic!("victim {kind:?} {n}: {s:?}"));
                fixture.assert_verifies(&answer, &task);
                tally.signed += 1;
                pool.push(Victim {
                    task,
                    submission,
                    answer,
                });
            }
            victims.insert(kind, pool);
        }
        Hostile {
            fixture,
            impostors,
            stranger: Aggregator::new(stranger_address, stranger_key),
            victims,
        }
    }

    fn build_one(&self, spec: Spec) -> Planned {
        match spec {
            Spec::Honest(n) => self.honest(n),
            Spec::Bad(kind, n) => self.hostile(kind, n),
        }
    }

    /// Builds (signs) many, spread over the machine's cores, keeping their grouping.
    fn build(&self, specs: Vec<Vec<Spec>>) -> Vec<Vec<Planned>> {
        let sizes: Vec<usize> = specs.iter().map(Vec::len).collect();
        let flat: Vec<Spec> = specs.into_iter().flatten().collect();
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let chunk = flat.len().div_ceil(threads).max(1);
        let mut built = std::thread::scope(|scope| {
            let workers: Vec<_> = flat
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || part.iter().map(|&s| self.build_one(s)).collect::<Vec<_>>())
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect::<Vec<_>>()
        })
        .into_iter();
        sizes
            .into_iter()
            .map(|size| built.by_ref().take(size).collect())
            .collect()
    }

    /// An honest task for operator set `n % 3`, signed by aggregator `n / 3 % 3`; every other
    /// group of nine is version 1001 with a signed deadline ten minutes ahead.
    fn honest(&self, n: usize) -> Planned {
        let f = &*self.fixture;
        let mut task = f.task(AVS, SCHEMES[n % 3], &payload(n));
        if (n / 9) % 2 == 1 {
            task.deadline_unix_ms = Some(now_ms() + 600_000);
        }
        Planned {
            kind: None,
            body: Body::Task(f.sign(SCHEMES[(n / 3) % 3], &task)),
            expect: Expect::Signed(Box::new(task)),
        }
    }

    /// A task of `kind`: `n % 3` picks the operator set, `n / 3` the variant and the aggregator.
    fn hostile(&self, kind: Kind, n: usize) -> Planned {
        let f = &*self.fixture;
        let set = SCHEMES[n % 3];
        let variant = n / 3;
        let aggregator = SCHEMES[variant % 3];
        let task = || f.task(AVS, set, &payload(n));
        let sign = |task: &NewTask| f.sign(aggregator, task);
        let refused = |code, reason| Expect::Refused {
            code,
            reason,
            avs: AVS,
        };
        let (body, expect) = match kind {
            Kind::Forged => (
                Body::Task(self.impostors[variant % 3].sign(&task())),
                refused(Code::PermissionDenied, "bad_signature"),
            ),
            Kind::Tampered => {
                let mut t = task();
                if variant % 5 == 4 {
                    t.deadline_unix_ms = Some(now_ms() + 600_000);
                }
                let mut s = sign(&t);
                match variant % 5 {
                    0 => s.payload.push(1),
                    1 => s.task_block_number += 1,
                    2 => s.operator_set_id = (s.operator_set_id + 1) % 3,
                    3 => s.reference_timestamp -= 1,
                    _ => s.deadline_unix_ms += 1,
                }
                (
                    Body::Task(s),
                    refused(Code::PermissionDenied, "bad_signature"),
                )
            }
            Kind::UnknownAggregator => (
                Body::Task(self.stranger.sign(&task())),
                refused(Code::PermissionDenied, "unknown_aggregator"),
            ),
            Kind::Readdressed => {
                let mut t = task();
                t.operator = address(OTHER_OPERATOR);
                (
                    Body::Task(sign(&t)),
                    refused(Code::PermissionDenied, "wrong_executor"),
                )
            }
            Kind::Redirected => {
                let mut t = task();
                t.operator = address(OTHER_OPERATOR);
                let mut s = sign(&t);
                s.executor_address = f.operator.to_string();
                (
                    Body::Task(s),
                    refused(Code::PermissionDenied, "bad_signature"),
                )
            }
            Kind::Stale => {
                let mut t = task();
                // max_staleness is 1 h.
                t.reference_timestamp =
                    [now_secs() - 2 * 3600, now_secs() - 86_400, 1][variant % 3];
                (
                    Body::Task(sign(&t)),
                    refused(Code::FailedPrecondition, "stale"),
                )
            }
            Kind::Future => {
                let mut t = task();
                // max_clock_skew is 30 s.
                t.reference_timestamp =
                    [now_secs() + 3600, now_secs() + 120, u32::MAX][variant % 3];
                (
                    Body::Task(sign(&t)),
                    refused(Code::FailedPrecondition, "stale"),
                )
            }
            Kind::Expired => {
                let mut t = task();
                // min_execution_time is 50 ms.
                t.deadline_unix_ms = Some([now_ms() - 1_000, 1, now_ms() + 10][variant % 3]);
                (
                    Body::Task(sign(&t)),
                    refused(Code::DeadlineExceeded, "deadline"),
                )
            }
            Kind::OversizedPayload => {
                let t = f.task(AVS, set, &vec![0x5a; MAX_PAYLOAD + 1 + n % 512]);
                (
                    Body::Task(sign(&t)),
                    refused(Code::InvalidArgument, "payload_too_large"),
                )
            }
            Kind::WrongVersion => {
                let mut s = sign(&task());
                s.version = [0, 2, 3, 1000, u32::MAX][variant % 5];
                (
                    Body::Task(s),
                    refused(Code::InvalidArgument, "unsupported_version"),
                )
            }
            Kind::UnknownAvs => (
                Body::Task(sign(&f.task(UNKNOWN_AVS, set, &payload(n)))),
                Expect::Refused {
                    code: Code::NotFound,
                    reason: "unknown_avs",
                    avs: UNKNOWN_LABEL,
                },
            ),
            Kind::UnknownOperatorSet => {
                let mut t = task();
                t.operator_set_id = 3 + (n % 1000) as u32;
                (
                    Body::Task(sign(&t)),
                    refused(Code::NotFound, "unknown_operator_set"),
                )
            }
            Kind::Malformed => {
                let mut s = sign(&task());
                let mut avs = AVS;
                match variant % 8 {
                    0 => s.task_id = format!("not-a-task-id-{n}"),
                    // 31 bytes.
                    1 => s.task_id.truncate(64),
                    2 => s.aggregator_address = "0xnot-an-address".into(),
                    3 => {
                        s.avs_address = "0x1234".into();
                        avs = UNKNOWN_LABEL;
                    }
                    4 => s.executor_address.clear(),
                    5 => s.signature.clear(),
                    6 => s.reference_timestamp = 0,
                    // Version 1001 without deadline_unix_ms.
                    _ => s.version = 1001,
                }
                (
                    Body::Task(s),
                    Expect::Refused {
                        code: Code::InvalidArgument,
                        reason: "malformed",
                        avs,
                    },
                )
            }
            Kind::Replayed => {
                let v = self.victim(kind, n);
                (
                    Body::Task(v.submission.clone()),
                    Expect::FirstAnswer(Box::new(v.answer.clone())),
                )
            }
            Kind::Reissued => {
                let v = self.victim(kind, n);
                let mut t = v.task.clone();
                t.reference_timestamp -= 1 + (n % 30) as u32;
                (
                    Body::Task(sign(&t)),
                    refused(Code::FailedPrecondition, "ledger_conflict"),
                )
            }
            Kind::OtherPayload => {
                let v = self.victim(kind, n);
                let mut t = v.task.clone();
                t.payload = payload(1_000_000 + n);
                (
                    Body::Task(sign(&t)),
                    Expect::FirstAnswerOrConflict(Box::new(v.answer.clone())),
                )
            }
            Kind::NoTask => (
                Body::NoTask,
                Expect::RefusedOnTheWire(Code::InvalidArgument),
            ),
            Kind::Truncated => {
                let full = sign(&task()).encode_to_vec();
                let cut = (n * 37) % full.len();
                truncated(&full, cut)
            }
            Kind::Corrupt => {
                let rest = sign(&task()).encode_to_vec();
                let bytes = match variant % 4 {
                    // Wire type 7 does not exist.
                    0 => [&[0x0f][..], &rest].concat(),
                    // task_id is not UTF-8.
                    1 => [&[0x0a, 0x02, 0xff, 0xfe][..], &rest].concat(),
                    // A payload longer than the message.
                    2 => [&[0x22, 0xff, 0xff, 0x03][..], &rest[..8]].concat(),
                    // An 11-byte varint.
                    _ => [&[0x38][..], &[0xff; 10], &[0x01], &rest].concat(),
                };
                assert!(
                    TaskSubmission::decode(&bytes[..]).is_err(),
                    "corrupt variant {} decodes",
                    variant % 4
                );
                (Body::Raw(bytes), Expect::RefusedOnTheWire(Code::Internal))
            }
            Kind::OversizedMessage => {
                let t = f.task(AVS, set, &vec![0xab; MAX_MESSAGE + n % 1000]);
                (
                    Body::Raw(sign(&t).encode_to_vec()),
                    Expect::RefusedOnTheWire(Code::OutOfRange),
                )
            }
        };
        Planned {
            kind: Some(kind),
            body,
            expect,
        }
    }

    fn victim(&self, kind: Kind, n: usize) -> &Victim {
        let pool = &self.victims[&kind];
        &pool[n % pool.len()]
    }
}

/// The first `cut` bytes of an encoded submission, and what the node must answer: a cut inside a
/// field does not decode (the gRPC layer's INTERNAL); a cut between two fields is a submission
/// whose last fields are missing: malformed, or, when only `version` is missing (0),
/// unsupported.
fn truncated(full: &[u8], cut: usize) -> (Body, Expect) {
    let bytes = full[..cut].to_vec();
    let expect = match TaskSubmission::decode(&bytes[..]) {
        Ok(decoded) => Expect::Refused {
            code: Code::InvalidArgument,
            reason: if !decoded.executor_address.is_empty() && decoded.version == 0 {
                "unsupported_version"
            } else {
                // A field that does not parse, or version 1001 without its deadline.
                "malformed"
            },
            avs: if decoded.avs_address == AVS {
                AVS
            } else {
                UNKNOWN_LABEL
            },
        },
        Err(_) => Expect::RefusedOnTheWire(Code::Internal),
    };
    (Body::Raw(bytes), expect)
}

/// An honest payload: 4 bytes (the example performer squares it).
fn payload(n: usize) -> Vec<u8> {
    (n as u32).wrapping_add(1).to_be_bytes().to_vec()
}

/// Whether a rejection message names `reason` (the label itself is not on the wire).
fn says(reason: &str, message: &str) -> bool {
    match reason {
        "malformed" => message.starts_with("malformed task"),
        "unsupported_version" => message.starts_with("unsupported version"),
        "payload_too_large" => message.contains("exceeds this AVS's limit"),
        "wrong_executor" => message.contains("is addressed to executor"),
        "unknown_avs" => message.starts_with("AVS ") && message.contains("not served"),
        "unknown_operator_set" => {
            message.starts_with("operator set ") && message.contains("not served")
        }
        "deadline" => message.starts_with("deadline"),
        "stale" => message.starts_with("reference timestamp"),
        "unknown_aggregator" => message.contains("is not allowed to send tasks"),
        "bad_signature" => message.contains("signature does not verify"),
        "ledger_conflict" => message.contains("already signed"),
        _ => false,
    }
}

/// Checks one answer against its expectation (honest results are verified in bulk after).
fn check(answered: &Answered) -> Result<(), String> {
    let ok = match (&answered.planned.expect, &answered.outcome) {
        (Expect::Signed(_), Ok(_)) => true,
        (Expect::FirstAnswer(first), Ok(result)) => result == &**first,
        (Expect::FirstAnswerOrConflict(first), Ok(result)) => result == &**first,
        (Expect::FirstAnswerOrConflict(_), Err((code, message))) => {
            *code == Code::FailedPrecondition && says("ledger_conflict", message)
        }
        (Expect::Refused { code, reason, .. }, Err((got, message))) => {
            got == code && says(reason, message)
        }
        (Expect::RefusedOnTheWire(code), Err((got, _))) => got == code,
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let got = match &answered.outcome {
        Ok(result) => format!("a result for {}", result.task_id),
        Err((code, message)) => format!("{code:?} {message:?}"),
    };
    let expected = match &answered.planned.expect {
        Expect::Signed(_) => "a signed result".to_owned(),
        Expect::FirstAnswer(_) => "the first answer".to_owned(),
        Expect::FirstAnswerOrConflict(_) => "the first answer or ledger_conflict".to_owned(),
        Expect::Refused { code, reason, .. } => format!("{code:?} {reason}"),
        Expect::RefusedOnTheWire(code) => format!("{code:?}"),
    };
    Err(format!(
        "{}: expected {expected}, got {got}",
        answered.planned.label()
    ))
}

/// What the node must have counted, from what was sent and answered.
#[derive(Debug, Default)]
struct Tally {
    /// By (`avs` label, reason).
    rejections: BTreeMap<(String, String), u64>,
    /// Newly signed answers.
    signed: u64,
    /// Answers from the ledger.
    cached: u64,
    /// Submissions sent, by kind.
    sent: BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, answered: &Answered) {
        *self.sent.entry(answered.planned.label()).or_default() += 1;
        let mut reject = |avs: &str, reason: &str| {
            *self
                .rejections
                .entry((avs.to_owned(), reason.to_owned()))
                .or_default() += 1;
        };
        match (&answered.planned.expect, &answered.outcome) {
            (Expect::Signed(_), _) => self.signed += 1,
            (Expect::FirstAnswer(_) | Expect::FirstAnswerOrConflict(_), Ok(_)) => {
                self.cached += 1;
            }
            (Expect::FirstAnswerOrConflict(_), Err(_)) => reject(AVS, "ledger_conflict"),
            (Expect::Refused { reason, avs, .. }, _) => reject(avs, reason),
            _ => {}
        }
    }
}

/// Checks every answer and verifies every honest result; panics with the failures (and the
/// node's log lines other than the expected rejections, which the panic's log tail drowns).
fn check_all(node: &TestNode, answered: &[Answered], tally: &mut Tally) {
    let fixture = node.fixture();
    let mut failures: Vec<String> = answered.iter().filter_map(|a| check(a).err()).collect();
    let honest: Vec<(&TaskResult, &NewTask)> = answered
        .iter()
        .filter_map(|a| match (&a.planned.expect, &a.outcome) {
            (Expect::Signed(task), Ok(result)) => Some((result, &**task)),
            _ => None,
        })
        .collect();
    failures.extend(
        tokio::task::block_in_place(|| fixture.verify_all(&honest))
            .into_iter()
            .map(|e| format!("Honest: {e}")),
    );
    for a in answered {
        tally.add(a);
    }
    if !failures.is_empty() {
        let log = node.log();
        let unexpected: Vec<&str> = log
            .lines()
            .filter(|l| {
                !l.contains("rejected: ")
                    && !l.contains("ledger conflict")
                    && !l.contains("rejection warnings were not logged")
            })
            .collect();
        eprintln!(
            "---- the node's log without its rejections (last 100 lines) ----\n{}",
            unexpected[unexpected.len().saturating_sub(100)..].join("\n")
        );
    }
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for failure in &failures {
        *by_kind
            .entry(failure.split(':').next().unwrap_or_default())
            .or_default() += 1;
    }
    assert!(
        failures.is_empty(),
        "{} of {} answers are wrong ({by_kind:?}); the first:\n{}",
        failures.len(),
        answered.len(),
        failures[..failures.len().min(30)].join("\n")
    );
}

/// The rejection and completion metrics agree with the tally.
fn check_metrics(metrics: &str, tally: &Tally) {
    let counted: BTreeMap<(String, String), u64> =
        samples(metrics, "avsnode_task_rejections_total")
            .into_iter()
            .filter(|(_, value)| *value > 0)
            .map(|(labels, value)| ((labels["avs"].clone(), labels["reason"].clone()), value))
            .collect();
    let expected: BTreeMap<(String, String), u64> = tally
        .rejections
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| (k.clone(), *n))
        .collect();
    assert_eq!(
        counted, expected,
        "avsnode_task_rejections_total (left) is not what was sent (right)"
    );
    let conflicts: u64 = samples(metrics, "avsnode_ledger_conflicts_total")
        .into_iter()
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        conflicts,
        expected
            .get(&(AVS.to_owned(), "ledger_conflict".to_owned()))
            .copied()
            .unwrap_or(0),
        "avsnode_ledger_conflicts_total"
    );
    let completed = |outcome: &str| -> u64 {
        samples(metrics, "avsnode_tasks_completed_total")
            .into_iter()
            .filter(|(labels, _)| labels["avs"] == AVS && labels["outcome"] == outcome)
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(completed("signed"), tally.signed, "tasks completed, signed");
    assert_eq!(completed("cached"), tally.cached, "tasks completed, cached");
}

/// The samples of counter `name`: labels and value.
fn samples(metrics: &str, name: &str) -> Vec<(HashMap<String, String>, u64)> {
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix('{')?;
            let (labels, value) = rest.rsplit_once("} ")?;
            let labels = labels
                .split(',')
                .filter_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    Some((k.to_owned(), v.trim_matches('"').to_owned()))
                })
                .collect();
            Some((labels, value.trim().parse::<f64>().ok()? as u64))
        })
        .collect()
}

/// Puts message bytes on the wire as they are (in a gRPC frame) and decodes answers as `T`: how
/// truncated, corrupt and oversized messages are sent.
#[derive(Debug)]
struct RawCodec<T>(PhantomData<T>);

impl<T> Default for RawCodec<T> {
    fn default() -> Self {
        RawCodec(PhantomData)
    }
}

impl<T: prost::Message + Default + Send + 'static> Codec for RawCodec<T> {
    type Encode = Vec<u8>;
    type Decode = T;
    type Encoder = RawEncoder;
    type Decoder = MessageDecoder<T>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> MessageDecoder<T> {
        MessageDecoder(PhantomData)
    }
}

#[derive(Debug)]
struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

#[derive(Debug)]
struct MessageDecoder<T>(PhantomData<T>);

impl<T: prost::Message + Default> Decoder for MessageDecoder<T> {
    type Item = T;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<T>, Status> {
        T::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

/// A new connection to the node.
async fn connect(url: &str) -> Channel {
    Channel::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// One `SubmitTask` call with `bytes` as its message.
async fn submit_raw(grpc: &mut Grpc<Channel>, bytes: Vec<u8>) -> Result<TaskResult, Status> {
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("connection not ready: {e}")))?;
    grpc.unary(
        Request::new(bytes),
        PathAndQuery::from_static(SUBMIT_TASK),
        RawCodec::<TaskResult>::default(),
    )
    .await
    .map(Response::into_inner)
}

/// One connection's traffic: a batch sent every `period`, the first at the start. With a
/// `window`, at most that many submissions are unanswered at once (the sender waits), and
/// latency counts from the actual send; without, the schedule is kept whatever the node does
/// (open loop), and latency counts from the scheduled send.
#[derive(Debug)]
struct Lane {
    name: &'static str,
    period: Duration,
    window: Option<usize>,
    batches: Vec<Vec<Planned>>,
}

/// Sends the lane on one task stream (its own connection) from `start`, and collects one event
/// per submission, matched by task id.
async fn drive_stream(url: String, lane: Lane, start: Instant) -> Vec<Answered> {
    let Lane {
        name,
        period,
        window,
        batches,
    } = lane;
    let mut client = TaskStreamClient::new(connect(&url).await);
    let mut planned = Vec::new();
    let mut scheduled = Vec::new();
    let mut waiting: HashMap<String, Vec<usize>> = HashMap::new();
    let mut requests = Vec::new();
    for (b, batch) in batches.into_iter().enumerate() {
        let mut batch_requests = Vec::with_capacity(batch.len());
        for p in batch {
            let (id, kind) = match &p.body {
                Body::Task(s) => (
                    s.task_id.clone(),
                    Some(stream_request::Kind::Task(s.clone())),
                ),
                Body::NoTask => (String::new(), None),
                Body::Raw(_) => unreachable!("raw bytes go in unary calls"),
            };
            waiting.entry(id).or_default().push(planned.len());
            batch_requests.push(StreamRequest { kind });
            scheduled.push(start + period * b as u32);
            planned.push(p);
        }
        requests.push(batch_requests);
    }
    let total = planned.len();
    let window = window.map(|w| Arc::new(Semaphore::new(w)));
    let sent_at = Arc::new(std::sync::Mutex::new(scheduled));
    let (sender, outbound) = mpsc::channel(256);
    let sending = tokio::spawn({
        let (window, sent_at) = (window.clone(), sent_at.clone());
        async move {
            let mut tick = tokio::time::interval_at(start.into(), period);
            let mut index = 0;
            for batch in requests {
                tick.tick().await;
                for request in batch {
                    if let Some(window) = &window {
                        window.acquire().await.unwrap().forget();
                        sent_at.lock().unwrap()[index] = Instant::now();
                    }
                    index += 1;
                    if sender.send(request).await.is_err() {
                        return;
                    }
                }
            }
            // Open until every answer is in, as a long-lived aggregator stream is.
            sender.closed().await;
        }
    });
    let mut inbound = client
        .open(ReceiverStream::new(outbound))
        .await
        .unwrap()
        .into_inner();
    let mut outcomes: Vec<Option<(Outcome, Duration)>> = (0..total).map(|_| None).collect();
    let collect = async {
        for received in 0..total {
            let event = match inbound.message().await {
                Ok(Some(event)) => event,
                Ok(None) => panic!("{name}: the stream ended after {received} of {total} events"),
                Err(status) => {
                    panic!(
                        "{name}: the stream failed after {received} of {total} events: {status:?}"
                    )
                }
            };
            let at = Instant::now();
            let (id, outcome) = match event.kind {
                Some(stream_event::Kind::Result(result)) => (result.task_id.clone(), Ok(result)),
                Some(stream_event::Kind::Rejection(r)) => {
                    (r.task_id, Err((Code::from(r.code), r.message)))
                }
                None => panic!("{name}: an event without a result or a rejection"),
            };
            let index = waiting
                .get_mut(&id)
                .and_then(Vec::pop)
                .unwrap_or_else(|| panic!("{name}: an event for task {id:?}, not waited for"));
            let sent = sent_at.lock().unwrap()[index];
            outcomes[index] = Some((outcome, at.saturating_duration_since(sent)));
            if let Some(window) = &window {
                window.add_permits(1);
            }
        }
    };
    tokio::time::timeout(LANE_TIMEOUT, collect)
        .await
        .unwrap_or_else(|_| panic!("{name}: not every event within {LANE_TIMEOUT:?}"));
    drop(inbound);
    sending.abort();
    planned
        .into_iter()
        .zip(outcomes)
        .map(|(planned, outcome)| {
            let (outcome, latency) = outcome.unwrap();
            Answered {
                planned,
                outcome,
                latency,
            }
        })
        .collect()
}

/// Sends the lane as unary calls on one connection from `start` (at most its window, or
/// [`UNARY_IN_FLIGHT`], at once): typed submissions, or raw bytes.
async fn drive_calls(url: String, lane: Lane, start: Instant) -> Vec<Answered> {
    let channel = connect(&url).await;
    let typed = ExecutorServiceClient::new(channel.clone());
    let raw = Grpc::new(channel);
    let in_flight = Arc::new(Semaphore::new(lane.window.unwrap_or(UNARY_IN_FLIGHT)));
    let windowed = lane.window.is_some();
    let mut tick = tokio::time::interval_at(start.into(), lane.period);
    let mut calls = Vec::new();
    for (b, batch) in lane.batches.into_iter().enumerate() {
        tick.tick().await;
        let scheduled = start + lane.period * b as u32;
        for planned in batch {
            let permit = in_flight.clone().acquire_owned().await.unwrap();
            let sent = if windowed { Instant::now() } else { scheduled };
            let (mut typed, mut raw) = (typed.clone(), raw.clone());
            calls.push(tokio::spawn(async move {
                let outcome = match &planned.body {
                    Body::Task(s) => typed.submit_task(s.clone()).await.map(Response::into_inner),
                    Body::Raw(bytes) => submit_raw(&mut raw, bytes.clone()).await,
                    Body::NoTask => unreachable!("only streams carry requests without a task"),
                };
                drop(permit);
                Answered {
                    planned,
                    outcome: outcome.map_err(|s| (s.code(), s.message().to_owned())),
                    latency: sent.elapsed(),
                }
            }));
        }
    }
    let name = lane.name;
    let mut answered = Vec::with_capacity(calls.len());
    for call in calls {
        let one = tokio::time::timeout(LANE_TIMEOUT, call)
            .await
            .unwrap_or_else(|_| panic!("{name}: a call took over {LANE_TIMEOUT:?}"));
        answered.push(one.unwrap());
    }
    answered
}

/// The traffic of one phase: ticks of `period`; the honest stream carries one honest task and
/// `bad_per_honest` bad ones per tick; under attack, other connections flood at the same time.
#[derive(Debug, Clone, Copy)]
struct Shape {
    ticks: usize,
    period: Duration,
    /// Most unanswered submissions per connection (closed loop), or none (open loop).
    window: Option<usize>,
    /// Bad tasks after each honest one on the honest stream.
    bad_per_honest: usize,
    /// Bad tasks per tick on a second task stream.
    stream_flood: usize,
    /// Unary calls per tick on a third connection; every tenth is honest.
    unary_flood: usize,
    /// Raw frames (truncated, corrupt, oversized) per tick on a fourth connection.
    raw_flood: usize,
}

impl Shape {
    /// The always-on test: 150 honest tasks on the stream and 60 unary, 2,790 bad; offered
    /// over 3 s, but with at most 16 unanswered per connection, so that a debug build on a
    /// loaded machine is kept busy, not drowned. (Drowned for 15 s, its health checks of the
    /// performer time out and it restarts a healthy performer: docs/PERFORMANCE.md, "Under
    /// attack".)
    const TEST: Shape = Shape {
        ticks: 150,
        period: Duration::from_millis(20),
        window: Some(16),
        bad_per_honest: 8,
        stream_flood: 6,
        unary_flood: 4,
        raw_flood: 1,
    };

    /// The measurement: 10 s per phase, 100 honest tasks/s on the stream (and 30/s unary under
    /// attack), with about 1,900 bad tasks/s under attack.
    const MEASURE: Shape = Shape {
        ticks: 1000,
        period: Duration::from_millis(10),
        window: None,
        bad_per_honest: 10,
        stream_flood: 5,
        unary_flood: 3,
        raw_flood: 1,
    };

    /// The lanes' specs: the honest stream, then under attack the flooding stream, the unary
    /// calls and the raw frames.
    fn specs(self, attack: bool) -> Vec<(&'static str, Vec<Vec<Spec>>)> {
        let per_tick = |count: usize, spec: &dyn Fn(usize) -> Spec| -> Vec<Vec<Spec>> {
            (0..self.ticks)
                .map(|t| (0..count).map(|i| spec(t * count + i)).collect())
                .collect()
        };
        let bad = |kinds: &'static [Kind]| {
            move |j: usize| Spec::Bad(kinds[j % kinds.len()], j / kinds.len())
        };
        let mut honest_stream: Vec<Vec<Spec>> =
            (0..self.ticks).map(|t| vec![Spec::Honest(t)]).collect();
        if !attack {
            return vec![("honest stream", honest_stream)];
        }
        let stream_bad = bad(&STREAM_KINDS);
        for (t, batch) in honest_stream.iter_mut().enumerate() {
            batch.extend((0..self.bad_per_honest).map(|i| stream_bad(t * self.bad_per_honest + i)));
        }
        let task_bad = bad(&TASK_KINDS);
        vec![
            ("honest stream", honest_stream),
            ("flooding stream", per_tick(self.stream_flood, &stream_bad)),
            (
                "unary",
                per_tick(self.unary_flood, &|j| {
                    if j % 10 == 9 {
                        Spec::Honest(j)
                    } else {
                        task_bad(j)
                    }
                }),
            ),
            ("raw frames", per_tick(self.raw_flood, &bad(&WIRE_KINDS))),
        ]
    }
}

/// Runs one phase against the node, checks every answer, adds it to `tally`, and returns the
/// latencies of the honest stream's honest tasks.
async fn run_phase(
    node: &TestNode,
    hostile: &Arc<Hostile>,
    shape: Shape,
    attack: bool,
    tally: &mut Tally,
) -> Vec<Duration> {
    let building = Instant::now();
    let built = tokio::task::block_in_place(|| {
        shape
            .specs(attack)
            .into_iter()
            .map(|(name, specs)| Lane {
                name,
                period: shape.period,
                window: shape.window,
                batches: hostile.build(specs),
            })
            .collect::<Vec<_>>()
    });
    let built_in = building.elapsed();
    let sent: usize = built
        .iter()
        .map(|l| l.batches.iter().map(Vec::len).sum::<usize>())
        .sum();
    // Every lane connects first; all start together.
    let start = Instant::now() + Duration::from_millis(500);
    let url = node.url();
    let mut lanes = built.into_iter();
    let honest_lane = lanes.next().unwrap();
    // The honest stream on a runtime of its own, so the flooding clients in this process do not
    // delay the reading of its answers.
    let honest = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(drive_stream(url, honest_lane, start))
        })
    };
    let floods: Vec<_> = lanes
        .map(|lane| {
            let url = url.clone();
            if lane.name.contains("stream") {
                tokio::spawn(drive_stream(url, lane, start))
            } else {
                tokio::spawn(drive_calls(url, lane, start))
            }
        })
        .collect();
    let threads = Arc::new(AtomicUsize::new(0));
    let sampling = tokio::spawn(sample_threads(node.pid(), threads.clone()));
    let honest = honest.await.unwrap();
    let mut answered = Vec::new();
    for flood in floods {
        answered.extend(flood.await.unwrap());
    }
    let wall = start.elapsed();
    sampling.abort();
    let latencies: Vec<Duration> = honest
        .iter()
        .filter(|a| matches!(a.planned.expect, Expect::Signed(_)))
        .map(|a| a.latency)
        .collect();
    answered.extend(honest);
    let honest_count = answered.iter().filter(|a| a.planned.kind.is_none()).count();
    eprintln!(
        "{}: {sent} submissions ({honest_count} honest, {} hostile; built in {:.1} s) answered in {:.1} s, node threads at most {}; honest stream p50 {:.1} ms, p99 {:.1} ms",
        if attack { "under attack" } else { "quiet" },
        sent - honest_count,
        built_in.as_secs_f64(),
        wall.as_secs_f64(),
        threads.load(Ordering::Relaxed),
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
    );
    check_all(node, &answered, tally);
    latencies
}

/// Records the most threads the node process had (Linux `/proc`; nothing elsewhere), sampled
/// every 100 ms: a flood must not grow its blocking pool without bound.
async fn sample_threads(pid: Option<u32>, most: Arc<AtomicUsize>) {
    let Some(pid) = pid else { return };
    loop {
        let threads = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("Threads:"))
                    .and_then(|n| n.trim().parse().ok())
            });
        if let Some(n) = threads {
            most.fetch_max(n, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn percentile(latencies: &[Duration], p: f64) -> Duration {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// After the traffic: a fresh honest task of every scheme is signed, on a unary call and on a new
/// stream; nothing in the node panicked; the metrics count what was sent.
async fn assert_healthy(node: &TestNode, tally: &mut Tally) {
    let fixture = node.fixture();
    let mut tasks = Vec::new();
    for scheme in SCHEMES {
        let task = fixture.task(AVS, scheme, &[7, 7]);
        let result = node
            .submit(fixture.sign(scheme, &task))
            .await
            .unwrap_or_else(|s| panic!("an honest {scheme} task after the traffic: {s:?}"));
        fixture.assert_verifies(&result, &task);
        tasks.push(fixture.task(AVS, scheme, &[8, 8]));
    }
    let events = node
        .stream(
            tasks
                .iter()
                .map(|t| fixture.sign(Scheme::Bn254, t))
                .collect(),
        )
        .await;
    for event in events {
        match event.kind {
            Some(stream_event::Kind::Result(result)) => {
                let task = tasks
                    .iter()
                    .find(|t| result.task_id.parse().ok() == Some(t.task_id))
                    .unwrap();
                fixture.assert_verifies(&result, task);
            }
            other => panic!("an honest task on a new stream after the traffic: {other:?}"),
        }
    }
    tally.signed += 6;
    let log = node.log();
    assert!(!log.contains("panicked"), "the node's log shows a panic");
    check_metrics(&node.scrape_metrics().await, tally);
}

fn print_sent(tally: &Tally) {
    let line: Vec<String> = tally.sent.iter().map(|(k, n)| format!("{k} {n}")).collect();
    eprintln!("sent: {}", line.join(", "));
}

/// Every kind, each variant with each operator set, on its own: in unary calls, on one task
/// stream, and (truncated, corrupt, oversized) as raw frames. Each gets its code and reason.
#[tokio::test(flavor = "multi_thread")]
async fn each_hostile_kind_gets_its_code() {
    let node = start_node();
    let _log = node.log_on_panic();
    let mut tally = Tally::default();
    let hostile = Arc::new(Hostile::new(&node, &mut tally).await);
    // 24 of each: the eight variants of the kind with the most, each with all three sets.
    let kinds = |kinds: &[Kind]| -> Vec<Vec<Spec>> {
        let mut specs: Vec<Spec> = kinds
            .iter()
            .flat_map(|&k| (0..24).map(move |n| Spec::Bad(k, n)))
            .collect();
        specs.extend((0..9).map(Spec::Honest));
        vec![specs]
    };
    let lanes = tokio::task::block_in_place(|| {
        [
            ("unary", kinds(&TASK_KINDS)),
            ("stream", kinds(&STREAM_KINDS)),
            ("raw frames", kinds(&WIRE_KINDS)),
        ]
        .map(|(name, specs)| Lane {
            name,
            period: Duration::from_millis(1),
            window: None,
            batches: hostile.build(specs),
        })
    });
    let url = node.url();
    let start = Instant::now();
    let mut answered = Vec::new();
    for lane in lanes {
        answered.extend(if lane.name == "stream" {
            drive_stream(url.clone(), lane, start).await
        } else {
            drive_calls(url.clone(), lane, start).await
        });
    }
    // The table an operator would see: kind → codes.
    let mut codes: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for a in &answered {
        let code = match &a.outcome {
            Ok(_) => "result".to_owned(),
            Err((code, _)) => format!("{code:?}"),
        };
        *codes
            .entry(a.planned.label())
            .or_default()
            .entry(code)
            .or_default() += 1;
    }
    for (kind, codes) in &codes {
        eprintln!("{kind:>20}: {codes:?}");
    }
    check_all(&node, &answered, &mut tally);
    assert_healthy(&node, &mut tally).await;
}

/// Every prefix of a valid submission, as the message of a unary call: the node refuses each (the
/// gRPC decoder's INTERNAL inside a field; INVALID_ARGUMENT between fields) and keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn every_truncation_of_a_submission_is_refused() {
    let node = start_node();
    let _log = node.log_on_panic();
    let fixture = node.fixture();
    let mut tally = Tally::default();
    let mut planned = Vec::new();
    for (i, scheme) in SCHEMES.into_iter().enumerate() {
        let mut task = fixture.task(AVS, scheme, &payload(i));
        if i == 1 {
            task.deadline_unix_ms = Some(now_ms() + 600_000);
        }
        let full = fixture.sign(scheme, &task).encode_to_vec();
        for cut in 0..full.len() {
            let (body, expect) = truncated(&full, cut);
            planned.push(Planned {
                kind: Some(Kind::Truncated),
                body,
                expect,
            });
        }
    }
    let between_fields = planned
        .iter()
        .filter(|p| matches!(p.expect, Expect::Refused { .. }))
        .count();
    let lane = Lane {
        name: "truncations",
        period: Duration::from_millis(1),
        window: None,
        batches: vec![planned],
    };
    let answered = drive_calls(node.url(), lane, Instant::now()).await;
    eprintln!(
        "{} truncations, {between_fields} of them between fields",
        answered.len()
    );
    check_all(&node, &answered, &mut tally);
    assert_healthy(&node, &mut tally).await;
}

/// The flood: thousands of bad tasks of every kind interleaved with honest ones on one task
/// stream, while a second stream, unary calls and raw frames flood on other connections. Every
/// bad task gets its code, every honest task is signed correctly, the metrics count exactly what
/// was sent, and the node serves normally after. Honest latency is printed, without and with the
/// attack (not asserted: see the module doc).
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_hostile_tasks_does_not_disturb_honest_ones() {
    let node = start_node();
    let _log = node.log_on_panic();
    let began = Instant::now();
    let mut tally = Tally::default();
    let hostile = Arc::new(Hostile::new(&node, &mut tally).await);
    let quiet = run_phase(&node, &hostile, Shape::TEST, false, &mut tally).await;
    let attack = run_phase(&node, &hostile, Shape::TEST, true, &mut tally).await;
    assert_healthy(&node, &mut tally).await;
    print_sent(&tally);
    // Hundreds of forged tasks a second, a few warnings a second (node/src/pipeline/,
    // REJECTION_WARNINGS_PER_SECOND = 10): each second's window lets ten through.
    let log = node.log();
    let warned = log
        .lines()
        .filter(|l| l.contains("\"WARN\"") && l.contains("rejected: "))
        .count();
    let windows = began.elapsed().as_secs() as usize + 1;
    assert!(
        warned <= 10 * windows,
        "{warned} rejection warnings in {windows} s: the log is not throttled"
    );
    assert!(
        log.contains("rejection warnings were not logged"),
        "the warnings held back are not counted in the log"
    );
    eprintln!(
        "honest stream latency: quiet p50 {:.1} ms p99 {:.1} ms; under attack p50 {:.1} ms p99 {:.1} ms ({:.1} s in all)",
        ms(percentile(&quiet, 0.5)),
        ms(percentile(&quiet, 0.99)),
        ms(percentile(&attack, 0.5)),
        ms(percentile(&attack, 0.99)),
        began.elapsed().as_secs_f64()
    );
}

/// The measurement (`AVSNODE_MEASURE=1`, release): honest tasks at a fixed 100/s on a task stream,
/// 10 s per phase, without and with the flood of [`Shape::MEASURE`], three rounds in alternating
/// order. Prints p50/p99 both ways and asserts the honest p99 under attack is at most twice the
/// quiet one.
#[tokio::test(flavor = "multi_thread")]
async fn measure_honest_latency_under_attack() {
    if std::env::var_os("AVSNODE_MEASURE").is_none() {
        eprintln!("skipped: set AVSNODE_MEASURE=1 (and build with --release) to measure");
        return;
    }
    const ROUNDS: usize = 3;
    let node = start_node();
    let _log = node.log_on_panic();
    let mut tally = Tally::default();
    let hostile = Arc::new(Hostile::new(&node, &mut tally).await);
    // Warm-up (connections, performer, ledger), not counted.
    let warm_up = Shape {
        ticks: 200,
        ..Shape::MEASURE
    };
    run_phase(&node, &hostile, warm_up, true, &mut tally).await;
    let (mut quiet, mut attack) = (Vec::new(), Vec::new());
    let mut rounds = Vec::new();
    for round in 0..ROUNDS {
        // Alternating, so drift (ledger growth, a neighbour's build) falls on both sides.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        let mut p99 = [Duration::ZERO; 2];
        for under_attack in order {
            let latencies =
                run_phase(&node, &hostile, Shape::MEASURE, under_attack, &mut tally).await;
            p99[usize::from(under_attack)] = percentile(&latencies, 0.99);
            if under_attack {
                attack.extend(latencies);
            } else {
                quiet.extend(latencies);
            }
        }
        rounds.push(p99);
    }
    assert_healthy(&node, &mut tally).await;
    print_sent(&tally);
    for (round, [q, a]) in rounds.iter().enumerate() {
        eprintln!(
            "round {}: honest p99 quiet {:.1} ms, under attack {:.1} ms",
            round + 1,
            ms(*q),
            ms(*a)
        );
    }
    let (q50, q99) = (percentile(&quiet, 0.5), percentile(&quiet, 0.99));
    let (a50, a99) = (percentile(&attack, 0.5), percentile(&attack, 0.99));
    eprintln!(
        "honest latency over {ROUNDS} rounds ({} tasks each way): quiet p50 {:.1} ms p99 {:.1} ms; under attack p50 {:.1} ms p99 {:.1} ms; p99 ratio {:.2}",
        quiet.len(),
        ms(q50),
        ms(q99),
        ms(a50),
        ms(a99),
        a99.as_secs_f64() / q99.as_secs_f64()
    );
    assert!(
        a99 <= 2 * q99,
        "honest p99 under attack {:.1} ms is over twice the quiet p99 {:.1} ms",
        ms(a99),
        ms(q99)
    );
}

/// A frame that does not decode (truncated, corrupt) or is over `intake.max_message_size` on a
/// task stream ends that stream — tonic's reader cannot go on after it — after the tasks read
/// before it are answered; the task sent after it gets no answer (and is not run). A stream on
/// another connection, open all along, is not disturbed, and new streams are served.
///
/// Caveat: the node ends such a stream with status OK (`grpc-status: 0`), so the aggregator is
/// not told why; printed here, not asserted, until the node reports the decoding error.
#[tokio::test(flavor = "multi_thread")]
async fn a_frame_that_does_not_decode_ends_only_its_stream() {
    let node = start_node();
    let _log = node.log_on_panic();
    let fixture = node.fixture();
    let frame = |task: &NewTask| {
        StreamRequest {
            kind: Some(stream_request::Kind::Task(
                fixture.sign(Scheme::Ecdsa, task),
            )),
        }
        .encode_to_vec()
    };
    let whole = frame(&fixture.task(AVS, Scheme::Ecdsa, &[1]));
    let broken: [(&str, Vec<u8>); 3] = [
        ("truncated", whole[..whole.len() / 2].to_vec()),
        ("corrupt", vec![0x0f, 1, 2, 3]),
        (
            "oversized",
            frame(&fixture.task(AVS, Scheme::Ecdsa, &vec![1; MAX_MESSAGE])),
        ),
    ];
    // A bystander stream on its own connection, open across the three breaks.
    let (bystander, bystander_out) = mpsc::channel(4);
    let mut bystander_in = TaskStreamClient::new(connect(&node.url()).await)
        .open(ReceiverStream::new(bystander_out))
        .await
        .unwrap()
        .into_inner();
    for (n, (what, bad)) in broken.into_iter().enumerate() {
        let mut grpc = Grpc::new(connect(&node.url()).await);
        grpc.ready().await.unwrap();
        let (sender, outbound) = mpsc::channel(4);
        let before = fixture.task(AVS, SCHEMES[n], &payload(n));
        sender.send(frame(&before)).await.unwrap();
        let mut inbound = grpc
            .streaming(
                Request::new(ReceiverStream::new(outbound)),
                PathAndQuery::from_static(OPEN_STREAM),
                RawCodec::<StreamEvent>::default(),
            )
            .await
            .unwrap()
            .into_inner();
        match inbound.message().await {
            Ok(Some(StreamEvent {
                kind: Some(stream_event::Kind::Result(result)),
            })) => fixture.assert_verifies(&result, &before),
            other => panic!("{what}: the task before the broken frame: {other:?}"),
        }
        sender.send(bad).await.unwrap();
        let after = fixture.task(AVS, SCHEMES[n], &payload(10 + n));
        // The node may have stopped reading already.
        let _ = sender.send(frame(&after)).await;
        let end = tokio::time::timeout(Duration::from_secs(20), inbound.message())
            .await
            .unwrap_or_else(|_| panic!("{what}: the stream neither ended nor answered in 20 s"));
        // The stream ends with the read error, so the client learns why.
        let status = match end {
            Err(status) => status,
            other => panic!("{what}: the stream should end with the read error, got {other:?}"),
        };
        assert_ne!(status.code(), Code::Ok, "{what}: {status:?}");
        eprintln!("{what} frame: the stream ended with {status:?}");

        // The bystander is served meanwhile.
        let task = fixture.task(AVS, SCHEMES[n], &payload(20 + n));
        bystander
            .send(StreamRequest {
                kind: Some(stream_request::Kind::Task(
                    fixture.sign(Scheme::Bls12381, &task),
                )),
            })
            .await
            .unwrap();
        match tokio::time::timeout(Duration::from_secs(20), bystander_in.message()).await {
            Ok(Ok(Some(StreamEvent {
                kind: Some(stream_event::Kind::Result(result)),
            }))) => fixture.assert_verifies(&result, &task),
            other => panic!("{what}: the bystander stream after the break: {other:?}"),
        }
    }
    drop(bystander);
    // The three tasks answered before the broken frames, and the bystander's three.
    let mut tally = Tally {
        signed: 6,
        ..Tally::default()
    };
    assert_healthy(&node, &mut tally).await;
}

/// Inputs that panicked a handler (issue 14, §3), through the real binary: a `grpc-timeout`
/// header of `18446744073709551615S` on a unary call (unsigned, before any other check), and a
/// signed version-1001 task whose `deadline_unix_ms` is `u64::MAX` (it answered INTERNAL and
/// leaked its in-flight slot, so SIGTERM waited the whole grace for phantom tasks). Each is now
/// INVALID_ARGUMENT naming the field, nothing panics, the node keeps serving, and SIGTERM finds
/// nothing in flight.
#[tokio::test(flavor = "multi_thread")]
async fn overflowing_deadlines_are_invalid_argument_and_leak_nothing() {
    let mut node = TestNode::builder().shutdown_grace("30s").start();
    let fixture = node.fixture().clone();
    let mut client = node.client().await;
    for value in [
        "18446744073709551615S",
        "999999999S",
        "10",
        "S",
        "-1S",
        "1.5S",
        "10s",
    ] {
        let task = fixture.task(AVS, Scheme::Ecdsa, &[1]);
        let mut request = Request::new(fixture.sign(Scheme::Ecdsa, &task));
        request
            .metadata_mut()
            .insert("grpc-timeout", value.parse().unwrap());
        let status = client.submit_task(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{value}: {status:?}");
        assert!(
            status.message().contains("grpc-timeout"),
            "{value}: {status:?}"
        );
    }
    // The longest valid header (8 digits of hours) is cut to the node's maximum, and signed.
    let task = fixture.task(AVS, Scheme::Bn254, &[2]);
    let mut request = Request::new(fixture.sign(Scheme::Ecdsa, &task));
    request
        .metadata_mut()
        .insert("grpc-timeout", "99999999H".parse().unwrap());
    let result = client.submit_task(request).await.unwrap().into_inner();
    fixture.assert_verifies(&result, &task);

    // Signed deadlines beyond what a task may take, u64::MAX first: refused, and nothing leaks.
    for (i, deadline) in [u64::MAX, u64::MAX - 1, now_ms() + 25 * 3600 * 1000]
        .into_iter()
        .cycle()
        .take(30)
        .enumerate()
    {
        let mut task = fixture.task(AVS, SCHEMES[i % 3], &[3]);
        task.deadline_unix_ms = Some(deadline);
        let status = node
            .submit(fixture.sign(Scheme::Ecdsa, &task))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{deadline}: {status:?}"
        );
        assert!(status.message().contains("deadline_unix_ms"), "{status:?}");
    }
    for scheme in SCHEMES {
        let task = fixture.task(AVS, scheme, &[4]);
        let result = node.submit(fixture.sign(scheme, &task)).await.unwrap();
        fixture.assert_verifies(&result, &task);
    }

    let (status, took) = node.stop();
    let log = node.log();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(!log.contains("panicked"), "a handler panicked:\n{log}");
    assert!(
        !log.contains("grace period over"),
        "SIGTERM waited for tasks that were not running:\n{log}"
    );
    eprintln!("stopped in {took:?} with a 30 s grace");
}
