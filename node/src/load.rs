//! The load generator of `avsnode demo` and `avsnode bench`: sends pre-signed tasks to a node over
//! its `TaskStream` or its unary `SubmitTask`, and measures what comes back.
//!
//! Two ways to load a node ([`Pacing`]):
//! - **Closed loop**: at most `inflight` tasks unanswered; the next one goes out as soon as an
//!   answer frees a slot. That saturates the node and measures its throughput. The time a task
//!   takes is then mostly time spent waiting in the node's queue behind the others, not the
//!   node's latency.
//! - **Open loop**: task `i` is due at `start + i / rate`, whatever the node does. Its latency is
//!   counted from that intended send time, not from when it actually went out: if the node (or
//!   this client) stalls, the tasks due during the stall are late by the stall, and that shows
//!   in the percentiles (no coordinated omission). `inflight` is then only a safety cap.
//!
//! Tasks are signed before they get here: an aggregator's signing cost is not the node's. The
//! latencies of completed tasks go into an HDR histogram; failures are counted by gRPC code and by
//! the kind of their message.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use avsnode_proto::executor::executor_service_client::ExecutorServiceClient;
use avsnode_proto::executor::{TaskResult, TaskSubmission};
use avsnode_proto::stream::task_stream_client::TaskStreamClient;
use avsnode_proto::stream::{StreamEvent, StreamRequest, stream_event, stream_request};
use avsnode_signer::messages::TaskId;
use hdrhistogram::Histogram;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the progress line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// Distinct error messages kept (after [`message_kind`]); the rest are counted as one.
const MAX_ERROR_KINDS: usize = 64;

/// Why a load run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The target is not a URL tonic can connect to.
    #[error("{target} is not a node URL (http://HOST:PORT or https://HOST:PORT)")]
    Target {
        /// The target as given.
        target: String,
        /// What tonic said.
        #[source]
        source: tonic::transport::Error,
    },
    /// An `https://` target without a CA to check the node's certificate against.
    #[error(
        "{target}: https needs the CA that issued the node's certificate (--ca-cert; this build trusts no system roots, give the system bundle for a public CA)"
    )]
    NoCa {
        /// The target.
        target: String,
    },
    /// TLS settings for an `http://` target.
    #[error("{target}: TLS settings given for a plaintext http:// target (use https://)")]
    TlsForPlaintext {
        /// The target.
        target: String,
    },
    /// A certificate or key file could not be read.
    #[error("reading the {what} {}", path.display())]
    Read {
        /// Which file (`CA certificate`, `client certificate`, `client key`).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS settings were refused.
    #[error("the TLS settings for {target}")]
    Tls {
        /// The target.
        target: String,
        /// What tonic said.
        #[source]
        source: tonic::transport::Error,
    },
    /// The node could not be reached.
    #[error("connecting to {target}")]
    Connect {
        /// The target.
        target: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The node refused to open a task stream.
    #[error("opening a task stream on {target}")]
    Open {
        /// The target.
        target: String,
        /// The node's status.
        #[source]
        source: Status,
    },
}

/// TLS to the node: the CA its certificate chains to, and for mutual TLS this client's
/// certificate and key.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// PEM CA certificate(s) the node's certificate must chain to.
    pub ca_cert: PathBuf,
    /// PEM client certificate and its private key (mutual TLS).
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The name to check the node's certificate against, when not the target's host.
    pub server_name: Option<String>,
}

/// How tasks reach the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// `avsnode.v1.TaskStream/Open`: long-lived bidirectional streams, answers in completion order.
    Stream,
    /// `ExecutorService/SubmitTask`: one unary call per task, as the Hourglass aggregator sends.
    Unary,
}

impl Transport {
    /// `stream` or `unary`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Stream => "stream",
            Transport::Unary => "unary",
        }
    }
}

/// When tasks are sent.
#[derive(Debug, Clone, Copy)]
pub enum Pacing {
    /// As soon as fewer than `inflight` tasks are unanswered (saturating).
    Closed,
    /// On a fixed schedule; latency from each task's intended send time.
    Open(Schedule),
}

/// The intended send times of an open-loop run: task `i` at `i / rate` after the start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    rate: f64,
}

impl Schedule {
    /// `rate` tasks per second; `None` unless it is positive and finite.
    pub fn new(rate: f64) -> Option<Schedule> {
        (rate.is_finite() && rate > 0.0).then_some(Schedule { rate })
    }

    /// The offered rate, tasks per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// When task `i` is due, after the start.
    pub fn due(&self, i: usize) -> Duration {
        Duration::from_secs_f64(i as f64 / self.rate)
    }

    /// How many tasks are due within `window` of the start.
    pub fn tasks_within(&self, window: Duration) -> usize {
        (window.as_secs_f64() * self.rate).ceil() as usize
    }

    /// The latency of task `i` answered `answered` after the start: from when it was due, however
    /// late it actually went out.
    pub fn latency(&self, i: usize, answered: Duration) -> Duration {
        answered.saturating_sub(self.due(i))
    }
}

/// What one run does.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// The node's intake, `http://HOST:PORT` or `https://HOST:PORT`.
    pub target: String,
    /// TLS settings, for `https://` targets.
    pub tls: Option<ClientTls>,
    /// Streams or unary calls.
    pub transport: Transport,
    /// Streams (stream transport) or connections (unary) the tasks are spread over, in turn;
    /// each stream has a connection of its own.
    pub connections: usize,
    /// At most this many tasks unanswered: the load itself in a closed loop, a safety cap in an
    /// open loop.
    pub inflight: usize,
    /// Closed or open loop.
    pub pacing: Pacing,
    /// No task is sent later than this after the start (the ones in flight are still awaited).
    pub send_for: Option<Duration>,
    /// Once sending is over, tasks still unanswered after this long are counted as
    /// DEADLINE_EXCEEDED.
    pub drain_timeout: Duration,
    /// Keep every result (to verify them afterwards) in [`Report::results`].
    pub keep_results: bool,
    /// A progress line on stderr, with this label; `None` for none.
    pub progress: Option<String>,
}

/// What a run measured.
#[derive(Debug)]
pub struct Report {
    /// Tasks handed to the run.
    pub planned: usize,
    /// Tasks sent (fewer than planned when `send_for` ran out first, or every stream closed).
    pub sent: usize,
    /// Tasks answered with a result.
    pub completed: u64,
    /// Tasks refused, failed or unanswered, by code.
    pub errors: Errors,
    /// Answers for no task of this run, or for a task answered already.
    pub unexpected_answers: u64,
    /// Latencies of the completed tasks (closed loop: from when each went out; open loop: from
    /// when each was due).
    pub latency: Latencies,
    /// From the start to the last answer.
    pub elapsed: Duration,
    /// With [`LoadPlan::keep_results`]: each result and the index of its task.
    pub results: Vec<(usize, TaskResult)>,
}

impl Report {
    /// Completed tasks per second of [`Report::elapsed`].
    pub fn throughput(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Whether every task sent was answered with a result, and nothing else came back.
    pub fn all_completed(&self) -> bool {
        self.errors.total() == 0
            && self.unexpected_answers == 0
            && self.completed == self.sent as u64
    }
}

/// Latencies in an HDR histogram: microseconds from 1 µs to an hour, 3 significant digits.
#[derive(Debug, Clone)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Latencies(
            Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("constant histogram bounds are valid"),
        )
    }
}

impl Latencies {
    /// Adds one latency (anything beyond an hour counts as an hour).
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(micros.max(1));
    }

    /// How many were recorded.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The latency at quantile `q` (0.5 = median); zero when none was recorded.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_micros(self.0.value_at_quantile(q))
    }

    /// The largest latency (within the histogram's precision).
    pub fn max(&self) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_micros(self.0.max())
    }

    /// `p50 6.1 ms, p90 8.0 ms, p99 10.6 ms, p99.9 12.0 ms, max 13.1 ms`.
    pub fn summary(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        format!(
            "p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms",
            ms(self.quantile(0.50)),
            ms(self.quantile(0.90)),
            ms(self.quantile(0.99)),
            ms(self.quantile(0.999)),
            ms(self.max()),
        )
    }
}

/// Failed tasks, by gRPC code and by kind of message.
#[derive(Debug, Default, Clone)]
pub struct Errors {
    by_code: BTreeMap<&'static str, u64>,
    by_kind: BTreeMap<(&'static str, String), u64>,
}

impl Errors {
    /// Counts one failure.
    pub fn count(&mut self, code: Code, message: &str) {
        let name = code_name(code);
        *self.by_code.entry(name).or_default() += 1;
        let mut kind = message_kind(message);
        if self.by_kind.len() >= MAX_ERROR_KINDS
            && !self.by_kind.contains_key(&(name, kind.clone()))
        {
            kind = "(other messages)".into();
        }
        *self.by_kind.entry((name, kind)).or_default() += 1;
    }

    /// Every failure.
    pub fn total(&self) -> u64 {
        self.by_code.values().sum()
    }

    /// Failures by code name (`PERMISSION_DENIED`, ...).
    pub fn by_code(&self) -> &BTreeMap<&'static str, u64> {
        &self.by_code
    }

    /// (code name, kind of message, count), most frequent first.
    pub fn kinds(&self) -> Vec<(&'static str, &str, u64)> {
        let mut kinds: Vec<_> = self
            .by_kind
            .iter()
            .map(|((code, kind), n)| (*code, kind.as_str(), *n))
            .collect();
        kinds.sort_by_key(|kind| std::cmp::Reverse(kind.2));
        kinds
    }
}

/// The canonical name of a gRPC code (`PERMISSION_DENIED`), as grpc tools print it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A message with what varies from task to task taken out: `0x` hex (addresses, task ids)
/// becomes `0x…` and every run of digits `N`, so that one cause counts as one kind.
pub fn message_kind(message: &str) -> String {
    let mut kind = String::with_capacity(message.len());
    let mut chars = message.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '0' && chars.peek() == Some(&'x') {
            chars.next();
            while chars.next_if(char::is_ascii_hexdigit).is_some() {}
            kind.push_str("0x…");
        } else if c.is_ascii_digit() {
            while chars.next_if(char::is_ascii_digit).is_some() {}
            kind.push('N');
        } else {
            kind.push(c);
        }
    }
    kind
}

/// What the senders and receivers tell the collector.
enum Outcome {
    /// An event of a task stream (its task found by id).
    Event { event: StreamEvent, at: Instant },
    /// The answer to unary call `index`.
    Call {
        index: usize,
        answer: Result<TaskResult, Status>,
        at: Instant,
    },
    /// Task `index` could not be written to its stream.
    Unsent { index: usize, why: Status },
    /// Stream `stream` ended (`None`: closed by the node without an error).
    StreamEnded {
        stream: usize,
        status: Option<Status>,
    },
}

/// What the sender and the collector share.
struct Sends {
    /// When each task went out, in nanoseconds after the start, plus one (0: not sent).
    sent_at: Vec<AtomicU64>,
    /// The stream or connection each task went to.
    lane: Vec<AtomicUsize>,
    /// Per stream: ended, so no more tasks go to it.
    closed: Vec<AtomicBool>,
    /// Free in-flight slots: taken by the sender, given back by the collector.
    slots: Semaphore,
}

/// Where the sender writes tasks.
enum Lanes {
    Streams(Vec<mpsc::Sender<StreamRequest>>),
    Calls(Vec<ExecutorServiceClient<Channel>>),
}

impl Lanes {
    fn len(&self) -> usize {
        match self {
            Lanes::Streams(s) => s.len(),
            Lanes::Calls(c) => c.len(),
        }
    }
}

/// Sends `tasks` as `plan` says and returns what came back. Fails only if the node cannot be
/// reached at all; everything after that is counted in the report.
pub async fn run(plan: &LoadPlan, tasks: Vec<TaskSubmission>) -> Result<Report, LoadError> {
    // On a worker of the runtime, not on the caller's thread: under `block_on` every answer woke
    // the main thread (some 3,000 thread switches a second at saturation, on the node's cores).
    match tokio::spawn(run_on_worker(plan.clone(), tasks)).await {
        Ok(report) => report,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

async fn run_on_worker(plan: LoadPlan, tasks: Vec<TaskSubmission>) -> Result<Report, LoadError> {
    let plan = &plan;
    let planned = tasks.len();
    let ids: HashMap<TaskId, usize> = tasks
        .iter()
        .enumerate()
        .filter_map(|(i, t)| Some((t.task_id.parse().ok()?, i)))
        .collect();
    let endpoint = endpoint(&plan.target, plan.tls.as_ref()).await?;
    let connections = plan.connections.max(1);
    let inflight = plan.inflight.max(1);
    let (outcomes, mut inbox) = mpsc::channel::<Outcome>(inflight.max(1024));
    let sends = Arc::new(Sends {
        sent_at: (0..planned).map(|_| AtomicU64::new(0)).collect(),
        lane: (0..planned).map(|_| AtomicUsize::new(0)).collect(),
        closed: (0..connections).map(|_| AtomicBool::new(false)).collect(),
        slots: Semaphore::new(inflight),
    });

    let mut receivers = Vec::new();
    let lanes = match plan.transport {
        Transport::Stream => {
            let mut streams = Vec::with_capacity(connections);
            for stream in 0..connections {
                let channel = connect(&endpoint, &plan.target).await?;
                let (sender, outbound) = mpsc::channel((inflight / connections).max(1));
                let mut inbound = TaskStreamClient::new(channel)
                    .open(ReceiverStream::new(outbound))
                    .await
                    .map_err(|source| LoadError::Open {
                        target: plan.target.clone(),
                        source,
                    })?
                    .into_inner();
                streams.push(sender);
                let outcomes = outcomes.clone();
                let sends = sends.clone();
                receivers.push(tokio::spawn(async move {
                    let status = loop {
                        match inbound.message().await {
                            Ok(Some(event)) => {
                                let at = Instant::now();
                                if outcomes.send(Outcome::Event { event, at }).await.is_err() {
                                    return;
                                }
                            }
                            Ok(None) => break None,
                            Err(status) => break Some(status),
                        }
                    };
                    sends.closed[stream].store(true, Ordering::Release);
                    let _ = outcomes.send(Outcome::StreamEnded { stream, status }).await;
                }));
            }
            Lanes::Streams(streams)
        }
        Transport::Unary => {
            let mut clients = Vec::with_capacity(connections);
            for _ in 0..connections {
                clients.push(ExecutorServiceClient::new(
                    connect(&endpoint, &plan.target).await?,
                ));
            }
            Lanes::Calls(clients)
        }
    };
    // The streams' request sides stay open until every answer is in, as an aggregator's do.
    let open_streams = match &lanes {
        Lanes::Streams(s) => s.clone(),
        Lanes::Calls(_) => Vec::new(),
    };

    let start = Instant::now();
    let (sent_report, mut sent_count) = oneshot::channel();
    let sender = tokio::spawn(
        Sender {
            lanes,
            pacing: plan.pacing,
            send_for: plan.send_for,
            sends: sends.clone(),
            start,
            outcomes,
        }
        .run(tasks, sent_report),
    );

    let mut collector = Collector {
        plan,
        sends: &sends,
        start,
        settled: vec![false; planned],
        accounted: 0,
        report: Report {
            planned,
            sent: 0,
            completed: 0,
            errors: Errors::default(),
            unexpected_answers: 0,
            latency: Latencies::default(),
            elapsed: Duration::ZERO,
            results: Vec::new(),
        },
        last_answer: start,
    };
    let mut sent = None;
    let mut drain_until = Instant::now();
    let mut ticks = tokio::time::interval(PROGRESS_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        if sent.is_some_and(|sent| collector.accounted >= sent) {
            break;
        }
        tokio::select! {
            outcome = inbox.recv() => match outcome {
                Some(outcome) => collector.take(outcome, &ids),
                None => break,
            },
            count = &mut sent_count, if sent.is_none() => {
                sent = Some(count.unwrap_or(0));
                drain_until = Instant::now() + plan.drain_timeout;
            }
            () = tokio::time::sleep_until(drain_until.into()), if sent.is_some() => {
                collector.give_up();
                break;
            }
            _ = ticks.tick(), if plan.progress.is_some() => collector.draw(false),
        }
    }
    if plan.progress.is_some() {
        collector.draw(true);
    }
    sender.abort();
    drop(open_streams);
    for receiver in receivers {
        receiver.abort();
    }
    let mut report = collector.report;
    report.sent = sent.unwrap_or(0);
    report.elapsed = collector.last_answer - start;
    Ok(report)
}

/// The sending side: each task when it is due (open loop) or a slot is free (closed loop), to
/// the next open stream or connection in turn.
struct Sender {
    lanes: Lanes,
    pacing: Pacing,
    send_for: Option<Duration>,
    sends: Arc<Sends>,
    start: Instant,
    outcomes: mpsc::Sender<Outcome>,
}

impl Sender {
    /// Sends `tasks` and reports how many went out; then (unary) waits for the calls in flight,
    /// which end when this is aborted.
    async fn run(self, tasks: Vec<TaskSubmission>, sent_report: oneshot::Sender<usize>) {
        let Sender {
            lanes,
            pacing,
            send_for,
            sends,
            start,
            outcomes,
        } = self;
        let mut calls = tokio::task::JoinSet::new();
        let mut sent = 0;
        let mut next = 0;
        for (i, task) in tasks.into_iter().enumerate() {
            match pacing {
                Pacing::Open(schedule) => {
                    let due = schedule.due(i);
                    if send_for.is_some_and(|limit| due >= limit) {
                        break;
                    }
                    tokio::time::sleep_until((start + due).into()).await;
                }
                Pacing::Closed => {
                    if send_for.is_some_and(|limit| start.elapsed() >= limit) {
                        break;
                    }
                }
            }
            let Ok(slot) = sends.slots.acquire().await else {
                break;
            };
            slot.forget();
            let open_lane = (0..lanes.len())
                .map(|k| (next + k) % lanes.len())
                .find(|&lane| !sends.closed[lane].load(Ordering::Acquire));
            let Some(lane) = open_lane else {
                // Every stream has ended: nothing more can be sent.
                break;
            };
            next = lane + 1;
            sends.lane[i].store(lane, Ordering::Relaxed);
            sends.sent_at[i].store(nanos(start.elapsed()) + 1, Ordering::Release);
            sent += 1;
            match &lanes {
                Lanes::Streams(streams) => {
                    let request = StreamRequest {
                        kind: Some(stream_request::Kind::Task(task)),
                    };
                    if streams[lane].send(request).await.is_err() {
                        let why =
                            Status::unavailable("the task stream closed before the task went out");
                        let _ = outcomes.send(Outcome::Unsent { index: i, why }).await;
                    }
                }
                Lanes::Calls(clients) => {
                    let mut client = clients[lane].clone();
                    let outcomes = outcomes.clone();
                    calls.spawn(async move {
                        let answer = client
                            .submit_task(task)
                            .await
                            .map(tonic::Response::into_inner);
                        let at = Instant::now();
                        let _ = outcomes
                            .send(Outcome::Call {
                                index: i,
                                answer,
                                at,
                            })
                            .await;
                    });
                }
            }
        }
        let _ = sent_report.send(sent);
        while calls.join_next().await.is_some() {}
    }
}

/// The receiving side's bookkeeping: which tasks are settled, their latencies and errors.
struct Collector<'a> {
    plan: &'a LoadPlan,
    sends: &'a Sends,
    start: Instant,
    settled: Vec<bool>,
    accounted: usize,
    report: Report,
    last_answer: Instant,
}

impl Collector<'_> {
    fn take(&mut self, outcome: Outcome, ids: &HashMap<TaskId, usize>) {
        match outcome {
            Outcome::Event { event, at } => {
                let task_id = match &event.kind {
                    Some(stream_event::Kind::Result(r)) => &r.task_id,
                    Some(stream_event::Kind::Rejection(r)) => &r.task_id,
                    None => {
                        self.report.unexpected_answers += 1;
                        return;
                    }
                };
                let Some(index) = task_id
                    .parse::<TaskId>()
                    .ok()
                    .and_then(|id| ids.get(&id).copied())
                else {
                    self.report.unexpected_answers += 1;
                    return;
                };
                let answer = match event.kind {
                    Some(stream_event::Kind::Result(result)) => Ok(result),
                    Some(stream_event::Kind::Rejection(r)) => {
                        Err(Status::new(Code::from_i32(r.code), r.message))
                    }
                    None => return,
                };
                self.settle(index, at, answer);
            }
            Outcome::Call { index, answer, at } => self.settle(index, at, answer),
            Outcome::Unsent { index, why } => self.settle(index, Instant::now(), Err(why)),
            Outcome::StreamEnded { stream, status } => {
                // Its tasks still unanswered never will be.
                let why = match status {
                    Some(status) => Status::new(
                        status.code(),
                        format!("the task stream ended: {}", status.message()),
                    ),
                    None => Status::unavailable("the node closed the task stream"),
                };
                for index in 0..self.settled.len() {
                    if !self.settled[index]
                        && self.sends.sent_at[index].load(Ordering::Acquire) != 0
                        && self.sends.lane[index].load(Ordering::Relaxed) == stream
                    {
                        self.settle(index, Instant::now(), Err(why.clone()));
                    }
                }
            }
        }
    }

    fn settle(&mut self, index: usize, at: Instant, answer: Result<TaskResult, Status>) {
        if index >= self.settled.len() || self.settled[index] {
            self.report.unexpected_answers += 1;
            return;
        }
        self.settled[index] = true;
        self.accounted += 1;
        self.sends.slots.add_permits(1);
        self.last_answer = self.last_answer.max(at);
        match answer {
            Ok(result) => {
                let answered = at.saturating_duration_since(self.start);
                let latency = match self.plan.pacing {
                    Pacing::Open(schedule) => schedule.latency(index, answered),
                    Pacing::Closed => {
                        let sent = self.sends.sent_at[index].load(Ordering::Acquire);
                        answered.saturating_sub(Duration::from_nanos(sent.saturating_sub(1)))
                    }
                };
                self.report.latency.record(latency);
                self.report.completed += 1;
                if self.plan.keep_results {
                    self.report.results.push((index, result));
                }
            }
            Err(status) => self.report.errors.count(status.code(), status.message()),
        }
    }

    /// The drain timeout passed: every task sent and still unanswered is counted as
    /// DEADLINE_EXCEEDED, as a gRPC client's own deadline would.
    fn give_up(&mut self) {
        let message = format!(
            "no answer within {} of the last task sent",
            humantime::format_duration(self.plan.drain_timeout)
        );
        for index in 0..self.settled.len() {
            if !self.settled[index] && self.sends.sent_at[index].load(Ordering::Acquire) != 0 {
                self.settled[index] = true;
                self.accounted += 1;
                self.report.errors.count(Code::DeadlineExceeded, &message);
            }
        }
    }

    #[allow(clippy::print_stderr)]
    fn draw(&self, last: bool) {
        const WIDTH: usize = 30;
        let Some(label) = &self.plan.progress else {
            return;
        };
        let elapsed = self.start.elapsed();
        let total = self.settled.len();
        let mut done = self.accounted as f64 / total.max(1) as f64;
        if let Some(limit) = self.plan.send_for {
            done = done.max(elapsed.as_secs_f64() / limit.as_secs_f64().max(1e-9));
        }
        let filled = ((done.min(1.0) * WIDTH as f64) as usize).min(WIDTH);
        let mut line = format!(
            "\r  {label} [{}{}] {:.1} s, {} answered",
            "#".repeat(filled),
            " ".repeat(WIDTH - filled),
            elapsed.as_secs_f64(),
            self.accounted,
        );
        if self.plan.send_for.is_none() {
            let _ = write!(line, " of {total}");
        }
        let _ = write!(
            line,
            ", {:.0} tasks/s",
            self.report.completed as f64 / elapsed.as_secs_f64().max(1e-9)
        );
        let errors = self.report.errors.total();
        if errors > 0 {
            let _ = write!(line, ", {errors} errors");
        }
        if last {
            line.push('\n');
        }
        eprint!("{line}");
        let _ = std::io::stderr().flush();
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX - 1)
}

/// The endpoint of `target` with `tls` applied.
async fn endpoint(target: &str, tls: Option<&ClientTls>) -> Result<Endpoint, LoadError> {
    let endpoint = Endpoint::from_shared(target.to_owned())
        .map_err(|source| LoadError::Target {
            target: target.to_owned(),
            source,
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    let https = target.starts_with("https://");
    match (https, tls) {
        (false, None) => Ok(endpoint),
        (false, Some(_)) => Err(LoadError::TlsForPlaintext {
            target: target.to_owned(),
        }),
        (true, None) => Err(LoadError::NoCa {
            target: target.to_owned(),
        }),
        (true, Some(tls)) => {
            let read = |what, path: &PathBuf| {
                let path = path.clone();
                async move {
                    tokio::fs::read(&path)
                        .await
                        .map_err(|source| LoadError::Read { what, path, source })
                }
            };
            let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(
                read("CA certificate", &tls.ca_cert).await?,
            ));
            if let Some((cert, key)) = &tls.identity {
                config = config.identity(Identity::from_pem(
                    read("client certificate", cert).await?,
                    read("client key", key).await?,
                ));
            }
            if let Some(name) = &tls.server_name {
                config = config.domain_name(name.clone());
            }
            endpoint
                .tls_config(config)
                .map_err(|source| LoadError::Tls {
                    target: target.to_owned(),
                    source,
                })
        }
    }
}

/// A new connection (each stream and each unary lane has its own).
async fn connect(endpoint: &Endpoint, target: &str) -> Result<Channel, LoadError> {
    endpoint
        .connect()
        .await
        .map_err(|source| LoadError::Connect {
            target: target.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut latencies = Latencies::default();
        for ms in 1..=1000u64 {
            latencies.record(Duration::from_millis(ms));
        }
        assert_eq!(latencies.count(), 1000);
        // Three significant digits: within 0.1% of the exact order statistic.
        let close = |got: Duration, want_ms: f64| {
            let got = got.as_secs_f64() * 1e3;
            assert!(
                (got - want_ms).abs() <= want_ms * 1e-3,
                "{got} ms, not {want_ms} ms"
            );
        };
        close(latencies.quantile(0.50), 500.0);
        close(latencies.quantile(0.90), 900.0);
        close(latencies.quantile(0.99), 990.0);
        close(latencies.quantile(0.999), 999.0);
        close(latencies.max(), 1000.0);
        assert!(latencies.quantile(0.5) <= latencies.quantile(0.9));
        assert!(latencies.quantile(0.99) <= latencies.max());
    }

    #[test]
    fn an_empty_histogram_reads_zero_and_outliers_saturate() {
        let mut latencies = Latencies::default();
        assert_eq!(latencies.quantile(0.99), Duration::ZERO);
        assert_eq!(latencies.max(), Duration::ZERO);
        latencies.record(Duration::ZERO);
        latencies.record(Duration::from_secs(10 * 3600));
        assert_eq!(latencies.count(), 2);
        assert!(latencies.quantile(0.0) <= Duration::from_micros(1));
        let hour = Duration::from_secs(3600).as_secs_f64();
        assert!((latencies.max().as_secs_f64() - hour).abs() < hour * 1e-3);
    }

    #[test]
    fn open_loop_latency_counts_from_the_intended_send_time() {
        let schedule = Schedule::new(1000.0).unwrap();
        assert_eq!(schedule.due(0), Duration::ZERO);
        assert_eq!(schedule.due(1), Duration::from_millis(1));
        assert_eq!(schedule.due(1500), Duration::from_millis(1500));
        assert_eq!(schedule.tasks_within(Duration::from_secs(2)), 2000);
        // Task 100 was due at 100 ms; the node answered at 130 ms: 30 ms, however late the
        // client got it out.
        assert_eq!(
            schedule.latency(100, Duration::from_millis(130)),
            Duration::from_millis(30)
        );
        // A stall delays everything due during it: task 200 (due at 200 ms) answered at 500 ms
        // after a 300 ms stall counts 300 ms, not the few ms after it actually went out.
        assert_eq!(
            schedule.latency(200, Duration::from_millis(500)),
            Duration::from_millis(300)
        );
        let odd = Schedule::new(3.0).unwrap();
        assert!((0..100).all(|i| odd.due(i) < odd.due(i + 1)));
        assert_eq!(odd.tasks_within(Duration::from_secs(1)), 3);
        assert!(Schedule::new(0.0).is_none());
        assert!(Schedule::new(f64::NAN).is_none());
    }

    #[test]
    fn errors_count_by_code_and_kind_of_message() {
        let mut errors = Errors::default();
        for i in 0..3 {
            errors.count(
                Code::PermissionDenied,
                &format!("aggregator 0x{i:040x} is not allowed to send tasks for this AVS"),
            );
        }
        errors.count(
            Code::ResourceExhausted,
            "the AVS's task queue is full (1024 waiting); retry later",
        );
        assert_eq!(errors.total(), 4);
        assert_eq!(errors.by_code()["PERMISSION_DENIED"], 3);
        assert_eq!(errors.by_code()["RESOURCE_EXHAUSTED"], 1);
        let kinds = errors.kinds();
        assert_eq!(
            kinds[0],
            (
                "PERMISSION_DENIED",
                "aggregator 0x… is not allowed to send tasks for this AVS",
                3
            )
        );
        assert_eq!(
            kinds[1].1,
            "the AVS's task queue is full (N waiting); retry later"
        );
    }

    #[test]
    fn error_kinds_are_bounded() {
        let mut errors = Errors::default();
        for i in 0..(MAX_ERROR_KINDS + 10) {
            errors.count(Code::Internal, &format!("failure {}", "x".repeat(i)));
        }
        assert_eq!(errors.total(), (MAX_ERROR_KINDS + 10) as u64);
        assert_eq!(errors.kinds().len(), MAX_ERROR_KINDS + 1);
    }
}
