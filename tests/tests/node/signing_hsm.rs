//! The node's PKCS#11 signing backend end to end (DESIGN §4.5): a real SoftHSM2 token, a
//! secp256k1 key generated on it with `avsnode keys hsm-generate`, and the real `avsnode run`
//! binary signing ECDSA results through it, checked as an aggregator and the chain would check
//! them. The backend as a library is tested in `signing/tests/pkcs11.rs`; this file tests the node:
//! configuration, answers, the ledger, metrics, a token pulled mid-run, start-up errors.
//!
//! Every token lives in its own `SOFTHSM2_CONF` (see `avsnode_tests::softhsm`), handed to the node
//! through its environment. Without SoftHSM2 the tests print why and pass, except under `CI=true`.
//!
//! The measurement (pkcs11 vs local keystore, end-to-end tasks/s and p99) runs a small smoke count
//! by default; for the real numbers run it alone, optimised:
//! `AVSNODE_MEASURE=1 cargo test --release -p avsnode-tests --test node signing_hsm::measure -- --nocapture`.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::{AVS, Fixture, TestNode, VERIFIER};
use avsnode_aggregator::{NewTask, OperatorKey, verify_result};
use avsnode_proto::executor::{TaskResult, TaskSubmission};
use avsnode_proto::stream::task_stream_client::TaskStreamClient;
use avsnode_proto::stream::{StreamEvent, StreamRequest, stream_event, stream_request};
use avsnode_signer::Scheme;
use avsnode_signer::messages::{Address, EcdsaVerifier};
use avsnode_tests::softhsm::{MODULE, PIN, SO_PIN, Token, softhsm_available};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

/// The label of the operator key generated on every test token.
const KEY_LABEL: &str = "operator";

/// How long a CLI call or a node that must refuse to start may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// `intake.stream_inflight` of the HSM nodes: a stream's tasks beyond this wait in the client
/// (backpressure), so none of hundreds streamed at once runs into its 10 s task timeout on a
/// loaded machine while the others are signed.
const STREAM_INFLIGHT: usize = 32;

/// The order `n` of the secp256k1 group, big-endian.
const SECP256K1_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
    0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41,
];

/// `⌊n/2⌋`: a low-s signature has `1 ≤ s ≤ ⌊n/2⌋`.
fn half_order() -> [u8; 32] {
    let mut half = [0u8; 32];
    let mut carry = 0u8;
    for (out, byte) in half.iter_mut().zip(SECP256K1_ORDER) {
        *out = (byte >> 1) | (carry << 7);
        carry = byte & 1;
    }
    half
}

/// `n − s` for a big-endian `s < n`: the other half's twin of a signature's `s`.
fn order_minus(s: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(SECP256K1_ORDER[i]) - i16::from(s[i]) - borrow;
        borrow = i16::from(d < 0);
        if d < 0 {
            d += 256;
        }
        out[i] = d as u8;
    }
    out
}

/// Checks one 65-byte `r‖s‖v` signature as the node must emit it: `1 ≤ r < n`, `1 ≤ s ≤ n/2`
/// (low-s, whatever the token returned), and `v ∈ {27, 28}` (`ecdsa::Signature::to_bytes`).
/// Returns `v`.
fn canonical_v(signature: &[u8], what: &str) -> Result<u8, String> {
    let bytes: &[u8; 65] = signature
        .try_into()
        .map_err(|_| format!("{what} signature has {} bytes, not 65", signature.len()))?;
    let (r, s, v) = (&bytes[..32], &bytes[32..64], bytes[64]);
    let zero = [0u8; 32];
    if r == zero || r >= &SECP256K1_ORDER[..] {
        return Err(format!(
            "{what} signature: r out of range: 0x{}",
            hex::encode(r)
        ));
    }
    if s == zero || s > &half_order()[..] {
        return Err(format!(
            "{what} signature is not low-s: s = 0x{} > n/2",
            hex::encode(s)
        ));
    }
    if v != 27 && v != 28 {
        return Err(format!("{what} signature: v = {v}, not 27 or 28"));
    }
    Ok(v)
}

/// What ECDSA results of a node whose ECDSA signer is `address` verify under.
fn ecdsa_operator_key(address: Address) -> OperatorKey {
    OperatorKey::Ecdsa {
        address,
        verifier: EcdsaVerifier {
            address: crate::common::address(VERIFIER),
            version: "1".into(),
        },
    }
}

/// Checks an ECDSA answer: echoes and both signatures under `key` (as a chain would), the
/// example performer's output, and both signatures canonical. Returns the two `v`s.
fn check_ecdsa(result: &TaskResult, task: &NewTask, key: &OperatorKey) -> Result<[u8; 2], String> {
    verify_result(result, task, key).map_err(|e| format!("task {}: {e}", task.task_id))?;
    let expected = avsnode_example_performer::square(&task.payload).unwrap();
    if result.output != expected {
        return Err(format!("task {}: output is not the square", task.task_id));
    }
    if result.version != 1 {
        return Err(format!("task {}: version {}", task.task_id, result.version));
    }
    Ok([
        canonical_v(&result.result_signature, "result")?,
        canonical_v(&result.auth_signature, "auth")?,
    ])
}

/// Runs `command` to completion in its own process group, killing the group after `limit`.
fn run(mut command: Command, limit: Duration) -> Output {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {command:?}: {e}"));
    let read = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            panic!("{command:?} did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Anything of its group still alive (a performer) would leak: end it.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// `avsnode ARGS…` with the token's `SOFTHSM2_CONF`; returns (success, stdout, stderr).
fn avsnode(token: &Token, args: &[&str]) -> (bool, String, String) {
    let mut command = token.command(avsnode_tests::binary("avsnode"));
    command.args(args);
    let out = run(command, CLI_TIMEOUT);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The token options of `keys hsm-generate` / `keys hsm-list`.
fn token_args(token: &Token) -> Vec<String> {
    vec![
        "--module".into(),
        MODULE.into(),
        "--token-label".into(),
        token.label.clone(),
        "--pin-file".into(),
        token.pin_file.display().to_string(),
    ]
}

/// `avsnode keys hsm-generate … --label LABEL [--id ID]`: (success, stdout, stderr).
fn hsm_generate(token: &Token, label: &str, id: Option<&str>) -> (bool, String, String) {
    let mut args = vec!["keys".to_owned(), "hsm-generate".to_owned()];
    args.extend(token_args(token));
    args.extend(["--label".to_owned(), label.to_owned()]);
    if let Some(id) = id {
        args.extend(["--id".to_owned(), id.to_owned()]);
    }
    avsnode(token, &args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The address in `keys hsm-generate`'s first line, `generated a secp256k1 key on token "T":
/// label "L", address 0x…`.
fn generated_address(stdout: &str, token: &Token, label: &str) -> Address {
    let first = stdout.lines().next().unwrap_or_default();
    let prefix = format!(
        "generated a secp256k1 key on token {:?}: label {label:?}, address ",
        token.label
    );
    let address = first
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("unexpected hsm-generate output: {stdout}"));
    address.parse().unwrap()
}

/// `keys hsm-list` as (label, id hex, address) rows.
fn hsm_list(token: &Token) -> Vec<(String, String, Address)> {
    let mut args = vec!["keys".to_owned(), "hsm-list".to_owned()];
    args.extend(token_args(token));
    let (ok, stdout, stderr) = avsnode(token, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "keys hsm-list failed: {stdout}{stderr}");
    assert_no_pin(&stdout, "hsm-list stdout");
    stdout
        .lines()
        .map(|line| {
            // label "L"  id HEX  address 0x…
            let rest = line
                .strip_prefix("label ")
                .unwrap_or_else(|| panic!("unexpected hsm-list line {line:?}"));
            let (label, rest) = rest.split_once("  id ").unwrap();
            let (id, address) = rest.split_once("  address ").unwrap();
            (
                label.trim_matches('"').to_owned(),
                id.to_owned(),
                address.parse().unwrap(),
            )
        })
        .collect()
}

/// Panics if `text` contains a PIN of the test tokens. JSON log lines are searched without their
/// timestamp (nanosecond digits could spell a numeric PIN by chance).
fn assert_no_pin_among(text: &str, pins: &[&str], what: &str) {
    for line in text.lines() {
        let searched = match serde_json::from_str::<serde_json::Value>(line) {
            Ok(serde_json::Value::Object(mut object)) => {
                object.remove("timestamp");
                serde_json::Value::Object(object).to_string()
            }
            _ => line.to_owned(),
        };
        for (i, pin) in pins.iter().enumerate() {
            assert!(
                !searched.contains(pin),
                "{what} contains PIN #{i} (line not shown, it holds a secret)"
            );
        }
    }
}

fn assert_no_pin(text: &str, what: &str) {
    assert_no_pin_among(text, &[PIN, SO_PIN], what);
}

/// A fresh token in its own temporary directory, with a secp256k1 key labelled [`KEY_LABEL`]
/// generated by `avsnode keys hsm-generate`.
struct HsmKey {
    token: Token,
    address: Address,
    /// The `pkcs11 = { … }` line `keys hsm-generate` printed.
    backend: String,
    _dir: tempfile::TempDir,
}

impl HsmKey {
    fn new(token_label: &str) -> HsmKey {
        let dir = tempfile::Builder::new()
            .prefix("avsnode-hsm-")
            .tempdir()
            .unwrap();
        let token = Token::new(dir.path(), token_label);
        let (ok, stdout, stderr) = hsm_generate(&token, KEY_LABEL, None);
        assert!(ok, "keys hsm-generate failed: {stdout}{stderr}");
        let address = generated_address(&stdout, &token, KEY_LABEL);
        let backend = stdout
            .lines()
            .find(|l| l.starts_with("pkcs11 = {"))
            .unwrap_or_else(|| panic!("no pkcs11 line in {stdout}"))
            .to_owned();
        HsmKey {
            token,
            address,
            backend,
            _dir: dir,
        }
    }

    /// A node on `fixture` whose ECDSA operator set signs with this key.
    fn node(&self, fixture: &std::sync::Arc<Fixture>) -> TestNode {
        TestNode::builder()
            .fixture(fixture.clone())
            .signer_backend(Scheme::Ecdsa, &self.backend)
            .env("SOFTHSM2_CONF", self.token.conf.display().to_string())
            .stream_inflight(STREAM_INFLIGHT)
            .start()
    }
}

/// An ECDSA task for the default AVS, signed by the ECDSA aggregator.
fn ecdsa_task(fixture: &Fixture, n: u64) -> (NewTask, TaskSubmission) {
    let task = fixture.task(AVS, Scheme::Ecdsa, &(n * 7919 + 3).to_be_bytes());
    let submission = fixture.sign(Scheme::Ecdsa, &task);
    (task, submission)
}

/// The task id an event answers.
fn event_task_id(event: &StreamEvent) -> &str {
    match event.kind.as_ref().expect("an event with a kind") {
        stream_event::Kind::Result(r) => &r.task_id,
        stream_event::Kind::Rejection(r) => &r.task_id,
    }
}

/// How a task was answered: a result, or a rejection's code and message.
type Answer = Result<TaskResult, (Code, String)>;

fn answer(event: StreamEvent) -> Answer {
    match event.kind.expect("an event with a kind") {
        stream_event::Kind::Result(r) => Ok(r),
        stream_event::Kind::Rejection(r) => Err((Code::from_i32(r.code), r.message)),
    }
}

/// Streams `tasks` on one `TaskStream` and returns each task's answer, in task order.
async fn stream_answers(node: &TestNode, tasks: &[(NewTask, TaskSubmission)]) -> Vec<Answer> {
    let events = node
        .stream(tasks.iter().map(|(_, s)| s.clone()).collect())
        .await;
    let mut by_id: HashMap<String, Answer> = HashMap::new();
    for event in events {
        let id = event_task_id(&event).to_owned();
        assert!(
            by_id.insert(id.clone(), answer(event)).is_none(),
            "two events for task {id}"
        );
    }
    tasks
        .iter()
        .map(|(_, s)| {
            by_id
                .remove(&s.task_id)
                .unwrap_or_else(|| panic!("no event for task {}", s.task_id))
        })
        .collect()
}

/// One value of the node's `/metrics`: the sample whose name and labels are exactly `series`
/// (labels as the exposition orders them, alphabetically), or `None` if it is absent.
async fn metric(node: &TestNode, series: &str) -> Option<f64> {
    let text = node.scrape_metrics().await;
    text.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .map(|value| value.trim().parse::<f64>().unwrap())
    })
}

/// Submits `submissions` on one `TaskStream`, keeping at most `window` unanswered, and returns
/// every event with its latency (request sent to event received) and the total time.
async fn drive(
    node: &TestNode,
    submissions: Vec<TaskSubmission>,
    window: usize,
) -> (Vec<(StreamEvent, Duration)>, Duration) {
    let total = submissions.len();
    let request = |task: TaskSubmission| StreamRequest {
        kind: Some(stream_request::Kind::Task(task)),
    };
    let mut client = TaskStreamClient::connect(node.url()).await.unwrap();
    let (sender, outbound) = tokio::sync::mpsc::channel(window + 1);
    let mut pending = submissions.into_iter();
    let mut sent_at: HashMap<String, Instant> = HashMap::new();
    let started = Instant::now();
    for task in pending.by_ref().take(window) {
        sent_at.insert(task.task_id.clone(), Instant::now());
        sender.try_send(request(task)).unwrap();
    }
    let mut inbound = client
        .open(ReceiverStream::new(outbound))
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::with_capacity(total);
    while events.len() < total {
        let event = tokio::time::timeout(Duration::from_secs(60), inbound.message())
            .await
            .unwrap_or_else(|_| panic!("no event within 60 s after {} of {total}", events.len()))
            .unwrap_or_else(|s| panic!("the stream failed after {} events: {s}", events.len()))
            .unwrap_or_else(|| panic!("the stream ended after {} of {total}", events.len()));
        let sent = sent_at
            .remove(event_task_id(&event))
            .unwrap_or_else(|| panic!("an event for a task not outstanding: {event:?}"));
        events.push((event, sent.elapsed()));
        if let Some(task) = pending.next() {
            sent_at.insert(task.task_id.clone(), Instant::now());
            sender.send(request(task)).await.unwrap();
        }
    }
    let took = started.elapsed();
    drop(sender);
    (events, took)
}

/// 1. A key generated on a fresh token with `keys hsm-generate`, listed by `keys hsm-list`, used
///    by the node through the `pkcs11 = { … }` line the generator printed: over a thousand
///    streamed ECDSA tasks all verify under the token key's address with canonical (low-s, v 27/28)
///    signatures; retries are answered byte for byte from the ledger (HSM signatures are
///    randomised, so only the ledger can make them identical); `/metrics` counts the signatures
///    under `backend="pkcs11"`, and the local BN254/BLS keys under `backend="local"`.
#[tokio::test(flavor = "multi_thread")]
async fn node_signs_ecdsa_tasks_with_a_key_generated_on_the_token() {
    if !softhsm_available() {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("avsnode-hsm-")
        .tempdir()
        .unwrap();
    let token = Token::new(dir.path(), "avsnode-e2e");

    // Generate: the address, and a [[signer]] snippet that names the token, key and PIN file.
    let (ok, stdout, stderr) = hsm_generate(&token, KEY_LABEL, None);
    assert!(ok, "keys hsm-generate failed: {stdout}{stderr}");
    assert_no_pin(&stdout, "hsm-generate stdout");
    assert_no_pin(&stderr, "hsm-generate stderr");
    let token_address = generated_address(&stdout, &token, KEY_LABEL);
    assert!(
        stdout.contains("\n[[signer]]\nname = \"operator\"\nscheme = \"ecdsa\"\n"),
        "{stdout}"
    );
    let backend = stdout
        .lines()
        .find(|l| l.starts_with("pkcs11 = {"))
        .unwrap_or_else(|| panic!("no pkcs11 line in {stdout}"))
        .to_owned();
    assert_eq!(
        backend,
        format!(
            "pkcs11 = {{ module = {MODULE:?}, token_label = {:?}, key_label = \"operator\", pin_file = {:?} }}",
            token.label,
            token.pin_file.display().to_string()
        )
    );
    // A second key, named by an explicit id; a taken label is refused.
    let (ok, stdout, stderr) = hsm_generate(&token, "spare", Some("0a0b0c0d"));
    assert!(ok, "keys hsm-generate --id failed: {stdout}{stderr}");
    let spare_address = generated_address(&stdout, &token, "spare");
    assert_ne!(spare_address, token_address);
    let (ok, stdout, stderr) = hsm_generate(&token, KEY_LABEL, None);
    assert!(
        !ok,
        "a second key labelled {KEY_LABEL:?} was generated: {stdout}"
    );
    assert!(
        stderr.contains(&format!(
            "token {:?} already has a private key labelled \"operator\"",
            token.label
        )),
        "{stderr}"
    );

    // List: both keys, sorted by label, with their ids and the same addresses.
    let listed = hsm_list(&token);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0].0, KEY_LABEL);
    assert_eq!(listed[0].1.len(), 32, "a 16-byte random id: {listed:?}");
    assert_eq!(listed[0].2, token_address);
    assert_eq!(
        listed[1],
        ("spare".to_owned(), "0a0b0c0d".to_owned(), spare_address)
    );

    // The node, its ECDSA operator set on the token.
    let fixture = Fixture::new();
    let node = TestNode::builder()
        .fixture(fixture.clone())
        .signer_backend(Scheme::Ecdsa, &backend)
        .env("SOFTHSM2_CONF", token.conf.display().to_string())
        .stream_inflight(STREAM_INFLIGHT)
        .start();
    let _log = node.log_on_panic();
    let opened = node
        .log()
        .lines()
        .filter(|l| l.contains("signer opened") && l.contains("\"backend\":\"pkcs11\""))
        .map(str::to_owned)
        .collect::<Vec<_>>();
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert!(
        opened[0].contains(&token_address.to_string()),
        "the node opened another key than {token_address}: {}",
        opened[0]
    );
    let key = ecdsa_operator_key(token_address);

    // 1,040 ECDSA tasks: two rounds of two concurrent streams of 260.
    const PER_STREAM: usize = 260;
    let mut answered: Vec<(NewTask, TaskSubmission, TaskResult)> = Vec::new();
    let mut n = 0;
    for _round in 0..2 {
        let mut batch = || {
            (0..PER_STREAM)
                .map(|_| {
                    n += 1;
                    ecdsa_task(&fixture, n)
                })
                .collect::<Vec<_>>()
        };
        let (a, b) = (batch(), batch());
        let (answers_a, answers_b) =
            tokio::join!(stream_answers(&node, &a), stream_answers(&node, &b));
        for ((task, submission), answer) in a
            .into_iter()
            .chain(b)
            .zip(answers_a.into_iter().chain(answers_b))
        {
            let result = answer.unwrap_or_else(|(code, message)| {
                panic!("task {} refused: {code:?} {message}", task.task_id)
            });
            answered.push((task, submission, result));
        }
    }
    let signed = answered.len();
    assert_eq!(signed, 4 * PER_STREAM);
    let mut v_seen = [0usize; 2];
    let mut failures = Vec::new();
    for (task, _, result) in &answered {
        match check_ecdsa(result, task, &key) {
            Ok(vs) => {
                for v in vs {
                    v_seen[usize::from(v - 27)] += 1;
                }
            }
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {signed} answers fail: {failures:#?}",
        failures.len()
    );
    // The low-s check itself: ⌊n/2⌋ is the known constant, and the high-s twin (n − s) of a
    // signature the node emitted, as valid for ECDSA but malleable, is refused.
    assert_eq!(
        hex::encode(half_order()),
        "7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0"
    );
    let mut twin = answered[0].2.result_signature.clone();
    let high = order_minus(&twin[32..64]);
    twin[32..64].copy_from_slice(&high);
    twin[64] ^= 27 ^ 28;
    assert!(
        canonical_v(&twin, "twin").is_err(),
        "the high-s twin passed"
    );
    // The recovery id is computed, not fixed: both values occur among 2,080 signatures.
    assert!(
        v_seen[0] > 0 && v_seen[1] > 0,
        "v = 27/28 counts: {v_seen:?}"
    );
    // None of them verifies under the fixture's own ECDSA key: the token signed them.
    assert!(
        verify_result(
            &answered[0].2,
            &answered[0].0,
            &fixture.set(Scheme::Ecdsa).public
        )
        .is_err()
    );

    // A few BN254 and BLS12-381 tasks on the same node, signed by local keys.
    let local_tasks: Vec<(NewTask, TaskSubmission)> = (0..20u8)
        .map(|i| {
            let scheme = if i % 2 == 0 {
                Scheme::Bn254
            } else {
                Scheme::Bls12381
            };
            let task = fixture.task(AVS, scheme, &[i, 5]);
            let submission = fixture.sign(Scheme::Bn254, &task);
            (task, submission)
        })
        .collect();
    for ((task, _), answer) in local_tasks
        .iter()
        .zip(stream_answers(&node, &local_tasks).await)
    {
        let result = answer.unwrap_or_else(|e| panic!("local task refused: {e:?}"));
        fixture.verify(&result, task).unwrap();
    }

    // Retries (every 10th task, unary and streamed) come from the ledger, byte for byte.
    let retried: Vec<&(NewTask, TaskSubmission, TaskResult)> =
        answered.iter().step_by(10).collect();
    for (_, submission, first) in &retried {
        let again = node.submit(submission.clone()).await.unwrap();
        assert_eq!(&again, first, "a unary retry was answered differently");
    }
    let retry_tasks: Vec<(NewTask, TaskSubmission)> = retried
        .iter()
        .map(|(t, s, _)| (t.clone(), s.clone()))
        .collect();
    for ((_, _, first), again) in retried
        .iter()
        .zip(stream_answers(&node, &retry_tasks).await)
    {
        assert_eq!(
            &again.unwrap(),
            first,
            "a streamed retry was answered differently"
        );
    }

    // Metrics: two signatures per signed task, none failed, and the signing time, per backend.
    let ok = metric(
        &node,
        r#"avsnode_signatures_total{backend="pkcs11",result="ok",scheme="ecdsa"}"#,
    )
    .await;
    assert_eq!(
        ok,
        Some(2.0 * signed as f64),
        "pkcs11 signatures (retries sign nothing)"
    );
    let errors = metric(
        &node,
        r#"avsnode_signatures_total{backend="pkcs11",result="error",scheme="ecdsa"}"#,
    )
    .await;
    assert!(
        matches!(errors, None | Some(0.0)),
        "pkcs11 errors: {errors:?}"
    );
    let local_ok = metric(
        &node,
        r#"avsnode_signatures_total{backend="local",result="ok",scheme="bn254"}"#,
    )
    .await;
    assert_eq!(local_ok, Some(20.0), "10 BN254 tasks");
    let local_bls = metric(
        &node,
        r#"avsnode_signatures_total{backend="local",result="ok",scheme="bls12-381"}"#,
    )
    .await;
    assert_eq!(local_bls, Some(20.0), "10 BLS12-381 tasks");
    let local_ecdsa = metric(
        &node,
        r#"avsnode_signatures_total{backend="local",result="ok",scheme="ecdsa"}"#,
    )
    .await;
    assert!(
        matches!(local_ecdsa, None | Some(0.0)),
        "ECDSA signed locally: {local_ecdsa:?}"
    );
    let timed = metric(
        &node,
        r#"avsnode_sign_seconds_count{backend="pkcs11",scheme="ecdsa"}"#,
    )
    .await;
    assert_eq!(timed, Some(signed as f64));
    let text = node.scrape_metrics().await;
    assert!(
        text.lines().any(|l| l
            .starts_with("avsnode_sign_seconds_bucket{backend=\"pkcs11\",scheme=\"ecdsa\",le=")),
        "no avsnode_sign_seconds buckets for pkcs11"
    );
    assert_no_pin(&node.log(), "the node's log");
}

/// One batch of the traffic that runs while the token is pulled and put back.
#[derive(Debug)]
struct Batch {
    started: Instant,
    ended: Instant,
    tasks: Vec<(NewTask, TaskSubmission)>,
    answers: Vec<Answer>,
}

/// Streams batches of 8 ECDSA tasks, one after another with a short pause, until `stop`.
async fn ecdsa_traffic(
    node: &TestNode,
    fixture: &Fixture,
    stop: &AtomicBool,
    batches: &Mutex<Vec<Batch>>,
) {
    let mut n = 1_000_000;
    while !stop.load(Ordering::Relaxed) {
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                n += 1;
                ecdsa_task(fixture, n)
            })
            .collect();
        let started = Instant::now();
        let answers = stream_answers(node, &tasks).await;
        let ended = Instant::now();
        batches.lock().unwrap().push(Batch {
            started,
            ended,
            tasks,
            answers,
        });
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

/// Waits (at most `limit`) until `condition` holds on the batches so far; panics otherwise.
async fn wait_for(
    batches: &Mutex<Vec<Batch>>,
    limit: Duration,
    what: &str,
    condition: impl Fn(&[Batch]) -> bool,
) -> Instant {
    let started = Instant::now();
    loop {
        if condition(&batches.lock().unwrap()[..]) {
            return Instant::now();
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether `answer` is the UNAVAILABLE a pulled token must give: a retryable code and a message
/// naming the token.
fn is_token_unavailable(answer: &Answer, token: &str) -> bool {
    matches!(answer, Err((Code::Unavailable, message)) if message.contains(&format!("token {token:?}")))
}

/// 2. The token pulled while ECDSA tasks stream: new ECDSA tasks are answered UNAVAILABLE naming
///    the token, fast, while BN254/BLS tasks on local keys are still signed and ECDSA tasks signed
///    before are answered from the ledger; put back, ECDSA tasks are signed again within 15 s.
///    Afterwards every task refused meanwhile can be signed, and every task ever answered with a
///    result is answered with those very bytes again (no task ever gets two signatures).
#[tokio::test(flavor = "multi_thread")]
async fn a_pulled_token_is_unavailable_and_the_node_recovers_when_it_is_back() {
    if !softhsm_available() {
        return;
    }
    let hsm = HsmKey::new("avsnode-pull");
    let fixture = Fixture::new();
    let node = hsm.node(&fixture);
    let _log = node.log_on_panic();
    let key = ecdsa_operator_key(hsm.address);
    let label = hsm.token.label.clone();

    let stop = AtomicBool::new(false);
    let batches: Mutex<Vec<Batch>> = Mutex::new(Vec::new());
    let all_ok = |b: &Batch| b.answers.iter().all(Result::is_ok);
    let control = async {
        // Signing normally first.
        wait_for(
            &batches,
            Duration::from_secs(60),
            "three signed batches",
            |b| b.iter().filter(|b| all_ok(b)).count() >= 3,
        )
        .await;
        let signed_before: Vec<(TaskSubmission, TaskResult)> = batches
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| b.tasks.iter().zip(&b.answers))
            .filter_map(|((_, s), a)| a.as_ref().ok().map(|r| (s.clone(), r.clone())))
            .collect();

        token_op(&hsm.token, Token::pull).await;
        let pulled = Instant::now();
        // Noticed at once: a batch started after the pull is refused entirely.
        wait_for(
            &batches,
            Duration::from_secs(30),
            "a refused batch after the pull",
            |b| {
                b.iter().any(|b| {
                    b.started > pulled && b.answers.iter().all(|a| is_token_unavailable(a, &label))
                })
            },
        )
        .await;

        // Meanwhile the node is up: local keys sign, and answers signed before the pull come
        // from the ledger without the token.
        let local: Vec<(NewTask, TaskSubmission)> = [
            Scheme::Bn254,
            Scheme::Bls12381,
            Scheme::Bn254,
            Scheme::Bls12381,
        ]
        .into_iter()
        .enumerate()
        .map(|(i, scheme)| {
            let task = fixture.task(AVS, scheme, &[i as u8 + 1, 9]);
            let submission = fixture.sign(Scheme::Ecdsa, &task);
            (task, submission)
        })
        .collect();
        for ((task, _), answer) in local.iter().zip(stream_answers(&node, &local).await) {
            let result =
                answer.unwrap_or_else(|e| panic!("{task:?} refused while the token is out: {e:?}"));
            fixture.verify(&result, task).unwrap();
        }
        for (submission, before) in signed_before.iter().step_by(4) {
            let again = node.submit(submission.clone()).await.unwrap_or_else(|s| {
                panic!("a task signed before the pull was refused while the token is out: {s:?}")
            });
            assert_eq!(
                &again, before,
                "answered differently while the token is out"
            );
        }
        // Let it stay out across a few of the node's module re-initialisations (one a second).
        tokio::time::sleep(Duration::from_millis(2500)).await;

        let putting_back = Instant::now();
        token_op(&hsm.token, Token::put_back).await;
        let recovered = wait_for(
            &batches,
            Duration::from_secs(15),
            "a signed batch after the token is back",
            |b| b.iter().any(|b| b.started > putting_back && all_ok(b)),
        )
        .await;
        // Stays recovered: a few more batches.
        let count = batches.lock().unwrap().len();
        wait_for(&batches, Duration::from_secs(60), "more batches", |b| {
            b.len() >= count + 4
        })
        .await;
        stop.store(true, Ordering::Relaxed);
        (signed_before, pulled, putting_back, recovered)
    };
    let ((signed_before, pulled, putting_back, recovered), ()) =
        tokio::join!(control, ecdsa_traffic(&node, &fixture, &stop, &batches));
    let batches = batches.into_inner().unwrap();
    println!(
        "token pulled: {} batches of 8; signing again {:?} after put_back",
        batches.len(),
        recovered.duration_since(putting_back)
    );

    // Every answer is a verified result or the token's UNAVAILABLE; by phase:
    // - batches done before the pull: all signed;
    // - batches wholly while the token was out: all refused;
    // - batches started after recovery: all signed.
    let mut refused = Vec::new();
    let mut results: HashMap<String, TaskResult> = HashMap::new();
    for batch in &batches {
        for ((task, submission), answer) in batch.tasks.iter().zip(&batch.answers) {
            match answer {
                Ok(result) => {
                    check_ecdsa(result, task, &key).unwrap();
                    results.insert(submission.task_id.clone(), result.clone());
                }
                Err(e) => {
                    assert!(
                        is_token_unavailable(answer, &label),
                        "task {} refused otherwise than UNAVAILABLE naming token {label:?}: {e:?}",
                        task.task_id
                    );
                    refused.push((task.clone(), submission.clone()));
                }
            }
        }
        if batch.ended < pulled {
            assert!(all_ok(batch), "refused before the pull: {batch:?}");
        }
        if batch.started > pulled && batch.ended < putting_back {
            assert!(
                batch.answers.iter().all(|a| a.is_err()),
                "signed while the token was out: {batch:?}"
            );
        }
        if batch.started > recovered {
            assert!(all_ok(batch), "refused after recovery: {batch:?}");
        }
    }
    assert!(refused.len() >= 8, "{} refused", refused.len());

    // The refused tasks are signed now (nothing was recorded for them), and verify.
    let mut late = 0;
    for ((task, submission), answer) in refused.iter().zip(stream_answers(&node, &refused).await) {
        let result =
            answer.unwrap_or_else(|e| panic!("task {} still refused: {e:?}", task.task_id));
        check_ecdsa(&result, task, &key).unwrap();
        assert!(results.insert(submission.task_id.clone(), result).is_none());
        late += 1;
    }
    // Every task ever answered with a result is answered with the same bytes again.
    let everything: Vec<(NewTask, TaskSubmission)> = batches
        .iter()
        .flat_map(|b| b.tasks.iter().cloned())
        .collect();
    for ((task, submission), answer) in everything
        .iter()
        .zip(stream_answers(&node, &everything).await)
    {
        let again =
            answer.unwrap_or_else(|e| panic!("task {} refused on retry: {e:?}", task.task_id));
        assert_eq!(
            Some(&again),
            results.get(&submission.task_id),
            "task {} answered with other bytes",
            task.task_id
        );
    }
    for (submission, before) in &signed_before {
        assert_eq!(results.get(&submission.task_id), Some(before));
    }

    // The node counted what it did: one failed signing per refusal, two signatures per signed
    // task (retries sign nothing).
    let errors = metric(
        &node,
        r#"avsnode_signatures_total{backend="pkcs11",result="error",scheme="ecdsa"}"#,
    )
    .await;
    assert_eq!(errors, Some(refused.len() as f64));
    let unavailable = metric(
        &node,
        &format!("avsnode_task_rejections_total{{avs=\"{AVS}\",reason=\"signer_unavailable\"}}"),
    )
    .await;
    assert_eq!(unavailable, Some(refused.len() as f64));
    let ok = metric(
        &node,
        r#"avsnode_signatures_total{backend="pkcs11",result="ok",scheme="ecdsa"}"#,
    )
    .await;
    assert_eq!(ok, Some(2.0 * results.len() as f64));
    println!(
        "{} tasks signed, {} refused while the token was out and signed after ({late})",
        results.len(),
        refused.len()
    );
    assert_no_pin(&node.log(), "the node's log");
}

/// Writes a node configuration on `fixture` whose `scheme` signer uses `backend`.
fn config_with(fixture: &std::sync::Arc<Fixture>, scheme: Scheme, backend: &str) -> PathBuf {
    TestNode::builder()
        .fixture(fixture.clone())
        .signer_backend(scheme, backend)
        .write_config()
}

/// Runs a token operation (file copies and renames) off the async workers.
async fn token_op(token: &Token, op: fn(&Token)) {
    tokio::task::block_in_place(|| op(token));
}

/// 3. Start-up errors: a wrong PIN stops the node (non-zero exit) with a message naming the token
///    and the failed login and never the PIN; an absent token is named with the tokens present;
///    `check-config` refuses a pairing-curve signer on PKCS#11.
#[tokio::test(flavor = "multi_thread")]
async fn startup_errors_name_the_token_and_never_show_the_pin() {
    if !softhsm_available() {
        return;
    }
    let hsm = HsmKey::new("avsnode-pin");
    let fixture = Fixture::new();
    const WRONG_PIN: &str = "wr0ng-PIN-7730";
    let wrong_pin_file = fixture.dir().join("wrong.pin");
    std::fs::write(&wrong_pin_file, format!("{WRONG_PIN}\n")).unwrap();
    std::fs::set_permissions(
        &wrong_pin_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();

    let start = |backend: String| -> (Output, String, String) {
        let config = config_with(&fixture, Scheme::Ecdsa, &backend);
        let mut command = hsm.token.command(avsnode_tests::binary("avsnode"));
        command
            .args(["--log-format", "json", "run", "--config"])
            .arg(&config)
            .env("AVSNODE_LOG", "debug");
        let out = run(command, CLI_TIMEOUT);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out, stdout, stderr)
    };

    // The wrong PIN.
    let backend = hsm.backend.replace(
        &format!("pin_file = {:?}", hsm.token.pin_file.display().to_string()),
        &format!("pin_file = {:?}", wrong_pin_file.display().to_string()),
    );
    assert_ne!(backend, hsm.backend);
    let (out, stdout, stderr) = start(backend);
    assert!(
        !out.status.success(),
        "the node ran with a wrong PIN: {stderr}"
    );
    assert!(!stderr.contains("intake serving"), "{stderr}");
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert!(
        error.contains("signer \"ecdsa-key\"")
            && error.contains("login to token \"avsnode-pin\" failed"),
        "{error}"
    );
    assert!(
        error.contains("PIN") && error.to_lowercase().contains("incorrect"),
        "the module's reason: {error}"
    );
    assert_no_pin_among(
        &stderr,
        &[WRONG_PIN, PIN, SO_PIN],
        "stderr of a node with a wrong PIN",
    );
    assert_no_pin_among(
        &stdout,
        &[WRONG_PIN, PIN, SO_PIN],
        "stdout of a node with a wrong PIN",
    );

    // A token that is not there is named, with the ones that are.
    let backend = hsm.backend.replace(
        "token_label = \"avsnode-pin\"",
        "token_label = \"no-such-token\"",
    );
    let (out, _, stderr) = start(backend);
    assert!(
        !out.status.success(),
        "the node ran without its token: {stderr}"
    );
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert!(
        error.contains("no token labelled \"no-such-token\" (tokens present: \"avsnode-pin\")"),
        "{error}"
    );
    assert_no_pin(&stderr, "stderr of a node without its token");

    // The right PIN: it starts (the failures above were the PIN and the label, nothing else).
    let node = hsm.node(&fixture);
    let (task, submission) = ecdsa_task(&fixture, 1);
    let result = node.submit(submission).await.unwrap();
    check_ecdsa(&result, &task, &ecdsa_operator_key(hsm.address)).unwrap();
    drop(node);

    // PKCS#11 has no pairing curves: a BN254 (or BLS12-381) signer on a token is a config error.
    for (scheme, index) in [(Scheme::Bn254, 1), (Scheme::Bls12381, 2)] {
        let config = config_with(&fixture, scheme, &hsm.backend);
        let (status, stdout, stderr) =
            crate::common::avsnode_cli(&["check-config".as_ref(), config.as_os_str()]);
        assert!(
            !status.success(),
            "check-config accepted {scheme} on PKCS#11: {stdout}"
        );
        let output = format!("{stdout}{stderr}");
        let problem = output
            .lines()
            .find(|l| l.contains(&format!("signer[{index}].pkcs11")))
            .unwrap_or_else(|| panic!("no problem at signer[{index}].pkcs11: {output}"));
        assert!(
            problem.contains("PKCS#11 has no pairing curves"),
            "{problem}"
        );
        assert!(problem.contains(&scheme.to_string()), "{problem}");
    }
}

/// Percentile `q` of sorted latencies.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Streams `count` ECDSA tasks (after a warm-up) keeping 32 outstanding, checks every answer
/// verifies under `key` and that `/metrics` counts them under `backend`; returns (tasks/s, p50,
/// p99).
async fn measure(
    node: &TestNode,
    key: &OperatorKey,
    backend: &str,
    count: usize,
) -> (f64, Duration, Duration) {
    const WINDOW: usize = 32;
    const WARM_UP: usize = 64;
    let fixture = node.fixture();
    let check = |tasks: &[(NewTask, TaskSubmission)], events: Vec<(StreamEvent, Duration)>| {
        let by_id: HashMap<&str, &NewTask> =
            tasks.iter().map(|(t, s)| (s.task_id.as_str(), t)).collect();
        let mut latencies = Vec::with_capacity(events.len());
        for (event, latency) in events {
            let id = event_task_id(&event).to_owned();
            let task = by_id[id.as_str()];
            let result =
                answer(event).unwrap_or_else(|e| panic!("{backend}: task {id} refused: {e:?}"));
            check_ecdsa(&result, task, key).unwrap_or_else(|e| panic!("{backend}: {e}"));
            latencies.push(latency);
        }
        assert_eq!(latencies.len(), tasks.len());
        latencies
    };
    let tasks: Vec<_> = (0..WARM_UP as u64)
        .map(|n| ecdsa_task(fixture, n))
        .collect();
    let (events, _) = drive(node, tasks.iter().map(|(_, s)| s.clone()).collect(), WINDOW).await;
    check(&tasks, events);

    let tasks: Vec<_> = (0..count as u64)
        .map(|n| ecdsa_task(fixture, 10_000 + n))
        .collect();
    let (events, took) = drive(node, tasks.iter().map(|(_, s)| s.clone()).collect(), WINDOW).await;
    let mut latencies = check(&tasks, events);
    latencies.sort();

    let series =
        format!("avsnode_signatures_total{{backend=\"{backend}\",result=\"ok\",scheme=\"ecdsa\"}}");
    assert_eq!(
        metric(node, &series).await,
        Some(2.0 * (WARM_UP + count) as f64),
        "{series}"
    );
    (
        count as f64 / took.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
    )
}

/// 4. End-to-end ECDSA throughput and p99 latency through the node, the key on a SoftHSM token
///    vs the same node with the key in a local keystore: one stream, 32 tasks outstanding. Every
///    answer verifies under the backend's key, and each node's metrics show it signed with the
///    backend under test. 300 tasks each by default; 5,000 with `AVSNODE_MEASURE=1` (run alone,
///    in release; see the module doc).
#[tokio::test(flavor = "multi_thread")]
async fn measure_end_to_end_tasks_per_second_pkcs11_vs_local() {
    if !softhsm_available() {
        return;
    }
    let count = if std::env::var_os("AVSNODE_MEASURE").is_some() {
        5_000
    } else {
        300
    };

    let hsm = HsmKey::new("avsnode-measure");
    let fixture = Fixture::new();
    let node = hsm.node(&fixture);
    let pkcs11 = measure(&node, &ecdsa_operator_key(hsm.address), "pkcs11", count).await;
    drop(node);

    let fixture = Fixture::new();
    let node = TestNode::builder().fixture(fixture.clone()).start();
    let local = measure(&node, &fixture.set(Scheme::Ecdsa).public, "local", count).await;
    drop(node);

    for (backend, (rate, p50, p99)) in [("pkcs11", pkcs11), ("local", local)] {
        println!(
            "end to end, ECDSA, {backend:>6} backend: {count} tasks, 32 outstanding on one stream: {rate:.0} tasks/s, p50 {:.2} ms, p99 {:.2} ms",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
        );
    }
    println!(
        "pkcs11/local: {:.2}× the throughput, {:.2}× the p99",
        pkcs11.0 / local.0,
        pkcs11.2.as_secs_f64() / local.2.as_secs_f64()
    );
}

/// The node's image built with SoftHSM's module (`deploy/build-image.sh --pkcs11-module`) signs
/// through the token from inside its container: the module and the libraries it links are in the
/// image, the token and its configuration are mounted. The performer is the image's own example
/// performer, run as a process.
#[tokio::test(flavor = "multi_thread")]
async fn the_node_image_signs_through_a_pkcs11_module_added_at_build() {
    use crate::deploy::{Leftovers, give_to_node_user, published};
    use avsnode_tests::docker::{docker_available, docker_cli, node_image_with_pkcs11};

    if !softhsm_available() || !docker_available() {
        return;
    }
    let hsm = HsmKey::new("image");
    let image = node_image_with_pkcs11(MODULE);
    let fixture = Fixture::new();
    let mut builder = TestNode::builder()
        .fixture(fixture.clone())
        .signer_backend(Scheme::Ecdsa, &hsm.backend)
        .data_dir(std::path::Path::new("/var/lib/avsnode"))
        .intake_listen("0.0.0.0:9090")
        .avs(crate::common::AvsSpec::new(AVS).performer_toml(
            "runtime = \"process\"\ncommand = \"/usr/local/bin/avsnode\"\n\
             args = [\"example-performer\", \"--host\", \"127.0.0.1\"]\n",
        ));
    let config = builder.write_config();
    give_to_node_user(fixture.dir());
    give_to_node_user(hsm._dir.path());
    let name = format!("avsnode-t-pkcs11-{}", std::process::id());
    let _leftovers = Leftovers {
        containers: vec![name.clone()],
        node_label: None,
        networks: Vec::new(),
        volumes: vec![format!("{name}-data")],
        compose: None,
    };
    let token_dir = hsm._dir.path().display().to_string();
    docker_cli(&[
        "run",
        "-d",
        "--name",
        &name,
        "-e",
        &format!("SOFTHSM2_CONF={}", hsm.token.conf.display()),
        "-v",
        &format!("{token_dir}:{token_dir}"),
        "-v",
        &format!("{}:/etc/avsnode:ro", fixture.dir().display()),
        "-v",
        &format!("{name}-data:/var/lib/avsnode"),
        "-p",
        "127.0.0.1::9090",
        "--read-only",
        "--cap-drop",
        "ALL",
        &image,
        "run",
        "--config",
        &format!(
            "/etc/avsnode/{}",
            config.file_name().unwrap().to_str().unwrap()
        ),
    ]);
    let logs = || {
        let out = Command::new("docker")
            .args(["logs", &name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !logs().contains("intake serving") {
        assert!(
            Instant::now() < deadline,
            "the node did not serve within 60 s:\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let url = format!("http://{}", published(&name, 9090));
    let key = ecdsa_operator_key(hsm.address);
    let mut client =
        avsnode_proto::executor::executor_service_client::ExecutorServiceClient::connect(url)
            .await
            .unwrap();
    for n in 0..5 {
        let (task, submission) = ecdsa_task(&fixture, n);
        let result = client
            .submit_task(submission)
            .await
            .unwrap_or_else(|status| panic!("task {n}: {status}; the node's log:\n{}", logs()))
            .into_inner();
        check_ecdsa(&result, &task, &key).unwrap();
    }
    let log = logs();
    assert!(
        log.contains("backend=\"pkcs11\""),
        "the ECDSA signer is not the token's:\n{log}"
    );
    assert_no_pin(&log, "the node's log");
}
