//! The project's test chain (`tests/chain/`): a real EVM (eth-tester with py-evm) behind a small
//! JSON-RPC server, with Vyper stand-ins for AllocationManager, KeyRegistrar, a TaskAVSRegistrar
//! and an ECDSA certificate verifier. `.ci/run` installs its pinned Python packages in a venv
//! (`tests/chain/install.sh`); the tests find that venv's Python through
//! `AVSNODE_TESTCHAIN_PYTHON` (default `/opt/avsnode-testchain/bin/python`).
//!
//! The server counts every standard call it answers (`test_counts`), so a test can assert how
//! many RPC calls the node made, and offers test-only methods that change the chain (register a
//! key, remove an operator from a set, snapshot and revert for a reorg).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

/// The venv's Python.
fn python() -> PathBuf {
    std::env::var_os("AVSNODE_TESTCHAIN_PYTHON")
        .map_or_else(|| "/opt/avsnode-testchain/bin/python".into(), PathBuf::from)
}

/// Whether the test chain's venv is installed. If not, prints `skipping: …` and returns false —
/// except on CI (`CI=true`), where it panics: `.ci/run` installs it.
pub fn chain_available() -> bool {
    if python().exists() {
        return true;
    }
    let reason = format!(
        "{} is missing; run tests/chain/install.sh (or set AVSNODE_TESTCHAIN_PYTHON)",
        python().display()
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("the test chain is not installed on CI: {reason}");
    }
    #[allow(clippy::print_stderr)]
    {
        eprintln!("skipping: the test chain is not installed: {reason}");
    }
    false
}

/// A running test chain; stopped on drop.
#[derive(Debug)]
pub struct TestChain {
    child: Child,
    /// Its JSON-RPC URL.
    pub url: String,
    /// Its chain id.
    pub chain_id: u64,
    /// The AllocationManager stand-in.
    pub allocation_manager: String,
    /// The KeyRegistrar stand-in.
    pub key_registrar: String,
    /// The ECDSA certificate verifier stand-in.
    pub ecdsa_verifier: String,
    /// Its `version()`.
    pub verifier_version: String,
}

impl TestChain {
    /// Compiles and deploys the contracts and starts serving (about 1.5 s).
    pub fn start() -> TestChain {
        let script = crate::workspace_root().join("tests/chain/server.py");
        let mut child = Command::new(python())
            .arg(&script)
            .args(["--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the test chain");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("its stdout"))
            .read_line(&mut line)
            .expect("reading its ready line");
        let ready: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the test chain's ready line {line:?}: {e}"));
        let text = |key: &str| ready[key].as_str().expect(key).to_owned();
        TestChain {
            url: text("url"),
            chain_id: ready["chain_id"].as_u64().expect("chain_id"),
            allocation_manager: text("allocation_manager"),
            key_registrar: text("key_registrar"),
            ecdsa_verifier: text("ecdsa_verifier"),
            verifier_version: text("verifier_version"),
            child,
        }
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port in the URL")
    }

    /// One JSON-RPC call; its `result` (panics on an error answer).
    pub async fn rpc(&self, method: &str, params: Value) -> Value {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let answer = post(self.port(), &body.to_string()).await;
        let answer: Value = serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("{method}: not JSON ({e}): {answer}"));
        if let Some(error) = answer.get("error") {
            panic!("{method}{params}: {error}");
        }
        answer["result"].clone()
    }

    /// The head block.
    pub async fn head(&self) -> u64 {
        let v = self.rpc("eth_blockNumber", json!([])).await;
        u64::from_str_radix(v.as_str().expect("hex").trim_start_matches("0x"), 16).expect("hex")
    }

    /// Calls the server has answered since the last reset, by method (`eth_call`, …) and per
    /// call target and selector (`eth_call:<to>:<selector>`).
    pub async fn counts(&self) -> Value {
        self.rpc("test_counts", json!([])).await
    }

    /// How many `eth_call`s it answered since the last reset.
    pub async fn eth_calls(&self) -> u64 {
        self.counts().await["eth_call"].as_u64().unwrap_or(0)
    }

    /// Forgets the counts.
    pub async fn reset_counts(&self) {
        self.rpc("test_resetCounts", json!([])).await;
    }

    /// Runs a test-only method that sends a transaction; the block it was mined in.
    pub async fn transact(&self, method: &str, params: Value) -> u64 {
        self.rpc(method, params).await["block"]
            .as_u64()
            .unwrap_or_else(|| panic!("{method}: no block in the answer"))
    }
}

impl Drop for TestChain {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP/1.0 POST of JSON to 127.0.0.1:`port`; the response body.
async fn post(port: u16, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connecting to the test chain");
    let request = format!(
        "POST / HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("writing to the test chain");
    let mut raw = String::new();
    stream
        .read_to_string(&mut raw)
        .await
        .expect("reading the test chain's answer");
    raw.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or(raw)
}
