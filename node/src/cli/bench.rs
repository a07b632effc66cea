//! `avsnode bench`: a load generator for operators, against any running node. It signs tasks with
//! an aggregator key the node accepts, sends them (the load generator of `avsnode::load`, the one
//! the demo uses), and reports throughput, latency percentiles and errors by gRPC code.

use std::ops::Range;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use avsnode::load::{self, ClientTls, LoadPlan, Pacing, Report, Schedule, Transport};
use avsnode::pipeline::validate::now_unix_ms;
use avsnode_aggregator::{Aggregator, NewTask};
use avsnode_proto::executor::TaskSubmission;
use avsnode_signer::messages::{Address, TaskId, keccak256};
use avsnode_signing::LocalKey;

use super::open_keystore;

/// The run length when neither --duration nor --tasks is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// Unary calls one connection carries at once before the next connection is opened (the node
/// allows `intake.max_concurrent_streams`, default 128, per connection).
const CALLS_PER_CONNECTION: usize = 100;

/// Extra time, beyond the tasks' deadline, given to the last answers.
const DRAIN_MARGIN: Duration = Duration::from_secs(5);

/// `avsnode bench --help`: what it measures and how.
pub(crate) const LONG_ABOUT: &str = "\
Load a running node with signed tasks and measure its throughput and latency.

The tasks are signed before the timed window with an aggregator key the node accepts (listed in
the AVS's `aggregators`), addressed to the node's operator, AVS and operator set, and sent over the
intake's TaskStream (--mode stream) or as unary SubmitTask calls (--mode unary, as the Hourglass
aggregator sends them). The node runs them for real: performer, sign-once ledger, signatures.

Two kinds of run:

  Closed loop (no --rate): saturating. --concurrency tasks are kept in flight; the next goes out
  as soon as an answer comes back. This measures throughput. The latencies it prints are time in
  a saturated queue (each task waits behind the others in flight), not the node's latency.

  Open loop (--rate R): task i is due at start + i/R, whatever the node does. Latency is counted
  from that intended send time, not from when the task actually went out, so a node that stalls
  is charged for every task due during the stall (no coordinated omission). Use a rate below the
  saturated throughput to see the latency an aggregator gets.

Latencies are those of completed tasks, kept in an HDR histogram (3 significant digits).
Every task is run, signed with the operator set's key and recorded in the sign-once ledger like
any other (task ids are fresh each run): point it at a staging node, or at an AVS and operator
set kept for testing, not at a key that signs for production.
Progress goes to stderr; the summary (or with --json one JSON object) to stdout.

Exit status: 0 when every task sent was answered with a signed result; 1 when any was refused,
failed or left unanswered (the summary counts them by gRPC code), or the run could not start.";

/// `avsnode bench --help`, after the options: an example and the JSON fields.
pub(crate) const AFTER_HELP: &str = "\
Example: 30 s at 1,000 tasks/s against a local node, then its saturated throughput:

  avsnode bench --target http://127.0.0.1:9090 \\
      --aggregator-keystore aggregator.json --aggregator-password-file aggregator.pass \\
      --avs $AVS --operator $OPERATOR --operator-set 0 --rate 1000 --duration 30s
  avsnode bench ... --tasks 20000 --concurrency 512

--json fields: target, mode, loop (closed|open), offered_rate (tasks/s, null when closed),
concurrency, streams, tasks (signed), sent, completed, failed, errors ({CODE: count}),
error_messages ([{code, message, count}]), unexpected_answers, throughput (completed tasks/s),
duration_s, latency_from (send|intended_send), p50_ms, p90_ms, p99_ms, p99_9_ms, max_ms.";

/// `avsnode bench` options.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchOptions {
    /// The node's intake: http://HOST:PORT, or https://HOST:PORT with --ca-cert.
    #[arg(long, value_name = "URL")]
    target: String,
    /// PEM CA certificate(s) the node's intake certificate chains to (https targets; this build
    /// trusts no system roots, so give the system bundle for a public CA).
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// PEM client certificate, for an intake with mutual TLS (the node accepts the aggregator's
    /// tasks only over a connection with a certificate named in its tls_client_names).
    #[arg(long, value_name = "FILE", requires_all = ["client_key", "ca_cert"])]
    client_cert: Option<PathBuf>,
    /// The client certificate's PEM private key.
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// The name the node's certificate must be valid for, when not the target's host.
    #[arg(long, value_name = "NAME", requires = "ca_cert")]
    tls_server_name: Option<String>,

    /// The aggregator's keystore (as `avsnode keys generate` writes them; any scheme). The node
    /// must list this aggregator for the AVS.
    #[arg(long, value_name = "FILE")]
    aggregator_keystore: PathBuf,
    /// The keystore's password file (one trailing newline ignored); prompted for otherwise.
    #[arg(long, value_name = "FILE")]
    aggregator_password_file: Option<PathBuf>,
    /// Accept key and password files readable by group or other.
    #[arg(long)]
    allow_insecure_permissions: bool,
    /// The address the aggregator sends as: for bn254 and bls12-381 keys, the address the node's
    /// configuration gives it (required); for ecdsa, default the key's own address.
    #[arg(long, value_name = "ADDRESS", value_parser = parse_address)]
    aggregator_address: Option<Address>,

    /// The AVS the tasks are for.
    #[arg(long, value_name = "ADDRESS", value_parser = parse_address)]
    avs: Address,
    /// The node's operator address (the tasks' executor_address).
    #[arg(long, value_name = "ADDRESS", value_parser = parse_address)]
    operator: Address,
    /// The operator set the tasks are for.
    #[arg(long, value_name = "ID", default_value_t = 0)]
    operator_set: u32,

    /// Offer this many tasks/s (open loop, latency from each task's intended send time).
    /// Without it: closed loop, saturating, --concurrency tasks in flight.
    #[arg(long, value_name = "TASKS_PER_S")]
    rate: Option<f64>,
    /// Tasks in flight at once: the load of a closed-loop run; with --rate, a cap that is only
    /// reached when the node falls behind (latencies then still count from the intended times).
    #[arg(long, value_name = "N", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    concurrency: u64,
    /// How long to send, e.g. 10s or 2m (the default, 10s, unless --tasks is given). Closed
    /// loop: a short untimed warm-up first measures the throughput, to sign enough tasks.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, conflicts_with = "tasks")]
    duration: Option<Duration>,
    /// Send exactly this many tasks instead.
    #[arg(long, value_name = "N")]
    tasks: Option<usize>,
    /// Streams (--mode stream) or connections (--mode unary) to spread the tasks over, in turn;
    /// each stream has its own connection. Default: 1 stream; unary, one connection per 100
    /// calls in flight.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    streams: Option<u64>,
    /// How the tasks are sent.
    #[arg(long, value_enum, default_value = "stream")]
    mode: Transport,
    /// Payload bytes per task: a big-endian task counter, zero-padded on the left. The example
    /// performer squares payloads of at most 8 bytes and refuses longer ones; other performers
    /// see the same bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 8)]
    payload_size: usize,
    /// Each task's signed deadline (version-1001 tasks), counted from the planned end of the run
    /// (for a closed-loop --tasks run, from its start: raise it for runs of more than a minute).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "60s")]
    deadline: Duration,
    /// Print one JSON object on stdout instead of the summary.
    #[arg(long)]
    json: bool,
    /// No progress on stderr.
    #[arg(long)]
    quiet: bool,
}

fn parse_address(s: &str) -> Result<Address, String> {
    s.parse().map_err(|e: avsnode_signer::Error| e.to_string())
}

/// How long a run sends.
#[derive(Clone, Copy)]
enum Length {
    /// This many tasks.
    Tasks(usize),
    /// For this long.
    For(Duration),
}

/// What every task of a run has in common.
struct TaskTemplate {
    aggregator: Aggregator,
    avs: Address,
    operator: Address,
    operator_set_id: u32,
    payload_size: usize,
    /// Random per run, so task ids never repeat across runs.
    nonce: [u8; 16],
}

impl TaskTemplate {
    /// Tasks `indices`, signed on every core, with the deadline `deadline_unix_ms`.
    fn sign(&self, indices: Range<usize>, deadline_unix_ms: u64) -> Vec<TaskSubmission> {
        let now = now_unix_ms();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let chunk = indices.len().div_ceil(cores).max(1);
        let starts: Vec<usize> = indices.clone().step_by(chunk).collect();
        std::thread::scope(|scope| {
            let workers: Vec<_> = starts
                .into_iter()
                .map(|first| {
                    let last = (first + chunk).min(indices.end);
                    scope.spawn(move || {
                        (first..last)
                            .map(|i| self.aggregator.sign(&self.task(i, now, deadline_unix_ms)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap_or_default())
                .collect()
        })
    }

    fn task(&self, i: usize, now_ms: u64, deadline_unix_ms: u64) -> NewTask {
        NewTask {
            task_id: TaskId(keccak256(
                &[&self.nonce[..], &(i as u64).to_be_bytes()].concat(),
            )),
            avs: self.avs,
            operator: self.operator,
            operator_set_id: self.operator_set_id,
            reference_timestamp: (now_ms / 1000) as u32,
            task_block_number: 1 + i as u64,
            payload: payload(i, self.payload_size),
            deadline_unix_ms: Some(deadline_unix_ms),
        }
    }
}

/// `size` bytes: the counter `i + 1`, big-endian, right-aligned (its low bytes when `size` < 8).
fn payload(i: usize, size: usize) -> Vec<u8> {
    let mut payload = vec![0; size];
    let counter = (i as u64 + 1).to_be_bytes();
    let n = size.min(counter.len());
    payload[size - n..].copy_from_slice(&counter[counter.len() - n..]);
    payload
}

/// Runs `avsnode bench`.
pub(crate) fn bench_command(options: BenchOptions) -> anyhow::Result<ExitCode> {
    let key = open_keystore(
        &options.aggregator_keystore,
        options.aggregator_password_file.as_deref(),
        "Aggregator keystore password: ",
        options.allow_insecure_permissions,
    )?;
    let aggregator_address = match (&key, options.aggregator_address) {
        (_, Some(address)) => address,
        (LocalKey::Ecdsa(k), None) => k.public_key().address(),
        (key, None) => anyhow::bail!(
            "a {} aggregator key needs --aggregator-address: the address the node's configuration gives this aggregator",
            key.scheme()
        ),
    };
    let scheme = key.scheme();
    let schedule = match options.rate {
        Some(rate) => Some(
            Schedule::new(rate)
                .with_context(|| format!("--rate {rate}: expected a positive number of tasks/s"))?,
        ),
        None => None,
    };
    let concurrency = options.concurrency as usize;
    let connections = match (options.streams, options.mode) {
        (Some(n), _) => n as usize,
        (None, Transport::Stream) => 1,
        (None, Transport::Unary) => concurrency.div_ceil(CALLS_PER_CONNECTION),
    };
    let tls = options.ca_cert.clone().map(|ca_cert| ClientTls {
        ca_cert,
        identity: options.client_cert.clone().zip(options.client_key.clone()),
        server_name: options.tls_server_name.clone(),
    });
    let template = TaskTemplate {
        aggregator: Aggregator::new(aggregator_address, key),
        avs: options.avs,
        operator: options.operator,
        operator_set_id: options.operator_set,
        payload_size: options.payload_size,
        nonce: rand::random(),
    };
    let duration = match options.tasks {
        Some(_) => None,
        None => Some(options.duration.unwrap_or(DEFAULT_DURATION)),
    };
    let plan = LoadPlan {
        target: options.target.clone(),
        tls,
        transport: options.mode,
        connections,
        inflight: concurrency,
        pacing: schedule.map_or(Pacing::Closed, Pacing::Open),
        send_for: duration,
        drain_timeout: options.deadline + DRAIN_MARGIN,
        keep_results: false,
        progress: None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let note = |text: String| {
        if !options.quiet {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("avsnode bench: {text}");
            }
        }
    };
    let progress = |label: &str| (!options.quiet).then(|| label.to_owned());

    // How many tasks to sign (from which index), and how long the timed window is planned to
    // be: the tasks' deadline counts from its end.
    let length = match (options.tasks, duration) {
        (Some(n), _) => Length::Tasks(n),
        (None, d) => Length::For(d.unwrap_or(DEFAULT_DURATION)),
    };
    let (first, count, planned_window) = match (schedule, length) {
        (Some(schedule), Length::Tasks(n)) => (0, n, n as f64 / schedule.rate()),
        (Some(schedule), Length::For(d)) => (0, schedule.tasks_within(d), d.as_secs_f64()),
        (None, Length::Tasks(n)) => (0, n, 0.0),
        (None, Length::For(d)) => {
            // Saturating for a duration: sign enough tasks for it before the timed window (a
            // signer running beside the sender would take cores from a node on the same
            // machine). A short untimed warm-up measures how many that is.
            let warmup = (concurrency * 4).max(1000);
            note(format!(
                "warm-up: {warmup} tasks to estimate the throughput"
            ));
            let deadline = now_unix_ms() + millis(options.deadline);
            let tasks = template.sign(0..warmup, deadline);
            let warm_plan = LoadPlan {
                send_for: None,
                progress: progress("warm-up"),
                ..plan.clone()
            };
            let report = runtime.block_on(load::run(&warm_plan, tasks))?;
            let answered = report.completed + report.errors.total();
            let rate = answered as f64 / report.elapsed.as_secs_f64().max(1e-3);
            // Half as many again as the warm-up's rate needs: a node warms up further.
            let n = ((rate * d.as_secs_f64() * 1.5) as usize).max(concurrency * 2);
            (warmup, n, d.as_secs_f64())
        }
    };
    note(format!(
        "signing {count} {scheme} tasks for {} (operator set {})",
        options.avs, options.operator_set
    ));
    let signing = Instant::now();
    let deadline =
        now_unix_ms() + millis(Duration::from_secs_f64(planned_window)) + millis(options.deadline);
    let tasks = template.sign(first..first + count, deadline);
    note(format!(
        "signed in {:.1} s; sending to {}",
        signing.elapsed().as_secs_f64(),
        options.target
    ));
    let timed_plan = LoadPlan {
        progress: progress(if schedule.is_some() {
            "open loop"
        } else {
            "closed loop"
        }),
        ..plan.clone()
    };
    let report = runtime.block_on(load::run(&timed_plan, tasks))?;
    let ran_out = duration.is_some_and(|d| {
        schedule.is_none() && report.sent == report.planned && report.elapsed < d.mul_f64(0.95)
    });
    if ran_out {
        note(format!(
            "ran out of signed tasks after {:.1} s: the node was faster than the warm-up; the figures cover that window",
            report.elapsed.as_secs_f64()
        ));
    }
    let passed = report.all_completed() && (duration.is_some() || report.sent == report.planned);
    if options.json {
        print_json(&plan, schedule, &report);
    } else {
        print_summary(&plan, schedule, &report);
    }
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds with microsecond precision (what the histogram holds).
fn ms(d: Duration) -> f64 {
    d.as_micros() as f64 / 1e3
}

#[allow(clippy::print_stdout)]
fn print_json(plan: &LoadPlan, schedule: Option<Schedule>, report: &Report) {
    let errors: serde_json::Map<String, serde_json::Value> = report
        .errors
        .by_code()
        .iter()
        .map(|(code, n)| ((*code).to_owned(), (*n).into()))
        .collect();
    let messages: Vec<serde_json::Value> = report
        .errors
        .kinds()
        .into_iter()
        .map(|(code, message, count)| {
            serde_json::json!({ "code": code, "message": message, "count": count })
        })
        .collect();
    let latency = &report.latency;
    let json = serde_json::json!({
        "target": plan.target,
        "mode": plan.transport.as_str(),
        "loop": if schedule.is_some() { "open" } else { "closed" },
        "offered_rate": schedule.map(|s| s.rate()),
        "concurrency": plan.inflight,
        "streams": plan.connections,
        "tasks": report.planned,
        "sent": report.sent,
        "completed": report.completed,
        "failed": report.errors.total(),
        "errors": errors,
        "error_messages": messages,
        "unexpected_answers": report.unexpected_answers,
        "throughput": report.throughput(),
        "duration_s": report.elapsed.as_secs_f64(),
        "latency_from": if schedule.is_some() { "intended_send" } else { "send" },
        "p50_ms": ms(latency.quantile(0.50)),
        "p90_ms": ms(latency.quantile(0.90)),
        "p99_ms": ms(latency.quantile(0.99)),
        "p99_9_ms": ms(latency.quantile(0.999)),
        "max_ms": ms(latency.max()),
    });
    println!("{json}");
}

#[allow(clippy::print_stdout)]
fn print_summary(plan: &LoadPlan, schedule: Option<Schedule>, report: &Report) {
    let plural = if plan.connections == 1 { "" } else { "s" };
    let lanes = match plan.transport {
        Transport::Stream => format!("{} stream{plural}", plan.connections),
        Transport::Unary => format!("{} connection{plural}", plan.connections),
    };
    let pacing = match schedule {
        Some(s) => format!(
            "open loop at {:.0} tasks/s (at most {} in flight)",
            s.rate(),
            plan.inflight
        ),
        None => format!("closed loop, {} in flight", plan.inflight),
    };
    println!(
        "avsnode bench: {}, {} mode, {lanes}, {pacing}",
        plan.target,
        plan.transport.as_str()
    );
    println!(
        "  throughput   {:.0} tasks/s ({} completed of {} sent, in {:.2} s)",
        report.throughput(),
        report.completed,
        report.sent,
        report.elapsed.as_secs_f64()
    );
    let from = match schedule {
        Some(_) => "from each task's intended send time".to_owned(),
        None => format!(
            "time in a saturated queue: each task waits behind up to {} others",
            plan.inflight.saturating_sub(1)
        ),
    };
    println!("  latency      {} ({from})", report.latency.summary());
    if report.errors.total() == 0 {
        println!("  errors       none");
    } else {
        let by_code: Vec<String> = report
            .errors
            .by_code()
            .iter()
            .map(|(code, n)| format!("{n} {code}"))
            .collect();
        println!("  errors       {}", by_code.join(", "));
        for (code, message, n) in report.errors.kinds().into_iter().take(10) {
            println!("    {n} × {code}: {message}");
        }
    }
    if report.unexpected_answers > 0 {
        println!(
            "  unexpected   {} answers for no task sent, or for one answered already",
            report.unexpected_answers
        );
    }
    if report.sent < report.planned && plan.send_for.is_none() {
        println!(
            "  unsent       {} tasks (every stream closed)",
            report.planned - report.sent
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_counters_the_example_performer_accepts() {
        assert_eq!(payload(0, 8), vec![0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(payload(0x1233, 2), vec![0x12, 0x34]);
        assert_eq!(payload(7, 0), Vec::<u8>::new());
        let mut long = vec![0; 12];
        long[10] = 1;
        assert_eq!(payload(255, 12), long);
        for size in 0..=8 {
            assert!(avsnode_example_performer::square(&payload(99, size)).is_ok());
        }
    }
}
