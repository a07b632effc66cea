//! `avsnode demo`: the whole product on an embedded default. A temporary data dir, fresh keys
//! for the three schemes, the example performer as a local process, and an in-process aggregator
//! that streams pre-signed tasks over a real socket, then checks every answer as a chain would.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context;
use avsnode_proto::executor::TaskSubmission;
use avsnode_signer::messages::{
    Address, AuthMessage, EcdsaVerifier, ResultCertificate, TaskId, certificate_digest, keccak256,
};
use avsnode_signer::{Scheme, VerifyingKey};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::daemon::RunningNode;
use crate::load::{self, LoadPlan, Pacing, Schedule, Transport};
use crate::pipeline::validate::now_unix_ms;
use avsnode_aggregator::{Aggregator, NewTask, OperatorKey, verify_result};
use avsnode_signing::LocalKey;

/// `avsnode demo` options.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoOptions {
    /// How many tasks the built-in aggregator streams (the saturating run's, or the --rate run's).
    #[arg(long, default_value_t = 3000)]
    pub tasks: usize,
    /// Operator sets to spread tasks over, by scheme (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "ecdsa,bn254,bls12-381", value_parser = parse_scheme)]
    pub schemes: Vec<Scheme>,
    /// The scheme the built-in aggregator signs tasks with.
    #[arg(long, default_value = "ecdsa", value_parser = parse_scheme)]
    pub aggregator: Scheme,
    /// Tasks the aggregator keeps in flight in the saturating run (closed loop), spread over
    /// the streams.
    #[arg(long, default_value_t = 512)]
    pub inflight: usize,
    /// Offer this many tasks/s instead: only an open-loop run at this rate, its latency counted
    /// from each task's intended send time. Default: a saturating run for the throughput (there
    /// a task's time is mostly its wait behind the others in the node's queue, so no latency is
    /// reported), then 2 s of fresh tasks at 1,000 tasks/s (or half the throughput, if lower)
    /// for the latency.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
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
/// Each task's signed deadline, after it is signed; also how long the demo waits for answers.
const TASK_TIME: Duration = Duration::from_secs(120);
/// The default run's paced phase offers this rate, or half the saturated throughput if lower ...
const PACED_RATE: f64 = 1000.0;
/// ... for this long, on fresh tasks.
const PACED_WINDOW: Duration = Duration::from_secs(2);

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
    let run_nonce = now_unix_ms();
    let new_tasks = |indices: std::ops::Range<usize>| -> Vec<(NewTask, usize)> {
        let now = now_unix_ms();
        let nonce = run_nonce.to_be_bytes();
        indices
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
                    deadline_unix_ms: Some(now + TASK_TIME.as_millis() as u64),
                };
                (task, set)
            })
            .collect()
    };
    let tasks = new_tasks(0..options.tasks);
    let submissions: Vec<_> = tasks.iter().map(|(t, _)| aggregator.sign(t)).collect();
    let plan = |pacing, label: &str| LoadPlan {
        target: target.clone(),
        tls: None,
        transport: Transport::Stream,
        connections: options.streams.max(1),
        inflight: options.inflight,
        pacing,
        send_for: None,
        drain_timeout: TASK_TIME,
        keep_results: true,
        progress: (!options.quiet).then(|| label.to_owned()),
    };
    let schemes = options
        .schemes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ");

    // Saturating, the default: throughput only, because with `inflight` tasks queued in front of
    // it a task's time is mostly its wait in the node's queue. Then a short paced run, on fresh
    // tasks, for the latency. With --rate: the paced run alone.
    let mut lines = Vec::new();
    let mut phases = Vec::new();
    match options.rate {
        None => {
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
            let saturated = load::run(&plan(Pacing::Closed, "saturating"), submissions).await?;
            let results = &saturated.results;
            let elapsed = saturated.elapsed;
            lines.push(format!(
                "  throughput   {:.0} tasks/s ({} in {:.2} s)",
                results.len() as f64 / elapsed.as_secs_f64(),
                results.len(),
                elapsed.as_secs_f64()
            ));
            let throughput = results.len() as f64 / elapsed.as_secs_f64();
            let floor_rate = cores as f64 / floor.as_secs_f64();
            lines.push(format!(
                "  crypto floor {:.0} µs per task on one core (aggregator check in batches, result and auth signatures), × {cores} cores = {floor_rate:.0} tasks/s; this run {:.0}% of it",
                floor.as_secs_f64() * 1e6,
                100.0 * throughput / floor_rate
            ));
            phases.push((tasks, saturated));

            // A rate the node keeps up with easily, so the latency is its own, not a queue's.
            let rate = (throughput / 2.0).clamp(1.0, PACED_RATE).floor();
            let schedule = Schedule::new(rate).context("the paced rate")?;
            let first = options.tasks;
            let paced_tasks = new_tasks(first..first + schedule.tasks_within(PACED_WINDOW));
            let paced_submissions = paced_tasks
                .iter()
                .map(|(t, _)| aggregator.sign(t))
                .collect();
            let paced =
                load::run(&plan(Pacing::Open(schedule), "paced"), paced_submissions).await?;
            lines.push(format!(
                "  latency      {} at {rate:.0} tasks/s offered ({} more tasks, open loop)",
                paced.latency.summary(),
                paced_tasks.len(),
            ));
            phases.push((paced_tasks, paced));
        }
        Some(rate) => {
            let schedule = Schedule::new(f64::from(rate)).context("--rate must be at least 1")?;
            let paced = load::run(&plan(Pacing::Open(schedule), "open loop"), submissions).await?;
            lines.push(format!(
                "  throughput   {:.0} tasks/s ({} in {:.2} s) at {rate} tasks/s offered",
                paced.throughput(),
                paced.completed,
                paced.elapsed.as_secs_f64()
            ));
            lines.push(format!(
                "  latency      {} at {rate} tasks/s offered (open loop, from each task's intended send time)",
                paced.latency.summary()
            ));
            phases.push((tasks, paced));
        }
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
    let mut problems = Vec::new();
    let (mut sent, mut recorded) = (0, 0);
    for (tasks, report) in &phases {
        sent += tasks.len();
        recorded += report.results.len();
        for (i, result) in &report.results {
            let (task, set) = &tasks[*i];
            let expected = avsnode_example_performer::square(&task.payload).unwrap_or_default();
            if result.output != expected {
                failures.push(format!("task {}: wrong output", task.task_id));
            } else if let Err(e) = verify_result(result, task, &sets[*set].3) {
                failures.push(e);
            }
        }
        for (code, kind, n) in report.errors.kinds() {
            problems.push(format!("{n} × {code}: {kind}"));
        }
        if report.unexpected_answers > 0 {
            problems.push(format!(
                "{} answers for no task sent, or for one answered already",
                report.unexpected_answers
            ));
        }
        if report.sent < tasks.len() {
            problems.push(format!(
                "{} tasks never sent (every stream closed)",
                tasks.len() - report.sent
            ));
        }
    }
    let verified = recorded - failures.len();
    println!(
        "avsnode demo: {} tasks over {} operator set(s) ({schemes})",
        phases[0].0.len(),
        sets.len(),
    );
    for line in &lines {
        println!("{line}");
    }
    println!("  signatures   {verified}/{sent} answers verified (result and auth signatures)");
    if backend == "postgres" {
        println!(
            "  ledger       PostgreSQL, {} replica(s): {round_trips} statements for {recorded} tasks ({:.2} round trips per task)",
            options.replicas.max(1),
            round_trips as f64 / recorded.max(1) as f64
        );
    } else {
        println!(
            "  ledger       {} durable commits for {recorded} records (largest batch {}): {:.0} µs of commit time per task",
            ledger.commits,
            ledger.max_batch,
            ledger.commit_seconds_total * 1e6 / recorded.max(1) as f64
        );
    }
    for line in problems.iter().chain(&failures).take(10) {
        println!("  problem      {line}");
    }
    let passed = verified == sent && problems.is_empty();
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
        let batch: Vec<([u8; 32], &[u8])> = mine
            .iter()
            .map(|&i| (tasks[i].0.message().hash(), &submissions[i].signature[..]))
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
