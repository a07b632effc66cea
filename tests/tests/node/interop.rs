//! A client not written in Rust: Python's grpcio, with stubs compiled from our `.proto` files at
//! run time (`tests/python/submit.py`), submits tasks the Rust aggregator signed, unary and on a
//! stream. Its answers verify as a chain would check them and equal what a Rust client gets.
//!
//! Needs `/usr/bin/python3` with Debian's `python3-grpcio` and `python3-grpc-tools`. Without them
//! the test is skipped with a printed reason, except under `CI=true`, where it fails.

#![allow(clippy::unwrap_used)]

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{AVS, SCHEMES, TestNode, now_ms};
use avsnode_aggregator::NewTask;
use avsnode_proto::executor::TaskResult;
use avsnode_signer::Scheme;
use serde_json::{Value, json};

const PYTHON: &str = "/usr/bin/python3";

/// `None` when Python and its gRPC modules are usable, else why not.
fn python_missing() -> Option<String> {
    if !Path::new(PYTHON).exists() {
        return Some(format!("{PYTHON} does not exist"));
    }
    match Command::new(PYTHON)
        .args(["-c", "import grpc, grpc_tools.protoc"])
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "{PYTHON} cannot import grpc and grpc_tools (apt-get install python3-grpcio \
             python3-grpc-tools): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("running {PYTHON}: {e}")),
    }
}

fn hex_field(value: &Value, name: &str) -> Vec<u8> {
    hex::decode(
        value[name]
            .as_str()
            .unwrap_or_else(|| panic!("{name} in {value}")),
    )
    .unwrap()
}

/// A `TaskResult` from the JSON the Python client wrote.
fn task_result(value: &Value) -> TaskResult {
    let text = |name: &str| value[name].as_str().unwrap().to_owned();
    let number = |name: &str| value[name].as_u64().unwrap() as u32;
    TaskResult {
        task_id: text("task_id"),
        operator_address: text("operator_address"),
        output: hex_field(value, "output"),
        result_signature: hex_field(value, "result_signature"),
        avs_address: text("avs_address"),
        operator_set_id: number("operator_set_id"),
        auth_signature: hex_field(value, "auth_signature"),
        version: number("version"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_grpc_client_gets_answers_that_verify() {
    if let Some(why) = python_missing() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the Python interop client cannot run under CI: {why}"
        );
        eprintln!("skipping the Python interop test: {why}");
        return;
    }
    let node = TestNode::builder().start();
    let fixture = node.fixture();

    // One task per operator set, each from another aggregator scheme; one of version 1001.
    let tasks: Vec<(Scheme, NewTask)> = SCHEMES
        .into_iter()
        .enumerate()
        .map(|(i, set)| {
            let mut task = fixture.task(AVS, set, &[0x12, 0x34, i as u8]);
            if set == Scheme::Bls12381 {
                task.deadline_unix_ms = Some(now_ms() + 120_000);
            }
            (SCHEMES[(i + 1) % 3], task)
        })
        .collect();
    let submissions: Vec<Value> = tasks
        .iter()
        .map(|(aggregator, task)| {
            let s = fixture.sign(*aggregator, task);
            json!({
                "task_id": s.task_id,
                "aggregator_address": s.aggregator_address,
                "avs_address": s.avs_address,
                "payload": hex::encode(&s.payload),
                "signature": hex::encode(&s.signature),
                "operator_set_id": s.operator_set_id,
                "reference_timestamp": s.reference_timestamp,
                "executor_address": s.executor_address,
                "task_block_number": s.task_block_number,
                "version": s.version,
                "deadline_unix_ms": s.deadline_unix_ms,
            })
        })
        .collect();
    let task_file = fixture.dir().join("task.json");
    let out_file = fixture.dir().join("result.json");
    std::fs::write(&task_file, json!({ "tasks": submissions }).to_string()).unwrap();

    let root = avsnode_tests::workspace_root();
    let mut python = Command::new(PYTHON)
        .arg(root.join("tests/python/submit.py"))
        .arg("--proto-dir")
        .arg(root.join("proto/proto"))
        .args([OsStr::new("--address"), node.address().to_string().as_ref()])
        .arg("--task")
        .arg(&task_file)
        .arg("--out")
        .arg(&out_file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while python.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = python.kill();
            panic!("the Python client did not finish within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let output = python.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the Python client failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    let answers = written["results"].as_array().unwrap();
    assert_eq!(answers.len(), tasks.len(), "{written}");
    for ((aggregator, task), answer) in tasks.iter().zip(answers) {
        assert!(answer["unary"]["error"].is_null(), "{answer}");
        let unary = task_result(&answer["unary"]);
        fixture
            .verify(&unary, task)
            .unwrap_or_else(|e| panic!("the answer Python received: {e}"));

        let streamed = &answer["stream"]["result"];
        assert!(
            streamed.is_object(),
            "the streamed task was not answered: {answer}"
        );
        assert_eq!(
            task_result(streamed),
            unary,
            "stream and unary answers differ"
        );

        // A Rust client gets the same answer, byte for byte.
        let rust = node.submit(fixture.sign(*aggregator, task)).await.unwrap();
        assert_eq!(rust, unary);
    }
}
