//! The end-to-end fixture: operator and aggregator keys, a node configuration, and the real
//! `avsnode run` binary as a child process, with an aggregator-side client to drive it.
//!
//! A [`Fixture`] owns a temporary directory with light-KDF keystores (mode 0600) for one operator
//! set per scheme (ids 0 = ECDSA, 1 = BN254, 2 = BLS12-381) and one aggregator per scheme. A
//! [`NodeBuilder`] writes a TOML configuration for it (one or more AVSs, each with its own example
//! performer knobs and limits) and starts the node; restarting on the same data directory is
//! starting another builder on the same fixture.
//!
//! Every node runs in its own process group and is watched by a small shell watchdog: if the test
//! process dies (or a shared node in a `static` is never dropped), the watchdog stops the node and
//! its performers and removes the temporary directory, so no test leaves processes behind.

#![allow(clippy::unwrap_used, clippy::print_stderr, dead_code, unreachable_pub)]

pub mod flood;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use avsnode_aggregator::{Aggregator, NewTask, OperatorKey, verify_result};
use avsnode_keystore::{Kdf, Password};
use avsnode_proto::executor::executor_service_client::ExecutorServiceClient;
use avsnode_proto::executor::{TaskResult, TaskSubmission};
use avsnode_proto::stream::task_stream_client::TaskStreamClient;
use avsnode_proto::stream::{StreamEvent, StreamRequest, stream_request};
use avsnode_signer::Scheme;
use avsnode_signer::messages::{Address, EcdsaVerifier, TaskId, keccak256};
use avsnode_signing::LocalKey;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// The three schemes, in operator-set id order.
pub const SCHEMES: [Scheme; 3] = [Scheme::Ecdsa, Scheme::Bn254, Scheme::Bls12381];

/// The AVS every default node serves.
pub const AVS: &str = "0x000000000000000000000000000000000000a5a5";

/// The ECDSA operator set's certificate verifier (EIP-712 `verifyingContract`).
pub const VERIFIER: &str = "0x00000000000000000000000000000000000c0de1";

/// How long a node may take from spawn to serving.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a stopped node may take to exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Keystore password of every test key.
const PASSWORD: &str = "e2e-password";

/// An address from a string literal (test constants).
pub fn address(text: &str) -> Address {
    text.parse().unwrap()
}

/// Unix time in seconds.
pub fn now_secs() -> u32 {
    (now_ms() / 1000) as u32
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A task id no other test (or earlier run) uses.
pub fn fresh_task_id() -> TaskId {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let seed = [
        &std::process::id().to_be_bytes()[..],
        &nanos.to_be_bytes(),
        &n.to_be_bytes(),
    ]
    .concat();
    TaskId(keccak256(&seed))
}

/// One operator set of the fixture: its id, scheme, and public key as an aggregator knows it.
#[derive(Debug)]
pub struct OperatorSetKey {
    /// The operator set id (0 ECDSA, 1 BN254, 2 BLS12-381).
    pub id: u32,
    /// Its scheme.
    pub scheme: Scheme,
    /// What its results verify under.
    pub public: OperatorKey,
    signer: String,
}

/// Keys and a temporary directory shared by every node started on it (same data dir).
#[derive(Debug)]
pub struct Fixture {
    dir: tempfile::TempDir,
    /// The operator address tasks are addressed to.
    pub operator: Address,
    aggregators: Vec<(Scheme, Aggregator, String)>,
    sets: Vec<OperatorSetKey>,
    configs: AtomicU64,
}

impl Fixture {
    /// Fresh keys: one operator set and one aggregator per scheme, keystores with light KDF.
    pub fn new() -> Arc<Fixture> {
        let dir = tempfile::Builder::new()
            .prefix("avsnode-e2e-")
            .tempdir()
            .unwrap();
        let keys_dir = dir.path().join("keys");
        std::fs::create_dir(&keys_dir).unwrap();
        let operator = match LocalKey::generate(Scheme::Ecdsa) {
            LocalKey::Ecdsa(k) => k.public_key().address(),
            _ => unreachable!("generated an ECDSA key"),
        };
        let verifier = EcdsaVerifier {
            address: address(VERIFIER),
            version: "1".into(),
        };
        let password = Password::new(PASSWORD);
        let mut sets = Vec::new();
        for (id, scheme) in SCHEMES.into_iter().enumerate() {
            let key = LocalKey::generate(scheme);
            let signer = format!("{scheme}-key");
            key.encrypt(&password, &Kdf::light())
                .unwrap()
                .write_new(&keys_dir.join(format!("{signer}.json")))
                .unwrap();
            avsnode_keystore::write_private(
                &keys_dir.join(format!("{signer}.pass")),
                format!("{PASSWORD}\n").as_bytes(),
            )
            .unwrap();
            let public =
                OperatorKey::of(&key, (scheme == Scheme::Ecdsa).then(|| verifier.clone())).unwrap();
            sets.push(OperatorSetKey {
                id: id as u32,
                scheme,
                public,
                signer,
            });
        }
        let aggregators = SCHEMES
            .into_iter()
            .map(|scheme| {
                let key = LocalKey::generate(scheme);
                let (address, config) = match &key {
                    LocalKey::Ecdsa(k) => {
                        let a = k.public_key().address();
                        (a, format!("{{ scheme = \"ecdsa\", address = \"{a}\" }}"))
                    }
                    _ => {
                        // BN254 and BLS12-381 aggregators are named by any address and
                        // identified by their public key.
                        let public = key.public_bytes();
                        let mut a = [0u8; 20];
                        a.copy_from_slice(&keccak256(&public)[12..]);
                        let a = Address(a);
                        (
                            a,
                            format!(
                                "{{ scheme = \"{scheme}\", address = \"{a}\", public_key = \"0x{}\" }}",
                                hex::encode(&public)
                            ),
                        )
                    }
                };
                (scheme, Aggregator::new(address, key), config)
            })
            .collect();
        Arc::new(Fixture {
            dir,
            operator,
            aggregators,
            sets,
            configs: AtomicU64::new(0),
        })
    }

    /// The temporary directory (keys, configurations, logs, `data/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The nodes' data directory (the ledger).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The aggregator of `scheme`.
    pub fn aggregator(&self, scheme: Scheme) -> &Aggregator {
        &self
            .aggregators
            .iter()
            .find(|(s, _, _)| *s == scheme)
            .unwrap()
            .1
    }

    /// The operator set of `scheme`.
    pub fn set(&self, scheme: Scheme) -> &OperatorSetKey {
        self.sets.iter().find(|s| s.scheme == scheme).unwrap()
    }

    /// The operator set with id `id`.
    pub fn set_by_id(&self, id: u32) -> Option<&OperatorSetKey> {
        self.sets.iter().find(|s| s.id == id)
    }

    /// A well-formed version-1 task for the operator set of `scheme` on `avs`: fresh id, reference
    /// timestamp now, addressed to this operator.
    pub fn task(&self, avs: &str, scheme: Scheme, payload: &[u8]) -> NewTask {
        NewTask {
            task_id: fresh_task_id(),
            avs: address(avs),
            operator: self.operator,
            operator_set_id: self.set(scheme).id,
            reference_timestamp: now_secs(),
            task_block_number: 4242,
            payload: payload.to_vec(),
            deadline_unix_ms: None,
        }
    }

    /// The submission of `task`, signed by the aggregator of `aggregator`.
    pub fn sign(&self, aggregator: Scheme, task: &NewTask) -> TaskSubmission {
        self.aggregator(aggregator).sign(task)
    }

    /// Checks `result` as a chain would: echoes, version, both signatures under the task's
    /// operator set key; and that the output is the example performer's square of the payload.
    pub fn verify(&self, result: &TaskResult, task: &NewTask) -> Result<(), String> {
        self.verify_signed(result, task)?;
        let expected = avsnode_example_performer::square(&task.payload).unwrap();
        if result.output != expected {
            return Err(format!(
                "task {}: output 0x{} is not the square 0x{}",
                task.task_id,
                hex::encode(&result.output),
                hex::encode(&expected)
            ));
        }
        Ok(())
    }

    /// As [`Fixture::verify`], but for performers with `--random-output`: the output is the square
    /// followed by 16 random bytes.
    pub fn verify_random(&self, result: &TaskResult, task: &NewTask) -> Result<(), String> {
        self.verify_signed(result, task)?;
        let expected = avsnode_example_performer::square(&task.payload).unwrap();
        if result.output.len() != expected.len() + 16 || result.output[..16] != expected[..] {
            return Err(format!(
                "task {}: output 0x{} is not the square 0x{} and 16 random bytes",
                task.task_id,
                hex::encode(&result.output),
                hex::encode(&expected)
            ));
        }
        Ok(())
    }

    /// As [`Fixture::verify`], for an example performer started with `--marker MARKER`: the
    /// output is the square followed by the marker.
    pub fn verify_marked(
        &self,
        result: &TaskResult,
        task: &NewTask,
        marker: &str,
    ) -> Result<(), String> {
        self.verify_signed(result, task)?;
        let mut expected = avsnode_example_performer::square(&task.payload).unwrap();
        expected.extend_from_slice(marker.as_bytes());
        if result.output != expected {
            return Err(format!(
                "task {}: output {:?} is not the square followed by {marker:?}",
                task.task_id,
                String::from_utf8_lossy(&result.output)
            ));
        }
        Ok(())
    }

    fn verify_signed(&self, result: &TaskResult, task: &NewTask) -> Result<(), String> {
        let set = self
            .set_by_id(task.operator_set_id)
            .ok_or_else(|| format!("no operator set {}", task.operator_set_id))?;
        verify_result(result, task, &set.public)?;
        if result.version != 1 {
            return Err(format!("TaskResult.version is {}, not 1", result.version));
        }
        if result.avs_address != result.avs_address.to_lowercase() {
            return Err(format!(
                "avs_address {} is not lower-case",
                result.avs_address
            ));
        }
        Ok(())
    }

    /// [`Fixture::verify`] for many answers, spread over the machine's cores (a BN254 check costs
    /// two pairings). Returns every failure.
    pub fn verify_all(&self, answers: &[(&TaskResult, &NewTask)]) -> Vec<String> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let chunk = answers.len().div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            let workers: Vec<_> = answers
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .filter_map(|(result, task)| self.verify(result, task).err())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        })
    }

    /// Panics unless [`Fixture::verify`] passes.
    pub fn assert_verifies(&self, result: &TaskResult, task: &NewTask) {
        if let Err(e) = self.verify(result, task) {
            panic!("{e}");
        }
    }

    fn next_config_path(&self) -> PathBuf {
        let n = self.configs.fetch_add(1, Ordering::Relaxed);
        self.dir.path().join(format!("avsnode-{n}.toml"))
    }

    fn aggregator_configs(&self) -> String {
        self.aggregators
            .iter()
            .map(|(_, _, config)| config.as_str())
            .collect::<Vec<_>>()
            .join(",\n  ")
    }
}

/// One `[[avs]]` of a test node: its example performer's knobs and its limits.
#[derive(Debug, Clone)]
pub struct AvsSpec {
    /// The AVS address.
    pub address: String,
    /// Example-performer arguments beyond `--host 127.0.0.1`, e.g. `["--delay-ms", "300"]`.
    pub performer_args: Vec<String>,
    /// `max_concurrency`.
    pub max_concurrency: Option<usize>,
    /// `queue_depth`.
    pub queue_depth: Option<usize>,
    /// `max_payload_size`.
    pub max_payload_size: Option<usize>,
    /// `max_output_size`.
    pub max_output_size: Option<usize>,
    /// The whole `[avs.performer]` table body instead of the example performer as a process,
    /// e.g. `runtime = "docker"\nimage = "…"`.
    pub performer_toml: Option<String>,
    /// Further lines of the `[[avs]]` table.
    pub toml: String,
    /// Operator sets beyond the fixture's three: (id, scheme, ECDSA verifier address), each
    /// signed by the fixture's key of that scheme.
    pub extra_sets: Vec<(u32, Scheme, Option<String>)>,
}

impl AvsSpec {
    /// An AVS with the example performer's defaults and the node's default limits.
    pub fn new(address: &str) -> AvsSpec {
        AvsSpec {
            address: address.to_owned(),
            performer_args: Vec::new(),
            max_concurrency: None,
            queue_depth: None,
            max_payload_size: None,
            max_output_size: None,
            performer_toml: None,
            toml: String::new(),
            extra_sets: Vec::new(),
        }
    }

    /// One more operator set `id`, signed by the fixture's `scheme` key (so it shares that key
    /// with the fixture's set of the scheme); ECDSA sets use `verifier` (default [`VERIFIER`]).
    pub fn operator_set(mut self, id: u32, scheme: Scheme, verifier: Option<&str>) -> AvsSpec {
        self.extra_sets
            .push((id, scheme, verifier.map(str::to_owned)));
        self
    }

    /// Lines added to the `[[avs]]` table, e.g. `aggregator_rate_limit = 5`.
    pub fn toml(mut self, lines: &str) -> AvsSpec {
        self.toml.push_str(lines);
        self.toml.push('\n');
        self
    }

    /// The per-aggregator rate limit out of the way (a million tasks a second, as the demo's), for
    /// tests that send more than the default's burst and are not about the limit.
    pub fn without_rate_limit(self) -> AvsSpec {
        self.toml("aggregator_rate_limit = 1000000.0\naggregator_burst = 1000000")
    }

    /// The `[avs.performer]` table body, replacing the example performer process.
    pub fn performer_toml(mut self, toml: &str) -> AvsSpec {
        self.performer_toml = Some(toml.to_owned());
        self
    }

    /// Example-performer knobs (`--random-output`, `--delay-ms N`, `--fail-rate 1`, …).
    pub fn performer(mut self, args: &[&str]) -> AvsSpec {
        self.performer_args = args.iter().map(|a| (*a).to_owned()).collect();
        self
    }

    /// `max_concurrency`.
    pub fn max_concurrency(mut self, n: usize) -> AvsSpec {
        self.max_concurrency = Some(n);
        self
    }

    /// `queue_depth`.
    pub fn queue_depth(mut self, n: usize) -> AvsSpec {
        self.queue_depth = Some(n);
        self
    }

    /// `max_payload_size`.
    pub fn max_payload_size(mut self, n: usize) -> AvsSpec {
        self.max_payload_size = Some(n);
        self
    }

    /// `max_output_size`.
    pub fn max_output_size(mut self, n: usize) -> AvsSpec {
        self.max_output_size = Some(n);
        self
    }
}

/// Builds a node's configuration and starts it.
#[derive(Debug, Default)]
pub struct NodeBuilder {
    fixture: Option<Arc<Fixture>>,
    avs: Vec<AvsSpec>,
    stream_inflight: Option<usize>,
    data_dir: Option<PathBuf>,
    node_toml: String,
    extra_toml: String,
    signer_backends: Vec<(Scheme, String)>,
    intake_toml: String,
    intake_listen: Option<String>,
    shutdown_grace: Option<String>,
    env: Vec<(String, String)>,
    log_level: Option<String>,
    aggregator_toml: String,
    /// A signal sent while the node starts (`hangup_while_starting`).
    signal_while_starting: Option<&'static str>,
    /// The node's open-files limit, soft and hard (`open_files_limit`).
    open_files: Option<u64>,
    /// `aggregators = "from_chain"` in every `[[avs]]`.
    aggregators_from_chain: bool,
}

impl NodeBuilder {
    /// Keys added to every aggregator's inline table in every `[[avs]]`, e.g.
    /// `tls_client_names = ["agg-a.example"]` (required once the intake runs mutual TLS).
    /// Sends SIGHUP while the node starts: once it logs that its metrics listener serves (the
    /// first thing `RunningNode::start` does), before it opens the ledger, signers, performers
    /// and the intake.
    pub fn hangup_while_starting(mut self) -> NodeBuilder {
        self.signal_while_starting = Some("-HUP");
        self
    }

    /// Runs the node with this open-files limit (soft and hard, through `prlimit`), as systemd's
    /// default of 1024 would.
    pub fn open_files_limit(mut self, n: u64) -> NodeBuilder {
        self.open_files = Some(n);
        self
    }

    /// Every AVS reads its aggregators from chain (`aggregators = "from_chain"`; needs a
    /// `[chain]` table in [`NodeBuilder::extra_toml`]).
    pub fn aggregators_from_chain(mut self) -> NodeBuilder {
        self.aggregators_from_chain = true;
        self
    }

    pub fn aggregator_toml(mut self, keys: &str) -> NodeBuilder {
        self.aggregator_toml = keys.to_owned();
        self
    }

    /// Replaces the `keystore`/`password_file` lines of `scheme`'s `[[signer]]` with `lines`,
    /// e.g. `pkcs11 = { … }` or `remote = { … }`. Results then verify under that backend's key,
    /// not under the fixture's [`OperatorSetKey::public`] (unless the backend holds the same key).
    pub fn signer_backend(mut self, scheme: Scheme, lines: &str) -> NodeBuilder {
        self.signer_backends.push((scheme, lines.to_owned()));
        self
    }

    /// An environment variable for the node process (e.g. `SOFTHSM2_CONF`).
    pub fn env(mut self, key: &str, value: impl Into<String>) -> NodeBuilder {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    /// The node's log filter (`AVSNODE_LOG`; default `info`), e.g. `debug`.
    pub fn log_level(mut self, level: &str) -> NodeBuilder {
        self.log_level = Some(level.to_owned());
        self
    }

    /// Runs on `fixture` (its keys and data dir), e.g. to restart a stopped node.
    pub fn fixture(mut self, fixture: Arc<Fixture>) -> NodeBuilder {
        self.fixture = Some(fixture);
        self
    }

    /// Serves this AVS (without any, the node serves [`AVS`] with default settings).
    pub fn avs(mut self, avs: AvsSpec) -> NodeBuilder {
        self.avs.push(avs);
        self
    }

    /// `node.shutdown_grace` (default `"5s"`).
    pub fn shutdown_grace(mut self, grace: &str) -> NodeBuilder {
        self.shutdown_grace = Some(grace.to_owned());
        self
    }

    /// The intake's address (default `127.0.0.1:0`): a fixed one for a node restarted behind a
    /// load balancer.
    pub fn intake_listen(mut self, addr: &str) -> NodeBuilder {
        self.intake_listen = Some(addr.to_owned());
        self
    }

    /// Lines added to `[intake]`, e.g. `max_tasks_in_memory = 8`.
    pub fn intake_toml(mut self, lines: &str) -> NodeBuilder {
        self.intake_toml.push_str(lines);
        self.intake_toml.push('\n');
        self
    }

    /// `intake.stream_inflight`.
    pub fn stream_inflight(mut self, n: usize) -> NodeBuilder {
        self.stream_inflight = Some(n);
        self
    }

    /// Lines added to `[node]`, e.g. `id = "test-1"`.
    pub fn node_toml(mut self, toml: &str) -> NodeBuilder {
        self.node_toml.push_str(toml);
        self.node_toml.push('\n');
        self
    }

    /// Tables added to the configuration, e.g. `[management]` and `[docker]`.
    pub fn extra_toml(mut self, toml: &str) -> NodeBuilder {
        self.extra_toml.push_str(toml);
        self.extra_toml.push('\n');
        self
    }

    /// Another data directory than the fixture's [`Fixture::data_dir`].
    pub fn data_dir(mut self, dir: &Path) -> NodeBuilder {
        self.data_dir = Some(dir.to_owned());
        self
    }

    /// Writes the configuration (a new file in the fixture's directory) and returns its path.
    pub fn write_config(&mut self) -> PathBuf {
        let fixture = self.fixture.get_or_insert_with(Fixture::new).clone();
        if self.avs.is_empty() {
            self.avs.push(AvsSpec::new(AVS));
        }
        let performer = avsnode_tests::binary("avsnode-example-performer");
        let data_dir = self.data_dir.clone().unwrap_or_else(|| fixture.data_dir());
        let mut toml = format!(
            "[node]\noperator_address = \"{}\"\ndata_dir = {:?}\nshutdown_grace = {:?}\n{}\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n\n{}\n[intake]\nlisten = {:?}\n",
            fixture.operator,
            data_dir.display().to_string(),
            self.shutdown_grace.as_deref().unwrap_or("5s"),
            self.node_toml,
            self.extra_toml,
            self.intake_listen.as_deref().unwrap_or("127.0.0.1:0"),
        );
        if let Some(n) = self.stream_inflight {
            writeln!(toml, "stream_inflight = {n}").unwrap();
        }
        toml.push_str(&self.intake_toml);
        for set in &fixture.sets {
            let backend = match self.signer_backends.iter().find(|(s, _)| *s == set.scheme) {
                Some((_, lines)) => lines.clone(),
                None => format!(
                    "keystore = \"keys/{0}.json\"\npassword_file = \"keys/{0}.pass\"",
                    set.signer
                ),
            };
            write!(
                toml,
                "\n[[signer]]\nname = \"{0}\"\nscheme = \"{1}\"\n{backend}\n",
                set.signer, set.scheme
            )
            .unwrap();
        }
        for avs in &self.avs {
            write!(toml, "\n[[avs]]\naddress = \"{}\"\n", avs.address).unwrap();
            for (key, value) in [
                ("max_concurrency", avs.max_concurrency),
                ("queue_depth", avs.queue_depth),
                ("max_payload_size", avs.max_payload_size),
                ("max_output_size", avs.max_output_size),
            ] {
                if let Some(value) = value {
                    writeln!(toml, "{key} = {value}").unwrap();
                }
            }
            toml.push_str(&avs.toml);
            let mut aggregators = fixture.aggregator_configs();
            if !self.aggregator_toml.is_empty() {
                // Every entry is an inline table ending in " }".
                aggregators = aggregators.replace(" }", &format!(", {} }}", self.aggregator_toml));
            }
            if self.aggregators_from_chain {
                writeln!(toml, "aggregators = \"from_chain\"\noperator_sets = [").unwrap();
            } else {
                writeln!(
                    toml,
                    "aggregators = [\n  {aggregators}\n]\noperator_sets = ["
                )
                .unwrap();
            }
            for set in &fixture.sets {
                match set.scheme {
                    Scheme::Ecdsa => writeln!(
                        toml,
                        "  {{ id = {}, signer = \"{}\", verifier = \"{VERIFIER}\", verifier_version = \"1\" }},",
                        set.id, set.signer
                    ),
                    _ => writeln!(toml, "  {{ id = {}, signer = \"{}\" }},", set.id, set.signer),
                }
                .unwrap();
            }
            for (id, scheme, verifier) in &avs.extra_sets {
                let signer = &fixture.set(*scheme).signer;
                match scheme {
                    Scheme::Ecdsa => writeln!(
                        toml,
                        "  {{ id = {id}, signer = \"{signer}\", verifier = \"{}\", verifier_version = \"1\" }},",
                        verifier.as_deref().unwrap_or(VERIFIER)
                    ),
                    _ => writeln!(toml, "  {{ id = {id}, signer = \"{signer}\" }},"),
                }
                .unwrap();
            }
            if let Some(performer) = &avs.performer_toml {
                writeln!(toml, "]\n[avs.performer]\n{performer}").unwrap();
                continue;
            }
            let args: Vec<String> = ["--host", "127.0.0.1"]
                .iter()
                .map(|a| (*a).to_owned())
                .chain(avs.performer_args.iter().cloned())
                .collect();
            writeln!(
                toml,
                "]\n[avs.performer]\nruntime = \"process\"\ncommand = {:?}\nargs = {:?}",
                performer.display().to_string(),
                args
            )
            .unwrap();
        }
        let path = fixture.next_config_path();
        std::fs::write(&path, toml).unwrap();
        path
    }

    /// Starts `avsnode run` and returns once its intake listens (at most 30 s).
    pub fn start(mut self) -> TestNode {
        let config = self.write_config();
        let fixture = self.fixture.clone().unwrap();
        let log = config.with_extension("log");
        // prlimit execs the node: the same process, with the limit set.
        let mut command = match self.open_files {
            Some(n) => {
                let mut command = Command::new("prlimit");
                command
                    .arg(format!("--nofile={n}:{n}"))
                    .arg("--")
                    .arg(avsnode_tests::binary("avsnode"));
                command
            }
            None => Command::new(avsnode_tests::binary("avsnode")),
        };
        command
            .args(["--log-format", "json", "run", "--config"])
            .arg(&config)
            .env("AVSNODE_LOG", self.log_level.as_deref().unwrap_or("info"))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(config.with_extension("stdout")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap());
        // Its own process group, so its performers can be stopped with it (see `Drop`).
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().unwrap();
        let watchdog = spawn_watchdog(child.id(), fixture.dir());
        if let Some(sig) = self.signal_while_starting {
            let deadline = Instant::now() + START_TIMEOUT;
            while !std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("metrics serving")
            {
                assert!(Instant::now() < deadline, "the node never started");
                std::thread::sleep(Duration::from_millis(2));
            }
            signal(child.id(), sig);
        }
        let mut node = TestNode {
            fixture,
            child: Some(child),
            watchdog: Some(watchdog),
            address: None,
            config,
            log,
            log_printed: AtomicBool::new(false),
        };
        node.address = Some(node.wait_until_serving());
        node
    }

    /// Runs `avsnode run` with this configuration and waits (at most 30 s) for it to exit: for
    /// nodes expected to refuse to start. Returns its exit status and stderr.
    pub fn run_to_exit(mut self) -> (ExitStatus, String) {
        let config = self.write_config();
        let (status, _, stderr) =
            avsnode_cli(&["run".as_ref(), "--config".as_ref(), config.as_ref()]);
        (status, stderr)
    }
}

/// Runs `avsnode ARGS…` to completion (at most 30 s) and returns its status, stdout and stderr.
pub fn avsnode_cli(args: &[&std::ffi::OsStr]) -> (ExitStatus, String, String) {
    let mut child = Command::new(avsnode_tests::binary("avsnode"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let read = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + START_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("avsnode {args:?} did not exit within {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, stdout.join().unwrap(), stderr.join().unwrap())
}

/// Stops the node (and its process group) when the test process is gone, then removes the
/// fixture's directory: the safety net for nodes that are never dropped.
fn spawn_watchdog(node: u32, dir: &Path) -> Child {
    const SCRIPT: &str = r#"
        while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 0.2; done
        if kill -0 "$2" 2>/dev/null; then
            kill -TERM "$2" 2>/dev/null
            i=0
            while kill -0 "$2" 2>/dev/null && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i+1)); done
            kill -KILL -- "-$2" 2>/dev/null
        fi
        if ! kill -0 "$1" 2>/dev/null; then rm -rf -- "$3"; fi
    "#;
    Command::new("/bin/sh")
        .args(["-c", SCRIPT, "watchdog"])
        .arg(std::process::id().to_string())
        .arg(node.to_string())
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// A running `avsnode run` child process. Dropping it stops it (SIGTERM, then SIGKILL to its
/// process group) and, when the test is failing, prints the node's log.
#[derive(Debug)]
pub struct TestNode {
    fixture: Arc<Fixture>,
    child: Option<Child>,
    watchdog: Option<Child>,
    address: Option<SocketAddr>,
    config: PathBuf,
    log: PathBuf,
    log_printed: AtomicBool,
}

impl TestNode {
    /// A builder for a node (fresh fixture unless one is given).
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// The fixture the node runs on.
    pub fn fixture(&self) -> &Arc<Fixture> {
        &self.fixture
    }

    /// The intake address.
    pub fn address(&self) -> SocketAddr {
        self.address.unwrap()
    }

    /// The management listener's address, from the log line "management serving".
    pub fn management_address(&self) -> SocketAddr {
        self.log()
            .lines()
            .find_map(|line| logged_address(line, "management serving"))
            .expect("the node logs its management address")
    }

    /// The metrics listener's address (`/metrics`, `/healthz`, `/readyz`), from the log line
    /// `{"fields":{"message":"metrics serving","listen":…}}`, logged before the intake serves.
    pub fn metrics_address(&self) -> SocketAddr {
        self.log()
            .lines()
            .find_map(|line| logged_address(line, "metrics serving"))
            .expect("the node logged \"metrics serving\" before \"intake serving\"")
    }

    /// `http://` + the intake address.
    pub fn url(&self) -> String {
        format!("http://{}", self.address())
    }

    /// The configuration file it runs with.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// The node's log so far (JSON lines on stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The node's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A guard that prints the node's log if the test panics while it is held (for nodes shared
    /// in a `static`, which are never dropped).
    pub fn log_on_panic(&self) -> LogOnPanic<'_> {
        LogOnPanic(self)
    }

    fn print_log(&self) {
        if self.log_printed.swap(true, Ordering::Relaxed) {
            return;
        }
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(200)..];
        eprintln!(
            "---- avsnode log {} (last {} lines) ----\n{}\n---- end of log ----",
            self.log.display(),
            tail.len(),
            tail.join("\n")
        );
    }

    /// Polls the log for the "intake serving" line and returns the address it names.
    fn wait_until_serving(&mut self) -> SocketAddr {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(address) = self.log().lines().find_map(serving_address) {
                return address;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                self.print_log();
                panic!("avsnode exited during start-up with {status}");
            }
            if Instant::now() > deadline {
                self.print_log();
                panic!("avsnode did not serve within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET /readyz`: whether it answered 200, and its body.
    pub async fn readyz(&self) -> (bool, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.metrics_address();
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(format!("GET /readyz HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        (head.contains(" 200 "), body.to_owned())
    }

    /// `GET /metrics`: the text exposition without the HTTP head (at most 20 s; panics unless
    /// 200).
    pub async fn scrape_metrics(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.metrics_address();
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            stream
                .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
                .await?;
            let mut raw = String::new();
            stream.read_to_string(&mut raw).await?;
            Ok::<_, std::io::Error>(raw)
        };
        let raw = tokio::time::timeout(Duration::from_secs(20), exchange)
            .await
            .expect("/metrics answered within 20 s")
            .unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{head}"
        );
        body.to_owned()
    }

    /// SIGKILLs the node and everything it started (its process group), as a crashed host
    /// would, and reaps it.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("the node is running");
        signal_group(child.id(), "-KILL");
        let _ = child.wait();
    }

    /// Sends SIGTERM and waits (at most 10 s) for the node to exit; returns its exit status and
    /// how long it took.
    pub fn stop(&mut self) -> (ExitStatus, Duration) {
        let mut child = self.child.take().expect("the node is running");
        let start = Instant::now();
        signal(child.id(), "-TERM");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                // Anything of its group still alive (a performer) is a leak: end it.
                signal_group(child.id(), "-KILL");
                return (status, start.elapsed());
            }
            if start.elapsed() > STOP_TIMEOUT {
                signal_group(child.id(), "-KILL");
                let _ = child.wait();
                self.print_log();
                panic!("avsnode did not exit within {STOP_TIMEOUT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// An `ExecutorService` client connected to the intake.
    pub async fn client(&self) -> ExecutorServiceClient<Channel> {
        ExecutorServiceClient::connect(self.url()).await.unwrap()
    }

    /// One unary `SubmitTask`.
    pub async fn submit(&self, submission: TaskSubmission) -> Result<TaskResult, tonic::Status> {
        self.client()
            .await
            .submit_task(submission)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Opens one `TaskStream`, sends every submission on it, and returns one event per
    /// submission (in completion order). Panics if the stream ends early or takes over 60 s.
    pub async fn stream(&self, submissions: Vec<TaskSubmission>) -> Vec<StreamEvent> {
        stream_to(self.url(), submissions).await
    }
}

/// Opens one `TaskStream` to the node at `url`, sends every submission on it, and returns one event per
/// submission (in completion order). Panics if the stream ends early or takes over 60 s.
pub async fn stream_to(url: String, submissions: Vec<TaskSubmission>) -> Vec<StreamEvent> {
    let expected = submissions.len();
    let mut client = TaskStreamClient::connect(url).await.unwrap();
    let (sender, outbound) = tokio::sync::mpsc::channel(16);
    let sending = tokio::spawn(async move {
        for task in submissions {
            let request = StreamRequest {
                kind: Some(stream_request::Kind::Task(task)),
            };
            if sender.send(request).await.is_err() {
                break;
            }
        }
        // Keep the request stream open until every answer is in: closing it early is legal,
        // but a long-lived aggregator stream does not close.
        sender.closed().await;
    });
    let mut inbound = client
        .open(ReceiverStream::new(outbound))
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::with_capacity(expected);
    let collect = async {
        while events.len() < expected {
            match inbound.message().await {
                Ok(Some(event)) => events.push(event),
                Ok(None) => panic!(
                    "the stream ended after {} of {expected} events",
                    events.len()
                ),
                Err(status) => panic!(
                    "the stream failed after {} of {expected} events: {status}",
                    events.len()
                ),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), collect)
        .await
        .unwrap_or_else(|_| panic!("no {expected} stream events within 60 s"));
    drop(inbound);
    sending.abort();
    events
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_log();
        }
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "-TERM");
            let deadline = Instant::now() + STOP_TIMEOUT;
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            signal_group(child.id(), "-KILL");
            let _ = child.wait();
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            // It exits by itself within 0.2 s of the node; not waiting for it leaves a zombie
            // until the test process exits, which is harmless.
            let _ = watchdog.try_wait();
        }
    }
}

/// Prints the node's log if dropped during a panic.
#[derive(Debug)]
pub struct LogOnPanic<'a>(&'a TestNode);

impl Drop for LogOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.print_log();
        }
    }
}

/// Sends `signal` (`-HUP`, `-TERM`, …) to `pid` with kill(1).
pub fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Signals the process group `pgid` (the node and the performers it started).
fn signal_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

/// The intake address from the JSON log line `{"fields":{"message":"intake serving","listen":…}}`.
fn serving_address(line: &str) -> Option<SocketAddr> {
    logged_address(line, "intake serving")
}

/// The `listen` address of the JSON log line `{"fields":{"message":MESSAGE,"listen":…}}`.
fn logged_address(line: &str, message: &str) -> Option<SocketAddr> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = value.get("fields")?;
    if fields.get("message")?.as_str()? != message {
        return None;
    }
    fields.get("listen")?.as_str()?.parse().ok()
}

/// How long a SIGHUP reload may take to be logged (it starts changed performers and waits for
/// them to be healthy).
const RELOAD_TIMEOUT: Duration = Duration::from_secs(90);

impl TestNode {
    /// Sends SIGHUP (reload the configuration file) and waits, at most 90 s, for the node to log
    /// the outcome: `Ok` on "configuration reloaded", `Err` with the logged message on
    /// "reload refused…".
    ///
    pub fn reload(&self) -> Result<(), String> {
        let before = reload_outcomes(&self.log()).len();
        signal(self.pid().expect("the node is running"), "-HUP");
        let deadline = Instant::now() + RELOAD_TIMEOUT;
        loop {
            if let Some(outcome) = reload_outcomes(&self.log()).into_iter().nth(before) {
                return outcome;
            }
            if Instant::now() > deadline {
                self.print_log();
                panic!("no reload outcome logged within {RELOAD_TIMEOUT:?} of SIGHUP");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Every reload outcome in `log`, in order: `Ok` for "configuration reloaded", `Err(message)`
/// for a message starting "reload refused".
fn reload_outcomes(log: &str) -> Vec<Result<(), String>> {
    log.lines()
        .filter_map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).ok()?;
            let message = value.get("fields")?.get("message")?.as_str()?;
            if message == "configuration reloaded" {
                Some(Ok(()))
            } else if message.starts_with("reload refused") {
                Some(Err(message.to_owned()))
            } else {
                None
            }
        })
        .collect()
}

/// The sum of the samples of `name` in a `/metrics` text whose labels include every pair of
/// `labels`.
pub fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix(name).and_then(|r| r.strip_prefix('{')) else {
            continue;
        };
        let Some((label_text, value)) = rest.split_once("} ") else {
            continue;
        };
        let found: std::collections::HashMap<&str, &str> = label_text
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        if labels.iter().all(|(k, v)| found.get(k) == Some(v)) {
            sum += value.trim().parse::<f64>().unwrap();
        }
    }
    sum
}

/// A TCP path to a server (a database, an RPC endpoint) that can be cut and healed: cut, it stops carrying bytes both
/// ways on every open connection and carries nothing on new ones (packets dropped, as a
/// partition or a firewall's DROP rule does), while the sockets stay open.
pub struct Link {
    /// Its port on 127.0.0.1.
    pub port: u16,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Link {
    /// A path to 127.0.0.1:`target`.
    pub async fn start(target: u16) -> Link {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, watch) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    if *watch.borrow() {
                        // Held, never answered.
                        std::future::pending::<()>().await;
                    }
                    let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    let cut_now = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => false,
                        _ = watch.wait_for(|cut| *cut) => true,
                    };
                    if cut_now {
                        let _held = (inbound, outbound);
                        std::future::pending::<()>().await;
                    }
                });
            }
        });
        Link { port, cut }
    }

    /// Stops carrying bytes.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Carries bytes again (on new connections).
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}
