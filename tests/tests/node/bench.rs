//! `avsnode bench` against the real `avsnode run` (example performer as a process): every task of
//! a stream run and of an open-loop unary run completes and the node's metrics count them; a key
//! the node does not accept has every task counted under PERMISSION_DENIED and a non-zero exit;
//! a bn254 aggregator key needs --aggregator-address; mutual TLS with a client certificate.
//! Also `avsnode demo`, whose load generator is the same, on a small default run.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::common::{AVS, Fixture, TestNode, avsnode_cli, sample};
use avsnode_keystore::{Kdf, Password};
use avsnode_signer::Scheme;
use avsnode_signing::LocalKey;
use avsnode_tests::pki;

/// An aggregator keystore and its password file, as `avsnode keys generate` leaves them.
struct KeyFiles {
    keystore: PathBuf,
    password: PathBuf,
}

/// Writes `key` to `dir/NAME.json` (light KDF) and its password to `dir/NAME.pass`, mode 0600.
fn write_key(dir: &Path, name: &str, key: &LocalKey) -> KeyFiles {
    let files = KeyFiles {
        keystore: dir.join(format!("{name}.json")),
        password: dir.join(format!("{name}.pass")),
    };
    key.encrypt(&Password::new("bench-password"), &Kdf::light())
        .unwrap()
        .write_new(&files.keystore)
        .unwrap();
    avsnode_keystore::write_private(&files.password, b"bench-password\n").unwrap();
    files
}

/// `avsnode bench --target URL` with `key`, for the fixture's operator on [`AVS`], quiet, then
/// `args`: its exit status, stdout and stderr.
fn bench(
    url: &str,
    fixture: &Fixture,
    key: &KeyFiles,
    args: &[&str],
) -> (ExitStatus, String, String) {
    let operator = fixture.operator.to_string();
    let mut all = vec![
        "bench".as_ref(),
        "--target".as_ref(),
        url.as_ref(),
        "--aggregator-keystore".as_ref(),
        key.keystore.as_os_str(),
        "--aggregator-password-file".as_ref(),
        key.password.as_os_str(),
        "--avs".as_ref(),
        AVS.as_ref(),
        "--operator".as_ref(),
        operator.as_ref(),
        "--quiet".as_ref(),
    ];
    all.extend(args.iter().map(|a| std::ffi::OsStr::new(*a)));
    avsnode_cli(&all)
}

/// The JSON object a `--json` run printed.
fn report(stdout: &str, stderr: &str) -> serde_json::Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("bench --json printed no JSON ({e}): {stdout}\nstderr: {stderr}")
    })
}

/// Panics unless `report` says all `n` tasks completed, without errors, with ordered percentiles.
fn assert_all_completed(report: &serde_json::Value, n: u64) {
    assert_eq!(report["tasks"], n, "{report}");
    assert_eq!(report["sent"], n, "{report}");
    assert_eq!(report["completed"], n, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    assert_eq!(report["unexpected_answers"], 0, "{report}");
    let p = |key: &str| report[key].as_f64().unwrap();
    assert!(p("p50_ms") > 0.0, "{report}");
    assert!(
        p("p50_ms") <= p("p90_ms")
            && p("p90_ms") <= p("p99_ms")
            && p("p99_ms") <= p("p99_9_ms")
            && p("p99_9_ms") <= p("max_ms"),
        "percentiles out of order: {report}"
    );
    assert!(p("throughput") > 0.0 && p("duration_s") > 0.0, "{report}");
}

/// Polls `/metrics` (at most 10 s) until `name{labels}` reaches `want`; returns what it read.
async fn wait_for_sample(node: &TestNode, name: &str, labels: &[(&str, &str)], want: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = sample(&node.scrape_metrics().await, name, labels);
        if got >= want || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn bench_completes_every_task_over_streams_and_unary_calls() {
    let node = TestNode::builder().start();
    let _log = node.log_on_panic();
    let fixture = node.fixture().clone();
    let ecdsa = write_key(
        fixture.dir(),
        "bench-ecdsa",
        fixture.aggregator(Scheme::Ecdsa).key(),
    );

    // Saturating, over the task stream.
    let (status, out, err) = bench(&node.url(), &fixture, &ecdsa, &["--tasks", "200", "--json"]);
    let stream = report(&out, &err);
    assert!(status.success(), "{status}: {out}\n{err}");
    assert_all_completed(&stream, 200);
    assert_eq!(stream["mode"], "stream");
    assert_eq!(stream["loop"], "closed");
    assert_eq!(stream["latency_from"], "send");
    assert!(stream["offered_rate"].is_null());

    // Open loop at 200 tasks/s for 1 s, one unary call per task.
    let (status, out, err) = bench(
        &node.url(),
        &fixture,
        &ecdsa,
        &[
            "--mode",
            "unary",
            "--rate",
            "200",
            "--duration",
            "1s",
            "--json",
        ],
    );
    let unary = report(&out, &err);
    assert!(status.success(), "{status}: {out}\n{err}");
    assert_all_completed(&unary, 200);
    assert_eq!(unary["mode"], "unary");
    assert_eq!(unary["loop"], "open");
    assert_eq!(unary["latency_from"], "intended_send");
    assert_eq!(unary["offered_rate"], 200.0);
    // 200 tasks due over 1 s cannot all be answered much sooner.
    assert!(unary["duration_s"].as_f64().unwrap() >= 0.99, "{unary}");

    // The node saw and signed them all, over both intakes.
    for (intake, n) in [("stream", 200.0), ("unary", 200.0)] {
        let got = wait_for_sample(
            &node,
            "avsnode_tasks_received_total",
            &[("avs", AVS), ("intake", intake)],
            n,
        )
        .await;
        assert_eq!(got, n, "tasks received over {intake}");
    }
    let signed = wait_for_sample(
        &node,
        "avsnode_tasks_completed_total",
        &[("avs", AVS), ("outcome", "signed")],
        400.0,
    )
    .await;
    assert_eq!(signed, 400.0);

    // A bn254 aggregator key is named by the address the node's configuration gives it.
    let bn254 = write_key(
        fixture.dir(),
        "bench-bn254",
        fixture.aggregator(Scheme::Bn254).key(),
    );
    let (status, out, err) = bench(&node.url(), &fixture, &bn254, &["--tasks", "20"]);
    assert!(!status.success(), "{out}");
    assert!(err.contains("--aggregator-address"), "{err}");
    let address = fixture.aggregator(Scheme::Bn254).address.to_string();
    let (status, out, err) = bench(
        &node.url(),
        &fixture,
        &bn254,
        &["--tasks", "20", "--aggregator-address", &address],
    );
    assert!(status.success(), "{status}: {out}\n{err}");
    // The human summary.
    assert!(out.contains("throughput"), "{out}");
    assert!(out.contains("p99.9"), "{out}");
    assert!(out.contains("errors       none"), "{out}");
}

#[tokio::test]
async fn bench_counts_every_task_a_node_refuses_under_its_code() {
    let node = TestNode::builder().start();
    let _log = node.log_on_panic();
    let fixture = node.fixture().clone();
    let stranger = write_key(
        fixture.dir(),
        "stranger",
        &LocalKey::generate(Scheme::Ecdsa),
    );

    // An aggregator the AVS does not list.
    let (status, out, err) = bench(
        &node.url(),
        &fixture,
        &stranger,
        &["--tasks", "50", "--json"],
    );
    assert!(
        !status.success(),
        "a run with failed tasks exits non-zero: {out}"
    );
    let unknown = report(&out, &err);
    assert_eq!(unknown["sent"], 50, "{unknown}");
    assert_eq!(unknown["completed"], 0, "{unknown}");
    assert_eq!(unknown["failed"], 50, "{unknown}");
    assert_eq!(
        unknown["errors"],
        serde_json::json!({ "PERMISSION_DENIED": 50 })
    );
    let messages = unknown["error_messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "one kind of message: {unknown}");
    assert_eq!(messages[0]["count"], 50);
    assert_eq!(
        messages[0]["message"],
        "aggregator 0x… is not allowed to send tasks for this AVS"
    );

    // A listed aggregator's address with another key: the signature does not verify. Unary
    // calls this time, and the human summary.
    let listed = fixture.aggregator(Scheme::Ecdsa).address.to_string();
    let (status, out, _) = bench(
        &node.url(),
        &fixture,
        &stranger,
        &[
            "--tasks",
            "50",
            "--mode",
            "unary",
            "--aggregator-address",
            &listed,
        ],
    );
    assert!(!status.success(), "{out}");
    assert!(out.contains("errors       50 PERMISSION_DENIED"), "{out}");
    assert!(
        out.contains("50 × PERMISSION_DENIED: the aggregator's task signature does not verify"),
        "{out}"
    );

    for reason in ["unknown_aggregator", "bad_signature"] {
        let got = wait_for_sample(
            &node,
            "avsnode_task_rejections_total",
            &[("avs", AVS), ("reason", reason)],
            50.0,
        )
        .await;
        assert_eq!(got, 50.0, "rejections for {reason}");
    }
}

#[tokio::test]
async fn bench_over_mutual_tls_presents_its_client_certificate() {
    const CLIENT: &str = "agg-a.example";
    let fixture = Fixture::new();
    let pki_dir = fixture.dir().join("pki");
    std::fs::create_dir(&pki_dir).unwrap();
    let pki = pki::write(&pki_dir, &[CLIENT]);
    let node = TestNode::builder()
        .fixture(fixture.clone())
        .intake_toml(&format!(
            "tls = {{ cert = {:?}, key = {:?}, client_ca = {:?} }}",
            pki.server_cert().display().to_string(),
            pki.server_key().display().to_string(),
            pki.ca().display().to_string()
        ))
        .aggregator_toml(&format!("tls_client_names = [\"{CLIENT}\"]"))
        .start();
    let _log = node.log_on_panic();
    let key = write_key(
        fixture.dir(),
        "bench-ecdsa",
        fixture.aggregator(Scheme::Ecdsa).key(),
    );
    let url = format!("https://{}", node.address());
    let ca = pki.ca().display().to_string();
    let cert = pki.client_cert(CLIENT).display().to_string();
    let client_key = pki.client_key(CLIENT).display().to_string();
    let tls = [
        "--ca-cert",
        &ca,
        "--client-cert",
        &cert,
        "--client-key",
        &client_key,
        "--tls-server-name",
        "localhost",
    ];

    let (status, out, err) = bench(
        &url,
        &fixture,
        &key,
        &[&tls[..], &["--tasks", "50", "--json"]].concat(),
    );
    assert!(status.success(), "{status}: {out}\n{err}");
    assert_all_completed(&report(&out, &err), 50);

    // Without the client certificate the node lets nothing through.
    let (status, out, err) = bench(
        &url,
        &fixture,
        &key,
        &[
            "--ca-cert",
            &ca,
            "--tls-server-name",
            "localhost",
            "--tasks",
            "5",
        ],
    );
    assert!(!status.success(), "{out}\n{err}");
    // Plain http to a TLS intake, and TLS options for an http target, are refused up front.
    let (status, _, err) = bench(
        &format!("http://{}", node.address()),
        &fixture,
        &key,
        &["--ca-cert", &ca, "--tasks", "5"],
    );
    assert!(!status.success());
    assert!(err.contains("plaintext http://"), "{err}");
}

/// The demo's default run: a saturating phase reporting throughput, then a paced phase whose
/// latency is labelled with the rate offered; every answer verified.
#[test]
fn demo_reports_throughput_saturated_and_latency_at_an_offered_rate() {
    let (status, out, err) = avsnode_cli(&[
        "demo".as_ref(),
        "--tasks".as_ref(),
        "300".as_ref(),
        "--schemes".as_ref(),
        "ecdsa".as_ref(),
        "--quiet".as_ref(),
    ]);
    assert!(status.success(), "{status}: {out}\n{err}");
    let line = |start: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("no {start:?} line: {out}"))
            .to_owned()
    };
    assert!(line("throughput").contains("(300 in"), "{out}");
    let latency = line("latency");
    assert!(
        latency.contains("p50") && latency.contains("p99") && latency.contains("tasks/s offered"),
        "{latency}"
    );
    assert!(line("signatures").contains("answers verified"), "{out}");
    assert!(out.contains("all signatures verified"), "{out}");

    // With --rate: only the open-loop run, its latency at that rate.
    let (status, out, err) = avsnode_cli(&[
        "demo".as_ref(),
        "--tasks".as_ref(),
        "200".as_ref(),
        "--schemes".as_ref(),
        "ecdsa".as_ref(),
        "--rate".as_ref(),
        "400".as_ref(),
        "--quiet".as_ref(),
    ]);
    assert!(status.success(), "{status}: {out}\n{err}");
    assert!(out.contains("at 400 tasks/s offered"), "{out}");
    assert!(out.contains("200/200 answers verified"), "{out}");
    assert!(!out.contains("crypto floor"), "{out}");
}
