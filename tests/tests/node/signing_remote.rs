//! The node signing through a remote signer (DESIGN §4.5) that runs as a separate process,
//! `avsnode signer serve`, over mutual TLS on loopback: byte-identical signatures to local keys,
//! who may use the keys, a signer killed with SIGKILL and restarted, no secret in any output, and
//! a throughput measurement of the remote backend against local keys.
//!
//! The signer serves the [`Fixture`]'s own keystores, so a node whose signers are `remote` and a
//! node with the same fixture's local keystores sign with the same keys. Certificates come from
//! [`avsnode_tests::pki`]: clients `node` (every key), `other-node` (the BLS12-381 key only) and
//! `stranger` (issued by the CA, not configured on the signer).
//!
//! The measurement prints numbers with `AVSNODE_MEASURE=1` (3,000 tasks per scheme and backend;
//! run it in release, alone):
//! `AVSNODE_MEASURE=1 cargo test --release -p avsnode-tests --test node signing_remote::measure -- --nocapture`.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{AVS, Fixture, SCHEMES, TestNode, VERIFIER, address, sample};
use avsnode_aggregator::{NewTask, OperatorKey, verify_result};
use avsnode_keystore::{Keystore, Password};
use avsnode_proto::executor::{TaskResult, TaskSubmission};
use avsnode_proto::signer::signer_client::SignerClient;
use avsnode_proto::signer::{ListKeysRequest, SignResultRequest};
use avsnode_proto::stream::task_stream_client::TaskStreamClient;
use avsnode_proto::stream::{StreamRequest, stream_event, stream_request};
use avsnode_signer::Scheme;
use avsnode_signer::messages::EcdsaVerifier;
use avsnode_signing::LocalKey;
use avsnode_tests::pki::{self, Pki};
use avsnode_tests::softhsm::{self, Token, softhsm_available};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The node's client certificate: may use every key.
const NODE: &str = "node";
/// Another node's certificate: may use the BLS12-381 key only.
const OTHER_NODE: &str = "other-node";
/// Issued by the signer's CA, but not a `[[client]]` of the signer.
const STRANGER: &str = "stranger";

/// How long the signer may take from spawn to answering `ListKeys`.
const SIGNER_START_TIMEOUT: Duration = Duration::from_secs(30);

/// The fixture's signer (and key) name of `scheme`.
fn key_name(scheme: Scheme) -> String {
    format!("{scheme}-key")
}

/// A loopback port nobody listens on now (bound, read and released), for a signer that must
/// come back on the same address after a restart.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The keystore password of `fixture`'s keys, read from its password file (never printed).
fn fixture_password(fixture: &Fixture) -> String {
    let path = fixture
        .dir()
        .join(format!("keys/{}.pass", key_name(Scheme::Ecdsa)));
    std::fs::read_to_string(path).unwrap().trim_end().to_owned()
}

/// `avsnode signer serve` as a child process, serving a fixture's three keystores on a fixed
/// loopback port with its own PKI and data directory; restartable on the same port and data dir.
struct SignerHost {
    dir: PathBuf,
    pki: Pki,
    addr: SocketAddr,
    config: PathBuf,
    child: Option<Child>,
    watchdog: Option<Child>,
    /// Every run's (stdout, stderr) files, oldest first.
    outputs: Vec<(PathBuf, PathBuf)>,
}

impl SignerHost {
    /// Writes the PKI and the configuration in `fixture.dir()/NAME`; does not start it.
    fn new(fixture: &Fixture, name: &str) -> SignerHost {
        let dir = fixture.dir().join(name);
        std::fs::create_dir(&dir).unwrap();
        let pki_dir = dir.join("pki");
        std::fs::create_dir(&pki_dir).unwrap();
        let pki = pki::write(&pki_dir, &[NODE, OTHER_NODE, STRANGER]);
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut keys = String::new();
        for scheme in SCHEMES {
            let name = key_name(scheme);
            let keystore = fixture.dir().join(format!("keys/{name}.json"));
            let password = fixture.dir().join(format!("keys/{name}.pass"));
            keys.push_str(&format!(
                "[[key]]\nname = \"{name}\"\nscheme = \"{scheme}\"\nkeystore = {:?}\npassword_file = {:?}\n\n",
                keystore.display().to_string(),
                password.display().to_string(),
            ));
        }
        let all_keys = SCHEMES
            .iter()
            .map(|&s| format!("\"{}\"", key_name(s)))
            .collect::<Vec<_>>()
            .join(", ");
        let path = |p: PathBuf| format!("{:?}", p.display().to_string());
        let config = format!(
            "listen = \"{addr}\"\ndata_dir = \"data\"\n\n[tls]\ncert = {}\nkey = {}\nclient_ca = {}\n\n\
             {keys}[[client]]\nname = \"{NODE}\"\ncertificate = {}\nkeys = [{all_keys}]\n\n\
             [[client]]\nname = \"{OTHER_NODE}\"\ncertificate = {}\nkeys = [\"{}\"]\n",
            path(pki.server_cert()),
            path(pki.server_key()),
            path(pki.ca()),
            path(pki.client_cert(NODE)),
            path(pki.client_cert(OTHER_NODE)),
            key_name(Scheme::Bls12381),
        );
        let config_path = dir.join("signer.toml");
        std::fs::write(&config_path, config).unwrap();
        SignerHost {
            dir,
            pki,
            addr,
            config: config_path,
            child: None,
            watchdog: None,
            outputs: Vec::new(),
        }
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The node's `[[signer]]` backend lines for this signer with client `client`'s certificate.
    fn backend(&self, client: &str) -> String {
        self.backend_with(&self.pki.client_cert(client), &self.pki.client_key(client))
    }

    /// The backend lines with any certificate and key.
    fn backend_with(&self, cert: &Path, key: &Path) -> String {
        format!(
            "remote = {{ url = \"{}\", ca = {:?}, cert = {:?}, key = {:?}, timeout = \"2s\" }}",
            self.url(),
            self.pki.ca().display().to_string(),
            cert.display().to_string(),
            key.display().to_string(),
        )
    }

    /// Spawns `avsnode --log-format json signer serve` with `AVSNODE_LOG=log_level` and returns
    /// once the node's client can list its keys (at most 30 s).
    async fn start(&mut self, log_level: &str) {
        assert!(self.child.is_none(), "the signer is already running");
        let run = self.outputs.len();
        let stdout = self.dir.join(format!("signer-{run}.stdout"));
        let stderr = self.dir.join(format!("signer-{run}.log"));
        let mut command = Command::new(avsnode_tests::binary("avsnode"));
        command
            .args(["--log-format", "json", "signer", "serve", "--config"])
            .arg(&self.config)
            .env("AVSNODE_LOG", log_level)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().unwrap();
        self.watchdog = Some(spawn_watchdog(child.id()));
        self.child = Some(child);
        self.outputs.push((stdout, stderr));
        let started = Instant::now();
        loop {
            if let Ok(mut client) = self.raw_client(Some(NODE)).await
                && client.list_keys(ListKeysRequest {}).await.is_ok()
            {
                break;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!(
                    "the signer exited during start-up with {status}:\n{}",
                    self.log()
                );
            }
            assert!(
                started.elapsed() < SIGNER_START_TIMEOUT,
                "the signer did not serve within {SIGNER_START_TIMEOUT:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            self.log().contains("signer serving"),
            "the signer logs that it serves:\n{}",
            self.log()
        );
    }

    /// SIGKILL, and waits until the process is gone.
    fn kill(&mut self) {
        let mut child = self.child.take().expect("the signer is running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM; asserts it exits successfully within 10 s.
    fn stop(&mut self) {
        let mut child = self.child.take().expect("the signer is running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the signer did not exit within 10 s of SIGTERM:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.success(),
            "the signer exited with {status}:\n{}",
            self.log()
        );
    }

    /// Everything every run wrote to stderr (its JSON log), oldest run first.
    fn log(&self) -> String {
        self.outputs
            .iter()
            .map(|(_, stderr)| std::fs::read_to_string(stderr).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every file any run wrote (stdout and stderr), with its contents.
    fn output_files(&self) -> Vec<(String, String)> {
        self.outputs
            .iter()
            .flat_map(|(out, err)| [out, err])
            .map(|p| (p.display().to_string(), std::fs::read_to_string(p).unwrap()))
            .collect()
    }

    /// A raw `Signer` client with client `client`'s certificate, or none.
    async fn raw_client(
        &self,
        client: Option<&str>,
    ) -> Result<SignerClient<Channel>, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(std::fs::read(self.pki.ca()).unwrap()));
        if let Some(client) = client {
            tls = tls.identity(Identity::from_pem(
                std::fs::read(self.pki.client_cert(client)).unwrap(),
                std::fs::read(self.pki.client_key(client)).unwrap(),
            ));
        }
        let channel = Endpoint::from_shared(self.url())
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .connect()
            .await?;
        Ok(SignerClient::new(channel))
    }
}

impl Drop for SignerHost {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "---- signer log {} (last {} lines) ----\n{}\n---- end of signer log ----",
                self.dir.display(),
                lines.len().min(100),
                lines[lines.len().saturating_sub(100)..].join("\n")
            );
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.try_wait();
        }
    }
}

/// SIGKILLs the signer `pid` if this test process dies first (a signer is never left behind).
fn spawn_watchdog(pid: u32) -> Child {
    const SCRIPT: &str = r#"
        while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 0.2; done
        if ! kill -0 "$1" 2>/dev/null; then kill -KILL "$2" 2>/dev/null; fi
    "#;
    Command::new("/bin/sh")
        .args(["-c", SCRIPT, "watchdog"])
        .arg(std::process::id().to_string())
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The typed request the node sends the signer for `task` and `output`, with `scheme`'s key.
fn sign_request(
    fixture: &Fixture,
    scheme: Scheme,
    task: &NewTask,
    output: &[u8],
) -> SignResultRequest {
    let ecdsa = scheme == Scheme::Ecdsa;
    SignResultRequest {
        key: key_name(scheme),
        task_id: task.task_id.0.to_vec(),
        avs: task.avs.to_string(),
        operator_set_id: task.operator_set_id,
        reference_timestamp: task.reference_timestamp,
        output: output.to_vec(),
        operator: fixture.operator.to_string(),
        verifier: if ecdsa {
            VERIFIER.into()
        } else {
            String::new()
        },
        verifier_version: if ecdsa { "1".into() } else { String::new() },
    }
}

/// `n` tasks per scheme (in scheme order), each with its submission (aggregators rotate).
fn tasks(fixture: &Fixture, n: usize, salt: u64) -> Vec<(Scheme, NewTask, TaskSubmission)> {
    let mut out = Vec::with_capacity(3 * n);
    for scheme in SCHEMES {
        for i in 0..n {
            let payload = (salt.wrapping_mul(1_000_003) + i as u64).to_be_bytes();
            let task = fixture.task(AVS, scheme, &payload);
            let submission = fixture.sign(SCHEMES[i % 3], &task);
            out.push((scheme, task, submission));
        }
    }
    out
}

/// The results of `events`, by task id; panics on a rejection or a duplicate.
fn results_by_id(events: Vec<avsnode_proto::stream::StreamEvent>) -> HashMap<String, TaskResult> {
    let mut out = HashMap::new();
    for event in events {
        match event.kind.expect("an event with a kind") {
            stream_event::Kind::Result(result) => {
                let id = result.task_id.clone();
                assert!(
                    out.insert(id.clone(), result).is_none(),
                    "two results for {id}"
                );
            }
            stream_event::Kind::Rejection(r) => panic!("a task was rejected: {r:?}"),
        }
    }
    out
}

/// Verifies every result against its task, as a chain would; panics listing the failures.
fn assert_all_verify(
    fixture: &Fixture,
    tasks: &[(Scheme, NewTask, TaskSubmission)],
    results: &HashMap<String, TaskResult>,
) {
    let answers: Vec<(&TaskResult, &NewTask)> = tasks
        .iter()
        .map(|(_, task, submission)| {
            let result = results
                .get(&submission.task_id)
                .unwrap_or_else(|| panic!("no result for task {}", submission.task_id));
            (result, task)
        })
        .collect();
    let failures = fixture.verify_all(&answers);
    assert!(
        failures.is_empty(),
        "{} of {} results do not verify: {failures:#?}",
        failures.len(),
        answers.len()
    );
}

/// One answer on a [`Session`], with when its task was sent and when it was answered.
#[derive(Debug)]
struct Answer {
    sent: Instant,
    answered: Instant,
    kind: stream_event::Kind,
}

impl Answer {
    fn latency(&self) -> Duration {
        self.answered - self.sent
    }
}

/// One `TaskStream` whose every task and answer is time-stamped, with at most `window` tasks
/// unanswered at a time.
struct Session {
    sender: Option<mpsc::Sender<StreamRequest>>,
    window: Arc<Semaphore>,
    sent: Arc<Mutex<HashMap<String, Instant>>>,
    answers: Arc<Mutex<HashMap<String, Answer>>>,
    reader: JoinHandle<Result<(), tonic::Status>>,
}

impl Session {
    async fn open(node: &TestNode, window: usize) -> Session {
        let mut client = TaskStreamClient::connect(node.url()).await.unwrap();
        let (sender, outbound) = mpsc::channel(window.clamp(16, 1024));
        let mut inbound = client
            .open(ReceiverStream::new(outbound))
            .await
            .unwrap()
            .into_inner();
        let window = Arc::new(Semaphore::new(window));
        let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let answers: Arc<Mutex<HashMap<String, Answer>>> = Arc::default();
        let reader = tokio::spawn({
            let (window, sent, answers) = (window.clone(), sent.clone(), answers.clone());
            async move {
                while let Some(event) = inbound.message().await? {
                    let answered = Instant::now();
                    let kind = event.kind.expect("an event with a kind");
                    let id = match &kind {
                        stream_event::Kind::Result(r) => r.task_id.clone(),
                        stream_event::Kind::Rejection(r) => r.task_id.clone(),
                    };
                    let sent = *sent
                        .lock()
                        .unwrap()
                        .get(&id)
                        .unwrap_or_else(|| panic!("an answer for a task never sent: {id}"));
                    let previous = answers.lock().unwrap().insert(
                        id.clone(),
                        Answer {
                            sent,
                            answered,
                            kind,
                        },
                    );
                    assert!(previous.is_none(), "two answers for {id}");
                    window.add_permits(1);
                }
                Ok(())
            }
        });
        Session {
            sender: Some(sender),
            window,
            sent,
            answers,
            reader,
        }
    }

    /// Sends one task once fewer than `window` are unanswered.
    async fn send(&self, submission: TaskSubmission) {
        self.window.acquire().await.unwrap().forget();
        let id = submission.task_id.clone();
        assert!(
            self.sent
                .lock()
                .unwrap()
                .insert(id.clone(), Instant::now())
                .is_none(),
            "{id} sent twice on one session"
        );
        let request = StreamRequest {
            kind: Some(stream_request::Kind::Task(submission)),
        };
        self.sender
            .as_ref()
            .unwrap()
            .send(request)
            .await
            .expect("the stream is open");
    }

    /// Waits until every task sent is answered (panics after `limit` or if the stream fails),
    /// closes the stream and returns every answer by task id.
    async fn finish(mut self, limit: Duration) -> HashMap<String, Answer> {
        let started = Instant::now();
        loop {
            let (sent, answered) = (
                self.sent.lock().unwrap().len(),
                self.answers.lock().unwrap().len(),
            );
            if answered == sent {
                break;
            }
            if self.reader.is_finished() {
                let outcome = (&mut self.reader).await;
                panic!("the stream ended after {answered} of {sent} answers: {outcome:?}");
            }
            assert!(
                started.elapsed() < limit,
                "only {answered} of {sent} tasks answered within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(self.sender.take());
        self.reader.abort();
        std::mem::take(&mut *self.answers.lock().unwrap())
    }
}

/// A node whose three signers are all on `signer`, with client `client`'s certificate.
fn remote_node(
    fixture: &Arc<Fixture>,
    signer: &SignerHost,
    client: &str,
) -> crate::common::NodeBuilder {
    let mut builder = TestNode::builder().fixture(fixture.clone());
    for scheme in SCHEMES {
        builder = builder.signer_backend(scheme, &signer.backend(client));
    }
    builder
}

/// Test 1: the signer process serves the fixture's keys; a node whose signers are all remote
/// signs 50 tasks of each scheme, and every answer verifies and is byte-identical to the answer of
/// a node with the same keys as local keystores (another data dir, the same submissions). The
/// remote node counts its signatures with `backend="remote"`.
#[tokio::test(flavor = "multi_thread")]
async fn remote_signatures_are_byte_identical_to_local_ones_through_the_node() {
    const PER_SCHEME: usize = 50;
    let fixture = Fixture::new();
    let mut signer = SignerHost::new(&fixture, "signer");
    signer.start("info").await;
    let remote = remote_node(&fixture, &signer, NODE)
        .data_dir(&fixture.dir().join("data-remote"))
        .start();
    let _remote_log = remote.log_on_panic();
    let local = TestNode::builder()
        .fixture(fixture.clone())
        .data_dir(&fixture.dir().join("data-local"))
        .start();
    let _local_log = local.log_on_panic();
    let log = remote.log();
    for scheme in SCHEMES {
        assert!(
            log.lines().any(|l| l.contains("signer opened")
                && l.contains(&format!("\"signer\":\"{}\"", key_name(scheme)))
                && l.contains("\"backend\":\"remote\"")),
            "{scheme}: the node opened its remote signer:\n{log}"
        );
    }

    let tasks = tasks(&fixture, PER_SCHEME, 1);
    let submissions: Vec<TaskSubmission> = tasks.iter().map(|(_, _, s)| s.clone()).collect();
    let (remote_events, local_events) = tokio::join!(
        remote.stream(submissions.clone()),
        local.stream(submissions)
    );
    let remote_results = results_by_id(remote_events);
    let local_results = results_by_id(local_events);
    assert_eq!(remote_results.len(), 3 * PER_SCHEME);
    assert_all_verify(&fixture, &tasks, &remote_results);
    for (scheme, task, submission) in &tasks {
        let (r, l) = (
            &remote_results[&submission.task_id],
            &local_results[&submission.task_id],
        );
        assert_eq!(
            (&r.result_signature, &r.auth_signature),
            (&l.result_signature, &l.auth_signature),
            "{scheme} task {}: remote and local signatures differ",
            task.task_id
        );
        assert_eq!(r, l, "{scheme} task {}: the whole answer", task.task_id);
    }

    let remote_metrics = remote.scrape_metrics().await;
    let local_metrics = local.scrape_metrics().await;
    for scheme in SCHEMES {
        let s = scheme.as_str();
        let ok = |metrics: &str, backend: &str| {
            sample(
                metrics,
                "avsnode_signatures_total",
                &[("scheme", s), ("backend", backend), ("result", "ok")],
            )
        };
        // Two signatures per task: the result's and the auth's.
        assert_eq!(
            ok(&remote_metrics, "remote"),
            2.0 * PER_SCHEME as f64,
            "{s}:\n{remote_metrics}"
        );
        assert_eq!(ok(&remote_metrics, "local"), 0.0, "{s}");
        assert_eq!(ok(&local_metrics, "local"), 2.0 * PER_SCHEME as f64, "{s}");
    }
    signer.stop();
}

/// Test 2: only the right certificate uses the keys. Against the signer process: a client
/// without a certificate gets nothing, `stranger` is denied, `other-node` sees only its key; a
/// node configured with `other-node`'s certificate, `stranger`'s, a certificate of another CA,
/// or an address where no signer listens fails to start, naming the signer and the problem. And
/// after the node signed a task, a raw `SignResult` with the same task id and another output is
/// refused (FAILED_PRECONDITION), while the same output gets the node's signatures back.
#[tokio::test(flavor = "multi_thread")]
async fn only_the_configured_certificate_uses_the_keys_and_a_signed_task_is_never_resigned() {
    let fixture = Fixture::new();
    let mut signer = SignerHost::new(&fixture, "signer");
    signer.start("info").await;

    // The node with its own certificate signs one task per scheme.
    let node = remote_node(&fixture, &signer, NODE).start();
    let _log = node.log_on_panic();
    let tasks = tasks(&fixture, 1, 2);
    let results = results_by_id(
        node.stream(tasks.iter().map(|(_, _, s)| s.clone()).collect())
            .await,
    );
    assert_all_verify(&fixture, &tasks, &results);

    let mut client = signer.raw_client(Some(NODE)).await.unwrap();
    for (scheme, task, submission) in &tasks {
        let signed = &results[&submission.task_id];
        // The same request as the node's: the signatures the node got, from the signer's ledger.
        let again = client
            .sign_result(sign_request(&fixture, *scheme, task, &signed.output))
            .await
            .unwrap_or_else(|s| panic!("{scheme}: {s:?}"))
            .into_inner();
        assert_eq!(
            (&again.result_signature, &again.auth_signature),
            (&signed.result_signature, &signed.auth_signature),
            "{scheme}"
        );
        // Another output for the same task: refused.
        let mut other = signed.output.clone();
        other.push(0xff);
        let status = client
            .sign_result(sign_request(&fixture, *scheme, task, &other))
            .await
            .expect_err("a second output for a signed task was signed");
        assert_eq!(
            status.code(),
            Code::FailedPrecondition,
            "{scheme}: {status:?}"
        );
        assert!(
            status.message().contains(&task.task_id.to_string()),
            "{scheme}: the refusal names the task: {}",
            status.message()
        );
    }
    // The node itself still answers the task, with the same bytes.
    let (_, task, submission) = &tasks[1];
    let again = node.submit(submission.clone()).await.unwrap();
    assert_eq!(&again, &results[&submission.task_id]);
    fixture.assert_verifies(&again, task);

    // No client certificate: no key listed, nothing signed.
    let (scheme, task, _) = &tasks[0];
    let fresh = fixture.task(AVS, *scheme, &[42]);
    match signer.raw_client(None).await {
        Err(_) => {}
        Ok(mut anonymous) => {
            assert!(
                anonymous.list_keys(ListKeysRequest {}).await.is_err(),
                "a client without a certificate listed keys"
            );
            let status = anonymous
                .sign_result(sign_request(&fixture, *scheme, &fresh, b"x"))
                .await
                .expect_err("a client without a certificate got a signature");
            assert!(
                matches!(
                    status.code(),
                    Code::Unavailable | Code::Cancelled | Code::Unknown | Code::PermissionDenied
                ),
                "{status:?}"
            );
        }
    }
    // A certificate of the CA that is not a client of the signer: denied.
    let mut stranger = signer.raw_client(Some(STRANGER)).await.unwrap();
    let status = stranger.list_keys(ListKeysRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = stranger
        .sign_result(sign_request(&fixture, *scheme, task, b"x"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    // Another node's certificate: its own key only.
    let mut other = signer.raw_client(Some(OTHER_NODE)).await.unwrap();
    let listed = other
        .list_keys(ListKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = listed.keys.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, [key_name(Scheme::Bls12381)]);
    let status = other
        .sign_result(sign_request(&fixture, Scheme::Ecdsa, &fresh, b"x"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // Nodes with the wrong certificate (or no signer) refuse to start, naming the problem.
    let foreign_dir = fixture.dir().join("foreign-pki");
    std::fs::create_dir(&foreign_dir).unwrap();
    let foreign = pki::write(&foreign_dir, &[NODE]);
    let ecdsa = format!("signer \"{}\"", key_name(Scheme::Ecdsa));
    let nobody = format!("https://127.0.0.1:{}", free_port());
    let cases: Vec<(&str, String, Vec<String>)> = vec![
        (
            "another node's certificate",
            signer.backend(OTHER_NODE),
            vec![
                ecdsa.clone(),
                signer.url(),
                format!(
                    "has no key \"{}\" for this client; it offers: {}",
                    key_name(Scheme::Ecdsa),
                    key_name(Scheme::Bls12381)
                ),
            ],
        ),
        (
            "a certificate the signer does not know",
            signer.backend(STRANGER),
            vec![
                ecdsa.clone(),
                signer.url(),
                "denied the call: this client is not known to the signer".into(),
            ],
        ),
        (
            "a certificate of another CA",
            signer.backend_with(&foreign.client_cert(NODE), &foreign.client_key(NODE)),
            vec![ecdsa.clone(), signer.url()],
        ),
        (
            "no signer at the address",
            signer.backend(NODE).replace(&signer.url(), &nobody),
            vec![
                ecdsa.clone(),
                format!("connecting to the remote signer {nobody}"),
            ],
        ),
    ];
    for (i, (case, lines, expected)) in cases.into_iter().enumerate() {
        let started = Instant::now();
        let (status, stderr) = TestNode::builder()
            .fixture(fixture.clone())
            .data_dir(&fixture.dir().join(format!("data-refused-{i}")))
            .signer_backend(Scheme::Ecdsa, &lines)
            .run_to_exit();
        assert!(!status.success(), "{case}: the node started:\n{stderr}");
        for part in &expected {
            assert!(
                stderr.contains(part),
                "{case}: {part:?} is not in the error:\n{stderr}"
            );
        }
        assert!(
            !stderr.contains("intake serving"),
            "{case}: the node served:\n{stderr}"
        );
        println!(
            "{case}: refused to start in {:?}: {}",
            started.elapsed(),
            stderr.lines().rfind(|l| l.contains("error")).unwrap_or("")
        );
    }
    // The signer served on through all of it.
    signer
        .raw_client(Some(NODE))
        .await
        .unwrap()
        .list_keys(ListKeysRequest {})
        .await
        .unwrap();
    signer.stop();
}

/// Test 3: the signer is killed with SIGKILL while a stream sends a task every 50 ms: every task
/// sent while it is down is answered UNAVAILABLE within a few seconds (reason
/// `signer_unavailable`), and the node stays up. Restarted on the same port and data directory,
/// it signs new tasks again within 15 s; the tasks answered before the kill are answered
/// byte-identically, and the signer's ledger (kept through SIGKILL) still refuses another output
/// for them.
/// A compromised node (or anyone holding a client certificate) asks the signer process directly,
/// for all three schemes: a task signed for one AVS and operator set, then the same task id with
/// `avs` changed, then `operator_set_id` changed, with another output and with the same one. The
/// digest binds neither, so each of those would be a second valid signature (or a vote on another
/// AVS's task): every one is FAILED_PRECONDITION with no signature, and every signature the
/// signer did return verifies under the operator's key.
#[tokio::test(flavor = "multi_thread")]
async fn the_signer_refuses_a_signed_task_for_another_avs_or_operator_set() {
    let fixture = Fixture::new();
    let mut signer = SignerHost::new(&fixture, "signer");
    signer.start("info").await;
    let mut client = signer.raw_client(Some(NODE)).await.unwrap();
    for scheme in SCHEMES {
        let task = fixture.task(AVS, scheme, &[3]);
        let output = avsnode_example_performer::square(&task.payload).unwrap();
        let signed = client
            .sign_result(sign_request(&fixture, scheme, &task, &output))
            .await
            .unwrap_or_else(|s| panic!("{scheme}: {s:?}"))
            .into_inner();
        let result = TaskResult {
            task_id: task.task_id.to_wire_string(),
            operator_address: fixture.operator.to_string(),
            output: output.clone(),
            result_signature: signed.result_signature.clone(),
            avs_address: task.avs.to_string(),
            operator_set_id: task.operator_set_id,
            auth_signature: signed.auth_signature.clone(),
            version: 1,
        };
        fixture.assert_verifies(&result, &task);

        let other_avs = NewTask {
            avs: address("0x000000000000000000000000000000000000b0b0"),
            ..task.clone()
        };
        let other_set = NewTask {
            operator_set_id: task.operator_set_id + 10,
            ..task.clone()
        };
        for attack in [&other_avs, &other_set] {
            for attack_output in [b"another output".to_vec(), output.clone()] {
                let status = client
                    .sign_result(sign_request(&fixture, scheme, attack, &attack_output))
                    .await
                    .expect_err("the same task signed for another AVS or operator set");
                assert_eq!(
                    status.code(),
                    Code::FailedPrecondition,
                    "{scheme}: {status:?}"
                );
                assert!(
                    status
                        .message()
                        .contains("already signed with this key for AVS"),
                    "{scheme}: {}",
                    status.message()
                );
            }
        }
        // The first origin's retry is answered with the same bytes.
        let again = client
            .sign_result(sign_request(&fixture, scheme, &task, &output))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(again, signed, "{scheme}");
    }

    // Issue 14 §2: a connection that never starts its TLS handshake was kept forever; the signer
    // closes it after its handshake timeout (5 s), and still serves.
    let mut silent = tokio::net::TcpStream::connect(signer.addr).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        use tokio::io::AsyncReadExt as _;
        let mut sink = [0u8; 256];
        while silent.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    })
    .await;
    assert!(
        closed.is_ok(),
        "a silent connection to the signer is still open after 30 s"
    );
    client.list_keys(ListKeysRequest {}).await.unwrap();
    signer.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_signer_makes_tasks_unavailable_and_a_restarted_one_signs_again() {
    const PACE: Duration = Duration::from_millis(50);
    const OUTAGE: Duration = Duration::from_secs(6);
    let fixture = Fixture::new();
    let mut signer = SignerHost::new(&fixture, "signer");
    signer.start("info").await;
    let node = remote_node(&fixture, &signer, NODE).start();
    let _log = node.log_on_panic();

    // Before the kill: ten tasks per scheme, all signed.
    let before = tasks(&fixture, 10, 3);
    let before_results = results_by_id(
        node.stream(before.iter().map(|(_, _, s)| s.clone()).collect())
            .await,
    );
    assert_all_verify(&fixture, &before, &before_results);

    // A stream that sends a new task every 50 ms until told to stop.
    let session = Arc::new(Session::open(&node, 1024).await);
    let all_tasks: Arc<Mutex<HashMap<String, (Scheme, NewTask)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let pacer = tokio::spawn({
        let (session, all_tasks, stop, fixture) = (
            session.clone(),
            all_tasks.clone(),
            stop.clone(),
            fixture.clone(),
        );
        async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let scheme = SCHEMES[(i % 3) as usize];
                let task = fixture.task(AVS, scheme, &(1_000 + i).to_be_bytes());
                let submission = fixture.sign(SCHEMES[(i / 3 % 3) as usize], &task);
                all_tasks
                    .lock()
                    .unwrap()
                    .insert(submission.task_id.clone(), (scheme, task));
                session.send(submission).await;
                i += 1;
                tokio::time::sleep(PACE).await;
            }
        }
    });

    tokio::time::sleep(Duration::from_secs(1)).await;
    signer.kill();
    let killed = Instant::now();
    tokio::time::sleep(OUTAGE).await;
    let restarting = Instant::now();
    signer.start("info").await;
    let restarted = Instant::now();
    println!(
        "signer restarted {:?} after the kill, serving after {:?}",
        restarting - killed,
        restarted - restarting
    );

    // New tasks are signed again: wait until a task of each scheme sent after the restart is.
    let signed_again = loop {
        // When the first task of each scheme sent after the restart was signed.
        let first: BTreeMap<&str, Instant> = {
            let answers = session.answers.lock().unwrap();
            let tasks = all_tasks.lock().unwrap();
            let mut first = BTreeMap::new();
            for (id, answer) in answers.iter() {
                if answer.sent >= restarted && matches!(answer.kind, stream_event::Kind::Result(_))
                {
                    let at = first.entry(tasks[id].0.as_str()).or_insert(answer.answered);
                    *at = (*at).min(answer.answered);
                }
            }
            first
        };
        if first.len() == 3 {
            break first;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(15),
            "no new task of every scheme signed within 15 s of the restart: {first:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.store(true, Ordering::Relaxed);
    pacer.await.unwrap();
    let session = Arc::into_inner(session).expect("the pacer is done");
    let answers = session.finish(Duration::from_secs(60)).await;
    let all_tasks = std::mem::take(&mut *all_tasks.lock().unwrap());
    for (scheme, at) in &signed_again {
        println!(
            "{scheme}: signed again {:?} after the restart",
            *at - restarted
        );
        assert!(*at - restarted < Duration::from_secs(15));
    }

    // Every answer is a verified result or UNAVAILABLE; tasks sent while the signer was surely
    // down (from the kill to 2 s before the restart began: a late retry may reach the new one)
    // are all UNAVAILABLE, each within a few seconds.
    let mut down = 0;
    let mut down_schemes = HashMap::new();
    let mut slowest = Duration::ZERO;
    let mut unavailable_ids = Vec::new();
    for (id, answer) in &answers {
        let (scheme, task) = &all_tasks[id];
        let during_outage =
            answer.sent >= killed && answer.sent + Duration::from_secs(2) < restarting;
        match &answer.kind {
            stream_event::Kind::Result(result) => {
                assert!(
                    !during_outage,
                    "{scheme} task {id} sent {:?} after the kill was signed",
                    answer.sent - killed
                );
                fixture.verify(result, task).unwrap();
            }
            stream_event::Kind::Rejection(rejection) => {
                assert_eq!(
                    rejection.code,
                    Code::Unavailable as i32,
                    "{scheme} task {id}, sent {} ms from the kill, answered in {:?}: {rejection:?}",
                    answer.sent.duration_since(killed).as_millis() as i128
                        - killed.duration_since(answer.sent).as_millis() as i128,
                    answer.latency()
                );
                assert!(
                    rejection.message.contains("remote signer"),
                    "{scheme} task {id}: {rejection:?}"
                );
                assert!(
                    answer.sent + Duration::from_secs(2) >= killed,
                    "{scheme} task {id} sent before the kill was refused: {rejection:?}"
                );
                unavailable_ids.push(id.clone());
                if during_outage {
                    down += 1;
                    *down_schemes.entry(*scheme).or_insert(0) += 1;
                    slowest = slowest.max(answer.latency());
                }
            }
        }
    }
    println!(
        "{} tasks streamed; {down} sent during the outage, all UNAVAILABLE, slowest in {slowest:?}",
        answers.len()
    );
    assert!(down >= 30, "only {down} tasks were sent during the outage");
    assert_eq!(down_schemes.len(), 3, "{down_schemes:?}");
    assert!(
        slowest < Duration::from_secs(5),
        "a task took {slowest:?} to be answered UNAVAILABLE"
    );
    let m = node.scrape_metrics().await;
    let rejected = sample(
        &m,
        "avsnode_task_rejections_total",
        &[("reason", "signer_unavailable")],
    );
    assert!(
        rejected >= unavailable_ids.len() as f64,
        "{rejected} signer_unavailable rejections counted, {} seen",
        unavailable_ids.len()
    );
    for scheme in SCHEMES {
        assert!(
            sample(
                &m,
                "avsnode_signatures_total",
                &[
                    ("scheme", scheme.as_str()),
                    ("backend", "remote"),
                    ("result", "error")
                ],
            ) > 0.0,
            "{scheme}: no failed remote signing counted"
        );
    }

    // The tasks answered before the kill: byte-identical answers from the same node.
    let again = results_by_id(
        node.stream(before.iter().map(|(_, _, s)| s.clone()).collect())
            .await,
    );
    assert_eq!(again, before_results);
    // A task refused during the outage is retryable: signed now.
    for id in unavailable_ids.iter().take(6) {
        let (scheme, task) = &all_tasks[id];
        let result = node
            .submit(fixture.sign(Scheme::Ecdsa, task))
            .await
            .unwrap_or_else(|s| panic!("{scheme} task {id} after the restart: {s:?}"));
        fixture.assert_verifies(&result, task);
    }
    // The signer's ledger survived SIGKILL: it answers the old tasks with the same signatures and
    // refuses another output for them.
    let mut client = signer.raw_client(Some(NODE)).await.unwrap();
    for (scheme, task, submission) in before.iter().step_by(5) {
        let signed = &before_results[&submission.task_id];
        let again = client
            .sign_result(sign_request(&fixture, *scheme, task, &signed.output))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(again.result_signature, signed.result_signature, "{scheme}");
        assert_eq!(again.auth_signature, signed.auth_signature, "{scheme}");
        let status = client
            .sign_result(sign_request(&fixture, *scheme, task, b"another output"))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::FailedPrecondition,
            "{scheme}: {status:?}"
        );
    }
    signer.stop();
}

/// Big-endian bytes as an unsigned decimal number.
fn to_decimal(be: &[u8]) -> String {
    // Base 10^9 limbs, least significant first.
    let mut limbs: Vec<u32> = vec![0];
    for &byte in be {
        let mut carry = u64::from(byte);
        for limb in &mut limbs {
            let v = u64::from(*limb) * 256 + carry;
            *limb = (v % 1_000_000_000) as u32;
            carry = v / 1_000_000_000;
        }
        while carry > 0 {
            limbs.push((carry % 1_000_000_000) as u32);
            carry /= 1_000_000_000;
        }
    }
    let mut text = limbs.last().unwrap().to_string();
    for limb in limbs.iter().rev().skip(1) {
        text.push_str(&format!("{limb:09}"));
    }
    text
}

#[test]
fn to_decimal_converts_big_endian_bytes() {
    assert_eq!(to_decimal(&[]), "0");
    assert_eq!(to_decimal(&[0, 0]), "0");
    assert_eq!(to_decimal(&[1, 0]), "256");
    assert_eq!(to_decimal(&[0xff; 8]), u64::MAX.to_string());
    assert_eq!(
        to_decimal(&[1, 0, 0, 0, 0, 0, 0, 0, 0]),
        "18446744073709551616"
    );
    let n: u128 = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;
    assert_eq!(to_decimal(&n.to_be_bytes()), n.to_string());
    assert_eq!(to_decimal(&[0x3b, 0x9a, 0xca, 0x00]), "1000000000");
}

/// Every spelling of a secret that a careless log line could use: hex (lower, upper, `0x`), the
/// decimal number, and Rust's `Debug` of the byte array, of the big-endian bytes and of their
/// little-endian reversal (arkworks serialises scalars little-endian).
fn spellings(secret: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let reversed: Vec<u8> = secret.iter().rev().copied().collect();
    for (order, bytes) in [("big-endian", secret), ("little-endian", &reversed[..])] {
        let hex = hex::encode(bytes);
        let forms = [
            ("lower-case hex", hex.clone()),
            ("upper-case hex", hex.to_uppercase()),
            ("0x hex", format!("0x{hex}")),
            ("decimal", to_decimal(bytes)),
            ("byte array", format!("{bytes:?}")),
        ];
        for (form, text) in forms {
            out.push((format!("{order} {form}"), text));
        }
    }
    out
}

/// Whether `needle` occurs in `haystack` not adjacent to a letter or digit (a six-digit PIN also
/// occurs by chance inside timestamps and hex, never as a word of its own).
fn contains_word(haystack: &str, needle: &str) -> bool {
    let bytes = haystack.as_bytes();
    haystack.match_indices(needle).any(|(at, _)| {
        let before = at.checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(at + needle.len()).copied();
        !before.is_some_and(|b| b.is_ascii_alphanumeric())
            && !after.is_some_and(|b| b.is_ascii_alphanumeric())
    })
}

/// Runs `avsnode ARGS` with the token's `SOFTHSM2_CONF` and trace logging; returns its stdout
/// and stderr (asserting success).
fn hsm_cli(token: &Token, args: &[&str]) -> (String, String) {
    let out = token
        .command(avsnode_tests::binary("avsnode"))
        .args(args)
        .env("AVSNODE_LOG", "trace")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    );
    assert!(out.status.success(), "avsnode {args:?}: {stderr}");
    (stdout, stderr)
}

/// Test 4: no secret reaches any output, at any log level. A signer (trace logs) serving the
/// fixture's three keys and a node (trace logs) using them remotely, plus a second node with local keystores and, if
/// SoftHSM2 is installed, its ECDSA key on a token made with `keys hsm-generate`: a full task flow
/// for every scheme (new tasks, a repeat answered from the ledger, a refused second output at the
/// signer), then SIGTERM. Nothing either process wrote (stdout and stderr), nor what
/// `keys hsm-generate` and `keys hsm-list` printed, holds a secret key in any spelling, the
/// keystore password, the PIN or the SO PIN, or the body of a TLS private key.
#[tokio::test(flavor = "multi_thread")]
async fn no_secret_reaches_any_output() {
    const PER_SCHEME: usize = 10;
    let fixture = Fixture::new();
    let password = fixture_password(&fixture);
    let mut signer = SignerHost::new(&fixture, "signer");
    signer.start("trace").await;
    let mut outputs: Vec<(String, String)> = Vec::new();

    // The remote node: all three schemes through the signer.
    let mut remote = remote_node(&fixture, &signer, NODE)
        .data_dir(&fixture.dir().join("data-remote"))
        .log_level("trace")
        .start();
    let remote_log = remote.log_on_panic();
    let flow = tasks(&fixture, PER_SCHEME, 4);
    let results = results_by_id(
        remote
            .stream(flow.iter().map(|(_, _, s)| s.clone()).collect())
            .await,
    );
    assert_all_verify(&fixture, &flow, &results);
    let (scheme, task, submission) = &flow[PER_SCHEME];
    let repeat = remote.submit(submission.clone()).await.unwrap();
    assert_eq!(repeat, results[&submission.task_id], "{scheme}");
    let mut client = signer.raw_client(Some(NODE)).await.unwrap();
    let same = client
        .sign_result(sign_request(&fixture, *scheme, task, &repeat.output))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(same.result_signature, repeat.result_signature);
    let refused = client
        .sign_result(sign_request(&fixture, *scheme, task, b"a second output"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    drop(client);

    // The other node: local keystores, and the ECDSA key on SoftHSM2 when it is installed.
    let verifier = EcdsaVerifier {
        address: address(VERIFIER),
        version: "1".into(),
    };
    let mut hsm: Option<(Token, OperatorKey)> = None;
    let mut local = TestNode::builder()
        .fixture(fixture.clone())
        .data_dir(&fixture.dir().join("data-local"))
        .log_level("trace");
    if softhsm_available() {
        let token = Token::new(&fixture.dir().join("hsm"), "redaction");
        let pin_file = token.pin_file.display().to_string();
        let token_args = [
            "--module",
            softhsm::MODULE,
            "--token-label",
            token.label.as_str(),
            "--pin-file",
            &pin_file,
        ];
        let mut generate = vec!["keys", "hsm-generate", "--label", "operator-ecdsa"];
        generate.extend(token_args);
        let (stdout, stderr) = hsm_cli(&token, &generate);
        let hsm_address = stdout
            .split_whitespace()
            .skip_while(|w| *w != "address")
            .nth(1)
            .unwrap_or_else(|| panic!("no address in:\n{stdout}"))
            .trim_end_matches(',')
            .parse()
            .unwrap();
        outputs.push(("keys hsm-generate stdout".into(), stdout));
        outputs.push(("keys hsm-generate stderr".into(), stderr));
        let mut list = vec!["keys", "hsm-list"];
        list.extend(token_args);
        let (stdout, stderr) = hsm_cli(&token, &list);
        assert!(stdout.contains("operator-ecdsa"), "{stdout}");
        outputs.push(("keys hsm-list stdout".into(), stdout));
        outputs.push(("keys hsm-list stderr".into(), stderr));
        local = local
            .signer_backend(
                Scheme::Ecdsa,
                &format!(
                    "pkcs11 = {{ module = {:?}, token_label = {:?}, key_label = \"operator-ecdsa\", pin_file = {pin_file:?} }}",
                    softhsm::MODULE,
                    token.label
                ),
            )
            .env("SOFTHSM2_CONF", token.conf.display().to_string());
        let key = OperatorKey::Ecdsa {
            address: hsm_address,
            verifier: verifier.clone(),
        };
        hsm = Some((token, key));
    }
    let mut local = local.start();
    let local_log = local.log_on_panic();
    let flow = tasks(&fixture, PER_SCHEME, 5);
    let local_results = results_by_id(
        local
            .stream(flow.iter().map(|(_, _, s)| s.clone()).collect())
            .await,
    );
    for (scheme, task, submission) in &flow {
        let result = &local_results[&submission.task_id];
        match (&hsm, scheme) {
            (Some((_, key)), Scheme::Ecdsa) => {
                verify_result(result, task, key).unwrap();
                assert_eq!(
                    result.output,
                    avsnode_example_performer::square(&task.payload).unwrap()
                );
            }
            _ => fixture.verify(result, task).unwrap(),
        }
    }
    drop((remote_log, local_log));
    for node in [&mut remote, &mut local] {
        let (status, _) = node.stop();
        assert!(status.success(), "{status}");
        let log = node.config().with_extension("log");
        outputs.push((log.display().to_string(), node.log()));
        let stdout = node.config().with_extension("stdout");
        outputs.push((
            stdout.display().to_string(),
            std::fs::read_to_string(&stdout).unwrap(),
        ));
    }
    signer.stop();
    outputs.extend(signer.output_files());

    // The outputs are not trivially clean: debug and trace lines of every process ("ledger batch
    // done" is a trace line, one per group commit: fewer as the node gets faster, so the byte
    // count below counts on the lines every run writes: the signer's per task), the flow happened.
    let remote_text = remote.log();
    let signer_text = signer.log();
    let local_text = local.log();
    for (who, text) in [
        ("remote node", &remote_text),
        ("local node", &local_text),
        ("signer", &signer_text),
    ] {
        for level in ["DEBUG", "TRACE"] {
            assert!(
                text.contains(&format!("\"level\":\"{level}\"")),
                "{who}: no {level} lines"
            );
        }
    }
    for scheme in SCHEMES {
        let signed = signer_text
            .lines()
            .filter(|l| {
                l.contains("signer signed")
                    && l.contains(&format!("\"key\":\"{}\"", key_name(scheme)))
            })
            .count();
        assert_eq!(signed, PER_SCHEME, "{scheme}: the signer's debug lines");
    }
    assert!(signer_text.contains("signer answered from its ledger"));
    assert!(signer_text.contains("signer refused to sign a task again: already signed"));
    assert!(remote_text.contains("\"backend\":\"remote\""));
    if hsm.is_some() {
        assert!(
            local_text.contains("\"backend\":\"pkcs11\""),
            "{local_text}"
        );
    }
    let total: usize = outputs.iter().map(|(_, text)| text.len()).sum();
    assert!(total > 15_000, "only {total} bytes of output");

    // The secrets, in every spelling.
    let mut secrets: Vec<(String, String)> = Vec::new();
    let pw = Password::new(password.as_str());
    for scheme in SCHEMES {
        let path = fixture
            .dir()
            .join(format!("keys/{}.json", key_name(scheme)));
        let decrypted = Keystore::read(&path).unwrap().decrypt(&pw).unwrap();
        let key = LocalKey::decrypt(&Keystore::read(&path).unwrap(), &pw).unwrap();
        let secret = match &key {
            LocalKey::Ecdsa(k) => k.to_bytes(),
            LocalKey::Bn254(k) => k.to_bytes(),
            LocalKey::Bls12381(k) => k.to_bytes(),
        };
        assert_eq!(secret.len(), 32);
        assert_eq!(
            decrypted.as_bytes(),
            &secret[..],
            "{scheme}: the keystore holds the key's canonical secret"
        );
        for (form, text) in spellings(&secret[..]) {
            secrets.push((format!("the {scheme} secret key ({form})"), text));
        }
    }
    secrets.push(("the keystore password".into(), password.clone()));
    for file in [signer.pki.server_key(), signer.pki.client_key(NODE)] {
        let pem = std::fs::read_to_string(&file).unwrap();
        let body = pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .max_by_key(|l| l.len())
            .unwrap()
            .to_owned();
        assert!(body.len() >= 40);
        secrets.push((format!("the TLS private key {}", file.display()), body));
    }
    let mut checked = 0;
    for (source, text) in &outputs {
        for (what, secret) in &secrets {
            assert!(!text.contains(secret.as_str()), "{source} contains {what}");
            checked += 1;
        }
        for (what, pin) in [("the PIN", softhsm::PIN), ("the SO PIN", softhsm::SO_PIN)] {
            assert!(!contains_word(text, pin), "{source} contains {what}");
            checked += 1;
        }
    }
    println!(
        "{} outputs, {total} bytes, checked against {} secret spellings and both PINs ({checked} checks){}",
        outputs.len(),
        secrets.len(),
        if hsm.is_some() { ", with SoftHSM2" } else { "" }
    );
}

/// One (backend, scheme) run of the measurement.
struct Measured {
    tasks: usize,
    per_second: f64,
    p50: Duration,
    p99: Duration,
    /// Tasks sent again after an UNAVAILABLE answer.
    resent: usize,
}

/// Streams `tasks` through `node` with at most `window` unanswered; every answer must be a result.
/// A task answered UNAVAILABLE (the signer did not answer within its timeout, as it may not on a
/// host busy with other tests) is sent again afterwards, as an aggregator would, up to five rounds;
/// the numbers are the first pass's.
async fn measure(
    node: &TestNode,
    tasks: &[(Scheme, NewTask, TaskSubmission)],
    window: usize,
) -> (Measured, HashMap<String, TaskResult>) {
    let session = Session::open(node, window).await;
    let started = Instant::now();
    for (_, _, submission) in tasks {
        session.send(submission.clone()).await;
    }
    let mut answers = session.finish(Duration::from_secs(600)).await;
    let last = answers.values().map(|a| a.answered).max().unwrap();
    let mut latencies: Vec<Duration> = answers.values().map(Answer::latency).collect();
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let mut resent = 0;
    for _ in 0..5 {
        let unavailable: Vec<&TaskSubmission> = tasks
            .iter()
            .map(|(_, _, submission)| submission)
            .filter(|s| {
                matches!(&answers[&s.task_id].kind,
                    stream_event::Kind::Rejection(r) if r.code == Code::Unavailable as i32)
            })
            .collect();
        if unavailable.is_empty() {
            break;
        }
        resent += unavailable.len();
        let session = Session::open(node, window).await;
        for submission in unavailable {
            session.send(submission.clone()).await;
        }
        answers.extend(session.finish(Duration::from_secs(600)).await);
    }
    let measured = Measured {
        tasks: tasks.len(),
        per_second: tasks.len() as f64 / (last - started).as_secs_f64(),
        p50: p(0.50),
        p99: p(0.99),
        resent,
    };
    let results = answers
        .into_iter()
        .map(|(id, answer)| match answer.kind {
            stream_event::Kind::Result(result) => (id, result),
            stream_event::Kind::Rejection(r) => panic!("task {id} was rejected: {r:?}"),
        })
        .collect();
    (measured, results)
}

/// Test 5: end-to-end tasks per second and p99 latency, remote signer against local keys, per
/// scheme: one stream with 64 tasks in flight through each node (the same submissions to both);
/// every answer verifies and the two nodes' answers are byte-identical. 200 tasks per scheme, or
/// 3,000 with `AVSNODE_MEASURE=1`, which prints the numbers.
#[tokio::test(flavor = "multi_thread")]
async fn measure_end_to_end_tasks_per_second_remote_vs_local() {
    const WINDOW: usize = 64;
    let measuring = std::env::var_os("AVSNODE_MEASURE").is_some();
    let per_scheme = if measuring { 3_000 } else { 200 };
    let fixture = Fixture::new();
    let mut signer = SignerHost::new(&fixture, "signer");
    signer.start("info").await;
    let remote = remote_node(&fixture, &signer, NODE)
        .data_dir(&fixture.dir().join("data-remote"))
        .start();
    let _remote_log = remote.log_on_panic();
    let local = TestNode::builder()
        .fixture(fixture.clone())
        .data_dir(&fixture.dir().join("data-local"))
        .start();
    let _local_log = local.log_on_panic();

    // A short warm-up of both (connections, performers), not measured.
    let warm_up = tasks(&fixture, 5, 6);
    for node in [&remote, &local] {
        results_by_id(
            node.stream(warm_up.iter().map(|(_, _, s)| s.clone()).collect())
                .await,
        );
    }

    let all = tasks(&fixture, per_scheme, 7);
    let mut report = Vec::new();
    for (i, scheme) in SCHEMES.into_iter().enumerate() {
        let tasks = &all[i * per_scheme..(i + 1) * per_scheme];
        assert!(tasks.iter().all(|(s, _, _)| *s == scheme));
        let (remote_measured, remote_results) = measure(&remote, tasks, WINDOW).await;
        let (local_measured, local_results) = measure(&local, tasks, WINDOW).await;
        assert_all_verify(&fixture, tasks, &remote_results);
        assert_eq!(
            remote_results, local_results,
            "{scheme}: remote and local answers differ"
        );
        report.push((scheme, "remote", remote_measured));
        report.push((scheme, "local", local_measured));
    }
    for (scheme, backend, m) in &report {
        println!(
            "end to end {scheme:>9} {backend:>6}: {} tasks, {WINDOW} in flight: {:.0} tasks/s, p50 {:.1} ms, p99 {:.1} ms, {} sent again after UNAVAILABLE",
            m.tasks,
            m.per_second,
            m.p50.as_secs_f64() * 1e3,
            m.p99.as_secs_f64() * 1e3,
            m.resent,
        );
        assert!(m.per_second > 0.0);
    }
    signer.stop();
}
