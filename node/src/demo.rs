//! `avsnode demo`: the whole product on an embedded default. A temporary data dir, fresh keys
//! for the three schemes, the example performer as a local process, and an in-process aggregator
//! that streams pre-signed tasks over a real socket, then checks every answer as a chain would.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use avsnode_proto::executor::TaskSubmission;
use avsnode_proto::stream::task_stream_client::TaskStreamClient;
use avsnode_proto::stream::{StreamRequest, stream_event, stream_request};
use avsnode_signer::messages::{
    Address, AuthMessage, EcdsaVerifier, ResultCertificate, TaskId, TaskMessage,
    certificate_digest, keccak256,
};
use avsnode_signer::{Scheme, VerifyingKey};
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;

use crate::config::Config;
use crate::daemon::RunningNode;
use crate::pipeline::validate::now_unix_ms;
use avsnode_aggregator::{Aggregator, NewTask, OperatorKey, verify_result};
use avsnode_signing::LocalKey;

/// `avsnode demo` options.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoOptions {
    /// How many tasks the built-in aggregator streams.
    #[arg(long, default_value_t = 3000)]
    pub tasks: usize,
    /// Operator sets to spread tasks over, by scheme (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "ecdsa,bn254,bls12-381", value_parser = parse_scheme)]
    pub schemes: Vec<Scheme>,
    /// The scheme the built-in aggregator signs tasks with.
    #[arg(long, default_value = "ecdsa", value_parser = parse_scheme)]
    pub aggregator: Scheme,
    /// Tasks the aggregator keeps in flight on its stream.
    #[arg(long, default_value_t = 512)]
    pub inflight: usize,
    /// Offered load in tasks/s (open loop, for latency measurements); default: as fast as the
    /// node reads the stream.
    #[arg(long)]
    pub rate: Option<u32>,
    /// The ledger's group-commit delay (see `ledger.commit_delay`; default as in a config).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub commit_delay: Option<Duration>,
    /// Streams to spread the tasks over, in turn (through a load balancer each may reach
    /// another replica).
    #[arg(long, default_value_t = 1)]
    pub streams: usize,
    /// Keep the sign-once ledger in this PostgreSQL database (a URL without the password)
    /// instead of the embedded one: what a replica pays for the shared ledger.
    #[arg(long, value_name = "URL")]
    pub ledger_url: Option<String>,
    /// The database password's file, with --ledger-url.
    #[arg(long, requires = "ledger_url", value_name = "FILE")]
    pub ledger_password_file: Option<std::path::PathBuf>,
    /// Run this many replicas of the node on the --ledger-url database (a load balancer in
    /// front of them, given with --connect, spreads the tasks).
    #[arg(long, default_value_t = 1, requires = "ledger_url")]
    pub replicas: usize,
    /// The first replica's intake port (replica i listens on PORT + i); default: any free port.
    #[arg(long, value_name = "PORT")]
    pub listen_port: Option<u16>,
    /// Send the tasks to this address (e.g. a load balancer in front of the replicas) instead of
    /// to the node. Needed with --replicas above 1.
    #[arg(long, value_name = "URL")]
    pub connect: Option<String>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// An operator set of the demo: id, signer name, ECDSA verifier, public key.
type DemoSet = (u32, String, Option<EcdsaVerifier>, OperatorKey);

fn parse_scheme(s: &str) -> Result<Scheme, String> {
    s.parse().map_err(|e: avsnode_signer::Error| e.to_string())
}

const DEMO_AVS: &str = "0x000000000000000000000000000000000000a5a5";
const DEMO_VERIFIER: &str = "0x00000000000000000000000000000000000c0de1";
/// The address a BN254 or BLS12-381 aggregator sends as (an ECDSA one is its key's address).
const DEMO_AGGREGATOR: &str = "0x00000000000000000000000000000000000a6600";

/// Runs the demo; `Ok(true)` when every answer arrived and verified.
#[allow(clippy::print_stdout, clippy::print_stderr)]
pub async fn run(options: DemoOptions) -> anyhow::Result<bool> {
    let dir = tempfile::Builder::new()
        .prefix("avsnode-demo-")
        .tempdir()
        .context("creating a temporary directory")?;
    let avs: Address = DEMO_AVS.parse()?;
    let verifier = EcdsaVerifier {
        address: DEMO_VERIFIER.parse()?,
        version: "1".into(),
    };

    // Keys: one operator set per scheme, the operator's address from a fresh ECDSA key, and an
    // aggregator of the chosen scheme. Light KDF parameters: the files live and die with the
    // temporary dir.
    let operator_address = match LocalKey::generate(Scheme::Ecdsa) {
        LocalKey::Ecdsa(k) => k.public_key().address(),
        _ => unreachable!("generated an ECDSA key"),
    };
    let aggregator_key = LocalKey::generate(options.aggregator);
    let (aggregator_address, aggregator_entry) = match &aggregator_key {
        LocalKey::Ecdsa(k) => {
            let address = k.public_key().address();
            (
                address,
                format!("{{ scheme = \"ecdsa\", address = \"{address}\" }}"),
            )
        }
        key => (
            DEMO_AGGREGATOR.parse()?,
            format!(
                "{{ scheme = \"{}\", address = \"{DEMO_AGGREGATOR}\", public_key = \"0x{}\" }}",
                key.scheme(),
                hex::encode(key.public_bytes())
            ),
        ),
    };
    let aggregator_public = aggregator_public_key(&aggregator_key, aggregator_address)?;
    let aggregator = Aggregator::new(aggregator_address, aggregator_key);
    let mut toml = format!(
        "[node]\noperator_address = \"{operator_address}\"\ndata_dir = \"data\"\nshutdown_grace = \"5s\"\n\n[intake]\nlisten = \"127.0.0.1:0\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n"
    );
    if options.replicas > 1 && options.connect.is_none() {
        anyhow::bail!("--replicas above 1 needs --connect: the balancer in front of them");
    }
    writeln!(toml, "[ledger]")?;
    if let Some(delay) = options.commit_delay {
        writeln!(
            toml,
            "commit_delay = \"{}\"",
            humantime::format_duration(delay)
        )?;
    }
    if let Some(url) = &options.ledger_url {
        writeln!(
            toml,
            "backend = \"postgres\"\n[ledger.postgres]\nurl = {url:?}"
        )?;
        if let Some(file) = &options.ledger_password_file {
            let file = std::path::absolute(file)?;
            writeln!(toml, "password_file = {:?}", file.display().to_string())?;
        }
    }
    writeln!(toml)?;
    let mut sets = Vec::new();
    let mut operator_keys = Vec::new();
    for (id, scheme) in options.schemes.iter().enumerate() {
        let key = LocalKey::generate(*scheme);
        let password = avsnode_keystore::Password::new("demo");
        let name = format!("{scheme}-demo");
        key.encrypt(&password, &avsnode_keystore::Kdf::light())?
            .write_new(&dir.path().join(format!("{name}.json")))?;
        avsnode_keystore::write_private(&dir.path().join(format!("{name}.pass")), b"demo\n")?;
        writeln!(
            toml,
            "[[signer]]\nname = \"{name}\"\nscheme = \"{scheme}\"\nkeystore = \"{name}.json\"\npassword_file = \"{name}.pass\"\n"
        )?;
        let verifier = (*scheme == Scheme::Ecdsa).then(|| verifier.clone());
        let public = OperatorKey::of(&key, verifier.clone()).context("operator key")?;
        sets.push((id as u32, name, verifier, public));
        operator_keys.push(key);
    }
    let exe = std::env::current_exe().context("locating the avsnode executable")?;
    writeln!(
        toml,
        "[[avs]]\naddress = \"{avs}\"\nmax_concurrency = 64\n# The demo's one aggregator sends as fast as the node answers.\naggregator_rate_limit = 1000000\naggregator_burst = 1000000\naggregators = [{aggregator_entry}]\noperator_sets = ["
    )?;
    for (id, name, verifier, _) in &sets {
        match verifier {
            Some(v) => writeln!(
                toml,
                "  {{ id = {id}, signer = \"{name}\", verifier = \"{}\", verifier_version = \"1\" }},",
                v.address
            )?,
            None => writeln!(toml, "  {{ id = {id}, signer = \"{name}\" }},")?,
        }
    }
    writeln!(
        toml,
        "]\n[avs.performer]\nruntime = \"process\"\ncommand = {:?}\nargs = [\"example-performer\", \"--host\", \"127.0.0.1\"]",
        exe.display().to_string()
    )?;
    let mut nodes = Vec::new();
    let mut address = None;
    for replica in 0..options.replicas.max(1) {
        let config_path = dir.path().join(format!("avsnode-{replica}.toml"));
        let replica_toml = toml.replace(
            "data_dir = \"data\"",
            &format!("data_dir = \"data-{replica}\""),
        );
        std::fs::write(&config_path, replica_toml)?;
        let config = Config::load(&config_path)?;
        let port = options.listen_port.map_or(0, |p| p + replica as u16);
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let listens = listener.local_addr()?;
        address.get_or_insert(listens);
        eprintln!(
            "avsnode demo: node on {listens}, data in {}, example performer as a local process",
            dir.path().display()
        );
        nodes.push(RunningNode::start(config, listener).await?);
    }
    let target = match &options.connect {
        Some(url) => url.clone(),
        None => format!("http://{}", address.context("no node started")?),
    };

    // Sign every task before the timed window: the aggregator's cost is not the node's.
    let now = now_unix_ms();
    let nonce = now.to_be_bytes();
    let tasks: Vec<(NewTask, usize)> = (0..options.tasks)
        .map(|i| {
            let set = i % sets.len();
            let task = NewTask {
                task_id: TaskId(keccak256(&[&nonce[..], &(i as u64).to_be_bytes()].concat())),
                avs,
                operator: operator_address,
                operator_set_id: sets[set].0,
                reference_timestamp: (now / 1000) as u32,
                task_block_number: 1_000 + i as u64,
                payload: (i as u64 * 7919).to_be_bytes().to_vec(),
                deadline_unix_ms: Some(now + 120_000),
            };
            (task, set)
        })
        .collect();
    let submissions: Vec<_> = tasks.iter().map(|(t, _)| aggregator.sign(t)).collect();
    let index: HashMap<TaskId, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, (t, _))| (t.task_id, i))
        .collect();

    // The crypto floor, measured here and now: what the node's own code must spend per task.
    let floor = crypto_floor(
        &aggregator_public,
        &tasks,
        &submissions,
        &sets,
        &operator_keys,
        operator_address,
    )?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    // One or more streams; tasks go to them in turn and every stream's events to one queue.
    let streams = options.streams.max(1);
    let per_stream = (options.inflight / streams).max(1);
    let mut senders = Vec::with_capacity(streams);
    let (event_sender, mut events) = tokio::sync::mpsc::channel(options.inflight.max(1));
    for _ in 0..streams {
        let mut client = TaskStreamClient::connect(target.clone()).await?;
        let (sender, outbound) = tokio::sync::mpsc::channel(per_stream);
        senders.push(sender);
        let mut inbound = client
            .open(ReceiverStream::new(outbound))
            .await?
            .into_inner();
        let event_sender = event_sender.clone();
        tokio::spawn(async move {
            loop {
                let (event, end) = match inbound.message().await {
                    Ok(Some(event)) => (Ok(event), false),
                    Ok(None) => break,
                    Err(status) => (Err(status), true),
                };
                if event_sender.send(event).await.is_err() || end {
                    break;
                }
            }
        });
    }
    drop(event_sender);
    let sent_at = Arc::new(Mutex::new(vec![None::<Instant>; tasks.len()]));
    let start = Instant::now();
    let sending = {
        let sent_at = sent_at.clone();
        tokio::spawn(async move {
            let rate = options
                .rate
                .map(|r| Duration::from_secs_f64(1.0 / f64::from(r.max(1))));
            for (i, task) in submissions.into_iter().enumerate() {
                if let Some(interval) = rate {
                    tokio::time::sleep_until((start + interval * i as u32).into()).await;
                }
                sent_at.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(Instant::now());
                let request = StreamRequest {
                    kind: Some(stream_request::Kind::Task(task)),
                };
                if senders[i % senders.len()].send(request).await.is_err() {
                    break;
                }
            }
        })
    };
    let mut results = Vec::with_capacity(tasks.len());
    let mut latencies = Vec::with_capacity(tasks.len());
    let mut rejections = Vec::new();
    let mut last_draw = Instant::now();
    while results.len() + rejections.len() < tasks.len() {
        let Some(event) = events.recv().await.transpose()? else {
            break;
        };
        let now = Instant::now();
        match event.kind {
            Some(stream_event::Kind::Result(result)) => {
                let i = result
                    .task_id
                    .parse()
                    .ok()
                    .and_then(|id: TaskId| index.get(&id).copied());
                if let Some(sent) =
                    i.and_then(|i| sent_at.lock().unwrap_or_else(|e| e.into_inner())[i])
                {
                    latencies.push(now - sent);
                }
                results.push((i, result));
            }
            Some(stream_event::Kind::Rejection(r)) => {
                rejections.push(format!("{}: {}", r.task_id, r.message))
            }
            None => rejections.push("empty stream event".into()),
        }
        if !options.quiet && now - last_draw > Duration::from_millis(100) {
            last_draw = now;
            progress(results.len() + rejections.len(), tasks.len());
        }
    }
    let elapsed = start.elapsed();
    sending.abort();
    if !options.quiet {
        progress(results.len() + rejections.len(), tasks.len());
        eprintln!();
    }
    let ledger = nodes[0].pipeline().ledger().stats();
    let round_trips: u64 = nodes
        .iter()
        .map(|n| n.pipeline().ledger().round_trips())
        .sum();
    let backend = nodes[0].pipeline().ledger().backend();
    for node in nodes {
        node.shutdown().await?;
    }

    // Check every answer as the chain and the aggregator would.
    let mut failures = Vec::new();
    for (i, result) in &results {
        let Some(i) = *i else {
            failures.push(format!("answer for an unknown task {}", result.task_id));
            continue;
        };
        let (task, set) = &tasks[i];
        let expected = avsnode_example_performer::square(&task.payload).unwrap_or_default();
        if result.output != expected {
            failures.push(format!("task {}: wrong output", task.task_id));
        } else if let Err(e) = verify_result(result, task, &sets[*set].3) {
            failures.push(e);
        }
    }

    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let verified = results.len() - failures.len();
    println!(
        "avsnode demo: {} tasks over {} operator set(s) ({})",
        tasks.len(),
        sets.len(),
        options
            .schemes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  throughput   {:.0} tasks/s ({} in {:.2} s)",
        results.len() as f64 / elapsed.as_secs_f64(),
        results.len(),
        elapsed.as_secs_f64()
    );
    let throughput = results.len() as f64 / elapsed.as_secs_f64();
    let floor_rate = cores as f64 / floor.as_secs_f64();
    println!(
        "  crypto floor {:.0} µs per task on one core (aggregator check in batches, result and auth signatures), × {cores} cores = {floor_rate:.0} tasks/s; this run {:.0}% of it",
        floor.as_secs_f64() * 1e6,
        100.0 * throughput / floor_rate
    );
    println!(
        "  latency      p50 {:.1} ms, p99 {:.1} ms",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3
    );
    println!(
        "  signatures   {verified}/{} answers verified (result and auth signatures)",
        tasks.len()
    );
    if backend == "postgres" {
        println!(
            "  ledger       PostgreSQL, {} replica(s): {round_trips} statements for {} tasks ({:.2} round trips per task)",
            options.replicas.max(1),
            results.len(),
            round_trips as f64 / results.len().max(1) as f64
        );
    } else {
        println!(
            "  ledger       {} durable commits for {} records (largest batch {}): {:.0} µs of commit time per task",
            ledger.commits,
            results.len(),
            ledger.max_batch,
            ledger.commit_seconds_total * 1e6 / results.len().max(1) as f64
        );
    }
    for line in rejections.iter().chain(&failures).take(10) {
        println!("  problem      {line}");
    }
    let passed = verified == tasks.len() && rejections.is_empty();
    println!(
        "  {}",
        if passed {
            "all signatures verified"
        } else {
            "FAILED"
        }
    );
    Ok(passed)
}

/// The aggregator's key as the node holds it, decoded from what its config entry says.
fn aggregator_public_key(key: &LocalKey, address: Address) -> anyhow::Result<VerifyingKey> {
    let public = (key.scheme() != Scheme::Ecdsa).then(|| hex::encode(key.public_bytes()));
    VerifyingKey::from_config(key.scheme(), &address.to_string(), public.as_deref())
        .map_err(|e| anyhow::anyhow!("the demo aggregator's key: {e}"))
}

/// The crypto floor of one task on one core: the aggregator check and the result and auth
/// signatures, with the node's own code, averaged over the operator sets as the tasks spread over
/// them. The aggregator check is timed as a saturated node makes it: signatures checked
/// together in batches of the largest size (for ECDSA the same as one by one). Each part is the
/// median of five rounds of at least 100 ms.
fn crypto_floor(
    aggregator: &VerifyingKey,
    tasks: &[(NewTask, usize)],
    submissions: &[TaskSubmission],
    sets: &[DemoSet],
    keys: &[LocalKey],
    operator: Address,
) -> anyhow::Result<Duration> {
    let mut per_set = Duration::ZERO;
    for (set, key) in sets.iter().zip(keys) {
        let mine: Vec<usize> = (0..tasks.len())
            .filter(|i| sets[tasks[*i].1].0 == set.0)
            .take(crate::pipeline::MAX_SIGNATURE_BATCH)
            .collect();
        let Some(&first) = mine.first() else {
            continue;
        };
        let hash = |task: &NewTask| {
            TaskMessage {
                task_id: task.task_id,
                avs: task.avs,
                operator,
                operator_set_id: task.operator_set_id,
                reference_timestamp: task.reference_timestamp,
                task_block_number: task.task_block_number,
                payload: &task.payload,
                deadline_unix_ms: task.deadline_unix_ms,
            }
            .hash()
        };
        let batch: Vec<([u8; 32], &[u8])> = mine
            .iter()
            .map(|&i| (hash(&tasks[i].0), &submissions[i].signature[..]))
            .collect();
        let check = median_time(|| {
            let verdicts = aggregator.verify_batch(&batch);
            anyhow::ensure!(
                verdicts.iter().all(|ok| *ok),
                "the demo aggregator's signatures do not verify"
            );
            Ok(batch.len() as u32)
        })?;
        let task = &tasks[first].0;
        let certificate = ResultCertificate::new(key.scheme(), set.2.as_ref())?;
        let output = avsnode_example_performer::square(&task.payload).unwrap_or_default();
        let sign = median_time(|| {
            let (_, digest) = certificate_digest(
                &certificate,
                &task.task_id,
                task.reference_timestamp,
                &output,
            );
            let auth = AuthMessage {
                task_id: task.task_id,
                avs: task.avs,
                operator,
                operator_set_id: task.operator_set_id,
                result_signature: &[],
            };
            std::hint::black_box(key.sign_result(&digest, auth));
            Ok(1)
        })?;
        per_set += check + sign;
    }
    Ok(per_set / sets.len().max(1) as u32)
}

/// The time per item of `round` (which does some items and says how many): the median of five
/// rounds of at least 100 ms.
fn median_time(mut round: impl FnMut() -> anyhow::Result<u32>) -> anyhow::Result<Duration> {
    let mut rounds = Vec::with_capacity(5);
    for _ in 0..5 {
        let (start, mut n) = (Instant::now(), 0u32);
        while n < 3 || start.elapsed() < Duration::from_millis(100) {
            n += round()?;
        }
        rounds.push(start.elapsed() / n);
    }
    rounds.sort();
    Ok(rounds[2])
}

#[allow(clippy::print_stderr)]
fn progress(done: usize, total: usize) {
    const WIDTH: usize = 40;
    let filled = done * WIDTH / total.max(1);
    eprint!(
        "\r  [{}{}] {done}/{total}",
        "#".repeat(filled),
        " ".repeat(WIDTH - filled)
    );
    let _ = std::io::stderr().flush();
}
